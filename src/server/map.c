/* SPDX-License-Identifier: MIT */
/*
 * String-keyed hash map (see map.h).
 */
#include "server/map.h"

#include <stdlib.h>
#include <string.h>

struct map_node {
  map_node_t *next;
  void *value;
  uint32_t hash;
  char key[];
};

static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 16777619u;
  }
  return h;
}

void map_init(map_t *m) {
  memset(m, 0, sizeof *m);
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
  memset(m, 0, sizeof *m);
}

static map_node_t **find(const map_t *m, const char *key, uint32_t h) {
  if (!m->nbuckets) return NULL;
  map_node_t **pp = &m->buckets[h & (m->nbuckets - 1)];
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->hash == h && strcmp((*pp)->key, key) == 0) return pp;
  return pp;
}

void *map_get(const map_t *m, const char *key) {
  map_node_t **pp = find(m, key, hash_str(key));
  return pp && *pp ? (*pp)->value : NULL;
}

const char *map_key(const map_t *m, const char *key) {
  map_node_t **pp = find(m, key, hash_str(key));
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
  uint32_t h = hash_str(key);
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
  map_node_t **pp = find(m, key, hash_str(key));
  if (!pp || !*pp) return NULL;
  map_node_t *n = *pp;
  void *v = n->value;
  *pp = n->next;
  free(n);
  m->count--;
  return v;
}
