//! The async runtime the network commands (`node run`, `query run`, `study publish`) run on.

use crate::code::Code;
use crate::failure::{Failure, Result};

/// A runtime for one command.
pub fn start() -> Result<tokio::runtime::Runtime> {
    witmed_net::runtime().map_err(|e| Failure::new(Code::RuntimeFailed, e))
}
