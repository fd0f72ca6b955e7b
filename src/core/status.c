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

/* The table and the watcher's view live in core/internal.h (inline: the
 * store applies them to every event it emits). */
presence_status_t presence_shown_status(presence_availability_t a,
                                        presence_status_t computed) {
  return presence__shown_status(a, computed);
}

presence_availability_t presence_shown_availability(presence_availability_t a,
                                                    presence_status_t computed) {
  return presence__shown_availability(a, computed);
}

int presence_event_watcher_visible(const presence_event_t *ev) {
  return ev ? presence__event_watcher_visible(ev) : 0;
}

int presence_event_member_visible(const presence_event_t *ev) {
  return ev ? presence__event_member_visible(ev) : 0;
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
