/* SPDX-License-Identifier: MIT */
/*
 * The backend API's channel endpoints (docs/api.md, "Channels"):
 *
 *   GET    /v1/channels?prefix=P&limit=N&after=NAME   active channels, counts
 *   GET    /v1/channels/{name}                        the count
 *   GET    /v1/channels/{name}/members?limit=N&after=USER
 *   DELETE /v1/channels/{name}/members/{user_id}      remove a user
 *   GET    /v1/users/{id}/channels                    a user's channels
 *
 * Answered through the store's callbacks (at once on the embedded store,
 * later on Redis): the request is deferred until then.
 */
#include "server/server.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PAGE 1000
#define DEFAULT_PAGE 100

typedef struct chreq {
  conn_t *c;
  int count_only;
  char channel[4 * PRESENCE_CHANNEL_MAX + 1];
  char user[4 * PRESENCE_ID_MAX + 1];
  /* DELETE of a member: the user's sessions in the channel before the
   * removal, NUL-separated (on_memberships). */
  char *joined;
  size_t joined_len;
} chreq_t;

static chreq_t *chreq_new(conn_t *c) {
  chreq_t *q = calloc(1, sizeof *q);
  if (!q) {
    http_error(c, 503, "out_of_memory", "out of memory");
    return NULL;
  }
  q->c = c;
  http_defer(c);
  return q;
}

static void chreq_done(chreq_t *q) {
  http_resume(q->c);
  free(q->joined);
  free(q);
}

static void answer_error(conn_t *c, int rc) {
  if (rc == PRESENCE_ENOTMEMBER)
    http_error(c, 404, "not_member", "the user is not a member of the channel");
  else if (rc == PRESENCE_ECHANNEL)
    http_error(c, 400, "bad_channel", "not a valid channel name");
  else if (rc == PRESENCE_EID)
    http_error(c, 400, "bad_user_id", "not a valid user id");
  else
    http_error(c, 503, "store_unavailable", presence_strerror(rc));
}

/* The start of a store's answer: the scratch buffer to write the body in,
 * or NULL when the connection is gone or the store failed (answered). */
static buf_t *answer_begin(chreq_t *q, int status) {
  conn_t *c = q->c;
  if (c->closing) return NULL;
  if (status) {
    answer_error(c, status);
    return NULL;
  }
  buf_t *b = &c->srv->scratch;
  buf_reset(b);
  return b;
}

/* Send the body written since answer_begin; the request is done. */
static void answer_end(chreq_t *q, buf_t *b) {
  if (b) {
    http_respond_json(q->c, 200, b);
    buf_shrink(b, 65536);
  }
  chreq_done(q);
}

/* ,"next":"..." or ,"next":null */
static void put_next(buf_t *b, const char *next) {
  buf_puts(b, "],\"next\":");
  if (next)
    buf_put_json_str(b, next);
  else
    buf_puts(b, "null");
}

/* A query parameter, percent-decoded; "" when absent. -1 if malformed. */
static int param(http_req_t *r, const char *name, char *out, size_t cap) {
  size_t len;
  const char *v = http_query(r, name, &len);
  out[0] = '\0';
  if (!v) return 0;
  return http_unescape(v, len, out, cap) < 0 ? -1 : 0;
}

/* limit: 1..MAX_PAGE, DEFAULT_PAGE when absent. */
static int page_limit(http_req_t *r, size_t *limit) {
  char v[16];
  if (param(r, "limit", v, sizeof v) != 0) return -1;
  if (!v[0]) {
    *limit = DEFAULT_PAGE;
    return 0;
  }
  char *end;
  long n = strtol(v, &end, 10);
  if (*end || n < 1 || n > MAX_PAGE) return -1;
  *limit = (size_t)n;
  return 0;
}

/* 400 for a single-valued parameter given twice (?limit=5&limit=500): the
 * page asked for is then a guess. Returns 1 when answered. */
static int refuse_repeated(conn_t *c, http_req_t *r, const char *const *names) {
  const char *twice = http_query_repeated(r, names);
  if (!twice) return 0;
  char msg[64];
  snprintf(msg, sizeof msg, "%s is given twice: give it once", twice);
  http_error(c, 400, "bad_request", msg);
  return 1;
}

static void on_members(presence_t *p, int status,
                       const presence_member_info_t *m, size_t n,
                       uint64_t count, const char *next, void *ud) {
  (void)p;
  chreq_t *q = ud;
  buf_t *b = answer_begin(q, status);
  if (b) {
    buf_puts(b, "{\"channel\":");
    buf_put_json_str(b, q->channel);
    buf_puts(b, ",\"count\":");
    buf_put_u64(b, count);
    if (!q->count_only) {
      buf_puts(b, ",\"members\":[");
      for (size_t i = 0; i < n; i++) {
        if (i) buf_putc(b, ',');
        json_member(b, &m[i], JSON_MEMBER_SESSIONS);
      }
      put_next(b, next);
    }
    buf_putc(b, '}');
  }
  answer_end(q, b);
}

static void get_members(conn_t *c, http_req_t *r, const char *ch,
                        int count_only) {
  size_t limit = 0;
  char after[4 * PRESENCE_ID_MAX + 1];
  if (!count_only) {
    static const char *const single[] = {"limit", "after", NULL};
    if (refuse_repeated(c, r, single)) return;
    if (page_limit(r, &limit) != 0) {
      http_error(c, 400, "bad_request", "limit must be 1..1000");
      return;
    }
    if (param(r, "after", after, sizeof after) != 0 ||
        (after[0] && presence_id_check(after) != 0)) {
      http_error(c, 400, "bad_request", "after must be a user id");
      return;
    }
  }
  chreq_t *q = chreq_new(c);
  if (!q) return;
  q->count_only = count_only;
  snprintf(q->channel, sizeof q->channel, "%s", ch);
  int rc = presence_channel_members(c->srv->p, ch,
                                    !count_only && after[0] ? after : NULL,
                                    limit, on_members, q);
  if (rc < 0) {
    answer_error(c, rc);
    chreq_done(q);
  }
}

static void on_channels(presence_t *p, int status,
                        const presence_channel_info_t *v, size_t n,
                        const char *next, void *ud) {
  (void)p;
  chreq_t *q = ud;
  buf_t *b = answer_begin(q, status);
  if (b) {
    buf_puts(b, "{\"channels\":[");
    for (size_t i = 0; i < n; i++) {
      if (i) buf_putc(b, ',');
      buf_puts(b, "{\"channel\":");
      buf_put_json_str(b, v[i].channel);
      buf_puts(b, ",\"count\":");
      buf_put_u64(b, v[i].count);
      buf_puts(b, ",\"shown_count\":");
      buf_put_u64(b, v[i].shown_count);
      buf_putc(b, '}');
    }
    put_next(b, next);
    buf_putc(b, '}');
  }
  answer_end(q, b);
}

static void list_channels(conn_t *c, http_req_t *r) {
  size_t limit;
  char prefix[4 * PRESENCE_CHANNEL_MAX + 1], after[4 * PRESENCE_CHANNEL_MAX + 1];
  static const char *const single[] = {"prefix", "limit", "after", NULL};
  if (refuse_repeated(c, r, single)) return;
  if (page_limit(r, &limit) != 0) {
    http_error(c, 400, "bad_request", "limit must be 1..1000");
    return;
  }
  if (param(r, "prefix", prefix, sizeof prefix) != 0 ||
      strlen(prefix) > PRESENCE_CHANNEL_MAX ||
      param(r, "after", after, sizeof after) != 0 ||
      (after[0] && presence_channel_check(after) != 0)) {
    http_error(c, 400, "bad_channel", "prefix or after is not a channel name");
    return;
  }
  chreq_t *q = chreq_new(c);
  if (!q) return;
  int rc = presence_channels_list(c->srv->p, prefix, after[0] ? after : NULL,
                                  limit, on_channels, q);
  if (rc < 0) {
    answer_error(c, rc);
    chreq_done(q);
  }
}

static void on_user_channels(presence_t *p, int status,
                             const presence_member_info_t *m, size_t n,
                             uint64_t count, const char *next, void *ud) {
  (void)p;
  (void)count;
  (void)next;
  chreq_t *q = ud;
  buf_t *b = answer_begin(q, status);
  if (!b) {
    answer_end(q, NULL);
    return;
  }
  buf_puts(b, "{\"user_id\":");
  buf_put_json_str(b, q->user);
  buf_puts(b, ",\"channels\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) buf_putc(b, ',');
    buf_puts(b, "{\"channel\":");
    buf_put_json_str(b, m[i].channel);
    buf_putc(b, ',');
    /* The member record without its user id: splice after its '{'. */
    size_t at = b->len;
    json_member(b, &m[i], JSON_MEMBER_SESSIONS);
    if (!buf_failed(b) && b->len > at + 1) {
      memmove(b->data + at, b->data + at + 1, b->len - at - 1);
      b->len--;
    }
  }
  buf_puts(b, "]}");
  answer_end(q, b);
}

static void on_removed(presence_t *p, int status, void *ud) {
  (void)p;
  chreq_t *q = ud;
  /* Backends are told of their sessions' removal (their SDK would join the
   * channel again at its next re-assert), whether or not the caller is
   * still there to read the answer. */
  for (size_t i = 0; status == 0 && q->joined && i < q->joined_len;
       i += strlen(q->joined + i) + 1)
    (void)origin_channel_removed(q->c->srv, q->joined + i, q->channel, 0);
  buf_t *b = answer_begin(q, status);
  if (b) {
    buf_puts(b, "{\"removed\":");
    buf_put_json_str(b, q->user);
    buf_puts(b, ",\"channel\":");
    buf_put_json_str(b, q->channel);
    buf_putc(b, '}');
  }
  answer_end(q, b);
}

/*
 * DELETE /v1/channels/{name}/members/{user_id} reads the user's memberships
 * first: once the store has removed them it no longer lists which sessions
 * were in the channel, and those that backends report from here must be
 * told (origin_channel_removed). A session joining in between is removed
 * untold, as before this read existed (its backend learns at its next op).
 */
static void start_remove(chreq_t *q) {
  int rc = presence_channel_remove_user(q->c->srv->p, q->channel, q->user,
                                        on_removed, q);
  if (rc < 0) {
    if (!q->c->closing) answer_error(q->c, rc);
    chreq_done(q);
  }
}

static void on_memberships(presence_t *p, int status,
                           const presence_member_info_t *m, size_t n,
                           uint64_t count, const char *next, void *ud) {
  (void)p;
  (void)count;
  (void)next;
  chreq_t *q = ud;
  for (size_t i = 0; status == 0 && i < n; i++) {
    if (strcmp(m[i].channel, q->channel) != 0) continue;
    size_t len = 0;
    for (size_t k = 0; k < m[i].n_metas; k++)
      len += strlen(m[i].metas[k].session_id) + 1;
    if (!len || !(q->joined = malloc(len))) break;
    for (size_t k = 0; k < m[i].n_metas; k++) {
      size_t l = strlen(m[i].metas[k].session_id) + 1;
      memcpy(q->joined + q->joined_len, m[i].metas[k].session_id, l);
      q->joined_len += l;
    }
    break;
  }
  /* The embedded store answers inside the call: the caller removes once
   * the listing is over, not from inside it. */
  if (srv_async(q->c->srv)) start_remove(q);
}

/* Decode one path segment (no '/') into out: 0, or -1. */
static int segment(const char *seg, size_t len, char *out, size_t cap) {
  if (len == 0 || memchr(seg, '/', len)) return -1;
  return http_unescape_path(seg, len, out, cap) < 0 ? -1 : 0;
}

int api_channels(conn_t *c, http_req_t *r, const char *path, size_t pl,
                 int m) {
  char ch[4 * PRESENCE_CHANNEL_MAX + 1], user[4 * PRESENCE_ID_MAX + 1];
  /* /v1/users/{id}/channels */
  if (pl > 19 && !memcmp(path, "/v1/users/", 10) &&
      !memcmp(path + pl - 9, "/channels", 9)) {
    if (segment(path + 10, pl - 19, user, sizeof user) != 0 ||
        presence_id_check(user) != 0) {
      http_error(c, 400, "bad_user_id", "not a valid user id");
      return 1;
    }
    if (m != HTTP_GET) {
      http_error_hdr(c, 405, "method_not_allowed", "method not allowed here",
                     "Allow: GET, HEAD\r\n");
      return 1;
    }
    chreq_t *q = chreq_new(c);
    if (!q) return 1;
    snprintf(q->user, sizeof q->user, "%s", user);
    int rc = presence_user_channels(c->srv->p, user, on_user_channels, q);
    if (rc < 0) {
      answer_error(c, rc);
      chreq_done(q);
    }
    return 1;
  }
  if (pl == 12 && !memcmp(path, "/v1/channels", 12)) {
    if (m != HTTP_GET)
      http_error_hdr(c, 405, "method_not_allowed", "method not allowed here",
                     "Allow: GET, HEAD\r\n");
    else
      list_channels(c, r);
    return 1;
  }
  if (pl <= 13 || memcmp(path, "/v1/channels/", 13) != 0) return 0;
  const char *seg = path + 13, *end = path + pl;
  const char *slash = memchr(seg, '/', (size_t)(end - seg));
  if (segment(seg, (size_t)((slash ? slash : end) - seg), ch, sizeof ch) != 0 ||
      presence_channel_check(ch) != 0) {
    http_error(c, 400, "bad_channel", "not a valid channel name");
    return 1;
  }
  if (!slash) {
    if (m != HTTP_GET)
      http_error_hdr(c, 405, "method_not_allowed", "method not allowed here",
                     "Allow: GET, HEAD\r\n");
    else
      get_members(c, r, ch, 1);
    return 1;
  }
  size_t rest = (size_t)(end - slash);
  if (rest == 8 && !memcmp(slash, "/members", 8)) {
    if (m != HTTP_GET)
      http_error_hdr(c, 405, "method_not_allowed", "method not allowed here",
                     "Allow: GET, HEAD\r\n");
    else
      get_members(c, r, ch, 0);
    return 1;
  }
  if (rest > 9 && !memcmp(slash, "/members/", 9)) {
    if (segment(slash + 9, rest - 9, user, sizeof user) != 0 ||
        presence_id_check(user) != 0) {
      http_error(c, 400, "bad_user_id", "not a valid user id");
      return 1;
    }
    if (m != HTTP_DELETE) {
      http_error_hdr(c, 405, "method_not_allowed", "method not allowed here",
                     "Allow: DELETE\r\n");
      return 1;
    }
    chreq_t *q = chreq_new(c);
    if (!q) return 1;
    snprintf(q->channel, sizeof q->channel, "%s", ch);
    snprintf(q->user, sizeof q->user, "%s", user);
    /* Only when a backend holds sessions here can one of them be told. */
    if (!origin_has_backend_sessions(c->srv)) {
      start_remove(q);
      return 1;
    }
    int rc = presence_user_channels(c->srv->p, user, on_memberships, q);
    /* On a failed read the removal still happens (nobody is told). */
    if (rc < 0 || !srv_async(c->srv)) start_remove(q);
    return 1;
  }
  http_error(c, 404, "not_found", "no such endpoint");
  return 1;
}
