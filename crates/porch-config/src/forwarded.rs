//! Which peers may speak for the client through `X-Forwarded-*`: trusting anyone else
//! would let a client forge its address and scheme.

use std::net::IpAddr;

use crate::ConfigError;

/// Which peers may tell porch the client's address and scheme through `X-Forwarded-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxies {
    All,
    Ips(Vec<IpAddr>),
}

impl TrustedProxies {
    pub(crate) fn parse(s: &str) -> Result<Self, ConfigError> {
        if s.trim() == "*" {
            return Ok(TrustedProxies::All);
        }
        let ips = s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| {
                x.parse().map_err(|_| {
                    ConfigError::value(
                        "forwarded_allow_ips",
                        x,
                        "comma-separated IP addresses or '*'",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies::Ips(ips))
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            TrustedProxies::All => true,
            TrustedProxies::Ips(ips) => ips.contains(&ip),
        }
    }
}
