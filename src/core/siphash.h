/* SPDX-License-Identifier: MIT */
/*
 * SipHash-1-3 (Aumasson and Bernstein; the variant Python and Rust use for
 * their tables): a keyed hash whose collisions cannot be predicted without
 * the key. Tables keyed by strings a client chooses (user ids, channel
 * names, subscribed ids) hash with a random key per process, so nobody can
 * send a set of keys that all land in one bucket (hash flooding).
 * Header-only: the core's record table and the daemon's map share it.
 */
#ifndef PRESENCE_SIPHASH_H
#define PRESENCE_SIPHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PRESENCE_SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define PRESENCE_SIP_ROUND(v0, v1, v2, v3)                                     \
  do {                                                                         \
    v0 += v1;                                                                  \
    v1 = PRESENCE_SIP_ROTL(v1, 13);                                            \
    v1 ^= v0;                                                                  \
    v0 = PRESENCE_SIP_ROTL(v0, 32);                                            \
    v2 += v3;                                                                  \
    v3 = PRESENCE_SIP_ROTL(v3, 16);                                            \
    v3 ^= v2;                                                                  \
    v0 += v3;                                                                  \
    v3 = PRESENCE_SIP_ROTL(v3, 21);                                            \
    v3 ^= v0;                                                                  \
    v2 += v1;                                                                  \
    v1 = PRESENCE_SIP_ROTL(v1, 17);                                            \
    v1 ^= v2;                                                                  \
    v2 = PRESENCE_SIP_ROTL(v2, 32);                                            \
  } while (0)

/* SipHash-1-3 of s[0..n) under the key (k0, k1). Little-endian reads, as
 * the reference; this code runs on little-endian hosts only. */
static inline uint64_t presence_siphash13(uint64_t k0, uint64_t k1,
                                          const void *s, size_t n) {
  const unsigned char *p = s;
  uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
  uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
  uint64_t b = (uint64_t)n << 56;
  size_t left = n;
  while (left >= 8) {
    uint64_t m;
    memcpy(&m, p, 8);
    v3 ^= m;
    PRESENCE_SIP_ROUND(v0, v1, v2, v3);
    v0 ^= m;
    p += 8;
    left -= 8;
  }
  uint64_t t = 0;
  memcpy(&t, p, left);
  b |= t;
  v3 ^= b;
  PRESENCE_SIP_ROUND(v0, v1, v2, v3);
  v0 ^= b;
  v2 ^= 0xff;
  PRESENCE_SIP_ROUND(v0, v1, v2, v3);
  PRESENCE_SIP_ROUND(v0, v1, v2, v3);
  PRESENCE_SIP_ROUND(v0, v1, v2, v3);
  return v0 ^ v1 ^ v2 ^ v3;
}

#endif
