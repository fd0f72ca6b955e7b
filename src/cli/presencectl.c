/* SPDX-License-Identifier: MIT */
/*
 * presencectl: the operator's command line for presenced's backend HTTP API
 * (docs/api.md). One request per command through libcurl's easy interface,
 * except `watch`, which follows GET /v1/events and resumes after every
 * disconnect from the last event it printed. Exit codes are a contract for
 * scripts (presencectl(1)): 0 ok, 1 refused or not found, 2 usage,
 * 3 unreachable, 4 authentication refused.
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "presence.h"

enum {
  EXIT_OK = 0,
  EXIT_FAIL = 1,    /* the server answered: not found, bad id, 5xx, garbage */
  EXIT_USAGE = 2,   /* the command line (or a key file) is wrong */
  EXIT_UNREACH = 3, /* no answer: connection refused, timeout, reset */
  EXIT_AUTH = 4     /* 401/403: the API key was refused */
};

#define MAX_IDS_PER_QUERY 1000 /* docs/api.md: per POST /v1/users/query */
#define KEY_FILE_MAX 65536

typedef struct opts {
  const char *url;
  char *api_key; /* owned */
  int json;
  long timeout_s;
  /* watch */
  const char *after;
  long count;
  long retries; /* -1: for ever */
  long idle_s;
  const char *emoji; /* message: --emoji */
  long clear_after;  /* message: --clear-after SEC (0: none) */
  int clear;         /* message: --clear */
} opts_t;

static opts_t O;

static void die_usage(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static void die_usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("presencectl: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs(" (see presencectl --help)\n", stderr);
  va_end(ap);
  exit(EXIT_USAGE);
}

static void usage(FILE *out) {
  fprintf(out,
          "Usage: presencectl [OPTION]... COMMAND [ARG]...\n"
          "Query and operate a presenced through its backend HTTP API.\n\n"
          "Commands:\n"
          "  status USER...      status of users (online, idle, offline)\n"
          "  sessions USER       open sessions of a user\n"
          "  kick SESSION        close a session (the client sees close 4003)\n"
          "  channel NAME        members of a channel (status, sessions, data)\n"
          "                      and its count\n"
          "  watch               follow the event stream; resumes after a\n"
          "                      disconnect from the last event printed\n"
          "  stats               instance, uptime and counters (/metrics)\n"
          "  origins             backends reporting sessions (GET /v1/backend)\n"
          "                      and HTTP sessions: state, session counts\n"
          "  availability USER [auto|dnd|away|invisible]\n"
          "                      show (the truth: status and the setting) or\n"
          "                      set a user's availability\n"
          "  message USER [TEXT] show, set (--emoji E, --clear-after SEC) or\n"
          "                      clear (--clear) a user's status message\n\n"
          "Options:\n"
          "  --url URL           presenced base URL [env PRESENCECTL_URL]\n"
          "                      (default http://127.0.0.1:7070)\n"
          "  --api-key KEY       backend API key [env PRESENCECTL_API_KEY]\n"
          "  --api-key-file F    read the API key from file F (one line)\n"
          "  --json              machine-readable output (one JSON document,\n"
          "                      or one JSON object per line for watch)\n"
          "  --timeout SEC       per-request timeout; for watch, until the\n"
          "                      stream's answer (default 10)\n"
          "  --after ID          watch: start after event ID (a seq, or an\n"
          "                      event id of the stream; default: new\n"
          "                      events only)\n"
          "  --count N           watch: exit 0 after N events\n"
          "  --retries N         watch: give up (exit 3) after N failed\n"
          "                      reconnects in a row (default: never)\n"
          "  --emoji E           message: the emoji beside the text\n"
          "  --clear-after SEC   message: the server clears it after SEC\n"
          "  --clear             message: clear it\n"
          "  --idle-timeout SEC  watch: reconnect when nothing, not even a\n"
          "                      keepalive, arrived for SEC (default 60)\n"
          "  --help, --version\n\n"
          "Exit status: 0 ok, 1 refused or not found, 2 usage, 3 server\n"
          "unreachable, 4 API key refused.\n");
}

/* ---- HTTP ---------------------------------------------------------------- */

typedef struct body {
  char *data;
  size_t len;
} body_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  body_t *b = ud;
  size_t len = size * n;
  char *d = realloc(b->data, b->len + len + 1);
  if (!d) return 0;
  memcpy(d + b->len, p, len);
  b->len += len;
  d[b->len] = '\0';
  b->data = d;
  return len;
}

static struct curl_slist *auth_headers(struct curl_slist *h) {
  if (O.api_key) {
    size_t n = strlen(O.api_key) + 32;
    char *line = malloc(n);
    if (!line) return h;
    snprintf(line, n, "Authorization: Bearer %s", O.api_key);
    h = curl_slist_append(h, line);
    memset(line, 0, n);
    free(line);
  }
  return h;
}

/* O.url as error messages show it: credentials in it (user:password@,
 * which libcurl would send as Basic auth) hidden, up to the last '@' before
 * the query, as a password with an unescaped '/' ends the host early. */
static const char *url_shown(void) {
  static char out[512];
  const char *u = O.url;
  const char *h = strstr(u, "://");
  h = h ? h + 3 : u;
  const char *at = NULL;
  for (const char *p = h; *p && *p != '?' && *p != '#'; p++)
    if (*p == '@') at = p;
  if (at)
    snprintf(out, sizeof out, "%.*s***%s", (int)(h - u), u, at);
  else
    snprintf(out, sizeof out, "%s", u);
  return out;
}

static CURL *easy(const char *path) {
  CURL *c = curl_easy_init();
  if (!c) {
    fprintf(stderr, "presencectl: cannot initialise libcurl\n");
    exit(EXIT_FAIL);
  }
  size_t n = strlen(O.url) + strlen(path) + 1;
  char *u = malloc(n);
  if (!u) exit(EXIT_FAIL);
  /* Base URL with or without a trailing slash. */
  size_t ul = strlen(O.url);
  while (ul && O.url[ul - 1] == '/')
    ul--;
  snprintf(u, n, "%.*s%s", (int)ul, O.url, path);
  curl_easy_setopt(c, CURLOPT_URL, u);
  free(u);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, O.timeout_s);
  curl_easy_setopt(c, CURLOPT_USERAGENT,
                   "presencectl/" PRESENCE_VERSION_STRING);
  /* The API key must not follow a redirect to another host. */
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  return c;
}

/* The error object of an API answer: code and message, when there is one. */
static void api_error(const body_t *b, char *code, size_t ccap, char *msg,
                      size_t mcap) {
  *code = *msg = '\0';
  cJSON *j = b->data ? cJSON_Parse(b->data) : NULL;
  cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
  cJSON *jc = cJSON_GetObjectItemCaseSensitive(e, "code");
  cJSON *jm = cJSON_GetObjectItemCaseSensitive(e, "message");
  if (cJSON_IsString(jc)) snprintf(code, ccap, "%s", jc->valuestring);
  if (cJSON_IsString(jm)) snprintf(msg, mcap, "%s", jm->valuestring);
  cJSON_Delete(j);
}

/* Exit code for a failed request: transport errors are "unreachable",
 * 401/403 "auth", any other answer "failed". Prints why. */
static int report(CURLcode rc, long status, const body_t *b, const char *what) {
  if (rc != CURLE_OK) {
    fprintf(stderr, "presencectl: %s: cannot reach %s: %s\n", what,
            url_shown(), curl_easy_strerror(rc));
    return EXIT_UNREACH;
  }
  char code[64], msg[256];
  api_error(b, code, sizeof code, msg, sizeof msg);
  if (status == 401 || status == 403) {
    fprintf(stderr, "presencectl: %s: API key refused (HTTP %ld%s%s)%s\n", what,
            status, *msg ? ": " : "", msg,
            O.api_key ? ""
                      : "; give one with --api-key, --api-key-file or "
                        "PRESENCECTL_API_KEY");
    return EXIT_AUTH;
  }
  if (*code)
    fprintf(stderr, "presencectl: %s: %s (HTTP %ld, %s)\n", what, msg, status,
            code);
  else
    fprintf(stderr, "presencectl: %s: unexpected answer HTTP %ld\n", what,
            status);
  return EXIT_FAIL;
}

/* The end of the JSON number starting at p (presenced's output is valid
 * JSON: cJSON parsed it first). */
static const char *number_end(const char *p) {
  while (*p && strchr("0123456789+-.eE", *p))
    p++;
  return p;
}

/* Every number item under `item`, in document order, made a cJSON_Raw item
 * holding the number's text as it stands at *text onwards. cJSON keeps
 * numbers as doubles and prints them with 15 significant digits when that
 * reads back the same double: a 16-digit sequence number ending in 0 came
 * out as 1.79665755029203e+15, and a member's 19-digit id in its data
 * (protocol.md 4.2: kept as the client wrote it) lost its last digits. Raw
 * items are printed verbatim; num() reads them. cJSON builds its tree in
 * the order of the text, so the n-th number item is the n-th number token
 * outside strings. */
static void keep_numbers(cJSON *item, const char **text) {
  for (; item; item = item->next) {
    if (cJSON_IsNumber(item)) {
      const char *p = *text;
      int in_string = 0;
      for (; *p; p++) {
        if (in_string) {
          if (*p == '\\' && p[1])
            p++;
          else if (*p == '"')
            in_string = 0;
        } else if (*p == '"') {
          in_string = 1;
        } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
          break;
        }
      }
      if (!*p) return; /* cannot happen: the text holds every number */
      const char *e = number_end(p);
      char *t = malloc((size_t)(e - p) + 1);
      if (!t) exit(EXIT_FAIL);
      memcpy(t, p, (size_t)(e - p));
      t[e - p] = '\0';
      item->type = cJSON_Raw;
      item->valuestring = t;
      *text = e;
    } else if (item->child) {
      keep_numbers(item->child, text);
    }
  }
}

/* cJSON_Parse, with every number kept as presenced wrote it (keep_numbers). */
static cJSON *parse_kept(const char *text) {
  cJSON *j = text ? cJSON_Parse(text) : NULL;
  const char *p = text;
  if (j) keep_numbers(j, &p);
  return j;
}

/* One request; the parsed JSON answer on 2xx, else exits with the code of
 * the failure (except the statuses in ok_status, which return NULL with
 * *status set). */
static cJSON *request_ex(const char *method, const char *path,
                         const char *json, const char *what, long *status_out,
                         int json_answer, int answer_503) {
  CURL *c = easy(path);
  body_t b = {0};
  struct curl_slist *h = auth_headers(NULL);
  h = curl_slist_append(h, "Accept: application/json");
  if (json) {
    h = curl_slist_append(h, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
  }
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, O.timeout_s);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  if (status_out) *status_out = status;
  cJSON *j = NULL;
  if (rc == CURLE_OK &&
      (status / 100 == 2 || (answer_503 && status == 503 && b.data))) {
    if (!json_answer) {
      /* The caller wants the text: hand it over as a JSON string. */
      j = cJSON_CreateString(b.data ? b.data : "");
    } else if (!(j = parse_kept(b.data))) {
      fprintf(stderr, "presencectl: %s: the answer is not JSON\n", what);
      free(b.data);
      exit(EXIT_FAIL);
    }
    free(b.data);
    return j;
  }
  if (rc == CURLE_OK && status_out && status == 404) {
    free(b.data);
    return NULL;
  }
  int code = report(rc, status, &b, what);
  free(b.data);
  exit(code);
}

static cJSON *request(const char *method, const char *path, const char *json,
                      const char *what, long *status_out, int json_answer) {
  return request_ex(method, path, json, what, status_out, json_answer, 0);
}

/* "/prefix/<escaped id>/suffix" */
static char *id_path(const char *prefix, const char *id, const char *suffix) {
  char *e = curl_easy_escape(NULL, id, 0);
  if (!e) exit(EXIT_FAIL);
  size_t n = strlen(prefix) + strlen(e) + strlen(suffix) + 1;
  char *p = malloc(n);
  if (!p) exit(EXIT_FAIL);
  snprintf(p, n, "%s%s%s", prefix, e, suffix);
  curl_free(e);
  return p;
}

/* ---- Output helpers ------------------------------------------------------ */

/* A number of an answer: a raw item (parse_kept) or a number item. */
static int is_num(const cJSON *v) {
  return cJSON_IsNumber(v) || (cJSON_IsRaw(v) && v->valuestring);
}

static double numval(const cJSON *v) {
  if (cJSON_IsRaw(v) && v->valuestring) return strtod(v->valuestring, NULL);
  return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static double num(const cJSON *o, const char *k) {
  return numval(cJSON_GetObjectItemCaseSensitive(o, k));
}

static const char *str(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : "";
}

/* Milliseconds since the epoch as ISO 8601 local time with its offset,
 * 2026-12-08T06:31:02+01:00 (Z when local time is UTC), with_ms adding
 * .123 to the seconds. The offset is written: a time read in a terminal
 * on another host, a log pasted in a ticket or a machine across a DST
 * change otherwise reads as an hour off, or several. 0 on failure. */
static int iso_time(double ms, int with_ms, char *out, size_t cap) {
  /* A time from the server, converted only when it fits: a double out of
   * time_t's range (a hostile or broken answer, NaN) makes the cast
   * undefined; the caller then prints the number. Up to year 9999. */
  if (!(ms >= 0 && ms < 253402300800000.0)) return 0;
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  char z[8];
  if (!localtime_r(&t, &tm) || !strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm) ||
      !strftime(z, sizeof z, "%z", &tm) || strlen(z) != 5)
    return 0;
  size_t n = strlen(out);
  if (with_ms)
    n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, ".%03d",
                          (int)((long long)ms % 1000));
  if (!strcmp(z, "+0000"))
    n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "Z");
  else
    n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%.3s:%s", z, z + 3);
  return n < cap;
}

/* Milliseconds since the epoch as iso_time; 0 is "never". */
static const char *when(double ms, char *out, size_t cap) {
  if (ms <= 0) return "-";
  if (!iso_time(ms, 0, out, cap)) snprintf(out, cap, "%.0f", ms);
  return out;
}

static void print_json(const cJSON *j) {
  char *s = cJSON_PrintUnformatted(j);
  if (s) {
    puts(s);
    free(s);
  }
}

/* ---- Commands ------------------------------------------------------------ */

static int cmd_status(int argc, char **argv) {
  if (argc < 1) die_usage("status: give at least one user id");
  cJSON *all = cJSON_CreateArray();
  for (int i = 0; i < argc; i += MAX_IDS_PER_QUERY) {
    cJSON *q = cJSON_CreateObject();
    cJSON *ids = cJSON_AddArrayToObject(q, "user_ids");
    for (int k = i; k < argc && k < i + MAX_IDS_PER_QUERY; k++)
      cJSON_AddItemToArray(ids, cJSON_CreateString(argv[k]));
    char *body = cJSON_PrintUnformatted(q);
    cJSON_Delete(q);
    cJSON *r = request("POST", "/v1/users/query", body, "status", NULL, 1);
    free(body);
    cJSON *users = cJSON_GetObjectItemCaseSensitive(r, "users");
    cJSON *u;
    cJSON_ArrayForEach(u, users) {
      cJSON_AddItemToArray(all, cJSON_Duplicate(u, 1));
    }
    cJSON_Delete(r);
  }
  if (O.json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "users", all);
    print_json(o);
    cJSON_Delete(o);
    return EXIT_OK;
  }
  printf("%-24s %-8s %8s  %-25s  %s\n", "USER", "STATUS", "SESSIONS", "SINCE",
         "LAST SEEN");
  cJSON *u;
  cJSON_ArrayForEach(u, all) {
    char a[32], b[32];
    printf("%-24s %-8s %8.0f  %-25s  %s\n", str(u, "user_id"), str(u, "status"),
           num(u, "sessions"), when(num(u, "since"), a, 32),
           when(num(u, "last_seen"), b, 32));
  }
  cJSON_Delete(all);
  return EXIT_OK;
}

/* Every member of a channel, paged through GET /v1/channels/{name}/members. */
static int cmd_channel(int argc, char **argv) {
  if (argc != 1) die_usage("channel: give one channel name");
  cJSON *all = cJSON_CreateArray();
  cJSON *count = NULL; /* the last page's, as presenced wrote it */
  char *next = NULL;
  for (int page = 0; page < 100000; page++) {
    char *base = id_path("/v1/channels/", argv[0], "/members?limit=1000");
    char *path = base;
    if (next) {
      char *after = curl_easy_escape(NULL, next, 0);
      if (!after) exit(EXIT_FAIL);
      size_t n = strlen(base) + strlen(after) + 8;
      path = malloc(n);
      if (!path) exit(EXIT_FAIL);
      snprintf(path, n, "%s&after=%s", base, after);
      curl_free(after);
      free(base);
    }
    cJSON *r = request("GET", path, NULL, "channel", NULL, 1);
    free(path);
    free(next);
    next = NULL;
    cJSON_Delete(count);
    count = cJSON_DetachItemFromObjectCaseSensitive(r, "count");
    cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(r, "members")) {
      cJSON_AddItemToArray(all, cJSON_Duplicate(m, 1));
    }
    const char *nx = str(r, "next");
    if (*nx) next = strdup(nx);
    cJSON_Delete(r);
    if (!next) break;
  }
  free(next);
  if (O.json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "channel", argv[0]);
    cJSON_AddItemToObject(o, "count", count ? count : cJSON_CreateNumber(0));
    cJSON_AddItemToObject(o, "members", all);
    print_json(o);
    cJSON_Delete(o);
    return EXIT_OK;
  }
  double n = numval(count);
  cJSON_Delete(count);
  printf("channel %s: %.0f member%s\n", argv[0], n, n == 1 ? "" : "s");
  if (n > 0)
    printf("%-24s %-8s %8s  %-25s  %s\n", "USER", "STATUS", "SESSIONS",
           "SINCE", "DATA");
  cJSON *m;
  cJSON_ArrayForEach(m, all) {
    char a[32];
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(m, "data");
    char *ds = data && !cJSON_IsNull(data) ? cJSON_PrintUnformatted(data) : NULL;
    printf("%-24s %-8s %8d  %-25s  %s\n", str(m, "user_id"), str(m, "status"),
           cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(m, "sessions")),
           when(num(m, "since"), a, 32), ds ? ds : "-");
    free(ds);
  }
  cJSON_Delete(all);
  return EXIT_OK;
}

/* The message object of a user or an answer, as one line of text. */
static void print_message(const char *user, const cJSON *m) {
  if (!cJSON_IsObject(m)) {
    printf("%s: no status message\n", user);
    return;
  }
  char a[32];
  const cJSON *exp = cJSON_GetObjectItemCaseSensitive(m, "expires");
  const char *emoji = str(m, "emoji");
  printf("%s: %s%s%s", user, emoji, *emoji ? " " : "", str(m, "text"));
  if (is_num(exp)) printf("  (clears at %s)", when(numval(exp), a, sizeof a));
  putchar('\n');
}

/* availability USER [WORD]: the backend API's GET and PUT. */
static int cmd_availability(int argc, char **argv) {
  if (argc != 1 && argc != 2)
    die_usage("availability: give a user id, and a word to set");
  cJSON *r;
  if (argc == 2) {
    char *path = id_path("/v1/users/", argv[0], "/availability");
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "availability", argv[1]);
    char *body = cJSON_PrintUnformatted(q);
    cJSON_Delete(q);
    r = request("PUT", path, body, "availability", NULL, 1);
    free(body);
    free(path);
  } else {
    char *path = id_path("/v1/users/", argv[0], "");
    r = request("GET", path, NULL, "availability", NULL, 1);
    free(path);
  }
  if (O.json)
    print_json(r);
  else if (argc == 2)
    printf("%s: availability %s\n", argv[0], str(r, "availability"));
  else
    printf("%s: availability %s, status %s\n", argv[0],
           str(r, "availability"), str(r, "status"));
  cJSON_Delete(r);
  return EXIT_OK;
}

/* message USER [TEXT]: show, set or (--clear) clear. */
static int cmd_message(int argc, char **argv) {
  if (argc != 1 && argc != 2)
    die_usage("message: give a user id, and the text to set");
  if (argc == 2 && O.clear) die_usage("message: --clear takes no text");
  char *path = id_path("/v1/users/", argv[0], argc == 2 || O.clear || O.emoji
                                                  ? "/message"
                                                  : "");
  cJSON *r;
  if (O.clear) {
    r = request("DELETE", path, NULL, "message", NULL, 1);
  } else if (argc == 2 || O.emoji) {
    cJSON *q = cJSON_CreateObject();
    if (argc == 2) cJSON_AddStringToObject(q, "text", argv[1]);
    if (O.emoji) cJSON_AddStringToObject(q, "emoji", O.emoji);
    if (O.clear_after) cJSON_AddNumberToObject(q, "expires_in", (double)O.clear_after);
    char *body = cJSON_PrintUnformatted(q);
    cJSON_Delete(q);
    r = request("PUT", path, body, "message", NULL, 1);
    free(body);
  } else {
    r = request("GET", path, NULL, "message", NULL, 1);
  }
  free(path);
  if (O.json)
    print_json(r);
  else
    print_message(argv[0], cJSON_GetObjectItemCaseSensitive(r, "message"));
  cJSON_Delete(r);
  return EXIT_OK;
}

static int cmd_sessions(int argc, char **argv) {
  if (argc != 1) die_usage("sessions: give one user id");
  char *path = id_path("/v1/users/", argv[0], "/sessions");
  cJSON *r = request("GET", path, NULL, "sessions", NULL, 1);
  free(path);
  if (O.json) {
    print_json(r);
    cJSON_Delete(r);
    return EXIT_OK;
  }
  cJSON *list = cJSON_GetObjectItemCaseSensitive(r, "sessions");
  if (cJSON_GetArraySize(list) == 0) {
    printf("%s has no open session\n", argv[0]);
  } else {
    printf("%-36s %-7s  %-25s  %-25s  %-10s %s\n", "SESSION", "STATUS",
           "CONNECTED", "SINCE", "INSTANCE", "META");
    cJSON *s;
    cJSON_ArrayForEach(s, list) {
      char a[32], b[32];
      cJSON *meta = cJSON_GetObjectItemCaseSensitive(s, "meta");
      char *m =
          meta && !cJSON_IsNull(meta) ? cJSON_PrintUnformatted(meta) : NULL;
      printf("%-36s %-7s  %-25s  %-25s  %-10s %s\n", str(s, "session_id"),
             str(s, "status"), when(num(s, "connected"), a, 32),
             when(num(s, "since"), b, 32), str(s, "instance"), m ? m : "-");
      free(m);
    }
  }
  cJSON_Delete(r);
  return EXIT_OK;
}

/* The origins (backends reporting sessions) with their session counts. */
static int cmd_origins(int argc, char **argv) {
  (void)argv;
  if (argc != 0) die_usage("origins takes no argument");
  cJSON *r = request("GET", "/v1/origins", NULL, "origins", NULL, 1);
  if (O.json) {
    print_json(r);
    cJSON_Delete(r);
    return EXIT_OK;
  }
  cJSON *list = cJSON_GetObjectItemCaseSensitive(r, "origins");
  if (cJSON_GetArraySize(list) == 0) {
    printf("no origin\n");
  } else {
    printf("%-32s %-9s %10s  %-25s  %s\n", "ORIGIN", "STATE", "SESSIONS",
           "SINCE", "DETACHED SINCE");
    cJSON *o;
    uint64_t total = 0;
    cJSON_ArrayForEach(o, list) {
      char a[32], b[32];
      double n = num(o, "sessions");
      total += (uint64_t)n;
      printf("%-32s %-9s %10.0f  %-25s  %s\n", str(o, "origin"),
             str(o, "state"), n, when(num(o, "since"), a, 32),
             num(o, "detached_since") > 0 ? when(num(o, "detached_since"), b, 32)
                                          : "-");
    }
    printf("%d origins, %llu sessions\n", cJSON_GetArraySize(list),
           (unsigned long long)total);
  }
  cJSON_Delete(r);
  return EXIT_OK;
}

static int cmd_kick(int argc, char **argv) {
  if (argc != 1) die_usage("kick: give one session id");
  char *path = id_path("/v1/sessions/", argv[0], "");
  long status = 0;
  cJSON *r = request("DELETE", path, NULL, "kick", &status, 1);
  free(path);
  if (!r) {
    if (O.json) {
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "session_id", argv[0]);
      cJSON_AddBoolToObject(o, "kicked", 0);
      cJSON_AddStringToObject(o, "error", "no_session");
      print_json(o);
      cJSON_Delete(o);
    }
    fprintf(stderr, "presencectl: kick: no such session: %s\n", argv[0]);
    return EXIT_FAIL;
  }
  if (O.json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "session_id", argv[0]);
    cJSON_AddBoolToObject(o, "kicked", 1);
    print_json(o);
    cJSON_Delete(o);
  } else {
    printf("kicked %s\n", argv[0]);
  }
  cJSON_Delete(r);
  return EXIT_OK;
}

/* ---- stats: /healthz and /metrics --------------------------------------- */

/* Add one sample line "name{labels} value" of the text format to m: an
 * unlabelled metric as a number, a labelled one as an array of
 * {"labels":{...},"value":n}. */
/* Whether t is one JSON number (RFC 8259) and nothing else. */
static int is_json_number(const char *t) {
  if (*t == '-') t++;
  if (*t == '0')
    t++;
  else if (*t >= '1' && *t <= '9')
    while (*t >= '0' && *t <= '9')
      t++;
  else
    return 0;
  if (*t == '.') {
    if (!(*++t >= '0' && *t <= '9')) return 0;
    while (*t >= '0' && *t <= '9')
      t++;
  }
  if (*t == 'e' || *t == 'E') {
    if (*++t == '+' || *t == '-') t++;
    if (!(*t >= '0' && *t <= '9')) return 0;
    while (*t >= '0' && *t <= '9')
      t++;
  }
  return *t == '\0';
}

static void add_sample(cJSON *m, char *line) {
  char *sp = strrchr(line, ' ');
  if (!sp) return;
  *sp = '\0';
  char *end;
  double v = strtod(sp + 1, &end);
  if (end == sp + 1) return;
  /* The value as presenced wrote it when it is a JSON number (the event
   * sequence has 16 digits: a double printed again could come out as
   * 1.79665755029203e+15); NaN and +Inf are no JSON, cJSON makes them null. */
  cJSON *value = is_json_number(sp + 1) ? cJSON_CreateRaw(sp + 1)
                                        : cJSON_CreateNumber(v);
  char *brace = strchr(line, '{');
  if (!brace) {
    cJSON_AddItemToObject(m, line, value);
    return;
  }
  *brace = '\0';
  cJSON *arr = cJSON_GetObjectItemCaseSensitive(m, line);
  if (!arr) arr = cJSON_AddArrayToObject(m, line);
  if (!cJSON_IsArray(arr)) {
    cJSON_Delete(value);
    return;
  }
  cJSON *s = cJSON_CreateObject();
  cJSON *labels = cJSON_AddObjectToObject(s, "labels");
  /* name="value" pairs. A value may hold the text format's escapes (\\,
   * \" and \n: a webhook's name= is any text), read back here: taken as
   * ending at the first quote, a name with a quote in it lost its end, and
   * the labels after it (worker="k") became one label named by its rest. */
  char *p = brace + 1;
  while (*p && *p != '}') {
    char *eq = strchr(p, '=');
    if (!eq || eq[1] != '"') break;
    *eq = '\0';
    char *vs = eq + 2, *r = vs, *w = vs;
    while (*r && *r != '"') {
      if (*r == '\\' && r[1]) {
        r++;
        *w++ = *r == 'n' ? '\n' : *r;
        r++;
      } else {
        *w++ = *r++;
      }
    }
    if (!*r) break;
    *w = '\0';
    cJSON_AddStringToObject(labels, p, vs);
    p = r + 1;
    if (*p == ',') p++;
  }
  cJSON_AddItemToObject(s, "value", value);
  cJSON_AddItemToArray(arr, s);
}

/* A figure of the whole command: with --workers each worker's sample comes
 * labelled worker="k" (docs/operations.md), and the human output sums
 * them, as one process would count. */
static double metric(const cJSON *m, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, name);
  if (!cJSON_IsArray(v)) return num(m, name);
  double sum = 0;
  const cJSON *s;
  cJSON_ArrayForEach(s, v) sum += num(s, "value");
  return sum;
}

/* of > 0: a 0/1 gauge, summed over that many workers and shown as
 * "up/of" (a sum alone, "commands 2", read as a count of connections). */
static void print_labelled(const cJSON *m, const char *name, const char *label,
                           const char *title, int skip_zero, double of) {
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(m, name);
  printf("%-14s", title);
  int any = 0;
  const cJSON *s;
  cJSON_ArrayForEach(s, arr) {
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(s, "labels");
    const char *key = str(l, label);
    /* The workers' samples of one label value summed, shown once, where
     * the first of them stands. */
    int earlier = 0;
    for (const cJSON *e = arr->child; e != s && !earlier; e = e->next)
      earlier = !strcmp(str(cJSON_GetObjectItemCaseSensitive(e, "labels"),
                            label),
                        key);
    if (earlier) continue;
    double v = 0;
    for (const cJSON *e = s; e; e = e->next)
      if (!strcmp(str(cJSON_GetObjectItemCaseSensitive(e, "labels"), label),
                  key))
        v += num(e, "value");
    if (skip_zero && v == 0) continue;
    if (of > 0)
      printf("%s%s %.0f/%.0f", any ? ", " : "", key, v, of);
    else
      printf("%s%s %.0f", any ? ", " : "", key, v);
    any = 1;
  }
  printf("%s\n", any ? "" : "none");
}

static void stats_human(const cJSON *h, const cJSON *m, int ready);

static int cmd_stats(int argc, char **argv) {
  (void)argv;
  if (argc != 0) die_usage("stats takes no argument");
  /* /healthz answers 503 while the instance is not ready (Redis away,
   * fenced): when an operator most needs the figures, so its body is read
   * as on 200, the state shown, and the exit code says it. */
  long hstatus = 0;
  cJSON *h = request_ex("GET", "/healthz", NULL, "stats", &hstatus, 1, 1);
  cJSON *text = request("GET", "/metrics", NULL, "stats", NULL, 0);
  cJSON *m = cJSON_CreateObject();
  char *save = NULL;
  for (char *line = strtok_r(text->valuestring, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save))
    if (*line != '#') add_sample(m, line);
  cJSON_Delete(text);
  if (O.json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "instance", str(h, "instance"));
    cJSON_AddNumberToObject(o, "uptime_s", num(h, "uptime_s"));
    cJSON_AddStringToObject(o, "status", str(h, "status"));
    cJSON_AddStringToObject(o, "store", str(h, "store"));
    cJSON_AddBoolToObject(o, "store_ready", hstatus == 200);
    cJSON_AddItemToObject(o, "metrics", m);
    m = NULL; /* o owns it now */
    print_json(o);
    cJSON_Delete(o);
  } else {
    stats_human(h, m, hstatus == 200);
  }
  int rc = EXIT_OK;
  if (hstatus != 200) {
    fprintf(stderr,
            "presencectl: stats: the instance is not ready: %s (HTTP %ld on "
            "/healthz)\n",
            str(h, "status"), hstatus);
    rc = EXIT_FAIL;
  }
  cJSON_Delete(m);
  cJSON_Delete(h);
  return rc;
}

static void stats_human(const cJSON *h, const cJSON *m, int ready) {
  printf("%-14s%s\n", "instance", str(h, "instance"));
  printf("%-14s%.0f s\n", "uptime", num(h, "uptime_s"));
  const char *store = str(h, "store");
  printf("%-14s%s, %s\n", "store", *store ? store : "?",
         ready ? "ready" : "NOT READY");
  /* --workers: the figures below are every worker's, summed; the Redis
   * connections' state as how many workers have each up. */
  double workers = 0;
  if (cJSON_GetObjectItemCaseSensitive(m, "presenced_metrics_workers")) {
    workers = metric(m, "presenced_metrics_workers");
    printf("%-14s%.0f (figures summed over them)\n", "workers", workers);
  }
  if (cJSON_GetObjectItemCaseSensitive(m, "presenced_redis_up"))
    print_labelled(m, "presenced_redis_up", "conn", "redis up", 0, workers);
  printf("%-14s%.0f (websocket %.0f, event streams %.0f)\n", "connections",
         metric(m, "presenced_connections"),
         metric(m, "presenced_websocket_connections"),
         metric(m, "presenced_event_streams"));
  printf("%-14s%.0f\n", "sessions", metric(m, "presenced_sessions"));
  print_labelled(m, "presenced_users", "status", "users", 0, 0);
  print_labelled(m, "presenced_events_total", "type", "events", 1, 0);
  print_labelled(m, "presenced_errors_total", "code", "errors", 1, 0);
  printf("%-14s%.0f bytes\n", "write queue",
         metric(m, "presenced_write_queue_bytes"));
  if (cJSON_GetObjectItemCaseSensitive(m, "presenced_webhook_lag_events"))
    print_labelled(m, "presenced_webhook_lag_events", "endpoint", "webhook lag",
                   0, 0);
}

/* ---- watch: GET /v1/events, resumed ------------------------------------- */

typedef struct sse {
  char line[1 << 16]; /* one event's data line at most this long */
  size_t len;
  int overflow;
  /* Event ids are cursors: a sequence number, or with Redis in shards an
   * opaque string of up to 2047 characters (docs/protocol.md, "Cursors"). */
  char id[2048], event[64];
  char *data;
  size_t data_len;
  char last_id[2048]; /* the resume cursor: last event printed, or an
                        * id-only block's cursor after it */
  long printed;
  int done; /* --count reached */
  int got_bytes;
} sse_t;

static void print_event(sse_t *st) {
  cJSON *d = parse_kept(st->data ? st->data : "");
  if (O.json) {
    /* The event as presenced wrote it (one line of compact JSON), not
     * cJSON's tree printed again: that holds numbers as doubles and wrote
     * a sequence number of 16 digits ending in 0 as 1.79665755029203e+15,
     * and a member's data with its numbers changed. A gap notice gains its
     * type in front. */
    const char *raw = st->data ? st->data : "";
    if (d && !strcmp(st->event, "gap") &&
        !cJSON_GetObjectItemCaseSensitive(d, "type") && raw[0] == '{')
      printf("{\"type\":\"gap\"%s%s\n", raw[1] == '}' ? "" : ",", raw + 1);
    else
      printf("%s\n", raw);
  } else if (!strcmp(st->event, "gap")) {
    /* With Redis in shards the numbers are of one shard's log. */
    if (cJSON_GetObjectItemCaseSensitive(d, "shard"))
      printf("gap: events of shard %.0f after %.0f left the log; continuing "
             "from %.0f (re-read the state you depend on)\n",
             num(d, "shard"), num(d, "after"), num(d, "oldest"));
    else
      printf("gap: events after %.0f left the log; continuing from %.0f "
             "(re-read the state you depend on)\n",
             num(d, "after"), num(d, "oldest"));
  } else {
    char ts[48];
    double ms = num(d, "ts");
    if (!iso_time(ms, 1, ts, sizeof ts)) strcpy(ts, "-");
    /* The event's seq, not its id: with Redis in shards the id is a
     * cursor, too long to read. */
    char seq[24];
    const cJSON *sq = cJSON_GetObjectItemCaseSensitive(d, "seq");
    if (cJSON_IsRaw(sq) && sq->valuestring)
      snprintf(seq, sizeof seq, "%s", sq->valuestring);
    else
      snprintf(seq, sizeof seq, "%.0f", numval(sq));
    printf("%s #%-6s %-20s %s", ts, seq, st->event, str(d, "user_id"));
    /* session.disconnected carries no "to": a closed session is offline. */
    const char *to = *str(d, "to")                              ? str(d, "to")
                     : !strcmp(st->event, "session.disconnected") ? "offline"
                                                                  : "?";
    if (*str(d, "from") || *str(d, "to"))
      printf(" %s -> %s", *str(d, "from") ? str(d, "from") : "?", to);
    if (*str(d, "session_id")) printf(" session %s", str(d, "session_id"));
    if (*str(d, "channel")) {
      /* A channel event: which channel, its count, the member's data. */
      const cJSON *data = cJSON_GetObjectItemCaseSensitive(d, "data");
      char *ds = data && !cJSON_IsNull(data) ? cJSON_PrintUnformatted(data) : NULL;
      printf(" channel %s count %.0f", str(d, "channel"), num(d, "count"));
      if (ds) printf(" data %s", ds);
      free(ds);
    }
    printf(" (%s)\n", str(d, "reason"));
  }
  fflush(stdout);
  cJSON_Delete(d);
}

/* One complete line of the stream (without its end of line). */
static void sse_line(sse_t *st, const char *line, size_t len) {
  if (len == 0) { /* end of one event */
    if (st->data) {
      if (!*st->event) strcpy(st->event, "message");
      print_event(st);
      if (*st->id) {
        snprintf(st->last_id, sizeof st->last_id, "%s", st->id);
        if (strcmp(st->event, "gap") != 0) st->printed++;
      }
      if (O.count > 0 && st->printed >= O.count) st->done = 1;
    } else if (*st->id) {
      /* An id-only block: presenced moves a filtered stream's cursor past
       * the events it skipped (docs/protocol.md, "Cursors"). Nothing is
       * printed, but a reconnect resumes from there: from the last event
       * printed, the log may have evicted it since, and a gap follows. */
      snprintf(st->last_id, sizeof st->last_id, "%s", st->id);
    }
    free(st->data);
    st->data = NULL;
    st->data_len = 0;
    *st->id = *st->event = '\0';
    return;
  }
  if (line[0] == ':') return; /* keepalive comment */
  const char *colon = memchr(line, ':', len);
  size_t fl = colon ? (size_t)(colon - line) : len;
  const char *v = colon ? colon + 1 : line + len;
  if (colon && v < line + len && *v == ' ') v++;
  size_t vl = (size_t)(line + len - v);
  if (fl == 2 && !memcmp(line, "id", 2)) {
    snprintf(st->id, sizeof st->id, "%.*s", (int)vl, v);
  } else if (fl == 5 && !memcmp(line, "event", 5)) {
    snprintf(st->event, sizeof st->event, "%.*s", (int)vl, v);
  } else if (fl == 4 && !memcmp(line, "data", 4)) {
    char *d = realloc(st->data, st->data_len + vl + 2);
    if (!d) return;
    if (st->data_len) d[st->data_len++] = '\n';
    memcpy(d + st->data_len, v, vl);
    st->data_len += vl;
    d[st->data_len] = '\0';
    st->data = d;
  }
}

static size_t on_stream(char *p, size_t size, size_t n, void *ud) {
  sse_t *st = ud;
  size_t len = size * n;
  st->got_bytes = 1;
  for (size_t i = 0; i < len; i++) {
    char ch = p[i];
    if (ch == '\n') {
      size_t l = st->len;
      if (l && st->line[l - 1] == '\r') l--;
      if (!st->overflow) sse_line(st, st->line, l);
      st->len = 0;
      st->overflow = 0;
      if (st->done) return 0; /* stop the transfer: --count reached */
    } else if (st->len < sizeof st->line) {
      st->line[st->len++] = ch;
    } else {
      st->overflow = 1;
    }
  }
  return len;
}

/* The instance id from /healthz, or "" when it cannot be read. */
static void instance_of(char *out, size_t cap) {
  *out = '\0';
  CURL *c = easy("/healthz");
  body_t b = {0};
  curl_easy_setopt(c, CURLOPT_TIMEOUT, O.timeout_s);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  long status = 0;
  if (curl_easy_perform(c) == CURLE_OK &&
      curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
      status == 200) {
    cJSON *j = cJSON_Parse(b.data ? b.data : "");
    snprintf(out, cap, "%s", str(j, "instance"));
    cJSON_Delete(j);
  }
  curl_easy_cleanup(c);
  free(b.data);
}

/* SIGINT/SIGTERM end a watch normally (exit 0): it is how one stops it. */
static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

/* One attempt of watch. The stream has no overall timeout (it lasts) and
 * its idle bound (--idle-timeout, 60 s) is for a quiet stream; until the
 * response's first header line the attempt is bounded by --timeout, as
 * every other request is: a server that accepts and never answers (stopped,
 * a proxy with no upstream) is reported and retried after --timeout, not
 * after the idle bound. */
typedef struct {
  struct timespec t0;
  int answered;
  int timed_out;
} watch_try_t;

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  (void)p;
  ((watch_try_t *)ud)->answered = 1;
  return size * n;
}

/* libcurl calls this at least once a second during a transfer. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                       curl_off_t un) {
  watch_try_t *w = ud;
  (void)dt;
  (void)dn;
  (void)ut;
  (void)un;
  if (stop_requested) return 1;
  if (!w->answered) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (long)(now.tv_sec - w->t0.tv_sec) * 1000 +
              (now.tv_nsec - w->t0.tv_nsec) / 1000000;
    if (ms >= O.timeout_s * 1000) {
      w->timed_out = 1;
      return 1;
    }
  }
  return 0;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (!stop_requested && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int cmd_watch(int argc, char **argv) {
  (void)argv;
  if (argc != 0) die_usage("watch takes options only");
  static sse_t st;
  if (O.after) snprintf(st.last_id, sizeof st.last_id, "%s", O.after);
  char instance[64] = "", now_instance[64];
  long failures = 0, backoff_ms = 250;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  for (;;) {
    if (stop_requested) return EXIT_OK;
    /* A presenced with the embedded store starts a new log when it
     * restarts: sequence numbers begin again, so the old cursor means
     * nothing there. Resume from the start of the new log instead. */
    instance_of(now_instance, sizeof now_instance);
    if (*now_instance) {
      if (*instance && strcmp(instance, now_instance) != 0) {
        fprintf(stderr,
                "presencectl: watch: presenced restarted (instance %s, was "
                "%s): following its new event log from the start\n",
                now_instance, instance);
        strcpy(st.last_id, "0");
      }
      strcpy(instance, now_instance);
    }
    CURL *c = easy("/v1/events");
    struct curl_slist *h = auth_headers(NULL);
    h = curl_slist_append(h, "Accept: text/event-stream");
    char cursor[2100];
    if (*st.last_id) {
      snprintf(cursor, sizeof cursor, "Last-Event-ID: %s", st.last_id);
      h = curl_slist_append(h, cursor);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_stream);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &st);
    /* The server sends a keepalive every 15 s by default: a silent
     * connection is a dead one. */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, O.idle_s);
    watch_try_t wt = {.answered = 0};
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &wt);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &wt);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    /* Errors are read from the status: keep the body (the error JSON). */
    body_t eb = {0};
    st.len = 0;
    st.got_bytes = 0;
    clock_gettime(CLOCK_MONOTONIC, &wt.t0);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(st.data);
    st.data = NULL;
    st.data_len = 0;
    if (st.done || stop_requested) return EXIT_OK;
    /* An error's JSON body has no newline: it is still the stream's
     * unfinished line. Its message says what was wrong (a --after that is
     * no cursor of this log), where the status alone said only "HTTP 400". */
    if (status && status != 200 && st.len && !st.overflow)
      on_body(st.line, 1, st.len, &eb);
    if (status == 401 || status == 403) {
      int x = report(CURLE_OK, status, &eb, "watch");
      free(eb.data);
      return x;
    }
    if (status && status != 200) {
      char code[64], msg[256];
      api_error(&eb, code, sizeof code, msg, sizeof msg);
      free(eb.data);
      fprintf(stderr, "presencectl: watch: HTTP %ld from /v1/events%s%s\n",
              status, *msg ? ": " : "", msg);
      if (status / 100 == 4 && status != 429) return EXIT_FAIL;
    } else if (wt.timed_out) {
      fprintf(stderr,
              "presencectl: watch: no answer from /v1/events within "
              "--timeout %ld s\n",
              O.timeout_s);
    } else if (rc != CURLE_OK) {
      fprintf(stderr, "presencectl: watch: %s%s\n", curl_easy_strerror(rc),
              st.got_bytes ? " (reconnecting)" : "");
    } else {
      fprintf(stderr, "presencectl: watch: the stream ended (reconnecting)\n");
    }
    /* A stream that delivered anything was a success: start the backoff
     * again from its shortest delay. */
    if (status == 200 && st.got_bytes) {
      failures = 0;
      backoff_ms = 250;
    } else if (O.retries >= 0 && ++failures > O.retries) {
      fprintf(stderr, "presencectl: watch: giving up after %ld attempts\n",
              failures);
      return status ? EXIT_FAIL : EXIT_UNREACH;
    }
    /* Jitter spreads the reconnects of many watchers after a restart. */
    long delay = backoff_ms / 2 + rand() % (backoff_ms / 2 + 1);
    sleep_ms(delay);
    backoff_ms = backoff_ms * 2 > 30000 ? 30000 : backoff_ms * 2;
  }
}

/* ---- Command line -------------------------------------------------------- */

static char *read_key_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "presencectl: --api-key-file: cannot open '%s': %s\n", path,
            strerror(errno));
    exit(EXIT_USAGE);
  }
  char *buf = malloc(KEY_FILE_MAX + 1);
  size_t n = buf ? fread(buf, 1, KEY_FILE_MAX, f) : 0;
  fclose(f);
  if (!buf) exit(EXIT_FAIL);
  buf[n] = '\0';
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
    buf[--n] = '\0';
  if (!n || strchr(buf, '\n')) {
    fprintf(stderr,
            "presencectl: --api-key-file: '%s' must hold the key on "
            "one line\n",
            path);
    exit(EXIT_USAGE);
  }
  return buf;
}

static long parse_long(const char *flag, const char *v, long min) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || end == v || *end || n < min)
    die_usage("%s: expected an integer of at least %ld, got '%s'", flag, min,
              v);
  return n;
}

int main(int argc, char **argv) {
  O.url = getenv("PRESENCECTL_URL");
  if (!O.url || !*O.url) O.url = "http://127.0.0.1:7070";
  const char *env_key = getenv("PRESENCECTL_API_KEY");
  const char *key = env_key && *env_key ? env_key : NULL, *key_file = NULL;
  O.timeout_s = 10;
  O.retries = -1;
  O.idle_s = 60;
  /* Options may come before or after the command; "--" ends them (for a
   * user id that starts with "--"). */
  char **pos = calloc((size_t)argc + 1, sizeof *pos);
  if (!pos) return EXIT_FAIL;
  int npos = 0, only_pos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (only_pos || strncmp(a, "--", 2) != 0) {
      pos[npos++] = argv[i];
      continue;
    }
    if (!strcmp(a, "--")) {
      only_pos = 1;
      continue;
    }
    const char *eq = strchr(a, '=');
    size_t nl = eq ? (size_t)(eq - a) : strlen(a);
#define IS(name) (nl == strlen(name) && !strncmp(a, name, nl))
#define VALUE()                                                                \
  (eq ? eq + 1                                                                 \
      : (i + 1 < argc ? argv[++i] : (die_usage("%s: missing value", a), "")))
    if (IS("--help")) {
      usage(stdout);
      free(pos);
      return EXIT_OK;
    } else if (IS("--version")) {
      printf("presencectl %s\n", PRESENCE_VERSION_STRING);
      free(pos);
      return EXIT_OK;
    } else if (IS("--json")) {
      O.json = 1;
    } else if (IS("--url")) {
      O.url = VALUE();
    } else if (IS("--api-key")) {
      key = VALUE();
      key_file = NULL;
    } else if (IS("--api-key-file")) {
      key_file = VALUE();
      key = NULL;
    } else if (IS("--timeout")) {
      O.timeout_s = parse_long("--timeout", VALUE(), 1);
    } else if (IS("--after")) {
      /* A sequence number, or an event id of the stream (a cursor): the
       * server says whether it is one. */
      O.after = VALUE();
      if (!*O.after || strlen(O.after) >= 2048 ||
          strspn(O.after, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
                          "KLMNOPQRSTUVWXYZ-_") != strlen(O.after))
        die_usage("--after: a sequence number or an event id");
    } else if (IS("--count")) {
      O.count = parse_long("--count", VALUE(), 1);
    } else if (IS("--retries")) {
      O.retries = parse_long("--retries", VALUE(), 0);
    } else if (IS("--emoji")) {
      O.emoji = VALUE();
    } else if (IS("--clear-after")) {
      O.clear_after = parse_long("--clear-after", VALUE(), 1);
    } else if (IS("--clear")) {
      O.clear = 1;
    } else if (IS("--idle-timeout")) {
      O.idle_s = parse_long("--idle-timeout", VALUE(), 1);
    } else {
      die_usage("unknown option '%.*s'", (int)nl, a);
    }
#undef IS
#undef VALUE
  }
  if (npos == 0) die_usage("missing command");
  if (strncmp(O.url, "http://", 7) != 0 && strncmp(O.url, "https://", 8) != 0)
    die_usage("--url: expected http://HOST:PORT or https://..., got '%s'",
              url_shown());
  if (key_file)
    O.api_key = read_key_file(key_file);
  else if (key)
    O.api_key = strdup(key);
  const char *cmd = pos[0];
  int (*fn)(int, char **) = NULL;
  if (!strcmp(cmd, "status"))
    fn = cmd_status;
  else if (!strcmp(cmd, "channel"))
    fn = cmd_channel;
  else if (!strcmp(cmd, "sessions"))
    fn = cmd_sessions;
  else if (!strcmp(cmd, "kick"))
    fn = cmd_kick;
  else if (!strcmp(cmd, "watch"))
    fn = cmd_watch;
  else if (!strcmp(cmd, "stats"))
    fn = cmd_stats;
  else if (!strcmp(cmd, "origins"))
    fn = cmd_origins;

  else if (!strcmp(cmd, "availability"))
    fn = cmd_availability;
  else if (!strcmp(cmd, "message"))
    fn = cmd_message;
  else
    die_usage("unknown command '%s'", cmd);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
    fprintf(stderr, "presencectl: cannot initialise libcurl\n");
    return EXIT_FAIL;
  }
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  int rc = fn(npos - 1, pos + 1);
  free(pos);
  if (O.api_key) memset(O.api_key, 0, strlen(O.api_key));
  free(O.api_key);
  curl_global_cleanup();
  return rc;
}
