/* SPDX-License-Identifier: MIT */
/*
 * JSON read from a peer (see json_keys.h).
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

/* In valid JSON a backslash occurs only inside strings and always starts an
 * escape, so skipping the escaped character is enough to tell "\\u0000"
 * (text) from "\u0000" (a NUL). */
int json_has_escaped_nul(const void *data, size_t len) {
  const char *d = data;
  for (size_t i = 0; i + 1 < len; i++) {
    if (d[i] != '\\') continue;
    if (d[i + 1] == 'u' && i + 5 < len && !memcmp(d + i + 2, "0000", 4))
      return 1;
    i++;
  }
  return 0;
}

static int only_space(const char *p, const char *end) {
  for (; p < end; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return 0;
  return 1;
}

cJSON *json_parse_one_object(const void *data, size_t len) {
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
  if (root && (!end || !only_space(end, (const char *)data + len))) {
    cJSON_Delete(root); /* an object followed by more than whitespace */
    root = NULL;
  }
  if (root && !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    root = NULL;
  }
  if (root && json_has_dup_keys(root) != 0) {
    cJSON_Delete(root);
    root = NULL;
  }
  return root;
}

cJSON *json_body_object(const char *body, size_t len, const char **why) {
  cJSON *root = json_parse_one_object(body, len);
  if (!root) {
    *why = "body is not one JSON object, or names a member twice";
    return NULL;
  }
  if (json_has_escaped_nul(body, len)) {
    cJSON_Delete(root);
    *why = "strings must not contain NUL (\\u0000)";
    return NULL;
  }
  return root;
}
