//! The API's routes, by area.

pub mod identity;
pub mod ops;
pub mod pending;
