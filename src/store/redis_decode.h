/* SPDX-License-Identifier: MIT */
/*
 * The Redis store's decoding of its transition log, apart from the store's
 * state so that a fuzzer can drive it with arbitrary replies.
 *
 * A log entry holds the events of one script call: its id is
 * "<sequence number of the last event>-0", field "k" their count and field
 * "p" the events packed (format in docs/internals/redis.md). A script's
 * reply carries the same three as {code, payload, last seq, count, packed}.
 */
#ifndef PRESENCE_REDIS_DECODE_H
#define PRESENCE_REDIS_DECODE_H

#include "presence.h"
#include "presence_store.h"

#include <hiredis/hiredis.h>

/* Texts events point to that no reply holds: a session id's text made
 * from its 20-byte form (core/uuid.h). */
typedef struct presence__redis_texts {
  struct presence__redis_texts *next;
  size_t n, cap;
  char t[][37];
} presence__redis_texts_t;

/* Events decoded so far; free them with presence__redis_events_free.
 * Their strings point into the replies they came from, which must outlive
 * them, or into texts. */
typedef struct presence__redis_events {
  presence_event_t *ev;
  size_t n, cap;
  presence__redis_texts_t *texts;
  const presence_allocator_t *alloc; /* NULL: libc */
  /* Optional (the machine's log router, redis_route.c): where each event of
   * the last unpack ends in its blob, an offset; room for its count. */
  size_t *ends;
  /* Where the last unpacked blob's first event starts: the header before
   * it (the call's time, epoch and instance) is every event's. */
  size_t header_len;
} presence__redis_events_t;

/* Free what evs holds (ev and texts) with its alloc (free() when alloc is
 * NULL); *evs is emptied, alloc kept. */
void presence__redis_events_free(presence__redis_events_t *evs);

/* No events, the array kept for the next (texts freed). */
void presence__redis_events_clear(presence__redis_events_t *evs);

/* The session index's bucket of session id s (n bytes, n >= 1): the key
 * <prefix>i:<bucket> holds its entry. The script's IX.hash computes the
 * same (string.byte's clamping of positions included); tests plant and
 * look up entries with it. */
#define PRESENCE__REDIS_IX_BUCKETS 16381u
unsigned presence__redis_ixb(const char *s, size_t n);

/* Unpack count events packed in blob (len bytes, blob[len] == '\0', as in
 * every hiredis string), the last numbered last_seq, and append them to
 * out. Events point into blob (not modified). self is this
 * instance's id (events of others get PRESENCE_EVENT_REMOTE). Returns 0,
 * PRESENCE_ESTORE (malformed: nothing appended) or PRESENCE_ENOMEM. */
int presence__redis_unpack(const char *blob, size_t len, uint64_t last_seq,
                           size_t count, const char *self,
                           presence__redis_events_t *out);

/* The same for e, one log entry {id, {field, value, ...}} as XRANGE and
 * XREAD return it. */
int presence__redis_decode_entry(redisReply *e, const char *self,
                                 presence__redis_events_t *out);

/* The same for a script's reply {code, payload, last seq, count, packed};
 * a reply of fewer elements carries no events (0, nothing appended). */
int presence__redis_decode_reply(redisReply *rep, const char *self,
                                 presence__redis_events_t *out);

/* A user query's reply into *info (user_id untouched): 0, a code the
 * script answered, or PRESENCE_ESTORE for a reply of another shape. */
int presence__redis_user_reply(const redisReply *rep,
                               presence_user_info_t *info);

/* ---- between redis.c and the store's other files (redis_lease.c) ------- */

/* Whether s is the Redis store. */
int presence__redis_is(presence_store_t *s);
/* The host's allocator, for what the store's other files allocate after
 * attach (freed before the store is destroyed). */
const presence_allocator_t *presence__redis_allocator(presence_store_t *s);
/* One command on the command connection, in order with the store's own:
 * cb(ud, 0, reply), or (ud, code, reply or NULL) for an error reply (code
 * ESTORE, the reply still given) or a failure. 0, or ESTORE when not
 * connected (cb is not called), ENOMEM. */
int presence__redis_raw(presence_store_t *s, int argc, const char **argv,
                        const size_t *lens,
                        void (*cb)(void *ud, int code, redisReply *rep),
                        void *ud);
/* A query of the script on this (single-shard) store: op and its
 * arguments, the reply to cb as above. 0, ESTORE (not registered) or
 * ENOMEM. */
int presence__redis_op(presence_store_t *s, const char *op, int argc,
                       const char **argv,
                       void (*cb)(void *ud, int code, redisReply *rep),
                       void *ud);
/* fn(ud) each time the (single-shard) store is registered and has
 * re-asserted its sessions. */
void presence__redis_on_ready(presence_store_t *s, void (*fn)(void *ud),
                              void *ud);
const char *presence__redis_prefix(presence_store_t *s);
const char *presence__redis_instance(presence_store_t *s);

#endif
