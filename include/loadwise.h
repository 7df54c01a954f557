/*
 * loadwise: the C ABI of the load-aware dispatcher's library side. Backends embed the
 * agent (lw_agent_*), clients pick a backend (lw_pick, lw_pick_ex; lw_connect also
 * connects to it), backends verify the admission tickets clients bring (lw_ticket_verify).
 *
 * Generated from crates/loadwise/src/ffi/ by cbindgen: do not edit by hand.
 * Link with -lloadwise (pkg-config: loadwise). Guide: docs/c-api.md.
 *
 * Conventions:
 * - Functions returning int return LW_OK (0) or a negative LW_E_* code, and set this
 *   thread's lw_last_error_message() (empty on success).
 * - Strings are NUL-terminated UTF-8, read up to LW_MAX_STRING_LEN bytes; strings the
 *   library returns are owned by the object they come from.
 * - Every object returned is freed by its lw_*_free; free functions accept NULL.
 * - Structs passed by pointer start with their size: initialise them with the
 *   lw_*_init functions at the end of this header.
 */

#ifndef LOADWISE_H
#define LOADWISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

// The version of the C ABI: the N of the library's SONAME `libloadwise.so.N`. It
// changes only when a change would break programs built against an older header.
#define LW_ABI_VERSION 1

// The longest string any function reads, in bytes without the NUL; also the most
// bytes of a secret.
#define LW_MAX_STRING_LEN 65536

// A buffer of this many bytes holds any address `lw_pick` writes, NUL included: a
// 253-byte host name, `:` and a 5-digit port.
#define LW_ADDR_LEN 260

// The length of a ticket's text form (hex digits, without the NUL).
#define LW_TICKET_TEXT_LEN 130

// `lw_agent_set_connections` with this value stops reporting a connection count.
#define LW_NOT_REPORTED UINT32_MAX

// The default timeout of a pick, when 0 is passed.
#define LW_DEFAULT_TIMEOUT_MS 3000

// `lw_agent_options::protocol`: protocol v2 (the default): services, all metrics,
// drain and health, authentication and tickets.
#define LW_PROTOCOL_V2 0

// `lw_agent_options::protocol`: the legacy heartbeat (memory only), for the C++
// LoadBanceServer.
#define LW_PROTOCOL_LEGACY 1

// What an `int`-returning function returns: `LW_OK` or a negative error code, with
// `lw_last_error_message()` saying why.
typedef enum {
  // Success.
  LW_OK = 0,
  // A pointer that must not be NULL was NULL.
  LW_E_NULL = -1,
  // An argument is unusable: not UTF-8, too long, or not a valid address, name or
  // option. The message names it.
  LW_E_INVALID = -2,
  // The output buffer is too small; nothing was written to it.
  LW_E_BUFFER = -3,
  // A dispatcher answered and had no backend to give: an empty pool, an unknown
  // service, or clocks too far apart.
  LW_E_REFUSED = -4,
  // No dispatcher answered: unreachable, closed, or a malformed reply.
  LW_E_UNREACHABLE = -5,
  // Time ran out: no dispatcher answered within the timeout, or an agent did not
  // stop within its bound.
  LW_E_TIMEOUT = -6,
  // The ticket is malformed or its signature does not verify: forged, altered, or
  // signed with another secret.
  LW_E_TICKET_INVALID = -7,
  // The ticket is genuine but for another backend or another service.
  LW_E_TICKET_MISMATCH = -8,
  // The ticket is genuine but expired (or issued further ahead than clocks may drift).
  LW_E_TICKET_EXPIRED = -9,
  // The agent has been stopped.
  LW_E_STOPPED = -10,
  // A file could not be read.
  LW_E_IO = -11,
  // A thread or an I/O runtime could not be started.
  LW_E_RUNTIME = -12,
  // `lw_connect`: backends were named, but none could be connected to within the
  // attempts (each failure was reported to the dispatcher).
  LW_E_UNCONNECTED = -13,
  // An internal error: a panic was caught at the boundary. The message says where.
  LW_E_PANIC = -99,
} lw_status;

// A running agent. Opaque; made by `lw_agent_start`, freed by `lw_agent_free`.
// Its setters may be called from any thread, concurrently; `lw_agent_free` must not
// race with other calls on the same agent.
typedef struct lw_agent lw_agent;

// A backend a pick returned: its address, id, ticket and the dispatcher that chose
// it. Opaque; read it with the `lw_picked_*` functions and free it with
// `lw_picked_free`.
typedef struct lw_picked lw_picked;

// How an agent reports this backend. Zero is the default of every field but `size`,
// `servers` and `advertise`; `lw_agent_options_init` sets `size` and zeroes the rest.
typedef struct {
  // `sizeof(lw_agent_options)` as the caller's header knows it.
  size_t size;
  // The dispatchers, comma-separated `HOST:PORT` (at most 64); one connection each.
  const char *servers;
  // Where clients reach this backend, `HOST:PORT` (an IPv6 literal in brackets; a
  // host name with protocol v2 only). Sent in every heartbeat.
  const char *advertise;
  // The service (pool) this backend serves; NULL for the default service.
  const char *service;
  // The secret shared with the dispatchers (`secret_len` bytes, at least 16): the
  // agent proves it when it registers. NULL for none (a dispatcher without a secret).
  const uint8_t *secret;
  // The length of `secret`.
  size_t secret_len;
  // This backend's id, stable across restarts; 0 derives it from the service and the
  // advertised address (what `loadwise agent` does).
  uint64_t backend_id;
  // Time between heartbeats in milliseconds; 0 for 1000.
  uint32_t interval_ms;
  // How long one connection attempt (and registration) may take, milliseconds; 0 for 3000.
  uint32_t connect_timeout_ms;
  // Relative capacity, 1 to 65535 (200 gets twice the clients of 100 at equal
  // load); 0 for 100.
  uint32_t weight;
  // `LW_PROTOCOL_V2` (0, the default) or `LW_PROTOCOL_LEGACY`.
  uint32_t protocol;
  // Since 0.2: the backend's places in total (1 to 10000000): a slot backend, whose
  // free places are leased to the dispatchers so that they never send more clients
  // than there are free places (protocol v2). Tell it of clients with
  // `lw_agent_arrive`, `lw_agent_leave` or `lw_agent_set_in_use`. 0 for none.
  uint32_t capacity;
  // Since 0.2: how long a place promised to a client stays taken if the client never
  // arrives, milliseconds; 0 for 30000 (the dispatchers' ticket lifetime).
  uint32_t promise_lifetime_ms;
} lw_agent_options;

// How `lw_pick_with` asks. Zero is the default of every field but `size` and
// `servers`; `lw_pick_options_init` sets `size` and zeroes the rest.
typedef struct {
  // `sizeof(lw_pick_options)` as the caller's header knows it.
  size_t size;
  // The dispatchers, comma-separated `HOST:PORT` (at most 64), as for `lw_pick`.
  const char *servers;
  // The service a backend is wanted for (protocol v2); NULL for a legacy login.
  const char *service;
  // All attempts together, milliseconds; 0 for `LW_DEFAULT_TIMEOUT_MS`.
  uint32_t timeout_ms;
  // An affinity key, `key_len` bytes (at most `LW_MAX_KEY_LEN`): the picks with the
  // same key go to the same backend of `service` while it is ready and within its
  // load bound. NULL (with `key_len` 0) for none; a key needs a `service`.
  const uint8_t *key;
  // The length of `key`.
  size_t key_len;
} lw_pick_options;

// How `lw_connect` asks and connects. Zero is the default of every field but `size`,
// `servers` and `service`; `lw_connect_options_init` sets `size` and zeroes the rest.
typedef struct {
  // `sizeof(lw_connect_options)` as the caller's header knows it.
  size_t size;
  // The dispatchers, comma-separated `HOST:PORT` (at most 64). The sequence starts
  // at one of them and moves to the next only if one cannot be reached.
  const char *servers;
  // The service a backend is wanted for (protocol v2); required.
  const char *service;
  // An affinity key, `key_len` bytes (at most `LW_MAX_KEY_LEN`); NULL for none.
  const uint8_t *key;
  // The length of `key`.
  size_t key_len;
  // The local address (an IP, no port) the dispatcher connection comes from: the
  // dispatcher knows clients by their source address. NULL lets the system choose.
  const char *bind;
  // The longest wait for one backend's connection, milliseconds, up to 60000; 0
  // for 1000.
  uint32_t connect_timeout_ms;
  // The most picks, 1 to 16; 0 for 3.
  uint32_t attempts;
  // The longest wait for one dispatcher exchange (connecting, or a pick and its
  // reply), milliseconds, up to 60000; 0 for 1000.
  uint32_t pick_timeout_ms;
} lw_connect_options;

// What a verified ticket says. Set `size` to `sizeof(lw_ticket_claims)`
// (`lw_ticket_claims_init` does); the library fills only the fields within `size`.
typedef struct {
  // `sizeof(lw_ticket_claims)` as the caller's header knows it.
  size_t size;
  // The backend the client was sent to.
  uint64_t backend_id;
  // When the dispatcher issued the ticket, unix seconds.
  uint64_t issued_unix;
  // The first second the ticket is no longer valid, unix seconds.
  uint64_t expires_unix;
  // Random bytes unique to the ticket: a backend that wants each ticket used once
  // remembers the nonces it has seen until they expire.
  uint8_t nonce[16];
} lw_ticket_claims;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// The library's version, such as `"0.1.0"`: a static string, never freed.
const char *lw_version(void);

// The library's C ABI version (`LW_ABI_VERSION` of the header it was built with).
// A program can compare it with the header's at start-up.
uint32_t lw_abi_version(void);

// The message of the last `int`-returning `lw_*` call on this thread: why it failed,
// or the empty string if it succeeded. Never NULL. The string belongs to the library
// and stays valid until the next `lw_*` call on the same thread; copy it to keep it.
const char *lw_last_error_message(void);

// Starts an agent for this backend: it heartbeats every dispatcher of
// `options->servers` from a thread of its own, reconnecting with backoff, until
// `lw_agent_stop` or `lw_agent_free`. Each heartbeat carries this host's memory
// (of the cgroup's limit in a container) and CPU use, and what the setters gave.
//
// Returns `LW_OK` with `*out` a new agent, or `LW_E_INVALID` (the message names the
// field), `LW_E_NULL` or `LW_E_RUNTIME`, with `*out` NULL. Nothing is connected yet
// when it returns; an unreachable dispatcher is retried, not an error.
//
// # Safety
// `options` is NULL or points to an `lw_agent_options` of `options->size` readable
// bytes whose strings are NULL or NUL-terminated and whose `secret` has `secret_len`
// readable bytes; `out` is NULL or points to a writable `lw_agent *`.
int lw_agent_start(const lw_agent_options *options,
                   lw_agent **out);

// Sets the custom metric `name` (1 to 64 bytes of `[A-Za-z0-9._-]`) to `value` (any
// finite number) in every heartbeat from now on; at most 32 metrics. Protocol v2
// only; the legacy heartbeat carries memory alone, so there it is kept but not sent.
//
// # Safety
// `agent` is NULL or an agent from `lw_agent_start` not yet freed; `name` is NULL or
// a NUL-terminated string.
int lw_agent_set_metric(const lw_agent *agent,
                        const char *name,
                        double value);

// Stops sending the custom metric `name`; a name not set is not an error.
//
// # Safety
// As for `lw_agent_set_metric`.
int lw_agent_remove_metric(const lw_agent *agent,
                           const char *name);

// Reports `count` clients or connections served by this backend in every heartbeat
// from now on (protocol v2); `LW_NOT_REPORTED` stops reporting it.
//
// # Safety
// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
int lw_agent_set_connections(const lw_agent *agent,
                             uint32_t count);

// Drains this backend (`true`): the dispatchers send it no new clients but keep it
// listed, so its current clients are undisturbed; `false` takes new clients again.
// Sent at once, not at the next interval. A legacy link can only say it by
// disconnecting, and reconnects when the drain ends.
//
// # Safety
// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
int lw_agent_set_draining(const lw_agent *agent,
                          bool draining);

// Says whether this backend can serve (`true`, the start) or not (`false`): an
// unhealthy backend is reported in maintenance, so it gets no new clients until it
// says it is healthy again, whatever its drain. Sent at once.
//
// # Safety
// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
int lw_agent_set_healthy(const lw_agent *agent,
                         bool healthy);

// A client sent by a dispatcher arrived at this slot backend: its place is taken and
// its promise ends (check its ticket first with `lw_ticket_verify` when the dispatchers
// sign them). `LW_E_INVALID` for an agent without `capacity`.
//
// # Safety
// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
int lw_agent_arrive(const lw_agent *agent);

// A client of this slot backend left: its place is free again, and the dispatchers
// are granted it by a top-up heartbeat rather than at their next regular one.
// `LW_E_INVALID` for an agent without `capacity`.
//
// # Safety
// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
int lw_agent_leave(const lw_agent *agent);

// Sets the places of this slot backend in use now, as the backend counts them (for a
// backend that counts rather than calling `lw_agent_arrive` and `lw_agent_leave`; its
// clients' promises then end only with their lifetime). `LW_E_INVALID` for an agent
// without `capacity`.
//
// # Safety
// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
int lw_agent_set_in_use(const lw_agent *agent,
                        uint32_t in_use);

// The backend id the agent registers with: the one given, or the one derived from the
// service and the advertised address. Tickets for this backend carry it (pass it to
// `lw_ticket_verify`). 0 if `agent` is NULL.
//
// # Safety
// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
uint64_t lw_agent_backend_id(const lw_agent *agent);

// Stops the agent: closes its connections (the dispatchers drop the backend at once)
// and ends its thread, waiting at most 5 s. Returns `LW_OK` (also when already
// stopped), `LW_E_TIMEOUT` (the thread is left to finish alone), `LW_E_PANIC` (the
// agent had failed) or `LW_E_NULL`. The agent must still be freed.
//
// # Safety
// `agent` is NULL or an agent from `lw_agent_start` not yet freed.
int lw_agent_stop(lw_agent *agent);

// Stops the agent if it runs (as `lw_agent_stop`) and frees it; NULL is ignored.
//
// # Safety
// `agent` is NULL or an agent from `lw_agent_start` not yet freed; it must not be
// used afterwards, nor by another thread meanwhile.
void lw_agent_free(lw_agent *agent);

// Asks the dispatchers in `servers` for a backend and writes its address.
//
// `servers` is a comma-separated list of `HOST:PORT` dispatcher replicas (at most 64);
// they are asked in a random order, one at a time, until one answers, each for at
// most 1 s and all together for at most `timeout_ms` (0 means
// `LW_DEFAULT_TIMEOUT_MS`, 3 s). `service` NULL asks with the legacy login (the
// dispatcher's default service); a name asks for a backend of that service with
// protocol v2.
//
// On success returns `LW_OK` and writes `HOST:PORT` (IPv6 in brackets) and a NUL to
// `addr_out`; `LW_ADDR_LEN` bytes always suffice. If `addr_len` is too small, returns
// `LW_E_BUFFER` and writes nothing. Otherwise `LW_E_REFUSED` (a dispatcher had no
// backend), `LW_E_UNREACHABLE`, `LW_E_TIMEOUT`, `LW_E_INVALID` or `LW_E_NULL`, with
// `lw_last_error_message()` saying why. Blocks the calling thread; safe to call from
// several threads at once.
//
// # Safety
// `servers` and `service` are NULL or NUL-terminated strings; `addr_out` is NULL or
// points to `addr_len` writable bytes.
int lw_pick(const char *servers,
            const char *service,
            uint32_t timeout_ms,
            char *addr_out,
            size_t addr_len);

// `lw_pick`, returning the whole answer: on success `*out` is a new `lw_picked`
// that the caller frees with `lw_picked_free`; on failure `*out` is NULL.
//
// # Safety
// `servers` and `service` are NULL or NUL-terminated strings; `out` is NULL or points
// to a writable `lw_picked *`.
int lw_pick_ex(const char *servers,
               const char *service,
               uint32_t timeout_ms,
               lw_picked **out);

// `lw_pick_ex` with its arguments in `options`, and an affinity key: on success
// `*out` is a new `lw_picked` that the caller frees with `lw_picked_free`; on failure
// `*out` is NULL, and the code is as for `lw_pick`.
//
// # Safety
// `options` is NULL or points to an `lw_pick_options` of `options->size` readable
// bytes whose strings are NULL or NUL-terminated and whose `key` has `key_len`
// readable bytes; `out` is NULL or points to a writable `lw_picked *`.
int lw_pick_with(const lw_pick_options *options,
                 lw_picked **out);

// Asks a dispatcher for a backend of `options->service` and connects to it: a backend
// not connected to within `connect_timeout_ms` is reported to the dispatcher (a v2
// FailureReport, on the same dispatcher connection) and another is asked for, up to
// `attempts` picks. A backend named again after it failed is passed over (unless the
// pick before was passed over too).
//
// On success returns `LW_OK`, writes the connected socket (blocking, no option
// set, owned by the caller, who closes it) to `*fd_out`, and a new `lw_picked` (the
// backend's address, id and ticket, to show it) to `*picked_out`, freed with
// `lw_picked_free`. Otherwise `*fd_out` is -1 and `*picked_out` NULL, and the code is
// `LW_E_UNCONNECTED` (every backend named failed), `LW_E_REFUSED` (a dispatcher had no
// backend), `LW_E_UNREACHABLE` (no dispatcher answered), `LW_E_INVALID` or
// `LW_E_NULL`, with `lw_last_error_message()` listing each attempt. Blocks the calling
// thread for at most one `pick_timeout_ms` per dispatcher plus `attempts` ×
// (`pick_timeout_ms` + `connect_timeout_ms`).
//
// # Safety
// `options` is NULL or points to an `lw_connect_options` of `options->size` readable
// bytes whose strings are NULL or NUL-terminated and whose `key` has `key_len`
// readable bytes; `fd_out` is NULL or points to a writable `int`; `picked_out` is NULL
// or points to a writable `lw_picked *`.
int lw_connect(const lw_connect_options *options,
               int *fd_out,
               lw_picked **picked_out);

// The backend's address, `HOST:PORT`: owned by `picked`, valid until it is freed.
// NULL if `picked` is NULL.
//
// # Safety
// `picked` is NULL or an `lw_picked` from `lw_pick_ex` not yet freed.
const char *lw_picked_addr(const lw_picked *picked);

// The backend's id (what its tickets are bound to); 0 for a legacy pick, which
// carries none, or if `picked` is NULL.
//
// # Safety
// As for `lw_picked_addr`.
uint64_t lw_picked_backend_id(const lw_picked *picked);

// The admission ticket as hex text (`LW_TICKET_TEXT_LEN` digits), to hand to the
// backend; the empty string when the dispatcher signs none (a legacy pick, or a
// dispatcher without a secret). Owned by `picked`; NULL if `picked` is NULL.
//
// # Safety
// As for `lw_picked_addr`.
const char *lw_picked_ticket(const lw_picked *picked);

// The dispatcher that answered, as given in `servers`. Owned by `picked`; NULL if
// `picked` is NULL.
//
// # Safety
// As for `lw_picked_addr`.
const char *lw_picked_dispatcher(const lw_picked *picked);

// Frees an `lw_picked`; NULL is ignored.
//
// # Safety
// `picked` is NULL or an `lw_picked` from `lw_pick_ex` not yet freed; it must not be
// used afterwards.
void lw_picked_free(lw_picked *picked);

// Verifies `ticket` (its hex text, as `lw_picked_ticket` gives it) with this host's
// clock: signed with `secret` (`secret_len` bytes, at least 16, the same bytes as the
// dispatcher's secret file without its final newline, see `lw_secret_read_file`),
// for this backend (`backend_id`, see `lw_agent_backend_id`) and `service` (NULL for
// the default service), and within its validity.
//
// Returns `LW_OK`, filling `claims` unless it is NULL; or `LW_E_TICKET_INVALID`
// (forged, altered, another secret, not a ticket), `LW_E_TICKET_MISMATCH` (another
// backend or service), `LW_E_TICKET_EXPIRED`, `LW_E_INVALID` or `LW_E_NULL`. Pure
// computation: no I/O, safe from any thread.
//
// # Safety
// `secret` points to `secret_len` readable bytes; `ticket` and `service` are NULL or
// NUL-terminated strings; `claims` is NULL or points to a writable struct of at least
// `claims->size` bytes.
int lw_ticket_verify(const uint8_t *secret,
                     size_t secret_len,
                     const char *ticket,
                     const char *service,
                     uint64_t backend_id,
                     lw_ticket_claims *claims);

// `lw_ticket_verify` at the time `now_unix` (unix seconds) instead of this host's
// clock: for tests, and for callers with a clock of their own.
//
// # Safety
// As for `lw_ticket_verify`.
int lw_ticket_verify_at(const uint8_t *secret,
                        size_t secret_len,
                        const char *ticket,
                        const char *service,
                        uint64_t backend_id,
                        uint64_t now_unix,
                        lw_ticket_claims *claims);

// Reads the secret file at `path` as the dispatcher (`auth_secret_file`) and the
// agent (`--secret-file`) do: its bytes without a final newline, at least 16. Writes
// them to `out` (`out_len` bytes) and their count to `*secret_len`.
//
// Returns `LW_OK`; `LW_E_BUFFER` if `out_len` is too small (nothing written to `out`,
// `*secret_len` set to the size needed); `LW_E_IO` if the file cannot be read;
// `LW_E_INVALID` if the secret is too short; `LW_E_NULL`.
//
// # Safety
// `path` is NULL or a NUL-terminated string; `out` is NULL or points to `out_len`
// writable bytes; `secret_len` is NULL or points to a writable `size_t`.
int lw_secret_read_file(const char *path,
                        uint8_t *out,
                        size_t out_len,
                        size_t *secret_len);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* LOADWISE_H */

#ifndef LOADWISE_H_INIT
#define LOADWISE_H_INIT

#ifdef __cplusplus
extern "C" {
#endif

/* Sets options->size to the size this header knows and every other field to zero
   (each field's default). Inline, so the size is the program's, not the library's. */
static inline void lw_agent_options_init(lw_agent_options *options) {
  memset(options, 0, sizeof(*options));
  options->size = sizeof(*options);
}

/* Sets options->size to the size this header knows and every other field to zero. */
static inline void lw_pick_options_init(lw_pick_options *options) {
  memset(options, 0, sizeof(*options));
  options->size = sizeof(*options);
}

/* Sets options->size to the size this header knows and every other field to zero. */
static inline void lw_connect_options_init(lw_connect_options *options) {
  memset(options, 0, sizeof(*options));
  options->size = sizeof(*options);
}

/* Sets claims->size to the size this header knows and every other field to zero. */
static inline void lw_ticket_claims_init(lw_ticket_claims *claims) {
  memset(claims, 0, sizeof(*claims));
  claims->size = sizeof(*claims);
}

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* LOADWISE_H_INIT */
