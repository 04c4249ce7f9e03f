//! `backup check-immutability`: try, with the writer credential, everything that must be refused.

use bytes::Bytes;
use serde::Serialize;

use blastwall_vault::VaultError;
use blastwall_vault::client::VaultClient;
use blastwall_vault::store::BackupStore;

/// One attempt and how the vault answered.
#[derive(Debug, Serialize)]
pub(crate) struct Probe {
    pub(crate) probe: String,
    pub(crate) refused: bool,
    pub(crate) answer: String,
}

fn probe(name: &str, result: Result<(), VaultError>) -> Probe {
    match result {
        Ok(()) => Probe {
            probe: name.to_owned(),
            refused: false,
            answer: "accepted".into(),
        },
        Err(VaultError::Remote { status, code, .. }) => Probe {
            probe: name.to_owned(),
            refused: true,
            answer: format!("HTTP {status} {code}"),
        },
        Err(e) => Probe {
            probe: name.to_owned(),
            refused: false,
            answer: format!("could not tell: {}", blastwall_vault::drill::one_line(&e)),
        },
    }
}

/// Writes a canary, then tries to delete it, overwrite it, shorten its retention, shorten the
/// policy, and delete the latest real backup's manifest. Every probe must be refused.
pub(crate) async fn run(client: &VaultClient) -> Result<Vec<Probe>, VaultError> {
    let mut r = [0u8; 6];
    getrandom_fill(&mut r);
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let canary = format!("canary/{stamp}-{}", hex(&r));
    let created = client
        .put(&canary, Bytes::from(format!("blastwall canary {stamp}")))
        .await?;
    let mut probes = vec![
        probe("delete a backup object", client.delete(&canary).await),
        probe(
            "overwrite a backup object",
            client
                .put(&canary, Bytes::from_static(b"overwritten"))
                .await
                .map(|_| ()),
        ),
        probe(
            "shorten an object's retention",
            client
                .set_retention(&canary, &jiff::Timestamp::now().to_string())
                .await,
        ),
        probe("shorten the retention policy", client.set_policy(0).await),
    ];
    if let Ok(backups) =
        blastwall_vault::drill::list_backups(&BackupStore::from(client.clone()), None).await
        && let Some(b) = backups.last()
    {
        let name = blastwall_vault::manifest::manifest_name(&b.source, &b.id);
        probes.push(probe(
            "delete the latest backup's manifest",
            client.delete(&name).await,
        ));
    }
    tracing::info!(canary = %canary, retain_until = %created.meta.retain_until, "immutability probes done");
    Ok(probes)
}

fn getrandom_fill(buf: &mut [u8]) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (nanos >> ((i % 4) * 8)) as u8 ^ (i as u8).wrapping_mul(37);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
