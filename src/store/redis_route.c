/* SPDX-License-Identifier: MIT */
/*
 * Interest-based delivery between the workers of one machine (presenced
 * --workers N, issue 20). The reading worker's store decodes each log entry
 * it reads (it does for itself anyway) and passes each follower only the
 * events that follower's interest counts (redis_interest.c), instead of
 * every byte of every read: a worker then decodes and dispatches the
 * events its own clients watch, not the whole machine's, and is not woken
 * for reads that hold nothing for it. The reader skips, for its own host,
 * what its own interest does not count, the same way.
 *
 * What a follower gets is still an XREAD reply, so its store takes it as
 * before (take_xread), with three kinds of log entries:
 *   - runs of events cut from real entries: the events a follower wants
 *     that sit next to each other in one entry become one entry of their
 *     own, whose id names the last one's sequence number ("<seq>-0") and
 *     whose count is the run's length: the follower numbers them exactly as
 *     the whole entry would have (seq = last - count + 1 + i);
 *   - position markers, {id, {"k", "0"}}, never in the log: one first, at
 *     the id the read started after (the follower's sync check compares
 *     it to what its own reader read), one last, at the last entry read
 *     (where the follower resumes if the feed ends: never inside an entry
 *     it was given part of, so nothing comes twice);
 *   - nothing else: the kick stream is copied whole.
 * A follower with nothing in a read gets nothing, except a marker pair at
 * most every ROUTE_MARK_MS, so its position (and last_seq) stays near the
 * log's end and a feed that ends costs it at most that much re-reading.
 */
#include "store/redis_route.h"
#include "store/redis_interest.h"
#include "store/redis_resp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE_MARK_MS 100

typedef struct part {
  char *d;
  size_t len, cap;
  uint32_t entries;
  uint64_t last_seq; /* of the last entry added */
  bool events;       /* holds events: sent */
  bool failed;       /* out of memory: the follower is cut off */
} part_t;

struct presence__route {
  const presence_allocator_t *a;
  presence_redis_interest_t *in;
  uint32_t self, n;
  part_t *parts;
  uint64_t *sent_ms;
  part_t kicks;
  char from[48];
  /* Per entry: its blob (the reply's: unpacking leaves it as read), the
   * events' ends, keys and whether they are keyed, the reader's wants. */
  const char *blob;
  size_t *ends;
  size_t header_len; /* the entry's header: every run starts with it */
  uint64_t *keys;
  uint8_t *keyed, *want;
  size_t ev_cap;
  size_t base; /* the entry's first event in evs */
};

presence__route_t *presence__route_new(const presence_allocator_t *a,
                                       presence_redis_interest_t *in,
                                       uint32_t self, uint32_t followers) {
  if (!in || followers + 1 > presence__interest_workers(in)) return NULL;
  presence__route_t *r = presence__malloc(a, sizeof *r);
  if (!r) return NULL;
  memset(r, 0, sizeof *r);
  r->a = a;
  r->in = in;
  r->self = self;
  r->n = followers;
  r->parts = presence__malloc(a, followers * sizeof *r->parts);
  r->sent_ms = presence__malloc(a, followers * sizeof *r->sent_ms);
  if (!r->parts || !r->sent_ms) {
    presence__route_free(r);
    return NULL;
  }
  memset(r->parts, 0, followers * sizeof *r->parts);
  memset(r->sent_ms, 0, followers * sizeof *r->sent_ms);
  return r;
}

void presence__route_free(presence__route_t *r) {
  if (!r) return;
  for (uint32_t i = 0; r->parts && i < r->n; i++)
    presence__free(r->a, r->parts[i].d);
  presence__free(r->a, r->parts);
  presence__free(r->a, r->sent_ms);
  presence__free(r->a, r->kicks.d);
  presence__free(r->a, r->ends);
  presence__free(r->a, r->keys);
  presence__free(r->a, r->keyed);
  presence__free(r->a, r->want);
  presence__free(r->a, r);
}

/* ---- building a follower's part ------------------------------------------ */

static void put(const presence_allocator_t *a, part_t *p, const char *s,
                size_t n) {
  if (p->failed) return;
  if (p->len + n > p->cap) {
    size_t cap = p->cap ? p->cap : 4096;
    while (cap < p->len + n) cap *= 2;
    char *d = presence__realloc(a, p->d, cap);
    if (!d) {
      p->failed = true;
      return;
    }
    p->d = d;
    p->cap = cap;
  }
  memcpy(p->d + p->len, s, n);
  p->len += n;
}

/* A bulk string's head, $<n>\r\n: its n bytes and \r\n follow. */
static void put_bulk_head(const presence_allocator_t *a, part_t *p, size_t n) {
  char h[24];
  put(a, p, h, presence__resp_head(h, '$', n));
}

/* A bulk string: $<n>\r\n<bytes>\r\n. */
static void put_bulk(const presence_allocator_t *a, part_t *p, const char *s,
                     size_t n) {
  put_bulk_head(a, p, n);
  put(a, p, s, n);
  put(a, p, "\r\n", 2);
}

static void put_marker(const presence_allocator_t *a, part_t *p,
                       const char *id) {
  put(a, p, "*2\r\n", 4);
  put_bulk(a, p, id, strlen(id));
  put(a, p, "*2\r\n$1\r\nk\r\n$1\r\n0\r\n", 18);
  p->entries++;
}

/* Events [from, to) of the entry being routed, as one entry of their own. */
static void put_run(presence__route_t *r, part_t *p,
                    const presence__redis_events_t *evs, size_t from,
                    size_t to) {
  char id[32], count[24];
  uint64_t seq = evs->ev[r->base + to - 1].seq;
  size_t il = presence__resp_dec(id, seq);
  id[il++] = '-';
  id[il++] = '0';
  size_t cl = presence__resp_dec(count, to - from);
  size_t start = from ? r->ends[from - 1] : r->header_len;
  size_t n = r->ends[to - 1] - start;
  put(r->a, p, "*2\r\n", 4);
  put_bulk(r->a, p, id, il);
  put(r->a, p, "*4\r\n$1\r\nk\r\n", 11);
  put_bulk(r->a, p, count, cl);
  put(r->a, p, "$1\r\np\r\n", 7);
  /* The entry's header (time, epoch, caller), then the run's events: a
   * bulk string of both. */
  put_bulk_head(r->a, p, r->header_len + n);
  put(r->a, p, r->blob, r->header_len);
  put(r->a, p, r->blob + start, n);
  put(r->a, p, "\r\n", 2);
  p->entries++;
  p->last_seq = seq;
  p->events = true;
}

/* A reply as RESP (the kick stream: strings and arrays). */
static void put_reply(const presence_allocator_t *a, part_t *p,
                      const redisReply *x) {
  char h[32];
  int hl;
  switch (x->type) {
  case REDIS_REPLY_ARRAY:
    put(a, p, h, presence__resp_head(h, '*', x->elements));
    for (size_t i = 0; i < x->elements; i++) put_reply(a, p, x->element[i]);
    break;
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
    put_bulk(a, p, x->str, x->len);
    break;
  case REDIS_REPLY_INTEGER:
    hl = snprintf(h, sizeof h, ":%lld\r\n", x->integer);
    put(a, p, h, (size_t)hl);
    break;
  default:
    put(a, p, "*-1\r\n", 5);
  }
}

/* ---- one read ------------------------------------------------------------- */

void presence__route_begin(presence__route_t *r, const char *from) {
  snprintf(r->from, sizeof r->from, "%s", from[0] ? from : "0-0");
  r->kicks.len = 0;
  r->kicks.failed = false;
  for (uint32_t i = 0; i < r->n; i++) {
    part_t *p = &r->parts[i];
    p->len = 0;
    p->entries = 0;
    p->last_seq = 0;
    p->events = p->failed = false;
    put_marker(r->a, p, r->from);
  }
}

static bool grow(presence__route_t *r, size_t count) {
  if (count > r->ev_cap) {
    size_t *e = presence__realloc(r->a, r->ends, count * sizeof *e);
    if (e) r->ends = e;
    uint64_t *k = presence__realloc(r->a, r->keys, count * sizeof *k);
    if (k) r->keys = k;
    uint8_t *d = presence__realloc(r->a, r->keyed, count);
    if (d) r->keyed = d;
    uint8_t *w = presence__realloc(r->a, r->want, count);
    if (w) r->want = w;
    if (!e || !k || !d || !w) return false;
    r->ev_cap = count;
  }
  return true;
}

static bool wants(const presence__route_t *r, uint32_t slot, size_t j,
                  bool all) {
  return all || !r->keyed[j] || presence__interest_has(r->in, slot, r->keys[j]);
}

int presence__route_entry(presence__route_t *r, redisReply *e,
                          const char *self, presence__redis_events_t *evs,
                          const uint8_t **want) {
  *want = NULL;
  /* The blob and the count, found as decode_entry finds them; anything
   * else is left to it to refuse. */
  redisReply *f = e->type == REDIS_REPLY_ARRAY && e->elements == 2
                      ? e->element[1]
                      : NULL;
  const redisReply *k = NULL, *pk = NULL;
  for (size_t i = 0; f && f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements;
       i += 2) {
    const redisReply *name = f->element[i], *v = f->element[i + 1];
    if (name->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
        name->len != 1)
      continue;
    if (name->str[0] == 'k') k = v;
    if (name->str[0] == 'p') pk = v;
  }
  size_t count = k ? strtoul(k->str, NULL, 10) : 0;
  if (!pk || !count || count > pk->len || !grow(r, count)) {
    /* Malformed (refused below, as by any reader), or no memory to route
     * it: every follower reads the log itself rather than miss it. */
    if (pk && count && count <= pk->len)
      for (uint32_t i = 0; i < r->n; i++) r->parts[i].failed = true;
    return presence__redis_decode_entry(e, self, evs);
  }
  r->blob = pk->str;
  size_t base = evs->n;
  evs->ends = r->ends;
  int rc = presence__redis_decode_entry(e, self, evs);
  evs->ends = NULL;
  if (rc) return rc;
  count = evs->n - base;
  r->base = base;
  r->header_len = evs->header_len;
  for (size_t j = 0; j < count; j++)
    r->keyed[j] = (uint8_t)presence__interest_key(&evs->ev[base + j],
                                                   &r->keys[j]);
  bool all = presence__interest_all(r->in, r->self);
  for (size_t j = 0; j < count; j++) r->want[j] = wants(r, r->self, j, all);
  *want = r->want;
  for (uint32_t i = 0; i < r->n; i++) {
    part_t *p = &r->parts[i];
    if (p->failed) continue;
    all = presence__interest_all(r->in, i + 1);
    for (size_t j = 0; j < count;) {
      size_t from = j;
      while (j < count && wants(r, i + 1, j, all)) j++;
      if (j > from)
        put_run(r, p, evs, from, j);
      else
        j++;
    }
  }
  return 0;
}

void presence__route_kicks(presence__route_t *r, const redisReply *stream) {
  put_reply(r->a, &r->kicks, stream);
}

void presence__route_end(presence__route_t *r, presence__rfeed_t *feed,
                         const char *log_key, const char *last,
                         uint64_t now_ms) {
  bool kicks = r->kicks.len > 0;
  uint64_t last_seq = strtoull(last, NULL, 10);
  for (uint32_t i = 0; i < r->n; i++) {
    part_t *p = &r->parts[i];
    if (!presence__rfeed_live(feed, i)) continue;
    if (p->failed || (kicks && r->kicks.failed)) {
      presence__rfeed_cut(feed, i);
      continue;
    }
    if (!p->events && !kicks && now_ms - r->sent_ms[i] < ROUTE_MARK_MS)
      continue;
    if (last_seq > p->last_seq) put_marker(r->a, p, last);
    if (p->failed) {
      presence__rfeed_cut(feed, i);
      continue;
    }
    char head[160];
    int hl = snprintf(head, sizeof head, "*%d\r\n*2\r\n$%zu\r\n%s\r\n*%u\r\n",
                      kicks ? 2 : 1, strlen(log_key), log_key, p->entries);
    uv_buf_t bufs[3] = {uv_buf_init(head, (unsigned)hl),
                        uv_buf_init(p->d, (unsigned)p->len),
                        uv_buf_init(r->kicks.d, (unsigned)r->kicks.len)};
    presence__rfeed_send(feed, i, bufs, kicks ? 3 : 2);
    r->sent_ms[i] = now_ms;
  }
}

int presence__route_marker(const redisReply *e, uint64_t *seq) {
  if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
      e->element[0]->type != REDIS_REPLY_STRING ||
      e->element[1]->type != REDIS_REPLY_ARRAY)
    return 0;
  const redisReply *f = e->element[1];
  if (f->elements != 2 || f->element[0]->type != REDIS_REPLY_STRING ||
      f->element[1]->type != REDIS_REPLY_STRING || f->element[0]->len != 1 ||
      f->element[0]->str[0] != 'k' || strcmp(f->element[1]->str, "0") != 0)
    return 0;
  *seq = strtoull(e->element[0]->str, NULL, 10);
  return 1;
}
