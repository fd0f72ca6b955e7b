/* SPDX-License-Identifier: MIT */
/*
 * A backend driver for presenced's backend session connection
 * (GET /v1/backend, docs/protocol.md section 5): plain sockets, one thread
 * per connection, batches pipelined a few deep, acks checked. Run by
 * bench/backend/run.py, which starts presenced, reads its RSS and events
 * and prints the figures of docs/benchmarks.md.
 *
 *   bench_backend PORT KEY hold SESSIONS CONNS      open SESSIONS over CONNS
 *                                                   origins, keep them open
 *                                                   until stdin closes
 *   bench_backend PORT KEY reassert SESSIONS        open them on one origin,
 *                                                   drop the connection,
 *                                                   reconnect and sync the
 *                                                   same list: time it
 *   bench_backend PORT KEY ops SECONDS CONNS        open/status/close cycles
 *                                                   as fast as acks come
 *
 * Every result is one line of JSON on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 1000 /* ops per frame */
#define DEPTH 8    /* frames in flight per connection */

static int port;
static const char *key;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "bench_backend: %s\n", what);
  exit(1);
}

typedef struct conn {
  int fd;
  char *in;
  size_t in_len, in_cap;
  char *out;
  size_t out_cap;
} conn_t;

static void write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) die("write failed");
    p += w;
    n -= (size_t)w;
  }
}

static conn_t *dial(const char *origin) {
  conn_t *c = calloc(1, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char req[512];
  int n = snprintf(req, sizeof req,
                   "GET /v1/backend?origin=%s HTTP/1.1\r\nHost: x\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
                   origin, key);
  write_all(c->fd, req, (size_t)n);
  c->in_cap = 1 << 16;
  c->in = malloc(c->in_cap);
  /* The head, byte by byte up to the blank line (frames may follow). */
  size_t hl = 0;
  while (hl < 4 || memcmp(c->in + hl - 4, "\r\n\r\n", 4)) {
    if (read(c->fd, c->in + hl, 1) != 1) die("upgrade: connection closed");
    if (++hl >= c->in_cap) die("upgrade: head too long");
  }
  if (strncmp(c->in, "HTTP/1.1 101", 12)) die("upgrade refused");
  c->out_cap = 1 << 20;
  c->out = malloc(c->out_cap);
  return c;
}

static void hangup(conn_t *c) {
  close(c->fd);
  free(c->in);
  free(c->out);
  free(c);
}

/* One masked text frame (mask key 0: the payload goes as it is). */
static void send_text(conn_t *c, const char *p, size_t n) {
  uint8_t h[14];
  size_t hl;
  h[0] = 0x81;
  if (n < 126) {
    h[1] = 0x80 | (uint8_t)n;
    hl = 2;
  } else if (n < 65536) {
    h[1] = 0x80 | 126;
    h[2] = (uint8_t)(n >> 8);
    h[3] = (uint8_t)n;
    hl = 4;
  } else {
    h[1] = 0x80 | 127;
    for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    hl = 10;
  }
  memset(h + hl, 0, 4);
  write_all(c->fd, (const char *)h, hl + 4);
  write_all(c->fd, p, n);
}

/* The next text frame's payload (NUL-terminated, valid until the next
 * call); answers pings. */
static char *recv_text(conn_t *c) {
  for (;;) {
    if (c->in_len >= 2) {
      uint8_t *b = (uint8_t *)c->in;
      size_t n = b[1] & 0x7f, hl = 2;
      if (n == 126 && c->in_len >= 4) {
        n = (size_t)b[2] << 8 | b[3];
        hl = 4;
      } else if (n == 127 && c->in_len >= 10) {
        n = 0;
        for (int i = 0; i < 8; i++) n = n << 8 | b[2 + i];
        hl = 10;
      } else if (n >= 126) {
        n = SIZE_MAX;
      }
      if (n != SIZE_MAX && c->in_len >= hl + n) {
        int op = b[0] & 0xf;
        static __thread char *tframe; /* the frame returned last time */
        free(tframe);
        tframe = malloc(n + 1);
        memcpy(tframe, c->in + hl, n);
        tframe[n] = 0;
        memmove(c->in, c->in + hl + n, c->in_len - hl - n);
        c->in_len -= hl + n;
        if (op == 0x1) return tframe;
        if (op == 0x9) { /* ping: pong with the same payload */
          uint8_t h[6] = {0x8a, (uint8_t)(0x80 | n), 0, 0, 0, 0};
          write_all(c->fd, (const char *)h, 6);
          write_all(c->fd, tframe, n);
        } else if (op == 0x8) {
          die("the server closed the connection");
        }
        continue;
      }
    }
    if (c->in_len == c->in_cap) {
      c->in_cap *= 2;
      c->in = realloc(c->in, c->in_cap);
    }
    ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (r <= 0) die("read failed");
    c->in_len += (size_t)r;
  }
}

/* Read one ack; returns its applied count (dies on an error frame or a
 * refused op). */
static long recv_ack(conn_t *c) {
  char *m;
  while (!strstr(m = recv_text(c), "\"type\":\"ack\"")) {
    if (strstr(m, "\"type\":\"error\"")) {
      fprintf(stderr, "bench_backend: %s\n", m);
      exit(1);
    }
  }
  if (strstr(m, "\"errors\"")) {
    fprintf(stderr, "bench_backend: refused ops: %.300s\n", m);
    exit(1);
  }
  const char *a = strstr(m, "\"applied\":");
  return a ? strtol(a + 10, NULL, 10) : 0;
}

/* ---- frames ------------------------------------------------------------- */

static size_t open_frame(char *buf, size_t cap, const char *type, uint64_t seq,
                         const char *prefix, long first, long n, int done) {
  size_t len = (size_t)snprintf(buf, cap, "{\"type\":\"%s\",\"seq\":%llu,\"%s\":[",
                                type, (unsigned long long)seq,
                                strcmp(type, "sync") ? "ops" : "sessions");
  for (long i = first; i < first + n; i++)
    len += (size_t)snprintf(buf + len, cap - len,
                            "%s{\"op\":\"open\",\"session\":\"%s-s%ld\","
                            "\"user\":\"%s-u%ld\"}",
                            i > first ? "," : "", prefix, i, prefix, i);
  len += (size_t)snprintf(buf + len, cap - len, "]%s}",
                          strcmp(type, "sync") ? "" : done ? ",\"done\":true" : ",\"done\":false");
  return len;
}

/* Open (or sync) sessions first..first+n of prefix on c, DEPTH frames in
 * flight; returns the ops applied. */
static long push(conn_t *c, const char *type, const char *prefix, long first,
                 long n, uint64_t *seq) {
  long applied = 0, sent = 0, inflight = 0;
  while (sent < n || inflight) {
    while (sent < n && inflight < DEPTH) {
      long k = n - sent < BATCH ? n - sent : BATCH;
      size_t len = open_frame(c->out, c->out_cap, type, ++*seq, prefix,
                              first + sent, k, sent + k >= n);
      send_text(c, c->out, len);
      sent += k;
      inflight++;
    }
    applied += recv_ack(c);
    inflight--;
  }
  return applied;
}

/* ---- scenarios ---------------------------------------------------------- */

typedef struct job {
  int index;
  long first, n;
  double seconds;
  long ops;
  conn_t *c;
} job_t;

/* Wait for the connections' threads; the ops they had applied. */
static long join_all(pthread_t *th, job_t *jobs, int conns) {
  long total = 0;
  for (int i = 0; i < conns; i++) {
    pthread_join(th[i], NULL);
    total += jobs[i].ops;
  }
  return total;
}

/* Extra bytes in every id of hold (bench_backend ... hold N CONNS PAD), to
 * measure with ids as long as UUIDs. */
static int id_pad;

static void *hold_one(void *arg) {
  job_t *j = arg;
  char origin[32], prefix[160];
  snprintf(origin, sizeof origin, "hold-%d", j->index);
  snprintf(prefix, sizeof prefix, "h%d-%0*d", j->index, id_pad, 0);
  j->c = dial(origin);
  recv_text(j->c); /* the welcome */
  uint64_t seq = 0;
  j->ops = push(j->c, "batch", prefix, 0, j->n, &seq);
  return NULL;
}

static int hold(long sessions, int conns) {
  pthread_t th[256];
  job_t jobs[256];
  if (conns < 1 || conns > 256) die("1..256 connections");
  double t0 = now_s();
  for (int i = 0; i < conns; i++) {
    jobs[i] = (job_t){.index = i, .n = sessions / conns + (i < sessions % conns)};
    pthread_create(&th[i], NULL, hold_one, &jobs[i]);
  }
  long total = join_all(th, jobs, conns);
  double dt = now_s() - t0;
  printf("{\"scenario\":\"hold\",\"sessions\":%ld,\"connections\":%d,"
         "\"applied\":%ld,\"seconds\":%.3f,\"ops_per_s\":%.0f}\n",
         sessions, conns, total, dt, total / dt);
  fflush(stdout);
  /* Keep the connections (and so the sessions) until told. */
  char buf[64];
  while (fgets(buf, sizeof buf, stdin))
    ;
  for (int i = 0; i < conns; i++) hangup(jobs[i].c);
  return 0;
}

static int reassert(long sessions) {
  conn_t *c = dial("reassert");
  recv_text(c);
  uint64_t seq = 0;
  long opened = push(c, "batch", "r", 0, sessions, &seq);
  /* Wait for the runner to read the event count, then drop the
   * connection without a close frame (a crashed backend). */
  printf("{\"scenario\":\"reassert\",\"phase\":\"opened\",\"applied\":%ld}\n",
         opened);
  fflush(stdout);
  char buf[64];
  if (!fgets(buf, sizeof buf, stdin)) return 1;
  shutdown(c->fd, SHUT_RDWR);
  hangup(c);
  usleep(200000);
  c = dial("reassert");
  char *w = recv_text(c);
  int resumed = strstr(w, "\"resumed\":true") != NULL;
  double t0 = now_s();
  seq = 0;
  long applied = push(c, "sync", "r", 0, sessions, &seq);
  double dt = now_s() - t0;
  printf("{\"scenario\":\"reassert\",\"phase\":\"synced\",\"sessions\":%ld,"
         "\"resumed\":%s,\"applied\":%ld,\"seconds\":%.3f}\n",
         sessions, resumed ? "true" : "false", applied, dt);
  fflush(stdout);
  while (fgets(buf, sizeof buf, stdin))
    ;
  hangup(c);
  return 0;
}

static volatile int stop_ops;

/* Cycles of BATCH/3 sessions: open, status idle, close, in one frame. */
static void *ops_one(void *arg) {
  job_t *j = arg;
  char origin[32];
  snprintf(origin, sizeof origin, "ops-%d", j->index);
  conn_t *c = dial(origin);
  recv_text(c);
  uint64_t seq = 0;
  long inflight = 0, k = 0;
  int per = BATCH / 3;
  while (!stop_ops || inflight) {
    while (!stop_ops && inflight < DEPTH) {
      size_t len = (size_t)snprintf(c->out, c->out_cap,
                                    "{\"type\":\"batch\",\"seq\":%llu,\"ops\":[",
                                    (unsigned long long)++seq);
      for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < per; i++) {
          long id = k * per + i;
          char *o = c->out + len;
          size_t room = c->out_cap - len;
          if (pass == 0)
            len += (size_t)snprintf(o, room,
                                    "%s{\"op\":\"open\",\"session\":\"o%d-%ld\","
                                    "\"user\":\"ou%ld\"}",
                                    i ? "," : "", j->index, id,
                                    (id * 7919 + j->index) % 100000);
          else if (pass == 1)
            len += (size_t)snprintf(o, room,
                                    ",{\"op\":\"status\",\"session\":\"o%d-%ld\","
                                    "\"status\":\"idle\"}",
                                    j->index, id);
          else
            len += (size_t)snprintf(o, room,
                                    ",{\"op\":\"close\",\"session\":\"o%d-%ld\"}",
                                    j->index, id);
        }
      len += (size_t)snprintf(c->out + len, c->out_cap - len, "]}");
      send_text(c, c->out, len);
      k++;
      inflight++;
    }
    j->ops += recv_ack(c);
    inflight--;
  }
  hangup(c);
  return NULL;
}

static int ops(double seconds, int conns) {
  pthread_t th[256];
  job_t jobs[256];
  if (conns < 1 || conns > 256) die("1..256 connections");
  for (int i = 0; i < conns; i++) {
    jobs[i] = (job_t){.index = i};
    pthread_create(&th[i], NULL, ops_one, &jobs[i]);
  }
  double t0 = now_s();
  usleep((useconds_t)(seconds * 1e6));
  stop_ops = 1;
  long total = join_all(th, jobs, conns);
  double dt = now_s() - t0;
  printf("{\"scenario\":\"ops\",\"connections\":%d,\"ops\":%ld,\"seconds\":%.3f,"
         "\"ops_per_s\":%.0f}\n",
         conns, total, dt, total / dt);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: bench_backend PORT KEY hold SESSIONS CONNS | "
                    "reassert SESSIONS | ops SECONDS CONNS\n");
    return 2;
  }
  port = atoi(argv[1]);
  key = argv[2];
  if (!strcmp(argv[3], "hold") && (argc == 6 || argc == 7)) {
    id_pad = argc == 7 ? atoi(argv[6]) : 0;
    if (id_pad < 0 || id_pad > 100) die("PAD: 0..100");
    return hold(atol(argv[4]), atoi(argv[5]));
  }
  if (!strcmp(argv[3], "reassert"))
    return reassert(atol(argv[4]));
  if (!strcmp(argv[3], "ops") && argc == 6)
    return ops(atof(argv[4]), atoi(argv[5]));
  fprintf(stderr, "bench_backend: unknown scenario\n");
  return 2;
}
