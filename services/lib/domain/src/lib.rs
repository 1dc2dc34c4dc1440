//! The shop's values that are checked once, where they enter, so that the services that take them
//! agree on what a valid one is: an email, an address, a price, ids, a payment card, and the statuses
//! the services keep. Pure: no I/O, no wire types (the proto crate converts).
//!
//! A refused input is an [`Invalid`] naming the field and why; every service answers it as its own
//! INVALID_ARGUMENT (the gateway as 400), so the same input gets the same answer wherever it enters.

mod address;
pub mod card;
mod email;
mod error;
mod id;
mod money;
mod status;

pub use address::Address;
pub use email::Email;
pub use error::{Invalid, Problem, UnknownStatus};
pub use id::{OrderId, ProductId, UserId};
pub use money::Cents;
pub use status::{CheckoutOutcome, CheckoutStep, OrderStatus, PaymentStatus, ReservationStatus};
