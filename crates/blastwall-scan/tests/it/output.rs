//! Output sinks (human, JSON lines, SARIF 2.1.0), baselines, and the rule that no output ever
//! holds a secret.

use std::fs;

use blastwall_core::{EnvName, Tier};
use blastwall_scan::{Baseline, HumanSink, JsonLinesSink, Report, SarifSink, Sink, WallFile};
use serde_json::Value;

use crate::support::{Rng, github_token, scanner};

/// A tree with a GitHub token, a fingerprinted canary and an unreadable entry.
fn report_with_canary() -> (Report, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(21);
    let token = github_token(&mut rng);
    let canary = format!("canary-{}", rng.alnum(24));
    fs::write(dir.path().join("a.env"), format!("TOKEN={token}\n")).unwrap();
    fs::write(
        dir.path().join("b.txt"),
        format!("a line\nthe canary {canary} sits here\n"),
    )
    .unwrap();
    let wall = WallFile::build(
        &EnvName::new("production").unwrap(),
        Tier::Prod,
        [canary.as_bytes()],
    )
    .unwrap();
    let report = scanner()
        .with_walls([wall])
        .scan_paths(&[dir.path().to_owned(), dir.path().join("missing")]);
    (report, vec![token, canary], dir)
}

fn render(report: &Report, sink: &mut dyn Sink) {
    report.write_to(sink).unwrap();
}

#[test]
fn no_output_holds_a_secret() {
    let (report, secrets, _dir) = report_with_canary();
    assert_eq!(report.findings.len(), 2);
    let mut human = HumanSink::new(Vec::new(), true, true);
    render(&report, &mut human);
    let mut jsonl = JsonLinesSink::new(Vec::new());
    render(&report, &mut jsonl);
    let mut sarif = SarifSink::new(Vec::new());
    render(&report, &mut sarif);
    let outputs = [
        String::from_utf8(human.into_inner()).unwrap(),
        String::from_utf8(jsonl.into_inner()).unwrap(),
        String::from_utf8(sarif.into_inner()).unwrap(),
        format!("{report:?}"),
    ];
    for out in &outputs {
        for secret in &secrets {
            // Not the secret, nor any long piece of it.
            for window in secret.as_bytes().windows(12) {
                let piece = std::str::from_utf8(window).unwrap();
                assert!(!out.contains(piece), "`{piece}` leaked into:\n{out}");
            }
        }
    }
}

#[test]
fn human_output_groups_and_summarizes() {
    let (report, _, dir) = report_with_canary();
    let mut human = HumanSink::new(Vec::new(), false, false);
    render(&report, &mut human);
    let text = String::from_utf8(human.into_inner()).unwrap();
    let root = dir.path().display().to_string();
    assert!(text.contains(&format!("{root}/a.env\n  1:7")), "{text}");
    assert!(text.contains("critical wall.fingerprint"), "{text}");
    assert!(
        text.contains("2 finding(s): 1 critical, 1 high, 0 medium, 0 low"),
        "{text}"
    );
    assert!(text.contains("unreadable: 1"), "{text}");
    assert!(text.contains("the scan is incomplete"), "{text}");
}

#[test]
fn json_lines_are_one_object_each() {
    let (report, _, _dir) = report_with_canary();
    let mut sink = JsonLinesSink::new(Vec::new());
    render(&report, &mut sink);
    let text = String::from_utf8(sink.into_inner()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["type"], "finding");
    assert_eq!(lines[0]["location"]["kind"], "file");
    assert_eq!(lines[0]["location"]["line"], 1);
    assert_eq!(lines[1]["severity"], "critical");
    assert_eq!(lines[1]["confidence"], "fingerprint");
    assert_eq!(lines[2]["type"], "summary");
    assert_eq!(lines[2]["complete"], false);
}

#[test]
fn sarif_has_the_required_2_1_0_fields() {
    let (report, _, _dir) = report_with_canary();
    let mut sink = SarifSink::new(Vec::new());
    render(&report, &mut sink);
    let log: Value = serde_json::from_slice(&sink.into_inner()).unwrap();
    // Required by the SARIF 2.1.0 schema: sarifLog.version and runs; run.tool; tool.driver;
    // toolComponent.name; result.message; message.text (or id); invocation.executionSuccessful;
    // reportingDescriptor.id; region.startLine >= 1; artifactLocation.uri a URI reference.
    assert_eq!(log["version"], "2.1.0");
    assert!(log["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "blastwall");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.iter().all(|r| r["id"].is_string()));
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert!(r["message"]["text"].is_string());
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx]["id"], r["ruleId"]);
        assert!(["error", "warning", "note", "none"].contains(&r["level"].as_str().unwrap()));
        let loc = &r["locations"][0]["physicalLocation"];
        assert!(
            loc["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .starts_with("file:///")
        );
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
        assert!(r["partialFingerprints"].is_object());
    }
    let inv = &run["invocations"][0];
    assert!(inv["executionSuccessful"].is_boolean());
    assert_eq!(
        inv["toolExecutionNotifications"].as_array().unwrap().len(),
        1
    );
    assert!(inv["toolExecutionNotifications"][0]["message"]["text"].is_string());
}

#[test]
fn a_baseline_accepts_known_findings_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(22);
    let file = dir.path().join("a.env");
    fs::write(&file, format!("TOKEN={}\n", github_token(&mut rng))).unwrap();
    let first = scanner().scan_paths(&[dir.path().to_owned()]);
    assert_eq!(first.findings.len(), 1);
    let path = dir.path().join("baseline.json");
    Baseline::from_findings(&first.findings)
        .save(&path)
        .unwrap();
    let baseline = Baseline::load(&path).unwrap();
    // Lines move, a new secret appears: the old one stays accepted, the new one is reported.
    fs::write(
        &file,
        format!(
            "# moved\nTOKEN={}\nOTHER={}\n",
            fs::read_to_string(&file)
                .unwrap()
                .trim()
                .trim_start_matches("TOKEN="),
            github_token(&mut rng)
        ),
    )
    .unwrap();
    let second = scanner()
        .with_baseline(baseline)
        .scan_paths(std::slice::from_ref(&file));
    assert_eq!(second.summary.baselined, 1);
    assert_eq!(second.findings.len(), 1);
    let blastwall_scan::Location::File { line, .. } = second.findings[0].location else {
        panic!()
    };
    assert_eq!(line, 3);
}

/// A baseline accepts a finding as it was recorded: one written without a wall file does not
/// silence the same value found later by a prod wall (critical), nor does an older baseline
/// file, whose entries record no severity.
#[test]
fn a_baseline_never_silences_a_finding_more_severe_than_it_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let value = "Zq8vN3kLp0Xw7RtY2mBc";
    fs::write(dir.path().join(".env"), format!("DB_PASSWORD={value}\n")).unwrap();
    let paths = [dir.path().to_owned()];
    let without_wall = scanner().scan_paths(&paths);
    assert_eq!(
        without_wall.findings.len(),
        1,
        "{:#?}",
        without_wall.findings
    );
    assert!(without_wall.findings[0].severity < blastwall_scan::Severity::Critical);
    let baseline = Baseline::from_findings(&without_wall.findings);
    // Still accepted when nothing changed.
    let again = scanner().with_baseline(baseline.clone()).scan_paths(&paths);
    assert!(again.findings.is_empty());
    assert_eq!(again.summary.baselined, 1);

    let wall = || {
        WallFile::build(
            &EnvName::new("production").unwrap(),
            Tier::Prod,
            [value.as_bytes()],
        )
        .unwrap()
    };
    let with_wall = scanner()
        .with_walls([wall()])
        .with_baseline(baseline)
        .scan_paths(&paths);
    assert_eq!(with_wall.findings.len(), 1, "{:#?}", with_wall.findings);
    assert!(with_wall.has_production_secret());
    assert_eq!(with_wall.summary.baselined, 0);

    // Accepted as what it is now (a prod fingerprint match), it is silenced.
    let accepted = Baseline::from_findings(&with_wall.findings);
    let report = scanner()
        .with_walls([wall()])
        .with_baseline(accepted)
        .scan_paths(&paths);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    // A version 1 file (no severity, no wall): it silences the finding without a wall only.
    let old = format!(
        "{{\"format\": \"blastwall-baseline\", \"version\": 1, \"findings\": [{{\"id\": \"{}\", \"rule\": \"{}\", \"location\": \"{}\"}}]}}",
        with_wall.findings[0].id,
        with_wall.findings[0].rule,
        with_wall.findings[0].location.group_key(),
    );
    let old = Baseline::from_json(&old, std::path::Path::new("old.json")).unwrap();
    let report = scanner().with_baseline(old.clone()).scan_paths(&paths);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    let report = scanner()
        .with_walls([wall()])
        .with_baseline(old)
        .scan_paths(&paths);
    assert!(report.has_production_secret(), "{:#?}", report.findings);
}
