//! `20i logs`: the services' logs (`docker compose logs`), optionally followed.

use anyhow::Context;

use crate::{config::Config, engine::Engine, stack::Compose};

pub fn run(config: &Config, follow: bool, services: &[String]) -> anyhow::Result<()> {
    let compose = Compose::new(config, &config.selected_reference())?;
    let mut args = vec!["logs"];
    if follow {
        args.push("--follow");
    }
    args.extend(services.iter().map(String::as_str));
    Engine::new()?
        .run_attached(&compose.command(args), &compose.env)
        .with_context(|| format!("reading the logs of project {}", config.project))?;
    Ok(())
}
