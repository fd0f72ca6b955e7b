/* SPDX-License-Identifier: MIT */
/*
 * libcurl's multi interface on a libuv loop (see curl_uv.h).
 */
#include "server/curl_uv.h"

#include <stdlib.h>

struct curl_uv_poll {
  uv_poll_t poll;
  curl_socket_t fd;
  curl_uv_t *cu;
  curl_uv_poll_t *prev, *next;
};

/* Report every finished transfer. */
static void check_multi(curl_uv_t *cu) {
  CURLMsg *m;
  int left;
  while (cu->multi && (m = curl_multi_info_read(cu->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *e = m->easy_handle;
    CURLcode res = m->data.result;
    curl_multi_remove_handle(cu->multi, e);
    cu->done(e, res, cu->ud);
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  curl_uv_poll_t *cp = h->data;
  curl_uv_t *cu = cp->cu;
  int flags = 0, running;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  curl_multi_socket_action(cu->multi, cp->fd, flags, &running);
  check_multi(cu);
}

static void on_poll_closed(uv_handle_t *h) {
  free(h->data);
}

static void poll_release(curl_uv_t *cu, curl_uv_poll_t *cp) {
  if (cp->prev)
    cp->prev->next = cp->next;
  else
    cu->polls = cp->next;
  if (cp->next) cp->next->prev = cp->prev;
  uv_poll_stop(&cp->poll);
  uv_close((uv_handle_t *)&cp->poll, on_poll_closed);
}

/* CURLMOPT_SOCKETFUNCTION: watch (or stop watching) one of curl's sockets. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                          void *socketp) {
  curl_uv_t *cu = userp;
  curl_uv_poll_t *cp = socketp;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (cp) {
      curl_multi_assign(cu->multi, fd, NULL);
      poll_release(cu, cp);
    }
    return 0;
  }
  if (!cp) {
    if (cu->closed) return -1;
    cp = calloc(1, sizeof *cp);
    if (!cp) return -1;
    if (uv_poll_init_socket(cu->loop, &cp->poll, fd) != 0) {
      free(cp);
      return -1;
    }
    cp->poll.data = cp;
    cp->fd = fd;
    cp->cu = cu;
    cp->next = cu->polls;
    if (cu->polls) cu->polls->prev = cp;
    cu->polls = cp;
    curl_multi_assign(cu->multi, fd, cp);
  }
  int ev = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev |= UV_WRITABLE;
  return uv_poll_start(&cp->poll, ev, on_poll) == 0 ? 0 : -1;
}

static void on_curl_timer(uv_timer_t *t) {
  curl_uv_t *cu = t->data;
  int running;
  curl_multi_socket_action(cu->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi(cu);
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be called back after timeout_ms
 * (-1: never). It must not be called from here, only from the loop. */
static int on_curl_timeout(CURLM *multi, long timeout_ms, void *userp) {
  curl_uv_t *cu = userp;
  (void)multi;
  if (cu->closed) return 0;
  if (timeout_ms < 0)
    uv_timer_stop(&cu->timer);
  else
    uv_timer_start(&cu->timer, on_curl_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

int curl_uv_init(curl_uv_t *cu, uv_loop_t *loop, curl_uv_done_fn done,
                 void *ud) {
  cu->loop = loop;
  cu->done = done;
  cu->ud = ud;
  cu->polls = NULL;
  cu->closed = 0;
  uv_timer_init(loop, &cu->timer);
  cu->timer.data = cu;
  cu->multi = curl_multi_init();
  if (!cu->multi) return -1;
  curl_multi_setopt(cu->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(cu->multi, CURLMOPT_SOCKETDATA, cu);
  curl_multi_setopt(cu->multi, CURLMOPT_TIMERFUNCTION, on_curl_timeout);
  curl_multi_setopt(cu->multi, CURLMOPT_TIMERDATA, cu);
  return 0;
}

int curl_uv_add(curl_uv_t *cu, CURL *easy) {
  if (cu->closed || !cu->multi) return -1;
  return curl_multi_add_handle(cu->multi, easy) == CURLM_OK ? 0 : -1;
}

void curl_uv_remove(curl_uv_t *cu, CURL *easy) {
  if (cu->multi) curl_multi_remove_handle(cu->multi, easy);
}

void curl_uv_close(curl_uv_t *cu) {
  if (cu->closed || !cu->loop) return; /* closed, or never initialised */
  cu->closed = 1;
  if (cu->multi) {
    curl_multi_cleanup(cu->multi);
    cu->multi = NULL;
  }
  /* Sockets curl did not report removed before its cleanup. */
  while (cu->polls)
    poll_release(cu, cu->polls);
  uv_close((uv_handle_t *)&cu->timer, NULL);
}
