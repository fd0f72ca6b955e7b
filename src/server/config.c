/*
 * Settings of presenced (see config.h). One table lists every option once:
 * its flag, its environment variable (derived from the flag), its bounds and
 * its help text, so --help, parsing and validation cannot drift apart.
 */
#include "server/config.h"
#include "server/webhook.h"

#include "presence.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum opt_kind { OPT_U32, OPT_STR, OPT_FLAG, OPT_LISTEN, OPT_LEVEL, OPT_WEBHOOK };

typedef struct opt {
  const char *name; /* flag without the leading "--" */
  enum opt_kind kind;
  size_t offset;
  uint32_t min, max;
  const char *help;
} opt_t;

#define U32(name, field, lo, hi, help)                                         \
  { name, OPT_U32, offsetof(srv_config_t, field), lo, hi, help }
#define STR(name, field, help)                                                 \
  { name, OPT_STR, offsetof(srv_config_t, field), 0, 0, help }

static const opt_t opts[] = {
    {"listen", OPT_LISTEN, 0, 0, 0,
     "HOST:PORT to listen on (default 127.0.0.1:7070)"},
    STR("api-key", api_key, "Bearer key for the backend API"),
    STR("jwt-secret", jwt_secret, "HS256 secret for client tokens"),
    STR("jwt-audience", jwt_audience, "expected \"aud\" of client tokens"),
    {"demo", OPT_FLAG, offsetof(srv_config_t, demo), 0, 1,
     "serve the demo page and demo tokens (loopback only)"},
    STR("web-root", web_root, "directory served at / in demo mode (web)"),
    {"log-level", OPT_LEVEL, 0, 0, 0, "error, warn, info or debug (info)"},
    U32("offline-grace-ms", offline_grace_ms, 0, 3600000,
        "delay before user.offline; a reconnect inside cancels it (0)"),
    U32("inactivity-ms", inactivity_ms, 0, 86400000,
        "silence after which a session becomes idle, 0 off (0)"),
    U32("heartbeat-ms", heartbeat_ms, 10, 3600000,
        "interval of server pings (25000)"),
    U32("timeout-ms", timeout_ms, 20, 86400000,
        "silence after which a client is disconnected (60000)"),
    U32("max-frame", max_frame, 125, 64u << 20,
        "largest WebSocket frame payload in bytes (65536)"),
    U32("max-message", max_message, 125, 64u << 20,
        "largest reassembled WebSocket message in bytes (262144)"),
    U32("max-msgs-per-sec", max_msgs_per_sec, 1, 1000000,
        "client messages per second per connection (100)"),
    U32("max-sessions-per-user", max_sessions_per_user, 0, 1000000,
        "sessions one user may hold, 0 unlimited (64)"),
    U32("max-watch", max_watch, 1, 1000000,
        "users one connection may watch (1000)"),
    U32("max-header-bytes", max_header_bytes, 256, 1u << 20,
        "request line plus headers in bytes (8192)"),
    U32("max-body", max_body, 0, 64u << 20, "request body in bytes (1048576)"),
    U32("max-connections", max_connections, 1, 10000000,
        "open connections per process (100000)"),
    U32("max-write-queue", max_write_queue, 1024, 1u << 30,
        "bytes queued to one slow client before it is dropped (1048576)"),
    U32("log-capacity", log_capacity, 16, 1u << 26,
        "events kept in the transition log (65536)"),
    U32("http-idle-ms", http_idle_ms, 100, 86400000,
        "idle HTTP keep-alive connections are closed after (60000)"),
    U32("http-request-timeout-ms", http_request_timeout_ms, 100, 3600000,
        "a request not received whole this long after its first byte gets "
        "408 (10000)"),
    U32("shutdown-timeout-ms", shutdown_timeout_ms, 100, 600000,
        "hard limit of a graceful shutdown (5000)"),
    U32("sse-keepalive-ms", sse_keepalive_ms, 100, 3600000,
        "interval of event-stream keepalive comments (15000)"),
    {"webhook", OPT_WEBHOOK, 0, 0, 0,
     "url=URL,secret=S|secret-file=PATH[,events=T|T...][,name=N]: POST "
     "events to URL (repeatable, see docs/webhooks.md)"},
    U32("webhook-batch-max", webhook_batch_max, 1, 10000,
        "events per webhook request at most (100)"),
    U32("webhook-batch-ms", webhook_batch_ms, 0, 60000,
        "wait this long for more events before a webhook request (100)"),
    U32("webhook-timeout-ms", webhook_timeout_ms, 100, 600000,
        "a webhook request not answered in time is retried (10000)"),
    U32("webhook-retry-min-ms", webhook_retry_min_ms, 10, 3600000,
        "first webhook retry delay, doubled per failure (500)"),
    U32("webhook-retry-max-ms", webhook_retry_max_ms, 10, 3600000,
        "longest webhook retry delay (60000)"),
};

#define NOPTS (sizeof opts / sizeof opts[0])

void config_defaults(srv_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  strcpy(cfg->listen, "127.0.0.1:7070");
  strcpy(cfg->host, "127.0.0.1");
  cfg->port = 7070;
  cfg->web_root = "web";
  cfg->log_level = PRESENCE_LOG_INFO;
  cfg->heartbeat_ms = 25000;
  cfg->timeout_ms = 60000;
  cfg->max_frame = 65536;
  cfg->max_message = 262144;
  cfg->max_msgs_per_sec = 100;
  cfg->max_sessions_per_user = 64;
  cfg->max_watch = 1000;
  cfg->max_header_bytes = 8192;
  cfg->max_body = 1048576;
  cfg->max_connections = 100000;
  cfg->max_write_queue = 1048576;
  cfg->log_capacity = 65536;
  cfg->http_idle_ms = 60000;
  cfg->http_request_timeout_ms = 10000;
  cfg->shutdown_timeout_ms = 5000;
  cfg->sse_keepalive_ms = 15000;
  cfg->webhook_batch_max = 100;
  cfg->webhook_batch_ms = 100;
  cfg->webhook_timeout_ms = 10000;
  cfg->webhook_retry_min_ms = 500;
  cfg->webhook_retry_max_ms = 60000;
}

int config_host_is_loopback(const char *host) {
  if (strcmp(host, "localhost") == 0) return 1;
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, host, &a4) == 1)
    return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &a6) == 1)
    return memcmp(&a6, &in6addr_loopback, sizeof a6) == 0;
  return 0;
}

/* HOST:PORT, [V6ADDR]:PORT. The host must be a literal address or
 * "localhost": presenced does not resolve names at startup. */
static int parse_listen(srv_config_t *cfg, const char *v) {
  if (strlen(v) >= sizeof cfg->listen) return -1;
  const char *colon = strrchr(v, ':');
  if (!colon || colon == v) return -1;
  const char *h = v, *he = colon;
  if (*h == '[') {
    if (he[-1] != ']') return -1;
    h++;
    he--;
  }
  size_t hl = (size_t)(he - h);
  if (hl == 0 || hl >= sizeof cfg->host) return -1;
  char host[256];
  memcpy(host, h, hl);
  host[hl] = '\0';
  if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
  struct in6_addr a6;
  if (inet_pton(AF_INET, host, &a6) != 1 && inet_pton(AF_INET6, host, &a6) != 1)
    return -1;
  char *end;
  errno = 0;
  unsigned long port = strtoul(colon + 1, &end, 10);
  if (errno || *end || end == colon + 1 || port > 65535 || colon[1] == '-' ||
      colon[1] == '+')
    return -1;
  strcpy(cfg->listen, v);
  strcpy(cfg->host, host);
  cfg->port = (int)port;
  return 0;
}

static int parse_level(const char *v) {
  static const char *names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++)
    if (strcmp(v, names[i]) == 0) return i;
  return -1;
}

/* Set one option from text; from names the source for the message. */
static int set_opt(srv_config_t *cfg, const opt_t *o, const char *v,
                   const char *from, FILE *err) {
  char *base = (char *)cfg;
  switch (o->kind) {
  case OPT_STR:
    if (!*v) {
      fprintf(err, "presenced: %s: expected a non-empty value\n", from);
      return -1;
    }
    *(const char **)(base + o->offset) = v;
    return 0;
  case OPT_FLAG: {
    int on;
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"))
      on = 1;
    else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
      on = 0;
    else {
      fprintf(err, "presenced: %s: expected 1/0, true/false, got '%s'\n", from,
              v);
      return -1;
    }
    *(int *)(base + o->offset) = on;
    return 0;
  }
  case OPT_LISTEN:
    if (parse_listen(cfg, v) != 0) {
      fprintf(err,
              "presenced: %s: expected HOST:PORT with a literal address "
              "(e.g. 127.0.0.1:7070 or [::1]:7070), got '%s'\n",
              from, v);
      return -1;
    }
    return 0;
  case OPT_LEVEL: {
    int l = parse_level(v);
    if (l < 0) {
      fprintf(err,
              "presenced: %s: expected error, warn, info or debug, got '%s'\n",
              from, v);
      return -1;
    }
    cfg->log_level = l;
    return 0;
  }
  case OPT_WEBHOOK: {
    char msg[256];
    if (cfg->n_webhooks == SRV_MAX_WEBHOOKS) {
      fprintf(err, "presenced: %s: at most %d webhook endpoints\n", from,
              SRV_MAX_WEBHOOKS);
      return -1;
    }
    /* Syntax only: a secret file is read at startup. */
    if (wh_spec_check(v, msg, sizeof msg) != 0) {
      fprintf(err, "presenced: %s: %s\n", from, msg);
      return -1;
    }
    cfg->webhooks[cfg->n_webhooks++] = v;
    return 0;
  }
  case OPT_U32: {
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || end == v || *end || *v == '-' || *v == '+' || n < o->min ||
        n > o->max) {
      fprintf(err,
              "presenced: %s: expected an integer from %u to %u, got '%s'\n",
              from, o->min, o->max, v);
      return -1;
    }
    *(uint32_t *)(base + o->offset) = (uint32_t)n;
    return 0;
  }
  }
  return -1;
}

static void env_name(const opt_t *o, char *out, size_t cap) {
  size_t n = (size_t)snprintf(out, cap, "PRESENCED_");
  for (const char *s = o->name; *s && n + 1 < cap; s++)
    out[n++] = *s == '-' ? '_' : (char)(*s >= 'a' && *s <= 'z' ? *s - 32 : *s);
  out[n] = '\0';
}

static void usage(FILE *out) {
  fprintf(out, "Usage: presenced [OPTION]...\n"
               "Presence service: WebSocket clients, HTTP backend API.\n\n");
  for (size_t i = 0; i < NOPTS; i++) {
    char env[64];
    env_name(&opts[i], env, sizeof env);
    fprintf(out, "  --%-22s %s\n  %-24s [env %s]\n", opts[i].name, opts[i].help,
            "", env);
  }
  fprintf(out, "  --%-22s %s\n  --%-22s %s\n", "help", "this text", "version",
          "print the version");
}

int config_parse(srv_config_t *cfg, int argc, char **argv,
                 const char *(*getenv_fn)(const char *name), FILE *out,
                 FILE *err) {
  if (getenv_fn) {
    for (size_t i = 0; i < NOPTS; i++) {
      char env[64];
      env_name(&opts[i], env, sizeof env);
      const char *v = getenv_fn(env);
      if (v && set_opt(cfg, &opts[i], v, env, err) != 0)
        return CONFIG_EXIT_USAGE;
    }
    cfg->n_webhooks_env = cfg->n_webhooks;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(out);
      return CONFIG_EXIT_OK;
    }
    if (!strcmp(a, "--version") || !strcmp(a, "-V")) {
      fprintf(out, "presenced %s\n", PRESENCE_VERSION_STRING);
      return CONFIG_EXIT_OK;
    }
    if (strncmp(a, "--", 2) != 0) {
      fprintf(err, "presenced: unexpected argument '%s' (see --help)\n", a);
      return CONFIG_EXIT_USAGE;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t nl = eq ? (size_t)(eq - name) : strlen(name);
    const opt_t *o = NULL;
    for (size_t k = 0; k < NOPTS; k++)
      if (strlen(opts[k].name) == nl && !strncmp(opts[k].name, name, nl))
        o = &opts[k];
    if (!o) {
      fprintf(err, "presenced: unknown option '%.*s' (see --help)\n",
              (int)(nl + 2), a);
      return CONFIG_EXIT_USAGE;
    }
    char flag[64];
    snprintf(flag, sizeof flag, "--%s", o->name);
    const char *v;
    if (eq)
      v = eq + 1;
    else if (o->kind == OPT_FLAG)
      v = "1";
    else if (i + 1 < argc)
      v = argv[++i];
    else {
      fprintf(err, "presenced: %s: missing value\n", flag);
      return CONFIG_EXIT_USAGE;
    }
    /* A repeatable option: the flags replace the environment's value. */
    if (o->kind == OPT_WEBHOOK && cfg->n_webhooks_env) {
      cfg->n_webhooks = cfg->n_webhooks_env = 0;
    }
    if (set_opt(cfg, o, v, flag, err) != 0) return CONFIG_EXIT_USAGE;
  }
  if (cfg->webhook_retry_max_ms < cfg->webhook_retry_min_ms) {
    fprintf(err,
            "presenced: --webhook-retry-max-ms: must be at least "
            "--webhook-retry-min-ms (%u)\n",
            cfg->webhook_retry_min_ms);
    return CONFIG_EXIT_USAGE;
  }
  if (cfg->max_message < cfg->max_frame) {
    fprintf(err,
            "presenced: --max-message: must be at least --max-frame "
            "(%u)\n",
            cfg->max_frame);
    return CONFIG_EXIT_USAGE;
  }
  if (cfg->demo && !config_host_is_loopback(cfg->host)) {
    fprintf(err,
            "presenced: --demo: refusing to start on non-loopback address "
            "'%s' (demo tokens are issued to anyone who asks)\n",
            cfg->host);
    return CONFIG_EXIT_USAGE;
  }
  return CONFIG_OK;
}
