/* SPDX-License-Identifier: MIT */
/*
 * WebSocket subscribers: the fan-out sink that turns each user transition
 * into one `presence` frame to every connection watching that user.
 *
 * An index maps each watched user id to the connections subscribed to it.
 * A frame is serialised once (WebSocket header included: server frames are
 * unmasked, so the bytes are the same for everyone) and shared by every
 * subscriber's write.
 */
#include "server/server.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

const char *watch_user(const watch_entry_t *e) {
  return e->key;
}

watch_entry_t *watch_add(srv_t *s, const char *user_id, conn_t *c) {
  return subindex_add(&s->watchers, user_id, c);
}

void watch_remove(srv_t *s, watch_entry_t *e, conn_t *c) {
  subindex_remove(&s->watchers, e, c);
}

/* One user transition to every subscriber of that user. */
static void on_user_event(srv_t *s, const presence_event_t *ev, void *ud) {
  (void)ud;
  /* Exactly one frame when what a watcher sees changes, none otherwise. */
  if (!presence_event_watcher_visible(ev)) return;
  watch_entry_t *e = map_get(&s->watchers, ev->user_id);
  if (!e || e->n == 0) return;
  /* One watcher (the common case): the frame is made in its write queue
   * (conn_frame_begin), not made aside and copied there. */
  if (e->n == 1) {
    conn_t *c = e->subs[0];
    size_t mark;
    buf_t *q;
    /* conn_frame_begin refuses a closing connection. */
    if (c->kind == CONN_WS && c->u.ws && (q = conn_frame_begin(c, &mark))) {
      json_frame_presence_change(q, ev);
      conn_frame_end(c, mark, WS_OP_TEXT);
      return;
    }
  }
  buf_t *b = &s->scratch;
  buf_reset(b);
  json_frame_presence_change(b, ev);
  if (buf_failed(b)) return;
  subindex_send(s, &s->watchers, e, b, NULL, NULL, NULL);
}

const fanout_sink_t watch_sink = {
    .name = "subscribers",
    .types = FANOUT_TYPE(PRESENCE_EV_USER_ONLINE) |
             FANOUT_TYPE(PRESENCE_EV_USER_IDLE) |
             FANOUT_TYPE(PRESENCE_EV_USER_OFFLINE) |
             FANOUT_TYPE(PRESENCE_EV_USER_AVAILABILITY) |
             FANOUT_TYPE(PRESENCE_EV_USER_MESSAGE) |
             FANOUT_TYPE(PRESENCE_EV_SESSION_CONNECTED) |
             FANOUT_TYPE(PRESENCE_EV_SESSION_DISCONNECTED) |
             FANOUT_TYPE(PRESENCE_EV_SESSION_STATUS),
    /* A session event that comes with a user transition shows watchers
     * nothing the user event does not (presence_event_watcher_visible). */
    .skip_flags = PRESENCE_EVENT_USER_FOLLOWS,
    .on_event = on_user_event,
};
