/* SPDX-License-Identifier: MIT */
/*
 * What this worker's clients watch, counted in the table the workers of a
 * machine share (presenced --workers; presence_redis.h,
 * presence_redis_interest_t), so the machine's log reader passes this
 * worker only the events it needs: the users its connections subscribed
 * to, the channels they joined or observe, and every event while an event
 * stream is open here or this worker delivers a webhook endpoint.
 *
 * A key is counted when its subscriber index entry is made, before the
 * request that made it asks for its snapshot, so every change the snapshot
 * does not hold reaches this worker; it is uncounted when the entry goes.
 * Without --workers (or after a restart, when this worker reads the log
 * itself) there is no table and these are no-ops.
 */
#include "server/server.h"

#ifdef PRESENCED_HAVE_REDIS
#include "presence_redis.h"

static void count(srv_t *s, presence_redis_interest_kind_t kind,
                  const char *key, int delta) {
  presence_redis_interest_count(s->cfg.interest, s->cfg.worker - 1, kind, key,
                                delta);
}

static void on_user(void *ud, const char *key, int delta) {
  count(ud, PRESENCE_INTEREST_USER, key, delta);
}

/* A channel with subscribers here is also tracked by a store in shards,
 * so its events carry the channel's count, not their shard's (a no-op on
 * one shard). Before the snapshot too: the shards' counts are asked first. */
static void on_channel(void *ud, const char *key, int delta) {
  srv_t *s = ud;
  if (s->cfg.interest && s->cfg.worker)
    count(s, PRESENCE_INTEREST_CHANNEL, key, delta);
  if (s->rstore) (void)presence_redis_channel_track(s->rstore, key, delta);
}

void srv_interest_init(srv_t *s) {
  /* The store opens after this: on_channel looks at s->rstore then. */
  s->channels.on_sub = on_channel;
  s->channels.on_sub_ud = s;
  if (!s->cfg.interest || !s->cfg.worker) return;
  s->watchers.on_sub = on_user;
  s->watchers.on_sub_ud = s;
  s->channels.on_sub = on_channel;
  s->channels.on_sub_ud = s;
}

void srv_interest_all(srv_t *s, int delta) {
  if (s->cfg.interest && s->cfg.worker)
    count(s, PRESENCE_INTEREST_ALL, NULL, delta);
}

#else /* built without hiredis: no Redis store, no workers' log reader */

void srv_interest_init(srv_t *s) {
  (void)s;
}

void srv_interest_all(srv_t *s, int delta) {
  (void)s;
  (void)delta;
}

#endif
