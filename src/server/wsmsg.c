/* SPDX-License-Identifier: MIT */
/*
 * Client message decoding; see wsmsg.h. The checks and their order are the
 * protocol's (docs/protocol.md 1.3): bad_json, then the id, then the type,
 * then NUL escapes, then the fields of the type.
 */
#include "server/wsmsg.h"

#include "server/json_keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bad(wsmsg_t *m, const char *code, const char *msg) {
  m->err_code = code;
  snprintf(m->err_msg, sizeof m->err_msg, "%s", msg);
  return WSMSG_BAD;
}

/* users must be an array of valid ids. */
static int check_users(wsmsg_t *m, const cJSON *users) {
  if (!cJSON_IsArray(users))
    return bad(m, "bad_field", "users must be an array of user ids");
  int i = 0;
  const cJSON *u;
  cJSON_ArrayForEach(u, users) {
    if (!cJSON_IsString(u)) {
      m->err_code = "bad_field";
      snprintf(m->err_msg, sizeof m->err_msg, "users[%d] is not a string", i);
      return WSMSG_BAD;
    }
    if (presence_id_check(u->valuestring) != 0) {
      m->err_code = "bad_user_id";
      snprintf(m->err_msg, sizeof m->err_msg,
               "users[%d] is not a valid user id", i);
      return WSMSG_BAD;
    }
    i++;
  }
  m->users = users;
  return WSMSG_OK;
}

static int decode_status(wsmsg_t *m) {
  const cJSON *st = cJSON_GetObjectItemCaseSensitive(m->root, "status");
  if (!cJSON_IsString(st))
    return bad(m, "bad_field", "status must be \"online\" or \"idle\"");
  presence_status_t status;
  if (presence_status_parse(st->valuestring, &status) != 0 ||
      status == PRESENCE_OFFLINE)
    return bad(m, "bad_status", "status must be \"online\" or \"idle\"");
  m->status = (int)status;
  return WSMSG_OK;
}

int wsmsg_decode_availability(const cJSON *obj, wsmsg_t *m) {
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, "availability");
  presence_availability_t av;
  if (!cJSON_IsString(a) || presence_availability_parse(a->valuestring, &av))
    return bad(m, "bad_availability",
               "availability must be \"auto\", \"dnd\", \"away\" or "
               "\"invisible\"");
  m->setting.availability = (int)av;
  return WSMSG_OK;
}

/* An optional string: absent or null is none; anything else but a string
 * is refused. The content is the library's to judge. */
static int opt_string(wsmsg_t *m, const cJSON *obj, const char *key,
                      const char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  *out = NULL;
  if (!v || cJSON_IsNull(v)) return WSMSG_OK;
  if (!cJSON_IsString(v)) {
    m->err_code = "bad_message";
    snprintf(m->err_msg, sizeof m->err_msg, "%s must be a string", key);
    return WSMSG_BAD;
  }
  *out = v->valuestring;
  return WSMSG_OK;
}

/* A whole number in [lo, hi], or absent (0). */
static int opt_whole(const cJSON *obj, const char *key, double lo, double hi,
                     int64_t *out, int *given) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  *out = 0;
  *given = v && !cJSON_IsNull(v);
  if (!*given) return 0;
  if (!cJSON_IsNumber(v)) return -1;
  double d = v->valuedouble;
  if (!(d >= lo && d <= hi) || d != (double)(int64_t)d) return -1;
  *out = (int64_t)d;
  return 0;
}

int wsmsg_decode_message(const cJSON *obj, wsmsg_t *m) {
  wsmsg_setting_t *st = &m->setting;
  if (opt_string(m, obj, "text", &st->text) ||
      opt_string(m, obj, "emoji", &st->emoji))
    return WSMSG_BAD;
  /* Shape only here (UTF-8 and control characters; the length is the
   * configured limit's, checked by the library). */
  if (presence_message_check(st->text, st->emoji, UINT32_MAX / 8) != 0)
    return bad(m, "bad_message",
               "text and emoji must be UTF-8 without control characters, "
               "emoji at most 64 bytes");
  int in_given, at_given;
  if (opt_whole(obj, "expires_in", 1, WSMSG_EXPIRES_IN_MAX, &st->expires_in_s,
                &in_given) ||
      opt_whole(obj, "expires_at", 1, 9007199254740991.0, &st->expires_at_ms,
                &at_given))
    return bad(m, "bad_expiry",
               "expires_in must be whole seconds in 1..34560000 (400 days), "
               "expires_at a time in ms since the epoch");
  if (in_given && at_given)
    return bad(m, "bad_expiry", "give expires_in or expires_at, not both");
  return WSMSG_OK;
}

/* "channel": a string naming a valid channel. */
static int decode_channel(wsmsg_t *m) {
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(m->root, "channel");
  if (!cJSON_IsString(ch) || presence_channel_check(ch->valuestring) != 0)
    return bad(m, "bad_channel",
               "channel must be 1..128 bytes of UTF-8 without control "
               "characters");
  m->channel = ch->valuestring;
  return WSMSG_OK;
}

/* "data": a JSON object or null (absent: null, unless required). Kept as
 * compact JSON: stored verbatim and sent back as is. */
static int decode_data(wsmsg_t *m, int required) {
  const cJSON *d = cJSON_GetObjectItemCaseSensitive(m->root, "data");
  if (!d) {
    if (required) return bad(m, "bad_data", "data is required (null clears)");
    return WSMSG_OK;
  }
  if (cJSON_IsNull(d)) return WSMSG_OK;
  if (!cJSON_IsObject(d)) return bad(m, "bad_data", "data must be an object");
  /* The client's own text, not the tree printed again: cJSON reads a
   * number into a double, which would change an id of 19 digits and make
   * 1e400 null. Plain malloc memory: wsmsg_free uses free(). */
  m->data = json_source_compact(m->src, m->src_len, m->root, d, NULL);
  if (!m->data) return bad(m, "internal", "out of memory");
  return WSMSG_OK;
}

/* A join's "snapshot": true (or absent) answers the channel's members,
 * false an ack only (a client that only needs to be in the channel, or
 * reads the list later through the API, saves the store its listing). */
static int decode_snapshot(wsmsg_t *m) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(m->root, "snapshot");
  if (!v) return WSMSG_OK;
  if (!cJSON_IsBool(v))
    return bad(m, "bad_field", "snapshot must be true or false");
  m->no_snapshot = cJSON_IsFalse(v);
  return WSMSG_OK;
}

/* A members request's "after": the last user id of the page before (a
 * valid user id, as the HTTP API's ?after= is), absent or null for the
 * first page. Anything else would reach the store as a cursor no member
 * could have: refused rather than answered with a guess. */
static int decode_after(wsmsg_t *m) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(m->root, "after");
  if (!v || cJSON_IsNull(v)) return WSMSG_OK;
  if (!cJSON_IsString(v) || presence_id_check(v->valuestring) != 0)
    return bad(m, "bad_field",
               "after must be a user id (the last member of the page before) "
               "or null");
  m->after = v->valuestring;
  return WSMSG_OK;
}

static const struct {
  const char *name;
  int type, data; /* data: 0 none, 1 optional, 2 required */
} chan_types[] = {
    {"join", WSMSG_JOIN, 1},       {"update", WSMSG_UPDATE, 2},
    {"leave", WSMSG_LEAVE, 0},     {"observe", WSMSG_OBSERVE, 0},
    {"unobserve", WSMSG_UNOBSERVE, 0}, {"members", WSMSG_MEMBERS, 0},
};

/* ---- The status change without a tree ----------------------------------
 *
 * A status change is most of what a connection sends (the client flips
 * online/idle), and building a cJSON tree for it (a malloc per member, the
 * duplicate-key walk, the NUL-escape scan) was about a sixth of presenced's
 * user-space time per change. The common shape is read here directly: an
 * object whose members are only "type", "status" and optionally "id", in
 * any order, the standard whitespace between tokens; the id a string of
 * printable ASCII without escapes or a whole number of up to nine digits
 * (what the JavaScript client sends: cJSON renders such a number as its
 * digits). Anything else (an escape, a byte outside 0x20..0x7e, another
 * number, a duplicate, another member, an error of any kind) is left to
 * the full decoder, so this path only ever answers what the full one
 * would: the fuzzer and test_srv_wsmsg compare the two on every input.
 *
 * Keys and the fixed values are compared whole, closing quote included
 * (memcmp of a constant length compiles to a load and a compare or two),
 * so only the id's bytes are looked at one by one. */

typedef struct span {
  const uint8_t *p;
  size_t n;
} span_t;

static inline const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end) {
  /* Compact JSON has none: one comparison says so (all four are <= ' '). */
  while (p < end && *p <= ' ' &&
         (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    p++;
  return p;
}

/* The literal lit (n bytes) at p; p past it, or NULL. */
static inline const uint8_t *lit(const uint8_t *p, const uint8_t *end,
                                 const char *s, size_t n) {
  return (size_t)(end - p) >= n && memcmp(p, s, n) == 0 ? p + n : NULL;
}
#define LIT(p, end, s) lit((p), (end), (s), sizeof(s) - 1)

/* The id's value at p: a string of plain bytes, or up to nine digits
 * without a leading zero, not followed by a fraction or an exponent. Its
 * JSON text in *out; p past it, or NULL. */
static const uint8_t *id_value(const uint8_t *p, const uint8_t *end,
                               span_t *out) {
  const uint8_t *s = p;
  if (*p == '"') {
    for (p++; p < end && *p != '"'; p++)
      if (*p < 0x20 || *p > 0x7e || *p == '\\') return NULL;
    if (p == end) return NULL;
    p++;
  } else {
    while (p < end && *p >= '0' && *p <= '9')
      p++;
    size_t n = (size_t)(p - s);
    if (n == 0 || n > 9 || (n > 1 && *s == '0')) return NULL;
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return NULL;
  }
  out->p = s;
  out->n = (size_t)(p - s);
  return p;
}

/* 1: decoded into *m (WSMSG_OK, as wsmsg_decode_full would); 0: not this
 * shape, *m untouched. */
static int decode_status_fast(const uint8_t *data, size_t len, wsmsg_t *m) {
  const uint8_t *p = data, *end = data + len, *q;
  span_t id = {0};
  int have_type = 0, have_id = 0, st = 0;
  p = skip_ws(p, end);
  if (p == end || *p++ != '{') return 0;
  for (;;) {
    p = skip_ws(p, end);
    if (p == end || *p++ != '"') return 0;
    if ((q = LIT(p, end, "type\""))) {
      if (have_type) return 0; /* a duplicate: the full decoder refuses it */
      have_type = 1;
      p = skip_ws(q, end);
      if (p == end || *p++ != ':') return 0;
      p = skip_ws(p, end);
      if (!(p = LIT(p, end, "\"status\""))) return 0;
    } else if ((q = LIT(p, end, "status\""))) {
      if (st) return 0;
      p = skip_ws(q, end);
      if (p == end || *p++ != ':') return 0;
      p = skip_ws(p, end);
      if ((q = LIT(p, end, "\"online\"")))
        st = PRESENCE_ONLINE;
      else if ((q = LIT(p, end, "\"idle\"")))
        st = PRESENCE_IDLE;
      else
        return 0;
      p = q;
    } else if ((q = LIT(p, end, "id\""))) {
      if (have_id) return 0;
      have_id = 1;
      p = skip_ws(q, end);
      if (p == end || *p++ != ':') return 0;
      p = skip_ws(p, end);
      if (p == end || !(p = id_value(p, end, &id))) return 0;
    } else {
      return 0;
    }
    p = skip_ws(p, end);
    if (p == end) return 0;
    if (*p == '}') break;
    if (*p++ != ',') return 0;
  }
  if (skip_ws(p + 1, end) != end) return 0;
  if (!have_type || !st) return 0;
  /* The id as JSON: its bytes need no escaping, so copied as they are. */
  if (id.n > 64) return 0;
  /* Only what a status change's handler and wsmsg_free read: the rest of
   * the 400-byte struct is not written for each change. */
  m->root = NULL;
  m->users = NULL;
  m->token = NULL;
  m->channel = NULL;
  m->data = NULL;
  m->err_code = NULL;
  if (id.n) memcpy(m->id, id.p, id.n);
  m->id[id.n] = '\0';
  m->type = WSMSG_STATUS;
  m->status = st;
  return 1;
}

int wsmsg_decode(const uint8_t *data, size_t len, uint32_t max_users,
                 wsmsg_t *m) {
  if (decode_status_fast(data, len, m)) return WSMSG_OK;
  return wsmsg_decode_full(data, len, max_users, m);
}

int wsmsg_decode_full(const uint8_t *data, size_t len, uint32_t max_users,
                      wsmsg_t *m) {
  memset(m, 0, sizeof *m);
  m->src = data;
  m->src_len = len;
  m->root = json_parse_one_object(data, len);
  if (!m->root)
    return bad(m, "bad_json",
               "message is not a JSON object (or names a member twice)");
  /* The id is echoed verbatim, as the client wrote it (a number of 20
   * digits stays those digits); it is kept only when valid, so the error
   * about it carries none. */
  const cJSON *idv = cJSON_GetObjectItemCaseSensitive(m->root, "id");
  if (idv) {
    size_t n = 0;
    char *id = cJSON_IsString(idv) || cJSON_IsNumber(idv)
                   ? json_source_compact(data, len, m->root, idv, &n)
                   : NULL;
    if (!id || n > 64) {
      free(id);
      return bad(m, "bad_field",
                 "id must be a string or a number of at most 64 bytes");
    }
    memcpy(m->id, id, n + 1);
    free(id);
  }
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(m->root, "type");
  const char *t = cJSON_IsString(type) ? type->valuestring : NULL;
  if (!t) return bad(m, "unknown_type", "type is missing");
  int is_sub = !strcmp(t, "subscribe"), is_unsub = !strcmp(t, "unsubscribe");
  if (json_has_escaped_nul(data, len))
    return bad(m, is_sub || is_unsub ? "bad_user_id" : "bad_field",
               "strings must not contain NUL (\\u0000)");
  if (!strcmp(t, "status")) {
    m->type = WSMSG_STATUS;
    return decode_status(m);
  }
  if (is_sub) {
    m->type = WSMSG_SUBSCRIBE;
    const cJSON *users = cJSON_GetObjectItemCaseSensitive(m->root, "users");
    /* Bound the work before looking at each id. */
    if (cJSON_IsArray(users) &&
        (uint32_t)cJSON_GetArraySize(users) > max_users) {
      m->err_code = "too_many_watched";
      snprintf(m->err_msg, sizeof m->err_msg,
               "at most %u watched users per connection", max_users);
      return WSMSG_TOO_MANY;
    }
    return check_users(m, users);
  }
  if (is_unsub) {
    m->type = WSMSG_UNSUBSCRIBE;
    return check_users(m, cJSON_GetObjectItemCaseSensitive(m->root, "users"));
  }
  if (!strcmp(t, "availability")) {
    m->type = WSMSG_AVAILABILITY;
    return wsmsg_decode_availability(m->root, m);
  }
  if (!strcmp(t, "message")) {
    m->type = WSMSG_MESSAGE;
    return wsmsg_decode_message(m->root, m);
  }
  if (!strcmp(t, "ping")) {
    m->type = WSMSG_PING;
    return WSMSG_OK;
  }
  if (!strcmp(t, "token")) {
    m->type = WSMSG_TOKEN;
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(m->root, "token");
    if (!cJSON_IsString(tok) || !tok->valuestring[0])
      return bad(m, "bad_field", "token must be a non-empty string (a JWT)");
    m->token = tok->valuestring;
    m->token_len = strlen(tok->valuestring);
    return WSMSG_OK;
  }
  for (size_t i = 0; i < sizeof chan_types / sizeof chan_types[0]; i++) {
    if (strcmp(t, chan_types[i].name) != 0) continue;
    m->type = chan_types[i].type;
    int rc = decode_channel(m);
    if (rc == WSMSG_OK && chan_types[i].data)
      rc = decode_data(m, chan_types[i].data == 2);
    if (rc == WSMSG_OK && m->type == WSMSG_JOIN) rc = decode_snapshot(m);
    if (rc == WSMSG_OK && m->type == WSMSG_MEMBERS) rc = decode_after(m);
    return rc;
  }
  return bad(m, "unknown_type", "unknown message type");
}

void wsmsg_free(wsmsg_t *m) {
  /* A status change has neither: no calls for it. */
  if (m->root) cJSON_Delete(m->root);
  m->root = NULL;
  m->users = NULL;
  m->channel = NULL;
  m->after = NULL;
  if (m->data) free(m->data);
  m->data = NULL;
}
