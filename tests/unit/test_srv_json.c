/* SPDX-License-Identifier: MIT */
/*
 * The JSON writer's hot frames, byte for byte: a watcher's `presence` change
 * (json_frame_presence_change, written on every visible transition through a
 * reserved region rather than piece by piece) and the buffer's number and
 * string writers it shares with every other frame.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "presence.h"
#include "server/buf.h"
#include "server/json.h"

static void put_u(buf_t *b, uint64_t v, const char *want) {
  buf_reset(b);
  buf_put_u64(b, v);
  assert_string_equal(b->data, want);
  assert_int_equal(b->len, strlen(want));
}

static void put_i(buf_t *b, int64_t v, const char *want) {
  buf_reset(b);
  buf_put_i64(b, v);
  assert_string_equal(b->data, want);
  assert_int_equal(b->len, strlen(want));
}

/* RFC 8259's escaping, one byte at a time: what wr_json_body must write
 * whether it reads eight bytes a step or one. */
static size_t ref_escape(char *out, const unsigned char *s, size_t n) {
  size_t o = 0;
  out[o++] = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = s[i];
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c == '\n') {
      memcpy(out + o, "\\n", 2);
      o += 2;
    } else if (c == '\r') {
      memcpy(out + o, "\\r", 2);
      o += 2;
    } else if (c == '\t') {
      memcpy(out + o, "\\t", 2);
      o += 2;
    } else if (c < 0x20) {
      o += (size_t)sprintf(out + o, "\\u%04x", c);
    } else {
      out[o++] = (char)c;
    }
  }
  out[o++] = '"';
  return o;
}

/* Every special byte at every place of strings of 1 to 24 bytes (the
 * eight-byte steps, the tail, both), among plain bytes and bytes that
 * border the tests (0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff). */
static void string_escapes(void **state) {
  (void)state;
  static const unsigned char special[] = {'"', '\\', '\n', '\r', '\t', 0x01,
                                          0x1f, 0x00, 0x20, 0x21, 0x23, 0x5b,
                                          0x5c, 0x5d, 0x7f, 0x80, 0xff, 0xdc};
  static const unsigned char filler[] = {'a', 0x21, 0x23, 0x5b, 0x5d, 0x7f,
                                         0x80, 0xff, 0x20};
  buf_t b;
  buf_init(&b);
  char want[24 * 6 + 3];
  for (size_t n = 1; n <= 24; n++)
    for (size_t at = 0; at < n; at++)
      for (size_t k = 0; k < sizeof special; k++)
        for (size_t f = 0; f < sizeof filler; f++) {
          unsigned char s[24];
          memset(s, filler[f], n);
          s[at] = special[k];
          if (k % 3 == 0 && n > 9) s[(at + 9) % n] = '"'; /* two in one */
          size_t wn = ref_escape(want, s, n);
          buf_reset(&b);
          buf_put_json_strn(&b, (const char *)s, n);
          assert_int_equal(b.len, wn);
          assert_memory_equal(b.data, want, wn);
        }
  buf_free(&b);
}

static void numbers(void **state) {
  (void)state;
  buf_t b;
  buf_init(&b);
  put_u(&b, 0, "0");
  put_u(&b, 7, "7");
  put_u(&b, 10, "10");
  put_u(&b, 99, "99");
  put_u(&b, 100, "100");
  put_u(&b, 1001, "1001");
  put_u(&b, 1764320090000u, "1764320090000");
  put_u(&b, 9999999999999999999u, "9999999999999999999");
  put_u(&b, 10000000000000000000u, "10000000000000000000");
  put_u(&b, UINT64_MAX, "18446744073709551615");
  put_i(&b, -1, "-1");
  put_i(&b, -100, "-100");
  put_i(&b, INT64_MAX, "9223372036854775807");
  put_i(&b, INT64_MIN, "-9223372036854775808");
  /* Every power of ten and its neighbours: the digit count's edges. */
  uint64_t p = 1;
  for (int i = 0; i < 20; i++) {
    char want[32];
    for (int d = -1; d <= 1; d++) {
      uint64_t v = p + (uint64_t)d;
      if (d < 0 && p == 1) continue;
      snprintf(want, sizeof want, "%llu", (unsigned long long)v);
      put_u(&b, v, want);
    }
    if (i < 19) p *= 10;
  }
  buf_free(&b);
}

static presence_event_t user_event(presence_event_type_t type,
                                   presence_status_t from,
                                   presence_status_t to) {
  presence_event_t ev;
  memset(&ev, 0, sizeof ev);
  ev.type = type;
  ev.reason = PRESENCE_REASON_EXPLICIT;
  ev.seq = 118;
  ev.ts_ms = 1764320090000;
  ev.user_id = "bob";
  ev.from = from;
  ev.to = to;
  ev.user_version = 9;
  ev.shown_version = 4;
  ev.last_seen_ms = 1764320090000;
  return ev;
}

static void change_is(const presence_event_t *ev, const char *want) {
  buf_t b;
  buf_init(&b);
  buf_puts(&b, "x"); /* written after what the buffer holds */
  json_frame_presence_change(&b, ev);
  assert_false(buf_failed(&b));
  assert_string_equal(b.data + 1, want);
  assert_int_equal(b.len, strlen(want) + 1);
  buf_free(&b);
}

#define HEAD "{\"type\":\"presence\",\"snapshot\":false,\"users\":["

static void user_changes(void **state) {
  (void)state;
  presence_event_t ev =
      user_event(PRESENCE_EV_USER_IDLE, PRESENCE_ONLINE, PRESENCE_IDLE);
  ev.reason = PRESENCE_REASON_INACTIVITY;
  change_is(&ev, HEAD "{\"user_id\":\"bob\",\"change\":\"status\","
                      "\"status\":\"idle\",\"availability\":\"auto\","
                      "\"from\":\"online\",\"since\":1764320090000,"
                      "\"last_seen\":1764320090000,\"reason\":\"inactivity\","
                      "\"version\":4,\"seq\":118}]}");
  /* A store without last_seen: the transition's own time. Masked by dnd:
   * shown online, from online. */
  ev = user_event(PRESENCE_EV_USER_IDLE, PRESENCE_ONLINE, PRESENCE_IDLE);
  ev.last_seen_ms = 0;
  ev.ts_ms = 5;
  ev.availability_from = ev.availability_to = PRESENCE_AVAIL_DND;
  change_is(&ev, HEAD "{\"user_id\":\"bob\",\"change\":\"status\","
                      "\"status\":\"online\",\"availability\":\"dnd\","
                      "\"from\":\"online\",\"since\":5,\"last_seen\":5,"
                      "\"reason\":\"explicit\",\"version\":4,\"seq\":118}]}");
  /* Offline with a device tail; an id that needs escaping. */
  ev = user_event(PRESENCE_EV_USER_OFFLINE, PRESENCE_IDLE, PRESENCE_OFFLINE);
  ev.user_id = "a\"b\\c\n\x01";
  ev.device = "mobile";
  ev.device_from = PRESENCE_IDLE;
  ev.device_to = PRESENCE_OFFLINE;
  ev.seq = UINT64_MAX;
  ev.shown_version = 0;
  change_is(&ev, HEAD "{\"user_id\":\"a\\\"b\\\\c\\n\\u0001\","
                      "\"change\":\"status\",\"status\":\"offline\","
                      "\"availability\":\"auto\",\"from\":\"idle\","
                      "\"since\":1764320090000,\"last_seen\":1764320090000,"
                      "\"device\":\"mobile\",\"device_status\":\"offline\","
                      "\"reason\":\"explicit\",\"version\":0,"
                      "\"seq\":18446744073709551615}]}");
  /* Going invisible: shown offline (from the online watchers saw), its
   * availability shown as auto. */
  ev = user_event(PRESENCE_EV_USER_AVAILABILITY, PRESENCE_ONLINE,
                  PRESENCE_ONLINE);
  ev.availability_to = PRESENCE_AVAIL_INVISIBLE;
  change_is(&ev, HEAD "{\"user_id\":\"bob\",\"change\":\"status\","
                      "\"status\":\"offline\",\"availability\":\"auto\","
                      "\"from\":\"online\",\"since\":1764320090000,"
                      "\"last_seen\":1764320090000,\"devices\":{},"
                      "\"reason\":\"explicit\",\"version\":4,\"seq\":118}]}");
  /* dnd over an idle device and an online one: the whole map, each shown
   * online (a client holding {"mobile":"idle"} replaces it). */
  presence_device_status_t devs[2] = {{"web", PRESENCE_ONLINE, 1},
                                      {"mobile", PRESENCE_IDLE, 2}};
  ev = user_event(PRESENCE_EV_USER_AVAILABILITY, PRESENCE_ONLINE,
                  PRESENCE_ONLINE);
  ev.availability_to = PRESENCE_AVAIL_DND;
  ev.devices = devs;
  ev.n_devices = 2;
  change_is(&ev, HEAD "{\"user_id\":\"bob\",\"change\":\"status\","
                      "\"status\":\"online\",\"availability\":\"dnd\","
                      "\"from\":\"online\",\"since\":1764320090000,"
                      "\"last_seen\":1764320090000,"
                      "\"devices\":{\"web\":\"online\",\"mobile\":\"online\"},"
                      "\"reason\":\"explicit\",\"version\":4,\"seq\":118}]}");
  /* away: each shown idle. */
  ev.availability_from = PRESENCE_AVAIL_DND;
  ev.availability_to = PRESENCE_AVAIL_AWAY;
  change_is(&ev, HEAD "{\"user_id\":\"bob\",\"change\":\"status\","
                      "\"status\":\"idle\",\"availability\":\"away\","
                      "\"from\":\"online\",\"since\":1764320090000,"
                      "\"last_seen\":1764320090000,"
                      "\"devices\":{\"web\":\"idle\",\"mobile\":\"idle\"},"
                      "\"reason\":\"explicit\",\"version\":4,\"seq\":118}]}");
}

static void device_and_message_changes(void **state) {
  (void)state;
  presence_event_t ev =
      user_event(PRESENCE_EV_SESSION_STATUS, PRESENCE_ONLINE, PRESENCE_IDLE);
  ev.device = "desktop";
  ev.device_from = PRESENCE_ONLINE;
  ev.device_to = PRESENCE_IDLE;
  ev.availability_to = PRESENCE_AVAIL_AWAY;
  change_is(&ev, HEAD "{\"user_id\":\"bob\",\"change\":\"device\","
                      "\"availability\":\"away\",\"device\":\"desktop\","
                      "\"device_status\":\"idle\",\"reason\":\"explicit\","
                      "\"version\":4,\"seq\":118}]}");
  ev = user_event(PRESENCE_EV_USER_MESSAGE, PRESENCE_ONLINE, PRESENCE_ONLINE);
  ev.message = "in a \"meeting\"";
  ev.emoji = NULL;
  ev.message_expires_ms = 1764320099999;
  ev.device = "web"; /* a message carries no device */
  change_is(&ev, HEAD "{\"user_id\":\"bob\",\"change\":\"message\","
                      "\"status\":\"online\",\"availability\":\"auto\","
                      "\"message\":{\"text\":\"in a \\\"meeting\\\"\","
                      "\"emoji\":null,\"expires\":1764320099999},"
                      "\"reason\":\"explicit\",\"version\":4,\"seq\":118}]}");
  ev.message = NULL;
  change_is(&ev, HEAD "{\"user_id\":\"bob\",\"change\":\"message\","
                      "\"status\":\"online\",\"availability\":\"auto\","
                      "\"message\":null,\"reason\":\"explicit\","
                      "\"version\":4,\"seq\":118}]}");
}

/* A frame written into a buffer that must grow mid-frame, many times over:
 * the region reserved up front holds all of it. */
static void long_ids(void **state) {
  (void)state;
  char id[700];
  memset(id, '"', sizeof id - 1);
  id[sizeof id - 1] = '\0';
  presence_event_t ev =
      user_event(PRESENCE_EV_USER_ONLINE, PRESENCE_OFFLINE, PRESENCE_ONLINE);
  ev.user_id = id;
  buf_t b;
  buf_init(&b);
  json_frame_presence_change(&b, &ev);
  assert_false(buf_failed(&b));
  assert_int_equal(b.len, strlen(b.data));
  assert_int_equal(strlen(HEAD "{\"user_id\":\"") + 2 * (sizeof id - 1),
                   strstr(b.data, "\",\"change\"") - b.data);
  assert_non_null(strstr(b.data, ",\"seq\":118}]}"));
  buf_free(&b);
}

/* The sequence number's digits are the last frame's with the last digit
 * moved when they can be (json.c, wr_seq): every kind of step is rendered
 * as printf would, carries, falls, jumps and the first number included. */
static void seq_digits_follow_every_number(void **state) {
  (void)state;
  static const uint64_t seqs[] = {
      118, 119, 121, 129, 130, 131, 139, 141, 9, 10, 11, 99, 101, 1,
      0, 5, 999999, 1000001, 1000002, 1000009, 1000010, 18446744073709551615u,
      18446744073709551606u, 18446744073709551615u, 7};
  presence_event_t ev =
      user_event(PRESENCE_EV_USER_ONLINE, PRESENCE_OFFLINE, PRESENCE_ONLINE);
  for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
    ev.seq = seqs[i];
    buf_t b;
    buf_init(&b);
    json_frame_presence_change(&b, &ev);
    assert_false(buf_failed(&b));
    char want[64];
    snprintf(want, sizeof want, ",\"seq\":%llu}]}",
             (unsigned long long)seqs[i]);
    const char *at = strstr(b.data, ",\"seq\":");
    assert_non_null(at);
    assert_string_equal(at, want);
    assert_int_equal(b.len, strlen(b.data));
    buf_free(&b);
  }
}

/* json_user_change writes ,"key":"name" from fragments of 47 bytes at
 * most: with its longest key (device_status), a name of 27. */
static void names_fit(void **state) {
  (void)state;
  for (int i = 0; i <= 3; i++)
    assert_true(strlen(presence_status_name((presence_status_t)i)) <= 27);
  for (int i = 0; i <= PRESENCE_AVAIL_COUNT_; i++)
    assert_true(strlen(presence_availability_name(
                    (presence_availability_t)i)) <= 27);
  for (int i = 0; i <= PRESENCE_REASON_COUNT_; i++)
    assert_true(strlen(presence_reason_name((presence_reason_t)i)) <= 27);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(numbers),
      cmocka_unit_test(string_escapes),
      cmocka_unit_test(user_changes),
      cmocka_unit_test(device_and_message_changes),
      cmocka_unit_test(long_ids),
      cmocka_unit_test(seq_digits_follow_every_number),
      cmocka_unit_test(names_fit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
