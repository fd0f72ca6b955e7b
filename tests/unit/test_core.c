/* SPDX-License-Identifier: MIT */
/*
 * The rules of DESIGN.md section 2, one test each, on the embedded store with
 * an injected clock and a counting allocator.
 */
#include "helpers.h"

#include "presence_store.h"
#include "core/internal.h"

typedef struct fixture {
  fake_clock_t clock;
  counting_alloc_t alloc;
  recorder_t rec;
  presence_t *p;
} fixture_t;

static fixture_t *make_with(uint32_t grace, uint32_t inactivity,
                            uint32_t log_cap, uint32_t max_sessions,
                            uint32_t retention_s) {
  fixture_t *f = calloc(1, sizeof(*f));
  presence_options_t o;
  test_options(&o, &f->clock, 1000, &f->alloc);
  o.offline_grace_ms = grace;
  o.inactivity_ms = inactivity;
  o.log_capacity = log_cap;
  o.max_sessions_per_user = max_sessions;
  o.offline_retention_s = retention_s;
  o.instance_id = "test-1";
  assert_int_equal(presence_new(&o, &f->p), 0);
  assert_true(presence_on_event(f->p, record_cb, &f->rec) > 0);
  return f;
}

static fixture_t *make(uint32_t grace, uint32_t inactivity, uint32_t log_cap,
                       uint32_t max_sessions) {
  return make_with(grace, inactivity, log_cap, max_sessions, 0);
}

static void destroy(fixture_t *f) {
  presence_free(f->p);
  assert_int_equal(f->alloc.live, 0); /* nothing leaked */
  free(f);
}

static void expect_event(fixture_t *f, size_t i, presence_event_type_t type,
                         presence_reason_t reason, const char *user) {
  assert_true(i < f->rec.n);
  rec_event_t *e = &f->rec.ev[i];
  if (e->type != type)
    fail_msg("event %zu: %s, expected %s", i, presence_event_type_name(e->type),
             presence_event_type_name(type));
  assert_int_equal(e->reason, reason);
  if (user) assert_string_equal(e->user_id, user);
}

static presence_status_t status_of(fixture_t *f, const char *user) {
  presence_user_info_t info;
  assert_int_equal(presence_user_get(f->p, user, &info), 0);
  return info.status;
}

/* ---- transitions ------------------------------------------------------- */

/* The record tables' hash key comes from the host when it gives one before
 * the first table hashes (the daemon draws it from its injectable random
 * source), and cannot change under live tables afterwards. Runs first: no
 * table of this process has hashed yet. */
static void hash_key_is_given_once_before_any_table(void **state) {
  (void)state;
  uint8_t key[16];
  for (int i = 0; i < 16; i++) key[i] = (uint8_t)(i * 7 + 1);
  assert_int_equal(presence_hash_key_set(NULL), PRESENCE_EINVAL);
  assert_int_equal(presence_hash_key_set(key), 0);
  fixture_t *f = make(0, 0, 0, 0);
  assert_int_equal(presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL), 0);
  assert_int_equal(status_of(f, "alice"), PRESENCE_ONLINE);
  /* Fixed now: a second key would move every record of a live table. */
  key[0] ^= 0xff;
  assert_int_equal(presence_hash_key_set(key), PRESENCE_EBUSY);
  destroy(f);
}

static void connect_emits_session_then_user(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  assert_int_equal(presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL), 0);
  assert_int_equal(f->rec.n, 2);
  expect_event(f, 0, PRESENCE_EV_SESSION_CONNECTED, PRESENCE_REASON_CONNECT, "alice");
  expect_event(f, 1, PRESENCE_EV_USER_ONLINE, PRESENCE_REASON_CONNECT, "alice");
  assert_string_equal(f->rec.ev[1].session_id, "s1");
  assert_int_equal(f->rec.ev[1].from, PRESENCE_OFFLINE);
  assert_int_equal(f->rec.ev[1].to, PRESENCE_ONLINE);
  assert_int_equal(f->rec.ev[1].version, 1);
  assert_int_equal(f->rec.ev[1].last_seen, f->rec.ev[1].ts);
  assert_true(f->rec.ev[0].seq < f->rec.ev[1].seq);
  assert_int_equal(f->rec.ev[0].ts, f->clock.wall);
  assert_int_equal(status_of(f, "alice"), PRESENCE_ONLINE);
  destroy(f);
}

static void second_session_is_no_user_transition(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  presence_session_connect(f->p, "s2", "alice", NULL, NULL, NULL);
  assert_int_equal(f->rec.n, 3);
  expect_event(f, 2, PRESENCE_EV_SESSION_CONNECTED, PRESENCE_REASON_CONNECT, "alice");
  /* Closing one of two sessions: a session event, no user event. */
  assert_int_equal(presence_session_disconnect(f->p, "s1", NULL, NULL), 0);
  assert_int_equal(f->rec.n, 4);
  expect_event(f, 3, PRESENCE_EV_SESSION_DISCONNECTED, PRESENCE_REASON_DISCONNECT, "alice");
  presence_user_info_t info;
  presence_user_get(f->p, "alice", &info);
  assert_int_equal(info.session_count, 1);
  assert_int_equal(info.status, PRESENCE_ONLINE);
  destroy(f);
}

static void idle_only_when_every_session_is_idle(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  presence_session_connect(f->p, "s2", "alice", NULL, NULL, NULL);
  f->rec.n = 0;
  assert_int_equal(presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL), 0);
  assert_int_equal(f->rec.n, 1);
  expect_event(f, 0, PRESENCE_EV_SESSION_STATUS, PRESENCE_REASON_EXPLICIT, "alice");
  assert_int_equal(f->rec.ev[0].from, PRESENCE_ONLINE);
  assert_int_equal(f->rec.ev[0].to, PRESENCE_IDLE);
  assert_int_equal(status_of(f, "alice"), PRESENCE_ONLINE);
  presence_session_set_status(f->p, "s2", PRESENCE_IDLE, NULL, NULL);
  assert_int_equal(f->rec.n, 3);
  expect_event(f, 1, PRESENCE_EV_SESSION_STATUS, PRESENCE_REASON_EXPLICIT, "alice");
  expect_event(f, 2, PRESENCE_EV_USER_IDLE, PRESENCE_REASON_EXPLICIT, "alice");
  assert_string_equal(f->rec.ev[2].session_id, "s2");
  assert_int_equal(status_of(f, "alice"), PRESENCE_IDLE);
  /* Same status again: nothing. */
  presence_session_set_status(f->p, "s2", PRESENCE_IDLE, NULL, NULL);
  assert_int_equal(f->rec.n, 3);
  /* One back online: the user is online. */
  presence_session_set_status(f->p, "s1", PRESENCE_ONLINE, NULL, NULL);
  assert_int_equal(f->rec.n, 5);
  expect_event(f, 4, PRESENCE_EV_USER_ONLINE, PRESENCE_REASON_EXPLICIT, "alice");
  assert_int_equal(f->rec.ev[4].from, PRESENCE_IDLE);
  /* A new session of an idle user makes it online. */
  presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL);
  f->rec.n = 0;
  presence_session_connect(f->p, "s3", "alice", NULL, NULL, NULL);
  assert_int_equal(f->rec.n, 2);
  expect_event(f, 1, PRESENCE_EV_USER_ONLINE, PRESENCE_REASON_CONNECT, "alice");
  assert_int_equal(f->rec.ev[1].from, PRESENCE_IDLE);
  destroy(f);
}

static void last_session_ends_offline_with_last_seen(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  clock_advance(&f->clock, 60000);
  int64_t when = f->clock.wall;
  f->rec.n = 0;
  assert_int_equal(presence_session_end(f->p, "s1", PRESENCE_REASON_TIMEOUT, NULL, NULL), 0);
  assert_int_equal(f->rec.n, 2);
  expect_event(f, 0, PRESENCE_EV_SESSION_DISCONNECTED, PRESENCE_REASON_TIMEOUT, "alice");
  expect_event(f, 1, PRESENCE_EV_USER_OFFLINE, PRESENCE_REASON_TIMEOUT, "alice");
  assert_int_equal(f->rec.ev[1].version, 2);
  clock_advance(&f->clock, 5000);
  presence_user_info_t info;
  presence_user_get(f->p, "alice", &info);
  assert_int_equal(info.status, PRESENCE_OFFLINE);
  assert_int_equal(info.last_seen_ms, when);
  assert_int_equal(info.since_ms, when);
  assert_int_equal(info.version, 2);
  assert_int_equal(info.session_count, 0);
  destroy(f);
}

static void unknown_user_is_offline_not_an_error(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  presence_user_info_t info;
  assert_int_equal(presence_user_get(f->p, "nobody", &info), 0);
  assert_int_equal(info.status, PRESENCE_OFFLINE);
  assert_int_equal(info.version, 0);
  assert_int_equal(info.last_seen_ms, 0);
  assert_string_equal(info.user_id, "nobody");
  destroy(f);
}

/* ---- no resurrection, no duplicates ------------------------------------ */

static void duplicates_and_closed_sessions_change_nothing(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  f->rec.n = 0;
  assert_int_equal(presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL), PRESENCE_EEXIST);
  assert_int_equal(presence_session_connect(f->p, "s1", "bob", NULL, NULL, NULL), PRESENCE_EEXIST);
  assert_int_equal(f->rec.n, 0);
  assert_int_equal(status_of(f, "bob"), PRESENCE_OFFLINE);
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  f->rec.n = 0;
  assert_int_equal(presence_session_disconnect(f->p, "s1", NULL, NULL), PRESENCE_ENOSESSION);
  assert_int_equal(presence_session_kick(f->p, "s1", NULL, NULL), PRESENCE_ENOSESSION);
  /* The seed's perma-green: a status update must not re-create it. */
  assert_int_equal(presence_session_set_status(f->p, "s1", PRESENCE_ONLINE, NULL, NULL), PRESENCE_ENOSESSION);
  assert_int_equal(presence_session_touch(f->p, "s1"), PRESENCE_ENOSESSION);
  assert_int_equal(f->rec.n, 0);
  assert_int_equal(status_of(f, "alice"), PRESENCE_OFFLINE);
  presence_session_info_t si;
  assert_int_equal(presence_session_get(f->p, "s1", &si), PRESENCE_ENOSESSION);
  destroy(f);
}

static void bad_arguments_are_refused(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  char long_id[PRESENCE_ID_MAX + 2];
  memset(long_id, 'a', sizeof(long_id) - 1);
  long_id[sizeof(long_id) - 1] = '\0';
  char max_id[PRESENCE_ID_MAX + 1];
  memset(max_id, 'b', PRESENCE_ID_MAX);
  max_id[PRESENCE_ID_MAX] = '\0';

  assert_int_equal(presence_session_connect(NULL, "s", "u", NULL, NULL, NULL), PRESENCE_EINVAL);
  assert_int_equal(presence_session_connect(f->p, NULL, "u", NULL, NULL, NULL), PRESENCE_EID);
  assert_int_equal(presence_session_connect(f->p, "s", NULL, NULL, NULL, NULL), PRESENCE_EID);
  assert_int_equal(presence_session_connect(f->p, "", "u", NULL, NULL, NULL), PRESENCE_EID);
  assert_int_equal(presence_session_connect(f->p, "s", "", NULL, NULL, NULL), PRESENCE_EID);
  assert_int_equal(presence_session_connect(f->p, long_id, "u", NULL, NULL, NULL), PRESENCE_EID);
  assert_int_equal(presence_session_connect(f->p, "s", long_id, NULL, NULL, NULL), PRESENCE_EID);
  assert_int_equal(presence_session_connect(f->p, "s", "bad\xc3(", NULL, NULL, NULL), PRESENCE_EID);
  assert_int_equal(presence_session_connect(f->p, "s", "\xc0\xaf", NULL, NULL, NULL), PRESENCE_EID); /* overlong */
  assert_int_equal(presence_session_connect(f->p, "s", "\xed\xa0\x80", NULL, NULL, NULL), PRESENCE_EID); /* surrogate */
  assert_int_equal(presence_session_connect(f->p, "s", "tab\there", NULL, NULL, NULL), PRESENCE_EID);
  /* C1 controls (issue 18): U+0080, NEL U+0085, U+009F refused; U+00A0 fine. */
  assert_int_equal(presence_id_check("a\xc2\x80"), PRESENCE_EID);
  assert_int_equal(presence_id_check("nel\xc2\x85here"), PRESENCE_EID);
  assert_int_equal(presence_id_check("\xc2\x9f"), PRESENCE_EID);
  assert_int_equal(presence_id_check("nbsp\xc2\xa0ok"), 0);
  assert_int_equal(presence_session_connect(f->p, "s", "x\xc2\x85", NULL, NULL, NULL), PRESENCE_EID);
  /* Long enough for the word-at-a-time path. */
  assert_int_equal(presence_session_connect(f->p, "s", "abcdefg\x7fhijklmnop", NULL, NULL, NULL), PRESENCE_EID);
  assert_int_equal(presence_session_connect(f->p, "s", "abcdefghij\x01klmnop", NULL, NULL, NULL), PRESENCE_EID);
  assert_int_equal(presence_session_connect(f->p, "s", "abcdefghijklmno\xff", NULL, NULL, NULL), PRESENCE_EID);
  assert_int_equal(presence_session_connect(f->p, "s", "abcdefghijkl\xe2\x82", NULL, NULL, NULL), PRESENCE_EID);
  assert_int_equal(presence_session_set_status(f->p, "s", PRESENCE_OFFLINE, NULL, NULL), PRESENCE_ESTATUS);
  assert_int_equal(presence_session_set_status(f->p, "s", (presence_status_t)7, NULL, NULL), PRESENCE_ESTATUS);
  assert_int_equal(presence_session_end(f->p, "s", PRESENCE_REASON_RESYNC, NULL, NULL), PRESENCE_EINVAL);
  assert_int_equal(f->rec.n, 0);

  /* The limits themselves are fine, and so is non-ASCII UTF-8. */
  assert_int_equal(presence_session_connect(f->p, max_id, "\xc3\xa9lodie", NULL, NULL, NULL), 0);
  assert_int_equal(status_of(f, "\xc3\xa9lodie"), PRESENCE_ONLINE);
  assert_int_equal(presence_session_connect(f->p, "s-euro", "price-\xe2\x82\xac-zone-~", NULL, NULL, NULL), 0);

  char *big_meta = malloc(PRESENCE_META_MAX + 2);
  memset(big_meta, 'x', PRESENCE_META_MAX + 1);
  big_meta[PRESENCE_META_MAX + 1] = '\0';
  assert_int_equal(presence_session_connect(f->p, "m", "u", big_meta, NULL, NULL), PRESENCE_EMETA);
  free(big_meta);
  assert_string_equal(presence_strerror(PRESENCE_ENOSESSION), "no such session");
  assert_string_equal(presence_err_name(PRESENCE_EEXIST), "EEXIST");
  assert_string_equal(presence_strerror(12345), "unknown error");
  destroy(f);
}

static void sessions_per_user_limit(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 2);
  assert_int_equal(presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL), 0);
  assert_int_equal(presence_session_connect(f->p, "s2", "alice", NULL, NULL, NULL), 0);
  size_t before = f->rec.n;
  assert_int_equal(presence_session_connect(f->p, "s3", "alice", NULL, NULL, NULL), PRESENCE_ELIMIT);
  assert_int_equal(f->rec.n, before);
  assert_int_equal(presence_session_connect(f->p, "s3", "bob", NULL, NULL, NULL), 0);
  destroy(f);
}

static void handles_reach_sessions_and_go_stale(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  presence_handle_t h1, h2;
  assert_int_equal(presence_session_open(f->p, "s1", "alice", NULL, &h1, NULL, NULL), 0);
  assert_int_equal(presence_session_open(f->p, "s2", "alice", NULL, &h2, NULL, NULL), 0);
  assert_int_not_equal(h1, PRESENCE_HANDLE_NONE);
  assert_int_not_equal(h1, h2);
  assert_int_equal(presence_handle_set_status(f->p, h1, PRESENCE_IDLE, NULL, NULL), 0);
  assert_int_equal(presence_handle_set_status(f->p, h2, PRESENCE_IDLE, NULL, NULL), 0);
  assert_int_equal(status_of(f, "alice"), PRESENCE_IDLE);
  assert_int_equal(presence_handle_set_status(f->p, h1, PRESENCE_OFFLINE, NULL, NULL), PRESENCE_ESTATUS);
  /* Ended by id: the handle is stale, and refused. */
  assert_int_equal(presence_session_kick(f->p, "s1", NULL, NULL), 0);
  size_t n = f->rec.n;
  assert_int_equal(presence_handle_set_status(f->p, h1, PRESENCE_ONLINE, NULL, NULL), PRESENCE_ENOSESSION);
  assert_int_equal(presence_handle_end(f->p, h1, PRESENCE_REASON_DISCONNECT, NULL, NULL), PRESENCE_ENOSESSION);
  assert_int_equal(presence_handle_touch(f->p, h1), PRESENCE_ENOSESSION);
  /* Its slot is reused by the next session, which the old handle must not
   * reach. */
  presence_handle_t h3;
  assert_int_equal(presence_session_open(f->p, "s3", "bob", NULL, &h3, NULL, NULL), 0);
  assert_int_not_equal(h3, h1);
  assert_int_equal(presence_handle_end(f->p, h1, PRESENCE_REASON_DISCONNECT, NULL, NULL), PRESENCE_ENOSESSION);
  assert_int_equal(status_of(f, "bob"), PRESENCE_ONLINE);
  assert_int_equal(presence_handle_end(f->p, PRESENCE_HANDLE_NONE, PRESENCE_REASON_DISCONNECT, NULL, NULL), PRESENCE_ENOSESSION);
  assert_int_equal(presence_handle_end(f->p, 0xffffffffffffull, PRESENCE_REASON_DISCONNECT, NULL, NULL), PRESENCE_ENOSESSION);
  /* Handles name blocks of the session pool: one naming a block not yet
   * handed out, or generation 0, reaches nothing. */
  presence_handle_t gen2 = h2 & 0xffffffff00000000ull;
  assert_int_equal(presence_handle_end(f->p, gen2 | ((h2 & 0xffffffffu) + 1), PRESENCE_REASON_DISCONNECT, NULL, NULL), PRESENCE_ENOSESSION);
  assert_int_equal(presence_handle_end(f->p, h2 & 0xffffffffu, PRESENCE_REASON_DISCONNECT, NULL, NULL), PRESENCE_ENOSESSION);
  assert_int_equal(f->rec.n, n + 2); /* only bob's connect */
  assert_int_equal(presence_handle_end(f->p, h2, PRESENCE_REASON_TIMEOUT, NULL, NULL), 0);
  expect_event(f, f->rec.n - 1, PRESENCE_EV_USER_OFFLINE, PRESENCE_REASON_TIMEOUT, "alice");
  assert_int_equal(presence_handle_end(f->p, h3, PRESENCE_REASON_RESYNC, NULL, NULL), PRESENCE_EINVAL);
  destroy(f);
}

/* Sessions of many sizes (their metadata shares the block) land in several
 * size classes of the session pool, each class in chunks of its own, all in
 * one directory: a handle must reach its own session whatever chunk and
 * class it names, in any order of use, and stale ones none. */
static void handles_reach_sessions_in_every_chunk_and_class(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  enum { N = 3000 };
  presence_handle_t *h = calloc(N, sizeof(*h));
  char sid[32], uid[32], meta[160];
  for (int i = 0; i < N; i++) {
    snprintf(sid, sizeof sid, "s-%d", i);
    snprintf(uid, sizeof uid, "u-%d", i % 700);
    int pad = (i * 37) % 120; /* 0..119 bytes: many classes */
    snprintf(meta, sizeof meta, "{\"p\":\"%.*s\"}", pad,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    assert_int_equal(presence_session_open(f->p, sid, uid, i % 3 ? meta : NULL,
                                           &h[i], NULL, NULL),
                     0);
  }
  /* In a scattered order: each handle idles its own session only. */
  for (int k = 0; k < N; k++) {
    int i = (k * 1237) % N;
    assert_int_equal(presence_handle_set_status(f->p, h[i], PRESENCE_IDLE, NULL, NULL), 0);
    snprintf(sid, sizeof sid, "s-%d", i);
    presence_session_info_t info;
    assert_int_equal(presence_session_get(f->p, sid, &info), 0);
    assert_int_equal(info.status, PRESENCE_IDLE);
    if (k + 1 < N) {
      snprintf(sid, sizeof sid, "s-%d", ((k + 1) * 1237) % N);
      assert_int_equal(presence_session_get(f->p, sid, &info), 0);
      assert_int_equal(info.status, PRESENCE_ONLINE);
    }
  }
  /* End every other one by handle: those and only those are gone. */
  for (int i = 0; i < N; i += 2)
    assert_int_equal(presence_handle_end(f->p, h[i], PRESENCE_REASON_DISCONNECT, NULL, NULL), 0);
  for (int i = 0; i < N; i++) {
    snprintf(sid, sizeof sid, "s-%d", i);
    presence_session_info_t info;
    assert_int_equal(presence_session_get(f->p, sid, &info),
                     i % 2 ? 0 : PRESENCE_ENOSESSION);
    if (i % 2 == 0)
      assert_int_equal(presence_handle_touch(f->p, h[i]), PRESENCE_ENOSESSION);
  }
  /* An index past every chunk of the directory names no block. */
  assert_int_equal(presence_handle_end(f->p, (h[1] & 0xffffffff00000000ull) | 0x7fffffffu,
                                       PRESENCE_REASON_DISCONNECT, NULL, NULL),
                   PRESENCE_ENOSESSION);
  for (int i = 1; i < N; i += 2)
    assert_int_equal(presence_handle_end(f->p, h[i], PRESENCE_REASON_DISCONNECT, NULL, NULL), 0);
  free(h);
  destroy(f);
}

/* With inactivity on, a session's block starts with its activity links: the
 * handle still reaches the session, and goes stale when it ends. */
static void handles_with_inactivity_on(void **state) {
  (void)state;
  fixture_t *f = make(0, 60000, 0, 0);
  presence_handle_t h1, h2;
  assert_int_equal(presence_session_open(f->p, "s1", "alice", "{}", &h1, NULL, NULL), 0);
  assert_int_equal(presence_handle_set_status(f->p, h1, PRESENCE_IDLE, NULL, NULL), 0);
  assert_int_equal(status_of(f, "alice"), PRESENCE_IDLE);
  assert_int_equal(presence_handle_end(f->p, h1, PRESENCE_REASON_DISCONNECT, NULL, NULL), 0);
  assert_int_equal(presence_session_open(f->p, "s2", "bob", "{}", &h2, NULL, NULL), 0);
  assert_int_equal(presence_handle_touch(f->p, h1), PRESENCE_ENOSESSION);
  assert_int_equal(presence_handle_set_status(f->p, h2, PRESENCE_IDLE, NULL, NULL), 0);
  assert_int_equal(status_of(f, "bob"), PRESENCE_IDLE);
  destroy(f);
}

/* ---- offline grace ----------------------------------------------------- */

static void grace_hides_a_reload(void **state) {
  (void)state;
  fixture_t *f = make(5000, 0, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  f->rec.n = 0;
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  /* The session event is never delayed; the user event waits. */
  assert_int_equal(f->rec.n, 1);
  expect_event(f, 0, PRESENCE_EV_SESSION_DISCONNECTED, PRESENCE_REASON_DISCONNECT, "alice");
  assert_int_equal(status_of(f, "alice"), PRESENCE_ONLINE);
  assert_int_equal(presence_tick(f->p), 5000);
  clock_advance(&f->clock, 4000);
  assert_int_equal(presence_tick(f->p), 1000);
  presence_session_connect(f->p, "s2", "alice", NULL, NULL, NULL);
  assert_int_equal(f->rec.n, 2); /* session.connected only */
  expect_event(f, 1, PRESENCE_EV_SESSION_CONNECTED, PRESENCE_REASON_CONNECT, "alice");
  clock_advance(&f->clock, 10000);
  assert_int_equal(presence_tick(f->p), -1);
  assert_int_equal(f->rec.n, 2);
  assert_int_equal(status_of(f, "alice"), PRESENCE_ONLINE);
  destroy(f);
}

static void grace_expires_into_offline(void **state) {
  (void)state;
  fixture_t *f = make(5000, 0, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  clock_advance(&f->clock, 1000);
  int64_t ended = f->clock.wall;
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  f->rec.n = 0;
  clock_advance(&f->clock, 4999);
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 0);
  clock_advance(&f->clock, 1);
  assert_int_equal(presence_tick(f->p), -1);
  assert_int_equal(f->rec.n, 1);
  expect_event(f, 0, PRESENCE_EV_USER_OFFLINE, PRESENCE_REASON_DISCONNECT, "alice");
  assert_int_equal(f->rec.ev[0].has_session, 0);
  /* The event itself says when the user was last seen (watchers' frames
   * are written from it), not when the grace ran out. */
  assert_int_equal(f->rec.ev[0].last_seen, ended);
  assert_true(f->rec.ev[0].ts > ended);
  presence_user_info_t info;
  presence_user_get(f->p, "alice", &info);
  assert_int_equal(info.status, PRESENCE_OFFLINE);
  assert_int_equal(info.last_seen_ms, ended); /* when really last seen */
  destroy(f);
}

/* ---- the host's timer (options.timer) ---------------------------------- */

typedef struct timer_log {
  int calls;
  int64_t last;
} timer_log_t;

static void log_timer(void *ud, int64_t timeout_ms) {
  timer_log_t *t = ud;
  t->calls++;
  t->last = timeout_ms;
}

/* A fixture whose host timer logs into *t. */
static fixture_t *make_timed(uint32_t grace, uint32_t inactivity,
                             timer_log_t *t) {
  fixture_t *f = calloc(1, sizeof(*f));
  presence_options_t o;
  test_options(&o, &f->clock, 1000, &f->alloc);
  o.offline_grace_ms = grace;
  o.inactivity_ms = inactivity;
  o.timer = log_timer;
  o.timer_ud = t;
  assert_int_equal(presence_new(&o, &f->p), 0);
  assert_true(presence_on_event(f->p, record_cb, &f->rec) > 0);
  return f;
}

/* The library tells the host each change of its next deadline, and only
 * changes: a host arms one timer and never re-arms it after its own calls. */
static void timer_reports_each_change_of_the_deadline(void **state) {
  (void)state;
  timer_log_t t = {0, -2};
  fixture_t *f = make_timed(5000, 60000, &t);
  assert_int_equal(t.calls, 0); /* nothing pending yet */

  /* A session: its inactivity deadline. */
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  assert_int_equal(t.calls, 1);
  assert_int_equal(t.last, 60000);
  /* A second session at the same time: the same deadline, no call. */
  presence_session_connect(f->p, "s2", "alice", NULL, NULL, NULL);
  assert_int_equal(t.calls, 1);

  /* Both end 1 s later: the offline grace is now the next deadline. */
  clock_advance(&f->clock, 1000);
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  presence_session_disconnect(f->p, "s2", NULL, NULL);
  assert_int_equal(t.last, 5000);
  int calls = t.calls;

  /* The timer fires: the host ticks; user.offline, then no deadline. */
  clock_advance(&f->clock, 5000);
  f->rec.n = 0;
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 1);
  expect_event(f, 0, PRESENCE_EV_USER_OFFLINE, PRESENCE_REASON_DISCONNECT,
               "alice");
  assert_int_equal(t.calls, calls + 1);
  assert_int_equal(t.last, -1);

  /* A timer that fired early (a host's coarse clock): the same deadline is
   * reported again, so the one-shot timer is armed again. */
  presence_session_connect(f->p, "s3", "bob", NULL, NULL, NULL);
  assert_int_equal(t.last, 60000);
  calls = t.calls;
  clock_advance(&f->clock, 59999);
  presence_tick(f->p);
  assert_int_equal(t.calls, calls + 1);
  assert_int_equal(t.last, 1);
  destroy(f);
}

/* A write that adds no deadline (a status change) neither ticks the store
 * nor calls the timer; the first write that adds one after many of them is
 * still reported. A deadline that goes away leaves the timer armed: its
 * tick finds nothing due and stops it. */
static void timer_follows_added_deadlines_only(void **state) {
  (void)state;
  timer_log_t t = {0, -2};
  fixture_t *f = make_timed(5000, 0, &t);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  presence_session_connect(f->p, "s2", "bob", NULL, NULL, NULL);
  assert_int_equal(t.calls, 0); /* no inactivity: no deadline */
  for (int i = 0; i < 100; i++) {
    clock_advance(&f->clock, 10);
    presence_session_set_status(f->p, "s1", i % 2 ? PRESENCE_ONLINE
                                                  : PRESENCE_IDLE,
                                NULL, NULL);
  }
  assert_int_equal(t.calls, 0);
  /* The offline grace after those writes: armed. */
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  assert_int_equal(t.calls, 1);
  assert_int_equal(t.last, 5000);
  /* A second grace behind it: not nearer, no call. */
  clock_advance(&f->clock, 1000);
  presence_session_disconnect(f->p, "s2", NULL, NULL);
  assert_int_equal(t.calls, 1);
  /* alice back inside her grace: her deadline goes away, bob's stays and
   * the timer with it; it fires at alice's old deadline, nothing is due,
   * and bob's (1 s on) is reported. */
  presence_session_connect(f->p, "s3", "alice", NULL, NULL, NULL);
  assert_int_equal(t.calls, 1);
  clock_advance(&f->clock, 4000);
  f->rec.n = 0;
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 0);
  assert_int_equal(t.calls, 2);
  assert_int_equal(t.last, 1000);
  clock_advance(&f->clock, 1000);
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 1);
  expect_event(f, 0, PRESENCE_EV_USER_OFFLINE, PRESENCE_REASON_DISCONNECT,
               "bob");
  assert_int_equal(t.last, -1);
  destroy(f);
}

/* ---- listener filters (presence_listener_filter) ----------------------- */

static void count_cb(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  (void)ev;
  (*(int *)ud)++;
}

/* A listener filtered to skip the session event that comes with a user
 * transition gets the user event alone; a type it does not want, never;
 * everything again once the filter is lifted. While another listener
 * takes an event, the filtered one still does not see it. The events are
 * in the log all along. */
static void listener_filter_narrows_what_is_dispatched(void **state) {
  (void)state;
  fixture_t *f = calloc(1, sizeof(*f));
  presence_options_t o;
  test_options(&o, &f->clock, 1000, &f->alloc);
  assert_int_equal(presence_new(&o, &f->p), 0);
  int h = presence_on_cluster_event(f->p, record_cb, &f->rec);
  assert_true(h > 0);
  assert_int_equal(presence_listener_filter(f->p, h,
                                            PRESENCE_EV_SESSION_STATUS, 1,
                                            PRESENCE_EVENT_USER_FOLLOWS),
                   0);
  assert_int_equal(presence_listener_filter(f->p, h,
                                            PRESENCE_EV_SESSION_CONNECTED, 0,
                                            0),
                   0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  assert_int_equal(f->rec.n, 1); /* user.online; session.connected unwanted */
  expect_event(f, 0, PRESENCE_EV_USER_ONLINE, PRESENCE_REASON_CONNECT,
               "alice");
  f->rec.n = 0;
  presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL);
  assert_int_equal(f->rec.n, 1); /* user.idle; its session.status skipped */
  expect_event(f, 0, PRESENCE_EV_USER_IDLE, PRESENCE_REASON_EXPLICIT,
               "alice");
  /* A second session (online: alice with it). Now a status change that
   * moves no user: its session.status does not carry USER_FOLLOWS and is
   * dispatched. */
  presence_session_connect(f->p, "s2", "alice", NULL, NULL, NULL);
  f->rec.n = 0;
  presence_session_set_status(f->p, "s1", PRESENCE_ONLINE, NULL, NULL);
  presence_session_set_status(f->p, "s2", PRESENCE_IDLE, NULL, NULL);
  assert_int_equal(f->rec.n, 2);
  expect_event(f, 0, PRESENCE_EV_SESSION_STATUS, PRESENCE_REASON_EXPLICIT,
               "alice");
  expect_event(f, 1, PRESENCE_EV_SESSION_STATUS, PRESENCE_REASON_EXPLICIT,
               "alice");
  /* Another listener that takes everything: the event is dispatched, the
   * filtered listener still left out of what it skips. */
  int all = 0;
  int h2 = presence_on_cluster_event(f->p, count_cb, &all);
  assert_true(h2 > 0);
  f->rec.n = 0;
  presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL);
  assert_int_equal(all, 2); /* user.idle and session.status */
  assert_int_equal(f->rec.n, 1);
  expect_event(f, 0, PRESENCE_EV_USER_IDLE, PRESENCE_REASON_EXPLICIT,
               "alice");
  assert_int_equal(presence_off(f->p, h2), 0);
  /* Lifted: both again. */
  assert_int_equal(presence_listener_filter(f->p, h,
                                            PRESENCE_EV_SESSION_STATUS, 1, 0),
                   0);
  f->rec.n = 0;
  presence_session_set_status(f->p, "s1", PRESENCE_ONLINE, NULL, NULL);
  assert_int_equal(f->rec.n, 2);
  /* Every event is in the store's counts, dispatched or not. */
  presence_stats_t st;
  assert_int_equal(presence_stats(f->p, &st), 0);
  assert_int_equal(st.events[PRESENCE_EV_SESSION_STATUS], 5);
  assert_int_equal(st.events[PRESENCE_EV_SESSION_CONNECTED], 2);
  /* Bad arguments. */
  assert_int_equal(presence_listener_filter(f->p, 9999,
                                            PRESENCE_EV_USER_ONLINE, 1, 0),
                   PRESENCE_EINVAL);
  assert_int_equal(presence_listener_filter(f->p, h, PRESENCE_EV_ANY, 1, 0),
                   PRESENCE_EINVAL);
  assert_int_equal(presence_listener_filter(f->p, h2,
                                            PRESENCE_EV_USER_ONLINE, 1, 0),
                   PRESENCE_EINVAL); /* removed */
  destroy(f);
}

/* ---- retention of offline users ---------------------------------------- */

static fixture_t *make_retention(uint32_t grace, uint32_t retention_s) {
  return make_with(grace, 0, 0, 0, retention_s);
}

static uint64_t users_known(fixture_t *f) {
  presence_stats_t st;
  assert_int_equal(presence_stats(f->p, &st), 0);
  return st.users_known;
}

/* Users known once ms have passed and the timers have run. */
static uint64_t known_after(fixture_t *f, int64_t ms) {
  clock_advance(&f->clock, ms);
  presence_tick(f->p);
  return users_known(f);
}

static void offline_users_are_forgotten_after_retention(void **state) {
  (void)state;
  fixture_t *f = make_retention(0, 60);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  presence_session_connect(f->p, "s2", "bob", NULL, NULL, NULL);
  int64_t ended = f->clock.wall;
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  assert_int_equal(users_known(f), 2);
  /* Kept (with last_seen) until the retention is over, and the tick says
   * when that is. */
  clock_advance(&f->clock, 59000);
  int64_t next = presence_tick(f->p);
  assert_true(next > 0 && next <= 1000);
  presence_user_info_t info;
  assert_int_equal(presence_user_get(f->p, "alice", &info), 0);
  assert_int_equal(info.last_seen_ms, ended);
  assert_int_equal(known_after(f, next), 1);
  /* Read as never seen; bob, online all along, is untouched. */
  assert_int_equal(presence_user_get(f->p, "alice", &info), 0);
  assert_int_equal(info.status, PRESENCE_OFFLINE);
  assert_int_equal(info.last_seen_ms, 0);
  assert_int_equal(info.version, 0);
  assert_int_equal(status_of(f, "bob"), PRESENCE_ONLINE);
  /* Back again: a new record, version from 1. */
  f->rec.n = 0;
  presence_session_connect(f->p, "s3", "alice", NULL, NULL, NULL);
  expect_event(f, 1, PRESENCE_EV_USER_ONLINE, PRESENCE_REASON_CONNECT, "alice");
  assert_int_equal(f->rec.ev[1].version, 1);
  destroy(f); /* and nothing leaked: the forgotten record was freed */
}

static void a_user_back_in_time_is_not_forgotten(void **state) {
  (void)state;
  fixture_t *f = make_retention(2000, 60);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  clock_advance(&f->clock, 2000); /* grace over: offline */
  presence_tick(f->p);
  assert_int_equal(status_of(f, "alice"), PRESENCE_OFFLINE);
  clock_advance(&f->clock, 30000);
  presence_session_connect(f->p, "s2", "alice", NULL, NULL, NULL);
  /* The first offline's retention is over: alice, back, is kept. */
  assert_int_equal(known_after(f, 40000), 1);
  assert_int_equal(status_of(f, "alice"), PRESENCE_ONLINE);
  /* Offline again: forgotten 60 s after this offline, not before. */
  presence_session_kick(f->p, "s2", NULL, NULL);
  assert_int_equal(known_after(f, 59000), 1);
  assert_int_equal(known_after(f, 1000), 0);
  /* A grace longer than the retention wins: retention outlasts it. */
  destroy(f);
  f = make_retention(5000, 1);
  presence_session_connect(f->p, "s1", "carol", NULL, NULL, NULL);
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  clock_advance(&f->clock, 5000);
  presence_tick(f->p);
  assert_int_equal(status_of(f, "carol"), PRESENCE_OFFLINE);
  assert_int_equal(known_after(f, 5000), 1);
  assert_int_equal(known_after(f, 1000), 0);
  destroy(f);
}

static void grace_does_not_cover_kicks(void **state) {
  (void)state;
  fixture_t *f = make(5000, 0, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  f->rec.n = 0;
  presence_session_kick(f->p, "s1", NULL, NULL);
  assert_int_equal(f->rec.n, 2);
  expect_event(f, 1, PRESENCE_EV_USER_OFFLINE, PRESENCE_REASON_KICKED, "alice");
  destroy(f);
}

static void grace_does_not_cover_shutdown(void **state) {
  (void)state;
  fixture_t *f = make(5000, 0, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  f->rec.n = 0;
  presence_session_end(f->p, "s1", PRESENCE_REASON_SHUTDOWN, NULL, NULL);
  assert_int_equal(f->rec.n, 2);
  expect_event(f, 1, PRESENCE_EV_USER_OFFLINE, PRESENCE_REASON_SHUTDOWN, "alice");
  destroy(f);
}

static void grace_cancelled_then_restarted(void **state) {
  (void)state;
  fixture_t *f = make(1000, 0, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  clock_advance(&f->clock, 500);
  presence_session_connect(f->p, "s2", "alice", NULL, NULL, NULL);
  presence_session_disconnect(f->p, "s2", NULL, NULL);
  f->rec.n = 0;
  /* The first (cancelled) deadline passes: nothing. */
  clock_advance(&f->clock, 600);
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 0);
  clock_advance(&f->clock, 400);
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 1);
  expect_event(f, 0, PRESENCE_EV_USER_OFFLINE, PRESENCE_REASON_DISCONNECT, "alice");
  destroy(f);
}

/* ---- inactivity -------------------------------------------------------- */

static void inactivity_idles_and_activity_restores(void **state) {
  (void)state;
  fixture_t *f = make(0, 1000, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  f->rec.n = 0;
  assert_int_equal(presence_tick(f->p), 1000);
  clock_advance(&f->clock, 600);
  assert_int_equal(presence_session_touch(f->p, "s1"), 0);
  clock_advance(&f->clock, 600);
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 0); /* the touch moved the deadline */
  clock_advance(&f->clock, 400);
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 2);
  expect_event(f, 0, PRESENCE_EV_SESSION_STATUS, PRESENCE_REASON_INACTIVITY, "alice");
  expect_event(f, 1, PRESENCE_EV_USER_IDLE, PRESENCE_REASON_INACTIVITY, "alice");
  presence_session_touch(f->p, "s1");
  assert_int_equal(f->rec.n, 4);
  expect_event(f, 2, PRESENCE_EV_SESSION_STATUS, PRESENCE_REASON_INACTIVITY, "alice");
  expect_event(f, 3, PRESENCE_EV_USER_ONLINE, PRESENCE_REASON_INACTIVITY, "alice");
  /* A client's own idle is not undone by activity. */
  presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL);
  f->rec.n = 0;
  presence_session_touch(f->p, "s1");
  clock_advance(&f->clock, 5000);
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 0);
  assert_int_equal(status_of(f, "alice"), PRESENCE_IDLE);
  presence_session_set_status(f->p, "s1", PRESENCE_ONLINE, NULL, NULL);
  expect_event(f, 1, PRESENCE_EV_USER_ONLINE, PRESENCE_REASON_EXPLICIT, "alice");
  presence_session_disconnect(f->p, "s1", NULL, NULL);
  assert_int_equal(presence_tick(f->p), -1);
  destroy(f);
}

/* ---- callbacks ----------------------------------------------------------*/

typedef struct order_log {
  char seen[16][32];
  int n;
} order_log_t;

static void tag_a(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  (void)ev;
  order_log_t *o = ud;
  snprintf(o->seen[o->n++], 32, "a");
}
static void tag_b(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  (void)ev;
  order_log_t *o = ud;
  snprintf(o->seen[o->n++], 32, "b");
}
static void tag_any(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  order_log_t *o = ud;
  snprintf(o->seen[o->n++], 32, "any:%s", presence_event_type_name(ev->type));
}

static void callbacks_run_in_registration_order(void **state) {
  (void)state;
  presence_t *p;
  assert_int_equal(presence_new(NULL, &p), 0);
  order_log_t o = {0};
  assert_true(presence_on_event(p, tag_any, &o) > 0);
  assert_true(presence_on_user_online(p, tag_a, &o) > 0);
  int hb = presence_on_user_online(p, tag_b, &o);
  assert_true(hb > 0);
  assert_int_equal(presence_on(p, (presence_event_type_t)55, tag_a, &o), PRESENCE_EINVAL);
  presence_session_connect(p, "s1", "alice", NULL, NULL, NULL);
  assert_int_equal(o.n, 4);
  assert_string_equal(o.seen[0], "any:session.connected");
  assert_string_equal(o.seen[1], "a");
  assert_string_equal(o.seen[2], "b");
  assert_string_equal(o.seen[3], "any:user.online");
  assert_int_equal(presence_off(p, hb), 0);
  assert_int_equal(presence_off(p, hb), PRESENCE_EINVAL);
  o.n = 0;
  presence_session_disconnect(p, "s1", NULL, NULL);
  presence_session_connect(p, "s2", "alice", NULL, NULL, NULL);
  assert_int_equal(o.n, 5);
  assert_string_equal(o.seen[3], "a");
  assert_string_equal(o.seen[4], "any:user.online");
  presence_free(p);
}

/* A callback that kicks every session it sees connect: the kick's events
 * must come after the connect's own user event. */
static void kick_on_connect(presence_t *p, const presence_event_t *ev,
                            void *ud) {
  (void)ud;
  if (strcmp(ev->user_id, "banned") == 0)
    assert_int_equal(presence_session_kick(p, ev->session_id, NULL, NULL), 0);
}

static void reentrant_mutation_keeps_order(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  presence_on_session_connected(f->p, kick_on_connect, NULL);
  presence_session_connect(f->p, "s1", "banned", NULL, NULL, NULL);
  assert_int_equal(f->rec.n, 4);
  expect_event(f, 0, PRESENCE_EV_SESSION_CONNECTED, PRESENCE_REASON_CONNECT, "banned");
  expect_event(f, 1, PRESENCE_EV_USER_ONLINE, PRESENCE_REASON_CONNECT, "banned");
  expect_event(f, 2, PRESENCE_EV_SESSION_DISCONNECTED, PRESENCE_REASON_KICKED, "banned");
  expect_event(f, 3, PRESENCE_EV_USER_OFFLINE, PRESENCE_REASON_KICKED, "banned");
  for (size_t i = 1; i < f->rec.n; i++)
    assert_true(f->rec.ev[i].seq == f->rec.ev[i - 1].seq + 1);
  assert_int_equal(status_of(f, "banned"), PRESENCE_OFFLINE);
  destroy(f);
}

/* A callback whose writes queue more events than the pending buffer holds
 * (the engine dispatches from that buffer without copying each event): the
 * event being handled stays intact for this callback and the ones after it,
 * and the queued events follow in order. */
static void crowd_on_connect(presence_t *p, const presence_event_t *ev,
                             void *ud) {
  (void)ud;
  if (strcmp(ev->user_id, "host") != 0) return;
  for (int i = 0; i < 60; i++) {
    char sid[32];
    snprintf(sid, sizeof sid, "guest-session-%02d", i);
    assert_int_equal(
        presence_session_connect(p, sid, "guest", "{\"k\":1}", NULL, NULL), 0);
  }
  assert_string_equal(ev->session_id, "s-host");
  assert_string_equal(ev->meta, "{\"role\":\"host\"}");
}

static void callbacks_may_outgrow_the_queue(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  presence_on_session_connected(f->p, crowd_on_connect, NULL);
  assert_int_equal(presence_session_connect(f->p, "s-host", "host",
                                            "{\"role\":\"host\"}", NULL, NULL),
                   0);
  /* The host's two events, then 60 guest sessions (the first also brings
   * the guest online). */
  assert_int_equal(f->rec.n, 2 + 61);
  expect_event(f, 0, PRESENCE_EV_SESSION_CONNECTED, PRESENCE_REASON_CONNECT, "host");
  assert_string_equal(f->rec.ev[0].session_id, "s-host");
  assert_string_equal(f->rec.ev[0].meta, "{\"role\":\"host\"}");
  expect_event(f, 1, PRESENCE_EV_USER_ONLINE, PRESENCE_REASON_CONNECT, "host");
  expect_event(f, 2, PRESENCE_EV_SESSION_CONNECTED, PRESENCE_REASON_CONNECT, "guest");
  expect_event(f, 3, PRESENCE_EV_USER_ONLINE, PRESENCE_REASON_CONNECT, "guest");
  assert_string_equal(f->rec.ev[62].session_id, "guest-session-59");
  for (size_t i = 1; i < f->rec.n; i++)
    assert_true(f->rec.ev[i].seq == f->rec.ev[i - 1].seq + 1);
  destroy(f);
}

typedef struct done_log {
  int calls;
  int status;
  size_t events_at_done;
  recorder_t *rec;
} done_log_t;

static void on_done(presence_t *p, int status, void *ud) {
  (void)p;
  done_log_t *d = ud;
  d->calls++;
  d->status = status;
  d->events_at_done = d->rec->n;
}

static void done_runs_after_the_events(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  done_log_t d = {0, 99, 0, &f->rec};
  assert_int_equal(presence_session_connect(f->p, "s1", "alice", NULL, on_done, &d), 0);
  assert_int_equal(d.calls, 1);
  assert_int_equal(d.status, 0);
  assert_int_equal(d.events_at_done, 2);
  /* A refused call returns its error and does not call done. */
  assert_int_equal(presence_session_connect(f->p, "s1", "alice", NULL, on_done, &d), PRESENCE_EEXIST);
  assert_int_equal(d.calls, 1);
  destroy(f);
}

/* ---- queries ----------------------------------------------------------- */

static void sessions_keep_their_metadata(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  presence_session_connect(f->p, "s1", "alice", "{\"device\":\"phone\"}", NULL, NULL);
  clock_advance(&f->clock, 123);
  int64_t connected = f->clock.wall;
  presence_session_connect(f->p, "s2", "alice", NULL, NULL, NULL);
  clock_advance(&f->clock, 4321);
  presence_session_set_status(f->p, "s2", PRESENCE_IDLE, NULL, NULL);
  assert_string_equal(f->rec.ev[0].meta, "{\"device\":\"phone\"}");
  presence_session_info_t s[4];
  assert_int_equal(presence_sessions_get(f->p, "alice", s, 4), 2);
  int seen = 0;
  for (int i = 0; i < 2; i++) {
    assert_string_equal(s[i].user_id, "alice");
    assert_string_equal(s[i].instance_id, "test-1");
    if (strcmp(s[i].session_id, "s1") == 0) {
      assert_string_equal(s[i].meta, "{\"device\":\"phone\"}");
      assert_int_equal(s[i].status, PRESENCE_ONLINE);
      seen |= 1;
    } else {
      assert_null(s[i].meta);
      assert_int_equal(s[i].status, PRESENCE_IDLE);
      /* Milliseconds, not seconds in disguise. */
      assert_int_equal(s[i].connected_ms, connected);
      assert_int_equal(s[i].status_since_ms, f->clock.wall);
      assert_int_equal(s[i].status_reason, PRESENCE_REASON_EXPLICIT);
      seen |= 2;
    }
  }
  assert_int_equal(seen, 3);
  assert_int_equal(presence_sessions_get(f->p, "alice", s, 1), 2); /* count */
  assert_int_equal(presence_sessions_get(f->p, "nobody", s, 4), 0);
  presence_stats_t st;
  presence_stats(f->p, &st);
  assert_int_equal(st.sessions, 2);
  assert_int_equal(st.users_online, 1);
  assert_int_equal(st.events[PRESENCE_EV_SESSION_CONNECTED], 2);
  destroy(f);
}

/* A canonical lowercase UUID session id is held as its 16 bytes (the memory
 * store's compact ids): every place that hands the id out gives its text
 * back byte for byte, a query's strings stay valid while other sessions are
 * asked about, and the compact form is never confused with a text id, even
 * one whose 16 bytes are the UUID's bytes (same hash, same home slot). */
/* The records keep their times in 48 bits (memory.c): a clock before 1970
 * or thousands of years ahead comes back exactly, one beyond +-2^47 ms is
 * held at the limit instead of wrapping into the past. */
static void record_times_round_trip_or_hold_at_the_limit(void **state) {
  (void)state;
  const int64_t limit = ((int64_t)1 << 47) - 1;
  const int64_t walls[] = {-86400000LL * 365 * 30, 0, 1, 253402300799999LL,
                           limit, limit + 1, INT64_MAX / 2, -limit - 5};
  for (size_t i = 0; i < sizeof walls / sizeof walls[0]; i++) {
    fixture_t *f = make(0, 0, 0, 0);
    f->clock.wall = walls[i];
    int64_t want = walls[i] > limit ? limit : walls[i] < -limit ? -limit
                                                                : walls[i];
    assert_int_equal(presence_session_connect(f->p, "s1", "alice", NULL, NULL,
                                              NULL),
                     0);
    assert_int_equal(presence_session_set_status(f->p, "s1", PRESENCE_IDLE,
                                                 NULL, NULL),
                     0);
    presence_session_info_t si;
    assert_int_equal(presence_session_get(f->p, "s1", &si), 0);
    assert_int_equal(si.connected_ms, want);
    assert_int_equal(si.status_since_ms, want);
    presence_user_info_t ui;
    assert_int_equal(presence_user_get(f->p, "alice", &ui), 0);
    assert_int_equal(ui.since_ms, want);
    assert_int_equal(ui.last_active_ms, want);
    assert_int_equal(presence_session_disconnect(f->p, "s1", NULL, NULL), 0);
    assert_int_equal(presence_user_get(f->p, "alice", &ui), 0);
    assert_int_equal(ui.status, PRESENCE_OFFLINE);
    assert_int_equal(ui.last_seen_ms, want);
    assert_int_equal(ui.since_ms, want);
    destroy(f);
  }
}

/* A table's slot keeps 48 bits of a record's address: a record above them
 * is refused (ENOMEM), never stored cut down to another address, and the
 * table is as before. The address is only compared, never followed: an
 * insert with the hash given reads nothing of the record first. */
static void a_table_refuses_a_record_above_48_bits(void **state) {
  (void)state;
  presence__table_t t;
  assert_int_equal(presence__table_init(&t, presence__default_allocator(), 0), 0);
  void *high = (void *)(uintptr_t)(((uint64_t)1 << 48) | 0x1000);
  assert_int_equal(presence__table_insert_h(&t, high, 12345), PRESENCE_ENOMEM);
  assert_int_equal(t.count, 0);
  presence__table_free(&t);
}

static void compact_session_ids_keep_their_text(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  const char *u1 = "61626364-6566-6768-696a-6b6c6d6e6f70"; /* "abc...nop" */
  const char *t1 = "abcdefghijklmnop";
  const char *up = "61626364-6566-6768-696A-6B6C6D6E6F70"; /* not canonical */
  const char *u2 = "00000000-0000-4000-8000-00000000002a";
  presence_handle_t h1, h2;
  assert_int_equal(presence_session_open(f->p, u1, "alice", "{\"m\":1}", &h1,
                                         NULL, NULL),
                   0);
  assert_int_equal(presence_session_connect(f->p, t1, "alice", NULL, NULL, NULL), 0);
  assert_int_equal(presence_session_connect(f->p, up, "bob", NULL, NULL, NULL), 0);
  assert_int_equal(presence_session_open(f->p, u2, "bob", NULL, &h2, NULL, NULL), 0);
  assert_int_equal(presence_session_connect(f->p, u1, "carol", NULL, NULL, NULL),
                   PRESENCE_EEXIST);
  expect_event(f, 0, PRESENCE_EV_SESSION_CONNECTED, PRESENCE_REASON_CONNECT, "alice");
  assert_string_equal(f->rec.ev[0].session_id, u1);
  assert_string_equal(f->rec.ev[0].meta, "{\"m\":1}");
  expect_event(f, 1, PRESENCE_EV_USER_ONLINE, PRESENCE_REASON_CONNECT, "alice");
  assert_string_equal(f->rec.ev[1].session_id, u1);
  assert_string_equal(f->rec.ev[2].session_id, t1);
  assert_string_equal(f->rec.ev[3].session_id, up);
  assert_string_equal(f->rec.ev[5].session_id, u2);

  presence_session_info_t a, b, c;
  assert_int_equal(presence_session_get(f->p, u1, &a), 0);
  assert_int_equal(presence_session_get(f->p, t1, &b), 0);
  assert_int_equal(presence_session_get(f->p, u2, &c), 0);
  assert_string_equal(a.session_id, u1); /* still, after two more queries */
  assert_string_equal(a.meta, "{\"m\":1}");
  assert_null(b.meta);
  assert_string_equal(b.session_id, t1);
  assert_string_equal(c.session_id, u2);
  assert_string_equal(c.user_id, "bob");
  assert_int_equal(presence_session_get(f->p, "61626364-6566-6768-696a-6b6c6d6e6f71",
                                        &c),
                   PRESENCE_ENOSESSION);
  presence_session_info_t s[4];
  assert_int_equal(presence_sessions_get(f->p, "bob", s, 4), 2);
  int seen = 0;
  for (int i = 0; i < 2; i++)
    seen |= strcmp(s[i].session_id, up) == 0 ? 1 : strcmp(s[i].session_id, u2) == 0 ? 2 : 4;
  assert_int_equal(seen, 3);

  /* By id and by handle, the compact session is the one changed. */
  size_t n0 = f->rec.n;
  assert_int_equal(presence_session_set_status(f->p, u1, PRESENCE_IDLE, NULL, NULL), 0);
  expect_event(f, n0, PRESENCE_EV_SESSION_STATUS, PRESENCE_REASON_EXPLICIT, "alice");
  assert_string_equal(f->rec.ev[n0].session_id, u1);
  assert_int_equal(presence_session_get(f->p, t1, &b), 0);
  assert_int_equal(b.status, PRESENCE_ONLINE);
  assert_int_equal(presence_handle_set_status(f->p, h2, PRESENCE_IDLE, NULL, NULL), 0);
  assert_string_equal(f->rec.ev[n0 + 1].session_id, u2);

  /* A channel's member lists each session's id. */
  assert_int_equal(presence_channel_join(f->p, u2, "room", "{}", NULL, NULL), 0);
  assert_int_equal(presence_channel_join(f->p, up, "room", NULL, NULL, NULL), 0);
  presence_member_info_t mi;
  assert_int_equal(presence_member_get(f->p, "room", "bob", &mi), 0);
  assert_int_equal(mi.n_metas, 2);
  assert_string_equal(mi.metas[0].session_id, up);
  assert_string_equal(mi.metas[1].session_id, u2);

  /* Ending it (its kept text with it), the other forms stay. */
  n0 = f->rec.n;
  assert_int_equal(presence_handle_end(f->p, h1, PRESENCE_REASON_DISCONNECT, NULL, NULL), 0);
  assert_string_equal(f->rec.ev[n0].session_id, u1);
  assert_int_equal(presence_session_get(f->p, u1, &a), PRESENCE_ENOSESSION);
  assert_int_equal(presence_session_get(f->p, t1, &b), 0);
  assert_int_equal(presence_session_disconnect(f->p, u2, NULL, NULL), 0);
  assert_int_equal(presence_session_disconnect(f->p, u2, NULL, NULL), PRESENCE_ENOSESSION);
  assert_int_equal(presence_session_get(f->p, up, &c), 0);
  assert_string_equal(c.session_id, up);
  destroy(f);
}

static int count_users(const presence_user_info_t *info, void *ud) {
  (void)info;
  (*(int *)ud)++;
  return 0;
}

static void foreach_visits_every_user(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  char sid[16], uid[16];
  for (int i = 0; i < 100; i++) {
    snprintf(sid, sizeof sid, "s%d", i);
    snprintf(uid, sizeof uid, "u%d", i % 40);
    presence_session_connect(f->p, sid, uid, NULL, NULL, NULL);
  }
  int n = 0;
  assert_int_equal(presence_users_foreach(f->p, count_users, &n), 40);
  assert_int_equal(n, 40);
  destroy(f);
}

/* ---- the log ----------------------------------------------------------- */

typedef struct log_read {
  int status;
  size_t n;
  uint64_t first, last;
  presence_event_type_t first_type;
} log_read_t;

static void on_log(presence_t *p, int status, const presence_event_t *evs,
                   size_t n, void *ud) {
  (void)p;
  log_read_t *r = ud;
  r->status = status;
  r->n = n;
  if (n) {
    r->first = evs[0].seq;
    r->last = evs[n - 1].seq;
    r->first_type = evs[0].type;
    for (size_t i = 1; i < n; i++) assert_int_equal(evs[i].seq, evs[i - 1].seq + 1);
  }
}

/* An engine with no callback (or none for a type) does not queue the events
 * nobody hears: they are still in the log, in order, and a callback
 * registered later hears the events after it, numbered on. */
static void unheard_events_still_reach_the_log(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  presence_t *p = f->p;
  /* The fixture's recorder is the only callback: off with it. */
  assert_int_equal(presence_off(p, 1), 0);
  assert_int_equal(presence_session_connect(p, "s1", "alice", NULL, NULL, NULL), 0);
  assert_int_equal(presence_session_connect(p, "s2", "bob", NULL, NULL, NULL), 0);
  assert_int_equal(f->rec.n, 0);
  log_read_t r = {0};
  assert_int_equal(presence_log_read(p, 0, 100, on_log, &r), 0);
  assert_int_equal(r.n, 4);
  assert_int_equal(r.first, 1);
  assert_int_equal(r.last, 4);
  assert_int_equal(r.first_type, PRESENCE_EV_SESSION_CONNECTED);
  /* Only user events heard: the session events are not queued, the user
   * event is, and dispatched. */
  assert_true(presence_on_user_offline(p, record_cb, &f->rec) > 0);
  assert_int_equal(presence_session_disconnect(p, "s1", NULL, NULL), 0);
  assert_int_equal(f->rec.n, 1);
  expect_event(f, 0, PRESENCE_EV_USER_OFFLINE, PRESENCE_REASON_DISCONNECT, "alice");
  assert_int_equal(f->rec.ev[0].seq, 6);
  assert_int_equal(presence_log_last_seq(p), 6);
  destroy(f);
}

static void log_reads_from_a_cursor_and_reports_gaps(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 8, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL); /* 1, 2 */
  log_read_t r = {0};
  assert_int_equal(presence_log_read(f->p, 0, 100, on_log, &r), 0);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.first, 1);
  assert_int_equal(r.first_type, PRESENCE_EV_SESSION_CONNECTED);
  assert_int_equal(presence_log_read(f->p, 2, 100, on_log, &r), 0);
  assert_int_equal(r.n, 0); /* up to date */
  for (int i = 0; i < 10; i++) {
    presence_session_set_status(f->p, "s1", PRESENCE_IDLE, NULL, NULL);
    presence_session_set_status(f->p, "s1", PRESENCE_ONLINE, NULL, NULL);
  }
  uint64_t last = presence_log_last_seq(f->p);
  assert_int_equal(last, 42);
  assert_int_equal(presence_log_read(f->p, 1, 100, on_log, &r), 0);
  assert_int_equal(r.status, PRESENCE_ECURSOR);
  assert_int_equal(r.n, 8);
  assert_int_equal(r.first, last - 7);
  assert_int_equal(r.last, last);
  /* A cursor from a previous incarnation (past the newest event). */
  assert_int_equal(presence_log_read(f->p, last + 100, 100, on_log, &r), 0);
  assert_int_equal(r.status, PRESENCE_ECURSOR);
  assert_int_equal(r.n, 8);
  assert_int_equal(r.first, last - 7);
  assert_int_equal(presence_log_read(f->p, last - 3, 2, on_log, &r), 0);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.first, last - 2);
  destroy(f);
}

/* seq_base: a run's numbers start above it, a cursor of 0 still reads from
 * the oldest event without a gap, and a cursor below the base (an earlier
 * run's, which numbered from a lower base) reads as a gap from the oldest,
 * however many events this run has logged; numbered from 1 in each run,
 * such a cursor fell inside this run's log and resumed there silently. */
static void a_run_numbers_above_its_base(void **state) {
  (void)state;
  presence_options_t o;
  presence_options_init(&o);
  o.seq_base = 1000000;
  presence_t *p = NULL;
  assert_int_equal(presence_new(&o, &p), 0);
  for (int i = 0; i < 20; i++) {
    char sid[8];
    snprintf(sid, sizeof sid, "s%d", i);
    assert_int_equal(presence_session_connect(p, sid, "alice", NULL, NULL, NULL), 0);
  }
  log_read_t r = {0};
  assert_int_equal(presence_log_read(p, 0, 100, on_log, &r), 0);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.first, 1000001);
  assert_int_equal(r.n, 21); /* 20 connects and the user's one online */
  assert_int_equal(presence_log_last_seq(p), 1000021);
  /* An earlier run's cursor, where this run would have been at 1..21. */
  assert_int_equal(presence_log_read(p, 5, 100, on_log, &r), 0);
  assert_int_equal(r.status, PRESENCE_ECURSOR);
  assert_int_equal(r.first, 1000001);
  assert_int_equal(r.n, 21);
  assert_int_equal(presence_log_read(p, 1000010, 100, on_log, &r), 0);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.first, 1000011);
  presence_free(p);
}

/* A session event flagged USER_FOLLOWS and its user event are one record
 * in the log and the engine's queue (presence__ev_first_t; a connect's with
 * the session's metadata, a status change's, an end's): each reads back,
 * from the log and from a callback, as the two events it was, whatever the
 * log's capacity cuts (an odd one splits pairs at its end). */
/* A log read's events, recorded as record_cb records a callback's. */
static void record_log_cb(presence_t *p, int status,
                          const presence_event_t *evs, size_t n, void *ud) {
  (void)p;
  (void)status;
  recorder_t *r = ud;
  for (size_t i = 0; i < n && r->n < 256; i++) rec_take(&r->ev[r->n++], &evs[i]);
}

static void pairs_read_back_as_two_events(void **state) {
  (void)state;
  enum { N = 14 }; /* the events of the steps below */
  for (uint32_t cap = 2; cap <= 9; cap++) {
    fixture_t *f = make(0, 0, cap, 0);
    presence_t *p = f->p;
    recorder_t heard = {0};
    assert_true(presence_on_event(p, record_cb, &heard) > 0);
    clock_advance(&f->clock, 1);
    presence_session_connect(p, "s1", "alice", "{\"m\":1}", NULL, NULL);
    presence_session_set_status(p, "s1", PRESENCE_IDLE, NULL, NULL); /* pair */
    presence_session_connect(p, "s2", "alice", NULL, NULL, NULL);
    clock_advance(&f->clock, 1);
    presence_session_set_status(p, "s2", PRESENCE_IDLE, NULL, NULL); /* pair */
    presence_session_set_status(p, "s1", PRESENCE_ONLINE, NULL, NULL); /* pair */
    presence_session_set_status(p, "s2", PRESENCE_ONLINE, NULL, NULL); /* one */
    presence_session_disconnect(p, "s2", NULL, NULL); /* one */
    clock_advance(&f->clock, 1);
    presence_session_disconnect(p, "s1", NULL, NULL); /* pair */
    assert_int_equal(heard.n, N);
    /* A connect's pair: the metadata is the session event's alone. */
    assert_int_equal(heard.ev[0].type, PRESENCE_EV_SESSION_CONNECTED);
    assert_string_equal(heard.ev[0].meta, "{\"m\":1}");
    assert_int_equal(heard.ev[0].flags, PRESENCE_EVENT_USER_FOLLOWS);
    assert_int_equal(heard.ev[1].type, PRESENCE_EV_USER_ONLINE);
    assert_false(heard.ev[1].has_meta);
    assert_int_equal(heard.ev[4].type, PRESENCE_EV_SESSION_CONNECTED);
    assert_false(heard.ev[4].has_meta);
    /* The pairs' first events, as emitted one by one before. */
    expect_event(f, 2, PRESENCE_EV_SESSION_STATUS, PRESENCE_REASON_EXPLICIT,
                 "alice");
    expect_event(f, 3, PRESENCE_EV_USER_IDLE, PRESENCE_REASON_EXPLICIT,
                 "alice");
    assert_int_equal(heard.ev[2].flags, PRESENCE_EVENT_USER_FOLLOWS);
    assert_int_equal(heard.ev[2].last_seen, 0);
    assert_int_equal(heard.ev[2].version + 1, heard.ev[3].version);
    assert_int_equal(heard.ev[2].from, PRESENCE_ONLINE);
    assert_int_equal(heard.ev[2].to, PRESENCE_IDLE);
    assert_string_equal(heard.ev[2].session_id, "s1");
    assert_string_equal(heard.ev[3].session_id, "s1");
    assert_int_equal(heard.ev[12].type, PRESENCE_EV_SESSION_DISCONNECTED);
    assert_int_equal(heard.ev[12].to, PRESENCE_OFFLINE);
    assert_int_equal(heard.ev[13].type, PRESENCE_EV_USER_OFFLINE);
    for (size_t i = 0; i < heard.n; i++)
      assert_int_equal(heard.ev[i].seq, i + 1);
    /* The log holds the last cap events, each as the callback had it. */
    recorder_t logged = {0};
    assert_int_equal(presence_log_read(p, 0, 100, record_log_cb, &logged), 0);
    assert_int_equal(logged.n, cap);
    for (size_t i = 0; i < cap; i++)
      assert_memory_equal(&logged.ev[i], &heard.ev[N - cap + i],
                          sizeof(rec_event_t));
    /* From every cursor in it: a read may start at a pair's second. */
    for (uint64_t after = N - cap; after < N; after++) {
      recorder_t from = {0};
      assert_int_equal(presence_log_read(p, after, 100, record_log_cb, &from), 0);
      assert_int_equal(from.n, N - after);
      assert_memory_equal(&from.ev[0], &heard.ev[after], sizeof(rec_event_t));
    }
    destroy(f);
  }
}

/* Each of a pair is dispatched to whoever takes it, and only then: a
 * listener of session events alone, of user events alone, or a filter
 * leaving out USER_FOLLOWS. */
static void pairs_dispatch_each_half_to_its_listeners(void **state) {
  (void)state;
  fixture_t *f = make(0, 0, 0, 0);
  presence_t *p = f->p;
  assert_int_equal(presence_off(p, 1), 0);
  recorder_t sess = {0}, user = {0};
  int hs = presence_on_event(p, record_cb, &sess);
  assert_true(hs > 0);
  for (int t = 0; t < PRESENCE_EV_COUNT_; t++)
    if (t != PRESENCE_EV_SESSION_STATUS)
      assert_int_equal(
          presence_listener_filter(p, hs, (presence_event_type_t)t, 0, 0), 0);
  int hu = presence_on_user_idle(p, record_cb, &user);
  assert_true(hu > 0);
  presence_session_connect(p, "s1", "alice", NULL, NULL, NULL);
  presence_session_set_status(p, "s1", PRESENCE_IDLE, NULL, NULL);
  assert_int_equal(sess.n, 1);
  assert_int_equal(sess.ev[0].seq, 3);
  assert_int_equal(sess.ev[0].type, PRESENCE_EV_SESSION_STATUS);
  assert_int_equal(user.n, 1);
  assert_int_equal(user.ev[0].seq, 4);
  assert_int_equal(user.ev[0].type, PRESENCE_EV_USER_IDLE);
  /* The session listener now skips what a user event follows: the pair's
   * second alone is dispatched. */
  assert_int_equal(presence_listener_filter(p, hs, PRESENCE_EV_SESSION_STATUS,
                                            1, PRESENCE_EVENT_USER_FOLLOWS),
                   0);
  presence_session_set_status(p, "s1", PRESENCE_ONLINE, NULL, NULL);
  presence_session_set_status(p, "s1", PRESENCE_IDLE, NULL, NULL);
  assert_int_equal(sess.n, 1);
  assert_int_equal(user.n, 2);
  assert_int_equal(user.ev[1].seq, 8);
  /* And the user listener gone: the pair's first alone, once unfiltered. */
  assert_int_equal(presence_off(p, hu), 0);
  assert_int_equal(presence_listener_filter(p, hs, PRESENCE_EV_SESSION_STATUS,
                                            1, 0),
                   0);
  presence_session_set_status(p, "s1", PRESENCE_ONLINE, NULL, NULL);
  assert_int_equal(sess.n, 2);
  assert_int_equal(sess.ev[1].seq, 9);
  assert_int_equal(sess.ev[1].flags, PRESENCE_EVENT_USER_FOLLOWS);
  assert_int_equal(user.n, 2);
  destroy(f);
}

/* ---- cleanup ----------------------------------------------------------- */

static void reset_is_a_full_cleanup(void **state) {
  (void)state;
  fixture_t *f = make(5000, 1000, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  presence_session_connect(f->p, "s2", "alice", NULL, NULL, NULL);
  presence_session_connect(f->p, "s3", "bob", NULL, NULL, NULL);
  presence_session_connect(f->p, "s4", "carol", NULL, NULL, NULL);
  presence_session_disconnect(f->p, "s4", NULL, NULL); /* carol in grace */
  f->rec.n = 0;
  assert_int_equal(presence_reset(f->p, NULL, NULL), 0);
  /* 3 disconnections, 3 users offline, then cleanup last. */
  assert_int_equal(f->rec.n, 7);
  int disc = 0, off = 0;
  for (size_t i = 0; i < 6; i++) {
    assert_int_equal(f->rec.ev[i].reason, PRESENCE_REASON_INSTANCE_LOST);
    if (f->rec.ev[i].type == PRESENCE_EV_SESSION_DISCONNECTED) disc++;
    if (f->rec.ev[i].type == PRESENCE_EV_USER_OFFLINE) off++;
  }
  assert_int_equal(disc, 3);
  assert_int_equal(off, 3);
  expect_event(f, 6, PRESENCE_EV_CLEANUP, PRESENCE_REASON_INSTANCE_LOST, NULL);
  assert_int_equal(f->rec.ev[6].has_user, 0);
  assert_int_equal(f->rec.ev[6].n_session_ids, 0);
  assert_int_equal(status_of(f, "alice"), PRESENCE_OFFLINE);
  assert_int_equal(status_of(f, "carol"), PRESENCE_OFFLINE);
  /* Carol's old grace entry must not fire later. */
  f->rec.n = 0;
  clock_advance(&f->clock, 10000);
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 0);
  /* And the store works as new afterwards. */
  assert_int_equal(presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL), 0);
  destroy(f);
}

/* A clean stop (presenced's SIGTERM on the embedded store): the users in
 * their offline grace go offline at once, reason shutdown, and only they. */
static void end_graces_takes_users_in_grace_offline(void **state) {
  (void)state;
  fixture_t *f = make(5000, 0, 0, 0);
  presence_session_connect(f->p, "s1", "alice", NULL, NULL, NULL);
  presence_session_connect(f->p, "s2", "bob", NULL, NULL, NULL);
  presence_session_connect(f->p, "s3", "carol", NULL, NULL, NULL);
  presence_session_disconnect(f->p, "s2", NULL, NULL); /* bob in grace */
  presence_session_disconnect(f->p, "s3", NULL, NULL); /* carol in grace */
  presence_session_connect(f->p, "s4", "carol", NULL, NULL, NULL); /* back */
  assert_int_equal(status_of(f, "bob"), PRESENCE_ONLINE);
  f->rec.n = 0;
  assert_int_equal(presence_end_graces(f->p, NULL, NULL), 0);
  assert_int_equal(f->rec.n, 1);
  expect_event(f, 0, PRESENCE_EV_USER_OFFLINE, PRESENCE_REASON_SHUTDOWN,
               "bob");
  assert_int_equal(status_of(f, "bob"), PRESENCE_OFFLINE);
  assert_int_equal(status_of(f, "alice"), PRESENCE_ONLINE);
  assert_int_equal(status_of(f, "carol"), PRESENCE_ONLINE);
  /* Bob's grace entry does not fire again, and nothing is left pending. */
  f->rec.n = 0;
  clock_advance(&f->clock, 10000);
  presence_tick(f->p);
  assert_int_equal(f->rec.n, 0);
  assert_int_equal(presence_end_graces(f->p, NULL, NULL), 0);
  assert_int_equal(f->rec.n, 0);
  destroy(f);
}

/* ---- allocation failure ------------------------------------------------ */

static void out_of_memory_changes_nothing(void **state) {
  (void)state;
  for (long k = 0; k < 12; k++) {
    fixture_t *f = make(0, 0, 0, 0);
    presence_session_connect(f->p, "s0", "zed", NULL, NULL, NULL);
    f->rec.n = 0;
    f->alloc.fail_after = k;
    int rc = presence_session_connect(f->p, "s1", "alice", "{}", NULL, NULL);
    f->alloc.fail_after = -1;
    if (rc == 0) {
      assert_int_equal(status_of(f, "alice"), PRESENCE_ONLINE);
    } else {
      assert_int_equal(rc, PRESENCE_ENOMEM);
      assert_int_equal(status_of(f, "alice"), PRESENCE_OFFLINE);
      presence_session_info_t si;
      assert_int_equal(presence_session_get(f->p, "s1", &si), PRESENCE_ENOSESSION);
      assert_int_equal(f->rec.n, 0);
    }
    destroy(f);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(hash_key_is_given_once_before_any_table),
      cmocka_unit_test(connect_emits_session_then_user),
      cmocka_unit_test(second_session_is_no_user_transition),
      cmocka_unit_test(idle_only_when_every_session_is_idle),
      cmocka_unit_test(last_session_ends_offline_with_last_seen),
      cmocka_unit_test(unknown_user_is_offline_not_an_error),
      cmocka_unit_test(duplicates_and_closed_sessions_change_nothing),
      cmocka_unit_test(bad_arguments_are_refused),
      cmocka_unit_test(sessions_per_user_limit),
      cmocka_unit_test(handles_reach_sessions_and_go_stale),
      cmocka_unit_test(handles_reach_sessions_in_every_chunk_and_class),
      cmocka_unit_test(handles_with_inactivity_on),
      cmocka_unit_test(grace_hides_a_reload),
      cmocka_unit_test(grace_expires_into_offline),
      cmocka_unit_test(timer_reports_each_change_of_the_deadline),
      cmocka_unit_test(timer_follows_added_deadlines_only),
      cmocka_unit_test(listener_filter_narrows_what_is_dispatched),
      cmocka_unit_test(grace_does_not_cover_kicks),
      cmocka_unit_test(grace_does_not_cover_shutdown),
      cmocka_unit_test(grace_cancelled_then_restarted),
      cmocka_unit_test(offline_users_are_forgotten_after_retention),
      cmocka_unit_test(a_user_back_in_time_is_not_forgotten),
      cmocka_unit_test(inactivity_idles_and_activity_restores),
      cmocka_unit_test(callbacks_run_in_registration_order),
      cmocka_unit_test(reentrant_mutation_keeps_order),
      cmocka_unit_test(callbacks_may_outgrow_the_queue),
      cmocka_unit_test(done_runs_after_the_events),
      cmocka_unit_test(sessions_keep_their_metadata),
      cmocka_unit_test(compact_session_ids_keep_their_text),
      cmocka_unit_test(record_times_round_trip_or_hold_at_the_limit),
      cmocka_unit_test(a_table_refuses_a_record_above_48_bits),
      cmocka_unit_test(foreach_visits_every_user),
      cmocka_unit_test(log_reads_from_a_cursor_and_reports_gaps),
      cmocka_unit_test(a_run_numbers_above_its_base),
      cmocka_unit_test(pairs_read_back_as_two_events),
      cmocka_unit_test(pairs_dispatch_each_half_to_its_listeners),
      cmocka_unit_test(unheard_events_still_reach_the_log),
      cmocka_unit_test(reset_is_a_full_cleanup),
      cmocka_unit_test(end_graces_takes_users_in_grace_offline),
      cmocka_unit_test(out_of_memory_changes_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
