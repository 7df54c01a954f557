// legacy_client: a client written the way the original C++ one is.
//
// The login and its reply are packed structs of raw little-endian x86 memory, sent
// and read as is: no byte-order conversion, no library beyond libc and libstdc++.
//
// Usage:
//   legacy_client [--junk CMD]... [--junk-body N] [--timeout-ms MS] SERVER_IP SERVER_PORT
//
//   --junk CMD      before the login, send a frame with this cmd (decimal or 0x hex,
//                   0 to 65535) and a body of N bytes; may be repeated
//   --junk-body N   the body size of every junk frame, 0 to 64 (default 6)
//   --timeout-ms MS how long a read may wait (SO_RCVTIMEO, default 5000)
//
// It connects, sends the junk frames if any, then one 12-byte login stamped with
// time(NULL), and reads exactly 22 bytes, however they are split. On a success
// reply (cmd 2) it prints "IP:PORT"; on the exact error reply it prints "error";
// both exit 0. When junk was sent, it then checks that nothing more arrives, and
// that the connection stays open, for 200 ms. Anything else is a message on
// stderr and a non-zero exit:
//   1 socket or connect failure, 2 send failure, 3 the connection closed early,
//   4 read timeout, 5 a malformed reply, 6 bytes or a close after the reply,
//   64 bad usage.
// SIGPIPE is ignored and sends use MSG_NOSIGNAL, so a closed peer is reported,
// never a silent death.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the legacy wire format is the raw memory of a little-endian machine");

#pragma pack(push, 1)
struct Header {
    uint16_t len;
    uint16_t cmd;
};

struct Login {
    Header head;
    uint64_t timestamp;
};

struct LoginReply {
    Header head;
    uint16_t port;
    char ip[16];
};
#pragma pack(pop)

static_assert(sizeof(Login) == 12, "a login is 12 bytes on the wire");
static_assert(sizeof(LoginReply) == 22, "a login reply is 22 bytes on the wire");

enum Command : uint16_t { kMonitor = 0, kError = 1, kLogin = 2, kRegister = 3, kDestroy = 4 };

// How long the connection must stay quiet after the reply when junk was sent.
static const int kQuietMs = 200;

[[noreturn]] static void fail(int code, const char* format, const char* detail) {
    std::fprintf(stderr, "legacy_client: ");
    std::fprintf(stderr, format, detail);
    std::fprintf(stderr, "\n");
    std::exit(code);
}

[[noreturn]] static void usage(const char* why) {
    std::fprintf(stderr,
                 "legacy_client: %s\n"
                 "usage: legacy_client [--junk CMD]... [--junk-body N] [--timeout-ms MS] SERVER_IP SERVER_PORT\n",
                 why);
    std::exit(64);
}

// A whole number in [low, high], decimal or 0x hex, or false.
static bool parse_number(const char* text, long low, long high, long* out) {
    errno = 0;
    char* end = nullptr;
    long value = std::strtol(text, &end, 0);
    if (errno != 0 || end == text || *end != '\0' || value < low || value > high) return false;
    *out = value;
    return true;
}

static void send_all(int fd, const void* data, size_t size) {
    const char* bytes = static_cast<const char*>(data);
    while (size > 0) {
        ssize_t sent = send(fd, bytes, size, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            fail(2, "send: %s", std::strerror(errno));
        }
        bytes += sent;
        size -= static_cast<size_t>(sent);
    }
}

// Reads exactly `size` bytes, looping on partial reads.
static void recv_exact(int fd, void* data, size_t size) {
    char* bytes = static_cast<char*>(data);
    size_t have = 0;
    while (have < size) {
        ssize_t got = recv(fd, bytes + have, size - have, 0);
        if (got == 0) {
            char detail[64];
            std::snprintf(detail, sizeof detail, "%zu of %zu bytes", have, size);
            fail(3, "the connection closed after %s of the reply", detail);
        }
        if (got < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) fail(4, "%s", "timed out waiting for the reply");
            fail(3, "recv: %s", std::strerror(errno));
        }
        have += static_cast<size_t>(got);
    }
}

// Fails unless nothing arrives, and the connection stays open, for kQuietMs.
static void expect_quiet(int fd) {
    pollfd watch = {fd, POLLIN, 0};
    int ready = poll(&watch, 1, kQuietMs);
    if (ready < 0) fail(6, "poll: %s", std::strerror(errno));
    if (ready == 0) return;
    char byte = 0;
    ssize_t got = recv(fd, &byte, 1, MSG_DONTWAIT);
    if (got > 0) {
        char detail[16];
        std::snprintf(detail, sizeof detail, "%02x", static_cast<unsigned char>(byte));
        fail(6, "unexpected byte %s after the reply", detail);
    }
    fail(6, "%s", "the connection closed after the reply");
}

static void print_reply(const LoginReply& reply) {
    if (reply.head.len != sizeof(LoginReply)) fail(5, "%s", "reply len is not 22");
    if (reply.head.cmd == kLogin) {
        // The ip field is text up to its first NUL, which must be inside the 16 bytes.
        const void* nul = std::memchr(reply.ip, '\0', sizeof reply.ip);
        if (nul == nullptr || nul == reply.ip) fail(5, "%s", "success reply without an ip text");
        std::printf("%s:%u\n", reply.ip, static_cast<unsigned>(reply.port));
        return;
    }
    static const char kZeros[16] = {0};
    if (reply.head.cmd == kError && reply.port == 0xFFFF && std::memcmp(reply.ip, kZeros, 16) == 0) {
        std::printf("error\n");
        return;
    }
    fail(5, "%s", "neither a success nor the error reply");
}

int main(int argc, char** argv) {
    std::vector<uint16_t> junk;
    long junk_body = 6;
    long timeout_ms = 5000;
    int arg = 1;
    for (; arg < argc && std::strncmp(argv[arg], "--", 2) == 0; arg += 2) {
        if (arg + 1 >= argc) usage("an option needs a value");
        long value = 0;
        if (std::strcmp(argv[arg], "--junk") == 0) {
            if (!parse_number(argv[arg + 1], 0, 65535, &value)) usage("--junk takes a cmd from 0 to 65535");
            junk.push_back(static_cast<uint16_t>(value));
        } else if (std::strcmp(argv[arg], "--junk-body") == 0) {
            if (!parse_number(argv[arg + 1], 0, 64, &junk_body)) usage("--junk-body takes 0 to 64");
        } else if (std::strcmp(argv[arg], "--timeout-ms") == 0) {
            if (!parse_number(argv[arg + 1], 1, 600000, &timeout_ms)) usage("--timeout-ms takes 1 to 600000");
        } else {
            usage("unknown option");
        }
    }
    if (argc - arg != 2) usage("expected SERVER_IP SERVER_PORT");
    long port = 0;
    if (!parse_number(argv[arg + 1], 1, 65535, &port)) usage("SERVER_PORT must be 1 to 65535");
    sockaddr_in server = {};
    server.sin_family = AF_INET;
    server.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, argv[arg], &server.sin_addr) != 1) usage("SERVER_IP must be a numeric IPv4 address");

    std::signal(SIGPIPE, SIG_IGN);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) fail(1, "socket: %s", std::strerror(errno));
    timeval timeout = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    // SO_SNDTIMEO also bounds connect(2) on Linux; SO_RCVTIMEO bounds every read.
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout) != 0) {
        fail(1, "setsockopt: %s", std::strerror(errno));
    }
    if (connect(fd, reinterpret_cast<sockaddr*>(&server), sizeof server) != 0) {
        fail(1, "connect: %s", std::strerror(errno));
    }

    for (uint16_t cmd : junk) {
        // A header and a body of recognisable bytes, as one frame of `len` bytes.
        unsigned char frame[sizeof(Header) + 64];
        Header head = {static_cast<uint16_t>(sizeof(Header) + junk_body), cmd};
        std::memcpy(frame, &head, sizeof head);
        std::memset(frame + sizeof head, 0xA5, static_cast<size_t>(junk_body));
        send_all(fd, frame, sizeof(Header) + static_cast<size_t>(junk_body));
    }

    Login login;
    login.head.len = sizeof(Login);
    login.head.cmd = kLogin;
    login.timestamp = static_cast<uint64_t>(time(nullptr));
    send_all(fd, &login, sizeof login);

    LoginReply reply;
    recv_exact(fd, &reply, sizeof reply);
    print_reply(reply);
    std::fflush(stdout);
    if (!junk.empty()) expect_quiet(fd);
    close(fd);
    return 0;
}
