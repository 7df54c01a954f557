//! The deployment files in `deploy/` against the binary: every flag and variable
//! they use exists in its `--help`, the Kubernetes manifests parse and agree with
//! each other, and their probes and scrape path are what the admin API serves.

mod process;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_yaml_ng::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every manifest under `deploy/kubernetes/`, by file name, each a YAML document.
fn manifests() -> Vec<(String, Value)> {
    let dir = deploy_dir().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the manifests are missing from {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let value =
                serde_yaml_ng::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            (path.file_name().unwrap().to_string_lossy().into_owned(), value)
        })
        .collect()
}

/// The one manifest of `kind`.
fn of_kind<'a>(manifests: &'a [(String, Value)], kind: &str) -> &'a Value {
    let mut found = manifests.iter().filter(|(_, value)| value["kind"].as_str() == Some(kind));
    let (_, value) = found.next().unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"));
    assert!(found.next().is_none(), "more than one {kind}");
    value
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("not a string: {value:?}"))
}

/// The containers of a Pod or of a Deployment's pod template.
fn containers(manifest: &Value) -> &Vec<Value> {
    let spec = match manifest["kind"].as_str() {
        Some("Pod") => &manifest["spec"],
        _ => &manifest["spec"]["template"]["spec"],
    };
    spec["containers"].as_sequence().expect("containers")
}

/// The loadwise containers of every manifest: their arguments (the subcommand first).
fn loadwise_args(manifests: &[(String, Value)]) -> Vec<(String, Vec<String>)> {
    let mut all = Vec::new();
    for (file, manifest) in manifests {
        if !matches!(manifest["kind"].as_str(), Some("Pod" | "Deployment")) {
            continue;
        }
        for container in containers(manifest) {
            if !text(&container["image"]).starts_with("loadwise") {
                continue;
            }
            let args = container["args"].as_sequence().unwrap_or_else(|| panic!("{file}: no args"));
            all.push((file.clone(), args.iter().map(|arg| text(arg).to_owned()).collect()));
        }
    }
    all
}

/// `loadwise SUBCOMMAND --help`.
fn help(subcommand: &str) -> String {
    let out = process::run_to_end(&[subcommand, "--help"], &[]);
    assert!(out.success(), "{out:?}");
    out.stdout
}

/// The `--flags` a text uses: in argument lists and command lines.
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for word in text.split(|c: char| c.is_whitespace() || c == '"' || c == '[' || c == ']' || c == ',') {
        if let Some(flag) = word.strip_prefix("--") {
            let name: String = flag.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            if !name.is_empty() {
                flags.insert(format!("--{name}"));
            }
        }
    }
    flags
}

/// The `LOADWISE_…` variables a text names.
fn variables_in(text: &str) -> BTreeSet<String> {
    let mut variables = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("LOADWISE_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        variables.insert(name.trim_end_matches('_').to_owned());
        rest = &rest[at + "LOADWISE_".len()..];
    }
    variables
}

#[test]
fn every_flag_and_variable_in_the_deployment_files_exists() {
    let helps: Vec<(&str, String)> =
        ["serve", "agent", "pick"].into_iter().map(|sub| (sub, help(sub))).collect();
    let help_of = |sub: &str| &helps.iter().find(|(name, _)| *name == sub).unwrap().1;
    let has_variable = |name: &str| {
        helps.iter().any(|(_, help)| {
            help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]"))
        })
    };

    // The manifests' containers: each flag in the help of its own subcommand.
    let manifests = manifests();
    let containers = loadwise_args(&manifests);
    assert!(
        containers.iter().any(|(_, args)| args[0] == "serve")
            && containers.iter().any(|(_, args)| args[0] == "agent")
    );
    for (file, args) in &containers {
        let help = help_of(&args[0]);
        for flag in flags_in(&args[1..].join(" ")) {
            assert!(help.contains(&format!("{flag} ")), "{file}: {} has no {flag}", args[0]);
        }
    }

    // Every file, comments included (they show options to uncomment): each flag
    // after `loadwise SUBCOMMAND`, or in a manifest, and each variable exists.
    let mut checked = 0;
    for entry in walk(&deploy_dir()) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name == "README.md" || name == "loadwise.toml" {
            // Prose with other tools' flags, and settings checked by tests/config.rs.
            continue;
        }
        let content = std::fs::read_to_string(&entry).unwrap();
        for variable in variables_in(&content) {
            assert!(has_variable(&variable), "{name}: no setting reads {variable}");
            checked += 1;
        }
        for line in content.lines() {
            let subcommand =
                ["serve", "agent", "pick"].into_iter().find(|sub| line.contains(&format!("loadwise {sub}")));
            let manifest_arg = name.ends_with(".yaml")
                && line.trim_start().trim_start_matches('#').trim_start().starts_with("- --");
            let flags = flags_in(line);
            if let Some(sub) = subcommand {
                for flag in &flags {
                    assert!(
                        help_of(sub).contains(&format!("{flag} ")),
                        "{name}: `loadwise {sub}` has no {flag}: {line}"
                    );
                    checked += 1;
                }
            } else if manifest_arg {
                for flag in &flags {
                    assert!(
                        helps.iter().any(|(_, help)| help.contains(&format!("{flag} "))),
                        "{name}: no {flag}: {line}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} flags and variables found: is the scan broken?");
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_manifests_agree_with_each_other() {
    let manifests = manifests();
    let deployment = of_kind(&manifests, "Deployment");
    let service = of_kind(&manifests, "Service");
    let budget = of_kind(&manifests, "PodDisruptionBudget");
    let secret = of_kind(&manifests, "Secret");
    let pod = of_kind(&manifests, "Pod");

    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2, "several replicas");
    assert_eq!(text(&service["spec"]["clusterIP"]), "None", "the Service is headless");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&service["spec"]["selector"], labels, "the Service selects the dispatchers");
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], labels, "the budget covers the dispatchers");
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);

    // The agent follows the headless Service's name, at its dispatch port.
    let namespace = text(&service["metadata"]["namespace"]);
    let dispatch =
        service["spec"]["ports"].as_sequence().unwrap().iter().find(|p| p["name"] == "dispatch").unwrap();
    let expected = format!(
        "--servers-from=dns:{}.{namespace}.svc.cluster.local:{}",
        text(&service["metadata"]["name"]),
        dispatch["port"].as_u64().unwrap()
    );
    let (_, agent) = loadwise_args(&manifests).into_iter().find(|(_, args)| args[0] == "agent").unwrap();
    assert!(agent.contains(&expected), "the agent sidecar follows the Service: {agent:?}");
    assert_eq!(text(&pod["metadata"]["namespace"]), namespace);

    // The files the containers read come from the Secret, which has those keys.
    let secret_keys = secret["stringData"].as_mapping().unwrap();
    for key in ["admin-token", "agent-secret"] {
        assert!(secret_keys.contains_key(key), "the Secret has no {key}");
    }
    let (_, serve) = loadwise_args(&manifests).into_iter().find(|(_, args)| args[0] == "serve").unwrap();
    assert!(
        serve.iter().any(|arg| arg.starts_with("--admin-token-file=")),
        "the admin token comes from a file"
    );
    // Listen where other pods reach it.
    assert!(serve.contains(&"--listen=0.0.0.0:8523".to_owned()), "{serve:?}");

    // Non-root.
    for manifest in [deployment, pod] {
        let spec = match manifest["kind"].as_str() {
            Some("Pod") => &manifest["spec"],
            _ => &manifest["spec"]["template"]["spec"],
        };
        assert_eq!(spec["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    }
}

#[test]
fn the_probes_and_the_scrape_path_are_served_by_the_admin_api() {
    let manifests = manifests();
    let deployment = of_kind(&manifests, "Deployment");
    let container = &containers(deployment)[0];
    let admin_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|port| port["name"] == "admin")
        .expect("an admin port")["containerPort"]
        .as_u64()
        .unwrap();
    let readiness = &container["readinessProbe"]["httpGet"];
    let liveness = &container["livenessProbe"]["httpGet"];
    assert_eq!((text(&readiness["path"]), text(&liveness["path"])), ("/readyz", "/healthz"));
    assert_eq!((text(&readiness["port"]), text(&liveness["port"])), ("admin", "admin"));
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(text(&annotations["prometheus.io/scrape"]), "true");
    assert_eq!(text(&annotations["prometheus.io/port"]), admin_port.to_string());
    let (_, serve) = loadwise_args(&manifests).into_iter().find(|(_, args)| args[0] == "serve").unwrap();
    assert!(serve.contains(&format!("--admin-listen=0.0.0.0:{admin_port}")), "{serve:?}");

    // The paths, asked of a running dispatcher's admin API.
    let server =
        process::Spawn::new(&["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).start();
    let end = Instant::now() + process::DEADLINE;
    let admin = loop {
        let line = server.next_line(end).expect("serve logs where the admin API listens");
        if line.contains("admin API listening") {
            break line.rsplit("addr=").next().unwrap().trim().parse().expect("an address");
        }
    };
    for path in [text(&readiness["path"]), text(&liveness["path"]), text(&annotations["prometheus.io/path"])]
    {
        let (status, body) = process::get(admin, path);
        assert_eq!(status, 200, "{path}: {body}");
    }
}
