//! Every setting of `loadwise serve`: its file key, flag, environment variable, whether
//! a reload applies it, and what it means. The example file, `config show`, the
//! reload log and the documentation tests all read this one list.

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingInfo {
    /// The setting's name, from which its flag and variable are made, and its key in
    /// the file: `admin.` keys live in the `[admin]` table; a per-service setting
    /// is in the service tables instead (see `per_service`).
    pub key: &'static str,
    /// Whether a reload (SIGHUP) applies it; if not, it needs a restart.
    pub live: bool,
    /// What it does, for the example file (one or more lines, no `#`).
    pub doc: &'static str,
    /// A value to show, commented out, for a setting that is unset by default.
    pub example: Option<&'static str>,
    /// For a setting given per service, its key in each `[services.NAME]` table. Its
    /// flag is repeated (`--service-scoring NAME=VALUE`), and its variable holds such
    /// entries separated by `;`.
    pub per_service: Option<&'static str>,
}

/// How the catalogue writes the table of a per-service setting.
pub const SERVICE_TABLE: &str = "services.NAME";

impl SettingInfo {
    /// The flag's name without dashes in front, also the name a
    /// [`ConfigError`](loadwise_protocol::config::ConfigError) gives: `max-clock-skew`.
    pub fn flag(&self) -> String {
        self.key.replace(['.', '_'], "-")
    }

    /// The environment variable: `LOADWISE_MAX_CLOCK_SKEW`, `LOADWISE_ADMIN_LISTEN`.
    pub fn env(&self) -> String {
        format!("LOADWISE_{}", self.key.replace('.', "_").to_uppercase())
    }

    /// The name in the `[admin]` table, in each `[services.NAME]` table (given as
    /// [`SERVICE_TABLE`]), or at the top level.
    pub fn table_key(&self) -> (Option<&'static str>, &'static str) {
        if let Some(key) = self.per_service {
            return (Some(SERVICE_TABLE), key);
        }
        match self.key.split_once('.') {
            Some((table, key)) => (Some(table), key),
            None => (None, self.key),
        }
    }

    /// Where the setting is in the file, as a dotted key: `ttl`, `admin.listen`,
    /// `services.NAME.scoring`.
    pub fn file_key(&self) -> String {
        match self.table_key() {
            (Some(table), key) => format!("{table}.{key}"),
            (None, key) => key.to_owned(),
        }
    }

    /// The setting named `name`, as a file key or as a flag.
    pub fn find(name: &str) -> Option<&'static SettingInfo> {
        CATALOG.iter().find(|info| info.key == name || info.flag() == name)
    }
}

const fn live(key: &'static str, doc: &'static str) -> SettingInfo {
    SettingInfo { key, live: true, doc, example: None, per_service: None }
}

const fn restart(key: &'static str, doc: &'static str) -> SettingInfo {
    SettingInfo { key, live: false, doc, example: None, per_service: None }
}

/// Every setting, in the order the example file lists them.
pub const CATALOG: &[SettingInfo] = &[
    SettingInfo {
        key: "listen",
        live: false,
        doc: "Where backends and clients connect. Refuses to start if the port is taken.",
        example: None,
        per_service: None,
    },
    live(
        "policy",
        "How to choose a backend: least-loaded (lowest report plus the clients sent\n\
         since), p2c (the better of two at random, by effective load), round-robin\n\
         (ignores load), or original (lowest report only, as the old server did; for\n\
         comparison).",
    ),
    live("ttl", "Remove a backend that has sent no heartbeat for this long."),
    live(
        "max_clock_skew",
        "A login whose timestamp is further than this from the dispatcher's clock gets\n\
         the error reply. Whole seconds.",
    ),
    live(
        "max_backends",
        "Most backends registered at once, and most backend connections open (those that\n\
         have sent a heartbeat or a v2 Register); heartbeats of further backends are\n\
         refused, and a further connection's first heartbeat closes it (v2: Error 13).",
    ),
    live(
        "slow_start",
        "For this long after a backend registers, the clients sent to it count extra\n\
         (up to 10 times), so a fresh server is not flooded; 0s turns it off.",
    ),
    live(
        "prior_cost",
        "The cost of one client, in percent of a backend's load, assumed until its\n\
         heartbeats show the real figure.",
    ),
    live("min_cost", "The smallest cost of one client (percent) that learning may settle on."),
    live("max_cost", "The largest cost of one client (percent) that learning may settle on."),
    live(
        "max_client_connections",
        "Most client connections open at once (those that have sent a login or a v2\n\
         PickRequest, and no heartbeat); a further one's login gets the error reply (v2:\n\
         status 14, busy) and is closed. Lowering it closes no open connection.",
    ),
    live(
        "max_pending_connections",
        "Most connections open at once that have not yet sent a heartbeat, login or\n\
         pick; further ones are closed as they arrive. Legacy backends send their first\n\
         heartbeat a second after connecting: allow for as many as connect in a second.",
    ),
    live(
        "max_connections_per_peer",
        "Most client and pending connections open at once from one IP address; further\n\
         ones are closed as they arrive. Backend connections are not counted.",
    ),
    live(
        "max_frame_len",
        "Longest frame accepted, in bytes (23 to 65535); a longer one closes its connection.",
    ),
    live(
        "max_v2_frame_len",
        "Longest protocol v2 frame accepted, in bytes (2682, the largest v2 message, to\n\
         65535); a longer one closes its connection. v2 frames are held whole until they\n\
         are decoded, so this bounds what one connection can make the dispatcher hold.",
    ),
    live("frame_timeout", "Close a connection that holds an incomplete frame for this long."),
    live(
        "first_frame_timeout",
        "Close a connection that has sent no heartbeat, login or pick this long after it\n\
         was accepted (a TLS handshake included).",
    ),
    live("idle_timeout", "Close a connection that sends nothing for this long; 0s keeps idle connections."),
    live("write_timeout", "Close a connection whose peer does not read its replies for this long."),
    live("shutdown_grace", "On SIGINT/SIGTERM, how long connections may finish before they are closed."),
    live(
        "legacy_heartbeat_networks",
        "Legacy heartbeats carry no proof of who sent them, so they are accepted only from\n\
         these networks (comma-separated ADDRESS/PREFIX), or from none with \"none\"; so are\n\
         v2 heartbeats when there is no auth_secret_file. Logins are answered from anywhere.",
    ),
    SettingInfo {
        key: "auth_secret_file",
        live: true,
        doc: "A file holding the secret shared with v2 agents (their --secret-file; at least\n\
              16 bytes, a trailing newline is not part of it), read at start and at each\n\
              reload. With it, v2 backends must prove they know it before they register,\n\
              and pick replies carry tickets signed with it; without it, v2 heartbeats are\n\
              accepted unauthenticated and no tickets are issued.",
        example: Some("\"/etc/loadwise/secret\""),
        per_service: None,
    },
    live(
        "ticket_lifetime",
        "How long the admission ticket in a v2 pick reply stays valid. Whole seconds,\n\
         at least 1. Tickets are issued only with auth_secret_file.",
    ),
    restart(
        "tls_listen",
        "A second listener whose connections speak TLS (the same protocols as on listen),\n\
         or \"off\". Needs tls_cert and tls_key.",
    ),
    SettingInfo {
        key: "tls_cert",
        live: false,
        doc: "The TLS listener's certificate chain: a PEM file, the server's certificate\n\
              first, then any intermediates.",
        example: Some("\"/etc/loadwise/tls/cert.pem\""),
        per_service: None,
    },
    SettingInfo {
        key: "tls_key",
        live: false,
        doc: "The TLS listener's private key: a PEM file (PKCS#8, PKCS#1 or SEC1), readable\n\
              by loadwise alone.",
        example: Some("\"/etc/loadwise/tls/key.pem\""),
        per_service: None,
    },
    restart(
        "default_service",
        "The service legacy heartbeats and logins belong to; v2 backends and clients that\n\
         name it share its pool with them. 1 to 64 bytes of A-Z, a-z, 0-9, '.', '_', '-'.",
    ),
    live(
        "scoring",
        "How a v2 backend's metrics make the load it is ranked by, in services without a\n\
         scoring of their own: memory, cpu, connections or a custom metric's name, alone,\n\
         as the largest of several (max(memory, cpu)) or as a weighted sum\n\
         (0.7*memory + 0.3*cpu; 0.5*connections makes 200 connections 100 %).",
    ),
    SettingInfo {
        key: "service_scoring",
        live: true,
        doc: "A service whose backends' load is scored otherwise than by `scoring`, in a\n\
              [services.NAME] table of its own. A service given by a flag or variable\n\
              replaces the same service's table here; the other tables stay.",
        example: Some("\"max(memory, cpu)\""),
        per_service: Some("scoring"),
    },
    SettingInfo {
        key: "admin.listen",
        live: false,
        doc: "Where the admin HTTP API and dashboard listen, or \"off\". Keep it on loopback or\n\
              a private network: reads need no token.",
        example: None,
        per_service: None,
    },
    SettingInfo {
        key: "admin.token",
        live: true,
        doc: "The bearer token operator actions (drain, maintenance) must present; without one\n\
              they are refused. Prefer token_file, which keeps the secret out of this file.",
        example: Some("\"change-me\""),
        per_service: None,
    },
    SettingInfo {
        key: "admin.token_file",
        live: true,
        doc: "A file holding the admin token, read at start and at each reload (SIGHUP).",
        example: Some("\"/etc/loadwise/admin-token\""),
        per_service: None,
    },
];
