// A client that asks the dispatchers for a backend and connects to it with its ticket:
// the C++ version of examples/c/client.c, with loadwise.hpp.
//
//   client SERVERS SERVICE
//
// Exits 0 when welcomed, 1 when refused, 2 when no backend was picked, 3 when the
// backend could not be reached.

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <string>

#include "loadwise.hpp"

namespace {

// Connects to HOST:PORT ([IPv6]:PORT too); -1 on failure.
int connect_to(const std::string& addr) {
  std::size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return -1;
  std::string host = addr.substr(0, colon);
  std::string port = addr.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return -1;
  int fd = -1;
  for (addrinfo* at = found; at != nullptr && fd < 0; at = at->ai_next) {
    fd = socket(at->ai_family, at->ai_socktype, at->ai_protocol);
    if (fd >= 0 && connect(fd, at->ai_addr, at->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  return fd;
}

// Sends the ticket and reads the backend's one-line answer; empty when none came.
std::string present(int fd, const std::string& ticket) {
  timeval timeout{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string request = ticket + "\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) return "";
  std::string reply;
  char buffer[256];
  ssize_t got = 0;
  while (reply.find('\n') == std::string::npos && reply.size() < 4096 &&
         (got = read(fd, buffer, sizeof buffer)) > 0) {
    reply.append(buffer, static_cast<std::size_t>(got));
  }
  return reply;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " SERVERS SERVICE\n";
    return 64;
  }
  loadwise::Picked picked;
  try {
    picked = loadwise::pick(argv[1], std::string(argv[2]));
  } catch (const loadwise::Error& error) {
    std::cerr << "no backend: " << error.what() << "\n";
    return 2;
  }
  std::cout << "picked " << picked.addr << " backend " << picked.backend_id << " via " << picked.dispatcher
            << std::endl;
  int fd = connect_to(picked.addr);
  if (fd < 0) {
    std::cerr << "cannot connect to " << picked.addr << "\n";
    return 3;
  }
  std::string reply = present(fd, picked.ticket);
  close(fd);
  if (reply.empty()) {
    std::cerr << "the backend did not answer\n";
    return 3;
  }
  std::cout << reply;
  return reply.rfind("welcome", 0) == 0 ? 0 : 1;
}
