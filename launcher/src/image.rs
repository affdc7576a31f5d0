//! `20i image`: print the one image reference `20i start` uses, and nothing else. Pure: no docker, no network.

use crate::config::Config;

pub fn run(config: &Config) -> anyhow::Result<()> {
    println!("{}", config.selected_reference());
    Ok(())
}
