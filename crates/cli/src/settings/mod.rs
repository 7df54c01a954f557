//! The settings of `loadwise serve` from a TOML file, the environment and flags: each
//! setting defined once, merging by precedence, validation, and what a reload changes.
//!
//! Every setting is defined once, in `catalog.rs`; its flag, variable, file key, doc,
//! default, bounds and place in [`Settings`] follow from that definition. Each source
//! is a [`Layer`] that sets some settings and leaves the rest alone. [`Sources::load`]
//! lays them over the defaults in order of precedence, lowest first (figment keeps
//! where each value came from): defaults, the file, then the environment and flags
//! (which clap has already merged, flags winning). Each value is checked against its
//! bounds, then the whole, and an error names the setting and where its value came
//! from. Per-service settings (`[services.NAME]` tables) merge service by service.
//! Files named by settings (the admin token, the auth secret) are read after the
//! merge, at each load.
//!
//! | file | its one job |
//! |---|---|
//! | `mod.rs` | re-exports only |
//! | `model.rs` | [`Settings`] and its parts, [`Loaded`] |
//! | `load.rs` | [`Sources`]: loading, checking, the errors |
//! | `catalog.rs` | every setting's definition, once: [`CATALOG`] and [`Layer`] follow from it |
//! | `define.rs` | what a definition makes: the `settings!` macro, lenses |
//! | `info.rs` | what one setting is: [`SettingInfo`] |
//! | `value.rs` | how each type of setting is parsed, written, shown and bounded |
//! | `names.rs` | a setting's flag and variable, spelled from its key |
//! | `flag_set.rs` | the settings as clap flags and variables ([`SettingFlags`]) |
//! | `flags.rs` | one setting's clap flag, and its value read back |
//! | `layer.rs` | [`Layer`]: parsing the file, laying one source over settings |
//! | `merge.rs` | the sources laid over each other (figment), and which gave each value |
//! | `text.rs` | settings written as text: durations, `off`-able addresses, service tables |
//! | `render.rs` | settings as a commented TOML file ([`example`], [`render`]) |
//! | `docs.rs` | the settings tables of the docs and the README |
//! | `diff.rs` | what changed between two loads, and whether it applies live |
//! | `descriptors.rs` | the connection budgets fitted to the open-file limit |

mod catalog;
mod define;
mod descriptors;
mod diff;
pub mod docs;
mod doors;
mod flag_set;
mod flags;
mod info;
mod layer;
mod load;
mod merge;
mod model;
mod names;
mod render;
mod text;
mod value;

#[cfg(test)]
mod tests;

pub use catalog::{AdminLayer, CATALOG, Layer, ServiceLayer};
pub use descriptors::{Budget, RESERVED_DESCRIPTORS, Shrunk, TooManyDescriptors, fit};
pub use diff::{Change, diff};
pub use doors::open_doors;
pub use flag_set::SettingFlags;
pub use info::{SERVICE_TABLE, SettingInfo};
pub use layer::{MAX_CONNECTIONS_RETIRED, RETIRED_VARIABLES};
pub use load::{SettingsError, Sources, read_file};
pub use model::{AdminSettings, Loaded, Settings, TlsSettings, TokenSource};
pub use render::{example, render};
pub use text::{
    AdminListen, BadHostList, BadListen, DEFAULT_ADMIN_LISTEN, HostList, TlsListenAddr, format_duration,
};
pub use value::{BadServiceScoring, BadServiceValue, ServiceScoring, ServiceValue, SettingValue};
