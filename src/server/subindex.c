/* SPDX-License-Identifier: MIT */
/*
 * Subscriber indexes: a map from a key (a watched user id, a channel name)
 * to the connections subscribed to it, and the one-frame-for-everyone write
 * that fans a change out to them. watch.c (users) and channels.c (channels)
 * each keep one.
 *
 * A frame is serialised once, WebSocket header included (server frames are
 * unmasked, so the bytes are the same for everyone), and shared by every
 * subscriber's write queue.
 */
#include "server/server.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static void entry_destroy(map_t *m, sub_entry_t *e) {
  assert(e->n == 0 && !e->busy);
  if (m->on_sub) m->on_sub(m->on_sub_ud, e->key, -1);
  map_del(m, e->key);
  slots_free(e->subs, &e->sub1);
  free(e);
}

void *slots_grow(void *v, void *inline1, uint32_t n, uint32_t *cap,
                 size_t size) {
  if (n < *cap) return v;
  if (*cap == 0) {
    *cap = 1;
    return inline1;
  }
  void *nv;
  if (v == inline1) {
    nv = malloc(2 * (size_t)*cap * size);
    if (nv) memcpy(nv, v, n * size);
  } else {
    nv = realloc(v, 2 * (size_t)*cap * size);
  }
  if (nv) *cap *= 2;
  return nv;
}

void slots_free(void *v, void *inline1) {
  if (v != inline1) free(v);
}

sub_entry_t *subindex_add(map_t *m, const char *key, conn_t *c) {
  sub_entry_t *e = map_get(m, key);
  if (!e) {
    e = calloc(1, sizeof *e);
    if (!e) return NULL;
    if (map_put(m, key, e) != 0) {
      free(e);
      return NULL;
    }
    e->key = map_key(m, key);
    /* Before the caller asks for its snapshot (interest.c). */
    if (m->on_sub) m->on_sub(m->on_sub_ud, e->key, 1);
  }
  conn_t **subs = slots_grow(e->subs, &e->sub1, e->n, &e->cap, sizeof *subs);
  if (!subs) {
    if (e->n == 0 && !e->busy) entry_destroy(m, e);
    return NULL;
  }
  e->subs = subs;
  e->subs[e->n++] = c;
  return e;
}

void subindex_remove(map_t *m, sub_entry_t *e, conn_t *c) {
  for (uint32_t i = 0; i < e->n; i++) {
    if (e->subs[i] == c) {
      e->subs[i] = e->subs[--e->n];
      break;
    }
  }
  if (e->n == 0 && !e->busy) entry_destroy(m, e);
}

int subindex_send(srv_t *s, map_t *m, sub_entry_t *e, const buf_t *frame,
                  int (*skip)(conn_t *c, void *ud), void (*after)(conn_t *c,
                                                                 uint32_t i,
                                                                 void *ud),
                  void *ud) {
  uint8_t hdr[10];
  size_t hl = ws_frame_header(hdr, WS_OP_TEXT, 1, frame->len);
  if (e->n == 1) {
    /* One subscriber (a user watched by one tab, the common case): the
     * frame is copied into the loop turn's write buffer like any other, no
     * shared buffer. A shared one per change cost a malloc and a free, and
     * freeing a turn's worth of them at its flush trimmed the heap (brk)
     * only for the next turn to grow it again. */
    conn_t *c = e->subs[0];
    if (c->kind != CONN_WS || c->closing || !c->u.ws) return 0;
    if (skip && skip(c, ud)) return 0;
    e->busy = 1;
    conn_write2(c, hdr, hl, frame->data, frame->len);
    if (after && !c->closing) after(c, 0, ud);
    e->busy = 0;
    if (e->n == 0) entry_destroy(m, e);
    return 0;
  }
  shbuf_t *sb = shbuf_new(hl + frame->len);
  if (!sb) {
    srv_error(s, "out_of_memory", "cannot fan out a change");
    return -1;
  }
  memcpy(sb->data, hdr, hl);
  memcpy(sb->data + hl, frame->data, frame->len);
  /* Backwards, because a write may close a slow subscriber, which removes
   * it by moving the last (already served) subscriber into its slot. */
  e->busy = 1;
  for (uint32_t i = e->n; i-- > 0;) {
    if (i >= e->n) continue;
    conn_t *c = e->subs[i];
    if (c->kind != CONN_WS || c->closing || !c->u.ws) continue;
    if (skip && skip(c, ud)) continue;
    conn_write_shared(c, sb);
    if (after && !c->closing) after(c, i, ud);
  }
  e->busy = 0;
  shbuf_unref(sb);
  if (e->n == 0) entry_destroy(m, e);
  return 0;
}
