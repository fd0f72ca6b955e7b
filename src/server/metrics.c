/*
 * GET /metrics in the Prometheus text exposition format (version 0.0.4).
 * Names follow the conventions: presenced_ prefix, base units in the name,
 * _total for counters.
 */
#include "server/server.h"
#include "server/webhook.h"

#include "presence_redis.h"

#include <string.h>

static void family(buf_t *b, const char *name, const char *type,
                   const char *help) {
  buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_handle(conn_t *c, http_req_t *r) {
  srv_t *s = c->srv;
  (void)r;
  presence_stats_t st;
  memset(&st, 0, sizeof st);
  presence_stats(s->p, &st);
  buf_t *b = &s->scratch;
  buf_reset(b);

  family(b, "presenced_connections", "gauge", "Open TCP connections.");
  buf_printf(b, "presenced_connections %u\n", s->nconns);
  family(b, "presenced_websocket_connections", "gauge",
         "Open WebSocket client connections.");
  buf_printf(b, "presenced_websocket_connections %u\n", s->nws);
  family(b, "presenced_event_streams", "gauge",
         "Open Server-Sent Events streams.");
  buf_printf(b, "presenced_event_streams %u\n", s->nsse);
  family(b, "presenced_connections_accepted_total", "counter",
         "TCP connections accepted.");
  buf_printf(b, "presenced_connections_accepted_total %llu\n",
             (unsigned long long)s->accepted_total);
  family(b, "presenced_websocket_messages_received_total", "counter",
         "Text messages received from WebSocket clients.");
  buf_printf(b, "presenced_websocket_messages_received_total %llu\n",
             (unsigned long long)s->ws_messages_total);

  family(b, "presenced_sessions", "gauge", "Sessions held by the store.");
  buf_printf(b, "presenced_sessions %llu\n", (unsigned long long)st.sessions);
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
    family(b, "presenced_cluster_users_present", "gauge",
           "Users online or idle (or in offline grace) on any instance.");
    buf_printf(b, "presenced_cluster_users_present %llu\n",
               (unsigned long long)cl.users_present);
    family(b, "presenced_cluster_sessions", "gauge",
           "Sessions on every instance sharing the Redis store.");
    buf_printf(b, "presenced_cluster_sessions %llu\n",
               (unsigned long long)cl.sessions);
    family(b, "presenced_cluster_instances", "gauge",
           "Instances holding a live lease in the Redis store.");
    buf_printf(b, "presenced_cluster_instances %u\n", cl.instances);
  }

  family(b, "presenced_events_total", "counter", "Events emitted by type.");
  for (int t = 0; t < PRESENCE_EV_COUNT_; t++)
    buf_printf(b, "presenced_events_total{type=\"%s\"} %llu\n",
               presence_event_type_name((presence_event_type_t)t),
               (unsigned long long)st.events[t]);
  family(b, "presenced_event_sequence", "gauge",
         "Sequence number of the newest event.");
  buf_printf(b, "presenced_event_sequence %llu\n",
             (unsigned long long)st.last_seq);

  family(b, "presenced_errors_total", "counter",
         "Errors answered to clients and backends, by protocol code.");
  for (size_t i = 0; i < s->nerrors; i++) {
    buf_puts(b, "presenced_errors_total{code=");
    buf_put_json_str(b, s->errors[i].code); /* codes are [a-z_] */
    buf_printf(b, "} %llu\n", (unsigned long long)s->errors[i].count);
  }

  family(b, "presenced_write_queue_bytes", "gauge",
         "Bytes queued to slow connections, not yet written.");
  buf_printf(b, "presenced_write_queue_bytes %llu\n",
             (unsigned long long)s->wq_bytes_total);
  webhook_metrics(s, b);
  family(b, "presenced_uptime_seconds", "gauge", "Seconds since start.");
  buf_printf(b, "presenced_uptime_seconds %lld\n",
             (long long)((srv_now_mono(s) - s->started_mono_ms) / 1000));
  family(b, "presenced_start_time_seconds", "gauge",
         "Start time of the process since the Unix epoch in seconds.");
  buf_printf(b, "presenced_start_time_seconds %lld\n",
             (long long)(s->started_wall_ms / 1000));
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
