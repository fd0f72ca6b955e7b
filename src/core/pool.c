/* SPDX-License-Identifier: MIT */
/*
 * Record pools: small records of many sizes (sessions, users) carved out of
 * chunks taken from the injected allocator, with a free list per size class.
 *
 * Why not the allocator per record: a general-purpose malloc spends a header
 * and rounds up to 16 bytes on every block (about 16 bytes a record, two
 * records a session when each user has one session), takes a branchy path
 * per call, and scatters the records of a burst of connects over whatever
 * its free lists hold. A pool keeps 8-byte size classes (256-byte ones above
 * 256 bytes), no header, and hands a burst out of one chunk in address order.
 *
 * An indexed pool also names every block by a 32-bit index (its chunk's
 * place in a directory, and its place in the chunk), which is what a handle
 * carries: a session needs no separate handle table. A block's bytes at
 * [keep_off, keep_off + 8) stay readable while it is free (the caller keeps
 * a generation there and zeroes it on free), so a stale handle is told
 * apart by reading the block it names.
 *
 * What it costs: a chunk goes back to the allocator only when the pool is
 * destroyed (freed records are reused by later ones of the same class), as
 * the handle slab and most malloc arenas already behaved after a peak.
 * Under AddressSanitizer a free block is poisoned (but for the kept bytes),
 * so a use after free of a pooled record is still reported.
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
 * next one twice the last, up to POOL_CHUNK_MAX bytes and
 * PRESENCE__POOL_CHUNK_BLOCKS blocks. */
typedef struct chunk {
  struct chunk *next;
  uint32_t size;   /* of its blocks */
  uint32_t blocks; /* how many */
} chunk_t;

#define POOL_CHUNK_MAX (64 * 1024)
#define POOL_FIRST_BLOCKS 8
#define SMALL_CLASSES (PRESENCE__POOL_SMALL / 8)

static inline size_t class_of(size_t n) {
  return n <= PRESENCE__POOL_SMALL
             ? (n + 7) / 8 - 1
             : SMALL_CLASSES + (n - PRESENCE__POOL_SMALL + 255) / 256 - 1;
}
static inline size_t class_size(size_t c) {
  return c < SMALL_CLASSES ? (c + 1) * 8
                           : PRESENCE__POOL_SMALL + (c - SMALL_CLASSES + 1) * 256;
}

void presence__pool_init(presence__pool_t *p, const presence_allocator_t *a) {
  memset(p, 0, sizeof(*p));
  p->alloc = a;
}

void presence__pool_init_indexed(presence__pool_t *p,
                                 const presence_allocator_t *a,
                                 size_t keep_off) {
  presence__pool_init(p, a);
  p->indexed = true;
  p->keep_off = (uint32_t)keep_off;
}

/* Poison a free block, but for its kept bytes in an indexed pool. */
static void poison_block(const presence__pool_t *p, unsigned char *b,
                         size_t size) {
  if (!p->indexed) {
    POISON(b, size);
    return;
  }
  POISON(b, p->keep_off);
  POISON(b + p->keep_off + 8, size - p->keep_off - 8);
}

/* A new chunk for class c: its blocks become the class's bump region. */
static int grow(presence__pool_t *p, size_t c) {
  size_t size = class_size(c);
  size_t blocks = p->next_blocks[c] ? p->next_blocks[c] : POOL_FIRST_BLOCKS;
  if (blocks * size > POOL_CHUNK_MAX)
    blocks = POOL_CHUNK_MAX / size ? POOL_CHUNK_MAX / size : 1;
  if (blocks > PRESENCE__POOL_CHUNK_BLOCKS)
    blocks = PRESENCE__POOL_CHUNK_BLOCKS;
  if (p->indexed && p->n_dir == p->dir_cap) {
    uint32_t ncap = p->dir_cap ? p->dir_cap * 2 : 16;
    if (ncap > UINT32_MAX / PRESENCE__POOL_CHUNK_BLOCKS) return PRESENCE_ENOMEM;
    struct presence__pool_dir *d =
        presence__realloc(p->alloc, p->dir, ncap * sizeof(*d));
    if (!d) return PRESENCE_ENOMEM;
    p->dir = d;
    p->dir_cap = ncap;
  }
  size_t bytes = sizeof(chunk_t) + blocks * size;
  chunk_t *ch = presence__malloc(p->alloc, bytes);
  if (!ch) return PRESENCE_ENOMEM;
  /* The record table and the memory store's records keep 48 bits of a
   * record's address (every x86-64 and AArch64 user-space address without
   * a tag): memory beyond that is refused, not truncated. */
  if ((uint64_t)((uintptr_t)ch + bytes) >> 48) {
    presence__free(p->alloc, ch);
    return PRESENCE_ENOMEM;
  }
  ch->next = p->chunks;
  ch->size = (uint32_t)size;
  ch->blocks = (uint32_t)blocks;
  p->chunks = ch;
  unsigned char *first = (unsigned char *)(ch + 1);
  if (p->indexed) {
    /* Each block carries its index from now on, and reads as free
     * (generation 0) until it is handed out. */
    uint32_t base = p->n_dir * PRESENCE__POOL_CHUNK_BLOCKS;
    p->dir[p->n_dir++] =
        (struct presence__pool_dir){first, (uint32_t)size, (uint32_t)blocks};
    for (size_t i = 0; i < blocks; i++) {
      uint32_t kept[2] = {base + (uint32_t)i, 0};
      memcpy(first + i * size + p->keep_off, kept, sizeof kept);
    }
  }
  p->bump[c] = first;
  p->left[c] = (uint32_t)blocks;
  p->next_blocks[c] = (uint32_t)(blocks * 2);
  for (size_t i = 0; i < blocks; i++) poison_block(p, first + i * size, size);
  return 0;
}

void *presence__pool_alloc_at(presence__pool_t *p, size_t n, uint32_t *index) {
  if (n == 0 || n > PRESENCE__POOL_MAX) {
    if (p->indexed) return NULL; /* every block of an indexed pool has one */
    return presence__malloc(p->alloc, n);
  }
  size_t c = class_of(n);
  unsigned char *b = p->free[c];
  if (b) {
    UNPOISON(b, class_size(c));
    memcpy(&p->free[c], b, sizeof(void *));
  } else {
    if (!p->left[c] && grow(p, c)) return NULL;
    b = p->bump[c];
    p->bump[c] += class_size(c);
    p->left[c]--;
    UNPOISON(b, class_size(c));
  }
  if (p->indexed) memcpy(index, b + p->keep_off, sizeof(uint32_t));
  return b;
}

void *presence__pool_alloc(presence__pool_t *p, size_t n) {
  uint32_t unused;
  return presence__pool_alloc_at(p, n, &unused);
}

void *presence__pool_block(const presence__pool_t *p, uint32_t index) {
  uint32_t dir_no = index / PRESENCE__POOL_CHUNK_BLOCKS;
  if (dir_no >= p->n_dir) return NULL;
  /* The directory entry, not the chunk's header: at a million sessions
   * the headers (one per 64 KiB) are a cache miss of their own before the
   * block's, on every use by handle in no particular order. */
  const struct presence__pool_dir *d = &p->dir[dir_no];
  uint32_t i = index % PRESENCE__POOL_CHUNK_BLOCKS;
  if (i >= d->blocks) return NULL;
  return d->first + (size_t)i * d->size;
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
  poison_block(p, rec, class_size(c));
}

void presence__pool_destroy(presence__pool_t *p) {
  chunk_t *ch = p->chunks;
  while (ch) {
    chunk_t *next = ch->next;
    presence__free(p->alloc, ch);
    ch = next;
  }
  presence__free(p->alloc, p->dir);
  bool indexed = p->indexed;
  uint32_t keep_off = p->keep_off;
  presence__pool_init(p, p->alloc);
  p->indexed = indexed;
  p->keep_off = keep_off;
}
