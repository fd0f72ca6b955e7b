/* SPDX-License-Identifier: MIT */
/*
 * Strict base64url without padding; see b64.h for what "strict" means.
 */
#include "server/b64.h"

static const char enc_table[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t b64url_encoded_len(size_t n) {
  /* 4 characters per whole 3 bytes, then 2 or 3 for a tail of 1 or 2. */
  return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

size_t b64url_encode(const uint8_t *in, size_t n, char *out) {
  size_t o = 0, i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = enc_table[v >> 18 & 63];
    out[o++] = enc_table[v >> 12 & 63];
    out[o++] = enc_table[v >> 6 & 63];
    out[o++] = enc_table[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = enc_table[v >> 18 & 63];
    out[o++] = enc_table[v >> 12 & 63];
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = enc_table[v >> 18 & 63];
    out[o++] = enc_table[v >> 12 & 63];
    out[o++] = enc_table[v >> 6 & 63];
  }
  out[o] = '\0';
  return o;
}

size_t b64url_decoded_len(size_t n) {
  /* A tail of 1 character is invalid; count it as 0 so the bound stays
   * exact for valid input. */
  return n / 4 * 3 + (n % 4 <= 1 ? 0 : n % 4 - 1);
}

/* Value of one alphabet character, or -1. Written as ranges rather than a
 * 256-entry table so that it is obviously right; tokens are short. */
static int dec_char(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

int b64url_decode(const char *in, size_t n, uint8_t *out, size_t *out_len) {
  size_t o = 0;
  uint32_t acc = 0;
  unsigned bits = 0;
  if (n % 4 == 1)
    return -1; /* 6 bits cannot make a byte: no encoder produces this */
  for (size_t i = 0; i < n; i++) {
    int v = dec_char((unsigned char)in[i]);
    if (v < 0) return -1;
    acc = (acc << 6 | (uint32_t)v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
    }
  }
  /* Left-over bits (2 after a 3-character tail, 4 after a 2-character one)
   * must be zero: the encoder pads with zero bits, and accepting anything
   * else would give several spellings of the same bytes. */
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return -1;
  *out_len = o;
  return 0;
}
