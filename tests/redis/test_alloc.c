/* SPDX-License-Identifier: MIT */
/*
 * The Redis store allocates through the host's allocator (docs/c-api.md,
 * "Allocation"): what it allocates before it is attached through
 * presence_redis_options_t.allocator, everything after through
 * presence_options_t.allocator. A counting allocator given to both sees
 * the store's own allocations (asked for through calls that reach only the
 * store: presence_store_redis_new, presence_redis_kick, presence_redis_lease)
 * and nothing is left live once the instance is freed, after connects,
 * channel joins, status changes, availability and (expiring) messages, a log
 * read, member queries and the reaping
 * of a dead instance's sessions.
 */
#include "harness.h"

/* At least min allocations through the counting allocator since before. */
static void expect_allocs(const counting_t *m, size_t before, size_t min,
                          const char *what) {
  if (m->count < before + min)
    fail_msg("%s allocated %zu blocks through the host's allocator, "
             "expected %zu+",
             what, m->count - before, min);
}

typedef struct cb_state {
  int kicks, leases, members;
  int kick_status, lease_status, members_status;
  size_t n_members;
} cb_state_t;

static void kick_cb(void *ud, int status) {
  cb_state_t *s = ud;
  s->kicks++;
  s->kick_status = status;
}
static void lease_cb(void *ud, int status, const presence_redis_lease_t *r) {
  (void)r;
  cb_state_t *s = ud;
  s->leases++;
  s->lease_status = status;
}
static void members_cb(presence_t *p, int status,
                       const presence_member_info_t *m, size_t n,
                       uint64_t version, const char *next, void *ud) {
  (void)p;
  (void)m;
  (void)version;
  (void)next;
  cb_state_t *s = ud;
  s->members++;
  s->members_status = status;
  s->n_members = n;
}
static bool kick_pred(void *ud) {
  return ((cb_state_t *)ud)->kicks > 0;
}
static bool lease_pred(void *ud) {
  return ((cb_state_t *)ud)->leases > 0;
}
static bool members_pred(void *ud) {
  return ((cb_state_t *)ud)->members > 0;
}

static bool cleanup_pred(void *ud) {
  return rec_count(&((inst_t *)ud)->local, PRESENCE_EV_CLEANUP) > 0;
}

static void everything_goes_through_the_host_allocator(void **state) {
  (void)state;
  server_t srv;
  srv_init(&srv);
  uv_loop_t loop;
  uv_loop_init(&loop);

  /* An instance on libc that will die with sessions for the other to reap. */
  inst_t dead;
  inst_new(&dead, &loop, &srv, "dead", NULL);
  wait_ready(&loop, &dead);

  counting_t mem = {0};
  presence_allocator_t alloc = counting_allocator(&mem);
  inst_t in;
  memset(&in, 0, sizeof in);
  snprintf(in.id, sizeof in.id, "counted");
  presence_redis_options_t ro;
  memset(&ro, 0, sizeof ro);
  ro.loop = &loop;
  ro.url = srv.url;
  ro.heartbeat_ms = 200;
  ro.lease_ms = 600;
  ro.command_timeout_ms = 1000;
  ro.stream_block_ms = 200;
  ro.reconnect_max_ms = 200;
  ro.allocator = &alloc;
  assert_int_equal(presence_store_redis_new(&ro, &in.store), 0);
  /* Before attach: the store itself, its prefix and its URL. */
  if (mem.blocks < 3)
    fail_msg("%zu allocations of the unattached store counted, expected 3+",
             mem.blocks);
  presence_options_t o;
  presence_options_init(&o);
  o.instance_id = in.id;
  o.store = in.store;
  o.allocator = alloc;
  assert_int_equal(presence_new(&o, &in.p), 0);
  assert_true(presence_on_event(in.p, rec_cb, &in.local) > 0);
  wait_ready(&loop, &in);

  int want = 0, dwant = 0;
  char sid[32], uid[32];
  for (int i = 0; i < 3; i++) {
    snprintf(sid, sizeof sid, "d%d", i);
    snprintf(uid, sizeof uid, "gone%d", i);
    assert_int_equal(
        presence_session_connect(dead.p, sid, uid, "{\"m\":1}", done_cb, &dead),
        0);
    dwant++;
    assert_int_equal(
        presence_channel_join(dead.p, sid, "room", NULL, done_cb, &dead), 0);
    dwant++;
  }
  wait_done(&loop, &dead, dwant);
  assert_no_errors(&dead);

  for (int i = 0; i < 20; i++) {
    snprintf(sid, sizeof sid, "s%d", i);
    snprintf(uid, sizeof uid, "u%d", i % 7);
    assert_int_equal(presence_session_connect(in.p, sid, uid, "{\"device\":1}",
                                              done_cb, &in),
                     0);
    want++;
    assert_int_equal(presence_channel_join(in.p, sid, "room", "{\"typing\":0}",
                                           done_cb, &in),
                     0);
    want++;
    assert_int_equal(
        presence_channel_join(in.p, sid, "lobby", NULL, done_cb, &in), 0);
    want++;
    if (i % 2) {
      assert_int_equal(
          presence_session_set_status(in.p, sid, PRESENCE_IDLE, done_cb, &in),
          0);
      want++;
    }
    if (i % 5 == 0) {
      assert_int_equal(presence_channel_update(in.p, sid, "room",
                                               "{\"typing\":1}", done_cb, &in),
                       0);
      want++;
      assert_int_equal(presence_channel_leave(in.p, sid, "lobby", done_cb, &in),
                       0);
      want++;
    }
  }
  /* Status settings: availability and messages, one expiring soon. */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t wall = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  for (int i = 0; i < 7; i++) {
    snprintf(uid, sizeof uid, "u%d", i);
    assert_int_equal(presence_user_set_availability(
                         in.p, uid, i % 2 ? PRESENCE_AVAIL_DND
                                          : PRESENCE_AVAIL_AWAY,
                         done_cb, &in),
                     0);
    want++;
    assert_int_equal(presence_user_set_message(in.p, uid, "in a meeting",
                                               "\xf0\x9f\x93\x85",
                                               i == 0 ? wall + 300 : 0,
                                               done_cb, &in),
                     0);
    want++;
  }
  assert_int_equal(presence_user_clear_message(in.p, "u6", done_cb, &in), 0);
  want++;
  wait_done(&loop, &in, want);
  assert_no_errors(&in);

  page_t pg = read_page(&loop, in.p, 0, 64);
  assert_int_equal(pg.status, 0);
  assert_true(pg.n > 0);
  presence_user_info_t u = user_info(&loop, &in, "u1");
  assert_int_equal(u.status, PRESENCE_ONLINE);
  cb_state_t cs = {0};
  assert_int_equal(presence_channel_members(in.p, "room", NULL, 100,
                                            members_cb, &cs),
                   0);
  assert_true(run_until(&loop, members_pred, &cs, 5000));
  assert_int_equal(cs.members_status, 0);
  assert_int_equal(cs.n_members, 7 + 3);

  /* Calls that reach the store alone: whatever they allocate is the
   * store's (a request and its command; the lease's call record). */
  size_t c0 = mem.count;
  assert_int_equal(presence_redis_kick(in.store, "s3", kick_cb, &cs), 0);
  expect_allocs(&mem, c0, 2, "a kick");
  assert_true(run_until(&loop, kick_pred, &cs, 5000));
  assert_int_equal(cs.kick_status, 0);
  c0 = mem.count;
  assert_int_equal(presence_redis_lease(in.store, "alloc-test",
                                        PRESENCE_LEASE_CLAIM, 0, 1000, 0, "",
                                        lease_cb, &cs),
                   0);
  expect_allocs(&mem, c0, 3, "a lease call");
  assert_true(run_until(&loop, lease_pred, &cs, 5000));
  assert_int_equal(cs.lease_status, 0);

  /* The dead instance goes without a word: the counted one reaps it. */
  inst_free(&dead);
  loop_drain(&loop);
  assert_true(run_until(&loop, cleanup_pred, &in, 15000));
  const rec_ev_t *c = NULL;
  for (size_t i = 0; i < in.local.n; i++)
    if (in.local.ev[i].type == PRESENCE_EV_CLEANUP) c = &in.local.ev[i];
  assert_non_null(c);
  assert_int_equal(c->reason, PRESENCE_REASON_INSTANCE_LOST);
  assert_int_equal(c->n_ids, 3);
  assert_int_equal(user_info(&loop, &in, "gone0").status, PRESENCE_OFFLINE);

  size_t count = mem.count;
  inst_free(&in);
  loop_drain(&loop);
  if (mem.live || mem.blocks)
    fail_msg("%zu bytes in %zu blocks still live after presence_free",
             mem.live, mem.blocks);
  /* Hundreds of requests, commands, records and event arrays. */
  if (count < 300)
    fail_msg("only %zu allocations counted", count);
  print_message("%zu allocations through the host's allocator\n", count);
  assert_int_equal(uv_loop_close(&loop), 0);
  srv_fini(&srv);
}

int main(void) {
  /* The one-shard layout, whatever PRESENCE_TEST_SHARDS says (a
   * developer's environment): the counted store is made here without
   * shards, and the harness's instance beside it would otherwise write its
   * members in shards it never reads (7 members of 10 listed). */
  unsetenv("PRESENCE_TEST_SHARDS");
  apply_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(everything_goes_through_the_host_allocator),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
