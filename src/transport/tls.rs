//! TLS for SIPS (5061) and WSS: rustls with the ring provider. The certificate comes from
//! PEM files, or is a self-signed one generated on first start and kept in the state
//! directory so that a browser told to trust it once keeps trusting it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub type TlsAcceptor = tokio_rustls::TlsAcceptor;
pub type TlsConnector = tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate chain {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("cannot read private key {path}: {reason}")]
    PrivateKey { path: PathBuf, reason: String },
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read trusted certificates {path}: {reason}")]
    Trust { path: PathBuf, reason: String },
    #[error("no trusted certificates: the system store is empty and no tls.trunk_ca_file is set")]
    NoTrust,
    #[error("cannot write the generated certificate to {path}: {source}")]
    Store { path: PathBuf, source: std::io::Error },
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    Files {
        certificate: PathBuf,
        private_key: PathBuf,
    },
    /// Self-signed for `names`, created under `state_dir/tls/` when not there yet.
    SelfSigned {
        state_dir: PathBuf,
        names: Vec<String>,
    },
}

/// Loads (or first creates) the certificate and builds the acceptor.
pub fn acceptor(source: &CertificateSource) -> Result<TlsAcceptor, TlsError> {
    let (cert_path, key_path) = match source {
        CertificateSource::Files { certificate, private_key } => (certificate.clone(), private_key.clone()),
        CertificateSource::SelfSigned { state_dir, names } => ensure_self_signed(state_dir, names)?,
    };
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate { path: cert_path.clone(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate { path: cert_path, reason: "no CERTIFICATE block".into() });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| TlsError::PrivateKey { path: key_path.clone(), reason: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The client side toward TLS trunks: their certificates are checked against the system's
/// trusted roots, plus those of `ca_file` (a private CA, or a self-signed trunk).
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    let (_added, _ignored) = roots.add_parsable_certificates(system.certs);
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::Trust { path: path.to_path_buf(), reason: e.to_string() })?;
        if certs.is_empty() {
            return Err(TlsError::Trust { path: path.to_path_buf(), reason: "no CERTIFICATE block".into() });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| TlsError::Trust { path: path.to_path_buf(), reason: e.to_string() })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoTrust);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The paths of the generated certificate and key, creating them when missing.
pub fn ensure_self_signed(state_dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = state_dir.join("tls");
    let cert_path = dir.join("self-signed.crt");
    let key_path = dir.join("self-signed.key");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let generated = rcgen::generate_simple_self_signed(names.to_vec())?;
    let store = |path: &Path, contents: &str, private: bool| -> Result<(), TlsError> {
        let err = |source| TlsError::Store { path: path.to_path_buf(), source };
        std::fs::create_dir_all(&dir).map_err(err)?;
        write_file(path, contents.as_bytes(), private).map_err(err)
    };
    store(&key_path, &generated.signing_key.serialize_pem(), true)?;
    store(&cert_path, &generated.cert.pem(), false)?;
    tracing::info!(certificate = %cert_path.display(), names = ?names, "generated a self-signed certificate");
    Ok((cert_path, key_path))
}

#[cfg(unix)]
fn write_file(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path)?;
    file.write_all(contents)
}

#[cfg(not(unix))]
fn write_file(path: &Path, contents: &[u8], _private: bool) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
