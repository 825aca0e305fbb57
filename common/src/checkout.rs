//! How a checkout request ended: the `outcome` label of
//! `cart_checkouts_total`, which the order coordinators count and the admin
//! console reads back.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
    pub const ALL: [Self; 6] = [
        Self::Paid,
        Self::AlreadyPaid,
        Self::InsufficientCredit,
        Self::InsufficientStock,
        Self::Rejected,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::AlreadyPaid => "already_paid",
            Self::InsufficientCredit => "insufficient_credit",
            Self::InsufficientStock => "insufficient_stock",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    /// Whether the checkout was refused: a business answer, not a failure.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Self::InsufficientCredit | Self::InsufficientStock | Self::Rejected
        )
    }
}
