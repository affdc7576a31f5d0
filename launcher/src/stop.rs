//! `20i stop`: stop the stack's containers (and its modules'), keeping them and their data.

use anyhow::Context;

use crate::{config::Config, engine::Engine, stack::Compose};

pub fn run(config: &Config) -> anyhow::Result<()> {
    let compose = Compose::new(config, &config.selected_reference())?;
    let engine = Engine::new()?;
    compose.validate(&engine, config)?;
    engine
        .output_with_env(&compose.command(["stop"]), &compose.env)
        .with_context(|| format!("stopping project {}", config.project))?;
    println!("stopped {}: `20i start` starts it again", config.project);
    Ok(())
}
