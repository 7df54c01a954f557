//! The core speaks its own types: its sources must not name the protocol's wire
//! structs (frames, replies, error codes, the legacy address field).
//!
//! The names a file takes from `loadwise_protocol` (by `use`, by a qualified path, or
//! through the `v2::` module) are collected from its text, test modules left out, and
//! compared with the shared vocabulary the core may use: validated names and the
//! configuration checks. No file may name anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the core may take from the protocol crate: names validated alike on both
/// sides, and the configuration checks; no frame, reply, code or address field.
const VOCABULARY: &[&str] = &[
    "v2",
    "config",
    "self",
    "ServiceName",
    "HostName",
    "MetricName",
    "NameError",
    "ConfigError",
    "ensure",
    "entropy",
];

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the core's sources are readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs")
            && !path.to_string_lossy().ends_with("tests.rs")
        {
            found.push(path);
        }
    }
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The identifiers of the path or `use` tree that `text` starts with: a path ends at
/// its first type-like (capitalised) segment, a tree at its closing brace.
fn path_names(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let (mut names, mut depth, mut at) = (Vec::new(), 0usize, 0);
    loop {
        let start = at;
        while at < bytes.len() && is_ident_byte(bytes[at]) {
            at += 1;
        }
        if at > start {
            let name = &text[start..at];
            names.push(name.to_owned());
            // `v2::State::Ready`: the variant is not another name taken.
            if depth == 0 && name.starts_with(|c: char| c.is_ascii_uppercase()) {
                break;
            }
        }
        if text[at..].starts_with("::") {
            at += 2;
            continue;
        }
        match bytes.get(at) {
            Some(b'{') => depth += 1,
            Some(b'}') if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            Some(byte) if depth > 0 && (*byte == b',' || byte.is_ascii_whitespace()) => {}
            _ => break,
        }
        at += 1;
    }
    names
}

/// The names a source takes from the protocol crate, outside its test module.
fn wire_names(source: &str) -> BTreeSet<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let mut names = BTreeSet::new();
    for prefix in ["loadwise_protocol::", "v2::"] {
        for (at, _) in code.match_indices(prefix) {
            // `v2::` counts only as a path start, not inside `loadwise_protocol::v2::`.
            let before = code[..at].bytes().next_back();
            if prefix == "v2::" && before.is_some_and(|b| is_ident_byte(b) || b == b':') {
                continue;
            }
            names.extend(path_names(&code[at + prefix.len()..]));
        }
    }
    names.retain(|name| !VOCABULARY.contains(&name.as_str()));
    names
}

#[test]
fn core_sources_name_no_protocol_wire_type() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let files_seen = files.len();
    let mut found = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source");
        let names = wire_names(&text);
        if !names.is_empty() {
            let relative = file.strip_prefix(&root).expect("under src").to_string_lossy().replace('\\', "/");
            found.insert(relative, names);
        }
    }
    assert!(
        found.is_empty(),
        "core sources name protocol wire types: {found:?}; use the core's own types (crate::model) \
         and let the protocol's session translate"
    );
    // A scan that saw no file would pass vacuously.
    assert!(files_seen > 20, "only {files_seen} core sources found");
}

#[test]
fn the_scan_sees_imports_paths_and_the_v2_module() {
    let source = "use loadwise_protocol::{IpField, v2::{self, ServiceName}};\n\
                  fn f(e: v2::ErrorCode, r: loadwise_protocol::LoginReply) {}\n\
                  #[cfg(test)]\nuse loadwise_protocol::Message;";
    let names: Vec<_> = wire_names(source).into_iter().collect();
    assert_eq!(names, ["ErrorCode", "IpField", "LoginReply"]);
}
