/* SPDX-License-Identifier: MIT */
/*
 * The Redis store: many instances of libpresence (or presenced) sharing one
 * Redis behave as one presence service. See docs/internals/redis.md for the
 * key layout, the script and the lease/fencing/reaping protocol.
 *
 * The store runs on a libuv loop (hiredis's async API): every mutation and
 * query completes later, on that loop. It keeps a local table of this
 * instance's own sessions, which is the truth it re-asserts whenever the
 * shared state was lost or this instance was fenced.
 *
 * Outcome codes a done callback may see besides those of presence.h:
 *   ESTORE     Redis is unreachable right now;
 *   ETIMEDOUT  Redis did not answer within command_timeout_ms;
 *   EFENCED    this instance's lease had run out or its epoch was
 *              superseded.
 * In those three cases the local change is kept and re-asserted as soon as
 * the store is reachable again (its events then carry reason "resync"), so
 * the application need not retry.
 *
 * SIGPIPE: the first connection sets it to ignored if it is the default
 * (a Redis closing a connection the store writes to would end the process;
 * the write fails with EPIPE instead and the store reconnects). A host's
 * own handler is kept.
 *
 * Destroying the store (presence_free) does no I/O: pending operations
 * complete with ESHUTDOWN during presence_free, and the instance's sessions
 * stay in Redis until its lease runs out and another instance reaps them.
 * Call presence_redis_leave first for a clean exit.
 */
#ifndef PRESENCE_REDIS_H
#define PRESENCE_REDIS_H

#include "presence_store.h"

#ifdef __cplusplus
extern "C" {
#endif

struct uv_loop_s;

/* TLS for a rediss:// URL. Verification is on unless insecure: the server's
 * certificate must chain to ca_file (NULL: the system's CAs) and name the
 * host (or server_name). cert_file/key_file: a client certificate, for a
 * Redis with tls-auth-clients. */
typedef struct presence_redis_tls {
  const char *ca_file;
  const char *cert_file;
  const char *key_file;
  const char *server_name; /* SNI and the name checked; NULL: the host */
  int insecure;            /* 1: no verification (tests, never production) */
} presence_redis_tls_t;

/* One Redis connection's counters since it was created (every reconnect
 * included). */
typedef struct presence_redis_conn_metrics {
  uint64_t commands;   /* sent */
  uint64_t replies;    /* received (error replies included) */
  uint64_t errors;     /* error replies */
  uint64_t failed;     /* commands failed without a reply (lost, refused) */
  uint64_t timeouts;   /* connections dropped because an answer was late */
  uint64_t protocol_errors; /* replies refused: malformed or past limits */
  uint64_t connects;   /* connections made ready (AUTH and SELECT done) */
  uint64_t connect_failures;
  uint64_t bytes_out, bytes_in; /* RESP, before TLS */
  uint32_t pending;    /* commands awaiting their reply now */
  int up; /* the reader of a store fed the log by another worker's (presenced
             --workers) has no connection: up while that feed runs */
} presence_redis_conn_metrics_t;

/* Interest between the workers of one machine (presenced --workers N): a
 * table in memory shared by the N processes (made before they fork), where
 * each worker counts what its own clients watch; the machine's log reader
 * (the store given feed_out) passes each worker only the events it counts,
 * and dispatches to its own host only those too. A key is counted once per
 * subscriber set (add when the first subscriber comes, remove when the last
 * goes), and an event reaches a worker when any of these holds:
 *   PRESENCE_INTEREST_ALL      the worker counts "all" (an event stream, a
 *                              webhook endpoint it delivers): every event;
 *   PRESENCE_INTEREST_USER     session and user status events of that user;
 *   PRESENCE_INTEREST_CHANNEL  channel events of that channel;
 * and always: availability and status-message events, cleanups, and any
 * type this list does not name (their consumers are not keyed). The table
 * hashes keys into counters, so two keys may share one: a worker then gets
 * some events nobody on it watches (dropped by its fan-out), never fewer.
 * Cross-process: counters are C11 atomics. docs/internals/redis.md. */
typedef struct presence_redis_interest presence_redis_interest_t;
typedef enum presence_redis_interest_kind {
  PRESENCE_INTEREST_ALL,
  PRESENCE_INTEREST_USER,
  PRESENCE_INTEREST_CHANNEL
} presence_redis_interest_kind_t;

/* A table for n workers, in anonymous shared memory (MAP_SHARED), to make
 * before forking them; NULL on failure (no memory, n is 0 or over 1024). */
presence_redis_interest_t *presence_redis_interest_new(uint32_t workers);
/* Unmaps it in the calling process. */
void presence_redis_interest_free(presence_redis_interest_t *in);
/* Count (delta 1) or uncount (-1) key (NULL for ALL) for worker slot
 * (0..n-1). Safe from any process sharing the table; a count never goes
 * below 0. Out-of-range slots are ignored. */
void presence_redis_interest_count(presence_redis_interest_t *in,
                                   uint32_t slot,
                                   presence_redis_interest_kind_t kind,
                                   const char *key, int delta);

typedef struct presence_redis_options {
  struct uv_loop_s *loop; /* required */
  /* "redis://[user[:password]@]host[:port][/db]" (port 6379, db 0 by
   * default), "rediss://..." (TLS, see tls) or "unix:/path/to/socket" with
   * an optional "?db=N"; or Sentinel:
   * "redis+sentinel://[user[:password]@]host[:port],host[:port]/master[/db]"
   * (sentinel port 26379 by default; rediss+sentinel:// for TLS to the
   * sentinels and the data nodes): the primary of master, followed across
   * failovers. NULL: redis://127.0.0.1. The URL may hold secrets:
   * the store never logs it whole (presence_redis_url_redact). */
  const char *url;
  const char *prefix;          /* key prefix; NULL: "presence:" */
  uint32_t heartbeat_ms;       /* lease renewal; 0: 2000 */
  uint32_t lease_ms;           /* lease length; 0: 3 heartbeats */
  uint32_t command_timeout_ms; /* watchdog; 0: 2000 */
  uint32_t reconcile_ms;       /* orphan sweep period; 0: 30000 */
  uint32_t batch;              /* sessions per resync call (reap: 2x); 0: 50 */
  uint32_t stream_maxlen;      /* log length in events (at least this
                                  many kept); 0: 100000 */
  uint32_t reconnect_max_ms;   /* backoff ceiling; 0: 2000 */
  uint32_t stream_block_ms;    /* XREAD BLOCK of the log reader; 0: 1000 */
  /* AUTH outside the URL (from a file, the environment): each given one
   * overrides the URL's. user NULL and a password: AUTH <password>. */
  const char *user;
  const char *password;
  presence_redis_tls_t tls;
  /* A reply larger than this, or of more items, is refused (the
   * connection drops and reconnects): 0: 64 MiB and 1,048,576. */
  size_t max_reply_bytes;
  uint32_t max_reply_elements;
  /* What the store allocates before it is attached (itself, its copies of
   * the URL, prefix, credentials and TLS paths) comes from this one, which
   * must outlive the store; NULL: malloc. From attach on, everything comes
   * from the host's allocator (presence_options_t.allocator). */
  const presence_allocator_t *allocator;
  /* redis+sentinel:// URLs: AUTH for the sentinels (the URL's credentials
   * and user/password above are the data nodes'). NULL: no AUTH. */
  const char *sentinel_user;
  const char *sentinel_password;
  /* One log reader per machine (presenced --workers): feed_out, the
   * sockets of the stores that take the log from this one (it copies each
   * log read to them); feed_in (> 0), the socket this store takes the log
   * from instead of reading it, until it ends (then it reads the log itself
   * from the last entry it got). The store owns the descriptors. */
  const int *feed_out;
  uint32_t n_feed_out;
  int feed_in;
  /* Virtual shards (docs/internals/redis.md, "Shards and Redis Cluster"):
   * 0 or 1: one keyspace under the prefix, as before; S > 1: S shards, each
   * under "<prefix>{<tag>}" with its own log and instance tables, users
   * spread by a hash of their id. Every instance sharing a prefix must use
   * the same S. Default with cluster: 12. */
  uint32_t shards;
  /* Redis Cluster: "host:port,host:port,..." (each may also be a
   * redis:// or rediss:// URL; credentials and TLS as for url) of some of
   * its nodes; NULL: no cluster. Each shard's connections follow MOVED to
   * the node serving the shard's slot and fall back to these seeds. */
  const char *cluster;
  /* With feed_out: route the log by interest (above) instead of copying
   * every read to every follower: follower i of feed_out is slot i + 1,
   * and this store dispatches to its own host what slot interest_slot
   * (presenced: 0) counts. NULL: every event to every follower, and every
   * event to the host, as before. */
  presence_redis_interest_t *interest;
  uint32_t interest_slot;
} presence_redis_options_t;

/* url with its password replaced by "***", into out (always terminated,
 * truncated to n): for log lines and error messages. */
void presence_redis_url_redact(const char *url, char *out, size_t n);

/* Whether url is one the Redis store accepts (syntax only): 1 or 0. */
int presence_redis_url_valid(const char *url);

/* The same, and when it is not, why (never a part of the URL, which may
 * hold a password) into why (always terminated, truncated to n). */
int presence_redis_url_check(const char *url, char *why, size_t n);

/* The counters of the store's connections: which 0 the commands, 1 the
 * log reader. EINVAL for another store or another which. */
int presence_redis_conn_metrics(presence_store_t *s, int which,
                                presence_redis_conn_metrics_t *out);

/* A new Redis store, to pass as presence_options_t.store (the presence_t
 * then owns it). It connects when attached. Errors: EINVAL (no loop, bad
 * url), ENOMEM. */
int presence_store_redis_new(const presence_redis_options_t *opts,
                             presence_store_t **out);

/* True once the store is registered and its sessions asserted. */
int presence_redis_ready(presence_store_t *s);
/* A channel's count across shards (docs/internals/redis.md, "A channel's
 * count across shards"). In shards (options.shards > 1, Redis Cluster) a
 * channel's members live in their users' shards, and a channel event as
 * decided carries its shard's count. For a channel tracked here (delta 1
 * per interested party, -1 when it goes: the channel is tracked while the
 * sum is above 0) the store asks every shard for its count and from then
 * on gives each of the channel's events (presence_on_event and cluster
 * events) the channel's count: the sum of each shard's latest count, each
 * ordered by its shard's sequence. presenced tracks the channels its
 * clients joined or observe. 0 (also for a store of one shard, where the
 * count is the channel's already), ENOMEM, ECHANNEL, EINVAL for another
 * store. The event stream read from the log (presence_log_read_of) keeps
 * the shard's count. */
int presence_redis_channel_track(presence_store_t *s, const char *channel,
                                 int delta);
/* A user's availability changed, so its shard's shown count of channel
 * (members less the invisible ones) did, with no channel event:
 * shard_shown is that shard's count as just read (presence_user_channels'
 * channel_shown_count). *out gets the channel's shown count: shard_shown
 * in shards with the other shards' latest for a tracked channel, and the
 * store asks the user's shard again so the channel's next events sum the
 * new count. 0, or EINVAL for another store. */
int presence_redis_channel_shown(presence_store_t *s, const char *channel,
                                 const char *user_id, uint64_t shard_shown,
                                 uint64_t *out);
/* The whole cluster's size as Redis counted it at this instance's last
 * heartbeat (every heartbeat_ms): for monitoring, since each instance's
 * presence_stats counts its own sessions only. EINVAL for another store. */
typedef struct presence_redis_cluster_stats {
  uint64_t users_present;  /* online or idle, or inside their offline grace */
  uint64_t sessions;
  uint32_t instances;      /* holding a live lease */
  int64_t sampled_mono_ms; /* when (the host's monotonic clock); 0: never */
} presence_redis_cluster_stats_t;
int presence_redis_cluster_stats(presence_store_t *s,
                                 presence_redis_cluster_stats_t *out);

/* This instance's current epoch in Redis (0 before registration): it
 * changes each time the instance re-registers. */
uint64_t presence_redis_epoch(presence_store_t *s);

/* A clean exit: end every local session (reason "shutdown", no grace), give
 * up the lease, then call done (0, or an error if Redis could not be
 * reached; the lease then runs out and another instance reaps). */
int presence_redis_leave(presence_store_t *s,
                         void (*done)(void *ud, int status), void *ud);

/* Kicks across instances (presenced: DELETE /v1/sessions/{id} asked of any
 * instance). presence_redis_kick looks session_id up in the whole cluster:
 * done(ud, 0) once the kick is on its way to every instance, ENOSESSION if
 * no instance holds it, ESTORE/ETIMEDOUT if Redis could not say. Every
 * instance (this one too) hears it through fn, called on the loop with the
 * session id: the instance that holds it ends it. Kicks travel on the log
 * reader's connection (a second stream in its XREAD): no connection of
 * their own. Register fn before the store is attached to catch them all. */
int presence_redis_on_kick(presence_store_t *s,
                           void (*fn)(void *ud, const char *session_id),
                           void *ud);
int presence_redis_kick(presence_store_t *s, const char *session_id,
                        void (*done)(void *ud, int status), void *ud);

/* A backend origin's name, exclusive across instances (presenced's GET
 * /v1/backend, docs/internals/backend.md "One origin, one connection"):
 * each connection claims its name before its welcome; the newest claim
 * wins. claim: done(ud, 0, counter, held) with the claim's counter (it
 * only grows, the token of this connection) and held 1 when another
 * instance whose lease is live held the name (its sessions are still in
 * the store, for this instance to adopt), and the notices held for the
 * name (presence_redis_origin_hold) with the id of the last (NULL when
 * none): they stay in Redis until the caller, having told them, calls
 * presence_redis_origin_took(store, name, notices_last); a claim whose
 * connection is gone by its answer leaves them to the next one. Or (ud,
 * ESTORE / ETIMEDOUT / ESHUTDOWN, 0, 0, NULL, 0, NULL). A claim that takes the name from another instance
 * tells every instance (on the kick stream): the one that held it gets
 * fn(ud, name, counter) of presence_redis_on_origin and closes its older
 * connection. release: the name is let go if this instance still holds it
 * with counter (the origin ended here); nothing is answered. 0, or ESTORE
 * when Redis is not connected (done is not called), EINVAL, ENOMEM. */
/* A notice held for an origin while no connection of it was live (the
 * strings are the answer's: valid during the callback only). code "": a
 * channel removal; else a join or update the store refused. */
typedef struct presence_redis_origin_notice {
  const char *session_id, *channel, *code, *message;
} presence_redis_origin_notice_t;
typedef void (*presence_redis_origin_claim_cb)(
    void *ud, int status, uint64_t counter, int held,
    const presence_redis_origin_notice_t *notices, size_t n_notices,
    const char *notices_last);
int presence_redis_origin_claim(presence_store_t *s, const char *name,
                                presence_redis_origin_claim_cb done,
                                void *ud);
/* Hold a notice for the origin's next connection, on whichever instance
 * it comes (its claim takes the notices held: notices of the callback
 * above; kept a day, the newest 1,024 an origin). done(ud, 0), or ESTORE
 * / ETIMEDOUT / ESHUTDOWN when it is not held (the caller may keep it
 * itself); done may be NULL. 0, or EINVAL (no session or channel), ENOMEM,
 * ESTORE (Redis not connected: done is not called). */
int presence_redis_origin_hold(presence_store_t *s, const char *name,
                               const presence_redis_origin_notice_t *notice,
                               void (*done)(void *ud, int status), void *ud);
/* The notices of a claim up to notices_last were told: they go. 0, or
 * ESTORE (not connected), EINVAL, ENOMEM; nothing is answered (a removal
 * lost leaves them to be told again). */
int presence_redis_origin_took(presence_store_t *s, const char *name,
                               const char *notices_last);
int presence_redis_origin_release(presence_store_t *s, const char *name,
                                  uint64_t counter);
/* Called on the loop for each claim of name by another instance, with its
 * counter: this instance's connection of that name with a smaller counter
 * has been superseded. Register before the store is attached (or accept
 * missing the claims made before). */
int presence_redis_on_origin(presence_store_t *s,
                             void (*fn)(void *ud, const char *name,
                                        uint64_t counter),
                             void *ud);

/* Named leases with a cursor (presenced's webhooks: one per endpoint, see
 * docs/webhooks.md): one instance holds a name at a time, fenced by the
 * epoch a claim returns (the token of later calls); renew extends the lease
 * and stores the cursor (it only moves forward), release gives it up with
 * the cursor. A first claim starts at the newest event, and is refused
 * (owner "") while this instance is not registered in the data Redis
 * holds: after Redis lost its data the newest number is right only once an
 * instance registered again. log_offer: an id for the log, kept if the
 * cluster has none (the answer's log_id is the cluster's). done(ud, 0, r)
 * with r->granted, or (ud, ESTORE / ETIMEDOUT / ESHUTDOWN, NULL); called on
 * the loop. 0, or ESTORE when Redis is not connected (done is not called),
 * EINVAL, ENOMEM. */
typedef enum presence_redis_lease_op {
  PRESENCE_LEASE_CLAIM,
  PRESENCE_LEASE_RENEW,
  PRESENCE_LEASE_RELEASE
} presence_redis_lease_op_t;
typedef struct presence_redis_lease {
  int granted;
  uint64_t epoch;     /* granted: the lease's epoch (the token) */
  uint64_t cursor;    /* granted: the stored cursor */
  const char *log_id; /* granted: the log's id */
  const char *owner;  /* refused: who holds it ("" nobody) */
  int64_t ms_left;    /* refused: on the holder's lease */
  /* granted: the stored cursor as text (decimals joined by ',', one per
   * log, see presence_redis_lease_text); cursor is its number when it is
   * one. */
  const char *cursor_text;
} presence_redis_lease_t;
int presence_redis_lease(presence_store_t *s, const char *name,
                         presence_redis_lease_op_t op, uint64_t token,
                         uint32_t lease_ms, uint64_t cursor,
                         const char *log_offer,
                         void (*done)(void *ud, int status,
                                      const presence_redis_lease_t *r),
                         void *ud);
/* The same with the cursor as text: a decimal (one log), or decimals joined
 * by ',' (one per log of a store in shards: presence_log_count). It moves
 * forward number by number. start: where a first claim starts, in the same
 * form (NULL or "": the store's newest sequence number; a store in shards
 * passes its own view of each log's end). */
int presence_redis_lease_text(presence_store_t *s, const char *name,
                              presence_redis_lease_op_t op, uint64_t token,
                              uint32_t lease_ms, const char *cursor,
                              const char *start, const char *log_offer,
                              void (*done)(void *ud, int status,
                                           const presence_redis_lease_t *r),
                              void *ud);

/* Redis's clock less the host's, in ms, as the store last measured it (TIME
 * at registration and each heartbeat; 0 before the first answer or on
 * another store), in the shard holding user_id when the store is in shards.
 * A status message's expires_ms (presence_user_set_message) is the host's
 * wall time, which the store moves onto Redis's clock by this offset, so
 * that every instance clears it at the same moment. A host that holds a
 * time already on Redis's clock (a client's absolute expires_at: the
 * cluster's clock, not this instance's) subtracts it before the call, and
 * adds it to show the expiry the store keeps. */
int64_t presence_redis_clock_offset_ms(presence_store_t *s,
                                       const char *user_id);

/* Tests only: stop (1) or resume (0) every timer of the store (heartbeat,
 * reaping, grace, reconciliation), as a stalled process would. */
void presence_redis_debug_pause(presence_store_t *s, int paused);

#ifdef __cplusplus
}
#endif
#endif /* PRESENCE_REDIS_H */
