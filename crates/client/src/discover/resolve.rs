//! Looks a replica set up in DNS (hickory): with the system's configuration or one
//! named server, without a cache, so that every lookup asks the server.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, Record};

use super::source::DnsSource;

/// The most records of one answer that are looked at (and, for SRV, the most
/// targets looked up); the replica set is bounded further by its own limit.
pub const MAX_RECORDS: usize = 256;

/// How long the resolver waits for one answer before it asks again (twice in all).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a lookup gave no answer. An answer without records is not an error: it is
/// an empty list.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// The system's resolver configuration cannot be read (or names no server).
    #[error("cannot read the system's DNS configuration (/etc/resolv.conf): {0}")]
    System(String),
    #[error("looking up {name} failed: {reason}")]
    Lookup { name: String, reason: String },
    #[error("looking up {name} took longer than {after:?}")]
    Timeout { name: String, after: Duration },
}

/// A DNS resolver for replica sets.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// Asks `server` (UDP, then TCP for a truncated answer) for names as given, or
    /// with `None` the servers, search domains and options of `/etc/resolv.conf`
    /// and `/etc/hosts`, as a pod's resolver would. Its background tasks run on the
    /// runtime of the first lookup: use it from one runtime.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, ResolveError> {
        let provider = TokioRuntimeProvider::new();
        let mut builder = match server {
            None => {
                TokioResolver::builder(provider).map_err(|error| ResolveError::System(error.to_string()))?
            }
            Some(server) => {
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.port();
                }
                let config = ResolverConfig::from_name_servers(vec![name_server]);
                let mut builder = TokioResolver::builder_with_config(config, provider);
                builder.options_mut().use_hosts_file = ResolveHosts::Never;
                builder
            }
        };
        let options = builder.options_mut();
        // Each lookup is a fresh look at the set: the re-resolve interval, not a
        // record's TTL, says how often the set is checked.
        options.cache_size = 0;
        options.positive_max_ttl = Some(Duration::ZERO);
        options.negative_max_ttl = Some(Duration::ZERO);
        // One address family: a dual-stack replica published with an A and an AAAA
        // record would otherwise be two replicas, and count each backend twice.
        options.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        options.timeout = QUERY_TIMEOUT;
        options.attempts = 2;
        let inner = builder.build().map_err(|error| ResolveError::System(error.to_string()))?;
        Ok(Resolver { inner })
    }

    /// The replicas `source` names now, within `timeout`; an empty list when the
    /// name exists but has no records, or does not exist.
    pub async fn lookup(
        &self,
        source: &DnsSource,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let lookup = async {
            match source {
                DnsSource::Addresses { name, port } => {
                    let ips = self.ips(name).await?;
                    Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port.get())).collect())
                }
                DnsSource::Srv { name } => self.srv(name).await,
            }
        };
        match tokio::time::timeout(timeout, lookup).await {
            Ok(result) => result,
            Err(_) => Err(ResolveError::Timeout { name: source.name().to_owned(), after: timeout }),
        }
    }

    /// The addresses of `name`: IPv4 if it has any, else IPv6.
    async fn ips(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        match self.inner.lookup_ip(name).await {
            Ok(lookup) => Ok(lookup.iter().take(MAX_RECORDS).collect()),
            Err(error) => no_records(name, error),
        }
    }

    /// Every SRV record's target at its port. A target's addresses come from the
    /// answer's additional section when the server put them there (as Kubernetes and
    /// Consul do), else from a lookup of their own.
    async fn srv(&self, name: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let lookup = match self.inner.srv_lookup(name).await {
            Ok(lookup) => lookup,
            Err(error) => return no_records(name, error),
        };
        let targets = lookup.answers().iter().take(MAX_RECORDS).filter_map(|record| match &record.data {
            RData::SRV(srv) => Some((srv.target.clone(), srv.port)),
            _ => None,
        });
        let mut replicas = Vec::new();
        for (target, port) in targets.collect::<Vec<_>>() {
            let mut ips = addresses_of(&target, lookup.additionals());
            if ips.is_empty() {
                ips = self.ips(&target.to_string()).await?;
            }
            replicas.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
            if replicas.len() >= MAX_RECORDS {
                break;
            }
        }
        replicas.truncate(MAX_RECORDS);
        Ok(replicas)
    }
}

/// The IPv4 addresses `records` give for `target`, else its IPv6 ones.
fn addresses_of(target: &Name, records: &[Record]) -> Vec<IpAddr> {
    let of_target = || records.iter().filter(|record| record.name == *target);
    let v4: Vec<IpAddr> = of_target()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    if !v4.is_empty() {
        return v4;
    }
    of_target()
        .filter_map(|record| match &record.data {
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

/// An answer without records (the name exists but has none, or does not exist) is
/// an empty list; any other failure is an error.
fn no_records<T>(name: &str, error: NetError) -> Result<Vec<T>, ResolveError> {
    if error.is_no_records_found() {
        return Ok(Vec::new());
    }
    Err(ResolveError::Lookup { name: name.to_owned(), reason: error.to_string() })
}
