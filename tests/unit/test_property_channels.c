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
 *
 * Availability (docs/protocol.md 4.1): now and then (a random stream of its
 * own, so the operations' stream is the one it was) a user's availability
 * is set. Each channel's shown count must be its members less the
 * invisible ones, the members it lists must carry the availability set,
 * and (embedded store) every channel event's shown count must be what the
 * replay counts; every member's shown version must move by one with each
 * change other members are shown (presence_event_member_visible) and each
 * availability change of its user, and with nothing else.
 *
 * Built with PROPERTY_REDIS (redis/test_property_channels) the same model
 * runs against the Redis store on a real redis-server the test starts, with
 * two instances on it (even sessions on "alpha", odd ones on "beta"): every
 * write waits for its answer, the replay takes the events each instance
 * decided, members are read back by paging the channel, and a further step
 * kills beta now and then (its timers stop, as a stalled or killed process;
 * alpha reaps it when the lease runs out): every member beta's sessions
 * held alone leaves exactly once, reason instance_lost, and a new beta
 * takes its place. Redis keeps real time: no clock steps (time passes by
 * running the loop), the rare presence_reset is left out (a global wipe,
 * tested in redis/test_channels), and in the run with a channel grace
 * (300 ms, no instance losses there) a member's grace ends when Redis's
 * clock says: its leave is taken when it arrives, and must not come before
 * the grace has passed since the write that started it.
 */
#ifdef PROPERTY_REDIS
#define PRESENCE_TEST_NO_RECORDER
#endif
#include "helpers.h"

#ifdef PROPERTY_REDIS
#include "../redis/harness.h"
#endif

#include <stdbool.h>
#include <stdio.h>

#define N_CH 6
#define N_USERS 48
#define N_SESSIONS 192
#define GRACE_MS 1500
#define REDIS_GRACE_MS 300 /* real time: graces end within a run */
#define N_DATA 3
#define N_DEFER 16

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
  int64_t earliest; /* real time: the grace ends no earlier than this */
  int left_in_read; /* Redis: its grace's leave came while a read was out */
} mmember_t;

typedef struct rmember { /* the replay */
  int present;
  presence_status_t status;
  char data[32];
  int has_data;
  uint64_t version;
  uint64_t shown_version;
} rmember_t;

/* A channel event kept for later: the event and its strings (the store's
 * are gone once the callback returns); its pointers are set when it is
 * taken out. */
typedef struct kept {
  presence_event_t ev;
  char channel[40], user_id[40], meta[40];
} kept_t;

typedef struct world world_t;
typedef struct inst_ctx { /* what an instance's event callback knows */
  world_t *w;
  int idx;
} inst_ctx_t;

struct world {
  fake_clock_t clock;
  counting_alloc_t alloc;
  presence_t *p; /* the one asked (alpha on Redis) */
  uint32_t grace;
  msess_t s[N_SESSIONS];
  mmember_t m[N_CH][N_USERS];
  rmember_t r[N_CH][N_USERS];
  uint64_t stamp;
  uint64_t rng;
  uint64_t rng_avail; /* availability steps: a stream of their own */
  presence_availability_t avail[N_USERS]; /* the model */
  presence_availability_t r_avail[N_USERS]; /* the replay */
  long avail_changes;
  bool real_time; /* Redis: its own clock, no clock steps, no grace */
  long chan_events;
  int touched[64][2];
  int n_touched;
  int r_sess[N_SESSIONS]; /* the replay's sessions: connected */
  long lost_leaves;       /* channel.leave, reason instance_lost */
  long losses;
  long graces_ended; /* Redis: leaves after a channel grace */
  /* The write in flight. */
  bool op_pending;
  int op_status;
  int64_t op_started; /* real time (Redis): when the write was called */
  inst_ctx_t ctx[2];
#ifdef PROPERTY_REDIS
  server_t server;
  uv_loop_t loop;
  inst_t in[2];
  int generation; /* of beta */
  bool reading;   /* a members page is asked and not answered yet */
  /* Channel events that came ahead of an earlier one of their member (each
   * instance delivers what it decided, on its own connection: a grace's
   * leave alpha's timer decided may be read after beta's later join), by
   * sequence number, applied once the earlier one has been. */
  kept_t kept[N_DEFER];
  int n_kept;
  long reordered;
#endif
};

static uint32_t next_rand(world_t *w) {
  w->rng ^= w->rng >> 12;
  w->rng ^= w->rng << 25;
  w->rng ^= w->rng >> 27;
  return (uint32_t)((w->rng * 0x2545f4914f6cdd1dull) >> 32);
}

static uint32_t avail_rand(world_t *w) {
  w->rng_avail ^= w->rng_avail >> 12;
  w->rng_avail ^= w->rng_avail << 25;
  w->rng_avail ^= w->rng_avail >> 27;
  return (uint32_t)((w->rng_avail * 0x2545f4914f6cdd1dull) >> 32);
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

/* A channel event's count and shown count: the replay's members after it,
 * and those of them not invisible. On Redis a grace may end, decided by
 * either instance, between a write's events: counts are compared there in
 * check_all, from the store's own answers. */
static void replay_counts(world_t *w, int c, const presence_event_t *ev) {
#ifdef PROPERTY_REDIS
  (void)w;
  (void)c;
  assert_true(ev->shown_count <= ev->count);
#else
  uint64_t n = 0, shown = 0;
  for (int u = 0; u < N_USERS; u++) {
    n += w->r[c][u].present;
    shown += w->r[c][u].present && w->r_avail[u] != PRESENCE_AVAIL_INVISIBLE;
  }
  if (ev->count != n || ev->shown_count != shown)
    fail_msg("%s %s/%s: count %llu shown %llu, replay %llu shown %llu "
             "(seed %llu)",
             presence_event_type_name(ev->type), ev->channel, ev->user_id,
             (unsigned long long)ev->count, (unsigned long long)ev->shown_count,
             (unsigned long long)n, (unsigned long long)shown,
             (unsigned long long)w->rng);
#endif
}

static void apply_member(world_t *w, const presence_event_t *ev);
#ifdef PROPERTY_REDIS
static void replay_in_order(world_t *w, const presence_event_t *ev);
#endif

static void on_event(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  inst_ctx_t *x = ud;
  world_t *w = x->w;
  if (x->idx < 0) return; /* an instance being killed: nothing counts */
  if (ev->type == PRESENCE_EV_USER_AVAILABILITY) {
    /* Every channel the user is in shows it differently: one visibility
     * frame each, its shown version one more. */
    int au = atoi(ev->user_id + 1);
    w->r_avail[au] = ev->availability_to;
    for (int k = 0; k < N_CH; k++)
      if (w->r[k][au].present) w->r[k][au].shown_version++;
    return;
  }
  if (ev->type == PRESENCE_EV_SESSION_CONNECTED ||
      ev->type == PRESENCE_EV_SESSION_DISCONNECTED) {
    /* Every other session id is a canonical UUID (session_id_of). */
    int si = strlen(ev->session_id) == 36
                 ? (int)strtol(ev->session_id + 24, NULL, 16)
                 : atoi(ev->session_id + 1);
    w->r_sess[si] = ev->type == PRESENCE_EV_SESSION_CONNECTED;
    return;
  }
  if (ev->type < PRESENCE_EV_CHANNEL_JOIN || ev->type > PRESENCE_EV_CHANNEL_UPDATE)
    return;
#ifdef PROPERTY_REDIS
  replay_in_order(w, ev);
#else
  apply_member(w, ev);
#endif
}

/* A channel event into the model's grace bookkeeping and the replay. */
static void apply_member(world_t *w, const presence_event_t *ev) {
  w->chan_events++;
  if (ev->type == PRESENCE_EV_CHANNEL_LEAVE &&
      ev->reason == PRESENCE_REASON_INSTANCE_LOST)
    w->lost_leaves++;
#ifdef PROPERTY_REDIS
  /* Real time: a member in its channel grace leaves when Redis's clock
   * says, which started the grace between the write's call and its answer:
   * not before the grace has passed since the call. */
  /* (A backend's removal of a member in grace is a leave at once, reason
   * kicked; the step's model takes it.) */
  if (ev->type == PRESENCE_EV_CHANNEL_LEAVE &&
      ev->reason != PRESENCE_REASON_KICKED) {
    int gc = atoi(ev->channel + 1), gu = atoi(ev->user_id + 1);
    mmember_t *gm = &w->m[gc][gu];
    if (gm->pending) {
      if (now_ms() < gm->earliest - 2)
        fail_msg("%s/%s left %lld ms before its grace ended (seed %llu)",
                 ev->channel, ev->user_id,
                 (long long)(gm->earliest - now_ms()),
                 (unsigned long long)w->rng);
      gm->present = gm->pending = 0;
      /* The page asked before this leave may have been read in Redis
       * before it too (the grace call of the other instance runs on its
       * own connection, and the leave comes by the log reader's): that
       * page still shows the member. */
      if (w->reading) gm->left_in_read = 1;
      w->graces_ended++;
      touch(w, gc, gu);
    }
  }
#endif
  int c = atoi(ev->channel + 1), u = atoi(ev->user_id + 1);
  rmember_t *r = &w->r[c][u];
  if (ev->user_version != r->version + 1)
    fail_msg("%s %s/%s: version %llu after %llu (seed %llu)",
             presence_event_type_name(ev->type), ev->channel, ev->user_id,
             (unsigned long long)ev->user_version,
             (unsigned long long)r->version, (unsigned long long)w->rng);
  r->version = ev->user_version;
  uint64_t sv = r->shown_version + (presence_event_member_visible(ev) ? 1 : 0);
  if (ev->shown_version != sv)
    fail_msg("%s %s/%s: shown version %llu, want %llu (seed %llu)",
             presence_event_type_name(ev->type), ev->channel, ev->user_id,
             (unsigned long long)ev->shown_version, (unsigned long long)sv,
             (unsigned long long)w->rng);
  r->shown_version = sv;
  if (ev->availability_to != w->r_avail[u])
    fail_msg("%s %s/%s: availability %d, the user's %d (seed %llu)",
             presence_event_type_name(ev->type), ev->channel, ev->user_id,
             ev->availability_to, w->r_avail[u], (unsigned long long)w->rng);
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
    r->shown_version = 0;
    replay_counts(w, c, ev);
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
  replay_counts(w, c, ev);
}

#ifdef PROPERTY_REDIS
/* Whether the replay can take a channel event now: a join of a member
 * absent, anything else of a member present at the version before. */
static bool fits(const world_t *w, const presence_event_t *ev) {
  const rmember_t *r = &w->r[atoi(ev->channel + 1)][atoi(ev->user_id + 1)];
  if (ev->type == PRESENCE_EV_CHANNEL_JOIN) return !r->present;
  return r->present && ev->user_version == r->version + 1;
}

/* Applies what fits; keeps (a copy of) what does not, ordered by sequence
 * number, until the events before it have come. */
static void replay_in_order(world_t *w, const presence_event_t *ev) {
  if (!fits(w, ev)) {
    if (w->n_kept == N_DEFER)
      fail_msg("%s %s/%s: %d events wait for earlier ones (seed %llu)",
               presence_event_type_name(ev->type), ev->channel, ev->user_id,
               N_DEFER, (unsigned long long)w->rng);
    int at = w->n_kept++;
    for (; at > 0 && w->kept[at - 1].ev.seq > ev->seq; at--)
      w->kept[at] = w->kept[at - 1];
    kept_t *k = &w->kept[at];
    k->ev = *ev;
    k->ev.session_id = k->ev.instance_id = k->ev.message = k->ev.emoji =
        k->ev.device = NULL; /* the store's, gone after the callback */
    k->ev.session_ids = NULL;
    snprintf(k->channel, sizeof k->channel, "%s", ev->channel);
    snprintf(k->user_id, sizeof k->user_id, "%s", ev->user_id);
    snprintf(k->meta, sizeof k->meta, "%s", ev->meta ? ev->meta : "");
    w->reordered++;
    return;
  }
  apply_member(w, ev);
  /* What it applied may let a kept one fit, and that one another. */
  for (int i = 0; i < w->n_kept; i++) {
    kept_t k = w->kept[i];
    k.ev.channel = k.channel;
    k.ev.user_id = k.user_id;
    k.ev.meta = k.ev.meta ? k.meta : NULL;
    if (!fits(w, &k.ev)) continue;
    memmove(&w->kept[i], &w->kept[i + 1],
            (size_t)(--w->n_kept - i) * sizeof w->kept[0]);
    apply_member(w, &k.ev);
    i = -1;
  }
}

static bool replay_caught_up(void *ud) {
  return ((world_t *)ud)->n_kept == 0;
}

/* Before a comparison: the events kept for earlier ones must have found
 * them (an earlier event still on its way comes within moments). */
static void wait_replay(world_t *w) {
  if (w->n_kept && !run_until(&w->loop, replay_caught_up, w, 5000))
    fail_msg("%s %s/%s (seq %llu) waits for an earlier event that never "
             "came (seed %llu)",
             presence_event_type_name(w->kept[0].ev.type), w->kept[0].channel,
             w->kept[0].user_id, (unsigned long long)w->kept[0].ev.seq,
             (unsigned long long)w->rng);
}
#endif

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
        m->earliest = w->op_started + w->grace;
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

/* A member as the store has it: status, data, version and sessions. */
typedef struct got_member {
  int rc; /* 0 or ENOTMEMBER */
  presence_status_t status;
  int data;
  uint64_t version;
  uint32_t session_count;
  size_t n_metas;
  presence_availability_t availability;
  uint64_t shown_version;
} got_member_t;

#ifdef PROPERTY_REDIS
/* The channel's members, one page (at most N_USERS of them). */
typedef struct page_answer {
  bool got;
  int status;
  uint64_t count;
  got_member_t m[N_USERS];
} page_answer_t;

static void on_page(presence_t *p, int status,
                    const presence_member_info_t *mi, size_t n, uint64_t count,
                    const char *next, void *ud) {
  (void)p;
  (void)next;
  page_answer_t *a = ud;
  a->got = true;
  a->status = status;
  a->count = count;
  for (int u = 0; u < N_USERS; u++) a->m[u].rc = PRESENCE_ENOTMEMBER;
  for (size_t i = 0; i < n; i++) {
    int u = atoi(mi[i].user_id + 1);
    a->m[u] = (got_member_t){0, mi[i].status, data_index(mi[i].data),
                             mi[i].version, mi[i].session_count,
                             mi[i].n_metas, mi[i].availability,
                             mi[i].shown_version};
  }
}

static bool page_got(void *ud) { return ((page_answer_t *)ud)->got; }

static void read_channel(world_t *w, int c, page_answer_t *a) {
  char ch[8];
  snprintf(ch, sizeof ch, "c%d", c);
  memset(a, 0, sizeof *a);
  for (int u = 0; u < N_USERS; u++) w->m[c][u].left_in_read = 0;
  assert_int_equal(presence_channel_members(w->p, ch, NULL, N_USERS, on_page, a),
                   0);
  w->reading = true;
  bool got = run_until(&w->loop, page_got, a, 10000);
  w->reading = false;
  if (!got) fail_msg("no answer about the members of %s", ch);
  assert_int_equal(a->status, 0);
}

static got_member_t get_member(world_t *w, int c, int u) {
  static page_answer_t a;
  read_channel(w, c, &a);
  return a.m[u];
}
#else
static got_member_t get_member(world_t *w, int c, int u) {
  char ch[8], uid[8];
  snprintf(ch, sizeof ch, "c%d", c);
  snprintf(uid, sizeof uid, "u%d", u);
  presence_member_info_t mi;
  got_member_t g = {0};
  g.rc = presence_member_get(w->p, ch, uid, &mi);
  if (g.rc == 0)
    g = (got_member_t){0, mi.status, data_index(mi.data), mi.version,
                       mi.session_count, mi.n_metas, mi.availability,
                       mi.shown_version};
  /* Each session listed is one the model has joined there, by its id's
   * text (half are UUIDs the store keeps as 16 bytes). */
  for (size_t k = 0; g.rc == 0 && k < mi.n_metas; k++) {
    const char *id = mi.metas[k].session_id;
    int si = strlen(id) == 36 ? (int)strtol(id + 24, NULL, 16) : atoi(id + 1);
    if (si < 0 || si >= N_SESSIONS || !w->s[si].connected ||
        w->s[si].user != u || !w->s[si].joined[c])
      fail_msg("%s/%s: session %s listed, not joined in the model", ch, uid, id);
  }
  return g;
}
#endif

static void compare_member(world_t *w, int c, int u, const got_member_t *mi) {
  char ch[8], uid[8];
  snprintf(ch, sizeof ch, "c%d", c);
  snprintf(uid, sizeof uid, "u%d", u);
  mmember_t *m = &w->m[c][u];
  rmember_t *r = &w->r[c][u];
  int rc = mi->rc;
#ifdef PROPERTY_REDIS
  /* Its grace ended in Redis; the leave is still on its way here (read
   * and write answers come on different connections). */
  if (m->pending && rc != 0 && now_ms() >= m->earliest - 2) return;
  /* Its grace's leave came while the page was asked: the page may be from
   * before it. */
  if (rc == 0 && !m->present && m->left_in_read) return;
#endif
  if ((rc == 0) != m->present || r->present != m->present)
    fail_msg("%s/%s: store %s, model %s, replay %s (seed %llu)", ch, uid,
             rc == 0 ? "member" : "none", m->present ? "member" : "none",
             r->present ? "member" : "none", (unsigned long long)w->rng);
  if (!m->present) return;
  if (mi->status != m->status || r->status != m->status)
    fail_msg("%s/%s: store %s, model %s, replay %s (seed %llu)", ch, uid,
             presence_status_name(mi->status), presence_status_name(m->status),
             presence_status_name(r->status), (unsigned long long)w->rng);
  if (mi->data != m->data || data_index(r->has_data ? r->data : NULL) != m->data)
    fail_msg("%s/%s: data %s, model %s, replay %s (seed %llu)", ch, uid,
             datas[mi->data] ? datas[mi->data] : "null",
             datas[m->data] ? datas[m->data] : "null",
             r->has_data ? r->data : "null", (unsigned long long)w->rng);
  presence_status_t st;
  int d;
  int n = computed(w, c, u, &st, &d);
  assert_int_equal(mi->session_count, (uint32_t)n);
  assert_int_equal(mi->n_metas, (size_t)n);
  assert_int_equal(mi->version, r->version);
  assert_int_equal(mi->shown_version, r->shown_version);
  if (mi->availability != w->avail[u])
    fail_msg("%s/%s: availability %d, set %d (seed %llu)", ch, uid,
             mi->availability, w->avail[u], (unsigned long long)w->rng);
}

/* The channel's count and shown count, from the channel listing. */
typedef struct chan_answer {
  const char *name;
  bool got;
  int status;
  uint64_t count, shown_count;
} chan_answer_t;

static void on_chan(presence_t *p, int status,
                    const presence_channel_info_t *ci, size_t n,
                    const char *next, void *ud) {
  (void)p;
  (void)next;
  chan_answer_t *a = ud;
  a->got = true;
  a->status = status;
  if (status == 0 && n && strcmp(ci[0].channel, a->name) == 0) {
    a->count = ci[0].count;
    a->shown_count = ci[0].shown_count;
  }
}

#ifdef PROPERTY_REDIS
static bool chan_got(void *ud) { return ((chan_answer_t *)ud)->got; }
#endif

/* The shown count must be the members less the invisible ones: those the
 * model holds (bounds on Redis, where a member in grace may have left), and
 * those the listing names (listed: members the store listed, of them shown
 * not invisible; -1: not read). */
static void check_shown_count(world_t *w, int c, long listed, long shown) {
  char ch[8];
  snprintf(ch, sizeof ch, "c%d", c);
  /* The model as the listing is asked: on Redis a member in grace may
   * leave while it is out, and the model learns it when the leave comes,
   * which may be before or after the listing was read in Redis. The model
   * then holds each member Redis holds (a leave comes after Redis took
   * it), and Redis at most those in grace fewer. */
  long want = 0, grace_shown = 0, in_grace = 0;
  for (int u = 0; u < N_USERS; u++) {
    int vis = w->avail[u] != PRESENCE_AVAIL_INVISIBLE;
    want += w->m[c][u].present && vis;
    grace_shown += w->m[c][u].pending && vis;
    in_grace += w->m[c][u].pending;
  }
  if (!w->real_time) in_grace = 0;
  chan_answer_t a = {.name = ch};
  assert_int_equal(presence_channels_list(w->p, ch, NULL, 1, on_chan, &a), 0);
#ifdef PROPERTY_REDIS
  if (!run_until(&w->loop, chan_got, &a, 10000))
    fail_msg("no answer about channel %s", ch);
#endif
  assert_true(a.got);
  assert_int_equal(a.status, 0);
  /* The members page was read before this answer (on Redis, a member in
   * grace may have left in between: fewer now, never more). */
  long gone = listed - (long)a.count, gone_shown = shown - (long)a.shown_count;
  if (!((long)a.shown_count <= want && (long)a.shown_count + grace_shown >= want) ||
      (listed >= 0 && (gone < 0 || gone > in_grace || gone_shown < 0 ||
                       gone_shown > gone)))
    fail_msg("%s: shown count %llu of %llu, model %ld (+%ld in grace), "
             "listed %ld of %ld (seed %llu)",
             ch, (unsigned long long)a.shown_count,
             (unsigned long long)a.count, want, grace_shown, shown, listed,
             (unsigned long long)w->rng);
}

static void check_member(world_t *w, int c, int u) {
#ifdef PROPERTY_REDIS
  wait_replay(w);
#endif
  got_member_t g = get_member(w, c, u);
  compare_member(w, c, u, &g);
}

static void check_all(world_t *w) {
  for (int c = 0; c < N_CH; c++) {
    int count = 0;
#ifdef PROPERTY_REDIS
    static page_answer_t a;
    wait_replay(w);
    /* The model as the page is asked (see check_shown_count). */
    int in_grace = 0;
    for (int u = 0; u < N_USERS; u++) {
      count += w->m[c][u].present;
      in_grace += w->m[c][u].pending;
    }
    read_channel(w, c, &a);
    for (int u = 0; u < N_USERS; u++) compare_member(w, c, u, &a.m[u]);
    /* Members in grace may have left in Redis already (see above). */
    assert_true(a.count <= (uint64_t)count &&
                a.count + (uint64_t)in_grace >= (uint64_t)count);
    long listed = 0, shown = 0;
    for (int u = 0; u < N_USERS; u++) {
      if (a.m[u].rc != 0) continue;
      listed++;
      shown += a.m[u].availability != PRESENCE_AVAIL_INVISIBLE;
    }
    check_shown_count(w, c, listed, shown);
#else
    for (int u = 0; u < N_USERS; u++) {
      check_member(w, c, u);
      count += w->m[c][u].present;
    }
    char ch[8];
    snprintf(ch, sizeof ch, "c%d", c);
    assert_int_equal(presence_channel_count(w->p, ch), count);
    long shown = 0;
    for (int u = 0; u < N_USERS; u++)
      shown += w->m[c][u].present &&
               w->avail[u] != PRESENCE_AVAIL_INVISIBLE;
    check_shown_count(w, c, count, shown);
#endif
  }
}

/* ---- writes, on either store ------------------------------------------ */

static void op_done(presence_t *p, int status, void *ud) {
  (void)p;
  world_t *w = ud;
  w->op_pending = false;
  w->op_status = status;
}

#ifdef PROPERTY_REDIS
static bool op_finished(void *ud) { return !((world_t *)ud)->op_pending; }
#endif

/* A write's outcome: what it returned, or what its answer said. */
static int finish(world_t *w, int rc) {
  if (rc != 0) {
    w->op_pending = false;
    return rc;
  }
#ifdef PROPERTY_REDIS
  if (!run_until(&w->loop, op_finished, w, 10000))
    fail_msg("a write got no answer (seed %llu)", (unsigned long long)w->rng);
#endif
  assert_false(w->op_pending);
  return w->op_status;
}

/* The instance a session lives on. */
static presence_t *inst_of(world_t *w, int si) {
#ifdef PROPERTY_REDIS
  return w->in[si & 1].p;
#else
  (void)si;
  return w->p;
#endif
}

#ifdef PROPERTY_REDIS
#define STARTED(w) (w->op_started = now_ms())
#else
#define STARTED(w) (w->op_started = 0)
#endif
#define WRITE(w, call) (w->op_pending = true, STARTED(w), finish(w, (call)))

/* Every channel of a session that ended (or all sessions of a reset). */
static void session_gone(world_t *w, msess_t *s, int graceful) {
  s->connected = 0;
  for (int c = 0; c < N_CH; c++) {
    if (!s->joined[c]) continue;
    s->joined[c] = 0;
    settle(w, c, s->user, graceful);
  }
}

static void kill_beta(world_t *w);

/* Now and then a user's availability is set (through the instance asked):
 * every channel it is in counts it as shown or hidden. */
static void avail_step(world_t *w) {
  if (avail_rand(w) % 100 >= 3) return;
  int u = (int)(avail_rand(w) % N_USERS);
  presence_availability_t a =
      (presence_availability_t)(avail_rand(w) % PRESENCE_AVAIL_COUNT_);
#ifdef PROPERTY_REDIS
  /* A member of u's in its grace may leave any moment, decided by either
   * instance's timer, and its leave be delivered after this write's events
   * though Redis ordered it before: the replay would count the change
   * against a member already gone. Such a user is left alone. */
  for (int c = 0; c < N_CH; c++)
    if (w->m[c][u].pending) return;
#endif
  char uid[8];
  snprintf(uid, sizeof uid, "u%d", u);
  int rc = WRITE(w, presence_user_set_availability(w->p, uid, a, op_done, w));
  assert_int_equal(rc, 0);
  if (w->avail[u] != a) w->avail_changes++;
  w->avail[u] = a;
  for (int c = 0; c < N_CH; c++)
    if (w->m[c][u].present) check_member(w, c, u);
}

static void step(world_t *w) {
  int si = (int)(next_rand(w) % N_SESSIONS);
  msess_t *s = &w->s[si];
  int c = (int)(next_rand(w) % N_CH);
  char sid[40], uid[8], ch[8];
  if (si % 2) /* the memory store keeps these as 16 bytes */
    snprintf(sid, sizeof sid, "00000000-0000-4000-8000-%012x", (unsigned)si);
  else
    snprintf(sid, sizeof sid, "s%d", si);
  snprintf(ch, sizeof ch, "c%d", c);
  uint32_t r = next_rand(w) % 1000;
  w->n_touched = 0;
  int rc;
  if (r < 150) { /* connect */
    int ui = (int)(next_rand(w) % N_USERS);
    snprintf(uid, sizeof uid, "u%d", ui);
    rc = WRITE(w, presence_session_connect(inst_of(w, si), sid, uid, NULL,
                                           op_done, w));
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
    rc = WRITE(w, presence_session_end(inst_of(w, si), sid, reason, op_done,
                                       w));
    assert_int_equal(rc, s->connected ? 0 : PRESENCE_ENOSESSION);
    if (s->connected) session_gone(w, s, reason != PRESENCE_REASON_KICKED);
  } else if (r < 400) { /* status */
    presence_status_t to = next_rand(w) & 1 ? PRESENCE_IDLE : PRESENCE_ONLINE;
    rc = WRITE(w, presence_session_set_status(inst_of(w, si), sid, to,
                                              op_done, w));
    assert_int_equal(rc, s->connected ? 0 : PRESENCE_ENOSESSION);
    if (s->connected) {
      s->status = to;
      for (int k = 0; k < N_CH; k++)
        if (s->joined[k]) settle(w, k, s->user, 1);
    }
  } else if (r < 650) { /* join (again: new data) */
    int d = (int)(next_rand(w) % N_DATA);
    rc = WRITE(w, presence_channel_join(inst_of(w, si), sid, ch, datas[d],
                                        op_done, w));
    assert_int_equal(rc, s->connected ? 0 : PRESENCE_ENOSESSION);
    if (s->connected) {
      s->joined[c] = 1;
      s->data[c] = d;
      s->stamp[c] = ++w->stamp;
      settle(w, c, s->user, 1);
    }
  } else if (r < 750) { /* update */
    int d = (int)(next_rand(w) % N_DATA);
    rc = WRITE(w, presence_channel_update(inst_of(w, si), sid, ch, datas[d],
                                          op_done, w));
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
    rc = WRITE(w, presence_channel_leave(inst_of(w, si), sid, ch, op_done,
                                         w));
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
    rc = WRITE(w, presence_channel_remove_user(w->p, ch, uid, op_done, w));
    if (!w->m[c][ui].present) {
      assert_int_equal(rc, PRESENCE_ENOTMEMBER);
    } else {
      assert_int_equal(rc, 0);
      for (int i = 0; i < N_SESSIONS; i++)
        if (w->s[i].connected && w->s[i].user == ui) w->s[i].joined[c] = 0;
      w->m[c][ui].present = w->m[c][ui].pending = 0;
      touch(w, c, ui);
    }
  } else if (w->real_time && (r < 997 || w->grace)) { /* a moment, for real */
#ifdef PROPERTY_REDIS
    run_for(&w->loop, next_rand(w) % 20);
#endif
    return;
  } else if (w->real_time && !w->grace) { /* beta dies; alpha reaps it */
    kill_beta(w);
    return;
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

#ifdef PROPERTY_REDIS
/* An instance "alpha" or "beta" on the test's redis-server, its decided
 * events into the replay. */
static void start_inst(world_t *w, int idx) {
  inst_opts_t io = {0};
  io.heartbeat_ms = 100;
  io.lease_ms = 1000; /* a loaded test machine must not lose it by itself */
  io.timeout_ms = 5000;
  io.grace_ms = w->grace; /* the channel grace follows the offline grace */
  inst_new(&w->in[idx], &w->loop, &w->server, idx ? "beta" : "alpha", &io);
  w->ctx[idx] = (inst_ctx_t){w, idx};
  assert_true(presence_on_event(w->in[idx].p, on_event, &w->ctx[idx]) > 0);
  wait_ready(&w->loop, &w->in[idx]);
}

static bool beta_reaped(void *ud) {
  world_t *w = ud;
  for (int i = 1; i < N_SESSIONS; i += 2)
    if (w->r_sess[i]) return false;
  return true;
}

/* beta stops (every timer, as a stalled or killed process): once its lease
 * runs out alpha reaps it, and its sessions end (instance_lost) with their
 * memberships. Then a new beta registers under the same id. */
static void kill_beta(world_t *w) {
  long lost_before = w->lost_leaves;
  presence_redis_debug_pause(w->in[1].store, 1);
  if (!run_until(&w->loop, beta_reaped, w, 20000))
    fail_msg("beta's sessions were not reaped (seed %llu)",
             (unsigned long long)w->rng);
  /* The members only beta's sessions held leave, each once, instance_lost. */
  int expect = 0;
  for (int c = 0; c < N_CH; c++)
    for (int u = 0; u < N_USERS; u++) {
      if (!w->m[c][u].present) continue;
      int alpha_holds = 0, beta_holds = 0;
      for (int i = 0; i < N_SESSIONS; i++) {
        msess_t *s = &w->s[i];
        if (!s->connected || s->user != u || !s->joined[c]) continue;
        if (i & 1) beta_holds = 1;
        else alpha_holds = 1;
      }
      expect += beta_holds && !alpha_holds;
    }
  for (int i = 1; i < N_SESSIONS; i += 2)
    if (w->s[i].connected) session_gone(w, &w->s[i], 0);
  run_for(&w->loop, 50); /* nothing more may come */
  if (w->lost_leaves - lost_before != expect)
    fail_msg("%ld members left instance_lost, the model says %d (seed %llu)",
             w->lost_leaves - lost_before, expect, (unsigned long long)w->rng);
  w->ctx[1].idx = -1; /* the dead instance's own shutdown counts for nothing */
  inst_free(&w->in[1]);
  start_inst(w, 1);
  w->losses++;
  check_all(w);
}
#endif

#ifndef PROPERTY_REDIS
static void kill_beta(world_t *w) { /* one instance: never taken */
  (void)w;
}
#endif

static void run(uint32_t grace, uint64_t seed, long steps) {
  world_t *w = calloc(1, sizeof(*w));
  w->grace = grace;
  w->rng = seed;
#ifdef PROPERTY_REDIS
  w->real_time = true;
  srv_init(&w->server);
  assert_int_equal(uv_loop_init(&w->loop), 0);
  start_inst(w, 0);
  start_inst(w, 1);
  w->p = w->in[0].p;
#else
  presence_options_t o;
  test_options(&o, &w->clock, 5, &w->alloc);
  o.offline_grace_ms = grace; /* the channel grace follows it */
  o.log_capacity = 1024;
  assert_int_equal(presence_new(&o, &w->p), 0);
  w->ctx[0] = (inst_ctx_t){w, 0};
  presence_on_event(w->p, on_event, &w->ctx[0]);
#endif
  w->rng_avail = seed ^ 0x5851f42d4c957f2dull;
  for (long i = 0; i < steps; i++) {
    step(w);
    avail_step(w);
    if ((i & 2047) == 0) check_all(w);
  }
  check_all(w);
  assert_true(w->chan_events > steps / 10); /* the run did exercise members */
  assert_true(w->avail_changes > steps / 100); /* and availability */
#ifdef PROPERTY_REDIS
  print_message("%ld steps, %ld channel events, %ld instance losses, %ld "
                "members lost with them, %ld graces ended, %ld events came "
                "ahead of an earlier one\n",
                steps, w->chan_events, w->losses, w->lost_leaves,
                w->graces_ended, w->reordered);
  if (grace) assert_true(w->graces_ended > 0);
  if (!grace) assert_true(w->losses > 0 && w->lost_leaves > 0);
  for (int i = 0; i < 2; i++) {
    w->ctx[i].idx = -1;
    inst_free(&w->in[i]);
  }
  loop_drain(&w->loop);
  assert_int_equal(uv_loop_close(&w->loop), 0);
  srv_fini(&w->server);
#else
  presence_free(w->p);
  assert_int_equal(w->alloc.live, 0);
#endif
  free(w);
}

static long steps_from_env(void) {
#ifdef PROPERTY_REDIS
  const char *s = getenv("PRESENCE_PROPERTY_REDIS_STEPS");
  return s ? atol(s) : 4000;
#else
  const char *s = getenv("PRESENCE_PROPERTY_STEPS");
  return s ? atol(s) : 200000;
#endif
}

static void channel_ops_without_grace(void **state) {
  (void)state;
  run(0, 0x9e3779b97f4a7c15ull, steps_from_env());
}

static void channel_ops_with_grace(void **state) {
  (void)state;
#ifdef PROPERTY_REDIS
  run(REDIS_GRACE_MS, 0xd1b54a32d192ed03ull, steps_from_env());
#else
  run(GRACE_MS, 0xd1b54a32d192ed03ull, steps_from_env());
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(channel_ops_without_grace),
      cmocka_unit_test(channel_ops_with_grace),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
