/* SPDX-License-Identifier: MIT */
/*
 * Status that people set: the names of availabilities, the masking table
 * that watchers and channel members see through, and the checks on a status
 * message and a device word. Pure functions: the engine validates with them
 * before a store sees a write, and the daemon masks with them.
 */
#include "core/internal.h"

#include <string.h>

static const char *const avail_names[PRESENCE_AVAIL_COUNT_] = {
    "auto", "dnd", "away", "invisible"};

const char *presence_availability_name(presence_availability_t a) {
  return (unsigned)a < PRESENCE_AVAIL_COUNT_ ? avail_names[a] : "unknown";
}

int presence_availability_parse(const char *name,
                                presence_availability_t *out) {
  if (!name || !out) return PRESENCE_EAVAILABILITY;
  for (unsigned i = 0; i < PRESENCE_AVAIL_COUNT_; i++) {
    if (strcmp(name, avail_names[i]) == 0) {
      *out = (presence_availability_t)i;
      return 0;
    }
  }
  return PRESENCE_EAVAILABILITY;
}

/*
 * The table (docs/protocol.md, "Availability"). A user with no session is
 * offline whatever is set, and shows no availability: an invisible user must
 * be indistinguishable from an absent one, so an absent one shows nothing
 * either. dnd and away hide the online/idle distinction (an idle -> online
 * under dnd changes nothing a watcher sees); they map onto the status an
 * older client understands (dnd: online, away: idle).
 */
presence_status_t presence_shown_status(presence_availability_t a,
                                        presence_status_t computed) {
  if (computed == PRESENCE_OFFLINE) return PRESENCE_OFFLINE;
  switch (a) {
  case PRESENCE_AVAIL_DND:
    return PRESENCE_ONLINE;
  case PRESENCE_AVAIL_AWAY:
    return PRESENCE_IDLE;
  case PRESENCE_AVAIL_INVISIBLE:
    return PRESENCE_OFFLINE;
  default:
    return computed;
  }
}

presence_availability_t presence_shown_availability(presence_availability_t a,
                                                    presence_status_t computed) {
  if (computed == PRESENCE_OFFLINE || a == PRESENCE_AVAIL_INVISIBLE ||
      (unsigned)a >= PRESENCE_AVAIL_COUNT_)
    return PRESENCE_AVAIL_AUTO;
  return a;
}

static int device_visible(const presence_event_t *ev) {
  return ev->device &&
         presence_shown_status(ev->availability_to, ev->device_from) !=
             presence_shown_status(ev->availability_to, ev->device_to);
}

int presence_event_watcher_visible(const presence_event_t *ev) {
  if (!ev) return 0;
  switch (ev->type) {
  case PRESENCE_EV_USER_ONLINE:
  case PRESENCE_EV_USER_IDLE:
  case PRESENCE_EV_USER_OFFLINE:
  case PRESENCE_EV_USER_AVAILABILITY:
    return presence_shown_status(ev->availability_from, ev->from) !=
               presence_shown_status(ev->availability_to, ev->to) ||
           presence_shown_availability(ev->availability_from, ev->from) !=
               presence_shown_availability(ev->availability_to, ev->to) ||
           device_visible(ev);
  case PRESENCE_EV_USER_MESSAGE:
    return 1;
  case PRESENCE_EV_SESSION_CONNECTED:
  case PRESENCE_EV_SESSION_DISCONNECTED:
  case PRESENCE_EV_SESSION_STATUS:
    return !(ev->flags & PRESENCE_EVENT_USER_FOLLOWS) && device_visible(ev);
  default:
    return 0;
  }
}

/* Device words end up in JSON keys, metrics labels and Redis fields: a small
 * alphabet keeps every one of them free of escaping. */
int presence__device_check_len(const char *device, size_t *len) {
  if (!device) return PRESENCE_EDEVICE;
  size_t n = strnlen(device, PRESENCE_DEVICE_MAX + 1);
  if (n == 0 || n > PRESENCE_DEVICE_MAX) return PRESENCE_EDEVICE;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)device[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return PRESENCE_EDEVICE;
  }
  *len = n;
  return 0;
}

int presence_device_check(const char *device) {
  size_t n;
  return presence__device_check_len(device, &n);
}

size_t presence__utf8_chars(const unsigned char *s, size_t n) {
  size_t chars = 0;
  for (size_t i = 0; i < n; i++)
    if ((s[i] & 0xc0) != 0x80) chars++;
  return chars;
}

/* One optional string of a message: bounded scan (a huge string is refused
 * without reading all of it), UTF-8 without control characters. */
static int message_part(const char *s, size_t max_bytes, size_t max_chars,
                        size_t *len) {
  *len = 0;
  if (!s) return 0;
  size_t n = strnlen(s, max_bytes + 1);
  if (n > max_bytes) return PRESENCE_EMESSAGE;
  if (!presence__utf8_ok((const unsigned char *)s, n)) return PRESENCE_EMESSAGE;
  if (max_chars && presence__utf8_chars((const unsigned char *)s, n) > max_chars)
    return PRESENCE_EMESSAGE;
  *len = n;
  return 0;
}

int presence__message_check_len(const char *text, const char *emoji,
                                uint32_t max_chars, size_t *text_len,
                                size_t *emoji_len) {
  if (!max_chars) max_chars = PRESENCE_MESSAGE_MAX_CHARS;
  int rc = message_part(text, (size_t)max_chars * 4, max_chars, text_len);
  if (rc) return rc;
  return message_part(emoji, PRESENCE_EMOJI_MAX, 0, emoji_len);
}

int presence_message_check(const char *text, const char *emoji,
                           uint32_t max_chars) {
  size_t a, b;
  return presence__message_check_len(text, emoji, max_chars, &a, &b);
}
