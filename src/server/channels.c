/* SPDX-License-Identifier: MIT */
/*
 * Channels over the WebSocket (docs/protocol.md section 4): join, update,
 * leave, observe and unobserve, their limits and grants, the snapshot and
 * the pages after it (members), and the fan-out sink that turns each
 * channel event into one `channel` frame to every connection that joined or
 * observes the channel.
 *
 * An index (srv->channels) maps each channel name to the connections
 * joined to it or observing it; a connection keeps its own list of those
 * entries (conn_chans). A change is serialised once, WebSocket header
 * included, and shared by every recipient's write queue (shbuf).
 */
#include "server/server.h"

#include "server/wsmsg.h"

#include "presence_redis.h"

#include <stdlib.h>
#include <string.h>

typedef struct conn_chan {
  sub_entry_t *e;
  /* The request that made the join pending (joined 2) and the observe that
   * made observing 1, by their number on the connection (conn_chans.reqs):
   * an answer undoes only what its own request did. observe, unobserve,
   * observe again before the first observe's answer (on Redis, where the
   * store answers later): a failure of the first took the second's
   * observation away, which its snapshot had just confirmed. */
  uint32_t join_req, observe_req;
  uint8_t joined;    /* the session is (or is being) joined */
  uint8_t observing; /* observe without join */
} conn_chan_t;

struct conn_chans {
  conn_chan_t *v;
  uint32_t n, cap;
  uint32_t reqs; /* joins and observes asked on this connection */
  int64_t rate_window_ms;
  uint32_t rate_count;
};

/* ---- the index (subindex.c) ------------------------------------------- */

static conn_chans_t *chans_of(conn_t *c) {
  conn_chans_t **cc = ws_chans(c);
  if (!*cc) *cc = calloc(1, sizeof **cc);
  return *cc;
}

static conn_chan_t *find(conn_chans_t *cc, const char *name) {
  for (uint32_t i = 0; cc && i < cc->n; i++)
    if (strcmp(cc->v[i].e->key, name) == 0) return &cc->v[i];
  return NULL;
}

/* The connection's record of a channel, subscribing it if new. */
static conn_chan_t *subscribe(conn_t *c, const char *name) {
  conn_chans_t *cc = chans_of(c);
  if (!cc) return NULL;
  conn_chan_t *x = find(cc, name);
  if (x) return x;
  if (cc->n == cc->cap) {
    uint32_t cap = cc->cap ? cc->cap * 2 : 4;
    conn_chan_t *v = realloc(cc->v, cap * sizeof *v);
    if (!v) return NULL;
    cc->v = v;
    cc->cap = cap;
  }
  sub_entry_t *e = subindex_add(&c->srv->channels, name, c);
  if (!e) return NULL;
  x = &cc->v[cc->n++];
  memset(x, 0, sizeof *x);
  x->e = e;
  return x;
}

/* Drop the record once neither joined nor observing. */
static void maybe_unsubscribe(conn_t *c, conn_chan_t *x) {
  conn_chans_t *cc = *ws_chans(c);
  if (x->joined || x->observing) return;
  subindex_remove(&c->srv->channels, x->e, c);
  *x = cc->v[--cc->n];
}

void chan_detach(conn_t *c) {
  conn_chans_t **cc = ws_chans(c);
  if (!*cc) return;
  for (uint32_t i = 0; i < (*cc)->n; i++)
    subindex_remove(&c->srv->channels, (*cc)->v[i].e, c);
  free((*cc)->v);
  free(*cc);
  *cc = NULL;
}

/* After a token refresh (wsconn.c, on_token): the new grants replace the
 * old ones, so a channel they no longer grant is left (joined) or no longer
 * observed at once, as a subscription the new "watch" no longer allows ends
 * (docs/protocol.md 1.2). Without this a withdrawn grant meant nothing to a
 * live connection: it stayed a member, could update its data and kept
 * getting the channel's frames for as long as it stayed up. The names go
 * into b as ,"left":[...] and ,"unobserved":[...] for the ack; b must not
 * be the scratch buffer, which the leave events' frames are made in. The
 * connection may be closed on return (a leave frame it could not take). */
void chan_regrant(conn_t *c, buf_t *b) {
  for (int pass = 0; pass < 2; pass++) {
    uint32_t named = 0;
    conn_chans_t *cc = *ws_chans(c);
    for (uint32_t i = 0; cc && i < cc->n;) {
      conn_chan_t *x = &cc->v[i];
      const char *name = x->e->key;
      int leave = pass == 0 && x->joined && !ws_may_channel(c, name, 1);
      int unobs = pass == 1 && x->observing && !ws_may_channel(c, name, 0);
      if (!leave && !unobs) {
        i++;
        continue;
      }
      buf_puts(b, named++ ? "," : leave ? ",\"left\":[" : ",\"unobserved\":[");
      buf_put_json_str(b, name);
      if (leave) {
        x->joined = 0;
        /* Final, no grace, as a leave message (a join still in flight is
         * ordered before it by the store); its frame reaches the other
         * members and this session, which is still subscribed. */
        (void)presence_handle_leave(c->srv->p, ws_handle(c), name, NULL, NULL);
        if (c->closing) return;
        x = find(cc, name); /* the fan-out may have moved the records */
        if (!x) continue;
      } else {
        x->observing = 0;
      }
      uint32_t before = cc->n;
      int gone = !x->joined && !x->observing;
      if (gone) {
        /* The notice a backend's removal gives (after_removal): clients
         * that know it drop the channel, whatever they make of the ack. */
        buf_t *lb = &c->srv->scratch;
        buf_reset(lb);
        buf_puts(lb, "{\"type\":\"left\",\"channel\":");
        buf_put_json_str(lb, name);
        buf_puts(lb, ",\"reason\":\"not_allowed\"}");
        if (!buf_failed(lb)) ws_send_text(c, lb->data, lb->len);
        if (c->closing) return;
      }
      maybe_unsubscribe(c, x); /* moves the last record into its slot */
      if (cc->n == before) i++;
    }
    if (named) buf_putc(b, ']');
  }
}

/* ---- the sink ----------------------------------------------------------- */

/* Other members see a member as watchers see a user (docs/protocol.md 4.1,
 * presence_event_member_visible): an invisible member's changes reach only
 * its own sessions. */
static int skip_hidden(conn_t *c, void *ud) {
  const presence_event_t *ev = ud;
  return strcmp(ws_user(c), ev->user_id) != 0 &&
         !presence_event_member_visible(ev);
}

/* A channel.update that changes nothing anyone is shown: the member's
 * status in the channel moved under a mask (idle <-> online under dnd or
 * away, anything while invisible) and its data stayed. No frame at all,
 * the member's own sessions included (they are shown the same mask). */
static int masked_update(const presence_event_t *ev) {
  return ev->type == PRESENCE_EV_CHANNEL_UPDATE &&
         !(ev->flags & PRESENCE_EVENT_DATA_CHANGED) &&
         presence_shown_status(ev->availability_from, ev->from) ==
             presence_shown_status(ev->availability_to, ev->to);
}

/* After a backend removed this user (channel.leave, kicked, no session):
 * its sessions here are out of the channel, and told so. */
static void after_removal(conn_t *c, uint32_t i, void *ud) {
  const presence_event_t *ev = ud;
  conn_chan_t *x = find(*ws_chans(c), ev->channel);
  if (!x || !x->joined || strcmp(ws_user(c), ev->user_id) != 0) return;
  x->joined = 0;
  /* The store forgets this session's join too (the Redis store keeps it
   * locally to re-assert after a fence: a removal decided elsewhere must
   * not come back). Already gone there: ENOTMEMBER, nothing changes. */
  (void)presence_handle_leave(c->srv->p, ws_handle(c), ev->channel, NULL,
                              NULL);
  buf_t *lb = &c->srv->scratch;
  buf_reset(lb);
  buf_puts(lb, "{\"type\":\"left\",\"channel\":");
  buf_put_json_str(lb, ev->channel);
  buf_puts(lb, ",\"reason\":\"kicked\"}");
  if (!buf_failed(lb)) ws_send_text(c, lb->data, lb->len);
  if (!x->observing) {
    /* Not subindex_remove: the entry is being iterated (busy). */
    sub_entry_t *e = x->e;
    conn_chans_t *cc = *ws_chans(c);
    e->subs[i] = e->subs[--e->n];
    *x = cc->v[--cc->n];
  }
}

static void on_channel_event(srv_t *s, const presence_event_t *ev, void *ud) {
  (void)ud;
  if (!ev->channel || masked_update(ev)) return;
  sub_entry_t *e = map_get(&s->channels, ev->channel);
  if (!e || e->n == 0) return;
  buf_t *b = &s->scratch;
  buf_reset(b);
  json_frame_channel_change(b, ev);
  if (buf_failed(b)) return;
  int removed = ev->type == PRESENCE_EV_CHANNEL_LEAVE &&
                ev->reason == PRESENCE_REASON_KICKED && !ev->session_id;
  /* A visible member's change goes to every subscriber: no test per
   * recipient (a strcmp of user ids for each of a big channel's members
   * was 2 % of presenced's time in a 1,000-member fan-out). */
  subindex_send(s, &s->channels, e, b,
                presence_event_member_visible(ev) ? NULL : skip_hidden,
                removed ? after_removal : NULL, (void *)ev);
}

/* A user's availability changed: what other members of its channels are
 * shown changes too (invisible: absent; away: idle; dnd: online). One frame
 * per channel with subscribers here, flagged "visibility" (the member's
 * version did not change), to every subscriber but the user's own
 * sessions; those get an update flagged "hidden" when the member went
 * invisible or came back, for the count (on_user_channels). */
typedef struct avail_req {
  srv_t *s;
  presence_event_t ev; /* strings below */
  char user[PRESENCE_ID_MAX + 1];
} avail_req_t;

/* One frame of an availability change, as members are shown it. */
static void avail_frame(buf_t *b, const presence_member_info_t *mi,
                        const avail_req_t *q, const char *event, int hidden,
                        uint64_t shown, const char *from) {
  buf_puts(b, "{\"type\":\"channel\",\"channel\":");
  buf_put_json_str(b, mi->channel);
  buf_puts(b, ",\"snapshot\":false,\"visibility\":true");
  if (hidden) buf_puts(b, ",\"hidden\":true");
  buf_puts(b, ",\"event\":\"");
  buf_puts(b, event);
  buf_puts(b, "\",\"seq\":");
  buf_put_u64(b, q->ev.seq);
  buf_puts(b, ",\"reason\":\"explicit\",\"count\":");
  buf_put_u64(b, shown);
  buf_puts(b, ",\"member\":");
  json_member(b, mi, JSON_MEMBER_SHOWN);
  buf_puts(b, ",\"from\":\"");
  buf_puts(b, from);
  buf_puts(b, "\"}");
}

static void on_user_channels(presence_t *p, int status,
                             const presence_member_info_t *m, size_t n,
                             uint64_t count, const char *next, void *ud) {
  (void)p;
  (void)count;
  (void)next;
  avail_req_t *q = ud;
  srv_t *s = q->s;
  int from_inv = q->ev.availability_from == PRESENCE_AVAIL_INVISIBLE;
  int to_inv = q->ev.availability_to == PRESENCE_AVAIL_INVISIBLE;
  for (size_t i = 0; status == 0 && i < n; i++) {
    sub_entry_t *e = map_get(&s->channels, m[i].channel);
    if (!e || e->n == 0) continue;
    /* Only a membership the change found: the list is read after the
     * event (on Redis, when this instance's log reader got to it), and the
     * user may have joined since. Such a member showed nothing yet if it
     * joined invisible (shown version 0) or got its own join frame. */
    if (m[i].since_ms > q->ev.ts_ms || m[i].shown_version == 0) continue;
    presence_member_info_t mi = m[i];
    mi.availability = q->ev.availability_to;
    /* Back from invisible: the others are shown it joining now, so its
     * since is no earlier (json_member), whatever veil the store read. */
    if (from_inv && mi.veil_to_ms < q->ev.ts_ms) mi.veil_to_ms = q->ev.ts_ms;
    /* The count members are shown now: one less when the member went
     * invisible, one more when it came back, as a leave or a join. */
    uint64_t shown = mi.channel_shown_count;
    if (s->rstore) /* in shards: the channel's, not the user's shard's */
      (void)presence_redis_channel_shown(s->rstore, mi.channel, q->user, shown,
                                         &shown);
    if (to_inv) mi.status = PRESENCE_OFFLINE;
    const char *from = presence_status_name(
        from_inv ? PRESENCE_OFFLINE
                 : presence_shown_status(q->ev.availability_from, m[i].status));
    /* The others see a leave, a join or an update; the user's own sessions
     * list the member throughout (an invisible member sees itself), so they
     * get an update, "hidden" as its other changes while invisible are,
     * with the count the others now see: without it their count stayed one
     * above the others' until the channel's next frame. */
    buf_t *b = &s->scratch;
    buf_reset(b);
    avail_frame(b, &mi, q, to_inv ? "leave" : from_inv ? "join" : "update", 0,
                shown, from);
    if (buf_failed(b)) continue;
    int own = 0;
    for (uint32_t k = 0; k < e->n; k++) {
      conn_t *c = e->subs[k];
      if (c->kind != CONN_WS || c->closing || !c->u.ws) continue;
      if (strcmp(ws_user(c), q->user) == 0) {
        own = 1;
        continue;
      }
      ws_send_text(c, b->data, b->len);
    }
    if (!own || !(to_inv || from_inv)) continue;
    buf_reset(b);
    avail_frame(b, &mi, q, "update", 1, shown, from);
    if (buf_failed(b)) continue;
    for (uint32_t k = 0; k < e->n; k++) {
      conn_t *c = e->subs[k];
      if (c->kind == CONN_WS && !c->closing && c->u.ws &&
          strcmp(ws_user(c), q->user) == 0)
        ws_send_text(c, b->data, b->len);
    }
  }
  free(q);
}

static void on_availability(srv_t *s, const presence_event_t *ev, void *ud) {
  (void)ud;
  if (!ev->user_id || s->channels.count == 0) return;
  avail_req_t *q = calloc(1, sizeof *q);
  if (!q) return;
  q->s = s;
  q->ev = *ev;
  snprintf(q->user, sizeof q->user, "%s", ev->user_id);
  q->ev.user_id = q->user;
  q->ev.channel = NULL;
  if (presence_user_channels(s->p, q->user, on_user_channels, q) != 0) free(q);
}

const fanout_sink_t channel_avail_sink = {
    .name = "channel availability",
    .types = FANOUT_TYPE(PRESENCE_EV_USER_AVAILABILITY),
    .on_event = on_availability,
};

const fanout_sink_t channel_sink = {
    .name = "channels",
    .types = FANOUT_TYPE(PRESENCE_EV_CHANNEL_JOIN) |
             FANOUT_TYPE(PRESENCE_EV_CHANNEL_LEAVE) |
             FANOUT_TYPE(PRESENCE_EV_CHANNEL_UPDATE),
    .on_event = on_channel_event,
};

/* ---- requests ------------------------------------------------------------ */

/* The members of a snapshot gathered over more than one of the store's
 * pages (on_members): copies, as a page lives only for its callback. */
typedef struct snap_fill {
  presence_member_info_t *v; /* user_id and data point into blocks[i] */
  char **blocks;
  size_t n, cap;
  uint64_t visible; /* members others are shown, over the pages so far */
  unsigned rounds;  /* pages asked for after the first */
} snap_fill_t;
/* Pages asked for after the first, at most: a run of invisible members
 * longer than this many pages leaves a short page (more: true). */
#define FILL_ROUNDS_MAX 8
/* With nothing shown yet the fill goes on past FILL_ROUNDS_MAX (an empty
 * page with more gives the client no cursor), but not for ever and not a
 * page at a time: a channel of a million invisible members cost a request
 * a million / --channel-page reads, each a scan of the whole channel on the
 * embedded store (and as deep a recursion, its answers coming before the
 * read returns), any number of them a second from one connection. Those
 * reads double in size, up to FILL_READ_MAX members (the HTTP API's
 * largest page), and a request makes FILL_READS_MAX at most: past them
 * the page goes out empty with more (docs/protocol.md 4.3). */
#define FILL_READ_MAX 1000u
#define FILL_READS_MAX 32

/* A request answered by the store (later, on Redis). */
typedef struct chan_req {
  conn_t *c;
  int type;
  uint32_t seq; /* a first join's or an observe's number (conn_chan_t) */
  int no_snapshot; /* a join answered by an ack ("snapshot":false) */
  snap_fill_t *fill;
  char id[80];
  char channel[];
} chan_req_t;

static chan_req_t *req_new(conn_t *c, const wsmsg_t *m) {
  size_t n = strlen(m->channel) + 1;
  chan_req_t *r = calloc(1, sizeof *r + n);
  if (!r) return NULL;
  r->c = c;
  r->type = m->type;
  r->no_snapshot = m->no_snapshot;
  memcpy(r->id, m->id, sizeof r->id);
  memcpy(r->channel, m->channel, n);
  conn_ref(c);
  return r;
}

static void fill_free(snap_fill_t *f) {
  if (!f) return;
  for (size_t i = 0; i < f->n; i++)
    free(f->blocks[i]);
  free(f->blocks);
  free(f->v);
  free(f);
}

/* Copy n shown members (and the visible count of their page) into r's
 * fill. 0, or -1 without memory (the fill keeps what it had). */
static int fill_add(chan_req_t *r, const presence_member_info_t *m, size_t n,
                    uint64_t visible) {
  snap_fill_t *f = r->fill;
  if (!f && !(f = r->fill = calloc(1, sizeof *f))) return -1;
  if (f->n + n > f->cap) {
    size_t cap = f->n + n;
    presence_member_info_t *v = realloc(f->v, cap * sizeof *v);
    if (!v) return -1;
    f->v = v;
    char **bl = realloc(f->blocks, cap * sizeof *bl);
    if (!bl) return -1;
    f->blocks = bl;
    f->cap = cap;
  }
  for (size_t i = 0; i < n; i++) {
    size_t ul = strlen(m[i].user_id) + 1;
    size_t dl = m[i].data ? strlen(m[i].data) + 1 : 0;
    char *block = malloc(ul + dl);
    if (!block) return -1;
    presence_member_info_t *o = &f->v[f->n];
    *o = m[i];
    o->channel = r->channel;
    o->user_id = memcpy(block, m[i].user_id, ul);
    o->data = dl ? memcpy(block + ul, m[i].data, dl) : NULL;
    o->metas = NULL; /* a snapshot shows no sessions */
    o->n_metas = 0;
    f->blocks[f->n++] = block;
  }
  f->visible += visible;
  return 0;
}

static void req_done(chan_req_t *r) {
  conn_unref(r->c);
  fill_free(r->fill);
  free(r);
}

const char *channel_error_code(int rc) {
  switch (rc) {
  case PRESENCE_ECHANNEL:
    return "bad_channel";
  case PRESENCE_EDATA:
    return "data_too_large";
  case PRESENCE_ECHANLIMIT:
    return "too_many_channels";
  case PRESENCE_ENOTMEMBER:
    return "not_joined";
  case PRESENCE_ESTORE:
  case PRESENCE_ETIMEDOUT:
  case PRESENCE_EFENCED:
    return "store_unavailable";
  default:
    return "internal";
  }
}

/* An observe answered by an error: the connection does not observe the
 * channel (it was subscribed to it before the snapshot was asked, so that
 * no change falls between the two). Kept, the client told its observe
 * failed went on getting the channel's frames, and a later unobserve was
 * the only way to stop them. Joined, it stays joined. */
static void observe_failed(chan_req_t *r, const char *code, const char *msg) {
  conn_chan_t *x = find(*ws_chans(r->c), r->channel);
  if (x && r->type == WSMSG_OBSERVE && x->observing &&
      x->observe_req == r->seq) {
    x->observing = 0;
    maybe_unsubscribe(r->c, x);
  }
  ws_send_error(r->c, code, msg, r->id);
}

/* The member list of a snapshot could not be read. An observe did nothing
 * else: an error, not observing (observe_failed), observe again. A join
 * was made already (the store took it before the listing was asked): an
 * error would say "the join did not happen" (docs/protocol.md 4.5) of a
 * session the others now list and count, which gets the channel's
 * changes. It is answered as a join without a snapshot is, by an ack: the
 * session is a member. */
static void snapshot_failed(chan_req_t *r, int status) {
  if (r->type == WSMSG_JOIN) {
    ws_send_ack(r->c, r->id);
    return;
  }
  observe_failed(r,
                 status == PRESENCE_ESTORE || status == PRESENCE_ETIMEDOUT ||
                         status == PRESENCE_EFENCED
                     ? "store_unavailable"
                     : "internal",
                 presence_strerror(status));
}

/* A snapshot of a channel larger than its page waits for the channel's
 * shown count (the members' page does not carry it): its frame, rendered
 * with a count of 0 at count_at, is completed by on_shown_count. */
typedef struct snap_wait {
  chan_req_t *r;
  char *frame;
  size_t len, count_at;
} snap_wait_t;

static void send_with_count(conn_t *c, const char *frame, size_t len,
                            size_t count_at, uint64_t shown) {
  buf_t *b = &c->srv->scratch;
  buf_reset(b);
  buf_append(b, frame, count_at);
  buf_put_u64(b, shown);
  buf_append(b, frame + count_at + 1, len - count_at - 1); /* past the 0 */
  if (!buf_failed(b)) ws_send_text(c, b->data, b->len);
  buf_shrink(b, 65536);
}

static void on_shown_count(presence_t *p, int status,
                           const presence_channel_info_t *ch, size_t n,
                           const char *next, void *ud) {
  (void)p;
  (void)next;
  snap_wait_t *w = ud;
  chan_req_t *r = w->r;
  conn_t *c = r->c;
  if (!c->closing && c->kind == CONN_WS && c->u.ws) {
    if (status != 0) {
      snapshot_failed(r, status);
    } else {
      /* The prefix's first channel is this one (or it has emptied). */
      uint64_t shown =
          n && strcmp(ch[0].channel, r->channel) == 0 ? ch[0].shown_count : 0;
      send_with_count(c, w->frame, w->len, w->count_at, shown);
    }
  }
  free(w->frame);
  free(w);
  req_done(r);
}

/* The answer to a members request: the next page, shaped as a snapshot
 * (the members as they are shown, more) but flagged "page" and without a
 * count. The count the client holds (its snapshot's, then every change's)
 * is newer than one read with the page could be: on Redis a change may
 * reach the client before the page read ahead of it, and that page's
 * count would take the client back. */
static void members_page(conn_t *c, const chan_req_t *r,
                         const presence_member_info_t *m, size_t n, int more) {
  buf_t *b = &c->srv->scratch;
  buf_reset(b);
  json_frame_channel_page(b, r->id, r->channel, m, n, more);
  if (buf_failed(b))
    ws_send_error(c, "internal", "out of memory", r->id);
  else
    ws_send_text(c, b->data, b->len);
  buf_shrink(b, 65536);
}

static void on_members(presence_t *p, int status,
                       const presence_member_info_t *m, size_t n,
                       uint64_t count, const char *next, void *ud) {
  (void)p;
  (void)count; /* the truth: members are shown the count without the
                  invisible members */
  chan_req_t *r = ud;
  conn_t *c = r->c;
  if (!c->closing && c->kind == CONN_WS && c->u.ws) {
    srv_t *s = c->srv;
    if (status != 0) {
      snapshot_failed(r, status);
    } else {
      /* An invisible member is absent to others (docs/protocol.md 4.1):
       * not listed (but to its own sessions) and never counted. */
      const char *me = ws_user(c);
      presence_member_info_t *shown = n ? malloc(n * sizeof *shown) : NULL;
      size_t k = 0;
      uint64_t visible = 0;
      for (size_t i = 0; shown && i < n; i++) {
        int inv = m[i].availability == PRESENCE_AVAIL_INVISIBLE;
        visible += !inv;
        if (!inv || strcmp(m[i].user_id, me) == 0) shown[k++] = m[i];
      }
      if (n && !shown) {
        observe_failed(r, "internal", "out of memory");
        req_done(r);
        return;
      }
      /* Invisible members left out took room in the page and more members
       * follow: the rest of the page is asked for after them, else a page
       * cut short with more after it would say that some member in it is
       * hidden. On the embedded store the answer comes (and r goes)
       * before presence_channel_members_brief returns. */
      /* Past FILL_ROUNDS_MAX pages a page goes out short, but not empty
       * with more after it while FILL_READS_MAX allows: the client asks
       * for the next page after the last member it was sent, and an empty
       * page gives it none (the JS client stops there, more left true).
       * Those reads are larger (FILL_READ_MAX), so one may bring more
       * shown members than the page holds: the page takes its first ones,
       * with more. */
      size_t page = s->cfg.channel_page;
      size_t before = r->fill ? r->fill->n : 0;
      unsigned rounds = r->fill ? r->fill->rounds : 0;
      int more = next != NULL;
      if (before + k > page) { /* a larger read past a hidden run */
        k = page - before;
        more = 1;
      }
      size_t have = before + k;
      if (next && have < page &&
          (rounds < FILL_ROUNDS_MAX || (have == 0 && rounds < FILL_READS_MAX)) &&
          fill_add(r, shown, k, visible) == 0) {
        free(shown);
        shown = NULL;
        k = visible = 0;
        size_t want = page - have;
        for (unsigned g = FILL_ROUNDS_MAX; g <= rounds && want < FILL_READ_MAX;
             g++)
          want *= 2;
        if (want > FILL_READ_MAX && page - have < FILL_READ_MAX)
          want = FILL_READ_MAX;
        r->fill->rounds++;
        if (presence_channel_members_brief(s->p, r->channel, next, want,
                                           on_members, r) == 0)
          return;
      }
      const presence_member_info_t *list = shown;
      if (r->fill) { /* this page joins the ones before it */
        if (fill_add(r, shown, k, visible) != 0) {
          free(shown);
          observe_failed(r, "internal", "out of memory");
          req_done(r);
          return;
        }
        list = r->fill->v;
        k = r->fill->n;
        visible = r->fill->visible;
      }
      buf_t *b = &s->scratch;
      buf_reset(b);
      if (r->type == WSMSG_MEMBERS) {
        members_page(c, r, list, k, more);
        free(shown);
        req_done(r);
        return;
      }
      json_frame_channel_snapshot(b, r->id, r->channel, list, k,
                                  more ? 0 : visible, more);
      free(shown);
      if (buf_failed(b)) {
        buf_shrink(b, 65536);
      } else if (!more) {
        ws_send_text(c, b->data, b->len);
        buf_shrink(b, 65536);
      } else {
        /* More members than the page: their shown count from the store. */
        /* The frame's own count comes before any member's bytes. */
        static const char key[] = ",\"count\":0,";
        const char *at = NULL;
        for (size_t i = 0; !at && i + sizeof key - 1 <= b->len; i++)
          if (memcmp(b->data + i, key, sizeof key - 1) == 0) at = b->data + i;
        snap_wait_t *w = at ? calloc(1, sizeof *w) : NULL;
        char *frame = w ? malloc(b->len) : NULL;
        if (frame) {
          memcpy(frame, b->data, b->len);
          *w = (snap_wait_t){r, frame, b->len,
                             (size_t)(at - b->data) + strlen(",\"count\":")};
        }
        buf_shrink(b, 65536);
        if (frame && presence_channels_list(s->p, r->channel, NULL, 1,
                                            on_shown_count, w) == 0)
          return;
        free(frame);
        free(w);
        observe_failed(r, "internal", "out of memory");
      }
    }
  }
  req_done(r);
}

/* Send the snapshot of r's channel; consumes r. */
static void snapshot(chan_req_t *r) {
  srv_t *s = r->c->srv;
  /* Members are shown no sessions: the brief listing (docs/api.md). */
  int rc = presence_channel_members_brief(s->p, r->channel, NULL,
                                          s->cfg.channel_page, on_members, r);
  if (rc != 0) {
    snapshot_failed(r, rc);
    req_done(r);
  }
}

static void on_join_done(presence_t *p, int status, void *ud) {
  (void)p;
  chan_req_t *r = ud;
  conn_t *c = r->c;
  if (c->closing || c->kind != CONN_WS || !c->u.ws) {
    req_done(r);
    return;
  }
  conn_chan_t *x = find(*ws_chans(c), r->channel);
  if (status != 0) {
    /* Refused by the store: the record made for it goes. The client is
     * told the join did not happen; a store that could not take it (not
     * writable, the connection lost) keeps its own record of the join for
     * its re-assert, which would then make it: a leave takes that back
     * (ENOTMEMBER where the store dropped it already). */
    if (x && r->type == WSMSG_JOIN && x->joined == 2 &&
        x->join_req == r->seq) {
      (void)presence_handle_leave(c->srv->p, ws_handle(c), r->channel, NULL,
                                  NULL);
      x->joined = 0;
      maybe_unsubscribe(c, x);
    }
    ws_send_error(c, channel_error_code(status), presence_strerror(status), r->id);
    req_done(r);
    return;
  }
  if (x && x->joined == 2 && x->join_req == r->seq) x->joined = 1;
  if (r->type == WSMSG_UPDATE || r->no_snapshot) {
    ws_send_ack(c, r->id);
    req_done(r);
    return;
  }
  snapshot(r);
}

/* joins + observes in the last second over the limit? */
static int over_join_rate(conn_t *c, conn_chans_t *cc) {
  srv_t *s = c->srv;
  int64_t now = srv_now_mono(s);
  if (now - cc->rate_window_ms >= 1000) {
    cc->rate_window_ms = now;
    cc->rate_count = 0;
  }
  return ++cc->rate_count > s->cfg.channel_joins_per_s;
}

void chan_on_message(conn_t *c, const wsmsg_t *m) {
  srv_t *s = c->srv;
  const char *ch = m->channel;
  char msg[300];
  conn_chans_t *cc = chans_of(c);
  if (!cc) {
    ws_send_error(c, "internal", "out of memory", m->id);
    return;
  }
  conn_chan_t *x = find(cc, ch);
  if (strlen(ch) > s->cfg.max_channel_name) {
    snprintf(msg, sizeof msg, "channel names are at most %u bytes here",
             s->cfg.max_channel_name);
    ws_send_error(c, "bad_channel", msg, m->id);
    return;
  }
  if (m->data && strlen(m->data) > s->cfg.max_channel_data) {
    snprintf(msg, sizeof msg, "data is at most %u bytes (compact JSON)",
             s->cfg.max_channel_data);
    ws_send_error(c, "data_too_large", msg, m->id);
    return;
  }
  switch (m->type) {
  case WSMSG_JOIN:
  case WSMSG_OBSERVE: {
    int join = m->type == WSMSG_JOIN;
    int granted = ws_may_channel(c, ch, join);
    if (!granted) {
      snprintf(msg, sizeof msg, "token does not allow %s channel %.128s",
               join ? "joining" : "observing", ch);
      ws_send_error(c, "channel_not_allowed", msg, m->id);
      return;
    }
    if (!x && cc->n >= s->cfg.max_channels_per_session) {
      snprintf(msg, sizeof msg,
               "at most %u channels joined or observed per session",
               s->cfg.max_channels_per_session);
      ws_send_error(c, "too_many_channels", msg, m->id);
      return;
    }
    if (over_join_rate(c, cc)) {
      snprintf(msg, sizeof msg, "at most %u joins and observes a second",
               s->cfg.channel_joins_per_s);
      ws_send_error(c, "join_rate", msg, m->id);
      return;
    }
    /* Taken: activity before the store is asked, so that an idle-by-
     * inactivity session joins online rather than idle and then online. */
    ws_activity(c);
    chan_req_t *r = req_new(c, m);
    x = r ? subscribe(c, ch) : NULL;
    if (!x) {
      if (r) req_done(r);
      ws_send_error(c, "internal", "out of memory", m->id);
      return;
    }
    if (++cc->reqs == 0) cc->reqs = 1; /* 0: no request */
    r->seq = cc->reqs;
    if (!join) {
      x->observing = 1;
      x->observe_req = r->seq;
      snapshot(r);
      return;
    }
    int fresh = !x->joined;
    if (fresh) { /* asked, not yet answered */
      x->joined = 2;
      x->join_req = r->seq;
    }
    /* A join of a channel the session is in already (new data) that the
     * store cannot make now is undone there, as an update is: the client
     * is told store_unavailable, and kept, the new data came back with the
     * store's re-assert and reached the other members after all. A first
     * join that fails is left in on_join_done. */
    int rc = presence_handle_join_or_undo(s->p, ws_handle(c), ch, m->data,
                                          on_join_done, r);
    if (rc != 0) {
      x = find(cc, ch);
      if (x && fresh) {
        x->joined = 0;
        maybe_unsubscribe(c, x);
      }
      ws_send_error(c, channel_error_code(rc), presence_strerror(rc), m->id);
      req_done(r);
    }
    return;
  }
  case WSMSG_UPDATE: {
    if (!x || !x->joined) {
      snprintf(msg, sizeof msg, "not joined to channel %.128s", ch);
      ws_send_error(c, "not_joined", msg, m->id);
      return;
    }
    ws_activity(c); /* as for a join: the update shows the member online */
    chan_req_t *r = req_new(c, m);
    if (!r) {
      ws_send_error(c, "internal", "out of memory", m->id);
      return;
    }
    /* store_unavailable says nothing happened: the store undoes it. */
    int rc = presence_handle_update_or_undo(s->p, ws_handle(c), ch, m->data,
                                            on_join_done, r);
    if (rc != 0) {
      ws_send_error(c, channel_error_code(rc), presence_strerror(rc), m->id);
      req_done(r);
    }
    return;
  }
  case WSMSG_LEAVE: {
    if (!x || !x->joined) {
      snprintf(msg, sizeof msg, "not joined to channel %.128s", ch);
      ws_send_error(c, "not_joined", msg, m->id);
      return;
    }
    int rc = presence_handle_leave(s->p, ws_handle(c), ch, NULL, NULL);
    x = find(cc, ch);
    if (x) {
      x->joined = 0;
      maybe_unsubscribe(c, x);
    }
    if (rc != 0 && rc != PRESENCE_ENOTMEMBER) {
      ws_send_error(c, channel_error_code(rc), presence_strerror(rc), m->id);
      return;
    }
    ws_send_ack(c, m->id);
    return;
  }
  case WSMSG_MEMBERS: {
    /* The next page of a channel this session is shown (joined, or
     * observed): what GET /v1/channels/{name}/members?after= pages through
     * for a backend, as the session would see it in a snapshot. Another
     * channel's members are the token's grants' business: a session that
     * may observe it observes it first. A read the client library makes on
     * its own after a snapshot with more: not activity (on_text). */
    if (!x || (!x->joined && !x->observing)) {
      snprintf(msg, sizeof msg, "not joined to (or observing) channel %.128s",
               ch);
      ws_send_error(c, "not_joined", msg, m->id);
      return;
    }
    chan_req_t *r = req_new(c, m);
    if (!r) {
      ws_send_error(c, "internal", "out of memory", m->id);
      return;
    }
    /* The session gets the channel's changes already, so the page is
     * ordered against them as a snapshot is: a change may arrive just
     * before the page that holds it, and on Redis a page read before a
     * change may arrive after it; the members' versions order them
     * (docs/protocol.md 4.3). */
    int rc = presence_channel_members_brief(s->p, ch, m->after,
                                            s->cfg.channel_page, on_members, r);
    if (rc != 0) {
      ws_send_error(c, channel_error_code(rc), presence_strerror(rc), m->id);
      req_done(r);
    }
    return;
  }
  case WSMSG_UNOBSERVE:
    if (x) {
      x->observing = 0;
      maybe_unsubscribe(c, x);
    }
    ws_send_ack(c, m->id);
    return;
  default:
    return;
  }
}
