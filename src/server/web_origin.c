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
 * needs to be listed in --allowed-origins ("*" allows every origin; a
 * host written "*.example.com" every subdomain of example.com).
 */
#include "server/server.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
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

/* An origin "scheme://host[:port]" (an entry of --allowed-origins, or a
 * request's Origin), cut in its parts: the host may be [v6], or start
 * with "*." (any subdomain: an entry's wildcard). */
typedef struct origin_parts {
  const char *scheme, *host, *port; /* port NULL: none */
  size_t sl, hl, pl;
} origin_parts_t;

static int origin_parse(const char *o, size_t len, origin_parts_t *op) {
  const char *a;
  size_t al;
  if (origin_authority(o, len, &a, &al) != 0) return -1;
  op->scheme = o;
  op->sl = (size_t)(a - 3 - o);
  op->host = a;
  op->port = NULL;
  op->pl = 0;
  const char *colon = NULL;
  if (a[0] == '[') {
    const char *rb = memchr(a, ']', al);
    if (!rb) return -1;
    if (rb + 1 < a + al) {
      if (rb[1] != ':') return -1;
      colon = rb + 1;
    }
  } else {
    for (const char *q = a + al; q > a; q--)
      if (q[-1] == ':') {
        colon = q - 1;
        break;
      }
  }
  op->hl = colon ? (size_t)(colon - a) : al;
  if (colon) {
    op->port = colon + 1;
    op->pl = (size_t)(a + al - op->port);
  }
  return op->sl && op->hl ? 0 : -1;
}

/* An entry whose host is "*.domain" names every subdomain of domain (at
 * any depth) with the entry's scheme and port, not domain itself: the
 * origin's host ends in ".domain" after at least one character. */
static int wildcard_match(const char *e, size_t el, const char *o,
                          size_t ol) {
  origin_parts_t pe, po;
  /* Most entries have no '*': nothing to parse for them. */
  if (!memchr(e, '*', el) || origin_parse(e, el, &pe) || pe.hl < 3 ||
      memcmp(pe.host, "*.", 2) ||
      origin_parse(o, ol, &po))
    return 0;
  size_t dl = pe.hl - 1; /* ".domain" */
  /* A browser's Origin has a host name of letters, digits, '-' and '.'
   * only; anything else ("evil#.domain") is no subdomain. */
  static const char name_chars[] = "abcdefghijklmnopqrstuvwxyz"
                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.";
  for (size_t i = 0; i < po.hl; i++)
    if (!po.host[i] || !strchr(name_chars, po.host[i])) return 0;
  return same_ci(pe.scheme, pe.sl, po.scheme, po.sl) &&
         same_ci(pe.port ? pe.port : "", pe.pl, po.port ? po.port : "",
                 po.pl) &&
         po.hl > dl && po.host[0] != '.' &&
         !strncasecmp(po.host + po.hl - dl, pe.host + 1, dl);
}

/* The next entry of a comma-separated list at *pp: *entry and its length
 * without spaces around it or a trailing '/'; false at the list's end. */
static bool next_entry(const char **pp, const char **entry, size_t *n) {
  const char *p = *pp;
  while (*p == ' ' || *p == ',')
    p++;
  if (!*p) return false;
  const char *e = p;
  while (*e && *e != ',')
    e++;
  const char *t = e;
  while (t > p && (t[-1] == ' ' || t[-1] == '/'))
    t--;
  *entry = p;
  *n = (size_t)(t - p);
  *pp = e;
  return true;
}

/* Whether the comma-separated list names origin (case-insensitive, an
 * entry's trailing '/' ignored; "*." before a host for its subdomains). */
static int listed(const char *list, const char *origin, size_t len) {
  const char *p = list, *ent;
  size_t el;
  while (next_entry(&p, &ent, &el))
    if ((el == 1 && *ent == '*') || same_ci(ent, el, origin, len) ||
        wildcard_match(ent, el, origin, len))
      return 1;
  return 0;
}

int config_origins_check(const char *list, char *err, size_t cap) {
  const char *list_p = list, *p;
  size_t el;
  while (next_entry(&list_p, &p, &el)) {
    int n = (int)el;
    origin_parts_t op;
    /* "null": the opaque origin of sandboxed frames and file:// pages,
     * allowed only when listed so (docs/protocol.md 1.1). */
    if (n == 0 || (n == 1 && *p == '*') || same_ci(p, el, "null", 4))
      continue;
    const char *why = NULL;
    if (origin_parse(p, (size_t)n, &op) != 0 ||
        memchr(p, '?', (size_t)n) || memchr(p, '#', (size_t)n) ||
        memchr(op.host, '@', op.hl))
      why = "is not scheme://host[:port] (no path: browsers send none)";
    else if (!same_ci(op.scheme, op.sl, "http", 4) &&
             !same_ci(op.scheme, op.sl, "https", 5))
      why = "has a scheme other than http or https";
    else if (memchr(op.host + 1, '*', op.hl - 1) ||
             (op.host[0] == '*' &&
              (op.hl < 4 || op.host[1] != '.' ||
               !memchr(op.host + 2, '.', op.hl - 2))))
      why = "has a '*' other than a leading \"*.\" before a domain of two "
            "labels or more (https://*.example.com)";
    else if (op.port &&
             (op.pl == 0 || op.pl > 5 ||
              strspn(op.port, "0123456789") < op.pl ||
              atoi(op.port) < 1 || atoi(op.port) > 65535))
      why = "has a port that is not a number from 1 to 65535";
    else if (op.port &&
             ((op.pl == 3 && !memcmp(op.port, "443", 3) &&
               same_ci(op.scheme, op.sl, "https", 5)) ||
              (op.pl == 2 && !memcmp(op.port, "80", 2) &&
               same_ci(op.scheme, op.sl, "http", 4))))
      why = "names its scheme's default port, which browsers leave out of "
            "Origin: write it without";
    if (why) {
      snprintf(err, cap, "'%.*s' %s", n > 100 ? 100 : n, p, why);
      return -1;
    }
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
