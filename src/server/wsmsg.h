/* SPDX-License-Identifier: MIT */
/*
 * Decoding of client messages (docs/protocol.md section 1.2): one text frame
 * holding one JSON object. Pure: no connection, no server state, so the
 * daemon (wsconn.c) and the fuzzer run exactly the same checks, in the
 * order the protocol gives the errors.
 */
#ifndef PRESENCED_WSMSG_H
#define PRESENCED_WSMSG_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "presence.h"

typedef enum {
  WSMSG_STATUS = 1,
  WSMSG_SUBSCRIBE,
  WSMSG_UNSUBSCRIBE,
  WSMSG_PING,
  WSMSG_TOKEN, /* a fresh token for the live session (token refresh) */
  WSMSG_AVAILABILITY, /* status that people set (protocol.md section 6) */
  WSMSG_MESSAGE,
  /* Channels (docs/protocol.md section 4). */
  WSMSG_JOIN,
  WSMSG_UPDATE,
  WSMSG_LEAVE,
  WSMSG_OBSERVE,
  WSMSG_UNOBSERVE,
  /* The next page of a channel's members (joined or observed): a snapshot
   * shows only the first --channel-page of them. */
  WSMSG_MEMBERS
} wsmsg_type_t;

/* Status that people set, as the WebSocket messages and the HTTP API both
 * carry it (docs/protocol.md section 6). The shape is checked here; the
 * content (length in characters, expiry against the clock) by the library,
 * which alone knows the configured limit and the time. */
typedef struct wsmsg_setting {
  int availability;      /* AVAILABILITY: a presence_availability_t */
  const char *text;      /* MESSAGE: NULL when absent or null; in root */
  const char *emoji;     /* the same */
  int64_t expires_in_s;  /* 0: not given (1..WSMSG_EXPIRES_IN_MAX) */
  int64_t expires_at_ms; /* 0: not given */
} wsmsg_setting_t;

#define WSMSG_EXPIRES_IN_MAX 34560000 /* 400 days, in seconds */

enum {
  WSMSG_OK = 0,
  WSMSG_BAD = -1,     /* malformed: counts towards the 1008 budget */
  WSMSG_TOO_MANY = -2 /* subscribe over max_users: refused, not malformed */
};

typedef struct wsmsg {
  cJSON *root;        /* the parsed object (NULL for a status change read
                         without a tree); released by wsmsg_free */
  int type;           /* wsmsg_type_t, on WSMSG_OK */
  char id[80];        /* the "id" rendered as JSON, "" when absent or invalid */
  int status;         /* WSMSG_STATUS: PRESENCE_ONLINE or PRESENCE_IDLE */
  const cJSON *users; /* (UN)SUBSCRIBE: an array of valid ids, in root */
  const char *token;  /* TOKEN: the JWT (a non-empty string in root) */
  size_t token_len;
  wsmsg_setting_t setting; /* AVAILABILITY, MESSAGE */
  const char *channel; /* channel messages: a valid channel name, in root */
  char *data;          /* JOIN, UPDATE: "data" as compact JSON (malloc'd;
                          NULL for null or absent), the client's own text */
  const uint8_t *src;  /* the message's text, during wsmsg_decode only */
  size_t src_len;
  int no_snapshot;     /* JOIN: "snapshot":false, answered by an ack */
  const char *after;   /* MEMBERS: the page starts after this user id (a
                          valid id, in root); NULL: from the first member */
  const char *err_code; /* otherwise: the protocol's error code ... */
  char err_msg[200];    /* ... and message */
} wsmsg_t;

/*
 * Decode data[0..len) into *m. max_users bounds the "users" of a subscribe
 * before any id in it is looked at (the work per message stays bounded).
 * Returns WSMSG_OK, WSMSG_BAD or WSMSG_TOO_MANY; in every case call
 * wsmsg_free(m) afterwards.
 */
int wsmsg_decode(const uint8_t *data, size_t len, uint32_t max_users,
                 wsmsg_t *m);
/* The same through the full decoder always (a cJSON tree in m->root):
 * wsmsg_decode reads the plain status change without one, and answers
 * exactly what this would (the fuzzer and test_srv_wsmsg compare them). */
int wsmsg_decode_full(const uint8_t *data, size_t len, uint32_t max_users,
                      wsmsg_t *m);
void wsmsg_free(wsmsg_t *m);

/* The fields of an availability or a message setting in obj (a message's
 * "type" is not looked at), into m->setting; on failure m->err_code is
 * bad_availability, bad_message or bad_expiry. WSMSG_OK or WSMSG_BAD. */
int wsmsg_decode_availability(const cJSON *obj, wsmsg_t *m);
int wsmsg_decode_message(const cJSON *obj, wsmsg_t *m);

#endif
