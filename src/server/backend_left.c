/* SPDX-License-Identifier: MIT */
/*
 * Channel removals told to backends (docs/protocol.md 5.4): when
 * DELETE /v1/channels/{name}/members/{user_id} takes a session that a
 * backend reports (GET /v1/backend) out of a channel, that backend gets
 * {"type":"left","session":...,"channel":...,"reason":"kicked"}.
 *
 * Why the backend must hear of it: its SDK keeps each session's channels in
 * its own list and joins them all again at every re-assert (after any
 * reconnect), so a removal it never heard of is silently undone, and until
 * then its next op on the channel answers not_joined. A WebSocket client is
 * told the same by its own `left` frame (channels.c, after_removal).
 *
 * Who tells whom:
 *   - the instance that took the DELETE reads the user's memberships first
 *     (api_channels.c): the sessions in the channel that are its backends'
 *     are told once the store has removed them;
 *   - on Redis every other instance learns of the removal from the store's
 *     events (a channel.leave with reason kicked and no session): it looks
 *     up the user's sessions, and each of its own backends' sessions whose
 *     local record still had the channel (origin_channel_removed's probe)
 *     is told. The instance of the DELETE finds no such record (the store
 *     dropped its sessions' at the removal), so nobody is told twice.
 *
 * A detached origin cannot be told at once: the notice is held here, by the
 * origin's name, and sent when a connection for that name comes back,
 * before its welcome. The SDKs read frames in order and re-assert when they
 * read the welcome, so the re-assert no longer carries the channel. Held
 * notices are bounded (HELD_MAX, the oldest go first): an origin that never
 * comes back cannot grow them without end.
 */
#include "server/server.h"

#ifdef PRESENCED_HAVE_REDIS
#include "presence_redis.h"
#endif

#include <stdlib.h>
#include <string.h>

/* Notices held for detached origins, all origins together. */
#define HELD_MAX 16384

typedef struct held {
  struct held *next;
  /* one allocation, after the struct; code "" for a removal, else a join
   * or update the store refused (origin.c) */
  char *origin, *session, *channel, *code, *message;
} held_t;

struct backend_held {
  held_t *head, *tail; /* oldest first */
  uint32_t n;
};

static void held_drop_first(struct backend_held *h) {
  held_t *e = h->head;
  h->head = e->next;
  if (!h->head) h->tail = NULL;
  h->n--;
  free(e);
}

/* Link e (made by held_new) at the end of the list, the oldest dropped
 * when it is full. */
static void held_link(srv_t *s, held_t *e) {
  struct backend_held *h = s->backend_held;
  if (!h && !(h = s->backend_held = calloc(1, sizeof *h))) {
    free(e);
    return;
  }
  if (h->n >= HELD_MAX) {
    srv_error(s, "backend_left_lost",
              "%u channel removals held for detached origins: the oldest "
              "dropped", (unsigned)HELD_MAX);
    held_drop_first(h);
  }
  if (h->tail)
    h->tail->next = e;
  else
    h->head = e;
  h->tail = e;
  h->n++;
}

static held_t *held_new(srv_t *s, const char *origin, const char *session_id,
                        const char *channel, const char *code,
                        const char *message) {
  if (!code) code = "";
  if (!message) message = "";
  size_t lo = strlen(origin) + 1, ls = strlen(session_id) + 1,
         lc = strlen(channel) + 1, lk = strlen(code) + 1,
         lm = strlen(message) + 1;
  held_t *e = malloc(sizeof *e + lo + ls + lc + lk + lm);
  if (!e) {
    srv_error(s, "backend_left_lost",
              "out of memory: a channel removal for origin %s not held",
              origin);
    return NULL;
  }
  e->next = NULL;
  e->origin = (char *)(e + 1);
  e->session = e->origin + lo;
  e->channel = e->session + ls;
  e->code = e->channel + lc;
  e->message = e->code + lk;
  memcpy(e->origin, origin, lo);
  memcpy(e->session, session_id, ls);
  memcpy(e->channel, channel, lc);
  memcpy(e->code, code, lk);
  memcpy(e->message, message, lm);
  return e;
}

#ifdef PRESENCED_HAVE_REDIS
typedef struct hold_req {
  srv_t *s;
  held_t *e;
} hold_req_t;

/* Redis could not hold it: this instance does, for a connection that comes
 * back here (at shutdown nobody will). */
static void on_redis_hold(void *ud, int status) {
  hold_req_t *q = ud;
  if (status == 0 || status == PRESENCE_ESHUTDOWN)
    free(q->e);
  else
    held_link(q->s, q->e);
  free(q);
}
#endif

void backend_left_hold(srv_t *s, const char *origin, const char *session_id,
                       const char *channel, const char *code,
                       const char *message) {
  held_t *e = held_new(s, origin, session_id, channel, code, message);
  if (!e) return;
#ifdef PRESENCED_HAVE_REDIS
  /* On Redis the origin's next connection may reach another instance:
   * the notice waits in Redis, where that connection's claim takes it
   * (on_claim in backend.c). Here only when Redis cannot take it. */
  hold_req_t *q = s->rstore ? malloc(sizeof *q) : NULL;
  if (q) {
    q->s = s;
    q->e = e;
    presence_redis_origin_notice_t nt = {e->session, e->channel, e->code,
                                         e->message};
    if (presence_redis_origin_hold(s->rstore, e->origin, &nt, on_redis_hold,
                                   q) == 0)
      return;
    free(q);
  }
#endif
  held_link(s, e);
}

void backend_left_release(conn_t *c, const char *origin) {
  struct backend_held *h = c->srv->backend_held;
  if (!h) return;
  held_t **pp = &h->head, *prev = NULL;
  while (*pp) {
    held_t *e = *pp;
    if (strcmp(e->origin, origin) != 0) {
      prev = e;
      pp = &e->next;
      continue;
    }
    backend_notify_left(c, e->session, e->channel,
                        e->code[0] ? e->code : NULL, e->message);
    *pp = e->next;
    if (h->tail == e) h->tail = prev;
    h->n--;
    free(e);
  }
}

void backend_left_free(srv_t *s) {
  struct backend_held *h = s->backend_held;
  if (!h) return;
  while (h->head)
    held_drop_first(h);
  free(h);
  s->backend_held = NULL;
}

/* ---- Removals decided on other instances (Redis) ------------------------- */

typedef struct removal {
  srv_t *s;
  char channel[PRESENCE_CHANNEL_MAX + 1];
} removal_t;

static void on_user_sessions(presence_t *p, int status,
                             const presence_session_info_t *si, size_t n,
                             void *ud) {
  (void)p;
  removal_t *q = ud;
  srv_t *s = q->s;
  /* Every instance's sessions of the user: only ours have a record in the
   * origins' table (origin_channel_removed looks each one up). */
  for (size_t i = 0; status == 0 && s->origins && i < n; i++)
    (void)origin_channel_removed(s, si[i].session_id, q->channel, 1);
  free(q);
}

static void on_channel_leave(srv_t *s, const presence_event_t *ev, void *ud) {
  (void)ud;
  /* A removal: reason kicked, no causing session (as channels.c tells). */
  if (ev->reason != PRESENCE_REASON_KICKED || ev->session_id || !ev->channel ||
      !ev->user_id || !origin_has_backend_sessions(s))
    return;
  removal_t *q = malloc(sizeof *q);
  if (!q) return;
  q->s = s;
  snprintf(q->channel, sizeof q->channel, "%s", ev->channel);
  if (presence_sessions_query(s->p, ev->user_id, on_user_sessions, q) != 0)
    free(q);
}

/* With the embedded store every removal is decided here and told by the
 * DELETE's own path: only a shared store needs the events. */
static int removals_wanted(const srv_t *s) {
  return srv_async(s);
}

const fanout_sink_t backend_left_sink = {
    .name = "backend channel removals",
    .types = FANOUT_TYPE(PRESENCE_EV_CHANNEL_LEAVE),
    .active = removals_wanted,
    .on_event = on_channel_leave,
};
