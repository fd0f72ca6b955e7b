/* SPDX-License-Identifier: MIT */
/*
 * The Redis store: presence shared by many instances through one Redis.
 *
 * Every decision is taken by one Lua script (src/store/lua/presence.lua),
 * loaded as a Redis Functions library and run with FCALL (EVALSHA on a
 * Redis without functions, before 7.0): it fences the writer, changes the user's counts,
 * decides the transition, numbers the events, appends them to the log
 * stream and returns them. The instance whose script decided an event
 * reports it to its own callbacks (host->emit); every instance follows the
 * stream with a blocking XREAD on a second connection and reports every
 * event to host->observe (cluster fan-out).
 *
 * This side keeps a local table of its own live sessions: it answers
 * ENOSESSION/EEXIST at once, holds handles, runs the inactivity timer, and
 * is the truth re-asserted after this instance was fenced or Redis lost its
 * data. See docs/internals/redis.md for the protocol.
 *
 * Both connections are the connection layer's (redis_conn.c): it connects,
 * authenticates, selects the database, times commands out and reconnects
 * with backoff; this file sees replies, or a failure code, in send order.
 * The registration that follows a reconnect re-asserts the local sessions.
 */
#include "core/internal.h"
#include "presence_redis.h"
#include "core/uuid.h"
#include "store/redis_decode.h"

#include <errno.h>
#include "store/redis_conn.h"
#include "store/redis_feed.h"
#include "store/redis_route.h"
#include "store/redis_resp.h"
#include "store/redis_shard.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "presence_lua.h"

/* ---- records ----------------------------------------------------------- */

#define S_STATUS 0
#define S_REASON 1
#define S_FLAGS 2
#define SF_IDLE_BY_INACTIVITY 0x1

/* A channel this instance's session joined, kept to re-assert it after a
 * store loss or a fence, like the session itself. */
typedef struct ljoin {
  struct ljoin *next;
  char *data; /* '=' data, or "" */
  /* Counts the writes that replaced data: a failed update puts the data
   * before it back only if no later write replaced it (update_done). */
  uint64_t data_gen;
  char ch[];
} ljoin_t;

typedef struct lsess {
  presence__hkey_t key;
  uint32_t slot, gen;
  struct lsess *aprev, *anext; /* activity list, least recent first */
  bool in_act;
  int64_t last_active; /* monotonic ms */
  int64_t connected_ms;
  char *user;
  /* As the script keeps it: '@' device '\t' when the device is not the
   * default, then '=' meta when there is one; NULL if neither. */
  char *meta;
  ljoin_t *joins; /* in join order */
  /* What the script is sent for id: its 20-byte form when id is a
   * canonical UUID (core/uuid.h, "Session ids in 20 bytes" in
   * docs/internals/redis.md), kept after id's NUL; else id. */
  const char *wire;
  char id[];
} lsess_t;

struct rstore;
struct req;

typedef void (*req_fn)(struct rstore *st, struct req *r, redisReply *rep,
                       int code);

typedef struct req {
  struct req *prev, *next; /* pending on the command connection */
  struct rstore *st;
  req_fn fn;
  int64_t sent_ms;
  int code;           /* deferred completion */
  uint64_t epoch_gen; /* registration this write was sent under */
  char *cmd;          /* formatted command, kept for a NOSCRIPT resend */
  size_t cmd_len;
  presence_store_done_fn done;
  void *ud;
  /* write undo / queries */
  uint32_t slot, gen;
  void (*user_cb)(void *, int, const presence_user_info_t *);
  void (*sessions_cb)(void *, int, const presence_session_info_t *, size_t);
  void (*log_cb)(void *, int, const presence_event_t *, size_t);
  void (*members_cb)(void *, int, const presence_member_info_t *, size_t,
                     uint64_t, const char *);
  void (*channels_cb)(void *, int, const presence_channel_info_t *, size_t,
                      const char *);
  uint64_t after_seq;
  size_t max;       /* log reads: events wanted */
  bool from_oldest; /* log reads: a cursor past the newest, read again */
  struct req *sub_head, *sub_next; /* a batch's writes, in order */
  /* presence__redis_raw: the reply goes to the store's other files */
  void (*raw_cb)(void *ud, int code, redisReply *rep);
  char *cmd_ch; /* channel queries: the channel */
  /* A write of the local table (queue_write's, a batch): refused by a
   * node that no longer serves the slot, it is carried to the next one. */
  bool carry;
  /* A plain command of one key (the log's XRANGE, GET seq, a page of reap
   * ids, a kick's XADD): answered ASK while the slot migrates, it is sent
   * with ASKING to the importing node (follow_ask). */
  bool ask_ok;
  /* A channel write sent while this instance re-asserts its sessions
   * (PH_RESYNC): Redis may not hold its session again yet (write_done). */
  bool in_resync;
  bool chan_write; /* a channel join, update or leave of a local session */
  /* An update (or a join of a member) of a local record: the data it
   * replaced, and the record's data_gen once it did (update_done). */
  char *undo_data;
  uint64_t undo_gen;
  char user[PRESENCE_ID_MAX + 1];
} req_t;

enum { PH_NONE, PH_LOADING, PH_REGISTERING, PH_WIPING, PH_RESYNC, PH_READY };

enum {
  T_HB,
  T_READER,
  T_GRACE,
  T_RECONCILE,
  T_SOON,
  T_FLUSH,
  T_CLAIM,
  T_RETRY, /* Redis Cluster: calls held while their slot migrates */
  T_N
};

/* The libuv handles live apart from the store: closing them completes on
 * the loop, after presence_free has returned. */
typedef struct handles {
  uv_timer_t t[T_N];
  int open;
  struct rstore *st;
} handles_t;

/* Calls queued to be sent as one (queue_write, queue_query): their
 * arguments, already in RESP, and their requests, in order; weight: what a
 * query batch's members will cost (QB_WEIGHT). */
typedef struct rbatch {
  char *buf;
  size_t len, cap;
  uint32_t n, args, weight;
  req_t *head, *tail;
} rbatch_t;

typedef struct rstore {
  presence_store_t base;
  presence_store_host_t h;
  presence_redis_options_t o;
  /* What the store allocated before attach (itself, prefix, url, tls):
   * freed with the allocator it came from, the options' (libc if none).
   * Everything after attach comes from h.allocator, the host's. */
  const presence_allocator_t *a0;
  char *prefix;
  presence__redis_url_t url; /* holds the password: never logged */
  presence_redis_tls_t tls;  /* its strings are ours */
  handles_t *hs;
  bool attached, destroying, paused;

  /* the command connection */
  presence__rconn_t *conn;
  bool up;           /* connected, and commands may be sent */
  uint32_t inflight; /* commands sent, not answered */
  /* Queued writes and queries wait while a command is in flight (see
   * queue_write): flush_held when the loop came round with one, so the
   * next answer sends them (flush_now: then regardless of what is still in
   * flight, so that a run of pipelined calls, a reap's, never starves
   * them). */
  bool flush_held, flush_now;
  /* The script: FCALL fn, or with legacy (a Redis before 7.0: no FUNCTION)
   * EVALSHA sha. loaded once Redis has it. Queries: FCALL_RO fn_ro (the
   * same library's no-writes entry point), or FCALL fn once no_ro (a user
   * whose ACL lacks +fcall_ro, a server without the command). */
  char fn[32], fn_ro[36], sha[41];
  bool legacy, loaded, no_ro;

  /* registration */
  int phase;
  bool ever_registered;
  bool fresh; /* this registration is the process's first */
  uint64_t epoch;
  presence_redis_cluster_stats_t cluster; /* from the last heartbeat */
  char epoch_s[24];
  /* The call's header (common_args), made again when it goes stale: at
   * attach (the host's settings) and at each new epoch; '' while stale. */
  char hdr[128 + PRESENCE_ID_MAX + 104];
  uint64_t epoch_gen;
  uint32_t resync_slot;
  uint32_t cresync_slot; /* the channels' pass of a resync */
  char *cursor; /* sweep / reap / reconcile cursors */

  /* reaping */
  bool reaping;
  char reap_dead[PRESENCE_ID_MAX + 1];
  int reap_inflight; /* reap calls sent, not yet answered */
  bool reap_more;    /* the dead instance's scan is not complete */
  bool reap_failed;
  /* The removed ids, read back from Redis in pages for the cleanup event's
   * local callbacks: the log's copy leaves them out, since one command
   * moving a whole instance's ids (3.7 MB for 100,000 UUIDs) would block
   * Redis for tens of milliseconds. */
  char *reap_ids;
  size_t reap_ids_len, reap_ids_cap;
  size_t reap_ids_pos; /* chunks of reapids:<dead> read so far */
  char sweep_cursor[32];
  bool reconciling;
  char rec_cursor[32];
  bool grace_busy;
  bool grace_again; /* a poll was due while one was in flight */
  bool hb_busy;
  /* Redis's clock less this host's, in ms, as TIME last measured it (the
   * middle of its round trip): a wall time the host gives the store (a
   * status message's expiry, which the script compares with Redis's TIME)
   * is moved onto Redis's clock by it, so that an instance whose clock is
   * off does not have "expires_in 60" cleared at once or a minute late. */
  int64_t clock_off_ms;
  int64_t time_sent_ms; /* host wall clock when the TIME in flight left */
  bool time_busy;

  /* the log reader */
  presence__rconn_t *rconn;
  bool rup;
  bool r_waiting;
  char r_last[48];
  /* Kicks across instances ride the reader's XREAD as a second stream. */
  void (*kick_fn)(void *ud, const char *session_id);
  void *kick_ud;
  /* A backend origin's name claimed by another instance: the claims ride
   * the kick stream too (presence_redis_origin_claim). */
  void (*origin_fn)(void *ud, const char *name, uint64_t counter);
  void *origin_ud;
  char k_last[48];
  bool k_known; /* k_last read on this reader connection */
  char kick_key[160];
  /* Events per entry in the last log read (where the readers are): sizes
   * the next read's XRANGE COUNT. 0 before the first. */
  size_t lr_per;
  bool reader_started;

  /* The log feed between the workers of a machine (redis_feed.c). */
  presence__rfeed_t *feed;
  presence__route_t *route; /* the reader's, by interest (redis_route.c) */
  bool feed_synced; /* the feed covers what this store's own reader read */
  int *feed_out; /* until attach: the descriptors (a0's memory) */
  uint32_t n_feed_out;
  int feed_in;
  bool feed_shared; /* the shards' one feed (redis_shard.c owns it) */

  /* deferred completions */
  req_t *soon_head, *soon_tail;

  /* Calls queued while earlier ones are in flight, each queue sent as one
   * call: the session writes ('batch') and the queries ('qbatch'). */
  rbatch_t wb, qb;

  /* What people set, as this instance last read it from the log: re-asserted
   * after a store loss (see "status that people set" below). */
  presence__table_t settings;
  bool settings_up;
  char *sres_ids; /* the users of a settings re-assert in progress */
  size_t sres_len, sres_pos;

  /* the local table */
  presence__table_t sessions;
  lsess_t **slab;
  uint32_t slab_len, slab_cap, gen;
  uint32_t *free_slots;
  uint32_t n_free, free_cap;
  lsess_t *act_head, *act_tail;
  uint64_t last_seq;
  presence_stats_t stats;

  char log_key[160];
  char dev_scratch[PRESENCE_DEVICE_MAX + 1]; /* r_session_get's device */
  bool leaving;
  /* leave */
  void (*leave_done)(void *, int);
  void *leave_ud;

  /* Redis Cluster (redis_shard.c): this store is one shard, all its keys
   * in one slot. key1 is the script's KEYS[1], so that a node which does
   * not serve the slot answers MOVED (or ASK) instead of running it. */
  char key1[168];
  char key_guard[168]; /* KEYS[2] on Redis Cluster: never written */
  bool in_cluster;
  char **seed_host; /* the seeds: where to go when a node fails */
  int *seed_port;
  uint32_t n_seeds, seed_i;
  char *moved_host; /* the node the last MOVED named, taken at reconnect */
  int moved_port;
  /* Calls refused while the shard's slot migrates (ASK, TRYAGAIN: the
   * script did not run), in send order, sent again after retry_ms; what
   * is asked meanwhile waits behind them. */
  req_t *held_head, *held_tail;
  uint32_t retry_ms;
  /* A MOVED ended a migration: the writes refused or cut off by it are
   * held across the reconnect and sent first at the slot's new node, under
   * the registration they were made in (the lease moved with the slot),
   * before this shard registers there. */
  bool moving;
  uint64_t held_total; /* calls ever held (tests, logs) */
  /* ASK: a connection to the node importing the slot, opened at the first
   * ASK of a migration and closed when MOVED ends it (ask_url: st->url's,
   * but for the host, which is ours, and the port). */
  presence__rconn_t *ask;
  presence__redis_url_t ask_url;
  uint64_t asked_total; /* commands sent with ASKING (tests, logs) */
  /* The cluster's slot map, kept by redis_shard.c: where this shard goes
   * after a failure, and, with await_route, where it first connects
   * (nothing is started until presence__redis_start_at). */
  presence__redis_route_fn slot_route;
  void *slot_route_ud;
  bool await_route;
  unsigned slot;
  /* redis_shard.c: told each time this shard is registered and re-asserted
   * (after a reconnect, a fence, a store loss), to ask its counts again. */
  void (*on_ready)(void *ud);
  void *on_ready_ud;
} rstore_t;

static void on_timer(uv_timer_t *t);

static int64_t mono(rstore_t *st) {
  return st->h.mono_ms(st->h.host_ud);
}

/* msg then an optional detail: log lines need no other formatting. */
static void logf_(rstore_t *st, presence_log_level_t lvl, const char *msg,
                  const char *a) {
  char buf[256];
  snprintf(buf, sizeof(buf), "%s%s%s", msg, a ? " " : "", a ? a : "");
  if (st->h.log) st->h.log(st->h.host_ud, lvl, buf);
}

/* ---- allocation ---------------------------------------------------------
 * Through the host's allocator (docs/c-api.md), so a host's counting or
 * arena allocator sees the store's memory. Before attach h.allocator is a0. */

static void *xmalloc(rstore_t *st, size_t n) {
  return presence__malloc(st->h.allocator, n);
}

static void *xrealloc(rstore_t *st, void *p, size_t n) {
  return presence__realloc(st->h.allocator, p, n);
}

static void *xcalloc(rstore_t *st, size_t n, size_t size) {
  if (size && n > SIZE_MAX / size) return NULL;
  void *p = xmalloc(st, n * size);
  if (p) memset(p, 0, n * size);
  return p;
}

static void xfree(rstore_t *st, void *p) {
  presence__free(st->h.allocator, p);
}

static char *xstrndup(rstore_t *st, const char *s, size_t n) {
  size_t len = strnlen(s, n);
  char *c = xmalloc(st, len + 1);
  if (!c) return NULL;
  memcpy(c, s, len);
  c[len] = '\0';
  return c;
}

static char *xstrdup(rstore_t *st, const char *s) {
  return xstrndup(st, s, strlen(s));
}

/* ---- local table -------------------------------------------------------- */

static lsess_t *slab_get(rstore_t *st, presence_handle_t h) {
  uint32_t slot = (uint32_t)(h & 0xffffffffu) - 1;
  if (slot >= st->slab_len || !st->slab[slot]) return NULL;
  lsess_t *s = st->slab[slot];
  return s->gen == (uint32_t)(h >> 32) ? s : NULL;
}

static int slab_put(rstore_t *st, lsess_t *s) {
  uint32_t slot;
  if (st->n_free) {
    slot = st->free_slots[--st->n_free];
  } else {
    if (st->slab_len == st->slab_cap) {
      uint32_t ncap = st->slab_cap ? st->slab_cap * 2 : 256;
      lsess_t **n = xrealloc(st, st->slab, ncap * sizeof(*n));
      uint32_t *f = xrealloc(st, st->free_slots, ncap * sizeof(*f));
      if (n) st->slab = n;
      if (f) st->free_slots = f;
      if (!n || !f) return PRESENCE_ENOMEM;
      st->slab_cap = st->free_cap = ncap;
    }
    slot = st->slab_len++;
  }
  st->slab[slot] = s;
  s->slot = slot;
  if (++st->gen == 0) st->gen = 1;
  s->gen = st->gen;
  return 0;
}

static void act_unlink(rstore_t *st, lsess_t *s) {
  if (!s->in_act) return;
  if (s->aprev)
    s->aprev->anext = s->anext;
  else
    st->act_head = s->anext;
  if (s->anext)
    s->anext->aprev = s->aprev;
  else
    st->act_tail = s->aprev;
  s->aprev = s->anext = NULL;
  s->in_act = false;
}

static void act_push(rstore_t *st, lsess_t *s) {
  s->last_active = mono(st);
  s->aprev = st->act_tail;
  s->anext = NULL;
  if (st->act_tail)
    st->act_tail->anext = s;
  else
    st->act_head = s;
  st->act_tail = s;
  s->in_act = true;
}

static lsess_t *find_local(rstore_t *st, const char *id, size_t len) {
  return presence__table_find(&st->sessions, id, len, presence__hash(id, len));
}

static void local_remove(rstore_t *st, lsess_t *s) {
  presence__table_remove(&st->sessions, s);
  st->slab[s->slot] = NULL;
  st->free_slots[st->n_free++] = s->slot;
  act_unlink(st, s);
  st->stats.sessions--;
  while (s->joins) {
    ljoin_t *j = s->joins;
    s->joins = j->next;
    xfree(st, j->data);
    xfree(st, j);
  }
  xfree(st, s->user);
  xfree(st, s->meta);
  xfree(st, s);
}

static void local_clear(rstore_t *st) {
  for (uint32_t i = 0; i < st->slab_len; i++)
    if (st->slab[i]) local_remove(st, st->slab[i]);
}

/* ---- requests ----------------------------------------------------------- */

static req_t *req_new(rstore_t *st, req_fn fn) {
  req_t *r = xcalloc(st, 1, sizeof(*r));
  if (!r) return NULL;
  r->st = st;
  r->fn = fn;
  r->epoch_gen = st->epoch_gen;
  return r;
}

static void req_free(req_t *r) {
  rstore_t *st = r->st;
  while (r->sub_head) {
    req_t *n = r->sub_head->sub_next;
    req_free(r->sub_head);
    r->sub_head = n;
  }
  xfree(st, r->cmd);
  xfree(st, r->cmd_ch);
  xfree(st, r->undo_data);
  xfree(st, r);
}

/* Complete r later, from the loop: never from inside the call that asked. */
static void defer(rstore_t *st, req_t *r, int code) {
  r->code = code;
  r->next = NULL;
  if (st->soon_tail)
    st->soon_tail->next = r;
  else
    st->soon_head = r;
  st->soon_tail = r;
  if (st->hs && !st->destroying)
    uv_timer_start(&st->hs->t[T_SOON], on_timer, 0, 0);
}

static void run_soon(rstore_t *st) {
  while (st->soon_head) {
    req_t *r = st->soon_head;
    st->soon_head = r->next;
    if (!st->soon_head) st->soon_tail = NULL;
    r->fn(st, r, NULL, r->code);
    req_free(r);
  }
}

static void on_reply(void *ud, int fail, redisReply *rep);
static void flush_writes(rstore_t *st);

/* Poll the deadlines kept in Redis ('grace': offline grace, channel grace,
 * message expiry) in in_ms, unless a poll is due sooner. There is no poll
 * at a fixed rate: a shard polls only when it knows of a deadline, from
 * its own writes (an end or a leave with a grace, a message with an
 * expiry), from the last poll's answer (the next deadline), or from its
 * heartbeat's (the first deadline any instance set, one that died since
 * included). On Redis Cluster that was ~70 % of the fixed-rate calls, S
 * shards x 4 a second per instance, with nothing due. */
static void grace_arm(rstore_t *st, uint64_t in_ms) {
  if (!st->hs || st->destroying) return;
  uv_timer_t *t = &st->hs->t[T_GRACE];
  if (uv_is_active((uv_handle_t *)t) && uv_timer_get_due_in(t) <= in_ms)
    return;
  uv_timer_start(t, on_timer, in_ms, 0);
}

static void hold(rstore_t *st, req_t *r);
static void conn_log(void *ud, presence_log_level_t lvl, const char *msg);

static void send_req(rstore_t *st, req_t *r) {
  if (st->moving && r->carry && !st->destroying) {
    hold(st, r); /* sent at the new node once its script is loaded */
    return;
  }
  if (st->held_head && !st->moving && st->up && st->conn) {
    /* Behind the calls held for a migrating slot: order is kept (not
     * while moving: the new node's script load goes first). */
    hold(st, r);
    return;
  }
  if (!st->up || !st->conn ||
      presence__rconn_send(st->conn, r->cmd, r->cmd_len, 0, on_reply, r)) {
    defer(st, r, st->destroying ? PRESENCE_ESHUTDOWN : PRESENCE_ESTORE);
    return;
  }
  st->inflight++;
}

/* r->cmd: RESP for argv, allocated as req_free frees it. */
static int format_cmd(req_t *r, int argc, const char *const *argv,
                      const size_t *lens) {
  size_t cap = 0;
  r->cmd_len = 0;
  return presence__resp_append(r->st->h.allocator, &r->cmd,
                               &r->cmd_len, &cap, argc, argv, lens);
}

/* FCALL (EVALSHA) of the script: KEYS[1] (with KEYS[2], the guard, on
 * Redis Cluster), op, the header, then the op's own. Returns how many it
 * wrote: COMMON_ARGS, or one less on one Redis. */
#define COMMON_ARGS 7
static int common_args(rstore_t *st, const char *op,
                       const char *out[COMMON_ARGS]) {
  /* "<epoch> <maxlen> <grace>/<channel grace> <lease> <retention>
   * <instance id>\t<prefix>": what the instance sends alike on every call,
   * in one argument (presence.lua's begin() says why), made once per
   * epoch rather than on every call; an instance id holds no tab, a
   * prefix at most 100 bytes. */
  if (!st->hdr[0])
    snprintf(st->hdr, sizeof st->hdr, "%s %u %u/%u %u %u %s\t%s",
             st->epoch_s, (unsigned)st->o.stream_maxlen,
             (unsigned)st->h.offline_grace_ms,
             (unsigned)st->h.channel_grace_ms, (unsigned)st->o.lease_ms,
             (unsigned)st->h.offline_retention_s, st->h.instance_id,
             st->prefix);
  int n = 0;
  /* A query (every op named q...) goes by FCALL_RO to the no-writes entry
   * point: Redis runs it while it refuses writes (presence.lua,
   * presence_ro), so the API answers then too. */
  bool ro = !st->legacy && !st->no_ro && op[0] == 'q';
  out[n++] = st->legacy ? "EVALSHA" : ro ? "FCALL_RO" : "FCALL";
  out[n++] = st->legacy ? st->sha : ro ? st->fn_ro : st->fn;
  /* On Redis Cluster a second key that is never written: while the slot
   * migrates, the source refuses the call (TRYAGAIN, or ASK: a declared
   * key missing) and the target too (TRYAGAIN: several keys, one
   * missing) before the script runs, so no call sees the shard half moved or stops half-way
   * (see "Slot migration" in docs/internals/redis.md). */
  out[n++] = st->in_cluster ? "2" : "1";
  out[n++] = st->key1;
  if (st->in_cluster) out[n++] = st->key_guard;
  out[n++] = op;
  out[n++] = st->hdr;
  return n;
}

static void call(rstore_t *st, req_t *r, const char *op, int n,
                 const char **args, const size_t *lens) {
  /* Whatever was queued goes first: a query must see the writes asked
   * before it, as with the memory store. */
  flush_writes(st);
  const char *common[COMMON_ARGS];
  int nc = common_args(st, op, common);
  const char *sv[COMMON_ARGS + 8];
  size_t sl[COMMON_ARGS + 8];
  const char **av = sv;
  size_t *al = sl;
  if (n > 8) {
    av = xmalloc(st, (size_t)(nc + n) * sizeof(*av));
    al = xmalloc(st, (size_t)(nc + n) * sizeof(*al));
    if (!av || !al) {
      xfree(st, av);
      xfree(st, al);
      defer(st, r, PRESENCE_ENOMEM);
      return;
    }
  }
  for (int i = 0; i < nc; i++) {
    av[i] = common[i];
    al[i] = strlen(common[i]);
  }
  for (int i = 0; i < n; i++) {
    av[nc + i] = args[i];
    al[nc + i] = lens ? lens[i] : strlen(args[i]);
  }
  int rc = format_cmd(r, nc + n, av, al);
  if (av != sv) {
    xfree(st, av);
    xfree(st, al);
  }
  if (rc) {
    defer(st, r, rc);
    return;
  }
  send_req(st, r);
}

/* What follows the file in the library: its two entry points. */
#define LIB_TAIL                                                               \
  "\nredis.register_function('%s', presence_main)\n"                           \
  "redis.register_function{function_name = '%s', callback = presence_ro,\n"    \
  "  flags = {'no-writes'}}\n"

/* The command that loads the script: FUNCTION LOAD of the library
 * (the file behind a '#!lua name=' line, its entry point registered after
 * it), or for a Redis without functions SCRIPT LOAD of the file ending in
 * a call of that entry point. Formatted into *cmd (freed by the caller
 * with xfree); 0 or PRESENCE_ENOMEM. The name carries a hash of the text,
 * so builds of different scripts sharing a Redis each call their own, and
 * a library of that name already loaded is this text: no REPLACE, which
 * would compile it again (3 ms of Redis at every instance's connect, where
 * "already exists" takes 25 us). */
static int load_cmd(rstore_t *st, char **cmd, size_t *len) {
  char head[64], tail[sizeof LIB_TAIL + 2 * sizeof st->fn_ro];
  int hn = 0, tn;
  if (st->legacy) {
    /* _G: the file's own ARGV is a local (the library's per-call copy). */
    tn = snprintf(tail, sizeof tail,
                  "\nreturn presence_main(KEYS, _G.ARGV)\n");
  } else {
    hn = snprintf(head, sizeof head, "#!lua name=%s\n", st->fn);
    tn = snprintf(tail, sizeof tail, LIB_TAIL, st->fn, st->fn_ro);
  }
  size_t n = (size_t)hn + presence_lua_len + (size_t)tn;
  char *text = xmalloc(st, n);
  if (!text) return PRESENCE_ENOMEM;
  memcpy(text, head, (size_t)hn);
  memcpy(text + hn, presence_lua, presence_lua_len);
  memcpy(text + (size_t)hn + presence_lua_len, tail, (size_t)tn);
  const char *fl[] = {"FUNCTION", "LOAD", text};
  size_t fll[] = {8, 4, n};
  const char *sl[] = {"SCRIPT", "LOAD", text};
  size_t sll[] = {6, 4, n};
  size_t cap = 0;
  *cmd = NULL;
  *len = 0;
  int rc = st->legacy ? presence__resp_append(st->h.allocator, cmd, len, &cap,
                                              3, sl, sll)
                      : presence__resp_append(st->h.allocator, cmd, len, &cap,
                                              3, fl, fll);
  xfree(st, text);
  return rc;
}

/* A plain command of at most one key (GET, XRANGE, LRANGE, XADD). */
static void plain(rstore_t *st, req_t *r, int n, const char **args) {
  flush_writes(st);
  r->ask_ok = true;
  int rc = format_cmd(r, n, args, NULL);
  if (rc) {
    defer(st, r, rc);
    return;
  }
  send_req(st, r);
}

static void drop_connection(rstore_t *st, int code);
static void start_register(rstore_t *st);

/* ---- checked replies ----------------------------------------------------
 * Every reply is read through these or checked as they check: a reply of
 * another type or shape (a proxy answering for Redis, another program
 * under the prefix, a corrupted byte) reads as absent and the operation
 * fails with PRESENCE_ESTORE. Nothing is dereferenced on trust. */

/* Element i of an array reply, or NULL. */
static redisReply *at(const redisReply *r, size_t i) {
  return r && r->type == REDIS_REPLY_ARRAY && i < r->elements ? r->element[i]
                                                              : NULL;
}

/* A string reply's text, or NULL. */
static const char *text_of(const redisReply *r) {
  return r && r->type == REDIS_REPLY_STRING ? r->str : NULL;
}

/* A decimal integer as the script writes them: a string of an optional
 * '-' and 1-18 digits, nothing else. 0, or -1 for anything else (an integer
 * reply too: not what the script sends). */
static int num_of(const redisReply *r, long long *v) {
  const char *t = text_of(r);
  if (!t) return -1;
  const char *d = t + (t[0] == '-');
  size_t n = strlen(d);
  if (!n || n > 18 || strspn(d, "0123456789") != n) return -1;
  *v = strtoll(t, NULL, 10);
  return 0;
}

/* The script's answer: {code, payload, events...}. */
static int script_code(redisReply *rep) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
      rep->element[0]->type != REDIS_REPLY_INTEGER)
    return PRESENCE_ESTORE;
  /* The script answers 0 or one of presence.h's codes. */
  long long c = rep->element[0]->integer;
  return c > 0 || c < -100 ? PRESENCE_ESTORE : (int)c;
}

static void ignore_reply(void *ud, int code, redisReply *rep) {
  (void)ud;
  (void)code;
  (void)rep;
}

/* Redis Cluster: "MOVED <slot> <host>:<port>" (the slot has a new owner,
 * or this is not it) is remembered for the next connect; true when the
 * connection should go there. "ASK" (a slot half-way through a migration)
 * and "TRYAGAIN" / "CLUSTERDOWN" fail the command like any error: the
 * write is re-asserted later (see "Shards and Redis Cluster"). */
static bool cluster_redirect(rstore_t *st, const redisReply *rep) {
  if (!st->in_cluster || rep->type != REDIS_REPLY_ERROR || !rep->str ||
      strncmp(rep->str, "MOVED ", 6))
    return false;
  const char *hp = strchr(rep->str + 6, ' ');
  const char *colon = hp ? strrchr(hp, ':') : NULL;
  if (!colon) return false;
  hp++;
  long port = strtol(colon + 1, NULL, 10);
  if (port <= 0 || port > 65535) return false;
  /* An empty host: the node we asked, on another port. */
  size_t hl = (size_t)(colon - hp);
  char *host = hl ? xstrndup(st, hp, hl) : xstrdup(st, st->url.host);
  if (!host) return false;
  xfree(st, st->moved_host);
  st->moved_host = host;
  st->moved_port = (int)port;
  return true;
}

/* Before each connect of either connection: the node a MOVED named, or
 * after a failure the next seed (the node may be dead; any node answers
 * MOVED for a slot it does not serve). The URL's strings came from a0. */
static void before_connect(void *ud, int failed) {
  rstore_t *st = ud;
  if (!st->in_cluster || !st->url.host) return;
  const char *host = NULL;
  int port = 0;
  if (st->moved_host) {
    host = st->moved_host;
    port = st->moved_port;
  } else if (failed && st->slot_route &&
             !st->slot_route(st->slot_route_ud, st->slot, st->url.host,
                             st->url.port, &host, &port)) {
    /* The slot map names another node for the slot (refreshed on every
     * failure: after a failover, the promoted replica). */
  } else if (failed && st->n_seeds) {
    st->seed_i = (st->seed_i + 1) % st->n_seeds;
    host = st->seed_host[st->seed_i];
    port = st->seed_port[st->seed_i];
  }
  if (!host) return;
  char *h = presence__malloc(st->a0, strlen(host) + 1);
  if (!h) return;
  strcpy(h, host);
  presence__free(st->a0, st->url.host);
  st->url.host = h;
  st->url.port = port;
  if (st->moved_host) {
    xfree(st, st->moved_host);
    st->moved_host = NULL;
  }
}

static void load_done(rstore_t *st, req_t *r, redisReply *rep, int code);

/* Redis Cluster, the shard's slot migrating: the guard key, KEYS[2], is
 * never there, so the source answers "TRYAGAIN" (some declared keys here,
 * not all) or "ASK <slot> <host>:<port>" (none: the seq moved already), and
 * the target, asked with ASKING, "TRYAGAIN" (several keys, one missing):
 * all before the script ran. Following the ASK would only meet that TRYAGAIN, since
 * no call may run on a half-moved shard, so the call waits and goes again
 * to the source until the migration ends: MOVED then sends the shard to
 * the target. */
static bool cluster_busy(const rstore_t *st, const redisReply *rep) {
  return st->in_cluster && rep && rep->type == REDIS_REPLY_ERROR && rep->str &&
         (!strncmp(rep->str, "ASK ", 4) || !strncmp(rep->str, "TRYAGAIN", 8));
}

static void hold(rstore_t *st, req_t *r) {
  r->next = NULL;
  if (st->held_tail)
    st->held_tail->next = r;
  else
    st->held_head = r;
  st->held_tail = r;
  st->held_total++;
  if (st->hs && !st->destroying && !st->moving &&
      !uv_is_active((uv_handle_t *)&st->hs->t[T_RETRY])) {
    /* 10 ms, doubling to 200 ms while the migration lasts. */
    st->retry_ms = st->retry_ms ? st->retry_ms * 2 : 10;
    if (st->retry_ms > 200) st->retry_ms = 200;
    uv_timer_start(&st->hs->t[T_RETRY], on_timer, st->retry_ms, 0);
  }
}

/* The held calls go again, in order (each is held again, in the same
 * order, if the slot still migrates). */
static void resend_held(rstore_t *st) {
  req_t *r = st->held_head;
  st->held_head = st->held_tail = NULL;
  while (r) {
    req_t *n = r->next;
    send_req(st, r);
    r = n;
  }
}

/* The connection is gone: the held calls fail as the pending ones did
 * (the registration that follows re-asserts what they carried), but for
 * the writes a MOVED carries to the next node (keep_writes). */
static void fail_held(rstore_t *st, int code, bool keep_writes) {
  req_t *r = st->held_head, *keep = NULL, *keep_tail = NULL;
  st->held_head = st->held_tail = NULL;
  while (r) {
    req_t *n = r->next;
    if (keep_writes && r->carry) {
      r->next = NULL;
      if (keep_tail)
        keep_tail->next = r;
      else
        keep = r;
      keep_tail = r;
    } else {
      r->fn(st, r, NULL, code);
      req_free(r);
    }
    r = n;
  }
  st->held_head = keep;
  st->held_tail = keep_tail;
  st->retry_ms = 0;
}

/* ---- ASK: a command of one key at the importing node -------------------
 * Redis Cluster's protocol for a slot being migrated: the source serves a
 * command whose keys it still has, and answers "ASK <slot> <node>" for one
 * whose key moved already; the client then sends ASKING and the command to
 * that node, for this command only (the slot map is not changed: the next
 * command goes to the source again). The shard's plain commands, each of
 * one key, follow it: a log read, GET seq, a page of reap ids, a kick. The
 * script's calls do not (see cluster_busy): the guard key makes the
 * target refuse them with TRYAGAIN, so they are held and sent to the
 * source again until MOVED. */

static void ask_close(rstore_t *st) {
  presence__rconn_t *c = st->ask;
  st->ask = NULL;
  presence__rconn_free(c); /* what it carried fails inside: see on_ask */
  presence__free(st->a0, st->ask_url.host);
  st->ask_url.host = NULL;
}

static void on_ask(void *ud, int fail, redisReply *rep) {
  req_t *r = ud;
  rstore_t *st = r->st;
  if (!rep || (rep->type == REDIS_REPLY_ERROR &&
               (!strncmp(rep->str, "ASK ", 4) ||
                !strncmp(rep->str, "TRYAGAIN", 8) ||
                !strncmp(rep->str, "MOVED ", 6)))) {
    /* The importing node is gone, or the migration moved on (ended,
     * aborted): back to the source, in turn, which says where it is now. */
    if (st->destroying) {
      r->fn(st, r, NULL, PRESENCE_ESHUTDOWN);
      req_free(r);
      return;
    }
    (void)fail;
    hold(st, r);
    return;
  }
  int code = 0;
  if (rep->type == REDIS_REPLY_ERROR) {
    logf_(st, PRESENCE_LOG_ERROR, "redis (ASKING):", rep->str);
    code = PRESENCE_ESTORE;
  }
  r->fn(st, r, rep, code);
  req_free(r);
}

/* r was answered ASK: true when it went to the importing node (or waits
 * behind the held calls until a connection there is up). */
static bool follow_ask(rstore_t *st, req_t *r, const redisReply *rep) {
  char host[256];
  int port;
  if (!r->ask_ok || st->destroying || !st->in_cluster ||
      rep->type != REDIS_REPLY_ERROR ||
      presence__redis_ask_target(rep->str, host, sizeof host, &port))
    return false;
  const char *h = host[0] ? host : st->url.host;
  if (!h) return false;
  if (st->ask && (st->ask_url.port != port || strcmp(st->ask_url.host, h)))
    ask_close(st); /* another migration, another target */
  if (!st->ask) {
    char *hc = presence__malloc(st->a0, strlen(h) + 1);
    if (!hc) return false;
    strcpy(hc, h);
    st->ask_url = st->url;
    st->ask_url.host = hc;
    st->ask_url.port = port;
    st->ask_url.sentinels = NULL;
    st->ask_url.n_sentinels = 0;
    presence__rconn_config_t cfg = {
        .loop = st->o.loop,
        .alloc = st->h.allocator,
        .url = &st->ask_url,
        .tls = &st->tls,
        .name = "redis (ASK)",
        .command_timeout_ms = st->o.command_timeout_ms,
        .reconnect_max_ms = st->o.reconnect_max_ms,
        .max_reply_bytes = st->o.max_reply_bytes,
        .max_reply_elements = st->o.max_reply_elements,
        .log = conn_log,
        .ud = st,
    };
    if (presence__rconn_new(&cfg, &st->ask)) {
      st->ask = NULL;
      presence__free(st->a0, hc);
      st->ask_url.host = NULL;
      return false;
    }
    presence__rconn_start(st->ask);
  }
  /* Not up yet (it connects now): held, sent to the source again shortly,
   * which answers ASK again, by then most likely to a connection that is. */
  if (presence__rconn_send_asking(st->ask, r->cmd, r->cmd_len, 0, on_ask, r))
    return false;
  st->asked_total++;
  return true;
}

static void take_reply(req_t *r, int fail, redisReply *rep);
static void on_refused(rstore_t *st, req_t *r);

static void on_reply(void *ud, int fail, redisReply *rep) {
  req_t *r = ud;
  rstore_t *st = r->st;
  take_reply(r, fail, rep);
  /* An answer came: what queued meanwhile goes out as one call when the
   * loop comes round (from the timer, not from inside the connection's
   * reply, which may be its teardown). */
  if (st->flush_held && st->hs && !st->destroying) {
    st->flush_held = false;
    st->flush_now = true;
    uv_timer_start(&st->hs->t[T_FLUSH], on_timer, 0, 0);
  }
}

/* r went by FCALL_RO (common_args): its command starts "*<n>\r\n$8\r\n
 * FCALL_RO\r\n$<len>\r\n<fn_ro>\r\n". Made FCALL of fn instead, the rest
 * as it was; 0, or -1 when it is not such a command or out of memory. */
static int cmd_without_ro(rstore_t *st, req_t *r) {
  const char *c = r->cmd, *end = r->cmd + r->cmd_len;
  const char *nl = c && r->cmd_len > 1 && *c == '*'
                       ? memchr(c, '\n', r->cmd_len) : NULL;
  if (!nl) return -1;
  size_t head = (size_t)(nl + 1 - c);
  char ro_head[64];
  int rl = snprintf(ro_head, sizeof ro_head, "$8\r\nFCALL_RO\r\n$%zu\r\n%s\r\n",
                    strlen(st->fn_ro), st->fn_ro);
  if (rl <= 0 || (size_t)(end - nl - 1) < (size_t)rl ||
      memcmp(nl + 1, ro_head, (size_t)rl))
    return -1;
  char fn_head[64];
  int fl = snprintf(fn_head, sizeof fn_head, "$5\r\nFCALL\r\n$%zu\r\n%s\r\n",
                    strlen(st->fn), st->fn);
  size_t rest = r->cmd_len - head - (size_t)rl;
  char *n = xmalloc(st, head + (size_t)fl + rest);
  if (!n) return -1;
  memcpy(n, c, head);
  memcpy(n + head, fn_head, (size_t)fl);
  memcpy(n + head + (size_t)fl, nl + 1 + rl, rest);
  xfree(st, r->cmd);
  r->cmd = n;
  r->cmd_len = head + (size_t)fl + rest;
  return 0;
}

static void take_reply(req_t *r, int fail, redisReply *rep) {
  rstore_t *st = r->st;
  st->inflight--;
  if (!rep) {
    /* The connection is going away: nothing more may be sent on it. */
    st->up = false;
    if (st->moving && r->carry && !st->destroying) {
      hold(st, r); /* cut off by the MOVED ahead of it: not run */
      return;
    }
    r->fn(st, r, NULL, fail ? fail : PRESENCE_ESTORE);
    req_free(r);
    return;
  }
  if (rep->type == REDIS_REPLY_ERROR && !st->no_ro &&
      (!strncmp(rep->str, "NOPERM", 6) ||
       !strncmp(rep->str, "ERR unknown command", 19)) &&
      (strstr(rep->str, "fcall_ro") || strstr(rep->str, "FCALL_RO")) &&
      !cmd_without_ro(st, r)) {
    /* FCALL_RO refused as a command (an ACL user without +fcall_ro, as
     * the list of docs/internals/redis.md lacked it before, or a server
     * without it): queries go by FCALL from now on, this one first. */
    st->no_ro = true;
    logf_(st, PRESENCE_LOG_WARN,
          "redis: FCALL_RO refused, queries go by FCALL (and fail while "
          "Redis refuses writes); allow fcall_ro:",
          rep->str);
    send_req(st, r);
    return;
  }
  if (rep->type == REDIS_REPLY_ERROR &&
      (!strncmp(rep->str, "NOSCRIPT", 8) ||
       !strncmp(rep->str, "ERR Function not found", 22))) {
    /* Redis forgot the script (FUNCTION FLUSH, SCRIPT FLUSH, a restart
     * behind a proxy): load it again ahead of the resend, on the same
     * connection, so order is kept. */
    char *cmd;
    size_t len;
    if (!load_cmd(st, &cmd, &len)) {
      presence__rconn_send(st->conn, cmd, len, 0, ignore_reply, NULL);
      xfree(st, cmd);
    }
    send_req(st, r);
    return;
  }
  if (follow_ask(st, r, rep)) return;
  if (cluster_busy(st, rep)) {
    hold(st, r);
    return;
  }
  int code = 0;
  bool moved = false;
  if (rep->type == REDIS_REPLY_ERROR) {
    /* The library already loaded (by this build, an earlier connection or
     * another instance) is load_done's success, not an error to log. */
    moved = cluster_redirect(st, rep);
    /* A MOVED is routing (a migrated slot, a failover; at start when no
     * slot map could be read), not a failure: logged at info. A write it
     * refused did not run: carried to the new node. */
    if (moved) {
      logf_(st, PRESENCE_LOG_INFO, "redis:", rep->str);
      /* The migration ended: no more ASK for it. */
      if (st->ask) ask_close(st);
    }
    if (moved && st->up && !st->destroying) {
      /* Whatever the call, the writes behind it go to the new node. */
      st->moving = true;
      if (r->carry) {
        hold(st, r);
        drop_connection(st, PRESENCE_ESTORE);
        return;
      }
    }
    else if (r->fn != load_done || !strstr(rep->str, "already exists"))
      logf_(st, PRESENCE_LOG_ERROR, "redis:", rep->str);
    code = PRESENCE_ESTORE;
  }
  if (!code && !st->held_head) st->retry_ms = 0;
  r->fn(st, r, rep, code);
  if (code && r->carry && !moved) on_refused(st, r);
  req_free(r);
  /* The slot is served elsewhere now: reconnect there. Everything pending
   * fails like a lost connection, and the registration that follows the
   * reconnect re-asserts this shard's sessions on the new node. */
  if (moved && st->up && !st->destroying) drop_connection(st, PRESENCE_ESTORE);
}

/* ---- events ------------------------------------------------------------- */

static presence_status_t st_of_n(long v) {
  return v == 1 ? PRESENCE_ONLINE : v == 2 ? PRESENCE_IDLE : PRESENCE_OFFLINE;
}

static presence_status_t st_of(const char *s) {
  return st_of_n(strtol(s, NULL, 10));
}

/* ---- the packed log -------------------------------------------------- */

/* Format 9 (presence.lua, ev_pack, uemit, cemit; docs/internals/redis.md
 * "The log"): little-endian integers, each string its length + 1 (0:
 * absent), its bytes and a NUL, so that an event's strings point into the
 * reply as it came. A cursor over one blob: any read past its end fails
 * it. */
typedef struct unpacker {
  const char *p, *end;
  bool bad;
} unpacker_t;

static uint64_t get_uint(unpacker_t *u, size_t n) {
  if (u->bad || (size_t)(u->end - u->p) < n) {
    u->bad = true;
    return 0;
  }
  uint64_t x = 0;
  for (size_t i = 0; i < n; i++)
    x |= (uint64_t)(unsigned char)u->p[i] << (8 * i);
  u->p += n;
  return x;
}

/* A string of a 2- or 4-byte length: NULL when absent (its NUL follows). */
static const char *get_str(unpacker_t *u, size_t lenbytes) {
  uint64_t l = get_uint(u, lenbytes);
  if (u->bad) return NULL;
  size_t n = l ? (size_t)l - 1 : 0;
  if ((size_t)(u->end - u->p) <= n || u->p[n] != '\0') {
    u->bad = true;
    return NULL;
  }
  const char *s = u->p;
  u->p += n + 1;
  return l ? s : NULL;
}

static void texts_free(presence__redis_events_t *evs) {
  while (evs->texts) {
    presence__redis_texts_t *t = evs->texts;
    evs->texts = t->next;
    if (evs->alloc)
      presence__free(evs->alloc, t);
    else
      free(t);
  }
}

void presence__redis_events_free(presence__redis_events_t *evs) {
  texts_free(evs);
  if (evs->alloc)
    presence__free(evs->alloc, evs->ev);
  else
    free(evs->ev);
  evs->ev = NULL;
  evs->n = evs->cap = 0;
}

void presence__redis_events_clear(presence__redis_events_t *evs) {
  texts_free(evs);
  evs->n = 0;
}

/* The text of an event's session id in its 20-byte form, in a slot of
 * out's texts (room for want more); NULL on ENOMEM. */
static const char *sid_text_slot(presence__redis_events_t *out,
                                 const char *wire, size_t want) {
  presence__redis_texts_t *t = out->texts;
  if (!t || t->n == t->cap) {
    size_t cap = want < 8 ? 8 : want;
    size_t sz = sizeof(*t) + cap * sizeof(t->t[0]);
    t = out->alloc ? presence__malloc(out->alloc, sz) : malloc(sz);
    if (!t) return NULL;
    t->next = out->texts;
    t->n = 0;
    t->cap = cap;
    out->texts = t;
  }
  char *slot = t->t[t->n];
  if (!sid20_text(wire, PRESENCE__SID20_LEN, slot)) return wire;
  t->n++;
  return slot;
}

/* Room for n devices of a user.availability, in a block of out's texts
 * (freed with them; n == cap == 0, so no session id text goes there);
 * NULL on ENOMEM. */
static presence_device_status_t *devs_slot(presence__redis_events_t *out,
                                           size_t n) {
  size_t head = (sizeof(presence__redis_texts_t) + 15) & ~(size_t)15;
  size_t sz = head + n * sizeof(presence_device_status_t);
  presence__redis_texts_t *t =
      out->alloc ? presence__malloc(out->alloc, sz) : malloc(sz);
  if (!t) return NULL;
  t->next = out->texts;
  t->n = t->cap = 0;
  out->texts = t;
  return (presence_device_status_t *)(void *)((char *)t + head);
}

int presence__redis_unpack(const char *blob, size_t len, uint64_t last_seq,
                           size_t count, const char *self,
                           presence__redis_events_t *out) {
  if (!blob || count == 0 || count > len || last_seq < count)
    return PRESENCE_ESTORE;
  if (out->n + count > out->cap) {
    size_t cap = out->cap ? out->cap : 16;
    while (cap < out->n + count)
      cap *= 2;
    presence_event_t *ev =
        out->alloc ? presence__realloc(out->alloc, out->ev, cap * sizeof(*ev))
                   : realloc(out->ev, cap * sizeof(*ev));
    if (!ev) return PRESENCE_ENOMEM;
    out->ev = ev;
    out->cap = cap;
  }
  unpacker_t u = {blob, blob + len, false};
  /* What the call's events share: its time, the caller's epoch and id. */
  uint64_t ts = get_uint(&u, 6), epoch = get_uint(&u, 6);
  const char *caller = get_str(&u, 2);
  if (u.bad || !caller) return PRESENCE_ESTORE;
  bool remote = strcmp(caller, self) != 0;
  out->header_len = (size_t)(u.p - blob);
  presence_event_t *base = out->ev + out->n;
  for (size_t i = 0; i < count; i++) {
    presence_event_t *ev = &base[i];
    memset(ev, 0, sizeof(*ev));
    /* The type, and above it the flags (presence.lua, before ev_pack):
     * 1 a device tail, 2 the shown version, 4 a user event follows, 8 a
     * channel.update's data changed, 16 the shown count, 32 the session
     * and user are the previous event's, 64 so is the device tail, 128 a
     * count, 256 an instance, 512 meta, 1024 the default device. Only
     * what an event has is written. */
    uint64_t tf = get_uint(&u, 3);
    uint64_t reason = get_uint(&u, 1), from = get_uint(&u, 1),
             to = get_uint(&u, 1);
    uint64_t ver = get_uint(&u, 4);
    uint64_t tflags = tf >> 8, ty = tf & 0xff;
    if (u.bad || ty >= PRESENCE_EV_COUNT_ || (tflags & ~(uint64_t)2047))
      return PRESENCE_ESTORE;
    /* The previous event's device, or the default one's name, only in a
     * device tail; the previous event's device only after its session. */
    if ((tflags & (64 | 1024)) &&
        (!(tflags & 1) || (tflags & (64 | 1024)) == (64 | 1024)))
      return PRESENCE_ESTORE;
    if ((tflags & 64) && !(tflags & 32)) return PRESENCE_ESTORE;
    uint64_t cnt = tflags & 128 ? get_uint(&u, 4) : 0;
    const char *inst = NULL;
    if (tflags & 256) {
      inst = get_str(&u, 2);
      if (!inst) return PRESENCE_ESTORE;
    }
    if (!(tflags & 32)) {
      ev->session_id = get_str(&u, 2);
      ev->user_id = get_str(&u, 2);
      /* A UUID's 20-byte form (the script keeps what it was sent): its
       * text for every reader. */
      if (ev->session_id && (unsigned char)ev->session_id[0] == 0xff &&
          strlen(ev->session_id) == PRESENCE__SID20_LEN) {
        ev->session_id = sid_text_slot(out, ev->session_id, count - i);
        if (!ev->session_id) return PRESENCE_ENOMEM;
      }
    }
    if (tflags & 512) {
      ev->meta = get_str(&u, 4);
      if (!ev->meta) return PRESENCE_ESTORE;
    }
    if (u.bad) return PRESENCE_ESTORE;
    if (tflags & 32) {
      if (i == 0 || ty > PRESENCE_EV_USER_OFFLINE ||
          base[i - 1].type > PRESENCE_EV_USER_OFFLINE ||
          !base[i - 1].session_id || !base[i - 1].user_id)
        return PRESENCE_ESTORE;
      ev->session_id = base[i - 1].session_id;
      ev->user_id = base[i - 1].user_id;
    }
    if (tflags & 8) ev->flags |= PRESENCE_EVENT_DATA_CHANGED;
    if (ty >= PRESENCE_EV_CHANNEL_JOIN && ty <= PRESENCE_EV_CHANNEL_UPDATE) {
      /* A channel event: its count is the member count. */
      ev->count = cnt;
      ev->channel = get_str(&u, 2);
      if (!ev->channel) return PRESENCE_ESTORE;
    }
    if (ty == PRESENCE_EV_USER_MESSAGE) {
      /* The message: text, emoji (absent for none), expiry. */
      ev->message = get_str(&u, 4);
      ev->emoji = get_str(&u, 2);
      ev->message_expires_ms = (int64_t)(get_uint(&u, 6) & INT64_MAX);
    }
    if (ty == PRESENCE_EV_USER_AVAILABILITY) {
      /* The user's devices (presence.lua, avail_tail): their count, then
       * each one's name, best status and sessions. */
      size_t nd = (size_t)get_uint(&u, 2);
      if (u.bad) return PRESENCE_ESTORE;
      if (nd) {
        presence_device_status_t *d = devs_slot(out, nd);
        if (!d) return PRESENCE_ENOMEM;
        for (size_t k = 0; k < nd; k++) {
          d[k].device = get_str(&u, 2);
          d[k].status = st_of_n((long)(get_uint(&u, 1) & 3));
          d[k].session_count = (uint32_t)get_uint(&u, 4);
          if (u.bad || !d[k].device) return PRESENCE_ESTORE;
        }
        ev->devices = d;
        ev->n_devices = nd;
      }
    }
    if (tflags & 64) {
      /* The causing session's device tail, as the event before said it. */
      if (!base[i - 1].device) return PRESENCE_ESTORE;
      ev->device = base[i - 1].device;
      ev->device_from = base[i - 1].device_from;
      ev->device_to = base[i - 1].device_to;
    } else if (tflags & 1) {
      /* The causing session's device and its best status before, after. */
      ev->device = tflags & 1024 ? PRESENCE_DEVICE_DEFAULT : get_str(&u, 2);
      uint64_t df = get_uint(&u, 1), dt = get_uint(&u, 1);
      if (!ev->device) return PRESENCE_ESTORE;
      ev->device_from = st_of_n((long)(df & 3));
      ev->device_to = st_of_n((long)(dt & 3));
    }
    if (tflags & 2) ev->shown_version = get_uint(&u, 4);
    if (tflags & 16) ev->shown_count = get_uint(&u, 4);
    if (u.bad) return PRESENCE_ESTORE;
    if (tflags & 4) ev->flags |= PRESENCE_EVENT_USER_FOLLOWS;
    /* A count on another event (a cleanup): the session ids are left out
     * of the log, not listed. */
    if ((tflags & 128) && !ev->channel) ev->flags |= PRESENCE_EVENT_IDS_OMITTED;
    ev->type = (presence_event_type_t)ty;
    ev->reason = (presence_reason_t)reason;
    ev->from = st_of_n((long)(from & 3));
    ev->to = st_of_n((long)(to & 3));
    /* A user's availability rides above the status: status + 4 * it. */
    ev->availability_from = (presence_availability_t)((from >> 2) & 3);
    ev->availability_to = (presence_availability_t)((to >> 2) & 3);
    ev->user_version = ver;
    ev->ts_ms = (int64_t)(ts & INT64_MAX);
    ev->epoch = epoch;
    ev->seq = last_seq - count + 1 + i;
    /* Absent: the caller's own session; empty: no instance (a wipe). */
    ev->instance_id = inst ? (inst[0] ? inst : NULL) : caller;
    if (remote) ev->flags |= PRESENCE_EVENT_REMOTE;
    if (out->ends) out->ends[i] = (size_t)(u.p - blob);
  }
  if (u.p != u.end) return PRESENCE_ESTORE;
  out->n += count;
  return 0;
}

/* A decimal number and nothing after it but `tail` (strtoull alone would
 * take leading blanks, a sign, and wrap a negative). */
static int decimal(const redisReply *r, const char *tail,
                   unsigned long long *v) {
  if (r->type != REDIS_REPLY_STRING || r->str[0] < '0' || r->str[0] > '9')
    return -1;
  char *x;
  errno = 0;
  *v = strtoull(r->str, &x, 10);
  return errno || strcmp(x, tail) ? -1 : 0;
}

/* The last seq, count and packed events of an entry or a reply. */
static int decode_three(const redisReply *last, const char *tail,
                        const redisReply *count, redisReply *p,
                        const char *self, presence__redis_events_t *out) {
  unsigned long long l, c;
  if (!p || p->type != REDIS_REPLY_STRING || decimal(last, tail, &l) ||
      decimal(count, "", &c))
    return PRESENCE_ESTORE;
  return presence__redis_unpack(p->str, p->len, l, (size_t)c, self, out);
}

int presence__redis_decode_entry(redisReply *e, const char *self,
                                 presence__redis_events_t *out) {
  if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
      e->element[0]->type != REDIS_REPLY_STRING ||
      e->element[1]->type != REDIS_REPLY_ARRAY)
    return PRESENCE_ESTORE;
  redisReply *f = e->element[1];
  redisReply *k = NULL, *p = NULL;
  for (size_t i = 0; i + 1 < f->elements; i += 2) {
    redisReply *name = f->element[i], *v = f->element[i + 1];
    if (name->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
        name->len != 1)
      continue;
    if (name->str[0] == 'k') k = v;
    if (name->str[0] == 'p') p = v;
  }
  if (!k) return PRESENCE_ESTORE;
  return decode_three(e->element[0], "-0", k, p, self, out);
}

int presence__redis_decode_reply(redisReply *rep, const char *self,
                                 presence__redis_events_t *out) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 5) return 0;
  return decode_three(rep->element[2], "", rep->element[3], rep->element[4],
                      self, out);
}

/* The events a script reply carries (none when it has two elements). */
static int reply_events(rstore_t *st, redisReply *rep,
                        presence__redis_events_t *out) {
  memset(out, 0, sizeof(*out));
  out->alloc = st->h.allocator;
  int rc = presence__redis_decode_reply(rep, st->h.instance_id, out);
  if (rc) {
    presence__redis_events_free(out);
    memset(out, 0, sizeof(*out));
    out->alloc = st->h.allocator;
    logf_(st, PRESENCE_LOG_ERROR, "redis: malformed events in a reply", NULL);
  }
  return rc;
}

/* The reaper's ids (read back in pages) as the cleanup's list; returns the
 * array to free, or NULL. */
static const char **attach_reap_ids(rstore_t *st, presence_event_t *ev);

/* Report events [from, from + n) of evs. With reap_ids, a cleanup whose
 * list the log leaves out gets the reaper's ids. */
static void emit_list(rstore_t *st, presence__redis_events_t *evs, size_t from,
                      size_t n, bool reap_ids) {
  for (size_t i = from; i < from + n && i < evs->n; i++) {
    presence_event_t *ev = &evs->ev[i];
    if (ev->seq > st->last_seq) st->last_seq = ev->seq;
    const char **arr = reap_ids ? attach_reap_ids(st, ev) : NULL;
    st->stats.events[ev->type]++;
    st->h.emit(st->h.host_ud, ev);
    xfree(st, arr);
  }
}

/* Report every event a script returned. */
static void emit_reply(rstore_t *st, redisReply *rep, bool reap_ids) {
  presence__redis_events_t evs;
  if (reply_events(st, rep, &evs)) return;
  emit_list(st, &evs, 0, evs.n, reap_ids);
  presence__redis_events_free(&evs);
}

static void emit_events(rstore_t *st, redisReply *rep) {
  emit_reply(st, rep, false);
}

static const char *payload_str(redisReply *rep) {
  if (rep->elements < 2 || rep->element[1]->type != REDIS_REPLY_STRING)
    return "";
  return rep->element[1]->str;
}

/* A write refused for its epoch: register again, once per epoch. */
static void on_fenced(rstore_t *st, req_t *r) {
  if (r->epoch_gen == st->epoch_gen && st->phase >= PH_WIPING &&
      !st->destroying && !st->leaving) {
    logf_(st, PRESENCE_LOG_WARN, "redis: fenced, registering again", NULL);
    st->phase = PH_NONE;
    start_register(st);
  }
}

/* Redis answered a write of this instance's, or a step of its re-assert,
 * with an error: it refused to run it (OOM at maxmemory under noeviction,
 * MISCONF after a failed save, NOREPLICAS, BUSY, LOADING) or ran part of it
 * (a script error). Its view of this instance's sessions may now differ from
 * the local table, the truth. Registered again at the next heartbeat, as
 * after a fence: a new epoch, the re-assert, then the sweep of what Redis
 * still holds under the old one (an end it refused). Until then writes are
 * held here and not sent (can_write), so a refusal that lasts costs a line
 * a heartbeat, not one per write, and nothing stays wrong once Redis takes
 * writes again (tests/integration/test_redis_refused.py). */
static void on_refused(rstore_t *st, req_t *r) {
  if (r->epoch_gen != st->epoch_gen || st->phase < PH_WIPING ||
      st->destroying || st->leaving)
    return;
  logf_(st, PRESENCE_LOG_WARN,
        "redis: a write was refused; this instance's sessions are held "
        "here and asserted again once Redis takes writes",
        NULL);
  st->phase = PH_NONE;
}

static bool can_write(rstore_t *st) {
  /* Moving: the shard reconnects to its slot's new node after a MOVED;
   * writes wait there with those the MOVED carried (send_req). */
  return (st->up && (st->phase == PH_RESYNC || st->phase == PH_READY)) ||
         (st->moving && !st->destroying);
}

/* ---- write batches ------------------------------------------------------ */

/* Writes per batch call: ~20-40 us of script each on this machine, so a
 * full batch stays around 2 ms, far under the 10 ms a call may take. */
#define WB_MAX 64

static int resp_put(rstore_t *st, char **buf, size_t *len, size_t *cap,
                    const char *a, size_t n) {
  size_t need = *len + n + 32;
  if (need > *cap) {
    size_t ncap = *cap ? *cap * 2 : 4096;
    while (ncap < need)
      ncap *= 2;
    char *b = xrealloc(st, *buf, ncap);
    if (!b) return PRESENCE_ENOMEM;
    *buf = b;
    *cap = ncap;
  }
  *len += presence__resp_head(*buf + *len, '$', n);
  memcpy(*buf + *len, a, n);
  *len += n;
  memcpy(*buf + *len, "\r\n", 2);
  *len += 2;
  return 0;
}

/* The batch's reply: {code, {code, events, ...}, events...}. Each write
 * completes in order, after its own events were reported, as if it had
 * been its own call. */
static void batch_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  redisReply *p = NULL;
  if (!code && rep) {
    code = script_code(rep);
    if (!code) {
      p = rep->elements > 1 ? rep->element[1] : NULL;
      size_t n = 0;
      for (req_t *x = r->sub_head; x; x = x->sub_next)
        n++;
      if (!p || p->type != REDIS_REPLY_ARRAY || p->elements != 2 * n)
        code = PRESENCE_ESTORE;
      for (size_t i = 0; !code && i < p->elements; i++)
        if (p->element[i]->type != REDIS_REPLY_INTEGER) code = PRESENCE_ESTORE;
    }
  }
  presence__redis_events_t evs = {.alloc = st->h.allocator};
  if (!code) code = reply_events(st, rep, &evs);
  size_t ev = 0, k = 0;
  req_t *sub;
  while ((sub = r->sub_head)) {
    r->sub_head = sub->sub_next;
    int c = code;
    if (!code) {
      c = (int)p->element[2 * k]->integer;
      size_t nev = (size_t)p->element[2 * k + 1]->integer;
      emit_list(st, &evs, ev, nev, false);
      ev += nev;
    }
    k++;
    sub->fn(st, sub, NULL, c);
    req_free(sub);
  }
  presence__redis_events_free(&evs);
}

/* Send queue q as one call of op (its requests in order; done runs them).
 * carry: a write batch, held and carried to a slot's new node. */
static void batch_send(rstore_t *st, rbatch_t *q, const char *op, req_fn done,
                       bool carry) {
  if (!q->n) return;
  req_t *subs = q->head;
  uint32_t n = q->n, nargs = q->args;
  size_t body = q->len;
  q->head = q->tail = NULL;
  q->n = q->args = q->weight = 0;
  q->len = 0;
  req_t *b = req_new(st, done);
  if (b) {
    b->sub_head = subs;
    b->carry = carry;
  }
  char count[24];
  count[presence__resp_dec(count, n)] = '\0';
  const char *common[COMMON_ARGS + 1];
  size_t nc = (size_t)common_args(st, op, common);
  common[nc++] = count;
  char *cmd = NULL;
  size_t len = 0, cap = body + 512;
  cmd = b ? xmalloc(st, cap) : NULL;
  int rc = cmd ? 0 : PRESENCE_ENOMEM;
  if (!rc) len = presence__resp_head(cmd, '*', nc + nargs);
  for (size_t i = 0; !rc && i < nc; i++)
    rc = resp_put(st, &cmd, &len, &cap, common[i], strlen(common[i]));
  if (!rc && len + body > cap) {
    char *c2 = xrealloc(st, cmd, len + body);
    if (c2) {
      cmd = c2;
      cap = len + body;
    } else {
      rc = PRESENCE_ENOMEM;
    }
  }
  if (rc) {
    xfree(st, cmd);
    if (b) {
      defer(st, b, PRESENCE_ENOMEM);
      return;
    }
    while (subs) {
      req_t *x = subs;
      subs = x->sub_next;
      x->sub_next = NULL;
      defer(st, x, PRESENCE_ENOMEM);
    }
    return;
  }
  memcpy(cmd + len, q->buf, body);
  b->cmd = cmd;
  b->cmd_len = len + body;
  send_req(st, b);
}

/* Send the queued writes as one call (in order, fenced once). */
static void flush_writes(rstore_t *st) {
  batch_send(st, &st->wb, "batch", batch_done, true);
}

/* Add r (op and its n arguments) to queue q; 0 or ENOMEM (r deferred with
 * it, q as it was). */
static int batch_add(rstore_t *st, rbatch_t *q, req_t *r, const char *op,
                     int n, const char **args) {
  size_t mark = q->len;
  int rc = resp_put(st, &q->buf, &q->len, &q->cap, op, strlen(op));
  for (int i = 0; !rc && i < n; i++)
    rc = resp_put(st, &q->buf, &q->len, &q->cap, args[i], strlen(args[i]));
  if (rc) {
    q->len = mark;
    defer(st, r, rc);
    return rc;
  }
  q->args += 1 + (uint32_t)n;
  r->sub_next = NULL;
  if (q->tail)
    q->tail->sub_next = r;
  else
    q->head = r;
  q->tail = r;
  q->n++;
  /* The first queued: sent when the loop comes round (on_timer), or,
   * with a command in flight, once it has answered (on_reply). */
  if (q->n == 1 && st->hs && !st->destroying)
    uv_timer_start(&st->hs->t[T_FLUSH], on_timer, 0, 0);
  return 0;
}

/* A session write: sent at once when nothing is in flight (lowest
 * latency), else queued and sent with the others that queue up until the
 * next answer comes (or WB_MAX of them): under load, one script call then
 * carries many writes, which saves the call's fixed cost (script setup,
 * TIME, fencing, one INCRBY for all their events). Waiting for an answer
 * rather than only for the loop's next turn is group commit: the calls
 * fill at Redis's pace, not the loop's, which matters most when an
 * instance's traffic is split (--workers 2: a worker's calls carried ~30
 * writes instead of ~50; bench/workers.py's script calls per change). A
 * write waits at most for one answer. */
static void queue_write(rstore_t *st, req_t *r, const char *op, int n,
                        const char **args) {
  r->carry = true;
  if (!st->wb.n && !st->inflight) {
    call(st, r, op, n, args, NULL);
    return;
  }
  if (!batch_add(st, &st->wb, r, op, n, args) && st->wb.n >= WB_MAX)
    flush_writes(st);
}

/* Queries per qbatch call, and the members they may list in all (a
 * member is ~5-8 us of script here): a call stays near 2 ms. */
#define QB_MAX 64
#define QB_WEIGHT 256

/* The reply of a query batch: {0, {reply, reply, ...}}, each its query's
 * own ({code, payload}), handed to its request as if it had been its own
 * call. */
static void qbatch_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  redisReply *p = NULL;
  if (!code && rep) {
    code = script_code(rep);
    size_t n = 0;
    for (req_t *x = r->sub_head; x; x = x->sub_next)
      n++;
    p = !code && rep->elements > 1 ? rep->element[1] : NULL;
    if (!code && (!p || p->type != REDIS_REPLY_ARRAY || p->elements != n))
      code = PRESENCE_ESTORE;
  }
  size_t k = 0;
  req_t *sub;
  while ((sub = r->sub_head)) {
    r->sub_head = sub->sub_next;
    sub->fn(st, sub, code ? NULL : p->element[k++], code);
    req_free(sub);
  }
}

static void flush_queries(rstore_t *st) {
  batch_send(st, &st->qb, "qbatch", qbatch_done, false);
}

/* A query (q_user, q_members: three arguments, weight the members it may
 * list): sent at once when nothing is in flight, else queued like writes
 * and sent with them as one 'qbatch' call (queue_write), after the
 * writes queued by then (so it sees every write asked before it, and may
 * see one asked after it in the same turn: a newer state, ordered against
 * the events by the sequence number a listing carries). Under load that
 * saves each query the call's fixed cost (~8 us of a 2-member channel's
 * ~30 us listing; docs/benchmarks.md). */
static void queue_query(rstore_t *st, req_t *r, const char *op,
                        const char *args[3], uint32_t weight) {
  if (!st->qb.n && !st->inflight) {
    call(st, r, op, 3, args, NULL);
    return;
  }
  if (batch_add(st, &st->qb, r, op, 3, args)) return;
  st->qb.weight += weight ? weight : 1;
  if (st->qb.n >= QB_MAX || st->qb.weight >= QB_WEIGHT) flush_queries(st);
}

/* ---- writes ------------------------------------------------------------- */

static void write_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (!code && rep) {
    code = script_code(rep);
    if (!code) emit_events(st, rep);
  }
  /* A channel write of a live local session that Redis does not hold yet:
   * the re-assert after a store loss or a fence has not reached it. The
   * local record already holds the write (a join's record is kept,
   * join_done), and that session's re-assert, still to come, asserts its
   * channels from it: the write is made then (reason resync). So it is
   * done, not refused: refused, a backend's join (acknowledged before the
   * store answers) was lost without a word, and a client's was told
   * 'internal' of a session that exists. */
  /* The same for an update or a leave answered "not a member": the
   * session's re-assert has not reached its channels yet (sent before it
   * began and answered during it, too: the store was lost while the write
   * waited). An update's data is in the local record the re-assert
   * asserts; a leave's record is gone, so the re-assert leaves it out. */
  if (r->chan_write && (r->in_resync || st->phase == PH_RESYNC) &&
      (code == PRESENCE_ENOSESSION || code == PRESENCE_ENOTMEMBER))
    code = 0;
  if (code == PRESENCE_EFENCED) on_fenced(st, r);
  if (r->done) r->done(r->ud, code);
}

static void connect_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (!code && rep) {
    code = script_code(rep);
    if (!code) emit_events(st, rep);
  }
  if (code == PRESENCE_EEXIST || code == PRESENCE_ELIMIT) {
    /* Refused cluster-wide: the local record goes too. */
    lsess_t *s = r->slot < st->slab_len ? st->slab[r->slot] : NULL;
    if (s && s->gen == r->gen) local_remove(st, s);
  }
  if (code == PRESENCE_EFENCED) on_fenced(st, r);
  if (r->done) r->done(r->ud, code);
}

static void done_only(rstore_t *st, req_t *r, redisReply *rep, int code) {
  (void)st;
  (void)rep;
  if (r->done) r->done(r->ud, code);
}

/* A status, reason or availability (small, never negative) as text. */
static void status_args(char *buf, size_t n, int v) {
  if (n < 8 || v < 0 || v > 9999999) {
    snprintf(buf, n, "%d", v);
    return;
  }
  buf[presence__resp_dec(buf, (uint64_t)v)] = '\0';
}

static void send_status(rstore_t *st, lsess_t *s, presence_status_t to,
                        presence_reason_t reason, presence_store_done_fn done,
                        void *ud) {
  req_t *r = req_new(st, write_done);
  if (!r) {
    if (done) done(ud, PRESENCE_ENOMEM);
    return;
  }
  r->done = done;
  r->ud = ud;
  if (!can_write(st)) {
    defer(st, r, PRESENCE_ESTORE);
    return;
  }
  char sbuf[8], rbuf[8];
  status_args(sbuf, sizeof sbuf, to);
  status_args(rbuf, sizeof rbuf, reason);
  const char *args[] = {s->wire, s->user, sbuf, rbuf};
  queue_write(st, r, "status", 4, args);
}

/* Status that people set: availability ('avail') and the status message
 * ('msg'), decided in the script like every write (exactly one event per
 * real change, cluster-wide). A message's expiry is the script's too: the
 * 'grace' call every instance makes clears what is due (see presence.lua,
 * expire_messages). */
static int op_setting(rstore_t *st, const presence_write_t *w,
                      presence_store_done_fn done, void *ud) {
  req_t *r = req_new(st, write_done);
  if (!r) return PRESENCE_ENOMEM;
  r->done = done;
  r->ud = ud;
  if (!can_write(st)) {
    defer(st, r, PRESENCE_ESTORE);
    return 0;
  }
  if (w->kind == PRESENCE_WRITE_SET_AVAILABILITY) {
    char a[8];
    status_args(a, sizeof a, (int)w->availability);
    const char *args[] = {w->user_id, a};
    queue_write(st, r, "avail", 2, args);
    return 0;
  }
  /* '-' for none, '=' and the text otherwise (an empty string is none). */
  char *text = xmalloc(st, w->message_len + 2);
  char *emoji = xmalloc(st, w->emoji_len + 2);
  if (!text || !emoji) {
    xfree(st, text);
    xfree(st, emoji);
    defer(st, r, PRESENCE_ENOMEM);
    return 0;
  }
  snprintf(text, w->message_len + 2, "%s%.*s", w->message ? "=" : "-",
           (int)w->message_len, w->message ? w->message : "");
  snprintf(emoji, w->emoji_len + 2, "%s%.*s", w->emoji ? "=" : "-",
           (int)w->emoji_len, w->emoji ? w->emoji : "");
  char exp[24];
  /* The host's wall time, on Redis's clock (clock_off_ms). */
  snprintf(exp, sizeof exp, "%lld",
           (long long)(w->expires_ms ? w->expires_ms + st->clock_off_ms : 0));
  const char *args[] = {w->user_id, text, emoji, exp};
  queue_write(st, r, "msg", 4, args);
  /* This instance clears it on time (the others poll, in case it dies). */
  if (w->expires_ms) {
    int64_t in = w->expires_ms - st->h.wall_ms(st->h.host_ud);
    grace_arm(st, in > 0 ? (uint64_t)in + 1 : 0);
  }
  xfree(st, text);
  xfree(st, emoji);
  return 0;
}

static lsess_t *write_session(rstore_t *st, const presence_write_t *w) {
  if (w->handle) return slab_get(st, w->handle);
  return find_local(st, w->session_id, w->session_id_len);
}

static int op_connect(rstore_t *st, const presence_write_t *w,
                      presence_store_done_fn done, void *ud) {
  if (find_local(st, w->session_id, w->session_id_len)) return PRESENCE_EEXIST;
  lsess_t *s = xcalloc(st, 1, sizeof(*s) + w->session_id_len + 1 +
                                  PRESENCE__SID20_LEN + 1);
  req_t *r = req_new(st, connect_done);
  char *user = xstrndup(st, w->user_id, w->user_id_len);
  /* The device rides in front of the meta ('@' device '\t'): the script
   * keeps it in the session record (presence.lua, dev_of). */
  size_t dlen = w->device && !(w->device_len == 3 &&
                               memcmp(w->device, PRESENCE_DEVICE_DEFAULT, 3) == 0)
                    ? w->device_len
                    : 0;
  size_t dpre = dlen ? dlen + 2 : 0;
  char *meta = w->meta || dpre ? xmalloc(st, dpre + w->meta_len + 2) : NULL;
  if (!s || !r || !user || ((w->meta || dpre) && !meta)) goto nomem;
  memcpy(s->id, w->session_id, w->session_id_len);
  char *packed = s->id + w->session_id_len + 1;
  s->wire = sid20_pack(s->id, w->session_id_len, packed) ? packed : s->id;
  s->key.hash = presence__hash(w->session_id, w->session_id_len);
  s->key.len = (uint8_t)w->session_id_len;
  /* Opened idle or online (presence_session_open_opts); a resync
   * re-asserts what is kept here. */
  s->key.spare[S_STATUS] =
      w->status == PRESENCE_IDLE ? PRESENCE_IDLE : PRESENCE_ONLINE;
  s->key.spare[S_REASON] = PRESENCE_REASON_CONNECT;
  s->user = user;
  /* Stored as the script keeps it: '=' then the text, so "" is a meta. */
  if (dpre) {
    meta[0] = '@';
    memcpy(meta + 1, w->device, dlen);
    meta[dlen + 1] = '\t';
    meta[dpre] = '\0';
  }
  if (w->meta) {
    meta[dpre] = '=';
    memcpy(meta + dpre + 1, w->meta, w->meta_len);
    meta[dpre + w->meta_len + 1] = '\0';
  }
  s->meta = meta;
  s->connected_ms = st->h.wall_ms(st->h.host_ud);
  if (slab_put(st, s)) goto nomem;
  if (presence__table_insert(&st->sessions, s)) {
    st->slab[s->slot] = NULL;
    st->free_slots[st->n_free++] = s->slot;
    goto nomem;
  }
  st->stats.sessions++;
  if (st->h.inactivity_ms) act_push(st, s);
  if (w->handle_out)
    *w->handle_out = ((presence_handle_t)s->gen << 32) | (s->slot + 1);
  r->done = done;
  r->ud = ud;
  r->slot = s->slot;
  r->gen = s->gen;
  if (!can_write(st)) {
    defer(st, r, PRESENCE_ESTORE);
    return 0;
  }
  char maxs[24];
  size_t ml = presence__resp_dec(maxs, st->h.max_sessions_per_user);
  /* An idle open rides on the limit as a suffix (presence.lua w_connect):
   * no argument more, and an online connect sends what it did. */
  if (w->status == PRESENCE_IDLE) maxs[ml++] = 'i';
  maxs[ml] = '\0';
  const char *args[] = {s->wire, s->user, meta ? meta : "", maxs};
  /* A take-over (PRESENCE_WRITE_F_ADOPT) is a connect that may also move
   * the same user's session from another instance to this one. */
  queue_write(st, r, (w->flags & PRESENCE_WRITE_F_ADOPT) ? "adopt" : "connect",
              4, args);
  return 0;
nomem:
  xfree(st, s);
  xfree(st, r);
  xfree(st, user);
  xfree(st, meta);
  return PRESENCE_ENOMEM;
}

static int op_end(rstore_t *st, const presence_write_t *w,
                  presence_store_done_fn done, void *ud) {
  lsess_t *s = write_session(st, w);
  if (!s) return PRESENCE_ENOSESSION;
  req_t *r = req_new(st, write_done);
  if (!r) return PRESENCE_ENOMEM;
  r->done = done;
  r->ud = ud;
  char rbuf[8];
  status_args(rbuf, sizeof rbuf, w->reason);
  const char *args[] = {s->wire, s->user, rbuf};
  /* Gone locally at once: the client is gone whatever Redis answers, and a
   * resync must not bring it back. */
  if (can_write(st))
    queue_write(st, r, "end", 3, args);
  else
    defer(st, r, PRESENCE_ESTORE);
  /* The end may start the user's offline grace or its channels' grace:
   * this instance fires them on time (the others learn them from their
   * heartbeat, in case this one dies). Polled a little early (the script
   * runs after this), the poll answers when the deadline is. */
  if (st->h.offline_grace_ms || (s->joins && st->h.channel_grace_ms))
    grace_arm(st, (st->h.offline_grace_ms > st->h.channel_grace_ms
                       ? st->h.offline_grace_ms
                       : st->h.channel_grace_ms) +
                      1);
  local_remove(st, s);
  return 0;
}

static int op_set_status(rstore_t *st, const presence_write_t *w,
                         presence_store_done_fn done, void *ud) {
  lsess_t *s = write_session(st, w);
  if (!s) return PRESENCE_ENOSESSION;
  if (st->h.inactivity_ms && w->reason == PRESENCE_REASON_EXPLICIT) {
    act_unlink(st, s);
    act_push(st, s);
    s->key.spare[S_FLAGS] &= (uint8_t)~SF_IDLE_BY_INACTIVITY;
  }
  s->key.spare[S_STATUS] = (uint8_t)w->status;
  s->key.spare[S_REASON] = (uint8_t)w->reason;
  send_status(st, s, w->status, w->reason, done, ud);
  return 0;
}

static int op_touch(rstore_t *st, const presence_write_t *w,
                    presence_store_done_fn done, void *ud) {
  lsess_t *s = write_session(st, w);
  if (!s) return PRESENCE_ENOSESSION;
  uint8_t *flags = &s->key.spare[S_FLAGS];
  bool was_inact = *flags & SF_IDLE_BY_INACTIVITY;
  bool explicit_idle = s->key.spare[S_STATUS] == PRESENCE_IDLE && !was_inact;
  if (st->h.inactivity_ms && !explicit_idle) {
    act_unlink(st, s);
    act_push(st, s);
    if (was_inact) {
      *flags &= (uint8_t)~SF_IDLE_BY_INACTIVITY;
      s->key.spare[S_STATUS] = PRESENCE_ONLINE;
      s->key.spare[S_REASON] = PRESENCE_REASON_INACTIVITY;
      send_status(st, s, PRESENCE_ONLINE, PRESENCE_REASON_INACTIVITY, done, ud);
      return 0;
    }
  }
  req_t *r = req_new(st, done_only);
  if (!r) return PRESENCE_ENOMEM;
  r->done = done;
  r->ud = ud;
  defer(st, r, 0);
  return 0;
}

/* ---- channels ------------------------------------------------------------ */

static ljoin_t **ljoin_find(lsess_t *s, const char *ch, size_t len) {
  ljoin_t **pp = &s->joins;
  for (; *pp; pp = &(*pp)->next)
    if (strlen((*pp)->ch) == len && !memcmp((*pp)->ch, ch, len)) break;
  return pp;
}

/* '=' data, or "" for none: as the script keeps it. */
static char *data_arg(rstore_t *st, const presence_write_t *w) {
  char *d = xmalloc(st, w->data ? w->data_len + 2 : 1);
  if (!d) return NULL;
  d[0] = '\0';
  if (w->data) {
    d[0] = '=';
    memcpy(d + 1, w->data, w->data_len);
    d[w->data_len + 1] = '\0';
  }
  return d;
}

/* A join that failed (refused by Redis: the session's channel limit, the
 * session gone; or Redis unreachable, the caller told so): the local record
 * made for it goes, so no resync asserts a join its caller saw fail. */
static void join_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (!code && rep) code = script_code(rep);
  /* The local record goes only with a refusal that is Redis's answer
   * about the join (the channel limit...). Not sent while the store is
   * not writable, lost with the connection (done or not, who knows),
   * fenced, or refused for a session the re-assert has not reached yet
   * (write_done): the record stays, and the re-assert makes Redis agree
   * with it, as for every other local write. A caller told of the
   * failure that wants no join leaves (channels.c); a backend's join is
   * acknowledged before the store answers, so dropping it here lost its
   * membership without a word. */
  bool later = code == PRESENCE_ESTORE || code == PRESENCE_ETIMEDOUT ||
               code == PRESENCE_EFENCED ||
               (code == PRESENCE_ENOSESSION &&
                (r->in_resync || st->phase == PH_RESYNC));
  if (code && !later && r->cmd_ch) {
    lsess_t *s = r->slot < st->slab_len ? st->slab[r->slot] : NULL;
    if (s && s->gen == r->gen) {
      ljoin_t **pp = ljoin_find(s, r->cmd_ch, strlen(r->cmd_ch));
      if (*pp) {
        ljoin_t *j = *pp;
        *pp = j->next;
        xfree(st, j->data);
        xfree(st, j);
      }
    }
  }
  write_done(st, r, rep, code);
}

/* An update (or a join of a session already a member) its caller is told
 * failed because Redis did not take it: not writable, the connection lost
 * with it in flight (ESTORE, ETIMEDOUT: the reconnect re-asserts), or
 * fenced. With PRESENCE_WRITE_F_UNDO (op_channel keeps undo_data only
 * then) the local record gets back the data it replaced, unless a later
 * write replaced it since: the re-assert asserts the local record, and
 * kept, the new data reached the other members once Redis was back, after
 * the client was told store_unavailable (an error means nothing
 * happened). */
static void update_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  int c = code;
  if (!c && rep) c = script_code(rep);
  if ((c == PRESENCE_ESTORE || c == PRESENCE_ETIMEDOUT ||
       c == PRESENCE_EFENCED) &&
      r->cmd_ch) {
    lsess_t *s = r->slot < st->slab_len ? st->slab[r->slot] : NULL;
    ljoin_t *j = s && s->gen == r->gen
                     ? *ljoin_find(s, r->cmd_ch, strlen(r->cmd_ch))
                     : NULL;
    if (j && j->data_gen == r->undo_gen && r->undo_data) {
      xfree(st, j->data);
      j->data = r->undo_data;
      j->data_gen++;
      r->undo_data = NULL;
    }
  }
  write_done(st, r, rep, code);
}

/* join, update, leave: the local record follows at once (what a resync
 * re-asserts), Redis decides the events. An update Redis cannot take now
 * leaves it as it was (update_done). */
static int op_channel(rstore_t *st, const presence_write_t *w,
                      presence_store_done_fn done, void *ud) {
  lsess_t *s = write_session(st, w);
  if (!s) return PRESENCE_ENOSESSION;
  ljoin_t **pp = ljoin_find(s, w->channel, w->channel_len);
  ljoin_t *j = *pp;
  if (w->kind != PRESENCE_WRITE_JOIN && !j) return PRESENCE_ENOTMEMBER;
  if (w->kind == PRESENCE_WRITE_JOIN && !j && st->h.max_channels_per_session) {
    uint32_t n = 0;
    for (ljoin_t *k = s->joins; k; k = k->next) n++;
    if (n >= st->h.max_channels_per_session) return PRESENCE_ECHANLIMIT;
  }
  char *d = w->kind == PRESENCE_WRITE_LEAVE ? NULL : data_arg(st, w);
  int fresh_join = !j && w->kind == PRESENCE_WRITE_JOIN;
  /* Undone if Redis does not take it (PRESENCE_WRITE_F_UNDO: a caller that
   * reports the failure as nothing done); otherwise kept, made at the
   * re-assert, as a join is: a backend's update is acknowledged before the
   * store answers, and undone it was lost without a word. */
  bool undo = (w->flags & PRESENCE_WRITE_F_UNDO) != 0;
  req_t *r = req_new(st, fresh_join                      ? join_done
                         : w->kind == PRESENCE_WRITE_LEAVE ? write_done
                                                           : update_done);
  ljoin_t *fresh = !j && w->kind == PRESENCE_WRITE_JOIN
                       ? xcalloc(st, 1, sizeof(*fresh) + w->channel_len + 1)
                       : NULL;
  if (!r || (w->kind != PRESENCE_WRITE_LEAVE && !d) ||
      (!j && w->kind == PRESENCE_WRITE_JOIN && !fresh)) {
    xfree(st, r);
    xfree(st, d);
    xfree(st, fresh);
    return PRESENCE_ENOMEM;
  }
  r->done = done;
  r->ud = ud;
  r->in_resync = st->phase == PH_RESYNC;
  r->chan_write = true;
  if (fresh) {
    memcpy(fresh->ch, w->channel, w->channel_len);
    *pp = j = fresh;
    r->slot = s->slot;
    r->gen = s->gen;
    /* NULL: kept anyway */
    r->cmd_ch = xstrndup(st, w->channel, w->channel_len);
  }
  char maxc[16];
  snprintf(maxc, sizeof maxc, "%u", (unsigned)st->h.max_channels_per_session);
  const char *args[] = {s->wire, s->user, j->ch, d ? d : "", maxc};
  bool ok = can_write(st);
  if (w->kind == PRESENCE_WRITE_LEAVE) {
    if (ok) queue_write(st, r, "leave", 3, args);
    if (st->h.channel_grace_ms) grace_arm(st, st->h.channel_grace_ms + 1u);
    *pp = j->next;
    xfree(st, j->data);
    xfree(st, j);
  } else if (!ok && !fresh && undo) {
    /* Not sent, its caller told store_unavailable: the record keeps the
     * data it had (update_done). */
    xfree(st, d);
  } else {
    if (ok)
      queue_write(st, r, w->kind == PRESENCE_WRITE_JOIN ? "join" : "update",
                  w->kind == PRESENCE_WRITE_JOIN ? 5 : 4, args);
    if (fresh || !undo) {
      xfree(st, j->data);
    } else {
      r->undo_data = j->data; /* put back if Redis does not take it */
      r->slot = s->slot;
      r->gen = s->gen;
      r->cmd_ch = xstrndup(st, w->channel, w->channel_len);
    }
    j->data = d;
    r->undo_gen = ++j->data_gen;
  }
  if (!ok) defer(st, r, PRESENCE_ESTORE);
  return 0;
}

static int op_remove_user(rstore_t *st, const presence_write_t *w,
                          presence_store_done_fn done, void *ud) {
  if (!can_write(st)) return PRESENCE_ESTORE;
  req_t *r = req_new(st, write_done);
  char *ch = xstrndup(st, w->channel, w->channel_len);
  if (!r || !ch) {
    xfree(st, r);
    xfree(st, ch);
    return PRESENCE_ENOMEM;
  }
  r->done = done;
  r->ud = ud;
  snprintf(r->user, sizeof r->user, "%.*s", (int)w->user_id_len, w->user_id);
  /* This instance's sessions of the user forget the channel now (those of
   * other instances keep a local record that their next resync asserts:
   * see docs/internals/redis.md). */
  for (uint32_t i = 0; i < st->slab_len; i++) {
    lsess_t *s = st->slab[i];
    if (!s || strcmp(s->user, r->user)) continue;
    ljoin_t **pp = ljoin_find(s, w->channel, w->channel_len);
    if (*pp) {
      ljoin_t *j = *pp;
      *pp = j->next;
      xfree(st, j->data);
      xfree(st, j);
    }
  }
  const char *args[] = {ch, r->user};
  queue_write(st, r, "rmuser", 2, args);
  xfree(st, ch);
  return 0;
}

/* presence_reset: wipe batches, refused while another instance is live. */
static void reset_step(rstore_t *st, req_t *prev, presence_store_done_fn done,
                       void *ud, bool first);

static void reset_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (!code && rep) code = script_code(rep);
  if (code) {
    if (r->done) r->done(r->ud, code);
    return;
  }
  emit_events(st, rep);
  if (r->slot == 0) local_clear(st); /* the first batch went through */
  const char *left = payload_str(rep);
  if (r->slot == 2) { /* wipe_done */
    if (r->done) r->done(r->ud, 0);
    return;
  }
  reset_step(st, r, r->done, r->ud, strcmp(left, "0") == 0);
}

static void reset_step(rstore_t *st, req_t *prev, presence_store_done_fn done,
                       void *ud, bool last) {
  req_t *r = req_new(st, reset_done);
  if (!r) {
    if (done) done(ud, PRESENCE_ENOMEM);
    return;
  }
  r->done = done;
  r->ud = ud;
  r->slot = prev ? 1 : 0;
  if (last) {
    r->slot = 2;
    call(st, r, "wipe_done", 0, NULL, NULL);
    return;
  }
  char lim[16];
  snprintf(lim, sizeof lim, "%u", (unsigned)st->o.batch);
  const char *args[] = {lim};
  call(st, r, "wipe", 1, args, NULL);
}

static int r_write(presence_store_t *base, const presence_write_t *w,
                   presence_store_done_fn done, void *ud) {
  rstore_t *st = (rstore_t *)base;
  if (st->destroying) return PRESENCE_ESHUTDOWN;
  switch (w->kind) {
  case PRESENCE_WRITE_CONNECT:
    return op_connect(st, w, done, ud);
  case PRESENCE_WRITE_END:
    return op_end(st, w, done, ud);
  case PRESENCE_WRITE_SET_STATUS:
    return op_set_status(st, w, done, ud);
  case PRESENCE_WRITE_TOUCH:
    return op_touch(st, w, done, ud);
  case PRESENCE_WRITE_RESET:
    if (!can_write(st)) return PRESENCE_ESTORE;
    reset_step(st, NULL, done, ud, false);
    return 0;
  case PRESENCE_WRITE_SET_AVAILABILITY:
  case PRESENCE_WRITE_SET_MESSAGE:
    return op_setting(st, w, done, ud);
  case PRESENCE_WRITE_JOIN:
  case PRESENCE_WRITE_UPDATE:
  case PRESENCE_WRITE_LEAVE:
    return op_channel(st, w, done, ud);
  case PRESENCE_WRITE_REMOVE_USER:
    return op_remove_user(st, w, done, ud);
  case PRESENCE_WRITE_END_GRACES:
    /* The graces are in Redis, ended on time by any live instance. */
    return PRESENCE_ENOTSUP;
  default:
    return PRESENCE_EINVAL;
  }
}

/* Inactivity runs here, on this instance's own sessions. */
static int64_t r_tick(presence_store_t *base, int64_t now) {
  rstore_t *st = (rstore_t *)base;
  if (!st->h.inactivity_ms) return -1;
  while (st->act_head) {
    lsess_t *s = st->act_head;
    int64_t deadline = s->last_active + st->h.inactivity_ms;
    if (deadline > now) return deadline - now;
    act_unlink(st, s);
    if (s->key.spare[S_STATUS] == PRESENCE_ONLINE) {
      s->key.spare[S_FLAGS] |= SF_IDLE_BY_INACTIVITY;
      s->key.spare[S_STATUS] = PRESENCE_IDLE;
      s->key.spare[S_REASON] = PRESENCE_REASON_INACTIVITY;
      send_status(st, s, PRESENCE_IDLE, PRESENCE_REASON_INACTIVITY, NULL, NULL);
    }
  }
  return -1;
}

/* ---- registration and resync ------------------------------------------- */

static void set_ready(rstore_t *st) {
  st->phase = PH_READY;
  /* Deadlines set while this shard was away (or before a store loss):
   * one poll now; its answer names the next. */
  grace_arm(st, 0);
  logf_(st, PRESENCE_LOG_INFO, "redis: instance registered, epoch",
        st->epoch_s);
  if (st->on_ready) st->on_ready(st->on_ready_ud);
}

static void sweep_step(rstore_t *st);

static void sweep_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (st->destroying || r->epoch_gen != st->epoch_gen) return;
  if (!code && rep) code = script_code(rep);
  if (code == PRESENCE_EFENCED) on_fenced(st, r);
  if (code) {
    /* A reconnect or a re-registration starts over; an answer that was
     * not the sweep's (a refusal) leaves the connection up: the next
     * heartbeat's registration does. */
    if (code != PRESENCE_EFENCED) on_refused(st, r);
    return;
  }
  emit_events(st, rep);
  /* A write refused meanwhile: the next heartbeat registers again, and
   * this re-assert stops here (it would end ready over the refusal). */
  if (st->phase < PH_WIPING) return;
  const char *cur = payload_str(rep);
  if (!strcmp(cur, "0")) {
    set_ready(st);
    return;
  }
  snprintf(st->sweep_cursor, sizeof st->sweep_cursor, "%s", cur);
  sweep_step(st);
}

static void sweep_step(rstore_t *st) {
  req_t *r = req_new(st, sweep_done);
  if (!r) return;
  char lim[16], reason[8];
  snprintf(lim, sizeof lim, "%u", (unsigned)st->o.batch);
  /* At process start the old sessions under this id belonged to a dead
   * process; after a fence they ended while this one could not write. */
  status_args(reason, sizeof reason,
              st->fresh ? PRESENCE_REASON_INSTANCE_LOST
                        : PRESENCE_REASON_RESYNC);
  const char *args[] = {st->sweep_cursor, lim, reason};
  call(st, r, "sweep", 3, args, NULL);
}

static void resync_step(rstore_t *st);
static void cresync_step(rstore_t *st);
static void sresync_start(rstore_t *st);

/* A resync call answered: its events reported, true when the resync goes
 * on (false: stale, failed or fenced; the re-registration starts over). */
static bool resync_reply(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (st->destroying || r->epoch_gen != st->epoch_gen) return false;
  if (!code && rep) code = script_code(rep);
  if (code == PRESENCE_EFENCED) on_fenced(st, r);
  if (code) {
    if (code != PRESENCE_EFENCED) on_refused(st, r);
    return false;
  }
  emit_events(st, rep);
  return st->phase >= PH_WIPING; /* not when a write was refused meanwhile */
}

static void cresync_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (resync_reply(st, r, rep, code)) cresync_step(st);
}

/* After the sessions, their channels: a batch of sessions with joins per
 * call (the script removes joins the store holds beyond these). Sessions
 * without joins are sent too when the store may hold joins for them. */
static void cresync_step(rstore_t *st) {
  size_t cap = 1, nargs = 1;
  uint32_t n = 0, slot = st->cresync_slot;
  /* Count first: a session's joins are bounded, the batch by sessions. */
  while (slot < st->slab_len && n < st->o.batch) {
    lsess_t *s = st->slab[slot++];
    if (!s) continue;
    cap += 3;
    for (ljoin_t *j = s->joins; j; j = j->next) cap += 2;
    n++;
  }
  if (n == 0) {
    /* Settings, sessions and channels all sent: the sweep ends the
     * resync. */
    snprintf(st->sweep_cursor, sizeof st->sweep_cursor, "0");
    sweep_step(st);
    return;
  }
  const char **args = xmalloc(st, cap * sizeof(*args));
  char(*nums)[12] = xmalloc(st, (size_t)n * sizeof(*nums));
  char count[16];
  if (!args || !nums) {
    xfree(st, args);
    xfree(st, nums);
    return;
  }
  uint32_t k = 0;
  while (st->cresync_slot < slot) {
    lsess_t *s = st->slab[st->cresync_slot++];
    if (!s) continue;
    uint32_t nj = 0;
    for (ljoin_t *j = s->joins; j; j = j->next) nj++;
    snprintf(nums[k], sizeof nums[k], "%u", (unsigned)nj);
    args[nargs++] = s->wire;
    args[nargs++] = s->user;
    args[nargs++] = nums[k++];
    for (ljoin_t *j = s->joins; j; j = j->next) {
      args[nargs++] = j->ch;
      args[nargs++] = j->data ? j->data : "";
    }
  }
  snprintf(count, sizeof count, "%u", (unsigned)n);
  args[0] = count;
  req_t *r = req_new(st, cresync_done);
  if (r) call(st, r, "cassert", (int)nargs, args, NULL);
  xfree(st, args);
  xfree(st, nums);
}

static void resync_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (resync_reply(st, r, rep, code)) resync_step(st);
}

/* Assert the next batch of local sessions, by slab slot (stable while the
 * table changes under a resync: new sessions get sent by their own
 * connect, under the new epoch). */
static void resync_step(rstore_t *st) {
  uint32_t batch = st->o.batch;
  const char **args = xmalloc(st, (1 + 5 * (size_t)batch) * sizeof(*args));
  char(*nums)[24] = xmalloc(st, 2 * (size_t)batch * sizeof(*nums));
  if (!args || !nums) {
    xfree(st, args);
    xfree(st, nums);
    return;
  }
  uint32_t n = 0;
  char count[16];
  while (st->resync_slot < st->slab_len && n < batch) {
    lsess_t *s = st->slab[st->resync_slot++];
    if (!s) continue;
    size_t b = 1 + 5 * (size_t)n;
    snprintf(nums[2 * n], 24, "%d", s->key.spare[S_STATUS]);
    snprintf(nums[2 * n + 1], 24, "%lld", (long long)s->connected_ms);
    args[b] = s->wire;
    args[b + 1] = s->user;
    args[b + 2] = nums[2 * n];
    args[b + 3] = nums[2 * n + 1];
    args[b + 4] = s->meta ? s->meta : "";
    n++;
  }
  if (n == 0) {
    xfree(st, args);
    xfree(st, nums);
    st->cresync_slot = 0;
    cresync_step(st);
    return;
  }
  snprintf(count, sizeof count, "%u", (unsigned)n);
  args[0] = count;
  req_t *r = req_new(st, resync_done);
  if (r) call(st, r, "assert", (int)(1 + 5 * n), args, NULL);
  xfree(st, args);
  xfree(st, nums);
}

/* A resync re-asserts what people set first, then the sessions, then
 * their channels: a session or a membership the store gets back for a user
 * who is invisible must find the user invisible already, or the others
 * would be shown it (a resync join with its data) until the setting came
 * back (tests/integration/test_redis_channels.py, restart-hidden). */
static void start_resync(rstore_t *st) {
  st->phase = PH_RESYNC;
  st->resync_slot = 0;
  sresync_start(st);
}

static void wipe_done_cb(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (st->destroying || r->epoch_gen != st->epoch_gen) return;
  if (!code && rep) code = script_code(rep);
  if (code == PRESENCE_EFENCED) on_fenced(st, r);
  if (code == PRESENCE_EBUSY) {
    /* Another instance started meanwhile: whatever is left belongs to dead
     * instances, which reaping handles one by one. */
    start_resync(st);
    return;
  }
  if (code) {
    if (code != PRESENCE_EFENCED) on_refused(st, r);
    return;
  }
  emit_events(st, rep);
  if (st->phase < PH_WIPING) return; /* a write refused meanwhile */
  if (r->slot == 2) {
    start_resync(st);
    return;
  }
  req_t *n = req_new(st, wipe_done_cb);
  if (!n) return;
  if (!strcmp(payload_str(rep), "0")) {
    n->slot = 2;
    call(st, n, "wipe_done", 0, NULL, NULL);
    return;
  }
  char lim[16];
  snprintf(lim, sizeof lim, "%u", (unsigned)st->o.batch);
  const char *args[] = {lim};
  call(st, n, "wipe", 1, args, NULL);
}

static void start_reader(rstore_t *st);

static void register_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (st->destroying) return;
  if (!code && rep) code = script_code(rep);
  redisReply *p = code ? NULL : at(rep, 1);
  long long epoch = 0, seq_n = 0;
  if (!code && (num_of(at(p, 0), &epoch) || epoch < 0 ||
                num_of(at(p, 1), &seq_n) || seq_n < 0 || !text_of(at(p, 2))))
    code = PRESENCE_ESTORE;
  if (code) {
    st->phase = PH_NONE;
    if (code != PRESENCE_ESTORE && code != PRESENCE_ETIMEDOUT && st->up)
      drop_connection(st, PRESENCE_ESTORE);
    return;
  }
  /* Writes queued under the previous epoch go with it (and are fenced). */
  flush_writes(st);
  st->epoch = (uint64_t)epoch;
  snprintf(st->epoch_s, sizeof st->epoch_s, "%llu", (unsigned long long)epoch);
  st->hdr[0] = '\0';
  st->epoch_gen++;
  uint64_t seq = (uint64_t)seq_n;
  bool stale = !strcmp(text_of(at(p, 2)), "1");
  /* Redis's maxmemory-policy: an evicting one removes sessions, users or
   * the log when memory runs short, silently (no instance can tell a key
   * evicted from one never written), where noeviction refuses writes,
   * which the store notices (on_refused). Said at each registration, as
   * Sidekiq says it of its own Redis. */
  const char *policy = text_of(at(p, 3));
  if (policy && *policy && strcmp(policy, "noeviction") != 0)
    logf_(st, PRESENCE_LOG_WARN,
          "redis: maxmemory-policy is not noeviction, so Redis may evict "
          "presence's keys when memory runs short (docs/operations.md); "
          "the policy:",
          policy);
  st->ever_registered = true;
  if (!st->reader_started) {
    snprintf(st->r_last, sizeof st->r_last, "%llu-0", (unsigned long long)seq);
    if (seq > st->last_seq) st->last_seq = seq;
    st->reader_started = true;
    start_reader(st);
  }
  if (stale) {
    st->phase = PH_WIPING;
    req_t *n = req_new(st, wipe_done_cb);
    if (!n) return;
    char lim[16];
    snprintf(lim, sizeof lim, "%u", (unsigned)st->o.batch);
    const char *args[] = {lim};
    call(st, n, "wipe", 1, args, NULL);
    return;
  }
  start_resync(st);
}

/* Redis's clock against the host's (clock_off_ms): TIME answers seconds and
 * microseconds; the host's clock is taken as at the middle of the round
 * trip. A reply of another shape, or an error (an ACL user without +time),
 * leaves the offset as it was (0 at first: the host's clock as before). */
static void time_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  (void)r;
  st->time_busy = false;
  if (st->destroying || code || !rep || rep->type != REDIS_REPLY_ARRAY ||
      rep->elements != 2)
    return;
  long long sec = 0, usec = 0;
  if (num_of(rep->element[0], &sec) || num_of(rep->element[1], &usec) ||
      sec < 0 || usec < 0)
    return;
  int64_t now = st->h.wall_ms(st->h.host_ud);
  /* A reply that took longer than a heartbeat tells little: kept out. */
  if (now < st->time_sent_ms ||
      now - st->time_sent_ms > (int64_t)st->o.heartbeat_ms)
    return;
  int64_t redis_ms = (int64_t)sec * 1000 + (int64_t)usec / 1000;
  st->clock_off_ms = redis_ms - (st->time_sent_ms + now) / 2;
}

static void measure_clock(rstore_t *st) {
  if (st->time_busy || !st->up || !st->h.wall_ms) return;
  req_t *r = req_new(st, time_done);
  if (!r) return;
  st->time_busy = true;
  st->time_sent_ms = st->h.wall_ms(st->h.host_ud);
  const char *args[] = {"TIME"};
  plain(st, r, 1, args);
}

static void start_register(rstore_t *st) {
  if (!st->up || st->phase == PH_REGISTERING || st->phase == PH_LOADING) return;
  measure_clock(st);
  st->phase = PH_REGISTERING;
  st->fresh = !st->ever_registered;
  req_t *r = req_new(st, register_done);
  if (!r) return;
  char seq[24];
  snprintf(seq, sizeof seq, "%llu", (unsigned long long)st->last_seq);
  const char *args[] = {st->fresh ? "1" : "0", seq};
  call(st, r, "register", 2, args, NULL);
}

static void send_load(rstore_t *st);

static void load_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  (void)r;
  if (st->destroying) return;
  if (!st->legacy && rep && rep->type == REDIS_REPLY_ERROR &&
      strstr(rep->str, "unknown command")) {
    /* A Redis before 7.0: the same script through EVALSHA (each call then
     * runs the file's top level again: slower, the same decisions). */
    logf_(st, PRESENCE_LOG_WARN, "redis:",
          "no FUNCTION command (Redis < 7.0): running the script with "
          "EVALSHA");
    st->legacy = true;
    send_load(st);
    return;
  }
  bool ok = rep && (st->legacy ? !code && rep->type == REDIS_REPLY_STRING &&
                                      rep->len == 40
                   : rep->type == REDIS_REPLY_STRING ? !code &&
                                                           !strcmp(rep->str,
                                                                   st->fn)
                   : rep->type == REDIS_REPLY_ERROR &&
                         strstr(rep->str, "already exists") &&
                         strstr(rep->str, st->fn));
  if (!ok) {
    st->phase = PH_NONE;
    if (st->up) drop_connection(st, PRESENCE_ESTORE);
    return;
  }
  if (st->legacy) {
    memcpy(st->sha, rep->str, 40);
    st->sha[40] = '\0';
  }
  st->loaded = true;
  st->phase = PH_NONE;
  if (st->moving) {
    /* The writes a MOVED carried here, first, in order, with those
     * batched meanwhile (held behind them by send_req). */
    flush_writes(st);
    st->moving = false;
    resend_held(st);
  }
  start_register(st);
}

/* ---- connections -------------------------------------------------------- */

static void drop_connection(rstore_t *st, int code) {
  st->up = false;
  if (st->conn) presence__rconn_drop(st->conn, code);
}

static void conn_log(void *ud, presence_log_level_t lvl, const char *msg) {
  rstore_t *st = ud;
  if (st->h.log) st->h.log(st->h.host_ud, lvl, msg);
}

static void send_load(rstore_t *st) {
  req_t *r = req_new(st, load_done);
  if (!r) return;
  if (load_cmd(st, &r->cmd, &r->cmd_len)) {
    req_free(r);
    return;
  }
  send_req(st, r);
}

static void on_up(void *ud) {
  rstore_t *st = ud;
  st->up = true;
  st->phase = PH_LOADING;
  send_load(st);
}

static void on_down(void *ud, int code) {
  (void)code;
  rstore_t *st = ud;
  st->up = false;
  fail_held(st, PRESENCE_ESTORE, st->moving);
  st->phase = PH_NONE;
  st->hb_busy = st->reaping = st->grace_busy = st->reconciling = false;
  st->reap_inflight = 0;
  st->reap_more = false;
}

static void reader_up(void *ud) {
  rstore_t *st = ud;
  st->rup = true;
  start_reader(st);
}

static void reader_down(void *ud, int code) {
  (void)code;
  rstore_t *st = ud;
  st->rup = false;
  st->r_waiting = false;
  st->k_known = false;
}

static int conn_new(rstore_t *st, const char *name, bool reader,
                    presence__rconn_t **out) {
  presence__rconn_config_t cfg = {
      .loop = st->o.loop,
      .alloc = st->h.allocator,
      .url = &st->url,
      .tls = &st->tls,
      .name = name,
      .command_timeout_ms = st->o.command_timeout_ms,
      .reconnect_max_ms = st->o.reconnect_max_ms,
      .max_reply_bytes = st->o.max_reply_bytes,
      .max_reply_elements = st->o.max_reply_elements,
      .log = conn_log,
      .on_up = reader ? reader_up : on_up,
      .on_down = reader ? reader_down : on_down,
      .before_connect = before_connect,
      .ud = st,
  };
  return presence__rconn_new(&cfg, out);
}

/* ---- status that people set: re-asserted after a store loss ------------ */

/*
 * Every instance keeps what people set as the log tells it (every
 * user.availability and user.message, whoever wrote it): one record per
 * user holding a setting, dropped when both are back to the default. After
 * a store loss (or a fence) it re-asserts them in batches ('sassert'),
 * before its sessions and their channels (start_resync says why): the
 * script applies one only where
 * the store's is older (availability: the time it was set; message: its
 * set time, or the time the store last cleared one), so however many
 * instances re-assert the same setting it is applied once, one event
 * (reason resync) per real change, and a message cleared or expired
 * meanwhile does not come back. A message whose expiry passed during the
 * loss is re-asserted too and then expires once, like any other.
 */
typedef struct lset {
  presence__hkey_t key;
  uint8_t av;
  int64_t av_since;
  int64_t msg_set, msg_exp;
  char *text, *emoji; /* NULL: none */
  char id[];
} lset_t;

static void lset_free(rstore_t *st, lset_t *x) {
  xfree(st, x->text);
  xfree(st, x->emoji);
  xfree(st, x);
}

static void settings_observe(rstore_t *st, const presence_event_t *ev) {
  if (!st->settings_up || !ev->user_id ||
      (ev->type != PRESENCE_EV_USER_AVAILABILITY &&
       ev->type != PRESENCE_EV_USER_MESSAGE))
    return;
  size_t len = strlen(ev->user_id);
  if (len > PRESENCE_ID_MAX) return;
  uint32_t h = presence__hash(ev->user_id, len);
  lset_t *x = presence__table_find(&st->settings, ev->user_id, len, h);
  if (!x) {
    x = xcalloc(st, 1, sizeof(*x) + len + 1);
    if (!x) return; /* not kept: only a store loss would miss it */
    x->key.hash = h;
    x->key.len = (uint8_t)len;
    memcpy(x->id, ev->user_id, len);
    if (presence__table_insert(&st->settings, x)) {
      xfree(st, x);
      return;
    }
  }
  if (ev->type == PRESENCE_EV_USER_AVAILABILITY) {
    x->av = (uint8_t)ev->availability_to;
    x->av_since = ev->ts_ms;
  } else {
    xfree(st, x->text);
    xfree(st, x->emoji);
    x->text = ev->message ? xstrdup(st, ev->message) : NULL;
    x->emoji = ev->emoji ? xstrdup(st, ev->emoji) : NULL;
    x->msg_exp = ev->message_expires_ms;
    x->msg_set = ev->ts_ms;
  }
  if (x->av == PRESENCE_AVAIL_AUTO && !x->text && !x->emoji) {
    presence__table_remove(&st->settings, x);
    lset_free(st, x);
  }
}

static void sresync_step(rstore_t *st);

static void sresync_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (resync_reply(st, r, rep, code)) sresync_step(st);
}

/* The users holding a setting now, copied (the table changes while the
 * batches are in flight), then re-asserted a batch per call. */
static void sresync_start(rstore_t *st) {
  xfree(st, st->sres_ids);
  st->sres_ids = NULL;
  st->sres_len = st->sres_pos = 0;
  size_t need = 0, pos = 0;
  lset_t *x;
  while ((x = presence__table_next(&st->settings, &pos)))
    need += x->key.len + 1u;
  if (need && (st->sres_ids = xmalloc(st, need))) {
    pos = 0;
    while ((x = presence__table_next(&st->settings, &pos))) {
      memcpy(st->sres_ids + st->sres_len, x->id, x->key.len + 1u);
      st->sres_len += x->key.len + 1u;
    }
  }
  sresync_step(st);
}

#define SRES_ARGS 7
static void sresync_step(rstore_t *st) {
  uint32_t batch = st->o.batch;
  const char **args = xmalloc(st, (1 + SRES_ARGS * (size_t)batch) * sizeof(*args));
  char(*nums)[24] = xmalloc(st, 4 * (size_t)batch * sizeof(*nums));
  char **strs = xcalloc(st, 2 * (size_t)batch, sizeof(*strs));
  uint32_t n = 0;
  while (args && nums && strs && st->sres_pos < st->sres_len && n < batch) {
    const char *u = st->sres_ids + st->sres_pos;
    size_t len = strlen(u);
    st->sres_pos += len + 1;
    lset_t *x = presence__table_find(&st->settings, u, len,
                                     presence__hash(u, len));
    if (!x) continue;
    size_t b = 1 + SRES_ARGS * (size_t)n;
    /* '-' for none, '=' and the text otherwise, as the 'msg' write. */
    const char *t[2] = {x->text, x->emoji};
    for (int k = 0; k < 2; k++) {
      size_t l = t[k] ? strlen(t[k]) : 0;
      strs[2 * n + k] = xmalloc(st, l + 2);
      if (strs[2 * n + k])
        snprintf(strs[2 * n + k], l + 2, "%s%s", t[k] ? "=" : "-",
                 t[k] ? t[k] : "");
    }
    if (!strs[2 * n] || !strs[2 * n + 1]) break;
    snprintf(nums[4 * n], 24, "%u", (unsigned)x->av);
    snprintf(nums[4 * n + 1], 24, "%lld", (long long)x->av_since);
    snprintf(nums[4 * n + 2], 24, "%lld", (long long)x->msg_exp);
    snprintf(nums[4 * n + 3], 24, "%lld", (long long)x->msg_set);
    args[b] = x->id;
    args[b + 1] = nums[4 * n];
    args[b + 2] = nums[4 * n + 1];
    args[b + 3] = strs[2 * n];
    args[b + 4] = strs[2 * n + 1];
    args[b + 5] = nums[4 * n + 2];
    args[b + 6] = nums[4 * n + 3];
    n++;
  }
  if (n > 0) {
    char count[16];
    snprintf(count, sizeof count, "%u", (unsigned)n);
    args[0] = count;
    req_t *r = req_new(st, sresync_done);
    if (r) call(st, r, "sassert", (int)(1 + SRES_ARGS * n), args, NULL);
  }
  for (size_t i = 0; strs && i < 2 * (size_t)batch; i++) xfree(st, strs[i]);
  xfree(st, strs);
  xfree(st, args);
  xfree(st, nums);
  if (n > 0) return;
  /* All sent (or no memory to send the rest: those are left out, as a
   * write without memory would be): the sessions next (start_resync). */
  xfree(st, st->sres_ids);
  st->sres_ids = NULL;
  st->sres_len = st->sres_pos = 0;
  st->resync_slot = 0;
  resync_step(st);
}

/* ---- the log reader ----------------------------------------------------- */

/* Every instance follows the whole log on its own connection (a blocking
 * XREAD would stall the command connection) and reports each event to
 * host->observe: the cluster-wide fan-out. */
/* The log's entries from one XREAD: each reported to host->observe. A
 * malformed entry is skipped (logged): the next event's number then jumps,
 * which is how every reader learns of a gap. */
/* Whether stream id a ("ms-seq") comes after b; b empty: yes. */
static bool id_after(const char *a, const char *b) {
  if (!b[0]) return true;
  char *ea, *eb;
  unsigned long long am = strtoull(a, &ea, 10), bm = strtoull(b, &eb, 10);
  unsigned long long as = *ea == '-' ? strtoull(ea + 1, NULL, 10) : 0;
  unsigned long long bs = *eb == '-' ? strtoull(eb + 1, NULL, 10) : 0;
  return am > bm || (am == bm && as > bs);
}

static void read_log_entries(rstore_t *st, redisReply *entries) {
  presence__redis_events_t evs = {.alloc = st->h.allocator};
  for (size_t i = 0; i < entries->elements && !st->destroying; i++) {
    redisReply *e = entries->element[i];
    presence__redis_events_clear(&evs);
    const char *id = text_of(at(e, 0));
    /* Read already (a feed overlapping this store's own reader): once. */
    if (id && !id_after(id, st->r_last)) continue;
    if (id) snprintf(st->r_last, sizeof st->r_last, "%s", id);
    uint64_t mark;
    if (presence__route_marker(e, &mark)) { /* from the machine's reader */
      if (mark > st->last_seq) st->last_seq = mark;
      continue;
    }
    /* The machine's reader routes each entry to its followers by their
     * interest, and tells which events its own host wants. */
    const uint8_t *want = NULL;
    if (st->route ? presence__route_entry(st->route, e, st->h.instance_id,
                                          &evs, &want)
                  : presence__redis_decode_entry(e, st->h.instance_id,
                                                 &evs)) {
      logf_(st, PRESENCE_LOG_ERROR, "redis reader: malformed log entry", id);
      continue;
    }
    for (size_t j = 0; j < evs.n && !st->destroying; j++) {
      if (evs.ev[j].seq > st->last_seq) st->last_seq = evs.ev[j].seq;
      settings_observe(st, &evs.ev[j]);
      if (!want || want[j]) st->h.observe(st->h.host_ud, &evs.ev[j]);
    }
  }
  presence__redis_events_free(&evs);
}

/* An origin's claim by another instance: {"o", name, "n", counter, "i",
 * claimer} (redis_lease.c); this instance's own claims are not told. */
static void read_origin_claim(rstore_t *st, redisReply *f) {
  const char *name = text_of(at(f, 1)), *n = text_of(at(f, 3)),
             *by = text_of(at(f, 5));
  if (!name || !n || !by || !st->origin_fn || !strcmp(by, st->h.instance_id))
    return;
  char *end;
  unsigned long long v = strtoull(n, &end, 10);
  if (*n && !*end && v) st->origin_fn(st->origin_ud, name, v);
}

/* Kick requests: entries {id, {"s", session id}}; origin claims. */
static void read_kicks(rstore_t *st, redisReply *entries) {
  for (size_t i = 0; i < entries->elements && !st->destroying; i++) {
    redisReply *e = entries->element[i];
    const char *id = text_of(at(e, 0));
    if (!id || !id_after(id, st->k_last)) continue;
    snprintf(st->k_last, sizeof st->k_last, "%s", id);
    redisReply *f = at(e, 1);
    const char *field = text_of(at(f, 0));
    if (field && !strcmp(field, "o")) {
      read_origin_claim(st, f);
      continue;
    }
    const char *sid = text_of(at(f, 1));
    if (sid && st->kick_fn) st->kick_fn(st->kick_ud, sid);
  }
}

/* One XREAD reply, {{stream, entries}, ...}: read from Redis, or given by
 * the worker that reads for this machine (redis_feed.c). */
static void take_xread(void *ud, redisReply *rep) {
  rstore_t *st = ud;
  for (size_t i = 0; !st->destroying && at(rep, i); i++) {
    const char *name = text_of(at(at(rep, i), 0));
    redisReply *entries = at(at(rep, i), 1);
    if (!name || !entries || entries->type != REDIS_REPLY_ARRAY) continue;
    if (!strcmp(name, st->log_key)) {
      read_log_entries(st, entries);
    } else if (!strcmp(name, st->kick_key)) {
      if (st->route) presence__route_kicks(st->route, at(rep, i));
      read_kicks(st, entries);
    }
  }
}

static void on_xread(void *ud, int code, redisReply *rep) {
  rstore_t *st = ud;
  st->r_waiting = false;
  (void)code;
  if (!rep || st->destroying) return; /* the connection comes back up */
  if (rep->type == REDIS_REPLY_ERROR) {
    if (cluster_redirect(st, rep)) {
      presence__rconn_drop(st->rconn, PRESENCE_ESTORE);
      return;
    }
    if (cluster_busy(st, rep)) {
      /* The slot migrates (the log and kick streams move with it): read
       * again shortly, from the source until MOVED names the target. */
      uv_timer_start(&st->hs->t[T_READER], on_timer, 50, 0);
      return;
    }
    /* Not a transport failure (NOPERM, a wrong type): asking again at once
     * would spin. */
    logf_(st, PRESENCE_LOG_ERROR, "redis reader:", rep->str);
    uv_timer_start(&st->hs->t[T_READER], on_timer, st->o.reconnect_max_ms, 0);
    return;
  }
  /* nil when the block time passed with nothing new. */
  const char *raw;
  size_t n;
  /* A read that timed out (nil) is routed too: it holds nothing, but it
   * tells an idle follower where the log ends (a marker at most every
   * 100 ms), so the follower's catch-up check passes on a quiet log (a
   * shard nobody writes to) and it stops reading the log itself. */
  bool routed = st->route && (rep->type == REDIS_REPLY_ARRAY ||
                              rep->type == REDIS_REPLY_NIL);
  if (routed)
    presence__route_begin(st->route, st->r_last);
  else if (st->feed && rep->type == REDIS_REPLY_ARRAY &&
           !presence__rconn_raw(st->rconn, &raw, &n))
    presence__rfeed_forward(st->feed, raw, n);
  take_xread(st, rep);
  if (st->destroying) return;
  if (routed)
    presence__route_end(st->route, st->feed, st->log_key, st->r_last,
                        uv_now(st->o.loop));
  start_reader(st);
}

/* A reply from the machine's reader. The feed starts where worker 1
 * registered, which may be after this store did: until a fed reply is seen
 * to overlap what this store's own reader read (its first entry at or
 * before r_last), the own reader goes on and the feed is ignored; from
 * then on the feed alone (entries read already are skipped by id). */
static void feed_reply(void *ud, redisReply *rep) {
  rstore_t *st = ud;
  if (st->destroying || !st->reader_started) return;
  if (!st->feed_synced) {
    const char *first = NULL;
    for (size_t i = 0; at(rep, i) && !first; i++) {
      const char *name = text_of(at(at(rep, i), 0));
      if (name && !strcmp(name, st->log_key))
        first = text_of(at(at(at(at(rep, i), 1), 0), 0));
    }
    if (!first || id_after(first, st->r_last)) return;
    st->feed_synced = true;
    if (st->rconn) { /* its blocked XREAD fails inside, unread */
      presence__rconn_t *r = st->rconn;
      st->rconn = NULL;
      st->rup = st->r_waiting = st->k_known = false;
      presence__rconn_free(r);
    }
  }
  take_xread(st, rep);
}

/* The feed ended (its reader died or cut this worker off): read the log
 * from Redis, from the last entry the feed gave. */
static void feed_ended(void *ud) {
  rstore_t *st = ud;
  st->feed_synced = false;
  if (st->destroying) return;
  logf_(st, PRESENCE_LOG_INFO,
        "redis reader: the machine's log feed ended; reading the log itself",
        NULL);
  start_reader(st);
}

/* Where the kick stream ends now: the reader follows kicks asked after it
 * connected, not those of before. */
static void on_kick_tail(void *ud, int code, redisReply *rep) {
  rstore_t *st = ud;
  st->r_waiting = false;
  if (!rep || st->destroying) return;
  (void)code;
  const char *id = text_of(at(at(rep, 0), 0));
  if (rep->type == REDIS_REPLY_ERROR) {
    logf_(st, PRESENCE_LOG_ERROR, "redis reader:", rep->str);
    uv_timer_start(&st->hs->t[T_READER], on_timer, st->o.reconnect_max_ms, 0);
    return;
  }
  snprintf(st->k_last, sizeof st->k_last, "%s", id ? id : "0-0");
  st->k_known = true;
  start_reader(st);
}

static void start_reader(rstore_t *st) {
  if (st->destroying || !st->h.observe || !st->reader_started) return;
  if (st->feed_synced && presence__rfeed_reading(st->feed))
    return; /* another worker reads */
  if (!st->rconn) {
    if (conn_new(st, "redis reader", true, &st->rconn)) {
      uv_timer_start(&st->hs->t[T_READER], on_timer, st->o.reconnect_max_ms,
                     0);
      return;
    }
    presence__rconn_start(st->rconn);
    return; /* reader_up comes back here */
  }
  if (!st->rup || st->r_waiting) return;
  /* Only a reader that has never read the kick stream starts at its end;
   * one that has goes on from the last kick it read, so a kick asked while
   * its connection was down is acted on once it is back (the stream keeps
   * the last thousand for that). */
  bool kicks = st->kick_fn || st->origin_fn;
  if (kicks && !st->k_known && !st->k_last[0]) {
    const char *args[] = {"XREVRANGE", st->kick_key, "+", "-", "COUNT", "1"};
    if (!presence__rconn_command(st->rconn, 6, args, NULL, 0, on_kick_tail,
                                 st))
      st->r_waiting = true;
    return;
  }
  char block[16];
  snprintf(block, sizeof block, "%u", (unsigned)st->o.stream_block_ms);
  const char *args[] = {"XREAD",     "BLOCK",     block,       "COUNT",
                        "64",        "STREAMS",   st->log_key, st->kick_key,
                        st->r_last,  st->k_last};
  const char *log_only[] = {"XREAD",   "BLOCK",     block,      "COUNT",
                            "64",      "STREAMS",   st->log_key, st->r_last};
  if (!presence__rconn_command(
          st->rconn, kicks ? 10 : 8, kicks ? args : log_only, NULL,
          st->o.stream_block_ms + st->o.command_timeout_ms, on_xread, st))
    st->r_waiting = true;
}

/* ---- periodic work ------------------------------------------------------ */

static void hb_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  st->hb_busy = false;
  if (st->destroying || code || !rep) return;
  if (script_code(rep)) return;
  const char *res = payload_str(rep);
  if (!strcmp(res, "ok") && rep->elements > 2 &&
      rep->element[2]->type == REDIS_REPLY_STRING) {
    /* A lease runs out before the next heartbeat: try to claim it right
     * after, so a dead instance's sessions go within moments of its lease
     * expiring rather than up to a heartbeat later. */
    long long ms = strtoll(rep->element[2]->str, NULL, 10);
    if (ms >= 0 && ms < (long long)st->o.heartbeat_ms)
      uv_timer_start(&st->hs->t[T_CLAIM], on_timer, (uint64_t)ms + 2, 0);
    /* The shard's first deadline (offline grace, message expiry), from
     * whichever instance set it: polled then, so one set by an instance
     * that died is still met (at most a heartbeat late). */
    redisReply *g = rep->elements > 4 ? rep->element[4] : NULL;
    long long due = g && g->type == REDIS_REPLY_STRING
                        ? strtoll(g->str, NULL, 10)
                        : -1;
    if (due >= 0 && st->phase == PH_READY)
      grace_arm(st, due ? (uint64_t)due + 1 : 0);
    redisReply *c = rep->elements > 3 ? rep->element[3] : NULL;
    if (c && c->type == REDIS_REPLY_ARRAY && c->elements == 3 &&
        c->element[0]->type == REDIS_REPLY_STRING &&
        c->element[1]->type == REDIS_REPLY_STRING &&
        c->element[2]->type == REDIS_REPLY_STRING) {
      st->cluster.users_present = strtoull(c->element[0]->str, NULL, 10);
      st->cluster.sessions = strtoull(c->element[1]->str, NULL, 10);
      st->cluster.instances = (uint32_t)strtoul(c->element[2]->str, NULL, 10);
      st->cluster.sampled_mono_ms = mono(st);
    }
  }
  if (strcmp(res, "ok") != 0 && r->epoch_gen == st->epoch_gen && !st->leaving) {
    /* The lease ran out, the epoch was superseded, or Redis lost the
     * instance (flushed or restarted empty): a new epoch, then re-assert. */
    logf_(st, PRESENCE_LOG_WARN, "redis: registering again, lease", res);
    st->phase = PH_NONE;
    start_register(st);
  }
}

static void reap_claim(rstore_t *st);

static void reap_end(rstore_t *st) {
  st->reaping = false;
  st->reap_more = false;
  xfree(st, st->reap_ids);
  st->reap_ids = NULL;
  st->reap_ids_len = st->reap_ids_cap = 0;
}

/* The cleanup event of a finished reap, for this instance's callbacks: the
 * log's copy has no ids, the reaper has them all (read back in pages). */
static const char **attach_reap_ids(rstore_t *st, presence_event_t *ev) {
  if (ev->type != PRESENCE_EV_CLEANUP ||
      !(ev->flags & PRESENCE_EVENT_IDS_OMITTED) || !st->reap_ids)
    return NULL;
  /* Newline-separated, each id ending with one. */
  size_t n = 0;
  for (size_t j = 0; j < st->reap_ids_len; j++)
    n += st->reap_ids[j] == '\n';
  const char **arr = xmalloc(st, (n ? n : 1) * sizeof(*arr));
  if (!arr) return NULL;
  size_t k = 0;
  char *at = st->reap_ids;
  for (size_t j = 0; j < st->reap_ids_len; j++) {
    if (st->reap_ids[j] == '\n') {
      st->reap_ids[j] = '\0';
      arr[k++] = at;
      at = st->reap_ids + j + 1;
    }
  }
  ev->session_ids = arr;
  ev->n_session_ids = n;
  ev->flags &= ~PRESENCE_EVENT_IDS_OMITTED;
  return arr;
}

static void reap_fin_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  (void)r;
  if (st->destroying) return;
  if (!code && rep) code = script_code(rep);
  if (!code) emit_reply(st, rep, true);
  reap_end(st);
  if (!code && st->phase == PH_READY && !st->paused) reap_claim(st);
}

/* Read the removed ids a page at a time (LRANGE of reapids:<dead>, one
 * element per reap call, ~100-300 ids each), each page a short command,
 * then end the reap. */
#define REAP_IDS_CHUNKS 64
#define REAP_IDS_CAP0 (256 * 1024)
static void reap_ids_next(rstore_t *st);

static void reap_finish(rstore_t *st) {
  req_t *n = req_new(st, reap_fin_done);
  if (!n) {
    reap_end(st);
    return;
  }
  size_t count = 0;
  for (size_t j = 0; j < st->reap_ids_len; j++)
    count += st->reap_ids[j] == '\n';
  char cnt[24];
  snprintf(cnt, sizeof cnt, "%zu", count);
  const char *args[] = {st->reap_dead, cnt};
  call(st, n, "reap_done", 2, args, NULL);
}

/* Newline-terminated ids from src (n bytes) to dst, each in its text (a
 * UUID's 20-byte form made text); returns the bytes written, at most 2n. */
static size_t ids_text(char *dst, const char *src, size_t n) {
  size_t o = 0;
  const char *end = src + n;
  while (src < end) {
    const char *nl = memchr(src, '\n', (size_t)(end - src));
    size_t l = nl ? (size_t)(nl - src) : (size_t)(end - src);
    if (!sid20_text(src, l, dst + o)) {
      memcpy(dst + o, src, l);
      o += l;
    } else {
      o += 36;
    }
    if (nl) dst[o++] = '\n';
    src += l + (nl ? 1 : 0);
  }
  return o;
}

static void reap_ids_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  (void)r;
  if (st->destroying) return;
  if (code || !rep || rep->type != REDIS_REPLY_ARRAY) {
    reap_end(st); /* the claim runs out; a later claim starts again */
    return;
  }
  for (size_t i = 0; i < rep->elements; i++) {
    redisReply *c = rep->element[i];
    if (c->type != REDIS_REPLY_STRING || !c->len) continue;
    /* Room for the ids' text: a 20-byte form and its newline (21) become
     * 37 bytes. */
    size_t len = c->len * 2;
    if (st->reap_ids_len + len + 1 > st->reap_ids_cap) {
      size_t cap = st->reap_ids_cap ? st->reap_ids_cap * 2 : REAP_IDS_CAP0;
      while (cap < st->reap_ids_len + len + 1)
        cap *= 2;
      char *b = xrealloc(st, st->reap_ids, cap);
      if (!b) {
        reap_end(st);
        return;
      }
      st->reap_ids = b;
      st->reap_ids_cap = cap;
    }
    st->reap_ids_len += ids_text(st->reap_ids + st->reap_ids_len, c->str,
                                 (size_t)c->len);
    st->reap_ids[st->reap_ids_len] = '\0';
  }
  st->reap_ids_pos += rep->elements;
  if (rep->elements == REAP_IDS_CHUNKS)
    reap_ids_next(st);
  else
    reap_finish(st);
}

static void reap_ids_next(rstore_t *st) {
  req_t *r = req_new(st, reap_ids_done);
  if (!r) {
    reap_end(st);
    return;
  }
  char key[256], from[24], to[24];
  snprintf(key, sizeof key, "%sreapids:%s", st->prefix, st->reap_dead);
  snprintf(from, sizeof from, "%zu", st->reap_ids_pos);
  snprintf(to, sizeof to, "%zu", st->reap_ids_pos + REAP_IDS_CHUNKS - 1);
  const char *args[] = {"LRANGE", key, from, to};
  plain(st, r, 4, args);
}

/* Reap calls kept queued in Redis at once: the cursor lives in Redis, so a
 * second call continues where the first stops, and Redis goes on with the
 * next batch while this side reports the previous one's events. */
#define REAP_INFLIGHT 2

static void reap_fill(rstore_t *st);

static void reap_batch_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (st->destroying) return;
  st->reap_inflight--;
  if (!code && rep) code = script_code(rep);
  if (code == PRESENCE_EFENCED) on_fenced(st, r);
  redisReply *p = !code && rep->elements > 1 ? rep->element[1] : NULL;
  if (!code && (!p || p->type != REDIS_REPLY_ARRAY || p->elements < 2 ||
                p->element[1]->type != REDIS_REPLY_STRING))
    code = PRESENCE_ESTORE;
  if (code) {
    /* The claim runs out; someone (maybe this instance) claims it again. */
    st->reap_failed = true;
  } else if (!strcmp(p->element[1]->str, "1")) {
    st->reap_more = false;
  }
  reap_fill(st); /* ahead of reporting this batch */
  if (!code) emit_events(st, rep);
  if (st->reap_inflight > 0) return;
  if (st->reap_failed) {
    reap_end(st);
    return;
  }
  xfree(st, st->reap_ids);
  st->reap_ids = NULL;
  st->reap_ids_len = st->reap_ids_cap = 0;
  st->reap_ids_pos = 0;
  reap_ids_next(st);
}

static void reap_fill(rstore_t *st) {
  while (st->reap_more && !st->reap_failed &&
         st->reap_inflight < REAP_INFLIGHT) {
    req_t *r = req_new(st, reap_batch_done);
    if (!r) {
      st->reap_failed = true;
      break;
    }
    /* HSCAN pages of the session index, 2 x batch: the script scans as
     * many pages as its time budget (~2 ms a call) allows. */
    char lim[16];
    snprintf(lim, sizeof lim, "%u", (unsigned)st->o.batch * 2);
    const char *args[] = {st->reap_dead, "0", lim};
    st->reap_inflight++;
    call(st, r, "reap", 3, args, NULL);
  }
  if (st->reap_failed && st->reap_inflight == 0) reap_end(st);
}

static void reap_claim_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (st->destroying) return;
  if (!code && rep) code = script_code(rep);
  if (code == PRESENCE_EFENCED) on_fenced(st, r);
  const char *dead = code ? "" : payload_str(rep);
  if (!dead[0]) {
    st->reaping = false;
    return;
  }
  logf_(st, PRESENCE_LOG_INFO, "redis: reaping instance", dead);
  snprintf(st->reap_dead, sizeof st->reap_dead, "%s", dead);
  st->reap_more = true;
  st->reap_failed = false;
  st->reap_inflight = 0;
  reap_fill(st);
}

static void reap_claim(rstore_t *st) {
  req_t *r = req_new(st, reap_claim_done);
  if (!r) return;
  st->reaping = true;
  call(st, r, "reap_claim", 0, NULL, NULL);
}

static void grace_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (st->destroying) return;
  st->grace_busy = false;
  if (!code && rep) code = script_code(rep);
  if (code == PRESENCE_EFENCED) on_fenced(st, r);
  if (code) {
    /* The heartbeat (or the registration that follows) names it again. */
    st->grace_again = false;
    return;
  }
  emit_events(st, rep);
  /* Come back right at the next deadline when it is nearer than the next
   * poll; at once while more is due (a burst of expiries: a millisecond
   * between calls left Redis idle for a third of the burst). */
  long long next = strtoll(payload_str(rep), NULL, 10);
  if (next >= 0) grace_arm(st, next ? (uint64_t)next + 1 : 0);
  /* A deadline armed while this call was in flight may have been set after
   * it ran: asked again. */
  if (st->grace_again) grace_arm(st, 0);
  st->grace_again = false;
}

static void reconcile_step(rstore_t *st);

static void reconcile_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (st->destroying) return;
  if (!code && rep) code = script_code(rep);
  if (code == PRESENCE_EFENCED) on_fenced(st, r);
  if (code) {
    st->reconciling = false;
    return;
  }
  emit_events(st, rep);
  snprintf(st->rec_cursor, sizeof st->rec_cursor, "%s", payload_str(rep));
  if (!strcmp(st->rec_cursor, "0") || !st->rec_cursor[0]) {
    st->reconciling = false;
    return;
  }
  reconcile_step(st);
}

static void reconcile_step(rstore_t *st) {
  req_t *r = req_new(st, reconcile_done);
  if (!r) {
    st->reconciling = false;
    return;
  }
  char lim[16], period[16];
  snprintf(lim, sizeof lim, "%u", (unsigned)st->o.batch);
  /* The period: one instance walks a shard per period (the script's
   * recon key), the others are told the pass is done. */
  snprintf(period, sizeof period, "%u", (unsigned)st->o.reconcile_ms);
  const char *args[] = {st->rec_cursor, lim, period};
  call(st, r, "reconcile", 3, args, NULL);
}

static void on_timer(uv_timer_t *t) {
  handles_t *hs = t->data;
  rstore_t *st = hs->st;
  if (!st) return;
  int which = (int)(t - hs->t);
  switch (which) {
  case T_SOON:
    run_soon(st);
    break;
  case T_FLUSH:
    if (st->inflight && st->up && !st->flush_now) {
      st->flush_held = true; /* the next answer sends them (on_reply) */
      break;
    }
    st->flush_now = false;
    flush_writes(st);
    flush_queries(st);
    break;
  case T_RETRY:
    if (!st->moving) resend_held(st);
    break;
  case T_READER:
    start_reader(st);
    break;
  case T_HB:
    if (st->paused || !st->up) break;
    /* A registration Redis refused (an error reply: data of another
     * layout, a script error) is tried again at every heartbeat. */
    if (st->phase == PH_NONE && st->loaded) {
      start_register(st);
      break;
    }
    if (st->phase >= PH_WIPING && !st->hb_busy) {
      req_t *r = req_new(st, hb_done);
      if (r) {
        st->hb_busy = true;
        call(st, r, "hb", 0, NULL, NULL);
      }
      measure_clock(st); /* a host's clock may be stepped at any time */
    }
    /* No claim here: the heartbeat's answer says when a lease or a claim
     * runs out, and T_CLAIM fires then (hb_done). */
    break;
  case T_CLAIM:
    if (!st->paused && st->up && st->phase == PH_READY && !st->reaping)
      reap_claim(st);
    break;
  case T_GRACE:
    if (st->grace_busy) {
      st->grace_again = true;
      break;
    }
    if (st->paused) {
      grace_arm(st, 250); /* held until the test lets it go */
      break;
    }
    if (st->phase != PH_READY) break; /* set_ready polls */
    {
      req_t *r = req_new(st, grace_done);
      if (!r) break;
      st->grace_busy = true;
      char lim[16];
      snprintf(lim, sizeof lim, "%u", (unsigned)st->o.batch);
      const char *args[] = {lim};
      call(st, r, "grace", 1, args, NULL);
    }
    break;
  case T_RECONCILE:
    if (st->paused || st->phase != PH_READY || st->reconciling) break;
    st->reconciling = true;
    snprintf(st->rec_cursor, sizeof st->rec_cursor, "0");
    reconcile_step(st);
    break;
  default:
    break;
  }
}

/* ---- queries ------------------------------------------------------------ */

static bool can_read(rstore_t *st) {
  return st->up && st->loaded && st->phase != PH_LOADING;
}

/* A user query's reply {0, {status, sessions, online, version, since, last
 * seen, Redis's now}}: all numbers, or the reply is not the script's. */
int presence__redis_user_reply(const redisReply *rep,
                               presence_user_info_t *info) {
  int code = script_code((redisReply *)rep);
  redisReply *p = code ? NULL : at(rep, 1);
  long long f[7];
  for (size_t i = 0; !code && i < 7; i++)
    if (num_of(at(p, i), &f[i]) || (i < 4 && f[i] < 0))
      code = PRESENCE_ESTORE;
  if (code) return code;
  info->status = st_of_n((long)f[0]);
  info->session_count = (uint32_t)f[1];
  info->online_count = (uint32_t)f[2];
  info->version = (uint64_t)f[3];
  info->since_ms = f[4];
  info->last_seen_ms = f[5];
  /* A present user is being seen now (Redis's now). */
  if (info->status != PRESENCE_OFFLINE) info->last_seen_ms = f[6];
  /* Then what the person set (a reply of an older script stops here):
   * availability, since, text, emoji ('=' text or '' for none), expiry,
   * set time. The strings point into the reply. */
  if (p->elements >= 13) {
    long long av, as, exp, set;
    const redisReply *t = at(p, 9), *e = at(p, 10);
    if (num_of(at(p, 7), &av) || av < 0 || av >= PRESENCE_AVAIL_COUNT_ ||
        num_of(at(p, 8), &as) || num_of(at(p, 11), &exp) ||
        num_of(at(p, 12), &set) || !t || t->type != REDIS_REPLY_STRING ||
        !e || e->type != REDIS_REPLY_STRING)
      return PRESENCE_ESTORE;
    info->availability = (presence_availability_t)av;
    info->availability_since_ms = as;
    info->message = t->len ? t->str + 1 : NULL;
    info->emoji = e->len ? e->str + 1 : NULL;
    info->message_expires_ms = exp;
    info->message_set_ms = (info->message || info->emoji) ? set : 0;
  }
  /* Then last active, the shown version and the number of devices (the
   * devices themselves: user_devices). */
  if (p->elements >= 16) {
    long long la, sv, nd;
    if (num_of(at(p, 13), &la) || num_of(at(p, 14), &sv) || sv < 0 ||
        num_of(at(p, 15), &nd) || nd < 0 ||
        (size_t)nd > (p->elements - 16) / 3)
      return PRESENCE_ESTORE;
    info->last_active_ms = la;
    info->shown_version = (uint64_t)sv;
    /* Then, after the devices, the veil (0 0: none; a reply of an older
     * script has none). */
    long long vf, vt;
    size_t b = 16 + 3 * (size_t)nd;
    if (p->elements >= b + 2) {
      if (num_of(at(p, b), &vf) || num_of(at(p, b + 1), &vt))
        return PRESENCE_ESTORE;
      info->veil_from_ms = vf;
      info->veil_to_ms = vt;
    }
  }
  return 0;
}

/* The devices of a user reply that presence__redis_user_reply accepted:
 * name, best status, sessions each, into d (at most cap; the names point
 * into the reply). */
static int user_devices(const redisReply *rep, presence_device_status_t *d,
                        size_t cap, size_t *n) {
  redisReply *p = at(rep, 1);
  long long nd;
  *n = 0;
  if (!p || p->elements < 16 || num_of(at(p, 15), &nd)) return 0;
  for (size_t i = 0; i < (size_t)nd && *n < cap; i++) {
    const redisReply *name = at(p, 16 + 3 * i);
    long long stv, cnt;
    if (!name || name->type != REDIS_REPLY_STRING ||
        num_of(at(p, 17 + 3 * i), &stv) || num_of(at(p, 18 + 3 * i), &cnt) ||
        cnt < 0)
      return PRESENCE_ESTORE;
    d[*n].device = name->str;
    d[*n].status = st_of_n((long)stv);
    d[*n].session_count = (uint32_t)cnt;
    (*n)++;
  }
  return 0;
}

static void user_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  (void)st;
  presence_user_info_t info = {0};
  presence_device_status_t devs[32];
  size_t nd = 0;
  info.user_id = r->user;
  if (!code && rep) code = presence__redis_user_reply(rep, &info);
  if (!code && rep) code = user_devices(rep, devs, 32, &nd);
  info.devices = nd ? devs : NULL;
  info.n_devices = nd;
  r->user_cb(r->ud, code, code ? NULL : &info);
}

static int r_user_query(presence_store_t *base, const char *user_id,
                        void (*cb)(void *, int, const presence_user_info_t *),
                        void *ud) {
  rstore_t *st = (rstore_t *)base;
  if (!can_read(st)) return PRESENCE_ESTORE;
  req_t *r = req_new(st, user_done);
  if (!r) return PRESENCE_ENOMEM;
  r->user_cb = cb;
  r->ud = ud;
  snprintf(r->user, sizeof r->user, "%s", user_id);
  const char *args[] = {r->user, "", ""};
  queue_query(st, r, "q_user", args, 1);
  return 0;
}

/* The script's meta field: '@' device '\t' (not the default device), then
 * '=' meta or nothing. Ends the device in place. */
static void split_meta(char *m, const char **device, const char **meta) {
  *device = PRESENCE_DEVICE_DEFAULT;
  if (m[0] == '@') {
    char *tab = strchr(m, '\t');
    if (tab) {
      *tab = '\0';
      *device = m + 1;
      m = tab + 1;
    }
  }
  *meta = m[0] == '=' ? m + 1 : NULL;
}

/* A session id a reply holds, as text: out when it is a UUID's 20-byte
 * form (made text there), else the reply's own string. */
static const char *sid_in(const redisReply *e, char out[37]) {
  return sid20_text(e->str, e->len, out) ? out : e->str;
}

/* A session record: owner, epoch, status, reason, connected, since,
 * '=' meta or nothing. Splits rec in place. */
static void parse_rec(char *rec, const char *sid, const char *user,
                      presence_session_info_t *o) {
  char *f[7] = {0};
  int n = 0;
  f[n++] = rec;
  for (char *c = rec; *c && n < 7; c++) {
    if (*c == '\t') {
      *c = '\0';
      f[n++] = c + 1;
    }
  }
  memset(o, 0, sizeof(*o));
  o->session_id = sid;
  o->user_id = user;
  if (n < 7) return;
  o->instance_id = f[0];
  o->status = st_of(f[2]);
  o->status_reason = (presence_reason_t)strtol(f[3], NULL, 10);
  o->connected_ms = strtoll(f[4], NULL, 10);
  o->status_since_ms = strtoll(f[5], NULL, 10);
  split_meta(f[6], &o->device, &o->meta);
}

static void sessions_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (!code && rep) code = script_code(rep);
  redisReply *p = code ? NULL : at(rep, 1);
  if (!code && (!p || p->type != REDIS_REPLY_ARRAY)) code = PRESENCE_ESTORE;
  if (code) {
    r->sessions_cb(r->ud, code, NULL, 0);
    return;
  }
  size_t n = p->elements / 2;
  for (size_t i = 0; i < 2 * n; i++)
    if (!text_of(p->element[i])) {
      r->sessions_cb(r->ud, PRESENCE_ESTORE, NULL, 0);
      return;
    }
  /* After the infos, a text's room for each (sid_in). */
  presence_session_info_t *v = xcalloc(st, n ? n : 1, sizeof(*v) + 37);
  if (!v) {
    r->sessions_cb(r->ud, PRESENCE_ENOMEM, NULL, 0);
    return;
  }
  char(*texts)[37] = (char(*)[37])(void *)(v + (n ? n : 1));
  for (size_t i = 0; i < n; i++)
    parse_rec(p->element[2 * i + 1]->str, sid_in(p->element[2 * i], texts[i]),
              r->user, &v[i]);
  r->sessions_cb(r->ud, 0, v, n);
  xfree(st, v);
}

static int r_sessions_query(presence_store_t *base, const char *user_id,
                            void (*cb)(void *, int,
                                       const presence_session_info_t *, size_t),
                            void *ud) {
  rstore_t *st = (rstore_t *)base;
  if (!can_read(st)) return PRESENCE_ESTORE;
  req_t *r = req_new(st, sessions_done);
  if (!r) return PRESENCE_ENOMEM;
  r->sessions_cb = cb;
  r->ud = ud;
  snprintf(r->user, sizeof r->user, "%s", user_id);
  const char *args[] = {r->user};
  call(st, r, "q_sessions", 1, args, NULL);
  return 0;
}

static int r_session_get(presence_store_t *base, const char *session_id,
                         presence_session_info_t *out) {
  rstore_t *st = (rstore_t *)base;
  lsess_t *s = find_local(st, session_id, strlen(session_id));
  if (!s) return PRESENCE_ENOSESSION;
  memset(out, 0, sizeof(*out));
  out->session_id = s->id;
  out->user_id = s->user;
  /* s->meta as the script keeps it ('@' device '\t', then '=' meta): the
   * meta points into it, the device is copied out (the store's buffer,
   * valid until the next call), the default unless prefixed. */
  out->meta = NULL;
  out->device = PRESENCE_DEVICE_DEFAULT;
  if (s->meta) {
    const char *m = s->meta;
    if (m[0] == '@') {
      const char *tab = strchr(m, '\t');
      size_t dl = tab ? (size_t)(tab - m - 1) : 0;
      if (tab && dl < sizeof st->dev_scratch) {
        memcpy(st->dev_scratch, m + 1, dl);
        st->dev_scratch[dl] = '\0';
        out->device = st->dev_scratch;
      }
      m = tab ? tab + 1 : m + strlen(m);
    }
    out->meta = m[0] == '=' ? m + 1 : NULL;
  }
  out->instance_id = st->h.instance_id;
  out->status = (presence_status_t)s->key.spare[S_STATUS];
  out->status_reason = (presence_reason_t)s->key.spare[S_REASON];
  out->connected_ms = s->connected_ms;
  return 0;
}

/* ---- channel queries --------------------------------------------------- */

static bool all_strings(const redisReply *p) {
  for (size_t i = 0; i < p->elements; i++)
    if (p->element[i]->type != REDIS_REPLY_STRING) return false;
  return true;
}

/* A query's payload: an array of at least min strings, or NULL with *code
 * set (the script's error, or ESTORE for a malformed reply). */
static redisReply *string_payload(redisReply *rep, int *code, size_t min) {
  if (!*code && rep) *code = script_code(rep);
  redisReply *p = !*code && rep->elements > 1 ? rep->element[1] : NULL;
  if (!*code && (!p || p->type != REDIS_REPLY_ARRAY || p->elements < min ||
                 !all_strings(p)))
    *code = PRESENCE_ESTORE;
  return *code ? NULL : p;
}

/* Send a channel query: op with (a, after or "", limit); batched: through
 * the query batch (a listing of members, weighed by its limit). */
static int send_query(rstore_t *st, req_fn fn, const char *op, const char *a,
                      const char *after, size_t limit, bool batched,
                      req_t **out) {
  if (!can_read(st)) return PRESENCE_ESTORE;
  req_t *r = req_new(st, fn);
  if (!r) return PRESENCE_ENOMEM;
  *out = r;
  char lim[24];
  snprintf(lim, sizeof lim, "%zu", limit);
  const char *args[] = {a, after ? after : "", lim};
  if (batched)
    queue_query(st, r, op, args,
                limit < QB_WEIGHT ? (uint32_t)limit : QB_WEIGHT);
  else
    call(st, r, op, 3, args, NULL);
  return 0;
}

static const char *opt_data(const redisReply *e) {
  return e->str[0] == '=' ? e->str + 1 : NULL;
}

/* Members from the reply's fields at *i (see member_reply in the script),
 * n of them (or as many as there are when n is SIZE_MAX, each preceded by
 * its channel); the metas go to one array. Returns 0 or ESTORE. */
static int parse_members(rstore_t *st, const redisReply *p, size_t *i, size_t n,
                         const char *channel, presence_member_info_t **out,
                         size_t *out_n, presence_member_meta_t **metas) {
  bool with_channel = n == SIZE_MAX;
  size_t cap = p->elements / 6 + 1, mcap = p->elements / 4 + 1;
  *out = xcalloc(st, cap, sizeof(**out));
  /* After the metas, a text's room for each (sid_in). */
  *metas = xcalloc(st, mcap, sizeof(**metas) + 37);
  *out_n = 0;
  if (!*out || !*metas) return PRESENCE_ENOMEM;
  char(*texts)[37] = (char(*)[37])(void *)(*metas + mcap);
  size_t nm = 0;
  for (size_t k = 0; k < n && *i < p->elements; k++) {
    presence_member_info_t *m = &(*out)[(*out_n)++];
    if (with_channel) channel = p->element[(*i)++]->str;
    if (*i + 6 > p->elements) return PRESENCE_ESTORE;
    m->channel = channel;
    m->user_id = p->element[*i]->str;
    /* The member's status + 4 * the user's availability (member_reply). */
    long sv = strtol(p->element[*i + 1]->str, NULL, 10);
    m->status = st_of_n(sv & 3);
    m->availability = (presence_availability_t)((sv >> 2) & 3);
    /* 'v/sv' or 'v/sv/shown count' (member_reply). */
    char *e = NULL;
    m->version = strtoull(p->element[*i + 2]->str, &e, 10);
    if (*e == '/') m->shown_version = strtoull(e + 1, &e, 10);
    if (*e == '/') m->channel_shown_count = strtoull(e + 1, &e, 10);
    /* 'since' or 'since/veil end' (member_reply: the user left invisible
     * after it became a member). */
    m->since_ms = strtoll(p->element[*i + 3]->str, &e, 10);
    if (*e == '/') m->veil_to_ms = strtoll(e + 1, NULL, 10);
    m->data = opt_data(p->element[*i + 4]);
    size_t ns = strtoul(p->element[*i + 5]->str, NULL, 10);
    *i += 6;
    if (ns > (p->elements - *i) / 4 || nm + ns > mcap) return PRESENCE_ESTORE;
    m->session_count = (uint32_t)ns;
    m->metas = *metas + nm;
    m->n_metas = ns;
    for (size_t j = 0; j < ns; j++, nm++) {
      presence_member_meta_t *t = &(*metas)[nm];
      t->session_id = sid_in(p->element[*i], texts[nm]);
      t->status = st_of(p->element[*i + 1]->str);
      t->joined_ms = strtoll(p->element[*i + 2]->str, NULL, 10);
      t->data = opt_data(p->element[*i + 3]);
      *i += 4;
    }
  }
  return 0;
}

static void members_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  redisReply *p = string_payload(rep, &code, 3);
  presence_member_info_t *m = NULL;
  presence_member_meta_t *metas = NULL;
  size_t n = 0, i = 3;
  if (!code)
    code = parse_members(st, p, &i, strtoul(p->element[2]->str, NULL, 10),
                         (const char *)r->cmd_ch, &m, &n, &metas);
  if (code) {
    r->members_cb(r->ud, code, NULL, 0, 0, NULL);
  } else {
    bool more = p->element[1]->str[0] == '1';
    r->members_cb(r->ud, 0, m, n, strtoull(p->element[0]->str, NULL, 10),
                  more && n ? m[n - 1].user_id : NULL);
  }
  xfree(st, m);
  xfree(st, metas);
}

typedef void (*members_fn)(void *, int, const presence_member_info_t *, size_t,
                           uint64_t, const char *);

/* op: q_members, or q_mbrief (the members without their sessions). */
static int members_query(rstore_t *st, const char *op, const char *channel,
                         const char *after, size_t limit, members_fn cb,
                         void *ud) {
  char *ch = xstrdup(st, channel);
  if (!ch) return PRESENCE_ENOMEM;
  req_t *r = NULL;
  int rc = send_query(st, members_done, op, channel, after, limit, true, &r);
  if (rc) {
    xfree(st, ch);
    return rc;
  }
  r->cmd_ch = ch;
  r->members_cb = cb;
  r->ud = ud;
  return 0;
}

static int r_channel_members(presence_store_t *base, const char *channel,
                             const char *after, size_t limit, members_fn cb,
                             void *ud) {
  return members_query((rstore_t *)base, "q_members", channel, after, limit,
                       cb, ud);
}

static int r_channel_members_brief(presence_store_t *base, const char *channel,
                                   const char *after, size_t limit,
                                   members_fn cb, void *ud) {
  return members_query((rstore_t *)base, "q_mbrief", channel, after, limit,
                       cb, ud);
}

static void channels_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  redisReply *p = string_payload(rep, &code, 1);
  if (!code && p->elements % 2 != 1) code = PRESENCE_ESTORE;
  if (code) {
    r->channels_cb(r->ud, code, NULL, 0, NULL);
    return;
  }
  size_t n = p->elements / 2;
  presence_channel_info_t *v = xcalloc(st, n ? n : 1, sizeof(*v));
  if (!v) {
    r->channels_cb(r->ud, PRESENCE_ENOMEM, NULL, 0, NULL);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    v[i].channel = p->element[1 + 2 * i]->str;
    /* 'count/shown count' (q_chans). */
    char *e = NULL;
    v[i].count = strtoull(p->element[2 + 2 * i]->str, &e, 10);
    if (*e == '/') v[i].shown_count = strtoull(e + 1, NULL, 10);
  }
  bool more = p->element[0]->str[0] == '1';
  r->channels_cb(r->ud, 0, v, n, more && n ? v[n - 1].channel : NULL);
  xfree(st, v);
}

static int r_channels_list(presence_store_t *base, const char *prefix,
                           const char *after, size_t limit,
                           void (*cb)(void *, int,
                                      const presence_channel_info_t *, size_t,
                                      const char *),
                           void *ud) {
  req_t *r = NULL;
  int rc = send_query((rstore_t *)base, channels_done, "q_chans", prefix,
                      after, limit, false, &r);
  if (rc) return rc;
  r->channels_cb = cb;
  r->ud = ud;
  return 0;
}

static void uchans_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  redisReply *p = string_payload(rep, &code, 1);
  presence_member_info_t *m = NULL;
  presence_member_meta_t *metas = NULL;
  size_t n = 0, i = 1;
  if (!code) code = parse_members(st, p, &i, SIZE_MAX, NULL, &m, &n, &metas);
  if (code) r->members_cb(r->ud, code, NULL, 0, 0, NULL);
  else r->members_cb(r->ud, 0, m, n, n, NULL);
  xfree(st, m);
  xfree(st, metas);
}

static int r_user_channels(presence_store_t *base, const char *user_id,
                           void (*cb)(void *, int,
                                      const presence_member_info_t *, size_t,
                                      uint64_t, const char *),
                           void *ud) {
  rstore_t *st = (rstore_t *)base;
  if (!can_read(st)) return PRESENCE_ESTORE;
  req_t *r = req_new(st, uchans_done);
  if (!r) return PRESENCE_ENOMEM;
  r->members_cb = cb;
  r->ud = ud;
  snprintf(r->user, sizeof r->user, "%s", user_id);
  const char *args[] = {r->user};
  call(st, r, "q_uchans", 1, args, NULL);
  return 0;
}

static int r_stats(presence_store_t *base, presence_stats_t *out) {
  rstore_t *st = (rstore_t *)base;
  *out = st->stats;
  out->last_seq = st->last_seq;
  return 0;
}

static void log_read_send(rstore_t *st, req_t *r, uint64_t after_seq);
static void log_newest_done(rstore_t *st, req_t *r, redisReply *rep, int code);

/* A further request of the same log read (same callback, same max); NULL
 * after telling the reader ENOMEM. */
static req_t *log_follow_up(rstore_t *st, req_t *r, req_fn fn,
                            uint64_t after_seq) {
  req_t *q = req_new(st, fn);
  if (!q) {
    r->log_cb(r->ud, PRESENCE_ENOMEM, NULL, 0);
    return NULL;
  }
  q->log_cb = r->log_cb;
  q->ud = r->ud;
  q->after_seq = after_seq;
  q->max = r->max;
  return q;
}

static void log_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (code || !rep || rep->type != REDIS_REPLY_ARRAY) {
    r->log_cb(r->ud, code ? code : PRESENCE_ESTORE, NULL, 0);
    return;
  }
  /* The first entry may begin before after_seq + 1 (an entry holds all the
   * events of one call): those are skipped. */
  presence__redis_events_t evs = {.alloc = st->h.allocator};
  int status = 0;
  size_t from = 0, ne;
  /* Decoded only as far as max events after the cursor. */
  for (ne = 0; !status && ne < rep->elements && evs.n - from < r->max; ne++) {
    status =
        presence__redis_decode_entry(rep->element[ne], st->h.instance_id, &evs);
    if (status == PRESENCE_ESTORE) {
      logf_(st, PRESENCE_LOG_ERROR, "redis: malformed log entry", NULL);
      status = 0;
    }
    while (from < evs.n && evs.ev[from].seq <= r->after_seq)
      from++;
  }
  if (status) {
    presence__redis_events_free(&evs);
    r->log_cb(r->ud, status, NULL, 0);
    return;
  }
  if (ne) st->lr_per = evs.n / ne;
  size_t n = evs.n - from;
  if (n > r->max) n = r->max;
  if (!n && !r->from_oldest && r->after_seq > st->last_seq) {
    /* Nothing after a cursor this instance has not seen yet: another
     * instance's reader a moment ahead, or a cursor past the newest event
     * (one from before Redis lost its data), which the memory store answers
     * with ECURSOR and the oldest events. Redis's counter tells which. (A
     * cursor at or below what this instance has seen is simply up to date:
     * no extra request on the common path.) */
    presence__redis_events_free(&evs);
    req_t *q = log_follow_up(st, r, log_newest_done, r->after_seq);
    if (!q) return;
    char key[256];
    snprintf(key, sizeof key, "%sseq", st->prefix);
    const char *args[] = {"GET", key};
    plain(st, q, 2, args);
    return;
  }
  for (size_t i = from; i < from + n; i++)
    if (evs.ev[i].seq > st->last_seq) st->last_seq = evs.ev[i].seq;
  if (r->from_oldest || (n && evs.ev[from].seq > r->after_seq + 1))
    status = PRESENCE_ECURSOR;
  r->log_cb(r->ud, status, n ? evs.ev + from : NULL, n);
  presence__redis_events_free(&evs);
}

/* The newest sequence number, asked after a read found nothing: a cursor
 * past it is told so (ECURSOR) and reads from the oldest event kept. */
static void log_newest_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (code || !rep ||
      (rep->type != REDIS_REPLY_STRING && rep->type != REDIS_REPLY_NIL)) {
    r->log_cb(r->ud, code ? code : PRESENCE_ESTORE, NULL, 0);
    return;
  }
  long long nv = 0;
  if (rep->type == REDIS_REPLY_STRING && (num_of(rep, &nv) || nv < 0)) {
    r->log_cb(r->ud, PRESENCE_ESTORE, NULL, 0);
    return;
  }
  uint64_t newest = (uint64_t)nv;
  if (r->after_seq <= newest) {
    r->log_cb(r->ud, 0, NULL, 0); /* up to date */
    return;
  }
  req_t *q = log_follow_up(st, r, log_done, 0);
  if (!q) return;
  q->from_oldest = true;
  log_read_send(st, q, 0);
}

/* XRANGE from the entry holding after_seq + 1. Entries are named by their
 * last event, so that is the first entry at or after after_seq + 1. An
 * entry holds the events of one script call, from one to a few hundred:
 * COUNT is sized from the events per entry of the last read, so a read of
 * 256 events among large entries (a burst, a reap) fetches a few of them,
 * not 64, and one among single-event entries fetches 64; the readers page
 * on through the log, so the last read is where the next one is. Fewer
 * events than max is allowed: a reader reads again. */
static void log_read_send(rstore_t *st, req_t *r, uint64_t after_seq) {
  char start[32], count[24];
  snprintf(start, sizeof start, "%llu-0", (unsigned long long)after_seq + 1);
  size_t c = r->max / (st->lr_per ? st->lr_per : 1) + 1;
  snprintf(count, sizeof count, "%zu", c > 64 ? (size_t)64 : c);
  const char *args[] = {"XRANGE", st->log_key, start, "+", "COUNT", count};
  plain(st, r, 6, args);
}

static int r_log_read(presence_store_t *base, uint64_t after_seq, size_t max,
                      void (*cb)(void *, int, const presence_event_t *, size_t),
                      void *ud) {
  rstore_t *st = (rstore_t *)base;
  if (!st->up) return PRESENCE_ESTORE;
  req_t *r = req_new(st, log_done);
  if (!r) return PRESENCE_ENOMEM;
  r->log_cb = cb;
  r->ud = ud;
  r->after_seq = after_seq;
  r->max = max;
  log_read_send(st, r, after_seq);
  return 0;
}

static uint64_t r_log_last_seq(presence_store_t *base) {
  return ((rstore_t *)base)->last_seq;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void on_hclose(uv_handle_t *h) {
  handles_t *hs = h->data;
  if (--hs->open == 0) free(hs);
}

/* The reader's side of a feed: without a router (no table, no memory)
 * every follower gets every read whole, as before interest existed. */
static void feed_route(rstore_t *st, bool log) {
  uint32_t n_out = presence__rfeed_outputs(st->feed);
  if (!n_out) return;
  if (st->o.interest)
    st->route = presence__route_new(st->h.allocator, st->o.interest,
                                    st->o.interest_slot, n_out);
  if (log)
    logf_(st, PRESENCE_LOG_INFO,
          st->route ? "redis reader: the log goes to the other workers by "
                      "their interest"
                    : "redis reader: the log goes whole to the other workers",
          NULL);
}

static int r_attach(presence_store_t *base, const presence_store_host_t *host) {
  rstore_t *st = (rstore_t *)base;
  st->h = *host;
  st->hdr[0] = '\0';
  if (!st->h.allocator) st->h.allocator = presence__default_allocator();
  int rc = presence__table_init(&st->sessions, st->h.allocator,
                                offsetof(lsess_t, id));
  if (rc) return rc;
  if (presence__table_init(&st->settings, st->h.allocator,
                           offsetof(lset_t, id))) {
    presence__table_free(&st->sessions);
    return PRESENCE_ENOMEM;
  }
  st->settings_up = true;
  st->attached = true; /* the table is up: destroy frees it */
  /* libc, not the host's: freed on the loop after presence_free returned
   * (on_hclose), when the host's allocator may be gone. */
  handles_t *hs = calloc(1, sizeof(*hs));
  if (!hs) return PRESENCE_ENOMEM;
  for (int i = 0; i < T_N; i++) {
    uv_timer_init(st->o.loop, &hs->t[i]);
    hs->t[i].data = hs;
  }
  hs->open = T_N;
  hs->st = st;
  st->hs = hs;
  uv_timer_start(&hs->t[T_HB], on_timer, st->o.heartbeat_ms,
                 st->o.heartbeat_ms);
  /* The deadlines kept in Redis (offline grace, status message expiry)
   * are polled when one is known (grace_arm): from the first registration
   * on (set_ready). */
  uv_timer_start(&hs->t[T_RECONCILE], on_timer, st->o.reconcile_ms,
                 st->o.reconcile_ms);
  if (st->feed_in > 0 || st->n_feed_out) {
    presence__rfeed_config_t fc = {
        .loop = st->o.loop,
        .alloc = st->h.allocator,
        .in_fd = st->feed_in > 0 ? st->feed_in : -1,
        .out_fds = st->feed_out,
        .n_out = st->n_feed_out,
        .max_reply_bytes = st->o.max_reply_bytes,
        .max_reply_elements = st->o.max_reply_elements,
        .on_reply = feed_reply,
        .on_end = feed_ended,
        .ud = st,
    };
    if (presence__rfeed_new(&fc, &st->feed) == 0) {
      feed_route(st, true);
      st->feed_in = 0; /* the feed owns the descriptors now */
      st->n_feed_out = 0;
    }
  }
  rc = conn_new(st, "redis", false, &st->conn);
  if (rc) return rc;
  if (!st->await_route) presence__rconn_start(st->conn);
  return 0;
}

static void r_destroy(presence_store_t *base) {
  rstore_t *st = (rstore_t *)base;
  st->destroying = true;
  st->up = false;
  /* Pending commands complete with ESHUTDOWN inside these. */
  presence__rconn_free(st->conn);
  st->conn = NULL;
  presence__rconn_free(st->rconn);
  st->rconn = NULL;
  if (st->ask) ask_close(st);
  if (!st->feed_shared) presence__rfeed_free(st->feed);
  st->feed = NULL;
  presence__route_free(st->route);
  st->route = NULL;
  if (st->feed_in > 0) close(st->feed_in);
  for (uint32_t i = 0; i < st->n_feed_out; i++)
    close(st->feed_out[i]);
  st->moving = false;
  fail_held(st, PRESENCE_ESHUTDOWN, false);
  flush_writes(st); /* not up: they complete with ESHUTDOWN */
  flush_queries(st);
  run_soon(st);
  if (st->hs) {
    st->hs->st = NULL;
    for (int i = 0; i < T_N; i++)
      uv_close((uv_handle_t *)&st->hs->t[i], on_hclose);
  }
  if (st->attached) {
    local_clear(st);
    presence__table_free(&st->sessions);
  }
  if (st->settings_up) {
    size_t pos = 0;
    lset_t *x;
    while ((x = presence__table_next(&st->settings, &pos))) lset_free(st, x);
    presence__table_free(&st->settings);
    st->settings_up = false;
  }
  xfree(st, st->sres_ids);
  /* A reap's ids read so far, when the store goes mid-reap (reap_ids_done
   * returns without reap_end once destroying). */
  xfree(st, st->reap_ids);
  xfree(st, st->slab);
  xfree(st, st->free_slots);
  xfree(st, st->wb.buf);
  xfree(st, st->qb.buf);
  xfree(st, st->moved_host);
  /* From before attach: the options' allocator. */
  const presence_allocator_t *a0 = st->a0;
  presence__redis_url_free(a0, &st->url);
  presence__free(a0, (char *)st->tls.ca_file);
  presence__free(a0, (char *)st->tls.cert_file);
  presence__free(a0, (char *)st->tls.key_file);
  presence__free(a0, (char *)st->tls.server_name);
  presence__free(a0, st->prefix);
  presence__free(a0, st->feed_out);
  for (uint32_t i = 0; i < st->n_seeds; i++) presence__free(a0, st->seed_host[i]);
  presence__free(a0, st->seed_host);
  presence__free(a0, st->seed_port);
  presence__free(a0, st);
}

static const presence_store_ops_t redis_ops = {
    .name = "redis",
    .flags = PRESENCE_STORE_OBSERVES,
    .attach = r_attach,
    .write = r_write,
    .tick = r_tick,
    .user_query = r_user_query,
    .sessions_query = r_sessions_query,
    .session_get = r_session_get,
    .users_foreach = NULL,
    .stats = r_stats,
    .log_read = r_log_read,
    .log_last_seq = r_log_last_seq,
    .destroy = r_destroy,
    .channel_members = r_channel_members,
    .channels_list = r_channels_list,
    .user_channels = r_user_channels,
    .channel_members_brief = r_channel_members_brief,
};

/* The URL, then what the options give apart from it (credentials read from
 * a file or the environment, the TLS files): all copied, since the options'
 * strings need not outlive this call. */
static int parse_url(rstore_t *st, const presence_redis_options_t *o) {
  const presence_allocator_t *a = st->a0;
  char err[96];
  int rc = presence__redis_url_parse(a, o->url, &st->url, err, sizeof err);
  if (rc) return rc;
  if (o->password && !o->user && st->url.password_alone) {
    /* redis://NAME@host with the password given apart: NAME is the user,
     * as the documented [USER[:PASSWORD]@] has it; alone it stays the
     * password, as redis-cli reads it. Taken for the password, it was
     * replaced, and AUTH went to the default user: WRONGPASS for ever. */
    presence__free(a, st->url.user);
    st->url.user = st->url.password;
    st->url.password = NULL;
  }
  if (o->user) {
    presence__free(a, st->url.user);
    if (!(st->url.user = xstrdup(st, o->user))) return PRESENCE_ENOMEM;
  }
  if (o->password) {
    presence__free(a, st->url.password);
    if (!(st->url.password = xstrdup(st, o->password))) return PRESENCE_ENOMEM;
  }
  if (o->sentinel_user &&
      !(st->url.sentinel_user = xstrdup(st, o->sentinel_user)))
    return PRESENCE_ENOMEM;
  if (o->sentinel_password &&
      !(st->url.sentinel_password = xstrdup(st, o->sentinel_password)))
    return PRESENCE_ENOMEM;
  const char *const src[] = {o->tls.ca_file, o->tls.cert_file,
                             o->tls.key_file, o->tls.server_name};
  const char **dst[] = {&st->tls.ca_file, &st->tls.cert_file,
                        &st->tls.key_file, &st->tls.server_name};
  for (int i = 0; i < 4; i++)
    if (src[i] && !(*dst[i] = xstrdup(st, src[i]))) return PRESENCE_ENOMEM;
  st->tls.insecure = o->tls.insecure;
  return 0;
}

int presence_store_redis_new(const presence_redis_options_t *opts,
                             presence_store_t **out) {
  if (!opts || !opts->loop || !out) return PRESENCE_EINVAL;
  *out = NULL;
  if (opts->shards > 1 || opts->cluster)
    return presence__rshards_new(opts, out);
  return presence__redis_new_one(opts, out);
}

int presence__redis_set_cluster(presence_store_t *s, const char *seeds) {
  rstore_t *st = (rstore_t *)s;
  const presence_allocator_t *a = st->a0;
  st->in_cluster = true;
  size_t n = 1;
  for (const char *p = seeds; *p; p++) n += *p == ',';
  st->seed_host = presence__malloc(a, n * sizeof(char *));
  st->seed_port = presence__malloc(a, n * sizeof(int));
  if (!st->seed_host || !st->seed_port) return PRESENCE_ENOMEM;
  const char *p = seeds;
  for (size_t i = 0; i < n; i++) {
    size_t len = strcspn(p, ",");
    char one[512], err[96];
    if (len >= sizeof one) return PRESENCE_EINVAL;
    snprintf(one, sizeof one, "%.*s", (int)len, p);
    if (!strstr(one, "://")) snprintf(one, sizeof one, "redis://%.*s", (int)len, p);
    presence__redis_url_t u;
    int rc = presence__redis_url_parse(a, one, &u, err, sizeof err);
    if (!rc && !u.host) rc = PRESENCE_EINVAL;
    if (!rc) {
      st->seed_host[st->n_seeds] = u.host;
      st->seed_port[st->n_seeds++] = u.port;
      u.host = NULL;
    }
    presence__redis_url_free(a, &u);
    if (rc) return rc;
    p += len + (p[len] == ',');
  }
  return 0;
}

void presence__redis_set_router(presence_store_t *s,
                                presence__redis_route_fn fn, void *ud) {
  rstore_t *st = (rstore_t *)s;
  st->slot_route = fn;
  st->slot_route_ud = ud;
  st->await_route = fn != NULL;
  st->slot = presence__redis_slot(st->key1, strlen(st->key1));
}

void presence__redis_start_at(presence_store_t *s, const char *host,
                              int port) {
  rstore_t *st = (rstore_t *)s;
  /* Once started, the shard's own routing (MOVED, the map after a
   * failure) decides. */
  if (!st->await_route) return;
  if (host && st->url.host && port > 0) {
    char *h = presence__malloc(st->a0, strlen(host) + 1);
    if (h) {
      strcpy(h, host);
      presence__free(st->a0, st->url.host);
      st->url.host = h;
      st->url.port = port;
    }
  }
  st->await_route = false;
  if (st->conn && !st->destroying) presence__rconn_start(st->conn);
}

void presence__redis_conn_params(presence_store_t *s,
                                 const presence__redis_url_t **url,
                                 const presence_redis_tls_t **tls,
                                 const presence_redis_options_t **o) {
  rstore_t *st = (rstore_t *)s;
  *url = &st->url;
  *tls = &st->tls;
  *o = &st->o;
}

/* The shards of one store share one feed per follower (redis_shard.c):
 * each XREAD reply names its shard's streams, so one socket carries every
 * shard's replies in each shard's order. */
void presence__redis_share_feed(presence_store_t *s, presence__rfeed_t *feed,
                                bool log) {
  rstore_t *st = (rstore_t *)s;
  st->feed = feed;
  st->feed_shared = true;
  feed_route(st, log);
}

int presence__redis_feed_take(presence_store_t *s, redisReply *rep) {
  rstore_t *st = (rstore_t *)s;
  const char *name = text_of(at(at(rep, 0), 0));
  if (!name || (strcmp(name, st->log_key) && strcmp(name, st->kick_key)))
    return 0;
  feed_reply(st, rep);
  return 1;
}

void presence__redis_feed_ended(presence_store_t *s) {
  feed_ended(s);
}

int presence__redis_new_one(const presence_redis_options_t *opts,
                            presence_store_t **out) {
  const presence_allocator_t *a0 =
      opts->allocator ? opts->allocator : presence__default_allocator();
  rstore_t *st = presence__malloc(a0, sizeof(*st));
  if (!st) return PRESENCE_ENOMEM;
  memset(st, 0, sizeof(*st));
  st->a0 = a0;
  /* Until attach gives the host's: what xstrdup copies now is a0's. */
  st->h.allocator = a0;
  st->base.ops = &redis_ops;
  st->o = *opts;
  presence_redis_options_t *o = &st->o;
  if (!o->heartbeat_ms) o->heartbeat_ms = 2000;
  if (!o->lease_ms) o->lease_ms = 3 * o->heartbeat_ms;
  if (!o->command_timeout_ms) o->command_timeout_ms = 2000;
  if (!o->reconcile_ms) o->reconcile_ms = 30000;
  /* ~100 us of Lua per session on a slow host: 50 stays well under 10 ms. */
  if (!o->batch) o->batch = 50;
  if (!o->stream_maxlen) o->stream_maxlen = 100000;
  if (!o->reconnect_max_ms) o->reconnect_max_ms = 2000;
  if (!o->stream_block_ms) o->stream_block_ms = 1000;
  o->url = NULL;
  o->prefix = NULL;
  o->user = o->password = NULL;
  o->sentinel_user = o->sentinel_password = NULL;
  o->feed_out = NULL;
  st->feed_in = opts->feed_in;
  if (opts->n_feed_out && opts->feed_out) {
    st->feed_out = presence__malloc(a0, opts->n_feed_out * sizeof(int));
    if (st->feed_out) {
      memcpy(st->feed_out, opts->feed_out, opts->n_feed_out * sizeof(int));
      st->n_feed_out = opts->n_feed_out;
    }
  }
  memset(&o->tls, 0, sizeof o->tls);
  st->prefix = xstrdup(st, opts->prefix ? opts->prefix : "presence:");
  int rc = st->prefix ? parse_url(st, opts) : PRESENCE_ENOMEM;
  if (!rc && strlen(st->prefix) > 100) rc = PRESENCE_EINVAL;
  if (rc) {
    r_destroy(&st->base);
    return rc;
  }
  snprintf(st->log_key, sizeof st->log_key, "%slog", st->prefix);
  snprintf(st->key1, sizeof st->key1, "%sseq", st->prefix);
  snprintf(st->key_guard, sizeof st->key_guard, "%smigrating", st->prefix);
  snprintf(st->kick_key, sizeof st->kick_key, "%skicks", st->prefix);
  snprintf(st->epoch_s, sizeof st->epoch_s, "0");
  /* FNV-1a of the script and of what registers its entry points: its
   * function's name. */
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < presence_lua_len; i++)
    h = (h ^ (unsigned char)presence_lua[i]) * 1099511628211ull;
  for (const char *t = LIB_TAIL; *t; t++)
    h = (h ^ (unsigned char)*t) * 1099511628211ull;
  snprintf(st->fn, sizeof st->fn, "presence_%016llx", (unsigned long long)h);
  snprintf(st->fn_ro, sizeof st->fn_ro, "%s_ro", st->fn);
  *out = &st->base;
  return 0;
}

/* A sharded store (redis_shard.c) answers through its shards: s itself,
 * or shard 0 for what is the same in every shard (the instance, the
 * allocator) or lives in one (webhook leases). */
static presence_store_t *shard0(presence_store_t *s) {
  return presence__rshards_is(s) ? presence__rshards_sub(s, 0) : s;
}
#define FOR_SHARDS(s, i, sub)                                                  \
  for (uint32_t i = 0, n_##i = presence__rshards_count(s);                     \
       i < n_##i && ((sub) = presence__rshards_sub(s, i)); i++)

int presence_redis_ready(presence_store_t *s) {
  if (presence__rshards_is(s)) {
    presence_store_t *sub;
    FOR_SHARDS(s, i, sub) if (!presence_redis_ready(sub)) return 0;
    return 1;
  }
  return s && s->ops == &redis_ops && ((rstore_t *)s)->phase == PH_READY;
}

int64_t presence_redis_clock_offset_ms(presence_store_t *s,
                                       const char *user_id) {
  if (presence__rshards_is(s)) {
    if (!user_id) return 0;
    uint32_t n = presence__rshards_count(s);
    return presence_redis_clock_offset_ms(
        presence__rshards_sub(
            s, presence__redis_user_shard(user_id, strlen(user_id), n)),
        NULL);
  }
  return s && s->ops == &redis_ops ? ((rstore_t *)s)->clock_off_ms : 0;
}

int presence_redis_channel_shown(presence_store_t *s, const char *channel,
                                 const char *user_id, uint64_t shard_shown,
                                 uint64_t *out) {
  if (!out || !channel || !user_id) return PRESENCE_EINVAL;
  *out = shard_shown;
  if (presence__rshards_is(s))
    return presence__rshards_shown(s, channel, user_id, shard_shown, out);
  return s && s->ops == &redis_ops ? 0 : PRESENCE_EINVAL;
}

int presence_redis_channel_track(presence_store_t *s, const char *channel,
                                 int delta) {
  if (presence__rshards_is(s)) return presence__rshards_track(s, channel, delta);
  if (!s || s->ops != &redis_ops || !channel) return PRESENCE_EINVAL;
  return 0;
}

int presence_redis_cluster_stats(presence_store_t *s,
                                 presence_redis_cluster_stats_t *out) {
  if (presence__rshards_is(s) && out) {
    /* Users and sessions are each in one shard; every instance holds a
     * lease in every shard. */
    presence_store_t *sub;
    memset(out, 0, sizeof *out);
    FOR_SHARDS(s, i, sub) {
      presence_redis_cluster_stats_t c;
      if (presence_redis_cluster_stats(sub, &c)) return PRESENCE_EINVAL;
      out->users_present += c.users_present;
      out->sessions += c.sessions;
      if (c.instances > out->instances) out->instances = c.instances;
      if (!i || c.sampled_mono_ms < out->sampled_mono_ms)
        out->sampled_mono_ms = c.sampled_mono_ms;
    }
    return 0;
  }
  if (!s || !out || s->ops != &redis_ops) return PRESENCE_EINVAL;
  *out = ((rstore_t *)s)->cluster;
  return 0;
}

uint64_t presence_redis_epoch(presence_store_t *s) {
  s = shard0(s);
  if (!s || s->ops != &redis_ops) return 0;
  rstore_t *st = (rstore_t *)s;
  return st->phase >= PH_WIPING ? st->epoch : 0;
}

void presence_redis_debug_pause(presence_store_t *s, int paused) {
  presence_store_t *sub;
  FOR_SHARDS(s, i, sub) presence_redis_debug_pause(sub, paused);
  if (s && s->ops == &redis_ops) ((rstore_t *)s)->paused = paused != 0;
}

static void leave_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  (void)r;
  if (!code && rep) code = script_code(rep);
  if (st->leave_done) st->leave_done(st->leave_ud, code);
  st->leave_done = NULL;
}

int presence_redis_leave(presence_store_t *s, void (*done)(void *, int),
                         void *ud) {
  if (presence__rshards_is(s)) {
    void *f = presence__rshards_fan(s, done, ud);
    if (!f) return PRESENCE_ENOMEM;
    presence_store_t *sub;
    FOR_SHARDS(s, i, sub) {
      int rc = presence_redis_leave(sub, presence__rshards_fan_done, f);
      if (rc) presence__rshards_fan_done(f, rc);
    }
    return 0;
  }
  if (!s || s->ops != &redis_ops) return PRESENCE_EINVAL;
  rstore_t *st = (rstore_t *)s;
  if (st->leaving) return PRESENCE_EBUSY;
  st->leaving = true;
  st->paused = true;
  st->leave_done = done;
  st->leave_ud = ud;
  bool w = can_write(st);
  char rbuf[8];
  status_args(rbuf, sizeof rbuf, PRESENCE_REASON_SHUTDOWN);
  for (uint32_t i = 0; w && i < st->slab_len; i++) {
    lsess_t *ls = st->slab[i];
    if (!ls) continue;
    req_t *r = req_new(st, write_done);
    if (!r) break;
    const char *args[] = {ls->wire, ls->user, rbuf};
    call(st, r, "end", 3, args, NULL);
  }
  local_clear(st);
  req_t *r = req_new(st, leave_done);
  if (!r) return PRESENCE_ENOMEM;
  if (w)
    call(st, r, "unregister", 0, NULL, NULL);
  else
    defer(st, r, PRESENCE_ESTORE);
  return 0;
}

int presence_redis_conn_metrics(presence_store_t *s, int which,
                                presence_redis_conn_metrics_t *out) {
  if (presence__rshards_is(s) && out) {
    /* Every shard's connection of that kind, added up; up if all are. */
    presence_store_t *sub;
    memset(out, 0, sizeof *out);
    out->up = 1;
    FOR_SHARDS(s, i, sub) {
      presence_redis_conn_metrics_t m;
      int rc = presence_redis_conn_metrics(sub, which, &m);
      if (rc) return rc;
      out->commands += m.commands;
      out->replies += m.replies;
      out->errors += m.errors;
      out->failed += m.failed;
      out->timeouts += m.timeouts;
      out->protocol_errors += m.protocol_errors;
      out->connects += m.connects;
      out->connect_failures += m.connect_failures;
      out->bytes_out += m.bytes_out;
      out->bytes_in += m.bytes_in;
      out->pending += m.pending;
      out->up = out->up && m.up;
    }
    return 0;
  }
  if (!s || !out || s->ops != &redis_ops || which < 0 || which > 1)
    return PRESENCE_EINVAL;
  rstore_t *st = (rstore_t *)s;
  presence__rconn_t *c = which ? st->rconn : st->conn;
  memset(out, 0, sizeof *out);
  if (c) presence__rconn_metrics(c, out);
  /* A worker of --workers fed the log by the machine's reader has no
   * reader connection of its own, by design: it read 0 for ever, and an
   * alert on presenced_redis_up == 0 (docs/operations.md) fired on every
   * worker but the first. The log reaches it while the feed runs; when the
   * feed ends it reads for itself, and its own connection counts again. */
  if (which == 1 && st->feed_synced && presence__rfeed_reading(st->feed))
    out->up = 1;
  return 0;
}

/* ---- kicks across instances ---------------------------------------------- */

int presence_redis_on_kick(presence_store_t *s,
                           void (*fn)(void *ud, const char *session_id),
                           void *ud) {
  if (presence__rshards_is(s)) {
    presence_store_t *sub;
    FOR_SHARDS(s, i, sub) presence_redis_on_kick(sub, fn, ud);
    return 0;
  }
  if (!s || s->ops != &redis_ops) return PRESENCE_EINVAL;
  rstore_t *st = (rstore_t *)s;
  st->kick_fn = fn;
  st->kick_ud = ud;
  st->k_known = false;
  return 0;
}

int presence_redis_on_origin(presence_store_t *s,
                             void (*fn)(void *ud, const char *name,
                                        uint64_t counter),
                             void *ud) {
  if (presence__rshards_is(s)) {
    /* The claims are in shard 0's stream; every shard's reader is told
     * the same function, as for kicks. */
    presence_store_t *sub;
    FOR_SHARDS(s, i, sub) presence_redis_on_origin(sub, fn, ud);
    return 0;
  }
  if (!s || s->ops != &redis_ops) return PRESENCE_EINVAL;
  rstore_t *st = (rstore_t *)s;
  st->origin_fn = fn;
  st->origin_ud = ud;
  return 0;
}

static void kick_sent(rstore_t *st, req_t *r, redisReply *rep, int code) {
  (void)st;
  if (!code && (!rep || !text_of(rep))) code = PRESENCE_ESTORE;
  r->done(r->ud, code);
}

/* The session exists somewhere (the session index): append the kick to
 * the stream every instance's reader follows. */
static void kick_found(rstore_t *st, req_t *r, redisReply *rep, int code) {
  if (!code && rep) code = script_code(rep);
  const char *has = code ? NULL : payload_str(rep);
  if (!code && (!has || (strcmp(has, "1") && strcmp(has, "0"))))
    code = PRESENCE_ESTORE;
  if (!code && !strcmp(has, "0")) code = PRESENCE_ENOSESSION;
  if (code || st->destroying) {
    r->done(r->ud, code ? code : PRESENCE_ESHUTDOWN);
    return;
  }
  req_t *q = req_new(st, kick_sent);
  if (!q) {
    r->done(r->ud, PRESENCE_ENOMEM);
    return;
  }
  q->done = r->done;
  q->ud = r->ud;
  /* A kick is acted on within moments or not at all: the stream keeps the
   * last thousand or so, enough for every reader to catch up after a
   * reconnect, and no more. */
  const char *args[] = {"XADD", st->kick_key, "MAXLEN", "~",
                        "1000", "*",          "s",      r->user};
  plain(st, q, 8, args);
}

/* Lua 5.1's string.byte(s, i, j) as IX.hash uses it: positions past the
 * ends clamped, nothing (a nil, 0 here) where the range is short. */
static void lua_bytes(const char *s, size_t n, long i, long j, unsigned *out,
                      int k) {
  if (i < 0) i += (long)n + 1;
  if (j < 0) j += (long)n + 1;
  if (i <= 0) i = 1;
  if (j > (long)n) j = (long)n;
  for (int x = 0; x < k; x++, i++)
    out[x] = i <= j ? (unsigned char)s[i - 1] : 0;
}

unsigned presence__redis_ixb(const char *s, size_t n) {
  unsigned f[2], m[2], t[4];
  long half = (long)(n - n % 2) / 2;
  lua_bytes(s, n, 1, 2, f, 2);
  lua_bytes(s, n, half, half + 1, m, 2);
  lua_bytes(s, n, -4, -1, t, 4);
  /* Below 2^53, as the script's doubles compute it exactly. */
  uint64_t h1 = ((f[0] * 131ull + f[1]) * 131 + m[0]) * 131 + m[1];
  uint64_t h2 = ((t[0] * 131ull + t[1]) * 131 + t[2]) * 131 + t[3];
  return (unsigned)((h1 * 7919 + h2) % PRESENCE__REDIS_IX_BUCKETS);
}

int presence_redis_kick(presence_store_t *s, const char *session_id,
                        void (*done)(void *ud, int status), void *ud) {
  if (presence__rshards_is(s)) return presence__rshards_kick(s, session_id, done, ud);
  if (!s || s->ops != &redis_ops || !session_id || !done)
    return PRESENCE_EINVAL;
  rstore_t *st = (rstore_t *)s;
  size_t n = strlen(session_id);
  if (!n || n > PRESENCE_ID_MAX) return PRESENCE_EID;
  if (!st->up) return PRESENCE_ESTORE;
  req_t *r = req_new(st, kick_found);
  if (!r) return PRESENCE_ENOMEM;
  r->done = done;
  r->ud = ud;
  memcpy(r->user, session_id, n + 1);
  /* The index holds the id as the script was sent it (its 20-byte form
   * for a UUID), in the bucket the script finds (q_has); the kick stream
   * carries the text, which the instances look up in their own tables. */
  char wire[PRESENCE__SID20_LEN + 1];
  const char *args[] = {sid20_pack(session_id, n, wire) ? wire : session_id};
  call(st, r, "q_has", 1, args, NULL);
  return 0;
}

/* ---- for the store's other files ----------------------------------------- */

static void raw_done(rstore_t *st, req_t *r, redisReply *rep, int code) {
  (void)st;
  r->raw_cb(r->ud, code, rep);
}

int presence__redis_raw(presence_store_t *s, int argc, const char **argv,
                        const size_t *lens,
                        void (*cb)(void *ud, int code, redisReply *rep),
                        void *ud) {
  s = shard0(s);
  if (!s || s->ops != &redis_ops || !cb) return PRESENCE_EINVAL;
  rstore_t *st = (rstore_t *)s;
  if (!st->up || st->destroying) return PRESENCE_ESTORE;
  req_t *r = req_new(st, raw_done);
  if (!r) return PRESENCE_ENOMEM;
  r->raw_cb = cb;
  r->ud = ud;
  flush_writes(st);
  int rc = format_cmd(r, argc, argv, lens);
  if (rc) {
    req_free(r);
    return rc;
  }
  send_req(st, r);
  return 0;
}

/* A query of the script (op with args, after the common arguments) whose
 * reply goes to cb as presence__redis_raw's does. */
int presence__redis_op(presence_store_t *s, const char *op, int argc,
                       const char **argv,
                       void (*cb)(void *ud, int code, redisReply *rep),
                       void *ud) {
  if (!s || s->ops != &redis_ops || !cb) return PRESENCE_EINVAL;
  rstore_t *st = (rstore_t *)s;
  if (!can_read(st)) return PRESENCE_ESTORE;
  req_t *r = req_new(st, raw_done);
  if (!r) return PRESENCE_ENOMEM;
  r->raw_cb = cb;
  r->ud = ud;
  call(st, r, op, argc, argv, NULL);
  return 0;
}

void presence__redis_on_ready(presence_store_t *s, void (*fn)(void *ud),
                              void *ud) {
  if (!s || s->ops != &redis_ops) return;
  ((rstore_t *)s)->on_ready = fn;
  ((rstore_t *)s)->on_ready_ud = ud;
}

const char *presence__redis_prefix(presence_store_t *s) {
  return ((rstore_t *)shard0(s))->prefix;
}

const char *presence__redis_instance(presence_store_t *s) {
  return ((rstore_t *)shard0(s))->h.instance_id;
}

int presence__redis_is(presence_store_t *s) {
  s = shard0(s);
  return s && s->ops == &redis_ops;
}

const presence_allocator_t *presence__redis_allocator(presence_store_t *s) {
  return ((rstore_t *)shard0(s))->h.allocator;
}
