/* SPDX-License-Identifier: MIT */
/*
 * HTTP/1.1 for presenced: incremental request parsing with Debian's
 * http-parser, limits (431 for headers, 413 for bodies), keep-alive and
 * pipelining, JSON error answers, and routing to the handlers.
 *
 * A request is accumulated in one arena: the URL, then each header name and
 * value, each contiguous because http-parser delivers their pieces in order.
 * The parser is paused at the end of each message so the request is answered
 * before the next pipelined one is parsed (and so an upgrade or an event
 * stream can take over the connection).
 */
#include "server/server.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_HEADERS 64

typedef struct hdr {
  uint32_t name_off, name_len, value_off, value_len;
} hdr_t;

struct http_req {
  http_parser parser;
  conn_t *conn;
  char *arena;
  uint32_t arena_len, arena_cap;
  uint32_t url_off, url_len;
  uint32_t header_bytes; /* request line and headers, for the limit */
  uint16_t nhdr;
  uint8_t in_value; /* the last header callback was a value */
  uint8_t complete;
  uint8_t started;
  uint8_t close;    /* answer with Connection: close */
  uint8_t want_continue; /* Expect: 100-continue, the 100 not sent yet */
  int64_t begun_ms; /* monotonic: first byte of this request */
  int err_status;   /* set by a callback to refuse the request */
  const char *err_code;
  const char *err_msg; /* NULL: a message from err_status */
  uint8_t head_state;  /* head_scan's position in the request head */
  uint8_t head_in_name; /* a header line before its colon */
  uint8_t chunk_state;  /* chunk_scan's position in a chunked body */
  uint8_t method_state; /* line_step's reading of the request line (M_*) */
  uint8_t method_pending; /* http-parser refused the method: the rest of
                             the request line decides between 501 and 400 */
  uint32_t line_len, line_pos; /* line_step's counts */
  uint64_t chunk_left;  /* chunk_scan: the current chunk's size, then its
                           data bytes still due */
  buf_t body;
  hdr_t hdr[MAX_HEADERS];
};

/* ---- Parsing ------------------------------------------------------------- */

static int refuse(http_req_t *r, int status, const char *code) {
  r->err_status = status;
  r->err_code = code;
  /* Not 1: from on_headers_complete that means "no body", not an error. */
  return -1;
}

static int refuse_msg(http_req_t *r, const char *msg) {
  r->err_msg = msg;
  return refuse(r, 400, "bad_request");
}

/* ---- Strict framing ------------------------------------------------------ */

/*
 * http-parser is lenient where a lenient server behind (or in front of) a
 * stricter proxy can be made to see two different requests in one byte
 * stream (request smuggling): it takes a bare LF as a line end, joins folded
 * header lines, and reads "Content-Length : 5" as some other header, so the
 * body a proxy saw becomes our next request. The head of every request is
 * therefore scanned here first, byte by byte as it arrives, and refused
 * (400, then closed) on: a bare LF, a folded line (a header line starting
 * with a space or tab), whitespace between a header name and its colon.
 * The scan stops at the blank line ending the head; body bytes and the
 * frames after an upgrade are never looked at.
 */
enum {
  HEAD_START = 0, /* before the request line (empty lines allowed) */
  HEAD_START_CR,  /* an empty line's CR before the request line */
  HEAD_LINE,      /* inside the request line or a header line */
  HEAD_LINE_CR,   /* a line's CR: LF must follow */
  HEAD_BOL,       /* at the start of a header line */
  HEAD_END_CR,    /* the CR of the blank line ending the head */
  HEAD_DONE
};

/*
 * http-parser knows a fixed list of methods and fails on the first byte
 * that leaves it (HPE_INVALID_METHOD), so "BREW /v1/users HTTP/1.1" and
 * binary garbage looked the same: 400. RFC 9110 9.1 and 15.6.2 want 501 for
 * a method the server does not recognise, which is what a client or a proxy
 * trying WebDAV or a new method should hear. The request line is therefore
 * followed here too: method SP request-target SP HTTP/1.x CRLF (RFC 9112
 * 3), the method a token (RFC 9110 5.6.2), is a request with a method we
 * do not know; anything else ("HELLO THERE", a TLS handshake, a control
 * byte) is not a request: 400. Bounded by --max-header-bytes, as the
 * request line is for a known method.
 */
enum {
  M_NONE = 0, /* no byte of the request line yet */
  M_TOKEN,    /* the method's token characters so far */
  M_TARGET0,  /* after the method's SP: the target's first byte */
  M_TARGET,   /* in the target */
  M_VERSION,  /* after the target's SP: "HTTP/1.x" then CR */
  M_OK,       /* a well-formed request line */
  M_BAD       /* not one: the request is malformed */
};

static int tchar(unsigned char ch) {
  if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
      (ch >= 'A' && ch <= 'Z'))
    return 1;
  return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* One byte of the request line: r->line_len counts them, r->line_pos the
 * version's. */
static void line_step(http_req_t *r, char c) {
  static const char version[] = "HTTP/1.";
  unsigned char ch = (unsigned char)c;
  if (++r->line_len > r->conn->srv->cfg.max_header_bytes) {
    r->method_state = M_BAD;
    return;
  }
  switch (r->method_state) {
  case M_NONE:
  case M_TOKEN:
    if (ch == ' ')
      r->method_state = r->method_state == M_TOKEN ? M_TARGET0 : M_BAD;
    else
      r->method_state = tchar(ch) ? M_TOKEN : M_BAD;
    break;
  case M_TARGET0:
  case M_TARGET:
    if (ch == ' ' && r->method_state == M_TARGET) {
      r->method_state = M_VERSION;
      r->line_pos = 0;
    } else {
      r->method_state = ch > 0x20 && ch < 0x7f ? M_TARGET : M_BAD;
    }
    break;
  case M_VERSION: {
    uint32_t i = r->line_pos++;
    int ok = i < sizeof version - 1 ? ch == (unsigned char)version[i]
             : i == sizeof version - 1 ? ch >= '0' && ch <= '9'
                                       : ch == '\r';
    if (!ok)
      r->method_state = M_BAD;
    else if (i == sizeof version)
      r->method_state = M_OK;
    break;
  }
  }
}

/* Whether p[0..n) starts with a method presenced implements and its SP:
 * http-parser knows it, so the rest of the line is the parser's to judge
 * and line_step need not follow it. A WebSocket upgrade's request line
 * carries its token (~400 bytes): stepped byte by byte, it cost ~6,000
 * instructions of every connect (bench: a connect ~84,000) for an answer
 * only an unknown method needs. A line cut before its SP is stepped. */
static int implemented_prefix(const char *p, size_t n) {
  static const char *const known[] = {"GET ", "POST ", "PUT ", "HEAD ",
                                      "DELETE "};
  for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
    size_t l = strlen(known[k]);
    if (n >= l && memcmp(p, known[k], l) == 0) return 1;
  }
  return 0;
}

/* Scan data[0..len) of the current request's head; returns 0 (fine so far,
 * or the head is complete: *end is then the offset after it) or -1 with the
 * refusal set in r. */
static int head_scan(http_req_t *r, const char *data, size_t len,
                     size_t *end) {
  size_t i;
  for (i = 0; i < len && r->head_state != HEAD_DONE; i++) {
    char ch = data[i];
    switch (r->head_state) {
    case HEAD_START:
      if (ch == '\r') {
        r->head_state = HEAD_START_CR;
        break;
      }
      if (ch == '\n') return refuse_msg(r, "malformed HTTP request: bare LF");
      r->head_state = HEAD_LINE;
      if (implemented_prefix(data + i, len - i))
        r->method_state = M_OK;
      else
        line_step(r, ch);
      break;
    case HEAD_START_CR:
      if (ch != '\n') return refuse_msg(r, "malformed HTTP request: bare CR");
      r->head_state = HEAD_START;
      break;
    case HEAD_LINE:
      if (r->method_state != M_OK && r->method_state != M_BAD)
        line_step(r, ch);
      if (ch == '\r')
        r->head_state = HEAD_LINE_CR;
      else if (ch == '\n')
        return refuse_msg(r, "malformed HTTP request: bare LF");
      else if (r->head_in_name && ch == ':')
        r->head_in_name = 0;
      else if (r->head_in_name && (ch == ' ' || ch == '\t'))
        return refuse_msg(r, "malformed HTTP request: whitespace in a header "
                             "name or before its colon");
      break;
    case HEAD_LINE_CR:
      if (ch != '\n') return refuse_msg(r, "malformed HTTP request: bare CR");
      r->head_state = HEAD_BOL;
      break;
    case HEAD_BOL:
      if (ch == '\r') {
        r->head_state = HEAD_END_CR;
      } else if (ch == '\n') {
        return refuse_msg(r, "malformed HTTP request: bare LF");
      } else if (ch == ' ' || ch == '\t') {
        return refuse_msg(r, "malformed HTTP request: folded header line");
      } else {
        r->head_state = HEAD_LINE;
        r->head_in_name = ch != ':';
        if (ch == ':')
          return refuse_msg(r, "malformed HTTP request: empty header name");
      }
      break;
    case HEAD_END_CR:
      if (ch != '\n') return refuse_msg(r, "malformed HTTP request: bare CR");
      r->head_state = HEAD_DONE;
      break;
    }
  }
  *end = i; /* where the body starts, once the head is done */
  return 0;
}

/*
 * The same for a chunked body (RFC 9112 7.1): http-parser takes any two
 * bytes after a chunk's data as its CRLF, a bare LF in the trailer section
 * as a line end, folded trailer lines, and whitespace after a chunk size,
 * each a way for a proxy and us to frame the body differently, and so to
 * see a different next request. Scanned here, over the bytes the parser has
 * just consumed and before the request is routed; refused as the head is.
 * Extensions are allowed (after optional whitespace and ';'), their bytes
 * not looked at; the chunk sizes are the parser's to bound (413).
 */
enum {
  CHUNK_SIZE_START = 0, /* the first hex digit of a chunk size */
  CHUNK_SIZE,           /* more hex digits */
  CHUNK_SIZE_WS,        /* whitespace after the size: ';' must follow */
  CHUNK_EXT,            /* an extension, up to CR */
  CHUNK_SIZE_CR,        /* the size line's CR: LF must follow */
  CHUNK_DATA,           /* chunk_left data bytes */
  CHUNK_DATA_CR,        /* the CRLF after the data */
  CHUNK_DATA_LF,
  CHUNK_TRAILER_BOL,    /* the start of a trailer line, or the blank line */
  CHUNK_TRAILER_NAME,   /* a trailer field's name, up to its colon */
  CHUNK_TRAILER_VALUE,  /* its value, up to CR */
  CHUNK_TRAILER_CR,
  CHUNK_END_CR,         /* the blank line's CR */
  CHUNK_DONE
};

static int hexval(char c);

static int hexdigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
         (c >= 'A' && c <= 'F');
}

static int chunk_bad(http_req_t *r) {
  return refuse_msg(r, "malformed HTTP request: chunked body framing (a "
                       "bare LF or CR, no CRLF after a chunk's data, "
                       "whitespace after a chunk size, a folded trailer "
                       "line or whitespace before its colon)");
}

/* Scan data[0..len), body bytes of a chunked request in order; 0 or -1
 * with the refusal set in r. */
static int chunk_scan(http_req_t *r, const char *data, size_t len) {
  for (size_t i = 0; i < len && r->chunk_state != CHUNK_DONE; i++) {
    char ch = data[i];
    switch (r->chunk_state) {
    case CHUNK_SIZE_START:
    case CHUNK_SIZE:
      if (hexdigit(ch)) {
        /* The parser refused a size over --max-body (or one that does not
         * fit) before these bytes came here. */
        r->chunk_left = r->chunk_left << 4 | (uint64_t)hexval(ch);
        r->chunk_state = CHUNK_SIZE;
      } else if (r->chunk_state == CHUNK_SIZE_START) {
        return chunk_bad(r);
      } else if (ch == ';') {
        r->chunk_state = CHUNK_EXT;
      } else if (ch == ' ' || ch == '\t') {
        r->chunk_state = CHUNK_SIZE_WS;
      } else if (ch == '\r') {
        r->chunk_state = CHUNK_SIZE_CR;
      } else {
        return chunk_bad(r);
      }
      break;
    case CHUNK_SIZE_WS:
      if (ch == ';')
        r->chunk_state = CHUNK_EXT;
      else if (ch != ' ' && ch != '\t')
        return chunk_bad(r);
      break;
    case CHUNK_EXT:
      if (ch == '\r')
        r->chunk_state = CHUNK_SIZE_CR;
      else if (ch == '\n')
        return chunk_bad(r);
      break;
    case CHUNK_SIZE_CR:
      if (ch != '\n') return chunk_bad(r);
      r->chunk_state = r->chunk_left ? CHUNK_DATA : CHUNK_TRAILER_BOL;
      break;
    case CHUNK_DATA: {
      size_t n = len - i;
      if (n > r->chunk_left) n = (size_t)r->chunk_left;
      r->chunk_left -= n;
      i += n - 1; /* n >= 1: a chunk's data is never empty here */
      if (!r->chunk_left) r->chunk_state = CHUNK_DATA_CR;
      break;
    }
    case CHUNK_DATA_CR:
      if (ch != '\r') return chunk_bad(r);
      r->chunk_state = CHUNK_DATA_LF;
      break;
    case CHUNK_DATA_LF:
      if (ch != '\n') return chunk_bad(r);
      r->chunk_state = CHUNK_SIZE_START;
      break;
    case CHUNK_TRAILER_BOL:
      if (ch == '\r')
        r->chunk_state = CHUNK_END_CR;
      else if (ch == '\n' || ch == ' ' || ch == '\t' || ch == ':')
        return chunk_bad(r);
      else
        r->chunk_state = CHUNK_TRAILER_NAME;
      break;
    case CHUNK_TRAILER_NAME:
      if (ch == ':')
        r->chunk_state = CHUNK_TRAILER_VALUE;
      else if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')
        return chunk_bad(r);
      break;
    case CHUNK_TRAILER_VALUE:
      if (ch == '\r')
        r->chunk_state = CHUNK_TRAILER_CR;
      else if (ch == '\n')
        return chunk_bad(r);
      break;
    case CHUNK_TRAILER_CR:
      if (ch != '\n') return chunk_bad(r);
      r->chunk_state = CHUNK_TRAILER_BOL;
      break;
    case CHUNK_END_CR:
      if (ch != '\n') return chunk_bad(r);
      r->chunk_state = CHUNK_DONE;
      break;
    }
  }
  return 0;
}

/* Headers a request may carry once: two Content-Length or Transfer-Encoding
 * headers are how a body's length is made ambiguous, two Host or
 * Authorization headers how a check and a use are made to read different
 * ones; a WebSocket handshake's key and version "MUST NOT appear more than
 * once" (RFC 6455 11.3.1, 11.3.5). */
static const struct {
  const char *name, *msg;
} single_headers[] = {
    {"Content-Length", "duplicated Content-Length header"},
    {"Transfer-Encoding", "duplicated Transfer-Encoding header"},
    {"Host", "duplicated Host header"},
    {"Authorization", "duplicated Authorization header"},
    {"Sec-WebSocket-Key", "duplicated Sec-WebSocket-Key header"},
    {"Sec-WebSocket-Version", "duplicated Sec-WebSocket-Version header"}};

static int check_duplicates(http_req_t *r) {
  for (size_t k = 0; k < sizeof single_headers / sizeof *single_headers; k++) {
    const char *name = single_headers[k].name;
    size_t nl = strlen(name);
    unsigned seen = 0;
    for (unsigned i = 0; i < r->nhdr; i++) {
      const hdr_t *h = &r->hdr[i];
      if (h->name_len == nl && !strncasecmp(r->arena + h->name_off, name, nl))
        seen++;
    }
    if (seen > 1) {
      r->err_msg = single_headers[k].msg;
      return refuse(r, 400, "bad_request");
    }
  }
  return 0;
}

/* The header limit also bounds the arena, so a request's memory is bounded
 * before it is complete. */
static int arena_add(http_req_t *r, const char *at, size_t len) {
  r->header_bytes += (uint32_t)len;
  if (len > r->conn->srv->cfg.max_header_bytes ||
      r->header_bytes > r->conn->srv->cfg.max_header_bytes)
    return refuse(r, 431, "headers_too_large");
  if ((size_t)r->arena_len + len > r->arena_cap) {
    size_t cap = r->arena_cap ? r->arena_cap : 512;
    while (cap < (size_t)r->arena_len + len)
      cap *= 2;
    char *a = realloc(r->arena, cap);
    if (!a) return refuse(r, 503, "out_of_memory");
    r->arena = a;
    r->arena_cap = (uint32_t)cap;
  }
  memcpy(r->arena + r->arena_len, at, len);
  r->arena_len += (uint32_t)len;
  return 0;
}

static int on_message_begin(http_parser *p) {
  http_req_t *r = p->data;
  if (!r->started) { /* else timed from the empty lines before it */
    r->started = 1;
    r->begun_ms = srv_now_mono(r->conn->srv);
  }
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  http_req_t *r = p->data;
  if (r->url_len == 0) r->url_off = r->arena_len;
  /* A target alone over the limit is 414 (RFC 9110 15.5.15), which tells
   * the client to shorten the URL, where 431 would tell it to drop headers. */
  if ((size_t)r->url_len + len > r->conn->srv->cfg.max_header_bytes)
    return refuse(r, 414, "uri_too_long");
  r->url_len += (uint32_t)len;
  return arena_add(r, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  http_req_t *r = p->data;
  if (r->in_value || r->nhdr == 0) {
    if (r->nhdr == MAX_HEADERS) return refuse(r, 431, "headers_too_large");
    hdr_t *h = &r->hdr[r->nhdr++];
    memset(h, 0, sizeof *h);
    h->name_off = r->arena_len;
    r->in_value = 0;
  }
  r->hdr[r->nhdr - 1].name_len += (uint32_t)len;
  return arena_add(r, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  http_req_t *r = p->data;
  if (r->nhdr == 0) return 0;
  hdr_t *h = &r->hdr[r->nhdr - 1];
  if (!r->in_value) {
    h->value_off = r->arena_len;
    r->in_value = 1;
  }
  h->value_len += (uint32_t)len;
  return arena_add(r, at, len);
}

/*
 * RFC 9112 3.2.2: a server "MUST accept the absolute-form" of a target
 * (GET http://host/path), what a client sends to what it takes for a proxy
 * and some proxies pass on, and then "MUST ignore the received Host header
 * field" for the URL's authority. The URL is narrowed to its path and query
 * (http_path and http_query then read it as any other) and Host made to
 * read the authority, so every check of Host (the same-origin check of a
 * handshake, the demo's DNS-rebinding check) sees the host the request is
 * for. A scheme other than http(s), an empty host and userinfo ("SHOULD
 * ... treat its presence as an error", RFC 9110 4.2.4) are refused.
 */
static int absolute_form(http_req_t *r) {
  const char *u = r->arena + r->url_off;
  size_t n = r->url_len, sl;
  if (n == 0 || u[0] == '/' || (n == 1 && u[0] == '*')) return 0;
  if (n >= 7 && !strncasecmp(u, "http://", 7))
    sl = 7;
  else if (n >= 8 && !strncasecmp(u, "https://", 8))
    sl = 8;
  else
    return refuse_msg(r, "malformed HTTP request: a target is a path or an "
                         "http(s) URL");
  size_t e = sl;
  while (e < n && u[e] != '/' && u[e] != '?' && u[e] != '#')
    e++;
  if (e == sl || memchr(u + sl, '@', e - sl))
    return refuse_msg(r, "malformed HTTP request: a URL without a host, or "
                         "with userinfo");
  uint32_t auth_off = r->url_off + (uint32_t)sl, auth_len = (uint32_t)(e - sl);
  r->url_off += (uint32_t)e;
  r->url_len -= (uint32_t)e;
  unsigned i;
  for (i = 0; i < r->nhdr; i++) {
    const hdr_t *h = &r->hdr[i];
    if (h->name_len == 4 && !strncasecmp(r->arena + h->name_off, "Host", 4))
      break;
  }
  if (i == r->nhdr) { /* HTTP/1.0 may have none: one is made */
    if (r->nhdr == MAX_HEADERS) return refuse(r, 431, "headers_too_large");
    uint32_t off = r->arena_len;
    if (arena_add(r, "Host", 4) != 0) return -1;
    r->hdr[r->nhdr++] = (hdr_t){off, 4, 0, 0};
  }
  r->hdr[i].value_off = auth_off;
  r->hdr[i].value_len = auth_len;
  return 0;
}

/* The methods some resource of presenced answers. Any other, whether
 * http-parser knows it (PROPFIND, TRACE, CONNECT, PATCH) or not (BREW), is
 * implemented by no resource: 501 (RFC 9110 15.6.2), where 405 would say
 * that another resource might take it. */
static const char unknown_method_msg[] =
    "method not implemented (presenced answers GET, HEAD, POST, PUT and "
    "DELETE)";

static int method_implemented(unsigned m) {
  return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_POST || m == HTTP_PUT ||
         m == HTTP_DELETE;
}

static int refuse_method(http_req_t *r) {
  r->err_msg = unknown_method_msg;
  return refuse(r, 501, "not_implemented");
}

static int on_headers_complete(http_parser *p) {
  http_req_t *r = p->data;
  uint32_t max = r->conn->srv->cfg.max_body;
  /* HTTP/0.9 ("GET /path" and nothing else) has no headers and no status
   * line in its answer; HTTP/2 does not arrive as text. */
  if (p->http_major != 1)
    return refuse_msg(r, "malformed HTTP request: HTTP/1.0 or HTTP/1.1 only");
  if (check_duplicates(r) != 0) return -1;
  /* RFC 9112 3.2: an HTTP/1.1 request without Host "MUST" get 400. A proxy
   * routes by it, and the same-origin check of a WebSocket handshake and
   * the demo's DNS-rebinding check read it. (Empty is allowed: a target
   * without an authority has one.) */
  size_t hl;
  if (p->http_minor >= 1 && !http_header(r, "Host", &hl))
    return refuse_msg(r, "malformed HTTP request: HTTP/1.1 without Host");
  /* Before the target's form: CONNECT's authority-form is not malformed,
   * only not implemented. */
  if (!method_implemented(p->method)) return refuse_method(r);
  if (absolute_form(r) != 0) return -1;
  /* RFC 9112 6.1: a transfer coding we do not decode (gzip, chunked) would
   * hand the handler compressed bytes as the body, read by a proxy as
   * something else; "SHOULD respond with 501". Transfer-Encoding in an
   * HTTP/1.0 request is faulty framing (a 1.0 peer knows no chunking):
   * 400. Both close the connection, the body's end not being known. */
  size_t tl;
  const char *te = http_header(r, "Transfer-Encoding", &tl);
  if (te) {
    if (p->http_minor == 0)
      return refuse_msg(r, "malformed HTTP request: Transfer-Encoding in "
                           "HTTP/1.0");
    while (tl && (te[tl - 1] == ' ' || te[tl - 1] == '\t'))
      tl--;
    while (tl && (*te == ' ' || *te == '\t')) {
      te++;
      tl--;
    }
    if (tl != 7 || strncasecmp(te, "chunked", 7) != 0) {
      r->err_msg = "only Transfer-Encoding: chunked";
      return refuse(r, 501, "not_implemented");
    }
  }
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > max)
    return refuse(r, 413, "body_too_large");
  /* RFC 9110 10.1.1: a client that sends "Expect: 100-continue" may hold its
   * body back until it hears 100 (Continue) or a final status; curl waits a
   * second, others for good. Sent by http_on_read once the parser returns
   * (never from this callback: a failed write closes the connection and
   * frees r), and only if the body has not already come with the head. */
  size_t el;
  const char *ex = http_header(r, "Expect", &el);
  if (ex && p->http_minor >= 1 && el == 12 &&
      !strncasecmp(ex, "100-continue", 12) &&
      ((p->flags & F_CHUNKED) ||
       ((p->flags & F_CONTENTLENGTH) && p->content_length > 0)))
    r->want_continue = 1;
  return 0;
}

/* A chunk's size is known before its bytes: a body the sizes take past the
 * limit is refused then, not after the client has sent (and we have read)
 * up to the limit of it. */
static int on_chunk_header(http_parser *p) {
  http_req_t *r = p->data;
  if (p->content_length > r->conn->srv->cfg.max_body - r->body.len)
    return refuse(r, 413, "body_too_large");
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  http_req_t *r = p->data;
  if (r->body.len + len > r->conn->srv->cfg.max_body)
    return refuse(r, 413, "body_too_large");
  buf_append(&r->body, at, len);
  return buf_failed(&r->body) ? refuse(r, 503, "out_of_memory") : 0;
}

static int on_message_complete(http_parser *p) {
  http_req_t *r = p->data;
  r->complete = 1;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

static http_req_t *req_new(conn_t *c) {
  http_req_t *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  http_parser_init(&r->parser, HTTP_REQUEST);
  r->parser.data = r;
  r->conn = c;
  buf_init(&r->body);
  return r;
}

/* Forget the answered request, keep the parser (keep-alive). Large arenas
 * are released so a keep-alive connection does not pin them. */
static void req_reset(http_req_t *r) {
  r->arena_len = r->url_off = r->url_len = r->header_bytes = 0;
  r->nhdr = 0;
  r->in_value = r->complete = r->started = r->close = 0;
  r->want_continue = 0;
  r->err_status = 0;
  r->err_code = NULL;
  r->err_msg = NULL;
  r->head_state = r->head_in_name = 0;
  r->chunk_state = 0;
  r->chunk_left = 0;
  r->method_state = r->method_pending = 0;
  r->line_len = r->line_pos = 0;
  buf_shrink(&r->body, 0);
  if (r->arena_cap > 4096) {
    free(r->arena);
    r->arena = NULL;
    r->arena_cap = 0;
  }
}

void http_req_free(http_req_t *r) {
  if (!r) return;
  free(r->arena);
  buf_free(&r->body);
  free(r);
}

/* ---- Accessors ----------------------------------------------------------- */

const char *http_header(const http_req_t *r, const char *name, size_t *len) {
  size_t nl = strlen(name);
  for (unsigned i = 0; i < r->nhdr; i++) {
    const hdr_t *h = &r->hdr[i];
    if (h->name_len == nl && !strncasecmp(r->arena + h->name_off, name, nl)) {
      /* http-parser drops the whitespace before a value, not after it;
       * neither is part of it (RFC 9112 5: "Bearer <key> " is the key). */
      const char *v = r->arena + h->value_off;
      size_t vl = h->value_len;
      while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
      *len = vl;
      return vl ? v : "";
    }
  }
  *len = 0;
  return NULL;
}

const char *http_path(const http_req_t *r, size_t *len) {
  const char *u = r->arena + r->url_off;
  size_t n = 0;
  while (n < r->url_len && u[n] != '?' && u[n] != '#')
    n++;
  if (n == 0) { /* http://host or http://host?q (absolute_form): the root */
    *len = 1;
    return "/";
  }
  *len = n;
  return u;
}

const char *http_query(const http_req_t *r, const char *name, size_t *len) {
  return http_query_next(r, name, NULL, len);
}

/* A parameter may be given more than once (?ids=a&ids=b is how Python's
 * requests, Go's url.Values and URLSearchParams write a list): the API reads
 * every occurrence of a list, and refuses a second one of a single value
 * rather than answer for the first alone. */
const char *http_query_next(const http_req_t *r, const char *name,
                            const char *prev, size_t *len) {
  const char *u = r->arena + r->url_off, *end = u + r->url_len;
  const char *q = memchr(u, '?', r->url_len);
  if (!q) return NULL;
  const char *hash = memchr(q, '#', (size_t)(end - q));
  if (hash) end = hash;
  size_t nl = strlen(name);
  const char *from = q + 1;
  if (prev) {
    /* Past the '&' that ends the previous occurrence's value. */
    if (prev < from || prev > end) return NULL;
    const char *amp = memchr(prev, '&', (size_t)(end - prev));
    if (!amp) return NULL;
    from = amp + 1;
  }
  for (const char *s = from; s < end;) {
    const char *amp = memchr(s, '&', (size_t)(end - s));
    const char *e = amp ? amp : end;
    const char *eq = memchr(s, '=', (size_t)(e - s));
    const char *ke = eq ? eq : e;
    if ((size_t)(ke - s) == nl && !memcmp(s, name, nl)) {
      *len = eq ? (size_t)(e - eq - 1) : 0;
      return eq ? eq + 1 : e;
    }
    s = e + 1;
  }
  return NULL;
}

const char *http_query_repeated(const http_req_t *r,
                                const char *const *names) {
  for (; *names; names++) {
    size_t len;
    const char *v = http_query(r, *names, &len);
    if (v && http_query_next(r, *names, v, &len)) return *names;
  }
  return NULL;
}

int http_method(const http_req_t *r) {
  return r->parser.method;
}

int http_minor(const http_req_t *r) { return r->parser.http_minor; }

const char *http_body(const http_req_t *r, size_t *len) {
  *len = r->body.len;
  return r->body.data ? r->body.data : "";
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* plus: a '+' is a space (a query's form encoding), or itself (a path). */
static int unescape(const char *src, size_t len, char *out, size_t cap,
                    int plus) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    char ch = src[i];
    if (ch == '%') {
      if (i + 2 >= len) return -1;
      int hi = hexval(src[i + 1]), lo = hexval(src[i + 2]);
      if (hi < 0 || lo < 0) return -1;
      ch = (char)(hi * 16 + lo);
      i += 2;
    } else if (ch == '+' && plus) {
      ch = ' ';
    }
    if (ch == '\0' || o + 1 >= cap) return -1;
    out[o++] = ch;
  }
  out[o] = '\0';
  return (int)o;
}

int http_unescape(const char *src, size_t len, char *out, size_t cap) {
  return unescape(src, len, out, cap, 1);
}

int http_unescape_path(const char *src, size_t len, char *out, size_t cap) {
  return unescape(src, len, out, cap, 0);
}

/* ---- Answers ------------------------------------------------------------- */

/* RFC 9110 6.6.1: an origin server with a clock "MUST generate a Date header
 * field" in its 2xx, 3xx and 4xx answers (caches and clients reckon ages
 * and clock skew from it). IMF-fixdate (5.6.7), written by hand since
 * strftime's names follow the locale; remade once a second, per thread
 * (workers.c runs a loop per thread). */
const char *http_date_line(const srv_t *s) {
  static const char wd[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                "Thu", "Fri", "Sat"};
  static const char mo[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  static _Thread_local char line[64];
  static _Thread_local int64_t at = -1;
  int64_t sec = srv_now_wall_coarse(s) / 1000;
  if (sec != at) {
    time_t t = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) return "";
    snprintf(line, sizeof line, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
             wd[tm.tm_wday % 7], tm.tm_mday, mo[tm.tm_mon % 12],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    at = sec;
  }
  return line;
}

static const char *reason_phrase(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 101:
    return "Switching Protocols";
  case 201:
    return "Created";
  case 204:
    return "No Content";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 503:
    return "Service Unavailable";
  default:
    return "Unknown";
  }
}

void http_respond(conn_t *c, int status, const char *content_type,
                  const char *extra_headers, const void *body, size_t len) {
  http_req_t *r = c->kind == CONN_HTTP ? c->u.http : NULL;
  int close = !r || r->close || r->err_status ||
              !http_should_keep_alive(&r->parser) || c->srv->shutting_down ||
              c->over_limit;
  if (r && close) r->close = 1;
  char head[512];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\n%sContent-Type: %s\r\n"
                   "Content-Length: %zu\r\nCache-Control: no-store\r\n"
                   "Connection: %s\r\n%s\r\n",
                   status, reason_phrase(status), http_date_line(c->srv),
                   content_type, len,
                   /* RFC 9110 7.8: the Upgrade a 426 carries is named in
                    * Connection too, so no intermediary forwards it. */
                   status == 426 ? (close ? "Upgrade, close"
                                          : "Upgrade, keep-alive")
                   : close       ? "close"
                                 : "keep-alive",
                   extra_headers ? extra_headers : "");
  if (n < 0 || (size_t)n >= sizeof head) n = 0;
  /* A refused request may not have a meaningful method: only a parsed HEAD
   * gets headers alone. */
  int head_only = r && !r->err_status &&
                  HTTP_PARSER_ERRNO(&r->parser) == HPE_OK &&
                  r->parser.method == HTTP_HEAD;
  conn_write2(c, head, (size_t)n, body, head_only ? 0 : len);
}

void http_respond_json(conn_t *c, int status, const buf_t *body) {
  if (buf_failed(body)) {
    http_error(c, 503, "out_of_memory", "out of memory");
    return;
  }
  http_respond(c, status, "application/json", NULL, body->data, body->len);
}

void http_error_hdr(conn_t *c, int status, const char *code,
                    const char *message, const char *extra_headers) {
  /* Counted by code for /metrics; logged once per class. */
  srv_error(c->srv, code, "HTTP %d: %s", status, message);
  char body[512];
  buf_t b;
  buf_init(&b);
  buf_puts(&b, "{\"error\":{\"code\":");
  buf_put_json_str(&b, code);
  buf_puts(&b, ",\"message\":");
  buf_put_json_str(&b, message);
  buf_puts(&b, "}}");
  if (buf_failed(&b) || b.len >= sizeof body) {
    buf_free(&b);
    http_respond(c, status, "application/json", extra_headers,
                 "{\"error\":{\"code\":\"internal\",\"message\":\"\"}}", 42);
    return;
  }
  memcpy(body, b.data, b.len);
  size_t len = b.len;
  buf_free(&b);
  http_respond(c, status, "application/json", extra_headers, body, len);
}

void http_error(conn_t *c, int status, const char *code, const char *message) {
  http_error_hdr(c, status, code, message, NULL);
}

/* ---- Routing ------------------------------------------------------------- */

static int path_is(const char *path, size_t len, const char *want) {
  return strlen(want) == len && memcmp(path, want, len) == 0;
}

static int path_has_prefix(const char *path, size_t len, const char *pre) {
  size_t pl = strlen(pre);
  return len >= pl && memcmp(path, pre, pl) == 0;
}

static void healthz(conn_t *c) {
  srv_t *s = c->srv;
  buf_t *b = &s->scratch;
  buf_reset(b);
  /* With Redis, "ready" means registered with a live lease and this
   * instance's sessions asserted: until then (and while Redis is away) the
   * instance keeps its clients but a load balancer should send new ones
   * elsewhere, hence 503. */
  int ready = !s->rstore || srv_store_ready(s);
  buf_puts(b, "{\"status\":");
  buf_puts(b, s->shutting_down ? "\"shutting_down\""
              : ready          ? "\"ok\""
                               : "\"store_unavailable\"");
  buf_puts(b, ",\"instance\":");
  buf_put_json_str(b, s->instance_id);
  buf_puts(b, ",\"uptime_s\":");
  buf_put_i64(b, (srv_now_mono(s) - s->started_mono_ms) / 1000);
  buf_puts(b, ",\"store\":");
  buf_puts(b, s->rstore ? "\"redis\"" : "\"memory\"");
  buf_puts(b, ",\"store_ready\":");
  buf_puts(b, ready ? "true" : "false");
  buf_puts(b, "}");
  http_respond_json(c, s->shutting_down || !ready ? 503 : 200, b);
  buf_shrink(b, 65536);
}

/* Answer one complete request. rest: the bytes after it (an upgrade's
 * first frames). */
static void route(conn_t *c, http_req_t *r, const char *rest, size_t restlen) {
  srv_t *s = c->srv;
  size_t pl;
  const char *path = http_path(r, &pl);
  int m = http_method(r);
  if (c->over_limit) {
    http_error(c, 503, "too_many_connections", "connection limit reached");
    return;
  }
  if (path_is(path, pl, "/healthz")) {
    if (m != HTTP_GET && m != HTTP_HEAD)
      http_error_hdr(c, 405, "method_not_allowed", "use GET",
                     "Allow: GET, HEAD\r\n");
    else
      healthz(c);
    return;
  }
  if (s->shutting_down) {
    http_error(c, 503, "shutting_down", "server is shutting down");
    return;
  }
  if (path_is(path, pl, "/metrics")) {
    /* The API key, as the API: its counts include invisible users (an
     * outsider would learn someone is online while everyone is shown them
     * offline) and the instance's load. --metrics-open for a scrape on a
     * private port. */
    if (!s->cfg.metrics_open && api_require_key(c, r) != 0) return;
    if (m != HTTP_GET && m != HTTP_HEAD)
      http_error_hdr(c, 405, "method_not_allowed", "use GET",
                     "Allow: GET, HEAD\r\n");
    else
      metrics_handle(c, r);
    return;
  }
  if (path_is(path, pl, "/v1/ws")) {
    ws_upgrade(c, r, rest, restlen);
    return;
  }
  if (path_is(path, pl, "/v1/backend")) {
    backend_upgrade(c, r, rest, restlen);
    return;
  }
  if (path_has_prefix(path, pl, "/v1/demo/")) {
    if (s->cfg.demo)
      demo_handle(c, r);
    else
      http_error(c, 404, "not_found", "no such endpoint (demo mode is off)");
    return;
  }
  if (path_is(path, pl, "/v1") || path_has_prefix(path, pl, "/v1/")) {
    api_handle(c, r);
    return;
  }
  if (s->cfg.demo && (m == HTTP_GET || m == HTTP_HEAD)) {
    demo_handle(c, r);
    return;
  }
  http_error(c, 404, "not_found", "no such endpoint");
}

static void parse_error(conn_t *c, http_req_t *r) {
  r->close = 1;
  if (r->err_status && r->err_msg) {
    http_error(c, r->err_status, r->err_code, r->err_msg);
  } else if (r->err_status) {
    const char *msg = r->err_status == 431   ? "request headers too large"
                      : r->err_status == 413 ? "request body too large"
                      : r->err_status == 414 ? "request target too long"
                      : r->err_status == 408 ? "request not received in time"
                                             : "out of memory";
    http_error(c, r->err_status, r->err_code, msg);
  } else {
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    if (e == HPE_HEADER_OVERFLOW)
      http_error(c, 431, "headers_too_large", "request headers too large");
    else {
      char msg[160];
      snprintf(msg, sizeof msg, "malformed HTTP request: %s",
               http_errno_description(e));
      http_error(c, 400, "bad_request", msg);
    }
  }
  conn_close_after_flush(c);
}

void http_on_read(conn_t *c, const char *data, size_t len) {
  while (len > 0 && !c->closing && !c->close_after_flush &&
         c->kind == CONN_HTTP) {
    http_req_t *r = c->u.http;
    if (!r) {
      r = c->u.http = req_new(c);
      if (!r) {
        srv_error(c->srv, "out_of_memory", "cannot parse a request");
        conn_close(c);
        return;
      }
    }
    if (!r->started) {
      /* The request's time runs from its first byte, an empty line before
       * the request line included (RFC 9112 2.2 has them ignored): a client
       * sending CRLF after CRLF reset the idle timer with each and, never
       * starting a request, was never timed out. */
      r->started = 1;
      r->begun_ms = srv_now_mono(c->srv);
    }
    size_t body_at = 0; /* where this request's body starts in data */
    if (r->head_state != HEAD_DONE &&
        head_scan(r, data, len, &body_at) != 0) {
      parse_error(c, r);
      return;
    }
    if (r->method_pending) {
      /* http-parser gave up on the method before the request line's end
       * (a read cut "BR|EW / HTTP/1.1"): the parser is not called again,
       * and the line's next bytes, read by head_scan alone, tell 501 from
       * 400. The wait is bounded by --http-request-timeout-ms (408) and
       * the line's length by --max-header-bytes. */
      if (r->method_state != M_OK && r->method_state != M_BAD) return;
      if (r->method_state == M_OK) refuse_method(r);
      parse_error(c, r);
      return;
    }
    size_t n = http_parser_execute(&r->parser, &settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    if (e == HPE_INVALID_METHOD && !r->err_status &&
        r->method_state != M_BAD) {
      /* A method http-parser does not know, or the start of a request line
       * that may be one: head_scan has read all of data, so what it saw is
       * the whole story so far. */
      if (r->method_state != M_OK) {
        r->method_pending = 1;
        return;
      }
      refuse_method(r);
      parse_error(c, r);
      return;
    }
    if (e == HPE_PAUSED)
      http_parser_pause(&r->parser, 0);
    else if (e != HPE_OK || r->err_status) {
      parse_error(c, r);
      return;
    }
    if (n > len) n = len;
    if ((r->parser.flags & F_CHUNKED) && r->head_state == HEAD_DONE &&
        n > body_at && chunk_scan(r, data + body_at, n - body_at) != 0) {
      parse_error(c, r);
      return;
    }
    data += n;
    len -= n;
    if (r->want_continue) {
      static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
      r->want_continue = 0;
      /* A request already complete gets its final answer instead. */
      if (!r->complete && conn_write(c, cont, sizeof cont - 1) != 0) return;
    }
    if (!r->complete) {
      if (n == 0) break; /* nothing consumed and no error: wait for more */
      continue;
    }
    if (r->parser.upgrade) {
      /* Everything after an upgrade request belongs to the new protocol: a
       * refused one ends the connection, and its answer says so (set
       * before routing, since the answer is written inside it). */
      r->close = 1;
      route(c, r, data, len);
      if (c->kind == CONN_HTTP && !c->closing) conn_close_after_flush(c);
      return;
    }
    c->in_route = 1;
    route(c, r, NULL, 0);
    c->in_route = 0;
    if (c->closing || c->kind != CONN_HTTP)
      return; /* an event stream ignores further input */
    if (c->awaiting) {
      /* Answered later: pipelined bytes wait, and so does the socket, so
       * answers leave in request order. */
      if (len) {
        c->stash = malloc(len);
        if (!c->stash) {
          srv_error(c->srv, "out_of_memory", "cannot hold pipelined input");
          conn_close(c);
          return;
        }
        memcpy(c->stash, data, len);
        c->stash_len = len;
      }
      if (!c->capture) uv_read_stop((uv_stream_t *)&c->tcp);
      return;
    }
    if (r->close) {
      conn_close_after_flush(c);
      return;
    }
    req_reset(r);
  }
  /* Between requests a keep-alive connection keeps no request state. */
  http_req_t *r = c->kind == CONN_HTTP && !c->closing ? c->u.http : NULL;
  if (r && !r->started && r->arena_len == 0 && r->head_state == HEAD_START) {
    http_req_free(r);
    c->u.http = NULL;
  }
}

void http_defer(conn_t *c) {
  c->awaiting = 1;
  conn_ref(c);
}

void http_resume(conn_t *c) {
  if (!c->awaiting) return;
  c->awaiting = 0;
  if (c->in_route || c->closing || c->kind != CONN_HTTP) {
    /* Answered within the handler: http_on_read carries on as usual. */
    conn_unref(c);
    return;
  }
  http_req_t *r = c->u.http;
  if (!r || r->close) {
    conn_close_after_flush(c);
    conn_unref(c);
    return;
  }
  req_reset(r);
  char *d = c->stash;
  size_t n = c->stash_len;
  c->stash = NULL;
  c->stash_len = 0;
  if (!c->capture && conn_read_start(c) != 0)
    conn_close(c);
  else if (d)
    conn_feed(c, d, n);
  free(d);
  conn_unref(c);
}

void http_housekeeping(conn_t *c, int64_t now_mono) {
  http_req_t *r = c->u.http;
  if (!r || !r->started || r->complete) return;
  if (now_mono - r->begun_ms < (int64_t)c->srv->cfg.http_request_timeout_ms)
    return;
  /* Answered like a refused request: an error body, then a lingering close
   * so the client can read it. */
  r->err_status = 408;
  r->err_code = "request_timeout";
  parse_error(c, r);
}
