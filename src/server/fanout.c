/* SPDX-License-Identifier: MIT */
/*
 * The fan-out: the daemon's one subscriber to the engine's events.
 *
 * Everything in presenced that reacts to a presence change is a sink
 * registered here (server.h, fanout_sink_t): the WebSocket subscribers
 * (watch.c), the event streams (sse.c), the webhooks (webhook.c) and the
 * closing of a connection whose session someone else ended (wsconn.c).
 * A sink names the event types it wants and whether it wants every event of
 * the cluster (fed by presence_on_cluster_event, so a change decided on
 * another instance reaches this instance's clients too) or only the events
 * this instance decided (the action callbacks: side effects that must
 * happen once, where the store decided them).
 *
 * Sinks run in registration order, which srv_init fixes; none may register
 * or remove a sink from inside a dispatch.
 */
#include "server/server.h"

#include <assert.h>
#include <string.h>

static void dispatch(srv_t *s, const presence_event_t *ev, int local) {
  if ((unsigned)ev->type >= PRESENCE_EV_COUNT_) return;
  s->fanout_depth++;
  for (const uint8_t *r = s->routes[local][ev->type]; *r; r++) {
    const fanout_sink_t *k = &s->sinks[*r - 1];
    k->on_event(s, ev, k->ud);
  }
  if (--s->fanout_depth == 0 && s->fanout_dirty) fanout_refresh(s);
}

/* The routes over the sinks listening now, and the engine told what they
 * take: a type no sink wants, or an event every sink of its type skips (a
 * status change's session event, USER_FOLLOWS, while no event stream or
 * webhook is there to want it), is then not queued, unpacked or dispatched
 * (presence_listener_filter), a third of a status change's events work. */
static void routes_make(srv_t *s) {
  for (int local = 0; local < 2; local++)
    for (unsigned t = 0; t < PRESENCE_EV_COUNT_; t++) {
      uint8_t *r = s->routes[local][t];
      unsigned skip = ~0u;
      for (size_t i = 0; i < s->nsinks; i++) {
        const fanout_sink_t *k = &s->sinks[i];
        if (!k->on_event || (int)k->local != local) continue;
        if (k->types && !(k->types & FANOUT_TYPE(t))) continue;
        if (k->active && !k->active(s)) continue;
        *r++ = (uint8_t)(i + 1);
        skip &= k->skip_flags;
      }
      *r = 0;
      if (s->p && s->fanout_h[local] > 0) /* no engine once shut down */
        (void)presence_listener_filter(s->p, s->fanout_h[local],
                                       (presence_event_type_t)t,
                                       s->routes[local][t][0] != 0,
                                       s->routes[local][t][0] ? skip : 0);
    }
}

void fanout_refresh(srv_t *s) {
  if (s->fanout_depth) {
    s->fanout_dirty = 1;
    return;
  }
  s->fanout_dirty = 0;
  routes_make(s);
}

/* Every event of the cluster (with the embedded store: of this instance). */
static void on_cluster(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  dispatch(ud, ev, 0);
}

/* Only the events this instance decided. */
static void on_local(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  dispatch(ud, ev, 1);
}

int fanout_sink_add(srv_t *s, const fanout_sink_t *sink) {
  assert(sink && sink->on_event);
  int id = -1;
  for (size_t i = 0; i < s->nsinks && id < 0; i++)
    if (!s->sinks[i].on_event) id = (int)i; /* a removed sink's slot */
  if (id < 0) {
    if (s->nsinks == FANOUT_MAX_SINKS) return -1;
    id = (int)s->nsinks++;
  }
  s->sinks[id] = *sink;
  fanout_refresh(s);
  return id;
}

void fanout_sink_remove(srv_t *s, int id) {
  if (id < 0 || (size_t)id >= s->nsinks) return;
  memset(&s->sinks[id], 0, sizeof s->sinks[id]);
  fanout_refresh(s);
}

int fanout_init(srv_t *s) {
  /* The built-in sinks, in the order they hear of an event: watchers get
   * their frame before the event streams are woken. Webhooks add theirs in
   * webhook_init (only when endpoints are configured). */
  if (fanout_sink_add(s, &watch_sink) < 0 ||
      fanout_sink_add(s, &sse_sink) < 0 ||
      fanout_sink_add(s, &ws_session_sink) < 0 ||
      fanout_sink_add(s, &channel_sink) < 0 ||
      fanout_sink_add(s, &channel_avail_sink) < 0 ||
      fanout_sink_add(s, &backend_left_sink) < 0)
    return -1;
  s->fanout_h[1] = presence_on_event(s->p, on_local, s);
  s->fanout_h[0] = presence_on_cluster_event(s->p, on_cluster, s);
  if (s->fanout_h[0] <= 0 || s->fanout_h[1] <= 0) return -1;
  fanout_refresh(s);
  return 0;
}

void fanout_free(srv_t *s) {
  /* Every watch entry belongs to some open connection's subscriptions and
   * goes with the last of them, so once the connections are closed the
   * index is empty: only the table itself is left for srv_free. */
  s->nsinks = 0;
}
