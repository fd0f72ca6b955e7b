/* SPDX-License-Identifier: MIT */
/*
 * Decoding of backend frames (docs/protocol.md section 5): the text frames
 * an application server sends on GET /v1/backend. Pure: no connection, no
 * server state, so the daemon (backend.c) and the fuzzer (fuzz_bmsg.c) run
 * the same checks.
 *
 * A frame is decoded in two steps: bmsg_decode checks the envelope (type,
 * seq, the array of items and its length); bmsg_op then decodes one item at
 * a time, so a malformed item is refused on its own while the others apply
 * (the protocol's per-op errors) and no array of decoded items is built.
 */
#ifndef PRESENCED_BMSG_H
#define PRESENCED_BMSG_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "presence.h"

typedef enum {
  BMSG_BATCH = 1, /* {"type":"batch","seq":N,"ops":[...]} */
  BMSG_SYNC,      /* {"type":"sync","seq":N,"sessions":[...],"done":bool} */
  BMSG_PING,      /* {"type":"ping"[,"id":...]} */
  BMSG_BYE        /* {"type":"bye"} */
} bmsg_type_t;

typedef enum {
  BOP_OPEN = 1, /* also every item of a sync */
  BOP_STATUS,
  BOP_CLOSE,
  BOP_JOIN,
  BOP_UPDATE,
  BOP_LEAVE
} bop_kind_t;

enum {
  BMSG_OK = 0,
  BMSG_BAD = -1,     /* malformed frame: counts towards the 1008 budget */
  BMSG_TOO_MANY = -2 /* over max_ops: refused whole, not malformed */
};

/* seq is below 2^53: every integer under it is a double of its own, so
 * every JSON reader keeps it exact; 2^53 itself is also what 2^53 + 1 reads
 * as, and a seq that came as 9007199254740993 was acked as ...992. */
#define BMSG_SEQ_MAX 9007199254740991.0
/* Longest device word. */
#define BMSG_DEVICE_MAX 32

typedef struct bmsg {
  cJSON *root;
  int type;           /* bmsg_type_t, on BMSG_OK */
  int has_seq;        /* seq was read (also on some errors, to echo it) */
  uint64_t seq;
  char id[80];        /* PING: the "id" rendered as JSON, "" when absent */
  const cJSON *items; /* BATCH: ops, SYNC: sessions (an array, in root) */
  uint32_t n_items;
  int done;           /* SYNC: the last frame of the list */
  const char *err_code;
  char err_msg[160];
  const uint8_t *src; /* the frame's text, while the frame is applied */
  size_t src_len;
} bmsg_t;

/* One item, decoded. Strings point into the frame's JSON (valid until
 * bmsg_free). */
typedef struct bop {
  int kind;             /* bop_kind_t */
  const char *session;
  const char *user;     /* OPEN */
  int status;           /* PRESENCE_ONLINE / PRESENCE_IDLE, 0: not given */
  const cJSON *meta;    /* OPEN: an object, or NULL */
  const char *device;   /* OPEN: NULL when not given */
  const char *channel;  /* JOIN / UPDATE / LEAVE */
  const cJSON *data;    /* JOIN / UPDATE: an object, or NULL */
  int from_sync;        /* an item of a sync (a re-assert) */
  const bmsg_t *msg;    /* the frame: bop_json's text of meta and data */
  const char *err_code; /* on error: the protocol's per-op code ... */
  const char *err_msg;  /* ... and a static message */
} bop_t;

/*
 * Decode the envelope of data[0..len) into *m. max_ops bounds the items
 * before any of them is looked at. Returns BMSG_OK, BMSG_BAD or
 * BMSG_TOO_MANY; in every case call bmsg_free(m) afterwards.
 */
int bmsg_decode(const uint8_t *data, size_t len, uint32_t max_ops, bmsg_t *m);
/* Decode one item of m->items (an op of a batch, or a session of a sync,
 * which decodes as BOP_OPEN). 0, or -1 with op->err_code and op->err_msg. */
int bmsg_op(const bmsg_t *m, const cJSON *item, bop_t *op);
/* An op's meta or data (v: op->meta or op->data) as the library stores it:
 * compact JSON, the backend's own text (numbers keep every digit), malloc'd.
 * NULL for a NULL v, or when out of memory. */
char *bop_json(const bop_t *op, const cJSON *v);
void bmsg_free(bmsg_t *m);

#endif
