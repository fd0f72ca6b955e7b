/* SPDX-License-Identifier: MIT */
/*
 * The session cycle bench_redis and bench_cluster both drive: a slot's
 * stage 0 connects, 1 goes idle, 2 back online, 3 ends; the same four
 * operations in the same order, so the two benches' Redis CPU per
 * operation compare like with like.
 */
#ifndef BENCH_REDIS_SESSION_CYCLE_H
#define BENCH_REDIS_SESSION_CYCLE_H

#include <presence.h>

static inline int session_cycle_step(presence_t *p, int stage, const char *sid,
                                     const char *uid, presence_done_cb done,
                                     void *ud) {
  switch (stage) {
  case 0:
    return presence_session_connect(p, sid, uid, NULL, done, ud);
  case 1:
    return presence_session_set_status(p, sid, PRESENCE_IDLE, done, ud);
  case 2:
    return presence_session_set_status(p, sid, PRESENCE_ONLINE, done, ud);
  default:
    return presence_session_disconnect(p, sid, done, ud);
  }
}

#endif
