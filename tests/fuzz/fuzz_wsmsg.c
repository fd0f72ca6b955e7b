/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the client message decoder (src/server/wsmsg.c),
 * the code every WebSocket text frame goes through in wsconn.c.
 *
 * Input: byte 0 picks max_users, the rest is one message (already valid
 * UTF-8 or not: ws.c refuses invalid UTF-8 before this, but the decoder must
 * not depend on that for memory safety). Checks: the result codes, that an
 * error names one of the protocol's codes, that the id echoed back is
 * bounded JSON, that a decoded message holds what its handler needs, and
 * that wsmsg_decode (a status change read without a cJSON tree) answers
 * what wsmsg_decode_full answers.
 */
#include "server/wsmsg.h"

#include <stdlib.h>
#include <string.h>

static int known_code(const char *c) {
  static const char *codes[] = {"bad_json",   "unknown_type", "bad_field",
                                "bad_status", "bad_user_id",  "bad_availability",
                                "bad_message", "bad_expiry", "bad_channel",
                                "bad_data", "internal", NULL};
  for (int i = 0; codes[i]; i++)
    if (!strcmp(c, codes[i])) return 1;
  return 0;
}

/* Text passed on as the client wrote it (the id echoed back, a channel
 * member's data) is JSON every reader takes: no raw control byte (cJSON
 * would read one as whitespace, others refuse it, a NUL cuts it short) and
 * one whole value of the expected kind. */
static void check_json(const char *s, int object) {
  for (const char *p = s; *p; p++)
    if ((unsigned char)*p < 0x20) abort();
  cJSON *j = cJSON_Parse(s);
  if (!j || (object ? !cJSON_IsObject(j)
                    : !cJSON_IsString(j) && !cJSON_IsNumber(j)))
    abort();
  cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const uint32_t limits[] = {1, 5, 1000, 1000000};
  uint32_t max_users = limits[data[0] & 3];
  data++;
  size--;
  /* A heap copy of exactly size bytes: ASan sees any read past the end. */
  uint8_t *msg = malloc(size ? size : 1);
  if (!msg) return 0;
  memcpy(msg, data, size);
  wsmsg_t m, full;
  int rc = wsmsg_decode(msg, size, max_users, &m);
  if (strlen(m.id) > 64) abort();
  /* The status change read without a tree answers what the full decoder
   * answers: the same result, type, status, id and error. */
  int rc_full = wsmsg_decode_full(msg, size, max_users, &full);
  if (rc != rc_full || strcmp(m.id, full.id) != 0) abort();
  if (rc == WSMSG_OK && (m.type != full.type || m.status != full.status))
    abort();
  if (rc != WSMSG_OK && strcmp(m.err_code, full.err_code) != 0) abort();
  if (rc == WSMSG_OK && !m.root && m.type != WSMSG_STATUS) abort();
  if (m.id[0]) check_json(m.id, 0);
  if (rc == WSMSG_OK && m.data) check_json(m.data, 1);
  wsmsg_free(&full);
  switch (rc) {
  case WSMSG_OK:
    if (m.err_code) abort();
    if (m.type == WSMSG_STATUS) {
      if (m.status != PRESENCE_ONLINE && m.status != PRESENCE_IDLE) abort();
    } else if (m.type == WSMSG_SUBSCRIBE || m.type == WSMSG_UNSUBSCRIBE) {
      if (!cJSON_IsArray(m.users)) abort();
      if (m.type == WSMSG_SUBSCRIBE &&
          (uint32_t)cJSON_GetArraySize(m.users) > max_users)
        abort();
      const cJSON *u;
      cJSON_ArrayForEach(u, m.users) {
        if (!cJSON_IsString(u) || presence_id_check(u->valuestring) != 0)
          abort();
      }
    } else if (m.type == WSMSG_TOKEN) {
      /* A refresh: a non-empty string the JWT check gets whole. */
      if (!m.token || !m.token_len || strlen(m.token) != m.token_len) abort();
    } else if (m.type == WSMSG_AVAILABILITY) {
      if ((unsigned)m.setting.availability >= PRESENCE_AVAIL_COUNT_) abort();
    } else if (m.type == WSMSG_MESSAGE) {
      /* What the library gets: UTF-8 without control characters, an
       * expiry of one form at most, in range. */
      const wsmsg_setting_t *st = &m.setting;
      if (presence_message_check(st->text, st->emoji, UINT32_MAX / 8) != 0)
        abort();
      if (st->expires_in_s && st->expires_at_ms) abort();
      if (st->expires_in_s < 0 || st->expires_in_s > WSMSG_EXPIRES_IN_MAX ||
          st->expires_at_ms < 0)
        abort();
    } else if (m.type >= WSMSG_JOIN && m.type <= WSMSG_MEMBERS) {
      /* A channel name the library takes; data only where it belongs, as
       * compact JSON of an object. */
      if (!m.channel || presence_channel_check(m.channel) != 0) abort();
      if (m.data && (m.type != WSMSG_JOIN && m.type != WSMSG_UPDATE)) abort();
      if (m.data && m.data[0] != '{') abort();
      /* A page's cursor only on members, and a user id the store takes. */
      if (m.after && (m.type != WSMSG_MEMBERS || presence_id_check(m.after)))
        abort();
    } else if (m.type != WSMSG_PING) {
      abort();
    }
    break;
  case WSMSG_BAD:
    if (!m.err_code || !known_code(m.err_code) || !m.err_msg[0]) abort();
    break;
  case WSMSG_TOO_MANY:
    if (m.type != WSMSG_SUBSCRIBE || strcmp(m.err_code, "too_many_watched"))
      abort();
    break;
  default:
    abort();
  }
  wsmsg_free(&m);
  free(msg);
  return 0;
}
