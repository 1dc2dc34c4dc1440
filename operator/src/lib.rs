//! The Mall operator. Built out by the operator issue.
