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

/* An alphabet character's value plus one; 0 for every other byte. A
 * table, not range tests: every connect decodes its token's ~200
 * characters, and the per-character branches were ~1 % of presenced's CPU
 * in a connect storm. */
static const uint8_t dec_table[256] = {
    ['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6,
    ['G'] = 7, ['H'] = 8, ['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12,
    ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18,
    ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30,
    ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
    ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
    ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54,
    ['2'] = 55, ['3'] = 56, ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60,
    ['8'] = 61, ['9'] = 62, ['-'] = 63, ['_'] = 64,
};

int b64url_decode(const char *in, size_t n, uint8_t *out, size_t *out_len) {
  const unsigned char *s = (const unsigned char *)in;
  size_t o = 0, i = 0;
  if (n % 4 == 1)
    return -1; /* 6 bits cannot make a byte: no encoder produces this */
  /* Whole groups: four characters, three bytes. */
  for (; i + 4 <= n; i += 4) {
    uint32_t a = dec_table[s[i]], b = dec_table[s[i + 1]],
             c = dec_table[s[i + 2]], d = dec_table[s[i + 3]];
    if (!a || !b || !c || !d) return -1;
    uint32_t v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (d - 1);
    out[o++] = (uint8_t)(v >> 16);
    out[o++] = (uint8_t)(v >> 8);
    out[o++] = (uint8_t)v;
  }
  /* A tail of 2 or 3 characters: 1 or 2 bytes. Its left-over bits (4 or
   * 2) must be zero: the encoder pads with zero bits, and accepting
   * anything else would give several spellings of the same bytes. */
  if (i < n) {
    uint32_t a = dec_table[s[i]], b = dec_table[s[i + 1]];
    uint32_t c = n - i == 3 ? dec_table[s[i + 2]] : 1;
    if (!a || !b || !c) return -1;
    uint32_t v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6;
    if (n - i == 2) {
      if (v & 0xffff) return -1;
      out[o++] = (uint8_t)(v >> 16);
    } else {
      if (v & 0xff) return -1;
      out[o++] = (uint8_t)(v >> 16);
      out[o++] = (uint8_t)(v >> 8);
    }
  }
  *out_len = o;
  return 0;
}
