/* SPDX-License-Identifier: MIT */
/*
 * A string-keyed hash map (separate chaining, SipHash-1-3 under a random
 * per-process key: keys such as subscribed user ids and channel names are
 * chosen by clients, and an unkeyed hash lets them be chosen to collide).
 * Keys are copied into the node; values are opaque pointers owned by the
 * caller. Used for user id -> subscribers and session id -> connection.
 */
#ifndef PRESENCED_MAP_H
#define PRESENCED_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct map_node map_node_t;

typedef struct map {
  map_node_t **buckets;
  size_t nbuckets; /* power of two, or 0 before the first insert */
  size_t count;
  uint64_t k0, k1; /* the hash key, copied at map_init */
  /* For a subscriber index (subindex.c): told when a key gets its first
   * subscriber (+1) and loses its last (-1). NULL: nobody listens. */
  void (*on_sub)(void *ud, const char *key, int delta);
  void *on_sub_ud;
} map_t;

/* Set the process's hash key (16 random bytes; srv_init draws them through
 * its injectable random source). Maps take the key current at map_init, so
 * a later call never changes an existing map's hashes. Before any call the
 * key is zero: fine for tests, not for a server facing clients. */
void map_hash_key(const uint8_t key[16]);

void map_init(map_t *m);
/* The process's hash key (set by map_hash_key), for tables of their own. */
void map_hash_keys(uint64_t *k0, uint64_t *k1);
/* Frees the nodes, not the values. */
void map_free(map_t *m);
void *map_get(const map_t *m, const char *key);
/* Insert or replace. 0, or -1 on allocation failure (map unchanged). */
int map_put(map_t *m, const char *key, void *value);
/* Remove; returns the old value or NULL. */
void *map_del(map_t *m, const char *key);
/* The longest chain of entries in one bucket (tests, hash flooding). */
size_t map_longest_chain(const map_t *m);
/* The stored copy of key (stable while the entry lives), or NULL. */
const char *map_key(const map_t *m, const char *key);

#endif
