//! The checked-in C header and pkg-config file match the code: `include/loadwise.h` is
//! what cbindgen generates from `src/ffi/` now, and `loadwise.pc.in` carries this
//! crate's version.
//!
//! After changing the C ABI, regenerate the header with
//! `LOADWISE_BLESS=1 cargo test -p loadwise --test header` and commit it.

use std::path::{Path, PathBuf};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../../include/loadwise.h")
}

/// The header as cbindgen makes it from the source, with the crate's cbindgen.toml.
fn generate() -> String {
    let config =
        cbindgen::Config::from_file(crate_dir().join("cbindgen.toml")).expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir().join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn the_checked_in_header_is_what_cbindgen_generates() {
    let fresh = generate();
    let path = header_path();
    if std::env::var_os("LOADWISE_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/loadwise.h");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != fresh {
        let first_difference = checked_in
            .lines()
            .zip(fresh.lines())
            .position(|(old, new)| old != new)
            .unwrap_or_else(|| checked_in.lines().count().min(fresh.lines().count()));
        panic!(
            "include/loadwise.h differs from what src/ffi/ generates (first at line {}).\n\
             Regenerate it with `LOADWISE_BLESS=1 cargo test -p loadwise --test header` and commit it.",
            first_difference + 1
        );
    }
}

#[test]
fn the_header_declares_every_function_the_library_exports() {
    let header = generate();
    for function in [
        "lw_version",
        "lw_abi_version",
        "lw_last_error_message",
        "lw_pick",
        "lw_pick_ex",
        "lw_picked_addr",
        "lw_picked_backend_id",
        "lw_picked_ticket",
        "lw_picked_dispatcher",
        "lw_picked_free",
        "lw_connect",
        "lw_ticket_verify",
        "lw_ticket_verify_at",
        "lw_secret_read_file",
        "lw_agent_start",
        "lw_agent_set_metric",
        "lw_agent_remove_metric",
        "lw_agent_set_connections",
        "lw_agent_set_draining",
        "lw_agent_set_healthy",
        "lw_agent_backend_id",
        "lw_agent_stop",
        "lw_agent_free",
    ] {
        let declared = header
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .any(|line| line.contains(&format!(" {function}(")) || line.contains(&format!("*{function}(")));
        assert!(declared, "{function} is missing from the header");
    }
    assert!(header.contains("#define LW_ABI_VERSION 1"), "the ABI version is a macro");
}

#[test]
fn the_pkg_config_template_carries_the_crate_version() {
    let template = std::fs::read_to_string(crate_dir().join("loadwise.pc.in")).expect("loadwise.pc.in");
    let version = format!("Version: {}", env!("CARGO_PKG_VERSION"));
    assert!(template.lines().any(|line| line == version), "loadwise.pc.in must say {version:?}");
    assert!(template.contains("prefix=@PREFIX@"), "the prefix is a placeholder the installer fills");
}
