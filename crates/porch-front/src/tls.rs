//! TLS for listeners, with rustls: PEM certificate chains and keys, one certificate per
//! server name (SNI), HTTP/2 and HTTP/1.1 offered by ALPN.
//!
//! Everything is read and checked at start-up (and by `--check-config`), so a missing file,
//! a file without the expected PEM block or a key that does not belong to its certificate
//! stops porch with a message naming the file.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use porch_config::{CertKey, ListenerConfig, TlsConfig};

/// ALPN protocol names, in the server's order of preference.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Why a listener's TLS could not be set up.
#[derive(Debug)]
pub struct TlsError {
    /// Where in the configuration, e.g. `listener[0].tls`.
    pub key: String,
    /// The file at fault, when there is one.
    pub file: Option<PathBuf>,
    pub what: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "{}: {}: {}", self.key, p.display(), self.what),
            None => write!(f, "{}: {}", self.key, self.what),
        }
    }
}

impl std::error::Error for TlsError {}

/// Reads the certificates of every TLS listener; `None` for plain listeners. The result is
/// indexed like `listeners`.
pub fn load_all(listeners: &[ListenerConfig]) -> Result<Vec<Option<TlsAcceptor>>, TlsError> {
    listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.tls
                .as_ref()
                .map(|t| acceptor(&format!("listener[{i}].tls"), t))
                .transpose()
        })
        .collect()
}

/// A TLS acceptor for one listener's configuration; `key` names it in errors.
pub fn acceptor(key: &str, cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(key, cfg)?)))
}

/// The rustls configuration for one listener.
pub fn server_config(key: &str, cfg: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut resolver = SniResolver::default();
    for (i, ck) in cfg.certs.iter().enumerate() {
        let key = if cfg.certs.len() > 1 {
            format!("{key}.certs[{i}]")
        } else {
            key.to_string()
        };
        let (certified, names) = load_cert_key(&key, ck, &provider)?;
        resolver.add(Arc::new(certified), names);
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            key: key.to_string(),
            file: None,
            what: format!("no usable TLS protocol version: {e}"),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(config)
}

/// Reads one certificate chain and its private key, checks that they belong together and
/// returns them with the DNS names the certificate is valid for.
fn load_cert_key(
    key: &str,
    ck: &CertKey,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, Vec<String>), TlsError> {
    let fail = |file: &Path, what: String| TlsError {
        key: key.to_string(),
        file: Some(file.to_path_buf()),
        what,
    };
    let pem = read(&ck.cert).map_err(|e| fail(&ck.cert, e))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&ck.cert, format!("not a valid PEM file: {e}")))?;
    if chain.is_empty() {
        return Err(fail(
            &ck.cert,
            "no certificate in it (expected a `-----BEGIN CERTIFICATE-----` block)".into(),
        ));
    }
    let end_entity = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
        fail(
            &ck.cert,
            format!("the first certificate is not a valid X.509 certificate: {e}"),
        )
    })?;
    let names: Vec<String> = end_entity
        .valid_dns_names()
        .map(|n| n.to_ascii_lowercase())
        .collect();

    let pem = read(&ck.key).map_err(|e| fail(&ck.key, e))?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => fail(
            &ck.key,
            "no private key in it (expected a `-----BEGIN PRIVATE KEY-----`, \
             `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)"
                .into(),
        ),
        e => fail(&ck.key, format!("not a valid PEM file: {e}")),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| fail(&ck.key, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        return Err(fail(
            &ck.key,
            format!(
                "this private key does not belong to the certificate in {}",
                ck.cert.display()
            ),
        ));
    }
    Ok((certified, names))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

/// Chooses the certificate by the name the client asked for (SNI): an exact name from a
/// certificate's subject alternative names first, then a wildcard (`*.example.com`); the
/// first certificate when nothing matches or the client sent no name.
#[derive(Default)]
struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
    /// Exact names, lower case → index in `certs` (the first certificate naming it wins).
    exact: HashMap<String, usize>,
    /// `*.example.com` stored as `example.com` → index.
    wildcard: HashMap<String, usize>,
}

impl SniResolver {
    fn add(&mut self, cert: Arc<CertifiedKey>, names: Vec<String>) {
        let index = self.certs.len();
        self.certs.push(cert);
        self.add_names(index, names);
    }

    fn add_names(&mut self, index: usize, names: Vec<String>) {
        for name in names {
            match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.entry(parent.to_string()).or_insert(index),
                None => self.exact.entry(name).or_insert(index),
            };
        }
    }

    fn index_for(&self, server_name: Option<&str>) -> usize {
        let Some(name) = server_name else { return 0 };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return i;
        }
        // A wildcard stands for exactly one leftmost label.
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(&i) = self.wildcard.get(parent) {
                return i;
            }
        }
        0
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("certs", &self.certs.len())
            .field("exact", &self.exact)
            .field("wildcard", &self.wildcard)
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = self.index_for(hello.server_name());
        self.certs.get(i).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(names: &[&[&str]]) -> SniResolver {
        let mut r = SniResolver::default();
        for (i, ns) in names.iter().enumerate() {
            r.add_names(i, ns.iter().map(|n| n.to_string()).collect());
        }
        r
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_first() {
        let r = resolver(&[
            &["a.example"],
            &["b.example", "*.b.example"],
            &["*.example"],
        ]);
        assert_eq!(r.index_for(None), 0);
        assert_eq!(r.index_for(Some("a.example")), 0);
        assert_eq!(r.index_for(Some("B.Example")), 1);
        assert_eq!(r.index_for(Some("b.example.")), 1);
        assert_eq!(r.index_for(Some("x.b.example")), 1);
        assert_eq!(r.index_for(Some("c.example")), 2);
        // A wildcard covers one label only.
        assert_eq!(r.index_for(Some("y.x.example")), 0);
        assert_eq!(r.index_for(Some("other.test")), 0);
    }

    #[test]
    fn missing_files_are_named() {
        let cfg = TlsConfig {
            certs: vec![CertKey {
                cert: "/nonexistent/porch-cert.pem".into(),
                key: "/nonexistent/porch-key.pem".into(),
            }],
            hsts_max_age: None,
        };
        let err = server_config("listener[0].tls", &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("listener[0].tls"), "{err}");
        assert!(err.contains("/nonexistent/porch-cert.pem"), "{err}");
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let cfg = TlsConfig {
            certs: vec![CertKey {
                cert: cert.clone(),
                key: dir.path().join("key.pem"),
            }],
            hsts_max_age: None,
        };
        let err = server_config("listener[1].tls", &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&cert.display().to_string()), "{err}");
        assert!(err.contains("no certificate"), "{err}");
    }
}
