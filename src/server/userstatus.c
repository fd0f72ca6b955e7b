/* SPDX-License-Identifier: MIT */
/*
 * Status that people set (docs/protocol.md section 6): availability and the
 * status message, from a client for itself (the WebSocket messages
 * `availability` and `message`) or from a backend for any user
 * (PUT /v1/users/{id}/availability, PUT and DELETE /v1/users/{id}/message).
 * Both paths decode with wsmsg.c and map the library's answer onto the same
 * error codes here.
 */
#include "server/server.h"
#include "presence_redis.h"
#include "server/json_keys.h"
#include "server/wsmsg.h"

#include <cjson/cJSON.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

/* The library's refusal as the protocol's code, message and HTTP status. */
void userstatus_error(int rc, const char **code, const char **msg, int *http) {
  *http = 400;
  *msg = presence_strerror(rc);
  switch (rc) {
  case PRESENCE_EAVAILABILITY:
    *code = "bad_availability";
    break;
  case PRESENCE_EMESSAGE:
    *code = "bad_message";
    break;
  case PRESENCE_EEXPIRY:
    *code = "bad_expiry";
    break;
  case PRESENCE_EID:
    *code = "bad_user_id";
    break;
  case PRESENCE_ENOTSUP:
    *code = "not_supported";
    *msg = "this store does not keep status settings";
    *http = 501;
    break;
  default:
    *code = "store_unavailable";
    *http = 503;
  }
}

/* Redis's clock less this host's for user_id (0 on the embedded store). */
static int64_t store_clock_off(const srv_t *s, const char *user_id) {
  return s->rstore ? presence_redis_clock_offset_ms(s->rstore, user_id) : 0;
}

/* A message's expiry on the store's clock (Redis's: the cluster's), which is
 * what the store keeps and every reader shows: expires_in counts from
 * Redis's now, expires_at is read on Redis's clock. The answer to a PUT
 * shows this value; built from this host's clock it was the store's less
 * the offset (an instance 30 s off answered an expiry 30 s off what GET
 * and the user.message event then showed), and a client's expires_at was
 * moved by this instance's own error. */
static int64_t userstatus_expiry(const srv_t *s, const char *user_id,
                                 const wsmsg_setting_t *st) {
  if (st->expires_at_ms) return st->expires_at_ms;
  if (st->expires_in_s)
    return srv_now_wall(s) + store_clock_off(s, user_id) +
           st->expires_in_s * 1000;
  return 0;
}

int userstatus_apply(srv_t *s, const char *user_id, int type,
                     const wsmsg_setting_t *st, presence_done_cb done,
                     void *ud) {
  if (type == WSMSG_AVAILABILITY)
    return presence_user_set_availability(
        s->p, user_id, (presence_availability_t)st->availability, done, ud);
  /* The library takes this host's clock and moves it onto Redis's. A time
   * that falls at or before 0 on this host's clock is in the past: -1 is
   * refused as such, where 0 would mean no expiry. */
  int64_t exp = userstatus_expiry(s, user_id, st);
  if (exp) {
    exp -= store_clock_off(s, user_id);
    if (exp <= 0) exp = -1;
  }
  return presence_user_set_message(s->p, user_id, st->text, st->emoji, exp,
                                   done, ud);
}

/* ---- the backend API ---------------------------------------------------- */

/* A deferred PUT/DELETE: the answer is written when the store has applied
 * it (at once with the embedded store). */
typedef struct set_req {
  conn_t *c;
  int type;
  char *body; /* the 200 answer, prepared before the write */
} set_req_t;

static void set_req_done(presence_t *p, int status, void *ud) {
  set_req_t *q = ud;
  conn_t *c = q->c;
  (void)p;
  if (!c->closing) {
    if (status) {
      const char *code, *msg;
      int http;
      userstatus_error(status, &code, &msg, &http);
      http_error(c, http, code, msg);
    } else {
      buf_t *b = &c->srv->scratch;
      buf_reset(b);
      buf_puts(b, q->body);
      http_respond_json(c, 200, b);
    }
  }
  http_resume(c);
  free(q->body);
  free(q);
}

/* The answer to a successful write: the user and what it now has. */
static char *answer(srv_t *s, const char *user_id, int type,
                    const wsmsg_setting_t *st) {
  buf_t *b = &s->scratch;
  buf_reset(b);
  buf_puts(b, "{\"user_id\":");
  buf_put_json_str(b, user_id);
  if (type == WSMSG_AVAILABILITY) {
    buf_puts(b, ",\"availability\":\"");
    buf_puts(b, presence_availability_name(
                    (presence_availability_t)st->availability));
    buf_putc(b, '"');
  } else if (!(st->text && *st->text) && !(st->emoji && *st->emoji)) {
    buf_puts(b, ",\"message\":null");
  } else {
    int64_t exp = userstatus_expiry(s, user_id, st);
    buf_puts(b, ",\"message\":{\"text\":");
    if (st->text && *st->text) buf_put_json_str(b, st->text);
    else buf_puts(b, "null");
    buf_puts(b, ",\"emoji\":");
    if (st->emoji && *st->emoji) buf_put_json_str(b, st->emoji);
    else buf_puts(b, "null");
    buf_puts(b, ",\"expires\":");
    if (exp) buf_put_i64(b, exp);
    else buf_puts(b, "null");
    buf_putc(b, '}');
  }
  buf_putc(b, '}');
  if (buf_failed(b)) return NULL;
  char *out = malloc(b->len + 1);
  if (out) {
    memcpy(out, b->data, b->len);
    out[b->len] = '\0';
  }
  return out;
}

void api_user_setting(conn_t *c, http_req_t *r, const char *user_id,
                      int type) {
  srv_t *s = c->srv;
  wsmsg_t m;
  memset(&m, 0, sizeof m);
  int del = http_method(r) == HTTP_DELETE;
  if (!del) {
    size_t bl;
    const char *body = http_body(r, &bl);
    const char *why;
    m.root = json_body_object(body, bl, &why);
    if (!m.root) {
      http_error(c, 400, "bad_json", why);
      goto out;
    }
    int rc = type == WSMSG_AVAILABILITY ? wsmsg_decode_availability(m.root, &m)
                                        : wsmsg_decode_message(m.root, &m);
    if (rc != WSMSG_OK) {
      http_error(c, 400, m.err_code, m.err_msg);
      goto out;
    }
  }
  set_req_t *q = calloc(1, sizeof *q);
  if (q) q->body = answer(s, user_id, type, &m.setting);
  if (!q || !q->body) {
    if (q) free(q);
    http_error(c, 503, "out_of_memory", "out of memory");
    goto out;
  }
  q->c = c;
  q->type = type;
  http_defer(c);
  int rc = userstatus_apply(s, user_id, type, &m.setting, set_req_done, q);
  if (rc != 0) { /* refused at once: done will not run */
    const char *code, *msg;
    int http;
    userstatus_error(rc, &code, &msg, &http);
    http_error(c, http, code, msg);
    http_resume(c);
    free(q->body);
    free(q);
  }
out:
  wsmsg_free(&m);
}
