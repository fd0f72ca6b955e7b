/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for presenced's HTTP request handling: the bytes a
 * client sends on a fresh connection go through conn_feed, exactly as the
 * read callback passes them (http-parser, limits, routing, the backend API,
 * the WebSocket upgrade and the frames after it, event streams, metrics and
 * demo mode), on a detached connection whose answers land in a buffer.
 *
 * Input: byte 0 picks the server (demo mode or not) and how the rest is cut
 * into reads. The server's clocks are fixed (wall time 1700000000 s), so the
 * seed tokens, signed for that time, stay valid.
 */
#include "server/server.h"

#include "fuzz_sys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uv_loop_t loop;
static srv_t servers[2];
static char webroot[] = "/tmp/presenced-fuzz-web-XXXXXX";

/* At exit, so LeakSanitizer reports only what a request really leaked. */
static void teardown(void) {
  for (int i = 0; i < 2; i++)
    srv_shutdown(&servers[i]);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (int i = 0; i < 2; i++)
    srv_free(&servers[i]);
  uv_loop_close(&loop);
  char path[sizeof webroot + 16];
  snprintf(path, sizeof path, "%s/index.html", webroot);
  unlink(path);
  rmdir(webroot);
}

static void setup(void) {
  if (uv_loop_init(&loop) != 0) abort();
  if (!mkdtemp(webroot)) abort();
  char path[sizeof webroot + 16];
  snprintf(path, sizeof path, "%s/index.html", webroot);
  FILE *f = fopen(path, "w");
  if (!f) abort();
  fputs("<!doctype html><title>fuzz</title>\n", f);
  fclose(f);
  for (int i = 0; i < 2; i++) {
    srv_config_t cfg;
    config_defaults(&cfg);
    cfg.log_level = PRESENCE_LOG_ERROR;
    /* Secrets of the lengths presenced accepts (32 bytes or more,
     * config.c) and the docs make (openssl rand -base64 32 and 48). */
    cfg.api_key = "fuzz-api-key-Yk3Qm9Tz5Rw1Hs7Lc2Vn8Bd4Jg6Pxa=";
    cfg.jwt_secret =
        "q9Zb2Xr7Qk1mVt8Hc3Lw5Np0Ys6Jd4Fa+Ge9Ru2Ti7Oh1Kx5Bv3Mz8Cn0Pl6Ws4/";
    cfg.demo = i;
    cfg.web_root = webroot;
    /* Small limits, so short inputs reach them. */
    cfg.max_header_bytes = 1024;
    cfg.max_body = 4096;
    cfg.max_frame = 256;
    cfg.max_message = 1024;
    cfg.max_msgs_per_sec = 50;
    cfg.max_sessions_per_user = 2;
    cfg.max_watch = 5;
    cfg.max_write_queue = 1 << 20;
    cfg.log_capacity = 256;
    if (srv_init(&servers[i], &loop, &cfg, &sys) != 0) abort();
  }
  atexit(teardown);
}

/* Every answer on a fresh connection starts with a status line. Up to a
 * WebSocket's 101 (frames are binary after it) the answers are text:
 * headers, JSON, event streams, metrics, the demo's files; a raw control
 * byte there other than tab, CR and LF is a value passed on unescaped
 * (JSON that readers refuse, or an event stream cut apart). */
static void check_answer(const buf_t *out) {
  if (out->len == 0) return;
  if (out->len < 12 || memcmp(out->data, "HTTP/1.1 ", 9) != 0) abort();
  int status = atoi(out->data + 9);
  if (status < 100 || status > 599) abort();
  for (size_t i = 0; i < out->len; i++) {
    unsigned char ch = (unsigned char)out->data[i];
    if (ch == 'H' && out->len - i >= 12 &&
        !memcmp(out->data + i, "HTTP/1.1 101", 12))
      break;
    if (ch < 0x20 && ch != '\t' && ch != '\r' && ch != '\n') {
      fprintf(stderr, "a raw control byte at %zu: %.*s\n", i,
              (int)(out->len - i < 300 ? out->len - i : 300), out->data + i);
      abort();
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!loop.data && !servers[0].p) setup();
  if (size < 1) return 0;
  srv_t *s = &servers[data[0] & 1];
  unsigned split = data[0] >> 1;
  data++;
  size--;
  buf_t out;
  buf_init(&out);
  conn_t *c = conn_new_detached(s, &out);
  if (!c) return 0;
  /* Reads as the kernel may cut them: whole, small fixed, or ragged. The
   * bytes are copied to a fresh buffer each time, like the shared read
   * buffer, so nothing may keep pointers into them. */
  size_t off = 0;
  unsigned seed = split + 1;
  char *piece = malloc(size ? size : 1);
  if (!piece) abort();
  while (off < size && !c->closing) {
    size_t n = size - off;
    if (split & 64) {
      seed = seed * 1103515245u + 12345u;
      n = 1 + (seed >> 16) % (1 + (split & 63));
    } else if (split & 63) {
      n = split & 63;
    }
    if (n > size - off) n = size - off;
    memcpy(piece, data + off, n);
    conn_feed(c, piece, n);
    memset(piece, 0xEE, n); /* stale pointers read garbage, not the input */
    off += n;
    mono += 1;
  }
  free(piece);
  check_answer(&out);
  conn_free_detached(c);
  buf_free(&out);
  /* Ended sessions leave deadlines (offline grace, log); let them run. */
  mono += 10;
  presence_tick(s->p);
  return 0;
}
