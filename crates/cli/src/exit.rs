//! The exit statuses of the `loadwise` binary: one table, read by the code, `--help` and the README test.

use std::process::ExitCode;

/// The process exit statuses, distinct per outcome so scripts can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    /// Anything else went wrong (bad settings, port taken, ...).
    Failure = 1,
    /// Wrong command-line usage (also clap's status for it).
    Usage = 2,
    /// `pick`: the dispatcher answered with the error reply.
    Refused = 3,
    /// `pick`: the dispatcher could not be reached or did not answer in time.
    Unreachable = 4,
    /// `pick`: the service's backends have capacity slots and none had a free place.
    NoFreePlace = 5,
    /// `pick --connect`: no backend named could be connected to, in every attempt.
    Unconnected = 6,
}

/// Every status with what it means to an operator, in code order: the one place the
/// meanings are written (`pick --help` and the README's table show these words).
pub const TABLE: [(Exit, &str); 7] = [
    (Exit::Success, "a backend was assigned (other commands: they ended normally)"),
    (
        Exit::Failure,
        "another failure (a malformed reply, one naming an unusable address, bad settings, a port in use)",
    ),
    (Exit::Usage, "wrong command-line usage (including a `--server` that is not `HOST:PORT`)"),
    (
        Exit::Refused,
        "a dispatcher answered with the error reply (no live backend, or the clocks differ by more than the allowed skew) and none assigned a backend",
    ),
    (Exit::Unreachable, "no dispatcher could be reached or answered in time"),
    (
        Exit::NoFreePlace,
        "no free place: the service's backends have capacity slots, every dispatcher that answered said none has a free place, and none assigned a backend",
    ),
    (
        Exit::Unconnected,
        "`--connect`: backends were named, but none could be connected to within the attempts (each failure was reported to the dispatcher)",
    ),
];

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// The "Exit status" section of `pick --help`, made from [`TABLE`].
pub fn help_section() -> String {
    let rows: Vec<String> =
        TABLE.iter().map(|(exit, meaning)| format!("  {}  {meaning}", exit.code())).collect();
    format!("Exit status:\n{}", rows.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_stable_and_in_order() {
        let codes = TABLE.map(|(exit, _)| exit.code());
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6]);
    }

    /// The `| code | meaning |` rows of the README's `loadwise pick` section.
    fn readme_rows(readme: &str) -> Vec<(u8, String)> {
        let section = readme.split("### `loadwise pick`").nth(1).expect("the README has a pick section");
        let table = section.split("| code | meaning |").nth(1).expect("the pick section lists exit codes");
        table
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .map(|line| {
                let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
                (cells[0].parse().expect("a code"), cells[1].to_owned())
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_the_table() {
        let readme = include_str!("../../../README.md");
        let table: Vec<(u8, String)> =
            TABLE.iter().map(|(exit, text)| (exit.code(), (*text).to_owned())).collect();
        assert_eq!(readme_rows(readme), table);
    }

    #[test]
    fn the_help_section_lists_every_code() {
        let help = help_section();
        for (exit, meaning) in TABLE {
            assert!(help.contains(&format!("  {}  {meaning}", exit.code())), "{help}");
        }
    }
}
