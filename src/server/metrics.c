/* SPDX-License-Identifier: MIT */
/*
 * GET /metrics in the Prometheus text exposition format (version 0.0.4).
 * Names follow the conventions: presenced_ prefix, base units in the name,
 * _total for counters. With --workers every worker's figures, labelled
 * worker="k" (metrics.h).
 */
/* MAP_ANONYMOUS (the workers' shared figures) is not POSIX 2008, the
 * build's level: Linux and the BSDs have it under _DEFAULT_SOURCE. */
#define _DEFAULT_SOURCE
#include "server/metrics.h"
#include "server/server.h"
#include "server/webhook.h"

#include "presence_redis.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void family(buf_t *b, const char *name, const char *type,
                   const char *help) {
  buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family of one sample without labels. */
static void metric(buf_t *b, const char *name, const char *type,
                   const char *help, uint64_t v) {
  family(b, name, type, help);
  buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* The Redis store's two connections (commands, the log reader), each
 * sample labelled conn="commands" or conn="reader". */
static void redis_conn_metrics(buf_t *b, presence_store_t *store) {
  presence_redis_conn_metrics_t m[2];
  for (int i = 0; i < 2; i++)
    if (presence_redis_conn_metrics(store, i, &m[i])) return;
  static const char *const conn[2] = {"commands", "reader"};
  static const struct {
    const char *name, *type, *help;
    size_t off;
  } f[] = {
#define F(n, t, h, field)                                                      \
  {n, t, h, offsetof(presence_redis_conn_metrics_t, field)}
      F("presenced_redis_commands_total", "counter", "Commands sent to Redis.",
        commands),
      F("presenced_redis_error_replies_total", "counter",
        "Error replies from Redis.", errors),
      F("presenced_redis_failed_commands_total", "counter",
        "Commands that got no reply (connection lost, timed out, refused).",
        failed),
      F("presenced_redis_timeouts_total", "counter",
        "Connections dropped because Redis answered too late.", timeouts),
      F("presenced_redis_protocol_errors_total", "counter",
        "Replies refused: not RESP, or past the size limits.",
        protocol_errors),
      F("presenced_redis_connects_total", "counter",
        "Connections made ready (AUTH and SELECT done).", connects),
      F("presenced_redis_connect_failures_total", "counter",
        "Connection attempts that failed.", connect_failures),
      F("presenced_redis_sent_bytes_total", "counter",
        "RESP bytes sent (before TLS).", bytes_out),
      F("presenced_redis_received_bytes_total", "counter",
        "RESP bytes received (after TLS).", bytes_in),
#undef F
  };
  for (size_t k = 0; k < sizeof f / sizeof *f; k++) {
    family(b, f[k].name, f[k].type, f[k].help);
    for (int i = 0; i < 2; i++) {
      uint64_t v;
      memcpy(&v, (const char *)&m[i] + f[k].off, sizeof v);
      buf_printf(b, "%s{conn=\"%s\"} %llu\n", f[k].name, conn[i],
                 (unsigned long long)v);
    }
  }
  family(b, "presenced_redis_up", "gauge",
         "1 while the connection to Redis is up.");
  for (int i = 0; i < 2; i++)
    buf_printf(b, "presenced_redis_up{conn=\"%s\"} %d\n", conn[i],
               m[i].up ? 1 : 0);
}

/* The process's own figures, unlabelled, into b. */
static void render(srv_t *s, buf_t *b) {
  presence_stats_t st;
  memset(&st, 0, sizeof st);
  presence_stats(s->p, &st);

  metric(b, "presenced_connections", "gauge", "Open TCP connections.",
         s->nconns);
  metric(b, "presenced_websocket_connections", "gauge",
         "Open WebSocket client connections.", s->nws);
  metric(b, "presenced_event_streams", "gauge",
         "Open Server-Sent Events streams.", s->nsse);
  metric(b, "presenced_connections_accepted_total", "counter",
         "TCP connections accepted.", s->accepted_total);
  metric(b, "presenced_websocket_messages_received_total", "counter",
         "Text messages received from WebSocket clients.",
         s->ws_messages_total);
  {
    uint64_t oc, od, osn, ops;
    origin_counts(s, &oc, &od, &osn, &ops);
    family(b, "presenced_origins", "gauge",
           "Backend origins: connected, or detached within the resume window.");
    buf_printf(b, "presenced_origins{state=\"connected\"} %llu\n",
               (unsigned long long)oc);
    buf_printf(b, "presenced_origins{state=\"detached\"} %llu\n",
               (unsigned long long)od);
    metric(b, "presenced_backend_sessions", "gauge",
           "Sessions reported by backends (origins and HTTP sessions).", osn);
    metric(b, "presenced_backend_ops_total", "counter",
           "Ops applied or refused on backend connections.", ops);
  }
  metric(b, "presenced_token_refreshes_total", "counter",
         "Client tokens replaced in place on a live WebSocket.",
         s->token_refreshes_total);

  metric(b, "presenced_sessions", "gauge", "Sessions held by the store.",
         st.sessions);
  family(b, "presenced_users", "gauge", "Users known to the store by status.");
  uint64_t offline = st.users_known - st.users_online - st.users_idle;
  if (st.users_known < st.users_online + st.users_idle) offline = 0;
  buf_printf(b, "presenced_users{status=\"online\"} %llu\n",
             (unsigned long long)st.users_online);
  buf_printf(b, "presenced_users{status=\"idle\"} %llu\n",
             (unsigned long long)st.users_idle);
  buf_printf(b, "presenced_users{status=\"offline\"} %llu\n",
             (unsigned long long)offline);

  presence_redis_cluster_stats_t cl;
  if (s->rstore && !presence_redis_cluster_stats(s->rstore, &cl) &&
      cl.sampled_mono_ms) {
    /* The figures above are this instance's; Redis counts the cluster's
     * (sampled at the last heartbeat). */
    metric(b, "presenced_cluster_users_present", "gauge",
           "Users online or idle (or in offline grace) on any instance.",
           cl.users_present);
    metric(b, "presenced_cluster_sessions", "gauge",
           "Sessions on every instance sharing the Redis store.", cl.sessions);
    metric(b, "presenced_cluster_instances", "gauge",
           "Instances holding a live lease in the Redis store.", cl.instances);
  }
  if (s->rstore) redis_conn_metrics(b, s->rstore);

  family(b, "presenced_events_total", "counter", "Events emitted by type.");
  for (int t = 0; t < PRESENCE_EV_COUNT_; t++)
    buf_printf(b, "presenced_events_total{type=\"%s\"} %llu\n",
               presence_event_type_name((presence_event_type_t)t),
               (unsigned long long)st.events[t]);
  metric(b, "presenced_event_sequence", "gauge",
         "Sequence number of the newest event.", st.last_seq);

  family(b, "presenced_errors_total", "counter",
         "Errors answered to clients and backends, by protocol code.");
  for (size_t i = 0; i < s->nerrors; i++) {
    buf_puts(b, "presenced_errors_total{code=");
    buf_put_json_str(b, s->errors[i].code); /* codes are [a-z_] */
    buf_printf(b, "} %llu\n", (unsigned long long)s->errors[i].count);
  }

  metric(b, "presenced_write_queue_bytes", "gauge",
         "Bytes queued to slow connections, not yet written.",
         s->wq_bytes_total);
  webhook_metrics(s, b);
  metric(b, "presenced_uptime_seconds", "gauge", "Seconds since start.",
         (uint64_t)((srv_now_mono(s) - s->started_mono_ms) / 1000));
  metric(b, "presenced_start_time_seconds", "gauge",
         "Start time of the process since the Unix epoch in seconds.",
         (uint64_t)(s->started_wall_ms / 1000));
  family(b, "presenced_build_info", "gauge", "Version of presenced.");
  buf_printf(b, "presenced_build_info{version=\"%s\"} 1\n",
             PRESENCE_VERSION_STRING);
}

/* ---- --workers: every worker's figures in one scrape ------------------- */

/* One worker's published text: a seqlock (odd while it is written) over
 * the text, so a reader in another process never takes half of two. */
#define SLOT_CAP (256u * 1024u)
typedef struct {
  atomic_uint seq;
  uint32_t len; /* 0: nothing published (never, or the worker ended) */
  int64_t wall_ms;
  char text[SLOT_CAP];
} slot_t;

struct metrics_shm {
  uint32_t n;
  slot_t slots[];
};

/* A worker whose figures are older than this (stuck, or killed and not yet
 * noticed) is left out rather than shown as current. */
#define STALE_MS 10000
#define PUBLISH_MS 1000

struct metrics_shm *metrics_shm_new(uint32_t n) {
  size_t size = sizeof(struct metrics_shm) + (size_t)n * sizeof(slot_t);
  /* Pages are touched only as far as each text reaches. */
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
  if (p == MAP_FAILED) return NULL;
  struct metrics_shm *m = p;
  m->n = n;
  for (uint32_t i = 0; i < n; i++) atomic_init(&m->slots[i].seq, 0);
  return m;
}

static void slot_write(slot_t *sl, const char *text, uint32_t len,
                       int64_t wall) {
  unsigned q = atomic_load_explicit(&sl->seq, memory_order_relaxed);
  /* Odd: a worker killed in the middle of its write (the supervisor's
   * clear, or its replacement, comes next). Counted from the next even
   * number, or odd would mean "written" from then on. */
  q += q & 1u;
  atomic_store_explicit(&sl->seq, q + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  sl->len = len;
  sl->wall_ms = wall;
  if (len) memcpy(sl->text, text, len);
  atomic_store_explicit(&sl->seq, q + 2, memory_order_release);
}

void metrics_shm_clear(struct metrics_shm *m, uint32_t k) {
  if (m && k >= 1 && k <= m->n) slot_write(&m->slots[k - 1], NULL, 0, 0);
}

/* Copy slot sl into out; 0 if it holds a text published since min_wall. */
static int slot_read(slot_t *sl, buf_t *out, int64_t min_wall) {
  for (int tries = 0; tries < 100; tries++) {
    unsigned q = atomic_load_explicit(&sl->seq, memory_order_acquire);
    if (q & 1) continue;
    uint32_t len = sl->len;
    int64_t wall = sl->wall_ms;
    if (len > SLOT_CAP) continue;
    buf_reset(out);
    buf_append(out, sl->text, len);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&sl->seq, memory_order_relaxed) != q) continue;
    return len && wall >= min_wall && !buf_failed(out) ? 0 : -1;
  }
  return -1;
}

/* The families whose figures are the cluster's (from Redis), the same from
 * every worker: shown once, unlabelled, rather than once per worker. */
static int cluster_wide(const char *name, size_t n) {
  return n >= 18 && !memcmp(name, "presenced_cluster_", 18);
}

/* text with worker="k" added to each sample's labels, into out. */
static void label(const char *text, size_t len, uint32_t k, buf_t *out) {
  char lab[32];
  int ll = snprintf(lab, sizeof lab, "worker=\"%u\"", k);
  const char *p = text, *end = text + len, *family = "";
  size_t flen = 0;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    if (le - p > 7 && !memcmp(p, "# HELP ", 7)) {
      family = p + 7;
      flen = strcspn(family, " \n");
    }
    /* A metric name ends at '{' or ' ' (no label value is read yet: a
     * webhook's name= may hold either). */
    const char *ne = p;
    while (ne < le && *ne != '{' && *ne != ' ') ne++;
    if (*p == '#' || ne == le || cluster_wide(family, flen)) {
      buf_append(out, p, (size_t)(le - p));
    } else if (*ne == '{') {
      /* name{a="b"} v: the label goes last, name{a="b",worker="k"} v. The
       * closing brace is the first outside a quoted value (a value may
       * hold '}' and escaped quotes). */
      const char *brace = ne, *close = ne + 1;
      for (int q = 0; close < le && (q || *close != '}'); close++) {
        if (q && *close == '\\' && close + 1 < le)
          close++;
        else if (*close == '"')
          q = !q;
      }
      if (close == le) { /* not the format: passed on as it is */
        buf_append(out, p, (size_t)(le - p));
        buf_putc(out, '\n');
        p = nl ? nl + 1 : end;
        continue;
      }
      buf_append(out, p, (size_t)(close - p));
      if (close > brace + 1) buf_putc(out, ',');
      buf_append(out, lab, (size_t)ll);
      buf_append(out, close, (size_t)(le - close));
    } else {
      buf_append(out, p, (size_t)(ne - p));
      buf_putc(out, '{');
      buf_append(out, lab, (size_t)ll);
      buf_putc(out, '}');
      buf_append(out, ne, (size_t)(le - ne));
    }
    buf_putc(out, '\n');
    p = nl ? nl + 1 : end;
  }
}

/* One family of a text: its name, its HELP and TYPE lines, its samples. */
typedef struct {
  const char *name;
  size_t nlen;
  const char *head, *samples, *end;
} fam_t;

typedef struct {
  const char *text;
  size_t len;
  fam_t *fams;
  size_t nfams;
} text_t;

static int index_text(text_t *t) {
  size_t cap = 0;
  t->fams = NULL;
  t->nfams = 0;
  const char *p = t->text, *end = t->text + t->len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *next = nl ? nl + 1 : end;
    if (end - p > 7 && !memcmp(p, "# HELP ", 7)) {
      if (t->nfams == cap) {
        cap = cap ? cap * 2 : 64;
        fam_t *f = realloc(t->fams, cap * sizeof *f);
        if (!f) return -1;
        t->fams = f;
      }
      fam_t *f = &t->fams[t->nfams++];
      f->name = p + 7;
      f->nlen = strcspn(f->name, " \n");
      f->head = p;
      f->samples = f->end = next;
    } else if (t->nfams) {
      fam_t *f = &t->fams[t->nfams - 1];
      if (*p == '#') f->samples = next; /* the TYPE line */
      f->end = next;
    }
    p = next;
  }
  return 0;
}

static const fam_t *find_fam(const text_t *t, const fam_t *f) {
  for (size_t i = 0; i < t->nfams; i++)
    if (t->fams[i].nlen == f->nlen && !memcmp(t->fams[i].name, f->name, f->nlen))
      return &t->fams[i];
  return NULL;
}

/* texts[0] is the answering worker's; all in worker order after it. Each
 * family once (the text format wants a family's samples together, under
 * one HELP and TYPE), with every worker's samples; a cluster-wide family
 * from the first text holding it. */
static void merge(text_t *texts, size_t n, buf_t *out) {
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < texts[i].nfams; j++) {
      const fam_t *f = &texts[i].fams[j];
      int seen = 0;
      for (size_t e = 0; e < i && !seen; e++) seen = find_fam(&texts[e], f) != NULL;
      if (seen) continue;
      buf_append(out, f->head, (size_t)(f->samples - f->head));
      buf_append(out, f->samples, (size_t)(f->end - f->samples));
      if (cluster_wide(f->name, f->nlen)) continue;
      for (size_t u = i + 1; u < n; u++) {
        const fam_t *g = find_fam(&texts[u], f);
        if (g) buf_append(out, g->samples, (size_t)(g->end - g->samples));
      }
    }
  }
}

static buf_t raw, mine;
static int64_t published_at;

/* This worker's labelled figures into mine, and into its slot. */
static void publish(srv_t *s) {
  struct metrics_shm *m = s->cfg.metrics_shm;
  buf_reset(&raw);
  buf_reset(&mine);
  render(s, &raw);
  label(raw.data ? raw.data : "", raw.len, s->cfg.worker, &mine);
  buf_shrink(&raw, 65536);
  published_at = srv_now_mono(s);
  if (!m || s->cfg.worker < 1 || s->cfg.worker > m->n) return;
  slot_t *sl = &m->slots[s->cfg.worker - 1];
  /* Too large for the slot (hundreds of error codes or endpoints): the
   * others show nothing of this worker rather than a part. */
  if (buf_failed(&mine) || mine.len > SLOT_CAP)
    slot_write(sl, NULL, 0, 0);
  else
    slot_write(sl, mine.data, (uint32_t)mine.len, srv_now_wall(s));
}

void metrics_publish(srv_t *s, int64_t now) {
  if (!s->cfg.worker || !s->cfg.metrics_shm || s->shutting_down) return;
  if (published_at && now - published_at < PUBLISH_MS) return;
  publish(s);
  buf_shrink(&mine, 65536);
}

/* --workers: this worker's figures and the others', each labelled. */
static int render_workers(srv_t *s, buf_t *out) {
  struct metrics_shm *m = s->cfg.metrics_shm;
  publish(s);
  uint32_t n = m ? m->n : 1;
  text_t *texts = calloc(n, sizeof *texts);
  buf_t *copies = calloc(n, sizeof *copies);
  int rc = -1;
  if (!texts || !copies || buf_failed(&mine)) goto out;
  size_t nt = 0;
  texts[nt].text = mine.data ? mine.data : "";
  texts[nt++].len = mine.len;
  int64_t min_wall = srv_now_wall(s) - STALE_MS;
  for (uint32_t k = 1; m && k <= n; k++) {
    if (k == s->cfg.worker) continue;
    buf_init(&copies[k - 1]);
    if (slot_read(&m->slots[k - 1], &copies[k - 1], min_wall) != 0) continue;
    texts[nt].text = copies[k - 1].data;
    texts[nt++].len = copies[k - 1].len;
  }
  for (size_t i = 0; i < nt; i++)
    if (index_text(&texts[i]) != 0) goto out;
  merge(texts, nt, out);
  /* How many workers this answer holds: fewer than --workers while one is
   * restarting, or stuck (its figures older than STALE_MS are left out). */
  family(out, "presenced_metrics_workers", "gauge",
         "Workers whose figures this scrape holds (--workers).");
  buf_printf(out, "presenced_metrics_workers %zu\n", nt);
  rc = 0;
out:
  for (uint32_t k = 0; copies && k < n; k++) buf_free(&copies[k]);
  for (size_t i = 0; texts && i < n; i++) free(texts[i].fams);
  free(copies);
  free(texts);
  return rc;
}

void metrics_handle(conn_t *c, http_req_t *r) {
  srv_t *s = c->srv;
  (void)r;
  buf_t *b = &s->scratch;
  buf_reset(b);
  if (!s->cfg.worker)
    render(s, b);
  else if (render_workers(s, b) != 0)
    b->failed = 1;
  if (buf_failed(b)) {
    http_error(c, 503, "out_of_memory", "out of memory");
    return;
  }
  http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
               b->data, b->len);
  buf_shrink(b, 65536);
  buf_shrink(&mine, 65536);
}
