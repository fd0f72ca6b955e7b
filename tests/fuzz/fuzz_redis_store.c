/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the Redis store as a whole (src/store/redis.c, its
 * answer handlers, redis_conn.c, redis_shard.c, redis_feed.c): a real
 * presence_t on the Redis store (include/presence_redis.h, as presenced
 * uses it) on a libuv loop of the harness, connected over a unix socket to
 * a fake Redis the harness runs on the same loop. The input is what that
 * Redis does: it reads the store's commands and answers each as the input
 * says, while the input also makes the API calls and moves the clock. The
 * party that could send anything is a proxy or a misbehaving Redis
 * (another version, a Redis-compatible server); the store must answer its
 * callers with a store error, log, reconnect, and never crash, leak or
 * stall.
 *
 * Input: byte 0, the configuration (bit 0: small reply limits, 1: offline
 * grace, 2: inactivity timeout, 3: two shards, 4: SELECT 1, 5: kick and
 * origin listeners, 6: a follower's feed (the store copies its log reads
 * to the harness), 7: a feed in (the store takes the log from the harness
 * and runs no XREAD until it ends); each feed end is a connection, the
 * first ones, that ops answer into or close); then ops, one byte each,
 * by their low 3 bits:
 *   0-2 ANSWER the oldest command of connection (b >> 3) % live with the
 *       reply tree that follows (below)
 *   3   CALL the API: the next byte picks the call (% N_CALLS) and its
 *       session/user (/ N_CALLS)
 *   4   TICK (op >> 3) + 1 times: fire the earliest due timer (the store's
 *       libuv timers, or presence_t's deadline), the clock moving to it
 *   5   CLOSE connection (b >> 3) % live
 *   6   RAW: a length byte and that many bytes, written as they are
 *   7   ANSWER the oldest command of every live connection, one tree each
 * A reply tree: a type byte (low 3 bits) then its body: 0 "+" text,
 * 1 "-" text, 2 ":" integer, 3 "$" bulk, 4 "$-1", 5 "*" count (% 17, or
 * 255: two bytes) then the elements, 6 "*-1", 7 a RESP3 line (type byte
 * from "%~_,#(=>|" and text). Text: a length byte (255: two more bytes,
 * big-endian) and the bytes; for + - and RESP3 lines CR and LF become
 * spaces, so mutations stay well-formed RESP. Integer: a byte below 0xF0
 * is value - 16, else eight big-endian bytes. Trees nest at most 6 deep.
 *
 * Checks besides memory errors and leaks: the store sends well-formed RESP
 * commands (arrays of bulk strings); every done callback runs exactly once
 * (presence_free completes the pending ones) with 0 or a PRESENCE_E* code,
 * and (inputs of odd length) none is still owed once Redis went away;
 * what a query answers is readable with statuses in range; the loop holds
 * no handle of the store after presence_free.
 *
 * Recorder (seed making, tests/fuzz/record_redis_store.py): with
 * FUZZ_REDIS_RECORD=<a real redis-server's unix socket> and
 * FUZZ_REDIS_RECORD_OUT=<file>, the input is a plan instead: its first
 * byte the configuration, then letters: 'a' answer every pending command
 * but a blocking XREAD until none is left, 'r' answer the pending XREADs
 * once, 'w' wait 7 s (leases of 6 s run out on the real Redis's clock),
 * 'f' pass the log (XREAD from its start) into a feed in, 'c' then a
 * byte: that CALL, 't' TICK. Each command is forwarded to
 * the real Redis (one connection per fake one) and its answer written as
 * the input encoding above: the seed replays the same conversation.
 */
#include "presence.h"
#include "presence_redis.h"
#include "store/redis_resp.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#define MAX_OPS 600
#define MAX_CONNS 48
#define MAX_DEPTH 6
#define MAX_NODES 600 /* of one reply tree */

/* ---- the fake clock ------------------------------------------------------ */

#define WALL_MS INT64_C(1700000000000)
static int64_t mono;
static int64_t fake_wall(void *ud) {
  (void)ud;
  return WALL_MS + mono;
}
static int64_t fake_mono(void *ud) {
  (void)ud;
  return mono;
}

/* ---- the input ----------------------------------------------------------- */

typedef struct {
  const uint8_t *p;
  size_t n, at;
} in_t;

static bool in_more(const in_t *in) { return in->at < in->n; }
static uint8_t in_u8(in_t *in) { return in->at < in->n ? in->p[in->at++] : 0; }

/* ---- a growing byte buffer ----------------------------------------------- */

typedef struct {
  char *b;
  size_t len, cap;
} buf_t;

static void buf_put(buf_t *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    char *nb = realloc(b->b, cap);
    if (!nb) abort();
    b->b = nb;
    b->cap = cap;
  }
  if (n) memcpy(b->b + b->len, p, n);
  b->len += n;
}
static void buf_byte(buf_t *b, uint8_t c) { buf_put(b, &c, 1); }
static void buf_str(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

/* ---- the fake Redis ------------------------------------------------------ */

typedef struct cmdq {
  struct cmdq *next;
  redisReply *cmd;
} cmdq_t;

typedef struct fconn {
  uv_pipe_t h;
  bool live;
  presence__resp_reader_t rd;
  cmdq_t *head, *tail;
  int real; /* recorder: the real Redis's socket, -1 none */
  bool orphan; /* not in conns[]: freed when closed */
  /* The machine's log feed (presenced --workers, redis_feed.c): the other
   * end of the store's feed_out, which gets the store's log reads as
   * replies; or of its feed_in, which the input answers into. */
  bool feed_out, feed_in;
} fconn_t;

static uv_loop_t loop;
static uv_pipe_t listener;
static fconn_t *conns[MAX_CONNS];
static size_t n_conns; /* ever accepted this run */
static char sock_path[108];
static char store_url[128];
static bool recording;
static const char *real_path;
static buf_t rec; /* the recorder's output */
static bool trace; /* FUZZ_REDIS_TRACE: the conversation on stderr */

static const presence_allocator_t *alloc(void) {
  return presence__default_allocator();
}

static void on_fconn_closed(uv_handle_t *h) {
  fconn_t *c = h->data;
  while (c->head) {
    cmdq_t *q = c->head;
    c->head = q->next;
    presence__resp_free(alloc(), q->cmd);
    free(q);
  }
  presence__resp_fini(&c->rd);
  if (c->real >= 0) close(c->real);
  /* conns[] keeps it until the run's end, for live_conn's count. */
  if (c->orphan) free(c);
}

static void fconn_close(fconn_t *c) {
  if (!c->live) return;
  c->live = false;
  uv_close((uv_handle_t *)&c->h, on_fconn_closed);
}

static void on_alloc(uv_handle_t *h, size_t want, uv_buf_t *b) {
  fconn_t *c = h->data;
  char *p;
  size_t n;
  if (want > 65536) want = 65536;
  if (presence__resp_space(&c->rd, want, &p, &n) != 0) {
    b->base = NULL;
    b->len = 0;
    return;
  }
  b->base = p;
  b->len = n;
}

/* The store's commands: each an array of bulk strings, or the store wrote
 * something no Redis reads. */
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  fconn_t *c = s->data;
  (void)b;
  if (nread < 0) {
    fconn_close(c);
    return;
  }
  if (nread == 0) return;
  presence__resp_commit(&c->rd, (size_t)nread);
  for (;;) {
    redisReply *cmd = NULL;
    int rc = presence__resp_next(&c->rd, &cmd);
    if (rc == 0) break;
    if (rc < 0) abort(); /* the store sent bytes that are not RESP */
    if (c->feed_out) { /* a log read copied: a reply of any shape */
      presence__resp_free(alloc(), cmd);
      continue;
    }
    if (cmd->type != REDIS_REPLY_ARRAY || cmd->elements == 0) abort();
    for (size_t i = 0; i < cmd->elements; i++)
      if (cmd->element[i]->type != REDIS_REPLY_STRING) abort();
    if (trace) {
      fprintf(stderr, "conn %p <", (void *)c);
      for (size_t i = 0; i < cmd->elements && i < 12; i++)
        fprintf(stderr, " %.40s", cmd->element[i]->str);
      fprintf(stderr, "\n");
    }
    cmdq_t *q = calloc(1, sizeof *q);
    if (!q) abort();
    q->cmd = cmd;
    if (c->tail)
      c->tail->next = q;
    else
      c->head = q;
    c->tail = q;
  }
}

static void on_unaccepted(uv_handle_t *h) { free(h->data); }

static void on_accept(uv_stream_t *srv, int status) {
  if (status != 0) return;
  fconn_t *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->real = -1;
  uv_pipe_init(&loop, &c->h, 0);
  c->h.data = c;
  if (uv_accept(srv, (uv_stream_t *)&c->h) != 0) {
    uv_close((uv_handle_t *)&c->h, on_unaccepted);
    return;
  }
  presence__resp_init(&c->rd, alloc(), (size_t)1 << 24, (size_t)1 << 20);
  c->live = true;
  if (n_conns == MAX_CONNS) {
    c->orphan = true;
    fconn_close(c); /* a store reconnecting that often: enough */
    return;
  }
  conns[n_conns++] = c;
  uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read);
}

/* The harness's end of a feed socket pair, a connection like the others
 * (the input answers into it, or closes it). */
static void feed_conn(int fd, bool out) {
  fconn_t *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->real = -1;
  c->feed_out = out;
  c->feed_in = !out;
  uv_pipe_init(&loop, &c->h, 0);
  c->h.data = c;
  if (uv_pipe_open(&c->h, fd) != 0) abort();
  presence__resp_init(&c->rd, alloc(), (size_t)1 << 24, (size_t)1 << 20);
  c->live = true;
  conns[n_conns++] = c;
  uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read);
}

static fconn_t *live_conn(uint8_t sel) {
  size_t live = 0;
  for (size_t i = 0; i < n_conns; i++) live += conns[i]->live;
  if (!live) return NULL;
  size_t k = sel % live;
  for (size_t i = 0; i < n_conns; i++)
    if (conns[i]->live && k-- == 0) return conns[i];
  return NULL;
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

static void fconn_write(fconn_t *c, const char *p, size_t n) {
  if (!c->live || !n) return;
  if (trace)
    fprintf(stderr, "conn %p > %.*s\n", (void *)c, (int)(n < 200 ? n : 200),
            p);
  uv_write_t *w = malloc(sizeof *w + n);
  if (!w) abort();
  memcpy(w + 1, p, n);
  uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
  if (uv_write(w, (uv_stream_t *)&c->h, &b, 1, on_written) != 0) free(w);
}

static void fconn_pop(fconn_t *c) {
  cmdq_t *q = c->head;
  if (!q) return;
  c->head = q->next;
  if (!c->head) c->tail = NULL;
  presence__resp_free(alloc(), q->cmd);
  free(q);
}

/* ---- reply trees ------------------------------------------------------- */

static void tree_text(in_t *in, buf_t *out, bool line) {
  size_t n = in_u8(in);
  if (n == 255) {
    n = (size_t)in_u8(in) << 8;
    n |= in_u8(in);
  }
  for (size_t i = 0; i < n; i++) {
    uint8_t c = in_u8(in);
    if (line && (c == '\r' || c == '\n')) c = ' ';
    buf_byte(out, c);
  }
}

static void tree_len_text(in_t *in, buf_t *out) {
  /* a bulk: its length first, so read the text aside */
  buf_t t = {0};
  tree_text(in, &t, false);
  char head[32];
  snprintf(head, sizeof head, "$%zu\r\n", t.len);
  buf_str(out, head);
  buf_put(out, t.b, t.len);
  buf_str(out, "\r\n");
  free(t.b);
}

static void tree(in_t *in, buf_t *out, int depth, int *nodes) {
  uint8_t t = in_u8(in);
  ++*nodes;
  switch (t & 7) {
  case 0:
  case 1:
    buf_byte(out, (t & 7) ? '-' : '+');
    tree_text(in, out, true);
    buf_str(out, "\r\n");
    break;
  case 2: {
    long long v;
    uint8_t b = in_u8(in);
    if (b < 0xF0) {
      v = (long long)b - 16;
    } else {
      uint64_t u = 0;
      for (int i = 0; i < 8; i++) u = u << 8 | in_u8(in);
      v = (long long)u;
    }
    char s[32];
    snprintf(s, sizeof s, ":%lld\r\n", v);
    buf_str(out, s);
    break;
  }
  case 3:
    tree_len_text(in, out);
    break;
  case 4:
    buf_str(out, "$-1\r\n");
    break;
  case 5: {
    size_t n = in_u8(in);
    if (n == 255) {
      n = (size_t)in_u8(in) << 8;
      n |= in_u8(in);
    } else {
      n %= 17;
    }
    char s[32];
    snprintf(s, sizeof s, "*%zu\r\n", n);
    buf_str(out, s);
    for (size_t i = 0; i < n; i++) {
      if (depth >= MAX_DEPTH || *nodes >= MAX_NODES) {
        buf_str(out, "$-1\r\n"); /* keep the count honest */
        continue;
      }
      tree(in, out, depth + 1, nodes);
    }
    break;
  }
  case 6:
    buf_str(out, "*-1\r\n");
    break;
  default: {
    static const char types[] = "%~_,#(=>|";
    buf_byte(out, (uint8_t)types[(t >> 3) % (sizeof types - 1)]);
    tree_text(in, out, true);
    buf_str(out, "\r\n");
    break;
  }
  }
}

/* ---- the recorder: a real Redis's answer as a tree ----------------------- */

static void enc_text(buf_t *o, const char *s, size_t n) {
  if (n < 255) {
    buf_byte(o, (uint8_t)n);
  } else {
    if (n > 65535) abort(); /* no seed needs more */
    buf_byte(o, 255);
    buf_byte(o, (uint8_t)(n >> 8));
    buf_byte(o, (uint8_t)n);
  }
  buf_put(o, s, n);
}

static void enc_reply(buf_t *o, const redisReply *r) {
  switch (r->type) {
  case REDIS_REPLY_STATUS:
    buf_byte(o, 0);
    enc_text(o, r->str, r->len);
    break;
  case REDIS_REPLY_ERROR:
    buf_byte(o, 1);
    enc_text(o, r->str, r->len);
    break;
  case REDIS_REPLY_INTEGER:
    buf_byte(o, 2);
    if (r->integer >= -16 && r->integer < 0xF0 - 16) {
      buf_byte(o, (uint8_t)(r->integer + 16));
    } else {
      buf_byte(o, 0xF0);
      for (int i = 7; i >= 0; i--)
        buf_byte(o, (uint8_t)((uint64_t)r->integer >> (8 * i)));
    }
    break;
  case REDIS_REPLY_STRING:
    buf_byte(o, 3);
    enc_text(o, r->str, r->len);
    break;
  case REDIS_REPLY_NIL:
    buf_byte(o, 4);
    break;
  case REDIS_REPLY_ARRAY:
    buf_byte(o, 5);
    if (r->elements < 17) {
      buf_byte(o, (uint8_t)r->elements);
    } else {
      if (r->elements > 65535) abort();
      buf_byte(o, 255);
      buf_byte(o, (uint8_t)(r->elements >> 8));
      buf_byte(o, (uint8_t)r->elements);
    }
    for (size_t i = 0; i < r->elements; i++) enc_reply(o, r->element[i]);
    break;
  default:
    abort();
  }
}

static void write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) abort();
    p += w;
    n -= (size_t)w;
  }
}

/* The command, sent to the real Redis; its reply as a tree into o. */
static void forward(fconn_t *c, const redisReply *cmd, buf_t *o) {
  if (c->real < 0) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", real_path);
    c->real = socket(AF_UNIX, SOCK_STREAM, 0);
    if (c->real < 0 ||
        connect(c->real, (struct sockaddr *)&sa, sizeof sa) != 0) {
      fprintf(stderr, "recorder: cannot reach %s\n", real_path);
      abort();
    }
  }
  buf_t w = {0};
  char s[32];
  snprintf(s, sizeof s, "*%zu\r\n", cmd->elements);
  buf_str(&w, s);
  for (size_t i = 0; i < cmd->elements; i++) {
    snprintf(s, sizeof s, "$%zu\r\n", cmd->element[i]->len);
    buf_str(&w, s);
    buf_put(&w, cmd->element[i]->str, cmd->element[i]->len);
    buf_str(&w, "\r\n");
  }
  write_all(c->real, w.b, w.len);
  free(w.b);
  presence__resp_reader_t rd;
  presence__resp_init(&rd, alloc(), (size_t)1 << 24, (size_t)1 << 20);
  redisReply *rep = NULL;
  for (;;) {
    int rc = presence__resp_next(&rd, &rep);
    if (rc < 0) abort();
    if (rc > 0) break;
    char tmp[65536];
    ssize_t n = read(c->real, tmp, sizeof tmp);
    if (n <= 0) abort();
    if (presence__resp_feed(&rd, tmp, (size_t)n) != 0) abort();
  }
  enc_reply(o, rep);
  presence__resp_free(alloc(), rep);
  presence__resp_fini(&rd);
}

/* ---- the library under test ---------------------------------------------- */

static presence_t *pres;
static presence_store_t *store;
static int64_t pres_due = -1; /* presence_t's next deadline (mono), -1 none */
static long outstanding;      /* done callbacks still owed */
static unsigned long dones;   /* done callbacks run */
static bool freeing;

static void check_code(int status) {
  if (status > 0 || status < -200) abort();
}

static void check_str(const char *s) {
  if (s) (void)strlen(s);
}

static void on_log(void *ud, presence_log_level_t lvl, const char *msg) {
  (void)ud;
  if ((unsigned)lvl > PRESENCE_LOG_DEBUG) abort();
  check_str(msg);
  if (trace) fprintf(stderr, "log %d: %s\n", (int)lvl, msg);
}

static void on_timer_set(void *ud, int64_t ms) {
  (void)ud;
  pres_due = ms < 0 ? -1 : mono + ms;
}

static void owed_done(void) {
  if (outstanding <= 0) abort(); /* a callback ran twice */
  if (!pres && !freeing) abort(); /* after presence_free returned */
  dones++;
  outstanding--;
}

static void done_cb(presence_t *p, int status, void *ud) {
  (void)p;
  (void)ud;
  check_code(status);
  owed_done();
}

static void check_user(const presence_user_info_t *u) {
  if (!u) return;
  check_str(u->user_id);
  check_str(u->message);
  check_str(u->emoji);
  if (u->status > PRESENCE_IDLE) abort();
  if (u->n_devices && !u->devices) abort();
}

static void user_cb(presence_t *p, int status, const presence_user_info_t *u,
                    void *ud) {
  (void)p;
  (void)ud;
  check_code(status);
  if (status == 0) check_user(u);
  owed_done();
}

static void sessions_cb(presence_t *p, int status,
                        const presence_session_info_t *s, size_t n, void *ud) {
  (void)p;
  (void)ud;
  check_code(status);
  if (status == 0)
    for (size_t i = 0; i < n; i++) {
      check_str(s[i].session_id);
      check_str(s[i].user_id);
      check_str(s[i].meta);
      check_str(s[i].instance_id);
      check_str(s[i].device);
      if (s[i].status > PRESENCE_IDLE) abort();
    }
  owed_done();
}

static void members_cb(presence_t *p, int status,
                       const presence_member_info_t *m, size_t n,
                       uint64_t count, const char *next, void *ud) {
  (void)p;
  (void)ud;
  (void)count;
  check_code(status);
  if (status == 0) {
    check_str(next);
    for (size_t i = 0; i < n; i++) {
      check_str(m[i].channel);
      check_str(m[i].user_id);
      check_str(m[i].data);
      if (m[i].status > PRESENCE_IDLE) abort();
      if (m[i].n_metas && !m[i].metas) abort();
      for (size_t k = 0; k < m[i].n_metas; k++) {
        check_str(m[i].metas[k].session_id);
        check_str(m[i].metas[k].data);
      }
    }
  }
  owed_done();
}

static void channels_cb(presence_t *p, int status,
                        const presence_channel_info_t *c, size_t n,
                        const char *next, void *ud) {
  (void)p;
  (void)ud;
  check_code(status);
  if (status == 0) {
    check_str(next);
    for (size_t i = 0; i < n; i++) check_str(c[i].channel);
  }
  owed_done();
}

static void check_event(const presence_event_t *ev) {
  if ((unsigned)ev->type >= PRESENCE_EV_COUNT_) abort();
  check_str(ev->session_id);
  check_str(ev->user_id);
  check_str(ev->meta);
  check_str(ev->instance_id);
  check_str(ev->channel);
  check_str(ev->message);
  check_str(ev->emoji);
}

static void log_cb(presence_t *p, int status, const presence_event_t *evs,
                   size_t n, void *ud) {
  (void)p;
  (void)ud;
  check_code(status);
  if (status == 0 || status == PRESENCE_ECURSOR)
    for (size_t i = 0; i < n; i++) check_event(&evs[i]);
  owed_done();
}

static void event_cb(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  (void)ud;
  check_event(ev);
}

static void store_done(void *ud, int status) {
  (void)ud;
  check_code(status);
  owed_done();
}

static void lease_cb(void *ud, int status, const presence_redis_lease_t *r) {
  (void)ud;
  check_code(status);
  if (status == 0) {
    if (!r) abort();
    check_str(r->log_id);
    check_str(r->owner);
    check_str(r->cursor_text);
  }
  owed_done();
}

static void kick_heard(void *ud, const char *sid) {
  (void)ud;
  check_str(sid);
}

static void origin_heard(void *ud, const char *name, uint64_t counter) {
  (void)ud;
  (void)counter;
  check_str(name);
}

/* An API call that owes a done callback when it returned 0 (which may run
 * inside the call: a store in shards answers a query every shard refused
 * at once); a call that returns an error must not call it as well. */
#define owe(call)                                                             \
  do {                                                                        \
    unsigned long before_ = dones;                                            \
    outstanding++;                                                            \
    int rc_ = (call);                                                         \
    check_code(rc_);                                                          \
    if (rc_ != 0) {                                                           \
      if (dones != before_) abort(); /* an error returned and reported */     \
      outstanding--;                                                          \
    }                                                                         \
  } while (0)

static const char *const SIDS[] = {"s1", "s2",
                                   "3f2504e0-4f89-41d3-9a0c-0305e82c3301"};
static const char *const USERS[] = {"alice", "bob"};
static presence_handle_t handles[3];
static uint64_t lease_epoch;

#define N_CALLS 28

static void api_call(uint8_t b) {
  unsigned call = b % N_CALLS, v = b / N_CALLS;
  const char *sid = SIDS[v % 3];
  const char *user = USERS[(v / 3) % 2];
  presence_t *p = pres;
  switch (call) {
  case 0:
    owe(presence_session_open(p, sid, user, "{\"a\":1}", &handles[v % 3],
                              done_cb, NULL));
    break;
  case 1:
    owe(presence_session_set_status(p, sid, v & 1 ? PRESENCE_IDLE
                                                  : PRESENCE_ONLINE,
                                    done_cb, NULL));
    break;
  case 2:
    owe(presence_channel_join(p, sid, v & 1 ? "room" : "hall",
                              "{\"d\":2}", done_cb, NULL));
    break;
  case 3:
    owe(presence_user_query(p, user, user_cb, NULL));
    break;
  case 4:
    owe(presence_channel_members(p, v & 1 ? "room" : "hall", NULL, 10,
                                 members_cb, NULL));
    break;
  case 5:
    owe(presence_sessions_query(p, user, sessions_cb, NULL));
    break;
  case 6:
    owe(presence_log_read(p, v, 10, log_cb, NULL));
    break;
  case 7:
    owe(presence_channel_leave(p, sid, "room", done_cb, NULL));
    break;
  case 8:
    owe(presence_session_end(p, sid, PRESENCE_REASON_DISCONNECT, done_cb,
                             NULL));
    break;
  case 9:
    owe(presence_user_set_availability(p, user,
                                       (presence_availability_t)(v % 4),
                                       done_cb, NULL));
    break;
  case 10:
    owe(presence_user_set_message(p, user, "lunch", NULL,
                                  v & 1 ? fake_wall(NULL) + 60000 : 0, done_cb,
                                  NULL));
    break;
  case 11:
    owe(presence_redis_kick(store, sid, store_done, NULL));
    break;
  case 12:
    owe(presence_redis_lease(store, "hook", (presence_redis_lease_op_t)(v % 3),
                             lease_epoch, 10000, v, "log-1", lease_cb, NULL));
    lease_epoch++;
    break;
  case 13:
    owe(presence_end_graces(p, done_cb, NULL));
    break;
  case 14:
    check_code(presence_redis_origin_release(store, "api-1", v));
    break;
  case 15:
    owe(presence_channels_list(p, NULL, NULL, 10, channels_cb, NULL));
    break;
  case 16:
    owe(presence_user_channels(p, user, members_cb, NULL));
    break;
  case 17:
    owe(presence_channel_members_brief(p, "room", NULL, 10, members_cb, NULL));
    break;
  case 18:
    check_code(presence_session_touch(p, sid));
    break;
  case 19:
    owe(presence_channel_update(p, sid, "room", "{\"d\":3}", done_cb, NULL));
    break;
  case 20:
    owe(presence_redis_leave(store, store_done, NULL));
    break;
  case 22:
    owe(presence_reset(p, done_cb, NULL));
    break;
  case 23: {
    uint32_t n = presence_log_count(p);
    if (n == 0) abort();
    owe(presence_log_read_of(p, v % n, v, 5, log_cb, NULL));
    (void)presence_log_last_seq_of(p, v % n);
    presence_redis_conn_metrics_t m;
    check_code(presence_redis_conn_metrics(store, v & 1, &m));
    break;
  }
  case 24: {
    presence_open_opts_t oo = {
        .device = v & 1 ? "mobile" : NULL,
        .status = v & 2 ? PRESENCE_IDLE : PRESENCE_ONLINE,
        .flags = v & 4 ? PRESENCE_OPEN_ADOPT : PRESENCE_OPEN_RANDOM_ID};
    owe(presence_session_open_opts(p, sid, user, NULL, &oo, &handles[v % 3],
                                   done_cb, NULL));
    break;
  }
  case 25:
    owe(presence_redis_lease_text(store, "hook2",
                                  (presence_redis_lease_op_t)(v % 3),
                                  lease_epoch, 10000, v & 1 ? "3,4" : "7",
                                  v & 2 ? "1,1" : NULL, "log-1", lease_cb,
                                  NULL));
    break;
  case 26:
    owe(presence_channel_remove_user(p, "room", user, done_cb, NULL));
    break;
  default: {
    uint64_t shown = 0;
    check_code(presence_redis_channel_track(store, "room", v & 1 ? -1 : 1));
    check_code(presence_redis_channel_shown(store, "room", user, v, &shown));
    presence_redis_cluster_stats_t cs;
    check_code(presence_redis_cluster_stats(store, &cs));
    presence_stats_t ps;
    check_code(presence_stats(p, &ps));
    (void)presence_redis_ready(store);
    (void)presence_redis_epoch(store);
    (void)presence_redis_clock_offset_ms(store, user);
    break;
  }
  }
}

/* ---- the loop ---------------------------------------------------------- */

/* Everything the loop can do without waiting: writes reach the other side,
 * answers are read, zero timers (the store's flushes) fire. */
static void settle(void) {
  for (int i = 0; i < 10; i++) uv_run(&loop, UV_RUN_NOWAIT);
}

/* Virtual time for the store's libuv timers. The harness links with
 * --wrap for uv_timer_start, uv_timer_get_due_in and uv_now, so that the
 * store's timers and its clock (the connection layer's command deadlines)
 * run on the fake monotonic clock: a timer with a timeout is armed on the
 * real loop for practically never, and fires only when a tick moves the
 * clock to its deadline; a zero timeout fires on the next loop turn, as
 * always. The same input then takes the same path however long it runs
 * (an ASan build, a slow machine, the recorder waiting on a real Redis). */
#define FAR_MS UINT64_C(1000000000)
typedef struct {
  uv_timer_t *t;
  int64_t due;     /* on the fake clock */
  uint64_t repeat; /* as the store asked */
  uint64_t seq;    /* start order: ties fire in it */
} vtimer_t;
static vtimer_t vt[256];
static size_t n_vt;
static uint64_t vt_seq;

int __real_uv_timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t timeout,
                          uint64_t repeat);
int __wrap_uv_timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t timeout,
                          uint64_t repeat);
uint64_t __wrap_uv_timer_get_due_in(const uv_timer_t *t);
uint64_t __wrap_uv_now(const uv_loop_t *l);

static vtimer_t *vt_of(const uv_timer_t *t, bool add) {
  for (size_t i = 0; i < n_vt; i++)
    if (vt[i].t == t) return &vt[i];
  if (!add || n_vt == sizeof vt / sizeof vt[0]) return NULL;
  vt[n_vt].t = (uv_timer_t *)t;
  return &vt[n_vt++];
}

int __wrap_uv_timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t timeout,
                          uint64_t repeat) {
  vtimer_t *v = vt_of(t, true);
  if (!v) abort(); /* more timers than any store has */
  if (timeout > FAR_MS) timeout = FAR_MS;
  v->due = mono + (int64_t)timeout;
  v->repeat = repeat;
  v->seq = ++vt_seq;
  return __real_uv_timer_start(t, cb, timeout ? FAR_MS : 0,
                               repeat ? FAR_MS : 0);
}

uint64_t __wrap_uv_timer_get_due_in(const uv_timer_t *t) {
  vtimer_t *v = vt_of(t, false);
  if (!v || !uv_is_active((const uv_handle_t *)t)) return 0;
  return v->due > mono ? (uint64_t)(v->due - mono) : 0;
}

uint64_t __wrap_uv_now(const uv_loop_t *l) {
  (void)l;
  return (uint64_t)mono + 1000000; /* never 0: a clock that started */
}

typedef struct {
  uv_timer_t *t[64];
  size_t n;
} timers_t;

/* The loop's live timers: vt[] may name handles freed since. */
static void walk_timer(uv_handle_t *h, void *arg) {
  timers_t *ts = arg;
  if (h->type == UV_TIMER && uv_is_active(h) && !uv_is_closing(h) &&
      ts->n < 64)
    ts->t[ts->n++] = (uv_timer_t *)h;
}

/* The earliest deadline: the clock moves to it and what is due there fires
 * (the store's timers in the order they were armed, or presence_t's
 * through presence_tick). */
static void tick(void) {
  timers_t ts = {.n = 0};
  uv_walk(&loop, walk_timer, &ts);
  vtimer_t *due[64];
  size_t n = 0;
  int64_t best = INT64_MAX;
  for (size_t i = 0; i < ts.n; i++) {
    vtimer_t *v = vt_of(ts.t[i], false);
    if (!v) continue;
    if (v->due < best) {
      best = v->due;
      n = 0;
    }
    if (v->due == best) due[n++] = v;
  }
  if (pres_due >= 0 && pres_due <= best) {
    if (pres_due > mono) mono = pres_due;
    pres_due = -1;
    (void)presence_tick(pres);
    return;
  }
  if (!n) return;
  if (best > mono) mono = best;
  /* In the order they were armed. */
  for (size_t i = 1; i < n; i++)
    for (size_t k = i; k > 0 && due[k]->seq < due[k - 1]->seq; k--) {
      vtimer_t *x = due[k];
      due[k] = due[k - 1];
      due[k - 1] = x;
    }
  /* Each at the next loop turn, as libuv runs a due timer: a zero timeout
   * (a repeating one keeps its repeat). One that another's callback
   * re-arms or stops first is re-armed or stopped. */
  for (size_t i = 0; i < n; i++) {
    uv_timer_t *t = due[i]->t;
    uint64_t repeat = due[i]->repeat;
    __real_uv_timer_start(t, t->timer_cb, 0, repeat ? FAR_MS : 0);
    due[i]->due = repeat ? mono + (int64_t)repeat : mono;
  }
}

static bool blocking(const redisReply *cmd) {
  return cmd->elements > 1 &&
         (!strcasecmp(cmd->element[0]->str, "XREAD") ||
          !strcasecmp(cmd->element[0]->str, "BLPOP"));
}

/* The recorder's answer to cmd (c's oldest command, or for a feed in what
 * the machine's reader would pass on): from the real Redis, kept in the
 * output as op 0 of that connection, and sent. */
static void record_answer(fconn_t *c, const redisReply *cmd) {
  size_t live_idx = 0;
  for (size_t i = 0; i < n_conns && conns[i] != c; i++)
    live_idx += conns[i]->live;
  buf_t t = {0};
  forward(c, cmd, &t);
  buf_byte(&rec, (uint8_t)(live_idx << 3));
  buf_put(&rec, t.b, t.len);
  in_t tin = {(const uint8_t *)t.b, t.len, 0};
  buf_t out = {0};
  int nodes = 0;
  tree(&tin, &out, 0, &nodes);
  fconn_write(c, out.b, out.len);
  if (!c->feed_in) fconn_pop(c);
  free(out.b);
  free(t.b);
}

/* A feed in gets the log as the machine's reader would have read it. */
static void record_feed(void) {
  static const char xread[] = "*6\r\n$5\r\nXREAD\r\n$5\r\nCOUNT\r\n$2\r\n64\r\n"
                              "$7\r\nSTREAMS\r\n$12\r\npresence:log\r\n"
                              "$3\r\n0-0\r\n";
  for (size_t i = 0; i < n_conns; i++) {
    if (!conns[i]->live || !conns[i]->feed_in) continue;
    presence__resp_reader_t rd;
    presence__resp_init(&rd, alloc(), 4096, 64);
    redisReply *cmd = NULL;
    if (presence__resp_feed(&rd, xread, sizeof xread - 1) != 0 ||
        presence__resp_next(&rd, &cmd) != 1)
      abort();
    record_answer(conns[i], cmd);
    presence__resp_free(alloc(), cmd);
    presence__resp_fini(&rd);
    settle();
  }
}

static void record_plan(in_t *in) {
  while (in_more(in)) {
    uint8_t op = in_u8(in);
    if (op == 'a' || op == 'r') {
      for (int round = 0; round < 200; round++) {
        bool any = false;
        for (size_t i = 0; i < n_conns; i++) {
          fconn_t *c = conns[i];
          if (!c->live || !c->head) continue;
          if ((op == 'a') == blocking(c->head->cmd)) continue;
          record_answer(c, c->head->cmd);
          settle(); /* as run_ops does after each op */
          any = true;
        }
        if (!any || op == 'r') break;
      }
    } else if (op == 'c') {
      uint8_t b = in_u8(in);
      buf_byte(&rec, 3);
      buf_byte(&rec, b);
      api_call(b);
      settle();
    } else if (op == 'w') {
      sleep(7); /* the real Redis's clock: another's lease runs out */
    } else if (op == 'f') {
      record_feed();
    } else if (op == 't') {
      buf_byte(&rec, 4);
      tick();
      settle();
    }
  }
}

static void run_ops(in_t *in) {
  for (int n = 0; n < MAX_OPS && in_more(in); n++) {
    uint8_t op = in_u8(in);
    switch (op & 7) {
    case 0:
    case 1:
    case 2: {
      buf_t out = {0};
      int nodes = 0;
      tree(in, &out, 0, &nodes);
      fconn_t *c = live_conn(op >> 3);
      if (c) {
        fconn_write(c, out.b, out.len);
        fconn_pop(c);
      }
      free(out.b);
      break;
    }
    case 3:
      api_call(in_u8(in));
      break;
    case 4:
      /* (op >> 3) + 1 deadlines in a row: a long silence in few bytes */
      for (int k = 0; k <= op >> 3; k++) {
        tick();
        settle();
      }
      break;
    case 5: {
      fconn_t *c = live_conn(op >> 3);
      if (c) fconn_close(c);
      break;
    }
    case 6: {
      size_t len = in_u8(in);
      buf_t raw = {0};
      for (size_t i = 0; i < len && in_more(in); i++) buf_byte(&raw, in_u8(in));
      fconn_t *c = live_conn(op >> 3);
      if (c) fconn_write(c, raw.b, raw.len);
      free(raw.b);
      break;
    }
    default:
      for (size_t i = 0; i < n_conns; i++) {
        if (!conns[i]->live) continue;
        buf_t out = {0};
        int nodes = 0;
        tree(in, &out, 0, &nodes);
        fconn_write(conns[i], out.b, out.len);
        fconn_pop(conns[i]);
        free(out.b);
      }
      break;
    }
    settle();
  }
}

static char sock_dir[] = "/tmp/fuzz-redis-store-XXXXXX";

/* The socket's directory goes with the process (libFuzzer exits with
 * exit(), a crash leaves it for the post-mortem). */
static void remove_dir(void) {
  unlink(sock_path);
  rmdir(sock_dir);
}

static void setup_once(void) {
  static bool done;
  if (done) return;
  done = true;
  /* SIGPIPE stays as an application leaves it, the default: a Redis that
   * closes a connection as the store writes to it must not end the
   * process (the store ignores SIGPIPE then: redis_conn.c,
   * sigpipe_ignore; tests/data/fuzz/fuzz_redis_store/sigpipe-*). */
  signal(SIGPIPE, SIG_DFL);
  /* Reproducible table hashing across runs of one input. */
  static const uint8_t key[16] = {1, 2, 3, 4, 5, 6, 7, 8,
                                  9, 10, 11, 12, 13, 14, 15, 16};
  (void)presence_hash_key_set(key);
  if (!mkdtemp(sock_dir)) abort();
  snprintf(sock_path, sizeof sock_path, "%s/redis.sock", sock_dir);
  atexit(remove_dir);
  real_path = getenv("FUZZ_REDIS_RECORD");
  recording = real_path && *real_path;
  trace = getenv("FUZZ_REDIS_TRACE") != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup_once();
  /* libFuzzer runs an input again to look for a leak: one recording. */
  static bool recorded;
  if (recording && recorded) return 0;
  recorded = recording;
  in_t in = {data, size, 0};
  uint8_t cfg = in_u8(&in);
  if (trace) fprintf(stderr, "run: %zu bytes, configuration %#x\n", size, cfg);
  mono = 0;
  pres_due = -1;
  outstanding = 0;
  lease_epoch = 0;
  n_conns = 0;
  n_vt = 0;
  vt_seq = 0;
  memset(handles, 0, sizeof handles);
  rec.len = 0;
  if (recording) buf_byte(&rec, cfg);

  if (uv_loop_init(&loop) != 0) abort();
  unlink(sock_path);
  uv_pipe_init(&loop, &listener, 0);
  if (uv_pipe_bind(&listener, sock_path) != 0 ||
      uv_listen((uv_stream_t *)&listener, 16, on_accept) != 0)
    abort();

  snprintf(store_url, sizeof store_url, "unix:%s%s", sock_path,
           cfg & 0x10 ? "?db=1" : "");
  presence_redis_options_t ro;
  memset(&ro, 0, sizeof ro);
  ro.loop = &loop;
  ro.url = store_url;
  /* On the fake clock: only the harness's ticks reach them. */
  ro.heartbeat_ms = 2000;
  ro.command_timeout_ms = 3000;
  ro.reconcile_ms = 30000;
  ro.reconnect_max_ms = 400;
  ro.stream_block_ms = 1; /* the recorder's XREAD waits no longer */
  ro.batch = 2;
  if (cfg & 1) {
    ro.max_reply_bytes = 2048;
    ro.max_reply_elements = 64;
  }
  if (cfg & 8) ro.shards = 2;
  int feed_out_fd[1];
  if (cfg & 0xC0) {
    int sv[2];
    if (cfg & 0x40) { /* this store reads the log for a follower */
      if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) abort();
      feed_out_fd[0] = sv[0];
      ro.feed_out = feed_out_fd;
      ro.n_feed_out = 1;
      feed_conn(sv[1], true);
    }
    if (cfg & 0x80) { /* this store takes the log from the feed */
      if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) abort();
      ro.feed_in = sv[0];
      feed_conn(sv[1], false);
    }
  }
  if (presence_store_redis_new(&ro, &store) != 0) abort();
  if (cfg & 0x20) {
    presence_redis_on_kick(store, kick_heard, NULL);
    presence_redis_on_origin(store, origin_heard, NULL);
  }

  presence_options_t po;
  presence_options_init(&po);
  po.clock.wall_ms = fake_wall;
  po.clock.mono_ms = fake_mono;
  po.log = on_log;
  po.instance_id = "fuzz-1";
  /* The recorder's other instance (a seed whose Redis holds the sessions
   * of one that died, for this one to reap): its run is not a seed. */
  if (recording && getenv("FUZZ_REDIS_INSTANCE"))
    po.instance_id = getenv("FUZZ_REDIS_INSTANCE");
  po.offline_grace_ms = cfg & 2 ? 5000 : 0;
  po.inactivity_ms = cfg & 4 ? 10000 : 0;
  po.timer = on_timer_set;
  po.store = store;
  if (presence_new(&po, &pres) != 0) abort();
  presence_on_event(pres, event_cb, NULL);
  presence_on_cluster_event(pres, event_cb, NULL);
  settle();

  if (recording)
    record_plan(&in);
  else
    run_ops(&in);

  /* Redis goes away: every call still waiting for an answer is owed its
   * done now (the connection's loss fails what was sent; a call the store
   * holds for a reconnect has failed at once): one still owed after the
   * loss stalls its caller until presence_free. Inputs of odd length only:
   * the others free the store with its calls pending (ESHUTDOWN). */
  if (!recording && size % 2) {
    for (size_t i = 0; i < n_conns; i++)
      if (!conns[i]->feed_in && !conns[i]->feed_out) fconn_close(conns[i]);
    settle();
    if (outstanding != 0) {
      fprintf(stderr, "%ld done callbacks owed after Redis went away\n",
              outstanding);
      abort();
    }
  }

  /* Teardown: presence_free completes what is pending (ESHUTDOWN), then
   * every handle closes on the loop. */
  freeing = true;
  presence_free(pres);
  pres = NULL;
  store = NULL;
  freeing = false;
  if (outstanding != 0) abort(); /* a done callback never ran */
  for (size_t i = 0; i < n_conns; i++) fconn_close(conns[i]);
  uv_close((uv_handle_t *)&listener, NULL);
  for (int i = 0; i < 100 && uv_loop_alive(&loop); i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  if (uv_loop_close(&loop) != 0) abort(); /* a handle outlived the store */
  for (size_t i = 0; i < n_conns; i++) free(conns[i]);
  unlink(sock_path);

  if (recording) {
    const char *out = getenv("FUZZ_REDIS_RECORD_OUT");
    FILE *f = out ? fopen(out, "wb") : NULL;
    if (!f || fwrite(rec.b, 1, rec.len, f) != rec.len || fclose(f) != 0)
      abort();
  }
  return 0;
}
