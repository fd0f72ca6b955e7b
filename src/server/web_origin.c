/* SPDX-License-Identifier: MIT */
/*
 * The Origin and Host of browser requests (docs/security.md, "Origins";
 * not to be confused with origin.c, the application servers that report
 * sessions).
 *
 * A WebSocket is not covered by the same-origin policy: any page a user
 * visits may open one to presenced, and the browser adds the page's Origin.
 * Checking it is the server's job. The rule: no Origin (not a browser) is
 * allowed; the same origin as the request's Host is allowed; any other
 * needs to be listed in --allowed-origins ("*" allows every origin).
 */
#include "server/server.h"

#include <string.h>
#include <strings.h>

/* The host[:port] of an origin "scheme://host[:port]" (no path). */
static int origin_authority(const char *o, size_t len, const char **a,
                            size_t *al) {
  const char *sep = len >= 3 ? memchr(o, ':', len) : NULL;
  if (!sep || (size_t)(o + len - sep) < 3 || sep[1] != '/' || sep[2] != '/')
    return -1;
  *a = sep + 3;
  *al = (size_t)(o + len - *a);
  if (*al == 0 || memchr(*a, '/', *al)) return -1;
  return 0;
}

static int same_ci(const char *a, size_t al, const char *b, size_t bl) {
  return al == bl && strncasecmp(a, b, al) == 0;
}

/* Whether the comma-separated list names origin exactly (case-insensitive,
 * an entry's trailing '/' ignored). */
static int listed(const char *list, const char *origin, size_t len) {
  const char *p = list;
  while (*p) {
    while (*p == ' ' || *p == ',')
      p++;
    const char *e = p;
    while (*e && *e != ',')
      e++;
    const char *t = e;
    while (t > p && (t[-1] == ' ' || t[-1] == '/'))
      t--;
    if (t - p == 1 && *p == '*') return 1;
    if (same_ci(p, (size_t)(t - p), origin, len)) return 1;
    p = e;
  }
  return 0;
}

int srv_origin_allowed(const srv_t *s, const http_req_t *r, const char *origin,
                       size_t len) {
  if (s->cfg.allowed_origins && listed(s->cfg.allowed_origins, origin, len))
    return 1;
  const char *auth;
  size_t al, hl;
  const char *host = http_header(r, "Host", &hl);
  return host && origin_authority(origin, len, &auth, &al) == 0 &&
         same_ci(auth, al, host, hl);
}

int srv_host_is_loopback(const char *host, size_t len) {
  char h[64];
  const char *end = host + len;
  if (len && host[0] == '[') { /* [v6]:port */
    const char *close = memchr(host, ']', len);
    if (!close) return 0;
    host++;
    end = close;
  } else {
    const char *colon = memchr(host, ':', len);
    if (colon) end = colon;
  }
  size_t n = (size_t)(end - host);
  if (n == 0 || n >= sizeof h) return 0;
  memcpy(h, host, n);
  h[n] = '\0';
  return config_host_is_loopback(h);
}

int srv_origin_is_loopback(const char *origin, size_t len) {
  const char *a;
  size_t al;
  return origin_authority(origin, len, &a, &al) == 0 &&
         srv_host_is_loopback(a, al);
}
