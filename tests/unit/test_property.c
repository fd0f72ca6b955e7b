/* SPDX-License-Identifier: MIT */
/*
 * Random operations against a model computed from scratch, on each store
 * that implements the rules: one rule checked in every place it is written.
 *
 * A few hundred thousand connects, disconnects, kicks, status changes, clock
 * advances and resets over many users and sessions. After every step, each
 * user the step touched must have the status the model computes from its
 * sessions (with offline grace), and the state rebuilt from the events alone
 * (a replay) must agree with both. Every 4096 steps all users are compared.
 * A third run adds a retention: offline users are forgotten, which the model
 * predicts to the second.
 *
 * The store is a parameter (store_kind_t): unit/test_property runs the
 * embedded store under an injected clock; redis/test_property (this file
 * built with PROPERTY_REDIS) runs the same model against the Redis store on
 * a real redis-server the test starts (tests/redis/harness.h). There every
 * operation completes asynchronously (the test runs the loop until it has),
 * and time is real: Redis decides offline grace by its own clock, so a
 * grace may end a little before or after the model's deadline, and the
 * model takes a user.offline of a user in grace within a tolerance instead
 * of predicting its millisecond. Retention counts whole seconds of Redis's
 * clock and is checked on the embedded store only.
 * Status that people set rides along: availabilities and status messages
 * (some with an expiry) set and cleared at random. The model predicts each
 * user's setting, each expiry (cleared once, at the first tick at or after
 * it), that a user holding a setting is never forgotten; the replay checks
 * every user.availability / user.message against what it knew, and a
 * watcher's view rebuilt from the events alone (presence_event_watcher_visible
 * deciding what is sent) against the masking table applied to the model.
 * Sessions have devices (s<i>: web, mobile, desktop by i % 3): each user's
 * best status and session count per device is checked against the model,
 * and the shown version (what watchers get as "version") must move by one
 * with every event a watcher is sent and with no other, in the events and
 * in the user query alike.
 */
#ifdef PROPERTY_REDIS
#define PRESENCE_TEST_NO_RECORDER
#endif
#include "helpers.h"

#ifdef PROPERTY_REDIS
#include "../redis/harness.h"
#endif

#include <stdbool.h>

#define N_USERS 257
#define N_SESSIONS 2048
#define GRACE_MS 1500

typedef struct msession {
  int connected;
  int user;
  presence_status_t status;
} msession_t;

typedef struct muser {
  int sessions, online;
  presence_status_t reported;
  int pending;      /* offline grace running */
  int64_t deadline; /* mono */
  /* Real time: the store decided the grace's start somewhere between the
   * write's call and its answer, so it ends no earlier than this. */
  int64_t earliest;
  int known;          /* the store holds a record of it */
  int64_t offline_at; /* mono, when it last went offline (or last cleared a
                         setting while offline: forgettable from then) */
  presence_availability_t avail;
  int msg;            /* 0: none; else the message's number */
  int64_t msg_expires; /* wall; 0: none */
  int dev_n[3], dev_on[3]; /* sessions, online ones, per device (DEVS) */
} muser_t;

/* Session s<i> is of device DEVS[i % 3]. */
static const char *const DEVS[3] = {"web", "mobile", "desktop"};

typedef struct world world_t;

/* The store under test. */
typedef struct store_kind {
  const char *name;
  /* Time is real (the store keeps its own clock): grace deadlines are
   * approximate, and time passes by running the loop. */
  bool real_time;
  /* Put the store into the options (NULL: the embedded one). */
  void (*open)(world_t *w, presence_options_t *o);
  /* After presence_new: wait until the store takes writes. */
  void (*ready)(world_t *w);
  /* Run the store's I/O until pred holds (or fail after ms). */
  bool (*run_until)(world_t *w, bool (*pred)(world_t *w), int64_t ms);
  /* Let time pass: ms of the injected clock, or of the real one. */
  void (*pass)(world_t *w, int64_t ms);
  /* After presence_free. */
  void (*close)(world_t *w);
} store_kind_t;

struct world {
  const store_kind_t *kind;
  fake_clock_t clock;
  counting_alloc_t alloc;
  presence_t *p;
  uint32_t grace;
  uint32_t retention_s;
  int64_t mono_base;
  msession_t s[N_SESSIONS];
  muser_t u[N_USERS];
  /* The replay: state rebuilt from events only. */
  int r_connected[N_SESSIONS];
  presence_status_t r_status[N_SESSIONS];
  presence_status_t r_user[N_USERS];
  presence_availability_t r_avail[N_USERS];
  int r_msg[N_USERS];
  int64_t r_msg_exp[N_USERS];
  presence_status_t r_view[N_USERS]; /* what a watcher was sent */
  presence_availability_t r_view_avail[N_USERS];
  uint64_t r_sv[N_USERS]; /* the shown version, from the events */
  long watcher_messages;
  uint64_t last_seq;
  int touched[N_USERS + 2];
  int n_touched;
  uint64_t rng;
  long events;
  long forgotten;
  /* The mutation in flight and its outcome (op_done). */
  bool op_pending;
  int op_status;
  int64_t op_started; /* model time of the write's call */
#ifdef PROPERTY_REDIS
  uv_loop_t loop;
  server_t server;
  presence_store_t *store;
#endif
};

/* Monotonic milliseconds in the model's time. */
static int64_t model_now(const world_t *w) {
#ifdef PROPERTY_REDIS
  if (w->kind->real_time) return now_ms();
#endif
  return w->clock.mono;
}

static uint32_t next_rand(world_t *w) {
  /* xorshift64*: reproducible from the seed printed on failure. */
  w->rng ^= w->rng >> 12;
  w->rng ^= w->rng << 25;
  w->rng ^= w->rng >> 27;
  return (uint32_t)((w->rng * 0x2545f4914f6cdd1dull) >> 32);
}

/* Every other session id is a canonical UUID (the memory store keeps those
 * as 16 bytes), the rest "s<n>": the events must give either back. Users are
 * "u<n>". */
static int parse_index(const char *id) {
  if (strlen(id) == 36) return (int)strtol(id + 24, NULL, 16);
  return atoi(id + 1);
}
static void session_id_of(char *buf, size_t n, int si) {
  if (si % 2) snprintf(buf, n, "00000000-0000-4000-8000-%012x", (unsigned)si);
  else snprintf(buf, n, "s%d", si);
}

static void touch_user(world_t *w, int u) {
  if (w->n_touched < N_USERS + 2) w->touched[w->n_touched++] = u;
}

static void grace_ended(world_t *w, int ui);
/* A user event reaches a watcher exactly when what it shows changes. */
static void watcher_sees(world_t *w, int uid, const presence_event_t *ev) {
  presence_status_t st = presence_shown_status(ev->availability_to, ev->to);
  presence_availability_t av =
      presence_shown_availability(ev->availability_to, ev->to);
  int changed = st != w->r_view[uid] || av != w->r_view_avail[uid];
  int sent = presence_event_watcher_visible(ev);
  /* A user event caused by a session may also carry a device change that
   * is visible on its own; without one, sent must equal changed. */
  if (!ev->device && sent != changed)
    fail_msg("user u%d: %s sent %d, the watcher's view changed %d", uid,
             presence_event_type_name(ev->type), sent, changed);
  if (changed && !sent)
    fail_msg("user u%d: a visible change (%s) not sent", uid,
             presence_event_type_name(ev->type));
  w->watcher_messages += sent;
  w->r_view[uid] = st;
  w->r_view_avail[uid] = av;
}

static void on_event(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  world_t *w = ud;
  w->events++;
  if (ev->seq != w->last_seq + 1)
    fail_msg("seq %llu after %llu", (unsigned long long)ev->seq,
             (unsigned long long)w->last_seq);
  w->last_seq = ev->seq;
  int sid = ev->session_id ? parse_index(ev->session_id) : -1;
  int uid = ev->user_id ? parse_index(ev->user_id) : -1;
  /* The version watchers are shown moves by one with each event they are
   * sent and with no other: it reveals no hidden change. */
  if (uid >= 0 && ev->type != PRESENCE_EV_CHANNEL_JOIN &&
      ev->type != PRESENCE_EV_CHANNEL_LEAVE &&
      ev->type != PRESENCE_EV_CHANNEL_UPDATE) {
    uint64_t want = w->r_sv[uid] + (uint64_t)presence_event_watcher_visible(ev);
    if (ev->shown_version != want)
      fail_msg("user u%d: %s shown version %llu, want %llu", uid,
               presence_event_type_name(ev->type),
               (unsigned long long)ev->shown_version,
               (unsigned long long)want);
    w->r_sv[uid] = ev->shown_version;
  }
  switch (ev->type) {
  case PRESENCE_EV_SESSION_CONNECTED:
    assert_false(w->r_connected[sid]);
    w->r_connected[sid] = 1;
    w->r_status[sid] = ev->to;
    break;
  case PRESENCE_EV_SESSION_DISCONNECTED:
    assert_true(w->r_connected[sid]);
    assert_int_equal(ev->from, w->r_status[sid]);
    w->r_connected[sid] = 0;
    break;
  case PRESENCE_EV_SESSION_STATUS:
    assert_true(w->r_connected[sid]);
    assert_int_equal(ev->from, w->r_status[sid]);
    assert_int_not_equal(ev->from, ev->to);
    w->r_status[sid] = ev->to;
    break;
  case PRESENCE_EV_USER_ONLINE:
  case PRESENCE_EV_USER_IDLE:
  case PRESENCE_EV_USER_OFFLINE:
    /* Edge-triggered: every user event is a real change. */
    assert_int_equal(ev->from, w->r_user[uid]);
    assert_int_not_equal(ev->from, ev->to);
    assert_int_equal(ev->availability_to, w->r_avail[uid]);
    w->r_user[uid] = ev->to;
    watcher_sees(w, uid, ev);
    touch_user(w, uid);
    /* (A reset ends a grace at once, with reason instance_lost.) */
    if (w->kind->real_time && ev->to == PRESENCE_OFFLINE &&
        ev->reason != PRESENCE_REASON_INSTANCE_LOST && w->u[uid].pending)
      grace_ended(w, uid);
    break;
  case PRESENCE_EV_USER_AVAILABILITY:
    assert_int_equal(ev->availability_from, w->r_avail[uid]);
    assert_int_not_equal(ev->availability_from, ev->availability_to);
    assert_int_equal(ev->from, w->r_user[uid]);
    w->r_avail[uid] = ev->availability_to;
    watcher_sees(w, uid, ev);
    touch_user(w, uid);
    break;
  case PRESENCE_EV_USER_MESSAGE: {
    int msg = ev->message ? atoi(ev->message + 1) : 0;
    /* Only real changes: the text or the expiry differs. */
    assert_true(msg != w->r_msg[uid] ||
                ev->message_expires_ms != w->r_msg_exp[uid]);
    w->r_msg_exp[uid] = ev->message_expires_ms;
    assert_int_equal(ev->reason == PRESENCE_REASON_EXPIRED, msg == 0 &&
                     ev->reason != PRESENCE_REASON_EXPLICIT);
    assert_true(presence_event_watcher_visible(ev));
    w->r_msg[uid] = msg;
    touch_user(w, uid);
    break;
  }
  case PRESENCE_EV_CLEANUP:
    break;
  default:
    fail_msg("unknown event type %d", ev->type);
  }
}

/* Real time: a grace ended by the store's clock, which started it between
 * the disconnect's call and its answer: not before the grace has passed
 * since that call (give or take the millisecond both clocks round to). */
static void grace_ended(world_t *w, int ui) {
  muser_t *u = &w->u[ui];
  int64_t now = model_now(w);
  if (now < u->earliest - 2)
    fail_msg("user u%d: offline %lld ms before its grace ended (seed %llu)",
             ui, (long long)(u->earliest - now), (unsigned long long)w->rng);
  u->pending = 0;
  u->reported = PRESENCE_OFFLINE;
  u->offline_at = now;
}

static presence_status_t computed(const muser_t *u) {
  if (!u->sessions) return PRESENCE_OFFLINE;
  return u->online ? PRESENCE_ONLINE : PRESENCE_IDLE;
}

/* Bring a user's reported status to what the counts say, unless a grace
 * period holds it. */
static void settle(world_t *w, int ui, int graceful) {
  muser_t *u = &w->u[ui];
  presence_status_t c = computed(u);
  if (c == PRESENCE_OFFLINE && u->reported != PRESENCE_OFFLINE && w->grace &&
      graceful) {
    if (!u->pending) {
      u->pending = 1;
      u->deadline = model_now(w) + w->grace;
      u->earliest = w->op_started + w->grace;
    }
    return;
  }
  u->pending = 0;
  if (c == PRESENCE_OFFLINE && u->reported != PRESENCE_OFFLINE)
    u->offline_at = model_now(w);
  u->reported = c;
}

/* The store forgets an offline user at the first whole second (counted
 * from its creation) that is retention_s after the second it went
 * offline in. */
static void forget_due(world_t *w) {
  if (!w->retention_s) return;
  int64_t now_s = (w->clock.mono - w->mono_base) / 1000;
  for (int i = 0; i < N_USERS; i++) {
    muser_t *u = &w->u[i];
    if (u->known && u->reported == PRESENCE_OFFLINE && !u->sessions &&
        !u->pending && u->avail == PRESENCE_AVAIL_AUTO && !u->msg &&
        (u->offline_at - w->mono_base) / 1000 + w->retention_s <= now_s) {
      u->known = 0;
      w->r_sv[i] = 0; /* forgotten: the store starts it again */
      w->forgotten++;
      touch_user(w, i);
    }
  }
}

/* ---- asking the store ------------------------------------------------- */

typedef struct user_answer {
  bool got;
  int status;
  presence_user_info_t info;
  int msg; /* the message's number ("m<n>"), read while it is valid */
  char dev[4][PRESENCE_DEVICE_MAX + 1]; /* the devices, copied */
  presence_status_t dev_st[4];
  uint32_t dev_count[4];
  size_t n_dev;
} user_answer_t;

static user_answer_t answer;

static void on_user(presence_t *p, int status, const presence_user_info_t *i,
                    void *ud) {
  (void)p;
  (void)ud;
  answer.got = true;
  answer.status = status;
  if (i) answer.info = *i;
  answer.msg = i && i->message ? atoi(i->message + 1) : 0;
  answer.info.message = answer.info.emoji = NULL; /* valid only here */
  answer.n_dev = 0;
  for (size_t k = 0; i && k < i->n_devices && k < 4; k++) {
    snprintf(answer.dev[k], sizeof answer.dev[k], "%s", i->devices[k].device);
    answer.dev_st[k] = i->devices[k].status;
    answer.dev_count[k] = i->devices[k].session_count;
    answer.n_dev++;
  }
  if (i && i->n_devices > 4) answer.n_dev = 99;
  answer.info.devices = NULL;
}

static bool answered(world_t *w) {
  (void)w;
  return answer.got;
}

/* One user as the store has it, whichever store it is. */
static presence_user_info_t get_user(world_t *w, const char *uid) {
  memset(&answer, 0, sizeof answer);
  assert_int_equal(presence_user_query(w->p, uid, on_user, NULL), 0);
  if (!answer.got && !w->kind->run_until(w, answered, 5000))
    fail_msg("%s: no answer about %s", w->kind->name, uid);
  assert_int_equal(answer.status, 0);
  return answer.info;
}

static void op_done(presence_t *p, int status, void *ud) {
  (void)p;
  world_t *w = ud;
  w->op_pending = false;
  w->op_status = status;
}

static bool op_finished(world_t *w) {
  return !w->op_pending;
}

/* Start a mutation (rc: what the call returned) and wait for its outcome:
 * a refusal at once, or what done reports (at once with the embedded
 * store, after a round trip with Redis). */
static int completed(world_t *w, int rc) {
  if (rc < 0) return rc;
  if (w->op_pending && !w->kind->run_until(w, op_finished, 10000))
    fail_msg("%s: a write never completed (seed %llu)", w->kind->name,
             (unsigned long long)w->rng);
  return w->op_status;
}

static void *op(world_t *w) {
  w->op_pending = true;
  w->op_status = 0;
  w->op_started = model_now(w);
  return w;
}

static bool user_settled(world_t *w) {
  return !w->u[w->touched[0]].pending;
}

static void check_user(world_t *w, int ui) {
  char uid[16];
  snprintf(uid, sizeof uid, "u%d", ui);
  presence_user_info_t info = get_user(w, uid);
  if (w->kind->real_time && w->u[ui].pending &&
      info.status == PRESENCE_OFFLINE &&
      w->u[ui].reported != PRESENCE_OFFLINE) {
    /* The store's grace ended while we asked: its user.offline is on the
     * way. */
    int saved = w->touched[0];
    w->touched[0] = ui;
    w->kind->run_until(w, user_settled, 2000);
    w->touched[0] = saved;
  }
  if (info.status != w->u[ui].reported || w->r_user[ui] != info.status)
    fail_msg("user %s: engine %s, model %s, replay %s (seed %llu)", uid,
             presence_status_name(info.status),
             presence_status_name(w->u[ui].reported),
             presence_status_name(w->r_user[ui]), (unsigned long long)w->rng);
  assert_int_equal(info.session_count, (uint32_t)w->u[ui].sessions);
  const muser_t *mu = &w->u[ui];
  if (info.availability != mu->avail || w->r_avail[ui] != mu->avail)
    fail_msg("user %s: availability %s, model %s, replay %s (seed %llu)", uid,
             presence_availability_name(info.availability),
             presence_availability_name(mu->avail),
             presence_availability_name(w->r_avail[ui]),
             (unsigned long long)w->rng);
  int msg = answer.msg;
  if (msg != mu->msg || w->r_msg[ui] != mu->msg)
    fail_msg("user %s: message %d, model %d, replay %d (seed %llu)", uid, msg,
             mu->msg, w->r_msg[ui], (unsigned long long)w->rng);
  if (mu->msg) assert_int_equal(info.message_expires_ms, mu->msg_expires);
  if (w->r_view[ui] != presence_shown_status(mu->avail, mu->reported) ||
      w->r_view_avail[ui] != presence_shown_availability(mu->avail, mu->reported))
    fail_msg("user %s: the watcher was last sent %s/%s, the table says %s/%s",
             uid, presence_status_name(w->r_view[ui]),
             presence_availability_name(w->r_view_avail[ui]),
             presence_status_name(presence_shown_status(mu->avail, mu->reported)),
             presence_availability_name(
                 presence_shown_availability(mu->avail, mu->reported)));
  assert_int_equal(info.online_count, (uint32_t)w->u[ui].online);
  /* The best status per device, the sessions of each. */
  size_t want_dev = 0;
  for (int d = 0; d < 3; d++) {
    if (!mu->dev_n[d]) continue;
    want_dev++;
    presence_status_t best =
        mu->dev_on[d] ? PRESENCE_ONLINE : PRESENCE_IDLE;
    size_t k = 0;
    while (k < answer.n_dev && k < 4 && strcmp(answer.dev[k], DEVS[d])) k++;
    if (k >= answer.n_dev || k >= 4 || answer.dev_st[k] != best ||
        answer.dev_count[k] != (uint32_t)mu->dev_n[d])
      fail_msg("user %s: device %s, model %d sessions %s (seed %llu)", uid,
               DEVS[d], mu->dev_n[d], presence_status_name(best),
               (unsigned long long)w->rng);
  }
  if (answer.n_dev != want_dev)
    fail_msg("user %s: %zu devices, model %zu (seed %llu)", uid, answer.n_dev,
             want_dev, (unsigned long long)w->rng);
  if (info.shown_version != w->r_sv[ui])
    fail_msg("user %s: shown version %llu, from the events %llu (seed %llu)",
             uid, (unsigned long long)info.shown_version,
             (unsigned long long)w->r_sv[ui], (unsigned long long)w->rng);
  if (w->retention_s && !w->u[ui].known) {
    /* Forgotten: as if never seen. */
    if (info.version || info.last_seen_ms)
      fail_msg("user %s: forgotten by the model, the store has version %llu "
               "(seed %llu)", uid, (unsigned long long)info.version,
               (unsigned long long)w->rng);
  } else if (w->u[ui].known && !info.version) {
    fail_msg("user %s: forgotten too early (seed %llu)", uid,
             (unsigned long long)w->rng);
  }
}

static void check_all(world_t *w) {
  uint64_t known = 0;
  for (int i = 0; i < N_USERS; i++) {
    check_user(w, i);
    known += (uint64_t)w->u[i].known;
  }
  if (w->retention_s) {
    presence_stats_t st;
    assert_int_equal(presence_stats(w->p, &st), 0);
    assert_int_equal(st.users_known, known);
  }
  for (int i = 0; i < N_SESSIONS; i++) {
    assert_int_equal(w->r_connected[i], w->s[i].connected);
    if (w->s[i].connected) assert_int_equal(w->r_status[i], w->s[i].status);
  }
}

static void step(world_t *w) {
  int si = (int)(next_rand(w) % N_SESSIONS);
  msession_t *s = &w->s[si];
  char sid[40], uid[16];
  session_id_of(sid, sizeof sid, si);
  uint32_t r = next_rand(w) % 1000;
  w->n_touched = 0;
  int rc;
  if (r < 350) { /* connect */
    int ui = (int)(next_rand(w) % N_USERS);
    snprintf(uid, sizeof uid, "u%d", ui);
    rc = completed(w, presence_session_open_device(w->p, sid, uid, NULL,
                                                     DEVS[si % 3], NULL,
                                                     op_done, op(w)));
    if (s->connected) {
      assert_int_equal(rc, PRESENCE_EEXIST);
    } else {
      assert_int_equal(rc, 0);
      s->connected = 1;
      s->user = ui;
      s->status = PRESENCE_ONLINE;
      w->u[ui].sessions++;
      w->u[ui].online++;
      w->u[ui].dev_n[si % 3]++;
      w->u[ui].dev_on[si % 3]++;
      w->u[ui].pending = 0;
      w->u[ui].known = 1;
      settle(w, ui, 1);
      touch_user(w, ui);
    }
  } else if (r < 650) { /* disconnect, timeout or kick */
    presence_reason_t reason = r < 600   ? PRESENCE_REASON_DISCONNECT
                               : r < 625 ? PRESENCE_REASON_TIMEOUT
                                         : PRESENCE_REASON_KICKED;
    rc = completed(w,
                   presence_session_end(w->p, sid, reason, op_done, op(w)));
    if (!s->connected) {
      assert_int_equal(rc, PRESENCE_ENOSESSION);
    } else {
      assert_int_equal(rc, 0);
      s->connected = 0;
      muser_t *u = &w->u[s->user];
      u->sessions--;
      if (s->status == PRESENCE_ONLINE) u->online--;
      u->dev_n[si % 3]--;
      if (s->status == PRESENCE_ONLINE) u->dev_on[si % 3]--;
      settle(w, s->user, reason != PRESENCE_REASON_KICKED);
      touch_user(w, s->user);
    }
  } else if (r < 700) {
    /* Status that people set. With real time (Redis) messages have no
     * expiry: the model would have to guess Redis's clock to the ms. */
    int ui = (int)(next_rand(w) % N_USERS);
    muser_t *u = &w->u[ui];
    snprintf(uid, sizeof uid, "u%d", ui);
    uint32_t k = next_rand(w);
    int had = u->avail != PRESENCE_AVAIL_AUTO || u->msg;
    if (r < 675) {
      presence_availability_t a = (presence_availability_t)(k % 4);
      assert_int_equal(completed(w, presence_user_set_availability(
                                        w->p, uid, a, op_done, op(w))),
                       0);
      if (a != PRESENCE_AVAIL_AUTO) u->known = 1;
      u->avail = a;
    } else {
      int msg = (int)(k % 3); /* 0: clear */
      int64_t exp = msg && (k & 8) && !w->kind->real_time
                        ? w->clock.wall + 1 + (k >> 8) % 3000
                        : 0;
      char text[16];
      snprintf(text, sizeof text, "m%d", msg);
      assert_int_equal(
          completed(w, presence_user_set_message(w->p, uid, msg ? text : NULL,
                                                 NULL, exp, op_done, op(w))),
          0);
      if (msg) u->known = 1;
      u->msg = msg;
      u->msg_expires = msg ? exp : 0;
    }
    /* Cleared while absent: forgettable from now on. */
    if (had && u->avail == PRESENCE_AVAIL_AUTO && !u->msg &&
        u->reported == PRESENCE_OFFLINE)
      u->offline_at = model_now(w);
    touch_user(w, ui);
  } else if (r < 950) { /* status */
    presence_status_t to = next_rand(w) & 1 ? PRESENCE_IDLE : PRESENCE_ONLINE;
    rc = completed(
        w, presence_session_set_status(w->p, sid, to, op_done, op(w)));
    if (!s->connected) {
      assert_int_equal(rc, PRESENCE_ENOSESSION);
    } else {
      assert_int_equal(rc, 0);
      if (s->status != to) {
        if (to == PRESENCE_ONLINE) w->u[s->user].online++;
        else w->u[s->user].online--;
        w->u[s->user].dev_on[si % 3] += to == PRESENCE_ONLINE ? 1 : -1;
        s->status = to;
      }
      settle(w, s->user, 1);
      touch_user(w, s->user);
    }
  } else if (r < 999) { /* time passes */
    /* With real time and no grace nothing depends on time: a short pause. */
    uint32_t span = w->grace ? w->grace / 2 + 1 : w->kind->real_time ? 10 : 700;
    w->kind->pass(w, next_rand(w) % span);
    for (int i = 0; i < N_USERS; i++) {
      muser_t *u = &w->u[i];
      if (u->msg && u->msg_expires && u->msg_expires <= w->clock.wall) {
        u->msg = 0;
        u->msg_expires = 0;
        if (u->avail == PRESENCE_AVAIL_AUTO && u->reported == PRESENCE_OFFLINE)
          u->offline_at = model_now(w);
        touch_user(w, i);
      }
    }
    for (int i = 0; i < N_USERS; i++) {
      muser_t *u = &w->u[i];
      if (!u->pending || u->deadline > model_now(w)) continue;
      if (w->kind->real_time) {
        /* The store's grace runs on its own clock and timer: its
         * user.offline must come, a little later at most. */
        w->touched[0] = i;
        if (!w->kind->run_until(w, user_settled, 2000 + w->grace))
          fail_msg("user u%d: still %s %lld ms after its grace (seed %llu)",
                   i, presence_status_name(u->reported),
                   (long long)(model_now(w) - u->deadline),
                   (unsigned long long)w->rng);
        w->n_touched = 0;
      } else {
        u->pending = 0;
        u->reported = PRESENCE_OFFLINE;
        u->offline_at = w->clock.mono;
      }
      touch_user(w, i);
    }
    forget_due(w);
  } else { /* the rare full cleanup */
    assert_int_equal(completed(w, presence_reset(w->p, op_done, op(w))), 0);
    memset(w->s, 0, sizeof(w->s));
    for (int i = 0; i < N_USERS; i++) {
      muser_t *u = &w->u[i];
      int64_t off = u->reported != PRESENCE_OFFLINE ? model_now(w)
                                                    : u->offline_at;
      *u = (muser_t){.known = u->known,
                     .offline_at = off,
                     .avail = u->avail, /* a cleanup keeps what people set */
                     .msg = u->msg,
                     .msg_expires = u->msg_expires};
      u->reported = PRESENCE_OFFLINE;
    }
    check_all(w);
    return;
  }
  for (int i = 0; i < w->n_touched; i++) check_user(w, w->touched[i]);
}

static void run(const store_kind_t *kind, uint32_t grace, uint32_t retention_s,
                uint64_t seed, long steps) {
  world_t *w = calloc(1, sizeof(*w));
  w->kind = kind;
  w->mono_base = 5;
  w->grace = grace;
  w->retention_s = retention_s;
  w->rng = seed;
  presence_options_t o;
  test_options(&o, &w->clock, 5, &w->alloc);
  o.offline_grace_ms = grace;
  o.offline_retention_s = retention_s;
  o.log_capacity = 1024;
  kind->open(w, &o);
  assert_int_equal(presence_new(&o, &w->p), 0);
  presence_on_event(w->p, on_event, w);
  kind->ready(w);
  w->last_seq = presence_log_last_seq(w->p);
  for (long i = 0; i < steps; i++) {
    step(w);
    if ((i & 4095) == 0) check_all(w);
  }
  check_all(w);
  assert_true(w->events > steps / 4); /* the run did exercise transitions */
  print_message("%ld watcher messages\n", w->watcher_messages);
  assert_true(w->watcher_messages > steps / 20);
  if (retention_s) {
    print_message("%ld users forgotten\n", w->forgotten);
    assert_true(w->forgotten > steps / 1000); /* and forgetting */
  }
  print_message("%s: %ld steps, %ld events\n", kind->name, steps, w->events);
  presence_free(w->p);
  kind->close(w);
  assert_int_equal(w->alloc.live, 0);
  free(w);
}

/* Steps of a run: the environment's figure, or the default. */
static long steps_from_env(const char *name, long fallback) {
  const char *s = getenv(name);
  return s ? atol(s) : fallback;
}

/* ---- the embedded store ------------------------------------------------ */

#ifndef PROPERTY_REDIS

static void memory_open(world_t *w, presence_options_t *o) {
  (void)w;
  o->store = NULL;
}

static void memory_ready(world_t *w) {
  (void)w;
}

/* Synchronous: whatever was asked is answered already. */
static bool memory_run_until(world_t *w, bool (*pred)(world_t *w),
                             int64_t ms) {
  (void)ms;
  return pred(w);
}

static void memory_pass(world_t *w, int64_t ms) {
  clock_advance(&w->clock, ms);
  presence_tick(w->p);
}

static void memory_close(world_t *w) {
  (void)w;
}

static const store_kind_t memory_store = {
    .name = "embedded store",
    .open = memory_open,
    .ready = memory_ready,
    .run_until = memory_run_until,
    .pass = memory_pass,
    .close = memory_close,
};
#endif

/* ---- the Redis store --------------------------------------------------- */

#ifdef PROPERTY_REDIS
static void redis_open(world_t *w, presence_options_t *o) {
  assert_int_equal(uv_loop_init(&w->loop), 0);
  srv_init(&w->server);
  presence_redis_options_t ro;
  memset(&ro, 0, sizeof ro);
  ro.loop = &w->loop;
  ro.url = w->server.url;
  ro.heartbeat_ms = 200;
  ro.lease_ms = 2000; /* a loaded test machine must not lose it */
  ro.command_timeout_ms = 5000;
  ro.stream_block_ms = 200;
  ro.reconnect_max_ms = 200;
  assert_int_equal(presence_store_redis_new(&ro, &w->store), 0);
  o->store = w->store;
  /* Redis keeps time itself: an injected clock would only disagree. */
  o->clock = (presence_clock_t){0};
}

static bool redis_run_until(world_t *w, bool (*pred)(world_t *w), int64_t ms) {
  int64_t end = now_ms() + ms;
  while (!pred(w)) {
    if (now_ms() >= end) return false;
    /* Blocks until some I/O or timer (the store's heartbeat at least). */
    uv_run(&w->loop, UV_RUN_ONCE);
  }
  return true;
}

static bool redis_is_ready(world_t *w) {
  return presence_redis_ready(w->store) == 1;
}

static void redis_ready(world_t *w) {
  if (!redis_run_until(w, redis_is_ready, 10000))
    fail_msg("the Redis store did not register");
}

static bool never(world_t *w) {
  (void)w;
  return false;
}

static void redis_pass(world_t *w, int64_t ms) {
  redis_run_until(w, never, ms);
}

static void redis_close(world_t *w) {
  loop_drain(&w->loop);
  uv_loop_close(&w->loop);
  srv_fini(&w->server);
}

static const store_kind_t redis_store = {
    .name = "Redis store",
    .real_time = true,
    .open = redis_open,
    .ready = redis_ready,
    .run_until = redis_run_until,
    .pass = redis_pass,
    .close = redis_close,
};

/* Each operation waits for its round trip, and time passes for real: fewer
 * steps than the embedded store's runs, the same model. */
static long redis_steps(void) {
  return steps_from_env("PRESENCE_PROPERTY_REDIS_STEPS", 3000);
}

static void redis_random_ops_without_grace(void **state) {
  (void)state;
  run(&redis_store, 0, 0, 0x9e3779b97f4a7c15ull, redis_steps());
}

static void redis_random_ops_with_grace(void **state) {
  (void)state;
  run(&redis_store, 300, 0, 0xd1b54a32d192ed03ull, redis_steps());
}
#endif

#ifndef PROPERTY_REDIS
static long memory_steps(void) {
  return steps_from_env("PRESENCE_PROPERTY_STEPS", 300000);
}

static void random_ops_without_grace(void **state) {
  (void)state;
  run(&memory_store, 0, 0, 0x9e3779b97f4a7c15ull, memory_steps());
}

static void random_ops_with_grace(void **state) {
  (void)state;
  run(&memory_store, GRACE_MS, 0, 0xd1b54a32d192ed03ull, memory_steps());
}

static void random_ops_with_grace_and_retention(void **state) {
  (void)state;
  run(&memory_store, GRACE_MS, 2, 0x8bb84b93962eacc9ull, memory_steps());
}
#endif

int main(void) {
#ifdef PROPERTY_REDIS
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(redis_random_ops_without_grace),
      cmocka_unit_test(redis_random_ops_with_grace),
  };
#else
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(random_ops_without_grace),
      cmocka_unit_test(random_ops_with_grace),
      cmocka_unit_test(random_ops_with_grace_and_retention),
  };
#endif
  return cmocka_run_group_tests(tests, NULL, NULL);
}
