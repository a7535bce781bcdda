//! The consensus shard's door: the channel ends it owns, for a CN's machine
//! ([`ConsensusChannels`]) and a PN's or EN's follower ([`FollowerChannels`]). Its messages
//! are the other rooms' doors: it receives [`crate::net::Inbound`],
//! [`crate::exec::ExecReply`] and [`crate::store::StoreReply`].

use crate::exec::{ExecReply, ExecRequest};
use crate::net::{Inbound, NetCommand};
use crate::runtime::{Rx, Tx};
use crate::store::{StoreReply, StoreRequest};

/// The channels of the consensus shard.
pub struct ConsensusChannels {
    /// From the net shard.
    pub from_net: Rx<Inbound>,
    /// To the net shard.
    pub to_net: Tx<NetCommand>,
    /// To exec.
    pub to_exec: Tx<ExecRequest>,
    /// From exec.
    pub from_exec: Rx<ExecReply>,
    /// To store.
    pub to_store: Tx<StoreRequest>,
    /// From store.
    pub from_store: Rx<StoreReply>,
}

/// The channels of a follower's consensus shard.
pub struct FollowerChannels {
    /// From the net shard (finalized blocks).
    pub from_net: Rx<Inbound>,
    /// To the net shard.
    pub to_net: Tx<NetCommand>,
    /// To exec (EN; a PN does not execute).
    pub to_exec: Option<Tx<ExecRequest>>,
    /// To store.
    pub to_store: Tx<StoreRequest>,
    /// From store.
    pub from_store: Rx<StoreReply>,
}
