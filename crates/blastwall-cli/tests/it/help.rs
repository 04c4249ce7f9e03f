//! `--help` of every subcommand, snapshotted: each has examples.

use crate::support::Bw;

#[test]
fn every_subcommand_has_help_with_examples() {
    let bw = Bw::new();
    let commands: &[&[&str]] = &[
        &[],
        &["init"],
        &["env", "list"],
        &["env", "add"],
        &["upstream", "add"],
        &["upstream", "list"],
        &["upstream", "check"],
        &["token", "issue"],
        &["token", "list"],
        &["token", "show"],
        &["token", "revoke"],
        &["token", "test"],
        &["log", "tail"],
        &["log", "verify"],
        &["log", "checkpoint"],
        &["config", "show"],
        &["serve"],
        &["demo"],
        &["scan"],
        &["wall", "export"],
        &["vault", "init"],
        &["vault", "serve"],
        &["vault", "credential", "add"],
        &["vault", "credential", "list"],
        &["vault", "credential", "revoke"],
        &["vault", "credential", "rotate"],
        &["vault", "recipient"],
        &["vault", "log", "verify"],
        &["vault", "log", "tail"],
        &["backup", "target", "add"],
        &["backup", "source", "add"],
        &["backup", "run"],
        &["backup", "list"],
        &["backup", "check-immutability"],
        &["backup", "drill"],
        &["backup", "restore"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = bw.ok(&args);
        assert!(
            out.contains("Examples:"),
            "`blastwall {}` has no examples",
            cmd.join(" ")
        );
        let name = if cmd.is_empty() {
            "help".to_owned()
        } else {
            format!("help_{}", cmd.join("_"))
        };
        insta::assert_snapshot!(name, out);
    }
}
