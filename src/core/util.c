/* SPDX-License-Identifier: MIT */
/*
 * Allocation through the injected allocator, id validation and hashing
 * (keyed: see presence__hash).
 */
#include "core/internal.h"
#include "core/siphash.h"

#include <stdatomic.h>
#include <sys/random.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

#include <stdlib.h>
#include <string.h>

static void *sys_malloc(void *ud, size_t n) {
  (void)ud;
  return malloc(n);
}
static void *sys_realloc(void *ud, void *p, size_t n) {
  (void)ud;
  return realloc(p, n);
}
static void sys_free(void *ud, void *p) {
  (void)ud;
  free(p);
}

static const presence_allocator_t sys_allocator = {sys_malloc, sys_realloc,
                                                   sys_free, NULL};

const presence_allocator_t *presence__default_allocator(void) {
  return &sys_allocator;
}

void *presence__malloc(const presence_allocator_t *a, size_t n) {
  return a->malloc(a->ud, n);
}
void *presence__realloc(const presence_allocator_t *a, void *p, size_t n) {
  return a->realloc(a->ud, p, n);
}
void presence__free(const presence_allocator_t *a, void *p) {
  if (p) a->free(a->ud, p);
}

/*
 * UTF-8 per RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF.
 * Control characters (C0, DEL and C1) are refused too: ids end up in logs,
 * HTTP paths and JSON, where they only cause trouble.
 */
/* Whether any of the 8 bytes is a control character or not ASCII. */
static inline bool word_needs_care(uint64_t w) {
  const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
  uint64_t below_space = (w - ones * 0x20) & ~w & high;
  uint64_t del = w ^ (ones * 0x7f);
  uint64_t is_del = (del - ones) & ~del & high;
  return ((w & high) | below_space | is_del) != 0;
}

bool presence__utf8_ok(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    /* Ids are nearly always ASCII: take them 8 bytes at a time. */
    if (n - i >= 8) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (!word_needs_care(w)) {
        i += 8;
        continue;
      }
    } else if (n >= 8) {
      /* The last few bytes: the id's last 8 bytes as one word (they overlap
       * bytes already checked, which is harmless), so a 36-byte id takes
       * five word checks and no byte loop. */
      uint64_t w;
      memcpy(&w, s + n - 8, 8);
      if (!word_needs_care(w)) return true;
    }
    unsigned c = s[i];
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return false;
      i++;
      continue;
    }
    size_t need;
    unsigned min;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) {
      need = 1, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      need = 2, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3, min = 0x10000, cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i - 1 < need) return false;
    for (size_t k = 1; k <= need; k++) {
      unsigned cc = s[i + k];
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    /* C1 controls (U+0080..U+009F, NEL among them) are control characters
     * as much as C0: a terminal or a log viewer may act on them. */
    if (cp >= 0x80 && cp <= 0x9f) return false;
    i += need + 1;
  }
  return true;
}

int presence__id_check_len(const char *id, size_t *len) {
  if (!id) return PRESENCE_EID;
  /* Bounded scan: an id longer than the limit is refused without reading
   * the rest of a possibly huge string. */
  size_t n = strnlen(id, PRESENCE_ID_MAX + 1);
  if (n == 0 || n > PRESENCE_ID_MAX) return PRESENCE_EID;
  if (!presence__utf8_ok((const unsigned char *)id, n)) return PRESENCE_EID;
  *len = n;
  return 0;
}

int presence_id_check(const char *id) {
  size_t n;
  return presence__id_check_len(id, &n);
}

/*
 * The hash of every record table: SipHash-1-3 under a random key drawn once
 * per process (the first time a table hashes). Ids are chosen by clients
 * (a user id is whatever name an application lets its users pick, a
 * channel is any name a token allows), so an unkeyed hash would let one
 * client craft thousands of ids that probe the same slots and make every
 * lookup a linear scan. The key must not change while any table exists,
 * hence once per process and never per presence_t.
 */
static uint64_t hash_k0, hash_k1;
static once_flag hash_once = ONCE_FLAG_INIT;
/* A key the host gave (presence_hash_key_set) before the first hash, and
 * whether the key has been fixed (drawn or taken); atomics because a host
 * may create presence_t's on several threads. */
static uint8_t hash_given[16];
static atomic_bool hash_was_given;
static atomic_bool hash_fixed;

static uint64_t key_half(const uint8_t *b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
  return v;
}

static void hash_key_init(void) {
  uint64_t k[2] = {0, 0};
  if (atomic_load(&hash_was_given)) {
    k[0] = key_half(hash_given);
    k[1] = key_half(hash_given + 8);
  } else if (getrandom(k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k) {
    /* No entropy yet (early boot): a weaker key still beats none. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    k[0] ^= (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    k[1] ^= (uint64_t)(uintptr_t)&ts ^ (uint64_t)ts.tv_sec;
  }
  hash_k0 = k[0];
  hash_k1 = k[1];
  atomic_store(&hash_fixed, true);
}

/* The host's random source reaches the key through here (the daemon draws it
 * with its injectable srv_sys.random; a test can fix it). Only before the
 * first table hashed: the key must not change under a live table. */
int presence_hash_key_set(const uint8_t key[16]) {
  if (!key) return PRESENCE_EINVAL;
  if (atomic_load(&hash_fixed)) return PRESENCE_EBUSY;
  memcpy(hash_given, key, sizeof hash_given);
  atomic_store(&hash_was_given, true);
  call_once(&hash_once, hash_key_init);
  return 0;
}

uint32_t presence__hash(const char *s, size_t n) {
  /* call_once is a library call on every hash; once the key is fixed (the
   * store that fixed it made the key visible before the flag) a load does. */
  if (!atomic_load_explicit(&hash_fixed, memory_order_acquire))
    call_once(&hash_once, hash_key_init);
  uint64_t h = presence_siphash13(hash_k0, hash_k1, s, n);
  return (uint32_t)(h ^ (h >> 32));
}
