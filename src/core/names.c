/* SPDX-License-Identifier: MIT */
/*
 * Names of codes, statuses, event types and reasons: the one place where the
 * strings of the protocol, the logs and the metrics are spelled.
 */
#include "presence.h"

#include <string.h>

const char *presence_strerror(int code) {
  switch (code) {
  case 0:
    return "ok";
#define XX(name, value, msg)                                                   \
  case value:                                                                  \
    return msg;
    PRESENCE_ERRNO_MAP(XX)
#undef XX
  default:
    return "unknown error";
  }
}

const char *presence_err_name(int code) {
  switch (code) {
  case 0:
    return "OK";
#define XX(name, value, msg)                                                   \
  case value:                                                                  \
    return #name;
    PRESENCE_ERRNO_MAP(XX)
#undef XX
  default:
    return "EUNKNOWN";
  }
}

static const char *const status_names[] = {"offline", "online", "idle"};

static const char *const event_names[PRESENCE_EV_COUNT_] = {
    "session.connected", "session.disconnected", "session.status",
    "user.online",       "user.idle",            "user.offline",
    "cleanup",           "channel.join",         "channel.leave",
    "channel.update",    "user.availability",    "user.message"};

static const char *const reason_names[PRESENCE_REASON_COUNT_] = {
    "none",     "connect",  "disconnect",    "explicit", "inactivity",
    "timeout",  "kicked",   "shutdown",      "instance_lost", "resync",
    "expired",
    "origin_lost", "token_expired", "rate_limited", "message_too_big",
    "binary_message", "protocol_error", "malformed_messages", "slow_consumer"};

const char *presence_status_name(presence_status_t s) {
  return (unsigned)s < 3 ? status_names[s] : "unknown";
}

const char *presence_event_type_name(presence_event_type_t t) {
  return (unsigned)t < PRESENCE_EV_COUNT_ ? event_names[t] : "unknown";
}

const char *presence_reason_name(presence_reason_t r) {
  return (unsigned)r < PRESENCE_REASON_COUNT_ ? reason_names[r] : "unknown";
}

int presence_status_parse(const char *name, presence_status_t *out) {
  if (!name || !out) return PRESENCE_EINVAL;
  for (unsigned i = 0; i < 3; i++) {
    if (strcmp(name, status_names[i]) == 0) {
      *out = (presence_status_t)i;
      return 0;
    }
  }
  return PRESENCE_EINVAL;
}

int presence_reason_parse(const char *name, presence_reason_t *out) {
  if (!name || !out) return PRESENCE_EINVAL;
  for (unsigned i = 0; i < PRESENCE_REASON_COUNT_; i++) {
    if (strcmp(name, reason_names[i]) == 0) {
      *out = (presence_reason_t)i;
      return 0;
    }
  }
  return PRESENCE_EINVAL;
}
