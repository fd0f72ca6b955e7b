/* SPDX-License-Identifier: MIT */
/*
 * Webhooks' cursor lease on the Redis store.
 *
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
#include "server/webhook_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef PRESENCED_HAVE_REDIS
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

/* The Redis connection the leases go over, with its watchdog. */
struct wh_lease {
  redisAsyncContext *rc;
  int rc_up;
  uv_timer_t timer; /* claims, renewals, the watchdog (wr_tick) */
  srv_redis_addr_t addr;
  uint32_t pending;    /* commands sent, not answered */
  int64_t progress_ms; /* last send or answer while pending */
};

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
  if (!w->lease->rc || !w->lease->rc_up || w->closed) return -1;
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
  if (redisAsyncCommandArgv(w->lease->rc, wr_on_reply, c,
                            (int)(sizeof argv / sizeof argv[0]), argv,
                            lens) != REDIS_OK) {
    free(c);
    return -1;
  }
  if (w->lease->pending++ == 0) w->lease->progress_ms = c->sent_ms;
  return 0;
}

/* Stop delivering: the request in flight is cut (the lease that allowed it
 * is gone) and the batch forgotten; a later owner reads it again from the
 * stored cursor. */
void wr_lose(endpoint_t *ep, const char *why) {
  webhooks_t *w = ep->w;
  if (!ep->own) return;
  ep->own = 0;
  ep->gen++;
  ep->acking = 0;
  if (ep->inflight) {
    curl_uv_remove(&w->curl, ep->easy);
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
  if (w->flushing) wh_finished(ep);
}

void wr_ack(endpoint_t *ep) {
  ep->acking = 1;
  if (wr_send(ep, WR_ACK, ep->batch_last) != 0)
    wr_lose(ep, "Redis is unreachable: cannot store the cursor");
}

void wr_release(endpoint_t *ep) {
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
  wh_wake(ep, 0);
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
  if (w->lease->pending) w->lease->pending--;
  w->lease->progress_ms = srv_now_mono(w->s);
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
      wh_acknowledge(ep);
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
    w->lease->rc = NULL; /* hiredis frees it */
  else
    w->lease->rc_up = 1;
}

static void wr_on_disconnect(const redisAsyncContext *ac, int status) {
  webhooks_t *w = ac->data;
  (void)status;
  if (!w || ac != w->lease->rc) return;
  w->lease->rc = NULL;
  w->lease->rc_up = 0;
  w->lease->pending = 0;
}

static void wr_connect(webhooks_t *w) {
  const srv_redis_addr_t *a = &w->lease->addr;
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
  w->lease->rc = ac;
  w->lease->rc_up = 0;
}

/* Drop the connection: pending commands are answered with no reply. */
static void wr_drop(webhooks_t *w) {
  redisAsyncContext *ac = w->lease->rc;
  if (!ac) return;
  w->lease->rc = NULL;
  w->lease->rc_up = 0;
  ac->data = NULL; /* its disconnect callback must not touch w->lease->rc */
  redisAsyncFree(ac);
  w->lease->pending = 0;
}

/* Claims, renewals and the watchdog. Claims are retried this often, so a
 * lease left by a dead owner is taken within a tick of its expiry. */
static void wr_tick(uv_timer_t *t) {
  webhooks_t *w = t->data;
  srv_t *s = w->s;
  int64_t now = srv_now_mono(s);
  if (w->closed) return;
  if (w->lease->rc && w->lease->pending &&
      now - w->lease->progress_ms > (int64_t)s->cfg.redis_timeout_ms) {
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
  if (!w->lease->rc) wr_connect(w);
  if (!w->lease->rc_up) return;
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

int wr_init(webhooks_t *w) {
  srv_t *s = w->s;
  w->lease = calloc(1, sizeof *w->lease);
  if (!w->lease) return -1;
  if (srv_redis_url(s->cfg.store, &w->lease->addr) != 0) return -1;
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
  uv_timer_init(s->loop, &w->lease->timer);
  w->lease->timer.data = w;
  uv_timer_start(&w->lease->timer, wr_tick, 0, tick);
  wr_connect(w);
  return 0;
}

void wr_close(webhooks_t *w) {
  if (!w->redis || !w->lease) return;
  wr_drop(w);
  uv_close((uv_handle_t *)&w->lease->timer, NULL);
}

void wr_free(webhooks_t *w) {
  if (w->lease) srv_redis_addr_free(&w->lease->addr);
  free(w->lease);
  w->lease = NULL;
  for (size_t i = 0; i < w->n; i++)
    free(w->eps[i].key);
}

#else /* built without hiredis: no Redis store, every endpoint is ours */

void wr_ack(endpoint_t *ep) {
  wh_acknowledge(ep);
}
void wr_release(endpoint_t *ep) {
  ep->own = 0;
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
