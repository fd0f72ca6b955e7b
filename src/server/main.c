/* SPDX-License-Identifier: MIT */
/*
 * presenced: the presence daemon. Flags and environment, signals, startup
 * and shutdown; everything else lives in the server library.
 */
#include "server/server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

static void log_warning(void *ud, const char *w) {
  srv_log(ud, PRESENCE_LOG_WARN, "%s", w);
}

static const char *env(const char *name) {
  return getenv(name);
}

int main(int argc, char **argv) {
  srv_config_t cfg;
  config_defaults(&cfg);
  int rc = config_parse(&cfg, argc, argv, env, stdout, stderr);
  if (rc != CONFIG_OK) {
    config_free(&cfg);
    return rc == CONFIG_EXIT_OK ? 0 : 2;
  }
  config_wipe_argv(argc, argv);
  if (cfg.workers > 1) {
    /* The supervisor returns here once every worker has stopped; a worker
     * goes on below as a presenced of its own. */
    int code = 0;
    if (workers_run(&cfg, &code) == 0) {
      config_free(&cfg);
      return code;
    }
  }
  /* A peer that vanishes mid-write must cost an EPIPE, not the process. */
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t loop;
  int lrc = uv_loop_init(&loop);
  if (lrc != 0) {
    /* Said with the reason: under a tiny open file limit (ulimit -n 8)
     * the line named no cause at all. */
    struct rlimit rl;
    if (lrc == UV_EMFILE && getrlimit(RLIMIT_NOFILE, &rl) == 0)
      fprintf(stderr,
              "presenced: cannot create the event loop: %s (the open file "
              "limit is %llu: raise it with ulimit -n or LimitNOFILE=)\n",
              uv_strerror(lrc), (unsigned long long)rl.rlim_cur);
    else
      fprintf(stderr, "presenced: cannot create the event loop: %s\n",
              uv_strerror(lrc));
    config_free(&cfg);
    return 1;
  }
  static srv_t srv;
  if (srv_init(&srv, &loop, &cfg, srv_sys_default()) != 0) {
    fprintf(stderr, "presenced: startup failed\n");
    config_free(&cfg);
    return 1;
  }
  /* With --workers, the settings' warnings once, not once per worker. */
  if (cfg.worker <= 1) config_each_warning(&cfg, log_warning, &srv);
  if (srv_listen(&srv) != 0) {
    srv_shutdown(&srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    srv_free(&srv);
    uv_loop_close(&loop);
    config_free(&cfg);
    return 1;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  srv_log(&srv, PRESENCE_LOG_INFO, "stopped");
  srv_free(&srv);
  config_free(&cfg);
  if (uv_loop_close(&loop) != 0)
    fprintf(stderr, "presenced: handles left open at exit\n");
  return 0;
}
