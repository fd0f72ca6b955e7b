/* SPDX-License-Identifier: MIT */
/*
 * Log cursors: one position per log behind one opaque string.
 *
 * A store may keep its transition log as several logs, each with its own
 * sequence (the Redis store in shards, one stream per shard: a single
 * sequence for the whole cluster would be one hot key on one primary).
 * Events of one user live in one log, and so do the events of one channel
 * member, so a reader that keeps the order within each log keeps the order
 * per user and per member; across logs there is no order to keep (the
 * shards decide independently). A reader therefore needs one position per
 * log, and its clients (SSE's Last-Event-ID, a webhook lease, presencectl
 * watch) one string that holds them all.
 *
 * The text: with one log, the decimal sequence number, so clients of a
 * single store see what they always saw. With several, "c" followed by
 * base64url (no padding) of LEB128 varints: the number of logs, then each
 * log's position. A 12-shard cursor at a million events per shard is about
 * 50 characters. The number of logs is in the text so that a cursor of
 * another layout is refused, not misread.
 *
 * No I/O here: the reads go through presence_log_read_of.
 */
#include "core/internal.h"

#include <string.h>

struct presence_cursor {
  presence_t *p;
  /* A copy: a cursor may be freed after its presence_t (a daemon frees
   * its readers last). */
  presence_allocator_t alloc;
  uint32_t n;
  uint32_t turn; /* where presence_cursor_next looks first */
  uint64_t pos[];
};

static const char b64u[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64u_val(unsigned char ch) {
  if (ch >= 'A' && ch <= 'Z') return ch - 'A';
  if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9') return ch - '0' + 52;
  if (ch == '-') return 62;
  if (ch == '_') return 63;
  return -1;
}

static size_t put_varint(unsigned char *out, uint64_t v) {
  size_t i = 0;
  while (v >= 0x80) {
    out[i++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  out[i++] = (unsigned char)v;
  return i;
}

/* 0, or -1 when the bytes end inside a varint or it overflows 64 bits. */
static int get_varint(const unsigned char *in, size_t len, size_t *at,
                      uint64_t *v) {
  uint64_t r = 0;
  for (unsigned shift = 0; *at < len && shift < 64; shift += 7) {
    unsigned char b = in[(*at)++];
    if (shift == 63 && (b & 0x7e)) return -1;
    r |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return 0;
    }
  }
  return -1;
}

/* Decode base64url without padding; the byte count, or -1. Trailing bits
 * must be zero, so each cursor has exactly one text. */
static long b64u_decode(const char *in, size_t len, unsigned char *out,
                        size_t cap) {
  if (len % 4 == 1) return -1;
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64u_val((unsigned char)in[i]);
    if (v < 0) return -1;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o == cap) return -1;
      out[o++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc) return -1;
  return (long)o;
}

static presence_cursor_t *cursor_alloc(presence_t *p, uint32_t n) {
  presence_cursor_t *c = presence__malloc(presence__allocator(p),
                                          sizeof *c + n * sizeof c->pos[0]);
  if (!c) return NULL;
  c->p = p;
  c->alloc = *presence__allocator(p);
  c->n = n;
  c->turn = 0;
  memset(c->pos, 0, n * sizeof c->pos[0]);
  return c;
}

/* A decimal of 1..20 digits that fits 64 bits. */
static int parse_decimal(const char *t, size_t len, uint64_t *out) {
  if (!len || len > 20) return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (t[i] < '0' || t[i] > '9') return -1;
    uint64_t d = (uint64_t)(t[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static int cursor_parse(presence_cursor_t *c, const char *t, size_t len) {
  uint64_t v;
  if (!parse_decimal(t, len, &v)) {
    /* One log: its position. Several: only "0", the start of each (what
     * a reader asks for when it wants everything still kept). */
    if (c->n == 1) c->pos[0] = v;
    return c->n == 1 || v == 0 ? 0 : PRESENCE_EINVAL;
  }
  if (c->n == 1 || len < 2 || t[0] != 'c' || len > PRESENCE_CURSOR_TEXT_MAX)
    return PRESENCE_EINVAL;
  unsigned char raw[PRESENCE_CURSOR_TEXT_MAX];
  long nb = b64u_decode(t + 1, len - 1, raw, sizeof raw);
  if (nb < 0) return PRESENCE_EINVAL;
  size_t at = 0;
  uint64_t n;
  if (get_varint(raw, (size_t)nb, &at, &n) || n != c->n)
    return PRESENCE_EINVAL;
  for (uint32_t i = 0; i < c->n; i++)
    if (get_varint(raw, (size_t)nb, &at, &c->pos[i])) return PRESENCE_EINVAL;
  return at == (size_t)nb ? 0 : PRESENCE_EINVAL;
}

int presence_cursor_new(presence_t *p, const char *text, size_t len,
                        presence_cursor_t **out) {
  if (!p || !out) return PRESENCE_EINVAL;
  uint32_t n = presence_log_count(p);
  if (n > PRESENCE_CURSOR_LOGS_MAX) return PRESENCE_ENOTSUP;
  presence_cursor_t *c = cursor_alloc(p, n);
  if (!c) return PRESENCE_ENOMEM;
  int rc = 0;
  if (!text) {
    for (uint32_t i = 0; i < n; i++) c->pos[i] = presence_log_last_seq_of(p, i);
  } else {
    rc = cursor_parse(c, text, len);
  }
  if (rc) {
    presence_cursor_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

void presence_cursor_free(presence_cursor_t *c) {
  if (c) {
    presence_allocator_t a = c->alloc;
    presence__free(&a, c);
  }
}

void presence_cursor_copy(presence_cursor_t *dst,
                          const presence_cursor_t *src) {
  if (!dst || !src || dst == src) return;
  uint32_t n = dst->n < src->n ? dst->n : src->n;
  memcpy(dst->pos, src->pos, n * sizeof dst->pos[0]);
}

uint64_t presence_cursor_pos(const presence_cursor_t *c, uint32_t log) {
  return c && log < c->n ? c->pos[log] : 0;
}

void presence_cursor_set(presence_cursor_t *c, uint32_t log, uint64_t seq) {
  if (c && log < c->n) c->pos[log] = seq;
}

int presence_cursor_format(const presence_cursor_t *c, char *out,
                           size_t cap) {
  if (!c || !out) return PRESENCE_EINVAL;
  if (c->n == 1) {
    char tmp[24];
    size_t k = 0;
    uint64_t v = c->pos[0];
    do {
      tmp[k++] = (char)('0' + v % 10);
      v /= 10;
    } while (v);
    if (k + 1 > cap) return PRESENCE_EINVAL;
    for (size_t i = 0; i < k; i++) out[i] = tmp[k - 1 - i];
    out[k] = '\0';
    return (int)k;
  }
  /* n <= PRESENCE_CURSOR_LOGS_MAX varints of at most 10 bytes, in base64
   * (4 characters per 3 bytes), fit PRESENCE_CURSOR_TEXT_MAX. */
  unsigned char raw[5 + PRESENCE_CURSOR_LOGS_MAX * 10];
  size_t nb = put_varint(raw, c->n);
  for (uint32_t i = 0; i < c->n; i++) nb += put_varint(raw + nb, c->pos[i]);
  size_t need = 1 + (nb * 8 + 5) / 6 + 1;
  if (need > cap) return PRESENCE_EINVAL;
  size_t o = 0;
  out[o++] = 'c';
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < nb; i++) {
    acc = (acc << 8) | raw[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out[o++] = b64u[(acc >> bits) & 63];
    }
    acc &= (1u << bits) - 1;
  }
  if (bits) out[o++] = b64u[(acc << (6 - bits)) & 63];
  out[o] = '\0';
  return (int)o;
}

int presence_cursor_next(presence_cursor_t *c, uint32_t *log) {
  if (!c || !log) return 0;
  /* Logs with events after c first, in turn from where the last call left
   * off; then one where c is ahead of what this instance has seen. */
  uint32_t ahead = c->n;
  for (uint32_t k = 0; k < c->n; k++) {
    uint32_t i = (c->turn + k) % c->n;
    uint64_t last = presence_log_last_seq_of(c->p, i);
    if (last > c->pos[i]) {
      *log = i;
      c->turn = (i + 1) % c->n;
      return 1;
    }
    if (last < c->pos[i] && ahead == c->n) ahead = i;
  }
  if (ahead == c->n) return 0;
  *log = ahead;
  c->turn = (ahead + 1) % c->n;
  return 1;
}

uint64_t presence_cursor_lag(const presence_cursor_t *c) {
  uint64_t lag = 0;
  for (uint32_t i = 0; c && i < c->n; i++) {
    uint64_t last = presence_log_last_seq_of(c->p, i);
    if (last > c->pos[i]) lag += last - c->pos[i];
  }
  return lag;
}
