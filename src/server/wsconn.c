/* SPDX-License-Identifier: MIT */
/*
 * A client connection after the WebSocket upgrade: the session it holds,
 * protocol v1 messages (docs/protocol.md section 1), heartbeats, limits and
 * the close handshake.
 *
 * Invariants: a connection holds at most one session, connected after the
 * 101 answer and ended exactly once (by the client's close, a limit, a
 * timeout, a kick or the shutdown), always before its subscriptions go. Once
 * our close frame is queued (close_sent) nothing else is written.
 */
#include "server/server.h"

#include "core/siphash.h"
#include "server/jwt.h"
#include "server/wsmsg.h"

#include <cjson/cJSON.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Malformed messages tolerated on one connection before it is closed with
 * 1008: a broken client should see its errors, a hostile one should go. */
#define MAX_BAD_MESSAGES 10

struct wsconn {
  ws_parser_t *parser; /* only while inside a message (ws_on_read) */
  /* The token's claims, kept for the connection's life: sub in user[],
   * exp and the "*" grants here; the lists (watch ids, channel patterns)
   * and, until the session is open and welcomed, meta and device in *more,
   * which exists only while the token has any of them (claims_take,
   * more_trim). A token with "*" grants or none costs no allocation. */
  jwt_claims_t *more;
  int64_t exp;
  /* The watched users' entries: &sub1 while there is room for one (most
   * connections watch one user: no 32-byte array of their own), a malloc'd
   * array past that (slots_grow). */
  watch_entry_t **subs;
  watch_entry_t *sub1;
  uint32_t nsubs, subs_cap;
  int64_t last_ping_ms;
  /* Monotonic: the last complete frame. The heartbeat timeout counts from
   * here, not from the last byte, so a frame trickled in a byte at a time
   * (never finishing) cannot hold a connection open forever. */
  int64_t last_frame_ms;
  int64_t rate_window_ms;
  /* The library's handle for this session: status changes and activity
   * reach it without hashing the id (the per-message path). */
  presence_handle_t handle;
  conn_chans_t *chans; /* channels joined or observed (channels.c) */
  uint32_t rate_count;
  uint16_t bad_messages;
  uint8_t session_live; /* connected and not yet ended */
  uint8_t close_sent;
  /* An asynchronous store (Redis) has not yet answered the session's open:
   * no welcome yet, input paused (what came with the upgrade waits in
   * c->stash), so a refused session never sees a welcome. */
  uint8_t welcome_pending;
  uint8_t input_held; /* reading stopped by hold_input */
  /* The client message being handled (on_text): answered by an error frame
   * (refused: not activity), or counted as activity already. */
  uint8_t msg_refused;
  uint8_t msg_active;
  uint8_t opened_idle; /* ?status=idle: the welcome says so */
  uint8_t watch_all;   /* "watch": "*" */
  uint8_t join_all;    /* "channels": "*" */
  uint8_t observe_all; /* "observe": "*" */
  /* Last, after the small fields: no padding holes (an idle connection
   * keeps this struct: 144 bytes and its user id). */
  char session_id[37];
  /* The token's sub: in this allocation rather than a malloc chunk of its
   * own. */
  char user[];
};

/* ---- Sessions by id (srv->sessions) ------------------------------------- */

static uint32_t sid_hash(const ws_table_t *t, const char *id) {
  uint64_t h = presence_siphash13(t->k0, t->k1, id, strlen(id));
  return (uint32_t)(h ^ (h >> 32));
}

conn_t *ws_find(srv_t *s, const char *session_id) {
  ws_table_t *t = &s->sessions;
  if (!t->n) return NULL;
  uint32_t mask = t->cap - 1;
  for (uint32_t i = sid_hash(t, session_id) & mask;; i = (i + 1) & mask) {
    conn_t *c = t->slot[i];
    if (!c) return NULL;
    if (strcmp(c->u.ws->session_id, session_id) == 0) return c;
  }
}

static void tab_insert(ws_table_t *t, conn_t *c) {
  uint32_t mask = t->cap - 1;
  uint32_t i = sid_hash(t, c->u.ws->session_id) & mask;
  while (t->slot[i])
    i = (i + 1) & mask;
  t->slot[i] = c;
}

/* c's session id is unique (a fresh UUID): no lookup first. */
static int tab_put(srv_t *s, conn_t *c) {
  ws_table_t *t = &s->sessions;
  if ((t->n + 1) * 4 > t->cap * 3) {
    uint32_t cap = t->cap ? t->cap * 2 : 64;
    conn_t **old = t->slot;
    uint32_t ocap = t->cap;
    conn_t **ns = calloc(cap, sizeof *ns);
    if (!ns) return -1;
    if (!t->k0 && !t->k1) map_hash_keys(&t->k0, &t->k1);
    t->slot = ns;
    t->cap = cap;
    for (uint32_t i = 0; i < ocap; i++)
      if (old[i]) tab_insert(t, old[i]);
    free(old);
  }
  tab_insert(t, c);
  t->n++;
  return 0;
}

/* Linear probing's deletion without tombstones: the entries after the hole
 * that would no longer be found move back into it. */
static void tab_del(srv_t *s, conn_t *c) {
  ws_table_t *t = &s->sessions;
  if (!t->n) return;
  uint32_t mask = t->cap - 1;
  uint32_t i = sid_hash(t, c->u.ws->session_id) & mask;
  for (;; i = (i + 1) & mask) {
    if (!t->slot[i]) return; /* not in the table */
    if (t->slot[i] == c) break;
  }
  t->slot[i] = NULL;
  t->n--;
  for (uint32_t j = (i + 1) & mask; t->slot[j]; j = (j + 1) & mask) {
    uint32_t home = sid_hash(t, t->slot[j]->u.ws->session_id) & mask;
    /* j's entry stays if its home lies cyclically in (i, j]. */
    if (i <= j ? (home > i && home <= j) : (home > i || home <= j)) continue;
    t->slot[i] = t->slot[j];
    t->slot[j] = NULL;
    i = j;
  }
}

void ws_table_free(ws_table_t *t) {
  free(t->slot);
  memset(t, 0, sizeof *t);
}

/* ---- Sending ------------------------------------------------------------- */

int ws_send_frame(conn_t *c, int opcode, const void *payload, size_t len) {
  uint8_t hdr[10];
  size_t hl = ws_frame_header(hdr, opcode, 1, len);
  return conn_write2(c, hdr, hl, payload, len);
}

void ws_echo_close(conn_t *c, uint16_t peer_code) {
  uint8_t payload[125];
  size_t pl = 0;
  if (peer_code != 1005) pl = ws_close_payload(payload, peer_code, "");
  ws_send_frame(c, WS_OP_CLOSE, payload, pl);
  if (!c->closing) conn_close_after_flush(c);
}

int ws_send_text(conn_t *c, const char *json, size_t len) {
  if (c->kind != CONN_WS || !c->u.ws || c->u.ws->close_sent) return -1;
  return ws_send_frame(c, WS_OP_TEXT, json, len);
}

static void send_error(conn_t *c, const char *code, const char *message,
                       const char *id) {
  srv_t *s = c->srv;
  if (c->u.ws) c->u.ws->msg_refused = 1;
  srv_error(s, code, "WebSocket client: %s", message);
  buf_t *b = &s->scratch;
  buf_reset(b);
  json_frame_error(b, code, message, id);
  if (!buf_failed(b)) ws_send_text(c, b->data, b->len);
  buf_shrink(b, 65536);
}

static void send_ack(conn_t *c, const char *id) {
  if (!id || !*id) return;
  buf_t *b = &c->srv->scratch;
  buf_reset(b);
  json_frame_ack(b, id);
  if (!buf_failed(b)) ws_send_text(c, b->data, b->len);
}

/* ---- Session and subscriptions ------------------------------------------- */

static void end_session(conn_t *c, presence_reason_t reason) {
  wsconn_t *w = c->u.ws;
  srv_t *s = c->srv;
  if (!w->session_live) return;
  w->session_live = 0;
  /* Out of the map first: the session.disconnected event this causes must
   * not find the connection and try to close it again. */
  tab_del(s, c);
  if (reason == PRESENCE_REASON_NONE) reason = PRESENCE_REASON_DISCONNECT;
  int rc = presence_handle_end(s->p, w->handle, reason, NULL, NULL);
  if (rc != 0 && rc != PRESENCE_ENOSESSION)
    srv_error(s, "session_end_failed", "ending session %s: %s", w->session_id,
              presence_strerror(rc));
}

static void subs_free(wsconn_t *w) {
  slots_free(w->subs, &w->sub1);
  w->subs = NULL;
  w->nsubs = w->subs_cap = 0;
}

static void unsubscribe_all(conn_t *c) {
  wsconn_t *w = c->u.ws;
  for (uint32_t i = 0; i < w->nsubs; i++)
    watch_remove(c->srv, w->subs[i], c);
  subs_free(w);
}

presence_handle_t ws_handle(const conn_t *c) { return c->u.ws->handle; }
const char *ws_user(const conn_t *c) { return c->u.ws->user; }
int ws_may_channel(const conn_t *c, const char *channel, int join) {
  const wsconn_t *w = c->u.ws;
  if (w->join_all || (!join && w->observe_all)) return 1;
  if (!w->more) return 0;
  return jwt_patterns_match(&w->more->join, channel) ||
         (!join && jwt_patterns_match(&w->more->observe, channel));
}
conn_chans_t **ws_chans(conn_t *c) { return &c->u.ws->chans; }
void ws_send_error(conn_t *c, const char *code, const char *message,
                   const char *id) {
  send_error(c, code, message, id);
}
void ws_send_ack(conn_t *c, const char *id) { send_ack(c, id); }

static void more_free(wsconn_t *w) {
  jwt_claims_free(w->more);
  free(w->more);
  w->more = NULL;
}

/* Keep a verified token's claims in place of w's (taking its strings; *c
 * is zeroed): sub is already in w->user, what the connection needs goes
 * inline, the rest into w->more when there is any. 0, or -1 without memory
 * (*c freed, w's claims unchanged). */
static int claims_take(wsconn_t *w, jwt_claims_t *c) {
  jwt_claims_t *more = NULL;
  free(c->sub);
  c->sub = NULL;
  if (c->watch || c->join.n || c->observe.n || c->meta || c->device) {
    more = malloc(sizeof *more);
    if (!more) {
      jwt_claims_free(c);
      return -1;
    }
    *more = *c;
  }
  more_free(w);
  w->more = more;
  w->exp = c->exp;
  w->watch_all = c->watch_all != 0;
  w->join_all = c->join.all != 0;
  w->observe_all = c->observe.all != 0;
  memset(c, 0, sizeof *c);
  return 0;
}

/* meta and device are needed only to open the session and welcome it:
 * once both are gone, *more goes too unless the token had lists. */
static void more_trim(wsconn_t *w) {
  jwt_claims_t *m = w->more;
  if (m && !m->watch && !m->join.n && !m->observe.n && !m->meta &&
      !m->device)
    more_free(w);
}

void ws_free(wsconn_t *w) {
  if (!w) return;
  ws_parser_free(w->parser);
  more_free(w);
  subs_free(w);
  free(w);
}

void ws_detach(conn_t *c) {
  wsconn_t *w = c->u.ws;
  if (!w) return;
  chan_detach(c); /* first: no channel frame to a connection going away */
  end_session(c, PRESENCE_REASON_DISCONNECT);
  unsubscribe_all(c);
  ws_free(w);
  c->u.ws = NULL;
  c->srv->nws--;
}

/* Metrics name of a close code we send (NULL: a normal close). */
static const char *close_code_name(uint16_t code) {
  switch (code) {
  case WS_CLOSE_PROTOCOL:
    return "ws_protocol_error";
  case WS_CLOSE_UNSUPPORTED:
    return "ws_binary_message";
  case WS_CLOSE_INVALID_DATA:
    return "ws_invalid_utf8";
  case WS_CLOSE_POLICY:
    return "ws_policy";
  case WS_CLOSE_TOO_BIG:
    return "ws_too_big";
  case WS_CLOSE_INTERNAL:
    return "internal";
  case WS_CLOSE_AUTH:
    return "token_expired";
  case WS_CLOSE_KICKED:
    return "kicked";
  case WS_CLOSE_TIMEOUT:
    return "timeout";
  case WS_CLOSE_RATE:
    return "rate_limited";
  case WS_CLOSE_SLOW:
    return "slow_consumer";
  case WS_CLOSE_LIMIT:
    return "too_many_sessions";
  default:
    return NULL;
  }
}

/* The reason a server-initiated close gives the session's end: "disconnect"
 * is the client's own close (the reason table of docs/api.md). */
static presence_reason_t close_reason(uint16_t code) {
  switch (code) {
  case WS_CLOSE_AUTH:
    return PRESENCE_REASON_TOKEN_EXPIRED;
  case WS_CLOSE_RATE:
    return PRESENCE_REASON_RATE_LIMITED;
  case WS_CLOSE_TOO_BIG:
    return PRESENCE_REASON_MESSAGE_TOO_BIG;
  case WS_CLOSE_UNSUPPORTED:
    return PRESENCE_REASON_BINARY_MESSAGE;
  case WS_CLOSE_PROTOCOL:
  case WS_CLOSE_INVALID_DATA:
    return PRESENCE_REASON_PROTOCOL_ERROR;
  case WS_CLOSE_POLICY:
    return PRESENCE_REASON_MALFORMED_MESSAGES;
  case WS_CLOSE_SLOW:
    return PRESENCE_REASON_SLOW_CONSUMER;
  default:
    return PRESENCE_REASON_DISCONNECT;
  }
}

void ws_close(conn_t *c, uint16_t code, const char *err_code,
              const char *message, presence_reason_t reason) {
  wsconn_t *w = c->u.ws;
  if (c->closing || !w || w->close_sent) return;
  if (reason == PRESENCE_REASON_DISCONNECT) reason = close_reason(code);
  /* Every write below may fail and close the connection, which frees w:
   * each write is followed by a check. The subscriptions go before the
   * session ends, so the session's own events are not written to the
   * connection being closed. */
  unsubscribe_all(c);
  end_session(c, reason);
  if (c->closing) return;
  if (err_code) {
    send_error(c, err_code, message ? message : err_code, NULL);
    if (c->closing) return;
  } else if (close_code_name(code) && code != WS_CLOSE_SLOW) {
    srv_error(c->srv, close_code_name(code), "closing WebSocket with %u: %s",
              code, message ? message : "");
  }
  w->close_sent = 1; /* nothing but the close frame goes out from here */
  uint8_t payload[125];
  size_t pl = ws_close_payload(payload, code, message ? message : "");
  ws_send_frame(c, WS_OP_CLOSE, payload, pl);
  if (c->closing) return;
  conn_close_after_flush(c);
}

void ws_shutdown(conn_t *c) {
  ws_close(c, WS_CLOSE_GOING_AWAY, NULL, "server shutting down",
           PRESENCE_REASON_SHUTDOWN);
}

/* ---- Client messages ----------------------------------------------------- */

/* The codes of a malformed message: what only a client's own code gets
 * wrong (docs/protocol.md 1.3 and 4.5). A status message's text or expiry
 * (bad_message, bad_expiry) is what a person typed or picked, refused the
 * same whether the decoder or the library finds it (a text too long, an
 * expiry in the past): it is answered and never counted, so a person
 * trying ten texts is not disconnected. */
static int counts_as_malformed(const char *code) {
  static const char *const codes[] = {
      "bad_json",    "unknown_type",     "bad_field",   "bad_status",
      "bad_user_id", "bad_availability", "bad_channel", "bad_data"};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
    if (strcmp(code, codes[i]) == 0) return 1;
  return 0;
}

/* A message the decoder refused: answer, and after too many malformed ones
 * close with 1008. */
static void bad_message(conn_t *c, const char *code, const char *message,
                        const char *id) {
  send_error(c, code, message, id);
  if (c->closing) return; /* the write failed: the connection is gone */
  if (!counts_as_malformed(code)) return;
  if (++c->u.ws->bad_messages >= MAX_BAD_MESSAGES)
    ws_close(c, WS_CLOSE_POLICY, NULL, "too many malformed messages",
             PRESENCE_REASON_DISCONNECT);
}

static int may_watch(const wsconn_t *w, const char *user) {
  if (w->watch_all || strcmp(user, w->user) == 0) return 1;
  for (size_t i = 0; w->more && i < w->more->n_watch; i++)
    if (strcmp(w->more->watch[i], user) == 0) return 1;
  return 0;
}

static int find_sub(const wsconn_t *w, const char *user) {
  for (uint32_t i = 0; i < w->nsubs; i++)
    if (strcmp(watch_user(w->subs[i]), user) == 0) return (int)i;
  return -1;
}

/* A subscription's snapshot, answered by the store (later, on Redis). */
typedef struct snapshot {
  conn_t *c;
  int has_id;
  char *refused; /* ,"not_allowed":[...] for the snapshot, or NULL */
  char id[];
} snapshot_t;

static void on_snapshot(srv_t *s, int status, char **ids,
                        const presence_user_info_t *infos, size_t n, void *ud) {
  snapshot_t *sn = ud;
  conn_t *c = sn->c;
  (void)ids; /* infos[i].user_id is ids[i] */
  (void)status; /* an unanswered user is reported offline, version 0 */
  if (!c->closing && c->kind == CONN_WS) {
    buf_t *b = &s->scratch;
    buf_reset(b);
    json_frame_snapshot(b, sn->has_id ? sn->id : NULL, infos, n);
    if (sn->refused && !buf_failed(b) && b->len &&
        b->data[b->len - 1] == '}') {
      b->len--; /* the users named refused go inside the frame */
      buf_puts(b, sn->refused);
      buf_putc(b, '}');
    }
    if (!buf_failed(b)) ws_send_text(c, b->data, b->len);
    buf_shrink(b, 65536);
  }
  conn_unref(c);
  free(sn->refused);
  free(sn);
}

/* A subscribe is answered per user, as a batch of subscriptions is by
 * Centrifugo or Phoenix (each its own reply): the users the token's watch
 * allows are subscribed and listed in the snapshot, the others named in
 * its "not_allowed" (docs/protocol.md 1.2). Refused whole for one such
 * user, a client that sends every watched user in one subscribe (the JS
 * client does at each reconnect) watched nobody. Only when no user is
 * allowed is the answer an error (nothing happened), as before. */
static void on_subscribe(conn_t *c, const wsmsg_t *m) {
  srv_t *s = c->srv;
  wsconn_t *w = c->u.ws;
  const cJSON *users = m->users;
  const char *id = m->id;
  char msg[300];
  const cJSON *u;
  uint32_t fresh = 0, refused = 0;
  const char *first_refused = NULL;
  buf_t rb = {0};
  /* The allowed users, in the request's order: subscribed, then asked
   * for the snapshot (the watch list is checked once per user). */
  int nu = cJSON_GetArraySize(users), k = 0;
  char **ids = malloc((size_t)(nu ? nu : 1) * sizeof *ids);
  if (!ids) goto nomem;
  cJSON_ArrayForEach(u, users) {
    if (!may_watch(w, u->valuestring)) {
      if (!refused++) first_refused = u->valuestring;
      buf_puts(&rb, refused > 1 ? "," : ",\"not_allowed\":[");
      buf_put_json_str(&rb, u->valuestring);
      continue;
    }
    ids[k++] = u->valuestring;
    if (find_sub(w, u->valuestring) < 0)
      fresh++; /* duplicates inside one request may overcount: harmless */
  }
  if (refused && !k) {
    snprintf(msg, sizeof msg, "token does not allow watching %.128s",
             first_refused);
    send_error(c, "not_allowed", msg, id);
    goto out;
  }
  if (refused) {
    buf_putc(&rb, ']');
    srv_error(s, "not_allowed",
              "WebSocket client: token does not allow watching %.128s%s",
              first_refused, refused > 1 ? " (and others)" : "");
  }
  if (buf_failed(&rb)) goto nomem;
  if (w->nsubs + fresh > s->cfg.max_watch) {
    snprintf(msg, sizeof msg, "at most %u watched users per connection",
             s->cfg.max_watch);
    send_error(c, "too_many_watched", msg, id);
    goto out;
  }
  for (int i = 0; i < k; i++) {
    if (find_sub(w, ids[i]) >= 0) continue;
    watch_entry_t **subs =
        slots_grow(w->subs, &w->sub1, w->nsubs, &w->subs_cap, sizeof *subs);
    if (!subs) goto nomem;
    w->subs = subs;
    watch_entry_t *e = watch_add(s, ids[i], c);
    if (!e) goto nomem;
    w->subs[w->nsubs++] = e;
  }
  /* The snapshot is asked for after subscribing: a change from here on
   * arrives as a change. With an asynchronous store (Redis) a change may
   * arrive before the snapshot; versions order them. */
  {
    size_t idl = id ? strlen(id) + 1 : 0;
    snapshot_t *sn = calloc(1, sizeof *sn + idl);
    char *rs = refused ? malloc(rb.len + 1) : NULL;
    if (!sn || (refused && !rs)) {
      free(sn);
      free(rs);
      goto nomem;
    }
    if (rs) {
      memcpy(rs, rb.data, rb.len);
      rs[rb.len] = '\0';
    }
    sn->refused = rs;
    if (id) {
      memcpy(sn->id, id, idl);
      sn->has_id = 1;
    }
    sn->c = c;
    conn_ref(c);
    if (users_query(s, ids, (size_t)k, on_snapshot, sn) != 0) {
      conn_unref(c);
      free(sn->refused);
      free(sn);
      goto nomem;
    }
  }
  goto out;
nomem:
  send_error(c, "internal", "out of memory", id);
out:
  buf_free(&rb);
  free(ids);
}

static void on_unsubscribe(conn_t *c, const wsmsg_t *m) {
  wsconn_t *w = c->u.ws;
  const cJSON *users = m->users;
  const char *id = m->id;
  const cJSON *u;
  cJSON_ArrayForEach(u, users) {
    int i = find_sub(w, u->valuestring);
    if (i < 0) continue;
    watch_remove(c->srv, w->subs[i], c);
    w->subs[i] = w->subs[--w->nsubs];
  }
  send_ack(c, id);
}

static void on_status(conn_t *c, const wsmsg_t *m) {
  srv_t *s = c->srv;
  wsconn_t *w = c->u.ws;
  const char *id = m->id;
  presence_status_t status = (presence_status_t)m->status;
  int rc = presence_handle_set_status(s->p, w->handle, status, NULL, NULL);
  if (rc != 0) {
    send_error(c, "internal", presence_strerror(rc), id);
    return;
  }
  send_ack(c, id);
}

/* availability / message: the token's user sets its own. */
/* A setting's answer waits for the store, as the HTTP API's does: an ack
 * sent at once told the client its message was set while the write still
 * sat in front of a stopped Redis, and a write lost with the connection (or
 * a message expiring before Redis came back) was then never shown to
 * anyone, not even as cleared. The answer now says what the store did; a
 * retry after store_unavailable is safe (setting what is set emits
 * nothing). */
typedef struct setting_req {
  conn_t *c;
  char id[sizeof(((wsmsg_t *)0)->id)];
} setting_req_t;

static void setting_answer(conn_t *c, int rc, const char *id) {
  if (rc != 0) {
    const char *code, *msg;
    int http;
    userstatus_error(rc, &code, &msg, &http);
    send_error(c, code, msg, id);
  } else {
    send_ack(c, id);
  }
}

static void on_setting_done(presence_t *p, int status, void *ud) {
  setting_req_t *q = ud;
  conn_t *c = q->c;
  (void)p;
  if (!c->closing && c->kind == CONN_WS && c->u.ws && !c->u.ws->close_sent)
    setting_answer(c, status, q->id);
  conn_unref(c);
  free(q);
}

static void on_setting(conn_t *c, const wsmsg_t *m) {
  setting_req_t *q = malloc(sizeof *q);
  if (!q) {
    setting_answer(c, PRESENCE_ENOMEM, m->id);
    return;
  }
  q->c = c;
  memcpy(q->id, m->id, sizeof q->id);
  conn_ref(c);
  int rc = userstatus_apply(c->srv, c->u.ws->user, m->type, &m->setting,
                            on_setting_done, q);
  if (rc != 0) { /* refused at once: done will not run */
    conn_unref(c);
    free(q);
    setting_answer(c, rc, m->id);
  }
}

static void on_ping(conn_t *c, const char *id) {
  buf_t *b = &c->srv->scratch;
  buf_reset(b);
  json_frame_pong(b, id, srv_now_wall(c->srv));
  if (!buf_failed(b)) ws_send_text(c, b->data, b->len);
}

/* ---- Tokens -------------------------------------------------------------- */

/*
 * A client token, checked the same way at the upgrade and on a refresh:
 * signature and claims (jwt_verify), not already past exp, a valid user id
 * and bounded meta. Returns 0 with *out filled (release with
 * jwt_claims_free), or the HTTP status the upgrade answers (401, 503) with
 * the protocol's error code and message, *out zeroed.
 */
static int token_check(srv_t *s, const char *token, size_t len,
                       jwt_claims_t *out, const char **code, const char **msg) {
  memset(out, 0, sizeof *out);
  if (!s->jwt_secret) {
    *code = "token_signature";
    *msg = "server has no JWT secret configured";
    return 401;
  }
  jwt_config_t jc;
  srv_jwt_config(s, &jc);
  int rc = jwt_verify(&jc, token, len, srv_now_wall(s) / 1000, out);
  if (rc != JWT_OK) {
    *code = rc == JWT_ENOMEM      ? "out_of_memory"
            : rc == JWT_ETOOLARGE ? "token_malformed"
                                  : jwt_err_code(rc);
    *msg = rc == JWT_ENOMEM ? "out of memory" : jwt_strerror(rc);
    return rc == JWT_ENOMEM ? 503 : 401;
  }
  /* The leeway is for a token issuer's clock ahead of ours (nbf); a token
   * already past exp here would be admitted only to be closed with 4001 at
   * the next sweep, after a welcome and a brief "online": an expired token
   * replayed within the leeway is refused now instead. */
  if (srv_now_wall(s) / 1000 >= out->exp) {
    jwt_claims_free(out);
    *code = jwt_err_code(JWT_EEXPIRED);
    *msg = jwt_strerror(JWT_EEXPIRED);
    return 401;
  }
  if (presence_id_check(out->sub) != 0 ||
      (out->meta && strlen(out->meta) > PRESENCE_META_MAX)) {
    jwt_claims_free(out);
    *code = "token_claims";
    *msg = "sub is not a valid user id or meta is too large";
    return 401;
  }
  return 0;
}

/*
 * Token refresh in place ({"type":"token"}): the session goes on under the
 * new token's expiry and grants, with no presence event and no reconnect.
 * Its watch claim replaces the old one, and subscriptions it no longer
 * allows end at once (named in the answer). meta stays as stored at the
 * connect. A token that fails any check, or names another user, is refused
 * with an error frame and the old token stands, expiry included.
 */
static void on_token(conn_t *c, const wsmsg_t *m) {
  srv_t *s = c->srv;
  wsconn_t *w = c->u.ws;
  jwt_claims_t nc;
  const char *code, *msg;
  if (token_check(s, m->token, m->token_len, &nc, &code, &msg) != 0) {
    send_error(c, code, msg, m->id);
    return;
  }
  if (strcmp(nc.sub, w->user) != 0) {
    jwt_claims_free(&nc);
    send_error(c, "token_user_mismatch",
               "the new token is for another user; the old one stands", m->id);
    return;
  }
  free(nc.meta); /* meta and device stay as stored at the connect */
  nc.meta = NULL;
  free(nc.device);
  nc.device = NULL;
  if (claims_take(w, &nc) != 0) { /* sub: the same id as w->user */
    send_error(c, "internal", "out of memory; the old token stands", m->id);
    return;
  }
  s->token_refreshes_total++;
  /* The channel grants, as "watch" below: left first, in a buffer of its
   * own, as the leaves' frames are made in scratch. */
  buf_t gone;
  buf_init(&gone);
  chan_regrant(c, &gone);
  if (c->closing) {
    buf_free(&gone);
    return;
  }
  buf_t *b = &s->scratch;
  buf_reset(b);
  buf_puts(b, "{\"type\":\"ack\"");
  if (m->id[0]) {
    buf_puts(b, ",\"id\":");
    buf_puts(b, m->id);
  }
  buf_puts(b, ",\"exp\":");
  buf_put_i64(b, w->exp);
  uint32_t dropped = 0;
  for (uint32_t i = 0; i < w->nsubs;) {
    const char *user = watch_user(w->subs[i]);
    if (may_watch(w, user)) {
      i++;
      continue;
    }
    buf_puts(b, dropped++ ? "," : ",\"unsubscribed\":[");
    buf_put_json_str(b, user);
    watch_remove(s, w->subs[i], c);
    w->subs[i] = w->subs[--w->nsubs];
  }
  if (dropped) buf_putc(b, ']');
  buf_append(b, gone.data, gone.len);
  buf_free(&gone);
  buf_putc(b, '}');
  if (!buf_failed(b)) ws_send_text(c, b->data, b->len);
  buf_shrink(b, 65536);
}

/* Activity for server-side inactivity (docs/protocol.md 1.2): a message
 * the client sends for its user that the server takes (a setting, a
 * subscribe, a channel operation), never a keepalive. The JS client pings
 * after 25 s of silence and browsers answer the server's WebSocket pings
 * (every heartbeat_ms) by themselves: counted, an open tab whose user had
 * left it never became idle under any --inactivity-ms over those. A ping,
 * a pong and a token refresh (sent by the client library on its own, ahead
 * of expiry) keep the connection alive (timeout_ms), not the session
 * active. A message answered by an error frame did nothing for the user
 * (malformed: a client's bug, looping; refused: not_joined, not_allowed):
 * counted, a tab retrying a refused request stayed online for ever, and
 * one brought an idle user back online. A status message is its own
 * activity in the store (an explicit status restarts the timer): touched
 * first, a session idle by inactivity that the client set idle went
 * online and then idle, a blink for every watcher. */
void ws_activity(conn_t *c) {
  srv_t *s = c->srv;
  wsconn_t *w = c->u.ws;
  if (!w || w->msg_active || w->msg_refused || c->closing) return;
  w->msg_active = 1;
  if (s->cfg.inactivity_ms && w->session_live)
    presence_handle_touch(s->p, w->handle);
}

static void on_text(conn_t *c, const uint8_t *data, size_t len) {
  srv_t *s = c->srv;
  s->ws_messages_total++;
  wsmsg_t m;
  int rc = wsmsg_decode(data, len, s->cfg.max_watch, &m);
  wsconn_t *w = c->u.ws;
  w->msg_refused = 0;
  w->msg_active = 0;
  if (rc == WSMSG_BAD)
    bad_message(c, m.err_code, m.err_msg, m.id);
  else if (rc == WSMSG_TOO_MANY)
    send_error(c, m.err_code, m.err_msg, m.id);
  else if (m.type == WSMSG_STATUS)
    on_status(c, &m);
  else if (m.type == WSMSG_SUBSCRIBE)
    on_subscribe(c, &m);
  else if (m.type == WSMSG_UNSUBSCRIBE)
    on_unsubscribe(c, &m);
  else if (m.type == WSMSG_AVAILABILITY || m.type == WSMSG_MESSAGE)
    on_setting(c, &m);
  else if (m.type == WSMSG_TOKEN)
    on_token(c, &m);
  else if (m.type >= WSMSG_JOIN && m.type <= WSMSG_MEMBERS)
    chan_on_message(c, &m);
  else
    on_ping(c, m.id);
  /* Taken without an error frame: activity, unless a keepalive or a
   * status (above), or a members page (the client library reads the pages
   * after a snapshot by itself, as it refreshes its token: a tab that
   * joined a big room while its user was away is not made active by its
   * own reads). Those that must be active before the store is asked (a
   * join, an update) were counted where they were taken. */
  if (rc == WSMSG_OK && m.type != WSMSG_PING && m.type != WSMSG_TOKEN &&
      m.type != WSMSG_STATUS && m.type != WSMSG_MEMBERS && !c->closing &&
      c->u.ws)
    ws_activity(c);
  wsmsg_free(&m);
}

/* Fixed one-second windows: cheap, and a burst is bounded by twice the
 * limit across a window edge. */
static int over_rate(conn_t *c) {
  wsconn_t *w = c->u.ws;
  /* The time these bytes arrived (conn_feed reads the clock once a read):
   * the messages of one read share it, a clock read a message less. */
  int64_t now = c->last_rx_ms;
  if (now - w->rate_window_ms >= 1000) {
    w->rate_window_ms = now;
    w->rate_count = 0;
  }
  if (++w->rate_count <= c->srv->cfg.max_msgs_per_sec) return 0;
  char msg[96];
  snprintf(msg, sizeof msg, "more than %u messages per second",
           c->srv->cfg.max_msgs_per_sec);
  ws_close(c, WS_CLOSE_RATE, "rate_limited", msg, PRESENCE_REASON_DISCONNECT);
  return 1;
}

static void read_frames(conn_t *c, const char *data, size_t len) {
  const uint8_t *in = (const uint8_t *)data;
  /* Bytes in the shared read buffer are ours to unmask in place: a message
   * that arrived whole in one read is then handed over without a copy, and
   * the parser keeps no buffer of its own for it (an idle connection holds
   * none: 256 bytes and a malloc chunk less each). Other input (the bytes
   * that came with the upgrade request) is copied as before. */
  srv_t *s = c->srv;
  uintptr_t at = (uintptr_t)data, rb = (uintptr_t)s->rbuf;
  int mine = s->rbuf && at >= rb && at - rb + len <= s->rbuf_len;
  while (!c->closing && c->u.ws && !c->u.ws->close_sent) {
    wsconn_t *w = c->u.ws;
    ws_event_t ev;
    size_t n = mine ? ws_parse_inplace(w->parser, (uint8_t *)s->rbuf +
                                                      (in - (const uint8_t *)
                                                                s->rbuf),
                                       len, &ev)
                    : ws_parse(w->parser, in, len, &ev);
    in += n;
    len -= n;
    if (ev.kind != WS_EV_NONE) w->last_frame_ms = c->last_rx_ms;
    switch (ev.kind) {
    case WS_EV_NONE:
      if (n == 0 || len == 0) return;
      break;
    case WS_EV_MESSAGE:
      if (over_rate(c)) return;
      if (ev.opcode != WS_OP_TEXT) {
        ws_close(c, WS_CLOSE_UNSUPPORTED, NULL, "binary messages not accepted",
                 PRESENCE_REASON_DISCONNECT);
        return;
      }
      on_text(c, ev.data, ev.len);
      break;
    case WS_EV_PING:
      if (over_rate(c)) return;
      ws_send_frame(c, WS_OP_PONG, ev.data, ev.len);
      break;
    case WS_EV_PONG: /* the connection's liveness only (last_frame_ms) */
      break;
    case WS_EV_CLOSE: {
      /* Echo the peer's code (none if it sent none), then we are done. */
      w->close_sent = 1;
      unsubscribe_all(c);
      end_session(c, PRESENCE_REASON_DISCONNECT);
      if (c->closing) return;
      ws_echo_close(c, ev.close_code);
      return;
    }
    case WS_EV_ERROR:
      ws_close(c, ev.close_code, NULL, ev.reason ? ev.reason : "protocol error",
               PRESENCE_REASON_DISCONNECT);
      return;
    }
  }
}

/* The parser for a read: the connection's own if it is inside a message,
 * else the server's spare (or a new one). */
static ws_parser_t *parser_take(srv_t *s) {
  ws_parser_t *p = s->spare_parser;
  if (p) {
    s->spare_parser = NULL;
    return p;
  }
  ws_limits_t lim = {s->cfg.max_frame, s->cfg.max_message};
  return ws_parser_new(&lim);
}

void ws_on_read(conn_t *c, const char *data, size_t len) {
  srv_t *s = c->srv;
  wsconn_t *w = c->u.ws;
  if (!w) return;
  if (!w->parser && !(w->parser = parser_take(s))) {
    ws_close(c, WS_CLOSE_INTERNAL, "internal", "out of memory",
             PRESENCE_REASON_DISCONNECT);
    return;
  }
  read_frames(c, data, len);
  /* Back at a message boundary the parser holds nothing of this
   * connection's: an idle connection keeps no parser (about 150 bytes and
   * a malloc chunk each), and the next read borrows the spare again, so
   * there is no allocation per read either. A closed connection's parser
   * went with it (ws_free). */
  w = c->u.ws;
  if (!w || !w->parser || !ws_parser_release_idle(w->parser)) return;
  if (s->spare_parser)
    ws_parser_free(w->parser);
  else
    s->spare_parser = w->parser;
  w->parser = NULL;
}

/* ---- Timers -------------------------------------------------------------- */

void ws_housekeeping(conn_t *c, int64_t now_mono, int64_t now_wall) {
  srv_t *s = c->srv;
  wsconn_t *w = c->u.ws;
  if (!w || w->close_sent) return;
  if (now_mono - w->last_frame_ms >= (int64_t)s->cfg.timeout_ms) {
    ws_close(c, WS_CLOSE_TIMEOUT, NULL, "heartbeat lost",
             PRESENCE_REASON_TIMEOUT);
    return;
  }
  if (now_wall / 1000 >= w->exp) {
    ws_close(c, WS_CLOSE_AUTH, "token_expired", "token expired",
             PRESENCE_REASON_DISCONNECT);
    return;
  }
  if (now_mono - w->last_ping_ms >= (int64_t)s->cfg.heartbeat_ms) {
    w->last_ping_ms = now_mono;
    ws_send_frame(c, WS_OP_PING, NULL, 0);
  }
}

/* ---- The upgrade --------------------------------------------------------- */

/* Whether a comma-separated header value holds token (case-insensitive). */
static int header_has_token(const char *v, size_t len, const char *token) {
  size_t tl = strlen(token);
  size_t i = 0;
  while (i < len) {
    while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t st = i;
    while (i < len && v[i] != ',')
      i++;
    size_t e = i;
    while (e > st && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e - st == tl && !strncasecmp(v + st, token, tl)) return 1;
  }
  return 0;
}

static void send_welcome(conn_t *c);

/* The store admitted the session: the welcome, then the input that waited
 * for it. */
static void welcome_now(conn_t *c) {
  wsconn_t *w = c->u.ws;
  if (!w || !w->welcome_pending) return;
  w->welcome_pending = 0;
  send_welcome(c);
  if (c->closing || !w->input_held) return;
  w->input_held = 0;
  if (!c->capture && conn_read_start(c) != 0) {
    conn_close(c);
    return;
  }
  char *held = c->stash;
  size_t n = c->stash_len;
  c->stash = NULL;
  c->stash_len = 0;
  if (held) ws_on_read(c, held, n);
  free(held);
}

/* Until the store answers: no reading, the upgrade's extra bytes kept. */
static void hold_input(conn_t *c, const char *rest, size_t restlen) {
  c->u.ws->input_held = 1;
  if (!c->capture) uv_read_stop((uv_stream_t *)&c->tcp);
  if (!restlen) return;
  c->stash = malloc(restlen);
  if (!c->stash) {
    ws_close(c, WS_CLOSE_INTERNAL, "internal", "out of memory",
             PRESENCE_REASON_DISCONNECT);
    return;
  }
  memcpy(c->stash, rest, restlen);
  c->stash_len = restlen;
}

static void on_open_done(presence_t *p, int status, void *ud) {
  conn_t *c = ud;
  (void)p;
  if (!c->closing && c->kind == CONN_WS) {
    if (status == PRESENCE_ELIMIT) {
      char msg[96];
      snprintf(msg, sizeof msg, "user already has %u sessions",
               c->srv->cfg.max_sessions_per_user);
      ws_close(c, WS_CLOSE_LIMIT, "too_many_sessions", msg,
               PRESENCE_REASON_DISCONNECT);
    } else if (status == PRESENCE_EEXIST || status == PRESENCE_EID ||
               status == PRESENCE_EMETA || status == PRESENCE_ENOMEM) {
      ws_close(c, WS_CLOSE_INTERNAL, "internal", presence_strerror(status),
               PRESENCE_REASON_DISCONNECT);
    } else {
      if (status != 0)
        srv_log(c->srv, PRESENCE_LOG_DEBUG,
                "session %s: store answered %s; kept, re-asserted later",
                c->u.ws->session_id, presence_err_name(status));
      welcome_now(c);
    }
  }
  conn_unref(c);
}

/* The handshake's headers (RFC 6455 4.2.1): 0 with the accept key, or -1
 * after answering. Shared with the backend connection (backend.c). */
int ws_handshake_check(conn_t *c, http_req_t *r, char accept[29]) {
  if (http_method(r) != HTTP_GET) {
    http_error_hdr(c, 405, "method_not_allowed", "use GET to open a WebSocket",
                   "Allow: GET\r\n");
    return -1;
  }
  /* RFC 6455 4.1: "the HTTP version MUST be at least 1.1" (an HTTP/1.0
   * peer or proxy knows no Upgrade). */
  if (http_minor(r) < 1) {
    http_error(c, 400, "bad_upgrade", "a WebSocket upgrade needs HTTP/1.1");
    return -1;
  }
  size_t ul, cl, kl, vl;
  const char *up = http_header(r, "Upgrade", &ul);
  const char *conn = http_header(r, "Connection", &cl);
  const char *key = http_header(r, "Sec-WebSocket-Key", &kl);
  if (!up || !header_has_token(up, ul, "websocket") || !conn ||
      !header_has_token(conn, cl, "upgrade") || !key || kl == 0) {
    http_error(c, 400, "bad_upgrade",
               "a WebSocket upgrade needs Upgrade: websocket, Connection: "
               "Upgrade and Sec-WebSocket-Key");
    return -1;
  }
  const char *ver = http_header(r, "Sec-WebSocket-Version", &vl);
  if (!ver || vl != 2 || memcmp(ver, "13", 2) != 0) {
    /* RFC 9110 15.5.22: a 426 names the protocol to upgrade to (http.c
     * adds "upgrade" to its Connection); RFC 6455 4.4: and the versions. */
    http_error_hdr(c, 426, "bad_version", "only WebSocket version 13",
                   "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    return -1;
  }
  if (ws_accept_key(key, kl, accept) != 0) {
    http_error(c, 400, "bad_upgrade",
               "Sec-WebSocket-Key is not the base64 of 16 bytes");
    return -1;
  }
  return 0;
}

/* A browser always sends Origin on a WebSocket handshake, and a page on
 * any site can open one to us carrying the user's ambient credentials
 * (cookies, a token it got from a same-site backend): cross-site WebSocket
 * hijacking. Allowed: no Origin (not a browser), the same origin (Origin's
 * host[:port] equal to Host), or one named in --allowed-origins ("*": any).
 * 0, or -1 after answering 403 origin_not_allowed. */
static int check_origin(conn_t *c, http_req_t *r) {
  size_t ol;
  const char *origin = http_header(r, "Origin", &ol);
  if (!origin || srv_origin_allowed(c->srv, r, origin, ol)) return 0;
  http_error(c, 403, "origin_not_allowed",
             "this Origin may not open a WebSocket here (see "
             "--allowed-origins)");
  return -1;
}

/* Fill jc with the daemon's token policy. */
void srv_jwt_config(const srv_t *s, jwt_config_t *jc) {
  memset(jc, 0, sizeof *jc);
  jc->secret = s->jwt_secret;
  jc->secret_len = s->jwt_secret_len;
  jc->audience = s->cfg.jwt_audience;
  jc->issuer = s->cfg.jwt_issuer;
  jc->leeway_s = s->cfg.jwt_leeway_s;
  jc->max_lifetime_s = s->cfg.jwt_max_lifetime_s;
}

/* RFC 9110 15.5.2: a 401 MUST say how to authenticate; RFC 6750 3.1 has a
 * bearer token that was given but refused named invalid_token. */
#define INVALID_TOKEN "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"

/* ?token=: decoded and verified against the policy. 0 with *claims, or -1
 * after answering (401 with the token_* code of docs/protocol.md 1.1). */
static int read_token(conn_t *c, http_req_t *r, jwt_claims_t *claims) {
  srv_t *s = c->srv;
  memset(claims, 0, sizeof *claims);
  size_t tl;
  const char *tq = http_query(r, "token", &tl);
  if (!tq || tl == 0) {
    http_error_hdr(c, 401, "token_missing", "no token: pass ?token=<JWT>",
                   "WWW-Authenticate: Bearer\r\n");
    return -1;
  }
  /* Two tokens: which one a proxy or a log in front read is anyone's
   * guess, and checking the first alone would grant what the other
   * (perhaps the one meant) does not. */
  if (http_query_next(r, "token", tq, &(size_t){0})) {
    http_error_hdr(c, 401, "token_malformed",
                   "token is given twice: give it once", INVALID_TOKEN);
    return -1;
  }
  char *token = malloc(tl + 1);
  if (!token) {
    http_error(c, 503, "out_of_memory", "out of memory");
    return -1;
  }
  int toklen = http_unescape(tq, tl, token, tl + 1);
  if (toklen <= 0) {
    free(token);
    http_error_hdr(c, 401, "token_malformed",
                   "token is not a valid query value", INVALID_TOKEN);
    return -1;
  }
  const char *code, *why;
  int st = token_check(s, token, (size_t)toklen, claims, &code, &why);
  free(token);
  if (st != 0) {
    http_error_hdr(c, st, code, why, st == 401 ? INVALID_TOKEN : NULL);
    return -1;
  }
  return 0;
}

/* The connection becomes a WebSocket: state, 101, timers. Takes claims.
 * 0, or -1 (answered, or the write failed and the connection is gone). */
static int switch_protocols(conn_t *c, http_req_t *r, const char *accept,
                            jwt_claims_t *claims) {
  srv_t *s = c->srv;
  /* No parser yet: the first read borrows one (ws_on_read). */
  size_t ul = strlen(claims->sub) + 1;
  wsconn_t *w = calloc(1, sizeof *w + ul);
  if (!w || srv_uuid4(s->sys, w->session_id) != 0) {
    free(w);
    jwt_claims_free(claims);
    http_error(c, 503, "out_of_memory", "cannot open a session");
    return -1;
  }
  memcpy(w->user, claims->sub, ul);
  if (claims_take(w, claims) != 0) {
    free(w);
    http_error(c, 503, "out_of_memory", "cannot open a session");
    return -1;
  }
  /* Put together by copies, not snprintf: once per connect, and printf's
   * format parsing showed in a connect storm's profile. accept is the
   * 28-character Sec-WebSocket-Accept. */
  static const char h1[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "
                           "websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: ";
  char head[256];
  size_t al = strnlen(accept, sizeof head - sizeof h1 - 4);
  memcpy(head, h1, sizeof h1 - 1);
  memcpy(head + sizeof h1 - 1, accept, al);
  memcpy(head + sizeof h1 - 1 + al, "\r\n\r\n", 4);
  size_t hn = sizeof h1 - 1 + al + 4;
  http_req_free(r);
  c->u.ws = w;
  c->kind = CONN_WS;
  s->nws++;
  if (conn_write(c, head, hn) != 0) return -1;
  int64_t now = srv_now_mono(s);
  w->last_ping_ms = now;
  w->rate_window_ms = now;
  c->last_rx_ms = now;
  w->last_frame_ms = now;
  return 0;
}

static void send_welcome(conn_t *c) {
  srv_t *s = c->srv;
  wsconn_t *w = c->u.ws;
  buf_t *b = &s->scratch;
  buf_reset(b);
  buf_puts(b, "{\"type\":\"welcome\",\"protocol\":1,\"session_id\":");
  buf_put_json_str(b, w->session_id);
  buf_puts(b, ",\"user_id\":");
  buf_put_json_str(b, w->user);
  buf_puts(b, ",\"heartbeat_ms\":"); /* no printf: once per connect */
  buf_put_u64(b, s->cfg.heartbeat_ms);
  buf_puts(b, ",\"timeout_ms\":");
  buf_put_u64(b, s->cfg.timeout_ms);
  /* The token's expiry, so a client can refresh it ahead ({"type":"token"}). */
  buf_puts(b, ",\"exp\":");
  buf_put_i64(b, w->exp);
  /* The session's device kind (docs/protocol.md section 6). */
  buf_puts(b, ",\"device\":");
  buf_put_json_str(b, w->more && w->more->device ? w->more->device
                                                 : PRESENCE_DEVICE_DEFAULT);
  /* The status the session opened with (?status=, docs/protocol.md 1): a
   * client that asked for idle can tell that this server honoured it (an
   * older one ignores the parameter and says nothing here). Input waits
   * for the welcome, so no status message has changed it yet. */
  buf_puts(b, w->opened_idle ? ",\"status\":\"idle\"}"
                             : ",\"status\":\"online\"}");
  if (!buf_failed(b)) ws_send_text(c, b->data, b->len);
  /* The device went to the library with the session's open: not kept for
   * the connection's life. (A failed write may have freed w.) */
  if ((w = c->u.ws) != NULL && w->more) {
    free(w->more->device);
    w->more->device = NULL;
    more_trim(w);
  }
}

/* Open the session in the library. 0 when it is open (or, on an
 * asynchronous store, asked for), -1 when the connection was closed. */
static int open_session(conn_t *c, presence_status_t status) {
  srv_t *s = c->srv;
  wsconn_t *w = c->u.ws;
  /* With an asynchronous store the outcome comes later: ELIMIT (counted
   * cluster-wide) then closes the connection; ESTORE, ETIMEDOUT and
   * EFENCED mean the session is kept and re-asserted once Redis is back. */
  if (srv_async(s)) conn_ref(c);
  /* The id is ours, a random UUIDv4: no cluster-wide claim needed. */
  w->opened_idle = status == PRESENCE_IDLE;
  presence_open_opts_t oo = {.device = w->more ? w->more->device : NULL,
                             .status = status,
                             .flags = PRESENCE_OPEN_RANDOM_ID};
  int rc = presence_session_open_opts(
      s->p, w->session_id, w->user, w->more ? w->more->meta : NULL, &oo,
      &w->handle, srv_async(s) ? on_open_done : NULL, c);
  if (rc != 0 && srv_async(s)) conn_unref(c);
  if (w->more) { /* meta is stored by the library; not needed here */
    free(w->more->meta);
    w->more->meta = NULL;
    more_trim(w);
  }
  if (rc == PRESENCE_ELIMIT) {
    char msg[96];
    snprintf(msg, sizeof msg, "user already has %u sessions",
             s->cfg.max_sessions_per_user);
    ws_close(c, WS_CLOSE_LIMIT, "too_many_sessions", msg,
             PRESENCE_REASON_DISCONNECT);
    return -1;
  }
  if (rc != 0) {
    ws_close(c, WS_CLOSE_INTERNAL, "internal", presence_strerror(rc),
             PRESENCE_REASON_DISCONNECT);
    return -1;
  }
  w->session_live = 1;
  if (tab_put(s, c) != 0) {
    ws_close(c, WS_CLOSE_INTERNAL, "internal", "out of memory",
             PRESENCE_REASON_DISCONNECT);
    return -1;
  }
  return 0;
}

/* ?status=: the status the session opens with (docs/protocol.md 1). A
 * client that reconnects while its user is idle says so here, so that
 * watchers see no online between (a status message after the welcome
 * would come one transition late). 0 with *st, or -1 after answering 400
 * bad_status. */
static int read_status(conn_t *c, http_req_t *r, presence_status_t *st) {
  size_t l;
  const char *q = http_query(r, "status", &l);
  *st = PRESENCE_ONLINE;
  if (!q) return 0;
  if (http_query_next(r, "status", q, &(size_t){0})) {
    http_error(c, 400, "bad_status", "status is given twice: give it once");
    return -1;
  }
  if (l == 4 && memcmp(q, "idle", 4) == 0) *st = PRESENCE_IDLE;
  else if (!(l == 6 && memcmp(q, "online", 6) == 0)) {
    http_error(c, 400, "bad_status", "status must be online or idle");
    return -1;
  }
  return 0;
}

void ws_upgrade(conn_t *c, http_req_t *r, const char *rest, size_t restlen) {
  char accept[29];
  jwt_claims_t claims;
  presence_status_t status;
  if (ws_handshake_check(c, r, accept) != 0 || check_origin(c, r) != 0 ||
      read_status(c, r, &status) != 0 || read_token(c, r, &claims) != 0 ||
      switch_protocols(c, r, accept, &claims) != 0)
    return;
  /* On Redis the session may still be refused (sessions per user are
   * counted cluster-wide): the welcome waits for the store's answer
   * (welcome_now), as on the embedded store no welcome precedes a
   * too_many_sessions. The answer may also come at once, inside the call. */
  int async = srv_async(c->srv);
  c->u.ws->welcome_pending = (uint8_t)async;
  if (open_session(c, status) != 0 || c->closing || !c->u.ws) return;
  if (c->u.ws->welcome_pending) {
    hold_input(c, rest, restlen);
    return;
  }
  if (!async) send_welcome(c);
  if (restlen && !c->closing) ws_on_read(c, rest, restlen);
}

void ws_kick(srv_t *s, const char *session_id) {
  /* The store's own event closes the connection when it answers; closing
   * it here too keeps a kick effective while Redis is away (the end is
   * then re-asserted by the store). */
  presence_session_kick(s->p, session_id, NULL, NULL);
  conn_t *c = ws_find(s, session_id);
  if (c) ws_session_ended(c, PRESENCE_REASON_KICKED);
}

void ws_session_ended(conn_t *c, presence_reason_t reason) {
  wsconn_t *w = c->u.ws;
  if (c->kind != CONN_WS || !w || !w->session_live) return;
  w->session_live = 0;
  tab_del(c->srv, c);
  switch (reason) {
  case PRESENCE_REASON_KICKED:
    ws_close(c, WS_CLOSE_KICKED, "kicked", "session kicked by a backend",
             reason);
    break;
  case PRESENCE_REASON_SHUTDOWN:
    ws_close(c, WS_CLOSE_GOING_AWAY, NULL, "server shutting down", reason);
    break;
  case PRESENCE_REASON_TIMEOUT:
    ws_close(c, WS_CLOSE_TIMEOUT, NULL, "heartbeat lost", reason);
    break;
  default:
    ws_close(c, WS_CLOSE_NORMAL, NULL, "session ended", reason);
    break;
  }
}

/* A session of ours ended by someone else (a kick, a reset) closes its
 * connection. Fired only where the store decided the event; a connection
 * ending its own session removed it from the map first. */
static void on_session_ended(srv_t *s, const presence_event_t *ev, void *ud) {
  (void)ud;
  if (!ev->session_id) return;
  conn_t *c = ws_find(s, ev->session_id);
  if (c) ws_session_ended(c, ev->reason);
}

const fanout_sink_t ws_session_sink = {
    .name = "session ends",
    .types = FANOUT_TYPE(PRESENCE_EV_SESSION_DISCONNECTED),
    .local = 1,
    .on_event = on_session_ended,
};
