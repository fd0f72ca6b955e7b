/* SPDX-License-Identifier: MIT */
/*
 * presenced's settings: defaults, the configuration file, flags over
 * environment over file, secret files, and a bad value refused with a
 * message naming the flag or the file's line (exit code 2 in main).
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

#include "server/config.h"
#include "core/siphash.h"
#include "server/map.h"
#include "server/sys.h"
#include "server/webhook.h"

/* Credentials of the minimum length (CONFIG_SECRET_MIN). */
#define KEY32 "k-0123456789-0123456789-01234567"
#define FILE_KEY "file-key-0123456789-0123456789-0123"
#define FLAG_KEY "flag-key-0123456789-0123456789-0123"
#define JWT_FILE "jwt-from-file-0123456789-0123456789"

static const char *fake_env(const char *name) {
  if (!strcmp(name, "PRESENCED_MAX_FRAME")) return "2048";
  if (!strcmp(name, "PRESENCED_LISTEN")) return "127.0.0.1:9000";
  return NULL;
}

/* The warnings config_parse recorded, one per line. */
static void add_warning(void *ud, const char *w) {
  strcat(ud, w);
  strcat(ud, "\n");
}

static const char *warnings_of(const srv_config_t *cfg) {
  static char all[2048];
  all[0] = '\0';
  config_each_warning(cfg, add_warning, all);
  return all;
}

static int parse(srv_config_t *cfg, const char *(*env)(const char *),
                 char **argv, int argc, char *err, size_t errcap) {
  config_defaults(cfg);
  if (errcap) err[0] = '\0'; /* fmemopen leaves it as it was if unwritten */
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
  /* Issue 18: the embedded store forgets offline users after 30 days by
   * default (it kept every user ever seen). */
  assert_int_equal(cfg.offline_retention_s, 30 * 86400);
  assert_int_equal(cfg.max_connections_per_ip, 256);
  assert_int_equal(cfg.jwt_leeway_s, 5);
}

static void test_flags_over_env(void **state) {
  (void)state;
  srv_config_t cfg;
  char err[256] = "";
  char *argv[] = {"presenced", "--max-frame=4096", "--listen", "[::1]:8080",
                  "--demo",    "--api-key",        KEY32};
  assert_int_equal(parse(&cfg, fake_env, argv, 7, err, sizeof err), CONFIG_OK);
  assert_int_equal(cfg.max_frame, 4096);
  assert_string_equal(cfg.host, "::1");
  assert_int_equal(cfg.port, 8080);
  assert_int_equal(cfg.demo, 1);
  assert_string_equal(cfg.api_key, KEY32);
  config_free(&cfg);
  char *argv2[] = {"presenced"};
  assert_int_equal(parse(&cfg, fake_env, argv2, 1, err, sizeof err), CONFIG_OK);
  assert_int_equal(cfg.max_frame, 2048);
  assert_int_equal(cfg.port, 9000);
  assert_int_equal(cfg.expected_memberships, 0); /* no hint by default */
  config_free(&cfg);
  char *argv3[] = {"presenced", "--expected-memberships", "1000000"};
  assert_int_equal(parse(&cfg, NULL, argv3, 3, err, sizeof err), CONFIG_OK);
  assert_int_equal(cfg.expected_memberships, 1000000);
  config_free(&cfg);
}

/* --allowed-origins: what a browser's Origin can equal, each entry checked
 * at start; an entry no Origin could match was taken and never matched. */
static void test_allowed_origins(void **state) {
  (void)state;
  const char *good[] = {"*", "https://app.example.com/", "null",
                        "http://localhost:3000, https://*.example.com",
                        "http://[::1]:8080"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    char err[200] = "";
    if (config_origins_check(good[i], err, sizeof err) != 0)
      fail_msg("refused %s: %s", good[i], err);
  }
  const struct {
    const char *list, *why;
  } bad[] = {{"app.example.com", "not scheme://host"},
             {"*.example.com", "not scheme://host"},
             {"https://app.example.com/chat", "no path"},
             {"https://app.example.com:443", "default port"},
             {"http://app.example.com:80", "default port"},
             {"ftp://files.example.com", "other than http or https"},
             {"https://*.com", "two labels"},
             {"https://a*b.example.com", "leading"},
             {"https://x:99999", "1 to 65535"},
             {"https://ok.example.com, https://u@x", "not scheme://host"}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char err[200] = "";
    assert_int_equal(config_origins_check(bad[i].list, err, sizeof err), -1);
    if (!strstr(err, bad[i].why))
      fail_msg("%s: '%s' does not say %s", bad[i].list, err, bad[i].why);
  }
  srv_config_t cfg;
  char e2[256] = "";
  char *argv[] = {"presenced", "--allowed-origins", "*.example.com"};
  assert_int_equal(parse(&cfg, NULL, argv, 3, e2, sizeof e2),
                   CONFIG_EXIT_USAGE);
  assert_non_null(strstr(e2, "--allowed-origins"));
  config_free(&cfg);
}

/* A webhook's default name (its metrics label, and how log lines name it)
 * carries neither credentials nor the query. A password holding an
 * unescaped '/' ends the authority there for libcurl, which then reads
 * "t0p" as the port and could never deliver: refused at start (687976a),
 * with a message that does not quote it. */
static void test_webhook_default_name(void **state) {
  (void)state;
  const char *cases[][2] = {
      {"url=https://hooks.example/p?token=t0ps3cret,secret=whsec-0123456789abcdef0123456789",
       "https://hooks.example/p"},
      {"url=https://app:t0ps3cret@hooks.example/p,secret=whsec-0123456789abcdef0123456789",
       "https://hooks.example/p"},
      {"url=http://127.0.0.1:9/a,secret=whsec-0123456789abcdef0123456789", "http://127.0.0.1:9/a"}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    wh_spec_t w;
    char err[128];
    assert_int_equal(wh_spec_parse(cases[i][0], 0, &w, err, sizeof err), 0);
    assert_string_equal(w.name, cases[i][1]);
    wh_spec_free(&w);
  }
  wh_spec_t w;
  char err[128] = "";
  assert_int_equal(
      wh_spec_parse("url=https://app:t0p/s3cret@hooks.example/p,"
                    "secret=whsec-0123456789abcdef0123456789",
                    0, &w, err, sizeof err),
      -1);
  assert_non_null(strstr(err, "url:"));
  assert_null(strstr(err, "s3cret"));
  assert_null(strstr(err, "t0p"));
}

/* Two endpoints under one name (by default the URL without its query, so
 * ?tenant=1 and ?tenant=2) passed --check-config and then failed the start
 * with exit 1, which systemd restarts in a loop: now a bad setting, 2. */
static void test_webhook_same_name(void **state) {
  (void)state;
  srv_config_t cfg;
  char err[512];
  char *same[] = {"presenced", "--check-config", "--webhook",
                  "url=https://h.example/hook?tenant=1,secret=" KEY32,
                  "--webhook", "url=https://h.example/hook?tenant=2,secret=" KEY32};
  assert_int_equal(parse(&cfg, NULL, same, 6, err, sizeof err), CONFIG_EXIT_USAGE);
  assert_non_null(strstr(err, "endpoints 1 and 2 are both named 'https://h.example/hook'"));
  config_free(&cfg);
  /* The same at a start, not only under --check-config. */
  assert_int_equal(parse(&cfg, NULL, same + 1, 5, err, sizeof err), CONFIG_EXIT_USAGE);
  config_free(&cfg);
  /* One spec per element (parenthesized: clang's -Wstring-concatenation
   * takes an unparenthesized concatenation beside plain literals for a
   * missing comma). */
  char *named[] = {"presenced", "--check-config", "--webhook",
                   ("url=https://h.example/hook?tenant=1,secret=" KEY32
                    ",name=t1"),
                   "--webhook",
                   ("url=https://h.example/hook?tenant=2,secret=" KEY32)};
  assert_int_equal(parse(&cfg, NULL, named, 6, err, sizeof err), CONFIG_EXIT_OK);
  config_free(&cfg);
}

/* A webhook's secret-file that cannot be read is a bad setting at a start
 * as under --check-config (exit 2, as a missing --api-key-file): the start
 * read it only in webhook_init, and failed with exit 1. */
static void test_webhook_secret_file_missing(void **state) {
  (void)state;
  srv_config_t cfg;
  char err[512];
  char *argv[] = {"presenced", "--webhook",
                  "url=https://h.example/hook,secret-file=/nonexistent/wh"};
  assert_int_equal(parse(&cfg, NULL, argv, 3, err, sizeof err), CONFIG_EXIT_USAGE);
  assert_non_null(strstr(err, "cannot read secret-file /nonexistent/wh"));
  config_free(&cfg);
}

static void test_bad_values(void **state) {
  (void)state;
  srv_config_t cfg;
  struct {
    const char *flag, *value;
  } bad[] = {{"--max-frame", "abc"},          {"--max-frame", "-1"},
             {"--timeout-ms", "99999999999"}, {"--listen", "nohost"},
             {"--listen", "example.com:80"},  {"--listen", "1.2.3.4:70000"},
             {"--log-level", "loud"},         {"--nope", "1"},
             {"--expected-memberships", "-1"},
             {"--expected-memberships", "100000001"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[256] = "";
    char *argv[] = {"presenced", (char *)bad[i].flag, (char *)bad[i].value};
    assert_int_equal(parse(&cfg, NULL, argv, 3, err, sizeof err),
                     CONFIG_EXIT_USAGE);
    assert_non_null(strstr(err, bad[i].flag));
  }
  /* A store URL that does not parse is shown in the error with its
   * password hidden, in a scheme other clients use (redis-sentinel://) or
   * with an unescaped '/' in the password too; the message names the
   * Sentinel form. (A build without the Redis store shows the scheme
   * alone.) */
#ifdef PRESENCED_HAVE_REDIS
  const char *stores[] = {"redis-sentinel://:hunter2@s1:26379/mymaster",
                          "redis://app:hun/ter2@h:1/0"};
  for (size_t i = 0; i < sizeof stores / sizeof *stores; i++) {
    char e2[512] = "";
    char *argv[] = {"presenced", "--store", (char *)stores[i]};
    assert_int_equal(parse(&cfg, NULL, argv, 3, e2, sizeof e2),
                     CONFIG_EXIT_USAGE);
    assert_non_null(strstr(e2, "--store"));
    assert_non_null(strstr(e2, ":***@"));
    assert_null(strstr(e2, "ter2"));
    assert_non_null(strstr(e2, "redis+sentinel://"));
    /* A refused configuration is the caller's to free, as presenced's main
     * does: the warning about credentials on the command line was kept. */
    config_free(&cfg);
  }
#endif
  char err[256] = "";
  char *argv[] = {"presenced", "--demo", "--listen", "0.0.0.0:7070"};
  assert_int_equal(parse(&cfg, NULL, argv, 4, err, sizeof err),
                   CONFIG_EXIT_USAGE);
  assert_non_null(strstr(err, "--demo"));
  /* --workers on shards and on Redis Cluster: accepted since the workers'
   * shared log reader follows every shard's log (one feed per follower). */
  char *shards[] = {"presenced", "--store", "redis://127.0.0.1",
                    "--redis-shards", "3", "--workers", "2"};
  char *cluster[] = {"presenced", "--store", "redis://127.0.0.1",
                     "--redis-cluster", "127.0.0.1:7000", "--workers", "2"};
  char *one[] = {"presenced", "--store", "redis://127.0.0.1",
                 "--redis-shards", "1", "--workers", "2"};
  char e2[512] = "";
  assert_int_equal(parse(&cfg, NULL, shards, 7, e2, sizeof e2), 0);
  assert_int_equal(cfg.workers, 2);
  assert_int_equal(cfg.redis_shards, 3);
  config_free(&cfg);
  assert_int_equal(parse(&cfg, NULL, cluster, 7, e2, sizeof e2), 0);
  assert_int_equal(cfg.workers, 2);
  config_free(&cfg);
  assert_int_equal(parse(&cfg, NULL, one, 7, e2, sizeof e2), 0);
  config_free(&cfg);
}

/* ---- configuration file ------------------------------------------------ */

static int parse_text(srv_config_t *cfg, const char *text, char *err,
                      size_t errcap) {
  FILE *e = fmemopen(err, errcap, "w");
  int rc = config_parse_file_text(cfg, "t.conf", text, strlen(text), e);
  fclose(e);
  return rc;
}

static void test_file_good(void **state) {
  (void)state;
  srv_config_t cfg;
  config_defaults(&cfg);
  char err[256] = "";
  const char *text = "# presenced.conf\n"
                     "\n"
                     "listen = [::1]:8081\r\n"
                     "  max-frame=4096  \n"
                     "\t# indented comment\n"
                     "api-key = k#not-a-comment\n"
                     "jwt-secret = \"  spaced \\\"q\\\" \\\\ \"\n"
                     "demo = true\n"
                     "log-level = debug\n"
                     "log-format = json\n"
                     "webhook = url=http://127.0.0.1:9/a,secret=whsec-0123456789abcdef0123456789\n"
                     "webhook = url=http://127.0.0.1:9/b,secret=whsec-0123456789abcdef0123456789";
  assert_int_equal(parse_text(&cfg, text, err, sizeof err), 0);
  assert_string_equal(err, "");
  assert_string_equal(cfg.host, "::1");
  assert_int_equal(cfg.port, 8081);
  assert_int_equal(cfg.max_frame, 4096);
  assert_string_equal(cfg.api_key, "k#not-a-comment");
  assert_string_equal(cfg.jwt_secret, "  spaced \"q\" \\ ");
  assert_int_equal(cfg.demo, 1);
  assert_int_equal(cfg.log_level, 3);
  assert_int_equal(cfg.log_format, SRV_LOG_JSON);
  assert_int_equal(cfg.n_webhooks, 2);
  config_free(&cfg);
  assert_null(cfg.owned);
}

static void test_file_bad(void **state) {
  (void)state;
  static const struct {
    const char *text, *want;
  } bad[] = {
      {"listen\n", "t.conf:1: expected 'key = value'"},
      {"# c\n\nnope = 1\n", "t.conf:3: unknown key 'nope'"},
      {"--max-frame = 4096\n", "t.conf:1: write keys without the leading"},
      {" = 4\n", "t.conf:1: missing key"},
      {"max-frame = 10\n", "t.conf:1: max-frame: expected an integer"},
      {"max-frame = 4096 # four k\n", "t.conf:1: max-frame: expected an int"},
      {"a-comment-free\n#\nmax-body = 1\n", "t.conf:1: expected 'key"},
      {"max-body = 1\nmax-body = 2\n", "t.conf:2: max-body: already set on "
                                       "line 1"},
      {"api-key =\n", "t.conf:1: api-key: expected a non-empty value"},
      {"api-key = \"abc\n", "t.conf:1: api-key: missing closing"},
      {"api-key = \"a\"b\"\n", "t.conf:1: api-key: unescaped"},
      {"api-key = \"a\\nb\"\n", "t.conf:1: api-key: only"},
      {"log-level = loud\n", "t.conf:1: log-level: expected error"},
      {"log-format = xml\n", "t.conf:1: log-format: expected text"},
      {"demo = maybe\n", "t.conf:1: demo: expected 1/0"},
      {"listen = example.com:80\n", "t.conf:1: listen: expected HOST:PORT"},
      {"config = /etc/x\n", "t.conf:1: config: only a command-line flag"},
      {"check-config = 1\n", "t.conf:1: check-config: only a command-line"},
      {"webhook = url=ftp://x\n", "t.conf:1: webhook: "},
      {"\n\n\nmax-watch = 0", "t.conf:4: max-watch: expected an integer"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    srv_config_t cfg;
    config_defaults(&cfg);
    char err[512] = "";
    int rc = parse_text(&cfg, bad[i].text, err, sizeof err);
    config_free(&cfg);
    if (rc != -1 || strncmp(err, bad[i].want, strlen(bad[i].want)) != 0)
      fail_msg("case %zu: rc %d, message '%s', want '%s'", i, rc, err,
               bad[i].want);
  }
  /* A NUL byte inside the text (the length is explicit). */
  srv_config_t cfg;
  config_defaults(&cfg);
  char err[256] = "";
  FILE *e = fmemopen(err, sizeof err, "w");
  assert_int_equal(config_parse_file_text(&cfg, "t.conf", "a\0b = 1\n", 8, e),
                   -1);
  fclose(e);
  assert_non_null(strstr(err, "t.conf:1: NUL byte"));
  config_free(&cfg);
}

static char tmpdir[64];

static const char *write_tmp(const char *name, const char *text) {
  static char path[4][128];
  static int n;
  char *p = path[n++ % 4];
  snprintf(p, 128, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return p;
}

static const char *conf_path;
static const char *layered_env(const char *name) {
  if (!strcmp(name, "PRESENCED_CONFIG")) return conf_path;
  if (!strcmp(name, "PRESENCED_MAX_BODY")) return "2000";
  if (!strcmp(name, "PRESENCED_HEARTBEAT_MS")) return "2001";
  if (!strcmp(name, "PRESENCED_WEBHOOK"))
    return "url=http://127.0.0.1:9/env,secret=whsec-0123456789abcdef0123456789";
  return NULL;
}

static void test_file_precedence(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/presenced-cfg-XXXXXX");
  assert_non_null(mkdtemp(tmpdir));
  const char *key = write_tmp("key", FILE_KEY " \n");
  char text[512];
  snprintf(text, sizeof text,
           "max-body = 1000\nheartbeat-ms = 1001\nmax-watch = 1002\n"
           "api-key-file = %s\n"
           "webhook = url=http://127.0.0.1:9/f1,secret=whsec-0123456789abcdef0123456789\n"
           "webhook = url=http://127.0.0.1:9/f2,secret=whsec-0123456789abcdef0123456789\n",
           key);
  conf_path = write_tmp("p.conf", text);
  srv_config_t cfg;
  char err[256] = "";
  /* file < env < flags */
  char *argv[] = {"presenced", "--heartbeat-ms", "3001"};
  assert_int_equal(parse(&cfg, layered_env, argv, 3, err, sizeof err),
                   CONFIG_OK);
  assert_int_equal(cfg.max_watch, 1002);
  assert_int_equal(cfg.max_body, 2000);
  assert_int_equal(cfg.heartbeat_ms, 3001);
  assert_string_equal(cfg.api_key, FILE_KEY);
  assert_string_equal(cfg.config_file, conf_path);
  /* The environment's webhook list replaces the file's. */
  assert_int_equal(cfg.n_webhooks, 1);
  assert_non_null(strstr(cfg.webhooks[0], "/env"));
  config_free(&cfg);

  /* A flag's API key wins over the file's api-key-file; flags' webhooks
   * replace the environment's; --config on the command line wins over
   * PRESENCED_CONFIG. */
  const char *other = write_tmp("o.conf", "max-watch = 7\n");
  char *argv2[] = {"presenced",
                   "--api-key",
                   FLAG_KEY,
                   "--webhook",
                   "url=http://127.0.0.1:9/x,secret=whsec-0123456789abcdef0123456789",
                   "--webhook=url=http://127.0.0.1:9/y,secret=whsec-0123456789abcdef0123456789",
                   "--config",
                   (char *)other};
  assert_int_equal(parse(&cfg, layered_env, argv2, 8, err, sizeof err),
                   CONFIG_OK);
  assert_string_equal(cfg.api_key, FLAG_KEY);
  assert_null(cfg.api_key_file);
  assert_int_equal(cfg.max_watch, 7);
  assert_int_equal(cfg.n_webhooks, 2);
  assert_non_null(strstr(cfg.webhooks[1], "/y"));
  config_free(&cfg);

  /* --jwt-secret-file; a file given later than a secret wins over it. */
  const char *jwt = write_tmp("jwt", JWT_FILE "\r\n");
  char *argv3[] = {"presenced", "--jwt-secret", "x", "--jwt-secret-file",
                   (char *)jwt};
  assert_int_equal(parse(&cfg, NULL, argv3, 5, err, sizeof err), CONFIG_OK);
  assert_string_equal(cfg.jwt_secret, JWT_FILE);
  config_free(&cfg);

  /* Bad secret files. */
  const char *empty = write_tmp("empty", "\n");
  const char *two = write_tmp("two", "a\nb\n");
  const char *missing = "/nonexistent/presenced-secret";
  const char *bad[] = {empty, two, missing};
  const char *want[] = {"is empty", "single line", "cannot open"};
  for (int i = 0; i < 3; i++) {
    char e2[256] = "";
    char *argv4[] = {"presenced", "--api-key-file", (char *)bad[i]};
    assert_int_equal(parse(&cfg, NULL, argv4, 3, e2, sizeof e2),
                     CONFIG_EXIT_USAGE);
    assert_non_null(strstr(e2, "api-key-file"));
    assert_non_null(strstr(e2, want[i]));
    config_free(&cfg);
  }

  /* A bad file through config_parse: FILE:LINE, exit code 2. */
  const char *badconf = write_tmp("bad.conf", "# ok\nmax-frame = x\n");
  char e3[256] = "";
  char *argv5[] = {"presenced", "--config", (char *)badconf, "--check-config"};
  assert_int_equal(parse(&cfg, NULL, argv5, 4, e3, sizeof e3),
                   CONFIG_EXIT_USAGE);
  char want3[200];
  snprintf(want3, sizeof want3, "%s:2: max-frame: ", badconf);
  assert_non_null(strstr(e3, want3));
  config_free(&cfg);
  char *argv6[] = {"presenced", "--config=/nonexistent/p.conf"};
  assert_int_equal(parse(&cfg, NULL, argv6, 2, e3, sizeof e3),
                   CONFIG_EXIT_USAGE);
  config_free(&cfg);

  const char *paths[] = {"key",   "p.conf", "o.conf",  "jwt",
                         "empty", "two",    "bad.conf"};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    char p[160];
    snprintf(p, sizeof p, "%s/%s", tmpdir, paths[i]);
    unlink(p);
  }
  rmdir(tmpdir);
}

static void test_check_config_and_keys(void **state) {
  (void)state;
  srv_config_t cfg;
  config_defaults(&cfg);
  char out[64] = "", err[256] = "";
  FILE *o = fmemopen(out, sizeof out, "w");
  FILE *e = fmemopen(err, sizeof err, "w");
  char *argv[] = {"presenced", "--check-config", "--log-format", "logfmt"};
  assert_int_equal(config_parse(&cfg, 4, argv, NULL, o, e), CONFIG_EXIT_OK);
  fclose(o);
  fclose(e);
  assert_string_equal(out, "ok\n");
  assert_int_equal(cfg.log_format, SRV_LOG_LOGFMT);

  /* The table of docs/configuration.md lists every key with its default. */
  char *table = NULL;
  size_t len = 0;
  FILE *t = open_memstream(&table, &len);
  config_print_keys_markdown(t);
  fclose(t);
  const char *rows[] = {"| `listen` | `PRESENCED_LISTEN` | `127.0.0.1:7070` |",
                        "| `api-key-file` | `PRESENCED_API_KEY_FILE` | none |",
                        /* one row in two literals (parenthesised: clang
                         * takes the concatenation as meant) */
                        ("| `heartbeat-ms` | `PRESENCED_HEARTBEAT_MS` | "
                         "`25000` | interval of server pings |"),
                        "| `log-format` | `PRESENCED_LOG_FORMAT` | `text` |"};
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    if (!strstr(table, rows[i]))
      fail_msg("missing row %s in\n%s", rows[i], table);
  assert_null(strstr(table, "`config`"));
  free(table);
}

/* Each default the table of docs/configuration.md shows is the one --help
 * states: the table printed "none" for --connection-limit-exempt, whose
 * default is loopback (--help said so), and for --store (memory), so an
 * operator reading the docs believed local proxies were limited per
 * address. */
static void test_keys_defaults_match_help(void **state) {
  (void)state;
  srv_config_t cfg;
  char *help = NULL, *table = NULL;
  size_t hlen = 0, tlen = 0;
  FILE *h = open_memstream(&help, &hlen);
  FILE *e = fopen("/dev/null", "w");
  char *argv[] = {"presenced", "--help"};
  config_defaults(&cfg);
  assert_int_equal(config_parse(&cfg, 2, argv, NULL, h, e), CONFIG_EXIT_OK);
  fclose(h);
  fclose(e);
  config_free(&cfg);
  FILE *t = open_memstream(&table, &tlen);
  config_print_keys_markdown(t);
  fclose(t);
  unsigned checked = 0;
  for (char *line = help; line && *line;) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    /* "  --name   help text (DEFAULT)" */
    size_t ll = strlen(line);
    char *open = strrchr(line, '(');
    if (!strncmp(line, "  --", 4) && ll && line[ll - 1] == ')' && open &&
        !strpbrk(open, " ,")) {
      char name[64], want[160], *sp = strchr(line + 4, ' ');
      assert_non_null(sp);
      snprintf(name, sizeof name, "%.*s", (int)(sp - line - 4), line + 4);
      snprintf(want, sizeof want, "| `%s` | ", name);
      char *row = strstr(table, want);
      if (row) { /* --help, --version and the like have no row */
        char *def = strstr(row + strlen(want), " | ");
        assert_non_null(def);
        char got[128];
        snprintf(got, sizeof got, "%.*s", (int)strcspn(def + 3, " "),
                 def + 3);
        snprintf(want, sizeof want, "`%.*s`", (int)(ll - 1 - (size_t)(open + 1 - line)),
                 open + 1);
        if (strcmp(got, want))
          fail_msg("--%s: --help says %s, --help-keys %s", name, want, got);
        checked++;
      }
    }
    line = nl ? nl + 1 : NULL;
  }
  assert_true(checked > 40);
  free(help);
  free(table);
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
  srv_sys_t sys = {zero_clock, zero_clock, counting_random, &n, NULL, NULL};
  char id[37];
  assert_int_equal(srv_uuid4(&sys, id), 0);
  assert_int_equal(strlen(id), 36);
  assert_string_equal(id, "00010203-0405-4607-8809-0a0b0c0d0e0f");
}

/* Issue 18, secrets: short ones refused without being echoed, a bad file
 * line never echoed, a secret on the command line warned about and wiped
 * from argv, a group-readable secret file warned about, --demo refusing a
 * configured JWT secret. */
static void test_secrets(void **state) {
  (void)state;
  srv_config_t cfg;
  char err[512] = "";
  char *short_key[] = {"presenced", "--api-key", "short-secret-value"};
  assert_int_equal(parse(&cfg, NULL, short_key, 3, err, sizeof err),
                   CONFIG_EXIT_USAGE);
  assert_non_null(strstr(err, "--api-key: too short (18 bytes, at least 32"));
  assert_null(strstr(err, "short-secret-value"));
  config_free(&cfg);
  char *short_jwt[] = {"presenced", "--jwt-secret=tiny-jwt-secret"};
  assert_int_equal(parse(&cfg, NULL, short_jwt, 2, err, sizeof err),
                   CONFIG_EXIT_USAGE);
  assert_non_null(strstr(err, "--jwt-secret: too short"));
  assert_null(strstr(err, "tiny-jwt-secret"));
  config_free(&cfg);
  /* A webhook's HMAC secret as well, inline at start, and in a secret-file
   * by --check-config (which reads it, as the start does). */
  char *short_wh[] = {"presenced", "--webhook",
                      "url=http://127.0.0.1:9/h,secret=tiny-wh-secret"};
  assert_int_equal(parse(&cfg, NULL, short_wh, 3, err, sizeof err),
                   CONFIG_EXIT_USAGE);
  assert_non_null(strstr(err, "--webhook: secret: too short (14 bytes, at "
                              "least 32 needed)"));
  assert_null(strstr(err, "tiny-wh-secret"));
  config_free(&cfg);
  char whf[] = "/tmp/presenced-whsec-XXXXXX";
  int whfd = mkstemp(whf);
  assert_true(whfd >= 0);
  assert_int_equal(write(whfd, "tiny-wh-secret\n", 15), 15);
  close(whfd);
  char whspec[128];
  snprintf(whspec, sizeof whspec, "url=http://127.0.0.1:9/h,secret-file=%s",
           whf);
  char *short_whf[] = {"presenced", "--webhook", whspec, "--check-config"};
  assert_int_equal(parse(&cfg, NULL, short_whf, 4, err, sizeof err),
                   CONFIG_EXIT_USAGE);
  assert_non_null(strstr(err, "too short (14 bytes, at least 32 needed)"));
  assert_null(strstr(err, "tiny-wh-secret"));
  config_free(&cfg);
  unlink(whf);

  /* A line without '=' (a secret pasted alone, or "key: value") and a
   * line whose "key" is not a key: nothing of the line is echoed. */
  const char *lines[] = {"jwt-secret: Sup3rS3cretValue-0123456789abcdef\n",
                         "Sup3rS3cretValue-0123456789abcdef\n",
                         "Sup3rS3cretValue-0123=456789abcdef\n"};
  for (size_t i = 0; i < 3; i++) {
    char e[512] = "";
    FILE *f = fmemopen(e, sizeof e, "w");
    config_defaults(&cfg);
    assert_int_equal(
        config_parse_file_text(&cfg, "t.conf", lines[i], strlen(lines[i]), f),
        -1);
    fclose(f);
    assert_non_null(strstr(e, "t.conf:1:"));
    if (strstr(e, "Sup3rS3cret")) fail_msg("secret echoed: %s", e);
    config_free(&cfg);
  }

  /* On the command line: a warning naming the environment variable, the
   * value copied, and config_wipe_argv blanks it in argv. */
  char a1[] = "--api-key", a2[] = KEY32, a3[] = "--jwt-secret=" FLAG_KEY,
       a4[] = "--webhook", a5[] = "url=http://127.0.0.1:9/h,secret=whsec-0123456789abcdef0123456789",
       a6[] = "--max-frame", a7[] = "4096";
  char *argv[] = {"presenced", a1, a2, a3, a4, a5, a6, a7};
  assert_int_equal(parse(&cfg, NULL, argv, 8, err, sizeof err), CONFIG_OK);
  const char *w = warnings_of(&cfg);
  assert_non_null(strstr(w, "--api-key given on the command line"));
  assert_non_null(strstr(w, "PRESENCED_API_KEY"));
  assert_non_null(strstr(w, "--jwt-secret given"));
  assert_non_null(strstr(w, "--webhook given"));
  config_wipe_argv(8, argv);
  assert_string_equal(cfg.api_key, KEY32);
  assert_string_equal(cfg.jwt_secret, FLAG_KEY);
  assert_non_null(strstr(cfg.webhooks[0], "secret=whsec"));
  assert_null(strstr(a2, "0123"));
  assert_null(strstr(a3, "0123"));
  assert_string_equal(a1, "--api-key");
  assert_null(strstr(a5, "whsec"));
  assert_string_equal(a7, "4096");
  config_free(&cfg);

  /* A secret file readable by others: a warning, not a refusal. */
  char dir[] = "/tmp/presenced-sec-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[128];
  snprintf(path, sizeof path, "%s/jwt", dir);
  FILE *f = fopen(path, "w");
  fputs(JWT_FILE "\n", f);
  fclose(f);
  chmod(path, 0644);
  char *argv2[] = {"presenced", "--jwt-secret-file", path};
  assert_int_equal(parse(&cfg, NULL, argv2, 3, err, sizeof err), CONFIG_OK);
  assert_non_null(
      strstr(warnings_of(&cfg), "readable or writable by group or others"));
  config_free(&cfg);
  chmod(path, 0600);
  assert_int_equal(parse(&cfg, NULL, argv2, 3, err, sizeof err), CONFIG_OK);
  if (*warnings_of(&cfg)) fail_msg("unexpected warning: %s", warnings_of(&cfg));
  config_free(&cfg);

  /* --demo never signs with a configured secret. */
  char *argv3[] = {"presenced", "--demo", "--jwt-secret-file", path};
  assert_int_equal(parse(&cfg, NULL, argv3, 4, err, sizeof err),
                   CONFIG_EXIT_USAGE);
  assert_non_null(strstr(err, "--demo: refusing a JWT secret"));
  config_free(&cfg);
  unlink(path);
  rmdir(dir);
}

/* Hash flooding (issue 18): SipHash-1-3 known answers (CPython's, whose
 * PYTHONHASHSEED=0 is the all-zero key), and a map whose keys all collide
 * under the old unkeyed FNV-1a stays flat under a random key. */
static uint32_t fnv1a(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 16777619u;
  }
  return h;
}

static void test_keyed_hash(void **state) {
  (void)state;
  assert_true(presence_siphash13(0, 0, "abc", 3) == 0xc03bc3a0042630f2ull);
  assert_true(presence_siphash13(0, 0, "alice-0123456789", 16) ==
              0x124e42a40b1b1035ull);
  assert_true(presence_siphash13(0, 0, "a-longer-user-id-of-36-bytes-xxxxxxx",
                                 36) == 0xcd2a6be54d0e3e55ull);
  /* 4096 ids an attacker would pick: the same low 12 bits of FNV-1a, so
   * the old map put them all in one bucket of its 4096. */
  char (*ids)[16] = calloc(4096, 16);
  size_t n = 0;
  for (uint32_t i = 0; n < 4096; i++) {
    char id[16];
    snprintf(id, sizeof id, "u%u", i);
    if ((fnv1a(id) & 4095u) == 0) memcpy(ids[n++], id, sizeof id);
  }
  uint8_t key[16];
  for (int i = 0; i < 16; i++)
    key[i] = (uint8_t)(i * 37 + 11);
  map_hash_key(key);
  map_t m;
  map_init(&m);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(map_put(&m, ids[i], (void *)(uintptr_t)(i + 1)), 0);
  for (size_t i = 0; i < n; i++)
    assert_int_equal((uintptr_t)map_get(&m, ids[i]), i + 1);
  size_t longest = map_longest_chain(&m);
  if (longest > 12) fail_msg("longest chain %zu under a random key", longest);
  map_free(&m);
  free(ids);
  uint8_t zero[16] = {0};
  map_hash_key(zero);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_keys_defaults_match_help),
      cmocka_unit_test(test_flags_over_env),
      cmocka_unit_test(test_bad_values),
      cmocka_unit_test(test_webhook_default_name),
      cmocka_unit_test(test_webhook_same_name),
      cmocka_unit_test(test_webhook_secret_file_missing),
      cmocka_unit_test(test_allowed_origins),
      cmocka_unit_test(test_loopback),
      cmocka_unit_test(test_map),
      cmocka_unit_test(test_uuid),
      cmocka_unit_test(test_file_good),
      cmocka_unit_test(test_file_bad),
      cmocka_unit_test(test_file_precedence),
      cmocka_unit_test(test_check_config_and_keys),
      cmocka_unit_test(test_secrets),
      cmocka_unit_test(test_keyed_hash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
