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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(presence_new_destroys_the_given_store_when_it_fails),
      cmocka_unit_test(presence_new_out_of_memory_leaks_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
