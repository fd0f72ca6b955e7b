/* SPDX-License-Identifier: MIT */
/*
 * Default clocks and randomness for presenced (see sys.h).
 */
#include "server/sys.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

static int64_t clock_ms(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t sys_wall_ms(void *ud) {
  (void)ud;
  return clock_ms(CLOCK_REALTIME);
}

static int64_t sys_mono_ms(void *ud) {
  (void)ud;
  return clock_ms(CLOCK_MONOTONIC);
}

/* Random bytes drawn 4 KB at a time. Every RAND_bytes call costs a getpid()
 * system call (OpenSSL's check for a fork), and every connection asks for a
 * session id: that was one system call in ten of a connect. Bytes handed
 * out are wiped from the pool; a forked child starts with an empty one, so
 * parent and child never hand out the same bytes. Per thread: no lock. */
#define RANDOM_POOL 4096
static _Thread_local unsigned char pool[RANDOM_POOL];
static _Thread_local size_t pool_left; /* unused bytes at the pool's end */
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_forget(void) {
  OPENSSL_cleanse(pool, sizeof pool);
  pool_left = 0;
}

static void pool_init(void) {
  pthread_atfork(NULL, NULL, pool_forget);
}

static int sys_random(void *ud, void *buf, size_t len) {
  (void)ud;
  if (len > (size_t)INT32_MAX) return -1;
  if (len > RANDOM_POOL / 4) return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
  pthread_once(&pool_once, pool_init);
  if (pool_left < len) {
    if (RAND_bytes(pool, RANDOM_POOL) != 1) return -1;
    pool_left = RANDOM_POOL;
  }
  unsigned char *from = pool + RANDOM_POOL - pool_left;
  memcpy(buf, from, len);
  OPENSSL_cleanse(from, len);
  pool_left -= len;
  return 0;
}

#ifdef CLOCK_REALTIME_COARSE
static int64_t sys_wall_ms_coarse(void *ud) {
  (void)ud;
  return clock_ms(CLOCK_REALTIME_COARSE);
}

static int64_t sys_mono_ms_coarse(void *ud) {
  (void)ud;
  return clock_ms(CLOCK_MONOTONIC_COARSE);
}
#define WALL_COARSE sys_wall_ms_coarse
#define MONO_COARSE sys_mono_ms_coarse
#else
#define WALL_COARSE NULL
#define MONO_COARSE NULL
#endif

static const srv_sys_t default_sys = {sys_wall_ms, sys_mono_ms, sys_random,
                                      NULL,        WALL_COARSE, MONO_COARSE};

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
