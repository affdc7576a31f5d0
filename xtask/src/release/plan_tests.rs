//! Table tests of [`compute`] and the plans made from it (split, merge, republish), called directly: no binary,
//! no docker, no file read. Every invariant ARCHITECTURE.md states about a plan is checked on every row; each row
//! also says what its inputs must change in the plan's shape.

use std::collections::{BTreeMap, BTreeSet};

use stack_images::{cosign::KeyRef, BaseLock, ImageRef, Matrix, Namespace, PhpLine};

use super::*;
use crate::release::inputs::{LauncherVersion, PlanInputs, PublishedFrom};

const LOCK: &str = include_str!("../../../images/bases/docker-hub.lock.toml");
const MIRROR: &str = "docker.io/20istack";

/// How a row's plan is made from [`compute`]'s.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Full,
    /// `release --platform P` (`--by-digest` or to staging).
    Split {
        by_digest: bool,
    },
    /// `release merge`.
    Merge,
    /// `republish --lines`.
    Republish(&'static [&'static str]),
}

struct Row {
    name: &'static str,
    version: &'static str,
    published: &'static [&'static str],
    mirrors: bool,
    signs: bool,
    seed: bool,
    sbom: bool,
    shape: Shape,
    /// The moving tags the plan points, the same in every registry it tags.
    moving: &'static [&'static str],
}

const ALL_MOVING: &[&str] = &[
    "v2.0.0", "php-8.1", "php-8.2", "php-8.3", "php-8.4", "php-8.5", "latest",
];

const ROWS: &[Row] = &[
    Row {
        name: "a first stable release moves every tag in both registries",
        version: "v2.0.0",
        published: &[],
        mirrors: true,
        signs: true,
        seed: true,
        sbom: true,
        shape: Shape::Full,
        moving: ALL_MOVING,
    },
    Row {
        name: "--no-mirrors: the canonical registry alone",
        version: "v2.0.0",
        published: &["v1.0.0"],
        mirrors: false,
        signs: true,
        seed: true,
        sbom: true,
        shape: Shape::Full,
        moving: ALL_MOVING,
    },
    Row {
        name: "--signing none: nothing signed, tags still after verified pins",
        version: "v2.0.0",
        published: &[],
        mirrors: true,
        signs: false,
        seed: false,
        sbom: false,
        shape: Shape::Full,
        moving: ALL_MOVING,
    },
    Row {
        name: "a prerelease moves only its own version tag",
        version: "v2.1.0-rc.1",
        published: &["v2.0.0"],
        mirrors: true,
        signs: true,
        seed: true,
        sbom: true,
        shape: Shape::Full,
        moving: &["v2.1.0-rc.1"],
    },
    Row {
        name: "a patch of an older stable leaves php-M.m and latest on the newest",
        version: "v1.0.1",
        published: &["v1.0.0", "v2.0.0"],
        mirrors: true,
        signs: true,
        seed: false,
        sbom: true,
        shape: Shape::Full,
        moving: &["v1.0.1"],
    },
    Row {
        name: "a stable release newer than a prerelease moves everything",
        version: "v2.0.0",
        published: &["v1.0.0", "v2.0.0-rc.1"],
        mirrors: true,
        signs: true,
        seed: true,
        sbom: true,
        shape: Shape::Full,
        moving: ALL_MOVING,
    },
    Row {
        name: "one split runner pushes its platform to staging and moves nothing",
        version: "v2.0.0",
        published: &[],
        mirrors: true,
        signs: true,
        seed: true,
        sbom: true,
        shape: Shape::Split { by_digest: false },
        moving: &[],
    },
    Row {
        name: "one split runner pushes by digest, unseeded",
        version: "v2.0.0",
        published: &[],
        mirrors: true,
        signs: false,
        seed: false,
        sbom: false,
        shape: Shape::Split { by_digest: true },
        moving: &[],
    },
    Row {
        name: "the merge assembles every pin, then mirrors, signs and tags as a release does",
        version: "v2.0.0",
        published: &[],
        mirrors: true,
        signs: true,
        seed: true,
        sbom: true,
        shape: Shape::Merge,
        moving: ALL_MOVING,
    },
    Row {
        name: "a republish of one line moves only that line's tags",
        version: "v2.0.0",
        published: &[],
        mirrors: true,
        signs: true,
        seed: true,
        sbom: true,
        shape: Shape::Republish(&["8.3"]),
        moving: &["php-8.3"],
    },
    Row {
        name: "a republish of the default line moves the version tag and latest too",
        version: "v2.0.0",
        published: &[],
        mirrors: true,
        signs: true,
        seed: false,
        sbom: true,
        shape: Shape::Republish(&["8.5"]),
        moving: &["v2.0.0", "php-8.5", "latest"],
    },
];

fn inputs(row: &Row) -> PlanInputs {
    let mut matrix = Matrix::embedded();
    let mirrors: Vec<Namespace> = if row.mirrors {
        vec![MIRROR.parse().unwrap()]
    } else {
        Vec::new()
    };
    matrix.override_registries(None, Some(&mirrors)).unwrap();
    if !row.sbom {
        matrix.sbom = None;
        matrix.attestations = stack_images::matrix::Attestations::None;
    }
    let version = row.version.parse().unwrap();
    PlanInputs {
        matrix,
        bases: BaseLock::parse(LOCK).unwrap(),
        bases_path: "images/bases/docker-hub.lock.toml".to_owned(),
        context: "images/php-fpm".to_owned(),
        published: row.published.iter().map(|v| v.parse().unwrap()).collect(),
        published_from: PublishedFrom::Flag,
        revision: "0123456789abcdef0123456789abcdef01234567".parse().unwrap(),
        commit_time: 1_764_000_000,
        launcher: LauncherVersion {
            workspace: row.version.trim_start_matches('v').to_owned(),
            matches: true,
            allowed: false,
        },
        build_cache: true,
        seed: row.seed,
        signing: if row.signs {
            Signing::Key {
                key: KeyRef::File("/keys/cosign.key".into()),
                public_key: "/keys/cosign.pub".into(),
            }
        } else {
            Signing::None
        },
        version,
    }
}

fn plan(row: &Row) -> Plan {
    let full = compute(&inputs(row)).unwrap();
    match row.shape {
        Shape::Full => full,
        Shape::Split { by_digest } => full.for_platform("linux/arm64", by_digest).unwrap(),
        Shape::Merge => {
            let sources: BTreeMap<PhpLine, Vec<ImageRef>> = full
                .builds
                .iter()
                .map(|b| {
                    (
                        b.php,
                        vec![
                            staging(b, "linux/amd64").unwrap(),
                            staging(b, "linux/arm64").unwrap(),
                        ],
                    )
                })
                .collect();
            full.assembling(&sources).unwrap()
        }
        Shape::Republish(lines) => {
            let lines: Vec<PhpLine> = lines.iter().map(|l| l.parse().unwrap()).collect();
            full.republishing(&lines, "a base image fix", "2026-12-01")
                .unwrap()
        }
    }
}

/// Where the first step matching `is` is, if any.
fn first(plan: &Plan, is: impl Fn(&Step) -> bool) -> Option<usize> {
    plan.steps.iter().position(is)
}

fn last(plan: &Plan, is: impl Fn(&Step) -> bool) -> Option<usize> {
    plan.steps.iter().rposition(is)
}

fn namespaces(plan: &Plan) -> Vec<Namespace> {
    std::iter::once(plan.canonical.clone())
        .chain(plan.mirrors.clone())
        .collect()
}

/// The invariants every plan keeps, whatever its inputs.
fn check_invariants(row: &Row, plan: &Plan) {
    let name = row.name;
    let is_tag = |s: &Step| matches!(s, Step::Tag(_));
    let first_tag = first(plan, is_tag).unwrap_or(plan.steps.len());

    // Phase by phase, in the order of `Phase::ALL`.
    assert!(
        plan.steps.windows(2).all(|w| w[0].phase() <= w[1].phase()),
        "{name}: steps out of phase order"
    );
    // A moving tag only after every pin was verified, attestations included, in every registry.
    if let Some(at) = last(plan, |s| {
        matches!(
            s,
            Step::Verify(VerifyStep {
                phase: Phase::VerifyPins,
                ..
            }) | Step::VerifyAttestations(_)
        )
    }) {
        assert!(at < first_tag, "{name}: a pin verified after a tag moved");
    }
    // Each tag points at its own line's pin, in its own registry, verified (and its signature verified) there
    // before.
    for (at, step) in plan.steps.iter().enumerate() {
        let Step::Tag(TagStep {
            from,
            to,
            php,
            kind,
            ..
        }) = step
        else {
            continue;
        };
        assert!(kind.is_moving(), "{name}: a pin is never moved");
        assert_eq!(
            from.namespace(),
            to.namespace(),
            "{name}: {to} points into another registry"
        );
        assert_eq!(
            from.tag(),
            Some(&tags::pin_tag(&plan.version, *php)),
            "{name}: {to}"
        );
        let verified = |s: &Step| matches!(s, Step::Verify(VerifyStep { reference, phase: Phase::VerifyPins, .. }) if reference == from);
        assert!(
            first(plan, verified).is_some_and(|v| v < at),
            "{name}: {to} moved onto {from}, not verified before"
        );
        if plan.signing.signs() {
            let signed = |s: &Step| matches!(s, Step::VerifySignature(VerifySignatureStep { reference, .. }) if reference == from);
            assert!(
                first(plan, signed).is_some_and(|v| v < at),
                "{name}: {to} moved onto {from}, its signature not verified before"
            );
        }
        // ... and is checked after it moved.
        let checked = |s: &Step| matches!(s, Step::Verify(VerifyStep { reference, phase: Phase::VerifyTags, .. }) if reference == to);
        assert!(
            last(plan, checked).is_some_and(|v| v > at),
            "{name}: {to} not checked after it moved"
        );
    }
    // Every registry tagged gets the same moving tags.
    let mut by_registry: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for step in &plan.steps {
        if let Step::Tag(TagStep { to, .. }) = step {
            by_registry
                .entry(to.namespace().to_string())
                .or_default()
                .insert(to.tag().unwrap().to_string());
        }
    }
    let sets: BTreeSet<_> = by_registry.values().collect();
    assert!(
        sets.len() <= 1,
        "{name}: registries get different tags: {by_registry:?}"
    );
    // Mirrors copy from the canonical pin, after it was built or assembled and read back.
    let read_back = last(plan, |s| matches!(s, Step::ReadBack(_)));
    for (at, step) in plan.steps.iter().enumerate() {
        match step {
            Step::Copy(CopyStep { from, to, .. })
            | Step::CopySignature(CopySignatureStep { from, to, .. }) => {
                assert_eq!(
                    from.namespace(),
                    &plan.canonical,
                    "{name}: a copy not from the canonical registry"
                );
                assert!(
                    plan.mirrors.contains(to.namespace()),
                    "{name}: a copy to {to}, not a mirror"
                );
                assert!(
                    read_back.is_some_and(|r| r < at),
                    "{name}: {to} copied before the pin was read back"
                );
            }
            // Signing: canonical pins only, and before their signatures are copied and verified.
            Step::Sign(SignStep { pin, .. }) => {
                assert_eq!(
                    pin.namespace(),
                    &plan.canonical,
                    "{name}: {pin} signed outside the canonical registry"
                );
                let copied = first(
                    plan,
                    |s| matches!(s, Step::CopySignature(CopySignatureStep { from, .. }) if from == pin),
                );
                assert!(
                    copied.is_none_or(|c| c > at),
                    "{name}: {pin}'s signature copied before it was made"
                );
            }
            // Seeds run with the build, before its bake, into a repository the plan pushes to.
            Step::Seed(SeedStep { to, .. }) => {
                let bake =
                    first(plan, |s| matches!(s, Step::Bake(_))).expect("a plan that seeds bakes");
                assert!(at < bake, "{name}: a seed after the bake");
                assert!(
                    namespaces(plan).contains(to.namespace()),
                    "{name}: a seed into {to}"
                );
            }
            _ => {}
        }
        // Every registry a step talks to is one of the plan's or the scanner's.
        if let Some(host) = step.registry() {
            let known = namespaces(plan).iter().any(|n| n.host() == host)
                || plan
                    .sbom_scanner
                    .as_ref()
                    .is_some_and(|s| s.namespace().host() == host);
            assert!(known, "{name}: a step talks to {host}");
        }
    }
    // Signed or not, as asked.
    let signs = first(plan, |s| {
        matches!(
            s,
            Step::Sign(_) | Step::VerifySignature(_) | Step::SigningReady(_)
        )
    })
    .is_some();
    let split = matches!(row.shape, Shape::Split { .. });
    assert_eq!(signs, row.signs && !split, "{name}: signing steps");
    // SBOMs promised are read before anything is built, and checked in every registry.
    let scanner = first(plan, |s| matches!(s, Step::Scanner(_)));
    let merge = matches!(row.shape, Shape::Merge);
    assert_eq!(
        scanner.is_some(),
        row.sbom && !merge,
        "{name}: scanner check"
    );
    if let Some(scanner) = scanner {
        let built = first(plan, |s| s.builds()).unwrap();
        assert!(
            scanner < built,
            "{name}: the scanner checked after the build began"
        );
    }
}

#[test]
fn every_plan_keeps_the_invariants_and_has_its_shape() {
    for row in ROWS {
        let name = row.name;
        let plan = plan(row);
        check_invariants(row, &plan);

        // The same inputs give the same plan.
        let again = self::plan(row);
        assert_eq!(plan.steps, again.steps, "{name}: not deterministic");

        let moving: Vec<String> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Tag(TagStep { to, .. }) if to.namespace() == &plan.canonical => {
                    Some(to.tag().unwrap().to_string())
                }
                _ => None,
            })
            .collect();
        assert_eq!(moving, row.moving, "{name}: moving tags");

        let registries: BTreeSet<String> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Login(LoginStep { registry, .. }) => Some(registry.to_string()),
                _ => None,
            })
            .collect();
        let copies = plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Copy(_)))
            .count();
        let lines = plan.builds.len();
        match row.shape {
            Shape::Full | Shape::Merge | Shape::Republish(_) => {
                let expected: BTreeSet<String> =
                    namespaces(&plan).iter().map(ToString::to_string).collect();
                assert_eq!(registries, expected, "{name}: logins");
                assert_eq!(
                    copies,
                    lines * plan.mirrors.len(),
                    "{name}: one copy per pin and mirror"
                );
            }
            Shape::Split { .. } => {
                // A runner logs in to the canonical registry only, and builds, reads back and nothing else.
                assert_eq!(
                    registries,
                    BTreeSet::from([plan.canonical.to_string()]),
                    "{name}: logins"
                );
                assert!(
                    plan.steps
                        .iter()
                        .all(|s| matches!(s.phase(), Phase::Preflight | Phase::Build)),
                    "{name}: a runner goes past the build"
                );
            }
        }
        if !row.mirrors {
            assert!(
                plan.mirrors.is_empty() && copies == 0,
                "{name}: --no-mirrors copies"
            );
        }
        let seeds = plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Seed(_)))
            .count();
        let bakes: Vec<&BakeStep> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Bake(bake) => Some(bake),
                _ => None,
            })
            .collect();
        let assembled = plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Assemble(_)))
            .count();
        match row.shape {
            Shape::Full => {
                assert_eq!(bakes.len(), 1, "{name}: one bake");
                assert_eq!(bakes[0].output, BakeOutput::Pins, "{name}");
                assert_eq!(bakes[0].lines.len(), 5, "{name}: every line baked");
                // Each pin and each build cache is seeded, in every registry it lands in.
                let expected = if row.seed {
                    5 * namespaces(&plan).len() + 5
                } else {
                    0
                };
                assert_eq!(seeds, expected, "{name}: seeds");
            }
            Shape::Split { by_digest } => {
                assert_eq!(bakes.len(), 1, "{name}: one bake");
                let platform = "linux/arm64".to_owned();
                let output = if by_digest {
                    BakeOutput::ByDigest { platform }
                } else {
                    BakeOutput::Staging { platform }
                };
                assert_eq!(bakes[0].output, output, "{name}");
                let expected = if row.seed { 5 * 2 } else { 0 };
                assert_eq!(
                    seeds, expected,
                    "{name}: the runner seeds what it pushes, and the cache"
                );
                let staged = plan.steps.iter().any(|s| {
                    matches!(s, Step::Seed(SeedStep { to, .. }) if to.repository().name().to_string().ends_with("-staging"))
                });
                assert_eq!(staged, row.seed && !by_digest, "{name}: seeds into staging");
            }
            Shape::Merge => {
                assert!(bakes.is_empty(), "{name}: a merge builds nothing");
                assert_eq!(
                    (assembled, seeds),
                    (5, 0),
                    "{name}: every pin assembled, nothing seeded"
                );
            }
            Shape::Republish(lines) => {
                let kept: Vec<String> = plan.builds.iter().map(|b| b.php.to_string()).collect();
                assert_eq!(kept, lines, "{name}: builds");
                assert_eq!(bakes.len(), 1, "{name}");
                assert_eq!(
                    bakes[0]
                        .lines
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>(),
                    lines,
                    "{name}: only the lines republished are baked"
                );
                for step in &plan.steps {
                    let php = match step {
                        Step::Find(FindStep { php, .. })
                        | Step::Seed(SeedStep { php, .. })
                        | Step::ReadBack(ReadBackStep { php, .. })
                        | Step::Copy(CopyStep { php, .. })
                        | Step::Verify(VerifyStep { php, .. })
                        | Step::Sign(SignStep { php, .. })
                        | Step::Tag(TagStep { php, .. }) => php,
                        _ => continue,
                    };
                    assert!(
                        lines.contains(&php.to_string().as_str()),
                        "{name}: a step of PHP {php}"
                    );
                }
                for build in &plan.builds {
                    assert!(
                        build.annotations.contains_key(REPUBLISH_REASON)
                            && build.annotations.contains_key(REPUBLISH_DATE),
                        "{name}: a republished index says why and when"
                    );
                }
            }
        }
        // The tags the plan does not move are said, with why.
        let skipped: Vec<String> = plan.skipped.iter().map(|s| s.tag.to_string()).collect();
        let blocked = !matches!(row.shape, Shape::Split { .. } | Shape::Republish(_))
            && row.moving.len() == 1;
        assert_eq!(
            skipped.len(),
            if blocked { 6 } else { 0 },
            "{name}: skipped {skipped:?}"
        );
    }
}
