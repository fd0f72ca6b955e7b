/* SPDX-License-Identifier: MIT */
/*
 * Origins: the sessions an application server reports (docs/protocol.md
 * section 5), by its backend connection (backend.c) or by HTTP with a TTL.
 *
 * An origin is a name (the backend's, stable across its restarts) with the
 * sessions it opened. The sessions live in the library like any other (the
 * store decides every transition); what is kept here is who owns them: one
 * table from session id to its record (origin, the library's handle, the
 * sync mark), and one list per origin, so an origin's sessions can be
 * walked (re-assert, loss) without scanning everybody's.
 *
 * Memory: the figure of issue 15 is a million sessions at <= 400 B each,
 * of which the library's session and user records already take most. A
 * record is therefore one 56-byte allocation (a 64-byte malloc chunk)
 * whatever the id's length: the table is intrusive (the record is its own
 * chain node) and keys the record by a 96-bit keyed fingerprint of the id
 * (two SipHash-1-3 under keys drawn from the process's random hash key)
 * instead of a copy of the id. Two ids share a fingerprint with a chance of
 * n / 2^96 per lookup among n sessions (about 10^-23 at a million), and
 * nobody can aim for it without the key; no path needs the id's text back
 * (the library has it, and every caller names the id it looks up).
 *
 * Lifetime: an origin is attached while a backend connection holds it.
 * When the connection goes, it is detached and keeps its sessions for the
 * resume window; a connection for the same name inside the window takes
 * them back and re-asserts its list (sync), so only net differences become
 * events. Past the window the sessions end with reason origin_lost, a
 * bounded batch per timer turn so one large origin does not stall the loop.
 *
 * Ownership checks: an op names a session id; the id must be this origin's
 * (else session_owned when some other origin or a client WebSocket has it,
 * no_session when nobody has it). Records leave the table before the
 * library is told to end their session, so the session.disconnected that
 * follows does not look like an end by someone else; an end by someone else
 * (a kick, a reset) is noticed by the fan-out sink below, which drops the
 * record and tells the backend ({"type":"ended"}).
 */
#include "server/server.h"

#include "server/bmsg.h"
#include "server/json.h"

#include "core/siphash.h"

#include <stdlib.h>
#include <string.h>

#ifdef PRESENCED_HAVE_REDIS
#include "presence_redis.h"
#endif

/* Sessions of an origin past its window ended per timer turn. */
#define REAP_BATCH 4096
/* The built-in origin of PUT /v1/sessions/{id}. */
#define HTTP_ORIGIN "http"

typedef struct osess {
  struct osess *hnext; /* the table's chain */
  origin_t *origin;
  struct osess *prev, *next; /* the origin's list */
  presence_handle_t handle;
  uint64_t fp;  /* the id's fingerprint: its low bits pick the bucket */
  uint32_t fp2; /* 32 more bits of it, under another key */
  union {
    uint32_t mark; /* backend origins: the sync generation that named it */
    /* The HTTP origin (never synced): the monotonic end of the TTL modulo
     * 2^32 ms; the TTL is at most a day and the sweep runs each second,
     * so the wrapping comparison in ttl_over never errs. */
    uint32_t deadline;
  } u;
} osess_t;
_Static_assert(sizeof(osess_t) <= 56, "a record fits a 64-byte malloc chunk");

struct origin {
  origin_t *prev, *next; /* the registry's list */
  conn_t *conn;          /* NULL: detached */
  osess_t *head;
  uint32_t n_sessions;
  uint32_t sync_gen;
  uint8_t syncing;
  uint8_t is_http;
  uint8_t reaping;            /* past the window: ending its sessions */
  uint32_t sync_opened;       /* sessions a sync opened */
  int64_t since_wall_ms;      /* attached (or created) */
  int64_t detached_mono_ms;   /* 0: attached */
  int64_t detached_wall_ms;
  int64_t ops_window_ms;      /* rate limit: the current second */
  uint32_t ops_in_window;
  /* Redis: the counter of the name's claim by this origin's connection (0:
   * none, or not answered yet), and the highest counter of a claim by
   * another instance told here (origin_claimed). */
  uint64_t claim;
  uint64_t claim_seen;
  /* Another instance took the name since this origin's sessions were
   * recorded here: its sync may have adopted some of them, so the records
   * are checked against the store before they are trusted (moved_check). */
  uint8_t moved;
  char name[PRESENCE_ID_MAX + 1];
};

struct origins {
  map_t by_name; /* name -> origin_t */
  /* session id -> osess_t: chained by osess_t.hnext, doubled at load 1 */
  osess_t **buckets;
  size_t nbuckets; /* power of two, or 0 before the first record */
  size_t n_sess;
  uint64_t ka0, ka1, kb0, kb1; /* the fingerprint's keys */
  origin_t *list;
  uint32_t n_origins;
  origin_t *http;
  uv_timer_t reap_timer;
  int reap_armed;
  int sink;
  uint64_t ops_total;
};

/* ---- The table ----------------------------------------------------------- */

/* Derive the fingerprint's two keys from the process's hash key (what
 * map_init copied into by_name), so they are as unpredictable as it is. */
static void fp_keys(struct origins *g) {
  const uint64_t k0 = g->by_name.k0, k1 = g->by_name.k1;
  g->ka0 = presence_siphash13(k0, k1, "origin fp a0", 12);
  g->ka1 = presence_siphash13(k0, k1, "origin fp a1", 12);
  g->kb0 = presence_siphash13(k0, k1, "origin fp b0", 12);
  g->kb1 = presence_siphash13(k0, k1, "origin fp b1", 12);
}

static void fingerprint(const struct origins *g, const char *id, uint64_t *a,
                        uint32_t *b) {
  size_t n = strlen(id);
  *a = presence_siphash13(g->ka0, g->ka1, id, n);
  uint64_t h = presence_siphash13(g->kb0, g->kb1, id, n);
  *b = (uint32_t)(h ^ (h >> 32));
}

static osess_t *sess_get(const struct origins *g, const char *id) {
  if (!g->nbuckets) return NULL;
  uint64_t a;
  uint32_t b;
  fingerprint(g, id, &a, &b);
  for (osess_t *r = g->buckets[a & (g->nbuckets - 1)]; r; r = r->hnext)
    if (r->fp == a && r->fp2 == b) return r;
  return NULL;
}

/* Double the buckets when the load reaches 1 (as map.c does); a failed
 * growth keeps the old buckets, with longer chains. */
static int tab_grow(struct origins *g) {
  size_t nb = g->nbuckets ? g->nbuckets * 2 : 16;
  osess_t **b = calloc(nb, sizeof *b);
  if (!b) return -1;
  for (size_t i = 0; i < g->nbuckets; i++) {
    osess_t *r = g->buckets[i];
    while (r) {
      osess_t *next = r->hnext;
      r->hnext = b[r->fp & (nb - 1)];
      b[r->fp & (nb - 1)] = r;
      r = next;
    }
  }
  free(g->buckets);
  g->buckets = b;
  g->nbuckets = nb;
  return 0;
}

static void tab_unlink(struct origins *g, osess_t *r) {
  osess_t **pp = &g->buckets[r->fp & (g->nbuckets - 1)];
  while (*pp != r)
    pp = &(*pp)->hnext;
  *pp = r->hnext;
  g->n_sess--;
}

/* ---- Records ------------------------------------------------------------- */

static void link_sess(origin_t *o, osess_t *r) {
  r->origin = o;
  r->prev = NULL;
  r->next = o->head;
  if (o->head) o->head->prev = r;
  o->head = r;
  o->n_sessions++;
}

/* Out of the table and the origin's list; the caller ends the session. */
static void drop_sess(struct origins *g, osess_t *r) {
  origin_t *o = r->origin;
  if (r->prev)
    r->prev->next = r->next;
  else
    o->head = r->next;
  if (r->next) r->next->prev = r->prev;
  o->n_sessions--;
  tab_unlink(g, r);
  free(r);
}

/* The caller has looked id up and found no record. */
static osess_t *new_sess(struct origins *g, origin_t *o, const char *id,
                         presence_handle_t h) {
  if (g->n_sess >= g->nbuckets && tab_grow(g) != 0 && !g->nbuckets)
    return NULL;
  osess_t *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  fingerprint(g, id, &r->fp, &r->fp2);
  size_t i = r->fp & (g->nbuckets - 1);
  r->hnext = g->buckets[i];
  g->buckets[i] = r;
  g->n_sess++;
  r->handle = h;
  r->u.mark = o->sync_gen;
  link_sess(o, r);
  return r;
}

/* End r's session in the library for reason (its record goes first). */
static void end_sess(srv_t *s, osess_t *r, presence_reason_t reason) {
  presence_handle_t h = r->handle;
  drop_sess(s->origins, r);
  int rc = presence_handle_end(s->p, h, reason, NULL, NULL);
  if (rc != 0 && rc != PRESENCE_ENOSESSION)
    srv_error(s, "session_end_failed", "ending a backend session: %s",
              presence_strerror(rc));
}

static void free_origin(struct origins *g, origin_t *o) {
  if (o->prev)
    o->prev->next = o->next;
  else
    g->list = o->next;
  if (o->next) o->next->prev = o->prev;
  map_del(&g->by_name, o->name);
  g->n_origins--;
  free(o);
}

static origin_t *new_origin(struct origins *g, const char *name, int64_t now) {
  origin_t *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  snprintf(o->name, sizeof o->name, "%s", name);
  if (map_put(&g->by_name, o->name, o) != 0) {
    free(o);
    return NULL;
  }
  o->since_wall_ms = now;
  o->next = g->list;
  if (g->list) g->list->prev = o;
  g->list = o;
  g->n_origins++;
  return o;
}

/* ---- Ends decided elsewhere ---------------------------------------------- */

/*
 * A session.disconnected this instance decided: if the session is still in
 * the table, someone else ended it (a kick by the API, a reset): drop the
 * record and tell the backend. Our own ends never get here (their records
 * are gone first), nor do the ones ended for disconnect, origin_lost or
 * timeout, which only we ask for (timeout: the HTTP sessions' TTL; a client
 * WebSocket's timeout ends an id no record here can hold): with an
 * asynchronous store their events may come after the same id was opened
 * again, and the record they would drop is the new session's. A TTL end
 * whose event came after a renewal (PUT) had opened the id again left that
 * session with no record, so no TTL ended it.
 */
static void on_session_event(srv_t *s, const presence_event_t *ev, void *ud) {
  struct origins *g = ud;
  if (!ev->session_id || ev->reason == PRESENCE_REASON_DISCONNECT ||
      ev->reason == PRESENCE_REASON_ORIGIN_LOST ||
      ev->reason == PRESENCE_REASON_TIMEOUT)
    return;
  osess_t *r = sess_get(g, ev->session_id);
  if (!r) return;
  conn_t *c = r->origin->conn;
  char id[PRESENCE_ID_MAX + 1];
  snprintf(id, sizeof id, "%s", ev->session_id);
  drop_sess(g, r);
  if (c) backend_notify_ended(c, id, ev->reason);
}

/*
 * A removal by the API (DELETE /v1/channels/{name}/members/{user_id}) took
 * session_id out of channel: a session of a backend here is told so (at
 * once, or held for the origin's return when detached: backend_left.c), or
 * its SDK would join the channel again at its next re-assert. With probe
 * (the removal was decided on another instance), the store's local record
 * of the membership goes too (Redis re-asserts it after a fence) and only a
 * session that still had it is told. Returns whether it was told.
 */
int origin_channel_removed(srv_t *s, const char *session_id,
                           const char *channel, int probe) {
  osess_t *r = s->origins ? sess_get(s->origins, session_id) : NULL;
  if (!r || r->origin->is_http) return 0;
  if (probe &&
      presence_handle_leave(s->p, r->handle, channel, NULL, NULL) != 0)
    return 0;
  conn_t *c = r->origin->conn;
  if (c && !c->closing)
    backend_notify_left(c, session_id, channel, NULL, NULL);
  else
    backend_left_hold(s, r->origin->name, session_id, channel, NULL, NULL);
  return 1;
}

int origin_holds(const srv_t *s, const char *session_id) {
  return s->origins && sess_get(s->origins, session_id) != NULL;
}

int origin_has_backend_sessions(const srv_t *s) {
  const struct origins *g = s->origins;
  return g && g->n_sess > g->http->n_sessions;
}

/* ---- The name across instances (Redis) ------------------------------------
 *
 * Each backend connection claims its origin's name in the store before its
 * welcome (backend.c); the newest claim wins, as a newer connection wins on
 * one instance (origin_attach). A claim by another instance reaches this
 * one on the kick stream (presence_redis_on_origin): a connection here with
 * an older claim is closed with 4009 and the origin detached, its sessions
 * kept for the resume window as after any close. The other instance's sync
 * adopts them; the store refuses this instance's later writes of an adopted
 * session (its owner check), so the old connection's writes in flight are
 * not applied. A claim answered after a newer one was told (the two travel
 * on different connections) is superseded at once. */

/* The connection has an older claim than one told: close it (4009). 1 when
 * it was (o may be gone: an origin without sessions goes with it). */
static int claim_superseded(srv_t *s, origin_t *o) {
  if (!o->claim || o->claim >= o->claim_seen) return 0;
  o->claim = 0; /* the name is another instance's: nothing to release */
  o->moved = 1;
  conn_t *old = o->conn;
  if (!old) return 0;
  srv_log(s, PRESENCE_LOG_INFO,
          "origin %s taken over through another instance", o->name);
  origin_detach(s, o);
  backend_taken_over(old);
  return 1;
}

int origin_claimed(srv_t *s, origin_t *o, uint64_t counter) {
  o->claim = counter;
  return claim_superseded(s, o) ? -1 : 0;
}

#ifdef PRESENCED_HAVE_REDIS
static void on_origin_claim(void *ud, const char *name, uint64_t counter) {
  srv_t *s = ud;
  origin_t *o = s->origins ? map_get(&s->origins->by_name, name) : NULL;
  if (!o || o->is_http) return;
  if (counter > o->claim_seen) o->claim_seen = counter;
  claim_superseded(s, o);
}
#endif

/* The origin goes (no sessions left): its name is free for the next claim
 * to say that nobody held it. */
static void claim_release(srv_t *s, origin_t *o) {
#ifdef PRESENCED_HAVE_REDIS
  if (o->claim && s->rstore)
    presence_redis_origin_release(s->rstore, o->name, o->claim);
#else
  (void)s;
#endif
  o->claim = 0;
}

static void on_reap_timer(uv_timer_t *t);

int origin_init(srv_t *s) {
  struct origins *g = calloc(1, sizeof *g);
  if (!g) return -1;
  map_init(&g->by_name);
  fp_keys(g);
  s->origins = g;
  g->http = new_origin(g, HTTP_ORIGIN, srv_now_wall(s));
  if (!g->http) return -1;
  g->http->is_http = 1;
  uv_timer_init(s->loop, &g->reap_timer);
  g->reap_timer.data = s;
  fanout_sink_t sink = {.name = "backend sessions",
                        .types = FANOUT_TYPE(PRESENCE_EV_SESSION_DISCONNECTED),
                        .local = 1,
                        .on_event = on_session_event,
                        .ud = g};
  g->sink = fanout_sink_add(s, &sink);
#ifdef PRESENCED_HAVE_REDIS
  if (s->rstore &&
      presence_redis_on_origin(s->rstore, on_origin_claim, s) != 0)
    return -1;
#endif
  return g->sink < 0 ? -1 : 0;
}

void origin_close(srv_t *s) {
  struct origins *g = s->origins;
  if (g && !uv_is_closing((uv_handle_t *)&g->reap_timer))
    uv_close((uv_handle_t *)&g->reap_timer, NULL);
}

void origin_free(srv_t *s) {
  struct origins *g = s->origins;
  if (!g) return;
  while (g->list) {
    origin_t *o = g->list;
    while (o->head)
      drop_sess(g, o->head);
    free_origin(g, o);
  }
  map_free(&g->by_name);
  free(g->buckets);
  free(g);
  s->origins = NULL;
  backend_left_free(s);
}

/* ---- Attach and detach --------------------------------------------------- */

origin_t *origin_attach(srv_t *s, const char *name, conn_t *c, int *resumed,
                        int *full) {
  struct origins *g = s->origins;
  *resumed = 0;
  *full = 0;
  origin_t *o = map_get(&g->by_name, name);
  if (o && o->is_http) return NULL; /* the name is reserved */
  if (!o) {
    if (g->n_origins - 1 >= s->cfg.max_origins) { /* "http" is built in */
      *full = 1;
      return NULL;
    }
    o = new_origin(g, name, srv_now_wall(s));
    if (!o) return NULL;
  } else {
    *resumed = o->n_sessions > 0;
    if (o->conn) {
      /* The backend is back on a new connection (the old one may be
       * half-open after a crash): the newest wins, the sessions stay. */
      conn_t *old = o->conn;
      o->conn = NULL;
      backend_taken_over(old);
    }
  }
  o->conn = c;
  o->claim = 0; /* this connection's claim is not answered yet */
  o->detached_mono_ms = o->detached_wall_ms = 0;
  o->reaping = 0;
  o->syncing = 0;
  o->since_wall_ms = srv_now_wall(s);
  return o;
}

void origin_detach(srv_t *s, origin_t *o) {
  o->conn = NULL;
  o->syncing = 0;
  if (!o->n_sessions) {
    claim_release(s, o);
    free_origin(s->origins, o);
    return;
  }
  o->detached_mono_ms = srv_now_mono(s);
  o->detached_wall_ms = srv_now_wall(s);
}

const char *origin_name(const origin_t *o) {
  return o->name;
}

uint32_t origin_session_count(const origin_t *o) {
  return o->n_sessions;
}

/* ---- Operations ---------------------------------------------------------- */

static const char *open_error(int rc, const char **msg) {
  switch (rc) {
  case PRESENCE_EEXIST:
    *msg = "the session id belongs to another origin or a client";
    return "session_owned";
  case PRESENCE_ELIMIT:
    *msg = "the user has too many sessions";
    return "too_many_sessions";
  case PRESENCE_EMETA:
    *msg = "meta is too large";
    return "bad_meta";
  case PRESENCE_EDEVICE:
    *msg = "device must be 1..32 letters, digits, '.', '_' or '-'";
    return "bad_device";
  default:
    *msg = presence_strerror(rc);
    return "internal";
  }
}

static const char *channel_error(int rc, const char **msg) {
  *msg = presence_strerror(rc);
  return rc == PRESENCE_ENOSESSION ? "no_session" : channel_error_code(rc);
}

/* With an asynchronous store (Redis) an open is refused later (EEXIST
 * cluster-wide, ELIMIT): the record goes and the backend is told.
 *
 * The refusal is of this open only, named by its handle: by the time it
 * comes, the same id may have been closed and opened again (a batch's open
 * and close, then a sync's take-over, all sent before the first answer),
 * and that newer open is not refused. Dropping its record by the id alone
 * left its session in the store and in the local table with no record: no
 * origin ever ended it, an online user nobody held.
 *
 * The handle is known only once the open returns, and a store may answer
 * inside the call (the Redis shards' claim, when the id's shard is not
 * registered): such an answer is kept for op_open (in_call), which then
 * frees the request. */

/* An answer a store may give inside the call that asked for it: kept for
 * the caller (the request's handle is not known yet), which reads it once
 * the call returns. Shared by the open, channel and HTTP open requests. */
typedef struct in_call {
  int status;
  uint8_t pending, answered; /* pending: the call has not returned */
} in_call_t;

static void in_call_begin(in_call_t *a) {
  a->status = 0;
  a->pending = 1;
  a->answered = 0;
}

/* In a done callback: 1 when the answer came inside the call (kept). */
static int in_call_keep(in_call_t *a, int status) {
  if (!a->pending) return 0;
  a->status = status;
  a->answered = 1;
  return 1;
}

typedef struct open_req {
  srv_t *s;
  presence_handle_t handle; /* set once the open returned it */
  in_call_t call;
  char id[];
} open_req_t;

/* Whether an open's (or a channel write's) answer refuses it for good (not
 * a store that could not be reached, which keeps it to re-assert). */
static int open_refused(int status) {
  return status != 0 && status != PRESENCE_ESTORE &&
         status != PRESENCE_ETIMEDOUT && status != PRESENCE_EFENCED;
}

static void on_open_done(presence_t *p, int status, void *ud) {
  open_req_t *q = ud;
  srv_t *s = q->s;
  const char *id = q->id;
  if (in_call_keep(&q->call, status)) return;
  if (s->origins && open_refused(status)) {
    osess_t *r = sess_get(s->origins, id);
    if (r && r->handle == q->handle) {
      conn_t *c = r->origin->conn;
      drop_sess(s->origins, r);
      /* The store has dropped a session refused EEXIST or ELIMIT already
       * (this is then ENOSESSION); one refused otherwise must not outlive
       * its record either, or it would stay this instance's for ever. */
      presence_handle_end(p, q->handle, PRESENCE_REASON_DISCONNECT, NULL,
                          NULL);
      if (c) backend_notify_ended(c, id, PRESENCE_REASON_NONE);
    }
  }
  free(q);
}

static void moved_check(srv_t *s, osess_t *r, const char *id,
                        const presence_session_info_t *si, int status);

static const char *op_open(srv_t *s, origin_t *o, const bop_t *op,
                           const char **msg) {
  struct origins *g = s->origins;
  osess_t *r = sess_get(g, op->session);
  if (r && r->origin != o) {
    *msg = "the session id belongs to another origin";
    return "session_owned";
  }
  if (r) {
    /* Held already: a retried open, or a session named by a sync. */
    presence_session_info_t si;
    int have = presence_session_get(s->p, op->session, &si) == 0;
    if (have && strcmp(si.user_id, op->user) != 0) {
      *msg = "this origin holds the session for another user";
      return "session_exists";
    }
    r->u.mark = o->sync_gen;
    if (o->moved && have && srv_async(s)) {
      /* The record may be stale (the session adopted elsewhere since):
       * the store tells, and the session is adopted back if so. */
      moved_check(s, r, op->session, &si, op->status);
      return NULL;
    }
    if (op->status && (!have || si.status != (presence_status_t)op->status)) {
      int rc = presence_handle_set_status(s->p, r->handle,
                                          (presence_status_t)op->status, NULL,
                                          NULL);
      if (rc != 0) {
        *msg = presence_strerror(rc);
        return "internal";
      }
    }
    return NULL;
  }
  char *meta = bop_json(op, op->meta);
  if (op->meta && (!meta || strlen(meta) > PRESENCE_META_MAX)) {
    free(meta);
    *msg = "meta is over 4096 bytes";
    return "bad_meta";
  }
  open_req_t *ud = NULL;
  if (srv_async(s)) {
    size_t il = strlen(op->session) + 1;
    if (!(ud = malloc(sizeof *ud + il))) {
      free(meta);
      *msg = "out of memory";
      return "internal";
    }
    ud->s = s;
    ud->handle = PRESENCE_HANDLE_NONE;
    in_call_begin(&ud->call);
    memcpy(ud->id, op->session, il);
  }
  presence_handle_t h = PRESENCE_HANDLE_NONE;
  /* A re-assert on a shared store (Redis) takes over the sessions the
   * origin held through another instance before its connection moved
   * here: no event for them (the store refuses the same id of another
   * user). */
  int adopt = op->from_sync && srv_async(s);
  /* Opened with its status in the same write: an idle session makes its
   * user idle, never online first (watchers would see a blink). */
  presence_open_opts_t oo = {
      .device = op->device,
      .status = op->status == PRESENCE_IDLE ? PRESENCE_IDLE : PRESENCE_ONLINE,
      .flags = adopt ? PRESENCE_OPEN_ADOPT : 0};
  int rc = presence_session_open_opts(s->p, op->session, op->user, meta, &oo,
                                      &h, ud ? on_open_done : NULL, ud);
  free(meta);
  if (rc != 0) {
    free(ud);
    return open_error(rc, msg);
  }
  if (ud && ud->call.answered) {
    /* Answered inside the call: a refusal is this op's error. */
    int st = ud->call.status;
    free(ud);
    if (open_refused(st)) {
      presence_handle_end(s->p, h, PRESENCE_REASON_DISCONNECT, NULL, NULL);
      return open_error(st, msg);
    }
  } else if (ud) {
    ud->handle = h;
    ud->call.pending = 0;
  }
  if (!new_sess(g, o, op->session, h)) {
    presence_handle_end(s->p, h, PRESENCE_REASON_DISCONNECT, NULL, NULL);
    *msg = "out of memory";
    return "internal";
  }
  if (o->syncing) o->sync_opened++;
  /* An adopted session keeps the status it had: the re-asserted one is
   * set (an event only if it differs). */
  if (adopt)
    presence_handle_set_status(
        s->p, h, op->status ? (presence_status_t)op->status : PRESENCE_ONLINE,
        NULL, NULL);
  return NULL;
}

/*
 * A join or update with an asynchronous store (Redis) is acknowledged when
 * it is sent, not when the store answers: a batch's ops are pipelined, and
 * an ack waiting for the store would cost a round trip per batch. The store
 * may still refuse it for good (too_many_channels: the session's channels
 * in Redis include those joined through another instance before a take-
 * over, which this instance's record does not count; no_session: the store
 * no longer holds the session; not_joined: an update of a membership the
 * store no longer has). The session is then not in the channel while the
 * backend believes it is: it is told by a `left` notice with reason
 * "refused" and the op's error code (docs/protocol.md 5.4), held like a
 * removal's when the origin is detached. A store that could not be reached
 * (ESTORE, ETIMEDOUT, EFENCED) keeps the write in its local record and
 * makes it at its re-assert: nothing to tell.
 *
 * The refusal is of this session (its handle): the same id ended and
 * opened again meanwhile is not told. A store may answer inside the call
 * (in_call, as for an open): that answer is the op's own error in the ack.
 */
typedef struct chan_req {
  srv_t *s;
  presence_handle_t handle;
  in_call_t call;
  char *channel; /* after id, in the same allocation */
  char id[];
} chan_req_t;

static chan_req_t *chan_req_new(srv_t *s, presence_handle_t h,
                                const char *id, const char *channel) {
  size_t il = strlen(id) + 1, cl = strlen(channel) + 1;
  chan_req_t *q = malloc(sizeof *q + il + cl);
  if (!q) return NULL;
  q->s = s;
  q->handle = h;
  in_call_begin(&q->call);
  memcpy(q->id, id, il);
  q->channel = q->id + il;
  memcpy(q->channel, channel, cl);
  return q;
}

static void on_chan_done(presence_t *p, int status, void *ud) {
  (void)p;
  chan_req_t *q = ud;
  if (in_call_keep(&q->call, status)) return;
  srv_t *s = q->s;
  osess_t *r = s->origins && open_refused(status)
                   ? sess_get(s->origins, q->id)
                   : NULL;
  if (r && r->handle == q->handle && !r->origin->is_http) {
    const char *msg;
    const char *code = channel_error(status, &msg);
    conn_t *c = r->origin->conn;
    srv_log(s, PRESENCE_LOG_INFO,
            "origin %s: session %s refused in channel %s after its ack: %s",
            r->origin->name, q->id, q->channel, msg);
    if (c && !c->closing)
      backend_notify_left(c, q->id, q->channel, code, msg);
    else
      backend_left_hold(s, r->origin->name, q->id, q->channel, code, msg);
  }
  free(q);
}

const char *origin_apply(srv_t *s, origin_t *o, const bop_t *op,
                         const char **msg) {
  struct origins *g = s->origins;
  g->ops_total++;
  if (op->kind == BOP_OPEN) return op_open(s, o, op, msg);
  osess_t *r = sess_get(g, op->session);
  presence_session_info_t si;
  if (!r || r->origin != o) {
    if (r || presence_session_get(s->p, op->session, &si) == 0) {
      *msg = "the session belongs to another origin or a client";
      return "session_owned";
    }
    *msg = "no such session of this origin";
    return "no_session";
  }
  r->u.mark = o->sync_gen;
  int rc = 0;
  char *data = NULL;
  switch (op->kind) {
  case BOP_STATUS:
    rc = presence_handle_set_status(s->p, r->handle,
                                    (presence_status_t)op->status, NULL, NULL);
    break;
  case BOP_CLOSE:
    end_sess(s, r, PRESENCE_REASON_DISCONNECT);
    return NULL;
  case BOP_JOIN:
  case BOP_UPDATE: {
    data = bop_json(op, op->data);
    if (op->data && (!data || strlen(data) > PRESENCE_DATA_MAX)) {
      free(data);
      *msg = "data is over the size limit";
      return "data_too_large";
    }
    chan_req_t *q = NULL;
    if (srv_async(s) &&
        !(q = chan_req_new(s, r->handle, op->session, op->channel))) {
      free(data);
      *msg = "out of memory";
      return "internal";
    }
    presence_done_cb done = q ? on_chan_done : NULL;
    rc = op->kind == BOP_JOIN
             ? presence_handle_join(s->p, r->handle, op->channel, data, done,
                                    q)
             : presence_handle_update(s->p, r->handle, op->channel, data,
                                      done, q);
    free(data);
    if (rc != 0 || !q) {
      free(q); /* a call that fails is not answered */
    } else if (q->call.answered) {
      if (open_refused(q->call.status)) rc = q->call.status;
      free(q);
    } else {
      q->call.pending = 0;
    }
    break;
  }
  case BOP_LEAVE:
    rc = presence_handle_leave(s->p, r->handle, op->channel, NULL, NULL);
    break;
  }
  if (rc == 0) return NULL;
  if (op->kind == BOP_STATUS) {
    *msg = presence_strerror(rc);
    return rc == PRESENCE_ENOSESSION ? "no_session" : "internal";
  }
  return channel_error(rc, msg);
}

void origin_sync_begin(origin_t *o) {
  if (o->syncing) return;
  o->syncing = 1;
  o->sync_gen++;
  o->sync_opened = 0;
}

void origin_sync_end(srv_t *s, origin_t *o, uint32_t *opened,
                     uint32_t *closed) {
  uint32_t n = 0;
  for (osess_t *r = o->head, *next; r; r = next) {
    next = r->next;
    if (r->u.mark == o->sync_gen) continue;
    end_sess(s, r, PRESENCE_REASON_DISCONNECT);
    n++;
  }
  *opened = o->sync_opened;
  *closed = n;
  o->syncing = 0;
  o->moved = 0; /* every session it keeps was named, so checked */
  o->sync_opened = 0;
}

int origin_take_ops(srv_t *s, origin_t *o, uint32_t n, uint32_t *retry_ms) {
  int64_t now = srv_now_mono(s);
  if (now - o->ops_window_ms >= 1000) {
    o->ops_window_ms = now;
    o->ops_in_window = 0;
  }
  if ((uint64_t)o->ops_in_window + n > s->cfg.backend_ops_per_sec) {
    *retry_ms = (uint32_t)(1000 - (now - o->ops_window_ms));
    return -1;
  }
  o->ops_in_window += n;
  return 0;
}

void origin_end_all(srv_t *s, origin_t *o, presence_reason_t reason) {
  while (o->head)
    end_sess(s, o->head, reason);
}

/* ---- Timers -------------------------------------------------------------- */

static int ttl_over(const osess_t *r, int64_t now) {
  return (int32_t)((uint32_t)now - r->u.deadline) >= 0;
}

/* End up to REAP_BATCH sessions of origins past their window; returns
 * whether some remain. */
static int reap_some(srv_t *s) {
  struct origins *g = s->origins;
  uint32_t budget = REAP_BATCH;
  for (origin_t *o = g->list, *next; o && budget; o = next) {
    next = o->next;
    if (!o->reaping) continue;
    while (o->head && budget) {
      end_sess(s, o->head, PRESENCE_REASON_ORIGIN_LOST);
      budget--;
    }
    if (!o->head) {
      srv_log(s, PRESENCE_LOG_INFO, "origin %s lost: its sessions ended",
              o->name);
      claim_release(s, o);
      free_origin(g, o);
    }
  }
  for (origin_t *o = g->list; o; o = o->next)
    if (o->reaping) return 1;
  return 0;
}

static void on_reap_timer(uv_timer_t *t) {
  srv_t *s = t->data;
  if (!reap_some(s)) {
    uv_timer_stop(t);
    s->origins->reap_armed = 0;
  }
}

void origin_housekeeping(srv_t *s, int64_t now) {
  struct origins *g = s->origins;
  if (!g) return;
  int reap = 0;
  for (origin_t *o = g->list; o; o = o->next) {
    if (o->is_http) {
      for (osess_t *r = o->head, *next; r; r = next) {
        next = r->next;
        if (ttl_over(r, now)) end_sess(s, r, PRESENCE_REASON_TIMEOUT);
      }
      continue;
    }
    if (!o->conn && !o->reaping &&
        now - o->detached_mono_ms >= (int64_t)s->cfg.origin_resume_ms) {
      srv_log(s, PRESENCE_LOG_WARN,
              "origin %s: no backend for %u ms, ending its %u sessions "
              "(origin_lost)",
              o->name, s->cfg.origin_resume_ms, o->n_sessions);
      o->reaping = 1;
    }
    reap |= o->reaping;
  }
  if (reap && !g->reap_armed && !s->shutting_down) {
    g->reap_armed = 1;
    uv_timer_start(&g->reap_timer, on_reap_timer, 0, 1);
  }
}

void origin_shutdown(srv_t *s) {
  struct origins *g = s->origins;
  if (!g) return;
  for (origin_t *o = g->list; o; o = o->next)
    while (o->head)
      end_sess(s, o->head, PRESENCE_REASON_SHUTDOWN);
  if (g->reap_armed) {
    uv_timer_stop(&g->reap_timer);
    g->reap_armed = 0;
  }
}

/* ---- HTTP sessions ------------------------------------------------------- */

static const char *http_put_error(int rc, int *http_status) {
  *http_status = rc == PRESENCE_EEXIST   ? 409
                 : rc == PRESENCE_ELIMIT ? 429
                 : rc == PRESENCE_EMETA  ? 400
                                         : 503;
  return rc == PRESENCE_EEXIST   ? "session_exists"
         : rc == PRESENCE_ELIMIT ? "too_many_sessions"
         : rc == PRESENCE_EMETA  ? "bad_meta"
                                 : "internal";
}

/*
 * A created HTTP session with an asynchronous store (Redis): the store
 * decides whether the id is free cluster-wide (EEXIST: another user's
 * session elsewhere) and whether the user has room (ELIMIT). A PUT is one
 * request and one answer, so the answer waits for that decision: answered
 * 201 at once, a refused session was reported created, and its renewals
 * 200, while it never existed. A refusal drops the record (of this open,
 * by its handle) as an open's does; an unreachable store keeps the session
 * to re-assert, which is answered as created.
 */
typedef struct http_open_req {
  srv_t *s;
  presence_handle_t handle;
  origin_put_cb cb;
  void *ud;
  in_call_t call;
  char id[];
} http_open_req_t;

static void on_http_open_done(presence_t *p, int status, void *ud) {
  http_open_req_t *q = ud;
  if (in_call_keep(&q->call, status)) return;
  srv_t *s = q->s;
  const char *code = NULL;
  int hs = 0;
  if (open_refused(status)) {
    osess_t *r = s->origins ? sess_get(s->origins, q->id) : NULL;
    if (r && r->handle == q->handle) drop_sess(s->origins, r);
    presence_handle_end(p, q->handle, PRESENCE_REASON_DISCONNECT, NULL, NULL);
    code = http_put_error(status, &hs);
  }
  if (q->cb) q->cb(s, code, hs, q->ud);
  free(q);
}

/*
 * A renewal on Redis of a session this instance has a record of. The
 * session may have moved since: a renewal through another instance adopted
 * it there (no event), and that instance's TTL, not this one's, ends it. A
 * caller whose renewals then all came here saw 200 each time and its
 * session offline at the other instance's deadline. The renewal's status
 * write tells: the store refuses it (ENOSESSION, its owner check) to an
 * instance that no longer holds the session. The local session is then
 * ended (the store refuses that end as well: no event) and the session
 * adopted back here, as a first renewal here would (no event; opened again,
 * with its events, if it ended meanwhile), with this renewal's deadline.
 * (ENOSESSION also answers a session not re-asserted yet after a store
 * loss: adopted, it is asserted then instead.)
 */
typedef struct renew_req {
  srv_t *s;
  presence_handle_t handle;
  int status; /* the status asked for (0: none), set again once adopted */
  char *user, *meta, *device; /* after id, in the same allocation */
  char id[];
} renew_req_t;

static char *put_str(char **at, const char *v) {
  if (!v) return NULL;
  char *d = *at;
  size_t n = strlen(v) + 1;
  memcpy(d, v, n);
  *at += n;
  return d;
}

/* Also the check of a backend session named again after its origin's name
 * was taken by another instance (moved_check): the same status write, the
 * same adoption back when it was refused; the record keeps its sync mark
 * (the union's other half). */
static void on_renew_done(presence_t *p, int status, void *ud) {
  renew_req_t *q = ud;
  srv_t *s = q->s;
  struct origins *g = s->origins;
  osess_t *r = g && status == PRESENCE_ENOSESSION ? sess_get(g, q->id) : NULL;
  if (r && r->handle == q->handle) {
    origin_t *o = r->origin;
    uint32_t keep = r->u.deadline;
    drop_sess(g, r);
    presence_handle_end(p, q->handle, PRESENCE_REASON_DISCONNECT, NULL, NULL);
    presence_handle_t h = PRESENCE_HANDLE_NONE;
    int rc = presence_session_adopt(p, q->id, q->user, q->meta, q->device, &h,
                                    NULL, NULL);
    if (rc == 0 && (r = new_sess(g, o, q->id, h)) != NULL) {
      r->u.deadline = keep;
      if (q->status)
        presence_handle_set_status(p, h, (presence_status_t)q->status, NULL,
                                   NULL);
    } else {
      if (rc == 0)
        presence_handle_end(p, h, PRESENCE_REASON_DISCONNECT, NULL, NULL);
      srv_error(s, "session_renew_failed",
                "session %s of origin %s held by another instance: not taken "
                "back: %s",
                q->id, o->name, presence_strerror(rc ? rc : PRESENCE_ENOMEM));
    }
  }
  free(q);
}

static void renew_check(srv_t *s, osess_t *r, const char *id,
                        const presence_session_info_t *si, int status) {
  size_t n = strlen(id) + 1 + strlen(si->user_id) + 1 +
             (si->meta ? strlen(si->meta) + 1 : 0) +
             (si->device ? strlen(si->device) + 1 : 0);
  renew_req_t *q = malloc(sizeof *q + n);
  presence_status_t to = status ? (presence_status_t)status : si->status;
  if (!q) {
    presence_handle_set_status(s->p, r->handle, to, NULL, NULL);
    return;
  }
  q->s = s;
  q->handle = r->handle;
  q->status = status;
  char *at = q->id;
  put_str(&at, id);
  q->user = put_str(&at, si->user_id);
  q->meta = put_str(&at, si->meta);
  q->device = put_str(&at, si->device);
  if (presence_handle_set_status(s->p, r->handle, to, on_renew_done, q) != 0)
    free(q);
}

static void moved_check(srv_t *s, osess_t *r, const char *id,
                        const presence_session_info_t *si, int status) {
  renew_check(s, r, id, si, status);
}

const char *origin_http_put(srv_t *s, const char *session_id,
                            const char *user, uint32_t ttl_ms, int status,
                            const char *meta, const char *device, int *created,
                            int64_t *expires_wall_ms, int *http_status,
                            origin_put_cb cb, void *ud, int *pending) {
  struct origins *g = s->origins;
  origin_t *o = g->http;
  *created = 0;
  *pending = 0;
  *expires_wall_ms = srv_now_wall(s) + ttl_ms;
  osess_t *r = sess_get(g, session_id);
  if (r && r->origin != o) {
    *http_status = 409;
    return "session_exists";
  }
  if (r) {
    presence_session_info_t si;
    int have = presence_session_get(s->p, session_id, &si) == 0;
    if (have && strcmp(si.user_id, user) != 0) {
      *http_status = 409;
      return "session_exists";
    }
    r->u.deadline = (uint32_t)(srv_now_mono(s) + ttl_ms);
    if (have && srv_async(s))
      renew_check(s, r, session_id, &si, status);
    else if (status)
      presence_handle_set_status(s->p, r->handle, (presence_status_t)status,
                                 NULL, NULL);
    return NULL;
  }
  presence_handle_t h = PRESENCE_HANDLE_NONE;
  http_open_req_t *q = NULL;
  if (srv_async(s) && cb) {
    size_t il = strlen(session_id) + 1;
    if (!(q = malloc(sizeof *q + il))) {
      *http_status = 503;
      return "internal";
    }
    q->s = s;
    q->handle = PRESENCE_HANDLE_NONE;
    q->cb = cb;
    q->ud = ud;
    in_call_begin(&q->call);
    memcpy(q->id, session_id, il);
  }
  /* On Redis a renewal may reach any instance (a load balancer in front of
   * serverless callers): it takes the session over from the instance that
   * had it, with no event, and that one's TTL then ends nothing. */
  /* Opened with its status in the same write (no online before idle). */
  presence_open_opts_t oo = {
      .device = device,
      .status = status == PRESENCE_IDLE ? PRESENCE_IDLE : PRESENCE_ONLINE,
      .flags = srv_async(s) ? PRESENCE_OPEN_ADOPT : 0};
  int rc = presence_session_open_opts(s->p, session_id, user, meta, &oo, &h,
                                      q ? on_http_open_done : NULL, q);
  if (rc != 0) {
    free(q);
    return http_put_error(rc, http_status);
  }
  if (q && q->call.answered) {
    /* Answered inside the call: a refusal is this request's answer. */
    int st = q->call.status;
    free(q);
    q = NULL;
    if (open_refused(st)) {
      presence_handle_end(s->p, h, PRESENCE_REASON_DISCONNECT, NULL, NULL);
      return http_put_error(st, http_status);
    }
  }
  r = new_sess(g, o, session_id, h);
  if (!r) {
    if (q) {
      /* The store still answers the open: with nobody to tell. */
      q->cb = NULL;
      q->call.pending = 0;
    }
    presence_handle_end(s->p, h, PRESENCE_REASON_DISCONNECT, NULL, NULL);
    *http_status = 503;
    return "internal";
  }
  if (q) {
    q->handle = h;
    q->call.pending = 0;
    *pending = 1;
  }
  r->u.deadline = (uint32_t)(srv_now_mono(s) + ttl_ms);
  /* A session taken over keeps the status it had: the asked one is set
   * (no event if it is that). */
  if (status == PRESENCE_IDLE && srv_async(s))
    presence_handle_set_status(s->p, h, PRESENCE_IDLE, NULL, NULL);
  *created = 1;
  return NULL;
}

/* ---- Listing ------------------------------------------------------------- */

void origin_list_json(srv_t *s, buf_t *b) {
  struct origins *g = s->origins;
  buf_puts(b, "{\"origins\":[");
  int first = 1;
  for (origin_t *o = g->list; o; o = o->next) {
    if (o->is_http && !o->n_sessions) continue;
    if (!first) buf_putc(b, ',');
    first = 0;
    buf_puts(b, "{\"origin\":");
    buf_put_json_str(b, o->name);
    buf_puts(b, ",\"state\":");
    buf_puts(b, o->is_http ? "\"http\""
                : o->conn  ? "\"connected\""
                           : "\"detached\"");
    buf_printf(b, ",\"sessions\":%u,\"since\":", o->n_sessions);
    buf_put_i64(b, o->since_wall_ms);
    buf_puts(b, ",\"detached_since\":");
    buf_put_i64(b, o->detached_wall_ms);
    buf_putc(b, '}');
  }
  buf_puts(b, "]}");
}

void origin_counts(srv_t *s, uint64_t *connected, uint64_t *detached,
                   uint64_t *sessions, uint64_t *ops_total) {
  struct origins *g = s->origins;
  *connected = *detached = *sessions = *ops_total = 0;
  if (!g) return;
  for (origin_t *o = g->list; o; o = o->next) {
    if (o->is_http) {
      /* not an origin a backend holds */
    } else if (o->conn) {
      (*connected)++;
    } else {
      (*detached)++;
    }
    *sessions += o->n_sessions;
  }
  *ops_total = g->ops_total;
}
