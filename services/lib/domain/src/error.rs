//! Why a value was refused where it entered: the field, and what is wrong with it, in words for the
//! person who sent it. Every service answers these as its own INVALID_ARGUMENT (the gateway as 400).

use std::fmt;

/// A refused input: `{field} {problem}`, e.g. "address.city is required".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct Invalid {
    /// The field as clients name it ("email", "address.zip_code", "product_id", ...).
    pub field: &'static str,
    pub problem: Problem,
}

impl Invalid {
    pub fn new(field: &'static str, problem: Problem) -> Invalid {
        Invalid { field, problem }
    }

    /// A field that must be given and was not.
    pub fn required(field: &'static str) -> Invalid {
        Invalid::new(field, Problem::Required)
    }
}

/// What is wrong with a field; shown after its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Required,
    TooLong {
        max: usize,
        got: usize,
    },
    /// Not of the field's form; the reason completes "is not valid: ".
    Malformed(&'static str),
    NotPositive(i64),
    /// Text that should have been a positive whole number.
    NotAWholeNumber(String),
    Negative,
    /// Above the field's maximum, as people write it ("1,000,000.00").
    AboveMax(&'static str),
    NotADecimal(String),
    TooManyDecimals(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Required => write!(f, "is required"),
            Problem::TooLong { max, got } => write!(f, "must be at most {max} characters (it has {got})"),
            Problem::Malformed(why) => write!(f, "is not valid: {why}"),
            Problem::NotPositive(got) => write!(f, "must be positive, got {got}"),
            Problem::NotAWholeNumber(got) => write!(f, "must be a positive whole number, not {got:?}"),
            Problem::Negative => write!(f, "must not be negative"),
            Problem::AboveMax(max) => write!(f, "must be at most {max}"),
            Problem::NotADecimal(got) => write!(f, "{got:?} is not a decimal like \"19.90\""),
            Problem::TooManyDecimals(got) => write!(f, "{got:?} has more than two decimals"),
        }
    }
}

/// A status text that names none of its kind's values: found in storage, never sent by a client, so
/// the services answer it as an internal error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a known {kind}")]
pub struct UnknownStatus {
    /// "order status", "payment status", ...
    pub kind: &'static str,
    pub value: String,
}
