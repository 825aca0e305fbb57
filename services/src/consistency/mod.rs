//! Consistency checks by SHA-256 digests at one log position, and repair
//! (docs/consistency.md): the digest tree (`digest`), each replica's part
//! (`replica`), the leader's checker (`checker`), the wire types between
//! them (`wire`) and the node's HTTP handlers (`api`).

pub mod api;
pub mod checker;
pub mod digest;
pub mod replica;
pub mod wire;
