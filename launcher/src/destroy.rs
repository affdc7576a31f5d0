//! `20i destroy`: remove the stack's containers, network and volumes (`docker compose down --volumes`). The
//! images stay, so the next `20i start` needs no download.

use anyhow::Context;

use crate::{config::Config, engine::Engine, stack::Compose};

pub fn run(config: &Config) -> anyhow::Result<()> {
    let compose = Compose::new(config, &config.selected_reference())?;
    let engine = Engine::new()?;
    compose.validate(&engine, config)?;
    engine
        .output_with_env(
            &compose.command(["down", "--volumes", "--remove-orphans"]),
            &compose.env,
        )
        .with_context(|| format!("removing project {}", config.project))?;
    println!(
        "removed the containers, network and volumes of {}",
        config.project
    );
    Ok(())
}
