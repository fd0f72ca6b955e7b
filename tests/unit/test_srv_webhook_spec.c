/* SPDX-License-Identifier: MIT */
/*
 * --webhook specs (webhook_spec.c): the events= filter's wildcards cover
 * every type of their prefix, as the event stream's ?types= does, and a
 * spec refused at startup never shows a piece of its secret in the message
 * (which is logged).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "presence.h"
#include "server/webhook.h"

#define URL "url=http://127.0.0.1:9/hook,"
/* A secret of the shortest length accepted (32 bytes). */
#define SECRET32 "0123456789abcdef0123456789abcdef"

static uint32_t events_of(const char *spec) {
  wh_spec_t w;
  char err[256];
  assert_int_equal(wh_spec_parse(spec, 0, &w, err, sizeof err), 0);
  uint32_t mask = w.events;
  wh_spec_free(&w);
  return mask;
}

static void test_wildcards(void **state) {
  (void)state;
  uint32_t user = (1u << PRESENCE_EV_USER_ONLINE) |
                  (1u << PRESENCE_EV_USER_IDLE) |
                  (1u << PRESENCE_EV_USER_OFFLINE) |
                  (1u << PRESENCE_EV_USER_AVAILABILITY) |
                  (1u << PRESENCE_EV_USER_MESSAGE);
  assert_int_equal(events_of(URL "secret=" SECRET32 ",events=user.*"), user);
  assert_int_equal(events_of(URL "secret=" SECRET32 ",events=session.*"),
                   (1u << PRESENCE_EV_SESSION_CONNECTED) |
                       (1u << PRESENCE_EV_SESSION_DISCONNECTED) |
                       (1u << PRESENCE_EV_SESSION_STATUS));
  assert_int_equal(events_of(URL "secret=" SECRET32 ",events=channel.*|cleanup"),
                   (1u << PRESENCE_EV_CHANNEL_JOIN) |
                       (1u << PRESENCE_EV_CHANNEL_LEAVE) |
                       (1u << PRESENCE_EV_CHANNEL_UPDATE) |
                       (1u << PRESENCE_EV_CLEANUP));
  assert_int_equal(events_of(URL "secret=" SECRET32 ",events=user.message"),
                   1u << PRESENCE_EV_USER_MESSAGE);
  assert_int_equal(events_of(URL "secret=" SECRET32 ",events=*"),
                   (1u << PRESENCE_EV_COUNT_) - 1);
  const char *bad[] = {URL "secret=" SECRET32 ",events=nope.*", URL "secret=" SECRET32 ",events=.*",
                       URL "secret=" SECRET32 ",events=user.", URL "secret=" SECRET32 ",events=",
                       URL "secret=" SECRET32 ",events=user.*|"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    wh_spec_t w;
    char err[256];
    assert_int_equal(wh_spec_parse(bad[i], 0, &w, err, sizeof err), -1);
  }
}

/* A secret holding ',' splits into pairs that do not parse: the message
 * says what is wrong without quoting them. */
static void test_secret_not_echoed(void **state) {
  (void)state;
  /* Each entry in parentheses: clang's -Wstring-concatenation takes a
   * concatenation in an array for a missing comma. */
  const char *specs[] = {(URL "secret=Sup3r,pa55=w0rd"),
                         (URL "secret=Sup3r,events=pa55w0rd"),
                         (URL "secret=Sup3r,pa55w0rd"),
                         ("secret=Sup3r,pa55=w0rd," URL)};
  for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
    wh_spec_t w;
    char err[256] = "";
    assert_int_equal(wh_spec_parse(specs[i], 0, &w, err, sizeof err), -1);
    assert_true(err[0] != '\0');
    assert_null(strstr(err, "pa55"));
    assert_null(strstr(err, "w0rd"));
    assert_null(strstr(err, "Sup3r"));
  }
  /* Elsewhere an unknown key is still named, to be found and fixed. */
  wh_spec_t w;
  char err[256] = "";
  assert_int_equal(wh_spec_parse(URL "secret=" SECRET32 ",name=n,evnets=user.*", 0, &w,
                                 err, sizeof err),
                   -1);
  assert_non_null(strstr(err, "'evnets'"));
}

/* An HMAC key shorter than the API key and the JWT secret must be (32
 * bytes) is found offline from one captured delivery: refused, inline and
 * in a secret-file, with its length and never its value. */
static void test_secret_too_short(void **state) {
  (void)state;
  wh_spec_t w;
  char err[256] = "";
  assert_int_equal(
      wh_spec_parse(URL "secret=hello", 0, &w, err, sizeof err), -1);
  assert_non_null(strstr(err, "too short (5 bytes, at least 32 needed)"));
  assert_null(strstr(err, "hello"));
  /* 31 bytes: refused; 32: accepted. */
  assert_int_equal(wh_spec_parse(URL "secret=0123456789abcdef0123456789abcde",
                                 0, &w, err, sizeof err),
                   -1);
  assert_int_equal(wh_spec_parse(URL "secret=" SECRET32, 0, &w, err, sizeof err),
                   0);
  assert_int_equal(w.secret_len, 32);
  wh_spec_free(&w);
  /* A secret-file: read at start (and by --check-config), its trailing
   * newline not counted. */
  char path[] = "/tmp/test_whspec_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  assert_non_null(f);
  fputs("0123456789abcdef0123456789abcde\n", f); /* 31 bytes */
  fclose(f);
  char spec[256];
  snprintf(spec, sizeof spec, URL "secret-file=%s", path);
  assert_int_equal(wh_spec_parse(spec, 0, &w, err, sizeof err), 0);
  wh_spec_free(&w); /* not read: the syntax alone */
  err[0] = '\0';
  assert_int_equal(wh_spec_parse(spec, 1, &w, err, sizeof err), -1);
  assert_non_null(strstr(err, "too short (31 bytes, at least 32 needed)"));
  assert_null(strstr(err, "0123456789"));
  f = fopen(path, "w");
  assert_non_null(f);
  fputs(SECRET32 "\n", f);
  fclose(f);
  assert_int_equal(wh_spec_parse(spec, 1, &w, err, sizeof err), 0);
  assert_int_equal(w.secret_len, 32);
  wh_spec_free(&w);
  unlink(path);
}

/* ca=PATH (a receiver behind a private CA): the syntax alone when options
 * are read; the file at start and by --check-config, missing or holding
 * no certificate refused with the path named; beside an http:// url
 * refused (it would verify nothing). There was no ca= key. */
static void test_ca(void **state) {
  (void)state;
  wh_spec_t w;
  char err[256] = "";
  const char *https = "url=https://127.0.0.1:9/hook,secret=" SECRET32;
  char spec[512];
  snprintf(spec, sizeof spec, "%s,ca=/nonexistent/ca.pem", https);
  assert_int_equal(wh_spec_parse(spec, 0, &w, err, sizeof err), 0);
  assert_string_equal(w.ca, "/nonexistent/ca.pem");
  wh_spec_free(&w);
  assert_int_equal(wh_spec_parse(spec, 1, &w, err, sizeof err), -1);
  assert_non_null(strstr(err, "cannot read ca /nonexistent/ca.pem: No such file"));
  char path[] = "/tmp/test_whspec_ca_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  assert_non_null(f);
  fputs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", f);
  fclose(f);
  snprintf(spec, sizeof spec, "%s,ca=%s", https, path);
  assert_int_equal(wh_spec_parse(spec, 1, &w, err, sizeof err), -1);
  assert_non_null(strstr(err, "no PEM certificate in it"));
  unlink(path);
  /* A FIFO: refused at once (opened plainly, with no writer, it hung the
   * start), as is a directory. */
  assert_int_equal(mkfifo(path, 0600), 0);
  snprintf(spec, sizeof spec, "%s,ca=%s", https, path);
  assert_int_equal(wh_spec_parse(spec, 1, &w, err, sizeof err), -1);
  assert_non_null(strstr(err, "not a regular file"));
  unlink(path);
  snprintf(spec, sizeof spec, "%s,ca=/tmp", https);
  assert_int_equal(wh_spec_parse(spec, 1, &w, err, sizeof err), -1);
  assert_non_null(strstr(err, "not a regular file"));
  assert_int_equal(wh_spec_parse(URL "secret=" SECRET32 ",ca=/etc/ssl/x.pem", 0,
                                 &w, err, sizeof err),
                   -1);
  assert_non_null(strstr(err, "ca= is for an https:// url"));
  snprintf(spec, sizeof spec, "%s,ca=", https);
  assert_int_equal(wh_spec_parse(spec, 0, &w, err, sizeof err), -1);
  assert_non_null(strstr(err, "'ca' is empty"));
  snprintf(spec, sizeof spec, "%s,ca=/a,ca=/b", https);
  assert_int_equal(wh_spec_parse(spec, 0, &w, err, sizeof err), -1);
  assert_non_null(strstr(err, "'ca' is given twice"));
}

/* A URL libcurl cannot send to is refused when the spec is read (at start
 * and by --check-config): it was accepted, then every delivery failed with
 * "URL using bad/illegal format" and was retried for good. */
static void test_url_refused_at_start(void **state) {
  (void)state;
  static const char *const bad[] = {
      "url=http://,", "url=http://h:99999/x,", "url=http://:80/x,",
      "url=http://h:abc/x,", "url=https://u:pw@h:70000/x,"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    wh_spec_t w;
    char err[256] = "", spec[256];
    snprintf(spec, sizeof spec, "%ssecret=" SECRET32, bad[i]);
    assert_int_equal(wh_spec_parse(spec, 0, &w, err, sizeof err), -1);
    assert_non_null(strstr(err, "url: "));
    assert_null(strstr(err, "pw")); /* the URL is not quoted */
  }
  static const char *const good[] = {
      "url=http://127.0.0.1:9/hook,", "url=https://[::1]:9000/hook,",
      "url=HTTPS://api.example.com/presence,", "url=http://h/x?a=1%2C2,",
      "url=https://u:pw@h/x,"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    wh_spec_t w;
    char err[256] = "", spec[256];
    snprintf(spec, sizeof spec, "%ssecret=" SECRET32, good[i]);
    if (wh_spec_parse(spec, 0, &w, err, sizeof err) != 0)
      fail_msg("%s refused: %s", good[i], err);
    wh_spec_free(&w);
  }
}

/* name= labels the endpoint's samples of /metrics, whose text format is
 * UTF-8: a name with a byte that is not (Latin-1, say) made scrapers refuse
 * every scrape. Refused when the spec is read; UTF-8 names are taken. */
static void test_name_utf8(void **state) {
  (void)state;
  static const char *const bad[] = {"caf\xe9", "\xff", "ab\xc3", "\xed\xa0\x80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    wh_spec_t w;
    char err[256] = "", spec[256];
    snprintf(spec, sizeof spec, URL "secret=" SECRET32 ",name=%s", bad[i]);
    assert_int_equal(wh_spec_parse(spec, 0, &w, err, sizeof err), -1);
    assert_non_null(strstr(err, "name: not UTF-8"));
  }
  wh_spec_t w;
  char err[256] = "";
  if (wh_spec_parse(URL "secret=" SECRET32 ",name=caf\xc3\xa9 \xe2\x86\x92 hook", 0, &w,
                    err, sizeof err) != 0)
    fail_msg("a UTF-8 name refused: %s", err);
  wh_spec_free(&w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wildcards),
      cmocka_unit_test(test_secret_not_echoed),
      cmocka_unit_test(test_secret_too_short),
      cmocka_unit_test(test_url_refused_at_start),
      cmocka_unit_test(test_ca),
      cmocka_unit_test(test_name_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
