/* SPDX-License-Identifier: MIT */
/*
 * GET /v1/events: the transition log as Server-Sent Events.
 *
 * Each stream keeps only a cursor (a position in each of the store's logs,
 * src/core/cursor.c: one log but with Redis in shards). New events wake
 * every stream on the next loop turn; a stream reads the log from its
 * cursor in batches while its write queue is short, so a slow consumer is
 * paced by the log itself instead of buffering without bound: if it falls
 * out of the log it gets a `gap` event, never a stalled loop. Each event's
 * id is the cursor just past it, so Last-Event-ID resumes exactly there.
 *
 * A filtered stream (?types=, ?channel_prefix=) also moves its reader's
 * cursor over the events it skips: a log batch whose last events were
 * skipped ends with an id-only block ("id: <cursor>", blank line), which an
 * EventSource takes as its last event id without dispatching anything.
 * Without it the reader's cursor stayed at the last event it was sent, and
 * once the bounded log had evicted past it a reconnect got a gap notice for
 * events it never asked for. One block per batch keeps the reader's cursor
 * exactly where the stream's is, at the cost of a few bytes per log read
 * (a read, a store round trip with Redis, already costs more).
 */
#include "server/server.h"
#include "server/webhook.h"

#include <http_parser.h>

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SSE_BATCH 256
/* Stop reading the log for a stream while this much is queued to it. */
#define SSE_HIGH_WATER 65536
/* A log read that failed (Redis away or slow) is tried again this much
 * later: neither the next event nor a drain may come to do it. */
#define SSE_RETRY_MS 500

struct sse_stream {
  conn_t *conn;
  sse_stream_t *prev, *next;
  presence_cursor_t *cursor;
  uint32_t log; /* the log being read */
  int64_t last_write_ms;
  size_t batch;     /* events in the last log batch */
  uint32_t empty;   /* logs read in a row that gave nothing (see pump_one) */
  uint8_t reading;  /* a log read is in flight (asynchronous store) */
  uint8_t in_pump;  /* inside pump_one's call to presence_log_read */
  uint8_t final;    /* shutting down: read to the end, then close */
  uint8_t detached; /* connection gone during a read: on_log frees it */
  uint8_t writing;  /* on_log writes an answer that came later */
  /* Filters (?types=, ?channel_prefix=): events they skip still move the
   * cursor. types: FANOUT_TYPE bits, 0 for all. */
  uint64_t types;
  char *channel_prefix;
};

/* ?types=a,b,c (event_types_parse, as --webhook's events=; its bits are
 * FANOUT_TYPE's). */
static int parse_types(const char *v, size_t n, uint64_t *out) {
  return event_types_parse(v, n, ',', out);
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
static void sse_retry(srv_t *s);

static void stream_free(sse_stream_t *st) {
  presence_cursor_free(st->cursor);
  free(st->channel_prefix);
  free(st);
}

static void on_log(presence_t *p, int status, const presence_event_t *events,
                   size_t n, void *ud) {
  sse_stream_t *st = ud;
  (void)p;
  st->reading = 0;
  if (st->detached) {
    stream_free(st);
    return;
  }
  conn_t *c = st->conn;
  srv_t *s = c->srv;
  if (status < 0 && status != PRESENCE_ECURSOR) {
    n = 0;
    if (status != PRESENCE_ESHUTDOWN) sse_retry(s);
  }
  st->batch = n;
  if (!st->in_pump) {
    /* An answer from an asynchronous store: write it, then go on reading
     * (or finish a final flush) from here. */
    st->in_pump = 1;
    /* A write that fails closes the connection, and sse_detach would free
     * the stream under us: it is freed here instead. */
    st->writing = 1;
    if (n > 0 && !c->closing) on_log(p, status, events, n, ud);
    st->writing = 0;
    st->in_pump = 0;
    if (st->detached) {
      stream_free(st);
      return;
    }
    if (c->closing) return;
    st->empty = n > 0 ? 0 : st->empty + 1;
    if (n > 0 || st->empty < presence_log_count(s->p))
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
    buf_put_u64(b, presence_cursor_pos(st->cursor, st->log));
    buf_puts(b, ",\"oldest\":");
    buf_put_u64(b, events[0].seq);
    /* Several logs: after and oldest are sequence numbers of this one. */
    if (presence_log_count(s->p) > 1) {
      buf_puts(b, ",\"shard\":");
      buf_put_u64(b, st->log);
    }
    buf_puts(b, "}\n\n");
  }
  char id[PRESENCE_CURSOR_TEXT_MAX];
  int skipped = 0; /* events skipped since the last id written */
  for (size_t i = 0; i < n; i++) {
    /* The cursor moves over filtered events too. */
    presence_cursor_set(st->cursor, st->log, events[i].seq);
    if (!sse_wants(st, &events[i])) {
      skipped = 1;
      continue;
    }
    skipped = 0;
    int idlen = presence_cursor_format(st->cursor, id, sizeof id);
    buf_puts(b, "id: ");
    buf_append(b, id, idlen > 0 ? (size_t)idlen : 0);
    buf_puts(b, "\nevent: ");
    buf_puts(b, presence_event_type_name(events[i].type));
    buf_puts(b, "\ndata: ");
    json_event(b, &events[i]);
    buf_puts(b, "\n\n");
  }
  if (skipped) {
    /* The reader's cursor moves past the skipped events too (see the note
     * at the top): no data, so nothing is dispatched. Only a filter skips. */
    int idlen = presence_cursor_format(st->cursor, id, sizeof id);
    buf_puts(b, "id: ");
    buf_append(b, id, idlen > 0 ? (size_t)idlen : 0);
    buf_puts(b, "\n\n");
  }
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
    /* The next log holding events past the cursor (in turn), if any. */
    if (!presence_cursor_next(st->cursor, &st->log)) break;
    st->batch = 0;
    st->reading = 1;
    st->in_pump = 1;
    /* A store that answers at once (the embedded one) writes the answer
     * inside this call; a write that fails or overflows closes the
     * connection, and sse_detach would free the stream under us: marked as
     * writing, it is freed here instead. */
    st->writing = 1;
    int rc = presence_log_read_of(s->p, st->log,
                                  presence_cursor_pos(st->cursor, st->log),
                                  SSE_BATCH, on_log, st);
    st->in_pump = 0;
    st->writing = 0;
    if (st->detached) {
      if (!st->reading) stream_free(st); /* else the pending answer does */
      return;
    }
    if (rc < 0) {
      st->reading = 0;
      /* Redis away: tried again shortly (sse_retry). */
      if (rc != PRESENCE_ESTORE)
        srv_error(s, "log_read_failed", "%s", presence_strerror(rc));
      if (rc != PRESENCE_ESHUTDOWN) sse_retry(s);
      break;
    }
    if (st->reading) return; /* answered later, in on_log */
    /* A log this instance saw events in may answer nothing (its stream
     * trimmed empty, or lost with a Redis): the others are still read, each
     * once, before the stream waits for the next event. */
    st->empty = st->batch ? 0 : st->empty + 1;
    if (st->empty >= presence_log_count(s->p)) break;
  }
  if (st->final && !c->closing) conn_close_after_flush(c);
}

void sse_pump(srv_t *s, int final) {
  sse_stream_t *next;
  for (sse_stream_t *st = s->sse_streams; st; st = next) {
    next = st->next; /* a write failure may unlink st */
    /* Every log is worth one more read, even with a read in flight: that
     * read may have been sent before the event was written, and if its
     * empty answer were the last one counted, the stream would wait for
     * the event after this one (seen with Redis shards: a trimmed shard's
     * next event was not sent). */
    st->empty = 0;
    pump_one(st, final);
  }
}

static void on_sse_timer(uv_timer_t *t) {
  srv_t *s = t->data;
  s->sse_pump_pending = 0;
  sse_pump(s, 0);
}

void sse_notify(srv_t *s) {
  if (s->nsse == 0 || uv_is_closing((uv_handle_t *)&s->sse_timer)) return;
  /* A pump is due on the next turn already; a retry's later one is
   * brought forward. */
  if (s->sse_pump_pending && uv_timer_get_due_in(&s->sse_timer) == 0) return;
  s->sse_pump_pending = 1;
  uv_timer_start(&s->sse_timer, on_sse_timer, 0, 0);
}

/* A log read failed: every stream is pumped again after SSE_RETRY_MS (a
 * stream whose read failed has events after its cursor, and nothing else
 * would wake it while no new event comes; a keepalive's write does not). */
static void sse_retry(srv_t *s) {
  if (s->sse_pump_pending || uv_is_closing((uv_handle_t *)&s->sse_timer))
    return;
  s->sse_pump_pending = 1;
  uv_timer_start(&s->sse_timer, on_sse_timer, SSE_RETRY_MS, 0);
}

static void on_any_event(srv_t *s, const presence_event_t *ev, void *ud) {
  (void)ev;
  (void)ud;
  sse_notify(s);
}

static int sse_active(const srv_t *s) { return s->nsse > 0; }

/* Every event wakes the streams; each reads the log from its own cursor.
 * With no stream open the engine need not dispatch any event for them. */
const fanout_sink_t sse_sink = {.name = "event streams",
                                .active = sse_active,
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
  if (st->reading || st->writing) {
    st->detached = 1; /* the pending answer frees it */
  } else {
    stream_free(st);
  }
  c->u.sse = NULL;
  assert(s->nsse > 0);
  s->nsse--;
  if (s->nsse == 0) fanout_refresh(s);
  srv_interest_all(s, -1);
}

/* The stream's head: its lines, then Date (http_date_line) and the blank
 * line. */
static int write_head(conn_t *c, const char *head, size_t len) {
  char b[256];
  const char *date = http_date_line(c->srv);
  size_t dl = strlen(date);
  if (len + dl + 2 > sizeof b) return conn_write(c, head, len);
  memcpy(b, head, len);
  memcpy(b + len, date, dl);
  memcpy(b + len + dl, "\r\n", 2);
  return conn_write(c, b, len + dl + 2);
}

void sse_start(conn_t *c, http_req_t *r) {
  srv_t *s = c->srv;
  size_t len;
  /* One cursor and one prefix: a second one would be a guess (?types= may
   * come once per type, below). */
  static const char *const single[] = {"after", "channel_prefix", NULL};
  const char *twice = http_query_repeated(r, single);
  if (twice) {
    char msg[64];
    snprintf(msg, sizeof msg, "%s is given twice: give it once", twice);
    http_error(c, 400, "bad_request", msg);
    return;
  }
  const char *v = http_header(r, "Last-Event-ID", &len);
  char after[PRESENCE_CURSOR_TEXT_MAX];
  /* An empty Last-Event-ID is no cursor (HTML's EventSource resets its id
   * to "" on an empty id: line, and a reader that sends what it holds then
   * sends an empty header): as without one, not a 400. */
  if (v && len == 0) v = NULL;
  if (!v) {
    /* ?after= is percent-encoded like any query value. */
    const char *q = http_query(r, "after", &len);
    if (q) {
      int k = http_unescape(q, len, after, sizeof after);
      if (k < 0) {
        http_error(c, 400, "bad_request",
                   "Last-Event-ID / after must be a sequence number or an "
                   "event id of this stream");
        return;
      }
      v = after;
      len = strlen(after);
    }
  }
  /* No cursor: from the newest event of every log. */
  presence_cursor_t *cursor = NULL;
  int crc = presence_cursor_new(s->p, v, v ? len : 0, &cursor);
  if (crc == PRESENCE_ENOMEM) {
    http_error(c, 503, "out_of_memory", "out of memory");
    return;
  }
  if (crc) {
    http_error(c, 400, "bad_request",
               crc == PRESENCE_ENOTSUP
                   ? "this store has more logs than a cursor holds"
                   : "Last-Event-ID / after must be a sequence number or an "
                     "event id of this stream (a cursor of this service's "
                     "log)");
    return;
  }
  uint64_t types = 0;
  /* ?types=a,b or ?types=a&types=b (how URLSearchParams.append, Python's
   * requests and Go's url.Values write a list): every occurrence adds its
   * types. Reading only the first one dropped the others' events from a
   * stream that answered 200. */
  for (const char *tv = http_query(r, "types", &len); tv;
       tv = http_query_next(r, "types", tv, &len)) {
    uint64_t more = 0;
    /* Percent-encoded like any query value: URL encoders (Python's
     * urlencode, URLSearchParams, Go's url.Values) write ',' as %2C and
     * some '*' as %2A. Decoding never lengthens the value. */
    char *types_text = malloc(len + 1);
    if (!types_text) {
      presence_cursor_free(cursor);
      http_error(c, 503, "out_of_memory", "out of memory");
      return;
    }
    int k = http_unescape(tv, len, types_text, len + 1);
    int bad = k < 0 || parse_types(types_text, (size_t)k, &more) != 0;
    free(types_text);
    types |= more;
    if (bad) {
      presence_cursor_free(cursor);
      http_error(c, 400, "bad_request",
                 "types must be event types joined by ',' (e.g. channel.*)");
      return;
    }
  }
  char prefix[4 * PRESENCE_CHANNEL_MAX + 1];
  const char *pv = http_query(r, "channel_prefix", &len);
  if (pv && (http_unescape(pv, len, prefix, sizeof prefix) < 0 ||
             strlen(prefix) > PRESENCE_CHANNEL_MAX)) {
    presence_cursor_free(cursor);
    http_error(c, 400, "bad_channel", "channel_prefix is not a channel prefix");
    return;
  }
  if (http_method(r) == HTTP_HEAD) {
    /* HEAD (RFC 9110 9.3.2): the stream's headers, checked as a GET's, and
     * no stream. Its body would end only with the connection, so this one
     * ends too: a client must not wait for a length that never comes. */
    static const char hhead[] = "HTTP/1.1 200 OK\r\n"
                                "Content-Type: text/event-stream\r\n"
                                "Cache-Control: no-cache\r\n"
                                "X-Accel-Buffering: no\r\n"
                                "Connection: close\r\n";
    presence_cursor_free(cursor);
    if (write_head(c, hhead, sizeof hhead - 1) == 0) conn_close_after_flush(c);
    return;
  }
  sse_stream_t *st = calloc(1, sizeof *st);
  if (!st) {
    presence_cursor_free(cursor);
    http_error(c, 503, "out_of_memory", "out of memory");
    return;
  }
  st->types = types;
  if (pv && !(st->channel_prefix = strdup(prefix))) {
    presence_cursor_free(cursor);
    free(st);
    http_error(c, 503, "out_of_memory", "out of memory");
    return;
  }
  static const char head[] = "HTTP/1.1 200 OK\r\n"
                             "Content-Type: text/event-stream\r\n"
                             "Cache-Control: no-cache\r\n"
                             "X-Accel-Buffering: no\r\n";
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
  if (s->nsse == 1) fanout_refresh(s);
  srv_interest_all(s, 1); /* a stream wants every event: woken by each */
  if (write_head(c, head, sizeof head - 1) != 0) return;
  pump_one(st, 0);
}
