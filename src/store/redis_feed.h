/* SPDX-License-Identifier: MIT */
/*
 * The log feed between the workers of one machine (redis_feed.c): the
 * reading worker's store copies each XREAD reply to its followers, whose
 * stores take the log from it instead of reading it from Redis.
 */
#ifndef PRESENCE_REDIS_FEED_H
#define PRESENCE_REDIS_FEED_H

#include "core/internal.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct presence__rfeed presence__rfeed_t;

typedef struct presence__rfeed_config {
  uv_loop_t *loop;
  const presence_allocator_t *alloc;
  int in_fd;           /* a follower's: the replies come here; -1: none */
  const int *out_fds;  /* the reader's: one per follower */
  uint32_t n_out;
  size_t max_reply_bytes, max_reply_elements;
  /* The reader's: gather each follower's messages of one loop turn into one
   * write (a store in shards sends one per shard read); false: each at
   * once (one log: one read per turn, nothing to gather). */
  bool gather;
  /* Each reply received (a follower), as the XREAD callback would get it;
   * then, once, the end of the input (EOF, an error, a bad reply). */
  void (*on_reply)(void *ud, redisReply *rep);
  void (*on_end)(void *ud);
  void *ud;
} presence__rfeed_config_t;

/* Takes the fds (closes them when freed). 0 or ENOMEM. A descriptor that
 * libuv refuses counts as ended (in) or as no follower (out). */
int presence__rfeed_new(const presence__rfeed_config_t *cfg,
                        presence__rfeed_t **out);
/* Copy one reply, its wire bytes, to every follower still connected. */
void presence__rfeed_forward(presence__rfeed_t *f, const char *raw, size_t n);
/* The router's (redis_route.c): one message, in pieces, to follower i
 * alone; cut follower i off (it reads the log itself); how many followers
 * there were, and whether follower i is still connected. */
void presence__rfeed_send(presence__rfeed_t *f, uint32_t i,
                          const uv_buf_t *bufs, unsigned nbufs);
void presence__rfeed_cut(presence__rfeed_t *f, uint32_t i);
uint32_t presence__rfeed_outputs(const presence__rfeed_t *f);
bool presence__rfeed_live(const presence__rfeed_t *f, uint32_t i);
/* Whether a follower's input is still there (it then runs no XREAD). */
bool presence__rfeed_reading(const presence__rfeed_t *f);
void presence__rfeed_stats(const presence__rfeed_t *f, uint64_t *forwarded,
                           uint64_t *received, uint32_t *followers);
void presence__rfeed_free(presence__rfeed_t *f);

#endif
