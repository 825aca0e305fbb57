//! Running the cart cluster locally: the built-in gateway, the process
//! harness shared by the launcher and the tests, the launcher, and the
//! membership commands.

pub mod compose;
pub mod gateway;
pub mod harness;
pub mod k8s;
pub mod launcher;
pub mod membership;
pub mod mongo_server;
pub mod nginx;
pub mod prometheus;
