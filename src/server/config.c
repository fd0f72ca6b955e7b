/* SPDX-License-Identifier: MIT */
/*
 * Settings of presenced (see config.h). One table lists every option once:
 * its flag, its key in the configuration file (the flag without "--"), its
 * environment variable (derived from the flag), its bounds and its help
 * text, so --help, the file, the environment, validation and the table in
 * docs/configuration.md (--help-keys) cannot drift apart.
 */
#include "server/config.h"
#include "server/webhook.h"

#include "presence.h"
#ifdef PRESENCED_HAVE_REDIS
#include "presence_redis.h"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

enum opt_kind {
  OPT_U32,
  OPT_STR,
  OPT_FLAG,
  OPT_LISTEN,
  OPT_LEVEL,
  OPT_WEBHOOK,
  OPT_LOGFMT,
  OPT_SECRET_FILE, /* a path; the file's content becomes another option */
  OPT_CONFIG,      /* --config: read before everything else */
  OPT_CHECK        /* --check-config */
};

/* Where a value came from; a higher source overrides a lower one. */
enum { SRC_FILE = 1, SRC_ENV, SRC_FLAG };

/* Largest configuration file and secret file read (a guard against a path
 * to a device or a log file by mistake, not a format limit). */
#define CONFIG_FILE_MAX (1u << 20)
#define SECRET_FILE_MAX 65536u

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
/* A secret read from a file: offset is the path's field, min the offset of
 * the string option it fills (setting either clears the other). */
#define SECRET(name, field, target, help)                                      \
  {                                                                            \
    name, OPT_SECRET_FILE, offsetof(srv_config_t, field),                      \
        (uint32_t)offsetof(srv_config_t, target), 0, help                      \
  }

static const opt_t opts[] = {
    {"config", OPT_CONFIG, offsetof(srv_config_t, config_file), 0, 0,
     "read settings from FILE (key = value lines; flag and environment win)"},
    {"check-config", OPT_CHECK, offsetof(srv_config_t, check_config), 0, 1,
     "check the settings (file, environment, flags, secret files), print "
     "ok and exit"},
    {"listen", OPT_LISTEN, 0, 0, 0,
     "HOST:PORT to listen on (default 127.0.0.1:7070)"},
    STR("api-key", api_key, "Bearer key for the backend API"),
    SECRET("api-key-file", api_key_file, api_key,
           "read the API key from this file (one line)"),
    STR("jwt-secret", jwt_secret, "HS256 secret for client tokens"),
    SECRET("jwt-secret-file", jwt_secret_file, jwt_secret,
           "read the JWT secret from this file (one line)"),
    STR("jwt-audience", jwt_audience,
        "expected \"aud\" of client tokens (then required in every token)"),
    STR("jwt-issuer", jwt_issuer,
        "expected \"iss\" of client tokens (then required in every token)"),
    U32("jwt-max-lifetime-s", jwt_max_lifetime_s, 0, 3650u * 86400,
        "refuse tokens valid longer than this (exp - iat), 0 any (0)"),
    U32("jwt-leeway-s", jwt_leeway_s, 0, 300,
        "clock skew allowed on exp, nbf and iat of client tokens (5)"),
    STR("allowed-origins", allowed_origins,
        "origins (scheme://host[:port], the host perhaps *.domain for its "
        "subdomains; comma-separated; or *) allowed to open a WebSocket; "
        "unset: the same origin only"),
    {"demo", OPT_FLAG, offsetof(srv_config_t, demo), 0, 1,
     "serve the demo page and demo tokens (loopback only)"},
    STR("web-root", web_root, "directory served at / in demo mode (web)"),
    {"metrics-open", OPT_FLAG, offsetof(srv_config_t, metrics_open), 0, 1,
     "serve /metrics without the API key (a private scrape port only: its "
     "counts include invisible users)"},
    {"log-level", OPT_LEVEL, 0, 0, 0, "error, warn, info or debug (info)"},
    {"log-format", OPT_LOGFMT, 0, 0, 0,
     "text, logfmt or json: one line per record on stderr (text)"},
    U32("offline-grace-ms", offline_grace_ms, 0, 3600000,
        "delay before user.offline; a reconnect inside cancels it, 0 off "
        "(10000)"),
    U32("offline-retention-s", offline_retention_s, 0, 3650u * 86400,
        "forget an offline user (its last_seen) this long after, 0 never "
        "(2592000)"),
    U32("message-max-chars", message_max_chars, 1, 4096,
        "longest status message a person may set, in characters (128)"),
    U32("inactivity-ms", inactivity_ms, 0, 86400000,
        "time without a client message (keepalives do not count: "
        "protocol.md 1.2) after which a session becomes idle, 0 off (0)"),
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
    U32("channel-grace-ms", channel_grace_ms, 0, 3600000,
        "delay before channel.leave after a member's last session ended, 0 "
        "off (the offline grace)"),
    U32("expected-memberships", expected_memberships, 0, 100000000,
        "channel memberships to size the embedded store's member table for "
        "up front, 0: grow as they come (0)"),
    U32("max-channels-per-session", max_channels_per_session, 1, 100000,
        "channels one session may join and observe together (32)"),
    U32("max-channel-data", max_channel_data, 2, PRESENCE_DATA_MAX,
        "bytes of a session's member data in a channel (1024)"),
    U32("channel-page", channel_page, 1, 1000,
        "members in a channel snapshot and in each WebSocket members page "
        "after it (100)"),
    U32("max-channel-name", max_channel_name, 1, PRESENCE_CHANNEL_MAX,
        "bytes of a channel name (128)"),
    U32("channel-joins-per-s", channel_joins_per_s, 1, 1000000,
        "joins and observes per second per session (10)"),
    U32("max-header-bytes", max_header_bytes, 256, 1u << 20,
        "request line plus headers in bytes (8192)"),
    U32("max-body", max_body, 0, 64u << 20, "request body in bytes (1048576)"),
    U32("listen-backlog", listen_backlog, 1, 1u << 20,
        "accept queue length asked of the kernel, capped by net.core.somaxconn "
        "(65535)"),
    U32("max-connections", max_connections, 1, 10000000,
        "open connections per process, lowered to fit the open file limit "
        "(100000)"),
    U32("max-connections-per-ip", max_connections_per_ip, 0, 10000000,
        "open connections from one client address, 0 unlimited (256)"),
    STR("connection-limit-exempt", connection_limit_exempt,
        "addresses not held to --max-connections-per-ip (your proxies): "
        "loopback, none, or addresses, comma-separated (loopback)"),
    U32("http-first-byte-ms", http_first_byte_ms, 100, 3600000,
        "a new connection that sends nothing this long is closed (5000)"),
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
    U32("max-origins", max_origins, 1, 1000000,
        "backend origins (GET /v1/backend names) held at once (1024)"),
    U32("origin-lease-ms", origin_lease_ms, 100, 3600000,
        "a backend connection silent this long is closed, its origin "
        "detached (15000)"),
    U32("origin-resume-ms", origin_resume_ms, 0, 86400000,
        "a detached origin's sessions wait this long for the backend to "
        "come back, then end with reason origin_lost (30000)"),
    U32("backend-max-ops", backend_max_ops, 1, 1000000,
        "ops (or sync sessions) in one backend frame (10000)"),
    U32("backend-ops-per-sec", backend_ops_per_sec, 1, 100000000,
        "ops one origin may send per second; over it a batch is refused "
        "with rate_limited (1000000)"),
    U32("backend-max-message", backend_max_message, 125, 256u << 20,
        "largest backend frame or message in bytes (16777216)"),
    STR("store", store,
        "memory, redis://[USER[:PASSWORD]@]HOST:PORT/DB, rediss://... (TLS), "
        "unix:/PATH?db=N or redis+sentinel://[USER[:PASSWORD]@]HOST:PORT,"
        "HOST:PORT/MASTER[/DB] (rediss+sentinel://): where presence lives; "
        "many instances share one Redis (memory)"),
    STR("redis-user", redis_user,
        "Redis ACL user (overrides the --store URL's)"),
    STR("redis-password", redis_password,
        "Redis password (overrides the --store URL's; prefer the "
        "environment or --redis-password-file to a flag)"),
    SECRET("redis-password-file", redis_password_file, redis_password,
           "read the Redis password from this file (one line)"),
    STR("redis-sentinel-user", redis_sentinel_user,
        "redis+sentinel://: ACL user on the sentinels"),
    STR("redis-sentinel-password", redis_sentinel_password,
        "redis+sentinel://: the sentinels' password (the URL's is the data "
        "nodes'; prefer the environment or the -file flag)"),
    SECRET("redis-sentinel-password-file", redis_sentinel_password_file,
           redis_sentinel_password,
           "read the sentinels' password from this file (one line)"),
    STR("redis-tls-ca", redis_tls_ca,
        "rediss://: CA file the server's certificate must chain to (the "
        "system's CAs)"),
    STR("redis-tls-cert", redis_tls_cert,
        "rediss://: client certificate (PEM), for tls-auth-clients"),
    STR("redis-tls-key", redis_tls_key,
        "rediss://: the client certificate's key, a PEM file"),
    STR("redis-tls-server-name", redis_tls_server_name,
        "rediss://: name sent (SNI) and checked in the certificate (the "
        "URL's host)"),
    U32("redis-heartbeat-ms", redis_heartbeat_ms, 50, 600000,
        "Redis store: interval of lease renewals (2000)"),
    U32("redis-lease-ms", redis_lease_ms, 150, 3600000,
        "Redis store: an instance silent this long is dead and reaped "
        "(6000)"),
    U32("redis-timeout-ms", redis_timeout_ms, 50, 600000,
        "Redis store: a command unanswered this long drops the connection "
        "(2000)"),
    U32("redis-log-length", redis_log_length, 1000, 100000000,
        "Redis store: events the shared log keeps for resuming consumers "
        "(100000)"),
    STR("redis-cluster", redis_cluster,
        "Redis Cluster: HOST:PORT,HOST:PORT,... of some of its nodes (--store "
        "redis://... gives credentials and TLS); the store runs in "
        "--redis-shards shards, each following its slot's node"),
    U32("redis-shards", redis_shards, 0, 1024,
        "Redis store: virtual shards, the same on every instance sharing "
        "the prefix (1; 12 with --redis-cluster); see docs/internals/redis.md"),
    U32("workers", workers, 0, 256,
        "Redis store: run this many worker processes sharing the listening "
        "port (SO_REUSEPORT), each its own instance; 0 or 1 one process (0)"),
    {"webhook", OPT_WEBHOOK, 0, 0, 0,
     "url=URL,secret=S|secret-file=PATH[,events=T|T...][,name=N][,ca=PATH]: "
     "POST events to URL (repeatable, see docs/webhooks.md)"},
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

void config_set_bound_port(srv_config_t *cfg, const struct sockaddr *sa) {
  int port = ntohs(sa->sa_family == AF_INET6
                       ? ((const struct sockaddr_in6 *)sa)->sin6_port
                       : ((const struct sockaddr_in *)sa)->sin_port);
  /* listen was parsed as HOST:PORT: its host part is kept as written. */
  const char *colon = strrchr(cfg->listen, ':');
  if (!colon) return;
  char was[sizeof cfg->listen];
  snprintf(was, sizeof was, "%s", cfg->listen);
  snprintf(cfg->listen, sizeof cfg->listen, "%.*s:%d",
           (int)(colon - cfg->listen), was, port);
  cfg->port = port;
}

void config_defaults(srv_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  strcpy(cfg->listen, "127.0.0.1:7070");
  strcpy(cfg->host, "127.0.0.1");
  cfg->port = 7070;
  cfg->web_root = "web";
  /* Spelt out, not left NULL (which meant the same), so that the table of
   * docs/configuration.md (--help-keys) shows them rather than "none". */
  cfg->store = "memory";
  cfg->connection_limit_exempt = "loopback";
  cfg->log_level = PRESENCE_LOG_INFO;
  /* 10 s of offline grace: a page reload (the old socket closes at unload,
   * the page loads, fetches a token from the application, connects) and a
   * token-driven reconnect (close 4001, a retry after 250-500 ms, getToken,
   * connect, maybe a second attempt 0.5-1 s later) both fit with room on a
   * slow mobile link, so neither emits user.offline then user.online to
   * watchers and webhooks. A closed tab shows offline 10 s late, which a
   * presence display tolerates. --offline-grace-ms 0 restores the immediate
   * user.offline (docs/configuration.md). */
  cfg->offline_grace_ms = 10000;
  cfg->heartbeat_ms = 25000;
  cfg->timeout_ms = 60000;
  cfg->max_frame = 65536;
  cfg->max_message = 262144;
  cfg->max_msgs_per_sec = 100;
  cfg->max_sessions_per_user = 64;
  cfg->max_watch = 1000;
  cfg->channel_grace_ms = UINT32_MAX; /* unset: the offline grace */
  cfg->max_channels_per_session = 32;
  cfg->max_channel_data = 1024;
  cfg->channel_page = 100;
  cfg->max_channel_name = PRESENCE_CHANNEL_MAX;
  cfg->channel_joins_per_s = 10;
  cfg->max_header_bytes = 8192;
  cfg->max_body = 1048576;
  cfg->max_connections = 100000;
  cfg->max_connections_per_ip = 256;
  cfg->http_first_byte_ms = 5000;
  cfg->jwt_leeway_s = 5;
  /* 30 days: "last seen" stays answerable for a month, and a store that
   * sees a stream of new ids (bots, a public demo, id churn) stops growing
   * once the oldest age out. */
  cfg->offline_retention_s = 30u * 86400;
  cfg->message_max_chars = PRESENCE_MESSAGE_MAX_CHARS;
  cfg->listen_backlog = 65535;
  cfg->max_write_queue = 1048576;
  cfg->log_capacity = 65536;
  cfg->http_idle_ms = 60000;
  cfg->http_request_timeout_ms = 10000;
  cfg->shutdown_timeout_ms = 5000;
  cfg->sse_keepalive_ms = 15000;
  cfg->max_origins = 1024;
  cfg->origin_lease_ms = 15000;
  cfg->origin_resume_ms = 30000;
  cfg->backend_max_ops = 10000;
  cfg->backend_ops_per_sec = 1000000;
  cfg->backend_max_message = 16u << 20;
  cfg->redis_heartbeat_ms = 2000;
  cfg->redis_lease_ms = 6000;
  cfg->redis_timeout_ms = 2000;
  cfg->redis_log_length = 100000;
  cfg->webhook_batch_max = 100;
  cfg->webhook_batch_ms = 100;
  cfg->webhook_timeout_ms = 10000;
  cfg->webhook_retry_min_ms = 500;
  cfg->webhook_retry_max_ms = 60000;
}

/* A string the configuration owns (a file value, a secret). */
struct config_str {
  struct config_str *next;
  char s[];
};

static char *own(srv_config_t *cfg, const char *v, size_t len) {
  struct config_str *o = malloc(sizeof *o + len + 1);
  if (!o) return NULL;
  memcpy(o->s, v, len);
  o->s[len] = '\0';
  o->next = cfg->owned;
  cfg->owned = o;
  return o->s;
}

/* Record a warning (config_each_warning); dropped when out of memory. */
static void warn(srv_config_t *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void warn(srv_config_t *cfg, const char *fmt, ...) {
  char text[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  size_t n = strlen(text);
  struct config_str *w = malloc(sizeof *w + n + 1);
  if (!w) return;
  memcpy(w->s, text, n + 1);
  w->next = NULL;
  struct config_str **tail = &cfg->warnings;
  while (*tail)
    tail = &(*tail)->next;
  *tail = w;
}

void config_each_warning(const srv_config_t *cfg,
                         void (*fn)(void *ud, const char *warning), void *ud) {
  for (const struct config_str *w = cfg->warnings; w; w = w->next)
    fn(ud, w->s);
}

void config_free(srv_config_t *cfg) {
  for (struct config_str *w = cfg->warnings, *n; w; w = n) {
    n = w->next;
    free(w);
  }
  cfg->warnings = NULL;
  struct config_str *o = cfg->owned;
  while (o) {
    struct config_str *n = o->next;
    /* Secrets should not linger in freed memory. */
    memset(o->s, 0, strlen(o->s));
    free(o);
    o = n;
  }
  cfg->owned = NULL;
}

int config_store_is_redis(const srv_config_t *cfg) {
  const char *v = cfg->store;
  if (!v || !*v || !strcmp(v, "memory")) return 0;
#ifdef PRESENCED_HAVE_REDIS
  /* The store's own parser: what it accepts, and only that. */
  return presence_redis_url_valid(v) ? 1 : -1;
#else
  if (!strncmp(v, "redis://", 8) || !strncmp(v, "rediss://", 9) ||
      !strncmp(v, "unix:/", 6) || !strncmp(v, "redis+sentinel://", 17) ||
      !strncmp(v, "rediss+sentinel://", 18))
    return 1;
  return -1;
#endif
}

void config_store_redacted(const srv_config_t *cfg, char *out, size_t n) {
#ifdef PRESENCED_HAVE_REDIS
  presence_redis_url_redact(cfg->store, out, n);
#else
  /* Without the store nothing parses the URL: show its scheme only. */
  const char *v = cfg->store ? cfg->store : "";
  snprintf(out, n, "%.*s", (int)strcspn(v, ":"), v);
#endif
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

static int parse_log_format(const char *v) {
  static const char *names[] = {"text", "logfmt", "json"};
  for (int i = 0; i < 3; i++)
    if (strcmp(v, names[i]) == 0) return i;
  return -1;
}

/* Set one option from text given by source (SRC_*). On error, the reason
 * (without the option's name: the caller knows how to name the source) is
 * written to msg. */
static int set_opt(srv_config_t *cfg, const opt_t *o, const char *v, int source,
                   char *msg, size_t cap) {
  char *base = (char *)cfg;
  switch (o->kind) {
  case OPT_CONFIG: /* read before every other source */
    return 0;
  case OPT_STR:
    if (!*v) {
      snprintf(msg, cap, "expected a non-empty value");
      return -1;
    }
    *(const char **)(base + o->offset) = v;
    /* The value given last wins over a file named for the same secret. */
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
      if (opts[i].kind == OPT_SECRET_FILE && opts[i].min == o->offset)
        *(const char **)(base + opts[i].offset) = NULL;
    return 0;
  case OPT_SECRET_FILE:
    if (!*v) {
      snprintf(msg, cap, "expected a file name");
      return -1;
    }
    *(const char **)(base + o->offset) = v;
    *(const char **)(base + o->min) = NULL;
    return 0;
  case OPT_FLAG:
  case OPT_CHECK: {
    int on;
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"))
      on = 1;
    else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
      on = 0;
    else {
      snprintf(msg, cap, "expected 1/0, true/false, got '%.64s'", v);
      return -1;
    }
    *(int *)(base + o->offset) = on;
    return 0;
  }
  case OPT_LISTEN:
    if (parse_listen(cfg, v) != 0) {
      snprintf(msg, cap,
               "expected HOST:PORT with a literal address "
               "(e.g. 127.0.0.1:7070 or [::1]:7070), got '%.200s'",
               v);
      return -1;
    }
    return 0;
  case OPT_LEVEL: {
    int l = parse_level(v);
    if (l < 0) {
      snprintf(msg, cap, "expected error, warn, info or debug, got '%.64s'", v);
      return -1;
    }
    cfg->log_level = l;
    return 0;
  }
  case OPT_LOGFMT: {
    int f = parse_log_format(v);
    if (f < 0) {
      snprintf(msg, cap, "expected text, logfmt or json, got '%.64s'", v);
      return -1;
    }
    cfg->log_format = f;
    return 0;
  }
  case OPT_WEBHOOK: {
    /* A repeatable option: one source's list replaces a lower one's. */
    if (cfg->webhooks_source != (uint32_t)source) {
      cfg->n_webhooks = 0;
      cfg->webhooks_source = (uint32_t)source;
    }
    if (cfg->n_webhooks == SRV_MAX_WEBHOOKS) {
      snprintf(msg, cap, "at most %d webhook endpoints", SRV_MAX_WEBHOOKS);
      return -1;
    }
    /* Syntax only: a secret file is read at startup. */
    if (wh_spec_check(v, msg, cap) != 0) return -1;
    cfg->webhooks[cfg->n_webhooks++] = v;
    return 0;
  }
  case OPT_U32: {
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || end == v || *end || *v == '-' || *v == '+' || n < o->min ||
        n > o->max) {
      snprintf(msg, cap, "expected an integer from %u to %u, got '%.64s'",
               o->min, o->max, v);
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
  fprintf(out,
          "Usage: presenced [OPTION]...\n"
          "Presence service: WebSocket clients, HTTP backend API.\n\n"
          "Settings come from defaults, then the --config file, then\n"
          "PRESENCED_* environment variables, then flags (the later wins).\n"
          "In the file, each option is a line 'name = value' (name without\n"
          "the leading --); see presenced(8) and docs/configuration.md.\n\n");
  for (size_t i = 0; i < NOPTS; i++) {
    char env[64];
    env_name(&opts[i], env, sizeof env);
    /* --check-config is a flag only: see apply_env. */
    if (opts[i].kind == OPT_CHECK)
      fprintf(out, "  --%-22s %s\n", opts[i].name, opts[i].help);
    else
      fprintf(out, "  --%-22s %s\n  %-24s [env %s]\n", opts[i].name,
              opts[i].help, "", env);
  }
  fprintf(out, "  --%-22s %s\n  --%-22s %s\n  --%-22s %s\n", "help",
          "this text", "help-keys",
          "the settings as a Markdown table (docs/configuration.md)", "version",
          "print the version");
}

/* Print s for a Markdown table cell: '|' would end the cell. */
static void md_cell(FILE *out, const char *s, size_t n) {
  for (size_t i = 0; i < n && s[i]; i++) {
    if (s[i] == '|') fputc('\\', out);
    fputc(s[i], out);
  }
}

/* The meaning of an option without a trailing "(DEFAULT)": the table
 * prints the default itself, from config_defaults. */
static size_t help_len(const char *h) {
  size_t n = strlen(h);
  if (n < 3 || h[n - 1] != ')') return n;
  const char *open = strrchr(h, '(');
  if (!open || open == h || open[-1] != ' ') return n;
  /* "(64)", "(info)", "(default X)"; not "(repeatable, see ...)". */
  if (strncmp(open, "(default ", 9) != 0 &&
      strcspn(open, " ,") < (size_t)(h + n - open))
    return n;
  return (size_t)(open - 1 - h);
}

void config_print_keys_markdown(FILE *out) {
  static const char *levels[] = {"error", "warn", "info", "debug"};
  static const char *formats[] = {"text", "logfmt", "json"};
  srv_config_t d;
  config_defaults(&d);
  fprintf(out, "| key | environment | default | meaning |\n"
               "|---|---|---|---|\n");
  for (size_t i = 0; i < NOPTS; i++) {
    const opt_t *o = &opts[i];
    if (o->kind == OPT_CONFIG || o->kind == OPT_CHECK) continue;
    char env[64], def[320];
    env_name(o, env, sizeof env);
    const char *base = (const char *)&d;
    switch (o->kind) {
    case OPT_U32:
      if (*(const uint32_t *)(base + o->offset) == UINT32_MAX)
        snprintf(def, sizeof def, "unset"); /* follows another key */
      else
        snprintf(def, sizeof def, "`%u`",
                 *(const uint32_t *)(base + o->offset));
      break;
    case OPT_STR: {
      const char *v = *(const char *const *)(base + o->offset);
      snprintf(def, sizeof def, v ? "`%s`" : "none", v);
      break;
    }
    case OPT_FLAG:
      snprintf(def, sizeof def, "`%s`",
               *(const int *)(base + o->offset) ? "true" : "false");
      break;
    case OPT_LISTEN:
      snprintf(def, sizeof def, "`%s`", d.listen);
      break;
    case OPT_LEVEL:
      snprintf(def, sizeof def, "`%s`", levels[d.log_level]);
      break;
    case OPT_LOGFMT:
      snprintf(def, sizeof def, "`%s`", formats[d.log_format]);
      break;
    default: /* repeatable lists and secret files start empty */
      snprintf(def, sizeof def, "none");
      break;
    }
    fprintf(out, "| `%s` | `%s` | %s | ", o->name, env, def);
    md_cell(out, o->help, help_len(o->help));
    fprintf(out, " |\n");
  }
}

static const opt_t *find_opt(const char *name, size_t len) {
  for (size_t k = 0; k < NOPTS; k++)
    if (strlen(opts[k].name) == len && !strncmp(opts[k].name, name, len))
      return &opts[k];
  return NULL;
}

/* Whether the option takes no value on the command line. */
static int is_switch(const opt_t *o) {
  return o->kind == OPT_FLAG || o->kind == OPT_CHECK;
}

static int is_space(char c) {
  return c == ' ' || c == '\t';
}

/* Unquote a "..." value (\" and \\ are the only escapes) into a new owned
 * string; NULL with msg on a malformed one. */
static const char *unquote(srv_config_t *cfg, const char *a, const char *b,
                           char *msg, size_t cap) {
  size_t n = (size_t)(b - a);
  if (n < 2 || b[-1] != '"') {
    snprintf(msg, cap, "missing closing '\"'");
    return NULL;
  }
  char *out = own(cfg, a + 1, n - 2);
  if (!out) {
    snprintf(msg, cap, "out of memory");
    return NULL;
  }
  size_t o = 0;
  for (const char *p = a + 1; p < b - 1; p++) {
    if (*p == '"') {
      snprintf(msg, cap, "unescaped '\"' inside a quoted value");
      return NULL;
    }
    if (*p == '\\') {
      if (p + 1 >= b - 1 || (p[1] != '"' && p[1] != '\\')) {
        snprintf(msg, cap, "only \\\" and \\\\ may be escaped");
        return NULL;
      }
      p++;
    }
    out[o++] = *p;
  }
  out[o] = '\0';
  return out;
}

/* Whether a would-be key can be echoed: lower-case words joined by '-' or
 * '_', as every key is. Anything else may be part of a secret. */
static int key_like(const char *k, size_t n) {
  if (n == 0 || n > 40) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((k[i] >= 'a' && k[i] <= 'z') || k[i] == '-' || k[i] == '_'))
      return 0;
  return 1;
}

static unsigned edit_distance(const char *a, const char *b);

/* The option an unknown name most likely meant: the same name with '_' for
 * '-' or in capitals, a unit left off (offline-grace for offline-grace-ms)
 * or a typo of one or two letters; NULL when none is that close. */
static const char *nearest_opt(const char *name, size_t n) {
  char want[64];
  if (n >= sizeof want) return NULL;
  for (size_t i = 0; i < n; i++) {
    char ch = name[i] == '_' ? '-' : name[i];
    want[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
  }
  want[n] = '\0';
  const char *best = NULL;
  unsigned best_d = 3;
  for (size_t i = 0; i < NOPTS; i++) {
    const char *o = opts[i].name;
    unsigned d = edit_distance(want, o);
    if (!strncmp(o, want, n) && o[n] == '-') d = 1;
    if (d < best_d) {
      best_d = d;
      best = o;
    }
  }
  return best;
}

int config_parse_file_text(srv_config_t *cfg, const char *name,
                           const char *text, size_t len, FILE *err) {
  unsigned seen[NOPTS];
  memset(seen, 0, sizeof seen);
  const char *p = text, *end = text + len;
  /* A UTF-8 byte-order mark, as editors on Windows write one: not part of
   * the first key (which was then refused as unknown and, looking like no
   * key, not even shown). */
  if (len >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3;
  char msg[384];
  for (unsigned line = 1; p < end; line++) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *a = p, *b = eol ? eol : end;
    p = eol ? eol + 1 : end;
    if (memchr(a, '\0', (size_t)(b - a))) {
      fprintf(err, "%s:%u: NUL byte in the line\n", name, line);
      return -1;
    }
    if (b > a && b[-1] == '\r') b--;
    while (a < b && is_space(*a))
      a++;
    while (b > a && is_space(b[-1]))
      b--;
    /* '#' starts a comment only at the start of a line: values such as
     * secrets and URLs may hold one. */
    if (a == b || *a == '#') continue;
    const char *eq = memchr(a, '=', (size_t)(b - a));
    if (!eq) {
      /* The line is not echoed: it may be a secret on a line of its own
       * ("jwt-secret: ..." or the secret pasted without a key). */
      fprintf(err, "%s:%u: expected 'key = value' (the line is not shown: it "
                   "may hold a secret)\n", name, line);
      return -1;
    }
    const char *ke = eq;
    while (ke > a && is_space(ke[-1]))
      ke--;
    const char *v = eq + 1;
    while (v < b && is_space(*v))
      v++;
    int kl = (int)(ke - a > 64 ? 64 : ke - a);
    if (ke == a) {
      fprintf(err, "%s:%u: missing key before '='\n", name, line);
      return -1;
    }
    const opt_t *o = find_opt(a, (size_t)(ke - a));
    if (!o && ke - a > 2 && a[0] == '-' && a[1] == '-') {
      fprintf(err, "%s:%u: write keys without the leading '--': '%.*s'\n", name,
              line, kl - 2, a + 2);
      return -1;
    }
    if (!o && !key_like(a, (size_t)(ke - a))) {
      fprintf(err, "%s:%u: unknown key (not shown: it does not look like one "
                   "and may be a secret; see presenced --help)\n", name, line);
      return -1;
    }
    if (!o) {
      const char *near = nearest_opt(a, (size_t)(ke - a));
      if (near)
        fprintf(err, "%s:%u: unknown key '%.*s': did you mean '%s'?\n", name,
                line, kl, a, near);
      else
        fprintf(err, "%s:%u: unknown key '%.*s' (see presenced --help)\n",
                name, line, kl, a);
      return -1;
    }
    if (o->kind == OPT_CONFIG || o->kind == OPT_CHECK) {
      fprintf(err, "%s:%u: %s: only a command-line flag\n", name, line,
              o->name);
      return -1;
    }
    size_t k = (size_t)(o - opts);
    if (o->kind != OPT_WEBHOOK && seen[k]) {
      fprintf(err, "%s:%u: %s: already set on line %u\n", name, line, o->name,
              seen[k]);
      return -1;
    }
    seen[k] = line;
    const char *val;
    if (v < b && *v == '"')
      val = unquote(cfg, v, b, msg, sizeof msg);
    else if (!(val = own(cfg, v, (size_t)(b - v))))
      snprintf(msg, sizeof msg, "out of memory");
    if (!val || set_opt(cfg, o, val, SRC_FILE, msg, sizeof msg) != 0) {
      fprintf(err, "%s:%u: %s: %s\n", name, line, o->name, msg);
      return -1;
    }
  }
  return 0;
}

/* Read a whole file of at most max bytes into a new owned string. */
static char *read_file(srv_config_t *cfg, const char *path, size_t max,
                       size_t *len, char *msg, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(msg, cap, "cannot open '%s': %s", path, strerror(errno));
    return NULL;
  }
  char *buf = malloc(max + 1);
  size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
  int bad = !buf || ferror(f);
  fclose(f);
  char *out = NULL;
  if (bad)
    snprintf(msg, cap, "cannot read '%s'", path);
  else if (n > max)
    snprintf(msg, cap, "'%s' is larger than %zu bytes", path, max);
  else if (!(out = own(cfg, buf, n)))
    snprintf(msg, cap, "out of memory");
  if (buf) {
    memset(buf, 0, n < max + 1 ? n : max + 1);
    free(buf);
  }
  *len = n;
  return out;
}

/* A secret file other local users can read is a secret shared with them:
 * warned about, not refused (a container's mounted secret may be 0644 with
 * nobody else on the machine). */
int config_secret_file_exposed(const char *path, unsigned *mode) {
  struct stat st;
  if (stat(path, &st) != 0 || !(st.st_mode & (S_IRWXG | S_IRWXO))) return 0;
  *mode = (unsigned)(st.st_mode & 0777);
  return 1;
}

static void warn_secret_file_mode(srv_config_t *cfg, const char *opt,
                                  const char *path) {
  unsigned mode;
  if (config_secret_file_exposed(path, &mode))
    warn(cfg,
         "--%s: '%s' is readable or writable by group or others (mode %03o): "
         "chmod 600 it",
         opt, path, mode);
}

/* A secret file holds the secret on one line; its trailing newline (and
 * spaces, which editors leave) are not part of it. */
static int load_secret(srv_config_t *cfg, const opt_t *o, char *msg,
                       size_t cap) {
  char *base = (char *)cfg;
  const char *path = *(const char **)(base + o->offset);
  if (!path) return 0;
  size_t n;
  char *v = read_file(cfg, path, SECRET_FILE_MAX, &n, msg, cap);
  if (!v) return -1;
  while (n && (v[n - 1] == '\n' || v[n - 1] == '\r' || is_space(v[n - 1])))
    v[--n] = '\0';
  if (!n) {
    snprintf(msg, cap, "'%s' is empty", path);
    return -1;
  }
  if (memchr(v, '\0', n) || memchr(v, '\n', n)) {
    snprintf(msg, cap, "'%s' must hold the secret on a single line", path);
    return -1;
  }
  warn_secret_file_mode(cfg, o->name, path);
  *(const char **)(base + o->min) = v;
  return 0;
}

/* Options whose value is a credential: never echoed, never kept in argv. */
static int is_secret(const opt_t *o) {
  return o->kind == OPT_STR &&
         (o->offset == offsetof(srv_config_t, api_key) ||
          o->offset == offsetof(srv_config_t, jwt_secret) ||
          o->offset == offsetof(srv_config_t, redis_password) ||
          o->offset == offsetof(srv_config_t, redis_sentinel_password));
}

/* Whether a --store URL carries a password (redis://user:PASSWORD@...). */
static int store_has_password(const char *v) {
#ifdef PRESENCED_HAVE_REDIS
  /* The store's own redaction: what it would hide is a password. */
  char shown[1024];
  if (strlen(v) >= sizeof shown) return strchr(v, '@') != NULL;
  presence_redis_url_redact(v, shown, sizeof shown);
  return strcmp(shown, v) != 0;
#else
  const char *h = strstr(v, "://");
  return h && strchr(h, '@');
#endif
}

/* A webhook spec given inline may carry its secret (secret=...), a --store
 * URL its Redis password. */
static int holds_secret(const opt_t *o, const char *v) {
  return is_secret(o) ||
         (o->kind == OPT_WEBHOOK && strstr(v, "secret=") &&
          !strstr(v, "secret-file=")) ||
         (o->kind == OPT_STR && o->offset == offsetof(srv_config_t, store) &&
          store_has_password(v));
}

/* ---- config_parse, step by step ----------------------------------------- */

/* Step 1: what ends at once (--help, --help-keys, --version) and the
 * configuration file's name, which every other source overrides. Values
 * are skipped as apply_flags will take them. */
static int scan_early_flags(int argc, char **argv, FILE *out,
                            const char **file) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(out);
      return CONFIG_EXIT_OK;
    }
    if (!strcmp(a, "--help-keys")) {
      config_print_keys_markdown(out);
      return CONFIG_EXIT_OK;
    }
    if (!strcmp(a, "--version") || !strcmp(a, "-V")) {
      fprintf(out, "presenced %s\n", PRESENCE_VERSION_STRING);
      return CONFIG_EXIT_OK;
    }
    if (strncmp(a, "--", 2) != 0) break;
    const char *name = a + 2, *eq = strchr(name, '=');
    const opt_t *o = find_opt(name, eq ? (size_t)(eq - name) : strlen(name));
    if (!o) break; /* reported by apply_flags */
    const char *v = eq ? eq + 1 : NULL;
    if (!eq && !is_switch(o) && i + 1 < argc) v = argv[++i];
    if (o->kind == OPT_CONFIG && v) *file = v;
  }
  return CONFIG_OK;
}

/* Step 2: the configuration file. */
static int apply_file(srv_config_t *cfg, const char *file, FILE *err) {
  if (!file || !*file) return CONFIG_OK;
  char msg[384];
  size_t len;
  char *text = read_file(cfg, file, CONFIG_FILE_MAX, &len, msg, sizeof msg);
  if (!text) {
    fprintf(err, "presenced: --config: %s\n", msg);
    return CONFIG_EXIT_USAGE;
  }
  if (config_parse_file_text(cfg, file, text, len, err) != 0)
    return CONFIG_EXIT_USAGE;
  cfg->config_file = file;
  return CONFIG_OK;
}

/* Step 3: PRESENCED_* variables. */
static int apply_env(srv_config_t *cfg,
                     const char *(*getenv_fn)(const char *name), FILE *err) {
  if (!getenv_fn) return CONFIG_OK;
  char msg[384];
  for (size_t i = 0; i < NOPTS; i++) {
    char env[64];
    /* --check-config is a command-line flag only (docs/configuration.md):
     * left in a unit's or a container's environment, it turned every start
     * into a check that printed ok and exited 0, and a service that never
     * served (Restart=on-failure does not restart an exit 0). */
    if (opts[i].kind == OPT_CHECK) continue;
    env_name(&opts[i], env, sizeof env);
    const char *v = getenv_fn(env);
    if (v && set_opt(cfg, &opts[i], v, SRC_ENV, msg, sizeof msg) != 0) {
      fprintf(err, "presenced: %s: %s\n", env, msg);
      return CONFIG_EXIT_USAGE;
    }
  }
  return CONFIG_OK;
}

/* Edit distance of a and b (both short: variable names), capped at 9. */
static unsigned edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63) return 9;
  unsigned row[64];
  for (size_t j = 0; j <= lb; j++)
    row[j] = (unsigned)j;
  for (size_t i = 1; i <= la; i++) {
    unsigned diag = row[0];
    row[0] = (unsigned)i;
    for (size_t j = 1; j <= lb; j++) {
      unsigned up = row[j];
      unsigned best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb] > 9 ? 9 : row[lb];
}

/* Step 3b: PRESENCED_* variables that are no setting. A file's unknown key
 * is an error, but a typo in a systemd drop-in's Environment= or a
 * container's environment (PRESENCED_OFLINE_GRACE_MS, PRESENCED_STORE_URL)
 * was ignored without a word: the operator believed it applied. A warning,
 * not an error: the environment is shared with other programs. Only names
 * getenv_fn sees count, so a test's own environment does not leak in. */
extern char **environ;

static void warn_unknown_env(srv_config_t *cfg,
                             const char *(*getenv_fn)(const char *name)) {
  if (!getenv_fn) return;
  for (char **e = environ; e && *e; e++) {
    const char *eq = strchr(*e, '=');
    size_t n = eq ? (size_t)(eq - *e) : 0;
    char name[64];
    if (strncmp(*e, "PRESENCED_", 10) != 0 || !eq || n >= sizeof name)
      continue;
    memcpy(name, *e, n);
    name[n] = '\0';
    /* The benchmarks' switches (workers.c) are not settings. */
    if (!strncmp(name, "PRESENCED_BENCH_", 16) || !getenv_fn(name)) continue;
    const char *best = NULL;
    unsigned best_d = 9;
    char env[64];
    int known = 0, check = 0;
    for (size_t i = 0; i < NOPTS && !known; i++) {
      env_name(&opts[i], env, sizeof env);
      if (opts[i].kind == OPT_CHECK && !strcmp(env, name)) {
        check = 1;
        break;
      }
      if (!strcmp(env, name)) {
        known = 1;
        break;
      }
      unsigned d = edit_distance(name, env);
      /* PRESENCED_OFFLINE_GRACE for PRESENCED_OFFLINE_GRACE_MS: a unit
       * left off is as likely as a typo. */
      size_t el = strlen(env);
      if (el > n && !strncmp(env, name, n) && env[n] == '_') d = 1;
      if (d < best_d) {
        best_d = d;
        best = opts[i].name;
      }
    }
    if (known) continue;
    if (best && best_d <= 3) {
      char sugg[64];
      snprintf(sugg, sizeof sugg, "PRESENCED_");
      size_t k = strlen(sugg);
      for (const char *c = best; *c && k + 1 < sizeof sugg; c++)
        sugg[k++] = *c == '-' ? '_' : (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
      sugg[k] = '\0';
      warn(cfg, "%s is not a setting of presenced, ignored: did you mean %s?",
           name, sugg);
    } else if (check) {
      warn(cfg, "%s is not a setting of presenced, ignored: --check-config "
                "is a command-line flag only",
           name);
    }
    /* A name near no setting is another program's (the SDKs' examples
     * read PRESENCED_URL): not a typo worth a line at every start. */
  }
}

/* Step 4: the flags. A credential on the command line can be read by every
 * local user (ps, /proc/PID/cmdline): it is copied here so that
 * config_wipe_argv can blank it, and a warning names the better ways. */
static int apply_flags(srv_config_t *cfg, int argc, char **argv, FILE *err) {
  char msg[384];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "--", 2) != 0) {
      fprintf(err, "presenced: unexpected argument '%s' (see --help)\n", a);
      return CONFIG_EXIT_USAGE;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t nl = eq ? (size_t)(eq - name) : strlen(name);
    const opt_t *o = find_opt(name, nl);
    if (!o) {
      const char *near = nearest_opt(name, nl);
      if (near)
        fprintf(err, "presenced: unknown option '%.*s': did you mean --%s?\n",
                (int)(nl + 2), a, near);
      else
        fprintf(err, "presenced: unknown option '%.*s' (see --help)\n",
                (int)(nl + 2), a);
      return CONFIG_EXIT_USAGE;
    }
    char flag[64];
    snprintf(flag, sizeof flag, "--%s", o->name);
    const char *v;
    if (eq)
      v = eq + 1;
    else if (is_switch(o))
      v = "1";
    else if (i + 1 < argc)
      v = argv[++i];
    else {
      fprintf(err, "presenced: %s: missing value\n", flag);
      return CONFIG_EXIT_USAGE;
    }
    if (holds_secret(o, v)) {
      char env[64];
      env_name(o, env, sizeof env);
      if (o->offset == offsetof(srv_config_t, store) && o->kind == OPT_STR)
        warn(cfg,
             "%s with credentials (NAME@ or USER:PASSWORD@) given on the "
             "command line, where other local users can read them (blanked "
             "from the process arguments now): pass the password in "
             "PRESENCED_REDIS_PASSWORD or --redis-password-file "
             "(docs/security.md)",
             flag);
      else
        warn(cfg,
             "%s given on the command line, where other local users can "
             "read it (blanked from the process arguments now): pass it in "
             "%s or a file (docs/security.md)",
             flag, env);
      if (!(v = own(cfg, v, strlen(v)))) {
        fprintf(err, "presenced: out of memory\n");
        return CONFIG_EXIT_USAGE;
      }
    }
    if (set_opt(cfg, o, v, SRC_FLAG, msg, sizeof msg) != 0) {
      fprintf(err, "presenced: %s: %s\n", flag, msg);
      return CONFIG_EXIT_USAGE;
    }
  }
  return CONFIG_OK;
}

/* Whether the file at path can be read; with key_in_it, whether it holds a
 * PEM private key too (a client certificate and its key in one file). The
 * store reads these files only when it connects, and a connection that
 * fails is retried for ever: a missing file would pass --check-config and
 * then leave the instance unready (503) with the reason in one log line. */
static int readable_pem(const char *path, int *key_in_it, char *msg,
                        size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(msg, cap, "cannot open '%s': %s", path, strerror(errno));
    return -1;
  }
  static const char tag[] = "PRIVATE KEY-----";
  char buf[4096 + sizeof tag];
  size_t have = 0, n;
  int found = 0;
  /* A window that keeps the tail of the previous block, so that a tag split
   * across two reads is still seen. */
  while ((n = fread(buf + have, 1, sizeof buf - 1 - have, f)) > 0) {
    have += n;
    buf[have] = '\0';
    if (strstr(buf, tag)) found = 1;
    size_t keep = have < sizeof tag ? have : sizeof tag - 1;
    memmove(buf, buf + have - keep, keep);
    have = keep;
  }
  int bad = ferror(f);
  int e = errno;
  fclose(f);
  if (bad) {
    snprintf(msg, cap, "cannot read '%s': %s", path, strerror(e));
    return -1;
  }
  if (key_in_it) *key_in_it = found;
  return 0;
}

/* Settings of the Redis store given where they do nothing. Each would be
 * ignored without a word: --redis-cluster without --store redis://... ran
 * the embedded store, each instance alone with its own presence (users on
 * one invisible to watchers on the others), and --redis-tls-ca with a
 * redis:// URL sent the password in clear to a Redis the operator believed
 * verified. */
static int check_redis_settings(const srv_config_t *cfg, FILE *err) {
  const char *store = cfg->store ? cfg->store : "";
  int redis = config_store_is_redis(cfg) == 1;
  int tls = !strncmp(store, "rediss://", 9) ||
            !strncmp(store, "rediss+sentinel://", 18);
  int sentinel = !strncmp(store, "redis+sentinel://", 17) ||
                 !strncmp(store, "rediss+sentinel://", 18);
  const struct {
    const char *name, *value;
    int needs; /* 1 a Redis store, 2 TLS (rediss), 3 sentinels */
  } set[] = {
      {"redis-cluster", cfg->redis_cluster, 1},
      {"redis-user", cfg->redis_user, 1},
      {"redis-password", cfg->redis_password, 1},
      {"redis-password-file", cfg->redis_password_file, 1},
      {"redis-tls-ca", cfg->redis_tls_ca, 2},
      {"redis-tls-cert", cfg->redis_tls_cert, 2},
      {"redis-tls-key", cfg->redis_tls_key, 2},
      {"redis-tls-server-name", cfg->redis_tls_server_name, 2},
      {"redis-sentinel-user", cfg->redis_sentinel_user, 3},
      {"redis-sentinel-password", cfg->redis_sentinel_password, 3},
      {"redis-sentinel-password-file", cfg->redis_sentinel_password_file, 3},
  };
  if (!redis && cfg->redis_shards > 1) {
    fprintf(err, "presenced: --redis-shards: needs a Redis store (--store "
                 "redis://...); the embedded store has no shards\n");
    return CONFIG_EXIT_USAGE;
  }
  for (size_t i = 0; i < sizeof set / sizeof *set; i++) {
    if (!set[i].value || !*set[i].value) continue;
    if (!redis) {
      fprintf(err,
              "presenced: --%s: needs a Redis store (--store redis://..., "
              "rediss://..., unix:... or redis+sentinel://...); without one "
              "presence stays in this process's embedded store, shared with "
              "no other instance\n",
              set[i].name);
      return CONFIG_EXIT_USAGE;
    }
    if (set[i].needs == 2 && !tls) {
      fprintf(err,
              "presenced: --%s: the --store URL does not speak TLS: use "
              "rediss://... (or rediss+sentinel://...) for TLS to Redis, or "
              "drop --%s\n",
              set[i].name, set[i].name);
      return CONFIG_EXIT_USAGE;
    }
    if (set[i].needs == 3 && !sentinel) {
      fprintf(err,
              "presenced: --%s: only for a redis+sentinel:// (or "
              "rediss+sentinel://) --store URL\n",
              set[i].name);
      return CONFIG_EXIT_USAGE;
    }
  }
  char msg[384];
  const struct {
    const char *name, *path;
  } files[] = {{"redis-tls-ca", cfg->redis_tls_ca},
               {"redis-tls-cert", cfg->redis_tls_cert},
               {"redis-tls-key", cfg->redis_tls_key}};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    int key_in_it = 0;
    if (!files[i].path || !*files[i].path) continue;
    if (readable_pem(files[i].path, &key_in_it, msg, sizeof msg) != 0) {
      fprintf(err, "presenced: --%s: %s\n", files[i].name, msg);
      return CONFIG_EXIT_USAGE;
    }
    if (i == 1 && !key_in_it && !(cfg->redis_tls_key && *cfg->redis_tls_key)) {
      fprintf(err,
              "presenced: --redis-tls-cert: '%s' holds no private key: give "
              "the certificate's key with --redis-tls-key\n",
              files[i].path);
      return CONFIG_EXIT_USAGE;
    }
  }
  if (cfg->redis_tls_key && *cfg->redis_tls_key &&
      !(cfg->redis_tls_cert && *cfg->redis_tls_cert)) {
    fprintf(err, "presenced: --redis-tls-key: the key of which certificate? "
                 "give it with --redis-tls-cert\n");
    return CONFIG_EXIT_USAGE;
  }
  return CONFIG_OK;
}

/* Step 5: settings that are fine alone but not together. */
/* Two endpoints under one name share a lease, a cursor and the series of
 * /metrics. webhook_init refused them, but only at the start, with exit 1:
 * --check-config said ok, and systemd restarted the service in a loop
 * (RestartPreventExitStatus=2 is for settings). Refused here, with 2. */
static int check_webhook_names(const srv_config_t *cfg, FILE *err) {
  char *names[SRV_MAX_WEBHOOKS];
  char msg[384];
  uint32_t n = 0;
  int rc = CONFIG_OK;
  for (uint32_t i = 0; i < cfg->n_webhooks && rc == CONFIG_OK; i++) {
    wh_spec_t spec;
    /* Syntax was checked as each was set; the secret is not needed. */
    if (wh_spec_parse(cfg->webhooks[i], 0, &spec, msg, sizeof msg) != 0)
      continue;
    for (uint32_t k = 0; k < n; k++)
      if (!strcmp(names[k], spec.name)) {
        fprintf(err,
                "presenced: --webhook: endpoints %u and %u are both named "
                "'%s' (by default an endpoint is named by its URL without "
                "its query): give one a name=\n",
                k + 1, i + 1, spec.name);
        rc = CONFIG_EXIT_USAGE;
        break;
      }
    names[n] = spec.name;
    spec.name = NULL;
    n++;
    wh_spec_free(&spec);
  }
  for (uint32_t k = 0; k < n; k++)
    free(names[k]);
  return rc;
}

static int check_combinations(const srv_config_t *cfg, FILE *err) {
  if (check_webhook_names(cfg, err) != CONFIG_OK) return CONFIG_EXIT_USAGE;
  char why[200];
  if (cfg->allowed_origins &&
      config_origins_check(cfg->allowed_origins, why, sizeof why) != 0) {
    fprintf(err, "presenced: --allowed-origins: %s\n", why);
    return CONFIG_EXIT_USAGE;
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
  if (config_store_is_redis(cfg) < 0) {
    char shown[320], reason_shown[128] = "";
    config_store_redacted(cfg, shown, sizeof shown);
#ifdef PRESENCED_HAVE_REDIS
    /* What is wrong in it (the port, the database, an escape): the list of
     * forms alone left the operator to find it. */
    char reason[100];
    if (!presence_redis_url_check(cfg->store, reason, sizeof reason) &&
        *reason)
      snprintf(reason_shown, sizeof reason_shown, "%s; ", reason);
#endif
    fprintf(err,
            "presenced: --store: '%s': %sexpected memory, "
            "redis://[USER[:PASSWORD]@]HOST:PORT/DB, rediss://..., "
            "unix:/PATH?db=N or "
            "redis+sentinel://[USER[:PASSWORD]@]HOST:PORT,.../MASTER[/DB] "
            "(rediss+sentinel://...)\n",
            shown, reason_shown);
    return CONFIG_EXIT_USAGE;
  }
  if (check_redis_settings(cfg, err) != CONFIG_OK) return CONFIG_EXIT_USAGE;
  if (config_store_is_redis(cfg) &&
      cfg->redis_lease_ms < 2 * cfg->redis_heartbeat_ms) {
    fprintf(err,
            "presenced: --redis-lease-ms: must be at least twice "
            "--redis-heartbeat-ms (%u)\n",
            cfg->redis_heartbeat_ms);
    return CONFIG_EXIT_USAGE;
  }
  if (cfg->workers > 1 && config_store_is_redis(cfg) != 1) {
    /* Each worker is a process of its own: with the embedded store each
     * would hold its own presence, and users on one worker would be
     * invisible to watchers on another. */
    fprintf(err, "presenced: --workers: several workers need a shared store "
                 "(--store redis://... or unix:...); the embedded store "
                 "would give each worker its own presence\n");
    return CONFIG_EXIT_USAGE;
  }
  if (cfg->demo && config_store_is_redis(cfg)) {
    /* The demo lists every user the store knows: the embedded store can,
     * a shared Redis is not walked for a demo page. */
    fprintf(err, "presenced: --demo: demo mode needs the embedded store "
                 "(drop --store)\n");
    return CONFIG_EXIT_USAGE;
  }
  if (cfg->demo && !config_host_is_loopback(cfg->host)) {
    fprintf(err,
            "presenced: --demo: refusing to start on non-loopback address "
            "'%s' (demo tokens are issued to anyone who asks)\n",
            cfg->host);
    return CONFIG_EXIT_USAGE;
  }
  if (cfg->demo && (cfg->jwt_secret || cfg->jwt_secret_file)) {
    /* Demo tokens go to anyone who asks: signed with a production secret
     * they would open sessions on production instances. */
    fprintf(err, "presenced: --demo: refusing a JWT secret in demo mode (demo "
                 "tokens are signed with a random secret of their own; drop "
                 "--jwt-secret / --jwt-secret-file)\n");
    return CONFIG_EXIT_USAGE;
  }
  return CONFIG_OK;
}

/* Step 6: secret files, then the strength of every secret. A short HMAC
 * key can be brute-forced offline from one token (or one webhook
 * signature); 32 bytes is the HS256 key size RFC 7518 3.2 asks for. */
static int load_secrets(srv_config_t *cfg, FILE *err) {
  char msg[384];
  for (size_t i = 0; i < NOPTS; i++)
    if (opts[i].kind == OPT_SECRET_FILE &&
        load_secret(cfg, &opts[i], msg, sizeof msg) != 0) {
      fprintf(err, "presenced: %s: %s\n", opts[i].name, msg);
      return CONFIG_EXIT_USAGE;
    }
  const struct {
    const char *name, *value;
  } secrets[] = {{"api-key", cfg->api_key}, {"jwt-secret", cfg->jwt_secret}};
  for (size_t i = 0; i < sizeof secrets / sizeof *secrets; i++) {
    size_t n = secrets[i].value ? strlen(secrets[i].value) : 0;
    if (secrets[i].value && n < CONFIG_SECRET_MIN) {
      fprintf(err,
              "presenced: --%s: too short (%zu bytes, at least %u needed); "
              "make one with: openssl rand -base64 48\n",
              secrets[i].name, n, CONFIG_SECRET_MIN);
      return CONFIG_EXIT_USAGE;
    }
  }
  /* One value for both: whoever sees the key (every backend request
   * carries it) could sign a token for any user, and whoever mints tokens
   * could call the backend API. (Once, at start: no timing to measure.) */
  if (cfg->api_key && cfg->jwt_secret &&
      strcmp(cfg->api_key, cfg->jwt_secret) == 0) {
    fprintf(err, "presenced: --api-key and --jwt-secret are the same value; "
                 "give each its own (openssl rand -base64 48)\n");
    return CONFIG_EXIT_USAGE;
  }
  return CONFIG_OK;
}

/* Step 7, --check-config: startup reads webhook secret files, a check must
 * find them too. */
static void print_warning(void *ud, const char *w) {
  fprintf(ud, "presenced: warning: %s\n", w);
}

/* The webhooks' secret files, read as the other secret files are: at a
 * start too, not only by --check-config. A start without the check (a
 * container, a shell) read them only in webhook_init, and a missing one
 * failed it with exit 1, a crash to a supervisor that restarts it, where a
 * missing --api-key-file is a bad setting, exit 2. */
static int check_webhook_secrets(const srv_config_t *cfg, FILE *err) {
  char msg[384];
  for (uint32_t i = 0; i < cfg->n_webhooks; i++) {
    wh_spec_t spec;
    if (wh_spec_parse(cfg->webhooks[i], 1, &spec, msg, sizeof msg) != 0) {
      fprintf(err, "presenced: webhook: %s\n", msg);
      return CONFIG_EXIT_USAGE;
    }
    wh_spec_free(&spec);
  }
  return CONFIG_OK;
}

static int check_only(const srv_config_t *cfg, FILE *out, FILE *err) {
  config_each_warning(cfg, print_warning, err);
  /* What the start would warn of (server.c): a configuration that leaves
   * the API or every client refused is valid, but the check that runs
   * before a start (the unit's ExecStartPre) should say so. */
  if (!cfg->demo && !cfg->jwt_secret)
    print_warning(err, "no --jwt-secret (or jwt-secret-file): every "
                       "WebSocket client will be refused");
  if (!cfg->api_key)
    print_warning(err, "no --api-key (or api-key-file): the backend API "
                       "answers 401 to everyone");
  fprintf(out, "ok\n");
  return CONFIG_EXIT_OK;
}

int config_parse(srv_config_t *cfg, int argc, char **argv,
                 const char *(*getenv_fn)(const char *name), FILE *out,
                 FILE *err) {
  const char *file = getenv_fn ? getenv_fn("PRESENCED_CONFIG") : NULL;
  int rc = scan_early_flags(argc, argv, out, &file);
  if (rc == CONFIG_OK) rc = apply_file(cfg, file, err);
  if (rc == CONFIG_OK) rc = apply_env(cfg, getenv_fn, err);
  if (rc == CONFIG_OK) warn_unknown_env(cfg, getenv_fn);
  if (rc == CONFIG_OK) rc = apply_flags(cfg, argc, argv, err);
  if (rc == CONFIG_OK) rc = check_combinations(cfg, err);
  if (rc == CONFIG_OK) rc = load_secrets(cfg, err);
  if (rc == CONFIG_OK) rc = check_webhook_secrets(cfg, err);
  if (rc == CONFIG_OK && cfg->check_config) rc = check_only(cfg, out, err);
  return rc;
}

void config_wipe_argv(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    char *a = argv[i];
    if (strncmp(a, "--", 2) != 0) return;
    char *name = a + 2, *eq = strchr(name, '=');
    const opt_t *o = find_opt(name, eq ? (size_t)(eq - name) : strlen(name));
    if (!o) return;
    char *v = eq ? eq + 1 : NULL;
    if (!eq && !is_switch(o) && i + 1 < argc) v = argv[++i];
    if (v && holds_secret(o, v)) memset(v, 'x', strlen(v));
  }
}
