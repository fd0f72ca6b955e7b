/* SPDX-License-Identifier: MIT */
/*
 * Webhooks' cursor lease on the Redis store.
 *
 * Every instance has the same endpoints and sees the same log, so each
 * endpoint is leased (presence_redis_lease: the store keeps the lease, its
 * epoch, its expiry by Redis's clock and the cursor, and fences every
 * move). Every instance tries to claim each endpoint it does not hold, the
 * owner renews its lease (storing its cursor) and delivers, the others
 * wait. The calls travel on the store's command connection, with its
 * timeouts: no Redis key, script or connection here.
 */
#include "server/webhook_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef PRESENCED_HAVE_REDIS
#include "presence_redis.h"

typedef struct wr_cmd {
  struct wr_cmd *prev, *next; /* pending, for wr_close */
  endpoint_t *ep;             /* NULL once wr_close let it go */
  int op;
  uint32_t gen;
  int64_t sent_ms;
} wr_cmd_t;

/* The claims' timer and the calls awaiting their answer. */
struct wh_lease {
  uv_timer_t timer; /* claims and renewals (wr_tick) */
  wr_cmd_t *pending;
};

enum { WR_CLAIM, WR_RENEW, WR_ACK, WR_RELEASE, WR_CONFIRM };

/* The lease keeps the cursor as decimals joined by ',' (one per log), a
 * form its script can compare number by number. Room for
 * PRESENCE_CURSOR_LOGS_MAX logs. */
#define WR_CURSOR_TEXT (PRESENCE_CURSOR_LOGS_MAX * 21 + 1)

/* ep's cursor as the lease's text; with at_log < n, that log's position
 * replaced by at_seq (an acknowledged batch's end). */
static void wr_cursor_text(const endpoint_t *ep, uint32_t at_log,
                           uint64_t at_seq, char *out, size_t cap) {
  uint32_t n = presence_log_count(ep->w->s->p);
  size_t o = 0;
  out[0] = '\0';
  for (uint32_t i = 0; i < n && o < cap; i++) {
    uint64_t v = i == at_log ? at_seq : presence_cursor_pos(ep->cursor, i);
    int k = snprintf(out + o, cap - o, "%s%llu", i ? "," : "",
                     (unsigned long long)v);
    if (k < 0) break;
    o += (size_t)k;
  }
}

/* Where a first claim starts with several logs: the end of each as this
 * instance has seen it (the script sees only shard 0's counter). "" with
 * one log: the store's counter. */
static void wr_start_text(const webhooks_t *w, char *out, size_t cap) {
  presence_t *p = w->s->p;
  uint32_t n = presence_log_count(p);
  size_t o = 0;
  out[0] = '\0';
  for (uint32_t i = 0; n > 1 && i < n && o < cap; i++) {
    int k = snprintf(out + o, cap - o, "%s%llu", i ? "," : "",
                     (unsigned long long)presence_log_last_seq_of(p, i));
    if (k < 0) break;
    o += (size_t)k;
  }
}

/* The lease's cursor into ep's: 0, or -1 when it has another number of
 * logs than this store (the shards were changed: ep's is left as is). */
static int wr_cursor_parse(endpoint_t *ep, const char *text) {
  uint32_t n = presence_log_count(ep->w->s->p);
  uint32_t i = 0;
  const char *q = text;
  for (; i < n; i++) {
    char *end;
    unsigned long long v = strtoull(q, &end, 10);
    if (end == q || (*end != ',' && *end != '\0')) return -1;
    if (*end == '\0' && i + 1 != n) return -1;
    if (*end == ',' && i + 1 == n) return -1;
    q = end + 1;
    (void)v;
  }
  q = text;
  for (i = 0; i < n; i++) {
    char *end;
    presence_cursor_set(ep->cursor, i, strtoull(q, &end, 10));
    q = end + 1;
  }
  return 0;
}

static void wr_on_reply(void *ud, int status, const presence_redis_lease_t *r);

/* Send one lease call with the cursor text; 0, or -1 if Redis cannot be
 * asked now. */
static int wr_send(endpoint_t *ep, int op, const char *cursor) {
  webhooks_t *w = ep->w;
  srv_t *s = w->s;
  if (w->closed || !s->rstore) return -1;
  wr_cmd_t *c = calloc(1, sizeof *c);
  if (!c) return -1;
  c->ep = ep;
  c->op = op;
  c->gen = ep->gen;
  c->sent_ms = srv_now_mono(s);
  presence_redis_lease_op_t lop = op == WR_CLAIM     ? PRESENCE_LEASE_CLAIM
                                  : op == WR_RELEASE ? PRESENCE_LEASE_RELEASE
                                                     : PRESENCE_LEASE_RENEW;
  char start[WR_CURSOR_TEXT];
  wr_start_text(w, start, sizeof start);
  if (presence_redis_lease_text(s->rstore, ep->spec.name, lop, ep->token,
                                s->cfg.redis_lease_ms, cursor, start,
                                w->log_offer, wr_on_reply, c) != 0) {
    free(c);
    return -1;
  }
  c->next = w->lease->pending;
  if (c->next) c->next->prev = c;
  w->lease->pending = c;
  return 0;
}

/* Stop delivering: the request in flight is cut (the lease that allowed it
 * is gone) and the batch forgotten; a later owner reads it again from the
 * stored cursor. */
/* An endpoint this worker delivers wants every event of the log (each one
 * wakes its batching), whatever this worker's clients watch. */
static void set_own(endpoint_t *ep, int own) {
  if (ep->own != own) srv_interest_all(ep->w->s, own ? 1 : -1);
  ep->own = own;
}

void wr_lose(endpoint_t *ep, const char *why) {
  webhooks_t *w = ep->w;
  if (!ep->own) return;
  set_own(ep, 0);
  ep->gen++;
  ep->acking = 0;
  ep->confirming = 0; /* its answer, if any, is for the ended ownership */
  if (ep->inflight) {
    curl_uv_remove(&w->curl, ep->easy);
    ep->inflight = 0;
  }
  if (!w->closed) uv_timer_stop(&ep->timer);
  ep->have_batch = 0;
  ep->attempts = 0;
  ep->behind = 0;
  ep->oldest_ts = 0;
  buf_reset(&ep->body);
  if (!w->closed)
    srv_log(w->s, PRESENCE_LOG_WARN,
            "webhook %s: this instance stops delivering it (%s)", ep->spec.name,
            why);
  if (w->flushing) wh_finished(ep);
}

void wr_ack(endpoint_t *ep) {
  char cur[WR_CURSOR_TEXT];
  wr_cursor_text(ep, ep->batch_log, ep->batch_last, cur, sizeof cur);
  ep->acking = 1;
  if (wr_send(ep, WR_ACK, cur) != 0)
    wr_lose(ep, "Redis is unreachable: cannot store the cursor");
}

void wr_confirm(endpoint_t *ep) {
  char cur[WR_CURSOR_TEXT];
  if (ep->confirming) return;
  wr_cursor_text(ep, UINT32_MAX, 0, cur, sizeof cur);
  if (wr_send(ep, WR_CONFIRM, cur) == 0)
    ep->confirming = 1;
  else
    wr_lose(ep, "Redis is unreachable: cannot confirm the lease");
}

void wr_release(endpoint_t *ep) {
  char cur[WR_CURSOR_TEXT];
  wr_cursor_text(ep, UINT32_MAX, 0, cur, sizeof cur);
  set_own(ep, 0);
  ep->gen++;
  ep->confirming = 0;
  if (wr_send(ep, WR_RELEASE, cur) == 0) ep->releasing = 1;
}

static void wr_claimed(endpoint_t *ep, int64_t sent_ms, uint64_t epoch,
                       const char *cursor) {
  webhooks_t *w = ep->w;
  set_own(ep, 1);
  ep->token = epoch;
  ep->lease_until = sent_ms + w->s->cfg.redis_lease_ms;
  ep->gen++;
  if (wr_cursor_parse(ep, cursor) != 0)
    srv_log(w->s, PRESENCE_LOG_WARN,
            "webhook %s: the stored cursor (%.64s) is of another number of "
            "shards: delivering from this instance's position instead",
            ep->spec.name, cursor);
  if (w->flushing || ep->done) {
    /* Won while shutting down: give it straight back. */
    wr_release(ep);
    return;
  }
  ep->have_batch = 0;
  ep->attempts = 0;
  ep->behind = 0;
  ep->oldest_ts = 0;
  srv_log(w->s, PRESENCE_LOG_INFO,
          "webhook %s: this instance delivers it now, after %.200s",
          ep->spec.name, cursor);
  wh_wake(ep, 0);
}

/* A fresh id to offer as the log's, should the cluster have none. */
static int wr_new_offer(webhooks_t *w) {
  char uuid[37];
  if (srv_uuid4(w->s->sys, uuid) != 0) return -1;
  snprintf(w->log_offer, sizeof w->log_offer, "%.8s", uuid);
  return 0;
}

static void wr_on_reply(void *ud, int status, const presence_redis_lease_t *r) {
  wr_cmd_t *c = ud;
  endpoint_t *ep = c->ep;
  if (!ep) { /* let go by wr_close */
    free(c);
    return;
  }
  webhooks_t *w = ep->w;
  if (c->prev)
    c->prev->next = c->next;
  else
    w->lease->pending = c->next;
  if (c->next) c->next->prev = c->prev;
  int ok = -1; /* -1 no answer, 0 refused, 1 granted */
  uint64_t epoch = 0;
  char cursor[WR_CURSOR_TEXT] = "";
  if (!status && r) {
    ok = r->granted;
    if (ok) {
      epoch = r->epoch;
      snprintf(cursor, sizeof cursor, "%s", r->cursor_text);
      if (!w->log_id[0] || strcmp(w->log_id, r->log_id))
        snprintf(w->log_id, sizeof w->log_id, "%s", r->log_id);
    }
  }
  /* Any answered call may have made our offer the log's id: a refused one
   * too (the script sets the id before it decides, and its refusal does
   * not name the id), so the offer is never sent again once answered.
   * Were Redis to lose its data (restart without persistence, FLUSHALL),
   * the script would otherwise set the same id again for the new stream,
   * and its sequence goes on only from the highest seq the first instance
   * to register again had seen, so it may reuse numbers a receiver already
   * has: deduplicating on (instance, seq), it would drop those events as
   * repeats. docs/webhooks.md promises a new id. (Only a command already
   * sent with the old offer and run after the loss can still reuse it.)
   * Seen in fresh-clone CI: an instance whose renewal was refused on the
   * emptied Redis had set the id, kept its offer, and set it again at the
   * next loss. */
  if (ok >= 0) wr_new_offer(w);
  if (status == PRESENCE_ESTORE && !ep->claim_err) {
    /* Once until the next success: the store logs Redis's reason. */
    ep->claim_err = 1;
    srv_log(w->s, PRESENCE_LOG_ERROR,
            "webhook %s: Redis did not answer the lease call",
            ep->spec.name);
  }
  if (ok >= 0) ep->claim_err = 0;
  int op = c->op, current = c->gen == ep->gen;
  int64_t sent_ms = c->sent_ms;
  free(c);
  if (w->closed) {
    ep->claiming = ep->acking = ep->releasing = ep->confirming = 0;
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
      wh_acknowledge(ep);
    } else {
      wr_lose(ep, ok == 0 ? "another instance holds its lease"
                          : "Redis did not store the cursor");
    }
    break;
  case WR_CONFIRM:
    if (!current || !ep->own) break;
    ep->confirming = 0;
    if (ok == 1) {
      ep->lease_until = sent_ms + w->s->cfg.redis_lease_ms;
      ep->gap_confirmed = 1;
      wh_wake(ep, 0);
    } else if (ok == 0) {
      /* The lease went with the data Redis lost: the "gap" is the new
       * log's renumbering, which the next owner starts after. */
      wr_lose(ep, "another instance holds its lease");
    } else {
      wh_wake(ep, w->s->cfg.webhook_retry_min_ms); /* asked again */
    }
    break;
  case WR_RELEASE:
    ep->releasing = 0;
    if (ok == 1)
      srv_log(w->s, PRESENCE_LOG_INFO,
              "webhook %s: lease given back, after %.200s", ep->spec.name,
              cursor);
    srv_maybe_finish(w->s);
    break;
  }
}

/* Claims and renewals. Claims are retried this often, so a lease left by a
 * dead owner is taken within a tick of its expiry. */
static void wr_tick(uv_timer_t *t) {
  webhooks_t *w = t->data;
  srv_t *s = w->s;
  int64_t now = srv_now_mono(s);
  if (w->closed) return;
  for (size_t i = 0; i < w->n; i++) {
    endpoint_t *ep = &w->eps[i];
    if (ep->own && now >= ep->lease_until)
      wr_lose(ep, "its lease could not be renewed in time");
  }
  for (size_t i = 0; i < w->n; i++) {
    endpoint_t *ep = &w->eps[i];
    if (ep->claiming || ep->acking || ep->releasing) continue;
    if (!ep->own && (w->flushing || w->aborted || ep->done)) continue;
    /* The renewal stores the cursor too (events skipped by the filter move
     * it without a delivery). */
    char cur[WR_CURSOR_TEXT];
    wr_cursor_text(ep, UINT32_MAX, 0, cur, sizeof cur);
    if (wr_send(ep, ep->own ? WR_RENEW : WR_CLAIM, cur) == 0)
      ep->claiming = 1;
  }
}

int wr_init(webhooks_t *w) {
  srv_t *s = w->s;
  w->lease = calloc(1, sizeof *w->lease);
  if (!w->lease) return -1;
  if (wr_new_offer(w) != 0) return -1;
  uint32_t tick = s->cfg.redis_heartbeat_ms / 2;
  if (tick > 500) tick = 500;
  if (tick < 20) tick = 20;
  uv_timer_init(s->loop, &w->lease->timer);
  w->lease->timer.data = w;
  uv_timer_start(&w->lease->timer, wr_tick, 0, tick);
  return 0;
}

/* Calls still in flight are let go: the store answers them when it is
 * freed, and only their memory is left to free then. */
void wr_close(webhooks_t *w) {
  if (!w->redis || !w->lease) return;
  for (wr_cmd_t *c = w->lease->pending; c; c = c->next) {
    c->ep->claiming = c->ep->acking = c->ep->releasing = 0;
    c->ep->confirming = 0;
    c->ep = NULL;
  }
  w->lease->pending = NULL;
  uv_close((uv_handle_t *)&w->lease->timer, NULL);
}

void wr_free(webhooks_t *w) {
  if (w->lease) {
    for (wr_cmd_t *c = w->lease->pending; c; c = c->next)
      c->ep = NULL;
  }
  free(w->lease);
  w->lease = NULL;
}

#else /* built without hiredis: no Redis store, every endpoint is ours */

void wr_ack(endpoint_t *ep) {
  wh_acknowledge(ep);
}
void wr_release(endpoint_t *ep) {
  ep->own = 0;
}
void wr_confirm(endpoint_t *ep) {
  ep->gap_confirmed = 1; /* not reached: only a Redis lease confirms */
  wh_wake(ep, 0);
}
void wr_lose(endpoint_t *ep, const char *why) {
  (void)why;
  ep->own = 0;
}
int wr_init(webhooks_t *w) {
  (void)w;
  return -1;
}
void wr_close(webhooks_t *w) {
  (void)w;
}
void wr_free(webhooks_t *w) {
  (void)w;
}

#endif
