/* SPDX-License-Identifier: MIT */
/*
 * bench/load: load generator for presenced and for bench/echo (the network
 * baseline), on one libuv loop.
 *
 * Every connection is a real client: its own TCP socket bound to a loopback
 * source address (127.0.0.2, 127.0.0.3, ... so more than 64k connections
 * can reach one destination), an HS256 token in ?token=, the RFC 6455
 * upgrade, masked text frames, pongs for the server's pings and a close
 * handshake. Connection i is user "u<i>" and subscribes to user u<i+1>, so
 * every status change of connection i+1 travels to connection i as one
 * `presence` frame: a flip is counted when that frame arrives, end to end.
 *
 * Against bench/echo (--mode echo) the same frames are sent and the echoed
 * frame counts as the completion, so the two figures share the client's
 * costs and differ only by what the server does with a message. That holds
 * for the handshake too: echo answers the upgrade with 101 and a
 * welcome-shaped frame, the client then sends the same `subscribe` and
 * counts the session in when its echo (presenced: the snapshot) arrives.
 *
 * Scenarios (--scenario):
 *   idle       connect --conns sessions (at most --concurrency handshakes at
 *              once: the connect storm), hold them --hold-s, report the
 *              connect rate, handshake times and the daemon's RSS growth per
 *              connection (VmRSS of --pid before and after).
 *   churn      --conns slots, each connects, subscribes, closes, reconnects,
 *              for --duration-s: cycles per second. --session-only 1: each
 *              connects and closes, no subscription and no join (on either
 *              server): what a session costs without its channels, so that
 *              bench/centrifugo/run.py can tell a join's Redis CPU from the
 *              session's, which only presenced keeps in Redis.
 *   flip       --conns sessions each keeping --window status changes in
 *              flight for --duration-s: changes per second end to end.
 *              --batch 1: the flips that one read's completions owe a
 *              session leave in one write (default: one write per flip,
 *              which on 2 cores limits the flip before the server does).
 *   latency    --rate changes per second offered (open loop, 1 ms ticks,
 *              round robin over --conns sessions): delay from the status
 *              frame's write to the subscriber's `presence` frame.
 *   reconnect  connect --conns sessions, print "READY", and when the server
 *              has closed them all (a restart), reconnect them at --rate per
 *              second, retrying refused connects: the achieved rate.
 *   fanout     --conns - 1 members all watch one user (presenced: subscribe
 *              to u<N-1>; Centrifugo: subscribe to the one channel); then the
 *              last connection, user u<N-1>, joins and leaves over and over
 *              for --duration-s: it connects (and, on Centrifugo, subscribes
 *              to the channel), each member's notice of the join is timed
 *              from the joiner's TCP connect, and when every member has it
 *              the joiner closes and the next join waits for every member's
 *              notice of the leave. Figures: join-to-member delay p50/p99,
 *              join-to-last-member, joins per second.
 *   channel    --conns members (u0 ..) join one presenced channel (--channel,
 *              with data), plus --churn-conns extra sessions; after the
 *              setup, for --warm-s then the measured --duration-s: the extra
 *              sessions `join` and `leave` in turn, --churn-rate of those
 *              per second in all, and every member sends `update` at
 *              --update-rate per second (open loop, 1 ms ticks). Each join
 *              and update carries its send time in its data ({"t":ns}), a
 *              leave's time is kept by the leaver: every change frame any
 *              joined session receives is timed (histogram, 1 us steps to
 *              10 ms, 100 us to 10 s). Figures: change-to-member latency
 *              p50/p99/max, delivered frames per second, the server's close
 *              codes (4030 is a slow consumer), and with --rss-interval-s the
 *              daemon's RSS and frames delivered per interval.
 *
 * --mode centrifugo speaks Centrifugo's JSON protocol (v2) instead, so one
 * tool drives both servers (bench/centrifugo/run.py): upgrade at
 * /connection/websocket, a `connect` command with the same HS256 token, then
 * the subscriptions that mirror presenced's session: connection i subscribes
 * to channel pr:u<i> (its own presence, what presenced's session is) and to
 * pr:u<i+1> (the watched user, whose join/leave it receives), or, with
 * --watch K, only to pr:u<K> (the namespace is --channel-ns, pr).
 *
 * --channels 1 (presenced) does the same with presenced's channels: `join`
 * messages to the same channel names in place of the `subscribe`, the
 * `channel` snapshot (one per join) as the answer, a member's
 * `"event":"join"` / `"event":"leave"` as the fanout's notices. Server pings ({}) are answered; pushes count as
 * presenced's presence frames do. With --snapshot 0 the joins carry
 * "snapshot":false and their ack is the answer: a Centrifugo subscribe
 * answers no presence list either, so the two do the same work.
 *
 * Bounds: at most MAX_CONNS connections, --max-s seconds in all (the run
 * ends by itself and reports what it has), traffic only to 127.0.0.0/8.
 * The result is one JSON object on stdout; progress goes to stderr.
 */
#include "server/jwt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* linux/in.h; not in glibc's headers */
#endif

#define MAX_CONNS 1000000
#define MAX_SOURCES 250
#define FIFO_CAP 64 /* latency: status frames in flight per connection */
#define MAX_SAMPLES (16u << 20)

enum scenario {
  SC_IDLE,
  SC_CHURN,
  SC_FLIP,
  SC_LATENCY,
  SC_RECONNECT,
  SC_FANOUT,
  SC_CHANNEL,
  SC_COUNT_
};
static const char *scenario_names[] = {"idle",      "churn",  "flip", "latency",
                                       "reconnect", "fanout", "channel"};

enum cstate {
  CS_DOWN,
  CS_CONNECTING,
  CS_UPGRADING,
  CS_WELCOME,
  CS_SUBSCRIBING,
  CS_READY,
  CS_CLOSING
};

typedef struct conn {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uint32_t idx;
  uint8_t state;
  uint8_t online;  /* status the session has after our last flip */
  uint8_t closing; /* uv_close called: stop reading its buffer */
  uint8_t failed;  /* gave up on it (not retried) */
  uint8_t joined;  /* channel: a churning session is in the channel */
  uint16_t outstanding;
  uint16_t owed; /* flip: flips owed by the read being handled (--batch) */
  uint16_t fhead, fcount;
  uint32_t rlen, rcap;
  uint8_t *rbuf;
  uint64_t t_connect;
  uint64_t *fifo; /* latency: hrtime of each status frame in flight */
} conn_t;

static struct {
  /* options */
  int scenario;
  int echo;
  char host[64];
  int port;
  uint32_t nconns, requested;
  uint32_t nsources;
  uint32_t concurrency;
  double duration_s, hold_s, warm_s, max_s, rate, rss_interval_s;
  uint32_t window;
  int batch; /* --batch 1: the flips one read owes leave in one write */
  int relay; /* --relay 1 (echo): each connection's place in the ring in its
                upgrade, so that presence_echo --relay answers a change to
                its watcher's connection, as presenced does */
  int subscribe;
  int cf;        /* --mode centrifugo */
  long watch;    /* --watch K: every connection watches u<K> (-1: u<i+1>) */
  int one_user;  /* --one-user 1: every token is user u0000000 */
  const char *ns; /* --channel-ns: Centrifugo namespace of the channels */
  int chan;       /* --channels 1: presenced joins channels instead */
  int snapshot;   /* --snapshot 0: joins ask for no member list (an ack) */
  int session_only; /* --session-only 1: ready at the welcome, nothing sent */
  uint32_t nstorm; /* connections the storm opens (fanout: all but the joiner) */
  int pid;
  const char *secret;
  /* state */
  uv_loop_t *loop;
  conn_t *conns;
  char **tokens;
  struct sockaddr_in dst;
  struct sockaddr_in src[MAX_SOURCES];
  uint64_t t_start;
  uint32_t next_to_start; /* storm: next connection index to open */
  uint32_t inflight;      /* handshakes in progress */
  uint32_t ready, failed, down;
  int stage; /* scenario-specific phase */
  int running;
  int finished;
  /* counters */
  uint64_t connect_errors, upgrade_errors, error_msgs, server_closes;
  uint64_t refused_retries, protocol_errors, write_errors;
  uint64_t completions, counted, sent, skipped;
  uint64_t cycles;
  uint64_t t_ready_first, t_ready_last, t_measure0, t_measure1;
  uint64_t counted0;
  long rss_before, rss_after;
  double cpu0, cpu1, self0, self1; /* server's and our CPU over the window */
  double sys0, sys1;                /* the server's kernel part of cpu0, cpu1 */
  int store_pid;                    /* --store-pid: redis-server, or 0 */
  double store0, store1;            /* its CPU over the same window */
  /* samples (ns) */
  uint64_t *lat, *hs;
  size_t nlat, nhs;
  /* reconnect queue */
  uint32_t *queue;
  size_t qhead, qlen;
  uint64_t rc_started;
  uint64_t rc_t0;    /* the server closed the last session */
  uint64_t rc_first; /* first session back after the restart */
  uint64_t rng;
  /* RSS series */
  double rss_t[4096];
  long rss_kb[4096];
  size_t nrss;
  uv_timer_t deadline, phase, tick, rss_timer;
  /* fanout */
  uint64_t fo_t0;          /* the joiner's connect started */
  uint32_t fo_joins_seen;  /* members told of the current join */
  uint32_t fo_leaves_seen; /* members told of the current leave */
  int fo_phase;            /* 1 joining, 2 leaving */
  uint64_t fo_rounds;
  uint64_t fo_t_last;      /* last progress, for the stall check */
  uint64_t *fo_all;        /* join to the last member, per join */
  size_t nfo_all;
  /* channel */
  const char *chname;     /* --channel */
  uint32_t members;       /* --conns: the channel's standing members */
  uint32_t churn_conns;   /* --churn-conns: sessions that join and leave */
  double churn_rate;      /* joins + leaves per second, in all */
  double update_rate;     /* updates per second per member */
  uint64_t *ch_leave_t;   /* per churning session: its last leave's send */
  uint64_t ch_joins, ch_leaves, ch_updates; /* sent in the window */
  uint64_t ch_frames;     /* change frames received in the window */
  uint64_t ch_frames_all; /* ... since the load started (for the series) */
  uint64_t ch_untimed;    /* change frames without a stamp we know */
  uint64_t ch_late;       /* timed frames over 10 ms */
  uint64_t close_4030, close_other, last_close_code;
  uint64_t ch_fr_series[4096];
} g;

static void conn_start(conn_t *c);
static void finish(void);
static void all_ready(void);
static void fanout_progress(void);
static void send_text(struct conn *c, const char *s);

static double now_s(void) {
  return (double)(uv_hrtime() - g.t_start) / 1e9;
}

static uint32_t rnd32(void) {
  g.rng ^= g.rng << 13;
  g.rng ^= g.rng >> 7;
  g.rng ^= g.rng << 17;
  return (uint32_t)g.rng;
}

/* CPU seconds (user + system) the process has used: a figure the other
 * tenants of a shared machine cannot inflate, unlike wall-clock rates.
 * sys, when given, gets the system (kernel) part of it: what the sockets
 * cost, which a server's own code cannot make cheaper (the flip's floor,
 * docs/benchmarks.md). */
static double read_cpu_one_sys(int pid, double *sys) {
  char path[64], buf[1024];
  if (pid <= 0) return -1;
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  if (!p) return -1;
  unsigned long long ut = 0, st = 0;
  /* fields after ")": state(3) ... utime(14) stime(15) */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &ut, &st) != 2)
    return -1;
  if (sys) *sys = (double)st / (double)sysconf(_SC_CLK_TCK);
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double read_cpu_one(int pid) { return read_cpu_one_sys(pid, NULL); }

/* The server's CPU: the process and its children, so that presenced
 * --workers N (a supervisor and N worker processes) counts all its
 * workers. A single process has none; its figure is unchanged. */
static double read_cpu_s_sys(int pid, double *sys) {
  double own_sys = 0;
  double cpu = read_cpu_one_sys(pid, &own_sys);
  if (sys) *sys = own_sys;
  if (cpu < 0) return cpu;
  char path[80], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
  FILE *f = fopen(path, "r");
  if (!f) return cpu;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  for (char *p = buf, *end; *p; p = end) {
    long child = strtol(p, &end, 10);
    if (end == p) break;
    double csys = 0;
    double c = read_cpu_one_sys((int)child, &csys);
    if (c > 0) {
      cpu += c;
      if (sys) *sys += csys;
    }
  }
  return cpu;
}

static double read_cpu_s(int pid) { return read_cpu_s_sys(pid, NULL); }

static double self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static long read_rss_kb(int pid) {
  if (pid <= 0) return -1;
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
  fclose(f);
  return kb;
}

/* ---- writing frames ----------------------------------------------------- */

typedef struct wreq {
  uv_write_t req;
  size_t len;
  uint8_t data[];
} wreq_t;

static void on_write(uv_write_t *req, int status) {
  if (status < 0 && status != UV_ECANCELED) g.write_errors++;
  free(req);
}

/* Write bytes in order: straight to the socket when nothing is queued (no
 * allocation on the hot path), the rest through a queued uv_write. */
static void conn_write(conn_t *c, const uint8_t *p, size_t n) {
  if (c->closing) return;
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
  int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (w == (int)n) return;
  if (w < 0) {
    if (w != UV_EAGAIN) {
      g.write_errors++;
      return;
    }
    w = 0;
  }
  wreq_t *r = malloc(sizeof *r + n - (size_t)w);
  if (!r) {
    g.write_errors++;
    return;
  }
  r->len = n - (size_t)w;
  memcpy(r->data, p + w, r->len);
  b = uv_buf_init((char *)r->data, (unsigned)r->len);
  if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    g.write_errors++;
    free(r);
  }
}

/* A client frame into f (room for len + 8 bytes; payloads under 65,536
 * bytes): RFC 6455 5.3, client frames are masked with a fresh key. Returns
 * its length. */
static size_t frame_put(uint8_t *f, int op, const void *payload, size_t len) {
  size_t h = 0;
  f[h++] = (uint8_t)(0x80 | op);
  if (len < 126) {
    f[h++] = (uint8_t)(0x80 | len);
  } else {
    f[h++] = 0x80 | 126;
    f[h++] = (uint8_t)(len >> 8);
    f[h++] = (uint8_t)len;
  }
  uint32_t key = rnd32();
  uint8_t *k = f + h;
  memcpy(k, &key, 4);
  h += 4;
  const uint8_t *p = payload;
  for (size_t i = 0; i < len; i++)
    f[h + i] = p[i] ^ k[i & 3];
  return h + len;
}

static void send_frame(conn_t *c, int op, const void *payload, size_t len) {
  uint8_t stackbuf[512];
  uint8_t *f = len + 14 <= sizeof stackbuf ? stackbuf : malloc(len + 14);
  if (!f) return;
  conn_write(c, f, frame_put(f, op, payload, len));
  if (f != stackbuf) free(f);
}

static void send_text(conn_t *c, const char *s) {
  send_frame(c, 1, s, strlen(s));
}

/* The status c flips to next. */
static const char *flip_msg(const conn_t *c) {
  return c->online ? "{\"type\":\"status\",\"status\":\"idle\"}"
                   : "{\"type\":\"status\",\"status\":\"online\"}";
}

static void send_flip(conn_t *c) {
  send_text(c, flip_msg(c));
  c->online = !c->online;
  g.sent++;
}

/* --batch 1: the connections that the read being handled owes flips, sent
 * after it in one write each (the frames as send_frame makes them, each
 * with its own mask), as a client that queues its messages and writes once
 * per turn would. Without it, one write per flip as it is owed. */
static uint32_t *owed_list;
static uint32_t owed_n;

static void flips_owed(conn_t *c) {
  if (!c->owed++) owed_list[owed_n++] = c->idx;
}

static void flush_owed(void) {
  for (uint32_t i = 0; i < owed_n; i++) {
    conn_t *c = &g.conns[owed_list[i]];
    uint8_t out[64 * 44];
    size_t n = 0;
    while (c->owed) {
      c->owed--;
      const char *msg = flip_msg(c);
      n += frame_put(out + n, 1, msg, strlen(msg));
      c->online = !c->online;
      g.sent++;
      if (n + 44 > sizeof out || !c->owed) {
        conn_write(c, out, n);
        n = 0;
      }
    }
  }
  owed_n = 0;
}

/* ---- connection life ----------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  free(c->rbuf);
  c->rbuf = NULL;
  c->rlen = c->rcap = 0;
  uint8_t was = c->state;
  c->state = CS_DOWN;
  c->closing = 0;
  c->fcount = c->fhead = 0;
  c->outstanding = 0;
  if (g.finished) return;
  switch (g.scenario) {
  case SC_CHURN:
    if (g.running && !c->failed) conn_start(c);
    break;
  case SC_FANOUT:
    if (g.stage >= 2) fanout_progress();
    break;
  case SC_RECONNECT:
    if (g.stage >= 1 && !c->failed) {
      if (was == CS_CONNECTING && g.stage == 2) g.refused_retries++;
      g.queue[(g.qhead + g.qlen++) % g.nconns] = c->idx;
      if (g.stage == 1 && ++g.down == g.nconns) {
        g.stage = 2;
        fprintf(stderr,
                "load: all %u sessions closed by the server: "
                "reconnecting at %.0f/s\n",
                g.nconns, g.rate);
        g.ready = 0;
        g.nhs = 0; /* handshake times of the reconnect only */
        g.rc_t0 = uv_hrtime();
        g.rc_started = 0;
      }
    }
    break;
  default:
    break;
  }
}

static void conn_down(conn_t *c) {
  if (c->closing || c->state == CS_DOWN) return;
  if (c->state == CS_CONNECTING || c->state == CS_UPGRADING ||
      c->state == CS_WELCOME || c->state == CS_SUBSCRIBING)
    if (g.inflight) g.inflight--;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void storm_next(void);

/* A connection that cannot be opened: counted, and the storm moves on. */
static void conn_fail(conn_t *c) {
  if (g.scenario != SC_RECONNECT && g.scenario != SC_CHURN) {
    c->failed = 1;
    g.failed++;
  }
  conn_down(c);
  storm_next();
}

static void on_connect(uv_connect_t *req, int status);

static void conn_start(conn_t *c) {
  if (g.finished) return;
  const struct sockaddr_in *src = &g.src[c->idx % g.nsources];
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    g.connect_errors++;
    c->failed = 1;
    g.failed++;
    return;
  }
  /* The port is chosen at connect() for the whole 4-tuple, so each source
   * address gives the full ephemeral range towards one destination. */
  int one = 1;
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (bind(fd, (const struct sockaddr *)src, sizeof *src) != 0) {
    g.connect_errors++;
    close(fd);
    c->failed = 1;
    g.failed++;
    return;
  }
  uv_tcp_init(g.loop, &c->tcp);
  c->tcp.data = c;
  c->creq.data = c;
  c->state = CS_CONNECTING;
  c->online = 1; /* a session starts online */
  if (uv_tcp_open(&c->tcp, fd) != 0) {
    close(fd);
    g.connect_errors++;
    c->closing = 1;
    c->failed = 1;
    g.failed++;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    return;
  }
  c->t_connect = uv_hrtime();
  g.inflight++;
  int rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&g.dst,
                          on_connect);
  if (rc != 0) {
    g.connect_errors++;
    conn_fail(c);
  }
}

/* Keep --concurrency handshakes in flight until every connection started. */
static void storm_next(void) {
  if (g.scenario == SC_CHURN || g.finished) return;
  if (g.scenario == SC_RECONNECT && g.stage != 0) return;
  while (g.next_to_start < g.nstorm && g.inflight < g.concurrency)
    conn_start(&g.conns[g.next_to_start++]);
  if (g.ready + g.failed == g.nstorm && g.next_to_start == g.nstorm &&
      g.stage == 0) {
    g.stage = 1;
    g.t_ready_last = uv_hrtime();
    all_ready(); /* the scenario's next step once everyone is in */
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)suggested;
  if (c->rcap - c->rlen < 1024) {
    uint32_t cap = c->rcap ? c->rcap * 2 : 2048;
    uint8_t *n = realloc(c->rbuf, cap);
    if (!n) {
      *buf = uv_buf_init(NULL, 0);
      return;
    }
    c->rbuf = n;
    c->rcap = cap;
  }
  *buf = uv_buf_init((char *)c->rbuf + c->rlen, c->rcap - c->rlen);
}

static const char *find(const uint8_t *p, size_t n, const char *needle) {
  size_t k = strlen(needle);
  if (k > n) return NULL;
  for (size_t i = 0; i + k <= n; i++)
    if (p[i] == (uint8_t)needle[0] && memcmp(p + i, needle, k) == 0)
      return (const char *)p + i;
  return NULL;
}

static void push_sample(uint64_t **arr, size_t *n, uint64_t v) {
  if (*n < MAX_SAMPLES) (*arr)[(*n)++] = v;
}

/* The session is fully in (welcome, and the snapshot when subscribing). */
static void conn_ready(conn_t *c) {
  c->state = CS_READY;
  if (g.inflight) g.inflight--;
  uint64_t t = uv_hrtime();
  push_sample(&g.hs, &g.nhs, t - c->t_connect);
  if (!g.t_ready_first) g.t_ready_first = t;
  g.ready++;
  switch (g.scenario) {
  case SC_CHURN:
    g.cycles++;
    /* Leave the way a browser tab does: a close frame, then the server's
     * close and its FIN (so the TIME_WAIT stays on the server's side). */
    c->state = CS_CLOSING;
    send_frame(c, 8, "\x03\xe8", 2);
    break;
  case SC_FANOUT:
    if (g.stage >= 2) {
      fanout_progress();
      break;
    }
    storm_next();
    break;
  case SC_RECONNECT:
    if (g.stage == 2) {
      if (!g.rc_first) g.rc_first = t;
      g.t_ready_last = t;
      if (g.ready == g.nconns) finish();
      break;
    }
    storm_next();
    break;
  default:
    storm_next();
    break;
  }
}

/* Connection idx's change reached its subscriber (or came back from echo). */
static void completion(uint32_t idx) {
  if (idx >= g.nconns) {
    g.protocol_errors++;
    return;
  }
  conn_t *c = &g.conns[idx];
  /* Before the flips start, changes are the sessions coming in (user u<i+1>
   * connecting after u<i> subscribed to it): not ours to count. */
  if (g.stage < 2) return;
  g.completions++;
  if (g.scenario == SC_FLIP) {
    if (c->outstanding) c->outstanding--;
    if (g.stage == 3) g.counted++;
    if (g.running && c->state == CS_READY) {
      c->outstanding++;
      if (g.batch)
        flips_owed(c);
      else
        send_flip(c);
    }
  } else if (g.scenario == SC_LATENCY) {
    if (!c->fcount) {
      g.protocol_errors++;
      return;
    }
    uint64_t t0 = c->fifo[c->fhead];
    c->fhead = (uint16_t)((c->fhead + 1) % FIFO_CAP);
    c->fcount--;
    /* Sampled by send time, so slow answers to the last frames of the
     * window still count. */
    if (t0 >= g.t_measure0 && g.stage >= 3 &&
        (!g.t_measure1 || t0 < g.t_measure1))
      push_sample(&g.lat, &g.nlat, uv_hrtime() - t0);
  }
}

/* The user connection c watches: u<i+1>, or u<K> for every one (--watch). */
static uint32_t watched(const conn_t *c) {
  return g.watch >= 0 ? (uint32_t)g.watch : (c->idx + 1) % g.nconns;
}

/* A member's notice of the joiner (fanout): join or leave. */
static void fanout_notice(conn_t *c, int join) {
  if (g.scenario != SC_FANOUT || g.stage < 2 || c->idx + 1 == g.nconns)
    return;
  uint64_t t = uv_hrtime();
  if (join && g.fo_phase == 1) {
    push_sample(&g.lat, &g.nlat, t - g.fo_t0);
    if (++g.fo_joins_seen == g.nconns - 1 && g.nfo_all < MAX_SAMPLES)
      g.fo_all[g.nfo_all++] = t - g.fo_t0;
  } else if (!join && g.fo_phase == 2) {
    g.fo_leaves_seen++;
  }
  fanout_progress();
}

/* A frame that may tell a member of the joiner's join or leave (fanout):
 * only the joiner's count (its id under `key`), since the members' own
 * joins of the setup may still be arriving when the measurement starts. */
static void joiner_notice(conn_t *c, const uint8_t *p, size_t n,
                          const char *key, const char *join,
                          const char *leave) {
  char who[48];
  if (g.scenario != SC_FANOUT) return;
  snprintf(who, sizeof who, "\"%s\":\"u%07u\"", key, g.nconns - 1);
  if (!find(p, n, who)) return;
  if (find(p, n, join))
    fanout_notice(c, 1);
  else if (find(p, n, leave))
    fanout_notice(c, 0);
}

/* One line of Centrifugo's JSON protocol (replies and pushes are
 * newline-separated, several to a frame). */
static void on_cf_line(conn_t *c, const uint8_t *p, size_t n) {
  if (n == 2 && p[0] == '{' && p[1] == '}') { /* ping: answer with a pong */
    send_text(c, "{}");
    return;
  }
  if (find(p, n, "\"push\"")) {
    joiner_notice(c, p, n, "user", "\"join\":", "\"leave\":");
    return;
  }
  if (find(p, n, "\"error\"")) {
    if (g.error_msgs++ < 5)
      fprintf(stderr, "load: conn %u: %.*s\n", c->idx, (int)(n > 200 ? 200 : n),
              (const char *)p);
    return;
  }
  if (c->state == CS_WELCOME && n > 8 && !memcmp(p, "{\"id\":1,", 8)) {
    if (g.session_only) {
      conn_ready(c);
      return;
    }
    /* connected: the subscriptions presenced's session stands for */
    char msg[256];
    if (g.watch >= 0 || !g.subscribe) {
      snprintf(msg, sizeof msg,
               "{\"id\":2,\"subscribe\":{\"channel\":\"%s:u%07u\"}}",
               g.ns, g.subscribe ? watched(c) : c->idx);
      c->outstanding = 1;
    } else {
      snprintf(msg, sizeof msg,
               "{\"id\":2,\"subscribe\":{\"channel\":\"%s:u%07u\"}}\n"
               "{\"id\":3,\"subscribe\":{\"channel\":\"%s:u%07u\"}}",
               g.ns, c->idx, g.ns, watched(c));
      c->outstanding = 2;
    }
    c->state = CS_SUBSCRIBING;
    send_text(c, msg);
    return;
  }
  if (c->state == CS_SUBSCRIBING && n > 8 &&
      (!memcmp(p, "{\"id\":2,", 8) || !memcmp(p, "{\"id\":3,", 8))) {
    if (c->outstanding) c->outstanding--;
    if (!c->outstanding) conn_ready(c);
  }
}

static void channel_text(conn_t *c, const uint8_t *p, size_t n);

static void on_text(conn_t *c, const uint8_t *p, size_t n) {
  if (g.scenario == SC_CHANNEL) {
    channel_text(c, p, n);
    return;
  }
  if (g.cf) {
    while (n) {
      const uint8_t *nl = memchr(p, '\n', n);
      size_t k = nl ? (size_t)(nl - p) : n;
      if (k) on_cf_line(c, p, k);
      if (!nl) break;
      p += k + 1;
      n -= k + 1;
    }
    return;
  }
  if (g.echo && c->state == CS_SUBSCRIBING) {
    conn_ready(c); /* the echoed subscribe stands for the snapshot */
    return;
  }
  if (g.echo && c->state != CS_WELCOME) {
    /* --relay: what arrives here is the change of the connection this one
     * watches (u<i+1>), as with presenced. */
    completion(g.relay ? (c->idx + 1) % g.nconns : c->idx);
    return;
  }
  if (find(p, n, "\"type\":\"presence\"")) {
    if (find(p, n, "\"snapshot\":true")) {
      if (c->state == CS_SUBSCRIBING) conn_ready(c);
      return;
    }
    const char *u = find(p, n, "\"user_id\":\"u");
    if (!u) {
      g.protocol_errors++;
      return;
    }
    if (g.scenario == SC_FANOUT) {
      fanout_notice(c, !find(p, n, "\"status\":\"offline\""));
      return;
    }
    completion((uint32_t)strtoul(u + 12, NULL, 10));
    return;
  }
  if (c->state == CS_WELCOME && g.session_only &&
      find(p, n, "\"type\":\"welcome\"")) {
    conn_ready(c);
    return;
  }
  if (c->state == CS_WELCOME && g.chan &&
      find(p, n, "\"type\":\"welcome\"")) {
    /* the channels Centrifugo's client subscribes to, joined */
    char msg[160];
    if (g.watch >= 0) {
      snprintf(msg, sizeof msg,
               "{\"type\":\"join\",\"channel\":\"%s:u%07u\",\"id\":2}", g.ns,
               watched(c));
      c->outstanding = 1;
      send_text(c, msg);
    } else {
      const char *snap = g.snapshot ? "" : ",\"snapshot\":false";
      snprintf(msg, sizeof msg,
               "{\"type\":\"join\",\"channel\":\"%s:u%07u\",\"id\":2%s}",
               g.ns, c->idx, snap);
      send_text(c, msg);
      snprintf(msg, sizeof msg,
               "{\"type\":\"join\",\"channel\":\"%s:u%07u\",\"id\":3%s}",
               g.ns, watched(c), snap);
      send_text(c, msg);
      c->outstanding = 2;
    }
    c->state = CS_SUBSCRIBING;
    return;
  }
  if (g.chan && c->state == CS_SUBSCRIBING && !g.snapshot &&
      find(p, n, "\"type\":\"ack\"")) {
    /* --snapshot 0: a join's ack stands for its snapshot */
    if (c->outstanding) c->outstanding--;
    if (!c->outstanding) conn_ready(c);
    return;
  }
  if (g.chan && find(p, n, "\"type\":\"channel\"")) {
    if (find(p, n, "\"snapshot\":true")) {
      if (c->state == CS_SUBSCRIBING) {
        if (c->outstanding) c->outstanding--;
        if (!c->outstanding) conn_ready(c);
      }
      return;
    }
    joiner_notice(c, p, n, "user_id", "\"event\":\"join\"",
                  "\"event\":\"leave\"");
    return;
  }
  if (c->state == CS_WELCOME && find(p, n, "\"type\":\"welcome\"")) {
    if (g.subscribe) {
      char msg[96];
      snprintf(msg, sizeof msg,
               "{\"type\":\"subscribe\",\"users\":[\"u%07u\"]}",
               watched(c));
      c->state = CS_SUBSCRIBING;
      send_text(c, msg);
    } else {
      conn_ready(c);
    }
    return;
  }
  if (find(p, n, "\"type\":\"error\"")) {
    if (g.error_msgs++ < 5)
      fprintf(stderr, "load: conn %u: %.*s\n", c->idx, (int)(n > 200 ? 200 : n),
              (const char *)p);
    return;
  }
}

/* ---- channel: latency histogram ------------------------------------------
 * Every change frame every member receives is one sample (100,000 a second
 * and more): a fixed histogram instead of the sample arrays, 1 us steps up
 * to 10 ms (the target) and 100 us steps from there to 10 s. */
#define H_FINE 10000u
#define H_COARSE 99900u
static uint64_t hist[H_FINE + H_COARSE + 1];
static uint64_t hist_n, hist_max;

static void hist_add(uint64_t ns) {
  uint64_t us = ns / 1000;
  size_t b = us < H_FINE ? (size_t)us
                         : H_FINE + (size_t)((us - H_FINE) / 100 < H_COARSE
                                                 ? (us - H_FINE) / 100
                                                 : H_COARSE);
  hist[b]++;
  hist_n++;
  if (ns > hist_max) hist_max = ns;
  if (us >= H_FINE) g.ch_late++;
}

/* The upper edge of the bucket holding quantile q, in ms. */
static double hist_q(double q) {
  if (!hist_n) return -1;
  uint64_t want = (uint64_t)(q * (double)(hist_n - 1)) + 1, seen = 0;
  for (size_t b = 0; b < sizeof hist / sizeof hist[0]; b++) {
    seen += hist[b];
    if (seen >= want)
      return b < H_FINE ? (double)(b + 1) / 1000.0
                        : (double)(H_FINE + (b - H_FINE + 1) * 100) / 1000.0;
  }
  return (double)hist_max / 1e6;
}

/* A send time ({"t":ns} in the data) into *t; 0 without one. */
static int stamp_of(const uint8_t *p, size_t n, uint64_t *t) {
  const char *at = find(p, n, "\"data\":{\"t\":");
  *t = at ? strtoull(at + 12, NULL, 10) : 0;
  return at != NULL;
}

/* A change frame reached member c: timed by the stamp its data carries (a
 * join, an update) or, for a leave (data null), by the leaver's own note of
 * when it sent the `leave`. Only changes sent inside the window count, so
 * slow answers to the window's last sends still do. */
static void channel_change(const uint8_t *p, size_t n) {
  uint64_t now = uv_hrtime(), t0;
  int stamped = stamp_of(p, n, &t0);
  g.ch_frames_all++;
  if (g.stage < 2) return; /* the setup's own joins */
  /* A member's own join carries {"t":0}: the last member's snapshot starts
   * the churn (stage 2) while the others may still be reading its join. */
  if (stamped && !t0) return;
  if (g.stage == 3) g.ch_frames++;
  if (!t0) {
    const char *u = find(p, n, "\"user_id\":\"u");
    uint32_t idx = u ? (uint32_t)strtoul(u + 12, NULL, 10) : 0;
    if (u && find(p, n, "\"event\":\"leave\"") && idx >= g.members &&
        idx < g.nconns)
      t0 = g.ch_leave_t[idx - g.members];
  }
  if (!t0 || t0 > now) {
    g.ch_untimed++;
    return;
  }
  if (t0 >= g.t_measure0 && g.stage >= 3 &&
      (!g.t_measure1 || t0 < g.t_measure1))
    hist_add(now - t0);
}

static void channel_text(conn_t *c, const uint8_t *p, size_t n) {
  char msg[256];
  if (c->state == CS_WELCOME && find(p, n, "\"type\":\"welcome\"")) {
    if (c->idx >= g.members) { /* a churning session: joins later */
      conn_ready(c);
      return;
    }
    snprintf(msg, sizeof msg,
             "{\"type\":\"join\",\"channel\":\"%s\",\"data\":{\"t\":0},"
             "\"id\":1}",
             g.chname);
    c->state = CS_SUBSCRIBING;
    send_text(c, msg);
    return;
  }
  if (find(p, n, "\"type\":\"channel\"")) {
    if (find(p, n, "\"snapshot\":true")) {
      if (c->state == CS_SUBSCRIBING) conn_ready(c);
      return;
    }
    channel_change(p, n);
    return;
  }
  if (find(p, n, "\"type\":\"error\"")) {
    if (g.error_msgs++ < 5)
      fprintf(stderr, "load: conn %u: %.*s\n", c->idx,
              (int)(n > 200 ? 200 : n), (const char *)p);
    return;
  }
  if (find(p, n, "\"type\":\"left\"")) g.protocol_errors++;
  /* ack (update, leave) and pong: nothing to do */
}

/* The churn and the updates: what the two rates owe since the load began
 * (open loop: a late tick sends the backlog, it does not lower the rate). */
static uint32_t ch_rr_churn, ch_rr_upd;
static uint64_t ch_t0, ch_churn_sent, ch_upd_sent;
static void channel_tick(uv_timer_t *t) {
  (void)t;
  if (!g.running) return;
  uint64_t now = uv_hrtime();
  if (!ch_t0) ch_t0 = now;
  double el = (double)(now - ch_t0) / 1e9;
  char msg[256];
  uint64_t owed = (uint64_t)(el * g.churn_rate);
  for (uint32_t tries = 0; ch_churn_sent < owed && g.churn_conns &&
                           tries < g.churn_conns * 2;
       tries++) {
    uint32_t k = ch_rr_churn;
    ch_rr_churn = (ch_rr_churn + 1) % g.churn_conns;
    conn_t *c = &g.conns[g.members + k];
    if (c->state != CS_READY) continue;
    uint64_t ts = uv_hrtime();
    if (!c->joined) {
      snprintf(msg, sizeof msg,
               "{\"type\":\"join\",\"channel\":\"%s\",\"data\":{\"t\":%" PRIu64
               "}}",
               g.chname, ts);
      if (g.stage == 3) g.ch_joins++;
    } else {
      snprintf(msg, sizeof msg, "{\"type\":\"leave\",\"channel\":\"%s\"}",
               g.chname);
      g.ch_leave_t[k] = ts;
      if (g.stage == 3) g.ch_leaves++;
    }
    c->joined = !c->joined;
    send_text(c, msg);
    ch_churn_sent++;
  }
  owed = (uint64_t)(el * g.update_rate * (double)g.members);
  for (uint32_t tries = 0; ch_upd_sent < owed && tries < g.members * 2;
       tries++) {
    conn_t *c = &g.conns[ch_rr_upd];
    ch_rr_upd = (ch_rr_upd + 1) % g.members;
    if (c->state != CS_READY) continue;
    snprintf(msg, sizeof msg,
             "{\"type\":\"update\",\"channel\":\"%s\",\"data\":{\"t\":%" PRIu64
             "}}",
             g.chname, uv_hrtime());
    send_text(c, msg);
    if (g.stage == 3) g.ch_updates++;
    ch_upd_sent++;
  }
}

/* One server frame (unmasked, unfragmented: what presenced and echo send). */
static void on_frame(conn_t *c, int op, const uint8_t *p, size_t n) {
  switch (op) {
  case 1:
    on_text(c, p, n);
    break;
  case 9: /* ping: a pong with the same payload, or the server times us out */
    send_frame(c, 10, p, n);
    break;
  case 10:
    break;
  case 8:
    if (c->state != CS_CLOSING) {
      g.server_closes++;
      uint64_t code = n >= 2 ? (uint64_t)p[0] << 8 | p[1] : 1005;
      if (code == 4030)
        g.close_4030++;
      else
        g.close_other++, g.last_close_code = code;
      send_frame(c, 8, p, n >= 2 ? 2 : 0);
    }
    c->state = CS_CLOSING;
    break;
  default:
    g.protocol_errors++;
    conn_down(c);
  }
}

static void process(conn_t *c) {
  size_t off = 0;
  if (c->state == CS_UPGRADING) {
    const char *end = find(c->rbuf, c->rlen, "\r\n\r\n");
    if (!end) return;
    if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.1 101", 12) != 0) {
      if (g.upgrade_errors++ < 5)
        fprintf(stderr, "load: upgrade refused: %.*s\n",
                (int)(c->rlen > 200 ? 200 : c->rlen), (const char *)c->rbuf);
      conn_fail(c);
      return;
    }
    off = (size_t)((const uint8_t *)end + 4 - c->rbuf);
    c->state = CS_WELCOME; /* echo sends a welcome-shaped frame too */
    if (g.cf) {
      char msg[600];
      snprintf(msg, sizeof msg, "{\"id\":1,\"connect\":{\"token\":\"%s\"}}",
               g.tokens[c->idx]);
      send_text(c, msg);
    }
  }
  while (!c->closing) {
    size_t avail = c->rlen - off;
    const uint8_t *p = c->rbuf + off;
    if (avail < 2) break;
    int op = p[0] & 0x0f;
    uint64_t len = p[1] & 0x7f;
    size_t h = 2;
    if (p[1] & 0x80) { /* a server must not mask */
      g.protocol_errors++;
      conn_down(c);
      return;
    }
    if (len == 126) {
      if (avail < 4) break;
      len = (uint64_t)p[2] << 8 | p[3];
      h = 4;
    } else if (len == 127) {
      if (avail < 10) break;
      len = 0;
      for (int i = 0; i < 8; i++)
        len = len << 8 | p[2 + i];
      h = 10;
    }
    if (len > (16u << 20)) {
      g.protocol_errors++;
      conn_down(c);
      return;
    }
    if (avail < h + len) break;
    on_frame(c, op, p + h, (size_t)len);
    off += h + (size_t)len;
  }
  if (c->closing || !c->rbuf) return;
  if (off) {
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= (uint32_t)off;
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  (void)buf;
  if (nread < 0) {
    if (c->state != CS_CLOSING && c->state != CS_READY) {
      if (g.scenario != SC_RECONNECT || g.stage != 2) g.upgrade_errors++;
      conn_fail(c);
      return;
    }
    if (c->state == CS_READY) g.server_closes++;
    conn_down(c);
    return;
  }
  c->rlen += (uint32_t)nread;
  process(c);
  if (owed_n) flush_owed();
}

static void on_connect(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  if (status < 0) {
    if (status == UV_ECANCELED) return;
    if (g.scenario == SC_RECONNECT && g.stage == 2) {
      conn_down(c); /* the server is not back yet: requeued by on_closed */
      return;
    }
    if (g.connect_errors++ < 5)
      fprintf(stderr, "load: connect: %s\n", uv_strerror(status));
    conn_fail(c);
    return;
  }
  c->state = CS_UPGRADING;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  char req_text[1024], rq[40] = "";
  int n;
  if (g.echo && g.relay)
    snprintf(rq, sizeof rq, "&relay=%u/%u", c->idx, g.nconns);
  if (g.cf) /* Centrifugo: the token goes in the connect command */
    n = snprintf(req_text, sizeof req_text,
                 "GET /connection/websocket HTTP/1.1\r\n"
                 "Host: %s:%d\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n",
                 g.host, g.port);
  else
    n = snprintf(req_text, sizeof req_text,
                 "GET /v1/ws?token=%s%s HTTP/1.1\r\n"
                 "Host: %s:%d\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n",
                 g.tokens[c->idx], rq, g.host, g.port);
  conn_write(c, (const uint8_t *)req_text, (size_t)n);
}

/* ---- scenarios ----------------------------------------------------------- */

static void on_phase(uv_timer_t *t);

static void start_phase(double after_s) {
  uv_timer_start(&g.phase, on_phase, (uint64_t)(after_s * 1000), 0);
}

static void on_hold_done(uv_timer_t *t) {
  (void)t;
  g.rss_after = read_rss_kb(g.pid);
  finish();
}

static void on_tick(uv_timer_t *t);
static void fanout_start(uv_timer_t *t);

static void all_ready(void) {
  double span = (double)(g.t_ready_last - g.t_start) / 1e9;
  fprintf(stderr, "load: %u sessions in (%u failed) in %.2f s\n", g.ready,
          g.failed, span);
  switch (g.scenario) {
  case SC_IDLE:
    g.cpu1 = read_cpu_s(g.pid); /* the storm's CPU, before the hold */
    uv_timer_start(&g.phase, on_hold_done, (uint64_t)(g.hold_s * 1000), 0);
    break;
  case SC_FLIP:
    /* Warm-up, then the measured window, then a drain. */
    g.running = 1;
    g.stage = 2;
    for (uint32_t i = 0; i < g.nconns; i++) {
      conn_t *c = &g.conns[i];
      if (c->state != CS_READY) continue;
      for (uint32_t k = 0; k < g.window; k++) {
        c->outstanding++;
        send_flip(c);
      }
    }
    start_phase(g.warm_s);
    break;
  case SC_LATENCY:
    g.running = 1;
    g.stage = 2;
    g.t_measure0 = uv_hrtime();
    g.rc_started = 0;
    uv_timer_start(&g.tick, on_tick, 1, 1);
    start_phase(g.warm_s);
    break;
  case SC_RECONNECT:
    printf("READY\n");
    fflush(stdout);
    break;
  case SC_CHANNEL:
    /* the churn and the updates from now on; --warm-s, then the window */
    g.running = 1;
    g.stage = 2;
    uv_timer_start(&g.tick, channel_tick, 1, 1);
    start_phase(g.warm_s);
    break;
  case SC_FANOUT:
    /* --warm-s for the setup's own notices to drain, then the joins */
    uv_timer_start(&g.phase, fanout_start, (uint64_t)(g.warm_s * 1000), 0);
    break;
  default:
    break;
  }
}

static void fanout_start(uv_timer_t *t) {
  (void)t;
  g.stage = 2;
  g.running = 1;
  g.t_measure0 = uv_hrtime();
  start_phase(g.duration_s);
  g.fo_phase = 0;
  fanout_progress();
}

/* Fanout: the joiner's next step once the members have all been told. */
static void fanout_progress(void) {
  conn_t *j = &g.conns[g.nconns - 1];
  g.fo_t_last = uv_hrtime();
  if (g.fo_phase == 1 && g.fo_joins_seen >= g.nconns - 1 &&
      j->state == CS_READY) {
    g.fo_rounds++;
    g.fo_phase = 2;
    g.fo_leaves_seen = 0;
    j->state = CS_CLOSING; /* leave as a tab does: a close frame */
    send_frame(j, 8, "\x03\xe8", 2);
    return;
  }
  if ((g.fo_phase == 0 ||
       (g.fo_phase == 2 && g.fo_leaves_seen >= g.nconns - 1)) &&
      j->state == CS_DOWN && !j->closing) {
    if (!g.running) {
      g.stage = 4;
      finish();
      return;
    }
    g.fo_phase = 1;
    g.fo_joins_seen = 0;
    g.fo_t0 = uv_hrtime();
    conn_start(j);
  }
}

/* Flip and latency phases: 2 warm-up, 3 measuring, 4 draining. */
static void on_phase(uv_timer_t *t) {
  (void)t;
  if (g.scenario == SC_FANOUT) {
    /* the window is over: finish after the join or leave under way */
    g.running = 0;
    g.t_measure1 = uv_hrtime();
    fanout_progress();
    return;
  }
  if (g.stage == 2) {
    g.stage = 3;
    g.t_measure0 = uv_hrtime();
    g.counted0 = g.counted;
    g.sent = 0;
    g.cpu0 = read_cpu_s_sys(g.pid, &g.sys0);
    g.store0 = read_cpu_one(g.store_pid);
    g.self0 = self_cpu_s();
    start_phase(g.duration_s);
  } else if (g.stage == 3) {
    g.stage = 4;
    g.t_measure1 = uv_hrtime();
    g.cpu1 = read_cpu_s_sys(g.pid, &g.sys1);
    g.store1 = read_cpu_one(g.store_pid);
    g.self1 = self_cpu_s();
    g.running = 0;
    start_phase(1.0);
  } else {
    finish();
  }
}

/* Latency: send what the offered rate owes since the start, round robin. */
static uint32_t rr;
static uint64_t rate_t0, rate_sent;
static void on_tick(uv_timer_t *t) {
  (void)t;
  if (!g.running) return;
  uint64_t now = uv_hrtime();
  if (g.stage == 3 && rate_t0 < g.t_measure0) {
    rate_t0 = g.t_measure0;
    rate_sent = 0;
  } else if (!rate_t0) {
    rate_t0 = now;
  }
  uint64_t owed = (uint64_t)((double)(now - rate_t0) / 1e9 * g.rate);
  for (uint32_t tries = 0; rate_sent < owed && tries < g.nconns * 2; tries++) {
    conn_t *c = &g.conns[rr];
    rr = (rr + 1) % g.nconns;
    if (c->state != CS_READY) continue;
    if (c->fcount == FIFO_CAP) {
      g.skipped++;
      rate_sent++;
      continue;
    }
    c->fifo[(c->fhead + c->fcount++) % FIFO_CAP] = uv_hrtime();
    send_flip(c);
    rate_sent++;
  }
}

/* Reconnect: start what the rate owes since the server came back. */
static void on_rc_tick(uv_timer_t *t) {
  (void)t;
  if (g.stage != 2) return;
  uint64_t owed =
      (uint64_t)((double)(uv_hrtime() - g.rc_t0) / 1e9 * g.rate) + 1;
  while (g.rc_started < owed && g.qlen) {
    uint32_t idx = g.queue[g.qhead];
    g.qhead = (g.qhead + 1) % g.nconns;
    g.qlen--;
    conn_start(&g.conns[idx]);
    g.rc_started++;
  }
}

static void on_rss(uv_timer_t *t) {
  (void)t;
  if (g.nrss < sizeof g.rss_kb / sizeof g.rss_kb[0]) {
    g.rss_t[g.nrss] = now_s();
    g.ch_fr_series[g.nrss] = g.ch_frames_all;
    g.rss_kb[g.nrss++] = read_rss_kb(g.pid);
  }
}

static void on_deadline(uv_timer_t *t) {
  (void)t;
  if (g.scenario == SC_CHURN && g.stage == 0) {
    /* churn: the deadline is the end of the measured run */
    g.stage = 1;
    g.running = 0;
    g.t_measure1 = uv_hrtime();
    finish();
    return;
  }
  fprintf(stderr, "load: time bound of %.0f s reached: stopping\n", g.max_s);
  g.finished = 2;
  finish();
}

/* ---- results --------------------------------------------------------------
 */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, size_t n, double q) {
  if (!n) return -1;
  size_t i = (size_t)(q * (double)(n - 1) + 0.5);
  return (double)v[i] / 1e6; /* ms */
}

static void print_dist(const char *name, uint64_t *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_u64);
  printf(",\"%s\":{\"n\":%zu,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,"
         "\"p999\":%.4f,\"max\":%.4f}",
         name, n, pct(v, n, 0.5), pct(v, n, 0.9), pct(v, n, 0.99),
         pct(v, n, 0.999), n ? (double)v[n - 1] / 1e6 : -1.0);
}

static void finish(void) {
  if (g.finished == 1) return;
  int timed_out = g.finished == 2;
  g.finished = 1;
  double elapsed = now_s();
  printf("{\"scenario\":\"%s\",\"mode\":\"%s\",\"conns\":%u,"
         "\"requested_conns\":%u,\"sources\":%u,\"ready\":%u,\"failed\":%u,"
         "\"connect_errors\":%" PRIu64 ",\"upgrade_errors\":%" PRIu64
         ",\"error_messages\":%" PRIu64 ",\"server_closes\":%" PRIu64
         ",\"protocol_errors\":%" PRIu64 ",\"write_errors\":%" PRIu64
         ",\"timed_out\":%s,\"elapsed_s\":%.3f",
         scenario_names[g.scenario],
         g.cf ? "centrifugo" : g.echo ? "echo" : "presenced", g.nconns,
         g.requested, g.nsources, g.ready, g.failed, g.connect_errors,
         g.upgrade_errors, g.error_msgs, g.server_closes, g.protocol_errors,
         g.write_errors, timed_out ? "true" : "false", elapsed);
  double span;
  switch (g.scenario) {
  case SC_IDLE:
    span = (double)(g.t_ready_last - g.t_start) / 1e9;
    printf(",\"connect_s\":%.3f,\"connect_rate_per_s\":%.1f,\"hold_s\":%.1f,"
           "\"rss_before_kb\":%ld,\"rss_after_kb\":%ld",
           span, span > 0 ? g.ready / span : 0, g.hold_s, g.rss_before,
           g.rss_after);
    if (g.rss_before > 0 && g.rss_after > 0 && g.ready)
      printf(",\"rss_per_conn_bytes\":%.1f",
             (double)(g.rss_after - g.rss_before) * 1024.0 / g.ready);
    /* Sessions in per CPU-second of the server: a storm figure that the
     * other tenants of a shared machine cannot inflate. */
    if (g.cpu0 >= 0 && g.cpu1 > g.cpu0)
      printf(",\"storm_server_cpu_s\":%.3f,\"connects_per_server_cpu_s\":"
             "%.1f",
             g.cpu1 - g.cpu0, g.ready / (g.cpu1 - g.cpu0));
    print_dist("handshake_ms", g.hs, g.nhs);
    break;
  case SC_CHURN:
    span = (double)(uv_hrtime() - g.t_start) / 1e9;
    printf(",\"slots\":%u,\"duration_s\":%.3f,\"cycles\":%" PRIu64
           ",\"cycles_per_s\":%.1f",
           g.nconns, span, g.cycles, span > 0 ? g.cycles / span : 0);
    print_dist("handshake_ms", g.hs, g.nhs);
    break;
  case SC_FLIP:
    span = (double)(g.t_measure1 - g.t_measure0) / 1e9;
    printf(",\"window\":%u,\"duration_s\":%.3f,\"changes\":%" PRIu64
           ",\"changes_per_s\":%.1f,\"sent_in_window\":%" PRIu64,
           g.window, span, g.counted - g.counted0,
           span > 0 ? (g.counted - g.counted0) / span : 0, g.sent);
    break;
  case SC_LATENCY: {
    span = (double)(g.t_measure1 - g.t_measure0) / 1e9;
    uint64_t missing = 0;
    for (uint32_t i = 0; i < g.nconns; i++)
      missing += g.conns[i].fcount;
    printf(",\"offered_per_s\":%.0f,\"duration_s\":%.3f,\"sent\":%" PRIu64
           ",\"achieved_per_s\":%.1f,\"skipped\":%" PRIu64
           ",\"unanswered\":%" PRIu64,
           g.rate, span, g.sent, span > 0 ? g.nlat / span : 0, g.skipped,
           missing);
    print_dist("latency_ms", g.lat, g.nlat);
    break;
  }
  case SC_FANOUT:
    span = (double)((g.t_measure1 ? g.t_measure1 : uv_hrtime()) -
                    g.t_measure0) / 1e9;
    printf(",\"members\":%u,\"joins\":%" PRIu64 ",\"duration_s\":%.3f,"
           "\"joins_per_s\":%.1f,\"phase_at_end\":%d",
           g.nconns - 1, g.fo_rounds, span,
           span > 0 ? (double)g.fo_rounds / span : 0, g.fo_phase);
    print_dist("join_to_member_ms", g.lat, g.nlat);
    print_dist("join_to_last_member_ms", g.fo_all, g.nfo_all);
    break;
  case SC_CHANNEL: {
    span = (double)(g.t_measure1 - g.t_measure0) / 1e9;
    uint64_t changes = g.ch_joins + g.ch_leaves + g.ch_updates;
    printf(",\"channel\":\"%s\",\"members\":%u,\"churn_conns\":%u,"
           "\"churn_rate_offered\":%.1f,\"update_rate_per_member\":%.3f,"
           "\"duration_s\":%.3f,\"measure_t0_s\":%.3f,\"measure_t1_s\":%.3f,"
           "\"joins\":%" PRIu64 ",\"leaves\":%" PRIu64 ",\"updates\":%" PRIu64
           ",\"changes_per_s\":%.1f,\"frames\":%" PRIu64
           ",\"frames_per_s\":%.1f,\"untimed_frames\":%" PRIu64
           ",\"timed_frames\":%" PRIu64 ",\"over_10ms\":%" PRIu64
           ",\"slow_consumer_closes\":%" PRIu64 ",\"other_closes\":%" PRIu64
           ",\"last_other_close_code\":%" PRIu64,
           g.chname, g.members, g.churn_conns, g.churn_rate, g.update_rate,
           span, (double)(g.t_measure0 - g.t_start) / 1e9,
           (double)(g.t_measure1 - g.t_start) / 1e9, g.ch_joins, g.ch_leaves,
           g.ch_updates, span > 0 ? (double)changes / span : 0, g.ch_frames,
           span > 0 ? (double)g.ch_frames / span : 0, g.ch_untimed, hist_n,
           g.ch_late, g.close_4030, g.close_other, g.last_close_code);
    printf(",\"latency_ms\":{\"n\":%" PRIu64 ",\"p50\":%.3f,\"p90\":%.3f,"
           "\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f}",
           hist_n, hist_q(0.5), hist_q(0.9), hist_q(0.99), hist_q(0.999),
           hist_n ? (double)hist_max / 1e6 : -1.0);
    if (g.nrss) {
      printf(",\"frames_series\":[");
      for (size_t i = 0; i < g.nrss; i++)
        printf("%s%" PRIu64, i ? "," : "", g.ch_fr_series[i]);
      printf("]");
    }
    break;
  }
  case SC_RECONNECT:
    /* The rate counts from the first session back: before it the server
     * was restarting (outage_s), which is not the listener's doing. */
    span = (double)(g.t_ready_last - g.rc_first) / 1e9;
    printf(",\"outage_s\":%.3f",
           g.rc_first ? (double)(g.rc_first - g.rc_t0) / 1e9 : -1.0);
    printf(",\"offered_per_s\":%.0f,\"reconnected\":%u,\"span_s\":%.3f,"
           "\"reconnect_rate_per_s\":%.1f,\"refused_retries\":%" PRIu64,
           g.rate, g.stage == 2 ? g.ready : 0, span,
           g.stage == 2 && span > 0 ? g.ready / span : 0, g.refused_retries);
    print_dist("handshake_ms", g.hs, g.nhs);
    break;
  }
  if (g.scenario == SC_FLIP || g.scenario == SC_LATENCY ||
      g.scenario == SC_CHANNEL) {
    span = (double)(g.t_measure1 - g.t_measure0) / 1e9;
    printf(",\"loadgen_cpu_s\":%.3f", g.self1 - g.self0);
    if (g.cpu0 >= 0 && g.cpu1 >= 0 && g.pid > 0) {
      double cpu = g.cpu1 - g.cpu0;
      uint64_t done = g.scenario == SC_FLIP      ? g.counted - g.counted0
                      : g.scenario == SC_CHANNEL ? g.ch_frames
                                                 : g.nlat;
      printf(",\"server_cpu_s\":%.3f,\"server_sys_cpu_s\":%.3f"
             ",\"server_cpu_share\":%.3f",
             cpu, g.sys1 - g.sys0, span > 0 ? cpu / span : 0);
      if (cpu > 0)
        printf(",\"changes_per_server_cpu_s\":%.1f", (double)done / cpu);
      if (g.sys1 > g.sys0)
        printf(",\"changes_per_server_sys_cpu_s\":%.1f",
               (double)done / (g.sys1 - g.sys0));
    }
    if (g.store_pid > 0 && g.store0 >= 0 && g.store1 >= 0) {
      uint64_t done = g.scenario == SC_FLIP ? g.counted - g.counted0 : g.nlat;
      printf(",\"store_cpu_s\":%.3f", g.store1 - g.store0);
      if (done)
        printf(",\"store_cpu_us_per_change\":%.3f",
               (g.store1 - g.store0) * 1e6 / (double)done);
    }
  }
  if (g.nrss) {
    printf(",\"rss_series\":[");
    for (size_t i = 0; i < g.nrss; i++)
      printf("%s[%.1f,%ld]", i ? "," : "", g.rss_t[i], g.rss_kb[i]);
    printf("]");
  }
  printf("}\n");
  fflush(stdout);
  /* Exiting closes every socket at once; the runner waits for the server to
   * see them gone before the next scenario. */
  exit(timed_out ? 3 : 0);
}

/* ---- setup -----------------------------------------------------------------
 */

static void usage(void) {
  fprintf(stderr,
          "usage: presence_load --scenario "
          "idle|churn|flip|latency|reconnect|fanout|channel\n"
          "  [--target 127.0.0.1:7070] [--mode presenced|echo|centrifugo]\n"
          "  [--watch K] [--one-user 0|1] [--channel-ns NS] [--channels 0|1]\n"
          "  [--snapshot 0|1] [--session-only 0|1]\n"
          "  [--conns N] [--sources K] [--concurrency C] [--secret S]\n"
          "  [--duration-s T] [--warm-s W] [--hold-s H] [--window W] [--batch 0|1]\n"
          "  [--relay 0|1]\n"
          "  [--rate R] [--subscribe 0|1] [--pid PID] [--store-pid PID]\n"
          "  [--rss-interval-s S] [--max-s S] [--channel NAME]\n"
          "  [--churn-conns K] [--churn-rate R] [--update-rate R]\n");
  exit(2);
}

static void parse_target(const char *v) {
  const char *colon = strrchr(v, ':');
  if (!colon || (size_t)(colon - v) >= sizeof g.host) usage();
  memcpy(g.host, v, (size_t)(colon - v));
  g.host[colon - v] = '\0';
  g.port = atoi(colon + 1);
  memset(&g.dst, 0, sizeof g.dst);
  g.dst.sin_family = AF_INET;
  g.dst.sin_port = htons((uint16_t)g.port);
  if (inet_pton(AF_INET, g.host, &g.dst.sin_addr) != 1 || g.port <= 0 ||
      g.port > 65535) {
    fprintf(stderr, "load: --target: expected IPV4:PORT, got '%s'\n", v);
    exit(2);
  }
  if ((ntohl(g.dst.sin_addr.s_addr) >> 24) != 127) {
    fprintf(stderr, "load: refusing a target outside 127.0.0.0/8\n");
    exit(2);
  }
}

/* Enough descriptors for every connection, or say why not and cap. */
static void raise_nofile(void) {
  rlim_t need = (rlim_t)g.nconns + 64;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur >= need) return;
  struct rlimit want = {need, rl.rlim_max > need ? rl.rlim_max : need};
  if (setrlimit(RLIMIT_NOFILE, &want) == 0) return;
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  uint32_t cap = rl.rlim_cur > 64 ? (uint32_t)(rl.rlim_cur - 64) : 0;
  fprintf(stderr,
          "load: cannot raise RLIMIT_NOFILE to %llu (hard limit %llu: raising "
          "it needs CAP_SYS_RESOURCE, e.g. root outside a container, or "
          "`ulimit -Hn`): capping connections at %u\n",
          (unsigned long long)need, (unsigned long long)rl.rlim_max, cap);
  g.nconns = cap;
}

int main(int argc, char **argv) {
  /* A server that closes a connection (a slow consumer's, a refusal) is
   * something to count, not a SIGPIPE that kills the whole run. */
  signal(SIGPIPE, SIG_IGN);
  g.scenario = -1;
  parse_target("127.0.0.1:7070");
  g.nconns = 1000;
  g.concurrency = 256;
  g.duration_s = 10;
  g.warm_s = 1;
  g.hold_s = 3;
  g.max_s = 120;
  g.rate = 10000;
  g.window = 4;
  g.subscribe = 1;
  g.snapshot = 1;
  g.watch = -1;
  g.ns = "pr";
  g.chname = "bench:room";
  g.churn_conns = 100;
  g.churn_rate = 100;
  g.update_rate = 10;
  g.secret = "bench-secret-0123456789-abcdefghijkl"; /* bench/run.py's */
  g.rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) usage();
    const char *v = argv[++i];
    if (!strcmp(a, "--scenario")) {
      for (int k = 0; k < SC_COUNT_; k++)
        if (!strcmp(v, scenario_names[k])) g.scenario = k;
    } else if (!strcmp(a, "--target")) {
      parse_target(v);
    } else if (!strcmp(a, "--mode")) {
      g.echo = !strcmp(v, "echo");
      g.cf = !strcmp(v, "centrifugo");
      if (!g.echo && !g.cf && strcmp(v, "presenced")) usage();
    } else if (!strcmp(a, "--conns")) {
      g.nconns = (uint32_t)strtoul(v, NULL, 10);
    } else if (!strcmp(a, "--sources")) {
      g.nsources = (uint32_t)strtoul(v, NULL, 10);
    } else if (!strcmp(a, "--concurrency")) {
      g.concurrency = (uint32_t)strtoul(v, NULL, 10);
    } else if (!strcmp(a, "--secret")) {
      g.secret = v;
    } else if (!strcmp(a, "--duration-s")) {
      g.duration_s = atof(v);
    } else if (!strcmp(a, "--warm-s")) {
      g.warm_s = atof(v);
    } else if (!strcmp(a, "--hold-s")) {
      g.hold_s = atof(v);
    } else if (!strcmp(a, "--max-s")) {
      g.max_s = atof(v);
    } else if (!strcmp(a, "--rate")) {
      g.rate = atof(v);
    } else if (!strcmp(a, "--window")) {
      g.window = (uint32_t)strtoul(v, NULL, 10);
    } else if (!strcmp(a, "--batch")) {
      g.batch = atoi(v);
    } else if (!strcmp(a, "--relay")) {
      g.relay = atoi(v);
    } else if (!strcmp(a, "--subscribe")) {
      g.subscribe = atoi(v);
    } else if (!strcmp(a, "--watch")) {
      g.watch = atol(v);
    } else if (!strcmp(a, "--one-user")) {
      g.one_user = atoi(v);
    } else if (!strcmp(a, "--channel-ns")) {
      g.ns = v;
    } else if (!strcmp(a, "--snapshot")) {
      g.snapshot = atoi(v);
    } else if (!strcmp(a, "--session-only")) {
      g.session_only = atoi(v);
    } else if (!strcmp(a, "--channels")) {
      g.chan = atoi(v);
    } else if (!strcmp(a, "--pid")) {
      g.pid = atoi(v);
    } else if (!strcmp(a, "--channel")) {
      g.chname = v;
    } else if (!strcmp(a, "--churn-conns")) {
      g.churn_conns = (uint32_t)strtoul(v, NULL, 10);
    } else if (!strcmp(a, "--churn-rate")) {
      g.churn_rate = atof(v);
    } else if (!strcmp(a, "--update-rate")) {
      g.update_rate = atof(v);
    } else if (!strcmp(a, "--store-pid")) {
      g.store_pid = atoi(v);
    } else if (!strcmp(a, "--rss-interval-s")) {
      g.rss_interval_s = atof(v);
    } else {
      usage();
    }
  }
  if (g.scenario < 0 || g.nconns < 2 || g.nconns > MAX_CONNS || g.rate <= 0 ||
      g.max_s <= 0 || g.max_s > 7200 || g.concurrency == 0 || g.window == 0 ||
      g.window > 1000)
    usage();
  if (g.scenario == SC_CHANNEL) {
    /* --conns members, then the churning sessions after them */
    if (strlen(g.chname) > 128 || strchr(g.chname, '"') ||
        strchr(g.chname, '\\') || g.churn_rate < 0 || g.update_rate < 0 ||
        g.churn_conns > MAX_CONNS - g.nconns)
      usage();
    g.members = g.nconns;
    g.nconns += g.churn_conns;
    g.chan = 1;
  }
  g.requested = g.nconns;
  raise_nofile();
  if (g.nconns < 2) return 1;
  if (g.watch >= (long)g.nconns) usage();
  g.nstorm = g.nconns;
  if (g.scenario == SC_FANOUT) {
    /* the last connection is the joiner: everyone watches its user */
    g.nstorm = g.nconns - 1;
    g.watch = g.nconns - 1;
  }
  /* ~28k ephemeral ports per source address towards one destination. */
  if (!g.nsources) g.nsources = g.nconns / 20000 + 2;
  if (g.nsources > MAX_SOURCES) g.nsources = MAX_SOURCES;
  for (uint32_t k = 0; k < g.nsources; k++) {
    g.src[k].sin_family = AF_INET;
    g.src[k].sin_addr.s_addr = htonl((127u << 24) | (2 + k));
  }

  g.conns = calloc(g.nconns, sizeof *g.conns);
  owed_list = calloc(g.nconns, sizeof *owed_list);
  g.tokens = calloc(g.nconns, sizeof *g.tokens);
  g.hs = malloc(MAX_SAMPLES * sizeof *g.hs);
  int sampled = g.scenario == SC_LATENCY || g.scenario == SC_FANOUT;
  g.lat = sampled ? malloc(MAX_SAMPLES * sizeof *g.lat) : NULL;
  g.fo_all = g.scenario == SC_FANOUT ? malloc(MAX_SAMPLES * sizeof *g.fo_all)
                                     : NULL;
  g.queue = calloc(g.nconns, sizeof *g.queue);
  if (g.scenario == SC_CHANNEL) {
    if (g.members > g.nconns) g.members = g.nconns; /* capped descriptors */
    g.churn_conns = g.nconns - g.members;
    g.ch_leave_t = calloc(g.churn_conns + 1, sizeof *g.ch_leave_t);
    if (!g.ch_leave_t) return 1;
  }
  if (!g.conns || !g.tokens || !g.hs || !g.queue || (sampled && !g.lat) ||
      (g.scenario == SC_FANOUT && !g.fo_all)) {
    fprintf(stderr, "load: out of memory\n");
    return 1;
  }
  long long exp = (long long)time(NULL) + 7200;
  for (uint32_t i = 0; i < g.nconns; i++) {
    char claims[128];
    snprintf(claims, sizeof claims,
             "{\"sub\":\"u%07u\",\"exp\":%lld,\"watch\":\"*\"%s}",
             g.one_user ? 0 : i, exp,
             /* presenced's grant to join; to Centrifugo a "channels" claim
              * would mean server-side subscriptions, so never sent there */
             g.chan ? ",\"channels\":\"*\"" : "");
    g.tokens[i] =
        jwt_sign_hs256((const uint8_t *)g.secret, strlen(g.secret), claims);
    if (!g.tokens[i]) return 1;
    g.conns[i].idx = i;
    if (g.scenario == SC_LATENCY) {
      g.conns[i].fifo = malloc(FIFO_CAP * sizeof(uint64_t));
      if (!g.conns[i].fifo) return 1;
    }
  }

  g.loop = uv_default_loop();
  uv_timer_init(g.loop, &g.deadline);
  uv_timer_init(g.loop, &g.phase);
  uv_timer_init(g.loop, &g.tick);
  uv_timer_init(g.loop, &g.rss_timer);
  g.rss_before = read_rss_kb(g.pid);
  if (g.scenario == SC_IDLE) g.cpu0 = read_cpu_s(g.pid);
  g.t_start = uv_hrtime();
  if (g.rss_interval_s > 0) {
    uint64_t ms = (uint64_t)(g.rss_interval_s * 1000);
    uv_timer_start(&g.rss_timer, on_rss, 0, ms ? ms : 1);
  }
  if (g.scenario == SC_CHURN) {
    /* churn runs --duration-s (within --max-s), every slot cycling */
    g.running = 1;
    double d = g.duration_s < g.max_s ? g.duration_s : g.max_s;
    uv_timer_start(&g.deadline, on_deadline, (uint64_t)(d * 1000), 0);
    for (uint32_t i = 0; i < g.nconns; i++)
      conn_start(&g.conns[i]);
  } else {
    uv_timer_start(&g.deadline, on_deadline, (uint64_t)(g.max_s * 1000), 0);
    if (g.scenario == SC_RECONNECT) uv_timer_start(&g.tick, on_rc_tick, 1, 1);
    storm_next();
  }
  uv_run(g.loop, UV_RUN_DEFAULT);
  finish();
  return 0;
}
