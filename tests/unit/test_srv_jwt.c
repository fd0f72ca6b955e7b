/* SPDX-License-Identifier: MIT */
/*
 * Tests of the JWT HS256 verifier/signer (src/server/jwt.c) and of the
 * strict base64url codec under it (src/server/b64.c).
 *
 * Two halves:
 *  - the token cases in tests/data/jwt/NN_name.case (one cmocka test per
 *    file, see the README there), so that the refusal table of the protocol
 *    is data anyone can read and extend;
 *  - C tests for what a text file cannot say well: NUL bytes, sizes around
 *    the limits, exhaustive mutation of a valid token, memory ownership.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "server/b64.h"
#include "server/jwt.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1700000000
static const char SECRET[] = "presenced-test-secret-0123456789";

/* ---- helpers ------------------------------------------------------------ */

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  assert_non_null(d);
  memcpy(d, s, n);
  return d;
}

static char *b64s(const void *p, size_t n) {
  char *o = malloc(b64url_encoded_len(n) + 1);
  assert_non_null(o);
  b64url_encode(p, n, o);
  return o;
}

/* Build header.payload.signature from raw JSON texts. The signature is
 * HMAC-SHA256 with sign_secret computed here, with OpenSSL directly, not by
 * jwt_sign_hs256 (so that a bug there cannot hide a bug in jwt_verify);
 * sig_override, when not NULL, replaces it verbatim (may be ""). The JSON
 * texts are given as bytes (len) so that invalid UTF-8 can be tested. */
static char *make_token_n(const char *header, size_t h_len, const char *payload,
                          size_t p_len, const char *sign_secret,
                          const char *sig_override) {
  char *h = b64s(header, h_len), *p = b64s(payload, p_len);
  size_t si_len = strlen(h) + 1 + strlen(p);
  char *tok =
      malloc(si_len + 1 + 64 + (sig_override ? strlen(sig_override) : 0));
  assert_non_null(tok);
  sprintf(tok, "%s.%s", h, p);
  free(h);
  free(p);
  if (sig_override) {
    strcat(tok, ".");
    strcat(tok, sig_override);
    return tok;
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  assert_non_null(HMAC(EVP_sha256(), sign_secret, (int)strlen(sign_secret),
                       (const unsigned char *)tok, si_len, mac, &mac_len));
  assert_int_equal(mac_len, 32);
  tok[si_len] = '.';
  b64url_encode(mac, mac_len, tok + si_len + 1);
  return tok;
}

static char *make_token(const char *header, const char *payload) {
  return make_token_n(header, strlen(header), payload, strlen(payload), SECRET,
                      NULL);
}

static jwt_config_t cfg_default(void) {
  jwt_config_t c = {.secret = (const uint8_t *)SECRET,
                    .secret_len = sizeof SECRET - 1,
                    .audience = NULL,
                    .leeway_s = 0,
                    .max_len = 0};
  return c;
}

static int verify(const jwt_config_t *cfg, const char *tok, jwt_claims_t *c) {
  return jwt_verify(cfg, tok, strlen(tok), NOW, c);
}

static const char HDR[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* ---- the data-driven cases ----------------------------------------------- */

/* Where tests/data/jwt is: $PRESENCE_SOURCE_DIR, else relative to this file
 * (CMake passes __FILE__ as an absolute path). */
static char *data_dir(void) {
  const char *src = getenv("PRESENCE_SOURCE_DIR");
  char buf[4096];
  if (src && *src) {
    snprintf(buf, sizeof buf, "%s/tests/data/jwt", src);
  } else {
    const char *f = __FILE__;
    const char *slash = strrchr(f, '/');
    size_t n = slash ? (size_t)(slash - f) : 0;
    /* __FILE__ is tests/unit/test_srv_jwt.c: go up to tests/. */
    snprintf(buf, sizeof buf, "%.*s%s../data/jwt", (int)n, f, n ? "/" : "");
  }
  return xstrdup(buf);
}

typedef struct {
  const char *key;
  char *val;
} kv_t;

enum {
  K_NOW,
  K_SECRET,
  K_AUDIENCE,
  K_LEEWAY,
  K_MAX_LEN,
  K_ISSUER,
  K_MAX_LIFETIME,
  K_TOKEN,
  K_HEADER,
  K_PAYLOAD,
  K_SIGN_SECRET,
  K_SIGNATURE,
  K_EXPECT,
  K_EXPECT_SUB,
  K_EXPECT_EXP,
  K_EXPECT_WATCH_ALL,
  K_EXPECT_WATCH,
  K_EXPECT_META,
  K_COUNT
};
static const char *const KEYS[K_COUNT] = {
    "now",        "secret",           "audience",
    "leeway",     "max_len",          "issuer",
    "max_lifetime", "token",
    "header",     "payload",          "sign_secret",
    "signature",  "expect",           "expect_sub",
    "expect_exp", "expect_watch_all", "expect_watch",
    "expect_meta"};

/* Parse "key: value" lines ('#' comments, blank lines ignored) into vals.
 * Unknown or repeated keys fail the test: a typo must not silently make a
 * case test less than it says. */
static void load_case(const char *path, char *vals[K_COUNT]) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s", path);
  char line[16384];
  while (fgets(line, sizeof line, f)) {
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
      line[--n] = '\0';
    if (n == 0 || line[0] == '#') continue;
    char *colon = strchr(line, ':');
    if (!colon) fail_msg("%s: no ':' in line \"%s\"", path, line);
    *colon = '\0';
    char *v = colon + 1;
    if (*v == ' ') v++;
    int k;
    for (k = 0; k < K_COUNT && strcmp(KEYS[k], line) != 0; k++)
      ;
    if (k == K_COUNT) fail_msg("%s: unknown key \"%s\"", path, line);
    if (vals[k]) fail_msg("%s: key \"%s\" twice", path, line);
    vals[k] = xstrdup(v);
  }
  fclose(f);
}

static int code_of(const char *name) {
  for (int e = JWT_OK; e >= JWT_ERR_LAST; e--)
    if (strcmp(jwt_err_code(e), name) == 0) return e;
  fail_msg("unknown expected code \"%s\"", name);
  return 1;
}

static void run_case(void **state) {
  const char *path = *state;
  char *v[K_COUNT] = {0};
  load_case(path, v);
  if (!v[K_NOW] || !v[K_SECRET] || !v[K_EXPECT])
    fail_msg("%s: now, secret and expect are required", path);
  if (!v[K_TOKEN] == !v[K_HEADER] || !v[K_HEADER] != !v[K_PAYLOAD])
    fail_msg("%s: give either token, or header and payload", path);

  char *tok;
  if (v[K_TOKEN]) {
    tok = xstrdup(v[K_TOKEN]);
  } else {
    tok = make_token_n(
        v[K_HEADER], strlen(v[K_HEADER]), v[K_PAYLOAD], strlen(v[K_PAYLOAD]),
        v[K_SIGN_SECRET] ? v[K_SIGN_SECRET] : v[K_SECRET], v[K_SIGNATURE]);
  }
  jwt_config_t cfg = {.secret = (const uint8_t *)v[K_SECRET],
                      .secret_len = strlen(v[K_SECRET]),
                      .audience = v[K_AUDIENCE],
                      .leeway_s = v[K_LEEWAY] ? atoll(v[K_LEEWAY]) : 0,
                      .max_len =
                          v[K_MAX_LEN] ? (size_t)atoll(v[K_MAX_LEN]) : 0,
                      .issuer = v[K_ISSUER],
                      .max_lifetime_s =
                          v[K_MAX_LIFETIME] ? atoll(v[K_MAX_LIFETIME]) : 0};
  jwt_claims_t c;
  int rc = jwt_verify(&cfg, tok, strlen(tok), atoll(v[K_NOW]), &c);
  int want = code_of(v[K_EXPECT]);
  if (rc != want)
    fail_msg("%s: got %s, expected %s", path, jwt_err_code(rc),
             jwt_err_code(want));
  if (rc != JWT_OK) {
    /* On refusal nothing may be left in the claims. */
    assert_null(c.sub);
    assert_null(c.watch);
    assert_null(c.meta);
    assert_int_equal(c.n_watch, 0);
  } else {
    assert_non_null(c.sub);
    if (v[K_EXPECT_SUB]) assert_string_equal(c.sub, v[K_EXPECT_SUB]);
    if (v[K_EXPECT_EXP]) assert_true(c.exp == atoll(v[K_EXPECT_EXP]));
    assert_int_equal(c.watch_all, v[K_EXPECT_WATCH_ALL] ? 1 : 0);
    if (v[K_EXPECT_WATCH]) {
      cJSON *w = cJSON_Parse(v[K_EXPECT_WATCH]);
      assert_non_null(w);
      assert_int_equal(c.n_watch, cJSON_GetArraySize(w));
      size_t i = 0;
      for (cJSON *e = w->child; e; e = e->next, i++)
        assert_string_equal(c.watch[i], e->valuestring);
      cJSON_Delete(w);
    } else {
      assert_int_equal(c.n_watch, 0);
    }
    if (v[K_EXPECT_META])
      assert_string_equal(c.meta, v[K_EXPECT_META]);
    else
      assert_null(c.meta);
  }
  jwt_claims_free(&c);
  free(tok);
  for (int k = 0; k < K_COUNT; k++)
    free(v[k]);
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* All *.case files of the directory, sorted, as full paths. */
static char **list_cases(const char *dir, size_t *n_out) {
  DIR *d = opendir(dir);
  if (!d) return NULL;
  size_t n = 0, cap = 16;
  char **v = malloc(cap * sizeof *v);
  struct dirent *e;
  while (v && (e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 6 || strcmp(e->d_name + len - 5, ".case") != 0) continue;
    if (n == cap) {
      char **nv = realloc(v, (cap *= 2) * sizeof *v);
      if (!nv) break;
      v = nv;
    }
    size_t plen = strlen(dir) + 1 + len + 1;
    v[n] = malloc(plen);
    if (!v[n]) break;
    snprintf(v[n++], plen, "%s/%s", dir, e->d_name);
  }
  closedir(d);
  if (v) qsort(v, n, sizeof *v, cmp_names);
  *n_out = n;
  return v;
}

/* ---- C tests ------------------------------------------------------------ */

/* RFC 4648 section 10 vectors, unpadded, and the two url-safe characters. */
static void test_b64_vectors(void **state) {
  static const char *const plain[] = {"",     "f",     "fo",    "foo",
                                      "foob", "fooba", "foobar"};
  static const char *const enc[] = {"",       "Zg",      "Zm8",     "Zm9v",
                                    "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
  for (size_t i = 0; i < 7; i++) {
    char out[16];
    uint8_t dec[16];
    size_t n = b64url_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
    assert_int_equal(n, strlen(enc[i]));
    assert_int_equal(b64url_encoded_len(strlen(plain[i])), n);
    assert_string_equal(out, enc[i]);
    size_t dn = 99;
    assert_int_equal(b64url_decode(enc[i], n, dec, &dn), 0);
    assert_int_equal(dn, strlen(plain[i]));
    assert_int_equal(b64url_decoded_len(n), dn);
    assert_memory_equal(dec, plain[i], dn);
  }
  /* 0xfb 0xff: "+/8" in standard base64, "-_8" in base64url. */
  const uint8_t hi[] = {0xfb, 0xff};
  char out[8];
  b64url_encode(hi, 2, out);
  assert_string_equal(out, "-_8");
}

static void test_b64_strict(void **state) {
  /* Each of these would be accepted by a lenient decoder. */
  static const char *const bad[] = {
      "Zg==",  /* padding */
      "Zm9=",  /* padding in place of data */
      "Z",     /* 4k+1 characters */
      "Zm9vY", /* 4k+1 characters */
      "Zh",    /* non-zero unused bits ("Zg" is the canonical "f") */
      "Zm9",   /* non-zero unused bits ("Zm8" is the canonical "fo") */
      "Zm-",   /* the same with a url-safe character */
      "Zm+v",  /* standard alphabet */
      "Zm/v",  /* standard alphabet */
      "Zm9v\n", "Zm 9v", "Zm9v.", "Zm9v\xc3\xa9",
  };
  uint8_t dec[16];
  size_t dn;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_int_equal(b64url_decode(bad[i], strlen(bad[i]), dec, &dn), -1);
  assert_int_equal(b64url_decode("Zm\0v", 4, dec, &dn), -1); /* NUL */
  /* The controls: the canonical spellings decode. */
  assert_int_equal(b64url_decode("Zg", 2, dec, &dn), 0);
  assert_int_equal(b64url_decode("Zm8", 3, dec, &dn), 0);
  assert_int_equal(dn, 2);
  assert_memory_equal(dec, "fo", 2);
}

/* Every length 0..200 of pseudo-random bytes survives encode/decode, and
 * each byte string has one accepted spelling: no other value of the last
 * character decodes to the same bytes (the strictness that makes tokens
 * unmalleable; a lenient decoder accepts 4 or 16 of them). */
static void test_b64_roundtrip(void **state) {
  uint8_t in[200], dec[200];
  char enc[300];
  uint32_t x = 12345;
  for (size_t n = 0; n <= sizeof in; n++) {
    for (size_t i = 0; i < n; i++)
      in[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
    size_t el = b64url_encode(in, n, enc);
    size_t dn;
    assert_int_equal(b64url_decode(enc, el, dec, &dn), 0);
    assert_int_equal(dn, n);
    assert_memory_equal(dec, in, n);
    if (el == 0) continue;
    char orig = enc[el - 1];
    int accepted = 0;
    for (int c = 0; c < 256; c++) {
      enc[el - 1] = (char)c;
      if (b64url_decode(enc, el, dec, &dn) == 0 && dn == n &&
          memcmp(dec, in, n) == 0)
        accepted++;
    }
    enc[el - 1] = orig;
    assert_int_equal(accepted, 1);
  }
}

static void test_err_codes(void **state) {
  /* The exact strings of docs/protocol.md 1.1. */
  assert_string_equal(jwt_err_code(JWT_EMALFORMED), "token_malformed");
  assert_string_equal(jwt_err_code(JWT_EALG), "token_alg");
  assert_string_equal(jwt_err_code(JWT_ESIGNATURE), "token_signature");
  assert_string_equal(jwt_err_code(JWT_EEXPIRED), "token_expired");
  assert_string_equal(jwt_err_code(JWT_ENOTYET), "token_not_yet_valid");
  assert_string_equal(jwt_err_code(JWT_EAUDIENCE), "token_audience");
  assert_string_equal(jwt_err_code(JWT_ECLAIMS), "token_claims");
  assert_string_equal(jwt_err_code(JWT_ETOOLARGE), "token_too_large");
  assert_string_equal(jwt_err_code(JWT_ENOMEM), "internal");
  assert_string_equal(jwt_err_code(12345), "internal");
  assert_string_equal(jwt_strerror(JWT_EEXPIRED), "token expired");
  for (int e = JWT_OK; e >= JWT_ENOMEM - 1; e--)
    assert_non_null(jwt_strerror(e));
}

/* jwt_sign_hs256 produces what jwt_verify accepts, and exactly the token an
 * independent implementation (Python hmac + base64) produced for the same
 * input: the header is fixed and the payload is used byte for byte. */
static void test_sign_roundtrip(void **state) {
  const char *claims = "{\"sub\":\"alice\",\"exp\":1700003600}";
  char *tok =
      jwt_sign_hs256((const uint8_t *)SECRET, sizeof SECRET - 1, claims);
  assert_non_null(tok);
  assert_string_equal(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                           "eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0."
                           "uSkvgaXUT3AxEzvuiERilLd97hPh_88EjWJQvQk4wUc");
  jwt_config_t cfg = cfg_default();
  jwt_claims_t c;
  assert_int_equal(verify(&cfg, tok, &c), JWT_OK);
  assert_string_equal(c.sub, "alice");
  assert_true(c.exp == 1700003600);
  jwt_claims_free(&c);
  free(tok);

  /* A richer payload, with unicode, watch and meta. */
  tok = jwt_sign_hs256((const uint8_t *)SECRET, sizeof SECRET - 1,
                       "{\"sub\":\"zoë\",\"exp\":1700003600,\"watch\":"
                       "[\"bob\"],\"meta\":{\"a\":1}}");
  assert_non_null(tok);
  assert_int_equal(verify(&cfg, tok, &c), JWT_OK);
  assert_string_equal(c.sub, "zoë");
  assert_int_equal(c.n_watch, 1);
  assert_string_equal(c.watch[0], "bob");
  assert_string_equal(c.meta, "{\"a\":1}");
  jwt_claims_free(&c);
  free(tok);

  /* meta as the signer wrote it, compact: a number a double does not hold
   * keeps its digits (cJSON's tree printed again made it
   * 1.2345678901234568e+18). Numbers as JSON writes them only: cJSON reads
   * 007, which other readers refuse. */
  tok = jwt_sign_hs256((const uint8_t *)SECRET, sizeof SECRET - 1,
                       "{\"sub\":\"zoe\",\"exp\":1700003600,\"meta\":{ \"id\" "
                       ": 1234567890123456789, \"s\":\"\\u00e9\"}}");
  assert_non_null(tok);
  assert_int_equal(verify(&cfg, tok, &c), JWT_OK);
  assert_string_equal(c.meta, "{\"id\":1234567890123456789,\"s\":\"\\u00e9\"}");
  jwt_claims_free(&c);
  free(tok);
  assert_null(jwt_sign_hs256((const uint8_t *)SECRET, sizeof SECRET - 1,
                             "{\"sub\":\"zoe\",\"meta\":{\"n\":007}}"));
  tok = make_token(HDR, "{\"sub\":\"zoe\",\"exp\":1700003600,\"meta\":{\"n\":007}}");
  assert_int_equal(verify(&cfg, tok, &c), JWT_EMALFORMED);
  free(tok);

  /* Another secret does not verify. */
  tok = jwt_sign_hs256((const uint8_t *)"other", 5, claims);
  assert_non_null(tok);
  assert_int_equal(verify(&cfg, tok, &c), JWT_ESIGNATURE);
  free(tok);
}

static void test_sign_refuses(void **state) {
  const uint8_t *s = (const uint8_t *)SECRET;
  size_t n = sizeof SECRET - 1;
  assert_null(jwt_sign_hs256(s, n, NULL));
  assert_null(jwt_sign_hs256(s, n, "not json"));
  assert_null(jwt_sign_hs256(s, n, "[1,2]"));       /* not an object */
  assert_null(jwt_sign_hs256(s, n, "{} trailing")); /* not one value */
  assert_null(jwt_sign_hs256(s, 0, "{}"));          /* no secret */
  assert_null(jwt_sign_hs256(NULL, 5, "{}"));
}

/* The length given is the token: a NUL inside it means the caller and a
 * C-string reader would disagree about what was verified. */
static void test_embedded_nul(void **state) {
  char *tok = make_token(HDR, "{\"sub\":\"alice\",\"exp\":1700003600}");
  size_t n = strlen(tok);
  jwt_config_t cfg = cfg_default();
  jwt_claims_t c;
  assert_int_equal(jwt_verify(&cfg, tok, n, NOW, &c), JWT_OK);
  jwt_claims_free(&c);
  /* The NUL terminator counted in the length. */
  assert_int_equal(jwt_verify(&cfg, tok, n + 1, NOW, &c), JWT_EMALFORMED);
  /* A valid token, a NUL, then garbage, all in the length. */
  char *buf = malloc(n + 8);
  assert_non_null(buf);
  memcpy(buf, tok, n);
  memcpy(buf + n, "\0.junk", 7);
  assert_int_equal(jwt_verify(&cfg, buf, n + 6, NOW, &c), JWT_EMALFORMED);
  /* A NUL replacing a character in the middle. */
  memcpy(buf, tok, n + 1);
  buf[10] = '\0';
  assert_int_equal(jwt_verify(&cfg, buf, n, NOW, &c), JWT_EMALFORMED);
  assert_null(c.sub);
  free(buf);
  free(tok);
}

/* Length is checked first and alone: a huge token costs nothing. */
static void test_too_large(void **state) {
  char *tok = make_token(HDR, "{\"sub\":\"alice\",\"exp\":1700003600}");
  size_t n = strlen(tok);
  jwt_config_t cfg = cfg_default();
  jwt_claims_t c;
  cfg.max_len = n;
  assert_int_equal(jwt_verify(&cfg, tok, n, NOW, &c), JWT_OK);
  jwt_claims_free(&c);
  cfg.max_len = n - 1;
  assert_int_equal(jwt_verify(&cfg, tok, n, NOW, &c), JWT_ETOOLARGE);
  free(tok);

  /* Default limit 4096: 4097 bytes of anything is too large, even garbage. */
  cfg = cfg_default();
  char *big = malloc(JWT_DEFAULT_MAX_LEN + 2);
  assert_non_null(big);
  memset(big, 'A', JWT_DEFAULT_MAX_LEN + 1);
  big[JWT_DEFAULT_MAX_LEN + 1] = '\0';
  assert_int_equal(jwt_verify(&cfg, big, JWT_DEFAULT_MAX_LEN + 1, NOW, &c),
                   JWT_ETOOLARGE);
  /* At the limit it is judged on content (here: no dots). */
  assert_int_equal(jwt_verify(&cfg, big, JWT_DEFAULT_MAX_LEN, NOW, &c),
                   JWT_EMALFORMED);
  free(big);
}

/* No proper prefix of a valid token verifies (the length is authoritative,
 * and a truncated signature is never accepted). */
static void test_prefixes(void **state) {
  char *tok = make_token(HDR, "{\"sub\":\"alice\",\"exp\":1700003600}");
  size_t n = strlen(tok);
  jwt_config_t cfg = cfg_default();
  jwt_claims_t c;
  for (size_t k = 0; k < n; k++) {
    int rc = jwt_verify(&cfg, tok, k, NOW, &c);
    assert_int_not_equal(rc, JWT_OK);
    assert_null(c.sub);
  }
  free(tok);
}

/* Exhaustive one-character mutation: every position of a valid token, every
 * byte value. None may verify; strict base64url is what makes this hold
 * for the last character of each part. */
static void test_mutations(void **state) {
  char *tok = make_token(HDR, "{\"sub\":\"alice\",\"exp\":1700003600,"
                              "\"watch\":[\"bob\"],\"meta\":{\"k\":\"v\"}}");
  size_t n = strlen(tok);
  jwt_config_t cfg = cfg_default();
  jwt_claims_t c;
  for (size_t i = 0; i < n; i++) {
    char orig = tok[i];
    for (int b = 1; b < 256; b++) {
      if (b == (unsigned char)orig) continue;
      tok[i] = (char)b;
      int rc = jwt_verify(&cfg, tok, n, NOW, &c);
      if (rc == JWT_OK) {
        jwt_claims_free(&c);
        fail_msg("mutation at %zu to 0x%02x verified", i, b);
      }
    }
    tok[i] = orig;
  }
  assert_int_equal(verify(&cfg, tok, &c), JWT_OK);
  jwt_claims_free(&c);
  free(tok);
}

/* Invalid UTF-8 in a correctly signed payload or header is malformed JSON
 * (the protocol says all JSON is UTF-8; meta is passed on as is). */
static void test_invalid_utf8(void **state) {
  static const char *const bad[] = {
      "\xff",             /* never valid */
      "\xc0\xaf",         /* overlong '/' */
      "\xe0\x80\xaf",     /* overlong '/' */
      "\xed\xa0\x80",     /* UTF-16 surrogate D800 */
      "\xf4\x90\x80\x80", /* above U+10FFFF */
      "\xc3",             /* truncated */
      "\x80",             /* lone continuation */
  };
  jwt_config_t cfg = cfg_default();
  jwt_claims_t c;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char p[128];
    snprintf(p, sizeof p,
             "{\"sub\":\"alice\",\"exp\":1700003600,\"meta\":{\"x\":\"%s\"}}",
             bad[i]);
    char *tok = make_token(HDR, p);
    assert_int_equal(verify(&cfg, tok, &c), JWT_EMALFORMED);
    free(tok);
    char h[128];
    snprintf(h, sizeof h, "{\"alg\":\"HS256\",\"kid\":\"%s\"}", bad[i]);
    tok = make_token(h, "{\"sub\":\"alice\",\"exp\":1700003600}");
    assert_int_equal(verify(&cfg, tok, &c), JWT_EMALFORMED);
    free(tok);
  }
  /* A NUL byte inside the decoded JSON (not the token) is malformed too. */
  static const char nul_p[] = "{\"sub\":\"alice\",\"exp\":1700003600}\0";
  char *tok =
      make_token_n(HDR, sizeof HDR - 1, nul_p, sizeof nul_p, SECRET, NULL);
  assert_int_equal(verify(&cfg, tok, &c), JWT_EMALFORMED);
  free(tok);
}

/* watch: exactly JWT_MAX_WATCH ids pass, one more is refused. */
static void test_watch_limit(void **state) {
  jwt_config_t cfg = cfg_default();
  cfg.max_len = 1 << 20;
  jwt_claims_t c;
  for (int extra = 0; extra <= 1; extra++) {
    size_t n = JWT_MAX_WATCH + (size_t)extra;
    char *p = malloc(n * 10 + 64);
    assert_non_null(p);
    size_t o = (size_t)sprintf(p, "{\"sub\":\"alice\",\"exp\":1700003600,"
                                  "\"watch\":[");
    for (size_t i = 0; i < n; i++)
      o += (size_t)sprintf(p + o, "%s\"u%zu\"", i ? "," : "", i);
    strcpy(p + o, "]}");
    char *tok = make_token(HDR, p);
    int rc = verify(&cfg, tok, &c);
    if (!extra) {
      assert_int_equal(rc, JWT_OK);
      assert_int_equal(c.n_watch, JWT_MAX_WATCH);
      assert_string_equal(c.watch[JWT_MAX_WATCH - 1], "u9999");
      jwt_claims_free(&c);
    } else {
      assert_int_equal(rc, JWT_ECLAIMS);
    }
    free(tok);
    free(p);
  }
}

/* meta: exactly JWT_MAX_META bytes once compact pass, one more is refused;
 * the limit applies to the compact form, not to the token's spelling. */
static void test_meta_limit(void **state) {
  jwt_config_t cfg = cfg_default();
  cfg.max_len = 1 << 16;
  jwt_claims_t c;
  /* {"k":"xxx..."} is 8 bytes plus the x's. */
  for (int extra = 0; extra <= 1; extra++) {
    size_t nx = JWT_MAX_META - 8 + (size_t)extra;
    char *p = malloc(nx + 200);
    assert_non_null(p);
    size_t o = (size_t)sprintf(p, "{\"sub\":\"alice\",\"exp\":1700003600,"
                                  "\"meta\" :  {  \"k\"  :  \"");
    memset(p + o, 'x', nx);
    strcpy(p + o + nx, "\"  }  }");
    char *tok = make_token(HDR, p);
    int rc = verify(&cfg, tok, &c);
    if (!extra) {
      assert_int_equal(rc, JWT_OK);
      assert_int_equal(strlen(c.meta), JWT_MAX_META);
      assert_memory_equal(c.meta, "{\"k\":\"xxx", 9);
      jwt_claims_free(&c);
    } else {
      assert_int_equal(rc, JWT_ECLAIMS);
    }
    free(tok);
    free(p);
  }
}

/* Extreme numbers and configs: no overflow (UBSan watches), no surprise. */
static void test_extremes(void **state) {
  jwt_config_t cfg = cfg_default();
  jwt_claims_t c;
  char *tok = make_token(HDR, "{\"sub\":\"alice\",\"exp\":1e300}");
  assert_int_equal(verify(&cfg, tok, &c), JWT_OK);
  assert_true(c.exp == INT64_MAX); /* clamped */
  jwt_claims_free(&c);
  free(tok);

  /* -1e300 clamps to INT64_MIN: expired whatever the leeway. */
  tok = make_token(HDR, "{\"sub\":\"alice\",\"exp\":-1e300}");
  cfg.leeway_s = INT64_MAX;
  assert_int_equal(verify(&cfg, tok, &c), JWT_EEXPIRED);
  free(tok);

  /* now - leeway saturates instead of overflowing. */
  tok = make_token(HDR, "{\"sub\":\"alice\",\"exp\":1699999990}");
  assert_int_equal(verify(&cfg, tok, &c), JWT_OK);
  jwt_claims_free(&c);
  assert_int_equal(jwt_verify(&cfg, tok, strlen(tok), INT64_MIN, &c), JWT_OK);
  jwt_claims_free(&c);
  cfg.leeway_s = -100; /* a negative leeway counts as 0 */
  assert_int_equal(verify(&cfg, tok, &c), JWT_EEXPIRED);
  free(tok);

  tok = make_token(HDR, "{\"sub\":\"alice\",\"exp\":1e300,\"nbf\":1e300}");
  cfg.leeway_s = INT64_MAX;
  assert_int_equal(jwt_verify(&cfg, tok, strlen(tok), INT64_MAX, &c), JWT_OK);
  jwt_claims_free(&c);
  free(tok);
}

/* An empty secret would let anyone sign (HMAC with an empty key is
 * computable by all): refused even for a token "signed" that way. */
static void test_empty_secret(void **state) {
  const char *si = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIiwiZXhwIjoxZTMwMH0";
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int ml = 0;
  assert_non_null(HMAC(EVP_sha256(), "", 0, (const unsigned char *)si,
                       strlen(si), mac, &ml));
  char *s = b64s(mac, ml);
  char tok[256];
  snprintf(tok, sizeof tok, "%s.%s", si, s);
  free(s);
  jwt_config_t cfg = cfg_default();
  cfg.secret = (const uint8_t *)"";
  cfg.secret_len = 0;
  jwt_claims_t c;
  assert_int_equal(verify(&cfg, tok, &c), JWT_ESIGNATURE);
  cfg.secret = NULL;
  assert_int_equal(verify(&cfg, tok, &c), JWT_ESIGNATURE);
}

/* cJSON allocation failures, injected through cJSON_InitHooks at every
 * allocation in turn: each run must end in JWT_OK, JWT_ENOMEM or (cJSON
 * cannot tell a parse failure from no memory) JWT_EMALFORMED, with the
 * claims empty on refusal and nothing leaked (LeakSanitizer checks). */
static long alloc_budget;
static void *failing_malloc(size_t n) {
  if (alloc_budget-- <= 0) return NULL;
  return malloc(n);
}

static void test_cjson_oom(void **state) {
  char *tok = make_token(HDR, "{\"sub\":\"alice\",\"exp\":1700003600,"
                              "\"aud\":[\"x\",\"presenced\"],\"watch\":"
                              "[\"b\",\"c\"],\"meta\":{\"k\":[1,{\"z\":"
                              "null}]}}");
  jwt_config_t cfg = cfg_default();
  cfg.audience = "presenced";
  jwt_claims_t c;
  int ok_seen = 0;
  for (long budget = 0; budget < 400 && !ok_seen; budget++) {
    cJSON_Hooks hooks = {failing_malloc, free};
    cJSON_InitHooks(&hooks);
    alloc_budget = budget;
    int rc = verify(&cfg, tok, &c);
    cJSON_InitHooks(NULL);
    if (rc == JWT_OK) {
      ok_seen = 1;
      assert_string_equal(c.meta, "{\"k\":[1,{\"z\":null}]}");
      jwt_claims_free(&c);
    } else {
      assert_true(rc == JWT_ENOMEM || rc == JWT_EMALFORMED);
      assert_null(c.sub);
      assert_null(c.watch);
      assert_null(c.meta);
    }
  }
  assert_true(ok_seen); /* the budget eventually sufficed */
  free(tok);
}

static void test_api_edges(void **state) {
  jwt_config_t cfg = cfg_default();
  jwt_claims_t c;
  assert_int_equal(jwt_verify(&cfg, NULL, 0, NOW, &c), JWT_EMALFORMED);
  assert_int_equal(jwt_verify(&cfg, "", 0, NOW, &c), JWT_EMALFORMED);
  assert_int_equal(jwt_verify(&cfg, "..", 2, NOW, &c), JWT_EMALFORMED);
  assert_int_equal(jwt_verify(NULL, "a.b.c", 5, NOW, &c), JWT_ENOMEM);
  assert_int_equal(jwt_verify(&cfg, "a.b.c", 5, NOW, NULL), JWT_ENOMEM);
  /* Freeing is idempotent and accepts NULL. */
  char *tok = make_token(HDR, "{\"sub\":\"alice\",\"exp\":1700003600,"
                              "\"watch\":[\"b\",\"c\"],\"meta\":{}}");
  assert_int_equal(verify(&cfg, tok, &c), JWT_OK);
  assert_string_equal(c.meta, "{}");
  jwt_claims_free(&c);
  jwt_claims_free(&c);
  jwt_claims_free(NULL);
  /* Claims left over in *out by the caller are not read (out is reset). */
  c.sub = (char *)"stale";
  assert_int_equal(verify(&cfg, "x.y.z", &c), JWT_EMALFORMED);
  assert_null(c.sub);
  free(tok);
}

int main(void) {
  const struct CMUnitTest c_tests[] = {
      cmocka_unit_test(test_b64_vectors),
      cmocka_unit_test(test_b64_strict),
      cmocka_unit_test(test_b64_roundtrip),
      cmocka_unit_test(test_err_codes),
      cmocka_unit_test(test_sign_roundtrip),
      cmocka_unit_test(test_sign_refuses),
      cmocka_unit_test(test_embedded_nul),
      cmocka_unit_test(test_too_large),
      cmocka_unit_test(test_prefixes),
      cmocka_unit_test(test_mutations),
      cmocka_unit_test(test_invalid_utf8),
      cmocka_unit_test(test_watch_limit),
      cmocka_unit_test(test_meta_limit),
      cmocka_unit_test(test_extremes),
      cmocka_unit_test(test_empty_secret),
      cmocka_unit_test(test_cjson_oom),
      cmocka_unit_test(test_api_edges),
  };
  int failed = cmocka_run_group_tests_name("jwt", c_tests, NULL, NULL);

  char *dir = data_dir();
  size_t n = 0;
  char **paths = list_cases(dir, &n);
  /* The data cases are the protocol's refusal table: at least 20 of them,
   * or the directory was not found. */
  if (!paths || n < 20) {
    fprintf(stderr,
            "test_srv_jwt: %zu cases in %s (need >= 20); set "
            "PRESENCE_SOURCE_DIR\n",
            n, dir);
    failed++;
  } else {
    struct CMUnitTest *t = calloc(n, sizeof *t);
    if (!t) return 1;
    for (size_t i = 0; i < n; i++) {
      const char *base = strrchr(paths[i], '/');
      t[i].name = base ? base + 1 : paths[i];
      t[i].test_func = run_case;
      t[i].initial_state = paths[i];
    }
    /* The group runner normally is a macro over a fixed array; the count
     * here is known only at run time, so call it directly. */
    failed += _cmocka_run_group_tests("jwt_data", t, n, NULL, NULL);
    free(t);
  }
  for (size_t i = 0; i < n; i++)
    free(paths[i]);
  free(paths);
  free(dir);
  return failed ? 1 : 0;
}
