/* SPDX-License-Identifier: MIT */
/*
 * Backend frame decoding; see bmsg.h and docs/protocol.md section 5. The
 * envelope's checks come in the protocol's order: bad_json, then the type,
 * then NUL escapes, then seq, then the item array and its length.
 */
#include "server/bmsg.h"
#include "server/json_keys.h"
#include "server/wsmsg.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int bad(bmsg_t *m, const char *code, const char *msg) {
  m->err_code = code;
  snprintf(m->err_msg, sizeof m->err_msg, "%s", msg);
  return BMSG_BAD;
}

/* seq: an integer in 0..2^53 - 1 (BMSG_SEQ_MAX). */
static int read_seq(bmsg_t *m) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(m->root, "seq");
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) ||
      v->valuedouble > BMSG_SEQ_MAX ||
      floor(v->valuedouble) != v->valuedouble)
    return bad(m, "bad_field", "seq must be an integer from 0 to 2^53 - 1");
  m->seq = (uint64_t)v->valuedouble;
  m->has_seq = 1;
  return BMSG_OK;
}

static int read_items(bmsg_t *m, const char *name, uint32_t max_ops) {
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(m->root, name);
  if (!cJSON_IsArray(a)) {
    m->err_code = "bad_field";
    snprintf(m->err_msg, sizeof m->err_msg, "%s must be an array", name);
    return BMSG_BAD;
  }
  /* Counted before any item is looked at: the work stays bounded. */
  int n = cJSON_GetArraySize(a);
  if (n < 0 || (uint32_t)n > max_ops) {
    m->err_code = "too_many_ops";
    snprintf(m->err_msg, sizeof m->err_msg, "at most %u items in one frame",
             max_ops);
    return BMSG_TOO_MANY;
  }
  m->items = a;
  m->n_items = (uint32_t)n;
  return BMSG_OK;
}

int bmsg_decode(const uint8_t *data, size_t len, uint32_t max_ops, bmsg_t *m) {
  memset(m, 0, sizeof *m);
  m->src = data;
  m->src_len = len;
  m->root = json_parse_one_object(data, len);
  if (!m->root) return bad(m, "bad_json", "frame is not one JSON object");
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(m->root, "type");
  const char *t = cJSON_IsString(type) ? type->valuestring : NULL;
  if (!t) return bad(m, "unknown_type", "type is missing");
  if (!strcmp(t, "batch"))
    m->type = BMSG_BATCH;
  else if (!strcmp(t, "sync"))
    m->type = BMSG_SYNC;
  else if (!strcmp(t, "ping"))
    m->type = BMSG_PING;
  else if (!strcmp(t, "bye"))
    m->type = BMSG_BYE;
  else
    return bad(m, "unknown_type", "unknown frame type");
  if (json_has_escaped_nul(data, len))
    return bad(m, "bad_field", "strings must not contain NUL (\\u0000)");
  if (m->type == BMSG_PING) {
    const cJSON *idv = cJSON_GetObjectItemCaseSensitive(m->root, "id");
    char id[sizeof m->id];
    if (idv && ((!cJSON_IsString(idv) && !cJSON_IsNumber(idv)) ||
                !cJSON_PrintPreallocated((cJSON *)idv, id, sizeof id - 5, 0) ||
                strlen(id) > 64))
      return bad(m, "bad_field",
                 "id must be a string or a number of at most 64 bytes");
    if (idv) memcpy(m->id, id, sizeof id);
    return BMSG_OK;
  }
  if (m->type == BMSG_BYE) return BMSG_OK;
  int rc = read_seq(m);
  if (rc != BMSG_OK) return rc;
  if (m->type == BMSG_SYNC) {
    const cJSON *done = cJSON_GetObjectItemCaseSensitive(m->root, "done");
    if (done && !cJSON_IsBool(done))
      return bad(m, "bad_field", "done must be true or false");
    m->done = cJSON_IsTrue(done);
    return read_items(m, "sessions", max_ops);
  }
  return read_items(m, "ops", max_ops);
}

/* ---- items ------------------------------------------------------------- */

static int op_bad(bop_t *op, const char *code, const char *msg) {
  op->err_code = code;
  op->err_msg = msg;
  return -1;
}

static const char *str_field(const cJSON *item, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, name);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int op_kind(const char *name) {
  static const struct {
    const char *name;
    int kind;
  } kinds[] = {{"open", BOP_OPEN},   {"status", BOP_STATUS},
               {"close", BOP_CLOSE}, {"join", BOP_JOIN},
               {"update", BOP_UPDATE}, {"leave", BOP_LEAVE}};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (!strcmp(name, kinds[i].name)) return kinds[i].kind;
  return 0;
}

char *bop_json(const bop_t *op, const cJSON *v) {
  if (!v) return NULL;
  return json_source_compact(op->msg->src, op->msg->src_len, op->msg->root, v,
                             NULL);
}

int bmsg_op(const bmsg_t *m, const cJSON *item, bop_t *op) {
  memset(op, 0, sizeof *op);
  op->msg = m;
  if (!cJSON_IsObject(item)) return op_bad(op, "bad_op", "item is not an object");
  if (m->type == BMSG_SYNC) {
    op->kind = BOP_OPEN;
    op->from_sync = 1;
  } else {
    const char *name = str_field(item, "op");
    op->kind = name ? op_kind(name) : 0;
    if (!op->kind) return op_bad(op, "bad_op", "op missing or unknown");
  }
  const cJSON *sv = cJSON_GetObjectItemCaseSensitive(item, "session");
  if (!cJSON_IsString(sv)) return op_bad(op, "bad_op", "session must be a string");
  if (presence_id_check(sv->valuestring) != 0)
    return op_bad(op, "bad_session_id", "session is not a valid id");
  op->session = sv->valuestring;
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(item, "status");
  if (st && (op->kind == BOP_OPEN || op->kind == BOP_STATUS)) {
    presence_status_t s;
    if (!cJSON_IsString(st)) return op_bad(op, "bad_op", "status must be a string");
    if (presence_status_parse(st->valuestring, &s) != 0 || s == PRESENCE_OFFLINE)
      return op_bad(op, "bad_status", "status must be online or idle");
    op->status = (int)s;
  }
  switch (op->kind) {
  case BOP_OPEN: {
    const cJSON *uv = cJSON_GetObjectItemCaseSensitive(item, "user");
    if (!cJSON_IsString(uv)) return op_bad(op, "bad_op", "user must be a string");
    if (presence_id_check(uv->valuestring) != 0)
      return op_bad(op, "bad_user_id", "user is not a valid id");
    op->user = uv->valuestring;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(item, "meta");
    if (meta && !cJSON_IsNull(meta)) {
      if (!cJSON_IsObject(meta)) return op_bad(op, "bad_meta", "meta must be an object");
      op->meta = meta;
    }
    const cJSON *dv = cJSON_GetObjectItemCaseSensitive(item, "device");
    if (dv && !cJSON_IsNull(dv)) {
      if (!cJSON_IsString(dv) || presence_device_check(dv->valuestring) != 0)
        return op_bad(op, "bad_device",
                      "device must be 1..32 letters, digits, '-', '_' or '.'");
      op->device = dv->valuestring;
    }
    return 0;
  }
  case BOP_STATUS:
    if (!op->status) return op_bad(op, "bad_op", "status is missing");
    return 0;
  case BOP_CLOSE:
    return 0;
  default: { /* JOIN, UPDATE, LEAVE */
    const cJSON *cv = cJSON_GetObjectItemCaseSensitive(item, "channel");
    if (!cJSON_IsString(cv) || presence_id_check(cv->valuestring) != 0 ||
        strlen(cv->valuestring) > PRESENCE_CHANNEL_MAX)
      return op_bad(op, "bad_channel", "channel is not a valid channel name");
    op->channel = cv->valuestring;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(item, "data");
    if (op->kind != BOP_LEAVE && data && !cJSON_IsNull(data)) {
      if (!cJSON_IsObject(data)) return op_bad(op, "bad_data", "data must be an object");
      op->data = data;
    }
    return 0;
  }
  }
}

void bmsg_free(bmsg_t *m) {
  cJSON_Delete(m->root);
  m->root = NULL;
  m->items = NULL;
}
