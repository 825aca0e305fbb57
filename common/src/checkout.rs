//! How a checkout request ended: the `outcome` label of
//! `cart_checkouts_total`, which the order coordinators count and the admin
//! console reads back.

use strum::{IntoStaticStr, VariantArray};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, VariantArray, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum CheckoutOutcome {
    Paid,
    AlreadyPaid,
    InsufficientCredit,
    InsufficientStock,
    /// Any other refusal (4xx).
    Rejected,
    /// No definite answer (5xx).
    Failed,
}

impl CheckoutOutcome {
    /// Whether the checkout was refused: a business answer, not a failure.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Self::InsufficientCredit | Self::InsufficientStock | Self::Rejected
        )
    }
}
