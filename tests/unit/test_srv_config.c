/*
 * presenced's settings: defaults, flags over environment, and a bad value
 * refused with a message naming the flag (exit code 2 in main).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "server/config.h"
#include "server/map.h"
#include "server/sys.h"

static const char *fake_env(const char *name) {
  if (!strcmp(name, "PRESENCED_MAX_FRAME")) return "2048";
  if (!strcmp(name, "PRESENCED_LISTEN")) return "127.0.0.1:9000";
  return NULL;
}

static int parse(srv_config_t *cfg, const char *(*env)(const char *),
                 char **argv, int argc, char *err, size_t errcap) {
  config_defaults(cfg);
  FILE *out = fopen("/dev/null", "w");
  FILE *e = fmemopen(err, errcap, "w");
  int rc = config_parse(cfg, argc, argv, env, out, e);
  fclose(e);
  fclose(out);
  return rc;
}

static void test_defaults(void **state) {
  (void)state;
  srv_config_t cfg;
  char err[256] = "";
  char *argv[] = {"presenced"};
  assert_int_equal(parse(&cfg, NULL, argv, 1, err, sizeof err), CONFIG_OK);
  assert_string_equal(cfg.host, "127.0.0.1");
  assert_int_equal(cfg.port, 7070);
  assert_int_equal(cfg.heartbeat_ms, 25000);
  assert_int_equal(cfg.timeout_ms, 60000);
  assert_null(cfg.api_key);
}

static void test_flags_over_env(void **state) {
  (void)state;
  srv_config_t cfg;
  char err[256] = "";
  char *argv[] = {"presenced", "--max-frame=4096", "--listen", "[::1]:8080",
                  "--demo",    "--api-key",        "k"};
  assert_int_equal(parse(&cfg, fake_env, argv, 7, err, sizeof err), CONFIG_OK);
  assert_int_equal(cfg.max_frame, 4096);
  assert_string_equal(cfg.host, "::1");
  assert_int_equal(cfg.port, 8080);
  assert_int_equal(cfg.demo, 1);
  assert_string_equal(cfg.api_key, "k");
  char *argv2[] = {"presenced"};
  assert_int_equal(parse(&cfg, fake_env, argv2, 1, err, sizeof err), CONFIG_OK);
  assert_int_equal(cfg.max_frame, 2048);
  assert_int_equal(cfg.port, 9000);
}

static void test_bad_values(void **state) {
  (void)state;
  srv_config_t cfg;
  struct {
    const char *flag, *value;
  } bad[] = {{"--max-frame", "abc"},          {"--max-frame", "-1"},
             {"--timeout-ms", "99999999999"}, {"--listen", "nohost"},
             {"--listen", "example.com:80"},  {"--listen", "1.2.3.4:70000"},
             {"--log-level", "loud"},         {"--nope", "1"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[256] = "";
    char *argv[] = {"presenced", (char *)bad[i].flag, (char *)bad[i].value};
    assert_int_equal(parse(&cfg, NULL, argv, 3, err, sizeof err),
                     CONFIG_EXIT_USAGE);
    assert_non_null(strstr(err, bad[i].flag));
  }
  char err[256] = "";
  char *argv[] = {"presenced", "--demo", "--listen", "0.0.0.0:7070"};
  assert_int_equal(parse(&cfg, NULL, argv, 4, err, sizeof err),
                   CONFIG_EXIT_USAGE);
  assert_non_null(strstr(err, "--demo"));
}

static void test_loopback(void **state) {
  (void)state;
  assert_true(config_host_is_loopback("127.0.0.1"));
  assert_true(config_host_is_loopback("127.8.9.10"));
  assert_true(config_host_is_loopback("::1"));
  assert_true(config_host_is_loopback("localhost"));
  assert_false(config_host_is_loopback("0.0.0.0"));
  assert_false(config_host_is_loopback("::"));
  assert_false(config_host_is_loopback("10.0.0.1"));
}

static void test_map(void **state) {
  (void)state;
  map_t m;
  map_init(&m);
  char key[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(key, sizeof key, "k%d", i);
    assert_int_equal(map_put(&m, key, (void *)(intptr_t)(i + 1)), 0);
  }
  assert_int_equal(m.count, 1000);
  for (int i = 0; i < 1000; i += 2) {
    snprintf(key, sizeof key, "k%d", i);
    assert_int_equal((intptr_t)map_del(&m, key), i + 1);
  }
  for (int i = 0; i < 1000; i++) {
    snprintf(key, sizeof key, "k%d", i);
    void *v = map_get(&m, key);
    if (i % 2)
      assert_int_equal((intptr_t)v, i + 1);
    else
      assert_null(v);
  }
  map_free(&m);
}

static int64_t zero_clock(void *ud) {
  (void)ud;
  return 0;
}

static int counting_random(void *ud, void *buf, size_t len) {
  unsigned char *b = buf;
  unsigned *n = ud;
  for (size_t i = 0; i < len; i++)
    b[i] = (unsigned char)(*n)++;
  return 0;
}

static void test_uuid(void **state) {
  (void)state;
  unsigned n = 0;
  srv_sys_t sys = {zero_clock, zero_clock, counting_random, &n};
  char id[37];
  assert_int_equal(srv_uuid4(&sys, id), 0);
  assert_int_equal(strlen(id), 36);
  assert_string_equal(id, "00010203-0405-4607-8809-0a0b0c0d0e0f");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),   cmocka_unit_test(test_flags_over_env),
      cmocka_unit_test(test_bad_values), cmocka_unit_test(test_loopback),
      cmocka_unit_test(test_map),        cmocka_unit_test(test_uuid),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
