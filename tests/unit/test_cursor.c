/* SPDX-License-Identifier: MIT */
/*
 * Log cursors (src/core/cursor.c): the text a client carries in
 * Last-Event-ID, a webhook lease and presencectl watch.
 *
 * With one log (the embedded store) the text is the decimal sequence
 * number, as before cursors existed. With several logs (the Redis store in
 * shards) it is "c" + base64url of varints; here the embedded store is given
 * a view of three logs (log_count / log_last_seq_of over fixed positions)
 * so that text, the choice of the next log and the lag are checked without
 * a Redis. The real sharded store is tested on a real Redis Cluster by
 * tests/integration/test_redis_rcluster.py.
 */
#include "helpers.h"

#include "presence_store.h"

typedef struct fixture {
  fake_clock_t clock;
  counting_alloc_t alloc;
  presence_t *p;
  presence_store_ops_t ops; /* the memory store's, with three logs */
  presence_allocator_t a;   /* the store keeps a pointer to it */
} fixture_t;

static uint64_t three_last[3];

static uint32_t three_count(presence_store_t *s) {
  (void)s;
  return 3;
}

static uint64_t three_last_seq_of(presence_store_t *s, uint32_t log) {
  (void)s;
  return log < 3 ? three_last[log] : 0;
}

static fixture_t *make(void) {
  fixture_t *f = calloc(1, sizeof(*f));
  presence_options_t o;
  test_options(&o, &f->clock, 1000, &f->alloc);
  o.instance_id = "test-1";
  assert_int_equal(presence_new(&o, &f->p), 0);
  return f;
}

static void destroy(fixture_t *f) {
  presence_free(f->p);
  assert_int_equal(f->alloc.live, 0); /* nothing leaked */
  free(f);
}

static void one_log_text_is_the_sequence_number(void **state) {
  (void)state;
  fixture_t *f = make();
  assert_int_equal(presence_log_count(f->p), 1);
  assert_int_equal(
      presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL), 0);
  presence_cursor_t *c;
  char text[PRESENCE_CURSOR_TEXT_MAX];
  /* No text: the newest event (a connect is two). */
  assert_int_equal(presence_cursor_new(f->p, NULL, 0, &c), 0);
  assert_int_equal(presence_cursor_format(c, text, sizeof text), 1);
  assert_string_equal(text, "2");
  assert_int_equal(presence_cursor_next(c, &(uint32_t){0}), 0);
  presence_cursor_free(c);
  /* A number reads back as itself, up to 2^64 - 1. */
  const char *max = "18446744073709551615";
  assert_int_equal(presence_cursor_new(f->p, max, strlen(max), &c), 0);
  assert_int_equal(presence_cursor_format(c, text, sizeof text), 20);
  assert_string_equal(text, max);
  assert_int_equal(presence_cursor_format(c, text, 20), PRESENCE_EINVAL);
  presence_cursor_free(c);
  /* Behind the log: the next read is there, and the lag counts it. */
  assert_int_equal(presence_cursor_new(f->p, "0", 1, &c), 0);
  assert_int_equal(presence_cursor_lag(c), 2);
  uint32_t log = 9;
  assert_int_equal(presence_cursor_next(c, &log), 1);
  assert_int_equal(log, 0);
  presence_cursor_set(c, 0, 2);
  assert_int_equal(presence_cursor_lag(c), 0);
  presence_cursor_free(c);
  /* Not a cursor of one log. */
  const char *bad[] = {"", "x", "-1", "1.5", " 1", "18446744073709551616",
                       "cAQ", "00000000000000000000001"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_int_equal(presence_cursor_new(f->p, bad[i], strlen(bad[i]), &c),
                     PRESENCE_EINVAL);
  destroy(f);
}

/* The embedded store's ops, seen as three logs (positions three_last). */
static void as_three_logs(fixture_t *f, presence_store_t *s) {
  f->ops = *s->ops;
  f->ops.log_count = three_count;
  f->ops.log_last_seq_of = three_last_seq_of;
  s->ops = &f->ops;
}

static fixture_t *make_three(presence_store_t **store) {
  fixture_t *f = calloc(1, sizeof(*f));
  presence_options_t o;
  test_options(&o, &f->clock, 1000, &f->alloc);
  o.instance_id = "test-1";
  f->a = o.allocator;
  presence_store_t *s = presence_store_memory_new(&f->a);
  assert_non_null(s);
  as_three_logs(f, s);
  o.store = s;
  assert_int_equal(presence_new(&o, &f->p), 0);
  *store = s;
  return f;
}

static void three_logs_round_trip(void **state) {
  (void)state;
  presence_store_t *s;
  fixture_t *f = make_three(&s);
  assert_int_equal(presence_log_count(f->p), 3);
  three_last[0] = 5, three_last[1] = 0, three_last[2] = UINT64_MAX;
  presence_cursor_t *c, *d;
  char text[PRESENCE_CURSOR_TEXT_MAX];
  assert_int_equal(presence_cursor_new(f->p, NULL, 0, &c), 0);
  assert_int_equal(presence_cursor_pos(c, 0), 5);
  assert_int_equal(presence_cursor_pos(c, 2), UINT64_MAX);
  int len = presence_cursor_format(c, text, sizeof text);
  /* "c", then varints 3, 5, 0 and ten bytes for 2^64 - 1: 13 bytes, 18
   * characters of base64url without padding. */
  assert_int_equal(len, 19);
  assert_int_equal(text[0], 'c');
  assert_int_equal(presence_cursor_new(f->p, text, (size_t)len, &d), 0);
  for (uint32_t i = 0; i < 3; i++)
    assert_int_equal(presence_cursor_pos(d, i), presence_cursor_pos(c, i));
  presence_cursor_free(d);
  /* "0": the start of every log. Another number means nothing here. */
  assert_int_equal(presence_cursor_new(f->p, "0", 1, &d), 0);
  for (uint32_t i = 0; i < 3; i++) assert_int_equal(presence_cursor_pos(d, i), 0);
  presence_cursor_copy(d, c);
  assert_int_equal(presence_cursor_pos(d, 0), 5);
  presence_cursor_free(d);
  assert_int_equal(presence_cursor_new(f->p, "5", 1, &d), PRESENCE_EINVAL);
  /* Altered texts are refused, never misread: a character changed to one
   * outside the alphabet, cut short, one more character, trailing bits. */
  char bad[PRESENCE_CURSOR_TEXT_MAX + 8];
  snprintf(bad, sizeof bad, "%s", text);
  bad[3] = '=';
  assert_int_equal(presence_cursor_new(f->p, bad, strlen(bad), &d),
                   PRESENCE_EINVAL);
  assert_int_equal(presence_cursor_new(f->p, text, (size_t)len - 2, &d),
                   PRESENCE_EINVAL);
  snprintf(bad, sizeof bad, "%sA", text);
  assert_int_equal(presence_cursor_new(f->p, bad, strlen(bad), &d),
                   PRESENCE_EINVAL);
  snprintf(bad, sizeof bad, "%s", text);
  bad[len - 1] = 'B'; /* the last character's unused low bits set */
  assert_int_equal(presence_cursor_new(f->p, bad, strlen(bad), &d),
                   PRESENCE_EINVAL);
  /* A cursor of two logs ("c" + varints 2, 1, 1 = AgEB). */
  assert_int_equal(presence_cursor_new(f->p, "cAgEB", 5, &d), PRESENCE_EINVAL);
  assert_int_equal(presence_cursor_new(f->p, "cAwEBAQ", 7, &d), 0);
  assert_int_equal(presence_cursor_pos(d, 1), 1);
  presence_cursor_free(d);
  presence_cursor_free(c);
  destroy(f);
}

static void next_takes_logs_in_turn(void **state) {
  (void)state;
  presence_store_t *s;
  fixture_t *f = make_three(&s);
  three_last[0] = 10, three_last[1] = 3, three_last[2] = 7;
  presence_cursor_t *c;
  assert_int_equal(presence_cursor_new(f->p, "0", 1, &c), 0);
  assert_int_equal(presence_cursor_lag(c), 20);
  /* Each log with events in turn, none twice in a row while another has
   * some: a busy log does not starve the others. */
  uint32_t log, seen[3] = {0};
  for (int k = 0; k < 3; k++) {
    assert_int_equal(presence_cursor_next(c, &log), 1);
    seen[log]++;
  }
  assert_int_equal(seen[0] + seen[1] + seen[2], 3);
  assert_true(seen[0] == 1 && seen[1] == 1 && seen[2] == 1);
  /* Up to date in 0 and 2; log 1 ahead of what this instance has seen (a
   * cursor of another instance): read last, to let the store tell. */
  presence_cursor_set(c, 0, 10);
  presence_cursor_set(c, 1, 9);
  presence_cursor_set(c, 2, 5);
  assert_int_equal(presence_cursor_next(c, &log), 1);
  assert_int_equal(log, 2);
  presence_cursor_set(c, 2, 7);
  assert_int_equal(presence_cursor_lag(c), 0);
  assert_int_equal(presence_cursor_next(c, &log), 1);
  assert_int_equal(log, 1);
  presence_cursor_set(c, 1, 3);
  assert_int_equal(presence_cursor_next(c, &log), 0);
  presence_cursor_free(c);
  destroy(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(one_log_text_is_the_sequence_number),
      cmocka_unit_test(three_logs_round_trip),
      cmocka_unit_test(next_takes_logs_in_turn),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
