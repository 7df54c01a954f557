/*
 * A backend that embeds the loadwise agent and admits only clients with a valid ticket.
 *
 *   backend SERVERS SERVICE SECRET_FILE [HOST]
 *
 * Listens on HOST (127.0.0.1 by default) at a port the system picks, and registers
 * HOST:PORT with the dispatchers SERVERS (comma-separated HOST:PORT) for SERVICE,
 * proving the secret in SECRET_FILE. Prints "listening HOST:PORT backend ID", then
 * answers each client's one line, a ticket, with "welcome" or "refused: WHY".
 * SIGTERM or SIGINT stops it cleanly: the agent leaves the dispatchers at once.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "loadwise.h"

/* The longest line a client may send: a ticket is LW_TICKET_TEXT_LEN hex digits. */
#define MAX_LINE 256

static volatile sig_atomic_t stopping = 0;

static void on_signal(int signal) {
  (void)signal;
  stopping = 1;
}

/* A socket listening on host at a port the system picks, or -1. */
static int listen_on(const char *host, uint16_t *port) {
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) return -1;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 16) != 0 ||
      getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

/* Reads one line (without its end) into line, at most MAX_LINE - 1 bytes. */
static int read_line(int fd, char *line) {
  size_t used = 0;
  while (used < MAX_LINE - 1) {
    ssize_t got = read(fd, line + used, 1);
    if (got <= 0) return -1;
    if (line[used] == '\n') break;
    used++;
  }
  while (used > 0 && (line[used - 1] == '\r' || line[used - 1] == '\n')) used--;
  line[used] = '\0';
  return 0;
}

static void send_text(int fd, const char *text) {
  size_t len = strlen(text);
  if (write(fd, text, len) != (ssize_t)len) perror("write");
}

/* One client: its ticket is checked against the secret, this backend's id and service. */
static void serve(int client, const uint8_t *secret, size_t secret_len, const char *service, uint64_t id) {
  struct timeval timeout = {2, 0};
  setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  char line[MAX_LINE];
  if (read_line(client, line) != 0) return;
  lw_ticket_claims claims;
  lw_ticket_claims_init(&claims);
  if (lw_ticket_verify(secret, secret_len, line, service, id, &claims) == LW_OK) {
    send_text(client, "welcome\n");
    printf("admitted a client (ticket valid until %" PRIu64 ")\n", claims.expires_unix);
  } else {
    char reply[MAX_LINE + 64];
    snprintf(reply, sizeof reply, "refused: %s\n", lw_last_error_message());
    send_text(client, reply);
    printf("refused a client: %s\n", lw_last_error_message());
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 4 || argc > 5) {
    fprintf(stderr, "usage: %s SERVERS SERVICE SECRET_FILE [HOST]\n", argv[0]);
    return 64;
  }
  const char *servers = argv[1], *service = argv[2], *secret_file = argv[3];
  const char *host = argc == 5 ? argv[4] : "127.0.0.1";
  if (lw_abi_version() != LW_ABI_VERSION) {
    fprintf(stderr, "libloadwise has ABI %u, this program was built for %u\n", lw_abi_version(), LW_ABI_VERSION);
    return 1;
  }

  /* Before anything starts, so that a stop request is never lost. */
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = on_signal;
  sigaction(SIGTERM, &action, NULL);
  sigaction(SIGINT, &action, NULL);

  uint8_t secret[1024];
  size_t secret_len = 0;
  if (lw_secret_read_file(secret_file, secret, sizeof secret, &secret_len) != LW_OK) {
    fprintf(stderr, "secret: %s\n", lw_last_error_message());
    return 1;
  }
  uint16_t port = 0;
  int listener = listen_on(host, &port);
  if (listener < 0) {
    perror("listen");
    return 1;
  }
  char advertise[LW_ADDR_LEN];
  snprintf(advertise, sizeof advertise, "%s:%u", host, (unsigned)port);

  lw_agent_options options;
  lw_agent_options_init(&options);
  options.servers = servers;
  options.advertise = advertise;
  options.service = service;
  options.secret = secret;
  options.secret_len = secret_len;
  lw_agent *agent = NULL;
  if (lw_agent_start(&options, &agent) != LW_OK) {
    fprintf(stderr, "agent: %s\n", lw_last_error_message());
    close(listener);
    return 1;
  }
  uint64_t id = lw_agent_backend_id(agent);
  printf("listening %s backend %" PRIu64 "\n", advertise, id);
  fflush(stdout);

  unsigned served = 0;
  while (!stopping) {
    struct pollfd ready = {listener, POLLIN, 0};
    if (poll(&ready, 1, 200) <= 0) continue; /* a timeout, or a signal: look at the flag */
    int client = accept(listener, NULL, NULL);
    if (client < 0) continue;
    serve(client, secret, secret_len, service, id);
    close(client);
    /* The agent reports the figures the backend gives it with every heartbeat. */
    lw_agent_set_connections(agent, ++served);
  }

  int stopped = lw_agent_stop(agent);
  if (stopped != LW_OK) fprintf(stderr, "stop: %s\n", lw_last_error_message());
  lw_agent_free(agent);
  close(listener);
  printf("stopped\n");
  return stopped == LW_OK ? 0 : 1;
}
