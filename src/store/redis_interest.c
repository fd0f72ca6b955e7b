/* SPDX-License-Identifier: MIT */
/*
 * Interest between the workers of one machine (presenced --workers N): what
 * each worker's clients watch, counted in memory the N processes share, so
 * the machine's log reader passes a worker only the events it needs
 * (redis_route.c). The contract is in presence_redis.h.
 *
 * Why counters in shared memory and not messages to the reader: a client's
 * subscription must take effect before the worker asks Redis for the
 * snapshot it answers with. A counter raised in shared memory is seen by
 * the reader for every log entry it reads after that (its XREAD reply comes
 * after the snapshot's write in Redis), so an event the snapshot does not
 * hold is never filtered out; a message to the reader would race its
 * reads. Counters, not a set: a hash table of keys shared between
 * processes would need locking and allocation; a counter per hash slot
 * needs neither. A collision only costs a delivery nobody on the worker
 * watches, and the worker's fan-out drops it.
 *
 * The hash is fixed (FNV-1a, not the processes' keyed SipHash, which each
 * worker draws for itself): every process must find the same slot. A
 * client choosing colliding ids gains nothing but deliveries its own
 * worker discards.
 */
/* MAP_ANONYMOUS is not POSIX 2008 (the build's level): Linux and the BSDs
 * have it under _DEFAULT_SOURCE. */
#define _DEFAULT_SOURCE
#include "store/redis_interest.h"

#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

#define INTEREST_MAX_WORKERS 1024

struct presence_redis_interest {
  uint32_t workers;
  size_t map_len;
  /* c[w]: worker w's ALL; then per key slot k, the workers' counters side
   * by side, c[workers + k * workers + w]: the reader asks every worker
   * about one key, so they share a cache line (16 workers per line). */
  _Atomic uint32_t c[];
};

static _Atomic uint32_t *counter(const presence_redis_interest_t *in,
                                 uint32_t slot, uint64_t h) {
  return (_Atomic uint32_t *)in->c + in->workers +
         (size_t)(h & (INTEREST_SLOTS - 1)) * in->workers + slot;
}

presence_redis_interest_t *presence_redis_interest_new(uint32_t workers) {
  if (workers == 0 || workers > INTEREST_MAX_WORKERS) return NULL;
  size_t len = offsetof(presence_redis_interest_t, c) +
               (size_t)workers * (1 + INTEREST_SLOTS) * sizeof(uint32_t);
  /* Zero pages, shared with every child forked after this; untouched
   * counters cost no memory. */
  void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
  if (m == MAP_FAILED) return NULL;
  presence_redis_interest_t *in = m;
  in->workers = workers;
  in->map_len = len;
  return in;
}

void presence_redis_interest_free(presence_redis_interest_t *in) {
  if (in) munmap(in, in->map_len);
}

uint32_t presence__interest_workers(const presence_redis_interest_t *in) {
  return in ? in->workers : 0;
}

uint64_t presence__interest_hash(presence_redis_interest_kind_t kind,
                                 const char *key) {
  uint64_t h = 14695981039346656037ull ^ (uint64_t)kind;
  h *= 1099511628211ull;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++)
    h = (h ^ *p) * 1099511628211ull;
  return h;
}

void presence_redis_interest_count(presence_redis_interest_t *in,
                                   uint32_t slot,
                                   presence_redis_interest_kind_t kind,
                                   const char *key, int delta) {
  if (!in || slot >= in->workers || (kind != PRESENCE_INTEREST_ALL && !key))
    return;
  _Atomic uint32_t *c = kind == PRESENCE_INTEREST_ALL
                           ? (_Atomic uint32_t *)in->c + slot
                           : counter(in, slot, presence__interest_hash(kind, key));
  if (delta > 0) {
    atomic_fetch_add(c, 1);
    return;
  }
  uint32_t v = atomic_load(c);
  while (v > 0 && !atomic_compare_exchange_weak(c, &v, v - 1)) {
  }
}

bool presence__interest_all(const presence_redis_interest_t *in,
                            uint32_t slot) {
  return atomic_load_explicit((_Atomic uint32_t *)in->c + slot,
                              memory_order_acquire) > 0;
}

bool presence__interest_has(const presence_redis_interest_t *in,
                            uint32_t slot, uint64_t h) {
  return atomic_load_explicit(counter(in, slot, h), memory_order_acquire) > 0;
}

int presence__interest_key(const presence_event_t *ev, uint64_t *h) {
  switch (ev->type) {
  case PRESENCE_EV_SESSION_CONNECTED:
  case PRESENCE_EV_SESSION_DISCONNECTED:
  case PRESENCE_EV_SESSION_STATUS:
  case PRESENCE_EV_USER_ONLINE:
  case PRESENCE_EV_USER_IDLE:
  case PRESENCE_EV_USER_OFFLINE:
    if (!ev->user_id) return 0;
    *h = presence__interest_hash(PRESENCE_INTEREST_USER, ev->user_id);
    return 1;
  case PRESENCE_EV_CHANNEL_JOIN:
  case PRESENCE_EV_CHANNEL_LEAVE:
  case PRESENCE_EV_CHANNEL_UPDATE:
    if (!ev->channel) return 0;
    *h = presence__interest_hash(PRESENCE_INTEREST_CHANNEL, ev->channel);
    return 1;
  default:
    /* Cleanups, availability and messages (every instance keeps the
     * settings it sees for a re-assert, channels.c shows availability to
     * channel members without a key here), and types added later: to
     * everyone. */
    return 0;
  }
}
