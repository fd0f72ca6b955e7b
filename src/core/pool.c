/* SPDX-License-Identifier: MIT */
/*
 * Record pools: small records of many sizes (sessions, users) carved out of
 * chunks taken from the injected allocator, with a free list per size class.
 *
 * Why not the allocator per record: a general-purpose malloc spends a header
 * and rounds up to 16 bytes on every block (about 16 bytes a record, two
 * records a session when each user has one session), takes a lock-free but
 * branchy path per call, and scatters the records of a burst of connects over
 * whatever its free lists hold. A pool keeps 8-byte size classes, no header,
 * and hands a burst out of one chunk in address order.
 *
 * What it costs: a chunk goes back to the allocator only when the pool is
 * destroyed (freed records are reused by later ones of the same class), as
 * the handle slab and most malloc arenas already behaved after a peak.
 * Under AddressSanitizer a free block is poisoned, so a use after free of a
 * pooled record is still reported.
 */
#include "core/internal.h"

#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_ASAN 1
#endif
#endif
#ifdef POOL_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* A chunk: this header, then blocks of one class. The first chunk of a
 * class is small (an engine with a handful of sessions stays small), each
 * next one twice the last, up to POOL_CHUNK_MAX bytes. */
typedef struct chunk {
  struct chunk *next;
  size_t unused; /* keeps the blocks 16-byte aligned, as malloc's are */
} chunk_t;

#define POOL_CHUNK_MAX (64 * 1024)
#define POOL_FIRST_BLOCKS 8

static inline size_t class_of(size_t n) { return (n + 7) / 8 - 1; }
static inline size_t class_size(size_t c) { return (c + 1) * 8; }

void presence__pool_init(presence__pool_t *p, const presence_allocator_t *a) {
  memset(p, 0, sizeof(*p));
  p->alloc = a;
}

/* A new chunk for class c: its blocks become the class's bump region. */
static int grow(presence__pool_t *p, size_t c) {
  size_t size = class_size(c);
  size_t blocks = p->next_blocks[c] ? p->next_blocks[c] : POOL_FIRST_BLOCKS;
  if (blocks * size > POOL_CHUNK_MAX)
    blocks = POOL_CHUNK_MAX / size ? POOL_CHUNK_MAX / size : 1;
  chunk_t *ch = presence__malloc(p->alloc, sizeof(chunk_t) + blocks * size);
  if (!ch) return PRESENCE_ENOMEM;
  ch->next = p->chunks;
  p->chunks = ch;
  p->bump[c] = (unsigned char *)(ch + 1);
  p->left[c] = (uint32_t)blocks;
  p->next_blocks[c] = (uint32_t)(blocks * 2);
  POISON(p->bump[c], blocks * size);
  return 0;
}

void *presence__pool_alloc(presence__pool_t *p, size_t n) {
  if (n == 0 || n > PRESENCE__POOL_MAX) return presence__malloc(p->alloc, n);
  size_t c = class_of(n);
  void *b = p->free[c];
  if (b) {
    UNPOISON(b, class_size(c));
    memcpy(&p->free[c], b, sizeof(void *));
    return b;
  }
  if (!p->left[c] && grow(p, c)) return NULL;
  b = p->bump[c];
  p->bump[c] += class_size(c);
  p->left[c]--;
  UNPOISON(b, class_size(c));
  return b;
}

void presence__pool_free(presence__pool_t *p, void *rec, size_t n) {
  if (!rec) return;
  if (n == 0 || n > PRESENCE__POOL_MAX) {
    presence__free(p->alloc, rec);
    return;
  }
  size_t c = class_of(n);
  memcpy(rec, &p->free[c], sizeof(void *));
  p->free[c] = rec;
  POISON(rec, class_size(c));
}

void presence__pool_destroy(presence__pool_t *p) {
  chunk_t *ch = p->chunks;
  while (ch) {
    chunk_t *next = ch->next;
    presence__free(p->alloc, ch);
    ch = next;
  }
  memset(p->free, 0, sizeof(p->free));
  memset(p->bump, 0, sizeof(p->bump));
  memset(p->left, 0, sizeof(p->left));
  p->chunks = NULL;
}
