/* SPDX-License-Identifier: MIT */
/*
 * Webhook endpoint specs (webhook.h): the --webhook option's text parsed
 * and checked (URL scheme, secret or secret file, event filter, name).
 * Pure: no loop, no network; config.c checks specs with it at startup.
 */
#include "server/webhook.h"
#include "server/ws.h"

#include "presence.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define WH_SECRET_MAX 4096
/* The shortest secret accepted, in bytes: what presenced asks of the API key
 * and the JWT secret (CONFIG_SECRET_MIN), for the same reason. A receiver's
 * captured delivery holds a timestamp, a body and their HMAC-SHA256: a short
 * key is then found offline, and with it any delivery can be forged. */
#define WH_SECRET_MIN 32

static char *dupn(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

void wh_spec_free(wh_spec_t *spec) {
  if (spec->secret) OPENSSL_cleanse(spec->secret, spec->secret_len);
  free(spec->url);
  free(spec->secret);
  free(spec->secret_file);
  free(spec->name);
  free(spec->channel_prefix);
  free(spec->ca);
  memset(spec, 0, sizeof *spec);
}

int event_types_parse(const char *v, size_t n, char sep, uint64_t *out) {
  uint64_t mask = 0;
  size_t i = 0;
  while (i <= n) {
    size_t j = i;
    while (j < n && v[j] != sep)
      j++;
    size_t l = j - i;
    const char *w = v + i;
    int hit = 0;
    for (int t = 0; t < PRESENCE_EV_COUNT_; t++) {
      const char *name = presence_event_type_name((presence_event_type_t)t);
      size_t nl = strlen(name);
      if ((l == 1 && w[0] == '*') || (l == nl && !memcmp(name, w, l)) ||
          (l >= 2 && w[l - 1] == '*' && w[l - 2] == '.' && nl > l - 1 &&
           !memcmp(name, w, l - 1))) {
        mask |= UINT64_C(1) << t;
        hit = 1;
      }
    }
    if (!hit) return -1;
    i = j + 1;
  }
  *out = mask;
  return 0;
}

/* events=a|b|c (event_types_parse); a type list that names nothing is an
 * error. */
static int parse_events(const char *v, size_t n, uint32_t *out) {
  uint64_t mask = 0;
  if (event_types_parse(v, n, '|', &mask) != 0 || !mask) return -1;
  *out = (uint32_t)mask; /* PRESENCE_EV_COUNT_ types fit (webhook.h) */
  return 0;
}

/* The URL as a metrics label and in log lines: no credentials, no query
 * (either may hold a secret). The credentials end at the last '@' before
 * the query, not only within the authority: a password with an unescaped
 * '/' ("https://u:pa/ss@h/x") ends the authority early, and must not show.
 * (A path holding '@' loses what comes before it: give such an endpoint a
 * name=.) */
static char *default_name(const char *url) {
  const char *host = strstr(url, "://");
  host = host ? host + 3 : url;
  size_t path = strcspn(host, "?#");
  const char *at = NULL;
  for (const char *p = host; p < host + path; p++)
    if (*p == '@') at = p;
  size_t scheme = (size_t)(host - url);
  const char *h = at ? at + 1 : host;
  size_t hl = (size_t)(host + path - h);
  char *d = malloc(scheme + hl + 1);
  if (!d) return NULL;
  memcpy(d, url, scheme);
  memcpy(d + scheme, h, hl);
  d[scheme + hl] = '\0';
  return d;
}

/* The URL as libcurl reads it when it sends: a host, a port in range. One
 * without (http://, http://h:99999/x, http://:80/x) passed the start and
 * --check-config, then failed every delivery ("URL using bad/illegal
 * format") and was retried for good. Parsing only: no lookup, no network.
 * The message names the problem, never the URL (it may hold a password). */
static int url_check(const char *url, char *err, size_t errcap) {
  CURLU *h = curl_url();
  char *host = NULL;
  if (!h) {
    snprintf(err, errcap, "out of memory");
    return -1;
  }
  CURLUcode rc = curl_url_set(h, CURLUPART_URL, url, 0);
  if (rc == CURLUE_OK) rc = curl_url_get(h, CURLUPART_HOST, &host, 0);
  int bad = rc != CURLUE_OK || !host || !host[0];
  if (bad)
    snprintf(err, errcap, "url: %s",
             rc == CURLUE_OK || rc == CURLUE_NO_HOST
                 ? "no host"
                 : curl_url_strerror(rc));
  curl_free(host);
  curl_url_cleanup(h);
  return bad ? -1 : 0;
}

static int read_secret_file(wh_spec_t *o, char *err, size_t errcap) {
  FILE *f = fopen(o->secret_file, "rb");
  if (!f) {
    snprintf(err, errcap, "cannot read secret-file %s: %s", o->secret_file,
             strerror(errno));
    return -1;
  }
  char *b = malloc(WH_SECRET_MAX + 1);
  size_t n = b ? fread(b, 1, WH_SECRET_MAX + 1, f) : 0;
  fclose(f);
  if (!b) {
    snprintf(err, errcap, "out of memory");
    return -1;
  }
  /* Files written by editors and `echo` end with a newline that is not
   * part of the secret. */
  if (n > 0 && b[n - 1] == '\n') n--;
  if (n > 0 && b[n - 1] == '\r') n--;
  if (n < WH_SECRET_MIN || n > WH_SECRET_MAX) {
    OPENSSL_cleanse(b, WH_SECRET_MAX + 1);
    free(b);
    if (n > WH_SECRET_MAX)
      snprintf(err, errcap, "secret-file %s: longer than 4096 bytes",
               o->secret_file);
    else if (n == 0)
      snprintf(err, errcap, "secret-file %s: empty", o->secret_file);
    else
      snprintf(err, errcap,
               "secret-file %s: too short (%zu bytes, at least %d needed); "
               "make one with: openssl rand -hex 32",
               o->secret_file, n, WH_SECRET_MIN);
    return -1;
  }
  b[n] = '\0';
  o->secret = b;
  o->secret_len = n;
  return 0;
}

/* ca=PATH, read at the start as a secret-file is: a missing or unreadable
 * file, or one with no PEM certificate, is a bad setting (exit 2) rather
 * than a receiver refused at every delivery, each retried until the log
 * moves past it. */
static int check_ca_file(const wh_spec_t *o, char *err, size_t errcap) {
  /* A regular file only: libcurl reads it again at every TLS connection,
   * which a FIFO (or a process substitution, <(...)) cannot give, and
   * opening a FIFO with no writer would hang the start here (O_NONBLOCK
   * for the look). */
  int fd = open(o->ca, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    snprintf(err, errcap, "cannot read ca %s: %s", o->ca, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    snprintf(err, errcap,
             "ca %s: not a regular file (libcurl reads it at every "
             "connection)",
             o->ca);
    return -1;
  }
  FILE *f = fdopen(fd, "r");
  if (!f) {
    snprintf(err, errcap, "cannot read ca %s: %s", o->ca, strerror(errno));
    close(fd);
    return -1;
  }
  X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
  int io = ferror(f);
  fclose(f);
  ERR_clear_error();
  if (!x) {
    snprintf(err, errcap,
             io ? "cannot read ca %s: read error"
                : "ca %s: no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
             o->ca);
    return -1;
  }
  X509_free(x);
  return 0;
}

int wh_spec_parse(const char *spec, int read_secret, wh_spec_t *out, char *err,
                  size_t errcap) {
  memset(out, 0, sizeof *out);
  out->events = (1u << PRESENCE_EV_COUNT_) - 1;
  const char *p = spec;
  int have_events = 0;
  /* The previous pair was secret=: a pair that does not parse may be the
   * rest of a secret holding ',', and is not echoed into the message (it
   * is logged, and the spec often comes from the environment). */
  int after_secret = 0;
  while (*p) {
    size_t n = strcspn(p, ",");
    const char *eq = memchr(p, '=', n);
    if (!eq) {
      /* Not echoed: a comma inside a secret= value lands here. */
      snprintf(err, errcap, "expected key=value pairs separated by ','");
      goto fail;
    }
    size_t kl = (size_t)(eq - p), vl = n - kl - 1;
    const char *v = eq + 1;
    char **slot = NULL;
    if (kl == 3 && !memcmp(p, "url", 3))
      slot = &out->url;
    else if (kl == 6 && !memcmp(p, "secret", 6))
      slot = &out->secret;
    else if (kl == 11 && !memcmp(p, "secret-file", 11))
      slot = &out->secret_file;
    else if (kl == 4 && !memcmp(p, "name", 4))
      slot = &out->name;
    else if (kl == 14 && !memcmp(p, "channel-prefix", 14))
      slot = &out->channel_prefix;
    else if (kl == 2 && !memcmp(p, "ca", 2))
      slot = &out->ca;
    else if (kl == 6 && !memcmp(p, "events", 6)) {
      if (after_secret && parse_events(v, vl, &out->events) != 0) {
        snprintf(err, errcap, "events: not event types (not shown: is a ',' "
                              "inside the secret? give such a secret in a "
                              "secret-file)");
        goto fail;
      }
      if (have_events || parse_events(v, vl, &out->events) != 0) {
        snprintf(err, errcap,
                 "events: expected event types joined by '|' (e.g. "
                 "user.online|user.offline, user.*, *), got '%.*s'",
                 (int)vl, v);
        goto fail;
      }
      have_events = 1;
    } else if (after_secret) {
      snprintf(err, errcap,
               "unknown key after secret= (not shown: is a ',' inside the "
               "secret? give such a secret in a secret-file)");
      goto fail;
    } else {
      snprintf(err, errcap,
               "unknown key '%.*s' (url, secret, secret-file, events, name, "
               "channel-prefix, ca)",
               (int)kl, p);
      goto fail;
    }
    after_secret = slot == &out->secret;
    if (slot) {
      if (*slot || vl == 0) {
        snprintf(err, errcap, "'%.*s' is %s", (int)kl, p,
                 vl ? "given twice" : "empty");
        goto fail;
      }
      for (size_t i = 0; i < vl; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) {
          snprintf(err, errcap, "'%.*s' holds a control character", (int)kl, p);
          goto fail;
        }
      if (!(*slot = dupn(v, vl))) {
        snprintf(err, errcap, "out of memory");
        goto fail;
      }
    }
    p += n;
    if (*p == ',') p++;
  }
  /* A scheme is case-insensitive (RFC 3986 3.1): HTTPS://h/x is https. */
  if (!out->url || (strncasecmp(out->url, "http://", 7) != 0 &&
                    strncasecmp(out->url, "https://", 8) != 0)) {
    snprintf(err, errcap, "url=http://... or url=https://... is required");
    goto fail;
  }
  if (strchr(out->url, ' ')) {
    snprintf(err, errcap, "url holds a space (percent-encode it)");
    goto fail;
  }
  if (url_check(out->url, err, errcap)) goto fail;
  if (!out->secret == !out->secret_file) {
    snprintf(err, errcap, "exactly one of secret= and secret-file= is needed");
    goto fail;
  }
  if (out->secret) {
    out->secret_len = strlen(out->secret);
    /* The length only, never the value (the message is logged). */
    if (out->secret_len < WH_SECRET_MIN) {
      snprintf(err, errcap,
               "secret: too short (%zu bytes, at least %d needed); make one "
               "with: openssl rand -hex 32 (and prefer secret-file=)",
               out->secret_len, WH_SECRET_MIN);
      goto fail;
    }
  }
  if (!out->name && !(out->name = default_name(out->url))) {
    snprintf(err, errcap, "out of memory");
    goto fail;
  }
  /* The name is a label of /metrics, whose text format is UTF-8: one byte
   * that is not (a name written in Latin-1) made scrapers refuse the whole
   * scrape, every other figure with it. */
  {
    uint32_t u8 = 0;
    if (utf8_feed(&u8, (const uint8_t *)out->name, strlen(out->name)) != 0 ||
        !utf8_complete(u8)) {
      snprintf(err, errcap,
               "name: not UTF-8 (it labels the endpoint's metrics; without "
               "name= it is the url's host and path)");
      goto fail;
    }
  }
  /* A CA verifies a TLS peer: beside an http:// url it would do nothing,
   * and the receiver the operator meant to pin would be reached in clear. */
  if (out->ca && strncasecmp(out->url, "https://", 8) != 0) {
    snprintf(err, errcap, "ca= is for an https:// url (this one is http://)");
    goto fail;
  }
  if (read_secret && out->secret_file && read_secret_file(out, err, errcap))
    goto fail;
  if (read_secret && out->ca && check_ca_file(out, err, errcap)) goto fail;
  return 0;
fail:
  wh_spec_free(out);
  return -1;
}

int wh_spec_check(const char *spec, char *err, size_t errcap) {
  wh_spec_t s;
  if (wh_spec_parse(spec, 0, &s, err, errcap) != 0) return -1;
  wh_spec_free(&s);
  return 0;
}
