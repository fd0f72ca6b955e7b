/*
 * Every setting of presenced with its default, and how flags and PRESENCED_*
 * environment variables set them (a flag wins over the environment).
 */
#ifndef PRESENCED_CONFIG_H
#define PRESENCED_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SRV_MAX_WEBHOOKS 16

typedef struct srv_config {
  char listen[300]; /* HOST:PORT or [V6]:PORT as given */
  char host[256];   /* parsed from listen */
  int port;
  const char *api_key;      /* NULL: backend API refused */
  const char *jwt_secret;   /* NULL: only --demo generates one */
  const char *jwt_audience; /* NULL: tokens with "aud" are refused */
  const char *web_root;
  int demo;
  int log_level; /* presence_log_level_t */
  uint32_t offline_grace_ms;
  uint32_t inactivity_ms;
  uint32_t heartbeat_ms;
  uint32_t timeout_ms;
  uint32_t max_frame;
  uint32_t max_message;
  uint32_t max_msgs_per_sec;
  uint32_t max_sessions_per_user;
  uint32_t max_watch;
  uint32_t max_header_bytes;
  uint32_t max_body;
  uint32_t max_connections;
  uint32_t max_write_queue;
  uint32_t log_capacity;
  uint32_t http_idle_ms;
  uint32_t http_request_timeout_ms;
  uint32_t shutdown_timeout_ms;
  uint32_t sse_keepalive_ms;
  /* Webhook endpoints: --webhook specs as given (parsed by webhook.c).
   * Repeatable; any --webhook flag replaces the PRESENCED_WEBHOOK one. */
  const char *webhooks[SRV_MAX_WEBHOOKS];
  uint32_t n_webhooks;
  uint32_t n_webhooks_env; /* how many of them came from the environment */
  uint32_t webhook_batch_max;
  uint32_t webhook_batch_ms;
  uint32_t webhook_timeout_ms;
  uint32_t webhook_retry_min_ms;
  uint32_t webhook_retry_max_ms;
} srv_config_t;

void config_defaults(srv_config_t *cfg);

enum { CONFIG_OK = 0, CONFIG_EXIT_OK = 1, CONFIG_EXIT_USAGE = 2 };

/*
 * Apply the environment (through getenv_fn, so tests can pass their own),
 * then the flags. Returns CONFIG_OK, CONFIG_EXIT_OK (--help or --version was
 * printed to out) or CONFIG_EXIT_USAGE (a message naming the flag was printed
 * to err). Strings point into argv or the environment.
 */
int config_parse(srv_config_t *cfg, int argc, char **argv,
                 const char *(*getenv_fn)(const char *name), FILE *out,
                 FILE *err);

/* Whether host is a loopback address or "localhost". */
int config_host_is_loopback(const char *host);

#endif
