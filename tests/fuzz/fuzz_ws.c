/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the WebSocket frame parser (src/server/ws.c).
 *
 * Input: byte 0 picks the limits, byte 1 the way the rest is cut into
 * reads; the rest is what a client sends after the upgrade. Besides memory
 * errors (ASan/UBSan), it checks the contract of ws.h that the daemon relies
 * on: ws_parse on the whole input and ws_parse_inplace on pieces give the
 * same events at the same input offsets, an error consumes up to the byte
 * that proved it, and nothing comes after an error or a close.
 */
#include "server/ws.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 4096

typedef struct rec {
  int kind, opcode;
  uint16_t close_code;
  size_t len, at;
  uint64_t hash;
} rec_t;

static uint64_t fnv(const uint8_t *d, size_t n) {
  uint64_t h = 1469598103934665603u;
  for (size_t i = 0; i < n; i++)
    h = (h ^ d[i]) * 1099511628211u;
  return h;
}

/* Feed in pieces given by cut(); returns the number of events recorded. */
static size_t run(const ws_limits_t *lim, uint8_t *in, size_t len,
                  unsigned split, int inplace, rec_t *out) {
  ws_parser_t *p = ws_parser_new(lim);
  if (!p) abort();
  size_t nev = 0, off = 0;
  unsigned seed = split * 2654435761u + 1;
  while (off < len && nev < MAX_EVENTS) {
    size_t piece;
    if (split == 0) {
      piece = len - off; /* all at once */
    } else if (split < 8) {
      piece = split; /* fixed small reads */
    } else {
      seed = seed * 1103515245u + 12345u;
      piece = 1 + (seed >> 16) % 97; /* pseudo-random reads */
    }
    if (piece > len - off) piece = len - off;
    size_t used = 0;
    for (;;) {
      ws_event_t ev;
      size_t n = inplace
                     ? ws_parse_inplace(p, in + off + used, piece - used, &ev)
                     : ws_parse(p, in + off + used, piece - used, &ev);
      if (n > piece - used) abort(); /* consumed more than it was given */
      if (!ev.data) abort();         /* ws.h: never NULL */
      used += n;
      if (ev.kind != WS_EV_NONE) {
        rec_t *r = &out[nev++];
        r->kind = ev.kind;
        r->opcode = ev.kind == WS_EV_MESSAGE ? ev.opcode : 0;
        r->close_code = ev.kind >= WS_EV_CLOSE ? ev.close_code : 0;
        r->len = ev.len;
        r->hash = ev.kind == WS_EV_ERROR ? 0 : fnv(ev.data, ev.len);
        r->at = off + used;
        if (ev.kind == WS_EV_ERROR) {
          /* ws.h: an error closes with a code we may send. */
          if (ev.close_code != WS_CLOSE_PROTOCOL &&
              ev.close_code != WS_CLOSE_INVALID_DATA &&
              ev.close_code != WS_CLOSE_TOO_BIG &&
              ev.close_code != WS_CLOSE_INTERNAL)
            abort();
          if (!ev.reason) abort();
        }
        if (ev.kind == WS_EV_MESSAGE && ev.len > lim->max_message) abort();
        if (nev == MAX_EVENTS) break;
        continue;
      }
      if (n == 0 || used == piece) break;
    }
    off += piece;
    if (nev && (out[nev - 1].kind == WS_EV_ERROR ||
                out[nev - 1].kind == WS_EV_CLOSE)) {
      /* Done: the parser must take nothing more. */
      ws_event_t ev;
      uint8_t junk[3] = {0x81, 0x80, 0};
      if (ws_parse(p, junk, sizeof junk, &ev) != 0 || ev.kind != WS_EV_NONE)
        abort();
      break;
    }
  }
  ws_parser_free(p);
  return nev;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  static rec_t a[MAX_EVENTS], b[MAX_EVENTS];
  /* Small limits reach the size checks with small inputs; 0 means the
   * codec's defaults. */
  static const size_t frames[] = {0, 125, 126, 200, 1024, 65535, 65536, 70000};
  ws_limits_t lim = {frames[data[0] & 7], frames[data[0] >> 3 & 7]};
  if (lim.max_message && lim.max_frame > lim.max_message)
    lim.max_message = lim.max_frame; /* config.c refuses the opposite */
  ws_limits_t eff = lim;
  if (!eff.max_frame) eff.max_frame = WS_DEFAULT_MAX_FRAME;
  if (!eff.max_message) eff.max_message = WS_DEFAULT_MAX_MESSAGE;
  unsigned split = data[1];
  data += 2;
  size -= 2;

  uint8_t *copy = malloc(size ? size : 1);
  if (!copy) return 0;
  memcpy(copy, data, size);
  size_t na = run(&eff, copy, size, 0, 0, a);
  memcpy(copy, data, size);
  size_t nb = run(&eff, copy, size, split, 1, b);
  free(copy);
  if (na != nb) abort();
  for (size_t i = 0; i < na; i++)
    if (a[i].kind != b[i].kind || a[i].opcode != b[i].opcode ||
        a[i].close_code != b[i].close_code || a[i].len != b[i].len ||
        a[i].hash != b[i].hash || a[i].at != b[i].at)
      abort();
  return 0;
}
