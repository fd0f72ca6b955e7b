/* SPDX-License-Identifier: MIT */
/*
 * RFC 6455 server-side codec. See ws.h for the contract.
 *
 * The parser is a byte-driven state machine for the frame header (at most 14
 * bytes, so byte at a time costs nothing worth optimising) and a chunk-driven
 * loop for payloads. Every check is made on the byte that decides it, so the
 * outcome and the number of bytes consumed before an error do not depend on
 * how the input was split into calls.
 */
#include "server/ws.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

/* ---- UTF-8 (RFC 3629) --------------------------------------------------- */

/*
 * State 0 is a code point boundary. Otherwise byte 0 holds the number of
 * continuation bytes still due, bytes 1 and 2 the range the next one must
 * fall in. Only the first continuation byte ever has a range narrower than
 * 80..BF: that byte is where overlongs (E0, F0), surrogates (ED) and code
 * points above U+10FFFF (F4) give themselves away, so they are refused as
 * soon as they arrive instead of after decoding.
 */
#define U8_BAD 0xFFFFFFFFu

static uint32_t u8st(uint32_t need, uint32_t lo, uint32_t hi) {
  return need | lo << 8 | hi << 16;
}

static uint32_t u8lead(uint8_t b) {
  if (b < 0xC2) return U8_BAD; /* stray continuation, or C0/C1 overlong */
  if (b < 0xE0) return u8st(1, 0x80, 0xBF);
  if (b == 0xE0) return u8st(2, 0xA0, 0xBF);
  if (b == 0xED) return u8st(2, 0x80, 0x9F);
  if (b < 0xF0) return u8st(2, 0x80, 0xBF);
  if (b == 0xF0) return u8st(3, 0x90, 0xBF);
  if (b < 0xF4) return u8st(3, 0x80, 0xBF);
  if (b == 0xF4) return u8st(3, 0x80, 0x8F);
  return U8_BAD;
}

/* Text here is JSON, nearly all ASCII: skip it a word at a time. */
static size_t skip_ascii(const uint8_t *s, size_t i, size_t n) {
  uint64_t w;
  for (; n - i >= 8; i += 8) {
    memcpy(&w, s + i, 8);
    if (w & 0x8080808080808080u) break;
  }
  while (i < n && s[i] < 0x80)
    i++;
  return i;
}

/* Returns n if s[0..n) is valid after *st, else the index of the bad byte. */
static size_t u8scan(uint32_t *st, const uint8_t *s, size_t n) {
  uint32_t state = *st;
  size_t i = 0;
  if (state == U8_BAD) return 0;
  while (i < n) {
    uint8_t b = s[i];
    if (state == 0) {
      if (b < 0x80) {
        i = skip_ascii(s, i, n);
        continue;
      }
      state = u8lead(b);
      if (state == U8_BAD) break;
    } else {
      if (b < (state >> 8 & 0xFF) || b > (state >> 16 & 0xFF)) {
        state = U8_BAD;
        break;
      }
      uint32_t need = (state & 0xFF) - 1;
      state = need ? u8st(need, 0x80, 0xBF) : 0;
    }
    i++;
  }
  *st = state;
  return i;
}

int utf8_feed(uint32_t *state, const uint8_t *s, size_t n) {
  /* The error is sticky so a caller feeding pieces needs to check only once. */
  return u8scan(state, s, n) == n && *state != U8_BAD ? 0 : -1;
}

int utf8_complete(uint32_t state) {
  return state == 0;
}

/* ---- Handshake ---------------------------------------------------------- */

static int b64val(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int ws_accept_key(const char *client_key, size_t key_len, char out[29]) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  uint8_t buf[24 + sizeof guid - 1];
  uint8_t md[SHA_DIGEST_LENGTH];

  out[0] = '\0';
  /* 16 bytes always encode to 22 characters and "==". */
  if (!client_key || key_len != 24 || client_key[22] != '=' ||
      client_key[23] != '=')
    return -1;
  for (size_t i = 0; i < 22; i++)
    if (b64val(client_key[i]) < 0) return -1;
  /* 22 characters carry 132 bits: the 4 past the 16 bytes are 0 in any
   * real encoding, so anything else was not made from 16 bytes. */
  if (b64val(client_key[21]) & 0x0F) return -1;

  memcpy(buf, client_key, 24);
  memcpy(buf + 24, guid, sizeof guid - 1);
  SHA1(buf, sizeof buf, md);
  EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
  return 0;
}

/* ---- Parser ------------------------------------------------------------- */

enum { S_HEAD, S_BODY, S_DONE };

/* A reassembly buffer larger than this is given back after its message:
 * with 10k+ connections, one big message each must not pin peak memory. */
#define KEEP_BUF ((size_t)16 * 1024)

struct ws_parser {
  ws_limits_t lim;
  int state;

  /* Current frame. */
  uint8_t hpos, hlen; /* header bytes seen; full header length */
  uint8_t fin, op;
  uint8_t key[4];
  unsigned moff; /* position in the mask key */
  uint64_t flen, left;
  const uint8_t *direct; /* payload unmasked in place in the caller's input */

  /* Data message; msg_op stays set between the fragments of a message. */
  int msg_op;
  size_t msg_len;
  uint32_t utf8;
  uint8_t *buf;
  size_t cap;
  int shrink;
  size_t keep_buf; /* ws_parser_keep_buffer; 0: KEEP_BUF */

  /* Control payloads get their own buffer: they may come between the
   * fragments of a message whose bytes are in buf. Allocated when a control
   * frame starts and freed at the call after its event (ev->data points into
   * it until then), so the many idle connections of a server hold none. */
  uint8_t *ctl;
  size_t ctl_len;
  uint32_t ctl_utf8;
  int drop_ctl;

  uint16_t ecode;
  const char *ewhy;
};

static const uint8_t empty[1];

ws_parser_t *ws_parser_new(const ws_limits_t *limits) {
  ws_parser_t *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  if (limits) p->lim = *limits;
  if (!p->lim.max_frame) p->lim.max_frame = WS_DEFAULT_MAX_FRAME;
  if (!p->lim.max_message) p->lim.max_message = WS_DEFAULT_MAX_MESSAGE;
  return p;
}

void ws_parser_keep_buffer(ws_parser_t *p, size_t bytes) {
  p->keep_buf = bytes;
}

static void drop_buf(ws_parser_t *p) {
  free(p->buf);
  p->buf = NULL;
  p->cap = 0;
}

int ws_parser_release_idle(ws_parser_t *p) {
  if (p->state != S_HEAD || p->hpos != 0 || p->msg_op != 0) return 0;
  drop_buf(p);
  free(p->ctl);
  p->ctl = NULL;
  p->shrink = p->drop_ctl = 0;
  p->direct = NULL;
  return 1;
}

void ws_parser_free(ws_parser_t *p) {
  if (!p) return;
  drop_buf(p);
  free(p->ctl);
  free(p);
}

static int err(ws_parser_t *p, uint16_t code, const char *why) {
  p->ecode = code;
  p->ewhy = why;
  return -1;
}

static void fail(ws_parser_t *p, ws_event_t *ev) {
  p->state = S_DONE;
  drop_buf(p);
  ev->kind = WS_EV_ERROR;
  ev->close_code = p->ecode;
  ev->reason = p->ewhy;
}

/* XOR with the key from key[off]; dst may be src. Returns the new offset;
 * *bits gets every unmasked byte ORed together, so that a caller can tell
 * all-ASCII text (no UTF-8 check needed) without another pass. */
static inline unsigned unmask_or(uint8_t *dst, const uint8_t *src, size_t n,
                                 const uint8_t key[4], unsigned off,
                                 uint64_t *bits) {
  uint8_t k8[8];
  uint64_t k, w, acc = 0;
  size_t i = 0;
  /* The key from key[off], twice: four bytes rotated, then copied. */
  for (int j = 0; j < 4; j++)
    k8[j] = key[(off + (unsigned)j) & 3];
  memcpy(k8 + 4, k8, 4);
  memcpy(&k, k8, 8);
  /* memcpy keeps this free of alignment and aliasing trouble; compilers
   * turn it into plain 8-byte loads and stores. */
  for (; n - i >= 8; i += 8) {
    memcpy(&w, src + i, 8);
    w ^= k;
    acc |= w;
    memcpy(dst + i, &w, 8);
  }
  for (; i < n; i++) {
    dst[i] = src[i] ^ k8[i & 7];
    acc |= dst[i];
  }
  *bits = acc;
  return (unsigned)((off + n) & 3);
}

static unsigned unmask(uint8_t *dst, const uint8_t *src, size_t n,
                       const uint8_t key[4], unsigned off) {
  uint64_t unused;
  return unmask_or(dst, src, n, key, off, &unused);
}

static int reserve(ws_parser_t *p, size_t need) {
  if (need <= p->cap) return 0;
  size_t cap = p->cap ? p->cap : 256;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  if (cap > p->lim.max_message) cap = p->lim.max_message;
  uint8_t *b = realloc(p->buf, cap);
  if (!b) return err(p, WS_CLOSE_INTERNAL, "out of memory");
  p->buf = b;
  p->cap = cap;
  return 0;
}

static int close_code_ok(unsigned c) {
  if (c >= 3000 && c <= 4999) return 1; /* libraries and applications */
  /* 1004-1006 and 1015 are reserved: never sent on the wire. */
  return c >= 1000 && c <= 1014 && c != 1004 && c != 1005 && c != 1006;
}

static int check_len(ws_parser_t *p) {
  if (p->op & 8) return 0; /* bounded by 125 already */
  if (p->flen > p->lim.max_frame)
    return err(p, WS_CLOSE_TOO_BIG, "frame over the size limit");
  /* msg_len <= max_message always, so this cannot wrap. */
  if (p->flen > p->lim.max_message - p->msg_len)
    return err(p, WS_CLOSE_TOO_BIG, "message over the size limit");
  return 0;
}

/* Returns -1 on error, 1 once the header is complete, else 0. */
static int head_byte(ws_parser_t *p, uint8_t b) {
  unsigned i = p->hpos++;
  if (i == 0) {
    p->fin = b >> 7;
    p->op = b & 0x0F;
    if (b & 0x70) return err(p, WS_CLOSE_PROTOCOL, "reserved bits set");
    switch (p->op) {
    case WS_OP_CONT:
      if (!p->msg_op)
        return err(p, WS_CLOSE_PROTOCOL, "continuation without a message");
      return 0;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
      if (p->msg_op)
        return err(p, WS_CLOSE_PROTOCOL, "new message inside a fragmented one");
      return 0;
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
      if (!p->fin) return err(p, WS_CLOSE_PROTOCOL, "fragmented control frame");
      return 0;
    default:
      return err(p, WS_CLOSE_PROTOCOL, "unknown opcode");
    }
  }
  if (i == 1) {
    unsigned l = b & 0x7F;
    if (!(b & 0x80)) return err(p, WS_CLOSE_PROTOCOL, "unmasked frame");
    if ((p->op & 8) && l > 125)
      return err(p, WS_CLOSE_PROTOCOL, "control frame over 125 bytes");
    if (p->op == WS_OP_CLOSE && l == 1)
      return err(p, WS_CLOSE_PROTOCOL, "close frame with a 1-byte payload");
    p->hlen = l == 127 ? 14 : l == 126 ? 8 : 6;
    p->flen = l < 126 ? l : 0;
    return l < 126 ? check_len(p) : 0;
  }
  if (i < p->hlen - 4u) {
    /* RFC 6455 5.2: the most significant bit of a 64-bit length is 0. */
    if (i == 2 && p->hlen == 14 && (b & 0x80))
      return err(p, WS_CLOSE_PROTOCOL, "64-bit length with the top bit set");
    p->flen = p->flen << 8 | b;
    return i == p->hlen - 5u ? check_len(p) : 0;
  }
  p->key[i - (p->hlen - 4u)] = b;
  return i + 1 == p->hlen;
}

/* Header complete; avail bytes follow it in this call, at mut if writable. */
static int begin(ws_parser_t *p, uint8_t *mut, size_t avail) {
  p->state = S_BODY;
  p->hpos = 0;
  p->left = p->flen;
  p->moff = 0;
  p->direct = NULL;
  if (p->op & 8) {
    p->ctl_len = 0;
    p->ctl_utf8 = 0;
    p->drop_ctl = 0;
    if (!p->ctl && !(p->ctl = malloc(125)))
      return err(p, WS_CLOSE_INTERNAL, "out of memory");
    return 0;
  }
  if (p->op != WS_OP_CONT) {
    p->msg_op = p->op;
    p->msg_len = 0;
    p->utf8 = 0;
    /* The common case, a whole small message in one read: no copy. */
    if (mut && p->fin && p->flen <= avail) {
      p->direct = mut;
      return 0;
    }
  }
  /* Reserving the whole frame at once keeps reallocs to one per frame. */
  return reserve(p, p->msg_len + (size_t)p->flen);
}

/* Takes n payload bytes; returns n, or the index of the offending byte. */
static size_t body(ws_parser_t *p, const uint8_t *src, uint8_t *mut, size_t n) {
  if (p->op & 8) {
    size_t old = p->ctl_len, from = 0, bad;
    uint8_t *dst = p->ctl + old;
    p->moff = unmask(dst, src, n, p->key, p->moff);
    p->ctl_len += n;
    if (p->op != WS_OP_CLOSE) return n;
    if (old < 2) {
      if (p->ctl_len < 2) return n;
      from = 2 - old;
      if (!close_code_ok((unsigned)p->ctl[0] << 8 | p->ctl[1])) {
        err(p, WS_CLOSE_PROTOCOL, "invalid close code");
        return from - 1;
      }
    }
    bad = u8scan(&p->ctl_utf8, dst + from, n - from);
    if (bad < n - from) {
      err(p, WS_CLOSE_INVALID_DATA, "invalid UTF-8 in the close reason");
      return from + bad;
    }
    return n;
  }
  uint8_t *dst = p->direct ? mut : p->buf + p->msg_len;
  p->moff = unmask(dst, src, n, p->key, p->moff);
  p->msg_len += n;
  if (p->msg_op == WS_OP_TEXT) {
    size_t bad = u8scan(&p->utf8, dst, n);
    if (bad < n) {
      err(p, WS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message");
      return bad;
    }
  }
  return n;
}

/* The frame's payload is all in; returns 1 if that makes an event. */
static int end_frame(ws_parser_t *p, ws_event_t *ev) {
  p->state = S_HEAD;
  if (p->op & 8) {
    ev->opcode = p->op;
    ev->data = p->ctl;
    ev->len = p->ctl_len;
    if (p->op == WS_OP_PING) {
      ev->kind = WS_EV_PING;
    } else if (p->op == WS_OP_PONG) {
      ev->kind = WS_EV_PONG;
    } else if (p->ctl_len == 0) {
      ev->kind = WS_EV_CLOSE;
      ev->close_code = 1005; /* RFC 6455 7.1.5: no status code present */
      p->state = S_DONE;
    } else if (!utf8_complete(p->ctl_utf8)) {
      err(p, WS_CLOSE_INVALID_DATA, "close reason ends inside a character");
      fail(p, ev);
    } else {
      ev->kind = WS_EV_CLOSE;
      ev->close_code = (uint16_t)(p->ctl[0] << 8 | p->ctl[1]);
      ev->data = p->ctl + 2;
      ev->len = p->ctl_len - 2;
      p->state = S_DONE;
    }
    if (p->state == S_DONE) drop_buf(p);
    p->drop_ctl = 1; /* freed at the next call: ev->data points into it */
    return 1;
  }
  if (!p->fin) return 0;
  if (p->msg_op == WS_OP_TEXT && !utf8_complete(p->utf8)) {
    err(p, WS_CLOSE_INVALID_DATA, "text message ends inside a character");
    fail(p, ev);
    return 1;
  }
  ev->kind = WS_EV_MESSAGE;
  ev->opcode = p->msg_op;
  ev->data = p->direct ? p->direct : p->buf ? p->buf : empty;
  ev->len = p->msg_len;
  /* Not freed now: ev->data may point into it until the next call. */
  p->shrink = !p->direct && p->cap > KEEP_BUF && p->cap > p->keep_buf;
  p->msg_op = 0;
  p->msg_len = 0;
  return 1;
}

static size_t parse(ws_parser_t *p, const uint8_t *in, uint8_t *mut, size_t len,
                    ws_event_t *ev) {
  size_t pos = 0;

  memset(ev, 0, sizeof *ev);
  ev->data = empty;
  if (p->shrink) {
    p->shrink = 0;
    drop_buf(p);
  }
  if (p->drop_ctl) {
    p->drop_ctl = 0;
    free(p->ctl);
    p->ctl = NULL;
  }
  if (p->state == S_DONE) return 0;

  while (pos < len) {
    if (p->state == S_HEAD && p->hpos == 0 && len - pos >= 6 &&
        (in[pos] == (0x80 | WS_OP_TEXT) || in[pos] == (0x80 | WS_OP_BINARY)) &&
        !p->msg_op && in[pos + 1] >= 0x80 && in[pos + 1] < 0x80 + 126) {
      /* What nearly every client frame is: a whole masked data message of
       * under 126 bytes, its 6-byte header all in this read. Read at once,
       * with the checks head_byte would make on it (no reserved bits, not
       * inside a fragmented message, masked, the length limits); anything
       * else goes byte by byte below. */
      p->fin = 1;
      p->op = in[pos] & 0x0F;
      p->hlen = 6;
      p->flen = in[pos + 1] & 0x7F;
      memcpy(p->key, in + pos + 2, 4);
      if (check_len(p) < 0) {
        fail(p, ev);
        return pos + 2; /* where head_byte stops: after the length */
      }
      pos += 6;
      if (mut && p->flen <= len - pos) {
        /* ... and its payload too: unmasked in place and checked in one
         * pass, and delivered as end_frame would, without the frame
         * machinery (begin, body, end_frame) in between. */
        size_t n = (size_t)p->flen;
        uint8_t *d = mut + pos;
        uint64_t bits;
        (void)unmask_or(d, in + pos, n, p->key, 0, &bits);
        if ((bits & 0x8080808080808080u) && p->op == WS_OP_TEXT) {
          uint32_t st = 0;
          size_t bad = u8scan(&st, d, n);
          if (bad < n) {
            err(p, WS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message");
            fail(p, ev);
            return pos + bad + 1;
          }
          if (!utf8_complete(st)) {
            err(p, WS_CLOSE_INVALID_DATA,
                "text message ends inside a character");
            fail(p, ev);
            return pos + n;
          }
        }
        p->left = 0;
        ev->kind = WS_EV_MESSAGE;
        ev->opcode = p->op;
        ev->data = d;
        ev->len = n;
        return pos + n;
      }
      if (begin(p, mut ? mut + pos : NULL, len - pos) < 0) {
        fail(p, ev);
        return pos;
      }
    } else if (p->state == S_HEAD) {
      int r = head_byte(p, in[pos++]);
      if (r < 0) {
        fail(p, ev);
        return pos;
      }
      if (r == 0) continue;
      if (begin(p, mut ? mut + pos : NULL, len - pos) < 0) {
        fail(p, ev);
        return pos;
      }
    } else {
      size_t n = len - pos < p->left ? len - pos : (size_t)p->left;
      size_t got = body(p, in + pos, mut ? mut + pos : NULL, n);
      if (got < n) {
        fail(p, ev);
        return pos + got + 1;
      }
      pos += n;
      p->left -= n;
    }
    if (p->left == 0 && end_frame(p, ev)) return pos;
  }
  return pos;
}

size_t ws_parse(ws_parser_t *p, const uint8_t *in, size_t len, ws_event_t *ev) {
  return parse(p, in, NULL, len, ev);
}

size_t ws_parse_inplace(ws_parser_t *p, uint8_t *in, size_t len,
                        ws_event_t *ev) {
  return parse(p, in, in, len, ev);
}

/* ---- Encoder ------------------------------------------------------------ */

size_t ws_frame_header(uint8_t out[10], int opcode, int fin,
                       size_t payload_len) {
  uint64_t n = payload_len;
  out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
  if (n < 126) {
    out[1] = (uint8_t)n;
    return 2;
  }
  if (n <= 0xFFFF) {
    out[1] = 126;
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; i++)
    out[2 + i] = (uint8_t)(n >> (56 - 8 * i));
  return 10;
}

size_t ws_close_payload(uint8_t out[125], uint16_t code, const char *reason) {
  size_t n = reason ? strnlen(reason, 124) : 0;
  out[0] = (uint8_t)(code >> 8);
  out[1] = (uint8_t)code;
  if (n > 123) {
    /* Cut before the character that straddles the limit: a close reason
     * must be valid UTF-8 or the peer fails the connection with 1007. */
    n = 123;
    while (n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80)
      n--;
  }
  if (n) memcpy(out + 2, reason, n);
  return 2 + n;
}
