/* SPDX-License-Identifier: MIT */
/*
 * The session cycle bench_redis and bench_cluster both drive: a slot's
 * stage 0 connects, 1 goes idle, 2 back online, 3 ends; the same four
 * operations in the same order, so the two benches' Redis CPU per
 * operation compare like with like. Ids are opened as presenced opens its
 * WebSocket sessions' (presence_session_open_random: no cluster-wide claim
 * in shards); session_cycle_chosen_ids set, as a backend's chosen ids
 * (claimed in the id's shard first).
 */
#ifndef BENCH_REDIS_SESSION_CYCLE_H
#define BENCH_REDIS_SESSION_CYCLE_H

#include <presence.h>

static int session_cycle_chosen_ids;

static inline int session_cycle_step(presence_t *p, int stage, const char *sid,
                                     const char *uid, presence_done_cb done,
                                     void *ud) {
  switch (stage) {
  case 0:
    if (session_cycle_chosen_ids)
      return presence_session_connect(p, sid, uid, NULL, done, ud);
    return presence_session_open_random(p, sid, uid, NULL, NULL, NULL, done,
                                        ud);
  case 1:
    return presence_session_set_status(p, sid, PRESENCE_IDLE, done, ud);
  case 2:
    return presence_session_set_status(p, sid, PRESENCE_ONLINE, done, ud);
  default:
    return presence_session_disconnect(p, sid, done, ud);
  }
}

#endif
