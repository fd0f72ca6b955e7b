/* SPDX-License-Identifier: MIT */
/*
 * One log reader per machine (presenced --workers N, issue 20): the store
 * of one worker reads the shared log from Redis as every instance does and
 * copies each XREAD reply, as it came on the wire, to the other workers of
 * its machine over local sockets; their stores take the log from there and
 * run no XREAD of their own. Redis sends the log once per machine instead
 * of once per worker, and a follower is spared the command it would write
 * for each batch.
 *
 * A follower decodes what it receives exactly as it would have decoded the
 * same reply from Redis (the store's take_xread), so the events, kicks,
 * cursors and flags are the same. If its feed ends (the reading worker
 * died, or fell a bound behind this follower), the follower reads the log
 * itself from the last entry it was given: nothing is lost, the machine
 * only goes back to one reader per worker.
 *
 * The sockets come from the supervisor (workers.c); the handles here are
 * libuv's and, as in redis_conn.c, live in libc memory apart from the
 * store, since they close on the loop after it is gone.
 */
#include "store/redis_feed.h"
#include "store/redis_resp.h"

#include <stdlib.h>
#include <string.h>

/* A follower further behind than this (bytes queued to it) is cut off: it
 * reads the log itself, and the reader's memory stays bounded. */
#define FEED_MAX_QUEUED (64u << 20)
#define FEED_CHUNK 65536

typedef struct pipe_h {
  uv_pipe_t pipe;
  presence__rfeed_t *f; /* NULL once abandoned */
  int idx;              /* output index; -1: the input */
} pipe_h;

typedef struct wreq {
  uv_write_t req;
  char *buf;
} wreq_t;

/* What the reader has for follower i this loop turn, not yet written. */
typedef struct pending {
  char *d;
  size_t len, cap;
} pending_t;

typedef struct check_h {
  uv_check_t check;
  presence__rfeed_t *f; /* NULL once abandoned */
} check_h;

struct presence__rfeed {
  const presence_allocator_t *a;
  pipe_h *in;
  pipe_h **out;
  uint32_t n_out;
  /* One write per follower per loop turn (config gather): with the store
   * in shards each shard's read is a message of its own, and a turn often
   * holds several (12 shards: up to 12 wake-ups of each follower, one is
   * enough). The messages of a turn are gathered here and written when the
   * loop has run its I/O callbacks (a check handle), in the order they
   * were sent. One log is read once per turn: written at once (flush
   * NULL), no copy. */
  pending_t *pend;
  check_h *flush;
  bool flush_armed;
  presence__resp_reader_t rd;
  void (*on_reply)(void *ud, redisReply *rep);
  void (*on_end)(void *ud);
  void *ud;
  uint64_t forwarded, received;
};

static void on_closed(uv_handle_t *h) {
  free(h->data);
}

static void drop(pipe_h **pp) {
  if (!*pp) return;
  (*pp)->f = NULL;
  uv_close((uv_handle_t *)&(*pp)->pipe, on_closed);
  *pp = NULL;
}

static pipe_h *open_fd(uv_loop_t *loop, presence__rfeed_t *f, int fd,
                       int idx) {
  pipe_h *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  if (uv_pipe_init(loop, &p->pipe, 0)) {
    free(p);
    return NULL;
  }
  p->pipe.data = p;
  p->f = f;
  p->idx = idx;
  if (uv_pipe_open(&p->pipe, fd)) {
    uv_close((uv_handle_t *)&p->pipe, on_closed);
    return NULL;
  }
  return p;
}

/* ---- the follower's side -------------------------------------------------- */

static void end_input(presence__rfeed_t *f) {
  drop(&f->in);
  presence__resp_fini(&f->rd);
  if (f->on_end) f->on_end(f->ud);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  pipe_h *p = h->data;
  char *b = NULL;
  size_t n = 0;
  *buf = uv_buf_init(NULL, 0);
  if (p->f && !presence__resp_space(&p->f->rd, FEED_CHUNK, &b, &n))
    *buf = uv_buf_init(b, n > (1u << 30) ? 1u << 30 : (unsigned)n);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  pipe_h *p = s->data;
  presence__rfeed_t *f = p->f;
  if (!f || nread == 0) return;
  if (nread < 0) {
    end_input(f);
    return;
  }
  presence__resp_commit(&f->rd, (size_t)nread);
  for (;;) {
    redisReply *rep;
    int rc = presence__resp_next(&f->rd, &rep);
    if (rc == 0) break;
    if (rc < 0) { /* not what a reader sends: read the log ourselves */
      end_input(f);
      return;
    }
    f->received++;
    f->on_reply(f->ud, rep);
    presence__resp_free(f->a, rep);
    if (!f->in) return; /* freed or ended from inside */
  }
}

/* ---- the reader's side ---------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  pipe_h *p = req->handle->data;
  free(w->buf);
  free(w);
  if (status < 0 && p->f) drop(&p->f->out[p->idx]);
}

/* bufs (total bytes) to follower i: straight to the socket when it takes it
 * all (the common case: no copy, no request), the rest copied and queued.
 * A follower too far behind, or whose socket fails, is cut off. */
static void send_one(presence__rfeed_t *f, uint32_t i, const uv_buf_t *bufs,
                     unsigned nbufs, size_t total) {
  pipe_h *p = f->out[i];
  if (!p || !total) return;
  if (p->pipe.write_queue_size > FEED_MAX_QUEUED) {
    drop(&f->out[i]); /* its follower sees the end and reads itself */
    return;
  }
  int done = p->pipe.write_queue_size
                 ? 0
                 : uv_try_write((uv_stream_t *)&p->pipe, bufs, nbufs);
  if (done == UV_EAGAIN) done = 0;
  if (done < 0) {
    drop(&f->out[i]);
    return;
  }
  if ((size_t)done == total) return;
  wreq_t *w = malloc(sizeof *w);
  char *copy = malloc(total - (size_t)done);
  if (!w || !copy) {
    free(w);
    free(copy);
    drop(&f->out[i]);
    return;
  }
  size_t skip = (size_t)done, at = 0;
  for (unsigned k = 0; k < nbufs; k++) {
    size_t l = bufs[k].len;
    if (skip >= l) {
      skip -= l;
      continue;
    }
    memcpy(copy + at, bufs[k].base + skip, l - skip);
    at += l - skip;
    skip = 0;
  }
  w->buf = copy;
  uv_buf_t b = uv_buf_init(copy, (unsigned)at);
  if (uv_write(&w->req, (uv_stream_t *)&p->pipe, &b, 1, on_write)) {
    free(copy);
    free(w);
    drop(&f->out[i]);
  }
}

static void on_check(uv_check_t *h) {
  check_h *c = h->data;
  presence__rfeed_t *f = c->f;
  uv_check_stop(h);
  if (!f) return;
  f->flush_armed = false;
  for (uint32_t i = 0; i < f->n_out; i++) {
    pending_t *p = &f->pend[i];
    if (!p->len) continue;
    uv_buf_t b = uv_buf_init(p->d, (unsigned)p->len);
    send_one(f, i, &b, 1, p->len);
    p->len = 0;
  }
}

/* bufs (total bytes) for follower i, written at the end of this loop turn
 * with whatever else it gets in the turn. Without memory for that: at once,
 * after what is gathered (order kept). */
static void queue_one(presence__rfeed_t *f, uint32_t i, const uv_buf_t *bufs,
                      unsigned nbufs, size_t total) {
  if (!f->out[i] || !total) return;
  pending_t *p = &f->pend[i];
  if (f->flush && p->len + total > p->cap) {
    size_t cap = p->cap ? p->cap : 4096;
    while (cap < p->len + total) cap *= 2;
    char *d = presence__realloc(f->a, p->d, cap);
    if (d) {
      p->d = d;
      p->cap = cap;
    }
  }
  if (!f->flush || p->len + total > p->cap) {
    if (p->len) {
      uv_buf_t b = uv_buf_init(p->d, (unsigned)p->len);
      send_one(f, i, &b, 1, p->len);
      p->len = 0;
    }
    send_one(f, i, bufs, nbufs, total);
    return;
  }
  for (unsigned k = 0; k < nbufs; k++) {
    memcpy(p->d + p->len, bufs[k].base, bufs[k].len);
    p->len += bufs[k].len;
  }
  if (!f->flush_armed && !uv_check_start(&f->flush->check, on_check))
    f->flush_armed = true;
  if (!f->flush_armed) { /* cannot wait for the turn's end: now */
    uv_buf_t b = uv_buf_init(p->d, (unsigned)p->len);
    send_one(f, i, &b, 1, p->len);
    p->len = 0;
  }
}

void presence__rfeed_forward(presence__rfeed_t *f, const char *raw,
                             size_t n) {
  if (!f || !n || !f->n_out) return;
  uv_buf_t b = uv_buf_init((char *)raw, (unsigned)n);
  for (uint32_t i = 0; i < f->n_out; i++) queue_one(f, i, &b, 1, n);
  f->forwarded++;
}

void presence__rfeed_send(presence__rfeed_t *f, uint32_t i,
                          const uv_buf_t *bufs, unsigned nbufs) {
  if (!f || i >= f->n_out) return;
  size_t total = 0;
  for (unsigned k = 0; k < nbufs; k++) total += bufs[k].len;
  queue_one(f, i, bufs, nbufs, total);
  f->forwarded++;
}

void presence__rfeed_cut(presence__rfeed_t *f, uint32_t i) {
  if (f && i < f->n_out) {
    drop(&f->out[i]);
    f->pend[i].len = 0;
  }
}

uint32_t presence__rfeed_outputs(const presence__rfeed_t *f) {
  return f ? f->n_out : 0;
}

bool presence__rfeed_live(const presence__rfeed_t *f, uint32_t i) {
  return f && i < f->n_out && f->out[i];
}

/* ---- both ------------------------------------------------------------------ */

int presence__rfeed_new(const presence__rfeed_config_t *cfg,
                        presence__rfeed_t **out) {
  *out = NULL;
  presence__rfeed_t *f = presence__malloc(cfg->alloc, sizeof *f);
  if (!f) return PRESENCE_ENOMEM;
  memset(f, 0, sizeof *f);
  f->a = cfg->alloc;
  f->on_reply = cfg->on_reply;
  f->on_end = cfg->on_end;
  f->ud = cfg->ud;
  if (cfg->n_out) {
    f->out = presence__malloc(f->a, cfg->n_out * sizeof *f->out);
    if (!f->out) {
      presence__free(f->a, f);
      return PRESENCE_ENOMEM;
    }
    f->pend = presence__malloc(f->a, cfg->n_out * sizeof *f->pend);
    if (!f->pend) {
      presence__free(f->a, f->out);
      presence__free(f->a, f);
      return PRESENCE_ENOMEM;
    }
    memset(f->pend, 0, cfg->n_out * sizeof *f->pend);
    f->n_out = cfg->n_out;
    for (uint32_t i = 0; i < cfg->n_out; i++)
      f->out[i] = open_fd(cfg->loop, f, cfg->out_fds[i], (int)i);
    /* libc, as the pipes: closed on the loop after the feed is freed.
     * Without it each message is written at once. */
    f->flush = cfg->gather ? calloc(1, sizeof *f->flush) : NULL;
    if (f->flush && uv_check_init(cfg->loop, &f->flush->check)) {
      free(f->flush);
      f->flush = NULL;
    }
    if (f->flush) {
      f->flush->check.data = f->flush;
      f->flush->f = f;
    }
  }
  if (cfg->in_fd >= 0) {
    /* The bounds of the reader's connection (redis_conn.c's defaults). */
    presence__resp_init(
        &f->rd, f->a,
        cfg->max_reply_bytes ? cfg->max_reply_bytes : 64u << 20,
        cfg->max_reply_elements ? cfg->max_reply_elements : 1u << 20);
    f->in = open_fd(cfg->loop, f, cfg->in_fd, -1);
    if (f->in &&
        uv_read_start((uv_stream_t *)&f->in->pipe, on_alloc, on_read)) {
      drop(&f->in);
    }
    if (!f->in) presence__resp_fini(&f->rd);
  }
  *out = f;
  return 0;
}

bool presence__rfeed_reading(const presence__rfeed_t *f) {
  return f && f->in;
}

void presence__rfeed_stats(const presence__rfeed_t *f, uint64_t *forwarded,
                           uint64_t *received, uint32_t *followers) {
  *forwarded = f ? f->forwarded : 0;
  *received = f ? f->received : 0;
  *followers = 0;
  for (uint32_t i = 0; f && i < f->n_out; i++)
    *followers += f->out[i] != NULL;
}

void presence__rfeed_free(presence__rfeed_t *f) {
  if (!f) return;
  if (f->in) {
    drop(&f->in);
    presence__resp_fini(&f->rd);
  }
  for (uint32_t i = 0; i < f->n_out; i++) {
    drop(&f->out[i]);
    presence__free(f->a, f->pend[i].d);
  }
  if (f->flush) {
    f->flush->f = NULL;
    uv_close((uv_handle_t *)&f->flush->check, on_closed);
  }
  presence__free(f->a, f->pend);
  presence__free(f->a, f->out);
  presence__free(f->a, f);
}
