/* SPDX-License-Identifier: MIT */
/*
 * The Redis store in S virtual shards (docs/internals/redis.md, "Shards and
 * Redis Cluster"): S single-shard stores of redis.c, each under the prefix
 * "<prefix>{<tag>}", behind one presence_store_t that routes every call by
 * its user.
 *
 * Why it works on Redis Cluster: Redis hashes a key by the first {...} in
 * its name, so every key of shard i (its users, sessions, sequence, log,
 * instance tables, leases, grace...) lies in the one slot of tag i, and the
 * one script, which builds every key from the prefix, never leaves that
 * slot. Each shard store is then a complete single-Redis store: it
 * registers this instance, renews its lease, reaps dead instances,
 * re-asserts its sessions after a store loss and follows its own log, on
 * its own two connections, which follow MOVED to the node serving the
 * slot. Tags are chosen so that shard i's slot is the middle of the i-th of S
 * equal slot ranges: primaries holding equal ranges hold equal numbers of
 * shards.
 *
 * On Redis Cluster the store reads the slot map (CLUSTER SLOTS) first, so
 * each shard connects straight to its slot's primary, and reads it again
 * when a shard's connection fails (where to go next).
 *
 * A user belongs to shard fnv1a64(user) mod S; a session belongs to its
 * user's shard. Channel members live in their user's shard, so a channel's
 * member list is a merge over the shards (done here).
 *
 * presenced --workers: the machine's log feed (redis_feed.c) is the
 * sharded store's, one socket per follower for all S shards; each shard
 * store routes its own reads to it and a follower hands each reply to the
 * shard whose streams it names.
 */
#include "store/redis_shard.h"

#include "store/redis_ccount.h"
#include "store/redis_decode.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- slots and tags ------------------------------------------------------ */

/* CRC16-CCITT (XMODEM), as Redis Cluster's keyHashSlot. */
static uint16_t crc16(const char *buf, size_t len) {
  uint16_t crc = 0;
  for (size_t i = 0; i < len; i++) {
    crc ^= (uint16_t)((uint8_t)buf[i] << 8);
    for (int b = 0; b < 8; b++)
      crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
                           : (uint16_t)(crc << 1);
  }
  return crc;
}

unsigned presence__redis_slot(const char *key, size_t len) {
  const char *open = memchr(key, '{', len);
  if (open) {
    size_t s = (size_t)(open - key) + 1;
    const char *close = memchr(key + s, '}', len - s);
    /* Only a non-empty tag counts, as in Redis. */
    if (close && close > key + s) {
      key += s;
      len = (size_t)(close - key);
    }
  }
  return crc16(key, len) & 16383u;
}

int presence__redis_shard_tag(uint32_t i, uint32_t n, char *out, size_t cap) {
  if (!n || i >= n || cap < 16) return PRESENCE_EINVAL;
  /* The middle of the i-th of n equal slot ranges: a primary holding a
   * range of about 16384 / k slots holds n / k whole shards. */
  unsigned want = (unsigned)((2 * (uint64_t)i + 1) * 16384u / (2 * n));
  /* CRC16 is close to uniform over short strings: "s<i>.<k>" hits a given
   * slot within a few ten thousand k. */
  for (uint32_t k = 0; k < 4000000u; k++) {
    int len = snprintf(out, cap, "%x.%x", (unsigned)i, (unsigned)k);
    if (len < 0 || (size_t)len >= cap) return PRESENCE_EINVAL;
    if ((crc16(out, (size_t)len) & 16383u) == want) return 0;
  }
  return PRESENCE_EINVAL;
}

uint32_t presence__redis_user_shard(const char *user, size_t len, uint32_t n) {
  if (n <= 1) return 0;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < len; i++) {
    h ^= (uint8_t)user[i];
    h *= 1099511628211ull;
  }
  return (uint32_t)(h % n);
}

/* ---- the sharded store --------------------------------------------------- */

/* One range of the cluster's slot map: slots lo..hi served by host:port. */
typedef struct slot_range {
  unsigned lo, hi;
  char *host;
  int port;
} slot_range_t;

struct rshards;

/* What shard i's store reports to: the host's functions, through us, so
 * each channel event gets the channel's count (redis_ccount.c). */
typedef struct shard_host {
  struct rshards *r;
  uint32_t i;
  bool reseed; /* a count query could not be sent: ask again */
  /* gate_run is going through this shard's held writes: a nested call
   * (a claim settled at once, a done callback opening again) leaves them
   * to it. */
  bool gate_running;
  presence_store_host_t h;
} shard_host_t;

typedef struct rshards {
  presence_store_t base;
  const presence_allocator_t *a0; /* the options' allocator (the struct) */
  const presence_allocator_t *a;  /* the host's, once attached */
  uint32_t n;
  presence_store_t **sub;
  /* Redis Cluster: the slot map, read with CLUSTER SLOTS on a connection
   * of its own at attach (each shard then connects straight to its
   * slot's primary) and again after a MOVED or a failed connection. */
  bool cluster, destroying, have_map, map_busy;
  presence_store_host_t host;
  uv_loop_t *loop;
  presence__rconn_t *topo;
  presence__redis_url_t topo_url; /* shard 0's, host our own copy */
  slot_range_t *map;
  size_t n_map;
  uint64_t map_asked_ms;
  /* presenced --workers: the machine's log feed, one socket per follower
   * carrying every shard's replies (each names its shard's streams), made
   * at attach from these descriptors (ours until then). */
  presence__rfeed_t *feed;
  int feed_in;
  int *feed_out;
  uint32_t n_feed_out;
  /* The tracked channels' counts per shard, and the hosts the shards
   * report through (made at attach). */
  presence__ccounts_t counts;
  bool counts_up;
  shard_host_t *sh;
  /* Session ids a caller chose, claimed in the id's shard (below): by id,
   * and by the stand-in handle given out while the claim is asked. */
  presence__table_t claims;
  bool claims_up;
  struct claim **cl_slot; /* by stand-in handle */
  uint8_t *cl_gen;
  uint32_t n_slot, cap_slot;
  uint32_t *cl_free;
  uint32_t n_free;
  /* Per shard: writes held behind an open whose claim is asked, in call
   * order (NULL: none held, writes go straight to the shard). */
  struct qwrite **gate_head, **gate_tail;
  /* The shards' log lines, one line for what many shards say at once
   * (below, "log lines of many shards"); NULL: each line as it comes. */
  struct shlog *lg;
} rshards_t;

static const presence_store_ops_t rshards_ops;

/* Session ids across shards (below, "session ids across shards"). */
enum { CL_PENDING, CL_OK, CL_REFUSED, CL_BOUND };

/* A write held in a shard's gate (strings in the same block). */
typedef struct qwrite {
  struct qwrite *next;
  struct claim *claim; /* an open held here: its session */
  presence_write_t w;
  presence_store_done_fn done;
  void *ud;
} qwrite_t;

/* A session opened through a gate: its stand-in handle, and for an id the
 * caller chose its claim. */
typedef struct claim {
  presence__hkey_t k;
  uint8_t state;
  bool claimed; /* a chosen id: claimed in shard `shard` */
  bool asked;   /* the claim was asked */
  bool fresh;   /* the claim was made (not found) for this open */
  bool ending;  /* an end is held behind the open */
  bool indexed; /* in r->claims (the id's latest) */
  int refused;  /* CL_REFUSED: the code */
  uint32_t slot, shard, ushard;
  presence_handle_t ph, real;
  char user[PRESENCE_ID_MAX + 1];
  char id[PRESENCE_ID_MAX + 1];
} claim_t;

int presence__rshards_is(const presence_store_t *s) {
  return s && s->ops == &rshards_ops;
}
uint32_t presence__rshards_count(const presence_store_t *s) {
  return presence__rshards_is(s) ? ((const rshards_t *)s)->n : 0;
}
presence_store_t *presence__rshards_sub(const presence_store_t *s, uint32_t i) {
  const rshards_t *r = (const rshards_t *)s;
  return presence__rshards_is(s) && i < r->n ? r->sub[i] : NULL;
}

/* Handles: a shard store's handle is (generation << 32) | slot; ours puts
 * the shard in the low word, slot * n + shard, so it stays unique and
 * non-zero and decodes without a table. */
static presence_handle_t h_enc(const rshards_t *r, presence_handle_t h,
                               uint32_t i) {
  uint64_t lo = h & 0xffffffffu;
  return (h & ~(uint64_t)0xffffffffu) | (lo * r->n + i);
}
static presence_handle_t h_dec(const rshards_t *r, presence_handle_t h,
                               uint32_t *i) {
  uint64_t lo = h & 0xffffffffu;
  *i = (uint32_t)(lo % r->n);
  return (h & ~(uint64_t)0xffffffffu) | (lo / r->n);
}

static uint32_t shard_of(const rshards_t *r, const char *user, size_t len) {
  return presence__redis_user_shard(user, len, r->n);
}

/* The shard holding a local session, or n. */
static uint32_t shard_of_session(const rshards_t *r, const char *sid,
                                 size_t len) {
  char buf[256];
  if (!sid || len >= sizeof buf) return r->n;
  memcpy(buf, sid, len);
  buf[len] = '\0';
  presence_session_info_t info;
  for (uint32_t i = 0; i < r->n; i++)
    if (r->sub[i]->ops->session_get(r->sub[i], buf, &info) == 0) return i;
  return r->n;
}

/* Completion of a call sent to every shard: done once, with the first
 * failure (or 0), after the last answer. */
typedef struct fan {
  rshards_t *r;
  uint32_t left;
  int status;
  presence_store_done_fn done;
  void *ud;
} fan_t;

static void fan_done(void *ud, int status) {
  fan_t *f = ud;
  if (status && !f->status) f->status = status;
  if (--f->left) return;
  if (f->done) f->done(f->ud, f->status);
  presence__free(f->r->a, f);
}

/* ---- the slot map (Redis Cluster) ---------------------------------------- */

static void map_free(rshards_t *r) {
  for (size_t i = 0; i < r->n_map; i++) presence__free(r->a0, r->map[i].host);
  presence__free(r->a0, r->map);
  r->map = NULL;
  r->n_map = 0;
}

static const slot_range_t *map_find(const rshards_t *r, unsigned slot) {
  for (size_t i = 0; i < r->n_map; i++)
    if (r->map[i].lo <= slot && slot <= r->map[i].hi) return &r->map[i];
  return NULL;
}

/* Shards waiting for their first connect start now: at their slot's node
 * when the map knows it, else where their URL says (the first seed, which
 * answers MOVED). */
static void start_waiting(rshards_t *r) {
  for (uint32_t i = 0; i < r->n; i++) {
    unsigned slot = 0;
    char tag[24], key[32];
    if (!presence__redis_shard_tag(i, r->n, tag, sizeof tag)) {
      snprintf(key, sizeof key, "{%s}", tag);
      slot = presence__redis_slot(key, strlen(key));
    }
    const slot_range_t *m = map_find(r, slot);
    presence__redis_start_at(r->sub[i], m ? m->host : NULL, m ? m->port : 0);
  }
}

/* CLUSTER SLOTS: {{lo, hi, {host, port, id, ...}, replicas...}, ...}. An
 * empty host is the node asked. A reply of another shape keeps the map
 * there was. */
static void on_slots(void *ud, int code, redisReply *rep) {
  rshards_t *r = ud;
  r->map_busy = false;
  if (r->destroying) return;
  bool ok = !code && rep && rep->type == REDIS_REPLY_ARRAY && rep->elements;
  slot_range_t *m =
      ok ? presence__malloc(r->a0, rep->elements * sizeof *m) : NULL;
  size_t n = 0;
  for (size_t i = 0; m && i < rep->elements; i++) {
    redisReply *e = rep->element[i];
    redisReply *node = e->type == REDIS_REPLY_ARRAY && e->elements >= 3
                           ? e->element[2]
                           : NULL;
    if (!node || e->element[0]->type != REDIS_REPLY_INTEGER ||
        e->element[1]->type != REDIS_REPLY_INTEGER ||
        node->type != REDIS_REPLY_ARRAY || node->elements < 2 ||
        node->element[0]->type != REDIS_REPLY_STRING ||
        node->element[1]->type != REDIS_REPLY_INTEGER)
      continue;
    const char *h = node->element[0]->str[0] ? node->element[0]->str
                                             : r->topo_url.host;
    char *hc = h ? presence__malloc(r->a0, strlen(h) + 1) : NULL;
    if (!hc) continue;
    strcpy(hc, h);
    m[n++] = (slot_range_t){(unsigned)e->element[0]->integer,
                            (unsigned)e->element[1]->integer, hc,
                            (int)node->element[1]->integer};
  }
  if (n) {
    map_free(r);
    r->map = m;
    r->n_map = n;
    r->have_map = true;
  } else {
    presence__free(r->a0, m);
    if (r->host.log)
      r->host.log(r->host.host_ud, PRESENCE_LOG_WARN,
                  "redis cluster: no slot map (CLUSTER SLOTS); shards start "
                  "at the seeds and follow MOVED");
  }
  /* The first answer, a map or not, lets the shards connect. */
  start_waiting(r);
}

static void ask_slots(rshards_t *r) {
  if (!r->topo || r->map_busy || !presence__rconn_up(r->topo)) return;
  const char *argv[] = {"CLUSTER", "SLOTS"};
  if (!presence__rconn_command(r->topo, 2, argv, NULL, 0, on_slots, r)) {
    r->map_busy = true;
    r->map_asked_ms = uv_now(r->loop);
  }
}

static void topo_up(void *ud) { ask_slots(ud); }

/* Before each connect of the map's connection: shard 0's node (which
 * follows MOVED and the seeds); a failed first connect lets the shards
 * start at the seeds rather than wait. */
static void topo_before(void *ud, int failed) {
  rshards_t *r = ud;
  const presence__redis_url_t *u;
  const presence_redis_tls_t *tls;
  const presence_redis_options_t *o;
  presence__redis_conn_params(r->sub[0], &u, &tls, &o);
  if (u->host && (!r->topo_url.host || strcmp(u->host, r->topo_url.host) ||
                  u->port != r->topo_url.port)) {
    char *h = presence__malloc(r->a0, strlen(u->host) + 1);
    if (h) {
      strcpy(h, u->host);
      presence__free(r->a0, r->topo_url.host);
      r->topo_url.host = h;
      r->topo_url.port = u->port;
    }
  }
  if (failed && !r->have_map) start_waiting(r);
}

static void topo_log(void *ud, presence_log_level_t lvl, const char *msg) {
  rshards_t *r = ud;
  if (r->host.log) r->host.log(r->host.host_ud, lvl, msg);
}

/* The router each shard asks after a failure (redis.c, before_connect). */
static int route(void *ud, unsigned slot, const char *failed_host,
                 int failed_port, const char **host, int *port) {
  rshards_t *r = ud;
  /* Refreshed at most every 100 ms, however many shards fail at once. */
  if (!r->map_busy && uv_now(r->loop) - r->map_asked_ms >= 100) ask_slots(r);
  const slot_range_t *m = map_find(r, slot);
  if (!m || (failed_host && m->port == failed_port &&
             !strcmp(m->host, failed_host)))
    return 1;
  *host = m->host;
  *port = m->port;
  return 0;
}

/* ---- a channel's count across shards (redis_ccount.c) ------------------ */

/* A channel event of a tracked channel, with the channel's count: shard
 * i's count (the event's) learned first. Others pass as they are. */
static const presence_event_t *counted(shard_host_t *sh,
                                       const presence_event_t *ev,
                                       presence_event_t *copy) {
  rshards_t *r = sh->r;
  if ((ev->type != PRESENCE_EV_CHANNEL_JOIN &&
       ev->type != PRESENCE_EV_CHANNEL_LEAVE &&
       ev->type != PRESENCE_EV_CHANNEL_UPDATE) ||
      !ev->channel || !r->counts.t.count)
    return ev;
  presence__ccount_t *c = presence__ccount_find(&r->counts, ev->channel);
  if (!c) return ev;
  presence__ccount_learn(&r->counts, c, sh->i, ev->count, ev->shown_count,
                         ev->seq);
  *copy = *ev;
  copy->count = presence__ccount_sum(&r->counts, c);
  copy->shown_count = presence__ccount_sum_shown(&r->counts, c);
  return copy;
}

static void reseed(shard_host_t *sh);
static void claims_on_event(shard_host_t *sh, const presence_event_t *ev);
static void reclaim(rshards_t *r, uint32_t i);

static void sh_emit(void *ud, const presence_event_t *ev) {
  shard_host_t *sh = ud;
  presence_event_t copy;
  sh->r->host.emit(sh->r->host.host_ud, counted(sh, ev, &copy));
  if (ev->type == PRESENCE_EV_SESSION_DISCONNECTED ||
      ev->type == PRESENCE_EV_CLEANUP)
    claims_on_event(sh, ev);
}

static void sh_observe(void *ud, const presence_event_t *ev) {
  shard_host_t *sh = ud;
  presence_event_t copy;
  if (sh->reseed) reseed(sh);
  sh->r->host.observe(sh->r->host.host_ud, counted(sh, ev, &copy));
}

/* ---- log lines of many shards -------------------------------------------
 * One failure (a node lost, the cluster down, Redis restarted under
 * --redis-shards) reaches every shard on it, and each shard's store logged
 * the same line, naming no shard: 12 identical lines an operator could not
 * tell apart. Each line now names its shard and the node it uses, and a
 * line another shard logged within the last second is not logged again:
 * once the second is over one line says how many more shards said it,
 * which, and on which nodes. */

#define SHLOG_SLOTS 32       /* distinct lines held at once */
#define SHLOG_WINDOW_MS 1000 /* a repeat within this is folded */

typedef struct shlog_line {
  bool used;
  presence_log_level_t lvl;
  uint32_t more;  /* lines folded into it */
  char msg[512];  /* as the shard's store wrote it */
  char ids[160];  /* the other shards' numbers, each once, cut with "..." */
  char nodes[96]; /* their nodes, each once, cut with "..." */
} shlog_line_t;

typedef struct shlog {
  uv_timer_t t; /* libuv's: from libc, freed once closed (c-api.md) */
  rshards_t *r;
  bool armed;
  shlog_line_t line[SHLOG_SLOTS];
} shlog_t;

/* Shard i's node as "host:port" (its URL follows MOVED and the map). */
static void shard_node(rshards_t *r, uint32_t i, char *out, size_t n) {
  const presence__redis_url_t *u;
  const presence_redis_tls_t *tls;
  const presence_redis_options_t *o;
  presence__redis_conn_params(r->sub[i], &u, &tls, &o);
  if (u && u->host)
    snprintf(out, n, "%s%s%s:%d", strchr(u->host, ':') ? "[" : "", u->host,
             strchr(u->host, ':') ? "]" : "", u->port);
  else
    snprintf(out, n, "%s", u && u->path ? u->path : "?");
}

/* Append item to a ", "-joined list of cap bytes, unless it is there;
 * "..." ends a list that is full. */
static void list_add(char *list, size_t cap, const char *item) {
  size_t l = strlen(list), il = strlen(item);
  if (l >= 3 && !strcmp(list + l - 3, "...")) return;
  for (const char *p = list; (p = strstr(p, item)) != NULL; p += il)
    if ((p == list || p[-1] == ' ') && (p[il] == ',' || p[il] == '\0'))
      return;
  if (l + (l ? 2 : 0) + il + 4 > cap) {
    if (l + 4 <= cap) snprintf(list + l, cap - l, "...");
    return;
  }
  snprintf(list + l, cap - l, "%s%s", l ? ", " : "", item);
}

static void shlog_flush(shlog_t *g) {
  rshards_t *r = g->r;
  for (int k = 0; k < SHLOG_SLOTS; k++) {
    shlog_line_t *x = &g->line[k];
    if (x->used && x->more && r && r->host.log) {
      char out[1024];
      snprintf(out, sizeof out,
               "the same %u more time%s within 1 s, from shard%s %s of %u on "
               "%s: %s",
               x->more, x->more > 1 ? "s" : "", strchr(x->ids, ',') ? "s" : "",
               x->ids, r->n, x->nodes, x->msg);
      r->host.log(r->host.host_ud, x->lvl, out);
    }
    x->used = false;
  }
  g->armed = false;
}

static void on_shlog_timer(uv_timer_t *t) {
  shlog_flush(t->data);
}

static void on_shlog_closed(uv_handle_t *h) {
  free(h->data);
}

/* At attach, when the host logs: without it (no memory) lines come one by
 * one, each naming its shard. */
static void shlog_start(rshards_t *r) {
  const presence__redis_url_t *u;
  const presence_redis_tls_t *tls;
  const presence_redis_options_t *o;
  presence__redis_conn_params(r->sub[0], &u, &tls, &o);
  shlog_t *g = calloc(1, sizeof *g);
  if (!g || !o || !o->loop || uv_timer_init(o->loop, &g->t) != 0) {
    free(g);
    return;
  }
  g->t.data = g;
  g->r = r;
  r->lg = g;
}

/* At destroy: what is held is logged now, the timer closed (the loop frees
 * it); the shards' own destroy logs line by line. */
static void shlog_stop(rshards_t *r) {
  shlog_t *g = r->lg;
  if (!g) return;
  r->lg = NULL;
  shlog_flush(g);
  g->r = NULL;
  uv_timer_stop(&g->t);
  uv_close((uv_handle_t *)&g->t, on_shlog_closed);
}

static void sh_log(void *ud, presence_log_level_t lvl, const char *msg) {
  shard_host_t *sh = ud;
  rshards_t *r = sh->r;
  shlog_t *g = r->lg;
  char node[80], id[16];
  shard_node(r, sh->i, node, sizeof node);
  shlog_line_t *free_slot = NULL;
  for (int k = 0; g && k < SHLOG_SLOTS; k++) {
    shlog_line_t *x = &g->line[k];
    if (!x->used) {
      if (!free_slot) free_slot = x;
    } else if (x->lvl == lvl && !strcmp(x->msg, msg)) {
      x->more++;
      snprintf(id, sizeof id, "%u", sh->i);
      list_add(x->ids, sizeof x->ids, id);
      list_add(x->nodes, sizeof x->nodes, node);
      return;
    }
  }
  char out[1024];
  snprintf(out, sizeof out, "shard %u/%u at %s: %s", sh->i, r->n, node, msg);
  r->host.log(r->host.host_ud, lvl, out);
  /* Held for the window: the same line from the other shards folds in. */
  if (free_slot && strlen(msg) < sizeof free_slot->msg) {
    *free_slot = (shlog_line_t){.used = true, .lvl = lvl};
    snprintf(free_slot->msg, sizeof free_slot->msg, "%s", msg);
    if (!g->armed) {
      g->armed = true;
      uv_timer_start(&g->t, on_shlog_timer, SHLOG_WINDOW_MS, 0);
    }
  }
}

static int64_t sh_wall_ms(void *ud) {
  shard_host_t *sh = ud;
  return sh->r->host.wall_ms(sh->r->host.host_ud);
}

static int64_t sh_mono_ms(void *ud) {
  shard_host_t *sh = ud;
  return sh->r->host.mono_ms(sh->r->host.host_ud);
}

/* One shard's count of one channel, asked with the shard's counter. */
typedef struct seed {
  rshards_t *r;
  uint32_t i;
  char name[PRESENCE_CHANNEL_MAX + 1];
} seed_t;

/* {0, {count, more, n, members..., seq}} (q_members with limit 0). */
static void on_seed(void *ud, int code, redisReply *rep) {
  seed_t *q = ud;
  rshards_t *r = q->r;
  if (r->destroying) {
    presence__free(r->a, q);
    return;
  }
  redisReply *p = !code && rep && rep->type == REDIS_REPLY_ARRAY &&
                          rep->elements > 1 &&
                          rep->element[0]->type == REDIS_REPLY_INTEGER &&
                          rep->element[0]->integer == 0
                      ? rep->element[1]
                      : NULL;
  bool ok = p && p->type == REDIS_REPLY_ARRAY && p->elements >= 4 &&
            p->element[0]->type == REDIS_REPLY_STRING &&
            p->element[p->elements - 1]->type == REDIS_REPLY_STRING;
  if (!ok) {
    r->sh[q->i].reseed = true; /* with the next event of the shard */
  } else {
    presence__ccount_t *c = presence__ccount_find(&r->counts, q->name);
    if (c) {
      /* 'count/shown count' (q_members). */
      char *e = NULL;
      uint64_t n = strtoull(p->element[0]->str, &e, 10);
      uint64_t shown = *e == '/' ? strtoull(e + 1, NULL, 10) : n;
      presence__ccount_learn(
          &r->counts, c, q->i, n, shown,
          strtoull(p->element[p->elements - 1]->str, NULL, 10));
    }
  }
  presence__free(r->a, q);
}

/* Ask shard i for channel name's count. false: not sent (the shard is
 * not registered, or no memory): asked again later. */
static bool seed(rshards_t *r, uint32_t i, const char *name) {
  seed_t *q = presence__malloc(r->a, sizeof *q);
  if (!q) return false;
  q->r = r;
  q->i = i;
  snprintf(q->name, sizeof q->name, "%s", name);
  const char *args[] = {q->name, "", "0"};
  if (presence__redis_op(r->sub[i], "q_members", 3, args, on_seed, q)) {
    presence__free(r->a, q);
    return false;
  }
  return true;
}

/* Every tracked channel's count in shard sh, asked again: after the shard
 * registered again (a reconnect, a fence, a store loss: members may have
 * gone with no event, as when their instance died with the data), or
 * after a query could not be sent. */
static void reseed(shard_host_t *sh) {
  rshards_t *r = sh->r;
  sh->reseed = false;
  size_t pos = 0;
  presence__ccount_t *c;
  while (!sh->reseed && (c = presence__table_next(&r->counts.t, &pos)))
    if (!seed(r, sh->i, c->name)) sh->reseed = true;
}

static void shard_ready(void *ud) {
  shard_host_t *sh = ud;
  if (sh->r->destroying) return;
  reseed(sh);
  reclaim(sh->r, sh->i);
}

int presence__rshards_shown(presence_store_t *s, const char *channel,
                            const char *user_id, uint64_t shard_shown,
                            uint64_t *out) {
  rshards_t *r = (rshards_t *)s;
  *out = shard_shown;
  if (!r->counts_up) return 0;
  presence__ccount_t *c = presence__ccount_find(&r->counts, channel);
  if (!c) return 0;
  uint32_t i = shard_of(r, user_id, strlen(user_id));
  for (uint32_t j = 0; j < r->n; j++)
    if (j != i && c->sh[j].count != UINT64_MAX) *out += c->sh[j].shown;
  /* Learned again with the shard's counter, ordered against its log. */
  if (!seed(r, i, c->name)) r->sh[i].reseed = true;
  return 0;
}

int presence__rshards_track(presence_store_t *s, const char *channel,
                            int delta) {
  rshards_t *r = (rshards_t *)s;
  if (!presence__rshards_is(s) || !r->counts_up) return PRESENCE_EINVAL;
  int rc;
  presence__ccount_t *c = presence__ccount_track(&r->counts, channel, delta,
                                                 &rc);
  for (uint32_t i = 0; c && i < r->n; i++)
    if (!seed(r, i, c->name)) r->sh[i].reseed = true;
  return rc;
}

/* The map's connection, on shard 0's parameters (credentials, TLS). 0, or
 * an error: the shards then start at the seeds. */
static int topo_start(rshards_t *r) {
  const presence__redis_url_t *u;
  const presence_redis_tls_t *tls;
  const presence_redis_options_t *o;
  presence__redis_conn_params(r->sub[0], &u, &tls, &o);
  r->loop = o->loop;
  if (!u->host) return PRESENCE_EINVAL;
  r->topo_url = *u;
  r->topo_url.sentinels = NULL;
  r->topo_url.n_sentinels = 0;
  /* Ours (topo_before follows shard 0's); the rest stays shard 0's. */
  r->topo_url.host = presence__malloc(r->a0, strlen(u->host) + 1);
  if (!r->topo_url.host) return PRESENCE_ENOMEM;
  strcpy(r->topo_url.host, u->host);
  presence__rconn_config_t cfg = {
      .loop = o->loop,
      .alloc = r->a,
      .url = &r->topo_url,
      .tls = tls,
      .name = "redis cluster map",
      .command_timeout_ms = o->command_timeout_ms,
      .reconnect_max_ms = o->reconnect_max_ms,
      .max_reply_bytes = o->max_reply_bytes,
      .max_reply_elements = o->max_reply_elements,
      .log = topo_log,
      .on_up = topo_up,
      .before_connect = topo_before,
      .ud = r,
  };
  int rc = presence__rconn_new(&cfg, &r->topo);
  if (!rc) presence__rconn_start(r->topo);
  return rc;
}

/* A follower's fed reply goes to the shard whose streams it names; the
 * end of the feed to every shard (each then reads its own log). */
static void feed_reply_of(void *ud, redisReply *rep) {
  rshards_t *r = ud;
  for (uint32_t i = 0; i < r->n; i++)
    if (presence__redis_feed_take(r->sub[i], rep)) return;
}

static void feed_ended_of(void *ud) {
  rshards_t *r = ud;
  for (uint32_t i = 0; i < r->n && !r->destroying; i++)
    presence__redis_feed_ended(r->sub[i]);
}

/* One feed for the S shards rather than S: one socket per follower, and a
 * worker's end is one descriptor whatever S is. Order holds per shard (one
 * stream socket, each shard's replies written in its order), which is the
 * only order the logs have. */
static void feed_start(rshards_t *r) {
  const presence__redis_url_t *url;
  const presence_redis_tls_t *tls;
  const presence_redis_options_t *o;
  presence__redis_conn_params(r->sub[0], &url, &tls, &o);
  presence__rfeed_config_t fc = {
      .loop = o->loop,
      .alloc = r->a,
      .in_fd = r->feed_in > 0 ? r->feed_in : -1,
      .out_fds = r->feed_out,
      .n_out = r->n_feed_out,
      .max_reply_bytes = o->max_reply_bytes,
      .max_reply_elements = o->max_reply_elements,
      .gather = true, /* S shards' reads in a turn: one write */
      .on_reply = feed_reply_of,
      .on_end = feed_ended_of,
      .ud = r,
  };
  if (presence__rfeed_new(&fc, &r->feed)) return; /* each reads itself */
  r->feed_in = 0; /* the feed owns the descriptors now */
  r->n_feed_out = 0;
  for (uint32_t i = 0; i < r->n; i++)
    presence__redis_share_feed(r->sub[i], r->feed, i == 0);
}

static int s_attach(presence_store_t *base, const presence_store_host_t *host) {
  rshards_t *r = (rshards_t *)base;
  r->a = host->allocator ? host->allocator : presence__default_allocator();
  r->host = *host;
  r->sh = presence__malloc(r->a, r->n * sizeof *r->sh);
  if (!r->sh) return PRESENCE_ENOMEM;
  int rc = presence__ccounts_init(&r->counts, r->a, r->n);
  if (rc) return rc;
  r->counts_up = true;
  rc = presence__table_init(&r->claims, r->a, offsetof(claim_t, id));
  if (rc) return rc;
  r->claims_up = true;
  r->gate_head = presence__malloc(r->a, r->n * sizeof *r->gate_head);
  r->gate_tail = presence__malloc(r->a, r->n * sizeof *r->gate_tail);
  if (!r->gate_head || !r->gate_tail) return PRESENCE_ENOMEM;
  memset(r->gate_head, 0, r->n * sizeof *r->gate_head);
  memset(r->gate_tail, 0, r->n * sizeof *r->gate_tail);
  for (uint32_t i = 0; i < r->n; i++) {
    shard_host_t *sh = &r->sh[i];
    *sh = (shard_host_t){.r = r, .i = i, .h = *host};
    sh->h.host_ud = sh;
    sh->h.emit = sh_emit;
    sh->h.emit_packed = NULL; /* redis.c reports unpacked events */
    sh->h.observe = host->observe ? sh_observe : NULL;
    sh->h.log = host->log ? sh_log : NULL;
    sh->h.wall_ms = host->wall_ms ? sh_wall_ms : NULL;
    sh->h.mono_ms = host->mono_ms ? sh_mono_ms : NULL;
    presence__redis_on_ready(r->sub[i], shard_ready, sh);
    rc = r->sub[i]->ops->attach(r->sub[i], &sh->h);
    if (rc) return rc;
  }
  if (host->log) shlog_start(r);
  if (r->feed_in > 0 || r->n_feed_out) feed_start(r);
  if (r->cluster && topo_start(r)) start_waiting(r);
  return 0;
}

/* A write, routed to its shard (claims aside: s_write). */
static int route_write(rshards_t *r, const presence_write_t *w,
                       presence_store_done_fn done, void *ud) {
  if (w->kind == PRESENCE_WRITE_RESET) {
    fan_t *f = presence__malloc(r->a, sizeof *f);
    if (!f) return PRESENCE_ENOMEM;
    *f = (fan_t){r, r->n, 0, done, ud};
    for (uint32_t i = 0; i < r->n; i++) {
      int rc = r->sub[i]->ops->write(r->sub[i], w, fan_done, f);
      if (rc) fan_done(f, rc);
    }
    return 0;
  }
  presence_write_t c = *w;
  uint32_t i = r->n;
  if (w->kind == PRESENCE_WRITE_CONNECT) {
    /* Session ids are unique per instance across its shards too. */
    if (shard_of_session(r, w->session_id, w->session_id_len) < r->n)
      return PRESENCE_EEXIST;
    i = shard_of(r, w->user_id, w->user_id_len);
  } else if (w->handle != PRESENCE_HANDLE_NONE) {
    c.handle = h_dec(r, w->handle, &i);
  } else if (w->session_id) {
    i = shard_of_session(r, w->session_id, w->session_id_len);
  } else if (w->user_id) {
    i = shard_of(r, w->user_id, w->user_id_len);
  }
  if (i >= r->n) return PRESENCE_ENOSESSION;
  presence_handle_t h = PRESENCE_HANDLE_NONE;
  if (w->handle_out) c.handle_out = &h;
  int rc = r->sub[i]->ops->write(r->sub[i], &c, done, ud);
  if (w->handle_out && h != PRESENCE_HANDLE_NONE)
    *w->handle_out = h_enc(r, h, i);
  return rc;
}

/* ---- session ids across shards ------------------------------------------ */

/*
 * A session lives in its user's shard, whose session index refuses an id
 * held twice only within that shard. An id a caller chose (a backend's; not
 * presenced's random UUIDs, PRESENCE_WRITE_F_RANDOM_ID) is therefore first
 * claimed in the id's own shard (fnv1a64(id) mod S; the script's `claim`:
 * id -> user and owning instance), and its session is opened in its user's
 * shard only once the claim holds. Meanwhile the writes for that user
 * shard wait behind the open in the shard's gate, in call order (so the
 * order of every write is the caller's, as without claims), and the caller
 * holds a stand-in handle (its low word 0, which no shard handle has:
 * theirs are slot * S + shard with slot >= 1), mapped to the session's
 * handle once it is opened. A shard with nothing held takes writes straight
 * through, so WebSocket sessions (random ids) cost nothing more.
 *
 * A claim held for another user is checked against that user's shard: if
 * the session is gone there (its instance died, or the end's unclaim was
 * lost), it was stale and is taken over; else EEXIST. A claim goes with the
 * session's end here, with a session.disconnected this instance decided,
 * and with its instance (each shard's reaper drops the dead instance's
 * claims there: unclaim_inst). After a shard registers again (a store
 * loss) this instance claims its sessions' ids there again.
 */

static const char *str_copy(char **at, const char *s, size_t n) {
  if (!s) return NULL;
  char *d = *at;
  memcpy(d, s, n);
  d[n] = '\0';
  *at += n + 1;
  return d;
}

/* A deep copy of w (strings in the same block), or NULL. */
static qwrite_t *write_copy(rshards_t *r, const presence_write_t *w,
                            presence_store_done_fn done, void *ud) {
  size_t iid = w->instance_id ? strlen(w->instance_id) : 0;
  size_t need = sizeof(qwrite_t) + iid + w->session_id_len + w->user_id_len +
                w->meta_len + w->channel_len + w->data_len + w->device_len +
                w->message_len + w->emoji_len + 9;
  qwrite_t *q = presence__malloc(r->a, need);
  if (!q) return NULL;
  q->next = NULL;
  q->claim = NULL;
  q->w = *w;
  q->w.handle_out = NULL;
  q->done = done;
  q->ud = ud;
  char *at = (char *)(q + 1);
  q->w.instance_id = str_copy(&at, w->instance_id, iid);
  q->w.session_id = str_copy(&at, w->session_id, w->session_id_len);
  q->w.user_id = str_copy(&at, w->user_id, w->user_id_len);
  q->w.meta = str_copy(&at, w->meta, w->meta_len);
  q->w.channel = str_copy(&at, w->channel, w->channel_len);
  q->w.data = str_copy(&at, w->data, w->data_len);
  q->w.device = str_copy(&at, w->device, w->device_len);
  q->w.message = str_copy(&at, w->message, w->message_len);
  q->w.emoji = str_copy(&at, w->emoji, w->emoji_len);
  return q;
}

static bool is_standin(presence_handle_t h) {
  return h != PRESENCE_HANDLE_NONE && (h & 0xffffffffu) == 0;
}

static claim_t *claim_of_handle(const rshards_t *r, presence_handle_t h) {
  uint32_t slot = ((uint32_t)(h >> 32) & 0xffffffu) - 1;
  if (slot >= r->n_slot || !r->cl_slot[slot]) return NULL;
  claim_t *c = r->cl_slot[slot];
  return c->ph == h ? c : NULL;
}

static claim_t *claim_of_id(const rshards_t *r, const char *id, size_t len) {
  if (!r->claims_up || !r->claims.count || !id || len > PRESENCE_ID_MAX)
    return NULL;
  return presence__table_find(&r->claims, id, len, presence__hash(id, len));
}

static void claim_drop(rshards_t *r, claim_t *c) {
  if (c->indexed) presence__table_remove(&r->claims, c);
  r->cl_slot[c->slot] = NULL;
  r->cl_gen[c->slot]++;
  r->cl_free[r->n_free++] = c->slot;
  presence__free(r->a, c);
}

/* A session record for open w (not yet indexed by id), or NULL. */
static claim_t *claim_new(rshards_t *r, const presence_write_t *w) {
  if (!r->claims_up || presence__table_make_room(&r->claims)) return NULL;
  if (!r->n_free && r->n_slot == r->cap_slot) {
    uint32_t cap = r->cap_slot ? r->cap_slot * 2 : 64;
    if (cap > 0xffffffu) return NULL;
    claim_t **sl = presence__realloc(r->a, r->cl_slot, cap * sizeof *sl);
    if (sl) r->cl_slot = sl;
    uint8_t *g = sl ? presence__realloc(r->a, r->cl_gen, cap) : NULL;
    if (g) r->cl_gen = g;
    uint32_t *f = g ? presence__realloc(r->a, r->cl_free, cap * sizeof *f)
                    : NULL;
    if (!f) return NULL;
    r->cl_free = f;
    memset(r->cl_gen + r->cap_slot, 0, cap - r->cap_slot);
    r->cap_slot = cap;
  }
  claim_t *c = presence__malloc(r->a, sizeof *c);
  if (!c) return NULL;
  memset(c, 0, sizeof *c);
  c->slot = r->n_free ? r->cl_free[--r->n_free] : r->n_slot++;
  r->cl_slot[c->slot] = c;
  c->ph = (presence_handle_t)((uint64_t)r->cl_gen[c->slot] << 24 |
                              (c->slot + 1))
          << 32;
  c->shard = presence__redis_user_shard(w->session_id, w->session_id_len,
                                        r->n);
  c->ushard = shard_of(r, w->user_id, w->user_id_len);
  memcpy(c->id, w->session_id, w->session_id_len);
  memcpy(c->user, w->user_id, w->user_id_len);
  c->k.hash = presence__hash(c->id, w->session_id_len);
  c->k.len = (uint8_t)w->session_id_len;
  return c;
}

static void claim_index(rshards_t *r, claim_t *c) {
  claim_t *old = claim_of_id(r, c->id, c->k.len);
  if (old) {
    presence__table_remove(&r->claims, old);
    old->indexed = false;
  }
  presence__table_insert(&r->claims, c); /* room made in claim_new */
  c->indexed = true;
}

/* A call's context: the session by its stand-in handle (it may be gone
 * when the answer comes). */
typedef struct claim_req {
  rshards_t *r;
  presence_handle_t ph;
  presence_store_done_fn done; /* the open's */
  void *ud;
  char other[PRESENCE_ID_MAX + 1]; /* the user holding the claim */
} claim_req_t;

static claim_req_t *req_new(rshards_t *r, presence_handle_t ph) {
  claim_req_t *q = presence__malloc(r->a, sizeof *q);
  if (q) {
    memset(q, 0, sizeof *q);
    q->r = r;
    q->ph = ph;
  }
  return q;
}

static void on_fire(void *ud, int code, redisReply *rep) {
  (void)code, (void)rep;
  claim_req_t *q = ud;
  presence__free(q->r->a, q);
}

/* Fire and forget: op (id, user) in shard i. */
static void claim_op(rshards_t *r, uint32_t i, const char *op, const char *a,
                     const char *b) {
  claim_req_t *q = req_new(r, 0);
  if (!q) return;
  const char *args[] = {a, b, ""};
  if (presence__redis_op(r->sub[i], op, 3, args, on_fire, q))
    presence__free(r->a, q);
}

/* The session ended (or never began): its record and claim go. */
static void claim_release(rshards_t *r, claim_t *c) {
  if (c->claimed && (c->state == CL_BOUND || c->fresh))
    claim_op(r, c->shard, "unclaim", c->id, c->user);
  claim_drop(r, c);
}

static void gate_run(rshards_t *r, uint32_t i);
static void claim_ask(rshards_t *r, claim_t *c, const char *stale);

static void claim_settle(rshards_t *r, claim_t *c, int code) {
  if (code) {
    c->state = CL_REFUSED;
    c->refused = code;
  } else {
    c->state = CL_OK;
  }
  gate_run(r, c->ushard);
}

static void on_verify(void *ud, int status, const presence_session_info_t *s,
                      size_t n) {
  claim_req_t *q = ud;
  rshards_t *r = q->r;
  claim_t *c = r->destroying ? NULL : claim_of_handle(r, q->ph);
  if (c) {
    bool live = status != 0; /* not known: taken as held */
    for (size_t i = 0; !live && i < n; i++)
      live = s[i].session_id && !strcmp(s[i].session_id, c->id);
    if (live)
      claim_settle(r, c, PRESENCE_EEXIST);
    else
      claim_ask(r, c, q->other);
  }
  presence__free(r->a, q);
}

/* {0, {''}}: claimed; {0, {user}}: held for that user. */
static void on_claim(void *ud, int code, redisReply *rep) {
  claim_req_t *q = ud;
  rshards_t *r = q->r;
  claim_t *c = r->destroying ? NULL : claim_of_handle(r, q->ph);
  redisReply *p = !code && rep && rep->type == REDIS_REPLY_ARRAY &&
                          rep->elements > 1 &&
                          rep->element[0]->type == REDIS_REPLY_INTEGER &&
                          rep->element[0]->integer == 0 &&
                          rep->element[1]->type == REDIS_REPLY_ARRAY &&
                          rep->element[1]->elements == 1 &&
                          rep->element[1]->element[0]->type ==
                              REDIS_REPLY_STRING
                      ? rep->element[1]->element[0]
                      : NULL;
  if (!c) {
    presence__free(r->a, q);
    return;
  }
  if (!p || !p->str[0]) {
    /* Claimed; or the id's shard did not answer: the open goes on
     * unclaimed (the user's shard still refuses an id held there). */
    if (p && !q->other[0]) c->fresh = true;
    if (!p && r->host.log)
      r->host.log(r->host.host_ud, PRESENCE_LOG_WARN,
                  "redis shards: a session id could not be claimed; opened "
                  "without its cluster-wide claim");
    if (!p) c->claimed = false;
    presence__free(r->a, q);
    claim_settle(r, c, 0);
    return;
  }
  if (q->other[0]) { /* held again after we found it stale */
    presence__free(r->a, q);
    claim_settle(r, c, PRESENCE_EEXIST);
    return;
  }
  /* Held for another user: is that session still there? */
  snprintf(q->other, sizeof q->other, "%s", p->str);
  presence_store_t *s = r->sub[shard_of(r, q->other, strlen(q->other))];
  if (s->ops->sessions_query(s, q->other, on_verify, q)) {
    presence__free(r->a, q);
    claim_settle(r, c, PRESENCE_EEXIST);
  }
}

/* Ask shard c->shard for the claim (stale: a user whose claim was found
 * stale, to take over; NULL for none). */
static void claim_ask(rshards_t *r, claim_t *c, const char *stale) {
  c->asked = true;
  claim_req_t *q = req_new(r, c->ph);
  if (!q) {
    claim_settle(r, c, PRESENCE_ENOMEM);
    return;
  }
  snprintf(q->other, sizeof q->other, "%s", stale ? stale : "");
  const char *args[] = {c->id, c->user, stale ? stale : ""};
  int rc = presence__redis_op(r->sub[c->shard], "claim", 3, args, on_claim, q);
  if (rc) on_claim(q, rc, NULL); /* the id's shard not registered */
}

/* The open's answer from the user's shard. Refused there (EEXIST, ELIMIT,
 * ...): no session, so no claim. Transport failures keep the session (it
 * is re-asserted). */
static void on_connect_done(void *ud, int status) {
  claim_req_t *q = ud;
  rshards_t *r = q->r;
  claim_t *c = r->destroying ? NULL : claim_of_handle(r, q->ph);
  if (c && status && status != PRESENCE_ESTORE &&
      status != PRESENCE_ETIMEDOUT && status != PRESENCE_EFENCED &&
      status != PRESENCE_ESHUTDOWN)
    claim_release(r, c);
  presence_store_done_fn done = q->done;
  void *dud = q->ud;
  presence__free(r->a, q);
  if (done) done(dud, status);
}

/* Route w, held or not: a stand-in handle becomes the session's, and an
 * end releases the session's record. */
static int pass_write(rshards_t *r, presence_write_t *w,
                      presence_store_done_fn done, void *ud) {
  claim_t *c = NULL;
  if (is_standin(w->handle)) {
    c = claim_of_handle(r, w->handle);
    if (!c || c->state != CL_BOUND) return PRESENCE_ENOSESSION;
    w->handle = c->real;
  } else if (w->kind == PRESENCE_WRITE_END && w->session_id &&
             w->handle == PRESENCE_HANDLE_NONE) {
    c = claim_of_id(r, w->session_id, w->session_id_len);
    if (c && c->state != CL_BOUND) c = NULL;
  }
  int rc = route_write(r, w, done, ud);
  if (c && ((!rc && w->kind == PRESENCE_WRITE_END) ||
            rc == PRESENCE_ENOSESSION))
    claim_release(r, c);
  return rc;
}

/* Open a held session whose claim settled. */
static void open_held(rshards_t *r, qwrite_t *x) {
  claim_t *c = x->claim;
  if (c->state == CL_REFUSED) {
    int code = c->refused;
    claim_release(r, c);
    if (x->done) x->done(x->ud, code);
    return;
  }
  claim_req_t *q = req_new(r, c->ph);
  if (!q) {
    claim_release(r, c);
    if (x->done) x->done(x->ud, PRESENCE_ENOMEM);
    return;
  }
  q->done = x->done;
  q->ud = x->ud;
  presence_handle_t h = PRESENCE_HANDLE_NONE;
  x->w.handle_out = &h;
  int rc = route_write(r, &x->w, on_connect_done, q);
  if (rc) {
    presence__free(r->a, q);
    claim_release(r, c);
    if (x->done) x->done(x->ud, rc);
    return;
  }
  c->real = h;
  c->state = CL_BOUND;
}

/* Shard i's held writes, from the head, until an open whose claim is not
 * settled yet. */
static void gate_run(rshards_t *r, uint32_t i) {
  /* Not from inside itself: a claim_ask that settles at once (the id's
   * shard not connected) ran this gate again from claim_settle, which
   * opened or refused the very write held here and freed it and its claim
   * (claim_release) while this call still held both (a use after free,
   * found by fuzz_redis_store). This loop goes on with what such a call
   * would have done. */
  if (r->sh[i].gate_running) return;
  r->sh[i].gate_running = true;
  qwrite_t *x;
  while (!r->destroying && (x = r->gate_head[i])) {
    claim_t *c = x->claim;
    if (c && c->state == CL_PENDING) {
      if (!c->asked) claim_ask(r, c, NULL); /* may settle it at once */
      if (c->state == CL_PENDING) break;
      continue; /* settled: taken next round */
    }
    r->gate_head[i] = x->next;
    if (!x->next) r->gate_tail[i] = NULL;
    if (c) {
      open_held(r, x);
    } else {
      int rc = pass_write(r, &x->w, x->done, x->ud);
      if (rc && x->done) x->done(x->ud, rc);
    }
    presence__free(r->a, x);
  }
  r->sh[i].gate_running = false;
}

static void gate_push(rshards_t *r, uint32_t i, qwrite_t *q) {
  if (r->gate_tail[i])
    r->gate_tail[i]->next = q;
  else
    r->gate_head[i] = q;
  r->gate_tail[i] = q;
}

/* After shard i registered again (a store loss may have taken its claims):
 * the ids of this instance's sessions claimed there are claimed again. */
static void reclaim(rshards_t *r, uint32_t i) {
  if (!r->claims_up) return;
  size_t pos = 0;
  claim_t *c;
  while ((c = presence__table_next(&r->claims, &pos)))
    if (c->claimed && c->state == CL_BOUND && c->shard == i)
      claim_op(r, i, "claim", c->id, c->user);
}

typedef struct unclaim_req {
  rshards_t *r;
  uint32_t i;
  char dead[PRESENCE_ID_MAX + 1];
} unclaim_req_t;

static bool unclaim_send(unclaim_req_t *q);

/* {0, {'1'}}: more of the dead instance's claims are left: again. */
static void on_unclaim_inst(void *ud, int code, redisReply *rep) {
  unclaim_req_t *q = ud;
  bool more = !code && rep && rep->type == REDIS_REPLY_ARRAY &&
              rep->elements > 1 && rep->element[1]->type == REDIS_REPLY_ARRAY &&
              rep->element[1]->elements == 1 &&
              rep->element[1]->element[0]->type == REDIS_REPLY_STRING &&
              rep->element[1]->element[0]->str[0] == '1';
  if (!more || q->r->destroying || !unclaim_send(q))
    presence__free(q->r->a, q);
}

static bool unclaim_send(unclaim_req_t *q) {
  const char *args[] = {q->dead};
  return presence__redis_op(q->r->sub[q->i], "unclaim_inst", 1, args,
                            on_unclaim_inst, q) == 0;
}

static void unclaim_inst(rshards_t *r, uint32_t i, const char *dead) {
  unclaim_req_t *q = presence__malloc(r->a, sizeof *q);
  if (!q) return;
  q->r = r;
  q->i = i;
  snprintf(q->dead, sizeof q->dead, "%s", dead);
  if (!unclaim_send(q)) presence__free(r->a, q);
}

/* Events this instance decided: a dead instance reaped in shard i loses
 * its claims there. (This instance's own sessions end through its writes,
 * pass_write; an event cannot tell which opening of a reused id it ends.) */
static void claims_on_event(shard_host_t *sh, const presence_event_t *ev) {
  rshards_t *r = sh->r;
  if (ev->type == PRESENCE_EV_CLEANUP && ev->instance_id &&
      ev->reason == PRESENCE_REASON_INSTANCE_LOST &&
      strcmp(ev->instance_id, r->host.instance_id))
    unclaim_inst(r, sh->i, ev->instance_id);
}

/* Whether an end of session id is held in shard i's gate. */
static bool end_held(const rshards_t *r, uint32_t i, const char *id,
                     size_t len) {
  for (const qwrite_t *x = r->gate_head[i]; x; x = x->next) {
    if (x->w.kind != PRESENCE_WRITE_END) continue;
    const claim_t *c =
        is_standin(x->w.handle) ? claim_of_handle(r, x->w.handle) : NULL;
    const char *xid = c ? c->id : x->w.session_id;
    if (xid && strlen(xid) == len && !memcmp(xid, id, len)) return true;
  }
  return false;
}

/* The shard a write goes to (n: none), as route_write routes it, with the
 * sessions held in gates known by their records. */
static uint32_t write_shard(rshards_t *r, const presence_write_t *w) {
  if (is_standin(w->handle)) {
    claim_t *c = claim_of_handle(r, w->handle);
    return c ? c->ushard : r->n;
  }
  if (w->handle != PRESENCE_HANDLE_NONE) {
    uint32_t i;
    h_dec(r, w->handle, &i);
    return i;
  }
  if (w->session_id) {
    claim_t *c = claim_of_id(r, w->session_id, w->session_id_len);
    if (c) return c->ushard;
    return shard_of_session(r, w->session_id, w->session_id_len);
  }
  if (w->user_id) return shard_of(r, w->user_id, w->user_id_len);
  return r->n;
}

static int s_write(presence_store_t *base, const presence_write_t *w,
                   presence_store_done_fn done, void *ud) {
  rshards_t *r = (rshards_t *)base;
  if (w->kind == PRESENCE_WRITE_RESET) return route_write(r, w, done, ud);
  if (w->kind == PRESENCE_WRITE_END_GRACES) return PRESENCE_ENOTSUP;
  bool claim = w->kind == PRESENCE_WRITE_CONNECT &&
               !(w->flags & PRESENCE_WRITE_F_RANDOM_ID);
  uint32_t i = w->kind == PRESENCE_WRITE_CONNECT
                   ? shard_of(r, w->user_id, w->user_id_len)
                   : write_shard(r, w);
  if (i >= r->n) return PRESENCE_ENOSESSION;
  if (!claim && !r->gate_head[i]) {
    presence_write_t x = *w;
    return pass_write(r, &x, done, ud);
  }
  claim_t *c = NULL, *prev = NULL;
  bool defer = false;
  if (w->kind == PRESENCE_WRITE_CONNECT) {
    /* Held here already, or open: EEXIST, as route_write would say; an
     * open whose end is held behind it frees the id in order. */
    prev = claim_of_id(r, w->session_id, w->session_id_len);
    bool ends = end_held(r, i, w->session_id, w->session_id_len);
    if ((prev && !prev->ending && !ends) ||
        (!ends &&
         shard_of_session(r, w->session_id, w->session_id_len) < r->n))
      return PRESENCE_EEXIST;
    defer = prev != NULL || ends; /* ask the claim in turn */
    if (!(c = claim_new(r, w))) return PRESENCE_ENOMEM;
    c->claimed = claim;
    if (!claim) c->state = CL_OK;
  }
  qwrite_t *q = write_copy(r, w, done, ud);
  if (!q) {
    if (c) claim_drop(r, c);
    return PRESENCE_ENOMEM;
  }
  if (c) {
    q->claim = c;
    claim_index(r, c);
    if (w->handle_out) *w->handle_out = c->ph;
  } else if (w->kind == PRESENCE_WRITE_END) {
    claim_t *e = is_standin(w->handle)
                     ? claim_of_handle(r, w->handle)
                     : claim_of_id(r, w->session_id, w->session_id_len);
    if (e) e->ending = true;
  }
  bool idle = !r->gate_head[i];
  gate_push(r, i, q);
  /* A claim is asked at once, unless an earlier open of the id is held:
   * then once that one's end has gone (gate_run), so the shard of the id
   * sees the release before the new claim. */
  if (c && claim && !defer) claim_ask(r, c, NULL);
  else if (idle) gate_run(r, i);
  return 0;
}

static int64_t s_tick(presence_store_t *base, int64_t now) {
  rshards_t *r = (rshards_t *)base;
  int64_t next = -1;
  for (uint32_t i = 0; i < r->n; i++) {
    int64_t t = r->sub[i]->ops->tick(r->sub[i], now);
    if (t >= 0 && (next < 0 || t < next)) next = t;
  }
  return next;
}

static int s_user_query(presence_store_t *base, const char *user_id,
                        void (*cb)(void *, int, const presence_user_info_t *),
                        void *ud) {
  rshards_t *r = (rshards_t *)base;
  presence_store_t *s = r->sub[shard_of(r, user_id, strlen(user_id))];
  return s->ops->user_query(s, user_id, cb, ud);
}

static int s_sessions_query(presence_store_t *base, const char *user_id,
                            void (*cb)(void *, int,
                                       const presence_session_info_t *, size_t),
                            void *ud) {
  rshards_t *r = (rshards_t *)base;
  presence_store_t *s = r->sub[shard_of(r, user_id, strlen(user_id))];
  return s->ops->sessions_query(s, user_id, cb, ud);
}

static int s_user_channels(presence_store_t *base, const char *user_id,
                           void (*cb)(void *, int,
                                      const presence_member_info_t *, size_t,
                                      uint64_t, const char *),
                           void *ud) {
  rshards_t *r = (rshards_t *)base;
  presence_store_t *s = r->sub[shard_of(r, user_id, strlen(user_id))];
  return s->ops->user_channels(s, user_id, cb, ud);
}

static int s_session_get(presence_store_t *base, const char *session_id,
                         presence_session_info_t *out) {
  rshards_t *r = (rshards_t *)base;
  for (uint32_t i = 0; i < r->n; i++)
    if (!r->sub[i]->ops->session_get(r->sub[i], session_id, out)) return 0;
  return PRESENCE_ENOSESSION;
}

static int s_stats(presence_store_t *base, presence_stats_t *out) {
  rshards_t *r = (rshards_t *)base;
  memset(out, 0, sizeof *out);
  for (uint32_t i = 0; i < r->n; i++) {
    presence_stats_t t;
    int rc = r->sub[i]->ops->stats(r->sub[i], &t);
    if (rc) return rc;
    out->sessions += t.sessions;
    out->users_online += t.users_online;
    out->users_idle += t.users_idle;
    out->users_known += t.users_known;
    for (int k = 0; k < PRESENCE_EV_COUNT_; k++) out->events[k] += t.events[k];
    out->channels += t.channels;
    out->members += t.members;
    out->memberships += t.memberships;
  }
  /* Per-shard sequences: no one number orders them (see log_read). Their
   * sum still only grows, by one per event: /metrics' event sequence. */
  out->last_seq = 0;
  for (uint32_t i = 0; i < r->n; i++)
    out->last_seq += r->sub[i]->ops->log_last_seq(r->sub[i]);
  return 0;
}

/* The log is one stream per shard, each with its own sequence (one counter
 * for the cluster would be one hot key on one primary): the engine reads
 * it as several logs, one per shard, through a cursor holding a position
 * in each (src/core/cursor.c).
 * Live events still reach host->observe from every shard's reader. */
static uint32_t s_log_count(presence_store_t *base) {
  return ((rshards_t *)base)->n;
}

static int s_log_read_of(presence_store_t *base, uint32_t log,
                         uint64_t after_seq, size_t max,
                         void (*cb)(void *, int, const presence_event_t *,
                                    size_t),
                         void *ud) {
  rshards_t *r = (rshards_t *)base;
  if (log >= r->n) return PRESENCE_EINVAL;
  return r->sub[log]->ops->log_read(r->sub[log], after_seq, max, cb, ud);
}

static uint64_t s_log_last_seq_of(presence_store_t *base, uint32_t log) {
  rshards_t *r = (rshards_t *)base;
  return log < r->n ? r->sub[log]->ops->log_last_seq(r->sub[log]) : 0;
}

/* One sequence number cannot name a position in S logs: the single-log
 * forms refuse (a reader uses a cursor). */
static int s_log_read(presence_store_t *base, uint64_t after_seq, size_t max,
                      void (*cb)(void *, int, const presence_event_t *,
                                 size_t),
                      void *ud) {
  (void)base, (void)after_seq, (void)max, (void)cb, (void)ud;
  return PRESENCE_ENOTSUP;
}

static uint64_t s_log_last_seq(presence_store_t *base) {
  (void)base;
  return 0;
}

static void s_destroy(presence_store_t *base) {
  rshards_t *r = (rshards_t *)base;
  r->destroying = true;
  shlog_stop(r);
  /* First: it reads shard 0's URL. */
  if (r->topo) presence__rconn_free(r->topo);
  r->topo = NULL;
  map_free(r);
  presence__free(r->a0, r->topo_url.host);
  for (uint32_t i = 0; i < r->n; i++)
    if (r->sub[i]) r->sub[i]->ops->destroy(r->sub[i]);
  /* After the shards: none refers to it any more. */
  presence__rfeed_free(r->feed);
  if (r->feed_in > 0) close(r->feed_in);
  for (uint32_t i = 0; i < r->n_feed_out; i++) close(r->feed_out[i]);
  presence__free(r->a0, r->feed_out);
  if (r->counts_up) presence__ccounts_free(&r->counts);
  /* Writes still held end as the shards' own did. */
  for (uint32_t i = 0; r->gate_head && i < r->n; i++)
    while (r->gate_head[i]) {
      qwrite_t *x = r->gate_head[i];
      r->gate_head[i] = x->next;
      if (x->done) x->done(x->ud, PRESENCE_ESHUTDOWN);
      presence__free(r->a, x);
    }
  for (uint32_t k = 0; k < r->n_slot; k++)
    presence__free(r->a, r->cl_slot[k]);
  if (r->claims_up) presence__table_free(&r->claims);
  presence__free(r->a, r->gate_head);
  presence__free(r->a, r->gate_tail);
  presence__free(r->a, r->cl_slot);
  presence__free(r->a, r->cl_gen);
  presence__free(r->a, r->cl_free);
  presence__free(r->a, r->sh);
  presence__free(r->a0, r->sub);
  presence__free(r->a0, r);
}

/* ---- scatter-gather: channel members and the channel listing ------------ */

/* What one page of every shard gathers: deep copies (a shard's page is
 * valid only during its callback), merged once the last shard answered. */
typedef struct gather {
  rshards_t *r;
  uint32_t left;
  int status;
  size_t limit;
  bool more;
  uint64_t count;
  /* members */
  presence_member_info_t *m;
  size_t nm, capm;
  void (*mcb)(void *, int, const presence_member_info_t *, size_t, uint64_t,
              const char *);
  /* channels */
  presence_channel_info_t *c;
  size_t nc, capc;
  void (*ccb)(void *, int, const presence_channel_info_t *, size_t,
              const char *);
  void *ud;
} gather_t;

static char *dup_or_null(const presence_allocator_t *a, const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *c = presence__malloc(a, n);
  if (c) memcpy(c, s, n);
  return c;
}

static void member_free(const presence_allocator_t *a,
                        presence_member_info_t *m) {
  presence__free(a, (char *)m->channel);
  presence__free(a, (char *)m->user_id);
  presence__free(a, (char *)m->data);
  for (size_t k = 0; k < m->n_metas; k++) {
    presence__free(a, (char *)m->metas[k].session_id);
    presence__free(a, (char *)m->metas[k].data);
  }
  presence__free(a, (presence_member_meta_t *)m->metas);
}

static int member_copy(const presence_allocator_t *a,
                       presence_member_info_t *d,
                       const presence_member_info_t *s) {
  *d = *s;
  d->channel = dup_or_null(a, s->channel);
  d->user_id = dup_or_null(a, s->user_id);
  d->data = dup_or_null(a, s->data);
  d->metas = NULL;
  d->n_metas = 0;
  bool bad = (s->channel && !d->channel) || (s->user_id && !d->user_id) ||
             (s->data && !d->data);
  presence_member_meta_t *mm =
      s->n_metas ? presence__malloc(a, s->n_metas * sizeof *mm) : NULL;
  if (s->n_metas && !mm) bad = true;
  if (mm) {
    for (size_t k = 0; k < s->n_metas; k++) {
      mm[k] = s->metas[k];
      mm[k].session_id = dup_or_null(a, s->metas[k].session_id);
      mm[k].data = dup_or_null(a, s->metas[k].data);
    }
    d->metas = mm;
    d->n_metas = s->n_metas;
  }
  if (bad) {
    member_free(a, d);
    return PRESENCE_ENOMEM;
  }
  return 0;
}

static int cmp_member(const void *x, const void *y) {
  const presence_member_info_t *a = x, *b = y;
  return strcmp(a->user_id ? a->user_id : "", b->user_id ? b->user_id : "");
}

static int cmp_chan(const void *x, const void *y) {
  const presence_channel_info_t *a = x, *b = y;
  return strcmp(a->channel, b->channel);
}

static void gather_free(gather_t *g) {
  const presence_allocator_t *a = g->r->a;
  for (size_t i = 0; i < g->nm; i++) member_free(a, &g->m[i]);
  presence__free(a, g->m);
  for (size_t i = 0; i < g->nc; i++) presence__free(a, (char *)g->c[i].channel);
  presence__free(a, g->c);
  presence__free(a, g);
}

static void members_last(gather_t *g) {
  if (g->status) {
    g->mcb(g->ud, g->status, NULL, 0, 0, NULL);
  } else {
    /* Users live in one shard each: the first `limit` of the merge are
     * the channel's first `limit` after the cursor. */
    if (g->nm) qsort(g->m, g->nm, sizeof *g->m, cmp_member);
    size_t n = g->nm < g->limit ? g->nm : g->limit;
    bool more = g->more || g->nm > n;
    g->mcb(g->ud, 0, g->m, n, g->count,
           more && n ? g->m[n - 1].user_id : NULL);
  }
  gather_free(g);
}

/* Room for `need` items of `size` in *arr (capacity *cap); false (and
 * ENOMEM recorded) when it cannot grow. */
static bool room(gather_t *g, void **arr, size_t *cap, size_t need,
                 size_t size) {
  if (need <= *cap) return true;
  void *v = presence__realloc(g->r->a, *arr, need * 2 * size);
  if (!v) {
    g->status = PRESENCE_ENOMEM;
    return false;
  }
  *arr = v;
  *cap = need * 2;
  return true;
}

static void members_page(void *ud, int status, const presence_member_info_t *m,
                         size_t n, uint64_t count, const char *next) {
  gather_t *g = ud;
  if (status && !g->status) g->status = status;
  if (!status) {
    g->count += count;
    if (next) g->more = true;
    if (!room(g, (void **)&g->m, &g->capm, g->nm + n, sizeof *g->m)) n = 0;
    for (size_t i = 0; i < n && !g->status; i++) {
      int rc = member_copy(g->r->a, &g->m[g->nm], &m[i]);
      if (rc) g->status = rc;
      else g->nm++;
    }
  }
  if (--g->left == 0) members_last(g);
}

static gather_t *gather_new(rshards_t *r, size_t limit, void *ud) {
  gather_t *g = presence__malloc(r->a, sizeof *g);
  if (!g) return NULL;
  memset(g, 0, sizeof *g);
  g->r = r;
  g->left = r->n;
  g->limit = limit;
  g->ud = ud;
  return g;
}

typedef void (*members_fn)(void *, int, const presence_member_info_t *, size_t,
                           uint64_t, const char *);

/* brief: each shard's brief listing (the members without their sessions). */
static int members_of(rshards_t *r, const char *channel, const char *after,
                      size_t limit, bool brief, members_fn cb, void *ud) {
  gather_t *g = gather_new(r, limit, ud);
  if (!g) return PRESENCE_ENOMEM;
  g->mcb = cb;
  /* One extra per shard so g->left never reaches 0 inside the loop. */
  g->left++;
  for (uint32_t i = 0; i < r->n; i++) {
    presence_store_t *sub = r->sub[i];
    int rc = brief ? sub->ops->channel_members_brief(sub, channel, after,
                                                     limit, members_page, g)
                   : sub->ops->channel_members(sub, channel, after, limit,
                                               members_page, g);
    if (rc) members_page(g, rc, NULL, 0, 0, NULL);
  }
  if (--g->left == 0) members_last(g);
  return 0;
}

static int s_channel_members(presence_store_t *base, const char *channel,
                             const char *after, size_t limit, members_fn cb,
                             void *ud) {
  return members_of((rshards_t *)base, channel, after, limit, false, cb, ud);
}

static int s_channel_members_brief(presence_store_t *base, const char *channel,
                                   const char *after, size_t limit,
                                   members_fn cb, void *ud) {
  return members_of((rshards_t *)base, channel, after, limit, true, cb, ud);
}

static void chans_last(gather_t *g) {
  if (g->status) {
    g->ccb(g->ud, g->status, NULL, 0, NULL);
  } else {
    /* A channel has members in several shards: one entry, counts summed. */
    if (g->nc) qsort(g->c, g->nc, sizeof *g->c, cmp_chan);
    size_t w = 0;
    for (size_t i = 0; i < g->nc; i++) {
      if (w && !strcmp(g->c[w - 1].channel, g->c[i].channel)) {
        g->c[w - 1].count += g->c[i].count;
        g->c[w - 1].shown_count += g->c[i].shown_count;
        presence__free(g->r->a, (char *)g->c[i].channel);
        continue;
      }
      g->c[w++] = g->c[i];
    }
    g->nc = w;
    size_t n = g->nc < g->limit ? g->nc : g->limit;
    bool more = g->more || g->nc > n;
    g->ccb(g->ud, 0, g->c, n, more && n ? g->c[n - 1].channel : NULL);
  }
  gather_free(g);
}

static void chans_page(void *ud, int status, const presence_channel_info_t *c,
                       size_t n, const char *next) {
  gather_t *g = ud;
  if (status && !g->status) g->status = status;
  if (!status) {
    if (next) g->more = true;
    if (!room(g, (void **)&g->c, &g->capc, g->nc + n, sizeof *g->c)) n = 0;
    for (size_t i = 0; i < n && !g->status; i++) {
      char *name = dup_or_null(g->r->a, c[i].channel);
      if (!name) {
        g->status = PRESENCE_ENOMEM;
        break;
      }
      g->c[g->nc].channel = name;
      g->c[g->nc].shown_count = c[i].shown_count;
      g->c[g->nc++].count = c[i].count;
    }
  }
  if (--g->left == 0) chans_last(g);
}

static int s_channels_list(presence_store_t *base, const char *prefix,
                           const char *after, size_t limit,
                           void (*cb)(void *, int,
                                      const presence_channel_info_t *, size_t,
                                      const char *),
                           void *ud) {
  rshards_t *r = (rshards_t *)base;
  gather_t *g = gather_new(r, limit, ud);
  if (!g) return PRESENCE_ENOMEM;
  g->ccb = cb;
  g->left++;
  for (uint32_t i = 0; i < r->n; i++) {
    int rc = r->sub[i]->ops->channels_list(r->sub[i], prefix, after, limit,
                                           chans_page, g);
    if (rc) chans_page(g, rc, NULL, 0, NULL);
  }
  if (--g->left == 0) chans_last(g);
  return 0;
}

static const presence_store_ops_t rshards_ops = {
    .name = "redis",
    .flags = PRESENCE_STORE_OBSERVES,
    .attach = s_attach,
    .write = s_write,
    .tick = s_tick,
    .user_query = s_user_query,
    .sessions_query = s_sessions_query,
    .session_get = s_session_get,
    .users_foreach = NULL,
    .stats = s_stats,
    .log_read = s_log_read,
    .log_last_seq = s_log_last_seq,
    .destroy = s_destroy,
    .channel_members = s_channel_members,
    .channel_members_brief = s_channel_members_brief,
    .channels_list = s_channels_list,
    .user_channels = s_user_channels,
    .log_count = s_log_count,
    .log_read_of = s_log_read_of,
    .log_last_seq_of = s_log_last_seq_of,
};

int presence__rshards_new(const presence_redis_options_t *opts,
                          presence_store_t **out) {
  const presence_allocator_t *a0 =
      opts->allocator ? opts->allocator : presence__default_allocator();
  uint32_t n = opts->shards ? opts->shards : 12;
  if (n > 1024) return PRESENCE_EINVAL;
  const char *pfx = opts->prefix ? opts->prefix : "presence:";
  if (strlen(pfx) > 64) return PRESENCE_EINVAL;
  rshards_t *r = presence__malloc(a0, sizeof *r);
  presence_store_t **sub = presence__malloc(a0, n * sizeof *sub);
  if (!r || !sub) {
    presence__free(a0, r);
    presence__free(a0, sub);
    return PRESENCE_ENOMEM;
  }
  memset(r, 0, sizeof *r);
  memset(sub, 0, n * sizeof *sub);
  r->base.ops = &rshards_ops;
  r->a0 = r->a = a0;
  r->n = n;
  r->sub = sub;
  /* The machine's one log feed (--workers): the store's, not a shard's. */
  r->feed_in = opts->feed_in;
  if (opts->n_feed_out && opts->feed_out) {
    r->feed_out = presence__malloc(a0, opts->n_feed_out * sizeof(int));
    if (!r->feed_out) {
      s_destroy(&r->base);
      return PRESENCE_ENOMEM;
    }
    memcpy(r->feed_out, opts->feed_out, opts->n_feed_out * sizeof(int));
    r->n_feed_out = opts->n_feed_out;
  }
  /* In cluster mode the first seed is where each shard starts (a MOVED
   * then sends it to its slot's node); the rest are fallbacks. */
  char first[512];
  const char *url = opts->url;
  if (opts->cluster) {
    size_t len = strcspn(opts->cluster, ",");
    if (len >= sizeof first) {
      s_destroy(&r->base);
      return PRESENCE_EINVAL;
    }
    memcpy(first, opts->cluster, len);
    first[len] = '\0';
    if (!strstr(first, "://")) {
      /* host:port: the scheme of url (TLS or not). */
      const char *scheme =
          url && !strncmp(url, "rediss://", 9) ? "rediss://" : "redis://";
      if (len + strlen(scheme) >= sizeof first) {
        s_destroy(&r->base);
        return PRESENCE_EINVAL;
      }
      memmove(first + strlen(scheme), first, len + 1);
      memcpy(first, scheme, strlen(scheme));
    }
    url = first;
  }
  int rc = 0;
  for (uint32_t i = 0; i < n && !rc; i++) {
    char tag[24], prefix[100];
    rc = presence__redis_shard_tag(i, n, tag, sizeof tag);
    if (rc) break;
    snprintf(prefix, sizeof prefix, "%s{%s}", pfx, tag);
    presence_redis_options_t o = *opts;
    o.prefix = prefix;
    o.url = url;
    o.shards = 1;
    o.cluster = NULL;
    o.feed_in = 0;
    o.feed_out = NULL;
    o.n_feed_out = 0;
    rc = presence__redis_new_one(&o, &r->sub[i]);
    if (!rc && opts->cluster)
      rc = presence__redis_set_cluster(r->sub[i], opts->cluster);
    if (!rc && opts->cluster) presence__redis_set_router(r->sub[i], route, r);
  }
  r->cluster = opts->cluster != NULL;
  if (rc) {
    s_destroy(&r->base);
    return rc;
  }
  *out = &r->base;
  return 0;
}

void *presence__rshards_fan(presence_store_t *s, void (*done)(void *, int),
                            void *ud) {
  rshards_t *r = (rshards_t *)s;
  fan_t *f = presence__malloc(r->a, sizeof *f);
  if (f) *f = (fan_t){r, r->n, 0, done, ud};
  return f;
}

void presence__rshards_fan_done(void *fan, int status) {
  fan_done(fan, status);
}

/* Kicks: the session index is per shard, and the session's user (hence
 * its shard) is not known here, so the shards are asked in turn. */
typedef struct kick_chain {
  rshards_t *r;
  uint32_t i;
  void (*done)(void *, int);
  void *ud;
  char sid[PRESENCE_ID_MAX + 1];
} kick_chain_t;

static void kick_next(void *ud, int status) {
  kick_chain_t *k = ud;
  while (status == PRESENCE_ENOSESSION && ++k->i < k->r->n) {
    int rc = presence_redis_kick(k->r->sub[k->i], k->sid, kick_next, k);
    if (!rc) return;
    status = rc;
  }
  k->done(k->ud, status);
  presence__free(k->r->a, k);
}

int presence__rshards_kick(presence_store_t *s, const char *session_id,
                           void (*done)(void *ud, int status), void *ud) {
  rshards_t *r = (rshards_t *)s;
  if (!session_id || !done) return PRESENCE_EINVAL;
  size_t n = strlen(session_id);
  if (!n || n > PRESENCE_ID_MAX) return PRESENCE_EID;
  kick_chain_t *k = presence__malloc(r->a, sizeof *k);
  if (!k) return PRESENCE_ENOMEM;
  *k = (kick_chain_t){.r = r, .i = 0, .done = done, .ud = ud};
  memcpy(k->sid, session_id, n + 1);
  int rc = presence_redis_kick(r->sub[0], k->sid, kick_next, k);
  if (rc) presence__free(r->a, k);
  return rc;
}
