//! The peers' TLS settings: the CA they trust dispatchers by, from a PEM file, and the
//! name they expect a dispatcher's certificate to present.
//!
//! TLS is only the transport: legacy and v2 frames travel inside it unchanged.
//! Everything uses rustls with the *ring* provider, named explicitly, so no process
//! default has to be installed and no other provider is ever built. The C++ peers
//! of the legacy protocol cannot speak TLS: they keep using the plain listener.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use loadwise_protocol::pem::{self, PemError, PemFile};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;

/// The rustls version this crate builds its configurations with, for callers that
/// make their own.
pub use rustls;

/// Why a peer's TLS configuration could not be made. Every variant about a file names it.
// The underlying errors are part of the messages rather than `source`s, so that
// error chains do not print them twice.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file is missing, not PEM, or holds no certificate.
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("the TLS CA file {} holds an unusable certificate: {error}", path.display())]
    BadCa { path: PathBuf, error: rustls::Error },
    #[error("{name:?} is not a valid TLS server name (a DNS name or an IP address)")]
    ServerName { name: String },
}

/// A peer's TLS configuration, trusting only the CA certificates in the PEM file
/// `ca`: the operator names the CA that signed the dispatchers' certificates, so
/// the system's roots are neither needed nor trusted.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in pem::read_certificates(ca, PemFile::Ca)? {
        roots.add(certificate).map_err(|error| TlsError::BadCa { path: ca.to_owned(), error })?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How the agent and the client speak TLS to dispatchers: whom they trust, and
/// optionally the one name every dispatcher's certificate must carry.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// Checked against each dispatcher's certificate instead of the host it is
    /// dialled by; for dispatchers reached by an address their certificate omits.
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// Speaks TLS with `config`, expecting each dispatcher's certificate to name
    /// the host part of its `HOST:PORT`.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        ClientTls { config, server_name: None }
    }

    /// Trusts the CA certificates in the PEM file `ca` (see [`client_config`]).
    pub fn from_ca_file(ca: &Path) -> Result<Self, TlsError> {
        Ok(ClientTls::new(client_config(ca)?))
    }

    /// Expects every dispatcher's certificate to name `name` (a DNS name or an IP
    /// address) whatever host it is dialled by.
    pub fn with_server_name(mut self, name: &str) -> Result<Self, TlsError> {
        self.server_name = Some(parse_server_name(name)?);
        Ok(self)
    }

    /// Expects `name` of dispatchers whose certificate name is not set otherwise:
    /// the replicas found under a DNS name are dialled by address, and their
    /// certificates name the DNS name. An explicit name, or an unusable `name`,
    /// leaves it as it is.
    pub fn or_server_name(self, name: &str) -> Self {
        if self.server_name.is_some() {
            return self;
        }
        match parse_server_name(name) {
            Ok(name) => ClientTls { server_name: Some(name), ..self },
            Err(_) => self,
        }
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The name the certificate of the dispatcher at `server` (`HOST:PORT`) must
    /// carry: the override if one was given, else the host.
    pub fn server_name_for(&self, server: &str) -> Result<ServerName<'static>, TlsError> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => parse_server_name(host_of(server)),
        }
    }
}

impl PartialEq for ClientTls {
    /// The same configuration object and the same name: rustls configurations
    /// cannot be compared, and one made from the same file is not shared anyway.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for ClientTls {}

/// The host part of `HOST:PORT`, without the brackets of an IPv6 literal; the
/// whole text when it has no port.
pub fn host_of(server: &str) -> &str {
    if let Some(rest) = server.strip_prefix('[')
        && let Some((host, _port)) = rest.split_once(']')
    {
        return host;
    }
    // A bare IPv6 address has several colons and no port.
    match server.rsplit_once(':') {
        Some((host, _port)) if !host.contains(':') => host,
        _ => server,
    }
}

/// An IP address (matched against the certificate's IP SANs) or a DNS name.
fn parse_server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName { name: name.to_owned() })
}

/// Only ring: aws-lc would need cmake and a C toolchain to build.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_the_port_and_brackets() {
        assert_eq!(host_of("10.0.0.1:8525"), "10.0.0.1");
        assert_eq!(host_of("[2001:db8::1]:8525"), "2001:db8::1");
        assert_eq!(host_of("2001:db8::1"), "2001:db8::1");
        assert_eq!(host_of("lb.example.com"), "lb.example.com");
        assert_eq!(host_of("lb.example.com:1"), "lb.example.com");
    }
}
