/* SPDX-License-Identifier: MIT */
/*
 * The store interface: where presence lives and where transitions are decided.
 *
 * A store is a table of functions (struct presence_store_ops) over a state
 * that embeds struct presence_store first. Two implementations ship: the
 * embedded in-memory store (presence_store_memory_new) and the Redis store
 * (one per instance, many instances per Redis).
 *
 * Contract:
 *   - A store decides every transition itself (a Redis store inside one Lua
 *     script), assigns sequence numbers and appends to its transition log,
 *     then reports each event, in sequence order, through host->emit. A
 *     session event is emitted before the user event it caused.
 *   - Every mutation carries the writing instance's id and epoch, so a store
 *     shared between instances can refuse writes from a superseded epoch
 *     (PRESENCE_EFENCED).
 *   - Operations complete through their callback. A store with
 *     PRESENCE_STORE_SYNC completes every operation before returning; others
 *     complete later, on the thread that drives the presence_t.
 *   - Argument validation happens in the engine before the store sees a call.
 *   - Required ops: attach, write, user_query, sessions_query, destroy. Any
 *     other may be NULL: tick (no timers: presence_tick returns -1),
 *     log_read and log_last_seq (no log: presence_log_read is ENOTSUP,
 *     presence_log_last_seq 0), the synchronous extras and the channel ops
 *     (ENOTSUP), log_count (one log; with it, log_read_of and
 *     log_last_seq_of are required too), channel_members_brief.
 */
#ifndef PRESENCE_STORE_H
#define PRESENCE_STORE_H

#include "presence.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct presence_store presence_store_t;
typedef struct presence_store_ops presence_store_ops_t;

/* What the engine gives a store when it attaches it. */
typedef struct presence_store_host {
  /* Report one event; the engine copies what it needs before returning. */
  void (*emit)(void *host_ud, const presence_event_t *ev);
  /* The same for an event already packed by the library's own log
   * (presence__log_append): a copy without re-measuring. In-tree stores
   * only. */
  void (*emit_packed)(void *host_ud, const void *packed);
  /* Logging, clocks and allocation of the owning presence_t. */
  void (*log)(void *host_ud, presence_log_level_t level, const char *msg);
  int64_t (*wall_ms)(void *host_ud);
  int64_t (*mono_ms)(void *host_ud);
  const presence_allocator_t *allocator;
  void *host_ud;
  /* Configuration relevant to transitions. */
  const char *instance_id;
  uint64_t epoch;
  uint32_t offline_grace_ms;
  uint32_t inactivity_ms;
  uint32_t log_capacity;
  uint32_t max_sessions_per_user;
  uint32_t expected_sessions;
  uint32_t expected_users;
  uint32_t offline_retention_s; /* see presence_options_t; 0: keep */
  uint32_t channel_grace_ms;       /* resolved: 0 means no grace */
  uint32_t max_channels_per_session; /* 0: unlimited */
  /* Cluster events (stores with PRESENCE_STORE_OBSERVES): every event of the
   * shared log, from any instance, in log order, including this instance's
   * own (already reported through emit, which is what fires the action
   * callbacks). An event decided by another instance carries
   * PRESENCE_EVENT_REMOTE. */
  void (*observe)(void *host_ud, const presence_event_t *ev);
  uint32_t expected_memberships; /* sizing hint; 0: grow */
  /* Stores with PRESENCE_STORE_DEADLINES: the next deadline may have come
   * nearer (one was added that may be the earliest), so the engine must
   * tick after this call to learn it. */
  void (*deadline)(void *host_ud);
  /* The first event is seq_base + 1 (presence_options_t.seq_base). */
  uint64_t seq_base;
} presence_store_host_t;

typedef enum {
  PRESENCE_WRITE_CONNECT = 0,
  PRESENCE_WRITE_END,        /* disconnect for `reason` */
  PRESENCE_WRITE_SET_STATUS, /* status + reason */
  PRESENCE_WRITE_TOUCH,      /* activity */
  PRESENCE_WRITE_RESET,      /* full cleanup (fresh start) */
  PRESENCE_WRITE_JOIN,       /* session joins channel with data */
  PRESENCE_WRITE_UPDATE,     /* session's data in channel */
  PRESENCE_WRITE_LEAVE,      /* session leaves channel */
  PRESENCE_WRITE_REMOVE_USER, /* user_id's sessions leave channel (kicked) */
  PRESENCE_WRITE_SET_AVAILABILITY, /* user_id + availability */
  PRESENCE_WRITE_SET_MESSAGE, /* user_id + message, emoji, expires_ms */
  /* Every offline grace and channel grace pending ends now, for `reason`
   * (presence_end_graces). A store whose graces another instance ends
   * refuses it (ENOTSUP). */
  PRESENCE_WRITE_END_GRACES
} presence_write_kind_t;

typedef struct presence_write {
  presence_write_kind_t kind;
  const char *instance_id; /* fencing: who writes */
  uint64_t epoch;          /* fencing: which incarnation */
  const char *session_id;
  size_t session_id_len;
  const char *user_id;
  size_t user_id_len;
  const char *meta; /* CONNECT only, may be NULL */
  size_t meta_len;
  presence_status_t status;
  presence_reason_t reason;
  /* END, SET_STATUS, TOUCH: when not PRESENCE_HANDLE_NONE, the session is
   * this handle and session_id is NULL. */
  presence_handle_t handle;
  /* CONNECT: where to put the new session's handle, or NULL. */
  presence_handle_t *handle_out;
  /* JOIN, UPDATE, LEAVE, REMOVE_USER: the channel; JOIN, UPDATE: the data
   * (NULL: none). */
  const char *channel;
  size_t channel_len;
  const char *data;
  size_t data_len;
  /* CONNECT: the session's device kind (never NULL: the engine fills in
   * PRESENCE_DEVICE_DEFAULT). */
  const char *device;
  size_t device_len;
  /* SET_AVAILABILITY. */
  presence_availability_t availability;
  /* SET_MESSAGE: validated; NULL (length 0) for none; both NULL clears.
   * expires_ms: wall clock, 0 for none. */
  const char *message;
  size_t message_len;
  const char *emoji;
  size_t emoji_len;
  int64_t expires_ms;
  /* PRESENCE_WRITE_F_* */
  unsigned flags;
} presence_write_t;

/* CONNECT: if the session exists for the same user on another instance of a
 * shared store, take it over (it becomes this instance's, with no event)
 * instead of refusing with EEXIST. A backend's origin that reconnected to
 * another instance re-asserts its sessions this way (docs/protocol.md
 * section 5). Stores of one instance ignore it. */
#define PRESENCE_WRITE_F_ADOPT 0x1u

/* CONNECT: the id was drawn at random by the caller
 * (presence_session_open_random): a store that claims ids cluster-wide
 * (the Redis store in shards) need not. */
#define PRESENCE_WRITE_F_RANDOM_ID 0x2u

/* UPDATE (and JOIN of a session already a member): a write an asynchronous
 * store cannot make now (not writable, the connection lost with it in
 * flight, fenced: ESTORE, ETIMEDOUT, EFENCED) is undone, the member's data
 * back to what it was, instead of kept in the store's local record and
 * made at its re-assert (presence_handle_update_or_undo). */
#define PRESENCE_WRITE_F_UNDO 0x4u

typedef void (*presence_store_done_fn)(void *ud, int status);

#define PRESENCE_STORE_SYNC 0x1u
/* The store reports cluster events through host->observe. Without it the
 * engine treats every emitted event as the cluster event too. */
#define PRESENCE_STORE_OBSERVES 0x2u
/* The store calls host->deadline whenever a deadline it adds may be nearer
 * than every one it held, and a write that calls nothing leaves its next
 * deadline where it was or later. Without it the engine ticks the store
 * after every outermost write to learn the next deadline (with a host
 * timer); with it, only after writes that called host->deadline: a status
 * change, which schedules nothing, costs no tick. */
#define PRESENCE_STORE_DEADLINES 0x4u

struct presence_store_ops {
  const char *name;
  unsigned flags;
  /* Called once by presence_new. The host outlives the store. */
  int (*attach)(presence_store_t *s, const presence_store_host_t *host);
  /* A mutation. Returns a negative code if refused at once (ENOSESSION,
   * EEXIST, ELIMIT, ...), in which case done is not called; otherwise done
   * runs exactly once. A PRESENCE_STORE_SYNC store gets done NULL (call it
   * only if set): its return value is the outcome. */
  int (*write)(presence_store_t *s, const presence_write_t *w,
               presence_store_done_fn done, void *ud);
  /* Run due timers at monotonic time now_ms; return ms to the next deadline,
   * 0 if due, -1 if none. */
  int64_t (*tick)(presence_store_t *s, int64_t now_ms);
  int (*user_query)(presence_store_t *s, const char *user_id,
                    void (*cb)(void *ud, int status,
                               const presence_user_info_t *info),
                    void *ud);
  int (*sessions_query)(presence_store_t *s, const char *user_id,
                        void (*cb)(void *ud, int status,
                                   const presence_session_info_t *sessions,
                                   size_t n),
                        void *ud);
  /* Synchronous extras; NULL where the store cannot answer at once. */
  int (*session_get)(presence_store_t *s, const char *session_id,
                     presence_session_info_t *out);
  int (*users_foreach)(presence_store_t *s, presence_user_visit_cb cb,
                       void *ud);
  int (*stats)(presence_store_t *s, presence_stats_t *out);
  int (*log_read)(presence_store_t *s, uint64_t after_seq, size_t max,
                  void (*cb)(void *ud, int status,
                             const presence_event_t *events, size_t n),
                  void *ud);
  uint64_t (*log_last_seq)(presence_store_t *s);
  /* Frees the store. Also called on a store never attached, or whose
   * attach failed: presence_new destroys the store it was given whenever
   * it fails. */
  void (*destroy)(presence_store_t *s);
  /* Channels (NULL: ENOTSUP). Pages as presence_channel_members,
   * presence_channels_list and presence_user_channels describe. */
  int (*channel_members)(presence_store_t *s, const char *channel,
                         const char *after, size_t limit,
                         void (*cb)(void *ud, int status,
                                    const presence_member_info_t *m, size_t n,
                                    uint64_t count, const char *next),
                         void *ud);
  int (*channels_list)(presence_store_t *s, const char *prefix,
                       const char *after, size_t limit,
                       void (*cb)(void *ud, int status,
                                  const presence_channel_info_t *c, size_t n,
                                  const char *next),
                       void *ud);
  int (*user_channels)(presence_store_t *s, const char *user_id,
                       void (*cb)(void *ud, int status,
                                  const presence_member_info_t *m, size_t n,
                                  uint64_t count, const char *next),
                       void *ud);
  /* Synchronous (embedded store only; NULL elsewhere). */
  int (*member_get)(presence_store_t *s, const char *channel,
                    const char *user_id, presence_member_info_t *out);
  /* A log in several logs, each with its own sequence (the Redis store in
   * shards; presence_log_count). NULL: one log, read by log_read. */
  uint32_t (*log_count)(presence_store_t *s);
  int (*log_read_of)(presence_store_t *s, uint32_t log, uint64_t after_seq,
                     size_t max,
                     void (*cb)(void *ud, int status,
                                const presence_event_t *events, size_t n),
                     void *ud);
  uint64_t (*log_last_seq_of)(presence_store_t *s, uint32_t log);
  /* channel_members without each member's sessions (n_metas 0), for a
   * store that lists them cheaper so (presence_channel_members_brief).
   * NULL: channel_members answers. */
  int (*channel_members_brief)(presence_store_t *s, const char *channel,
                               const char *after, size_t limit,
                               void (*cb)(void *ud, int status,
                                          const presence_member_info_t *m,
                                          size_t n, uint64_t count,
                                          const char *next),
                               void *ud);
};

struct presence_store {
  const presence_store_ops_t *ops;
};

/* The embedded store. alloc may be NULL (malloc); it is copied, so it need
 * not outlive the call. */
presence_store_t *presence_store_memory_new(const presence_allocator_t *alloc);

#ifdef __cplusplus
}
#endif
#endif /* PRESENCE_STORE_H */
