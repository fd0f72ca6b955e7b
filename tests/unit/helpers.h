/* SPDX-License-Identifier: MIT */
/*
 * Shared by the core's unit tests: an injected clock, a counting allocator
 * (every test ends with zero live allocations) and an event recorder.
 */
#ifndef PRESENCE_TEST_HELPERS_H
#define PRESENCE_TEST_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "presence.h"

typedef struct fake_clock {
  int64_t wall;
  int64_t mono;
} fake_clock_t;

static inline int64_t fake_wall(void *ud) { return ((fake_clock_t *)ud)->wall; }
static inline int64_t fake_mono(void *ud) { return ((fake_clock_t *)ud)->mono; }
static inline void clock_advance(fake_clock_t *c, int64_t ms) {
  c->wall += ms;
  c->mono += ms;
}

typedef struct counting_alloc {
  long live;
  long fail_after; /* < 0: never fail */
} counting_alloc_t;

static inline void *ca_malloc(void *ud, size_t n) {
  counting_alloc_t *c = ud;
  if (c->fail_after == 0) return NULL;
  if (c->fail_after > 0) c->fail_after--;
  void *p = malloc(n);
  if (p) c->live++;
  return p;
}
static inline void *ca_realloc(void *ud, void *p, size_t n) {
  counting_alloc_t *c = ud;
  if (c->fail_after == 0) return NULL;
  if (c->fail_after > 0) c->fail_after--;
  void *q = realloc(p, n);
  if (q && !p) c->live++;
  return q;
}
static inline void ca_free(void *ud, void *p) {
  counting_alloc_t *c = ud;
  if (p) c->live--;
  free(p);
}

/* The options of a library under test: the fake clock (a fixed wall time,
 * monotonic time `mono`) and the counting allocator, failing nowhere. The
 * caller sets what its test is about on top. */
static inline void test_options(presence_options_t *o, fake_clock_t *clock,
                                int64_t mono, counting_alloc_t *alloc) {
  clock->wall = 1764320000000;
  clock->mono = mono;
  alloc->fail_after = -1;
  presence_options_init(o);
  o->clock = (presence_clock_t){fake_wall, fake_mono, clock};
  o->allocator = (presence_allocator_t){ca_malloc, ca_realloc, ca_free, alloc};
}

#ifndef PRESENCE_TEST_NO_RECORDER /* tests/redis/harness.h has its own */
/* A recorded event, with its strings copied. */
typedef struct rec_event {
  presence_event_type_t type;
  presence_reason_t reason;
  uint64_t seq;
  int64_t ts;
  char session_id[PRESENCE_ID_MAX + 1];
  char user_id[PRESENCE_ID_MAX + 1];
  char meta[256];
  int has_session, has_user, has_meta;
  presence_status_t from, to;
  uint64_t version;
  int64_t last_seen;
  size_t n_session_ids;
  unsigned flags;
  uint64_t shown_version, epoch;
  presence_availability_t availability_from, availability_to;
  presence_status_t device_from, device_to;
  char device[40], instance_id[PRESENCE_ID_MAX + 1];
} rec_event_t;

typedef struct recorder {
  rec_event_t ev[256];
  size_t n;
} recorder_t;

/* ev into e, strings copied; e cleared first, so that two records of
 * the same event compare equal byte for byte. */
static inline void rec_take(rec_event_t *e, const presence_event_t *ev) {
  memset(e, 0, sizeof(*e));
  e->type = ev->type;
  e->reason = ev->reason;
  e->seq = ev->seq;
  e->ts = ev->ts_ms;
  e->from = ev->from;
  e->to = ev->to;
  e->version = ev->user_version;
  e->last_seen = ev->last_seen_ms;
  e->n_session_ids = ev->n_session_ids;
  if (ev->session_id) {
    e->has_session = 1;
    strncpy(e->session_id, ev->session_id, PRESENCE_ID_MAX);
  }
  if (ev->user_id) {
    e->has_user = 1;
    strncpy(e->user_id, ev->user_id, PRESENCE_ID_MAX);
  }
  if (ev->meta) {
    e->has_meta = 1;
    strncpy(e->meta, ev->meta, sizeof(e->meta) - 1);
  }
  e->flags = ev->flags;
  e->shown_version = ev->shown_version;
  e->epoch = ev->epoch;
  e->availability_from = ev->availability_from;
  e->availability_to = ev->availability_to;
  e->device_from = ev->device_from;
  e->device_to = ev->device_to;
  if (ev->device) strncpy(e->device, ev->device, sizeof(e->device) - 1);
  if (ev->instance_id)
    strncpy(e->instance_id, ev->instance_id, PRESENCE_ID_MAX);
}

static inline void record_cb(presence_t *p, const presence_event_t *ev,
                             void *ud) {
  (void)p;
  recorder_t *r = ud;
  if (r->n >= 256) return;
  rec_take(&r->ev[r->n++], ev);
}
#endif /* PRESENCE_TEST_NO_RECORDER */

#endif
