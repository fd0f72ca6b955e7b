/* SPDX-License-Identifier: MIT */
/*
 * Kicks across instances (Redis store only).
 *
 * The store ends only sessions this instance holds: a backend may call
 * DELETE /v1/sessions/{id} on any instance, so the request travels over
 * Redis pub/sub. Every instance subscribes to one channel; the instance
 * asked looks the session up in the store's session index (`sidx`, see
 * docs/internals/redis.md): absent, 404; present, it publishes the id and
 * the instance whose WebSocket holds the session closes it (reason kicked),
 * which ends the session through the store like any local kick.
 *
 * Two connections of our own: a subscribed connection can send nothing
 * else. hiredis 0.14's asynchronous API has no timeout, so a timer drops
 * the publishing connection when an answer is overdue (Redis stopped):
 * the waiting request then gets 503 instead of hanging.
 */
#include "server/server.h"

#ifdef PRESENCED_HAVE_REDIS

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#define KICK_TIMEOUT_MS 2000
#define KICK_RETRY_MS 500
/* The store's default key prefix (presenced does not change it). */
#define STORE_PREFIX "presence:"

struct kicker {
  srv_t *s;
  redisAsyncContext *sub, *pub;
  int sub_up, pub_up;
  uv_timer_t timer; /* reconnects and the answer watchdog */
  int closing;
  srv_redis_addr_t addr;
  char channel[64];
  uint32_t pending;    /* commands sent on pub, not answered */
  int64_t progress_ms; /* last send or answer on pub while pending */
};

typedef struct kick_req {
  struct kicker *k;
  void (*done)(srv_t *s, int found, void *ud);
  void *ud;
  char sid[PRESENCE_ID_MAX + 1];
} kick_req_t;

int srv_redis_url(const char *url, srv_redis_addr_t *a) {
  memset(a, 0, sizeof *a);
  if (!strncmp(url, "unix:", 5)) {
    const char *p = url + 5;
    while (p[0] == '/' && p[1] == '/')
      p++;
    const char *q = strchr(p, '?');
    a->path = q ? strndup(p, (size_t)(q - p)) : strdup(p);
    if (q && !strncmp(q, "?db=", 4)) a->db = atoi(q + 4);
    return a->path ? 0 : -1;
  }
  if (strncmp(url, "redis://", 8)) return -1;
  const char *h = url + 8;
  size_t hl = strcspn(h, ":/");
  a->host = strndup(h, hl);
  a->port = 6379;
  const char *p = h + hl;
  if (*p == ':') {
    a->port = atoi(p + 1);
    p += 1 + strspn(p + 1, "0123456789");
  }
  if (*p == '/' && p[1]) a->db = atoi(p + 1);
  return a->host ? 0 : -1;
}

void srv_redis_addr_free(srv_redis_addr_t *a) {
  free(a->host);
  free(a->path);
  memset(a, 0, sizeof *a);
}

static void on_message(redisAsyncContext *ac, void *reply, void *priv) {
  struct kicker *k = priv;
  redisReply *r = reply;
  (void)ac;
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) return;
  redisReply *kind = r->element[0], *msg = r->element[2];
  if (kind->type != REDIS_REPLY_STRING || strcmp(kind->str, "message") ||
      msg->type != REDIS_REPLY_STRING)
    return;
  if (map_get(&k->s->sessions, msg->str)) {
    srv_log(k->s, PRESENCE_LOG_INFO, "session %s kicked through Redis",
            msg->str);
    ws_kick(k->s, msg->str);
  }
}

static void connect_all(struct kicker *k);

static void on_connect(const redisAsyncContext *ac, int status) {
  struct kicker *k = ac->data;
  if (!k) return;
  int is_sub = ac == k->sub;
  if (status != REDIS_OK) {
    /* hiredis frees the context after a failed connect. */
    if (is_sub)
      k->sub = NULL;
    else
      k->pub = NULL;
    return;
  }
  if (is_sub) {
    k->sub_up = 1;
    redisAsyncCommand(k->sub, on_message, k, "SUBSCRIBE %s", k->channel);
  } else {
    k->pub_up = 1;
  }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  struct kicker *k = ac->data;
  (void)status;
  if (!k) return;
  if (ac == k->sub) {
    k->sub = NULL;
    k->sub_up = 0;
  } else if (ac == k->pub) {
    k->pub = NULL;
    k->pub_up = 0;
    k->pending = 0;
  }
}

static redisAsyncContext *open_one(struct kicker *k) {
  redisAsyncContext *ac = k->addr.path
                              ? redisAsyncConnectUnix(k->addr.path)
                              : redisAsyncConnect(k->addr.host, k->addr.port);
  if (!ac) return NULL;
  if (ac->err || redisLibuvAttach(ac, k->s->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    return NULL;
  }
  ac->data = k;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  return ac;
}

static void connect_all(struct kicker *k) {
  if (k->closing) return;
  if (!k->sub) k->sub = open_one(k);
  if (!k->pub) {
    k->pub = open_one(k);
    /* The store selects its database; the index we read lives there. */
    if (k->pub && k->addr.db)
      redisAsyncCommand(k->pub, NULL, NULL, "SELECT %d", k->addr.db);
  }
}

static void on_timer(uv_timer_t *t) {
  struct kicker *k = t->data;
  if (k->pub && k->pending &&
      srv_now_mono(k->s) - k->progress_ms > KICK_TIMEOUT_MS) {
    srv_log(k->s, PRESENCE_LOG_WARN,
            "kick channel: Redis did not answer in %d ms, reconnecting",
            KICK_TIMEOUT_MS);
    redisAsyncContext *ac = k->pub;
    k->pub = NULL;
    k->pub_up = 0;
    ac->data = NULL;    /* its disconnect callback must not touch k->pub */
    redisAsyncFree(ac); /* pending callbacks run with no reply */
    k->pending = 0;
  }
  connect_all(k);
}

int kick_init(srv_t *s) {
  if (!s->rstore) return 0;
  struct kicker *k = calloc(1, sizeof *k);
  if (!k) return -1;
  k->s = s;
  s->kicker = k;
  if (srv_redis_url(s->cfg.store, &k->addr) != 0) return -1;
  snprintf(k->channel, sizeof k->channel, "%skick:%d", STORE_PREFIX,
           k->addr.db);
  uv_timer_init(s->loop, &k->timer);
  k->timer.data = k;
  uv_timer_start(&k->timer, on_timer, KICK_RETRY_MS, KICK_RETRY_MS);
  connect_all(k);
  return 0;
}

static void req_finish(kick_req_t *q, int found) {
  struct kicker *k = q->k;
  if (k->pending) k->pending--;
  k->progress_ms = srv_now_mono(k->s);
  q->done(k->s, found, q->ud);
  free(q);
}

static void on_published(redisAsyncContext *ac, void *reply, void *priv) {
  kick_req_t *q = priv;
  redisReply *r = reply;
  (void)ac;
  req_finish(q, r && r->type == REDIS_REPLY_INTEGER ? 1 : -1);
}

static void on_exists(redisAsyncContext *ac, void *reply, void *priv) {
  kick_req_t *q = priv;
  struct kicker *k = q->k;
  redisReply *r = reply;
  if (!r || r->type != REDIS_REPLY_INTEGER) {
    req_finish(q, -1);
    return;
  }
  if (r->integer == 0) {
    req_finish(q, 0);
    return;
  }
  k->progress_ms = srv_now_mono(k->s);
  if (redisAsyncCommand(ac, on_published, q, "PUBLISH %s %s", k->channel,
                        q->sid) != REDIS_OK)
    req_finish(q, -1);
}

int kick_remote(srv_t *s, const char *session_id,
                void (*done)(srv_t *s, int found, void *ud), void *ud) {
  struct kicker *k = s->kicker;
  if (!k || !k->pub || !k->pub_up) return -1;
  kick_req_t *q = calloc(1, sizeof *q);
  if (!q) return -1;
  q->k = k;
  q->done = done;
  q->ud = ud;
  snprintf(q->sid, sizeof q->sid, "%s", session_id);
  if (k->pending == 0) k->progress_ms = srv_now_mono(s);
  if (redisAsyncCommand(k->pub, on_exists, q, "HEXISTS %ssidx %s", STORE_PREFIX,
                        q->sid) != REDIS_OK) {
    free(q);
    return -1;
  }
  k->pending++;
  return 0;
}

/* Before the loop ends: the connections and the timer are loop handles. */
void kick_close(srv_t *s) {
  struct kicker *k = s->kicker;
  if (!k || k->closing) return;
  k->closing = 1;
  if (k->sub) redisAsyncFree(k->sub);
  if (k->pub) redisAsyncFree(k->pub);
  k->sub = k->pub = NULL;
  if (!uv_is_closing((uv_handle_t *)&k->timer))
    uv_close((uv_handle_t *)&k->timer, NULL);
}

void kick_free(srv_t *s) {
  struct kicker *k = s->kicker;
  if (!k) return;
  kick_close(s);
  srv_redis_addr_free(&k->addr);
  free(k);
  s->kicker = NULL;
}

#else /* built without hiredis: no Redis store, nothing to relay */

int kick_init(srv_t *s) {
  (void)s;
  return 0;
}
void kick_close(srv_t *s) {
  (void)s;
}
void kick_free(srv_t *s) {
  (void)s;
}
int kick_remote(srv_t *s, const char *session_id,
                void (*done)(srv_t *s, int found, void *ud), void *ud) {
  (void)s;
  (void)session_id;
  (void)done;
  (void)ud;
  return -1;
}

#endif
