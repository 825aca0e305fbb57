//! Strict parsing of path segments: ids and the integers of docs/api.md
//! (`0..=i64::MAX`, digits only). Anything else is a 400 that changes nothing.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use cart_common::ApiError;

/// The longest id accepted in a path.
pub const MAX_ID_LEN: usize = 256;

/// A route's path parameters in order, with extraction failures (such as
/// invalid percent-encoding) answered as JSON 400s.
pub struct Params(pub Vec<String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(pairs) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
        Ok(Params(pairs.into_iter().map(|(_, v)| v).collect()))
    }
}

impl Params {
    pub fn get(&self, i: usize) -> &str {
        self.0.get(i).map(String::as_str).unwrap_or("")
    }
}

pub fn id<'a>(what: &str, raw: &'a str) -> Result<&'a str, ApiError> {
    if raw.is_empty() || raw.len() > MAX_ID_LEN {
        return Err(ApiError::bad_request(
            "invalid_id",
            format!("{what} must be 1..={MAX_ID_LEN} bytes"),
        ));
    }
    Ok(raw)
}

/// An integer in `0..=i64::MAX` written with decimal digits only.
pub fn amount(what: &str, raw: &str) -> Result<i64, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_number",
            format!("{what} must be an integer in 0..=9223372036854775807, got {raw:?}"),
        )
    };
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    raw.parse::<i64>().map_err(|_| invalid())
}

/// A count (`batch_init` sizes) in `0..=max`.
pub fn count(what: &str, raw: &str, max: u64) -> Result<u64, ApiError> {
    let n = amount(what, raw)? as u64;
    if n > max {
        return Err(ApiError::bad_request(
            "invalid_number",
            format!("{what} must be at most {max}"),
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_accept_only_plain_non_negative_i64() {
        assert_eq!(amount("x", "0").unwrap(), 0);
        assert_eq!(amount("x", "007").unwrap(), 7);
        assert_eq!(amount("x", "9223372036854775807").unwrap(), i64::MAX);
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "1e3",
            " 1",
            "abc",
            "9223372036854775808",
            "18446744073709551616",
            "0x10",
        ] {
            assert!(amount("x", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_must_be_non_empty_and_bounded() {
        assert!(id("item", "").is_err());
        assert!(id("item", &"a".repeat(MAX_ID_LEN + 1)).is_err());
        assert_eq!(id("item", "0").unwrap(), "0");
    }

    #[test]
    fn counts_are_capped() {
        assert_eq!(count("n", "100000", 1_000_000).unwrap(), 100_000);
        assert!(count("n", "1000001", 1_000_000).is_err());
    }
}
