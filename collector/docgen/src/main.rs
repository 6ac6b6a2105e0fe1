//! `glimpse-docgen`: the man pages and shell completions of the Glimpse
//! programs, written from the same clap definitions that parse their
//! command lines, so that they cannot drift from `--help`. Run at package
//! time (scripts/package-deb.sh); nothing it writes is committed.
//!
//! It links the collector, the agent and the PKI tool only to read their
//! command-line definitions: it is a build tool, never installed.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use clap_complete::Shell;

/// Writes man pages (section 1, one per program and one per subcommand,
/// as git does) and bash, zsh and fish completions.
///
/// Layout under --out: man/man1/<program>[-<subcommand>].1,
/// completions/bash/<program>.bash, completions/zsh/_<program>,
/// completions/fish/<program>.fish.
#[derive(Debug, Parser)]
#[command(name = "glimpse-docgen", version)]
struct Cli {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Programs to document (default: all).
    #[arg(value_name = "PROGRAM", value_parser = ["glimpse-collector", "glimpse-agent", "glimpse-certs"])]
    programs: Vec<String>,
}

/// A program's command-line definition, by name.
fn command_of(program: &str) -> Option<clap::Command> {
    match program {
        "glimpse-collector" => Some(glimpse_collector::cli::command()),
        "glimpse-agent" => Some(glimpse_agent::cli::command()),
        "glimpse-certs" => Some(glimpse_certs::cli::command()),
        _ => None,
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let programs = if cli.programs.is_empty() {
        vec!["glimpse-collector".to_owned(), "glimpse-agent".to_owned(), "glimpse-certs".to_owned()]
    } else {
        cli.programs
    };
    for program in &programs {
        let command = command_of(program).with_context(|| format!("unknown program {program}"))?;
        write_docs(&cli.out, program, command)?;
    }
    Ok(())
}

fn write_docs(out: &Path, program: &str, command: clap::Command) -> anyhow::Result<()> {
    let man = out.join("man/man1");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    clap_mangen::generate_to(command.clone(), &man).with_context(|| format!("man pages of {program}"))?;
    for (shell, dir) in [(Shell::Bash, "bash"), (Shell::Zsh, "zsh"), (Shell::Fish, "fish")] {
        let dir = out.join("completions").join(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut command = command.clone();
        clap_complete::generate_to(shell, &mut command, program, &dir)
            .with_context(|| format!("{shell} completion of {program}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_gets_pages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        for program in ["glimpse-collector", "glimpse-agent", "glimpse-certs"] {
            write_docs(dir.path(), program, command_of(program).unwrap()).unwrap();
            let page = std::fs::read_to_string(dir.path().join(format!("man/man1/{program}.1"))).unwrap();
            assert!(page.contains(".TH ") && page.contains("\\-\\-log\\-level"), "{program}: {page}");
            let bash = std::fs::read_to_string(dir.path().join(format!("completions/bash/{program}.bash"))).unwrap();
            assert!(bash.contains("--log-format"), "{program}");
            assert!(dir.path().join(format!("completions/zsh/_{program}")).exists());
            assert!(dir.path().join(format!("completions/fish/{program}.fish")).exists());
        }
        let check = std::fs::read_to_string(dir.path().join("man/man1/glimpse-collector-check.1")).unwrap();
        assert!(check.contains("every problem"), "{check}");
    }
}
