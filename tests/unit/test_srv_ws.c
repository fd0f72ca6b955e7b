/* SPDX-License-Identifier: MIT */
/*
 * Tests of the WebSocket codec (src/server/ws.c).
 *
 * Protocol cases live as data in tests/data/ws, one .case file each (format in
 * the README there). Each case is fed to both parse functions, whole, in
 * fixed-size pieces down to one byte at a time and in random pieces; every way
 * must give the same events at the same input offsets. The fixed tests below
 * cover what is easier to say in code: the handshake, the encoders, UTF-8
 * over every code point, and masking at every offset.
 *
 * The case directory is argv[1], else $PRESENCE_SOURCE_DIR/tests/data/ws,
 * else found from this file's path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/ws.h"

/* ---- Small helpers -------------------------------------------------------
 */

typedef struct {
  uint8_t *p;
  size_t len, cap;
} bytes_t;

static void bput(bytes_t *b, const void *s, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n)
      cap *= 2;
    b->p = realloc(b->p, cap);
    assert_non_null(b->p);
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void bbyte(bytes_t *b, uint8_t c) {
  bput(b, &c, 1);
}

/* Deterministic generator, so a failure reproduces. */
static uint32_t rnd(uint64_t *s) {
  *s = *s * 6364136223846793005u + 1442695040888963407u;
  return (uint32_t)(*s >> 33);
}

/* A masked client frame, as a browser would send it. */
static void mkframe(bytes_t *out, int fin, int op, const uint8_t key[4],
                    const uint8_t *pl, size_t n, int form) {
  bbyte(out, (uint8_t)((fin ? 0x80 : 0) | op));
  if (form == 0) form = n < 126 ? 7 : n <= 0xFFFF ? 16 : 64;
  if (form == 7) {
    bbyte(out, (uint8_t)(0x80 | n));
  } else if (form == 16) {
    bbyte(out, 0x80 | 126);
    bbyte(out, (uint8_t)(n >> 8));
    bbyte(out, (uint8_t)n);
  } else {
    bbyte(out, 0x80 | 127);
    for (int i = 0; i < 8; i++)
      bbyte(out, (uint8_t)((uint64_t)n >> (56 - 8 * i)));
  }
  bput(out, key, 4);
  for (size_t i = 0; i < n; i++)
    bbyte(out, pl[i] ^ key[i % 4]);
}

static const char *kind_name(int k) {
  static const char *names[] = {"none", "message", "ping",
                                "pong", "close",   "error"};
  return k >= 0 && k <= WS_EV_ERROR ? names[k] : "?";
}

/* ---- Case files ----------------------------------------------------------
 */

#define MAX_EVENTS 32

typedef struct {
  int kind, opcode;
  unsigned code;
  uint8_t *data;
  size_t len;
  long at; /* input bytes consumed when the event came; -1: not checked */
} tev_t;

typedef struct {
  char name[128];
  char error[512]; /* set if the file could not be read */
  ws_limits_t lim;
  bytes_t in;
  tev_t ev[MAX_EVENTS];
  int nev;
} tcase_t;

static tcase_t *g_cases;
static size_t g_ncases;

static void skip_ws(const char **s) {
  while (**s && isspace((unsigned char)**s))
    (*s)++;
}

static int word(const char **s, char *out, size_t n) {
  size_t i = 0;
  skip_ws(s);
  while (**s && !isspace((unsigned char)**s) && i + 1 < n)
    out[i++] = *(*s)++;
  out[i] = '\0';
  return i ? 0 : -1;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Hex digit pairs, spaces allowed between pairs, up to a stop character. */
static int hexbytes(const char **s, bytes_t *out, int spaces) {
  for (;;) {
    if (spaces) skip_ws(s);
    int hi = hexval((unsigned char)**s);
    if (hi < 0) return 0;
    int lo = hexval((unsigned char)(*s)[1]);
    if (lo < 0) return -1;
    bbyte(out, (uint8_t)(hi << 4 | lo));
    *s += 2;
  }
}

/* PAYLOAD := ITEM ('+' ITEM)*; ITEM := - | "text" | hex:HH.. | rep:N:HH */
static int payload(const char **s, bytes_t *out) {
  skip_ws(s);
  for (;;) {
    if (**s == '-') {
      (*s)++;
    } else if (**s == '"') {
      const char *e = strchr(*s + 1, '"');
      if (!e) return -1;
      bput(out, *s + 1, (size_t)(e - *s - 1));
      *s = e + 1;
    } else if (!strncmp(*s, "hex:", 4)) {
      *s += 4;
      if (hexbytes(s, out, 0) < 0) return -1;
    } else if (!strncmp(*s, "rep:", 4)) {
      char *e;
      unsigned long n = strtoul(*s + 4, &e, 10);
      if (*e != ':' || hexval((unsigned char)e[1]) < 0 ||
          hexval((unsigned char)e[2]) < 0)
        return -1;
      uint8_t c = (uint8_t)(hexval((unsigned char)e[1]) << 4 |
                            hexval((unsigned char)e[2]));
      for (unsigned long i = 0; i < n; i++)
        bbyte(out, c);
      *s = e + 3;
    } else {
      return -1;
    }
    if (**s != '+') return 0;
    (*s)++;
  }
}

static int opcode_of(const char *w) {
  static const struct {
    const char *name;
    int op;
  } ops[] = {{"cont", WS_OP_CONT},     {"text", WS_OP_TEXT},
             {"binary", WS_OP_BINARY}, {"close", WS_OP_CLOSE},
             {"ping", WS_OP_PING},     {"pong", WS_OP_PONG}};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    if (!strcmp(w, ops[i].name)) return ops[i].op;
  if (!strncmp(w, "0x", 2) && hexval((unsigned char)w[2]) >= 0 && !w[3])
    return hexval((unsigned char)w[2]);
  return -1;
}

static int kind_of(const char *w) {
  for (int k = WS_EV_MESSAGE; k <= WS_EV_ERROR; k++)
    if (!strcmp(w, kind_name(k))) return k;
  return -1;
}

static int parse_frame(const char *s, tcase_t *c) {
  char w[32];
  bytes_t key = {0}, pl = {0};
  int fin, op, form = 0, rc = -1;
  if (word(&s, w, sizeof w) < 0) goto out;
  if (!strcmp(w, "fin"))
    fin = 1;
  else if (!strcmp(w, "more"))
    fin = 0;
  else
    goto out;
  if (word(&s, w, sizeof w) < 0 || (op = opcode_of(w)) < 0) goto out;
  skip_ws(&s);
  if (hexbytes(&s, &key, 0) < 0 || key.len != 4) goto out;
  if (payload(&s, &pl) < 0) goto out;
  if (word(&s, w, sizeof w) == 0) {
    if (!strcmp(w, "len16"))
      form = 16;
    else if (!strcmp(w, "len64"))
      form = 64;
    else
      goto out;
  }
  mkframe(&c->in, fin, op, key.p, pl.p, pl.len, form);
  rc = 0;
out:
  free(key.p);
  free(pl.p);
  return rc;
}

static int parse_expect(const char *s, tcase_t *c) {
  char w[32];
  bytes_t pl = {0};
  tev_t *e;
  if (c->nev == MAX_EVENTS) return -1;
  e = &c->ev[c->nev];
  memset(e, 0, sizeof *e);
  e->at = -1;
  if (word(&s, w, sizeof w) < 0 || (e->kind = kind_of(w)) < 0) return -1;
  if (e->kind == WS_EV_MESSAGE) {
    if (word(&s, w, sizeof w) < 0) return -1;
    e->opcode = !strcmp(w, "text")     ? WS_OP_TEXT
                : !strcmp(w, "binary") ? WS_OP_BINARY
                                       : -1;
    if (e->opcode < 0) return -1;
  }
  if (e->kind == WS_EV_CLOSE || e->kind == WS_EV_ERROR) {
    char *end;
    skip_ws(&s);
    e->code = (unsigned)strtoul(s, &end, 10);
    if (end == s) return -1;
    s = end;
  }
  if (e->kind != WS_EV_ERROR && payload(&s, &pl) < 0) {
    free(pl.p);
    return -1;
  }
  e->data = pl.p;
  e->len = pl.len;
  c->nev++;
  if (word(&s, w, sizeof w) == 0) {
    char *end;
    if (strcmp(w, "at")) return -1;
    skip_ws(&s);
    e->at = strtol(s, &end, 10);
    if (end == s) return -1;
    s = end;
  }
  skip_ws(&s);
  return *s ? -1 : 0;
}

static void load_case(const char *dir, const char *name, tcase_t *c) {
  char path[1024], line[8192];
  int lineno = 0;
  FILE *f;
  snprintf(c->name, sizeof c->name, "%s", name);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (!(f = fopen(path, "r"))) {
    snprintf(c->error, sizeof c->error, "cannot open %.300s", path);
    return;
  }
  while (fgets(line, sizeof line, f)) {
    const char *s = line;
    char w[32];
    int rc = 0;
    lineno++;
    if (word(&s, w, sizeof w) < 0 || w[0] == '#') continue;
    if (!strcmp(w, "limits")) {
      char *e;
      c->lim.max_frame = strtoull(s, &e, 10);
      c->lim.max_message = strtoull(e, &e, 10);
      s = e;
      skip_ws(&s);
      rc = *s || !c->lim.max_frame || !c->lim.max_message ? -1 : 0;
    } else if (!strcmp(w, "raw")) {
      rc = hexbytes(&s, &c->in, 1);
      skip_ws(&s);
      if (*s) rc = -1;
    } else if (!strcmp(w, "frame")) {
      rc = parse_frame(s, c);
    } else if (!strcmp(w, "expect")) {
      rc = parse_expect(s, c);
    } else {
      rc = -1;
    }
    if (rc < 0) {
      snprintf(c->error, sizeof c->error, "%.300s:%d: cannot parse: %.150s",
               path, lineno, line);
      break;
    }
  }
  fclose(f);
  if (!c->error[0] && (!c->nev || !c->in.len))
    snprintf(c->error, sizeof c->error, "%.300s: no input or no expect", path);
}

static int cmpstr(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void load_cases(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  char **names = NULL;
  size_t n = 0;
  if (!d) {
    fprintf(stderr, "test_srv_ws: no case directory %s\n", dir);
    return;
  }
  while ((de = readdir(d))) {
    size_t l = strlen(de->d_name);
    if (l < 6 || strcmp(de->d_name + l - 5, ".case")) continue;
    names = realloc(names, (n + 1) * sizeof *names);
    names[n++] = strdup(de->d_name);
  }
  closedir(d);
  if (!n) return;
  qsort(names, n, sizeof *names, cmpstr);
  g_cases = calloc(n, sizeof *g_cases);
  for (size_t i = 0; i < n; i++) {
    load_case(dir, names[i], &g_cases[i]);
    free(names[i]);
  }
  free(names);
  g_ncases = n;
}

static void free_cases(void) {
  for (size_t i = 0; i < g_ncases; i++) {
    free(g_cases[i].in.p);
    for (int j = 0; j < g_cases[i].nev; j++)
      free(g_cases[i].ev[j].data);
  }
  free(g_cases);
}

/* ---- Running a case ------------------------------------------------------
 */

typedef struct {
  tev_t ev[MAX_EVENTS];
  int nev;
} run_t;

enum { WHOLE = 0, RANDOM = -1 };

static size_t call(ws_parser_t *p, int inplace, uint8_t *in, size_t n,
                   ws_event_t *ev) {
  return inplace ? ws_parse_inplace(p, in, n, ev) : ws_parse(p, in, n, ev);
}

/*
 * Feed c->in in pieces of `step` bytes (all at once, or random sizes). Each
 * piece sits in its own allocation, poisoned and freed once consumed, as a
 * connection's read buffer is reused: a parser keeping a pointer into
 * earlier input shows up here.
 */
static void run_case(const tcase_t *c, int inplace, int step, uint64_t seed,
                     run_t *r, const char *label) {
  size_t len = c->in.len, pos = 0, n;
  ws_parser_t *p = ws_parser_new(&c->lim);
  ws_event_t ev;
  uint8_t *cb;
  int stopped = 0;
  assert_non_null(p);
  r->nev = 0;
  while (pos < len && !stopped) {
    size_t chunk = step == WHOLE    ? len - pos
                   : step == RANDOM ? 1 + rnd(&seed) % 23
                                    : (size_t)step;
    size_t off = 0;
    if (chunk > len - pos) chunk = len - pos;
    cb = malloc(chunk);
    assert_non_null(cb);
    memcpy(cb, c->in.p + pos, chunk);
    for (;;) {
      n = call(p, inplace, cb + off, chunk - off, &ev);
      if (n > chunk - off)
        fail_msg("%s [%s]: consumed %zu of %zu", c->name, label, n,
                 chunk - off);
      off += n;
      if (ev.kind == WS_EV_NONE) {
        if (off != chunk)
          fail_msg("%s [%s]: no event but %zu bytes left", c->name, label,
                   chunk - off);
        break;
      }
      if (n == 0) fail_msg("%s [%s]: event without input", c->name, label);
      if (ev.data == NULL)
        fail_msg("%s [%s]: event with NULL data", c->name, label);
      if (r->nev == MAX_EVENTS)
        fail_msg("%s [%s]: too many events", c->name, label);
      tev_t *e = &r->ev[r->nev++];
      e->kind = ev.kind;
      e->opcode = ev.opcode;
      e->code = ev.close_code;
      e->len = ev.len;
      e->data = malloc(ev.len + 1);
      if (ev.len) memcpy(e->data, ev.data, ev.len);
      e->at = (long)(pos + off);
      if (ev.kind == WS_EV_ERROR && !ev.reason)
        fail_msg("%s [%s]: error without reason", c->name, label);
      if (ev.kind == WS_EV_ERROR || ev.kind == WS_EV_CLOSE) {
        stopped = 1;
        break;
      }
    }
    if (!inplace && memcmp(cb, c->in.p + pos, chunk))
      fail_msg("%s [%s]: ws_parse wrote to its input", c->name, label);
    pos += off;
    memset(cb, 0xEE, chunk);
    free(cb);
  }
  /* Whatever was left, or one more byte: a stopped parser takes nothing. */
  cb = malloc(len - pos + 1);
  assert_non_null(cb);
  memcpy(cb, c->in.p + pos, len - pos);
  cb[len - pos] = 0x81;
  n = call(p, inplace, cb, stopped ? len - pos + 1 : 0, &ev);
  if (n != 0 || ev.kind != WS_EV_NONE)
    fail_msg("%s [%s]: parser not %s at the end: took %zu, event %s", c->name,
             label, stopped ? "stopped" : "idle", n, kind_name(ev.kind));
  free(cb);
  ws_parser_free(p);
}

static void free_run(run_t *r) {
  for (int i = 0; i < r->nev; i++)
    free(r->ev[i].data);
}

static void check_run(const tcase_t *c, const run_t *r, const run_t *ref,
                      const char *label) {
  if (r->nev != c->nev)
    fail_msg("%s [%s]: %d events, expected %d (first: %s %u)", c->name, label,
             r->nev, c->nev, r->nev ? kind_name(r->ev[0].kind) : "-",
             r->nev ? r->ev[0].code : 0);
  for (int i = 0; i < c->nev; i++) {
    const tev_t *g = &r->ev[i], *x = &c->ev[i];
    if (g->kind != x->kind)
      fail_msg("%s [%s]: event %d is %s %u, expected %s", c->name, label, i,
               kind_name(g->kind), g->code, kind_name(x->kind));
    if (x->kind == WS_EV_MESSAGE && g->opcode != x->opcode)
      fail_msg("%s [%s]: event %d opcode %d, expected %d", c->name, label, i,
               g->opcode, x->opcode);
    if ((x->kind == WS_EV_CLOSE || x->kind == WS_EV_ERROR) &&
        g->code != x->code)
      fail_msg("%s [%s]: event %d code %u, expected %u", c->name, label, i,
               g->code, x->code);
    if (x->kind != WS_EV_ERROR &&
        (g->len != x->len || (x->len && memcmp(g->data, x->data, x->len))))
      fail_msg("%s [%s]: event %d payload differs (%zu bytes, expected %zu)",
               c->name, label, i, g->len, x->len);
    if (x->at >= 0 && g->at != x->at)
      fail_msg("%s [%s]: event %d at byte %ld, expected %ld", c->name, label, i,
               g->at, x->at);
    if (ref && g->at != ref->ev[i].at)
      fail_msg("%s [%s]: event %d at byte %ld, but %ld when fed whole", c->name,
               label, i, g->at, ref->ev[i].at);
  }
}

static void test_case(void **state) {
  const tcase_t *c = *state;
  static const int steps[] = {1, 2, 3, 5, 7, 13, RANDOM, RANDOM, RANDOM};
  run_t ref, r;
  char label[64];
  if (c->error[0]) fail_msg("%s", c->error);
  run_case(c, 0, WHOLE, 0, &ref, "ws_parse whole");
  check_run(c, &ref, NULL, "ws_parse whole");
  for (int inplace = 0; inplace < 2; inplace++) {
    const char *fn = inplace ? "ws_parse_inplace" : "ws_parse";
    if (inplace) {
      snprintf(label, sizeof label, "%s whole", fn);
      run_case(c, 1, WHOLE, 0, &r, label);
      check_run(c, &r, &ref, label);
      free_run(&r);
    }
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
      if (steps[i] == RANDOM)
        snprintf(label, sizeof label, "%s random pieces, seed %zu", fn, i);
      else
        snprintf(label, sizeof label, "%s %d byte(s) at a time", fn, steps[i]);
      run_case(c, inplace, steps[i], i + 1, &r, label);
      check_run(c, &r, &ref, label);
      free_run(&r);
    }
  }
  free_run(&ref);
}

static void test_case_count(void **state) {
  (void)state;
  /* A missing directory must not pass as "no failures". */
  assert_true(g_ncases >= 20);
}

/* ---- Handshake -----------------------------------------------------------
 */

static void test_accept_rfc_example(void **state) {
  /* RFC 6455 section 1.3. */
  const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
  char out[29];
  (void)state;
  assert_int_equal(ws_accept_key(key, strlen(key), out), 0);
  assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_accept_bad_keys(void **state) {
  static const char *bad[] = {
      "",
      "dGhlIHNhbXBsZSBub25jZQ=",   /* short */
      "dGhlIHNhbXBsZSBub25jZQ===", /* long */
      "dGhlIHNhbXBsZSBub25jZQAA",  /* no padding: 18 bytes */
      "dGhlIHNhbXBsZSBub25jZR==",  /* non-zero bits past 16 bytes */
      "dGhlIHNhbXBsZSBub25jZ-==",  /* base64url, not base64 */
      "dGhlIHNhbX Sz Bub25jZQ==",  /* space */
      "dGhlIHNhbXBsZSBub25j=Q==",  /* padding inside */
      " dGhlIHNhbXBsZSBub25jZQ==", /* untrimmed */
  };
  char out[29];
  (void)state;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (ws_accept_key(bad[i], strlen(bad[i]), out) != -1)
      fail_msg("key \"%s\" accepted", bad[i]);
    assert_string_equal(out, "");
  }
  assert_int_equal(ws_accept_key(NULL, 24, out), -1);
  /* The length given wins over the NUL. */
  assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==x", 24, out), 0);
}

/* ---- Encoders ------------------------------------------------------------
 */

static void test_frame_header_forms(void **state) {
  uint8_t h[10];
  (void)state;
  assert_int_equal(ws_frame_header(h, WS_OP_TEXT, 1, 0), 2);
  assert_memory_equal(h, "\x81\x00", 2);
  assert_int_equal(ws_frame_header(h, WS_OP_BINARY, 0, 125), 2);
  assert_memory_equal(h, "\x02\x7d", 2);
  assert_int_equal(ws_frame_header(h, WS_OP_CLOSE, 1, 126), 4);
  assert_memory_equal(h, "\x88\x7e\x00\x7e", 4);
  assert_int_equal(ws_frame_header(h, WS_OP_CONT, 1, 65535), 4);
  assert_memory_equal(h, "\x80\x7e\xff\xff", 4);
  assert_int_equal(ws_frame_header(h, WS_OP_PING, 1, 65536), 10);
  assert_memory_equal(h, "\x89\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
  assert_int_equal(ws_frame_header(h, WS_OP_TEXT, 1, (size_t)0x12345678), 10);
  assert_memory_equal(h, "\x81\x7f\x00\x00\x00\x00\x12\x34\x56\x78", 10);
}

/* Our encoder's headers, masked the way a client would, parse back. */
static void test_header_round_trip(void **state) {
  static const size_t sizes[] = {0,   1,   7,    8,     9,     125,
                                 126, 127, 4095, 65535, 65536, 70001};
  ws_limits_t lim = {100000, 100000};
  uint64_t seed = 7;
  (void)state;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t n = sizes[i];
    bytes_t f = {0};
    uint8_t h[10], key[4] = {0x12, 0x34, 0x56, 0x78};
    uint8_t *pl = malloc(n + 1);
    ws_event_t ev;
    ws_parser_t *p = ws_parser_new(&lim);
    for (size_t j = 0; j < n; j++)
      pl[j] = (uint8_t)rnd(&seed);
    size_t hl = ws_frame_header(h, WS_OP_BINARY, 1, n);
    h[1] |= 0x80;
    bput(&f, h, hl);
    bput(&f, key, 4);
    for (size_t j = 0; j < n; j++)
      bbyte(&f, pl[j] ^ key[j & 3]);
    bbyte(&f, 0); /* so f.p is never NULL */
    f.len--;
    assert_int_equal(ws_parse_inplace(p, f.p, f.len, &ev), f.len);
    assert_int_equal(ev.kind, WS_EV_MESSAGE);
    assert_int_equal(ev.opcode, WS_OP_BINARY);
    assert_int_equal(ev.len, n);
    if (n) assert_memory_equal(ev.data, pl, n);
    ws_parser_free(p);
    free(pl);
    free(f.p);
  }
}

static void test_close_payload(void **state) {
  uint8_t out[125];
  char reason[200];
  uint32_t st = 0;
  (void)state;
  assert_int_equal(ws_close_payload(out, 1000, NULL), 2);
  assert_memory_equal(out, "\x03\xe8", 2);
  assert_int_equal(ws_close_payload(out, 4031, "too many"), 10);
  assert_memory_equal(out, "\x0f\xbf", 2);
  assert_memory_equal(out + 2, "too many", 8);
  memset(reason, 'a', sizeof reason);
  reason[199] = '\0';
  assert_int_equal(ws_close_payload(out, 1009, reason), 125);
  /* 122 ASCII then "é" (2 bytes) would end at 124: the é is dropped whole. */
  memset(reason, 'a', 122);
  memcpy(reason + 122, "\xc3\xa9zz", 5);
  assert_int_equal(ws_close_payload(out, 1000, reason), 2 + 122);
  /* A 4-byte character straddling the limit. */
  memset(reason, 'a', 121);
  memcpy(reason + 121, "\xf0\x9f\x98\x80", 5);
  assert_int_equal(ws_close_payload(out, 1000, reason), 2 + 121);
  assert_int_equal(utf8_feed(&st, out + 2, 121), 0);
  assert_true(utf8_complete(st));
  /* Exactly 123 bytes of reason fit. */
  memset(reason, 'b', 123);
  reason[123] = '\0';
  assert_int_equal(ws_close_payload(out, 1000, reason), 125);
}

/* ---- UTF-8 ---------------------------------------------------------------
 */

static size_t enc(uint32_t c, size_t len, uint8_t *o) {
  if (len == 1) {
    o[0] = (uint8_t)c;
  } else if (len == 2) {
    o[0] = (uint8_t)(0xC0 | c >> 6);
    o[1] = (uint8_t)(0x80 | (c & 0x3F));
  } else if (len == 3) {
    o[0] = (uint8_t)(0xE0 | c >> 12);
    o[1] = (uint8_t)(0x80 | (c >> 6 & 0x3F));
    o[2] = (uint8_t)(0x80 | (c & 0x3F));
  } else {
    o[0] = (uint8_t)(0xF0 | c >> 18);
    o[1] = (uint8_t)(0x80 | (c >> 12 & 0x3F));
    o[2] = (uint8_t)(0x80 | (c >> 6 & 0x3F));
    o[3] = (uint8_t)(0x80 | (c & 0x3F));
  }
  return len;
}

static size_t minlen(uint32_t c) {
  return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
}

/* Feeds s byte by byte; returns the index of the refused byte, or n. */
static size_t first_bad(const uint8_t *s, size_t n, uint32_t *st) {
  *st = 0;
  for (size_t i = 0; i < n; i++)
    if (utf8_feed(st, s + i, 1) < 0) return i;
  return n;
}

static void test_utf8_every_code_point(void **state) {
  uint8_t b[4];
  uint32_t st;
  (void)state;
  for (uint32_t c = 0; c <= 0x1FFFFF; c++) {
    size_t n = minlen(c);
    int surrogate = c >= 0xD800 && c <= 0xDFFF;
    enc(c, n, b);
    size_t bad = first_bad(b, n, &st);
    if (c > 0x10FFFF) {
      /* F4 90.. or F5..F7: refused at the first byte that shows it. */
      if (bad != (b[0] == 0xF4 ? 1u : 0u))
        fail_msg("U+%X refused at %zu", (unsigned)c, bad);
    } else if (surrogate) {
      if (bad != 1) fail_msg("surrogate U+%X refused at %zu", (unsigned)c, bad);
    } else {
      if (bad != n) fail_msg("U+%X refused at %zu", (unsigned)c, bad);
      assert_true(utf8_complete(st));
      /* Every proper prefix is valid but incomplete. */
      for (size_t k = 1; k < n; k++) {
        assert_int_equal(first_bad(b, k, &st), k);
        assert_false(utf8_complete(st));
      }
    }
    /* Every longer (overlong) form is refused by its second byte. */
    for (size_t len = n + 1; len <= 4 && c <= 0x10FFFF; len++) {
      enc(c, len, b);
      bad = first_bad(b, len, &st);
      if (bad > 1)
        fail_msg("overlong U+%X in %zu bytes refused at %zu", (unsigned)c, len,
                 bad);
    }
  }
}

static void test_utf8_single_bytes(void **state) {
  (void)state;
  for (int c = 0; c < 256; c++) {
    uint8_t b = (uint8_t)c;
    uint32_t st = 0;
    int r = utf8_feed(&st, &b, 1);
    if (c < 0x80) {
      assert_int_equal(r, 0);
      assert_true(utf8_complete(st));
    } else if (c >= 0xC2 && c <= 0xF4) {
      assert_int_equal(r, 0);
      assert_false(utf8_complete(st));
    } else {
      assert_int_equal(r, -1);
      assert_false(utf8_complete(st));
    }
  }
}

static void test_utf8_sticky_error(void **state) {
  uint32_t st = 0;
  (void)state;
  assert_int_equal(utf8_feed(&st, (const uint8_t *)"ab\xff", 3), -1);
  assert_int_equal(utf8_feed(&st, (const uint8_t *)"cd", 2), -1);
  assert_int_equal(utf8_feed(&st, (const uint8_t *)"", 0), -1);
  assert_false(utf8_complete(st));
}

/* A plain decoder, written differently, as the reference. */
static int ref_valid(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint32_t c = s[i], min;
    size_t k;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      k = 1, c &= 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      k = 2, c &= 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      k = 3, c &= 0x07, min = 0x10000;
    } else {
      return 0;
    }
    if (n - i - 1 < k) return 0;
    for (size_t j = 1; j <= k; j++) {
      if ((s[i + j] & 0xC0) != 0x80) return 0;
      c = c << 6 | (s[i + j] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    i += k + 1;
  }
  return 1;
}

static void test_utf8_random_against_reference(void **state) {
  uint64_t seed = 42;
  uint8_t s[64];
  (void)state;
  for (int iter = 0; iter < 200000; iter++) {
    size_t n = 0, want = rnd(&seed) % 40;
    while (n < want) {
      uint32_t r = rnd(&seed) % 10;
      if (r < 5) { /* a valid character, biased to the edges */
        static const uint32_t edges[] = {0x7F,   0x80,     0x7FF,   0x800,
                                         0xD7FF, 0xE000,   0xFFFF,  0x10000,
                                         0xFFFD, 0x10FFFF, 0x1F600, 0x41};
        uint32_t c = r < 2 ? edges[rnd(&seed) % 12] : rnd(&seed) % 0x110000;
        if (c >= 0xD800 && c <= 0xDFFF) c = 0x20;
        n += enc(c, minlen(c), s + n);
      } else if (r < 7) {
        s[n++] = (uint8_t)(0x80 | rnd(&seed) % 64);
      } else {
        s[n++] = (uint8_t)rnd(&seed);
      }
    }
    uint32_t st = 0, st2 = 0;
    int whole = utf8_feed(&st, s, n) == 0 && utf8_complete(st);
    if (whole != ref_valid(s, n)) fail_msg("iteration %d differs", iter);
    /* Any split gives the same answer. */
    size_t cut = n ? rnd(&seed) % (n + 1) : 0;
    int split = utf8_feed(&st2, s, cut) == 0 &&
                utf8_feed(&st2, s + cut, n - cut) == 0 && utf8_complete(st2);
    assert_int_equal(split, whole);
  }
}

/* ---- Parser --------------------------------------------------------------
 */

/* Payload lengths across the 8-byte unmasking path, pieces starting at every
 * mask offset, both entry points. */
static void test_mask_every_offset(void **state) {
  uint64_t seed = 99;
  ws_limits_t lim = {1000, 1000};
  (void)state;
  for (size_t n = 0; n < 80; n++) {
    for (int variant = 0; variant < 4; variant++) {
      uint8_t key[4], pl[80], *buf;
      bytes_t f = {0};
      ws_parser_t *p = ws_parser_new(&lim);
      ws_event_t ev;
      size_t pos = 0;
      int got = 0, inplace = variant & 1, fragmented = variant & 2;
      for (int i = 0; i < 4; i++)
        key[i] = (uint8_t)rnd(&seed);
      for (size_t i = 0; i < n; i++)
        pl[i] = (uint8_t)rnd(&seed);
      if (fragmented) {
        size_t half = n / 3;
        mkframe(&f, 0, WS_OP_BINARY, key, pl, half, 0);
        mkframe(&f, 1, WS_OP_CONT, key, pl + half, n - half, 0);
      } else {
        mkframe(&f, 1, WS_OP_BINARY, key, pl, n, 0);
      }
      buf = f.p;
      while (pos < f.len) {
        size_t chunk = 1 + rnd(&seed) % 11;
        if (chunk > f.len - pos) chunk = f.len - pos;
        size_t used = call(p, inplace, buf + pos, chunk, &ev);
        if (ev.kind == WS_EV_MESSAGE) {
          assert_int_equal(ev.len, n);
          if (n) assert_memory_equal(ev.data, pl, n);
          got++;
        } else {
          assert_int_equal(ev.kind, WS_EV_NONE);
        }
        pos += used;
      }
      assert_int_equal(got, 1);
      ws_parser_free(p);
      free(f.p);
    }
  }
}

static void test_inplace_delivers_without_copy(void **state) {
  static const uint8_t key[4] = {1, 2, 3, 4};
  bytes_t f = {0};
  uint8_t copy[64];
  ws_event_t ev;
  ws_parser_t *p = ws_parser_new(NULL);
  (void)state;
  mkframe(&f, 1, WS_OP_TEXT, key, (const uint8_t *)"{\"type\":\"ping\"}", 15,
          0);
  mkframe(&f, 1, WS_OP_TEXT, key, (const uint8_t *)"second", 6, 0);
  memcpy(copy, f.p, f.len);
  /* ws_parse copies out and leaves the input alone. */
  assert_int_equal(ws_parse(p, f.p, f.len, &ev), 21);
  assert_int_equal(ev.kind, WS_EV_MESSAGE);
  assert_true(ev.data < f.p || ev.data >= f.p + f.len);
  assert_memory_equal(f.p, copy, f.len);
  /* ws_parse_inplace points into the input, after the header. */
  assert_int_equal(ws_parse_inplace(p, f.p + 21, f.len - 21, &ev), 12);
  assert_int_equal(ev.kind, WS_EV_MESSAGE);
  assert_ptr_equal(ev.data, f.p + 21 + 6);
  assert_int_equal(ev.len, 6);
  assert_memory_equal(ev.data, "second", 6);
  assert_int_equal(ws_parse_inplace(p, f.p + 33, 0, &ev), 0);
  assert_int_equal(ev.kind, WS_EV_NONE);
  ws_parser_free(p);
  free(f.p);
}

/* An idle connection holds no parser (wsconn.c): ws_parser_release_idle
 * says yes only between messages, and a released parser carries nothing
 * over (a fragment, a half header, a ping's buffer) to the next user. */
static void test_release_idle(void **state) {
  static const uint8_t key[4] = {9, 8, 7, 6};
  bytes_t f = {0};
  ws_event_t ev;
  ws_parser_t *p = ws_parser_new(NULL);
  (void)state;
  assert_true(ws_parser_release_idle(p)); /* fresh */
  /* Half a header: not idle, and still able to finish the frame. */
  mkframe(&f, 1, WS_OP_TEXT, key, (const uint8_t *)"abc", 3, 0);
  assert_int_equal(ws_parse(p, f.p, 3, &ev), 3);
  assert_int_equal(ev.kind, WS_EV_NONE);
  assert_false(ws_parser_release_idle(p));
  assert_int_equal(ws_parse(p, f.p + 3, f.len - 3, &ev), f.len - 3);
  assert_int_equal(ev.kind, WS_EV_MESSAGE);
  assert_memory_equal(ev.data, "abc", 3);
  assert_true(ws_parser_release_idle(p));
  /* A first fragment: a message is under way, not idle. */
  f.len = 0;
  mkframe(&f, 0, WS_OP_TEXT, key, (const uint8_t *)"he", 2, 0);
  size_t first = f.len;
  mkframe(&f, 1, WS_OP_CONT, key, (const uint8_t *)"llo", 3, 0);
  assert_int_equal(ws_parse(p, f.p, first, &ev), first);
  assert_false(ws_parser_release_idle(p));
  assert_int_equal(ws_parse(p, f.p + first, f.len - first, &ev),
                   f.len - first);
  assert_int_equal(ev.kind, WS_EV_MESSAGE);
  assert_memory_equal(ev.data, "hello", 5);
  assert_true(ws_parser_release_idle(p));
  /* A ping's buffer is freed by the release (ASan sees a leak if not),
   * and a continuation now is refused: nothing of the message is left. */
  f.len = 0;
  mkframe(&f, 1, WS_OP_PING, key, (const uint8_t *)"pp", 2, 0);
  assert_int_equal(ws_parse(p, f.p, f.len, &ev), f.len);
  assert_int_equal(ev.kind, WS_EV_PING);
  assert_true(ws_parser_release_idle(p));
  f.len = 0;
  mkframe(&f, 1, WS_OP_CONT, key, (const uint8_t *)"x", 1, 0);
  ws_parse(p, f.p, f.len, &ev);
  assert_int_equal(ev.kind, WS_EV_ERROR);
  assert_int_equal(ev.close_code, WS_CLOSE_PROTOCOL);
  assert_false(ws_parser_release_idle(p)); /* failed: stays failed */
  ws_parser_free(p);
  free(f.p);
}

static void test_default_limits(void **state) {
  static const uint8_t key[4] = {9, 8, 7, 6};
  ws_limits_t zero = {0, 0};
  uint8_t *pl = calloc(1, WS_DEFAULT_MAX_FRAME + 1);
  (void)state;
  for (int i = 0; i < 2; i++) {
    ws_parser_t *p = ws_parser_new(i ? &zero : NULL);
    bytes_t f = {0};
    ws_event_t ev;
    mkframe(&f, 1, WS_OP_BINARY, key, pl, WS_DEFAULT_MAX_FRAME, 0);
    mkframe(&f, 1, WS_OP_BINARY, key, pl, WS_DEFAULT_MAX_FRAME + 1, 0);
    size_t n = ws_parse(p, f.p, f.len, &ev);
    assert_int_equal(ev.kind, WS_EV_MESSAGE);
    assert_int_equal(ev.len, WS_DEFAULT_MAX_FRAME);
    ws_parse(p, f.p + n, f.len - n, &ev);
    assert_int_equal(ev.kind, WS_EV_ERROR);
    assert_int_equal(ev.close_code, WS_CLOSE_TOO_BIG);
    ws_parser_free(p);
    free(f.p);
  }
  free(pl);
}

/* Big fragmented messages then small ones: the buffer is given back and
 * grown again without trouble (ASan watches for use after free). */
static void test_buffer_release_and_reuse(void **state) {
  static const uint8_t key[4] = {0xa5, 0x5a, 0x0f, 0xf0};
  ws_limits_t lim = {1 << 20, 1 << 20};
  ws_parser_t *p = ws_parser_new(&lim);
  uint8_t *big = malloc(300000);
  uint64_t seed = 5;
  (void)state;
  for (size_t i = 0; i < 300000; i++)
    big[i] = (uint8_t)('a' + rnd(&seed) % 26);
  for (int round = 0; round < 6; round++) {
    bytes_t f = {0};
    size_t sz = round % 2 ? 300000 : 10 + (size_t)round, pos = 0, part;
    ws_event_t ev;
    for (size_t off = 0; off < sz; off += part) {
      part = sz - off < 65536 ? sz - off : 65536;
      mkframe(&f, off + part == sz, off ? WS_OP_CONT : WS_OP_TEXT, key,
              big + off, part, 0);
    }
    while (pos < f.len) {
      size_t chunk = f.len - pos < 4000 ? f.len - pos : 4000;
      pos += call(p, round & 2, f.p + pos, chunk, &ev);
      if (ev.kind != WS_EV_NONE) break;
    }
    assert_int_equal(pos, f.len);
    assert_int_equal(ev.kind, WS_EV_MESSAGE);
    assert_int_equal(ev.len, sz);
    assert_memory_equal(ev.data, big, sz);
    free(f.p);
  }
  ws_parser_free(p);
  free(big);
}

/* ---- main ----------------------------------------------------------------
 */

static void case_dir(int argc, char **argv, char *out, size_t n) {
  const char *env = getenv("PRESENCE_SOURCE_DIR");
  char *slash;
  if (argc > 1) {
    snprintf(out, n, "%s", argv[1]);
  } else if (env && *env) {
    snprintf(out, n, "%s/tests/data/ws", env);
  } else {
    /* __FILE__ is .../tests/unit/test_srv_ws.c */
    snprintf(out, n, "%s", __FILE__);
    for (int i = 0; i < 2 && (slash = strrchr(out, '/')); i++)
      *slash = '\0';
    if (strcmp(out, __FILE__))
      snprintf(out + strlen(out), n - strlen(out), "/data/ws");
    else
      snprintf(out, n, "tests/data/ws");
  }
}

int main(int argc, char **argv) {
  static const struct CMUnitTest fixed[] = {
      cmocka_unit_test(test_case_count),
      cmocka_unit_test(test_accept_rfc_example),
      cmocka_unit_test(test_accept_bad_keys),
      cmocka_unit_test(test_frame_header_forms),
      cmocka_unit_test(test_header_round_trip),
      cmocka_unit_test(test_close_payload),
      cmocka_unit_test(test_utf8_every_code_point),
      cmocka_unit_test(test_utf8_single_bytes),
      cmocka_unit_test(test_utf8_sticky_error),
      cmocka_unit_test(test_utf8_random_against_reference),
      cmocka_unit_test(test_mask_every_offset),
      cmocka_unit_test(test_inplace_delivers_without_copy),
      cmocka_unit_test(test_release_idle),
      cmocka_unit_test(test_default_limits),
      cmocka_unit_test(test_buffer_release_and_reuse),
  };
  char dir[1024];
  struct CMUnitTest *cases;
  int rc;

  case_dir(argc, argv, dir, sizeof dir);
  load_cases(dir);
  rc = cmocka_run_group_tests_name("ws", fixed, NULL, NULL);
  cases = calloc(g_ncases + 1, sizeof *cases);
  for (size_t i = 0; i < g_ncases; i++) {
    cases[i].name = g_cases[i].name;
    cases[i].test_func = test_case;
    cases[i].initial_state = &g_cases[i];
  }
  if (g_ncases)
    rc += _cmocka_run_group_tests("ws_cases", cases, g_ncases, NULL, NULL);
  free(cases);
  free_cases();
  return rc;
}
