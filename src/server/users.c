/* SPDX-License-Identifier: MIT */
/*
 * Many users' presence in one answer, whatever the store: the embedded
 * store answers each question before presence_user_query returns, Redis on a
 * later loop turn. users_query asks one question per user and calls back
 * once, when the last answer is in (the backend API's user routes and the
 * WebSocket snapshot both read presence this way).
 */
#include "server/server.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

typedef struct uq uq_t;
typedef struct uq_slot {
  uq_t *q;
  size_t i;
} uq_slot_t;

struct uq {
  srv_t *s;
  users_cb cb;
  void *ud;
  size_t n, pending;
  int status;
  int issuing; /* still asking: a synchronous answer must not finish it */
  char **ids;
  presence_user_info_t *infos;
  uq_slot_t *slots;
  void **extras; /* per user: its message, emoji and devices, copied */
};

static void uq_finish(uq_t *q) {
  q->cb(q->s, q->status, q->ids, q->infos, q->n, q->ud);
  for (size_t i = 0; q->extras && i < q->n; i++) free(q->extras[i]);
  free(q->extras);
  free(q->ids);
  free(q->infos);
  free(q->slots);
  free(q);
}

static char *put_str(char **t, const char *s) {
  if (!s) return NULL;
  size_t l = strlen(s) + 1;
  char *at = memcpy(*t, s, l);
  *t += l;
  return at;
}

/* The message, emoji and device list point into the store's scratch (the
 * next answer overwrites the devices): one block per user holds copies. On
 * failure the user is answered without them, never with stale pointers. */
static void copy_extras(uq_t *q, size_t i, presence_user_info_t *o) {
  if (!o->message && !o->emoji && !o->n_devices) return;
  size_t bytes = o->n_devices * sizeof(presence_device_status_t);
  bytes += (o->message ? strlen(o->message) + 1 : 0) +
           (o->emoji ? strlen(o->emoji) + 1 : 0);
  for (size_t k = 0; k < o->n_devices; k++)
    bytes += strlen(o->devices[k].device) + 1;
  if (!q->extras) q->extras = calloc(q->n, sizeof *q->extras);
  char *block = q->extras ? malloc(bytes) : NULL;
  if (!block) {
    o->message = o->emoji = NULL;
    o->devices = NULL;
    o->n_devices = 0;
    return;
  }
  q->extras[i] = block;
  presence_device_status_t *d = (presence_device_status_t *)block;
  char *t = block + o->n_devices * sizeof *d;
  for (size_t k = 0; k < o->n_devices; k++) {
    d[k] = o->devices[k];
    d[k].device = put_str(&t, o->devices[k].device);
  }
  o->devices = o->n_devices ? d : NULL;
  o->message = put_str(&t, o->message);
  o->emoji = put_str(&t, o->emoji);
}

static void uq_answer(presence_t *p, int status, const presence_user_info_t *i,
                      void *ud) {
  uq_slot_t *sl = ud;
  uq_t *q = sl->q;
  (void)p;
  if (status == 0 && i) {
    presence_user_info_t *o = &q->infos[sl->i];
    *o = *i;
    o->user_id = q->ids[sl->i]; /* i's strings live only for this call */
    copy_extras(q, sl->i, o);
  } else if (!q->status) {
    q->status = status ? status : PRESENCE_ESTORE;
  }
  assert(q->pending > 0); /* one answer per question */
  if (--q->pending == 0 && !q->issuing) uq_finish(q);
}

int users_query(srv_t *s, char **ids, size_t n, users_cb cb, void *ud) {
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++)
    bytes += strlen(ids[i]) + 1;
  uq_t *q = calloc(1, sizeof *q);
  if (!q) return -1;
  /* The ids and their text in one block: freed at once. */
  q->ids = malloc(n * sizeof *q->ids + bytes + 1);
  q->infos = calloc(n ? n : 1, sizeof *q->infos);
  q->slots = calloc(n ? n : 1, sizeof *q->slots);
  if (!q->ids || !q->infos || !q->slots) {
    free(q->ids);
    free(q->infos);
    free(q->slots);
    free(q);
    return -1;
  }
  char *t = (char *)(q->ids + n);
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(ids[i]) + 1;
    memcpy(t, ids[i], l);
    q->ids[i] = t;
    q->infos[i].user_id = t;
    t += l;
  }
  q->s = s;
  q->cb = cb;
  q->ud = ud;
  q->n = n;
  q->pending = n;
  q->issuing = 1;
  for (size_t i = 0; i < n; i++) {
    q->slots[i].q = q;
    q->slots[i].i = i;
    int rc = presence_user_query(s->p, q->ids[i], uq_answer, &q->slots[i]);
    if (rc < 0) {
      if (!q->status) q->status = rc;
      q->pending--;
    }
  }
  q->issuing = 0;
  if (q->pending == 0) uq_finish(q);
  return 0;
}
