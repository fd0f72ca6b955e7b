/*
 * libFuzzer harness for the Redis store's reply handling (src/store/redis.c).
 *
 * Input: bytes as Redis would send them (RESP), parsed by hiredis's own
 * reader exactly as the store's connection parses them, then every reply is
 * handed to the store's log-entry decoder both as an XRANGE answer (an array
 * of entries) and as a script answer ({code, payload, entry, entry, ...}).
 * Checks, besides memory errors: a decoded event has a known type, status
 * values in range, and an id list whose every element is a string inside
 * the allocated buffer.
 */
#include "store/redis_decode.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

static void check_event(const presence_event_t *ev, const char *ids_buf) {
  if ((unsigned)ev->type >= PRESENCE_EV_COUNT_) abort();
  if (ev->n_session_ids && !ev->session_ids) abort();
  for (size_t i = 0; i < ev->n_session_ids; i++) {
    if (!ids_buf || ev->session_ids[i] < ids_buf) abort();
    (void)strlen(ev->session_ids[i]); /* terminated, and readable */
  }
  const char *strs[] = {ev->session_id, ev->user_id, ev->meta, ev->instance_id};
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
    if (strs[i]) (void)strlen(strs[i]);
}

static void decode_all(const redisReply *r, size_t from) {
  if (r->type != REDIS_REPLY_ARRAY) return;
  for (size_t i = from; i < r->elements; i++) {
    presence_event_t ev;
    char *buf = NULL;
    const char **ids = NULL;
    int rc = presence__redis_decode_event(r->element[i], "fuzz-self", &ev, &buf,
                                          &ids);
    if (rc == 0)
      check_event(&ev, buf);
    else if (rc != PRESENCE_ESTORE && rc != PRESENCE_ENOMEM)
      abort();
    free(buf);
    free(ids);
  }
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (has_huge_header(data, size)) return 0;
  redisReader *rd = redisReaderCreate();
  if (!rd) return 0;
  if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
    for (int n = 0; n < 64; n++) {
      void *reply = NULL;
      if (redisReaderGetReply(rd, &reply) != REDIS_OK || !reply) break;
      const redisReply *r = reply;
      decode_all(r, 0); /* XRANGE / XREAD entries */
      decode_all(r, 2); /* a script's {code, payload, entries...} */
      freeReplyObject(reply);
    }
  }
  redisReaderFree(rd);
  return 0;
}
