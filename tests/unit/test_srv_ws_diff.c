/* SPDX-License-Identifier: MIT */
/*
 * Differential test of the WebSocket codec (src/server/ws.c) against an
 * independent implementation, Debian's wslay (server side of its event API),
 * over generated client frame streams, valid and invalid: masks, lengths in
 * all three forms, opcodes, RSV bits, fragmentation, control frames between
 * fragments, close codes and reasons, UTF-8.
 *
 * Verdict of a stream: the messages delivered (opcode and bytes), then how it
 * ended: the peer's close (its code), our refusal (the close code we send),
 * or nothing (input exhausted). Both implementations must agree.
 *
 * wslay leaves the UTF-8 of text messages to its user, so the reference
 * checks delivered text (and close reasons) with glibc's iconv, another
 * independent decoder. Lengths are always in their minimal form: wslay
 * refuses a longer form (RFC 6455 5.2 puts that MUST on the sender), ws.c
 * accepts it for data frames; that one known difference is left out of the
 * comparison (docs/security.md). A stream carries at most one fault, so that
 * the order in which faults are found (we refuse bad UTF-8 on the byte that
 * proves it; the reference at the end of the message) does not matter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/ws.h"

#ifdef PRESENCE_HAVE_WSLAY
#include <iconv.h>
#include <wslay/wslay.h>

#define LIMIT 1000 /* max_frame and max_message on both sides */
#define STREAMS 20000
#define MAXEV 16

typedef struct verdict {
  int n;
  int op[MAXEV];
  size_t len[MAXEV];
  uint8_t data[MAXEV][LIMIT + 8];
  int end; /* 0: none, 1: peer close, 2: refused */
  int code;
} verdict_t;

static uint64_t rng;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

/* ---- stream generation ---------------------------------------------- */

typedef struct out {
  uint8_t b[16384];
  size_t n;
} out_t;

static void put_frame(out_t *o, int fin, int rsv, int op, int masked,
                      const uint8_t *p, size_t n, int form) {
  o->b[o->n++] = (uint8_t)((fin ? 0x80 : 0) | rsv << 4 | op);
  uint8_t m = masked ? 0x80 : 0;
  if (form == 0 && n < 126) {
    o->b[o->n++] = (uint8_t)(m | n);
  } else if (form <= 1 && n < 65536) {
    o->b[o->n++] = m | 126;
    o->b[o->n++] = (uint8_t)(n >> 8);
    o->b[o->n++] = (uint8_t)n;
  } else {
    o->b[o->n++] = m | 127;
    for (int i = 7; i >= 0; i--)
      o->b[o->n++] = (uint8_t)((uint64_t)n >> (8 * i));
  }
  uint8_t key[4] = {(uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd(),
                    (uint8_t)rnd()};
  if (masked) {
    memcpy(o->b + o->n, key, 4);
    o->n += 4;
  }
  for (size_t i = 0; i < n; i++)
    o->b[o->n++] = masked ? p[i] ^ key[i & 3] : p[i];
}

/* Text: mostly valid UTF-8 of 1 to 4 byte characters; bad = 1 adds one
 * invalid sequence somewhere. */
static size_t gen_text(uint8_t *p, size_t max, int bad) {
  static const char *chars[] = {"a",
                                "{",
                                "\xc3\xa9",
                                "\xe2\x82\xac",
                                "\xf0\x9f\x98\x80",
                                "\xf4\x8f\xbf\xbf"};
  static const char *bads[] = {
      "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",    "\xff",
      "\x80",     "\xe2\x82",     "\xf8\x88\x80\x80\x80"};
  size_t n = 0, want = rnd() % (max + 1);
  int where = bad ? (int)(rnd() % 4) : -1, k = 0;
  while (n + 5 < max && n < want) {
    const char *c = k++ == where ? bads[rnd() % 7] : chars[rnd() % 6];
    memcpy(p + n, c, strlen(c));
    n += strlen(c);
  }
  if (bad && where >= k) {
    const char *c = bads[rnd() % 7];
    if (n + strlen(c) <= max) {
      memcpy(p + n, c, strlen(c));
      n += strlen(c);
    }
  }
  return n;
}

static void gen_stream(out_t *o) {
  o->n = 0;
  int fault = rnd() % 3 == 0 ? (int)(rnd() % 9) : -1;
  int nmsg = 1 + rnd() % 3;
  for (int m = 0; m < nmsg && o->n < sizeof o->b - 4096; m++) {
    int kind = rnd() % 6;
    uint8_t p[LIMIT + 200];
    if (kind <= 2) { /* a data message, maybe fragmented */
      int text = kind != 2;
      size_t n =
          text ? gen_text(p, LIMIT, fault == 0) : (size_t)(rnd() % (LIMIT + 1));
      if (!text)
        for (size_t i = 0; i < n; i++)
          p[i] = (uint8_t)rnd();
      if (fault == 1) n = LIMIT + 1 + rnd() % 100; /* over the limit */
      int frags = 1 + rnd() % 3;
      size_t off = 0;
      for (int f = 0; f < frags; f++) {
        size_t len = f == frags - 1 ? n - off : (n - off) * (rnd() % 100) / 100;
        int op = f == 0 ? (text ? 1 : 2) : 0;
        int rsv = fault == 2 && f == frags - 1 ? 1 + (int)(rnd() % 7) : 0;
        if (fault == 3 && f == frags - 1) op = 3 + (int)(rnd() % 5);
        int masked = !(fault == 4 && f == frags - 1);
        put_frame(o, f == frags - 1, rsv, op, masked, p + off, len, 0);
        off += len;
        if (f < frags - 1 && rnd() % 3 == 0) /* a ping between fragments */
          put_frame(o, 1, 0, 9, 1, (const uint8_t *)"x", 1, 0);
      }
      if (fault == 5) /* a continuation with no message */
        put_frame(o, 1, 0, 0, 1, p, 3, 0);
    } else if (kind == 3) { /* ping / pong, maybe too long or fragmented */
      size_t n = fault == 6 ? 126 : rnd() % 126;
      for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
      put_frame(o, fault == 7 ? 0 : 1, 0, rnd() % 2 ? 9 : 10, 1, p, n, 0);
    } else if (kind == 4) { /* a close, maybe with a bad code or reason */
      static const int codes[] = {1000, 1001, 1002, 1003, 1004, 1005,
                                  1006, 1007, 1011, 1014, 1015, 2999,
                                  3000, 4999, 5000, 0,    1016};
      int code = fault == 8 ? codes[rnd() % 17] : codes[rnd() % 4];
      size_t n = 0;
      if (rnd() % 5) {
        p[0] = (uint8_t)(code >> 8);
        p[1] = (uint8_t)code;
        n = 2 + gen_text(p + 2, 60, fault == 0);
      }
      put_frame(o, 1, 0, 8, 1, p, n, 0);
    } else { /* a small valid text message */
      put_frame(o, 1, 0, 1, 1, (const uint8_t *)"{}", 2, 0);
    }
  }
}

/* ---- ours -------------------------------------------------------------- */

/* inplace: as the daemon reads, ws_parse_inplace over a writable copy
 * (whole small frames take its one-pass path); otherwise ws_parse. */
static void run_ours(const out_t *o, verdict_t *v, int inplace) {
  static out_t copy;
  memset(v, 0, sizeof *v);
  ws_limits_t lim = {LIMIT, LIMIT};
  ws_parser_t *p = ws_parser_new(&lim);
  size_t off = 0;
  if (inplace) memcpy(copy.b, o->b, o->n);
  for (;;) {
    ws_event_t ev;
    size_t n = inplace ? ws_parse_inplace(p, copy.b + off, o->n - off, &ev)
                       : ws_parse(p, o->b + off, o->n - off, &ev);
    off += n;
    if (ev.kind == WS_EV_MESSAGE && v->n < MAXEV) {
      v->op[v->n] = ev.opcode;
      v->len[v->n] = ev.len;
      memcpy(v->data[v->n++], ev.data, ev.len);

    } else if (ev.kind == WS_EV_CLOSE) {
      v->end = 1;
      v->code = ev.close_code;
      break;
    } else if (ev.kind == WS_EV_ERROR) {
      if (getenv("WSDIFF_DEBUG"))
        fprintf(stderr, "ours: %s at %zu\n", ev.reason, off);
      v->end = 2;
      v->code = ev.close_code;
      break;
    } else if (ev.kind == WS_EV_NONE && n == 0) {
      break;
    }
  }
  ws_parser_free(p);
}

/* ---- the reference: wslay + iconv ----------------------------------------
 */

typedef struct ref {
  const out_t *in;
  size_t pos;
  uint8_t sent[4096];
  size_t nsent;
  verdict_t *v;
  int utf8_bad;
} ref_t;

static int valid_utf8(const uint8_t *s, size_t n) {
  iconv_t cd = iconv_open("UTF-32LE", "UTF-8");
  assert_true(cd != (iconv_t)-1);
  char *in = (char *)s, outb[4 * (LIMIT + 200)], *out = outb;
  size_t il = n, ol = sizeof outb;
  size_t r = iconv(cd, &in, &il, &out, &ol);
  iconv_close(cd);
  if (r == (size_t)-1 || il != 0) return 0;
  /* glibc accepts the UTF-16 surrogates' 3-byte forms; RFC 3629 does not. */
  for (size_t i = 0; i + 1 < n; i++)
    if (s[i] == 0xED && s[i + 1] >= 0xA0) return 0;
  return 1;
}

static ssize_t ref_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                        int flags, void *ud) {
  (void)flags;
  ref_t *r = ud;
  if (r->pos == r->in->n) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = r->in->n - r->pos < len ? r->in->n - r->pos : len;
  memcpy(buf, r->in->b + r->pos, n);
  r->pos += n;
  return (ssize_t)n;
}

static ssize_t ref_send(wslay_event_context_ptr ctx, const uint8_t *data,
                        size_t len, int flags, void *ud) {
  (void)ctx;
  (void)flags;
  ref_t *r = ud;
  size_t n = sizeof r->sent - r->nsent < len ? sizeof r->sent - r->nsent : len;
  memcpy(r->sent + r->nsent, data, n);
  r->nsent += n;
  return (ssize_t)len;
}

static void ref_msg(wslay_event_context_ptr ctx,
                    const struct wslay_event_on_msg_recv_arg *a, void *ud) {
  (void)ctx;
  ref_t *r = ud;
  verdict_t *v = r->v;
  if (v->end || r->utf8_bad) return;
  if (a->opcode == WSLAY_CONNECTION_CLOSE) {
    v->end = 1;
    v->code = a->status_code ? a->status_code : 1005;
    if (a->msg_length > 2 && !valid_utf8(a->msg + 2, a->msg_length - 2)) {
      v->end = 2;
      v->code = 1007;
    }
    return;
  }
  if (a->opcode != WSLAY_TEXT_FRAME && a->opcode != WSLAY_BINARY_FRAME) return;
  if (a->opcode == WSLAY_TEXT_FRAME && !valid_utf8(a->msg, a->msg_length)) {
    r->utf8_bad = 1; /* we would close with 1007 here */
    v->end = 2;
    v->code = 1007;
    return;
  }
  if (v->n < MAXEV) {
    v->op[v->n] = a->opcode;
    v->len[v->n] = a->msg_length;
    if (a->msg_length) memcpy(v->data[v->n], a->msg, a->msg_length);
    v->n++;
  }
}

static void run_ref(const out_t *o, verdict_t *v) {
  memset(v, 0, sizeof *v);
  ref_t r = {.in = o, .v = v};
  struct wslay_event_callbacks cb = {
      .recv_callback = ref_recv,
      .send_callback = ref_send,
      .on_msg_recv_callback = ref_msg,
  };
  wslay_event_context_ptr ctx;
  assert_int_equal(wslay_event_context_server_init(&ctx, &cb, &r), 0);
  wslay_event_config_set_max_recv_msg_length(ctx, LIMIT);
  int rc = wslay_event_recv(ctx);
  if (getenv("WSDIFF_DEBUG"))
    fprintf(stderr, "wslay recv rc %d, want_write %d\n", rc,
            wslay_event_want_write(ctx));
  if (!v->end && rc < 0 && rc != WSLAY_ERR_WOULDBLOCK) {
    /* A protocol error: wslay's own close frame then carries no code. */
    v->end = 2;
    v->code = 1002;
  }
  if (!v->end) {
    /* wslay refuses by queueing its own close frame: read its code. */
    wslay_event_send(ctx);
    /* Pongs to earlier pings may come first (server frames: unmasked). */
    for (size_t q = 0; q + 2 <= r.nsent;) {
      size_t n = r.sent[q + 1] & 0x7F, h = 2;
      if (n == 126) {
        n = (size_t)r.sent[q + 2] << 8 | r.sent[q + 3];
        h = 4;
      }
      if ((r.sent[q] & 0x0F) == 8) {
        v->end = 2;
        /* wslay fails a protocol error with an empty close frame. */
        v->code = n >= 2 ? r.sent[q + h] << 8 | r.sent[q + h + 1] : 1002;
        break;
      }
      q += h + n;
    }
  }
  wslay_event_context_free(ctx);
}

static void dump(const char *who, const verdict_t *v) {
  fprintf(stderr, "  %s: %d messages, end %d code %d\n", who, v->n, v->end,
          v->code);
}

static void test_differential(void **state) {
  (void)state;
  static out_t o;
  static verdict_t a, b;
  int refused = 0, closed = 0, mismatches = 0, known_1014 = 0;
  rng = 0x5EED0000DEADBEEFu;
  for (int i = 0; i < STREAMS; i++) {
    gen_stream(&o);
    run_ours(&o, &a, i & 1);
    run_ref(&o, &b);
    int same = a.n == b.n && a.end == b.end && a.code == b.code;
    for (int k = 0; same && k < a.n; k++)
      same = a.op[k] == b.op[k] && a.len[k] == b.len[k] &&
             !memcmp(a.data[k], b.data[k], a.len[k]);
    /* Close code 1014 (Bad Gateway) was registered after RFC 6455 and
     * wslay 1.1 refuses it; ws.c accepts it, as the IANA registry allows. */
    if (!same && a.end == 1 && a.code == 1014 && b.end == 2 && b.code == 1002) {
      known_1014++;
      continue;
    }
    if (!same && mismatches++ < 12) {
      fprintf(stderr, "stream %d (%zu bytes) differs:", i, o.n);
      for (size_t k = 0; k < o.n && k < 24; k++)
        fprintf(stderr, " %02x", o.b[k]);
      fprintf(stderr, "\n");
      dump("ours ", &a);
      dump("wslay", &b);
    }
    refused += a.end == 2;
    closed += a.end == 1;
  }
  printf("%d streams: %d refused, %d closed by the peer, %d mismatches, "
         "%d closes with 1014 (known difference)\n",
         STREAMS, refused, closed, mismatches, known_1014);
  assert_int_equal(mismatches, 0);
  /* The generator must really exercise both outcomes. */
  assert_true(refused > STREAMS / 10);
  assert_true(closed > STREAMS / 20);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_differential)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* no wslay: nothing to compare against */

static void test_skipped(void **state) {
  (void)state;
  skip();
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_skipped)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
