//! The v2 sizes and limits that more than one file names: custom metrics per heartbeat,
//! the challenge nonce and the Register MAC.

/// The most custom metrics one heartbeat may carry.
pub const MAX_METRICS: usize = 32;

/// Size of a challenge nonce.
pub const NONCE_LEN: usize = 16;

/// Size of the Register MAC (a full HMAC-SHA256).
pub const MAC_LEN: usize = 32;

/// A challenge nonce.
pub type Nonce = [u8; NONCE_LEN];
