//! Whether docker holds credentials for a registry, read from docker's own config and credential helpers.
//! Only host names are ever read back from a helper; no secret passes through here.

use std::process::Command;

use anyhow::Context;
use serde_json::Value;
use stack_images::registry::auth::{config_keys, config_path};

/// True when `docker login HOST` was done (an `auths` entry, a per-host helper, or the store lists the host).
pub fn has_credentials(host: &str) -> anyhow::Result<bool> {
    let Some(path) = config_path(None).filter(|p| p.exists()) else {
        return Ok(false);
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(match config_says(&config, host) {
        Some(known) => known,
        None => store_lists(
            config["credsStore"].as_str().unwrap_or_default(),
            &config_keys(host),
        ),
    })
}

/// What docker's config alone says of a host: yes, no, or ask its credential store (`None`).
fn config_says(config: &Value, host: &str) -> Option<bool> {
    let keys = config_keys(host);
    // An `auths` entry holds either the credentials themselves or, with a store, an empty marker.
    if keys
        .iter()
        .any(|k| config["credHelpers"].get(k).is_some() || config["auths"].get(k).is_some())
    {
        return Some(true);
    }
    match config["credsStore"].as_str() {
        Some(store) if !store.is_empty() => None,
        _ => Some(false),
    }
}

/// `docker-credential-STORE list` prints server → user name, never a secret.
fn store_lists(store: &str, keys: &[String]) -> bool {
    let Ok(output) = Command::new(format!("docker-credential-{store}"))
        .arg("list")
        .output()
    else {
        return false;
    };
    let Ok(listed) = serde_json::from_slice::<Value>(&output.stdout) else {
        return false;
    };
    keys.iter().any(|k| listed.get(k).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(config_keys("docker.io").contains(&"https://index.docker.io/v1/".to_owned()));
    }

    #[track_caller]
    fn check(config: &str, host: &str, expected: Option<bool>) {
        let config: Value = serde_json::from_str(config).unwrap();
        assert_eq!(config_says(&config, host), expected, "{host} in {config}");
    }

    #[test]
    fn reads_docker_config() {
        check("{}", "ghcr.io", Some(false));
        check(
            r#"{"auths": {"ghcr.io": {"auth": "x"}}}"#,
            "ghcr.io",
            Some(true),
        );
        check(r#"{"auths": {"ghcr.io": {}}}"#, "docker.io", Some(false));
        check(
            r#"{"auths": {"https://index.docker.io/v1/": {}}}"#,
            "docker.io",
            Some(true),
        );
        check(
            r#"{"credHelpers": {"ghcr.io": "gh"}}"#,
            "ghcr.io",
            Some(true),
        );
        check(r#"{"credsStore": "desktop"}"#, "ghcr.io", None);
        check(r#"{"credsStore": ""}"#, "ghcr.io", Some(false));
        check(
            r#"{"auths": {"127.0.0.1:5001": {}}}"#,
            "127.0.0.1:5001",
            Some(true),
        );
    }
}
