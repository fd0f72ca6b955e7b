/* SPDX-License-Identifier: MIT */
/*
 * Status that people set: availability, the status message and its expiry,
 * devices and last_active, on the embedded store.
 *
 * The visibility table of docs/protocol.md is written here as data, and
 * every cell (availability x computed status x observer kind) is driven
 * through the real engine. The "exactly one message when what a watcher
 * sees changes" rule is checked over every single step from every state.
 */
#include "helpers.h"

static const presence_availability_t AV[] = {
    PRESENCE_AVAIL_AUTO, PRESENCE_AVAIL_DND, PRESENCE_AVAIL_AWAY,
    PRESENCE_AVAIL_INVISIBLE};
static const presence_status_t ST[] = {PRESENCE_ONLINE, PRESENCE_IDLE,
                                       PRESENCE_OFFLINE};

typedef enum { OBS_WATCHER, OBS_CHANNEL_MEMBER, OBS_BACKEND, OBS_N } obs_t;

/* The contract, cell by cell: [availability][computed][observer] ->
 * (status seen, availability seen). */
typedef struct cell {
  presence_status_t status;
  presence_availability_t availability;
} cell_t;

#define ON PRESENCE_ONLINE
#define ID PRESENCE_IDLE
#define OF PRESENCE_OFFLINE
#define AU PRESENCE_AVAIL_AUTO
#define DN PRESENCE_AVAIL_DND
#define AW PRESENCE_AVAIL_AWAY
#define IN PRESENCE_AVAIL_INVISIBLE
static const cell_t TABLE[4][3][OBS_N] = {
    /* auto */
    {/* online */ {{ON, AU}, {ON, AU}, {ON, AU}},
     /* idle */ {{ID, AU}, {ID, AU}, {ID, AU}},
     /* offline */ {{OF, AU}, {OF, AU}, {OF, AU}}},
    /* dnd */
    {{{ON, DN}, {ON, DN}, {ON, DN}},
     {{ON, DN}, {ON, DN}, {ID, DN}},
     {{OF, AU}, {OF, AU}, {OF, DN}}},
    /* away */
    {{{ID, AW}, {ID, AW}, {ON, AW}},
     {{ID, AW}, {ID, AW}, {ID, AW}},
     {{OF, AU}, {OF, AU}, {OF, AW}}},
    /* invisible */
    {{{OF, AU}, {OF, AU}, {ON, IN}},
     {{OF, AU}, {OF, AU}, {ID, IN}},
     {{OF, AU}, {OF, AU}, {OF, IN}}},
};

typedef struct fx {
  fake_clock_t clock;
  counting_alloc_t alloc;
  presence_t *p;
  recorder_t rec;
  int visible; /* events a watcher would be sent */
  uint64_t sv; /* user u's shown version, from its events */
} fx_t;

static int is_channel_event(const presence_event_t *ev) {
  return ev->type == PRESENCE_EV_CHANNEL_JOIN ||
         ev->type == PRESENCE_EV_CHANNEL_LEAVE ||
         ev->type == PRESENCE_EV_CHANNEL_UPDATE;
}

/* Every event of user u: the shown version moves by one exactly with the
 * events a watcher is sent, and stays put with every other. */
static void count_visible(presence_t *p, const presence_event_t *ev,
                          void *ud) {
  (void)p;
  fx_t *f = ud;
  int vis = presence_event_watcher_visible(ev);
  f->visible += vis;
  if (ev->user_id && strcmp(ev->user_id, "u") == 0 && !is_channel_event(ev)) {
    if (ev->shown_version != f->sv + (uint64_t)vis)
      fail_msg("%s (%s): shown version %llu after %llu, visible %d",
               presence_event_type_name(ev->type),
               presence_reason_name(ev->reason),
               (unsigned long long)ev->shown_version,
               (unsigned long long)f->sv, vis);
    f->sv = ev->shown_version;
  }
}

static fx_t *fx_new_grace(uint32_t retention_s, uint32_t grace_ms);
static fx_t *fx_new(uint32_t retention_s) { return fx_new_grace(retention_s, 0); }

static fx_t *fx_new_grace(uint32_t retention_s, uint32_t grace_ms) {
  fx_t *f = calloc(1, sizeof(*f));
  presence_options_t o;
  test_options(&o, &f->clock, 1000, &f->alloc);
  o.offline_retention_s = retention_s;
  o.offline_grace_ms = grace_ms;
  assert_int_equal(presence_new(&o, &f->p), 0);
  presence_on_event(f->p, record_cb, &f->rec);
  presence_on_event(f->p, count_visible, f);
  return f;
}

static void fx_free(fx_t *f) {
  presence_free(f->p);
  assert_int_equal(f->alloc.live, 0);
  free(f);
}

/* Bring user "u" to computed status c with session "s1" (or none). */
static void drive_status(fx_t *f, presence_status_t c) {
  presence_session_info_t si;
  int connected = presence_session_get(f->p, "s1", &si) == 0;
  if (c == PRESENCE_OFFLINE) {
    if (connected)
      assert_int_equal(presence_session_disconnect(f->p, "s1", NULL, NULL), 0);
    return;
  }
  if (!connected)
    assert_int_equal(
        presence_session_connect(f->p, "s1", "u", NULL, NULL, NULL), 0);
  assert_int_equal(presence_session_set_status(f->p, "s1", c, NULL, NULL), 0);
}

static cell_t observe(fx_t *f, obs_t obs) {
  presence_user_info_t info;
  assert_int_equal(presence_user_get(f->p, "u", &info), 0);
  if (obs == OBS_BACKEND) return (cell_t){info.status, info.availability};
  return (cell_t){presence_shown_status(info.availability, info.status),
                  presence_shown_availability(info.availability, info.status)};
}

static void visibility_table_every_cell(void **state) {
  (void)state;
  int cells = 0;
  for (int a = 0; a < 4; a++) {
    for (int c = 0; c < 3; c++) {
      for (int o = 0; o < OBS_N; o++) {
        fx_t *f = fx_new(0);
        /* Set before and after the sessions: the order must not matter. */
        if (o & 1) drive_status(f, ST[c]);
        assert_int_equal(
            presence_user_set_availability(f->p, "u", AV[a], NULL, NULL), 0);
        if (!(o & 1)) drive_status(f, ST[c]);
        cell_t got = observe(f, (obs_t)o);
        const cell_t *want = &TABLE[a][c][o];
        if (got.status != want->status ||
            got.availability != want->availability)
          fail_msg("%s x %s x observer %d: saw %s/%s, contract %s/%s",
                   presence_availability_name(AV[a]),
                   presence_status_name(ST[c]), o,
                   presence_status_name(got.status),
                   presence_availability_name(got.availability),
                   presence_status_name(want->status),
                   presence_availability_name(want->availability));
        cells++;
        fx_free(f);
      }
    }
  }
  assert_int_equal(cells, 4 * 3 * OBS_N);
}

/* From every (availability, status), every single step: a watcher gets one
 * message exactly when the cell it sees changes. */
static void watcher_gets_one_message_per_visible_change(void **state) {
  (void)state;
  int steps = 0, messages = 0;
  for (int a = 0; a < 4; a++) {
    for (int c = 0; c < 3; c++) {
      /* Steps: to another availability, or to another computed status. */
      for (int k = 0; k < 7; k++) {
        int a2 = a, c2 = c;
        if (k < 4) a2 = k;
        else c2 = k - 4;
        if (a2 == a && c2 == c) continue;
        /* offline -> idle is two steps (connect, then idle): skip. */
        if (ST[c] == PRESENCE_OFFLINE && ST[c2] == PRESENCE_IDLE) continue;
        fx_t *f = fx_new(0);
        drive_status(f, ST[c]);
        presence_user_set_availability(f->p, "u", AV[a], NULL, NULL);
        cell_t before = observe(f, OBS_WATCHER);
        presence_user_info_t i0;
        assert_int_equal(presence_user_get(f->p, "u", &i0), 0);
        f->visible = 0;
        f->rec.n = 0;
        if (a2 != a)
          assert_int_equal(
              presence_user_set_availability(f->p, "u", AV[a2], NULL, NULL),
              0);
        else
          drive_status(f, ST[c2]);
        cell_t after = observe(f, OBS_WATCHER);
        presence_user_info_t i1;
        assert_int_equal(presence_user_get(f->p, "u", &i1), 0);
        /* What watchers are shown as the version moves with what they
         * see, never with a hidden change. */
        assert_int_equal(i1.shown_version - i0.shown_version,
                         (uint64_t)f->visible);
        int changed = before.status != after.status ||
                      before.availability != after.availability;
        if (f->visible != changed)
          fail_msg("%s/%s -> %s/%s: watcher sees %s, sent %d messages",
                   presence_availability_name(AV[a]),
                   presence_status_name(ST[c]),
                   presence_availability_name(AV[a2]),
                   presence_status_name(ST[c2]),
                   changed ? "a change" : "no change", f->visible);
        /* Backends see every real change: one user.availability for a new
         * setting, whatever it shows. */
        if (a2 != a) {
          assert_int_equal(f->rec.n, 1);
          assert_int_equal(f->rec.ev[0].type, PRESENCE_EV_USER_AVAILABILITY);
          assert_int_equal(f->rec.ev[0].reason, PRESENCE_REASON_EXPLICIT);
        }
        steps++;
        messages += f->visible;
        fx_free(f);
      }
    }
  }
  print_message("%d steps, %d watcher messages\n", steps, messages);
  assert_int_equal(steps, 56);
  assert_true(messages > 10 && messages < steps);
}

static void availability_kept_across_reconnects(void **state) {
  (void)state;
  fx_t *f = fx_new(1);
  presence_session_connect(f->p, "s1", "u", NULL, NULL, NULL);
  assert_int_equal(
      presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_DND, NULL, NULL),
      0);
  f->rec.n = 0;
  /* The same again: nothing. */
  assert_int_equal(
      presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_DND, NULL, NULL),
      0);
  assert_int_equal(f->rec.n, 0);
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  /* Offline: offline to everyone, the setting kept (backends see it). */
  presence_user_info_t info;
  presence_user_get(f->p, "u", &info);
  assert_int_equal(info.status, PRESENCE_OFFLINE);
  assert_int_equal(info.availability, PRESENCE_AVAIL_DND);
  /* Retention does not forget a user holding a setting. */
  clock_advance(&f->clock, 5000);
  presence_tick(f->p);
  presence_session_connect(f->p, "s2", "u", NULL, NULL, NULL);
  presence_user_get(f->p, "u", &info);
  assert_int_equal(info.availability, PRESENCE_AVAIL_DND);
  assert_int_equal(presence_shown_status(info.availability, info.status),
                   PRESENCE_ONLINE);
  /* Cleared and offline: forgotten after the retention like anyone. */
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_AUTO, NULL, NULL);
  presence_session_disconnect(f->p, "s2", NULL, NULL);
  clock_advance(&f->clock, 3000);
  presence_tick(f->p);
  presence_user_get(f->p, "u", &info);
  assert_int_equal(info.version, 0);
  /* auto on a user never seen makes no record and no event. */
  f->rec.n = 0;
  presence_user_set_availability(f->p, "nobody", PRESENCE_AVAIL_AUTO, NULL,
                                 NULL);
  presence_user_clear_message(f->p, "nobody", NULL, NULL);
  assert_int_equal(f->rec.n, 0);
  presence_stats_t st;
  presence_stats(f->p, &st);
  assert_int_equal(st.users_known, 0);
  fx_free(f);
}

static void message_set_change_clear(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  presence_session_connect(f->p, "s1", "u", NULL, NULL, NULL);
  f->rec.n = 0;
  assert_int_equal(presence_user_set_message(f->p, "u", "In a meeting",
                                             "\xf0\x9f\x93\x85", 0, NULL, NULL),
                   0);
  assert_int_equal(f->rec.n, 1);
  assert_int_equal(f->rec.ev[0].type, PRESENCE_EV_USER_MESSAGE);
  assert_int_equal(f->rec.ev[0].reason, PRESENCE_REASON_EXPLICIT);
  presence_user_info_t info;
  presence_user_get(f->p, "u", &info);
  assert_string_equal(info.message, "In a meeting");
  assert_string_equal(info.emoji, "\xf0\x9f\x93\x85");
  assert_int_equal(info.message_expires_ms, 0);
  assert_int_equal(info.message_set_ms, f->clock.wall);
  uint64_t v = info.version;
  /* Same again: nothing. Another emoji: one event. */
  presence_user_set_message(f->p, "u", "In a meeting", "\xf0\x9f\x93\x85", 0,
                            NULL, NULL);
  assert_int_equal(f->rec.n, 1);
  presence_user_set_message(f->p, "u", "In a meeting", ":calendar:", 0, NULL,
                            NULL);
  assert_int_equal(f->rec.n, 2);
  presence_user_get(f->p, "u", &info);
  assert_int_equal(info.version, v + 1);
  /* Emoji only, then clear (twice: the second is nothing). */
  presence_user_set_message(f->p, "u", "", ":coffee:", 0, NULL, NULL);
  presence_user_get(f->p, "u", &info);
  assert_null(info.message);
  assert_string_equal(info.emoji, ":coffee:");
  presence_user_clear_message(f->p, "u", NULL, NULL);
  presence_user_clear_message(f->p, "u", NULL, NULL);
  assert_int_equal(f->rec.n, 4);
  presence_user_get(f->p, "u", &info);
  assert_null(info.message);
  assert_null(info.emoji);
  fx_free(f);
}

static void message_expires_once(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  int64_t t0 = f->clock.wall;
  /* Three users, two expiries at the same instant, one later. */
  presence_user_set_message(f->p, "a", "lunch", NULL, t0 + 60000, NULL, NULL);
  presence_user_set_message(f->p, "b", "lunch", NULL, t0 + 60000, NULL, NULL);
  presence_user_set_message(f->p, "c", "vacation", NULL, t0 + 90000, NULL,
                            NULL);
  /* b changes its mind: its old expiry must not fire. */
  presence_user_set_message(f->p, "b", "back soon", NULL, t0 + 120000, NULL,
                            NULL);
  f->rec.n = 0;
  assert_int_equal(presence_tick(f->p), 60000);
  clock_advance(&f->clock, 59999);
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 0);
  clock_advance(&f->clock, 1);
  assert_int_equal(presence_tick(f->p), 30000);
  assert_int_equal(f->rec.n, 1);
  assert_int_equal(f->rec.ev[0].type, PRESENCE_EV_USER_MESSAGE);
  assert_int_equal(f->rec.ev[0].reason, PRESENCE_REASON_EXPIRED);
  assert_string_equal(f->rec.ev[0].user_id, "a");
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 1);
  clock_advance(&f->clock, 100000);
  assert_int_equal(presence_tick(f->p), -1);
  assert_int_equal(f->rec.n, 3);
  assert_string_equal(f->rec.ev[1].user_id, "c");
  assert_string_equal(f->rec.ev[2].user_id, "b");
  presence_user_info_t info;
  presence_user_get(f->p, "b", &info);
  assert_null(info.message);
  /* An explicit clear before the expiry: the expiry never fires. */
  presence_user_set_message(f->p, "a", "x", NULL, f->clock.wall + 10, NULL,
                            NULL);
  presence_user_clear_message(f->p, "a", NULL, NULL);
  f->rec.n = 0;
  clock_advance(&f->clock, 20);
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 0);
  fx_free(f);
}

static void many_expiries_in_one_tick(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  char uid[32];
  int64_t t0 = f->clock.wall;
  for (int i = 0; i < 5000; i++) {
    snprintf(uid, sizeof uid, "user-%d", i);
    /* Deadlines shuffled over 50 ms, every one set twice. */
    int64_t at = t0 + 1000 + (i * 7919) % 50;
    presence_user_set_message(f->p, uid, "x", NULL, at + 5, NULL, NULL);
    presence_user_set_message(f->p, uid, "y", NULL, at, NULL, NULL);
  }
  int expired = 0;
  f->rec.n = 0;
  int64_t last = 0;
  for (int ms = 0; ms <= 1100; ms++) {
    clock_advance(&f->clock, 1);
    presence_tick(f->p);
    /* recorder holds 256: count and reset as we go, checking order */
    for (size_t k = 0; k < f->rec.n; k++) {
      assert_int_equal(f->rec.ev[k].reason, PRESENCE_REASON_EXPIRED);
      assert_true(f->rec.ev[k].ts >= last);
      last = f->rec.ev[k].ts;
      expired++;
    }
    f->rec.n = 0;
  }
  assert_int_equal(expired, 5000);
  fx_free(f);
}

static void bad_input_stores_nothing(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  int64_t now = f->clock.wall;
  char long_text[600], ok_text[600];
  memset(long_text, 'a', 129);
  long_text[129] = '\0';
  /* 128 three-byte characters: 384 bytes, within the limit. */
  for (int i = 0; i < 128; i++) memcpy(ok_text + i * 3, "\xe2\x82\xac", 3);
  ok_text[384] = '\0';
  char long_emoji[80];
  memset(long_emoji, 'e', 65);
  long_emoji[65] = '\0';
  char long_dev[40];
  memset(long_dev, 'd', 33);
  long_dev[33] = '\0';

  assert_int_equal(presence_user_set_availability(
                       f->p, "u", (presence_availability_t)7, NULL, NULL),
                   PRESENCE_EAVAILABILITY);
  presence_availability_t a;
  assert_int_equal(presence_availability_parse("busy", &a),
                   PRESENCE_EAVAILABILITY);
  assert_int_equal(presence_availability_parse("invisible", &a), 0);
  assert_int_equal(a, PRESENCE_AVAIL_INVISIBLE);
  assert_int_equal(presence_user_set_message(f->p, "u", long_text, NULL, 0,
                                             NULL, NULL),
                   PRESENCE_EMESSAGE);
  assert_int_equal(presence_user_set_message(f->p, "u", "bad \xff utf8", NULL,
                                             0, NULL, NULL),
                   PRESENCE_EMESSAGE);
  assert_int_equal(presence_user_set_message(f->p, "u", "over\xc0\xaflong",
                                             NULL, 0, NULL, NULL),
                   PRESENCE_EMESSAGE);
  assert_int_equal(presence_user_set_message(f->p, "u", "line\nbreak", NULL,
                                             0, NULL, NULL),
                   PRESENCE_EMESSAGE);
  assert_int_equal(presence_user_set_message(f->p, "u", "ok", long_emoji, 0,
                                             NULL, NULL),
                   PRESENCE_EMESSAGE);
  assert_int_equal(
      presence_user_set_message(f->p, "u", "ok", NULL, now, NULL, NULL),
      PRESENCE_EEXPIRY);
  assert_int_equal(
      presence_user_set_message(f->p, "u", "ok", NULL, now - 1, NULL, NULL),
      PRESENCE_EEXPIRY);
  assert_int_equal(presence_user_set_message(
                       f->p, "u", "ok", NULL,
                       now + PRESENCE_MESSAGE_TTL_MAX_MS + 1, NULL, NULL),
                   PRESENCE_EEXPIRY);
  assert_int_equal(presence_user_set_message(f->p, "bad\x01id", "ok", NULL, 0,
                                             NULL, NULL),
                   PRESENCE_EID);
  const char *bad_devs[] = {"", "a b", "x\n", "w\x7f", "caf\xc3\xa9",
                            long_dev, "a/b"};
  for (size_t i = 0; i < sizeof bad_devs / sizeof *bad_devs; i++)
    assert_int_equal(presence_session_open_device(f->p, "s1", "u", NULL,
                                                  bad_devs[i], NULL, NULL,
                                                  NULL),
                     PRESENCE_EDEVICE);
  /* Nothing stored, nothing emitted. */
  assert_int_equal(f->rec.n, 0);
  presence_stats_t st;
  presence_stats(f->p, &st);
  assert_int_equal(st.users_known, 0);
  assert_int_equal(st.sessions, 0);
  /* The limits themselves are accepted. */
  assert_int_equal(
      presence_user_set_message(f->p, "u", ok_text, NULL,
                                now + PRESENCE_MESSAGE_TTL_MAX_MS, NULL, NULL),
      0);
  memset(long_emoji, 'e', 64);
  long_emoji[64] = '\0';
  long_dev[32] = '\0';
  assert_int_equal(
      presence_user_set_message(f->p, "u", ok_text, long_emoji, 0, NULL, NULL),
      0);
  assert_int_equal(presence_session_open_device(f->p, "s1", "u", NULL,
                                                long_dev, NULL, NULL, NULL),
                   0);
  assert_string_equal(presence_err_name(PRESENCE_EDEVICE), "EDEVICE");
  assert_string_equal(presence_err_name(PRESENCE_EEXPIRY), "EEXPIRY");
  fx_free(f);
}

static const presence_device_status_t *
device_of(const presence_user_info_t *info, const char *dev) {
  for (size_t i = 0; i < info->n_devices; i++)
    if (strcmp(info->devices[i].device, dev) == 0) return &info->devices[i];
  return NULL;
}

typedef struct dev_seen {
  char device[40];
  presence_status_t from, to;
  int visible;
  int n;
} dev_seen_t;

static void on_session_event(presence_t *p, const presence_event_t *ev,
                             void *ud) {
  (void)p;
  dev_seen_t *d = ud;
  if (ev->type > PRESENCE_EV_SESSION_STATUS) return;
  snprintf(d->device, sizeof d->device, "%s", ev->device ? ev->device : "");
  d->from = ev->device_from;
  d->to = ev->device_to;
  d->visible = presence_event_watcher_visible(ev);
  d->n++;
}

static void devices_best_status_each(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  dev_seen_t d = {0};
  presence_on_event(f->p, on_session_event, &d);
  presence_session_connect(f->p, "w1", "u", NULL, NULL, NULL);
  assert_string_equal(d.device, "web"); /* the default */
  assert_int_equal(d.from, PRESENCE_OFFLINE);
  assert_int_equal(d.to, PRESENCE_ONLINE);
  presence_session_open_device(f->p, "m1", "u", NULL, "mobile", NULL, NULL,
                               NULL);
  presence_session_open_device(f->p, "m2", "u", NULL, "mobile", NULL, NULL,
                               NULL);
  assert_int_equal(d.from, PRESENCE_ONLINE); /* m1 was online already */
  assert_int_equal(d.visible, 0);
  presence_session_open_device(f->p, "d1", "u", NULL, "vr-headset", NULL,
                               NULL, NULL);
  presence_session_info_t si;
  assert_int_equal(presence_session_get(f->p, "d1", &si), 0);
  assert_string_equal(si.device, "vr-headset");

  presence_session_set_status(f->p, "m1", PRESENCE_IDLE, NULL, NULL);
  assert_int_equal(d.to, PRESENCE_ONLINE); /* m2 still online */
  assert_int_equal(d.visible, 0);
  presence_session_set_status(f->p, "m2", PRESENCE_IDLE, NULL, NULL);
  assert_string_equal(d.device, "mobile");
  assert_int_equal(d.from, PRESENCE_ONLINE);
  assert_int_equal(d.to, PRESENCE_IDLE);
  assert_int_equal(d.visible, 1);

  presence_user_info_t info;
  presence_user_get(f->p, "u", &info);
  assert_int_equal(info.n_devices, 3);
  assert_int_equal(device_of(&info, "web")->status, PRESENCE_ONLINE);
  assert_int_equal(device_of(&info, "mobile")->status, PRESENCE_IDLE);
  assert_int_equal(device_of(&info, "mobile")->session_count, 2);
  assert_int_equal(device_of(&info, "vr-headset")->status, PRESENCE_ONLINE);

  /* Under dnd a device going idle changes nothing a watcher sees; under
   * invisible, neither does a whole device going away. */
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_DND, NULL, NULL);
  presence_session_set_status(f->p, "d1", PRESENCE_IDLE, NULL, NULL);
  assert_int_equal(d.from, PRESENCE_ONLINE);
  assert_int_equal(d.to, PRESENCE_IDLE);
  assert_int_equal(d.visible, 0);
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_INVISIBLE, NULL,
                                 NULL);
  presence_session_disconnect(f->p, "d1", NULL, NULL);
  assert_int_equal(d.to, PRESENCE_OFFLINE);
  assert_int_equal(d.visible, 0);
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_AUTO, NULL, NULL);
  presence_session_disconnect(f->p, "m1", NULL, NULL);
  assert_int_equal(d.to, PRESENCE_IDLE); /* m2 */
  presence_session_disconnect(f->p, "m2", NULL, NULL);
  assert_int_equal(d.to, PRESENCE_OFFLINE);
  assert_int_equal(d.visible, 1);
  presence_user_get(f->p, "u", &info);
  assert_int_equal(info.n_devices, 1);
  assert_string_equal(info.devices[0].device, "web");
  /* A user back to one device kind: the fast path again, still right. */
  presence_session_disconnect(f->p, "w1", NULL, NULL);
  presence_session_open_device(f->p, "m3", "u", NULL, "mobile", NULL, NULL,
                               NULL);
  presence_user_get(f->p, "u", &info);
  assert_int_equal(info.n_devices, 1);
  assert_string_equal(info.devices[0].device, "mobile");
  fx_free(f);
}

static void last_active_beside_last_seen(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  presence_session_connect(f->p, "s1", "u", NULL, NULL, NULL);
  presence_user_info_t info;
  clock_advance(&f->clock, 1000);
  presence_user_get(f->p, "u", &info);
  assert_int_equal(info.last_active_ms, f->clock.wall); /* online: now */
  int64_t went_idle = f->clock.wall;
  presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL);
  clock_advance(&f->clock, 5000);
  presence_user_get(f->p, "u", &info);
  assert_int_equal(info.status, PRESENCE_IDLE);
  assert_int_equal(info.last_active_ms, went_idle);
  assert_int_equal(info.last_seen_ms, f->clock.wall);
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  clock_advance(&f->clock, 5000);
  presence_user_get(f->p, "u", &info);
  assert_int_equal(info.last_active_ms, went_idle);
  assert_int_equal(info.last_seen_ms, f->clock.wall - 5000);
  fx_free(f);
}

typedef struct log_got {
  int n;
  presence_event_t ev[8];
  char msg[64], emoji[16];
} log_got_t;

static void log_cb(presence_t *p, int status, const presence_event_t *evs,
                   size_t n, void *ud) {
  (void)p;
  (void)status;
  log_got_t *got = ud;
  for (size_t i = 0; i < n && i < 8; i++) {
    got->ev[i] = evs[i];
    if (evs[i].type == PRESENCE_EV_USER_MESSAGE) {
      snprintf(got->msg, sizeof got->msg, "%s", evs[i].message);
      snprintf(got->emoji, sizeof got->emoji, "%s", evs[i].emoji);
    }
  }
  got->n = (int)n;
}

static void events_carry_the_setting_through_the_log(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  presence_session_connect(f->p, "s1", "u", NULL, NULL, NULL);
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_AWAY, NULL, NULL);
  presence_user_set_message(f->p, "u", "gone fishing", ":fish:",
                            f->clock.wall + 5000, NULL, NULL);
  presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL);
  log_got_t got = {0};
  assert_int_equal(presence_log_read(f->p, 0, 8, log_cb, &got), 0);
  assert_int_equal(got.n, 6);
  assert_int_equal(got.ev[2].type, PRESENCE_EV_USER_AVAILABILITY);
  assert_int_equal(got.ev[2].availability_from, PRESENCE_AVAIL_AUTO);
  assert_int_equal(got.ev[2].availability_to, PRESENCE_AVAIL_AWAY);
  assert_int_equal(got.ev[2].from, PRESENCE_ONLINE);
  assert_int_equal(got.ev[3].type, PRESENCE_EV_USER_MESSAGE);
  assert_string_equal(got.msg, "gone fishing");
  assert_string_equal(got.emoji, ":fish:");
  assert_int_equal(got.ev[3].message_expires_ms, f->clock.wall + 5000);
  assert_int_equal(got.ev[4].type, PRESENCE_EV_SESSION_STATUS);
  assert_int_equal(got.ev[4].availability_to, PRESENCE_AVAIL_AWAY);
  assert_int_equal(got.ev[5].type, PRESENCE_EV_USER_IDLE);
  assert_int_equal(got.ev[5].availability_to, PRESENCE_AVAIL_AWAY);
  /* Away already shows idle: the user going idle shows nothing new. */
  assert_int_equal(presence_event_watcher_visible(&got.ev[5]), 0);
  fx_free(f);
}

/* What other channel members are shown of a member's status in the
 * channel, written out rather than derived (docs/protocol.md 6.1): dnd
 * shows online, away idle; an invisible member is absent (-1). */
static const int MEMBER_SHOWN[4][3] = {
    /* auto */ {ON, ID, OF},
    /* dnd */ {ON, ON, OF},
    /* away */ {ID, ID, OF},
    /* invisible */ {-1, -1, -1},
};

/* Every cell: availability x event kind x status before x after x data
 * changed or not. A member gets a frame exactly when what it is shown
 * changes. */
static void member_visibility_every_cell(void **state) {
  (void)state;
  const presence_event_type_t kinds[] = {PRESENCE_EV_CHANNEL_JOIN,
                                         PRESENCE_EV_CHANNEL_UPDATE,
                                         PRESENCE_EV_CHANNEL_LEAVE};
  int cells = 0, shown = 0;
  for (int a = 0; a < 4; a++)
    for (int k = 0; k < 3; k++)
      for (int fi = 0; fi < 3; fi++)
        for (int ti = 0; ti < 3; ti++)
          for (int data = 0; data < 2; data++) {
            presence_event_t ev = {0};
            ev.type = kinds[k];
            ev.channel = "room";
            ev.user_id = "u";
            ev.availability_from = ev.availability_to = AV[a];
            ev.from = ST[fi];
            ev.to = ST[ti];
            ev.flags = data ? PRESENCE_EVENT_DATA_CHANGED : 0;
            int want;
            if (MEMBER_SHOWN[a][0] < 0) want = 0;
            else if (kinds[k] != PRESENCE_EV_CHANNEL_UPDATE) want = 1;
            else
              want = data || MEMBER_SHOWN[a][fi] != MEMBER_SHOWN[a][ti];
            if (presence_event_member_visible(&ev) != want)
              fail_msg("%s %s %s -> %s data %d: member visible %d, want %d",
                       presence_availability_name(AV[a]),
                       presence_event_type_name(kinds[k]),
                       presence_status_name(ST[fi]),
                       presence_status_name(ST[ti]), data,
                       presence_event_member_visible(&ev), want);
            cells++;
            shown += want;
          }
  assert_int_equal(cells, 4 * 3 * 3 * 3 * 2);
  assert_true(shown > 0 && shown < cells);
  /* Not a channel event: never a member's frame. */
  presence_event_t ev = {0};
  ev.type = PRESENCE_EV_USER_ONLINE;
  ev.to = PRESENCE_ONLINE;
  assert_int_equal(presence_event_member_visible(&ev), 0);
  assert_int_equal(presence_event_member_visible(NULL), 0);
}

/* The embedded store's channel events carry what masking needs: the
 * member's availability and whether its data changed, so a dnd member's
 * idle -> online in the channel is no news to the others and a data change
 * under dnd is. */
typedef struct member_seen {
  int updates, visible, data_changed;
  presence_availability_t av;
} member_seen_t;

static void count_member(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  member_seen_t *m = ud;
  if (ev->type != PRESENCE_EV_CHANNEL_UPDATE) return;
  m->updates++;
  m->visible += presence_event_member_visible(ev);
  m->data_changed += (ev->flags & PRESENCE_EVENT_DATA_CHANGED) != 0;
  m->av = ev->availability_to;
}

static void member_changes_masked_by_availability(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  member_seen_t m = {0};
  presence_on_event(f->p, count_member, &m);
  assert_int_equal(presence_session_connect(f->p, "s1", "u", NULL, NULL, NULL),
                   0);
  assert_int_equal(presence_channel_join(f->p, "s1", "room", NULL, NULL, NULL),
                   0);
  assert_int_equal(presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_DND,
                                                  NULL, NULL),
                   0);
  /* idle, then online: two updates in the channel, neither shown. */
  assert_int_equal(
      presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL), 0);
  assert_int_equal(
      presence_session_set_status(f->p, "s1", PRESENCE_ONLINE, NULL, NULL), 0);
  assert_int_equal(m.updates, 2);
  assert_int_equal(m.visible, 0);
  assert_int_equal(m.data_changed, 0);
  assert_int_equal(m.av, PRESENCE_AVAIL_DND);
  /* Data under dnd: shown. */
  assert_int_equal(
      presence_channel_update(f->p, "s1", "room", "{\"t\":1}", NULL, NULL), 0);
  assert_int_equal(m.updates, 3);
  assert_int_equal(m.visible, 1);
  assert_int_equal(m.data_changed, 1);
  /* A second session joining with new data while the member is idle:
   * status and data change in one update, shown for the data. */
  assert_int_equal(
      presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL), 0);
  assert_int_equal(presence_session_connect(f->p, "s2", "u", NULL, NULL, NULL),
                   0);
  assert_int_equal(
      presence_channel_join(f->p, "s2", "room", "{\"t\":2}", NULL, NULL), 0);
  assert_int_equal(m.updates, 5);
  assert_int_equal(m.visible, 2);
  assert_int_equal(m.data_changed, 2);
  /* Invisible: nothing reaches the others, data included. */
  assert_int_equal(presence_user_set_availability(
                       f->p, "u", PRESENCE_AVAIL_INVISIBLE, NULL, NULL),
                   0);
  assert_int_equal(
      presence_channel_update(f->p, "s2", "room", "{\"t\":3}", NULL, NULL), 0);
  assert_int_equal(m.updates, 6);
  assert_int_equal(m.visible, 2);
  assert_int_equal(m.av, PRESENCE_AVAIL_INVISIBLE);
  fx_free(f);
}

/* Each kind of event packs only the fields it carries (docs/internals/
 * core.md, "Packed events"): every field must come back from the log as it
 * went in, the rare ones (message, emoji, expiry, channel, count, session
 * ids, last_seen) and the absent ones (NULL, 0) alike. */
typedef struct field_check {
  int n;
  int64_t t0;
} field_check_t;

static void check_fields(presence_t *p, int status, const presence_event_t *evs,
                         size_t n, void *ud) {
  (void)p;
  field_check_t *fc = ud;
  assert_int_equal(status, 0);
  fc->n = (int)n;
  for (size_t i = 0; i < n; i++) {
    const presence_event_t *e = &evs[i];
    assert_int_equal(e->seq, i + 1);
    assert_int_equal(e->ts_ms, fc->t0);
    assert_non_null(e->instance_id);
    assert_null(e->session_ids);
    assert_int_equal(e->n_session_ids, 0);
  }
  /* 1 session.connected: meta, device "mobile", no message or channel. */
  const presence_event_t *e = &evs[0];
  assert_int_equal(e->type, PRESENCE_EV_SESSION_CONNECTED);
  assert_string_equal(e->session_id, "s1");
  assert_string_equal(e->user_id, "u");
  assert_string_equal(e->meta, "{\"m\":1}");
  assert_string_equal(e->device, "mobile");
  assert_int_equal(e->device_from, PRESENCE_OFFLINE);
  assert_int_equal(e->device_to, PRESENCE_ONLINE);
  assert_int_equal(e->flags & PRESENCE_EVENT_USER_FOLLOWS,
                   PRESENCE_EVENT_USER_FOLLOWS);
  assert_null(e->message);
  assert_null(e->emoji);
  assert_null(e->channel);
  assert_int_equal(e->count, 0);
  assert_int_equal(e->last_seen_ms, 0);
  assert_int_equal(e->message_expires_ms, 0);
  /* 2 user.online: last_seen, the causing session and its device. */
  e = &evs[1];
  assert_int_equal(e->type, PRESENCE_EV_USER_ONLINE);
  assert_string_equal(e->session_id, "s1");
  assert_null(e->meta);
  assert_int_equal(e->last_seen_ms, fc->t0);
  assert_int_equal(e->user_version, 1);
  assert_int_equal(e->shown_version, 1);
  assert_string_equal(e->device, "mobile");
  /* 3 user.availability dnd. */
  e = &evs[2];
  assert_int_equal(e->type, PRESENCE_EV_USER_AVAILABILITY);
  assert_int_equal(e->availability_from, PRESENCE_AVAIL_AUTO);
  assert_int_equal(e->availability_to, PRESENCE_AVAIL_DND);
  assert_null(e->session_id);
  assert_null(e->device);
  /* With the user's devices: watchers are shown each one masked. */
  assert_int_equal(e->n_devices, 1);
  assert_string_equal(e->devices[0].device, "mobile");
  assert_int_equal(e->devices[0].status, PRESENCE_ONLINE);
  assert_int_equal(e->devices[0].session_count, 1);
  assert_int_equal(evs[3].n_devices, 0);
  assert_null(evs[3].devices);
  /* 4 user.message with text, emoji and expiry. */
  e = &evs[3];
  assert_int_equal(e->type, PRESENCE_EV_USER_MESSAGE);
  assert_string_equal(e->message, "h\xc3\xa9llo");
  assert_string_equal(e->emoji, ":x:");
  assert_int_equal(e->message_expires_ms, fc->t0 + 60000);
  assert_int_equal(e->availability_to, PRESENCE_AVAIL_DND);
  assert_null(e->channel);
  /* 5 user.message with an emoji alone, no expiry. */
  e = &evs[4];
  assert_null(e->message);
  assert_string_equal(e->emoji, ":y:");
  assert_int_equal(e->message_expires_ms, 0);
  /* 6 channel.join: channel, data, count. */
  e = &evs[5];
  assert_int_equal(e->type, PRESENCE_EV_CHANNEL_JOIN);
  assert_string_equal(e->channel, "room");
  assert_string_equal(e->meta, "{\"d\":2}");
  assert_int_equal(e->count, 1);
  assert_int_equal(e->availability_to, PRESENCE_AVAIL_DND);
  assert_null(e->message);
  assert_null(e->emoji);
  /* 7 user.message cleared: nothing left of the message. */
  e = &evs[6];
  assert_int_equal(e->type, PRESENCE_EV_USER_MESSAGE);
  assert_null(e->message);
  assert_null(e->emoji);
  assert_int_equal(e->message_expires_ms, 0);
}

static void every_field_survives_the_log(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  assert_int_equal(presence_session_open_device(f->p, "s1", "u", "{\"m\":1}",
                                                "mobile", NULL, NULL, NULL),
                   0);
  assert_int_equal(presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_DND,
                                                  NULL, NULL),
                   0);
  assert_int_equal(presence_user_set_message(f->p, "u", "h\xc3\xa9llo", ":x:",
                                             f->clock.wall + 60000, NULL, NULL),
                   0);
  assert_int_equal(
      presence_user_set_message(f->p, "u", NULL, ":y:", 0, NULL, NULL), 0);
  assert_int_equal(
      presence_channel_join(f->p, "s1", "room", "{\"d\":2}", NULL, NULL), 0);
  assert_int_equal(presence_user_clear_message(f->p, "u", NULL, NULL), 0);
  field_check_t fc = {0, f->clock.wall};
  assert_int_equal(presence_log_read(f->p, 0, 16, check_fields, &fc), 0);
  assert_int_equal(fc.n, 7);
  fx_free(f);
}

/* A user.availability's devices as a callback gets them (through the
 * engine's queue): the best status per kind, and the count of sessions. */
typedef struct avail_devs {
  int n;
  char text[128];
} avail_devs_t;

static void on_avail(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  avail_devs_t *a = ud;
  size_t len = 0;
  a->n++;
  for (size_t i = 0; i < ev->n_devices; i++)
    len += (size_t)snprintf(a->text + len, sizeof a->text - len, "%s=%s/%u ",
                            ev->devices[i].device,
                            presence_status_name(ev->devices[i].status),
                            (unsigned)ev->devices[i].session_count);
}

static void availability_carries_devices(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  avail_devs_t a = {0};
  assert_true(presence_on(f->p, PRESENCE_EV_USER_AVAILABILITY, on_avail, &a) >
              0);
  presence_session_open_device(f->p, "s1", "u", NULL, "web", NULL, NULL, NULL);
  presence_session_open_device(f->p, "s2", "u", NULL, "mobile", NULL, NULL,
                               NULL);
  presence_session_open_device(f->p, "s3", "u", NULL, "mobile", NULL, NULL,
                               NULL);
  presence_session_set_status(f->p, "s2", PRESENCE_IDLE, NULL, NULL);
  presence_session_set_status(f->p, "s3", PRESENCE_IDLE, NULL, NULL);
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_DND, NULL, NULL);
  assert_int_equal(a.n, 1);
  /* One entry per kind, in the store's order (the snapshot's). */
  assert_non_null(strstr(a.text, "web=online/1 "));
  assert_non_null(strstr(a.text, "mobile=idle/2 "));
  assert_int_equal(strlen(a.text), strlen("web=online/1 mobile=idle/2 "));
  /* No session: no devices. */
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  presence_session_disconnect(f->p, "s2", NULL, NULL);
  presence_session_disconnect(f->p, "s3", NULL, NULL);
  a.text[0] = '\0';
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_AUTO, NULL, NULL);
  assert_int_equal(a.n, 2);
  assert_string_equal(a.text, "");
  fx_free(f);
}

/* Device words through the log: the built-in ones are packed as a code,
 * the application's own as a string; both come back as they went in. */
typedef struct dev_words {
  int n;
  char dev[4][PRESENCE_DEVICE_MAX + 1];
} dev_words_t;

static void collect_devices(presence_t *p, int status,
                            const presence_event_t *evs, size_t n, void *ud) {
  (void)p;
  (void)status;
  dev_words_t *d = ud;
  for (size_t i = 0; i < n; i++)
    if (evs[i].type == PRESENCE_EV_SESSION_CONNECTED && d->n < 4)
      snprintf(d->dev[d->n++], sizeof d->dev[0], "%s",
               evs[i].device ? evs[i].device : "(null)");
}

static void device_words_survive_the_log(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  const char *words[] = {"web", "kiosk-2", "desktop", "webx"};
  char sid[8];
  for (int i = 0; i < 4; i++) {
    snprintf(sid, sizeof sid, "s%d", i);
    assert_int_equal(presence_session_open_device(f->p, sid, "u", NULL,
                                                  words[i], NULL, NULL, NULL),
                     0);
  }
  dev_words_t d = {0};
  assert_int_equal(presence_log_read(f->p, 0, 64, collect_devices, &d), 0);
  assert_int_equal(d.n, 4);
  for (int i = 0; i < 4; i++) assert_string_equal(d.dev[i], words[i]);
  fx_free(f);
}

/* A reload inside the offline grace shows watchers nothing, device
 * included; a user who does not come back goes offline once. */
static void reload_in_grace_is_silent(void **state) {
  (void)state;
  fx_t *f = fx_new_grace(0, 5000);
  presence_session_open_device(f->p, "s1", "u", NULL, "mobile", NULL, NULL,
                               NULL);
  f->visible = 0;
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  clock_advance(&f->clock, 1000);
  presence_tick(f->p);
  presence_session_open_device(f->p, "s2", "u", NULL, "mobile", NULL, NULL,
                               NULL);
  assert_int_equal(f->visible, 0);
  /* Another device inside the grace: that one is news. */
  presence_session_disconnect(f->p, "s2", NULL, NULL);
  presence_session_connect(f->p, "s3", "u", NULL, NULL, NULL);
  assert_int_equal(f->visible, 1);
  presence_session_disconnect(f->p, "s3", NULL, NULL);
  assert_int_equal(f->visible, 1);
  clock_advance(&f->clock, 6000);
  presence_tick(f->p);
  assert_int_equal(f->visible, 2); /* user.offline */
  fx_free(f);
}

/* The version watchers see reveals no hidden change: under dnd a session
 * going idle and back moves the user's version (backends see both
 * events) but not the shown one; an invisible user's comings and goings
 * neither. The first visible change moves it by exactly one. */
static void shown_version_hides_hidden_changes(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  presence_session_connect(f->p, "s1", "u", NULL, NULL, NULL);
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_DND, NULL, NULL);
  presence_user_info_t a, b;
  assert_int_equal(presence_user_get(f->p, "u", &a), 0);
  f->visible = 0;
  for (int i = 0; i < 5; i++) {
    presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL);
    presence_session_set_status(f->p, "s1", PRESENCE_ONLINE, NULL, NULL);
  }
  assert_int_equal(presence_user_get(f->p, "u", &b), 0);
  assert_int_equal(f->visible, 0);
  assert_int_equal(b.version, a.version + 10);
  assert_int_equal(b.shown_version, a.shown_version);
  /* Invisible: sessions come and go, the user goes idle and online. */
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_INVISIBLE, NULL,
                                 NULL);
  assert_int_equal(presence_user_get(f->p, "u", &a), 0);
  assert_int_equal(a.shown_version, b.shown_version + 1);
  f->visible = 0;
  presence_session_open_device(f->p, "s2", "u", NULL, "mobile", NULL, NULL,
                               NULL);
  presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL);
  presence_session_set_status(f->p, "s2", PRESENCE_IDLE, NULL, NULL);
  presence_session_disconnect(f->p, "s2", NULL, NULL);
  presence_session_set_status(f->p, "s1", PRESENCE_ONLINE, NULL, NULL);
  assert_int_equal(presence_user_get(f->p, "u", &b), 0);
  assert_int_equal(f->visible, 0);
  assert_true(b.version > a.version);
  assert_int_equal(b.shown_version, a.shown_version);
  /* Back to auto: one change, one step. */
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_AUTO, NULL, NULL);
  assert_int_equal(presence_user_get(f->p, "u", &a), 0);
  assert_int_equal(f->visible, 1);
  assert_int_equal(a.shown_version, b.shown_version + 1);
  fx_free(f);
}

/* The last user.offline recorded, or NULL. */
static const rec_event_t *last_offline(const recorder_t *r) {
  for (size_t i = r->n; i-- > 0;)
    if (r->ev[i].type == PRESENCE_EV_USER_OFFLINE) return &r->ev[i];
  return NULL;
}

/* The veil (docs/protocol.md 6.1): leaving invisible keeps the period spent
 * invisible, [went invisible, left it], beside the true times, so that
 * watchers are not shown a time inside it (json.c masks by it). Offline,
 * then in the grace: a grace-ended user.offline whose last_seen is inside
 * it is flagged for watchers and carries the truth for backends. A later
 * period keeps the earlier one's start while a time is still inside it. */
static void leaving_invisible_keeps_the_veil(void **state) {
  (void)state;
  fx_t *f = fx_new_grace(0, 2000);
  presence_user_info_t info;
  /* Invisible while online, active, gone (the grace ends), auto set. */
  presence_session_connect(f->p, "s1", "u", NULL, NULL, NULL);
  clock_advance(&f->clock, 1000);
  int64_t t_inv = f->clock.wall;
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_INVISIBLE, NULL,
                                 NULL);
  assert_int_equal(presence_user_get(f->p, "u", &info), 0);
  assert_int_equal(info.veil_to_ms, 0); /* none while invisible */
  clock_advance(&f->clock, 2500);
  int64_t t_gone = f->clock.wall;
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  clock_advance(&f->clock, 2000);
  presence_tick(f->p);
  const rec_event_t *off = last_offline(&f->rec);
  assert_non_null(off);
  /* Still invisible: the offline is not shown at all (no flag needed). */
  assert_int_equal(off->flags & PRESENCE_EVENT_LAST_SEEN_VEILED, 0);
  clock_advance(&f->clock, 1000);
  int64_t t_auto = f->clock.wall;
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_AUTO, NULL, NULL);
  assert_int_equal(presence_user_get(f->p, "u", &info), 0);
  assert_int_equal(info.veil_from_ms, t_inv);
  assert_int_equal(info.veil_to_ms, t_auto);
  /* The truth for backends: last seen when the session ended. */
  assert_int_equal(info.last_seen_ms, t_gone);
  assert_int_equal(info.last_active_ms, t_gone);

  /* Invisible again while offline, a session in the second period, auto
   * set in its grace. */
  clock_advance(&f->clock, 1000);
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_INVISIBLE, NULL,
                                 NULL);
  clock_advance(&f->clock, 1000);
  presence_session_connect(f->p, "s2", "u", NULL, NULL, NULL);
  clock_advance(&f->clock, 1000);
  int64_t t_gone2 = f->clock.wall;
  presence_session_disconnect(f->p, "s2", NULL, NULL);
  clock_advance(&f->clock, 500);
  int64_t t_auto2 = f->clock.wall;
  size_t n = f->rec.n;
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_AUTO, NULL, NULL);
  assert_int_equal(presence_user_get(f->p, "u", &info), 0);
  /* Its times are all of the second period: the first one's start is not
   * needed. */
  assert_int_equal(info.veil_from_ms, t_auto + 1000);
  assert_int_equal(info.veil_to_ms, t_auto2);
  assert_int_equal(info.status, PRESENCE_ONLINE); /* in its grace */
  clock_advance(&f->clock, 2000);
  presence_tick(f->p);
  off = last_offline(&f->rec);
  assert_true(f->rec.n > n && off == &f->rec.ev[f->rec.n - 1]);
  assert_int_equal(off->last_seen, t_gone2); /* the truth */
  assert_int_equal(off->flags & PRESENCE_EVENT_LAST_SEEN_VEILED,
                   PRESENCE_EVENT_LAST_SEEN_VEILED);

  /* Invisible and back while offline, no session: last_seen (t_gone2) is
   * still inside the previous veil, whose start is kept. */
  clock_advance(&f->clock, 1000);
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_INVISIBLE, NULL,
                                 NULL);
  clock_advance(&f->clock, 1000);
  presence_user_set_availability(f->p, "u", PRESENCE_AVAIL_AUTO, NULL, NULL);
  assert_int_equal(presence_user_get(f->p, "u", &info), 0);
  assert_int_equal(info.veil_from_ms, t_auto + 1000);
  assert_int_equal(info.veil_to_ms, f->clock.wall);

  /* Seen visibly: a time after the veil, an offline unflagged. */
  clock_advance(&f->clock, 1000);
  presence_session_connect(f->p, "s3", "u", NULL, NULL, NULL);
  clock_advance(&f->clock, 1000);
  presence_session_disconnect(f->p, "s3", NULL, NULL);
  clock_advance(&f->clock, 2000);
  presence_tick(f->p);
  off = last_offline(&f->rec);
  assert_int_equal(off->last_seen, f->clock.wall - 2000);
  assert_int_equal(off->flags & PRESENCE_EVENT_LAST_SEEN_VEILED, 0);
  fx_free(f);
}

/* A session opened idle (presence_session_open_opts): the user's real
 * transition only, offline -> idle, never online between; a second idle
 * session and an idle session of an online user only connect; the device
 * map follows; last_active is not an idle session's. */
static void open_idle_is_one_transition(void **state) {
  (void)state;
  fx_t *f = fx_new(0);
  dev_seen_t d = {0};
  presence_on_event(f->p, on_session_event, &d);
  presence_open_opts_t idle = {.status = PRESENCE_IDLE};
  presence_open_opts_t bad = {.status = PRESENCE_OFFLINE + 3};
  assert_int_equal(presence_session_open_opts(f->p, "x", "u", NULL, &bad,
                                              NULL, NULL, NULL),
                   PRESENCE_ESTATUS);
  assert_int_equal(f->rec.n, 0);
  assert_int_equal(presence_session_open_opts(f->p, "i1", "u", NULL, &idle,
                                              NULL, NULL, NULL),
                   0);
  assert_int_equal(f->rec.n, 2);
  assert_int_equal(f->rec.ev[0].type, PRESENCE_EV_SESSION_CONNECTED);
  assert_int_equal(f->rec.ev[0].to, PRESENCE_IDLE);
  assert_int_equal(f->rec.ev[1].type, PRESENCE_EV_USER_IDLE);
  assert_int_equal(f->rec.ev[1].reason, PRESENCE_REASON_CONNECT);
  assert_int_equal(f->rec.ev[1].from, PRESENCE_OFFLINE);
  assert_int_equal(d.from, PRESENCE_OFFLINE); /* the session event's device */
  assert_int_equal(d.to, PRESENCE_IDLE);
  presence_user_info_t info;
  assert_int_equal(presence_user_get(f->p, "u", &info), 0);
  assert_int_equal(info.status, PRESENCE_IDLE);
  assert_int_equal(info.last_active_ms, 0); /* never online */
  assert_int_equal(device_of(&info, "web")->status, PRESENCE_IDLE);
  presence_session_info_t si;
  assert_int_equal(presence_session_get(f->p, "i1", &si), 0);
  assert_int_equal(si.status, PRESENCE_IDLE);

  /* A second idle session: its connect only, nothing a watcher sees. */
  int vis = f->visible;
  assert_int_equal(presence_session_open_opts(f->p, "i2", "u", NULL, &idle,
                                              NULL, NULL, NULL),
                   0);
  assert_int_equal(f->rec.n, 3);
  assert_int_equal(f->rec.ev[2].type, PRESENCE_EV_SESSION_CONNECTED);
  assert_int_equal(f->visible, vis);
  /* Online, then an idle session of another device: its connect only, the
   * new device idle. */
  presence_session_connect(f->p, "o1", "u", NULL, NULL, NULL);
  size_t n = f->rec.n;
  presence_open_opts_t mob = {.status = PRESENCE_IDLE, .device = "mobile"};
  assert_int_equal(presence_session_open_opts(f->p, "m1", "u", NULL, &mob,
                                              NULL, NULL, NULL),
                   0);
  assert_int_equal(f->rec.n, n + 1);
  assert_int_equal(f->rec.ev[n].type, PRESENCE_EV_SESSION_CONNECTED);
  assert_int_equal(f->rec.ev[n].to, PRESENCE_IDLE);
  assert_string_equal(d.device, "mobile");
  assert_int_equal(d.from, PRESENCE_OFFLINE);
  assert_int_equal(d.to, PRESENCE_IDLE);
  assert_int_equal(presence_user_get(f->p, "u", &info), 0);
  assert_int_equal(info.status, PRESENCE_ONLINE);
  assert_int_equal(device_of(&info, "mobile")->status, PRESENCE_IDLE);
  /* The online one goes: the user is idle, as its sessions are. */
  presence_session_disconnect(f->p, "o1", NULL, NULL);
  assert_int_equal(presence_user_get(f->p, "u", &info), 0);
  assert_int_equal(info.status, PRESENCE_IDLE);
  assert_int_equal(f->rec.ev[f->rec.n - 1].type, PRESENCE_EV_USER_IDLE);
  fx_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(visibility_table_every_cell),
      cmocka_unit_test(watcher_gets_one_message_per_visible_change),
      cmocka_unit_test(availability_kept_across_reconnects),
      cmocka_unit_test(message_set_change_clear),
      cmocka_unit_test(message_expires_once),
      cmocka_unit_test(many_expiries_in_one_tick),
      cmocka_unit_test(bad_input_stores_nothing),
      cmocka_unit_test(devices_best_status_each),
      cmocka_unit_test(last_active_beside_last_seen),
      cmocka_unit_test(events_carry_the_setting_through_the_log),
      cmocka_unit_test(every_field_survives_the_log),
      cmocka_unit_test(device_words_survive_the_log),
      cmocka_unit_test(availability_carries_devices),
      cmocka_unit_test(member_visibility_every_cell),
      cmocka_unit_test(member_changes_masked_by_availability),
      cmocka_unit_test(reload_in_grace_is_silent),
      cmocka_unit_test(shown_version_hides_hidden_changes),
      cmocka_unit_test(leaving_invisible_keeps_the_veil),
      cmocka_unit_test(open_idle_is_one_transition),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
