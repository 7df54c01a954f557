//! Laying the sources over each other with figment, which keeps for every value the
//! source it came from: the defaults, the file, then the environment and flags (which
//! clap has already merged, flags winning). Tables merge key by key, so the
//! `[services.NAME]` tables merge service by service.

use std::path::Path;

use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::catalog::Layer;
use super::info::SettingInfo;
use super::layer::SERVICES;

/// A source of settings; a later one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Rank {
    Default,
    File,
    /// The environment and the flags.
    Overrides,
}

impl Rank {
    const ALL: [Rank; 3] = [Rank::Default, Rank::File, Rank::Overrides];

    /// The name figment keeps for it.
    fn name(self) -> &'static str {
        match self {
            Rank::Default => "the default",
            Rank::File => "the configuration file",
            Rank::Overrides => "the environment and flags",
        }
    }
}

/// One source as a figment provider.
struct Source<'a> {
    rank: Rank,
    path: Option<&'a Path>,
    layer: &'a Layer,
}

impl Provider for Source<'_> {
    fn metadata(&self) -> Metadata {
        let metadata = Metadata::named(self.rank.name());
        match self.path {
            Some(path) => metadata.source(path),
            None => metadata,
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::defaults(self.layer).data()
    }
}

/// The sources laid over each other.
pub(super) struct Merged(Figment);

impl Merged {
    /// The defaults, then `file` (read from `path`), then `overrides`.
    pub fn new(path: Option<&Path>, file: &Layer, overrides: &Layer) -> Merged {
        let defaults = Layer::defaults();
        let figment = Figment::new()
            .merge(Source { rank: Rank::Default, path: None, layer: &defaults })
            .merge(Source { rank: Rank::File, path, layer: file })
            .merge(Source { rank: Rank::Overrides, path: None, layer: overrides });
        Merged(figment)
    }

    /// Every setting as the highest source that gives it says; the error as text.
    pub fn layer(&self) -> Result<Layer, String> {
        self.0.extract().map_err(|error| error.to_string())
    }

    /// The highest source that gives `info`; for a per-service setting, for any service.
    pub fn rank_of(&self, info: &SettingInfo) -> Option<Rank> {
        let root = self.0.data().ok()?.remove(&Profile::Default)?;
        let value = |path: &[&str]| find(&root, path).and_then(|value| self.rank_of_value(value));
        if let Some(inner) = info.per_service {
            let services = root.get(SERVICES).and_then(Value::as_dict)?;
            return services
                .values()
                .filter_map(|service| find(service.as_dict()?, &[inner]))
                .flat_map(|v| self.rank_of_value(v))
                .max();
        }
        match info.key.split_once('.') {
            Some((table, key)) => value(&[table, key]),
            None => value(&[info.key]),
        }
    }

    fn rank_of_value(&self, value: &Value) -> Option<Rank> {
        let name = &self.0.get_metadata(value.tag())?.name;
        Rank::ALL.into_iter().find(|rank| rank.name() == name)
    }
}

/// The value at `path` in `dict`, each step a key as it is (a service's name may hold
/// dots, so paths are not dotted strings).
fn find<'a>(dict: &'a Dict, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = dict.get(*first)?;
    if rest.is_empty() { Some(value) } else { find(value.as_dict()?, rest) }
}
