/* SPDX-License-Identifier: MIT */
/*
 * The engine: the public API of libpresence over one store.
 *
 * It validates every argument before the store sees it, forwards mutations
 * with this instance's id and epoch (fencing), and dispatches the events the
 * store reports to the application's callbacks.
 *
 * Dispatch goes through a pending queue rather than calling back from inside
 * the store: a store emits in the middle of its own bookkeeping, and a
 * callback that mutates (kicks a session, say) must find the store in a
 * consistent state and must not see its events overtake the ones already
 * emitted. So events are packed into the queue as they come and dispatched
 * in sequence order once the store call returns; a mutation made from a
 * callback appends its events behind the pending ones.
 */
#include "core/internal.h"

#include <string.h>
#include <time.h>

typedef struct cb_entry {
  int handle;
  bool removed;
  presence_event_cb cb;
  void *ud;
  /* presence_listener_filter: a bit per type it is called for, and per
   * type the event flags that leave an event out. */
  uint64_t types;
  unsigned skip[PRESENCE_EV_COUNT_];
} cb_entry_t;

_Static_assert(PRESENCE_EV_COUNT_ <= 64, "a type is a bit of cb_entry_t.types");

/* Whether e is called for an event of this type and flags. */
static inline bool takes(const cb_entry_t *e, unsigned type, unsigned flags) {
  if (e->removed) return false;
  if (type >= PRESENCE_EV_COUNT_) return true;
  return (e->types >> type & 1) && !(flags & e->skip[type]);
}

typedef struct cb_list {
  cb_entry_t *v;
  size_t n, cap;
} cb_list_t;

#define LIST_ANY PRESENCE_EV_COUNT_
#define LIST_CLUSTER (PRESENCE_EV_COUNT_ + 1)
#define LIST_N (PRESENCE_EV_COUNT_ + 2)

struct presence {
  presence_allocator_t alloc;
  presence_clock_t clock;
  presence_log_fn log;
  void *log_ud;
  char instance_id[PRESENCE_ID_MAX + 1];
  uint64_t epoch;
  uint32_t inactivity_ms;
  uint32_t message_max_chars;
  presence_store_t *store;
  presence_store_host_t host;

  cb_list_t lists[LIST_N];
  /* Per event type, from the lists and their filters (hear_make): whether
   * any listener wants it, and the flags every one of those skips. An event
   * of a type none wants, or with one of those flags, is unheard. */
  bool wanted[PRESENCE_EV_COUNT_];
  unsigned deaf[PRESENCE_EV_COUNT_];
  int next_handle;
  bool lists_dirty; /* some entry was removed during dispatch */

  /* Pending events, packed back to back. */
  unsigned char *pend;
  size_t pend_len, pend_read, pend_cap;
  /* The event being dispatched is read where it lies in the pending buffer
   * (no copy per event): while its callbacks run the buffer is pinned, and
   * a callback's mutation that outgrows it moves the queue to a new buffer
   * and leaves the old one here, freed once those callbacks return. */
  bool pend_pinned;
  unsigned char *pend_held;
  const char **ids;
  size_t ids_cap;
  presence_device_status_t *devs; /* a user.availability's devices */
  size_t devs_cap;
  int depth; /* nesting of API calls that may emit */
  bool dispatching;

  /* The host's timer (options.timer): the absolute monotonic deadline last
   * reported (-1: none, TIMER_UNKNOWN: report whatever it is), and a count
   * of writes and events, to tell whether a tick changed anything. */
  void (*timer)(void *ud, int64_t timeout_ms);
  void *timer_ud;
  int64_t timer_due;
  uint64_t changes;
  bool in_timer;
  /* A store with PRESENCE_STORE_DEADLINES added a deadline since the last
   * tick (host_deadline): the next write ticks. */
  bool tick_owed;
};

#define TIMER_UNKNOWN INT64_MIN

static void timer_update(presence_t *p);

/* ---- clocks ------------------------------------------------------------ */

/* The default clocks are the kernel's coarse ones where they exist: a few
 * milliseconds of resolution, which presence does not need finer, for a read
 * that costs a memory load instead of a timer read on every operation. */
#ifdef CLOCK_REALTIME_COARSE
#define WALL_CLOCK CLOCK_REALTIME_COARSE
#define MONO_CLOCK CLOCK_MONOTONIC_COARSE
#else
#define WALL_CLOCK CLOCK_REALTIME
#define MONO_CLOCK CLOCK_MONOTONIC
#endif

static int64_t sys_wall_ms(void *ud) {
  (void)ud;
  struct timespec ts;
  clock_gettime(WALL_CLOCK, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t sys_mono_ms(void *ud) {
  (void)ud;
  struct timespec ts;
  clock_gettime(MONO_CLOCK, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t host_wall(void *ud) {
  presence_t *p = ud;
  return p->clock.wall_ms(p->clock.ud);
}

static int64_t host_mono(void *ud) {
  presence_t *p = ud;
  return p->clock.mono_ms(p->clock.ud);
}

static void host_log(void *ud, presence_log_level_t level, const char *msg) {
  presence_t *p = ud;
  if (p->log) p->log(p->log_ud, level, msg);
}

/* ---- dispatch ---------------------------------------------------------- */

static void dispatch_list(presence_t *p, cb_list_t *l,
                          const presence_event_t *ev) {
  /* n is read each time: a callback may register another one, which then
   * sees the next event, not this one. */
  size_t n = l->n;
  for (size_t i = 0; i < n && i < l->n; i++) {
    cb_entry_t *e = &l->v[i];
    if (takes(e, (unsigned)ev->type, ev->flags)) e->cb(p, ev, e->ud);
  }
}

static void compact_lists(presence_t *p) {
  for (size_t k = 0; k < LIST_N; k++) {
    cb_list_t *l = &p->lists[k];
    size_t w = 0;
    for (size_t r = 0; r < l->n; r++)
      if (!l->v[r].removed) l->v[w++] = l->v[r];
    l->n = w;
  }
  p->lists_dirty = false;
}

/* The marks host_emit_packed leaves on a queued pair. */
enum { MARK_FIRST = 1, MARK_SKIP_SECOND = 2 };

static void dispatch(presence_t *p, const presence_event_t *ev) {
  /* Empty lists are the common case (a daemon listens on two): not
   * called at all. */
  if ((unsigned)ev->type < PRESENCE_EV_COUNT_ && p->lists[ev->type].n)
    dispatch_list(p, &p->lists[ev->type], ev);
  if (p->lists[LIST_ANY].n) dispatch_list(p, &p->lists[LIST_ANY], ev);
  if (!(p->store->ops->flags & PRESENCE_STORE_OBSERVES) &&
      p->lists[LIST_CLUSTER].n)
    dispatch_list(p, &p->lists[LIST_CLUSTER], ev);
}

static void drain(presence_t *p) {
  if (p->dispatching) return; /* the outer drain picks them up */
  p->dispatching = true;
  while (p->pend_read < p->pend_len) {
    const unsigned char *blob = p->pend + p->pend_read;
    p->pend_read += presence__event_packed_len(blob);
    size_t nids = presence__event_packed_ids(blob);
    if (nids > p->ids_cap) {
      const char **ids =
          presence__realloc(&p->alloc, p->ids, nids * sizeof(*ids));
      if (!ids) {
        host_log(p, PRESENCE_LOG_ERROR, "out of memory: event not dispatched");
        continue;
      }
      p->ids = ids;
      p->ids_cap = nids;
    }
    presence_event_t ev;
    /* Room for a user.availability's devices is made at presence_new (16):
     * only a user with more device kinds than that finds it short. */
    size_t ndevs = presence__event_unpack(blob, &ev, p->ids, p->devs,
                                          p->devs_cap);
    if (ndevs) {
      presence_device_status_t *d =
          presence__realloc(&p->alloc, p->devs, ndevs * sizeof(*d));
      if (!d) {
        host_log(p, PRESENCE_LOG_ERROR, "out of memory: event not dispatched");
        continue;
      }
      p->devs = d;
      p->devs_cap = ndevs;
      presence__event_unpack(blob, &ev, p->ids, p->devs, p->devs_cap);
    }
    p->pend_pinned = true;
    /* A pair (presence__ev_first_t): its first event, then the second,
     * each if host_emit_packed found it heard. */
    unsigned marks = presence__event_packed_marks(blob);
    if (marks & MARK_FIRST) {
      presence_event_t first = ev;
      presence__event_first(blob, &first);
      dispatch(p, &first);
    }
    if (!(marks & MARK_SKIP_SECOND)) dispatch(p, &ev);
    p->pend_pinned = false;
    if (p->pend_held) {
      presence__free(&p->alloc, p->pend_held);
      p->pend_held = NULL;
    }
  }
  p->pend_read = p->pend_len = 0;
  p->dispatching = false;
  if (p->lists_dirty) compact_lists(p);
}

/* The store reports an event: queue it, and dispatch at once if nothing of
 * ours is on the stack (an asynchronous store answering later). */
static unsigned char *pend_reserve(presence_t *p, size_t size) {
  p->changes++;
  if (p->pend_len + size > p->pend_cap) {
    size_t ncap = p->pend_cap ? p->pend_cap * 2 : 4096;
    while (ncap < p->pend_len + size) ncap *= 2;
    /* A pinned buffer holds the event whose callbacks are running: it
     * stays where it is (see pend_held) and the queue moves. */
    bool keep = p->pend_pinned && !p->pend_held;
    unsigned char *n = keep ? presence__malloc(&p->alloc, ncap)
                            : presence__realloc(&p->alloc, p->pend, ncap);
    if (!n) {
      host_log(p, PRESENCE_LOG_ERROR, "out of memory: event not dispatched");
      return NULL;
    }
    if (keep) {
      memcpy(n, p->pend, p->pend_len);
      p->pend_held = p->pend;
    }
    p->pend = n;
    p->pend_cap = ncap;
  }
  unsigned char *at = p->pend + p->pend_len;
  p->pend_len += size;
  return at;
}

/* Whether no callback would be called for an event of this type. Such an
 * event is not queued at all (it is in the store's log, where readers find
 * it): an embedder that registered nothing, or nothing for this type, pays
 * no packing and unpacking per operation. Not while callbacks run: one of
 * them may register a callback that is then owed the queued events. */
static bool unheard(const presence_t *p, presence_event_type_t type,
                    unsigned flags) {
  if (p->dispatching || (unsigned)type >= PRESENCE_EV_COUNT_) return false;
  return !p->wanted[type] || (flags & p->deaf[type]);
}

/* The summary unheard() reads, after any change of a list or a filter.
 * An event one listener skips for a flag and another for another flag is
 * counted heard (each then leaves it in dispatch_list): never the other
 * way round. */
static void hear_make(presence_t *p) {
  bool cluster = !(p->store->ops->flags & PRESENCE_STORE_OBSERVES);
  for (unsigned t = 0; t < PRESENCE_EV_COUNT_; t++) {
    const size_t ks[3] = {t, LIST_ANY, LIST_CLUSTER};
    bool wanted = false;
    unsigned deaf = ~0u;
    for (size_t j = 0; j < (cluster ? 3u : 2u); j++) {
      const cb_list_t *l = &p->lists[ks[j]];
      for (size_t i = 0; i < l->n; i++) {
        const cb_entry_t *e = &l->v[i];
        if (e->removed || !(e->types >> t & 1)) continue;
        wanted = true;
        deaf &= e->skip[t];
      }
    }
    p->wanted[t] = wanted;
    p->deaf[t] = wanted ? deaf : 0;
  }
}

static void host_emit(void *ud, const presence_event_t *ev) {
  presence_t *p = ud;
  if (unheard(p, ev->type, ev->flags)) {
    p->changes++;
    return;
  }
  size_t lens[PRESENCE__EV_STRINGS];
  size_t size = presence__event_measure(ev, lens);
  unsigned char *at = pend_reserve(p, size);
  if (at) presence__event_pack_measured(ev, lens, size, at);
  if (p->depth == 0) drain(p);
}

static void host_emit_packed(void *ud, const void *packed) {
  presence_t *p = ud;
  unsigned flags, marks = 0;
  presence_event_type_t type = presence__event_packed_head(packed, &flags);
  bool second = !unheard(p, type, flags);
  if (presence__event_packed_pair(packed)) {
    /* Two events in one record: queued once if either is heard, marked
     * with which (two changes either way). */
    p->changes++;
    type = presence__event_packed_first_head(packed, &flags);
    if (!unheard(p, type, flags)) marks |= MARK_FIRST;
    if (!second) marks |= MARK_SKIP_SECOND;
  }
  if (!second && !(marks & MARK_FIRST)) {
    p->changes++;
    return;
  }
  size_t size = presence__event_packed_len(packed);
  unsigned char *at = pend_reserve(p, size);
  if (at) {
    memcpy(at, packed, size);
    presence__event_packed_set_marks(at, marks);
  }
  if (p->depth == 0) drain(p);
}

/* The store added a deadline that may be the nearest (stores with
 * PRESENCE_STORE_DEADLINES): the next outermost write ticks. */
static void host_deadline(void *ud) {
  presence_t *p = ud;
  p->tick_owed = true;
}

/* A cluster event from a store that observes its shared log: dispatched at
 * once (it arrives from the store's own I/O, never inside a store call),
 * flagged as dispatching so presence_off from a callback is safe. */
static void host_observe(void *ud, const presence_event_t *ev) {
  presence_t *p = ud;
  bool was = p->dispatching;
  p->dispatching = true;
  dispatch_list(p, &p->lists[LIST_CLUSTER], ev);
  p->dispatching = was;
  if (!was && p->lists_dirty) compact_lists(p);
}

/* ---- lifecycle --------------------------------------------------------- */

void presence_options_init(presence_options_t *opts) {
  if (opts) memset(opts, 0, sizeof(*opts));
}

/* presence_new failed before the store was attached: a store the caller
 * gave is ours all the same (presence.h), so it goes here, as it does when
 * its attach fails. Otherwise the caller could not tell whether to destroy
 * it: a failed attach destroys it through presence_free. */
static int new_failed(const presence_options_t *opts, int rc) {
  if (opts && opts->store) opts->store->ops->destroy(opts->store);
  return rc;
}

int presence_new(const presence_options_t *opts, presence_t **out) {
  presence_options_t defaults;
  if (!out) return new_failed(opts, PRESENCE_EINVAL);
  *out = NULL;
  if (!opts) {
    presence_options_init(&defaults);
    opts = &defaults;
  }
  const char *iid = opts->instance_id ? opts->instance_id : "local";
  size_t iid_len;
  if (presence__id_check_len(iid, &iid_len))
    return new_failed(opts, PRESENCE_EID);
  /* The embedded store keeps its timers as 32-bit milliseconds compared by
   * their difference, so a duration of 2^31 ms or more read as already
   * past: a 30-day grace sent user.offline at the next tick, an inactivity
   * of UINT32_MAX ("never, in effect") made every session idle at once. */
  if (opts->offline_grace_ms > PRESENCE_DURATION_MAX_MS ||
      opts->inactivity_ms > PRESENCE_DURATION_MAX_MS ||
      (opts->channel_grace_ms > PRESENCE_DURATION_MAX_MS &&
       opts->channel_grace_ms != PRESENCE_GRACE_NONE))
    return new_failed(opts, PRESENCE_EINVAL);
  presence_allocator_t alloc = opts->allocator;
  if (!alloc.malloc || !alloc.realloc || !alloc.free)
    alloc = *presence__default_allocator();

  presence_t *p = presence__malloc(&alloc, sizeof(*p));
  if (!p) return new_failed(opts, PRESENCE_ENOMEM);
  memset(p, 0, sizeof(*p));
  p->alloc = alloc;
  p->clock = opts->clock;
  if (!p->clock.wall_ms) p->clock.wall_ms = sys_wall_ms;
  if (!p->clock.mono_ms) p->clock.mono_ms = sys_mono_ms;
  p->log = opts->log;
  p->log_ud = opts->log_ud;
  memcpy(p->instance_id, iid, iid_len + 1);
  p->epoch = opts->epoch ? opts->epoch : 1;
  p->inactivity_ms = opts->inactivity_ms;
  p->message_max_chars = opts->message_max_chars ? opts->message_max_chars
                                                 : PRESENCE_MESSAGE_MAX_CHARS;
  p->next_handle = 1;
  p->timer = opts->timer;
  p->timer_ud = opts->timer_ud;
  p->timer_due = -1; /* the host's timer starts stopped */
  p->tick_owed = true;

  p->host.emit = host_emit;
  p->host.emit_packed = host_emit_packed;
  p->host.observe = host_observe;
  p->host.deadline = host_deadline;
  p->host.log = host_log;
  p->host.wall_ms = host_wall;
  p->host.mono_ms = host_mono;
  p->host.allocator = &p->alloc;
  p->host.host_ud = p;
  p->host.instance_id = p->instance_id;
  p->host.epoch = p->epoch;
  p->host.offline_grace_ms = opts->offline_grace_ms;
  p->host.offline_retention_s = opts->offline_retention_s;
  p->host.inactivity_ms = opts->inactivity_ms;
  p->host.log_capacity = opts->log_capacity ? opts->log_capacity : 65536;
  p->host.max_sessions_per_user = opts->max_sessions_per_user;
  p->host.expected_sessions = opts->expected_sessions;
  p->host.expected_users = opts->expected_users;
  p->host.expected_memberships = opts->expected_memberships;
  p->host.channel_grace_ms =
      opts->channel_grace_ms == PRESENCE_GRACE_NONE ? 0
      : opts->channel_grace_ms                      ? opts->channel_grace_ms
                                                    : opts->offline_grace_ms;
  p->host.max_channels_per_session = opts->max_channels_per_session;
  p->host.seq_base = opts->seq_base;

  /* The pending queue exists up front, so the common event never meets an
   * allocation failure after the store has already changed. */
  p->pend_cap = 4096;
  p->pend = presence__malloc(&p->alloc, p->pend_cap);
  /* So is room for the devices of one event (a user.availability carries
   * the user's device kinds, a few): else the first such event met a
   * failed allocation in drain after the store had changed, and was lost. */
  p->devs_cap = 16;
  p->devs = presence__malloc(&p->alloc, p->devs_cap * sizeof(*p->devs));
  p->store = opts->store ? opts->store : presence_store_memory_new(&p->alloc);
  if ((!p->pend || !p->devs) && p->store) {
    p->store->ops->destroy(p->store);
    p->store = NULL;
  }
  if (!p->store) {
    presence__free(&p->alloc, p->pend);
    presence__free(&p->alloc, p->devs);
    presence__free(&p->alloc, p);
    return PRESENCE_ENOMEM;
  }
  int rc = p->store->ops->attach(p->store, &p->host);
  if (rc) {
    presence_free(p);
    return rc;
  }
  *out = p;
  return 0;
}

void presence_free(presence_t *p) {
  if (!p) return;
  if (p->store) p->store->ops->destroy(p->store);
  for (size_t k = 0; k < LIST_N; k++)
    presence__free(&p->alloc, p->lists[k].v);
  presence__free(&p->alloc, p->pend);
  presence__free(&p->alloc, p->pend_held);
  presence__free(&p->alloc, p->ids);
  presence__free(&p->alloc, p->devs);
  presence_allocator_t a = p->alloc;
  presence__free(&a, p);
}

const char *presence_instance_id(const presence_t *p) {
  return p ? p->instance_id : NULL;
}
uint64_t presence_epoch(const presence_t *p) { return p ? p->epoch : 0; }

/* ---- callbacks --------------------------------------------------------- */

/* Append a callback to one list; returns its handle. */
static int list_add(presence_t *p, size_t k, presence_event_cb cb, void *ud) {
  cb_list_t *l = &p->lists[k];
  if (l->n == l->cap) {
    size_t ncap = l->cap ? l->cap * 2 : 4;
    cb_entry_t *v = presence__realloc(&p->alloc, l->v, ncap * sizeof(*v));
    if (!v) return PRESENCE_ENOMEM;
    l->v = v;
    l->cap = ncap;
  }
  int handle = p->next_handle++;
  l->v[l->n++] = (cb_entry_t){handle, false, cb, ud, ~(uint64_t)0, {0}};
  hear_make(p);
  return handle;
}

int presence_on(presence_t *p, presence_event_type_t type, presence_event_cb cb,
                void *ud) {
  if (!p || !cb) return PRESENCE_EINVAL;
  if (type == PRESENCE_EV_ANY) return list_add(p, LIST_ANY, cb, ud);
  if ((unsigned)type < PRESENCE_EV_COUNT_)
    return list_add(p, (size_t)type, cb, ud);
  return PRESENCE_EINVAL;
}

int presence_listener_filter(presence_t *p, int handle,
                             presence_event_type_t type, int wanted,
                             unsigned skip_flags) {
  if (!p || handle <= 0 || (unsigned)type >= PRESENCE_EV_COUNT_)
    return PRESENCE_EINVAL;
  for (size_t k = 0; k < LIST_N; k++) {
    cb_list_t *l = &p->lists[k];
    for (size_t i = 0; i < l->n; i++) {
      cb_entry_t *e = &l->v[i];
      if (e->handle != handle || e->removed) continue;
      uint64_t bit = (uint64_t)1 << (unsigned)type;
      e->types = wanted ? e->types | bit : e->types & ~bit;
      e->skip[type] = skip_flags;
      hear_make(p);
      return 0;
    }
  }
  return PRESENCE_EINVAL;
}

int presence_off(presence_t *p, int handle) {
  if (!p || handle <= 0) return PRESENCE_EINVAL;
  for (size_t k = 0; k < LIST_N; k++) {
    cb_list_t *l = &p->lists[k];
    for (size_t i = 0; i < l->n; i++) {
      if (l->v[i].handle == handle && !l->v[i].removed) {
        l->v[i].removed = true;
        hear_make(p);
        if (p->dispatching) p->lists_dirty = true;
        else compact_lists(p);
        return 0;
      }
    }
  }
  return PRESENCE_EINVAL;
}

int presence_on_session_connected(presence_t *p, presence_event_cb cb,
                                  void *ud) {
  return presence_on(p, PRESENCE_EV_SESSION_CONNECTED, cb, ud);
}
int presence_on_session_disconnected(presence_t *p, presence_event_cb cb,
                                     void *ud) {
  return presence_on(p, PRESENCE_EV_SESSION_DISCONNECTED, cb, ud);
}
int presence_on_cleanup(presence_t *p, presence_event_cb cb, void *ud) {
  return presence_on(p, PRESENCE_EV_CLEANUP, cb, ud);
}
int presence_on_user_online(presence_t *p, presence_event_cb cb, void *ud) {
  return presence_on(p, PRESENCE_EV_USER_ONLINE, cb, ud);
}
int presence_on_user_idle(presence_t *p, presence_event_cb cb, void *ud) {
  return presence_on(p, PRESENCE_EV_USER_IDLE, cb, ud);
}
int presence_on_user_offline(presence_t *p, presence_event_cb cb, void *ud) {
  return presence_on(p, PRESENCE_EV_USER_OFFLINE, cb, ud);
}
int presence_on_event(presence_t *p, presence_event_cb cb, void *ud) {
  return presence_on(p, PRESENCE_EV_ANY, cb, ud);
}

int presence_on_channel_join(presence_t *p, presence_event_cb cb, void *ud) {
  return presence_on(p, PRESENCE_EV_CHANNEL_JOIN, cb, ud);
}
int presence_on_channel_leave(presence_t *p, presence_event_cb cb, void *ud) {
  return presence_on(p, PRESENCE_EV_CHANNEL_LEAVE, cb, ud);
}
int presence_on_channel_update(presence_t *p, presence_event_cb cb, void *ud) {
  return presence_on(p, PRESENCE_EV_CHANNEL_UPDATE, cb, ud);
}

int presence_on_cluster_event(presence_t *p, presence_event_cb cb, void *ud) {
  if (!p || !cb) return PRESENCE_EINVAL;
  return list_add(p, LIST_CLUSTER, cb, ud);
}

/* ---- mutations --------------------------------------------------------- */

typedef struct write_ctx {
  presence_t *p;
  presence_done_cb done;
  void *ud;
} write_ctx_t;

static void async_done(void *ud, int status) {
  write_ctx_t *c = ud;
  presence_t *p = c->p;
  presence_done_cb done = c->done;
  void *dud = c->ud;
  presence__free(&p->alloc, c);
  drain(p);
  if (done) done(p, status, dud);
}

static bool store_sync(const presence_t *p) {
  return p->store->ops->flags & PRESENCE_STORE_SYNC;
}

static int submit(presence_t *p, presence_write_t *w, presence_done_cb done,
                  void *ud) {
  w->instance_id = p->instance_id;
  w->epoch = p->epoch;
  int rc;
  p->depth++;
  if (store_sync(p)) {
    rc = p->store->ops->write(p->store, w, NULL, NULL);
  } else {
    write_ctx_t *c = presence__malloc(&p->alloc, sizeof(*c));
    if (!c) {
      p->depth--;
      return PRESENCE_ENOMEM;
    }
    *c = (write_ctx_t){p, done, ud};
    rc = p->store->ops->write(p->store, w, async_done, c);
    if (rc < 0) presence__free(&p->alloc, c);
  }
  p->depth--;
  if (p->depth == 0) drain(p);
  if (rc == 0 && done && store_sync(p)) done(p, 0, ud);
  p->changes++;
  timer_update(p);
  return rc;
}

static int session_arg(presence_write_t *w, const char *session_id) {
  memset(w, 0, sizeof(*w));
  w->session_id = session_id;
  return presence__id_check_len(session_id, &w->session_id_len);
}

int presence_session_connect(presence_t *p, const char *session_id,
                             const char *user_id, const char *meta,
                             presence_done_cb done, void *ud) {
  return presence_session_open(p, session_id, user_id, meta, NULL, done, ud);
}

int presence_session_open(presence_t *p, const char *session_id,
                          const char *user_id, const char *meta,
                          presence_handle_t *handle, presence_done_cb done,
                          void *ud) {
  return presence_session_open_device(p, session_id, user_id, meta, NULL,
                                      handle, done, ud);
}

static int open_session(presence_t *p, const char *session_id,
                        const char *user_id, const char *meta,
                        const char *device, unsigned flags,
                        presence_status_t status, presence_handle_t *handle,
                        presence_done_cb done, void *ud) {
  presence_write_t w;
  if (!p) return PRESENCE_EINVAL;
  if (handle) *handle = PRESENCE_HANDLE_NONE;
  if (status != PRESENCE_ONLINE && status != PRESENCE_IDLE)
    return PRESENCE_ESTATUS;
  int rc = session_arg(&w, session_id);
  if (rc) return rc;
  if (device) {
    rc = presence__device_check_len(device, &w.device_len);
    if (rc) return rc;
    w.device = device;
  } else {
    w.device = PRESENCE_DEVICE_DEFAULT;
    w.device_len = sizeof(PRESENCE_DEVICE_DEFAULT) - 1;
  }
  rc = presence__id_check_len(user_id, &w.user_id_len);
  if (rc) return rc;
  w.user_id = user_id;
  if (meta) {
    size_t n = 0;
    while (n <= PRESENCE_META_MAX && meta[n]) n++;
    if (n > PRESENCE_META_MAX) return PRESENCE_EMETA;
    w.meta = meta;
    w.meta_len = n;
  }
  w.kind = PRESENCE_WRITE_CONNECT;
  w.status = status;
  w.reason = PRESENCE_REASON_CONNECT;
  w.handle_out = handle;
  w.flags = flags;
  return submit(p, &w, done, ud);
}

int presence_session_open_device(presence_t *p, const char *session_id,
                                 const char *user_id, const char *meta,
                                 const char *device, presence_handle_t *handle,
                                 presence_done_cb done, void *ud) {
  return open_session(p, session_id, user_id, meta, device, 0,
                      PRESENCE_ONLINE, handle, done, ud);
}

int presence_session_open_random(presence_t *p, const char *session_id,
                                 const char *user_id, const char *meta,
                                 const char *device, presence_handle_t *handle,
                                 presence_done_cb done, void *ud) {
  return open_session(p, session_id, user_id, meta, device,
                      PRESENCE_WRITE_F_RANDOM_ID, PRESENCE_ONLINE, handle, done,
                      ud);
}

int presence_session_adopt(presence_t *p, const char *session_id,
                           const char *user_id, const char *meta,
                           const char *device, presence_handle_t *handle,
                           presence_done_cb done, void *ud) {
  return open_session(p, session_id, user_id, meta, device,
                      PRESENCE_WRITE_F_ADOPT, PRESENCE_ONLINE, handle, done, ud);
}

int presence_session_open_opts(presence_t *p, const char *session_id,
                               const char *user_id, const char *meta,
                               const presence_open_opts_t *opts,
                               presence_handle_t *handle,
                               presence_done_cb done, void *ud) {
  static const presence_open_opts_t none;
  if (!opts) opts = &none;
  if (opts->flags & ~(PRESENCE_OPEN_RANDOM_ID | PRESENCE_OPEN_ADOPT))
    return PRESENCE_EINVAL;
  unsigned flags = 0;
  if (opts->flags & PRESENCE_OPEN_RANDOM_ID) flags |= PRESENCE_WRITE_F_RANDOM_ID;
  if (opts->flags & PRESENCE_OPEN_ADOPT) flags |= PRESENCE_WRITE_F_ADOPT;
  return open_session(p, session_id, user_id, meta, opts->device, flags,
                      opts->status ? opts->status : PRESENCE_ONLINE, handle,
                      done, ud);
}

static bool end_reason_ok(presence_reason_t reason) {
  return reason == PRESENCE_REASON_DISCONNECT ||
         reason == PRESENCE_REASON_TIMEOUT || reason == PRESENCE_REASON_KICKED ||
         reason == PRESENCE_REASON_SHUTDOWN ||
         reason == PRESENCE_REASON_ORIGIN_LOST ||
         (reason >= PRESENCE_REASON_TOKEN_EXPIRED &&
          reason <= PRESENCE_REASON_SLOW_CONSUMER);
}

int presence_session_end(presence_t *p, const char *session_id,
                         presence_reason_t reason, presence_done_cb done,
                         void *ud) {
  presence_write_t w;
  if (!p || !end_reason_ok(reason)) return PRESENCE_EINVAL;
  int rc = session_arg(&w, session_id);
  if (rc) return rc;
  w.kind = PRESENCE_WRITE_END;
  w.reason = reason;
  return submit(p, &w, done, ud);
}

/* Handle forms: the same writes, naming the session by its handle. */
static int handle_arg(presence_write_t *w, presence_handle_t handle) {
  memset(w, 0, sizeof(*w));
  w->handle = handle;
  return handle == PRESENCE_HANDLE_NONE ? PRESENCE_ENOSESSION : 0;
}

int presence_handle_end(presence_t *p, presence_handle_t handle,
                        presence_reason_t reason, presence_done_cb done,
                        void *ud) {
  presence_write_t w;
  if (!p || !end_reason_ok(reason)) return PRESENCE_EINVAL;
  int rc = handle_arg(&w, handle);
  if (rc) return rc;
  w.kind = PRESENCE_WRITE_END;
  w.reason = reason;
  return submit(p, &w, done, ud);
}

int presence_handle_set_status(presence_t *p, presence_handle_t handle,
                               presence_status_t status, presence_done_cb done,
                               void *ud) {
  presence_write_t w;
  if (!p) return PRESENCE_EINVAL;
  if (status != PRESENCE_ONLINE && status != PRESENCE_IDLE)
    return PRESENCE_ESTATUS;
  int rc = handle_arg(&w, handle);
  if (rc) return rc;
  w.kind = PRESENCE_WRITE_SET_STATUS;
  w.status = status;
  w.reason = PRESENCE_REASON_EXPLICIT;
  return submit(p, &w, done, ud);
}

int presence_handle_touch(presence_t *p, presence_handle_t handle) {
  presence_write_t w;
  if (!p) return PRESENCE_EINVAL;
  int rc = handle_arg(&w, handle);
  if (rc) return rc;
  w.kind = PRESENCE_WRITE_TOUCH;
  w.reason = PRESENCE_REASON_INACTIVITY;
  return submit(p, &w, NULL, NULL);
}

int presence_session_disconnect(presence_t *p, const char *session_id,
                                presence_done_cb done, void *ud) {
  return presence_session_end(p, session_id, PRESENCE_REASON_DISCONNECT, done,
                              ud);
}

int presence_session_kick(presence_t *p, const char *session_id,
                          presence_done_cb done, void *ud) {
  return presence_session_end(p, session_id, PRESENCE_REASON_KICKED, done, ud);
}

int presence_session_set_status(presence_t *p, const char *session_id,
                                presence_status_t status,
                                presence_done_cb done, void *ud) {
  presence_write_t w;
  if (!p) return PRESENCE_EINVAL;
  int rc = session_arg(&w, session_id);
  if (rc) return rc;
  if (status != PRESENCE_ONLINE && status != PRESENCE_IDLE)
    return PRESENCE_ESTATUS;
  w.kind = PRESENCE_WRITE_SET_STATUS;
  w.status = status;
  w.reason = PRESENCE_REASON_EXPLICIT;
  return submit(p, &w, done, ud);
}

int presence_session_touch(presence_t *p, const char *session_id) {
  presence_write_t w;
  if (!p) return PRESENCE_EINVAL;
  int rc = session_arg(&w, session_id);
  if (rc) return rc;
  w.kind = PRESENCE_WRITE_TOUCH;
  w.reason = PRESENCE_REASON_INACTIVITY;
  return submit(p, &w, NULL, NULL);
}

/* ---- status that people set ------------------------------------------- */

int presence_user_set_availability(presence_t *p, const char *user_id,
                                   presence_availability_t availability,
                                   presence_done_cb done, void *ud) {
  presence_write_t w;
  if (!p) return PRESENCE_EINVAL;
  memset(&w, 0, sizeof(w));
  int rc = presence__id_check_len(user_id, &w.user_id_len);
  if (rc) return rc;
  if ((unsigned)availability >= PRESENCE_AVAIL_COUNT_)
    return PRESENCE_EAVAILABILITY;
  w.kind = PRESENCE_WRITE_SET_AVAILABILITY;
  w.user_id = user_id;
  w.availability = availability;
  w.reason = PRESENCE_REASON_EXPLICIT;
  return submit(p, &w, done, ud);
}

int presence_user_set_message(presence_t *p, const char *user_id,
                              const char *text, const char *emoji,
                              int64_t expires_ms, presence_done_cb done,
                              void *ud) {
  presence_write_t w;
  if (!p) return PRESENCE_EINVAL;
  memset(&w, 0, sizeof(w));
  int rc = presence__id_check_len(user_id, &w.user_id_len);
  if (rc) return rc;
  rc = presence__message_check_len(text, emoji, p->message_max_chars,
                                   &w.message_len, &w.emoji_len);
  if (rc) return rc;
  /* An empty string is no string: "" and NULL store the same thing. */
  w.message = w.message_len ? text : NULL;
  w.emoji = w.emoji_len ? emoji : NULL;
  if (w.message || w.emoji) {
    if (expires_ms) {
      int64_t now = host_wall(p);
      if (expires_ms <= now || expires_ms - now > PRESENCE_MESSAGE_TTL_MAX_MS)
        return PRESENCE_EEXPIRY;
    }
    w.expires_ms = expires_ms;
  } else if (expires_ms < 0) {
    return PRESENCE_EEXPIRY;
  }
  w.kind = PRESENCE_WRITE_SET_MESSAGE;
  w.user_id = user_id;
  w.reason = PRESENCE_REASON_EXPLICIT;
  return submit(p, &w, done, ud);
}

int presence_user_clear_message(presence_t *p, const char *user_id,
                                presence_done_cb done, void *ud) {
  return presence_user_set_message(p, user_id, NULL, NULL, 0, done, ud);
}

int presence_reset(presence_t *p, presence_done_cb done, void *ud) {
  presence_write_t w;
  if (!p) return PRESENCE_EINVAL;
  memset(&w, 0, sizeof(w));
  w.kind = PRESENCE_WRITE_RESET;
  w.reason = PRESENCE_REASON_INSTANCE_LOST;
  return submit(p, &w, done, ud);
}

int presence_end_graces(presence_t *p, presence_done_cb done, void *ud) {
  presence_write_t w;
  if (!p) return PRESENCE_EINVAL;
  memset(&w, 0, sizeof(w));
  w.kind = PRESENCE_WRITE_END_GRACES;
  w.reason = PRESENCE_REASON_SHUTDOWN;
  return submit(p, &w, done, ud);
}

static int64_t run_tick(presence_t *p) {
  p->depth++;
  int64_t next = p->store->ops->tick(p->store, host_mono(p));
  p->depth--;
  if (p->depth == 0) drain(p);
  return next;
}

int64_t presence_tick(presence_t *p) {
  if (!p || !p->store->ops->tick) return -1;
  int64_t next = run_tick(p);
  if (p->timer) {
    /* The host's one-shot timer has fired (or the host ticks on its own):
     * whatever comes next is reported, even the same deadline. */
    p->timer_due = TIMER_UNKNOWN;
    p->tick_owed = true;
    timer_update(p);
  }
  return next;
}

/* ---- the host's timer (options.timer) ---------------------------------- */

/* After the outermost call that may have moved a deadline: run what is due
 * and tell the host when the next deadline is, if that changed. A tick's
 * events may cause writes (from callbacks) that move a deadline again, so
 * it ticks until a tick changes nothing; after a few rounds "due now" makes
 * the host call presence_tick from its loop instead. */
static void timer_update(presence_t *p) {
  if (!p->timer || p->depth || p->dispatching || p->in_timer) return;
  if (!p->store->ops->tick) return;
  /* Nothing added a deadline since the last tick: the host's timer is
   * armed for the nearest one already (a deadline that went away makes it
   * fire early, and that tick finds nothing due). */
  if (!p->tick_owed && (p->store->ops->flags & PRESENCE_STORE_DEADLINES))
    return;
  p->tick_owed = false;
  p->in_timer = true;
  int64_t next;
  uint64_t before;
  int rounds = 0;
  do {
    before = p->changes;
    next = run_tick(p);
  } while (p->changes != before && ++rounds < 4);
  if (p->changes != before) next = 0;
  int64_t due = next < 0 ? -1 : host_mono(p) + next;
  if (due != p->timer_due) {
    p->timer_due = due;
    p->timer(p->timer_ud, next);
  }
  p->in_timer = false;
}

/* ---- queries ----------------------------------------------------------- */

typedef struct query_ctx {
  presence_t *p;
  bool heap;
  presence_user_cb user_cb;
  presence_sessions_cb sessions_cb;
  presence_log_cb log_cb;
  void *ud;
} query_ctx_t;

static query_ctx_t *query_ctx(presence_t *p, query_ctx_t *stack) {
  if (store_sync(p)) {
    memset(stack, 0, sizeof(*stack));
    stack->p = p;
    return stack;
  }
  query_ctx_t *c = presence__malloc(&p->alloc, sizeof(*c));
  if (!c) return NULL;
  memset(c, 0, sizeof(*c));
  c->p = p;
  c->heap = true;
  return c;
}

static void query_done(query_ctx_t *c) {
  if (c->heap) presence__free(&c->p->alloc, c);
}

static void user_adapter(void *ud, int status, const presence_user_info_t *i) {
  query_ctx_t *c = ud;
  c->user_cb(c->p, status, i, c->ud);
  query_done(c);
}

int presence_user_query(presence_t *p, const char *user_id, presence_user_cb cb,
                        void *ud) {
  query_ctx_t stack;
  if (!p || !cb) return PRESENCE_EINVAL;
  if (presence_id_check(user_id)) return PRESENCE_EID;
  query_ctx_t *c = query_ctx(p, &stack);
  if (!c) return PRESENCE_ENOMEM;
  c->user_cb = cb;
  c->ud = ud;
  int rc = p->store->ops->user_query(p->store, user_id, user_adapter, c);
  if (rc < 0) query_done(c);
  return rc;
}

static void sessions_adapter(void *ud, int status,
                             const presence_session_info_t *s, size_t n) {
  query_ctx_t *c = ud;
  c->sessions_cb(c->p, status, s, n, c->ud);
  query_done(c);
}

int presence_sessions_query(presence_t *p, const char *user_id,
                            presence_sessions_cb cb, void *ud) {
  query_ctx_t stack;
  if (!p || !cb) return PRESENCE_EINVAL;
  if (presence_id_check(user_id)) return PRESENCE_EID;
  query_ctx_t *c = query_ctx(p, &stack);
  if (!c) return PRESENCE_ENOMEM;
  c->sessions_cb = cb;
  c->ud = ud;
  int rc = p->store->ops->sessions_query(p->store, user_id, sessions_adapter, c);
  if (rc < 0) query_done(c);
  return rc;
}

static void copy_user(presence_t *p, int status, const presence_user_info_t *i,
                      void *ud) {
  (void)p;
  (void)status;
  *(presence_user_info_t *)ud = *i;
}

int presence_user_get(presence_t *p, const char *user_id,
                      presence_user_info_t *out) {
  if (!p || !out) return PRESENCE_EINVAL;
  if (!store_sync(p)) return PRESENCE_ENOTSUP;
  return presence_user_query(p, user_id, copy_user, out);
}

typedef struct sessions_copy {
  presence_session_info_t *out;
  size_t cap;
  size_t n;
} sessions_copy_t;

static void copy_sessions(presence_t *p, int status,
                          const presence_session_info_t *s, size_t n,
                          void *ud) {
  (void)p;
  (void)status;
  sessions_copy_t *c = ud;
  c->n = n;
  for (size_t i = 0; i < n && i < c->cap; i++) c->out[i] = s[i];
}

int presence_sessions_get(presence_t *p, const char *user_id,
                          presence_session_info_t *out, size_t cap) {
  if (!p || (!out && cap)) return PRESENCE_EINVAL;
  if (!store_sync(p)) return PRESENCE_ENOTSUP;
  sessions_copy_t c = {out, cap, 0};
  int rc = presence_sessions_query(p, user_id, copy_sessions, &c);
  return rc < 0 ? rc : (int)c.n;
}

int presence_session_get(presence_t *p, const char *session_id,
                         presence_session_info_t *out) {
  if (!p || !out) return PRESENCE_EINVAL;
  if (presence_id_check(session_id)) return PRESENCE_EID;
  if (!p->store->ops->session_get) return PRESENCE_ENOTSUP;
  return p->store->ops->session_get(p->store, session_id, out);
}

int presence_users_foreach(presence_t *p, presence_user_visit_cb cb,
                           void *ud) {
  if (!p || !cb) return PRESENCE_EINVAL;
  if (!p->store->ops->users_foreach) return PRESENCE_ENOTSUP;
  return p->store->ops->users_foreach(p->store, cb, ud);
}

int presence_stats(presence_t *p, presence_stats_t *out) {
  if (!p || !out) return PRESENCE_EINVAL;
  memset(out, 0, sizeof(*out));
  if (!p->store->ops->stats) return PRESENCE_ENOTSUP;
  return p->store->ops->stats(p->store, out);
}

static void log_adapter(void *ud, int status, const presence_event_t *evs,
                        size_t n) {
  query_ctx_t *c = ud;
  c->log_cb(c->p, status, evs, n, c->ud);
  query_done(c);
}

int presence_log_read(presence_t *p, uint64_t after_seq, size_t max,
                      presence_log_cb cb, void *ud) {
  query_ctx_t stack;
  if (!p || !cb || max == 0) return PRESENCE_EINVAL;
  /* A store of one's own may keep no log (presence_store.h). */
  if (!p->store->ops->log_read) return PRESENCE_ENOTSUP;
  query_ctx_t *c = query_ctx(p, &stack);
  if (!c) return PRESENCE_ENOMEM;
  c->log_cb = cb;
  c->ud = ud;
  int rc = p->store->ops->log_read(p->store, after_seq, max, log_adapter, c);
  if (rc < 0) query_done(c);
  return rc;
}

uint64_t presence_log_last_seq(presence_t *p) {
  if (!p || !p->store->ops->log_last_seq) return 0;
  return p->store->ops->log_last_seq(p->store);
}

/* Several logs (cursor.c reads them through these). */
uint32_t presence_log_count(presence_t *p) {
  if (!p || !p->store->ops->log_count) return 1;
  uint32_t n = p->store->ops->log_count(p->store);
  return n ? n : 1;
}

uint64_t presence_log_last_seq_of(presence_t *p, uint32_t log) {
  if (!p || log >= presence_log_count(p)) return 0;
  if (!p->store->ops->log_count) return presence_log_last_seq(p);
  return p->store->ops->log_last_seq_of(p->store, log);
}

int presence_log_read_of(presence_t *p, uint32_t log, uint64_t after_seq,
                         size_t max, presence_log_cb cb, void *ud) {
  if (!p || log >= presence_log_count(p)) return PRESENCE_EINVAL;
  if (!p->store->ops->log_count)
    return presence_log_read(p, after_seq, max, cb, ud);
  query_ctx_t stack;
  if (!cb || max == 0) return PRESENCE_EINVAL;
  query_ctx_t *c = query_ctx(p, &stack);
  if (!c) return PRESENCE_ENOMEM;
  c->log_cb = cb;
  c->ud = ud;
  int rc = p->store->ops->log_read_of(p->store, log, after_seq, max,
                                      log_adapter, c);
  if (rc < 0) query_done(c);
  return rc;
}

const presence_allocator_t *presence__allocator(const presence_t *p) {
  return &p->alloc;
}

/* ---- channels ---------------------------------------------------------- */

int presence_channel_check(const char *channel) {
  size_t len;
  return presence__id_check_len(channel, &len) ? PRESENCE_ECHANNEL : 0;
}

/* The channel and data of a channel write; w's session part is set. */
static int channel_args(presence_write_t *w, presence_write_kind_t kind,
                        const char *channel, const char *data) {
  if (presence__id_check_len(channel, &w->channel_len))
    return PRESENCE_ECHANNEL;
  w->channel = channel;
  if (data) {
    size_t n = 0;
    while (n <= PRESENCE_DATA_MAX && data[n]) n++;
    if (n > PRESENCE_DATA_MAX) return PRESENCE_EDATA;
    w->data = data;
    w->data_len = n;
  }
  w->kind = kind;
  w->reason = PRESENCE_REASON_EXPLICIT;
  return 0;
}

static int channel_write_f(presence_t *p, const char *session_id,
                           presence_handle_t handle,
                           presence_write_kind_t kind, const char *channel,
                           const char *data, unsigned flags,
                           presence_done_cb done, void *ud) {
  presence_write_t w;
  if (!p) return PRESENCE_EINVAL;
  int rc = session_id ? session_arg(&w, session_id) : handle_arg(&w, handle);
  if (rc) return rc;
  rc = channel_args(&w, kind, channel, data);
  if (rc) return rc;
  w.flags |= flags;
  return submit(p, &w, done, ud);
}

static int channel_write(presence_t *p, const char *session_id,
                         presence_handle_t handle, presence_write_kind_t kind,
                         const char *channel, const char *data,
                         presence_done_cb done, void *ud) {
  return channel_write_f(p, session_id, handle, kind, channel, data, 0, done,
                         ud);
}

int presence_channel_join(presence_t *p, const char *session_id,
                          const char *channel, const char *data,
                          presence_done_cb done, void *ud) {
  if (!session_id) return PRESENCE_EID;
  return channel_write(p, session_id, 0, PRESENCE_WRITE_JOIN, channel, data,
                       done, ud);
}
int presence_channel_update(presence_t *p, const char *session_id,
                            const char *channel, const char *data,
                            presence_done_cb done, void *ud) {
  if (!session_id) return PRESENCE_EID;
  return channel_write(p, session_id, 0, PRESENCE_WRITE_UPDATE, channel, data,
                       done, ud);
}
int presence_channel_leave(presence_t *p, const char *session_id,
                           const char *channel, presence_done_cb done,
                           void *ud) {
  if (!session_id) return PRESENCE_EID;
  return channel_write(p, session_id, 0, PRESENCE_WRITE_LEAVE, channel, NULL,
                       done, ud);
}
int presence_handle_join(presence_t *p, presence_handle_t handle,
                         const char *channel, const char *data,
                         presence_done_cb done, void *ud) {
  return channel_write(p, NULL, handle, PRESENCE_WRITE_JOIN, channel, data,
                       done, ud);
}
int presence_handle_update(presence_t *p, presence_handle_t handle,
                           const char *channel, const char *data,
                           presence_done_cb done, void *ud) {
  return channel_write(p, NULL, handle, PRESENCE_WRITE_UPDATE, channel, data,
                       done, ud);
}
int presence_handle_update_or_undo(presence_t *p, presence_handle_t handle,
                                   const char *channel, const char *data,
                                   presence_done_cb done, void *ud) {
  return channel_write_f(p, NULL, handle, PRESENCE_WRITE_UPDATE, channel, data,
                         PRESENCE_WRITE_F_UNDO, done, ud);
}
int presence_handle_join_or_undo(presence_t *p, presence_handle_t handle,
                                 const char *channel, const char *data,
                                 presence_done_cb done, void *ud) {
  return channel_write_f(p, NULL, handle, PRESENCE_WRITE_JOIN, channel, data,
                         PRESENCE_WRITE_F_UNDO, done, ud);
}
int presence_handle_leave(presence_t *p, presence_handle_t handle,
                          const char *channel, presence_done_cb done,
                          void *ud) {
  return channel_write(p, NULL, handle, PRESENCE_WRITE_LEAVE, channel, NULL,
                       done, ud);
}

int presence_channel_remove_user(presence_t *p, const char *channel,
                                 const char *user_id, presence_done_cb done,
                                 void *ud) {
  presence_write_t w;
  if (!p) return PRESENCE_EINVAL;
  memset(&w, 0, sizeof(w));
  if (presence__id_check_len(user_id, &w.user_id_len)) return PRESENCE_EID;
  w.user_id = user_id;
  int rc = channel_args(&w, PRESENCE_WRITE_REMOVE_USER, channel, NULL);
  if (rc) return rc;
  w.reason = PRESENCE_REASON_KICKED;
  return submit(p, &w, done, ud);
}

typedef struct chan_ctx {
  presence_t *p;
  bool heap;
  presence_members_cb members_cb;
  presence_channels_cb channels_cb;
  void *ud;
} chan_ctx_t;

static chan_ctx_t *chan_ctx(presence_t *p, chan_ctx_t *stack) {
  chan_ctx_t *c = stack;
  if (!store_sync(p)) {
    c = presence__malloc(&p->alloc, sizeof(*c));
    if (!c) return NULL;
  }
  memset(c, 0, sizeof(*c));
  c->p = p;
  c->heap = c != stack;
  return c;
}

static void chan_ctx_done(chan_ctx_t *c) {
  if (c->heap) presence__free(&c->p->alloc, c);
}

static void members_adapter(void *ud, int status,
                            const presence_member_info_t *m, size_t n,
                            uint64_t count, const char *next) {
  chan_ctx_t *c = ud;
  c->members_cb(c->p, status, m, n, count, next, c->ud);
  chan_ctx_done(c);
}

static void channels_adapter(void *ud, int status,
                             const presence_channel_info_t *ch, size_t n,
                             const char *next) {
  chan_ctx_t *c = ud;
  c->channels_cb(c->p, status, ch, n, next, c->ud);
  chan_ctx_done(c);
}

static int channel_members(presence_t *p, const char *channel,
                           const char *after_user_id, size_t limit, bool brief,
                           presence_members_cb cb, void *ud) {
  chan_ctx_t stack;
  if (!p || !cb) return PRESENCE_EINVAL;
  if (presence_channel_check(channel)) return PRESENCE_ECHANNEL;
  if (after_user_id && presence_id_check(after_user_id)) return PRESENCE_EID;
  if (!p->store->ops->channel_members) return PRESENCE_ENOTSUP;
  chan_ctx_t *c = chan_ctx(p, &stack);
  if (!c) return PRESENCE_ENOMEM;
  c->members_cb = cb;
  c->ud = ud;
  int rc = brief && p->store->ops->channel_members_brief
               ? p->store->ops->channel_members_brief(
                     p->store, channel, after_user_id, limit, members_adapter,
                     c)
               : p->store->ops->channel_members(p->store, channel,
                                                after_user_id, limit,
                                                members_adapter, c);
  if (rc < 0) chan_ctx_done(c);
  return rc;
}

int presence_channel_members(presence_t *p, const char *channel,
                             const char *after_user_id, size_t limit,
                             presence_members_cb cb, void *ud) {
  return channel_members(p, channel, after_user_id, limit, false, cb, ud);
}

int presence_channel_members_brief(presence_t *p, const char *channel,
                                   const char *after_user_id, size_t limit,
                                   presence_members_cb cb, void *ud) {
  return channel_members(p, channel, after_user_id, limit, true, cb, ud);
}

int presence_channels_list(presence_t *p, const char *prefix,
                           const char *after, size_t limit,
                           presence_channels_cb cb, void *ud) {
  chan_ctx_t stack;
  if (!p || !cb) return PRESENCE_EINVAL;
  if (!prefix) prefix = "";
  if (strlen(prefix) > PRESENCE_CHANNEL_MAX) return PRESENCE_ECHANNEL;
  if (after && presence_channel_check(after)) return PRESENCE_ECHANNEL;
  if (!p->store->ops->channels_list) return PRESENCE_ENOTSUP;
  chan_ctx_t *c = chan_ctx(p, &stack);
  if (!c) return PRESENCE_ENOMEM;
  c->channels_cb = cb;
  c->ud = ud;
  int rc = p->store->ops->channels_list(p->store, prefix, after, limit,
                                        channels_adapter, c);
  if (rc < 0) chan_ctx_done(c);
  return rc;
}

int presence_user_channels(presence_t *p, const char *user_id,
                           presence_members_cb cb, void *ud) {
  chan_ctx_t stack;
  if (!p || !cb) return PRESENCE_EINVAL;
  if (presence_id_check(user_id)) return PRESENCE_EID;
  if (!p->store->ops->user_channels) return PRESENCE_ENOTSUP;
  chan_ctx_t *c = chan_ctx(p, &stack);
  if (!c) return PRESENCE_ENOMEM;
  c->members_cb = cb;
  c->ud = ud;
  int rc = p->store->ops->user_channels(p->store, user_id, members_adapter, c);
  if (rc < 0) chan_ctx_done(c);
  return rc;
}

int presence_member_get(presence_t *p, const char *channel,
                        const char *user_id, presence_member_info_t *out) {
  if (!p || !out) return PRESENCE_EINVAL;
  if (presence_channel_check(channel)) return PRESENCE_ECHANNEL;
  if (presence_id_check(user_id)) return PRESENCE_EID;
  if (!p->store->ops->member_get) return PRESENCE_ENOTSUP;
  return p->store->ops->member_get(p->store, channel, user_id, out);
}

static void count_only(presence_t *p, int status,
                       const presence_member_info_t *m, size_t n,
                       uint64_t count, const char *next, void *ud) {
  (void)p;
  (void)m;
  (void)n;
  (void)next;
  *(int64_t *)ud = status < 0 ? status : (int64_t)count;
}

int presence_channel_count(presence_t *p, const char *channel) {
  if (!p) return PRESENCE_EINVAL;
  if (!store_sync(p)) return PRESENCE_ENOTSUP;
  int64_t count = 0;
  int rc = presence_channel_members(p, channel, NULL, 0, count_only, &count);
  if (rc < 0) return rc;
  return count > INT32_MAX ? INT32_MAX : (int)count;
}
