//! Where a replica set is published: `dns:NAME:PORT` or `dns+srv:NAME`, parsed and checked.

use std::num::NonZeroU16;
use std::str::FromStr;

/// The longest DNS name, in its text form without the final dot (RFC 1035).
const MAX_NAME_LEN: usize = 253;

/// The longest label of a DNS name.
const MAX_LABEL_LEN: usize = 63;

/// A DNS name whose records are the replicas of a dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DnsSource {
    /// `dns:NAME:PORT`: every A record of NAME (or, if it has none, every AAAA record)
    /// is a replica listening on PORT, as a Kubernetes headless Service, Consul or
    /// plain round-robin DNS publish them.
    Addresses { name: String, port: NonZeroU16 },
    /// `dns+srv:_SERVICE._PROTO.NAME`: every SRV record is a replica, at its target's
    /// addresses and its own port.
    Srv { name: String },
}

/// Why a `--servers-from` value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("expected dns:NAME:PORT or dns+srv:_SERVICE._PROTO.NAME, got {0:?}")]
    Shape(String),
    #[error("the port {0:?} is not a number from 1 to 65535")]
    BadPort(String),
    #[error("{name:?} is not a DNS name: {reason}")]
    BadName { name: String, reason: &'static str },
}

impl DnsSource {
    /// The name that is resolved.
    pub fn name(&self) -> &str {
        match self {
            DnsSource::Addresses { name, .. } | DnsSource::Srv { name } => name,
        }
    }
}

impl DnsSource {
    /// The name a replica's TLS certificate is expected to carry: the name without
    /// its final dot and, for SRV, without the `_SERVICE._PROTO.` labels.
    pub fn host_name(&self) -> &str {
        let mut name = self.name().strip_suffix('.').unwrap_or(self.name());
        while let Some((label, rest)) = name.split_once('.')
            && label.starts_with('_')
        {
            name = rest;
        }
        name
    }
}

impl FromStr for DnsSource {
    type Err = SourceError;

    fn from_str(text: &str) -> Result<Self, SourceError> {
        let shape = || SourceError::Shape(text.to_owned());
        if let Some(name) = text.strip_prefix("dns+srv:") {
            check_name(name)?;
            return Ok(DnsSource::Srv { name: name.to_owned() });
        }
        let rest = text.strip_prefix("dns:").ok_or_else(shape)?;
        let (name, port) = rest.rsplit_once(':').ok_or_else(shape)?;
        let port = port
            .parse::<u16>()
            .ok()
            .and_then(NonZeroU16::new)
            .ok_or_else(|| SourceError::BadPort(port.to_owned()))?;
        check_name(name)?;
        Ok(DnsSource::Addresses { name: name.to_owned(), port })
    }
}

impl std::fmt::Display for DnsSource {
    /// The form it was given in: `dns:NAME:PORT` or `dns+srv:NAME`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsSource::Addresses { name, port } => write!(f, "dns:{name}:{port}"),
            DnsSource::Srv { name } => write!(f, "dns+srv:{name}"),
        }
    }
}

/// Accepts what a DNS name may hold: dot-separated labels of 1 to 63 letters,
/// digits, `-` and `_` (SRV names start their labels with `_`), 253 characters in
/// all, with or without the final dot.
fn check_name(name: &str) -> Result<(), SourceError> {
    let bad = |reason| Err(SourceError::BadName { name: name.to_owned(), reason });
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return bad("it is empty");
    }
    if bare.len() > MAX_NAME_LEN {
        return bad("it is longer than 253 characters");
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return bad("it has an empty label (two dots in a row)");
        }
        if label.len() > MAX_LABEL_LEN {
            return bad("a label is longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return bad("only letters, digits, '-', '_' and '.' may appear");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DnsSource, SourceError> {
        text.parse()
    }

    #[test]
    fn parses_both_forms_and_prints_them_back() {
        let a = parse("dns:loadwise.game.svc.cluster.local:8523").unwrap();
        let port = NonZeroU16::new(8523).unwrap();
        assert_eq!(a, DnsSource::Addresses { name: "loadwise.game.svc.cluster.local".into(), port });
        assert_eq!(a.to_string(), "dns:loadwise.game.svc.cluster.local:8523");
        let srv = parse("dns+srv:_loadwise._tcp.service.consul.").unwrap();
        assert_eq!(srv, DnsSource::Srv { name: "_loadwise._tcp.service.consul.".into() });
        assert_eq!(srv.to_string(), "dns+srv:_loadwise._tcp.service.consul.");
        assert_eq!(srv.name(), "_loadwise._tcp.service.consul.");
        assert_eq!(srv.host_name(), "service.consul");
        assert_eq!(a.host_name(), "loadwise.game.svc.cluster.local");
    }

    #[test]
    fn refuses_other_shapes_ports_and_names() {
        assert!(matches!(parse("lb.example:8523"), Err(SourceError::Shape(_))));
        assert!(matches!(parse("dns:lb.example"), Err(SourceError::Shape(_))));
        assert!(matches!(parse("dns:lb.example:0"), Err(SourceError::BadPort(_))));
        assert!(matches!(parse("dns:lb.example:65536"), Err(SourceError::BadPort(_))));
        for name in ["", ".", "a..b", "a b", "[::1]", &"a".repeat(64), &["a"; 128].join(".")] {
            let error = parse(&format!("dns:{name}:1")).unwrap_err();
            assert!(matches!(error, SourceError::BadName { .. }), "{name:?}: {error}");
        }
        assert!(matches!(parse("dns+srv:"), Err(SourceError::BadName { .. })));
        let error = parse("dns:a b:1").unwrap_err().to_string();
        assert!(error.contains("\"a b\"") && error.contains("letters, digits"), "{error}");
    }
}
