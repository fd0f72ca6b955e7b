/* SPDX-License-Identifier: MIT */
/*
 * The machine's log router (redis_route.c): the reading worker's store
 * passes each follower only the log events its interest table counts.
 */
#ifndef PRESENCE_REDIS_ROUTE_H
#define PRESENCE_REDIS_ROUTE_H

#include "presence_redis.h"
#include "store/redis_decode.h"
#include "store/redis_feed.h"

typedef struct presence__route presence__route_t;

/* A router for feed's followers (follower i is interest slot i + 1), the
 * reader itself being slot self. NULL: no memory. */
presence__route_t *presence__route_new(const presence_allocator_t *a,
                                       presence_redis_interest_t *in,
                                       uint32_t self, uint32_t followers);
void presence__route_free(presence__route_t *r);

/* One XREAD reply of the reader, in three steps: begin (from: the id the
 * read started after), each log entry through route_entry and the kick
 * stream through route_kicks while the reader takes the reply, then end
 * (last: the id of the last entry read) sends each follower its part. */
void presence__route_begin(presence__route_t *r, const char *from);
/* Decodes log entry e into evs as presence__redis_decode_entry does, and
 * adds the events each follower wants to its part. *want: per event of
 * evs, whether the reader's own host wants it. */
int presence__route_entry(presence__route_t *r, redisReply *e,
                          const char *self, presence__redis_events_t *evs,
                          const uint8_t **want);
void presence__route_kicks(presence__route_t *r, const redisReply *stream);
void presence__route_end(presence__route_t *r, presence__rfeed_t *feed,
                         const char *log_key, const char *last,
                         uint64_t now_ms);

/* A position marker (an entry the router sends, never in the log): 1 with
 * the sequence number its id names in *seq, else 0. */
int presence__route_marker(const redisReply *e, uint64_t *seq);

#endif
