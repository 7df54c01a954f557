//! The Register MAC: HMAC-SHA256 over a challenge nonce, a backend id and a service.
//!
//! The MAC input is the domain tag `loadwise-register-v2` (20 ASCII bytes), the
//! 16-byte nonce of the connection's Challenge, the backend id (`u64` little-endian),
//! the service's length (`u8`) and the service's bytes. The domain tag keeps these MACs
//! apart from every other use of the same secret (tickets use another tag). The secret
//! is any byte string the caller loaded; nothing here reads files, clocks or randomness
//! of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use rand::CryptoRng;
use sha2::Sha256;

use super::handshake::Register;
use super::names::ServiceName;
use crate::config::{ConfigError, ensure};

// The sizes live with the other wire limits, which the handshake messages also name.
pub use super::limits::{MAC_LEN, NONCE_LEN, Nonce};

/// The domain tag that starts every Register MAC input.
pub const REGISTER_DOMAIN: &[u8] = b"loadwise-register-v2";

/// A shared secret: what a v2 backend proves it knows when it registers, and what
/// tickets are signed with. Cheap to clone (the bytes are shared), and its `Debug`
/// output does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// A secret from raw bytes; at least [`MIN_SECRET_LEN`] are needed for it to
    /// resist guessing.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, ConfigError> {
        let bytes = bytes.into();
        ensure(
            bytes.len() >= MIN_SECRET_LEN,
            "secret-file",
            &format!("the secret must be at least {MIN_SECRET_LEN} bytes"),
        )?;
        Ok(Secret(bytes.into()))
    }

    /// The contents of a secret file, without a trailing newline: the agent and the
    /// dispatcher read the same file the same way.
    pub fn from_file_text(text: &str) -> Result<Secret, ConfigError> {
        Secret::new(text.trim_end_matches(['\n', '\r']).as_bytes())
    }

    /// Reads a secret file: its text, without a trailing newline. The agent's
    /// `--secret-file` and the dispatcher's `auth_secret_file` both come through here,
    /// so both ends hold the same bytes.
    pub fn read_file(path: &Path) -> Result<Secret, SecretFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| SecretFileError::Read { path: path.to_owned(), error })?;
        Ok(Secret::from_file_text(&text)?)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    // The I/O error is part of the message rather than a `source`, so that error
    // chains do not print it twice.
    #[error("cannot read the secret file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// Readable, but not a usable secret (too short).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// The shortest secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// A Register whose MAC does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong secret, another connection's nonce, or an altered service or backend id.
    #[error("the Register MAC does not verify")]
    BadMac,
}

/// A fresh nonce from a cryptographic RNG (the caller's, e.g. `rand::rng()`).
pub fn new_nonce<R: CryptoRng + ?Sized>(rng: &mut R) -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    nonce
}

/// HMAC-SHA256 keyed with `secret`, fed `parts` in order.
pub(crate) fn hmac_sha256(secret: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC takes a key of any length (longer keys are hashed), so this never fails.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// The exact bytes the Register MAC covers.
pub fn register_mac_input(nonce: &Nonce, service: &ServiceName, backend_id: u64) -> Vec<u8> {
    let service = service.as_str().as_bytes();
    let mut input = Vec::with_capacity(REGISTER_DOMAIN.len() + NONCE_LEN + 8 + 1 + service.len());
    input.extend_from_slice(REGISTER_DOMAIN);
    input.extend_from_slice(nonce);
    input.extend_from_slice(&backend_id.to_le_bytes());
    // A service name is at most 64 bytes, so its length fits the u8.
    input.push(service.len() as u8);
    input.extend_from_slice(service);
    input
}

/// The Register MAC for this nonce, service and backend id.
pub fn register_mac(secret: &[u8], nonce: &Nonce, service: &ServiceName, backend_id: u64) -> [u8; MAC_LEN] {
    let input = register_mac_input(nonce, service, backend_id);
    hmac_sha256(secret, &[&input]).finalize().into_bytes().into()
}

/// Checks a Register against the nonce this connection's Challenge carried, in
/// constant time.
pub fn verify_register(secret: &[u8], nonce: &Nonce, register: &Register) -> Result<(), AuthError> {
    let input = register_mac_input(nonce, &register.service, register.backend_id);
    hmac_sha256(secret, &[&input]).verify_slice(&register.mac).map_err(|_| AuthError::BadMac)
}

impl Register {
    /// A Register for `service` and `backend_id`, signed for the Challenge `nonce`.
    pub fn signed(secret: &[u8], nonce: &Nonce, service: ServiceName, backend_id: u64) -> Register {
        let mac = register_mac(secret, nonce, &service, backend_id);
        Register { backend_id, mac, service }
    }
}
