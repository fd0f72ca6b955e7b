/* SPDX-License-Identifier: MIT */
/* The Redis store in virtual shards (redis_shard.c) and the Redis Cluster
 * slot arithmetic it needs. */
#ifndef PRESENCE_REDIS_SHARD_H
#define PRESENCE_REDIS_SHARD_H

#include "core/internal.h"
#include "presence_redis.h"
#include "store/redis_conn.h"
#include "store/redis_feed.h"

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
/* presence_redis_channel_track on a sharded store. */
int presence__rshards_shown(presence_store_t *s, const char *channel,
                            const char *user_id, uint64_t shard_shown,
                            uint64_t *out);
int presence__rshards_track(presence_store_t *s, const char *channel,
                            int delta);
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

/* Redis Cluster routing by the slot map (CLUSTER SLOTS, kept by
 * redis_shard.c). route: the node serving slot now when the map has one
 * other than failed_host:failed_port (0, *host valid until the next
 * refresh), else nonzero; either way the map is refreshed soon. */
typedef int (*presence__redis_route_fn)(void *ud, unsigned slot,
                                        const char *failed_host,
                                        int failed_port, const char **host,
                                        int *port);
/* A shard store routed by fn: it does not connect at attach, but at
 * presence__redis_start_at (host NULL: where its URL says, the first seed). */
void presence__redis_set_router(presence_store_t *s,
                                presence__redis_route_fn fn, void *ud);
void presence__redis_start_at(presence_store_t *s, const char *host, int port);
/* What a shard store connects with (URL with credentials, TLS, timeouts):
 * for the slot map's connection. Valid while the store lives. */
void presence__redis_conn_params(presence_store_t *s,
                                 const presence__redis_url_t **url,
                                 const presence_redis_tls_t **tls,
                                 const presence_redis_options_t **o);

/* presenced --workers on shards: the store's one feed per follower
 * (redis_feed.c), made by the sharded store at attach and shared by its
 * shards. share_feed: shard s reads for the followers through feed (it
 * routes and forwards its own replies to it; log: say so once); feed_take:
 * a fed reply, taken (1) if it names s's streams, else 0; feed_ended: the
 * input ended, s reads its log itself from the last entry it got. */
void presence__redis_share_feed(presence_store_t *s, presence__rfeed_t *feed,
                                bool log);
int presence__redis_feed_take(presence_store_t *s, redisReply *rep);
void presence__redis_feed_ended(presence_store_t *s);

#endif
