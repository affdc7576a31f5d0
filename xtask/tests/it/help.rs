//! The xtask's `--help`, as maintainers read it: snapshots, so a changed flag shows up in review.

use crate::xtask;

#[test]
fn help_snapshots() {
    for (name, args) in [
        ("help", &["--help"][..]),
        ("help_release", &["release", "--help"]),
        ("help_release_merge", &["release", "merge", "--help"]),
        ("help_republish", &["republish", "--help"]),
        ("help_bases_refresh", &["bases", "refresh", "--help"]),
        ("help_prune", &["prune", "--help"]),
        ("help_audit", &["audit", "--help"]),
        ("help_dist_build", &["dist", "build", "--help"]),
        ("help_dist_seal", &["dist", "seal", "--help"]),
    ] {
        let output = xtask(args);
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(name, text);
        });
    }
}
