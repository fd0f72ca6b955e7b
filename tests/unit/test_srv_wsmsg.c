/* SPDX-License-Identifier: MIT */
/*
 * The client message decoder's two paths (src/server/wsmsg.c): a plain
 * status change is read without a cJSON tree, everything else through the
 * full decoder. Whatever the input, wsmsg_decode must answer what
 * wsmsg_decode_full answers (result, type, status, the id echoed back, the
 * error code); the short path is only a shortcut. Checked on a table of
 * near misses and on random mutations of status messages; the fuzzer
 * (fuzz_wsmsg) checks the same on its corpus.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/wsmsg.h"

/* Decodes s both ways and fails on any difference; returns whether the
 * short path answered (no tree). */
static int same_both_ways(const uint8_t *s, size_t n) {
  wsmsg_t a, b;
  int ra = wsmsg_decode(s, n, 1000, &a);
  int rb = wsmsg_decode_full(s, n, 1000, &b);
  if (ra != rb || strcmp(a.id, b.id) != 0 ||
      (ra == WSMSG_OK && (a.type != b.type || a.status != b.status)) ||
      (ra != WSMSG_OK && strcmp(a.err_code, b.err_code) != 0))
    fail_msg("%.*s: decode %d type %d status %d id %s err %s, full %d type %d "
             "status %d id %s err %s",
             (int)n, (const char *)s, ra, a.type, a.status, a.id,
             a.err_code ? a.err_code : "-", rb, b.type, b.status, b.id,
             b.err_code ? b.err_code : "-");
  int fast = ra == WSMSG_OK && a.root == NULL;
  if (fast && a.type != WSMSG_STATUS)
    fail_msg("%.*s: no tree, but not a decoded status change", (int)n,
             (const char *)s);
  wsmsg_free(&a);
  wsmsg_free(&b);
  return fast;
}

static int same_str(const char *s) {
  return same_both_ways((const uint8_t *)s, strlen(s));
}

static void test_plain_status_has_no_tree(void **state) {
  (void)state;
  /* What clients send: the short path takes it. */
  assert_true(same_str("{\"type\":\"status\",\"status\":\"idle\"}"));
  assert_true(same_str("{\"type\":\"status\",\"status\":\"online\"}"));
  assert_true(same_str("{\"status\":\"idle\",\"type\":\"status\"}"));
  assert_true(same_str(" {\"type\" : \"status\",\r\n\t\"status\":\"idle\",\"id\""
                       ":\"a-1 /x\"} \n"));
  assert_true(same_str("{\"id\":\"\",\"type\":\"status\",\"status\":\"idle\"}"));
  /* The JavaScript client's: a numeric id between the two. */
  assert_true(same_str("{\"type\":\"status\",\"id\":3,\"status\":\"idle\"}"));
  assert_true(same_str("{\"type\":\"status\",\"id\":0,\"status\":\"idle\"}"));
  assert_true(same_str("{\"type\":\"status\",\"id\":123456789 ,\"status\":"
                       "\"online\"}"));
  wsmsg_t m;
  const char *s = "{\"type\":\"status\",\"status\":\"idle\",\"id\":\"r7\"}";
  assert_int_equal(wsmsg_decode((const uint8_t *)s, strlen(s), 10, &m),
                   WSMSG_OK);
  assert_int_equal(m.type, WSMSG_STATUS);
  assert_int_equal(m.status, PRESENCE_IDLE);
  assert_string_equal(m.id, "\"r7\"");
  wsmsg_free(&m);
}

static void test_near_misses_agree(void **state) {
  (void)state;
  static const char *cases[] = {
      /* errors, each the full decoder's */
      "", "{", "}", "{}", "[]", "null", "\"status\"",
      "{\"type\":\"status\"}",
      "{\"type\":\"status\",\"status\":\"offline\"}",
      "{\"type\":\"status\",\"status\":\"away\"}",
      "{\"type\":\"status\",\"status\":1}",
      "{\"type\":\"status\",\"status\":\"idle\",\"status\":\"online\"}",
      "{\"type\":\"status\",\"type\":\"status\",\"status\":\"idle\"}",
      "{\"type\":\"status\",\"status\":\"idle\"} x",
      "{\"type\":\"status\",\"status\":\"idle\"}{}",
      "{\"type\":\"status\",\"status\":\"idle\",}",
      "{\"type\":\"status\",\"status\":\"idle\"",
      "{\"type\":\"status\" \"status\":\"idle\"}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":true}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":{}}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":"
      "\"0123456789012345678901234567890123456789012345678901234567890\"}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":"
      "\"01234567890123456789012345678901234567890123456789012345678901\"}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":"
      "\"012345678901234567890123456789012345678901234567890123456789012\"}",
      "{\"type\":\"Status\",\"status\":\"idle\"}",
      "{\"type\":\"status\",\"status\":\"idl\\u0065\"}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":\"a\\u0000\"}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":\"\\u00e9\"}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":\"\xc3\xa9\"}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":\"a\tb\"}",
      "\x01{\"type\":\"status\",\"status\":\"idle\"}",
      "{\"type\":\"status\",\"status\":\"idle\"}\x01",
      "{\"type\":\"status\",\"status\":\"idle\",\"x\":1}",
      "{\"type\":\"status\",\"status\":\"idle\",\"\":\"\"}",
      /* other types: the full decoder's */
      "{\"type\":\"ping\"}", "{\"type\":\"ping\",\"id\":7}",
      "{\"type\":\"subscribe\",\"users\":[\"a\"]}",
      "{\"type\":\"leave\",\"channel\":\"room\"}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":7}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":-1.5e3}",
      /* numeric ids the short path leaves to the full decoder */
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":01}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":00}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":-1}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":7.5}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":7.}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":7e2}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":7E2}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":1234567890}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":99999999999}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":7x}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":7,\"id\":8}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":\"a\",\"id\":\"b\"}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":\"a}",
      "{\"type\":\"status\",\"status\":\"online\",\"status\":\"online\"}",
      "{\"types\":\"status\",\"status\":\"idle\"}",
      "{\"type\":\"statuses\",\"status\":\"idle\"}",
      "{\"type\":\"status\",\"status\":\"onlinex\"}",
      "{\"type\":\"status\",\"status\":\"idle\",\"ids\":1}",
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    same_str(cases[i]);
  /* With a NUL byte inside: not a C string. */
  static const uint8_t nul[] = "{\"type\":\"status\",\"status\":\"idle\0\"}";
  same_both_ways(nul, sizeof nul - 1);
}

/* Random bytes changed, inserted or dropped in status messages: any
 * answer, as long as both paths give it. */
static void test_mutations_agree(void **state) {
  (void)state;
  static const char *seeds[] = {
      "{\"type\":\"status\",\"status\":\"idle\"}",
      " { \"id\" : \"q-17\" , \"status\" : \"online\" , \"type\" : \"status\" }",
      "{\"type\":\"status\",\"id\":40,\"status\":\"online\"}",
  };
  static const char alphabet[] = "{}[]\":, \t\r\n\\u0e1-typesaidlonfx\x7f\x80\x01";
  uint32_t x = 12345;
  size_t fast = 0, runs = 0;
  for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
    for (int round = 0; round < 20000; round++) {
      uint8_t buf[128];
      size_t n = strlen(seeds[k]);
      memcpy(buf, seeds[k], n);
      int edits = 1 + round % 3;
      for (int e = 0; e < edits; e++) {
        x = x * 1103515245u + 12345u;
        size_t at = (x >> 8) % (n + 1);
        uint8_t ch = (uint8_t)alphabet[(x >> 20) % (sizeof alphabet - 1)];
        switch ((x >> 4) % 3) {
        case 0: /* replace */
          if (at < n) buf[at] = ch;
          break;
        case 1: /* insert */
          if (n < sizeof buf - 1) {
            memmove(buf + at + 1, buf + at, n - at);
            buf[at] = ch;
            n++;
          }
          break;
        default: /* drop */
          if (at < n) {
            memmove(buf + at, buf + at + 1, n - at - 1);
            n--;
          }
        }
      }
      fast += (size_t)same_both_ways(buf, n);
      runs++;
    }
  }
  /* Some mutations keep the shape (whitespace, the id's letters): the
   * short path was exercised, not only bypassed. */
  assert_true(fast > 100);
  assert_true(fast < runs);
}

/* A join's data and a message's id come back as the client wrote them
 * (compact): cJSON holds numbers as doubles, and printing its tree again
 * changed an id of 19 digits and made 1e400 null. What cJSON reads but
 * other readers refuse (007, 1., a raw control byte in a string) is
 * bad_json, since it would be sent on as written. */
static void test_values_kept_as_written(void **state) {
  (void)state;
  wsmsg_t m;
  const char *s = "{\"type\":\"join\",\"channel\":\"r\",\"id\": "
                  "12345678901234567890 ,\"data\": { \"id\" : "
                  "1234567890123456789, \"big\":1e400,\"f\":0.1E-2,"
                  "\"s\":\" a \\\" \\\\ \\u00e9 \", \"l\":[ 1 ,{ } , [ ] ,null,"
                  "true ] }\n}";
  assert_int_equal(wsmsg_decode((const uint8_t *)s, strlen(s), 10, &m),
                   WSMSG_OK);
  assert_int_equal(m.type, WSMSG_JOIN);
  assert_string_equal(m.id, "12345678901234567890");
  assert_string_equal(m.data, "{\"id\":1234567890123456789,\"big\":1e400,"
                              "\"f\":0.1E-2,\"s\":\" a \\\" \\\\ \\u00e9 \","
                              "\"l\":[1,{},[],null,true]}");
  wsmsg_free(&m);
  static const char *const bad[] = {
      "{\"type\":\"join\",\"channel\":\"r\",\"data\":{\"n\":007}}",
      "{\"type\":\"join\",\"channel\":\"r\",\"data\":{\"n\":1.}}",
      "{\"type\":\"join\",\"channel\":\"r\",\"data\":{\"n\":-01}}",
      "{\"type\":\"join\",\"channel\":\"r\",\"data\":{\"n\":1.e5}}",
      "{\"type\":\"join\",\"channel\":\"r\",\"data\":{\"s\":\"a\tb\"}}",
      "{\"type\":\"status\",\"status\":\"idle\",\"id\":01}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(wsmsg_decode((const uint8_t *)bad[i], strlen(bad[i]), 10,
                                  &m),
                     WSMSG_BAD);
    assert_string_equal(m.err_code, "bad_json");
    wsmsg_free(&m);
  }
}

/* members: the next page of a channel's members after "after", a valid
 * user id (absent or null: the first page); anything else is bad_field,
 * never a cursor no member could have. */
static void test_members_after(void **state) {
  (void)state;
  wsmsg_t m;
  const char *ok = "{\"type\":\"members\",\"channel\":\"room:1\","
                   "\"after\":\"bob\",\"id\":7}";
  assert_int_equal(wsmsg_decode((const uint8_t *)ok, strlen(ok), 10, &m),
                   WSMSG_OK);
  assert_int_equal(m.type, WSMSG_MEMBERS);
  assert_string_equal(m.channel, "room:1");
  assert_string_equal(m.after, "bob");
  assert_string_equal(m.id, "7");
  assert_null(m.data);
  wsmsg_free(&m);
  static const char *const first[] = {
      "{\"type\":\"members\",\"channel\":\"r\"}",
      "{\"type\":\"members\",\"channel\":\"r\",\"after\":null}",
  };
  for (size_t i = 0; i < sizeof first / sizeof first[0]; i++) {
    assert_int_equal(
        wsmsg_decode((const uint8_t *)first[i], strlen(first[i]), 10, &m),
        WSMSG_OK);
    assert_null(m.after);
    wsmsg_free(&m);
  }
  static const char *const bad[] = {
      "{\"type\":\"members\",\"channel\":\"r\",\"after\":5}",
      "{\"type\":\"members\",\"channel\":\"r\",\"after\":\"\"}",
      "{\"type\":\"members\",\"channel\":\"r\",\"after\":[\"a\"]}",
      "{\"type\":\"members\",\"channel\":\"r\",\"after\":\"a\\u0001\"}",
      "{\"type\":\"members\",\"channel\":\"r\",\"after\":true}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(
        wsmsg_decode((const uint8_t *)bad[i], strlen(bad[i]), 10, &m),
        WSMSG_BAD);
    assert_string_equal(m.err_code, "bad_field");
    wsmsg_free(&m);
  }
  /* The channel is checked first, as for every channel message. */
  const char *nochan = "{\"type\":\"members\",\"after\":5}";
  assert_int_equal(
      wsmsg_decode((const uint8_t *)nochan, strlen(nochan), 10, &m), WSMSG_BAD);
  assert_string_equal(m.err_code, "bad_channel");
  wsmsg_free(&m);
  /* "after" is a members request's only. */
  const char *join = "{\"type\":\"join\",\"channel\":\"r\",\"after\":\"a\"}";
  assert_int_equal(wsmsg_decode((const uint8_t *)join, strlen(join), 10, &m),
                   WSMSG_OK);
  assert_null(m.after);
  wsmsg_free(&m);
}

int main(void) {
  static const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain_status_has_no_tree),
      cmocka_unit_test(test_near_misses_agree),
      cmocka_unit_test(test_mutations_agree),
      cmocka_unit_test(test_values_kept_as_written),
      cmocka_unit_test(test_members_after),
  };
  return cmocka_run_group_tests_name("wsmsg", tests, NULL, NULL);
}
