/* SPDX-License-Identifier: MIT */
/*
 * Many users' presence in one answer, whatever the store: the embedded
 * store answers each question before presence_user_query returns, Redis on a
 * later loop turn. users_query asks one question per user and calls back
 * once, when the last answer is in (the backend API's user routes and the
 * WebSocket snapshot both read presence this way).
 */
#include "server/server.h"

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
};

static void uq_finish(uq_t *q) {
  q->cb(q->s, q->status, q->ids, q->infos, q->n, q->ud);
  free(q->ids);
  free(q->infos);
  free(q->slots);
  free(q);
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
  } else if (!q->status) {
    q->status = status ? status : PRESENCE_ESTORE;
  }
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
