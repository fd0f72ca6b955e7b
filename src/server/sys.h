/* SPDX-License-Identifier: MIT */
/*
 * The daemon's view of the outside world that tests want to replace: wall and
 * monotonic clocks and a random source. Everything in src/server that reads a
 * clock or needs randomness goes through one of these tables.
 */
#ifndef PRESENCED_SYS_H
#define PRESENCED_SYS_H

#include <stddef.h>
#include <stdint.h>

typedef struct srv_sys {
  int64_t (*wall_ms)(void *ud); /* ms since the Unix epoch */
  int64_t (*mono_ms)(void *ud); /* monotonic ms, arbitrary origin */
  /* Fill buf with len unpredictable bytes; 0 or -1. */
  int (*random)(void *ud, void *buf, size_t len);
  void *ud;
  /* The same two clocks read coarsely (CLOCK_*_COARSE: a load from the
   * vDSO's page, up to a kernel tick behind, 4 ms here) for the reads made
   * on every message and every event (a read's time, the rate window, the
   * library's clock): timer reads were ~4 % of presenced's CPU per status
   * change (perf, docs/benchmarks.md). NULL: wall_ms and mono_ms (a
   * test's clocks). */
  int64_t (*wall_ms_coarse)(void *ud);
  int64_t (*mono_ms_coarse)(void *ud);
} srv_sys_t;

/* The real clocks (clock_gettime) and OpenSSL's RAND_bytes. */
const srv_sys_t *srv_sys_default(void);

/* A random UUIDv4 in its 36-character text form (plus NUL). 0 or -1. */
int srv_uuid4(const srv_sys_t *sys, char out[37]);

#endif
