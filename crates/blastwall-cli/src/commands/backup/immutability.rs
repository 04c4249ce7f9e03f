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

/// Judges one attempt: refused only with an answer that says the guarantee held (`refusals`: the
/// vault's error codes for "not allowed", "retained", "exists", "would shorten"). Any other answer
/// (401, 404, 500, a proxy's 502, a network error) proves nothing, and is not a refusal.
fn probe(name: &str, result: Result<(), VaultError>, refusals: &[&str]) -> Probe {
    match result {
        Ok(()) => Probe {
            probe: name.to_owned(),
            refused: false,
            answer: "accepted".into(),
        },
        Err(VaultError::Remote { status, code, .. }) if refusals.contains(&code.as_str()) => {
            Probe {
                probe: name.to_owned(),
                refused: true,
                answer: format!("HTTP {status} {code}"),
            }
        }
        Err(VaultError::Remote { status, code, .. }) => Probe {
            probe: name.to_owned(),
            refused: false,
            answer: format!(
                "could not tell: HTTP {status} {code} is not a refusal of this (expected {})",
                refusals.join(" or ")
            ),
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
        retained(&created.meta.received, &created.meta.retain_until),
        probe(
            "delete a backup object",
            client.delete(&canary).await,
            &["forbidden", "retained"],
        ),
        probe(
            "overwrite a backup object",
            client
                .put(&canary, Bytes::from_static(b"overwritten"))
                .await
                .map(|_| ()),
            &["forbidden", "conflict"],
        ),
        probe(
            "shorten an object's retention",
            client
                .set_retention(&canary, &jiff::Timestamp::now().to_string())
                .await,
            &["forbidden", "shorten_refused"],
        ),
        probe(
            "shorten the retention policy",
            client.set_policy(0).await,
            &["forbidden", "shorten_refused"],
        ),
    ];
    if let Ok(backups) =
        blastwall_vault::drill::list_backups(&BackupStore::from(client.clone()), None).await
        && let Some(b) = backups.last()
    {
        let name = blastwall_vault::manifest::manifest_name(&b.source, &b.id);
        probes.push(probe(
            "delete the latest backup's manifest",
            client.delete(&name).await,
            &["forbidden", "retained"],
        ));
    }
    // The control: the same credential still works and is the writer's, so the refusals above
    // were the vault's answer to a writer, not a broken credential or another server.
    let control = match client.info().await {
        Ok(info) if info.role == "writer" => Ok(()),
        Ok(info) => Err(VaultError::Other(format!(
            "the credential's role is `{}`, not `writer`",
            info.role
        ))),
        Err(e) => Err(e),
    };
    probes.push(match control {
        Ok(()) => Probe {
            probe: "control: the credential is a writer's and still works".into(),
            refused: true,
            answer: "writer".into(),
        },
        Err(e) => probe(
            "control: the credential is a writer's and still works",
            Err(e),
            &[],
        ),
    });
    tracing::info!(canary = %canary, retain_until = %created.meta.retain_until, "immutability probes done");
    Ok(probes)
}

/// Whether the vault gave the canary a retention that ends after it was received; an object with
/// none could be deleted by an admin at once, whatever the writer is refused.
fn retained(received: &str, retain_until: &str) -> Probe {
    let parse = |t: &str| t.parse::<jiff::Timestamp>().ok();
    let held = matches!((parse(received), parse(retain_until)), (Some(r), Some(u)) if u > r);
    Probe {
        probe: "the canary is retained".into(),
        refused: held,
        answer: if held {
            format!("retained until {retain_until}")
        } else {
            format!("received {received}, retained until `{retain_until}`: no retention")
        },
    }
}

fn getrandom_fill(buf: &mut [u8]) {
    // A unique name, not a secret; the OS's generator, else the clock.
    if getrandom::fill(buf).is_ok() {
        return;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(status: u16, code: &str) -> Result<(), VaultError> {
        Err(VaultError::Remote {
            status,
            code: code.into(),
            message: String::new(),
        })
    }

    /// Only the vault's own refusal proves the guarantee: an error page, a missing route or a
    /// proxy's answer is not a refusal, and neither is an accepted request.
    #[test]
    fn only_the_expected_refusals_count() {
        let refusals = ["forbidden", "retained"];
        assert!(probe("p", remote(403, "forbidden"), &refusals).refused);
        assert!(probe("p", remote(423, "retained"), &refusals).refused);
        for (status, code) in [
            (500, "internal"),
            (404, "not_found"),
            (401, "unauthorized"),
            (502, "error"),
        ] {
            let p = probe("p", remote(status, code), &refusals);
            assert!(!p.refused, "{status} {code}");
            assert!(p.answer.starts_with("could not tell"), "{}", p.answer);
        }
        assert!(!probe("p", Ok(()), &refusals).refused);
    }

    #[test]
    fn a_canary_without_retention_fails() {
        assert!(retained("2026-11-27T10:00:00Z", "2026-12-27T10:00:00Z").refused);
        assert!(!retained("2026-11-27T10:00:00Z", "2026-11-27T10:00:00Z").refused);
        assert!(!retained("2026-11-27T10:00:00Z", "").refused);
    }
}
