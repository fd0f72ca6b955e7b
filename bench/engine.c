/* SPDX-License-Identifier: MIT */
/*
 * bench/engine: the core's throughput and memory on one core.
 *
 *   bench_engine [--sessions N] [--users U | --sessions-per-user K]
 *                [--runs R] [--channels C] [--only channels]
 *                [--json PATH] [--help]
 *
 * N sessions (36-character ids, default 1,000,000) over U users (16-character
 * ids; default N / K with K = 4 sessions per user), with a callback
 * registered for every event type (doing nothing). One run: connect every
 * session (each user's first session creates the user), flip every session
 * idle then online, disconnect every session (the last one of a user ends
 * it). Each of the three kinds is timed on its own, because their costs
 * differ (a connect allocates and hashes, a status change by handle does
 * neither) and a blended figure hides which one moved. Status changes and
 * disconnects run twice: by the handle connect returned (what a server
 * holding a record per connection does) and by session id (every operation
 * hashes the id). R runs (default 5), interleaved with the baseline; each
 * figure is the median, with its min and max.
 *
 * Baseline, in the same process and interleaved: the same key sequence
 * against the bare record table (insert, two lookups, remove per session)
 * with no events and no user records, so the engine's figures read as
 * ratios to the data structure it sits on.
 *
 * Memory: heap bytes (mallinfo2, so malloc's own overhead counts) added by
 * the N live sessions and their users, divided by N, tables included; the
 * fixed-size transition log and queues of an empty engine are apart. The
 * figure depends on K: a user record is shared by its sessions, so at one
 * session per user (the common case) each session carries a whole user.
 *
 * Channels, in the same process and the same runs: the N sessions
 * connected (not timed), then every session joins one of --channels
 * channels (1,000; by handle, chosen so that no two sessions of a user share
 * a channel: N memberships, each its own member with a channel.join) and
 * leaves it again (a channel.leave each): 2N channel operations a run,
 * timed, joins and leaves apart, by the wall clock and in CPU seconds of
 * this process (the machine is shared: per CPU-second is "on one core"; the
 * session operations by handle get the same column). Then, all joined again
 * (not timed), the steady state at N memberships in random order: every
 * session (shuffled) leaves and rejoins 4,096 leaves later, 2N more
 * operations timed apart (the engine is then freed with its members). --only channels runs
 * these alone (for a profile or an A/B of two builds). The memory figure
 * is the heap added by the N memberships over the sessions themselves,
 * divided by the memberships (no member data).
 *
 * Status that people set, in the same runs: one session per user, then
 * every user changes its availability four times and sets and clears a
 * status message with an expiry (an event each): 6U operations, timed as
 * availability changes and message changes apart.
 *
 * The engine is told the expected sizes (expected_sessions/users, and
 * expected_memberships in the channel runs, whose member table the memory
 * figure then counts), and the runs follow a warm-up run whose memory
 * malloc keeps, so the figure is the steady state of a server, not the
 * kernel handing out fresh pages.
 */
#include "core/internal.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SESSIONS 10000000
#define MAX_RUNS 50

static size_t n_sessions = 1000000, n_users, n_channels = 1000;
static int n_runs = 5;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds of this process: on a shared, loaded machine the wall clock
 * measures the neighbours; operations per CPU-second is "on one core". */
static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
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
static char *session_ids; /* n_sessions x 37 */
static char *user_ids;    /* n_users x 17 */

static void make_ids(void) {
  static const char hex[] = "0123456789abcdef";
  session_ids = malloc(n_sessions * 37);
  user_ids = malloc(n_users * 17);
  if (!session_ids || !user_ids) {
    fprintf(stderr, "bench_engine: out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < n_sessions; i++) {
    char *s = session_ids + i * 37;
    for (int k = 0; k < 36; k++) s[k] = hex[rnd() & 15];
    s[8] = s[13] = s[18] = s[23] = '-';
    s[36] = '\0';
  }
  for (size_t i = 0; i < n_users; i++) {
    char *u = user_ids + i * 17;
    snprintf(u, 17, "user-%011u", (unsigned)i);
  }
}

static const char *sid(size_t i) { return session_ids + i * 37; }
static const char *uid(size_t i) { return user_ids + (i % n_users) * 17; }

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

/* An engine sized up front (as a server that knows its capacity is), with
 * a callback for every event type, counting them. */
static presence_t *new_engine(size_t sessions, size_t users,
                              size_t memberships) {
  presence_t *p;
  presence_options_t o;
  presence_options_init(&o);
  o.expected_sessions = (uint32_t)sessions;
  o.expected_users = (uint32_t)users;
  o.expected_memberships = (uint32_t)memberships;
  check(presence_new(&o, &p), "presence_new");
  for (int t = 0; t < PRESENCE_EV_COUNT_; t++)
    check(presence_on(p, (presence_event_type_t)t, on_event, NULL), "on");
  check(presence_on_event(p, count_event, NULL), "on_event");
  return p;
}

typedef struct run_result {
  double connect_s, status_s, disconnect_s; /* status: 2 x n_sessions ops */
  double connect_c, status_c, disconnect_c; /* the same in CPU seconds */
  uint64_t events;
  double bytes_per_session;
  size_t fixed_bytes;
} run_result_t;

static presence_handle_t *handles;

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
  presence_t *p = new_engine(n_sessions, n_users, 0);
  event_count = 0;

  double c0 = cpu_s(), t0 = now_s();
  for (size_t i = 0; i < n_sessions; i++)
    check(presence_session_open(p, sid(i), uid(i), NULL, &handles[i], NULL,
                                NULL),
          "connect");
  double t1 = now_s(), c1 = cpu_s();
  if (measure_memory) {
    /* Everything since before presence_new but the empty engine: the
     * pre-sized tables count as per-session memory. */
    r.bytes_per_session =
        (double)(heap_used() - heap0 - fixed) / (double)n_sessions;
    r.fixed_bytes = fixed;
  }
  if (by_handle) {
    for (size_t i = 0; i < n_sessions; i++)
      check(presence_handle_set_status(p, handles[i], PRESENCE_IDLE, NULL,
                                       NULL),
            "idle");
    for (size_t i = 0; i < n_sessions; i++)
      check(presence_handle_set_status(p, handles[i], PRESENCE_ONLINE, NULL,
                                       NULL),
            "online");
  } else {
    for (size_t i = 0; i < n_sessions; i++)
      check(presence_session_set_status(p, sid(i), PRESENCE_IDLE, NULL, NULL),
            "idle");
    for (size_t i = 0; i < n_sessions; i++)
      check(presence_session_set_status(p, sid(i), PRESENCE_ONLINE, NULL,
                                        NULL),
            "online");
  }
  double t2 = now_s(), c2 = cpu_s();
  if (by_handle) {
    for (size_t i = 0; i < n_sessions; i++)
      check(presence_handle_end(p, handles[i], PRESENCE_REASON_DISCONNECT, NULL,
                                NULL),
            "disconnect");
  } else {
    for (size_t i = 0; i < n_sessions; i++)
      check(presence_session_disconnect(p, sid(i), NULL, NULL), "disconnect");
  }
  double t3 = now_s(), c3 = cpu_s();
  r.connect_s = t1 - t0;
  r.status_s = t2 - t1;
  r.disconnect_s = t3 - t2;
  r.connect_c = c1 - c0;
  r.status_c = c2 - c1;
  r.disconnect_c = c3 - c2;
  r.events = event_count;
  presence_free(p);
  return r;
}

static char (*channel_names)[16];
#define CHURN_LAG 4096
static size_t *churn_order; /* a permutation of the sessions */
static const char *chan_of(size_t i) {
  return channel_names[(i * 7 + i / n_users) % n_channels];
}

typedef struct chan_result {
  double join_s, leave_s; /* wall clock */
  double join_c, leave_c; /* CPU seconds */
  double churn_c;          /* CPU seconds of N leaves + N rejoins at N */
  double bytes_per_membership;
} chan_result_t;

/* The heap an engine told to expect n memberships holds up front (its
 * member table) beyond one told nothing: memory of the memberships. */
static size_t member_table_bytes(size_t n) {
  size_t h0 = heap_used();
  presence_t *a = new_engine(1, 1, 0);
  size_t h1 = heap_used();
  presence_t *b = new_engine(1, 1, n);
  size_t h2 = heap_used();
  presence_free(b);
  presence_free(a);
  return (h2 - h1) - (h1 - h0);
}

static chan_result_t channel_run(int measure_memory) {
  chan_result_t r = {0};
  size_t reserved = measure_memory ? member_table_bytes(n_sessions) : 0;
  presence_t *p = new_engine(n_sessions, n_users, n_sessions);
  for (size_t i = 0; i < n_sessions; i++)
    check(presence_session_open(p, sid(i), uid(i), NULL, &handles[i], NULL,
                                NULL),
          "connect");
  size_t heap0 = heap_used();
  event_count = 0;
  double c0 = cpu_s(), t0 = now_s();
  for (size_t i = 0; i < n_sessions; i++)
    check(presence_handle_join(p, handles[i], chan_of(i), NULL, NULL, NULL),
          "join");
  double t1 = now_s(), c1 = cpu_s();
  if (measure_memory)
    r.bytes_per_membership =
        (double)(heap_used() - heap0 + reserved) / (double)n_sessions;
  double c1b = cpu_s(), t1b = now_s();
  for (size_t i = 0; i < n_sessions; i++)
    check(presence_handle_leave(p, handles[i], chan_of(i), NULL, NULL),
          "leave");
  double t2 = now_s(), c2 = cpu_s();
  /* Then N memberships again (not timed) for the steady state. */
  for (size_t i = 0; i < n_sessions; i++)
    check(presence_handle_join(p, handles[i], chan_of(i), NULL, NULL, NULL),
          "join");
  /* Steady state at N memberships: sessions in a shuffled order each leave,
   * and rejoin CHURN_LAG leaves later, so the channel holds N - CHURN_LAG
   * to N members throughout and a join reuses memory a leave freed a while
   * ago (not the chunk freed just before). */
  double c1a = cpu_s();
  for (size_t k = 0; k < n_sessions + CHURN_LAG; k++) {
    if (k < n_sessions)
      check(presence_handle_leave(p, handles[churn_order[k]],
                                  chan_of(churn_order[k]), NULL, NULL),
            "churn leave");
    if (k >= CHURN_LAG) {
      size_t i = churn_order[k - CHURN_LAG];
      check(presence_handle_join(p, handles[i], chan_of(i), NULL, NULL, NULL),
            "churn join");
    }
  }
  double c1c = cpu_s();
  if (event_count != 5ull * n_sessions) {
    fprintf(stderr, "bench_engine: %llu channel events, expected %zu\n",
            (unsigned long long)event_count, 5 * n_sessions);
    exit(1);
  }
  r.churn_c = c1c - c1a;
  r.join_s = t1 - t0;
  r.leave_s = t2 - t1b;
  r.join_c = c1 - c0;
  r.leave_c = c2 - c1b;
  presence_free(p);
  return r;
}

/* Status that people set: one session per user (connected, not timed),
 * then every user cycles its availability dnd -> away -> invisible -> auto
 * (4 changes, an event each), then sets a status message with an expiry an
 * hour ahead and clears it (2 changes, an event each). */
typedef struct setting_result {
  double avail_s, message_s;
  double avail_c, message_c; /* CPU seconds of this process */
} setting_result_t;

static setting_result_t setting_run(void) {
  setting_result_t r = {0};
  presence_t *p = new_engine(n_users, n_users, 0);
  for (size_t i = 0; i < n_users; i++)
    check(presence_session_connect(p, sid(i), uid(i), NULL, NULL, NULL),
          "connect");
  static const presence_availability_t cycle[4] = {
      PRESENCE_AVAIL_DND, PRESENCE_AVAIL_AWAY, PRESENCE_AVAIL_INVISIBLE,
      PRESENCE_AVAIL_AUTO};
  event_count = 0;
  double c0 = cpu_s(), t0 = now_s();
  for (int k = 0; k < 4; k++)
    for (size_t i = 0; i < n_users; i++)
      check(presence_user_set_availability(p, uid(i), cycle[k], NULL, NULL),
            "set_availability");
  double t1 = now_s(), c1 = cpu_s();
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t expires = (int64_t)ts.tv_sec * 1000 + 3600 * 1000;
  for (size_t i = 0; i < n_users; i++)
    check(presence_user_set_message(p, uid(i), "In a meeting", "\xf0\x9f\x93\x85",
                                    expires, NULL, NULL),
          "set_message");
  for (size_t i = 0; i < n_users; i++)
    check(presence_user_clear_message(p, uid(i), NULL, NULL), "clear_message");
  double t2 = now_s(), c2 = cpu_s();
  if (event_count != 6ull * n_users) {
    fprintf(stderr, "bench_engine: %llu setting events, expected %zu\n",
            (unsigned long long)event_count, 6 * n_users);
    exit(1);
  }
  r.avail_s = t1 - t0;
  r.message_s = t2 - t1;
  r.avail_c = c1 - c0;
  r.message_c = c2 - c1;
  presence_free(p);
  return r;
}

/* The baseline: the same keys through the bare table. */
typedef struct bare {
  presence__hkey_t key;
  char id[40];
} bare_t;

static run_result_t table_run(void) {
  run_result_t r = {0};
  presence__table_t t;
  presence__table_init(&t, presence__default_allocator(), offsetof(bare_t, id));
  bare_t *recs = malloc(sizeof(bare_t) * n_sessions);
  double t0 = now_s();
  for (size_t i = 0; i < n_sessions; i++) {
    const char *s = sid(i);
    uint32_t h = presence__hash(s, 36);
    if (!presence__table_find(&t, s, 36, h)) {
      recs[i].key.hash = h;
      recs[i].key.len = 36;
      memcpy(recs[i].id, s, 37);
      presence__table_insert(&t, &recs[i]);
    }
  }
  double t1 = now_s();
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < n_sessions; i++) {
      const char *s = sid(i);
      bare_t *b = presence__table_find(&t, s, 36, presence__hash(s, 36));
      if (b) b->key.spare[0] ^= 1;
    }
  double t2 = now_s();
  for (size_t i = 0; i < n_sessions; i++) {
    const char *s = sid(i);
    bare_t *b = presence__table_find(&t, s, 36, presence__hash(s, 36));
    if (b) presence__table_remove(&t, b);
  }
  double t3 = now_s();
  r.connect_s = t1 - t0;
  r.status_s = t2 - t1;
  r.disconnect_s = t3 - t2;
  presence__table_free(&t);
  free(recs);
  return r;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Operations per second from R timings of `ops` operations: median, min and
 * max (the slowest run gives the min rate). */
typedef struct rate {
  double med, min, max;
} rate_t;

static rate_t rate_of(double *secs, int n, double ops) {
  qsort(secs, (size_t)n, sizeof(double), cmp_double);
  double med = n % 2 ? secs[n / 2] : (secs[n / 2 - 1] + secs[n / 2]) / 2;
  rate_t r = {ops / med, ops / secs[n - 1], ops / secs[0]};
  return r;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: bench_engine [--sessions N] [--users U | "
          "--sessions-per-user K]\n"
          "                    [--runs R] [--channels C] [--only channels]\n"
          "                    [--json PATH] [--help]\n"
          "  --sessions N           live sessions (default 1000000)\n"
          "  --users U              users they belong to (default N / K)\n"
          "  --sessions-per-user K  (default 4; 1 is the common case)\n"
          "  --runs R               timed runs, medians reported (default 5)\n"
          "  --channels C           channels the sessions join (default 1000)\n"
          "  --only channels        the channel runs alone (no JSON)\n"
          "  --json PATH            also write the figures as JSON to PATH\n");
}

static void print_rate(FILE *f, const char *name, rate_t r, int last) {
  fprintf(f, "\"%s\":{\"median\":%.0f,\"min\":%.0f,\"max\":%.0f}%s", name,
          r.med, r.min, r.max, last ? "" : ",");
}

int main(int argc, char **argv) {
  const char *json_path = NULL;
  int chan_only = 0;
  size_t per_user = 4;
  long users_opt = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      usage(stderr);
      return 2;
    }
    const char *v = argv[++i];
    char *end;
    long n = strtol(v, &end, 10);
    int numeric = *v && !*end && n > 0;
    if (!strcmp(a, "--json")) {
      json_path = v;
    } else if (!strcmp(a, "--only")) {
      if (strcmp(v, "channels")) {
        fprintf(stderr, "bench_engine: --only takes 'channels'\n");
        return 2;
      }
      chan_only = 1;
    } else if (!numeric) {
      fprintf(stderr, "bench_engine: %s wants a positive number, got '%s'\n",
              a, v);
      return 2;
    } else if (!strcmp(a, "--sessions")) {
      n_sessions = (size_t)n;
    } else if (!strcmp(a, "--users")) {
      users_opt = n;
    } else if (!strcmp(a, "--sessions-per-user")) {
      per_user = (size_t)n;
    } else if (!strcmp(a, "--runs")) {
      n_runs = (int)n;
    } else if (!strcmp(a, "--channels")) {
      n_channels = (size_t)n;
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (n_sessions > MAX_SESSIONS || n_runs > MAX_RUNS ||
      n_channels > MAX_SESSIONS) {
    fprintf(stderr, "bench_engine: at most %d sessions and %d runs\n",
            MAX_SESSIONS, MAX_RUNS);
    return 2;
  }
  n_users = users_opt > 0 ? (size_t)users_opt : n_sessions / per_user;
  if (n_users == 0) n_users = 1;
  if (n_users > n_sessions) n_users = n_sessions;
  /* Keep freed memory in the process between runs: otherwise every run
   * starts by page-faulting the tables back in, and the figure measures the
   * kernel (a server at steady state reuses its memory the same way). */
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_MMAP_THRESHOLD, 32 << 20); /* glibc's maximum: 1 << 30 was
                                          refused, so the big tables were
                                          mmapped and faulted in each run */
  make_ids();
  handles = malloc(sizeof(*handles) * n_sessions);
  channel_names = malloc(n_channels * sizeof *channel_names);
  if (!handles || !channel_names) {
    fprintf(stderr, "bench_engine: out of memory\n");
    return 1;
  }
  churn_order = malloc(n_sessions * sizeof *churn_order);
  if (!churn_order) {
    fprintf(stderr, "bench_engine: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < n_sessions; i++) churn_order[i] = i;
  for (size_t i = n_sessions - 1; i > 0; i--) {
    size_t j = (size_t)(rnd() % (i + 1)), t = churn_order[i];
    churn_order[i] = churn_order[j];
    churn_order[j] = t;
  }
  for (size_t c = 0; c < n_channels; c++)
    snprintf(channel_names[c], sizeof channel_names[c], "room-%04u",
             (unsigned)(c % 10000000));
  double chan_s[MAX_RUNS], avail_s[MAX_RUNS], msg_s[MAX_RUNS];
  double avail_c[MAX_RUNS], msg_c[MAX_RUNS];
  double chan_c[MAX_RUNS], join_c[MAX_RUNS], leave_c[MAX_RUNS];
  double churn_c[MAX_RUNS];
  double conn_c[MAX_RUNS], stat_c[MAX_RUNS], disc_c[MAX_RUNS];
  double blend_c[MAX_RUNS];
  double conn_s[MAX_RUNS], stat_h[MAX_RUNS], disc_h[MAX_RUNS];
  double stat_i[MAX_RUNS], disc_i[MAX_RUNS], conn_i[MAX_RUNS];
  double t_ins[MAX_RUNS], t_find[MAX_RUNS], t_rem[MAX_RUNS];
  double blend_h[MAX_RUNS], blend_t[MAX_RUNS];
  run_result_t mem = {0};
  if (!chan_only) mem = engine_run(1, 1); /* warm-up, the memory figure */
  chan_result_t chan_mem = channel_run(1);
  uint64_t events = mem.events;
  /* Interleaved, so a noisy neighbour hurts all three alike. */
  for (int i = 0; i < n_runs; i++) {
    chan_result_t ch = channel_run(0);
    chan_s[i] = ch.join_s + ch.leave_s;
    chan_c[i] = ch.join_c + ch.leave_c;
    join_c[i] = ch.join_c;
    leave_c[i] = ch.leave_c;
    churn_c[i] = ch.churn_c;
    if (chan_only) continue;
    run_result_t t = table_run();
    t_ins[i] = t.connect_s;
    t_find[i] = t.status_s;
    t_rem[i] = t.disconnect_s;
    blend_t[i] = t.connect_s + t.status_s + t.disconnect_s;
    run_result_t h = engine_run(0, 1);
    conn_s[i] = h.connect_s;
    stat_h[i] = h.status_s;
    disc_h[i] = h.disconnect_s;
    blend_h[i] = h.connect_s + h.status_s + h.disconnect_s;
    conn_c[i] = h.connect_c;
    stat_c[i] = h.status_c;
    disc_c[i] = h.disconnect_c;
    blend_c[i] = h.connect_c + h.status_c + h.disconnect_c;
    run_result_t d = engine_run(0, 0);
    conn_i[i] = d.connect_s;
    stat_i[i] = d.status_s;
    disc_i[i] = d.disconnect_s;
    setting_result_t st = setting_run();
    avail_s[i] = st.avail_s;
    msg_s[i] = st.message_s;
    avail_c[i] = st.avail_c;
    msg_c[i] = st.message_c;
  }
  double n = (double)n_sessions;
  rate_t chan = rate_of(chan_s, n_runs, 2 * n);
  rate_t chan_cpu = rate_of(chan_c, n_runs, 2 * n);
  rate_t join_cpu = rate_of(join_c, n_runs, n);
  rate_t leave_cpu = rate_of(leave_c, n_runs, n);
  rate_t churn_cpu = rate_of(churn_c, n_runs, 2 * n);
  if (chan_only) {
    printf("bench/engine --only channels: %zu memberships of %zu sessions "
           "over %zu users in %zu channels, %d runs (median [min..max])\n",
           n_sessions, n_sessions, n_users, n_channels, n_runs);
    printf("  joins+leaves per second     %11.0f [%.0f..%.0f]\n", chan.med,
           chan.min, chan.max);
    printf("  joins+leaves per CPU-second %11.0f [%.0f..%.0f]\n",
           chan_cpu.med, chan_cpu.min, chan_cpu.max);
    printf("  joins per CPU-second        %11.0f [%.0f..%.0f]\n",
           join_cpu.med, join_cpu.min, join_cpu.max);
    printf("  leaves per CPU-second       %11.0f [%.0f..%.0f]\n",
           leave_cpu.med, leave_cpu.min, leave_cpu.max);
    printf("  at N memberships, leave+rejoin per CPU-second %.0f [%.0f..%.0f]\n",
           churn_cpu.med, churn_cpu.min, churn_cpu.max);
    printf("  heap per membership         %11.1f bytes beyond the session (no "
           "data)\n",
           chan_mem.bytes_per_membership);
    goto out;
  }
  /* Connects are the same code in both variants: one figure from both. */
  double conn_all[2 * MAX_RUNS];
  for (int i = 0; i < n_runs; i++) {
    conn_all[i] = conn_s[i];
    conn_all[n_runs + i] = conn_i[i];
  }
  rate_t connect = rate_of(conn_all, 2 * n_runs, n);
  rate_t status_h = rate_of(stat_h, n_runs, 2 * n);
  rate_t status_i = rate_of(stat_i, n_runs, 2 * n);
  rate_t disconnect_h = rate_of(disc_h, n_runs, n);
  rate_t disconnect_i = rate_of(disc_i, n_runs, n);
  rate_t ins = rate_of(t_ins, n_runs, n);
  rate_t find = rate_of(t_find, n_runs, 2 * n);
  rate_t rem = rate_of(t_rem, n_runs, n);
  rate_t blend = rate_of(blend_h, n_runs, 4 * n);
  rate_t blend_table = rate_of(blend_t, n_runs, 4 * n);
  rate_t conn_cpu = rate_of(conn_c, n_runs, n);
  rate_t status_cpu = rate_of(stat_c, n_runs, 2 * n);
  rate_t disc_cpu = rate_of(disc_c, n_runs, n);
  rate_t blend_cpu = rate_of(blend_c, n_runs, 4 * n);
  rate_t avail = rate_of(avail_s, n_runs, 4 * (double)n_users);
  rate_t msgs = rate_of(msg_s, n_runs, 2 * (double)n_users);
  /* Issue 14's "on one core": per CPU-second of this process. */
  rate_t avail_cpu = rate_of(avail_c, n_runs, 4 * (double)n_users);
  rate_t msgs_cpu = rate_of(msg_c, n_runs, 2 * (double)n_users);

  printf("bench/engine: %zu sessions over %zu users (%.2f per user), %d runs "
         "(median [min..max] ops/s)\n",
         n_sessions, n_users, n / (double)n_users, n_runs);
  printf("  connect (creates its user)  %11.0f [%.0f..%.0f]   table insert "
         "%.0f  ratio %.2f\n",
         connect.med, connect.min, connect.max, ins.med, connect.med / ins.med);
  printf("  status change, by handle    %11.0f [%.0f..%.0f]   table lookup "
         "%.0f  ratio %.2f\n",
         status_h.med, status_h.min, status_h.max, find.med,
         status_h.med / find.med);
  printf("  status change, by id        %11.0f [%.0f..%.0f]\n", status_i.med,
         status_i.min, status_i.max);
  printf("  disconnect, by handle       %11.0f [%.0f..%.0f]   table remove "
         "%.0f  ratio %.2f\n",
         disconnect_h.med, disconnect_h.min, disconnect_h.max, rem.med,
         disconnect_h.med / rem.med);
  printf("  disconnect, by id           %11.0f [%.0f..%.0f]\n", disconnect_i.med,
         disconnect_i.min, disconnect_i.max);
  printf("  all four kinds, by handle   %11.0f   (table %.0f, ratio %.2f)\n",
         blend.med, blend_table.med, blend.med / blend_table.med);
  printf("  heap per session            %11.1f bytes at %zu live sessions, "
         "%zu users\n",
         mem.bytes_per_session, n_sessions, n_users);
  printf("  fixed heap                  %11zu bytes (transition log, queues)\n",
         mem.fixed_bytes);
  printf("  events a run                %11llu\n", (unsigned long long)events);
  printf("  channel joins+leaves        %11.0f [%.0f..%.0f]   (%zu memberships "
         "in %zu channels, by handle, an event each)\n",
         chan.med, chan.min, chan.max, n_sessions, n_channels);
  printf("  heap per membership         %11.1f bytes beyond the session (no "
         "data)\n",
         chan_mem.bytes_per_membership);
  printf("  per CPU-second of this process (the wall clock above counts the "
         "neighbours):\n");
  printf("  channel joins+leaves        %11.0f [%.0f..%.0f]   (joins %.0f, "
         "leaves %.0f)\n",
         chan_cpu.med, chan_cpu.min, chan_cpu.max, join_cpu.med,
         leave_cpu.med);
  printf("  channel churn at N members  %11.0f [%.0f..%.0f]   (leaves and "
         "rejoins, N - %d to N memberships)\n",
         churn_cpu.med, churn_cpu.min, churn_cpu.max, CHURN_LAG);
  printf("  session ops, by handle      %11.0f [%.0f..%.0f]   (connect %.0f, "
         "status %.0f, disconnect %.0f)\n",
         blend_cpu.med, blend_cpu.min, blend_cpu.max, conn_cpu.med,
         status_cpu.med, disc_cpu.med);
  printf("  availability changes        %11.0f [%.0f..%.0f]   (%zu users, an "
         "event each; wall clock %.0f)\n",
         avail_cpu.med, avail_cpu.min, avail_cpu.max, n_users, avail.med);
  printf("  message sets+clears         %11.0f [%.0f..%.0f]   (with an expiry, "
         "an event each; wall clock %.0f)\n",
         msgs_cpu.med, msgs_cpu.min, msgs_cpu.max, msgs.med);
  if (json_path) {
    FILE *f = fopen(json_path, "w");
    if (!f) {
      perror(json_path);
      return 1;
    }
    fprintf(f,
            "{\"bench\":\"engine\",\"sessions\":%zu,\"users\":%zu,"
            "\"sessions_per_user\":%.3f,\"runs\":%d,\"ops_per_s\":{",
            n_sessions, n_users, n / (double)n_users, n_runs);
    print_rate(f, "connect", connect, 0);
    print_rate(f, "status_by_handle", status_h, 0);
    print_rate(f, "status_by_id", status_i, 0);
    print_rate(f, "disconnect_by_handle", disconnect_h, 0);
    print_rate(f, "disconnect_by_id", disconnect_i, 0);
    print_rate(f, "all_by_handle", blend, 0);
    print_rate(f, "channel_join_leave", chan, 0);
    print_rate(f, "availability_change", avail, 0);
    print_rate(f, "message_set_clear", msgs, 1);
    fprintf(f, "},\"ops_per_cpu_s\":{");
    print_rate(f, "channel_join_leave", chan_cpu, 0);
    print_rate(f, "channel_join", join_cpu, 0);
    print_rate(f, "channel_leave", leave_cpu, 0);
    print_rate(f, "channel_churn_at_n", churn_cpu, 0);
    print_rate(f, "connect", conn_cpu, 0);
    print_rate(f, "status_by_handle", status_cpu, 0);
    print_rate(f, "disconnect_by_handle", disc_cpu, 0);
    print_rate(f, "all_by_handle", blend_cpu, 0);
    print_rate(f, "availability_change", avail_cpu, 0);
    print_rate(f, "message_set_clear", msgs_cpu, 1);
    fprintf(f, "},\"table_ops_per_s\":{");
    print_rate(f, "insert", ins, 0);
    print_rate(f, "lookup", find, 0);
    print_rate(f, "remove", rem, 0);
    print_rate(f, "all", blend_table, 1);
    fprintf(f,
            "},\"heap_bytes_per_session\":%.1f,\"fixed_heap_bytes\":%zu,"
            "\"events_per_run\":%llu,\"channels\":%zu,"
            "\"channel_ops_per_s\":%.0f,\"heap_bytes_per_membership\":%.1f}"
            "\n",
            mem.bytes_per_session, mem.fixed_bytes,
            (unsigned long long)events, n_channels, chan.med,
            chan_mem.bytes_per_membership);
    fclose(f);
  }
out:
  free(handles);
  free(channel_names);
  free(churn_order);
  free(session_ids);
  free(user_ids);
  return 0;
}
