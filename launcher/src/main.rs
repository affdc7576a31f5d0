//! `20i`: the 20i stack's launcher. For now it answers which pre-built image `20i start` will use; starting the
//! stack follows.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stack_images::{tags, Matrix, PhpLine, ReleaseVersion};

#[derive(Parser)]
#[command(
    name = "20i",
    version,
    about = "Start the 20i PHP stack on pre-built images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the image reference `20i start` uses, and nothing else
    Image,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Image => {
            println!(
                "{}",
                image_reference(std::env::var("PHP_VERSION").ok().as_deref())?
            );
            Ok(())
        }
    }
}

/// The pin of this launcher's stack release for the chosen PHP line, in the canonical registry.
fn image_reference(php_version: Option<&str>) -> anyhow::Result<String> {
    let matrix = Matrix::embedded();
    let line: PhpLine = match php_version {
        Some(text) => text.parse().context("in PHP_VERSION")?,
        None => matrix.default_line,
    };
    let version: ReleaseVersion = env!("CARGO_PKG_VERSION").parse()?;
    Ok(tags::reference(
        &matrix.registries.canonical,
        &matrix.image,
        &tags::pin_tag(&version, line),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reference_comes_from_the_shared_tag_scheme() {
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            super::image_reference(None).unwrap(),
            format!("ghcr.io/20i-stack/php-fpm:v{version}-php-8.5")
        );
        assert_eq!(
            super::image_reference(Some("8.2")).unwrap(),
            format!("ghcr.io/20i-stack/php-fpm:v{version}-php-8.2")
        );
        let error = super::image_reference(Some("8.2.1")).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "in PHP_VERSION: PHP version `8.2.1` is not a PHP line: use `8.2`"
        );
    }
}
