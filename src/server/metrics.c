/* SPDX-License-Identifier: MIT */
/*
 * GET /metrics in the Prometheus text exposition format (version 0.0.4).
 * Names follow the conventions: presenced_ prefix, base units in the name,
 * _total for counters.
 */
#include "server/server.h"
#include "server/webhook.h"

#include "presence_redis.h"

#include <stddef.h>
#include <string.h>

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

void metrics_handle(conn_t *c, http_req_t *r) {
  srv_t *s = c->srv;
  (void)r;
  presence_stats_t st;
  memset(&st, 0, sizeof st);
  presence_stats(s->p, &st);
  buf_t *b = &s->scratch;
  buf_reset(b);

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

  if (buf_failed(b)) {
    http_error(c, 503, "out_of_memory", "out of memory");
    return;
  }
  http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
               b->data, b->len);
  buf_shrink(b, 65536);
}
