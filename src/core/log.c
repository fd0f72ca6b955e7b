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

typedef struct packed {
  uint64_t seq;
  int64_t ts_ms;
  uint64_t user_version;
  uint64_t epoch;
  int64_t last_seen_ms;
  uint32_t size; /* whole packed size */
  uint32_t n_ids;
  uint32_t sid_len, uid_len, meta_len, inst_len; /* NONE for NULL */
  uint32_t msg_len, emoji_len, dev_len;          /* NONE for NULL */
  uint32_t flags;
  int64_t message_expires_ms;
  uint8_t type, reason, from, to;
  uint8_t avail_from, avail_to, dev_from, dev_to;
  uint64_t count;    /* channel events */
  uint32_t chan_len; /* NONE for NULL; the channel follows the ids */
  uint32_t shown_version; /* the user's, 32 bits (stores count in 32) */
  /* then: sid \0 uid \0 meta \0 inst \0 msg \0 emoji \0 dev \0 ids \0 ...
   * chan \0 */
} packed_t;

size_t presence__event_header_size(void) { return sizeof(packed_t); }

static inline size_t opt_len(const char *s) { return s ? strlen(s) + 1 : 0; }

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
  size_t n = sizeof(packed_t);
  for (size_t i = 0; i < PRESENCE__EV_STRINGS; i++) n += lens[i];
  for (size_t i = 0; ev->session_ids && i < ev->n_session_ids; i++)
    n += strlen(ev->session_ids[i]) + 1;
  n += opt_len(ev->channel);
  return (n + 7) & ~(size_t)7;
}

size_t presence__event_packed_size(const presence_event_t *ev) {
  size_t lens[PRESENCE__EV_STRINGS];
  return presence__event_measure(ev, lens);
}

static char *put(char *dst, const char *s, size_t len1, uint32_t *len_out) {
  if (!s) {
    *len_out = NONE;
    return dst;
  }
  memcpy(dst, s, len1);
  *len_out = (uint32_t)(len1 - 1);
  return dst + len1;
}

void presence__event_pack_measured(const presence_event_t *ev,
                                   const size_t lens[PRESENCE__EV_STRINGS],
                                   size_t size, void *buf) {
  packed_t *p = buf;
  p->seq = ev->seq;
  p->ts_ms = ev->ts_ms;
  p->user_version = ev->user_version;
  p->epoch = ev->epoch;
  p->last_seen_ms = ev->last_seen_ms;
  p->size = (uint32_t)size;
  p->n_ids = ev->session_ids ? (uint32_t)ev->n_session_ids : NONE;
  p->flags = ev->flags;
  p->type = (uint8_t)ev->type;
  p->reason = (uint8_t)ev->reason;
  p->from = (uint8_t)ev->from;
  p->to = (uint8_t)ev->to;
  p->message_expires_ms = ev->message_expires_ms;
  p->avail_from = (uint8_t)ev->availability_from;
  p->avail_to = (uint8_t)ev->availability_to;
  p->dev_from = (uint8_t)ev->device_from;
  p->dev_to = (uint8_t)ev->device_to;
  char *d = (char *)(p + 1);
  d = put(d, ev->session_id, lens[0], &p->sid_len);
  d = put(d, ev->user_id, lens[1], &p->uid_len);
  d = put(d, ev->meta, lens[2], &p->meta_len);
  d = put(d, ev->instance_id, lens[3], &p->inst_len);
  d = put(d, ev->message, lens[4], &p->msg_len);
  d = put(d, ev->emoji, lens[5], &p->emoji_len);
  d = put(d, ev->device, lens[6], &p->dev_len);
  for (size_t i = 0; ev->session_ids && i < ev->n_session_ids; i++) {
    uint32_t unused;
    d = put(d, ev->session_ids[i], strlen(ev->session_ids[i]) + 1, &unused);
  }
  p->count = ev->count;
  p->shown_version = (uint32_t)ev->shown_version;
  /* After the ids, so the four measured strings keep their place and a
   * store that measured them (lens[]) need not know about channels. */
  d = put(d, ev->channel, opt_len(ev->channel), &p->chan_len);
}

void presence__event_pack(const presence_event_t *ev, void *buf) {
  size_t lens[PRESENCE__EV_STRINGS];
  size_t size = presence__event_measure(ev, lens);
  presence__event_pack_measured(ev, lens, size, buf);
}

size_t presence__event_packed_len(const void *buf) {
  return ((const packed_t *)buf)->size;
}

presence_event_type_t presence__event_packed_type(const void *buf) {
  return (presence_event_type_t)((const packed_t *)buf)->type;
}

size_t presence__event_packed_ids(const void *buf) {
  const packed_t *p = buf;
  return p->n_ids == NONE ? 0 : p->n_ids;
}

static const char *get(const char **src, uint32_t len) {
  if (len == NONE) return NULL;
  const char *s = *src;
  *src += len + 1;
  return s;
}

void presence__event_unpack(const void *buf, presence_event_t *ev,
                            const char **ids) {
  const packed_t *p = buf;
  memset(ev, 0, sizeof(*ev));
  ev->seq = p->seq;
  ev->ts_ms = p->ts_ms;
  ev->user_version = p->user_version;
  ev->epoch = p->epoch;
  ev->last_seen_ms = p->last_seen_ms;
  ev->flags = p->flags;
  ev->type = (presence_event_type_t)p->type;
  ev->reason = (presence_reason_t)p->reason;
  ev->from = (presence_status_t)p->from;
  ev->to = (presence_status_t)p->to;
  ev->message_expires_ms = p->message_expires_ms;
  ev->availability_from = (presence_availability_t)p->avail_from;
  ev->availability_to = (presence_availability_t)p->avail_to;
  ev->device_from = (presence_status_t)p->dev_from;
  ev->device_to = (presence_status_t)p->dev_to;
  const char *s = (const char *)(p + 1);
  ev->session_id = get(&s, p->sid_len);
  ev->user_id = get(&s, p->uid_len);
  ev->meta = get(&s, p->meta_len);
  ev->instance_id = get(&s, p->inst_len);
  ev->message = get(&s, p->msg_len);
  ev->emoji = get(&s, p->emoji_len);
  ev->device = get(&s, p->dev_len);
  if (p->n_ids != NONE) {
    for (uint32_t i = 0; i < p->n_ids; i++) {
      ids[i] = s;
      s += strlen(s) + 1;
    }
    ev->session_ids = ids;
    ev->n_session_ids = p->n_ids;
  }
  ev->count = p->count;
  ev->shown_version = p->shown_version;
  ev->channel = get(&s, p->chan_len);
}

/* ---- the ring ---------------------------------------------------------- */

typedef struct entry {
  uint64_t seq;
  size_t off;
} entry_t;

struct presence__log {
  const presence_allocator_t *alloc;
  uint32_t capacity; /* events */
  entry_t *entries;  /* circular, capacity long */
  uint32_t first;    /* index of the oldest entry */
  uint32_t count;
  uint64_t last_seq;
  unsigned char *bytes; /* circular byte area */
  size_t nbytes;
  size_t head; /* where the next event goes */
  /* Scratch for reads: unpacked events and their session id pointers. */
  presence_event_t *scratch;
  size_t scratch_cap;
  const char **ids;
  size_t ids_cap;
};

presence__log_t *presence__log_new(const presence_allocator_t *a,
                                   uint32_t capacity) {
  presence__log_t *l = presence__malloc(a, sizeof(*l));
  if (!l) return NULL;
  memset(l, 0, sizeof(*l));
  l->alloc = a;
  l->capacity = capacity ? capacity : 1;
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

void presence__log_free(presence__log_t *l) {
  if (!l) return;
  presence__free(l->alloc, l->entries);
  presence__free(l->alloc, l->bytes);
  presence__free(l->alloc, l->scratch);
  presence__free(l->alloc, l->ids);
  presence__free(l->alloc, l);
}

static inline entry_t *oldest(presence__log_t *l) {
  return &l->entries[l->first];
}

static void evict(presence__log_t *l) {
  l->first = (l->first + 1) % l->capacity;
  l->count--;
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
  if (l->count == l->capacity) evict(l);
  if (l->head + n > l->nbytes) {
    /* Wrap: everything stored past head is older than what sits at the
     * start, so it goes first. */
    while (l->count && oldest(l)->off >= l->head) evict(l);
    l->head = 0;
  }
  while (l->count && oldest(l)->off >= l->head && oldest(l)->off < l->head + n)
    evict(l);
  void *packed = l->bytes + l->head;
  presence__event_pack_measured(ev, lens, n, packed);
  uint32_t slot = (l->first + l->count) % l->capacity;
  l->entries[slot].seq = ev->seq;
  l->entries[slot].off = l->head;
  l->count++;
  l->head += n;
  l->last_seq = ev->seq;
  return whole ? packed : NULL;
}

uint64_t presence__log_last_seq(const presence__log_t *l) {
  return l->last_seq;
}

uint64_t presence__log_first_seq(const presence__log_t *l) {
  return l->count ? l->entries[l->first].seq : l->last_seq + 1;
}

int presence__log_read(presence__log_t *l, uint64_t after_seq, size_t max,
                       void (*cb)(void *ud, int status,
                                  const presence_event_t *events, size_t n),
                       void *ud) {
  int status = 0;
  uint64_t first = presence__log_first_seq(l);
  /* A cursor past the newest event comes from another incarnation of the
   * log (a restarted process): the reader missed whatever this one holds,
   * so it is told so and starts at the oldest, like a cursor that fell out. */
  if (after_seq + 1 < first || after_seq > l->last_seq) {
    status = PRESENCE_ECURSOR;
    after_seq = first - 1;
  }
  size_t avail = (size_t)(l->last_seq - after_seq);
  size_t n = avail < max ? avail : max;
  if (n > l->scratch_cap) {
    presence_event_t *s =
        presence__realloc(l->alloc, l->scratch, n * sizeof(*s));
    if (!s) return PRESENCE_ENOMEM;
    l->scratch = s;
    l->scratch_cap = n;
  }
  /* Entries are consecutive in seq, so the index follows by arithmetic. */
  uint32_t start = (uint32_t)(after_seq + 1 - first);
  size_t ids_needed = 0;
  for (size_t i = 0; i < n; i++) {
    entry_t *e = &l->entries[(l->first + start + i) % l->capacity];
    ids_needed += presence__event_packed_ids(l->bytes + e->off);
  }
  if (ids_needed > l->ids_cap) {
    const char **ids =
        presence__realloc(l->alloc, l->ids, ids_needed * sizeof(*ids));
    if (!ids) return PRESENCE_ENOMEM;
    l->ids = ids;
    l->ids_cap = ids_needed;
  }
  size_t used = 0;
  for (size_t i = 0; i < n; i++) {
    entry_t *e = &l->entries[(l->first + start + i) % l->capacity];
    /* No event with session ids yet: ids may still be NULL, and NULL + 0
     * is undefined behaviour in C (UBSan's pointer-overflow check). */
    presence__event_unpack(l->bytes + e->off, &l->scratch[i],
                           l->ids ? l->ids + used : NULL);
    used += l->scratch[i].n_session_ids;
  }
  cb(ud, status, l->scratch, n);
  return 0;
}
