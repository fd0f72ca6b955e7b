/* SPDX-License-Identifier: MIT */
/*
 * presenced internals: the server (one libuv loop, one presence_t) and its
 * connections. Shared by the files of src/server; not a public API.
 *
 * A connection starts as HTTP. A WebSocket upgrade turns it into CONN_WS, a
 * GET /v1/events into CONN_SSE; it never goes back. All reads land in one
 * read buffer owned by the server (libuv calls alloc_cb and read_cb back to
 * back on one thread, and every parser copies what it keeps), so an idle
 * connection holds no read buffer at all.
 */
#ifndef PRESENCED_SERVER_H
#define PRESENCED_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "presence.h"
#include "server/buf.h"
#include "server/config.h"
#include "server/json.h"
#include "server/map.h"
#include "server/sys.h"
#include "server/ws.h"

typedef struct srv srv_t;
typedef struct conn conn_t;
typedef struct http_req http_req_t;
typedef struct wsconn wsconn_t;
typedef struct sse_stream sse_stream_t;

typedef struct bconn bconn_t;
typedef struct origin origin_t;

typedef enum { CONN_HTTP = 0, CONN_WS, CONN_SSE, CONN_BACKEND } conn_kind_t;

/* A fan-out sink (fanout.c): one part of the daemon that reacts to presence
 * changes. */
typedef struct fanout_sink {
  const char *name;
  /* The event types it wants, as FANOUT_TYPE bits; 0: every type. */
  uint64_t types;
  /* 0: every event of the cluster, in log order (presence_on_cluster_event).
   * 1: only the events this instance decided (presence_on_event): side
   * effects that must happen once, where the store decided them. */
  uint8_t local;
  /* Events carrying any of these PRESENCE_EVENT_* flags are nothing to it
   * (it still gets them when another sink takes them). */
  unsigned skip_flags;
  /* NULL: always listening; otherwise whether it has anyone to tell now
   * (the sink calls fanout_refresh when that changes). */
  int (*active)(const srv_t *s);
  void (*on_event)(srv_t *s, const presence_event_t *ev, void *ud);
  void *ud;
} fanout_sink_t;
#define FANOUT_TYPE(t) (UINT64_C(1) << (unsigned)(t))

/* A byte string written to many connections (one presence change fanned out
 * to every subscriber): serialised once, freed by the last write. */
typedef struct shbuf {
  uint32_t refs;
  uint32_t len;
  uint8_t data[];
} shbuf_t;

shbuf_t *shbuf_new(size_t len);
void shbuf_unref(shbuf_t *b);

/* Every open connection holds one: ordered with no padding holes (360
 * bytes, a 368-byte malloc chunk; libuv's uv_tcp_t is 248 of them). */
struct conn {
  uv_tcp_t tcp;
  srv_t *srv;
  conn_t *prev, *next; /* srv->conns */
  int64_t last_rx_ms;  /* monotonic: last bytes received */
  /* Monotonic. accepted_ms is read only before the first byte (rx_any, the
   * first-byte timeout), linger_since_ms only once our side is done
   * (draining or close_after_flush), and the sweep looks at the linger
   * first: one slot serves both. */
  union {
    int64_t accepted_ms;
    int64_t linger_since_ms;
  };
  /* A detached connection (conn_new_detached) has no socket: what would be
   * written is appended here. */
  buf_t *capture;
  /* An HTTP request answered later (http_defer): input is paused and what
   * already arrived after it waits here until the answer is written. */
  char *stash;
  union {
    http_req_t *http;
    wsconn_t *ws;
    sse_stream_t *sse;
    bconn_t *backend; /* CONN_BACKEND: GET /v1/backend (backend.c) */
  } u;
  uint32_t stash_len; /* at most one read */
  uint32_t wq_bytes;  /* bytes handed to uv_write, not yet written */
  /* Answers of an asynchronous store (Redis) arrive after the call that
   * asked: each pending one holds a reference, so the conn_t outlives its
   * socket until the last answer has looked at c->closing (conn_ref). */
  uint32_t refs;
  /* A WebSocket's frames of this loop turn, not yet written: the first of
   * its chain in srv->pend (index + 1; 0: none), written in one writev at
   * the end of the turn (server.c, flush_conn). */
  uint32_t pend_first;
  /* The peer's address when counted in srv->per_ip (peer.c; its text is
   * the key there): 4 or 16 bytes, peer_len 0 when not counted (a
   * detached or exempt connection). Binary, not text: 17 bytes, not 48. */
  uint8_t peer_ip[16];
  uint8_t peer_len;
  uint8_t kind;        /* conn_kind_t */
  uint8_t closing;     /* uv_close called: no more I/O */
  uint8_t draining;    /* our side is done: discard input until EOF */
  uint8_t close_after_flush;
  uint8_t over_limit; /* accepted past max_connections: answer 503 */
  uint8_t overflowed; /* write queue limit hit: only the close frame left */
  uint8_t released; /* socket closed while referenced: free on last unref */
  uint8_t awaiting; /* http_defer: an answer is pending */
  uint8_t in_route;
  uint8_t rx_any; /* a byte arrived (the first-byte timeout) */
};

/* Session id -> its WebSocket connection (wsconn.c): open addressing over
 * the connections themselves, keyed by the id each one holds, so a session
 * costs the table a slot (8 bytes at most 3/4 full) instead of a map node
 * with a copy of its 36-character id (80 bytes with malloc's overhead). */
typedef struct ws_table {
  conn_t **slot;
  uint32_t cap, n; /* cap: 0 or a power of two */
  uint64_t k0, k1; /* the hash key (map_hash_keys) */
} ws_table_t;

/* Error codes the server counts (metrics) and logs (once per class). */
typedef struct err_count {
  const char *code;
  uint64_t count;
  uint64_t unlogged;
  int64_t last_log_ms;
} err_count_t;
#define SRV_MAX_ERR_CODES 64

struct srv {
  uv_loop_t *loop;
  srv_config_t cfg;
  const srv_sys_t *sys;
  presence_t *p;
  uint8_t *jwt_secret; /* cfg.jwt_secret or a random demo secret */
  size_t jwt_secret_len;
  char instance_id[40];

  uv_tcp_t listener;
  uv_timer_t tick_timer;  /* presence_tick deadlines */
  uv_timer_t house_timer; /* heartbeats, timeouts, idle HTTP, keepalives */
  uv_timer_t sse_timer;   /* wakes event streams after new events */
  uv_timer_t stop_timer;  /* hard limit of a graceful shutdown */
  uv_signal_t sigterm, sigint, sighup;
  int shutting_down;

  conn_t *conns; /* every open connection */
  uint32_t nconns, nws, nsse;
  uint32_t over_limit_cap; /* connections held past max_connections to be
                              answered 503, at most (server.c) */
  uint64_t accepted_total;
  uint64_t ws_messages_total;
  uint64_t token_refreshes_total; /* tokens replaced in place (wsconn.c) */
  uint64_t wq_bytes_total; /* sum of conn wq_bytes */
  int64_t started_wall_ms, started_mono_ms;

  ws_table_t sessions; /* session id -> conn_t (WebSocket): ws_find */
  map_t watchers; /* user id -> watch entry (watch.c) */
  map_t channels; /* channel -> its joined and observing conns (channels.c) */
  sse_stream_t *sse_streams;
  int sse_pump_pending;

  char *rbuf; /* the shared read buffer */
  size_t rbuf_len;
  buf_t scratch; /* responses and frames being built */

  err_count_t errors[SRV_MAX_ERR_CODES];
  size_t nerrors;

  struct webhooks *webhooks; /* webhook.c; NULL without endpoints */

#define FANOUT_MAX_SINKS 16
  fanout_sink_t sinks[FANOUT_MAX_SINKS]; /* fanout.c, in dispatch order */
  size_t nsinks;
  /* fanout.c: per (local, event type) the sinks that want it, as indexes
   * + 1 in dispatch order, 0-terminated; made again at each add and remove
   * (an event walks its own sinks, not every sink's tests). */
  uint8_t routes[2][PRESENCE_EV_COUNT_][FANOUT_MAX_SINKS + 1];
  /* The engine listeners (cluster, local), filtered to what the routes
   * take; a refresh asked for inside a dispatch waits for its end. */
  int fanout_h[2];
  int fanout_depth, fanout_dirty;

  /* The Redis store (owned by p), or NULL with the embedded store. */
  struct presence_store *rstore;
  int leaving;           /* presence_redis_leave requested, not done */
  int in_house;          /* inside the housekeeping timer callback */
  struct kicker *kicker; /* kick.c: cross-instance kicks (Redis only) */
  struct origins *origins; /* origin.c: backends' sessions */
  /* backend_left.c: channel removals held for detached origins */
  struct backend_held *backend_held;

  map_t per_ip; /* peer address -> open connections (uintptr_t) */

  /* A WebSocket parser between messages holds no state, so an idle
   * connection keeps none: it borrows this one (or a new one) for a read
   * and gives it back when the read ends at a message boundary (wsconn.c,
   * ws_parser_release_idle). A read nested in another (a store answer)
   * just makes another parser. */
  ws_parser_t *spare_parser;

  /* Writes to WebSockets are coalesced per connection per loop turn: each
   * frame is queued here (copied into pend_data, or a reference to a
   * shared frame) and the check handle, which runs after the loop's I/O
   * callbacks, writes each connection's frames with one writev. The idle
   * handle runs while anything is queued, so the loop does not block
   * before the check when a write came after it. */
  struct pend *pend;
  uint32_t npend, pend_cap;
  buf_t pend_data;
  uv_check_t flush_check;
  uv_idle_t flush_idle;
  uint8_t flush_ready; /* the handles exist (srv_init): coalesce */
  uint8_t flush_armed; /* the idle handle runs */
};

/* The Redis store is registered and its sessions asserted (0 without). */
int srv_store_ready(const srv_t *s);

/* Whether the store answers later (Redis): queries and log reads complete
 * on a later loop turn, so callers hold references. */
static inline int srv_async(const srv_t *s) {
  return s->rstore != NULL;
}

/* ---- server.c: lifecycle, connections, writes ---------------------------- */

int srv_init(srv_t *s, uv_loop_t *loop, const srv_config_t *cfg,
             const srv_sys_t *sys);
int srv_listen(srv_t *s);
/* Begin a graceful shutdown (idempotent). The loop ends when it is done. */
void srv_shutdown(srv_t *s);
/* After uv_run returned: free everything. */
void srv_free(srv_t *s);

static inline int64_t srv_now_mono(const srv_t *s) {
  return s->sys->mono_ms(s->sys->ud);
}
static inline int64_t srv_now_wall(const srv_t *s) {
  return s->sys->wall_ms(s->sys->ud);
}
/* Up to a kernel tick behind (srv_sys_t): for reads on every message or
 * event, never for a duration shorter than a few ms. */
static inline int64_t srv_now_mono_coarse(const srv_t *s) {
  return s->sys->mono_ms_coarse ? s->sys->mono_ms_coarse(s->sys->ud)
                                : s->sys->mono_ms(s->sys->ud);
}
static inline int64_t srv_now_wall_coarse(const srv_t *s) {
  return s->sys->wall_ms_coarse ? s->sys->wall_ms_coarse(s->sys->ud)
                                : s->sys->wall_ms(s->sys->ud);
}

/* During a shutdown: finish once connections and webhook deliveries are
 * done (called by whichever of them ends last). */
void srv_maybe_finish(srv_t *s);

/* Queue bytes to a connection: written at once when the socket takes them
 * (no allocation), else copied (or, for shared, referenced) into a write
 * request. Over max_write_queue the connection is a slow consumer: returns
 * -1 and the connection is closed (WebSocket: code 4030). */
int conn_write(conn_t *c, const void *data, size_t len);
int conn_write2(conn_t *c, const void *a, size_t alen, const void *b,
                size_t blen);
int conn_write_shared(conn_t *c, shbuf_t *b);
/* A frame written in place into the loop turn's coalesced writes: the
 * buffer to append the payload to (nothing else may write to it until
 * conn_frame_end), or NULL when c does not coalesce its writes now (then
 * build the frame elsewhere and conn_write2 it). conn_frame_end adds the
 * header and queues the frame; -1 as conn_write. */
buf_t *conn_frame_begin(conn_t *c, size_t *mark);
int conn_frame_end(conn_t *c, size_t mark, int opcode);
/* Close now; pending writes are cancelled. */
void conn_close(conn_t *c);
/* Bytes received from the peer: the one entry point of every protocol
 * (HTTP, then WebSocket or event stream), as the read callback calls it. */
void conn_feed(conn_t *c, const char *data, size_t len);
/* A connection without a socket, for unit tests and fuzzers: feed it with
 * conn_feed, read its answers in *out. Not in s->conns, so no timer sees it;
 * conn_free_detached closes (ending any session) and frees it. */
conn_t *conn_new_detached(srv_t *s, buf_t *out);
void conn_free_detached(conn_t *c);
/* Keep c allocated across an asynchronous answer; unref frees it if its
 * socket closed meanwhile (check c->closing before using it). */
void conn_ref(conn_t *c);
/* (Re)start reading the socket (after a paused HTTP request). */
int conn_read_start(conn_t *c);
void conn_unref(conn_t *c);
/* Close once everything queued is written (a lingering close: our side
 * shuts down, input is discarded until the peer closes or a short timer). */
void conn_close_after_flush(conn_t *c);

/* Count an error by its protocol code and log its class at most every 10 s
 * (one line per class, never one per frame). */
void srv_error(srv_t *s, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void srv_log(srv_t *s, presence_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- http.c ------------------------------------------------------------- */

void http_on_read(conn_t *c, const char *data, size_t len);
/* A request still incomplete http_request_timeout_ms after its first byte
 * (slowloris: a byte now and then keeps the idle timer happy) gets 408. */
void http_housekeeping(conn_t *c, int64_t now_mono);
void http_req_free(http_req_t *r);
/* Accessors for the request being answered. */
const char *http_header(const http_req_t *r, const char *name, size_t *len);
const char *http_path(const http_req_t *r, size_t *len);
/* Query parameter (raw, not decoded) or NULL. */
const char *http_query(const http_req_t *r, const char *name, size_t *len);
/* The next occurrence of the parameter after the one whose value http_query
 * or this returned at prev (NULL: the first), or NULL. */
const char *http_query_next(const http_req_t *r, const char *name,
                            const char *prev, size_t *len);
/* The first of names (NULL-terminated) given more than once, or NULL: a
 * single value given twice is refused, since which one counts would be a
 * guess (a proxy or a framework in front may keep the other). */
const char *http_query_repeated(const http_req_t *r, const char *const *names);
int http_method(const http_req_t *r); /* enum http_method */
int http_minor(const http_req_t *r);  /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
const char *http_body(const http_req_t *r, size_t *len);
/* Answer with a body; keep-alive unless the request or we said close. */
void http_respond(conn_t *c, int status, const char *content_type,
                  const char *extra_headers, const void *body, size_t len);
void http_respond_json(conn_t *c, int status, const buf_t *body);
/* "Date: <IMF-fixdate>\r\n" of the current second (RFC 9110 6.6.1). */
const char *http_date_line(const srv_t *s);
/* {"error":{"code":...,"message":...}}, counted in metrics. */
void http_error(conn_t *c, int status, const char *code, const char *message);
void http_error_hdr(conn_t *c, int status, const char *code,
                    const char *message, const char *extra_headers);
/* Percent-decode src[0..len) into out (NUL-terminated); -1 if malformed, if
 * it decodes to a NUL byte, or if it does not fit. */
int http_unescape(const char *src, size_t len, char *out, size_t cap);
/* The same for a path segment, where '+' is itself (RFC 3986): only a
 * query's form encoding reads it as a space, so /v1/users/a+b is user a+b. */
int http_unescape_path(const char *src, size_t len, char *out, size_t cap);
/* The handler answers later (an asynchronous store): the request is kept
 * and further input paused until http_resume, called after the answer was
 * written (or the connection closed). Takes a reference on c, which
 * http_resume drops. Calling both within the handler is fine. */
void http_defer(conn_t *c);
void http_resume(conn_t *c);

/* ---- userstatus.c: status that people set -------------------------------- */

struct wsmsg_setting;
/* A library refusal of a setting as the protocol's code, message and HTTP
 * status (bad_availability, bad_message, bad_expiry, not_supported, ...). */
void userstatus_error(int rc, const char **code, const char **msg, int *http);
/* Apply a decoded availability (type WSMSG_AVAILABILITY) or message
 * (WSMSG_MESSAGE) to user_id: the library's code. */
int userstatus_apply(srv_t *s, const char *user_id, int type,
                     const struct wsmsg_setting *st, presence_done_cb done,
                     void *ud);
/* PUT /v1/users/{id}/availability, PUT and DELETE /v1/users/{id}/message. */
void api_user_setting(conn_t *c, http_req_t *r, const char *user_id, int type);

/* ---- wsconn.c ----------------------------------------------------------- */

/* GET /v1/ws: checks, token, 101, then the session. rest: bytes after the
 * request, already WebSocket frames. */
void ws_upgrade(conn_t *c, http_req_t *r, const char *rest, size_t restlen);
void ws_on_read(conn_t *c, const char *data, size_t len);
/* Close with a code: end the session for reason (if it still exists), send
 * an error frame first when err_code is set, then the close frame. */
void ws_close(conn_t *c, uint16_t code, const char *err_code,
              const char *message, presence_reason_t reason);
/* Per-connection timers, run by the housekeeping sweep. */
void ws_housekeeping(conn_t *c, int64_t now_mono, int64_t now_wall);
/* Called once when the connection goes away: end the session, drop the
 * subscriptions, free the state. */
void ws_detach(conn_t *c);
void ws_free(wsconn_t *w);
/* The library ended this connection's session (kick, reset): close it with
 * the code that reason calls for. */
void ws_session_ended(conn_t *c, presence_reason_t reason);
/* Kick this instance's session session_id: end it (reason kicked) and
 * close its connection. */
void ws_kick(srv_t *s, const char *session_id);
/* The WebSocket connection holding this session (live), or NULL. */
conn_t *ws_find(srv_t *s, const char *session_id);
void ws_table_free(ws_table_t *t);
/* Closes the connection of a session of ours that someone else ended (a
 * kick, a reset): session.disconnected events decided here. */
extern const fanout_sink_t ws_session_sink;
/* One unfragmented frame to a WebSocket peer (client or backend). */
int ws_send_frame(conn_t *c, int opcode, const void *payload, size_t len);
/* Answer the peer's close frame (its code echoed; none if it sent none) and
 * close once written. */
void ws_echo_close(conn_t *c, uint16_t peer_code);
/* Send a text frame (JSON) to the client. */
int ws_send_text(conn_t *c, const char *json, size_t len);
/* Send server shutdown close (1001) and end the session with reason
 * shutdown. */
void ws_shutdown(conn_t *c);

/* The daemon's token policy (secret, audience, issuer, leeway, lifetime)
 * as jwt_verify takes it; every verification of a client token uses it. */
struct jwt_config;
void srv_jwt_config(const srv_t *s, struct jwt_config *jc);

/* ---- origin.c: who may talk to us from a browser -------------------------- */

/* Whether a browser page of origin[0..len) may open a WebSocket: "*" in
 * --allowed-origins, an origin listed there, or (always) the same origin as
 * the request's Host. */
int srv_origin_allowed(const srv_t *s, const http_req_t *r, const char *origin,
                       size_t len);
/* Whether a Host header value (host[:port]) names a loopback address. */
int srv_host_is_loopback(const char *host, size_t len);
/* Whether an Origin value (scheme://host[:port]) is on a loopback host. */
int srv_origin_is_loopback(const char *origin, size_t len);

/* ---- peer.c: connections per client address --------------------------- */

/* Count an accepted connection under its peer's address: 0, or -1 when
 * that address is at --max-connections-per-ip (not counted then). */
int peer_admit(srv_t *s, conn_t *c);
/* Uncount it (on close; idempotent). */
void peer_release(srv_t *s, conn_t *c);

/* ---- fanout.c: the one subscriber to the engine's events ----------------- */

/* fanout_sink_t and FANOUT_TYPE: above struct srv. */


/* Subscribe to the engine and register the built-in sinks (watch_sink,
 * sse_sink, ws_session_sink). */
int fanout_init(srv_t *s);
void fanout_free(srv_t *s);
/* Add a sink (copied): its id for fanout_sink_remove, or -1 when all
 * FANOUT_MAX_SINKS slots are taken. Not from inside a dispatch. */
int fanout_sink_add(srv_t *s, const fanout_sink_t *sink);
void fanout_sink_remove(srv_t *s, int id);
/* A sink's active() may have changed: the routes, and what the engine is
 * asked to dispatch at all, made again (after the dispatch, if inside one). */
void fanout_refresh(srv_t *s);

/* ---- watch.c: WebSocket subscribers of users ----------------------------- */

/* ---- channels.c: channels over the WebSocket ------------------------------ */

typedef struct conn_chans conn_chans_t;
struct wsmsg;
extern const fanout_sink_t channel_sink;
extern const fanout_sink_t channel_avail_sink;
/* join, update, leave, observe, unobserve (docs/protocol.md section 4). */
void chan_on_message(conn_t *c, const struct wsmsg *m);
/* The connection goes: out of every channel's index. */
void chan_detach(conn_t *c);
/* After a token refresh: leave, or stop observing, every channel the new
 * grants do not cover, naming them in b (the ack) as ,"left":[...] and
 * ,"unobserved":[...]. */
void chan_regrant(conn_t *c, buf_t *b);
/* api_channels.c: the channel endpoints of the backend API; 1 if the path
 * was one of them (answered), 0 otherwise. */
int api_channels(conn_t *c, http_req_t *r, const char *path, size_t pl,
                 int method);
/* What channels.c needs of a WebSocket connection (wsconn.c). */
presence_handle_t ws_handle(const conn_t *c);
/* The connection's user (its token's sub). */
const char *ws_user(const conn_t *c);
/* Whether its token grants joining channel (join 1) or observing it
 * (join 0: the "observe" patterns, or any that grant joining). */
int ws_may_channel(const conn_t *c, const char *channel, int join);
conn_chans_t **ws_chans(conn_t *c);
void ws_send_error(conn_t *c, const char *code, const char *message,
                   const char *id);
void ws_send_ack(conn_t *c, const char *id);
/* The message being handled is activity (protocol.md 1.2): called where a
 * request is taken, before the store is asked, so that what it does is
 * done by an active session (a join shows the member online, not idle and
 * then online). Once per message; a message refused with an error frame
 * before it is never activity. */
void ws_activity(conn_t *c);

/* ---- subindex.c: connections subscribed to a key ------------------------- */

typedef struct sub_entry {
  const char *key; /* the map's copy of the key */
  /* &sub1 while one subscriber fits (a user watched by one connection:
   * no 32-byte array of its own; sub1 sits in the padding of the 48-byte
   * malloc chunk the entry takes anyway), a malloc'd array past that. */
  conn_t **subs;
  uint32_t n, cap;
  uint8_t busy; /* being iterated: freed by the iterator when emptied */
  conn_t *sub1;
} sub_entry_t;
/* A small array of pointers whose first element lives inline in its owner
 * (most owners hold one: no malloc chunk for it). slots_grow returns the
 * array with room for element n: v itself while n < *cap, inline1 when
 * *cap was 0 (then 1), else a heap array of twice *cap (the inline element
 * copied over); NULL without memory (v and *cap unchanged). slots_free
 * frees a heap array. */
void *slots_grow(void *v, void *inline1, uint32_t n, uint32_t *cap,
                 size_t size);
void slots_free(void *v, void *inline1);
/* Subscribe c to key (the entry made on first use); NULL without memory. */
sub_entry_t *subindex_add(map_t *m, const char *key, conn_t *c);
/* Unsubscribe; the entry goes with its last subscriber. */
void subindex_remove(map_t *m, sub_entry_t *e, conn_t *c);
/* Write frame (JSON of one text frame) to every open WebSocket subscriber
 * of e that skip (if given) does not refuse, serialised once and shared;
 * after (if given) runs for each subscriber written to, with its index in
 * e->subs, and may drop it from e->subs (e is busy: not freed meanwhile).
 * 0, or -1 without memory. */
int subindex_send(srv_t *s, map_t *m, sub_entry_t *e, const buf_t *frame,
                  int (*skip)(conn_t *c, void *ud),
                  void (*after)(conn_t *c, uint32_t i, void *ud), void *ud);

typedef struct sub_entry watch_entry_t;
extern const fanout_sink_t watch_sink;
/* Subscribe c to user_id; returns the entry (kept by the connection) or NULL
 * on allocation failure. Idempotent per connection only if the caller checks
 * (wsconn keeps its list). */
watch_entry_t *watch_add(srv_t *s, const char *user_id, conn_t *c);
void watch_remove(srv_t *s, watch_entry_t *e, conn_t *c);
const char *watch_user(const watch_entry_t *e);

/* ---- users.c: many users' presence, whatever the store ------------------- */

/* The users' presence, asked of the store (asynchronously on Redis): cb
 * runs once with infos[i] for ids[i] (an unanswered one is offline with
 * version 0; status is the first error, if any). ids are copied. Returns 0,
 * or -1 (out of memory: cb does not run). */
typedef void (*users_cb)(srv_t *s, int status, char **ids,
                         const presence_user_info_t *infos, size_t n, void *ud);
int users_query(srv_t *s, char **ids, size_t n, users_cb cb, void *ud);

/* ---- api.c / sse.c / metrics.c / demo.c ---------------------------------- */

void api_handle(conn_t *c, http_req_t *r);
void sse_start(conn_t *c, http_req_t *r);
/* Wakes the event streams after new events (every type). */
extern const fanout_sink_t sse_sink;
void sse_notify(srv_t *s);
void sse_pump(srv_t *s, int final);
void sse_housekeeping(conn_t *c, int64_t now_mono);
void sse_detach(conn_t *c);
void sse_on_drain(conn_t *c);
void metrics_handle(conn_t *c, http_req_t *r);
void demo_handle(conn_t *c, http_req_t *r);
/* In demo mode without --jwt-secret: a random secret for this run. */
int demo_init(srv_t *s);

/* ---- backend.c: GET /v1/backend, a backend's session connection -------- */

/* The upgrade: API key, origin, 101, welcome. rest: bytes after the request
 * (already WebSocket frames). */
void backend_upgrade(conn_t *c, http_req_t *r, const char *rest,
                     size_t restlen);
void backend_on_read(conn_t *c, const char *data, size_t len);
void backend_housekeeping(conn_t *c, int64_t now_mono);
/* The connection goes away: detach its origin (its sessions wait out the
 * resume window), free the state. */
void backend_detach(conn_t *c);
/* Send an error frame first when err_code is set, then close with code. */
void backend_close(conn_t *c, uint16_t code, const char *err_code,
                   const char *message);
/* The protocol's code of a channel error of the library (bad_channel,
 * data_too_large, too_many_channels, not_joined; internal otherwise):
 * channels.c, shared with backend ops (origin.c). */
const char *channel_error_code(int rc);
/* PUT /v1/sessions/{id} (a session with a TTL) and GET /v1/origins. */
void backend_http_put_session(conn_t *c, http_req_t *r, const char *id);
void backend_http_origins(conn_t *c);
/* Another connection took this one's origin: forget it, close with 4009. */
void backend_taken_over(conn_t *c);
/* {"type":"ended","session":...,"reason":...} to the origin's backend. */
void backend_notify_ended(conn_t *c, const char *session_id,
                          presence_reason_t reason);

/* ---- backend_left.c: channel removals told to backends ------------------- */

/* {"type":"left","session":...,"channel":...,"reason":"kicked"}; with a
 * code, a join or update the store refused after its ack:
 * "reason":"refused","code":code,"message":message. */
void backend_notify_left(conn_t *c, const char *session_id,
                         const char *channel, const char *code,
                         const char *message);
/* Keep that notice for a detached origin until a connection for its name
 * comes back (bounded: the oldest go first). */
void backend_left_hold(srv_t *s, const char *origin, const char *session_id,
                       const char *channel, const char *code,
                       const char *message);
/* Send origin's held notices to c (before its welcome) and forget them. */
void backend_left_release(conn_t *c, const char *origin);
void backend_left_free(srv_t *s);
/* Redis: removals decided on other instances, told to our backends. */
extern const fanout_sink_t backend_left_sink;

/* ---- origin.c: origins and the sessions they report ---------------------- */

/* The registry (and the built-in origin "http"); the fan-out sink that
 * notices a backend session ended by someone else (a kick). */
int origin_init(srv_t *s);
/* Release its loop handles (srv_finish); origin_free after the loop. */
void origin_close(srv_t *s);
void origin_free(srv_t *s);
/* Attach connection c to the origin called name, creating it, or resuming
 * it (*resumed = 1) when it still holds sessions; a connection already
 * attached to it is closed with 4009. NULL: out of memory, or *full set
 * (over --max-origins). */
origin_t *origin_attach(srv_t *s, const char *name, conn_t *c, int *resumed,
                        int *full);
/* Its connection is gone: the resume window starts (or, without sessions,
 * the origin goes at once). */
void origin_detach(srv_t *s, origin_t *o);
/* Redis: the store answered o's connection's claim of its name with
 * counter. -1 when another instance's newer claim was told meanwhile: the
 * connection is then closed with 4009 (backend_taken_over). */
int origin_claimed(srv_t *s, origin_t *o, uint64_t counter);
const char *origin_name(const origin_t *o);
uint32_t origin_session_count(const origin_t *o);
/* A channel removal took session_id out of channel: tell its backend if
 * it is one of a backend origin here (probe: only if the store's local
 * record still had the membership, which then goes). 1 if told or held. */
int origin_channel_removed(srv_t *s, const char *session_id,
                           const char *channel, int probe);
/* Whether an origin here (a backend's, or the HTTP origin's) holds the
 * session. */
int origin_holds(const srv_t *s, const char *session_id);
/* Whether any backend (not the HTTP origin) holds a session here. */
int origin_has_backend_sessions(const srv_t *s);
/* One decoded op of a batch (or a session of a sync) on o: NULL, or the
 * per-op error code with a message. */
struct bop;
const char *origin_apply(srv_t *s, origin_t *o, const struct bop *op,
                         const char **message);
/* A sync: the first frame starts it (sessions named from then on are kept),
 * origin_sync_end ends the sessions not named and says how many were
 * opened and closed by it. */
void origin_sync_begin(origin_t *o);
void origin_sync_end(srv_t *s, origin_t *o, uint32_t *opened,
                     uint32_t *closed);
/* Take n ops from the origin's budget of the current second: 0, or -1 with
 * the milliseconds until it refills. */
int origin_take_ops(srv_t *s, origin_t *o, uint32_t n, uint32_t *retry_ms);
/* End every session of o now (bye: reason disconnect). */
void origin_end_all(srv_t *s, origin_t *o, presence_reason_t reason);
/* Detached origins past their window, HTTP sessions past their TTL. */
void origin_housekeeping(srv_t *s, int64_t now_mono);
/* Shutdown: every backend session ends with reason shutdown. */
void origin_shutdown(srv_t *s);
/* {"origins":[...]} for GET /v1/origins. */
void origin_list_json(srv_t *s, buf_t *b);
/* Counts for /metrics. */
void origin_counts(srv_t *s, uint64_t *connected, uint64_t *detached,
                   uint64_t *sessions, uint64_t *ops_total);
/* The store's answer to a created HTTP session (origin_http_put's
 * *pending): code NULL (kept), or the error code and its HTTP status. */
typedef void (*origin_put_cb)(srv_t *s, const char *code, int http_status,
                              void *ud);
/* PUT /v1/sessions/{id}: create (*created = 1) or renew an HTTP session of
 * user with a TTL; status 0 keeps the current one; device (NULL: web) is
 * the new session's (a renewal keeps it). NULL, or an error code with its
 * HTTP status in *http_status. With an asynchronous store a created session
 * may be refused later: *pending is then set and cb(ud) gets the answer. */
const char *origin_http_put(srv_t *s, const char *session_id,
                            const char *user, uint32_t ttl_ms, int status,
                            const char *meta, const char *device, int *created,
                            int64_t *expires_wall_ms, int *http_status,
                            origin_put_cb cb, void *ud, int *pending);

/* ---- wsconn.c: the upgrade's checks shared with backend.c ---------------- */

/* Method, Upgrade/Connection/Sec-WebSocket-Key and the version: 0 with the
 * Sec-WebSocket-Accept value in accept, or -1 after answering the error. */
int ws_handshake_check(conn_t *c, http_req_t *r, char accept[29]);
/* The API key of the backend API (api.c): 0, or -1 after answering 401. */
int api_require_key(conn_t *c, const http_req_t *r);

/* ---- kick.c: kicks of sessions held by other instances (Redis) ---------- */

/* Connect the kick channel (no-op with the embedded store). */
int kick_init(srv_t *s);
/* Release its loop handles (before the loop ends); kick_free after. */
void kick_close(srv_t *s);
void kick_free(srv_t *s);
/* Ask the instance holding session_id to kick it: done(ud, 1) if some
 * instance holds it and was asked, 0 if no instance holds it, < 0 if Redis
 * could not be asked. */
int kick_remote(srv_t *s, const char *session_id,
                void (*done)(srv_t *s, int found, void *ud), void *ud);


/* ---- interest.c: what this worker's clients watch, for the machine's
 * log reader (--workers; no-ops otherwise) ---- */

/* Hooks the subscriber indexes (users watched, channels joined or
 * observed) to the shared table. */
void srv_interest_init(srv_t *s);
/* Count (1) or uncount (-1) a consumer of every event (an event stream,
 * a webhook endpoint this worker delivers). */
void srv_interest_all(srv_t *s, int delta);

/* ---- workers.c: --workers N, one supervisor and N worker processes ---- */

/* Forks cfg->workers workers and supervises them. Returns the worker's
 * number (1..N) in a worker, with cfg set for it: the caller runs the
 * daemon. Returns 0 in the supervisor once every worker has stopped, with
 * *exit_code the process's exit status. */
int workers_run(srv_config_t *cfg, int *exit_code);

#endif
