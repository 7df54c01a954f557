//! The settings on the command line: [`SettingFlags`], every setting's flag, and the
//! layer the parsed flags and variables give.

use std::collections::BTreeMap;

use clap::{ArgMatches, Args, Command, FromArgMatches};

use super::catalog::Layer;

/// `serve`'s settings as flags and variables; flatten it into a clap command
/// (`#[command(flatten)]`). Clap merges the two, a flag winning over its variable.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags {
    /// The settings given.
    pub layer: Layer,
    /// For each setting given, by key, how: `--ttl` or `LOADWISE_TTL`.
    pub origins: BTreeMap<String, String>,
}

impl Args for SettingFlags {
    fn augment_args(command: Command) -> Command {
        command.args(Layer::args())
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let (layer, origins) = Layer::from_matches(matches);
        Ok(SettingFlags { layer, origins })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}
