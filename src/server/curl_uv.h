/* SPDX-License-Identifier: MIT */
/*
 * libcurl's multi interface on a libuv loop.
 *
 * curl tells us which sockets to watch (one uv_poll each) and when to call
 * it back (one uv_timer); readiness goes back through
 * curl_multi_socket_action, and every finished transfer is reported to the
 * owner's done callback. No curl call blocks the loop.
 */
#ifndef PRESENCED_CURL_UV_H
#define PRESENCED_CURL_UV_H

#include <curl/curl.h>
#include <uv.h>

typedef struct curl_uv_poll curl_uv_poll_t;

/* A transfer ended (it is already out of the multi handle). */
typedef void (*curl_uv_done_fn)(CURL *easy, CURLcode result, void *ud);

typedef struct curl_uv {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer; /* curl's timeout */
  curl_uv_poll_t *polls;
  curl_uv_done_fn done;
  void *ud;
  int closed;
} curl_uv_t;

/* Create the multi handle and the timer: 0, or -1 (out of memory). */
int curl_uv_init(curl_uv_t *cu, uv_loop_t *loop, curl_uv_done_fn done,
                 void *ud);
/* Start a transfer: 0, or -1 if curl refused it. */
int curl_uv_add(curl_uv_t *cu, CURL *easy);
/* Cut a transfer in flight; its done callback does not run. */
void curl_uv_remove(curl_uv_t *cu, CURL *easy);
/* Clean up the multi handle and close the loop handles (before the loop
 * ends); nothing is reported after. The easy handles stay the caller's. */
void curl_uv_close(curl_uv_t *cu);

#endif
