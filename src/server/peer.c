/* SPDX-License-Identifier: MIT */
/*
 * Per-client limits: open connections per peer address.
 *
 * One address opening thousands of idle sockets would otherwise use up
 * --max-connections (and the file limit) for everyone. Each accepted TCP
 * connection is counted under its peer's address; past
 * --max-connections-per-ip the connection is refused. Addresses in
 * --connection-limit-exempt (by default loopback, where a local proxy
 * connects from) are not counted: behind a proxy on another machine every
 * client shares the proxy's address, so that proxy is listed there and the
 * per-address limit is the proxy's job (docs/security.md).
 */
#include "server/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

/* Whether address text a (of family af) is exempt per the setting. */
static int exempt(const srv_t *s, const char *a) {
  const char *list = s->cfg.connection_limit_exempt;
  if (!list) list = "loopback";
  for (const char *p = list; *p;) {
    while (*p == ' ' || *p == ',')
      p++;
    const char *e = p;
    while (*e && *e != ',' && *e != ' ')
      e++;
    size_t n = (size_t)(e - p);
    if (n == 8 && !memcmp(p, "loopback", 8) && config_host_is_loopback(a))
      return 1;
    if (n && n == strlen(a) && !memcmp(p, a, n)) return 1;
    p = e;
  }
  return 0;
}

/* The peer's address as text; an IPv4-mapped IPv6 address as IPv4, so one
 * client is one key whichever way the listener sees it. */
/* The peer's address in binary (4 or 16 bytes; a v4-mapped v6 address as
 * v4), its length, or 0. */
static size_t peer_bin(conn_t *c, uint8_t out[16]) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
    memcpy(out, &a->sin_addr, 4);
    return 4;
  }
  if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      memcpy(out, &a->sin6_addr.s6_addr[12], 4);
      return 4;
    }
    memcpy(out, &a->sin6_addr, 16);
    return 16;
  }
  return 0;
}

/* The text of a binary address (the per_ip key and the exempt list's
 * form): 0, or -1. */
static int peer_text(const uint8_t *ip, size_t n, char *out, size_t cap) {
  return inet_ntop(n == 4 ? AF_INET : AF_INET6, ip, out, (socklen_t)cap) ? 0
                                                                        : -1;
}

int peer_admit(srv_t *s, conn_t *c) {
  uint32_t limit = s->cfg.max_connections_per_ip;
  c->peer_len = 0;
  if (limit == 0) return 0;
  uint8_t ip[16];
  char a[INET6_ADDRSTRLEN];
  size_t n = peer_bin(c, ip);
  if (!n || peer_text(ip, n, a, sizeof a) != 0 || exempt(s, a)) return 0;
  uintptr_t k = (uintptr_t)map_get(&s->per_ip, a);
  if (k >= limit) return -1;
  if (map_put(&s->per_ip, a, (void *)(k + 1)) != 0)
    return 0; /* out of memory: not counted rather than refused */
  memcpy(c->peer_ip, ip, n);
  c->peer_len = (uint8_t)n;
  return 0;
}

void peer_release(srv_t *s, conn_t *c) {
  char a[INET6_ADDRSTRLEN];
  if (!c->peer_len) return;
  size_t len = c->peer_len;
  c->peer_len = 0;
  if (peer_text(c->peer_ip, len, a, sizeof a) != 0) return;
  uintptr_t n = (uintptr_t)map_get(&s->per_ip, a);
  if (n <= 1)
    map_del(&s->per_ip, a);
  else
    map_put(&s->per_ip, a, (void *)(n - 1));
}
