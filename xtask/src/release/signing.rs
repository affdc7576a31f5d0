//! How a release signs its pins (`--signing key:PATH|keyless|none`), parsed once into [`Signing`]: what the plan
//! carries, what the `sign` and `verify signatures` steps turn into cosign commands, and what the notes tell a
//! user to run. Keyless is the default (the release workflow, with GitHub's OIDC token); an unsigned release is
//! only ever asked for by name (`--signing none`) and the notes say so.

use std::{path::PathBuf, str::FromStr};

use anyhow::{bail, Context};
use serde::Serialize;
use stack_images::{
    cosign::{self, CosignCommand, KeyRef, Signer, Subject, Verifier},
    release_notes::SigningRecord,
    ImageRef,
};

/// `--signing`, as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningFlag {
    Key(KeyRef),
    Keyless,
    None,
}

impl FromStr for SigningFlag {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<SigningFlag> {
        // clap prints only the outermost message: one flat sentence, naming the value.
        match text {
            "keyless" => Ok(SigningFlag::Keyless),
            "none" => Ok(SigningFlag::None),
            _ => match text.strip_prefix("key:") {
                Some(key) => key
                    .parse()
                    .map(SigningFlag::Key)
                    .map_err(|e| anyhow::anyhow!("--signing {text}: {e}")),
                None => bail!(
                    "`{}` is not a signing mode: use key:PATH (or key:env://COSIGN_KEY), keyless or none",
                    text.escape_debug()
                ),
            },
        }
    }
}

/// How the pins of a release are signed and checked, fully decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Signing {
    /// With a private key (its password in `COSIGN_PASSWORD`), checked with its public key.
    Key {
        #[serde(serialize_with = "display")]
        key: KeyRef,
        public_key: PathBuf,
    },
    /// With the workflow's OIDC identity; `identity` is `None` outside GitHub Actions (a plan or a dry run there;
    /// a real run refuses).
    Keyless {
        identity: Option<String>,
        issuer: String,
    },
    /// Not signed: asked for with `--signing none`, and said in the notes.
    None,
}

fn display<S: serde::Serializer>(value: &KeyRef, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// The identity GitHub gives a workflow run: `https://github.com/OWNER/REPO/.github/workflows/FILE@REF`, from
/// the variables every job has.
pub(crate) fn github_identity() -> Option<String> {
    let workflow_ref = std::env::var("GITHUB_WORKFLOW_REF").ok()?;
    let server =
        std::env::var("GITHUB_SERVER_URL").unwrap_or_else(|_| "https://github.com".to_owned());
    let valid = !workflow_ref.is_empty()
        && workflow_ref.contains("/.github/workflows/")
        && !workflow_ref
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
    valid.then(|| format!("{}/{workflow_ref}", server.trim_end_matches('/')))
}

impl Signing {
    /// From the flags; the keyless identity from the GitHub Actions environment.
    pub fn from_flags(
        flag: Option<&SigningFlag>,
        public_key: Option<&PathBuf>,
    ) -> anyhow::Result<Signing> {
        let signing = match flag.unwrap_or(&SigningFlag::Keyless) {
            SigningFlag::Key(key) => {
                let public_key = public_key.context(
                    "--signing key:PATH needs --signing-public-key PATH (the .pub cosign generate-key-pair wrote \
                     beside it): the release verifies every pin with it and the notes name it",
                )?;
                let public_key = std::path::absolute(public_key)
                    .with_context(|| format!("--signing-public-key {}", public_key.display()))?;
                Signing::Key {
                    key: key.clone(),
                    public_key,
                }
            }
            SigningFlag::Keyless => Signing::Keyless {
                identity: github_identity(),
                issuer: cosign::GITHUB_ISSUER.to_owned(),
            },
            SigningFlag::None => Signing::None,
        };
        if public_key.is_some() && !matches!(signing, Signing::Key { .. }) {
            bail!("--signing-public-key goes with --signing key:PATH only: drop it, or sign with a key");
        }
        Ok(signing)
    }

    pub fn signs(&self) -> bool {
        !matches!(self, Signing::None)
    }

    pub fn signer(&self) -> Option<Signer> {
        match self {
            Signing::Key { key, .. } => Some(Signer::Key(key.clone())),
            Signing::Keyless { .. } => Some(Signer::Keyless),
            Signing::None => None,
        }
    }

    /// What every signature must verify against. A keyless plan made outside GitHub Actions has no identity to
    /// check yet: it prints one in its place, and a run refuses at preflight ([`Signing::ready`]).
    pub fn verifier(&self) -> Option<Verifier> {
        match self {
            Signing::Key { public_key, .. } => Some(Verifier::Key(public_key.clone())),
            Signing::Keyless { identity, issuer } => Some(Verifier::Identity {
                identity: identity
                    .clone()
                    .unwrap_or_else(|| "{the release workflow's identity}".to_owned()),
                issuer: issuer.clone(),
            }),
            Signing::None => None,
        }
    }

    /// Whether a real run can sign: keyless needs the workflow's identity and its OIDC token.
    pub fn ready(&self) -> anyhow::Result<()> {
        if let Signing::Keyless { identity, .. } = self {
            let token = std::env::var_os("ACTIONS_ID_TOKEN_REQUEST_URL").is_some();
            if identity.is_none() || !token {
                bail!(
                    "keyless signing needs GitHub Actions' OIDC token (a job with `permissions: id-token: write`): \
                     elsewhere sign with a key (--signing key:PATH --signing-public-key PATH, its password in \
                     COSIGN_PASSWORD), or publish unsigned on purpose with --signing none"
                );
            }
        }
        Ok(())
    }

    /// As the plan table and the summary say it.
    pub fn describe(&self) -> String {
        match self {
            Signing::Key { key, public_key } => {
                format!("cosign, key {key} (verified with {})", public_key.display())
            }
            Signing::Keyless {
                identity: Some(identity),
                issuer,
            } => format!("cosign keyless, {identity} ({issuer})"),
            Signing::Keyless { identity: None, .. } => {
                "cosign keyless (the release workflow's identity)".to_owned()
            }
            Signing::None => "NOT SIGNED (--signing none)".to_owned(),
        }
    }

    /// The exact command that verifies `image`'s signature, as the notes print it: a key is named by its file
    /// name, the public key being published with the release.
    pub fn notes_command(&self, image: &ImageRef) -> Option<String> {
        let verifier = match self {
            Signing::Key { .. } => match self.record() {
                SigningRecord::Key { public_key } => Verifier::Key(public_key.into()),
                _ => unreachable!("a key's record is a key"),
            },
            _ => self.verifier()?,
        };
        CosignCommand::verify(&verifier, Subject::Image(image))
            .ok()
            .map(|command| command.to_string())
    }

    /// What the notes say about every signature of the release.
    pub fn record(&self) -> SigningRecord {
        match self {
            Signing::Key { public_key, .. } => SigningRecord::Key {
                public_key: public_key
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "cosign.pub".to_owned()),
            },
            Signing::Keyless { identity, issuer } => SigningRecord::Keyless {
                identity: identity.clone().unwrap_or_default(),
                issuer: issuer.clone(),
            },
            Signing::None => SigningRecord::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: &str) {
        match text.parse::<SigningFlag>() {
            Ok(flag) => assert_eq!(format!("{flag:?}"), expected),
            Err(error) => assert_eq!(format!("error: {error}"), expected),
        }
    }

    #[test]
    fn flags() {
        check("keyless", "Keyless");
        check("none", "None");
        check("key:cosign.key", r#"Key(File("cosign.key"))"#);
        check("key:env://COSIGN_KEY", "Key(Env)");
        check(
            "key:",
            "error: --signing key:: `` is not a key: give the path of a cosign private key file or env://COSIGN_KEY",
        );
        check(
            "Keyless",
            "error: `Keyless` is not a signing mode: use key:PATH (or key:env://COSIGN_KEY), keyless or none",
        );
        check(
            "key:env://SECRET",
            "error: --signing key:env://SECRET: a key from the environment is read from env://COSIGN_KEY, not \
             env://SECRET: set COSIGN_KEY",
        );
    }

    #[test]
    fn a_key_needs_its_public_key() {
        let key = SigningFlag::Key("cosign.key".parse().unwrap());
        let error = Signing::from_flags(Some(&key), None).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--signing key:PATH needs --signing-public-key PATH"),
            "{error}"
        );
        let public = PathBuf::from("cosign.pub");
        let error = Signing::from_flags(Some(&SigningFlag::None), Some(&public)).unwrap_err();
        assert!(error
            .to_string()
            .contains("goes with --signing key:PATH only"));
    }
}
