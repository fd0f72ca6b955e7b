/*
 * Fan-out of presence changes to watching WebSocket clients.
 *
 * An index maps each watched user id to the connections subscribed to it.
 * One catch-all event callback turns each user transition into one
 * `presence` frame, serialised once (WebSocket header included: server
 * frames are unmasked, so the bytes are the same for everyone) and shared by
 * every subscriber's write.
 */
#include "server/server.h"

#include <stdlib.h>
#include <string.h>

struct fanout_entry {
  const char *user_id; /* the map's copy of the key */
  conn_t **subs;
  uint32_t n, cap;
  uint8_t busy; /* being iterated: freed by the iterator when emptied */
};

const char *fanout_user(const fanout_entry_t *e) {
  return e->user_id;
}

static void entry_destroy(srv_t *s, fanout_entry_t *e) {
  map_del(&s->watchers, e->user_id);
  free(e->subs);
  free(e);
}

fanout_entry_t *fanout_add(srv_t *s, const char *user_id, conn_t *c) {
  fanout_entry_t *e = map_get(&s->watchers, user_id);
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

void fanout_remove(srv_t *s, fanout_entry_t *e, conn_t *c) {
  for (uint32_t i = 0; i < e->n; i++) {
    if (e->subs[i] == c) {
      e->subs[i] = e->subs[--e->n];
      break;
    }
  }
  if (e->n == 0 && !e->busy) entry_destroy(s, e);
}

void fanout_put_user(srv_t *s, buf_t *b, const char *user_id) {
  presence_user_info_t info;
  memset(&info, 0, sizeof info);
  if (presence_user_get(s->p, user_id, &info) != 0)
    info.status = PRESENCE_OFFLINE;
  buf_puts(b, "{\"user_id\":");
  buf_put_json_str(b, user_id);
  buf_puts(b, ",\"status\":\"");
  buf_puts(b, presence_status_name(info.status));
  buf_puts(b, "\",\"since\":");
  buf_put_i64(b, info.since_ms);
  buf_puts(b, ",\"last_seen\":");
  buf_put_i64(b, info.last_seen_ms);
  buf_puts(b, ",\"version\":");
  buf_put_u64(b, info.version);
  buf_putc(b, '}');
}

/* One user transition to every subscriber of that user. */
static void fan_out(srv_t *s, const presence_event_t *ev) {
  fanout_entry_t *e = map_get(&s->watchers, ev->user_id);
  if (!e || e->n == 0) return;
  presence_user_info_t info;
  int64_t last_seen = ev->ts_ms;
  if (presence_user_get(s->p, ev->user_id, &info) == 0 && info.last_seen_ms)
    last_seen = info.last_seen_ms;
  buf_t *b = &s->scratch;
  buf_reset(b);
  buf_puts(b, "{\"type\":\"presence\",\"snapshot\":false,\"users\":[{"
              "\"user_id\":");
  buf_put_json_str(b, ev->user_id);
  buf_puts(b, ",\"status\":\"");
  buf_puts(b, presence_status_name(ev->to));
  buf_puts(b, "\",\"from\":\"");
  buf_puts(b, presence_status_name(ev->from));
  buf_puts(b, "\",\"reason\":\"");
  buf_puts(b, presence_reason_name(ev->reason));
  buf_puts(b, "\",\"since\":");
  buf_put_i64(b, ev->ts_ms);
  buf_puts(b, ",\"last_seen\":");
  buf_put_i64(b, last_seen);
  buf_puts(b, ",\"version\":");
  buf_put_u64(b, ev->user_version);
  buf_puts(b, ",\"seq\":");
  buf_put_u64(b, ev->seq);
  buf_puts(b, "}]}");
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

static void on_event(presence_t *p, const presence_event_t *ev, void *ud) {
  srv_t *s = ud;
  (void)p;
  switch (ev->type) {
  case PRESENCE_EV_USER_ONLINE:
  case PRESENCE_EV_USER_IDLE:
  case PRESENCE_EV_USER_OFFLINE:
    fan_out(s, ev);
    break;
  case PRESENCE_EV_SESSION_DISCONNECTED:
    /* Ended by someone else (a kick, a reset): close its connection. A
     * connection ending its own session removed it from the map first. */
    if (ev->session_id) {
      conn_t *c = map_get(&s->sessions, ev->session_id);
      if (c) ws_session_ended(c, ev->reason);
    }
    break;
  default:
    break;
  }
  sse_notify(s);
}

int fanout_init(srv_t *s) {
  int h = presence_on_event(s->p, on_event, s);
  return h > 0 ? 0 : -1;
}

void fanout_free(srv_t *s) {
  /* Every entry belongs to some open connection's subscriptions and goes
   * with the last of them, so once the connections are closed the index is
   * empty: only the table itself is left for srv_free. */
  (void)s;
}
