/*
 * A client that asks the dispatchers for a backend and connects to it with its ticket.
 *
 *   client SERVERS SERVICE
 *
 * Picks a backend of SERVICE from the dispatchers SERVERS (comma-separated HOST:PORT,
 * tried in turn), connects to it, sends the admission ticket and prints the answer.
 * Exits 0 when welcomed, 1 when refused, 2 when no backend was picked, 3 when the
 * backend could not be reached.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "loadwise.h"

/* Connects to HOST:PORT ([IPv6]:PORT too); -1 on failure. */
static int connect_to(const char *addr) {
  char host[LW_ADDR_LEN];
  const char *colon = strrchr(addr, ':');
  if (colon == NULL || (size_t)(colon - addr) >= sizeof host) return -1;
  size_t host_len = (size_t)(colon - addr);
  memcpy(host, addr, host_len);
  host[host_len] = '\0';
  char *name = host;
  if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
    host[host_len - 1] = '\0';
    name = host + 1;
  }
  struct addrinfo hints, *found = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(name, colon + 1, &hints, &found) != 0) return -1;
  int fd = -1;
  for (struct addrinfo *at = found; at != NULL && fd < 0; at = at->ai_next) {
    fd = socket(at->ai_family, at->ai_socktype, at->ai_protocol);
    if (fd >= 0 && connect(fd, at->ai_addr, at->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  return fd;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s SERVERS SERVICE\n", argv[0]);
    return 64;
  }
  lw_picked *picked = NULL;
  if (lw_pick_ex(argv[1], argv[2], 0, &picked) != LW_OK) {
    fprintf(stderr, "no backend: %s\n", lw_last_error_message());
    return 2;
  }
  printf("picked %s backend %" PRIu64 " via %s\n", lw_picked_addr(picked), lw_picked_backend_id(picked),
         lw_picked_dispatcher(picked));

  int fd = connect_to(lw_picked_addr(picked));
  if (fd < 0) {
    fprintf(stderr, "cannot connect to %s\n", lw_picked_addr(picked));
    lw_picked_free(picked);
    return 3;
  }
  char request[LW_TICKET_TEXT_LEN + 2];
  snprintf(request, sizeof request, "%s\n", lw_picked_ticket(picked));
  lw_picked_free(picked);

  struct timeval timeout = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  char reply[512];
  size_t used = 0;
  if (write(fd, request, strlen(request)) == (ssize_t)strlen(request)) {
    /* Up to the end of the line or of the connection: the backend closes after it. */
    ssize_t got;
    while (used < sizeof reply - 1 && (got = read(fd, reply + used, sizeof reply - 1 - used)) > 0) {
      used += (size_t)got;
      if (memchr(reply, '\n', used) != NULL) break;
    }
  }
  close(fd);
  if (used == 0) {
    fprintf(stderr, "the backend did not answer\n");
    return 3;
  }
  reply[used] = '\0';
  printf("%s", reply);
  return strncmp(reply, "welcome", 7) == 0 ? 0 : 1;
}
