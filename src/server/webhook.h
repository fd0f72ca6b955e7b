/* SPDX-License-Identifier: MIT */
/*
 * Webhooks: presenced POSTs the transition log to backend endpoints, signed,
 * batched, in order and at least once (docs/webhooks.md is the contract).
 *
 * Each endpoint keeps only a cursor into the transition log and at most one
 * batch (the one being delivered), so a dead endpoint costs one request body
 * of memory however long it stays down: the log is its backlog, and when
 * the log moves past the cursor the endpoint is told with a gap notice.
 * HTTP runs on libcurl's multi interface driven by the daemon's libuv loop,
 * so no delivery ever blocks the loop, client traffic or another endpoint.
 */
#ifndef PRESENCED_WEBHOOK_H
#define PRESENCED_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

struct srv;
struct buf;

/* One --webhook spec: comma-separated key=value pairs, keys url (http or
 * https), secret or secret-file, events (type names joined by '|', or
 * "session.*", "user.*", "*"; default every type), name (the metrics
 * label; default the URL without credentials and query), channel-prefix
 * and ca (a PEM file of CA certificates for an https:// url). */
typedef struct wh_spec {
  char *url;
  char *secret; /* NULL until a secret-file is read */
  size_t secret_len;
  char *secret_file;
  char *name;
  uint32_t events; /* bit (1u << presence_event_type_t) per wanted type */
  char *channel_prefix; /* only channel events of these channels, or NULL */
  /* ca=PATH: PEM certificates that https:// receivers are verified against
   * instead of the system's (a receiver behind a private CA), or NULL. */
  char *ca;
} wh_spec_t;

/* Parse spec into out (strings allocated). With read_secret, a secret-file
 * is read now (one trailing newline is dropped) and a ca file checked (it
 * must hold a PEM certificate). 0, or -1 with a message in err (out is
 * then empty). */
int wh_spec_parse(const char *spec, int read_secret, wh_spec_t *out, char *err,
                  size_t errcap);
void wh_spec_free(wh_spec_t *spec);

/* A list of event types, as the event stream's ?types= (sep ',') and a
 * webhook's events= (sep '|') write it: type names, "prefix.*" (every type
 * whose name starts with "prefix.", so user.* includes user.availability and
 * user.message) or "*". Bit (1 << presence_event_type_t) per type, the
 * fanout's FANOUT_TYPE, in *mask; -1 when a word names no type. One parser,
 * so both take the same words. */
int event_types_parse(const char *v, size_t n, char sep, uint64_t *mask);
/* Syntax check without reading files (config parsing). */
int wh_spec_check(const char *spec, char *err, size_t errcap);

/* Set up the endpoints of s->cfg (nothing without any). After presence_new;
 * 0 or -1 (logged). */
int webhook_init(struct srv *s);
/* Graceful shutdown: send what the log still holds for each endpoint, one
 * attempt per batch, no retries; srv_maybe_finish is called when done. */
void webhook_shutdown(struct srv *s);
/* The shutdown limit has passed: drop what is in flight. */
void webhook_abort(struct srv *s);
/* Nothing left to do (always true without endpoints). */
int webhook_done(const struct srv *s);
/* Close the loop handles (from srv_finish, so uv_run can return). */
void webhook_close(struct srv *s);
/* After uv_run returned. */
void webhook_free(struct srv *s);
/* The per-endpoint families of /metrics. */
void webhook_metrics(struct srv *s, struct buf *b);

#endif
