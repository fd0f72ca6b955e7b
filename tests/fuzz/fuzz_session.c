/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for what an authenticated peer says once its WebSocket
 * is open: a client's messages (wsconn.c, wsmsg.c, channels.c, watch.c,
 * userstatus.c) or a backend's frames (backend.c, bmsg.c, origin.c), in a
 * conversation of several messages whose effects build on each other.
 *
 * fuzz_http reaches the same code, but only once the fuzzer has kept an
 * upgrade request, a signed token and masked frames intact; here the
 * harness does the upgrade (a token it signs for the fake clock, or the
 * API key and an origin name) and frames each message, so every mutation
 * lands in the conversation itself.
 *
 * Input: byte 0: bit 0 backend (1) or client (0); bits 1-2 which token or
 * origin; bits 3-7 the time between messages (in 25 ms steps: rate limits,
 * leases, expiry of what people set). Then the messages, separated by '\n'
 * (JSON needs none); a message whose first byte is below 0x10 is sent with
 * that opcode (ping, close, binary, ...) and the rest as its payload, any
 * other as a text frame. After the connection ends the clock jumps past
 * every grace and resume window and the housekeeping runs, so each input
 * starts from the same empty server.
 *
 * A bystander is connected first (open_observer): it watches the users
 * the conversations use and observes room:1 and lobby, so the peer's
 * messages reach another client.
 *
 * Checks, besides memory errors: what the server wrote after its 101 (to
 * the peer and to the bystander) is
 * whole unmasked frames; every text frame is one UTF-8 JSON object with a
 * string "type" and no raw control byte; a close frame carries no payload or a code and UTF-8
 * reason, and nothing follows it (backend.c's and wsconn.c's invariant).
 */
#include "server/jwt.h"
#include "server/server.h"
#include "server/ws.h"

#include "fuzz_sys.h"

#include <cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define API_KEY "fuzz-api-key-Yk3Qm9Tz5Rw1Hs7Lc2Vn8Bd4Jg6Pxa="
#define JWT_SECRET "q9Zb2Xr7Qk1mVt8Hc3Lw5Np0Ys6Jd4Fa+Ge9Ru2Ti7Oh1Kx5Bv3Mz8Cn0Pl6Ws4/"

static uv_loop_t loop;
static srv_t server;
static int ready;

/* The claims of the four clients, after "exp" (from the fake clock):
 * everything allowed, a narrower one with a device, a second session of
 * the first user, and a token about to expire (the refresh path). */
static const char *const CLAIMS[4] = {
    "\"sub\":\"alice\",\"watch\":\"*\",\"channels\":[\"*\"],"
    "\"observe\":\"*\",\"meta\":{\"name\":\"Alice\"}}",
    "\"sub\":\"bob\",\"watch\":[\"alice\",\"carol\"],"
    "\"channels\":[\"room:*\"],\"observe\":[\"lobby\"],\"device\":\"phone\"}",
    "\"sub\":\"alice\",\"channels\":[\"lobby\",\"room:1\"]}",
    "\"sub\":\"carol\",\"watch\":[\"bob\"]}",
};
static const char *const ORIGINS[4] = {"api-1", "api-2", "api-1", "worker"};

/* At exit, so LeakSanitizer reports only what a conversation really
 * leaked. */
static void teardown(void) {
  srv_shutdown(&server);
  uv_run(&loop, UV_RUN_DEFAULT);
  srv_free(&server);
  uv_loop_close(&loop);
}

static void setup(void) {
  if (uv_loop_init(&loop) != 0) abort();
  srv_config_t cfg;
  config_defaults(&cfg);
  cfg.log_level = PRESENCE_LOG_ERROR;
  cfg.api_key = API_KEY;
  cfg.jwt_secret = JWT_SECRET;
  /* Limits a few messages reach; frames large enough for a real batch. */
  cfg.max_frame = 4096;
  cfg.max_message = 8192;
  cfg.max_msgs_per_sec = 20;
  cfg.max_sessions_per_user = 2;
  cfg.max_watch = 5;
  cfg.max_write_queue = 1 << 20;
  cfg.log_capacity = 256;
  if (srv_init(&server, &loop, &cfg, &sys) != 0) abort();
  ready = 1;
  atexit(teardown);
}

/* One masked frame (clients must mask, RFC 6455 5.3), FIN set. */
static void put_frame(buf_t *b, unsigned op, const uint8_t *p, size_t n) {
  static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  uint8_t h[8];
  size_t hl = 0;
  h[hl++] = (uint8_t)(0x80 | op);
  if (n < 126) {
    h[hl++] = (uint8_t)(0x80 | n);
  } else {
    h[hl++] = 0x80 | 126;
    h[hl++] = (uint8_t)(n >> 8);
    h[hl++] = (uint8_t)n;
  }
  buf_append(b, h, hl);
  buf_append(b, key, 4);
  for (size_t i = 0; i < n; i++) {
    uint8_t x = p[i] ^ key[i % 4];
    buf_append(b, &x, 1);
  }
}

static void feed(conn_t *c, const char *p, size_t n) {
  /* A fresh copy each time, like the shared read buffer: nothing may
   * keep pointers into it. */
  char *copy = malloc(n ? n : 1);
  if (!copy) abort();
  memcpy(copy, p, n);
  conn_feed(c, copy, n);
  memset(copy, 0xEE, n);
  free(copy);
}

#define UPGRADE_TAIL                                                           \
  "Upgrade: websocket\r\nConnection: Upgrade\r\n"                              \
  "Sec-WebSocket-Version: 13\r\n"                                              \
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"

/* A bystander, connected before the conversation: it watches the users
 * the conversations use and observes their channels, so what one peer
 * sends reaches another (fanout.c, watch.c, channels.c's deliveries), and
 * what it receives is checked like the peer's own answers. */
static conn_t *open_observer(buf_t *out) {
  char claims[256], req[1024];
  snprintf(claims, sizeof claims,
           "{\"exp\":%lld,\"sub\":\"observer\",\"watch\":\"*\","
           "\"observe\":\"*\"}",
           (long long)(fake_wall(NULL) / 1000 + 3600));
  char *tok = jwt_sign_hs256((const uint8_t *)JWT_SECRET,
                             sizeof JWT_SECRET - 1, claims);
  if (!tok) abort();
  snprintf(req, sizeof req,
           "GET /v1/ws?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n" UPGRADE_TAIL,
           tok);
  free(tok);
  conn_t *c = conn_new_detached(&server, out);
  if (!c) abort();
  feed(c, req, strlen(req));
  if (out->len < 12 || memcmp(out->data, "HTTP/1.1 101", 12) != 0) abort();
  static const char *const msgs[] = {
      "{\"type\":\"subscribe\",\"users\":[\"alice\",\"bob\",\"carol\",\"u0\"]}",
      "{\"type\":\"observe\",\"channel\":\"room:1\"}",
      "{\"type\":\"observe\",\"channel\":\"lobby\"}"};
  buf_t f;
  buf_init(&f);
  for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
    f.len = 0;
    put_frame(&f, 1, (const uint8_t *)msgs[i], strlen(msgs[i]));
    feed(c, f.data, f.len);
  }
  buf_free(&f);
  return c;
}

/* The server's side of the conversation, after the 101's headers. */
static void check_frames(const uint8_t *p, size_t n) {
  const uint8_t *hdr_end = NULL;
  for (size_t i = 0; i + 4 <= n; i++)
    if (!memcmp(p + i, "\r\n\r\n", 4)) {
      hdr_end = p + i + 4;
      break;
    }
  if (!hdr_end) abort();
  const uint8_t *end = p + n;
  int closed = 0;
  for (p = hdr_end; p < end;) {
    if (closed) abort(); /* something after our close frame */
    if (end - p < 2) abort();
    unsigned op = p[0] & 0x0f;
    if ((p[0] & 0x70) || (p[1] & 0x80)) abort(); /* RSV bits, a mask */
    uint64_t len = p[1] & 0x7f;
    size_t hl = 2;
    if (len == 126) {
      if (end - p < 4) abort();
      len = (uint64_t)p[2] << 8 | p[3];
      hl = 4;
    } else if (len == 127) {
      if (end - p < 10) abort();
      len = 0;
      for (int i = 0; i < 8; i++)
        len = len << 8 | p[2 + i];
      hl = 10;
    }
    if (len > (uint64_t)(end - p) - hl) abort(); /* a cut frame */
    const uint8_t *pl = p + hl;
    uint32_t st = 0;
    switch (op) {
    case 1: {
      if (!(p[0] & 0x80)) abort(); /* the server sends whole messages */
      if (utf8_feed(&st, pl, (size_t)len) != 0 || !utf8_complete(st))
        abort();
      /* cJSON reads a raw control byte as whitespace; no JSON reader
       * must see one: the server writes compact JSON, escaped. */
      for (uint64_t i = 0; i < len; i++)
        if (pl[i] < 0x20) {
          fprintf(stderr, "a raw control byte: %.*s\n", (int)len, pl);
          abort();
        }
      cJSON *j = cJSON_ParseWithLength((const char *)pl, (size_t)len);
      if (!cJSON_IsObject(j) ||
          !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "type"))) {
        fprintf(stderr, "not a JSON message: %.*s\n", (int)len, pl);
        abort();
      }
      cJSON_Delete(j);
      break;
    }
    case 8:
      if (len == 1 || len > 125) abort();
      if (len >= 2 && (utf8_feed(&st, pl + 2, (size_t)len - 2) != 0 ||
                       !utf8_complete(st)))
        abort();
      closed = 1;
      break;
    case 9:
    case 10:
      if (len > 125) abort();
      break;
    default:
      abort();
    }
    p = pl + len;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!ready) setup();
  if (size < 1 || size > 65536) return 0;
  int backend = data[0] & 1;
  unsigned who = (data[0] >> 1) & 3;
  int64_t step = (int64_t)(data[0] >> 3) * 25;
  data++;
  size--;

  char upgrade[1024];
  if (backend) {
    snprintf(upgrade, sizeof upgrade,
             "GET /v1/backend?origin=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Authorization: Bearer " API_KEY "\r\n",
             ORIGINS[who]);
  } else {
    char claims[512];
    snprintf(claims, sizeof claims, "{\"exp\":%lld,%s",
             (long long)(fake_wall(NULL) / 1000 + (who == 3 ? 2 : 3600)),
             CLAIMS[who]);
    char *tok = jwt_sign_hs256((const uint8_t *)JWT_SECRET,
                               sizeof JWT_SECRET - 1, claims);
    if (!tok) abort();
    snprintf(upgrade, sizeof upgrade,
             "GET /v1/ws?token=%s%s HTTP/1.1\r\nHost: 127.0.0.1\r\n", tok,
             who == 2 ? "&status=idle" : "");
    free(tok);
  }
  strncat(upgrade, UPGRADE_TAIL, sizeof upgrade - strlen(upgrade) - 1);

  buf_t out, frame, obs_out;
  buf_init(&out);
  buf_init(&frame);
  buf_init(&obs_out);
  conn_t *obs = open_observer(&obs_out);
  conn_t *c = conn_new_detached(&server, &out);
  if (!c) abort();
  feed(c, upgrade, strlen(upgrade));
  /* The upgrade must have been taken: anything else is the harness's
   * mistake (a token the server refuses), not a finding. */
  if (out.len < 12 || memcmp(out.data, "HTTP/1.1 101", 12) != 0) abort();

  const uint8_t *p = data, *end = data + size;
  while (p <= end && !c->closing) {
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    const uint8_t *e = nl ? nl : end;
    unsigned op = 1;
    const uint8_t *m = p;
    if (m < e && *m < 0x10) op = *m++;
    if (m < e || op != 1) {
      frame.len = 0;
      put_frame(&frame, op, m, (size_t)(e - m));
      feed(c, frame.data, frame.len);
    }
    mono += step;
    if (step) {
      presence_tick(server.p);
      origin_housekeeping(&server, mono);
    }
    if (!nl) break;
    p = nl + 1;
  }
  /* A detached connection writes at once; conn_free_detached may add the
   * close frame of a connection that ends here. */
  conn_free_detached(c);
  check_frames((const uint8_t *)out.data, out.len);
  conn_free_detached(obs);
  if (getenv("FUZZ_SESSION_DUMP")) { /* for a look at a conversation */
    fwrite(out.data, 1, out.len, stderr);
    fwrite(obs_out.data, 1, obs_out.len, stderr);
  }
  check_frames((const uint8_t *)obs_out.data, obs_out.len);
  buf_free(&obs_out);
  buf_free(&frame);
  buf_free(&out);

  /* Past every window (offline grace, origin resume, TTLs, set
   * messages), so the next input meets an empty server. */
  mono += 24 * 3600 * 1000;
  presence_tick(server.p);
  origin_housekeeping(&server, mono);
  uv_run(&loop, UV_RUN_NOWAIT); /* the origins' reaping timer */
  return 0;
}
