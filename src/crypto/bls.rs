//! bls (in progress)
