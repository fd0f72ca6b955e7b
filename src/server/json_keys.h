/* SPDX-License-Identifier: MIT */
/*
 * JSON read from a peer (tokens, client and backend frames, HTTP request
 * bodies), refused where its meaning would depend on the reader:
 * duplicate member names (cJSON keeps the first of {"a":1,"a":2}, most
 * other parsers the last), a \u0000 escape (cJSON cuts the string there,
 * so "bob\u0000x" would read as "bob"), text after the object, a number
 * or a string that is not written as RFC 8259 asks.
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

/* Whether the numbers, strings and whitespace of valid-to-cJSON text
 * data[0..len) are as RFC 8259 writes them: cJSON also reads 007, 1., 1.e5,
 * raw control bytes inside strings and any byte up to ' ' (NUL included)
 * as whitespace, which other readers refuse. */
int json_text_strict(const void *data, size_t len);

/* data[0..len) as one JSON object with nothing but whitespace after it and
 * no member name twice, or NULL (out of memory too). */
cJSON *json_parse_one_object(const void *data, size_t len);

/* An HTTP request's JSON body: json_parse_one_object with no \u0000
 * escape either. NULL with *why the message of the 400 bad_json. */
cJSON *json_body_object(const char *body, size_t len, const char **why);

/* The text of node's value as the peer wrote it, compact: text[0..len) is
 * the JSON that root was parsed from (by cJSON: a leading UTF-8 BOM and
 * whitespace allowed), node is root or inside it. Whitespace between
 * tokens is left out; everything else is kept byte for byte, numbers
 * above all: cJSON holds a number as a double, so printing the tree would
 * turn 12345678901234567890 into 1.2345678901234567e+19 and 1e400 into
 * null. Returns a malloc'd NUL-terminated string (its length in *n when n
 * is not NULL), or NULL when out of memory or when the text does not hold
 * the tree (not the text root was parsed from). */
char *json_source_compact(const void *text, size_t len, const cJSON *root,
                          const cJSON *node, size_t *n);

#endif
