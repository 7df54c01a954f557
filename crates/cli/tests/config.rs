//! Settings end to end with the real binary: the file, the environment and flags in
//! order of precedence, errors that name the setting, the example file, SIGHUP
//! reloads, the admin token from a file, and JSON logs.

mod process;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use loadwise_cli::settings::{CATALOG, Layer, Settings};
use loadwise_protocol::{Header, Heartbeat, IpField, cmd};
use loadwise_server::{Server, ServerConfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use process::{DEADLINE, Proc, Spawn, address_in, request, run_to_end, run_wrapped_to_end};

/// A scratch file, removed when the test ends.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("loadwise-config-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running `loadwise serve` and the addresses it listens on, killed when the test ends.
struct Serve {
    proc: Proc,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
}

impl Serve {
    /// Starts serve and waits until it listens, and its admin API too unless off.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut serve = Serve::spawn(args, env);
        let admin_off = args.contains(&"off");
        let end = Instant::now() + DEADLINE;
        while serve.addr.port() == 0 || (serve.admin.is_none() && !admin_off) {
            let line = match serve.next_line(end) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => panic!("serve logged nothing more within {DEADLINE:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("serve ended early"),
            };
            if line.contains("admin API listening") {
                serve.admin = Some(address_in(&line));
            } else if line.contains("loadwise_server: listening") {
                serve.addr = address_in(&line);
            }
        }
        serve
    }

    /// Starts serve without waiting for anything.
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Serve {
        let proc = Spawn::new(&[&["serve"], args].concat()).envs(env).env("RUST_LOG", "info").start();
        Serve { proc, addr: "0.0.0.0:0".parse().unwrap(), admin: None }
    }

    fn stop(&mut self) -> Option<i32> {
        self.signal("TERM");
        self.proc.wait_exit()
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = process::get(self.admin.expect("the admin API is on"), path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// The process itself: its log lines and signals.
impl Deref for Serve {
    type Target = Proc;

    fn deref(&self) -> &Proc {
        &self.proc
    }
}

/// The settings `config show` prints for these options, parsed back.
fn shown(args: &[&str], env: &[(&str, &str)]) -> Settings {
    let out = run_to_end(&[&["config", "show"], args].concat(), env);
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut settings = Settings::default();
    Layer::parse(&out.stdout).unwrap().apply(&mut settings).unwrap();
    settings
}

fn heartbeat(stream: &mut TcpStream, mem: u8) {
    let frame = Heartbeat { mem, ip: IpField::from_text("10.0.0.9").unwrap(), port: 7009 }.encode();
    stream.write_all(&frame).unwrap();
}

/// Polls the backend list until `check` holds, returning the last list.
fn backends_until(serve: &Serve, check: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let list = serve.get("/v1/services/default/backends");
        if check(&list) {
            return list;
        }
        assert!(Instant::now() < end, "never saw the expected backends; last: {list}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_example_file_sets_every_default() {
    let out = run_to_end(&["config", "example"], &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut settings = Settings::default();
    Layer::parse(&out.stdout).unwrap().apply(&mut settings).unwrap();
    assert_eq!(settings, Settings::default());
    for info in CATALOG {
        assert!(out.stdout.contains(&info.env()), "the example does not mention {}", info.env());
    }
    // Serving from the example file changes nothing.
    let example = TempFile::new("example.toml", &out.stdout);
    assert_eq!(shown(&["--config", example.path()], &[]), Settings::default());
    assert_eq!(shown(&[], &[]), Settings::default());
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file() {
    let file = TempFile::new(
        "precedence.toml",
        "ttl = \"5s\"\npolicy = \"p2c\"\nmax_backends = 7\nmax_clock_skew = \"9s\"\n",
    );
    let env = [("LOADWISE_TTL", "6s"), ("LOADWISE_POLICY", "round-robin"), ("LOADWISE_MAX_CLOCK_SKEW", "8s")];
    let flags = ["--config", file.path(), "--policy", "original"];
    let settings = shown(&flags, &env);
    let dispatch = &settings.server.dispatch;
    assert_eq!(dispatch.max_backends, 7, "from the file");
    assert_eq!(dispatch.ttl, Duration::from_secs(6), "the environment over the file");
    assert_eq!(dispatch.max_clock_skew, Duration::from_secs(8), "the environment over the file");
    assert_eq!(dispatch.policy.name(), "original", "the flag over the environment");
    assert_eq!(settings.server.max_client_connections, 8_192, "the default");

    // The running dispatcher has the same settings; LOADWISE_CONFIG names the file.
    let env = [env.as_slice(), &[("LOADWISE_CONFIG", file.path())]].concat();
    let mut serve = Serve::start(
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--policy", "original"],
        &env,
    );
    let list = serve.get("/v1/services/default/backends");
    assert_eq!(list["ttl_seconds"], 6.0, "{list}");
    assert_eq!(list["policy"], "original", "{list}");
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn scoring_follows_the_same_precedence() {
    let file = TempFile::new("scoring.toml", "scoring = \"cpu\"\ndefault_service = \"game\"\n");
    let scoring = |args: &[&str], env: &[(&str, &str)]| {
        let settings = shown(&[&["--config", file.path()], args].concat(), env);
        settings.server.dispatch.scoring.to_string()
    };
    assert_eq!(scoring(&[], &[]), "cpu", "from the file");
    let env = [("LOADWISE_SCORING", "max(memory, cpu)")];
    assert_eq!(scoring(&[], &env), "max(memory, cpu)", "the environment over the file");
    assert_eq!(scoring(&["--scoring", "0.5*connections"], &env), "0.5*connections", "the flag over both");
    let settings = shown(&["--config", file.path(), "--default-service", "chat"], &[]);
    assert_eq!(settings.server.dispatch.default_service.as_str(), "chat");

    let out = run_to_end(&["config", "show"], &[("LOADWISE_SCORING", "max(memory")]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--scoring"), "{}", out.stderr);
}

#[test]
fn service_scoring_merges_the_file_the_environment_and_flags_service_by_service() {
    let file = TempFile::new(
        "services.toml",
        "[services.search]\nscoring = \"cpu\"\n[services.video]\nscoring = \"memory\"\n",
    );
    let scorings = |args: &[&str], env: &[(&str, &str)]| {
        let settings = shown(&[&["--config", file.path()], args].concat(), env);
        let all = settings.server.dispatch.service_scoring.iter();
        all.map(|(name, scoring)| format!("{name}={scoring}")).collect::<Vec<_>>()
    };
    assert_eq!(scorings(&[], &[]), ["search=cpu", "video=memory"], "from the file");
    let env = [("LOADWISE_SERVICE_SCORING", "video=0.5*connections;chat=connections")];
    assert_eq!(
        scorings(&[], &env),
        ["chat=connections", "search=cpu", "video=0.5*connections"],
        "the environment over the file, service by service"
    );
    assert_eq!(
        scorings(&["--service-scoring", "search=max(memory, cpu)"], &env),
        ["search=max(memory, cpu)", "video=memory"],
        "the flag over the environment as a whole, and over the file service by service"
    );

    // Errors name the setting: the flag, or the file's line.
    let out = run_to_end(&["config", "show", "--service-scoring", "my game=cpu"], &[]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--service-scoring") && out.stderr.contains("\"my game\""), "{}", out.stderr);
    file.write("[services.\"my game\"]\nscoring = \"cpu\"\n");
    let out = run_to_end(&["config", "show", "--config", file.path()], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let named = out.stderr.contains("[services.\"my game\"]") && out.stderr.contains("not a service name");
    assert!(named && out.stderr.contains(file.path()), "{}", out.stderr);
}

#[test]
fn the_tls_settings_go_together_from_any_source() {
    let file = TempFile::new("tls.toml", "tls_cert = \"/etc/cert.pem\"\ntls_key = \"/etc/key.pem\"\n");
    let settings = shown(&["--config", file.path()], &[("LOADWISE_TLS_LISTEN", "127.0.0.1:8443")]);
    let tls = settings.server.tls.expect("a whole TLS listener");
    assert_eq!(tls.listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(tls.cert, PathBuf::from("/etc/cert.pem"));

    let out = run_to_end(&["serve", "--config", file.path(), "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("`tls-cert`") && out.stderr.contains(file.path()), "{}", out.stderr);
    let out = run_to_end(&["config", "show", "--tls-listen", "127.0.0.1:8443", "--tls-key", "/k"], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("`tls-listen`") && out.stderr.contains("tls_cert"), "{}", out.stderr);
}

#[test]
fn unknown_keys_in_the_file_are_named() {
    let file = TempFile::new("unknown.toml", "listen = \"127.0.0.1:0\"\ntll = \"5s\"\n");
    let out = run_to_end(&["serve", "--config", file.path(), "--admin-listen", "off"], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("`tll`") && out.stderr.contains(file.path()), "{}", out.stderr);
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
}

#[test]
fn bad_values_name_the_setting_and_where_it_was_set() {
    let file = TempFile::new("zero-ttl.toml", "ttl = \"0s\"\n");
    let out = run_to_end(&["serve", "--config", file.path(), "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("`ttl`") && out.stderr.contains(file.path()), "{}", out.stderr);

    file.write("frame_timeout = \"3 parsecs\"\n");
    let out = run_to_end(&["config", "show", "--config", file.path()], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("frame_timeout") && out.stderr.contains(file.path()), "{}", out.stderr);

    let out = run_to_end(&["config", "show"], &[("LOADWISE_MAX_CLIENT_CONNECTIONS", "0")]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let named = out.stderr.contains("`max-client-connections`")
        && out.stderr.contains("LOADWISE_MAX_CLIENT_CONNECTIONS");
    assert!(named, "{}", out.stderr);

    let out = run_to_end(&["config", "show", "--admin-listen", "nowhere"], &[]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--admin-listen"), "{}", out.stderr);
}

#[test]
fn the_retired_max_connections_is_refused_from_every_source() {
    for command in [&["config", "show"][..], &["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"]] {
        let out = run_to_end(&[command, &["--max-connections", "10"]].concat(), &[]);
        assert_eq!(out.code, Some(1), "{out:?}");
        let explained = out.stderr.contains("--max-connections is no longer accepted")
            && out.stderr.contains("replaced by max_client_connections");
        assert!(explained, "{}", out.stderr);
    }

    let file = TempFile::new("retired.toml", "max_connections = 10000\n");
    let out = run_to_end(&["serve", "--config", file.path(), "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let explained =
        out.stderr.contains("`max_connections`") && out.stderr.contains("replaced by max_client_connections");
    assert!(explained && out.stderr.contains(file.path()), "{}", out.stderr);

    // A variable would otherwise be ignored in silence.
    for command in [&["config", "show"][..], &["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"]] {
        let out = run_to_end(command, &[("LOADWISE_MAX_CONNECTIONS", "10000")]);
        assert_eq!(out.code, Some(1), "{out:?}");
        let explained = out.stderr.contains("LOADWISE_MAX_CONNECTIONS is no longer read")
            && out.stderr.contains("max_client_connections");
        assert!(explained, "{}", out.stderr);
    }
}

/// Runs the binary with its open-file limit, soft and hard, lowered to `limit`.
fn with_descriptor_limit(limit: u64, args: &[&str]) -> process::Finished {
    let script = format!("ulimit -n {limit} && exec \"$0\" \"$@\"");
    run_wrapped_to_end(&["sh", "-c", &script], args, &[])
}

#[test]
fn budgets_left_at_their_default_shrink_to_the_open_file_limit_with_a_warning() {
    let out = with_descriptor_limit(4096, &["config", "show"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut settings = Settings::default();
    Layer::parse(&out.stdout).unwrap().apply(&mut settings).unwrap();
    let server = &settings.server;
    let budgets =
        [server.dispatch.max_backends, server.max_client_connections, server.max_pending_connections];
    assert!(budgets.iter().sum::<usize>() <= 4096 - 256, "{budgets:?}");
    for (setting, default) in
        [("max-backends", 10_000), ("max-client-connections", 8_192), ("max-pending-connections", 1_024)]
    {
        let warning = format!("warning: {setting} lowered from its default {default} to ");
        assert!(out.stderr.contains(&warning), "{}", out.stderr);
    }

    // serve itself warns at start (and here stops at once: its port is taken).
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let out = with_descriptor_limit(4096, &["serve", "--listen", &listen, "--admin-listen", "off"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("max-backends lowered from its default 10000"), "{}", out.stderr);
}

#[test]
fn explicit_budgets_that_cannot_fit_are_refused_at_start_and_at_reload() {
    let out = with_descriptor_limit(4096, &["config", "show", "--max-client-connections", "5000"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let named = out.stderr.contains("`max-client-connections` = 5000 (set by --max-client-connections)");
    assert!(named && out.stderr.contains("open-file limit 4096"), "{}", out.stderr);
    let out = with_descriptor_limit(
        4096,
        &["serve", "--listen", "127.0.0.1:0", "--max-client-connections", "5000"],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("`max-client-connections` = 5000"), "{}", out.stderr);

    let file = TempFile::new("budgets.toml", "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"off\"\n");
    let mut serve = Serve::start(&["--config", file.path(), "--admin-listen", "off"], &[]);
    // The highest value the setting's bounds allow: more than any open-file limit holds
    // (Linux caps it at 2^20 unless fs.nr_open is raised).
    file.write("listen = \"127.0.0.1:0\"\nmax_client_connections = 10000000\n");
    serve.signal("HUP");
    let refused = serve.wait_for_line("reload refused");
    let named = refused.contains("`max-client-connections` = 10000000") && refused.contains(file.path());
    assert!(named, "{refused}");
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn a_taken_admin_port_is_reported() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap().to_string();
    let out = run_to_end(&["serve", "--listen", "127.0.0.1:0", "--admin-listen", &admin], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(&admin) && out.stderr.contains("--admin-listen"), "{}", out.stderr);
}

#[test]
fn sighup_applies_live_settings_and_keeps_connections() {
    let file = TempFile::new(
        "reload.toml",
        "listen = \"127.0.0.1:0\"\nttl = \"3s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let mut serve = Serve::start(&["--config", file.path()], &[]);
    let mut backend = TcpStream::connect(serve.addr).unwrap();
    heartbeat(&mut backend, 40);
    let before = backends_until(&serve, |list| list["backends"].as_array().is_some_and(|all| all.len() == 1));
    let id = before["backends"][0]["id"].clone();

    file.write(
        "listen = \"127.0.0.1:1\"\nttl = \"7s\"\npolicy = \"p2c\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [services.search]\nscoring = \"cpu\"\n",
    );
    serve.signal("HUP");
    let log = serve.lines_until("configuration reloaded").join("\n");
    assert!(log.contains("setting changed setting=policy old=least-loaded new=p2c"), "{log}");
    assert!(log.contains("setting changed setting=services.search.scoring old=unset new=cpu"), "{log}");
    assert!(log.contains("setting changed setting=ttl old=3s new=7s"), "{log}");
    assert!(log.contains("needs a restart") && log.contains("setting=listen"), "{log}");
    assert!(!log.contains("backend removed"), "{log}");

    // The backend's connection survived: the same id, heard from again.
    heartbeat(&mut backend, 41);
    let after = backends_until(&serve, |list| list["backends"][0]["reported"]["mem_percent"] == 41);
    assert_eq!(after["backends"][0]["id"], id, "{after}");
    assert_eq!((after["policy"].as_str(), after["ttl_seconds"].as_f64()), (Some("p2c"), Some(7.0)));

    // An invalid file is refused and the settings in force stay.
    file.write("ttl = \"0s\"\n");
    serve.signal("HUP");
    let refused = serve.wait_for_line("reload refused");
    assert!(refused.contains("`ttl`") && refused.contains(file.path()), "{refused}");
    file.write("ttl = [\n");
    serve.signal("HUP");
    let refused = serve.wait_for_line("reload refused");
    assert!(refused.contains(file.path()), "{refused}");
    let still = serve.get("/v1/services/default/backends");
    assert_eq!((still["policy"].as_str(), still["ttl_seconds"].as_f64()), (Some("p2c"), Some(7.0)));
    assert_eq!(still["backends"][0]["id"], id, "{still}");
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn the_admin_token_is_read_from_its_file_and_again_on_reload() {
    let token = TempFile::new("token", "first-secret\n");
    let mut serve = Serve::start(
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--admin-token-file", token.path()],
        &[],
    );
    let mut backend = TcpStream::connect(serve.addr).unwrap();
    heartbeat(&mut backend, 10);
    let list = backends_until(&serve, |list| list["backends"].as_array().is_some_and(|all| all.len() == 1));
    let drain = format!("/v1/backends/{}/drain", list["backends"][0]["id"]);
    let admin = serve.admin.unwrap();
    assert_eq!(request(admin, "POST", &drain, Some("first-secret")).0, 200);

    token.write("second-secret\n");
    serve.signal("HUP");
    let line = serve.wait_for_line("setting=admin.token");
    assert!(line.contains("changed (hidden)") && !line.contains("secret"), "{line}");
    serve.wait_for_line("configuration reloaded");
    assert_eq!(request(admin, "POST", &drain, Some("first-secret")).0, 401);
    assert_eq!(request(admin, "POST", &drain, Some("second-secret")).0, 200);
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn the_auth_secret_is_read_from_its_file_again_on_reload_and_never_shown() {
    let secret = TempFile::new("auth-secret", "first-secret-0123456789\n");
    let out = run_to_end(&["config", "show", "--auth-secret-file", secret.path()], &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(&format!("auth_secret_file = \"{}\"", secret.path())), "{}", out.stdout);
    assert!(!out.stdout.contains("first-secret"), "{}", out.stdout);

    let args = ["--listen", "127.0.0.1:0", "--admin-listen", "off", "--auth-secret-file", secret.path()];
    let mut serve = Serve::start(&args, &[]);
    secret.write("second-secret-0123456789\n");
    serve.signal("HUP");
    let log = serve.lines_until("configuration reloaded").join("\n");
    assert!(log.contains("setting=auth_secret_file") && log.contains("(new secret)"), "{log}");
    assert!(!log.contains("second-secret"), "{log}");

    // A short secret is refused, and the one in force stays: writing it back is no change.
    secret.write("short\n");
    serve.signal("HUP");
    let refused = serve.wait_for_line("reload refused");
    assert!(refused.contains("`auth-secret-file`") && refused.contains("--auth-secret-file"), "{refused}");
    secret.write("second-secret-0123456789\n");
    serve.signal("HUP");
    let log = serve.lines_until("configuration reloaded").join("\n");
    assert!(!log.contains("setting=auth_secret_file"), "{log}");

    std::fs::remove_file(&secret.0).unwrap();
    serve.signal("HUP");
    let refused = serve.wait_for_line("reload refused");
    assert!(
        refused.contains("cannot read the auth secret file") && refused.contains(secret.path()),
        "{refused}"
    );
    assert_eq!(serve.stop(), Some(0));

    // At start, a short secret stops serve, naming the setting and where it was set.
    secret.write("short\n");
    let out = run_to_end(
        &["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"],
        &[("LOADWISE_AUTH_SECRET_FILE", secret.path())],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("`auth-secret-file`") && out.stderr.contains("LOADWISE_AUTH_SECRET_FILE"),
        "{}",
        out.stderr
    );
}

#[test]
fn logs_can_be_json_lines() {
    let env = [("LOADWISE_LOG_FORMAT", "json")];
    let mut serve = Serve::spawn(&["--listen", "127.0.0.1:0", "--admin-listen", "off"], &env);
    serve.wait_for_line("\"listening\"");
    assert_eq!(serve.stop(), Some(0));
    let line = serve.wait_for_line("stopped");
    let event: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    assert_eq!(
        (event["level"].as_str(), event["message"].as_str()),
        (Some("INFO"), Some("stopped")),
        "{event}"
    );
}

#[test]
fn the_configuration_guide_lists_every_setting() {
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md")).unwrap();
    for info in CATALOG {
        let file_key = info.file_key();
        for needle in [format!("`--{}`", info.flag()), format!("`{}`", info.env()), format!("`{file_key}`")] {
            assert!(guide.contains(&needle), "docs/configuration.md does not mention {needle}");
        }
    }
}

#[test]
fn the_deployment_files_hold_valid_settings() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/loadwise.toml");
    let settings = shown(&["--config", file], &[]);
    assert_eq!(settings.server.listen, "0.0.0.0:8523".parse().unwrap());

    let help = run_to_end(&["agent", "--help"], &[]).stdout;
    let env_file =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/agent.env.example"))
            .unwrap();
    for line in env_file.lines().map(|line| line.trim_start_matches('#')) {
        if let Some((name, _)) = line.split_once('=').filter(|(name, _)| name.starts_with("LOADWISE_AGENT_"))
        {
            assert!(help.contains(&format!("env: {name}")), "`loadwise agent` has no {name}");
        }
    }
}

/// A frame of a kind the dispatcher skips, `len` bytes long.
fn skipped_frame(len: u16) -> Vec<u8> {
    let mut frame = Header { len, cmd: cmd::REGISTER }.to_bytes().to_vec();
    frame.resize(usize::from(len), 0);
    frame
}

#[tokio::test]
async fn a_reload_applies_connection_limits_to_open_connections() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::with_listener(listener, ServerConfig::default());
    let (reload, dispatcher, wire) = (server.reload_handle(), server.dispatcher(), server.wire_stats());
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server.run(stop.clone().cancelled_owned()));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();

    // A 100-byte frame passes under the default limit...
    conn.write_all(&skipped_frame(100)).await.unwrap();
    let stats = || wire.snapshot();
    let end = Instant::now() + DEADLINE;
    while stats().skipped_frames < 1 {
        assert!(Instant::now() < end, "the frame was never read");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...and closes the same connection once a reload lowers the limit.
    let mut lower = ServerConfig::default();
    lower.connection.max_frame_len = 64;
    assert_eq!(reload.apply(&lower), Ok(()));
    conn.write_all(&skipped_frame(100)).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection stayed open");
    assert_eq!(stats().protocol_errors, 1);

    // The legacy heartbeat networks follow a reload on an open connection too: a
    // loopback backend registers, then its next heartbeat after the reload that
    // leaves loopback out is refused.
    let mut backend = tokio::net::TcpStream::connect(addr).await.unwrap();
    let heartbeat = Heartbeat { mem: 20, ip: IpField::from_text("10.0.0.9").unwrap(), port: 7009 }.encode();
    backend.write_all(&heartbeat).await.unwrap();
    while dispatcher.backend_count() < 1 {
        assert!(Instant::now() < end + DEADLINE, "the backend never registered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elsewhere = ServerConfig {
        connection: loadwise_server::ConnectionLimits {
            legacy_heartbeats: "10.0.0.0/8".parse().unwrap(),
            ..loadwise_server::ConnectionLimits::default()
        },
        ..ServerConfig::default()
    };
    assert_eq!(reload.apply(&elsewhere), Ok(()));
    backend.write_all(&heartbeat).await.unwrap();
    while stats().heartbeats_not_allowed < 1 {
        assert!(Instant::now() < end + DEADLINE, "the reloaded networks never applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Invalid settings are refused and change nothing.
    lower.connection.max_frame_len = 10;
    lower.dispatch.ttl = Duration::from_secs(9);
    assert_eq!(reload.apply(&lower).unwrap_err().setting, "max-frame-len");
    assert_eq!(dispatcher.ttl(), Duration::from_secs(3));
    stop.cancel();
    serving.await.unwrap();
}

#[tokio::test]
async fn a_reloaded_auth_secret_signs_the_next_tickets() {
    use loadwise_agent::AgentConfig;
    use loadwise_cli::settings::Sources;
    use loadwise_protocol::v2::ServiceName;

    let secret = TempFile::new("reloaded-secret", "the first secret, 26 bytes\n");
    let overrides = Layer {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        auth_secret_file: Some(secret.0.clone()),
        ..Layer::default()
    };
    let sources = Sources { overrides, ..Sources::default() };
    let server = Server::bind(sources.load().unwrap().settings.server).await.unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let (reload, wire) = (server.reload_handle(), server.wire_stats());
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server.run(stop.clone().cancelled_owned()));

    // A backend proves the first secret, and tickets are signed with it.
    let service = ServiceName::new("game").unwrap();
    let first = loadwise_agent::Secret::from_file_text("the first secret, 26 bytes").unwrap();
    let config = AgentConfig {
        interval: Duration::from_millis(100),
        secret: Some(first.clone()),
        ..AgentConfig::new(addr.clone(), "10.0.0.7:7007".parse().unwrap()).v2(service.clone())
    };
    let backend_id = config.backend_id;
    let stop_agent = CancellationToken::new();
    let agent = tokio::spawn(loadwise_agent::run(config, || Ok(30), stop_agent.clone().cancelled_owned()));
    let end = Instant::now() + DEADLINE;
    while wire.snapshot().v2_registrations < 1 {
        assert!(Instant::now() < end, "the backend never registered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ticket = || async {
        let picked = loadwise_client::pick_service(&addr, &service, DEADLINE).await.unwrap();
        assert_eq!(picked.backend_id, backend_id);
        picked.ticket
    };
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(
        loadwise_protocol::ticket::verify(first.as_bytes(), ticket().await, &service, backend_id, now())
            .is_ok()
    );

    // The file is read again at the next load; applied, it signs the next tickets, and
    // the backend registered with the first secret stays.
    secret.write("the second secret, 27 bytes\n");
    let reloaded = sources.load().unwrap();
    assert_eq!(reload.apply(&reloaded.settings.server), Ok(()));
    let next = ticket().await;
    assert!(
        loadwise_protocol::ticket::verify(b"the second secret, 27 bytes", &next, &service, backend_id, now())
            .is_ok()
    );
    assert!(loadwise_protocol::ticket::verify(first.as_bytes(), &next, &service, backend_id, now()).is_err());

    // A short secret is not loaded at all, so nothing can apply it.
    secret.write("short\n");
    let error = sources.load().unwrap_err().to_string();
    assert!(error.contains("`auth-secret-file`") && error.contains("at least 16 bytes"), "{error}");

    stop_agent.cancel();
    agent.await.unwrap().unwrap();
    stop.cancel();
    serving.await.unwrap();
}

/// A repository file's text, or, with `LOADWISE_BLESS=1`, writes `expected` there first.
fn blessed(relative: &str, expected: impl FnOnce(&str) -> String) -> (String, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative);
    let text = std::fs::read_to_string(&path).unwrap();
    let expected = expected(&text);
    if std::env::var_os("LOADWISE_BLESS").is_some() && text != expected {
        std::fs::write(&path, &expected).unwrap();
        return (expected.clone(), expected);
    }
    (text, expected)
}

#[test]
fn the_settings_tables_of_the_docs_are_written_from_the_definitions() {
    use loadwise_cli::settings::docs;
    for (file, table) in
        [("docs/configuration.md", docs::configuration_table()), ("README.md", docs::readme_table())]
    {
        let (text, expected) = blessed(file, |text| {
            docs::with_table(text, &table).unwrap_or_else(|| panic!("{file} lacks the table's markers"))
        });
        assert!(
            text == expected,
            "{file}'s settings table differs from the definitions; LOADWISE_BLESS=1 rewrites it to:\n{table}"
        );
    }
}

#[test]
fn the_deployment_file_is_the_example_listening_on_every_interface() {
    const HEADER: &str = "\
# /etc/loadwise/loadwise.toml, as read by deploy/loadwise-serve.service. It is the
# output of `loadwise config example` with one change: the dispatcher listens on every
# interface (backends and clients are on other hosts). The admin API stays on loopback.
#
";
    let example = loadwise_cli::settings::example();
    let deployed = example.replacen("\nlisten = \"127.0.0.1:8523\"\n", "\nlisten = \"0.0.0.0:8523\"\n", 1);
    assert_ne!(deployed, example, "the example's listen line moved");
    let (text, expected) = blessed("deploy/loadwise.toml", |_| format!("{HEADER}{deployed}"));
    assert!(text == expected, "deploy/loadwise.toml is not the example; LOADWISE_BLESS=1 rewrites it");
}
