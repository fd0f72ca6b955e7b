/* SPDX-License-Identifier: MIT */
/*
 * Random operations against a model computed from scratch.
 *
 * A few hundred thousand connects, disconnects, kicks, status changes, clock
 * advances and resets over many users and sessions. After every step, each
 * user the step touched must have the status the model computes from its
 * sessions (with offline grace), and the state rebuilt from the events alone
 * (a replay) must agree with both. Every 4096 steps all users are compared.
 * A third run adds a retention: offline users are forgotten, which the model
 * predicts to the second.
 */
#include "helpers.h"

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
  int known;          /* the store holds a record of it */
  int64_t offline_at; /* mono, when it last went offline */
} muser_t;

typedef struct world {
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
  uint64_t last_seq;
  int touched[N_USERS + 2];
  int n_touched;
  uint64_t rng;
  long events;
  long forgotten;
} world_t;

static uint32_t next_rand(world_t *w) {
  /* xorshift64*: reproducible from the seed printed on failure. */
  w->rng ^= w->rng >> 12;
  w->rng ^= w->rng << 25;
  w->rng ^= w->rng >> 27;
  return (uint32_t)((w->rng * 0x2545f4914f6cdd1dull) >> 32);
}

static int parse_index(const char *id) { return atoi(id + 1); }

static void touch_user(world_t *w, int u) {
  if (w->n_touched < N_USERS + 2) w->touched[w->n_touched++] = u;
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
    w->r_user[uid] = ev->to;
    touch_user(w, uid);
    break;
  case PRESENCE_EV_CLEANUP:
    break;
  default:
    fail_msg("unknown event type %d", ev->type);
  }
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
      u->deadline = w->clock.mono + w->grace;
    }
    return;
  }
  u->pending = 0;
  if (c == PRESENCE_OFFLINE && u->reported != PRESENCE_OFFLINE)
    u->offline_at = w->clock.mono;
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
        !u->pending &&
        (u->offline_at - w->mono_base) / 1000 + w->retention_s <= now_s) {
      u->known = 0;
      w->forgotten++;
      touch_user(w, i);
    }
  }
}

static void check_user(world_t *w, int ui) {
  char uid[16];
  snprintf(uid, sizeof uid, "u%d", ui);
  presence_user_info_t info;
  assert_int_equal(presence_user_get(w->p, uid, &info), 0);
  if (info.status != w->u[ui].reported || w->r_user[ui] != info.status)
    fail_msg("user %s: engine %s, model %s, replay %s (seed %llu)", uid,
             presence_status_name(info.status),
             presence_status_name(w->u[ui].reported),
             presence_status_name(w->r_user[ui]), (unsigned long long)w->rng);
  assert_int_equal(info.session_count, (uint32_t)w->u[ui].sessions);
  assert_int_equal(info.online_count, (uint32_t)w->u[ui].online);
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
  presence_stats_t st;
  assert_int_equal(presence_stats(w->p, &st), 0);
  if (w->retention_s) assert_int_equal(st.users_known, known);
  for (int i = 0; i < N_SESSIONS; i++) {
    assert_int_equal(w->r_connected[i], w->s[i].connected);
    if (w->s[i].connected) assert_int_equal(w->r_status[i], w->s[i].status);
  }
}

static void step(world_t *w) {
  int si = (int)(next_rand(w) % N_SESSIONS);
  msession_t *s = &w->s[si];
  char sid[16], uid[16];
  snprintf(sid, sizeof sid, "s%d", si);
  uint32_t r = next_rand(w) % 1000;
  w->n_touched = 0;
  int rc;
  if (r < 350) { /* connect */
    int ui = (int)(next_rand(w) % N_USERS);
    snprintf(uid, sizeof uid, "u%d", ui);
    rc = presence_session_connect(w->p, sid, uid, NULL, NULL, NULL);
    if (s->connected) {
      assert_int_equal(rc, PRESENCE_EEXIST);
    } else {
      assert_int_equal(rc, 0);
      s->connected = 1;
      s->user = ui;
      s->status = PRESENCE_ONLINE;
      w->u[ui].sessions++;
      w->u[ui].online++;
      w->u[ui].pending = 0;
      w->u[ui].known = 1;
      settle(w, ui, 1);
      touch_user(w, ui);
    }
  } else if (r < 650) { /* disconnect, timeout or kick */
    presence_reason_t reason = r < 600   ? PRESENCE_REASON_DISCONNECT
                               : r < 625 ? PRESENCE_REASON_TIMEOUT
                                         : PRESENCE_REASON_KICKED;
    rc = presence_session_end(w->p, sid, reason, NULL, NULL);
    if (!s->connected) {
      assert_int_equal(rc, PRESENCE_ENOSESSION);
    } else {
      assert_int_equal(rc, 0);
      s->connected = 0;
      muser_t *u = &w->u[s->user];
      u->sessions--;
      if (s->status == PRESENCE_ONLINE) u->online--;
      settle(w, s->user, reason != PRESENCE_REASON_KICKED);
      touch_user(w, s->user);
    }
  } else if (r < 950) { /* status */
    presence_status_t to = next_rand(w) & 1 ? PRESENCE_IDLE : PRESENCE_ONLINE;
    rc = presence_session_set_status(w->p, sid, to, NULL, NULL);
    if (!s->connected) {
      assert_int_equal(rc, PRESENCE_ENOSESSION);
    } else {
      assert_int_equal(rc, 0);
      if (s->status != to) {
        if (to == PRESENCE_ONLINE) w->u[s->user].online++;
        else w->u[s->user].online--;
        s->status = to;
      }
      settle(w, s->user, 1);
      touch_user(w, s->user);
    }
  } else if (r < 999) { /* time passes */
    clock_advance(&w->clock, next_rand(w) % 700);
    presence_tick(w->p);
    for (int i = 0; i < N_USERS; i++) {
      muser_t *u = &w->u[i];
      if (u->pending && u->deadline <= w->clock.mono) {
        u->pending = 0;
        u->reported = PRESENCE_OFFLINE;
        u->offline_at = w->clock.mono;
        touch_user(w, i);
      }
    }
    forget_due(w);
  } else { /* the rare full cleanup */
    assert_int_equal(presence_reset(w->p, NULL, NULL), 0);
    memset(w->s, 0, sizeof(w->s));
    for (int i = 0; i < N_USERS; i++) {
      muser_t *u = &w->u[i];
      int64_t off = u->reported != PRESENCE_OFFLINE ? w->clock.mono
                                                    : u->offline_at;
      *u = (muser_t){.known = u->known, .offline_at = off};
      u->reported = PRESENCE_OFFLINE;
    }
    check_all(w);
    return;
  }
  for (int i = 0; i < w->n_touched; i++) check_user(w, w->touched[i]);
}

static void run(uint32_t grace, uint32_t retention_s, uint64_t seed,
                long steps) {
  world_t *w = calloc(1, sizeof(*w));
  w->clock.wall = 1764320000000;
  w->clock.mono = 5;
  w->mono_base = 5;
  w->alloc.fail_after = -1;
  w->grace = grace;
  w->retention_s = retention_s;
  w->rng = seed;
  presence_options_t o;
  presence_options_init(&o);
  o.clock = (presence_clock_t){fake_wall, fake_mono, &w->clock};
  o.allocator = (presence_allocator_t){ca_malloc, ca_realloc, ca_free, &w->alloc};
  o.offline_grace_ms = grace;
  o.offline_retention_s = retention_s;
  o.log_capacity = 1024;
  assert_int_equal(presence_new(&o, &w->p), 0);
  presence_on_event(w->p, on_event, w);
  for (long i = 0; i < steps; i++) {
    step(w);
    if ((i & 4095) == 0) check_all(w);
  }
  check_all(w);
  assert_true(w->events > steps / 4); /* the run did exercise transitions */
  if (retention_s) {
    print_message("%ld users forgotten\n", w->forgotten);
    assert_true(w->forgotten > steps / 1000); /* and forgetting */
  }
  presence_free(w->p);
  assert_int_equal(w->alloc.live, 0);
  free(w);
}

static long steps_from_env(void) {
  const char *s = getenv("PRESENCE_PROPERTY_STEPS");
  return s ? atol(s) : 300000;
}

static void random_ops_without_grace(void **state) {
  (void)state;
  run(0, 0, 0x9e3779b97f4a7c15ull, steps_from_env());
}

static void random_ops_with_grace(void **state) {
  (void)state;
  run(GRACE_MS, 0, 0xd1b54a32d192ed03ull, steps_from_env());
}

static void random_ops_with_grace_and_retention(void **state) {
  (void)state;
  run(GRACE_MS, 2, 0x8bb84b93962eacc9ull, steps_from_env());
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(random_ops_without_grace),
      cmocka_unit_test(random_ops_with_grace),
      cmocka_unit_test(random_ops_with_grace_and_retention),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
