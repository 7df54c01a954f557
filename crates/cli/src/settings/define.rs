//! What one definition of a setting makes: the [`settings!`] macro that
//! `catalog.rs` calls once with every setting, and the [`SettingInfo`] each gets.
//!
//! From the definitions the macro writes, for every setting:
//! - its field in the file's model ([`Layer`](super::Layer), its `[admin]` table and
//!   each `[services.NAME]` table), read and written through its type's
//!   [`SettingValue`](super::value::SettingValue);
//! - its entry in [`CATALOG`](super::CATALOG): key, flag, variable, doc, default,
//!   bounds, whether a reload applies it;
//! - its clap flag with its variable and help, and how the parsed flags make a layer;
//! - the check of its bounds, and where its value goes in [`Settings`](super::Settings)
//!   and comes back from (its [`Lens`]).

use std::collections::BTreeMap;

use loadwise_protocol::v2::ServiceName;

use super::model::Settings;

/// Where a setting's value lives in [`Settings`]: read back for `config show` and
/// the reload diff, and written when the settings are built.
pub struct Lens<T> {
    /// The value in force; `None` when unset (no default).
    pub get: fn(&Settings) -> Option<T>,
    pub set: fn(&mut Settings, T),
}

/// Where a per-service setting's values live: a map by service.
pub struct ServiceLens<T> {
    pub get: fn(&Settings) -> &BTreeMap<ServiceName, T>,
    pub get_mut: fn(&mut Settings) -> &mut BTreeMap<ServiceName, T>,
}

/// The lens of a field of [`Settings`] that always holds a value: `at!(server.listen)`.
macro_rules! at {
    ($($path:ident).+) => {
        $crate::settings::define::Lens {
            get: |settings| Some(settings.$($path).+.clone()),
            set: |settings, value| settings.$($path).+ = value,
        }
    };
}

/// The lens of an `Option` field of [`Settings`]: `optional_at!(tls.cert)`.
macro_rules! optional_at {
    ($($path:ident).+) => {
        $crate::settings::define::Lens {
            get: |settings| settings.$($path).+.clone(),
            set: |settings, value| settings.$($path).+ = Some(value),
        }
    };
}

/// The lens of a map by service in [`Settings`]: `service_map!(server.dispatch.service_scoring)`.
macro_rules! service_map {
    ($($path:ident).+) => {
        $crate::settings::define::ServiceLens {
            get: |settings| &settings.$($path).+,
            get_mut: |settings| &mut settings.$($path).+,
        }
    };
}

/// A [`SettingInfo`] from the parts of a definition.
macro_rules! info {
    (
        key: $key:expr, per_service: $per_service:expr, ty: $ty:ty, docs: [$($doc:literal)+],
        live: $live:literal, value_name: $value_name:expr,
        $(default: $default:expr,)? $(bounds: [$min:expr, $max:expr],)? $(example: $example:literal,)?
        $(docs_default: $docs_default:literal,)? $(secret: $secret:literal,)? summary: $summary:literal
    ) => {
        $crate::settings::info::SettingInfo {
            key: $key,
            long: $crate::settings::names::spelled!($key).0,
            var: $crate::settings::names::spelled!($key).1,
            live: $live,
            doc: concat!($($doc, "\n"),+),
            summary: $summary,
            value_name: $value_name,
            example: $crate::settings::define::first!($(Some($example),)? None),
            docs_default: $crate::settings::define::first!($(Some($docs_default),)? None),
            secret: $crate::settings::define::first!($($secret,)? false),
            per_service: $per_service,
            default: || $crate::settings::define::first!(
                $(Some(<$ty as $crate::settings::value::SettingValue>::show(&$default)),)? None
            ),
            bounds: || $crate::settings::define::first!(
                $(Some((
                    <$ty as $crate::settings::value::SettingValue>::show_bound(&$min),
                    <$ty as $crate::settings::value::SettingValue>::show_bound(&$max),
                )),)? None
            ),
        }
    };
}

/// The first of its arguments: an optional part of a definition, or the fallback.
macro_rules! first {
    ($first:expr $(, $rest:expr)* $(,)?) => {
        $first
    };
}

/// Checks a value against the bounds of its definition, if it has some.
macro_rules! check_bounds {
    ($value:expr, $info:expr $(, [$min:expr, $max:expr])?) => {{
        $(
            if let Some(value) = $value {
                $crate::settings::value::check_range(value, &$min, &$max)
                    .map_err(|reason| loadwise_protocol::config::ConfigError::new($info.long, reason))?;
            }
        )?
        let _ = (&$value, &$info);
    }};
}

/// Every setting of `loadwise serve`, defined once: see the module's doc. Its input
/// is three lists (top-level settings, per-service settings, the `[admin]` table) of
///
/// ```text
/// /// What the setting does (the example file's comment and the --help text).
/// name: Type {
///     live: true,                        // whether a reload applies it
///     value_name: "DURATION",            // in --help
///     default: Duration::from_secs(3),   // optional: none leaves it unset
///     bounds: [MIN, MAX],                // optional, for numbers and durations
///     example: "\"/etc/x\"",             // optional: shown for an unset setting
///     docs_default: "text",              // optional: the default as the docs say it
///     secret: true,                      // optional: never printed
///     summary: "what it does, briefly",  // the docs tables
///     at: at!(server.dispatch.ttl),      // where it goes in `Settings` (a `Lens`;
/// }                                      // a `ServiceLens` for a per-service one)
/// ```
macro_rules! settings {
    (
        top {$(
            $(#[doc = $tdoc:literal])+
            $tname:ident : $tty:ty {
                live: $tlive:literal,
                value_name: $tvalue_name:literal,
                $(default: $tdefault:expr,)?
                $(bounds: [$tmin:expr, $tmax:expr],)?
                $(example: $texample:literal,)?
                $(docs_default: $tdocs_default:literal,)?
                $(secret: $tsecret:literal,)?
                summary: $tsummary:literal,
                at: $tlens:expr $(,)?
            }
        )*}
        services {$(
            $(#[doc = $sdoc:literal])+
            $sname:ident : $sty:ty {
                live: $slive:literal,
                value_name: $svalue_name:literal,
                $(bounds: [$smin:expr, $smax:expr],)?
                example: $sexample:literal,
                summary: $ssummary:literal,
                at: $slens:expr $(,)?
            }
        )*}
        admin {$(
            $(#[doc = $adoc:literal])+
            $aname:ident : $aty:ty {
                live: $alive:literal,
                value_name: $avalue_name:literal,
                $(default: $adefault:expr,)?
                $(bounds: [$amin:expr, $amax:expr],)?
                $(example: $aexample:literal,)?
                $(docs_default: $adocs_default:literal,)?
                $(secret: $asecret:literal,)?
                summary: $asummary:literal,
                at: $alens:expr $(,)?
            }
        )*}
    ) => {
        /// The settings one source gives, as the configuration file spells them;
        /// `None` leaves a setting to the sources below.
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Layer {
            $(
                #[serde(default, with = "crate::settings::value::optional", skip_serializing_if = "Option::is_none")]
                pub $tname: Option<$tty>,
            )*
            #[serde(default, skip_serializing_if = "AdminLayer::is_empty")]
            pub admin: AdminLayer,
            /// The `[services.NAME]` tables. A higher source's table replaces a lower
            /// one's setting by setting, service by service.
            #[serde(
                default,
                with = "crate::settings::text::service_tables",
                skip_serializing_if = "std::collections::BTreeMap::is_empty"
            )]
            pub services: std::collections::BTreeMap<loadwise_protocol::v2::ServiceName, ServiceLayer>,
        }

        /// A `[services.NAME]` table: what one service does otherwise than the top
        /// level says.
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ServiceLayer {
            $(
                #[serde(default, with = "crate::settings::value::optional", skip_serializing_if = "Option::is_none")]
                pub $sname: Option<$sty>,
            )*
        }

        /// The `[admin]` table.
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct AdminLayer {
            $(
                #[serde(default, with = "crate::settings::value::optional", skip_serializing_if = "Option::is_none")]
                pub $aname: Option<$aty>,
            )*
        }

        #[allow(non_upper_case_globals, unused_imports)]
        mod top_info {
            use super::*;
            $(
                pub const $tname: $crate::settings::info::SettingInfo = $crate::settings::define::info!(
                    key: stringify!($tname), per_service: None, ty: $tty, docs: [$($tdoc)+],
                    live: $tlive, value_name: $tvalue_name,
                    $(default: $tdefault,)? $(bounds: [$tmin, $tmax],)? $(example: $texample,)?
                    $(docs_default: $tdocs_default,)? $(secret: $tsecret,)? summary: $tsummary
                );
            )*
        }

        #[allow(non_upper_case_globals, unused_imports)]
        mod service_info {
            use super::*;
            $(
                pub const $sname: $crate::settings::info::SettingInfo = $crate::settings::define::info!(
                    key: concat!("service_", stringify!($sname)), per_service: Some(stringify!($sname)),
                    ty: $sty, docs: [$($sdoc)+], live: $slive, value_name: concat!("NAME=", $svalue_name),
                    $(bounds: [$smin, $smax],)? example: $sexample, summary: $ssummary
                );
            )*
        }

        #[allow(non_upper_case_globals, unused_imports)]
        mod admin_info {
            use super::*;
            $(
                pub const $aname: $crate::settings::info::SettingInfo = $crate::settings::define::info!(
                    key: concat!("admin.", stringify!($aname)), per_service: None, ty: $aty,
                    docs: [$($adoc)+], live: $alive, value_name: $avalue_name,
                    $(default: $adefault,)? $(bounds: [$amin, $amax],)? $(example: $aexample,)?
                    $(docs_default: $adocs_default,)? $(secret: $asecret,)? summary: $asummary
                );
            )*
        }

        /// Every setting, in the order the example file lists them.
        pub static CATALOG: &[$crate::settings::info::SettingInfo] =
            &[$(top_info::$tname,)* $(service_info::$sname,)* $(admin_info::$aname,)*];

        impl Layer {
            /// Every setting's default (those unset by default stay unset).
            pub fn defaults() -> Layer {
                Layer {
                    $($tname: $crate::settings::define::first!($(Some($tdefault),)? None),)*
                    admin: AdminLayer {
                        $($aname: $crate::settings::define::first!($(Some($adefault),)? None),)*
                    },
                    services: std::collections::BTreeMap::new(),
                }
            }

            /// Every setting of `settings`, as a layer that sets them all (secrets
            /// included: callers that print them must hide them).
            pub fn from_settings(settings: &Settings) -> Layer {
                let mut services = std::collections::BTreeMap::<_, ServiceLayer>::new();
                $(
                    let lens: $crate::settings::define::ServiceLens<$sty> = $slens;
                    for (name, value) in (lens.get)(settings) {
                        services.entry(name.clone()).or_default().$sname = Some(value.clone());
                    }
                )*
                Layer {
                    $($tname: {
                        let lens: $crate::settings::define::Lens<$tty> = $tlens;
                        (lens.get)(settings)
                    },)*
                    admin: AdminLayer {
                        $($aname: {
                            let lens: $crate::settings::define::Lens<$aty> = $alens;
                            (lens.get)(settings)
                        },)*
                    },
                    services,
                }
            }

            /// Sets in `settings` every value this layer gives, as it gives it.
            pub(crate) fn apply_values(&self, settings: &mut Settings) {
                $(if let Some(value) = &self.$tname {
                    let lens: $crate::settings::define::Lens<$tty> = $tlens;
                    (lens.set)(settings, value.clone());
                })*
                $(if let Some(value) = &self.admin.$aname {
                    let lens: $crate::settings::define::Lens<$aty> = $alens;
                    (lens.set)(settings, value.clone());
                })*
                for (name, service) in &self.services {
                    $(if let Some(value) = &service.$sname {
                        let lens: $crate::settings::define::ServiceLens<$sty> = $slens;
                        (lens.get_mut)(settings).insert(name.clone(), value.clone());
                    })*
                    let _ = (name, service);
                }
            }

            /// Fails, naming the setting, on the first value outside its bounds.
            pub fn check_bounds(&self) -> Result<(), loadwise_protocol::config::ConfigError> {
                $($crate::settings::define::check_bounds!(&self.$tname, top_info::$tname $(, [$tmin, $tmax])?);)*
                $($crate::settings::define::check_bounds!(
                    &self.admin.$aname, admin_info::$aname $(, [$amin, $amax])?
                );)*
                for service in self.services.values() {
                    $($crate::settings::define::check_bounds!(
                        &service.$sname, service_info::$sname $(, [$smin, $smax])?
                    );)*
                    let _ = service;
                }
                Ok(())
            }

            /// Each top-level and `[admin]` setting with its value as the file writes
            /// it, if this layer sets it, in catalogue order.
            pub fn values(&self) -> Vec<(&'static $crate::settings::info::SettingInfo, Option<toml::Value>)> {
                use $crate::settings::value::SettingValue as _;
                vec![
                    $((&top_info::$tname, self.$tname.as_ref().map(|value| value.to_toml())),)*
                    $((&admin_info::$aname, self.admin.$aname.as_ref().map(|value| value.to_toml())),)*
                ]
            }

            /// For each service this layer has a table for, the per-service settings
            /// it sets there, with their values as the file writes them.
            pub fn service_values(
                &self,
            ) -> Vec<(&loadwise_protocol::v2::ServiceName, Vec<(&'static $crate::settings::info::SettingInfo, toml::Value)>)> {
                use $crate::settings::value::SettingValue as _;
                self.services
                    .iter()
                    .map(|(name, service)| {
                        let mut values = Vec::new();
                        $(if let Some(value) = &service.$sname {
                            values.push((&service_info::$sname, value.to_toml()));
                        })*
                        let _ = service;
                        (name, values)
                    })
                    .collect()
            }

            /// The clap flags (with their variables) of every setting.
            pub fn args() -> Vec<clap::Arg> {
                vec![
                    $($crate::settings::flags::arg::<$tty>(&top_info::$tname),)*
                    $($crate::settings::flags::service_arg::<$sty>(&service_info::$sname),)*
                    $($crate::settings::flags::arg::<$aty>(&admin_info::$aname),)*
                ]
            }

            /// The settings the flags and the variables give, and for each which
            /// gave it (`--ttl` or `LOADWISE_TTL`), by key.
            pub fn from_matches(
                matches: &clap::ArgMatches,
            ) -> (Layer, std::collections::BTreeMap<String, String>) {
                let mut origins = std::collections::BTreeMap::new();
                let mut layer = Layer::default();
                $(layer.$tname = $crate::settings::flags::value_of(matches, &top_info::$tname, &mut origins);)*
                $(layer.admin.$aname =
                    $crate::settings::flags::value_of(matches, &admin_info::$aname, &mut origins);)*
                $(
                    for entry in $crate::settings::flags::service_values_of::<$sty>(
                        matches, &service_info::$sname, &mut origins,
                    ) {
                        layer.services.entry(entry.service).or_default().$sname = Some(entry.value);
                    }
                )*
                (layer, origins)
            }
        }

        impl AdminLayer {
            fn is_empty(&self) -> bool {
                *self == AdminLayer::default()
            }
        }
    };
}

pub(crate) use {at, check_bounds, first, info, optional_at, service_map, settings};
