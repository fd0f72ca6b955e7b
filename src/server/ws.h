/* SPDX-License-Identifier: MIT */
/*
 * RFC 6455 WebSocket codec for the server side: handshake answer, incremental
 * frame parser with limits, incremental UTF-8 validation of text messages
 * across fragments, frame encoder. Pure: no I/O, no allocation except the
 * message reassembly buffer owned by the parser.
 */
#ifndef PRESENCED_WS_H
#define PRESENCED_WS_H

#include <stddef.h>
#include <stdint.h>

/* Close codes (RFC 6455 section 7.4, plus ours in 4000-4999). */
enum {
  WS_CLOSE_NORMAL = 1000,
  WS_CLOSE_GOING_AWAY = 1001,
  WS_CLOSE_PROTOCOL = 1002,
  WS_CLOSE_UNSUPPORTED = 1003,
  WS_CLOSE_INVALID_DATA = 1007, /* invalid UTF-8 in a text message */
  WS_CLOSE_POLICY = 1008,
  WS_CLOSE_TOO_BIG = 1009,
  WS_CLOSE_INTERNAL = 1011,
  /* Ours. */
  WS_CLOSE_AUTH = 4001,    /* token expired / session refused */
  WS_CLOSE_KICKED = 4003,  /* session kicked by a backend */
  WS_CLOSE_TIMEOUT = 4008, /* heartbeat lost */
  WS_CLOSE_RATE = 4029,    /* too many messages per second */
  WS_CLOSE_SLOW = 4030,    /* write queue over its limit */
  WS_CLOSE_LIMIT = 4031    /* sessions per user or other quota */
};

enum {
  WS_OP_CONT = 0x0,
  WS_OP_TEXT = 0x1,
  WS_OP_BINARY = 0x2,
  WS_OP_CLOSE = 0x8,
  WS_OP_PING = 0x9,
  WS_OP_PONG = 0xA
};

/* Sec-WebSocket-Accept for a client key: base64(SHA1(key + GUID)).
 * out must hold 29 bytes (28 + NUL). Returns 0, or -1 if the key is not a
 * base64 encoding of 16 bytes. */
int ws_accept_key(const char *client_key, size_t key_len, char out[29]);

typedef struct ws_limits {
  size_t max_frame;   /* payload bytes of one frame */
  size_t max_message; /* bytes of a reassembled message */
} ws_limits_t;

/* Used for a NULL limits pointer or a limit of 0. */
#define WS_DEFAULT_MAX_FRAME ((size_t)64 * 1024)
#define WS_DEFAULT_MAX_MESSAGE ((size_t)64 * 1024)

/* What the parser hands back, one at a time. */
typedef enum {
  WS_EV_NONE = 0, /* need more input */
  WS_EV_MESSAGE,  /* a complete text or binary message */
  WS_EV_PING,
  WS_EV_PONG,
  WS_EV_CLOSE, /* the peer's close frame; code 1005 if it had none */
  WS_EV_ERROR  /* protocol violation: close with ev->close_code */
} ws_event_kind_t;

typedef struct ws_event {
  ws_event_kind_t kind;
  int opcode;          /* WS_OP_TEXT / WS_OP_BINARY for messages */
  const uint8_t *data; /* payload; valid until the next ws_parse call */
  size_t len;
  uint16_t close_code; /* WS_EV_CLOSE: peer's code; WS_EV_ERROR: ours */
  const char *reason;  /* WS_EV_ERROR: why, for logs and close reason */
} ws_event_t;

typedef struct ws_parser ws_parser_t;

ws_parser_t *ws_parser_new(const ws_limits_t *limits);
void ws_parser_free(ws_parser_t *p);
/* Keep a message buffer of up to bytes between messages instead of the
 * default 16 KB (a backend connection sending 100 KB frames back to back:
 * freeing and reallocating the buffer per frame costs more than holding
 * one per connection). */
void ws_parser_keep_buffer(ws_parser_t *p, size_t bytes);

/*
 * Whether the parser is between messages holding nothing: at a frame
 * boundary, no fragmented message under way, no buffer of its own (a
 * reassembly or control buffer kept from the last call is freed here, so
 * call it only once the last event's data is no longer used). Such a
 * parser carries no state a connection needs: wsconn.c then gives it back
 * to the server's spare and the idle connection holds no parser at all.
 * Returns 1 when idle (and stripped), 0 otherwise (nothing changed).
 */
int ws_parser_release_idle(ws_parser_t *p);

/*
 * Feed bytes from the client. Consumes input until one event is complete (or
 * the input is exhausted) and returns how many bytes it consumed; *ev says
 * what happened. Call again with the rest of the input until it returns 0
 * with WS_EV_NONE. After WS_EV_ERROR or WS_EV_CLOSE the parser accepts
 * nothing more. Server side: frames must be masked, control frames must be
 * final and at most 125 bytes, reserved bits and opcodes are refused,
 * text messages must be valid UTF-8 (checked incrementally, so a bad byte is
 * refused with 1007 as soon as it arrives, even mid-fragment).
 */
size_t ws_parse(ws_parser_t *p, const uint8_t *in, size_t len, ws_event_t *ev);

/*
 * Details of both parse functions: on WS_EV_ERROR the count consumed ends
 * with the byte that proved the error, so it does not depend on how the
 * input was split; later calls return 0 with WS_EV_NONE. ev->data is never
 * NULL (it may point to zero bytes). A WS_EV_CLOSE event carries the reason
 * in data/len, already checked to be UTF-8. Close codes accepted from the
 * peer: 1000-1003, 1007-1014, 3000-4999.
 */

/*
 * Same as ws_parse, but unmasks payloads in place in `in`, so that a final
 * unfragmented data frame lying whole in `in` is delivered straight from it
 * without a copy (ev->data then points into `in`: keep those bytes until the
 * next call). Other payloads go through the parser's reassembly buffer as
 * with ws_parse. The bytes consumed are left unmasked. Both functions may be
 * mixed on one parser. This is the one to use on a connection's read buffer.
 */
size_t ws_parse_inplace(ws_parser_t *p, uint8_t *in, size_t len,
                        ws_event_t *ev);

/* Encode one unmasked server frame header into out (at most 10 bytes);
 * returns the header length. The payload follows it unchanged. */
size_t ws_frame_header(uint8_t out[10], int opcode, int fin,
                       size_t payload_len);

/* A close frame payload: code in network order plus reason (truncated to
 * 123 bytes). Returns the payload length (at most 125). */
size_t ws_close_payload(uint8_t out[125], uint16_t code, const char *reason);

/* Incremental UTF-8 validation (also used for ids and JSON strings).
 * state starts at 0; returns 0 while valid so far, -1 on an invalid byte.
 * utf8_complete(state) says whether the input ended on a code point
 * boundary. */
int utf8_feed(uint32_t *state, const uint8_t *s, size_t n);
int utf8_complete(uint32_t state);

#endif
