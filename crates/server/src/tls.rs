//! The dispatcher's TLS settings: its certificate and key, from PEM files.
//!
//! TLS is only the transport: legacy and v2 frames travel inside it unchanged, and
//! the dispatcher tells them apart by their first bytes as it does over plain TCP.
//! Everything uses rustls with the *ring* provider, named explicitly, so no process
//! default has to be installed and no other provider is ever built. The C++ peers
//! of the legacy protocol cannot speak TLS: they keep using the plain listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use loadwise_protocol::pem::{self, PemError, PemFile};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use tokio::net::TcpStream;

/// The rustls version this crate builds its configurations with, for callers that
/// make their own.
pub use rustls;

/// Why the dispatcher's TLS configuration could not be made. Every variant names a file.
// The underlying errors are part of the messages rather than `source`s, so that
// error chains do not print them twice.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate or key file is missing, not PEM, or holds nothing usable.
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("the TLS key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot use the TLS certificate {} with the key {}: {error}", cert.display(), key.display())]
    Unusable { cert: PathBuf, key: PathBuf, error: rustls::Error },
}

/// The dispatcher's TLS configuration: the certificate chain in `cert` (the
/// server's certificate first) and the private key in `key` (PKCS#8, PKCS#1 or SEC1),
/// both PEM. Fails naming the file if one is missing, holds nothing usable, or the
/// key is not the certificate's. No client certificates are asked for: agents prove
/// who they are with the v2 secret.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = pem::read_certificates(cert, PemFile::Certificate)?;
    let private_key = pem::read_private_key(key)?;
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

/// Only ring: aws-lc would need cmake and a C toolchain to build.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS adds its own buffering, so the default `try_write_now` (never "at once")
/// is the right one: every reply goes through `write_all` and a flush.
impl crate::connection::PeerStream for tokio_rustls::server::TlsStream<TcpStream> {}
