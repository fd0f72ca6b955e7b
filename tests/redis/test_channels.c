/* SPDX-License-Identifier: MIT */
/*
 * Channels on the Redis store, against a real redis-server: members and
 * their data, exactly-once channel events across three instances, a dead
 * instance's members leaving once (instance_lost), memberships re-asserted
 * after a store loss, the channel grace, and the log's channel events.
 */
#include <inttypes.h>

#include "harness.h"
#include "store/redis_decode.h"

/* Channel events of the whole log (decoded by the store's own decoder):
 * counts per type for one (channel, user), and the reasons of the leaves. */
typedef struct chan_log {
  size_t join, leave, update;
  presence_reason_t last_leave_reason;
  uint64_t last_count;
} chan_log_t;

static chan_log_t log_channel_events(server_t *s, const char *ch,
                                     const char *user) {
  chan_log_t cl = {0};
  /* The user's events are all in its shard's log. */
  char pfx[64];
  user_prefix(user, pfx, sizeof pfx);
  redisReply *r = srv_cmd(s, "XRANGE %slog - +", pfx);
  assert_int_equal(r->type, REDIS_REPLY_ARRAY);
  presence__redis_events_t evs = {0};
  for (size_t i = 0; i < r->elements; i++)
    assert_int_equal(
        presence__redis_decode_entry(r->element[i], "replay", &evs), 0);
  for (size_t i = 0; i < evs.n; i++) {
    const presence_event_t *ev = &evs.ev[i];
    if (ev->type < PRESENCE_EV_CHANNEL_JOIN ||
        ev->type > PRESENCE_EV_CHANNEL_UPDATE)
      continue;
    assert_non_null(ev->channel);
    if (strcmp(ev->channel, ch) || strcmp(ev->user_id, user)) continue;
    cl.last_count = ev->count;
    if (ev->type == PRESENCE_EV_CHANNEL_JOIN) cl.join++;
    if (ev->type == PRESENCE_EV_CHANNEL_UPDATE) cl.update++;
    if (ev->type == PRESENCE_EV_CHANNEL_LEAVE) {
      cl.leave++;
      cl.last_leave_reason = ev->reason;
    }
  }
  presence__redis_events_free(&evs);
  freeReplyObject(r);
  return cl;
}

static size_t local_count(fx_t *f, presence_event_type_t t) {
  size_t n = 0;
  for (int i = 0; i < f->n; i++)
    if (f->in[i].p) n += rec_count(&f->in[i].local, t);
  return n;
}

/* A members query over the loop. */
typedef struct mq {
  bool got;
  int calls; /* times answered */
  int status;
  size_t n;
  uint64_t count;
  char users[64][32];
  char data[64][64];
  size_t metas[64];
  char sid[64][40]; /* a member's first session */
  int has_next;
} mq_t;

static void mq_cb(presence_t *p, int status, const presence_member_info_t *m,
                  size_t n, uint64_t count, const char *next, void *ud) {
  (void)p;
  mq_t *q = ud;
  q->got = true;
  q->calls++;
  q->status = status;
  q->n = n;
  q->count = count;
  q->has_next = next != NULL;
  for (size_t i = 0; i < n && i < 64; i++) {
    snprintf(q->users[i], sizeof q->users[i], "%s", m[i].user_id);
    snprintf(q->sid[i], sizeof q->sid[i], "%s",
             m[i].n_metas ? m[i].metas[0].session_id : "");
    snprintf(q->data[i], sizeof q->data[i], "%s", m[i].data ? m[i].data : "");
    q->metas[i] = m[i].n_metas;
  }
}

static bool mq_pred(void *ud) { return ((mq_t *)ud)->got; }

static mq_t members_as(fx_t *f, int i, const char *ch, const char *after,
                       size_t limit, bool brief) {
  mq_t q;
  memset(&q, 0, sizeof q);
  assert_int_equal(
      (brief ? presence_channel_members_brief
             : presence_channel_members)(f->in[i].p, ch, after, limit, mq_cb,
                                         &q),
      0);
  assert_true(run_until(&f->loop, mq_pred, &q, 5000));
  assert_int_equal(q.status, 0);
  return q;
}

static mq_t members(fx_t *f, int i, const char *ch, const char *after,
                    size_t limit) {
  return members_as(f, i, ch, after, limit, false);
}

/* members_and_data's room: ann (data {"c":2}, ann_metas sessions listed)
 * and bob (no data). */
static void assert_room(const mq_t *q, size_t ann_metas) {
  assert_int_equal(q->count, 2);
  assert_int_equal(q->n, 2);
  assert_string_equal(q->users[0], "ann");
  assert_string_equal(q->data[0], "{\"c\":2}");
  assert_int_equal(q->metas[0], ann_metas);
  assert_string_equal(q->users[1], "bob");
  assert_string_equal(q->data[1], "");
}

/* ---- tests --------------------------------------------------------------- */

static void members_and_data(void **state) {
  (void)state;
  fx_t *f = fx_make(1, NULL);
  inst_t *a = &f->in[0];
  int t = 0;
  presence_session_connect(a->p, "s1", "ann", NULL, done_cb, a);
  presence_session_connect(a->p, "s2", "ann", NULL, done_cb, a);
  /* A UUID, which the store keeps in 20 bytes: listed as its text. */
  const char *s3 = "5a1e0b0b-1f2e-4d3c-8b7a-69584a3b2c1d";
  presence_session_connect(a->p, s3, "bob", NULL, done_cb, a);
  t += 3;
  assert_int_equal(
      presence_channel_join(a->p, "s1", "room", "{\"c\":1}", done_cb, a), 0);
  assert_int_equal(
      presence_channel_join(a->p, "s2", "room", "{\"c\":1}", done_cb, a), 0);
  assert_int_equal(presence_channel_join(a->p, s3, "room", NULL, done_cb, a),
                   0);
  assert_int_equal(
      presence_channel_update(a->p, "s2", "room", "{\"c\":2}", done_cb, a), 0);
  t += 4;
  wait_done(&f->loop, a, t);
  assert_no_errors(a);
  mq_t q = members(f, 0, "room", NULL, 10);
  assert_room(&q, 2);
  assert_string_equal(q.sid[1], s3);
  /* The brief listing (a client's snapshot): the same members, count and
   * data, no sessions; paged the same way. */
  mq_t b = members_as(f, 0, "room", NULL, 10, true);
  assert_room(&b, 0);
  b = members_as(f, 0, "room", "ann", 1, true);
  assert_int_equal(b.n, 1);
  assert_string_equal(b.users[0], "bob");
  assert_false(b.has_next);
  /* Paging: one a page. */
  q = members(f, 0, "room", NULL, 1);
  assert_int_equal(q.n, 1);
  assert_true(q.has_next);
  q = members(f, 0, "room", "ann", 1);
  assert_string_equal(q.users[0], "bob");
  assert_false(q.has_next);
  /* Not joined: refused at once, nothing sent. */
  assert_int_equal(presence_channel_leave(a->p, s3, "other", done_cb, a),
                   PRESENCE_ENOTMEMBER);
  /* s1 leaves: s2 is the most recent, no change; s2 ends: ann leaves. */
  presence_channel_leave(a->p, "s1", "room", done_cb, a);
  presence_session_disconnect(a->p, "s2", done_cb, a);
  t += 2;
  wait_done(&f->loop, a, t);
  assert_no_errors(a);
  assert_int_equal(rec_count(&a->local, PRESENCE_EV_CHANNEL_JOIN), 2);
  assert_int_equal(rec_count(&a->local, PRESENCE_EV_CHANNEL_UPDATE), 1);
  assert_int_equal(rec_count(&a->local, PRESENCE_EV_CHANNEL_LEAVE), 1);
  chan_log_t cl = log_channel_events(&f->srv, "room", "ann");
  assert_int_equal(cl.join, 1);
  assert_int_equal(cl.update, 1);
  assert_int_equal(cl.leave, 1);
  assert_int_equal(cl.last_leave_reason, PRESENCE_REASON_DISCONNECT);
  /* Sharded, an event's count is its shard's (docs/internals/redis.md). */
  if (test_shards() == 1) assert_int_equal(cl.last_count, 1);
  q = members(f, 0, "room", NULL, 10);
  assert_int_equal(q.count, 1);
  /* A backend removes bob: one leave, reason kicked. */
  presence_channel_remove_user(a->p, "room", "bob", done_cb, a);
  wait_done(&f->loop, a, ++t);
  assert_no_errors(a);
  cl = log_channel_events(&f->srv, "room", "bob");
  assert_int_equal(cl.leave, 1);
  assert_int_equal(cl.last_leave_reason, PRESENCE_REASON_KICKED);
  q = members(f, 0, "room", NULL, 10);
  assert_int_equal(q.count, 0);
  fx_destroy(f);
}

/* A member of more sessions than the script reads in one HMGET (256, so
 * that Lua's unpack stays within its stack): every session listed, the
 * data the most recent join's. */
static void a_member_of_many_sessions_lists_them_all(void **state) {
  (void)state;
  fx_t *f = fx_make(1, NULL);
  inst_t *a = &f->in[0];
  enum { N = 300 };
  int t = 0;
  for (int i = 0; i < N; i++) {
    char sid[16], data[32];
    snprintf(sid, sizeof sid, "m%d", i);
    snprintf(data, sizeof data, "{\"i\":%d}", i);
    presence_session_connect(a->p, sid, "many", NULL, done_cb, a);
    assert_int_equal(presence_channel_join(a->p, sid, "big", data, done_cb, a),
                     0);
    t += 2;
  }
  wait_done(&f->loop, a, t);
  assert_no_errors(a);
  mq_t q = members(f, 0, "big", NULL, 10);
  assert_int_equal(q.count, 1);
  assert_int_equal(q.n, 1);
  assert_string_equal(q.users[0], "many");
  assert_int_equal(q.metas[0], N);
  assert_string_equal(q.data[0], "{\"i\":299}");
  fx_destroy(f);
}

/* Script calls Redis has run so far (INFO commandstats). */
static long long fcalls(server_t *s) { return cmd_calls(s, "fcall"); }

typedef struct many_q {
  mq_t m[40];
  uq_t u[40];
} many_q_t;

static bool many_q_pred(void *ud) {
  many_q_t *q = ud;
  for (int i = 0; i < 40; i++)
    if (!q->m[i].got || !q->u[i].got) return false;
  return true;
}

/* Queries asked while others are in flight go in one script call (the
 * query batch), and each gets its own answer: 40 channels' members and 40
 * users asked at once, every answer right, far fewer calls than queries
 * (one store: sharded, each query goes to its own shard); and with Redis
 * killed under them, each is answered once. */
static void queries_in_flight_share_a_call(void **state) {
  (void)state;
  fx_t *f = fx_make(1, NULL);
  inst_t *a = &f->in[0];
  int t = 0;
  for (int i = 0; i < 40; i++) {
    char sid[16], u[16], ch[16], data[24];
    snprintf(ch, sizeof ch, "q%d", i);
    for (int j = 0; j < 2; j++) {
      snprintf(sid, sizeof sid, "q%d-%d", i, j);
      snprintf(u, sizeof u, "qu%d", 2 * i + j);
      snprintf(data, sizeof data, "{\"i\":%d}", 2 * i + j);
      presence_session_connect(a->p, sid, u, NULL, done_cb, a);
      assert_int_equal(presence_channel_join(a->p, sid, ch, data, done_cb, a),
                       0);
      t += 2;
    }
  }
  wait_done(&f->loop, a, t);
  assert_no_errors(a);
  long long calls0 = fcalls(&f->srv);
  many_q_t *q = calloc(1, sizeof *q);
  assert_non_null(q);
  for (int i = 0; i < 40; i++) {
    char ch[16], u[16];
    snprintf(ch, sizeof ch, "q%d", i);
    snprintf(u, sizeof u, "qu%d", 2 * i + 1);
    assert_int_equal(
        presence_channel_members(a->p, ch, NULL, 10, mq_cb, &q->m[i]), 0);
    assert_int_equal(presence_user_query(a->p, u, uq_cb, &q->u[i]), 0);
  }
  assert_true(run_until(&f->loop, many_q_pred, q, 5000));
  for (int i = 0; i < 40; i++) {
    char want[24];
    assert_int_equal(q->m[i].status, 0);
    assert_int_equal(q->m[i].count, 2);
    assert_int_equal(q->m[i].n, 2);
    snprintf(want, sizeof want, "qu%d", 2 * i);
    assert_string_equal(q->m[i].users[0], want);
    snprintf(want, sizeof want, "{\"i\":%d}", 2 * i + 1);
    assert_string_equal(q->m[i].data[1], want);
    assert_int_equal(q->u[i].status, 0);
    assert_int_equal(q->u[i].info.status, PRESENCE_ONLINE);
    assert_int_equal(q->u[i].info.session_count, 1);
  }
  long long calls = fcalls(&f->srv) - calls0;
  print_message("80 queries in %lld script calls\n", calls);
  if (test_shards() == 1) assert_true(calls <= 10);
  /* Redis gone with queries queued and in flight: each one answered, by
   * its result or by store_unavailable, none lost, a listing once. */
  memset(q, 0, sizeof *q);
  for (int i = 0; i < 40; i++) {
    char ch[16], u[16];
    snprintf(ch, sizeof ch, "q%d", i);
    snprintf(u, sizeof u, "qu%d", 2 * i);
    assert_int_equal(
        presence_channel_members(a->p, ch, NULL, 10, mq_cb, &q->m[i]), 0);
    assert_int_equal(presence_user_query(a->p, u, uq_cb, &q->u[i]), 0);
  }
  srv_stop(&f->srv);
  assert_true(run_until(&f->loop, many_q_pred, q, 8000));
  for (int i = 0; i < 40; i++) {
    assert_true(q->m[i].status == 0 || q->m[i].status == PRESENCE_ESTORE);
    assert_true(q->u[i].status == 0 || q->u[i].status == PRESENCE_ESTORE);
    if (q->m[i].status == 0) assert_int_equal(q->m[i].count, 2);
  }
  run_for(&f->loop, 200);
  for (int i = 0; i < 40; i++) assert_int_equal(q->m[i].calls, 1);
  srv_start(&f->srv);
  free(q);
  fx_destroy(f);
}

static bool cluster_saw_both(void *ud) {
  fx_t *f = ud;
  for (int i = 0; i < 3; i++)
    if (!rec_count(&f->in[i].cluster, PRESENCE_EV_CHANNEL_LEAVE)) return false;
  return true;
}

/* 50 sessions of one user on three instances join one channel in random
 * order, then leave it in random order, writes of all three in flight at
 * once: one channel.join and one channel.leave, nothing else, each
 * emitted by exactly one instance. */
static void fifty_sessions_three_instances_once(void **state) {
  (void)state;
  fx_t *f = fx_make(3, NULL);
  int target[3] = {0};
  char sid[64];
  for (int k = 0; k < 50; k++) {
    int i = k % 3;
    snprintf(sid, sizeof sid, "%s-%d", f->in[i].id, k);
    presence_session_connect(f->in[i].p, sid, "ann", NULL, done_cb, &f->in[i]);
    target[i]++;
  }
  for (int i = 0; i < 3; i++) wait_done(&f->loop, &f->in[i], target[i]);
  int order[50];
  srand(1313);
  for (int pass = 0; pass < 2; pass++) {
    for (int k = 0; k < 50; k++) order[k] = k;
    for (int k = 49; k > 0; k--) {
      int j = rand() % (k + 1), x = order[k];
      order[k] = order[j];
      order[j] = x;
    }
    for (int n = 0; n < 50; n++) {
      int k = order[n], i = k % 3;
      snprintf(sid, sizeof sid, "%s-%d", f->in[i].id, k);
      int rc = pass == 0 ? presence_channel_join(f->in[i].p, sid, "lobby",
                                                 NULL, done_cb, &f->in[i])
                         : presence_channel_leave(f->in[i].p, sid, "lobby",
                                                  done_cb, &f->in[i]);
      assert_int_equal(rc, 0);
      target[i]++;
      if (rand() % 4 == 0) uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    for (int i = 0; i < 3; i++) wait_done(&f->loop, &f->in[i], target[i]);
  }
  for (int i = 0; i < 3; i++) assert_no_errors(&f->in[i]);
  assert_int_equal(local_count(f, PRESENCE_EV_CHANNEL_JOIN), 1);
  assert_int_equal(local_count(f, PRESENCE_EV_CHANNEL_LEAVE), 1);
  assert_int_equal(local_count(f, PRESENCE_EV_CHANNEL_UPDATE), 0);
  chan_log_t cl = log_channel_events(&f->srv, "lobby", "ann");
  assert_int_equal(cl.join, 1);
  assert_int_equal(cl.leave, 1);
  assert_int_equal(cl.update, 0);
  assert_int_equal(cl.last_leave_reason, PRESENCE_REASON_EXPLICIT);
  /* Every instance's cluster view (the log reader) saw both, once. */
  assert_true(run_until(&f->loop, cluster_saw_both, f, 5000));
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rec_count(&f->in[i].cluster, PRESENCE_EV_CHANNEL_JOIN), 1);
    assert_int_equal(rec_count(&f->in[i].cluster, PRESENCE_EV_CHANNEL_LEAVE), 1);
  }
  fx_destroy(f);
}

typedef struct leave_wait {
  fx_t *f;
  const char *ch, *user;
} leave_wait_t;
static bool leave_logged(void *ud) {
  leave_wait_t *w = ud;
  return log_channel_events(&w->f->srv, w->ch, w->user).leave >= 1;
}

/* A dead instance's members leave exactly once, reason instance_lost;
 * members of the live instance stay. */
static void dead_instance_members_leave_once(void **state) {
  (void)state;
  fx_t *f = fx_make(2, NULL);
  int target[2] = {0};
  presence_session_connect(f->in[0].p, "a1", "ann", NULL, done_cb, &f->in[0]);
  presence_channel_join(f->in[0].p, "a1", "room", "{}", done_cb, &f->in[0]);
  target[0] = 2;
  for (int k = 0; k < 5; k++) {
    char sid[16];
    snprintf(sid, sizeof sid, "b%d", k);
    presence_session_connect(f->in[1].p, sid, "bob", NULL, done_cb, &f->in[1]);
    presence_channel_join(f->in[1].p, sid, "room", NULL, done_cb, &f->in[1]);
    target[1] += 2;
  }
  for (int i = 0; i < 2; i++) wait_done(&f->loop, &f->in[i], target[i]);
  /* beta dies (stops answering; its lease runs out), alpha reaps it. */
  presence_redis_debug_pause(f->in[1].store, 1);
  leave_wait_t w = {f, "room", "bob"};
  assert_true(run_until(&f->loop, leave_logged, &w, 15000));
  run_until(&f->loop, NULL, NULL, 300);
  chan_log_t cl = log_channel_events(&f->srv, "room", "bob");
  assert_int_equal(cl.join, 1);
  assert_int_equal(cl.leave, 1);
  assert_int_equal(cl.last_leave_reason, PRESENCE_REASON_INSTANCE_LOST);
  /* Sharded, an event's count is its shard's (docs/internals/redis.md). */
  if (test_shards() == 1) assert_int_equal(cl.last_count, 1);
  assert_int_equal(log_channel_events(&f->srv, "room", "ann").leave, 0);
  mq_t q = members(f, 0, "room", NULL, 10);
  assert_int_equal(q.count, 1);
  assert_string_equal(q.users[0], "ann");
  fx_destroy(f);
}

typedef struct member_wait {
  fx_t *f;
  const char *ch;
  uint64_t count;
} member_wait_t;
static bool count_is(void *ud) {
  member_wait_t *w = ud;
  uint64_t n = 0;
  for (uint32_t sh = 0; sh < test_shards(); sh++) {
    char pfx[64];
    shard_prefix(sh, pfx, sizeof pfx);
    /* The channel's count, field 'n' of its hash (format 14). */
    redisReply *r = srv_cmd(&w->f->srv, "HGET %sc:{c:%s} n", pfx, w->ch);
    if (r->type == REDIS_REPLY_STRING) n += strtoull(r->str, NULL, 10);
    freeReplyObject(r);
  }
  return n == w->count;
}

/* Redis loses everything: the instances re-assert their sessions and then
 * their memberships, with their data. */
static void store_loss_reasserts_memberships(void **state) {
  (void)state;
  fx_t *f = fx_make(2, NULL);
  int target[2] = {2, 3};
  presence_session_connect(f->in[0].p, "a1", "ann", NULL, done_cb, &f->in[0]);
  presence_channel_join(f->in[0].p, "a1", "room", "{\"n\":\"Ann\"}", done_cb,
                        &f->in[0]);
  presence_session_connect(f->in[1].p, "b1", "bob", NULL, done_cb, &f->in[1]);
  presence_channel_join(f->in[1].p, "b1", "room", NULL, done_cb, &f->in[1]);
  presence_channel_join(f->in[1].p, "b1", "doc", NULL, done_cb, &f->in[1]);
  for (int i = 0; i < 2; i++) wait_done(&f->loop, &f->in[i], target[i]);
  freeReplyObject(srv_cmd(&f->srv, "FLUSHALL"));
  member_wait_t w = {f, "room", 2}, w2 = {f, "doc", 1};
  assert_true(run_until(&f->loop, count_is, &w, 8000));
  assert_true(run_until(&f->loop, count_is, &w2, 8000));
  mq_t q = members(f, 1, "room", NULL, 10);
  assert_int_equal(q.count, 2);
  assert_string_equal(q.users[0], "ann");
  assert_string_equal(q.data[0], "{\"n\":\"Ann\"}");
  /* The re-asserted joins are reason resync. */
  size_t resync = 0;
  for (int i = 0; i < 2; i++)
    for (size_t k = 0; k < f->in[i].local.n; k++)
      resync += f->in[i].local.ev[k].type == PRESENCE_EV_CHANNEL_JOIN &&
                f->in[i].local.ev[k].reason == PRESENCE_REASON_RESYNC;
  assert_int_equal(resync, 3);
  fx_destroy(f);
}

/* With a grace, a member whose session ended leaves once, after it. */
static void channel_grace_on_redis(void **state) {
  (void)state;
  inst_opts_t io = {0};
  io.grace_ms = 400;
  fx_t *f = fx_make(1, &io);
  inst_t *a = &f->in[0];
  presence_session_connect(a->p, "s1", "ann", NULL, done_cb, a);
  presence_channel_join(a->p, "s1", "room", NULL, done_cb, a);
  presence_session_disconnect(a->p, "s1", done_cb, a);
  wait_done(&f->loop, a, 3);
  int64_t t0 = now_ms();
  assert_int_equal(log_channel_events(&f->srv, "room", "ann").leave, 0);
  /* Back in time: no event. */
  presence_session_connect(a->p, "s2", "ann", NULL, done_cb, a);
  presence_channel_join(a->p, "s2", "room", NULL, done_cb, a);
  wait_done(&f->loop, a, 5);
  run_until(&f->loop, NULL, NULL, 800);
  chan_log_t cl = log_channel_events(&f->srv, "room", "ann");
  assert_int_equal(cl.join, 1);
  assert_int_equal(cl.leave, 0);
  assert_int_equal(cl.update, 0);
  presence_session_disconnect(a->p, "s2", done_cb, a);
  wait_done(&f->loop, a, 6);
  t0 = now_ms();
  leave_wait_t w = {f, "room", "ann"};
  assert_true(run_until(&f->loop, leave_logged, &w, 5000));
  assert_true(now_ms() - t0 >= 300);
  cl = log_channel_events(&f->srv, "room", "ann");
  assert_int_equal(cl.leave, 1);
  assert_int_equal(cl.last_leave_reason, PRESENCE_REASON_DISCONNECT);
  fx_destroy(f);
}

/* A session that ends with no grace takes its memberships with it, and
 * the store keeps nothing of them: a channel it was the last member of has
 * no key and no place in the channel list, the other channel no record of
 * its member, the user's hash neither the session nor the channels (those
 * fields go in the session's own HDEL). What is left over would be memory
 * no one frees while the user's record lives. */
static bool key_ends(const char *k, const char *tail) {
  size_t a = strlen(k), b = strlen(tail);
  return a >= b && !strcmp(k + a - b, tail);
}

static void an_ended_session_leaves_nothing_of_its_channels(void **state) {
  (void)state;
  inst_opts_t io = {0}; /* no offline grace, so no channel grace */
  fx_t *f = fx_make(1, &io);
  inst_t *a = &f->in[0];
  presence_session_connect(a->p, "s1", "ann", NULL, done_cb, a);
  presence_session_connect(a->p, "s2", "bob", NULL, done_cb, a);
  presence_channel_join(a->p, "s1", "solo", NULL, done_cb, a);
  presence_channel_join(a->p, "s1", "pair", "{\"n\":1}", done_cb, a);
  presence_channel_join(a->p, "s2", "pair", NULL, done_cb, a);
  presence_session_disconnect(a->p, "s1", done_cb, a);
  wait_done(&f->loop, a, 6);
  assert_int_equal(log_channel_events(&f->srv, "solo", "ann").leave, 1);
  assert_int_equal(log_channel_events(&f->srv, "pair", "ann").leave, 1);

  redisReply *keys = srv_cmd(&f->srv, "KEYS *");
  assert_int_equal(keys->type, REDIS_REPLY_ARRAY);
  int pair_keys = 0;
  for (size_t i = 0; i < keys->elements; i++) {
    const char *k = keys->element[i]->str;
    assert_null(strstr(k, "{c:solo}"));
    if (key_ends(k, "chans")) {
      redisReply *z = srv_cmd(&f->srv, "ZSCORE %s solo", k);
      assert_int_equal(z->type, REDIS_REPLY_NIL);
      freeReplyObject(z);
    }
    if (key_ends(k, "c:{c:pair}") && !key_ends(k, "cm:{c:pair}")) {
      pair_keys++;
      redisReply *h = srv_cmd(&f->srv, "HKEYS %s", k);
      for (size_t j = 0; j < h->elements; j++) {
        assert_null(strstr(h->element[j]->str, "ann"));
        assert_null(strstr(h->element[j]->str, "s1"));
      }
      freeReplyObject(h);
    }
  }
  assert_int_equal(pair_keys, 1);
  freeReplyObject(keys);

  /* ann is offline: its hash holds its record alone. */
  char pfx[64];
  user_prefix("ann", pfx, sizeof pfx);
  redisReply *h = srv_cmd(&f->srv, "HKEYS %su:{u:ann}", pfx);
  assert_int_equal(h->type, REDIS_REPLY_ARRAY);
  assert_int_equal(h->elements, 1);
  assert_string_equal(h->element[0]->str, "");
  freeReplyObject(h);
  fx_destroy(f);
}

/* ---- against the embedded store --------------------------------------- */

/* One channel event, as both stores must report it. */
typedef struct cev {
  int type, from, to;
  uint64_t version, count;
  char key[160]; /* channel/user/data */
} cev_t;

typedef struct cevs {
  cev_t v[4096];
  size_t n;
} cevs_t;

static void cev_cb(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  cevs_t *c = ud;
  if (ev->type < PRESENCE_EV_CHANNEL_JOIN ||
      ev->type > PRESENCE_EV_CHANNEL_UPDATE || c->n >= 4096)
    return;
  cev_t *e = &c->v[c->n++];
  e->type = (int)ev->type;
  e->from = (int)ev->from;
  e->to = (int)ev->to;
  e->version = ev->user_version;
  e->count = ev->count;
  snprintf(e->key, sizeof e->key, "%s/%s/%s", ev->channel, ev->user_id,
           ev->meta ? ev->meta : "-");
}

typedef struct op_wait {
  int n;
  int status;
} op_wait_t;
static void op_cb(presence_t *p, int status, void *ud) {
  (void)p;
  op_wait_t *w = ud;
  w->n++;
  w->status = status;
}
static bool op_pred(void *ud) { return ((op_wait_t *)ud)->n > 0; }

/* Random sessions, joins, updates, leaves, status changes, removals and
 * ends, applied to the Redis store and to the embedded one in lockstep
 * (each write awaited): the same answers and the same channel events, in
 * the same order, with the same versions, counts and data; the same
 * members at the end. The embedded store is itself checked against a
 * model (unit/test_property_channels). */
static void random_ops_match_the_embedded_store(void **state) {
  (void)state;
  fx_t *f = fx_make(1, NULL);
  inst_t *a = &f->in[0];
  presence_t *mem;
  presence_options_t o;
  presence_options_init(&o);
  o.instance_id = "alpha";
  assert_int_equal(presence_new(&o, &mem), 0);
  static cevs_t er, em;
  memset(&er, 0, sizeof er);
  memset(&em, 0, sizeof em);
  presence_on_event(a->p, cev_cb, &er);
  presence_on_event(mem, cev_cb, &em);
  enum { NS = 24, NU = 8, NC = 3 };
  int connected[NS] = {0};
  static const char *datas[] = {NULL, "{\"a\":1}", "{\"a\":2}"};
  uint64_t rng = 0x2545f4914f6cdd1dull;
  size_t total = 0;
  for (int step = 0; step < 1500; step++) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    uint32_t r = (uint32_t)((rng * 0x2545f4914f6cdd1dull) >> 32);
    int si = (int)(r % NS), ci = (int)((r >> 8) % NC), di = (int)((r >> 12) % 3);
    char sid[16], uid[16], ch[16];
    snprintf(sid, sizeof sid, "s%d", si);
    snprintf(uid, sizeof uid, "u%d", si % NU);
    snprintf(ch, sizeof ch, "c%d", ci);
    uint32_t kind = (r >> 16) % 100;
    int rm, rr;
    op_wait_t w = {0, 0};
    if (!connected[si]) {
      rm = presence_session_connect(mem, sid, uid, NULL, NULL, NULL);
      rr = presence_session_connect(a->p, sid, uid, NULL, op_cb, &w);
      connected[si] = 1;
    } else if (kind < 40) {
      rm = presence_channel_join(mem, sid, ch, datas[di], NULL, NULL);
      rr = presence_channel_join(a->p, sid, ch, datas[di], op_cb, &w);
    } else if (kind < 55) {
      rm = presence_channel_update(mem, sid, ch, datas[di], NULL, NULL);
      rr = presence_channel_update(a->p, sid, ch, datas[di], op_cb, &w);
    } else if (kind < 75) {
      rm = presence_channel_leave(mem, sid, ch, NULL, NULL);
      rr = presence_channel_leave(a->p, sid, ch, op_cb, &w);
    } else if (kind < 88) {
      presence_status_t st = (r >> 24) & 1 ? PRESENCE_IDLE : PRESENCE_ONLINE;
      rm = presence_session_set_status(mem, sid, st, NULL, NULL);
      rr = presence_session_set_status(a->p, sid, st, op_cb, &w);
    } else if (kind < 92) {
      rm = presence_channel_remove_user(mem, ch, uid, NULL, NULL);
      rr = presence_channel_remove_user(a->p, ch, uid, op_cb, &w);
    } else {
      presence_reason_t why =
          kind < 97 ? PRESENCE_REASON_DISCONNECT : PRESENCE_REASON_KICKED;
      rm = presence_session_end(mem, sid, why, NULL, NULL);
      rr = presence_session_end(a->p, sid, why, op_cb, &w);
      connected[si] = 0;
    }
    /* Refused at once by one (a check done locally), or answered later. */
    if (rr == 0) {
      assert_true(run_until(&f->loop, op_pred, &w, 5000));
      rr = w.status;
    }
    if (rm != rr)
      fail_msg("step %d (op %u on %s %s %s): embedded %s, redis %s", step,
               kind, sid, uid, ch, presence_err_name(rm), presence_err_name(rr));
    if (er.n != em.n)
      fail_msg("step %d: %zu channel events on redis, %zu embedded", step,
               er.n, em.n);
    for (size_t i = 0; i < er.n; i++) {
      const cev_t *x = &er.v[i], *y = &em.v[i];
      if (x->type != y->type || x->from != y->from || x->to != y->to ||
          x->version != y->version ||
          (test_shards() == 1 && x->count != y->count) ||
          strcmp(x->key, y->key))
        fail_msg("step %d, event %zu: redis %s %s %d->%d v%llu n%llu, embedded "
                 "%s %s %d->%d v%llu n%llu",
                 step, i, presence_event_type_name(x->type), x->key, x->from,
                 x->to, (unsigned long long)x->version,
                 (unsigned long long)x->count,
                 presence_event_type_name(y->type), y->key, y->from, y->to,
                 (unsigned long long)y->version, (unsigned long long)y->count);
    }
    total += er.n;
    er.n = em.n = 0;
  }
  print_message("%zu channel events compared\n", total);
  assert_true(total > 300); /* the run did exercise members */
  for (int c = 0; c < NC; c++) {
    char ch[16];
    snprintf(ch, sizeof ch, "c%d", c);
    mq_t q = members(f, 0, ch, NULL, 64);
    assert_int_equal((int)q.count, presence_channel_count(mem, ch));
    for (size_t i = 0; i < q.n; i++) {
      presence_member_info_t mi;
      assert_int_equal(presence_member_get(mem, ch, q.users[i], &mi), 0);
      assert_string_equal(q.data[i], mi.data ? mi.data : "");
      assert_int_equal(q.metas[i], mi.n_metas);
    }
  }
  presence_free(mem);
  fx_destroy(f);
}

/* ---- a channel's count across shards -------------------------------------- */

/* users[0..n): ids made from prefix whose shard is (want) or is not (!want)
 * shard sh, so a test can place members. */
static void users_in(const char *prefix, uint32_t sh, bool want, int n,
                     char users[][16]) {
  for (int k = 0, made = 0; made < n; k++) {
    char u[16];
    snprintf(u, sizeof u, "%s%d", prefix, k);
    uint32_t at = presence__redis_user_shard(u, strlen(u), test_shards());
    if ((at == sh) == want || test_shards() == 1) memcpy(users[made++], u, 16);
  }
}

/* The channel events of ch in r: their count, the number, the last. */
typedef struct counts_seen {
  size_t n;
  uint64_t last;
  bool grew; /* every count at least the one before and the joins so far */
} counts_seen_t;

static counts_seen_t counts_of(const recorder_t *r, const char *ch) {
  counts_seen_t c = {0, 0, true};
  for (size_t i = 0; i < r->n; i++) {
    const rec_ev_t *e = &r->ev[i];
    if (e->type != PRESENCE_EV_CHANNEL_JOIN || strcmp(e->channel, ch)) continue;
    c.n++;
    if (e->count < c.last || e->count < c.n) c.grew = false;
    c.last = e->count;
  }
  return c;
}

typedef struct joins_wait {
  const recorder_t *r;
  const char *ch;
  size_t n;
} joins_wait_t;
static bool joins_seen(void *ud) {
  joins_wait_t *w = ud;
  return counts_of(w->r, w->ch).n >= w->n;
}

/* w->ch names a user here: its channel.join is in w->r. */
static bool user_joined(void *ud) {
  joins_wait_t *w = ud;
  for (size_t i = 0; i < w->r->n; i++)
    if (w->r->ev[i].type == PRESENCE_EV_CHANNEL_JOIN &&
        !strcmp(w->r->ev[i].user, w->ch))
      return true;
  return false;
}

static bool stores_ready(void *ud) {
  fx_t *f = ud;
  return presence_redis_ready(f->in[0].store) != 0;
}

/* A channel tracked on an instance (presence_redis_channel_track, as
 * presenced does for the channels its clients joined or observe): each of
 * its events carries the channel's count over every shard, not its
 * shard's, in the instance's own events and in its cluster view; and after
 * a store loss that took another instance's members with it (that instance
 * died at the same moment: nobody re-asserts them, no event says they
 * went), the next event's count is what the store holds, not what it held.
 * beta's members all live in one shard where alpha has none (so none of
 * alpha's re-asserts touches that shard's count). */
static void channel_count_across_shards(void **state) {
  (void)state;
  fx_t *f = fx_make(2, NULL);
  inst_t *a = &f->in[0], *b = &f->in[1];
  const char *ch = "hall";
  assert_int_equal(presence_redis_channel_track(a->store, ch, 1), 0);
  assert_int_equal(presence_redis_channel_track(a->store, "", 1),
                   test_shards() > 1 ? PRESENCE_ECHANNEL : 0);
  char bu[4][16], au[4][16];
  users_in("bu", 0, true, 4, bu);
  users_in("au", 0, false, 4, au);
  int ta = 0, tb = 0;
  char sid[32];
  for (int k = 0; k < 4; k++) {
    snprintf(sid, sizeof sid, "b-%d", k);
    presence_session_connect(b->p, sid, bu[k], NULL, done_cb, b);
    presence_channel_join(b->p, sid, ch, NULL, done_cb, b);
    tb += 2;
  }
  for (int k = 0; k < 3; k++) {
    snprintf(sid, sizeof sid, "a-%d", k);
    presence_session_connect(a->p, sid, au[k], NULL, done_cb, a);
    presence_channel_join(a->p, sid, ch, NULL, done_cb, a);
    ta += 2;
  }
  wait_done(&f->loop, a, ta);
  wait_done(&f->loop, b, tb);
  assert_no_errors(a);
  assert_no_errors(b);
  joins_wait_t w = {&a->cluster, ch, 7};
  assert_true(run_until(&f->loop, joins_seen, &w, 5000));
  counts_seen_t cs = counts_of(&a->cluster, ch);
  assert_int_equal(cs.n, 7);
  assert_true(cs.grew);
  assert_int_equal(cs.last, 7);
  /* Its own events (presence_on_event) too. */
  cs = counts_of(&a->local, ch);
  assert_int_equal(cs.n, 3);
  assert_true(cs.grew);
  /* beta dies with the data. */
  presence_redis_debug_pause(b->store, 1);
  freeReplyObject(srv_cmd(&f->srv, "FLUSHALL"));
  member_wait_t mw = {f, ch, 3};
  assert_true(run_until(&f->loop, count_is, &mw, 8000));
  assert_true(run_until(&f->loop, stores_ready, f, 8000));
  run_for(&f->loop, 600); /* every shard registered again, counts asked */
  snprintf(sid, sizeof sid, "a-%d", 3);
  presence_session_connect(a->p, sid, au[3], NULL, done_cb, a);
  presence_channel_join(a->p, sid, ch, NULL, done_cb, a);
  ta += 2;
  wait_done(&f->loop, a, ta);
  assert_no_errors(a);
  /* au[3]'s join, in both views: 4 members (beta's 4 are gone). */
  joins_wait_t w2 = {&a->cluster, au[3], 0};
  assert_true(run_until(&f->loop, user_joined, &w2, 5000));
  const recorder_t *views[] = {&a->local, &a->cluster};
  for (int v = 0; v < 2; v++) {
    const rec_ev_t *last = NULL;
    for (size_t i = 0; i < views[v]->n; i++)
      if (views[v]->ev[i].type == PRESENCE_EV_CHANNEL_JOIN &&
          !strcmp(views[v]->ev[i].user, au[3]))
        last = &views[v]->ev[i];
    assert_non_null(last);
    assert_int_equal(last->count, 4);
  }
  assert_int_equal(presence_redis_channel_track(a->store, ch, -1), 0);
  fx_destroy(f);
}

/* How many member zsets (cm:{c:ch}) channel ch has over the shards, and
 * its count (field 'n' of its hash) summed over them. */
static int member_zsets(server_t *srv, const char *ch, uint64_t *count) {
  int z = 0;
  *count = 0;
  for (uint32_t sh = 0; sh < test_shards(); sh++) {
    char pfx[64];
    shard_prefix(sh, pfx, sizeof pfx);
    redisReply *r = srv_cmd(srv, "EXISTS %scm:{c:%s}", pfx, ch);
    z += (int)r->integer;
    freeReplyObject(r);
    r = srv_cmd(srv, "HGET %sc:{c:%s} n", pfx, ch);
    if (r->type == REDIS_REPLY_STRING) *count += strtoull(r->str, NULL, 10);
    freeReplyObject(r);
  }
  return z;
}

/* Every member of ch, paged `page` at a time: in byte order (strcmp),
 * none twice, `want` of them, the count on every page. */
static void assert_listing(fx_t *f, const char *ch, size_t page,
                           size_t want) {
  char last[32] = "";
  size_t got = 0;
  for (;;) {
    mq_t q = members(f, 0, ch, got ? last : NULL, page);
    assert_int_equal(q.count, want);
    for (size_t i = 0; i < q.n; i++) {
      if (got) assert_true(strcmp(last, q.users[i]) < 0);
      snprintf(last, sizeof last, "%s", q.users[i]);
      got++;
    }
    if (!q.has_next) break;
    assert_int_equal(q.n, page);
  }
  assert_int_equal(got, want);
}

/* A small channel keeps its members in its hash alone, listed in byte
 * order (ids that a locale would sort otherwise: '-', upper case, '_');
 * past 32 members a shard keeps them in a zset too, dropped again below
 * 16. Listings page the same way in both, the count stays right. */
static void a_channel_lists_in_byte_order_small_or_big(void **state) {
  (void)state;
  fx_t *f = fx_make(1, NULL);
  inst_t *a = &f->in[0];
  const char *ch = "grows";
  /* Enough that each of 3 shards passes 32. */
  enum { N = 140, KEEP = 10 };
  static const char first[] = "aB_Z-b";
  int t = 0;
  char sid[32], user[32];
  for (int i = 0; i < N; i++) {
    snprintf(sid, sizeof sid, "g%d", i);
    snprintf(user, sizeof user, "%c%03d", first[i % 6], i);
    presence_session_connect(a->p, sid, user, NULL, done_cb, a);
    presence_channel_join(a->p, sid, ch, i % 2 ? "{\"d\":1}" : NULL, done_cb,
                          a);
    t += 2;
    if (i + 1 == KEEP) {
      wait_done(&f->loop, a, t);
      assert_no_errors(a);
      uint64_t n;
      assert_int_equal(member_zsets(&f->srv, ch, &n), 0);
      assert_int_equal(n, KEEP);
      assert_listing(f, ch, 3, KEEP);
    }
  }
  wait_done(&f->loop, a, t);
  assert_no_errors(a);
  uint64_t n;
  assert_int_equal(member_zsets(&f->srv, ch, &n), (int)test_shards());
  assert_int_equal(n, N);
  assert_listing(f, ch, 7, N);
  assert_listing(f, ch, 64, N);
  /* All but KEEP go, the first ones joined (mixed through the order). */
  for (int i = 0; i < N - KEEP; i++) {
    snprintf(sid, sizeof sid, "g%d", i);
    presence_session_disconnect(a->p, sid, done_cb, a);
    t++;
  }
  wait_done(&f->loop, a, t);
  assert_no_errors(a);
  assert_int_equal(member_zsets(&f->srv, ch, &n), 0);
  assert_int_equal(n, KEEP);
  assert_listing(f, ch, 4, KEEP);
  /* The last ones go: nothing of the channel is left. */
  for (int i = N - KEEP; i < N; i++) {
    snprintf(sid, sizeof sid, "g%d", i);
    presence_session_disconnect(a->p, sid, done_cb, a);
    t++;
  }
  wait_done(&f->loop, a, t);
  assert_no_errors(a);
  redisReply *keys = srv_cmd(&f->srv, "KEYS *{c:%s}*", ch);
  assert_int_equal(keys->elements, 0);
  freeReplyObject(keys);
  fx_destroy(f);
}

int main(void) {
  apply_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(members_and_data),
      cmocka_unit_test(a_member_of_many_sessions_lists_them_all),
      cmocka_unit_test(queries_in_flight_share_a_call),
      cmocka_unit_test(fifty_sessions_three_instances_once),
      cmocka_unit_test(dead_instance_members_leave_once),
      cmocka_unit_test(store_loss_reasserts_memberships),
      cmocka_unit_test(channel_grace_on_redis),
      cmocka_unit_test(an_ended_session_leaves_nothing_of_its_channels),
      cmocka_unit_test(random_ops_match_the_embedded_store),
      cmocka_unit_test(channel_count_across_shards),
      cmocka_unit_test(a_channel_lists_in_byte_order_small_or_big),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
