/* SPDX-License-Identifier: MIT */
/*
 * The embedded store: every session and user of one process, in memory.
 *
 * It decides transitions the way the Redis store's scripts do: a user's
 * status follows from two counts (sessions, online sessions), so every change
 * is O(1) and never a rescan. The user's *reported* status is kept apart from
 * the counts because of offline grace: a user whose last session ended stays
 * reported online (or idle) until the grace timer fires or a new session
 * cancels it.
 *
 * Memory is the budget here (at most 160 bytes a live session, user records
 * included): ids live inline in their records, times that need no
 * millisecond precision are 32-bit seconds, and the inactivity links exist
 * only when inactivity is configured (they sit in front of the record).
 */
#include "core/internal.h"

#include <stddef.h>
#include <string.h>

/* ---- records ----------------------------------------------------------- */

/* key.spare[] of a session */
#define S_STATUS 0
#define S_REASON 1
#define S_FLAGS 2
#define SF_IDLE_BY_INACTIVITY 0x1

/* key.spare[] of a user */
#define U_STATUS 0 /* reported status */
#define U_FLAGS 1
#define U_END_REASON 2 /* why the last session ended, for a delayed offline */
#define UF_IN_GRACE 0x1

struct muser;

/* The id follows the fixed part, and the metadata (if any) follows the id's
 * NUL: one allocation per session, no pointer for what most sessions lack. */
typedef struct msess {
  presence__hkey_t key;
  uint32_t slot; /* in the handle slab */
  uint32_t gen;  /* the handle's check */
  struct muser *user;
  struct msess *user_next;
  int64_t connected_ms;
  int64_t status_since_ms;
  uint16_t meta_size; /* strlen(meta) + 1; 0: no metadata */
  char id[];
} msess_t;

static inline const char *sess_meta(const msess_t *s) {
  return s->meta_size ? s->id + s->key.len + 1 : NULL;
}

/* In front of a session when inactivity is on: its place in the activity
 * list, least recently active first. */
typedef struct act {
  struct act *prev, *next;
  uint32_t last_active; /* relative monotonic ms */
  uint32_t unused;
} act_t;

typedef struct muser {
  presence__hkey_t key;
  uint32_t n_sessions;
  uint32_t n_online;
  uint32_t grace_gen;  /* bumped to cancel a pending grace entry */
  uint32_t forget_gen; /* bumped to cancel a pending forget entry */
  uint64_t version;
  int64_t since_ms;
  int64_t last_seen_ms;
  msess_t *sessions;
  char id[];
} muser_t;

/* A pending offline (grace) or a pending forget (retention). Each delay is
 * one constant, so entries are pushed in deadline order and a FIFO is
 * exact; a cancelled entry is skipped by its stale generation. A user is
 * freed only by its live forget entry, which comes after every older entry
 * of its own (FIFO) and after its grace entries (retention outlasts grace,
 * see m_attach), so no entry popped later points to a freed user. */
typedef struct user_entry {
  muser_t *user;
  uint32_t gen;
  uint32_t deadline; /* relative monotonic: ms (grace), s (forget) */
} user_entry_t;

typedef struct user_queue {
  user_entry_t *e;
  size_t cap, head, len;
} user_queue_t;

typedef struct mstore {
  presence_store_t base;
  presence_store_host_t h;
  size_t instance_id_len;
  const presence_allocator_t *alloc;
  presence__table_t sessions;
  presence__table_t users;
  presence__log_t *log;
  uint64_t seq;
  int64_t mono_base;
  bool inactivity;
  user_queue_t gq;            /* pending offlines */
  user_queue_t fq;            /* offline users to forget */
  uint32_t retention_s;       /* 0: keep offline users */
  act_t *act_head, *act_tail;
  /* Handles: slab[slot] is the session, or (next free slot + 1) << 1 | 1. */
  uintptr_t *slab;
  uint32_t slab_len, slab_cap;
  uint32_t free_head; /* free slot + 1; 0: none */
  uint32_t gen;
  presence_stats_t stats;
  presence_session_info_t *scratch;
  size_t scratch_cap;
} mstore_t;

static inline act_t *act_of(msess_t *s) { return (act_t *)s - 1; }
static inline msess_t *sess_of_act(act_t *a) { return (msess_t *)(a + 1); }
static inline presence_status_t s_status(const msess_t *s) {
  return (presence_status_t)s->key.spare[S_STATUS];
}
static inline presence_status_t u_status(const muser_t *u) {
  return (presence_status_t)u->key.spare[U_STATUS];
}

static inline uint32_t rel_now(mstore_t *m) {
  return (uint32_t)(m->h.mono_ms(m->h.host_ud) - m->mono_base);
}
static inline bool due(uint32_t deadline, uint32_t now) {
  return (int32_t)(deadline - now) <= 0;
}

/* What the counts say the user is. */
static inline presence_status_t computed(const muser_t *u) {
  if (u->n_sessions == 0) return PRESENCE_OFFLINE;
  return u->n_online ? PRESENCE_ONLINE : PRESENCE_IDLE;
}

/* ---- events ------------------------------------------------------------ */

/* Sizes of an event's strings, +1 each (0 for none), as packing wants them:
 * the records know their ids' lengths, so nothing is measured twice. */
static size_t event_lens(mstore_t *m, const presence_event_t *ev,
                         size_t sid_len, size_t uid_len, size_t lens[4]) {
  lens[0] = ev->session_id ? sid_len + 1 : 0;
  lens[1] = ev->user_id ? uid_len + 1 : 0;
  lens[2] = ev->meta ? strlen(ev->meta) + 1 : 0;
  lens[3] = m->instance_id_len + 1;
  size_t n = presence__event_header_size() + lens[0] + lens[1] + lens[2] +
             lens[3];
  return (n + 7) & ~(size_t)7;
}

static void emit(mstore_t *m, presence_event_t *ev, int64_t now_ms,
                 size_t sid_len, size_t uid_len) {
  ev->seq = ++m->seq;
  ev->ts_ms = now_ms;
  ev->instance_id = m->h.instance_id;
  ev->epoch = m->h.epoch;
  m->stats.events[ev->type]++;
  const void *packed;
  if (ev->session_ids) {
    packed = presence__log_append(m->log, ev);
  } else {
    size_t lens[4];
    size_t n = event_lens(m, ev, sid_len, uid_len, lens);
    packed = presence__log_append_measured(m->log, ev, lens, n);
  }
  if (packed) m->h.emit_packed(m->h.host_ud, packed);
  else m->h.emit(m->h.host_ud, ev);
}

static void emit_session(mstore_t *m, presence_event_type_t type,
                         const msess_t *s, presence_reason_t reason,
                         presence_status_t from, presence_status_t to,
                         int64_t now_ms) {
  presence_event_t ev = {0};
  ev.type = type;
  ev.reason = reason;
  ev.session_id = s->id;
  ev.user_id = s->user->id;
  ev.meta = type == PRESENCE_EV_SESSION_CONNECTED ? sess_meta(s) : NULL;
  ev.from = from;
  ev.to = to;
  ev.user_version = s->user->version;
  emit(m, &ev, now_ms, s->key.len, s->user->key.len);
}

static void stats_leave(mstore_t *m, presence_status_t st) {
  if (st == PRESENCE_ONLINE) m->stats.users_online--;
  if (st == PRESENCE_IDLE) m->stats.users_idle--;
}
static void stats_enter(mstore_t *m, presence_status_t st) {
  if (st == PRESENCE_ONLINE) m->stats.users_online++;
  if (st == PRESENCE_IDLE) m->stats.users_idle++;
}

/* ---- user queues ------------------------------------------------------ */

static int uq_push(mstore_t *m, user_queue_t *q, muser_t *u, uint32_t gen,
                   uint32_t deadline) {
  if (q->len == q->cap) {
    size_t ncap = q->cap ? q->cap * 2 : 64;
    user_entry_t *ne = presence__malloc(m->alloc, ncap * sizeof(*ne));
    if (!ne) return PRESENCE_ENOMEM;
    for (size_t i = 0; i < q->len; i++)
      ne[i] = q->e[(q->head + i) % q->cap];
    presence__free(m->alloc, q->e);
    q->e = ne;
    q->cap = ncap;
    q->head = 0;
  }
  user_entry_t *e = &q->e[(q->head + q->len) % q->cap];
  e->user = u;
  e->gen = gen;
  e->deadline = deadline;
  q->len++;
  return 0;
}

static void uq_pop(user_queue_t *q) {
  q->head = (q->head + 1) % q->cap;
  q->len--;
}

/* Set the user's reported status and emit the transition, if it is one. */
static void user_transition(mstore_t *m, muser_t *u, presence_status_t to,
                            presence_reason_t reason, const msess_t *cause,
                            int64_t now_ms) {
  presence_status_t from = u_status(u);
  if (from == to) return;
  stats_leave(m, from);
  stats_enter(m, to);
  u->key.spare[U_STATUS] = (uint8_t)to;
  u->version++;
  u->since_ms = now_ms;
  /* Going offline keeps last_seen: it was set when the last session ended,
   * which is when the user was really last seen (grace may fire later). */
  if (to != PRESENCE_OFFLINE) {
    u->last_seen_ms = now_ms;
    u->forget_gen++; /* back: a pending forget no longer applies */
  } else if (m->retention_s) {
    /* Without memory: the user stays (ENOMEM is no reason to lose an
     * event), only longer than asked. */
    (void)uq_push(m, &m->fq, u, u->forget_gen,
                  (uint32_t)((m->h.mono_ms(m->h.host_ud) - m->mono_base) /
                             1000) +
                      m->retention_s);
  }
  presence_event_t ev = {0};
  ev.type = to == PRESENCE_ONLINE ? PRESENCE_EV_USER_ONLINE
            : to == PRESENCE_IDLE ? PRESENCE_EV_USER_IDLE
                                  : PRESENCE_EV_USER_OFFLINE;
  ev.reason = reason;
  ev.user_id = u->id;
  ev.session_id = cause ? cause->id : NULL;
  ev.from = from;
  ev.to = to;
  ev.user_version = u->version;
  ev.last_seen_ms = u->last_seen_ms;
  emit(m, &ev, now_ms, cause ? cause->key.len : 0, u->key.len);
}

/* ---- grace ------------------------------------------------------------- */

static int grace_push(mstore_t *m, muser_t *u, uint32_t deadline) {
  int rc = uq_push(m, &m->gq, u, u->grace_gen + 1, deadline);
  if (rc) return rc;
  u->grace_gen++;
  u->key.spare[U_FLAGS] |= UF_IN_GRACE;
  return 0;
}

static void grace_cancel(muser_t *u) {
  if (u->key.spare[U_FLAGS] & UF_IN_GRACE) {
    u->key.spare[U_FLAGS] &= (uint8_t)~UF_IN_GRACE;
    u->grace_gen++;
  }
}

/* ---- activity ---------------------------------------------------------- */

static void act_unlink(mstore_t *m, act_t *a) {
  if (!a->prev && m->act_head != a) return; /* not linked */
  if (a->prev) a->prev->next = a->next;
  else m->act_head = a->next;
  if (a->next) a->next->prev = a->prev;
  else m->act_tail = a->prev;
  a->prev = a->next = NULL;
}

static void act_push(mstore_t *m, act_t *a, uint32_t now) {
  a->last_active = now;
  a->prev = m->act_tail;
  a->next = NULL;
  if (m->act_tail) m->act_tail->next = a;
  else m->act_head = a;
  m->act_tail = a;
}

/* ---- handles ----------------------------------------------------------- */

static int slab_take(mstore_t *m, msess_t *s) {
  uint32_t slot;
  if (m->free_head) {
    slot = m->free_head - 1;
    m->free_head = (uint32_t)(m->slab[slot] >> 1);
  } else {
    if (m->slab_len == m->slab_cap) {
      uint32_t ncap = m->slab_cap ? m->slab_cap + m->slab_cap / 2 : 1024;
      uintptr_t *n =
          presence__realloc(m->alloc, m->slab, ncap * sizeof(uintptr_t));
      if (!n) return PRESENCE_ENOMEM;
      m->slab = n;
      m->slab_cap = ncap;
    }
    slot = m->slab_len++;
  }
  m->slab[slot] = (uintptr_t)s;
  s->slot = slot;
  /* Generation 0 never names a session, so a zero handle is never valid. */
  if (++m->gen == 0) m->gen = 1;
  s->gen = m->gen;
  return 0;
}

static void slab_release(mstore_t *m, msess_t *s) {
  m->slab[s->slot] = ((uintptr_t)m->free_head << 1) | 1;
  m->free_head = s->slot + 1;
}

static inline presence_handle_t handle_of(const msess_t *s) {
  return ((presence_handle_t)s->gen << 32) | (s->slot + 1);
}

/* The session a write names, by handle or by id; NULL if not connected. */
static msess_t *write_session(mstore_t *m, const presence_write_t *w) {
  if (w->handle) {
    uint32_t slot = (uint32_t)(w->handle & 0xffffffffu) - 1;
    if (slot >= m->slab_len) return NULL;
    uintptr_t e = m->slab[slot];
    if (e & 1) return NULL;
    msess_t *s = (msess_t *)e;
    return s->gen == (uint32_t)(w->handle >> 32) ? s : NULL;
  }
  uint32_t sh = presence__hash(w->session_id, w->session_id_len);
  return presence__table_find(&m->sessions, w->session_id, w->session_id_len,
                              sh);
}

/* ---- operations -------------------------------------------------------- */

static muser_t *user_get_or_create(mstore_t *m, const char *id, size_t len,
                                   uint32_t hash) {
  muser_t *u = presence__table_find(&m->users, id, len, hash);
  if (u) return u;
  u = presence__malloc(m->alloc, sizeof(muser_t) + len + 1);
  if (!u) return NULL;
  memset(u, 0, sizeof(*u));
  u->key.hash = hash;
  u->key.len = (uint8_t)len;
  memcpy(u->id, id, len);
  u->id[len] = '\0';
  if (presence__table_insert(&m->users, u)) {
    presence__free(m->alloc, u);
    return NULL;
  }
  m->stats.users_known++;
  return u;
}

static void session_free(mstore_t *m, msess_t *s) {
  presence__free(m->alloc, m->inactivity ? (void *)act_of(s) : (void *)s);
}

static int op_connect(mstore_t *m, const presence_write_t *w) {
  uint32_t sh = presence__hash(w->session_id, w->session_id_len);
  if (presence__table_find(&m->sessions, w->session_id, w->session_id_len, sh))
    return PRESENCE_EEXIST;
  uint32_t uh = presence__hash(w->user_id, w->user_id_len);
  muser_t *u = user_get_or_create(m, w->user_id, w->user_id_len, uh);
  if (!u) return PRESENCE_ENOMEM;
  if (m->h.max_sessions_per_user &&
      u->n_sessions >= m->h.max_sessions_per_user)
    return PRESENCE_ELIMIT;

  size_t pre = m->inactivity ? sizeof(act_t) : 0;
  size_t meta_size = w->meta ? w->meta_len + 1 : 0;
  size_t fixed = offsetof(msess_t, id);
  char *block = presence__malloc(m->alloc, pre + fixed + w->session_id_len +
                                               1 + meta_size);
  if (!block) return PRESENCE_ENOMEM;
  msess_t *s = (msess_t *)(block + pre);
  memset(s, 0, fixed);
  s->meta_size = (uint16_t)meta_size;
  if (w->meta) {
    char *meta = s->id + w->session_id_len + 1;
    memcpy(meta, w->meta, w->meta_len);
    meta[w->meta_len] = '\0';
  }
  s->key.hash = sh;
  s->key.len = (uint8_t)w->session_id_len;
  s->key.spare[S_STATUS] = PRESENCE_ONLINE;
  s->key.spare[S_REASON] = PRESENCE_REASON_CONNECT;
  memcpy(s->id, w->session_id, w->session_id_len);
  s->id[w->session_id_len] = '\0';
  if (slab_take(m, s)) {
    session_free(m, s);
    return PRESENCE_ENOMEM;
  }
  if (presence__table_insert(&m->sessions, s)) {
    slab_release(m, s);
    session_free(m, s);
    return PRESENCE_ENOMEM;
  }
  if (w->handle_out) *w->handle_out = handle_of(s);
  int64_t now = m->h.wall_ms(m->h.host_ud);
  s->connected_ms = s->status_since_ms = now;
  s->user = u;
  s->user_next = u->sessions;
  u->sessions = s;
  u->n_sessions++;
  u->n_online++;
  m->stats.sessions++;
  if (m->inactivity) {
    act_t *a = act_of(s);
    act_push(m, a, rel_now(m));
  }
  grace_cancel(u);
  emit_session(m, PRESENCE_EV_SESSION_CONNECTED, s, PRESENCE_REASON_CONNECT,
               PRESENCE_OFFLINE, PRESENCE_ONLINE, now);
  user_transition(m, u, PRESENCE_ONLINE, PRESENCE_REASON_CONNECT, s, now);
  u->last_seen_ms = now;
  return 0;
}

static int op_end(mstore_t *m, const presence_write_t *w) {
  msess_t *s = write_session(m, w);
  if (!s) return PRESENCE_ENOSESSION;
  muser_t *u = s->user;
  presence_status_t was = s_status(s);
  presence__table_remove(&m->sessions, s);
  slab_release(m, s);
  for (msess_t **pp = &u->sessions; *pp; pp = &(*pp)->user_next) {
    if (*pp == s) {
      *pp = s->user_next;
      break;
    }
  }
  u->n_sessions--;
  if (was == PRESENCE_ONLINE) u->n_online--;
  m->stats.sessions--;
  if (m->inactivity) act_unlink(m, act_of(s));

  int64_t now = m->h.wall_ms(m->h.host_ud);
  u->last_seen_ms = now;
  emit_session(m, PRESENCE_EV_SESSION_DISCONNECTED, s, w->reason, was,
               PRESENCE_OFFLINE, now);
  presence_status_t to = computed(u);
  /* Grace covers the cases where the user may simply be back in a moment
   * (a reload, a network blip); a kick or a cleanup is final, and so is a
   * shutdown here: this store ends with its process, so nobody can come back
   * to it inside the window. (A shared store sees that differently: the user
   * may reconnect to another instance.) */
  bool graceful = w->reason != PRESENCE_REASON_KICKED &&
                  w->reason != PRESENCE_REASON_INSTANCE_LOST &&
                  w->reason != PRESENCE_REASON_SHUTDOWN;
  if (to == PRESENCE_OFFLINE && m->h.offline_grace_ms && graceful) {
    u->key.spare[U_END_REASON] = (uint8_t)w->reason;
    if (grace_push(m, u, rel_now(m) + m->h.offline_grace_ms))
      user_transition(m, u, to, w->reason, s, now);
  } else {
    user_transition(m, u, to, w->reason, s, now);
  }
  session_free(m, s);
  return 0;
}

/* Change one session's status and whatever user transition follows. */
static void set_status(mstore_t *m, msess_t *s, presence_status_t to,
                       presence_reason_t reason) {
  presence_status_t from = s_status(s);
  muser_t *u = s->user;
  int64_t now = m->h.wall_ms(m->h.host_ud);
  s->key.spare[S_STATUS] = (uint8_t)to;
  s->key.spare[S_REASON] = (uint8_t)reason;
  s->status_since_ms = now;
  if (to == PRESENCE_ONLINE) u->n_online++;
  else u->n_online--;
  u->last_seen_ms = now;
  emit_session(m, PRESENCE_EV_SESSION_STATUS, s, reason, from, to, now);
  user_transition(m, u, computed(u), reason, s, now);
}

static int op_set_status(mstore_t *m, const presence_write_t *w) {
  msess_t *s = write_session(m, w);
  if (!s) return PRESENCE_ENOSESSION;
  uint8_t *flags = &s->key.spare[S_FLAGS];
  if (m->inactivity && w->reason == PRESENCE_REASON_EXPLICIT) {
    /* An explicit status is activity, and takes the status out of the
     * inactivity timer's hands. */
    act_t *a = act_of(s);
    act_unlink(m, a);
    act_push(m, a, rel_now(m));
    *flags &= (uint8_t)~SF_IDLE_BY_INACTIVITY;
  }
  if (s_status(s) == w->status) return 0;
  set_status(m, s, w->status, w->reason);
  return 0;
}

static int op_touch(mstore_t *m, const presence_write_t *w) {
  msess_t *s = write_session(m, w);
  if (!s) return PRESENCE_ENOSESSION;
  if (!m->inactivity) return 0;
  act_t *a = act_of(s);
  uint8_t *flags = &s->key.spare[S_FLAGS];
  bool was_idle_by_inactivity = *flags & SF_IDLE_BY_INACTIVITY;
  bool explicit_idle = s_status(s) == PRESENCE_IDLE && !was_idle_by_inactivity;
  if (explicit_idle) return 0; /* only the client brings it back */
  act_unlink(m, a);
  act_push(m, a, rel_now(m));
  if (was_idle_by_inactivity) {
    *flags &= (uint8_t)~SF_IDLE_BY_INACTIVITY;
    set_status(m, s, PRESENCE_ONLINE, PRESENCE_REASON_INACTIVITY);
  }
  return 0;
}

/* Fresh start: every session removed, every present user offline, then one
 * cleanup event without a session list. */
static int op_reset(mstore_t *m) {
  int64_t now = m->h.wall_ms(m->h.host_ud);
  size_t pos = 0;
  muser_t *u;
  while ((u = presence__table_next(&m->users, &pos))) {
    while (u->sessions) {
      msess_t *s = u->sessions;
      presence_status_t was = s_status(s);
      u->sessions = s->user_next;
      presence__table_remove(&m->sessions, s);
      slab_release(m, s);
      u->n_sessions--;
      if (was == PRESENCE_ONLINE) u->n_online--;
      m->stats.sessions--;
      if (m->inactivity) act_unlink(m, act_of(s));
      emit_session(m, PRESENCE_EV_SESSION_DISCONNECTED, s,
                   PRESENCE_REASON_INSTANCE_LOST, was, PRESENCE_OFFLINE, now);
      session_free(m, s);
    }
    grace_cancel(u);
    if (u_status(u) != PRESENCE_OFFLINE) u->last_seen_ms = now;
    user_transition(m, u, PRESENCE_OFFLINE, PRESENCE_REASON_INSTANCE_LOST, NULL,
                    now);
  }
  m->gq.len = m->gq.head = 0;
  presence_event_t ev = {0};
  ev.type = PRESENCE_EV_CLEANUP;
  ev.reason = PRESENCE_REASON_INSTANCE_LOST;
  emit(m, &ev, now, 0, 0);
  return 0;
}

static int m_write(presence_store_t *st, const presence_write_t *w,
                   presence_store_done_fn done, void *ud) {
  mstore_t *m = (mstore_t *)st;
  int rc;
  switch (w->kind) {
  case PRESENCE_WRITE_CONNECT:
    rc = op_connect(m, w);
    break;
  case PRESENCE_WRITE_END:
    rc = op_end(m, w);
    break;
  case PRESENCE_WRITE_SET_STATUS:
    rc = op_set_status(m, w);
    break;
  case PRESENCE_WRITE_TOUCH:
    rc = op_touch(m, w);
    break;
  case PRESENCE_WRITE_RESET:
    rc = op_reset(m);
    break;
  default:
    rc = PRESENCE_EINVAL;
  }
  if (rc) return rc;
  if (done) done(ud, 0);
  return 0;
}

static int64_t m_tick(presence_store_t *st, int64_t now_mono) {
  mstore_t *m = (mstore_t *)st;
  uint32_t now = (uint32_t)(now_mono - m->mono_base);
  int64_t next = -1;
  int64_t wall = 0;
  while (m->gq.len) {
    user_entry_t *e = &m->gq.e[m->gq.head];
    muser_t *u = e->user;
    bool live = u->grace_gen == e->gen && (u->key.spare[U_FLAGS] & UF_IN_GRACE);
    if (live && !due(e->deadline, now)) {
      next = (int32_t)(e->deadline - now);
      break;
    }
    uq_pop(&m->gq);
    if (!live) continue;
    u->key.spare[U_FLAGS] &= (uint8_t)~UF_IN_GRACE;
    if (!wall) wall = m->h.wall_ms(m->h.host_ud);
    user_transition(m, u, PRESENCE_OFFLINE,
                    (presence_reason_t)u->key.spare[U_END_REASON], NULL, wall);
  }
  /* Offline users past their retention: forgotten, as if never seen. */
  uint32_t now_s = (uint32_t)((now_mono - m->mono_base) / 1000);
  while (m->fq.len) {
    user_entry_t *e = &m->fq.e[m->fq.head];
    muser_t *u = e->user;
    bool live = u->forget_gen == e->gen && u_status(u) == PRESENCE_OFFLINE &&
                !u->n_sessions && !(u->key.spare[U_FLAGS] & UF_IN_GRACE);
    if (live && e->deadline > now_s) {
      int64_t d = ((int64_t)e->deadline * 1000) - (now_mono - m->mono_base);
      if (next < 0 || d < next) next = d;
      break;
    }
    uq_pop(&m->fq);
    if (!live) continue;
    presence__table_remove(&m->users, u);
    presence__free(m->alloc, u);
    m->stats.users_known--;
  }
  if (m->inactivity) {
    uint32_t limit = m->h.inactivity_ms;
    while (m->act_head) {
      act_t *a = m->act_head;
      uint32_t deadline = a->last_active + limit;
      if (!due(deadline, now)) {
        int64_t d = (int32_t)(deadline - now);
        if (next < 0 || d < next) next = d;
        break;
      }
      act_unlink(m, a);
      msess_t *s = sess_of_act(a);
      if (s_status(s) == PRESENCE_ONLINE) {
        s->key.spare[S_FLAGS] |= SF_IDLE_BY_INACTIVITY;
        set_status(m, s, PRESENCE_IDLE, PRESENCE_REASON_INACTIVITY);
      }
    }
  }
  return next;
}

/* ---- queries ----------------------------------------------------------- */

static void fill_user(mstore_t *m, const muser_t *u, presence_user_info_t *o) {
  o->user_id = u->id;
  o->status = u_status(u);
  o->since_ms = u->since_ms;
  /* A present user is being seen now. */
  o->last_seen_ms = o->status != PRESENCE_OFFLINE
                        ? m->h.wall_ms(m->h.host_ud)
                        : u->last_seen_ms;
  o->session_count = u->n_sessions;
  o->online_count = u->n_online;
  o->version = u->version;
}

static void fill_session(mstore_t *m, const msess_t *s,
                         presence_session_info_t *o) {
  o->session_id = s->id;
  o->user_id = s->user->id;
  o->meta = sess_meta(s);
  o->instance_id = m->h.instance_id;
  o->status = s_status(s);
  o->status_reason = (presence_reason_t)s->key.spare[S_REASON];
  o->connected_ms = s->connected_ms;
  o->status_since_ms = s->status_since_ms;
}

static muser_t *find_user(mstore_t *m, const char *id) {
  size_t n = strlen(id);
  return presence__table_find(&m->users, id, n, presence__hash(id, n));
}

static int m_user_query(presence_store_t *st, const char *user_id,
                        void (*cb)(void *, int, const presence_user_info_t *),
                        void *ud) {
  mstore_t *m = (mstore_t *)st;
  presence_user_info_t info = {0};
  muser_t *u = find_user(m, user_id);
  if (u) fill_user(m, u, &info);
  else info.user_id = user_id;
  cb(ud, 0, &info);
  return 0;
}

static int m_sessions_query(presence_store_t *st, const char *user_id,
                            void (*cb)(void *, int,
                                       const presence_session_info_t *, size_t),
                            void *ud) {
  mstore_t *m = (mstore_t *)st;
  muser_t *u = find_user(m, user_id);
  size_t n = u ? u->n_sessions : 0;
  if (n > m->scratch_cap) {
    presence_session_info_t *s =
        presence__realloc(m->alloc, m->scratch, n * sizeof(*s));
    if (!s) return PRESENCE_ENOMEM;
    m->scratch = s;
    m->scratch_cap = n;
  }
  size_t i = 0;
  for (msess_t *s = u ? u->sessions : NULL; s; s = s->user_next)
    fill_session(m, s, &m->scratch[i++]);
  cb(ud, 0, m->scratch, n);
  return 0;
}

static int m_session_get(presence_store_t *st, const char *session_id,
                         presence_session_info_t *out) {
  mstore_t *m = (mstore_t *)st;
  size_t n = strlen(session_id);
  msess_t *s = presence__table_find(&m->sessions, session_id, n,
                                    presence__hash(session_id, n));
  if (!s) return PRESENCE_ENOSESSION;
  fill_session(m, s, out);
  return 0;
}

static int m_users_foreach(presence_store_t *st, presence_user_visit_cb cb,
                           void *ud) {
  mstore_t *m = (mstore_t *)st;
  size_t pos = 0;
  int visited = 0;
  muser_t *u;
  while ((u = presence__table_next(&m->users, &pos))) {
    presence_user_info_t info;
    fill_user(m, u, &info);
    visited++;
    if (cb(&info, ud)) break;
  }
  return visited;
}

static int m_stats(presence_store_t *st, presence_stats_t *out) {
  mstore_t *m = (mstore_t *)st;
  *out = m->stats;
  out->last_seq = m->seq;
  return 0;
}

static int m_log_read(presence_store_t *st, uint64_t after_seq, size_t max,
                      void (*cb)(void *, int, const presence_event_t *, size_t),
                      void *ud) {
  mstore_t *m = (mstore_t *)st;
  return presence__log_read(m->log, after_seq, max, cb, ud);
}

static uint64_t m_log_last_seq(presence_store_t *st) {
  return ((mstore_t *)st)->seq;
}

/* ---- lifecycle --------------------------------------------------------- */

static int m_attach(presence_store_t *st, const presence_store_host_t *host) {
  mstore_t *m = (mstore_t *)st;
  m->h = *host;
  m->instance_id_len = strlen(host->instance_id);
  m->mono_base = host->mono_ms(host->host_ud);
  m->inactivity = host->inactivity_ms != 0;
  /* Retention outlasts grace: a user is forgotten only after every grace
   * entry that may point to it has left the queue (see user_entry_t). */
  m->retention_s = host->offline_retention_s;
  if (m->retention_s && (uint64_t)m->retention_s * 1000 <= host->offline_grace_ms)
    m->retention_s = host->offline_grace_ms / 1000 + 1;
  int rc = presence__table_init(&m->sessions, m->alloc, offsetof(msess_t, id));
  if (rc) return rc;
  rc = presence__table_init(&m->users, m->alloc, offsetof(muser_t, id));
  if (rc) return rc;
  if (host->expected_sessions) {
    rc = presence__table_reserve(&m->sessions, host->expected_sessions);
    if (rc) return rc;
  }
  if (host->expected_users) {
    rc = presence__table_reserve(&m->users, host->expected_users);
    if (rc) return rc;
  }
  m->log = presence__log_new(m->alloc, host->log_capacity);
  return m->log ? 0 : PRESENCE_ENOMEM;
}

static void m_destroy(presence_store_t *st) {
  mstore_t *m = (mstore_t *)st;
  const presence_allocator_t *a = m->alloc;
  size_t pos = 0;
  muser_t *u;
  if (m->users.slots) {
    while ((u = presence__table_next(&m->users, &pos))) {
      msess_t *s = u->sessions;
      while (s) {
        msess_t *next = s->user_next;
        session_free(m, s);
        s = next;
      }
      presence__free(a, u);
    }
  }
  presence__table_free(&m->sessions);
  presence__table_free(&m->users);
  presence__log_free(m->log);
  presence__free(a, m->gq.e);
  presence__free(a, m->fq.e);
  presence__free(a, m->slab);
  presence__free(a, m->scratch);
  presence__free(a, m);
}

static const presence_store_ops_t memory_ops = {
    .name = "memory",
    .flags = PRESENCE_STORE_SYNC,
    .attach = m_attach,
    .write = m_write,
    .tick = m_tick,
    .user_query = m_user_query,
    .sessions_query = m_sessions_query,
    .session_get = m_session_get,
    .users_foreach = m_users_foreach,
    .stats = m_stats,
    .log_read = m_log_read,
    .log_last_seq = m_log_last_seq,
    .destroy = m_destroy,
};

presence_store_t *presence_store_memory_new(const presence_allocator_t *alloc) {
  const presence_allocator_t *a = alloc ? alloc : presence__default_allocator();
  mstore_t *m = presence__malloc(a, sizeof(*m));
  if (!m) return NULL;
  memset(m, 0, sizeof(*m));
  m->base.ops = &memory_ops;
  m->alloc = a;
  return &m->base;
}
