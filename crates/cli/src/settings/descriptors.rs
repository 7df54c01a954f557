//! Fitting the connection budgets to the file descriptors the process may open: pure
//! arithmetic, the open-file limit in, the budgets out.
//!
//! Every connection holds a descriptor, and each is counted against exactly one
//! budget (backend, client, pending or admin), so the budgets together, plus a
//! reserve for everything else, must fit under the limit. A budget left at its
//! default is shrunk to fit, and the caller warns; one given explicitly is the
//! operator's word, and if it cannot fit the settings are refused.

use std::fmt;

/// Descriptors kept for everything but the budgeted connections: standard input,
/// output and error; the listeners (plain, TLS, admin); the runtime's poller, its
/// wakers and the signal pipe; files read at start and on reload (configuration,
/// admin token, secret, certificate and key); log files a subscriber may hold; and a
/// connection accepted only to be refused, which holds a descriptor for a moment.
/// About 40 are in use on an idle dispatcher; the rest is margin. The admin API's
/// connections have a budget of their own (`admin-max-connections`).
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// One budget as the settings give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Its name, as a flag: `max-backends`.
    pub setting: &'static str,
    pub value: usize,
    /// Where an explicit value came from (`--max-backends`, a file); `None` for the default.
    pub origin: Option<String>,
}

/// A budget left at its default that had to shrink to fit the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shrunk {
    pub setting: &'static str,
    pub default: usize,
    pub fitted: usize,
    /// The open-file limit it was fitted to.
    pub limit: u64,
}

impl fmt::Display for Shrunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lowered from its default {} to {}: the open-file limit is {} ({RESERVED_DESCRIPTORS} kept \
             for listeners, the admin API, logs and the runtime); raise the limit (ulimit -n, LimitNOFILE=) \
             or set {} explicitly",
            self.setting, self.default, self.fitted, self.limit, self.setting
        )
    }
}

/// Explicit budgets that cannot fit under the open-file limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{names} {verb} more file descriptors than the open-file limit {limit} allows: at least {needed}, \
     with {RESERVED_DESCRIPTORS} kept for listeners, the admin API, logs and the runtime; lower {them}, \
     or raise the limit (ulimit -n, LimitNOFILE=)",
    names = self.names(),
    verb = if self.explicit.len() == 1 { "needs" } else { "need" },
    them = if self.explicit.len() == 1 { "it" } else { "them" },
)]
pub struct TooManyDescriptors {
    pub limit: u64,
    /// What the budgets need with the reserve: the explicit values, and at least one
    /// for each budget left at its default.
    pub needed: u64,
    /// The explicit budgets, each with its source.
    pub explicit: Vec<Budget>,
}

impl TooManyDescriptors {
    /// `` `max-backends` = 10000 (set by --max-backends) `` for each explicit budget, or
    /// the limit alone when there is none.
    fn names(&self) -> String {
        if self.explicit.is_empty() {
            return "the connection budgets, even shrunk to 1 each,".to_owned();
        }
        let names: Vec<String> = self
            .explicit
            .iter()
            .map(|budget| {
                let origin = budget.origin.as_deref().unwrap_or("the default");
                format!("`{}` = {} (set by {origin})", budget.setting, budget.value)
            })
            .collect();
        format!("the setting{} {}", if names.len() == 1 { "" } else { "s" }, names.join(" and "))
    }
}

/// The budgets fitted under `limit` descriptors, with the ones that had to shrink.
/// Explicit budgets are kept as given; budgets left at their default share what
/// the explicit ones leave, in proportion to their defaults, each keeping at least
/// one. Fails if the explicit budgets leave too little for that.
pub fn fit(limit: u64, budgets: &[Budget]) -> Result<(Vec<usize>, Vec<Shrunk>), TooManyDescriptors> {
    // Saturating: no budget can make the arithmetic overflow, only fail to fit.
    let explicit_sum =
        budgets.iter().filter(|b| b.origin.is_some()).fold(0u64, |sum, b| sum.saturating_add(b.value as u64));
    let defaulted: Vec<&Budget> = budgets.iter().filter(|b| b.origin.is_none()).collect();
    let needed = RESERVED_DESCRIPTORS.saturating_add(explicit_sum).saturating_add(defaulted.len() as u64);
    let Some(room) = limit.checked_sub(needed) else {
        let explicit = budgets.iter().filter(|b| b.origin.is_some()).cloned().collect();
        return Err(TooManyDescriptors { limit, needed, explicit });
    };
    // What the defaulted budgets may share beyond the one each is sure of.
    let wanted = defaulted.iter().fold(0u64, |sum, b| sum.saturating_add(b.value.saturating_sub(1) as u64));
    if wanted <= room {
        return Ok((budgets.iter().map(|b| b.value).collect(), Vec::new()));
    }
    let mut shrunk = Vec::new();
    let values = budgets
        .iter()
        .map(|budget| {
            if budget.origin.is_some() {
                return budget.value;
            }
            let share = budget.value.saturating_sub(1) as u128 * u128::from(room) / u128::from(wanted);
            // Below the default, since room < wanted.
            let fitted = 1 + usize::try_from(share).unwrap_or(usize::MAX - 1);
            if fitted < budget.value {
                shrunk.push(Shrunk { setting: budget.setting, default: budget.value, fitted, limit });
            }
            fitted
        })
        .collect();
    Ok((values, shrunk))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<Budget> {
        [("max-backends", 10_000), ("max-client-connections", 8_192), ("max-pending-connections", 1_024)]
            .into_iter()
            .map(|(setting, value)| Budget { setting, value, origin: None })
            .collect()
    }

    fn explicit(mut budgets: Vec<Budget>, setting: &str, value: usize, origin: &str) -> Vec<Budget> {
        let budget = budgets.iter_mut().find(|b| b.setting == setting).unwrap();
        (budget.value, budget.origin) = (value, Some(origin.to_owned()));
        budgets
    }

    #[test]
    fn the_defaults_fit_a_hard_limit_of_20000_unchanged() {
        let needed = 10_000 + 8_192 + 1_024 + RESERVED_DESCRIPTORS;
        assert!(needed <= 20_000, "{needed}");
        assert_eq!(fit(20_000, &defaults()), Ok((vec![10_000, 8_192, 1_024], vec![])));
        assert_eq!(fit(needed, &defaults()).unwrap().1, vec![]);
        assert_eq!(fit(u64::MAX, &defaults()).unwrap().0, vec![10_000, 8_192, 1_024]);
    }

    #[test]
    fn defaults_shrink_in_proportion_to_fit_and_say_so() {
        let (values, shrunk) = fit(4_096, &defaults()).unwrap();
        assert!(values.iter().sum::<usize>() as u64 + RESERVED_DESCRIPTORS <= 4_096, "{values:?}");
        assert_eq!(values, vec![1_997, 1_636, 205]);
        assert_eq!(shrunk.len(), 3);
        assert_eq!(
            shrunk[1].to_string(),
            "max-client-connections lowered from its default 8192 to 1636: the open-file limit is 4096 \
             (256 kept for listeners, the admin API, logs and the runtime); raise the limit (ulimit -n, \
             LimitNOFILE=) or set max-client-connections explicitly"
        );
        // One short of the defaults: each gives up at most one.
        let (values, _) = fit(19_471, &defaults()).unwrap();
        assert_eq!(values, vec![9_999, 8_191, 1_023]);
    }

    #[test]
    fn explicit_values_are_kept_and_the_defaults_share_the_rest() {
        let budgets = explicit(defaults(), "max-backends", 18_000, "--max-backends");
        let (values, shrunk) = fit(20_000, &budgets).unwrap();
        assert_eq!(values[0], 18_000);
        assert_eq!(values.iter().sum::<usize>() as u64 + RESERVED_DESCRIPTORS, 20_000 - 1);
        let names: Vec<_> = shrunk.iter().map(|s| s.setting).collect();
        assert_eq!(names, ["max-client-connections", "max-pending-connections"]);
    }

    #[test]
    fn explicit_values_that_cannot_fit_are_refused_by_name_and_source() {
        let budgets =
            explicit(defaults(), "max-client-connections", 30_000, "LOADWISE_MAX_CLIENT_CONNECTIONS");
        let budgets = explicit(budgets, "max-backends", 10_000, "`max_backends` in /etc/loadwise.toml");
        let error = fit(20_000, &budgets).unwrap_err();
        assert_eq!(error.needed, 10_000 + 30_000 + 1 + RESERVED_DESCRIPTORS);
        assert_eq!(
            error.to_string(),
            "the settings `max-backends` = 10000 (set by `max_backends` in /etc/loadwise.toml) and \
             `max-client-connections` = 30000 (set by LOADWISE_MAX_CLIENT_CONNECTIONS) need more file \
             descriptors than the open-file limit 20000 allows: at least 40257, with 256 kept for \
             listeners, the admin API, logs and the runtime; lower them, or raise the limit (ulimit -n, \
             LimitNOFILE=)"
        );
        // Explicit values that fit, but leave no descriptor for a defaulted budget.
        let budgets = explicit(defaults(), "max-backends", 19_743, "--max-backends");
        assert!(fit(20_000, &budgets).unwrap_err().to_string().starts_with("the setting `max-backends`"));
        let budgets = explicit(defaults(), "max-backends", 19_742, "--max-backends");
        assert_eq!(fit(20_000, &budgets).unwrap().0, vec![19_742, 1, 1]);
    }

    #[test]
    fn budgets_too_large_to_add_up_are_refused_not_overflowed() {
        let budgets = explicit(defaults(), "max-backends", usize::MAX, "--max-backends");
        let budgets = explicit(budgets, "max-client-connections", usize::MAX, "--max-client-connections");
        assert_eq!(fit(1 << 40, &budgets).unwrap_err().needed, u64::MAX);
        let mut huge_defaults = defaults();
        huge_defaults.iter_mut().for_each(|budget| budget.value = usize::MAX);
        let (values, shrunk) = fit(1 << 20, &huge_defaults).unwrap();
        assert!(values.iter().all(|&value| value >= 1) && shrunk.len() == 3, "{values:?}");
    }

    #[test]
    fn a_limit_below_the_reserve_is_refused_even_with_defaults() {
        let error = fit(200, &defaults()).unwrap_err();
        assert!(error.explicit.is_empty());
        assert!(
            error.to_string().starts_with("the connection budgets, even shrunk to 1 each, need"),
            "{error}"
        );
    }
}
