/* SPDX-License-Identifier: MIT */
/*
 * libpresence: who is online, idle or offline, across sessions and instances.
 *
 * The application reports sessions (one per connection of an authenticated
 * user); the library computes each user's status and calls the application's
 * callbacks on every real transition. See docs/c-api.md for the model, the
 * threading and re-entrancy rules and a complete example.
 *
 * Conventions:
 *   - Every function returning int returns 0 (or a non-negative count) on
 *     success and a negative PRESENCE_E* code on failure. A failed call
 *     changes nothing.
 *   - Strings passed in are copied; strings handed to callbacks are valid only
 *     for the duration of the callback.
 *   - A presence_t is not thread-safe: use it from one thread (the thread of
 *     your event loop). Callbacks run on that thread, inside the call that
 *     caused them.
 */
#ifndef PRESENCE_H
#define PRESENCE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PRESENCE_VERSION_MAJOR 0
#define PRESENCE_VERSION_MINOR 1
#define PRESENCE_VERSION_PATCH 0
#define PRESENCE_VERSION_STRING "0.1.0"

/* Longest session id, user id or instance id, in bytes. */
#define PRESENCE_ID_MAX 128
/* Longest session metadata (a JSON text, stored verbatim), in bytes. */
#define PRESENCE_META_MAX 4096
/* Longest channel name, in bytes (same rules as ids). */
#define PRESENCE_CHANNEL_MAX 128
/* Longest member data of one session in one channel (JSON text), in bytes. */
#define PRESENCE_DATA_MAX 4096
/* channel_grace_ms: no channel grace at all (0 means "the offline grace"). */
#define PRESENCE_GRACE_NONE UINT32_MAX
/* Longest offline_grace_ms, channel_grace_ms and inactivity_ms: 2^31 - 1 ms
 * (24.8 days). Timers are 32-bit milliseconds compared by their difference;
 * presence_new refuses a longer one (EINVAL). */
#define PRESENCE_DURATION_MAX_MS 2147483647u

/* ---- Errors -------------------------------------------------------------- */

/* XX(name, value, message). Values are stable: they appear in the daemon's
 * metrics and logs. */
#define PRESENCE_ERRNO_MAP(XX)                                                 \
  XX(EINVAL, -1, "invalid argument")                                           \
  XX(ENOMEM, -2, "out of memory")                                              \
  XX(EID, -3, "id is empty, longer than 128 bytes, not UTF-8 or has control characters") \
  XX(ESTATUS, -4, "status must be online or idle")                             \
  XX(ENOSESSION, -5, "no such session")                                        \
  XX(EEXIST, -6, "session already connected")                                  \
  XX(ELIMIT, -7, "too many sessions for this user")                            \
  XX(EMETA, -8, "session metadata too large")                                  \
  XX(ECURSOR, -9, "cursor fell out of the log")                                \
  XX(ENOTSUP, -10, "operation not supported by this store")                    \
  XX(EFENCED, -11, "write refused: this instance lost its lease")              \
  XX(ESTORE, -12, "store unavailable")                                         \
  XX(ETIMEDOUT, -13, "store operation timed out")                              \
  XX(ESHUTDOWN, -14, "instance is shutting down")                              \
  XX(EBUSY, -15, "operation not allowed here")                                \
  XX(ECHANNEL, -30, "channel name is empty, longer than 128 bytes, not UTF-8 or has control characters") \
  XX(EDATA, -31, "member data too large")                                     \
  XX(ENOTMEMBER, -32, "not a member of this channel")                          \
  XX(ECHANLIMIT, -33, "too many channels for this session") \
  XX(EAVAILABILITY, -40, "availability must be auto, dnd, away or invisible") \
  XX(EMESSAGE, -41, "status message too long, not UTF-8 or has control characters") \
  XX(EEXPIRY, -42, "message expiry in the past or too far ahead")            \
  XX(EDEVICE, -43, "device must be 1..32 letters, digits, '.', '_' or '-'")

typedef enum {
#define PRESENCE_XX_(name, value, msg) PRESENCE_##name = (value),
  PRESENCE_ERRNO_MAP(PRESENCE_XX_)
#undef PRESENCE_XX_
  PRESENCE_ERRNO_MIN_ = -64
} presence_errno_t;

/* Human-readable message for a code ("ok" for 0, "unknown error" otherwise). */
const char *presence_strerror(int code);
/* Symbolic name of a code, e.g. "ENOSESSION" ("OK" for 0). */
const char *presence_err_name(int code);

/* ---- Values -------------------------------------------------------------- */

typedef enum {
  PRESENCE_OFFLINE = 0,
  PRESENCE_ONLINE = 1,
  PRESENCE_IDLE = 2
} presence_status_t;

/*
 * Availability: what the person says, beside what the connections do (the
 * computed status). Kept per user across reconnects; a user with no session
 * is offline whatever is set. Watchers and channel members see the status
 * through presence_shown_status(); backends see both, unmasked. The whole
 * table is in docs/protocol.md, "Availability".
 */
typedef enum {
  PRESENCE_AVAIL_AUTO = 0, /* the computed status, unmasked (the default) */
  PRESENCE_AVAIL_DND = 1,  /* do not disturb: shown online while present */
  PRESENCE_AVAIL_AWAY = 2, /* shown idle while present */
  PRESENCE_AVAIL_INVISIBLE = 3, /* shown offline */
  PRESENCE_AVAIL_COUNT_
} presence_availability_t;

/* A status message: at most this many characters (code points) by default
 * (presence_options_t.message_max_chars), UTF-8 without control characters. */
#define PRESENCE_MESSAGE_MAX_CHARS 128
/* The emoji beside it: an emoji or a short code, at most this many bytes. */
#define PRESENCE_EMOJI_MAX 64
/* A message expiry lies at most this far ahead (400 days). */
#define PRESENCE_MESSAGE_TTL_MAX_MS (400LL * 24 * 3600 * 1000)
/* A device kind: 1..32 bytes of letters, digits, '.', '_' and '-'. */
#define PRESENCE_DEVICE_MAX 32
/* The device of a session opened without one. */
#define PRESENCE_DEVICE_DEFAULT "web"

typedef enum {
  PRESENCE_EV_SESSION_CONNECTED = 0,
  PRESENCE_EV_SESSION_DISCONNECTED,
  PRESENCE_EV_SESSION_STATUS,
  PRESENCE_EV_USER_ONLINE,
  PRESENCE_EV_USER_IDLE,
  PRESENCE_EV_USER_OFFLINE,
  PRESENCE_EV_CLEANUP,
  PRESENCE_EV_CHANNEL_JOIN,
  PRESENCE_EV_CHANNEL_LEAVE,
  PRESENCE_EV_CHANNEL_UPDATE,
  /* Status that people set (see "Availability, status message, devices"). */
  PRESENCE_EV_USER_AVAILABILITY,
  PRESENCE_EV_USER_MESSAGE,
  PRESENCE_EV_COUNT_,
  /* Registration only: every event type. */
  PRESENCE_EV_ANY = 100
} presence_event_type_t;

typedef enum {
  PRESENCE_REASON_NONE = 0,
  PRESENCE_REASON_CONNECT,
  PRESENCE_REASON_DISCONNECT,
  PRESENCE_REASON_EXPLICIT,
  PRESENCE_REASON_INACTIVITY,
  PRESENCE_REASON_TIMEOUT,
  PRESENCE_REASON_KICKED,
  PRESENCE_REASON_SHUTDOWN,
  PRESENCE_REASON_INSTANCE_LOST,
  PRESENCE_REASON_RESYNC,
  PRESENCE_REASON_EXPIRED, /* a status message reached its expiry */
  /* A backend's origin lost its connection past the resume window (its
   * sessions end; docs/protocol.md section 5). */
  PRESENCE_REASON_ORIGIN_LOST,
  /* The server closed a client's connection (presenced; docs/api.md):
   * its token expired (4001), it sent too many messages per second (4029),
   * a frame or message over the size limits (1009), a binary message
   * (1003), a protocol error or invalid UTF-8 (1002, 1007), too many
   * malformed messages (1008), or it read too slowly (4030). "disconnect"
   * stays the client's own close. */
  PRESENCE_REASON_TOKEN_EXPIRED,
  PRESENCE_REASON_RATE_LIMITED,
  PRESENCE_REASON_MESSAGE_TOO_BIG,
  PRESENCE_REASON_BINARY_MESSAGE,
  PRESENCE_REASON_PROTOCOL_ERROR,
  PRESENCE_REASON_MALFORMED_MESSAGES,
  PRESENCE_REASON_SLOW_CONSUMER,
  PRESENCE_REASON_COUNT_
} presence_reason_t;

/* "online", "idle", "offline"; "session.connected", ...; "connect", ... */
const char *presence_status_name(presence_status_t s);
const char *presence_event_type_name(presence_event_type_t t);
const char *presence_reason_name(presence_reason_t r);
/* Parse the names above back. Return 0 and set *out, or PRESENCE_EINVAL. */
int presence_status_parse(const char *name, presence_status_t *out);
int presence_reason_parse(const char *name, presence_reason_t *out);

/* Event flags. */
#define PRESENCE_EVENT_REMOTE 0x1u /* caused by another instance (Redis store) */
/* A cleanup whose id list this copy leaves out (session_ids NULL,
 * n_session_ids 0): the transition log's copy of a dead instance's cleanup,
 * where the list would be too large to move at once. The callbacks of the
 * instance that reaped it get the whole list; in the log, the
 * session.disconnected events (reason instance_lost) before it name every
 * session. */
#define PRESENCE_EVENT_IDS_OMITTED 0x2u
/* A session event whose user event follows at once (same call, next
 * sequence number): the user event carries the session's device change,
 * so a watcher gets one message for the pair (presence_event_watcher_visible). */
#define PRESENCE_EVENT_USER_FOLLOWS 0x4u
/* A channel.update whose member data changed (beside, or instead of, its
 * status in the channel): a channel member is shown the data whatever the
 * member's availability (presence_event_member_visible). */
#define PRESENCE_EVENT_DATA_CHANGED 0x8u
/* A user.offline whose last_seen_ms falls inside a period the user spent
 * invisible (it left invisible in its offline grace): watchers are not
 * shown that time (docs/protocol.md 6.1) but the event's own. last_seen_ms
 * is the truth still. */
#define PRESENCE_EVENT_LAST_SEEN_VEILED 0x10u

/*
 * One transition. Every event has a sequence number, monotonic per store
 * (the same numbering the transition log and GET /v1/events use).
 *
 *   session.connected     session_id, user_id, meta, to = session status
 *   session.disconnected  session_id, user_id, from = last session status
 *   session.status        session_id, user_id, from, to
 *   user.online/idle/offline
 *                         user_id, from, to, user_version, session_id = the
 *                         causing session or NULL (grace expiry, cleanup)
 *   cleanup               instance_id = the dead instance (NULL for a fresh
 *                         start), session_ids = its sessions (NULL for a
 *                         fresh start)
 *
 * Order: a session event is always dispatched before the user event it
 * caused; cleanup comes after the disconnections and user transitions it
 * caused.
 */
typedef struct presence_event {
  presence_event_type_t type;
  presence_reason_t reason;
  uint64_t seq;
  int64_t ts_ms; /* wall-clock milliseconds since the epoch */
  const char *session_id;
  const char *user_id;
  const char *meta;
  presence_status_t from;
  presence_status_t to;
  uint64_t user_version; /* user events: the user's version after it */
  const char *instance_id;
  uint64_t epoch;
  const char *const *session_ids;
  size_t n_session_ids;
  unsigned flags;
  /* User events: when the user was last seen (online or idle): the event's
   * own time for user.online and user.idle, the end of the last session for
   * user.offline. 0 where the store does not report it (Redis): then ts_ms. */
  int64_t last_seen_ms;
  /* Channel events: the channel; meta is the member's data after the event
   * (NULL for a leave), from/to the member's status in the channel,
   * user_version the member's version, count the channel's members after
   * it. NULL / 0 for every other event. */
  const char *channel;
  uint64_t count;
  /* Status that people set. Every user event and session event carries the
   * user's availability after it (availability_to) and before it
   * (availability_from: different only in user.availability), so an
   * observer masks an event without a lookup (presence_shown_status).
   *   user.availability  availability_from/to; from = to = the user's
   *                      status (unchanged by it)
   *   user.message       message, emoji (NULL: cleared), message_expires_ms
   *                      (0: none); reason explicit or expired
   *   session events     device (the session's device), device_from /
   *                      device_to: the best status of the user's sessions
   *                      of that device before and after */
  presence_availability_t availability_from;
  presence_availability_t availability_to;
  const char *message;
  const char *emoji;
  int64_t message_expires_ms;
  const char *device;
  presence_status_t device_from;
  presence_status_t device_to;
  /* User events and session events: the user's shown version after it,
   * the count of changes a watcher sees (presence_event_watcher_visible).
   * It moves exactly when what a watcher sees changes, so it reveals no
   * hidden change (user_version moves with every user event: an idle ->
   * online under dnd, an invisible user's activity). Watchers get this as
   * "version"; backends get user_version.
   * Channel events: the member's shown version after it, the count of
   * changes the channel's other members are shown of it
   * (presence_event_member_visible, plus one per availability change of
   * the user); members get it as "version". */
  uint64_t shown_version;
  /* Channel events: the members the channel's members are shown after it
   * (count less the invisible members: docs/protocol.md 4.1). Members get
   * it as "count"; backends get count and this as shown_count. */
  uint64_t shown_count;
  /* user.availability: the user's devices after it, the best status of
   * its sessions per device kind (the truth, as presence_user_info_t
   * has them; none while the user has no session). An availability change
   * changes what watchers are shown of every device (masked like the
   * status: docs/protocol.md 6.1), so a watcher is sent the whole map with
   * it. NULL / 0 for every other event. Valid during the callback, as the
   * event's strings are. */
  const struct presence_device_status *devices;
  size_t n_devices;
} presence_event_t;

/* One device kind of a user and the best status of its sessions of it. */
typedef struct presence_device_status {
  const char *device;
  presence_status_t status;
  uint32_t session_count;
} presence_device_status_t;

typedef struct presence_user_info {
  const char *user_id;
  presence_status_t status;
  int64_t since_ms;      /* when status took its current value (0: never) */
  int64_t last_seen_ms;  /* when last online or idle (0: never) */
  uint32_t session_count;
  uint32_t online_count; /* sessions that are online (the rest are idle) */
  /* Bumped on every user event. The embedded store keeps 32 bits of it
   * (a wrap is 2^32 events of one user away), and its times 48 bits of
   * milliseconds: one beyond +-2^47 (a clock some 4,460 years from 1970)
   * is held at that limit. */
  uint64_t version;
  /* Status that people set. */
  presence_availability_t availability;
  int64_t availability_since_ms; /* when it was last set (0: never) */
  const char *message;           /* NULL: none */
  const char *emoji;             /* NULL: none */
  int64_t message_expires_ms;    /* 0: no expiry */
  int64_t message_set_ms;
  int64_t last_active_ms; /* when last online, not idle (0: never) */
  /* The best status per device kind, one entry per kind with a session. */
  const presence_device_status_t *devices;
  size_t n_devices;
  /* The version watchers see (presence_event_t.shown_version). */
  uint64_t shown_version;
  /* The veil: the last period the user spent invisible, from when it went
   * invisible to when it left it (0, 0: none, or still invisible). Kept so
   * that watchers are never shown a since, last_seen or last_active inside
   * it after the user left invisible (docs/protocol.md 6.1); the times
   * above are the truth. */
  int64_t veil_from_ms, veil_to_ms;
} presence_user_info_t;

typedef struct presence_session_info {
  const char *session_id;
  const char *user_id;
  const char *meta;        /* NULL if none */
  const char *instance_id; /* the instance holding it */
  presence_status_t status;
  presence_reason_t status_reason; /* why it has its status */
  int64_t connected_ms;
  int64_t status_since_ms;
  const char *device; /* "web", "mobile", "desktop", or the application's */
} presence_session_info_t;

/* ---- Injected services: allocation, clocks, randomness, logging ---------- */

/* The key of the keyed hash (SipHash-1-3) of every record table, so ids that
 * clients choose cannot be crafted to collide. One key per process, drawn
 * from the system's random source the first time a table hashes, unless the
 * host gives its own first (a daemon with its own random source; a test that
 * must be reproducible). Call before the first presence_new. Returns 0,
 * PRESENCE_EINVAL for NULL, or PRESENCE_EBUSY once the key is fixed. */
int presence_hash_key_set(const uint8_t key[16]);

typedef struct presence_allocator {
  void *(*malloc)(void *ud, size_t size);
  void *(*realloc)(void *ud, void *ptr, size_t size);
  void (*free)(void *ud, void *ptr);
  void *ud;
} presence_allocator_t;

/* wall_ms: milliseconds since the Unix epoch (timestamps, last_seen).
 * mono_ms: a monotonic clock (timers: grace, inactivity). Either may be NULL,
 * in which case the system clock is used. Tests inject both. */
typedef struct presence_clock {
  int64_t (*wall_ms)(void *ud);
  int64_t (*mono_ms)(void *ud);
  void *ud;
} presence_clock_t;

typedef enum {
  PRESENCE_LOG_ERROR = 0,
  PRESENCE_LOG_WARN,
  PRESENCE_LOG_INFO,
  PRESENCE_LOG_DEBUG
} presence_log_level_t;

typedef void (*presence_log_fn)(void *ud, presence_log_level_t level,
                                const char *msg);

struct presence_store; /* see presence_store.h */

typedef struct presence_options {
  presence_allocator_t allocator; /* zeroed: malloc/realloc/free */
  presence_clock_t clock;         /* zeroed: system clocks */
  presence_log_fn log;            /* NULL: no logging */
  void *log_ud;
  const char *instance_id; /* NULL: "local" */
  uint64_t epoch;          /* incarnation of this instance; 0: 1 */
  /* A user's last session ending waits this long before user.offline; a
   * session of the same user inside the window cancels it. 0: immediate.
   * At most PRESENCE_DURATION_MAX_MS, as inactivity_ms and
   * channel_grace_ms. */
  uint32_t offline_grace_ms;
  /* A session with no activity (presence_session_touch) for this long becomes
   * idle with reason "inactivity", and online again on its next activity.
   * 0: off. */
  uint32_t inactivity_ms;
  /* Events kept in the in-memory transition log. 0: 65536. */
  uint32_t log_capacity;
  /* Sessions one user may hold at once. 0: unlimited. */
  uint32_t max_sessions_per_user;
  /* Sizing hints: tables are made this large up front instead of growing
   * (each growth rehashes every record). 0: start small and grow. */
  uint32_t expected_sessions;
  uint32_t expected_users;
  /* An offline user (no session, no offline grace pending) is forgotten
   * this many seconds after going offline: its record, last_seen and
   * version go, and it reads as a user never seen (offline, last_seen 0);
   * if it comes back, its version starts again at 1. Bounds the embedded
   * store's memory (~100 B per user) and the Redis keys of users who never
   * return. At least the offline grace. 0: kept for ever. */
  uint32_t offline_retention_s;
  /* A member whose last session in a channel ended (not an explicit leave)
   * stays a member this long before channel.leave; a session of the same
   * user joining in the window cancels it. 0: offline_grace_ms;
   * PRESENCE_GRACE_NONE: no grace. */
  uint32_t channel_grace_ms;
  /* Channels one session may be joined to at once. 0: unlimited. */
  uint32_t max_channels_per_session;
  /* The store. NULL: an embedded in-memory store owned by the presence_t.
   * Otherwise presence_new takes ownership, whatever it returns: the
   * presence_t destroys the store in presence_free, and a presence_new
   * that fails has destroyed it already. Never destroy a store you gave. */
  struct presence_store *store;
  /* Longest status message in characters. 0: PRESENCE_MESSAGE_MAX_CHARS. */
  uint32_t message_max_chars;
  /* The host's timer, as libcurl's CURLMOPT_TIMERFUNCTION: called whenever
   * the next deadline (offline grace, inactivity, retention) changes, with
   * the milliseconds until it (0: due now) or -1 (none: stop the timer).
   * The timer is one-shot: when it fires, the host calls presence_tick,
   * which reports the following deadline. A deadline that goes away (a
   * user back inside the offline grace) may leave the timer armed for it
   * (the embedded store reports deadlines as they are added, so a write that
   * adds none costs no look at them): the tick it causes finds nothing due
   * and reports the next one. Called from inside library calls (after their
   * events were dispatched); it must not call the library, only arm or stop
   * a timer. NULL: the host calls presence_tick on its own schedule, using
   * its return value. */
  void (*timer)(void *ud, int64_t timeout_ms);
  void *timer_ud;
  /* Sizing hint like expected_sessions: the embedded store's member table
   * (one entry per (channel, user)) is made this large up front. 0: grow. */
  uint32_t expected_memberships;
  /* The embedded store numbers its events from seq_base + 1 (0: from 1).
   * Its log lives in the process, so a reader's cursor saved in an earlier
   * run means nothing to this one; a host whose readers keep cursors across
   * restarts gives each run numbers above the last run's (presenced: the
   * wall clock at start in microseconds, one number a microsecond being
   * more than it ever emits), and such a cursor, below every number this
   * run has, is read as fallen out of the log (PRESENCE_ECURSOR) instead
   * of resuming in the middle of this run. A cursor of 0 still means the
   * oldest event kept. Ignored by the Redis store (its numbers live in
   * Redis). */
  uint64_t seq_base;
} presence_options_t;

/* ---- Lifecycle ----------------------------------------------------------- */

typedef struct presence presence_t;

/* Zeroed options are valid: defaults everywhere. */
void presence_options_init(presence_options_t *opts);

/* Create an instance. opts may be NULL. Returns 0 and sets *out, or an error
 * (EID: invalid instance id; EINVAL: a duration over
 * PRESENCE_DURATION_MAX_MS; ENOMEM; the store's attach failed); on error
 * *out is NULL and opts->store, if given, has been destroyed. */
int presence_new(const presence_options_t *opts, presence_t **out);

/* Free it. No event callback runs. With an asynchronous store (Redis) the
 * calls still pending complete inside it: their done and query callbacks
 * run with PRESENCE_ESHUTDOWN (or the error they already had), and must not
 * call the library with p, which is going. Must not be called from inside
 * a callback. */
void presence_free(presence_t *p);

/* ---- Callbacks ----------------------------------------------------------- */

/*
 * Called for each event, on the thread that drives the presence_t, from inside
 * the call that caused it (presence_session_connect, presence_tick, ...).
 * Callbacks of one event type run in registration order; catch-all callbacks
 * (PRESENCE_EV_ANY) run after the typed ones.
 *
 * A callback may call any query, and any mutating function: a mutation made
 * from a callback runs at once, and its events are dispatched after the
 * events already pending, so every callback still sees events in sequence
 * order. A callback must not call presence_free.
 */
typedef void (*presence_event_cb)(presence_t *p, const presence_event_t *ev,
                                  void *ud);

/* Register cb for one event type or PRESENCE_EV_ANY. Returns a handle (> 0)
 * for presence_off, or an error. */
int presence_on(presence_t *p, presence_event_type_t type, presence_event_cb cb,
                void *ud);
/* Unregister; safe from inside a callback. */
int presence_off(presence_t *p, int handle);
/*
 * Narrow what a listener (a handle from any presence_on* function) is
 * called for: events of type only if wanted, and of those not the ones
 * carrying any of skip_flags (PRESENCE_EVENT_*). A listener starts wanting
 * every type and skipping nothing. An event that no listener takes is not
 * queued, unpacked or dispatched at all (it is in the log all the same), so
 * a host that says what it ignores does not pay for it on every change: a
 * daemon whose subscribers ignore the session event that comes with each
 * user transition (PRESENCE_EVENT_USER_FOLLOWS) says so. Safe from inside a
 * callback (it applies from the next event). Returns 0, or PRESENCE_EINVAL
 * for an unknown handle or type.
 */
int presence_listener_filter(presence_t *p, int handle,
                             presence_event_type_t type, int wanted,
                             unsigned skip_flags);

/* The seed's vocabulary. */
int presence_on_session_connected(presence_t *p, presence_event_cb cb, void *ud);
int presence_on_session_disconnected(presence_t *p, presence_event_cb cb,
                                     void *ud);
int presence_on_cleanup(presence_t *p, presence_event_cb cb, void *ud);
int presence_on_user_online(presence_t *p, presence_event_cb cb, void *ud);
int presence_on_user_idle(presence_t *p, presence_event_cb cb, void *ud);
int presence_on_user_offline(presence_t *p, presence_event_cb cb, void *ud);
int presence_on_event(presence_t *p, presence_event_cb cb, void *ud);

/*
 * Every event of the whole service, for fan-out (WebSocket subscribers, SSE,
 * webhooks): with a shared store (Redis) the callbacks above fire once
 * cluster-wide, at the instance that decided the transition, while cb here
 * runs on every instance for every event, its own and other instances'
 * (those carry PRESENCE_EVENT_REMOTE), in log (sequence) order, a little
 * after the fact. With the embedded store the cluster is this instance:
 * cb sees exactly the events the callbacks above see, after them.
 * Unregister with presence_off.
 */
int presence_on_cluster_event(presence_t *p, presence_event_cb cb, void *ud);

/* ---- Sessions ------------------------------------------------------------ */

/*
 * Completion of a mutation. With the embedded store every call completes
 * before it returns (done, if given, runs first, with the same code the call
 * returns), after the call's events were dispatched; a call made from inside
 * an event callback queues its events behind the ones being dispatched, so
 * its done runs before them. With an asynchronous store (Redis) a call
 * returns 0 when the request is accepted and done reports the outcome later;
 * validation errors are still returned at once, and then done is not called.
 */
typedef void (*presence_done_cb)(presence_t *p, int status, void *ud);

/* A new session of user_id, online. meta: optional JSON text kept with the
 * session. Errors: EID, EMETA, EEXIST (the id is connected: nothing changes),
 * ELIMIT. */
int presence_session_connect(presence_t *p, const char *session_id,
                             const char *user_id, const char *meta,
                             presence_done_cb done, void *ud);

/*
 * Session handles. A server that keeps a record per connection (the daemon
 * does) can hold a handle instead of looking the session up by id on every
 * status change: a handle reaches the session without hashing its id. A
 * handle is checked on use: once the session has ended (for any reason,
 * including a kick by id or a cleanup) the handle is refused with
 * ENOSESSION, never dereferenced.
 */
typedef uint64_t presence_handle_t;
#define PRESENCE_HANDLE_NONE ((presence_handle_t)0)

/* presence_session_connect that also returns the new session's handle. */
int presence_session_open(presence_t *p, const char *session_id,
                          const char *user_id, const char *meta,
                          presence_handle_t *handle, presence_done_cb done,
                          void *ud);
int presence_handle_set_status(presence_t *p, presence_handle_t handle,
                               presence_status_t status, presence_done_cb done,
                               void *ud);
int presence_handle_end(presence_t *p, presence_handle_t handle,
                        presence_reason_t reason, presence_done_cb done,
                        void *ud);
int presence_handle_touch(presence_t *p, presence_handle_t handle);

/* End a session (reason "disconnect"). ENOSESSION if it is not connected:
 * a second disconnect changes nothing and emits nothing. */
int presence_session_disconnect(presence_t *p, const char *session_id,
                                presence_done_cb done, void *ud);

/* End a session for a reason: PRESENCE_REASON_DISCONNECT, TIMEOUT, KICKED,
 * SHUTDOWN, ORIGIN_LOST (no offline grace, as a kick), or one of the
 * server's closes TOKEN_EXPIRED .. SLOW_CONSUMER. Any other: EINVAL. */
int presence_session_end(presence_t *p, const char *session_id,
                         presence_reason_t reason, presence_done_cb done,
                         void *ud);

/* The seed's kick: presence_session_end(..., PRESENCE_REASON_KICKED, ...). */
int presence_session_kick(presence_t *p, const char *session_id,
                          presence_done_cb done, void *ud);

/* Set a session online or idle (reason "explicit"). Setting the status it
 * already has emits nothing. ENOSESSION for a closed session: it is never
 * re-created. ESTATUS for anything but online/idle. */
int presence_session_set_status(presence_t *p, const char *session_id,
                                presence_status_t status,
                                presence_done_cb done, void *ud);

/* Record activity on a session: a message its client sends for its user,
 * not a keepalive (ping, pong, token refresh: browsers answer pings on their
 * own, so a tab left open would never become idle). With inactivity_ms set,
 * a session made idle by inactivity becomes online again (reason
 * "inactivity"); a session the client set idle stays idle. */
int presence_session_touch(presence_t *p, const char *session_id);

/* ---- Queries ------------------------------------------------------------- */

/* A query's answer is valid during its callback. The embedded store answers
 * each kind of query (a user; a user's sessions; channels: members, channel
 * and membership pages, presence_member_get) in one buffer the next query
 * of that kind reuses: a query of the same kind made from inside the
 * callback overwrites or frees the answer it holds, so read or copy what
 * you need first (docs/c-api.md, Conventions). */

typedef void (*presence_user_cb)(presence_t *p, int status,
                                 const presence_user_info_t *info, void *ud);
typedef void (*presence_sessions_cb)(presence_t *p, int status,
                                     const presence_session_info_t *sessions,
                                     size_t n, void *ud);

/* A user's presence. A user the store has never seen is offline with version
 * 0: that is an answer, not an error. */
int presence_user_query(presence_t *p, const char *user_id, presence_user_cb cb,
                        void *ud);
int presence_sessions_query(presence_t *p, const char *user_id,
                            presence_sessions_cb cb, void *ud);

/* Synchronous forms, for stores that answer at once (the embedded one):
 * ENOTSUP otherwise. The strings in *out stay valid until the next call that
 * changes that user; out->devices is the store's one buffer, valid until the
 * next query or mutation of p (a second presence_user_get overwrites it):
 * copy it to keep it. */
int presence_user_get(presence_t *p, const char *user_id,
                      presence_user_info_t *out);
/* Copies up to cap sessions into out; returns how many the user has. */
int presence_sessions_get(presence_t *p, const char *user_id,
                          presence_session_info_t *out, size_t cap);
int presence_session_get(presence_t *p, const char *session_id,
                         presence_session_info_t *out);

/* Visit every user the store holds (present ones, and offline ones it still
 * remembers for last_seen). Return non-zero from cb to stop. Must not mutate
 * from inside cb. Returns the number visited or ENOTSUP. */
typedef int (*presence_user_visit_cb)(const presence_user_info_t *info,
                                      void *ud);
int presence_users_foreach(presence_t *p, presence_user_visit_cb cb, void *ud);

typedef struct presence_stats {
  uint64_t sessions;
  uint64_t users_online;
  uint64_t users_idle;
  uint64_t users_known;  /* including offline users kept for last_seen */
  uint64_t events[PRESENCE_EV_COUNT_];
  uint64_t last_seq;
  uint64_t channels;    /* channels with at least one member */
  uint64_t members;     /* (channel, user) pairs, including ones in grace */
  uint64_t memberships; /* (channel, session) pairs */
} presence_stats_t;
int presence_stats(presence_t *p, presence_stats_t *out);

/* ---- The transition log -------------------------------------------------- */

/*
 * Read events with seq > after_seq, at most max of them, oldest first.
 * cb gets status 0, or PRESENCE_ECURSOR when events after after_seq have
 * already left the log, or when after_seq is past the newest event (a cursor
 * from a previous run of the process): the batch then starts at the oldest
 * event still kept, and the reader knows it missed some. n == 0 with status
 * 0 means it is up to date.
 */
typedef void (*presence_log_cb)(presence_t *p, int status,
                                const presence_event_t *events, size_t n,
                                void *ud);
int presence_log_read(presence_t *p, uint64_t after_seq, size_t max,
                      presence_log_cb cb, void *ud);
/* Sequence number of the newest event (0: none yet). */
uint64_t presence_log_last_seq(presence_t *p);

/*
 * Several logs. A store may keep its transition log as several logs, each
 * with its own sequence (the Redis store in shards: one log per shard, see
 * docs/internals/redis.md). Events of one user are all in one log, in
 * order; so are the events of one channel member. presence_log_read and
 * presence_log_last_seq read log 0; a reader of the whole log uses a cursor
 * (below), which holds a position in each.
 */
uint32_t presence_log_count(presence_t *p); /* 1, or the store's logs */
uint64_t presence_log_last_seq_of(presence_t *p, uint32_t log);
/* As presence_log_read, in one log (EINVAL past presence_log_count). */
int presence_log_read_of(presence_t *p, uint32_t log, uint64_t after_seq,
                         size_t max, presence_log_cb cb, void *ud);

/*
 * Cursors: a position in every log behind one opaque string, the form SSE
 * ids, Last-Event-ID, webhook leases and `presencectl watch` carry. With one
 * log its text is the decimal sequence number (as it always was); with
 * several it is "c" and base64url of the positions (docs/protocol.md,
 * "Cursors"). A cursor is allocated through p's allocator; it may be freed
 * after p, but is used only while p lives.
 * Up to PRESENCE_CURSOR_LOGS_MAX logs; the text is shorter than
 * PRESENCE_CURSOR_TEXT_MAX.
 */
#define PRESENCE_CURSOR_LOGS_MAX 128
#define PRESENCE_CURSOR_TEXT_MAX 2048
typedef struct presence_cursor presence_cursor_t;
/* text NULL: at the newest event of every log (what a new reader follows).
 * "0": before the first event of every log. Otherwise the text of a
 * cursor of this store's layout: EINVAL when it is not one (malformed, or
 * of a different number of logs), ENOTSUP with more logs than a cursor
 * holds. */
int presence_cursor_new(presence_t *p, const char *text, size_t len,
                        presence_cursor_t **out);
void presence_cursor_free(presence_cursor_t *c);
/* dst takes src's positions (both of one presence_t). */
void presence_cursor_copy(presence_cursor_t *dst, const presence_cursor_t *src);
uint64_t presence_cursor_pos(const presence_cursor_t *c, uint32_t log);
/* The position in one log: the last event read there. */
void presence_cursor_set(presence_cursor_t *c, uint32_t log, uint64_t seq);
/* The text into out (NUL-terminated); its length, or EINVAL if cap is too
 * small (PRESENCE_CURSOR_TEXT_MAX always is enough). */
int presence_cursor_format(const presence_cursor_t *c, char *out, size_t cap);
/* Which log to read next: 1 and *log set to one that holds events after c
 * as far as this instance has seen (taken in turn, so that no log starves
 * the others), else to one where c is past what this instance has seen (a
 * cursor from another instance, or from before a store loss: the read
 * tells which); 0 when c is at the end of every log. */
int presence_cursor_next(presence_cursor_t *c, uint32_t *log);
/* Events after c that this instance has seen (summed over the logs). */
uint64_t presence_cursor_lag(const presence_cursor_t *c);

/* ---- Time and cleanup ---------------------------------------------------- */

/*
 * Run due timers: offline grace expiries and inactivity. Returns the
 * milliseconds until the next deadline (0 if one is already due), or -1 if
 * none is pending: an event loop arms its timer with it.
 */
int64_t presence_tick(presence_t *p);

/*
 * Full cleanup, the seed's fresh start: every session is removed
 * (session.disconnected, reason "instance_lost"), every user still present
 * goes offline (reason "instance_lost", no grace), then one cleanup event
 * with no session list. For the embedded store this wipes this instance's
 * state; a shared store refuses it (EBUSY) while another instance holds a
 * live lease.
 */
int presence_reset(presence_t *p, presence_done_cb done, void *ud);

/*
 * A clean stop of the only instance: every user in its offline grace (its
 * last session ended less than offline_grace_ms ago) goes offline now, and
 * every channel member in its channel grace leaves, reason "shutdown": no
 * session can come back to a process that is exiting, and without this the
 * application kept those users present until the next start's cleanup.
 * Call it after ending the sessions. ENOTSUP with the Redis store, whose
 * graces are in Redis: another instance ends them on time, or the next
 * start's cleanup if none is left.
 */
int presence_end_graces(presence_t *p, presence_done_cb done, void *ud);

const char *presence_instance_id(const presence_t *p);
uint64_t presence_epoch(const presence_t *p);

/* Validate an id as the library would (0 or PRESENCE_EID). */
int presence_id_check(const char *id);

/* ---- Channels: who is in this room, with what data ----------------------- */

/*
 * A session joins a channel (a name, same rules as ids) with optional member
 * data (JSON text, stored verbatim, at most PRESENCE_DATA_MAX bytes). The
 * member is the (channel, user) pair: a member while any of the user's
 * sessions is joined. Its status is online if any of those sessions is
 * online, idle otherwise; its data is that of the session that joined or
 * updated most recently. Events channel.join / channel.update /
 * channel.leave are edge-triggered per member. See docs/c-api.md section 12.
 *
 * Joining a channel the session already joined replaces its data (like
 * update). Errors: ECHANNEL, EDATA, ENOSESSION, ECHANLIMIT, ENOTMEMBER
 * (update or leave of a channel the session has not joined).
 */
int presence_channel_join(presence_t *p, const char *session_id,
                          const char *channel, const char *data,
                          presence_done_cb done, void *ud);
int presence_channel_update(presence_t *p, const char *session_id,
                            const char *channel, const char *data,
                            presence_done_cb done, void *ud);
int presence_channel_leave(presence_t *p, const char *session_id,
                           const char *channel, presence_done_cb done,
                           void *ud);
int presence_handle_join(presence_t *p, presence_handle_t handle,
                         const char *channel, const char *data,
                         presence_done_cb done, void *ud);
int presence_handle_update(presence_t *p, presence_handle_t handle,
                           const char *channel, const char *data,
                           presence_done_cb done, void *ud);
int presence_handle_leave(presence_t *p, presence_handle_t handle,
                          const char *channel, presence_done_cb done,
                          void *ud);
/* An update whose failure to reach the store undoes it. On an asynchronous
 * store (Redis) a join or update the store cannot make now (ESTORE,
 * ETIMEDOUT, EFENCED to done) stays in the store's local record and is
 * made at its re-assert, as a caller that acknowledged it before the store
 * answered (a backend's batch) was promised. A caller that reports such a
 * failure as "nothing happened" (a WebSocket client answered
 * store_unavailable) uses this instead: the member's data goes back to
 * what it was (unless a later write replaced it meanwhile). The same as
 * presence_handle_update on a synchronous store. */
int presence_handle_update_or_undo(presence_t *p, presence_handle_t handle,
                                   const char *channel, const char *data,
                                   presence_done_cb done, void *ud);
/* The same for a join: a join of a channel the session is in already (new
 * data) that the store cannot make now is undone, as an update is. A first
 * join that fails stays in the store's local record as any join does: its
 * caller leaves (presence_handle_leave) if it wants none. */
int presence_handle_join_or_undo(presence_t *p, presence_handle_t handle,
                                 const char *channel, const char *data,
                                 presence_done_cb done, void *ud);
/* Every session of user_id leaves channel at once (reason kicked, no grace).
 * ENOTMEMBER if the user is not a member. */
int presence_channel_remove_user(presence_t *p, const char *channel,
                                 const char *user_id, presence_done_cb done,
                                 void *ud);

/* One joined session of a member (Phoenix's "meta"). */
typedef struct presence_member_meta {
  const char *session_id;
  const char *data; /* NULL: none */
  presence_status_t status;
  int64_t joined_ms;
} presence_member_meta_t;

typedef struct presence_member_info {
  const char *channel;
  const char *user_id;
  presence_status_t status; /* in the channel; OFFLINE: not a member */
  const char *data;         /* the member's data, NULL if none */
  int64_t since_ms;         /* member since */
  uint64_t version;
  uint32_t session_count; /* joined sessions (0 while in grace) */
  const presence_member_meta_t *metas;
  size_t n_metas;
  /* The user's availability (what others are shown: presence_shown_status;
   * an invisible member is absent to other members). */
  presence_availability_t availability;
  /* The version other members are shown (presence_event_t.shown_version). */
  uint64_t shown_version;
  /* The channel's shown member count (presence_channel_info_t.shown_count)
   * where the store reads it with the member: always in
   * presence_user_channels, 0 where a store does not. */
  uint64_t channel_shown_count;
  /* When the user last left invisible (presence_user_info_t.veil_to_ms;
   * 0: never). The other members were shown it absent
   * until then, so they are shown a since no earlier (docs/protocol.md
   * 4.1): one from before would date the membership it kept while
   * invisible. since_ms above is the truth. */
  int64_t veil_to_ms;
} presence_member_info_t;

typedef struct presence_channel_info {
  const char *channel;
  uint64_t count;
  /* The members its members are shown: count less the invisible ones. */
  uint64_t shown_count;
} presence_channel_info_t;

/* A page of members: n of them, the channel's member count, and the cursor
 * of the next page (NULL on the last page). Valid during the callback. */
typedef void (*presence_members_cb)(presence_t *p, int status,
                                    const presence_member_info_t *members,
                                    size_t n, uint64_t count,
                                    const char *next, void *ud);
typedef void (*presence_channels_cb)(presence_t *p, int status,
                                     const presence_channel_info_t *channels,
                                     size_t n, const char *next, void *ud);

/* Members after after_user_id (NULL: from the start) in byte order of user
 * id, at most limit of them (0: the count only). */
int presence_channel_members(presence_t *p, const char *channel,
                             const char *after_user_id, size_t limit,
                             presence_members_cb cb, void *ud);
/* The same page where the members' sessions may be left out (n_metas 0,
 * session_count 0): what a client's snapshot shows. The Redis store then
 * reads no session of theirs (~0.84x the Redis CPU of a two-member
 * listing); the embedded store answers as presence_channel_members. */
int presence_channel_members_brief(presence_t *p, const char *channel,
                                   const char *after_user_id, size_t limit,
                                   presence_members_cb cb, void *ud);
/* Active channels whose name starts with prefix (NULL or "": all), in byte
 * order, after `after` (NULL: from the start), at most limit. */
int presence_channels_list(presence_t *p, const char *prefix,
                           const char *after, size_t limit,
                           presence_channels_cb cb, void *ud);
/* The user's memberships (next is always NULL, count the number). */
int presence_user_channels(presence_t *p, const char *user_id,
                           presence_members_cb cb, void *ud);
/* Synchronous forms (embedded store; ENOTSUP otherwise). member_get
 * returns ENOTMEMBER for a non-member; strings valid until the next
 * mutation, out->metas (the store's one buffer, which another member's
 * larger list moves) until the next query or mutation of p: copy what you
 * keep. channel_count returns the count. */
int presence_member_get(presence_t *p, const char *channel,
                        const char *user_id, presence_member_info_t *out);
int presence_channel_count(presence_t *p, const char *channel);

int presence_on_channel_join(presence_t *p, presence_event_cb cb, void *ud);
int presence_on_channel_leave(presence_t *p, presence_event_cb cb, void *ud);
int presence_on_channel_update(presence_t *p, presence_event_cb cb, void *ud);

/* Validate a channel name as the library would (0 or PRESENCE_ECHANNEL). */
int presence_channel_check(const char *channel);

/* ---- Availability, status message, devices ------------------------------- */

/*
 * Status that people set, per user, kept in the store across reconnects
 * (and instance deaths and store loss on Redis). Each change that changes
 * something is one event, edge-triggered like the rest: setting what is
 * already set emits nothing. A user the store has never seen gets a record.
 */

/* "auto", "dnd", "away", "invisible"; parse returns 0 or EAVAILABILITY. */
const char *presence_availability_name(presence_availability_t a);
int presence_availability_parse(const char *name, presence_availability_t *out);

/* user.availability (reason "explicit"). EAVAILABILITY for anything else. */
int presence_user_set_availability(presence_t *p, const char *user_id,
                                   presence_availability_t availability,
                                   presence_done_cb done, void *ud);

/*
 * Set the status message: text and emoji (either may be NULL or empty; both
 * empty clears it), and expires_ms, the wall-clock time at which the store
 * clears it (one user.message, reason "expired", exactly once), or 0 for
 * none. Errors, nothing stored: EMESSAGE (text over message_max_chars
 * characters, emoji over PRESENCE_EMOJI_MAX bytes, either not UTF-8 or with
 * control characters), EEXPIRY (not after now, or more than
 * PRESENCE_MESSAGE_TTL_MAX_MS ahead). Setting the same text, emoji and
 * expiry again emits nothing.
 */
int presence_user_set_message(presence_t *p, const char *user_id,
                              const char *text, const char *emoji,
                              int64_t expires_ms, presence_done_cb done,
                              void *ud);
/* The same as presence_user_set_message(p, user_id, NULL, NULL, 0, ...). */
int presence_user_clear_message(presence_t *p, const char *user_id,
                                presence_done_cb done, void *ud);

/* presence_session_open with the session's device kind (NULL:
 * PRESENCE_DEVICE_DEFAULT). EDEVICE for a malformed word. */
int presence_session_open_device(presence_t *p, const char *session_id,
                                 const char *user_id, const char *meta,
                                 const char *device, presence_handle_t *handle,
                                 presence_done_cb done, void *ud);
/* presence_session_open_device for an id the caller drew at random (122
 * bits or more, as presenced's UUIDv4 for WebSocket sessions), which no
 * other caller can hold: a store in shards (Redis Cluster) then skips the
 * cluster-wide claim that refuses an id held for another user in another
 * shard (one more Redis call at open and at end; docs/internals/redis.md,
 * "Session ids across shards"). Elsewhere the same as
 * presence_session_open_device. */
int presence_session_open_random(presence_t *p, const char *session_id,
                                 const char *user_id, const char *meta,
                                 const char *device, presence_handle_t *handle,
                                 presence_done_cb done, void *ud);
/* presence_session_open_device that, with a shared store (Redis), takes
 * over the session if another instance holds it for the same user: it
 * becomes this instance's with no event (presenced's backend origins,
 * re-asserted on another instance after a reconnect). Held for another
 * user: EEXIST. With the embedded store the same as
 * presence_session_open_device. */
int presence_session_adopt(presence_t *p, const char *session_id,
                           const char *user_id, const char *meta,
                           const char *device, presence_handle_t *handle,
                           presence_done_cb done, void *ud);
/* How presence_session_open_opts opens a session. A zeroed struct opens
 * as presence_session_open_device with device NULL. */
typedef struct presence_open_opts {
  const char *device; /* NULL: PRESENCE_DEVICE_DEFAULT */
  /* PRESENCE_ONLINE (0 is taken as it) or PRESENCE_IDLE: a session that
   * opens idle (a reconnecting tab whose user is away) makes the user idle,
   * not online, so watchers see the transition that happened and no other
   * (offline -> idle, reason connect; nothing for a user already idle or
   * online but the session's own session.connected). Else ESTATUS. */
  presence_status_t status;
  unsigned flags; /* PRESENCE_OPEN_RANDOM_ID, PRESENCE_OPEN_ADOPT */
} presence_open_opts_t;
/* The id was drawn at random: as presence_session_open_random. */
#define PRESENCE_OPEN_RANDOM_ID 0x1u
/* Take the session over from another instance: as presence_session_adopt
 * (a session taken over keeps the status it had). */
#define PRESENCE_OPEN_ADOPT 0x2u
/* The open functions above in one, with the session's initial status, in
 * one store write. opts NULL: all zero. */
int presence_session_open_opts(presence_t *p, const char *session_id,
                               const char *user_id, const char *meta,
                               const presence_open_opts_t *opts,
                               presence_handle_t *handle,
                               presence_done_cb done, void *ud);
/* Validate a device word as the library would (0 or PRESENCE_EDEVICE). */
int presence_device_check(const char *device);
/* Validate a message as presence_user_set_message would, with max_chars
 * characters at most (0: PRESENCE_MESSAGE_MAX_CHARS): 0 or EMESSAGE. */
int presence_message_check(const char *text, const char *emoji,
                           uint32_t max_chars);

/*
 * What watchers and channel members see (docs/protocol.md §6):
 *   computed offline           -> offline, availability auto
 *   auto                       -> the computed status
 *   dnd                        -> online, availability dnd
 *   away                       -> idle, availability away
 *   invisible                  -> offline, availability auto
 * Backends (API, events, webhooks, library callbacks) see the truth.
 */
presence_status_t presence_shown_status(presence_availability_t a,
                                        presence_status_t computed);
presence_availability_t presence_shown_availability(presence_availability_t a,
                                                    presence_status_t computed);

/*
 * Whether a watcher or channel member sees ev change anything, so that it
 * gets exactly one message when what it sees changes and none otherwise:
 *   user.online/idle/offline, user.availability: 1 when the shown status or
 *     the shown availability differs before (availability_from, from) and
 *     after (availability_to, to);
 *   user.message: 1 (a message is shown whatever the status; an event is
 *     only emitted when it changes);
 *     or, for a user event caused by a session, when the shown status of
 *     that session's device changes;
 *   session events: 1 when the shown status of the session's device
 *     (device_from -> device_to, masked like the user's) changes and no
 *     user event follows (PRESENCE_EVENT_USER_FOLLOWS: that one carries it);
 *   anything else: 0.
 */
int presence_event_watcher_visible(const presence_event_t *ev);

/*
 * Whether the other members and observers of ev's channel see a channel
 * event change anything (docs/protocol.md 4.1 and 6.1: they see a member
 * as watchers see a user), so that they get one message when what they see
 * changes and none otherwise. availability_to is the member's availability:
 *   an invisible member: 0 (it is absent to them: its join, updates and
 *     leave reach only its own sessions);
 *   channel.join, channel.leave: 1;
 *   channel.update: 1 when the member's data changed
 *     (PRESENCE_EVENT_DATA_CHANGED) or its shown status in the channel
 *     differs before and after (an idle -> online under dnd shows nothing);
 *   anything else: 0.
 */
int presence_event_member_visible(const presence_event_t *ev);

#ifdef __cplusplus
}
#endif
#endif /* PRESENCE_H */
