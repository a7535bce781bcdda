//! A minimal driver with instant, lossless delivery and no faults: the machines' own cost.
//!
//! Messages and the builder's and verifier's answers are delivered in FIFO order at the same
//! virtual instant; when nothing is pending, the clock jumps to the earliest timer. No network
//! model, no trace, no checkers: this is what `benches/consensus.rs` times per finalized
//! height, and a quick smoke test of a machine.

use std::collections::{BTreeMap, VecDeque};

use crate::consensus::{
    Effect, FastScheme, Input, Machine, Message, Millis, SignatureScheme, Timer,
};
use crate::types::{CouncilIndex, FinalizedBlock, Height};

use super::exec::{block_is_valid, random_transactions, state_root};
use super::rng::SimRng;
use super::world::{genesis_header, sim_config};

/// What an instant run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstantRun {
    /// Lowest finalized height over the nodes.
    pub heights: Height,
    /// Messages delivered.
    pub messages: u64,
    /// Inputs handled (messages, timers, answers).
    pub inputs: u64,
    /// Virtual time at the end.
    pub virtual_ms: Millis,
}

/// Drives `schemes.len()` machines (council = committee) until every one has finalized
/// `heights` blocks, or until nothing is left to do, or 60 virtual seconds per height pass.
pub fn drive_instant<S: SignatureScheme>(
    schemes: Vec<S>,
    heights: Height,
    seed: u64,
) -> InstantRun {
    let n = schemes.len();
    let config = sim_config(n, n, 500, Default::default());
    let genesis = genesis_header(seed);
    let mut rng = SimRng::stream(seed, "instant");
    let mut machines: Vec<Machine<S>> = Vec::with_capacity(n);
    let mut fifo: VecDeque<(usize, Input)> = VecDeque::new();
    let mut timers: BTreeMap<(Millis, u64), (usize, Timer)> = BTreeMap::new();
    let mut seq = 0u64;
    let mut chains: Vec<Vec<FinalizedBlock>> = vec![Vec::new(); n];
    let mut pending: Vec<(usize, Vec<Effect>)> = Vec::new();
    for (i, scheme) in schemes.into_iter().enumerate() {
        let (m, effects) = Machine::new(
            config.clone(),
            scheme,
            i as CouncilIndex,
            genesis.clone(),
            &[],
            0,
        );
        machines.push(m);
        pending.push((i, effects));
    }
    let mut now: Millis = 0;
    let mut run = InstantRun {
        heights: 0,
        messages: 0,
        inputs: 0,
        virtual_ms: 0,
    };
    let limit = heights.max(1) * 60_000;
    loop {
        for (i, effects) in pending.drain(..) {
            for e in effects {
                match e {
                    Effect::Broadcast(m) => {
                        for d in (0..n).filter(|&d| d != i) {
                            fifo.push_back((d, Input::Message(m.clone())));
                        }
                    }
                    Effect::SendTo(to, m) => {
                        if (to as usize) < n && to as usize != i {
                            fifo.push_back((to as usize, Input::Message(m)));
                        }
                    }
                    Effect::Schedule { timer, at } => {
                        timers.insert((at.max(now), seq), (i, timer));
                        seq += 1;
                    }
                    Effect::BuildBlock {
                        height,
                        round,
                        parent,
                    } => {
                        let transactions = random_transactions(&mut rng, 0, 3);
                        let state_root = state_root(&parent.hash(), &transactions);
                        fifo.push_back((
                            i,
                            Input::BlockBuilt {
                                height,
                                round,
                                transactions,
                                state_root,
                            },
                        ));
                    }
                    Effect::VerifyBlock(block) => {
                        fifo.push_back((
                            i,
                            Input::BlockVerified {
                                height: block.header.height,
                                block_hash: block.hash(),
                                valid: block_is_valid(&block),
                            },
                        ));
                    }
                    Effect::Commit {
                        block, certificate, ..
                    } => {
                        chains[i].push(FinalizedBlock { block, certificate });
                    }
                    Effect::RequestSync { peer, from_height } => {
                        let from = from_height.max(1) as usize - 1;
                        if let Some(chain) = chains.get(peer as usize) {
                            for f in chain.iter().skip(from).take(64) {
                                fifo.push_back((
                                    i,
                                    Input::Message(Message::Finalized {
                                        sender: peer,
                                        block: Box::new(f.clone()),
                                    }),
                                ));
                            }
                        }
                    }
                    Effect::OfferSync { peer, from_height } => {
                        let from = from_height.max(1) as usize - 1;
                        if (peer as usize) < n {
                            for f in chains[i].iter().skip(from).take(64) {
                                fifo.push_back((
                                    peer as usize,
                                    Input::Message(Message::Finalized {
                                        sender: i as CouncilIndex,
                                        block: Box::new(f.clone()),
                                    }),
                                ));
                            }
                        }
                    }
                    Effect::Persist(_) | Effect::Evidence(_) | Effect::Rejected { .. } => {}
                }
            }
        }
        run.heights = chains.iter().map(|c| c.len() as Height).min().unwrap_or(0);
        if run.heights >= heights {
            break;
        }
        let (i, input) = match fifo.pop_front() {
            Some(x) => x,
            None => match timers.pop_first() {
                Some(((at, _), (i, timer))) => {
                    now = now.max(at);
                    (i, Input::Timer(timer))
                }
                None => break,
            },
        };
        if now > limit {
            break;
        }
        if matches!(input, Input::Message(_)) {
            run.messages += 1;
        }
        run.inputs += 1;
        let effects = machines[i].handle(now, input);
        pending.push((i, effects));
    }
    run.virtual_ms = now;
    run
}

/// [`drive_instant`] with the fast scheme and a council of `n`.
pub fn drive_instant_fast(n: usize, heights: Height, seed: u64) -> InstantRun {
    let schemes = (0..n as CouncilIndex)
        .map(|i| FastScheme::new(i, n))
        .collect();
    drive_instant(schemes, heights, seed)
}
