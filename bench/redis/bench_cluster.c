/* SPDX-License-Identifier: MIT */
/*
 * Redis CPU per session operation against a given Redis or Redis Cluster
 * (bench/cluster.py runs it against both, in one run, and prints the
 * figures beside their targets). Three instances, one thread and loop
 * each, cycle their slots through connect -> idle -> online -> end; after
 * a warm-up, the window's completed operations and the CPU time the given
 * redis-server processes used (/proc/<pid>/stat) give Redis CPU us per
 * operation; INFO commandstats per node gives each primary's share of the
 * script calls.
 *
 *   bench_cluster --url redis://127.0.0.1:P [--cluster H:P,H:P,...]
 *                 [--shards S] --pids PID,PID,... --ports P,P,...
 *                 [--slots 2000] [--duration-ms 4000] [--chosen-ids]
 *                 [--rate OPS] [--held N]
 *                 [--command-timeout-ms T] [--lease-ms L]
 *
 * --rate paces each instance at OPS operations a second, its slots taken
 * in turn (open loop), instead of each slot starting its next operation
 * as its last one is answered (closed loop, the default: the most the
 * nodes take). Each session's user is drawn at its connect (session_user),
 * so in either loop the primaries' shares are those of the users they
 * hold: what the key layout spreads. (Until 2026-12-05 slot k was user k
 * for the whole run: closed, a node that the host schedules more often
 * then answered its own slots sooner and was handed more work.)
 *
 * --held N has each instance open N more sessions, each its own user, before
 * the run and keep them open through it: the store then holds a
 * population, as a deployment does. Without one, a shard's session index
 * holds only the cycling sessions (~375 a shard at 12 shards), and Redis
 * keeps a hash of up to hash-max-listpack-entries (512 in Debian's
 * redis-server) as a listpack, which HSETNX scans end to end (4-17 us a
 * call, against 0.5 us in the one shard's hashtable): the sharded store
 * would be measured in an encoding that no store worth sharding is in.
 *
 * --command-timeout-ms and --lease-ms set the store's (2,000 and 6,000 by
 * default; the heartbeat is a sixth of the lease): bench/cluster.py
 * --instructions raises them, since a redis-server under callgrind answers
 * 30-50 times slower and a call waits seconds behind the others.
 *
 * A failed operation is issued again 10 ms later, not at once: while the
 * store reconnects, every operation fails at once, and a slot that retried
 * immediately spun its thread (millions of failures a second).
 *
 * --chosen-ids opens sessions as a backend's (ids it chose: claimed
 * cluster-wide in shards) rather than as presenced's WebSocket sessions.
 *
 * Output: one JSON object on stdout.
 */
#include "presence.h"
#include "presence_redis.h"
#include "session_cycle.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

static const char *g_url, *g_cluster;
static unsigned g_shards;
static atomic_int g_run, g_counting, g_ready;
static double g_rate; /* per instance, ops/s; 0: closed loop */
static int g_held;     /* per instance, sessions held open through the run */
static uint32_t g_command_timeout_ms = 2000, g_lease_ms = 6000;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static double pid_cpu_s(int pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  unsigned long ut = 0, st = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                   &ut, &st) != 2)
    return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* One node's INFO commandstats: calls and usec per command. */
#define CMDS_MAX 48
typedef struct cmdstats {
  int n;
  char name[CMDS_MAX][32];
  long long calls[CMDS_MAX], usec[CMDS_MAX];
} cmdstats_t;

static int cmdstats(int port, cmdstats_t *out) {
  memset(out, 0, sizeof *out);
  struct timeval tv = {2, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (!c || c->err) {
    if (c) redisFree(c);
    return -1;
  }
  redisReply *r = redisCommand(c, "INFO commandstats");
  const char *p = r && r->type == REDIS_REPLY_STRING ? r->str : "";
  while ((p = strstr(p, "cmdstat_")) && out->n < CMDS_MAX) {
    p += 8;
    int k = out->n;
    if (sscanf(p, "%31[^:]:calls=%lld,usec=%lld", out->name[k],
               &out->calls[k], &out->usec[k]) == 3)
      out->n++;
  }
  if (r) freeReplyObject(r);
  redisFree(c);
  return 0;
}

static long long stat_of(const cmdstats_t *s, const char *name, int usec) {
  for (int k = 0; k < s->n; k++)
    if (!strcmp(s->name[k], name)) return usec ? s->usec[k] : s->calls[k];
  return 0;
}

typedef struct worker {
  pthread_t th;
  int idx, slots;
  uv_loop_t loop;
  presence_t *p;
  presence_store_t *store;
  int *stage;
  uint64_t *gen;
  atomic_long ops, errors;
  atomic_long all_ops; /* whenever done: the event mix, the commands */
  uint64_t events[PRESENCE_EV_COUNT_];
  int inflight;
  /* --rate: the pacing timer, each slot's operation in flight, the next
   * slot in turn, the operations issued since t0 (ms). */
  uv_timer_t tick;
  unsigned char *busy;
  /* Failed operations wait for the retry timer (the top of this file). */
  unsigned char *failed;
  uv_timer_t retry;
  int next;
  atomic_int next_group; /* closed loop: the next quarter to start */
  long issued;
  int64_t t0;
  int held_done, held_failed; /* --held: opens answered, refused */
} worker_t;

typedef struct ref {
  worker_t *w;
  int slot;
} ref_t;

static void issue(worker_t *w, int slot);

/* Closed loop: the slots start a quarter at a time, each quarter once the
 * ones before have completed a quarter's worth of operations, so that
 * their cycles stand at different stages. Started together, every slot
 * stayed at the same stage (each call answers a batch of them): the
 * operations came in rounds of one kind, a round of connects every fourth,
 * and a window's count of one command caught whole rounds
 * (bench/cluster.py, count_instructions). */
static void start_groups(worker_t *w) {
  int g;
  while ((g = atomic_load(&w->next_group)) < 4 &&
         atomic_load(&w->all_ops) >= (long)g * (w->slots / 4)) {
    for (int i = g; i < w->slots; i += 4) issue(w, i);
    atomic_store(&w->next_group, g + 1);
  }
}

static void on_retry(uv_timer_t *t) {
  worker_t *w = t->data;
  for (int i = 0; i < w->slots && atomic_load(&g_run); i++)
    if (w->failed[i]) {
      w->failed[i] = 0;
      issue(w, i);
    }
}

/* Closed loop only: --rate's pacing already comes back to a slot. */
static void retry_later(worker_t *w, int slot) {
  w->failed[slot] = 1;
  if (!uv_is_active((uv_handle_t *)&w->retry))
    uv_timer_start(&w->retry, on_retry, 10, 0);
}

static void op_done(presence_t *p, int status, void *ud) {
  (void)p;
  ref_t *r = ud;
  worker_t *w = r->w;
  int slot = r->slot;
  free(r);
  w->inflight--;
  if (status == 0) atomic_fetch_add(&w->all_ops, 1);
  if (atomic_load(&g_counting)) {
    if (status == 0)
      atomic_fetch_add(&w->ops, 1);
    else
      atomic_fetch_add(&w->errors, 1);
  }
  w->stage[slot] = (w->stage[slot] + 1) % 4;
  if (w->stage[slot] == 0) w->gen[slot]++;
  w->busy[slot] = 0;
  if (!atomic_load(&g_run) || g_rate > 0) return;
  if (status == 0)
    issue(w, slot);
  else
    retry_later(w, slot);
  start_groups(w);
}

/* --rate: what the rate owes since t0, from the slots in turn; a slot
 * still waiting for its answer is passed over (its turn comes again). */
static void pace(uv_timer_t *t) {
  worker_t *w = t->data;
  if (!atomic_load(&g_run)) {
    uv_timer_stop(t);
    return;
  }
  long owed = (long)((double)(now_ms() - w->t0) / 1000.0 * g_rate);
  for (int tries = 0; w->issued < owed && tries < w->slots; tries++) {
    int slot = w->next;
    w->next = (w->next + 1) % w->slots;
    if (w->busy[slot]) continue;
    issue(w, slot);
    w->issued++;
  }
}

/* The user of a slot's gen-th session on instance idx: one of the slots'
 * users (u0 .. u<slots-1>), drawn anew at each connect (splitmix64 of
 * instance, slot and gen); why per session, see the top of this file.
 * Until 2026-12-06 the instance was not drawn in: slot k of every instance
 * drew the same user at the same gen, so how often a user's sessions
 * overlapped (hence the events, and the work, of an operation) followed
 * how the instances' cycles lined up, which the answers' latency sets: in
 * runs under callgrind a mode made 1.9 events an operation and the next
 * 2.9, and the same mode 0.63 to 0.79 HMGETs an operation. Drawn for each
 * session apart, a user's sessions overlap by chance alone (~3 a user:
 * 3 x slots sessions over slots users), the same in every mode. */
static unsigned session_user(int idx, int slot, uint64_t gen, int slots) {
  uint64_t x = ((uint64_t)slot << 32 ^ gen ^ (uint64_t)idx << 56) +
               0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return (unsigned)(x % (uint64_t)slots);
}

static void issue(worker_t *w, int slot) {
  char sid[64], uid[64];
  snprintf(sid, sizeof sid, "i%d-s%d-%llu", w->idx, slot,
           (unsigned long long)w->gen[slot]);
  snprintf(uid, sizeof uid, "u%u",
           session_user(w->idx, slot, w->gen[slot], w->slots));
  ref_t *r = malloc(sizeof *r);
  r->w = w;
  r->slot = slot;
  int rc;
  rc = session_cycle_step(w->p, w->stage[slot], sid, uid, op_done, r);
  if (rc) {
    free(r);
    atomic_fetch_add(&w->errors, 1);
    if (g_rate <= 0) retry_later(w, slot);
    return;
  }
  w->busy[slot] = 1;
  w->inflight++;
}

static void on_held_open(presence_t *p, int status, void *ud) {
  (void)p;
  worker_t *w = ud;
  w->held_done++;
  if (status) w->held_failed++;
}

/* --held: opens this instance's population, at most 1,000 in flight. */
static int open_held(worker_t *w) {
  int sent = 0;
  int64_t end = now_ms() + 120000;
  while (w->held_done < g_held && now_ms() < end) {
    while (sent < g_held && sent - w->held_done < 1000) {
      char sid[64], uid[64];
      snprintf(sid, sizeof sid, "h%d-%d", w->idx, sent);
      snprintf(uid, sizeof uid, "hu%d-%d", w->idx, sent);
      if (session_cycle_step(w->p, 0, sid, uid, on_held_open, w)) {
        w->held_done++;
        w->held_failed++;
      }
      sent++;
    }
    uv_run(&w->loop, UV_RUN_ONCE);
  }
  return w->held_done < g_held || w->held_failed ? -1 : 0;
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  uv_loop_init(&w->loop);
  uv_timer_init(&w->loop, &w->retry);
  w->retry.data = w;
  presence_redis_options_t ro;
  memset(&ro, 0, sizeof ro);
  ro.loop = &w->loop;
  ro.url = g_url;
  ro.cluster = g_cluster;
  ro.shards = g_shards;
  ro.lease_ms = g_lease_ms;
  ro.heartbeat_ms = g_lease_ms / 6;
  ro.command_timeout_ms = g_command_timeout_ms;
  char id[32];
  snprintf(id, sizeof id, "bench-%d", w->idx);
  if (presence_store_redis_new(&ro, &w->store)) return NULL;
  presence_options_t o;
  presence_options_init(&o);
  o.instance_id = id;
  o.store = w->store;
  if (presence_new(&o, &w->p)) return NULL;
  int64_t end = now_ms() + 20000;
  while (!presence_redis_ready(w->store) && now_ms() < end) {
    uv_run(&w->loop, UV_RUN_NOWAIT);
    sleep_ms(1);
  }
  if (g_held > 0 && open_held(w))
    fprintf(stderr, "bench_cluster: instance %d: %d of %d held sessions "
            "open (%d refused)\n", w->idx, w->held_done - w->held_failed,
            g_held, w->held_failed);
  atomic_fetch_add(&g_ready, 1);
  while (!atomic_load(&g_run)) sleep_ms(1);
  if (g_rate > 0) {
    w->t0 = now_ms();
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    uv_timer_start(&w->tick, pace, 1, 1);
  } else {
    start_groups(w);
  }
  while (atomic_load(&g_run)) uv_run(&w->loop, UV_RUN_ONCE);
  if (g_rate > 0) uv_close((uv_handle_t *)&w->tick, NULL);
  uv_close((uv_handle_t *)&w->retry, NULL);
  end = now_ms() + 5000;
  while (w->inflight > 0 && now_ms() < end) uv_run(&w->loop, UV_RUN_NOWAIT);
  presence_stats_t st;
  if (!presence_stats(w->p, &st))
    memcpy(w->events, st.events, sizeof w->events);
  presence_free(w->p);
  for (int i = 0; i < 20; i++) uv_run(&w->loop, UV_RUN_NOWAIT);
  uv_loop_close(&w->loop);
  return NULL;
}

static int parse_list(const char *s, int *out, int max) {
  int n = 0;
  while (s && *s && n < max) {
    out[n++] = atoi(s);
    s = strchr(s, ',');
    if (s) s++;
  }
  return n;
}

static long all_ops_now(worker_t *ws, int n) {
  long t = 0;
  for (int i = 0; i < n; i++) t += atomic_load(&ws[i].all_ops);
  return t;
}

int main(int argc, char **argv) {
  int pids[16], ports[16], npids = 0, nports = 0, slots = 2000, dur = 4000;
  for (int i = 1; i < argc; i += 2) {
    if (!strcmp(argv[i], "--chosen-ids")) {
      session_cycle_chosen_ids = 1;
      i--;
      continue;
    }
    if (i + 1 >= argc) break;
    if (!strcmp(argv[i], "--url")) g_url = argv[i + 1];
    else if (!strcmp(argv[i], "--cluster")) g_cluster = argv[i + 1];
    else if (!strcmp(argv[i], "--shards")) g_shards = (unsigned)atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--pids")) npids = parse_list(argv[i + 1], pids, 16);
    else if (!strcmp(argv[i], "--ports")) nports = parse_list(argv[i + 1], ports, 16);
    else if (!strcmp(argv[i], "--slots")) slots = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--duration-ms")) dur = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--rate")) g_rate = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--held")) g_held = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--command-timeout-ms"))
      g_command_timeout_ms = (uint32_t)atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--lease-ms"))
      g_lease_ms = (uint32_t)atol(argv[i + 1]);
    else {
      fprintf(stderr, "bench_cluster: bad argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (g_lease_ms < 600 || !g_command_timeout_ms) {
    fprintf(stderr, "bench_cluster: --lease-ms must be at least 600 and "
            "--command-timeout-ms above 0\n");
    return 2;
  }
  if (!g_url || !npids) {
    fprintf(stderr, "bench_cluster: --url and --pids are required\n");
    return 2;
  }
  enum { N = 3 };
  worker_t ws[N];
  memset(ws, 0, sizeof ws);
  for (int i = 0; i < N; i++) {
    ws[i].idx = i;
    ws[i].slots = slots;
    ws[i].stage = calloc((size_t)slots, sizeof(int));
    ws[i].gen = calloc((size_t)slots, sizeof(uint64_t));
    ws[i].busy = calloc((size_t)slots, 1);
    ws[i].failed = calloc((size_t)slots, 1);
    pthread_create(&ws[i].th, NULL, worker_main, &ws[i]);
  }
  while (atomic_load(&g_ready) < N) sleep_ms(5);
  atomic_store(&g_run, 1);
  /* Warm-up: every quarter of the slots started (closed loop), then 1 s. */
  for (int64_t end = now_ms() + 120000; g_rate <= 0 && now_ms() < end;) {
    int all = 1;
    for (int i = 0; i < N; i++) all &= atomic_load(&ws[i].next_group) == 4;
    if (all) break;
    sleep_ms(5);
  }
  sleep_ms(1000);
  /* Each node's command counts before and after the window, read outside
   * it: under load a round of INFO takes a while, and neither the CPU nor
   * the operations window may include it. The commands' own window is
   * the reads' span, with the operations completed in that span. */
  static cmdstats_t s0[16], s1[16];
  long cmd_ops0 = all_ops_now(ws, N);
  for (int k = 0; k < nports; k++) cmdstats(ports[k], &s0[k]);
  /* Completions between the first reads' answers and the second's: with
   * one server, the operations it ran between the two INFOs, but for the
   * answers in transit (bench/cluster.py --instructions: its slots move
   * in step, so a count of one command a cycle is off by up to a round). */
  long info_ops0 = all_ops_now(ws, N);
  double c0[16];
  for (int k = 0; k < npids; k++) c0[k] = pid_cpu_s(pids[k]);
  atomic_store(&g_counting, 1);
  int64_t t0 = now_ms();
  sleep_ms(dur);
  atomic_store(&g_counting, 0);
  int64_t t1 = now_ms();
  double cpu = 0, cpus[16];
  for (int k = 0; k < npids; k++) {
    cpus[k] = pid_cpu_s(pids[k]) - c0[k];
    cpu += cpus[k];
  }
  for (int k = 0; k < nports; k++) cmdstats(ports[k], &s1[k]);
  long cmd_ops = all_ops_now(ws, N) - cmd_ops0;
  long info_ops = all_ops_now(ws, N) - info_ops0;
  atomic_store(&g_run, 0);
  long ops = 0, errors = 0, all_ops = 0;
  uint64_t events[PRESENCE_EV_COUNT_] = {0};
  for (int i = 0; i < N; i++) {
    pthread_join(ws[i].th, NULL);
    all_ops += ws[i].all_ops;
    for (int k = 0; k < PRESENCE_EV_COUNT_; k++) events[k] += ws[i].events[k];
    ops += atomic_load(&ws[i].ops);
    errors += atomic_load(&ws[i].errors);
    free(ws[i].stage);
    free(ws[i].gen);
    free(ws[i].busy);
    free(ws[i].failed);
  }
  double secs = (double)(t1 - t0) / 1000.0;
  long held_open = 0;
  for (int i = 0; i < N; i++) held_open += ws[i].held_done - ws[i].held_failed;
  printf("{\"held\": %ld, \"ops\": %ld, \"errors\": %ld, \"seconds\": %.3f, "
         "\"ops_per_s\": %.0f, \"redis_cpu_s\": %.4f, "
         "\"redis_us_per_op\": %.3f, \"cpu_per_pid\": [",
         held_open, ops, errors, secs, (double)ops / secs, cpu,
         ops ? cpu * 1e6 / (double)ops : 0.0);
  for (int k = 0; k < npids; k++)
    printf("%s%.4f", k ? ", " : "", cpus[k]);
  printf("], \"fcalls_per_port\": [");
  for (int k = 0; k < nports; k++)
    printf("%s%lld", k ? ", " : "",
           stat_of(&s1[k], "fcall", 0) - stat_of(&s0[k], "fcall", 0));
  /* The data commands each node ran (the scripts' own calls included):
   * its share of the work, which the number of FCALLs, whose batches
   * differ in size, only approximates. */
  printf("], \"data_commands_per_port\": [");
  static const char *const not_data[] = {
      "fcall", "evalsha", "eval", "info", "cluster", "replconf", "ping",
      "client", "hello", "select", "auth", "function", "script", "psync",
      "command", "config", NULL};
  for (int k = 0; k < nports; k++) {
    long long n = 0;
    for (int j = 0; j < s1[k].n; j++) {
      int skip = 0;
      for (int q = 0; not_data[q] && !skip; q++)
        skip = !strcmp(s1[k].name[j], not_data[q]);
      if (!skip)
        n += s1[k].calls[j] - stat_of(&s0[k], s1[k].name[j], 0);
    }
    printf("%s%lld", k ? ", " : "", n);
  }
  /* Every command the nodes ran in the window, summed over them: where
   * the CPU went (calls, usec as Redis times them). */
  /* The events these instances decided over the whole run, by type, per
   * operation completed in it. */
  printf("], \"event_mix\": {");
  for (int k = 0, f = 1; k < PRESENCE_EV_COUNT_; k++)
    if (events[k]) {
      printf("%s\"%s\": %.3f", f ? "" : ", ",
             presence_event_type_name((presence_event_type_t)k),
             all_ops ? (double)events[k] / (double)all_ops : 0.0);
      f = 0;
    }
  printf("}, \"commands_ops\": %ld, \"info_ops\": %ld, \"commands\": {",
         cmd_ops, info_ops);
  int first = 1;
  for (int k = 0; k < nports; k++)
    for (int j = 0; j < s1[k].n; j++) {
      int seen = 0;
      for (int q = 0; q < k && !seen; q++)
        for (int m = 0; m < s1[q].n && !seen; m++)
          seen = !strcmp(s1[q].name[m], s1[k].name[j]);
      for (int m = 0; m < j && !seen; m++)
        seen = !strcmp(s1[k].name[m], s1[k].name[j]);
      if (seen) continue;
      long long calls = 0, usec = 0;
      for (int q = 0; q < nports; q++) {
        calls += stat_of(&s1[q], s1[k].name[j], 0) -
                 stat_of(&s0[q], s1[k].name[j], 0);
        usec += stat_of(&s1[q], s1[k].name[j], 1) -
                stat_of(&s0[q], s1[k].name[j], 1);
      }
      if (!calls) continue;
      printf("%s\"%s\": [%lld, %lld]", first ? "" : ", ", s1[k].name[j],
             calls, usec);
      first = 0;
    }
  printf("}}\n");
  return 0;
}
