//! The error every settings check returns: which setting, and why it cannot work.

/// A setting that cannot work, named as on the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{setting}`: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        ConfigError { setting, reason: reason.into() }
    }
}

/// Fails with `reason` for `setting` unless `ok`.
pub fn ensure(ok: bool, setting: &'static str, reason: &str) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::new(setting, reason)) }
}
