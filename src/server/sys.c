/* SPDX-License-Identifier: MIT */
/*
 * Default clocks and randomness for presenced (see sys.h).
 */
#include "server/sys.h"

#include <openssl/rand.h>
#include <time.h>

static int64_t sys_wall_ms(void *ud) {
  (void)ud;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t sys_mono_ms(void *ud) {
  (void)ud;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int sys_random(void *ud, void *buf, size_t len) {
  (void)ud;
  if (len > (size_t)INT32_MAX) return -1;
  return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static const srv_sys_t default_sys = {sys_wall_ms, sys_mono_ms, sys_random,
                                      NULL};

const srv_sys_t *srv_sys_default(void) {
  return &default_sys;
}

int srv_uuid4(const srv_sys_t *sys, char out[37]) {
  static const char hex[] = "0123456789abcdef";
  uint8_t b[16];
  if (sys->random(sys->ud, b, sizeof b) != 0) return -1;
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  size_t o = 0;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
    out[o++] = hex[b[i] >> 4];
    out[o++] = hex[b[i] & 15];
  }
  out[o] = '\0';
  return 0;
}
