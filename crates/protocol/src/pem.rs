//! The PEM files TLS is configured from: every certificate of a file, or its first
//! private key, with errors that name the file and what it was meant to hold.
//!
//! Both sides of a TLS connection read them (the dispatcher its certificate and key,
//! its peers the CA), so they live here, beside the wire formats both sides share.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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

/// Why a PEM file could not be used. Every variant names the file.
// The underlying errors are part of the messages rather than `source`s, so that
// error chains do not print them twice.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read the TLS {kind} file {}: {error}", path.display())]
    Read { kind: PemFile, path: PathBuf, error: std::io::Error },
    #[error("the TLS {kind} file {} is not valid PEM: {error}", path.display())]
    Pem { kind: PemFile, path: PathBuf, error: pem::Error },
    #[error("the TLS {kind} file {} holds no {}", path.display(), kind.expected())]
    Empty { kind: PemFile, path: PathBuf },
}

/// Every certificate in the PEM file at `path`; at least one.
pub fn read_certificates(path: &Path, kind: PemFile) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let text = read(path, kind)?;
    let certificates =
        certificates(&text).map_err(|error| PemError::Pem { kind, path: path.to_owned(), error })?;
    if certificates.is_empty() {
        return Err(PemError::Empty { kind, path: path.to_owned() });
    }
    Ok(certificates)
}

/// The first private key in the PEM file at `path`.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let kind = PemFile::Key;
    let text = read(path, kind)?;
    private_key(&text).map_err(|error| match error {
        pem::Error::NoItemsFound => PemError::Empty { kind, path: path.to_owned() },
        error => PemError::Pem { kind, path: path.to_owned(), error },
    })
}

fn read(path: &Path, kind: PemFile) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|error| PemError::Read { kind, path: path.to_owned(), error })
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
