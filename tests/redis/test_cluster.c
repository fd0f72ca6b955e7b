/* SPDX-License-Identifier: MIT */
/*
 * Several presence_t instances on one loop sharing one redis-server:
 * exactly-once user transitions under races, reaping of a dead instance
 * (with a SLOWLOG check that no Redis call took over 10 ms), fencing, store
 * loss (FLUSHALL and a restart) and the command watchdog (SIGSTOP).
 */
#include <inttypes.h>

#include "harness.h"
#include "store/redis_decode.h"

static void wait_all(fx_t *f, const int *target) {
  for (int i = 0; i < f->n; i++)
    if (f->in[i].p) wait_done(&f->loop, &f->in[i], target[i]);
}

/* ---- the stream, replayed ---------------------------------------------- */

typedef struct replay {
  size_t events;
  size_t user_events;
  size_t cleanups;
  uint64_t last_seq;
} replay_t;

/* Read the whole log and check, per user, that user events chain (each
 * from == the previous to, versions +1, never from == to) and that
 * sequence numbers strictly increase. Returns counts. */
static replay_t replay_check(server_t *s, const char *only_user,
                             presence_status_t *final) {
  replay_t rp = {0};
  presence_status_t cur = PRESENCE_OFFLINE;
  uint64_t ver = 0;
  bool have_ver = false;
  /* Decoded by the store's own decoder (each entry holds the events of
   * one script call), shard after shard: a user's events are all in its
   * shard's log, numbered by that shard's sequence. */
  presence__redis_events_t evs = {0};
  size_t *starts = calloc(test_shards() + 1, sizeof *starts);
  /* The events point into the replies: kept until the end. */
  redisReply **reps = calloc(test_shards(), sizeof *reps);
  for (uint32_t sh = 0; sh < test_shards(); sh++) {
    char pfx[64];
    shard_prefix(sh, pfx, sizeof pfx);
    redisReply *r = srv_cmd(s, "XRANGE %slog - +", pfx);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < r->elements; i++)
      assert_int_equal(
          presence__redis_decode_entry(r->element[i], "replay", &evs), 0);
    starts[sh + 1] = evs.n;
    reps[sh] = r;
  }
  uint32_t sh = 0;
  for (size_t i = 0; i < evs.n; i++) {
    const presence_event_t *ev = &evs.ev[i];
    while (i == starts[sh + 1]) {
      sh++;
      rp.last_seq = 0;
    }
    assert_true(ev->seq > rp.last_seq);
    rp.last_seq = ev->seq;
    rp.events++;
    if (ev->type == PRESENCE_EV_CLEANUP) rp.cleanups++;
    if (ev->type < PRESENCE_EV_USER_ONLINE ||
        ev->type > PRESENCE_EV_USER_OFFLINE)
      continue;
    rp.user_events++;
    if (!only_user || !ev->user_id || strcmp(ev->user_id, only_user)) continue;
    if (getenv("REPLAY_DEBUG"))
      fprintf(stderr, "seq %llu type %d %d->%d v%llu inst %s reason %d\n",
              (unsigned long long)ev->seq, ev->type, ev->from, ev->to,
              (unsigned long long)ev->user_version, ev->instance_id, ev->reason);
    assert_int_equal(ev->from, cur);
    assert_int_not_equal(ev->from, ev->to);
    if (have_ver) assert_int_equal(ev->user_version, ver + 1);
    ver = ev->user_version;
    have_ver = true;
    cur = ev->to;
  }
  presence__redis_events_free(&evs);
  free(starts);
  for (uint32_t k = 0; k < test_shards(); k++) freeReplyObject(reps[k]);
  free(reps);
  if (final) *final = cur;
  return rp;
}

static size_t local_user_events(fx_t *f) {
  size_t n = 0;
  for (int i = 0; i < f->n; i++) {
    if (!f->in[i].p) continue;
    recorder_t *r = &f->in[i].local;
    for (size_t k = 0; k < r->n; k++)
      n += r->ev[k].type >= PRESENCE_EV_USER_ONLINE &&
           r->ev[k].type <= PRESENCE_EV_USER_OFFLINE;
  }
  return n;
}

/* ---- tests --------------------------------------------------------------- */

/* 100 connects and disconnects of one user spread over three instances,
 * all in flight at once: the log holds a clean chain of user transitions,
 * each emitted by exactly one instance, and the end state is right. */
static void racing_instances_emit_each_transition_once(void **state) {
  (void)state;
  fx_t *f = fx_make(3, NULL);
  int target[3] = {0};
  srand(42);
  char sid[64];
  int open[3][40] = {{0}};
  for (int round = 0; round < 100; round++) {
    int i = rand() % 3, k = rand() % 40;
    snprintf(sid, sizeof sid, "%s-%d", f->in[i].id, k);
    int rc;
    if (open[i][k]) {
      rc = presence_session_disconnect(f->in[i].p, sid, done_cb, &f->in[i]);
      open[i][k] = 0;
    } else {
      rc = presence_session_connect(f->in[i].p, sid, "racer", NULL, done_cb,
                                    &f->in[i]);
      open[i][k] = 1;
    }
    assert_int_equal(rc, 0);
    target[i]++;
    /* Let the instances interleave now and then. */
    if (round % 7 == 0) uv_run(&f->loop, UV_RUN_NOWAIT);
  }
  wait_all(f, target);
  int live = 0;
  for (int i = 0; i < 3; i++)
    for (int k = 0; k < 40; k++)
      live += open[i][k];
  presence_status_t final;
  replay_t rp = replay_check(&f->srv, "racer", &final);
  assert_int_equal(final, live ? PRESENCE_ONLINE : PRESENCE_OFFLINE);
  assert_int_equal(rp.user_events, local_user_events(f));
  presence_user_info_t u = user_info(&f->loop, &f->in[1], "racer");
  assert_int_equal(u.session_count, live);
  /* Each instance counts its own sessions; the cluster's figures, as of a
   * heartbeat (200 ms here) later, are the same on every instance. */
  run_for(&f->loop, 450);
  for (int i = 0; i < 3; i++) {
    presence_redis_cluster_stats_t cs;
    assert_int_equal(presence_redis_cluster_stats(f->in[i].store, &cs), 0);
    assert_true(cs.sampled_mono_ms > 0);
    assert_int_equal(cs.sessions, (uint64_t)live);
    assert_int_equal(cs.users_present, live ? 1 : 0);
    assert_int_equal(cs.instances, 3);
  }
  /* End every session: the user goes offline exactly once more. */
  for (int i = 0; i < 3; i++)
    for (int k = 0; k < 40; k++)
      if (open[i][k]) {
        snprintf(sid, sizeof sid, "%s-%d", f->in[i].id, k);
        assert_int_equal(
            presence_session_disconnect(f->in[i].p, sid, done_cb, &f->in[i]),
            0);
        target[i]++;
      }
  wait_all(f, target);
  rp = replay_check(&f->srv, "racer", &final);
  assert_int_equal(final, PRESENCE_OFFLINE);
  assert_int_equal(rp.user_events, local_user_events(f));
  for (int i = 0; i < 3; i++)
    assert_no_errors(&f->in[i]);
  /* Every instance saw every event of the cluster, in order. */
  run_for(&f->loop, 500);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(f->in[i].cluster.n, rp.events);
    size_t remote = 0;
    for (size_t k = 0; k < f->in[i].cluster.n; k++)
      remote += (f->in[i].cluster.ev[k].flags & PRESENCE_EVENT_REMOTE) != 0;
    assert_int_equal(remote, rp.events - f->in[i].local.n);
  }
  fx_destroy(f);
}

typedef struct cleanup_wait {
  inst_t *in;
  size_t n;
} cleanup_wait_t;
static bool cleanup_pred(void *ud) {
  cleanup_wait_t *w = ud;
  return rec_count(&w->in->local, PRESENCE_EV_CLEANUP) >= w->n;
}

/* A dead instance with 20,000 sessions is claimed and reaped by one of the
 * live ones, in batches: every session gets session.disconnected
 * (instance_lost), users with a session elsewhere stay online, one cleanup
 * carries the dead instance's id and session ids, and no Redis command took
 * more than 10 ms. One run of it: false when the SLOWLOG bound was missed
 * and `last` is false (the caller measures again); asserted when true. */
static bool reap_once(bool last) {
  /* A lease long enough for a sanitizer build to push 20,000 connects
   * through one instance without starving anyone's heartbeat. */
  inst_opts_t io = {.heartbeat_ms = 500, .lease_ms = 2500};
  fx_t *f = fx_make(3, &io);
  enum { N = 20000 };
  int target[3] = {0};
  char sid[48], user[32];
  for (int k = 0; k < N; k++) {
    /* Half of them UUIDs, which the store keeps in 20 bytes: they come
     * back as text in the events and the cleanup's list. */
    if (k % 2)
      snprintf(sid, sizeof sid, "b-%d", k);
    else
      snprintf(sid, sizeof sid, "%08x-0b0b-4b0b-8b0b-%012x", (unsigned)k,
               (unsigned)k * 7u);
    snprintf(user, sizeof user, "user-%d", k / 2);
    assert_int_equal(presence_session_connect(f->in[1].p, sid, user, NULL,
                                              done_cb, &f->in[1]),
                     0);
    target[1]++;
    /* Keep the loop turning: a host that stalls past its lease is (rightly)
     * fenced. */
    if (k % 500 == 499) uv_run(&f->loop, UV_RUN_NOWAIT);
  }
  /* user-0 also has a session on gamma: it stays online. */
  assert_int_equal(presence_session_connect(f->in[2].p, "g-0", "user-0", NULL,
                                            done_cb, &f->in[2]),
                   0);
  target[2]++;
  int64_t tc = now_ms();
  wait_all(f, target);
  print_message("%d connects through one instance: %lld ms\n", N,
                (long long)(now_ms() - tc));
  assert_no_errors(&f->in[1]);
  /* Every command over 1 ms is logged: the reap calls' own durations. */
  freeReplyObject(srv_cmd(&f->srv, "CONFIG SET slowlog-log-slower-than 1000"));
  freeReplyObject(srv_cmd(&f->srv, "CONFIG SET slowlog-max-len 100000"));
  freeReplyObject(srv_cmd(&f->srv, "SLOWLOG RESET"));
  /* beta dies without a word. */
  inst_free(&f->in[1]);
  int64_t t0 = now_ms();
  cleanup_wait_t w0 = {&f->in[0], 1}, w2 = {&f->in[2], 1};
  /* Sharded, each shard reaps on its own: one cleanup per shard. */
  size_t shards = test_shards();
  bool got = false;
  int64_t end = t0 + 30000;
  while (!got && now_ms() < end) {
    run_for(&f->loop, 10);
    got = rec_count(&f->in[0].local, PRESENCE_EV_CLEANUP) +
              rec_count(&f->in[2].local, PRESENCE_EV_CLEANUP) >=
          shards;
  }
  assert_true(got);
  int64_t took = now_ms() - t0;
  inst_t *reaper = cleanup_pred(&w0) ? &f->in[0] : &f->in[2];
  inst_t *other = reaper == &f->in[0] ? &f->in[2] : &f->in[0];
  if (shards == 1)
    assert_int_equal(rec_count(&other->local, PRESENCE_EV_CLEANUP), 0);
  (void)w2;
  /* A slow host (a sanitizer build under load) may let the first claim run
   * out mid-way, and the other instance take over: between them, every
   * session goes exactly once, and the one cleanup lists them all. */
  assert_int_equal(
      rec_count(&reaper->local, PRESENCE_EV_SESSION_DISCONNECTED) +
          rec_count(&other->local, PRESENCE_EV_SESSION_DISCONNECTED),
      N);
  assert_int_equal(rec_count(&reaper->local, PRESENCE_EV_USER_OFFLINE) +
                       rec_count(&other->local, PRESENCE_EV_USER_OFFLINE),
                   N / 2 - 1);
  size_t uuids = 0;
  for (int i = 0; i < 3; i += 2)
    for (size_t k = 0; k < f->in[i].local.n; k++) {
      const rec_ev_t *e = &f->in[i].local.ev[k];
      if (e->type == PRESENCE_EV_SESSION_DISCONNECTED &&
          strlen(e->session) == 36 &&
          memcmp(e->session + 8, "-0b0b-4b0b-8b0b-", 16) == 0)
        uuids++;
    }
  assert_int_equal(uuids, N / 2);
  if (shards == 1) {
    rec_ev_t *c = &reaper->local.ev[reaper->local.n - 1];
    assert_int_equal(c->type, PRESENCE_EV_CLEANUP);
    assert_string_equal(c->instance, "beta");
    assert_int_equal(c->n_ids, N);
  } else {
    /* Between them, the shards' cleanups list every session once. */
    size_t ids = 0;
    for (int i = 0; i < 3; i += 2)
      for (size_t k = 0; k < f->in[i].local.n; k++)
        if (f->in[i].local.ev[k].type == PRESENCE_EV_CLEANUP) {
          assert_string_equal(f->in[i].local.ev[k].instance, "beta");
          ids += f->in[i].local.ev[k].n_ids;
        }
    assert_int_equal(ids, N);
  }
  presence_user_info_t u = user_info(&f->loop, &f->in[0], "user-0");
  assert_int_equal(u.status, PRESENCE_ONLINE);
  u = user_info(&f->loop, &f->in[0], "user-1");
  assert_int_equal(u.status, PRESENCE_OFFLINE);
  redisReply *sl = srv_cmd(&f->srv, "SLOWLOG GET 100000");
  long long worst = 0;
  size_t over = 0, nreap = 0;
  long long *reap_us = calloc(sl->elements + 1, sizeof(long long));
  for (size_t i = 0; i < sl->elements; i++) {
    redisReply *e = sl->element[i];
    long long us = e->element[2]->integer;
    redisReply *args = e->element[3];
    const char *op = script_op(args);
    if (!strcmp(op, "reap")) reap_us[nreap++] = us;
    if (us > worst) worst = us;
    if (us > 10000) {
      over++;
      print_message("slow: %lld us %s %s\n", us,
                    args->elements > 0 ? args->element[0]->str : "", op);
    }
  }
  /* The median reap call, by insertion into a sorted prefix (a few
   * hundred calls). */
  for (size_t i = 1; i < nreap; i++)
    for (size_t j = i; j > 0 && reap_us[j - 1] > reap_us[j]; j--) {
      long long t = reap_us[j];
      reap_us[j] = reap_us[j - 1];
      reap_us[j - 1] = t;
    }
  long long median = nreap ? reap_us[nreap / 2] : 0;
  free(reap_us);
  print_message("reaped %d sessions: cleanup %lld ms after death (lease 2500 "
                "ms); %zu reap calls over 1 ms, median %lld us; %zu commands "
                "over 10 ms, worst %lld us\n",
                N, (long long)took, nreap, median, over, worst);
  /* SLOWLOG measures wall time, so a command during which the VM was not
   * scheduled counts the stall too: this machine showed one reap call of
   * 21 ms among hundreds of ~2 ms ones, at load 1.7, once in several runs,
   * and once a plain HMGET of 18 ms beside a reap call of 19 ms. Batches
   * that are too big show in every call: the median stays under half the
   * 10 ms allowed, and at most one isolated command goes over it. A miss is
   * measured again from scratch: a stall seldom strikes twice, a batch too
   * big always does. On a host busier than its CPU count, report only. */
  double load = 0;
  FILE *la = fopen("/proc/loadavg", "r");
  if (la) {
    if (fscanf(la, "%lf", &load) != 1) load = 0;
    fclose(la);
  }
  bool ok = true;
  if (load < (double)sysconf(_SC_NPROCESSORS_ONLN)) {
    ok = median < 5000 && over <= 1;
    if (last) {
      assert_true(median < 5000);
      assert_true(over <= 1);
    }
  } else {
    print_message("host overloaded (load %.1f): SLOWLOG not asserted\n", load);
  }
  freeReplyObject(sl);
  presence_status_t final;
  replay_check(&f->srv, NULL, &final);
  fx_destroy(f);
  return ok;
}

static void dead_instance_is_reaped_in_bounded_batches(void **state) {
  (void)state;
  if (!reap_once(false)) {
    print_message("SLOWLOG over the bound: measured again\n");
    reap_once(true);
  }
}

/* An instance that stalls past its lease is reaped; its next write is
 * refused (EFENCED); it registers a new epoch and re-asserts its live
 * sessions, so the final state equals the live sessions. */
static void stalled_instance_is_fenced_and_reasserts(void **state) {
  (void)state;
  fx_t *f = fx_make(2, NULL);
  int target[2] = {0};
  assert_int_equal(presence_session_connect(f->in[1].p, "b1", "bob", NULL,
                                            done_cb, &f->in[1]),
                   0);
  assert_int_equal(presence_session_connect(f->in[1].p, "b2", "bea", NULL,
                                            done_cb, &f->in[1]),
                   0);
  target[1] = 2;
  wait_all(f, target);
  uint64_t epoch1 = presence_redis_epoch(f->in[1].store);
  presence_redis_debug_pause(f->in[1].store, 1);
  cleanup_wait_t w = {&f->in[0], 1};
  assert_true(run_until(&f->loop, cleanup_pred, &w, 10000));
  assert_int_equal(user_info(&f->loop, &f->in[0], "bob").status,
                   PRESENCE_OFFLINE);
  /* beta wakes up: bea left meanwhile, carl arrives; the write is fenced. */
  assert_int_equal(
      presence_session_disconnect(f->in[1].p, "b2", done_cb, &f->in[1]), 0);
  assert_int_equal(presence_session_connect(f->in[1].p, "b3", "carl", NULL,
                                            done_cb, &f->in[1]),
                   0);
  target[1] += 2;
  presence_redis_debug_pause(f->in[1].store, 0);
  wait_all(f, target);
  assert_true(f->in[1].done_err[-PRESENCE_EFENCED] >= 1);
  wait_ready(&f->loop, &f->in[1]);
  assert_true(presence_redis_epoch(f->in[1].store) > epoch1);
  assert_int_equal(user_info(&f->loop, &f->in[0], "bob").status,
                   PRESENCE_ONLINE);
  assert_int_equal(user_info(&f->loop, &f->in[0], "carl").status,
                   PRESENCE_ONLINE);
  assert_int_equal(user_info(&f->loop, &f->in[0], "bea").status,
                   PRESENCE_OFFLINE);
  /* The re-assert is reason resync. */
  size_t resync = 0;
  for (size_t k = 0; k < f->in[1].local.n; k++)
    resync += f->in[1].local.ev[k].reason == PRESENCE_REASON_RESYNC;
  assert_true(resync >= 2);
  presence_status_t final;
  replay_check(&f->srv, "bob", &final);
  assert_int_equal(final, PRESENCE_ONLINE);
  fx_destroy(f);
}

typedef struct online_wait {
  fx_t *f;
  const char *users[4];
} online_wait_t;
static bool all_online(void *ud) {
  online_wait_t *w = ud;
  for (int i = 0; w->users[i]; i++) {
    /* The user record, field "" of the user's hash: binary, its first
     * byte the reported status (1 online). */
    char pfx[64];
    user_prefix(w->users[i], pfx, sizeof pfx);
    redisReply *r = srv_cmd(&w->f->srv, "HGET %su:{u:%s} %b", pfx,
                            w->users[i], "", (size_t)0);
    bool on = r->type == REDIS_REPLY_STRING && r->len > 0 && r->str[0] == 1;
    freeReplyObject(r);
    if (!on) return false;
  }
  return true;
}

/* The instance has read a sequence number past `past`. Redis may show the
 * re-asserted users a moment before the instance has handled the reply that
 * carries the new numbers, so the check waits for it rather than asserting on
 * the first look. */
typedef struct seq_jump {
  presence_t *p;
  uint64_t past;
} seq_jump_t;

static bool seq_jumped(void *ud) {
  seq_jump_t *j = ud;
  return presence_log_last_seq(j->p) > j->past;
}

/* Redis loses everything (FLUSHALL, then a restart without data): every
 * instance notices and re-asserts within a couple of heartbeats; sequence
 * numbers keep growing. */
static void store_loss_is_rebuilt(void **state) {
  (void)state;
  fx_t *f = fx_make(2, NULL);
  int target[2] = {1, 1};
  presence_session_connect(f->in[0].p, "a1", "ann", NULL, done_cb, &f->in[0]);
  presence_session_connect(f->in[1].p, "b1", "ben", NULL, done_cb, &f->in[1]);
  wait_all(f, target);
  uint64_t seq0 = presence_log_last_seq(f->in[0].p);
  online_wait_t w = {f, {"ann", "ben", NULL}};
  freeReplyObject(srv_cmd(&f->srv, "FLUSHALL"));
  int64_t t0 = now_ms();
  assert_true(run_until(&f->loop, all_online, &w, 5000));
  print_message("FLUSHALL: rebuilt in %lld ms (heartbeat 200 ms)\n",
                (long long)(now_ms() - t0));
  assert_true(now_ms() - t0 < 1500);
  /* Numbers jump far ahead of every one handed out before the loss (an
   * instance may not have read the newest of those yet): a reader whose
   * cursor is from before is told it missed events, never given a number
   * twice. */
  if (test_shards() == 1) {
    /* (Sharded, every shard's sequence jumps alike, but the whole-log
     * reader with one number is not there: see docs/internals/redis.md.) */
    seq_jump_t jump = {f->in[0].p, seq0 + 1000000};
    assert_true(run_until(&f->loop, seq_jumped, &jump, 2000));
    page_t pg = read_page(&f->loop, f->in[1].p, seq0, 8);
    assert_int_equal(pg.status, PRESENCE_ECURSOR);
    assert_true(pg.n > 0 && pg.seq[0] > seq0 + 1000000);
  }
  /* A restart without data. */
  srv_stop(&f->srv);
  run_for(&f->loop, 300);
  srv_start(&f->srv);
  t0 = now_ms();
  assert_true(run_until(&f->loop, all_online, &w, 10000));
  print_message("restart: rebuilt in %lld ms\n", (long long)(now_ms() - t0));
  wait_ready(&f->loop, &f->in[0]);
  wait_ready(&f->loop, &f->in[1]);
  /* Business as usual afterwards. */
  target[0]++;
  presence_session_disconnect(f->in[0].p, "a1", done_cb, &f->in[0]);
  wait_all(f, target);
  assert_int_equal(user_info(&f->loop, &f->in[1], "ann").status,
                   PRESENCE_OFFLINE);
  fx_destroy(f);
}

/* Redis stops answering (SIGSTOP): commands fail with ETIMEDOUT; after
 * SIGCONT the instance reconnects and re-asserts what changed meanwhile. */
static void watchdog_times_out_then_recovers(void **state) {
  (void)state;
  inst_opts_t io = {.timeout_ms = 300, .heartbeat_ms = 1000, .lease_ms = 5000};
  fx_t *f = fx_make(1, &io);
  int target[1] = {1};
  presence_session_connect(f->in[0].p, "a1", "ann", NULL, done_cb, &f->in[0]);
  wait_all(f, target);
  kill(f->srv.pid, SIGSTOP);
  int64_t t0 = now_ms();
  presence_session_connect(f->in[0].p, "a2", "amy", NULL, done_cb, &f->in[0]);
  target[0]++;
  wait_all(f, target);
  int64_t took = now_ms() - t0;
  assert_int_equal(f->in[0].done_err[-PRESENCE_ETIMEDOUT], 1);
  assert_true(took >= 250 && took < 2000);
  run_for(&f->loop, 500);
  kill(f->srv.pid, SIGCONT);
  t0 = now_ms();
  wait_ready(&f->loop, &f->in[0]);
  online_wait_t w = {f, {"ann", "amy", NULL}};
  /* The reconnect waits out what is left of its backoff (doubled at each
   * attempt that timed out while Redis was stopped, 400 ms at most here),
   * then re-asserts: tens of ms on a quiet host. 5 s was once too short
   * for the ASan build in a full parallel `make test` (2026-12-07, not
   * reproduced in three parallel runs of this binary); the time is
   * printed, so a slow recovery shows, and 15 s still fails an instance
   * that never re-asserts. */
  assert_true(run_until(&f->loop, all_online, &w, 15000));
  print_message("recovered %lld ms after SIGCONT\n",
                (long long)(now_ms() - t0));
  target[0]++;
  presence_session_connect(f->in[0].p, "a3", "ann", NULL, done_cb, &f->in[0]);
  wait_all(f, target);
  /* The one timeout above, nothing else. */
  f->in[0].done_err[-PRESENCE_ETIMEDOUT]--;
  assert_no_errors(&f->in[0]);
  fx_destroy(f);
}

/* A clean exit: sessions end with reason shutdown at once, no lease wait. */
static void leave_ends_sessions_at_once(void **state) {
  (void)state;
  fx_t *f = fx_make(2, NULL);
  int target[2] = {0, 1};
  presence_session_connect(f->in[1].p, "b1", "ben", NULL, done_cb, &f->in[1]);
  wait_all(f, target);
  int left = 0;
  assert_int_equal(presence_redis_leave(f->in[1].store, NULL, NULL), 0);
  (void)left;
  run_for(&f->loop, 200);
  assert_int_equal(user_info(&f->loop, &f->in[0], "ben").status,
                   PRESENCE_OFFLINE);
  size_t shut = 0;
  for (size_t k = 0; k < f->in[1].local.n; k++)
    shut += f->in[1].local.ev[k].reason == PRESENCE_REASON_SHUTDOWN;
  assert_int_equal(shut, 2);
  for (uint32_t sh = 0; sh < test_shards(); sh++) {
    char pfx[64];
    shard_prefix(sh, pfx, sizeof pfx);
    redisReply *r = srv_cmd(&f->srv, "HEXISTS %sinst beta", pfx);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
  }
  fx_destroy(f);
}

typedef struct orphan_wait {
  fx_t *f;
  const char *sid;
} orphan_wait_t;

static bool orphan_gone(void *ud) {
  orphan_wait_t *w = ud;
  const recorder_t *r = &w->f->in[0].cluster;
  for (size_t k = 0; k < r->n; k++)
    if (r->ev[k].type == PRESENCE_EV_SESSION_DISCONNECTED &&
        !strcmp(r->ev[k].session, w->sid) &&
        r->ev[k].reason == PRESENCE_REASON_INSTANCE_LOST)
      return true;
  return false;
}

/* The orphan sweep (reconcile): a session whose owner has neither a lease
 * nor a reaper (its instance forgotten: here its inst and lease entries
 * deleted by hand, as a store rebuilt from parts might leave them) goes,
 * instance_lost, within a few periods, while the live instances' sessions
 * stay. The live owners' records are not read to decide it (every pass
 * read each entry's record: 60 HMGETs a pass here, two instances a
 * period), and one instance takes a shard's pass per period (its recon
 * key). */
static void reconcile_removes_orphans_only(void **state) {
  (void)state;
  inst_opts_t io = {.reconcile_ms = 200};
  fx_t *f = fx_make(3, &io);
  enum { N = 60 };
  for (int i = 0; i < N; i++) {
    char sid[32], uid[32];
    snprintf(sid, sizeof sid, "a%d", i);
    snprintf(uid, sizeof uid, "ua%d", i);
    assert_int_equal(presence_session_connect(f->in[0].p, sid, uid, NULL,
                                              done_cb, &f->in[0]),
                     0);
  }
  wait_done(&f->loop, &f->in[0], N);
  assert_int_equal(presence_session_connect(f->in[2].p, "orphan", "zed", NULL,
                                            done_cb, &f->in[2]),
                   0);
  wait_done(&f->loop, &f->in[2], 1);
  inst_free(&f->in[2]);
  loop_drain(&f->loop);
  for (uint32_t sh = 0; sh < test_shards(); sh++) {
    char pfx[64];
    shard_prefix(sh, pfx, sizeof pfx);
    freeReplyObject(srv_cmd(&f->srv, "HDEL %sinst gamma", pfx));
    freeReplyObject(srv_cmd(&f->srv, "ZREM %slease gamma", pfx));
  }
  orphan_wait_t w = {f, "orphan"};
  assert_true(run_until(&f->loop, orphan_gone, &w, 5000));
  run_for(&f->loop, 100);
  assert_int_equal(user_info(&f->loop, &f->in[0], "zed").status,
                   PRESENCE_OFFLINE);
  assert_int_equal(user_info(&f->loop, &f->in[1], "ua7").status,
                   PRESENCE_ONLINE);
  /* Five periods: the passes read no live owner's record. */
  long long h0 = cmd_calls(&f->srv, "hmget");
  run_for(&f->loop, 1000);
  long long h1 = cmd_calls(&f->srv, "hmget");
  assert_true(h1 - h0 < N);
  for (uint32_t sh = 0; sh < test_shards(); sh++) {
    char pfx[64];
    shard_prefix(sh, pfx, sizeof pfx);
    redisReply *r = srv_cmd(&f->srv, "GET %srecon", pfx);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_true(!strcmp(r->str, "alpha") || !strcmp(r->str, "beta"));
    freeReplyObject(r);
  }
  size_t lost = 0;
  for (size_t k = 0; k < f->in[0].cluster.n; k++)
    lost += f->in[0].cluster.ev[k].reason == PRESENCE_REASON_INSTANCE_LOST;
  assert_int_equal(lost, 2); /* the session and its user, nothing else */
  fx_destroy(f);
}

/* A user whose shard differs from `other`'s (any user with one shard). */
static void user_apart(const char *other, char *out, size_t n) {
  uint32_t s = test_shards();
  uint32_t at = presence__redis_user_shard(other, strlen(other), s);
  for (int k = 0;; k++) {
    snprintf(out, n, "apart-%d", k);
    if (s == 1 || presence__redis_user_shard(out, strlen(out), s) != at)
      return;
  }
}

typedef struct open_wait {
  bool got;
  int status;
} open_wait_t;
static void open_cb(presence_t *p, int status, void *ud) {
  (void)p;
  open_wait_t *w = ud;
  w->got = true;
  w->status = status;
}
static bool open_pred(void *ud) { return ((open_wait_t *)ud)->got; }

static int open_chosen(fx_t *f, int i, const char *sid, const char *user) {
  open_wait_t w = {0}, ws = {0};
  presence_handle_t h = PRESENCE_HANDLE_NONE;
  int rc = presence_session_open(f->in[i].p, sid, user, NULL, &h, open_cb, &w);
  if (rc) return rc;
  /* A write on the handle at once (a backend's idle open): it waits for
   * the open, then applies. Both answered before the caller reads the user
   * on another instance (which nothing orders after this one's writes). */
  assert_int_not_equal(h, PRESENCE_HANDLE_NONE);
  assert_int_equal(presence_handle_set_status(f->in[i].p, h, PRESENCE_IDLE,
                                              open_cb, &ws),
                   0);
  assert_true(run_until(&f->loop, open_pred, &w, 5000));
  assert_true(run_until(&f->loop, open_pred, &ws, 5000));
  return w.status;
}

static bool offline_pred(void *ud) {
  uq_t *q = ud;
  return q->got && q->info.status == PRESENCE_OFFLINE;
}

/* Session ids a caller chooses (presenced's backends) are unique in the
 * whole store, whichever shards their users live in: the same id opened for
 * a user of another shard, on another instance, is refused with EEXIST (no
 * event, no session); once the first session ends, the id is free; a
 * claim left by a dead instance does not block it. */
static void chosen_ids_unique_across_shards(void **state) {
  (void)state;
  inst_opts_t io = {.heartbeat_ms = 200, .lease_ms = 600};
  fx_t *f = fx_make(3, &io);
  const char *ua = "claim-ann";
  char ub[32];
  user_apart(ua, ub, sizeof ub);
  assert_int_equal(open_chosen(f, 0, "dup-1", ua), 0);
  assert_int_equal(user_info(&f->loop, &f->in[0], ua).status, PRESENCE_IDLE);
  size_t before = f->in[1].local.n;
  assert_int_equal(open_chosen(f, 1, "dup-1", ub), PRESENCE_EEXIST);
  assert_int_equal(f->in[1].local.n, before); /* no event */
  assert_int_equal(user_info(&f->loop, &f->in[1], ub).status,
                   PRESENCE_OFFLINE);
  /* Refused on the instance that holds it too (before any call). */
  assert_int_equal(presence_session_open(f->in[0].p, "dup-1", ub, NULL, NULL,
                                         NULL, NULL),
                   PRESENCE_EEXIST);
  /* ann's session ends: the id is free for bob. */
  open_wait_t w = {0};
  assert_int_equal(
      presence_session_disconnect(f->in[0].p, "dup-1", open_cb, &w), 0);
  assert_true(run_until(&f->loop, open_pred, &w, 5000));
  assert_int_equal(w.status, 0);
  run_for(&f->loop, 100); /* the claim's release */
  assert_int_equal(open_chosen(f, 1, "dup-1", ub), 0);
  assert_int_equal(user_info(&f->loop, &f->in[0], ub).status, PRESENCE_IDLE);
  /* beta dies holding it: once reaped, ann may have the id again (on
   * gamma), the dead instance's claim notwithstanding. */
  presence_redis_debug_pause(f->in[1].store, 1);
  uq_t q;
  bool off = false;
  for (int k = 0; k < 100 && !off; k++) {
    memset(&q, 0, sizeof q);
    assert_int_equal(presence_user_query(f->in[0].p, ub, uq_cb, &q), 0);
    assert_true(run_until(&f->loop, uq_pred, &q, 5000));
    off = offline_pred(&q);
    if (!off) run_for(&f->loop, 100);
  }
  assert_true(off);
  assert_int_equal(open_chosen(f, 2, "dup-1", ua), 0);
  fx_destroy(f);
}

/* Redis loses everything: the claims go with it, and each instance claims
 * its sessions' ids again once the id's shard has registered again, so
 * the same id for a user of another shard is still refused afterwards. */
static bool seq_back(void *ud) {
  fx_t *f = ud;
  return presence_redis_ready(f->in[0].store) &&
         presence_redis_ready(f->in[1].store);
}

static void chosen_ids_claimed_again_after_a_store_loss(void **state) {
  (void)state;
  fx_t *f = fx_make(2, NULL);
  const char *ua = "claim-ann";
  char ub[32];
  user_apart(ua, ub, sizeof ub);
  assert_int_equal(open_chosen(f, 0, "dup-2", ua), 0);
  freeReplyObject(srv_cmd(&f->srv, "FLUSHALL"));
  /* Both notice within a heartbeat and register again; alpha re-asserts
   * ann's session and claims its id again. */
  run_for(&f->loop, 800);
  assert_true(run_until(&f->loop, seq_back, f, 8000));
  run_for(&f->loop, 300);
  assert_int_equal(user_info(&f->loop, &f->in[1], ua).status, PRESENCE_IDLE);
  assert_int_equal(open_chosen(f, 1, "dup-2", ub), PRESENCE_EEXIST);
  assert_int_equal(user_info(&f->loop, &f->in[1], ub).status,
                   PRESENCE_OFFLINE);
  fx_destroy(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(racing_instances_emit_each_transition_once),
      cmocka_unit_test(dead_instance_is_reaped_in_bounded_batches),
      cmocka_unit_test(stalled_instance_is_fenced_and_reasserts),
      cmocka_unit_test(store_loss_is_rebuilt),
      cmocka_unit_test(watchdog_times_out_then_recovers),
      cmocka_unit_test(leave_ends_sessions_at_once),
      cmocka_unit_test(reconcile_removes_orphans_only),
      cmocka_unit_test(chosen_ids_unique_across_shards),
      cmocka_unit_test(chosen_ids_claimed_again_after_a_store_loss),
  };
  apply_filter();
  return cmocka_run_group_tests(tests, NULL, NULL);
}
