//! tx (in progress)
