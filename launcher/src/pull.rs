//! `20i pull`: get the PHP-FPM image exactly as `20i start` would (cache, pull, mirror, local build), and start
//! nothing: how to fetch the image before going offline.

use crate::{
    acquire,
    config::Config,
    engine::{seconds, Engine},
};

pub fn run(config: &Config) -> anyhow::Result<()> {
    let engine = Engine::new()?;
    let acquired = acquire::acquire(&engine, config, &mut std::io::stderr(), &mut || Ok(()))?;
    println!("php-fpm  {} ({})", acquired.reference, acquired.origin);
    for (what, took) in &acquired.steps {
        println!("  {what:<60} {}", seconds(*took));
    }
    Ok(())
}
