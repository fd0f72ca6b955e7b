/* SPDX-License-Identifier: MIT */
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

void fanout_put_user(buf_t *b, const char *user_id,
                     const presence_user_info_t *info) {
  buf_puts(b, "{\"user_id\":");
  buf_put_json_str(b, user_id);
  buf_puts(b, ",\"status\":\"");
  buf_puts(b, presence_status_name(info->status));
  buf_puts(b, "\",\"since\":");
  buf_put_i64(b, info->since_ms);
  buf_puts(b, ",\"last_seen\":");
  buf_put_i64(b, info->last_seen_ms);
  buf_puts(b, ",\"version\":");
  buf_put_u64(b, info->version);
  buf_putc(b, '}');
}

/* ---- many users' presence, synchronous or not --------------------------- */

typedef struct uq uq_t;
typedef struct uq_slot {
  uq_t *q;
  size_t i;
} uq_slot_t;

struct uq {
  srv_t *s;
  users_cb cb;
  void *ud;
  size_t n, pending;
  int status;
  int issuing; /* still asking: a synchronous answer must not finish it */
  char **ids;
  presence_user_info_t *infos;
  uq_slot_t *slots;
};

static void uq_finish(uq_t *q) {
  q->cb(q->s, q->status, q->ids, q->infos, q->n, q->ud);
  free(q->ids);
  free(q->infos);
  free(q->slots);
  free(q);
}

static void uq_answer(presence_t *p, int status, const presence_user_info_t *i,
                      void *ud) {
  uq_slot_t *sl = ud;
  uq_t *q = sl->q;
  (void)p;
  if (status == 0 && i) {
    presence_user_info_t *o = &q->infos[sl->i];
    *o = *i;
    o->user_id = q->ids[sl->i]; /* i's strings live only for this call */
  } else if (!q->status) {
    q->status = status ? status : PRESENCE_ESTORE;
  }
  if (--q->pending == 0 && !q->issuing) uq_finish(q);
}

int users_query(srv_t *s, char **ids, size_t n, users_cb cb, void *ud) {
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++)
    bytes += strlen(ids[i]) + 1;
  uq_t *q = calloc(1, sizeof *q);
  if (!q) return -1;
  /* The ids and their text in one block: freed at once. */
  q->ids = malloc(n * sizeof *q->ids + bytes + 1);
  q->infos = calloc(n ? n : 1, sizeof *q->infos);
  q->slots = calloc(n ? n : 1, sizeof *q->slots);
  if (!q->ids || !q->infos || !q->slots) {
    free(q->ids);
    free(q->infos);
    free(q->slots);
    free(q);
    return -1;
  }
  char *t = (char *)(q->ids + n);
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(ids[i]) + 1;
    memcpy(t, ids[i], l);
    q->ids[i] = t;
    q->infos[i].user_id = t;
    t += l;
  }
  q->s = s;
  q->cb = cb;
  q->ud = ud;
  q->n = n;
  q->pending = n;
  q->issuing = 1;
  for (size_t i = 0; i < n; i++) {
    q->slots[i].q = q;
    q->slots[i].i = i;
    int rc = presence_user_query(s->p, q->ids[i], uq_answer, &q->slots[i]);
    if (rc < 0) {
      if (!q->status) q->status = rc;
      q->pending--;
    }
  }
  q->issuing = 0;
  if (q->pending == 0) uq_finish(q);
  return 0;
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

/* Every event of the cluster (with the embedded store: of this instance):
 * subscribers, event streams. Fed by presence_on_cluster_event, so a change
 * decided on another instance reaches this instance's clients too. */
static void on_cluster(presence_t *p, const presence_event_t *ev, void *ud) {
  srv_t *s = ud;
  (void)p;
  switch (ev->type) {
  case PRESENCE_EV_USER_ONLINE:
  case PRESENCE_EV_USER_IDLE:
  case PRESENCE_EV_USER_OFFLINE:
    fan_out(s, ev);
    break;
  default:
    break;
  }
  sse_notify(s);
}

/* A local side effect, fired only where the store decided the event: a
 * session of ours ended by someone else (a kick, a reset) closes its
 * connection. A connection ending its own session removed it from the map
 * first. */
static void on_event(presence_t *p, const presence_event_t *ev, void *ud) {
  srv_t *s = ud;
  (void)p;
  if (ev->type != PRESENCE_EV_SESSION_DISCONNECTED || !ev->session_id) return;
  conn_t *c = map_get(&s->sessions, ev->session_id);
  if (c) ws_session_ended(c, ev->reason);
}

int fanout_init(srv_t *s) {
  int h = presence_on_session_disconnected(s->p, on_event, s);
  if (h <= 0) return -1;
  h = presence_on_cluster_event(s->p, on_cluster, s);
  return h > 0 ? 0 : -1;
}

void fanout_free(srv_t *s) {
  /* Every entry belongs to some open connection's subscriptions and goes
   * with the last of them, so once the connections are closed the index is
   * empty: only the table itself is left for srv_free. */
  (void)s;
}
