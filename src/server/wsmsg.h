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
  WSMSG_TOKEN /* a fresh token for the live session (token refresh) */
} wsmsg_type_t;

enum {
  WSMSG_OK = 0,
  WSMSG_BAD = -1,     /* malformed: counts towards the 1008 budget */
  WSMSG_TOO_MANY = -2 /* subscribe over max_users: refused, not malformed */
};

typedef struct wsmsg {
  cJSON *root;        /* the parsed object; released by wsmsg_free */
  int type;           /* wsmsg_type_t, on WSMSG_OK */
  char id[80];        /* the "id" rendered as JSON, "" when absent or invalid */
  int status;         /* WSMSG_STATUS: PRESENCE_ONLINE or PRESENCE_IDLE */
  const cJSON *users; /* (UN)SUBSCRIBE: an array of valid ids, in root */
  const char *token;  /* TOKEN: the JWT (a non-empty string in root) */
  size_t token_len;
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
void wsmsg_free(wsmsg_t *m);

#endif
