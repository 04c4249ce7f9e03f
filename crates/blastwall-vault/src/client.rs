//! The HTTP client of the vault's API, used by `backup run`, `check-immutability`, drills and
//! restores. One request at a time, each body a part (bounded), never a whole backup.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::objects::ObjectMeta;

/// Header carrying the SHA-256 (hex) the client declares for an upload's body.
pub const SHA256_HEADER: &str = "x-blastwall-sha256";

/// Time limit of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The most of an error answer's body read.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// What `/v1/info` says about a vault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaultInfo {
    /// The vault host's machine id (for the same-volume guard).
    pub machine_id: String,
    /// The device id of the filesystem holding the vault's data.
    pub device: u64,
    /// The minimum retention, in seconds.
    pub min_retention_secs: u64,
    /// The age recipient backups are encrypted to.
    pub recipient: String,
    /// The role of the credential that asked.
    pub role: String,
}

/// An answer to a create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutAnswer {
    /// The object as stored.
    #[serde(flatten)]
    pub meta: ObjectMeta,
    /// Whether it was new (false: the same bytes were already there).
    pub created: bool,
}

/// A client of one vault, with one credential. `Debug` never shows the credential.
#[derive(Clone)]
pub struct VaultClient {
    base: String,
    credential: SecretString,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultClient({}, ***)", self.base)
    }
}

impl VaultClient {
    /// A client of the vault at `base` (`http://host:port` or `https://host:port`); an HTTPS
    /// vault's certificate is checked against the system's roots.
    pub fn new(base: &str, credential: SecretString) -> Result<Self, VaultError> {
        Self::with_ca(base, credential, None)
    }

    /// A client of the vault at `base`; an HTTPS vault's certificate is checked against the
    /// system's roots and the certificates in `ca_file` (PEM).
    pub fn with_ca(
        base: &str,
        credential: SecretString,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, VaultError> {
        let tls = crate::tls::client_config(ca_file)?;
        Self::build(base, credential, tls)
    }

    /// A client that trusts exactly the certificate `leaf`, whatever name the vault is reached
    /// by (the vault's own drill scheduler, on its listening address).
    pub fn pinned(
        base: &str,
        credential: SecretString,
        leaf: rustls::pki_types::CertificateDer<'static>,
    ) -> Result<Self, VaultError> {
        let tls = crate::tls::pinned_client_config(leaf)?;
        Self::build(base, credential, tls)
    }

    fn build(
        base: &str,
        credential: SecretString,
        tls: rustls::ClientConfig,
    ) -> Result<Self, VaultError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(VaultError::Unreachable {
                url: base,
                why: "a vault URL starts with `https://` or `http://`".into(),
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new()).build(https);
        Ok(Self {
            base,
            credential,
            http,
        })
    }

    /// The vault's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request; returns the status and body of a 2xx answer, else the vault's error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), VaultError> {
        let (status, body) = self.open(method, path, headers, body).await?;
        let bytes = body
            .collect()
            .await
            .map_err(|e| VaultError::Unreachable {
                url: self.base.clone(),
                why: e.to_string(),
            })?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Reads `name` into `sink` as it arrives, failing once more than `max` bytes have come
    /// (memory stays flat, whatever the object's size); returns the number of bytes.
    pub async fn get_into(
        &self,
        name: &str,
        sink: &mut dyn std::io::Write,
        max: u64,
    ) -> Result<u64, VaultError> {
        let (_, mut body) = self
            .open(
                Method::GET,
                &format!("/v1/objects/{name}"),
                &[],
                Bytes::new(),
            )
            .await?;
        let cut = |why: String| VaultError::Unreachable {
            url: self.base.clone(),
            why,
        };
        let mut n = 0u64;
        loop {
            let frame = tokio::time::timeout(REQUEST_TIMEOUT, body.frame())
                .await
                .map_err(|_| cut(format!("`{name}` stopped arriving")))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| cut(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            n = n.saturating_add(data.len() as u64);
            if n > max {
                return Err(VaultError::TooLarge {
                    name: name.to_owned(),
                    max,
                });
            }
            sink.write_all(&data)
                .map_err(|e| VaultError::io("write", name, e))?;
        }
        Ok(n)
    }

    /// Sends one request; returns the status and the unread body of a 2xx answer, else the
    /// vault's error.
    async fn open(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(StatusCode, hyper::body::Incoming), VaultError> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.credential.expose_secret()),
            )
            .header(http::header::CONTENT_LENGTH, body.len());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| VaultError::Unreachable {
                url: self.base.clone(),
                why: e.to_string(),
            })?;
        let unreachable = |why: String| VaultError::Unreachable {
            url: self.base.clone(),
            why,
        };
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| unreachable("no answer in time".into()))?
            .map_err(|e| {
                let why = blastwall_core::error_chain(&e);
                if why.contains("invalid peer certificate") {
                    VaultError::Untrusted {
                        url: self.base.clone(),
                        why: certificate_problem(&why),
                    }
                } else {
                    unreachable(why)
                }
            })?;
        let status = resp.status();
        let body = resp.into_body();
        if status.is_success() {
            return Ok((status, body));
        }
        // An error answer is a small JSON object: read no more of it than that.
        let bytes = http_body_util::Limited::new(body, ERROR_BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        #[derive(Deserialize)]
        struct Body {
            error: String,
            message: String,
        }
        let (code, message) = serde_json::from_slice::<Body>(&bytes).map_or_else(
            |_| {
                (
                    "error".to_owned(),
                    String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                )
            },
            |b| (b.error, b.message),
        );
        if code == "https_required" {
            return Err(VaultError::HttpsRequired {
                url: self.base.clone(),
            });
        }
        Err(VaultError::Remote {
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// Creates `name` with `bytes` (create-only; the same bytes again is a no-op).
    pub async fn put(&self, name: &str, bytes: Bytes) -> Result<PutAnswer, VaultError> {
        let sha = crate::sha256_hex(&bytes);
        self.put_hashed(name, bytes, sha).await
    }

    /// Creates `name` with `bytes` whose SHA-256 (hex) the caller has already computed.
    pub async fn put_hashed(
        &self,
        name: &str,
        bytes: Bytes,
        sha: String,
    ) -> Result<PutAnswer, VaultError> {
        let (_, body) = self
            .send(
                Method::PUT,
                &format!("/v1/objects/{name}"),
                &[(SHA256_HEADER, sha)],
                bytes,
            )
            .await?;
        json(&body)
    }

    /// Reads `name`.
    pub async fn get(&self, name: &str) -> Result<Bytes, VaultError> {
        let (_, body) = self
            .send(
                Method::GET,
                &format!("/v1/objects/{name}"),
                &[],
                Bytes::new(),
            )
            .await?;
        Ok(body)
    }

    /// Asks to delete `name` (only an admin, only once its retention has ended).
    pub async fn delete(&self, name: &str) -> Result<(), VaultError> {
        self.send(
            Method::DELETE,
            &format!("/v1/objects/{name}"),
            &[],
            Bytes::new(),
        )
        .await
        .map(|_| ())
    }

    /// Lists the objects whose names start with `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, VaultError> {
        let (_, body) = self
            .send(
                Method::GET,
                &format!("/v1/list?prefix={prefix}"),
                &[],
                Bytes::new(),
            )
            .await?;
        json(&body)
    }

    /// Asks to set `name`'s retain-until (only an admin, only later).
    pub async fn set_retention(&self, name: &str, retain_until: &str) -> Result<(), VaultError> {
        let body = serde_json::json!({ "retain_until": retain_until }).to_string();
        self.send(
            Method::PUT,
            &format!("/v1/retention/{name}"),
            &[("content-type", "application/json".into())],
            Bytes::from(body),
        )
        .await
        .map(|_| ())
    }

    /// Asks to set the minimum retention (only an admin, only longer).
    pub async fn set_policy(&self, min_retention_secs: u64) -> Result<(), VaultError> {
        let body = serde_json::json!({ "min_retention_secs": min_retention_secs }).to_string();
        self.send(
            Method::PUT,
            "/v1/policy",
            &[("content-type", "application/json".into())],
            Bytes::from(body),
        )
        .await
        .map(|_| ())
    }

    /// The vault's identity and policy.
    pub async fn info(&self) -> Result<VaultInfo, VaultError> {
        let (_, body) = self
            .send(Method::GET, "/v1/info", &[], Bytes::new())
            .await?;
        json(&body)
    }

    /// Records a drill's result in the vault.
    pub async fn record_drill(&self, drill: &crate::drill::DrillRecord) -> Result<(), VaultError> {
        let body = serde_json::to_vec(drill)
            .map_err(|e| VaultError::Other(format!("cannot encode a drill: {e}")))?;
        self.send(
            Method::POST,
            "/v1/drills",
            &[("content-type", "application/json".into())],
            Bytes::from(body),
        )
        .await
        .map(|_| ())
    }

    /// Every drill recorded in the vault.
    pub async fn drills(&self) -> Result<Vec<crate::drill::DrillRecord>, VaultError> {
        let (_, body) = self
            .send(Method::GET, "/v1/drills", &[], Bytes::new())
            .await?;
        json(&body)
    }
}

fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, VaultError> {
    serde_json::from_slice(body)
        .map_err(|e| VaultError::Other(format!("the vault's answer is not understood: {e}")))
}

/// What is wrong with the vault's certificate, in words, from rustls's error text.
fn certificate_problem(chain: &str) -> String {
    let detail = chain
        .rsplit("invalid peer certificate: ")
        .next()
        .unwrap_or_default();
    let known = [
        (
            "UnknownIssuer",
            "it is signed by an issuer this host does not trust",
        ),
        ("NotValidForName", "it does not name the host in the URL"),
        ("Expired", "it has expired"),
        ("NotValidYet", "it is not valid yet"),
        ("BadSignature", "its signature does not verify"),
        ("Revoked", "it was revoked"),
        (
            "CaUsedAsEndEntity",
            "it is a CA certificate served as the vault's own; serve a leaf certificate signed by it",
        ),
    ];
    known
        .iter()
        .find(|(k, _)| detail.contains(k))
        .map_or_else(|| detail.to_owned(), |(_, words)| (*words).to_owned())
}
