//! Configuration, resolved deterministically: every variable the launcher reads (declared once, in one row of
//! `variables!`: name, type, default, parser, what it is for, where it may be set; the row makes its entry in
//! [`VARS`], its typed field of [`Config`] and its resolution), the layers it reads them from, and the typed value
//! each one ends up with together with where that value came from.
//!
//! Layers, lowest first: built-in defaults, the stack's `config/stack-vars.yml`, the user's `~/.20i/config`, the
//! project's `.20i-local`, the environment, command-line flags. Every value is parsed once, here, into its variable's
//! type; a bad one is an error naming the variable, the value (never a secret's), the file and line or flag it came
//! from, and what to write instead. [`resolve`] is a pure function of the layers (plus the home and current
//! directories); [`load`] is the thin shell that reads them, resolving exactly once.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    fmt,
    net::Ipv4Addr,
    path::{Component, Path, PathBuf},
    str::FromStr,
};

use crate::freshness::PullPolicy;
use anyhow::{anyhow, bail, Context};
pub use stack_images::Namespace;
use stack_images::{
    cosign::{self, Verifier},
    tags, Digest, ImageRef, Matrix, PhpLine, ReleaseVersion,
};

use crate::values::{
    is_variable_name, looks_secret, parse_address, parse_bool, quoted, ImageName, Port,
    ProjectName, Seconds, Secret, TagText, NOT_SHOWN,
};

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

/// Where inside its layer a setting was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The line of a file (from 1).
    Line(usize),
    /// The command-line option (`--set`, `--php-version`, ...).
    Flag(&'static str),
}

/// A source and the place in it, as errors and `--explain` name it: `project /w/site/.20i-local:3`,
/// `command line (--set)`.
pub struct Origin<'a> {
    pub source: &'a Source,
    pub place: Option<&'a Place>,
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        match self.place {
            Some(Place::Line(line)) => write!(f, ":{line}"),
            Some(Place::Flag(flag)) => write!(f, " ({flag})"),
            None => Ok(()),
        }
    }
}

/// One `NAME=value` as written in a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub name: String,
    pub value: String,
    pub place: Option<Place>,
}

/// One layer of settings, in the order they were written (a later one wins within the layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub source: Source,
    pub values: Vec<Setting>,
}

/// Everything resolution depends on.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub home: PathBuf,
    pub cwd: PathBuf,
    /// Lowest first; the built-in defaults are not a layer, they are the fallback of every variable.
    pub layers: Vec<Layer>,
}

/// A variable the launcher knows, as `--explain`, the docs and the layer checks see it. Its type, parser and default
/// are in its row of `variables!`: together they are its one declaration.
#[derive(Debug)]
pub struct Var {
    pub name: &'static str,
    /// What it is for (shown by `--explain` and in the docs).
    pub about: &'static str,
    /// It decides where the stack is, so the stack's own `stack-vars.yml` cannot set it.
    pub locating: bool,
}

impl Var {
    /// What a row's flags (`locating`) are unless it names them.
    const ROW: Var = Var {
        name: "",
        about: "",
        locating: false,
    };
}

/// The directories a default may look at.
pub struct Dirs<'a> {
    pub home: &'a Path,
    pub cwd: &'a Path,
}

/// A default's text and where `--explain` says it came from: `default(text)`, `launcher(text)` (this launcher's
/// own release) or `derived(FROM, text)` (from the resolved value of FROM, a variable above it).
macro_rules! fallback {
    (default($text:expr)) => {
        ($text.to_string(), Source::Default)
    };
    (launcher($text:expr)) => {
        ($text.to_string(), Source::Launcher)
    };
    (derived($from:ident, $text:expr)) => {
        ($text.to_string(), Source::Derived(stringify!($from)))
    };
}

/// The first of its arguments: a row's own parser or shower, else the usual one.
macro_rules! first {
    ($given:expr ; $usual:expr) => {
        $given
    };
    ( ; $usual:expr) => {
        $usual
    };
}

/// A variable whose default needs no other variable can be resolved on its own (`load` finds STACK_DIR so): it
/// gets a function in `alone`. A derived one gets none.
macro_rules! alone {
    ($dirs:ident; $name:ident $field:ident $ty:ty; derived($($default:tt)*); $($derived:tt)*) => {};
    ($dirs:ident; $name:ident $field:ident $ty:ty; $form:ident($($default:tt)*); $parse:expr; $show:expr) => {
        #[allow(unused_variables)]
        pub(super) fn $field(r: &Resolver<'_>, entries: &mut Vec<Entry>) -> anyhow::Result<$ty> {
            let $dirs = r.dirs;
            r.resolve(&var::$name, entries, || fallback!($form($($default)*)), $parse, $show)
        }
    };
}

/// One row of [`resolve`]'s straight line: a derived default reads the variables above it, by their field names.
macro_rules! resolve_row {
    ($r:ident $entries:ident; $name:ident $field:ident $ty:ty; derived($($default:tt)*); $parse:expr; $show:expr) => {
        let $field: $ty = $r.resolve(
            &var::$name,
            $entries,
            || fallback!(derived($($default)*)),
            $parse,
            $show,
        )?;
    };
    ($r:ident $entries:ident; $name:ident $field:ident $ty:ty; $form:ident($($default:tt)*); $($alone:tt)*) => {
        let $field: $ty = alone::$field($r, $entries)?;
    };
}

/// The one declaration of every variable, in resolution and `--explain` order:
///
/// `NAME field: Type = default(text), parse F, show G, about "…", flags;`
///
/// makes `var::NAME` (a row of [`VARS`]), the typed field `Config::field` and its resolution. `text` is anything
/// `Display` (it may read `dirs` and, in `derived(FROM, text)`, the fields above it) and is parsed like a setting.
/// `parse` (text and the directory a relative path is relative to) defaults to `FromStr`, `show` (what compose gets
/// and `--explain` prints) to `Display`. A variable of type [`Secret`] is a secret: never shown, whatever `show`
/// returns, and an error about its value does not quote it. The flag `locating` keeps it out of `stack-vars.yml`.
macro_rules! variables {
    (
        $(#[$config_meta:meta])*
        pub struct Config {
            $( $(#[$extra_meta:meta])* pub $extra:ident: $extra_ty:ty, )*
        }
        with $dirs:ident;
        $(
            $name:ident $field:ident: $ty:ty = $form:ident($($default:tt)*)
                $(, parse $parse:expr)? $(, show $show:expr)?, about $about:literal $(, $flag:ident)*;
        )*
    ) => {
        /// Every variable the launcher knows, by name: the rows of [`VARS`].
        pub mod var {
            use super::Var;
            $(
                #[doc = $about]
                // A row that names every flag leaves nothing to `ROW`.
                #[allow(clippy::needless_update)]
                pub const $name: Var = Var {
                    name: stringify!($name),
                    about: $about,
                    $($flag: true,)*
                    ..Var::ROW
                };
            )*
        }

        /// Every variable, in resolution order (a derived default only uses variables above it).
        pub const VARS: &[Var] = &[$(var::$name),*];

        $(#[$config_meta])*
        #[derive(Clone, Debug)]
        pub struct Config {
            $( #[doc = $about] pub $field: $ty, )*
            $( $(#[$extra_meta])* pub $extra: $extra_ty, )*
        }

        /// Each variable whose default needs no other, resolved on its own.
        mod alone {
            use super::*;
            $(
                alone!($dirs; $name $field $ty; $form($($default)*);
                    first!($($parse)? ; from_str); first!($($show)? ; displayed));
            )*
        }

        impl Config {
            /// Every variable from the layers, in table order, each recorded in `entries`; the fields that are not
            /// variables are left empty for [`resolve`] to fill.
            fn from_layers(r: &Resolver<'_>, entries: &mut Vec<Entry>) -> anyhow::Result<Config> {
                #[allow(unused_variables)]
                let $dirs = r.dirs;
                $(
                    resolve_row!(r entries; $name $field $ty; $form($($default)*);
                        first!($($parse)? ; from_str); first!($($show)? ; displayed));
                )*
                Ok(Config {
                    $($field,)*
                    $($extra: Default::default(),)*
                })
            }

            /// Every variable's typed value, for the checks that go by type (ports).
            fn typed(&self) -> Vec<(&'static Var, &dyn Any)> {
                vec![$((&var::$name, &self.$field as &dyn Any)),*]
            }
        }
    };
}

/// The usual parser: the type's `FromStr`, whose error says what to write instead.
fn from_str<T: FromStr>(text: &str, _base: &Path) -> anyhow::Result<T>
where
    T::Err: Into<anyhow::Error>,
{
    text.parse().map_err(Into::into)
}

/// The usual way a value is written back: its `Display`.
fn displayed<T: fmt::Display>(value: &T) -> String {
    value.to_string()
}

/// A registry namespace; a trailing `/` is dropped (`127.0.0.1:5000/test/` is `127.0.0.1:5000/test`).
fn namespace(text: &str) -> anyhow::Result<Namespace> {
    text.strip_suffix('/').unwrap_or(text).parse()
}

/// Comma-separated registry namespaces, each once.
fn namespaces(text: &str) -> anyhow::Result<Vec<Namespace>> {
    let mut list: Vec<Namespace> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let namespace = namespace(item)?;
        if list.contains(&namespace) {
            bail!("`{namespace}` is listed twice: list each mirror once");
        }
        list.push(namespace);
    }
    Ok(list)
}

fn listed(list: &[Namespace]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A directory or file path; a relative one is relative to `base`, the file that set it.
fn path(text: &str, base: &Path) -> anyhow::Result<PathBuf> {
    if text.is_empty() {
        bail!("use a path (a relative one is relative to the file that sets it), or remove the setting");
    }
    Ok(absolute(base, Path::new(text)))
}

/// A directory compose mounts into a container (`HOST:CONTAINER`), so it cannot contain `:`.
fn mount_dir(text: &str, base: &Path) -> anyhow::Result<PathBuf> {
    if text.contains(':') {
        bail!(
            "a `:` in this path breaks compose's HOST:CONTAINER volume syntax: use a directory whose path has no \
             `:` (move or link the site)"
        );
    }
    path(text, base)
}

/// A file path as [`path`] takes it, or empty for none.
fn optional_path(text: &str, base: &Path) -> anyhow::Result<Option<PathBuf>> {
    Ok((!text.is_empty()).then(|| absolute(base, Path::new(text))))
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// An optional value as compose gets it: empty for none.
fn optional<T: fmt::Display>(value: &Option<T>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn secret(text: &str, _base: &Path) -> anyhow::Result<Secret> {
    Ok(Secret::new(text.to_owned()))
}

/// `base/path` with `.` dropped (`./php` is `php`), unless `path` is absolute.
fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.components().collect();
    }
    base.join(path)
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

/// `PHP_FPM_PIN` as `20i pin` writes it: `<image>@sha256:…`, or a bare `sha256:…`; empty is no pin.
fn parse_pin(text: &str) -> anyhow::Result<Option<Pin>> {
    let hint = "use <image>@sha256:<64 hex digits>, as `20i pin` writes it";
    if text.is_empty() {
        return Ok(None);
    }
    if text.contains('@') {
        let reference: ImageRef = text.parse().with_context(|| hint.to_owned())?;
        if reference.digest().is_none() {
            bail!("`{reference}` has no digest: {hint}");
        }
        return Ok(Some(Pin::Reference(reference)));
    }
    let digest = Digest::parse(text).with_context(|| hint.to_owned())?;
    Ok(Some(Pin::Digest(digest)))
}

/// `PHP_BASE`: a base image a build never resolves by tag, so a digest is required; empty is none.
fn parse_pinned_image(text: &str) -> anyhow::Result<Option<ImageRef>> {
    let hint = "use <registry>/<repository>:<tag>@sha256:<64 hex digits>, as images/bases/*.lock.toml pins bases";
    if text.is_empty() {
        return Ok(None);
    }
    let reference: ImageRef = text.parse().with_context(|| hint.to_owned())?;
    if reference.digest().is_none() {
        bail!("`{reference}` has no digest, so a build would take whatever the tag points at today: {hint}");
    }
    Ok(Some(reference))
}

/// A pinned digest: with the image it was pinned for, as `20i pin` writes it, or bare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    Reference(ImageRef),
    Digest(Digest),
}

impl Pin {
    fn digest(&self) -> &Digest {
        match self {
            Pin::Reference(reference) => reference.digest().expect("checked when parsed"),
            Pin::Digest(digest) => digest,
        }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Reference(reference) => write!(f, "{reference}"),
            Pin::Digest(digest) => write!(f, "{digest}"),
        }
    }
}

/// A resolved value as text: what compose gets, and what may be printed. The typed value is `Config`'s field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Secret(Secret),
}

impl Value {
    /// The text compose and the modules get; the only place a secret is read.
    fn exposed(&self) -> String {
        match self {
            Value::Secret(secret) => secret.expose().to_owned(),
            Value::Text(text) => text.clone(),
        }
    }

    /// The text that may be printed.
    pub fn shown(&self) -> String {
        match self {
            Value::Secret(_) => NOT_SHOWN.to_owned(),
            Value::Text(text) => text.clone(),
        }
    }
}

/// The certificate identity of the release workflow's run for `version`'s tag, as Fulcio writes it for GitHub
/// Actions: `<source>/.github/workflows/release.yml@refs/tags/vX.Y.Z`.
pub fn release_workflow_identity(version: &ReleaseVersion) -> String {
    format!(
        "{}/.github/workflows/release.yml@refs/tags/{}",
        Matrix::embedded().source.trim_end_matches('/'),
        tags::release_tag(version)
    )
}

/// The mirrors hold digest-identical copies of the canonical registry only: another registry (a fork, a private
/// one) has no mirrors unless they are named.
fn default_mirrors(registry: &Namespace) -> String {
    let matrix = Matrix::embedded();
    if registry.as_str() == matrix.registries.canonical.as_str() {
        listed(&matrix.registries.mirrors)
    } else {
        String::new()
    }
}

variables! {
    /// The resolved configuration: a typed field for every variable, what they decide together (the pin, the
    /// signature check), and every entry with its source for `--explain`.
    pub struct Config {
        /// The selected pre-built image with the pinned digest.
        pub pin: Option<ImageRef>,
        /// With VERIFY_SIGNATURE=true: what the pre-built image's signature must verify against.
        pub signature: Option<Verifier>,
        /// `~/.20i`: user config and modules.
        pub user_dir: PathBuf,
        /// Table order, then variables the launcher does not know, in the order first seen.
        pub entries: Vec<Entry>,
    }
    with dirs;

    STACK_RELEASE release: ReleaseVersion = launcher(concat!("v", env!("CARGO_PKG_VERSION"))),
        about "the stack release of this launcher: the vX.Y.Z of every image tag", locating;
    PHP_VERSION php: PhpLine = default(Matrix::embedded().default_line),
        about "the PHP line, major.minor (8.1 ... 8.5)";
    USE_PREBUILT use_prebuilt: bool = default(true), parse |text, _| parse_bool(text),
        about "pull the pre-built image (true) or build locally (false)";
    ALLOW_LOCAL_BUILD_FALLBACK allow_fallback: bool = default(true), parse |text, _| parse_bool(text),
        about "build locally when the pull fails (true) or stop (false)";
    IMAGE_REGISTRY registry: Namespace = default(Matrix::embedded().registries.canonical),
        parse |text, _| namespace(text),
        about "registry namespace pulled from";
    IMAGE_MIRRORS mirrors: Vec<Namespace> = derived(IMAGE_REGISTRY, default_mirrors(&registry)),
        parse |text, _| namespaces(text), show |list| listed(list),
        about "comma-separated mirror namespaces tried when the registry is unreachable or rate limited";
    PHP_FPM_PIN php_fpm_pin: Option<Pin> = default(""), parse |text, _| parse_pin(text), show optional,
        about "the pinned image digest (`20i pin` writes it): a pull with another digest is refused";
    VERIFY_SIGNATURE verify_signature: bool = default(false), parse |text, _| parse_bool(text),
        about "verify the pre-built image's cosign signature before running it (needs cosign): with SIGNATURE_KEY, \
               or keyless with SIGNATURE_IDENTITY and SIGNATURE_ISSUER";
    SIGNATURE_KEY signature_key: Option<PathBuf> = default(""), parse optional_path,
        show |key| key.as_deref().map(path_text).unwrap_or_default(),
        about "the cosign public key the release signs with (its notes say where it is); empty: keyless";
    SIGNATURE_IDENTITY signature_identity: String =
        derived(STACK_RELEASE, release_workflow_identity(&release)),
        about "the keyless signer: the release workflow run of this release (its certificate identity)";
    SIGNATURE_ISSUER signature_issuer: String = default(cosign::GITHUB_ISSUER),
        about "who vouched for the keyless signer: GitHub Actions' OIDC issuer";
    STACK_DIR stack_dir: PathBuf = default(dirs.home.join("docker/20i-stack").display()),
        parse path, show |dir| path_text(dir),
        about "the stack: compose file, config/stack-vars.yml, the PHP-FPM build context", locating;
    STACK_FILE stack_file: PathBuf = derived(STACK_DIR, stack_dir.join("docker-compose.yml").display()),
        parse path, show |file| path_text(file),
        about "the compose file started", locating;
    PHP_FPM_CONTEXT build_context: PathBuf = derived(STACK_DIR, stack_dir.join("images/php-fpm").display()),
        parse path, show |dir| path_text(dir),
        about "the PHP-FPM build context (its Dockerfile) for local builds";
    PHP_BASE base: Option<ImageRef> = default(""), parse |text, _| parse_pinned_image(text), show optional,
        about "a local build's base image, pinned by digest (a mirror of Docker Hub's php); empty: the shipped base \
               lock's";
    WAIT_TIMEOUT wait_timeout: Seconds = default(120),
        about "seconds `20i start` waits for every service to be healthy";
    PULL_STALL_TIMEOUT pull_stall_timeout: Seconds = default(30),
        about "seconds a pull may go without a byte downloaded before it is stopped as stalled (then the mirror)";
    PULL_POLICY pull_policy: PullPolicy = default(PullPolicy::default()),
        about "when a cached image is checked against its registry for a republish: missing (never), daily, weekly, \
               always";
    PULL_TIMEOUT pull_timeout: Seconds = default(1800),
        about "seconds one registry's pull may take in all, retries included, before it is stopped";
    CODE_DIR code_dir: PathBuf = default(dirs.cwd.display()), parse mount_dir, show |dir| path_text(dir),
        about "the site served, mounted at /var/www/site";
    COMPOSE_PROJECT_NAME project: ProjectName = derived(
            CODE_DIR,
            ProjectName::from_dir_name(&code_dir.file_name().unwrap_or_default().to_string_lossy())
        ),
        about "the compose project (containers, network, volumes)";
    BIND_ADDRESS bind_address: Ipv4Addr = default("127.0.0.1"), parse |text, _| parse_address(text),
        about "host address the published ports listen on";
    HOST_PORT host_port: Port = default(80), about "host port of the web server";
    NGINX_IMAGE nginx_image: ImageName = default("nginx:1.25-alpine"), about "the web server image";
    MYSQL_VERSION mysql_version: TagText = default("10.6"), about "the MariaDB version";
    MARIADB_IMAGE mariadb_image: ImageName = derived(MYSQL_VERSION, format!("mariadb:{mysql_version}")),
        about "the database image";
    MYSQL_PORT mysql_port: Port = default(3306), about "host port of the database";
    MYSQL_DATABASE mysql_database: String = default("site"), about "database created on first start";
    MYSQL_USER mysql_user: String = default("site"), about "database user created on first start";
    MYSQL_PASSWORD mysql_password: Secret = default("site"), parse secret, show |s| s.expose().to_owned(),
        about "that user's password (the default `site` is documented, so not hidden in output)";
    MYSQL_ROOT_PASSWORD mysql_root_password: Secret = default("root"), parse secret,
        show |s| s.expose().to_owned(),
        about "the database root password (the default `root` is documented, so not hidden in output)";
    PMA_IMAGE pma_image: ImageName = default("phpmyadmin/phpmyadmin:latest"), about "the phpMyAdmin image";
    PMA_PORT pma_port: Port = default(8081), about "host port of phpMyAdmin";
}

/// The table row of a variable the launcher knows.
pub fn known(name: &str) -> Option<&'static Var> {
    VARS.iter().find(|v| v.name == name)
}

/// A resolved value and its provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: Value,
    pub source: Source,
    pub place: Option<Place>,
    /// False for a variable the launcher does not know, passed on to compose as it is (a module may use it).
    pub known: bool,
}

impl Entry {
    /// The value as it may be printed.
    pub fn shown(&self) -> String {
        self.value.shown()
    }

    pub fn origin(&self) -> Origin<'_> {
        Origin {
            source: &self.source,
            place: self.place.as_ref(),
        }
    }
}

/// The namespace of images built on this machine: never pushed, never pulled.
pub const LOCAL_NAMESPACE: &str = "20i-local";

impl Config {
    /// The pre-built image: `<registry>/php-fpm:v<release>-php-<M.m>`, from the shared tag scheme.
    pub fn prebuilt_image(&self) -> ImageRef {
        self.registry
            .repository(&Matrix::embedded().image)
            .tagged(&tags::pin_tag(&self.release, self.php))
    }

    /// [`Config::prebuilt_image`] as docker takes it.
    pub fn prebuilt_reference(&self) -> String {
        self.prebuilt_image().to_string()
    }

    /// The same tag in another namespace (a mirror).
    pub fn reference_in(&self, namespace: &Namespace) -> String {
        self.prebuilt_image().in_namespace(namespace).to_string()
    }

    /// Where a local build is tagged: same tag, local namespace, so it never passes for the pulled image. (The
    /// local namespace has no registry host, so it is no [`Namespace`]: docker never pushes or pulls it.)
    pub fn local_reference(&self) -> String {
        tags::reference(
            LOCAL_NAMESPACE,
            Matrix::embedded().image.as_str(),
            tags::pin_tag(&self.release, self.php).as_str(),
        )
    }

    /// The one reference `20i start` runs, as `20i image` prints it.
    pub fn selected_reference(&self) -> String {
        if !self.use_prebuilt {
            self.local_reference()
        } else if let Some(pin) = &self.pin {
            pin.to_string()
        } else {
            self.prebuilt_reference()
        }
    }

    /// The pinned digest, if any.
    pub fn pinned_digest(&self) -> Option<&Digest> {
        self.pin.as_ref().and_then(ImageRef::digest)
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Everything compose and the modules get, as environment variables (secrets included: compose needs them).
    pub fn compose_env(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|e| (e.name.clone(), e.value.exposed()))
            .collect()
    }

    /// The secret values, so text from outside (docker's messages) can be cleaned of them before it is printed.
    /// A documented default ([`DOCUMENTED_DEFAULTS`]) is no secret: anyone can read it in the docs, and hiding
    /// `site` would mangle every path and project name that holds the word.
    pub fn secret_values(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter_map(|e| match &e.value {
                Value::Secret(secret) if !secret.expose().is_empty() => Some((e, secret.expose())),
                _ => None,
            })
            .filter(|(e, value)| !is_documented_default(&e.name, value))
            .map(|(_, value)| value)
            .collect()
    }

    /// `text` with every secret value replaced by `(not shown)` where it stands as a value (see
    /// [`crate::redact`]): never inside other words.
    pub fn redact(&self, text: &str) -> String {
        crate::redact::redact(text, &self.secret_values())
    }

    /// The password variables left at their documented default while the published ports listen beyond
    /// loopback (BIND_ADDRESS): anyone on the network can log in with them.
    pub fn exposed_defaults(&self) -> Vec<&'static str> {
        if self.bind_address.is_loopback() {
            return Vec::new();
        }
        DOCUMENTED_DEFAULTS
            .iter()
            .filter(|(name, default)| {
                self.entry(name)
                    .is_some_and(|e| matches!(&e.value, Value::Secret(s) if s.expose() == *default))
            })
            .map(|(name, _)| *name)
            .collect()
    }

    /// The warning printed once by `20i start` (and a line of `20i doctor`) when [`Config::exposed_defaults`] is
    /// not empty.
    pub fn exposed_defaults_warning(&self) -> Option<String> {
        let names = self.exposed_defaults();
        (!names.is_empty()).then(|| {
            format!(
                "BIND_ADDRESS={} publishes the stack beyond this machine, and {} {} the documented default: set                  {} in the project's .20i-local, or BIND_ADDRESS=127.0.0.1",
                self.bind_address,
                names.join(" and "),
                if names.len() == 1 { "is" } else { "are" },
                names
                    .iter()
                    .map(|n| format!("{n}=<a password of your own>"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            )
        })
    }
}

/// The passwords' documented defaults (docs/prebuilt-images.md, the variables' help): public, so not redacted.
/// A test checks them against the `variables!` rows.
pub const DOCUMENTED_DEFAULTS: &[(&str, &str)] =
    &[("MYSQL_PASSWORD", "site"), ("MYSQL_ROOT_PASSWORD", "root")];

fn is_documented_default(name: &str, value: &str) -> bool {
    DOCUMENTED_DEFAULTS.contains(&(name, value))
}

/// The error for a value its variable's type does not accept: the value (unless secret), where it came from, and
/// what to write instead.
fn invalid(
    name: &str,
    text: &str,
    secret: bool,
    origin: &Origin,
    why: &anyhow::Error,
) -> anyhow::Error {
    if secret {
        anyhow!("{name} (from {origin}) is not valid: {why:#}")
    } else {
        anyhow!(
            "{name}={} (from {origin}) is not valid: {why:#}",
            quoted(text)
        )
    }
}

/// The setting that wins for each name: the last one of the topmost layer that sets it. Built in one pass, so
/// resolution is linear in the number of settings.
struct Index<'a> {
    winners: HashMap<&'a str, (&'a Layer, &'a Setting)>,
}

impl<'a> Index<'a> {
    fn new(inputs: &'a Inputs) -> Index<'a> {
        let mut winners = HashMap::new();
        for layer in &inputs.layers {
            for setting in &layer.values {
                winners.insert(setting.name.as_str(), (layer, setting));
            }
        }
        Index { winners }
    }
}

/// What resolving a variable reads: the winning settings, and the directories a default may look at.
struct Resolver<'a> {
    index: Index<'a>,
    dirs: &'a Dirs<'a>,
}

impl Resolver<'_> {
    /// One variable: its winning setting, else its default, parsed by `parse` and recorded in `entries` as `show`
    /// writes it (a [`Secret`] as a secret, whatever `show` says).
    fn resolve<T: 'static>(
        &self,
        var: &Var,
        entries: &mut Vec<Entry>,
        default: impl FnOnce() -> (String, Source),
        parse: fn(&str, &Path) -> anyhow::Result<T>,
        show: fn(&T) -> String,
    ) -> anyhow::Result<T> {
        let (text, source, place) = match self.index.winners.get(var.name) {
            Some((layer, setting)) => (
                setting.value.clone(),
                layer.source.clone(),
                setting.place.clone(),
            ),
            None => {
                let (text, source) = default();
                (text, source, None)
            }
        };
        let secret = TypeId::of::<T>() == TypeId::of::<Secret>();
        let base = source.base_dir().unwrap_or(self.dirs.cwd).to_path_buf();
        let value = parse(&text, &base).map_err(|why| {
            let origin = Origin {
                source: &source,
                place: place.as_ref(),
            };
            invalid(var.name, &text, secret, &origin, &why)
        })?;
        let text = show(&value);
        entries.push(Entry {
            name: var.name.to_owned(),
            value: if secret {
                Value::Secret(Secret::new(text))
            } else {
                Value::Text(text)
            },
            source,
            place,
            known: true,
        });
        Ok(value)
    }
}

/// The stack's `stack-vars.yml` cannot say where the stack is.
fn check_stack_vars(inputs: &Inputs) -> anyhow::Result<()> {
    for layer in &inputs.layers {
        let Source::StackVars(path) = &layer.source else {
            continue;
        };
        for setting in &layer.values {
            if known(&setting.name).is_some_and(|v| v.locating) {
                let origin = Origin {
                    source: &layer.source,
                    place: setting.place.as_ref(),
                };
                bail!(
                    "{} cannot be set in {} ({origin}): it decides where the stack is; set it in ~/.20i/config, \
                     the environment or with a flag",
                    setting.name,
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Variables the launcher does not know, from files and flags: passed to compose as they are, first-seen order,
/// latest value; those whose name looks like a secret are kept as secrets.
fn extras(inputs: &Inputs) -> Vec<Entry> {
    let mut extras: Vec<Entry> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for layer in &inputs.layers {
        for setting in &layer.values {
            if known(&setting.name).is_some() {
                continue;
            }
            let value = if looks_secret(&setting.name) {
                Value::Secret(Secret::new(setting.value.clone()))
            } else {
                Value::Text(setting.value.clone())
            };
            let entry = Entry {
                name: setting.name.clone(),
                value,
                source: layer.source.clone(),
                place: setting.place.clone(),
                known: false,
            };
            match position.get(setting.name.as_str()) {
                Some(&at) => extras[at] = entry,
                None => {
                    position.insert(&setting.name, extras.len());
                    extras.push(entry);
                }
            }
        }
    }
    extras
}

/// The entry of a variable in [`VARS`], for an error that names where its value came from.
fn entry_of<'a>(entries: &'a [Entry], var: &Var) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.name == var.name)
        .expect("every variable in VARS has an entry")
}

/// Resolves every variable from the layers: the topmost layer that sets it wins, else its default.
pub fn resolve(inputs: &Inputs) -> anyhow::Result<Config> {
    check_stack_vars(inputs)?;
    let dirs = Dirs {
        home: &inputs.home,
        cwd: &inputs.cwd,
    };
    let resolver = Resolver {
        index: Index::new(inputs),
        dirs: &dirs,
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(VARS.len());
    let mut config = Config::from_layers(&resolver, &mut entries)?;
    if config.mirrors.contains(&config.registry) {
        let entry = entry_of(&entries, &var::IMAGE_MIRRORS);
        bail!(
            "IMAGE_MIRRORS={} (from {}) is not valid: `{}` is IMAGE_REGISTRY itself: list only other registries \
             holding the same images, or set IMAGE_MIRRORS= for none",
            quoted(&entry.shown()),
            entry.origin(),
            config.registry
        );
    }
    check_ports(&config, &entries)?;
    config.signature = signature(&config, &entries)?;
    config.user_dir = inputs.home.join(".20i");
    if let Some(pin) = &config.php_fpm_pin {
        let selected = config.prebuilt_image();
        if let Pin::Reference(reference) = pin {
            let same = reference.repository() == selected.repository()
                && reference
                    .tag()
                    .is_none_or(|tag| Some(tag) == selected.tag());
            if !same {
                let pinned = match reference.tag() {
                    Some(tag) => reference.repository().tagged(tag).to_string(),
                    None => reference.repository().to_string(),
                };
                bail!(
                    "PHP_FPM_PIN from {} pins {pinned}, but this configuration selects {selected}: run `20i pin` \
                     again, or remove PHP_FPM_PIN",
                    entry_of(&entries, &var::PHP_FPM_PIN).origin()
                );
            }
        }
        config.pin = Some(selected.with_digest(pin.digest()));
    }
    entries.extend(extras(inputs));
    config.entries = entries;
    Ok(config)
}

/// VERIFY_SIGNATURE's verifier: the key when SIGNATURE_KEY is set, else the keyless identity and issuer, which
/// must both be named.
fn signature(config: &Config, entries: &[Entry]) -> anyhow::Result<Option<Verifier>> {
    if !config.verify_signature {
        return Ok(None);
    }
    if let Some(key) = &config.signature_key {
        return Ok(Some(Verifier::Key(key.clone())));
    }
    for (var, text) in [
        (&var::SIGNATURE_IDENTITY, &config.signature_identity),
        (&var::SIGNATURE_ISSUER, &config.signature_issuer),
    ] {
        if text.trim().is_empty() || text.chars().any(char::is_control) {
            let entry = entry_of(entries, var);
            bail!(
                "{}={} (from {}) is not valid with VERIFY_SIGNATURE=true and no SIGNATURE_KEY: name the keyless \
                 signer (remove the setting for the release workflow's own), or set SIGNATURE_KEY to the release's \
                 public key",
                var.name,
                quoted(&entry.shown()),
                entry.origin()
            );
        }
    }
    Ok(Some(Verifier::Identity {
        identity: config.signature_identity.clone(),
        issuer: config.signature_issuer.clone(),
    }))
}

/// The published ports are one per service: two services on one host port would fail only when compose starts them.
/// Every variable of type [`Port`] is one.
fn check_ports(config: &Config, entries: &[Entry]) -> anyhow::Result<()> {
    let ports: Vec<(&Var, Port)> = config
        .typed()
        .into_iter()
        .filter_map(|(var, value)| Some((var, *value.downcast_ref::<Port>()?)))
        .collect();
    for (at, (first, port)) in ports.iter().enumerate() {
        if let Some((second, _)) = ports[at + 1..].iter().find(|(_, other)| other == port) {
            bail!(
                "{}={port} (from {}) and {}={port} (from {}) are the same host port: give each service its own",
                first.name,
                entry_of(entries, first).origin(),
                second.name,
                entry_of(entries, second).origin()
            );
        }
    }
    Ok(())
}

/// A line of a layer file that cannot be read; the caller adds the file.
#[derive(Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for LineError {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// `KEY=VALUE`, `export KEY=VALUE`: `~/.20i/config` and `.20i-local`, as the shell launcher sourced them.
    Env,
    /// Flat `KEY: value`: `stack-vars.yml`.
    Yaml,
}

/// Reads `KEY=VALUE` lines (`export KEY=VALUE` too, as the shell launcher sourced `.20i-local`): comments and
/// blank lines are skipped, quotes are removed, nothing is expanded. An error never shows a value.
pub fn parse_env_file(text: &str) -> Result<Vec<Setting>, LineError> {
    parse_lines(text, Syntax::Env)
}

/// Reads the stack's `config/stack-vars.yml`: flat `KEY: value` lines, with YAML's quoting and comments.
pub fn parse_stack_vars(text: &str) -> Result<Vec<Setting>, LineError> {
    parse_lines(text, Syntax::Yaml)
}

/// How an error names a malformed line without showing any of its text: the variable when the launcher knows it,
/// else only what kind of line it is. A malformed line may be a value on a line of its own (a password after a
/// broken quote), so even its first word is not shown.
fn describe(text: &str) -> String {
    let word: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if known(&word).is_some() {
        format!("the setting of {word}")
    } else if looks_secret(text) {
        "a line that looks like a secret (not shown)".to_owned()
    } else {
        "a line that is not a setting (its text is not shown, in case it holds a value)".to_owned()
    }
}

fn parse_lines(text: &str, syntax: Syntax) -> Result<Vec<Setting>, LineError> {
    let (separator, form) = match syntax {
        Syntax::Env => ('=', "NAME=value"),
        Syntax::Yaml => (':', "NAME: value"),
    };
    let mut values = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        let error = |message: String| LineError {
            line: line_number,
            message,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if syntax == Syntax::Yaml && (line == "---" || line == "...") {
            continue;
        }
        if syntax == Syntax::Yaml && raw.starts_with([' ', '\t']) {
            return Err(error(format!(
                "{} is indented: nested values are not read, write flat `{form}` lines",
                describe(line)
            )));
        }
        let line = match syntax {
            Syntax::Env => line.strip_prefix("export ").map_or(line, str::trim_start),
            Syntax::Yaml => line,
        };
        let Some((name, rest)) = line.split_once(separator) else {
            return Err(error(format!(
                "{} has no `{separator}`: write {form}",
                describe(line)
            )));
        };
        let name = name.trim_end();
        if !is_variable_name(name) {
            let named = if looks_secret(name) && known(name).is_none() {
                "a name that looks like a secret (not shown)".to_owned()
            } else {
                format!("{name:?}")
            };
            return Err(error(format!(
                "{named} is not a variable name (letters, digits and `_`, not starting with a digit): write {form}"
            )));
        }
        if syntax == Syntax::Yaml && !rest.is_empty() && !rest.starts_with([' ', '\t']) {
            return Err(error(format!(
                "{name}: YAML needs a space after the `:`: write `{name}: value`"
            )));
        }
        let value = scalar(rest, syntax).map_err(|why| error(format!("{name}: {why}")))?;
        values.push(Setting {
            name: name.to_owned(),
            value,
            place: Some(Place::Line(line_number)),
        });
    }
    Ok(values)
}

/// A one-line scalar after the separator: quoted (`"…"` with backslash escapes, `'…'`), or plain up to a comment
/// (` #`). What follows a closing quote may only be a comment. The error never shows the value.
fn scalar(rest: &str, syntax: Syntax) -> Result<String, String> {
    let text = rest.trim_start();
    let quote = text.chars().next().filter(|c| *c == '"' || *c == '\'');
    let Some(quote) = quote else {
        if syntax == Syntax::Yaml
            && text.starts_with(['[', '{', '&', '*', '!', '|', '>', '%', '@', '`'])
        {
            return Err(
                "flow collections, anchors, tags and block scalars are not read: quote the value"
                    .to_owned(),
            );
        }
        // A comment starts at `#` after whitespace: `a#b` and `A=#x` are values, as in the shell and YAML.
        let mut end = rest.len();
        let mut previous = '\0';
        for (at, c) in rest.char_indices() {
            if c == '#' && previous.is_whitespace() {
                end = at;
                break;
            }
            previous = c;
        }
        return Ok(rest[..end].trim().to_owned());
    };
    let body = &text[1..];
    let mut value = String::new();
    let mut chars = body.char_indices();
    let after = loop {
        match chars.next() {
            None => {
                return Err(format!(
                    "the closing {quote} is missing (values are one line): close the quote"
                ))
            }
            Some((at, c)) if c == quote => {
                // YAML's single quotes double a quote to escape it.
                if quote == '\'' && syntax == Syntax::Yaml && body[at + 1..].starts_with('\'') {
                    chars.next();
                    value.push('\'');
                    continue;
                }
                break &body[at + 1..];
            }
            Some((_, '\\')) if quote == '"' => match chars.next() {
                Some((_, escaped)) => match (syntax, escaped) {
                    (Syntax::Yaml, 'n') => value.push('\n'),
                    (Syntax::Yaml, 't') => value.push('\t'),
                    (_, '"' | '\\' | '/') => value.push(escaped),
                    (Syntax::Env, '$' | '`') => value.push(escaped),
                    (_, other) => {
                        value.push('\\');
                        value.push(other);
                    }
                },
                None => return Err(format!("the closing {quote} is missing: close the quote")),
            },
            Some((_, c)) => value.push(c),
        }
    };
    let tail = after.trim_start();
    let comment = tail.starts_with('#') && after.starts_with([' ', '\t']);
    if !tail.is_empty() && !comment {
        return Err(format!(
            "text follows the closing {quote}: quote the whole value, or start a comment with ` #`"
        ));
    }
    Ok(value)
}

/// `--set NAME=VALUE`: the name must be a variable name; the error never shows the value.
pub fn parse_set(argument: &str) -> anyhow::Result<Setting> {
    let usage = "use --set NAME=VALUE, for example --set HOST_PORT=8080";
    let Some((name, value)) = argument.split_once('=') else {
        bail!("--set with {}: it has no `=`: {usage}", describe(argument));
    };
    if name.is_empty() {
        bail!("--set with an empty name (nothing before the `=`): {usage}");
    }
    if !is_variable_name(name) {
        if looks_secret(name) && known(name).is_none() {
            bail!("--set with a name that looks like a secret (not shown) is not a variable name: {usage}");
        }
        bail!(
            "--set {name:?}=… : {name:?} is not a variable name (letters, digits and `_`, not starting with a \
             digit): {usage}"
        );
    }
    Ok(Setting {
        name: name.to_owned(),
        value: value.to_owned(),
        place: Some(Place::Flag("--set")),
    })
}

/// The layer files, for `--explain`: which were read and which were absent.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub files: Vec<(Source, bool)>,
}

/// The known variables set in the environment; a value that is not UTF-8 is an error, never skipped.
fn read_environment() -> anyhow::Result<Vec<Setting>> {
    let mut values = Vec::new();
    for var in VARS {
        match std::env::var(var.name) {
            Ok(value) => values.push(Setting {
                name: var.name.to_owned(),
                value,
                place: None,
            }),
            Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => bail!(
                "{} in the environment is not UTF-8 text: set it to a UTF-8 value, or unset it",
                var.name
            ),
        }
    }
    Ok(values)
}

/// Reads one layer file; `None` when it does not exist. Only a regular file is read (a FIFO would block).
fn read_layer(source: Source, path: &Path, syntax: Syntax) -> anyhow::Result<Option<Layer>> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => bail!(
            "{} is not a regular file: make it one with NAME=value lines, or remove it",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let Ok(text) = String::from_utf8(bytes) else {
        bail!("{} is not UTF-8 text: save it as UTF-8", path.display());
    };
    // Editors on Windows start a UTF-8 file with a byte-order mark; it is not part of the first name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let values = match syntax {
        Syntax::Env => parse_env_file(text),
        Syntax::Yaml => parse_stack_vars(text),
    }
    .map_err(|e| anyhow!("{}:{}: {}", path.display(), e.line, e.message))?;
    Ok(Some(Layer { source, values }))
}

/// Where the stack is, from the layers without `stack-vars.yml` (which cannot set it): decides which
/// `stack-vars.yml` is read.
fn stack_dir_of(inputs: &Inputs) -> anyhow::Result<PathBuf> {
    let dirs = Dirs {
        home: &inputs.home,
        cwd: &inputs.cwd,
    };
    let resolver = Resolver {
        index: Index::new(inputs),
        dirs: &dirs,
    };
    alone::stack_dir(&resolver, &mut Vec::new())
}

/// What resolution cannot see: that CODE_DIR is a directory that exists.
/// SIGNATURE_KEY, when VERIFY_SIGNATURE=true uses it, is a file: checked before docker or cosign is asked anything.
fn check_signature_key(config: &Config) -> anyhow::Result<()> {
    let Some(Verifier::Key(path)) = &config.signature else {
        return Ok(());
    };
    let entry = entry_of(&config.entries, &var::SIGNATURE_KEY);
    let problem = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => return Ok(()),
        Ok(_) => "is not a file",
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
        Err(_) => "cannot be read",
    };
    bail!(
        "SIGNATURE_KEY={} (from {}) {problem}: set it to the cosign public key the release publishes (cosign.pub), \
         or remove it to verify keyless signatures",
        quoted(&path.display().to_string()),
        entry.origin()
    )
}

fn check_paths(config: &Config) -> anyhow::Result<()> {
    let entry = entry_of(&config.entries, &var::CODE_DIR);
    let path = &config.code_dir;
    let problem = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => "is not a directory",
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
        Err(_) => "cannot be read",
    };
    bail!(
        "CODE_DIR={} (from {}) {problem}: set CODE_DIR to the site's directory (it is mounted at /var/www/site)",
        quoted(&path.display().to_string()),
        entry.origin()
    )
}

/// The shell: reads the files and the environment, then resolves once. `flags` are the command line's settings.
pub fn load(flags: Vec<Setting>) -> anyhow::Result<Loaded> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|home| home.is_absolute())
        .context("HOME is not set to an absolute path: set HOME to your home directory")?;
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let environment = read_environment()?;
    let user = home.join(".20i/config");
    let local = cwd.join(".20i-local");
    let mut files = Vec::new();
    let mut layers = Vec::new();
    for (source, path) in [
        (Source::UserConfig(user.clone()), &user),
        (Source::ProjectLocal(local.clone()), &local),
    ] {
        let layer = read_layer(source.clone(), path, Syntax::Env)?;
        files.push((source, layer.is_some()));
        layers.extend(layer);
    }
    layers.push(Layer {
        source: Source::Environment,
        values: environment,
    });
    layers.push(Layer {
        source: Source::Flag,
        values: flags,
    });
    let mut inputs = Inputs { home, cwd, layers };
    let vars = stack_dir_of(&inputs)?.join("config/stack-vars.yml");
    let source = Source::StackVars(vars.clone());
    let layer = read_layer(source.clone(), &vars, Syntax::Yaml)?;
    files.insert(0, (source, layer.is_some()));
    if let Some(layer) = layer {
        inputs.layers.insert(0, layer);
    }
    let config = resolve(&inputs)?;
    check_paths(&config)?;
    check_signature_key(&config)?;
    Ok(Loaded { config, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERSION: &str = env!("CARGO_PKG_VERSION");

    /// A layer written as a file; the environment and flags have no lines.
    fn layer(source: Source, text: &str) -> Layer {
        let mut values = parse_env_file(text).unwrap();
        for setting in &mut values {
            setting.place = match source {
                Source::Environment => None,
                Source::Flag => Some(Place::Flag("--set")),
                _ => setting.place.take(),
            };
        }
        Layer { source, values }
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

    fn inputs(layers: Vec<Layer>) -> Inputs {
        Inputs {
            home: PathBuf::from("/home/u"),
            cwd: PathBuf::from("/work/my-site"),
            layers,
        }
    }

    /// Layers, lowest first, as `(source, "K=V K=V")`; the answer is `NAME=value (source)` for each asked name,
    /// or the error.
    fn outcome(layers: &[(Source, &str)], names: &[&str]) -> String {
        let layers = layers
            .iter()
            .map(|(source, text)| layer(source.clone(), &text.replace(' ', "\n")))
            .collect();
        match resolve(&inputs(layers)) {
            Ok(config) => names
                .iter()
                .map(|name| match *name {
                    "image" => format!("image={}", config.selected_reference()),
                    _ => {
                        let e = config.entry(name).unwrap_or_else(|| panic!("no {name}"));
                        format!("{name}={} ({})", e.shown(), e.origin())
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
        check(&[], &["IMAGE_REGISTRY", "IMAGE_MIRRORS"], "IMAGE_REGISTRY=ghcr.io/20i-stack (default), IMAGE_MIRRORS=docker.io/20istack (default, from IMAGE_REGISTRY)");
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
        check(&[], &["VERIFY_SIGNATURE", "SIGNATURE_KEY", "SIGNATURE_ISSUER"], "VERIFY_SIGNATURE=false (default), SIGNATURE_KEY= (default), SIGNATURE_ISSUER=https://token.actions.githubusercontent.com (default)");
        check(&[], &["SIGNATURE_IDENTITY"], "SIGNATURE_IDENTITY=https://github.com/20i-stack/20i-stack/.github/workflows/release.yml@refs/tags/v{V} (default, from STACK_RELEASE)");
    }

    #[track_caller]
    fn check_signature(settings: &str, expected: Result<Option<Verifier>, &str>) {
        let layers = [(Source::Environment, settings)];
        let inputs = Inputs {
            home: PathBuf::from("/home/u"),
            cwd: PathBuf::from("/work/my-site"),
            layers: layers
                .iter()
                .map(|(source, text)| Layer {
                    source: source.clone(),
                    values: parse_env_file(&text.replace(' ', "\n")).unwrap(),
                })
                .collect(),
        };
        match (resolve(&inputs), expected) {
            (Ok(config), Ok(expected)) => assert_eq!(config.signature, expected, "{settings}"),
            (Err(error), Err(expected)) => {
                let error = format!("{error:#}");
                assert!(error.contains(expected), "`{error}` lacks `{expected}`");
            }
            (actual, expected) => panic!(
                "{settings}: {:?} is not {expected:?}",
                actual.map(|c| c.signature)
            ),
        }
    }

    #[test]
    #[rustfmt::skip]
    fn signature_verification_settings() {
        let keyless = |identity: &str| Ok(Some(Verifier::Identity { identity: identity.to_owned(), issuer: cosign::GITHUB_ISSUER.to_owned() }));
        check_signature("", Ok(None));
        check_signature("SIGNATURE_KEY=/keys/cosign.pub", Ok(None));
        check_signature("VERIFY_SIGNATURE=true", keyless(&format!("https://github.com/20i-stack/20i-stack/.github/workflows/release.yml@refs/tags/v{VERSION}")));
        check_signature("VERIFY_SIGNATURE=1 STACK_RELEASE=v2.0.0", keyless("https://github.com/20i-stack/20i-stack/.github/workflows/release.yml@refs/tags/v2.0.0"));
        check_signature("VERIFY_SIGNATURE=true SIGNATURE_IDENTITY=https://github.com/me/fork/.github/workflows/release.yml@refs/heads/main", keyless("https://github.com/me/fork/.github/workflows/release.yml@refs/heads/main"));
        check_signature("VERIFY_SIGNATURE=true SIGNATURE_KEY=/keys/cosign.pub", Ok(Some(Verifier::Key(PathBuf::from("/keys/cosign.pub")))));
        check_signature("VERIFY_SIGNATURE=true SIGNATURE_KEY=keys/cosign.pub", Ok(Some(Verifier::Key(PathBuf::from("/work/my-site/keys/cosign.pub")))));
        check_signature("VERIFY_SIGNATURE=yes", Err("VERIFY_SIGNATURE=\"yes\" (from environment:1) is not valid: use true or false"));
        check_signature("VERIFY_SIGNATURE=true SIGNATURE_IDENTITY=", Err("SIGNATURE_IDENTITY=\"\" (from environment:2) is not valid with VERIFY_SIGNATURE=true and no SIGNATURE_KEY: name the keyless signer"));
        check_signature("VERIFY_SIGNATURE=true SIGNATURE_ISSUER=", Err("SIGNATURE_ISSUER=\"\" (from environment:2) is not valid"));
    }

    #[test]
    #[rustfmt::skip]
    fn every_variable_can_be_set() {
        let pin = format!("PHP_FPM_PIN=sha256:{}", "a".repeat(64));
        check(&[(Source::Environment, "PHP_VERSION=8.2")], &["image"], "image=ghcr.io/20i-stack/php-fpm:v{V}-php-8.2");
        check(&[(Source::Environment, "STACK_RELEASE=v2.0.0")], &["image"], "image=ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5");
        check(&[(Source::Environment, "USE_PREBUILT=false")], &["image"], "image=20i-local/php-fpm:v{V}-php-8.5");
        check(&[(Source::Environment, "USE_PREBUILT=0 ALLOW_LOCAL_BUILD_FALLBACK=0")], &["USE_PREBUILT", "ALLOW_LOCAL_BUILD_FALLBACK"], "USE_PREBUILT=false (environment), ALLOW_LOCAL_BUILD_FALLBACK=false (environment)");
        check(&[(Source::Environment, "IMAGE_REGISTRY=127.0.0.1:5000/test/")], &["image"], "image=127.0.0.1:5000/test/php-fpm:v{V}-php-8.5");
        check(&[(Source::Environment, "IMAGE_MIRRORS=")], &["IMAGE_MIRRORS"], "IMAGE_MIRRORS= (environment)");
        check(&[(Source::Environment, "IMAGE_REGISTRY=registry.example.com/team")], &["IMAGE_MIRRORS"], "IMAGE_MIRRORS= (default, from IMAGE_REGISTRY)");
        check(&[(Source::Environment, "IMAGE_REGISTRY=registry.example.com/team IMAGE_MIRRORS=m.example.com/team")], &["IMAGE_MIRRORS"], "IMAGE_MIRRORS=m.example.com/team (environment)");
        check(&[(Source::Environment, &pin)], &["image"], &format!("image=ghcr.io/20i-stack/php-fpm:v{{V}}-php-8.5@sha256:{}", "a".repeat(64)));
        check(&[(Source::Environment, "STACK_DIR=/opt/stack")], &["STACK_FILE", "PHP_FPM_CONTEXT"], "STACK_FILE=/opt/stack/docker-compose.yml (default, from STACK_DIR), PHP_FPM_CONTEXT=/opt/stack/images/php-fpm (default, from STACK_DIR)");
        check(&[(Source::Flag, "STACK_FILE=other.yml PHP_FPM_CONTEXT=ctx")], &["STACK_FILE", "PHP_FPM_CONTEXT"], "STACK_FILE=/work/my-site/other.yml (command line (--set)), PHP_FPM_CONTEXT=/work/my-site/ctx (command line (--set))");
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
                "PHP_VERSION=8.1 (stack vars /stack/config/stack-vars.yml:1)",
                "PHP_VERSION=8.2 (user config /home/u/.20i/config:1)",
                "PHP_VERSION=8.3 (project /work/my-site/.20i-local:1)",
                "PHP_VERSION=8.4 (environment)",
                "PHP_VERSION=8.5 (command line (--set))",
            ][top - 1];
            check(&all[..top], &["PHP_VERSION"], expected);
        }
        // A higher layer only overrides what it sets.
        check(&[(stack(), "PMA_IMAGE=a/pma:1 MYSQL_VERSION=10.11"), (project(), "PMA_IMAGE=b/pma:2")], &["PMA_IMAGE", "MARIADB_IMAGE"], "PMA_IMAGE=b/pma:2 (project /work/my-site/.20i-local:1), MARIADB_IMAGE=mariadb:10.11 (default, from MYSQL_VERSION)");
        // Within one layer the last line wins.
        check(&[(project(), "PHP_VERSION=8.1 PHP_VERSION=8.3")], &["PHP_VERSION"], "PHP_VERSION=8.3 (project /work/my-site/.20i-local:2)");
        // Relative paths are relative to the file that set them.
        check(&[(user(), "STACK_DIR=stacks/20i")], &["STACK_DIR", "STACK_FILE"], "STACK_DIR=/home/u/.20i/stacks/20i (user config /home/u/.20i/config:1), STACK_FILE=/home/u/.20i/stacks/20i/docker-compose.yml (default, from STACK_DIR)");
        check(&[(stack(), "PHP_FPM_CONTEXT=./php")], &["PHP_FPM_CONTEXT"], "PHP_FPM_CONTEXT=/stack/php (stack vars /stack/config/stack-vars.yml:1)");
        // Variables the launcher does not know go to compose as they are; secrets-looking ones are not shown.
        check(&[(project(), "XDEBUG_MODE=debug"), (Source::Flag, "XDEBUG_MODE=off MODULE_API_KEY=k")], &["XDEBUG_MODE", "MODULE_API_KEY"], "XDEBUG_MODE=off (command line (--set)), MODULE_API_KEY=(set, not shown) (command line (--set))");
        check(&[(project(), "DB_PASS=hunter2 API_TOKEN=t0k DB_PWD=x AWS_CREDENTIALS=c")], &["DB_PASS", "API_TOKEN", "DB_PWD", "AWS_CREDENTIALS"], "DB_PASS=(set, not shown) (project /work/my-site/.20i-local:1), API_TOKEN=(set, not shown) (project /work/my-site/.20i-local:2), DB_PWD=(set, not shown) (project /work/my-site/.20i-local:3), AWS_CREDENTIALS=(set, not shown) (project /work/my-site/.20i-local:4)");
    }

    #[test]
    #[rustfmt::skip]
    fn bad_values_are_errors_naming_the_value_its_origin_and_the_fix() {
        let port = "use a port number from 1 to 65535 in plain digits, for example 8080";
        check(&[(Source::Environment, "PHP_VERSION=8.4.3")], &[], "error: PHP_VERSION=\"8.4.3\" (from environment) is not valid: PHP version `8.4.3` is not a PHP line: use `8.4`");
        check(&[(project(), "PHP_VERSION=php8.4")], &[], "error: PHP_VERSION=\"php8.4\" (from project /work/my-site/.20i-local:1) is not valid: PHP version `php8.4` is not a PHP line: use `8.4`");
        check(&[(Source::Environment, "PHP_VERSION=latest")], &[], "error: PHP_VERSION=\"latest\" (from environment) is not valid: PHP version `latest` is not a PHP line: use major.minor, for example `8.4`");
        check(&[(Source::Environment, "USE_PREBUILT=yes")], &[], "error: USE_PREBUILT=\"yes\" (from environment) is not valid: use true or false (or 1 or 0)");
        check(&[(user(), "ALLOW_LOCAL_BUILD_FALLBACK=True")], &[], "error: ALLOW_LOCAL_BUILD_FALLBACK=\"True\" (from user config /home/u/.20i/config:1) is not valid: use true or false (or 1 or 0)");
        check(&[(Source::Flag, "USE_PREBUILT=")], &[], "error: USE_PREBUILT=\"\" (from command line (--set)) is not valid: use true or false (or 1 or 0)");
        check(&[(Source::Environment, "IMAGE_REGISTRY=https://ghcr.io/x")], &[], "error: IMAGE_REGISTRY=\"https://ghcr.io/x\" (from environment) is not valid: registry namespace `https://ghcr.io/x` is not valid: it has a scheme; use host/namespace without scheme or tag, for example ghcr.io/20i-stack or 127.0.0.1:5000/test");
        check(&[(Source::Environment, "IMAGE_REGISTRY=-oops")], &[], "error: IMAGE_REGISTRY=\"-oops\" (from environment) is not valid: registry namespace `-oops` is not valid: the registry host `-oops` is not a lowercase host name (letters, digits, inner `-` and `.`); use host/namespace without scheme or tag, for example ghcr.io/20i-stack or 127.0.0.1:5000/test");
        check(&[(Source::Environment, "IMAGE_MIRRORS=docker.io/x,Bad/Name")], &[], "error: IMAGE_MIRRORS=\"docker.io/x,Bad/Name\" (from environment) is not valid: registry namespace `Bad/Name` is not valid: the registry host `Bad` is not a lowercase host name (letters, digits, inner `-` and `.`); use host/namespace without scheme or tag, for example ghcr.io/20i-stack or 127.0.0.1:5000/test");
        check(&[(Source::Environment, "IMAGE_MIRRORS=--insecure")], &[], "error: IMAGE_MIRRORS=\"--insecure\" (from environment) is not valid: registry namespace `--insecure` is not valid: the registry host `--insecure` is not a lowercase host name (letters, digits, inner `-` and `.`); use host/namespace without scheme or tag, for example ghcr.io/20i-stack or 127.0.0.1:5000/test");
        check(&[(Source::Environment, "IMAGE_MIRRORS=ghcr.io/20i-stack")], &[], "error: IMAGE_MIRRORS=\"ghcr.io/20i-stack\" (from environment) is not valid: `ghcr.io/20i-stack` is IMAGE_REGISTRY itself: list only other registries holding the same images, or set IMAGE_MIRRORS= for none");
        check(&[(Source::Environment, "IMAGE_MIRRORS=docker.io/x,docker.io/x/")], &[], "error: IMAGE_MIRRORS=\"docker.io/x,docker.io/x/\" (from environment) is not valid: `docker.io/x` is listed twice: list each mirror once");
        check(&[(Source::Environment, "STACK_RELEASE=2.0")], &[], "error: STACK_RELEASE=\"2.0\" (from environment) is not valid: `2.0` is not a release version: use vX.Y.Z or X.Y.Z, for example v2.0.0 or v2.1.0-rc.1");
        check(&[(Source::Environment, "WAIT_TIMEOUT=2m")], &[], "error: WAIT_TIMEOUT=\"2m\" (from environment) is not valid: use a number of seconds from 1 to 86400, for example 120");
        check(&[(Source::Environment, "WAIT_TIMEOUT=0")], &[], "error: WAIT_TIMEOUT=\"0\" (from environment) is not valid: use a number of seconds from 1 to 86400, for example 120");
        check(&[(Source::Environment, "HOST_PORT=http")], &[], &format!("error: HOST_PORT=\"http\" (from environment) is not valid: {port}"));
        check(&[(Source::Environment, "HOST_PORT=+80")], &[], &format!("error: HOST_PORT=\"+80\" (from environment) is not valid: {port}"));
        check(&[(Source::Environment, "HOST_PORT=65536")], &[], &format!("error: HOST_PORT=\"65536\" (from environment) is not valid: {port}"));
        check(&[(Source::Environment, "MYSQL_PORT=70000")], &[], &format!("error: MYSQL_PORT=\"70000\" (from environment) is not valid: {port}"));
        check(&[(Source::Environment, "PMA_PORT=0")], &[], &format!("error: PMA_PORT=\"0\" (from environment) is not valid: {port}"));
        check(&[(user(), "PMA_PORT=8080"), (Source::Environment, "HOST_PORT=8080")], &[], "error: HOST_PORT=8080 (from environment) and PMA_PORT=8080 (from user config /home/u/.20i/config:1) are the same host port: give each service its own");
        check(&[(Source::Environment, "MYSQL_PORT=80")], &[], "error: HOST_PORT=80 (from default) and MYSQL_PORT=80 (from environment) are the same host port: give each service its own");
        check(&[(Source::Environment, "BIND_ADDRESS=localhost")], &[], "error: BIND_ADDRESS=\"localhost\" (from environment) is not valid: use an IPv4 address, for example 127.0.0.1, or 0.0.0.0 for every interface");
        check(&[(Source::Environment, "COMPOSE_PROJECT_NAME=My_Site")], &[], "error: COMPOSE_PROJECT_NAME=\"My_Site\" (from environment) is not valid: use lowercase letters, digits, `-` and `_`, starting with a letter or digit");
        check(&[(Source::Environment, "NGINX_IMAGE=--privileged")], &[], "error: NGINX_IMAGE=\"--privileged\" (from environment) is not valid: use an image reference such as nginx:1.25-alpine or registry.example.com/team/nginx:1.25");
        check(&[(Source::Environment, "MYSQL_VERSION=10.6;rm")], &[], "error: MYSQL_VERSION=\"10.6;rm\" (from environment) is not valid: use an image tag (letters, digits, `.`, `-`, `_`), for example 10.6 or 11.4");
        check(&[(Source::Environment, "CODE_DIR=/srv/a:b")], &[], "error: CODE_DIR=\"/srv/a:b\" (from environment) is not valid: a `:` in this path breaks compose's HOST:CONTAINER volume syntax: use a directory whose path has no `:` (move or link the site)");
        check(&[(Source::Environment, "STACK_DIR=")], &[], "error: STACK_DIR=\"\" (from environment) is not valid: use a path (a relative one is relative to the file that sets it), or remove the setting");
        check(&[(Source::Environment, "PHP_BASE=php:8.4-fpm-alpine")], &[], "error: PHP_BASE=\"php:8.4-fpm-alpine\" (from environment) is not valid: use <registry>/<repository>:<tag>@sha256:<64 hex digits>, as images/bases/*.lock.toml pins bases: `php:8.4-fpm-alpine` is not an image reference: it names no registry host; for example ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5");
        check(&[(Source::Environment, "PHP_BASE=docker.io/library/php:8.4-fpm-alpine")], &[], "error: PHP_BASE=\"docker.io/library/php:8.4-fpm-alpine\" (from environment) is not valid: `docker.io/library/php:8.4-fpm-alpine` has no digest, so a build would take whatever the tag points at today: use <registry>/<repository>:<tag>@sha256:<64 hex digits>, as images/bases/*.lock.toml pins bases");
        check(&[(Source::Environment, "PHP_BASE=-x")], &[], "error: PHP_BASE=\"-x\" (from environment) is not valid: use <registry>/<repository>:<tag>@sha256:<64 hex digits>, as images/bases/*.lock.toml pins bases: `-x` is not an image reference: it names no registry host; for example ghcr.io/20i-stack/php-fpm:v2.0.0-php-8.5");
        check(&[(Source::Environment, "PHP_FPM_PIN=sha256:abc")], &[], "error: PHP_FPM_PIN=\"sha256:abc\" (from environment) is not valid: use <image>@sha256:<64 hex digits>, as `20i pin` writes it: `sha256:abc` is not a sha256 digest (sha256: and 64 lowercase hex digits)");
        check(&[(project(), &format!("PHP_FPM_PIN=ghcr.io/20i-stack/php-fpm:v1.0.0-php-8.5@sha256:{}", "b".repeat(64)))], &[], "error: PHP_FPM_PIN from project /work/my-site/.20i-local:1 pins ghcr.io/20i-stack/php-fpm:v1.0.0-php-8.5, but this configuration selects ghcr.io/20i-stack/php-fpm:v{V}-php-8.5: run `20i pin` again, or remove PHP_FPM_PIN");
        check(&[(stack(), "STACK_DIR=/elsewhere")], &[], "error: STACK_DIR cannot be set in /stack/config/stack-vars.yml (stack vars /stack/config/stack-vars.yml:1): it decides where the stack is; set it in ~/.20i/config, the environment or with a flag");
    }

    /// The defect: `PHP_VERSION` in stack-vars.yml and a pin for that line in `.20i-local` must resolve (the pin
    /// is checked against the configuration with every layer, once).
    #[test]
    fn a_pin_for_the_stack_vars_line_resolves() {
        let pin = format!(
            "PHP_FPM_PIN=ghcr.io/20i-stack/php-fpm:v{VERSION}-php-8.3@sha256:{}",
            "c".repeat(64)
        );
        let stack_vars = Layer {
            source: stack(),
            values: parse_stack_vars("PHP_VERSION: \"8.3\"   # the site's line\n").unwrap(),
        };
        let config = resolve(&inputs(vec![stack_vars, layer(project(), &pin)])).unwrap();
        assert_eq!(
            config.selected_reference(),
            format!(
                "ghcr.io/20i-stack/php-fpm:v{VERSION}-php-8.3@sha256:{}",
                "c".repeat(64)
            )
        );
    }

    /// A variable is a secret exactly when its type is [`Secret`]: its entry is one, so nothing prints it.
    #[test]
    fn a_variable_is_secret_by_its_type() {
        let settings = "MYSQL_PASSWORD=hunter2\nMYSQL_ROOT_PASSWORD=hunter3\n";
        let config = resolve(&inputs(vec![layer(project(), settings)])).unwrap();
        let typed = config.typed();
        assert_eq!(typed.len(), VARS.len());
        let mut secrets = Vec::new();
        for ((row, value), var) in typed.iter().zip(VARS) {
            let name = var.name;
            assert_eq!(row.name, name);
            let entry = config.entry(name).unwrap();
            let secret = matches!(entry.value, Value::Secret(_));
            assert_eq!(value.is::<Secret>(), secret, "{name}");
            if secret {
                assert_eq!(entry.shown(), NOT_SHOWN);
                secrets.push(name);
            }
        }
        assert_eq!(secrets, ["MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD"]);
        assert_eq!(config.mysql_password.expose(), "hunter2");
    }

    /// No secret from any layer in any error or shown value.
    #[test]
    fn documented_defaults_are_not_hidden_and_warn_beyond_loopback() {
        let config = resolve(&inputs(vec![])).unwrap();
        for (name, default) in DOCUMENTED_DEFAULTS {
            let entry = config.entry(name).unwrap();
            assert!(
                matches!(&entry.value, Value::Secret(s) if s.expose() == *default),
                "{name}'s default is not {default}"
            );
        }
        assert!(config.secret_values().is_empty());
        let line = "project site3 in /home/u/mysite, MYSQL_PASSWORD=site, /root";
        assert_eq!(config.redact(line), line);
        assert_eq!(config.exposed_defaults_warning(), None);
        let table: &[(&str, &[&str])] = &[
            ("BIND_ADDRESS=127.0.0.1", &[]),
            (
                "BIND_ADDRESS=0.0.0.0",
                &["MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD"],
            ),
            (
                "BIND_ADDRESS=192.168.1.5\nMYSQL_PASSWORD=x",
                &["MYSQL_ROOT_PASSWORD"],
            ),
            (
                "BIND_ADDRESS=0.0.0.0\nMYSQL_PASSWORD=x\nMYSQL_ROOT_PASSWORD=y",
                &[],
            ),
        ];
        for (text, expected) in table {
            let config = resolve(&inputs(vec![layer(project(), text)])).unwrap();
            assert_eq!(config.exposed_defaults(), *expected, "{text}");
        }
        let config = resolve(&inputs(vec![layer(project(), "BIND_ADDRESS=0.0.0.0\n")])).unwrap();
        let warning = config.exposed_defaults_warning().unwrap();
        assert!(
            warning.contains("MYSQL_PASSWORD=<a password of your own>"),
            "{warning}"
        );
    }

    #[test]
    fn secrets_are_never_shown() {
        let layers = vec![
            layer(
                project(),
                "MYSQL_PASSWORD=hunter2\nDB_PASS=hunter3\nAPI_TOKEN=hunter4\n",
            ),
            layer(Source::Environment, "MYSQL_ROOT_PASSWORD=hunter5\n"),
        ];
        let config = resolve(&inputs(layers)).unwrap();
        let shown: String = config
            .entries
            .iter()
            .map(|e| format!("{} {} {}\n", e.name, e.shown(), e.origin()))
            .collect();
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(!format!("{config:?}").contains("hunter"));
        assert_eq!(
            config.redact("a hunter2 b hunter5 hunter22"),
            "a (not shown) b (not shown) hunter22"
        );
        let env = config.compose_env();
        assert!(env.contains(&("DB_PASS".to_owned(), "hunter3".to_owned())));
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
                .map(|s| format!("{}=[{}]", s.name, s.value))
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(actual, expected, "{text:?}");
        assert!(
            !actual.contains("hunter") || !actual.starts_with("error"),
            "a secret in {actual}"
        );
    }

    #[test]
    #[rustfmt::skip]
    fn env_files() {
        check_file("A=1\n# c\n\nexport B='two words'\nC=\"x\" \nD=plain # note\n", false, "A=[1] B=[two words] C=[x] D=[plain]");
        check_file("E=$HOME/x\n", false, "E=[$HOME/x]");
        check_file("F=a#b\nG=#x\nH= #x\n", false, "F=[a#b] G=[#x] H=[]");
        check_file("I=\"a \\\"q\\\" \\$x\" # c\n", false, "I=[a \"q\" $x]");
        check_file("J='it''s'\n", false, "error: line 1: J: text follows the closing ': quote the whole value, or start a comment with ` #`");
        check_file("  K=indented\n\tL=tab\n", false, "K=[indented] L=[tab]");
        check_file("if true; then\n", false, "error: line 1: a line that is not a setting (its text is not shown, in case it holds a value) has no `=`: write NAME=value");
        check_file("MYSQL_PASSWORD=\nhunter2\n", false, "error: line 2: a line that is not a setting (its text is not shown, in case it holds a value) has no `=`: write NAME=value");
        check_file("1A=x\n", false, "error: line 1: \"1A\" is not a variable name (letters, digits and `_`, not starting with a digit): write NAME=value");
        check_file("A B=1\n", false, "error: line 1: \"A B\" is not a variable name (letters, digits and `_`, not starting with a digit): write NAME=value");
        check_file("M=\"open\n", false, "error: line 1: M: the closing \" is missing (values are one line): close the quote");
        check_file("N=\"x\"y\n", false, "error: line 1: N: text follows the closing \": quote the whole value, or start a comment with ` #`");
        // Secrets in malformed lines: the variable, or "a line that looks like a secret", never the value.
        check_file("X=1\nMYSQL_PASSWORD hunter2\n", false, "error: line 2: the setting of MYSQL_PASSWORD has no `=`: write NAME=value");
        check_file("  MYSQL_PASSWORD hunter2\n", false, "error: line 1: the setting of MYSQL_PASSWORD has no `=`: write NAME=value");
        check_file("DB_PASS hunter2\n", false, "error: line 1: a line that looks like a secret (not shown) has no `=`: write NAME=value");
        check_file("MYSQL_PASSWORDhunter2\n", false, "error: line 1: a line that looks like a secret (not shown) has no `=`: write NAME=value");
        check_file("DB PASS=hunter2\n", false, "error: line 1: a name that looks like a secret (not shown) is not a variable name (letters, digits and `_`, not starting with a digit): write NAME=value");
        check_file("MYSQL_PASSWORD=\"hunter2\n", false, "error: line 1: MYSQL_PASSWORD: the closing \" is missing (values are one line): close the quote");
    }

    #[test]
    #[rustfmt::skip]
    fn stack_vars_files() {
        check_file("---\n# stack defaults\nPHP_VERSION: \"8.4\"\nPMA_IMAGE: phpmyadmin/phpmyadmin:latest\nMYSQL_VERSION: '10.6'\n", true, "PHP_VERSION=[8.4] PMA_IMAGE=[phpmyadmin/phpmyadmin:latest] MYSQL_VERSION=[10.6]");
        check_file("PHP_VERSION: \"8.5\"          # default: the release's default PHP line\n", true, "PHP_VERSION=[8.5]");
        check_file("PHP_VERSION: '8.5'   # a comment\nA: 'it''s' # c\nB: plain # c\nC: a#b\nD: # nothing\nE:\n", true, "PHP_VERSION=[8.5] A=[it's] B=[plain] C=[a#b] D=[] E=[]");
        check_file("A: \"tab\\there\"\n", true, "A=[tab\there]");
        check_file("php:\n  version: 8.4\n", true, "error: line 2: a line that is not a setting (its text is not shown, in case it holds a value) is indented: nested values are not read, write flat `NAME: value` lines");
        check_file("PHP_VERSION: 8.4\n  version: 8.4\n", true, "error: line 2: a line that is not a setting (its text is not shown, in case it holds a value) is indented: nested values are not read, write flat `NAME: value` lines");
        check_file("  MYSQL_PASSWORD: hunter2\n", true, "error: line 1: the setting of MYSQL_PASSWORD is indented: nested values are not read, write flat `NAME: value` lines");
        check_file("  db_pass: hunter2\n", true, "error: line 1: a line that looks like a secret (not shown) is indented: nested values are not read, write flat `NAME: value` lines");
        check_file("PHP_VERSION: \"8.5\" x\n", true, "error: line 1: PHP_VERSION: text follows the closing \": quote the whole value, or start a comment with ` #`");
        check_file("PHP_VERSION:8.5\n", true, "error: line 1: PHP_VERSION: YAML needs a space after the `:`: write `PHP_VERSION: value`");
        check_file("A: [1, 2]\n", true, "error: line 1: A: flow collections, anchors, tags and block scalars are not read: quote the value");
        check_file("PHP_VERSION=8.5\n", true, "error: line 1: the setting of PHP_VERSION has no `:`: write NAME: value");
    }

    /// Every commented setting of the shipped stack-vars.yml, uncommented, still resolves, unquoted.
    #[test]
    fn uncommenting_the_shipped_stack_vars_works() {
        let shipped = include_str!("../stack/config/stack-vars.yml");
        let mut uncommented = 0;
        for (at, line) in shipped.lines().enumerate() {
            let Some(setting) = line.strip_prefix("# ") else {
                continue;
            };
            let name: String = setting
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            if name.is_empty() || !setting[name.len()..].starts_with(':') {
                continue;
            }
            let mut lines: Vec<&str> = shipped.lines().collect();
            lines[at] = setting;
            let text = lines.join("\n");
            let values = parse_stack_vars(&text).unwrap_or_else(|e| panic!("{setting}: {e}"));
            let value = values
                .iter()
                .find(|s| s.name == name)
                .unwrap()
                .value
                .clone();
            assert!(
                !value.contains(['"', '\'', '#']),
                "{setting} gave {value:?}"
            );
            let config = resolve(&inputs(vec![Layer {
                source: stack(),
                values,
            }]))
            .unwrap_or_else(|e| panic!("{setting}: {e:#}"));
            assert_eq!(config.entry(&name).unwrap().shown(), value);
            uncommented += 1;
        }
        assert!(uncommented >= 1, "no commented setting in the shipped file");
    }

    #[test]
    #[rustfmt::skip]
    fn set_flags() {
        #[track_caller]
        fn check_set(argument: &str, expected: &str) {
            let actual = match parse_set(argument) {
                Ok(s) => format!("{}=[{}]", s.name, s.value),
                Err(e) => format!("error: {e}"),
            };
            assert_eq!(actual, expected, "{argument}");
        }
        let usage = "use --set NAME=VALUE, for example --set HOST_PORT=8080";
        check_set("HOST_PORT=8080", "HOST_PORT=[8080]");
        check_set("A=b=c", "A=[b=c]");
        check_set("A=", "A=[]");
        check_set("=v", &format!("error: --set with an empty name (nothing before the `=`): {usage}"));
        check_set("A B=1", &format!("error: --set \"A B\"=… : \"A B\" is not a variable name (letters, digits and `_`, not starting with a digit): {usage}"));
        check_set("-x=1", &format!("error: --set \"-x\"=… : \"-x\" is not a variable name (letters, digits and `_`, not starting with a digit): {usage}"));
        check_set("HOST_PORT", &format!("error: --set with the setting of HOST_PORT: it has no `=`: {usage}"));
        check_set("MYSQL_PASSWORDhunter2", &format!("error: --set with a line that looks like a secret (not shown): it has no `=`: {usage}"));
        check_set("MY PASSWORD=hunter2", &format!("error: --set with a name that looks like a secret (not shown) is not a variable name: {usage}"));
    }

    /// Resolution is linear in the number of settings: 80,000 unknown keys resolve (a quadratic pass took 17 s).
    #[test]
    fn many_keys_resolve() {
        let text: String = (0..80_000).map(|i| format!("KEY_{i}=v{i}\n")).collect();
        let many = Layer {
            source: project(),
            values: parse_env_file(&text).unwrap(),
        };
        let config = resolve(&inputs(vec![many])).unwrap();
        assert_eq!(config.entries.len(), VARS.len() + 80_000);
    }

    #[test]
    fn code_dir_must_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let outcome = |code_dir: &Path| {
            let layer = layer(
                Source::Environment,
                &format!("CODE_DIR={}", code_dir.display()),
            );
            let config = resolve(&inputs(vec![layer])).unwrap();
            check_paths(&config).map_err(|e| e.to_string())
        };
        assert_eq!(outcome(dir.path()), Ok(()));
        let fix = "set CODE_DIR to the site's directory (it is mounted at /var/www/site)";
        assert_eq!(
            outcome(&file),
            Err(format!(
                "CODE_DIR={:?} (from environment) is not a directory: {fix}",
                file.display().to_string()
            ))
        );
        let missing = dir.path().join("missing");
        assert_eq!(
            outcome(&missing),
            Err(format!(
                "CODE_DIR={:?} (from environment) does not exist: {fix}",
                missing.display().to_string()
            ))
        );
    }

    /// Every name is declared once, and every default parses (a derived one only reads variables above it: the
    /// compiler holds to that, since a row's default sees only the fields declared before it).
    #[test]
    fn the_table_is_consistent() {
        for (at, var) in VARS.iter().enumerate() {
            assert!(
                VARS[..at].iter().all(|v| v.name != var.name),
                "{} twice",
                var.name
            );
        }
        resolve(&inputs(Vec::new())).unwrap();
    }
}
