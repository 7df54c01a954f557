//! TLS settings from PEM files: the dispatcher's certificate and key, the CA its
//! peers trust, and the name they expect it to present.
//!
//! TLS is only the transport: legacy and v2 frames travel inside it unchanged, and
//! the dispatcher tells them apart by their first bytes as it does over plain TCP.
//! Everything uses rustls with the *ring* provider, named explicitly, so no process
//! default has to be installed and no other provider is ever built. The C++ peers
//! of the legacy protocol cannot speak TLS: they keep using the plain listener.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// The rustls version this crate builds its configurations with, for callers that
/// make their own.
pub use rustls;

/// What a PEM file given for TLS was meant to hold; it names the file in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemFile {
    /// The dispatcher's certificate, then any intermediates.
    Certificate,
    /// The dispatcher's private key.
    Key,
    /// The certificates a peer trusts the dispatcher's certificate by.
    Ca,
}

impl PemFile {
    /// What the file should hold, for the error that says it holds none.
    fn expected(self) -> &'static str {
        match self {
            PemFile::Certificate => "certificate (-----BEGIN CERTIFICATE-----)",
            PemFile::Key => "private key (PKCS#8, PKCS#1 or SEC1; an encrypted key must be decrypted first)",
            PemFile::Ca => "CA certificate (-----BEGIN CERTIFICATE-----)",
        }
    }
}

impl std::fmt::Display for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PemFile::Certificate => "certificate",
            PemFile::Key => "key",
            PemFile::Ca => "CA",
        })
    }
}

/// Why a TLS configuration could not be made. Every variant about a file names it.
// The underlying errors are part of the messages rather than `source`s, so that
// error chains do not print them twice.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {kind} file {}: {error}", path.display())]
    Read { kind: PemFile, path: PathBuf, error: std::io::Error },
    #[error("the TLS {kind} file {} is not valid PEM: {error}", path.display())]
    Pem { kind: PemFile, path: PathBuf, error: pem::Error },
    #[error("the TLS {kind} file {} holds no {}", path.display(), kind.expected())]
    Empty { kind: PemFile, path: PathBuf },
    #[error("the TLS key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot use the TLS certificate {} with the key {}: {error}", cert.display(), key.display())]
    Unusable { cert: PathBuf, key: PathBuf, error: rustls::Error },
    #[error("the TLS CA file {} holds an unusable certificate: {error}", path.display())]
    BadCa { path: PathBuf, error: rustls::Error },
    #[error("{name:?} is not a valid TLS server name (a DNS name or an IP address)")]
    ServerName { name: String },
}

/// The dispatcher's TLS configuration: the certificate chain in `cert` (the
/// server's certificate first) and the private key in `key` (PKCS#8, PKCS#1 or SEC1),
/// both PEM. Fails naming the file if one is missing, holds nothing usable, or the
/// key is not the certificate's. No client certificates are asked for: agents prove
/// who they are with the v2 secret.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certificates(cert, PemFile::Certificate)?;
    let private_key = read_private_key(key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch { cert: cert.to_owned(), key: key.to_owned() }
            }
            error => TlsError::Unusable { cert: cert.to_owned(), key: key.to_owned(), error },
        })?;
    Ok(Arc::new(config))
}

/// A peer's TLS configuration, trusting only the CA certificates in the PEM file
/// `ca`: the operator names the CA that signed the dispatchers' certificates, so
/// the system's roots are neither needed nor trusted.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(ca, PemFile::Ca)? {
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

/// Every certificate in the PEM file at `path`; at least one.
fn read_certificates(path: &Path, kind: PemFile) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(path, kind)?;
    let certificates =
        certificates(&text).map_err(|error| TlsError::Pem { kind, path: path.to_owned(), error })?;
    if certificates.is_empty() {
        return Err(TlsError::Empty { kind, path: path.to_owned() });
    }
    Ok(certificates)
}

/// The first private key in the PEM file at `path`.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let kind = PemFile::Key;
    let text = read(path, kind)?;
    private_key(&text).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::Empty { kind, path: path.to_owned() },
        error => TlsError::Pem { kind, path: path.to_owned(), error },
    })
}

fn read(path: &Path, kind: PemFile) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { kind, path: path.to_owned(), error })
}

/// Every CERTIFICATE section of `text`, in order; other sections are skipped.
fn certificates(text: &[u8]) -> Result<Vec<CertificateDer<'static>>, pem::Error> {
    CertificateDer::pem_slice_iter(text).collect()
}

/// The first PKCS#8, PKCS#1 or SEC1 private key of `text`, so that one file may
/// hold both the certificate and the key.
fn private_key(text: &[u8]) -> Result<PrivateKeyDer<'static>, pem::Error> {
    PrivateKeyDer::from_pem_slice(text)
}

/// TLS adds its own buffering, so the default `try_write_now` (never "at once")
/// is the right one: every reply goes through `write_all` and a flush.
impl crate::connection::PeerStream for tokio_rustls::server::TlsStream<TcpStream> {}

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
