/* SPDX-License-Identifier: MIT */
/*
 * String-keyed hash map (see map.h).
 */
#include "server/map.h"

#include "core/siphash.h"

#include <stdlib.h>
#include <string.h>

struct map_node {
  map_node_t *next;
  void *value;
  uint32_t hash;
  char key[];
};

static uint64_t proc_k0, proc_k1;

void map_hash_key(const uint8_t key[16]) {
  memcpy(&proc_k0, key, 8);
  memcpy(&proc_k1, key + 8, 8);
}

static uint32_t hash_of(const map_t *m, const char *s) {
  uint64_t h = presence_siphash13(m->k0, m->k1, s, strlen(s));
  return (uint32_t)(h ^ (h >> 32));
}

void map_hash_keys(uint64_t *k0, uint64_t *k1) {
  *k0 = proc_k0;
  *k1 = proc_k1;
}

void map_init(map_t *m) {
  memset(m, 0, sizeof *m);
  m->k0 = proc_k0;
  m->k1 = proc_k1;
}

void map_free(map_t *m) {
  for (size_t i = 0; i < m->nbuckets; i++) {
    map_node_t *n = m->buckets[i];
    while (n) {
      map_node_t *next = n->next;
      free(n);
      n = next;
    }
  }
  free(m->buckets);
  uint64_t k0 = m->k0, k1 = m->k1;
  memset(m, 0, sizeof *m);
  m->k0 = k0; /* a freed map may be used again, with the same key */
  m->k1 = k1;
}

static map_node_t **find(const map_t *m, const char *key, uint32_t h) {
  if (!m->nbuckets) return NULL;
  map_node_t **pp = &m->buckets[h & (m->nbuckets - 1)];
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->hash == h && strcmp((*pp)->key, key) == 0) return pp;
  return pp;
}

void *map_get(const map_t *m, const char *key) {
  map_node_t **pp = find(m, key, hash_of(m, key));
  return pp && *pp ? (*pp)->value : NULL;
}

const char *map_key(const map_t *m, const char *key) {
  map_node_t **pp = find(m, key, hash_of(m, key));
  return pp && *pp ? (*pp)->key : NULL;
}

/* Double the table when the load reaches 1, keeping chains short. */
static int grow(map_t *m) {
  size_t nb = m->nbuckets ? m->nbuckets * 2 : 16;
  map_node_t **b = calloc(nb, sizeof *b);
  if (!b) return -1;
  for (size_t i = 0; i < m->nbuckets; i++) {
    map_node_t *n = m->buckets[i];
    while (n) {
      map_node_t *next = n->next;
      n->next = b[n->hash & (nb - 1)];
      b[n->hash & (nb - 1)] = n;
      n = next;
    }
  }
  free(m->buckets);
  m->buckets = b;
  m->nbuckets = nb;
  return 0;
}

int map_put(map_t *m, const char *key, void *value) {
  uint32_t h = hash_of(m, key);
  map_node_t **pp = find(m, key, h);
  if (pp && *pp) {
    (*pp)->value = value;
    return 0;
  }
  if (m->count >= m->nbuckets && grow(m) != 0 && !m->nbuckets) return -1;
  size_t klen = strlen(key);
  map_node_t *n = malloc(sizeof *n + klen + 1);
  if (!n) return -1;
  memcpy(n->key, key, klen + 1);
  n->hash = h;
  n->value = value;
  size_t i = h & (m->nbuckets - 1);
  n->next = m->buckets[i];
  m->buckets[i] = n;
  m->count++;
  return 0;
}

void *map_del(map_t *m, const char *key) {
  map_node_t **pp = find(m, key, hash_of(m, key));
  if (!pp || !*pp) return NULL;
  map_node_t *n = *pp;
  void *v = n->value;
  *pp = n->next;
  free(n);
  m->count--;
  return v;
}

size_t map_longest_chain(const map_t *m) {
  size_t longest = 0;
  for (size_t i = 0; i < m->nbuckets; i++) {
    size_t n = 0;
    for (const map_node_t *e = m->buckets[i]; e; e = e->next)
      n++;
    if (n > longest) longest = n;
  }
  return longest;
}
