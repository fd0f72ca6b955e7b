/* SPDX-License-Identifier: MIT */
/*
 * GET /v1/events: the transition log as Server-Sent Events.
 *
 * Each stream keeps only a cursor (the last sequence number sent). New
 * events wake every stream on the next loop turn; a stream reads the log
 * from its cursor in batches while its write queue is short, so a slow
 * consumer is paced by the log itself instead of buffering without bound:
 * if it falls out of the log it gets a `gap` event, never a stalled loop.
 */
#include "server/server.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SSE_BATCH 256
/* Stop reading the log for a stream while this much is queued to it. */
#define SSE_HIGH_WATER 65536

struct sse_stream {
  conn_t *conn;
  sse_stream_t *prev, *next;
  uint64_t cursor;
  int64_t last_write_ms;
  size_t batch;     /* events in the last log batch */
  uint8_t reading;  /* a log read is in flight (asynchronous store) */
  uint8_t in_pump;  /* inside pump_one's call to presence_log_read */
  uint8_t final;    /* shutting down: read to the end, then close */
  uint8_t detached; /* connection gone during a read: on_log frees it */
  /* Filters (?types=, ?channel_prefix=): events they skip still move the
   * cursor. types: FANOUT_TYPE bits, 0 for all. */
  uint64_t types;
  char *channel_prefix;
};

/* ?types=a,b,c: event type names or "prefix.*" (e.g. channel.*), or "*". */
static int parse_types(const char *v, size_t n, uint64_t *out) {
  uint64_t mask = 0;
  size_t i = 0;
  while (i <= n) {
    size_t j = i;
    while (j < n && v[j] != ',') j++;
    size_t l = j - i;
    const char *w = v + i;
    int hit = 0;
    for (int t = 0; t < PRESENCE_EV_COUNT_; t++) {
      const char *name = presence_event_type_name((presence_event_type_t)t);
      size_t nl = strlen(name);
      if ((l == 1 && w[0] == '*') || (l == nl && !memcmp(name, w, l)) ||
          (l >= 2 && w[l - 1] == '*' && w[l - 2] == '.' && nl > l - 1 &&
           !memcmp(name, w, l - 1))) {
        mask |= FANOUT_TYPE(t);
        hit = 1;
      }
    }
    if (!hit) return -1;
    i = j + 1;
  }
  *out = mask;
  return 0;
}

static int sse_wants(const sse_stream_t *st, const presence_event_t *ev) {
  if (st->types && !(st->types & FANOUT_TYPE(ev->type))) return 0;
  if (st->channel_prefix &&
      (!ev->channel || strncmp(ev->channel, st->channel_prefix,
                               strlen(st->channel_prefix)) != 0))
    return 0;
  return 1;
}

static void pump_one(sse_stream_t *st, int final);

static void on_log(presence_t *p, int status, const presence_event_t *events,
                   size_t n, void *ud) {
  sse_stream_t *st = ud;
  (void)p;
  st->reading = 0;
  if (st->detached) {
    free(st->channel_prefix);
    free(st);
    return;
  }
  conn_t *c = st->conn;
  srv_t *s = c->srv;
  if (status < 0 && status != PRESENCE_ECURSOR) n = 0; /* retried later */
  st->batch = n;
  if (!st->in_pump) {
    /* An answer from an asynchronous store: write it, then go on reading
     * (or finish a final flush) from here. */
    st->in_pump = 1;
    if (n > 0 && !c->closing) on_log(p, status, events, n, ud);
    st->in_pump = 0;
    if (c->closing) return;
    if (n > 0)
      pump_one(st, 0);
    else if (st->final)
      conn_close_after_flush(c);
    return;
  }
  if (n == 0 || c->closing) return;
  buf_t *b = &s->scratch;
  buf_reset(b);
  if (status == PRESENCE_ECURSOR) {
    buf_puts(b, "event: gap\ndata: {\"after\":");
    buf_put_u64(b, st->cursor);
    buf_puts(b, ",\"oldest\":");
    buf_put_u64(b, events[0].seq);
    buf_puts(b, "}\n\n");
  }
  for (size_t i = 0; i < n; i++) {
    if (!sse_wants(st, &events[i])) continue;
    buf_puts(b, "id: ");
    buf_put_u64(b, events[i].seq);
    buf_puts(b, "\nevent: ");
    buf_puts(b, presence_event_type_name(events[i].type));
    buf_puts(b, "\ndata: ");
    json_event(b, &events[i]);
    buf_puts(b, "\n\n");
  }
  st->cursor = events[n - 1].seq;
  if (buf_failed(b)) {
    srv_error(s, "out_of_memory", "cannot format events");
    conn_close(c);
    return;
  }
  st->last_write_ms = srv_now_mono(s);
  conn_write(c, b->data, b->len);
  buf_shrink(b, 1 << 20);
}

static void pump_one(sse_stream_t *st, int final) {
  conn_t *c = st->conn;
  srv_t *s = c->srv;
  if (final) st->final = 1;
  if (st->reading) return; /* its answer carries on */
  while (!c->closing && !c->close_after_flush &&
         (st->final || c->wq_bytes < SSE_HIGH_WATER)) {
    st->batch = 0;
    st->reading = 1;
    st->in_pump = 1;
    int rc = presence_log_read(s->p, st->cursor, SSE_BATCH, on_log, st);
    st->in_pump = 0;
    if (rc < 0) {
      st->reading = 0;
      /* Redis away: the next event or drain tries again. */
      if (rc != PRESENCE_ESTORE)
        srv_error(s, "log_read_failed", "%s", presence_strerror(rc));
      break;
    }
    if (st->reading) return; /* answered later, in on_log */
    if (st->batch == 0) break;
  }
  if (st->final && !c->closing) conn_close_after_flush(c);
}

void sse_pump(srv_t *s, int final) {
  sse_stream_t *next;
  for (sse_stream_t *st = s->sse_streams; st; st = next) {
    next = st->next; /* a write failure may unlink st */
    pump_one(st, final);
  }
}

static void on_sse_timer(uv_timer_t *t) {
  srv_t *s = t->data;
  s->sse_pump_pending = 0;
  sse_pump(s, 0);
}

void sse_notify(srv_t *s) {
  if (s->nsse == 0 || s->sse_pump_pending ||
      uv_is_closing((uv_handle_t *)&s->sse_timer))
    return;
  s->sse_pump_pending = 1;
  uv_timer_start(&s->sse_timer, on_sse_timer, 0, 0);
}

static void on_any_event(srv_t *s, const presence_event_t *ev, void *ud) {
  (void)ev;
  (void)ud;
  sse_notify(s);
}

/* Every event wakes the streams; each reads the log from its own cursor. */
const fanout_sink_t sse_sink = {.name = "event streams",
                                .on_event = on_any_event};

void sse_on_drain(conn_t *c) {
  if (c->wq_bytes < SSE_HIGH_WATER / 2) sse_notify(c->srv);
}

void sse_housekeeping(conn_t *c, int64_t now_mono) {
  sse_stream_t *st = c->u.sse;
  if (st &&
      now_mono - st->last_write_ms >= (int64_t)c->srv->cfg.sse_keepalive_ms) {
    st->last_write_ms = now_mono;
    conn_write(c, ": keepalive\n\n", 13);
  }
}

void sse_detach(conn_t *c) {
  sse_stream_t *st = c->u.sse;
  srv_t *s = c->srv;
  if (!st) return;
  if (st->prev)
    st->prev->next = st->next;
  else
    s->sse_streams = st->next;
  if (st->next) st->next->prev = st->prev;
  if (st->reading) {
    st->detached = 1; /* the pending answer frees it */
  } else {
    free(st->channel_prefix);
    free(st);
  }
  c->u.sse = NULL;
  assert(s->nsse > 0);
  s->nsse--;
}

static int parse_seq(const char *v, size_t len, uint64_t *out) {
  char tmp[24];
  if (len == 0 || len >= sizeof tmp) return -1;
  memcpy(tmp, v, len);
  tmp[len] = '\0';
  for (size_t i = 0; i < len; i++)
    if (tmp[i] < '0' || tmp[i] > '9') return -1;
  errno = 0;
  char *end;
  unsigned long long n = strtoull(tmp, &end, 10);
  if (errno || *end) return -1;
  *out = n;
  return 0;
}

void sse_start(conn_t *c, http_req_t *r) {
  srv_t *s = c->srv;
  uint64_t cursor;
  size_t len;
  const char *v = http_header(r, "Last-Event-ID", &len);
  if (!v) v = http_query(r, "after", &len);
  if (v) {
    if (parse_seq(v, len, &cursor) != 0) {
      http_error(c, 400, "bad_request",
                 "Last-Event-ID / after must be a sequence number");
      return;
    }
  } else {
    cursor = presence_log_last_seq(s->p);
  }
  uint64_t types = 0;
  const char *tv = http_query(r, "types", &len);
  if (tv && parse_types(tv, len, &types) != 0) {
    http_error(c, 400, "bad_request",
               "types must be event types joined by ',' (e.g. channel.*)");
    return;
  }
  char prefix[4 * PRESENCE_CHANNEL_MAX + 1];
  const char *pv = http_query(r, "channel_prefix", &len);
  if (pv && (http_unescape(pv, len, prefix, sizeof prefix) < 0 ||
             strlen(prefix) > PRESENCE_CHANNEL_MAX)) {
    http_error(c, 400, "bad_channel", "channel_prefix is not a channel prefix");
    return;
  }
  sse_stream_t *st = calloc(1, sizeof *st);
  if (!st) {
    http_error(c, 503, "out_of_memory", "out of memory");
    return;
  }
  st->types = types;
  if (pv && !(st->channel_prefix = strdup(prefix))) {
    free(st);
    http_error(c, 503, "out_of_memory", "out of memory");
    return;
  }
  static const char head[] = "HTTP/1.1 200 OK\r\n"
                             "Content-Type: text/event-stream\r\n"
                             "Cache-Control: no-cache\r\n"
                             "X-Accel-Buffering: no\r\n\r\n";
  http_req_free(r);
  c->u.sse = st;
  c->kind = CONN_SSE;
  st->conn = c;
  st->cursor = cursor;
  st->last_write_ms = srv_now_mono(s);
  st->next = s->sse_streams;
  if (s->sse_streams) s->sse_streams->prev = st;
  s->sse_streams = st;
  s->nsse++;
  if (conn_write(c, head, sizeof head - 1) != 0) return;
  pump_one(st, 0);
}
