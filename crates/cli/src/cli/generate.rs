//! `loadwise completions` and `loadwise man`: shell completions and man pages, made from
//! the clap command itself so that they never drift from the flags.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for: bash, zsh, fish, elvish or powershell. For
    /// example `loadwise completions bash > /etc/bash_completion.d/loadwise`.
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command (loadwise.1, loadwise-serve.1, ...) into this
    /// directory, instead of the main page to stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Prints the completion script for `args.shell`, made from `command`: the whole
/// binary's (`cli::command()`), passed in because it contains this subcommand.
pub fn completions(args: CompletionsArgs, command: clap::Command) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(&completion_script(args.shell, command))
        .and_then(|()| out.flush())
        .context("cannot write the completions to stdout")
}

/// The script, made in memory: the generator panics on a failed write (a closed
/// pipe), where the binary should exit with an error.
fn completion_script(shell: Shell, mut command: clap::Command) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "loadwise", &mut script);
    script
}

/// Prints the main page, or writes every page into `args.out`, from `command` (the
/// whole binary's).
pub fn man(args: ManArgs, command: clap::Command) -> anyhow::Result<()> {
    match args.out {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .and_then(|()| out.flush())
                .context("cannot write the man page to stdout")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completion_knows_the_subcommands_and_their_flags() {
        let script = String::from_utf8(completion_script(Shell::Bash, super::super::command())).unwrap();
        for word in ["serve", "agent", "pick", "completions", "man", "--advertise", "--auth-secret-file"] {
            assert!(script.contains(word), "{word} missing from the bash completion");
        }
    }

    #[test]
    fn the_man_pages_render_one_per_command() {
        let mut page = Vec::new();
        clap_mangen::Man::new(super::super::command()).render(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH loadwise 1"), "{page}");
        assert!(page.contains("serve") && page.contains("completions"), "{page}");
        let dir = std::env::temp_dir().join(format!("loadwise-man-{}", std::process::id()));
        man(ManArgs { out: Some(dir.clone()) }, super::super::command()).unwrap();
        for name in ["loadwise.1", "loadwise-serve.1", "loadwise-pick.1", "loadwise-config-show.1"] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(text.contains(".TH"), "{name} is not a man page");
        }
        let pick = std::fs::read_to_string(dir.join("loadwise-pick.1")).unwrap();
        assert!(pick.contains("Exit status"), "pick's page lists the exit statuses");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
