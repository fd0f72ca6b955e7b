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

/* Two digits a step, written in place once the count of digits is known:
 * half the steps of a digit at a time into a temporary, and no copy after. */
static const char digits2[] = "00010203040506070809"
                              "10111213141516171819"
                              "20212223242526272829"
                              "30313233343536373839"
                              "40414243444546474849"
                              "50515253545556575859"
                              "60616263646566676869"
                              "70717273747576777879"
                              "80818283848586878889"
                              "90919293949596979899";

static const uint64_t pow10[20] = {
    1u, 10u, 100u, 1000u, 10000u, 100000u, 1000000u, 10000000u, 100000000u,
    1000000000u, 10000000000u, 100000000000u, 1000000000000u, 10000000000000u,
    100000000000000u, 1000000000000000u, 10000000000000000u,
    100000000000000000u, 1000000000000000000u, 10000000000000000000u};

char *wr_u64(char *p, uint64_t v) {
  /* The count of digits from the count of bits: log10(2) ~ 1233 / 4096
   * gives it or one less, and one comparison tells which (a division a
   * digit was ~90 instructions of a 13-digit time's ~230). */
  unsigned bits = 64u - (unsigned)__builtin_clzll(v | 1);
  unsigned t = (bits * 1233u) >> 12;
  size_t n = t + (v >= pow10[t]);
  if (!n) n = 1;
  char *q = p + n;
  /* Eight digits at a time in 32 bits (a 64-bit division by 100 is a
   * 128-bit multiplication; a 32-bit one is cheaper), then two by two. */
  while (v >= 100000000u) {
    uint32_t lo = (uint32_t)(v % 100000000u);
    v /= 100000000u;
    for (int i = 0; i < 4; i++) {
      q -= 2;
      memcpy(q, digits2 + 2 * (lo % 100), 2);
      lo /= 100;
    }
  }
  uint32_t w = (uint32_t)v;
  while (w >= 100) {
    q -= 2;
    memcpy(q, digits2 + 2 * (w % 100), 2);
    w /= 100;
  }
  if (w >= 10) {
    memcpy(q - 2, digits2 + 2 * w, 2);
  } else {
    q[-1] = (char)('0' + w);
  }
  return p + n;
}

char *wr_i64(char *p, int64_t v) {
  if (v >= 0) return wr_u64(p, (uint64_t)v);
  *p++ = '-';
  return wr_u64(p, (uint64_t)0 - (uint64_t)v);
}

void buf_put_u64(buf_t *b, uint64_t v) {
  if (buf_reserve(b, WR_U64_MAX) != 0) return;
  buf_commit(b, wr_u64(buf_end(b), v));
}

void buf_put_i64(buf_t *b, int64_t v) {
  if (buf_reserve(b, WR_U64_MAX + 1) != 0) return;
  buf_commit(b, wr_i64(buf_end(b), v));
}

/* Whether any of the 8 bytes in x needs escaping: below 0x20, '"' or
 * '\\'. Each test is exact for "any byte" (a borrow can only set a flag
 * above a byte that already matched), which is all it is asked. */
static inline int needs_escape8(uint64_t x) {
  const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
  uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
  return ((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b)) &
          high) != 0;
}

/* s[0..n) escaped as RFC 8259 requires, no quotes: at most 6 * n bytes.
 * Runs of plain bytes are copied whole. */
static char *wr_json_body(char *p, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t run = 0, i = 0;
  /* Ids and names are plain: eight bytes a step until one is not. */
  for (; n - i >= 8; i += 8) {
    uint64_t x;
    memcpy(&x, s + i, 8);
    if (needs_escape8(x)) break;
  }
  for (; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    p = wr_mem(p, s + run, i - run);
    run = i + 1;
    *p++ = '\\';
    switch (c) {
    case '"':
    case '\\':
      *p++ = (char)c;
      break;
    case '\n':
      *p++ = 'n';
      break;
    case '\r':
      *p++ = 'r';
      break;
    case '\t':
      *p++ = 't';
      break;
    default:
      p = WR_LIT(p, "u00");
      *p++ = hex[c >> 4];
      *p++ = hex[c & 15];
    }
  }
  return wr_mem(p, s + run, n - run);
}

char *wr_json_strn(char *p, const char *s, size_t n) {
  *p++ = '"';
  p = wr_json_body(p, s, n);
  *p++ = '"';
  return p;
}

/* In slices, so that a long string reserves six times a slice at most, not
 * six times itself (the escaping is byte by byte: a slice ends anywhere). */
void buf_put_json_strn(buf_t *b, const char *s, size_t n) {
  enum { SLICE = 4096 };
  buf_putc(b, '"');
  for (;;) {
    size_t k = n < SLICE ? n : SLICE;
    if (buf_reserve(b, 6 * k) != 0) return;
    buf_commit(b, wr_json_body(buf_end(b), s, k));
    s += k;
    n -= k;
    if (!n) break;
  }
  buf_putc(b, '"');
}

void buf_put_json_str(buf_t *b, const char *s) {
  buf_put_json_strn(b, s, strlen(s));
}
