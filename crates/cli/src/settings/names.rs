//! A setting's flag and variable, spelled from its key at compile time by one rule:
//! `admin.token_file` is `--admin-token-file` and `LOADWISE_ADMIN_TOKEN_FILE`.

/// What every variable starts with.
pub const ENV_PREFIX: &str = "LOADWISE_";

/// The flag of `key` without its dashes in front: `.` and `_` become `-`.
pub const fn flag_bytes<const N: usize>(key: &str) -> [u8; N] {
    let key = key.as_bytes();
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = match key[i] {
            b'.' | b'_' => b'-',
            other => other,
        };
        i += 1;
    }
    out
}

/// The variable of `key`: [`ENV_PREFIX`], then the key in capitals with `.` as `_`.
pub const fn env_bytes<const N: usize>(key: &str) -> [u8; N] {
    let (prefix, key) = (ENV_PREFIX.as_bytes(), key.as_bytes());
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < prefix.len() {
            prefix[i]
        } else {
            match key[i - prefix.len()] {
                b'.' => b'_',
                other => other.to_ascii_uppercase(),
            }
        };
        i += 1;
    }
    out
}

/// Bytes made from an ASCII key as text (the rules above keep it ASCII).
pub const fn ascii(bytes: &'static [u8]) -> &'static str {
    match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(_) => panic!("setting names are ASCII"),
    }
}

/// `(flag, variable)` of a key given as a constant expression, as `&'static str`.
macro_rules! spelled {
    ($key:expr) => {{
        const KEY: &str = $key;
        const FLAG: [u8; KEY.len()] = $crate::settings::names::flag_bytes(KEY);
        const ENV: [u8; $crate::settings::names::ENV_PREFIX.len() + KEY.len()] =
            $crate::settings::names::env_bytes(KEY);
        const SPELLED: (&str, &str) =
            ($crate::settings::names::ascii(&FLAG), $crate::settings::names::ascii(&ENV));
        SPELLED
    }};
}

pub(crate) use spelled;

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_spelled_as_flags_and_variables() {
        assert_eq!(spelled!("max_clock_skew"), ("max-clock-skew", "LOADWISE_MAX_CLOCK_SKEW"));
        assert_eq!(spelled!("admin.token_file"), ("admin-token-file", "LOADWISE_ADMIN_TOKEN_FILE"));
        assert_eq!(spelled!("ttl"), ("ttl", "LOADWISE_TTL"));
    }
}
