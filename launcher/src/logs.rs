//! `20i logs`: the services' logs (`docker compose logs`), optionally followed.

use anyhow::{bail, Context};

use crate::{config::Config, engine::Engine, stack::Compose};

pub fn run(config: &Config, follow: bool, services: &[String]) -> anyhow::Result<()> {
    for service in services {
        // A service name is an argument of `docker compose logs`: it must never read as an option.
        let valid = service
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid {
            bail!(crate::exit::Exit::config(anyhow::anyhow!(
                "{service:?} is not a service name: use nginx, apache, mariadb, phpmyadmin or a module's service \
                 (see `20i status`)"
            )));
        }
    }
    let compose = Compose::new(config, &config.selected_reference())?;
    let engine = Engine::new()?;
    compose.validate(&engine, config)?;
    let mut args = vec!["logs"];
    if follow {
        args.push("--follow");
    }
    args.extend(services.iter().map(String::as_str));
    engine
        .run_attached(&compose.command(args), &compose.env)
        .with_context(|| format!("reading the logs of project {}", config.project))?;
    Ok(())
}
