//! `nakcast doctor`.
use clap::Args;

use super::CliError;

/// `nakcast doctor`.
#[derive(Args, Debug)]
pub struct DoctorArgs {}

/// Run doctor.
pub fn run(_a: DoctorArgs) -> Result<(), CliError> {
    Err(CliError::Usage("todo".into()))
}
