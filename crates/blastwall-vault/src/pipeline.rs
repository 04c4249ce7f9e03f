//! `backup run`: dump → zstd → age → fixed-size parts → vault, then the encrypted manifest.
//!
//! The dump is written by the source's producer on a blocking thread into a chain of writers
//! (count and BLAKE3 of the plain bytes, zstd, age's STREAM encryption, then a part splitter); each
//! full part is handed over a channel of capacity one to the uploader, so at most about three parts
//! are in memory whatever the backup's size. The manifest goes last: until it is in the vault, the
//! parts are not a backup (an interrupted run leaves nothing that `backup list` shows).

use std::io::Write;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use tracing::Instrument;

use crate::error::VaultError;
use crate::facts::Facts;
use crate::keys::BackupRecipient;
use crate::manifest::{FORMAT, Manifest, PartInfo, manifest_name, part_name};
use crate::source::{self, SourceSpec};
use crate::store::BackupStore;

/// The default part size: 8 MiB.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// The zstd level.
pub const ZSTD_LEVEL: i32 = 3;

/// What a backup run did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    /// The backup's id.
    pub id: String,
    /// The source.
    pub source: String,
    /// Its kind.
    pub kind: String,
    /// When the snapshot was taken.
    pub taken_at: String,
    /// Number of parts.
    pub parts: usize,
    /// Bytes stored in the vault (parts and manifest).
    pub stored_bytes: u64,
    /// Bytes of the plain dump.
    pub plain_bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The manifest's retain-until, as the vault set it.
    pub retain_until: String,
}

/// The error a part splitter returns once the uploader has stopped.
#[derive(Debug)]
pub struct SinkClosed;

impl std::fmt::Display for SinkClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upload stopped")
    }
}

impl std::error::Error for SinkClosed {}

/// Backs up `spec` to `store` (a vault or an S3 bucket), encrypted to `recipient`.
pub async fn run(
    spec: &SourceSpec,
    client: &BackupStore,
    recipient: &BackupRecipient,
    part_size: usize,
) -> Result<BackupSummary, VaultError> {
    let span = tracing::info_span!("backup", source = %spec.name, kind = %spec.kind);
    run_inner(spec, client, recipient, part_size.max(1024))
        .instrument(span)
        .await
}

async fn run_inner(
    spec: &SourceSpec,
    client: &BackupStore,
    recipient: &BackupRecipient,
    part_size: usize,
) -> Result<BackupSummary, VaultError> {
    let started = Instant::now();
    // Fail closed before dumping anything: an S3 bucket must lock what is written.
    let lock_days = client.check_locked().await?;
    let prepared = source::prepare(spec).await?;
    let id = crate::manifest::new_id(prepared.taken_at)?;
    tracing::info!(%id, "snapshot taken");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let producer = prepared.producer;
    let rcpt = recipient.clone();
    let name = spec.name.clone();
    let encode = tokio::task::spawn_blocking(move || encode(producer, &name, &rcpt, part_size, tx));
    let id_ref = &id;
    // `move`: the receiver is dropped as soon as an upload fails, which stops the encoder.
    let upload = async move {
        let mut parts = Vec::new();
        while let Some(buf) = rx.recv().await {
            let name = part_name(&spec.name, id_ref, parts.len());
            let bytes = Bytes::from(buf);
            let info = PartInfo {
                name: name.clone(),
                size: bytes.len() as u64,
                sha256: crate::sha256_hex(&bytes),
            };
            client.put_hashed(&name, bytes, info.sha256.clone()).await?;
            tracing::debug!(part = %name, size = info.size, "part stored");
            parts.push(info);
        }
        Ok::<_, VaultError>(parts)
    };
    let mut guard = prepared.guard;
    let (encoded, uploaded, snapshot_facts) = tokio::join!(encode, upload, guard.facts());
    guard.finish().await;
    let parts = uploaded?;
    let (streamed_facts, plain_bytes, plain_blake3) =
        encoded.map_err(|e| VaultError::Other(format!("the backup task failed: {e}")))??;
    let facts = prepared
        .facts
        .or(snapshot_facts?)
        .or(streamed_facts)
        .ok_or_else(|| VaultError::Other("the source recorded no facts".into()))?;
    let manifest = Manifest {
        format: FORMAT,
        id: id.clone(),
        source: spec.name.clone(),
        kind: spec.kind.to_string(),
        location: spec.display_location(),
        taken_at: prepared.taken_at.to_string(),
        finished_at: crate::now().to_string(),
        tools: prepared.tools,
        part_size: part_size as u64,
        parts,
        plain_bytes,
        plain_blake3,
        facts,
    };
    let sealed = manifest.encrypt(recipient)?;
    let sealed_len = sealed.len() as u64;
    let sealed_sha = crate::sha256_hex(&sealed);
    let answer = client
        .put_hashed(
            &manifest_name(&spec.name, &id),
            Bytes::from(sealed),
            sealed_sha,
        )
        .await?;
    let retain_until = match (answer.retain_until.is_empty(), lock_days) {
        // S3 sets retention from the bucket's default rule, counted from the object's creation.
        (true, Some(days)) => crate::now()
            .checked_add(jiff::SignedDuration::from_hours(i64::from(days) * 24))
            .map(|t| t.to_string())
            .unwrap_or_default(),
        _ => answer.retain_until,
    };
    let summary = BackupSummary {
        id,
        source: spec.name.clone(),
        kind: spec.kind.to_string(),
        taken_at: manifest.taken_at,
        parts: manifest.parts.len(),
        stored_bytes: manifest.parts.iter().map(|p| p.size).sum::<u64>() + sealed_len,
        plain_bytes,
        seconds: started.elapsed().as_secs_f64(),
        retain_until,
    };
    tracing::info!(id = %summary.id, parts = summary.parts, bytes = summary.stored_bytes, "backup stored");
    Ok(summary)
}

/// The blocking half: producer → count/hash → zstd → age → parts.
fn encode(
    producer: source::Producer,
    source_name: &str,
    recipient: &BackupRecipient,
    part_size: usize,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(Option<Facts>, u64, String), VaultError> {
    let enc_err = |e: std::io::Error| match e.get_ref().and_then(|i| i.downcast_ref::<SinkClosed>())
    {
        Some(_) => VaultError::Other("the upload stopped".into()),
        None => VaultError::Encrypt(e.to_string()),
    };
    let sink = PartSink {
        buf: Vec::with_capacity(part_size),
        part_size,
        tx,
    };
    let encryptor = age::Encryptor::with_recipients(std::iter::once(recipient.as_recipient()))
        .map_err(|e| VaultError::Encrypt(e.to_string()))?;
    let sealed = encryptor.wrap_output(sink).map_err(enc_err)?;
    let mut zstd = zstd::stream::write::Encoder::new(sealed, ZSTD_LEVEL).map_err(enc_err)?;
    // One zstd worker thread: compression overlaps with the dump, the encryption and the upload,
    // as the stages of `pg_dump | zstd | age` do.
    zstd.multithread(1).map_err(enc_err)?;
    let mut counting = Counting {
        inner: zstd,
        hasher: blake3::Hasher::new(),
        n: 0,
    };
    let facts = producer.run(source_name, &mut counting)?;
    let Counting { inner, hasher, n } = counting;
    let sealed = inner.finish().map_err(enc_err)?;
    let sink = sealed.finish().map_err(enc_err)?;
    sink.finish().map_err(enc_err)?;
    Ok((facts, n, hasher.finalize().to_hex().to_string()))
}

/// Splits a stream into `part_size` chunks handed to the uploader.
struct PartSink {
    buf: Vec<u8>,
    part_size: usize,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl PartSink {
    fn send(&mut self) -> std::io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part_size));
        self.tx
            .blocking_send(full)
            .map_err(|_| std::io::Error::other(SinkClosed))
    }

    fn finish(mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.part_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.part_size {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts and hashes what passes through.
struct Counting<W> {
    inner: W,
    hasher: blake3::Hasher,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sink_splits_exactly() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let mut s = PartSink {
            buf: Vec::new(),
            part_size: 4,
            tx,
        };
        s.write_all(b"0123456789").unwrap();
        s.finish().unwrap();
        let mut parts = Vec::new();
        while let Ok(p) = rx.try_recv() {
            parts.push(p);
        }
        assert_eq!(parts, [b"0123".to_vec(), b"4567".to_vec(), b"89".to_vec()]);
    }
}
