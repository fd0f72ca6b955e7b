/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the Redis store's reply handling (src/store/redis.c).
 *
 * Input: bytes as Redis would send them (RESP), parsed by the connection
 * layer's own bounded reader (src/store/redis_resp.c) exactly as the store's
 * connections parse them, fed in two pieces; then every reply is
 * handed to the store's log decoder both as an XRANGE answer (an array of
 * entries) and as a script answer ({code, payload, last seq, count,
 * packed}) and as a user query's answer (every field checked). Checks,
 * besides memory errors: a decoded event has a known
 * type, status values in range, readable strings, and sequence numbers
 * that follow each other.
 */
#include "store/redis_decode.h"
#include "store/redis_resp.h"

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
                          ev->instance_id, ev->channel, ev->device,
                          ev->message, ev->emoji};
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
  presence__redis_events_free(&evs);
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
  presence__redis_events_free(&evs);
}

/* Parse data as a stream of replies with the connection layer's reader
 * (the limits small, so that the fuzzer reaches them) and hand each to fn.
 * The bytes are fed in two pieces, split where the input says: a reply cut
 * anywhere must read the same. */
static void each_reply(const uint8_t *data, size_t size,
                       void (*fn)(redisReply *)) {
  presence__resp_reader_t rd;
  const presence_allocator_t *a = presence__default_allocator();
  presence__resp_init(&rd, a, 4096, 256);
  size_t cut = size ? data[0] % (size + 1) : 0;
  int rc = presence__resp_feed(&rd, (const char *)data, cut);
  for (int n = 0; rc >= 0 && n < 64; n++) {
    redisReply *reply = NULL;
    rc = presence__resp_next(&rd, &reply);
    if (rc == 0 && cut < size) {
      rc = presence__resp_feed(&rd, (const char *)data + cut, size - cut);
      cut = size;
      if (rc == 0) rc = presence__resp_next(&rd, &reply);
    }
    if (rc < 0 && rc != PRESENCE_ESTORE && rc != PRESENCE_ENOMEM) abort();
    if (rc <= 0) break;
    fn(reply);
    presence__resp_free(a, reply);
  }
  presence__resp_fini(&rd);
}

/* The user query's checks: any reply is an answer or a store error. */
static void decode_user(redisReply *r) {
  presence_user_info_t info;
  memset(&info, 0, sizeof info);
  int rc = presence__redis_user_reply(r, &info);
  if (rc > 0 || rc < -100) abort();
  if (rc == 0 && info.status > PRESENCE_IDLE) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The decoder ends strings in place (the store owns its replies), so
   * each view parses the bytes anew. */
  each_reply(data, size, decode_entries); /* XRANGE / XREAD entries */
  each_reply(data, size, decode_script);  /* a script's reply */
  each_reply(data, size, decode_user);    /* a user query's reply */
  return 0;
}
