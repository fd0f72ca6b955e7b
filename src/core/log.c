/* SPDX-License-Identifier: MIT */
/*
 * Events packed into flat bytes, and the bounded transition log built on them.
 *
 * Packing gives an event one contiguous home that does not depend on the
 * records that produced it: a session record is freed as soon as it
 * disconnects, but its event may be read from the log much later.
 */
#include "core/internal.h"

#include <string.h>

#define NONE UINT32_MAX
#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif
#define NONE16 UINT16_MAX

/*
 * A packed event: a fixed header of what every event has, then only the
 * tails its kind carries, then its strings. A session operation's events
 * carry no tail but a user event's last_seen, so they pack into 64 bytes of
 * header plus their strings: the fields that only some kinds carry
 * (message, emoji, expiry, channel, count, session ids) cost nothing to the
 * events that leave them unset (docs/internals/core.md, "Packed events").
 *
 * Lengths are 16 bits: the strings an event carries are bounded well below
 * 65,535 bytes (ids PRESENCE_ID_MAX, meta and data 4,096, a device word 32,
 * a message 4 x message_max_chars); presence__event_len1 cuts a longer one.
 * NONE16 stands for NULL.
 */
typedef struct packed {
  uint64_t seq;
  int64_t ts_ms;
  uint64_t user_version;
  uint64_t epoch;
  uint32_t size; /* whole packed size */
  uint32_t flags;
  uint32_t shown_version; /* the user's, 32 bits (stores count in 32) */
  uint8_t type, reason, from, to;
  uint8_t avail_from, avail_to, dev_from, dev_to;
  uint8_t tails; /* T_* below: which tails follow the header */
  uint8_t marks; /* 0 in the log; the engine's marks on its queued copy */
  uint16_t sid_len, uid_len, meta_len, inst_len, dev_len; /* NONE16: NULL */
} packed_t;

/* The tails, in this order after the header (each a multiple of 8 bytes),
 * then the strings: sid uid meta inst dev [msg emoji] [ids...] [chan]
 * [devices...] (a device: status, session count, name: only in a
 * user.availability, PRESENCE__EV_DEVICE_FIXED).
 * Which tails an event has, and their sizes: presence__event_tails. */
enum {
  T_IDS = PRESENCE__EV_T_IDS,
  T_LAST_SEEN = PRESENCE__EV_T_LAST_SEEN,
  T_MESSAGE = PRESENCE__EV_T_MESSAGE,
  T_CHANNEL = PRESENCE__EV_T_CHANNEL,
  T_PAIR = PRESENCE__EV_T_PAIR,
  T_DEVICES = PRESENCE__EV_T_DEVICES
};

typedef struct tail_ids {
  uint32_t n_ids;
  uint32_t unused;
} tail_ids_t;

typedef struct tail_message {
  int64_t expires_ms;
  uint16_t msg_len, emoji_len; /* NONE16 for NULL */
  uint32_t unused;
} tail_message_t;

typedef struct tail_channel {
  uint64_t count;
  uint16_t chan_len; /* NONE16 for NULL */
  uint16_t unused16;
  uint32_t shown_count; /* 32 bits: a store counts members in 32 */
} tail_channel_t;

/* A pair's first event: its fields that differ from the second's. */
typedef struct tail_pair {
  uint64_t user_version;
  uint32_t shown_version;
  uint32_t flags;
  uint8_t type, from, to;
  uint8_t meta; /* 1: the record's meta string is the first event's */
  uint8_t unused[4];
} tail_pair_t;

_Static_assert(sizeof(packed_t) == PRESENCE__EV_HEADER,
               "presence__event_size counts this header");
_Static_assert(sizeof(tail_ids_t) == 8 && sizeof(tail_message_t) == 16 &&
                   sizeof(tail_channel_t) == 16 && sizeof(int64_t) == 8 &&
                   sizeof(tail_pair_t) == 24,
               "presence__event_tails_size counts these tails");
_Static_assert(sizeof(packed_t) == 64, "the header is one cache line");
_Static_assert(PRESENCE_META_MAX < NONE16 && PRESENCE_DATA_MAX < NONE16 &&
                   PRESENCE_ID_MAX < NONE16,
               "string lengths fit the header's 16 bits");

size_t presence__event_header_size(void) { return sizeof(packed_t); }

#define opt_len presence__event_len1

/* String lengths (+1 for the NUL, 0 for NULL) measured once per event:
 * packing is on every operation's path. */
size_t presence__event_measure(const presence_event_t *ev,
                              size_t lens[PRESENCE__EV_STRINGS]) {
  lens[0] = opt_len(ev->session_id);
  lens[1] = opt_len(ev->user_id);
  lens[2] = opt_len(ev->meta);
  lens[3] = opt_len(ev->instance_id);
  lens[4] = opt_len(ev->message);
  lens[5] = opt_len(ev->emoji);
  lens[6] = opt_len(ev->device);
  return presence__event_size(ev, lens);
}

size_t presence__event_packed_size(const presence_event_t *ev) {
  size_t lens[PRESENCE__EV_STRINGS];
  return presence__event_measure(ev, lens);
}

static inline uint16_t len16(size_t len1) {
  return len1 ? (uint16_t)(len1 - 1) : NONE16;
}

/* len1 from presence__event_len1: the string and its NUL, or its first
 * 65,534 bytes and a NUL. */
static inline char *put(char *dst, const char *s, size_t len1) {
  if (len1) {
    memcpy(dst, s, len1 - 1);
    dst[len1 - 1] = '\0';
  }
  return dst + len1;
}

/* Inline into the log's append (every event of the memory store) and the
 * engine's queue (every event of the Redis store). first: a pair's first
 * event (its tail comes last), or NULL. */
static ALWAYS_INLINE void
pack(const presence_event_t *ev, const size_t lens[PRESENCE__EV_STRINGS],
     size_t size, void *buf, const presence__ev_first_t *first) {
  packed_t *p = buf;
  unsigned t = presence__event_tails(ev) | (first ? T_PAIR : 0u);
  p->seq = ev->seq;
  p->ts_ms = ev->ts_ms;
  p->user_version = ev->user_version;
  p->epoch = ev->epoch;
  p->size = (uint32_t)size;
  p->flags = ev->flags;
  p->shown_version = (uint32_t)ev->shown_version;
  p->type = (uint8_t)ev->type;
  p->reason = (uint8_t)ev->reason;
  p->from = (uint8_t)ev->from;
  p->to = (uint8_t)ev->to;
  p->avail_from = (uint8_t)ev->availability_from;
  p->avail_to = (uint8_t)ev->availability_to;
  p->dev_from = (uint8_t)ev->device_from;
  p->dev_to = (uint8_t)ev->device_to;
  p->tails = (uint8_t)t;
  p->marks = 0;
  p->sid_len = len16(lens[0]);
  p->uid_len = len16(lens[1]);
  p->meta_len = len16(lens[2]); /* a pair's: first->meta (append_pair) */
  p->inst_len = len16(lens[3]);
  p->dev_len = len16(lens[6]);
  unsigned char *x = (unsigned char *)(p + 1);
  size_t chan1 = 0;
  if (t) {
    if (t & T_IDS) {
      tail_ids_t ti = {(uint32_t)ev->n_session_ids, 0};
      memcpy(x, &ti, sizeof(ti));
      x += sizeof(ti);
    }
    if (t & T_LAST_SEEN) {
      memcpy(x, &ev->last_seen_ms, sizeof(int64_t));
      x += sizeof(int64_t);
    }
    if (t & T_MESSAGE) {
      tail_message_t tm = {ev->message_expires_ms, len16(lens[4]),
                           len16(lens[5]), 0};
      memcpy(x, &tm, sizeof(tm));
      x += sizeof(tm);
    }
    if (t & T_CHANNEL) {
      chan1 = opt_len(ev->channel);
      tail_channel_t tc = {ev->count, len16(chan1), 0,
                           (uint32_t)ev->shown_count};
      memcpy(x, &tc, sizeof(tc));
      x += sizeof(tc);
    }
    if (t & T_DEVICES) {
      tail_ids_t td = {(uint32_t)ev->n_devices, 0};
      memcpy(x, &td, sizeof(td));
      x += sizeof(td);
    }
    if (first) {
      tail_pair_t tp = {first->user_version,
                        first->shown_version,
                        first->flags,
                        first->type,
                        first->from,
                        first->to,
                        first->meta != NULL,
                        {0}};
      memcpy(x, &tp, sizeof(tp));
      x += sizeof(tp);
    }
  }
  char *d = (char *)x;
  d = put(d, ev->session_id, lens[0]);
  d = put(d, ev->user_id, lens[1]);
  d = put(d, first && first->meta ? first->meta : ev->meta, lens[2]);
  d = put(d, ev->instance_id, lens[3]);
  d = put(d, ev->device, lens[6]);
  if (t & T_MESSAGE) {
    d = put(d, ev->message, lens[4]);
    d = put(d, ev->emoji, lens[5]);
  }
  if (!(t & (T_IDS | T_CHANNEL | T_DEVICES))) return;
  for (size_t i = 0; ev->session_ids && i < ev->n_session_ids; i++)
    d = put(d, ev->session_ids[i], opt_len(ev->session_ids[i]));
  if (chan1) d = put(d, ev->channel, chan1);
  for (size_t i = 0; (t & T_DEVICES) && i < ev->n_devices; i++) {
    const presence_device_status_t *v = &ev->devices[i];
    *d = (char)v->status;
    memcpy(d + 1, &v->session_count, sizeof(uint32_t));
    d = put(d + PRESENCE__EV_DEVICE_FIXED, v->device, opt_len(v->device));
  }
}

void presence__event_pack_measured(const presence_event_t *ev,
                                   const size_t lens[PRESENCE__EV_STRINGS],
                                   size_t size, void *buf) {
  pack(ev, lens, size, buf, NULL);
}

void presence__event_pack(const presence_event_t *ev, void *buf) {
  size_t lens[PRESENCE__EV_STRINGS];
  size_t size = presence__event_measure(ev, lens);
  presence__event_pack_measured(ev, lens, size, buf);
}

size_t presence__event_packed_len(const void *buf) {
  return ((const packed_t *)buf)->size;
}

presence_event_type_t presence__event_packed_head(const void *buf,
                                                  unsigned *flags) {
  const packed_t *p = buf;
  *flags = p->flags;
  return (presence_event_type_t)p->type;
}

bool presence__event_packed_pair(const void *buf) {
  return ((const packed_t *)buf)->tails & T_PAIR;
}

/* The pair's tail is the last: the others' sizes before it. */
static tail_pair_t pair_tail(const packed_t *p) {
  tail_pair_t tp;
  memcpy(&tp,
         (const unsigned char *)(p + 1) +
             presence__event_tails_size(p->tails & ~(unsigned)T_PAIR),
         sizeof(tp));
  return tp;
}

presence_event_type_t presence__event_packed_first_head(const void *buf,
                                                        unsigned *flags) {
  tail_pair_t tp = pair_tail(buf);
  *flags = tp.flags;
  return (presence_event_type_t)tp.type;
}

void presence__event_first(const void *buf, presence_event_t *ev) {
  tail_pair_t tp = pair_tail(buf);
  ev->type = (presence_event_type_t)tp.type;
  ev->seq--;
  ev->from = (presence_status_t)tp.from;
  ev->to = (presence_status_t)tp.to;
  ev->user_version = tp.user_version;
  ev->shown_version = tp.shown_version;
  ev->flags = tp.flags;
  ev->last_seen_ms = 0;
  if (tp.meta) {
    /* The record's meta string, after the session's and the user's. */
    const packed_t *p = buf;
    const char *s = (const char *)(p + 1) + presence__event_tails_size(p->tails);
    if (p->sid_len != NONE16) s += (size_t)p->sid_len + 1;
    if (p->uid_len != NONE16) s += (size_t)p->uid_len + 1;
    ev->meta = s;
  }
}

unsigned presence__event_packed_marks(const void *buf) {
  return ((const packed_t *)buf)->marks;
}

void presence__event_packed_set_marks(void *buf, unsigned marks) {
  ((packed_t *)buf)->marks = (uint8_t)marks;
}

size_t presence__event_packed_ids(const void *buf) {
  const packed_t *p = buf;
  if (!(p->tails & T_IDS)) return 0;
  tail_ids_t ti;
  memcpy(&ti, p + 1, sizeof(ti));
  return ti.n_ids;
}

/* The devices tail comes after every other but a pair's. */
size_t presence__event_packed_devices(const void *buf) {
  const packed_t *p = buf;
  if (!(p->tails & T_DEVICES)) return 0;
  tail_ids_t td;
  memcpy(&td,
         (const unsigned char *)(p + 1) +
             presence__event_tails_size(p->tails & (T_IDS | T_LAST_SEEN |
                                                    T_MESSAGE | T_CHANNEL)),
         sizeof(td));
  return td.n_ids;
}

static inline const char *get(const char **src, uint16_t len) {
  if (len == NONE16) return NULL;
  const char *s = *src;
  *src += (size_t)len + 1;
  return s;
}

/* Every field of ev is written once, in struct order, with no clearing
 * of the whole struct first: unpacking is on every dispatched event's path.
 * A field added to presence_event_t must be added here (the size check
 * below fails until it is). */
_Static_assert(sizeof(void *) != 8 || sizeof(presence_event_t) == 208,
               "presence_event_t changed: unpack its new field");
size_t presence__event_unpack(const void *buf, presence_event_t *ev,
                              const char **ids, presence_device_status_t *devs,
                              size_t devs_cap) {
  const packed_t *p = buf;
  unsigned t = p->tails;
  const unsigned char *x = (const unsigned char *)(p + 1);
  uint32_t n_ids = 0;
  int64_t last_seen = 0;
  tail_message_t tm = {0, NONE16, NONE16, 0};
  tail_channel_t tc = {0, NONE16, 0, 0};
  uint32_t n_devs = 0;
  uint8_t pair_meta = 0;
  if (t) {
    if (t & T_IDS) {
      tail_ids_t ti;
      memcpy(&ti, x, sizeof(ti));
      n_ids = ti.n_ids;
      x += sizeof(ti);
    }
    if (t & T_LAST_SEEN) {
      memcpy(&last_seen, x, sizeof(last_seen));
      x += sizeof(last_seen);
    }
    if (t & T_MESSAGE) {
      memcpy(&tm, x, sizeof(tm));
      x += sizeof(tm);
    }
    if (t & T_CHANNEL) {
      memcpy(&tc, x, sizeof(tc));
      x += sizeof(tc);
    }
    if (t & T_DEVICES) {
      tail_ids_t td;
      memcpy(&td, x, sizeof(td));
      n_devs = td.n_ids;
      x += sizeof(td);
    }
    if (t & T_PAIR) {
      tail_pair_t tp;
      memcpy(&tp, x, sizeof(tp));
      pair_meta = tp.meta;
      x += sizeof(tp); /* the rest: presence__event_first */
    }
  }
  const char *s = (const char *)x;
  ev->type = (presence_event_type_t)p->type;
  ev->reason = (presence_reason_t)p->reason;
  ev->seq = p->seq;
  ev->ts_ms = p->ts_ms;
  ev->session_id = get(&s, p->sid_len);
  ev->user_id = get(&s, p->uid_len);
  ev->meta = get(&s, p->meta_len);
  if (pair_meta) ev->meta = NULL; /* the first event's */
  ev->from = (presence_status_t)p->from;
  ev->to = (presence_status_t)p->to;
  ev->user_version = p->user_version;
  ev->instance_id = get(&s, p->inst_len);
  ev->epoch = p->epoch;
  ev->device = get(&s, p->dev_len);
  ev->message = get(&s, tm.msg_len);
  ev->emoji = get(&s, tm.emoji_len);
  ev->session_ids = NULL;
  ev->n_session_ids = n_ids;
  if (t & T_IDS) {
    for (uint32_t i = 0; i < n_ids; i++) {
      ids[i] = s;
      s += strlen(s) + 1;
    }
    ev->session_ids = ids;
  }
  ev->flags = p->flags;
  ev->last_seen_ms = last_seen;
  ev->channel = get(&s, tc.chan_len);
  ev->count = tc.count;
  ev->availability_from = (presence_availability_t)p->avail_from;
  ev->availability_to = (presence_availability_t)p->avail_to;
  ev->message_expires_ms = tm.expires_ms;
  ev->device_from = (presence_status_t)p->dev_from;
  ev->device_to = (presence_status_t)p->dev_to;
  ev->shown_version = p->shown_version;
  ev->shown_count = tc.shown_count;
  ev->devices = NULL;
  ev->n_devices = n_devs;
  if (n_devs) {
    if (n_devs > devs_cap) return n_devs;
    for (uint32_t i = 0; i < n_devs; i++) {
      devs[i].status = (presence_status_t)(unsigned char)s[0];
      memcpy(&devs[i].session_count, s + 1, sizeof(uint32_t));
      devs[i].device = s + PRESENCE__EV_DEVICE_FIXED;
      s = devs[i].device + strlen(devs[i].device) + 1;
    }
    ev->devices = devs;
  }
  return 0;
}

/* ---- the ring ---------------------------------------------------------- */

typedef struct entry {
  uint64_t seq;
  size_t off;
} entry_t;

typedef struct read_bufs {
  presence_event_t *scratch;
  size_t scratch_cap;
  const char **ids;
  size_t ids_cap;
  presence_device_status_t *devs; /* and their devices */
  size_t devs_cap;
} read_bufs_t;

struct presence__log {
  const presence_allocator_t *alloc;
  uint32_t capacity; /* events */
  entry_t *entries;  /* circular, capacity long */
  uint32_t first;    /* index of the oldest entry */
  uint32_t count;
  uint64_t base; /* the number before this log's first event */
  uint64_t last_seq;
  unsigned char *bytes; /* circular byte area */
  size_t nbytes;
  size_t head; /* where the next event goes */
  /* Scratch for reads: unpacked events and their session id pointers. */
  read_bufs_t rb;
  /* Reads whose callback is running: a read inside one (see
   * presence__log_read) takes buffers of its own. */
  unsigned reading;
};

presence__log_t *presence__log_new(const presence_allocator_t *a,
                                   uint32_t capacity, uint64_t base) {
  presence__log_t *l = presence__malloc(a, sizeof(*l));
  if (!l) return NULL;
  memset(l, 0, sizeof(*l));
  l->alloc = a;
  l->base = l->last_seq = base;
  /* Two at least: a pair is two entries (presence__log_append_pair). */
  l->capacity = capacity > 2 ? capacity : 2;
  /* Room for the largest single event (metadata up to PRESENCE_META_MAX)
   * however small the capacity. */
  l->nbytes = (size_t)l->capacity * 256;
  if (l->nbytes < 65536) l->nbytes = 65536;
  l->entries = presence__malloc(a, l->capacity * sizeof(entry_t));
  l->bytes = presence__malloc(a, l->nbytes);
  if (!l->entries || !l->bytes) {
    presence__log_free(l);
    return NULL;
  }
  return l;
}

static void read_bufs_free(const presence_allocator_t *a, read_bufs_t *b) {
  presence__free(a, b->scratch);
  presence__free(a, b->ids);
  presence__free(a, b->devs);
}

void presence__log_free(presence__log_t *l) {
  if (!l) return;
  presence__free(l->alloc, l->entries);
  presence__free(l->alloc, l->bytes);
  read_bufs_free(l->alloc, &l->rb);
  presence__free(l->alloc, l);
}

static inline entry_t *oldest(presence__log_t *l) {
  return &l->entries[l->first];
}

static void evict(presence__log_t *l) {
  if (++l->first == l->capacity) l->first = 0;
  l->count--;
}

static inline void add_entry(presence__log_t *l, uint64_t seq, size_t off) {
  /* first + count < 2 * capacity: a subtraction, not a division, on every
   * append. */
  uint32_t slot = l->first + l->count;
  if (slot >= l->capacity) slot -= l->capacity;
  l->entries[slot].seq = seq;
  l->entries[slot].off = off;
  l->count++;
  l->last_seq = seq;
}

/* Make room for n bytes at head (evicting what they overwrite), add the
 * entry of seq there and return where to pack it. */
static void *place(presence__log_t *l, size_t n, uint64_t seq) {
  if (l->count == l->capacity) evict(l);
  if (l->head + n > l->nbytes) {
    /* Wrap: everything stored past head is older than what sits at the
     * start, so it goes first. */
    while (l->count && oldest(l)->off >= l->head) evict(l);
    l->head = 0;
  }
  while (l->count && oldest(l)->off >= l->head && oldest(l)->off < l->head + n)
    evict(l);
  void *at = l->bytes + l->head;
  add_entry(l, seq, l->head);
  l->head += n;
  return at;
}

const void *presence__log_append(presence__log_t *l,
                                 const presence_event_t *ev) {
  size_t lens[PRESENCE__EV_STRINGS];
  size_t n = presence__event_measure(ev, lens);
  return presence__log_append_measured(l, ev, lens, n);
}

const void *presence__log_append_measured(presence__log_t *l,
                                          const presence_event_t *ev,
                                          const size_t lens_in[PRESENCE__EV_STRINGS],
                                          size_t n) {
  presence_event_t trimmed;
  size_t lens[PRESENCE__EV_STRINGS];
  memcpy(lens, lens_in, sizeof(lens));
  bool whole = true;
  if (n > l->nbytes / 2) {
    /* A cleanup of a huge instance: keep the event, drop its id list from
     * the log copy (the callbacks still got all of it). */
    trimmed = *ev;
    trimmed.session_ids = NULL;
    trimmed.n_session_ids = 0;
    trimmed.flags |= PRESENCE_EVENT_IDS_OMITTED;
    ev = &trimmed;
    n = presence__event_measure(ev, lens);
    whole = false;
  }
  void *packed = place(l, n, ev->seq);
  pack(ev, lens, n, packed, NULL);
  return whole ? packed : NULL;
}

const void *presence__log_append_pair(presence__log_t *l,
                                      const presence_event_t *ev,
                                      const presence__ev_first_t *first,
                                      const size_t lens[PRESENCE__EV_STRINGS],
                                      size_t size) {
  size_t l1[PRESENCE__EV_STRINGS];
  if (first->meta) {
    /* The meta slot holds the first's (the user event has none). */
    memcpy(l1, lens, sizeof(l1));
    l1[2] = presence__event_len1(first->meta);
    lens = l1;
    size = presence__event_size(ev, l1);
  }
  size += sizeof(tail_pair_t);
  /* Room for two entries (the log holds at least two). */
  while (l->count + 2 > l->capacity) evict(l);
  void *packed = place(l, size, ev->seq - 1);
  /* The second entry at the same bytes: the two are evicted together when
   * their bytes are overwritten, and the first never after the second. */
  add_entry(l, ev->seq, (size_t)((unsigned char *)packed - l->bytes));
  pack(ev, lens, size, packed, first);
  return packed;
}

uint64_t presence__log_last_seq(const presence__log_t *l) {
  return l->last_seq;
}

uint64_t presence__log_first_seq(const presence__log_t *l) {
  return l->count ? l->entries[l->first].seq : l->last_seq + 1;
}

/* Unpack the n events after after_seq into b, growing it as needed. */
static int read_unpack(presence__log_t *l, read_bufs_t *b, uint64_t after_seq,
                       size_t n) {
  uint64_t first = presence__log_first_seq(l);
  if (n > b->scratch_cap) {
    presence_event_t *s =
        presence__realloc(l->alloc, b->scratch, n * sizeof(*s));
    if (!s) return PRESENCE_ENOMEM;
    b->scratch = s;
    b->scratch_cap = n;
  }
  /* Entries are consecutive in seq, so the index follows by arithmetic. */
  uint32_t start = (uint32_t)(after_seq + 1 - first);
  size_t ids_needed = 0, devs_needed = 0;
  for (size_t i = 0; i < n; i++) {
    entry_t *e = &l->entries[(l->first + start + i) % l->capacity];
    ids_needed += presence__event_packed_ids(l->bytes + e->off);
    devs_needed += presence__event_packed_devices(l->bytes + e->off);
  }
  if (devs_needed > b->devs_cap) {
    presence_device_status_t *d =
        presence__realloc(l->alloc, b->devs, devs_needed * sizeof(*d));
    if (!d) return PRESENCE_ENOMEM;
    b->devs = d;
    b->devs_cap = devs_needed;
  }
  if (ids_needed > b->ids_cap) {
    const char **ids =
        presence__realloc(l->alloc, b->ids, ids_needed * sizeof(*ids));
    if (!ids) return PRESENCE_ENOMEM;
    b->ids = ids;
    b->ids_cap = ids_needed;
  }
  size_t used = 0, dused = 0;
  for (size_t i = 0; i < n; i++) {
    entry_t *e = &l->entries[(l->first + start + i) % l->capacity];
    /* No event with session ids yet: ids may still be NULL, and NULL + 0
     * is undefined behaviour in C (UBSan's pointer-overflow check). */
    const void *p = l->bytes + e->off;
    presence__event_unpack(p, &b->scratch[i], b->ids ? b->ids + used : NULL,
                           b->devs ? b->devs + dused : NULL,
                           b->devs_cap - dused);
    dused += b->scratch[i].n_devices;
    /* A pair's first event (its entry's seq is the record's less one). */
    if (b->scratch[i].seq != e->seq) presence__event_first(p, &b->scratch[i]);
    used += b->scratch[i].n_session_ids;
  }
  return 0;
}

int presence__log_read(presence__log_t *l, uint64_t after_seq, size_t max,
                       void (*cb)(void *ud, int status,
                                  const presence_event_t *events, size_t n),
                       void *ud) {
  int status = 0;
  uint64_t first = presence__log_first_seq(l);
  /* 0: from the oldest kept, this log's numbers starting after its base. */
  if (after_seq == 0) after_seq = l->base;
  /* A cursor past the newest event comes from another incarnation of the
   * log (a restarted process): the reader missed whatever this one holds,
   * so it is told so and starts at the oldest, like a cursor that fell out.
   * So does one below this log's base (seq_base: an earlier run's). */
  if (after_seq + 1 < first || after_seq > l->last_seq) {
    status = PRESENCE_ECURSOR;
    after_seq = first - 1;
  }
  size_t avail = (size_t)(l->last_seq - after_seq);
  size_t n = avail < max ? avail : max;
  /* A read made while another read's callback runs (a reader that reads on
   * from its callback, a query from an event callback that a write in it
   * caused) unpacks into buffers of its own: the outer callback's events
   * must stay as they are until it returns (c-api.md, Conventions), and
   * the shared ones would be overwritten, or moved by a realloc. */
  read_bufs_t own = {0};
  read_bufs_t *b = l->reading ? &own : &l->rb;
  int rc = read_unpack(l, b, after_seq, n);
  if (rc == 0) {
    l->reading++;
    cb(ud, status, b->scratch, n);
    l->reading--;
  }
  if (b == &own) read_bufs_free(l->alloc, &own);
  return rc;
}
