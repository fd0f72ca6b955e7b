/* SPDX-License-Identifier: MIT */
/*
 * Duplicate member names in parsed JSON. Parsers disagree on {"a":1,"a":2}
 * (cJSON keeps the first, most others the last), so a document whose
 * meaning depends on the reader is refused wherever presenced reads JSON
 * from a peer: tokens and client messages.
 */
#ifndef PRESENCED_JSON_KEYS_H
#define PRESENCED_JSON_KEYS_H

#include <cjson/cJSON.h>

/* 1 if an object anywhere in the tree has a member name twice, 0 if not,
 * -1 when out of memory. O(n log n) per object; depth is bounded by
 * cJSON's nesting limit. */
int json_has_dup_keys(const cJSON *node);

#endif
