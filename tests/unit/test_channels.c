/* SPDX-License-Identifier: MIT */
/*
 * Channels on the embedded store (docs/protocol.md section 4): members,
 * their data and status, edge-triggered events per (channel, user) in the
 * documented order, the channel grace, paging, limits and failures that
 * change nothing.
 */
#include "helpers.h"

#include "presence_store.h"

#include <stdio.h>

typedef struct cev {
  presence_event_type_t type;
  presence_reason_t reason;
  char channel[PRESENCE_CHANNEL_MAX + 1];
  char user[PRESENCE_ID_MAX + 1];
  char session[PRESENCE_ID_MAX + 1];
  char data[256];
  int has_data, has_session;
  presence_status_t from, to;
  uint64_t version, count, seq;
} cev_t;

typedef struct fixture {
  fake_clock_t clock;
  counting_alloc_t alloc;
  cev_t ev[512];
  size_t n;
  presence_t *p;
} fixture_t;

static void rec(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  fixture_t *f = ud;
  if (f->n >= 512) return;
  cev_t *e = &f->ev[f->n++];
  memset(e, 0, sizeof(*e));
  e->type = ev->type;
  e->reason = ev->reason;
  e->from = ev->from;
  e->to = ev->to;
  e->version = ev->user_version;
  e->count = ev->count;
  e->seq = ev->seq;
  if (ev->channel) snprintf(e->channel, sizeof(e->channel), "%s", ev->channel);
  if (ev->user_id) snprintf(e->user, sizeof(e->user), "%s", ev->user_id);
  if (ev->session_id) {
    e->has_session = 1;
    snprintf(e->session, sizeof(e->session), "%s", ev->session_id);
  }
  if (ev->meta) {
    e->has_data = 1;
    snprintf(e->data, sizeof(e->data), "%s", ev->meta);
  }
}

static fixture_t *make(uint32_t grace, uint32_t channel_grace,
                       uint32_t max_channels) {
  fixture_t *f = calloc(1, sizeof(*f));
  presence_options_t o;
  test_options(&o, &f->clock, 1000, &f->alloc);
  o.offline_grace_ms = grace;
  o.channel_grace_ms = channel_grace;
  o.max_channels_per_session = max_channels;
  o.instance_id = "test-1";
  assert_int_equal(presence_new(&o, &f->p), 0);
  assert_true(presence_on_event(f->p, rec, f) > 0);
  return f;
}

static void destroy(fixture_t *f) {
  presence_free(f->p);
  assert_int_equal(f->alloc.live, 0);
  free(f);
}

static void connect(fixture_t *f, const char *sid, const char *uid) {
  assert_int_equal(presence_session_connect(f->p, sid, uid, NULL, NULL, NULL),
                   0);
}

static void join(fixture_t *f, const char *sid, const char *ch,
                 const char *data) {
  assert_int_equal(presence_channel_join(f->p, sid, ch, data, NULL, NULL), 0);
}

/* Only the channel events recorded since the last call. */
static size_t chan_events(fixture_t *f, cev_t **out) {
  static cev_t buf[512];
  size_t k = 0;
  for (size_t i = 0; i < f->n; i++)
    if (f->ev[i].type >= PRESENCE_EV_CHANNEL_JOIN &&
        f->ev[i].type <= PRESENCE_EV_CHANNEL_UPDATE)
      buf[k++] = f->ev[i];
  f->n = 0;
  *out = buf;
  return k;
}

static void expect(const cev_t *e, presence_event_type_t type,
                   presence_reason_t reason, const char *ch, const char *user) {
  if (e->type != type)
    fail_msg("%s, expected %s", presence_event_type_name(e->type),
             presence_event_type_name(type));
  assert_int_equal(e->reason, reason);
  assert_string_equal(e->channel, ch);
  assert_string_equal(e->user, user);
}

/* ---- members and events ------------------------------------------------ */

static void join_is_edge_triggered_per_member(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0);
  connect(f, "s1", "ann");
  connect(f, "s2", "ann");
  f->n = 0;
  join(f, "s1", "room", "{\"name\":\"Ann\"}");
  cev_t *e;
  assert_int_equal(chan_events(f, &e), 1);
  expect(&e[0], PRESENCE_EV_CHANNEL_JOIN, PRESENCE_REASON_EXPLICIT, "room",
         "ann");
  assert_string_equal(e[0].session, "s1");
  assert_string_equal(e[0].data, "{\"name\":\"Ann\"}");
  assert_int_equal(e[0].from, PRESENCE_OFFLINE);
  assert_int_equal(e[0].to, PRESENCE_ONLINE);
  assert_int_equal(e[0].version, 1);
  assert_int_equal(e[0].count, 1);
  /* The second session with the same data: a member already, nothing. */
  join(f, "s2", "room", "{\"name\":\"Ann\"}");
  assert_int_equal(chan_events(f, &e), 0);
  presence_member_info_t mi;
  assert_int_equal(presence_member_get(f->p, "room", "ann", &mi), 0);
  assert_int_equal(mi.session_count, 2);
  assert_int_equal(mi.n_metas, 2);
  assert_int_equal(presence_channel_count(f->p, "room"), 1);
  /* One of two leaving: nothing (same data shown). */
  assert_int_equal(presence_channel_leave(f->p, "s1", "room", NULL, NULL), 0);
  assert_int_equal(chan_events(f, &e), 0);
  /* The last leaving: one leave, no grace for an explicit leave. */
  assert_int_equal(presence_channel_leave(f->p, "s2", "room", NULL, NULL), 0);
  assert_int_equal(chan_events(f, &e), 1);
  expect(&e[0], PRESENCE_EV_CHANNEL_LEAVE, PRESENCE_REASON_EXPLICIT, "room",
         "ann");
  assert_int_equal(e[0].from, PRESENCE_ONLINE);
  assert_int_equal(e[0].to, PRESENCE_OFFLINE);
  assert_int_equal(e[0].count, 0);
  assert_int_equal(e[0].version, 2);
  assert_false(e[0].has_data);
  assert_int_equal(presence_channel_count(f->p, "room"), 0);
  /* A second leave changes nothing. */
  assert_int_equal(presence_channel_leave(f->p, "s2", "room", NULL, NULL),
                   PRESENCE_ENOTMEMBER);
  assert_int_equal(chan_events(f, &e), 0);
  destroy(f);
}

/* The store keeps a member's first join inside the member record and
 * allocates the others apart: the first session leaving while others stay,
 * and a later session taking its place, must read like any other order. */
static void first_session_leaving_and_another_joining(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0);
  connect(f, "s1", "ann");
  connect(f, "s2", "ann");
  connect(f, "s3", "ann");
  connect(f, "s4", "ann");
  f->n = 0;
  join(f, "s1", "room", "d1");
  join(f, "s2", "room", "d2");
  join(f, "s3", "room", "d3");
  cev_t *e;
  assert_int_equal(chan_events(f, &e), 3); /* a join, then two updates */
  assert_int_equal(e[2].type, PRESENCE_EV_CHANNEL_UPDATE);
  assert_string_equal(e[2].data, "d3");
  /* The first session goes: s3's data still shows, nothing to tell. */
  assert_int_equal(presence_channel_leave(f->p, "s1", "room", NULL, NULL), 0);
  assert_int_equal(chan_events(f, &e), 0);
  join(f, "s4", "room", "d4");
  assert_int_equal(chan_events(f, &e), 1);
  expect(&e[0], PRESENCE_EV_CHANNEL_UPDATE, PRESENCE_REASON_EXPLICIT, "room",
         "ann");
  assert_string_equal(e[0].data, "d4");
  presence_member_info_t mi;
  assert_int_equal(presence_member_get(f->p, "room", "ann", &mi), 0);
  assert_int_equal(mi.session_count, 3);
  /* The newest goes: the one before it shows again. */
  assert_int_equal(presence_channel_leave(f->p, "s4", "room", NULL, NULL), 0);
  assert_int_equal(chan_events(f, &e), 1);
  assert_string_equal(e[0].data, "d3");
  assert_int_equal(presence_channel_leave(f->p, "s2", "room", NULL, NULL), 0);
  assert_int_equal(chan_events(f, &e), 0);
  /* s1 again while s3 holds the member, then s3's end: s1's data shows. */
  join(f, "s1", "room", "d1");
  assert_int_equal(chan_events(f, &e), 1);
  assert_string_equal(e[0].data, "d1");
  assert_int_equal(presence_session_disconnect(f->p, "s3", NULL, NULL), 0);
  assert_int_equal(chan_events(f, &e), 0);
  assert_int_equal(presence_channel_leave(f->p, "s1", "room", NULL, NULL), 0);
  assert_int_equal(chan_events(f, &e), 1);
  expect(&e[0], PRESENCE_EV_CHANNEL_LEAVE, PRESENCE_REASON_EXPLICIT, "room",
         "ann");
  assert_int_equal(presence_channel_count(f->p, "room"), 0);
  /* Back: a new member, a join; the engine's end frees every record. */
  join(f, "s2", "room", "d2");
  join(f, "s4", "room", NULL);
  assert_int_equal(chan_events(f, &e), 2);
  expect(&e[0], PRESENCE_EV_CHANNEL_JOIN, PRESENCE_REASON_EXPLICIT, "room",
         "ann");
  destroy(f);
}

static void member_data_is_the_most_recent_sessions(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0);
  connect(f, "s1", "ann");
  connect(f, "s2", "ann");
  join(f, "s1", "room", "{\"c\":1}");
  join(f, "s2", "room", "{\"c\":2}");
  cev_t *e;
  assert_int_equal(chan_events(f, &e), 2);
  expect(&e[1], PRESENCE_EV_CHANNEL_UPDATE, PRESENCE_REASON_EXPLICIT, "room",
         "ann");
  assert_string_equal(e[1].data, "{\"c\":2}");
  assert_int_equal(e[1].version, 2);
  /* s1 updates: it is the most recent now. */
  assert_int_equal(
      presence_channel_update(f->p, "s1", "room", "{\"c\":3}", NULL, NULL), 0);
  assert_int_equal(chan_events(f, &e), 1);
  assert_string_equal(e[0].data, "{\"c\":3}");
  /* Updating to the same data emits nothing. */
  presence_channel_update(f->p, "s1", "room", "{\"c\":3}", NULL, NULL);
  assert_int_equal(chan_events(f, &e), 0);
  /* The most recent one leaves: the member shows the other's data. */
  presence_channel_leave(f->p, "s1", "room", NULL, NULL);
  assert_int_equal(chan_events(f, &e), 1);
  expect(&e[0], PRESENCE_EV_CHANNEL_UPDATE, PRESENCE_REASON_EXPLICIT, "room",
         "ann");
  assert_string_equal(e[0].data, "{\"c\":2}");
  /* Clearing the data: an update without data. */
  presence_channel_update(f->p, "s2", "room", NULL, NULL, NULL);
  assert_int_equal(chan_events(f, &e), 1);
  assert_false(e[0].has_data);
  /* Joining again replaces the data, like update. */
  join(f, "s2", "room", "{\"c\":9}");
  assert_int_equal(chan_events(f, &e), 1);
  assert_int_equal(e[0].type, PRESENCE_EV_CHANNEL_UPDATE);
  destroy(f);
}

static void status_in_channel_is_the_lattice_of_joined_sessions(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0);
  connect(f, "s1", "ann");
  connect(f, "s2", "ann");
  join(f, "s1", "room", NULL);
  cev_t *e;
  chan_events(f, &e);
  /* s2 is not in the channel: idling s1 makes the member idle although the
   * user stays online. */
  presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL);
  assert_int_equal(chan_events(f, &e), 1);
  expect(&e[0], PRESENCE_EV_CHANNEL_UPDATE, PRESENCE_REASON_EXPLICIT, "room",
         "ann");
  assert_int_equal(e[0].from, PRESENCE_ONLINE);
  assert_int_equal(e[0].to, PRESENCE_IDLE);
  /* s2 (online) joins: online again. */
  join(f, "s2", "room", NULL);
  assert_int_equal(chan_events(f, &e), 1);
  assert_int_equal(e[0].to, PRESENCE_ONLINE);
  /* s2 goes idle too: idle; the user went idle first, then the channel. */
  presence_session_set_status(f->p, "s2", PRESENCE_IDLE, NULL, NULL);
  assert_int_equal(f->n, 3);
  assert_int_equal(f->ev[0].type, PRESENCE_EV_SESSION_STATUS);
  assert_int_equal(f->ev[1].type, PRESENCE_EV_USER_IDLE);
  assert_int_equal(f->ev[2].type, PRESENCE_EV_CHANNEL_UPDATE);
  assert_int_equal(f->ev[2].to, PRESENCE_IDLE);
  f->n = 0;
  presence_member_info_t mi;
  presence_member_get(f->p, "room", "ann", &mi);
  assert_int_equal(mi.status, PRESENCE_IDLE);
  destroy(f);
}

static void memberships_end_with_the_session_in_order(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0);
  connect(f, "s1", "ann");
  connect(f, "s9", "bob");
  join(f, "s1", "b-room", "{}");
  join(f, "s1", "a-room", NULL);
  join(f, "s9", "a-room", NULL);
  f->n = 0;
  assert_int_equal(presence_session_disconnect(f->p, "s1", NULL, NULL), 0);
  assert_int_equal(f->n, 4);
  assert_int_equal(f->ev[0].type, PRESENCE_EV_SESSION_DISCONNECTED);
  assert_int_equal(f->ev[1].type, PRESENCE_EV_USER_OFFLINE);
  expect(&f->ev[2], PRESENCE_EV_CHANNEL_LEAVE, PRESENCE_REASON_DISCONNECT,
         "b-room", "ann");
  expect(&f->ev[3], PRESENCE_EV_CHANNEL_LEAVE, PRESENCE_REASON_DISCONNECT,
         "a-room", "ann");
  assert_string_equal(f->ev[3].session, "s1");
  assert_int_equal(f->ev[3].count, 1);
  assert_true(f->ev[1].seq < f->ev[2].seq && f->ev[2].seq < f->ev[3].seq);
  assert_int_equal(presence_channel_count(f->p, "a-room"), 1);
  assert_int_equal(presence_channel_count(f->p, "b-room"), 0);
  presence_stats_t st;
  presence_stats(f->p, &st);
  assert_int_equal(st.channels, 1);
  assert_int_equal(st.members, 1);
  assert_int_equal(st.memberships, 1);
  assert_int_equal(st.events[PRESENCE_EV_CHANNEL_LEAVE], 2);
  destroy(f);
}

static void channel_grace_keeps_a_reloading_member(void **state) {
  (void)state;
  fixture_t *f = make(5000, 0, 0); /* channel grace: the offline grace */
  connect(f, "s1", "ann");
  join(f, "s1", "room", "{\"c\":1}");
  cev_t *e;
  chan_events(f, &e);
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  assert_int_equal(chan_events(f, &e), 0);
  /* Still a member (in its grace), counted and listed. */
  assert_int_equal(presence_channel_count(f->p, "room"), 1);
  clock_advance(&f->clock, 2000);
  presence_tick(f->p);
  /* The reload: same data, no event at all. */
  connect(f, "s2", "ann");
  join(f, "s2", "room", "{\"c\":1}");
  assert_int_equal(chan_events(f, &e), 0);
  clock_advance(&f->clock, 10000);
  presence_tick(f->p);
  assert_int_equal(chan_events(f, &e), 0);
  /* Ended again, back with other data: one update. */
  presence_session_disconnect(f->p, "s2", NULL, NULL);
  connect(f, "s3", "ann");
  join(f, "s3", "room", "{\"c\":2}");
  assert_int_equal(chan_events(f, &e), 1);
  assert_int_equal(e[0].type, PRESENCE_EV_CHANNEL_UPDATE);
  /* Ended and not back: the leave waits the grace, reason disconnect. */
  presence_session_disconnect(f->p, "s3", NULL, NULL);
  clock_advance(&f->clock, 4999);
  presence_tick(f->p);
  assert_int_equal(chan_events(f, &e), 0);
  clock_advance(&f->clock, 1);
  presence_tick(f->p);
  assert_int_equal(chan_events(f, &e), 1);
  expect(&e[0], PRESENCE_EV_CHANNEL_LEAVE, PRESENCE_REASON_DISCONNECT, "room",
         "ann");
  assert_false(e[0].has_session);
  assert_int_equal(presence_channel_count(f->p, "room"), 0);
  destroy(f);
}

static void final_ends_skip_the_channel_grace(void **state) {
  (void)state;
  fixture_t *f = make(0, 5000, 0);
  connect(f, "s1", "ann");
  connect(f, "s2", "bob");
  join(f, "s1", "room", NULL);
  join(f, "s2", "room", NULL);
  cev_t *e;
  chan_events(f, &e);
  presence_session_kick(f->p, "s1", NULL, NULL);
  assert_int_equal(chan_events(f, &e), 1);
  expect(&e[0], PRESENCE_EV_CHANNEL_LEAVE, PRESENCE_REASON_KICKED, "room",
         "ann");
  /* PRESENCE_GRACE_NONE-free check: a remove by a backend is immediate. */
  assert_int_equal(
      presence_channel_remove_user(f->p, "room", "bob", NULL, NULL), 0);
  assert_int_equal(chan_events(f, &e), 1);
  expect(&e[0], PRESENCE_EV_CHANNEL_LEAVE, PRESENCE_REASON_KICKED, "room",
         "bob");
  /* bob's session is still connected, only out of the channel. */
  presence_session_info_t si;
  assert_int_equal(presence_session_get(f->p, "s2", &si), 0);
  assert_int_equal(presence_channel_leave(f->p, "s2", "room", NULL, NULL),
                   PRESENCE_ENOTMEMBER);
  assert_int_equal(
      presence_channel_remove_user(f->p, "room", "bob", NULL, NULL),
      PRESENCE_ENOTMEMBER);
  destroy(f);
}

static void no_grace_when_asked(void **state) {
  (void)state;
  fixture_t *f = make(5000, PRESENCE_GRACE_NONE, 0);
  connect(f, "s1", "ann");
  join(f, "s1", "room", NULL);
  cev_t *e;
  chan_events(f, &e);
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  assert_int_equal(chan_events(f, &e), 1);
  assert_int_equal(e[0].type, PRESENCE_EV_CHANNEL_LEAVE);
  destroy(f);
}

static void reset_ends_every_membership(void **state) {
  (void)state;
  fixture_t *f = make(0, 5000, 0);
  connect(f, "s1", "ann");
  connect(f, "s2", "bob");
  join(f, "s1", "room", NULL);
  join(f, "s2", "room", NULL);
  presence_session_disconnect(f->p, "s2", NULL, NULL); /* bob in grace */
  cev_t *e;
  chan_events(f, &e);
  assert_int_equal(presence_reset(f->p, NULL, NULL), 0);
  size_t n = f->n;
  assert_int_equal(f->ev[n - 1].type, PRESENCE_EV_CLEANUP);
  assert_int_equal(chan_events(f, &e), 2);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(e[i].type, PRESENCE_EV_CHANNEL_LEAVE);
    assert_int_equal(e[i].reason, PRESENCE_REASON_INSTANCE_LOST);
  }
  assert_int_equal(presence_channel_count(f->p, "room"), 0);
  destroy(f);
}

/* presence_end_graces: a member in its channel grace leaves now, reason
 * shutdown; a member with a session stays. */
static void end_graces_ends_channel_graces(void **state) {
  (void)state;
  fixture_t *f = make(0, 5000, 0);
  connect(f, "s1", "ann");
  connect(f, "s2", "bob");
  join(f, "s1", "room", NULL);
  join(f, "s2", "room", NULL);
  presence_session_disconnect(f->p, "s2", NULL, NULL); /* bob in grace */
  cev_t *e;
  chan_events(f, &e);
  assert_int_equal(presence_channel_count(f->p, "room"), 2);
  assert_int_equal(presence_end_graces(f->p, NULL, NULL), 0);
  assert_int_equal(chan_events(f, &e), 1);
  assert_int_equal(e[0].type, PRESENCE_EV_CHANNEL_LEAVE);
  assert_int_equal(e[0].reason, PRESENCE_REASON_SHUTDOWN);
  assert_string_equal(e[0].user, "bob");
  assert_int_equal(presence_channel_count(f->p, "room"), 1);
  destroy(f);
}

/* ---- queries ----------------------------------------------------------- */

typedef struct page {
  char users[1000][16];
  size_t n;
  uint64_t count;
  char next[PRESENCE_ID_MAX + 1];
  int has_next;
} page_t;

static void page_cb(presence_t *p, int status, const presence_member_info_t *m,
                    size_t n, uint64_t count, const char *next, void *ud) {
  (void)p;
  page_t *pg = ud;
  assert_int_equal(status, 0);
  pg->count = count;
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(m[i].channel, "big");
    snprintf(pg->users[pg->n++], 16, "%s", m[i].user_id);
  }
  pg->has_next = next != NULL;
  if (next) snprintf(pg->next, sizeof(pg->next), "%s", next);
}

static void members_page_in_user_id_order(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0);
  char sid[32], uid[32];
  /* 250 members, joined in a scrambled order. */
  for (int i = 0; i < 250; i++) {
    int k = (i * 97) % 250;
    snprintf(sid, sizeof(sid), "s%03d", k);
    snprintf(uid, sizeof(uid), "u%03d", k);
    connect(f, sid, uid);
    join(f, sid, "big", NULL);
  }
  static page_t pg;
  memset(&pg, 0, sizeof(pg));
  const char *after = NULL;
  char cursor[PRESENCE_ID_MAX + 1];
  int pages = 0;
  do {
    assert_int_equal(
        presence_channel_members(f->p, "big", after, 100, page_cb, &pg), 0);
    pages++;
    if (!pg.has_next) break;
    snprintf(cursor, sizeof(cursor), "%s", pg.next);
    after = cursor;
  } while (pages < 10);
  assert_int_equal(pages, 3);
  assert_int_equal(pg.count, 250);
  assert_int_equal(pg.n, 250);
  for (int i = 0; i < 250; i++) {
    snprintf(uid, sizeof(uid), "u%03d", i);
    assert_string_equal(pg.users[i], uid);
  }
  /* Count only; an unknown channel is empty, not an error. */
  memset(&pg, 0, sizeof(pg));
  presence_channel_members(f->p, "big", NULL, 0, page_cb, &pg);
  assert_int_equal(pg.n, 0);
  assert_int_equal(pg.count, 250);
  memset(&pg, 0, sizeof(pg));
  presence_channel_members(f->p, "nobody-here", NULL, 10, page_cb, &pg);
  assert_int_equal(pg.count, 0);
  destroy(f);
}

typedef struct chlist {
  char names[16][32];
  uint64_t counts[16];
  size_t n;
  int has_next;
} chlist_t;

static void chlist_cb(presence_t *p, int status,
                      const presence_channel_info_t *c, size_t n,
                      const char *next, void *ud) {
  (void)p;
  chlist_t *l = ud;
  assert_int_equal(status, 0);
  for (size_t i = 0; i < n && l->n < 16; i++) {
    snprintf(l->names[l->n], 32, "%s", c[i].channel);
    l->counts[l->n++] = c[i].count;
  }
  l->has_next = next != NULL;
}

static void user_channels_cb(presence_t *p, int status,
                             const presence_member_info_t *m, size_t n,
                             uint64_t count, const char *next, void *ud) {
  (void)p;
  (void)next;
  assert_int_equal(status, 0);
  assert_int_equal(count, n);
  size_t *seen = ud;
  *seen = n;
  for (size_t i = 0; i < n; i++) assert_string_equal(m[i].user_id, "ann");
}

static void channels_under_a_prefix_and_a_users_channels(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0);
  connect(f, "s1", "ann");
  connect(f, "s2", "bob");
  join(f, "s1", "room:b", NULL);
  join(f, "s1", "room:a", NULL);
  join(f, "s2", "room:a", NULL);
  join(f, "s1", "doc:1", NULL);
  chlist_t l = {0};
  assert_int_equal(presence_channels_list(f->p, "room:", NULL, 10, chlist_cb, &l), 0);
  assert_int_equal(l.n, 2);
  assert_string_equal(l.names[0], "room:a");
  assert_int_equal(l.counts[0], 2);
  assert_string_equal(l.names[1], "room:b");
  assert_false(l.has_next);
  memset(&l, 0, sizeof(l));
  presence_channels_list(f->p, NULL, NULL, 2, chlist_cb, &l);
  assert_int_equal(l.n, 2);
  assert_string_equal(l.names[0], "doc:1");
  assert_true(l.has_next);
  size_t seen = 0;
  assert_int_equal(presence_user_channels(f->p, "ann", user_channels_cb, &seen), 0);
  assert_int_equal(seen, 3);
  destroy(f);
}

/* ---- bad input and limits ---------------------------------------------- */

static void bad_input_changes_nothing(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 2);
  connect(f, "s1", "ann");
  f->n = 0;
  char longname[PRESENCE_CHANNEL_MAX + 2];
  memset(longname, 'x', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  assert_int_equal(presence_channel_join(f->p, "s1", longname, NULL, NULL, NULL),
                   PRESENCE_ECHANNEL);
  assert_int_equal(presence_channel_join(f->p, "s1", "", NULL, NULL, NULL),
                   PRESENCE_ECHANNEL);
  assert_int_equal(presence_channel_join(f->p, "s1", "a\nb", NULL, NULL, NULL),
                   PRESENCE_ECHANNEL);
  assert_int_equal(presence_channel_join(f->p, "s1", NULL, NULL, NULL, NULL),
                   PRESENCE_ECHANNEL);
  static char big[PRESENCE_DATA_MAX + 2];
  memset(big, 'd', sizeof(big) - 1);
  assert_int_equal(presence_channel_join(f->p, "s1", "room", big, NULL, NULL),
                   PRESENCE_EDATA);
  assert_int_equal(presence_channel_join(f->p, "nope", "room", NULL, NULL, NULL),
                   PRESENCE_ENOSESSION);
  assert_int_equal(presence_channel_update(f->p, "s1", "room", "{}", NULL, NULL),
                   PRESENCE_ENOTMEMBER);
  join(f, "s1", "a", NULL);
  join(f, "s1", "b", NULL);
  f->n = 0;
  assert_int_equal(presence_channel_join(f->p, "s1", "c", NULL, NULL, NULL),
                   PRESENCE_ECHANLIMIT);
  /* Joining one already joined is no new channel: allowed. */
  join(f, "s1", "b", "{}");
  cev_t *e;
  assert_int_equal(chan_events(f, &e), 1);
  assert_int_equal(presence_channel_count(f->p, "c"), 0);
  destroy(f);
}

static void out_of_memory_changes_nothing(void **state) {
  (void)state;
  /* Every allocation of a join failing in turn: no event, no member, no
   * leak, and the next try works. */
  for (long k = 0; k < 8; k++) {
    fixture_t *f = make(0, 0, 0);
    connect(f, "s1", "ann");
    connect(f, "s2", "bob");
    join(f, "s2", "room", NULL);
    f->n = 0;
    f->alloc.fail_after = k;
    int rc = presence_channel_join(f->p, "s1", "room", "{\"a\":1}", NULL, NULL);
    f->alloc.fail_after = -1;
    cev_t *e;
    if (rc == 0) {
      if (f->n != 1) fail_msg("k=%ld: %zu events", k, f->n);
      assert_int_equal(chan_events(f, &e), 1);
      assert_int_equal(presence_channel_count(f->p, "room"), 2);
    } else {
      assert_int_equal(rc, PRESENCE_ENOMEM);
      assert_int_equal(chan_events(f, &e), 0);
      assert_int_equal(presence_channel_count(f->p, "room"), 1);
      join(f, "s1", "room", NULL);
      assert_int_equal(presence_channel_count(f->p, "room"), 2);
    }
    destroy(f);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(join_is_edge_triggered_per_member),
      cmocka_unit_test(member_data_is_the_most_recent_sessions),
      cmocka_unit_test(status_in_channel_is_the_lattice_of_joined_sessions),
      cmocka_unit_test(memberships_end_with_the_session_in_order),
      cmocka_unit_test(first_session_leaving_and_another_joining),
      cmocka_unit_test(channel_grace_keeps_a_reloading_member),
      cmocka_unit_test(final_ends_skip_the_channel_grace),
      cmocka_unit_test(no_grace_when_asked),
      cmocka_unit_test(reset_ends_every_membership),
      cmocka_unit_test(end_graces_ends_channel_graces),
      cmocka_unit_test(members_page_in_user_id_order),
      cmocka_unit_test(channels_under_a_prefix_and_a_users_channels),
      cmocka_unit_test(bad_input_changes_nothing),
      cmocka_unit_test(out_of_memory_changes_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
