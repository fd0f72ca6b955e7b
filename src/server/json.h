/* SPDX-License-Identifier: MIT */
/*
 * The one JSON writer of presenced: users, sessions, events and the
 * WebSocket frames built from them. Every transport (the backend API, the
 * WebSocket protocol, Server-Sent Events, webhooks) writes through here, so
 * a field added to a user or an event appears the same everywhere.
 *
 * Events are written from a table indexed by event type (json.c,
 * event_shape): a new event type adds one row naming the common fields it
 * carries and, if it has its own, a function appending them.
 */
#ifndef PRESENCED_JSON_H
#define PRESENCED_JSON_H

#include "presence.h"
#include "server/buf.h"

/* A user's presence. Without JSON_USER_SESSIONS: the form of WebSocket
 * snapshots (user_id, status, since, last_seen, version); with it, the
 * backend API's form, which adds the session count. */
#define JSON_USER_SESSIONS 0x1u
/* The masked view watchers and channel members get (docs/protocol.md 1.5);
 * without it, the truth backends get. */
#define JSON_USER_SHOWN 0x2u
void json_user(buf_t *b, const presence_user_info_t *u, unsigned flags);
/* What a person set, as GET /v1/users/{id}/availability (message 0:
 * user_id, availability, availability_since) and .../message (message 1:
 * user_id, message or null) answer it: the truth, as PUT answers. */
void json_user_setting(buf_t *b, const presence_user_info_t *u, int message);

/* One session as GET /v1/users/{id}/sessions lists it. */
void json_session(buf_t *b, const presence_session_info_t *si);

/* One event in the common envelope (seq, type, ts, reason, ids) with the
 * fields of its type: the same text in SSE data lines and webhook bodies, so
 * a consumer parses one shape whatever the transport. */
void json_event(buf_t *b, const presence_event_t *ev);

/* A user event as a watcher sees it: one element of a presence frame's
 * "users" (user_id, status, from, reason, since, last_seen, version, seq). */
void json_user_change(buf_t *b, const presence_event_t *ev);

/* Frames of the WebSocket protocol (docs/protocol.md section 1). */
/* {"type":"presence","snapshot":false,"users":[<json_user_change>]} */
void json_frame_presence_change(buf_t *b, const presence_event_t *ev);
/* {"type":"presence","snapshot":true[,"id":<id>],"users":[<json_user>...]};
 * id is the request's id, already rendered as JSON (NULL: none). */
void json_frame_snapshot(buf_t *b, const char *id,
                         const presence_user_info_t *users, size_t n);
/* {"type":"ack","id":<id>} */
void json_frame_ack(buf_t *b, const char *id);
/* {"type":"pong"[,"id":<id>],"ts":<ts_ms>} */
void json_frame_pong(buf_t *b, const char *id, int64_t ts_ms);
/* {"type":"error","code":...,"message":...[,"id":<id>]} */
void json_frame_error(buf_t *b, const char *code, const char *message,
                      const char *id);

/* Channels (docs/protocol.md section 4). A member: user_id, status, data,
 * since, version; with JSON_MEMBER_SESSIONS the backend API's form, which
 * adds every joined session ("sessions"). */
#define JSON_MEMBER_SESSIONS 0x1u
/* The form other clients see: status and availability as shown
 * (presence_shown_status); without it the truth (backends). */
#define JSON_MEMBER_SHOWN 0x2u
void json_member(buf_t *b, const presence_member_info_t *m, unsigned flags);
/* {"type":"channel","channel":..,"snapshot":false,"event":"join"|"leave"|
 * "update","seq":..,"reason":..,"count":..,"member":{..},"from":..}: the
 * same bytes for every recipient. */
void json_frame_channel_change(buf_t *b, const presence_event_t *ev);
/* {"type":"channel","channel":..,"snapshot":true[,"id":..],"count":..,
 * "more":..,"members":[..]} */
void json_frame_channel_snapshot(buf_t *b, const char *id, const char *channel,
                                 const presence_member_info_t *m, size_t n,
                                 uint64_t count, int more);
/* The page after it (a members request): {"type":"channel","channel":..,
 * "snapshot":false,"page":true[,"id":..],"more":..,"members":[..]}, no
 * count (channels.c says why). */
void json_frame_channel_page(buf_t *b, const char *id, const char *channel,
                             const presence_member_info_t *m, size_t n,
                             int more);

#endif
