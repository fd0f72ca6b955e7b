/* SPDX-License-Identifier: MIT */
/*
 * A growable byte buffer for building responses and JSON. Appends never fail
 * silently: on allocation failure the buffer is marked failed, later appends
 * are ignored, and the caller checks buf_failed() once at the end.
 */
#ifndef PRESENCED_BUF_H
#define PRESENCED_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct buf {
  char *data;
  size_t len;
  size_t cap;
  int failed;
} buf_t;

void buf_init(buf_t *b);
void buf_free(buf_t *b);
/* Empty it but keep the allocation (scratch buffers reused per message). */
void buf_reset(buf_t *b);
/* Drop the allocation if it grew past keep bytes, so one huge response does
 * not pin memory for the life of the process. */
void buf_shrink(buf_t *b, size_t keep);
int buf_reserve(buf_t *b, size_t extra);
/* The growing path of buf_append (below). */
void buf_append_slow(buf_t *b, const void *data, size_t len);
/* Inline, with the room check first: JSON frames are built from many small
 * pieces (a status change is about 25 appends, most of them literals whose
 * strlen the compiler then knows), and a call per piece showed in the
 * status-change profile. */
static inline void buf_append(buf_t *b, const void *data, size_t len) {
  if (len < b->cap - b->len && !b->failed) {
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return;
  }
  buf_append_slow(b, data, len);
}
static inline void buf_puts(buf_t *b, const char *s) {
  buf_append(b, s, strlen(s));
}
static inline void buf_putc(buf_t *b, char c) {
  buf_append(b, &c, 1);
}
void buf_printf(buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void buf_put_i64(buf_t *b, int64_t v);
void buf_put_u64(buf_t *b, uint64_t v);
/* A JSON string literal (with quotes), escaping what RFC 8259 requires. The
 * input is assumed to be valid UTF-8 (ids are validated before they get
 * here); bytes are passed through. */
void buf_put_json_str(buf_t *b, const char *s);
void buf_put_json_strn(buf_t *b, const char *s, size_t n);
static inline int buf_failed(const buf_t *b) {
  return b->failed;
}

/*
 * Writing into a reserved region, for the frames written on every
 * transition (json_frame_presence_change): buf_reserve(b, most) once, then
 * p = buf_end(b), the wr_* writers below advance p with no check of their
 * own, and buf_commit(b, p). Piece by piece, each append checks the room,
 * measures its string and terminates the buffer: a watcher's change frame
 * cost ~2,400 instructions that way, a third of a status change's.
 */
static inline char *buf_end(buf_t *b) {
  return b->data + b->len;
}
static inline void buf_commit(buf_t *b, char *p) {
  b->len = (size_t)(p - b->data);
  *p = '\0';
}
/* A string literal (its length known when compiled). */
#define WR_LIT(p, lit)                                                         \
  (memcpy((p), (lit), sizeof(lit) - 1), (p) + sizeof(lit) - 1)
static inline char *wr_mem(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}
#define WR_U64_MAX 20 /* the most wr_u64 writes (wr_i64: one more) */
char *wr_u64(char *p, uint64_t v);
char *wr_i64(char *p, int64_t v);
/* s[0..n) as a JSON string, quotes included: at most 6 * n + 2 bytes. */
char *wr_json_strn(char *p, const char *s, size_t n);

#endif
