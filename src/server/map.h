/* SPDX-License-Identifier: MIT */
/*
 * A string-keyed hash map (separate chaining, FNV-1a). Keys are copied into
 * the node; values are opaque pointers owned by the caller. Used for
 * user id -> subscribers and session id -> connection.
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
} map_t;

void map_init(map_t *m);
/* Frees the nodes, not the values. */
void map_free(map_t *m);
void *map_get(const map_t *m, const char *key);
/* Insert or replace. 0, or -1 on allocation failure (map unchanged). */
int map_put(map_t *m, const char *key, void *value);
/* Remove; returns the old value or NULL. */
void *map_del(map_t *m, const char *key);
/* The stored copy of key (stable while the entry lives), or NULL. */
const char *map_key(const map_t *m, const char *key);

#endif
