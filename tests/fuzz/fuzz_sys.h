/* SPDX-License-Identifier: MIT */
/*
 * The daemon's clocks and random source for the harnesses that run a whole
 * srv_t (fuzz_http, fuzz_session): the wall clock fixed at 1700000000 s plus
 * the harness's own monotonic time (so the seed tokens, signed for that
 * time, stay valid, and a harness moves time by adding to mono), and a
 * deterministic random source, so that a crash reproduces from its input
 * alone. Included by one file of each harness: the statics are its own.
 */
#ifndef PRESENCE_FUZZ_SYS_H
#define PRESENCE_FUZZ_SYS_H

#include "server/sys.h"

#include <stdint.h>

#define WALL_MS INT64_C(1700000000000)

static int64_t mono;
static uint64_t rnd = 0x9E3779B97F4A7C15u;

static int64_t fake_wall(void *ud) {
  (void)ud;
  return WALL_MS + mono;
}
static int64_t fake_mono(void *ud) {
  (void)ud;
  return mono;
}
static int fake_random(void *ud, void *buf, size_t len) {
  (void)ud;
  uint8_t *b = buf;
  for (size_t i = 0; i < len; i++) {
    rnd ^= rnd << 13;
    rnd ^= rnd >> 7;
    rnd ^= rnd << 17;
    b[i] = (uint8_t)rnd;
  }
  return 0;
}
static const srv_sys_t sys = {fake_wall, fake_mono, fake_random,
                              NULL,      NULL,      NULL};

#endif
