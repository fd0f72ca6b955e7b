/* SPDX-License-Identifier: MIT */
/*
 * The library's session operations per CPU-second, through the API every
 * build since handles has (presence_session_open, presence_handle_set_status,
 * presence_handle_end): compiled against two builds' libpresence.a by
 * bench/status_ab.py, so a build from before a change and one after it are
 * measured by the same code and the same clock (CPU time of this process:
 * on a shared, loaded host the wall clock measures the neighbours).
 *
 *   session_ab [--sessions N] [--sessions-per-user K] [--runs R]
 *
 * Prints one line: connect, status (idle then online), disconnect and all
 * of them per CPU-second, medians of R runs.
 */
#define _POSIX_C_SOURCE 200809L
#include <presence.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "session_ab: %s: %s\n", what, presence_strerror(rc));
    exit(1);
  }
}

static unsigned long long events;
static void count_event(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  (void)ev;
  (void)ud;
  events++;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
  size_t n = 200000, per_user = 1;
  int runs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--sessions")) n = strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--sessions-per-user"))
      per_user = strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
  }
  if (!n || !per_user || runs < 1 || runs > 64) return 2;
#ifdef __GLIBC__
  /* Every run builds and frees a whole presence_t. glibc hands large
   * blocks out by mmap and gives freed memory back to the kernel, so how
   * much of a run's memory is faulted in afresh depends on how a build
   * sizes its allocations (the record pools' doubling chunks: about twice
   * the base's page faults, 11,400 against 5,000 a run at 200,000), and the
   * kernel's first-touch faults were counted as the connects' CPU. A
   * long-running host pays each page's fault once. Keeping freed memory in
   * the heap measures both builds warm after the first run (the median
   * drops it), with the same bench code for both. */
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
  size_t users = n / per_user;
  char *sids = malloc(n * 37), *uids = malloc(users * 17);
  presence_handle_t *h = malloc(n * sizeof(*h));
  if (!sids || !uids || !h) return 1;
  for (size_t i = 0; i < n; i++)
    snprintf(sids + i * 37, 37, "%08x-0000-4000-8000-%012llx",
             (unsigned)(i & 0xffffffffu),
             (unsigned long long)(i * 7919) & 0xffffffffffffull);
  for (size_t i = 0; i < users; i++)
    snprintf(uids + i * 17, 17, "user-%011llu",
             (unsigned long long)i % 100000000000ull);
  double c[64], s[64], d[64], all[64];
  for (int r = 0; r < runs; r++) {
    presence_options_t o;
    presence_options_init(&o);
    o.expected_sessions = (uint32_t)n;
    o.expected_users = (uint32_t)users;
    presence_t *p;
    check(presence_new(&o, &p), "presence_new");
    check(presence_on_event(p, count_event, NULL), "on_event");
    double t0 = cpu_s();
    for (size_t i = 0; i < n; i++)
      check(presence_session_open(p, sids + i * 37, uids + (i % users) * 17,
                                  NULL, &h[i], NULL, NULL),
            "open");
    double t1 = cpu_s();
    for (size_t i = 0; i < n; i++)
      check(presence_handle_set_status(p, h[i], PRESENCE_IDLE, NULL, NULL),
            "idle");
    for (size_t i = 0; i < n; i++)
      check(presence_handle_set_status(p, h[i], PRESENCE_ONLINE, NULL, NULL),
            "online");
    double t2 = cpu_s();
    for (size_t i = 0; i < n; i++)
      check(presence_handle_end(p, h[i], PRESENCE_REASON_DISCONNECT, NULL,
                                NULL),
            "end");
    double t3 = cpu_s();
    presence_free(p);
    c[r] = (double)n / (t1 - t0);
    s[r] = 2.0 * (double)n / (t2 - t1);
    d[r] = (double)n / (t3 - t2);
    all[r] = 4.0 * (double)n / (t3 - t0);
  }
  printf("connect %.0f status %.0f disconnect %.0f all %.0f events %llu\n",
         median(c, runs), median(s, runs), median(d, runs),
         median(all, runs), events);
  free(sids);
  free(uids);
  free(h);
  return 0;
}
