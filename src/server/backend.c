/* SPDX-License-Identifier: MIT */
/*
 * A backend's session connection, GET /v1/backend (docs/protocol.md
 * section 5): an application server reports many sessions over one
 * WebSocket, in batches each answered by one ack naming the ops refused.
 * The sessions belong to the connection's origin (origin.c), not to the
 * connection: when it goes they wait out the resume window.
 *
 * Invariants: once our close frame is queued (close_sent) nothing else is
 * written. A frame is decoded whole before anything of it is applied, so a
 * frame refused as a whole (bad_json, bad_field, too_many_ops,
 * rate_limited) changes nothing.
 */
#include "server/server.h"

#include "server/bmsg.h"
#include "server/json_keys.h"
#include "server/wsmsg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef PRESENCED_HAVE_REDIS
#include "presence_redis.h"
#endif

/* Malformed frames tolerated before the connection is closed with 1008. */
#define MAX_BAD_FRAMES 10
#define WS_CLOSE_TAKEN_OVER 4009
/* A message buffer this large stays between frames (batches of 1,000 ops
 * are 50-100 KB; one buffer per backend connection). */
#define BACKEND_KEEP_BUF (1u << 20)

struct bconn {
  ws_parser_t *parser;
  origin_t *origin; /* NULL once another connection took it over */
  int64_t last_frame_ms;
  int64_t last_ping_ms;
  buf_t errs; /* the refused ops of the frame being applied */
  uint16_t bad_frames;
  uint8_t close_sent;
  /* Redis: the origin's name is being claimed (presence_redis_origin_claim);
   * no welcome and no input until the store answers. */
  uint8_t claiming;
  uint8_t resumed; /* this instance held sessions of the origin */
};

/* ---- Sending ------------------------------------------------------------- */

static int send_text(conn_t *c, const buf_t *b) {
  if (c->kind != CONN_BACKEND || !c->u.backend || c->u.backend->close_sent ||
      buf_failed(b))
    return -1;
  return ws_send_frame(c, WS_OP_TEXT, b->data, b->len);
}

static void put_seq(buf_t *b, const bmsg_t *m) {
  if (m && m->has_seq) {
    buf_puts(b, ",\"seq\":");
    buf_put_u64(b, m->seq);
  }
}

static void send_error(conn_t *c, const char *code, const char *message,
                       const bmsg_t *m, uint32_t retry_ms) {
  srv_t *s = c->srv;
  srv_error(s, code, "backend %s: %s",
            c->u.backend->origin ? origin_name(c->u.backend->origin) : "?",
            message);
  buf_t *b = &s->scratch;
  buf_reset(b);
  buf_puts(b, "{\"type\":\"error\",\"code\":");
  buf_put_json_str(b, code);
  buf_puts(b, ",\"message\":");
  buf_put_json_str(b, message);
  put_seq(b, m);
  if (retry_ms) buf_printf(b, ",\"retry_ms\":%u", retry_ms);
  buf_putc(b, '}');
  send_text(c, b);
  buf_shrink(b, 65536);
}

void backend_close(conn_t *c, uint16_t code, const char *err_code,
                   const char *message) {
  bconn_t *bc = c->u.backend;
  if (c->closing || c->kind != CONN_BACKEND || !bc || bc->close_sent) return;
  if (err_code) {
    send_error(c, err_code, message ? message : err_code, NULL, 0);
    if (c->closing) return;
  }
  bc->close_sent = 1;
  uint8_t payload[125];
  size_t pl = ws_close_payload(payload, code, message ? message : "");
  ws_send_frame(c, WS_OP_CLOSE, payload, pl);
  if (!c->closing) conn_close_after_flush(c);
}

void backend_taken_over(conn_t *c) {
  if (c->kind != CONN_BACKEND || !c->u.backend) return;
  c->u.backend->origin = NULL;
  backend_close(c, WS_CLOSE_TAKEN_OVER, "origin_taken_over",
                "another connection took this origin over");
}

void backend_notify_ended(conn_t *c, const char *session_id,
                          presence_reason_t reason) {
  if (c->closing) return;
  srv_t *s = c->srv;
  buf_t *b = &s->scratch;
  buf_reset(b);
  buf_puts(b, "{\"type\":\"ended\",\"session\":");
  buf_put_json_str(b, session_id);
  buf_puts(b, ",\"reason\":");
  buf_put_json_str(b, reason == PRESENCE_REASON_NONE
                          ? "refused"
                          : presence_reason_name(reason));
  buf_putc(b, '}');
  send_text(c, b);
}

void backend_notify_left(conn_t *c, const char *session_id,
                         const char *channel, const char *code,
                         const char *message) {
  if (c->closing) return;
  buf_t *b = &c->srv->scratch;
  buf_reset(b);
  buf_puts(b, "{\"type\":\"left\",\"session\":");
  buf_put_json_str(b, session_id);
  buf_puts(b, ",\"channel\":");
  buf_put_json_str(b, channel);
  if (code) {
    /* A join or update acknowledged, then refused by the store: the
     * session is not in the channel, as after a removal, and the SDKs
     * drop it from their lists the same way. */
    buf_puts(b, ",\"reason\":\"refused\",\"code\":");
    buf_put_json_str(b, code);
    buf_puts(b, ",\"message\":");
    buf_put_json_str(b, message ? message : code);
    buf_putc(b, '}');
  } else {
    buf_puts(b, ",\"reason\":\"kicked\"}");
  }
  send_text(c, b);
}

/* ---- Frames -------------------------------------------------------------- */

static void refuse_op(bconn_t *bc, uint32_t index, const char *code,
                      const char *message) {
  buf_t *e = &bc->errs;
  buf_puts(e, e->len ? "," : "");
  buf_printf(e, "{\"index\":%u,\"code\":", index);
  buf_put_json_str(e, code);
  buf_puts(e, ",\"message\":");
  buf_put_json_str(e, message);
  buf_putc(e, '}');
}

/* A batch or a sync frame: every item on its own, in order, then one ack. */
static void apply_items(conn_t *c, const bmsg_t *m) {
  srv_t *s = c->srv;
  bconn_t *bc = c->u.backend;
  origin_t *o = bc->origin;
  uint32_t retry_ms = 0;
  if (origin_take_ops(s, o, m->n_items, &retry_ms) != 0) {
    char msg[96];
    snprintf(msg, sizeof msg, "over %u ops per second: nothing applied",
             s->cfg.backend_ops_per_sec);
    send_error(c, "rate_limited", msg, m, retry_ms ? retry_ms : 1);
    return;
  }
  if (m->type == BMSG_SYNC) origin_sync_begin(o);
  buf_reset(&bc->errs);
  uint32_t i = 0, applied = 0;
  const cJSON *item;
  cJSON_ArrayForEach(item, m->items) {
    bop_t op;
    const char *msg = NULL, *code = NULL;
    if (bmsg_op(m, item, &op) != 0) {
      code = op.err_code;
      msg = op.err_msg;
    } else {
      code = origin_apply(s, o, &op, &msg);
    }
    if (code)
      refuse_op(bc, i, code, msg ? msg : code);
    else
      applied++;
    i++;
    /* An op's events may have closed this connection (a write failed). */
    if (c->closing || !c->u.backend || bc->origin != o) break;
  }
  uint32_t opened = 0, closed = 0;
  int done = m->type == BMSG_SYNC && m->done && !c->closing &&
             bc->origin == o;
  if (done) origin_sync_end(s, o, &opened, &closed);
  if (c->closing) return;
  buf_t *b = &s->scratch;
  buf_reset(b);
  buf_puts(b, "{\"type\":\"ack\"");
  put_seq(b, m);
  buf_printf(b, ",\"applied\":%u", applied);
  if (done) buf_printf(b, ",\"opened\":%u,\"closed\":%u", opened, closed);
  if (bc->errs.len) {
    buf_puts(b, ",\"errors\":[");
    buf_append(b, bc->errs.data, bc->errs.len);
    buf_putc(b, ']');
  }
  buf_putc(b, '}');
  send_text(c, b);
  buf_shrink(b, 65536);
  /* A write that fails (the peer reset the connection while its batch was
   * applied) closes the connection, and backend_detach frees bc with it. */
  if (c->closing) return;
  buf_shrink(&bc->errs, 65536);
}

static void on_text(conn_t *c, const uint8_t *data, size_t len) {
  srv_t *s = c->srv;
  bconn_t *bc = c->u.backend;
  bmsg_t m;
  int rc = bmsg_decode(data, len, s->cfg.backend_max_ops, &m);
  if (rc == BMSG_TOO_MANY) {
    send_error(c, m.err_code, m.err_msg, &m, 0);
  } else if (rc != BMSG_OK) {
    send_error(c, m.err_code, m.err_msg, &m, 0);
    if (!c->closing && ++bc->bad_frames >= MAX_BAD_FRAMES)
      backend_close(c, WS_CLOSE_POLICY, NULL, "too many malformed frames");
  } else if (!bc->origin) {
    /* Taken over: the close frame is on its way; nothing more applies. */
  } else if (m.type == BMSG_PING) {
    buf_t *b = &s->scratch;
    buf_reset(b);
    buf_puts(b, "{\"type\":\"pong\"");
    if (m.id[0]) {
      buf_puts(b, ",\"id\":");
      buf_puts(b, m.id);
    }
    buf_puts(b, ",\"ts\":");
    buf_put_i64(b, srv_now_wall(s));
    buf_putc(b, '}');
    send_text(c, b);
  } else if (m.type == BMSG_BYE) {
    origin_end_all(s, bc->origin, PRESENCE_REASON_DISCONNECT);
    backend_close(c, WS_CLOSE_NORMAL, NULL, "bye");
  } else {
    apply_items(c, &m);
  }
  bmsg_free(&m);
}

/* Input that came while the name was claimed waits with the upgrade's
 * extra bytes (reading is stopped then; this covers a read already under
 * way). */
static int hold_input(conn_t *c, const char *data, size_t len) {
  if (!len) return 0;
  if (len > UINT32_MAX - c->stash_len) return -1;
  char *d = realloc(c->stash, (size_t)c->stash_len + len);
  if (!d) return -1;
  memcpy(d + c->stash_len, data, len);
  c->stash = d;
  c->stash_len += (uint32_t)len;
  return 0;
}

void backend_on_read(conn_t *c, const char *data, size_t len) {
  if (c->u.backend && c->u.backend->claiming) {
    if (hold_input(c, data, len) != 0)
      backend_close(c, WS_CLOSE_INTERNAL, "internal", "out of memory");
    return;
  }
  const uint8_t *in = (const uint8_t *)data;
  while (!c->closing && c->u.backend && !c->u.backend->close_sent) {
    bconn_t *bc = c->u.backend;
    ws_event_t ev;
    size_t n = ws_parse(bc->parser, in, len, &ev);
    in += n;
    len -= n;
    if (ev.kind != WS_EV_NONE) bc->last_frame_ms = c->last_rx_ms;
    switch (ev.kind) {
    case WS_EV_NONE:
      if (n == 0 || len == 0) return;
      break;
    case WS_EV_MESSAGE:
      if (ev.opcode != WS_OP_TEXT) {
        backend_close(c, WS_CLOSE_UNSUPPORTED, NULL,
                      "binary messages not accepted");
        return;
      }
      on_text(c, ev.data, ev.len);
      break;
    case WS_EV_PING:
      ws_send_frame(c, WS_OP_PONG, ev.data, ev.len);
      break;
    case WS_EV_PONG:
      break;
    case WS_EV_CLOSE: {
      /* Echo the peer's code; the origin is detached, its sessions kept
       * for the resume window (a bye ends them). */
      bc->close_sent = 1;
      ws_echo_close(c, ev.close_code);
      return;
    }
    case WS_EV_ERROR:
      backend_close(c, ev.close_code, NULL,
                    ev.reason ? ev.reason : "protocol error");
      return;
    }
  }
}

/* ---- Timers and teardown ------------------------------------------------- */

/* Pings go out often enough that a backend whose WebSocket library only
 * answers them (an idle backend) keeps its lease: every heartbeat, or every
 * third of the lease if that is shorter. */
static uint32_t ping_interval(const srv_t *s) {
  uint32_t third = s->cfg.origin_lease_ms / 3;
  return third < s->cfg.heartbeat_ms ? third : s->cfg.heartbeat_ms;
}

void backend_housekeeping(conn_t *c, int64_t now) {
  srv_t *s = c->srv;
  bconn_t *bc = c->u.backend;
  if (!bc || bc->close_sent) return;
  if (now - bc->last_frame_ms >= (int64_t)s->cfg.origin_lease_ms) {
    srv_error(s, "origin_lease_lost", "backend %s silent for %u ms",
              bc->origin ? origin_name(bc->origin) : "?",
              s->cfg.origin_lease_ms);
    backend_close(c, WS_CLOSE_TIMEOUT, NULL, "lease lost");
    return;
  }
  if (now - bc->last_ping_ms >= (int64_t)ping_interval(s)) {
    bc->last_ping_ms = now;
    ws_send_frame(c, WS_OP_PING, NULL, 0);
  }
}

void backend_detach(conn_t *c) {
  bconn_t *bc = c->u.backend;
  if (!bc) return;
  c->u.backend = NULL;
  if (bc->origin) origin_detach(c->srv, bc->origin);
  ws_parser_free(bc->parser);
  buf_free(&bc->errs);
  free(bc);
}

/* ---- The upgrade --------------------------------------------------------- */

static void welcome(conn_t *c, int resumed) {
  srv_t *s = c->srv;
  origin_t *o = c->u.backend->origin;
  const char *name = origin_name(o);
  srv_log(s, PRESENCE_LOG_INFO, "origin %s %s (%u sessions)", name,
          resumed ? "resumed" : "connected", origin_session_count(o));
  /* Channel removals of its sessions while it was away, before the
   * welcome: the SDK re-asserts when it reads the welcome, and must have
   * dropped them from its list by then (backend_left.c). */
  backend_left_release(c, name);
  if (c->closing || !c->u.backend || c->u.backend->origin != o) return;
  buf_t *b = &s->scratch;
  buf_reset(b);
  buf_puts(b, "{\"type\":\"welcome\",\"protocol\":1,\"origin\":");
  buf_put_json_str(b, name);
  buf_printf(b,
             ",\"resumed\":%s,\"sessions\":%u,\"lease_ms\":%u,"
             "\"resume_ms\":%u,\"heartbeat_ms\":%u,\"max_ops\":%u}",
             resumed ? "true" : "false", origin_session_count(o),
             s->cfg.origin_lease_ms, s->cfg.origin_resume_ms, ping_interval(s),
             s->cfg.backend_max_ops);
  send_text(c, b);
}

#ifdef PRESENCED_HAVE_REDIS
/* The store's answer to the name's claim: the welcome (resumed too when
 * another instance held the origin: its sessions are this one's to adopt
 * by the backend's sync), then the input that waited; or the close, when
 * the store could not be asked (the backend retries, as after any close)
 * or a newer claim elsewhere came first (4009, origin_claimed). */
static void on_claim(void *ud, int status, uint64_t counter, int held,
                     const presence_redis_origin_notice_t *nv, size_t nn,
                     const char *last) {
  conn_t *c = ud;
  bconn_t *bc = c->kind == CONN_BACKEND && !c->closing ? c->u.backend : NULL;
  if (bc && bc->claiming) {
    bc->claiming = 0;
    char *d = c->stash;
    size_t n = c->stash_len;
    c->stash = NULL;
    c->stash_len = 0;
    if (!bc->origin || bc->close_sent) {
      /* Taken over here meanwhile: its close is on its way. */
    } else if (status) {
      srv_error(c->srv, "store_unavailable",
                "backend %s: the origin's name could not be claimed: %s",
                origin_name(bc->origin), presence_strerror(status));
      backend_close(c, WS_CLOSE_INTERNAL, "store_unavailable",
                    "the store could not be reached: retry");
    } else if (origin_claimed(c->srv, bc->origin, counter) == 0) {
      /* What the origin missed while no connection of it was live, held
       * in Redis by whichever instance saw it (backend_left_hold): before
       * the welcome, as those held here (welcome), so that the SDK's
       * re-assert no longer carries the channels. Removed from Redis once
       * written to this connection; one that went meanwhile (a claim
       * answered after it, a write that failed and closed it) leaves them
       * for the next. */
      for (size_t i = 0; i < nn && !c->closing; i++)
        backend_notify_left(c, nv[i].session_id, nv[i].channel,
                            nv[i].code[0] ? nv[i].code : NULL,
                            nv[i].message);
      if (!c->closing && c->u.backend == bc) {
        if (last)
          presence_redis_origin_took(c->srv->rstore, origin_name(bc->origin),
                                     last);
        welcome(c, bc->resumed || held);
        if (!c->closing && !c->capture && conn_read_start(c) != 0)
          conn_close(c);
        else if (d && !c->closing)
          backend_on_read(c, d, n);
      }
    }
    free(d);
  }
  conn_unref(c);
}
#endif

void backend_upgrade(conn_t *c, http_req_t *r, const char *rest,
                     size_t restlen) {
  srv_t *s = c->srv;
  if (api_require_key(c, r) != 0) return;
  char accept[29];
  if (ws_handshake_check(c, r, accept) != 0) return;
  size_t ol;
  const char *oq = http_query(r, "origin", &ol);
  char name[4 * PRESENCE_ID_MAX + 1];
  if (!oq || ol == 0 || http_unescape(oq, ol, name, sizeof name) < 0 ||
      presence_id_check(name) != 0) {
    http_error(c, 400, "bad_origin",
               "?origin= must name this backend (1..128 bytes, id rules)");
    return;
  }
  /* The name owns sessions: with two, the one taken would be a guess. */
  if (http_query_next(r, "origin", oq, &(size_t){0})) {
    http_error(c, 400, "bad_origin", "origin is given twice: give it once");
    return;
  }
  bconn_t *bc = calloc(1, sizeof *bc);
  ws_limits_t lim = {s->cfg.backend_max_message, s->cfg.backend_max_message};
  if (bc) bc->parser = ws_parser_new(&lim);
  if (bc && bc->parser) ws_parser_keep_buffer(bc->parser, BACKEND_KEEP_BUF);
  if (!bc || !bc->parser) {
    if (bc) ws_parser_free(bc->parser);
    free(bc);
    http_error(c, 503, "out_of_memory", "out of memory");
    return;
  }
  buf_init(&bc->errs);
  int resumed = 0, full = 0;
  origin_t *o = origin_attach(s, name, c, &resumed, &full);
  if (!o) {
    ws_parser_free(bc->parser);
    free(bc);
    if (full)
      http_error(c, 503, "too_many_origins", "too many backend origins");
    else
      http_error(c, 409, "bad_origin", "this origin name is reserved");
    return;
  }
  bc->origin = o;
  bc->resumed = (uint8_t)resumed;
  char head[256];
  int hn = snprintf(head, sizeof head,
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                    accept);
  http_req_free(r);
  c->u.backend = bc;
  c->kind = CONN_BACKEND;
  int64_t now = srv_now_mono(s);
  bc->last_frame_ms = bc->last_ping_ms = now;
  c->last_rx_ms = now;
  if (conn_write(c, head, (size_t)hn) != 0) return;
#ifdef PRESENCED_HAVE_REDIS
  if (s->rstore) {
    /* The name is exclusive across instances: claimed in the store before
     * the welcome, the input held until then (docs/internals/backend.md,
     * "One origin, one connection"). */
    bc->claiming = 1;
    if (!c->capture) uv_read_stop((uv_stream_t *)&c->tcp);
    if (hold_input(c, rest, restlen) != 0) {
      backend_close(c, WS_CLOSE_INTERNAL, "internal", "out of memory");
      return;
    }
    conn_ref(c);
    int rc = presence_redis_origin_claim(s->rstore, name, on_claim, c);
    if (rc) on_claim(c, rc, 0, 0, NULL, 0, NULL);
    return;
  }
#endif
  welcome(c, resumed);
  if (restlen && !c->closing) backend_on_read(c, rest, restlen);
}

/* ---- HTTP: serverless sessions and the origin list ----------------------- */

#define HTTP_TTL_MIN_MS 1000u
#define HTTP_TTL_MAX_MS 86400000u

static void put_error(conn_t *c, const char *code, int hs) {
  http_error(c, hs, code,
             hs == 409   ? "the session id is held by another user, "
                           "origin or client"
             : hs == 429 ? "the user has too many sessions"
                         : "the session could not be stored");
}

static void put_answer(conn_t *c, const char *id, const char *user,
                       int created, int64_t expires) {
  buf_t *b = &c->srv->scratch;
  buf_reset(b);
  buf_puts(b, "{\"session_id\":");
  buf_put_json_str(b, id);
  buf_puts(b, ",\"user_id\":");
  buf_put_json_str(b, user);
  buf_printf(b, ",\"created\":%s,\"expires\":", created ? "true" : "false");
  buf_put_i64(b, expires);
  buf_putc(b, '}');
  http_respond_json(c, created ? 201 : 200, b);
}

/* A created session whose answer waits for the store (origin_http_put). */
typedef struct put_req {
  conn_t *c;
  int64_t expires;
  char *user; /* after id, in the same allocation */
  char id[];
} put_req_t;

static void on_put_done(srv_t *s, const char *code, int hs, void *ud) {
  (void)s;
  put_req_t *q = ud;
  conn_t *c = q->c;
  if (!c->closing) {
    if (code)
      put_error(c, code, hs);
    else
      put_answer(c, q->id, q->user, 1, q->expires);
  }
  http_resume(c);
  free(q);
}

/* PUT /v1/sessions/{id} {"user":...,"ttl_ms":...,"status":...,"meta":{}}:
 * create or renew a session that ends when its TTL lapses. */
void backend_http_put_session(conn_t *c, http_req_t *r, const char *id) {
  srv_t *s = c->srv;
  size_t bl;
  const char *body = http_body(r, &bl);
  const char *why;
  cJSON *root = json_body_object(body, bl, &why);
  char *meta = NULL;
  if (!root) {
    http_error(c, 400, "bad_json", why);
    goto out;
  }
  const cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "user");
  const cJSON *ttl = cJSON_GetObjectItemCaseSensitive(root, "ttl_ms");
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "status");
  const cJSON *mv = cJSON_GetObjectItemCaseSensitive(root, "meta");
  const cJSON *dv = cJSON_GetObjectItemCaseSensitive(root, "device");
  if (!cJSON_IsString(user) || presence_id_check(user->valuestring) != 0) {
    http_error(c, 400, "bad_user_id", "user must be a valid user id");
    goto out;
  }
  /* Whole milliseconds, as expires_in is whole seconds: 30000.5 is a
   * mistake to report, not a value to round. */
  if (!cJSON_IsNumber(ttl) || !(ttl->valuedouble >= HTTP_TTL_MIN_MS) ||
      ttl->valuedouble > HTTP_TTL_MAX_MS ||
      ttl->valuedouble != (double)(uint32_t)ttl->valuedouble) {
    http_error(c, 400, "bad_ttl",
               "ttl_ms must be whole milliseconds from 1000 to 86400000");
    goto out;
  }
  presence_status_t status = PRESENCE_OFFLINE; /* keep / online */
  /* null is absent, as for meta and device. */
  if (st && !cJSON_IsNull(st) && (!cJSON_IsString(st) ||
             presence_status_parse(st->valuestring, &status) != 0 ||
             status == PRESENCE_OFFLINE)) {
    http_error(c, 400, "bad_status", "status must be online or idle");
    goto out;
  }
  if (mv && !cJSON_IsNull(mv)) {
    /* The caller's own text, compact: a number keeps every digit (cJSON
     * holds it as a double). */
    meta = cJSON_IsObject(mv) ? json_source_compact(body, bl, root, mv, NULL)
                              : NULL;
    if (!meta || strlen(meta) > PRESENCE_META_MAX) {
      http_error(c, 400, "bad_meta", "meta must be an object of at most "
                                     "4096 bytes");
      goto out;
    }
  }
  /* The device kind (docs/protocol.md 6), as the backend protocol's open
   * takes it: absent or null is web. */
  if (dv && !cJSON_IsNull(dv) &&
      (!cJSON_IsString(dv) || presence_device_check(dv->valuestring) != 0)) {
    http_error(c, 400, "bad_device",
               "device must be 1..32 letters, digits, '.', '_' or '-'");
    goto out;
  }
  int created = 0, hs = 0, pending = 0;
  int64_t expires = 0;
  /* With Redis a created session is answered once the store has decided
   * (the id may be another user's elsewhere): the request waits. */
  put_req_t *q = NULL;
  if (srv_async(s)) {
    size_t il = strlen(id) + 1, ul = strlen(user->valuestring) + 1;
    if (!(q = malloc(sizeof *q + il + ul))) {
      http_error(c, 503, "out_of_memory", "out of memory");
      goto out;
    }
    q->c = c;
    memcpy(q->id, id, il);
    q->user = q->id + il;
    memcpy(q->user, user->valuestring, ul);
  }
  const char *code = origin_http_put(
      s, id, user->valuestring, (uint32_t)ttl->valuedouble, (int)status, meta,
      cJSON_IsString(dv) ? dv->valuestring : NULL, &created, &expires, &hs,
      q ? on_put_done : NULL, q, &pending);
  if (pending) {
    q->expires = expires;
    http_defer(c);
    goto out;
  }
  free(q);
  if (code)
    put_error(c, code, hs);
  else
    put_answer(c, id, user->valuestring, created, expires);
out:
  free(meta);
  cJSON_Delete(root);
}

/* GET /v1/origins */
void backend_http_origins(conn_t *c) {
  buf_t *b = &c->srv->scratch;
  buf_reset(b);
  origin_list_json(c->srv, b);
  http_respond_json(c, 200, b);
}
