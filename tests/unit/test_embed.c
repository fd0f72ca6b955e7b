/* SPDX-License-Identifier: MIT */
/*
 * libpresence as an embedder uses it from the outside: only presence.h and
 * presence_store.h, no internal header. A store of one's own written from
 * what presence_store.h says (not from memory.c), and the promises the
 * headers make about ownership and arguments.
 */
#include "helpers.h"

#include "presence_store.h"

/* ---- a store of one's own ---------------------------------------------- */

/* The least a third-party store implements: what presence_store.h marks as
 * required. It holds no session; every write succeeds and emits nothing. */
typedef struct own_store {
  presence_store_t base;
  int attach_rc; /* what attach returns */
  int attached;
  int destroyed;
  presence_store_host_t host;
} own_store_t;

static int own_attach(presence_store_t *s, const presence_store_host_t *h) {
  own_store_t *o = (own_store_t *)s;
  o->host = *h;
  o->attached++;
  return o->attach_rc;
}

static int own_write(presence_store_t *s, const presence_write_t *w,
                     presence_store_done_fn done, void *ud) {
  (void)s;
  (void)w;
  if (done) done(ud, 0);
  return 0;
}

static int own_user_query(presence_store_t *s, const char *user_id,
                          void (*cb)(void *ud, int status,
                                     const presence_user_info_t *info),
                          void *ud) {
  (void)s;
  presence_user_info_t info;
  memset(&info, 0, sizeof(info));
  info.user_id = user_id;
  cb(ud, 0, &info);
  return 0;
}

static int own_sessions_query(presence_store_t *s, const char *user_id,
                              void (*cb)(void *ud, int status,
                                         const presence_session_info_t *ss,
                                         size_t n),
                              void *ud) {
  (void)s;
  (void)user_id;
  cb(ud, 0, NULL, 0);
  return 0;
}

static void own_destroy(presence_store_t *s) {
  ((own_store_t *)s)->destroyed++;
}

static const presence_store_ops_t own_ops = {
    .name = "own",
    .flags = PRESENCE_STORE_SYNC,
    .attach = own_attach,
    .write = own_write,
    .user_query = own_user_query,
    .sessions_query = own_sessions_query,
    .destroy = own_destroy,
};

static void own_init(own_store_t *o, int attach_rc) {
  memset(o, 0, sizeof(*o));
  o->base.ops = &own_ops;
  o->attach_rc = attach_rc;
}

/* ---- presence_new owns the store it is given --------------------------- */

/* presence.h: presence_new takes the store whatever it returns. Before, a
 * failed attach destroyed it but an invalid instance id or an allocation
 * failure left it to the caller, who could not tell which had happened:
 * destroying it after a failed attach freed it twice (presenced did),
 * not destroying it after the others leaked it. */
static void presence_new_destroys_the_given_store_when_it_fails(void **state) {
  (void)state;
  presence_options_t o;
  presence_t *p;
  own_store_t s;

  own_init(&s, 0);
  presence_options_init(&o);
  o.store = &s.base;
  o.instance_id = ""; /* EID */
  assert_int_equal(presence_new(&o, &p), PRESENCE_EID);
  assert_null(p);
  assert_int_equal(s.attached, 0);
  assert_int_equal(s.destroyed, 1);

  own_init(&s, PRESENCE_ESTORE);
  presence_options_init(&o);
  o.store = &s.base;
  assert_int_equal(presence_new(&o, &p), PRESENCE_ESTORE);
  assert_null(p);
  assert_int_equal(s.attached, 1);
  assert_int_equal(s.destroyed, 1);

  /* No memory for the presence_t itself. */
  counting_alloc_t ca = {0, 0};
  own_init(&s, 0);
  presence_options_init(&o);
  o.store = &s.base;
  o.allocator = (presence_allocator_t){ca_malloc, ca_realloc, ca_free, &ca};
  assert_int_equal(presence_new(&o, &p), PRESENCE_ENOMEM);
  assert_null(p);
  assert_int_equal(s.destroyed, 1);
  assert_int_equal(ca.live, 0);

  /* NULL out: refused, and the store still taken. */
  own_init(&s, 0);
  presence_options_init(&o);
  o.store = &s.base;
  assert_int_equal(presence_new(&o, NULL), PRESENCE_EINVAL);
  assert_int_equal(s.destroyed, 1);

  /* Success: destroyed once, by presence_free. */
  own_init(&s, 0);
  presence_options_init(&o);
  o.store = &s.base;
  assert_int_equal(presence_new(&o, &p), 0);
  assert_int_equal(s.destroyed, 0);
  presence_free(p);
  assert_int_equal(s.destroyed, 1);
}

/* Every allocation failure of presence_new with the embedded store leaves
 * nothing behind. */
static void presence_new_out_of_memory_leaks_nothing(void **state) {
  (void)state;
  for (long k = 0; k < 64; k++) {
    counting_alloc_t ca = {0, k};
    presence_options_t o;
    presence_options_init(&o);
    o.allocator = (presence_allocator_t){ca_malloc, ca_realloc, ca_free, &ca};
    presence_t *p = NULL;
    int rc = presence_new(&o, &p);
    if (rc == 0) {
      presence_free(p);
    } else {
      assert_int_equal(rc, PRESENCE_ENOMEM);
      assert_null(p);
    }
    assert_int_equal(ca.live, 0);
  }
}

/* ---- only the required ops ---------------------------------------------- */

static void no_log(presence_t *p, int status, const presence_event_t *evs,
                   size_t n, void *ud) {
  (void)p;
  (void)status;
  (void)evs;
  (void)n;
  (*(int *)ud)++;
}

static void no_members(presence_t *p, int status,
                       const presence_member_info_t *m, size_t n,
                       uint64_t count, const char *next, void *ud) {
  (void)p;
  (void)status;
  (void)m;
  (void)n;
  (void)count;
  (void)next;
  (*(int *)ud)++;
}

static void no_channels(presence_t *p, int status,
                        const presence_channel_info_t *c, size_t n,
                        const char *next, void *ud) {
  (void)p;
  (void)status;
  (void)c;
  (void)n;
  (void)next;
  (*(int *)ud)++;
}

static int no_visit(const presence_user_info_t *info, void *ud) {
  (void)info;
  (*(int *)ud)++;
  return 0;
}

static void done_count(presence_t *p, int status, void *ud) {
  (void)p;
  assert_int_equal(status, 0);
  (*(int *)ud)++;
}

/* presence_store.h names the ops a store must have; every call the API has
 * answers over a store with only those, with the error it documents
 * (ENOTSUP for what the store cannot do), never by calling a NULL op. The
 * log's two were called unchecked: presence_log_read and
 * presence_log_last_seq (and presence_cursor_new, which reads it) crashed. */
static void a_store_with_only_the_required_ops_answers_every_call(
    void **state) {
  (void)state;
  own_store_t s;
  own_init(&s, 0);
  presence_options_t o;
  presence_options_init(&o);
  o.store = &s.base;
  presence_t *p;
  assert_int_equal(presence_new(&o, &p), 0);
  assert_int_equal(s.attached, 1);

  int called = 0, done = 0;
  assert_int_equal(
      presence_session_connect(p, "s1", "alice", NULL, done_count, &done), 0);
  assert_int_equal(done, 1);
  assert_int_equal(presence_session_disconnect(p, "s1", NULL, NULL), 0);
  assert_int_equal(presence_tick(p), -1);

  presence_user_info_t ui;
  assert_int_equal(presence_user_get(p, "alice", &ui), 0);
  assert_int_equal(ui.status, PRESENCE_OFFLINE);
  presence_session_info_t si[2];
  assert_int_equal(presence_sessions_get(p, "alice", si, 2), 0);
  assert_int_equal(presence_session_get(p, "s1", si), PRESENCE_ENOTSUP);
  assert_int_equal(presence_users_foreach(p, no_visit, &called),
                   PRESENCE_ENOTSUP);
  presence_stats_t st;
  assert_int_equal(presence_stats(p, &st), PRESENCE_ENOTSUP);

  /* The log. */
  assert_int_equal(presence_log_read(p, 0, 10, no_log, &called),
                   PRESENCE_ENOTSUP);
  assert_int_equal(presence_log_last_seq(p), 0);
  assert_int_equal(presence_log_count(p), 1);
  assert_int_equal(presence_log_last_seq_of(p, 0), 0);
  assert_int_equal(presence_log_read_of(p, 0, 0, 10, no_log, &called),
                   PRESENCE_ENOTSUP);
  presence_cursor_t *c;
  assert_int_equal(presence_cursor_new(p, NULL, 0, &c), 0);
  uint32_t log;
  assert_int_equal(presence_cursor_next(c, &log), 0);
  assert_int_equal(presence_cursor_lag(c), 0);
  presence_cursor_free(c);

  /* Channels. */
  assert_int_equal(presence_channel_members(p, "room", NULL, 10, no_members,
                                            &called),
                   PRESENCE_ENOTSUP);
  assert_int_equal(presence_channel_members_brief(p, "room", NULL, 10,
                                                  no_members, &called),
                   PRESENCE_ENOTSUP);
  assert_int_equal(presence_channels_list(p, NULL, NULL, 10, no_channels,
                                          &called),
                   PRESENCE_ENOTSUP);
  assert_int_equal(presence_user_channels(p, "alice", no_members, &called),
                   PRESENCE_ENOTSUP);
  presence_member_info_t mi;
  assert_int_equal(presence_member_get(p, "room", "alice", &mi),
                   PRESENCE_ENOTSUP);
  assert_int_equal(presence_channel_count(p, "room"), PRESENCE_ENOTSUP);
  assert_int_equal(called, 0); /* refused calls call nothing back */

  presence_free(p);
  assert_int_equal(s.destroyed, 1);
}

/* ---- done and events, from inside a callback ------------------------------ */

typedef struct trace {
  char text[512];
} trace_t;

static void trace_add(trace_t *t, const char *what) {
  size_t n = strlen(t->text);
  snprintf(t->text + n, sizeof(t->text) - n, "%s%s", n ? " " : "", what);
}

static void trace_event(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  trace_add(ud, presence_event_type_name(ev->type));
}

static void trace_done(presence_t *p, int status, void *ud) {
  (void)p;
  assert_int_equal(status, 0);
  trace_add(ud, "done");
}

static void kick_on_connect(presence_t *p, const presence_event_t *ev,
                            void *ud) {
  assert_int_equal(presence_session_kick(p, ev->session_id, trace_done, ud),
                   0);
  trace_add(ud, "returned");
}

/* c-api.md section 5: done runs after the call's events, with the code the
 * call returns; a call from inside an event callback queues its events
 * behind the ones being dispatched (section 4), so its done comes first.
 * Both orders, as an embedder sees them. */
static void done_runs_after_the_events_except_inside_a_callback(void **state) {
  (void)state;
  presence_t *p;
  assert_int_equal(presence_new(NULL, &p), 0);
  trace_t t = {{0}};
  presence_on_event(p, trace_event, &t);
  assert_int_equal(presence_session_connect(p, "s1", "alice", NULL,
                                            trace_done, &t),
                   0);
  assert_string_equal(t.text, "session.connected user.online done");

  t.text[0] = '\0';
  int h = presence_on_session_connected(p, kick_on_connect, &t);
  assert_true(h > 0);
  assert_int_equal(
      presence_session_connect(p, "s2", "bob", NULL, trace_done, &t), 0);
  assert_string_equal(t.text,
                      "done returned session.connected user.online "
                      "session.disconnected user.offline done");
  presence_free(p);
}

/* ---- an asynchronous store of one's own ----------------------------------- */

/* Writes and user queries complete later (async_flush), or with ESHUTDOWN
 * when the store is destroyed, as presence_redis.h describes its own. */
typedef struct async_store {
  own_store_t own;
  presence_store_done_fn done[4];
  void *done_ud[4];
  int n_done;
  void (*ucb[4])(void *ud, int status, const presence_user_info_t *info);
  void *ucb_ud[4];
  int n_ucb;
} async_store_t;

static int async_write(presence_store_t *s, const presence_write_t *w,
                       presence_store_done_fn done, void *ud) {
  async_store_t *a = (async_store_t *)s;
  assert_non_null(done); /* not a PRESENCE_STORE_SYNC store */
  if (a->n_done == 4) return PRESENCE_ENOMEM;
  if (w->kind == PRESENCE_WRITE_CONNECT) {
    presence_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = PRESENCE_EV_SESSION_CONNECTED;
    ev.reason = PRESENCE_REASON_CONNECT;
    ev.session_id = w->session_id;
    ev.user_id = w->user_id;
    ev.to = PRESENCE_ONLINE;
    ev.seq = 1;
    a->own.host.emit(a->own.host.host_ud, &ev);
  }
  a->done[a->n_done] = done;
  a->done_ud[a->n_done++] = ud;
  return 0;
}

static int async_user_query(presence_store_t *s, const char *user_id,
                            void (*cb)(void *ud, int status,
                                       const presence_user_info_t *info),
                            void *ud) {
  (void)user_id;
  async_store_t *a = (async_store_t *)s;
  if (a->n_ucb == 4) return PRESENCE_ENOMEM;
  a->ucb[a->n_ucb] = cb;
  a->ucb_ud[a->n_ucb++] = ud;
  return 0;
}

static void async_complete(async_store_t *a, int status) {
  for (int i = 0; i < a->n_done; i++) a->done[i](a->done_ud[i], status);
  a->n_done = 0;
  presence_user_info_t info;
  memset(&info, 0, sizeof(info));
  info.user_id = "alice";
  for (int i = 0; i < a->n_ucb; i++)
    a->ucb[i](a->ucb_ud[i], status, status ? NULL : &info);
  a->n_ucb = 0;
}

static void async_destroy(presence_store_t *s) {
  async_store_t *a = (async_store_t *)s;
  async_complete(a, PRESENCE_ESHUTDOWN);
  a->own.destroyed++;
}

static const presence_store_ops_t async_ops = {
    .name = "own-async",
    .flags = 0,
    .attach = own_attach,
    .write = async_write,
    .user_query = async_user_query,
    .sessions_query = own_sessions_query,
    .destroy = async_destroy,
};

typedef struct outcomes {
  int events, done_ok, done_shutdown, query_ok, query_shutdown;
} outcomes_t;

static void count_event(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  (void)ev;
  ((outcomes_t *)ud)->events++;
}

static void count_done(presence_t *p, int status, void *ud) {
  (void)p;
  outcomes_t *o = ud;
  if (status == 0) o->done_ok++;
  else if (status == PRESENCE_ESHUTDOWN) o->done_shutdown++;
  else fail();
}

static void count_query(presence_t *p, int status,
                        const presence_user_info_t *info, void *ud) {
  (void)p;
  outcomes_t *o = ud;
  if (status == 0) {
    assert_string_equal(info->user_id, "alice");
    o->query_ok++;
  } else {
    assert_int_equal(status, PRESENCE_ESHUTDOWN);
    o->query_shutdown++;
  }
}

/* With an asynchronous store a call returns 0 when accepted and done (or a
 * query's callback) reports the outcome later; the synchronous getters are
 * ENOTSUP. presence_free runs no event callback, but the calls still
 * pending complete inside it with the store's ESHUTDOWN (presence.h). */
static void an_asynchronous_store_completes_later_and_at_free(void **state) {
  (void)state;
  async_store_t a;
  memset(&a, 0, sizeof(a));
  own_init(&a.own, 0);
  a.own.base.ops = &async_ops;
  presence_options_t o;
  presence_options_init(&o);
  o.store = &a.own.base;
  presence_t *p;
  assert_int_equal(presence_new(&o, &p), 0);
  outcomes_t out = {0};
  presence_on_event(p, count_event, &out);

  assert_int_equal(
      presence_session_connect(p, "s1", "alice", NULL, count_done, &out), 0);
  assert_int_equal(out.events, 1); /* dispatched once write returned */
  assert_int_equal(out.done_ok, 0);
  assert_int_equal(presence_user_query(p, "alice", count_query, &out), 0);
  assert_int_equal(out.query_ok, 0);
  presence_user_info_t ui;
  assert_int_equal(presence_user_get(p, "alice", &ui), PRESENCE_ENOTSUP);
  async_complete(&a, 0);
  assert_int_equal(out.done_ok, 1);
  assert_int_equal(out.query_ok, 1);

  /* Pending at presence_free. */
  assert_int_equal(
      presence_session_disconnect(p, "s1", count_done, &out), 0);
  assert_int_equal(presence_user_query(p, "alice", count_query, &out), 0);
  int events = out.events;
  presence_free(p);
  assert_int_equal(a.own.destroyed, 1);
  assert_int_equal(out.done_shutdown, 1);
  assert_int_equal(out.query_shutdown, 1);
  assert_int_equal(out.events, events);
}

/* ---- a log read inside a log read's callback ------------------------------- */

typedef struct nested_read {
  int depth;
  uint64_t inner_after, inner_first;
  size_t inner_n;
} nested_read_t;

static void inner_read(presence_t *p, int status, const presence_event_t *evs,
                       size_t n, void *ud) {
  (void)p;
  assert_int_equal(status, 0);
  nested_read_t *r = ud;
  r->inner_n = n;
  r->inner_first = n ? evs[0].seq : 0;
}

static void outer_read(presence_t *p, int status, const presence_event_t *evs,
                       size_t n, void *ud) {
  assert_int_equal(status, 0);
  nested_read_t *r = ud;
  assert_int_equal(n, 6);
  char first_sid[PRESENCE_ID_MAX + 1];
  snprintf(first_sid, sizeof(first_sid), "%s", evs[0].session_id);
  /* Fewer events than this batch (in place), then more (grown). */
  assert_int_equal(presence_log_read(p, 9, 10, inner_read, r), 0);
  assert_int_equal(r->inner_n, 3);
  assert_int_equal(r->inner_first, 10);
  for (size_t i = 0; i < n; i++) assert_int_equal(evs[i].seq, i + 1);
  assert_string_equal(evs[0].session_id, first_sid);
  assert_int_equal(presence_log_read(p, 0, 100, inner_read, r), 0);
  assert_int_equal(r->inner_n, 12);
  /* This callback's events are still its own. */
  for (size_t i = 0; i < n; i++) assert_int_equal(evs[i].seq, i + 1);
  assert_string_equal(evs[0].session_id, first_sid);
  assert_string_equal(evs[0].session_id, "s0");
  assert_int_equal(evs[0].type, PRESENCE_EV_SESSION_CONNECTED);
  r->depth++;
}

/* Events handed to a callback are valid during the callback (c-api.md,
 * Conventions), and a callback may call any query: a log read made inside
 * a log read's callback unpacked into the same buffers, so the outer
 * batch's events changed under it (read in place) or were freed (grown). */
static void a_log_read_inside_a_log_read_callback_keeps_the_outer_events(
    void **state) {
  (void)state;
  counting_alloc_t ca = {0, -1};
  presence_options_t o;
  presence_options_init(&o);
  o.allocator = (presence_allocator_t){ca_malloc, ca_realloc, ca_free, &ca};
  presence_t *p;
  assert_int_equal(presence_new(&o, &p), 0);
  for (int i = 0; i < 6; i++) {
    char sid[8], uid[8];
    snprintf(sid, sizeof(sid), "s%d", i);
    snprintf(uid, sizeof(uid), "u%d", i);
    /* session.connected and user.online: 12 events. */
    assert_int_equal(presence_session_connect(p, sid, uid, NULL, NULL, NULL),
                     0);
  }
  assert_int_equal(presence_log_last_seq(p), 12);
  nested_read_t r = {0};
  /* The first six: s0..s2 connected and online. */
  assert_int_equal(presence_log_read(p, 0, 6, outer_read, &r), 0);
  assert_int_equal(r.depth, 1);
  presence_free(p);
  assert_int_equal(ca.live, 0);
}

/* ---- the embedded store's allocator ---------------------------------------- */

/* presence_store_memory_new kept the address of the allocator it was
 * given, so a store made by a function with its allocator in a local
 * (the natural way to write it) allocated through a dead stack slot. It
 * copies it now: changing (or losing) the caller's struct afterwards
 * changes nothing. */
static void the_embedded_store_copies_its_allocator(void **state) {
  (void)state;
  counting_alloc_t given = {0, -1}, other = {0, -1};
  presence_allocator_t a = {ca_malloc, ca_realloc, ca_free, &given};
  presence_store_t *st = presence_store_memory_new(&a);
  assert_non_null(st);
  long after_new = given.live;
  assert_true(after_new > 0);
  /* The caller's struct now says something else (a reused stack slot). */
  a = (presence_allocator_t){ca_malloc, ca_realloc, ca_free, &other};
  presence_options_t o;
  presence_options_init(&o);
  o.store = st;
  presence_t *p;
  assert_int_equal(presence_new(&o, &p), 0);
  for (int i = 0; i < 100; i++) {
    char sid[16];
    snprintf(sid, sizeof(sid), "s%d", i);
    assert_int_equal(presence_session_connect(p, sid, sid, "{}", NULL, NULL),
                     0);
    assert_int_equal(presence_channel_join(p, sid, "room", NULL, NULL, NULL),
                     0);
  }
  assert_true(given.live > after_new);
  presence_free(p);
  assert_int_equal(other.live, 0); /* never used */
  assert_int_equal(given.live, 0); /* everything returned to it */
}

/* ---- out of memory: a failed call, or the event; never neither ----------- */

typedef struct oom_watch {
  int availability_events;
  int logged;
} oom_watch_t;

static void watch_availability(presence_t *p, const presence_event_t *ev,
                               void *ud) {
  (void)p;
  if (ev->type == PRESENCE_EV_USER_AVAILABILITY)
    ((oom_watch_t *)ud)->availability_events++;
}

static void watch_log(void *ud, presence_log_level_t level, const char *msg) {
  (void)level;
  (void)msg;
  ((oom_watch_t *)ud)->logged++;
}

/* "A failed call changes nothing": with allocation k of a
 * presence_user_set_availability failing, for every k, the call either
 * fails with ENOMEM and emits nothing, or succeeds and its listener gets the
 * event. The event carries the user's device kinds, unpacked into a buffer
 * the engine grew in its dispatch loop: that growth failing dropped the
 * event after the store had changed, silently (the call returned 0, the log
 * had the event, the listener never saw it, nothing was logged). */
static void no_event_is_lost_silently_when_memory_runs_out(void **state) {
  (void)state;
  for (long k = 0; k < 32; k++) {
    counting_alloc_t ca = {0, -1};
    oom_watch_t w = {0, 0};
    presence_options_t o;
    presence_options_init(&o);
    o.allocator = (presence_allocator_t){ca_malloc, ca_realloc, ca_free, &ca};
    o.log = watch_log;
    o.log_ud = &w;
    presence_t *p;
    assert_int_equal(presence_new(&o, &p), 0);
    assert_true(presence_on_event(p, watch_availability, &w) > 0);
    assert_int_equal(presence_session_open_device(p, "s1", "alice", NULL,
                                                  "mobile", NULL, NULL, NULL),
                     0);
    assert_int_equal(presence_session_open_device(p, "s2", "alice", NULL,
                                                  "desktop", NULL, NULL, NULL),
                     0);
    uint64_t before = presence_log_last_seq(p);
    ca.fail_after = k; /* allocations from here on fail after k */
    int rc = presence_user_set_availability(p, "alice", PRESENCE_AVAIL_DND,
                                            NULL, NULL);
    ca.fail_after = -1;
    if (rc == 0) {
      assert_int_equal(presence_log_last_seq(p), before + 1);
      assert_int_equal(w.availability_events, 1);
      assert_int_equal(w.logged, 0);
    } else {
      assert_int_equal(rc, PRESENCE_ENOMEM);
      assert_int_equal(presence_log_last_seq(p), before);
      assert_int_equal(w.availability_events, 0);
    }
    presence_free(p);
    assert_int_equal(ca.live, 0);
  }
}

/* ---- long durations ------------------------------------------------------ */

/* Timers are 32-bit milliseconds compared by their difference: an offline
 * grace, inactivity or channel grace of 2^31 ms or more was accepted and
 * read as already past (a 30-day grace sent user.offline at the next tick;
 * inactivity_ms UINT32_MAX made every session idle at once). presence_new
 * refuses one over PRESENCE_DURATION_MAX_MS; that one itself works. */
static void a_duration_past_the_timers_range_is_refused(void **state) {
  (void)state;
  presence_options_t o;
  presence_t *p;
  uint32_t *fields[3];
  for (int f = 0; f < 3; f++) {
    presence_options_init(&o);
    fields[0] = &o.offline_grace_ms;
    fields[1] = &o.inactivity_ms;
    fields[2] = &o.channel_grace_ms;
    *fields[f] = PRESENCE_DURATION_MAX_MS + 1u;
    assert_int_equal(presence_new(&o, &p), PRESENCE_EINVAL);
    assert_null(p);
    *fields[f] = 3000000000u; /* ~35 days */
    assert_int_equal(presence_new(&o, &p), PRESENCE_EINVAL);
  }
  presence_options_init(&o);
  o.channel_grace_ms = PRESENCE_GRACE_NONE; /* a sentinel, not a duration */
  assert_int_equal(presence_new(&o, &p), 0);
  presence_free(p);

  /* The longest accepted: the user stays online through the grace, and
   * the session online through the inactivity. */
  fake_clock_t clock = {1700000000000, 1000};
  presence_options_init(&o);
  o.clock = (presence_clock_t){fake_wall, fake_mono, &clock};
  o.offline_grace_ms = PRESENCE_DURATION_MAX_MS;
  o.inactivity_ms = PRESENCE_DURATION_MAX_MS;
  assert_int_equal(presence_new(&o, &p), 0);
  assert_int_equal(presence_session_connect(p, "s1", "alice", NULL, NULL, NULL),
                   0);
  assert_int_equal(presence_session_connect(p, "s2", "bob", NULL, NULL, NULL),
                   0);
  assert_int_equal(presence_session_disconnect(p, "s1", NULL, NULL), 0);
  clock_advance(&clock, 86400000); /* a day */
  int64_t next = presence_tick(p);
  assert_true(next > 0);
  assert_true(next <= (int64_t)PRESENCE_DURATION_MAX_MS - 86400000);
  presence_user_info_t ui;
  assert_int_equal(presence_user_get(p, "alice", &ui), 0);
  assert_int_equal(ui.status, PRESENCE_ONLINE); /* in its grace */
  assert_int_equal(presence_user_get(p, "bob", &ui), 0);
  assert_int_equal(ui.status, PRESENCE_ONLINE); /* not idle yet */
  clock_advance(&clock, (int64_t)PRESENCE_DURATION_MAX_MS);
  presence_tick(p);
  assert_int_equal(presence_user_get(p, "alice", &ui), 0);
  assert_int_equal(ui.status, PRESENCE_OFFLINE);
  assert_int_equal(presence_user_get(p, "bob", &ui), 0);
  assert_int_equal(ui.status, PRESENCE_IDLE);
  presence_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(presence_new_destroys_the_given_store_when_it_fails),
      cmocka_unit_test(presence_new_out_of_memory_leaks_nothing),
      cmocka_unit_test(a_store_with_only_the_required_ops_answers_every_call),
      cmocka_unit_test(done_runs_after_the_events_except_inside_a_callback),
      cmocka_unit_test(an_asynchronous_store_completes_later_and_at_free),
      cmocka_unit_test(
          a_log_read_inside_a_log_read_callback_keeps_the_outer_events),
      cmocka_unit_test(the_embedded_store_copies_its_allocator),
      cmocka_unit_test(no_event_is_lost_silently_when_memory_runs_out),
      cmocka_unit_test(a_duration_past_the_timers_range_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
