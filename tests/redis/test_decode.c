/* SPDX-License-Identifier: MIT */
/*
 * The Redis store's log format, decoded without a server: what an entry
 * written by the script turns into, and that anything else is refused
 * whole (an instance must never report half of a malformed entry).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/redis_decode.h"

/* A reply as hiredis builds it: owned strings, NUL after each. */
static redisReply *str(const char *s) {
  redisReply *r = calloc(1, sizeof *r);
  r->type = REDIS_REPLY_STRING;
  r->len = strlen(s);
  r->str = strdup(s);
  return r;
}

static redisReply *arr(size_t n, ...) {
  redisReply *r = calloc(1, sizeof *r);
  r->type = REDIS_REPLY_ARRAY;
  r->elements = n;
  r->element = calloc(n, sizeof *r->element);
  va_list ap;
  va_start(ap, n);
  for (size_t i = 0; i < n; i++)
    r->element[i] = va_arg(ap, redisReply *);
  va_end(ap);
  return r;
}

static redisReply *entry(const char *id, const char *k, const char *p) {
  return arr(2, str(id), arr(4, str("k"), str(k), str("p"), str(p)));
}

/* What the script writes for a connect of a new user (two events), then a
 * reaper's session.disconnected and cleanup of a dead instance. */
#define CONNECT                                                               \
  "0 1 0 1 1 1764320000001 77 - 6:inst-a - 2:s1 5:alice 12:{\"d\":\"a b\t\"} " \
  "3 1 0 1 1 1764320000001 77 - 6:inst-a - 2:s1 5:alice - "
#define REAPED                                                                \
  "1 8 1 0 4 1764320000002 78 - 6:victim 6:inst-b 2:s9 5:carol - "           \
  "6 8 0 0 0 1764320000002 78 100000 6:victim 6:inst-b - - - "

static void an_entry_becomes_its_events(void **state) {
  (void)state;
  redisReply *e = entry("12-0", "2", CONNECT);
  presence__redis_events_t evs = {0};
  assert_int_equal(presence__redis_decode_entry(e, "inst-a", &evs), 0);
  assert_int_equal(evs.n, 2);
  const presence_event_t *c = &evs.ev[0], *u = &evs.ev[1];
  /* Named by the last event's number: the first is one before it. */
  assert_int_equal(c->seq, 11);
  assert_int_equal(u->seq, 12);
  assert_int_equal(c->type, PRESENCE_EV_SESSION_CONNECTED);
  assert_int_equal(c->reason, PRESENCE_REASON_CONNECT);
  assert_int_equal(c->from, PRESENCE_OFFLINE);
  assert_int_equal(c->to, PRESENCE_ONLINE);
  assert_int_equal(c->ts_ms, 1764320000001);
  assert_int_equal(c->epoch, 77);
  assert_string_equal(c->instance_id, "inst-a");
  assert_string_equal(c->session_id, "s1");
  assert_string_equal(c->user_id, "alice");
  /* Spaces, tabs and quotes in meta are kept: strings carry a length. */
  assert_string_equal(c->meta, "{\"d\":\"a b\t\"}");
  assert_int_equal(c->flags, 0); /* emitted by self */
  assert_int_equal(u->type, PRESENCE_EV_USER_ONLINE);
  assert_int_equal(u->user_version, 1);
  assert_null(u->meta);
  free(evs.ev);
  freeReplyObject(e);
}

static void a_reap_is_remote_and_its_cleanup_counts(void **state) {
  (void)state;
  redisReply *e = entry("40-0", "2", REAPED);
  presence__redis_events_t evs = {0};
  assert_int_equal(presence__redis_decode_entry(e, "inst-a", &evs), 0);
  assert_int_equal(evs.n, 2);
  /* The instance is the dead one; the emitter (inst-b) is not us. */
  assert_string_equal(evs.ev[0].instance_id, "victim");
  assert_true(evs.ev[0].flags & PRESENCE_EVENT_REMOTE);
  assert_int_equal(evs.ev[0].reason, PRESENCE_REASON_INSTANCE_LOST);
  assert_int_equal(evs.ev[1].type, PRESENCE_EV_CLEANUP);
  assert_true(evs.ev[1].flags & PRESENCE_EVENT_IDS_OMITTED);
  assert_int_equal(evs.ev[1].n_session_ids, 0);
  assert_null(evs.ev[1].session_id);
  free(evs.ev);
  freeReplyObject(e);
  /* Read by the reaper itself, nothing is remote. */
  e = entry("40-0", "2", REAPED);
  evs = (presence__redis_events_t){0};
  assert_int_equal(presence__redis_decode_entry(e, "inst-b", &evs), 0);
  assert_false(evs.ev[0].flags & PRESENCE_EVENT_REMOTE);
  free(evs.ev);
  freeReplyObject(e);
}

static void entries_append_in_order(void **state) {
  (void)state;
  redisReply *a = entry("12-0", "2", CONNECT), *b = entry("40-0", "2", REAPED);
  presence__redis_events_t evs = {0};
  assert_int_equal(presence__redis_decode_entry(a, "x", &evs), 0);
  assert_int_equal(presence__redis_decode_entry(b, "x", &evs), 0);
  assert_int_equal(evs.n, 4);
  assert_int_equal(evs.ev[1].seq, 12);
  assert_int_equal(evs.ev[2].seq, 39);
  /* The first entry's strings survive the second's (realloc moved the
   * events, not the strings they point to). */
  assert_string_equal(evs.ev[0].user_id, "alice");
  free(evs.ev);
  freeReplyObject(a);
  freeReplyObject(b);
}

static void malformed_entries_are_refused_whole(void **state) {
  (void)state;
  static const struct {
    const char *id, *k, *p;
  } bad[] = {
      {"12-0", "3", CONNECT},  /* fewer events than k */
      {"12-0", "1", CONNECT},  /* bytes left over */
      {"12-1", "2", CONNECT},  /* not an id the script writes */
      {"1-0", "2", CONNECT},   /* numbers below 1 */
      {"12-0", "0", ""},       /* empty */
      {"12-0", "2x", CONNECT}, /* k not a number */
      {" 12-0", "2", CONNECT}, /* a blank before it */
      {"12-0", "+2", CONNECT}, /* a sign */
      {"12-0", "-18446744073709551614", CONNECT}, /* wraps to 2 */
      {"9-0", "1", "0 1 0 1 1 5 7 - 6:inst-a - 2:s1 5:alice - extra "},
      {"9-0", "1", "0 1 0 1 1 5 7 - 6:inst-a - 9:s1 5:alice - "}, /* len */
      {"9-0", "1", "0 1 0 1 1 5 7 - 6:inst-a - 2:s1 5:alice -"},  /* end */
      {"9-0", "1", "60 1 0 1 1 5 7 - 6:inst-a - 2:s1 5:alice - "}, /* type */
      {"9-0", "1", "0 1 0 1 1 99999999999999999999 7 - - - - - - "},
      {"9-0", "1", "0 -1 0 1 1 5 7 - - - - - - "},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    redisReply *e = entry(bad[i].id, bad[i].k, bad[i].p);
    presence__redis_events_t evs = {0};
    int rc = presence__redis_decode_entry(e, "x", &evs);
    if (rc != PRESENCE_ESTORE || evs.n != 0)
      fail_msg("case %zu: rc %d, %zu events", i, rc, evs.n);
    free(evs.ev);
    freeReplyObject(e);
  }
  /* Not an entry at all. */
  redisReply *e = arr(1, str("12-0"));
  presence__redis_events_t evs = {0};
  assert_int_equal(presence__redis_decode_entry(e, "x", &evs), PRESENCE_ESTORE);
  freeReplyObject(e);
  e = arr(2, str("12-0"), arr(2, str("n"), str("3 1 0 1 1 5 7")));
  assert_int_equal(presence__redis_decode_entry(e, "x", &evs), PRESENCE_ESTORE);
  assert_int_equal(evs.n, 0);
  free(evs.ev);
  freeReplyObject(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(an_entry_becomes_its_events),
      cmocka_unit_test(a_reap_is_remote_and_its_cleanup_counts),
      cmocka_unit_test(entries_append_in_order),
      cmocka_unit_test(malformed_entries_are_refused_whole),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
