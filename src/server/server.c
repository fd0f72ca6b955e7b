/* SPDX-License-Identifier: MIT */
/*
 * presenced's event loop: the listener, the life of a connection, bounded
 * writes, housekeeping timers and the graceful shutdown.
 *
 * Connection lifetime: a conn_t is freed only in the uv_close callback, which
 * libuv runs after every pending write callback (they see UV_ECANCELED). So
 * a conn_t pointer stays valid for the whole call stack that decided to
 * close it; code that writes or closes checks c->closing afterwards.
 */
#include "server/metrics.h"
#include "server/server.h"
#include "server/webhook.h"

#ifdef PRESENCED_HAVE_REDIS
#include "presence_redis.h"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF_SIZE 65536
/* A lingering close gives the peer this long to read our last bytes. */
#define LINGER_MS 2000
#define SHUTDOWN_LINGER_MS 500
/* One log line per error class at most this often. */
#define ERROR_LOG_INTERVAL_MS 10000

typedef struct wreq {
  uv_write_t req;
  conn_t *c;
  shbuf_t *shared; /* referenced instead of copied, or NULL */
  uint32_t len;    /* bytes accounted in wq_bytes */
  uint8_t data[];
} wreq_t;

static void on_close(uv_handle_t *h);
static void srv_finish(srv_t *s);

/* ---- Logging and error accounting ---------------------------------------- */

static const char *level_names[] = {"error", "warn", "info", "debug"};

/* A log line being built; too long a line is cut, never split, so that a
 * collector sees one record per line. */
typedef struct logline {
  char buf[1024];
  size_t len;
} logline_t;

static void ll_puts(logline_t *l, const char *s, size_t n) {
  if (n > sizeof l->buf - 2 - l->len) n = sizeof l->buf - 2 - l->len;
  memcpy(l->buf + l->len, s, n);
  l->len += n;
}

static void ll_printf(logline_t *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void ll_printf(logline_t *l, const char *fmt, ...) {
  char tmp[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0)
    ll_puts(l, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Characters a log viewer must not act on. Messages may quote client input
 * (ids, header values), which could otherwise forge a second record (a
 * newline), rewrite what the terminal shows (C0/C1 controls, escape
 * sequences) or reorder it on screen (bidirectional controls such as U+202E,
 * "Trojan Source"). These are written as escapes in every format. */
static int log_unsafe_cp(uint32_t cp) {
  return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) ||
         cp == 0x061c || cp == 0x200e || cp == 0x200f ||
         (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) ||
         cp == 0xfeff;
}

/* The UTF-8 sequence at p (at most n bytes): its length and code point, or
 * 0 when it is not valid UTF-8. */
static size_t utf8_seq(const unsigned char *p, size_t n, uint32_t *cp) {
  unsigned c = p[0];
  size_t need;
  uint32_t min;
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  if (c >= 0xc2 && c <= 0xdf)
    need = 1, min = 0x80, *cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef)
    need = 2, min = 0x800, *cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4)
    need = 3, min = 0x10000, *cp = c & 0x07;
  else
    return 0;
  if (n <= need) return 0;
  for (size_t k = 1; k <= need; k++) {
    if ((p[k] & 0xc0) != 0x80) return 0;
    *cp = *cp << 6 | (p[k] & 0x3f);
  }
  if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
    return 0;
  return need + 1;
}

/* s escaped for a log record. json: JSON string escapes (logfmt parsers
 * take the same), an invalid byte as U+FFFD; else (the text format) C-like
 * escapes: \n, \xNN for a byte, \u{XXXX} for a code point. */
static void ll_escaped(logline_t *l, const char *str, int json) {
  const unsigned char *p = (const unsigned char *)str;
  size_t n = strlen(str);
  while (n) {
    uint32_t cp;
    size_t k = utf8_seq(p, n, &cp);
    if (k == 0) {
      if (json)
        ll_puts(l, "\\ufffd", 6);
      else
        ll_printf(l, "\\x%02x", *p);
      p++, n--;
      continue;
    }
    if (*p == '"' && json) {
      ll_puts(l, "\\\"", 2);
    } else if (*p == '\\') {
      ll_puts(l, "\\\\", 2);
    } else if (*p == '\n') {
      ll_puts(l, "\\n", 2);
    } else if (log_unsafe_cp(cp)) {
      if (json)
        ll_printf(l, "\\u%04x", (unsigned)cp);
      else if (cp < 0x80)
        ll_printf(l, "\\x%02x", (unsigned)cp);
      else
        ll_printf(l, "\\u{%04x}", (unsigned)cp);
    } else {
      ll_puts(l, (const char *)p, k);
    }
    p += k;
    n -= k;
  }
}

/* A quoted string, escaped for JSON. */
static void ll_quoted(logline_t *l, const char *s) {
  ll_puts(l, "\"", 1);
  ll_escaped(l, s, 1);
  ll_puts(l, "\"", 1);
}

/* RFC 3339 UTC with milliseconds, from the daemon's (injectable) clock. */
static void ll_time(logline_t *l, const srv_t *s) {
  int64_t ms = s->sys ? srv_now_wall(s) : 0;
  time_t secs = (time_t)(ms / 1000);
  struct tm tm;
  char ts[40];
  if (!gmtime_r(&secs, &tm) ||
      strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
    strcpy(ts, "1970-01-01T00:00:00");
  ll_printf(l, "%s.%03dZ", ts, (int)(ms % 1000));
}

/* One record in the configured format. code and suppressed belong to an
 * error class (srv_error): its protocol code, and how many of its
 * occurrences were counted but not logged since its previous line. */
static void emit(srv_t *s, presence_log_level_t level, const char *code,
                 uint64_t suppressed, const char *msg) {
  logline_t l;
  l.len = 0;
  switch (s->cfg.log_format) {
  case SRV_LOG_LOGFMT:
    ll_puts(&l, "ts=", 3);
    ll_time(&l, s);
    ll_printf(&l, " level=%s msg=", level_names[level]);
    ll_quoted(&l, msg);
    if (code)
      ll_printf(&l, " code=%s suppressed=%llu", code,
                (unsigned long long)suppressed);
    if (s->instance_id[0]) ll_printf(&l, " instance=%s", s->instance_id);
    break;
  case SRV_LOG_JSON:
    ll_puts(&l, "{\"ts\":\"", 7);
    ll_time(&l, s);
    ll_printf(&l, "\",\"level\":\"%s\",\"msg\":", level_names[level]);
    ll_quoted(&l, msg);
    if (code)
      ll_printf(&l, ",\"code\":\"%s\",\"suppressed\":%llu", code,
                (unsigned long long)suppressed);
    if (s->instance_id[0])
      ll_printf(&l, ",\"instance\":\"%s\"", s->instance_id);
    /* A cut line must still be one JSON object. */
    if (l.len > sizeof l.buf - 4) l.len = sizeof l.buf - 4;
    ll_puts(&l, "}", 1);
    break;
  default:
    ll_printf(&l, "presenced: %s: ", level_names[level]);
    if (code) ll_printf(&l, "%s: ", code);
    ll_escaped(&l, msg, 0);
    if (suppressed)
      ll_printf(&l, " (and %llu more since the last report)",
                (unsigned long long)suppressed);
    break;
  }
  l.buf[l.len++] = '\n';
  /* One write per record: lines of concurrent writers do not interleave. */
  fwrite(l.buf, 1, l.len, stderr);
}

static void vlog(srv_t *s, presence_log_level_t level, const char *fmt,
                 va_list ap) __attribute__((format(printf, 3, 0)));
static void vlog(srv_t *s, presence_log_level_t level, const char *fmt,
                 va_list ap) {
  if ((int)level > s->cfg.log_level) return;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  emit(s, level, NULL, 0, msg);
}

void srv_log(srv_t *s, presence_log_level_t level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(s, level, fmt, ap);
  va_end(ap);
}

static err_count_t *err_slot(srv_t *s, const char *code) {
  for (size_t i = 0; i < s->nerrors; i++)
    if (strcmp(s->errors[i].code, code) == 0) return &s->errors[i];
  if (s->nerrors == SRV_MAX_ERR_CODES) return NULL;
  err_count_t *e = &s->errors[s->nerrors++];
  memset(e, 0, sizeof *e);
  e->code = code; /* codes are string literals or library constants */
  e->last_log_ms = INT64_MIN;
  return e;
}

void srv_error(srv_t *s, const char *code, const char *fmt, ...) {
  err_count_t *e = err_slot(s, code);
  if (!e) return;
  e->count++;
  int64_t now = srv_now_mono(s);
  if (e->last_log_ms != INT64_MIN &&
      now - e->last_log_ms < ERROR_LOG_INTERVAL_MS) {
    e->unlogged++;
    return;
  }
  e->last_log_ms = now;
  if (PRESENCE_LOG_WARN > s->cfg.log_level) {
    e->unlogged = 0;
    return;
  }
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  emit(s, PRESENCE_LOG_WARN, code, e->unlogged, msg);
  e->unlogged = 0;
}

/* The library reads time through the daemon's injectable clocks, coarse:
 * it reads them at every event, and its own default is coarse too
 * (engine.c: presence needs milliseconds, not finer). */
static int64_t lib_mono_ms(void *ud) {
  return srv_now_mono_coarse(ud);
}

static int64_t lib_wall_ms(void *ud) {
  return srv_now_wall_coarse(ud);
}

static void lib_log(void *ud, presence_log_level_t level, const char *msg) {
  srv_log(ud, level, "libpresence: %s", msg);
}

/* ---- Shared buffers ------------------------------------------------------ */

shbuf_t *shbuf_new(size_t len) {
  if (len > UINT32_MAX) return NULL;
  shbuf_t *b = malloc(sizeof *b + len);
  if (!b) return NULL;
  b->refs = 1;
  b->len = (uint32_t)len;
  return b;
}

void shbuf_unref(shbuf_t *b) {
  if (b && --b->refs == 0) free(b);
}

/* ---- Writes -------------------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  free(req);
  if (status < 0 && status != UV_ECANCELED && !c->closing) conn_close(c);
}

/* Our side is done: half-close and keep reading (discarding) until the peer
 * closes, so unread input does not turn our close into a reset that would
 * destroy the answer we just wrote. */
static void start_linger(conn_t *c) {
  if (c->draining || c->closing) return;
  c->draining = 1;
  if (c->capture) return;
  uv_shutdown_t *req = malloc(sizeof *req);
  if (!req) {
    conn_close(c);
    return;
  }
  req->data = c;
  if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    free(req);
    conn_close(c);
  }
}

static void on_write(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  conn_t *c = w->c;
  srv_t *s = c->srv;
  c->wq_bytes -= w->len;
  s->wq_bytes_total -= w->len;
  shbuf_unref(w->shared);
  free(w);
  if (c->closing) return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->wq_bytes == 0 && c->close_after_flush) {
    start_linger(c);
    return;
  }
  if (c->kind == CONN_SSE) sse_on_drain(c);
}

static void on_overflow(conn_t *c) {
  srv_error(c->srv, "slow_consumer",
            "write queue over %u bytes, dropping the connection",
            c->srv->cfg.max_write_queue);
  if (c->kind == CONN_WS)
    ws_close(c, WS_CLOSE_SLOW, NULL, NULL, PRESENCE_REASON_DISCONNECT);
  else if (c->kind == CONN_BACKEND)
    backend_close(c, WS_CLOSE_SLOW, NULL, NULL);
  else
    conn_close(c);
}

/* What the kernel takes of bufs now, without blocking: bytes, UV_EAGAIN
 * when none, or another negative libuv error. uv_try_write's job, done with
 * send/sendmsg on the descriptor instead of write/writev: a socket write
 * through the file layer (vfs_write, the file position lock, fsnotify)
 * cost ~8 % of presenced's kernel time in a 1,000-member channel's
 * fan-out, one write per member and change. Only called while libuv has
 * nothing queued for the stream, as uv_try_write would. */
static ssize_t send_now(conn_t *c, uv_buf_t *bufs, unsigned n) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) return UV_EBADF;
  ssize_t r;
  do {
    if (n == 1) {
      r = send(fd, bufs[0].base, bufs[0].len, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      /* uv_buf_t is laid out as struct iovec on Unix (libuv's promise). */
      struct msghdr mh = {.msg_iov = (struct iovec *)bufs,
                          .msg_iovlen = n};
      r = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
  } while (r < 0 && errno == EINTR);
  if (r >= 0) return r;
  if (errno == EAGAIN || errno == EWOULDBLOCK) return UV_EAGAIN;
  return uv_translate_sys_error(errno);
}

/* Hand bytes to the kernel now, or queue what it does not take. */
static int write_now(conn_t *c, uv_buf_t *bufs, unsigned n, shbuf_t *shared) {
  if (c->closing) return -1;
  size_t total = 0;
  for (unsigned i = 0; i < n; i++)
    total += bufs[i].len;
  size_t done = 0;
  uv_stream_t *st = (uv_stream_t *)&c->tcp;
  /* Fast path: nothing queued, the kernel takes it now, no allocation. */
  if (c->wq_bytes == 0 && uv_stream_get_write_queue_size(st) == 0) {
    ssize_t r = send_now(c, bufs, n);
    if (r >= 0)
      done = (size_t)r;
    else if (r != UV_EAGAIN && r != UV_ENOSYS) {
      conn_close(c);
      return -1;
    }
    if (done == total) return 0;
  }
  size_t rest = total - done;
  /* A queued write costs its request as well as its bytes (uv_write_t and
   * ours, about 200 B, more than most frames): charged to the connection,
   * so that the slow-consumer limit bounds the memory a reader that stopped
   * reading holds, not half of it (a 1,000-member channel past what its
   * readers take held 6.3 GB under a 4 MB limit when only bytes counted). */
  size_t cost = rest + sizeof(wreq_t);
  if (!c->overflowed &&
      (size_t)c->wq_bytes + cost > c->srv->cfg.max_write_queue) {
    c->overflowed = 1;
    on_overflow(c);
    return -1;
  }
  wreq_t *w;
  if (shared && done == 0 && n == 1) {
    w = malloc(sizeof *w);
    if (!w) goto nomem;
    w->shared = shared;
    shared->refs++;
  } else {
    w = malloc(sizeof *w + rest);
    if (!w) goto nomem;
    w->shared = NULL;
    size_t skip = done, o = 0;
    for (unsigned i = 0; i < n; i++) {
      size_t l = bufs[i].len;
      if (skip >= l) {
        skip -= l;
        continue;
      }
      memcpy(w->data + o, bufs[i].base + skip, l - skip);
      o += l - skip;
      skip = 0;
    }
  }
  w->c = c;
  w->len = (uint32_t)cost;
  uv_buf_t b = uv_buf_init(w->shared ? (char *)shared->data : (char *)w->data,
                           (unsigned)rest);
  if (uv_write(&w->req, st, &b, 1, on_write) != 0) {
    shbuf_unref(w->shared);
    free(w);
    conn_close(c);
    return -1;
  }
  c->wq_bytes += (uint32_t)cost;
  c->srv->wq_bytes_total += cost;
  return 0;
nomem:
  srv_error(c->srv, "out_of_memory", "cannot queue a write");
  conn_close(c);
  return -1;
}

/* ---- Writes coalesced per loop turn (WebSockets) ------------------------- */

/*
 * A WebSocket's frames of one loop turn (a status change fanned out to a
 * watcher, the 101 answer and the welcome, a pong and an ack) go out in one
 * writev at the end of the turn instead of one write each: on loopback
 * TCP a write syscall costs more than everything presenced does to make a
 * frame. Order is kept per connection; a connection's queued bytes count
 * in its wq_bytes (the slow-consumer limit sees them).
 */
typedef struct pend {
  conn_t *c;       /* NULL: written or cancelled */
  shbuf_t *shared; /* a shared frame, or NULL: len bytes at off in pend_data */
  uint32_t off, len;
  uint32_t next;  /* the connection's next entry (index + 1), 0: none */
  uint32_t count; /* in a chain's first entry: entries in the chain */
  uint32_t last;  /* in a chain's first entry: its last (index + 1) */
} pend_t;

/* A chain longer than this is written at once: bounded iovecs, and a
 * burst to one connection still goes out in big writes. */
#define PEND_MAX_CHAIN 64

/* Write c's queued frames now (one writev). */
static void flush_conn(conn_t *c) {
  srv_t *s = c->srv;
  uv_buf_t iov[PEND_MAX_CHAIN];
  shbuf_t *refs[PEND_MAX_CHAIN];
  unsigned k = 0, nrefs = 0;
  size_t total = 0;
  shbuf_t *only = NULL;
  /* Collected first: a write may close connections, whose ends queue
   * frames to others and move s->pend and pend_data. */
  for (uint32_t i = c->pend_first; i && k < PEND_MAX_CHAIN;) {
    pend_t *e = &s->pend[i - 1];
    iov[k++] = uv_buf_init(e->shared ? (char *)e->shared->data
                                     : s->pend_data.data + e->off,
                           e->len);
    if (e->shared) refs[nrefs++] = only = e->shared;
    total += e->len;
    e->c = NULL;
    e->shared = NULL;
    i = e->next;
  }
  c->pend_first = 0;
  c->wq_bytes -= (uint32_t)total;
  s->wq_bytes_total -= total;
  /* One shared frame alone is queued by reference if the kernel does not
   * take it all, as before; anything else is copied then. */
  if (k) write_now(c, iov, k, k == 1 ? only : NULL);
  for (unsigned i = 0; i < nrefs; i++)
    shbuf_unref(refs[i]);
  if (c->closing) return;
  if (c->close_after_flush && c->wq_bytes == 0) start_linger(c);
}

/* A closing connection's queued frames are dropped (uv_close would cancel
 * its queued writes too). */
static void pend_cancel(conn_t *c) {
  srv_t *s = c->srv;
  for (uint32_t i = c->pend_first; i;) {
    pend_t *e = &s->pend[i - 1];
    c->wq_bytes -= e->len;
    s->wq_bytes_total -= e->len;
    shbuf_unref(e->shared);
    e->shared = NULL;
    e->c = NULL;
    i = e->next;
  }
  c->pend_first = 0;
}

static void flush_all(srv_t *s) {
  /* s->npend may grow while this runs (a write that fails closes a
   * connection, which queues frames to others): those are written too. */
  for (uint32_t i = 0; i < s->npend; i++) {
    conn_t *c = s->pend[i].c;
    if (c) flush_conn(c); /* entry i is the first of c's chain */
  }
  s->npend = 0;
  buf_shrink(&s->pend_data, 1u << 20);
  if (s->flush_armed) {
    uv_idle_stop(&s->flush_idle);
    s->flush_armed = 0;
  }
}

static void on_flush_check(uv_check_t *h) {
  flush_all(h->data);
}

static void on_flush_idle(uv_idle_t *h) {
  flush_all(h->data);
}

static int pend_nomem(conn_t *c) {
  srv_error(c->srv, "out_of_memory", "cannot queue a write");
  conn_close(c);
  return -1;
}

/* Queue total bytes at off in pend_data, or a shared frame, as c's next
 * entry; bytes that follow c's last entry in pend_data grow it instead. -1:
 * no memory for an entry (nothing queued). */
static int pend_put(conn_t *c, shbuf_t *shared, size_t off, size_t total) {
  srv_t *s = c->srv;
  pend_t *last =
      c->pend_first ? &s->pend[s->pend[c->pend_first - 1].last - 1] : NULL;
  if (!shared && last && !last->shared && last->off + last->len == off) {
    last->len += (uint32_t)total;
  } else {
    if (s->npend == s->pend_cap) {
      uint32_t cap = s->pend_cap ? s->pend_cap * 2 : 256;
      pend_t *np = realloc(s->pend, cap * sizeof *np);
      if (!np) return -1;
      s->pend = np;
      s->pend_cap = cap;
      last = c->pend_first ? &s->pend[s->pend[c->pend_first - 1].last - 1]
                           : NULL;
    }
    s->pend[s->npend] = (pend_t){.c = c, .shared = shared,
                                 .off = (uint32_t)off, .len = (uint32_t)total};
    if (shared) shared->refs++;
    uint32_t idx = ++s->npend;
    if (last)
      last->next = idx;
    else
      c->pend_first = idx;
    s->pend[c->pend_first - 1].last = idx;
    s->pend[c->pend_first - 1].count++;
  }
  c->wq_bytes += (uint32_t)total;
  s->wq_bytes_total += total;
  if (!s->flush_armed) {
    uv_idle_start(&s->flush_idle, on_flush_idle);
    s->flush_armed = 1;
  }
  return 0;
}

static int pend_add(conn_t *c, uv_buf_t *bufs, unsigned n, shbuf_t *shared) {
  srv_t *s = c->srv;
  size_t total = 0;
  for (unsigned i = 0; i < n; i++)
    total += bufs[i].len;
  if (!c->overflowed &&
      (size_t)c->wq_bytes + total > c->srv->cfg.max_write_queue) {
    c->overflowed = 1;
    on_overflow(c);
    return -1;
  }
  if (c->pend_first && s->pend[c->pend_first - 1].count >= PEND_MAX_CHAIN) {
    flush_conn(c);
    if (c->closing) return -1;
  }
  if (shared && n == 1)
    return pend_put(c, shared, 0, total) ? pend_nomem(c) : 0;
  if (buf_reserve(&s->pend_data, total) != 0) {
    s->pend_data.failed = 0;
    return pend_nomem(c);
  }
  size_t off = s->pend_data.len;
  for (unsigned i = 0; i < n; i++)
    buf_append(&s->pend_data, bufs[i].base, bufs[i].len);
  if (pend_put(c, NULL, off, total) != 0) {
    s->pend_data.len = off;
    return pend_nomem(c);
  }
  return 0;
}

/*
 * A frame made in place: the fan-out of a change to its one watcher writes
 * the frame's payload straight into the turn's write buffer, where it was
 * made in a scratch buffer and copied in (~100 instructions a change of the
 * flip, docs/benchmarks.md). The header's room is kept before the payload
 * for the common size (126 to 65,535 bytes: a 4-byte header); another size
 * moves the payload by a few bytes.
 */
#define FRAME_ROOM 4

buf_t *conn_frame_begin(conn_t *c, size_t *mark) {
  srv_t *s = c->srv;
  if (c->closing || c->draining || c->close_after_flush || c->capture ||
      c->kind != CONN_WS || !s->flush_ready)
    return NULL;
  /* A long chain is written first (as pend_add does): its write may close
   * connections, whose ends queue frames, before this frame starts. */
  if (c->pend_first && s->pend[c->pend_first - 1].count >= PEND_MAX_CHAIN) {
    flush_conn(c);
    if (c->closing) return NULL;
  }
  if (buf_reserve(&s->pend_data, FRAME_ROOM) != 0) {
    s->pend_data.failed = 0;
    return NULL;
  }
  *mark = s->pend_data.len;
  s->pend_data.len += FRAME_ROOM;
  return &s->pend_data;
}

int conn_frame_end(conn_t *c, size_t mark, int opcode) {
  srv_t *s = c->srv;
  buf_t *b = &s->pend_data;
  if (buf_failed(b)) {
    b->failed = 0;
    b->len = mark;
    return pend_nomem(c);
  }
  size_t len = b->len - mark - FRAME_ROOM;
  uint8_t hdr[10];
  size_t hl = ws_frame_header(hdr, opcode, 1, len);
  if (hl != FRAME_ROOM) {
    if (hl > FRAME_ROOM && buf_reserve(b, hl - FRAME_ROOM) != 0) {
      b->failed = 0;
      b->len = mark;
      return pend_nomem(c);
    }
    memmove(b->data + mark + hl, b->data + mark + FRAME_ROOM, len);
    b->len = mark + hl + len;
  }
  memcpy(b->data + mark, hdr, hl);
  size_t total = hl + len;
  if (!c->overflowed &&
      (size_t)c->wq_bytes + total > s->cfg.max_write_queue) {
    b->len = mark;
    c->overflowed = 1;
    on_overflow(c);
    return -1;
  }
  if (pend_put(c, NULL, mark, total) != 0) {
    b->len = mark;
    return pend_nomem(c);
  }
  return 0;
}

static int conn_writev(conn_t *c, uv_buf_t *bufs, unsigned n, shbuf_t *shared) {
  if (c->closing || c->draining || c->close_after_flush) return -1;
  if (c->capture) {
    for (unsigned i = 0; i < n; i++)
      buf_append(c->capture, bufs[i].base, bufs[i].len);
    return buf_failed(c->capture) ? -1 : 0;
  }
  if (c->kind == CONN_WS && c->srv->flush_ready)
    return pend_add(c, bufs, n, shared);
  return write_now(c, bufs, n, shared);
}

int conn_write(conn_t *c, const void *data, size_t len) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  return conn_writev(c, &b, 1, NULL);
}

int conn_write2(conn_t *c, const void *a, size_t alen, const void *b,
                size_t blen) {
  uv_buf_t bufs[2] = {uv_buf_init((char *)a, (unsigned)alen),
                      uv_buf_init((char *)b, (unsigned)blen)};
  return conn_writev(c, bufs, 2, NULL);
}

int conn_write_shared(conn_t *c, shbuf_t *b) {
  uv_buf_t buf = uv_buf_init((char *)b->data, b->len);
  return conn_writev(c, &buf, 1, b);
}

/* ---- Connection lifecycle ------------------------------------------------ */

void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  switch (c->kind) {
  case CONN_HTTP:
    http_req_free(c->u.http);
    c->u.http = NULL;
    break;
  case CONN_WS:
    ws_detach(c);
    break;
  case CONN_SSE:
    sse_detach(c);
    break;
  case CONN_BACKEND:
    backend_detach(c);
    break;
  }
  pend_cancel(c);
  if (c->capture) return; /* detached: conn_free_detached frees it */
  uv_close((uv_handle_t *)&c->tcp, on_close);
}

void conn_close_after_flush(conn_t *c) {
  if (c->closing || c->close_after_flush) return;
  if (c->pend_first) flush_conn(c); /* the last frames go out first */
  if (c->closing) return;
  c->close_after_flush = 1;
  c->linger_since_ms = srv_now_mono(c->srv);
  if (c->wq_bytes == 0) start_linger(c);
}

static void on_close(uv_handle_t *h) {
  conn_t *c = h->data;
  srv_t *s = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  s->nconns--;
  peer_release(s, c);
  free(c->stash);
  c->stash = NULL;
  if (c->refs)
    c->released = 1; /* an asynchronous answer is still due: it frees c */
  else
    free(c);
  srv_maybe_finish(s);
}

void conn_ref(conn_t *c) {
  c->refs++;
}

void conn_unref(conn_t *c) {
  if (--c->refs == 0 && c->released) free(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)suggested;
  buf->base = c->srv->rbuf;
  buf->len = c->srv->rbuf_len;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = st->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  if (nread == 0) return;
  conn_feed(c, buf->base, (size_t)nread);
}

void conn_feed(conn_t *c, const char *data, size_t len) {
  if (c->closing) return;
  /* Coarse: read at every read; the idle checks count in seconds. */
  c->last_rx_ms = srv_now_mono_coarse(c->srv);
  c->rx_any = 1;
  if (c->draining || c->close_after_flush)
    return; /* lingering: input is discarded */
  switch (c->kind) {
  case CONN_HTTP:
    http_on_read(c, data, len);
    break;
  case CONN_WS:
    ws_on_read(c, data, len);
    break;
  case CONN_SSE:
    break; /* an event stream has nothing to say; ignore it */
  case CONN_BACKEND:
    backend_on_read(c, data, len);
    break;
  }
}

conn_t *conn_new_detached(srv_t *s, buf_t *out) {
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->srv = s;
  c->capture = out;
  c->last_rx_ms = srv_now_mono(s);
  return c;
}

void conn_free_detached(conn_t *c) {
  if (!c) return;
  conn_close(c);
  free(c->stash);
  c->stash = NULL;
  if (c->refs)
    c->released = 1;
  else
    free(c);
}

static void on_connection(uv_stream_t *server, int status) {
  srv_t *s = server->data;
  if (status < 0) {
    srv_error(s, "accept_failed", "accept: %s", uv_strerror(status));
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (!c) {
    srv_error(s, "out_of_memory", "cannot accept a connection");
    return;
  }
  uv_tcp_init(s->loop, &c->tcp);
  c->tcp.data = c;
  c->srv = s;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
    return;
  }
  /* One address past its share is dropped unanswered: answering would
   * spend on the attacker what the limit is there to save. */
  if (peer_admit(s, c) != 0) {
    srv_error(s, "too_many_connections_per_ip",
              "dropping a connection: its address holds "
              "--max-connections-per-ip (%u)",
              s->cfg.max_connections_per_ip);
    uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
    return;
  }
  /* Past the limit a connection still gets a 503 answer, but only a few
   * such connections at once (over_limit_cap, raise_fd_limit): beyond that
   * they are dropped unanswered. */
  if (s->nconns >= s->cfg.max_connections) {
    if (s->nconns - s->cfg.max_connections >= s->over_limit_cap) {
      srv_error(s, "too_many_connections", "dropping a connection at %u",
                s->nconns);
      peer_release(s, c);
      uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
      return;
    }
    c->over_limit = 1;
  }
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  s->accepted_total++;
  c->last_rx_ms = c->accepted_ms = srv_now_mono(s);
  uv_tcp_nodelay(&c->tcp, 1);
  if (conn_read_start(c) != 0) conn_close(c);
}

int conn_read_start(conn_t *c) {
  return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- Timers -------------------------------------------------------------- */

/* The library's deadlines (offline grace, inactivity, retention) on one
 * timer: the library reports each change of its next deadline through
 * options.timer (on_presence_timer), and the timer runs presence_tick,
 * which reports the deadline after it. No call site has to remember to
 * re-arm anything after a library call. */
static void on_tick(uv_timer_t *t) {
  srv_t *s = t->data;
  presence_tick(s->p);
}

static void on_presence_timer(void *ud, int64_t timeout_ms) {
  srv_t *s = ud;
  if (uv_is_closing((uv_handle_t *)&s->tick_timer)) return;
  if (timeout_ms < 0)
    uv_timer_stop(&s->tick_timer);
  else
    uv_timer_start(&s->tick_timer, on_tick, (uint64_t)timeout_ms, 0);
}

static void on_house(uv_timer_t *t) {
  srv_t *s = t->data;
  int64_t now = srv_now_mono(s), wall = srv_now_wall(s);
  if (s->shutting_down && s->nconns == 0) {
    s->in_house = 1;
    srv_maybe_finish(s);
    s->in_house = 0;
    return;
  }
  for (conn_t *c = s->conns; c; c = c->next) {
    if (c->closing) continue;
    if (c->close_after_flush || c->draining) {
      if (now - c->linger_since_ms >=
          (s->shutting_down ? SHUTDOWN_LINGER_MS : LINGER_MS))
        conn_close(c);
      continue;
    }
    switch (c->kind) {
    case CONN_HTTP:
      /* A connection that says nothing at all holds a socket for free:
       * it gets a much shorter wait than an idle keep-alive one. */
      if (!c->rx_any &&
          now - c->accepted_ms >= (int64_t)s->cfg.http_first_byte_ms)
        conn_close(c);
      else if (now - c->last_rx_ms >= (int64_t)s->cfg.http_idle_ms)
        conn_close(c);
      else
        http_housekeeping(c, now);
      break;
    case CONN_WS:
      ws_housekeeping(c, now, wall);
      break;
    case CONN_SSE:
      sse_housekeeping(c, now);
      break;
    case CONN_BACKEND:
      backend_housekeeping(c, now);
      break;
    }
  }
  origin_housekeeping(s, now);
  metrics_publish(s, now);
}

static uint64_t house_interval(const srv_config_t *cfg) {
  uint64_t iv = 1000;
  if (cfg->heartbeat_ms / 4 < iv) iv = cfg->heartbeat_ms / 4;
  if (cfg->timeout_ms / 4 < iv) iv = cfg->timeout_ms / 4;
  /* Backend connections are pinged every third of their lease. */
  if (cfg->origin_lease_ms / 4 < iv) iv = cfg->origin_lease_ms / 4;
  /* Event streams' keepalives (--sse-keepalive-ms from 100 ms): a proxy
   * whose idle timeout is under a second needs them at the interval asked,
   * not rounded up to the next housekeeping second. */
  if (cfg->sse_keepalive_ms / 4 < iv) iv = cfg->sse_keepalive_ms / 4;
  return iv < 10 ? 10 : iv;
}

/* ---- Startup and shutdown ------------------------------------------------ */

/* The end of a graceful shutdown that is taking too long (its limit, or a
 * second signal): connections are closed, and neither the Redis store's
 * leave nor a webhook's last delivery is waited for any more. */
static void stop_now(srv_t *s) {
  s->leaving = 0;
  for (conn_t *c = s->conns; c; c = c->next)
    conn_close(c);
  webhook_abort(s);
  srv_maybe_finish(s);
}

/* A worker's signals this close together are one request delivered twice
 * (on_signal). */
#define WORKER_SIGNAL_TWICE_MS 500

static void on_signal(uv_signal_t *h, int signum) {
  srv_t *s = h->data;
  if (s->shutting_down) {
    /* A worker gets one stop request twice: from whoever signalled the
     * whole group (systemd's KillMode=control-group, a terminal's Ctrl-C
     * to its process group) and forwarded by the supervisor. Only a signal
     * sent later is an operator's second one. */
    uint64_t since = s->cfg.shutdown_timeout_ms -
                     uv_timer_get_due_in(&s->stop_timer);
    if (s->cfg.worker && since < WORKER_SIGNAL_TWICE_MS) {
      srv_log(s, PRESENCE_LOG_DEBUG,
              "signal %d again %llu ms after the first: the same request "
              "(to the process group, and from the supervisor)",
              signum, (unsigned long long)since);
      return;
    }
    /* Closing the connections alone left the process waiting for the
     * whole --shutdown-timeout-ms when Redis did not answer the leave or
     * a webhook endpoint hung: an operator's second Ctrl-C did nothing. */
    srv_log(s, PRESENCE_LOG_WARN, "second signal %d: stopping now", signum);
    stop_now(s);
    return;
  }
  /* SIGHUP (the terminal that started it went away, or a reload asked of
   * a daemon that has none) ends it as SIGTERM does: its sessions end and
   * its lease is given back, where the default action killed it on the
   * spot (with Redis its users stayed online until the lease ran out). */
  srv_log(s, PRESENCE_LOG_INFO, "signal %d: shutting down%s", signum,
          signum == SIGHUP ? " (presenced reads its configuration only at "
                             "start: restart it to change it)"
                           : "");
  srv_shutdown(s);
}

/* Descriptors kept for everything but clients: the listener, the loop's
 * own, Redis and kick connections, webhook deliveries, static files. */
#define FD_RESERVE 64
/* Connections past --max-connections held at once to be answered 503. */
#define OVER_LIMIT_MAX 64

static void raise_fd_limit(srv_t *s) {
  struct rlimit rl;
  /* Connections past the limit are held (until their request is answered
   * 503, or --http-first-byte-ms) on the descriptors between the
   * connection limit and the file limit: the spare, FD_RESERVE when the
   * limit was lowered to fit, what everything else the daemon opens needs
   * (the listener, the loop's own, Redis, webhooks, static files, accept
   * itself). At most half of it goes to them: 64 held idle connects had
   * taken all 64 spare descriptors, and the daemon then failed to open
   * anything (EMFILE) until they timed out. With a large file limit the
   * spare is plenty and 64 answers at a time stay the bound. */
  s->over_limit_cap = FD_RESERVE / 2;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  /* Past the file limit accept() fails with EMFILE over and over (the
   * listener stays readable) and Redis or webhook sockets cannot be opened:
   * the connection limit is kept below it, with room for those. */
  if (rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur < (rlim_t)s->cfg.max_connections + FD_RESERVE) {
    uint32_t fit = rl.rlim_cur > 2 * FD_RESERVE
                       ? (uint32_t)(rl.rlim_cur - FD_RESERVE)
                       : (uint32_t)(rl.rlim_cur / 2);
    if (fit < 1) fit = 1;
    srv_log(s, PRESENCE_LOG_WARN,
            "--max-connections %u lowered to %u: the open file limit is %llu "
            "(raise it with LimitNOFILE= or ulimit -n)",
            s->cfg.max_connections, fit, (unsigned long long)rl.rlim_cur);
    s->cfg.max_connections = fit;
  }
  s->over_limit_cap = OVER_LIMIT_MAX;
  if (rl.rlim_cur != RLIM_INFINITY) {
    rlim_t spare = rl.rlim_cur > s->cfg.max_connections
                       ? rl.rlim_cur - s->cfg.max_connections
                       : 0;
    if (spare / 2 < OVER_LIMIT_MAX) s->over_limit_cap = (uint32_t)(spare / 2);
  }
}

/* ---- start-up, in named steps (srv_init) -------------------------------- */

/* The keys of the maps that clients fill (subscribed ids, channels, peer
 * addresses) and of the library's record tables: drawn before the first
 * map_init and presence_new, through the injectable random source. */
static int init_hash_key(const srv_sys_t *sys) {
  uint8_t hkey[16];
  if (sys->random(sys->ud, hkey, sizeof hkey) != 0) return -1;
  map_hash_key(hkey);
  /* The library's tables get their own key from the same source. EBUSY: a
   * presence_t of this process hashed already (a test's second daemon), and
   * the key it has stands. */
  if (sys->random(sys->ud, hkey, sizeof hkey) != 0) return -1;
  int rc = presence_hash_key_set(hkey);
  return rc == 0 || rc == PRESENCE_EBUSY ? 0 : -1;
}

/* Everything that needs no allocation and cannot fail. */
static void init_state(srv_t *s, uv_loop_t *loop, const srv_config_t *cfg,
                       const srv_sys_t *sys) {
  memset(s, 0, sizeof *s);
  s->loop = loop;
  s->cfg = *cfg;
  s->sys = sys;
  map_init(&s->watchers);
  map_init(&s->channels);
  map_init(&s->per_ip);
  buf_init(&s->scratch);
  if (s->cfg.heartbeat_ms >= s->cfg.timeout_ms) {
    s->cfg.heartbeat_ms = s->cfg.timeout_ms / 2;
    srv_log(s, PRESENCE_LOG_WARN,
            "--heartbeat-ms must be below --timeout-ms: using %u",
            s->cfg.heartbeat_ms);
  }
  s->started_wall_ms = srv_now_wall(s);
  s->started_mono_ms = srv_now_mono(s);
  raise_fd_limit(s);
}

/* Who this instance is, and the secrets it checks clients against. */
static int init_identity(srv_t *s) {
  const srv_config_t *cfg = &s->cfg;
  char uuid[37];
  if (srv_uuid4(s->sys, uuid) != 0) return -1;
  if (cfg->worker && cfg->worker_restarts)
    /* A replacement is a new instance: the dead one is reaped, not
     * resumed under a new epoch. */
    snprintf(s->instance_id, sizeof s->instance_id, "%s-w%u.%u",
             cfg->worker_base, cfg->worker, cfg->worker_restarts);
  else if (cfg->worker)
    snprintf(s->instance_id, sizeof s->instance_id, "%s-w%u",
             cfg->worker_base, cfg->worker);
  else
    snprintf(s->instance_id, sizeof s->instance_id, "%.8s", uuid);

  if (cfg->demo) { /* never with a configured secret (config.c) */
    if (demo_init(s) != 0) return -1;
  } else if (cfg->jwt_secret) {
    s->jwt_secret_len = strlen(cfg->jwt_secret);
    s->jwt_secret = malloc(s->jwt_secret_len + 1);
    if (!s->jwt_secret) return -1;
    memcpy(s->jwt_secret, cfg->jwt_secret, s->jwt_secret_len + 1);
  } else {
    srv_log(s, PRESENCE_LOG_WARN,
            "no --jwt-secret: every WebSocket client will be refused");
  }
  if (!cfg->api_key)
    srv_log(s, PRESENCE_LOG_WARN,
            "no --api-key: the backend API answers 401 to everyone");
  return 0;
}

/* The timers first: the library may arm tick_timer from its first call. */
static void init_timers(srv_t *s) {
  uv_timer_t *timers[] = {&s->tick_timer, &s->house_timer, &s->sse_timer,
                          &s->stop_timer};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
    uv_timer_init(s->loop, timers[i]);
    timers[i]->data = s;
  }
  /* The end-of-turn write of coalesced frames. The check handle does not
   * keep the loop alive; the idle one runs only while frames wait. */
  uv_check_init(s->loop, &s->flush_check);
  uv_idle_init(s->loop, &s->flush_idle);
  s->flush_check.data = s->flush_idle.data = s;
  uv_check_start(&s->flush_check, on_flush_check);
  uv_unref((uv_handle_t *)&s->flush_check);
  s->flush_ready = 1;
}

/* The library's options from the configuration. */
static void library_options(srv_t *s, presence_options_t *o) {
  uint64_t epoch = 0;
  presence_options_init(o);
  o->timer = on_presence_timer;
  o->timer_ud = s;
  o->clock.wall_ms = lib_wall_ms;
  o->clock.mono_ms = lib_mono_ms;
  o->clock.ud = s;
  o->log = lib_log;
  o->log_ud = s;
  o->instance_id = s->instance_id;
  s->sys->random(s->sys->ud, &epoch, sizeof epoch);
  o->epoch = epoch ? epoch : 1;
  o->offline_grace_ms = s->cfg.offline_grace_ms;
  o->offline_retention_s = s->cfg.offline_retention_s;
  o->message_max_chars = s->cfg.message_max_chars;
  o->inactivity_ms = s->cfg.inactivity_ms;
  o->log_capacity = s->cfg.log_capacity;
  o->max_sessions_per_user = s->cfg.max_sessions_per_user;
  o->max_channels_per_session = s->cfg.max_channels_per_session;
  o->expected_memberships = s->cfg.expected_memberships;
  o->channel_grace_ms = s->cfg.channel_grace_ms == UINT32_MAX ? 0
                       : s->cfg.channel_grace_ms == 0        ? PRESENCE_GRACE_NONE
                                                             : s->cfg.channel_grace_ms;
  /* The embedded store's log starts afresh with each run: numbered from
   * the start time in microseconds, every run's events are above the last
   * run's (it would have to emit more than one a microsecond on average to
   * reach the next start), so an event stream's or a webhook reader's
   * cursor from before a restart reads as a gap, never as a place inside
   * this run's log. */
  int64_t wall = s->sys->wall_ms(s->sys->ud);
  o->seq_base = wall > 0 ? (uint64_t)wall * 1000u : 0;
}

/* --store redis://...: the Redis store, put into the options (the library
 * owns it from presence_new on). Nothing to do for the embedded store. */
static int open_store(srv_t *s, presence_options_t *o) {
  if (config_store_is_redis(&s->cfg) != 1) return 0;
#ifdef PRESENCED_HAVE_REDIS
  presence_redis_options_t ro;
  memset(&ro, 0, sizeof ro);
  ro.loop = s->loop;
  ro.url = s->cfg.store;
  ro.heartbeat_ms = s->cfg.redis_heartbeat_ms;
  ro.lease_ms = s->cfg.redis_lease_ms;
  ro.command_timeout_ms = s->cfg.redis_timeout_ms;
  ro.stream_maxlen = s->cfg.redis_log_length;
  ro.cluster = s->cfg.redis_cluster;
  ro.shards = s->cfg.redis_shards;
  ro.user = s->cfg.redis_user;
  ro.password = s->cfg.redis_password;
  ro.sentinel_user = s->cfg.redis_sentinel_user;
  ro.sentinel_password = s->cfg.redis_sentinel_password;
  ro.feed_in = s->cfg.feed_in;
  ro.feed_out = s->cfg.feed_out;
  ro.n_feed_out = s->cfg.n_feed_out;
  ro.interest = s->cfg.interest;
  ro.interest_slot = s->cfg.worker ? s->cfg.worker - 1 : 0;
  ro.tls.ca_file = s->cfg.redis_tls_ca;
  ro.tls.cert_file = s->cfg.redis_tls_cert;
  ro.tls.key_file = s->cfg.redis_tls_key;
  ro.tls.server_name = s->cfg.redis_tls_server_name;
  int rrc = presence_store_redis_new(&ro, &o->store);
  if (rrc != 0) {
    char shown[320];
    config_store_redacted(&s->cfg, shown, sizeof shown);
    srv_log(s, PRESENCE_LOG_ERROR, "--store %s: %s", shown,
            presence_strerror(rrc));
    return -1;
  }
  s->rstore = o->store;
#else
  char shown[320];
  config_store_redacted(&s->cfg, shown, sizeof shown);
  srv_log(s, PRESENCE_LOG_ERROR,
          "--store %s: this presenced was built without hiredis", shown);
  return -1;
#endif
  return 0;
}

static int open_library(srv_t *s, presence_options_t *o) {
  int rc = presence_new(o, &s->p);
  if (rc != 0) {
    srv_log(s, PRESENCE_LOG_ERROR, "presence_new: %s", presence_strerror(rc));
    /* presence_new destroyed the store it was given. */
    o->store = NULL;
    s->rstore = NULL;
    return -1;
  }
  return 0;
}

/* The read buffer, the signals and the listening socket (bound later). */
static int init_handles(srv_t *s) {
  s->rbuf_len = READ_BUF_SIZE;
  s->rbuf = malloc(s->rbuf_len);
  if (!s->rbuf) return -1;
  uv_signal_init(s->loop, &s->sigterm);
  uv_signal_init(s->loop, &s->sigint);
  uv_signal_init(s->loop, &s->sighup);
  s->sigterm.data = s->sigint.data = s->sighup.data = s;
  uv_signal_start(&s->sigterm, on_signal, SIGTERM);
  uv_signal_start(&s->sigint, on_signal, SIGINT);
  /* Started under nohup (SIGHUP ignored), presenced stays ignoring it: a
   * handler of its own overrode that, and logging out of the terminal
   * that ran "nohup presenced &" shut it down. */
  struct sigaction hup;
  if (sigaction(SIGHUP, NULL, &hup) == 0 && hup.sa_handler == SIG_IGN)
    srv_log(s, PRESENCE_LOG_INFO,
            "SIGHUP is ignored (nohup): presenced goes on when its terminal "
            "goes away");
  else
    uv_signal_start(&s->sighup, on_signal, SIGHUP);
  uv_tcp_init(s->loop, &s->listener);
  s->listener.data = s;
  return 0;
}

/* The embedded store starts empty: whatever presence the previous process
 * held (a crash, kill -9, a deploy) is gone, and a backend that keeps status
 * on its user records must hear so, or its users stay "online" for ever.
 * One fresh-start cleanup (no instance, no session list: the seed's
 * onCleanup) is the first event of the log, so event streams from the
 * start and webhooks (whose cursor starts at the log's beginning) carry it.
 * The Redis store emits its own when it finds stale state and no live
 * instance. */
static int announce_fresh_start(srv_t *s) {
  if (s->rstore) return 0;
  int rc = presence_reset(s->p, NULL, NULL);
  if (rc != 0) {
    srv_log(s, PRESENCE_LOG_ERROR, "fresh-start cleanup: %s",
            presence_strerror(rc));
    return -1;
  }
  return 0;
}

int srv_init(srv_t *s, uv_loop_t *loop, const srv_config_t *cfg,
             const srv_sys_t *sys) {
  presence_options_t o;
  if (init_hash_key(sys) != 0) return -1;
  init_state(s, loop, cfg, sys);
  srv_interest_init(s);
  if (init_identity(s) != 0) return -1;
  init_timers(s);
  library_options(s, &o);
  if (open_store(s, &o) != 0 || open_library(s, &o) != 0) return -1;
  /* The parts of the daemon that hang off the library. */
  if (fanout_init(s) != 0) return -1;
  if (origin_init(s) != 0) return -1;
  if (webhook_init(s) != 0) return -1;
  if (kick_init(s) != 0) return -1;
  if (announce_fresh_start(s) != 0) return -1;
  return init_handles(s);
}

/* --workers: every worker binds the same address with SO_REUSEPORT and the
 * kernel spreads new connections over their accept queues. libuv before
 * 1.49 has no flag for it on Linux: the socket is made here and handed
 * over. SO_REUSEADDR as libuv sets it, so a restart binds over TIME_WAIT. */
#ifndef SO_REUSEPORT
/* Hidden by the strict POSIX feature level the build asks for; the value
 * of Linux's asm-generic/socket.h. */
#define SO_REUSEPORT 15
#endif
static int bind_reuseport(srv_t *s, const struct sockaddr *sa) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return uv_translate_sys_error(errno);
  int on = 1;
  socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                           : sizeof(struct sockaddr_in);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
      bind(fd, sa, len) != 0) {
    int e = errno;
    close(fd);
    return uv_translate_sys_error(e);
  }
  int rc = uv_tcp_open(&s->listener, fd);
  if (rc != 0) close(fd);
  return rc;
}

int srv_listen(srv_t *s) {
  struct sockaddr_storage ss;
  int rc;
  if (strchr(s->cfg.host, ':'))
    rc = uv_ip6_addr(s->cfg.host, s->cfg.port, (struct sockaddr_in6 *)&ss);
  else
    rc = uv_ip4_addr(s->cfg.host, s->cfg.port, (struct sockaddr_in *)&ss);
  if (rc == 0 && s->cfg.worker)
    rc = bind_reuseport(s, (struct sockaddr *)&ss);
  else if (rc == 0)
    rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->listener, (int)s->cfg.listen_backlog,
                   on_connection);
  if (rc != 0) {
    struct rlimit rl;
    if (rc == UV_EMFILE && getrlimit(RLIMIT_NOFILE, &rl) == 0)
      srv_log(s, PRESENCE_LOG_ERROR,
              "cannot listen on %s: %s (the open file limit is %llu: raise "
              "it with ulimit -n or LimitNOFILE=)",
              s->cfg.listen, uv_strerror(rc),
              (unsigned long long)rl.rlim_cur);
    else
      srv_log(s, PRESENCE_LOG_ERROR, "cannot listen on %s: %s", s->cfg.listen,
              uv_strerror(rc));
    return -1;
  }
  /* Port 0 asks the kernel for a free port: the start line names the one
   * bound, the only way an operator or a script learns it. */
  struct sockaddr_storage bound;
  int blen = (int)sizeof bound;
  if (s->cfg.port == 0 &&
      uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen) == 0)
    config_set_bound_port(&s->cfg, (struct sockaddr *)&bound);
  uint64_t iv = house_interval(&s->cfg);
  uv_timer_start(&s->house_timer, on_house, iv, iv);
  srv_log(s, PRESENCE_LOG_INFO, "listening on %s (instance %s%s)",
          s->cfg.listen, s->instance_id, s->cfg.demo ? ", demo mode" : "");
  return 0;
}

static void on_stop_timer(uv_timer_t *t) {
  srv_t *s = t->data;
  srv_log(s, PRESENCE_LOG_WARN,
          "shutdown took longer than %u ms: closing %u connections",
          s->cfg.shutdown_timeout_ms, s->nconns);
  stop_now(s);
}

int srv_store_ready(const srv_t *s) {
#ifdef PRESENCED_HAVE_REDIS
  return s->rstore && presence_redis_ready(s->rstore);
#else
  (void)s;
  return 0;
#endif
}

void srv_maybe_finish(srv_t *s) {
  /* With Redis the finish frees the store, which must not happen inside
   * one of its callbacks (a log read, the leave): the housekeeping timer
   * finishes instead. */
  if (s->rstore && !s->in_house) return;
  if (s->shutting_down && s->nconns == 0 && !s->leaving && webhook_done(s))
    srv_finish(s);
}

#ifdef PRESENCED_HAVE_REDIS
/* The Redis store has ended this instance's sessions and given up its
 * lease: other instances see the users go now, not after the lease. */
static void on_left(void *ud, int status) {
  srv_t *s = ud;
  if (!s->leaving) return; /* the shutdown limit went first */
  s->leaving = 0;
  if (status)
    srv_log(s, PRESENCE_LOG_WARN,
            "leaving Redis: %s (another instance reaps after the lease)",
            presence_strerror(status));
  /* Event streams get what reached the log, then close. The finish is
   * left to the housekeeping timer: this runs inside the store's reply
   * callback, where the store must not be freed. */
  sse_pump(s, 1);
  webhook_shutdown(s);
}
#endif

void srv_shutdown(srv_t *s) {
  if (s->shutting_down) return;
  s->shutting_down = 1;
  if (!uv_is_closing((uv_handle_t *)&s->listener))
    uv_close((uv_handle_t *)&s->listener, NULL);
  uv_timer_start(&s->stop_timer, on_stop_timer, s->cfg.shutdown_timeout_ms, 0);
  /* Sessions end first, so their events reach the log before the event
   * streams are flushed and closed. */
  for (conn_t *c = s->conns; c; c = c->next) {
    if (!c->closing && c->kind == CONN_WS) ws_shutdown(c);
    if (!c->closing && c->kind == CONN_BACKEND)
      backend_close(c, WS_CLOSE_GOING_AWAY, NULL, "server shutting down");
  }
  /* Backends' sessions end too (reason shutdown), before the flush. */
  origin_shutdown(s);
#ifdef PRESENCED_HAVE_REDIS
  /* An instance never registered (it failed before its first answer from
   * Redis: a busy port, a worker that cannot start) holds no lease and
   * wrote no session: there is nothing to leave, and a "leaving Redis:
   * store unavailable" line would tell of a join and an outage that never
   * happened. */
  if (s->rstore && presence_redis_epoch(s->rstore) != 0) {
    /* The sessions' ends and the lease's release go to Redis first; the
     * event streams and webhooks are flushed once that is done (on_left),
     * all within the shutdown limit. */
    s->leaving = 1;
    if (presence_redis_leave(s->rstore, on_left, s) != 0) s->leaving = 0;
  }
#endif
  if (!s->leaving) {
    /* The embedded store applies no offline grace to a shutdown, and the
     * users already in their grace (a tab closed seconds ago) go offline
     * now too: nobody can come back to this process, and left pending a
     * webhook receiver held them present until the next start. So every
     * user.offline is in the log ahead of the flush below. */
    if (!s->rstore) (void)presence_end_graces(s->p, NULL, NULL);
    sse_pump(s, 1);
    /* Webhooks get the same events: flushed within the shutdown limit. */
    webhook_shutdown(s);
  }
  /* Lingering closes are cut short, and checked often. */
  uv_timer_start(&s->house_timer, on_house, 50, 50);
  for (conn_t *c = s->conns; c; c = c->next)
    if (!c->closing && c->kind == CONN_HTTP) conn_close_after_flush(c);
#ifdef PRESENCED_HAVE_REDIS
  if (s->rstore && presence_redis_epoch(s->rstore) == 0 && s->nconns == 0 &&
      webhook_done(s)) {
    /* Never registered and nothing open (a listen that failed at start):
     * the store goes now rather than at the next housekeeping tick, by
     * which its registration, still in flight, had completed: the log
     * said "instance registered" after the failure, and Redis kept a
     * lease nobody renews until another instance reaped it. This is
     * never inside a store callback (main, a signal), where freeing the
     * store is not allowed. */
    s->in_house = 1;
    srv_maybe_finish(s);
    s->in_house = 0;
    return;
  }
#endif
  srv_maybe_finish(s);
}

/* Everything is closed: release the loop's remaining handles so uv_run
 * returns. */
static void srv_finish(srv_t *s) {
  if (s->flush_ready) {
    flush_all(s);
    s->flush_ready = 0;
    uv_close((uv_handle_t *)&s->flush_check, NULL);
    uv_close((uv_handle_t *)&s->flush_idle, NULL);
  }
  uv_handle_t *hs[] = {
      (uv_handle_t *)&s->tick_timer, (uv_handle_t *)&s->house_timer,
      (uv_handle_t *)&s->sse_timer,  (uv_handle_t *)&s->stop_timer,
      (uv_handle_t *)&s->sigterm,    (uv_handle_t *)&s->sigint,
      (uv_handle_t *)&s->sighup,     (uv_handle_t *)&s->listener};
  for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
    if (!uv_is_closing(hs[i])) uv_close(hs[i], NULL);
  webhook_close(s);
  kick_close(s);
  origin_close(s);
  if (s->rstore) {
    /* The Redis store's connections and timers are loop handles: the loop
     * ends only once it is gone. Nothing uses p after this point (every
     * connection is closed). */
    presence_free(s->p);
    s->p = NULL;
    s->rstore = NULL;
  }
}

void srv_free(srv_t *s) {
  origin_free(s);
  kick_free(s);
  webhook_free(s);
  fanout_free(s);
  if (s->p) presence_free(s->p);
  ws_table_free(&s->sessions);
  map_free(&s->watchers);
  map_free(&s->channels);
  map_free(&s->per_ip);
  buf_free(&s->scratch);
  ws_parser_free(s->spare_parser);
  for (uint32_t i = 0; i < s->npend; i++)
    shbuf_unref(s->pend[i].shared);
  free(s->pend);
  buf_free(&s->pend_data);
  free(s->rbuf);
  free(s->jwt_secret);
  memset(s, 0, sizeof *s);
}
