// loadwise for C++17: RAII classes over the C ABI of loadwise.h.
//
//   loadwise::Agent      an agent inside the backend process (stopped when destroyed)
//   loadwise::pick       ask the dispatchers for a backend (address, id, ticket)
//   loadwise::check_ticket / verify_ticket
//                        verify the admission ticket a client brings
//   loadwise::Secret     the secret shared with the dispatchers, read as they read it
//
// Failures throw loadwise::Error (its code() is the LW_E_* code), except check_ticket,
// which returns the verdict: a refused ticket is an expected outcome, not an error.
// Header-only; link with -lloadwise. Guide: docs/c-api.md.

#ifndef LOADWISE_HPP
#define LOADWISE_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "loadwise.h"

namespace loadwise {

// A failed call: the LW_E_* code and the library's message.
class Error : public std::runtime_error {
 public:
  Error(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

namespace detail {

// Throws the calling thread's last error unless `status` is LW_OK.
inline void check(int status) {
  if (status != LW_OK) throw Error(status, lw_last_error_message());
}

inline const char* c_str(const std::optional<std::string>& text) {
  return text ? text->c_str() : nullptr;
}

struct PickedFree {
  void operator()(lw_picked* picked) const noexcept { lw_picked_free(picked); }
};

struct AgentFree {
  void operator()(lw_agent* agent) const noexcept { lw_agent_free(agent); }
};

}  // namespace detail

// The library's version, such as "0.1.0".
inline std::string version() { return lw_version(); }

// True when the library loaded at run time has the C ABI this header was built for.
inline bool abi_matches() noexcept { return lw_abi_version() == LW_ABI_VERSION; }

// The secret shared with the dispatchers: at least 16 bytes.
class Secret {
 public:
  explicit Secret(std::vector<std::uint8_t> bytes) : bytes_(std::move(bytes)) {}

  // Reads a secret file as the dispatcher and the agent do: without its final newline.
  static Secret from_file(const std::string& path) {
    std::vector<std::uint8_t> bytes(256);
    std::size_t len = 0;
    int status = lw_secret_read_file(path.c_str(), bytes.data(), bytes.size(), &len);
    if (status == LW_E_BUFFER) {
      bytes.resize(len);
      status = lw_secret_read_file(path.c_str(), bytes.data(), bytes.size(), &len);
    }
    detail::check(status);
    bytes.resize(len);
    return Secret(std::move(bytes));
  }

  const std::uint8_t* data() const noexcept { return bytes_.data(); }
  std::size_t size() const noexcept { return bytes_.size(); }

 private:
  std::vector<std::uint8_t> bytes_;
};

// A backend a pick returned.
struct Picked {
  std::string addr;              // HOST:PORT to connect to
  std::uint64_t backend_id = 0;  // 0 for a legacy pick
  std::string ticket;            // hex text for the backend; empty when none is signed
  std::string dispatcher;        // the replica that answered
};

// Asks the dispatchers (comma-separated HOST:PORT) for a backend of `service`, or with
// the legacy login when there is none. timeout_ms 0 means 3 s. Throws Error.
inline Picked pick(const std::string& servers, const std::optional<std::string>& service = std::nullopt,
                   std::uint32_t timeout_ms = 0) {
  lw_picked* raw = nullptr;
  detail::check(lw_pick_ex(servers.c_str(), detail::c_str(service), timeout_ms, &raw));
  std::unique_ptr<lw_picked, detail::PickedFree> picked(raw);
  return Picked{lw_picked_addr(raw), lw_picked_backend_id(raw), lw_picked_ticket(raw),
                lw_picked_dispatcher(raw)};
}

// What a verified ticket says.
struct Claims {
  std::uint64_t backend_id = 0;
  std::uint64_t issued_unix = 0;
  std::uint64_t expires_unix = 0;
  std::array<std::uint8_t, 16> nonce{};
};

// The verdict on a ticket: admitted, or why not.
struct TicketCheck {
  int code = LW_OK;     // LW_OK, or LW_E_TICKET_INVALID / _MISMATCH / _EXPIRED, LW_E_INVALID...
  std::string message;  // why it was refused; empty when admitted
  Claims claims;        // filled when admitted

  explicit operator bool() const noexcept { return code == LW_OK; }
};

namespace detail {

inline TicketCheck verdict(int status, const lw_ticket_claims& raw) {
  TicketCheck check;
  check.code = status;
  if (status != LW_OK) {
    check.message = lw_last_error_message();
    return check;
  }
  check.claims.backend_id = raw.backend_id;
  check.claims.issued_unix = raw.issued_unix;
  check.claims.expires_unix = raw.expires_unix;
  for (std::size_t i = 0; i < check.claims.nonce.size(); ++i) check.claims.nonce[i] = raw.nonce[i];
  return check;
}

}  // namespace detail

// Checks a ticket against the secret, this backend's id and its service (none: the
// default service), with this host's clock.
inline TicketCheck check_ticket(const Secret& secret, const std::string& ticket, std::uint64_t backend_id,
                                const std::optional<std::string>& service = std::nullopt) {
  lw_ticket_claims raw;
  lw_ticket_claims_init(&raw);
  int status = lw_ticket_verify(secret.data(), secret.size(), ticket.c_str(), detail::c_str(service),
                                backend_id, &raw);
  return detail::verdict(status, raw);
}

// check_ticket at `now_unix` instead of this host's clock.
inline TicketCheck check_ticket_at(const Secret& secret, const std::string& ticket, std::uint64_t backend_id,
                                   const std::optional<std::string>& service, std::uint64_t now_unix) {
  lw_ticket_claims raw;
  lw_ticket_claims_init(&raw);
  int status = lw_ticket_verify_at(secret.data(), secret.size(), ticket.c_str(), detail::c_str(service),
                                   backend_id, now_unix, &raw);
  return detail::verdict(status, raw);
}

// check_ticket that throws Error when the ticket is refused.
inline Claims verify_ticket(const Secret& secret, const std::string& ticket, std::uint64_t backend_id,
                            const std::optional<std::string>& service = std::nullopt) {
  TicketCheck check = check_ticket(secret, ticket, backend_id, service);
  if (!check) throw Error(check.code, check.message);
  return check.claims;
}

// How an agent reports this backend; zero means each field's default.
struct AgentOptions {
  std::string servers;                 // dispatchers, comma-separated HOST:PORT
  std::string advertise;               // where clients reach this backend, HOST:PORT
  std::optional<std::string> service;  // none: the default service
  std::optional<Secret> secret;        // none: the dispatchers have no secret
  std::uint64_t backend_id = 0;        // 0: derived from the service and the address
  std::uint32_t interval_ms = 0;       // 0: 1000
  std::uint32_t connect_timeout_ms = 0;  // 0: 3000
  std::uint32_t weight = 0;            // 0: 100
  bool legacy = false;                 // the legacy heartbeat, for the C++ LoadBanceServer
};

// An agent running in this process from construction until stop() or destruction.
// Its setters may be called from any thread; they throw Error.
class Agent {
 public:
  explicit Agent(const AgentOptions& options) {
    lw_agent_options raw;
    lw_agent_options_init(&raw);
    raw.servers = options.servers.c_str();
    raw.advertise = options.advertise.c_str();
    raw.service = detail::c_str(options.service);
    if (options.secret) {
      raw.secret = options.secret->data();
      raw.secret_len = options.secret->size();
    }
    raw.backend_id = options.backend_id;
    raw.interval_ms = options.interval_ms;
    raw.connect_timeout_ms = options.connect_timeout_ms;
    raw.weight = options.weight;
    raw.protocol = options.legacy ? LW_PROTOCOL_LEGACY : LW_PROTOCOL_V2;
    lw_agent* agent = nullptr;
    detail::check(lw_agent_start(&raw, &agent));
    agent_.reset(agent);
  }

  // Tickets for this backend carry this id.
  std::uint64_t backend_id() const noexcept { return lw_agent_backend_id(agent_.get()); }

  void set_metric(const std::string& name, double value) {
    detail::check(lw_agent_set_metric(agent_.get(), name.c_str(), value));
  }
  void remove_metric(const std::string& name) { detail::check(lw_agent_remove_metric(agent_.get(), name.c_str())); }
  void set_connections(std::uint32_t count) { detail::check(lw_agent_set_connections(agent_.get(), count)); }
  void clear_connections() { set_connections(LW_NOT_REPORTED); }
  void set_draining(bool draining) { detail::check(lw_agent_set_draining(agent_.get(), draining)); }
  void set_healthy(bool healthy) { detail::check(lw_agent_set_healthy(agent_.get(), healthy)); }

  // Closes the agent's connections and ends its thread (at most 5 s); the destructor
  // does the same without reporting failures.
  void stop() { detail::check(lw_agent_stop(agent_.get())); }

 private:
  std::unique_ptr<lw_agent, detail::AgentFree> agent_;
};

}  // namespace loadwise

#endif  // LOADWISE_HPP
