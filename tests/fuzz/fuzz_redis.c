/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the Redis store's reply handling (src/store/redis.c).
 *
 * Input: bytes as Redis would send them (RESP), parsed by hiredis's own
 * reader exactly as the store's connection parses them, then every reply is
 * handed to the store's log decoder both as an XRANGE answer (an array of
 * entries) and as a script answer ({code, payload, last seq, count,
 * packed}). Checks, besides memory errors: a decoded event has a known
 * type, status values in range, readable strings, and sequence numbers
 * that follow each other.
 */
#include "store/redis_decode.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

static void check_events(const presence__redis_events_t *evs, size_t from) {
  for (size_t i = from; i < evs->n; i++) {
    const presence_event_t *ev = &evs->ev[i];
    if ((unsigned)ev->type >= PRESENCE_EV_COUNT_) abort();
    if (ev->from > PRESENCE_IDLE || ev->to > PRESENCE_IDLE) abort();
    if (ev->n_session_ids || ev->session_ids) abort();
    if (i > from && ev->seq != ev[-1].seq + 1) abort();
    const char *strs[] = {ev->session_id, ev->user_id, ev->meta,
                          ev->instance_id};
    for (size_t k = 0; k < sizeof strs / sizeof strs[0]; k++)
      if (strs[k]) (void)strlen(strs[k]);
  }
}

static void decode_entries(redisReply *r) {
  if (r->type != REDIS_REPLY_ARRAY) return;
  presence__redis_events_t evs = {0};
  for (size_t i = 0; i < r->elements; i++) {
    size_t before = evs.n;
    int rc = presence__redis_decode_entry(r->element[i], "fuzz-self", &evs);
    if (rc == 0)
      check_events(&evs, before);
    else if (rc != PRESENCE_ESTORE && rc != PRESENCE_ENOMEM)
      abort();
    else if (evs.n != before)
      abort(); /* a refused entry appends nothing */
  }
  free(evs.ev);
}

static void decode_script(redisReply *r) {
  presence__redis_events_t evs = {0};
  int rc = presence__redis_decode_reply(r, "fuzz-self", &evs);
  if (rc == 0)
    check_events(&evs, 0);
  else if (rc != PRESENCE_ESTORE && rc != PRESENCE_ENOMEM)
    abort();
  else if (evs.n != 0)
    abort(); /* a refused reply appends nothing */
  free(evs.ev);
}

/* hiredis 0.14's reader allocates an aggregate's element array as soon as
 * it reads its count, with no limit: a count of 300 million is an
 * out-of-memory in the reader, not in our code, and Redis (which the store
 * trusts) never sends one. Such inputs are skipped. */
static int has_huge_header(const uint8_t *d, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if ((d[i] == '*' || d[i] == '$') &&
        (i == 0 || (i >= 2 && d[i - 2] == '\r' && d[i - 1] == '\n'))) {
      unsigned long v = 0;
      for (size_t j = i + 1; j < n && d[j] >= '0' && d[j] <= '9'; j++) {
        v = v * 10 + (unsigned long)(d[j] - '0');
        if (v > 1000000) return 1;
      }
    }
  }
  return 0;
}

/* Parse data as a stream of replies and hand each to fn. */
static void each_reply(const uint8_t *data, size_t size,
                       void (*fn)(redisReply *)) {
  redisReader *rd = redisReaderCreate();
  if (!rd) return;
  if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
    for (int n = 0; n < 64; n++) {
      void *reply = NULL;
      if (redisReaderGetReply(rd, &reply) != REDIS_OK || !reply) break;
      fn(reply);
      freeReplyObject(reply);
    }
  }
  redisReaderFree(rd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (has_huge_header(data, size)) return 0;
  /* The decoder ends strings in place (the store owns its replies), so
   * each view parses the bytes anew. */
  each_reply(data, size, decode_entries); /* XRANGE / XREAD entries */
  each_reply(data, size, decode_script);  /* a script's reply */
  return 0;
}
