use std::path::Path;
use std::time::Duration;

use super::*;
use loadwise_core::selection::Policy;
use loadwise_protocol::v2::ServiceName;
use loadwise_protocol::v2::auth::Secret;
use loadwise_server::ServerConfig;

fn loaded(settings: Settings) -> Loaded {
    Loaded { settings, admin_token: None, shrunk: Vec::new() }
}

fn service(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

/// Overrides that score each of `entries` (`NAME=SCORING`), as the flags give them.
fn service_overrides(entries: &[&str]) -> Layer {
    let services = entries
        .iter()
        .map(|entry| entry.parse::<ServiceScoring>().unwrap())
        .map(|entry| (entry.service, ServiceLayer { scoring: Some(entry.value), ..ServiceLayer::default() }))
        .collect();
    Layer { services, ..Layer::default() }
}

fn sources(overrides: Layer) -> Sources {
    Sources { file: Some("/etc/loadwise/loadwise.toml".into()), overrides, ..Sources::default() }
}

#[test]
fn the_example_sets_every_setting_to_its_default() {
    let text = example();
    let layer = Layer::parse(&text).unwrap();
    let mut settings = Settings::default();
    layer.apply(&mut settings).unwrap();
    assert_eq!(settings, Settings::default());
    for info in CATALOG {
        let (_, key) = info.table_key();
        assert!(text.contains(&format!("{key} = ")), "the example lacks {}", info.key);
        assert!(text.contains(&info.env()), "the example does not name {}", info.env());
        if info.per_service.is_some() {
            // Unset by default, so shown commented out, in the example service's table.
            let table = text.split("# [services.search]\n").nth(1).expect("an example service table");
            assert!(
                table.starts_with(&format!("# {key} = ")) || table.contains(&format!("\n# {key} = ")),
                "{text}"
            );
        }
    }
}

#[test]
fn rendered_settings_parse_back_to_themselves() {
    let mut settings = Settings::default();
    settings.server.dispatch.policy = Policy::P2c;
    settings.server.dispatch.ttl = Duration::from_millis(1500);
    settings.server.connection.idle_timeout = None;
    settings.admin.listen = AdminListen::Off;
    settings.admin.token = Some(TokenSource::File("/run/token".into()));
    settings.auth_secret_file = Some("/run/secret".into());
    settings.tls = TlsSettings {
        listen: TlsListenAddr::On("[::1]:8443".parse().unwrap()),
        cert: Some("/run/cert.pem".into()),
        key: Some("/run/key.pem".into()),
    };
    settings.server.tls = settings.tls.listener();
    let scoring = &mut settings.server.dispatch.service_scoring;
    scoring.insert(service("search"), "max(memory, cpu)".parse().unwrap());
    scoring.insert(service("eu.search"), "0.5*connections".parse().unwrap());
    let mut parsed = Settings::default();
    Layer::parse(&render(&settings)).unwrap().apply(&mut parsed).unwrap();
    assert_eq!(parsed, settings);
}

#[test]
fn an_inline_token_is_never_rendered() {
    let mut settings = Settings::default();
    settings.admin.token = Some(TokenSource::Inline("s3cret".into()));
    let text = render(&settings);
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("# token = (set; not shown)"), "{text}");
}

#[test]
fn overrides_win_over_the_file_which_wins_over_defaults() {
    let file = Layer::parse("ttl = \"5s\"\npolicy = \"p2c\"\nmax_backends = 7\n").unwrap();
    let overrides = Layer { ttl: Some(Duration::from_secs(9)), ..Layer::default() };
    let settings = sources(overrides).merge(&file).unwrap();
    assert_eq!(settings.server.dispatch.ttl, Duration::from_secs(9));
    assert_eq!(settings.server.dispatch.policy, Policy::P2c);
    assert_eq!(settings.server.dispatch.max_backends, 7);
    assert_eq!(settings.server.max_client_connections, 8_192);
}

#[test]
fn unknown_keys_are_named() {
    let error = Layer::parse("tll = \"5s\"\n").unwrap_err();
    assert!(error.contains("tll"), "{error}");
    let error = Layer::parse("[admin]\ntokn = \"x\"\n").unwrap_err();
    assert!(error.contains("tokn"), "{error}");
}

#[test]
fn bad_values_are_named() {
    let error = Layer::parse("ttl = \"3 parsecs\"\n").unwrap_err();
    assert!(error.contains("ttl"), "{error}");
    let error = Layer::parse("max_frame_len = 70000\n").unwrap_err();
    assert!(error.contains("max_frame_len"), "{error}");
    let error = Layer::parse("[admin]\nlisten = \"nowhere\"\n").unwrap_err();
    assert!(error.contains("listen") && error.contains("off"), "{error}");
}

#[test]
fn invalid_settings_name_the_setting_and_where_it_was_set() {
    let file = Layer::parse("ttl = \"0s\"\n").unwrap();
    let error = sources(Layer::default()).merge(&file).unwrap_err().to_string();
    assert!(error.contains("`ttl`") && error.contains("/etc/loadwise/loadwise.toml"), "{error}");

    let mut from_env = sources(Layer { max_client_connections: Some(0), ..Layer::default() });
    from_env.origins.insert("max_client_connections".into(), "LOADWISE_MAX_CLIENT_CONNECTIONS".into());
    let error = from_env.merge(&Layer::default()).unwrap_err().to_string();
    let named =
        error.contains("`max-client-connections`") && error.contains("LOADWISE_MAX_CLIENT_CONNECTIONS");
    assert!(named, "{error}");
}

#[test]
fn a_zero_idle_timeout_keeps_idle_connections() {
    let file = Layer::parse("idle_timeout = \"0s\"\n").unwrap();
    let settings = sources(Layer::default()).merge(&file).unwrap();
    assert_eq!(settings.server.connection.idle_timeout, None);
}

#[test]
fn the_admin_token_is_given_once_per_source_and_the_higher_source_wins() {
    let both = Layer::parse("[admin]\ntoken = \"a\"\ntoken_file = \"/t\"\n").unwrap();
    let error = sources(Layer::default()).merge(&both).unwrap_err().to_string();
    assert!(error.contains("admin-token"), "{error}");

    let file = Layer::parse("[admin]\ntoken_file = \"/t\"\n").unwrap();
    let overrides =
        Layer { admin: AdminLayer { token: Some("b".into()), ..AdminLayer::default() }, ..Layer::default() };
    let settings = sources(overrides).merge(&file).unwrap();
    assert_eq!(settings.admin.token, Some(TokenSource::Inline("b".into())));
}

#[test]
fn admin_listen_is_an_address_or_off() {
    assert_eq!("off".parse::<AdminListen>(), Ok(AdminListen::Off));
    assert_eq!(AdminListen::default().to_string(), DEFAULT_ADMIN_LISTEN);
    assert!("8524".parse::<AdminListen>().is_err());
}

#[test]
fn durations_are_written_as_flags_take_them() {
    assert_eq!(format_duration(Duration::from_secs(60)), "60s");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(format_duration(Duration::ZERO), "0s");
    assert_eq!(
        humantime::parse_duration(&format_duration(Duration::from_nanos(1_500))).unwrap().as_nanos(),
        1_500
    );
}

#[test]
fn diff_names_each_change_and_whether_it_applies_live() {
    let old = loaded(Settings::default());
    let mut new = old.clone();
    new.settings.server.dispatch.policy = Policy::RoundRobin;
    new.settings.server.listen = "127.0.0.1:9000".parse().unwrap();
    new.admin_token = Some("s3cret".into());
    let changes = diff(&old, &new);
    let summary: Vec<_> =
        changes.iter().map(|c| (c.key.as_str(), c.old.as_str(), c.new.as_str(), c.live)).collect();
    assert_eq!(
        summary,
        [
            ("listen", "127.0.0.1:8523", "127.0.0.1:9000", false),
            ("policy", "least-loaded", "round-robin", true),
            ("admin.token", "unset", "set (hidden)", true),
        ]
    );
    let mut rotated = new.clone();
    rotated.admin_token = Some("other".into());
    let changes = diff(&new, &rotated);
    assert_eq!(changes.len(), 1);
    assert!(!format!("{changes:?}").contains("s3cret"));
}

#[test]
fn restart_only_settings_keep_their_running_values() {
    let running = Settings::default();
    let mut reloaded = Settings::default();
    reloaded.server.listen = "127.0.0.1:9000".parse().unwrap();
    reloaded.admin.listen = AdminListen::Off;
    reloaded.server.dispatch.default_service = service("game");
    reloaded.server.dispatch.ttl = Duration::from_secs(8);
    let tls = Layer::parse("tls_listen = \"0.0.0.0:8443\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\n").unwrap();
    tls.apply(&mut reloaded).unwrap();
    assert!(reloaded.server.tls.is_some());
    reloaded.keep_restart_only(&running);
    assert_eq!((&reloaded.tls, &reloaded.server.tls), (&running.tls, &None));
    assert_eq!(reloaded.server.listen, running.server.listen);
    assert_eq!(reloaded.admin.listen, running.admin.listen);
    assert_eq!(reloaded.server.dispatch.default_service, running.server.dispatch.default_service);
    assert_eq!(reloaded.server.dispatch.ttl, Duration::from_secs(8));
}

#[test]
fn every_setting_the_server_validates_is_in_the_catalogue() {
    let named = [
        "ttl",
        "max-backends",
        "min-cost",
        "max-cost",
        "prior-cost",
        "max-client-connections",
        "max-pending-connections",
        "max-connections-per-peer",
        "first-frame-timeout",
        "frame-timeout",
        "write-timeout",
        "idle-timeout",
        "max-clock-skew",
        "max-frame-len",
        "max-v2-frame-len",
        "ticket-lifetime",
    ];
    for name in named {
        assert!(SettingInfo::find(name).is_some(), "{name}");
    }
    let info = SettingInfo::find("admin.token_file").unwrap();
    assert_eq!(
        (info.flag().as_str(), info.env().as_str()),
        ("admin-token-file", "LOADWISE_ADMIN_TOKEN_FILE")
    );
}

#[test]
fn scoring_and_the_default_service_come_from_the_file_unless_overridden() {
    let file = Layer::parse("scoring = \"max(memory, cpu)\"\ndefault_service = \"game\"\n").unwrap();
    let settings = sources(Layer::default()).merge(&file).unwrap();
    let dispatch = &settings.server.dispatch;
    assert_eq!(dispatch.scoring.to_string(), "max(memory, cpu)");
    assert_eq!(dispatch.default_service.as_str(), "game");

    let overrides = Layer { scoring: Some("0.5*connections".parse().unwrap()), ..Layer::default() };
    let settings = sources(overrides).merge(&file).unwrap();
    assert_eq!(settings.server.dispatch.scoring.to_string(), "0.5*connections");
    assert_eq!(settings.server.dispatch.default_service.as_str(), "game");
}

#[test]
fn a_bad_scoring_or_service_name_is_named() {
    let error = Layer::parse("scoring = \"max(memory\"\n").unwrap_err();
    assert!(error.contains("`scoring = \"max(memory\"`") && error.contains("max("), "{error}");
    let error = Layer::parse("scoring = \"memory * 2\"\n").unwrap_err();
    assert!(error.contains("scoring") && error.contains("factor"), "{error}");
    let error = Layer::parse("default_service = \"my game\"\n").unwrap_err();
    assert!(error.contains("default_service") && error.contains("0x20"), "{error}");
}

#[test]
fn v2_frame_and_ticket_limits_are_validated_by_name() {
    let file = Layer::parse("max_v2_frame_len = 1000\n").unwrap();
    let error = sources(Layer::default()).merge(&file).unwrap_err().to_string();
    assert!(error.contains("`max-v2-frame-len`") && error.contains("`max_v2_frame_len` in"), "{error}");
    let overrides = Layer { ticket_lifetime: Some(Duration::from_millis(1500)), ..Layer::default() };
    let error = sources(overrides).merge(&Layer::default()).unwrap_err().to_string();
    assert!(error.contains("`ticket-lifetime`") && error.contains("--ticket-lifetime"), "{error}");

    let file = Layer::parse("max_v2_frame_len = 8192\nticket_lifetime = \"2m\"\n").unwrap();
    let connection = sources(Layer::default()).merge(&file).unwrap().server.connection;
    assert_eq!((connection.max_v2_frame_len, connection.ticket_lifetime), (8192, Duration::from_secs(120)));
}

#[test]
fn service_scoring_merges_service_by_service() {
    let file = Layer::parse(
        "scoring = \"cpu\"\n[services.search]\nscoring = \"max(memory, cpu)\"\n\
         [services.video]\nscoring = \"memory\"\n",
    )
    .unwrap();
    let overrides = service_overrides(&["video=0.5*connections", "chat=connections"]);
    let dispatch = sources(overrides).merge(&file).unwrap().server.dispatch;
    let shown: Vec<_> = dispatch.service_scoring.iter().map(|(name, s)| format!("{name}={s}")).collect();
    assert_eq!(shown, ["chat=connections", "search=max(memory, cpu)", "video=0.5*connections"]);
    assert_eq!(dispatch.scoring_of(&service("other")).to_string(), "cpu");
    assert_eq!(dispatch.scoring_of(&service("search")).to_string(), "max(memory, cpu)");
}

#[test]
fn service_tables_are_checked_by_name_and_key() {
    let error = Layer::parse("[services.\"my game\"]\nscoring = \"cpu\"\n").unwrap_err();
    assert!(error.contains("\"my game\" is not a service name") && error.contains("[services."), "{error}");
    let error = Layer::parse("[services.game]\nscorin = \"cpu\"\n").unwrap_err();
    assert!(error.contains("scorin"), "{error}");
    let error = Layer::parse("[services.game]\nscoring = \"max(cpu\"\n").unwrap_err();
    assert!(error.contains("`scoring = \"max(cpu\"`"), "{error}");
    // Dotted keys are the same tables.
    let layer = Layer::parse("services.game.scoring = \"cpu\"\n").unwrap();
    assert_eq!(layer, service_overrides(&["game=cpu"]));
}

#[test]
fn service_scoring_entries_read_as_the_flag_writes_them() {
    let entry: ServiceScoring = "search = max(memory,cpu)".parse().unwrap();
    assert_eq!(entry.to_string(), "search=max(memory, cpu)");
    assert!(matches!("search".parse::<ServiceScoring>(), Err(BadServiceScoring::NoEquals(_))));
    assert!(matches!("my game=cpu".parse::<ServiceScoring>(), Err(BadServiceScoring::Service(..))));
    let error = "game=cpu(".parse::<ServiceScoring>().unwrap_err();
    assert!(matches!(error, BadServiceScoring::Value(..)) && error.to_string().contains("game"), "{error}");
}

#[test]
fn a_per_service_setting_has_one_change_per_service_and_an_origin() {
    let old =
        loaded(sources(service_overrides(&["search=cpu", "video=memory"])).merge(&Layer::default()).unwrap());
    let new = loaded(
        sources(service_overrides(&["search=cpu", "eu.chat=connections"])).merge(&Layer::default()).unwrap(),
    );
    let changes = diff(&old, &new);
    let summary: Vec<_> = changes.iter().map(|c| (c.key.as_str(), c.old.as_str(), c.new.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("services.\"eu.chat\".scoring", "unset", "connections"),
            ("services.video.scoring", "memory", "unset")
        ]
    );

    let file = Layer::parse("[services.search]\nscoring = \"cpu\"\n").unwrap();
    let from_file = sources(Layer::default());
    assert!(from_file.origin(&file, "service-scoring").contains("/etc/loadwise/loadwise.toml"));
    let from_flags = sources(service_overrides(&["search=memory"]));
    assert_eq!(from_flags.origin(&file, "service-scoring"), "--service-scoring or LOADWISE_SERVICE_SCORING");
    assert_eq!(from_flags.origin(&Layer::default(), "scoring"), "the default");
}

/// A scratch file holding `text`, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str, text: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("loadwise-settings-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn secret_sources(path: &Path) -> Sources {
    let overrides = Layer { auth_secret_file: Some(path.to_owned()), ..Layer::default() };
    let mut sources = Sources { file: None, overrides, ..Sources::default() };
    sources.origins.insert("auth_secret_file".into(), "--auth-secret-file".into());
    sources
}

#[test]
fn the_auth_secret_is_read_as_the_agent_reads_it_and_again_at_each_load() {
    let file = Scratch::new("secret", "0123456789abcdef-first\r\n");
    let sources = secret_sources(&file.0);
    let first = sources.load().unwrap();
    let secret = first.settings.server.connection.secret.clone().unwrap();
    assert_eq!(secret, Secret::from_file_text("0123456789abcdef-first\n").unwrap());
    assert_eq!(secret.as_bytes(), b"0123456789abcdef-first");
    assert_eq!(first.settings.auth_secret_file.as_deref(), Some(file.0.as_path()));

    std::fs::write(&file.0, "0123456789abcdef-second").unwrap();
    let second = sources.load().unwrap();
    assert_eq!(
        second.settings.server.connection.secret.as_ref().unwrap().as_bytes(),
        b"0123456789abcdef-second"
    );
    let changes = diff(&first, &second);
    assert_eq!(changes.len(), 1, "{changes:?}");
    let path = file.0.display().to_string();
    assert_eq!((changes[0].key.as_str(), changes[0].old.clone()), ("auth_secret_file", path.clone()));
    assert_eq!(changes[0].new, format!("{path} (new secret)"));
    assert!(!format!("{changes:?}").contains("abcdef"));
}

#[test]
fn a_secret_closes_the_legacy_door_unless_its_networks_are_given() {
    let file = Scratch::new("secret-door", "0123456789abcdef-door\n");
    let closed = secret_sources(&file.0).load().unwrap();
    assert!(closed.settings.server.connection.legacy_heartbeats.is_empty());
    let doors = open_doors(&closed);
    assert!(!doors.iter().any(|door| door.contains("heartbeats")), "{doors:?}");

    let mut listed = secret_sources(&file.0);
    listed.overrides.legacy_heartbeat_networks = Some("10.1.0.0/16".parse().unwrap());
    listed.origins.insert("legacy_heartbeat_networks".into(), "--legacy-heartbeat-networks".into());
    let open = listed.load().unwrap();
    let networks: Vec<String> = open.settings.server.connection.legacy_heartbeats.networks().collect();
    assert_eq!(networks, ["10.1.0.0/16"]);
    assert_eq!(open_doors(&open)[0], "legacy heartbeats (no proof of origin) accepted from 10.1.0.0/16");

    let without_secret = Sources::default().load().unwrap();
    assert!(!without_secret.settings.server.connection.legacy_heartbeats.is_empty(), "the default stays");
}

#[test]
fn a_short_or_unreadable_secret_is_named_with_its_origin() {
    let file = Scratch::new("short-secret", "too-short\n");
    let error = secret_sources(&file.0).load().unwrap_err().to_string();
    assert!(error.contains("`auth-secret-file`") && error.contains("at least 16 bytes"), "{error}");
    assert!(error.contains("--auth-secret-file") && error.contains(&file.0.display().to_string()), "{error}");

    let missing = file.0.with_extension("missing");
    let error = secret_sources(&missing).load().unwrap_err().to_string();
    assert!(error.contains("auth secret file") && error.contains("(set by --auth-secret-file)"), "{error}");
}

#[test]
fn the_auth_secret_is_never_rendered() {
    let file = Scratch::new("rendered-secret", "0123456789abcdef-hidden\n");
    let loaded = secret_sources(&file.0).load().unwrap();
    let text = render(&loaded.settings);
    assert!(!text.contains("hidden"), "{text}");
    assert!(text.contains(&format!("auth_secret_file = \"{}\"", file.0.display())), "{text}");
    assert!(!format!("{:?}", loaded.settings).contains("hidden"));
}

#[test]
fn the_tls_listener_is_put_together_from_every_source() {
    let file = Layer::parse("tls_cert = \"/etc/cert.pem\"\ntls_key = \"/etc/key.pem\"\n").unwrap();
    let overrides =
        Layer { tls_listen: Some(TlsListenAddr::On("0.0.0.0:8443".parse().unwrap())), ..Layer::default() };
    let tls = sources(overrides).merge(&file).unwrap().server.tls.unwrap();
    assert_eq!(tls.listen, "0.0.0.0:8443".parse().unwrap());
    assert_eq!((tls.cert.to_str(), tls.key.to_str()), (Some("/etc/cert.pem"), Some("/etc/key.pem")));

    // A higher source may turn it off again, but not leave the files behind.
    let off = Layer { tls_listen: Some(TlsListenAddr::Off), ..Layer::default() };
    let error = sources(off).merge(&file).unwrap_err().to_string();
    assert!(
        error.contains("`tls-cert`") && error.contains("`tls_cert` in /etc/loadwise/loadwise.toml"),
        "{error}"
    );
    assert_eq!(sources(Layer::default()).merge(&Layer::default()).unwrap().server.tls, None);
}

#[test]
fn half_a_tls_listener_is_named() {
    let cases = [
        ("tls_listen = \"0.0.0.0:8443\"\n", "`tls-listen`", "tls_cert and tls_key"),
        ("tls_listen = \"0.0.0.0:8443\"\ntls_cert = \"/c\"\n", "`tls-listen`", "needs tls_key"),
        ("tls_listen = \"0.0.0.0:8443\"\ntls_key = \"/k\"\n", "`tls-listen`", "needs tls_cert"),
        ("tls_key = \"/k\"\n", "`tls-key`", "remove tls_key"),
        ("tls_listen = \"off\"\ntls_cert = \"/c\"\ntls_key = \"/k\"\n", "`tls-cert`", "set tls_listen"),
    ];
    for (text, setting, reason) in cases {
        let file = Layer::parse(text).unwrap();
        let error = sources(Layer::default()).merge(&file).unwrap_err().to_string();
        assert!(error.contains(setting) && error.contains(reason), "{text}: {error}");
        assert!(error.contains("/etc/loadwise/loadwise.toml"), "{text}: {error}");
    }
    let error = Layer::parse("tls_listen = \"8443\"\n").unwrap_err();
    assert!(error.contains("tls_listen") && error.contains("off"), "{error}");
}

/// Sources with no file, the given overrides, and the open-file limit `limit`.
fn limited(overrides: Layer, origins: &[(&str, &str)], limit: u64) -> Sources {
    let origins = origins.iter().map(|(key, how)| ((*key).to_owned(), (*how).to_owned())).collect();
    Sources { overrides, origins, descriptor_limit: Some(limit), ..Sources::default() }
}

#[test]
fn budgets_left_at_their_default_shrink_to_fit_the_descriptor_limit() {
    let loaded = limited(Layer::default(), &[], 20_000).load().unwrap();
    assert_eq!(loaded.shrunk, vec![]);
    assert_eq!(loaded.settings, Settings::default());

    let overrides = Layer { max_pending_connections: Some(100), ..Layer::default() };
    let loaded = limited(overrides, &[("max_pending_connections", "--max-pending-connections")], 4_096)
        .load()
        .unwrap();
    let server = &loaded.settings.server;
    assert_eq!(server.max_pending_connections, 100, "an explicit value is kept");
    let admin = loaded.settings.admin.limits.max_connections;
    let total = server.dispatch.max_backends + server.max_client_connections + 100 + admin;
    assert!(total as u64 + RESERVED_DESCRIPTORS <= 4_096, "{total}");
    let names: Vec<_> = loaded.shrunk.iter().map(|shrunk| shrunk.setting).collect();
    assert_eq!(names, ["max-backends", "max-client-connections", "admin-max-connections"]);
    assert_eq!(loaded.shrunk[0].fitted, server.dispatch.max_backends);
    assert!(loaded.shrunk[0].to_string().starts_with("max-backends lowered from its default 10000 to "));
}

#[test]
fn the_admin_cap_counts_in_the_descriptor_budget_and_an_explicit_one_must_fit() {
    let overrides = Layer::parse("[admin]\nmax_connections = 100000\n").unwrap();
    let sources = limited(Layer::default(), &[], 20_000);
    let sources = Sources { file: Some("/etc/loadwise/loadwise.toml".into()), ..sources };
    let mut settings = sources.merge(&overrides).unwrap();
    let error = sources.fit_budgets(&mut settings, &overrides, 20_000).unwrap_err().to_string();
    assert!(error.contains("`admin-max-connections` = 100000"), "{error}");
    // With the admin API off its cap takes nothing.
    let off = Layer::parse("[admin]\nmax_connections = 100000\nlisten = \"off\"\n").unwrap();
    let mut settings = sources.merge(&off).unwrap();
    assert_eq!(sources.fit_budgets(&mut settings, &off, 20_000).unwrap(), vec![]);
}

#[test]
fn the_defaults_fit_a_hard_limit_of_20000() {
    let config = ServerConfig::default();
    let budgets = config.budgets();
    assert_eq!((budgets.backends, budgets.clients, budgets.pending), (10_000, 8_192, 1_024));
    let needed = (budgets.backends + budgets.clients + budgets.pending) as u64;
    assert!(needed + RESERVED_DESCRIPTORS <= 20_000);
    assert_eq!(config.connection.first_frame_timeout, Duration::from_secs(5));
}

#[test]
fn explicit_budgets_that_cannot_fit_are_refused_naming_them_and_their_source() {
    let file = Layer::parse("max_backends = 15000\n").unwrap();
    let overrides = Layer { max_client_connections: Some(8_192), ..Layer::default() };
    let sources =
        limited(overrides, &[("max_client_connections", "LOADWISE_MAX_CLIENT_CONNECTIONS")], 20_000);
    let sources = Sources { file: Some("/etc/loadwise/loadwise.toml".into()), ..sources };
    let mut settings = sources.merge(&file).unwrap();
    let error = sources.fit_budgets(&mut settings, &file, 20_000).unwrap_err().to_string();
    assert!(
        error.contains("`max-backends` = 15000 (set by `max_backends` in /etc/loadwise/loadwise.toml)"),
        "{error}"
    );
    assert!(
        error.contains("`max-client-connections` = 8192 (set by LOADWISE_MAX_CLIENT_CONNECTIONS)"),
        "{error}"
    );
    assert!(error.contains("open-file limit 20000"), "{error}");
    assert!(!error.contains("max-pending-connections"), "defaults are not to blame: {error}");
}

#[test]
fn the_retired_max_connections_is_refused_with_what_replaced_it() {
    let error = Layer::parse("ttl = \"3s\"\nmax_connections = 10000\n").unwrap_err();
    assert!(error.contains("line 2") && error.contains("`max_connections`"), "{error}");
    assert!(error.contains("replaced by max_client_connections"), "{error}");
    let error = Layer::parse("tll = \"3s\"\n").unwrap_err();
    assert!(!error.contains("replaced"), "{error}");
    assert!(SettingInfo::find("max_connections").is_none());
    assert_eq!(RETIRED_VARIABLES[0].0, "LOADWISE_MAX_CONNECTIONS");
}

#[test]
fn values_outside_their_bounds_are_named_with_their_source() {
    let file = Layer::parse("ticket_lifetime = \"400days\"\nmax_backends = 10000001\n").unwrap();
    let error = sources(Layer::default()).merge(&file).unwrap_err().to_string();
    assert!(
        error.contains("`max-backends`: 10000001 is out of bounds: must be from 1 to 10000000"),
        "{error}"
    );
    assert!(error.contains("(set by `max_backends` in /etc/loadwise/loadwise.toml)"), "{error}");

    let overrides = Layer { prior_cost: Some(f64::NAN), ..Layer::default() };
    let mut from_flag = sources(overrides);
    from_flag.origins.insert("prior_cost".into(), "--prior-cost".into());
    let error = from_flag.merge(&Layer::default()).unwrap_err().to_string();
    assert!(
        error.contains("`prior-cost`: NaN is out of bounds") && error.contains("--prior-cost"),
        "{error}"
    );

    let error = sources(Layer::default()).merge(&Layer::parse("ticket_lifetime = \"2days\"\n").unwrap());
    assert!(
        error
            .unwrap_err()
            .to_string()
            .contains("`ticket-lifetime`: 172800s is out of bounds: must be from 1s to 1day")
    );
}

#[test]
fn an_empty_inline_admin_token_is_refused() {
    let overrides =
        Layer { admin: AdminLayer { token: Some(" ".into()), ..AdminLayer::default() }, ..Layer::default() };
    let error = sources(overrides).merge(&Layer::default()).unwrap_err().to_string();
    assert!(error.contains("`admin-token`: must not be empty"), "{error}");
}
