//! The launcher's distribution contract: the targets `20i` is built for, the names of a release's archives and
//! the files beside them (`SHA256SUMS`, a cosign signature per archive, `install.sh`, `dist-manifest.json`, the
//! Homebrew formula), and [`DistManifest`], the sealed folder's description. `cargo xtask dist` writes it, the
//! release notes copy it, and the installer follows the same names (docs/releasing.md, "The launcher's
//! archives"); this module is the one place that spells them.

use std::{fmt, io::Read, path::Path, str::FromStr};

use crate::{digest::Hasher, Digest, ReleaseVersion};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The launcher's binary, in every archive.
pub const BINARY: &str = "20i";
/// `<hex>  <archive>` per archive, sorted by name, as `sha256sum` prints it.
pub const SHA256SUMS: &str = "SHA256SUMS";
/// The sealed folder's [`DistManifest`].
pub const MANIFEST: &str = "dist-manifest.json";
/// The installer (`launcher/install.sh`, its version filled in by the seal).
pub const INSTALLER: &str = "install.sh";
/// The Homebrew formula; in a tap it is `Formula/twenty-i.rb`.
pub const FORMULA: &str = "20i.rb";
/// The public key of a release signed with a key (the demo's), published beside the archives.
pub const PUBLIC_KEY: &str = "cosign.pub";
/// The placeholder in `launcher/install.sh` the seal replaces with the release's version (`vX.Y.Z`).
pub const INSTALLER_VERSION_PLACEHOLDER: &str = "@VERSION@";

/// An operating system the launcher is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Os {
    Linux,
    MacOs,
}

/// A processor architecture the launcher is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// A Rust target the launcher is released for. Linux builds are static (musl): one binary runs on every
/// distribution, old or new, and in WSL2, with no glibc version to match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    X86_64LinuxMusl,
    Aarch64LinuxMusl,
    Aarch64AppleDarwin,
    X86_64AppleDarwin,
}

impl Target {
    /// Every target of a release, in the order archives are listed.
    pub const ALL: [Target; 4] = [
        Target::X86_64LinuxMusl,
        Target::Aarch64LinuxMusl,
        Target::Aarch64AppleDarwin,
        Target::X86_64AppleDarwin,
    ];

    pub fn triple(self) -> &'static str {
        match self {
            Target::X86_64LinuxMusl => "x86_64-unknown-linux-musl",
            Target::Aarch64LinuxMusl => "aarch64-unknown-linux-musl",
            Target::Aarch64AppleDarwin => "aarch64-apple-darwin",
            Target::X86_64AppleDarwin => "x86_64-apple-darwin",
        }
    }

    pub fn os(self) -> Os {
        match self {
            Target::X86_64LinuxMusl | Target::Aarch64LinuxMusl => Os::Linux,
            Target::Aarch64AppleDarwin | Target::X86_64AppleDarwin => Os::MacOs,
        }
    }

    pub fn arch(self) -> Arch {
        match self {
            Target::X86_64LinuxMusl | Target::X86_64AppleDarwin => Arch::X86_64,
            Target::Aarch64LinuxMusl | Target::Aarch64AppleDarwin => Arch::Aarch64,
        }
    }

    /// The platform as a user names it.
    pub fn describe(self) -> &'static str {
        match self {
            Target::X86_64LinuxMusl => "Linux x86_64, WSL2",
            Target::Aarch64LinuxMusl => "Linux arm64",
            Target::Aarch64AppleDarwin => "macOS Apple Silicon",
            Target::X86_64AppleDarwin => "macOS Intel",
        }
    }

    /// The target whose binary this machine runs natively, if it is one of the release's.
    pub fn host() -> Option<Target> {
        let os = match std::env::consts::OS {
            "linux" => Os::Linux,
            "macos" => Os::MacOs,
            _ => return None,
        };
        let arch = match std::env::consts::ARCH {
            "x86_64" => Arch::X86_64,
            "aarch64" => Arch::Aarch64,
            _ => return None,
        };
        Target::ALL
            .into_iter()
            .find(|t| t.os() == os && t.arch() == arch)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.triple())
    }
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Target> {
        Target::ALL
            .into_iter()
            .find(|t| t.triple() == text)
            .with_context(|| {
                format!(
                    "`{}` is not a target the launcher is released for: use one of {}",
                    text.escape_debug(),
                    Target::ALL.map(Target::triple).join(", ")
                )
            })
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.triple())
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Target, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `20i-vX.Y.Z-TARGET`: the archive's top folder.
pub fn archive_folder(version: &ReleaseVersion, target: Target) -> String {
    format!("{BINARY}-{version}-{target}")
}

/// `20i-vX.Y.Z-TARGET.tar.gz`.
pub fn archive_name(version: &ReleaseVersion, target: Target) -> String {
    format!("{}.tar.gz", archive_folder(version, target))
}

/// The version and target an archive's file name says, or `None` when it is not an archive's name.
pub fn parse_archive_name(name: &str) -> Option<(ReleaseVersion, Target)> {
    let folder = name.strip_suffix(".tar.gz")?;
    let rest = folder.strip_prefix(&format!("{BINARY}-"))?;
    Target::ALL.into_iter().find_map(|target| {
        let version = rest.strip_suffix(&format!("-{target}"))?;
        let version: ReleaseVersion = version.parse().ok()?;
        // Only the canonical spelling (`v` and all): anything else is not what `dist build` writes.
        (archive_name(&version, target) == name).then_some((version, target))
    })
}

/// A file's sha256, as 64 lowercase hex digits (what `SHA256SUMS` and Homebrew write).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256(String);

impl Sha256 {
    pub fn of(bytes: &[u8]) -> Sha256 {
        Sha256::from(&Digest::of(bytes))
    }

    /// The sha256 of a file, read in chunks.
    pub fn of_file(path: &Path) -> anyhow::Result<Sha256> {
        let mut file = std::fs::File::open(path)
            .with_context(|| format!("opening {} to hash it", path.display()))?;
        let mut hasher = Hasher::default();
        let mut buffer = vec![0; 1 << 16];
        loop {
            let read = file
                .read(&mut buffer)
                .with_context(|| format!("reading {}", path.display()))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(Sha256::from(&hasher.finish()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A content digest's hex digits: the same sha256, as `sha256sum` prints it.
impl From<&Digest> for Sha256 {
    fn from(digest: &Digest) -> Sha256 {
        let hex = digest
            .as_str()
            .strip_prefix("sha256:")
            .expect("a digest is sha256:hex");
        Sha256(hex.to_owned())
    }
}

impl FromStr for Sha256 {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Sha256> {
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            bail!(
                "`{}` is not a sha256 (64 lowercase hex digits)",
                text.escape_debug()
            );
        }
        Ok(Sha256(text.to_owned()))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Sha256, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `SHA256SUMS`: `<hex>  <name>` per file, sorted by name, as `sha256sum` prints it (and `sha256sum -c` reads).
pub fn sha256sums<'a>(files: impl IntoIterator<Item = (&'a str, &'a Sha256)>) -> String {
    let mut files: Vec<_> = files.into_iter().collect();
    files.sort();
    files
        .into_iter()
        .map(|(name, sha)| format!("{sha}  {name}\n"))
        .collect()
}

/// How the archives were signed with cosign `sign-blob`, and so how each is verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DistSigning {
    /// With a private key (the demo): a `<archive>.sig` each, checked with the public key published beside them as
    /// [`PUBLIC_KEY`] (no transparency log entry).
    Key { public_key: String },
    /// Keyless, by the release workflow: a Sigstore bundle `<archive>.sigstore.json` each, whose certificate names
    /// the workflow at the release's tag.
    Keyless { identity: String, issuer: String },
}

impl DistSigning {
    /// The signature file of an archive: `<archive>.sig` (key) or `<archive>.sigstore.json` (keyless).
    pub fn signature_name(&self, archive: &str) -> String {
        match self {
            DistSigning::Key { .. } => format!("{archive}.sig"),
            DistSigning::Keyless { .. } => format!("{archive}.sigstore.json"),
        }
    }

    /// The command a user runs, in the folder holding the archive and its signature, to verify it.
    pub fn verify_command(&self, archive: &str) -> String {
        let signature = self.signature_name(archive);
        match self {
            DistSigning::Key { public_key } => format!(
                "cosign verify-blob --key {public_key} --signature {signature} --insecure-ignore-tlog=true -- {archive}"
            ),
            DistSigning::Keyless { identity, issuer } => format!(
                "cosign verify-blob --bundle {signature} --certificate-identity {identity} \
                 --certificate-oidc-issuer {issuer} -- {archive}"
            ),
        }
    }
}

/// One archive of a sealed folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistArchive {
    pub target: Target,
    /// `20i-vX.Y.Z-TARGET.tar.gz`.
    pub name: String,
    pub sha256: Sha256,
    /// The cosign signature's file, beside the archive.
    pub signature: String,
}

/// `dist-manifest.json`: what `cargo xtask dist seal` made of a folder of archives; the release notes' `launcher`
/// section is made from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistManifest {
    pub version: ReleaseVersion,
    /// Where the files are downloaded from: the GitHub release's download folder, or a mirror's (the demo's
    /// loopback server).
    pub base_url: String,
    /// The line that installs this release from there.
    pub install: String,
    pub signing: DistSigning,
    /// In [`Target::ALL`]'s order; each target at most once.
    pub archives: Vec<DistArchive>,
}

impl DistManifest {
    /// Reads and checks `DIR/dist-manifest.json`; an error names the file and says to seal the folder.
    pub fn load(dir: &Path) -> anyhow::Result<DistManifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}: is {} a folder sealed by `cargo xtask dist seal`?",
                path.display(),
                dir.display()
            )
        })?;
        DistManifest::parse(&text).with_context(|| {
            format!(
                "in {}: seal the folder again with `cargo xtask dist seal {}`",
                path.display(),
                dir.display()
            )
        })
    }

    pub fn parse(text: &str) -> anyhow::Result<DistManifest> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let manifest: DistManifest = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|e| anyhow::anyhow!("{}: {}", e.path(), e.inner()))?;
        manifest.check()?;
        Ok(manifest)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serialises") + "\n"
    }

    /// The archive's download address.
    pub fn url(&self, file: &str) -> String {
        format!("{}/{file}", self.base_url.trim_end_matches('/'))
    }

    fn check(&self) -> anyhow::Result<()> {
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            bail!("base_url: `{}` is not an http(s) URL", self.base_url);
        }
        if self.archives.is_empty() {
            bail!("archives: none: a sealed folder has at least one archive");
        }
        for (n, archive) in self.archives.iter().enumerate() {
            let name = archive_name(&self.version, archive.target);
            if archive.name != name {
                bail!(
                    "archives[{n}].name: `{}` is not {name}, the archive of {} for {}",
                    archive.name,
                    self.version,
                    archive.target
                );
            }
            let signature = self.signing.signature_name(&name);
            if archive.signature != signature {
                bail!(
                    "archives[{n}].signature: `{}` is not {signature}, as this signing mode names it",
                    archive.signature
                );
            }
            if self.archives[..n]
                .iter()
                .any(|a| a.target == archive.target)
            {
                bail!("archives[{n}]: {} is listed twice", archive.target);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> ReleaseVersion {
        "v2.1.0".parse().unwrap()
    }

    #[test]
    fn targets_round_trip_and_say_what_they_are() {
        for target in Target::ALL {
            assert_eq!(target.triple().parse::<Target>().unwrap(), target);
            let (arch, os) = (target.arch(), target.os());
            assert!(target.triple().starts_with(match arch {
                Arch::X86_64 => "x86_64-",
                Arch::Aarch64 => "aarch64-",
            }));
            assert!(target.triple().ends_with(match os {
                Os::Linux => "-linux-musl",
                Os::MacOs => "-apple-darwin",
            }));
        }
        assert_eq!(
            "x86_64-unknown-linux-gnu".parse::<Target>().unwrap_err().to_string(),
            "`x86_64-unknown-linux-gnu` is not a target the launcher is released for: use one of \
             x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, aarch64-apple-darwin, x86_64-apple-darwin"
        );
    }

    #[track_caller]
    fn check_name(name: &str, expected: Option<(&str, Target)>) {
        let parsed = parse_archive_name(name);
        assert_eq!(
            parsed.map(|(v, t)| (v.to_string(), t)),
            expected.map(|(v, t)| (v.to_owned(), t)),
            "{name}"
        );
    }

    #[test]
    fn archive_names() {
        assert_eq!(
            archive_name(&version(), Target::Aarch64AppleDarwin),
            "20i-v2.1.0-aarch64-apple-darwin.tar.gz"
        );
        check_name(
            "20i-v2.1.0-x86_64-unknown-linux-musl.tar.gz",
            Some(("v2.1.0", Target::X86_64LinuxMusl)),
        );
        check_name(
            "20i-v2.1.0-rc.1-aarch64-unknown-linux-musl.tar.gz",
            Some(("v2.1.0-rc.1", Target::Aarch64LinuxMusl)),
        );
        check_name("20i-2.1.0-x86_64-unknown-linux-musl.tar.gz", None);
        check_name("20i-v2.1.0-x86_64-unknown-linux-gnu.tar.gz", None);
        check_name("20i-v2.1.0-x86_64-apple-darwin.zip", None);
        check_name("SHA256SUMS", None);
    }

    #[test]
    fn sha256sums_are_sorted_as_sha256sum_prints_them() {
        let a = Sha256::of(b"");
        let b = Sha256::of(b"b");
        assert_eq!(
            a.as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256sums([("z.tar.gz", &a), ("a.tar.gz", &b)]),
            format!("{b}  a.tar.gz\n{a}  z.tar.gz\n")
        );
        assert!("E3B0".parse::<Sha256>().is_err());
    }

    #[test]
    fn manifests_are_checked_when_read() {
        let name = archive_name(&version(), Target::X86_64LinuxMusl);
        let manifest = DistManifest {
            version: version(),
            base_url: "http://127.0.0.1:5102".to_owned(),
            install: "curl -fsSL http://127.0.0.1:5102/install.sh | sh".to_owned(),
            signing: DistSigning::Key {
                public_key: PUBLIC_KEY.to_owned(),
            },
            archives: vec![DistArchive {
                target: Target::X86_64LinuxMusl,
                signature: format!("{name}.sig"),
                name,
                sha256: Sha256::of(b"archive"),
            }],
        };
        assert_eq!(DistManifest::parse(&manifest.to_json()).unwrap(), manifest);
        let broken = manifest
            .to_json()
            .replace(".tar.gz.sig", ".tar.gz.sigstore.json");
        assert_eq!(
            format!("{:#}", DistManifest::parse(&broken).unwrap_err()),
            "archives[0].signature: `20i-v2.1.0-x86_64-unknown-linux-musl.tar.gz.sigstore.json` is not \
             20i-v2.1.0-x86_64-unknown-linux-musl.tar.gz.sig, as this signing mode names it"
        );
        let unknown = manifest.to_json().replace(
            "x86_64-unknown-linux-musl\",",
            "riscv64gc-unknown-linux-musl\",",
        );
        assert!(format!("{:#}", DistManifest::parse(&unknown).unwrap_err())
            .starts_with("archives[0].target: `riscv64gc-unknown-linux-musl` is not a target"));
    }

    #[test]
    fn verify_commands() {
        let archive = "20i-v2.1.0-aarch64-apple-darwin.tar.gz";
        let keyless = DistSigning::Keyless {
            identity: "https://github.com/o/r/.github/workflows/release.yml@refs/tags/v2.1.0"
                .to_owned(),
            issuer: crate::cosign::GITHUB_ISSUER.to_owned(),
        };
        assert_eq!(
            keyless.verify_command(archive),
            "cosign verify-blob --bundle 20i-v2.1.0-aarch64-apple-darwin.tar.gz.sigstore.json \
             --certificate-identity https://github.com/o/r/.github/workflows/release.yml@refs/tags/v2.1.0 \
             --certificate-oidc-issuer https://token.actions.githubusercontent.com -- \
             20i-v2.1.0-aarch64-apple-darwin.tar.gz"
        );
        let key = DistSigning::Key {
            public_key: PUBLIC_KEY.to_owned(),
        };
        assert_eq!(
            key.verify_command(archive),
            "cosign verify-blob --key cosign.pub --signature 20i-v2.1.0-aarch64-apple-darwin.tar.gz.sig \
             --insecure-ignore-tlog=true -- 20i-v2.1.0-aarch64-apple-darwin.tar.gz"
        );
    }
}
