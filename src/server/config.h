/* SPDX-License-Identifier: MIT */
/*
 * Every setting of presenced with its default, and how a configuration file,
 * PRESENCED_* environment variables and flags set them. Precedence, lowest
 * first: defaults < file < environment < flags (docs/configuration.md).
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
  const char *jwt_issuer;   /* NULL: "iss" is not checked */
  uint32_t jwt_max_lifetime_s; /* 0: any exp */
  uint32_t jwt_leeway_s;       /* clock skew allowed on exp/nbf/iat */
  /* Origins allowed to open a WebSocket: NULL for the same origin only
   * (Origin's host equal to Host), "*" for any, else a comma-separated list
   * of origins (scheme://host[:port]). Requests without Origin (not from a
   * browser) are always allowed. */
  const char *allowed_origins;
  uint32_t max_connections_per_ip; /* 0: no per-address limit */
  /* Addresses not held to max_connections_per_ip (a proxy's): "loopback"
   * (the default, NULL), "none", or literal addresses, comma-separated. */
  const char *connection_limit_exempt;
  uint32_t http_first_byte_ms; /* a new connection silent this long closes */
  const char *web_root;
  int demo;
  /* /metrics without the API key (--metrics-open): for a scrape on a
   * private port; by default it needs the key, as the API does. */
  int metrics_open;
  int log_level;  /* presence_log_level_t */
  int log_format; /* srv_log_format_t */
  /* Secrets may be read from files (a path here); config_parse loads them
   * into api_key / jwt_secret once every source is applied. */
  const char *api_key_file;
  const char *jwt_secret_file;
  const char *config_file; /* --config / PRESENCED_CONFIG, or NULL */
  int check_config;        /* --check-config: validate, print ok, exit */
  uint32_t offline_grace_ms;
  uint32_t offline_retention_s;
  uint32_t message_max_chars; /* status messages (docs/protocol.md 6) */
  uint32_t inactivity_ms;
  uint32_t heartbeat_ms;
  uint32_t timeout_ms;
  uint32_t max_frame;
  uint32_t max_message;
  uint32_t max_msgs_per_sec;
  uint32_t max_sessions_per_user;
  uint32_t max_watch;
  /* Channels (docs/protocol.md section 4). channel_grace_ms: UINT32_MAX
   * unset (the offline grace), 0 none. */
  uint32_t channel_grace_ms;
  uint32_t max_channels_per_session; /* joined and observed together */
  uint32_t max_channel_data;         /* bytes of one session's data */
  uint32_t channel_page;             /* members in a snapshot */
  uint32_t max_channel_name;         /* bytes */
  uint32_t channel_joins_per_s;      /* joins and observes per session */
  /* Sizing hint of the embedded store (presence_options_t): 0 none. */
  uint32_t expected_memberships;
  uint32_t max_header_bytes;
  uint32_t max_body;
  uint32_t max_connections;
  uint32_t listen_backlog; /* a restart's reconnect storm must fit */
  uint32_t max_write_queue;
  uint32_t log_capacity;
  uint32_t http_idle_ms;
  uint32_t http_request_timeout_ms;
  uint32_t shutdown_timeout_ms;
  uint32_t sse_keepalive_ms;
  /* Backend session connections (GET /v1/backend, origin.c). */
  uint32_t max_origins;
  uint32_t origin_lease_ms;
  uint32_t origin_resume_ms;
  uint32_t backend_max_ops;
  uint32_t backend_ops_per_sec;
  uint32_t backend_max_message;
  /* --store: NULL or "memory" for the embedded store, else a Redis URL
   * (redis://[user[:password]@]host:port/db, rediss://... or
   * unix:/path?db=N). It may hold a password: log it only redacted. */
  const char *store;
  uint32_t redis_heartbeat_ms;
  uint32_t redis_lease_ms;
  uint32_t redis_timeout_ms;
  uint32_t redis_log_length; /* events kept in the Redis stream */
  const char *redis_cluster; /* Redis Cluster seeds "host:port,..." or NULL */
  uint32_t redis_shards;     /* virtual shards; 0: 1 (12 with a cluster) */
  /* Redis AUTH apart from the URL (each overrides the URL's), and the TLS
   * files of a rediss:// URL. The password may come from a file. */
  const char *redis_user;
  const char *redis_password;
  const char *redis_password_file;
  const char *redis_sentinel_user; /* redis+sentinel://: the sentinels' AUTH */
  const char *redis_sentinel_password;
  const char *redis_sentinel_password_file;
  const char *redis_tls_ca;
  const char *redis_tls_cert;
  const char *redis_tls_key;
  const char *redis_tls_server_name;
  /* Webhook endpoints: --webhook specs as given (parsed by webhook.c).
   * Repeatable: the values of one source (file, environment, flags) replace
   * those of a lower one rather than adding to them. */
  const char *webhooks[SRV_MAX_WEBHOOKS];
  uint32_t n_webhooks;
  uint32_t webhooks_source; /* which source set them (config.c) */
  uint32_t webhook_batch_max;
  uint32_t webhook_batch_ms;
  uint32_t webhook_timeout_ms;
  uint32_t webhook_retry_min_ms;
  uint32_t webhook_retry_max_ms;
  /* Strings read from the file or secret files, freed by config_free. */
  struct config_str *owned;
  /* Warnings about the settings (a secret on the command line, a secret
   * file others can read), in order, for the daemon to log in its log
   * format once it has one (config_each_warning); freed by config_free. */
  struct config_str *warnings;
  uint32_t workers; /* --workers N: N processes share the port (workers.c) */
  /* Not options: set in each worker by the supervisor: its number 1..N (0:
   * no workers), the base of the instance ids and how often this worker
   * was restarted, so a replacement is a new instance, not the dead one. */
  uint32_t worker;
  uint32_t worker_restarts;
  char worker_base[16];
  /* The machine's log feed (workers.c): worker 1 copies its log reads to
   * feed_out, the others take the log from feed_in (> 0); none after a
   * restart. */
  int feed_in;
  int *feed_out;
  uint32_t n_feed_out;
  /* What each worker's clients watch, in memory the workers share
   * (workers.c makes it; interest.c counts; the reader routes by it):
   * NULL without a feed, and after a restart. */
  struct presence_redis_interest *interest;
  /* Every worker's /metrics text, in memory the workers share (workers.c
   * makes it, metrics.c writes and reads it); NULL without workers. */
  struct metrics_shm *metrics_shm;
} srv_config_t;

typedef enum {
  SRV_LOG_TEXT = 0, /* presenced: LEVEL: message */
  SRV_LOG_LOGFMT,   /* ts=... level=... msg="..." */
  SRV_LOG_JSON      /* {"ts":...,"level":...,"msg":...} */
} srv_log_format_t;

void config_defaults(srv_config_t *cfg);
/* The port a socket is bound to (an IPv4 or IPv6 address) becomes cfg's:
 * port, and listen's HOST:PORT (a port 0 asked the kernel for one; the
 * start line and the workers name the one it gave). */
struct sockaddr;
void config_set_bound_port(srv_config_t *cfg, const struct sockaddr *sa);
/* Free what the configuration owns (file values, loaded secrets). */
void config_free(srv_config_t *cfg);

enum { CONFIG_OK = 0, CONFIG_EXIT_OK = 1, CONFIG_EXIT_USAGE = 2 };

/*
 * Apply the configuration file (--config or PRESENCED_CONFIG), then the
 * environment (through getenv_fn, so tests can pass their own), then the
 * flags; then read secret files. Returns CONFIG_OK, CONFIG_EXIT_OK (--help,
 * --version or a passed --check-config printed to out) or CONFIG_EXIT_USAGE
 * (a message naming the flag, or FILE:LINE, was printed to err). Strings
 * point into argv, the environment or cfg->owned.
 */
int config_parse(srv_config_t *cfg, int argc, char **argv,
                 const char *(*getenv_fn)(const char *name), FILE *out,
                 FILE *err);

/* Call fn with each warning config_parse recorded, in order. */
void config_each_warning(const srv_config_t *cfg,
                         void (*fn)(void *ud, const char *warning), void *ud);

/* Whether a secret file is readable or writable by group or others (its
 * permission bits in *mode): a secret shared with every local user. */
int config_secret_file_exposed(const char *path, unsigned *mode);

/* Shortest API key and JWT secret accepted, in bytes. */
#define CONFIG_SECRET_MIN 32u

/* Blank the values of credentials given as flags (--api-key, --jwt-secret,
 * an inline webhook secret) in argv, so ps and /proc/PID/cmdline no longer
 * show them. Call after config_parse, which copied them. */
void config_wipe_argv(int argc, char **argv);

/*
 * Parse the text of a configuration file (`key = value` lines, see
 * docs/configuration.md) into cfg, over what it holds. name is used in
 * messages ("name:LINE: reason" to err). No I/O besides err: secret files
 * named by the text are only recorded. Values are copied (cfg->owned).
 * Returns 0, or -1 after the first error.
 */
int config_parse_file_text(srv_config_t *cfg, const char *name,
                           const char *text, size_t len, FILE *err);

/* The keys of the file as a Markdown table (key, environment variable,
 * default, meaning): the source of docs/configuration.md's table. */
void config_print_keys_markdown(FILE *out);

/* 1 if --store names Redis, 0 for the embedded store, -1 if malformed. */
int config_store_is_redis(const srv_config_t *cfg);
/* --store with its password replaced by ***, for messages. */
void config_store_redacted(const srv_config_t *cfg, char *out, size_t n);

/* --allowed-origins: each entry "*" or scheme://host[:port] (http or https,
 * no path, no default port, the host perhaps "*.domain"), which a browser's
 * Origin can equal; 0, or -1 with why in err (web_origin.c, which matches
 * them). */
int config_origins_check(const char *list, char *err, size_t cap);

/* Whether host is a loopback address or "localhost". */
int config_host_is_loopback(const char *host);

#endif
