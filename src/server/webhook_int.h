/* SPDX-License-Identifier: MIT */
/*
 * Webhooks' private state, shared by the files of the webhook sender:
 *
 *   webhook_spec.c   endpoint specs: --webhook parsed and checked
 *   curl_uv.c        libcurl's multi interface on the libuv loop
 *   webhook.c        the endpoint state machine and its batches
 *   webhook_lease.c  the Redis cursor lease (who delivers, where the cursor
 *                    is stored)
 *
 * Not a public API: only these files include it.
 */
#ifndef PRESENCED_WEBHOOK_INT_H
#define PRESENCED_WEBHOOK_INT_H

#include "server/curl_uv.h"
#include "server/server.h"
#include "server/webhook.h"

typedef struct webhooks webhooks_t;
typedef struct wh_lease wh_lease_t; /* webhook_lease.c */

typedef struct endpoint {
  struct build *build; /* a batch being read from the log, or NULL */
  int reading;         /* build waits for an asynchronous read */
  /* Redis: the lease. Only an owner delivers, and only while the lease is
   * confirmed (lease_until, this host's monotonic clock, counted from when
   * the last successful claim or renewal was sent, so never later than
   * Redis's own expiry). gen changes with every change of ownership, so
   * answers meant for an earlier one are ignored. */
  int own;
  int claiming;  /* a claim or renewal is in flight */
  int acking;    /* a delivered batch waits for its cursor to be stored */
  int releasing; /* shutdown: the lease is being given back */
  /* A renewal that may confirm the held batch's gap is in flight. */
  int confirming;
  int claim_err; /* an error was logged (once until the next success) */
  uint64_t token;
  int64_t lease_until;
  uint32_t gen;
  webhooks_t *w;
  wh_spec_t spec;
  CURL *easy;
  struct curl_slist *headers;
  uv_timer_t timer; /* batching delay, then backoff */
  buf_t body;
  int have_batch; /* body holds a batch not yet acknowledged */
  int inflight;
  int done;        /* shutdown: nothing more will be sent */
  /* Every event up to it is acknowledged (or filtered): a position in each
   * of the store's logs (one but with Redis in shards). */
  presence_cursor_t *cursor;
  /* The range the batch covers, in one log (batch_log): a batch never
   * mixes logs, so (instance, seq) stays an idempotency key. */
  uint32_t batch_log;
  uint64_t batch_first, batch_last;
  size_t batch_events;
  int batch_gap;
  /* Redis: the held batch's gap is real. A gap can also be the renumbered
   * log of a Redis that lost its data, read by an owner that has not yet
   * learnt that its lease went with it; so a gap notice goes only after a
   * renewal sent after the read was granted (the lease outlived the data
   * only if nothing was lost). */
  int gap_confirmed;
  uint64_t gap_after, gap_oldest;
  uint32_t attempts; /* failed attempts of the current batch */
  int behind;
  /* ts of the oldest event after the cursor as far as this instance knows
   * (0: none), for presenced_webhook_lag_seconds where the log cannot be
   * read while /metrics is answered (Redis): set by the first event after
   * an up-to-date cursor and by every batch read, cleared when caught up.
   * batch_last_ts: ts of the held batch's last event, a lower bound of the
   * next one's once the batch is acknowledged. */
  int64_t oldest_ts, batch_last_ts;
  uint64_t delivered, retries, failures, dropped, gaps, lost;
  char errbuf[CURL_ERROR_SIZE];
} endpoint_t;

struct webhooks {
  srv_t *s;
  curl_uv_t curl; /* every endpoint's transfers */
  endpoint_t *eps;
  size_t n;
  int sink; /* fanout_sink_add's id, -1 when not registered */
  int flushing;
  int aborted;
  int closed;
  buf_t events; /* the events array of the batch being built */
  int redis;    /* --store redis: endpoints are leased (webhook_lease.c) */
  /* The id of the cluster's log, sent as `instance`: with Redis the
   * sequence numbers are the cluster's, so the idempotency key must not
   * change with the instance that happens to deliver. */
  char log_id[40];
  char log_offer[40]; /* ours, if the cluster has none yet */
  wh_lease_t *lease;  /* the leases' timer and calls in flight, or NULL */
};

/* ---- webhook.c: steps of the state machine the lease drives -------------- */

/* The held batch's cursor is stored: move on to the next batch. */
void wh_acknowledge(endpoint_t *ep);
/* The endpoint has nothing more to do in this shutdown. */
void wh_finished(endpoint_t *ep);
/* Run the endpoint's next step after delay_ms. */
void wh_wake(endpoint_t *ep, uint64_t delay_ms);
/* Events after the endpoint's cursor that this instance has seen. */
int wh_behind(const endpoint_t *ep);

/* ---- webhook_lease.c: the Redis cursor lease ----------------------------- */

/* Set up the leases' timer (w->redis only): 0 or -1. */
int wr_init(webhooks_t *w);
/* Store the held batch's last seq as the cursor, then wh_acknowledge. */
void wr_ack(endpoint_t *ep);
/* Shutdown: give the lease back with the cursor. */
void wr_release(endpoint_t *ep);
/* Renew the lease to confirm the held batch's gap (gap_confirmed), then
 * wh_wake; the lease is lost instead if the renewal is refused. */
void wr_confirm(endpoint_t *ep);
/* Stop delivering: the lease is gone (why is logged). */
void wr_lose(endpoint_t *ep, const char *why);
/* Close the loop handles; wr_free after the loop ended. */
void wr_close(webhooks_t *w);
void wr_free(webhooks_t *w);

#endif
