// legacy_backend: a backend heartbeat sender written the way the original C++ one is.
//
// The heartbeat is a packed struct of raw little-endian x86 memory, sent as is with
// send(2): no byte-order conversion, no library beyond libc and libstdc++.
//
// Usage:
//   legacy_backend [--first-now] SERVER_IP SERVER_PORT BACKEND_IP BACKEND_PORT MEM
//
//   SERVER_IP SERVER_PORT    the balancer to connect to (numeric IPv4)
//   BACKEND_IP BACKEND_PORT  where clients should connect, sent in every heartbeat
//                            (BACKEND_IP is text of 1 to 15 characters)
//   MEM                      memory in use, 0 to 255: either a number, sent in every
//                            heartbeat, or @PATH, a file holding a number that is read
//                            again before each heartbeat (replace it atomically, with a
//                            rename, so that a heartbeat never sees a half-written file)
//   --first-now              send the first heartbeat at once instead of 1 s after
//                            connecting
//
// Behaviour, as the original's:
//   - connects once; if that fails it exits 1 and never retries;
//   - sends a 23-byte heartbeat every 1000 ms, the first one 1 s after connecting
//     (or at once with --first-now); it never reads from the socket.
// Unlike the original:
//   - SIGPIPE is ignored and every send uses MSG_NOSIGNAL, so a send to a closed
//     balancer does not kill the process silently: it prints the error on stderr and
//     exits 2;
//   - SIGTERM and SIGINT make it close the socket and exit 0;
//   - an unreadable or invalid MEM file is an error on stderr and exit 2.
// On stdout it prints "connected" once, then "heartbeat N mem M" after each heartbeat
// has been handed to the kernel, so that a test can follow it.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the legacy wire format is the raw memory of a little-endian machine");

#pragma pack(push, 1)
struct Header {
    uint16_t len;
    uint16_t cmd;
};

struct Monitor {
    Header head;
    uint8_t mem;
    char ip[16];
    uint16_t port;
};
#pragma pack(pop)

static_assert(sizeof(Monitor) == 23, "a heartbeat is 23 bytes on the wire");

enum Command : uint16_t { kMonitor = 0, kError = 1, kLogin = 2, kRegister = 3, kDestroy = 4 };

static volatile sig_atomic_t g_stop = 0;

static void on_stop_signal(int) { g_stop = 1; }

[[noreturn]] static void usage(const char* why) {
    std::fprintf(stderr,
                 "legacy_backend: %s\n"
                 "usage: legacy_backend [--first-now] SERVER_IP SERVER_PORT BACKEND_IP BACKEND_PORT "
                 "MEM|@FILE\n",
                 why);
    std::exit(64);
}

// A whole decimal number in [low, high], or false.
static bool parse_number(const char* text, long low, long high, long* out) {
    errno = 0;
    char* end = nullptr;
    long value = std::strtol(text, &end, 10);
    if (errno != 0 || end == text || value < low || value > high) return false;
    while (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t') ++end;
    if (*end != '\0') return false;
    *out = value;
    return true;
}

// The memory figure for the next heartbeat: the fixed one, or the file's content.
static bool read_mem(const std::string& spec, uint8_t* mem) {
    long value = 0;
    if (spec.empty() || spec[0] != '@') {
        if (!parse_number(spec.c_str(), 0, 255, &value)) return false;
        *mem = static_cast<uint8_t>(value);
        return true;
    }
    const char* path = spec.c_str() + 1;
    std::FILE* file = std::fopen(path, "r");
    if (file == nullptr) {
        std::fprintf(stderr, "legacy_backend: cannot open %s: %s\n", path, std::strerror(errno));
        return false;
    }
    char line[32] = {0};
    size_t got = std::fread(line, 1, sizeof line - 1, file);
    std::fclose(file);
    line[got] = '\0';
    if (!parse_number(line, 0, 255, &value)) {
        std::fprintf(stderr, "legacy_backend: %s does not hold a number from 0 to 255\n", path);
        return false;
    }
    *mem = static_cast<uint8_t>(value);
    return true;
}

// Sends the whole buffer; false (errno set) if the peer is gone.
static bool send_all(int fd, const void* data, size_t size) {
    const char* bytes = static_cast<const char*>(data);
    while (size > 0) {
        ssize_t sent = send(fd, bytes, size, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR && !g_stop) continue;
            return false;
        }
        bytes += sent;
        size -= static_cast<size_t>(sent);
    }
    return true;
}

// Sleeps until `deadline` on the monotonic clock; false when a stop signal came.
static bool sleep_until(const timespec& deadline) {
    while (!g_stop) {
        int error = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, nullptr);
        if (error == 0) return !g_stop;
        if (error != EINTR) return false;
    }
    return false;
}

static void add_ms(timespec* at, long ms) {
    at->tv_sec += ms / 1000;
    at->tv_nsec += (ms % 1000) * 1000000L;
    if (at->tv_nsec >= 1000000000L) {
        at->tv_sec += 1;
        at->tv_nsec -= 1000000000L;
    }
}

int main(int argc, char** argv) {
    bool first_now = false;
    int arg = 1;
    if (arg < argc && std::strcmp(argv[arg], "--first-now") == 0) {
        first_now = true;
        ++arg;
    }
    if (argc - arg != 5) usage("expected five arguments");
    const char* server_ip = argv[arg];
    long server_port = 0;
    long backend_port = 0;
    if (!parse_number(argv[arg + 1], 1, 65535, &server_port)) usage("SERVER_PORT must be 1 to 65535");
    const char* backend_ip = argv[arg + 2];
    if (std::strlen(backend_ip) == 0 || std::strlen(backend_ip) > 15) usage("BACKEND_IP must be 1 to 15 characters");
    if (!parse_number(argv[arg + 3], 1, 65535, &backend_port)) usage("BACKEND_PORT must be 1 to 65535");
    const std::string mem_spec = argv[arg + 4];
    uint8_t mem = 0;
    if (!read_mem(mem_spec, &mem)) usage("MEM must be 0 to 255 or @FILE holding such a number");

    std::signal(SIGPIPE, SIG_IGN);
    struct sigaction stop = {};
    stop.sa_handler = on_stop_signal;
    sigemptyset(&stop.sa_mask);
    sigaction(SIGTERM, &stop, nullptr);
    sigaction(SIGINT, &stop, nullptr);

    sockaddr_in server = {};
    server.sin_family = AF_INET;
    server.sin_port = htons(static_cast<uint16_t>(server_port));
    if (inet_pton(AF_INET, server_ip, &server.sin_addr) != 1) usage("SERVER_IP must be a numeric IPv4 address");

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        std::fprintf(stderr, "legacy_backend: socket: %s\n", std::strerror(errno));
        return 1;
    }
    // Once, like the original: no retry.
    if (connect(fd, reinterpret_cast<sockaddr*>(&server), sizeof server) != 0) {
        std::fprintf(stderr, "legacy_backend: connect to %s:%ld: %s\n", server_ip, server_port, std::strerror(errno));
        return 1;
    }
    std::printf("connected\n");
    std::fflush(stdout);

    Monitor beat;
    std::memset(&beat, 0, sizeof beat);
    beat.head.len = sizeof(Monitor);
    beat.head.cmd = kMonitor;
    std::memcpy(beat.ip, backend_ip, std::strlen(backend_ip));
    beat.port = static_cast<uint16_t>(backend_port);

    timespec next = {};
    clock_gettime(CLOCK_MONOTONIC, &next);
    if (!first_now) add_ms(&next, 1000);
    for (unsigned long count = 1;; ++count) {
        if (!sleep_until(next)) break;
        if (!read_mem(mem_spec, &mem)) return 2;
        beat.mem = mem;
        if (!send_all(fd, &beat, sizeof beat)) {
            if (g_stop) break;
            std::fprintf(stderr, "legacy_backend: heartbeat %lu not sent: %s\n", count, std::strerror(errno));
            return 2;
        }
        std::printf("heartbeat %lu mem %u\n", count, static_cast<unsigned>(mem));
        std::fflush(stdout);
        add_ms(&next, 1000);
    }
    close(fd);
    std::printf("stopped\n");
    std::fflush(stdout);
    return 0;
}
