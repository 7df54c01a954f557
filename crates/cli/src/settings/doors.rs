//! Which doors the settings leave open to unauthenticated peers: the lines `serve` logs at start.

use super::model::Loaded;

/// One line per open door, for an operator to read at start: who may register
/// backends without proof, and what the admin API answers without a token.
pub fn open_doors(loaded: &Loaded) -> Vec<String> {
    let settings = &loaded.settings;
    let connection = &settings.server.connection;
    let mut doors = Vec::new();
    let networks = || connection.legacy_heartbeats.networks().collect::<Vec<_>>().join(", ");
    if !connection.legacy_heartbeats.is_empty() {
        doors.push(format!("legacy heartbeats (no proof of origin) accepted from {}", networks()));
        if connection.secret.is_none() {
            doors.push(format!(
                "unauthenticated v2 heartbeats accepted from {} (no auth_secret_file)",
                networks()
            ));
        }
    }
    if let Some(addr) = settings.admin.listen.addr() {
        let actions = match loaded.admin_token {
            Some(_) => "actions need the admin token",
            None => "actions refused (no admin token)",
        };
        doors.push(format!("admin API on {addr}: reads (backends, metrics) without a token; {actions}"));
    }
    doors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use loadwise_protocol::v2::auth::Secret;
    use loadwise_server::netlist::NetList;

    fn loaded(settings: Settings) -> Loaded {
        Loaded { settings, admin_token: None, shrunk: Vec::new() }
    }

    #[test]
    fn the_defaults_name_the_legacy_the_v2_and_the_admin_doors() {
        let doors = open_doors(&loaded(Settings::default()));
        assert_eq!(doors.len(), 3, "{doors:?}");
        assert!(doors[0].starts_with("legacy heartbeats") && doors[0].contains("127.0.0.0/8"), "{doors:?}");
        assert!(doors[1].starts_with("unauthenticated v2"), "{doors:?}");
        assert!(
            doors[2].contains("admin API on 127.0.0.1:8524") && doors[2].contains("refused"),
            "{doors:?}"
        );
    }

    #[test]
    fn a_secret_and_no_networks_leave_only_the_admin_reads() {
        let mut settings = Settings::default();
        settings.server.connection.secret = Some(Secret::new(*b"0123456789abcdef").unwrap());
        settings.server.connection.legacy_heartbeats = NetList::none();
        let doors = open_doors(&Loaded { admin_token: Some("t".into()), ..loaded(settings) });
        assert_eq!(doors.len(), 1, "{doors:?}");
        assert!(doors[0].contains("actions need the admin token"), "{doors:?}");
    }
}
