//! Running the cart cluster locally: the built-in gateway, the process
//! harness shared by the launcher and the tests, and the launcher.

pub mod gateway;
pub mod harness;
pub mod launcher;
