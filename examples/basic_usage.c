/* SPDX-License-Identifier: MIT */
/*
 * The seed's "Basic Usage", embedded in a C server.
 *
 * The Meteor package kept a `status` and a `lastOnline` field on each user
 * record and updated them from four callbacks. Here the "user records" are an
 * array in this program (in a real server: your database), and libpresence
 * calls the same four callbacks, once per real transition.
 *
 * Build: cc -std=c11 basic_usage.c $(pkg-config --cflags --libs libpresence)
 */
#include <presence.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

/* The application's own user records. */
typedef struct user_record {
  const char *id;
  const char *status; /* "online", "idle" or NULL (unset: offline) */
  time_t last_online;
} user_record_t;

static user_record_t users[] = {{"alice", NULL, 0}, {"bob", NULL, 0}};

static user_record_t *find_user(const char *id) {
  for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++)
    if (strcmp(users[i].id, id) == 0) return &users[i];
  return NULL;
}

/* A full cleanup: nobody is known to be online any more. */
static void on_cleanup(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  (void)ud;
  /* A fresh start names no instance. One dead instance's cleanup names it,
   * and its session list may be NULL (it held none, or the log left it out). */
  if (!ev->instance_id)
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++)
      users[i].status = NULL;
}

static void on_user_online(presence_t *p, const presence_event_t *ev,
                           void *ud) {
  (void)p;
  (void)ud;
  user_record_t *u = find_user(ev->user_id);
  if (u) {
    u->status = "online";
    u->last_online = (time_t)(ev->ts_ms / 1000);
  }
}

static void on_user_idle(presence_t *p, const presence_event_t *ev, void *ud) {
  (void)p;
  (void)ud;
  user_record_t *u = find_user(ev->user_id);
  if (u) u->status = "idle";
}

static void on_user_offline(presence_t *p, const presence_event_t *ev,
                            void *ud) {
  (void)p;
  (void)ud;
  user_record_t *u = find_user(ev->user_id);
  if (u) u->status = NULL;
}

static void show(const char *when) {
  printf("%-34s", when);
  for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++)
    printf("  %s=%s", users[i].id, users[i].status ? users[i].status : "-");
  printf("\n");
}

int main(void) {
  presence_t *p;
  int rc = presence_new(NULL, &p); /* embedded store, default options */
  if (rc) {
    fprintf(stderr, "presence_new: %s\n", presence_strerror(rc));
    return 1;
  }
  presence_on_cleanup(p, on_cleanup, NULL);
  presence_on_user_online(p, on_user_online, NULL);
  presence_on_user_idle(p, on_user_idle, NULL);
  presence_on_user_offline(p, on_user_offline, NULL);

  /* What a server does as connections come and go. */
  presence_session_connect(p, "tab-1", "alice", NULL, NULL, NULL);
  show("alice opens a tab");
  presence_session_connect(p, "tab-2", "alice", NULL, NULL, NULL);
  presence_session_connect(p, "phone", "bob", NULL, NULL, NULL);
  show("alice opens another, bob his phone");
  presence_session_set_status(p, "tab-1", PRESENCE_IDLE, NULL, NULL);
  show("one of alice's tabs goes idle");
  presence_session_set_status(p, "tab-2", PRESENCE_IDLE, NULL, NULL);
  show("both of alice's tabs are idle");
  presence_session_disconnect(p, "phone", NULL, NULL);
  show("bob closes his phone");
  presence_reset(p, NULL, NULL);
  show("full cleanup");

  presence_free(p);
  return 0;
}
