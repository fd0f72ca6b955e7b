/* SPDX-License-Identifier: MIT */
/*
 * The backend HTTP API (docs/protocol.md section 2): user status, many users,
 * a user's sessions, kick, and the event stream entry point. Every route
 * needs the API key as a Bearer token, compared in constant time.
 */
#include "server/server.h"
#include "server/json_keys.h"
#include "server/wsmsg.h"

#include <cjson/cJSON.h>
#include <http_parser.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_IDS_PER_REQUEST 1000

static int authorized(const srv_t *s, const http_req_t *r) {
  size_t len;
  const char *h = http_header(r, "Authorization", &len);
  if (!h || !s->cfg.api_key || len < 7 || strncasecmp(h, "Bearer ", 7) != 0)
    return 0;
  h += 7;
  len -= 7;
  size_t kl = strlen(s->cfg.api_key);
  /* Constant time in the key's bytes; only the length can leak. */
  return len == kl && CRYPTO_memcmp(h, s->cfg.api_key, kl) == 0;
}

int api_require_key(conn_t *c, const http_req_t *r) {
  srv_t *s = c->srv;
  if (authorized(s, r)) return 0;
  http_error_hdr(c, 401, "unauthorized",
                 s->cfg.api_key ? "missing or wrong API key"
                                : "no API key configured on this server",
                 "WWW-Authenticate: Bearer\r\n");
  return -1;
}

/* The store could not answer (Redis away or slow): 503, retry later. Every
 * path says store_unavailable (out_of_memory when that is the cause), the
 * codes docs/api.md lists: a backend matches on them to retry. */
static void store_error(conn_t *c, int rc) {
  if (rc == PRESENCE_ENOMEM)
    http_error(c, 503, "out_of_memory", "out of memory");
  else
    http_error(c, 503, "store_unavailable", presence_strerror(rc));
}

/* Every query is answered through a callback: at once with the embedded
 * store, later with Redis. The request is deferred (http_defer holds the
 * connection) and resumed once answered. */
/* many: 1 a list of users; 0 one user; 2, 3 one user's availability or
 * message (GET /v1/users/{id}/availability, .../message). */
static void on_users(srv_t *s, int status, char **ids,
                     const presence_user_info_t *infos, size_t n, void *ud,
                     int many) {
  conn_t *c = ud;
  (void)ids;
  if (!c->closing) {
    if (status) {
      store_error(c, status);
    } else {
      buf_t *b = &s->scratch;
      buf_reset(b);
      if (many == 1) buf_puts(b, "{\"users\":[");
      for (size_t i = 0; i < n; i++) {
        if (i) buf_putc(b, ',');
        if (many >= 2) json_user_setting(b, &infos[i], many == 3);
        else json_user(b, &infos[i], JSON_USER_SESSIONS);
      }
      if (many == 1) buf_puts(b, "]}");
      http_respond_json(c, 200, b);
      buf_shrink(b, 65536);
    }
  }
  http_resume(c);
}

static void on_one_user(srv_t *s, int status, char **ids,
                        const presence_user_info_t *infos, size_t n, void *ud) {
  on_users(s, status, ids, infos, n, ud, 0);
}

static void on_many_users(srv_t *s, int status, char **ids,
                          const presence_user_info_t *infos, size_t n,
                          void *ud) {
  on_users(s, status, ids, infos, n, ud, 1);
}

static void on_one_availability(srv_t *s, int status, char **ids,
                                const presence_user_info_t *infos, size_t n,
                                void *ud) {
  on_users(s, status, ids, infos, n, ud, 2);
}

static void on_one_message(srv_t *s, int status, char **ids,
                           const presence_user_info_t *infos, size_t n,
                           void *ud) {
  on_users(s, status, ids, infos, n, ud, 3);
}

static void ask_users(conn_t *c, char **ids, size_t n, users_cb cb) {
  http_defer(c);
  if (users_query(c->srv, ids, n, cb, c) != 0) {
    http_error(c, 503, "out_of_memory", "out of memory");
    http_resume(c);
  }
}

static void get_user(conn_t *c, const char *id) {
  char *ids[1] = {(char *)id};
  ask_users(c, ids, 1, on_one_user);
}

/* A deferred request about one id. */
typedef struct id_req {
  conn_t *c;
  char id[4 * PRESENCE_ID_MAX + 1]; /* as decoded by segment_id */
} id_req_t;

static id_req_t *id_req(conn_t *c, const char *id) {
  id_req_t *q = malloc(sizeof *q);
  if (!q) return NULL;
  q->c = c;
  snprintf(q->id, sizeof q->id, "%s", id);
  http_defer(c);
  return q;
}

static void id_req_done(id_req_t *q) {
  http_resume(q->c);
  free(q);
}

static void on_sessions(presence_t *p, int status,
                        const presence_session_info_t *v, size_t n, void *ud) {
  id_req_t *q = ud;
  conn_t *c = q->c;
  srv_t *s = c->srv;
  (void)p;
  if (c->closing) goto out;
  if (status) {
    store_error(c, status);
    goto out;
  }
  buf_t *b = &s->scratch;
  buf_reset(b);
  buf_puts(b, "{\"user_id\":");
  buf_put_json_str(b, q->id);
  buf_puts(b, ",\"sessions\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) buf_putc(b, ',');
    json_session(b, &v[i]);
  }
  buf_puts(b, "]}");
  http_respond_json(c, 200, b);
  buf_shrink(b, 65536);
out:
  id_req_done(q);
}

static void get_sessions(conn_t *c, const char *id) {
  id_req_t *q = id_req(c, id);
  if (!q) {
    http_error(c, 503, "out_of_memory", "out of memory");
    return;
  }
  int rc = presence_sessions_query(c->srv->p, id, on_sessions, q);
  if (rc < 0) {
    store_error(c, rc);
    id_req_done(q);
  }
}

static void kicked(conn_t *c, const char *id) {
  buf_t *b = &c->srv->scratch;
  buf_reset(b);
  buf_puts(b, "{\"kicked\":");
  buf_put_json_str(b, id);
  buf_putc(b, '}');
  http_respond_json(c, 200, b);
}

static void on_remote_kick(srv_t *s, int found, void *ud) {
  id_req_t *q = ud;
  conn_t *c = q->c;
  (void)s;
  if (!c->closing) {
    if (found > 0)
      kicked(c, q->id);
    else if (found == 0)
      http_error(c, 404, "no_session", "no such session");
    else
      store_error(c, PRESENCE_ESTORE);
  }
  id_req_done(q);
}

static void kick(conn_t *c, const char *id) {
  srv_t *s = c->srv;
  if (srv_async(s)) {
    /* The store ends only this instance's sessions. Ours: ended and closed
     * here. Another instance's: it is asked through Redis (kick.c). */
    if (ws_find(s, id)) {
      ws_kick(s, id);
      kicked(c, id);
      return;
    }
    id_req_t *q = id_req(c, id);
    if (!q) {
      http_error(c, 503, "out_of_memory", "out of memory");
      return;
    }
    if (kick_remote(s, id, on_remote_kick, q) != 0) {
      store_error(c, PRESENCE_ESTORE);
      id_req_done(q);
    }
    return;
  }
  int rc = presence_session_kick(s->p, id, NULL, NULL);
  if (rc == PRESENCE_ENOSESSION) {
    http_error(c, 404, "no_session", "no such session");
    return;
  }
  if (rc != 0) {
    /* The in-process store ends a session it holds without fail; were it
     * to fail, the answer is the one every other store failure gets (a
     * kick alone said store_error, a code no other path sent). */
    store_error(c, rc);
    return;
  }
  kicked(c, id);
}

/* Answer {"users":[...]} for ids[0..n). */
static void many_users(conn_t *c, char **ids, size_t n) {
  ask_users(c, ids, n, on_many_users);
}

/* GET /v1/users?ids=a,b,c, also written ?ids=a&ids=b,c: every occurrence
 * counts (a list in Python's requests, Go's url.Values or URLSearchParams
 * comes as one ids= per element, and answering for the first one alone left
 * the others out of a 200). */
static void get_users(conn_t *c, http_req_t *r) {
  size_t ql, total = 0;
  const char *q = http_query(r, "ids", &ql);
  if (!q) {
    http_error(c, 400, "bad_request", "ids=<comma-separated user ids> missing");
    return;
  }
  for (const char *v = q; v; v = http_query_next(r, "ids", v, &ql))
    total += ql + 1;
  char *copy = malloc(total + 1);
  char **ids = calloc(MAX_IDS_PER_REQUEST, sizeof *ids);
  size_t n = 0, at = 0;
  if (!copy || !ids) {
    http_error(c, 503, "out_of_memory", "out of memory");
    goto out;
  }
  for (q = http_query(r, "ids", &ql); q; q = http_query_next(r, "ids", q, &ql)) {
    /* Split on raw commas first: a %2C inside an id stays part of it. */
    size_t o = 0;
    for (size_t i = 0; i <= ql; i++) {
      if (i < ql && q[i] != ',') continue;
      size_t len = i - o;
      /* An empty id (ids=a,,b, ids=, ids=a,) is an error like any invalid
       * one, not a list element to drop: a backend building the list from
       * an empty variable must hear about it. */
      if (len == 0) {
        http_error(c, 400, "bad_user_id", "an id in ids is empty");
        goto out;
      }
      if (n == MAX_IDS_PER_REQUEST) {
        http_error(c, 400, "bad_request", "at most 1000 ids per request");
        goto out;
      }
      char *dst = copy + at + o;
      if (http_unescape(q + o, len, dst, len + 1) < 0 ||
          presence_id_check(dst) != 0) {
        http_error(c, 400, "bad_user_id", "an id in ids is not a valid id");
        goto out;
      }
      ids[n++] = dst;
      o = i + 1;
    }
    at += ql + 1;
  }
  many_users(c, ids, n);
out:
  free(copy);
  free(ids);
}

/* POST /v1/users/query {"user_ids":[...]} */
static void query_users(conn_t *c, http_req_t *r) {
  size_t bl;
  const char *body = http_body(r, &bl);
  const char *why;
  cJSON *root = json_body_object(body, bl, &why);
  if (!root) {
    http_error(c, 400, "bad_json", why);
    goto out;
  }
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "user_ids");
  if (!cJSON_IsArray(arr)) {
    http_error(c, 400, "bad_request", "user_ids must be an array of ids");
    goto out;
  }
  int n = cJSON_GetArraySize(arr);
  if (n > MAX_IDS_PER_REQUEST) {
    http_error(c, 400, "bad_request", "at most 1000 ids per request");
    goto out;
  }
  char *ids[MAX_IDS_PER_REQUEST];
  int i = 0;
  const cJSON *u;
  cJSON_ArrayForEach(u, arr) {
    if (!cJSON_IsString(u)) {
      http_error(c, 400, "bad_request", "user_ids must be an array of ids");
      goto out;
    }
    if (presence_id_check(u->valuestring) != 0) {
      http_error(c, 400, "bad_user_id", "an id in user_ids is not a valid id");
      goto out;
    }
    ids[i++] = u->valuestring;
  }
  many_users(c, ids, (size_t)i);
out:
  cJSON_Delete(root);
}

static void method_not_allowed(conn_t *c, const char *allow) {
  char hdr[64];
  snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
  http_error_hdr(c, 405, "method_not_allowed", "method not allowed here", hdr);
}

/* Decode one path segment into out; 0 if it is a valid id. */
static int segment_id(const char *seg, size_t len, char *out, size_t cap) {
  if (len == 0 || memchr(seg, '/', len)) return -1;
  if (http_unescape_path(seg, len, out, cap) < 0) return -1;
  return presence_id_check(out) == 0 ? 0 : -1;
}

void api_handle(conn_t *c, http_req_t *r) {
  if (api_require_key(c, r) != 0) return;
  size_t pl;
  const char *path = http_path(r, &pl);
  /* RFC 9110 9.3.2: HEAD is GET without the body. Routed as GET;
   * http_respond leaves the body out, and the event stream answers its
   * headers alone (sse_start). */
  int m = http_method(r);
  if (m == HTTP_HEAD) m = HTTP_GET;
  char id[4 * PRESENCE_ID_MAX + 1];

  if (api_channels(c, r, path, pl, m)) return;
  if (pl == 10 && !memcmp(path, "/v1/events", 10)) {
    if (m != HTTP_GET)
      method_not_allowed(c, "GET, HEAD");
    else
      sse_start(c, r);
    return;
  }
  if (pl == 9 && !memcmp(path, "/v1/users", 9)) {
    if (m != HTTP_GET)
      method_not_allowed(c, "GET, HEAD");
    else
      get_users(c, r);
    return;
  }
  /* POST is the query; a GET of the same path is the user named "query"
   * (any id is a user's: an SDK's getUser("query") was answered 405). */
  if (pl == 15 && !memcmp(path, "/v1/users/query", 15) && m != HTTP_GET) {
    if (m != HTTP_POST)
      method_not_allowed(c, "GET, HEAD, POST");
    else
      query_users(c, r);
    return;
  }
  if (pl > 10 && !memcmp(path, "/v1/users/", 10)) {
    const char *seg = path + 10, *end = path + pl;
    const char *slash = memchr(seg, '/', (size_t)(end - seg));
    int sessions = 0, setting = 0;
    if (slash) {
      size_t rl = (size_t)(end - slash);
      if (rl == 9 && memcmp(slash, "/sessions", 9) == 0)
        sessions = 1;
      else if (rl == 13 && memcmp(slash, "/availability", 13) == 0)
        setting = WSMSG_AVAILABILITY;
      else if (rl == 8 && memcmp(slash, "/message", 8) == 0)
        setting = WSMSG_MESSAGE;
      else {
        http_error(c, 404, "not_found", "no such endpoint");
        return;
      }
    }
    size_t sl = (size_t)((slash ? slash : end) - seg);
    if (segment_id(seg, sl, id, sizeof id) != 0) {
      http_error(c, 400, "bad_user_id", "not a valid user id");
      return;
    }
    if (setting && m == HTTP_GET) {
      char *ids[1] = {id};
      ask_users(c, ids, 1,
                setting == WSMSG_MESSAGE ? on_one_message : on_one_availability);
    } else if (setting == WSMSG_AVAILABILITY && m != HTTP_PUT)
      method_not_allowed(c, "GET, HEAD, PUT");
    else if (setting == WSMSG_MESSAGE && m != HTTP_PUT && m != HTTP_DELETE)
      method_not_allowed(c, "GET, HEAD, PUT, DELETE");
    else if (setting)
      api_user_setting(c, r, id, setting);
    else if (m != HTTP_GET)
      method_not_allowed(c, "GET, HEAD");
    else if (sessions)
      get_sessions(c, id);
    else
      get_user(c, id);
    return;
  }
  if (pl == 11 && !memcmp(path, "/v1/origins", 11)) {
    if (m != HTTP_GET)
      method_not_allowed(c, "GET, HEAD");
    else
      backend_http_origins(c);
    return;
  }
  if (pl > 13 && !memcmp(path, "/v1/sessions/", 13)) {
    if (m != HTTP_DELETE && m != HTTP_PUT) {
      method_not_allowed(c, "DELETE, PUT");
      return;
    }
    if (segment_id(path + 13, pl - 13, id, sizeof id) != 0) {
      if (m == HTTP_PUT)
        http_error(c, 400, "bad_session_id", "not a valid session id");
      else
        http_error(c, 404, "no_session", "no such session");
      return;
    }
    if (m == HTTP_PUT)
      backend_http_put_session(c, r, id);
    else
      kick(c, id);
    return;
  }
  http_error(c, 404, "not_found", "no such endpoint");
}
