/* SPDX-License-Identifier: MIT */
/*
 * One connection to one Redis endpoint, on a libuv loop: the only code in
 * the tree that opens a socket to Redis (the store's command and log-reader
 * connections are two of these). See docs/internals/redis.md, "The
 * connection layer".
 *
 * It connects (TCP, a unix socket, or TLS over TCP with OpenSSL), sends
 * AUTH and SELECT before anything else, then reports itself up. Commands
 * are pipelined: each has a callback, called exactly once, in send order,
 * with the reply (code 0; an error reply is a reply: rep->type
 * REDIS_REPLY_ERROR) or without one (rep NULL): PRESENCE_ESTORE (the
 * connection broke, or Redis sent bytes that are not a RESP reply within
 * the limits), PRESENCE_ETIMEDOUT (the oldest command waited longer than
 * its timeout: the connection is dropped with everything behind it, since
 * a reply matches its command by order alone) or PRESENCE_ESHUTDOWN
 * (presence__rconn_free). After a failure it reconnects by itself, with
 * exponential backoff, and reports up again.
 *
 * Every callback runs on the loop, never from inside the call that sent
 * the command, except failures reported by presence__rconn_drop and
 * presence__rconn_free, which run inside them. A callback may send, drop or
 * free the connection.
 *
 * Made to carry a routing layer later (Redis Cluster: one of these per
 * node, MOVED/ASK seen as error replies by the layer above, which resends
 * on another node's connection): nothing here knows keys or slots.
 */
#ifndef PRESENCE_REDIS_CONN_H
#define PRESENCE_REDIS_CONN_H

#include "core/internal.h"
#include "presence_redis.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- where to connect ---------------------------------------------------- */

typedef struct presence__redis_node {
  char *host;
  int port;
} presence__redis_node_t;

/* More sentinels than this in one URL is refused: a deployment runs 3-5. */
#define PRESENCE__SENTINELS_MAX 16

typedef struct presence__redis_url {
  char *host; /* TCP; NULL for a unix socket */
  char *path; /* unix socket */
  int port, db;
  char *user;     /* ACL user; NULL: "default" (AUTH with the password only) */
  char *password; /* NULL: no AUTH */
  bool password_alone; /* NAME@ without a ':': the password, or the user */
  bool tls;       /* rediss:// */
  /* redis+sentinel:// (rediss+sentinel:// with TLS everywhere): host and
   * port stay NULL/0; the sentinels are asked for master's primary, and
   * the connection follows it (docs/internals/redis.md, "Sentinel"). user
   * and password are the data nodes'; the sentinels' come apart
   * (presence_redis_options_t.sentinel_user/_password). */
  presence__redis_node_t *sentinels;
  size_t n_sentinels;
  char *master;
  char *sentinel_user, *sentinel_password;
} presence__redis_url_t;

/* redis://[user[:password]@]host[:port][/db], rediss://... (TLS),
 * unix:/path[?db=N]; host may be [v6];
 * redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/master[/db]
 * (sentinel port 26379 by default), rediss+sentinel://... (TLS). As with redis-cli, a userinfo
 * without ':' is a password. User and password are percent-decoded.
 * 0, PRESENCE_EINVAL (why in err, with no secret in it) or ENOMEM. */
int presence__redis_url_parse(const presence_allocator_t *a, const char *url,
                              presence__redis_url_t *out, char *err,
                              size_t errlen);
void presence__redis_url_free(const presence_allocator_t *a,
                              presence__redis_url_t *u);

/* ---- the connection ------------------------------------------------------ */

typedef struct presence__rconn presence__rconn_t;

typedef void (*presence__rconn_cb)(void *ud, int code, redisReply *rep);

typedef struct presence__rconn_config {
  uv_loop_t *loop;
  const presence_allocator_t *alloc;
  /* Where, and the TLS files; both must outlive the connection. */
  const presence__redis_url_t *url;
  const presence_redis_tls_t *tls;
  const char *name; /* in log lines: "redis", "redis reader" */
  uint32_t command_timeout_ms; /* also bounds connect + TLS + AUTH */
  uint32_t reconnect_max_ms;   /* backoff ceiling (from 50 ms, doubling) */
  size_t max_reply_bytes;
  size_t max_reply_elements;
  void (*log)(void *ud, presence_log_level_t level, const char *msg);
  /* Up: AUTH and SELECT done, commands may be sent. Down: the connection
   * was lost (every pending command has already failed); a reconnect is
   * scheduled. Either may be NULL. */
  void (*on_up)(void *ud);
  void (*on_down)(void *ud, int code);
  /* Optional, called before each (re)connect: the owner may change what
   * url points to (Redis Cluster: the node a MOVED named, or the next seed
   * after a failure). failed: the connect before this one failed or the
   * connection was lost. */
  void (*before_connect)(void *ud, int failed);
  void *ud;
  /* Internal to Sentinel support (redis_conn.c): a connection that only
   * subscribes on a sentinel, its messages (replies to no command) given
   * to on_push with push_ud. */
  bool sentinel_watch;
  void (*on_push)(void *push_ud, redisReply *rep);
  void *push_ud;
} presence__rconn_config_t;

/* Copies the config (not what it points to). Does not connect yet. */
int presence__rconn_new(const presence__rconn_config_t *cfg,
                        presence__rconn_t **out);
/* Connect now (and reconnect after every loss until freed). */
void presence__rconn_start(presence__rconn_t *c);
/* Fail every pending command with ESHUTDOWN (their callbacks run inside)
 * and release everything; the libuv handles close later, on the loop. */
void presence__rconn_free(presence__rconn_t *c);

bool presence__rconn_up(const presence__rconn_t *c);

/* Send one command already in RESP (resp, len) or as arguments. timeout_ms
 * 0: the configured command timeout; a blocking command passes its block
 * time plus that. 0, or PRESENCE_ESTORE when not up (cb is not called),
 * ENOMEM. */
int presence__rconn_send(presence__rconn_t *c, const char *resp, size_t len,
                         uint32_t timeout_ms, presence__rconn_cb cb, void *ud);
int presence__rconn_command(presence__rconn_t *c, int argc,
                            const char *const *argv, const size_t *lens,
                            uint32_t timeout_ms, presence__rconn_cb cb,
                            void *ud);

/* Redis Cluster's answer to "-ASK <slot> <host>:<port>" (a slot half-way
 * through a migration, the key asked already at the importing node): the
 * command again on a connection to that node, preceded by ASKING, which
 * lets the node serve it for this one command without taking the slot
 * over in the slot map. Both go in one write, nothing between them (ASKING
 * covers the next command only); the ASKING's own answer is checked, not
 * handed to cb: a node that refuses it fails the command with ESTORE.
 * Returns as presence__rconn_send. */
int presence__rconn_send_asking(presence__rconn_t *c, const char *resp,
                                size_t len, uint32_t timeout_ms,
                                presence__rconn_cb cb, void *ud);

/* "-ASK <slot> <host>:<port>" parsed: 0 and host (NUL-ended, empty for
 * "the node asked") and port, or EINVAL for any other text. */
int presence__redis_ask_target(const char *err, char *host, size_t cap,
                               int *port);

/* Give up the connection now: pending commands fail with code (inside this
 * call), on_down follows, then a reconnect after the backoff. */
void presence__rconn_drop(presence__rconn_t *c, int code);

/* Inside a reply's callback: the reply as it came on the wire (RESP), for
 * a caller that hands it on unparsed (redis_feed.c). EINVAL elsewhere. */
int presence__rconn_raw(const presence__rconn_t *c, const char **p,
                        size_t *n);

void presence__rconn_metrics(const presence__rconn_t *c,
                             presence_redis_conn_metrics_t *out);

#endif
