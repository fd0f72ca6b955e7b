/* SPDX-License-Identifier: MIT */
/*
 * Internal pieces of libpresence shared between the engine and the stores:
 * allocation through the injected allocator, id validation, the string-keyed
 * record table and the transition log. Nothing here does I/O.
 */
#ifndef PRESENCE_INTERNAL_H
#define PRESENCE_INTERNAL_H

#include "presence.h"
#include "presence_store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- allocation -------------------------------------------------------- */

void *presence__malloc(const presence_allocator_t *a, size_t n);
void *presence__realloc(const presence_allocator_t *a, void *p, size_t n);
void presence__free(const presence_allocator_t *a, void *p);
/* The default allocator (malloc/realloc/free), for zeroed options. */
const presence_allocator_t *presence__default_allocator(void);
/* The allocator a presence_t was made with (cursor.c). */
const presence_allocator_t *presence__allocator(const presence_t *p);

/* ---- record pools (pool.c) ---------------------------------------------- */

/*
 * Small records in 8-byte size classes, carved from chunks of the injected
 * allocator: no per-record malloc header, no rounding to 16. The caller
 * gives the size back on free (records know their own size). Sizes above
 * PRESENCE__POOL_MAX go to the allocator itself.
 */
#define PRESENCE__POOL_SMALL 256 /* 8-byte classes up to here */
#define PRESENCE__POOL_MAX 4608  /* 256-byte classes up to here */
#define PRESENCE__POOL_CLASSES                                                 \
  (PRESENCE__POOL_SMALL / 8 + (PRESENCE__POOL_MAX - PRESENCE__POOL_SMALL) / 256)
#define PRESENCE__POOL_CHUNK_BLOCKS 1024 /* at most, so an index is 32 bits */

typedef struct presence__pool {
  const presence_allocator_t *alloc;
  void *free[PRESENCE__POOL_CLASSES];           /* free blocks, linked */
  unsigned char *bump[PRESENCE__POOL_CLASSES];  /* the class's newest chunk */
  uint32_t left[PRESENCE__POOL_CLASSES];        /* blocks left there */
  uint32_t next_blocks[PRESENCE__POOL_CLASSES]; /* the next chunk's size */
  void *chunks;                                 /* every chunk, linked */
  /* Indexed pools: the chunks by number (index / CHUNK_BLOCKS), each
   * entry with what presence__pool_block needs, so a use by handle reads
   * this small directory (16 B a chunk of up to 1,024 blocks; it stays in
   * cache) and then the block, never a chunk header first. */
  bool indexed;
  uint32_t keep_off;
  struct presence__pool_dir {
    unsigned char *first; /* the chunk's first block */
    uint32_t size;        /* of its blocks */
    uint32_t blocks;      /* how many */
  } *dir;
  uint32_t n_dir, dir_cap;
} presence__pool_t;

void presence__pool_init(presence__pool_t *p, const presence_allocator_t *a);
/* A pool whose blocks have indexes (see pool.c): each block's 4 bytes at
 * keep_off hold its index, the 4 after them a generation the caller sets
 * (0 while free: the caller zeroes it before freeing). Both stay readable
 * while the block is free. Sizes above PRESENCE__POOL_MAX are refused. */
void presence__pool_init_indexed(presence__pool_t *p,
                                 const presence_allocator_t *a,
                                 size_t keep_off);
/* NULL when the allocator refuses. */
void *presence__pool_alloc(presence__pool_t *p, size_t n);
/* The same, with the block's index (indexed pools). */
void *presence__pool_alloc_at(presence__pool_t *p, size_t n, uint32_t *index);
/* The block an index names (free or not), or NULL if it names none. */
void *presence__pool_block(const presence__pool_t *p, uint32_t index);
/* n: the size given to presence__pool_alloc. */
void presence__pool_free(presence__pool_t *p, void *rec, size_t n);
/* Every chunk back to the allocator; records still out are gone too. */
void presence__pool_destroy(presence__pool_t *p);

/* ---- ids --------------------------------------------------------------- */

/* 0 and the length in *len, or PRESENCE_EID. */
int presence__id_check_len(const char *id, size_t *len);
/* Whether s[0..n) is valid UTF-8 without control characters. */
bool presence__utf8_ok(const unsigned char *s, size_t n);

uint32_t presence__hash(const char *s, size_t n);

/* ---- status that people set ------------------------------------------ */

/* 0 or EDEVICE; the length in *len. */
int presence__device_check_len(const char *device, size_t *len);
/* Code points in s[0..n) (valid UTF-8 assumed). */
size_t presence__utf8_chars(const unsigned char *s, size_t n);
/* presence_message_check, with the lengths (0 for a NULL string). */
int presence__message_check_len(const char *text, const char *emoji,
                                uint32_t max_chars, size_t *text_len,
                                size_t *emoji_len);

/* ---- the record table -------------------------------------------------- */

/*
 * An open-addressing table of pointers to records that begin with a
 * presence__hkey and hold their key inline at a fixed offset. Slots keep 16
 * bits of the hash in the pointer's unused top bits, so a probe rarely
 * touches a record that is not the one sought. Deletion shifts entries back
 * (no tombstones), so lookups stay short under churn.
 */
typedef struct presence__hkey {
  /* The key's hash; in a table made with presence__table_init_rehash the
   * table computes it from the key instead, and these 4 bytes are the
   * record's own (`own`): the memory store's most numerous records are a
   * pool size class smaller for it. */
  union {
    uint32_t hash;
    uint32_t own;
  };
  uint8_t len;
  uint8_t spare[3]; /* free for the record's own small fields */
} presence__hkey_t;

/* hkey.len of a key held in 16 bytes that are not its text (the memory
 * store keeps a canonical UUID session id so); no text key is this long
 * (PRESENCE_ID_MAX), so the two forms never compare equal. */
#define PRESENCE__KEY_BIN16 0xffu
_Static_assert(PRESENCE_ID_MAX < PRESENCE__KEY_BIN16, "text keys are shorter");
static inline size_t presence__key_bytes(size_t len) {
  return len == PRESENCE__KEY_BIN16 ? 16 : len;
}

typedef struct presence__table {
  uint64_t *slots;
  size_t cap;
  size_t count;
  size_t key_offset; /* where the record's key bytes start */
  bool rehash;       /* hkey.hash not kept: presence__hash of the key */
  const presence_allocator_t *alloc;
} presence__table_t;

int presence__table_init(presence__table_t *t, const presence_allocator_t *a,
                         size_t key_offset);
/* The same for records that do not keep their hash: it is presence__hash
 * of the key's bytes (presence__key_bytes(len) of them), computed when the
 * table needs it (an insert or remove without the hash, a resize), and
 * hkey.own is the record's. */
int presence__table_init_rehash(presence__table_t *t,
                                const presence_allocator_t *a,
                                size_t key_offset);
void presence__table_free(presence__table_t *t);
void *presence__table_find(const presence__table_t *t, const char *key,
                           size_t len, uint32_t hash);
/* Make room for n records without growing. 0 or ENOMEM. */
int presence__table_reserve(presence__table_t *t, size_t n);
void presence__table_prefetch(const presence__table_t *t, uint32_t hash);
/* The record must not be present. 0 or ENOMEM (also for a record whose
 * address needs more than 48 bits: a slot keeps 48). */
int presence__table_insert(presence__table_t *t, void *rec);
/* The same with the record's hash, known to the caller. */
int presence__table_insert_h(presence__table_t *t, void *rec, uint32_t hash);
/* Room for one more insert: 0 (the next insert cannot fail) or ENOMEM. */
int presence__table_make_room(presence__table_t *t);
void presence__table_remove(presence__table_t *t, void *rec);
void presence__table_remove_h(presence__table_t *t, void *rec, uint32_t hash);
/* Iterate: start with *pos = 0; returns NULL at the end. The table must not
 * change during an iteration. */
void *presence__table_next(const presence__table_t *t, size_t *pos);

/* ---- status that people set: what watchers see ----------------------- */

/*
 * The table (docs/protocol.md, "Availability"). A user with no session is
 * offline whatever is set, and shows no availability: an invisible user must
 * be indistinguishable from an absent one, so an absent one shows nothing
 * either. dnd and away hide the online/idle distinction (an idle -> online
 * under dnd changes nothing a watcher sees); they map onto the status an
 * older client understands (dnd: online, away: idle).
 */
static inline presence_status_t
presence__shown_status(presence_availability_t a, presence_status_t computed) {
  if (computed == PRESENCE_OFFLINE) return PRESENCE_OFFLINE;
  switch (a) {
  case PRESENCE_AVAIL_DND:
    return PRESENCE_ONLINE;
  case PRESENCE_AVAIL_AWAY:
    return PRESENCE_IDLE;
  case PRESENCE_AVAIL_INVISIBLE:
    return PRESENCE_OFFLINE;
  default:
    return computed;
  }
}

static inline presence_availability_t
presence__shown_availability(presence_availability_t a,
                             presence_status_t computed) {
  if (computed == PRESENCE_OFFLINE || a == PRESENCE_AVAIL_INVISIBLE ||
      (unsigned)a >= PRESENCE_AVAIL_COUNT_)
    return PRESENCE_AVAIL_AUTO;
  return a;
}

static inline int presence__device_visible(const presence_event_t *ev) {
  return ev->device &&
         presence__shown_status(ev->availability_to, ev->device_from) !=
             presence__shown_status(ev->availability_to, ev->device_to);
}

static inline int presence__event_watcher_visible(const presence_event_t *ev) {
  switch (ev->type) {
  case PRESENCE_EV_USER_ONLINE:
  case PRESENCE_EV_USER_IDLE:
  case PRESENCE_EV_USER_OFFLINE:
  case PRESENCE_EV_USER_AVAILABILITY:
    return presence__shown_status(ev->availability_from, ev->from) !=
               presence__shown_status(ev->availability_to, ev->to) ||
           presence__shown_availability(ev->availability_from, ev->from) !=
               presence__shown_availability(ev->availability_to, ev->to) ||
           presence__device_visible(ev);
  case PRESENCE_EV_USER_MESSAGE:
    return 1;
  case PRESENCE_EV_SESSION_CONNECTED:
  case PRESENCE_EV_SESSION_DISCONNECTED:
  case PRESENCE_EV_SESSION_STATUS:
    return !(ev->flags & PRESENCE_EVENT_USER_FOLLOWS) && presence__device_visible(ev);
  default:
    return 0;
  }
}

static inline int presence__event_member_visible(const presence_event_t *ev) {
  if (ev->availability_to == PRESENCE_AVAIL_INVISIBLE) return 0;
  switch (ev->type) {
  case PRESENCE_EV_CHANNEL_JOIN:
  case PRESENCE_EV_CHANNEL_LEAVE:
    return 1;
  case PRESENCE_EV_CHANNEL_UPDATE:
    return (ev->flags & PRESENCE_EVENT_DATA_CHANGED) ||
           presence__shown_status(ev->availability_from, ev->from) !=
               presence__shown_status(ev->availability_to, ev->to);
  default:
    return 0;
  }
}

/* ---- events packed into bytes ------------------------------------------ */

/* Strings of a packed event, in order: session_id, user_id, meta,
 * instance_id, message, emoji, device. */
#define PRESENCE__EV_STRINGS 7

/* A string's packed length: its bytes and the NUL, 0 for NULL. A packed
 * event holds at most 65,534 bytes of one string (every string the library
 * checks is far shorter; a longer one, e.g. a message under an absurd
 * message_max_chars, is cut there in the event's copy). */
static inline size_t presence__event_len1(const char *s) {
  if (!s) return 0;
  size_t n = strnlen(s, 65534);
  return n + 1;
}
/* Bytes of a packed event's fixed header (before its tails and strings). */
size_t presence__event_header_size(void);

/* A packed event is its header, then only the tails its kind carries
 * (log.c), then its strings. Here so the stores size an event inline. */
#define PRESENCE__EV_HEADER 64u
enum {
  PRESENCE__EV_T_IDS = 1,       /* 8 bytes: the count of session ids */
  PRESENCE__EV_T_LAST_SEEN = 2, /* 8 bytes */
  PRESENCE__EV_T_MESSAGE = 4,   /* 16 bytes: expiry, text and emoji lengths */
  PRESENCE__EV_T_CHANNEL = 8,   /* 16 bytes: count, channel length */
  PRESENCE__EV_T_PAIR = 16,     /* 24 bytes: the session event before it */
  PRESENCE__EV_T_DEVICES = 32   /* 8 bytes: the count of devices */
};
/* A device of a user.availability's map, after the other strings: its
 * status (1 byte), its session count (4), its name and a NUL. */
#define PRESENCE__EV_DEVICE_FIXED 5u

/*
 * A pair: a session event flagged PRESENCE_EVENT_USER_FOLLOWS and the user
 * transition it caused, packed as one record (the user event, with the
 * session event's own fields in a tail). Every other field of the two is the
 * same: the session, the user, the reason, the time, the device and its
 * statuses, the availability, the instance; the session event's sequence
 * number is the user event's less one, it carries no last_seen, and the
 * metadata of a connect is its own (the user event has none). A status
 * change is such a pair: packing, logging and queueing it once instead of
 * twice is ~450 instructions of the ~4,200 a change costs presenced
 * (docs/internals/core.md, "Packed events").
 */
typedef struct presence__ev_first {
  uint64_t user_version;
  uint32_t shown_version;
  uint32_t flags;
  uint8_t type, from, to;
  /* A connect's metadata (the user event has none): the record's meta
   * string is the first event's; NULL for none. */
  const char *meta;
} presence__ev_first_t;

static inline unsigned presence__event_tails(const presence_event_t *ev) {
  return (ev->session_ids ? PRESENCE__EV_T_IDS : 0u) |
         (ev->last_seen_ms ? PRESENCE__EV_T_LAST_SEEN : 0u) |
         (ev->message || ev->emoji || ev->message_expires_ms
              ? PRESENCE__EV_T_MESSAGE
              : 0u) |
         (ev->channel || ev->count ? PRESENCE__EV_T_CHANNEL : 0u) |
         (ev->n_devices ? PRESENCE__EV_T_DEVICES : 0u);
}

static inline size_t presence__event_tails_size(unsigned t) {
  return ((t & PRESENCE__EV_T_IDS) ? 8u : 0u) +
         ((t & PRESENCE__EV_T_LAST_SEEN) ? 8u : 0u) +
         ((t & PRESENCE__EV_T_MESSAGE) ? 16u : 0u) +
         ((t & PRESENCE__EV_T_CHANNEL) ? 16u : 0u) +
         ((t & PRESENCE__EV_T_DEVICES) ? 8u : 0u) +
         ((t & PRESENCE__EV_T_PAIR) ? 24u : 0u);
}

/* Bytes needed to pack ev given its strings' lengths (lens[i] as from
 * presence__event_len1), a multiple of 8. */
static inline size_t presence__event_size(const presence_event_t *ev,
                                          const size_t lens[PRESENCE__EV_STRINGS]) {
  unsigned t = presence__event_tails(ev);
  size_t n = PRESENCE__EV_HEADER + presence__event_tails_size(t) + lens[0] +
             lens[1] + lens[2] + lens[3] + lens[4] + lens[5] + lens[6];
  /* The strings of the rare tails behind one test: a session operation's
   * events have none of them, and this is on every one's path. */
  if (t & (PRESENCE__EV_T_IDS | PRESENCE__EV_T_CHANNEL |
           PRESENCE__EV_T_DEVICES)) {
    for (size_t i = 0; ev->session_ids && i < ev->n_session_ids; i++)
      n += presence__event_len1(ev->session_ids[i]);
    n += presence__event_len1(ev->channel);
    for (size_t i = 0; i < ev->n_devices; i++)
      n += PRESENCE__EV_DEVICE_FIXED +
           presence__event_len1(ev->devices[i].device);
  }
  return (n + 7) & ~(size_t)7;
}
/* Bytes needed to pack ev (a multiple of 8). */
size_t presence__event_packed_size(const presence_event_t *ev);
/* Pack into buf (size from presence__event_packed_size, 8-aligned). */
void presence__event_pack(const presence_event_t *ev, void *buf);
/* The same in two steps, measuring the strings once. */
size_t presence__event_measure(const presence_event_t *ev,
                              size_t lens[PRESENCE__EV_STRINGS]);
void presence__event_pack_measured(const presence_event_t *ev,
                                   const size_t lens[PRESENCE__EV_STRINGS],
                                   size_t size,
                                   void *buf);
/* Unpack: the event's strings point into buf. session_ids, if any, are
 * written to ids (room for n_session_ids pointers, see
 * presence__event_packed_ids), devices to devs (room for devs_cap of
 * them). Returns 0, or the devices the event has when devs_cap is too
 * small for them: then ev->devices is NULL (unpack again with room for
 * them; presence__event_packed_devices says as much beforehand). */
size_t presence__event_unpack(const void *buf, presence_event_t *ev,
                              const char **ids, presence_device_status_t *devs,
                              size_t devs_cap);
size_t presence__event_packed_ids(const void *buf);
size_t presence__event_packed_devices(const void *buf);
/* The type of a packed event and, into *flags, its flags, read from its
 * header: whether anyone takes it. */
presence_event_type_t presence__event_packed_head(const void *buf,
                                                  unsigned *flags);
/* Size of a packed event, read from its header. */
size_t presence__event_packed_len(const void *buf);
/* A pair (PRESENCE__EV_T_PAIR): whether buf holds one, and, into *flags,
 * the type and flags of its first event. presence__event_unpack gives the
 * second (the user event); presence__event_first turns that unpacked event
 * into the first. */
bool presence__event_packed_pair(const void *buf);
presence_event_type_t presence__event_packed_first_head(const void *buf,
                                                        unsigned *flags);
void presence__event_first(const void *buf, presence_event_t *ev);
/* A byte of the header that the log leaves 0, for the engine's marks on
 * its own queued copy (which events of a pair to dispatch). */
unsigned presence__event_packed_marks(const void *buf);
void presence__event_packed_set_marks(void *buf, unsigned marks);

/* ---- the transition log ------------------------------------------------ */

/*
 * A bounded ring of packed events, oldest evicted first, readable from a
 * sequence-number cursor. Bounded both in events (capacity) and in bytes
 * (capacity * 256), so a burst of large cleanup events cannot grow it.
 */
typedef struct presence__log presence__log_t;

/* base: the number before the first event (presence_options_t.seq_base);
 * a read after 0 starts after it. */
presence__log_t *presence__log_new(const presence_allocator_t *a,
                                   uint32_t capacity, uint64_t base);
void presence__log_free(presence__log_t *l);
/* Append (ev->seq must be the next number). Returns the packed copy, or
 * NULL when the log kept a trimmed copy (a huge cleanup's id list). The copy
 * stays valid until the next append. */
const void *presence__log_append(presence__log_t *l,
                                 const presence_event_t *ev);
/* The same with the lengths already known (see presence__event_measure). */
const void *presence__log_append_measured(presence__log_t *l,
                                          const presence_event_t *ev,
                                          const size_t lens[PRESENCE__EV_STRINGS],
                                          size_t size);
/* A pair (see presence__ev_first_t): ev is the user event (ev->seq the
 * next number but one), first the session event's own fields, size ev's
 * packed size without the pair's tail. Two entries of the log, one copy. */
const void *presence__log_append_pair(presence__log_t *l,
                                      const presence_event_t *ev,
                                      const presence__ev_first_t *first,
                                      const size_t lens[PRESENCE__EV_STRINGS],
                                      size_t size);
uint64_t presence__log_last_seq(const presence__log_t *l);
uint64_t presence__log_first_seq(const presence__log_t *l);
/* Read up to max events after after_seq; see presence_log_read. */
int presence__log_read(presence__log_t *l, uint64_t after_seq, size_t max,
                       void (*cb)(void *ud, int status,
                                  const presence_event_t *events, size_t n),
                       void *ud);

#endif
