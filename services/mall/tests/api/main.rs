//! Gateway API tests: the whole mall started in-process on port 0, spoken to over HTTP as a client
//! would. One binary, a module per area.

mod browser;
mod callers;
mod catalog;
mod commerce;
mod helpers;
mod identity;
mod keys;
mod limits;
mod metrics;
mod objects;
mod ops;
mod owasp;
mod process;
mod restore;
mod shop;
mod tokens;
mod traces;
