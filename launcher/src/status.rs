//! `20i status`: the stack's containers, their state and health (`docker compose ps`).

use anyhow::Context;

use crate::{config::Config, engine::Engine, stack::Compose};

pub fn run(config: &Config) -> anyhow::Result<()> {
    let compose = Compose::new(config, &config.selected_reference())?;
    let engine = Engine::new()?;
    compose.validate(&engine, config)?;
    engine
        .run_attached(&compose.command(["ps", "--all"]), &compose.env)
        .with_context(|| format!("listing the containers of project {}", config.project))?;
    Ok(())
}
