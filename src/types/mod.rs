//! types (in progress)
