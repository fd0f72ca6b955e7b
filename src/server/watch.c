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

struct watch_entry {
  const char *user_id; /* the map's copy of the key */
  conn_t **subs;
  uint32_t n, cap;
  uint8_t busy; /* being iterated: freed by the iterator when emptied */
};

const char *watch_user(const watch_entry_t *e) {
  return e->user_id;
}

static void entry_destroy(srv_t *s, watch_entry_t *e) {
  assert(e->n == 0 && !e->busy);
  map_del(&s->watchers, e->user_id);
  free(e->subs);
  free(e);
}

watch_entry_t *watch_add(srv_t *s, const char *user_id, conn_t *c) {
  watch_entry_t *e = map_get(&s->watchers, user_id);
  if (!e) {
    e = calloc(1, sizeof *e);
    if (!e) return NULL;
    if (map_put(&s->watchers, user_id, e) != 0) {
      free(e);
      return NULL;
    }
    e->user_id = map_key(&s->watchers, user_id);
  }
  if (e->n == e->cap) {
    uint32_t cap = e->cap ? e->cap * 2 : 2;
    conn_t **n = realloc(e->subs, cap * sizeof *n);
    if (!n) {
      if (e->n == 0 && !e->busy) entry_destroy(s, e);
      return NULL;
    }
    e->subs = n;
    e->cap = cap;
  }
  e->subs[e->n++] = c;
  return e;
}

void watch_remove(srv_t *s, watch_entry_t *e, conn_t *c) {
  for (uint32_t i = 0; i < e->n; i++) {
    if (e->subs[i] == c) {
      e->subs[i] = e->subs[--e->n];
      break;
    }
  }
  if (e->n == 0 && !e->busy) entry_destroy(s, e);
}

/* One user transition to every subscriber of that user. */
static void on_user_event(srv_t *s, const presence_event_t *ev, void *ud) {
  (void)ud;
  /* Exactly one frame when what a watcher sees changes, none otherwise. */
  if (!presence_event_watcher_visible(ev)) return;
  watch_entry_t *e = map_get(&s->watchers, ev->user_id);
  if (!e || e->n == 0) return;
  buf_t *b = &s->scratch;
  buf_reset(b);
  json_frame_presence_change(b, ev);
  if (buf_failed(b)) return;
  uint8_t hdr[10];
  size_t hl = ws_frame_header(hdr, WS_OP_TEXT, 1, b->len);
  shbuf_t *sb = shbuf_new(hl + b->len);
  if (!sb) {
    srv_error(s, "out_of_memory", "cannot fan out a presence change");
    return;
  }
  memcpy(sb->data, hdr, hl);
  memcpy(sb->data + hl, b->data, b->len);
  /* Backwards, because a write may close a slow subscriber, which removes
   * it by moving the last (already served) subscriber into its slot. */
  e->busy = 1;
  for (uint32_t i = e->n; i-- > 0;) {
    if (i >= e->n) continue;
    conn_t *c = e->subs[i];
    if (c->kind == CONN_WS && !c->closing) conn_write_shared(c, sb);
  }
  e->busy = 0;
  shbuf_unref(sb);
  if (e->n == 0) entry_destroy(s, e);
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
    .on_event = on_user_event,
};
