//! `cargo xtask workflows`: the GitHub workflows generated from the image matrix, and `--check`.

use clap::Args;
use xshell::Shell;

#[derive(Args, Debug)]
pub struct WorkflowsCmd {
    /// Fail when a workflow in .github/workflows/ is not what the matrix generates
    #[arg(long)]
    check: bool,
}

impl WorkflowsCmd {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let _ = self.check;
        anyhow::bail!("not generated yet")
    }
}
