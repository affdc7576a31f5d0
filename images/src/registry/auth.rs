//! Docker's own logins, read the way `docker` reads them (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`:
//! `credHelpers`, `auths`, `credsStore`), and the registry's `WWW-Authenticate` challenges. `docker login` stays the
//! only way to log in; nothing here writes a credential or prints one.

use std::{
    fmt,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::Value;

/// What `docker login` left for a host.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        user: String,
        password: String,
    },
    /// An OAuth refresh token (`"identitytoken"`, or a helper's `<token>` user): traded at the token endpoint.
    IdentityToken(String),
}

impl Credential {
    /// `Basic base64(user:password)`.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// Names the kind and the user only: a secret must not reach a log through `{:?}`.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { user, .. } => {
                write!(f, "Basic {{ user: {user:?}, password: <hidden> }}")
            }
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<hidden>)"),
        }
    }
}

/// docker's config file: in `dir` when given, else `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_path(dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = dir {
        return Some(dir.join("config.json"));
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
        }
    }
}

/// Whether `host` is one of Docker Hub's names (its API answers on `registry-1.docker.io`).
pub fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// The names docker may file a host's credentials under (Docker Hub has several; the first is what
/// `docker login` writes and what a credential helper is asked for).
pub fn config_keys(host: &str) -> Vec<String> {
    match host {
        host if is_docker_hub(host) => [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
            "registry-1.docker.io",
        ]
        .map(String::from)
        .to_vec(),
        _ => vec![
            host.to_owned(),
            format!("https://{host}"),
            format!("http://{host}"),
        ],
    }
}

/// docker's config as JSON, with its path; `None` when there is no file (no login, not an error).
fn read_config(config_dir: Option<&Path>, host: &str) -> anyhow::Result<Option<(Value, PathBuf)>> {
    let Some(path) = config_path(config_dir).filter(|p| p.exists()) else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    // serde_json's message gives the line and column, never the text around them.
    let config: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "parsing {}: fix the file, or remove it and run `docker login {host}`",
            path.display()
        )
    })?;
    Ok(Some((config, path)))
}

/// The credential docker holds for `host`, if any: a missing config file is no login, not an error.
pub fn credential_for(config_dir: Option<&Path>, host: &str) -> anyhow::Result<Option<Credential>> {
    match read_config(config_dir, host)? {
        Some((config, path)) => from_config(&config, host, &path, &run_helper),
        None => Ok(None),
    }
}

/// Whether `docker login HOST` was done (an `auths` entry, a per-host helper, or the credential store lists
/// the host), without reading a secret: a store is asked for its list of hosts (`docker-credential-STORE list`
/// prints server → user name), never for a credential.
pub fn has_login(config_dir: Option<&Path>, host: &str) -> anyhow::Result<bool> {
    let Some((config, _)) = read_config(config_dir, host)? else {
        return Ok(false);
    };
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

/// `docker-credential-STORE list`: whether it lists one of `keys`; a store that cannot say lists nothing.
fn store_lists(store: &str, keys: &[String]) -> bool {
    let Ok(output) = Command::new(format!("docker-credential-{store}"))
        .arg("list")
        .stdin(Stdio::null())
        .output()
    else {
        return false;
    };
    let Ok(listed) = serde_json::from_slice::<Value>(&output.stdout) else {
        return false;
    };
    keys.iter().any(|k| listed.get(k).is_some())
}

/// `docker-credential-NAME get SERVER` → `(user, secret)`, or `None` when it holds nothing for that server.
type Helper = dyn Fn(&str, &str) -> anyhow::Result<Option<(String, String)>>;

/// docker's order: a per-host helper, then an `auths` entry, then the credential store.
fn from_config(
    config: &Value,
    host: &str,
    path: &Path,
    helper: &Helper,
) -> anyhow::Result<Option<Credential>> {
    let keys = config_keys(host);
    let from_helper = |name: &str| -> anyhow::Result<Option<Credential>> {
        // The name becomes part of a program name: a `/` would make it a path to run.
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            bail!(
                "{} names the credential helper `{name}`, which is not a helper name (letters, digits, `-`, `_`, `.`): \
                 fix `credsStore`/`credHelpers` there, or run `docker login {host}`",
                path.display()
            );
        }
        Ok(helper(name, &keys[0])?.map(|(user, secret)| {
            if user == "<token>" {
                Credential::IdentityToken(secret)
            } else {
                Credential::Basic {
                    user,
                    password: secret,
                }
            }
        }))
    };
    if let Some(name) = keys.iter().find_map(|k| config["credHelpers"][k].as_str()) {
        if !name.is_empty() {
            return from_helper(name);
        }
    }
    if let Some(entry) = keys.iter().find_map(|k| config["auths"].get(k)) {
        if let Some(token) = entry["identitytoken"].as_str().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(token.to_owned())));
        }
        if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
            return decode_auth(auth).map(Some).with_context(|| {
                format!(
                    "the `auth` entry for {host} in {} is not base64 of user:password: run `docker login {host}` again",
                    path.display()
                )
            });
        }
        if let (Some(user), Some(password)) =
            (entry["username"].as_str(), entry["password"].as_str())
        {
            return Ok(Some(Credential::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            }));
        }
    }
    match config["credsStore"].as_str() {
        Some(store) if !store.is_empty() => from_helper(store),
        _ => Ok(None),
    }
}

fn decode_auth(auth: &str) -> anyhow::Result<Credential> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    // The decoding errors name a byte offset, not the value: safe to carry.
    let bytes = engine.decode(auth.trim())?;
    let text = String::from_utf8(bytes).context("not UTF-8")?;
    let Some((user, password)) = text.split_once(':') else {
        bail!("no `:` between user and password");
    };
    Ok(Credential::Basic {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// `docker-credential-NAME get` with the server on standard input: `(user, secret)`, or `None` when the helper
/// holds nothing for it.
fn run_helper(name: &str, server: &str) -> anyhow::Result<Option<(String, String)>> {
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} (docker's config names it): install it, or run `docker login {server}`"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .with_context(|| format!("writing to {program}"))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        // Helpers say so on standard output; it holds no secret when they fail.
        let said = String::from_utf8_lossy(&output.stdout);
        if said.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "{program} get {server} failed ({}): {}: run `docker login {server}`",
            output.status,
            stderr.lines().next().unwrap_or_default().trim()
        );
    }
    // Parsed without echoing it on failure: the answer holds the secret.
    let answer: Value = serde_json::from_slice(&output.stdout).map_err(|_| {
        anyhow::anyhow!("{program} get {server} answered something other than JSON")
    })?;
    match (answer["Username"].as_str(), answer["Secret"].as_str()) {
        (Some(user), Some(secret)) => Ok(Some((user.to_owned(), secret.to_owned()))),
        _ => bail!("{program} get {server} answered without Username and Secret"),
    }
}

/// What a registry's `WWW-Authenticate` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// The first challenge of a `WWW-Authenticate` value: `Basic realm="x"` or
/// `Bearer realm="https://…",service="…",scope="…"` (quoted or bare parameter values).
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
        scope: get("scope"),
    })
}

fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if name.trim().is_empty() || chars.next() != Some('=') {
            return params;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_config_says(config: &str, host: &str, expected: Option<bool>) {
        let config: Value = serde_json::from_str(config).unwrap();
        assert_eq!(config_says(&config, host), expected, "{host} in {config}");
    }

    #[test]
    fn whether_docker_s_config_holds_a_login() {
        assert!(config_keys("docker.io").contains(&"https://index.docker.io/v1/".to_owned()));
        check_config_says("{}", "ghcr.io", Some(false));
        check_config_says(
            r#"{"auths": {"ghcr.io": {"auth": "x"}}}"#,
            "ghcr.io",
            Some(true),
        );
        check_config_says(r#"{"auths": {"ghcr.io": {}}}"#, "docker.io", Some(false));
        check_config_says(
            r#"{"auths": {"https://index.docker.io/v1/": {}}}"#,
            "docker.io",
            Some(true),
        );
        check_config_says(
            r#"{"credHelpers": {"ghcr.io": "gh"}}"#,
            "ghcr.io",
            Some(true),
        );
        check_config_says(r#"{"credsStore": "desktop"}"#, "ghcr.io", None);
        check_config_says(r#"{"credsStore": ""}"#, "ghcr.io", Some(false));
        check_config_says(
            r#"{"auths": {"127.0.0.1:5001": {}}}"#,
            "127.0.0.1:5001",
            Some(true),
        );
    }

    #[track_caller]
    fn check_challenge(value: &str, expected: Option<Challenge>) {
        assert_eq!(parse_challenge(value), expected, "{value}");
    }

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Option<Challenge> {
        Some(Challenge::Bearer {
            realm: realm.to_owned(),
            service: service.map(str::to_owned),
            scope: scope.map(str::to_owned),
        })
    }

    #[test]
    fn challenges() {
        check_challenge(r#"Basic realm="test""#, Some(Challenge::Basic));
        check_challenge("basic", Some(Challenge::Basic));
        check_challenge(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:20i-stack/php-fpm:pull""#,
            bearer(
                "https://ghcr.io/token",
                Some("ghcr.io"),
                Some("repository:20i-stack/php-fpm:pull"),
            ),
        );
        check_challenge(
            r#"Bearer realm="https://auth.docker.io/token", service="registry.docker.io", scope="repository:a/b:pull,push""#,
            bearer(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:a/b:pull,push"),
            ),
        );
        check_challenge(
            "Bearer realm=https://r.example/token,service=r.example",
            bearer("https://r.example/token", Some("r.example"), None),
        );
        check_challenge(r#"Bearer realm="a\"b""#, bearer("a\"b", None, None));
        check_challenge(r#"Bearer service="x""#, None);
        check_challenge(r#"Digest realm="x""#, None);
        check_challenge("", None);
    }

    fn no_helper(_: &str, _: &str) -> anyhow::Result<Option<(String, String)>> {
        panic!("no helper should run")
    }

    fn helper(name: &str, server: &str) -> anyhow::Result<Option<(String, String)>> {
        match (name, server) {
            ("pass", "https://index.docker.io/v1/") => Ok(Some(("hub".into(), "s3cret".into()))),
            ("pass", "ghcr.io") => Ok(Some(("<token>".into(), "refresh".into()))),
            _ => Ok(None),
        }
    }

    #[track_caller]
    fn check(config: &str, host: &str, expected: Option<Credential>) {
        let config: Value = serde_json::from_str(config).unwrap();
        let actual = from_config(&config, host, Path::new("config.json"), &helper).unwrap();
        assert_eq!(actual, expected, "{host} in {config}");
    }

    fn basic(user: &str, password: &str) -> Option<Credential> {
        Some(Credential::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    #[test]
    fn credentials_in_dockers_order() {
        // base64("u:p:w") = dTpwOnc=; a password may hold a colon.
        check(
            r#"{"auths": {"ghcr.io": {"auth": "dTpwOnc="}}}"#,
            "ghcr.io",
            basic("u", "p:w"),
        );
        check(
            r#"{"auths": {"https://ghcr.io": {"auth": "dTpwOnc"}}}"#,
            "ghcr.io",
            basic("u", "p:w"),
        );
        check(
            r#"{"auths": {"127.0.0.1:5000": {"username": "u", "password": "p"}}}"#,
            "127.0.0.1:5000",
            basic("u", "p"),
        );
        check(
            r#"{"auths": {"ghcr.io": {"identitytoken": "t"}}}"#,
            "ghcr.io",
            Some(Credential::IdentityToken("t".into())),
        );
        check(
            r#"{"auths": {"ghcr.io": {"auth": "dTpwOnc="}}}"#,
            "quay.io",
            None,
        );
        check("{}", "ghcr.io", None);
        check(
            r#"{"auths": {"https://index.docker.io/v1/": {}}, "credsStore": "pass"}"#,
            "docker.io",
            basic("hub", "s3cret"),
        );
        check(
            r#"{"credsStore": "pass"}"#,
            "ghcr.io",
            Some(Credential::IdentityToken("refresh".into())),
        );
        check(r#"{"credsStore": "pass"}"#, "quay.io", None);
        // `docker login` files Docker Hub under its v1 address; every name of the API host finds it.
        for host in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            check(
                r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dTpwOnc="}}}"#,
                host,
                basic("u", "p:w"),
            );
            check(r#"{"credsStore": "pass"}"#, host, basic("hub", "s3cret"));
        }
        check(
            r#"{"credHelpers": {"ghcr.io": "pass"}, "auths": {"ghcr.io": {"auth": "dTpwOnc="}}}"#,
            "ghcr.io",
            Some(Credential::IdentityToken("refresh".into())),
        );
        check(
            r#"{"credHelpers": {"ghcr.io": ""}, "auths": {"ghcr.io": {"auth": "dTpwOnc="}}}"#,
            "ghcr.io",
            basic("u", "p:w"),
        );
    }

    #[test]
    fn a_malformed_auth_is_named_without_its_value() {
        let config: Value =
            serde_json::from_str(r#"{"auths": {"ghcr.io": {"auth": "c2VjcmV0"}}}"#).unwrap();
        let error = from_config(
            &config,
            "ghcr.io",
            Path::new("/home/u/.docker/config.json"),
            &no_helper,
        )
        .unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains("ghcr.io in /home/u/.docker/config.json"),
            "{message}"
        );
        assert!(
            message.contains("run `docker login ghcr.io` again"),
            "{message}"
        );
        assert!(
            !message.contains("c2VjcmV0") && !message.contains("secret"),
            "{message}"
        );
    }

    #[test]
    fn a_helper_name_that_is_a_path_is_refused() {
        for config in [
            r#"{"credsStore": "../../tmp/x"}"#,
            r#"{"credHelpers": {"ghcr.io": "a/b"}}"#,
        ] {
            let config: Value = serde_json::from_str(config).unwrap();
            let error =
                from_config(&config, "ghcr.io", Path::new("config.json"), &no_helper).unwrap_err();
            assert!(
                error.to_string().contains("is not a helper name"),
                "{error}"
            );
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!(
            "{:?} {:?}",
            basic("u", "pw123").unwrap(),
            Credential::IdentityToken("tok456".into())
        );
        assert!(
            !text.contains("pw123") && !text.contains("tok456"),
            "{text}"
        );
        assert_eq!(
            basic("u", "p").unwrap().basic_header().unwrap(),
            "Basic dTpw"
        );
    }
}
