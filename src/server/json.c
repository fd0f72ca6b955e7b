/* SPDX-License-Identifier: MIT */
/*
 * The JSON writer (json.h): users, sessions, events, WebSocket frames.
 */
#include "server/json.h"

#include <assert.h>

void json_user(buf_t *b, const presence_user_info_t *u, unsigned flags) {
  buf_puts(b, "{\"user_id\":");
  buf_put_json_str(b, u->user_id);
  buf_puts(b, ",\"status\":\"");
  buf_puts(b, presence_status_name(u->status));
  buf_puts(b, "\",\"since\":");
  buf_put_i64(b, u->since_ms);
  buf_puts(b, ",\"last_seen\":");
  buf_put_i64(b, u->last_seen_ms);
  if (flags & JSON_USER_SESSIONS) {
    buf_puts(b, ",\"sessions\":");
    buf_put_u64(b, u->session_count);
  }
  buf_puts(b, ",\"version\":");
  buf_put_u64(b, u->version);
  buf_putc(b, '}');
}

void json_session(buf_t *b, const presence_session_info_t *si) {
  buf_puts(b, "{\"session_id\":");
  buf_put_json_str(b, si->session_id);
  buf_puts(b, ",\"status\":\"");
  buf_puts(b, presence_status_name(si->status));
  buf_puts(b, "\",\"meta\":");
  /* meta is stored as the compact JSON text of an object. */
  buf_puts(b, si->meta && *si->meta ? si->meta : "null");
  buf_puts(b, ",\"connected\":");
  buf_put_i64(b, si->connected_ms);
  buf_puts(b, ",\"since\":");
  buf_put_i64(b, si->status_since_ms);
  buf_puts(b, ",\"instance\":");
  buf_put_json_str(b, si->instance_id ? si->instance_id : "");
  buf_putc(b, '}');
}

/* ---- events ------------------------------------------------------------ */

static void put_cleanup(buf_t *b, const presence_event_t *ev) {
  if (ev->instance_id) {
    buf_puts(b, ",\"instance\":");
    buf_put_json_str(b, ev->instance_id);
  }
  if (ev->session_ids) {
    buf_puts(b, ",\"session_ids\":[");
    for (size_t i = 0; i < ev->n_session_ids; i++) {
      if (i) buf_putc(b, ',');
      buf_put_json_str(b, ev->session_ids[i]);
    }
    buf_putc(b, ']');
  } else if (ev->flags & PRESENCE_EVENT_IDS_OMITTED) {
    /* A dead instance's cleanup whose list the log leaves out: the
     * session.disconnected events before it name the sessions. */
    buf_puts(b, ",\"session_ids_omitted\":true");
  }
}

/* Which common fields each event type carries, and what it adds of its own
 * (after meta). A type without a row writes the envelope only. */
typedef struct event_shape {
  uint8_t from, to, version;
  void (*extra)(buf_t *b, const presence_event_t *ev);
} event_shape_t;

static const event_shape_t event_shape[PRESENCE_EV_COUNT_] = {
    [PRESENCE_EV_SESSION_CONNECTED] = {.to = 1},
    [PRESENCE_EV_SESSION_DISCONNECTED] = {.from = 1},
    [PRESENCE_EV_SESSION_STATUS] = {.from = 1, .to = 1},
    [PRESENCE_EV_USER_ONLINE] = {.from = 1, .to = 1, .version = 1},
    [PRESENCE_EV_USER_IDLE] = {.from = 1, .to = 1, .version = 1},
    [PRESENCE_EV_USER_OFFLINE] = {.from = 1, .to = 1, .version = 1},
    [PRESENCE_EV_CLEANUP] = {.extra = put_cleanup},
};

void json_event(buf_t *b, const presence_event_t *ev) {
  static const event_shape_t none;
  const event_shape_t *sh =
      (unsigned)ev->type < PRESENCE_EV_COUNT_ ? &event_shape[ev->type] : &none;
  buf_puts(b, "{\"seq\":");
  buf_put_u64(b, ev->seq);
  buf_puts(b, ",\"type\":\"");
  buf_puts(b, presence_event_type_name(ev->type));
  buf_puts(b, "\",\"ts\":");
  buf_put_i64(b, ev->ts_ms);
  buf_puts(b, ",\"reason\":\"");
  buf_puts(b, presence_reason_name(ev->reason));
  buf_putc(b, '"');
  if (ev->user_id) {
    buf_puts(b, ",\"user_id\":");
    buf_put_json_str(b, ev->user_id);
  }
  if (ev->session_id) {
    buf_puts(b, ",\"session_id\":");
    buf_put_json_str(b, ev->session_id);
  }
  if (sh->from) {
    buf_puts(b, ",\"from\":\"");
    buf_puts(b, presence_status_name(ev->from));
    buf_putc(b, '"');
  }
  if (sh->to) {
    buf_puts(b, ",\"to\":\"");
    buf_puts(b, presence_status_name(ev->to));
    buf_putc(b, '"');
  }
  if (sh->version) {
    buf_puts(b, ",\"version\":");
    buf_put_u64(b, ev->user_version);
  }
  if (ev->meta && *ev->meta) {
    buf_puts(b, ",\"meta\":");
    buf_puts(b, ev->meta); /* compact JSON of an object, as stored */
  }
  if (sh->extra) sh->extra(b, ev);
  buf_putc(b, '}');
}

void json_user_change(buf_t *b, const presence_event_t *ev) {
  /* A store that does not report last_seen (0): the user was seen at the
   * transition itself. */
  int64_t last_seen = ev->last_seen_ms ? ev->last_seen_ms : ev->ts_ms;
  buf_puts(b, "{\"user_id\":");
  buf_put_json_str(b, ev->user_id);
  buf_puts(b, ",\"status\":\"");
  buf_puts(b, presence_status_name(ev->to));
  buf_puts(b, "\",\"from\":\"");
  buf_puts(b, presence_status_name(ev->from));
  buf_puts(b, "\",\"reason\":\"");
  buf_puts(b, presence_reason_name(ev->reason));
  buf_puts(b, "\",\"since\":");
  buf_put_i64(b, ev->ts_ms);
  buf_puts(b, ",\"last_seen\":");
  buf_put_i64(b, last_seen);
  buf_puts(b, ",\"version\":");
  buf_put_u64(b, ev->user_version);
  buf_puts(b, ",\"seq\":");
  buf_put_u64(b, ev->seq);
  buf_putc(b, '}');
}

/* ---- WebSocket frames -------------------------------------------------- */

/* Append ,"id":<id> when the request carried one (already rendered). */
static void put_id(buf_t *b, const char *id) {
  if (id && *id) {
    buf_puts(b, ",\"id\":");
    buf_puts(b, id);
  }
}

void json_frame_presence_change(buf_t *b, const presence_event_t *ev) {
  assert(ev->user_id); /* user events only */
  buf_puts(b, "{\"type\":\"presence\",\"snapshot\":false,\"users\":[");
  json_user_change(b, ev);
  buf_puts(b, "]}");
}

void json_frame_snapshot(buf_t *b, const char *id,
                         const presence_user_info_t *users, size_t n) {
  buf_puts(b, "{\"type\":\"presence\",\"snapshot\":true");
  put_id(b, id);
  buf_puts(b, ",\"users\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) buf_putc(b, ',');
    json_user(b, &users[i], 0);
  }
  buf_puts(b, "]}");
}

void json_frame_error(buf_t *b, const char *code, const char *message,
                      const char *id) {
  buf_puts(b, "{\"type\":\"error\",\"code\":");
  buf_put_json_str(b, code);
  buf_puts(b, ",\"message\":");
  buf_put_json_str(b, message);
  put_id(b, id);
  buf_putc(b, '}');
}

void json_frame_ack(buf_t *b, const char *id) {
  buf_puts(b, "{\"type\":\"ack\",\"id\":");
  buf_puts(b, id);
  buf_putc(b, '}');
}

void json_frame_pong(buf_t *b, const char *id, int64_t ts_ms) {
  buf_puts(b, "{\"type\":\"pong\"");
  put_id(b, id);
  buf_puts(b, ",\"ts\":");
  buf_put_i64(b, ts_ms);
  buf_putc(b, '}');
}
