/* SPDX-License-Identifier: MIT */
/*
 * Webhooks (see webhook.h and docs/webhooks.md): the endpoint state machine
 * and its batches. Specs are parsed in webhook_spec.c, HTTP runs on
 * curl_uv.c, and with the Redis store the lease of webhook_lease.c says
 * which instance delivers and keeps the cursor.
 *
 * An endpoint is a small state machine around one cursor:
 *
 *   idle --event--> waiting (batch timer) --> sending --2xx--> idle/next
 *                                                |
 *                                              fail --> backoff (timer)
 *                                                         --> sending
 *
 * The batch being sent is kept (body and the log range it covers) until it
 * is acknowledged, so a retry sends the same events even if the log has
 * moved on meanwhile; only after it does the endpoint read the log again,
 * and a read that finds its cursor evicted turns into a gap notice. Nothing
 * else is queued per endpoint: memory is one body per endpoint.
 */
#include "server/webhook_int.h"

#include <stdarg.h>
#include <stddef.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Non-matching events scanned per batch at most, so a narrow filter over a
 * long log cannot hold the loop: the scan resumes on the next loop turn. */
#define WH_SCAN_MAX 4096
#define WH_READ_CHUNK 256

/* ---- State --------------------------------------------------------------- */

/* What deliveries name as their `instance` (see log_id): with a store in
 * shards each shard's log has its own sequence, so the id names the shard
 * too ("<log id>.<shard>"), and (instance, seq) stays unique. */
static const char *log_instance(const endpoint_t *ep, char *buf, size_t cap) {
  const webhooks_t *w = ep->w;
  const char *id = w->redis && w->log_id[0] ? w->log_id : w->s->instance_id;
  if (presence_log_count(w->s->p) <= 1) return id;
  snprintf(buf, cap, "%s.%u", id, (unsigned)ep->batch_log);
  return buf;
}

int wh_behind(const endpoint_t *ep) {
  return ep->cursor && presence_cursor_lag(ep->cursor) > 0;
}

/* The most events this instance has seen after the cursor in any one log
 * (each log keeps log_capacity of its own). */
static uint64_t max_lag(const endpoint_t *ep) {
  presence_t *p = ep->w->s->p;
  uint64_t most = 0;
  for (uint32_t i = 0, n = presence_log_count(p); ep->cursor && i < n; i++) {
    uint64_t last = presence_log_last_seq_of(p, i);
    uint64_t at = presence_cursor_pos(ep->cursor, i);
    if (ep->have_batch && i == ep->batch_log) at = ep->batch_last;
    if (last > at && last - at > most) most = last - at;
  }
  return most;
}

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
    wh_acknowledge(ep);
}

void wh_finished(endpoint_t *ep) {
  ep->done = 1;
  if (ep->w->redis && ep->own) wr_release(ep);
  srv_maybe_finish(ep->w->s);
}

/* ---- Batches ------------------------------------------------------------- */

typedef struct build {
  endpoint_t *ep;
  uint32_t log;   /* the one log this batch reads */
  uint64_t pos;   /* last seq looked at there */
  size_t matched; /* events in the batch */
  size_t scanned;
  size_t got; /* events in the last read */
  int64_t first_ts, last_ts; /* of the first and last event looked at */
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
    if (!b->scanned) b->first_ts = events[i].ts_ms;
    b->last_ts = events[i].ts_ms;
    b->scanned++;
    if (!(ep->spec.events & (1u << events[i].type))) continue;
    /* channel-prefix: only channel events of channels starting with it. */
    if (ep->spec.channel_prefix &&
        (!events[i].channel ||
         strncmp(events[i].channel, ep->spec.channel_prefix,
                 strlen(ep->spec.channel_prefix)) != 0))
      continue;
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
  uint64_t from = presence_cursor_pos(ep->cursor, b.log);
  if (b.pos == from && !b.gap) {
    if (!wh_behind(ep)) ep->oldest_ts = 0;
    return 0;
  }
  if (b.matched == 0 && !b.gap) {
    /* Nothing this endpoint wants: move on without a request. */
    presence_cursor_set(ep->cursor, b.log, b.pos);
    ep->oldest_ts = wh_behind(ep) ? b.last_ts : 0;
    return -1;
  }
  buf_t *body = &ep->body;
  buf_reset(body);
  char ib[64];
  ep->batch_log = b.log;
  buf_puts(body, "{\"instance\":");
  buf_put_json_str(body, log_instance(ep, ib, sizeof ib));
  ep->batch_first = b.gap ? b.gap_oldest : from + 1;
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
  ep->oldest_ts = b.first_ts;
  ep->batch_last_ts = b.last_ts;
  ep->batch_events = b.matched;
  ep->batch_gap = b.gap;
  ep->gap_confirmed = !w->redis;
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
  char ts[24], hex[65], ib[64];
  if (ep->batch_gap && !ep->gap_confirmed) {
    /* Told only once the lease is known to have outlived the read (see
     * gap_confirmed); the renewal's answer wakes the endpoint again. */
    wr_confirm(ep);
    return;
  }
  if (ep->batch_gap) mark_behind(ep, ep->gap_oldest - ep->gap_after - 1);
  snprintf(ts, sizeof ts, "%lld", (long long)srv_now_wall(s));
  curl_slist_free_all(ep->headers);
  ep->headers = NULL;
  if (sign(ep, ts, hex) != 0 ||
      add_header(ep, "Content-Type: application/json") ||
      add_header(ep, "User-Agent: presenced/%s", PRESENCE_VERSION_STRING) ||
      add_header(ep, "Presence-Instance: %s",
                 log_instance(ep, ib, sizeof ib)) ||
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
  if (curl_uv_add(&w->curl, e) != 0) {
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
  /* And the renewal that confirms a gap (send_batch). */
  if (ep->confirming) return;
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
      wh_finished(ep);
    else if (wh_behind(ep))
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

void wh_wake(endpoint_t *ep, uint64_t delay_ms) {
  uv_timer_start(&ep->timer, on_timer, delay_ms, 0);
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
    /* One log per batch, taken in turn among those with events. */
    if (!presence_cursor_next(ep->cursor, &b->log)) b->end = 1;
    b->pos = presence_cursor_pos(ep->cursor, b->log);
    buf_init(&b->events);
    ep->build = b;
  }
  while (!b->full && !b->end) {
    b->got = 0;
    b->pending = 1;
    b->in_call = 1;
    int rc = presence_log_read_of(s->p, b->log, b->pos, WH_READ_CHUNK, on_log,
                                  b);
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
    char at[PRESENCE_CURSOR_TEXT_MAX];
    presence_cursor_format(ep->cursor, at, sizeof at);
    srv_log(w->s, PRESENCE_LOG_WARN,
            "webhook %s: shutting down with events after %s undelivered",
            ep->spec.name, at);
    wh_finished(ep);
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

void wh_acknowledge(endpoint_t *ep) {
  webhooks_t *w = ep->w;
  presence_cursor_set(ep->cursor, ep->batch_log, ep->batch_last);
  ep->oldest_ts = wh_behind(ep) ? ep->batch_last_ts : 0;
  ep->have_batch = 0;
  buf_reset(&ep->body);
  buf_shrink(&ep->body, 1 << 16);
  if (ep->batch_gap) {
    /* Counted when the receiver has the notice, not when the batch is
     * read: a batch is read again after a change of owner, and one whose
     * gap was not confirmed (gap_confirmed) is never sent. */
    ep->gaps++;
    ep->lost += ep->gap_oldest - ep->gap_after - 1;
    ep->behind = 0;
    srv_log(w->s, PRESENCE_LOG_INFO,
            "webhook %s: caught up; gap notice delivered (events %llu to "
            "%llu were lost for it)",
            ep->spec.name, (unsigned long long)ep->gap_after + 1,
            (unsigned long long)ep->gap_oldest - 1);
  } else if (ep->behind && max_lag(ep) <= w->s->cfg.log_capacity) {
    /* Marked behind while a batch was held, but the log kept everything
     * after it after all. */
    ep->behind = 0;
  }
  ep->attempts = 0;
  /* More in the log: the next batch goes now (catching up is not delayed
   * by batching). */
  if (wh_behind(ep) || w->flushing)
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
  char why[CURL_ERROR_SIZE + 320];
  char *loc = NULL;
  if (res == CURLE_OK && code >= 300 && code < 400 &&
      curl_easy_getinfo(ep->easy, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK &&
      loc)
    /* Redirects are not followed (setup_easy): the batch is retried, and
     * the endpoint stays down until url= is changed. "HTTP 301" alone left
     * an operator to find the new address (an http:// URL moved to https,
     * a path that gained a slash); its query is left out (it may hold a
     * token). */
    snprintf(why, sizeof why,
             "HTTP %ld, a redirect to %.*s: not followed, set url= to it",
             code, (int)(strcspn(loc, "?#") < 256 ? strcspn(loc, "?#") : 256),
             loc);
  else if (res == CURLE_OK)
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

/* ---- Events -------------------------------------------------------------- */

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
    uint64_t lag = max_lag(ep);
    if (lag > w->s->cfg.log_capacity) mark_behind(ep, lag);
    /* The first event after an up-to-date cursor is the oldest pending. */
    if (!ep->oldest_ts && wh_behind(ep)) ep->oldest_ts = ev->ts_ms;
    if (ep->inflight || ep->have_batch || ep->acking || ep->reading ||
        uv_is_active((uv_handle_t *)&ep->timer))
      continue;
    uv_timer_start(&ep->timer, on_timer,
                   w->flushing ? 0 : w->s->cfg.webhook_batch_ms, 0);
  }
}

/* curl_uv's report of a finished request. */
static void on_transfer_done(CURL *easy, CURLcode res, void *ud) {
  endpoint_t *ep = NULL;
  (void)ud;
  curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&ep);
  ep->inflight = 0;
  on_done(ep, res);
}

static size_t discard_body(char *ptr, size_t size, size_t n, void *ud) {
  (void)ptr;
  (void)ud;
  return size * n;
}

/* ---- Lifecycle ----------------------------------------------------------- */

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
  /* ca=: the receiver's certificate is verified against this file (a
   * private CA) in place of the system's CAs; checked at the start. The
   * system's directory of CAs too (a libcurl built with one, as Debian's
   * /etc/ssl/certs): left set beside CAINFO, any public CA's certificate
   * for the receiver's name was trusted as well, and the signed events went
   * to whoever could get one. */
  if (ep->spec.ca &&
      (curl_easy_setopt(e, CURLOPT_CAINFO, ep->spec.ca) != CURLE_OK ||
       curl_easy_setopt(e, CURLOPT_CAPATH, NULL) != CURLE_OK))
    return -1;
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
  if (curl_uv_init(&w->curl, s->loop, on_transfer_done, w) != 0) goto nomem;
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
    unsigned mode;
    if (ep->spec.secret_file &&
        config_secret_file_exposed(ep->spec.secret_file, &mode))
      srv_log(s, PRESENCE_LOG_WARN,
              "--webhook %s: secret-file '%s' is readable or writable by "
              "group or others (mode %03o): chmod 600 it",
              ep->spec.name, ep->spec.secret_file, mode);
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
    int crc = presence_cursor_new(s->p, NULL, 0, &ep->cursor);
    if (crc) {
      srv_log(s, PRESENCE_LOG_ERROR, "--webhook %s: no cursor: %s",
              ep->spec.name, presence_strerror(crc));
      return -1;
    }
  }
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
      curl_uv_remove(&w->curl, ep->easy);
      ep->inflight = 0;
    }
    uv_timer_stop(&ep->timer);
    if (!ep->done && (!w->redis || ep->own) &&
        (ep->have_batch || wh_behind(ep))) {
      char at[PRESENCE_CURSOR_TEXT_MAX];
      presence_cursor_format(ep->cursor, at, sizeof at);
      srv_log(s, PRESENCE_LOG_WARN,
              "webhook %s: shutdown limit reached with events after %s "
              "undelivered",
              ep->spec.name, at);
    }
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
  curl_uv_close(&w->curl);
  for (size_t i = 0; i < w->n; i++)
    uv_close((uv_handle_t *)&w->eps[i].timer, NULL);
}

void webhook_free(srv_t *s) {
  webhooks_t *w = s->webhooks;
  if (!w) return;
  if (w->sink >= 0) fanout_sink_remove(s, w->sink);
  w->sink = -1;
  /* Without webhook_close (the loop never ran): only the multi handle. */
  if (w->curl.multi) curl_multi_cleanup(w->curl.multi);
  for (size_t i = 0; i < w->n; i++) {
    endpoint_t *ep = &w->eps[i];
    if (ep->easy) curl_easy_cleanup(ep->easy);
    curl_slist_free_all(ep->headers);
    buf_free(&ep->body);
    wh_spec_free(&ep->spec);
    presence_cursor_free(ep->cursor);
  }
  wr_free(w);
  free(w->eps);
  buf_free(&w->events);
  free(w);
  s->webhooks = NULL;
  curl_global_cleanup();
}

/* ---- Metrics ------------------------------------------------------------- */

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
  int64_t now = srv_now_wall(s);
  buf_puts(b, "# HELP presenced_webhook_lag_events Events in the log not yet "
              "acknowledged by the endpoint.\n"
              "# TYPE presenced_webhook_lag_events gauge\n");
  for (size_t i = 0; i < w->n; i++) {
    const endpoint_t *ep = &w->eps[i];
    /* Only the deliverer's cursor is current. */
    int mine = !w->redis || ep->own;
    series(b, "presenced_webhook_lag_events", ep);
    buf_put_u64(b, mine && ep->cursor ? presence_cursor_lag(ep->cursor) : 0);
    buf_putc(b, '\n');
  }
  buf_puts(b, "# HELP presenced_webhook_lag_seconds Age of the oldest event "
              "not yet acknowledged by the endpoint.\n"
              "# TYPE presenced_webhook_lag_seconds gauge\n");
  for (size_t i = 0; i < w->n; i++) {
    const endpoint_t *ep = &w->eps[i];
    int64_t ts = now;
    /* Only a synchronous store (one log) can answer into this frame; with
     * Redis the owner knows the oldest pending event's ts from its reads
     * and the events it was told of. */
    if (wh_behind(ep) && !srv_async(s))
      presence_log_read(s->p, presence_cursor_pos(ep->cursor, 0), 1, lag_ts,
                        &ts);
    else if (wh_behind(ep) && ep->own && ep->oldest_ts > 0)
      ts = ep->oldest_ts;
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
