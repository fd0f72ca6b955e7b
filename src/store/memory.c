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
 * Memory is the budget here (issue 21: 160 bytes a live session at one
 * session per user, its user record included; docs/internals/core.md has
 * where the bytes go): ids live inline in their records (a UUID session id
 * as its 16 bytes), records link each other by pool index where 4 bytes
 * are enough, timers' deadlines are 32-bit relative times, and the
 * inactivity links exist only when inactivity is configured (they sit in
 * front of the record).
 */
#include "core/internal.h"
#include "core/uuid.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

/* ---- records ----------------------------------------------------------- */

/* key.spare[] of a session */
#define S_STATE 0 /* its status (bits 0-1) and flags (SF_*) */
#define S_REASON 1
#define S_DEV 2 /* device kind, an index into the store's words */
#define S_STATUS_BITS 0x3u
#define SF_IDLE_BY_INACTIVITY 0x4
#define SF_ID_TEXT 0x8 /* a compact id's text is kept apart (sid_text_keep) */
#define SF_META 0x10   /* metadata follows the id */

/* key.spare[] of a user */
#define U_STATE 0 /* reported status (bits 0-1), why the last session ended
                     (above them, for a delayed offline) */
#define U_FLAGS 1
#define U_AVAIL 2 /* presence_availability_t */
#define UF_IN_GRACE 0x1
#define UF_MIXED_DEV 0x2 /* its sessions are of more than one device kind */

/* 48 bits in 6 bytes, for the session and user records' times and
 * pointers: a wall-clock millisecond fits 47 bits and a sign for about
 * 4,460 years either side of 1970, and a user-space address fits 48 bits
 * on the platforms the record table already asks that of (table.c keeps 48
 * of a pointer). With the hashes the tables no longer keep, these take a
 * session record from the 72-byte pool class to 56 and a user's from 96 to
 * 80 (docs/internals/core.md, "Memory per session"). Bytes, not a
 * bit-field: no alignment, no padding. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* A 4- and a 2-byte move each way, in registers: the byte loop below is
 * not merged into them by every compiler, and a 6-byte memcpy into a
 * zeroed uint64_t goes through the stack, two narrow stores read back
 * wide, which the CPU cannot forward (a stall on the way from a session to
 * its user, ~10 % of a status change). */
static inline void u48_put(uint8_t b[6], uint64_t v) {
  uint32_t lo = (uint32_t)v;
  uint16_t hi = (uint16_t)(v >> 32);
  memcpy(b, &lo, 4);
  memcpy(b + 4, &hi, 2);
}
static inline uint64_t u48_get(const uint8_t b[6]) {
  uint32_t lo;
  uint16_t hi;
  memcpy(&lo, b, 4);
  memcpy(&hi, b + 4, 2);
  return (uint64_t)lo | (uint64_t)hi << 32;
}
#else
static inline void u48_put(uint8_t b[6], uint64_t v) {
  for (int i = 0; i < 6; i++) b[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t u48_get(const uint8_t b[6]) {
  uint64_t v = 0;
  for (int i = 0; i < 6; i++) v |= (uint64_t)b[i] << (8 * i);
  return v;
}
#endif
#define T48_MAX (((int64_t)1 << 47) - 1)
/* A time beyond +-2^47 ms (a host's clock that far off) is held at the
 * limit rather than wrapped. */
static inline void t48_put(uint8_t b[6], int64_t ms) {
  if (ms > T48_MAX) ms = T48_MAX;
  if (ms < -T48_MAX) ms = -T48_MAX;
  u48_put(b, (uint64_t)ms);
}
static inline int64_t t48_get(const uint8_t b[6]) {
  uint64_t v = u48_get(b);
  return (int64_t)(v ^ 0x800000000000ull) - (int64_t)0x800000000000ll;
}
static inline void p48_put(uint8_t b[6], const void *p) {
  uintptr_t a = (uintptr_t)p;
  assert((uint64_t)a >> 48 == 0);
  u48_put(b, (uint64_t)a);
}
static inline void *p48_get(const uint8_t b[6]) {
  return (void *)(uintptr_t)u48_get(b);
}

struct muser;
struct mjoin;
struct mmember;

/* The id follows the fixed part, and the metadata (if any, SF_META)
 * follows the id's NUL: one allocation per session, no pointer for what most
 * sessions lack. A canonical lowercase UUID (presenced's own session ids,
 * and most hosts') is held as its 16 bytes, key.len PRESENCE__KEY_BIN16 and
 * no NUL: 20 bytes less a session, see "compact session ids" below. The
 * fixed part is 40 bytes, so such a session is a 56-byte block:
 *   - the table computes the key's hash when it needs it (insert, remove,
 *     growth), and key.own holds the next of the user's sessions, as its
 *     block's index in the session pool plus one (0: none);
 *   - the status, reason, flags and device sit in key.spare;
 *   - the user and join list pointers and both times take 48 bits each. */
typedef struct msess {
  presence__hkey_t key;
  uint32_t slot; /* the block's index in the session pool (set by the pool) */
  uint32_t gen;  /* the handle's check; 0 while the block is free */
  uint8_t user48[6];  /* struct muser * */
  uint8_t joins48[6]; /* struct mjoin *: channels joined, in join order */
  uint8_t connected48[6];
  uint8_t status_since48[6];
  char id[];
} msess_t;
_Static_assert(offsetof(msess_t, id) == 40, "a compact session is 56 bytes");

static inline struct muser *sess_user(const msess_t *s) {
  return p48_get(s->user48);
}
static inline struct mjoin *sess_joins(const msess_t *s) {
  return p48_get(s->joins48);
}
static inline void sess_set_joins(msess_t *s, struct mjoin *j) {
  p48_put(s->joins48, j);
}
static inline uint8_t sess_dev(const msess_t *s) {
  return s->key.spare[S_DEV];
}

/* Bytes the id takes in the record, by key.len. */
static inline size_t sid_bytes(size_t key_len) {
  return key_len == PRESENCE__KEY_BIN16 ? 16 : key_len + 1;
}
/* The length of the id's text. */
static inline size_t sid_len(const msess_t *s) {
  return s->key.len == PRESENCE__KEY_BIN16 ? 36 : s->key.len;
}

static inline const char *sess_meta(const msess_t *s) {
  return (s->key.spare[S_STATE] & SF_META) ? s->id + sid_bytes(s->key.len)
                                           : NULL;
}
/* strlen(meta) + 1, 0 without: kept nowhere, as it is asked for only when
 * the session's block goes back to the pool. */
static inline size_t sess_meta_size(const msess_t *s) {
  const char *meta = sess_meta(s);
  return meta ? strlen(meta) + 1 : 0;
}

/* In front of a session when inactivity is on: its place in the activity
 * list, least recently active first. */
typedef struct act {
  struct act *prev, *next;
  uint32_t last_active; /* relative monotonic ms */
  uint32_t unused;
} act_t;

/* Bytes of a session's block (records live in the store's pool, which
 * wants the size back), the inactivity links included when they are on.
 * key_len as in key.len. */
static inline size_t sess_block_size(bool inactivity, size_t key_len,
                                      size_t meta_size) {
  return (inactivity ? sizeof(act_t) : 0) + offsetof(msess_t, id) +
         sid_bytes(key_len) + meta_size;
}
static inline size_t sess_size(bool inactivity, const msess_t *s) {
  return sess_block_size(inactivity, s->key.len, sess_meta_size(s));
}
/* The session pool keeps a free block's index and generation readable
 * (pool.c): they must be adjacent, index first. And every session fits the
 * pool, the longest id and metadata included. */
_Static_assert(offsetof(msess_t, gen) == offsetof(msess_t, slot) + 4,
               "slot and gen adjacent");
_Static_assert(sizeof(act_t) + offsetof(msess_t, id) + PRESENCE_ID_MAX + 1 +
                       PRESENCE_META_MAX + 1 <=
                   PRESENCE__POOL_MAX,
               "every session fits the session pool");

/* The fixed part is 63 bytes, so a user with an id of up to 16 characters
 * is an 80-byte block: the table computes the key's hash (key.own is the
 * generation below), the status, end reason, flags and availability sit in
 * key.spare, the times take 48 bits each, the version 32. */
typedef struct muser {
  /* key.own: bumped to cancel a pending grace or forget entry. One
   * counter serves both queues: a grace entry is live only while the user
   * is in grace (reported present, no session) and a forget entry only
   * while it is offline outside grace, so no user has a live entry in
   * both, and every bump that cancels one kind finds none of the other
   * live. */
  presence__hkey_t key;
  struct mmember *members; /* channel memberships, including ones in grace */
  struct uext *ext;        /* what the person set; NULL: nothing yet */
  uint32_t n_sessions;
  uint32_t n_online;
  /* The newest session, as its index in the session pool plus one (0:
   * none); the rest follow through the sessions' key.own. */
  uint32_t sessions;
  /* 32 bits, as the shown one and a member's: it moves with the user's
   * own events only (not with each session's), so a wrap is billions of
   * one user's events away. */
  uint32_t version;
  /* What watchers are shown as the version: bumped only by events they see
   * (shown_bump), so it reveals no hidden change. */
  uint32_t shown_version;
  uint8_t since48[6];
  uint8_t last_seen48[6];
  uint8_t last_active48[6]; /* when last online (not idle) */
  uint8_t dev; /* every session's device, unless UF_MIXED_DEV */
  char id[];
} muser_t;
_Static_assert(offsetof(muser_t, id) == 63,
               "a user with a 16-character id is 80 bytes");

static inline presence_availability_t u_avail(const muser_t *u) {
  return (presence_availability_t)u->key.spare[U_AVAIL];
}
static inline presence_reason_t u_end_reason(const muser_t *u) {
  return (presence_reason_t)(u->key.spare[U_STATE] >> 2);
}
static inline void u_set_end_reason(muser_t *u, presence_reason_t r) {
  u->key.spare[U_STATE] =
      (uint8_t)((u->key.spare[U_STATE] & S_STATUS_BITS) | ((unsigned)r << 2));
}
_Static_assert(PRESENCE_REASON_COUNT_ <= 64, "a reason fits 6 bits");
_Static_assert(offsetof(muser_t, id) + PRESENCE_ID_MAX + 1 <= PRESENCE__POOL_MAX,
               "every user record is pooled (m_destroy frees none of them)");

/*
 * What a person set beside their availability, kept apart from the user
 * record because most users never set any: one allocation, the text and the
 * emoji inline after it (text NUL emoji NUL).
 */
typedef struct uext {
  int64_t avail_since_ms;
  /* The veil: the last period the user spent invisible, [from, to] ms,
   * kept when it left invisible (veil_keep; to 0: none). Watchers are
   * shown no time inside it (json.c, docs/protocol.md 6.1). Here, where
   * only users who set something have room, and read only by a query or a
   * user going offline: no status change pays for it. */
  int64_t veil_from_ms, veil_to_ms;
  int64_t msg_set_ms;
  int64_t msg_expires_ms; /* wall clock; 0: none */
  uint32_t heap_idx;      /* in the expiry heap; NOT_IN_HEAP otherwise */
  uint32_t text_len, emoji_len;
  uint32_t strs_cap; /* bytes allocated for strs */
  uint8_t has_text, has_emoji;
  char strs[];
} uext_t;

#define NOT_IN_HEAP UINT32_MAX
#define DEV_WORDS 255

static inline const char *ext_text(const uext_t *x) {
  return x && x->has_text ? x->strs : NULL;
}
static inline const char *ext_emoji(const uext_t *x) {
  return x && x->has_emoji ? x->strs + x->text_len + 1 : NULL;
}
static inline bool ext_has_message(const uext_t *x) {
  return x && (x->has_text || x->has_emoji);
}

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
  const presence_allocator_t *alloc; /* &alloc_own */
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
  /* Handles: (generation, the session's index in spool), see handle_of. */
  uint32_t gen;
  presence_stats_t stats;
  presence_session_info_t *scratch;
  size_t scratch_cap;
  /* Channels. */
  presence__table_t channels; /* by name */
  presence__table_t members;  /* by (channel, user) record addresses */
  uint64_t mkey;              /* member_hash's key */
  struct member_queue {
    struct member_entry *e;
    size_t cap, head, len;
  } mq; /* pending channel leaves (channel grace) */
  void **pick;                   /* page selection */
  size_t pick_cap;
  presence_member_info_t *minfo; /* query answers */
  size_t minfo_cap;
  presence_member_meta_t *metas;
  size_t metas_cap;
  presence_channel_info_t *cinfo;
  size_t cinfo_cap;
  /* Device words, interned: a session holds a one-byte index. */
  char dev_word[DEV_WORDS][PRESENCE_DEVICE_MAX + 1];
  uint8_t dev_wlen[DEV_WORDS];
  uint32_t n_dev;
  presence_device_status_t dev_scratch[DEV_WORDS];
  /* A user.availability's devices, while it is packed (emit). */
  presence_device_status_t ev_devs[DEV_WORDS];
  /* Users with a message that expires, a min-heap on the expiry. */
  muser_t **heap;
  uint32_t heap_len, heap_cap;
  /* User records, and session records in a pool of their own whose block
   * indexes are the handles (see pool.c: no malloc header per record, no
   * handle table). */
  presence__pool_t pool;
  presence__pool_t spool;
  /* Compact session ids: the text of the one an event is being built for
   * (sid_text_of; NULL: none), and the texts handed out by queries, kept
   * per session until it ends (sid_texts, by the session's address). */
  const struct msess *sid_text_of;
  char sid_text[40];
  presence__table_t sid_texts;
  /* The allocator given to presence_store_memory_new, copied (alloc points
   * here): the caller's struct may be gone, a local of the function that
   * made the store. At the end, off the fields every operation reads. */
  presence_allocator_t alloc_own;
} mstore_t;

static inline act_t *act_of(msess_t *s) { return (act_t *)s - 1; }

/* The session a user's list names (an index in the session pool plus one,
 * see muser_t.sessions), or NULL for 0. The pool's directory stays in
 * cache, so a step costs what a pointer's would: the block's own line. */
static inline msess_t *sess_at(const mstore_t *m, uint32_t link) {
  if (!link) return NULL;
  unsigned char *b = presence__pool_block(&m->spool, link - 1);
  return (msess_t *)(b + (m->inactivity ? sizeof(act_t) : 0));
}
static inline uint32_t link_of(const msess_t *s) { return s->slot + 1; }

/* ---- compact session ids ---------------------------------------------- */

/*
 * A session id that is a canonical lowercase UUID (8-4-4-4-12 hex digits,
 * as presenced makes them) is held as its 16 bytes instead of 37 of text
 * and NUL: 20 bytes less a session, at one session per user a quarter
 * of its record. Only that exact form is packed, so
 * the text comes back byte for byte; any other id (upper case, braces, a
 * host's own scheme) stays text. Such a key's hash is that of its 16
 * bytes; key.len (PRESENCE__KEY_BIN16) keeps the two forms apart in the
 * table.
 *
 * The text is made again where it is needed: for an event, in a buffer of
 * the store (an event is packed into the log as it is emitted), and for a
 * query's answer, whose strings must stay valid until the session's user
 * changes, in a record kept apart for that session until it ends (only
 * sessions that were queried pay for one).
 */
typedef struct sid_key {
  const char *bytes; /* what the table compares: bin, or the text */
  size_t len;        /* as key.len */
  uint32_t hash;
  unsigned char bin[16];
} sid_key_t;


/* The table key of a session id's text (k must not be copied: bytes may
 * point into it). */
static void sid_key_make(sid_key_t *k, const char *id, size_t len) {
  if (uuid_pack(id, len, k->bin)) {
    k->bytes = (const char *)k->bin;
    k->len = PRESENCE__KEY_BIN16;
    k->hash = presence__hash(k->bytes, 16);
  } else {
    k->bytes = id;
    k->len = len;
    k->hash = presence__hash(id, len);
  }
}

/* hash: where to put the key's hash (the sessions table keeps none), or
 * NULL. */
static msess_t *sess_find_h(const mstore_t *m, const char *id, size_t len,
                            uint32_t *hash) {
  sid_key_t k;
  sid_key_make(&k, id, len);
  if (hash) *hash = k.hash;
  return presence__table_find(&m->sessions, k.bytes, k.len, k.hash);
}
static msess_t *sess_find(const mstore_t *m, const char *id, size_t len) {
  return sess_find_h(m, id, len, NULL);
}

/* The id's text for an event being built now (valid until the next call). */
static const char *sess_id(mstore_t *m, const msess_t *s) {
  if (s->key.len != PRESENCE__KEY_BIN16) return s->id;
  if (m->sid_text_of != s) {
    uuid_text((const unsigned char *)s->id, m->sid_text);
    m->sid_text_of = s;
  }
  return m->sid_text;
}

/* A compact id's text kept for as long as the session lives. */
typedef struct sid_text_rec {
  presence__hkey_t key;
  const msess_t *sess; /* the key */
  char text[37];
} sid_text_rec_t;

static inline uint32_t sid_text_hash(const msess_t *s) {
  return presence__hash((const char *)&s, sizeof s);
}

/* The id's text for a query's answer: valid while the session lives. NULL
 * when the allocator refuses. */
static const char *sess_id_kept(mstore_t *m, msess_t *s) {
  if (s->key.len != PRESENCE__KEY_BIN16) return s->id;
  uint32_t h = sid_text_hash(s);
  sid_text_rec_t *r;
  if (s->key.spare[S_STATE] & SF_ID_TEXT) {
    r = presence__table_find(&m->sid_texts, (const char *)&s, sizeof s, h);
    assert(r);
    return r->text;
  }
  r = presence__pool_alloc(&m->pool, sizeof *r);
  if (!r) return NULL;
  memset(&r->key, 0, sizeof r->key);
  r->key.hash = h;
  r->key.len = sizeof s;
  r->sess = s;
  uuid_text((const unsigned char *)s->id, r->text);
  if (presence__table_insert(&m->sid_texts, r)) {
    presence__pool_free(&m->pool, r, sizeof *r);
    return NULL;
  }
  s->key.spare[S_STATE] |= SF_ID_TEXT;
  return r->text;
}

/* What a session's compact id left behind, when it ends. */
static void sid_text_drop(mstore_t *m, const msess_t *s) {
  if (m->sid_text_of == s) m->sid_text_of = NULL;
  if (!(s->key.spare[S_STATE] & SF_ID_TEXT)) return;
  sid_text_rec_t *r = presence__table_find(&m->sid_texts, (const char *)&s,
                                           sizeof s, sid_text_hash(s));
  assert(r);
  presence__table_remove(&m->sid_texts, r);
  presence__pool_free(&m->pool, r, sizeof *r);
}
static inline msess_t *sess_of_act(act_t *a) { return (msess_t *)(a + 1); }
static inline presence_status_t s_status(const msess_t *s) {
  return (presence_status_t)(s->key.spare[S_STATE] & S_STATUS_BITS);
}
static inline presence_status_t u_status(const muser_t *u) {
  return (presence_status_t)(u->key.spare[U_STATE] & S_STATUS_BITS);
}
/* The status's two bits of a state byte, the rest kept. */
static inline void state_set_status(uint8_t *state, presence_status_t st) {
  *state = (uint8_t)((*state & ~S_STATUS_BITS) | (unsigned)st);
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
                         size_t sid_len, size_t uid_len,
                         size_t lens[PRESENCE__EV_STRINGS]) {
  lens[0] = ev->session_id ? sid_len + 1 : 0;
  lens[1] = ev->user_id ? uid_len + 1 : 0;
  lens[2] = presence__event_len1(ev->meta);
  lens[3] = ev->instance_id ? m->instance_id_len + 1 : 0;
  lens[4] = presence__event_len1(ev->message);
  lens[5] = presence__event_len1(ev->emoji);
  /* A device word is one of the store's own (checked, short): its length
   * is kept beside it. */
  const char *d = ev->device;
  const char *words = &m->dev_word[0][0]; /* the table as one byte run */
  if (!d) lens[6] = 0;
  else if (d >= words && d < words + sizeof m->dev_word)
    lens[6] = (size_t)m->dev_wlen[(size_t)(d - words) /
                                  sizeof(m->dev_word[0])] + 1;
  else lens[6] = presence__event_len1(d);
  return presence__event_size(ev, lens);
}

/* first: the session event of a pair (presence__ev_first_t), whose number
 * is taken here, before ev's; or NULL. */
static void emit(mstore_t *m, presence_event_t *ev, int64_t now_ms,
                 size_t sid_len, size_t uid_len,
                 const presence__ev_first_t *first) {
  if (first) {
    m->seq++;
    m->stats.events[first->type]++;
  }
  ev->seq = ++m->seq;
  ev->ts_ms = now_ms;
  /* A cleanup names the instance it cleaned up after; this store's only
   * cleanup is its own fresh start, which names none (presence.h). */
  ev->instance_id = ev->type == PRESENCE_EV_CLEANUP ? NULL : m->h.instance_id;
  ev->epoch = m->h.epoch;
  m->stats.events[ev->type]++;
  const void *packed;
  if (ev->session_ids) {
    packed = presence__log_append(m->log, ev);
  } else {
    size_t lens[PRESENCE__EV_STRINGS];
    size_t n = event_lens(m, ev, sid_len, uid_len, lens);
    packed = first ? presence__log_append_pair(m->log, ev, first, lens, n)
                   : presence__log_append_measured(m->log, ev, lens, n);
  }
  if (packed) m->h.emit_packed(m->h.host_ud, packed);
  else m->h.emit(m->h.host_ud, ev);
}

/* The best of two statuses: online over idle over offline. */
static inline presence_status_t best_of(presence_status_t a,
                                        presence_status_t b) {
  if (a == PRESENCE_ONLINE || b == PRESENCE_ONLINE) return PRESENCE_ONLINE;
  if (a == PRESENCE_IDLE || b == PRESENCE_IDLE) return PRESENCE_IDLE;
  return PRESENCE_OFFLINE;
}

/* The best status of the user's sessions of device dev, leaving out skip
 * (counted in u's counts with its current status). Without mixed devices
 * (the common case) the counts answer; otherwise the user's sessions are
 * walked, which a user with sessions on several devices pays alone. */
static presence_status_t dev_best(const mstore_t *m, const muser_t *u,
                                  uint8_t dev, const msess_t *skip) {
  if (!(u->key.spare[U_FLAGS] & UF_MIXED_DEV)) {
    if (dev != u->dev) return PRESENCE_OFFLINE;
    uint32_t n = u->n_sessions - (skip ? 1 : 0);
    uint32_t on = u->n_online -
                  (skip && s_status(skip) == PRESENCE_ONLINE ? 1 : 0);
    return n == 0 ? PRESENCE_OFFLINE : on ? PRESENCE_ONLINE : PRESENCE_IDLE;
  }
  presence_status_t b = PRESENCE_OFFLINE;
  for (const msess_t *x = sess_at(m, u->sessions); x;
       x = sess_at(m, x->key.own))
    if (x != skip && sess_dev(x) == dev) b = best_of(b, s_status(x));
  return b;
}

/* The user's shown version moves with exactly the events a watcher sees. */
static inline void shown_bump(muser_t *u, presence_event_t *ev) {
  if (presence__event_watcher_visible(ev)) u->shown_version++;
  ev->shown_version = u->shown_version;
}

static void emit_session(mstore_t *m, presence_event_type_t type,
                         const msess_t *s, presence_reason_t reason,
                         presence_status_t from, presence_status_t to,
                         presence_status_t dev_from, presence_status_t dev_to,
                         unsigned flags, int64_t now_ms) {
  /* Designated: the fields a session event leaves out are zeroed once,
   * not cleared and then written (on every session operation's path). */
  muser_t *u = sess_user(s);
  presence_availability_t av = u_avail(u);
  presence_event_t ev = {
      .type = type,
      .reason = reason,
      .session_id = sess_id(m, s),
      .user_id = u->id,
      .meta = type == PRESENCE_EV_SESSION_CONNECTED ? sess_meta(s) : NULL,
      .from = from,
      .to = to,
      .user_version = u->version,
      .flags = flags,
      .availability_from = av,
      .availability_to = av,
      .device = m->dev_word[sess_dev(s)],
      .device_from = dev_from,
      .device_to = dev_to,
  };
  shown_bump(u, &ev);
  emit(m, &ev, now_ms, sid_len(s), u->key.len, NULL);
}

static void stats_leave(mstore_t *m, presence_status_t st) {
  if (st == PRESENCE_ONLINE) m->stats.users_online--;
  if (st == PRESENCE_IDLE) m->stats.users_idle--;
}
static void stats_enter(mstore_t *m, presence_status_t st) {
  if (st == PRESENCE_ONLINE) m->stats.users_online++;
  if (st == PRESENCE_IDLE) m->stats.users_idle++;
}

/* A deadline was added that may be nearer than every one held: the engine
 * ticks after this write to learn it (PRESENCE_STORE_DEADLINES). The queues
 * are in deadline order because their delays are fixed, so only a push into
 * an empty queue (or behind a later deadline, should a test's clock go
 * back) can bring the next deadline nearer. */
static inline void deadline_added(mstore_t *m) {
  if (m->h.deadline) m->h.deadline(m->h.host_ud);
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
  if (!q->len ||
      (int32_t)(deadline - q->e[(q->head + q->len - 1) % q->cap].deadline) < 0)
    deadline_added(m);
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
/* cause: the session whose change caused it (NULL: a timer, a cleanup);
 * the event carries that session's device and the device's best status
 * before and after, as the session event flagged USER_FOLLOWS left them
 * to it. first: that session event, given here to be packed with this one
 * as a pair (type, from, to; the rest is filled in), or NULL when it was
 * emitted on its own or there is none. */
/* PRESENCE_EVENT_LAST_SEEN_VEILED if the user's last_seen is inside its
 * veil (uext_t), else 0. Out of line: only a user with settings going
 * offline calls it. */
__attribute__((noinline, cold)) static unsigned veil_flag(const muser_t *u) {
  int64_t ls = t48_get(u->last_seen48);
  const uext_t *x = u->ext;
  return x->veil_to_ms && ls >= x->veil_from_ms && ls <= x->veil_to_ms
             ? PRESENCE_EVENT_LAST_SEEN_VEILED
             : 0u;
}

static void user_transition(mstore_t *m, muser_t *u, presence_status_t to,
                            presence_reason_t reason, const msess_t *cause,
                            presence_status_t dev_from,
                            presence_status_t dev_to, int64_t now_ms,
                            presence__ev_first_t *first) {
  presence_status_t from = u_status(u);
  if (from == to) return;
  if (first) {
    /* The session event as emit_session would have made it: the user's
     * version before this transition; the shown version unmoved, as a
     * session event flagged USER_FOLLOWS shows watchers nothing
     * (presence__event_watcher_visible). Its other fields are this
     * event's: the same cause, reason, time, device and availability. */
    first->user_version = u->version;
    first->shown_version = (uint32_t)u->shown_version;
    first->flags = PRESENCE_EVENT_USER_FOLLOWS;
  }
  stats_leave(m, from);
  stats_enter(m, to);
  state_set_status(&u->key.spare[U_STATE], to);
  u->version++;
  t48_put(u->since48, now_ms);
  /* Going offline keeps last_seen: it was set when the last session ended,
   * which is when the user was really last seen (grace may fire later). */
  if (to != PRESENCE_OFFLINE) {
    t48_put(u->last_seen48, now_ms);
    u->key.own++; /* back: a pending forget no longer applies */
  } else if (m->retention_s) {
    /* Without memory: the user stays (ENOMEM is no reason to lose an
     * event), only longer than asked. */
    (void)uq_push(m, &m->fq, u, u->key.own,
                  (uint32_t)((m->h.mono_ms(m->h.host_ud) - m->mono_base) /
                             1000) +
                      m->retention_s);
  }
  presence_availability_t av = u_avail(u);
  presence_event_t ev = {
      .type = to == PRESENCE_ONLINE ? PRESENCE_EV_USER_ONLINE
              : to == PRESENCE_IDLE ? PRESENCE_EV_USER_IDLE
                                    : PRESENCE_EV_USER_OFFLINE,
      .reason = reason,
      .session_id = cause ? sess_id(m, cause) : NULL,
      .user_id = u->id,
      .from = from,
      .to = to,
      .user_version = u->version,
      .last_seen_ms = t48_get(u->last_seen48),
      .availability_from = av,
      .availability_to = av,
      .device = cause ? m->dev_word[sess_dev(cause)] : NULL,
      .device_from = cause ? dev_from : PRESENCE_OFFLINE,
      .device_to = cause ? dev_to : PRESENCE_OFFLINE,
  };
  /* Going offline (never on the status path), a user that left invisible
   * in its grace was last seen inside the veil: watchers are not shown
   * that time (docs/protocol.md 6.1). */
  if (__builtin_expect(to == PRESENCE_OFFLINE && u->ext != NULL, 0))
    ev.flags = veil_flag(u);
  shown_bump(u, &ev);
  emit(m, &ev, now_ms, cause ? sid_len(cause) : 0, u->key.len, first);
}

/* ---- grace ------------------------------------------------------------- */

static int grace_push(mstore_t *m, muser_t *u, uint32_t deadline) {
  int rc = uq_push(m, &m->gq, u, u->key.own + 1, deadline);
  if (rc) return rc;
  u->key.own++;
  u->key.spare[U_FLAGS] |= UF_IN_GRACE;
  return 0;
}

static void grace_cancel(muser_t *u) {
  if (u->key.spare[U_FLAGS] & UF_IN_GRACE) {
    u->key.spare[U_FLAGS] &= (uint8_t)~UF_IN_GRACE;
    u->key.own++;
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
  if (!m->act_tail || (int32_t)(now - m->act_tail->last_active) < 0)
    deadline_added(m);
  a->last_active = now;
  a->prev = m->act_tail;
  a->next = NULL;
  if (m->act_tail) m->act_tail->next = a;
  else m->act_head = a;
  m->act_tail = a;
}

/* ---- handles ----------------------------------------------------------- */

/* A session's handle is its block's index in the session pool and a
 * generation: the block, free or not, keeps both readable (pool.c), so a
 * stale handle is refused by reading the block it names, without a table
 * of handles (8 bytes a session). */
static void handle_take(mstore_t *m, msess_t *s) {
  /* Generation 0 never names a session, so a zero handle is never valid. */
  if (++m->gen == 0) m->gen = 1;
  s->gen = m->gen;
}

static void handle_release(msess_t *s) { s->gen = 0; }

static inline presence_handle_t handle_of(const msess_t *s) {
  return ((presence_handle_t)s->gen << 32) | (s->slot + 1);
}

/* The session a write names, by handle or by id; NULL if not connected.
 * By id, *hash (if asked for) gets the id's hash, which the sessions table
 * does not keep. */
static msess_t *write_session_h(mstore_t *m, const presence_write_t *w,
                                uint32_t *hash) {
  if (w->handle) {
    uint32_t gen = (uint32_t)(w->handle >> 32);
    unsigned char *b = presence__pool_block(
        &m->spool, (uint32_t)(w->handle & 0xffffffffu) - 1);
    if (!b || !gen) return NULL;
    msess_t *s = (msess_t *)(b + (m->inactivity ? sizeof(act_t) : 0));
    return s->gen == gen ? s : NULL;
  }
  return sess_find_h(m, w->session_id, w->session_id_len, hash);
}
static msess_t *write_session(mstore_t *m, const presence_write_t *w) {
  return write_session_h(m, w, NULL);
}

/* ---- operations -------------------------------------------------------- */

/* A user record goes back to the pool (its setting block to the
 * allocator). */
static void user_free(mstore_t *m, muser_t *u) {
  presence__free(m->alloc, u->ext);
  presence__pool_free(&m->pool, u, offsetof(muser_t, id) + u->key.len + 1);
}

static muser_t *user_get_or_create(mstore_t *m, const char *id, size_t len,
                                   uint32_t hash) {
  muser_t *u = presence__table_find(&m->users, id, len, hash);
  if (u) return u;
  u = presence__pool_alloc(&m->pool, offsetof(muser_t, id) + len + 1);
  if (!u) return NULL;
  memset(u, 0, offsetof(muser_t, id));
  u->key.len = (uint8_t)len;
  memcpy(u->id, id, len);
  u->id[len] = '\0';
  if (presence__table_insert_h(&m->users, u, hash)) {
    user_free(m, u);
    return NULL;
  }
  m->stats.users_known++;
  return u;
}

static void session_free(mstore_t *m, msess_t *s) {
  handle_release(s);
  sid_text_drop(m, s);
  presence__pool_free(&m->spool,
                      m->inactivity ? (void *)act_of(s) : (void *)s,
                      sess_size(m->inactivity, s));
}

/* The index of a device word, added if new; -1 when the store already holds
 * DEV_WORDS distinct words. The default word sits at 0, so the common
 * session compares once. */
static int dev_intern(mstore_t *m, const char *word, size_t len) {
  for (uint32_t i = 0; i < m->n_dev; i++)
    if (m->dev_wlen[i] == len && memcmp(m->dev_word[i], word, len) == 0)
      return (int)i;
  if (m->n_dev == DEV_WORDS || len > PRESENCE_DEVICE_MAX) return -1;
  memcpy(m->dev_word[m->n_dev], word, len);
  m->dev_word[m->n_dev][len] = '\0';
  m->dev_wlen[m->n_dev] = (uint8_t)len;
  return (int)m->n_dev++;
}

static int op_connect(mstore_t *m, const presence_write_t *w) {
  /* Both home slots are requested first and the new record is built while
   * they load: at scale each lookup is a cache miss, and neither the other
   * lookup nor the record's bytes need to wait for it. */
  sid_key_t k;
  sid_key_make(&k, w->session_id, w->session_id_len);
  uint32_t sh = k.hash;
  presence__table_prefetch(&m->sessions, sh);
  uint32_t uh = presence__hash(w->user_id, w->user_id_len);
  presence__table_prefetch(&m->users, uh);

  size_t pre = m->inactivity ? sizeof(act_t) : 0;
  size_t meta_size = w->meta ? w->meta_len + 1 : 0;
  size_t fixed = offsetof(msess_t, id);
  uint32_t index;
  char *block = presence__pool_alloc_at(
      &m->spool, sess_block_size(m->inactivity, k.len, meta_size), &index);
  if (!block) return PRESENCE_ENOMEM;
  msess_t *s = (msess_t *)(block + pre);
  memset(s, 0, fixed);
  s->slot = index;
  if (w->meta) {
    s->key.spare[S_STATE] |= SF_META;
    char *meta = s->id + sid_bytes(k.len);
    memcpy(meta, w->meta, w->meta_len);
    meta[w->meta_len] = '\0';
  }
  s->key.len = (uint8_t)k.len;
  /* A session may open idle (presence_session_open_opts): the status it
   * has from the start, so the user's transition is the real one. */
  const bool idle = w->status == PRESENCE_IDLE;
  const presence_status_t st = idle ? PRESENCE_IDLE : PRESENCE_ONLINE;
  state_set_status(&s->key.spare[S_STATE], st);
  s->key.spare[S_REASON] = PRESENCE_REASON_CONNECT;
  memcpy(s->id, k.bytes, presence__key_bytes(k.len));
  if (k.len != PRESENCE__KEY_BIN16) s->id[k.len] = '\0';

  int rc = 0;
  muser_t *u = NULL;
  int dev = 0;
  if (presence__table_find(&m->sessions, k.bytes, k.len, sh))
    rc = PRESENCE_EEXIST;
  else if (w->device && (dev = dev_intern(m, w->device, w->device_len)) < 0)
    rc = PRESENCE_EDEVICE;
  else if (!(u = user_get_or_create(m, w->user_id, w->user_id_len, uh)))
    rc = PRESENCE_ENOMEM;
  else if (m->h.max_sessions_per_user &&
           u->n_sessions >= m->h.max_sessions_per_user)
    rc = PRESENCE_ELIMIT;
  if (rc) {
    session_free(m, s);
    return rc;
  }
  s->key.spare[S_DEV] = (uint8_t)dev;
  if (presence__table_insert_h(&m->sessions, s, sh)) {
    session_free(m, s);
    return PRESENCE_ENOMEM;
  }
  handle_take(m, s);
  if (w->handle_out) *w->handle_out = handle_of(s);
  if (k.len == PRESENCE__KEY_BIN16) {
    /* The events below want the text, which the caller gave. */
    memcpy(m->sid_text, w->session_id, 36);
    m->sid_text[36] = '\0';
    m->sid_text_of = s;
  }
  int64_t now = m->h.wall_ms(m->h.host_ud);
  t48_put(s->connected48, now);
  t48_put(s->status_since48, now);
  p48_put(s->user48, u);
  bool back_in_grace = (u->key.spare[U_FLAGS] & UF_IN_GRACE) &&
                       !(u->key.spare[U_FLAGS] & UF_MIXED_DEV);
  uint8_t dev_in_grace = u->dev;
  if (u->n_sessions == 0) {
    u->dev = sess_dev(s);
    u->key.spare[U_FLAGS] &= (uint8_t)~UF_MIXED_DEV;
  } else if (sess_dev(s) != u->dev) {
    u->key.spare[U_FLAGS] |= UF_MIXED_DEV;
  }
  s->key.own = u->sessions;
  u->sessions = link_of(s);
  u->n_sessions++;
  m->stats.sessions++;
  /* An idle session is no activity: last_active and the inactivity timer
   * are for online sessions (as op_set_status leaves them for an explicit
   * idle, which only the client brings back). */
  if (!idle) {
    u->n_online++;
    t48_put(u->last_active48, now);
    if (m->inactivity) {
      act_t *a = act_of(s);
      act_push(m, a, rel_now(m));
    }
  }
  presence_status_t dev_from = dev_best(m, u, sess_dev(s), s);
  const presence_status_t dev_to = best_of(dev_from, st);
  /* Back inside the offline grace on the device it left from: watchers
   * were never told that device went (see op_end), so it is no change. */
  if (back_in_grace && u->n_sessions == 1 && sess_dev(s) == dev_in_grace)
    dev_from = u_status(u);
  grace_cancel(u);
  /* The best over the user's sessions: an idle session makes an offline
   * user idle and changes nothing for an idle or online one. */
  const presence_status_t uto = computed(u);
  if (u_status(u) != uto) {
    /* One record for the two events (presence__ev_first_t), the session's
     * metadata in it. */
    presence__ev_first_t first = {.type = PRESENCE_EV_SESSION_CONNECTED,
                                  .from = PRESENCE_OFFLINE,
                                  .to = (uint8_t)st,
                                  .meta = sess_meta(s)};
    user_transition(m, u, uto, PRESENCE_REASON_CONNECT, s, dev_from, dev_to,
                    now, &first);
  } else {
    emit_session(m, PRESENCE_EV_SESSION_CONNECTED, s, PRESENCE_REASON_CONNECT,
                 PRESENCE_OFFLINE, st, dev_from, dev_to, 0, now);
  }
  t48_put(u->last_seen48, now);
  return 0;
}

/* ---- channels ---------------------------------------------------------- */

/*
 * A channel record per name with at least one member; a member record per
 * (channel, user), keyed by the two records' addresses (16 bytes, no id
 * copied); a join record per (session, channel). A session's joins are a
 * list in join order (channels per session are few and bounded); a member's
 * joins a list most recent first, so the member's data (that of the most
 * recently joined or updated session) is the head's.
 */
typedef struct mchan {
  presence__hkey_t key;
  uint32_t n_members; /* including members in grace */
  uint32_t n_joins;
  /* Members whose user is invisible: absent to the other members, so they
   * are shown n_members - n_hidden (docs/protocol.md 4.1). Kept by the
   * join of a new member, member_leave and op_set_availability. */
  uint32_t n_hidden;
  struct mmember *head; /* members, newest first */
  char name[];
} mchan_t;

/* key.spare[] of a member */
#define M_STATUS 0 /* reported status in the channel */
#define M_FLAGS 1
#define M_END_REASON 2 /* why its last session ended, for a delayed leave */
#define MF_IN_GRACE 0x1
#define MF_DEAD 0x2 /* left; freed when its last queue entry pops */

typedef struct mjoin {
  struct mjoin *s_next; /* the session's joins */
  struct mjoin *m_next; /* the member's joins */
  struct mmember *member; /* NULL: a member's j0 not in use */
  msess_t *sess;
  int64_t joined_ms;
  char *data; /* NULL: none */
} mjoin_t;

/*
 * A member holds one join (j0) inside it: most members have one session in
 * the channel, so a join and a leave are one allocation, not two, and the
 * leave's walk of the session's joins reads the join and the member's key
 * from one cache line (j0 right after the key). Further joins of the same
 * member, while j0 is taken, are allocated apart.
 */
typedef struct mmember {
  presence__hkey_t key;
  struct {
    mchan_t *chan;
    muser_t *user;
  } k;
  mjoin_t j0;
  struct mmember *prev, *next; /* in the channel */
  struct mmember *u_next;      /* the user's memberships */
  struct mmember *u_prev; /* so a leave unlinks without walking the user's
                             list, a cache miss a member at scale (the
                             record stays in its 152-byte pool block) */
  struct mjoin *joins;         /* most recent first */
  uint32_t n_joins, n_online;
  uint32_t grace_gen;
  uint32_t q_refs; /* entries of the grace queue naming it */
  /* The member's version (backends) and the one other members are shown:
   * it moves with each change they are sent (member_visible, and one per
   * availability change of the user), so it reveals no hidden change.
   * 32 bits each, as the user's shown version. */
  uint32_t version;
  uint32_t shown_version;
  int64_t since_ms;
  char *gdata; /* the data it had when it entered its grace */
} mmember_t;

/* A join off its session's list (the list is short: the session's
 * channels). */
static void sess_joins_unlink(msess_t *s, mjoin_t *j) {
  mjoin_t *p = sess_joins(s);
  if (p == j) {
    sess_set_joins(s, j->s_next);
    return;
  }
  for (; p; p = p->s_next) {
    if (p->s_next == j) {
      p->s_next = j->s_next;
      return;
    }
  }
}

/* A join's record goes (its data is the caller's): j0 is marked free. */
static void join_release(mstore_t *m, mjoin_t *j) {
  if (j == &j->member->j0) j->member = NULL;
  else presence__pool_free(&m->pool, j, sizeof(*j));
}

typedef struct member_entry {
  mmember_t *member;
  uint32_t gen;
  uint32_t deadline; /* relative monotonic ms */
} member_entry_t;

static inline presence_status_t m_status(const mmember_t *mb) {
  return (presence_status_t)mb->key.spare[M_STATUS];
}
static inline presence_status_t m_computed(const mmember_t *mb) {
  return mb->n_online ? PRESENCE_ONLINE : PRESENCE_IDLE;
}
/* The member's data: the most recent session's, or what it had when its
 * last session ended. */
static inline const char *m_data(const mmember_t *mb) {
  return mb->joins ? mb->joins->data : mb->gdata;
}

static bool data_eq(const char *a, const char *b) {
  if (!a || !b) return a == b;
  return strcmp(a, b) == 0;
}

static char *dup_data(mstore_t *m, const char *d, size_t n, int *rc) {
  *rc = 0;
  if (!d) return NULL;
  char *c = presence__malloc(m->alloc, n + 1);
  if (!c) {
    *rc = PRESENCE_ENOMEM;
    return NULL;
  }
  memcpy(c, d, n);
  c[n] = '\0';
  return c;
}

static mchan_t *find_chan(mstore_t *m, const char *name, size_t len) {
  return presence__table_find(&m->channels, name, len,
                              presence__hash(name, len));
}

/* The member table's hash of (ch, u): computed once per operation, for
 * the prefetch, the find and a new member's key. The key is two record
 * addresses, which the allocator chose and no client can pick, so a
 * multiply-xorshift mix under the process's hash key (m->mkey, from
 * presence__hash) spreads them as well as SipHash did, at a fraction of
 * its cost (SipHash of the 16 bytes was ~4 % of a join and of a leave). */
static uint32_t member_hash(const mstore_t *m, const mchan_t *ch,
                            const muser_t *u) {
  uint64_t x = ((uint64_t)(uintptr_t)ch ^ m->mkey) * 0x9e3779b97f4a7c15ull;
  x ^= (uint64_t)(uintptr_t)u + (x >> 29);
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 32;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 29;
  return (uint32_t)x;
}

static mmember_t *find_member_h(mstore_t *m, mchan_t *ch, muser_t *u,
                                uint32_t hash) {
  struct {
    mchan_t *chan;
    muser_t *user;
  } k = {ch, u};
  return presence__table_find(&m->members, (const char *)&k, sizeof(k), hash);
}

static mmember_t *find_member(mstore_t *m, mchan_t *ch, muser_t *u) {
  return find_member_h(m, ch, u, member_hash(m, ch, u));
}

static void emit_member_flags(mstore_t *m, presence_event_type_t type,
                              mmember_t *mb, presence_reason_t reason,
                              const msess_t *cause, presence_status_t from,
                              presence_status_t to, unsigned flags,
                              int64_t now) {
  presence_event_t ev = {0};
  ev.flags = flags;
  ev.type = type;
  ev.reason = reason;
  ev.channel = mb->k.chan->name;
  ev.user_id = mb->k.user->id;
  ev.session_id = cause ? sess_id(m, cause) : NULL;
  ev.meta = type == PRESENCE_EV_CHANNEL_LEAVE ? NULL : m_data(mb);
  ev.from = from;
  ev.to = to;
  ev.user_version = ++mb->version;
  ev.count = mb->k.chan->n_members;
  ev.shown_count = mb->k.chan->n_members - mb->k.chan->n_hidden;
  /* The member's availability, so channel observers mask it like watchers
   * do (an invisible member shows offline: presence_shown_status). */
  ev.availability_from = ev.availability_to =
      u_avail(mb->k.user);
  if (presence__event_member_visible(&ev)) mb->shown_version++;
  ev.shown_version = mb->shown_version;
  emit(m, &ev, now, cause ? sid_len(cause) : 0, mb->k.user->key.len, NULL);
}

static void emit_member(mstore_t *m, presence_event_type_t type,
                        mmember_t *mb, presence_reason_t reason,
                        const msess_t *cause, presence_status_t from,
                        presence_status_t to, int64_t now) {
  emit_member_flags(m, type, mb, reason, cause, from, to, 0, now);
}

/* Channel, member and extra join records live in the store's pool (like
 * user records): no malloc header (a member is 152 bytes, a 160-byte malloc
 * chunk), no trip through the allocator's free lists on a join and a leave,
 * and a burst of joins lands in address order. The data strings stay with
 * the allocator. */
static void chan_free(mstore_t *m, mchan_t *ch) {
  presence__pool_free(&m->pool, ch, sizeof(mchan_t) + ch->key.len + 1);
}

static void member_free(mstore_t *m, mmember_t *mb) {
  presence__free(m->alloc, mb->gdata);
  presence__pool_free(&m->pool, mb, sizeof(*mb));
}

/* The member leaves (its joins are gone): channel.leave, then the records
 * go (the member's own when no queue entry names it any more). */
static void member_leave(mstore_t *m, mmember_t *mb, presence_reason_t reason,
                         const msess_t *cause, int64_t now) {
  mchan_t *ch = mb->k.chan;
  muser_t *u = mb->k.user;
  presence_status_t from = m_status(mb);
  if (mb->prev) mb->prev->next = mb->next;
  else ch->head = mb->next;
  if (mb->next) mb->next->prev = mb->prev;
  if (mb->u_prev) mb->u_prev->u_next = mb->u_next;
  else u->members = mb->u_next;
  if (mb->u_next) mb->u_next->u_prev = mb->u_prev;
  ch->n_members--;
  if (u_avail(u) == PRESENCE_AVAIL_INVISIBLE) ch->n_hidden--;
  m->stats.members--;
  emit_member(m, PRESENCE_EV_CHANNEL_LEAVE, mb, reason, cause, from,
              PRESENCE_OFFLINE, now);
  /* After the list work and the event: the slot's line, prefetched in
   * join_remove, has had the event's packing to arrive (before it, the
   * remove waited on it; nothing here looks the member up). */
  presence__table_remove(&m->members, mb);
  if (ch->n_members == 0) {
    presence__table_remove(&m->channels, ch);
    chan_free(m, ch);
    m->stats.channels--;
  }
  mb->key.spare[M_FLAGS] = MF_DEAD;
  if (!mb->q_refs) member_free(m, mb);
}

/* After the member's joins changed: an update if what it shows changed. */
static void member_changed(mstore_t *m, mmember_t *mb, presence_status_t from,
                           const char *old_data, presence_reason_t reason,
                           const msess_t *cause, int64_t now) {
  presence_status_t to = m_computed(mb);
  bool same_data = data_eq(old_data, m_data(mb));
  if (to == from && same_data) return;
  mb->key.spare[M_STATUS] = (uint8_t)to;
  emit_member_flags(m, PRESENCE_EV_CHANNEL_UPDATE, mb, reason, cause, from, to,
                    same_data ? 0 : PRESENCE_EVENT_DATA_CHANGED, now);
}

static int mq_push(mstore_t *m, mmember_t *mb, uint32_t deadline) {
  struct member_queue *q = &m->mq;
  if (q->len == q->cap) {
    size_t ncap = q->cap ? q->cap * 2 : 64;
    member_entry_t *ne = presence__malloc(m->alloc, ncap * sizeof(*ne));
    if (!ne) return PRESENCE_ENOMEM;
    for (size_t i = 0; i < q->len; i++) ne[i] = q->e[(q->head + i) % q->cap];
    presence__free(m->alloc, q->e);
    q->e = ne;
    q->cap = ncap;
    q->head = 0;
  }
  if (!q->len ||
      (int32_t)(deadline - q->e[(q->head + q->len - 1) % q->cap].deadline) < 0)
    deadline_added(m);
  q->e[(q->head + q->len) % q->cap] =
      (member_entry_t){mb, mb->grace_gen + 1, deadline};
  q->len++;
  mb->grace_gen++;
  mb->q_refs++;
  mb->key.spare[M_FLAGS] |= MF_IN_GRACE;
  return 0;
}

/* Remove one join. graceful: a session that ended (the member may be back
 * in a moment); otherwise the leave is final. */
static void join_remove(mstore_t *m, mjoin_t *j, bool unlink_session,
                        presence_reason_t reason, bool graceful,
                        const msess_t *cause, int64_t now) {
  mmember_t *mb = j->member;
  msess_t *s = j->sess;
  /* Its last join: member_leave needs the member's table slot, its user
   * and its neighbours in the channel, each a cache miss at scale; start
   * them together now instead of one after the other there. */
  if (mb->n_joins == 1) {
    presence__table_prefetch(&m->members, mb->key.hash);
    __builtin_prefetch(mb->k.user);
    if (mb->prev) __builtin_prefetch(mb->prev);
    if (mb->next) __builtin_prefetch(mb->next);
    if (mb->u_prev) __builtin_prefetch(mb->u_prev);
    if (mb->u_next) __builtin_prefetch(mb->u_next);
  }
  if (unlink_session) sess_joins_unlink(s, j);
  bool was_head = mb->joins == j;
  for (mjoin_t **pp = &mb->joins; *pp; pp = &(*pp)->m_next) {
    if (*pp == j) {
      *pp = j->m_next;
      break;
    }
  }
  presence_status_t from = m_status(mb);
  mb->n_joins--;
  if (s_status(s) == PRESENCE_ONLINE) mb->n_online--;
  mb->k.chan->n_joins--;
  m->stats.memberships--;
  /* The record goes first: it may be mb's j0, and member_leave may free
   * mb. */
  char *jdata = j->data;
  join_release(m, j);
  if (mb->n_joins == 0) {
    if (graceful && m->h.channel_grace_ms &&
        mq_push(m, mb, rel_now(m) + m->h.channel_grace_ms) == 0) {
      mb->gdata = jdata; /* kept to compare with on a rejoin */
      jdata = NULL;
      mb->key.spare[M_END_REASON] = (uint8_t)reason;
    } else {
      member_leave(m, mb, reason, cause, now);
    }
  } else {
    /* Only the head's data shows: it changes only if j was the head. */
    member_changed(m, mb, from, was_head ? jdata : m_data(mb), reason, cause,
                   now);
  }
  presence__free(m->alloc, jdata);
}

static mjoin_t *session_join_of(msess_t *s, mchan_t *ch, size_t *n) {
  size_t k = 0;
  for (mjoin_t *j = sess_joins(s); j; j = j->s_next, k++) {
    if (j->member->k.chan == ch) return j;
  }
  if (n) *n = k;
  return NULL;
}

/* An update or a leave names a channel the session joined, if any: its
 * joins are few (max_channels_per_session) and each holds its channel, so
 * comparing names along them beats hashing the name for the channel table
 * (the hash and the table's probe were ~9 % of a leave). */
static mjoin_t *write_join(mstore_t *m, const presence_write_t *w,
                           msess_t **sp, int *rc) {
  msess_t *s = write_session(m, w);
  *sp = s;
  if (!s) {
    *rc = PRESENCE_ENOSESSION;
    return NULL;
  }
  mjoin_t *j = sess_joins(s);
  for (; j; j = j->s_next) {
    const mchan_t *ch = j->member->k.chan;
    if (ch->key.len == w->channel_len &&
        memcmp(ch->name, w->channel, w->channel_len) == 0)
      break;
  }
  *rc = j ? 0 : PRESENCE_ENOTMEMBER;
  return j;
}

/* Replace a join's data; it becomes the member's most recent. */
static int join_set_data(mstore_t *m, mjoin_t *j, const presence_write_t *w) {
  int rc;
  char *nd = dup_data(m, w->data, w->data_len, &rc);
  if (rc) return rc;
  mmember_t *mb = j->member;
  const char *old_shown = m_data(mb);
  char *mine = j->data;
  /* To the head of the member's list. */
  for (mjoin_t **pp = &mb->joins; *pp; pp = &(*pp)->m_next) {
    if (*pp == j) {
      *pp = j->m_next;
      break;
    }
  }
  j->m_next = mb->joins;
  mb->joins = j;
  j->data = nd;
  int64_t now = m->h.wall_ms(m->h.host_ud);
  member_changed(m, mb, m_status(mb), old_shown, w->reason, j->sess, now);
  presence__free(m->alloc, mine);
  return 0;
}

static int op_join(mstore_t *m, const presence_write_t *w) {
  msess_t *s = write_session(m, w);
  if (!s) return PRESENCE_ENOSESSION;
  uint32_t ch_hash = presence__hash(w->channel, w->channel_len);
  mchan_t *ch = presence__table_find(&m->channels, w->channel, w->channel_len,
                                     ch_hash);
  muser_t *u = sess_user(s);
  /* The member's slot is a cache miss at scale: start loading it before
   * the session's join list walk and the allocations below. */
  uint32_t mb_hash = ch ? member_hash(m, ch, u) : 0;
  if (ch) {
    presence__table_prefetch(&m->members, mb_hash);
    __builtin_prefetch(u); /* a new member goes on its list */
    if (ch->head) __builtin_prefetch(ch->head); /* and before this one */
  }
  size_t n_joined = 0;
  mjoin_t *j = ch ? session_join_of(s, ch, &n_joined) : NULL;
  if (j) return join_set_data(m, j, w); /* joined again: new data */
  if (!ch)
    for (mjoin_t *k = sess_joins(s); k; k = k->s_next) n_joined++;
  if (m->h.max_channels_per_session &&
      n_joined >= m->h.max_channels_per_session)
    return PRESENCE_ECHANLIMIT;

  /* Everything that can fail first, so a failure changes nothing. */
  int rc;
  char *data = dup_data(m, w->data, w->data_len, &rc);
  if (rc) return rc;
  bool new_chan = !ch;
  if (new_chan) {
    ch = presence__pool_alloc(&m->pool, sizeof(mchan_t) + w->channel_len + 1);
    if (ch) {
      memset(ch, 0, sizeof(*ch));
      ch->key.hash = ch_hash;
      ch->key.len = (uint8_t)w->channel_len;
      memcpy(ch->name, w->channel, w->channel_len);
      ch->name[w->channel_len] = '\0';
    }
  }
  /* A user with no membership anywhere has none here: no find (the join
   * of a user's first channel, the usual one, then touches the member
   * table only in the insert after its event). */
  mmember_t *mb = ch && !new_chan && u->members
                      ? find_member_h(m, ch, u, mb_hash)
                      : NULL;
  mmember_t *fresh = NULL;
  if (!mb && ch) {
    fresh = presence__pool_alloc(&m->pool, sizeof(*fresh));
    if (fresh) {
      memset(fresh, 0, sizeof(*fresh));
      fresh->k.chan = ch;
      fresh->k.user = u;
      fresh->key.hash = new_chan ? member_hash(m, ch, u) : mb_hash;
      fresh->key.len = sizeof(fresh->k);
    }
  }
  /* The member's own j0 when free (always for a new member). */
  mmember_t *owner = fresh ? fresh : mb;
  j = !owner               ? NULL
      : owner->j0.member ? presence__pool_alloc(&m->pool, sizeof(*j))
                         : &owner->j0;
  bool ok = j && ch && (mb || fresh);
  if (ok && new_chan && presence__table_insert(&m->channels, ch)) ok = false;
  else if (ok && new_chan) m->stats.channels++;
  /* The insert itself comes after the event (below), so the slot's
   * prefetch has that long to arrive; here only what can fail. */
  if (ok && fresh && presence__table_make_room(&m->members)) {
    ok = false;
    if (new_chan) {
      presence__table_remove(&m->channels, ch);
      m->stats.channels--;
    }
  }
  if (!ok) {
    presence__free(m->alloc, data);
    if (j && j != &owner->j0) presence__pool_free(&m->pool, j, sizeof(*j));
    if (fresh) presence__pool_free(&m->pool, fresh, sizeof(*fresh));
    if (new_chan && ch) chan_free(m, ch);
    return PRESENCE_ENOMEM;
  }

  int64_t now = m->h.wall_ms(m->h.host_ud);
  if (fresh) {
    mb = fresh;
    mb->since_ms = now;
    mb->next = ch->head;
    if (ch->head) ch->head->prev = mb;
    ch->head = mb;
    mb->u_next = u->members;
    if (u->members) u->members->u_prev = mb;
    u->members = mb;
    ch->n_members++;
    if (u_avail(u) == PRESENCE_AVAIL_INVISIBLE) ch->n_hidden++;
    m->stats.members++;
  }
  presence_status_t from = m_status(mb);
  const char *old_shown = m_data(mb);
  j->member = mb;
  j->sess = s;
  j->joined_ms = now;
  j->data = data;
  j->s_next = NULL;
  mjoin_t *last = sess_joins(s);
  if (!last) sess_set_joins(s, j);
  else {
    while (last->s_next) last = last->s_next;
    last->s_next = j;
  }
  j->m_next = mb->joins;
  mb->joins = j;
  mb->n_joins++;
  if (s_status(s) == PRESENCE_ONLINE) mb->n_online++;
  ch->n_joins++;
  m->stats.memberships++;
  if (fresh) {
    mb->key.spare[M_STATUS] = (uint8_t)m_computed(mb);
    emit_member(m, PRESENCE_EV_CHANNEL_JOIN, mb, w->reason, s,
                PRESENCE_OFFLINE, m_status(mb), now);
    int placed = presence__table_insert(&m->members, mb);
    assert(placed == 0); /* presence__table_make_room above */
    (void)placed;
    return 0;
  }
  if (mb->key.spare[M_FLAGS] & MF_IN_GRACE) {
    /* Back inside the grace: no join; an update if it shows differently. */
    mb->key.spare[M_FLAGS] &= (uint8_t)~MF_IN_GRACE;
    mb->grace_gen++;
    member_changed(m, mb, from, old_shown, w->reason, s, now);
    presence__free(m->alloc, mb->gdata);
    mb->gdata = NULL;
    return 0;
  }
  member_changed(m, mb, from, old_shown, w->reason, s, now);
  return 0;
}

static int op_update(mstore_t *m, const presence_write_t *w) {
  msess_t *s;
  int rc;
  mjoin_t *j = write_join(m, w, &s, &rc);
  if (!j) return rc;
  return join_set_data(m, j, w);
}

static int op_leave(mstore_t *m, const presence_write_t *w) {
  msess_t *s;
  int rc;
  mjoin_t *j = write_join(m, w, &s, &rc);
  if (!j) return rc;
  join_remove(m, j, true, w->reason, false, s,
              m->h.wall_ms(m->h.host_ud));
  return 0;
}

static int op_remove_user(mstore_t *m, const presence_write_t *w) {
  mchan_t *ch = find_chan(m, w->channel, w->channel_len);
  muser_t *u = ch ? presence__table_find(&m->users, w->user_id, w->user_id_len,
                                         presence__hash(w->user_id,
                                                        w->user_id_len))
                  : NULL;
  mmember_t *mb = u ? find_member(m, ch, u) : NULL;
  if (!mb) return PRESENCE_ENOTMEMBER;
  int64_t now = m->h.wall_ms(m->h.host_ud);
  /* Every join but the last goes silently (the member stays until the
   * last one); the last one's removal is the leave. */
  if (!mb->joins) {
    mb->key.spare[M_FLAGS] &= (uint8_t)~MF_IN_GRACE;
    mb->grace_gen++;
    member_leave(m, mb, w->reason, NULL, now);
    return 0;
  }
  while (mb->joins->m_next) {
    mjoin_t *j = mb->joins->m_next;
    sess_joins_unlink(j->sess, j);
    mb->joins->m_next = j->m_next;
    mb->n_joins--;
    if (s_status(j->sess) == PRESENCE_ONLINE) mb->n_online--;
    ch->n_joins--;
    m->stats.memberships--;
    presence__free(m->alloc, j->data);
    join_release(m, j);
  }
  join_remove(m, mb->joins, true, w->reason, false, NULL, now);
  return 0;
}

/* A session ends: its memberships end with it, in join order, after its
 * session and user events. */
static void session_channels_end(mstore_t *m, msess_t *s,
                                 presence_reason_t reason, bool graceful,
                                 int64_t now) {
  for (mjoin_t *j; (j = sess_joins(s));) {
    sess_set_joins(s, j->s_next);
    join_remove(m, j, false, reason, graceful, s, now);
  }
}

/* A session's status changed: so may its members' in every channel. */
static void session_channels_status(mstore_t *m, msess_t *s,
                                    presence_status_t was,
                                    presence_reason_t reason, int64_t now) {
  for (mjoin_t *j = sess_joins(s); j; j = j->s_next) {
    mmember_t *mb = j->member;
    if (was == PRESENCE_ONLINE) mb->n_online--;
    if (s_status(s) == PRESENCE_ONLINE) mb->n_online++;
    member_changed(m, mb, m_status(mb), m_data(mb), reason, s, now);
  }
}

/* Due channel leaves; with forced, every one pending now, for that
 * reason (a fresh start, a stop). */
static int64_t members_tick(mstore_t *m, uint32_t now,
                            const presence_reason_t *forced, int64_t *wall) {
  struct member_queue *q = &m->mq;
  while (q->len) {
    member_entry_t *e = &q->e[q->head];
    mmember_t *mb = e->member;
    bool live = mb->grace_gen == e->gen &&
                (mb->key.spare[M_FLAGS] & MF_IN_GRACE);
    if (live && !forced && !due(e->deadline, now))
      return (int32_t)(e->deadline - now);
    q->head = (q->head + 1) % q->cap;
    q->len--;
    mb->q_refs--;
    if (live) {
      mb->key.spare[M_FLAGS] &= (uint8_t)~MF_IN_GRACE;
      if (!*wall) *wall = m->h.wall_ms(m->h.host_ud);
      member_leave(m, mb,
                   forced ? *forced
                          : (presence_reason_t)mb->key.spare[M_END_REASON],
                   NULL, *wall);
    } else if ((mb->key.spare[M_FLAGS] & MF_DEAD) && !mb->q_refs) {
      member_free(m, mb);
    }
  }
  return -1;
}

static int op_end(mstore_t *m, const presence_write_t *w) {
  /* By id the lookup's hash serves the removal; by handle it is made
   * again from the id. */
  uint32_t hash = 0;
  msess_t *s = write_session_h(m, w, &hash);
  if (!s) return PRESENCE_ENOSESSION;
  muser_t *u = sess_user(s);
  presence_status_t was = s_status(s);
  if (w->handle) presence__table_remove(&m->sessions, s);
  else presence__table_remove_h(&m->sessions, s, hash);
  handle_release(s);
  /* Unlink: one session per user (the common case) is the head, found
   * without reading any other session. */
  for (uint32_t *pp = &u->sessions; *pp; pp = &sess_at(m, *pp)->key.own) {
    if (*pp == link_of(s)) {
      *pp = s->key.own;
      break;
    }
  }
  u->n_sessions--;
  if (was == PRESENCE_ONLINE) u->n_online--;
  m->stats.sessions--;
  if (m->inactivity) act_unlink(m, act_of(s));

  int64_t now = m->h.wall_ms(m->h.host_ud);
  t48_put(u->last_seen48, now);
  if (was == PRESENCE_ONLINE) t48_put(u->last_active48, now);
  presence_status_t dev_after = dev_best(m, u, sess_dev(s), NULL);
  presence_status_t dev_before = best_of(dev_after, was);
  presence_status_t to = computed(u);
  /* Grace covers the cases where the user may simply be back in a moment
   * (a reload, a network blip); a kick or a cleanup is final, and so is a
   * shutdown here: this store ends with its process, so nobody can come back
   * to it inside the window. (A shared store sees that differently: the user
   * may reconnect to another instance.) */
  bool graceful = w->reason != PRESENCE_REASON_KICKED &&
                  w->reason != PRESENCE_REASON_INSTANCE_LOST &&
                  w->reason != PRESENCE_REASON_ORIGIN_LOST &&
                  w->reason != PRESENCE_REASON_SHUTDOWN;
  bool in_grace = false;
  if (to == PRESENCE_OFFLINE && m->h.offline_grace_ms && graceful) {
    u_set_end_reason(u, w->reason);
    in_grace = grace_push(m, u, rel_now(m) + m->h.offline_grace_ms) == 0;
  }
  bool follows = !in_grace && to != u_status(u);
  /* In the offline grace the device stays as watchers saw it: a reload
   * (the user back inside the window) must show them nothing, and if the
   * user does not come back, user.offline says every device went. */
  if (in_grace) {
    dev_after = dev_before;
    /* A reconnect inside the grace compares against this device (op_connect):
     * the one watchers still see, whatever devices came and went before. */
    u->dev = sess_dev(s);
    u->key.spare[U_FLAGS] &= (uint8_t)~UF_MIXED_DEV;
  }
  if (follows) {
    /* One record for the two events (presence__ev_first_t). */
    presence__ev_first_t first = {.type = PRESENCE_EV_SESSION_DISCONNECTED,
                                  .from = (uint8_t)was,
                                  .to = PRESENCE_OFFLINE};
    user_transition(m, u, to, w->reason, s, dev_before, dev_after, now,
                    &first);
  } else {
    emit_session(m, PRESENCE_EV_SESSION_DISCONNECTED, s, w->reason, was,
                 PRESENCE_OFFLINE, dev_before, dev_after, 0, now);
    /* No transition to emit: to is the user's status, or the grace
     * holds it. */
  }
  session_channels_end(m, s, w->reason, graceful, now);
  session_free(m, s);
  return 0;
}

/* Change one session's status and whatever user transition follows. */
static void set_status(mstore_t *m, msess_t *s, presence_status_t to,
                       presence_reason_t reason) {
  presence_status_t from = s_status(s);
  muser_t *u = sess_user(s);
  int64_t now = m->h.wall_ms(m->h.host_ud);
  presence_status_t others = dev_best(m, u, sess_dev(s), s);
  state_set_status(&s->key.spare[S_STATE], to);
  s->key.spare[S_REASON] = (uint8_t)reason;
  t48_put(s->status_since48, now);
  if (to == PRESENCE_ONLINE) u->n_online++;
  else u->n_online--;
  t48_put(u->last_seen48, now);
  /* Leaving online ends activity now; entering it is activity now. */
  t48_put(u->last_active48, now);
  presence_status_t dev_from = best_of(others, from),
                    dev_to = best_of(others, to);
  presence_status_t uto = computed(u);
  if (uto != u_status(u)) {
    /* One record for the two events (presence__ev_first_t). */
    presence__ev_first_t first = {.type = PRESENCE_EV_SESSION_STATUS,
                                  .from = (uint8_t)from,
                                  .to = (uint8_t)to};
    user_transition(m, u, uto, reason, s, dev_from, dev_to, now, &first);
  } else {
    emit_session(m, PRESENCE_EV_SESSION_STATUS, s, reason, from, to,
                 dev_from, dev_to, 0, now);
  }
  session_channels_status(m, s, from, reason, now);
}

static int op_set_status(mstore_t *m, const presence_write_t *w) {
  msess_t *s = write_session(m, w);
  if (!s) return PRESENCE_ENOSESSION;
  uint8_t *flags = &s->key.spare[S_STATE];
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
  uint8_t *flags = &s->key.spare[S_STATE];
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
      msess_t *s = sess_at(m, u->sessions);
      presence_status_t was = s_status(s);
      u->sessions = s->key.own;
      presence__table_remove(&m->sessions, s);
      handle_release(s);
      u->n_sessions--;
      if (was == PRESENCE_ONLINE) {
        u->n_online--;
        t48_put(u->last_active48, now);
      }
      m->stats.sessions--;
      if (m->inactivity) act_unlink(m, act_of(s));
      presence_status_t dev_after = dev_best(m, u, sess_dev(s), NULL);
      /* The user's offline follows the last of them, and says it all. */
      emit_session(m, PRESENCE_EV_SESSION_DISCONNECTED, s,
                   PRESENCE_REASON_INSTANCE_LOST, was, PRESENCE_OFFLINE,
                   best_of(dev_after, was), dev_after,
                   u_status(u) != PRESENCE_OFFLINE ? PRESENCE_EVENT_USER_FOLLOWS
                                                   : 0,
                   now);
      session_channels_end(m, s, PRESENCE_REASON_INSTANCE_LOST, false, now);
      session_free(m, s);
    }
    grace_cancel(u);
    if (u_status(u) != PRESENCE_OFFLINE) t48_put(u->last_seen48, now);
    user_transition(m, u, PRESENCE_OFFLINE, PRESENCE_REASON_INSTANCE_LOST, NULL,
                    PRESENCE_OFFLINE, PRESENCE_OFFLINE, now, NULL);
  }
  m->gq.len = m->gq.head = 0;
  /* Members in their channel grace leave now. */
  int64_t wall = now;
  (void)members_tick(m, 0, &(presence_reason_t){PRESENCE_REASON_INSTANCE_LOST},
                     &wall);
  presence_event_t ev = {0};
  ev.type = PRESENCE_EV_CLEANUP;
  ev.reason = PRESENCE_REASON_INSTANCE_LOST;
  emit(m, &ev, now, 0, 0, NULL);
  return 0;
}

/* presence_end_graces: the process is stopping, so nobody can come back
 * inside a grace; left pending, those users stayed present to every reader
 * of the log (a webhook receiver) until the next start's cleanup. */
static int op_end_graces(mstore_t *m, presence_reason_t reason) {
  int64_t wall = m->h.wall_ms(m->h.host_ud);
  while (m->gq.len) {
    user_entry_t *e = &m->gq.e[m->gq.head];
    muser_t *u = e->user;
    bool live = u->key.own == e->gen && (u->key.spare[U_FLAGS] & UF_IN_GRACE);
    uq_pop(&m->gq);
    if (!live) continue;
    u->key.spare[U_FLAGS] &= (uint8_t)~UF_IN_GRACE;
    user_transition(m, u, PRESENCE_OFFLINE, reason, NULL, PRESENCE_OFFLINE,
                    PRESENCE_OFFLINE, wall, NULL);
  }
  (void)members_tick(m, 0, &reason, &wall);
  return 0;
}

/* ---- status that people set ------------------------------------------- */

/* The expiry heap: users whose message expires, earliest first. Each user
 * knows its index (ext->heap_idx), so an explicit change removes its entry
 * at once and no entry ever outlives its user. */
static inline int64_t exp_key(const mstore_t *m, uint32_t i) {
  return m->heap[i]->ext->msg_expires_ms;
}

static inline void exp_place(mstore_t *m, uint32_t i, muser_t *u) {
  m->heap[i] = u;
  u->ext->heap_idx = i;
}

static void exp_up(mstore_t *m, uint32_t i) {
  muser_t *u = m->heap[i];
  int64_t k = u->ext->msg_expires_ms;
  while (i > 0) {
    uint32_t parent = (i - 1) / 2;
    if (exp_key(m, parent) <= k) break;
    exp_place(m, i, m->heap[parent]);
    i = parent;
  }
  exp_place(m, i, u);
}

static void exp_down(mstore_t *m, uint32_t i) {
  muser_t *u = m->heap[i];
  int64_t k = u->ext->msg_expires_ms;
  for (;;) {
    uint32_t c = 2 * i + 1;
    if (c >= m->heap_len) break;
    if (c + 1 < m->heap_len && exp_key(m, c + 1) < exp_key(m, c)) c++;
    if (exp_key(m, c) >= k) break;
    exp_place(m, i, m->heap[c]);
    i = c;
  }
  exp_place(m, i, u);
}

static int exp_reserve(mstore_t *m) {
  if (m->heap_len < m->heap_cap) return 0;
  uint32_t ncap = m->heap_cap ? m->heap_cap * 2 : 64;
  muser_t **n = presence__realloc(m->alloc, m->heap, ncap * sizeof(*n));
  if (!n) return PRESENCE_ENOMEM;
  m->heap = n;
  m->heap_cap = ncap;
  return 0;
}

/* Room must have been reserved (exp_reserve): this cannot fail. */
static void exp_insert(mstore_t *m, muser_t *u) {
  deadline_added(m); /* expiries come in any order */
  exp_place(m, m->heap_len++, u);
  exp_up(m, m->heap_len - 1);
}

static void exp_remove(mstore_t *m, muser_t *u) {
  uint32_t i = u->ext->heap_idx;
  if (i == NOT_IN_HEAP) return;
  u->ext->heap_idx = NOT_IN_HEAP;
  muser_t *last = m->heap[--m->heap_len];
  if (i == m->heap_len) return;
  exp_place(m, i, last);
  exp_up(m, i);
  exp_down(m, last->ext->heap_idx);
}

/* A user record for a write that sets something; NULL without memory. */
static muser_t *user_for_write(mstore_t *m, const presence_write_t *w) {
  uint32_t uh = presence__hash(w->user_id, w->user_id_len);
  return user_get_or_create(m, w->user_id, w->user_id_len, uh);
}

static muser_t *user_find_write(mstore_t *m, const presence_write_t *w) {
  uint32_t uh = presence__hash(w->user_id, w->user_id_len);
  return presence__table_find(&m->users, w->user_id, w->user_id_len, uh);
}

/* Whether retention may forget u: nothing set that a reconnect must find. */
static inline bool holds_setting(const muser_t *u) {
  return u_avail(u) != PRESENCE_AVAIL_AUTO || ext_has_message(u->ext);
}

/* A setting cleared on an absent user: it becomes forgettable again, so it
 * goes back in the forget queue (the entry of its going offline was skipped
 * while it held the setting). */
static void maybe_forget_later(mstore_t *m, muser_t *u) {
  if (!m->retention_s || holds_setting(u) || u->n_sessions ||
      u_status(u) != PRESENCE_OFFLINE || (u->key.spare[U_FLAGS] & UF_IN_GRACE))
    return;
  /* Counted from now: an older entry (from going offline while the setting
   * held) must not forget it sooner. */
  u->key.own++;
  (void)uq_push(m, &m->fq, u, u->key.own,
                (uint32_t)((m->h.mono_ms(m->h.host_ud) - m->mono_base) / 1000) +
                    m->retention_s);
}

static uext_t *ext_ensure(mstore_t *m, muser_t *u) {
  if (u->ext) return u->ext;
  uext_t *x = presence__malloc(m->alloc, sizeof(*x) + 32);
  if (!x) return NULL;
  memset(x, 0, sizeof(*x) + 32);
  x->heap_idx = NOT_IN_HEAP;
  x->strs_cap = 32;
  u->ext = x;
  return x;
}

/* The user's devices into d (room for DEV_WORDS): one entry per kind, in
 * the order first met; their count. */
static size_t user_devices(const mstore_t *m, const muser_t *u,
                           presence_device_status_t *d) {
  size_t n = 0;
  if (!(u->key.spare[U_FLAGS] & UF_MIXED_DEV)) {
    if (u->n_sessions) {
      d[0].device = m->dev_word[u->dev];
      d[0].status = computed(u);
      d[0].session_count = u->n_sessions;
      n = 1;
    }
  } else {
    for (const msess_t *s = sess_at(m, u->sessions); s;
         s = sess_at(m, s->key.own)) {
      size_t k = 0;
      while (k < n && d[k].device != m->dev_word[sess_dev(s)]) k++;
      if (k == n) {
        d[n].device = m->dev_word[sess_dev(s)];
        d[n].status = PRESENCE_OFFLINE;
        d[n].session_count = 0;
        n++;
      }
      d[k].status = best_of(d[k].status, s_status(s));
      d[k].session_count++;
    }
  }
  return n;
}

static void emit_user_setting(mstore_t *m, muser_t *u,
                              presence_event_type_t type,
                              presence_availability_t from,
                              presence_reason_t reason, int64_t now) {
  presence_event_t ev = {0};
  ev.type = type;
  ev.reason = reason;
  ev.user_id = u->id;
  ev.from = ev.to = u_status(u);
  ev.user_version = u->version;
  ev.availability_from = from;
  ev.availability_to = u_avail(u);
  if (type == PRESENCE_EV_USER_MESSAGE) {
    ev.message = ext_text(u->ext);
    ev.emoji = ext_emoji(u->ext);
    ev.message_expires_ms = u->ext ? u->ext->msg_expires_ms : 0;
  } else {
    /* Every device is shown masked by the availability: a watcher is sent
     * the whole map (presence_event_t.devices). */
    ev.n_devices = user_devices(m, u, m->ev_devs);
    ev.devices = ev.n_devices ? m->ev_devs : NULL;
  }
  shown_bump(u, &ev);
  emit(m, &ev, now, 0, u->key.len, NULL);
}

/* The user's availability changed from `from`: each channel it is in shows
 * it differently (one visibility frame per channel, so its shown version
 * moves by one), and its hidden count moves when invisible came or went. */
static void member_avail_changed(muser_t *u, presence_availability_t from) {
  int d = (u_avail(u) == PRESENCE_AVAIL_INVISIBLE) -
          (from == PRESENCE_AVAIL_INVISIBLE);
  for (mmember_t *mb = u->members; mb; mb = mb->u_next) {
    mb->k.chan->n_hidden += (uint32_t)d;
    mb->shown_version++;
  }
}

/* The user leaves invisible at now: keep the period it spent invisible as
 * its veil, so that an availability set while it is offline or in its grace
 * does not show watchers the times it had while invisible (a last_seen
 * after it went invisible proves it was there). A time of the user's still
 * inside the previous veil (offline since then, say) keeps that veil's
 * start, so it stays hidden too. O(1), on the setting's path only. */
static void veil_keep(muser_t *u, int64_t now) {
  uext_t *x = u->ext;
  int64_t from = x->avail_since_ms;
  if (x->veil_to_ms) {
    int64_t low = t48_get(u->since48), t = t48_get(u->last_seen48);
    if (t && t < low) low = t;
    t = t48_get(u->last_active48);
    if (t && t < low) low = t;
    if (low <= x->veil_to_ms && x->veil_from_ms < from)
      from = x->veil_from_ms;
  }
  x->veil_from_ms = from;
  x->veil_to_ms = now;
}

static int op_set_availability(mstore_t *m, const presence_write_t *w) {
  muser_t *u = user_find_write(m, w);
  /* auto on a user never seen is what it already has: no record made. */
  if (!u && w->availability == PRESENCE_AVAIL_AUTO) return 0;
  if (!u && !(u = user_for_write(m, w))) return PRESENCE_ENOMEM;
  if (u_avail(u) == w->availability) return 0;
  if (!ext_ensure(m, u)) return PRESENCE_ENOMEM;
  int64_t now = m->h.wall_ms(m->h.host_ud);
  presence_availability_t from = u_avail(u);
  if (from == PRESENCE_AVAIL_INVISIBLE) veil_keep(u, now);
  u->key.spare[U_AVAIL] = (uint8_t)w->availability;
  u->ext->avail_since_ms = now;
  member_avail_changed(u, from);
  u->version++;
  emit_user_setting(m, u, PRESENCE_EV_USER_AVAILABILITY, from, w->reason, now);
  maybe_forget_later(m, u);
  return 0;
}

static bool same_str(const char *have, const char *s, size_t len) {
  if (!have || !s) return !have && !s;
  return strlen(have) == len && memcmp(have, s, len) == 0;
}

/* Replace (or clear) the message; emits one user.message. The caller made
 * sure it changes something. */
static int message_store(mstore_t *m, muser_t *u, const char *text,
                         size_t tlen, const char *emoji, size_t elen,
                         int64_t expires_ms, presence_reason_t reason) {
  if (expires_ms && exp_reserve(m)) return PRESENCE_ENOMEM;
  uext_t *x = u->ext;
  size_t need = tlen + 1 + elen + 1;
  /* Grown, never shrunk: a user who sets and clears a message again and
   * again (the common "in a meeting" cycle) reallocates nothing. */
  if (!x || x->strs_cap < need) {
    size_t cap = need < 32 ? 32 : need;
    x = presence__realloc(m->alloc, x, sizeof(*x) + cap);
    if (!x) return PRESENCE_ENOMEM;
    if (!u->ext) {
      memset(x, 0, sizeof(*x));
      x->heap_idx = NOT_IN_HEAP;
    }
    x->strs_cap = (uint32_t)cap;
    u->ext = x;
  }
  exp_remove(m, u);
  int64_t now = m->h.wall_ms(m->h.host_ud);
  x->has_text = text != NULL;
  x->has_emoji = emoji != NULL;
  x->text_len = (uint32_t)tlen;
  x->emoji_len = (uint32_t)elen;
  if (tlen) memcpy(x->strs, text, tlen);
  x->strs[tlen] = '\0';
  if (elen) memcpy(x->strs + tlen + 1, emoji, elen);
  x->strs[tlen + 1 + elen] = '\0';
  x->msg_expires_ms = expires_ms;
  x->msg_set_ms = text || emoji ? now : 0;
  if (expires_ms) exp_insert(m, u);
  u->version++;
  emit_user_setting(m, u, PRESENCE_EV_USER_MESSAGE,
                    u_avail(u), reason, now);
  maybe_forget_later(m, u);
  return 0;
}

static int op_set_message(mstore_t *m, const presence_write_t *w) {
  muser_t *u = user_find_write(m, w);
  bool clear = !w->message && !w->emoji;
  if (!u && clear) return 0;
  if (!u && !(u = user_for_write(m, w))) return PRESENCE_ENOMEM;
  uext_t *x = u->ext;
  if (same_str(ext_text(x), w->message, w->message_len) &&
      same_str(ext_emoji(x), w->emoji, w->emoji_len) &&
      (x ? x->msg_expires_ms : 0) == w->expires_ms)
    return 0;
  return message_store(m, u, w->message, w->message_len, w->emoji,
                       w->emoji_len, w->expires_ms, w->reason);
}

/* Messages due at wall time now: each cleared once, reason "expired". */
static void expire_messages(mstore_t *m, int64_t now) {
  while (m->heap_len && exp_key(m, 0) <= now) {
    muser_t *u = m->heap[0];
    /* A clear needs no memory (the block is never shrunk), so this does
     * not fail; were it to, the entry leaves the heap rather than being
     * retried in a loop. */
    if (message_store(m, u, NULL, 0, NULL, 0, 0, PRESENCE_REASON_EXPIRED))
      exp_remove(m, u);
  }
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
  case PRESENCE_WRITE_JOIN:
    rc = op_join(m, w);
    break;
  case PRESENCE_WRITE_UPDATE:
    rc = op_update(m, w);
    break;
  case PRESENCE_WRITE_LEAVE:
    rc = op_leave(m, w);
    break;
  case PRESENCE_WRITE_REMOVE_USER:
    rc = op_remove_user(m, w);
    break;
  case PRESENCE_WRITE_SET_AVAILABILITY:
    rc = op_set_availability(m, w);
    break;
  case PRESENCE_WRITE_SET_MESSAGE:
    rc = op_set_message(m, w);
    break;
  case PRESENCE_WRITE_END_GRACES:
    rc = op_end_graces(m, w->reason);
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
    bool live = u->key.own == e->gen && (u->key.spare[U_FLAGS] & UF_IN_GRACE);
    if (live && !due(e->deadline, now)) {
      next = (int32_t)(e->deadline - now);
      break;
    }
    uq_pop(&m->gq);
    if (!live) continue;
    u->key.spare[U_FLAGS] &= (uint8_t)~UF_IN_GRACE;
    if (!wall) wall = m->h.wall_ms(m->h.host_ud);
    user_transition(m, u, PRESENCE_OFFLINE,
                    u_end_reason(u), NULL,
                    PRESENCE_OFFLINE, PRESENCE_OFFLINE, wall, NULL);
  }
  {
    int64_t d = members_tick(m, now, NULL, &wall);
    if (d >= 0 && (next < 0 || d < next)) next = d;
  }
  /* Offline users past their retention: forgotten, as if never seen. */
  uint32_t now_s = (uint32_t)((now_mono - m->mono_base) / 1000);
  while (m->fq.len) {
    user_entry_t *e = &m->fq.e[m->fq.head];
    muser_t *u = e->user;
    bool live = u->key.own == e->gen && u_status(u) == PRESENCE_OFFLINE &&
                !u->n_sessions && !(u->key.spare[U_FLAGS] & UF_IN_GRACE) &&
                !u->members && !holds_setting(u);
    if (live && e->deadline > now_s) {
      int64_t d = ((int64_t)e->deadline * 1000) - (now_mono - m->mono_base);
      if (next < 0 || d < next) next = d;
      break;
    }
    uq_pop(&m->fq);
    if (!live) continue;
    presence__table_remove(&m->users, u);
    user_free(m, u);
    m->stats.users_known--;
  }
  if (m->heap_len) {
    if (!wall) wall = m->h.wall_ms(m->h.host_ud);
    expire_messages(m, wall);
    if (m->heap_len) {
      int64_t d = exp_key(m, 0) - wall;
      if (next < 0 || d < next) next = d;
    }
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
        s->key.spare[S_STATE] |= SF_IDLE_BY_INACTIVITY;
        set_status(m, s, PRESENCE_IDLE, PRESENCE_REASON_INACTIVITY);
      }
    }
  }
  return next;
}


/* ---- channel queries --------------------------------------------------- */

typedef const char *(*key_of_fn)(const void *rec);
static const char *member_key(const void *r) {
  return ((const mmember_t *)r)->k.user->id;
}
static const char *chan_key(const void *r) { return ((const mchan_t *)r)->name; }

/* A page: keep the `limit` smallest keys above `after` in a max-heap of
 * m->pick, then sort them. O(n log limit) over the candidates. Returns how
 * many were picked; *more says whether candidates were left out. */
static void heap_down(void **h, size_t n, size_t i, key_of_fn key) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, big = i;
    if (l < n && strcmp(key(h[l]), key(h[big])) > 0) big = l;
    if (r < n && strcmp(key(h[r]), key(h[big])) > 0) big = r;
    if (big == i) return;
    void *t = h[i];
    h[i] = h[big];
    h[big] = t;
    i = big;
  }
}

static int pick_reserve(mstore_t *m, size_t n) {
  if (n <= m->pick_cap) return 0;
  void **v = presence__realloc(m->alloc, m->pick, n * sizeof(*v));
  if (!v) return PRESENCE_ENOMEM;
  m->pick = v;
  m->pick_cap = n;
  return 0;
}

static void pick_offer(mstore_t *m, size_t limit, size_t *n, void *rec,
                       key_of_fn key, bool *more) {
  void **h = m->pick;
  if (*n < limit) {
    /* sift up */
    size_t i = (*n)++;
    h[i] = rec;
    while (i && strcmp(key(h[(i - 1) / 2]), key(h[i])) < 0) {
      void *t = h[i];
      h[i] = h[(i - 1) / 2];
      h[(i - 1) / 2] = t;
      i = (i - 1) / 2;
    }
    return;
  }
  *more = true;
  if (strcmp(key(rec), key(h[0])) < 0) {
    h[0] = rec;
    heap_down(h, *n, 0, key);
  }
}

static void pick_sort(mstore_t *m, size_t n, key_of_fn key) {
  for (size_t end = n; end > 1; end--) {
    void *t = m->pick[0];
    m->pick[0] = m->pick[end - 1];
    m->pick[end - 1] = t;
    heap_down(m->pick, end - 1, 0, key);
  }
}

static int info_reserve(mstore_t *m, size_t n_members, size_t n_metas) {
  if (n_members > m->minfo_cap) {
    presence_member_info_t *v =
        presence__realloc(m->alloc, m->minfo, n_members * sizeof(*v));
    if (!v) return PRESENCE_ENOMEM;
    m->minfo = v;
    m->minfo_cap = n_members;
  }
  if (n_metas > m->metas_cap) {
    presence_member_meta_t *v =
        presence__realloc(m->alloc, m->metas, n_metas * sizeof(*v));
    if (!v) return PRESENCE_ENOMEM;
    m->metas = v;
    m->metas_cap = n_metas;
  }
  return 0;
}

static int fill_member(mstore_t *m, const mmember_t *mb,
                       presence_member_info_t *o,
                       presence_member_meta_t *metas) {
  o->channel = mb->k.chan->name;
  o->user_id = mb->k.user->id;
  o->status = m_status(mb);
  o->data = m_data(mb);
  o->since_ms = mb->since_ms;
  o->version = mb->version;
  o->session_count = mb->n_joins;
  o->availability = u_avail(mb->k.user);
  o->shown_version = mb->shown_version;
  o->channel_shown_count = mb->k.chan->n_members - mb->k.chan->n_hidden;
  o->veil_to_ms = mb->k.user->ext ? mb->k.user->ext->veil_to_ms : 0;
  o->metas = metas;
  o->n_metas = 0;
  for (const mjoin_t *j = mb->joins; j; j = j->m_next) {
    presence_member_meta_t *t = &metas[o->n_metas++];
    t->session_id = sess_id_kept(m, j->sess);
    if (!t->session_id) return PRESENCE_ENOMEM;
    t->data = j->data;
    t->status = s_status(j->sess);
    t->joined_ms = j->joined_ms;
  }
  return 0;
}

/* Fill m->minfo from the members in m->pick[0..n). */
static int fill_members(mstore_t *m, size_t n) {
  size_t nm = 0;
  for (size_t i = 0; i < n; i++) nm += ((mmember_t *)m->pick[i])->n_joins;
  int rc = info_reserve(m, n, nm);
  if (rc) return rc;
  nm = 0;
  for (size_t i = 0; i < n; i++) {
    rc = fill_member(m, m->pick[i], &m->minfo[i], m->metas + nm);
    if (rc) return rc;
    nm += m->minfo[i].n_metas;
  }
  return 0;
}

static int m_channel_members(presence_store_t *st, const char *channel,
                             const char *after, size_t limit,
                             void (*cb)(void *, int,
                                        const presence_member_info_t *, size_t,
                                        uint64_t, const char *),
                             void *ud) {
  mstore_t *m = (mstore_t *)st;
  mchan_t *ch = find_chan(m, channel, strlen(channel));
  if (!ch || !limit) {
    cb(ud, 0, NULL, 0, ch ? ch->n_members : 0, NULL);
    return 0;
  }
  if (limit > ch->n_members) limit = ch->n_members;
  if (pick_reserve(m, limit)) return PRESENCE_ENOMEM;
  size_t n = 0;
  bool more = false;
  for (mmember_t *mb = ch->head; mb; mb = mb->next) {
    if (after && strcmp(mb->k.user->id, after) <= 0) continue;
    pick_offer(m, limit, &n, mb, member_key, &more);
  }
  pick_sort(m, n, member_key);
  int rc = fill_members(m, n);
  if (rc) return rc;
  cb(ud, 0, m->minfo, n, ch->n_members,
     more && n ? m->minfo[n - 1].user_id : NULL);
  return 0;
}

static int m_channels_list(presence_store_t *st, const char *prefix,
                           const char *after, size_t limit,
                           void (*cb)(void *, int,
                                      const presence_channel_info_t *, size_t,
                                      const char *),
                           void *ud) {
  mstore_t *m = (mstore_t *)st;
  size_t plen = strlen(prefix);
  if (limit > m->channels.count) limit = m->channels.count;
  if (!limit) {
    cb(ud, 0, NULL, 0, NULL);
    return 0;
  }
  if (pick_reserve(m, limit)) return PRESENCE_ENOMEM;
  if (limit > m->cinfo_cap) {
    presence_channel_info_t *v =
        presence__realloc(m->alloc, m->cinfo, limit * sizeof(*v));
    if (!v) return PRESENCE_ENOMEM;
    m->cinfo = v;
    m->cinfo_cap = limit;
  }
  size_t n = 0, pos = 0;
  bool more = false;
  mchan_t *ch;
  while ((ch = presence__table_next(&m->channels, &pos))) {
    if (ch->key.len < plen || memcmp(ch->name, prefix, plen)) continue;
    if (after && strcmp(ch->name, after) <= 0) continue;
    pick_offer(m, limit, &n, ch, chan_key, &more);
  }
  pick_sort(m, n, chan_key);
  for (size_t i = 0; i < n; i++) {
    mchan_t *c = m->pick[i];
    m->cinfo[i] = (presence_channel_info_t){c->name, c->n_members,
                                            c->n_members - c->n_hidden};
  }
  cb(ud, 0, m->cinfo, n, more && n ? m->cinfo[n - 1].channel : NULL);
  return 0;
}

static int m_user_channels(presence_store_t *st, const char *user_id,
                           void (*cb)(void *, int,
                                      const presence_member_info_t *, size_t,
                                      uint64_t, const char *),
                           void *ud) {
  mstore_t *m = (mstore_t *)st;
  size_t len = strlen(user_id);
  muser_t *u = presence__table_find(&m->users, user_id, len,
                                    presence__hash(user_id, len));
  size_t n = 0;
  for (mmember_t *mb = u ? u->members : NULL; mb; mb = mb->u_next) n++;
  if (pick_reserve(m, n)) return PRESENCE_ENOMEM;
  n = 0;
  for (mmember_t *mb = u ? u->members : NULL; mb; mb = mb->u_next)
    m->pick[n++] = mb;
  int rc = fill_members(m, n);
  if (rc) return rc;
  cb(ud, 0, m->minfo, n, n, NULL);
  return 0;
}

static int m_member_get(presence_store_t *st, const char *channel,
                        const char *user_id, presence_member_info_t *out) {
  mstore_t *m = (mstore_t *)st;
  mchan_t *ch = find_chan(m, channel, strlen(channel));
  size_t len = strlen(user_id);
  muser_t *u = ch ? presence__table_find(&m->users, user_id, len,
                                         presence__hash(user_id, len))
                  : NULL;
  mmember_t *mb = u ? find_member(m, ch, u) : NULL;
  if (!mb) return PRESENCE_ENOTMEMBER;
  if (info_reserve(m, 1, mb->n_joins)) return PRESENCE_ENOMEM;
  return fill_member(m, mb, out, m->metas);
}

/* ---- queries ----------------------------------------------------------- */

static void fill_user(mstore_t *m, const muser_t *u, presence_user_info_t *o) {
  o->user_id = u->id;
  o->status = u_status(u);
  o->since_ms = t48_get(u->since48);
  /* A present user is being seen now. */
  o->last_seen_ms = o->status != PRESENCE_OFFLINE
                        ? m->h.wall_ms(m->h.host_ud)
                        : t48_get(u->last_seen48);
  o->session_count = u->n_sessions;
  o->online_count = u->n_online;
  o->version = u->version;
  o->shown_version = u->shown_version;
  o->availability = u_avail(u);
  const uext_t *x = u->ext;
  o->availability_since_ms = x ? x->avail_since_ms : 0;
  o->message = ext_text(x);
  o->emoji = ext_emoji(x);
  o->message_expires_ms = x ? x->msg_expires_ms : 0;
  o->message_set_ms = x ? x->msg_set_ms : 0;
  o->veil_from_ms = x ? x->veil_from_ms : 0;
  o->veil_to_ms = x ? x->veil_to_ms : 0;
  o->last_active_ms = u->n_online ? m->h.wall_ms(m->h.host_ud)
                                  : t48_get(u->last_active48);
  size_t n = user_devices(m, u, m->dev_scratch);
  o->devices = n ? m->dev_scratch : NULL;
  o->n_devices = n;
}


static int fill_session(mstore_t *m, msess_t *s, presence_session_info_t *o) {
  o->session_id = sess_id_kept(m, s);
  if (!o->session_id) return PRESENCE_ENOMEM;
  o->user_id = sess_user(s)->id;
  o->meta = sess_meta(s);
  o->instance_id = m->h.instance_id;
  o->status = s_status(s);
  o->status_reason = (presence_reason_t)s->key.spare[S_REASON];
  o->connected_ms = t48_get(s->connected48);
  o->status_since_ms = t48_get(s->status_since48);
  o->device = m->dev_word[sess_dev(s)];
  return 0;
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
  for (msess_t *s = u ? sess_at(m, u->sessions) : NULL; s;
       s = sess_at(m, s->key.own)) {
    int rc = fill_session(m, s, &m->scratch[i++]);
    if (rc) return rc;
  }
  cb(ud, 0, m->scratch, n);
  return 0;
}

static int m_session_get(presence_store_t *st, const char *session_id,
                         presence_session_info_t *out) {
  mstore_t *m = (mstore_t *)st;
  msess_t *s = sess_find(m, session_id, strlen(session_id));
  if (!s) return PRESENCE_ENOSESSION;
  return fill_session(m, s, out);
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
  *out = m->stats; /* channels, members, memberships kept there too */
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
  presence__pool_init_indexed(
      &m->spool, m->alloc,
      (m->inactivity ? sizeof(act_t) : 0) + offsetof(msess_t, slot));
  (void)dev_intern(m, PRESENCE_DEVICE_DEFAULT,
                   sizeof(PRESENCE_DEVICE_DEFAULT) - 1);
  /* Retention outlasts grace: a user is forgotten only after every grace
   * entry that may point to it has left the queue (see user_entry_t). */
  m->retention_s = host->offline_retention_s;
  if (m->retention_s && (uint64_t)m->retention_s * 1000 <= host->offline_grace_ms)
    m->retention_s = host->offline_grace_ms / 1000 + 1;
  int rc = presence__table_init_rehash(&m->sessions, m->alloc,
                                       offsetof(msess_t, id));
  if (rc) return rc;
  rc = presence__table_init_rehash(&m->users, m->alloc, offsetof(muser_t, id));
  if (rc) return rc;
  rc = presence__table_init(&m->channels, m->alloc, offsetof(mchan_t, name));
  if (rc) return rc;
  rc = presence__table_init(&m->members, m->alloc, offsetof(mmember_t, k));
  if (rc) return rc;
  rc = presence__table_init(&m->sid_texts, m->alloc,
                            offsetof(sid_text_rec_t, sess));
  if (rc) return rc;
  if (host->expected_sessions) {
    rc = presence__table_reserve(&m->sessions, host->expected_sessions);
    if (rc) return rc;
  }
  if (host->expected_users) {
    rc = presence__table_reserve(&m->users, host->expected_users);
    if (rc) return rc;
  }
  m->mkey = (uint64_t)presence__hash("member key", 10) << 32 |
            presence__hash("member key 2", 12);
  /* Room for 1.6x the expected members (the table is then at most half
   * full at the expected size, not 80 %): a join's find of a new member
   * probes to an empty slot and a leave's backward shift walks the rest of
   * its run, both long in linear probing near 80 % (~13 slots for a miss),
   * ~2.5 at half. 4.8 more bytes a membership. */
  if (host->expected_memberships) {
    rc = presence__table_reserve(
        &m->members, (size_t)host->expected_memberships / 5 * 8 + 8);
    if (rc) return rc;
  }
  m->log = presence__log_new(m->alloc, host->log_capacity, host->seq_base);
  m->seq = host->seq_base;
  return m->log ? 0 : PRESENCE_ENOMEM;
}

static void m_destroy(presence_store_t *st) {
  mstore_t *m = (mstore_t *)st;
  /* A copy: m->alloc points into m, which goes last. */
  const presence_allocator_t a_copy = m->alloc_own;
  const presence_allocator_t *a = &a_copy;
  size_t pos = 0;
  muser_t *u;
  mchan_t *ch;
  if (m->channels.slots) {
    while ((ch = presence__table_next(&m->channels, &pos))) {
      mmember_t *mb = ch->head;
      while (mb) {
        mmember_t *next = mb->next;
        mjoin_t *j = mb->joins;
        while (j) {
          mjoin_t *jn = j->m_next;
          presence__free(a, j->data);
          if (j != &mb->j0) /* j0 goes with mb */
            presence__pool_free(&m->pool, j, sizeof(*j));
          j = jn;
        }
        if (mb->q_refs) mb->key.spare[M_FLAGS] = MF_DEAD; /* freed below */
        else member_free(m, mb);
        mb = next;
      }
      chan_free(m, ch);
    }
    pos = 0;
  }
  /* Members only the grace queue still names. */
  for (size_t i = 0; i < m->mq.len; i++) {
    mmember_t *mb = m->mq.e[(m->mq.head + i) % m->mq.cap].member;
    if (--mb->q_refs == 0) member_free(m, mb);
  }
  presence__table_free(&m->channels);
  presence__table_free(&m->members);
  presence__free(a, m->mq.e);
  presence__free(a, m->pick);
  presence__free(a, m->minfo);
  presence__free(a, m->metas);
  presence__free(a, m->cinfo);
  /* Session and user records go with their pools' chunks: only what a
   * user holds apart (its setting block) is freed one by one, so freeing a
   * store of a million sessions does not walk them. */
  if (m->users.slots) {
    while ((u = presence__table_next(&m->users, &pos)))
      presence__free(a, u->ext);
  }
  presence__table_free(&m->sessions);
  presence__table_free(&m->users);
  presence__table_free(&m->sid_texts); /* its records go with the pool */
  presence__log_free(m->log);
  presence__free(a, m->gq.e);
  presence__free(a, m->fq.e);
  presence__free(a, m->scratch);
  presence__free(a, m->heap);
  presence__pool_destroy(&m->pool);
  presence__pool_destroy(&m->spool);
  presence__free(a, m);
}

static const presence_store_ops_t memory_ops = {
    .name = "memory",
    .flags = PRESENCE_STORE_SYNC | PRESENCE_STORE_DEADLINES,
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
    .channel_members = m_channel_members,
    .channels_list = m_channels_list,
    .user_channels = m_user_channels,
    .member_get = m_member_get,
};

presence_store_t *presence_store_memory_new(const presence_allocator_t *alloc) {
  const presence_allocator_t *a = alloc ? alloc : presence__default_allocator();
  mstore_t *m = presence__malloc(a, sizeof(*m));
  if (!m) return NULL;
  memset(m, 0, sizeof(*m));
  m->base.ops = &memory_ops;
  m->alloc_own = *a;
  m->alloc = &m->alloc_own;
  presence__pool_init(&m->pool, m->alloc);
  return &m->base;
}
