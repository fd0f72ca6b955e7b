/* SPDX-License-Identifier: MIT */
/*
 * --workers N: one command runs N presenced processes on one machine, every
 * core busy. Each worker is a full presenced and a separate instance on the
 * shared Redis store (its own instance id and epoch), so the event stream,
 * webhooks, kicks and reaping work across workers exactly as across
 * machines; the workers share the listening port through SO_REUSEPORT and
 * the kernel spreads new connections over them.
 *
 * One log reader per machine: worker 1 reads the shared log from Redis and
 * copies each read, as it came, to the other workers over a socket pair
 * each (src/store/redis_feed.c), so Redis sends the log once per machine
 * and the other workers run no XREAD. The pairs are made once, before the
 * first workers start, and the supervisor keeps no end: when worker 1 dies
 * its followers see the end and read the log themselves from where the
 * feed stopped; a restarted worker reads for itself. With the store in
 * shards (Redis Cluster, --redis-shards) the same pair carries every
 * shard's log (redis_shard.c).
 *
 * The process started by the command becomes the supervisor: it holds no
 * connection and no store, forks the workers, forwards SIGTERM and SIGINT
 * to them (each shuts down gracefully: its users go offline at once), and
 * restarts a worker that dies. The dead worker's instance is reaped by the
 * others after its lease, as for a machine that died; the replacement is a
 * new instance (a new id), never the dead one resumed.
 */
#include "server/metrics.h"
#include "server/server.h"
#ifdef PRESENCED_HAVE_REDIS
#include "presence_redis.h"
#endif

#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A worker that fails this soon after its start with an exit status (bad
 * port, Redis URL refused at startup) would fail again: the supervisor
 * stops instead of restarting it in a loop. */
#define WORKER_EARLY_MS 1000
/* Restart delays: doubled per quick death, so a crash loop costs little. */
#define RESTART_MIN_MS 100
#define RESTART_MAX_MS 10000
/* A worker that lived this long resets its restart delay. */
#define WORKER_STABLE_MS 30000

typedef struct worker {
  pid_t pid;          /* 0: not running */
  int64_t started_ms; /* monotonic */
  int64_t restart_at; /* monotonic; 0: none scheduled */
  uint32_t delay_ms;
  uint32_t restarts;
} worker_t;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The supervisor logs through the daemon's logger (same format and level)
 * from a server that never starts: only its configuration, clock and
 * instance id are used. */
static srv_t sup;

/* The log feed: pair k (worker k + 2's) is {worker 1's end, its end}. */
static int (*feeds)[2];
static uint32_t nfeeds;
/* What each worker's clients watch (interest.c), shared by the first
 * workers: worker 1 passes each of the others only what it counts. */
static struct presence_redis_interest *interest;

static void interest_drop(void) {
#ifdef PRESENCED_HAVE_REDIS
  presence_redis_interest_free(interest);
#endif
  interest = NULL;
}

static void feeds_close(void) {
  for (uint32_t i = 0; i < nfeeds; i++) {
    if (feeds[i][0] >= 0) close(feeds[i][0]);
    if (feeds[i][1] >= 0) close(feeds[i][1]);
    feeds[i][0] = feeds[i][1] = -1;
  }
}

/* In worker k's process: keep its own ends only, and say so in cfg. */
static void feeds_take(uint32_t k, srv_config_t *cfg) {
  cfg->feed_in = 0;
  cfg->feed_out = NULL;
  cfg->n_feed_out = 0;
  cfg->interest = NULL;
  if (!nfeeds || feeds[0][0] < 0) { /* a restart: no feed */
    free(feeds);
    feeds = NULL;
    nfeeds = 0;
    interest_drop();
    return;
  }
  cfg->interest = interest; /* the mapping stays in this process */
  interest = NULL;
  static int outs[256];
  for (uint32_t i = 0; i < nfeeds; i++) {
    if (k == 1) {
      outs[cfg->n_feed_out++] = feeds[i][0];
      close(feeds[i][1]);
    } else if (i + 2 == k) {
      cfg->feed_in = feeds[i][1];
      close(feeds[i][0]);
    } else {
      close(feeds[i][0]);
      close(feeds[i][1]);
    }
  }
  if (k == 1) cfg->feed_out = outs;
  nfeeds = 0;
  free(feeds);
  feeds = NULL;
}

/* Before the first workers: n - 1 pairs. Without them each worker reads
 * the log itself, as separate instances do. */
static void feeds_make(uint32_t n) {
  feeds = calloc(n, sizeof *feeds);
  if (!feeds) return;
  for (uint32_t i = 0; i + 1 < n; i++) {
    int rc = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, feeds[i]);
    if (rc != 0) feeds[i][0] = feeds[i][1] = -1;
    nfeeds = i + 1;
    /* Descriptor 0 (stdin closed) would read as "no feed" in the options. */
    if (rc != 0 || feeds[i][0] == 0 || feeds[i][1] == 0) {
      srv_log(&sup, PRESENCE_LOG_WARN,
              "log feed: %s (each worker reads the log itself)",
              rc ? strerror(errno) : "descriptor 0");
      feeds_close();
      nfeeds = 0;
      return;
    }
    /* Room for bursts: the reader writes without waiting. */
    int sz = 4 << 20;
    setsockopt(feeds[i][0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  }
#ifdef PRESENCED_HAVE_REDIS
  /* bench/workers.py measures the shared reader without interest too. */
  const char *ni = getenv("PRESENCED_BENCH_NO_INTEREST");
  if (n > 1 && (!ni || strcmp(ni, "1")) &&
      !(interest = presence_redis_interest_new(n)))
    srv_log(&sup, PRESENCE_LOG_WARN,
            "log feed: no shared memory for the workers' interest (every "
            "worker gets every event)");
#endif
}

/* Forks worker k. In the child: returns 1 with cfg filled for it. In the
 * supervisor: returns 0 (started) or -1 (fork failed). */
static int spawn(worker_t *w, uint32_t k, srv_config_t *cfg,
                 const sigset_t *old_mask) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    srv_log(&sup, PRESENCE_LOG_ERROR, "worker %u: fork: %s", k,
            strerror(errno));
    return -1;
  }
  if (pid == 0) {
    /* A supervisor killed with SIGKILL cannot forward anything: the
     * workers then shut down gracefully on their own. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) raise(SIGTERM);
    sigprocmask(SIG_SETMASK, old_mask, NULL);
    feeds_take(k, cfg);
    cfg->worker = k;
    cfg->worker_restarts = w->restarts;
    return 1;
  }
  w->pid = pid;
  w->started_ms = mono_ms();
  w->restart_at = 0;
  srv_log(&sup, PRESENCE_LOG_INFO, "worker %u started (pid %d)", k, (int)pid);
  return 0;
}

static void signal_all(worker_t *ws, uint32_t n, int sig) {
  for (uint32_t i = 0; i < n; i++)
    if (ws[i].pid > 0) kill(ws[i].pid, sig);
}

static uint32_t running(const worker_t *ws, uint32_t n) {
  uint32_t r = 0;
  for (uint32_t i = 0; i < n; i++) r += ws[i].pid > 0;
  return r;
}

static void describe(int status, char *out, size_t cap) {
  if (WIFSIGNALED(status))
    snprintf(out, cap, "killed by signal %d", WTERMSIG(status));
  else
    snprintf(out, cap, "exit status %d", WEXITSTATUS(status));
}

/* One dead worker, seen by the supervisor. Returns -1 when the supervisor
 * must stop (the worker cannot start), else 0. */
static int on_exit_of(worker_t *w, uint32_t k, int status, int stopping) {
  char how[48];
  describe(status, how, sizeof how);
  int64_t now = mono_ms(), lived = now - w->started_ms;
  w->pid = 0;
  if (stopping) {
    srv_log(&sup, PRESENCE_LOG_INFO, "worker %u stopped (%s)", k, how);
    return 0;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0 &&
      lived < WORKER_EARLY_MS) {
    srv_log(&sup, PRESENCE_LOG_ERROR,
            "worker %u failed at startup (%s): stopping", k, how);
    return -1;
  }
  if (lived >= WORKER_STABLE_MS || w->delay_ms == 0)
    w->delay_ms = RESTART_MIN_MS;
  else if (w->delay_ms < RESTART_MAX_MS)
    w->delay_ms = w->delay_ms * 2 > RESTART_MAX_MS ? RESTART_MAX_MS
                                                    : w->delay_ms * 2;
  w->restart_at = now + w->delay_ms;
  w->restarts++;
  srv_log(&sup, PRESENCE_LOG_WARN,
          "worker %u died (%s) after %lld ms: restarting it in %u ms as a new "
          "instance (the others reap its sessions after the lease)",
          k, how, (long long)lived, w->delay_ms);
  return 0;
}

/* --listen HOST:0 with --workers: each worker asking the kernel for a port
 * would get one of its own, and the workers would serve on N ports, none
 * of them the one the start line named. The supervisor asks once: a
 * socket bound with SO_REUSEPORT (never listening, so it takes no
 * connection) holds the port for the workers and their restarts, which
 * bind it by number. Returns the socket (or -1, the workers then try the
 * port themselves and say why they cannot). SO_REUSEPORT alone, without
 * SO_REUSEADDR: Linux lets a socket of another user share a port with
 * SO_REUSEPORT ones only while they are in TIME_WAIT, but with SO_REUSEADDR
 * on both it lets any socket bind a port none of whose sockets listens:
 * while no worker listened (at start, or every worker restarting) another
 * local user could bind and listen on the reserved port, and the workers
 * coming back could not (it took the clients' tokens and API keys). A
 * port given (--listen HOST:7070) is held the same way, for the same
 * window: with no socket of the supervisor's on it, any local user could
 * take it while every worker restarted. */
#ifndef SO_REUSEPORT
#define SO_REUSEPORT 15 /* Linux's, hidden by the strict POSIX level */
#endif
static int reserve_port(srv_config_t *cfg) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  int v6 = strchr(cfg->host, ':') != NULL;
  int rc = v6 ? uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&ss)
              : uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&ss);
  if (rc != 0) return -1;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int on = 1;
  socklen_t len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
      bind(fd, (struct sockaddr *)&ss, len) != 0 ||
      getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
    close(fd);
    return -1;
  }
  config_set_bound_port(cfg, (struct sockaddr *)&ss);
  return fd;
}

int workers_run(srv_config_t *cfg, int *exit_code) {
  uint32_t n = cfg->workers;
  char uuid[37];
  *exit_code = 1;
  memset(&sup, 0, sizeof sup);
  sup.cfg = *cfg; /* shallow: read only, never freed through sup */
  sup.sys = srv_sys_default();
  if (srv_uuid4(sup.sys, uuid) != 0) {
    fprintf(stderr, "presenced: no random source for the instance ids\n");
    return 0;
  }
  snprintf(cfg->worker_base, sizeof cfg->worker_base, "%.8s", uuid);
  snprintf(sup.instance_id, sizeof sup.instance_id, "%s-sup",
           cfg->worker_base);

  worker_t *ws = calloc(n, sizeof *ws);
  if (!ws) return 0;
  /* Signals are taken synchronously (sigtimedwait): blocked from here, and
   * unblocked again in each worker, whose event loop handles them. */
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  /* Under nohup SIGHUP stays ignored, as in each worker (server.c): a
   * blocked signal is kept pending even when ignored, so waiting for it
   * here stopped the workers, which ignore it, until their SIGKILL. */
  struct sigaction hup;
  if (sigaction(SIGHUP, NULL, &hup) != 0 || hup.sa_handler != SIG_IGN)
    sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, &old);

  int stopping = 0, failed = 0;
  int64_t kill_at = 0;
  /* bench/workers.py measures the machine without the feed too. */
  const char *nf = getenv("PRESENCED_BENCH_NO_LOG_FEED");
  if (!nf || strcmp(nf, "1")) feeds_make(n);
  int port_fd = reserve_port(cfg);
  /* /metrics of any worker answers for all of them (metrics.h). */
  cfg->metrics_shm = metrics_shm_new(n);
  if (!cfg->metrics_shm)
    srv_log(&sup, PRESENCE_LOG_WARN,
            "metrics: no shared memory for the workers' figures (each "
            "worker's /metrics holds its own only)");
  sup.cfg = *cfg;
  srv_log(&sup, PRESENCE_LOG_INFO, "supervising %u workers on %s", n,
          cfg->listen);
  for (uint32_t i = 0; i < n; i++) {
    int r = spawn(&ws[i], i + 1, cfg, &old);
    if (r == 1) {
      free(ws);
      if (port_fd >= 0) close(port_fd);
      return (int)(i + 1);
    }
    if (r < 0) {
      failed = stopping = 1;
      signal_all(ws, n, SIGTERM);
      break;
    }
  }
  /* The supervisor keeps no end: a worker's death is its peers' EOF. Nor
   * the interest table: a restarted worker reads the log itself. */
  interest_drop();
  feeds_close();
  nfeeds = 0;
  free(feeds);
  feeds = NULL;
  for (;;) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      for (uint32_t i = 0; i < n; i++) {
        if (ws[i].pid != pid) continue;
        /* Its figures stop counting now, not STALE_MS from now. */
        metrics_shm_clear(cfg->metrics_shm, i + 1);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
          failed |= stopping; /* an unclean end of a shutdown */
        if (on_exit_of(&ws[i], i + 1, status, stopping) != 0) {
          failed = stopping = 1;
          kill_at = mono_ms() + cfg->shutdown_timeout_ms + 2000;
          signal_all(ws, n, SIGTERM);
        }
      }
    }
    if (stopping && running(ws, n) == 0) break;
    int64_t now = mono_ms();
    if (stopping && kill_at && now >= kill_at) {
      /* Each worker has its own hard limit (--shutdown-timeout-ms); past
       * it and a margin, one that still runs is stuck. */
      srv_log(&sup, PRESENCE_LOG_WARN, "workers still running: SIGKILL");
      signal_all(ws, n, SIGKILL);
      kill_at = 0;
      failed = 1;
    }
    int64_t next = now + 1000;
    for (uint32_t i = 0; i < n && !stopping; i++) {
      if (ws[i].pid || !ws[i].restart_at) continue;
      if (ws[i].restart_at <= now) {
        int r = spawn(&ws[i], i + 1, cfg, &old);
        if (r == 1) {
          free(ws);
          if (port_fd >= 0) close(port_fd);
          return (int)(i + 1);
        }
        if (r < 0) ws[i].restart_at = now + RESTART_MAX_MS;
      }
      if (ws[i].restart_at && ws[i].restart_at < next) next = ws[i].restart_at;
    }
    int64_t wait = next - now;
    if (wait < 1) wait = 1;
    struct timespec ts = {(time_t)(wait / 1000), (long)(wait % 1000) * 1000000};
    siginfo_t info;
    int sig = sigtimedwait(&set, &info, &ts);
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
      if (!stopping)
        srv_log(&sup, PRESENCE_LOG_INFO, "%s: stopping %u workers",
                sig == SIGTERM  ? "SIGTERM"
                : sig == SIGINT ? "SIGINT"
                                : "SIGHUP",
                running(ws, n));
      stopping = 1;
      kill_at = mono_ms() + cfg->shutdown_timeout_ms + 2000;
      /* SIGHUP ends a worker as SIGTERM does (server.c, on_signal). */
      signal_all(ws, n, sig); /* again on a second signal: harmless */
    }
  }
  free(ws);
  if (port_fd >= 0) close(port_fd);
  srv_log(&sup, PRESENCE_LOG_INFO, "stopped");
  *exit_code = failed ? 1 : 0;
  return 0;
}
