/* SPDX-License-Identifier: MIT */
/*
 * JSON read from a peer (tokens, client and backend frames, HTTP request
 * bodies), refused where its meaning would depend on the reader:
 * duplicate member names (cJSON keeps the first of {"a":1,"a":2}, most
 * other parsers the last), a \u0000 escape (cJSON cuts the string there,
 * so "bob\u0000x" would read as "bob"), text after the object.
 */
#ifndef PRESENCED_JSON_KEYS_H
#define PRESENCED_JSON_KEYS_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* 1 if an object anywhere in the tree has a member name twice, 0 if not,
 * -1 when out of memory. O(n log n) per object; depth is bounded by
 * cJSON's nesting limit. */
int json_has_dup_keys(const cJSON *node);

/* Whether valid JSON text data[0..len) holds the escape \u0000. */
int json_has_escaped_nul(const void *data, size_t len);

/* data[0..len) as one JSON object with nothing but whitespace after it and
 * no member name twice, or NULL (out of memory too). */
cJSON *json_parse_one_object(const void *data, size_t len);

/* An HTTP request's JSON body: json_parse_one_object with no \u0000
 * escape either. NULL with *why the message of the 400 bad_json. */
cJSON *json_body_object(const char *body, size_t len, const char **why);

#endif
