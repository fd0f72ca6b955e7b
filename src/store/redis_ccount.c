/* SPDX-License-Identifier: MIT */
/*
 * A channel's member count across shards (docs/internals/redis.md, "A
 * channel's count across shards"). In S shards a channel's members live in
 * their users' shards, and the script, which cannot leave its shard's slot
 * (Redis Cluster refuses a cross-slot script), counts only its shard's
 * members into each channel event. The store sums instead: for each channel
 * this instance tracks (presence_redis_channel_track: the channels its
 * clients joined or observe), it keeps every shard's latest count with the
 * shard's sequence number it holds at, and gives each channel event the
 * sum. A count is replaced only by a newer one (a larger seq), so an event
 * read twice (the write's reply, then the log) or a query answered after the
 * log moved on never takes a shard back. No I/O here: redis_shard.c asks
 * the shards and feeds the events in.
 */
#include "store/redis_ccount.h"

#include <stddef.h>
#include <string.h>

int presence__ccounts_init(presence__ccounts_t *cs,
                           const presence_allocator_t *a, uint32_t shards) {
  cs->shards = shards;
  cs->a = a;
  return presence__table_init(&cs->t, a, offsetof(presence__ccount_t, name));
}

void presence__ccounts_free(presence__ccounts_t *cs) {
  size_t pos = 0;
  presence__ccount_t *c;
  while ((c = presence__table_next(&cs->t, &pos))) presence__free(cs->a, c);
  presence__table_free(&cs->t);
}

presence__ccount_t *presence__ccount_find(const presence__ccounts_t *cs,
                                          const char *name) {
  size_t len = strlen(name);
  if (!cs->t.slots || len > PRESENCE_CHANNEL_MAX) return NULL;
  return presence__table_find(&cs->t, name, len, presence__hash(name, len));
}

presence__ccount_t *presence__ccount_track(presence__ccounts_t *cs,
                                           const char *name, int delta,
                                           int *rc) {
  *rc = 0;
  size_t len = strlen(name);
  if (!len || len > PRESENCE_CHANNEL_MAX) {
    *rc = PRESENCE_ECHANNEL;
    return NULL;
  }
  uint32_t hash = presence__hash(name, len);
  presence__ccount_t *c = presence__table_find(&cs->t, name, len, hash);
  if (delta < 0) {
    if (c && --c->refs == 0) {
      presence__table_remove(&cs->t, c);
      presence__free(cs->a, c);
    }
    return NULL;
  }
  if (c) {
    c->refs++;
    return NULL;
  }
  if ((*rc = presence__table_make_room(&cs->t))) return NULL;
  c = presence__malloc(cs->a, sizeof *c + cs->shards * sizeof c->sh[0]);
  if (!c) {
    *rc = PRESENCE_ENOMEM;
    return NULL;
  }
  memset(c, 0, sizeof *c);
  c->k.hash = hash;
  c->k.len = (uint8_t)len;
  memcpy(c->name, name, len + 1);
  c->refs = 1;
  c->unknown = cs->shards;
  for (uint32_t i = 0; i < cs->shards; i++)
    c->sh[i] = (presence__ccount_shard_t){0, UINT64_MAX, 0};
  presence__table_insert(&cs->t, c); /* cannot fail after make_room */
  return c;
}

void presence__ccount_learn(presence__ccounts_t *cs, presence__ccount_t *c,
                            uint32_t i, uint64_t count, uint64_t shown,
                            uint64_t seq) {
  if (i >= cs->shards || count == UINT64_MAX) return;
  presence__ccount_shard_t *s = &c->sh[i];
  if (s->count == UINT64_MAX) {
    c->unknown--;
  } else if (seq <= s->seq) {
    return;
  }
  s->seq = seq;
  s->count = count;
  s->shown = shown <= count ? shown : count;
}

uint64_t presence__ccount_sum(const presence__ccounts_t *cs,
                              const presence__ccount_t *c) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < cs->shards; i++)
    if (c->sh[i].count != UINT64_MAX) n += c->sh[i].count;
  return n;
}

uint64_t presence__ccount_sum_shown(const presence__ccounts_t *cs,
                                    const presence__ccount_t *c) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < cs->shards; i++)
    if (c->sh[i].count != UINT64_MAX) n += c->sh[i].shown;
  return n;
}
