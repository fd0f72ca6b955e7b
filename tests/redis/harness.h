/* SPDX-License-Identifier: MIT */
/*
 * Shared by the Redis store's tests: a private redis-server on a unix
 * socket in a temporary directory (started and stopped by pid), a loop
 * runner with a deadline, instances of presence_t on the Redis store with
 * event recorders for their own events and the cluster's.
 */
#ifndef PRESENCE_REDIS_HARNESS_H
#define PRESENCE_REDIS_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "presence.h"
#include "presence_redis.h"
#include "store/redis_shard.h"

/* ---- the server --------------------------------------------------------- */

typedef struct server {
  char dir[64];
  char sock[128];
  char url[160];
  pid_t pid;
  /* Started with FUNCTION renamed away: a Redis before 7.0, for the
   * script's EVALSHA path (srv_init_fns). */
  bool no_functions;
} server_t;

static inline void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static inline int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline redisContext *srv_ctx(server_t *s) {
  struct timeval tv = {2, 0};
  redisContext *c = redisConnectUnixWithTimeout(s->sock, tv);
  if (!c || c->err) {
    if (c) redisFree(c);
    return NULL;
  }
  return c;
}

static inline void srv_start(server_t *s) {
  const char *bin = getenv("REDIS_SERVER");
  if (!bin) bin = "redis-server";
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* Die with the test, even when it is killed by a timeout. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
    }
    char dir_arg[80];
    snprintf(dir_arg, sizeof dir_arg, "%s", s->dir);
    if (s->no_functions)
      execlp(bin, bin, "--port", "0", "--unixsocket", s->sock, "--save", "",
             "--appendonly", "no", "--dir", dir_arg, "--logfile", "redis.log",
             "--daemonize", "no", "--rename-command", "FUNCTION", "",
             (char *)NULL);
    else
      execlp(bin, bin, "--port", "0", "--unixsocket", s->sock, "--save", "",
             "--appendonly", "no", "--dir", dir_arg, "--logfile",
             "redis.log", "--daemonize", "no", (char *)NULL);
    _exit(127);
  }
  s->pid = pid;
  for (int i = 0; i < 500; i++) {
    redisContext *c = srv_ctx(s);
    if (c) {
      redisReply *r = redisCommand(c, "PING");
      bool ok = r && r->type == REDIS_REPLY_STATUS;
      if (r) freeReplyObject(r);
      redisFree(c);
      if (ok) return;
    }
    sleep_ms(10);
  }
  fail_msg("redis-server did not start");
}

static inline void srv_stop(server_t *s) {
  if (s->pid <= 0) return;
  kill(s->pid, SIGCONT);
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  s->pid = 0;
  unlink(s->sock);
  char log[160];
  snprintf(log, sizeof log, "%s/redis.log", s->dir);
  unlink(log);
}

/* fns: the server knows FUNCTION (false: renamed away, a Redis < 7.0). */
static inline void srv_init_fns(server_t *s, bool fns) {
  s->no_functions = !fns;
  snprintf(s->dir, sizeof s->dir, "/tmp/presence-redis-XXXXXX");
  assert_non_null(mkdtemp(s->dir));
  snprintf(s->sock, sizeof s->sock, "%s/redis.sock", s->dir);
  snprintf(s->url, sizeof s->url, "unix:%s", s->sock);
  srv_start(s);
}

static inline void srv_init(server_t *s) { srv_init_fns(s, true); }

static inline void srv_fini(server_t *s) {
  srv_stop(s);
  rmdir(s->dir);
}

/* One command on a fresh synchronous connection; returns the reply. */
static inline redisReply *srv_cmd(server_t *s, const char *fmt, ...) {
  redisContext *c = srv_ctx(s);
  assert_non_null(c);
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  redisFree(c);
  assert_non_null(r);
  return r;
}

/* Calls of a Redis command so far (INFO commandstats), scripts' own
 * included. */
static inline long long cmd_calls(server_t *srv, const char *cmd) {
  redisReply *r = srv_cmd(srv, "INFO commandstats");
  char key[64];
  snprintf(key, sizeof key, "cmdstat_%s:calls=", cmd);
  const char *p = strstr(r->str, key);
  long long n = p ? atoll(p + strlen(key)) : 0;
  freeReplyObject(r);
  return n;
}

/* The sharded runs of the suites (PRESENCE_TEST_SHARDS=S, see
 * tests/CMakeLists.txt): the store keeps S shards, shard i under
 * "presence:{<tag i>}", each with its own log and instance tables; a user
 * lives in one. Unsharded: one shard, "presence:". */
static inline uint32_t test_shards(void) {
  const char *e = getenv("PRESENCE_TEST_SHARDS");
  int n = e ? atoi(e) : 0;
  return n > 1 ? (uint32_t)n : 1;
}

static inline void shard_prefix(uint32_t i, char *out, size_t n) {
  uint32_t s = test_shards();
  if (s == 1) {
    snprintf(out, n, "presence:");
    return;
  }
  char tag[24];
  assert_int_equal(presence__redis_shard_tag(i, s, tag, sizeof tag), 0);
  snprintf(out, n, "presence:{%s}", tag);
}

static inline void user_prefix(const char *user, char *out, size_t n) {
  shard_prefix(presence__redis_user_shard(user, strlen(user), test_shards()),
               out, n);
}

/* The script's op in a command's arguments as SLOWLOG shows them
 * (FCALL fn numkeys keys... op ..., FCALL_RO and EVALSHA alike), else "". */
static inline const char *script_op(const redisReply *args) {
  if (args->type != REDIS_REPLY_ARRAY || args->elements < 4 ||
      (strcasecmp(args->element[0]->str, "FCALL") &&
       strcasecmp(args->element[0]->str, "FCALL_RO") &&
       strcasecmp(args->element[0]->str, "EVALSHA")))
    return "";
  size_t at = 3 + strtoul(args->element[2]->str, NULL, 10);
  return at < args->elements ? args->element[at]->str : "";
}

/* TEST_FILTER=name runs one test. */
static inline void apply_filter(void) {
  const char *f = getenv("TEST_FILTER");
  if (f) cmocka_set_test_filter(f);
}

/* ---- recording ---------------------------------------------------------- */

typedef struct rec_ev {
  presence_event_type_t type;
  presence_reason_t reason;
  uint64_t seq;
  presence_status_t from, to;
  uint64_t version;
  unsigned flags;
  size_t n_ids;
  char user[PRESENCE_ID_MAX + 1];
  char session[PRESENCE_ID_MAX + 1];
  char instance[PRESENCE_ID_MAX + 1];
  uint64_t count; /* channel events */
  char channel[PRESENCE_CHANNEL_MAX + 1];
} rec_ev_t;

typedef struct recorder {
  rec_ev_t *ev;
  size_t n, cap;
} recorder_t;

static inline void rec_push(recorder_t *r, const presence_event_t *e) {
  if (r->n == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 256;
    r->ev = realloc(r->ev, r->cap * sizeof(*r->ev));
    assert_non_null(r->ev);
  }
  rec_ev_t *x = &r->ev[r->n++];
  memset(x, 0, sizeof(*x));
  x->type = e->type;
  x->reason = e->reason;
  x->seq = e->seq;
  x->from = e->from;
  x->to = e->to;
  x->version = e->user_version;
  x->flags = e->flags;
  x->n_ids = e->n_session_ids;
  if (e->user_id) snprintf(x->user, sizeof x->user, "%s", e->user_id);
  /* Session ids reach events as text: the 20-byte form the Redis store
   * keeps a UUID in (0xff first, never valid UTF-8) must not. */
  if (e->session_id) assert_int_not_equal((unsigned char)e->session_id[0], 0xff);
  for (size_t i = 0; i < e->n_session_ids; i++)
    assert_int_not_equal((unsigned char)e->session_ids[i][0], 0xff);
  if (e->session_id)
    snprintf(x->session, sizeof x->session, "%s", e->session_id);
  if (e->instance_id)
    snprintf(x->instance, sizeof x->instance, "%s", e->instance_id);
  x->count = e->count;
  if (e->channel) snprintf(x->channel, sizeof x->channel, "%s", e->channel);
}

static inline void rec_cb(presence_t *p, const presence_event_t *e, void *ud) {
  (void)p;
  rec_push(ud, e);
}

static inline size_t rec_count(const recorder_t *r, presence_event_type_t t) {
  size_t n = 0;
  for (size_t i = 0; i < r->n; i++)
    n += r->ev[i].type == t;
  return n;
}

/* ---- a counting allocator ------------------------------------------------
 * Given to presence_options_t.allocator (and presence_redis_options_t's):
 * bytes and blocks live, the peak, and every allocation made, so a test can
 * tell that the store's memory went through it and came back. */

typedef struct counting {
  size_t live, peak; /* bytes */
  size_t blocks;     /* live allocations */
  size_t count;      /* allocations ever made (realloc included) */
} counting_t;

static inline void *cnt_malloc(void *ud, size_t n) {
  counting_t *c = ud;
  size_t *p = malloc(n + 16);
  if (!p) return NULL;
  *p = n;
  c->live += n;
  c->blocks++;
  c->count++;
  if (c->live > c->peak) c->peak = c->live;
  return (char *)p + 16;
}

static inline void cnt_free(void *ud, void *ptr) {
  counting_t *c = ud;
  if (!ptr) return;
  size_t *p = (size_t *)(void *)((char *)ptr - 16);
  c->live -= *p;
  c->blocks--;
  free(p);
}

static inline void *cnt_realloc(void *ud, void *ptr, size_t n) {
  if (!ptr) return cnt_malloc(ud, n);
  counting_t *c = ud;
  size_t *p = (size_t *)(void *)((char *)ptr - 16);
  size_t old = *p;
  size_t *q = realloc(p, n + 16);
  if (!q) return NULL;
  *q = n;
  c->live = c->live - old + n;
  c->count++;
  if (c->live > c->peak) c->peak = c->live;
  return (char *)q + 16;
}

static inline presence_allocator_t counting_allocator(counting_t *c) {
  return (presence_allocator_t){cnt_malloc, cnt_realloc, cnt_free, c};
}

/* ---- instances ---------------------------------------------------------- */

typedef struct inst {
  presence_t *p;
  presence_store_t *store;
  recorder_t local;
  recorder_t cluster;
  int done_n;
  int done_err[32]; /* count per -code */
  char id[32];
} inst_t;

static inline void debug_log(void *ud, presence_log_level_t l,
                             const char *msg) {
  fprintf(stderr, "[%s %lld] %d %s\n", (const char *)ud, (long long)now_ms(),
          (int)l, msg);
}

typedef struct inst_opts {
  uint32_t grace_ms;
  uint32_t inactivity_ms;
  uint32_t max_sessions;
  uint32_t heartbeat_ms;
  uint32_t lease_ms;
  uint32_t timeout_ms;
  uint32_t reconcile_ms;
  uint32_t maxlen;
  uint32_t retention_s;
} inst_opts_t;

static inline void inst_new(inst_t *in, uv_loop_t *loop, server_t *s,
                            const char *id, const inst_opts_t *io) {
  memset(in, 0, sizeof(*in));
  snprintf(in->id, sizeof in->id, "%s", id);
  presence_redis_options_t ro;
  memset(&ro, 0, sizeof ro);
  ro.loop = loop;
  ro.url = s->url;
  ro.heartbeat_ms = io && io->heartbeat_ms ? io->heartbeat_ms : 200;
  ro.lease_ms = io && io->lease_ms ? io->lease_ms : 3 * ro.heartbeat_ms;
  ro.command_timeout_ms = io && io->timeout_ms ? io->timeout_ms : 1000;
  ro.reconcile_ms = io && io->reconcile_ms ? io->reconcile_ms : 30000;
  ro.stream_maxlen = io && io->maxlen ? io->maxlen : 0;
  ro.stream_block_ms = 200;
  ro.reconnect_max_ms = 200;
  /* The suites' sharded runs (tests/CMakeLists.txt): the same behaviour
   * through the virtual-shard layout on one Redis. */
  const char *shards = getenv("PRESENCE_TEST_SHARDS");
  ro.shards = shards ? (uint32_t)atoi(shards) : 0;
  /* tests/redis/test_rcluster.c: a real Redis Cluster's seed nodes. */
  ro.cluster = getenv("PRESENCE_TEST_CLUSTER");
  assert_int_equal(presence_store_redis_new(&ro, &in->store), 0);
  presence_options_t o;
  presence_options_init(&o);
  o.instance_id = in->id;
  if (getenv("PRESENCE_DEBUG")) {
    o.log = debug_log;
    o.log_ud = in->id;
  }
  o.store = in->store;
  if (io) {
    o.offline_grace_ms = io->grace_ms;
    o.inactivity_ms = io->inactivity_ms;
    o.max_sessions_per_user = io->max_sessions;
    o.offline_retention_s = io->retention_s;
  }
  assert_int_equal(presence_new(&o, &in->p), 0);
  assert_true(presence_on_event(in->p, rec_cb, &in->local) > 0);
  assert_true(presence_on_cluster_event(in->p, rec_cb, &in->cluster) > 0);
}

static inline void inst_free(inst_t *in) {
  if (in->p) presence_free(in->p);
  in->p = NULL;
  free(in->local.ev);
  free(in->cluster.ev);
  memset(&in->local, 0, sizeof in->local);
  memset(&in->cluster, 0, sizeof in->cluster);
}

static inline void done_cb(presence_t *p, int status, void *ud) {
  (void)p;
  inst_t *in = ud;
  in->done_n++;
  if (status < 0 && status > -32) in->done_err[-status]++;
}

static inline void assert_no_errors(const inst_t *in) {
  for (int e = 1; e < 32; e++)
    if (in->done_err[e])
      fail_msg("%s: %d completions with %s", in->id, in->done_err[e],
               presence_err_name(-e));
}

/* A page of the log: sequence numbers and types. */
typedef struct page {
  bool got;
  int status;
  size_t n;
  uint64_t seq[64];
  int type[64];
} page_t;
static inline void page_cb(presence_t *p, int status, const presence_event_t *e,
                    size_t n, void *ud) {
  (void)p;
  page_t *pg = ud;
  pg->got = true;
  pg->status = status;
  pg->n = n;
  for (size_t i = 0; i < n && i < 64; i++) {
    pg->seq[i] = e[i].seq;
    pg->type[i] = (int)e[i].type;
  }
}
static inline bool page_pred(void *ud) {
  return ((page_t *)ud)->got;
}

/* Run the loop until pred holds or ms pass; returns whether it held. */
typedef bool (*pred_fn)(void *ud);
static inline bool run_until(uv_loop_t *loop, pred_fn pred, void *ud,
                             int64_t ms) {
  int64_t end = now_ms() + ms;
  while (now_ms() < end) {
    uv_run(loop, UV_RUN_NOWAIT);
    if (pred && pred(ud)) return true;
    sleep_ms(1);
  }
  return pred ? pred(ud) : true;
}

/* One page of the log after `after`, read through p and answered. */
static inline page_t read_page(uv_loop_t *loop, presence_t *p, uint64_t after,
                               size_t max) {
  page_t pg;
  memset(&pg, 0, sizeof pg);
  assert_int_equal(presence_log_read(p, after, max, page_cb, &pg), 0);
  assert_true(run_until(loop, page_pred, &pg, 5000));
  return pg;
}

static inline void run_for(uv_loop_t *loop, int64_t ms) {
  run_until(loop, NULL, NULL, ms);
}

static inline bool ready_pred(void *ud) {
  return presence_redis_ready(((inst_t *)ud)->store);
}

static inline bool done_pred_target(inst_t *in, int n) {
  return in->done_n >= n;
}

/* Wait until the instance has seen n completions. */
typedef struct done_wait {
  inst_t *in;
  int n;
} done_wait_t;
static inline bool done_wait_pred(void *ud) {
  done_wait_t *w = ud;
  return done_pred_target(w->in, w->n);
}
static inline void wait_done(uv_loop_t *loop, inst_t *in, int n) {
  done_wait_t w = {in, n};
  if (!run_until(loop, done_wait_pred, &w, 45000))
    fail_msg("%s: %d of %d completions", in->id, in->done_n, n);
}

static inline void wait_ready(uv_loop_t *loop, inst_t *in) {
  assert_true(run_until(loop, ready_pred, in, 10000));
}

/* A synchronous user query over the loop. */
typedef struct uq {
  bool got;
  int status;
  presence_user_info_t info;
  char user[PRESENCE_ID_MAX + 1];
} uq_t;
static inline void uq_cb(presence_t *p, int status,
                         const presence_user_info_t *info, void *ud) {
  (void)p;
  uq_t *q = ud;
  q->got = true;
  q->status = status;
  if (info) q->info = *info;
}
static inline bool uq_pred(void *ud) {
  return ((uq_t *)ud)->got;
}
static inline presence_user_info_t user_info(uv_loop_t *loop, inst_t *in,
                                             const char *user) {
  uq_t q;
  memset(&q, 0, sizeof q);
  assert_int_equal(presence_user_query(in->p, user, uq_cb, &q), 0);
  assert_true(run_until(loop, uq_pred, &q, 5000));
  assert_int_equal(q.status, 0);
  q.info.user_id = NULL;
  return q.info;
}

/* Let handles close after presence_free. */
static inline void loop_drain(uv_loop_t *loop) {
  for (int i = 0; i < 20; i++)
    uv_run(loop, UV_RUN_NOWAIT);
}

/* Up to three instances ("alpha", "beta", "gamma") on one loop and one
 * redis-server, each registered before the test starts: the fixture of the
 * multi-instance suites. fx_destroy fails the test on a handle left open. */
typedef struct fx {
  server_t srv;
  uv_loop_t loop;
  inst_t in[3];
  int n;
} fx_t;

static inline fx_t *fx_make(int n, const inst_opts_t *io) {
  fx_t *f = calloc(1, sizeof(*f));
  /* A store writes to sockets whose Redis may have just died (the restart
   * tests): the host ignores SIGPIPE, as presenced does. */
  signal(SIGPIPE, SIG_IGN);
  srv_init(&f->srv);
  uv_loop_init(&f->loop);
  f->n = n;
  static const char *ids[] = {"alpha", "beta", "gamma"};
  for (int i = 0; i < n; i++) {
    inst_new(&f->in[i], &f->loop, &f->srv, ids[i], io);
    wait_ready(&f->loop, &f->in[i]);
  }
  return f;
}

static inline void fx_destroy(fx_t *f) {
  for (int i = 0; i < f->n; i++)
    inst_free(&f->in[i]);
  loop_drain(&f->loop);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  srv_fini(&f->srv);
  free(f);
}

#endif
