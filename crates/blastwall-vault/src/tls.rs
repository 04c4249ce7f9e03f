//! TLS for the vault: the server's certificate and key (PEM files named by `--tls-cert` and
//! `--tls-key`), and the client's trust (the system's roots plus an optional CA file per target).
//! Verification is never turned off: the in-process drill scheduler, which reaches the vault by
//! its listening address rather than a name on the certificate, pins the served certificate
//! itself and still checks the handshake's signatures.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::error::VaultError;

/// A server configuration ready to accept TLS, and the certificate it serves.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The rustls configuration (HTTP/1.1 and HTTP/2 offered by ALPN).
    pub config: Arc<ServerConfig>,
    /// The end-entity certificate served (pinned by the in-process drill scheduler).
    pub leaf: CertificateDer<'static>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM certificate chain and its PEM private key; each problem names its file.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerTls, VaultError> {
    let bad = |path: &Path, why: String| VaultError::TlsFile {
        path: path.to_path_buf(),
        why,
    };
    let chain = read_certs(cert).map_err(|why| bad(cert, why))?;
    let leaf = chain
        .first()
        .cloned()
        .ok_or_else(|| bad(cert, "no PEM certificate in the file".into()))?;
    let key_bytes = zeroize::Zeroizing::new(
        std::fs::read(key).map_err(|e| bad(key, format!("cannot read it: {e}")))?,
    );
    let private: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_bytes.as_slice())
        .map_err(|e| bad(key, format!("not a PEM file: {e}")))?
        .ok_or_else(|| bad(key, "no PEM private key in the file".into()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| VaultError::Other(format!("cannot set up TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            bad(
                key,
                format!(
                    "it does not go with the certificate `{}`: {e}",
                    cert.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        leaf,
    })
}

/// A client configuration trusting the system's roots and, when given, the certificates in
/// `ca_file` (PEM).
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, VaultError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "could not load a system root certificate");
    }
    for c in native.certs {
        let _ = roots.add(c);
    }
    if let Some(path) = ca_file {
        let bad = |why: String| VaultError::TlsFile {
            path: path.to_path_buf(),
            why,
        };
        let certs = read_certs(path).map_err(bad)?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in the file".into()));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| VaultError::Other(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client configuration that accepts exactly the certificate `leaf` (and checks that the
/// server holds its key), whatever name or address it is reached by.
pub fn pinned_client_config(leaf: CertificateDer<'static>) -> Result<ClientConfig, VaultError> {
    let provider = provider();
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| VaultError::Other(format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { leaf, provider }))
        .with_no_client_auth())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM file: {e}"))
}

#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let e = server_config(&cert, &key).unwrap_err().to_string();
        assert!(
            e.contains("cert.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        let e = server_config(&cert, &key).unwrap_err().to_string();
        assert!(
            e.contains("key.pem") && e.contains("no PEM private key"),
            "{e}"
        );
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let e = server_config(&cert, &key).unwrap_err().to_string();
        assert!(
            e.contains("key.pem") && e.contains("does not go with"),
            "{e}"
        );
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        server_config(&cert, &key).unwrap();
        let e = client_config(Some(&key)).unwrap_err().to_string();
        assert!(e.contains("key.pem"), "{e}");
        client_config(Some(&cert)).unwrap();
    }
}
