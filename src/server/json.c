/* SPDX-License-Identifier: MIT */
/*
 * The JSON writer (json.h): users, sessions, events, WebSocket frames.
 */
#include "server/json.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>

static void put_name(buf_t *b, const char *key, const char *name) {
  buf_puts(b, ",\"");
  buf_puts(b, key);
  buf_puts(b, "\":\"");
  buf_puts(b, name);
  buf_putc(b, '"');
}

static void put_opt_str(buf_t *b, const char *s) {
  if (s) buf_put_json_str(b, s);
  else buf_puts(b, "null");
}

/* {"text":..,"emoji":..,"expires":..} or null. */
static void put_message(buf_t *b, const char *text, const char *emoji,
                        int64_t expires_ms, int64_t set_ms) {
  if (!text && !emoji) {
    buf_puts(b, "null");
    return;
  }
  buf_puts(b, "{\"text\":");
  put_opt_str(b, text);
  buf_puts(b, ",\"emoji\":");
  put_opt_str(b, emoji);
  buf_puts(b, ",\"expires\":");
  if (expires_ms) buf_put_i64(b, expires_ms);
  else buf_puts(b, "null");
  if (set_ms) {
    buf_puts(b, ",\"set\":");
    buf_put_i64(b, set_ms);
  }
  buf_putc(b, '}');
}

/* ,"devices":{...} as watchers are shown them: each device's best status
 * masked like the user's, none when the user is shown offline. */
static void put_shown_devices(buf_t *b, presence_availability_t av,
                              presence_status_t computed,
                              const presence_device_status_t *d, size_t n) {
  buf_puts(b, ",\"devices\":{");
  if (presence_shown_status(av, computed) != PRESENCE_OFFLINE) {
    for (size_t i = 0; i < n; i++) {
      if (i) buf_putc(b, ',');
      buf_put_json_str(b, d[i].device);
      buf_puts(b, ":\"");
      buf_puts(b, presence_status_name(presence_shown_status(av, d[i].status)));
      buf_putc(b, '"');
    }
  }
  buf_putc(b, '}');
}

static int64_t min_nonzero(int64_t a, int64_t b) {
  if (!a) return b;
  if (!b) return a;
  return a < b ? a : b;
}

void json_user(buf_t *b, const presence_user_info_t *u, unsigned flags) {
  /* Watchers see the masked view (docs/protocol.md 1.5), backends the
   * truth. An invisible user's times stop when it went invisible. */
  int shown = (flags & JSON_USER_SHOWN) != 0;
  presence_status_t st =
      shown ? presence_shown_status(u->availability, u->status) : u->status;
  presence_availability_t av =
      shown ? presence_shown_availability(u->availability, u->status)
            : u->availability;
  int64_t since = u->since_ms, last_seen = u->last_seen_ms,
          last_active = u->last_active_ms;
  /* After the user left invisible, a time inside the period it spent
   * invisible (the veil) still shows as that period's start, as it did
   * while invisible: an availability set while it was offline or in its
   * grace must not show a last_seen that proves it was there. A status
   * shown online or idle began when the user came out at the earliest
   * (it was shown offline before: a since before that would say it was
   * there all along). Before the invisible mask: the veil of an earlier
   * period holds while invisible again. */
  if (shown && u->veil_to_ms) {
    int64_t vf = u->veil_from_ms, vt = u->veil_to_ms;
    if (st != PRESENCE_OFFLINE) {
      if (since < vt) since = vt;
    } else if (since >= vf && since <= vt) {
      since = vf;
    }
    if (last_seen >= vf && last_seen <= vt) last_seen = vf;
    if (last_active >= vf && last_active <= vt) last_active = vf;
  }
  if (shown && u->availability == PRESENCE_AVAIL_INVISIBLE) {
    since = last_seen = min_nonzero(last_seen, u->availability_since_ms);
    last_active = min_nonzero(last_active, u->availability_since_ms);
  }
  buf_puts(b, "{\"user_id\":");
  buf_put_json_str(b, u->user_id);
  put_name(b, "status", presence_status_name(st));
  put_name(b, "availability", presence_availability_name(av));
  buf_puts(b, ",\"since\":");
  buf_put_i64(b, since);
  buf_puts(b, ",\"last_seen\":");
  buf_put_i64(b, last_seen);
  buf_puts(b, ",\"last_active\":");
  buf_put_i64(b, last_active);
  if (flags & JSON_USER_SESSIONS) {
    buf_puts(b, ",\"sessions\":");
    buf_put_u64(b, u->session_count);
  }
  if (!shown) {
    buf_puts(b, ",\"availability_since\":");
    buf_put_i64(b, u->availability_since_ms);
  }
  /* Watchers: the shown version, which moves only with what they see (a
   * version that moved with a hidden change would reveal it). */
  buf_puts(b, ",\"version\":");
  buf_put_u64(b, shown ? u->shown_version : u->version);
  buf_puts(b, ",\"message\":");
  put_message(b, u->message, u->emoji, u->message_expires_ms,
              shown ? 0 : u->message_set_ms);
  if (shown) {
    put_shown_devices(b, u->availability, u->status, u->devices, u->n_devices);
    buf_putc(b, '}');
    return;
  }
  buf_puts(b, ",\"devices\":{");
  for (size_t i = 0; st != PRESENCE_OFFLINE && i < u->n_devices; i++) {
    const presence_device_status_t *d = &u->devices[i];
    if (i) buf_putc(b, ',');
    buf_put_json_str(b, d->device);
    buf_puts(b, ":{\"status\":\"");
    buf_puts(b, presence_status_name(d->status));
    buf_puts(b, "\",\"sessions\":");
    buf_put_u64(b, d->session_count);
    buf_putc(b, '}');
  }
  buf_puts(b, "}}");
}

void json_user_setting(buf_t *b, const presence_user_info_t *u, int message) {
  buf_puts(b, "{\"user_id\":");
  buf_put_json_str(b, u->user_id);
  if (message) {
    buf_puts(b, ",\"message\":");
    put_message(b, u->message, u->emoji, u->message_expires_ms,
                u->message_set_ms);
  } else {
    put_name(b, "availability", presence_availability_name(u->availability));
    buf_puts(b, ",\"availability_since\":");
    buf_put_i64(b, u->availability_since_ms);
  }
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
  if (si->device) put_name(b, "device", si->device);
  buf_putc(b, '}');
}

/* ---- events ------------------------------------------------------------ */

static void put_cleanup(buf_t *b, const presence_event_t *ev) {
  /* Unambiguous for receivers: a fresh start (no instance: every user
   * should be considered offline) or one dead instance's sessions (only
   * those ended; users connected elsewhere are still online). A missing
   * session list alone does not tell them apart: the log leaves a dead
   * instance's list out. */
  buf_puts(b, ev->instance_id ? ",\"fresh_start\":false"
                              : ",\"fresh_start\":true");
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

/* user.availability: from/to are availabilities, status the user's. */
static void put_availability_change(buf_t *b, const presence_event_t *ev) {
  put_name(b, "from", presence_availability_name(ev->availability_from));
  put_name(b, "to", presence_availability_name(ev->availability_to));
  put_name(b, "status", presence_status_name(ev->to));
}

static void put_message_change(buf_t *b, const presence_event_t *ev) {
  buf_puts(b, ",\"message\":");
  put_message(b, ev->message, ev->emoji, ev->message_expires_ms, 0);
  put_name(b, "availability", presence_availability_name(ev->availability_to));
}

static void put_user_availability(buf_t *b, const presence_event_t *ev) {
  put_name(b, "availability", presence_availability_name(ev->availability_to));
}

static void put_device(buf_t *b, const presence_event_t *ev) {
  if (ev->device) put_name(b, "device", ev->device);
}

static void put_channel(buf_t *b, const presence_event_t *ev) {
  buf_puts(b, ",\"channel\":");
  buf_put_json_str(b, ev->channel ? ev->channel : "");
  buf_puts(b, ",\"data\":");
  buf_puts(b, ev->meta && *ev->meta ? ev->meta : "null");
  buf_puts(b, ",\"count\":");
  buf_put_u64(b, ev->count);
  /* What members are shown (invisible members left out): backends get
   * both, members only this one, as "count". */
  buf_puts(b, ",\"shown_count\":");
  buf_put_u64(b, ev->shown_count);
}

/* Which common fields each event type carries, and what it adds of its own
 * (after meta). A type without a row writes the envelope only. */
typedef struct event_shape {
  uint8_t from, to, version;
  void (*extra)(buf_t *b, const presence_event_t *ev);
} event_shape_t;

static const event_shape_t event_shape[PRESENCE_EV_COUNT_] = {
    [PRESENCE_EV_SESSION_CONNECTED] = {.to = 1, .extra = put_device},
    [PRESENCE_EV_SESSION_DISCONNECTED] = {.from = 1, .extra = put_device},
    [PRESENCE_EV_SESSION_STATUS] = {.from = 1, .to = 1, .extra = put_device},
    [PRESENCE_EV_USER_ONLINE] = {.from = 1, .to = 1, .version = 1,
                                 .extra = put_user_availability},
    [PRESENCE_EV_USER_IDLE] = {.from = 1, .to = 1, .version = 1,
                               .extra = put_user_availability},
    [PRESENCE_EV_USER_OFFLINE] = {.from = 1, .to = 1, .version = 1,
                                  .extra = put_user_availability},
    [PRESENCE_EV_CLEANUP] = {.extra = put_cleanup},
    [PRESENCE_EV_USER_AVAILABILITY] = {.version = 1,
                                       .extra = put_availability_change},
    [PRESENCE_EV_USER_MESSAGE] = {.version = 1, .extra = put_message_change},
    [PRESENCE_EV_CHANNEL_JOIN] = {.from = 1, .to = 1, .version = 1,
                                  .extra = put_channel},
    [PRESENCE_EV_CHANNEL_LEAVE] = {.from = 1, .to = 1, .version = 1,
                                   .extra = put_channel},
    [PRESENCE_EV_CHANNEL_UPDATE] = {.from = 1, .to = 1, .version = 1,
                                    .extra = put_channel},
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
  if (ev->meta && *ev->meta && !ev->channel) { /* a channel's: "data" */
    buf_puts(b, ",\"meta\":");
    buf_puts(b, ev->meta); /* compact JSON of an object, as stored */
  }
  if (sh->extra) sh->extra(b, ev);
  buf_putc(b, '}');
}

/*
 * ,"key":"name" for each key json_user_change writes and each name it can
 * have, made once: each is then one copy of a fixed size (a few vector
 * moves) with no strlen, where a piece at a time measured and copied key
 * and name. The copy writes the whole FRAG_SIZE; the region reserved
 * leaves room for that (FRAG_SIZE a fragment).
 */
#define FRAG_SIZE 48
typedef struct frag {
  char s[FRAG_SIZE - 1];
  uint8_t n;
} frag_t;
_Static_assert(sizeof(frag_t) == FRAG_SIZE, "a fragment is one fixed copy");

enum {
  ST_N = 4,
  AV_N = PRESENCE_AVAIL_COUNT_ + 1,
  RE_N = PRESENCE_REASON_COUNT_ + 1
};
static struct frags {
  frag_t status[ST_N], from[ST_N], device_status[ST_N], availability[AV_N],
      reason[RE_N];
} frags;
static pthread_once_t frags_once = PTHREAD_ONCE_INIT;

static void frag_make(frag_t *f, const char *key, const char *name) {
  int n = snprintf(f->s, sizeof f->s, ",\"%s\":\"%s\"", key, name);
  /* Every name fits (test_srv_json checks them); a longer one would be
   * cut, never overflow. */
  f->n = (uint8_t)(n < (int)sizeof f->s ? n : (int)sizeof f->s - 1);
}

static void frags_make(void) {
  for (int i = 0; i < ST_N; i++) {
    const char *name = presence_status_name((presence_status_t)i);
    frag_make(&frags.status[i], "status", name);
    frag_make(&frags.from[i], "from", name);
    frag_make(&frags.device_status[i], "device_status", name);
  }
  for (int i = 0; i < AV_N; i++)
    frag_make(&frags.availability[i], "availability",
              presence_availability_name((presence_availability_t)i));
  for (int i = 0; i < RE_N; i++)
    frag_make(&frags.reason[i], "reason",
              presence_reason_name((presence_reason_t)i));
}

/* Out-of-range values take the last entry, the names' "unknown". */
static char *wr_frag(char *p, const frag_t *tab, unsigned n, unsigned i) {
  const frag_t *f = &tab[i < n ? i : n - 1];
  memcpy(p, f, sizeof *f); /* its length byte too: past the end, unused */
  return p + f->n;
}
#define WR_FRAG(p, tab, i)                                                     \
  wr_frag((p), frags.tab, sizeof frags.tab / sizeof frags.tab[0],             \
          (unsigned)(i))

/* The last transition time written and its digits: a busy server writes
 * hundreds of changes in one millisecond, and a 13-digit time is ~130
 * instructions to render where copying it is ~10. */
static _Thread_local int64_t since_ms;
static _Thread_local uint8_t since_n; /* 0: none written yet */
static _Thread_local char since_txt[WR_U64_MAX + 1];

/* The last sequence number written and its digits: the log's numbers rise
 * by one or two from a change to the next (a pair takes two), so most are
 * the last one's digits with the last one moved, ~10 instructions where a
 * 7-digit number is ~60 to render. Copied whole (SEQ_TXT bytes: no
 * variable-length copy, ~20 more); the region reserved leaves room. */
enum { SEQ_TXT = 24 };
static _Thread_local uint64_t seq_last;
static _Thread_local uint8_t seq_n; /* 0: none written yet */
static _Thread_local char seq_txt[SEQ_TXT];
_Static_assert(SEQ_TXT > WR_U64_MAX, "a number's digits fit");

static char *wr_seq(char *p, uint64_t seq) {
  uint64_t d = seq - seq_last;
  if (seq_n && seq > seq_last && d < 10 &&
      (uint64_t)(seq_txt[seq_n - 1] - '0') + d <= 9)
    seq_txt[seq_n - 1] = (char)(seq_txt[seq_n - 1] + (char)d);
  else
    seq_n = (uint8_t)(wr_u64(seq_txt, seq) - seq_txt);
  seq_last = seq;
  memcpy(p, seq_txt, SEQ_TXT);
  return p + seq_n;
}

/* frame: inside the frame of one change ({"type":"presence",...,
 * "users":[ and ]}), in the same region. */
static void user_change(buf_t *b, const presence_event_t *ev, int frame) {
  /* Masked: what a watcher sees (docs/protocol.md 1.5). The caller sends
   * it only when presence_event_watcher_visible(ev). Written on every
   * visible transition to every watcher's frame: into one region reserved
   * for all of it but the message (buf.h, "Writing into a reserved
   * region"). */
  int is_user = ev->type == PRESENCE_EV_USER_ONLINE ||
                ev->type == PRESENCE_EV_USER_IDLE ||
                ev->type == PRESENCE_EV_USER_OFFLINE ||
                ev->type == PRESENCE_EV_USER_AVAILABILITY;
  int is_message = ev->type == PRESENCE_EV_USER_MESSAGE;
  const char *device = is_message ? NULL : ev->device;
  size_t id_n = strlen(ev->user_id), dev_n = device ? strlen(device) : 0;
  /* The literals (~100 bytes, the frame's ~50), five fragments, four
   * numbers (the last copied whole), the id escaped, the device. */
  enum { FIXED = 192 + 5 * FRAG_SIZE + 3 * (WR_U64_MAX + 1) + SEQ_TXT };
  pthread_once(&frags_once, frags_make);
  if (buf_reserve(b, FIXED + 6 * id_n + dev_n) != 0) return;
  char *p = buf_end(b);
  if (frame)
    p = WR_LIT(p, "{\"type\":\"presence\",\"snapshot\":false,\"users\":[");
  p = WR_LIT(p, "{\"user_id\":");
  p = wr_json_strn(p, ev->user_id, id_n);
  if (is_user) p = WR_LIT(p, ",\"change\":\"status\"");
  else if (is_message) p = WR_LIT(p, ",\"change\":\"message\"");
  else p = WR_LIT(p, ",\"change\":\"device\"");
  if (is_user || is_message) {
    presence_status_t to = presence_shown_status(ev->availability_to, ev->to);
    p = WR_FRAG(p, status, to);
  }
  p = WR_FRAG(p, availability,
              presence_shown_availability(ev->availability_to,
                                          is_user || is_message
                                              ? ev->to
                                              : PRESENCE_ONLINE));
  if (is_user) {
    /* A store that does not report last_seen (0): the user was seen at the
     * transition itself. */
    int64_t last_seen = ev->last_seen_ms ? ev->last_seen_ms : ev->ts_ms;
    /* A user that left invisible in its grace: its last_seen is inside
     * the period it spent invisible, so the change's own time (as the
     * Redis store's changes carry). */
    if (ev->flags & PRESENCE_EVENT_LAST_SEEN_VEILED) last_seen = ev->ts_ms;
    p = WR_FRAG(p, from,
                presence_shown_status(ev->availability_from, ev->from));
    p = WR_LIT(p, ",\"since\":");
    if (ev->ts_ms != since_ms || !since_n) {
      since_n = (uint8_t)(wr_i64(since_txt, ev->ts_ms) - since_txt);
      since_ms = ev->ts_ms;
    }
    p = wr_mem(p, since_txt, since_n);
    p = WR_LIT(p, ",\"last_seen\":");
    /* Online and idle: last seen at the transition, the same digits. */
    if (last_seen == ev->ts_ms) p = wr_mem(p, since_txt, since_n);
    else p = wr_i64(p, last_seen);
  }
  if (is_message) {
    /* Of any length: through the buffer's own appends, then a region
     * again for the rest. */
    p = WR_LIT(p, ",\"message\":");
    buf_commit(b, p);
    put_message(b, ev->message, ev->emoji, ev->message_expires_ms, 0);
    if (buf_reserve(b, FIXED) != 0) return;
    p = buf_end(b);
  }
  if (ev->type == PRESENCE_EV_USER_AVAILABILITY) {
    /* The availability masks every device (docs/protocol.md 6.1): under
     * dnd an idle device shows online, under invisible none shows. A
     * client that kept the map it held would differ from a fresh
     * snapshot, so the change carries the whole map, as a snapshot has it
     * ({} when the shown status is offline). */
    buf_commit(b, p);
    put_shown_devices(b, ev->availability_to, ev->to, ev->devices,
                      ev->n_devices);
    if (buf_reserve(b, FIXED) != 0) return;
    p = buf_end(b);
  }
  if (device) {
    p = WR_LIT(p, ",\"device\":\"");
    p = wr_mem(p, device, dev_n);
    *p++ = '"';
    p = WR_FRAG(p, device_status,
                presence_shown_status(ev->availability_to, ev->device_to));
  }
  p = WR_FRAG(p, reason, ev->reason);
  p = WR_LIT(p, ",\"version\":");
  p = wr_u64(p, ev->shown_version);
  p = WR_LIT(p, ",\"seq\":");
  p = wr_seq(p, ev->seq);
  *p++ = '}';
  if (frame) p = WR_LIT(p, "]}");
  buf_commit(b, p);
}

void json_user_change(buf_t *b, const presence_event_t *ev) {
  user_change(b, ev, 0);
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
  user_change(b, ev, 1);
}

void json_frame_snapshot(buf_t *b, const char *id,
                         const presence_user_info_t *users, size_t n) {
  buf_puts(b, "{\"type\":\"presence\",\"snapshot\":true");
  put_id(b, id);
  buf_puts(b, ",\"users\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) buf_putc(b, ',');
    json_user(b, &users[i], JSON_USER_SHOWN);
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

/* ---- channels ------------------------------------------------------------ */

static const char *channel_event_word(presence_event_type_t t) {
  return t == PRESENCE_EV_CHANNEL_JOIN    ? "join"
         : t == PRESENCE_EV_CHANNEL_LEAVE ? "leave"
                                          : "update";
}

void json_member(buf_t *b, const presence_member_info_t *m, unsigned flags) {
  /* Shown (to other clients): the status their availability shows. */
  int shown = (flags & JSON_MEMBER_SHOWN) != 0;
  buf_puts(b, "{\"user_id\":");
  buf_put_json_str(b, m->user_id);
  buf_puts(b, ",\"status\":\"");
  buf_puts(b, presence_status_name(
                  shown ? presence_shown_status(m->availability, m->status)
                        : m->status));
  buf_putc(b, '"');
  put_name(b, "availability",
           presence_availability_name(
               shown ? presence_shown_availability(m->availability, m->status)
                     : m->availability));
  buf_puts(b, ",\"data\":");
  buf_puts(b, m->data && *m->data ? m->data : "null");
  /* Shown: no earlier than when the user last left invisible. The others
   * saw it leave when it went invisible and join when it came back; a
   * since from before would tell them it stayed a member all along, one
   * inside the period when it joined unseen (docs/protocol.md 4.1). */
  int64_t since = m->since_ms;
  if (shown && since && since < m->veil_to_ms) since = m->veil_to_ms;
  buf_puts(b, ",\"since\":");
  buf_put_i64(b, since);
  /* Other members get the shown version: the member's own moves with
   * changes they are not sent. */
  buf_puts(b, ",\"version\":");
  buf_put_u64(b, shown ? m->shown_version : m->version);
  if (flags & JSON_MEMBER_SESSIONS) {
    buf_puts(b, ",\"sessions\":[");
    for (size_t i = 0; i < m->n_metas; i++) {
      const presence_member_meta_t *t = &m->metas[i];
      if (i) buf_putc(b, ',');
      buf_puts(b, "{\"session_id\":");
      buf_put_json_str(b, t->session_id);
      buf_puts(b, ",\"status\":\"");
      buf_puts(b, presence_status_name(t->status));
      buf_puts(b, "\",\"data\":");
      buf_puts(b, t->data && *t->data ? t->data : "null");
      buf_puts(b, ",\"joined\":");
      buf_put_i64(b, t->joined_ms);
      buf_putc(b, '}');
    }
    buf_putc(b, ']');
  }
  buf_putc(b, '}');
}

void json_frame_channel_change(buf_t *b, const presence_event_t *ev) {
  buf_puts(b, "{\"type\":\"channel\",\"channel\":");
  buf_put_json_str(b, ev->channel);
  /* A change the other members are not shown (an invisible member's) goes
   * to the member's own sessions only, "hidden": its shown version does
   * not move with it. */
  buf_puts(b, presence_event_member_visible(ev)
                  ? ",\"snapshot\":false,\"event\":\""
                  : ",\"snapshot\":false,\"hidden\":true,\"event\":\"");
  buf_puts(b, channel_event_word(ev->type));
  buf_puts(b, "\",\"seq\":");
  buf_put_u64(b, ev->seq);
  buf_puts(b, ",\"reason\":\"");
  buf_puts(b, presence_reason_name(ev->reason));
  buf_puts(b, "\",\"count\":");
  buf_put_u64(b, ev->shown_count);
  buf_puts(b, ",\"member\":{\"user_id\":");
  buf_put_json_str(b, ev->user_id);
  buf_puts(b, ",\"status\":\"");
  buf_puts(b, presence_status_name(
                  presence_shown_status(ev->availability_to, ev->to)));
  buf_putc(b, '"');
  put_name(b, "availability",
           presence_availability_name(
               presence_shown_availability(ev->availability_to, ev->to)));
  buf_puts(b, ",\"data\":");
  buf_puts(b, ev->meta && *ev->meta ? ev->meta : "null");
  buf_puts(b, ",\"version\":");
  buf_put_u64(b, ev->shown_version);
  /* The shown status before, like the status after: the computed one
   * would give away what the mask hides (idle under dnd). */
  buf_puts(b, "},\"from\":\"");
  buf_puts(b, presence_status_name(
                  presence_shown_status(ev->availability_from, ev->from)));
  buf_puts(b, "\"}");
}

/* ,"more":..,"members":[..]}: the end of a snapshot and of a page. */
static void members_tail(buf_t *b, const presence_member_info_t *m, size_t n,
                         int more) {
  buf_puts(b, more ? ",\"more\":true" : ",\"more\":false");
  buf_puts(b, ",\"members\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) buf_putc(b, ',');
    json_member(b, &m[i], JSON_MEMBER_SHOWN);
  }
  buf_puts(b, "]}");
}

void json_frame_channel_snapshot(buf_t *b, const char *id, const char *channel,
                                 const presence_member_info_t *m, size_t n,
                                 uint64_t count, int more) {
  buf_puts(b, "{\"type\":\"channel\",\"channel\":");
  buf_put_json_str(b, channel);
  buf_puts(b, ",\"snapshot\":true");
  put_id(b, id);
  buf_puts(b, ",\"count\":");
  buf_put_u64(b, count);
  members_tail(b, m, n, more);
}

void json_frame_channel_page(buf_t *b, const char *id, const char *channel,
                             const presence_member_info_t *m, size_t n,
                             int more) {
  buf_puts(b, "{\"type\":\"channel\",\"channel\":");
  buf_put_json_str(b, channel);
  buf_puts(b, ",\"snapshot\":false,\"page\":true");
  put_id(b, id);
  members_tail(b, m, n, more);
}
