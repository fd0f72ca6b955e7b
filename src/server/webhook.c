/* SPDX-License-Identifier: MIT */
/*
 * Webhooks (see webhook.h and docs/webhooks.md).
 *
 * An endpoint is a small state machine around one cursor:
 *
 *   idle --event--> waiting (batch timer) --> sending --2xx--> idle/next
 *                                                |
 *                                              fail --> backoff (timer) -->
 * sending
 *
 * The batch being sent is kept (body and the log range it covers) until it
 * is acknowledged, so a retry sends the same events even if the log has
 * moved on meanwhile; only after it does the endpoint read the log again,
 * and a read that finds its cursor evicted turns into a gap notice. Nothing
 * else is queued per endpoint: memory is one body per endpoint.
 *
 * libcurl's multi interface runs on the daemon's loop: curl tells us which
 * sockets to watch (uv_poll) and when to call it back (one uv_timer), and we
 * hand readiness back with curl_multi_socket_action. No curl call blocks.
 *
 * With the Redis store every instance sees the same log, so each endpoint
 * is leased (see "Ownership" below): only the instance holding its lease
 * delivers, and the cursor lives in Redis, moved only by the lease holder.
 */
#include "server/webhook.h"

#include "server/server.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef PRESENCED_HAVE_REDIS
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#endif

/* Non-matching events scanned per batch at most, so a narrow filter over a
 * long log cannot hold the loop: the scan resumes on the next loop turn. */
#define WH_SCAN_MAX 4096
#define WH_READ_CHUNK 256
#define WH_SECRET_MAX 4096

/* ------------------------------------------------------------------------ */
/* Specs                                                                    */
/* ------------------------------------------------------------------------ */

static char *dupn(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

void wh_spec_free(wh_spec_t *spec) {
  if (spec->secret) OPENSSL_cleanse(spec->secret, spec->secret_len);
  free(spec->url);
  free(spec->secret);
  free(spec->secret_file);
  free(spec->name);
  memset(spec, 0, sizeof *spec);
}

static int parse_events(const char *v, size_t n, uint32_t *out) {
  uint32_t mask = 0;
  size_t i = 0;
  while (i <= n) {
    size_t j = i;
    while (j < n && v[j] != '|')
      j++;
    size_t l = j - i;
    const char *w = v + i;
    if (l == 1 && w[0] == '*')
      mask |= (1u << PRESENCE_EV_COUNT_) - 1;
    else if (l == 9 && !memcmp(w, "session.*", 9))
      mask |= (1u << PRESENCE_EV_SESSION_CONNECTED) |
              (1u << PRESENCE_EV_SESSION_DISCONNECTED) |
              (1u << PRESENCE_EV_SESSION_STATUS);
    else if (l == 6 && !memcmp(w, "user.*", 6))
      mask |= (1u << PRESENCE_EV_USER_ONLINE) | (1u << PRESENCE_EV_USER_IDLE) |
              (1u << PRESENCE_EV_USER_OFFLINE);
    else {
      int t;
      for (t = 0; t < PRESENCE_EV_COUNT_; t++) {
        const char *name = presence_event_type_name((presence_event_type_t)t);
        if (strlen(name) == l && !memcmp(name, w, l)) break;
      }
      if (t == PRESENCE_EV_COUNT_) return -1;
      mask |= 1u << t;
    }
    i = j + 1;
  }
  *out = mask;
  return mask ? 0 : -1;
}

/* The URL as a metrics label: no credentials, no query (either may hold a
 * secret). */
static char *default_name(const char *url) {
  const char *host = strstr(url, "://");
  host = host ? host + 3 : url;
  size_t end = strcspn(host, "/?#");
  const char *at = memchr(host, '@', end);
  size_t path = strcspn(host, "?#");
  size_t scheme = (size_t)(host - url);
  const char *h = at ? at + 1 : host;
  size_t hl = (size_t)(host + path - h);
  char *d = malloc(scheme + hl + 1);
  if (!d) return NULL;
  memcpy(d, url, scheme);
  memcpy(d + scheme, h, hl);
  d[scheme + hl] = '\0';
  return d;
}

static int read_secret_file(wh_spec_t *o, char *err, size_t errcap) {
  FILE *f = fopen(o->secret_file, "rb");
  if (!f) {
    snprintf(err, errcap, "cannot read secret-file %s: %s", o->secret_file,
             strerror(errno));
    return -1;
  }
  char *b = malloc(WH_SECRET_MAX + 1);
  size_t n = b ? fread(b, 1, WH_SECRET_MAX + 1, f) : 0;
  fclose(f);
  if (!b) {
    snprintf(err, errcap, "out of memory");
    return -1;
  }
  /* Files written by editors and `echo` end with a newline that is not
   * part of the secret. */
  if (n > 0 && b[n - 1] == '\n') n--;
  if (n > 0 && b[n - 1] == '\r') n--;
  if (n == 0 || n > WH_SECRET_MAX) {
    OPENSSL_cleanse(b, WH_SECRET_MAX + 1);
    free(b);
    snprintf(err, errcap, "secret-file %s: %s", o->secret_file,
             n ? "longer than 4096 bytes" : "empty");
    return -1;
  }
  b[n] = '\0';
  o->secret = b;
  o->secret_len = n;
  return 0;
}

int wh_spec_parse(const char *spec, int read_secret, wh_spec_t *out, char *err,
                  size_t errcap) {
  memset(out, 0, sizeof *out);
  out->events = (1u << PRESENCE_EV_COUNT_) - 1;
  const char *p = spec;
  int have_events = 0;
  while (*p) {
    size_t n = strcspn(p, ",");
    const char *eq = memchr(p, '=', n);
    if (!eq) {
      snprintf(err, errcap, "expected key=value, got '%.*s'", (int)n, p);
      goto fail;
    }
    size_t kl = (size_t)(eq - p), vl = n - kl - 1;
    const char *v = eq + 1;
    char **slot = NULL;
    if (kl == 3 && !memcmp(p, "url", 3))
      slot = &out->url;
    else if (kl == 6 && !memcmp(p, "secret", 6))
      slot = &out->secret;
    else if (kl == 11 && !memcmp(p, "secret-file", 11))
      slot = &out->secret_file;
    else if (kl == 4 && !memcmp(p, "name", 4))
      slot = &out->name;
    else if (kl == 6 && !memcmp(p, "events", 6)) {
      if (have_events || parse_events(v, vl, &out->events) != 0) {
        snprintf(err, errcap,
                 "events: expected event types joined by '|' (e.g. "
                 "user.online|user.offline, user.*, *), got '%.*s'",
                 (int)vl, v);
        goto fail;
      }
      have_events = 1;
    } else {
      snprintf(err, errcap,
               "unknown key '%.*s' (url, secret, secret-file, events, name)",
               (int)kl, p);
      goto fail;
    }
    if (slot) {
      if (*slot || vl == 0) {
        snprintf(err, errcap, "'%.*s' is %s", (int)kl, p,
                 vl ? "given twice" : "empty");
        goto fail;
      }
      for (size_t i = 0; i < vl; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) {
          snprintf(err, errcap, "'%.*s' holds a control character", (int)kl, p);
          goto fail;
        }
      if (!(*slot = dupn(v, vl))) {
        snprintf(err, errcap, "out of memory");
        goto fail;
      }
    }
    p += n;
    if (*p == ',') p++;
  }
  if (!out->url || (strncmp(out->url, "http://", 7) != 0 &&
                    strncmp(out->url, "https://", 8) != 0)) {
    snprintf(err, errcap, "url=http://... or url=https://... is required");
    goto fail;
  }
  if (strchr(out->url, ' ')) {
    snprintf(err, errcap, "url holds a space (percent-encode it)");
    goto fail;
  }
  if (!out->secret == !out->secret_file) {
    snprintf(err, errcap, "exactly one of secret= and secret-file= is needed");
    goto fail;
  }
  if (out->secret) out->secret_len = strlen(out->secret);
  if (!out->name && !(out->name = default_name(out->url))) {
    snprintf(err, errcap, "out of memory");
    goto fail;
  }
  if (read_secret && out->secret_file && read_secret_file(out, err, errcap))
    goto fail;
  return 0;
fail:
  wh_spec_free(out);
  return -1;
}

int wh_spec_check(const char *spec, char *err, size_t errcap) {
  wh_spec_t s;
  if (wh_spec_parse(spec, 0, &s, err, errcap) != 0) return -1;
  wh_spec_free(&s);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* State                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct webhooks webhooks_t;

typedef struct wh_poll {
  uv_poll_t poll;
  curl_socket_t fd;
  webhooks_t *w;
  struct wh_poll *prev, *next;
} wh_poll_t;

typedef struct endpoint {
  struct build *build; /* a batch being read from the log, or NULL */
  int reading;         /* build waits for an asynchronous read */
  /* Redis: the lease. Only an owner delivers, and only while the lease is
   * confirmed (lease_until, this host's monotonic clock, counted from when
   * the last successful claim or renewal was sent, so never later than
   * Redis's own expiry). gen changes with every change of ownership, so
   * answers meant for an earlier one are ignored. */
  int own;
  int claiming;  /* a claim or renewal is in flight */
  int acking;    /* a delivered batch waits for its cursor to be stored */
  int releasing; /* shutdown: the lease is being given back */
  int claim_err; /* an error was logged (once until the next success) */
  uint64_t token;
  int64_t lease_until;
  uint32_t gen;
  char *key; /* the endpoint's hash in Redis */
  webhooks_t *w;
  wh_spec_t spec;
  CURL *easy;
  struct curl_slist *headers;
  uv_timer_t timer; /* batching delay, then backoff */
  buf_t body;
  int have_batch; /* body holds a batch not yet acknowledged */
  int inflight;
  int done;        /* shutdown: nothing more will be sent */
  uint64_t cursor; /* every event up to it is acknowledged (or filtered) */
  uint64_t batch_first, batch_last; /* the log range the batch covers */
  size_t batch_events;
  int batch_gap;
  uint64_t gap_after, gap_oldest;
  uint32_t attempts; /* failed attempts of the current batch */
  int behind;
  uint64_t delivered, retries, failures, dropped, gaps, lost;
  char errbuf[CURL_ERROR_SIZE];
} endpoint_t;

struct webhooks {
  srv_t *s;
  CURLM *multi;
  uv_timer_t curl_timer;
  wh_poll_t *polls;
  endpoint_t *eps;
  size_t n;
  int sink; /* fanout_sink_add's id, -1 when not registered */
  int flushing;
  int aborted;
  int closed;
  buf_t events; /* the events array of the batch being built */
  int redis;    /* --store redis: endpoints are leased, see Ownership */
  /* The id of the cluster's log, sent as `instance`: with Redis the
   * sequence numbers are the cluster's, so the idempotency key must not
   * change with the instance that happens to deliver. */
  char log_id[40];
  char log_offer[40]; /* ours, if the cluster has none yet */
#ifdef PRESENCED_HAVE_REDIS
  redisAsyncContext *rc;
  int rc_up;
  uv_timer_t lease_timer;
  srv_redis_addr_t addr;
  uint32_t pending;    /* commands sent, not answered */
  int64_t progress_ms; /* last send or answer while pending */
#endif
};

/* What deliveries name as their `instance` (see log_id). */
static const char *log_instance(const webhooks_t *w) {
  return w->redis && w->log_id[0] ? w->log_id : w->s->instance_id;
}

static void acknowledge(endpoint_t *ep);
static void wr_ack(endpoint_t *ep);
static void wr_release(endpoint_t *ep);
static void wr_lose(endpoint_t *ep, const char *why);

/* Whether the endpoint may send now: always with the embedded store; with
 * Redis only under a confirmed lease. */
static int may_deliver(endpoint_t *ep) {
  webhooks_t *w = ep->w;
  if (!w->redis) return 1;
  if (!ep->own) return 0;
  if (srv_now_mono(w->s) >= ep->lease_until) {
    wr_lose(ep, "its lease could not be renewed in time");
    return 0;
  }
  return 1;
}

/* A batch is settled (delivered or dropped): move the cursor. With Redis
 * the cursor is stored first, through the lease holder's token. */
static void commit(endpoint_t *ep) {
  if (ep->w->redis)
    wr_ack(ep);
  else
    acknowledge(ep);
}

/* The endpoint has nothing more to do in this shutdown. */
static void ep_finished(endpoint_t *ep) {
  ep->done = 1;
  if (ep->w->redis && ep->own) wr_release(ep);
  srv_maybe_finish(ep->w->s);
}

/* The cursor the endpoint reads the log from next. */
static uint64_t read_pos(const endpoint_t *ep) {
  return ep->have_batch ? ep->batch_last : ep->cursor;
}

/* ------------------------------------------------------------------------ */
/* libcurl on libuv                                                         */
/* ------------------------------------------------------------------------ */

static void on_done(endpoint_t *ep, CURLcode res);

static void check_multi(webhooks_t *w) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(w->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    endpoint_t *ep = NULL;
    CURL *e = m->easy_handle;
    CURLcode res = m->data.result;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&ep);
    curl_multi_remove_handle(w->multi, e);
    ep->inflight = 0;
    on_done(ep, res);
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  wh_poll_t *wp = h->data;
  webhooks_t *w = wp->w;
  int flags = 0, running;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  curl_multi_socket_action(w->multi, wp->fd, flags, &running);
  check_multi(w);
}

static void on_poll_closed(uv_handle_t *h) {
  free(h->data);
}

static void poll_release(webhooks_t *w, wh_poll_t *wp) {
  if (wp->prev)
    wp->prev->next = wp->next;
  else
    w->polls = wp->next;
  if (wp->next) wp->next->prev = wp->prev;
  uv_poll_stop(&wp->poll);
  uv_close((uv_handle_t *)&wp->poll, on_poll_closed);
}

/* CURLMOPT_SOCKETFUNCTION: watch (or stop watching) one of curl's sockets. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                          void *socketp) {
  webhooks_t *w = userp;
  wh_poll_t *wp = socketp;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (wp) {
      curl_multi_assign(w->multi, fd, NULL);
      poll_release(w, wp);
    }
    return 0;
  }
  if (!wp) {
    if (w->closed) return -1;
    wp = calloc(1, sizeof *wp);
    if (!wp) return -1;
    if (uv_poll_init_socket(w->s->loop, &wp->poll, fd) != 0) {
      free(wp);
      return -1;
    }
    wp->poll.data = wp;
    wp->fd = fd;
    wp->w = w;
    wp->next = w->polls;
    if (w->polls) w->polls->prev = wp;
    w->polls = wp;
    curl_multi_assign(w->multi, fd, wp);
  }
  int ev = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev |= UV_WRITABLE;
  return uv_poll_start(&wp->poll, ev, on_poll) == 0 ? 0 : -1;
}

static void on_curl_timer(uv_timer_t *t) {
  webhooks_t *w = t->data;
  int running;
  curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi(w);
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be called back after timeout_ms
 * (-1: never). It must not be called from here, only from the loop. */
static int on_curl_timeout(CURLM *multi, long timeout_ms, void *userp) {
  webhooks_t *w = userp;
  (void)multi;
  if (w->closed) return 0;
  if (timeout_ms < 0)
    uv_timer_stop(&w->curl_timer);
  else
    uv_timer_start(&w->curl_timer, on_curl_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

static size_t discard_body(char *ptr, size_t size, size_t n, void *ud) {
  (void)ptr;
  (void)ud;
  return size * n;
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct build {
  endpoint_t *ep;
  uint64_t pos;   /* last seq looked at */
  size_t matched; /* events in the batch */
  size_t scanned;
  size_t got; /* events in the last read */
  int full;
  int end; /* a read found nothing more: the log ends here */
  int gap;
  uint64_t gap_after, gap_oldest;
  /* An asynchronous store (Redis) answers reads later: the build lives on
   * the endpoint meanwhile, with the events collected so far. */
  int pending;  /* a read is in flight */
  int in_call;  /* inside build_run's call to presence_log_read */
  uint32_t gen; /* the ownership it was started under (Redis) */
  buf_t events;
} build_t;

static void build_run(endpoint_t *ep);
static void pump_built(endpoint_t *ep, int r);

static void on_log(presence_t *p, int status, const presence_event_t *events,
                   size_t n, void *ud) {
  build_t *b = ud;
  endpoint_t *ep = b->ep;
  webhooks_t *w = ep->w;
  (void)p;
  b->pending = 0;
  if (status < 0 && status != PRESENCE_ECURSOR) n = 0;
  b->got = n;
  /* A short answer reached the end of the log: asking again would only
   * cost a round trip to Redis. */
  if (n < WH_READ_CHUNK) b->end = 1;
  if (!b->in_call) {
    /* A later answer: collect it, then carry on building from here, unless
     * the store is going away (its reads end with ESHUTDOWN). */
    b->in_call = 1;
    if (n) on_log(p, status, events, n, ud);
    b->in_call = 0;
    ep->reading = 0;
    if (status == PRESENCE_ESHUTDOWN || w->closed || w->aborted) {
      buf_free(&b->events);
      free(b);
      ep->build = NULL;
      return;
    }
    build_run(ep);
    return;
  }
  if (n == 0) return;
  if (status == PRESENCE_ECURSOR && !b->gap) {
    b->gap = 1;
    b->gap_after = b->pos;
    b->gap_oldest = events[0].seq;
  }
  for (size_t i = 0; i < n; i++) {
    if (b->matched == w->s->cfg.webhook_batch_max ||
        b->scanned == WH_SCAN_MAX) {
      b->full = 1;
      return;
    }
    b->pos = events[i].seq;
    b->scanned++;
    if (!(ep->spec.events & (1u << events[i].type))) continue;
    if (b->matched) buf_putc(&b->events, ',');
    json_event(&b->events, &events[i]);
    b->matched++;
  }
}

static void mark_behind(endpoint_t *ep, uint64_t lag) {
  srv_t *s = ep->w->s;
  if (ep->behind) return;
  ep->behind = 1;
  srv_log(s, PRESENCE_LOG_WARN,
          "webhook %s: fell behind the transition log (%llu events "
          "undelivered, the log keeps %u): a gap notice follows when it "
          "recovers",
          ep->spec.name, (unsigned long long)lag, s->cfg.log_capacity);
}

/* Read the log after the endpoint's cursor into a new batch. Returns 1 if
 * there is a batch to send, 0 if the endpoint is up to date. */
static int build_finish(endpoint_t *ep, build_t *bp) {
  webhooks_t *w = ep->w;
  srv_t *s = w->s;
  build_t b = *bp;
  if (b.pos == ep->cursor && !b.gap) return 0;
  if (b.gap) {
    mark_behind(ep, b.gap_oldest - b.gap_after - 1);
    ep->lost += b.gap_oldest - b.gap_after - 1;
  }
  if (b.matched == 0 && !b.gap) {
    /* Nothing this endpoint wants: move on without a request. */
    ep->cursor = b.pos;
    return -1;
  }
  buf_t *body = &ep->body;
  buf_reset(body);
  buf_puts(body, "{\"instance\":");
  buf_put_json_str(body, log_instance(w));
  ep->batch_first = b.gap ? b.gap_oldest : ep->cursor + 1;
  ep->batch_last = b.pos;
  buf_puts(body, ",\"first_seq\":");
  buf_put_u64(body, ep->batch_first);
  buf_puts(body, ",\"last_seq\":");
  buf_put_u64(body, ep->batch_last);
  if (b.gap) {
    buf_puts(body, ",\"gap\":{\"after\":");
    buf_put_u64(body, b.gap_after);
    buf_puts(body, ",\"oldest\":");
    buf_put_u64(body, b.gap_oldest);
    buf_puts(body, ",\"missed\":");
    buf_put_u64(body, b.gap_oldest - b.gap_after - 1);
    buf_putc(body, '}');
  }
  buf_puts(body, ",\"events\":[");
  buf_append(body, b.events.data, b.events.len);
  buf_puts(body, "]}");
  if (buf_failed(body) || buf_failed(&b.events)) {
    srv_log(s, PRESENCE_LOG_ERROR, "webhook %s: out of memory for a batch",
            ep->spec.name);
    buf_free(body);
    return 0;
  }
  ep->have_batch = 1;
  ep->batch_events = b.matched;
  ep->batch_gap = b.gap;
  ep->gap_after = b.gap_after;
  ep->gap_oldest = b.gap_oldest;
  ep->attempts = 0;
  return 1;
}

static int sign(const endpoint_t *ep, const char *ts, char hex[65]) {
  unsigned char mac[32];
  size_t maclen = 0;
  int ok = 0;
  EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
      OSSL_PARAM_construct_end()};
  if (ctx &&
      EVP_MAC_init(ctx, (const unsigned char *)ep->spec.secret,
                   ep->spec.secret_len, params) &&
      EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) &&
      EVP_MAC_update(ctx, (const unsigned char *)".", 1) &&
      EVP_MAC_update(ctx, (const unsigned char *)ep->body.data, ep->body.len) &&
      EVP_MAC_final(ctx, mac, &maclen, sizeof mac) && maclen == 32)
    ok = 1;
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(m);
  if (!ok) return -1;
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < 32; i++) {
    hex[2 * i] = digits[mac[i] >> 4];
    hex[2 * i + 1] = digits[mac[i] & 15];
  }
  hex[64] = '\0';
  return 0;
}

static int add_header(endpoint_t *ep, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int add_header(endpoint_t *ep, const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  struct curl_slist *l = curl_slist_append(ep->headers, line);
  if (!l) return -1;
  ep->headers = l;
  return 0;
}

static void retry_later(endpoint_t *ep, long retry_after_s);

/* POST the held batch. A fresh timestamp and signature per attempt: the
 * timestamp says when this request was made, for replay windows. */
static void send_batch(endpoint_t *ep) {
  webhooks_t *w = ep->w;
  srv_t *s = w->s;
  char ts[24], hex[65];
  snprintf(ts, sizeof ts, "%lld", (long long)srv_now_wall(s));
  curl_slist_free_all(ep->headers);
  ep->headers = NULL;
  if (sign(ep, ts, hex) != 0 ||
      add_header(ep, "Content-Type: application/json") ||
      add_header(ep, "User-Agent: presenced/%s", PRESENCE_VERSION_STRING) ||
      add_header(ep, "Presence-Instance: %s", log_instance(w)) ||
      add_header(ep, "Presence-Seq-First: %llu",
                 (unsigned long long)ep->batch_first) ||
      add_header(ep, "Presence-Seq-Last: %llu",
                 (unsigned long long)ep->batch_last) ||
      add_header(ep, "Presence-Attempt: %u", ep->attempts + 1) ||
      add_header(ep, "Presence-Timestamp: %s", ts) ||
      add_header(ep, "Presence-Signature: v1=%s", hex) ||
      /* No "Expect: 100-continue" round trip for large bodies. */
      add_header(ep, "Expect:")) {
    srv_log(s, PRESENCE_LOG_ERROR, "webhook %s: cannot build a request",
            ep->spec.name);
    retry_later(ep, 0);
    return;
  }
  CURL *e = ep->easy;
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, ep->headers);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, ep->body.data);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)ep->body.len);
  ep->errbuf[0] = '\0';
  if (curl_multi_add_handle(w->multi, e) != CURLM_OK) {
    srv_log(s, PRESENCE_LOG_ERROR, "webhook %s: cannot start a request",
            ep->spec.name);
    retry_later(ep, 0);
    return;
  }
  ep->inflight = 1;
  srv_log(s, PRESENCE_LOG_DEBUG,
          "webhook %s: POST events %llu to %llu, attempt %u", ep->spec.name,
          (unsigned long long)ep->batch_first,
          (unsigned long long)ep->batch_last, ep->attempts + 1);
}

static void on_timer(uv_timer_t *t);

/* Next step of an endpoint that is neither sending nor waiting. */
static void pump(endpoint_t *ep) {
  webhooks_t *w = ep->w;
  if (ep->inflight || ep->done || w->aborted || w->closed) return;
  if (uv_is_active((uv_handle_t *)&ep->timer)) return;
  if (ep->reading) return; /* the read's answer carries on */
  if (ep->acking) return;  /* so does the cursor's store */
  if (!may_deliver(ep)) return;
  if (!ep->have_batch) {
    build_run(ep);
    return;
  }
  send_batch(ep);
}

/* A build ended (r as build_finish returns): the endpoint's next step. */
static void pump_built(endpoint_t *ep, int r) {
  webhooks_t *w = ep->w;
  if (r < 0) {
    /* Only filtered-out events so far; continue on the next turn. */
    uv_timer_start(&ep->timer, on_timer, 0, 0);
    return;
  }
  if (r == 0) {
    if (w->flushing)
      ep_finished(ep);
    else if (presence_log_last_seq(w->s->p) > ep->cursor)
      /* Events announced while the log was being read, after the read:
       * their wake-up found the endpoint busy. */
      uv_timer_start(&ep->timer, on_timer, w->s->cfg.webhook_batch_ms, 0);
    return;
  }
  if (!may_deliver(ep)) return;
  send_batch(ep);
}

static void on_timer(uv_timer_t *t) {
  pump(t->data);
}

/* Read the log after the endpoint's cursor into a new batch, then go on
 * (pump_built), at once with the embedded store, from the last answer with
 * Redis. */
static void build_run(endpoint_t *ep) {
  webhooks_t *w = ep->w;
  srv_t *s = w->s;
  build_t *b = ep->build;
  if (b && (b->gen != ep->gen || !may_deliver(ep))) {
    /* Started under an ownership that has ended: its cursor may be stale. */
    buf_free(&b->events);
    free(b);
    ep->build = b = NULL;
    if (!may_deliver(ep)) return;
    uv_timer_start(&ep->timer, on_timer, 0, 0);
    return;
  }
  if (!b) {
    b = calloc(1, sizeof *b);
    if (!b) {
      srv_log(s, PRESENCE_LOG_ERROR, "webhook %s: out of memory",
              ep->spec.name);
      return;
    }
    b->ep = ep;
    b->gen = ep->gen;
    b->pos = ep->cursor;
    buf_init(&b->events);
    ep->build = b;
  }
  while (!b->full && !b->end) {
    b->got = 0;
    b->pending = 1;
    b->in_call = 1;
    int rc = presence_log_read(s->p, b->pos, WH_READ_CHUNK, on_log, b);
    b->in_call = 0;
    if (rc < 0) {
      b->pending = 0;
      if (rc != PRESENCE_ESTORE)
        srv_log(s, PRESENCE_LOG_ERROR, "webhook %s: cannot read the log: %s",
                ep->spec.name, presence_strerror(rc));
      break;
    }
    if (b->pending) {
      ep->reading = 1;
      return;
    }
    if (b->got == 0) break;
  }
  ep->build = NULL;
  int r = build_finish(ep, b);
  buf_free(&b->events);
  free(b);
  pump_built(ep, r);
}

static uint64_t backoff_ms(endpoint_t *ep) {
  const srv_config_t *cfg = &ep->w->s->cfg;
  uint64_t d = cfg->webhook_retry_min_ms;
  for (uint32_t i = 1; i < ep->attempts && d < cfg->webhook_retry_max_ms; i++)
    d *= 2;
  if (d > cfg->webhook_retry_max_ms) d = cfg->webhook_retry_max_ms;
  /* Equal jitter: half fixed, half random, so endpoints that failed
   * together (one receiver behind several) do not retry in lockstep. */
  uint32_t r = 0;
  ep->w->s->sys->random(ep->w->s->sys->ud, &r, sizeof r);
  return d / 2 + (d / 2 ? r % (d / 2 + 1) : 0);
}

static void retry_later(endpoint_t *ep, long retry_after_s) {
  webhooks_t *w = ep->w;
  ep->attempts++;
  ep->failures++;
  if (w->flushing) {
    /* At shutdown a failed endpoint gives up rather than hold the exit. */
    srv_log(w->s, PRESENCE_LOG_WARN,
            "webhook %s: shutting down with events after seq %llu "
            "undelivered",
            ep->spec.name, (unsigned long long)ep->cursor);
    ep_finished(ep);
    return;
  }
  ep->retries++;
  uint64_t d = backoff_ms(ep);
  uint64_t ra = retry_after_s > 0 ? (uint64_t)retry_after_s * 1000 : 0;
  if (ra > w->s->cfg.webhook_retry_max_ms) ra = w->s->cfg.webhook_retry_max_ms;
  if (ra > d) d = ra;
  srv_log(w->s, PRESENCE_LOG_DEBUG,
          "webhook %s: attempt %u failed, retry in %llu ms", ep->spec.name,
          ep->attempts, (unsigned long long)d);
  uv_timer_start(&ep->timer, on_timer, d, 0);
}

static void acknowledge(endpoint_t *ep) {
  webhooks_t *w = ep->w;
  ep->cursor = ep->batch_last;
  ep->have_batch = 0;
  buf_reset(&ep->body);
  buf_shrink(&ep->body, 1 << 16);
  if (ep->batch_gap) {
    ep->gaps++;
    ep->behind = 0;
    srv_log(w->s, PRESENCE_LOG_INFO,
            "webhook %s: caught up; gap notice delivered (events %llu to "
            "%llu were lost for it)",
            ep->spec.name, (unsigned long long)ep->gap_after + 1,
            (unsigned long long)ep->gap_oldest - 1);
  } else if (ep->behind && (presence_log_last_seq(w->s->p) <= ep->cursor ||
                            presence_log_last_seq(w->s->p) - ep->cursor <=
                                w->s->cfg.log_capacity)) {
    /* Marked behind while a batch was held, but the log kept everything
     * after it after all. */
    ep->behind = 0;
  }
  ep->attempts = 0;
  /* More in the log: the next batch goes now (catching up is not delayed
   * by batching). */
  if (presence_log_last_seq(w->s->p) > ep->cursor || w->flushing)
    uv_timer_start(&ep->timer, on_timer, 0, 0);
}

static void on_done(endpoint_t *ep, CURLcode res) {
  webhooks_t *w = ep->w;
  srv_t *s = w->s;
  long code = 0;
  curl_off_t retry_after = 0;
  if (res == CURLE_OK) {
    curl_easy_getinfo(ep->easy, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(ep->easy, CURLINFO_RETRY_AFTER, &retry_after);
  }
  if (w->closed || !ep->have_batch) return;
  if (res == CURLE_OK && code >= 200 && code < 300) {
    if (ep->attempts)
      srv_log(s, PRESENCE_LOG_INFO,
              "webhook %s: delivered after %u failed attempts", ep->spec.name,
              ep->attempts);
    ep->delivered += ep->batch_events;
    commit(ep);
    return;
  }
  /* The receiver says this body is unacceptable and always will be:
   * retrying it would block every later event behind it forever. */
  if (res == CURLE_OK && (code == 400 || code == 413 || code == 422)) {
    ep->failures++;
    ep->dropped += ep->batch_events;
    srv_log(s, PRESENCE_LOG_WARN,
            "webhook %s: HTTP %ld: dropping events %llu to %llu (the "
            "receiver refused them)",
            ep->spec.name, code, (unsigned long long)ep->batch_first,
            (unsigned long long)ep->batch_last);
    commit(ep);
    return;
  }
  char why[CURL_ERROR_SIZE + 32];
  if (res == CURLE_OK)
    snprintf(why, sizeof why, "HTTP %ld", code);
  else
    snprintf(why, sizeof why, "%s",
             ep->errbuf[0] ? ep->errbuf : curl_easy_strerror(res));
  /* One line when an endpoint starts failing, then one every 10 attempts:
   * a receiver down for an hour must not flood the log. */
  if (ep->attempts % 10 == 0)
    srv_log(s, PRESENCE_LOG_WARN,
            "webhook %s: delivery of events %llu to %llu failed (%s), "
            "attempt %u; retrying with backoff",
            ep->spec.name, (unsigned long long)ep->batch_first,
            (unsigned long long)ep->batch_last, why, ep->attempts + 1);
  retry_later(ep, (code == 429 || code == 503) ? (long)retry_after : 0);
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */
/* ------------------------------------------------------------------------ */

/* Every event lands in the log before its callbacks run: this only wakes
 * the endpoints that are idle, and notices who fell behind. */
static void on_event(srv_t *s, const presence_event_t *ev, void *ud) {
  webhooks_t *w = ud;
  (void)s;
  if (w->closed || w->aborted) return;
  for (size_t i = 0; i < w->n; i++) {
    endpoint_t *ep = &w->eps[i];
    if (ep->done) continue;
    if (w->redis && !ep->own) continue; /* another instance delivers it */
    /* A new owner's cursor may be ahead of what this instance has seen. */
    uint64_t lag = ev->seq > read_pos(ep) ? ev->seq - read_pos(ep) : 0;
    if (lag > w->s->cfg.log_capacity) mark_behind(ep, lag);
    if (ep->inflight || ep->have_batch || ep->acking || ep->reading ||
        uv_is_active((uv_handle_t *)&ep->timer))
      continue;
    uv_timer_start(&ep->timer, on_timer,
                   w->flushing ? 0 : w->s->cfg.webhook_batch_ms, 0);
  }
}

/* ------------------------------------------------------------------------ */
/* Ownership (Redis store)                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Every instance has the same endpoints and sees the same log, so each
 * endpoint is leased: a hash presence:wh:{<name>} holds the owner instance,
 * its epoch (the token), the lease expiry by Redis's clock and the cursor.
 * Every instance tries to claim each endpoint it does not hold, the owner
 * renews its lease (storing its cursor) and delivers, the others wait. All
 * of it goes through one script, so a claim, a renewal and a cursor move
 * are each atomic, and only the current owner with its current epoch can
 * move the cursor (fencing): an instance that lost its lease while a
 * request was in flight can neither step the cursor back nor past events
 * its successor has not delivered.
 *
 * The commands go over a connection of our own (like kick.c), with a
 * watchdog instead of the timeout hiredis's asynchronous API lacks.
 */

#ifdef PRESENCED_HAVE_REDIS

/* The store's key prefix (presenced does not change it). */
#define WR_PREFIX "presence:"

/* KEYS: the endpoint's hash, the log id, the store's event counter.
 * ARGV: op (claim, renew, release), instance, token, lease ms, cursor,
 * a log id to use if the cluster has none.
 * Reply: {1, epoch, cursor, log id} or {0, owner, ms left on its lease}. */
static const char wr_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local h = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'exp', "
    "'cursor')\n"
    "local owner, exp = h[1] or '', tonumber(h[3] or '0')\n"
    "local cursor = tonumber(h[4] or '')\n"
    "local id = redis.call('GET', KEYS[2])\n"
    "if not id then\n"
    "  id = ARGV[6]\n"
    "  redis.call('SET', KEYS[2], id)\n"
    "end\n"
    "local me = ARGV[2]\n"
    "if ARGV[1] == 'claim' then\n"
    "  if owner ~= '' and owner ~= me and exp > now then\n"
    "    return {0, owner, exp - now}\n"
    "  end\n"
    /* Epochs only grow, even across a lost hash (like the store's). */
    "  local e = string.format('%.0f', math.max(tonumber(h[2] or '0') + 1, "
    "now))\n"
    /* A new endpoint starts at the end of the log, not its beginning. */
    "  if not cursor then cursor = tonumber(redis.call('GET', KEYS[3]) or "
    "'0') end\n"
    "  redis.call('HSET', KEYS[1], 'owner', me, 'epoch', e, 'exp', "
    "string.format('%.0f', now + tonumber(ARGV[4])), 'cursor', "
    "string.format('%.0f', cursor))\n"
    "  return {1, e, cursor, id}\n"
    "end\n"
    "if owner ~= me or h[2] ~= ARGV[3] then\n"
    "  return {0, owner, exp - now}\n"
    "end\n"
    "local c = tonumber(ARGV[5])\n"
    "if cursor == nil or c > cursor then cursor = c end\n"
    "local cs = string.format('%.0f', cursor)\n"
    "if ARGV[1] == 'release' then\n"
    "  redis.call('HSET', KEYS[1], 'owner', '', 'exp', '0', 'cursor', cs)\n"
    "else\n"
    "  redis.call('HSET', KEYS[1], 'exp', string.format('%.0f', now + "
    "tonumber(ARGV[4])), 'cursor', cs)\n"
    "end\n"
    "return {1, h[2], cursor, id}\n";

enum { WR_CLAIM, WR_RENEW, WR_ACK, WR_RELEASE };

typedef struct wr_cmd {
  endpoint_t *ep;
  int op;
  uint32_t gen;
  int64_t sent_ms;
} wr_cmd_t;

static void wr_on_reply(redisAsyncContext *ac, void *reply, void *priv);

/* Send one script call; 0, or -1 if there is no connection. */
static int wr_send(endpoint_t *ep, int op, uint64_t cursor) {
  webhooks_t *w = ep->w;
  srv_t *s = w->s;
  if (!w->rc || !w->rc_up || w->closed) return -1;
  wr_cmd_t *c = calloc(1, sizeof *c);
  if (!c) return -1;
  c->ep = ep;
  c->op = op;
  c->gen = ep->gen;
  c->sent_ms = srv_now_mono(s);
  char token[24], lease[16], cur[24];
  snprintf(token, sizeof token, "%llu", (unsigned long long)ep->token);
  snprintf(lease, sizeof lease, "%u", s->cfg.redis_lease_ms);
  snprintf(cur, sizeof cur, "%llu", (unsigned long long)cursor);
  const char *opname = op == WR_CLAIM     ? "claim"
                       : op == WR_RELEASE ? "release"
                                          : "renew";
  const char *argv[] = {"EVAL",
                        wr_script,
                        "3",
                        ep->key,
                        WR_PREFIX "wh:log-id",
                        WR_PREFIX "seq",
                        opname,
                        s->instance_id,
                        token,
                        lease,
                        cur,
                        w->log_offer};
  size_t lens[sizeof argv / sizeof argv[0]];
  for (size_t i = 0; i < sizeof argv / sizeof argv[0]; i++)
    lens[i] = strlen(argv[i]);
  if (redisAsyncCommandArgv(w->rc, wr_on_reply, c,
                            (int)(sizeof argv / sizeof argv[0]), argv,
                            lens) != REDIS_OK) {
    free(c);
    return -1;
  }
  if (w->pending++ == 0) w->progress_ms = c->sent_ms;
  return 0;
}

/* Stop delivering: the request in flight is cut (the lease that allowed it
 * is gone) and the batch forgotten; a later owner reads it again from the
 * stored cursor. */
static void wr_lose(endpoint_t *ep, const char *why) {
  webhooks_t *w = ep->w;
  if (!ep->own) return;
  ep->own = 0;
  ep->gen++;
  ep->acking = 0;
  if (ep->inflight) {
    curl_multi_remove_handle(w->multi, ep->easy);
    ep->inflight = 0;
  }
  if (!w->closed) uv_timer_stop(&ep->timer);
  ep->have_batch = 0;
  ep->attempts = 0;
  ep->behind = 0;
  buf_reset(&ep->body);
  if (!w->closed)
    srv_log(w->s, PRESENCE_LOG_WARN,
            "webhook %s: this instance stops delivering it (%s)", ep->spec.name,
            why);
  if (w->flushing) ep_finished(ep);
}

static void wr_ack(endpoint_t *ep) {
  ep->acking = 1;
  if (wr_send(ep, WR_ACK, ep->batch_last) != 0)
    wr_lose(ep, "Redis is unreachable: cannot store the cursor");
}

static void wr_release(endpoint_t *ep) {
  uint64_t cursor = ep->cursor;
  ep->own = 0;
  ep->gen++;
  if (wr_send(ep, WR_RELEASE, cursor) == 0) ep->releasing = 1;
}

static void wr_claimed(endpoint_t *ep, int64_t sent_ms, uint64_t epoch,
                       uint64_t cursor) {
  webhooks_t *w = ep->w;
  ep->own = 1;
  ep->token = epoch;
  ep->lease_until = sent_ms + w->s->cfg.redis_lease_ms;
  ep->gen++;
  if (w->flushing || ep->done) {
    /* Won while shutting down: give it straight back. */
    ep->cursor = cursor;
    wr_release(ep);
    return;
  }
  ep->cursor = cursor;
  ep->have_batch = 0;
  ep->attempts = 0;
  ep->behind = 0;
  srv_log(w->s, PRESENCE_LOG_INFO,
          "webhook %s: this instance delivers it now, after seq %llu",
          ep->spec.name, (unsigned long long)cursor);
  uv_timer_start(&ep->timer, on_timer, 0, 0);
}

/* A fresh id to offer as the log's, should the cluster have none. */
static int wr_new_offer(webhooks_t *w) {
  char uuid[37];
  if (srv_uuid4(w->s->sys, uuid) != 0) return -1;
  snprintf(w->log_offer, sizeof w->log_offer, "%.8s", uuid);
  return 0;
}

static void wr_on_reply(redisAsyncContext *ac, void *reply, void *priv) {
  wr_cmd_t *c = priv;
  endpoint_t *ep = c->ep;
  webhooks_t *w = ep->w;
  redisReply *r = reply;
  (void)ac;
  if (w->pending) w->pending--;
  w->progress_ms = srv_now_mono(w->s);
  int ok = -1; /* -1 no answer, 0 refused, 1 granted */
  uint64_t epoch = 0, cursor = 0;
  if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 3 &&
      r->element[0]->type == REDIS_REPLY_INTEGER) {
    ok = r->element[0]->integer == 1;
    if (ok && r->elements == 4 && r->element[1]->type == REDIS_REPLY_STRING &&
        r->element[2]->type == REDIS_REPLY_INTEGER &&
        r->element[3]->type == REDIS_REPLY_STRING) {
      epoch = strtoull(r->element[1]->str, NULL, 10);
      cursor = (uint64_t)r->element[2]->integer;
      if (!w->log_id[0] || strcmp(w->log_id, r->element[3]->str))
        snprintf(w->log_id, sizeof w->log_id, "%s", r->element[3]->str);
      /* Our offer became the log's id: never offer it again. Were Redis to
       * lose its data (restart without persistence, FLUSHALL), the script
       * would otherwise set the same id again for the new stream, and its
       * sequence goes on only from the highest seq the first instance to
       * register again had seen, so it may reuse numbers a receiver
       * already has: deduplicating on (instance, seq), it would drop those
       * events as repeats. docs/webhooks.md promises a new id. (Only a
       * command already sent with the old offer and run after the loss
       * can still reuse it.) */
      if (!strcmp(r->element[3]->str, w->log_offer)) wr_new_offer(w);
    } else if (ok) {
      ok = -1;
    }
  } else if (r && r->type == REDIS_REPLY_ERROR && !ep->claim_err) {
    ep->claim_err = 1;
    srv_log(w->s, PRESENCE_LOG_ERROR, "webhook %s: Redis: %s", ep->spec.name,
            r->str);
  }
  if (ok >= 0) ep->claim_err = 0;
  int op = c->op, current = c->gen == ep->gen;
  int64_t sent_ms = c->sent_ms;
  free(c);
  if (w->closed) {
    ep->claiming = ep->acking = ep->releasing = 0;
    return;
  }
  switch (op) {
  case WR_CLAIM:
    ep->claiming = 0;
    if (ok == 1 && !ep->own) wr_claimed(ep, sent_ms, epoch, cursor);
    break;
  case WR_RENEW:
    ep->claiming = 0;
    if (!current || !ep->own) break;
    if (ok == 1)
      ep->lease_until = sent_ms + w->s->cfg.redis_lease_ms;
    else if (ok == 0)
      wr_lose(ep, "another instance holds its lease");
    break;
  case WR_ACK:
    if (!current || !ep->own) break;
    ep->acking = 0;
    if (ok == 1) {
      ep->lease_until = sent_ms + w->s->cfg.redis_lease_ms;
      acknowledge(ep);
    } else {
      wr_lose(ep, ok == 0 ? "another instance holds its lease"
                          : "Redis did not store the cursor");
    }
    break;
  case WR_RELEASE:
    ep->releasing = 0;
    if (ok == 1)
      srv_log(w->s, PRESENCE_LOG_INFO,
              "webhook %s: lease given back, after seq %llu", ep->spec.name,
              (unsigned long long)cursor);
    srv_maybe_finish(w->s);
    break;
  }
}

static void wr_on_connect(const redisAsyncContext *ac, int status) {
  webhooks_t *w = ac->data;
  if (!w) return;
  if (status != REDIS_OK)
    w->rc = NULL; /* hiredis frees it */
  else
    w->rc_up = 1;
}

static void wr_on_disconnect(const redisAsyncContext *ac, int status) {
  webhooks_t *w = ac->data;
  (void)status;
  if (!w || ac != w->rc) return;
  w->rc = NULL;
  w->rc_up = 0;
  w->pending = 0;
}

static void wr_connect(webhooks_t *w) {
  const srv_redis_addr_t *a = &w->addr;
  redisAsyncContext *ac = a->path ? redisAsyncConnectUnix(a->path)
                                  : redisAsyncConnect(a->host, a->port);
  if (!ac) return;
  if (ac->err || redisLibuvAttach(ac, w->s->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    return;
  }
  ac->data = w;
  redisAsyncSetConnectCallback(ac, wr_on_connect);
  redisAsyncSetDisconnectCallback(ac, wr_on_disconnect);
  /* The endpoints' hashes live in the store's database. */
  if (a->db) redisAsyncCommand(ac, NULL, NULL, "SELECT %d", a->db);
  w->rc = ac;
  w->rc_up = 0;
}

/* Drop the connection: pending commands are answered with no reply. */
static void wr_drop(webhooks_t *w) {
  redisAsyncContext *ac = w->rc;
  if (!ac) return;
  w->rc = NULL;
  w->rc_up = 0;
  ac->data = NULL; /* its disconnect callback must not touch w->rc */
  redisAsyncFree(ac);
  w->pending = 0;
}

/* Claims, renewals and the watchdog. Claims are retried this often, so a
 * lease left by a dead owner is taken within a tick of its expiry. */
static void wr_tick(uv_timer_t *t) {
  webhooks_t *w = t->data;
  srv_t *s = w->s;
  int64_t now = srv_now_mono(s);
  if (w->closed) return;
  if (w->rc && w->pending &&
      now - w->progress_ms > (int64_t)s->cfg.redis_timeout_ms) {
    srv_log(s, PRESENCE_LOG_WARN,
            "webhooks: Redis did not answer in %u ms, reconnecting",
            s->cfg.redis_timeout_ms);
    wr_drop(w);
  }
  for (size_t i = 0; i < w->n; i++) {
    endpoint_t *ep = &w->eps[i];
    if (ep->own && now >= ep->lease_until)
      wr_lose(ep, "its lease could not be renewed in time");
  }
  if (!w->rc) wr_connect(w);
  if (!w->rc_up) return;
  for (size_t i = 0; i < w->n; i++) {
    endpoint_t *ep = &w->eps[i];
    if (ep->claiming || ep->acking || ep->releasing) continue;
    if (!ep->own && (w->flushing || w->aborted || ep->done)) continue;
    /* The renewal stores the cursor too (events skipped by the filter move
     * it without a delivery). */
    if (wr_send(ep, ep->own ? WR_RENEW : WR_CLAIM, ep->cursor) == 0)
      ep->claiming = 1;
  }
}

static int wr_init(webhooks_t *w) {
  srv_t *s = w->s;
  if (srv_redis_url(s->cfg.store, &w->addr) != 0) return -1;
  if (wr_new_offer(w) != 0) return -1;
  for (size_t i = 0; i < w->n; i++) {
    endpoint_t *ep = &w->eps[i];
    size_t n = strlen(ep->spec.name);
    ep->key = malloc(sizeof WR_PREFIX + n + 5);
    if (!ep->key) return -1;
    snprintf(ep->key, sizeof WR_PREFIX + n + 5, "%swh:{%s}", WR_PREFIX,
             ep->spec.name);
  }
  uint32_t tick = s->cfg.redis_heartbeat_ms / 2;
  if (tick > 500) tick = 500;
  if (tick < 20) tick = 20;
  uv_timer_init(s->loop, &w->lease_timer);
  w->lease_timer.data = w;
  uv_timer_start(&w->lease_timer, wr_tick, 0, tick);
  wr_connect(w);
  return 0;
}

static void wr_close(webhooks_t *w) {
  if (!w->redis) return;
  wr_drop(w);
  uv_close((uv_handle_t *)&w->lease_timer, NULL);
}

static void wr_free(webhooks_t *w) {
  srv_redis_addr_free(&w->addr);
  for (size_t i = 0; i < w->n; i++)
    free(w->eps[i].key);
}

#else /* built without hiredis: no Redis store, every endpoint is ours */

static void wr_ack(endpoint_t *ep) {
  acknowledge(ep);
}
static void wr_release(endpoint_t *ep) {
  ep->own = 0;
}
static void wr_lose(endpoint_t *ep, const char *why) {
  (void)why;
  ep->own = 0;
}
static int wr_init(webhooks_t *w) {
  (void)w;
  return -1;
}
static void wr_close(webhooks_t *w) {
  (void)w;
}
static void wr_free(webhooks_t *w) {
  (void)w;
}

#endif

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

static int setup_easy(endpoint_t *ep) {
  const srv_config_t *cfg = &ep->w->s->cfg;
  CURL *e = curl_easy_init();
  if (!e) return -1;
  ep->easy = e;
  long t = (long)cfg->webhook_timeout_ms;
  if (curl_easy_setopt(e, CURLOPT_URL, ep->spec.url) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK)
    return -1;
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)ep);
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, t);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, t < 5000 ? t : 5000L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_body);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, ep->errbuf);
  /* A redirect would send signed presence data somewhere not configured. */
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  return 0;
}

int webhook_init(srv_t *s) {
  if (s->cfg.n_webhooks == 0) return 0;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    srv_log(s, PRESENCE_LOG_ERROR, "webhooks: cannot initialise libcurl");
    return -1;
  }
  webhooks_t *w = calloc(1, sizeof *w);
  if (!w) goto nomem;
  s->webhooks = w;
  w->s = s;
  w->sink = -1;
  buf_init(&w->events);
  w->eps = calloc(s->cfg.n_webhooks, sizeof *w->eps);
  if (!w->eps) goto nomem;
  uv_timer_init(s->loop, &w->curl_timer);
  w->curl_timer.data = w;
  for (size_t i = 0; i < s->cfg.n_webhooks; i++) {
    endpoint_t *ep = &w->eps[i];
    char err[256];
    ep->w = w;
    buf_init(&ep->body);
    uv_timer_init(s->loop, &ep->timer);
    ep->timer.data = ep;
    w->n++;
    if (wh_spec_parse(s->cfg.webhooks[i], 1, &ep->spec, err, sizeof err)) {
      srv_log(s, PRESENCE_LOG_ERROR, "--webhook: %s", err);
      return -1;
    }
    for (size_t k = 0; k < i; k++)
      if (!strcmp(w->eps[k].spec.name, ep->spec.name)) {
        srv_log(s, PRESENCE_LOG_ERROR,
                "--webhook: two endpoints named %s (give one a name=)",
                ep->spec.name);
        return -1;
      }
    if (setup_easy(ep) != 0) {
      srv_log(s, PRESENCE_LOG_ERROR, "--webhook %s: libcurl refused the URL",
              ep->spec.name);
      return -1;
    }
    /* The log of a fresh embedded store starts empty: deliver from its
     * beginning, so events of the startup itself are not missed. With
     * Redis the cursor comes with the lease. */
    ep->cursor = presence_log_last_seq(s->p);
  }
  w->multi = curl_multi_init();
  if (!w->multi) goto nomem;
  curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
  curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, on_curl_timeout);
  curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
  /* Cluster events: with Redis, changes decided on other instances too. */
  fanout_sink_t sink = {.name = "webhooks", .on_event = on_event, .ud = w};
  w->sink = fanout_sink_add(s, &sink);
  if (w->sink < 0) goto nomem;
  w->redis = srv_async(s);
  if (w->redis && wr_init(w) != 0) {
    w->redis = 0;
    srv_log(s, PRESENCE_LOG_ERROR, "webhooks: cannot set up the leases");
    return -1;
  }
  for (size_t i = 0; i < w->n; i++)
    srv_log(s, PRESENCE_LOG_INFO, "webhook %s: %s", w->eps[i].spec.name,
            w->redis ? "delivered by whichever instance holds its lease"
                     : "delivering events");
  return 0;
nomem:
  srv_log(s, PRESENCE_LOG_ERROR, "webhooks: out of memory");
  return -1;
}

void webhook_shutdown(srv_t *s) {
  webhooks_t *w = s->webhooks;
  if (!w || w->flushing) return;
  w->flushing = 1;
  for (size_t i = 0; i < w->n; i++) {
    endpoint_t *ep = &w->eps[i];
    if (w->redis && !ep->own) {
      /* Another instance delivers it (or will). */
      ep->done = 1;
      continue;
    }
    if (ep->inflight) continue; /* its completion continues the flush */
    /* No batching delay now, and an endpoint waiting out a backoff gets
     * one last attempt at once. */
    uv_timer_stop(&ep->timer);
    pump(ep);
  }
}

void webhook_abort(srv_t *s) {
  webhooks_t *w = s->webhooks;
  if (!w || w->aborted) return;
  w->aborted = 1;
  for (size_t i = 0; i < w->n; i++) {
    endpoint_t *ep = &w->eps[i];
    if (ep->inflight) {
      curl_multi_remove_handle(w->multi, ep->easy);
      ep->inflight = 0;
    }
    uv_timer_stop(&ep->timer);
    if (!ep->done && (!w->redis || ep->own) &&
        (ep->have_batch || presence_log_last_seq(s->p) > ep->cursor))
      srv_log(s, PRESENCE_LOG_WARN,
              "webhook %s: shutdown limit reached with events after seq "
              "%llu undelivered",
              ep->spec.name, (unsigned long long)ep->cursor);
    ep->done = 1;
  }
}

int webhook_done(const srv_t *s) {
  const webhooks_t *w = s->webhooks;
  if (!w || w->aborted) return 1;
  for (size_t i = 0; i < w->n; i++)
    if (!w->eps[i].done || w->eps[i].claiming || w->eps[i].releasing) return 0;
  return 1;
}

void webhook_close(srv_t *s) {
  webhooks_t *w = s->webhooks;
  if (!w || w->closed) return;
  webhook_abort(s);
  w->closed = 1;
  wr_close(w);
  if (w->multi) {
    curl_multi_cleanup(w->multi);
    w->multi = NULL;
  }
  /* Sockets curl did not report removed before its cleanup. */
  while (w->polls)
    poll_release(w, w->polls);
  uv_close((uv_handle_t *)&w->curl_timer, NULL);
  for (size_t i = 0; i < w->n; i++)
    uv_close((uv_handle_t *)&w->eps[i].timer, NULL);
}

void webhook_free(srv_t *s) {
  webhooks_t *w = s->webhooks;
  if (!w) return;
  if (w->sink >= 0) fanout_sink_remove(s, w->sink);
  w->sink = -1;
  if (w->multi) curl_multi_cleanup(w->multi);
  for (size_t i = 0; i < w->n; i++) {
    endpoint_t *ep = &w->eps[i];
    if (ep->easy) curl_easy_cleanup(ep->easy);
    curl_slist_free_all(ep->headers);
    buf_free(&ep->body);
    wh_spec_free(&ep->spec);
  }
  if (w->redis) wr_free(w);
  free(w->eps);
  buf_free(&w->events);
  free(w);
  s->webhooks = NULL;
  curl_global_cleanup();
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                  */
/* ------------------------------------------------------------------------ */

static void lag_ts(presence_t *p, int status, const presence_event_t *events,
                   size_t n, void *ud) {
  (void)p;
  (void)status;
  if (n) *(int64_t *)ud = events[0].ts_ms;
}

static void series(buf_t *b, const char *family, const endpoint_t *ep) {
  buf_printf(b, "%s{endpoint=", family);
  buf_put_json_str(b, ep->spec.name);
  buf_puts(b, "} ");
}

void webhook_metrics(srv_t *s, buf_t *b) {
  webhooks_t *w = s->webhooks;
  static const struct {
    const char *name, *type, *help;
    size_t off;
  } counters[] = {
      {"presenced_webhook_delivered_total", "counter",
       "Events acknowledged by the endpoint (2xx).",
       offsetof(endpoint_t, delivered)},
      {"presenced_webhook_retries_total", "counter",
       "Requests retried after a failure.", offsetof(endpoint_t, retries)},
      {"presenced_webhook_failures_total", "counter",
       "Failed requests (timeouts, connection errors, non-2xx answers).",
       offsetof(endpoint_t, failures)},
      {"presenced_webhook_dropped_total", "counter",
       "Events dropped because the endpoint refused them (400, 413, 422).",
       offsetof(endpoint_t, dropped)},
      {"presenced_webhook_gaps_total", "counter",
       "Gap notices delivered (the endpoint fell out of the log).",
       offsetof(endpoint_t, gaps)},
      {"presenced_webhook_lost_events_total", "counter",
       "Events that left the log before the endpoint got them.",
       offsetof(endpoint_t, lost)},
  };
  if (!w) return;
  for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", counters[c].name,
               counters[c].help, counters[c].name, counters[c].type);
    for (size_t i = 0; i < w->n; i++) {
      series(b, counters[c].name, &w->eps[i]);
      buf_put_u64(
          b, *(const uint64_t *)((const char *)&w->eps[i] + counters[c].off));
      buf_putc(b, '\n');
    }
  }
  uint64_t last = presence_log_last_seq(s->p);
  int64_t now = srv_now_wall(s);
  buf_puts(b, "# HELP presenced_webhook_lag_events Events in the log not yet "
              "acknowledged by the endpoint.\n"
              "# TYPE presenced_webhook_lag_events gauge\n");
  for (size_t i = 0; i < w->n; i++) {
    const endpoint_t *ep = &w->eps[i];
    /* Only the deliverer's cursor is current. */
    int mine = !w->redis || ep->own;
    series(b, "presenced_webhook_lag_events", ep);
    buf_put_u64(b, mine && last > ep->cursor ? last - ep->cursor : 0);
    buf_putc(b, '\n');
  }
  buf_puts(b, "# HELP presenced_webhook_lag_seconds Age of the oldest event "
              "not yet acknowledged by the endpoint.\n"
              "# TYPE presenced_webhook_lag_seconds gauge\n");
  for (size_t i = 0; i < w->n; i++) {
    int64_t ts = now;
    /* Only a synchronous store can answer into this stack frame. */
    if (last > w->eps[i].cursor && !srv_async(s))
      presence_log_read(s->p, w->eps[i].cursor, 1, lag_ts, &ts);
    series(b, "presenced_webhook_lag_seconds", &w->eps[i]);
    buf_printf(b, "%.3f\n", now > ts ? (double)(now - ts) / 1000.0 : 0.0);
  }
  buf_puts(b, "# HELP presenced_webhook_owner 1 on the instance that "
              "delivers the endpoint (with Redis: holds its lease).\n"
              "# TYPE presenced_webhook_owner gauge\n");
  for (size_t i = 0; i < w->n; i++) {
    series(b, "presenced_webhook_owner", &w->eps[i]);
    buf_printf(b, "%d\n", !w->redis || w->eps[i].own);
  }
  buf_puts(b, "# HELP presenced_webhook_behind 1 while the endpoint has "
              "fallen out of the transition log.\n"
              "# TYPE presenced_webhook_behind gauge\n");
  for (size_t i = 0; i < w->n; i++) {
    series(b, "presenced_webhook_behind", &w->eps[i]);
    buf_printf(b, "%d\n", w->eps[i].behind);
  }
}
