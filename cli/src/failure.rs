//! A command's failure: a stable code, a message for a person, an exit status.

use crate::code::Code;

/// What every command returns.
pub type Result<T> = std::result::Result<T, Failure>;

/// A command's failure: a stable code, a message for a person, an exit status.
#[derive(Debug)]
pub struct Failure {
    /// The stable string scripts match on: a [`Code`]'s, or a lower layer's.
    pub code: &'static str,
    pub message: String,
    pub exit: u8,
}

impl Failure {
    /// A failure with one of the CLI's own codes, and that code's exit status.
    pub fn new(code: Code, message: impl std::fmt::Display) -> Failure {
        Failure {
            code: code.as_str(),
            message: message.to_string(),
            exit: code.exit_status(),
        }
    }

    /// A failure whose code a lower layer decided, passed through unchanged
    /// with exit status 1: a policy error's `error_code()`, a node or network
    /// error's `code()`, or a refusal a running node sent back. Those codes
    /// are stable in their own crates; README lists the ones a person meets.
    /// (witmed-lab's own commands use it for their codes too.)
    pub fn from_layer(code: &'static str, message: impl std::fmt::Display) -> Failure {
        Failure {
            code,
            message: message.to_string(),
            exit: 1,
        }
    }
}
