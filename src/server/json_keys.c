/* SPDX-License-Identifier: MIT */
/*
 * Duplicate member names (see json_keys.h).
 */
#include "server/json_keys.h"

#include <stdlib.h>
#include <string.h>

static int cmp_key(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* 1 if an object anywhere in the tree has a member name twice, 0 if not, -1
 * when out of memory. Sorting makes it O(n log n) per object, so a large
 * payload cannot make it quadratic. Depth is bounded by cJSON's nesting
 * limit. */
int json_has_dup_keys(const cJSON *node) {
  if (cJSON_IsObject(node)) {
    size_t n = 0;
    for (const cJSON *c = node->child; c; c = c->next)
      n++;
    if (n > 1) {
      const char **keys = malloc(n * sizeof *keys);
      if (!keys) return -1;
      size_t i = 0;
      for (const cJSON *c = node->child; c; c = c->next)
        keys[i++] = c->string;
      qsort(keys, n, sizeof *keys, cmp_key);
      int dup = 0;
      for (i = 1; i < n && !dup; i++)
        dup = strcmp(keys[i - 1], keys[i]) == 0;
      free(keys);
      if (dup) return 1;
    }
  }
  if (cJSON_IsObject(node) || cJSON_IsArray(node)) {
    for (const cJSON *c = node->child; c; c = c->next) {
      int r = json_has_dup_keys(c);
      if (r) return r;
    }
  }
  return 0;
}

