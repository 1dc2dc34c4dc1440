//! The shop's values that are checked once, where they enter, so that the services that take them
//! agree on what a valid one is. Pure: no I/O, no wire types (the proto crate converts).

pub mod card;
