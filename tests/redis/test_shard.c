/* SPDX-License-Identifier: MIT */
/*
 * The virtual shards' arithmetic (src/store/redis_shard.c): Redis
 * Cluster's slot of a key, the shard tags (shard i's slot is the middle of
 * the i-th of S equal ranges, so primaries with equal slot ranges hold equal
 * numbers of shards), and
 * the user -> shard hash every instance must agree on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/redis_shard.h"

static unsigned slot(const char *k) {
  return presence__redis_slot(k, strlen(k));
}

/* The values redis-cli's CLUSTER KEYSLOT gives. */
static void slots_are_redis_clusters(void **state) {
  (void)state;
  assert_int_equal(slot("foo"), 12182);
  assert_int_equal(slot("bar"), 5061);
  assert_int_equal(slot("123456789"), 0x31c3 & 16383);
  /* A tag: only what is inside the first non-empty {...} counts. */
  assert_int_equal(slot("{user1000}.following"), slot("user1000"));
  assert_int_equal(slot("presence:{s}u:{u:alice}"), slot("s"));
  assert_int_equal(slot("a{}b"), slot("a{}b")); /* empty: the whole key */
  assert_int_not_equal(slot("a{}b"), slot(""));
  assert_int_equal(slot("{}{x}"), presence__redis_slot("{}{x}", 5));
}

static void tags_land_on_evenly_spaced_slots(void **state) {
  (void)state;
  const uint32_t sizes[] = {1, 3, 12, 24};
  for (size_t k = 0; k < 4; k++) {
    uint32_t n = sizes[k];
    for (uint32_t i = 0; i < n; i++) {
      char tag[24], key[64];
      assert_int_equal(presence__redis_shard_tag(i, n, tag, sizeof tag), 0);
      /* The store's keys: "<prefix>{<tag>}<name>", all in the tag's slot. */
      snprintf(key, sizeof key, "presence:{%s}u:{u:bob}", tag);
      assert_int_equal(slot(key),
                       (unsigned)((2 * (uint64_t)i + 1) * 16384 / (2 * n)));
    }
  }
  char tag[24];
  assert_int_equal(presence__redis_shard_tag(3, 3, tag, sizeof tag),
                   PRESENCE_EINVAL);
}

/* 3 primaries of a fresh cluster hold slots 0-5460, 5461-10922,
 * 10923-16383: 12 shards put 4 on each. And 12,000 users spread within
 * 10 % of 1,000 per shard. */
static void shards_and_users_spread_evenly(void **state) {
  (void)state;
  unsigned per_node[3] = {0};
  for (uint32_t i = 0; i < 12; i++) {
    char tag[24], key[40];
    presence__redis_shard_tag(i, 12, tag, sizeof tag);
    snprintf(key, sizeof key, "{%s}", tag);
    unsigned s = slot(key);
    per_node[s <= 5460 ? 0 : s <= 10922 ? 1 : 2]++;
  }
  for (int k = 0; k < 3; k++) assert_int_equal(per_node[k], 4);
  unsigned n[12] = {0};
  for (int u = 0; u < 12000; u++) {
    char id[32];
    int len = snprintf(id, sizeof id, "user-%d", u);
    uint32_t s = presence__redis_user_shard(id, (size_t)len, 12);
    assert_true(s < 12);
    /* The same user, the same shard, every time. */
    assert_int_equal(presence__redis_user_shard(id, (size_t)len, 12), s);
    n[s]++;
  }
  for (int s = 0; s < 12; s++) assert_true(n[s] > 900 && n[s] < 1100);
  assert_int_equal(presence__redis_user_shard("x", 1, 1), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(slots_are_redis_clusters),
      cmocka_unit_test(tags_land_on_evenly_spaced_slots),
      cmocka_unit_test(shards_and_users_spread_evenly),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
