//! Node keys, genesis and per-node configuration.
