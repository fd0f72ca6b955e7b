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

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A number as RFC 8259 writes it, from p: its end, or NULL. */
static const char *strict_number(const char *p, const char *end) {
  if (p < end && *p == '-') p++;
  if (p >= end || !is_digit(*p)) return NULL;
  if (*p == '0') p++;
  else
    while (p < end && is_digit(*p))
      p++;
  if (p < end && *p == '.') {
    if (++p >= end || !is_digit(*p)) return NULL;
    while (p < end && is_digit(*p))
      p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    if (++p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || !is_digit(*p)) return NULL;
    while (p < end && is_digit(*p))
      p++;
  }
  return p;
}

int json_text_strict(const void *data, size_t len) {
  const char *p = data, *end = p + len;
  while (p < end) {
    char c = *p;
    if (c == '"') {
      for (p++; p < end && *p != '"'; p++) {
        if ((unsigned char)*p < 0x20) return 0;
        if (*p == '\\') p++;
      }
      p++;
    } else if (c == '-' || is_digit(c)) {
      const char *q = strict_number(p, end);
      if (!q || (q < end && (is_digit(*q) || *q == '.' || *q == 'e' ||
                             *q == 'E' || *q == '+' || *q == '-')))
        return 0;
      p = q;
    } else {
      /* cJSON skips every byte up to ' ' between tokens, NUL included;
       * RFC 8259 has four. A value passed on as written would carry the
       * others to every reader (or be cut at the NUL). */
      if ((unsigned char)c < 0x20 && c != '\t' && c != '\n' && c != '\r')
        return 0;
      p++;
    }
  }
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
  /* cJSON also reads 007, 1. and a raw control byte inside a string: a
   * value kept as the peer wrote it (json_source_compact) must be JSON that
   * every reader takes. */
  if (root && !json_text_strict(data, len)) {
    cJSON_Delete(root);
    root = NULL;
  }
  return root;
}

/* RFC 8259 8.1: JSON exchanged between systems is UTF-8 (no overlong form,
 * no surrogate, nothing past U+10FFFF). cJSON takes any byte inside a
 * string, and a body's meta is passed on as written (json_source_compact):
 * a 0xFF in PUT /v1/sessions's meta reached every event-stream reader and
 * webhook receiver, whose UTF-8 decoders refuse the whole message (the
 * Python consumer of docs/api.md stopped on it). WebSocket text is checked
 * by the WebSocket layer; an HTTP body by nothing else. Local, not ws.c's
 * utf8_feed: bench links this file alone. */
static int utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i], cp, min;
    size_t k;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) {
      k = 1, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
      k = 2, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
      k = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return 0;
    }
    if (n - i <= k) return 0; /* cut short */
    for (size_t j = 1; j <= k; j++) {
      if ((s[i + j] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + j] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    i += k + 1;
  }
  return 1;
}

cJSON *json_body_object(const char *body, size_t len, const char **why) {
  if (!utf8_valid((const unsigned char *)body, len)) {
    *why = "body is not UTF-8 (RFC 8259 8.1)";
    return NULL;
  }
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

/* ---- A value's own text ---------------------------------------------------
 *
 * The tree and the text are walked together: cJSON keeps members and
 * elements in the order they were written and json_parse_one_object
 * refuses duplicate names, so the n-th child of a node is the n-th value
 * inside its brackets. Depth is bounded by cJSON's nesting limit. */
typedef struct src_walk {
  const char *p, *end;
  const cJSON *target;
  const char *s, *e; /* the target's text once found */
} src_walk_t;

static void src_space(src_walk_t *w) {
  while (w->p < w->end &&
         (*w->p == ' ' || *w->p == '\t' || *w->p == '\n' || *w->p == '\r'))
    w->p++;
}

static int src_string(src_walk_t *w) {
  if (w->p >= w->end || *w->p != '"') return -1;
  for (w->p++; w->p < w->end;) {
    char c = *w->p++;
    if (c == '\\') {
      if (w->p >= w->end) return -1;
      w->p++; /* the escaped byte; \uXXXX's hex digits are plain bytes */
    } else if (c == '"') {
      return 0;
    }
  }
  return -1;
}

static int src_value(src_walk_t *w, const cJSON *n) {
  src_space(w);
  const char *start = w->p;
  if (cJSON_IsObject(n) || cJSON_IsArray(n)) {
    int obj = cJSON_IsObject(n);
    if (w->p >= w->end || *w->p != (obj ? '{' : '[')) return -1;
    w->p++;
    for (const cJSON *c = n->child; c; c = c->next) {
      src_space(w);
      if (c != n->child) {
        if (w->p >= w->end || *w->p != ',') return -1;
        w->p++;
        src_space(w);
      }
      if (obj) {
        if (src_string(w) != 0) return -1;
        src_space(w);
        if (w->p >= w->end || *w->p != ':') return -1;
        w->p++;
      }
      if (src_value(w, c) != 0) return -1;
      if (w->s) return 0; /* found inside: the rest is not needed */
    }
    src_space(w);
    if (w->p >= w->end || *w->p != (obj ? '}' : ']')) return -1;
    w->p++;
  } else if (cJSON_IsString(n)) {
    if (src_string(w) != 0) return -1;
  } else { /* a number, true, false or null: up to the next delimiter */
    while (w->p < w->end && *w->p != ',' && *w->p != ']' && *w->p != '}' &&
           *w->p != ' ' && *w->p != '\t' && *w->p != '\n' && *w->p != '\r')
      w->p++;
    if (w->p == start) return -1;
  }
  if (n == w->target) {
    w->s = start;
    w->e = w->p;
  }
  return 0;
}

char *json_source_compact(const void *text, size_t len, const cJSON *root,
                          const cJSON *node, size_t *n) {
  src_walk_t w = {text, (const char *)text + len, node, NULL, NULL};
  if (len >= 3 && memcmp(w.p, "\xef\xbb\xbf", 3) == 0) w.p += 3;
  if (!root || !node || src_value(&w, root) != 0 || !w.s) return NULL;
  char *out = malloc((size_t)(w.e - w.s) + 1), *o = out;
  if (!out) return NULL;
  int in_str = 0;
  for (const char *p = w.s; p < w.e; p++) {
    char c = *p;
    if (in_str) {
      *o++ = c;
      if (c == '\\') *o++ = *++p; /* the escaped byte, inside w.s..w.e */
      else if (c == '"') in_str = 0;
    } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      *o++ = c;
      in_str = c == '"';
    }
  }
  *o = '\0';
  if (n) *n = (size_t)(o - out);
  return out;
}
