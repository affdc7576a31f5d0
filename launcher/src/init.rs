//! `20i init`: write the stack the launcher ships (compose file, nginx template, stack vars, the PHP-FPM build
//! context) to STACK_DIR, keeping files that are there unless `--force`.

use crate::{config::Config, stack};

pub fn run(config: &Config, force: bool) -> anyhow::Result<()> {
    let written = stack::write_shipped(&config.stack_dir, force)?;
    for path in &written {
        println!("wrote {}", path.display());
    }
    let kept = stack::FILES.len() - written.len();
    if kept > 0 {
        println!(
            "kept {kept} existing file(s) in {}: `20i init --force` overwrites them",
            config.stack_dir.display()
        );
    }
    Ok(())
}
