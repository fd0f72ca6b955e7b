/* SPDX-License-Identifier: MIT */
/*
 * Named leases with a cursor, on the Redis store: presenced's webhooks
 * (one lease per endpoint: the instance holding it delivers, and stores how
 * far it got). Here because the keys and the script are the store's; the
 * daemon sees presence_redis_lease() only.
 *
 * A hash <prefix>wh:{<name>} holds the owner instance, its epoch (the
 * token), the lease expiry by Redis's clock and the cursor. A claim, a
 * renewal and a cursor move are each one script call, so each is atomic,
 * and only the current owner with its current epoch can move the cursor
 * (fencing): an instance that lost its lease while a request was in flight
 * can neither step the cursor back nor past events its successor has not
 * delivered. <prefix>wh:log-id names the log (an offer is kept if there is
 * none, so a log that Redis lost gets a new id); a new lease starts at the
 * store's newest sequence number, <prefix>seq, and is granted only to an
 * instance registered in the data Redis holds now (<prefix>inst): after a
 * loss that counter is right only once an instance registered again.
 *
 * The calls go over the store's command connection: its timeouts, its
 * reconnects, its checked replies.
 */
#include "core/internal.h"
#include "presence_redis.h"
#include "store/redis_decode.h"
#include "store/redis_shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* KEYS: the lease's hash, the log id, the store's event counter, the
 * registered instances (the store script's inst hash).
 * ARGV: op (claim, renew, release), instance, token, lease ms, cursor,
 * a log id to use if the cluster has none, where a first claim starts
 * ("": the counter).
 * Reply: {1, epoch, cursor, log id} or {0, owner, ms left on its lease}
 * ({0, '', 0} for a claim by an instance not registered in this data).
 *
 * A cursor is text: a decimal sequence number (one log), or decimals
 * joined by ',' (one per log of a store in shards). It only moves forward:
 * the later of two is taken number by number; one of another shape (the
 * number of shards changed) replaces the stored one. */
static const char lease_script[] =
    "local function later(a, b)\n"
    "  if not a or a == '' then return b end\n"
    "  local x, y = {}, {}\n"
    "  for v in string.gmatch(a, '[^,]+') do x[#x + 1] = tonumber(v) end\n"
    "  for v in string.gmatch(b, '[^,]+') do y[#y + 1] = tonumber(v) end\n"
    "  if #x ~= #y then return b end\n"
    "  for i = 1, #x do\n"
    "    if not x[i] or not y[i] then return b end\n"
    "    if x[i] > y[i] then y[i] = x[i] end\n"
    "    y[i] = string.format('%.0f', y[i])\n"
    "  end\n"
    "  return table.concat(y, ',')\n"
    "end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local h = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'exp', "
    "'cursor')\n"
    "local owner, exp = h[1] or '', tonumber(h[3] or '0')\n"
    "local cursor = h[4] or nil\n"
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
    /* Not before the claimer is registered in this data: after Redis lost
     * it, the counter comes back (jumped past every old number) only with
     * the first registration, so a claim before it would start a new
     * lease at 0 and its first read would be a gap notice for a million
     * events that never were. */
    "  if redis.call('HEXISTS', KEYS[4], me) == 0 then\n"
    "    return {0, '', 0}\n"
    "  end\n"
    /* Epochs only grow, even across a lost hash (like the store's). */
    "  local e = string.format('%.0f', math.max(tonumber(h[2] or '0') + 1, "
    "now))\n"
    /* A new lease starts at the end of the log, not its beginning. */
    "  if not cursor then\n"
    "    cursor = ARGV[7] ~= '' and ARGV[7] or "
    "(redis.call('GET', KEYS[3]) or '0')\n"
    "  end\n"
    "  redis.call('HSET', KEYS[1], 'owner', me, 'epoch', e, 'exp', "
    "string.format('%.0f', now + tonumber(ARGV[4])), 'cursor', cursor)\n"
    "  return {1, e, cursor, id}\n"
    "end\n"
    "if owner ~= me or h[2] ~= ARGV[3] then\n"
    "  return {0, owner, exp - now}\n"
    "end\n"
    "cursor = later(cursor, ARGV[5])\n"
    "if ARGV[1] == 'release' then\n"
    "  redis.call('HSET', KEYS[1], 'owner', '', 'exp', '0', 'cursor', "
    "cursor)\n"
    "else\n"
    "  redis.call('HSET', KEYS[1], 'exp', string.format('%.0f', now + "
    "tonumber(ARGV[4])), 'cursor', cursor)\n"
    "end\n"
    "return {1, h[2], cursor, id}\n";

typedef struct lease_call {
  void (*done)(void *ud, int status, const presence_redis_lease_t *r);
  void *ud;
  const presence_allocator_t *a; /* the host's, via the store */
} lease_call_t;

/* A decimal string of digits only. */
static int digits(const redisReply *r, uint64_t *v) {
  if (!r || r->type != REDIS_REPLY_STRING || !r->len || r->len > 19 ||
      strspn(r->str, "0123456789") != r->len)
    return -1;
  *v = strtoull(r->str, NULL, 10);
  return 0;
}

static redisReply *el(const redisReply *r, size_t i) {
  return r && r->type == REDIS_REPLY_ARRAY && i < r->elements ? r->element[i]
                                                              : NULL;
}

static void on_lease(void *ud, int code, redisReply *rep) {
  lease_call_t *c = ud;
  presence_redis_lease_t out;
  memset(&out, 0, sizeof out);
  if (!code && rep) {
    /* Checked whole: {1, epoch, cursor, id} or {0, owner, ms left}. */
    redisReply *g = el(rep, 0), *b = el(rep, 1), *n = el(rep, 2);
    code = PRESENCE_ESTORE;
    if (g && g->type == REDIS_REPLY_INTEGER && n) {
      redisReply *id = el(rep, 3);
      if (g->integer == 1 && rep->elements == 4 && !digits(b, &out.epoch) &&
          n->type == REDIS_REPLY_STRING && n->len > 0 &&
          strspn(n->str, "0123456789,") == n->len && id &&
          id->type == REDIS_REPLY_STRING) {
        out.granted = 1;
        out.cursor_text = n->str;
        /* One log: the number too (0 for a cursor of several). */
        if (digits(n, &out.cursor)) out.cursor = 0;
        out.log_id = id->str;
        code = 0;
      } else if (g->integer == 0 && b && b->type == REDIS_REPLY_STRING &&
                 n->type == REDIS_REPLY_INTEGER) {
        out.owner = b->str;
        out.ms_left = n->integer;
        code = 0;
      }
    }
  }
  c->done(c->ud, code, code ? NULL : &out);
  presence__free(c->a, c);
}

int presence_redis_lease(presence_store_t *s, const char *name,
                         presence_redis_lease_op_t op, uint64_t token,
                         uint32_t lease_ms, uint64_t cursor,
                         const char *log_offer,
                         void (*done)(void *ud, int status,
                                      const presence_redis_lease_t *r),
                         void *ud) {
  char cur[24];
  snprintf(cur, sizeof cur, "%llu", (unsigned long long)cursor);
  return presence_redis_lease_text(s, name, op, token, lease_ms, cur, NULL,
                                   log_offer, done, ud);
}

int presence_redis_lease_text(presence_store_t *s, const char *name,
                              presence_redis_lease_op_t op, uint64_t token,
                              uint32_t lease_ms, const char *cursor,
                              const char *start, const char *log_offer,
                              void (*done)(void *ud, int status,
                                           const presence_redis_lease_t *r),
                              void *ud) {
  if (!presence__redis_is(s) || !name || !*name || !log_offer || !done ||
      op < PRESENCE_LEASE_CLAIM || op > PRESENCE_LEASE_RELEASE || !cursor ||
      !*cursor || strspn(cursor, "0123456789,") != strlen(cursor) ||
      (start && strspn(start, "0123456789,") != strlen(start)))
    return PRESENCE_EINVAL;
  const char *prefix = presence__redis_prefix(s);
  char key[400], log_key[160], seq_key[160], inst_key[160];
  if ((size_t)snprintf(key, sizeof key, "%swh:{%s}", prefix, name) >=
      sizeof key)
    return PRESENCE_EINVAL;
  snprintf(log_key, sizeof log_key, "%swh:log-id", prefix);
  snprintf(seq_key, sizeof seq_key, "%sseq", prefix);
  snprintf(inst_key, sizeof inst_key, "%sinst", prefix);
  char tok[24], lease[16];
  snprintf(tok, sizeof tok, "%llu", (unsigned long long)token);
  snprintf(lease, sizeof lease, "%u", (unsigned)lease_ms);
  const char *opname = op == PRESENCE_LEASE_CLAIM     ? "claim"
                       : op == PRESENCE_LEASE_RELEASE ? "release"
                                                      : "renew";
  const char *argv[] = {"EVAL",    lease_script, "4",
                        key,       log_key,      seq_key,
                        inst_key,  opname,       presence__redis_instance(s),
                        tok,       lease,        cursor,
                        log_offer, start ? start : ""};
  const presence_allocator_t *a = presence__redis_allocator(s);
  lease_call_t *c = presence__malloc(a, sizeof *c);
  if (!c) return PRESENCE_ENOMEM;
  c->a = a;
  c->done = done;
  c->ud = ud;
  int rc = presence__redis_raw(s, (int)(sizeof argv / sizeof *argv), argv,
                               NULL, on_lease, c);
  if (rc) presence__free(a, c);
  return rc;
}

/* ---- A backend origin's name ---------------------------------------------
 *
 * The script's oclaim and orelease (presence.lua says how), in shard 0: a
 * claim is one call per backend connection, not per session. */

typedef struct oclaim_call {
  presence_redis_origin_claim_cb done;
  void *ud;
  const presence_allocator_t *a;
} oclaim_call_t;

/* A held notice's field: a string with no NUL inside (ids, channel names,
 * codes and messages hold none), as C reads it. */
static int notice_str(const redisReply *r) {
  return r && r->type == REDIS_REPLY_STRING && strlen(r->str) == r->len;
}

/* The notices of an oclaim answer (its third element, four strings each)
 * into out[]; those not made of four strings are left out (and removed with
 * the rest once told: they could never be). */
static size_t read_notices(const redisReply *l,
                           presence_redis_origin_notice_t *out) {
  size_t k = 0;
  for (size_t i = 0; i + 4 <= l->elements; i += 4) {
    redisReply *const *f = l->element + i;
    if (!notice_str(f[0]) || !notice_str(f[1]) || !notice_str(f[2]) ||
        !notice_str(f[3]) || !f[0]->len || !f[1]->len)
      continue;
    out[k++] = (presence_redis_origin_notice_t){f[0]->str, f[1]->str,
                                                f[2]->str, f[3]->str};
  }
  return k;
}

static void on_oclaim(void *ud, int code, redisReply *rep) {
  oclaim_call_t *c = ud;
  uint64_t n = 0;
  int held = 0;
  presence_redis_origin_notice_t *nv = NULL;
  size_t nn = 0;
  const char *last = NULL;
  if (!code) {
    /* {0, {counter, '0' or '1'[, {notices}, last id]}}, checked whole. */
    redisReply *g = el(rep, 0), *p = el(rep, 1);
    redisReply *a = el(p, 0), *b = el(p, 1), *l = el(p, 2), *li = el(p, 3);
    if (g && g->type == REDIS_REPLY_INTEGER && g->integer == 0 && p &&
        (p->elements == 2 ||
         (p->elements == 4 && l->type == REDIS_REPLY_ARRAY &&
          notice_str(li) && li->len)) &&
        !digits(a, &n) && n > 0 && b && b->type == REDIS_REPLY_STRING &&
        b->len == 1 && (b->str[0] == '0' || b->str[0] == '1'))
      held = b->str[0] == '1';
    else
      code = PRESENCE_ESTORE;
    if (!code && li) {
      last = li->str;
      /* Without memory for them they are not told now, and stay in Redis
       * for the next connection (the caller removes them only once told). */
      if (l->elements >= 4 &&
          (nv = presence__malloc(c->a, l->elements / 4 * sizeof *nv)))
        nn = read_notices(l, nv);
      else if (l->elements >= 4)
        last = NULL;
    }
  }
  c->done(c->ud, code, code ? 0 : n, held, nv, nn, last);
  presence__free(c->a, nv);
  presence__free(c->a, c);
}

typedef struct ohold_call {
  void (*done)(void *ud, int status);
  void *ud;
  const presence_allocator_t *a;
} ohold_call_t;

static void on_ohold(void *ud, int code, redisReply *rep) {
  ohold_call_t *c = ud;
  redisReply *g = el(rep, 0);
  if (!code && !(g && g->type == REDIS_REPLY_INTEGER && g->integer == 0))
    code = PRESENCE_ESTORE;
  if (c->done) c->done(c->ud, code);
  presence__free(c->a, c);
}

static void on_orelease(void *ud, int code, redisReply *rep) {
  (void)ud;
  (void)code;
  (void)rep;
}

static presence_store_t *origin_shard(presence_store_t *s, const char *name) {
  if (!presence__redis_is(s) || !name || !*name ||
      strlen(name) > PRESENCE_ID_MAX)
    return NULL;
  return presence__rshards_is(s) ? presence__rshards_sub(s, 0) : s;
}

int presence_redis_origin_claim(presence_store_t *s, const char *name,
                                presence_redis_origin_claim_cb done,
                                void *ud) {
  presence_store_t *s0 = origin_shard(s, name);
  if (!s0 || !done) return PRESENCE_EINVAL;
  const presence_allocator_t *a = presence__redis_allocator(s);
  oclaim_call_t *c = presence__malloc(a, sizeof *c);
  if (!c) return PRESENCE_ENOMEM;
  c->a = a;
  c->done = done;
  c->ud = ud;
  const char *args[] = {name};
  int rc = presence__redis_op(s0, "oclaim", 1, args, on_oclaim, c);
  if (rc) presence__free(a, c);
  return rc;
}

int presence_redis_origin_hold(presence_store_t *s, const char *name,
                               const presence_redis_origin_notice_t *nt,
                               void (*done)(void *ud, int status),
                               void *ud) {
  presence_store_t *s0 = origin_shard(s, name);
  if (!s0 || !nt || !nt->session_id || !*nt->session_id || !nt->channel ||
      !*nt->channel)
    return PRESENCE_EINVAL;
  const presence_allocator_t *a = presence__redis_allocator(s);
  ohold_call_t *c = presence__malloc(a, sizeof *c);
  if (!c) return PRESENCE_ENOMEM;
  c->a = a;
  c->done = done;
  c->ud = ud;
  const char *args[] = {name, nt->session_id, nt->channel,
                        nt->code ? nt->code : "",
                        nt->message ? nt->message : ""};
  int rc = presence__redis_op(s0, "ohold", 5, args, on_ohold, c);
  if (rc) presence__free(a, c);
  return rc;
}

int presence_redis_origin_took(presence_store_t *s, const char *name,
                               const char *last) {
  presence_store_t *s0 = origin_shard(s, name);
  if (!s0 || !last || !*last) return PRESENCE_EINVAL;
  const char *args[] = {name, last};
  return presence__redis_op(s0, "otook", 2, args, on_orelease, NULL);
}

int presence_redis_origin_release(presence_store_t *s, const char *name,
                                  uint64_t counter) {
  presence_store_t *s0 = origin_shard(s, name);
  if (!s0 || !counter) return PRESENCE_EINVAL;
  char n[24];
  snprintf(n, sizeof n, "%llu", (unsigned long long)counter);
  const char *args[] = {name, n};
  return presence__redis_op(s0, "orelease", 2, args, on_orelease, NULL);
}
