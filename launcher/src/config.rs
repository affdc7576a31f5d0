//! Configuration, resolved deterministically: every variable the launcher reads, the layers it reads them from,
//! and the value each one ends up with together with where that value came from.
//!
//! Layers, lowest first: built-in defaults, the stack's `config/stack-vars.yml`, the user's `~/.20i/config`, the
//! project's `.20i-local`, the environment, command-line flags. [`resolve`] is a pure function of those layers
//! (plus the home and current directories); [`load`] is the thin shell that reads them.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use stack_images::{matrix::check_namespace, tags, Digest, Matrix, PhpLine, ReleaseVersion};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The launcher's built-in default.
    Default,
    /// A default computed from another variable (named here).
    Derived(&'static str),
    /// This launcher binary itself (its release).
    Launcher,
    StackVars(PathBuf),
    UserConfig(PathBuf),
    ProjectLocal(PathBuf),
    Environment,
    Flag,
}

impl Source {
    /// The directory a relative path from this source is relative to (`None`: the current directory).
    fn base_dir(&self) -> Option<&Path> {
        match self {
            Source::StackVars(file) => file.parent().and_then(Path::parent),
            Source::UserConfig(file) | Source::ProjectLocal(file) => file.parent(),
            _ => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Derived(from) => write!(f, "default, from {from}"),
            Source::Launcher => write!(f, "this launcher (20i {})", env!("CARGO_PKG_VERSION")),
            Source::StackVars(path) => write!(f, "stack vars {}", path.display()),
            Source::UserConfig(path) => write!(f, "user config {}", path.display()),
            Source::ProjectLocal(path) => write!(f, "project {}", path.display()),
            Source::Environment => f.write_str("environment"),
            Source::Flag => f.write_str("command line"),
        }
    }
}

/// One layer of `NAME=value` settings, in the order they were written (a later one wins within the layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub source: Source,
    pub values: Vec<(String, String)>,
}

/// Everything resolution depends on.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub home: PathBuf,
    pub cwd: PathBuf,
    /// Lowest first; the built-in defaults are not a layer, they are the fallback of every variable.
    pub layers: Vec<Layer>,
}

/// A variable the launcher knows, with what it is for (shown by `--explain` and in the docs).
pub struct Var {
    pub name: &'static str,
    pub about: &'static str,
    /// Never printed: `--explain` says only whether it is set.
    pub secret: bool,
}

const fn var(name: &'static str, about: &'static str) -> Var {
    Var {
        name,
        about,
        secret: false,
    }
}

/// Every variable, in resolution order (a derived default only uses variables above it).
pub const VARS: &[Var] = &[
    var(
        "STACK_RELEASE",
        "the stack release of this launcher: the vX.Y.Z of every image tag",
    ),
    var("PHP_VERSION", "the PHP line, major.minor (8.1 ... 8.5)"),
    var(
        "USE_PREBUILT",
        "pull the pre-built image (true) or build locally (false)",
    ),
    var(
        "ALLOW_LOCAL_BUILD_FALLBACK",
        "build locally when the pull fails (true) or stop (false)",
    ),
    var("IMAGE_REGISTRY", "registry namespace pulled from"),
    var(
        "IMAGE_MIRRORS",
        "comma-separated mirror namespaces tried when the registry is unreachable or rate limited",
    ),
    var(
        "PHP_FPM_PIN",
        "the pinned image digest (`20i pin` writes it): a pull with another digest is refused",
    ),
    var(
        "STACK_DIR",
        "the stack: compose file, config/stack-vars.yml, the PHP-FPM build context",
    ),
    var("STACK_FILE", "the compose file started"),
    var(
        "PHP_FPM_CONTEXT",
        "the PHP-FPM build context (its Dockerfile) for local builds",
    ),
    var(
        "WAIT_TIMEOUT",
        "seconds `20i start` waits for every service to be healthy",
    ),
    var("CODE_DIR", "the site served, mounted at /var/www/site"),
    var(
        "COMPOSE_PROJECT_NAME",
        "the compose project (containers, network, volumes)",
    ),
    var("BIND_ADDRESS", "host address the published ports listen on"),
    var("HOST_PORT", "host port of the web server"),
    var("NGINX_IMAGE", "the web server image"),
    var("MYSQL_VERSION", "the MariaDB version"),
    var("MARIADB_IMAGE", "the database image"),
    var("MYSQL_PORT", "host port of the database"),
    var("MYSQL_DATABASE", "database created on first start"),
    var("MYSQL_USER", "database user created on first start"),
    Var {
        name: "MYSQL_PASSWORD",
        about: "that user's password",
        secret: true,
    },
    Var {
        name: "MYSQL_ROOT_PASSWORD",
        about: "the database root password",
        secret: true,
    },
    var("PMA_IMAGE", "the phpMyAdmin image"),
    var("PMA_PORT", "host port of phpMyAdmin"),
];

/// Variables that choose where the stack is, so they cannot come from the stack's own `stack-vars.yml`.
const NOT_IN_STACK_VARS: &[&str] = &["STACK_DIR", "STACK_FILE", "STACK_RELEASE"];

pub fn is_known(name: &str) -> bool {
    VARS.iter().any(|v| v.name == name)
}

/// A resolved value and its provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: String,
    pub source: Source,
    pub secret: bool,
    /// False for a variable the launcher does not know, passed on to compose as it is (a module may use it).
    pub known: bool,
}

impl Entry {
    /// The value as it may be printed.
    pub fn shown(&self) -> &str {
        if self.secret {
            "(set, not shown)"
        } else {
            &self.value
        }
    }
}

/// The resolved configuration: typed values for the launcher, every entry with its source for `--explain`.
#[derive(Clone, Debug)]
pub struct Config {
    pub release: ReleaseVersion,
    pub php: PhpLine,
    pub use_prebuilt: bool,
    pub allow_fallback: bool,
    pub registry: String,
    pub mirrors: Vec<String>,
    pub pin: Option<Digest>,
    pub stack_dir: PathBuf,
    pub stack_file: PathBuf,
    pub build_context: PathBuf,
    pub wait_timeout: u32,
    pub project: String,
    /// `~/.20i`: user config and modules.
    pub user_dir: PathBuf,
    /// Table order, then variables the launcher does not know, in the order first seen.
    pub entries: Vec<Entry>,
}

/// The namespace of images built on this machine: never pushed, never pulled.
pub const LOCAL_NAMESPACE: &str = "20i-local";

impl Config {
    /// The pre-built image: `<registry>/php-fpm:v<release>-php-<M.m>`, from the shared tag scheme.
    pub fn prebuilt_reference(&self) -> String {
        self.reference_in(&self.registry)
    }

    /// The same tag under another namespace (a mirror, or the local one).
    pub fn reference_in(&self, namespace: &str) -> String {
        tags::reference(
            namespace,
            Matrix::embedded().image.as_str(),
            tags::pin_tag(&self.release, self.php).as_str(),
        )
    }

    /// Where a local build is tagged: same tag, local namespace, so it never passes for the pulled image.
    pub fn local_reference(&self) -> String {
        self.reference_in(LOCAL_NAMESPACE)
    }

    /// The one reference `20i start` runs, as `20i image` prints it.
    pub fn selected_reference(&self) -> String {
        if !self.use_prebuilt {
            self.local_reference()
        } else if let Some(pin) = &self.pin {
            format!("{}@{pin}", self.prebuilt_reference())
        } else {
            self.prebuilt_reference()
        }
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Everything compose and the modules get, as environment variables.
    pub fn compose_env(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    }
}

/// Resolves every variable from the layers: the topmost layer that sets it wins, else its default.
pub fn resolve(inputs: &Inputs) -> anyhow::Result<Config> {
    for layer in &inputs.layers {
        if let Source::StackVars(path) = &layer.source {
            for (name, _) in &layer.values {
                if NOT_IN_STACK_VARS.contains(&name.as_str()) {
                    bail!(
                        "{name} cannot be set in {}: it decides where the stack is; set it in ~/.20i/config, \
                         the environment or with a flag",
                        path.display()
                    );
                }
            }
        }
    }
    let matrix = Matrix::embedded();
    let mut r = Resolver {
        inputs,
        entries: Vec::new(),
    };

    let release = r.get(
        "STACK_RELEASE",
        concat!("v", env!("CARGO_PKG_VERSION")),
        Source::Launcher,
    );
    let release: ReleaseVersion = r.parse("STACK_RELEASE", &release, "vX.Y.Z")?;
    let php = r.get(
        "PHP_VERSION",
        &matrix.default_line.to_string(),
        Source::Default,
    );
    let php: PhpLine = php.parse().map_err(|e: anyhow::Error| {
        let entry = r.last();
        anyhow::anyhow!("PHP_VERSION from {}: {e}", entry.source)
    })?;
    let use_prebuilt = r.get("USE_PREBUILT", "true", Source::Default);
    let use_prebuilt = r.boolean("USE_PREBUILT", &use_prebuilt)?;
    let allow_fallback = r.get("ALLOW_LOCAL_BUILD_FALLBACK", "true", Source::Default);
    let allow_fallback = r.boolean("ALLOW_LOCAL_BUILD_FALLBACK", &allow_fallback)?;
    let registry = r.get(
        "IMAGE_REGISTRY",
        matrix.registries.canonical.as_str(),
        Source::Default,
    );
    let registry = r.namespace("IMAGE_REGISTRY", &registry)?;
    // The mirrors hold digest-identical copies of the canonical registry only: another registry (a fork, a
    // private one) has no mirrors unless they are named.
    let mirrors = if registry == matrix.registries.canonical.as_str() {
        r.get(
            "IMAGE_MIRRORS",
            &matrix
                .registries
                .mirrors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            Source::Default,
        )
    } else {
        r.get("IMAGE_MIRRORS", "", Source::Derived("IMAGE_REGISTRY"))
    };
    let mirrors = mirrors
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| r.namespace("IMAGE_MIRRORS", m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pin = r.get("PHP_FPM_PIN", "", Source::Default);

    let stack_dir = r.path(
        "STACK_DIR",
        inputs.home.join("docker/20i-stack"),
        Source::Default,
    );
    let stack_file = r.path(
        "STACK_FILE",
        stack_dir.join("docker-compose.yml"),
        Source::Derived("STACK_DIR"),
    );
    let build_context = r.path(
        "PHP_FPM_CONTEXT",
        stack_dir.join("images/php-fpm"),
        Source::Derived("STACK_DIR"),
    );
    let wait_timeout = r.get("WAIT_TIMEOUT", "120", Source::Default);
    let wait_timeout: u32 = r.parse("WAIT_TIMEOUT", &wait_timeout, "a number of seconds")?;
    if wait_timeout == 0 {
        r.reject("WAIT_TIMEOUT", "0", "a number of seconds above 0")?;
    }
    let code_dir = r.path("CODE_DIR", inputs.cwd.clone(), Source::Default);
    let project = r.get(
        "COMPOSE_PROJECT_NAME",
        &project_name_from(&code_dir),
        Source::Derived("CODE_DIR"),
    );
    if !is_project_name(&project) {
        r.reject(
            "COMPOSE_PROJECT_NAME",
            &project,
            "lowercase letters, digits, `-` and `_`, starting with a letter or digit",
        )?;
    }
    r.get("BIND_ADDRESS", "127.0.0.1", Source::Default);
    let port = r.get("HOST_PORT", "80", Source::Default);
    r.port("HOST_PORT", &port)?;
    r.get("NGINX_IMAGE", "nginx:1.25-alpine", Source::Default);
    let mysql_version = r.get("MYSQL_VERSION", "10.6", Source::Default);
    r.get(
        "MARIADB_IMAGE",
        &format!("mariadb:{mysql_version}"),
        Source::Derived("MYSQL_VERSION"),
    );
    let port = r.get("MYSQL_PORT", "3306", Source::Default);
    r.port("MYSQL_PORT", &port)?;
    r.get("MYSQL_DATABASE", "site", Source::Default);
    r.get("MYSQL_USER", "site", Source::Default);
    r.get("MYSQL_PASSWORD", "site", Source::Default);
    r.get("MYSQL_ROOT_PASSWORD", "root", Source::Default);
    r.get("PMA_IMAGE", "phpmyadmin/phpmyadmin:latest", Source::Default);
    let port = r.get("PMA_PORT", "8081", Source::Default);
    r.port("PMA_PORT", &port)?;
    r.extras();

    let mut config = Config {
        release,
        php,
        use_prebuilt,
        allow_fallback,
        registry,
        mirrors,
        pin: None,
        stack_dir,
        stack_file,
        build_context,
        wait_timeout,
        project,
        user_dir: inputs.home.join(".20i"),
        entries: r.entries,
    };
    config.pin = parse_pin(&config, &pin)?;
    Ok(config)
}

/// `PHP_FPM_PIN`: `sha256:…`, or `<reference>@sha256:…` whose reference must be the one this config selects.
fn parse_pin(config: &Config, text: &str) -> anyhow::Result<Option<Digest>> {
    if text.is_empty() {
        return Ok(None);
    }
    let source = &config.entry("PHP_FPM_PIN").expect("resolved").source;
    let (reference, digest) = match text.rsplit_once('@') {
        Some((reference, digest)) => (Some(reference), digest),
        None => (None, text),
    };
    let digest = Digest::parse(digest).with_context(|| {
        format!(
            "PHP_FPM_PIN from {source}: use <image>@sha256:<64 hex digits>, as `20i pin` writes it"
        )
    })?;
    let selected = config.prebuilt_reference();
    if let Some(reference) = reference {
        if reference != selected {
            bail!(
                "PHP_FPM_PIN from {source} pins {reference}, but this configuration selects {selected}: \
                 run `20i pin` again, or remove PHP_FPM_PIN"
            );
        }
    }
    Ok(Some(digest))
}

/// The project directory's name as compose accepts it (the shell launcher's COMPOSE_PROJECT_NAME).
fn project_name_from(code_dir: &Path) -> String {
    let name = code_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches(['-', '_']).to_owned();
    if cleaned.is_empty() {
        "site".to_owned()
    } else {
        cleaned
    }
}

fn is_project_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

struct Resolver<'a> {
    inputs: &'a Inputs,
    entries: Vec<Entry>,
}

impl Resolver<'_> {
    /// The topmost value of `name`, or `default`; recorded with its source.
    fn get(&mut self, name: &'static str, default: &str, default_source: Source) -> String {
        let found = self.inputs.layers.iter().rev().find_map(|layer| {
            layer
                .values
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| (v.clone(), layer.source.clone()))
        });
        let (value, source) = found.unwrap_or_else(|| (default.to_owned(), default_source));
        let secret = VARS.iter().any(|v| v.name == name && v.secret);
        self.entries.push(Entry {
            name: name.to_owned(),
            value: value.clone(),
            source,
            secret,
            known: true,
        });
        value
    }

    /// A path; a relative one is relative to the file that set it (or the current directory).
    fn path(&mut self, name: &'static str, default: PathBuf, default_source: Source) -> PathBuf {
        let value = self.get(name, &default.display().to_string(), default_source);
        let entry = self.entries.last_mut().expect("just pushed");
        let path = PathBuf::from(&value);
        let absolute = if path.is_absolute() {
            path
        } else {
            let base = entry.source.base_dir().unwrap_or(&self.inputs.cwd);
            // `components` drops the `.` of `./php`.
            base.join(path).components().collect()
        };
        entry.value = absolute.display().to_string();
        absolute
    }

    fn last(&self) -> &Entry {
        self.entries.last().expect("a value was resolved")
    }

    fn source_of(&self, name: &str) -> Source {
        self.entries
            .iter()
            .rev()
            .find(|e| e.name == name)
            .map(|e| e.source.clone())
            .unwrap_or(Source::Default)
    }

    fn reject<T>(&self, name: &str, value: &str, accepted: &str) -> anyhow::Result<T> {
        bail!(
            "{name}={value} (from {}) is not valid: use {accepted}",
            self.source_of(name)
        )
    }

    fn boolean(&self, name: &str, value: &str) -> anyhow::Result<bool> {
        match value {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => self.reject(name, value, "true or false (or 1 or 0)"),
        }
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &str,
        value: &str,
        accepted: &str,
    ) -> anyhow::Result<T> {
        match value.parse() {
            Ok(parsed) => Ok(parsed),
            Err(_) => self.reject(name, value, accepted),
        }
    }

    fn port(&self, name: &str, value: &str) -> anyhow::Result<()> {
        match value.parse::<u16>() {
            Ok(port) if port > 0 => Ok(()),
            _ => self.reject(name, value, "a port number from 1 to 65535"),
        }
    }

    fn namespace(&self, name: &str, value: &str) -> anyhow::Result<String> {
        let value = value.trim_end_matches('/');
        check_namespace(value)
            .with_context(|| format!("{name} (from {})", self.source_of(name)))?;
        Ok(value.to_owned())
    }

    /// Variables the launcher does not know, from files and flags: passed to compose as they are.
    fn extras(&mut self) {
        let mut extras: Vec<Entry> = Vec::new();
        for layer in &self.inputs.layers {
            for (name, value) in &layer.values {
                if is_known(name) {
                    continue;
                }
                let upper = name.to_ascii_uppercase();
                let secret = ["PASSWORD", "SECRET", "TOKEN", "KEY"]
                    .iter()
                    .any(|word| upper.contains(word));
                let entry = Entry {
                    name: name.clone(),
                    value: value.clone(),
                    source: layer.source.clone(),
                    secret,
                    known: false,
                };
                match extras.iter_mut().find(|e| e.name == *name) {
                    Some(existing) => *existing = entry,
                    None => extras.push(entry),
                }
            }
        }
        self.entries.extend(extras);
    }
}

/// Reads `KEY=VALUE` lines (`export KEY=VALUE` too, as the shell launcher sourced `.20i-local`): comments and
/// blank lines are skipped, one pair of matching quotes is removed, nothing is expanded.
pub fn parse_env_file(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    parse_lines(text, '=', "KEY=VALUE")
}

/// Reads the stack's `config/stack-vars.yml`: flat `KEY: value` lines only.
pub fn parse_stack_vars(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    parse_lines(text, ':', "KEY: value")
}

fn parse_lines(text: &str, separator: char, form: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut values = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line == "---" {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            bail!(
                "line {}: `{line}` is indented: nested values are not read, use flat {form} lines",
                n + 1
            );
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once(separator) else {
            bail!("line {}: `{line}` is not {form}", n + 1);
        };
        let key = key.trim();
        let name_ok = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            bail!("line {}: `{key}` is not a variable name ({form})", n + 1);
        }
        let value = value.trim();
        let value = unquote(value).unwrap_or_else(|| {
            // An unquoted value ends at a comment, as in the shell and YAML.
            value.split(" #").next().unwrap_or_default().trim()
        });
        values.push((key.to_owned(), value.to_owned()));
    }
    Ok(values)
}

fn unquote(value: &str) -> Option<&str> {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return Some(&value[1..value.len() - 1]);
        }
    }
    None
}

/// The layer files, for `--explain`: which were read and which were absent.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub files: Vec<(Source, bool)>,
}

/// The shell: reads the files and the environment, then resolves. `flags` are the command line's settings.
pub fn load(flags: Vec<(String, String)>) -> anyhow::Result<Loaded> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set: set HOME to your home directory")?;
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let environment: Vec<(String, String)> = VARS
        .iter()
        .filter_map(|v| {
            std::env::var(v.name)
                .ok()
                .map(|value| (v.name.to_owned(), value))
        })
        .collect();
    let mut files = Vec::new();
    let mut read = |source: Source, path: &Path, yaml: bool| -> anyhow::Result<Option<Layer>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                files.push((source, false));
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let values = if yaml {
            parse_stack_vars(&text)
        } else {
            parse_env_file(&text)
        }
        .with_context(|| format!("in {}", path.display()))?;
        files.push((source.clone(), true));
        Ok(Some(Layer { source, values }))
    };
    let user = home.join(".20i/config");
    let local = cwd.join(".20i-local");
    let mut layers: Vec<Layer> = Vec::new();
    layers.extend(read(Source::UserConfig(user.clone()), &user, false)?);
    layers.extend(read(Source::ProjectLocal(local.clone()), &local, false)?);
    layers.push(Layer {
        source: Source::Environment,
        values: environment,
    });
    layers.push(Layer {
        source: Source::Flag,
        values: flags,
    });
    // Where the stack is decides which stack-vars.yml is read: resolve that first, without it.
    let mut inputs = Inputs { home, cwd, layers };
    let stack_dir = resolve(&inputs)?.stack_dir;
    let vars = stack_dir.join("config/stack-vars.yml");
    if let Some(layer) = read(Source::StackVars(vars.clone()), &vars, true)? {
        inputs.layers.insert(0, layer);
    }
    let config = resolve(&inputs)?;
    files.sort_by_key(|(source, _)| match source {
        Source::StackVars(_) => 0,
        Source::UserConfig(_) => 1,
        _ => 2,
    });
    Ok(Loaded { config, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERSION: &str = env!("CARGO_PKG_VERSION");

    fn layer(source: Source, text: &str) -> Layer {
        Layer {
            source,
            values: parse_env_file(text).unwrap(),
        }
    }

    fn stack() -> Source {
        Source::StackVars(PathBuf::from("/stack/config/stack-vars.yml"))
    }
    fn user() -> Source {
        Source::UserConfig(PathBuf::from("/home/u/.20i/config"))
    }
    fn project() -> Source {
        Source::ProjectLocal(PathBuf::from("/work/my-site/.20i-local"))
    }

    /// Layers, lowest first, as `(source, "K=V K=V")`; the answer is `NAME=value (source)` for each asked name,
    /// or the error.
    fn outcome(layers: &[(Source, &str)], names: &[&str]) -> String {
        let inputs = Inputs {
            home: PathBuf::from("/home/u"),
            cwd: PathBuf::from("/work/my-site"),
            layers: layers
                .iter()
                .map(|(source, text)| layer(source.clone(), &text.replace(' ', "\n")))
                .collect(),
        };
        match resolve(&inputs) {
            Ok(config) => names
                .iter()
                .map(|name| match *name {
                    "image" => format!("image={}", config.selected_reference()),
                    _ => {
                        let e = config.entry(name).unwrap_or_else(|| panic!("no {name}"));
                        format!("{name}={} ({})", e.shown(), e.source)
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("error: {e:#}"),
        }
    }

    #[track_caller]
    fn check(layers: &[(Source, &str)], names: &[&str], expected: &str) {
        let expected = expected.replace("{V}", VERSION);
        assert_eq!(outcome(layers, names), expected);
    }

    #[test]
    #[rustfmt::skip]
    fn defaults() {
        check(&[], &["image"], "image=ghcr.io/20i-stack/php-fpm:v{V}-php-8.5");
        check(&[], &["STACK_RELEASE"], "STACK_RELEASE=v{V} (this launcher (20i {V}))");
        check(&[], &["PHP_VERSION"], "PHP_VERSION=8.5 (default)");
        check(&[], &["USE_PREBUILT", "ALLOW_LOCAL_BUILD_FALLBACK"], "USE_PREBUILT=true (default), ALLOW_LOCAL_BUILD_FALLBACK=true (default)");
        check(&[], &["IMAGE_REGISTRY", "IMAGE_MIRRORS"], "IMAGE_REGISTRY=ghcr.io/20i-stack (default), IMAGE_MIRRORS=docker.io/20istack (default)");
        check(&[], &["PHP_FPM_PIN"], "PHP_FPM_PIN= (default)");
        check(&[], &["STACK_DIR", "STACK_FILE"], "STACK_DIR=/home/u/docker/20i-stack (default), STACK_FILE=/home/u/docker/20i-stack/docker-compose.yml (default, from STACK_DIR)");
        check(&[], &["PHP_FPM_CONTEXT"], "PHP_FPM_CONTEXT=/home/u/docker/20i-stack/images/php-fpm (default, from STACK_DIR)");
        check(&[], &["WAIT_TIMEOUT"], "WAIT_TIMEOUT=120 (default)");
        check(&[], &["CODE_DIR", "COMPOSE_PROJECT_NAME"], "CODE_DIR=/work/my-site (default), COMPOSE_PROJECT_NAME=my-site (default, from CODE_DIR)");
        check(&[], &["BIND_ADDRESS", "HOST_PORT"], "BIND_ADDRESS=127.0.0.1 (default), HOST_PORT=80 (default)");
        check(&[], &["NGINX_IMAGE", "PMA_IMAGE", "PMA_PORT"], "NGINX_IMAGE=nginx:1.25-alpine (default), PMA_IMAGE=phpmyadmin/phpmyadmin:latest (default), PMA_PORT=8081 (default)");
        check(&[], &["MYSQL_VERSION", "MARIADB_IMAGE", "MYSQL_PORT"], "MYSQL_VERSION=10.6 (default), MARIADB_IMAGE=mariadb:10.6 (default, from MYSQL_VERSION), MYSQL_PORT=3306 (default)");
        check(&[], &["MYSQL_DATABASE", "MYSQL_USER"], "MYSQL_DATABASE=site (default), MYSQL_USER=site (default)");
        check(&[], &["MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD"], "MYSQL_PASSWORD=(set, not shown) (default), MYSQL_ROOT_PASSWORD=(set, not shown) (default)");
    }

    #[test]
    #[rustfmt::skip]
    fn every_variable_can_be_set() {
        let pin = format!("PHP_FPM_PIN=sha256:{}", "a".repeat(64));
        check(&[(Source::Environment, "PHP_VERSION=8.2")], &["image"], "image=ghcr.io/20i-stack/php-fpm:v{V}-php-8.2");
        check(&[(Source::Environment, "STACK_RELEASE=v2.0.0")], &["image"], "image=ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5");
        check(&[(Source::Environment, "USE_PREBUILT=false")], &["image"], "image=20i-local/php-fpm:v{V}-php-8.5");
        check(&[(Source::Environment, "USE_PREBUILT=0 ALLOW_LOCAL_BUILD_FALLBACK=0")], &["USE_PREBUILT", "ALLOW_LOCAL_BUILD_FALLBACK"], "USE_PREBUILT=0 (environment), ALLOW_LOCAL_BUILD_FALLBACK=0 (environment)");
        check(&[(Source::Environment, "IMAGE_REGISTRY=127.0.0.1:5000/test/")], &["image"], "image=127.0.0.1:5000/test/php-fpm:v{V}-php-8.5");
        check(&[(Source::Environment, "IMAGE_MIRRORS=")], &["IMAGE_MIRRORS"], "IMAGE_MIRRORS= (environment)");
        check(&[(Source::Environment, "IMAGE_REGISTRY=registry.example.com/team")], &["IMAGE_MIRRORS"], "IMAGE_MIRRORS= (default, from IMAGE_REGISTRY)");
        check(&[(Source::Environment, "IMAGE_REGISTRY=registry.example.com/team IMAGE_MIRRORS=m.example.com/team")], &["IMAGE_MIRRORS"], "IMAGE_MIRRORS=m.example.com/team (environment)");
        check(&[(Source::Environment, &pin)], &["image"], &format!("image=ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5@sha256:{}", "a".repeat(64)));
        check(&[(Source::Environment, "STACK_DIR=/opt/stack")], &["STACK_FILE", "PHP_FPM_CONTEXT"], "STACK_FILE=/opt/stack/docker-compose.yml (default, from STACK_DIR), PHP_FPM_CONTEXT=/opt/stack/images/php-fpm (default, from STACK_DIR)");
        check(&[(Source::Flag, "STACK_FILE=other.yml PHP_FPM_CONTEXT=ctx")], &["STACK_FILE", "PHP_FPM_CONTEXT"], "STACK_FILE=/work/my-site/other.yml (command line), PHP_FPM_CONTEXT=/work/my-site/ctx (command line)");
        check(&[(Source::Environment, "WAIT_TIMEOUT=30 CODE_DIR=/srv/Blog.Site")], &["WAIT_TIMEOUT", "COMPOSE_PROJECT_NAME"], "WAIT_TIMEOUT=30 (environment), COMPOSE_PROJECT_NAME=blog-site (default, from CODE_DIR)");
        check(&[(Source::Environment, "COMPOSE_PROJECT_NAME=p1 BIND_ADDRESS=0.0.0.0 HOST_PORT=8080")], &["COMPOSE_PROJECT_NAME", "BIND_ADDRESS", "HOST_PORT"], "COMPOSE_PROJECT_NAME=p1 (environment), BIND_ADDRESS=0.0.0.0 (environment), HOST_PORT=8080 (environment)");
        check(&[(Source::Environment, "MYSQL_VERSION=11.4")], &["MARIADB_IMAGE"], "MARIADB_IMAGE=mariadb:11.4 (default, from MYSQL_VERSION)");
        check(&[(Source::Environment, "MYSQL_VERSION=11.4 MARIADB_IMAGE=x/db:1 NGINX_IMAGE=x/web:1 PMA_IMAGE=x/pma:1")], &["MARIADB_IMAGE", "NGINX_IMAGE", "PMA_IMAGE"], "MARIADB_IMAGE=x/db:1 (environment), NGINX_IMAGE=x/web:1 (environment), PMA_IMAGE=x/pma:1 (environment)");
        check(&[(Source::Environment, "MYSQL_PORT=3307 PMA_PORT=8082 MYSQL_DATABASE=d MYSQL_USER=u MYSQL_PASSWORD=p")], &["MYSQL_PORT", "PMA_PORT", "MYSQL_DATABASE", "MYSQL_USER", "MYSQL_PASSWORD"], "MYSQL_PORT=3307 (environment), PMA_PORT=8082 (environment), MYSQL_DATABASE=d (environment), MYSQL_USER=u (environment), MYSQL_PASSWORD=(set, not shown) (environment)");
    }

    #[test]
    #[rustfmt::skip]
    fn layers_and_precedence() {
        let all = [
            (stack(), "PHP_VERSION=8.1"),
            (user(), "PHP_VERSION=8.2"),
            (project(), "PHP_VERSION=8.3"),
            (Source::Environment, "PHP_VERSION=8.4"),
            (Source::Flag, "PHP_VERSION=8.5"),
        ];
        for top in 1..=all.len() {
            let expected = [
                "PHP_VERSION=8.1 (stack vars /stack/config/stack-vars.yml)",
                "PHP_VERSION=8.2 (user config /home/u/.20i/config)",
                "PHP_VERSION=8.3 (project /work/my-site/.20i-local)",
                "PHP_VERSION=8.4 (environment)",
                "PHP_VERSION=8.5 (command line)",
            ][top - 1];
            check(&all[..top], &["PHP_VERSION"], expected);
        }
        // A higher layer only overrides what it sets.
        check(&[(stack(), "PMA_IMAGE=a/pma:1 MYSQL_VERSION=10.11"), (project(), "PMA_IMAGE=b/pma:2")], &["PMA_IMAGE", "MARIADB_IMAGE"], "PMA_IMAGE=b/pma:2 (project /work/my-site/.20i-local), MARIADB_IMAGE=mariadb:10.11 (default, from MYSQL_VERSION)");
        // Within one layer the last line wins.
        check(&[(project(), "PHP_VERSION=8.1 PHP_VERSION=8.3")], &["PHP_VERSION"], "PHP_VERSION=8.3 (project /work/my-site/.20i-local)");
        // Relative paths are relative to the file that set them.
        check(&[(user(), "STACK_DIR=stacks/20i")], &["STACK_DIR", "STACK_FILE"], "STACK_DIR=/home/u/.20i/stacks/20i (user config /home/u/.20i/config), STACK_FILE=/home/u/.20i/stacks/20i/docker-compose.yml (default, from STACK_DIR)");
        check(&[(stack(), "PHP_FPM_CONTEXT=./php")], &["PHP_FPM_CONTEXT"], "PHP_FPM_CONTEXT=/stack/php (stack vars /stack/config/stack-vars.yml)");
        // Variables the launcher does not know go to compose as they are; secrets-looking ones are not shown.
        check(&[(project(), "XDEBUG_MODE=debug"), (Source::Flag, "XDEBUG_MODE=off MODULE_API_KEY=k")], &["XDEBUG_MODE", "MODULE_API_KEY"], "XDEBUG_MODE=off (command line), MODULE_API_KEY=(set, not shown) (command line)");
    }

    #[test]
    #[rustfmt::skip]
    fn bad_values_are_errors_naming_the_variable() {
        check(&[(Source::Environment, "PHP_VERSION=8.4.3")], &[], "error: PHP_VERSION from environment: PHP version `8.4.3` is not a PHP line: use `8.4`");
        check(&[(project(), "PHP_VERSION=php8.4")], &[], "error: PHP_VERSION from project /work/my-site/.20i-local: PHP version `php8.4` is not a PHP line: use `8.4`");
        check(&[(Source::Environment, "PHP_VERSION=latest")], &[], "error: PHP_VERSION from environment: PHP version `latest` is not a PHP line: use major.minor, for example `8.4`");
        check(&[(Source::Environment, "USE_PREBUILT=yes")], &[], "error: USE_PREBUILT=yes (from environment) is not valid: use true or false (or 1 or 0)");
        check(&[(user(), "ALLOW_LOCAL_BUILD_FALLBACK=True")], &[], "error: ALLOW_LOCAL_BUILD_FALLBACK=True (from user config /home/u/.20i/config) is not valid: use true or false (or 1 or 0)");
        check(&[(Source::Flag, "USE_PREBUILT=")], &[], "error: USE_PREBUILT= (from command line) is not valid: use true or false (or 1 or 0)");
        check(&[(Source::Environment, "IMAGE_REGISTRY=https://ghcr.io/x")], &[], "error: IMAGE_REGISTRY (from environment): registry namespace `https://ghcr.io/x` is not valid: use host/namespace without scheme or tag, for example ghcr.io/20i-stack or 127.0.0.1:5000/test");
        check(&[(Source::Environment, "IMAGE_MIRRORS=docker.io/x,Bad/Name")], &[], "error: IMAGE_MIRRORS (from environment): registry namespace `Bad/Name` is not valid: use host/namespace without scheme or tag, for example ghcr.io/20i-stack or 127.0.0.1:5000/test");
        check(&[(Source::Environment, "STACK_RELEASE=2.0")], &[], "error: STACK_RELEASE=2.0 (from environment) is not valid: use vX.Y.Z");
        check(&[(Source::Environment, "WAIT_TIMEOUT=2m")], &[], "error: WAIT_TIMEOUT=2m (from environment) is not valid: use a number of seconds");
        check(&[(Source::Environment, "WAIT_TIMEOUT=0")], &[], "error: WAIT_TIMEOUT=0 (from environment) is not valid: use a number of seconds above 0");
        check(&[(Source::Environment, "HOST_PORT=http")], &[], "error: HOST_PORT=http (from environment) is not valid: use a port number from 1 to 65535");
        check(&[(Source::Environment, "MYSQL_PORT=70000")], &[], "error: MYSQL_PORT=70000 (from environment) is not valid: use a port number from 1 to 65535");
        check(&[(Source::Environment, "PMA_PORT=0")], &[], "error: PMA_PORT=0 (from environment) is not valid: use a port number from 1 to 65535");
        check(&[(Source::Environment, "COMPOSE_PROJECT_NAME=My_Site")], &[], "error: COMPOSE_PROJECT_NAME=My_Site (from environment) is not valid: use lowercase letters, digits, `-` and `_`, starting with a letter or digit");
        check(&[(Source::Environment, "PHP_FPM_PIN=sha256:abc")], &[], "error: PHP_FPM_PIN from environment: use <image>@sha256:<64 hex digits>, as `20i pin` writes it: `sha256:abc` is not a sha256 digest (sha256: and 64 lowercase hex digits)");
        check(&[(project(), &format!("PHP_FPM_PIN=ghcr.io/20i-stack/php-fpm:v1.0.0-php-8.5@sha256:{}", "b".repeat(64)))], &[], "error: PHP_FPM_PIN from project /work/my-site/.20i-local pins ghcr.io/20i-stack/php-fpm:v1.0.0-php-8.5, but this configuration selects ghcr.io/20i-stack/php-fpm:v{V}-php-8.5: run `20i pin` again, or remove PHP_FPM_PIN");
        check(&[(stack(), "STACK_DIR=/elsewhere")], &[], "error: STACK_DIR cannot be set in /stack/config/stack-vars.yml: it decides where the stack is; set it in ~/.20i/config, the environment or with a flag");
    }

    #[track_caller]
    fn check_file(text: &str, yaml: bool, expected: &str) {
        let parsed = if yaml {
            parse_stack_vars(text)
        } else {
            parse_env_file(text)
        };
        let actual = match parsed {
            Ok(values) => values
                .iter()
                .map(|(k, v)| format!("{k}=[{v}]"))
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(actual, expected, "{text:?}");
    }

    #[test]
    #[rustfmt::skip]
    fn layer_files() {
        check_file("A=1\n# c\n\nexport B='two words'\nC=\"x\" \nD=plain # note\n", false, "A=[1] B=[two words] C=[x] D=[plain]");
        check_file("E=$HOME/x\n", false, "E=[$HOME/x]");
        check_file("if true; then\n", false, "error: line 1: `if true; then` is not KEY=VALUE");
        check_file("1A=x\n", false, "error: line 1: `1A` is not a variable name (KEY=VALUE)");
        check_file("---\n# stack defaults\nPHP_VERSION: \"8.4\"\nPMA_IMAGE: phpmyadmin/phpmyadmin:latest\nMYSQL_VERSION: '10.6'\n", true, "PHP_VERSION=[8.4] PMA_IMAGE=[phpmyadmin/phpmyadmin:latest] MYSQL_VERSION=[10.6]");
        check_file("php:\n  version: 8.4\n", true, "error: line 2: `version: 8.4` is indented: nested values are not read, use flat KEY: value lines");
    }
}
