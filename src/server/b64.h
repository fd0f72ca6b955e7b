/* SPDX-License-Identifier: MIT */
/*
 * base64url (RFC 4648 section 5) without padding, as JWS compact form uses it
 * (RFC 7515 section 2).
 *
 * Decoding is strict, so that one token has exactly one spelling: only the
 * 64 alphabet characters are accepted ('=' anywhere, '+', '/', whitespace and
 * NUL are refused), a length of 4k+1 characters is refused (it cannot come
 * from an encoder), and the unused low bits of the last character must be
 * zero (otherwise "AB" and "AC" would decode to the same byte, and an altered
 * token could still verify).
 */
#ifndef PRESENCED_B64_H
#define PRESENCED_B64_H

#include <stddef.h>
#include <stdint.h>

/* Number of characters the encoding of n bytes takes (no NUL, no padding). */
size_t b64url_encoded_len(size_t n);

/* Encode n bytes of in into out, which must hold b64url_encoded_len(n) + 1
 * bytes; out is NUL-terminated. Returns the number of characters written
 * (without the NUL). */
size_t b64url_encode(const uint8_t *in, size_t n, char *out);

/* Upper bound of the decoded size of n characters (exact for valid input). */
size_t b64url_decoded_len(size_t n);

/* Decode the n characters of in (not NUL-terminated, may be empty) into out,
 * which must hold b64url_decoded_len(n) bytes. Returns 0 and sets *out_len,
 * or -1 if the input is not canonical unpadded base64url (out is then
 * unspecified). */
int b64url_decode(const char *in, size_t n, uint8_t *out, size_t *out_len);

#endif
