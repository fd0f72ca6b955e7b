/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the configuration parser (src/server/config.c):
 * flags and PRESENCED_* environment variables. There is no configuration
 * file parser yet; when one is added, give it a harness next to this one.
 *
 * Input: NUL-separated strings. A string starting with '=' is an
 * environment entry NAME=VALUE (after the '='), any other string is one
 * argv element. Checks, besides memory errors: the documented return
 * codes, and an accepted configuration obeys the invariants the daemon
 * relies on (bounds of config.c's table, max_message >= max_frame, a port,
 * a loopback host in demo mode).
 *
 * An input that starts with two NULs (an empty argv string is otherwise
 * skipped) is the text of a configuration file instead, read by
 * config_parse_file_text as --config's file is (docs/configuration.md).
 */
#include "server/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 64
#define MAX_ENV 32

static char *env_names[MAX_ENV], *env_values[MAX_ENV];
static size_t n_env;
static FILE *devnull;

static const char *fake_getenv(const char *name) {
  /* The last entry wins, like a real environment built by appending. */
  for (size_t i = n_env; i-- > 0;)
    if (!strcmp(env_names[i], name)) return env_values[i];
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!devnull) devnull = fopen("/dev/null", "w");
  if (!devnull) abort();
  if (size >= 2 && data[0] == 0 && data[1] == 0) {
    /* Exactly the file's bytes, no terminator: ASan sees a read past them. */
    size_t n = size - 2;
    char *text = malloc(n ? n : 1);
    if (!text) return 0;
    memcpy(text, data + 2, n);
    srv_config_t cfg;
    config_defaults(&cfg);
    int rc = config_parse_file_text(&cfg, "fuzz.conf", text, n, devnull);
    if (rc != 0 && rc != -1) abort();
    config_free(&cfg);
    free(text);
    return 0;
  }
  char *copy = malloc(size + 1);
  if (!copy) return 0;
  memcpy(copy, data, size);
  copy[size] = '\0';
  char *argv[MAX_ARGS + 1];
  int argc = 0;
  argv[argc++] = "presenced";
  n_env = 0;
  for (char *s = copy; s <= copy + size;) {
    size_t l = strlen(s);
    if (s[0] == '=') {
      char *eq = strchr(s + 1, '=');
      if (eq && n_env < MAX_ENV) {
        *eq = '\0';
        env_names[n_env] = s + 1;
        env_values[n_env++] = eq + 1;
      }
    } else if (l && argc < MAX_ARGS) {
      argv[argc++] = s;
    }
    s += l + 1;
  }
  argv[argc] = NULL;

  srv_config_t cfg;
  config_defaults(&cfg);
  int rc = config_parse(&cfg, argc, argv, fake_getenv, devnull, devnull);
  if (rc != CONFIG_OK && rc != CONFIG_EXIT_OK && rc != CONFIG_EXIT_USAGE)
    abort();
  if (rc == CONFIG_OK) {
    if (cfg.max_message < cfg.max_frame) abort();
    if (cfg.port < 0 || cfg.port > 65535) abort();
    if (cfg.max_frame < 125 || cfg.max_watch < 1 || cfg.max_msgs_per_sec < 1)
      abort();
    if (cfg.heartbeat_ms < 10 || cfg.timeout_ms < 20) abort();
    if (!memchr(cfg.listen, '\0', sizeof cfg.listen) ||
        !memchr(cfg.host, '\0', sizeof cfg.host))
      abort();
    if (cfg.demo && !config_host_is_loopback(cfg.host)) abort();
    if (cfg.api_key && strlen(cfg.api_key) < CONFIG_SECRET_MIN) abort();
    if (cfg.jwt_secret && strlen(cfg.jwt_secret) < CONFIG_SECRET_MIN) abort();
    if (cfg.demo && cfg.jwt_secret) abort();
  }
  config_free(&cfg);
  free(copy);
  return 0;
}
