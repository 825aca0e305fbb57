//! What a write is remembered under: its request id, and the fingerprint of
//! the operation a client named with it.
//!
//! A client's `X-Request-Id` names one operation (docs/api.md): a retry with
//! the same id and the same operation is answered from memory, the same id
//! on another operation is refused (`request_id_conflict`). The operation is
//! what the client asked for — service, method, route and path parameters —
//! not the command a coordinator built from it, which holds fresh ids (a new
//! item id per attempt) and looked-up values.
//!
//! Client ids live under the `c:` prefix; ids the cluster makes itself (saga
//! steps `<tx>:charge`, garbage collection `forget:<ms>`, check records) never
//! start with it, so no client id can reach them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{Rejection, RejectionCode};

const CLIENT_PREFIX: &str = "c:";

/// A request id with the fingerprint of its operation, as it travels to the
/// leader and sits in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestKey {
    pub request_id: String,
    /// Set for client requests; internal ones name a deterministic command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<u64>,
}

impl RequestKey {
    /// A client's id for the operation `fingerprint`.
    pub fn client(raw_id: &str, fingerprint: u64) -> Self {
        Self {
            request_id: format!("{CLIENT_PREFIX}{raw_id}"),
            fingerprint: Some(fingerprint),
        }
    }

    /// An id the cluster makes itself. It never starts with the client prefix
    /// (debug builds check): saga and housekeeping ids are built from
    /// transaction ids and fixed words.
    pub fn internal(id: impl Into<String>) -> Self {
        let request_id = id.into();
        debug_assert!(!request_id.starts_with(CLIENT_PREFIX));
        Self {
            request_id,
            fingerprint: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.request_id.is_empty()
    }

    /// Whether a write remembered with `seen` under this id was another
    /// operation. Only two client fingerprints can differ: internal ids and
    /// records from before fingerprints existed carry none.
    pub fn conflicts_with(&self, seen: Option<u64>) -> bool {
        matches!((self.fingerprint, seen), (Some(a), Some(b)) if a != b)
    }
}

/// The answer to a request id reused for another operation; nothing changes.
pub fn conflict() -> Rejection {
    Rejection::new(
        RejectionCode::RequestIdConflict,
        "this X-Request-Id was already used for another operation; use a new id",
    )
}

/// The fingerprint of a client operation. Stable across releases and
/// processes (it is compared on every replica, also after restarts): the
/// first 8 bytes of SHA-256 over the length-prefixed parts, so that no two
/// different part lists hash the same input.
pub fn fingerprint(service: &str, method: &str, route: &str, params: &[&str]) -> u64 {
    let mut hash = Sha256::new();
    for part in [service, method, route]
        .into_iter()
        .chain(params.iter().copied())
    {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADD_FUNDS: &str = "/payment/add_funds/{user_id}/{amount}";

    #[test]
    fn the_same_operation_has_the_same_fingerprint() {
        assert_eq!(
            fingerprint("payment", "POST", ADD_FUNDS, &["u1", "5"]),
            fingerprint("payment", "POST", ADD_FUNDS, &["u1", "5"]),
        );
    }

    #[test]
    fn any_changed_part_changes_the_fingerprint() {
        let base = fingerprint("payment", "POST", ADD_FUNDS, &["u1", "5"]);
        for other in [
            fingerprint("stock", "POST", ADD_FUNDS, &["u1", "5"]),
            fingerprint("payment", "GET", ADD_FUNDS, &["u1", "5"]),
            fingerprint(
                "payment",
                "POST",
                "/payment/pay/{user_id}/{amount}",
                &["u1", "5"],
            ),
            fingerprint("payment", "POST", ADD_FUNDS, &["u2", "5"]),
            fingerprint("payment", "POST", ADD_FUNDS, &["u1", "7"]),
            fingerprint("payment", "POST", ADD_FUNDS, &["u1"]),
            fingerprint("payment", "POST", ADD_FUNDS, &["u1", "5", ""]),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn moving_bytes_between_parameters_changes_the_fingerprint() {
        let route = "/orders/addItem/{order_id}/{item_id}/{quantity}";
        assert_ne!(
            fingerprint("order", "POST", route, &["ab", "c", "1"]),
            fingerprint("order", "POST", route, &["a", "bc", "1"]),
        );
    }

    #[test]
    fn client_ids_cannot_reach_internal_ones() {
        let client = RequestKey::client("forget:123", 1);
        assert_ne!(
            client.request_id,
            RequestKey::internal("forget:123").request_id
        );
        assert!(client.request_id.starts_with(CLIENT_PREFIX));
    }

    #[test]
    fn only_two_different_client_fingerprints_conflict() {
        let key = RequestKey::client("r", 1);
        assert!(!key.conflicts_with(Some(1)));
        assert!(key.conflicts_with(Some(2)));
        assert!(!key.conflicts_with(None));
        assert!(!RequestKey::internal("t:charge").conflicts_with(Some(2)));
    }
}
