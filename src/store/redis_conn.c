/* SPDX-License-Identifier: MIT */
/*
 * The Redis connection layer (redis_conn.h): a libuv stream (TCP or a unix
 * socket), OpenSSL over memory BIOs for rediss://, the RESP reader of
 * redis_resp.c, and a FIFO of callbacks matched to replies by order.
 *
 * Why our own transport rather than hiredis's async context: Debian 12's
 * hiredis 0.14 has no TLS, no timeouts and no bound on a reply, so every
 * user of it wrapped it in a watchdog of its own (three in this tree). The
 * bytes were always the cheap part: a stream, a write queue and a reader
 * are what hiredis's async context is, and holding them here puts the
 * deadline, the backoff, the limits and TLS in one place. Measurements in
 * docs/internals/redis.md.
 *
 * Lifetimes: libuv closes handles on the loop, after the call that asked.
 * So what libuv holds lives apart from the connection: the stream of each
 * attempt (io_t), a pending name lookup (gai_t), a write (wreq_t) and the
 * two timers (timers_t) point back at the connection and find NULL once it
 * is gone or has moved on to another attempt. The connection itself may be
 * freed from inside one of its own callbacks: depth counts the callbacks
 * running, and the memory goes when the outermost returns.
 *
 * Those loop-held pieces (and the bytes of a write in flight) come from
 * libc, not the host's allocator: they outlive the connection, and the
 * host's allocator may be gone by the time libuv lets go of them (presenced
 * frees its presence_t before the loop's last run).
 */
#include "store/redis_conn.h"
#include "store/redis_resp.h"

#include <assert.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_CHUNK 65536
#define BACKOFF_MIN_MS 50

enum {
  S_IDLE,       /* not started */
  S_RESOLVING,  /* looking the host up */
  S_CONNECTING, /* TCP / unix connect */
  S_TLS,        /* TLS handshake */
  S_HELLO,      /* AUTH / SELECT sent, not all answered */
  S_UP,
  S_WAIT, /* lost; the retry timer reconnects */
  S_FREED
};

/* With a redis+sentinel:// URL an attempt has two legs: ask a sentinel
 * where the primary is (SP_ASK), then connect to it (SP_DATA). A watch
 * connection (SP_WATCH) stays on a sentinel, subscribed to +switch-master. */
enum { SP_NONE, SP_ASK, SP_DATA, SP_WATCH };

typedef struct pend {
  struct pend *next;
  presence__rconn_cb cb;
  void *ud;
  uint64_t sent_ms;
  uint32_t timeout_ms;
} pend_t;

typedef struct io {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  uv_connect_t connect;
  presence__rconn_t *c; /* NULL once abandoned */
} io_t;

typedef struct gai {
  uv_getaddrinfo_t req;
  presence__rconn_t *c;
} gai_t;

typedef struct wreq {
  uv_write_t req;
  char *buf;
  size_t cap;
  bool is_flush; /* the command queue's write (others: TLS records) */
} wreq_t;

typedef struct timers {
  uv_timer_t deadline, retry;
  int open;
  presence__rconn_t *c;
} timers_t;

struct presence__rconn {
  presence__rconn_config_t cfg;
  const presence_allocator_t *a;
  int state;
  io_t *io;
  gai_t *gai;
  timers_t *tm;
  SSL_CTX *ctx;
  SSL *ssl;
  BIO *rbio, *wbio;
  char *tls_in; /* ciphertext read buffer */
  presence__resp_reader_t rd;
  pend_t *head, *tail;
  pend_t *spare_pends; /* a free list: one command, one pend, no malloc */
  char *ob;            /* commands not yet handed to the stream */
  size_t ob_len, ob_cap;
  char *spare_buf; /* the last write's buffer, reused (ob and it: libc) */
  size_t spare_cap;
  bool writing;
  int hello_left;
  uint64_t progress_ms; /* last reply */
  uint64_t connect_started;
  uint64_t attempt_bytes_in; /* m.bytes_in when this attempt began */
  uint64_t armed_due; /* the deadline timer's due time; 0: not armed */
  bool strike;        /* a deadline passed; judged again after a poll */
  uint32_t backoff_ms;
  unsigned gen; /* connection attempts: a callback sees if it moved on */
  int depth;
  bool freed;
  presence_redis_conn_metrics_t m;
  char where[160]; /* host:port or the socket path: never a secret */
  /* Sentinel */
  int sphase;
  size_t s_next;   /* the sentinel asked next (rotates on each failure) */
  bool s_found;    /* the next attempt goes to the primary named */
  char *p_host;    /* the primary the sentinels named */
  int p_port;
  presence__rconn_t *watch; /* subscribed to +switch-master */
  char watch_name[64];
  /* The wire bytes of the reply being delivered (presence__rconn_raw). */
  const char *raw;
  size_t raw_len;
};

static void lose(presence__rconn_t *c, int code, const char *why);
static void on_deadline(uv_timer_t *t);
static void flush(presence__rconn_t *c);
static void arm(presence__rconn_t *c);

static uint64_t now_ms(presence__rconn_t *c) {
  return uv_now(c->cfg.loop);
}

/* Where this attempt goes: the URL's host, a sentinel, or the primary a
 * sentinel named. */
static const char *tgt_host(const presence__rconn_t *c) {
  if (c->sphase == SP_ASK || c->sphase == SP_WATCH)
    return c->cfg.url->sentinels[c->s_next].host;
  if (c->sphase == SP_DATA) return c->p_host;
  return c->cfg.url->host;
}

static int tgt_port(const presence__rconn_t *c) {
  if (c->sphase == SP_ASK || c->sphase == SP_WATCH)
    return c->cfg.url->sentinels[c->s_next].port;
  if (c->sphase == SP_DATA) return c->p_port;
  return c->cfg.url->port;
}

static void set_where(presence__rconn_t *c) {
  const presence__redis_url_t *u = c->cfg.url;
  if (u->path) {
    snprintf(c->where, sizeof c->where, "%s", u->path);
    return;
  }
  const char *h = tgt_host(c);
  snprintf(c->where, sizeof c->where, "%s%s%s%s:%d",
           c->sphase == SP_ASK || c->sphase == SP_WATCH ? "sentinel " : "",
           strchr(h, ':') ? "[" : "", h, strchr(h, ':') ? "]" : "",
           tgt_port(c));
}

/* printf-checked at every call (and clang's -Wformat-nonliteral then
 * accepts the vsnprintf below). */
static void logf_(presence__rconn_t *c, presence_log_level_t lvl,
                  const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void logf_(presence__rconn_t *c, presence_log_level_t lvl,
                  const char *fmt, ...) {
  if (!c->cfg.log) return;
  char msg[512];
  int n = snprintf(msg, sizeof msg, "%s: ", c->cfg.name);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
  va_end(ap);
  c->cfg.log(c->cfg.ud, lvl, msg);
}

/* Callbacks run inside enter/leave: leave says whether the connection was
 * freed meanwhile (the caller must not touch it then). */
static void enter(presence__rconn_t *c) {
  c->depth++;
}

static void really_free(presence__rconn_t *c);

static bool leave(presence__rconn_t *c) {
  if (--c->depth == 0 && c->freed) {
    really_free(c);
    return true;
  }
  return c->freed;
}

/* ---- handles ------------------------------------------------------------- */

static void on_io_closed(uv_handle_t *h) {
  free(h->data);
}

static void io_abandon(presence__rconn_t *c) {
  if (c->gai) {
    c->gai->c = NULL; /* freed by its callback, which libuv always calls */
    uv_cancel((uv_req_t *)&c->gai->req);
    c->gai = NULL;
  }
  if (c->io) {
    c->io->c = NULL;
    uv_close(&c->io->h.handle, on_io_closed);
    c->io = NULL;
  }
  if (c->ssl) {
    SSL_free(c->ssl); /* frees both BIOs */
    c->ssl = NULL;
    c->rbio = c->wbio = NULL;
  }
  c->writing = false;
  c->ob_len = 0;
  presence__resp_reset(&c->rd);
}

static void on_timer_closed(uv_handle_t *h) {
  timers_t *tm = h->data;
  if (--tm->open == 0) free(tm);
}

/* ---- the pending FIFO ---------------------------------------------------- */

static pend_t *pend_pop(presence__rconn_t *c) {
  pend_t *p = c->head;
  if (!p) return NULL;
  c->head = p->next;
  if (!c->head) c->tail = NULL;
  c->m.pending--;
  return p;
}

static void pend_recycle(presence__rconn_t *c, pend_t *p) {
  p->next = c->spare_pends;
  c->spare_pends = p;
}

/* Fail every pending command with code. The caller holds enter(): the
 * memory stays while callbacks run, even if one frees the connection (its
 * free then fails the rest with ESHUTDOWN; this loop finds none left). */
static void fail_all(presence__rconn_t *c, int code) {
  pend_t *p;
  while ((p = pend_pop(c))) {
    presence__rconn_cb cb = p->cb;
    void *ud = p->ud;
    pend_recycle(c, p);
    c->m.failed++;
    cb(ud, c->freed ? PRESENCE_ESHUTDOWN : code, NULL);
  }
}

/* ---- connecting ---------------------------------------------------------- */

/* A deadline that passed is judged on a second look, one loop iteration
 * later: timers run before the loop reads its sockets, so after a stall of
 * this process (not of Redis) the answers may be sitting unread. */
static bool second_look(presence__rconn_t *c, uint64_t now) {
  if (c->strike) return false;
  c->strike = true;
  c->armed_due = now + 1;
  uv_timer_start(&c->tm->deadline, on_deadline, 1, 0);
  return true;
}

static void on_deadline(uv_timer_t *t) {
  timers_t *tm = t->data;
  presence__rconn_t *c = tm->c;
  if (!c) return;
  c->armed_due = 0;
  uint64_t now = now_ms(c);
  if (c->state >= S_RESOLVING && c->state <= S_HELLO) {
    uint64_t due = c->connect_started + c->cfg.command_timeout_ms;
    if (now >= due && second_look(c, now)) return;
    if (now >= due) {
      char why[64];
      snprintf(why, sizeof why, "not ready within %u ms",
               (unsigned)c->cfg.command_timeout_ms);
      lose(c, PRESENCE_ETIMEDOUT, why);
      return;
    }
  } else if (c->state == S_UP && c->head) {
    uint64_t since =
        c->head->sent_ms > c->progress_ms ? c->head->sent_ms : c->progress_ms;
    if (now >= since + c->head->timeout_ms && second_look(c, now)) return;
    if (now >= since + c->head->timeout_ms) {
      char why[64];
      snprintf(why, sizeof why, "no answer within %u ms",
               (unsigned)c->head->timeout_ms);
      c->m.timeouts++;
      lose(c, PRESENCE_ETIMEDOUT, why);
      return;
    }
  }
  c->strike = false; /* not late after all */
  arm(c);
}

/* Keep the deadline timer armed for the earliest thing that can be late:
 * the attempt to connect, or the oldest command (counted from its send or
 * the last reply, whichever is later: a deep pipeline is slow, not dead).
 * Lazy: a due time already armed earlier stays; the timer re-arms itself. */
static void arm(presence__rconn_t *c) {
  if (!c->tm) return;
  uint64_t due = 0;
  if (c->state >= S_RESOLVING && c->state <= S_HELLO) {
    due = c->connect_started + c->cfg.command_timeout_ms;
  } else if (c->state == S_UP && c->head) {
    uint64_t since =
        c->head->sent_ms > c->progress_ms ? c->head->sent_ms : c->progress_ms;
    due = since + c->head->timeout_ms;
  }
  if (!due || (c->armed_due && c->armed_due <= due)) return;
  uint64_t now = now_ms(c);
  c->armed_due = due;
  uv_timer_start(&c->tm->deadline, on_deadline, due > now ? due - now : 0, 0);
}

static void set_up(presence__rconn_t *c) {
  c->state = S_UP;
  c->backoff_ms = 0;
  c->m.connects++;
  c->progress_ms = now_ms(c);
  /* A reconnect is news to an operator; the first connect is not. */
  logf_(c, c->m.connects > 1 ? PRESENCE_LOG_INFO : PRESENCE_LOG_DEBUG,
        "connected to %s%s", c->where, c->cfg.url->tls ? " (TLS)" : "");
  if (c->cfg.on_up) {
    enter(c);
    c->cfg.on_up(c->cfg.ud);
    if (leave(c)) return;
  }
  arm(c);
}

static int queue(presence__rconn_t *c, const char *resp, size_t len,
                 uint32_t timeout_ms, presence__rconn_cb cb, void *ud);

/* The sentinels' credentials are not the URL's (those are the data
 * nodes'): a sentinel refusing to talk says which ones to give. */
#define SENTINEL_AUTH_HINT                                                     \
  "the sentinels' password goes apart from the URL's, which is the data "     \
  "nodes': presenced's --redis-sentinel-password-file or "                    \
  "PRESENCED_REDIS_SENTINEL_PASSWORD"

static bool on_sentinel(const presence__rconn_t *c) {
  return c->sphase == SP_ASK || c->sphase == SP_WATCH;
}

/* Why a sentinel or a data node refused the connection's first commands:
 * Redis's text names the failure (WRONGPASS, NOPERM, ...), never the
 * password. */
static void refusal(const presence__rconn_t *c, const char *err, char *why,
                    size_t n) {
  bool sentinel = on_sentinel(c);
  if (!strncmp(err, "NOAUTH", 6) && sentinel)
    snprintf(why, n, "the sentinel requires a password: %s",
             SENTINEL_AUTH_HINT);
  else if (!strncmp(err, "NOAUTH", 6))
    snprintf(why, n,
             "it requires a password: give it in the URL "
             "(redis://user:password@host) or apart (a file, the "
             "environment)");
  else if (sentinel && (!strncmp(err, "WRONGPASS", 9) ||
                        !strncmp(err, "ERR AUTH", 8)))
  {
    /* Redis ends WRONGPASS's text with a full stop. */
    int len = (int)strnlen(err, 120);
    if (len && err[len - 1] == '.') len--;
    snprintf(why, n, "refused: %.*s; %s", len, err, SENTINEL_AUTH_HINT);
  }
  else
    snprintf(why, n, "refused: %.150s", err);
}

static void on_hello(void *ud, int code, redisReply *rep) {
  presence__rconn_t *c = ud;
  if (code || c->state != S_HELLO) return; /* lost: lose() reports it */
  if (rep->type == REDIS_REPLY_ERROR) {
    char why[320];
    refusal(c, rep->str, why, sizeof why);
    lose(c, PRESENCE_ESTORE, why);
    return;
  }
  if (--c->hello_left == 0 && c->sphase != SP_ASK) set_up(c);
}

static void start(presence__rconn_t *c);

static void on_retry(uv_timer_t *t) {
  timers_t *tm = t->data;
  if (tm->c && tm->c->state == S_WAIT) start(tm->c);
}

/* SENTINEL get-master-addr-by-name: [ip, port], or nil when this sentinel
 * does not know the master (then the next one is asked). */
static void on_master(void *ud, int code, redisReply *rep) {
  presence__rconn_t *c = ud;
  if (code || c->state != S_HELLO || c->sphase != SP_ASK) return;
  const redisReply *h = rep->type == REDIS_REPLY_ARRAY && rep->elements == 2
                            ? rep->element[0]
                            : NULL;
  const redisReply *p = h ? rep->element[1] : NULL;
  long port = p && p->type == REDIS_REPLY_STRING ? atol(p->str) : 0;
  if (!h || h->type != REDIS_REPLY_STRING || !h->len || port < 1 ||
      port > 65535) {
    char why[320];
    if (rep->type == REDIS_REPLY_ERROR &&
        (!strncmp(rep->str, "NOAUTH", 6) || !strncmp(rep->str, "NOPERM", 6)))
      refusal(c, rep->str, why, sizeof why); /* it did not say: it refused */
    else
      snprintf(why, sizeof why, "it names no primary for master '%.60s'%s%.80s",
               c->cfg.url->master, rep->type == REDIS_REPLY_ERROR ? ": " : "",
               rep->type == REDIS_REPLY_ERROR ? rep->str : "");
    lose(c, PRESENCE_ESTORE, why);
    return;
  }
  char *host = presence__malloc(c->a, h->len + 1);
  if (!host) {
    lose(c, PRESENCE_ENOMEM, "out of memory");
    return;
  }
  memcpy(host, h->str, h->len);
  host[h->len] = '\0';
  if (!c->p_host || strcmp(c->p_host, host) || c->p_port != (int)port)
    logf_(c, c->m.connects ? PRESENCE_LOG_INFO : PRESENCE_LOG_DEBUG,
          "%s names %s:%ld as the primary of '%s'", c->where, host, port,
          c->cfg.url->master);
  presence__free(c->a, c->p_host);
  c->p_host = host;
  c->p_port = (int)port;
  /* Leave the sentinel and connect to the primary, from the loop (this
   * runs inside the sentinel stream's read callback). */
  c->gen++;
  io_abandon(c);
  c->armed_due = 0;
  uv_timer_stop(&c->tm->deadline);
  c->state = S_WAIT;
  c->s_found = true;
  uv_timer_start(&c->tm->retry, on_retry, 0, 0);
}

/* ROLE on a primary the sentinels named: it must still be one (a sentinel
 * may answer from before a failover, or the node may have been demoted). */
static void on_role(void *ud, int code, redisReply *rep) {
  presence__rconn_t *c = ud;
  if (code || c->state != S_HELLO) return;
  const redisReply *r = rep->type == REDIS_REPLY_ARRAY && rep->elements
                            ? rep->element[0]
                            : NULL;
  if (!r || r->type != REDIS_REPLY_STRING || strcmp(r->str, "master")) {
    char why[160];
    snprintf(why, sizeof why,
             "not the primary (ROLE: %.40s): asking the sentinels again",
             r && r->type == REDIS_REPLY_STRING ? r->str
             : rep->type == REDIS_REPLY_ERROR   ? rep->str
                                                : "?");
    lose(c, PRESENCE_ESTORE, why);
    return;
  }
  if (--c->hello_left == 0) set_up(c);
}

/* The stream carries RESP now: AUTH and SELECT go first, in one write. */
static void hello(presence__rconn_t *c) {
  c->state = S_HELLO;
  c->hello_left = 0;
  const presence__redis_url_t *u = c->cfg.url;
  char *buf = NULL;
  size_t len = 0, cap = 0;
  int rc = 0;
  /* A sentinel has its own credentials, and no database. */
  bool sentinel = c->sphase == SP_ASK || c->sphase == SP_WATCH;
  const char *user = sentinel ? u->sentinel_user : u->user;
  const char *password = sentinel ? u->sentinel_password : u->password;
  if (password) {
    const char *argv[] = {"AUTH", user ? user : password, password};
    rc = presence__resp_append(c->a, &buf, &len, &cap, user ? 3 : 2, argv,
                               NULL);
    if (!rc) {
      rc = queue(c, buf, len, 0, on_hello, c);
      c->hello_left += !rc;
    }
    /* The buffer held the password. */
    if (buf) memset(buf, 0, cap);
    len = 0;
  }
  if (!rc && !password && !sentinel) {
    /* Without AUTH, a server that wants a password answers a large first
     * command with a protocol error, not NOAUTH: ask with a PING first, so
     * that up means usable and the log says what is missing. */
    const char *argv[] = {"PING"};
    rc = presence__resp_append(c->a, &buf, &len, &cap, 1, argv, NULL);
    if (!rc) {
      rc = queue(c, buf, len, 0, on_hello, c);
      c->hello_left += !rc;
    }
    len = 0;
  }
  if (!rc && u->db && !sentinel) {
    char db[16];
    snprintf(db, sizeof db, "%d", u->db);
    const char *argv[] = {"SELECT", db};
    rc = presence__resp_append(c->a, &buf, &len, &cap, 2, argv, NULL);
    if (!rc) {
      rc = queue(c, buf, len, 0, on_hello, c);
      c->hello_left += !rc;
    }
  }
  if (!rc && c->sphase != SP_NONE) {
    const char *ask[] = {"SENTINEL", "get-master-addr-by-name", u->master};
    const char *sub[] = {"SUBSCRIBE", "+switch-master"};
    const char *role[] = {"ROLE"};
    const char *const *argv = c->sphase == SP_ASK     ? ask
                              : c->sphase == SP_WATCH ? sub
                                                      : role;
    int argc = c->sphase == SP_ASK ? 3 : c->sphase == SP_WATCH ? 2 : 1;
    len = 0;
    rc = presence__resp_append(c->a, &buf, &len, &cap, argc, argv, NULL);
    if (!rc) {
      rc = queue(c, buf, len, 0,
                 c->sphase == SP_ASK    ? on_master
                 : c->sphase == SP_DATA ? on_role
                                        : on_hello,
                 c);
      c->hello_left += !rc && c->sphase != SP_ASK;
    }
  }
  presence__free(c->a, buf);
  if (rc) {
    lose(c, rc, "out of memory");
    return;
  }
  if (!c->hello_left && c->sphase != SP_ASK) {
    set_up(c);
    return;
  }
  flush(c);
}

/* ---- TLS ----------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status);

/* Hand what OpenSSL wrote into its memory BIO to the stream. */
static int tls_out(presence__rconn_t *c, bool is_flush) {
  size_t n = BIO_ctrl_pending(c->wbio);
  if (!n) return 0;
  wreq_t *w = malloc(sizeof *w);
  char *buf = malloc(n);
  if (!w || !buf) {
    free(w);
    free(buf);
    return PRESENCE_ENOMEM;
  }
  int got = BIO_read(c->wbio, buf, (int)n);
  w->buf = buf;
  w->cap = n;
  w->is_flush = is_flush;
  uv_buf_t b = uv_buf_init(buf, got > 0 ? (unsigned)got : 0);
  int rc = uv_write(&w->req, &c->io->h.stream, &b, 1, on_write);
  if (rc) {
    free(buf);
    free(w);
    return PRESENCE_ESTORE;
  }
  if (is_flush) c->writing = true;
  return 0;
}

static void tls_why(presence__rconn_t *c, char *why, size_t n,
                    const char *what) {
  unsigned long e = ERR_get_error();
  char es[160] = "";
  if (e) ERR_error_string_n(e, es, sizeof es);
  long v = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
  /* The setting that mends the usual failures of verification. */
  const presence_redis_tls_t *t = c->cfg.tls;
  const char *hint = "";
  if (v == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
      v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
      v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
      v == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE)
    hint = t && t->ca_file ? " (is --redis-tls-ca the CA that signed Redis's "
                             "certificate?)"
                           : " (not signed by a CA of the system's: give "
                             "yours with --redis-tls-ca)";
  else if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
    hint = " (--redis-tls-server-name sets the name checked)";
  if (v != X509_V_OK)
    snprintf(why, n, "%s: certificate: %s%s", what,
             X509_verify_cert_error_string(v), hint);
  else
    snprintf(why, n, "%s: %s", what, e ? es : "connection closed");
  ERR_clear_error();
}

static int tls_ctx(presence__rconn_t *c, char *why, size_t n) {
  if (c->ctx) return 0;
  const presence_redis_tls_t *t = c->cfg.tls;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return snprintf(why, n, "TLS: out of memory"), PRESENCE_ENOMEM;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  const char *fail = NULL;
  if (!t || !t->insecure) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (t && t->ca_file) {
      if (SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL) != 1)
        fail = "cannot load the CA file";
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      fail = "cannot load the system's CAs";
    }
  }
  if (!fail && t && t->cert_file &&
      SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1)
    fail = "cannot load the client certificate";
  if (!fail && t && (t->key_file || t->cert_file) &&
      SSL_CTX_use_PrivateKey_file(ctx, t->key_file ? t->key_file : t->cert_file,
                                  SSL_FILETYPE_PEM) != 1)
    fail = "cannot load the client key";
  if (fail) {
    tls_why(c, why, n, fail);
    SSL_CTX_free(ctx);
    return PRESENCE_ESTORE;
  }
  c->ctx = ctx;
  return 0;
}

static void tls_step(presence__rconn_t *c) {
  int r = SSL_do_handshake(c->ssl);
  if (tls_out(c, false)) {
    lose(c, PRESENCE_ESTORE, "TLS: cannot write");
    return;
  }
  if (r == 1) {
    hello(c);
    return;
  }
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) return;
  char why[256];
  tls_why(c, why, sizeof why, "TLS handshake failed");
  lose(c, PRESENCE_ESTORE, why);
}

static void tls_begin(presence__rconn_t *c) {
  char why[256];
  if (tls_ctx(c, why, sizeof why)) {
    lose(c, PRESENCE_ESTORE, why);
    return;
  }
  const presence_redis_tls_t *t = c->cfg.tls;
  c->ssl = SSL_new(c->ctx);
  c->rbio = BIO_new(BIO_s_mem());
  c->wbio = BIO_new(BIO_s_mem());
  if (!c->ssl || !c->rbio || !c->wbio) {
    if (c->ssl) SSL_free(c->ssl);
    BIO_free(c->rbio);
    BIO_free(c->wbio);
    c->ssl = NULL;
    c->rbio = c->wbio = NULL;
    lose(c, PRESENCE_ENOMEM, "TLS: out of memory");
    return;
  }
  SSL_set_bio(c->ssl, c->rbio, c->wbio);
  SSL_set_connect_state(c->ssl);
  const char *name = t && t->server_name ? t->server_name : tgt_host(c);
  unsigned char ip[16];
  bool is_ip = uv_inet_pton(AF_INET, name, ip) == 0 ||
               uv_inet_pton(AF_INET6, name, ip) == 0;
  if (!is_ip) SSL_set_tlsext_host_name(c->ssl, name);
  if (!t || !t->insecure) {
    /* The certificate must name what we asked for, not just chain to a
     * trusted CA. */
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    if (is_ip)
      X509_VERIFY_PARAM_set1_ip_asc(vp, name);
    else
      SSL_set1_host(c->ssl, name);
  }
  c->state = S_TLS;
  tls_step(c);
}

/* ---- reading ------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  io_t *io = h->data;
  presence__rconn_t *c = io->c;
  buf->base = NULL;
  buf->len = 0;
  if (!c) return;
  if (c->ssl) {
    if (!c->tls_in) c->tls_in = presence__malloc(c->a, READ_CHUNK);
    if (c->tls_in) *buf = uv_buf_init(c->tls_in, READ_CHUNK);
    return;
  }
  /* Plain: straight into the reader's buffer, no copy. */
  char *p;
  size_t n;
  if (!presence__resp_space(&c->rd, READ_CHUNK, &p, &n))
    *buf = uv_buf_init(p, n > 1u << 30 ? 1u << 30 : (unsigned)n);
}

/* Match every complete reply in the reader to the oldest command. */
static void deliver(presence__rconn_t *c) {
  unsigned gen = c->gen;
  enter(c);
  while (!c->freed && c->gen == gen) {
    redisReply *rep;
    size_t from = c->rd.pos, had = c->rd.len;
    int rc = presence__resp_next(&c->rd, &rep);
    if (rc == 0) break;
    if (rc > 0) {
      /* The reader rewinds to 0 once it consumed all it had; the bytes
       * stay where they were until the next read. */
      c->raw = c->rd.buf + from;
      c->raw_len = (c->rd.pos || c->rd.len ? c->rd.pos : had) - from;
    }
    if (rc < 0) {
      char why[160];
      snprintf(why, sizeof why, "bad reply: %s",
               rc == PRESENCE_ENOMEM ? "out of memory" : c->rd.err);
      c->m.protocol_errors++;
      lose(c, PRESENCE_ESTORE, why);
      break;
    }
    if (!c->head && c->cfg.on_push && c->state == S_UP) {
      /* A message on a subscribed connection. */
      c->m.replies++;
      c->progress_ms = now_ms(c);
      c->cfg.on_push(c->cfg.push_ud, rep);
      presence__resp_free(c->a, rep);
      continue;
    }
    pend_t *p = pend_pop(c);
    if (!p) {
      presence__resp_free(c->a, rep);
      c->m.protocol_errors++;
      lose(c, PRESENCE_ESTORE, "a reply to no command");
      break;
    }
    c->m.replies++;
    c->progress_ms = now_ms(c);
    if (rep->type == REDIS_REPLY_ERROR) c->m.errors++;
    presence__rconn_cb cb = p->cb;
    void *ud = p->ud;
    pend_recycle(c, p);
    /* The primary was demoted under us (a failover it survived): the
     * command fails as it is, and the sentinels are asked again. */
    bool demoted = c->sphase == SP_DATA && rep->type == REDIS_REPLY_ERROR &&
                   !strncmp(rep->str, "READONLY", 8);
    cb(ud, 0, rep);
    presence__resp_free(c->a, rep);
    if (demoted && !c->freed && c->gen == gen)
      lose(c, PRESENCE_ESTORE,
           "READONLY: it is a replica now; asking the sentinels again");
  }
  if (!leave(c)) {
    c->raw = NULL;
    c->raw_len = 0;
    if (c->state == S_UP) arm(c);
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  io_t *io = s->data;
  presence__rconn_t *c = io->c;
  if (!c || nread == 0) return;
  if (nread < 0) {
    char why[96];
    snprintf(why, sizeof why, "%s",
             nread == UV_EOF ? "closed by the server"
             : nread == UV_ENOBUFS ? "out of memory"
                                   : uv_strerror((int)nread));
    lose(c, PRESENCE_ESTORE, why);
    return;
  }
  if (!c->ssl) {
    presence__resp_commit(&c->rd, (size_t)nread);
    c->m.bytes_in += (uint64_t)nread;
    deliver(c);
    return;
  }
  BIO_write(c->rbio, buf->base, (int)nread);
  if (c->state == S_TLS) {
    unsigned gen = c->gen;
    tls_step(c);
    if (c->gen != gen || c->state < S_HELLO) return;
  }
  for (;;) {
    char *p;
    size_t n;
    if (presence__resp_space(&c->rd, 16384, &p, &n)) {
      lose(c, PRESENCE_ENOMEM, "out of memory");
      return;
    }
    int r = SSL_read(c->ssl, p, n > 1u << 30 ? 1 << 30 : (int)n);
    if (r > 0) {
      presence__resp_commit(&c->rd, (size_t)r);
      c->m.bytes_in += (uint64_t)r;
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) break;
    char why[256];
    if (e == SSL_ERROR_ZERO_RETURN)
      snprintf(why, sizeof why, "closed by the server");
    else
      tls_why(c, why, sizeof why, "TLS");
    lose(c, PRESENCE_ESTORE, why);
    return;
  }
  if (tls_out(c, false)) {
    lose(c, PRESENCE_ESTORE, "TLS: cannot write");
    return;
  }
  deliver(c);
}

/* ---- writing ------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  io_t *io = req->handle->data;
  presence__rconn_t *c = io->c;
  bool is_flush = w->is_flush;
  if (c && is_flush && !c->spare_buf && !c->ssl) {
    c->spare_buf = w->buf;
    c->spare_cap = w->cap;
  } else {
    free(w->buf);
  }
  free(w);
  if (!c) return;
  if (is_flush) c->writing = false;
  if (status < 0) {
    lose(c, PRESENCE_ESTORE, uv_strerror(status));
    return;
  }
  flush(c);
}

/* One write at a time for the commands: those sent while it is in flight
 * gather in ob and go in the next, so a burst of commands costs a few
 * writes (and TLS records), not one each. */
static void flush(presence__rconn_t *c) {
  if (c->writing || !c->ob_len || !c->io || c->state < S_HELLO ||
      c->state > S_UP)
    return;
  if (c->ssl) {
    int r = SSL_write(c->ssl, c->ob, (int)c->ob_len);
    c->ob_len = 0;
    if (r <= 0 || tls_out(c, true)) lose(c, PRESENCE_ESTORE, "TLS: cannot write");
    return;
  }
  wreq_t *w = malloc(sizeof *w);
  if (!w) {
    lose(c, PRESENCE_ENOMEM, "out of memory");
    return;
  }
  w->buf = c->ob;
  w->cap = c->ob_cap;
  w->is_flush = true;
  uv_buf_t b = uv_buf_init(c->ob, (unsigned)c->ob_len);
  c->ob = c->spare_buf;
  c->ob_cap = c->spare_cap;
  c->spare_buf = NULL;
  c->spare_cap = 0;
  c->ob_len = 0;
  int rc = uv_write(&w->req, &c->io->h.stream, &b, 1, on_write);
  if (rc) {
    free(w->buf);
    free(w);
    lose(c, PRESENCE_ESTORE, uv_strerror(rc));
    return;
  }
  c->writing = true;
}

/* A command whose bytes were just appended to ob (len of them): its
 * callback joins the FIFO. */
static int pend_add(presence__rconn_t *c, size_t len, uint32_t timeout_ms,
                    presence__rconn_cb cb, void *ud) {
  pend_t *p = c->spare_pends;
  if (p)
    c->spare_pends = p->next;
  else if (!(p = presence__malloc(c->a, sizeof *p)))
    return PRESENCE_ENOMEM;
  p->next = NULL;
  p->cb = cb;
  p->ud = ud;
  p->sent_ms = now_ms(c);
  p->timeout_ms = timeout_ms ? timeout_ms : c->cfg.command_timeout_ms;
  if (c->tail)
    c->tail->next = p;
  else
    c->head = p;
  c->tail = p;
  c->m.pending++;
  c->m.commands++;
  c->m.bytes_out += len;
  return 0;
}

static int queue(presence__rconn_t *c, const char *resp, size_t len,
                 uint32_t timeout_ms, presence__rconn_cb cb, void *ud) {
  if (c->ob_cap - c->ob_len < len) {
    size_t ncap = c->ob_cap ? c->ob_cap * 2 : 4096;
    while (ncap - c->ob_len < len)
      ncap *= 2;
    char *nb = realloc(c->ob, ncap);
    if (!nb) return PRESENCE_ENOMEM;
    c->ob = nb;
    c->ob_cap = ncap;
  }
  memcpy(c->ob + c->ob_len, resp, len);
  c->ob_len += len;
  int rc = pend_add(c, len, timeout_ms, cb, ud);
  if (rc) c->ob_len -= len;
  return rc;
}

int presence__rconn_send(presence__rconn_t *c, const char *resp, size_t len,
                         uint32_t timeout_ms, presence__rconn_cb cb,
                         void *ud) {
  if (c->state != S_UP) return PRESENCE_ESTORE;
  int rc = queue(c, resp, len, timeout_ms, cb, ud);
  if (rc) return rc;
  flush(c);
  arm(c);
  return 0;
}

int presence__rconn_command(presence__rconn_t *c, int argc,
                            const char *const *argv, const size_t *lens,
                            uint32_t timeout_ms, presence__rconn_cb cb,
                            void *ud) {
  if (c->state != S_UP) return PRESENCE_ESTORE;
  /* Formatted straight into the output buffer. */
  size_t before = c->ob_len;
  int rc = presence__resp_append(presence__default_allocator(), &c->ob,
                                 &c->ob_len, &c->ob_cap, argc, argv, lens);
  if (!rc) rc = pend_add(c, c->ob_len - before, timeout_ms, cb, ud);
  if (rc) {
    c->ob_len = before;
    return rc;
  }
  flush(c);
  arm(c);
  return 0;
}

/* ASKING answers +OK. Anything else (an error: a node that is not in
 * cluster mode, an ACL without the command) means the command behind it
 * runs without it and is answered ASK or MOVED again: the caller falls
 * back to its source. Logged once per connection attempt is enough. */
static void on_asking(void *ud, int code, redisReply *rep) {
  presence__rconn_t *c = ud;
  if (code || !rep || rep->type != REDIS_REPLY_ERROR || c->freed) return;
  logf_(c, PRESENCE_LOG_WARN, "ASKING refused: %.120s", rep->str);
}

int presence__rconn_send_asking(presence__rconn_t *c, const char *resp,
                                size_t len, uint32_t timeout_ms,
                                presence__rconn_cb cb, void *ud) {
  static const char asking[] = "*1\r\n$6\r\nASKING\r\n";
  if (c->state != S_UP) return PRESENCE_ESTORE;
  /* Room and a pend for both first, so that the second cannot fail after
   * the first was queued (a lone ASKING would lend its flag to whatever
   * command came next). */
  size_t need = sizeof asking - 1 + len;
  if (c->ob_cap - c->ob_len < need) {
    size_t ncap = c->ob_cap ? c->ob_cap * 2 : 4096;
    while (ncap - c->ob_len < need) ncap *= 2;
    char *nb = realloc(c->ob, ncap);
    if (!nb) return PRESENCE_ENOMEM;
    c->ob = nb;
    c->ob_cap = ncap;
  }
  for (int i = 0; i < 2; i++) {
    if (c->spare_pends && (i == 0 || c->spare_pends->next)) continue;
    pend_t *p = presence__malloc(c->a, sizeof *p);
    if (!p) return PRESENCE_ENOMEM;
    p->next = c->spare_pends;
    c->spare_pends = p;
  }
  if (queue(c, asking, sizeof asking - 1, timeout_ms, on_asking, c) ||
      queue(c, resp, len, timeout_ms, cb, ud))
    assert(!"reserved above");
  flush(c);
  arm(c);
  return 0;
}

int presence__redis_ask_target(const char *err, char *host, size_t cap,
                               int *port) {
  if (!err || strncmp(err, "ASK ", 4)) return PRESENCE_EINVAL;
  const char *hp = strchr(err + 4, ' ');
  const char *colon = hp ? strrchr(hp, ':') : NULL;
  if (!colon) return PRESENCE_EINVAL;
  hp++;
  char *end;
  long p = strtol(colon + 1, &end, 10);
  size_t hl = (size_t)(colon - hp);
  if (p <= 0 || p > 65535 || (*end && *end != ' ') || hl >= cap)
    return PRESENCE_EINVAL;
  memcpy(host, hp, hl);
  host[hl] = '\0';
  *port = (int)p;
  return 0;
}

/* ---- connecting ---------------------------------------------------------- */

static void on_connected(uv_connect_t *req, int status) {
  io_t *io = req->handle->data;
  presence__rconn_t *c = io->c;
  if (!c) return;
  if (status < 0) {
    lose(c, PRESENCE_ESTORE, uv_strerror(status));
    return;
  }
  if (!c->cfg.url->path) uv_tcp_nodelay(&io->h.tcp, 1);
  int rc = uv_read_start(&io->h.stream, on_alloc, on_read);
  if (rc) {
    lose(c, PRESENCE_ESTORE, uv_strerror(rc));
    return;
  }
  if (c->cfg.url->tls)
    tls_begin(c);
  else
    hello(c);
}

static io_t *io_new(presence__rconn_t *c) {
  io_t *io = calloc(1, sizeof *io);
  if (io) io->c = c;
  return io;
}

static void connect_addr(presence__rconn_t *c, const struct sockaddr *sa) {
  io_t *io = io_new(c);
  if (!io) {
    lose(c, PRESENCE_ENOMEM, "out of memory");
    return;
  }
  uv_tcp_init(c->cfg.loop, &io->h.tcp);
  io->h.handle.data = io;
  c->io = io;
  c->state = S_CONNECTING;
  int rc = uv_tcp_connect(&io->connect, &io->h.tcp, sa, on_connected);
  if (rc) lose(c, PRESENCE_ESTORE, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  gai_t *g = (gai_t *)req;
  presence__rconn_t *c = g->c;
  if (c) c->gai = NULL;
  free(g);
  if (!c) {
    uv_freeaddrinfo(res);
    return;
  }
  if (status < 0 || !res) {
    uv_freeaddrinfo(res);
    lose(c, PRESENCE_ESTORE, uv_strerror(status < 0 ? status : UV_EAI_NONAME));
    return;
  }
  connect_addr(c, res->ai_addr);
  uv_freeaddrinfo(res);
}

static void start(presence__rconn_t *c) {
  /* A Redis Cluster owner may point the URL at another node first (a
   * MOVED it followed, or the next seed after failures). */
  if (c->cfg.before_connect) {
    c->cfg.before_connect(c->cfg.ud, c->backoff_ms != 0);
    set_where(c);
  }
  c->gen++;
  c->strike = false;
  c->connect_started = now_ms(c);
  c->attempt_bytes_in = c->m.bytes_in;
  c->armed_due = 0;
  uv_timer_stop(&c->tm->deadline);
  const presence__redis_url_t *u = c->cfg.url;
  if (u->n_sentinels) {
    /* Every attempt asks a sentinel first, but the one right after an
     * answer: so a lost connection, a refused one or a READONLY finds the
     * primary of now. */
    c->sphase = c->cfg.sentinel_watch ? SP_WATCH
                : c->s_found         ? SP_DATA
                                     : SP_ASK;
    c->s_found = false;
    set_where(c);
  }
  if (u->path) {
    io_t *io = io_new(c);
    if (!io) {
      c->state = S_CONNECTING;
      lose(c, PRESENCE_ENOMEM, "out of memory");
      return;
    }
    uv_pipe_init(c->cfg.loop, &io->h.pipe, 0);
    io->h.handle.data = io;
    c->io = io;
    c->state = S_CONNECTING;
    uv_pipe_connect(&io->connect, &io->h.pipe, u->path, on_connected);
    arm(c);
    return;
  }
  struct sockaddr_storage ss;
  const char *host = tgt_host(c);
  int port_n = tgt_port(c);
  if (!uv_ip4_addr(host, port_n, (struct sockaddr_in *)&ss) ||
      !uv_ip6_addr(host, port_n, (struct sockaddr_in6 *)&ss)) {
    connect_addr(c, (struct sockaddr *)&ss);
    if (c->state == S_CONNECTING) arm(c);
    return;
  }
  gai_t *g = malloc(sizeof *g);
  if (!g) {
    c->state = S_RESOLVING;
    lose(c, PRESENCE_ENOMEM, "out of memory");
    return;
  }
  g->c = c;
  char port[8];
  snprintf(port, sizeof port, "%d", port_n);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  c->state = S_RESOLVING;
  c->gai = g;
  int rc = uv_getaddrinfo(c->cfg.loop, &g->req, on_resolved, host, port,
                          &hints);
  if (rc) {
    c->gai = NULL;
    free(g);
    lose(c, PRESENCE_ESTORE, uv_strerror(rc));
    return;
  }
  arm(c);
}

/* The connection failed or broke: abandon the stream, fail what waited,
 * tell the owner if it was up, and retry after the backoff. */
/* The likely cause of an attempt that failed before Redis said a word,
 * when it is a TLS mismatch between the URL and the port: the transport's
 * own words (a timeout, a reset) do not tell an operator that. TLS to a
 * plain port waits for a handshake answer that never comes (Redis reads
 * the ClientHello as the start of an inline command); a plain connection to
 * a TLS port is reset at its first command; a Redis with tls-auth-clients
 * resets a client without a certificate once the handshake is done (TLS
 * 1.3 checks the client's certificate after the client's side of it). */
static const char *connect_hint(const presence__rconn_t *c, int st, int code) {
  if (c->m.bytes_in != c->attempt_bytes_in) return "";
  bool tls = c->cfg.url->tls;
  if (st == S_TLS && code == PRESENCE_ETIMEDOUT)
    return " (no answer to the TLS handshake: a plain Redis port? TLS needs "
           "Redis's tls-port; redis:// for a plain one)";
  if (st == S_HELLO && code != PRESENCE_ETIMEDOUT && !tls)
    return " (a TLS port? then rediss://)";
  if (st == S_HELLO && code != PRESENCE_ETIMEDOUT && tls &&
      !(c->cfg.tls && c->cfg.tls->cert_file))
    return " (does Redis ask for a client certificate, tls-auth-clients? "
           "then --redis-tls-cert and --redis-tls-key)";
  return "";
}

static void lose(presence__rconn_t *c, int code, const char *why) {
  if (c->state == S_FREED || c->state == S_WAIT || c->state == S_IDLE) return;
  int st = c->state;
  bool was_up = c->state == S_UP;
  c->state = S_WAIT;
  c->gen++;
  /* A sentinel that failed or knew nothing: the next one, next time. */
  if ((c->sphase == SP_ASK || c->sphase == SP_WATCH) && c->cfg.url->n_sentinels)
    c->s_next = (c->s_next + 1) % c->cfg.url->n_sentinels;
  io_abandon(c);
  c->armed_due = 0;
  uv_timer_stop(&c->tm->deadline);
  uint32_t d = c->backoff_ms ? c->backoff_ms : BACKOFF_MIN_MS;
  bool first = !c->backoff_ms;
  c->backoff_ms =
      d * 2 > c->cfg.reconnect_max_ms ? c->cfg.reconnect_max_ms : d * 2;
  if (c->backoff_ms < BACKOFF_MIN_MS) c->backoff_ms = BACKOFF_MIN_MS;
  uv_timer_start(&c->tm->retry, on_retry, d, 0);
  if (was_up) {
    logf_(c, PRESENCE_LOG_WARN, "connection to %s lost: %s", c->where, why);
  } else {
    c->m.connect_failures++;
    /* A Redis that stays away would log every retry: the first of a run
     * is a warning, the rest debug. */
    logf_(c, first ? PRESENCE_LOG_WARN : PRESENCE_LOG_DEBUG,
          "cannot connect to %s: %s%s", c->where, why,
          connect_hint(c, st, code));
  }
  enter(c);
  fail_all(c, code);
  if (!c->freed && was_up && c->cfg.on_down && c->state == S_WAIT)
    c->cfg.on_down(c->cfg.ud, code);
  leave(c);
}

/* ---- the public side ----------------------------------------------------- */

int presence__rconn_new(const presence__rconn_config_t *cfg,
                        presence__rconn_t **out) {
  *out = NULL;
  if (!cfg || !cfg->loop || !cfg->url) return PRESENCE_EINVAL;
  const presence_allocator_t *a =
      cfg->alloc ? cfg->alloc : presence__default_allocator();
  presence__rconn_t *c = presence__malloc(a, sizeof *c);
  timers_t *tm = malloc(sizeof *tm);
  if (!c || !tm) {
    presence__free(a, c);
    free(tm);
    return PRESENCE_ENOMEM;
  }
  memset(c, 0, sizeof *c);
  c->cfg = *cfg;
  c->a = a;
  if (!c->cfg.name) c->cfg.name = "redis";
  if (!c->cfg.command_timeout_ms) c->cfg.command_timeout_ms = 2000;
  if (!c->cfg.reconnect_max_ms) c->cfg.reconnect_max_ms = 2000;
  if (!c->cfg.max_reply_bytes) c->cfg.max_reply_bytes = 64u << 20;
  if (!c->cfg.max_reply_elements) c->cfg.max_reply_elements = 1u << 20;
  presence__resp_init(&c->rd, a, c->cfg.max_reply_bytes,
                      c->cfg.max_reply_elements);
  if (cfg->url->n_sentinels && !cfg->url->master) {
    presence__free(a, c);
    free(tm);
    return PRESENCE_EINVAL;
  }
  c->sphase = cfg->url->n_sentinels
                  ? (cfg->sentinel_watch ? SP_WATCH : SP_ASK)
                  : SP_NONE;
  set_where(c);
  memset(tm, 0, sizeof *tm);
  tm->c = c;
  uv_timer_init(cfg->loop, &tm->deadline);
  uv_timer_init(cfg->loop, &tm->retry);
  tm->deadline.data = tm->retry.data = tm;
  tm->open = 2;
  c->tm = tm;
  *out = c;
  return 0;
}

/* +switch-master <name> <old ip> <old port> <new ip> <new port>, from the
 * watch: a connection to another node than the new primary is dropped, so
 * that the next attempt asks the sentinels (who now name the new one). */
static void on_switch(void *ud, redisReply *rep) {
  presence__rconn_t *c = ud;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
      rep->element[2]->type != REDIS_REPLY_STRING)
    return;
  char name[128], oldh[64], newh[64];
  int oldp, newp;
  if (sscanf(rep->element[2]->str, "%127s %63s %d %63s %d", name, oldh, &oldp,
             newh, &newp) != 5 ||
      strcmp(name, c->cfg.url->master))
    return;
  logf_(c, PRESENCE_LOG_WARN, "the sentinels moved the primary of '%s' to %s:%d",
        name, newh, newp);
  if (c->state != S_UP && c->state != S_HELLO && c->state != S_TLS &&
      c->state != S_CONNECTING)
    return;
  if (c->sphase == SP_DATA && c->p_host && !strcmp(c->p_host, newh) &&
      c->p_port == newp)
    return;
  enter(c);
  lose(c, PRESENCE_ESTORE, "failover: the primary moved");
  leave(c);
}

/* A Redis, or a proxy in front of it, that closes a connection as the
 * store writes to it (a restart; maxclients reached; a proxy whose Redis is
 * down accepts, then closes) fails the write with EPIPE, and also sends
 * the process SIGPIPE, which by default ends it: an application embedding
 * the store died of it, where the store reconnects. libuv writes with
 * write(2), which has no per-call way out (send's MSG_NOSIGNAL), so the
 * first connection started ignores SIGPIPE when its disposition is the
 * default, and says so; a host's own handler, or SIG_IGN (presenced's,
 * src/server/main.c), is left as it is. */
static void sigpipe_ignore(presence__rconn_t *c) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) != 0 || (sa.sa_flags & SA_SIGINFO) ||
      sa.sa_handler != SIG_DFL)
    return;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGPIPE, &sa, NULL) == 0)
    logf_(c, PRESENCE_LOG_INFO,
          "SIGPIPE is ignored from now on (it was the default, which ends "
          "the process when Redis closes a connection the store writes to)");
}

void presence__rconn_start(presence__rconn_t *c) {
  if (c->state != S_IDLE) return;
  sigpipe_ignore(c);
  if (c->cfg.url->n_sentinels && !c->cfg.sentinel_watch && !c->watch) {
    /* A failover without a broken connection (the old primary demoted,
     * clients left connected) is learnt from the sentinels' messages. */
    presence__rconn_config_t w = c->cfg;
    snprintf(c->watch_name, sizeof c->watch_name, "%s (sentinel watch)",
             c->cfg.name);
    w.name = c->watch_name;
    w.sentinel_watch = true;
    w.on_up = NULL;
    w.on_down = NULL;
    w.on_push = on_switch;
    w.push_ud = c;
    if (presence__rconn_new(&w, &c->watch) == 0) {
      /* Spread the watches over the sentinels. */
      c->watch->s_next = (size_t)((uintptr_t)c >> 6) % c->cfg.url->n_sentinels;
      c->watch->sphase = SP_WATCH;
      set_where(c->watch);
      presence__rconn_start(c->watch);
    }
  }
  start(c);
}

bool presence__rconn_up(const presence__rconn_t *c) {
  return c && c->state == S_UP;
}

void presence__rconn_drop(presence__rconn_t *c, int code) {
  lose(c, code, code == PRESENCE_ETIMEDOUT ? "no answer in time"
                                           : "dropped after an unusable reply");
}

int presence__rconn_raw(const presence__rconn_t *c, const char **p,
                       size_t *n) {
  *p = c->raw;
  *n = c->raw_len;
  return c->raw ? 0 : PRESENCE_EINVAL;
}

void presence__rconn_metrics(const presence__rconn_t *c,
                             presence_redis_conn_metrics_t *out) {
  *out = c->m;
  out->up = c->state == S_UP;
}

static void really_free(presence__rconn_t *c) {
  assert(!c->head); /* failed, every one, before the memory goes */
  pend_t *p;
  while ((p = c->spare_pends)) {
    c->spare_pends = p->next;
    presence__free(c->a, p);
  }
  presence__resp_fini(&c->rd);
  free(c->ob);
  free(c->spare_buf);
  presence__free(c->a, c->tls_in);
  presence__free(c->a, c->p_host);
  if (c->ctx) SSL_CTX_free(c->ctx);
  presence__free(c->a, c);
}

void presence__rconn_free(presence__rconn_t *c) {
  if (!c || c->freed) return;
  c->freed = true;
  c->state = S_FREED;
  presence__rconn_free(c->watch);
  c->watch = NULL;
  io_abandon(c);
  c->tm->c = NULL;
  uv_close((uv_handle_t *)&c->tm->deadline, on_timer_closed);
  uv_close((uv_handle_t *)&c->tm->retry, on_timer_closed);
  c->tm = NULL;
  enter(c);
  fail_all(c, PRESENCE_ESHUTDOWN);
  leave(c);
}
