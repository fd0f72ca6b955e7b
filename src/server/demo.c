/* SPDX-License-Identifier: MIT */
/*
 * Demo mode (--demo, loopback only): the static page of web/ at /, demo
 * tokens for any name, and the list of users the demo has seen. Nothing here
 * is reachable without the flag.
 */
#include "server/server.h"

#include "server/json_keys.h"
#include "server/jwt.h"

#include <cjson/cJSON.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEMO_TOKEN_TTL_S 3600
#define MAX_STATIC_FILE (8u << 20)
#define MAX_DEMO_USERS 1000

/* The demo signs with a secret of its own, always random: a token it hands
 * out must never be accepted by a production instance (config.c refuses
 * --demo together with a JWT secret). */
int demo_init(srv_t *s) {
  s->jwt_secret_len = 32;
  s->jwt_secret = malloc(s->jwt_secret_len + 1);
  if (!s->jwt_secret ||
      s->sys->random(s->sys->ud, s->jwt_secret, s->jwt_secret_len) != 0)
    return -1;
  s->jwt_secret[s->jwt_secret_len] = 0;
  srv_log(s, PRESENCE_LOG_INFO,
          "demo mode: random JWT secret for this run (demo tokens are valid "
          "on this process only)");
  /* The page comes from --web-root, "web" relative to the working
   * directory: started from elsewhere (cd build && ./presenced --demo), /
   * answered a bare 404 and only each request's log line hinted why. */
  char index[1024];
  struct stat sb;
  int n = snprintf(index, sizeof index, "%s/index.html", s->cfg.web_root);
  if (n < 0 || (size_t)n >= sizeof index || stat(index, &sb) != 0 ||
      !S_ISREG(sb.st_mode))
    srv_log(s, PRESENCE_LOG_WARN,
            "demo mode: no demo page at %s (--web-root, relative to the "
            "working directory): / answers 404; start presenced in the "
            "source tree or give --web-root DIR",
            index);
  return 0;
}

static const char *content_type(const char *path) {
  static const struct {
    const char *ext, *type;
  } types[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".map", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".txt", "text/plain; charset=utf-8"},
      {".woff2", "font/woff2"},
      {".d.ts", "text/plain; charset=utf-8"},
  };
  size_t pl = strlen(path);
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    size_t el = strlen(types[i].ext);
    if (pl > el && !strcmp(path + pl - el, types[i].ext)) return types[i].type;
  }
  return "application/octet-stream";
}

/* A safe relative path: segments of [A-Za-z0-9._-], none empty, none
 * starting with a dot (no "..", no hidden files). */
static int safe_path(const char *p) {
  if (*p != '/') return 0;
  const char *seg = p + 1;
  for (const char *q = seg;; q++) {
    if (*q == '/' || *q == '\0') {
      if (q == seg || *seg == '.') return 0;
      if (*q == '\0') return 1;
      seg = q + 1;
      continue;
    }
    char ch = *q;
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
      return 0;
  }
}

static void serve_static(conn_t *c, http_req_t *r) {
  srv_t *s = c->srv;
  size_t pl;
  const char *path = http_path(r, &pl);
  char rel[512];
  if (http_unescape_path(path, pl, rel, sizeof rel - 16) < 0) {
    http_error(c, 404, "not_found", "no such file");
    return;
  }
  if (!strcmp(rel, "/") || !strcmp(rel, "")) strcpy(rel, "/index.html");
  if (!safe_path(rel)) {
    http_error(c, 404, "not_found", "no such file");
    return;
  }
  char full[1024];
  int n = snprintf(full, sizeof full, "%s%s", s->cfg.web_root, rel);
  struct stat sb;
  if (n < 0 || (size_t)n >= sizeof full || stat(full, &sb) != 0 ||
      !S_ISREG(sb.st_mode)) {
    http_error(c, 404, "not_found", "no such file");
    return;
  }
  if ((uint64_t)sb.st_size > MAX_STATIC_FILE) {
    http_error(c, 404, "not_found", "file too large to serve");
    return;
  }
  FILE *f = fopen(full, "rb");
  char *data = malloc((size_t)sb.st_size + 1);
  size_t got = 0;
  if (f && data) got = fread(data, 1, (size_t)sb.st_size, f);
  if (f) fclose(f);
  if (!f || !data || got != (size_t)sb.st_size) {
    free(data);
    http_error(c, 404, "not_found", "cannot read file");
    return;
  }
  http_respond(c, 200, content_type(rel), "X-Content-Type-Options: nosniff\r\n",
               data, got);
  free(data);
}

static void issue_token(conn_t *c, http_req_t *r) {
  srv_t *s = c->srv;
  size_t bl;
  const char *body = http_body(r, &bl);
  const char *why;
  cJSON *root = json_body_object(body, bl, &why);
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
  if (!root) {
    http_error(c, 400, "bad_json", why);
    goto out;
  }
  if (!cJSON_IsString(name) || presence_id_check(name->valuestring) != 0) {
    http_error(c, 400, "bad_user_id", "name is not a valid user id");
    goto out;
  }
  buf_t claims;
  buf_init(&claims);
  buf_puts(&claims, "{\"sub\":");
  buf_put_json_str(&claims, name->valuestring);
  buf_puts(&claims, ",\"exp\":");
  buf_put_i64(&claims, srv_now_wall(s) / 1000 + DEMO_TOKEN_TTL_S);
  buf_puts(&claims, ",\"watch\":\"*\"");
  /* Rooms on the demo page: any channel may be joined and observed. */
  buf_puts(&claims, ",\"channels\":\"*\",\"observe\":\"*\"");
  if (s->cfg.jwt_audience) {
    buf_puts(&claims, ",\"aud\":");
    buf_put_json_str(&claims, s->cfg.jwt_audience);
  }
  buf_putc(&claims, '}');
  char *token =
      buf_failed(&claims)
          ? NULL
          : jwt_sign_hs256(s->jwt_secret, s->jwt_secret_len, claims.data);
  buf_free(&claims);
  if (!token) {
    http_error(c, 503, "out_of_memory", "cannot sign a token");
    goto out;
  }
  buf_t *b = &s->scratch;
  buf_reset(b);
  buf_puts(b, "{\"token\":");
  buf_put_json_str(b, token);
  buf_puts(b, ",\"user_id\":");
  buf_put_json_str(b, name->valuestring);
  buf_putc(b, '}');
  free(token);
  http_respond_json(c, 200, b);
out:
  cJSON_Delete(root);
}

typedef struct visit {
  srv_t *s;
  buf_t *b;
  size_t n;
} visit_t;

static int visit_user(const presence_user_info_t *info, void *ud) {
  visit_t *v = ud;
  if (v->n) buf_putc(v->b, ',');
  /* Anyone on the machine reads this without a key, and the demo's pages
   * are watchers: each user as a watcher's snapshot shows it (an invisible
   * user offline, dnd online, ...), never the truth backends get. */
  json_user(v->b, info, JSON_USER_SHOWN);
  return ++v->n >= MAX_DEMO_USERS;
}

static void list_users(conn_t *c) {
  buf_t *b = &c->srv->scratch;
  buf_reset(b);
  buf_puts(b, "{\"users\":[");
  visit_t v = {c->srv, b, 0};
  presence_users_foreach(c->srv->p, visit_user, &v);
  buf_puts(b, "]}");
  http_respond_json(c, 200, b);
  buf_shrink(b, 65536);
}

/* Demo tokens go to anyone who can reach the endpoint, so reaching it is
 * kept to the machine itself: the listener is on loopback (config.c), the
 * Host must name a loopback address (a DNS-rebinding page reaches 127.0.0.1
 * under its own name) and a browser's Origin must be a loopback page (any
 * site could otherwise fetch a token from a visitor's local demo). 0, or -1
 * after answering 403. */
static int demo_caller_local(conn_t *c, http_req_t *r) {
  size_t hl, ol;
  const char *host = http_header(r, "Host", &hl);
  const char *origin = http_header(r, "Origin", &ol);
  if (!host || !srv_host_is_loopback(host, hl)) {
    http_error(c, 403, "host_not_allowed",
               "demo tokens are issued to loopback hosts only");
    return -1;
  }
  if (origin && !srv_origin_is_loopback(origin, ol)) {
    http_error(c, 403, "origin_not_allowed",
               "demo tokens are issued to pages on loopback only");
    return -1;
  }
  return 0;
}

void demo_handle(conn_t *c, http_req_t *r) {
  size_t pl;
  const char *path = http_path(r, &pl);
  int m = http_method(r);
  if (pl == 14 && !memcmp(path, "/v1/demo/token", 14)) {
    if (demo_caller_local(c, r) != 0) return;
    if (m != HTTP_POST)
      http_error_hdr(c, 405, "method_not_allowed", "use POST",
                     "Allow: POST\r\n");
    else
      issue_token(c, r);
    return;
  }
  if (pl == 14 && !memcmp(path, "/v1/demo/users", 14)) {
    /* RFC 9110 9.3.2: HEAD is GET without the body, as on every /v1 GET
     * route (api.c); http_respond leaves the body out of a HEAD. */
    if (m != HTTP_GET && m != HTTP_HEAD)
      http_error_hdr(c, 405, "method_not_allowed", "use GET",
                     "Allow: GET, HEAD\r\n");
    else
      list_users(c);
    return;
  }
  if (pl >= 4 && !memcmp(path, "/v1/", 4)) {
    http_error(c, 404, "not_found", "no such endpoint");
    return;
  }
  serve_static(c, r);
}
