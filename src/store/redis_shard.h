/* SPDX-License-Identifier: MIT */
/* The Redis store in virtual shards (redis_shard.c) and the Redis Cluster
 * slot arithmetic it needs. */
#ifndef PRESENCE_REDIS_SHARD_H
#define PRESENCE_REDIS_SHARD_H

#include "core/internal.h"
#include "presence_redis.h"

#include <stddef.h>
#include <stdint.h>

/* Redis Cluster's slot of a key (0..16383), hash tags honoured. */
unsigned presence__redis_slot(const char *key, size_t len);
/* A short tag (no braces) whose slot is the middle of the i-th of n equal
 * slot ranges, (2i + 1) * 16384 / 2n. 0 or EINVAL. */
int presence__redis_shard_tag(uint32_t i, uint32_t n, char *out, size_t cap);
/* The shard of a user: FNV-1a 64 of the id, mod n (part of the layout:
 * every instance must agree). */
uint32_t presence__redis_user_shard(const char *user, size_t len, uint32_t n);

/* The sharded store (opts->shards > 1 or opts->cluster). */
int presence__rshards_new(const presence_redis_options_t *opts,
                          presence_store_t **out);
int presence__rshards_is(const presence_store_t *s);
uint32_t presence__rshards_count(const presence_store_t *s);
presence_store_t *presence__rshards_sub(const presence_store_t *s, uint32_t i);
/* One completion for a call sent to every shard: pass fan_done with the
 * fan as each shard's callback; done(ud, first failure or 0) follows the
 * last. NULL: out of memory. */
void *presence__rshards_fan(presence_store_t *s, void (*done)(void *, int),
                            void *ud);
void presence__rshards_fan_done(void *fan, int status);
/* A kick: the shards are asked in turn until one holds the session. */
int presence__rshards_kick(presence_store_t *s, const char *session_id,
                           void (*done)(void *ud, int status), void *ud);

/* From redis.c: one single-shard store (what presence_store_redis_new makes
 * without shards), and, for Redis Cluster, the seed nodes it falls back to
 * ("host:port,host:port", any may be a URL) and the mode in which it
 * follows MOVED. */
int presence__redis_new_one(const presence_redis_options_t *opts,
                            presence_store_t **out);
int presence__redis_set_cluster(presence_store_t *s, const char *seeds);

#endif
