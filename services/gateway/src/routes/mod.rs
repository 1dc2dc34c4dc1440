//! The API's routes, by area.

pub mod catalog;
pub mod commerce;
pub mod identity;
pub mod ops;
