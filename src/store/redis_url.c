/* SPDX-License-Identifier: MIT */
/*
 * Redis URLs: parsing into what the connection layer needs, and redaction
 * for every line that shows one. The password never reaches a log line or
 * an error message: errors here name the part that is wrong, not its text.
 */
#include "store/redis_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_n(const presence_allocator_t *a, const char *s, size_t n) {
  char *d = presence__malloc(a, n + 1);
  if (!d) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* %XX-decoded copy of s[0..n); NULL on a bad escape (*bad) or ENOMEM. */
static char *decode(const presence_allocator_t *a, const char *s, size_t n,
                    bool *bad) {
  char *d = presence__malloc(a, n + 1), *o = d;
  if (!d) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '%') {
      *o++ = s[i];
      continue;
    }
    if (i + 2 >= n) {
      presence__free(a, d);
      *bad = true;
      return NULL;
    }
    int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
    if (hi < 0 || lo < 0) {
      presence__free(a, d);
      *bad = true;
      return NULL;
    }
    *o++ = (char)(hi * 16 + lo);
    i += 2;
  }
  *o = '\0';
  return d;
}

static bool digits_only(const char *s, size_t n) {
  if (!n) return false;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

static int bad(char *err, size_t errlen, const char *why) {
  snprintf(err, errlen, "%s", why);
  return PRESENCE_EINVAL;
}

static int parse_db(const char *s, size_t n, int *db) {
  if (n > 5 || !digits_only(s, n)) return -1;
  *db = atoi(s);
  return 0;
}

/* The authority starting at h ends at *end (before a '/', '?' or '#'); its
 * last '@' (a password may hold one unescaped), or NULL. */
static const char *authority(const char *h, const char **end) {
  *end = h + strcspn(h, "/?#");
  const char *at = NULL;
  for (const char *p = h; p < *end; p++)
    if (*p == '@') at = p;
  return at;
}

/* user:password or password, h..at: into out (a password alone, as with
 * redis-cli, is marked: given with a password apart it is the user, see
 * redis.c parse_url). -1 on a bad escape or ENOMEM (*bad tells which). */
static int userinfo(const presence_allocator_t *a, const char *h,
                    const char *at, presence__redis_url_t *out, bool *bad) {
  const char *colon = memchr(h, ':', (size_t)(at - h));
  if (colon) {
    if (colon > h) {
      out->user = decode(a, h, (size_t)(colon - h), bad);
      if (!out->user) return -1;
    }
    out->password = decode(a, colon + 1, (size_t)(at - colon - 1), bad);
  } else {
    out->password = decode(a, h, (size_t)(at - h), bad);
    out->password_alone = true;
  }
  return out->password ? 0 : -1;
}

/* host[:port] or [v6][:port] in s[0..n): a sentinel's address. */
static int node_parse(const presence_allocator_t *a, const char *s, size_t n,
                      presence__redis_node_t *nd, char *err, size_t errlen) {
  const char *end = s + n, *after;
  size_t hl;
  nd->port = 26379;
  if (n && *s == '[') {
    const char *close = memchr(s, ']', n);
    if (!close) return bad(err, errlen, "an IPv6 sentinel without its ']'");
    s++;
    hl = (size_t)(close - s);
    after = close + 1;
  } else {
    hl = strcspn(s, ":");
    if (hl > n) hl = n;
    after = s + hl;
  }
  if (!hl) return bad(err, errlen, "an empty sentinel address");
  if (after < end) {
    size_t pl = (size_t)(end - after - 1);
    long port = *after == ':' && digits_only(after + 1, pl) && pl <= 5
                    ? atol(after + 1)
                    : 0;
    if (port < 1 || port > 65535)
      return bad(err, errlen, "a sentinel's port must be 1-65535");
    nd->port = (int)port;
  }
  nd->host = dup_n(a, s, hl);
  return nd->host ? 0 : PRESENCE_ENOMEM;
}

/* redis+sentinel://[user[:password]@]h1[:p1][,h2[:p2]...]/master[/db]: the
 * form of redis-py's and Sidekiq's sentinel URLs; h is past the scheme. */
static int parse_sentinel(const presence_allocator_t *a, const char *h,
                          presence__redis_url_t *out, char *err,
                          size_t errlen) {
  const char *auth_end;
  const char *at = authority(h, &auth_end);
  bool bad_escape = false;
  if (at) {
    if (userinfo(a, h, at, out, &bad_escape))
      return bad_escape ? bad(err, errlen,
                              "a bad %-escape in the user or password")
                        : PRESENCE_ENOMEM;
    h = at + 1;
  }
  size_t n = 1;
  for (const char *p = h; p < auth_end; p++)
    n += *p == ',';
  if (n > PRESENCE__SENTINELS_MAX)
    return bad(err, errlen, "more than 16 sentinels");
  out->sentinels = presence__malloc(a, n * sizeof *out->sentinels);
  if (!out->sentinels) return PRESENCE_ENOMEM;
  memset(out->sentinels, 0, n * sizeof *out->sentinels);
  while (out->n_sentinels < n) {
    size_t l = strcspn(h, ",");
    if (h + l > auth_end) l = (size_t)(auth_end - h);
    int rc = node_parse(a, h, l, &out->sentinels[out->n_sentinels], err,
                        errlen);
    if (rc) return rc;
    out->n_sentinels++;
    h += l + 1;
  }
  if (*auth_end != '/' || !auth_end[1] || strchr("/?#", auth_end[1]))
    return bad(err, errlen,
               "a sentinel URL names its master: "
               "redis+sentinel://host:port,.../MASTER[/db]");
  const char *m = auth_end + 1;
  size_t ml = strcspn(m, "/?#");
  if (!(out->master = decode(a, m, ml, &bad_escape)))
    return bad_escape ? bad(err, errlen, "a bad %-escape in the master name")
                      : PRESENCE_ENOMEM;
  const char *rest = m + ml;
  if (*rest == '/') {
    size_t dl = strcspn(rest + 1, "?#");
    if (dl && parse_db(rest + 1, dl, &out->db))
      return bad(err, errlen, "the database must be a number (/MASTER/N)");
    rest += 1 + dl;
  }
  if (*rest) return bad(err, errlen, "a Redis URL takes no query or fragment");
  return 0;
}

int presence__redis_url_parse(const presence_allocator_t *a, const char *url,
                              presence__redis_url_t *out, char *err,
                              size_t errlen) {
  memset(out, 0, sizeof *out);
  out->port = 6379;
  if (!url) url = "redis://127.0.0.1";
  bool tls_s = !strncmp(url, "rediss+sentinel://", 18);
  if (tls_s || !strncmp(url, "redis+sentinel://", 17)) {
    out->tls = tls_s;
    out->port = 0;
    int rc = parse_sentinel(a, url + (tls_s ? 18 : 17), out, err, errlen);
    if (rc) presence__redis_url_free(a, out);
    return rc;
  }
  if (!strncmp(url, "unix:", 5)) {
    const char *p = url + 5;
    while (p[0] == '/' && p[1] == '/')
      p++;
    size_t pl = strcspn(p, "?");
    if (!pl || p[0] != '/')
      return bad(err, errlen, "a unix: URL needs an absolute socket path");
    const char *q = p + pl;
    if (*q) {
      if (strncmp(q, "?db=", 4) || parse_db(q + 4, strlen(q + 4), &out->db))
        return bad(err, errlen, "a unix: URL takes only ?db=N");
    }
    out->path = dup_n(a, p, pl);
    return out->path ? 0 : PRESENCE_ENOMEM;
  }
  const char *h;
  if (!strncmp(url, "redis://", 8)) {
    h = url + 8;
  } else if (!strncmp(url, "rediss://", 9)) {
    h = url + 9;
    out->tls = true;
  } else {
    return bad(err, errlen,
               "not a Redis URL (redis://, rediss://, unix:/path or "
               "redis+sentinel://)");
  }
  const char *auth_end;
  const char *at = authority(h, &auth_end);
  int rc = PRESENCE_ENOMEM;
  bool bad_escape = false;
  if (at) {
    if (userinfo(a, h, at, out, &bad_escape)) goto fail;
    h = at + 1;
  }
  size_t host_len;
  const char *after;
  if (*h == '[') {
    const char *close = memchr(h, ']', (size_t)(auth_end - h));
    if (!close) {
      rc = bad(err, errlen, "an IPv6 host without its ']'");
      goto fail;
    }
    out->host = dup_n(a, h + 1, (size_t)(close - h - 1));
    host_len = (size_t)(close - h - 1);
    after = close + 1;
  } else {
    host_len = strcspn(h, ":/?#");
    if (h + host_len > auth_end) host_len = (size_t)(auth_end - h);
    out->host = dup_n(a, h, host_len);
    after = h + host_len;
  }
  if (!out->host) goto fail;
  if (!host_len) {
    rc = bad(err, errlen, "no host in the Redis URL");
    goto fail;
  }
  if (*after == ':') {
    size_t pl = (size_t)(auth_end - after - 1);
    long port = digits_only(after + 1, pl) && pl <= 5 ? atol(after + 1) : 0;
    if (port < 1 || port > 65535) {
      rc = bad(err, errlen, "the port must be 1-65535");
      goto fail;
    }
    out->port = (int)port;
  } else if (after != auth_end) {
    rc = bad(err, errlen, "unexpected characters after the host");
    goto fail;
  }
  if (*auth_end == '/') {
    const char *d = auth_end + 1;
    size_t dl = strcspn(d, "?#");
    if (dl && parse_db(d, dl, &out->db)) {
      rc = bad(err, errlen, "the database must be a number (/N)");
      goto fail;
    }
    auth_end = d + dl;
  }
  if (*auth_end) {
    rc = bad(err, errlen, "a Redis URL takes no query or fragment");
    goto fail;
  }
  return 0;
fail:
  if (bad_escape) rc = bad(err, errlen, "a bad %-escape in the user or password");
  presence__redis_url_free(a, out);
  return rc;
}

static void free_secret(const presence_allocator_t *a, char *s) {
  if (!s) return;
  /* A password should not linger in freed memory. */
  volatile char *v = s;
  while (*v)
    *v++ = '\0';
  presence__free(a, s);
}

void presence__redis_url_free(const presence_allocator_t *a,
                              presence__redis_url_t *u) {
  presence__free(a, u->host);
  presence__free(a, u->path);
  free_secret(a, u->user);
  free_secret(a, u->password);
  for (size_t i = 0; i < u->n_sentinels; i++)
    presence__free(a, u->sentinels[i].host);
  presence__free(a, u->sentinels);
  presence__free(a, u->master);
  free_secret(a, u->sentinel_user);
  free_secret(a, u->sentinel_password);
  memset(u, 0, sizeof *u);
}

void presence_redis_url_redact(const char *url, char *out, size_t n) {
  if (!n) return;
  if (!url) url = "";
  /* Any scheme, the store's or a mistyped one (redis-sentinel://, as other
   * clients spell it): the text shown is that of an error too, for a URL
   * that did not parse. Up to the last '@' of the whole text, not of the
   * authority: a password with an unescaped '/' ("redis://:a/b@h") ends
   * the authority early, and its tail must not be shown either. Without
   * "://", whatever follows the first ':' up to the last '@'. */
  const char *sep = strstr(url, "://");
  const char *h = sep ? sep + 3 : strchr(url, ':');
  if (h && !sep) h++;
  const char *at = h ? strrchr(h, '@') : NULL;
  if (!at) {
    snprintf(out, n, "%s", url);
    return;
  }
  /* Keep the scheme and the user; the password becomes ***. */
  const char *colon = sep ? memchr(h, ':', (size_t)(at - h)) : NULL;
  size_t keep = colon ? (size_t)(colon - url) : (size_t)(h - url);
  snprintf(out, n, "%.*s%s***%s", (int)keep, url, colon ? ":" : "", at);
}

int presence_redis_url_check(const char *url, char *why, size_t n) {
  presence__redis_url_t u;
  char err[96] = "";
  if (why && n) why[0] = '\0';
  if (!url) return 0;
  int rc = presence__redis_url_parse(presence__default_allocator(), url, &u,
                                     err, sizeof err);
  if (rc) {
    if (why && n)
      snprintf(why, n, "%s", rc == PRESENCE_EINVAL ? err : "out of memory");
    return 0;
  }
  presence__redis_url_free(presence__default_allocator(), &u);
  return 1;
}

int presence_redis_url_valid(const char *url) {
  return presence_redis_url_check(url, NULL, 0);
}
