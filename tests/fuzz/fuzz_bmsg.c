/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the backend frame decoder (src/server/bmsg.c), the
 * code every frame of GET /v1/backend goes through in backend.c.
 *
 * Input: byte 0 picks max_ops, the rest is one frame. Checks: the result
 * codes, that an error names one of the protocol's codes, that an accepted
 * frame holds what its handler needs (a seq in range, an item array within
 * max_ops), and that every item decodes to a complete op or to one of the
 * per-op codes with a message.
 */
#include "server/bmsg.h"

#include <stdlib.h>
#include <string.h>

static int in(const char *c, const char *const *codes) {
  for (int i = 0; codes[i]; i++)
    if (!strcmp(c, codes[i])) return 1;
  return 0;
}

static const char *const frame_codes[] = {"bad_json", "unknown_type",
                                          "bad_field", NULL};
static const char *const op_codes[] = {
    "bad_op",    "bad_session_id", "bad_user_id", "bad_status",
    "bad_meta",  "bad_device",     "bad_channel", "bad_data", NULL};

/* meta and data as backend.c passes them on (bop_json: the backend's own
 * text, compact): one JSON object every reader takes, no raw control
 * byte (cJSON reads one as whitespace; a NUL would cut it short). */
static void check_text(const bop_t *op, const cJSON *v) {
  if (!v) return;
  char *t = bop_json(op, v);
  if (!t) return; /* out of memory */
  for (const char *p = t; *p; p++)
    if ((unsigned char)*p < 0x20) abort();
  cJSON *j = cJSON_Parse(t);
  if (!cJSON_IsObject(j)) abort();
  cJSON_Delete(j);
  free(t);
}

static void check_op(const bop_t *op) {
  if (!op->session || presence_id_check(op->session) != 0) abort();
  switch (op->kind) {
  case BOP_OPEN:
    if (!op->user || presence_id_check(op->user) != 0) abort();
    if (op->meta && !cJSON_IsObject(op->meta)) abort();
    check_text(op, op->meta);
    if (op->device && (!*op->device || strlen(op->device) > BMSG_DEVICE_MAX))
      abort();
    break;
  case BOP_STATUS:
    if (op->status != PRESENCE_ONLINE && op->status != PRESENCE_IDLE) abort();
    break;
  case BOP_CLOSE:
    break;
  case BOP_JOIN:
  case BOP_UPDATE:
  case BOP_LEAVE:
    if (!op->channel || presence_id_check(op->channel) != 0) abort();
    if (op->data && !cJSON_IsObject(op->data)) abort();
    check_text(op, op->data);
    break;
  default:
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const uint32_t limits[] = {1, 3, 100, 10000};
  uint32_t max_ops = limits[data[0] & 3];
  data++;
  size--;
  /* A heap copy of exactly size bytes: ASan sees any read past the end. */
  uint8_t *msg = malloc(size ? size : 1);
  if (!msg) return 0;
  memcpy(msg, data, size);
  bmsg_t m;
  int rc = bmsg_decode(msg, size, max_ops, &m);
  if (strlen(m.id) > 64) abort();
  switch (rc) {
  case BMSG_OK:
    if (!m.root || m.err_code) abort();
    if (m.type == BMSG_BATCH || m.type == BMSG_SYNC) {
      if (!m.has_seq || (double)m.seq > BMSG_SEQ_MAX) abort();
      if (!cJSON_IsArray(m.items) || m.n_items > max_ops ||
          (uint32_t)cJSON_GetArraySize(m.items) != m.n_items)
        abort();
      const cJSON *item;
      cJSON_ArrayForEach(item, m.items) {
        bop_t op;
        if (bmsg_op(&m, item, &op) == 0) {
          if (op.err_code) abort();
          if (m.type == BMSG_SYNC && op.kind != BOP_OPEN) abort();
          check_op(&op);
        } else if (!op.err_code || !in(op.err_code, op_codes) ||
                   !op.err_msg || !*op.err_msg) {
          abort();
        }
      }
    } else if (m.type != BMSG_PING && m.type != BMSG_BYE) {
      abort();
    }
    break;
  case BMSG_BAD:
    if (!m.err_code || !in(m.err_code, frame_codes) || !m.err_msg[0]) abort();
    break;
  case BMSG_TOO_MANY:
    if (strcmp(m.err_code, "too_many_ops") || !m.has_seq) abort();
    break;
  default:
    abort();
  }
  bmsg_free(&m);
  free(msg);
  return 0;
}
