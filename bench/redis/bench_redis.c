/* SPDX-License-Identifier: MIT */
/*
 * bench_redis: the Redis store's figures (issue 4), in one run.
 *
 * Starts its own redis-server on a unix socket, then:
 *  1. throughput: N presence_t (one thread and libuv loop each, on the Redis
 *     store) cycle their sessions connect -> idle -> online -> end, each
 *     with a window of sessions in flight; every completed operation counts
 *     alike. Repeated. Figures: operations/s, and the Redis time each
 *     operation costs, two ways: redis-server's CPU time (from /proc: the
 *     commands plus its network and event loop) and the execution time of
 *     the store's scripts (INFO commandstats: FCALL),
 *     each divided by the operations completed in the window. Beside each
 *     repeat, redis-benchmark sends the store's own script doing one
 *     connect per call (unbatched: what a lone connect costs Redis, its
 *     usec_per_call in commandstats) and a plain SET;
 *  2. reaping: a child process holding S sessions is killed -9; a live
 *     instance reaps it. Figure: Redis time from the lease's expiry to the
 *     cleanup event, and the longest Redis command meanwhile (SLOWLOG with
 *     a 1 ms threshold). Before the kill, Redis's memory per session: all
 *     of used_memory the sessions added, the log's entries included, and
 *     the log apart.
 *  3. transport: the same throughput run through loopback TCP and through
 *     TLS (rediss://, the same redis-server's tls-port, certificates made
 *     here with the openssl CLI), alternately, repeated: issue 17's figure
 *     is the ratio of the medians (TLS >= 0.8x TCP).
 * Then issue 21's targets beside their figures on stderr (a miss says MISS),
 * and in the JSON ("targets"). --transport-only 1 runs the third part only.
 * Prints one JSON object on stdout. Processes it starts are stopped by pid.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "presence.h"
#include "presence_redis.h"
#include "session_cycle.h"

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static double loadavg1(void) {
  double l = -1;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf", &l) != 1) l = -1;
    fclose(f);
  }
  return l;
}

/* ---- the server --------------------------------------------------------- */

static char g_dir[64], g_sock[128], g_url[160];
static pid_t g_redis;
/* Where the instances connect (g_url unless the transport part says
 * otherwise), and the CA for rediss://. */
static const char *g_inst_url;
static char g_tcp_url[64], g_tls_url[64], g_ca[128];

static redisContext *rc_open(void) {
  struct timeval tv = {5, 0};
  redisContext *c = redisConnectUnixWithTimeout(g_sock, tv);
  if (c && c->err) {
    redisFree(c);
    return NULL;
  }
  return c;
}

static void rc_do(redisContext *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  if (r) freeReplyObject(r);
}

static void server_start(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/presence-bench-XXXXXX");
  if (!mkdtemp(g_dir)) exit(1);
  snprintf(g_sock, sizeof g_sock, "%s/redis.sock", g_dir);
  snprintf(g_url, sizeof g_url, "unix:%s", g_sock);
  g_inst_url = g_url;
  /* TCP and TLS ports beside the socket, for the transport part. */
  char cmd[1536];
  snprintf(cmd, sizeof cmd,
           "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 "
           "-subj /CN=bench-ca -keyout ca.key -out ca.crt 2>/dev/null && "
           "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost "
           "-keyout server.key -out server.csr 2>/dev/null && "
           "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
           "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key "
           "-CAcreateserial -days 2 -extfile san.ext -out server.crt "
           "2>/dev/null",
           g_dir);
  bool tls = system(cmd) == 0;
  int port = 20000 + (int)(getpid() % 20000);
  snprintf(g_tcp_url, sizeof g_tcp_url, "redis://127.0.0.1:%d", port);
  snprintf(g_tls_url, sizeof g_tls_url, "rediss://127.0.0.1:%d", port + 1);
  snprintf(g_ca, sizeof g_ca, "%s/ca.crt", g_dir);
  char port_s[16], tls_s[16], crt[128], key[128];
  snprintf(port_s, sizeof port_s, "%d", port);
  snprintf(tls_s, sizeof tls_s, "%d", tls ? port + 1 : 0);
  snprintf(crt, sizeof crt, "%s/server.crt", g_dir);
  snprintf(key, sizeof key, "%s/server.key", g_dir);
  const char *bin = getenv("REDIS_SERVER");
  if (!bin) bin = "redis-server";
  g_redis = fork();
  if (g_redis == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 1);
    dup2(null, 2);
    execlp(bin, bin, "--port", port_s, "--bind", "127.0.0.1", "--unixsocket",
           g_sock, "--save", "", "--appendonly", "no", "--dir", g_dir,
           "--logfile", "redis.log", "--tls-port", tls_s, "--tls-cert-file",
           crt, "--tls-key-file", key, "--tls-ca-cert-file", g_ca,
           "--tls-auth-clients", "no", (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 500; i++) {
    redisContext *c = rc_open();
    if (c) {
      redisFree(c);
      return;
    }
    sleep_ms(10);
  }
  fprintf(stderr, "redis-server did not start\n");
  exit(1);
}

static void server_stop(void) {
  if (g_redis > 0) {
    kill(g_redis, SIGKILL);
    waitpid(g_redis, NULL, 0);
  }
  char p[200];
  snprintf(p, sizeof p, "%s/redis.log", g_dir);
  unlink(p);
  unlink(g_sock);
  const char *certs[] = {"ca.key", "ca.crt", "ca.srl", "server.key",
                         "server.csr", "server.crt", "san.ext"};
  for (size_t i = 0; i < sizeof certs / sizeof *certs; i++) {
    snprintf(p, sizeof p, "%s/%s", g_dir, certs[i]);
    unlink(p);
  }
  rmdir(g_dir);
}

/* CPU seconds this process (the instances' threads) has used so far. */
static double self_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
/* The last throughput window's client CPU, seconds per second. */
static double g_client_cpu;

/* CPU seconds redis-server has used so far (user + system). */
static double redis_cpu_s(void) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)g_redis);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  unsigned long ut = 0, stt = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                   &ut, &stt) != 2)
    return 0;
  return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

/* INFO commandstats: calls and microseconds of one command so far. */
static void cmd_stats(redisContext *c, const char *cmd, long long *calls,
                      long long *us) {
  *calls = *us = 0;
  char key[64];
  snprintf(key, sizeof key, "cmdstat_%s:", cmd);
  redisReply *r = redisCommand(c, "INFO commandstats");
  const char *p = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, key)
                                                     : NULL;
  if (p && sscanf(p + strlen(key), "calls=%lld,usec=%lld", calls, us) != 2)
    *calls = *us = 0;
  if (r) freeReplyObject(r);
}

/* Microseconds Redis spent executing the store's scripts (every session
 * operation is part of an FCALL; the log reader's XREAD is not counted).
 * Commands a script runs are counted by commandstats under their own names
 * as well as inside the FCALL's time, so only the calls are added. The
 * time is wall clock inside Redis: on a loaded host it includes the time
 * the VM or the scheduler took the CPU away mid-script, which the process's
 * CPU time (the other figure) does not. */
static long long store_cmd_us(redisContext *c) {
  static const char *top[] = {"fcall", "evalsha", "evalsha_ro"};
  long long sum = 0;
  for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
    long long calls, us;
    cmd_stats(c, top[i], &calls, &us);
    sum += us;
  }
  return sum;
}

/* ---- throughput --------------------------------------------------------- */

typedef struct worker {
  pthread_t th;
  int idx;
  int slots;
  uv_loop_t loop;
  presence_t *p;
  presence_store_t *store;
  int *stage; /* per slot: 0 connect, 1 idle, 2 online, 3 end */
  uint64_t *gen;
  atomic_long ops, errors;
  int inflight;
} worker_t;

/* Channel mode: each slot connects once, then joins and leaves its
 * channel for ever; only the joins and leaves are counted. */
static int g_chan_mode;
static atomic_int g_run;      /* 1 while workers issue operations */
static atomic_int g_counting; /* 1 inside the measured window */
static atomic_int g_ready;

typedef struct slot_ref {
  worker_t *w;
  int slot;
} slot_ref_t;

static void issue(worker_t *w, int slot);

static void op_done(presence_t *p, int status, void *ud) {
  (void)p;
  slot_ref_t *ref = ud;
  worker_t *w = ref->w;
  int slot = ref->slot;
  free(ref);
  w->inflight--;
  if (atomic_load(&g_counting) && (!g_chan_mode || w->stage[slot] != 0)) {
    if (status == 0)
      atomic_fetch_add(&w->ops, 1);
    else
      atomic_fetch_add(&w->errors, 1);
  }
  if (g_chan_mode) {
    w->stage[slot] = w->stage[slot] == 2 ? 1 : w->stage[slot] + 1;
  } else {
    w->stage[slot] = (w->stage[slot] + 1) % 4;
    if (w->stage[slot] == 0) w->gen[slot]++;
  }
  if (atomic_load(&g_run)) issue(w, slot);
}

static void issue(worker_t *w, int slot) {
  char sid[64], uid[64];
  /* A fresh session id per cycle; users shared by the instances (slot k of
   * every instance is the same user), as real users are. */
  snprintf(sid, sizeof sid, "i%d-s%d-%llu", w->idx, slot,
           (unsigned long long)w->gen[slot]);
  snprintf(uid, sizeof uid, "u%d", slot);
  slot_ref_t *ref = malloc(sizeof *ref);
  ref->w = w;
  ref->slot = slot;
  int rc;
  if (g_chan_mode && w->stage[slot] != 0) {
    /* 50 channels; slot k of every instance is the same user, so a
     * member often has sessions on several instances. */
    char ch[32];
    snprintf(ch, sizeof ch, "room-%d", slot % 50);
    rc = w->stage[slot] == 1
             ? presence_channel_join(w->p, sid, ch, "{\"n\":1}", op_done, ref)
             : presence_channel_leave(w->p, sid, ch, op_done, ref);
    if (rc) {
      free(ref);
      atomic_fetch_add(&w->errors, 1);
      return;
    }
    w->inflight++;
    return;
  }
  rc = session_cycle_step(w->p, w->stage[slot], sid, uid, op_done, ref);
  if (rc) {
    free(ref);
    atomic_fetch_add(&w->errors, 1);
    return;
  }
  w->inflight++;
}

/* Wall-clock ms: on this host, comparable with Redis's TIME. */
static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void debug_log(void *ud, presence_log_level_t l, const char *msg) {
  fprintf(stderr, "[%s %lld] %d %s\n", (const char *)ud, (long long)wall_ms(),
          (int)l, msg);
}

static presence_t *make_instance(uv_loop_t *loop, const char *id,
                                 presence_store_t **store, uint32_t hb,
                                 uint32_t lease) {
  presence_redis_options_t ro;
  memset(&ro, 0, sizeof ro);
  ro.loop = loop;
  ro.url = g_inst_url;
  ro.tls.ca_file = g_ca;
  ro.heartbeat_ms = hb;
  ro.lease_ms = lease;
  if (presence_store_redis_new(&ro, store)) return NULL;
  presence_options_t o;
  presence_options_init(&o);
  o.instance_id = id;
  o.store = *store;
  if (getenv("BENCH_DEBUG")) {
    o.log = debug_log;
    o.log_ud = (void *)id;
  }
  presence_t *p = NULL;
  if (presence_new(&o, &p)) return NULL;
  return p;
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  uv_loop_init(&w->loop);
  char id[32];
  snprintf(id, sizeof id, "bench-%d", w->idx);
  w->p = make_instance(&w->loop, id, &w->store, 1000, 6000);
  if (!w->p) return NULL;
  int64_t end = now_ms() + 10000;
  while (!presence_redis_ready(w->store) && now_ms() < end) {
    uv_run(&w->loop, UV_RUN_NOWAIT);
    sleep_ms(1);
  }
  atomic_fetch_add(&g_ready, 1);
  while (!atomic_load(&g_run))
    sleep_ms(1);
  for (int i = 0; i < w->slots; i++)
    issue(w, i);
  while (atomic_load(&g_run))
    uv_run(&w->loop, UV_RUN_ONCE);
  end = now_ms() + 5000;
  while (w->inflight > 0 && now_ms() < end)
    uv_run(&w->loop, UV_RUN_NOWAIT);
  presence_free(w->p);
  for (int i = 0; i < 20; i++)
    uv_run(&w->loop, UV_RUN_NOWAIT);
  uv_loop_close(&w->loop);
  return NULL;
}

static double throughput(int n, int slots, int duration_ms, long *errors,
                         double *redis_cpu, double *cmd_us) {
  redisContext *stats = rc_open();
  worker_t *ws = calloc((size_t)n, sizeof *ws);
  atomic_store(&g_run, 0);
  atomic_store(&g_counting, 0);
  atomic_store(&g_ready, 0);
  for (int i = 0; i < n; i++) {
    ws[i].idx = i;
    ws[i].slots = slots;
    ws[i].stage = calloc((size_t)slots, sizeof(int));
    ws[i].gen = calloc((size_t)slots, sizeof(uint64_t));
    pthread_create(&ws[i].th, NULL, worker_main, &ws[i]);
  }
  while (atomic_load(&g_ready) < n)
    sleep_ms(5);
  atomic_store(&g_run, 1);
  sleep_ms(1000); /* warm-up */
  double c0 = redis_cpu_s();
  double p0 = self_cpu_s();
  long long u0 = store_cmd_us(stats);
  atomic_store(&g_counting, 1);
  int64_t t0 = now_ms();
  sleep_ms(duration_ms);
  atomic_store(&g_counting, 0);
  int64_t t1 = now_ms();
  *redis_cpu = (redis_cpu_s() - c0) * 1000.0 / (double)(t1 - t0);
  g_client_cpu = (self_cpu_s() - p0) * 1000.0 / (double)(t1 - t0);
  *cmd_us = (double)(store_cmd_us(stats) - u0);
  redisFree(stats);
  atomic_store(&g_run, 0);
  long ops = 0;
  *errors = 0;
  for (int i = 0; i < n; i++) {
    pthread_join(ws[i].th, NULL);
    ops += atomic_load(&ws[i].ops);
    *errors += atomic_load(&ws[i].errors);
    free(ws[i].stage);
    free(ws[i].gen);
  }
  free(ws);
  return (double)ops * 1000.0 / (double)(t1 - t0);
}

/* ---- redis-benchmark ---------------------------------------------------- */

static double redis_benchmark(const char *args) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "redis-benchmark -s %s -n 200000 -c 50 -P 16 -q %s 2>/dev/null | "
           "tr '\\r' '\\n' | grep 'requests per second' | tail -1",
           g_sock, args);
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  char line[1024] = {0};
  double rps = -1;
  if (fgets(line, sizeof line, f)) {
    /* "<command>: 123.45 requests per second": the command itself may
     * hold colons (the key prefix). */
    char *e = strstr(line, " requests per second");
    if (e) {
      char *b = e;
      while (b > line && b[-1] != ' ')
        b--;
      rps = strtod(b, NULL);
    }
  }
  pclose(f);
  return rps;
}

#include "presence_lua.h"

/* The store's script doing a connect, one per call, as redis-benchmark
 * can send it: a registered instance with a long lease, random session
 * and user ids (a repeat is refused as EEXIST, which is rarer than 1 in
 * 10^4 here). fn: the script's function (FCALL), as the store runs it. */
static double evalsha_ceiling(const char *fn, double *us_per_call,
                              double *cpu_us_per_call) {
  redisContext *c = rc_open();
  /* The header (presence.lua's begin()): epoch, maxlen, grace/channel
   * grace, lease, retention, instance id, a tab, the prefix. */
  redisReply *r = redisCommand(c,
                               "FCALL %s 0 register %s 1 0", fn,
                               "0 100000 0/0 3600000 0 rb\trb:");
  char epoch[32] = "0";
  if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 1 &&
      r->element[1]->type == REDIS_REPLY_ARRAY)
    snprintf(epoch, sizeof epoch, "%s", r->element[1]->element[0]->str);
  if (r) freeReplyObject(r);
  char args[512];
  /* (the shell's single quotes keep the header's spaces and its tab) */
  snprintf(args, sizeof args,
           "-r 100000000 FCALL %s 0 connect '%s 100000 0/0 3600000 0 "
           "rb\trb:' s__rand_int__ u__rand_int__ '' 0",
           fn, epoch);
  long long c0, u0, c1, u1;
  cmd_stats(c, "fcall", &c0, &u0);
  double cpu0 = redis_cpu_s();
  double rps = redis_benchmark(args);
  double cpu1 = redis_cpu_s();
  cmd_stats(c, "fcall", &c1, &u1);
  /* commandstats times a call by the wall clock inside Redis (inflated
   * when the host takes the CPU away mid-script); the process's CPU time
   * per call is the other view, network and event loop included. */
  *us_per_call = c1 > c0 ? (double)(u1 - u0) / (double)(c1 - c0) : -1;
  *cpu_us_per_call = c1 > c0 ? (cpu1 - cpu0) * 1e6 / (double)(c1 - c0) : -1;
  redisFree(c);
  return rps;
}

/* ---- reaping ------------------------------------------------------------ */

typedef struct reap_obs {
  bool cleanup;
  int64_t cleanup_ts;
  size_t ids;
} reap_obs_t;

static void on_cleanup(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  reap_obs_t *o = ud;
  if (!ev->instance_id || strcmp(ev->instance_id, "victim")) return;
  o->cleanup = true;
  o->cleanup_ts = ev->ts_ms;
  o->ids = ev->n_session_ids;
  if (getenv("BENCH_DEBUG"))
    fprintf(stderr, "cleanup at %lld (event ts %lld)\n", (long long)wall_ms(),
            (long long)ev->ts_ms);
}

typedef struct victim {
  int left, sent, ok;
  presence_t *p;
} victim_t;

static void victim_issue(victim_t *v);
static void victim_done(presence_t *p, int status, void *ud) {
  (void)p;
  victim_t *v = ud;
  v->left--;
  if (!status) v->ok++;
}
static void victim_issue(victim_t *v) {
  char sid[48], uid[32];
  /* UUID-length ids, as presenced generates them: the cleanup event lists
   * every one of them, so their length is part of the cost measured. */
  snprintf(sid, sizeof sid, "%08x-5eed-4000-8000-%012d", (unsigned)v->sent,
           v->sent);
  snprintf(uid, sizeof uid, "vu%d", v->sent);
  if (!presence_session_connect(v->p, sid, uid, NULL, victim_done, v))
    v->left++;
  v->sent++;
}

/* The victim: connect n sessions, say so on fd, then serve until killed. */
static void victim_main(int n, int fd, uint32_t hb, uint32_t lease) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  presence_store_t *st;
  victim_t v = {0};
  v.p = make_instance(&loop, "victim", &st, hb, lease);
  while (!presence_redis_ready(st)) {
    uv_run(&loop, UV_RUN_NOWAIT);
    sleep_ms(1);
  }
  while (v.sent < n || v.left > 0) {
    while (v.sent < n && v.left < 4000)
      victim_issue(&v);
    uv_run(&loop, UV_RUN_ONCE);
  }
  char ok[32];
  int len = snprintf(ok, sizeof ok, "%d\n", v.ok);
  if (write(fd, ok, (size_t)len) < 0) _exit(1);
  for (;;)
    uv_run(&loop, UV_RUN_ONCE);
}

/* The session index's entries: the buckets presence:i:<n> (format 10),
 * found by SCAN and counted by HLEN; -1 on an error. */
static long long index_entries(redisContext *c) {
  long long n = 0;
  char cur[32] = "0";
  do {
    redisReply *r =
        redisCommand(c, "SCAN %s MATCH presence:i:* COUNT 1000", cur);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      if (r) freeReplyObject(r);
      return -1;
    }
    snprintf(cur, sizeof cur, "%s", r->element[0]->str);
    redisReply *keys = r->element[1];
    for (size_t i = 0; i < keys->elements; i++) {
      redisReply *h = redisCommand(c, "HLEN %s", keys->element[i]->str);
      if (h && h->type == REDIS_REPLY_INTEGER) n += h->integer;
      if (h) freeReplyObject(h);
    }
    freeReplyObject(r);
  } while (strcmp(cur, "0"));
  return n;
}

/* INFO memory: used_memory, and the log's share of it (MEMORY USAGE of the
 * stream, sampled). */
static long long used_memory(redisContext *c) {
  long long v = -1;
  redisReply *r = redisCommand(c, "INFO memory");
  const char *p = r && r->type == REDIS_REPLY_STRING
                      ? strstr(r->str, "used_memory:")
                      : NULL;
  if (p) sscanf(p, "used_memory:%lld", &v);
  if (r) freeReplyObject(r);
  return v;
}

static long long key_memory(redisContext *c, const char *key) {
  redisReply *r = redisCommand(c, "MEMORY USAGE %s SAMPLES 0", key);
  long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
  if (r) freeReplyObject(r);
  return v;
}

static double median(double *v, int n);
static double g_mem_with_log = -1, g_mem_without_log = -1;

static void reaping(int n, uint32_t hb, uint32_t lease, FILE *out) {
  redisContext *c = rc_open();
  rc_do(c, "FLUSHALL");
  uv_loop_t loop;
  uv_loop_init(&loop);
  presence_store_t *st;
  presence_t *obs = make_instance(&loop, "reaper", &st, hb, lease);
  long long mem0 = used_memory(c);
  reap_obs_t o = {0};
  presence_on_cleanup(obs, on_cleanup, &o);
  while (!presence_redis_ready(st)) {
    uv_run(&loop, UV_RUN_NOWAIT);
    sleep_ms(1);
  }
  int pfd[2];
  if (pipe(pfd)) exit(1);
  int64_t t0 = now_ms();
  pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(pfd[0]);
    victim_main(n, pfd[1], hb, lease);
    _exit(0);
  }
  close(pfd[1]);
  /* The observer keeps its lease while the victim connects. */
  char buf[32] = {0};
  size_t got = 0;
  while (!memchr(buf, '\n', got)) {
    fd_set fds;
    FD_ZERO(&fds);
    FD_SET(pfd[0], &fds);
    struct timeval tv = {0, 5000};
    uv_run(&loop, UV_RUN_NOWAIT);
    if (select(pfd[0] + 1, &fds, NULL, NULL, &tv) > 0) {
      ssize_t k = read(pfd[0], buf + got, sizeof buf - 1 - got);
      if (k <= 0) break;
      got += (size_t)k;
    }
  }
  int connected = atoi(buf);
  int64_t connect_ms = now_ms() - t0;
  /* Redis memory per session (each its own user), the log apart: it holds
   * the connects' events, up to stream_maxlen whatever the sessions. */
  long long mem_log = key_memory(c, "presence:log");
  long long mem1 = used_memory(c);
  double per_session =
      connected > 0 ? (double)(mem1 - mem0 - mem_log) / connected : -1;
  /* With the log: everything the sessions added (the log holds their
   * connects' events, up to its cap; at --reap sessions below the cap each
   * session's share is its event). */
  g_mem_with_log = connected > 0 ? (double)(mem1 - mem0) / connected : -1;
  g_mem_without_log = per_session;
  rc_do(c, "CONFIG SET slowlog-max-len 100000");
  /* 1 ms, not 0: with 0 Redis 7 also logs every command a script runs,
   * and those crowd the calls themselves out of the log. */
  rc_do(c, "CONFIG SET slowlog-log-slower-than 1000");
  rc_do(c, "SLOWLOG RESET");
  long long es0, ec0, es1, ec1;
  cmd_stats(c, "fcall", &ec0, &es0);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  if (getenv("BENCH_DEBUG"))
    fprintf(stderr, "killed victim at %lld\n", (long long)wall_ms());
  redisReply *r = redisCommand(c, "ZSCORE presence:lease victim");
  long long expiry = r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : -1;
  if (r) freeReplyObject(r);
  if (getenv("BENCH_DEBUG"))
    fprintf(stderr, "victim's lease runs out at %lld\n", expiry);
  int64_t end = now_ms() + 60000;
  while (!o.cleanup && now_ms() < end)
    uv_run(&loop, UV_RUN_ONCE); /* timers wake it at least every 250 ms */
  cmd_stats(c, "fcall", &ec1, &es1);
  rc_do(c, "CONFIG SET slowlog-log-slower-than 10000");
  r = redisCommand(c, "SLOWLOG GET 100000");
  long long max_us = 0, reap_calls = 0;
  char max_op[64] = "";
  /* The durations of the reap calls, for their median and the longest. */
  size_t nd = r && r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
  double *durs = calloc(nd ? nd : 1, sizeof(double));
  size_t nr = 0;
  for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements;
       i++) {
    redisReply *e = r->element[i];
    long long d = e->element[2]->integer;
    redisReply *argv = e->element[3];
    /* FCALL fn numkeys keys... op ... */
    size_t at_op = argv->elements > 3
                       ? 3 + strtoul(argv->element[2]->str, NULL, 10)
                       : 0;
    const char *op = at_op && at_op < argv->elements
                         ? argv->element[at_op]->str
                         : "";
    if (!strcmp(op, "reap")) {
      reap_calls++;
      durs[nr++] = (double)d;
      if (getenv("BENCH_DEBUG") && d > 4000)
        fprintf(stderr, "slow reap call: %lld us (slowlog id %lld of %zu)\n",
                d, e->element[0]->integer, r->elements);
    }
    if (d > max_us) {
      max_us = d;
      snprintf(max_op, sizeof max_op, "%s %s", argv->element[0]->str,
               argv->elements > 3 ? op : "");
    }
  }
  if (r) freeReplyObject(r);
  double reap_p50 = nr ? median(durs, (int)nr) : 0; /* sorts durs */
  double reap_p99 = nr ? durs[(nr * 99) / 100] : 0;
  free(durs);
  long long left = index_entries(c);
  redisFree(c);
  fprintf(out,
          "\"reaping\": {\"sessions\": %d, \"connect_ms\": %lld, "
          "\"lease_ms\": %u, \"cleanup\": %s, \"ms_after_lease_expiry\": "
          "%lld, \"session_ids_in_cleanup\": %zu, \"sessions_left\": %lld, "
          "\"redis_bytes_per_session\": %.0f, "
          "\"redis_bytes_per_session_with_log\": %.0f, "
          "\"redis_log_bytes\": %lld, "
          "\"script_calls\": %lld, \"script_us\": %lld, "
          "\"reap_calls_over_1ms\": %lld, \"reap_call_p50_us\": %.0f, "
          "\"reap_call_p99_us\": %.0f, \"slowlog_max_us\": %lld, "
          "\"slowlog_max_cmd\": \"%s\"}",
          connected, (long long)connect_ms, lease, o.cleanup ? "true" : "false",
          o.cleanup ? (long long)o.cleanup_ts - expiry : -1, o.ids, left,
          per_session, g_mem_with_log, mem_log,
          ec1 - ec0, es1 - es0, reap_calls, reap_p50, reap_p99, max_us,
          max_op);
  presence_free(obs);
  for (int i = 0; i < 20; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
}

/* ---- main --------------------------------------------------------------- */

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Throughput through TCP and TLS, alternately (the host's speed drifts:
 * only runs side by side compare). Medians in *tcp, *tls. */
static void transport(int inst, int slots, int dur, int repeats, double *tcp,
                      double *tls) {
  double *v[2] = {calloc((size_t)repeats, sizeof(double)),
                  calloc((size_t)repeats, sizeof(double))};
  double *cpu[2] = {calloc((size_t)repeats, sizeof(double)),
                    calloc((size_t)repeats, sizeof(double))};
  redisContext *c = rc_open();
  printf("\"transport\": {\"repeats\": [");
  for (int k = 0; k < repeats; k++) {
    for (int t = 0; t < 2; t++) {
      /* Which goes first alternates too. */
      int which = (k + t) % 2;
      rc_do(c, "FLUSHALL");
      g_inst_url = which ? g_tls_url : g_tcp_url;
      long errors = 0;
      double rcpu = 0, cus = 0;
      v[which][k] = throughput(inst, slots, dur, &errors, &rcpu, &cus);
      double ccpu = v[which][k] > 0 ? g_client_cpu * 1e6 / v[which][k] : -1;
      cpu[which][k] = ccpu;
      printf("%s{\"transport\": \"%s\", \"ops_per_s\": %.0f, "
             "\"errors\": %ld, \"redis_cpu\": %.2f, "
             "\"client_cpu_us_per_op\": %.2f}",
             k || t ? ", " : "", which ? "tls" : "tcp", v[which][k], errors,
             rcpu, ccpu);
      fprintf(stderr, "transport repeat %d: %s %.0f ops/s (errors %ld, "
              "redis-server at %.0f%% of a core, client %.2f us CPU per "
              "op)\n",
              k + 1, which ? "TLS" : "TCP", v[which][k], errors, rcpu * 100,
              ccpu);
      fflush(stdout);
    }
  }
  g_inst_url = g_url;
  *tcp = median(v[0], repeats);
  *tls = median(v[1], repeats);
  double ctcp = median(cpu[0], repeats), ctls = median(cpu[1], repeats);
  printf("], \"median_tcp_ops_per_s\": %.0f, \"median_tls_ops_per_s\": "
         "%.0f, \"tls_over_tcp\": %.3f, "
         "\"median_tcp_client_cpu_us_per_op\": %.2f, "
         "\"median_tls_client_cpu_us_per_op\": %.2f}",
         *tcp, *tls, *tcp > 0 ? *tls / *tcp : -1, ctcp, ctls);
  fprintf(stderr, "transport: medians TCP %.0f, TLS %.0f ops/s: TLS/TCP = "
          "%.3f; client CPU per op TCP %.2f us, TLS %.2f us\n",
          *tcp, *tls, *tcp > 0 ? *tls / *tcp : -1, ctcp, ctls);
  free(cpu[0]);
  free(cpu[1]);
  redisFree(c);
  free(v[0]);
  free(v[1]);
}

int main(int argc, char **argv) {
  int inst = 3, slots = 2000, dur = 5000, repeats = 3, reap_n = 100000;
  int transport_only = 0, transport_repeats = 3;
  uint32_t hb = 1000, lease = 3000;
  static const char usage[] =
      "usage: bench_redis [--instances 3] [--slots 2000] [--duration-ms 5000]\n"
      "                   [--repeats 3] [--reap 100000] [--lease-ms 3000]\n"
      "                   [--transport-only 0|1] [--transport-repeats 3]\n"
      "Starts its own redis-server; one JSON object on stdout, progress and\n"
      "issue 21's targets on stderr (see docs/benchmarks.md).\n";
  for (int i = 1; i < argc; i += 2) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(usage, stdout);
      return 0;
    }
    /* An option this does not know, or one without its value, is refused
     * rather than ignored: a typo must not run minutes of benchmark. */
    int *opt = !strcmp(argv[i], "--instances")           ? &inst
               : !strcmp(argv[i], "--slots")             ? &slots
               : !strcmp(argv[i], "--duration-ms")       ? &dur
               : !strcmp(argv[i], "--repeats")           ? &repeats
               : !strcmp(argv[i], "--reap")              ? &reap_n
               : !strcmp(argv[i], "--transport-only")    ? &transport_only
               : !strcmp(argv[i], "--transport-repeats") ? &transport_repeats
                                                         : NULL;
    int is_lease = !strcmp(argv[i], "--lease-ms");
    if ((!opt && !is_lease) || i + 1 >= argc) {
      fprintf(stderr, "bench_redis: bad argument '%s'\n%s", argv[i], usage);
      return 2;
    }
    if (is_lease)
      lease = (uint32_t)atoi(argv[i + 1]);
    else
      *opt = atoi(argv[i + 1]);
  }
  signal(SIGPIPE, SIG_IGN);
  server_start();
  if (transport_only) {
    double tcp = 0, tls = 0;
    printf("{");
    transport(inst, slots, dur, transport_repeats, &tcp, &tls);
    printf("}\n");
    server_stop();
    return 0;
  }
  redisContext *c = rc_open();
  /* The script as the store loads it: a Functions library, its entry point
   * registered under a name of the bench's. */
  const char *sha = "presence_bench";
  redisReply *r = redisCommand(
      c, "FUNCTION LOAD REPLACE %s%b%s", "#!lua name=presence_bench\n",
      presence_lua, presence_lua_len,
      "\nredis.register_function('presence_bench', presence_main)\n");
  if (!r || r->type != REDIS_REPLY_STRING)
    fprintf(stderr, "bench_redis: FUNCTION LOAD failed: %s\n",
            r && r->type == REDIS_REPLY_ERROR ? r->str : "?");
  if (r) freeReplyObject(r);
  double *ops = calloc((size_t)repeats, sizeof(double));
  double *ceil = calloc((size_t)repeats, sizeof(double));
  double *setc = calloc((size_t)repeats, sizeof(double));
  double *cpu_us = calloc((size_t)repeats, sizeof(double));
  double *cmd_us = calloc((size_t)repeats, sizeof(double));
  double *one_us = calloc((size_t)repeats, sizeof(double));
  double *one_cpu = calloc((size_t)repeats, sizeof(double));
  double load0 = loadavg1();
  printf("{\"instances\": %d, \"slots_per_instance\": %d, \"duration_ms\": "
         "%d, \"repeats\": [",
         inst, slots, dur);
  for (int k = 0; k < repeats; k++) {
    rc_do(c, "FLUSHALL");
    long errors = 0;
    double l = loadavg1();
    double rcpu = 0, cus = 0;
    ops[k] = throughput(inst, slots, dur, &errors, &rcpu, &cus);
    /* Per operation: CPU seconds per second / operations per second. */
    cpu_us[k] = ops[k] > 0 ? rcpu * 1e6 / ops[k] : -1;
    cmd_us[k] = ops[k] > 0 ? cus / (ops[k] * dur / 1000.0) : -1;
    rc_do(c, "FLUSHALL");
    ceil[k] = evalsha_ceiling(sha, &one_us[k], &one_cpu[k]);
    setc[k] = redis_benchmark("-r 100000 SET k__rand_int__ v");
    printf("%s{\"ops_per_s\": %.0f, \"errors\": %ld, "
           "\"redis_cpu\": %.2f, \"redis_cpu_us_per_op\": %.2f, "
           "\"redis_cmd_us_per_op\": %.2f, "
           "\"unbatched_connect_per_s\": %.0f, "
           "\"unbatched_connect_us_per_call\": %.2f, "
           "\"unbatched_connect_cpu_us_per_call\": %.2f, "
           "\"set_ceiling_per_s\": %.0f, \"loadavg1\": %.2f}",
           k ? ", " : "", ops[k], errors, rcpu, cpu_us[k], cmd_us[k], ceil[k],
           one_us[k], one_cpu[k], setc[k], l);
    fflush(stdout);
    fprintf(stderr,
            "repeat %d: %.0f ops/s (errors %ld), Redis per op: %.2f us CPU "
            "(redis-server at %.0f%% of a core), %.2f us in FCALL; "
            "one unbatched connect: %.2f us per call (%.2f us CPU, %.0f/s); "
            "SET %.0f/s; load %.2f\n",
            k + 1, ops[k], errors, cpu_us[k], rcpu * 100, cmd_us[k], one_us[k],
            one_cpu[k], ceil[k], setc[k], l);
    fprintf(stderr, "repeat %d: client CPU %.2f us per op (%.0f%% of a core)\n",
            k + 1, ops[k] > 0 ? g_client_cpu * 1e6 / ops[k] : -1,
            g_client_cpu * 100);
  }
  double mo = 0, mc = 0, ms = 0, mcpu = -1, mcmd = -1, mone = -1;
  double mone_cpu = -1;
  double range[3][2] = {{0, 0}, {0, 0}, {0, 0}};
  if (repeats > 0) {
    mo = median(ops, repeats);
    mc = median(ceil, repeats);
    ms = median(setc, repeats);
    mcpu = median(cpu_us, repeats); /* median() sorts: min/max after it */
    range[0][0] = cpu_us[0], range[0][1] = cpu_us[repeats - 1];
    mcmd = median(cmd_us, repeats);
    range[1][0] = cmd_us[0], range[1][1] = cmd_us[repeats - 1];
    mone = median(one_us, repeats);
    range[2][0] = one_us[0], range[2][1] = one_us[repeats - 1];
    mone_cpu = median(one_cpu, repeats);
  }
  printf("], \"median_ops_per_s\": %.0f, "
         "\"median_redis_cpu_us_per_op\": %.2f, "
         "\"median_redis_cmd_us_per_op\": %.2f, "
         "\"median_unbatched_connect_us_per_call\": %.2f, "
         "\"median_unbatched_connect_cpu_us_per_call\": %.2f, "
         "\"median_unbatched_connect_per_s\": %.0f, "
         "\"median_set_ceiling_per_s\": %.0f, ",
         mo, mcpu, mcmd, mone, mone_cpu, mc, ms);
  fflush(stdout);
  /* Channel joins and leaves through the same Redis, beside the session
   * operations above (issue 13's figure). */
  double mco = 0, mcc = -1, crange[2] = {0, 0};
  {
    double *cops = calloc((size_t)repeats, sizeof(double));
    double *ccpu = calloc((size_t)repeats, sizeof(double));
    g_chan_mode = 1;
    for (int k = 0; k < repeats; k++) {
      rc_do(c, "FLUSHALL");
      long errors = 0;
      double rcpu = 0, cus = 0;
      cops[k] = throughput(inst, slots, dur, &errors, &rcpu, &cus);
      ccpu[k] = cops[k] > 0 ? rcpu * 1e6 / cops[k] : -1;
      fprintf(stderr,
              "channels repeat %d: %.0f joins+leaves/s (errors %ld), Redis "
              "per op: %.2f us CPU (redis-server at %.0f%% of a core)\n",
              k + 1, cops[k], errors, ccpu[k], rcpu * 100);
    }
    g_chan_mode = 0;
    mco = repeats ? median(cops, repeats) : 0; /* sorts: min/max after */
    if (repeats) crange[0] = cops[0], crange[1] = cops[repeats - 1];
    mcc = repeats ? median(ccpu, repeats) : -1;
    printf("\"channels\": {\"median_ops_per_s\": %.0f, "
           "\"median_redis_cpu_us_per_op\": %.2f, "
           "\"session_median_ops_per_s\": %.0f, "
           "\"session_median_redis_cpu_us_per_op\": %.2f}, ",
           mco, mcc, mo, mcpu);
    fprintf(stderr,
            "channels: %.0f joins+leaves/s through one Redis (%d instances), "
            "%.2f us Redis CPU per op; session ops: %.0f/s, %.2f us\n",
            mco, inst, mcc, mo, mcpu);
    free(cops);
    free(ccpu);
  }
  redisFree(c);
  if (reap_n > 0)
    reaping(reap_n, hb, lease, stdout);
  else
    printf("\"reaping\": null");
  double tcp = 0, tls = 0;
  printf(", ");
  if (transport_repeats > 0)
    transport(inst, slots, dur, transport_repeats, &tcp, &tls);
  else
    printf("\"transport\": null");
  /* Issue 21's targets beside the figures. */
  struct {
    const char *key, *label;
    double value, target, lo, hi;
    int ge; /* the value must reach the target (else stay under it) */
  } t[] = {
      {"redis_cpu_us_per_op", "Redis CPU per session operation, batched mix",
       mcpu, 6, range[0][0], range[0][1], 0},
      {"unbatched_connect_us_per_call",
       "one unbatched connect, Redis time per call", mone, 15, range[2][0],
       range[2][1], 0},
      {"redis_bytes_per_session_with_log",
       "Redis memory per session, log share included", g_mem_with_log, 300,
       g_mem_with_log, g_mem_with_log, 0},
      {"channel_ops_per_s",
       "channel joins+leaves/s, one Redis, 3 instances (13)", mco, 50000,
       crange[0], crange[1], 1},
      {"tls_over_tcp", "throughput over TLS / over TCP (issue 17)",
       tcp > 0 ? tls / tcp : -1, 0.8, tcp > 0 ? tls / tcp : -1,
       tcp > 0 ? tls / tcp : -1, 1},
  };
  printf(", \"targets\": {");
  fprintf(stderr, "\nTargets (make bench-redis), load %.2f -> %.2f\n",
          load0, loadavg1());
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    int measured = t[i].value >= 0;
    int ok = measured && (t[i].ge ? t[i].value >= t[i].target
                                  : t[i].value <= t[i].target);
    printf("%s\"%s\": {\"value\": %.2f, \"min\": %.2f, \"max\": %.2f, "
           "\"target\": %g, \"direction\": \"%s\", \"ok\": %s}",
           i ? ", " : "", t[i].key, t[i].value, t[i].lo, t[i].hi, t[i].target,
           t[i].ge ? "ge" : "le", measured ? (ok ? "true" : "false") : "null");
    fprintf(stderr, "  %-50s %8.2f [%.2f..%.2f]  target %s %g  %s\n",
            t[i].label, t[i].value, t[i].lo, t[i].hi, t[i].ge ? ">=" : "<=",
            t[i].target, !measured ? "NOT MEASURED" : ok ? "ok" : "MISS");
  }
  fprintf(stderr, "  Redis CPU per channel join/leave: %.2f us, beside "
          "%.2f us per session operation (issue 13)\n", mcc, mcpu);
  fprintf(stderr, "  (batched mix: also %.2f us per op inside FCALL, "
          "commandstats; one unbatched connect: %.2f us of redis-server CPU "
          "per call; memory without the log: %.0f B per session)\n",
          mcmd, mone_cpu, g_mem_without_log);
  printf("}, \"loadavg1_start\": %.2f, \"loadavg1_end\": %.2f, \"cpus\": "
         "%ld}\n",
         load0, loadavg1(), sysconf(_SC_NPROCESSORS_ONLN));
  server_stop();
  free(ops);
  free(ceil);
  free(setc);
  free(cpu_us);
  free(cmd_us);
  free(one_us);
  free(one_cpu);
  return 0;
}
