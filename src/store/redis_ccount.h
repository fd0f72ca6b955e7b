/* SPDX-License-Identifier: MIT */
/* A channel's member count across the store's shards (redis_ccount.c). */
#ifndef PRESENCE_REDIS_CCOUNT_H
#define PRESENCE_REDIS_CCOUNT_H

#include "core/internal.h"

#include <stdbool.h>
#include <stdint.h>

/* What this instance last learned of one shard's count of a channel: the
 * count after the shard's event seq (from an event of that shard's log, or
 * from a query that read the count and the shard's counter in one script
 * call). count UINT64_MAX: not known yet. */
typedef struct presence__ccount_shard {
  uint64_t seq;
  uint64_t count;
  uint64_t shown; /* of them, not invisible (the count members are shown) */
} presence__ccount_shard_t;

typedef struct presence__ccount {
  presence__hkey_t k;
  uint32_t refs;    /* presence_redis_channel_track's */
  uint32_t unknown; /* shards whose count is not known */
  char name[PRESENCE_CHANNEL_MAX + 1];
  presence__ccount_shard_t sh[];
} presence__ccount_t;

typedef struct presence__ccounts {
  presence__table_t t;
  uint32_t shards;
  const presence_allocator_t *a;
} presence__ccounts_t;

int presence__ccounts_init(presence__ccounts_t *cs,
                           const presence_allocator_t *a, uint32_t shards);
void presence__ccounts_free(presence__ccounts_t *cs);
presence__ccount_t *presence__ccount_find(const presence__ccounts_t *cs,
                                          const char *name);
/* Count one more (delta > 0) or one fewer (delta < 0) tracker of name.
 * Returns the entry when it was just made (every shard unknown: the caller
 * asks each shard), else NULL (an entry with no tracker left is gone).
 * *rc: 0, ENOMEM or ECHANNEL (a name over PRESENCE_CHANNEL_MAX). */
presence__ccount_t *presence__ccount_track(presence__ccounts_t *cs,
                                           const char *name, int delta,
                                           int *rc);
/* Learn shard i's count after its seq: kept when newer than what is known
 * (an older one is what the log already moved past). */
void presence__ccount_learn(presence__ccounts_t *cs, presence__ccount_t *c,
                            uint32_t i, uint64_t count, uint64_t shown,
                            uint64_t seq);
/* The sum of the known shards' counts. */
uint64_t presence__ccount_sum(const presence__ccounts_t *cs,
                              const presence__ccount_t *c);
/* The sum of the known shards' shown counts. */
uint64_t presence__ccount_sum_shown(const presence__ccounts_t *cs,
                                    const presence__ccount_t *c);

#endif
