/* SPDX-License-Identifier: MIT */
/*
 * Kicks across instances (Redis store only).
 *
 * The store ends only sessions this instance holds: a backend may call
 * DELETE /v1/sessions/{id} on any instance. The store carries the request
 * (presence_redis_kick: it looks the session up in the whole cluster and,
 * if some instance holds it, passes the id to every instance through the
 * log reader it already runs); the instance whose WebSocket holds the
 * session closes it (reason kicked), which ends the session through the
 * store like any local kick. No Redis key, command or connection here.
 */
#include "server/server.h"

#ifdef PRESENCED_HAVE_REDIS

#include "presence_redis.h"

#include <stdlib.h>
#include <string.h>

typedef struct kick_req {
  struct kick_req *prev, *next; /* pending, for kick_close */
  struct kicker *k;             /* NULL once kick_close answered it */
  void (*done)(srv_t *s, int found, void *ud);
  void *ud;
} kick_req_t;

struct kicker {
  srv_t *s;
  kick_req_t *pending;
  int closing;
};

static void on_kick(void *ud, const char *session_id) {
  struct kicker *k = ud;
  if (k->closing) return;
  if (ws_find(k->s, session_id)) {
    srv_log(k->s, PRESENCE_LOG_INFO, "session %s kicked through Redis",
            session_id);
    ws_kick(k->s, session_id);
    return;
  }
  /* No WebSocket here: it may be a session a backend reported to this
   * instance (GET /v1/backend, PUT /v1/sessions/{id}), which only the
   * store ends, as a kick on the embedded store does. Every instance is
   * told of every kick: only the one holding the session asks the store,
   * not each of them a call that the store would refuse. */
  if (origin_holds(k->s, session_id))
    presence_session_kick(k->s->p, session_id, NULL, NULL);
}

int kick_init(srv_t *s) {
  if (!s->rstore) return 0;
  struct kicker *k = calloc(1, sizeof *k);
  if (!k) return -1;
  k->s = s;
  s->kicker = k;
  return presence_redis_on_kick(s->rstore, on_kick, k) ? -1 : 0;
}

static void unlink_req(struct kicker *k, kick_req_t *q) {
  if (q->prev)
    q->prev->next = q->next;
  else
    k->pending = q->next;
  if (q->next) q->next->prev = q->prev;
  q->prev = q->next = NULL;
}

static void on_kicked(void *ud, int status) {
  kick_req_t *q = ud;
  struct kicker *k = q->k;
  if (!k) { /* answered by kick_close already */
    free(q);
    return;
  }
  unlink_req(k, q);
  q->done(k->s, status == 0 ? 1 : status == PRESENCE_ENOSESSION ? 0 : -1,
          q->ud);
  free(q);
}

int kick_remote(srv_t *s, const char *session_id,
                void (*done)(srv_t *s, int found, void *ud), void *ud) {
  struct kicker *k = s->kicker;
  if (!k || k->closing) return -1;
  kick_req_t *q = calloc(1, sizeof *q);
  if (!q) return -1;
  q->k = k;
  q->done = done;
  q->ud = ud;
  if (presence_redis_kick(s->rstore, session_id, on_kicked, q) != 0) {
    free(q);
    return -1;
  }
  q->next = k->pending;
  if (q->next) q->next->prev = q;
  k->pending = q;
  return 0;
}

/* Before the connections go: requests still waiting are answered now (as
 * failed); the store's later completion of each only frees it. */
void kick_close(srv_t *s) {
  struct kicker *k = s->kicker;
  if (!k || k->closing) return;
  k->closing = 1;
  while (k->pending) {
    kick_req_t *q = k->pending;
    unlink_req(k, q);
    q->k = NULL;
    q->done(s, -1, q->ud);
  }
}

void kick_free(srv_t *s) {
  struct kicker *k = s->kicker;
  if (!k) return;
  kick_close(s);
  if (s->rstore) presence_redis_on_kick(s->rstore, NULL, NULL);
  free(k);
  s->kicker = NULL;
}

#else /* built without hiredis: no Redis store, nothing to relay */

int kick_init(srv_t *s) {
  (void)s;
  return 0;
}
void kick_close(srv_t *s) {
  (void)s;
}
void kick_free(srv_t *s) {
  (void)s;
}
int kick_remote(srv_t *s, const char *session_id,
                void (*done)(srv_t *s, int found, void *ud), void *ud) {
  (void)s;
  (void)session_id;
  (void)done;
  (void)ud;
  return -1;
}

#endif
