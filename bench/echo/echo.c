/* SPDX-License-Identifier: MIT */
/*
 * bench/echo: the network baseline for presenced's figures.
 *
 * The least a WebSocket server on libuv can do: accept, read the upgrade
 * request, answer 101 with the RFC 6455 accept key and one text frame the
 * size and shape of presenced's `welcome`, then send every text or binary
 * frame back unmasked, answer pings and close handshakes. No JSON, no auth,
 * no state. The welcome is there so that a client sees the same frames from
 * both servers: 101 + welcome, then its `subscribe` answered by one frame
 * (presenced's snapshot, the echo here), so a connect storm or an idle
 * connection costs both the same network work. One loop on one thread, the same listen backlog (4096) and
 * TCP_NODELAY as presenced, writes through uv_try_write/uv_write as a server
 * on libuv would do them, so the load generator's figures against it are
 * the ceiling that the kernel, loopback and libuv allow on this machine.
 *
 * --same-frames: the answers are presenced's sizes too. A status change is
 * answered with a frame the shape and size of the `presence` change
 * presenced sends the watcher (~270 bytes against the ~35 of the status
 * frame echoed), a subscribe with one the size of its snapshot: the client
 * then reads the same bytes from both servers, and the echo's kernel pays
 * for them. The payload is a constant; telling a status frame from the
 * others is one substring search of the frame, no JSON.
 *
 * --relay (with --same-frames): a status change's answer goes where
 * presenced's goes, to the watcher's connection, not back on the socket it
 * came in on. The load generator (presence_load --relay 1) names each
 * connection's place in its ring in the upgrade's query (relay=<i>/<n>;
 * connection i watches i + 1), and the answers one read makes go out in
 * one write to that neighbour, as presenced writes a connection's frames
 * of one loop turn together.
 *
 * Usage: presence_echo [--listen 127.0.0.1:7071] [--coalesce] [--same-frames]
 *                      [--relay]
 */
#define _GNU_SOURCE /* memmem */
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <uv.h>

#define MAX_HEADER 8192
#define MAX_FRAME (1u << 20)

typedef struct client {
  uv_tcp_t tcp;
  int upgraded;
  int closing;
  long ring_i, ring_n; /* --relay: its place in the generator's ring, or -1 */
  size_t len, cap;
  unsigned char *buf;
} client_t;

typedef struct wreq {
  uv_write_t req;
  unsigned char data[];
} wreq_t;

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sigint, sigterm;
static int relay;
/* --relay: the clients by their place in the ring, and the answers of the
 * read being handled, bound for one neighbour. */
static client_t **ring;
static size_t ring_cap;
static client_t *rtarget;
static unsigned char *rout;
static size_t rlen, rcap;

static void on_closed(uv_handle_t *h) {
  client_t *c = h->data;
  if (c->ring_i >= 0 && (size_t)c->ring_i < ring_cap && ring[c->ring_i] == c)
    ring[c->ring_i] = NULL;
  free(c->buf);
  free(c);
}

static void raw_write(client_t *c, const unsigned char *p, size_t n);

/* --coalesce: what one read makes a client send (the 101 and the welcome,
 * the echoes of every frame in the read) goes out in one write at the end
 * of the read, as presenced writes a connection's frames of one loop turn
 * together; without it, one write per frame (presenced before it
 * coalesced). */
static int coalesce;
static int same_frames;

/* presenced's frames for user u500 at a version of 4 digits and a sequence
 * number of 16 (the embedded store numbers a run's events from its start
 * time in microseconds, cf3ef38), one status of the two (an online change
 * is 2 bytes longer, an idle one as much shorter than the middle). */
static const char change_frame[] =
    "{\"type\":\"presence\",\"snapshot\":false,\"users\":[{\"user_id\":"
    "\"u500\",\"change\":\"status\",\"status\":\"idle\",\"availability\":"
    "\"auto\",\"from\":\"online\",\"since\":1796592542664,\"last_seen\":"
    "1796592542664,\"device\":\"web\",\"device_status\":\"idle\",\"reason\":"
    "\"explicit\",\"version\":2000,\"seq\":1796659000200000}]}";
static const char snapshot_frame[] =
    "{\"type\":\"presence\",\"snapshot\":true,\"users\":[{\"user_id\":"
    "\"u500\",\"status\":\"online\",\"availability\":\"auto\",\"since\":"
    "1796592542664,\"last_seen\":1796592542664,\"last_active\":"
    "1796592542664,\"version\":1,\"message\":null,\"devices\":{\"web\":"
    "\"online\"}}]}";
static client_t *corked;
static unsigned char *obuf;
static size_t olen, ocap;

static void uncork(client_t *c) {
  if (corked != c) return;
  corked = NULL;
  size_t n = olen;
  olen = 0;
  if (n && !c->closing) raw_write(c, obuf, n);
}

static void relay_flush(void) {
  client_t *t = rtarget;
  size_t n = rlen;
  rtarget = NULL;
  rlen = 0;
  if (t && n && !t->closing) raw_write(t, rout, n);
}

static void client_close(client_t *c) {
  uncork(c); /* a close frame or a 400 still goes out */
  if (rtarget == c) relay_flush();
  if (c->closing) return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_write(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void client_write(client_t *c, const unsigned char *p, size_t n) {
  if (corked == c) {
    if (olen + n > ocap) {
      size_t cap = ocap ? ocap : 4096;
      while (cap < olen + n)
        cap *= 2;
      unsigned char *b = realloc(obuf, cap);
      if (!b) {
        client_close(c);
        return;
      }
      obuf = b;
      ocap = cap;
    }
    memcpy(obuf + olen, p, n);
    olen += n;
    return;
  }
  raw_write(c, p, n);
}

static void raw_write(client_t *c, const unsigned char *p, size_t n) {
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
  int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (w == (int)n) return;
  if (w < 0 && w != UV_EAGAIN) {
    client_close(c);
    return;
  }
  if (w < 0) w = 0;
  wreq_t *r = malloc(sizeof *r + n - (size_t)w);
  if (!r) {
    client_close(c);
    return;
  }
  memcpy(r->data, p + w, n - (size_t)w);
  b = uv_buf_init((char *)r->data, (unsigned)(n - (size_t)w));
  if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    free(r);
    client_close(c);
  }
}

/* An unmasked server frame carrying p[0..n) at f (n + 10 bytes at most):
 * its length. */
static size_t frame_put(unsigned char *f, int op, const unsigned char *p,
                        size_t n) {
  size_t h = 0;
  f[h++] = (unsigned char)(0x80 | op);
  if (n < 126) {
    f[h++] = (unsigned char)n;
  } else if (n < 65536) {
    f[h++] = 126;
    f[h++] = (unsigned char)(n >> 8);
    f[h++] = (unsigned char)n;
  } else {
    f[h++] = 127;
    for (int i = 7; i >= 0; i--)
      f[h++] = (unsigned char)((uint64_t)n >> (8 * i));
  }
  memcpy(f + h, p, n);
  return h + n;
}

static void send_frame(client_t *c, int op, const unsigned char *p, size_t n) {
  unsigned char stackbuf[1024];
  unsigned char *f = n + 10 <= sizeof stackbuf ? stackbuf : malloc(n + 10);
  if (!f) return;
  client_write(c, f, frame_put(f, op, p, n));
  if (f != stackbuf) free(f);
}

/* --relay: a text frame bound for t, gathered with the read's others for
 * it (all for one neighbour: the sender's watcher) and written when the
 * read is done, whether or not --coalesce gathers the read's own. */
static void relay_send(client_t *t, const unsigned char *p, size_t n) {
  if (rtarget != t) relay_flush();
  rtarget = t;
  if (rlen + n + 10 > rcap) {
    size_t cap = rcap ? rcap : 4096;
    while (cap < rlen + n + 10)
      cap *= 2;
    unsigned char *nb = realloc(rout, cap);
    if (!nb) return;
    rout = nb;
    rcap = cap;
  }
  rlen += frame_put(rout + rlen, 1, p, n);
}

/* The neighbour a status change of c is answered to: the connection that
 * watches it (c's place less one, around the ring), or c itself. */
static client_t *watcher_of(client_t *c) {
  if (!relay || c->ring_i < 0 || c->ring_n <= 0) return c;
  size_t w = (size_t)((c->ring_i + c->ring_n - 1) % c->ring_n);
  client_t *t = w < ring_cap ? ring[w] : NULL;
  return t && !t->closing ? t : c;
}

/* The relay=<i>/<n> of the upgrade's request line, if any. */
static void ring_join(client_t *c, const char *req, size_t n) {
  const char *eol = memchr(req, '\r', n);
  const char *q = memmem(req, eol ? (size_t)(eol - req) : n, "relay=", 6);
  long i, k;
  if (!q || sscanf(q + 6, "%ld/%ld", &i, &k) != 2 || i < 0 || k <= 0 ||
      i >= k || k > 10000000)
    return;
  if ((size_t)i >= ring_cap) {
    size_t cap = ring_cap ? ring_cap : 1024;
    while (cap <= (size_t)i)
      cap *= 2;
    client_t **nr = realloc(ring, cap * sizeof *nr);
    if (!nr) return;
    memset(nr + ring_cap, 0, (cap - ring_cap) * sizeof *nr);
    ring = nr;
    ring_cap = cap;
  }
  ring[i] = c;
  c->ring_i = i;
  c->ring_n = k;
}

/* Sec-WebSocket-Accept: base64(SHA-1(key + the RFC 6455 GUID)). */
static int accept_key(const char *key, size_t klen, char out[64]) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  char in[128];
  if (klen + sizeof guid > sizeof in) return -1;
  memcpy(in, key, klen);
  memcpy(in + klen, guid, sizeof guid - 1);
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1((const unsigned char *)in, klen + sizeof guid - 1, md);
  EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
  return 0;
}

static const char *find_header(const char *req, size_t n, const char *name,
                               size_t *vlen) {
  size_t k = strlen(name);
  for (size_t i = 0; i + k + 2 < n; i++) {
    if ((i == 0 || req[i - 1] == '\n') && strncasecmp(req + i, name, k) == 0 &&
        req[i + k] == ':') {
      const char *v = req + i + k + 1;
      while (*v == ' ')
        v++;
      const char *e = v;
      while (e < req + n && *e != '\r')
        e++;
      *vlen = (size_t)(e - v);
      return v;
    }
  }
  return NULL;
}

/* Returns bytes consumed, 0 when more input is needed, -1 to drop. */
static long handle_upgrade(client_t *c) {
  const char *req = (const char *)c->buf;
  const char *end = NULL;
  for (size_t i = 0; i + 3 < c->len; i++)
    if (memcmp(req + i, "\r\n\r\n", 4) == 0) {
      end = req + i + 4;
      break;
    }
  if (!end) return c->len > MAX_HEADER ? -1 : 0;
  size_t klen;
  const char *key =
      find_header(req, (size_t)(end - req), "Sec-WebSocket-Key", &klen);
  char acc[64];
  if (!key || accept_key(key, klen, acc) != 0) {
    static const char bad[] =
        "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    client_write(c, (const unsigned char *)bad, sizeof bad - 1);
    return -1;
  }
  char resp[256];
  int n = snprintf(resp, sizeof resp,
                   "HTTP/1.1 101 Switching Protocols\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\n\r\n",
                   acc);
  client_write(c, (const unsigned char *)resp, (size_t)n);
  if (relay) ring_join(c, req, (size_t)(end - req));
  /* presenced's welcome, with a session id of the same length (a UUID). */
  static const char welcome[] =
      "{\"type\":\"welcome\",\"protocol\":1,\"session_id\":"
      "\"00000000-0000-4000-8000-000000000000\",\"user_id\":\"u0000000\","
      "\"heartbeat_ms\":25000,\"timeout_ms\":60000}";
  send_frame(c, 1, (const unsigned char *)welcome, sizeof welcome - 1);
  c->upgraded = 1;
  return end - req;
}

/* Frames from the client: masked (RFC 6455 5.1), unmasked in place. */
static long handle_frames(client_t *c, size_t off) {
  while (!c->closing) {
    unsigned char *p = c->buf + off;
    size_t avail = c->len - off;
    if (avail < 2) break;
    int op = p[0] & 0x0f;
    if (!(p[1] & 0x80)) return -1;
    uint64_t n = p[1] & 0x7f;
    size_t h = 2;
    if (n == 126) {
      if (avail < 4) break;
      n = (uint64_t)p[2] << 8 | p[3];
      h = 4;
    } else if (n == 127) {
      if (avail < 10) break;
      n = 0;
      for (int i = 0; i < 8; i++)
        n = n << 8 | p[2 + i];
      h = 10;
    }
    if (n > MAX_FRAME) return -1;
    if (avail < h + 4 + n) break;
    unsigned char *mask = p + h, *data = p + h + 4;
    for (size_t i = 0; i < n; i++)
      data[i] ^= mask[i & 3];
    switch (op) {
    case 1:
      if (same_frames && memmem(data, n, "\"type\":\"status\"", 15)) {
        client_t *t = watcher_of(c);
        if (t != c)
          relay_send(t, (const unsigned char *)change_frame,
                     sizeof change_frame - 1);
        else
          send_frame(c, 1, (const unsigned char *)change_frame,
                     sizeof change_frame - 1);
        break;
      }
      if (same_frames && memmem(data, n, "\"type\":\"subscribe\"", 18)) {
        send_frame(c, 1, (const unsigned char *)snapshot_frame,
                   sizeof snapshot_frame - 1);
        break;
      }
      /* fall through */
    case 0:
    case 2:
      send_frame(c, op, data, (size_t)n);
      break;
    case 9:
      send_frame(c, 10, data, (size_t)n);
      break;
    case 10:
      break;
    case 8:
      send_frame(c, 8, data, n >= 2 ? 2 : 0);
      return -1;
    default:
      return -1;
    }
    off += h + 4 + (size_t)n;
  }
  return (long)off;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  client_t *c = h->data;
  (void)suggested;
  if (c->cap - c->len < 2048) {
    size_t cap = c->cap ? c->cap * 2 : 4096;
    unsigned char *n = realloc(c->buf, cap);
    if (!n) {
      *buf = uv_buf_init(NULL, 0);
      return;
    }
    c->buf = n;
    c->cap = cap;
  }
  *buf = uv_buf_init((char *)c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void read_client(client_t *c, ssize_t nread);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  client_t *c = s->data;
  (void)buf;
  if (coalesce) corked = c;
  read_client(c, nread);
  uncork(c);
  relay_flush();
}

static void read_client(client_t *c, ssize_t nread) {
  if (nread < 0) {
    client_close(c);
    return;
  }
  c->len += (size_t)nread;
  long off = 0;
  if (!c->upgraded) {
    off = handle_upgrade(c);
    if (off <= 0) {
      if (off < 0) client_close(c);
      return;
    }
  }
  off = handle_frames(c, (size_t)off);
  if (off < 0) {
    client_close(c);
    return;
  }
  memmove(c->buf, c->buf + off, c->len - (size_t)off);
  c->len -= (size_t)off;
  if (c->len == 0) {
    /* An idle connection holds no buffer, as a lean server's should, so
     * the memory baseline is the socket and the handle, not our slack. */
    free(c->buf);
    c->buf = NULL;
    c->cap = 0;
  }
}

static void on_connection(uv_stream_t *srv, int status) {
  if (status < 0) return;
  client_t *c = calloc(1, sizeof *c);
  if (!c) return;
  c->ring_i = -1;
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
    client_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)signum;
  (void)s;
  uv_stop(loop);
}

int main(int argc, char **argv) {
  const char *listen_at = "127.0.0.1:7071";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
      listen_at = argv[++i];
    } else if (!strcmp(argv[i], "--coalesce")) {
      coalesce = 1;
    } else if (!strcmp(argv[i], "--same-frames")) {
      same_frames = 1;
    } else if (!strcmp(argv[i], "--relay")) {
      relay = 1;
    } else {
      fprintf(stderr, "usage: presence_echo [--listen HOST:PORT] [--coalesce] "
                      "[--same-frames] [--relay]\n");
      return 2;
    }
  }
  char host[64];
  const char *colon = strrchr(listen_at, ':');
  if (!colon || (size_t)(colon - listen_at) >= sizeof host) return 2;
  memcpy(host, listen_at, (size_t)(colon - listen_at));
  host[colon - listen_at] = '\0';
  struct sockaddr_in addr;
  if (uv_ip4_addr(host, atoi(colon + 1), &addr) != 0) return 2;

  /* As presenced does: the soft descriptor limit up to the hard one. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  signal(SIGPIPE, SIG_IGN);
  loop = uv_default_loop();
  uv_tcp_init(loop, &server);
  int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&server, 4096, on_connection);
  if (rc != 0) {
    fprintf(stderr, "presence_echo: cannot listen on %s: %s\n", listen_at,
            uv_strerror(rc));
    return 1;
  }
  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  fprintf(stderr, "presence_echo: listening on %s\n", listen_at);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
