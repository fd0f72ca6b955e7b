/* SPDX-License-Identifier: MIT */
/*
 * The Redis store's log format, decoded without a server: what an entry
 * written by the script turns into, and that anything else is refused
 * whole (an instance must never report half of a malformed entry).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/internal.h"
#include "core/uuid.h"
#include "store/redis_decode.h"
#include "store/redis_resp.h"

/* A reply as hiredis builds it: owned strings, NUL after each. */
static redisReply *str(const char *s) {
  redisReply *r = calloc(1, sizeof *r);
  r->type = REDIS_REPLY_STRING;
  r->len = strlen(s);
  r->str = strdup(s);
  return r;
}

static redisReply *arr(size_t n, ...) {
  redisReply *r = calloc(1, sizeof *r);
  r->type = REDIS_REPLY_ARRAY;
  r->elements = n;
  r->element = calloc(n, sizeof *r->element);
  va_list ap;
  va_start(ap, n);
  for (size_t i = 0; i < n; i++)
    r->element[i] = va_arg(ap, redisReply *);
  va_end(ap);
  return r;
}

/* A binary string (the log's blobs hold NULs). */
static redisReply *bin(const char *s, size_t n) {
  redisReply *r = calloc(1, sizeof *r);
  r->type = REDIS_REPLY_STRING;
  r->len = n;
  r->str = malloc(n + 1);
  memcpy(r->str, s, n);
  r->str[n] = '\0';
  return r;
}

/* A blob as presence.lua's ev_pack, uemit, cemit and finish pack it
 * (format 9). */
typedef struct blob {
  char b[2048];
  size_t n;
} blob_t;

static void put_u(blob_t *b, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++) b->b[b->n++] = (char)(v >> (8 * i));
}

/* Length + 1 (0: absent), the bytes, a NUL. */
static void put_s(blob_t *b, const char *s, size_t lenbytes) {
  size_t l = s ? strlen(s) : 0;
  put_u(b, s ? l + 1 : 0, lenbytes);
  if (l) memcpy(b->b + b->n, s, l);
  b->n += l;
  b->b[b->n++] = '\0';
}

static void header(blob_t *b, uint64_t ts, uint64_t epoch, const char *caller) {
  put_u(b, ts, 6);
  put_u(b, epoch, 6);
  put_s(b, caller, 2);
}

/* The flags above an event's type (presence.lua, before ev_pack). */
enum {
  F_DEV = 256,
  F_SV = 512,
  F_DITTO = 8192,     /* the previous event's session and user */
  F_DITTO_DEV = 16384, /* the previous event's device tail */
  F_COUNT = 32768,
  F_INST = 65536,
  F_META = 131072,
  F_WEB = 262144 /* the default device, its name left out */
};

/* An event's fields: type and flags (3 bytes), reason, from, to, version
 * (4), then only what it has: count < 0 none, inst NULL the caller, the
 * session and user unless F_DITTO, meta NULL none. */
static void event(blob_t *b, unsigned ty, unsigned reason, unsigned from,
                  unsigned to, uint64_t ver, long long count, const char *inst,
                  const char *sid, const char *uid, const char *meta) {
  unsigned tf = ty;
  if (count >= 0) tf |= F_COUNT;
  if (inst) tf |= F_INST;
  if (meta) tf |= F_META;
  put_u(b, tf, 3);
  put_u(b, reason, 1);
  put_u(b, from, 1);
  put_u(b, to, 1);
  put_u(b, ver, 4);
  if (count >= 0) put_u(b, (uint64_t)count, 4);
  if (inst) put_s(b, inst, 2);
  if (!(ty & F_DITTO)) {
    put_s(b, sid, 2);
    put_s(b, uid, 2);
  }
  if (meta) put_s(b, meta, 4);
}

static redisReply *entry_bin(const char *id, const char *k, const blob_t *b) {
  return arr(2, str(id), arr(4, str("k"), str(k), str("p"), bin(b->b, b->n)));
}

/* What the script writes for a connect of a new user (two events). */
static blob_t connect_blob(void) {
  blob_t b = {.n = 0};
  header(&b, 1764320000001, 77, "inst-a");
  /* session.connected of the default device (its name left out), web
   * offline -> online, shown version 1 */
  event(&b, 0 + F_DEV + F_WEB + F_SV, 1, 0, 1, 1, -1, NULL, "s1", "alice",
        "{\"d\":\"a b\t\"}");
  put_u(&b, 0, 1);
  put_u(&b, 1, 1);
  put_u(&b, 1, 4);
  /* user.online of the same session and user and device: all left out. */
  event(&b, 3 + F_DEV + F_SV + F_DITTO + F_DITTO_DEV, 1, 0, 1, 1, -1, NULL,
        NULL, NULL, NULL);
  put_u(&b, 2, 4);
  return b;
}

/* A reaper's (inst-b's) session.disconnected and cleanup of a dead
 * instance's. */
static blob_t reaped_blob(void) {
  blob_t b = {.n = 0};
  header(&b, 1764320000002, 78, "inst-b");
  event(&b, 1, 8, 1, 0, 4, -1, "victim", "s9", "carol", NULL);
  event(&b, 6, 8, 0, 0, 0, 100000, "victim", NULL, NULL, NULL);
  return b;
}

static redisReply *entry(const char *id, const char *k, blob_t b) {
  return entry_bin(id, k, &b);
}
#define CONNECT connect_blob()
#define REAPED reaped_blob()

/* An event's device tail and shown version. */
static void device_tail_is(const presence_event_t *e, const char *device,
                           presence_status_t from, presence_status_t to,
                           uint64_t shown_version) {
  assert_string_equal(e->device, device);
  assert_int_equal(e->device_from, from);
  assert_int_equal(e->device_to, to);
  assert_int_equal(e->shown_version, shown_version);
}

static void an_entry_becomes_its_events(void **state) {
  (void)state;
  redisReply *e = entry("12-0", "2", CONNECT);
  presence__redis_events_t evs = {0};
  assert_int_equal(presence__redis_decode_entry(e, "inst-a", &evs), 0);
  assert_int_equal(evs.n, 2);
  const presence_event_t *c = &evs.ev[0], *u = &evs.ev[1];
  /* Named by the last event's number: the first is one before it. */
  assert_int_equal(c->seq, 11);
  assert_int_equal(u->seq, 12);
  assert_int_equal(c->type, PRESENCE_EV_SESSION_CONNECTED);
  assert_int_equal(c->reason, PRESENCE_REASON_CONNECT);
  assert_int_equal(c->from, PRESENCE_OFFLINE);
  assert_int_equal(c->to, PRESENCE_ONLINE);
  assert_int_equal(c->ts_ms, 1764320000001);
  assert_int_equal(c->epoch, 77);
  assert_string_equal(c->instance_id, "inst-a");
  assert_string_equal(c->session_id, "s1");
  assert_string_equal(c->user_id, "alice");
  /* Spaces, tabs and quotes in meta are kept: strings carry a length. */
  assert_string_equal(c->meta, "{\"d\":\"a b\t\"}");
  assert_int_equal(c->flags, 0); /* emitted by self */
  assert_int_equal(u->type, PRESENCE_EV_USER_ONLINE);
  assert_string_equal(u->session_id, "s1");
  assert_string_equal(u->user_id, "alice");
  assert_int_equal(u->user_version, 1);
  assert_null(u->meta);
  /* The default device, named by a flag, and the user event's device
   * tail taken from the session event's. */
  device_tail_is(c, "web", PRESENCE_OFFLINE, PRESENCE_ONLINE, 1);
  device_tail_is(u, "web", PRESENCE_OFFLINE, PRESENCE_ONLINE, 2);
  presence__redis_events_free(&evs);
  freeReplyObject(e);
}

static void a_reap_is_remote_and_its_cleanup_counts(void **state) {
  (void)state;
  redisReply *e = entry("40-0", "2", REAPED);
  presence__redis_events_t evs = {0};
  assert_int_equal(presence__redis_decode_entry(e, "inst-a", &evs), 0);
  assert_int_equal(evs.n, 2);
  /* The instance is the dead one; the emitter (inst-b) is not us. */
  assert_string_equal(evs.ev[0].instance_id, "victim");
  assert_true(evs.ev[0].flags & PRESENCE_EVENT_REMOTE);
  assert_int_equal(evs.ev[0].reason, PRESENCE_REASON_INSTANCE_LOST);
  assert_int_equal(evs.ev[1].type, PRESENCE_EV_CLEANUP);
  assert_true(evs.ev[1].flags & PRESENCE_EVENT_IDS_OMITTED);
  assert_int_equal(evs.ev[1].n_session_ids, 0);
  assert_null(evs.ev[1].session_id);
  presence__redis_events_free(&evs);
  freeReplyObject(e);
  /* Read by the reaper itself, nothing is remote. */
  e = entry("40-0", "2", REAPED);
  evs = (presence__redis_events_t){0};
  assert_int_equal(presence__redis_decode_entry(e, "inst-b", &evs), 0);
  assert_false(evs.ev[0].flags & PRESENCE_EVENT_REMOTE);
  presence__redis_events_free(&evs);
  freeReplyObject(e);
}

/* A UUID session id the store keeps in 20 bytes (core/uuid.h) reaches the
 * events as its text, the user event after it too (it takes the previous
 * event's); 20 bytes that are not that form (a byte below 0x80, padding
 * bits set) are passed on as they are. */
static void a_uuid_in_20_bytes_is_read_as_text(void **state) {
  (void)state;
  const char *text = "f70a3608-29da-4401-806c-4d556b4d3cc9";
  char wire[PRESENCE__SID20_LEN + 1], low[PRESENCE__SID20_LEN + 1],
      pad[PRESENCE__SID20_LEN + 1];
  assert_int_equal(sid20_pack(text, 36, wire), PRESENCE__SID20_LEN);
  memcpy(low, wire, sizeof low);
  low[10] = 0x01;
  memcpy(pad, wire, sizeof pad);
  pad[PRESENCE__SID20_LEN - 1] = (char)0xff;
  blob_t b = {.n = 0};
  header(&b, 1764320000001, 77, "inst-a");
  event(&b, 0 + F_SV, 1, 0, 1, 1, -1, NULL, wire, "alice", NULL);
  put_u(&b, 1, 4);
  event(&b, 3 + F_SV + F_DITTO, 1, 0, 1, 1, -1, NULL, NULL, NULL, NULL);
  put_u(&b, 2, 4);
  event(&b, 0 + F_SV, 1, 0, 1, 1, -1, NULL, low, "bob", NULL);
  put_u(&b, 1, 4);
  event(&b, 0 + F_SV, 1, 0, 1, 1, -1, NULL, pad, "carol", NULL);
  put_u(&b, 1, 4);
  redisReply *e = entry("20-0", "4", b);
  presence__redis_events_t evs = {0};
  assert_int_equal(presence__redis_decode_entry(e, "inst-a", &evs), 0);
  assert_int_equal(evs.n, 4);
  assert_string_equal(evs.ev[0].session_id, text);
  assert_string_equal(evs.ev[1].session_id, text);
  assert_string_equal(evs.ev[2].session_id, low);
  assert_string_equal(evs.ev[3].session_id, pad);
  presence__redis_events_free(&evs);
  freeReplyObject(e);
}

static void entries_append_in_order(void **state) {
  (void)state;
  redisReply *a = entry("12-0", "2", CONNECT), *b = entry("40-0", "2", REAPED);
  presence__redis_events_t evs = {0};
  assert_int_equal(presence__redis_decode_entry(a, "x", &evs), 0);
  assert_int_equal(presence__redis_decode_entry(b, "x", &evs), 0);
  assert_int_equal(evs.n, 4);
  assert_int_equal(evs.ev[1].seq, 12);
  assert_int_equal(evs.ev[2].seq, 39);
  /* The first entry's strings survive the second's (realloc moved the
   * events, not the strings they point to). */
  assert_string_equal(evs.ev[0].user_id, "alice");
  presence__redis_events_free(&evs);
  freeReplyObject(a);
  freeReplyObject(b);
}

/* A user event with its device and shown version, a channel join with its
 * count, shown version and shown count, a status message: each type's own
 * fields, in the order the script packs them. */
static blob_t tails_blob(void) {
  blob_t b = {.n = 0};
  header(&b, 5, 7, "inst-a");
  /* user.idle, flags 256 (device) + 512 (shown version); from/to carry
   * availability 2 (busy) above the status. */
  event(&b, 4 + F_DEV + F_SV, 2, 1 + 8, 2 + 8, 9, -1, NULL, "s1", "bob", NULL);
  put_s(&b, "mobile", 2);
  put_u(&b, 1, 1);
  put_u(&b, 2, 1);
  put_u(&b, 6, 4);
  /* channel.join, 512 + 4096: member count 41 */
  event(&b, 7 + F_SV + 4096, 1, 0, 1, 3, 41, NULL, "s1", "bob", "{\"x\":1}");
  put_s(&b, "room", 2);
  put_u(&b, 2, 4);
  put_u(&b, 40, 4);
  /* user.message, 512: text, no emoji, expiry */
  event(&b, 11 + F_SV, 3, 1, 1, 10, -1, NULL, NULL, "bob", NULL);
  put_s(&b, "lunch", 4);
  put_s(&b, NULL, 2);
  put_u(&b, 1764320009999, 6);
  put_u(&b, 7, 4);
  return b;
}

static void each_type_carries_its_own_fields(void **state) {
  (void)state;
  redisReply *e = entry("3-0", "3", tails_blob());
  presence__redis_events_t evs = {0};
  assert_int_equal(presence__redis_decode_entry(e, "inst-a", &evs), 0);
  assert_int_equal(evs.n, 3);
  const presence_event_t *u = &evs.ev[0], *c = &evs.ev[1], *m = &evs.ev[2];
  assert_int_equal(u->type, PRESENCE_EV_USER_IDLE);
  assert_int_equal(u->from, PRESENCE_ONLINE);
  assert_int_equal(u->to, PRESENCE_IDLE);
  assert_int_equal(u->availability_to, 2);
  device_tail_is(u, "mobile", PRESENCE_ONLINE, PRESENCE_IDLE, 6);
  assert_int_equal(c->type, PRESENCE_EV_CHANNEL_JOIN);
  assert_string_equal(c->channel, "room");
  assert_int_equal(c->count, 41);
  assert_int_equal(c->shown_count, 40);
  assert_false(c->flags & PRESENCE_EVENT_IDS_OMITTED);
  assert_string_equal(c->meta, "{\"x\":1}");
  assert_int_equal(m->type, PRESENCE_EV_USER_MESSAGE);
  assert_string_equal(m->message, "lunch");
  assert_null(m->emoji);
  assert_null(m->session_id);
  assert_int_equal(m->message_expires_ms, 1764320009999);
  assert_int_equal(m->shown_version, 7);
  assert_int_equal(m->seq, 3);
  presence__redis_events_free(&evs);
  freeReplyObject(e);
}

static void refused(const char *id, const char *k, const blob_t *b,
                    const char *what) {
  redisReply *e = entry_bin(id, k, b);
  presence__redis_events_t evs = {0};
  int rc = presence__redis_decode_entry(e, "x", &evs);
  if (rc != PRESENCE_ESTORE || evs.n != 0)
    fail_msg("%s: rc %d, %zu events", what, rc, evs.n);
  presence__redis_events_free(&evs);
  freeReplyObject(e);
}

/* A command as the store sends it, read back by the reply reader: every
 * length is written by presence__resp_dec, so lengths of each digit count
 * (0, 9, 10, 99, 100, ...) and a count of arguments past 9 come back as
 * sent, byte for byte, and the digits alone match printf's. */
static void a_command_reads_back_as_sent(void **state) {
  (void)state;
  const presence_allocator_t *a = presence__default_allocator();
  enum { N = 12 };
  static const size_t lens[N] = {0, 1, 9, 10, 11, 99, 100, 101, 999, 1000,
                                 65536, 123457};
  char *args[N];
  for (int i = 0; i < N; i++) {
    args[i] = malloc(lens[i] + 1);
    for (size_t k = 0; k < lens[i]; k++)
      args[i][k] = (char)('a' + (i + k) % 26);
    args[i][lens[i]] = '\0';
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  assert_int_equal(presence__resp_append(a, &buf, &len, &cap, N,
                                         (const char *const *)args, lens),
                   0);
  assert_memory_equal(buf, "*12\r\n$0\r\n\r\n$1\r\n", 14);
  presence__resp_reader_t r;
  presence__resp_init(&r, a, 1 << 20, 1000);
  /* A command is an array of bulk strings, which the reader takes as a
   * reply of the same shape. */
  assert_int_equal(presence__resp_feed(&r, buf, len), 0);
  redisReply *rep = NULL;
  assert_int_equal(presence__resp_next(&r, &rep), 1);
  assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
  assert_int_equal(rep->elements, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(rep->element[i]->len, lens[i]);
    assert_memory_equal(rep->element[i]->str, args[i], lens[i]);
    free(args[i]);
  }
  presence__resp_free(a, rep);
  presence__resp_fini(&r);
  free(buf);
  char d[24], want[24];
  const uint64_t vs[] = {0, 7, 10, 4294967295u, UINT64_MAX};
  for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
    size_t n = presence__resp_dec(d, vs[i]);
    int w = snprintf(want, sizeof want, "%llu", (unsigned long long)vs[i]);
    assert_int_equal(n, (size_t)w);
    assert_memory_equal(d, want, n);
  }
}

static void malformed_entries_are_refused_whole(void **state) {
  (void)state;
  blob_t c = connect_blob();
  refused("12-0", "3", &c, "fewer events than k");
  refused("12-1", "2", &c, "not an id the script writes");
  refused("1-0", "2", &c, "numbers below 1");
  refused("12-0", "2x", &c, "k not a number");
  refused(" 12-0", "2", &c, "a blank before it");
  refused("12-0", "+2", &c, "a sign");
  refused("12-0", "-18446744073709551614", &c, "wraps to 2");
  blob_t empty = {.n = 0};
  refused("12-0", "0", &empty, "empty");
  /* Every blob cut short, and every one with a byte more. */
  blob_t t = tails_blob();
  for (size_t n = 0; n < t.n; n++) {
    blob_t cut = t;
    cut.n = n;
    refused("3-0", "3", &cut, "cut short");
  }
  blob_t more = t;
  more.b[more.n++] = 'x';
  refused("3-0", "3", &more, "a byte left over");
  /* A string whose NUL is missing, an unknown type, unknown flags, a
   * channel event without its channel, a header without its caller. */
  blob_t nonul = {.n = 0};
  header(&nonul, 5, 7, "inst-a");
  event(&nonul, 0, 1, 0, 1, 1, -1, NULL, "s1", "alice", NULL);
  nonul.b[nonul.n - 1] = 'y'; /* the NUL after "alice" */
  refused("9-0", "1", &nonul, "no NUL");
  blob_t ty = {.n = 0};
  header(&ty, 5, 7, "inst-a");
  event(&ty, 60, 1, 0, 1, 1, -1, NULL, "s1", "alice", NULL);
  refused("9-0", "1", &ty, "type");
  blob_t fl = {.n = 0};
  header(&fl, 5, 7, "inst-a");
  event(&fl, 3 + (2048 << 8), 1, 0, 1, 1, -1, NULL, "s1", "alice", NULL);
  refused("9-0", "1", &fl, "flags");
  blob_t ch = {.n = 0};
  header(&ch, 5, 7, "inst-a");
  event(&ch, 7, 1, 0, 1, 1, 3, NULL, "s1", "alice", NULL);
  put_s(&ch, NULL, 2);
  refused("9-0", "1", &ch, "a channel event without a channel");
  /* "The previous event's session and user" first, after a channel
   * event, or on a channel event. (Since format 9 the flag leaves both
   * out: an event cannot carry a user of its own with it.) */
  blob_t d1 = {.n = 0};
  header(&d1, 5, 7, "inst-a");
  event(&d1, 3 + 8192, 1, 0, 1, 1, -1, NULL, NULL, NULL, NULL);
  refused("9-0", "1", &d1, "ditto first");
  blob_t d2 = {.n = 0};
  header(&d2, 5, 7, "inst-a");
  event(&d2, 7, 1, 0, 1, 1, 3, NULL, "s1", "alice", NULL);
  put_s(&d2, "room", 2);
  event(&d2, 3 + 8192, 1, 0, 1, 1, -1, NULL, NULL, NULL, NULL);
  refused("10-0", "2", &d2, "ditto after a channel event");
  blob_t d4 = {.n = 0};
  header(&d4, 5, 7, "inst-a");
  event(&d4, 0, 1, 0, 1, 1, -1, NULL, "s1", "alice", NULL);
  event(&d4, 7 + 8192, 1, 0, 1, 1, 3, NULL, NULL, NULL, NULL);
  put_s(&d4, "room", 2);
  refused("10-0", "2", &d4, "ditto on a channel event");
  /* The previous event's device tail: first, without its session and
   * user, after an event without one, outside a device tail, together
   * with the default device's flag; the default device's flag alone. */
  blob_t v1 = {.n = 0};
  header(&v1, 5, 7, "inst-a");
  event(&v1, 3 + F_DEV + F_DITTO_DEV, 1, 0, 1, 1, -1, NULL, "s1", "alice",
        NULL);
  refused("9-0", "1", &v1, "device ditto first");
  blob_t v2 = connect_blob();
  v2.n -= 14; /* the user event: 10 bytes and its shown version (4) */
  event(&v2, 3 + F_DEV + F_SV + F_DITTO_DEV, 1, 0, 1, 1, -1, NULL, "s1",
        "alice", NULL);
  put_u(&v2, 2, 4);
  refused("12-0", "2", &v2, "device ditto with a session of its own");
  blob_t v3 = {.n = 0};
  header(&v3, 5, 7, "inst-a");
  event(&v3, 0, 1, 0, 1, 1, -1, NULL, "s1", "alice", NULL);
  event(&v3, 3 + F_DEV + F_DITTO + F_DITTO_DEV, 1, 0, 1, 1, -1, NULL, NULL,
        NULL, NULL);
  refused("10-0", "2", &v3, "device ditto after no device");
  blob_t v4 = connect_blob();
  v4.n -= 14;
  event(&v4, 3 + F_SV + F_DITTO + F_DITTO_DEV, 1, 0, 1, 1, -1, NULL, NULL,
        NULL, NULL);
  put_u(&v4, 2, 4);
  refused("12-0", "2", &v4, "device ditto outside a device tail");
  blob_t v5 = connect_blob();
  v5.n -= 14;
  event(&v5, 3 + F_DEV + F_SV + F_DITTO + F_DITTO_DEV + F_WEB, 1, 0, 1, 1, -1,
        NULL, NULL, NULL, NULL);
  put_u(&v5, 2, 4);
  refused("12-0", "2", &v5, "device ditto and the default device");
  blob_t v6 = {.n = 0};
  header(&v6, 5, 7, "inst-a");
  event(&v6, 2 + F_WEB, 1, 0, 1, 1, -1, NULL, "s1", "alice", NULL);
  refused("9-0", "1", &v6, "the default device outside a device tail");
  /* A flag's field that is not there: an instance, meta. */
  blob_t i1 = {.n = 0};
  header(&i1, 5, 7, "inst-a");
  event(&i1, 6, 8, 0, 0, 0, -1, NULL, NULL, NULL, NULL);
  i1.b[21 + 2] |= 1; /* F_INST: bit 16 of the type, after 21 of header */
  put_s(&i1, NULL, 2); /* an absent string where the instance is read */
  refused("9-0", "1", &i1, "an instance flagged, none there");
  blob_t nocaller = {.n = 0};
  header(&nocaller, 5, 7, NULL);
  event(&nocaller, 0, 1, 0, 1, 1, -1, NULL, "s1", "alice", NULL);
  refused("9-0", "1", &nocaller, "no caller");
  /* Not an entry at all. */
  redisReply *e = arr(1, str("12-0"));
  presence__redis_events_t evs = {0};
  assert_int_equal(presence__redis_decode_entry(e, "x", &evs), PRESENCE_ESTORE);
  freeReplyObject(e);
  e = arr(2, str("12-0"), arr(2, str("n"), str("3 1 0 1 1 5 7")));
  assert_int_equal(presence__redis_decode_entry(e, "x", &evs), PRESENCE_ESTORE);
  assert_int_equal(evs.n, 0);
  presence__redis_events_free(&evs);
  freeReplyObject(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(an_entry_becomes_its_events),
      cmocka_unit_test(a_reap_is_remote_and_its_cleanup_counts),
      cmocka_unit_test(a_uuid_in_20_bytes_is_read_as_text),
      cmocka_unit_test(entries_append_in_order),
      cmocka_unit_test(each_type_carries_its_own_fields),
      cmocka_unit_test(malformed_entries_are_refused_whole),
      cmocka_unit_test(a_command_reads_back_as_sent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
