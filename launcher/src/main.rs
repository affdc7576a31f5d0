//! `20i`: the 20i stack's launcher. It resolves the configuration (every value with its source), selects the
//! PHP-FPM image deterministically from the shared tag scheme, gets it (cache, pull, mirror, local build) and runs
//! the stack with `docker compose`. One file per command.

mod acquire;
mod completions;
mod config;
mod destroy;
mod doctor;
mod engine;
mod exit;
mod fetch;
mod freshness;
mod image;
mod init;
mod logs;
mod pin;
mod preflight;
mod progress;
mod prune;
mod pull;
mod redact;
mod selection;
mod stack;
mod start;
mod status;
mod stop;
mod summary;
mod values;
mod version;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "20i",
    version,
    about = "Start the 20i PHP stack on pre-built images",
    long_about = "Start the 20i PHP stack (nginx, PHP-FPM, MariaDB, phpMyAdmin) on the pre-built PHP-FPM image of \
                  this release, pulled once and then started from the local cache; or built locally from the \
                  stack's Dockerfile.\n\n\
                  Settings come from, lowest first: built-in defaults, STACK_DIR/config/stack-vars.yml, \
                  ~/.20i/config, the project's .20i-local, the environment, the command line. \
                  `20i start --explain` shows every value and where it came from.",
    after_help = exit::HELP
)]
pub struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Command,
}

/// Command-line settings: the top layer of the configuration.
#[derive(Args)]
struct Settings {
    /// PHP line to run, major.minor (PHP_VERSION)
    #[arg(long, global = true, value_name = "M.m")]
    php_version: Option<String>,
    /// Pull the pre-built image, or build locally (USE_PREBUILT)
    #[arg(long, global = true, value_name = "true|false")]
    use_prebuilt: Option<String>,
    /// Build locally when the pull fails (ALLOW_LOCAL_BUILD_FALLBACK)
    #[arg(long, global = true, value_name = "true|false")]
    allow_local_build_fallback: Option<String>,
    /// Registry namespace to pull from (IMAGE_REGISTRY)
    #[arg(long, global = true, value_name = "HOST/NAMESPACE")]
    registry: Option<String>,
    /// The stack's directory (STACK_DIR)
    #[arg(long, global = true, value_name = "DIR")]
    stack_dir: Option<PathBuf>,
    /// Set any variable, for example --set HOST_PORT=8080 (repeatable)
    #[arg(long = "set", short = 's', global = true, value_name = "NAME=VALUE")]
    set: Vec<String>,
}

impl Settings {
    /// The command line's layer: each flag's value as given, `--set` parsed into a variable name and value.
    fn into_layer(self) -> anyhow::Result<Vec<config::Setting>> {
        let named = [
            ("PHP_VERSION", "--php-version", self.php_version),
            ("USE_PREBUILT", "--use-prebuilt", self.use_prebuilt),
            (
                "ALLOW_LOCAL_BUILD_FALLBACK",
                "--allow-local-build-fallback",
                self.allow_local_build_fallback,
            ),
            ("IMAGE_REGISTRY", "--registry", self.registry),
            (
                "STACK_DIR",
                "--stack-dir",
                self.stack_dir.map(|p| p.display().to_string()),
            ),
        ];
        let mut values = Vec::new();
        for (name, flag, value) in named {
            if let Some(value) = value {
                values.push(config::Setting {
                    name: name.to_owned(),
                    value,
                    place: Some(config::Place::Flag(flag)),
                });
            }
        }
        for argument in &self.set {
            values.push(config::parse_set(argument)?);
        }
        Ok(values)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Get the PHP-FPM image and start the stack, waiting until every service is healthy
    Start {
        /// Print every input that decides the image (value and source) and what start would do; start nothing
        #[arg(long)]
        explain: bool,
        /// Print the summary (site, services, image, steps) as JSON
        #[arg(long, conflicts_with = "explain")]
        json: bool,
    },
    /// Stop the stack's containers (they keep their data)
    Stop,
    /// Show the site's URL, each service's state, health and address, and the PHP-FPM image; start nothing
    Status {
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show the services' logs
    Logs {
        /// Keep following new output
        #[arg(short, long)]
        follow: bool,
        /// Only these services (nginx, apache, mariadb, phpmyadmin, or a module's)
        services: Vec<String>,
    },
    /// Remove the stack's containers, network and volumes (the database's data too)
    Destroy,
    /// Print the image reference `20i start` uses, and nothing else
    Image,
    /// Get the PHP-FPM image as `20i start` would (cache, pull, mirror, build) and the stack's other images, start nothing
    Pull,
    /// Write the shipped stack (compose file, nginx template, stack vars, PHP-FPM build context) to STACK_DIR
    Init {
        /// Overwrite files that exist
        #[arg(long)]
        force: bool,
    },
    /// Pin the image by digest: write `PHP_FPM_PIN=IMAGE@sha256:…` to the project's .20i-local
    Pin {
        /// The release's notes JSON (release-notes/vX.Y.Z.json)
        #[arg(long, value_name = "FILE")]
        notes: PathBuf,
    },
    /// Remove this launcher's images of other releases and stale local builds (a dry run without --apply)
    Prune {
        /// Remove what is listed
        #[arg(long)]
        apply: bool,
    },
    /// Check, without changing anything, what a start needs: each line ok, warning or failed, and what to do
    #[command(
        long_about = "Check, without changing anything, what `20i start` needs, one line per check: ok, \
                            warning or failed, and what to do. The engine answers and is new enough; compose v2 \
                            and buildx; the image store; the engine's platform against the image's (a warning \
                            when it would run under emulation); the configured host ports free (naming what \
                            holds one); free disk space; the configuration resolves (naming the layer of a bad \
                            value); compose accepts the stack and module files; the containers can read \
                            CODE_DIR; cosign and a key with VERIFY_SIGNATURE=true; with --online, each registry \
                            answers with docker's credentials.\n\n\
                            Exit 0 when no check failed (warnings included), 1 otherwise."
    )]
    Doctor {
        /// Also ask each registry (IMAGE_REGISTRY, IMAGE_MIRRORS) for the image, with docker's credentials
        #[arg(long)]
        online: bool,
        /// Print the checks as JSON
        #[arg(long)]
        json: bool,
        /// Free disk space the engine must have (decimal units: 500M, 2G, 1.5T); a large value is how a test
        /// simulates a full disk
        #[arg(long, value_name = "SIZE", default_value = "2G")]
        min_free_disk: doctor::DiskSize,
    },
    /// Print this launcher's version; with --check, say whether a newer stable release is out
    #[command(
        long_about = "Print this launcher's version. With --check, list the tags of IMAGE_REGISTRY (then of its \
                      mirrors, until one answers) and say whether a newer stable release has images, with the \
                      one command that installs it. Nothing is installed."
    )]
    Version {
        /// Ask the registry whether a newer stable release is out (exit 1 when no registry answers)
        #[arg(long)]
        check: bool,
    },
    /// Print a shell completion script
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    match run(cli, started) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::code_of(&error))
        }
    }
}

fn run(cli: Cli, started: Instant) -> anyhow::Result<()> {
    let mut flags = cli.settings.into_layer().map_err(exit::Exit::config)?;
    if let Command::Completions { shell } = cli.command {
        return completions::run(shell);
    }
    if let Command::Version { check: false } = cli.command {
        // No configuration needed: the version prints even where the configuration is broken.
        println!("20i {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if let Command::Pin { .. } = cli.command {
        // Re-pinning must work when the old pin no longer matches the selected reference.
        flags.push(config::Setting {
            name: "PHP_FPM_PIN".to_owned(),
            value: String::new(),
            place: Some(config::Place::Flag("20i pin")),
        });
    }
    if let Command::Doctor {
        online,
        json,
        min_free_disk,
    } = cli.command
    {
        // Doctor reports a configuration that does not resolve as one of its lines.
        let options = doctor::Options {
            online,
            json,
            min_free_disk,
        };
        return doctor::run(flags, &options);
    }
    let loaded = config::load(flags).map_err(exit::Exit::config)?;
    match cli.command {
        Command::Start { explain: true, .. } => start::explain(&loaded),
        Command::Start {
            explain: false,
            json,
        } => start::run(&loaded.config, started, json),
        Command::Stop => stop::run(&loaded.config),
        Command::Status { json } => status::run(&loaded.config, json),
        Command::Logs { follow, services } => logs::run(&loaded.config, follow, &services),
        Command::Destroy => destroy::run(&loaded.config),
        Command::Image => image::run(&loaded.config),
        Command::Pull => pull::run(&loaded.config),
        Command::Init { force } => init::run(&loaded.config, force),
        Command::Pin { notes } => pin::run(&loaded.config, &notes),
        Command::Prune { apply } => prune::run(&loaded.config, apply),
        // Without --check it returned above, before the configuration was read.
        Command::Version { .. } => version::run_check(&loaded.config),
        Command::Completions { .. } | Command::Doctor { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_cover_every_command() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "20i", &mut script);
            let script = String::from_utf8(script).unwrap();
            for word in [
                "start",
                "destroy",
                "explain",
                "php-version",
                "use-prebuilt",
                "doctor",
                "min-free-disk",
                "version",
                "check",
            ] {
                assert!(script.contains(word), "{shell:?} completion lacks {word}");
            }
        }
    }

    #[test]
    fn help_texts() {
        let mut command = Cli::command();
        insta::assert_snapshot!("help", command.render_long_help().to_string());
        for sub in ["start", "logs", "pin", "doctor", "version"] {
            let help = command
                .find_subcommand_mut(sub)
                .expect("subcommand")
                .render_long_help()
                .to_string();
            insta::assert_snapshot!(format!("help_{sub}"), help);
        }
    }
}
