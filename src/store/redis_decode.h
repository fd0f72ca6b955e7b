/*
 * The Redis store's decoding of one transition-log entry, apart from the
 * store's state so that a fuzzer can drive it with arbitrary replies.
 */
#ifndef PRESENCE_REDIS_DECODE_H
#define PRESENCE_REDIS_DECODE_H

#include "presence.h"

#include <hiredis/hiredis.h>

/* Decode e, a log entry {id, {field, value, ...}} as XRANGE, XREAD and the
 * store's script return it. self is this instance's id (events of others
 * get PRESENCE_EVENT_REMOTE). Returns 0 or PRESENCE_ESTORE (not an entry,
 * unknown type) or PRESENCE_ENOMEM. The event's strings point into e; a
 * cleanup's id list is allocated into *ids_buf and *ids, which the caller
 * frees in every case. */
int presence__redis_decode_event(const redisReply *e, const char *self,
                                 presence_event_t *ev, char **ids_buf,
                                 const char ***ids);

#endif
