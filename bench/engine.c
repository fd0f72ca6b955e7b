/* SPDX-License-Identifier: MIT */
/*
 * bench/engine: the core's throughput and memory on one core.
 *
 * 1,000,000 sessions (36-character ids) over 250,000 users (16-character ids),
 * with a callback registered for every event type (doing nothing). One run:
 * connect every session, flip every session idle then online, disconnect
 * every session: 4,000,000 session operations, each with its event dispatch.
 * Five runs; the median is printed.
 *
 * Baseline, in the same process: the same key sequence against the bare
 * record table (insert, two lookups, remove per session) with no events, so
 * the engine's figure reads as a ratio to the data structure it sits on.
 *
 * Memory: heap bytes (mallinfo2, so malloc's own overhead counts) added by
 * the 1,000,000 live sessions, divided by the session count, tables
 * included. The fixed-size transition log is reported apart.
 *
 * Channels, in the same process and the same runs: the 1,000,000 sessions
 * connected (not timed), then every session joins one of 1,000 channels (by
 * handle, chosen so that no two sessions of a user share a channel: 1,000,000
 * memberships, each its own member with a channel.join) and leaves it again
 * (a channel.leave each): 2,000,000 channel operations a run, timed. The
 * memory figure is the heap added by the 1,000,000 memberships over the
 * sessions themselves, divided by the memberships (no member data).
 *
 * The engine is told the expected sizes (expected_sessions/users), and the
 * runs follow a warm-up run whose memory malloc keeps, so the figure is the
 * steady state of a server, not the kernel handing out fresh pages.
 */
#include "core/internal.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_SESSIONS 1000000
#define N_USERS 250000
#define RUNS 5

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t heap_used(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

static uint64_t rng_state = 0x853c49e6748fea9bull;
static uint64_t rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dull;
}

/* Ids in one block each so their storage is not counted as the engine's. */
static char *session_ids; /* N_SESSIONS x 37 */
static char *user_ids;    /* N_USERS x 17 */

static void make_ids(void) {
  static const char hex[] = "0123456789abcdef";
  session_ids = malloc((size_t)N_SESSIONS * 37);
  user_ids = malloc((size_t)N_USERS * 17);
  for (size_t i = 0; i < N_SESSIONS; i++) {
    char *s = session_ids + i * 37;
    for (int k = 0; k < 36; k++) s[k] = hex[rnd() & 15];
    s[8] = s[13] = s[18] = s[23] = '-';
    s[36] = '\0';
  }
  for (size_t i = 0; i < N_USERS; i++) {
    char *u = user_ids + i * 17;
    snprintf(u, 17, "user-%011zu", i);
  }
}

static const char *sid(size_t i) { return session_ids + i * 37; }
static const char *uid(size_t i) { return user_ids + (i % N_USERS) * 17; }

static uint64_t event_count;
static void on_event(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  (void)ev;
  (void)ud;
}
static void count_event(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  (void)ev;
  (void)ud;
  event_count++;
}

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "bench_engine: %s: %s\n", what, presence_strerror(rc));
    exit(1);
  }
}

typedef struct run_result {
  double seconds;
  uint64_t ops;
  uint64_t events;
  double bytes_per_session;
  size_t fixed_bytes;
} run_result_t;

static presence_handle_t *handles;

/* by_handle: status changes and disconnects name the session by the handle
 * connect returned (what a server holding a record per connection does)
 * instead of by id. */
static run_result_t engine_run(int measure_memory, int by_handle) {
  run_result_t r = {0};
  size_t fixed = 0;
  if (measure_memory) {
    /* What an empty engine holds (the log ring, queues): not per session. */
    size_t before = heap_used();
    presence_t *empty;
    check(presence_new(NULL, &empty), "presence_new");
    fixed = heap_used() - before;
    presence_free(empty);
  }
  size_t heap0 = heap_used();
  presence_t *p;
  presence_options_t o;
  presence_options_init(&o);
  /* Sized up front, as a server that knows its capacity is. */
  o.expected_sessions = N_SESSIONS;
  o.expected_users = N_USERS;
  check(presence_new(&o, &p), "presence_new");
  for (int t = 0; t < PRESENCE_EV_COUNT_; t++)
    check(presence_on(p, (presence_event_type_t)t, on_event, NULL), "on");
  check(presence_on_event(p, count_event, NULL), "on_event");
  event_count = 0;

  double t0 = now_s();
  for (size_t i = 0; i < N_SESSIONS; i++)
    check(presence_session_open(p, sid(i), uid(i), NULL, &handles[i], NULL,
                                NULL),
          "connect");
  double t1 = now_s();
  if (measure_memory) {
    /* Everything since before presence_new but the empty engine: the
     * pre-sized tables count as per-session memory. */
    r.bytes_per_session = (double)(heap_used() - heap0 - fixed) / N_SESSIONS;
    r.fixed_bytes = fixed;
  }
  (void)t1;
  if (by_handle) {
    for (size_t i = 0; i < N_SESSIONS; i++)
      check(presence_handle_set_status(p, handles[i], PRESENCE_IDLE, NULL,
                                       NULL),
            "idle");
    for (size_t i = 0; i < N_SESSIONS; i++)
      check(presence_handle_set_status(p, handles[i], PRESENCE_ONLINE, NULL,
                                       NULL),
            "online");
    for (size_t i = 0; i < N_SESSIONS; i++)
      check(presence_handle_end(p, handles[i], PRESENCE_REASON_DISCONNECT, NULL,
                                NULL),
            "disconnect");
  } else {
    for (size_t i = 0; i < N_SESSIONS; i++)
      check(presence_session_set_status(p, sid(i), PRESENCE_IDLE, NULL, NULL),
            "idle");
    for (size_t i = 0; i < N_SESSIONS; i++)
      check(presence_session_set_status(p, sid(i), PRESENCE_ONLINE, NULL,
                                        NULL),
            "online");
    for (size_t i = 0; i < N_SESSIONS; i++)
      check(presence_session_disconnect(p, sid(i), NULL, NULL), "disconnect");
  }
  double t2 = now_s();
  r.seconds = t2 - t0;
  r.ops = 4ull * N_SESSIONS;
  r.events = event_count;
  presence_free(p);
  return r;
}

#define N_CHANNELS 1000
static char channel_names[N_CHANNELS][16];
static const char *chan_of(size_t i) {
  return channel_names[(i * 7 + i / N_USERS) % N_CHANNELS];
}

typedef struct chan_result {
  double seconds;
  double bytes_per_membership;
} chan_result_t;

static chan_result_t channel_run(int measure_memory) {
  chan_result_t r = {0};
  presence_t *p;
  presence_options_t o;
  presence_options_init(&o);
  o.expected_sessions = N_SESSIONS;
  o.expected_users = N_USERS;
  check(presence_new(&o, &p), "presence_new");
  for (int t = 0; t < PRESENCE_EV_COUNT_; t++)
    check(presence_on(p, (presence_event_type_t)t, on_event, NULL), "on");
  check(presence_on_event(p, count_event, NULL), "on_event");
  for (size_t i = 0; i < N_SESSIONS; i++)
    check(presence_session_open(p, sid(i), uid(i), NULL, &handles[i], NULL,
                                NULL),
          "connect");
  size_t heap0 = heap_used();
  event_count = 0;
  double t0 = now_s();
  for (size_t i = 0; i < N_SESSIONS; i++)
    check(presence_handle_join(p, handles[i], chan_of(i), NULL, NULL, NULL),
          "join");
  double t1 = now_s();
  if (measure_memory)
    r.bytes_per_membership = (double)(heap_used() - heap0) / N_SESSIONS;
  for (size_t i = 0; i < N_SESSIONS; i++)
    check(presence_handle_leave(p, handles[i], chan_of(i), NULL, NULL),
          "leave");
  double t2 = now_s();
  (void)t1;
  if (event_count != 2ull * N_SESSIONS) {
    fprintf(stderr, "bench_engine: %llu channel events, expected %d\n",
            (unsigned long long)event_count, 2 * N_SESSIONS);
    exit(1);
  }
  r.seconds = t2 - t0;
  presence_free(p);
  return r;
}

/* The baseline: the same keys through the bare table. */
typedef struct bare {
  presence__hkey_t key;
  char id[40];
} bare_t;

static double table_run(void) {
  presence__table_t t;
  presence__table_init(&t, presence__default_allocator(), offsetof(bare_t, id));
  bare_t *recs = malloc(sizeof(bare_t) * N_SESSIONS);
  double t0 = now_s();
  for (size_t i = 0; i < N_SESSIONS; i++) {
    const char *s = sid(i);
    uint32_t h = presence__hash(s, 36);
    if (!presence__table_find(&t, s, 36, h)) {
      recs[i].key.hash = h;
      recs[i].key.len = 36;
      memcpy(recs[i].id, s, 37);
      presence__table_insert(&t, &recs[i]);
    }
  }
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < N_SESSIONS; i++) {
      const char *s = sid(i);
      bare_t *b = presence__table_find(&t, s, 36, presence__hash(s, 36));
      if (b) b->key.spare[0] ^= 1;
    }
  for (size_t i = 0; i < N_SESSIONS; i++) {
    const char *s = sid(i);
    bare_t *b = presence__table_find(&t, s, 36, presence__hash(s, 36));
    if (b) presence__table_remove(&t, b);
  }
  double t1 = now_s();
  presence__table_free(&t);
  free(recs);
  return t1 - t0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  const char *json_path = argc > 1 ? argv[1] : NULL;
  /* Keep freed memory in the process between runs: otherwise every run
   * starts by page-faulting ~150 MB back in, and the figure measures the
   * kernel (a server at steady state reuses its memory the same way). */
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  make_ids();
  handles = malloc(sizeof(*handles) * N_SESSIONS);
  double engine_s[RUNS], handle_s[RUNS], table_s[RUNS], chan_s[RUNS];
  for (int c = 0; c < N_CHANNELS; c++)
    snprintf(channel_names[c], sizeof(channel_names[c]), "room-%04d", c);
  run_result_t mem = engine_run(1, 1); /* warm-up, and the memory figure */
  chan_result_t chan_mem = channel_run(1);
  uint64_t events = 0;
  /* Interleaved, so a noisy neighbour hurts all three alike. */
  for (int i = 0; i < RUNS; i++) {
    table_s[i] = table_run();
    run_result_t r = engine_run(0, 0);
    engine_s[i] = r.seconds;
    events = r.events;
    handle_s[i] = engine_run(0, 1).seconds;
    chan_s[i] = channel_run(0).seconds;
  }
  qsort(chan_s, RUNS, sizeof(double), cmp_double);
  double chan_ops_per_s = 2.0 * N_SESSIONS / chan_s[RUNS / 2];
  qsort(engine_s, RUNS, sizeof(double), cmp_double);
  qsort(handle_s, RUNS, sizeof(double), cmp_double);
  qsort(table_s, RUNS, sizeof(double), cmp_double);
  double ops_per_s = 4.0 * N_SESSIONS / engine_s[RUNS / 2];
  double handle_ops_per_s = 4.0 * N_SESSIONS / handle_s[RUNS / 2];
  double events_per_s = (double)events / engine_s[RUNS / 2];
  double handle_events_per_s = (double)events / handle_s[RUNS / 2];
  double table_ops_per_s = 4.0 * N_SESSIONS / table_s[RUNS / 2];

  printf("bench/engine: %d sessions over %d users, %d runs (median)\n",
         N_SESSIONS, N_USERS, RUNS);
  printf("  session ops/s, by handle %12.0f  (connect by id; idle, online, "
         "disconnect by handle)\n",
         handle_ops_per_s);
  printf("  events/s, by handle      %12.0f  (%llu events a run, dispatched)\n",
         handle_events_per_s, (unsigned long long)events);
  printf("  session ops/s, by id     %12.0f  (every operation names the "
         "session id)\n",
         ops_per_s);
  printf("  events/s, by id          %12.0f\n", events_per_s);
  printf("  baseline table ops/s     %12.0f  (bare record table, no events)\n",
         table_ops_per_s);
  printf("  by handle / baseline     %12.2f\n",
         handle_ops_per_s / table_ops_per_s);
  printf("  by id / baseline         %12.2f\n", ops_per_s / table_ops_per_s);
  printf("  heap per session         %12.1f  bytes at %d live sessions\n",
         mem.bytes_per_session, N_SESSIONS);
  printf("  fixed heap               %12zu  bytes (transition log, queues)\n",
         mem.fixed_bytes);
  printf("  channel joins+leaves/s   %12.0f  (%d memberships in %d channels, "
         "by handle, an event each)\n",
         chan_ops_per_s, N_SESSIONS, N_CHANNELS);
  printf("  heap per membership      %12.1f  bytes beyond the session (no "
         "data)\n",
         chan_mem.bytes_per_membership);
  if (json_path) {
    FILE *f = fopen(json_path, "w");
    if (!f) {
      perror(json_path);
      return 1;
    }
    fprintf(f,
            "{\"bench\":\"engine\",\"sessions\":%d,\"users\":%d,\"runs\":%d,"
            "\"handle_ops_per_s\":%.0f,\"handle_events_per_s\":%.0f,"
            "\"id_ops_per_s\":%.0f,\"id_events_per_s\":%.0f,"
            "\"baseline_table_ops_per_s\":%.0f,\"handle_ratio\":%.3f,"
            "\"heap_bytes_per_session\":%.1f,\"fixed_heap_bytes\":%zu,"
            "\"channel_ops_per_s\":%.0f,\"heap_bytes_per_membership\":%.1f}\n",
            N_SESSIONS, N_USERS, RUNS, handle_ops_per_s, handle_events_per_s,
            ops_per_s, events_per_s, table_ops_per_s,
            handle_ops_per_s / table_ops_per_s,
            mem.bytes_per_session, mem.fixed_bytes, chan_ops_per_s,
            chan_mem.bytes_per_membership);
    fclose(f);
  }
  free(handles);
  free(session_ids);
  free(user_ids);
  return 0;
}
