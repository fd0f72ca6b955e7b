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

#define PTR_MASK 0x0000ffffffffffffull
#define MAX_LOAD_NUM 4 /* grow past 80 % full */
#define MAX_LOAD_DEN 5

static inline uint64_t tag_of(uint32_t hash) {
  return (uint64_t)(hash & 0xffffu) << 48;
}

static inline size_t home_of(uint32_t hash, size_t cap) {
  return (size_t)(((uint64_t)hash * cap) >> 32);
}

static inline void *rec_of(uint64_t slot) {
  return (void *)(uintptr_t)(slot & PTR_MASK);
}

static inline uint64_t slot_of(void *rec) {
  const presence__hkey_t *k = rec;
  return tag_of(k->hash) | ((uint64_t)(uintptr_t)rec & PTR_MASK);
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

void presence__table_free(presence__table_t *t) {
  presence__free(t->alloc, t->slots);
  t->slots = NULL;
  t->cap = t->count = 0;
}

static void place(uint64_t *slots, size_t cap, uint64_t slot, uint32_t hash) {
  size_t i = home_of(hash, cap);
  while (slots[i]) {
    if (++i == cap) i = 0;
  }
  slots[i] = slot;
}

static int grow(presence__table_t *t) {
  size_t ncap = t->cap + t->cap / 2;
  uint64_t *ns = presence__malloc(t->alloc, ncap * sizeof(uint64_t));
  if (!ns) return PRESENCE_ENOMEM;
  memset(ns, 0, ncap * sizeof(uint64_t));
  for (size_t i = 0; i < t->cap; i++) {
    uint64_t s = t->slots[i];
    if (s) place(ns, ncap, s, ((presence__hkey_t *)rec_of(s))->hash);
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
    if ((s & ~PTR_MASK) == tag) {
      presence__hkey_t *k = rec_of(s);
      if (k->hash == hash && k->len == len &&
          memcmp((char *)k + t->key_offset, key, len) == 0)
        return k;
    }
    if (++i == t->cap) i = 0;
  }
}

int presence__table_insert(presence__table_t *t, void *rec) {
  if ((t->count + 1) * MAX_LOAD_DEN > t->cap * MAX_LOAD_NUM) {
    int rc = grow(t);
    if (rc) return rc;
  }
  place(t->slots, t->cap, slot_of(rec), ((presence__hkey_t *)rec)->hash);
  t->count++;
  return 0;
}

/* Backward-shift deletion: pull later members of the probe run into the
 * hole when their home allows it, so no tombstones accumulate. */
void presence__table_remove(presence__table_t *t, void *rec) {
  const presence__hkey_t *k = rec;
  size_t cap = t->cap;
  size_t i = home_of(k->hash, cap);
  uint64_t want = slot_of(rec);
  while (t->slots[i] != want) {
    if (!t->slots[i]) return; /* not present */
    if (++i == cap) i = 0;
  }
  size_t hole = i;
  size_t j = i;
  for (;;) {
    if (++j == cap) j = 0;
    uint64_t s = t->slots[j];
    if (!s) break;
    size_t home = home_of(((presence__hkey_t *)rec_of(s))->hash, cap);
    size_t dist_j = (j + cap - home) % cap;
    size_t dist_hole = (hole + cap - home) % cap;
    if (dist_hole <= dist_j) {
      t->slots[hole] = s;
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
