//! `nakcast`: the command-line tool. Publish, subscribe, measure latency and throughput, and
//! check a host's multicast set-up. Run `nakcast --help` (or `nakcast SUBCOMMAND --help`) for
//! worked examples.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nakcast: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
