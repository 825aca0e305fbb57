//! The one error type of the console's admin calls, worded for the operator:
//! every failure ends up in the status line, never in a crash.

use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("coordinator {addr} unreachable ({reason})")]
    Unreachable { addr: String, reason: String },
    #[error("unauthorized (401): the admin token was refused; check --token or CART_ADMIN_TOKEN")]
    Unauthorized,
    #[error("{status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unreadable answer from {addr}: {reason}")]
    BadAnswer { addr: String, reason: String },
    #[error("read-only: no action is sent")]
    ReadOnly,
}

impl AdminError {
    /// Whether another coordinator may be tried: the request never reached
    /// this one, so nothing was done twice.
    pub fn try_another(&self) -> bool {
        matches!(self, AdminError::Unreachable { .. })
    }
}
