//! `20i status`: the same summary `20i start` ends with, without starting anything (the site's URL, each
//! service's state, health and address, the PHP-FPM image with its digest; `--json` too), then the pre-built image
//! selected: its digests, its release, and what the last republish check saw (from `~/.20i/state`, no request).

use anyhow::Context;

use stack_images::docker::DockerCommand;

use crate::{acquire, config::Config, engine::Engine, freshness::Checks, stack::Compose, summary};

pub fn run(config: &Config, json: bool) -> anyhow::Result<()> {
    let compose = Compose::new(config, &config.selected_reference())?;
    let engine = Engine::new()?;
    compose.validate(&engine, config)?;
    let listed = summary::list(&engine, &compose.project)
        .with_context(|| format!("listing the containers of project {}", config.project))?;
    // The image the PHP-FPM container runs, else the one `20i start` would.
    let running = listed
        .iter()
        .find(|l| l.service == "apache")
        .and_then(|l| container_image(&engine, &l.container));
    let reference = running.unwrap_or_else(|| config.selected_reference());
    let image = summary::php_fpm(&engine, &reference, None);
    let summary = summary::gather(config, &listed, image, Vec::new());
    if json {
        println!(
            "{}",
            config.redact(&serde_json::to_string_pretty(&summary)?)
        );
        return Ok(());
    }
    print!("{}", config.redact(&summary::render(&summary)));
    if config.use_prebuilt {
        let image = config.prebuilt_image();
        let local = acquire::inspect_local(&engine, &image.to_string())?;
        let checks = Checks::load(&Checks::path_in(&config.user_dir))?;
        print!(
            "{}",
            image_lines(config, local.as_ref().map(|l| &l.digests[..]), &checks)
        );
    }
    Ok(())
}

/// The image reference a container was created from.
fn container_image(engine: &Engine, container: &str) -> Option<String> {
    let command = DockerCommand::new(["inspect", "--format", "{{.Config.Image}}", "--", container]);
    let bytes = engine.output(&command).ok()?;
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// What `status` says of the selected pre-built image.
fn image_lines(
    config: &Config,
    cached: Option<&[stack_images::Digest]>,
    checks: &Checks,
) -> String {
    let image = config.prebuilt_image();
    let mut out = format!("\nimage    {image} (release {})\n", config.release);
    match cached {
        None => out.push_str("         not in the local image store: `20i start` pulls it\n"),
        Some(digests) => {
            for digest in digests {
                out.push_str(&format!("         {digest}\n"));
            }
            if let Some(pin) = config.pinned_digest() {
                out.push_str(&format!("         pinned to {pin} (PHP_FPM_PIN)\n"));
            }
            match checks.get(&image) {
                None => out.push_str(&format!(
                    "         never checked for a republish (PULL_POLICY={})\n",
                    config.pull_policy
                )),
                Some(check) => {
                    let when = chrono_day(check.checked);
                    let newer = !digests.contains(&check.digest);
                    let about = match (&check.republished, newer) {
                        (_, false) => "the registry served this image".to_owned(),
                        (Some(republished), true) => {
                            format!("a newer digest exists, {republished}")
                        }
                        (None, true) => {
                            format!("the registry serves another digest, {}", check.digest)
                        }
                    };
                    out.push_str(&format!("         last checked {when}: {about}\n"));
                    if newer && config.pinned_digest().is_none() {
                        out.push_str(
                            "         `20i start` with PULL_POLICY=daily (or always) pulls it\n",
                        );
                    }
                }
            }
        }
    }
    out
}

/// `YYYY-MM-DD` (UTC) of seconds since the epoch.
fn chrono_day(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    // Howard Hinnant's civil-from-days, to avoid a date dependency for one line.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{:02}-{:02}", if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn days() {
        assert_eq!(super::chrono_day(0), "1970-01-01");
        assert_eq!(super::chrono_day(1_795_651_200), "2026-11-26");
        assert_eq!(super::chrono_day(951_782_400), "2000-02-29");
    }
}
