//! What `make demo` and `make bench` release from on this machine, where Docker Hub's php images cannot be pulled:
//! real Debian PHP (`testkit::real`: 8.2 on bookworm, 8.4 on trixie, both platforms) for the lines Debian has, and
//! busybox stand-ins for the others. One release takes one build context, so the context written here holds both
//! stand-in Dockerfiles as stages, and each line's build argument `PHP_VERSION` picks its stage; the stack's own
//! files (`php.ini`, `zz-stack-fpm.conf`, `php-fpm-healthcheck`, ...) are copied in from `images/php-fpm` at each
//! run.

use std::{fmt::Write as _, path::Path};

use anyhow::Context;
use stack_images::{bases::base_tag, registry::RegistryClient, PhpLine, Repository};
use testkit::{
    fixtures,
    real::{self, Arch, Rootfs},
};

/// What a line's image is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Debian's PHP-FPM with the extension packages installed in the build (`testkit/standins/php-fpm-real`).
    Real,
    /// Static busybox answering the health check (`testkit/standins/php-fpm`).
    Busybox,
}

impl Flavour {
    /// Real where Debian ships the line and `real` is wanted.
    pub fn of(line: PhpLine, real: bool) -> Flavour {
        if real && real::php_suite(line).is_ok() {
            Flavour::Real
        } else {
            Flavour::Busybox
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Flavour::Real => "real PHP-FPM from Debian, extensions installed in the build",
            Flavour::Busybox => "busybox stand-in (no PHP)",
        }
    }
}

/// Whether this machine has the real PHP bases saved already (`make setup` or a test made them): without them, a
/// real build first spends minutes making them from Debian's archive.
pub fn real_bases_saved() -> bool {
    [PhpLine::new(8, 2), PhpLine::new(8, 4)]
        .into_iter()
        .all(|line| {
            Arch::ALL.into_iter().all(|arch| {
                Rootfs::php_base(line, arch)
                    .and_then(|rootfs| rootfs.tag())
                    .map(|tag| {
                        real::saved_dir()
                            .join(format!("{}.tar", tag.replace(['/', ':'], "_")))
                            .is_file()
                    })
                    .unwrap_or(false)
            })
        })
}

/// Pushes each line's base to `source` as `<source>:<M.m>-fpm-alpine`, where a release's lock reads it: the real
/// Debian base (built on this machine if it has none) copied registry-side from where `testkit::real` pushes it,
/// or a busybox stand-in.
pub fn push_bases(
    source: &Repository,
    lines: &[(PhpLine, Flavour)],
    client: &RegistryClient,
) -> anyhow::Result<()> {
    for (php, flavour) in lines {
        let to = source.tagged(&base_tag(*php));
        match flavour {
            Flavour::Real => {
                let pushed = real::push_php_base_to(source.namespace(), *php)
                    .with_context(|| format!("pushing the real PHP {php} base"))?;
                client
                    .copy(&pushed, &to)
                    .with_context(|| format!("copying {pushed} to {to}"))?;
            }
            Flavour::Busybox => {
                fixtures::push_busybox(
                    &to.to_string(),
                    &format!("LABEL stand-in-for=php:{php}-fpm-alpine\n"),
                    false,
                )
                .with_context(|| format!("building the stand-in base {to}"))?;
            }
        }
    }
    Ok(())
}

/// Writes the release's build context into `dir`: the stack's PHP-FPM files and a Dockerfile whose last stage is
/// `line-${PHP_VERSION}`, the real or busybox stage as each line's flavour says.
pub fn write_context(dir: &Path, lines: &[(PhpLine, Flavour)]) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    copy_stack_files(dir)?;
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let dockerfile = dockerfile(
        &read(&real::php_fpm_real_dockerfile())?,
        &read(&fixtures::php_fpm_standin().join("Dockerfile"))?,
        lines,
    )?;
    let path = dir.join("Dockerfile");
    std::fs::write(&path, dockerfile).with_context(|| format!("writing {}", path.display()))
}

/// Writes a build context for the launcher's local build (`USE_PREBUILT=false`) into `dir`: the real stand-in
/// Dockerfile over `base`, named here because the launcher passes the shipped lock's Docker Hub base, which
/// cannot be pulled on this machine; the stack's PHP-FPM files beside it.
pub fn write_local_context(dir: &Path, base: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    copy_stack_files(dir)?;
    let path = real::php_fpm_real_dockerfile();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (_, after) = text
        .split_once("\nFROM ")
        .with_context(|| format!("{} has no FROM line", path.display()))?;
    let body = after.split_once('\n').map_or("", |(_, body)| body);
    let dockerfile = format!(
        "# Written by `cargo xtask bench` (xtask/src/standins.rs): testkit/standins/php-fpm-real/Dockerfile over a\n\
         # base the launcher's PHP_BASE build argument cannot name here.\nARG PHP_VERSION=8.4\nFROM {base}\n{body}"
    );
    let out = dir.join("Dockerfile");
    std::fs::write(&out, dockerfile).with_context(|| format!("writing {}", out.display()))
}

/// Every file of `images/php-fpm` but its Dockerfile (php.ini, the FPM pool, the health check, ...): what the
/// stand-in Dockerfiles copy from their context, the same files the real image is built from.
fn copy_stack_files(dir: &Path) -> anyhow::Result<()> {
    let files = real::php_fpm_context();
    for entry in
        std::fs::read_dir(&files).with_context(|| format!("reading {}", files.display()))?
    {
        let entry = entry?;
        if entry.file_name() == "Dockerfile" || !entry.file_type()?.is_file() {
            continue;
        }
        let to = dir.join(entry.file_name());
        std::fs::copy(entry.path(), &to)
            .with_context(|| format!("copying {} to {}", entry.path().display(), to.display()))?;
    }
    Ok(())
}

/// The two stand-in Dockerfiles as stages `real` and `busybox`, one alias stage per line, and the line's last.
fn dockerfile(real: &str, busybox: &str, lines: &[(PhpLine, Flavour)]) -> anyhow::Result<String> {
    let body = |text: &str, name: &str| -> anyhow::Result<String> {
        let mut found = false;
        let mut out = String::new();
        for line in text.lines() {
            if found {
                writeln!(out, "{line}")?;
            } else if line.starts_with("FROM ") {
                found = true;
                writeln!(out, "FROM ${{PHP_BASE}} AS {name}")?;
            }
        }
        anyhow::ensure!(found, "the {name} stand-in Dockerfile has no FROM line");
        Ok(out)
    };
    let mut text = String::from(
        "# Written by `cargo xtask demo` / `cargo xtask bench` (xtask/src/standins.rs) from\n\
         # testkit/standins/php-fpm-real/Dockerfile and testkit/standins/php-fpm/Dockerfile: each line's PHP_VERSION\n\
         # picks its stage, real Debian PHP or busybox. Not edited by hand; rewritten on every run.\n\
         ARG PHP_VERSION=8.4\n\
         ARG PHP_BASE=php-base-standin:${PHP_VERSION}\n\n",
    );
    text.push_str(&body(real, "real")?);
    text.push('\n');
    text.push_str(&body(busybox, "busybox")?);
    text.push('\n');
    for (php, flavour) in lines {
        let stage = match flavour {
            Flavour::Real => "real",
            Flavour::Busybox => "busybox",
        };
        writeln!(text, "FROM {stage} AS line-{php}")?;
    }
    text.push_str("\nFROM line-${PHP_VERSION}\n");
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_picks_its_stage() {
        let real = "# real\nARG PHP_VERSION=8.2\nFROM ${PHP_BASE}\nRUN apt-get install php\nCMD [\"php-fpm\"]\n";
        let busybox = "ARG PHP_BASE=x\nFROM ${PHP_BASE}\nRUN mkdir /standin\n";
        let lines = [
            (PhpLine::new(8, 1), Flavour::Busybox),
            (PhpLine::new(8, 2), Flavour::Real),
        ];
        let text = dockerfile(real, busybox, &lines).unwrap();
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "ARG PHP_VERSION=8.4",
                "ARG PHP_BASE=php-base-standin:${PHP_VERSION}",
                "",
                "FROM ${PHP_BASE} AS real",
                "RUN apt-get install php",
                "CMD [\"php-fpm\"]",
                "",
                "FROM ${PHP_BASE} AS busybox",
                "RUN mkdir /standin",
                "",
                "FROM busybox AS line-8.1",
                "FROM real AS line-8.2",
                "",
                "FROM line-${PHP_VERSION}",
            ]
        );
        assert!(dockerfile("RUN x\n", busybox, &lines).is_err());
    }

    #[test]
    fn only_debians_lines_are_real() {
        assert_eq!(Flavour::of(PhpLine::new(8, 2), true), Flavour::Real);
        assert_eq!(Flavour::of(PhpLine::new(8, 4), true), Flavour::Real);
        assert_eq!(Flavour::of(PhpLine::new(8, 5), true), Flavour::Busybox);
        assert_eq!(Flavour::of(PhpLine::new(8, 2), false), Flavour::Busybox);
    }
}
