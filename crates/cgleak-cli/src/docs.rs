//! `cgleak completions` and `cgleak man`: shell completions (clap_complete) and manual
//! pages (clap_mangen), generated from the command line's own clap definition, so they
//! name every flag the binary takes and nothing else.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use clap_complete::Shell;

use crate::exit::{self, Failure};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write cgleak.1 and one page per command (cgleak-status.1, ...) into this directory
    /// instead of printing cgleak.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn completions(mut cmd: clap::Command, a: &CompletionsArgs) -> Result<u8, Failure> {
    let shell = match a.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "cgleak", &mut out);
    std::io::stdout().write_all(&out).map_err(|e| Failure::runtime(format!("stdout: {e}")))?;
    Ok(exit::OK)
}

pub fn man(cmd: clap::Command, a: &ManArgs) -> Result<u8, Failure> {
    match &a.dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out).map_err(|e| Failure::runtime(format!("man page: {e}")))?;
            std::io::stdout().write_all(&out).map_err(|e| Failure::runtime(format!("stdout: {e}")))?;
        }
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Failure::usage(format!("--dir {}: not a directory", dir.display())));
            }
            clap_mangen::generate_to(cmd, dir).map_err(|e| Failure::runtime(format!("--dir {}: {e}", dir.display())))?;
        }
    }
    Ok(exit::OK)
}
