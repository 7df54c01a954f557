// A backend that embeds the loadwise agent and admits only clients with a valid ticket:
// the C++ version of examples/c/backend.c, with loadwise.hpp.
//
//   backend SERVERS SERVICE SECRET_FILE [HOST]
//
// Listens on HOST (127.0.0.1 by default) at a port the system picks, and registers
// HOST:PORT with the dispatchers SERVERS for SERVICE, proving the secret in
// SECRET_FILE. Prints "listening HOST:PORT backend ID", then answers each client's one
// line, a ticket, with "welcome" or "refused: WHY". SIGTERM or SIGINT stops it.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <string>

#include "loadwise.hpp"

namespace {

// The longest line a client may send: a ticket is LW_TICKET_TEXT_LEN hex digits.
constexpr std::size_t kMaxLine = 256;

volatile std::sig_atomic_t stopping = 0;

extern "C" void on_signal(int) { stopping = 1; }

// A socket file descriptor, closed when it goes out of scope.
class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Listens on host at a port the system picks; returns the port, throws on failure.
std::uint16_t listen_on(const Socket& socket, const std::string& host) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  socklen_t len = sizeof addr;
  if (socket.fd() < 0 || inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1 ||
      bind(socket.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(socket.fd(), 16) != 0 ||
      getsockname(socket.fd(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("cannot listen on " + host + ": " + std::strerror(errno));
  }
  return ntohs(addr.sin_port);
}

// One line from the client, without its end; empty when none came.
std::string read_line(int fd) {
  std::string line;
  char byte = 0;
  while (line.size() < kMaxLine && read(fd, &byte, 1) == 1 && byte != '\n') line.push_back(byte);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  return line;
}

void serve(int client, const loadwise::Secret& secret, const std::string& service, std::uint64_t id) {
  timeval timeout{2, 0};
  setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string ticket = read_line(client);
  loadwise::TicketCheck check = loadwise::check_ticket(secret, ticket, id, service);
  std::string reply = check ? "welcome\n" : "refused: " + check.message + "\n";
  if (write(client, reply.data(), reply.size()) != static_cast<ssize_t>(reply.size())) std::perror("write");
  if (check) {
    std::cout << "admitted a client (ticket valid until " << check.claims.expires_unix << ")" << std::endl;
  } else {
    std::cout << "refused a client: " << check.message << std::endl;
  }
}

int run(const std::string& servers, const std::string& service, const std::string& secret_file,
        const std::string& host) {
  // Before anything starts, so that a stop request is never lost.
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  loadwise::Secret secret = loadwise::Secret::from_file(secret_file);
  Socket listener(socket(AF_INET, SOCK_STREAM, 0));
  std::string advertise = host + ":" + std::to_string(listen_on(listener, host));

  loadwise::AgentOptions options;
  options.servers = servers;
  options.advertise = advertise;
  options.service = service;
  options.secret = secret;
  loadwise::Agent agent(options);
  std::cout << "listening " << advertise << " backend " << agent.backend_id() << std::endl;

  std::uint32_t served = 0;
  while (!stopping) {
    pollfd ready{listener.fd(), POLLIN, 0};
    if (poll(&ready, 1, 200) <= 0) continue;  // a timeout, or a signal: look at the flag
    Socket client(accept(listener.fd(), nullptr, nullptr));
    if (client.fd() < 0) continue;
    serve(client.fd(), secret, service, agent.backend_id());
    // The agent reports the figures the backend gives it with every heartbeat.
    agent.set_connections(++served);
  }
  agent.stop();
  std::cout << "stopped" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::cerr << "usage: " << argv[0] << " SERVERS SERVICE SECRET_FILE [HOST]\n";
    return 64;
  }
  if (!loadwise::abi_matches()) {
    std::cerr << "libloadwise " << loadwise::version() << " has another ABI than this program was built for\n";
    return 1;
  }
  try {
    return run(argv[1], argv[2], argv[3], argc == 5 ? argv[4] : "127.0.0.1");
  } catch (const loadwise::Error& error) {
    std::cerr << "loadwise error " << error.code() << ": " << error.what() << "\n";
  } catch (const std::exception& error) {
    std::cerr << error.what() << "\n";
  }
  return 1;
}
