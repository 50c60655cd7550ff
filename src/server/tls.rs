//! HTTPS: rustls (ring provider), TLS 1.2 and 1.3 only, HTTP/1.1 over it.
//!
//! The certificate chain and key are PEM files (`tls.cert_file`, `tls.key_file`), re-read
//! when they change (cert-manager renews them in place): a new pair is checked (it parses,
//! the key matches the certificate) and swapped in for the next handshakes; connections
//! already open keep the pair they started with. A bad new pair is logged and counted
//! (`minidb_reload_errors_total{file="tls"}`) and the old one keeps being served.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::reload::{self, Watched};
use crate::config::TlsConfig;
use crate::telemetry::metrics::Metrics;

/// Largest certificate or key file, in bytes.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Setting up TLS failed (the files at start-up).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate or key could not be read or used.
    #[error("tls.cert_file/tls.key_file: {0}")]
    Load(String),
}

/// The certificate in force and the settings of `[tls]`.
pub struct Tls {
    config: Arc<ArcSwap<ServerConfig>>,
    files: Vec<PathBuf>,
    reload_interval: Duration,
    /// A handshake must finish within this.
    pub handshake_timeout: Duration,
    fingerprint: u64,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the pair of `cfg`; `None` when TLS is off. Blocking (it reads the files).
    pub fn load(cfg: &TlsConfig) -> Result<Option<Arc<Tls>>, TlsError> {
        let (Some(cert), Some(key)) = (cfg.cert_file.clone(), cfg.key_file.clone()) else {
            return Ok(None);
        };
        let files = vec![cert, key];
        let (contents, fingerprint) = reload::read_all(&files, MAX_PEM_BYTES);
        let server = contents
            .and_then(|c| server_config(&c[0], &c[1]))
            .map_err(TlsError::Load)?;
        Ok(Some(Arc::new(Tls {
            config: Arc::new(ArcSwap::from_pointee(server)),
            files,
            reload_interval: Duration::from_millis(cfg.reload_interval_ms),
            handshake_timeout: Duration::from_secs(cfg.handshake_timeout_secs),
            fingerprint,
        })))
    }

    /// An acceptor with the pair in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }

    /// Re-reads the pair whenever either file changes (see `reload`).
    pub fn spawn_reloader(&self, metrics: Option<Arc<Metrics>>) -> tokio::task::JoinHandle<()> {
        let config = self.config.clone();
        let apply: reload::Apply = Arc::new(move |c: &[Vec<u8>]| {
            config.store(Arc::new(server_config(&c[0], &c[1])?));
            Ok("TLS certificate and key".into())
        });
        reload::spawn(
            Watched::Tls,
            self.files.clone(),
            MAX_PEM_BYTES,
            self.reload_interval,
            self.fingerprint,
            apply,
            metrics,
        )
    }
}

/// A rustls server configuration from PEM: TLS 1.2+, HTTP/1.1, the key checked against
/// the leaf certificate.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig, String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate file is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the key file holds no usable private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key cannot be used together: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
