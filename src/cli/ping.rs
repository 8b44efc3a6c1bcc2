//! `nakcast ping` / `nakcast pong`.
use clap::Args;

use super::CliError;

/// `nakcast ping`.
#[derive(Args, Debug)]
pub struct PingArgs {}
/// `nakcast pong`.
#[derive(Args, Debug)]
pub struct PongArgs {}

/// Run ping.
pub fn run_ping(_a: PingArgs) -> Result<(), CliError> {
    Err(CliError::Usage("todo".into()))
}
/// Run pong.
pub fn run_pong(_a: PongArgs) -> Result<(), CliError> {
    Err(CliError::Usage("todo".into()))
}
