//! How an operation of a history is asked of the cart API (docs/api.md),
//! and how its answer is read: one mapping for every client that records
//! histories (the load generator, the partition tests).

use serde_json::Value;

use super::{Answer, Call};

/// The HTTP method of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
}

/// The service behind a key: `stock/<item>` or `credit/<user>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Stock,
    Credit,
}

fn split(key: &str) -> Result<(Kind, &str), String> {
    match key.split_once('/') {
        Some(("stock", id)) => Ok((Kind::Stock, id)),
        Some(("credit", id)) => Ok((Kind::Credit, id)),
        _ => Err(format!("{key:?} is not stock/<item> or credit/<user>")),
    }
}

/// The key of item `id`'s stock.
pub fn stock_key(id: impl std::fmt::Display) -> String {
    format!("stock/{id}")
}

/// The key of user `id`'s credit.
pub fn credit_key(id: impl std::fmt::Display) -> String {
    format!("credit/{id}")
}

impl Call {
    /// The request that makes this call: its method and path.
    pub fn request(&self) -> Result<(Verb, String), String> {
        let (kind, id) = split(self.key())?;
        Ok(match (self, kind) {
            (Call::Read { .. }, Kind::Stock) => (Verb::Get, format!("/stock/find/{id}")),
            (Call::Read { .. }, Kind::Credit) => (Verb::Get, format!("/payment/find_user/{id}")),
            (Call::Add { amount, .. }, Kind::Stock) => {
                (Verb::Post, format!("/stock/add/{id}/{amount}"))
            }
            (Call::Add { amount, .. }, Kind::Credit) => {
                (Verb::Post, format!("/payment/add_funds/{id}/{amount}"))
            }
            (Call::Subtract { amount, .. }, Kind::Stock) => {
                (Verb::Post, format!("/stock/subtract/{id}/{amount}"))
            }
            (Call::Subtract { amount, .. }, Kind::Credit) => {
                (Verb::Post, format!("/payment/pay/{id}/{amount}"))
            }
        })
    }

    /// What an answer says about this call: `status` is the HTTP status,
    /// `None` when no answer came. A 5xx or 429 says nothing (the write may
    /// have happened); a refusal for want of stock or credit is `Refused`;
    /// any other 4xx is an error of the client recording the history.
    pub fn answer(&self, status: Option<u16>, body: &Value) -> Result<Answer, String> {
        let (kind, _) = split(self.key())?;
        let Some(status) = status else {
            return Ok(Answer::Unknown);
        };
        match status {
            200..=299 => match self {
                Call::Read { .. } => {
                    let field = match kind {
                        Kind::Stock => "stock",
                        Kind::Credit => "credit",
                    };
                    body.get(field)
                        .and_then(Value::as_i64)
                        .map(|value| Answer::Value { value })
                        .ok_or_else(|| format!("{status} without {field:?}: {body}"))
                }
                _ => Ok(Answer::Ok),
            },
            429 | 500..=599 => Ok(Answer::Unknown),
            _ => {
                let code = body.get("error").and_then(Value::as_str).unwrap_or("");
                let short = matches!(code, "insufficient_stock" | "insufficient_credit");
                if short && matches!(self, Call::Subtract { .. }) {
                    Ok(Answer::Refused)
                } else {
                    Err(format!("{self:?} answered {status}: {body}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_call_maps_to_its_route() {
        let read = Call::Read { key: credit_key(7) };
        assert_eq!(
            read.request().unwrap(),
            (Verb::Get, "/payment/find_user/7".to_string())
        );
        let sub = Call::Subtract {
            key: stock_key(3),
            amount: 2,
        };
        assert_eq!(
            sub.request().unwrap(),
            (Verb::Post, "/stock/subtract/3/2".to_string())
        );
        let add = Call::Add {
            key: credit_key("u"),
            amount: 5,
        };
        assert_eq!(
            add.request().unwrap(),
            (Verb::Post, "/payment/add_funds/u/5".to_string())
        );
        assert!(Call::Read { key: "x/1".into() }.request().is_err());
    }

    #[test]
    fn answers_are_read_as_the_checker_counts_them() {
        let read = Call::Read { key: stock_key(1) };
        let sub = Call::Subtract {
            key: credit_key(1),
            amount: 9,
        };
        assert_eq!(
            read.answer(Some(200), &json!({"stock": 4, "price": 1})),
            Ok(Answer::Value { value: 4 })
        );
        assert_eq!(
            sub.answer(Some(200), &json!({"done": true})),
            Ok(Answer::Ok)
        );
        assert_eq!(
            sub.answer(Some(400), &json!({"error": "insufficient_credit"})),
            Ok(Answer::Refused)
        );
        for unknown in [None, Some(503), Some(429)] {
            assert_eq!(sub.answer(unknown, &Value::Null), Ok(Answer::Unknown));
        }
        assert!(sub
            .answer(Some(404), &json!({"error": "user_not_found"}))
            .is_err());
        assert!(read.answer(Some(200), &json!({})).is_err());
    }
}
