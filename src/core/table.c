/* SPDX-License-Identifier: MIT */
/*
 * The record table: open addressing with linear probing over a slot array of
 * tagged pointers. See internal.h for the layout contract.
 *
 * Capacity need not be a power of two: the home slot is the high half of
 * hash * cap ("fastrange"), which lets the table grow by 1.5x and keeps the
 * memory per record lower than doubling would.
 */
#include "core/internal.h"

#include <string.h>

/*
 * A slot: bits 0-47 the record's address, bits 48-53 its distance from its
 * home slot (63: that far or farther, ask the record), bits 54-63 ten bits of
 * its hash. The distance lets deletion shift entries back without touching
 * their records: at a million sessions each such touch is a cache miss.
 */
#define PTR_MASK 0x0000ffffffffffffull
#define DIST_SHIFT 48
#define DIST_MAX 63u
#define DIST_MASK (0x3full << DIST_SHIFT)
#define TAG_MASK (~(PTR_MASK | DIST_MASK))
#define MAX_LOAD_NUM 4 /* grow past 80 % full */
#define MAX_LOAD_DEN 5

static inline uint64_t tag_of(uint32_t hash) {
  return (uint64_t)(hash & 0x3ffu) << 54;
}

static inline size_t home_of(uint32_t hash, size_t cap) {
  return (size_t)(((uint64_t)hash * cap) >> 32);
}

static inline void *rec_of(uint64_t slot) {
  return (void *)(uintptr_t)(slot & PTR_MASK);
}

static inline uint64_t slot_of(void *rec, uint32_t hash) {
  return tag_of(hash) | ((uint64_t)(uintptr_t)rec & PTR_MASK);
}

/* The record's hash: kept in it, or made again from its key. */
static inline uint32_t hash_of(const presence__table_t *t, const void *rec) {
  const presence__hkey_t *k = rec;
  if (!t->rehash) return k->hash;
  return presence__hash((const char *)rec + t->key_offset,
                        presence__key_bytes(k->len));
}

static inline uint64_t with_dist(uint64_t slot, size_t dist) {
  uint64_t d = dist < DIST_MAX ? dist : DIST_MAX;
  return (slot & ~DIST_MASK) | (d << DIST_SHIFT);
}

/* How far the entry in slot i sits from its home. */
static inline size_t dist_at(const presence__table_t *t, size_t i) {
  uint64_t s = t->slots[i];
  size_t d = (size_t)((s & DIST_MASK) >> DIST_SHIFT);
  if (d < DIST_MAX) return d;
  size_t home = home_of(hash_of(t, rec_of(s)), t->cap);
  return (i + t->cap - home) % t->cap;
}

int presence__table_init(presence__table_t *t, const presence_allocator_t *a,
                         size_t key_offset) {
  memset(t, 0, sizeof(*t));
  t->alloc = a;
  t->key_offset = key_offset;
  t->cap = 16;
  t->slots = presence__malloc(a, t->cap * sizeof(uint64_t));
  if (!t->slots) return PRESENCE_ENOMEM;
  memset(t->slots, 0, t->cap * sizeof(uint64_t));
  return 0;
}

int presence__table_init_rehash(presence__table_t *t,
                                const presence_allocator_t *a,
                                size_t key_offset) {
  int rc = presence__table_init(t, a, key_offset);
  t->rehash = true;
  return rc;
}

void presence__table_free(presence__table_t *t) {
  presence__free(t->alloc, t->slots);
  t->slots = NULL;
  t->cap = t->count = 0;
}

static void place(uint64_t *slots, size_t cap, uint64_t slot, uint32_t hash) {
  size_t i = home_of(hash, cap);
  size_t dist = 0;
  while (slots[i]) {
    if (++i == cap) i = 0;
    dist++;
  }
  slots[i] = with_dist(slot, dist);
}

static int resize(presence__table_t *t, size_t ncap) {
  uint64_t *ns = presence__malloc(t->alloc, ncap * sizeof(uint64_t));
  if (!ns) return PRESENCE_ENOMEM;
  memset(ns, 0, ncap * sizeof(uint64_t));
  for (size_t i = 0; i < t->cap; i++) {
    uint64_t s = t->slots[i];
    if (s) place(ns, ncap, s & ~DIST_MASK, hash_of(t, rec_of(s)));
  }
  presence__free(t->alloc, t->slots);
  t->slots = ns;
  t->cap = ncap;
  return 0;
}

void *presence__table_find(const presence__table_t *t, const char *key,
                           size_t len, uint32_t hash) {
  const uint64_t tag = tag_of(hash);
  size_t i = home_of(hash, t->cap);
  for (;;) {
    uint64_t s = t->slots[i];
    if (!s) return NULL;
    if ((s & TAG_MASK) == tag) {
      presence__hkey_t *k = rec_of(s);
      /* A table without kept hashes has the slot's ten bits to go on. */
      if ((t->rehash || k->hash == hash) && k->len == len &&
          memcmp((char *)k + t->key_offset, key, presence__key_bytes(len)) ==
              0)
        return k;
    }
    if (++i == t->cap) i = 0;
  }
}

/* Start loading the home slot of hash: a caller that knows a key early
 * overlaps this cache miss (at a million records the slot array is far
 * bigger than the cache) with its other work before the find or remove. */
void presence__table_prefetch(const presence__table_t *t, uint32_t hash) {
  __builtin_prefetch(&t->slots[home_of(hash, t->cap)]);
}

/* Growing rehashes every record, a cache miss each at scale: a server that
 * knows its size says so up front (presence_options_t.expected_sessions). */
int presence__table_reserve(presence__table_t *t, size_t n) {
  size_t need = n / MAX_LOAD_NUM * MAX_LOAD_DEN + MAX_LOAD_DEN;
  return need > t->cap ? resize(t, need) : 0;
}

/* Grow now if the next insert would: that insert then cannot fail, so a
 * caller may put it after work that must not be undone (and give the slot's
 * cache miss, prefetched early, that long to arrive). */
int presence__table_make_room(presence__table_t *t) {
  if ((t->count + 1) * MAX_LOAD_DEN > t->cap * MAX_LOAD_NUM)
    return resize(t, t->cap + t->cap / 2);
  return 0;
}

int presence__table_insert_h(presence__table_t *t, void *rec, uint32_t hash) {
  /* A slot keeps 48 bits of the address: a record above them (a tagged
   * heap, a 57-bit address space) is refused, not cut into another's. The
   * memory store's pools refuse such memory already; the Redis store's
   * records come from the allocator as they are. */
  if ((uint64_t)(uintptr_t)rec >> 48) return PRESENCE_ENOMEM;
  int rc = presence__table_make_room(t);
  if (rc) return rc;
  place(t->slots, t->cap, slot_of(rec, hash), hash);
  t->count++;
  return 0;
}

int presence__table_insert(presence__table_t *t, void *rec) {
  return presence__table_insert_h(t, rec, hash_of(t, rec));
}

void presence__table_remove(presence__table_t *t, void *rec) {
  presence__table_remove_h(t, rec, hash_of(t, rec));
}

/* Backward-shift deletion: pull later members of the probe run into the
 * hole when their home allows it, so no tombstones accumulate. */
void presence__table_remove_h(presence__table_t *t, void *rec, uint32_t hash) {
  size_t cap = t->cap;
  size_t i = home_of(hash, cap);
  uint64_t want = slot_of(rec, hash);
  while ((t->slots[i] & ~DIST_MASK) != want) {
    if (!t->slots[i]) return; /* not present */
    if (++i == cap) i = 0;
  }
  size_t hole = i;
  size_t j = i;
  for (;;) {
    if (++j == cap) j = 0;
    uint64_t s = t->slots[j];
    if (!s) break;
    size_t dist_j = dist_at(t, j);
    size_t gap = (j + cap - hole) % cap;
    if (dist_j >= gap) { /* its home is at or before the hole */
      t->slots[hole] = with_dist(s, dist_j - gap);
      hole = j;
    }
  }
  t->slots[hole] = 0;
  t->count--;
}

void *presence__table_next(const presence__table_t *t, size_t *pos) {
  while (*pos < t->cap) {
    uint64_t s = t->slots[(*pos)++];
    if (s) return rec_of(s);
  }
  return NULL;
}
