/* SPDX-License-Identifier: MIT */
/*
 * Growable byte buffer (see buf.h).
 */
#include "server/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(buf_t *b) {
  memset(b, 0, sizeof *b);
}

void buf_free(buf_t *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

void buf_reset(buf_t *b) {
  b->len = 0;
  b->failed = 0;
}

void buf_shrink(buf_t *b, size_t keep) {
  if (b->cap > keep) {
    free(b->data);
    b->data = NULL;
    b->cap = 0;
  }
  b->len = 0;
  b->failed = 0;
}

int buf_reserve(buf_t *b, size_t extra) {
  if (b->failed) return -1;
  if (b->len + extra + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) {
    if (cap > SIZE_MAX / 2) {
      b->failed = 1;
      return -1;
    }
    cap *= 2;
  }
  char *d = realloc(b->data, cap);
  if (!d) {
    b->failed = 1;
    return -1;
  }
  b->data = d;
  b->cap = cap;
  return 0;
}

void buf_append_slow(buf_t *b, const void *data, size_t len) {
  if (buf_reserve(b, len) != 0) return;
  if (len) memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
}

void buf_printf(buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char tmp[256];
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->failed = 1;
    return;
  }
  if ((size_t)n < sizeof tmp) {
    buf_append(b, tmp, (size_t)n);
    return;
  }
  if (buf_reserve(b, (size_t)n) != 0) return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void buf_put_u64(buf_t *b, uint64_t v) {
  char tmp[24];
  size_t i = sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  buf_append(b, tmp + i, sizeof tmp - i);
}

void buf_put_i64(buf_t *b, int64_t v) {
  if (v < 0) {
    buf_putc(b, '-');
    buf_put_u64(b, (uint64_t)0 - (uint64_t)v);
  } else {
    buf_put_u64(b, (uint64_t)v);
  }
}

void buf_put_json_strn(buf_t *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  if (buf_reserve(b, n + 2) != 0) return;
  buf_putc(b, '"');
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    buf_append(b, s + run, i - run);
    run = i + 1;
    switch (c) {
    case '"':
      buf_append(b, "\\\"", 2);
      break;
    case '\\':
      buf_append(b, "\\\\", 2);
      break;
    case '\n':
      buf_append(b, "\\n", 2);
      break;
    case '\r':
      buf_append(b, "\\r", 2);
      break;
    case '\t':
      buf_append(b, "\\t", 2);
      break;
    default: {
      char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      buf_append(b, esc, 6);
    }
    }
  }
  buf_append(b, s + run, n - run);
  buf_putc(b, '"');
}

void buf_put_json_str(buf_t *b, const char *s) {
  buf_put_json_strn(b, s, strlen(s));
}
