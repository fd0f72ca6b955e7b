/* SPDX-License-Identifier: MIT */
/*
 * RESP2 reader and formatter (see redis_resp.h for why they are ours).
 *
 * The reader works in two passes over the bytes of one reply. The scan
 * walks the reply as it arrives, resumable at any byte (its position and a
 * stack of elements still expected are kept between calls), checks every
 * header against the limits as soon as it is read, and counts what the
 * reply will need: items, element slots and string bytes. Once the scan has
 * seen the reply end, the build walks the same bytes again, now known to be
 * complete and well formed, and fills one block of exactly that size.
 */
#include "store/redis_resp.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* A header line (type, a number, CRLF) is short; a status or error line
 * from Redis is a sentence. Past this, it is not Redis talking. */
#define LINE_MAX_BYTES 65536

void presence__resp_init(presence__resp_reader_t *r,
                         const presence_allocator_t *a, size_t max_bytes,
                         size_t max_elements) {
  memset(r, 0, sizeof *r);
  r->a = a;
  r->max_bytes = max_bytes;
  r->max_elements = max_elements;
}

static void scan_clear(presence__resp_reader_t *r) {
  r->scan = r->pos;
  r->depth = 0;
  r->items = r->slots = r->chars = 0;
}

void presence__resp_reset(presence__resp_reader_t *r) {
  r->len = r->pos = 0;
  r->failed = false;
  r->err[0] = '\0';
  scan_clear(r);
}

void presence__resp_fini(presence__resp_reader_t *r) {
  presence__free(r->a, r->buf);
  r->buf = NULL;
  r->cap = 0;
  presence__resp_reset(r);
}

int presence__resp_space(presence__resp_reader_t *r, size_t want, char **p,
                         size_t *n) {
  if (r->cap - r->len < want && r->pos > 0) {
    /* Replies before pos were consumed: slide the rest to the front. */
    memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    r->len -= r->pos;
    r->scan -= r->pos;
    r->pos = 0;
  }
  if (r->cap - r->len < want) {
    size_t ncap = r->cap ? r->cap * 2 : 16384;
    while (ncap - r->len < want)
      ncap *= 2;
    char *nb = presence__realloc(r->a, r->buf, ncap);
    if (!nb) return PRESENCE_ENOMEM;
    r->buf = nb;
    r->cap = ncap;
  }
  *p = r->buf + r->len;
  *n = r->cap - r->len;
  return 0;
}

void presence__resp_commit(presence__resp_reader_t *r, size_t n) {
  r->len += n;
}

int presence__resp_feed(presence__resp_reader_t *r, const char *data,
                        size_t n) {
  char *p;
  size_t room;
  if (!n) return 0;
  int rc = presence__resp_space(r, n, &p, &room);
  if (rc) return rc;
  memcpy(p, data, n);
  presence__resp_commit(r, n);
  return 0;
}

/* msg, then v when it is not -1. */
static int fail(presence__resp_reader_t *r, const char *msg, long long v) {
  r->failed = true;
  if (v == -1)
    snprintf(r->err, sizeof r->err, "%s", msg);
  else
    snprintf(r->err, sizeof r->err, "%s %lld", msg, v);
  return PRESENCE_ESTORE;
}

/* A RESP number: an optional '-' and 1-19 digits, nothing else. */
static bool number(const char *p, const char *end, long long *v) {
  bool neg = p < end && *p == '-';
  if (neg) p++;
  if (p == end || end - p > 19) return false;
  unsigned long long u = 0;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9') return false;
    u = u * 10 + (unsigned)(*p - '0');
  }
  if (u > (unsigned long long)LLONG_MAX) return false;
  *v = neg ? -(long long)u : (long long)u;
  return true;
}

/* 1: the reply at pos ends at scan; 0: more bytes needed; < 0: refused. */
static int scan(presence__resp_reader_t *r) {
  for (;;) {
    size_t p = r->scan;
    if (p >= r->len) break;
    const char *b = r->buf;
    const char *nl = memchr(b + p, '\n', r->len - p);
    if (!nl) {
      if (r->len - p > LINE_MAX_BYTES)
        return fail(r, "a line longer than (bytes)", LINE_MAX_BYTES);
      break;
    }
    if (nl == b + p || nl[-1] != '\r')
      return fail(r, "a line not ended by CRLF", -1);
    const char *line = b + p + 1, *line_end = nl - 1;
    size_t next = (size_t)(nl - b) + 1;
    long long v = 0;
    if (++r->items > r->max_elements)
      return fail(r, "a reply of more items than",
                  (long long)r->max_elements);
    switch (b[p]) {
    case '+':
    case '-':
      r->chars += (size_t)(line_end - line) + 1;
      break;
    case ':':
      if (!number(line, line_end, &v))
        return fail(r, "a malformed integer", -1);
      break;
    case '$':
      if (!number(line, line_end, &v) || v < -1)
        return fail(r, "a malformed bulk length", -1);
      if (v > (long long)r->max_bytes)
        return fail(r, "a string too long, bytes:", v);
      if (v >= 0) {
        if (r->len - next < (size_t)v + 2) {
          r->items--; /* counted again when the rest arrives */
          goto more;
        }
        if (b[next + (size_t)v] != '\r' || b[next + (size_t)v + 1] != '\n')
          return fail(r, "a string not ended by CRLF", -1);
        r->chars += (size_t)v + 1;
        next += (size_t)v + 2;
      }
      break;
    case '*':
      if (!number(line, line_end, &v) || v < -1)
        return fail(r, "a malformed array length", -1);
      if (v > (long long)r->max_elements)
        return fail(r, "an array too long, elements:", v);
      if (v > 0) {
        if (r->depth == PRESENCE__RESP_MAX_DEPTH)
          return fail(r, "arrays nested deeper than",
                      PRESENCE__RESP_MAX_DEPTH);
        r->slots += (size_t)v;
        r->left[r->depth++] = v;
        r->scan = next;
        continue; /* the array ends with its last element */
      }
      break;
    default:
      return fail(r, "an unknown reply type, byte",
                  (long long)(unsigned char)b[p]);
    }
    r->scan = next;
    while (r->depth > 0 && --r->left[r->depth - 1] == 0)
      r->depth--;
    if (r->depth == 0) return 1;
  }
more:
  if (r->len - r->pos > r->max_bytes)
    return fail(r, "a reply larger than (bytes)", (long long)r->max_bytes);
  return 0;
}

typedef struct build {
  const char *p;
  redisReply *items;
  redisReply **slots;
  char *chars;
} build_t;

/* The bytes were checked by scan: nothing here can fail. */
static redisReply *build_one(build_t *b) {
  redisReply *rep = b->items++;
  memset(rep, 0, sizeof *rep);
  char t = *b->p++;
  /* The CR of the line's CRLF, as the scan found it: the first LF. */
  const char *nl = b->p;
  while (*nl != '\n')
    nl++;
  nl--;
  long long v = 0;
  switch (t) {
  case '+':
  case '-':
    rep->type = t == '+' ? REDIS_REPLY_STATUS : REDIS_REPLY_ERROR;
    rep->len = (size_t)(nl - b->p);
    rep->str = b->chars;
    memcpy(rep->str, b->p, rep->len);
    rep->str[rep->len] = '\0';
    b->chars += rep->len + 1;
    b->p = nl + 2;
    break;
  case ':':
    number(b->p, nl, &v);
    rep->type = REDIS_REPLY_INTEGER;
    rep->integer = v;
    b->p = nl + 2;
    break;
  case '$':
    number(b->p, nl, &v);
    b->p = nl + 2;
    if (v < 0) {
      rep->type = REDIS_REPLY_NIL;
      break;
    }
    rep->type = REDIS_REPLY_STRING;
    rep->len = (size_t)v;
    rep->str = b->chars;
    memcpy(rep->str, b->p, rep->len);
    rep->str[rep->len] = '\0';
    b->chars += rep->len + 1;
    b->p += rep->len + 2;
    break;
  default: /* '*' */
    number(b->p, nl, &v);
    b->p = nl + 2;
    if (v < 0) {
      rep->type = REDIS_REPLY_NIL;
      break;
    }
    rep->type = REDIS_REPLY_ARRAY;
    rep->elements = (size_t)v;
    rep->element = b->slots;
    b->slots += v;
    for (long long i = 0; i < v; i++)
      rep->element[i] = build_one(b);
    break;
  }
  return rep;
}

int presence__resp_next(presence__resp_reader_t *r, redisReply **out) {
  *out = NULL;
  if (r->failed) return PRESENCE_ESTORE;
  int rc = scan(r);
  if (rc <= 0) return rc;
  size_t size = r->items * sizeof(redisReply) +
                r->slots * sizeof(redisReply *) + r->chars;
  char *block = presence__malloc(r->a, size ? size : 1);
  if (!block) return PRESENCE_ENOMEM;
  build_t b = {r->buf + r->pos, (redisReply *)(void *)block, NULL, NULL};
  b.slots = (redisReply **)(void *)(b.items + r->items);
  b.chars = (char *)(b.slots + r->slots);
  *out = build_one(&b);
  r->pos = r->scan;
  if (r->pos == r->len) r->pos = r->len = 0;
  scan_clear(r);
  return 1;
}

void presence__resp_free(const presence_allocator_t *a, redisReply *rep) {
  presence__free(a, rep);
}

size_t presence__resp_dec(char *out, uint64_t v) {
  char t[20];
  size_t n = 0;
  do {
    t[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t i = 0; i < n; i++)
    out[i] = t[n - 1 - i];
  return n;
}

size_t presence__resp_head(char *out, char type, uint64_t n) {
  out[0] = type;
  size_t len = 1 + presence__resp_dec(out + 1, n);
  out[len++] = '\r';
  out[len++] = '\n';
  return len;
}

static size_t digits(size_t v) {
  size_t n = 1;
  while (v >= 10) {
    v /= 10;
    n++;
  }
  return n;
}

int presence__resp_append(const presence_allocator_t *a, char **buf,
                          size_t *len, size_t *cap, int argc,
                          const char *const *argv, const size_t *lens) {
  size_t need = 3 + digits((size_t)argc);
  for (int i = 0; i < argc; i++) {
    size_t l = lens ? lens[i] : strlen(argv[i]);
    need += 5 + digits(l) + l;
  }
  if (*cap - *len < need) {
    size_t ncap = *cap ? *cap * 2 : 256;
    while (ncap - *len < need)
      ncap *= 2;
    char *nb = presence__realloc(a, *buf, ncap);
    if (!nb) return PRESENCE_ENOMEM;
    *buf = nb;
    *cap = ncap;
  }
  char *p = *buf + *len;
  p += presence__resp_head(p, '*', (uint64_t)argc);
  for (int i = 0; i < argc; i++) {
    size_t l = lens ? lens[i] : strlen(argv[i]);
    p += presence__resp_head(p, '$', l);
    memcpy(p, argv[i], l);
    p += l;
    *p++ = '\r';
    *p++ = '\n';
  }
  *len = (size_t)(p - *buf);
  return 0;
}
