//! `20i pull`: get the PHP-FPM image exactly as `20i start` would (cache, pull, mirror, local build), with the
//! stack's other images it lacks alongside (when the stack's files are there), and start nothing: how to fetch
//! the images before going offline.

use crate::{
    config::Config,
    engine::{seconds, Engine},
    fetch,
    stack::Compose,
};

pub fn run(config: &Config) -> anyhow::Result<()> {
    let engine = Engine::new()?;
    let images = if config.stack_file.is_file() {
        let compose = Compose::new(config, &config.selected_reference())?;
        fetch::stack_images(&engine, config, &compose)?
    } else {
        Vec::new()
    };
    let survey = fetch::survey(&engine, config, images)?;
    let fetched = fetch::fetch(
        &engine,
        config,
        &survey.missing,
        &mut || Ok(()),
        survey.php_fpm,
    )?;
    let acquired = &fetched.acquired;
    println!("php-fpm  {} ({})", acquired.reference, acquired.origin);
    for (what, took) in &acquired.steps {
        println!("  {what:<60} {}", seconds(*took));
    }
    for (image, took) in &fetched.pulled {
        let what = format!("pulled the {} image {}", image.label, image.reference);
        println!("  {what:<60} {}", seconds(*took));
    }
    Ok(())
}
