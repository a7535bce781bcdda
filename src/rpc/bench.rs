//! JSON-RPC load generator (filled below).
