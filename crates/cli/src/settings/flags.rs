//! One setting on the command line: the clap flag (with its variable and help) made
//! from its definition, and its value read back from the parsed flags.

use std::collections::BTreeMap;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches};

use super::info::SettingInfo;
use super::value::{ServiceValue, SettingValue};

/// The flag of a setting of type `T`.
pub fn arg<T: SettingValue>(info: &'static SettingInfo) -> Arg {
    Arg::new(info.long)
        .long(info.long)
        .env(info.var)
        .value_name(info.value_name)
        .help(help(info, ""))
        .hide_env_values(info.secret)
        .value_parser(|text: &str| T::parse(text))
}

/// The flag of a per-service setting of type `T`: repeated `NAME=VALUE`, and `;`
/// between entries in the variable.
pub fn service_arg<T: SettingValue>(info: &'static SettingInfo) -> Arg {
    let how = " Give it as NAME=VALUE, and repeat the flag for more services; the variable \
               separates entries with `;`.";
    Arg::new(info.long)
        .long(info.long)
        .env(info.var)
        .value_name(info.value_name)
        .help(help(info, how))
        .action(ArgAction::Append)
        .value_delimiter(';')
        .value_parser(|text: &str| text.parse::<ServiceValue<T>>())
}

/// The doc as one paragraph, then `extra`, the default and the bounds.
fn help(info: &SettingInfo, extra: &str) -> String {
    let mut help = info.doc.lines().map(str::trim).collect::<Vec<_>>().join(" ");
    help.push_str(extra);
    if let Some(default) = (info.default)().filter(|_| !info.secret) {
        help.push_str(&format!(" [default: {default}]"));
    }
    if let Some((min, max)) = (info.bounds)() {
        help.push_str(&format!(" [from {min} to {max}]"));
    }
    help
}

/// The value of a setting's flag or variable, if given; notes which gave it.
pub fn value_of<T: SettingValue>(
    matches: &ArgMatches,
    info: &SettingInfo,
    origins: &mut BTreeMap<String, String>,
) -> Option<T> {
    let value = matches.try_get_one::<T>(info.long).ok().flatten()?.clone();
    note_origin(matches, info, origins);
    Some(value)
}

/// The entries of a per-service setting's flag or variable; notes which gave them.
pub fn service_values_of<T: SettingValue>(
    matches: &ArgMatches,
    info: &SettingInfo,
    origins: &mut BTreeMap<String, String>,
) -> Vec<ServiceValue<T>> {
    let Some(entries) = matches.try_get_many::<ServiceValue<T>>(info.long).ok().flatten() else {
        return Vec::new();
    };
    note_origin(matches, info, origins);
    entries.cloned().collect()
}

fn note_origin(matches: &ArgMatches, info: &SettingInfo, origins: &mut BTreeMap<String, String>) {
    let how = match matches.value_source(info.long) {
        Some(ValueSource::CommandLine) => format!("--{}", info.long),
        Some(ValueSource::EnvVariable) => info.var.to_owned(),
        _ => return,
    };
    origins.insert(info.key.to_owned(), how);
}
