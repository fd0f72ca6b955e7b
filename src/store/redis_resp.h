/* SPDX-License-Identifier: MIT */
/*
 * RESP2, both ways, for the Redis connection layer: a bounded reply reader
 * and the command formatter. No I/O: bytes in, replies out.
 *
 * Replies are hiredis's redisReply (the type only: the store and the fuzzer
 * already read that shape), but built here, each in one allocation from the
 * host's allocator: the tree, its element vectors and its strings. Free one
 * with presence__resp_free. Every string is NUL-terminated after its len
 * bytes; status, error and string replies have str, nil and integer replies
 * have str == NULL.
 *
 * Why our own reader rather than hiredis's redisReader: hiredis 0.14 sizes
 * an array from its header before any element arrives (a reply announcing
 * 320,000,000 elements allocates 2.5 GB of pointers), grows its input
 * buffer with malloc without a bound, and allocates every element apart.
 * This one scans a reply whole (resumably, so each byte is looked at once
 * however it is split across reads) before building anything, refuses past
 * the limits at the header that announces them, and builds the reply in one
 * block sized by the scan.
 */
#ifndef PRESENCE_REDIS_RESP_H
#define PRESENCE_REDIS_RESP_H

#include "core/internal.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

/* Nesting the store's replies need is 4 (XREAD: streams, stream, entries,
 * entry, fields); 8 leaves room and bounds the scan's stack. */
#define PRESENCE__RESP_MAX_DEPTH 8

typedef struct presence__resp_reader {
  const presence_allocator_t *a;
  size_t max_bytes;    /* of one reply on the wire */
  size_t max_elements; /* items in one reply, arrays and their elements */
  char *buf;
  size_t len, cap;
  size_t pos; /* start of the reply being scanned */
  /* The scan of the reply at pos, resumed where the bytes ran out. */
  size_t scan;
  long long left[PRESENCE__RESP_MAX_DEPTH]; /* elements still to come */
  int depth;
  size_t items, slots, chars; /* the block the reply will need */
  bool failed;
  char err[96];
} presence__resp_reader_t;

void presence__resp_init(presence__resp_reader_t *r,
                         const presence_allocator_t *a, size_t max_bytes,
                         size_t max_elements);
/* Forget buffered bytes and any error (a new connection). */
void presence__resp_reset(presence__resp_reader_t *r);
void presence__resp_fini(presence__resp_reader_t *r);

/* Room for at least want more bytes at the end of the buffer: *p, *n. Then
 * presence__resp_commit the bytes written there. PRESENCE_ENOMEM. */
int presence__resp_space(presence__resp_reader_t *r, size_t want, char **p,
                         size_t *n);
void presence__resp_commit(presence__resp_reader_t *r, size_t n);
/* Copy n bytes in (the fuzzer, tests). */
int presence__resp_feed(presence__resp_reader_t *r, const char *data,
                        size_t n);

/* The next complete reply: 1 and *out, 0 if more bytes are needed, or
 * PRESENCE_ESTORE for a protocol error or a reply past the limits (r->err
 * says which; the connection must then be dropped) or PRESENCE_ENOMEM. */
int presence__resp_next(presence__resp_reader_t *r, redisReply **out);

void presence__resp_free(const presence_allocator_t *a, redisReply *rep);

/* v in decimal at out (room for 20 digits), no terminator: its length.
 * Every argument of every command sent has its length written so, and
 * printf's family was ~6.7 % of presenced's CPU per status change
 * on the Redis store (perf, 2026-12-05). */
size_t presence__resp_dec(char *out, uint64_t v);
/* A RESP header at out: type ('*' an array, '$' a bulk string), n in
 * decimal, \r\n (room for 23 bytes, no terminator): its length. */
size_t presence__resp_head(char *out, char type, uint64_t n);

/* RESP for one command: "*argc\r\n$len\r\narg\r\n...". lens may be NULL
 * (strlen). Appended to *buf (*len bytes used of *cap, grown through a).
 * 0 or PRESENCE_ENOMEM. */
int presence__resp_append(const presence_allocator_t *a, char **buf,
                          size_t *len, size_t *cap, int argc,
                          const char *const *argv, const size_t *lens);

#endif
