/* SPDX-License-Identifier: MIT */
/*
 * Interest between the workers of one machine (redis_interest.c): what the
 * log router (redis_route.c) asks of the table presence_redis.h declares.
 */
#ifndef PRESENCE_REDIS_INTEREST_H
#define PRESENCE_REDIS_INTEREST_H

#include "presence_redis.h"

#include <stdbool.h>
#include <stdint.h>

/* Counters per worker: keys hash into this many (a power of two). 2^18
 * counters of 4 bytes: 1 MiB per worker, touched page by page. */
#define INTEREST_SLOTS (1u << 18)

uint32_t presence__interest_workers(const presence_redis_interest_t *in);
uint64_t presence__interest_hash(presence_redis_interest_kind_t kind,
                                 const char *key);
/* Whether worker slot counts ALL; whether it counts a key of hash h. */
bool presence__interest_all(const presence_redis_interest_t *in,
                            uint32_t slot);
bool presence__interest_has(const presence_redis_interest_t *in,
                            uint32_t slot, uint64_t h);
/* The key an event is routed by: 1 with its hash in *h, or 0 when the event
 * goes to every worker (its type is not keyed). */
int presence__interest_key(const presence_event_t *ev, uint64_t *h);

#endif
