/* SPDX-License-Identifier: MIT */
/*
 * A canonical UUID's text (8-4-4-4-12 lowercase hex digits) and its 16
 * bytes, both ways: the embedded store keys its session table by the bytes
 * (src/store/memory.c) and the Redis store sends them in place of the text
 * (src/store/redis.c, "Session ids in 20 bytes"). Uppercase digits are not
 * a canonical UUID here: an id is kept as it was given, and the bytes'
 * text is lowercase.
 */
#ifndef PRESENCE_CORE_UUID_H
#define PRESENCE_CORE_UUID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The 32 digits of a canonical UUID's text, dashes out; false if the
 * dashes are not where they belong. */
static inline bool uuid_digits(const char *id, size_t len, char h[32]) {
  if (len != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' ||
      id[23] != '-')
    return false;
  memcpy(h, id, 8);
  memcpy(h + 8, id + 9, 4);
  memcpy(h + 12, id + 14, 4);
  memcpy(h + 16, id + 19, 4);
  memcpy(h + 20, id + 24, 12);
  return true;
}

/* The text from its 32 digits. */
static inline void uuid_dashes(const char h[32], char out[37]) {
  memcpy(out, h, 8);
  out[8] = '-';
  memcpy(out + 9, h + 8, 4);
  out[13] = '-';
  memcpy(out + 14, h + 12, 4);
  out[18] = '-';
  memcpy(out + 19, h + 16, 4);
  out[23] = '-';
  memcpy(out + 24, h + 20, 12);
  out[36] = '\0';
}

#if defined(__SSE2__)
/* Sixteen digits at once (every connect and lookup by id parses one, every
 * event of a session makes one): SSE2 is in every x86-64. */
static inline bool hex16(__m128i x, __m128i *val) {
  const __m128i minus1 = _mm_set1_epi8(-1);
  /* Signed compares: a byte of 0x80 or more is negative after either
   * subtraction below, or 0x50 and up, and so neither a digit nor a-f. */
  __m128i d = _mm_sub_epi8(x, _mm_set1_epi8('0'));
  __m128i is_d = _mm_and_si128(_mm_cmpgt_epi8(_mm_set1_epi8(10), d),
                               _mm_cmpgt_epi8(d, minus1));
  __m128i a = _mm_sub_epi8(x, _mm_set1_epi8('a'));
  __m128i is_a = _mm_and_si128(_mm_cmpgt_epi8(_mm_set1_epi8(6), a),
                               _mm_cmpgt_epi8(a, minus1));
  *val = _mm_or_si128(_mm_and_si128(d, is_d),
                      _mm_and_si128(_mm_add_epi8(a, _mm_set1_epi8(10)), is_a));
  return _mm_movemask_epi8(_mm_or_si128(is_d, is_a)) == 0xffff;
}

/* Two digits' values per 16-bit lane (first low) to their byte. */
static inline __m128i hex_pairs16(__m128i v) {
  return _mm_or_si128(_mm_slli_epi16(_mm_and_si128(v, _mm_set1_epi16(0xff)), 4),
                      _mm_srli_epi16(v, 8));
}

static inline bool uuid_pack(const char *id, size_t len, unsigned char out[16]) {
  char h[32];
  if (!uuid_digits(id, len, h)) return false;
  __m128i v0, v1;
  bool ok = hex16(_mm_loadu_si128((const __m128i *)(const void *)h), &v0);
  ok &= hex16(_mm_loadu_si128((const __m128i *)(const void *)(h + 16)), &v1);
  _mm_storeu_si128((__m128i *)(void *)out,
                   _mm_packus_epi16(hex_pairs16(v0), hex_pairs16(v1)));
  return ok;
}

/* A nibble per byte to its lowercase digit. */
static inline __m128i hex_chars16(__m128i n) {
  __m128i above9 = _mm_cmpgt_epi8(n, _mm_set1_epi8(9));
  return _mm_add_epi8(_mm_add_epi8(n, _mm_set1_epi8('0')),
                      _mm_and_si128(above9, _mm_set1_epi8('a' - '0' - 10)));
}

static inline void uuid_text(const unsigned char in[16], char out[37]) {
  const __m128i low = _mm_set1_epi8(0x0f);
  __m128i v = _mm_loadu_si128((const __m128i *)(const void *)in);
  __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
  __m128i lo = _mm_and_si128(v, low);
  char h[32];
  _mm_storeu_si128((__m128i *)(void *)h,
                   hex_chars16(_mm_unpacklo_epi8(hi, lo)));
  _mm_storeu_si128((__m128i *)(void *)(h + 16),
                   hex_chars16(_mm_unpackhi_epi8(hi, lo)));
  uuid_dashes(h, out);
}
#else
/* Each byte's two lowercase hex digits. */
static const char hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* A lowercase hex digit's value; 16 or more for anything else. */
static inline unsigned hex_val(unsigned char c) {
  unsigned d = (unsigned)c - '0', a = (unsigned)c - 'a';
  return d < 10 ? d : a < 6 ? a + 10 : 16;
}

static inline bool uuid_pack(const char *id, size_t len, unsigned char out[16]) {
  char h[32];
  if (!uuid_digits(id, len, h)) return false;
  unsigned bad = 0;
  for (int i = 0; i < 16; i++) {
    unsigned hi = hex_val((unsigned char)h[2 * i]);
    unsigned lo = hex_val((unsigned char)h[2 * i + 1]);
    bad |= hi | lo;
    out[i] = (unsigned char)(hi << 4 | (lo & 15));
  }
  return bad < 16;
}

static inline void uuid_text(const unsigned char in[16], char out[37]) {
  char h[32];
  for (int i = 0; i < 16; i++) memcpy(h + 2 * i, hex_pairs + 2 * in[i], 2);
  uuid_dashes(h, out);
}
#endif


/* The Redis store's form of a canonical UUID session id: 0xff, then the
 * 128 bits 7 to a byte, each byte 0x80 | its bits, the last 2 bits
 * padded with zeros: 20 bytes instead of 36 in each key, field and event
 * that holds the id. No byte of it is a NUL, a tab or a newline (the
 * separators of the script's records and lists), and 0xff never starts
 * valid UTF-8 (every text id is), so the two forms never meet. */
#define PRESENCE__SID20_LEN 20

/* out: the id's 20-byte form and a NUL; 0 when id is not a canonical
 * UUID (it goes as it is). */
static inline size_t sid20_pack(const char *id, size_t len, char out[21]) {
  unsigned char b[16];
  if (!uuid_pack(id, len, b)) return 0;
  uint32_t acc = 0;
  int nb = 0;
  size_t o = 0;
  out[o++] = (char)0xff;
  for (int i = 0; i < 16; i++) {
    acc = (acc << 8) | b[i];
    nb += 8;
    while (nb >= 7) {
      nb -= 7;
      out[o++] = (char)(0x80 | ((acc >> nb) & 0x7f));
    }
    acc &= (1u << nb) - 1;
  }
  out[o++] = (char)(0x80 | ((acc << (7 - nb)) & 0x7f));
  out[o] = '\0';
  return o;
}

/* The text of an id in the 20-byte form; false when p is not one (a text
 * id, passed on as it is). */
static inline bool sid20_text(const char *p, size_t len, char out[37]) {
  if (len != PRESENCE__SID20_LEN || (unsigned char)p[0] != 0xff) return false;
  unsigned char b[16];
  uint32_t acc = 0;
  int nb = 0;
  size_t k = 0;
  for (size_t i = 1; i < PRESENCE__SID20_LEN; i++) {
    unsigned c = (unsigned char)p[i];
    if (c < 0x80) return false;
    acc = (acc << 7) | (c & 0x7f);
    nb += 7;
    if (nb >= 8) {
      nb -= 8;
      if (k == 16) return false;
      b[k++] = (unsigned char)(acc >> nb);
      acc &= (1u << nb) - 1;
    }
  }
  if (k != 16 || acc) return false; /* the padding is zeros */
  uuid_text(b, out);
  return true;
}

#endif
