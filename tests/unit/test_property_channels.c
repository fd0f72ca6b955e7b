/* SPDX-License-Identifier: MIT */
/*
 * Channels: random operations against a model computed from scratch.
 *
 * Connects, ends (disconnect, timeout, kick), status changes, joins, data
 * updates, leaves, backend removals, clock advances and resets over a few
 * channels, users and sessions. After every step, each (channel, user) the
 * step touched must be what the model computes from the sessions joined
 * (present or not, status, data, sessions, with the channel grace), and the
 * members rebuilt from the events alone (a replay) must agree. Every event
 * must be a real change of its member (edge-triggered) with the member's
 * version one above the last. Every 2048 steps every member and every
 * channel's count is compared.
 */
#include "helpers.h"

#include <stdio.h>

#define N_CH 6
#define N_USERS 48
#define N_SESSIONS 192
#define GRACE_MS 1500
#define N_DATA 3

static const char *const datas[N_DATA] = {NULL, "{\"a\":1}", "{\"a\":2}"};

typedef struct msess {
  int connected, user;
  presence_status_t status;
  int joined[N_CH];
  int data[N_CH];       /* index into datas */
  uint64_t stamp[N_CH]; /* recency of its join or update */
} msess_t;

typedef struct mmember {
  int present;
  presence_status_t status;
  int data;
  int pending;
  int64_t deadline;
} mmember_t;

typedef struct rmember { /* the replay */
  int present;
  presence_status_t status;
  char data[32];
  int has_data;
  uint64_t version;
} rmember_t;

typedef struct world {
  fake_clock_t clock;
  counting_alloc_t alloc;
  presence_t *p;
  uint32_t grace;
  msess_t s[N_SESSIONS];
  mmember_t m[N_CH][N_USERS];
  rmember_t r[N_CH][N_USERS];
  uint64_t stamp;
  uint64_t rng;
  long chan_events;
  int touched[64][2];
  int n_touched;
} world_t;

static uint32_t next_rand(world_t *w) {
  w->rng ^= w->rng >> 12;
  w->rng ^= w->rng << 25;
  w->rng ^= w->rng >> 27;
  return (uint32_t)((w->rng * 0x2545f4914f6cdd1dull) >> 32);
}

static void touch(world_t *w, int c, int u) {
  if (w->n_touched < 64) {
    w->touched[w->n_touched][0] = c;
    w->touched[w->n_touched][1] = u;
    w->n_touched++;
  }
}

static int data_index(const char *d) {
  for (int i = 1; i < N_DATA; i++)
    if (d && strcmp(d, datas[i]) == 0) return i;
  return 0;
}

static void on_event(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  world_t *w = ud;
  if (ev->type < PRESENCE_EV_CHANNEL_JOIN || ev->type > PRESENCE_EV_CHANNEL_UPDATE)
    return;
  w->chan_events++;
  int c = atoi(ev->channel + 1), u = atoi(ev->user_id + 1);
  rmember_t *r = &w->r[c][u];
  if (ev->user_version != r->version + 1)
    fail_msg("%s %s/%s: version %llu after %llu (seed %llu)",
             presence_event_type_name(ev->type), ev->channel, ev->user_id,
             (unsigned long long)ev->user_version,
             (unsigned long long)r->version, (unsigned long long)w->rng);
  r->version = ev->user_version;
  switch (ev->type) {
  case PRESENCE_EV_CHANNEL_JOIN:
    assert_false(r->present);
    assert_int_equal(ev->from, PRESENCE_OFFLINE);
    r->present = 1;
    break;
  case PRESENCE_EV_CHANNEL_LEAVE:
    assert_true(r->present);
    assert_int_equal(ev->to, PRESENCE_OFFLINE);
    assert_null(ev->meta);
    r->present = 0;
    r->version = 0; /* a new member starts again at 1 */
    return;
  default: {
    assert_true(r->present);
    assert_int_equal(ev->from, r->status);
    int same_data = ev->meta ? r->has_data && strcmp(ev->meta, r->data) == 0
                             : !r->has_data;
    if (ev->from == ev->to && same_data)
      fail_msg("update of %s/%s that changes nothing (seed %llu)", ev->channel,
               ev->user_id, (unsigned long long)w->rng);
  }
  }
  r->status = ev->to;
  r->has_data = ev->meta != NULL;
  snprintf(r->data, sizeof r->data, "%s", ev->meta ? ev->meta : "");
}

/* What the sessions say the member is; returns its joined sessions. */
static int computed(world_t *w, int c, int u, presence_status_t *st,
                    int *data) {
  int n = 0, online = 0;
  uint64_t best = 0;
  *data = 0;
  for (int i = 0; i < N_SESSIONS; i++) {
    msess_t *s = &w->s[i];
    if (!s->connected || s->user != u || !s->joined[c]) continue;
    n++;
    online += s->status == PRESENCE_ONLINE;
    if (s->stamp[c] >= best) {
      best = s->stamp[c];
      *data = s->data[c];
    }
  }
  *st = online ? PRESENCE_ONLINE : PRESENCE_IDLE;
  return n;
}

static void settle(world_t *w, int c, int u, int graceful) {
  mmember_t *m = &w->m[c][u];
  presence_status_t st;
  int data;
  int n = computed(w, c, u, &st, &data);
  touch(w, c, u);
  if (n == 0) {
    if (!m->present) return;
    if (graceful && w->grace) {
      if (!m->pending) {
        m->pending = 1;
        m->deadline = w->clock.mono + w->grace;
      }
      return;
    }
    m->present = m->pending = 0;
    return;
  }
  m->present = 1;
  m->pending = 0;
  m->status = st;
  m->data = data;
}

static void check_member(world_t *w, int c, int u) {
  char ch[8], uid[8];
  snprintf(ch, sizeof ch, "c%d", c);
  snprintf(uid, sizeof uid, "u%d", u);
  mmember_t *m = &w->m[c][u];
  rmember_t *r = &w->r[c][u];
  presence_member_info_t mi;
  int rc = presence_member_get(w->p, ch, uid, &mi);
  if ((rc == 0) != m->present || r->present != m->present)
    fail_msg("%s/%s: store %s, model %s, replay %s (seed %llu)", ch, uid,
             rc == 0 ? "member" : "none", m->present ? "member" : "none",
             r->present ? "member" : "none", (unsigned long long)w->rng);
  if (!m->present) return;
  if (mi.status != m->status || r->status != m->status)
    fail_msg("%s/%s: store %s, model %s, replay %s (seed %llu)", ch, uid,
             presence_status_name(mi.status), presence_status_name(m->status),
             presence_status_name(r->status), (unsigned long long)w->rng);
  if (data_index(mi.data) != m->data || data_index(r->has_data ? r->data : NULL) != m->data)
    fail_msg("%s/%s: data %s, model %s, replay %s (seed %llu)", ch, uid,
             mi.data ? mi.data : "null", datas[m->data] ? datas[m->data] : "null",
             r->has_data ? r->data : "null", (unsigned long long)w->rng);
  presence_status_t st;
  int d;
  int n = computed(w, c, u, &st, &d);
  assert_int_equal(mi.session_count, (uint32_t)n);
  assert_int_equal(mi.n_metas, (size_t)n);
  assert_int_equal(mi.version, r->version);
}

static void check_all(world_t *w) {
  for (int c = 0; c < N_CH; c++) {
    int count = 0;
    for (int u = 0; u < N_USERS; u++) {
      check_member(w, c, u);
      count += w->m[c][u].present;
    }
    char ch[8];
    snprintf(ch, sizeof ch, "c%d", c);
    assert_int_equal(presence_channel_count(w->p, ch), count);
  }
}

/* Every channel of a session that ended (or all sessions of a reset). */
static void session_gone(world_t *w, msess_t *s, int graceful) {
  s->connected = 0;
  for (int c = 0; c < N_CH; c++) {
    if (!s->joined[c]) continue;
    s->joined[c] = 0;
    settle(w, c, s->user, graceful);
  }
}

static void step(world_t *w) {
  int si = (int)(next_rand(w) % N_SESSIONS);
  msess_t *s = &w->s[si];
  int c = (int)(next_rand(w) % N_CH);
  char sid[8], uid[8], ch[8];
  snprintf(sid, sizeof sid, "s%d", si);
  snprintf(ch, sizeof ch, "c%d", c);
  uint32_t r = next_rand(w) % 1000;
  w->n_touched = 0;
  int rc;
  if (r < 150) { /* connect */
    int ui = (int)(next_rand(w) % N_USERS);
    snprintf(uid, sizeof uid, "u%d", ui);
    rc = presence_session_connect(w->p, sid, uid, NULL, NULL, NULL);
    if (s->connected) {
      assert_int_equal(rc, PRESENCE_EEXIST);
    } else {
      assert_int_equal(rc, 0);
      memset(s, 0, sizeof(*s));
      s->connected = 1;
      s->user = ui;
      s->status = PRESENCE_ONLINE;
    }
  } else if (r < 250) { /* end */
    presence_reason_t reason = r < 220   ? PRESENCE_REASON_DISCONNECT
                               : r < 235 ? PRESENCE_REASON_TIMEOUT
                                         : PRESENCE_REASON_KICKED;
    rc = presence_session_end(w->p, sid, reason, NULL, NULL);
    assert_int_equal(rc, s->connected ? 0 : PRESENCE_ENOSESSION);
    if (s->connected) session_gone(w, s, reason != PRESENCE_REASON_KICKED);
  } else if (r < 400) { /* status */
    presence_status_t to = next_rand(w) & 1 ? PRESENCE_IDLE : PRESENCE_ONLINE;
    rc = presence_session_set_status(w->p, sid, to, NULL, NULL);
    assert_int_equal(rc, s->connected ? 0 : PRESENCE_ENOSESSION);
    if (s->connected) {
      s->status = to;
      for (int k = 0; k < N_CH; k++)
        if (s->joined[k]) settle(w, k, s->user, 1);
    }
  } else if (r < 650) { /* join (again: new data) */
    int d = (int)(next_rand(w) % N_DATA);
    rc = presence_channel_join(w->p, sid, ch, datas[d], NULL, NULL);
    assert_int_equal(rc, s->connected ? 0 : PRESENCE_ENOSESSION);
    if (s->connected) {
      s->joined[c] = 1;
      s->data[c] = d;
      s->stamp[c] = ++w->stamp;
      settle(w, c, s->user, 1);
    }
  } else if (r < 750) { /* update */
    int d = (int)(next_rand(w) % N_DATA);
    rc = presence_channel_update(w->p, sid, ch, datas[d], NULL, NULL);
    if (!s->connected) {
      assert_int_equal(rc, PRESENCE_ENOSESSION);
    } else if (!s->joined[c]) {
      assert_int_equal(rc, PRESENCE_ENOTMEMBER);
    } else {
      assert_int_equal(rc, 0);
      s->data[c] = d;
      s->stamp[c] = ++w->stamp;
      settle(w, c, s->user, 1);
    }
  } else if (r < 880) { /* leave */
    rc = presence_channel_leave(w->p, sid, ch, NULL, NULL);
    if (!s->connected) {
      assert_int_equal(rc, PRESENCE_ENOSESSION);
    } else if (!s->joined[c]) {
      assert_int_equal(rc, PRESENCE_ENOTMEMBER);
    } else {
      assert_int_equal(rc, 0);
      s->joined[c] = 0;
      settle(w, c, s->user, 0);
    }
  } else if (r < 900) { /* a backend removes a user */
    int ui = (int)(next_rand(w) % N_USERS);
    snprintf(uid, sizeof uid, "u%d", ui);
    rc = presence_channel_remove_user(w->p, ch, uid, NULL, NULL);
    if (!w->m[c][ui].present) {
      assert_int_equal(rc, PRESENCE_ENOTMEMBER);
    } else {
      assert_int_equal(rc, 0);
      for (int i = 0; i < N_SESSIONS; i++)
        if (w->s[i].connected && w->s[i].user == ui) w->s[i].joined[c] = 0;
      w->m[c][ui].present = w->m[c][ui].pending = 0;
      touch(w, c, ui);
    }
  } else if (r < 999) { /* time passes */
    clock_advance(&w->clock, next_rand(w) % 700);
    presence_tick(w->p);
    for (int k = 0; k < N_CH; k++)
      for (int u = 0; u < N_USERS; u++) {
        mmember_t *m = &w->m[k][u];
        if (m->pending && m->deadline <= w->clock.mono) {
          m->present = m->pending = 0;
          touch(w, k, u);
        }
      }
  } else { /* the rare full cleanup */
    assert_int_equal(presence_reset(w->p, NULL, NULL), 0);
    for (int i = 0; i < N_SESSIONS; i++)
      if (w->s[i].connected) session_gone(w, &w->s[i], 0);
    for (int k = 0; k < N_CH; k++)
      for (int u = 0; u < N_USERS; u++) w->m[k][u].present = w->m[k][u].pending = 0;
    check_all(w);
    return;
  }
  for (int i = 0; i < w->n_touched; i++)
    check_member(w, w->touched[i][0], w->touched[i][1]);
}

static void run(uint32_t grace, uint64_t seed, long steps) {
  world_t *w = calloc(1, sizeof(*w));
  w->grace = grace;
  w->rng = seed;
  presence_options_t o;
  test_options(&o, &w->clock, 5, &w->alloc);
  o.offline_grace_ms = grace; /* the channel grace follows it */
  o.log_capacity = 1024;
  assert_int_equal(presence_new(&o, &w->p), 0);
  presence_on_event(w->p, on_event, w);
  for (long i = 0; i < steps; i++) {
    step(w);
    if ((i & 2047) == 0) check_all(w);
  }
  check_all(w);
  assert_true(w->chan_events > steps / 10); /* the run did exercise members */
  presence_free(w->p);
  assert_int_equal(w->alloc.live, 0);
  free(w);
}

static long steps_from_env(void) {
  const char *s = getenv("PRESENCE_PROPERTY_STEPS");
  return s ? atol(s) : 200000;
}

static void channel_ops_without_grace(void **state) {
  (void)state;
  run(0, 0x9e3779b97f4a7c15ull, steps_from_env());
}

static void channel_ops_with_grace(void **state) {
  (void)state;
  run(GRACE_MS, 0xd1b54a32d192ed03ull, steps_from_env());
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(channel_ops_without_grace),
      cmocka_unit_test(channel_ops_with_grace),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
