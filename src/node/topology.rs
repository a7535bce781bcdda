//! A node's topology as data: the shards each role runs ([`Role::shards`]) and the links
//! between them ([`LINKS`]), built once by one routine ([`Ends::for_role`]).
//!
//! A link is a bounded lock-free channel (glommio `shared_channel`, [`LINK_CAPACITY`]
//! messages) carrying one door's message type from one shard to another. A role has a link
//! exactly when it runs both of its shards: a PN, which runs no exec shard, has none of the
//! exec links. Each shard takes its ends ([`Ends::take`]), connects them all at once inside its
//! executor ([`ShardEnds::connect`]: each connect waits for its other end, so connecting one
//! by one could wait in a circle), and picks them out by type ([`ConnectedEnds::tx`],
//! [`ConnectedEnds::rx`]).
//!
//! Invariants (a breach is a wiring bug, and panics at start): every end of a role's links is
//! taken by the shard it belongs to; an end is asked for with the type its link carries; no
//! end is asked for twice; a shard uses or drops every end it was given
//! ([`ConnectedEnds::done`]).
//!
//! `corecell node --config FILE --print-topology` prints it for one node ([`describe`]).

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use crate::config::{Role, Shard};
use crate::runtime::{ExecutorPlan, Link, Rx, Tx};
use crate::{exec, net, store};

/// Capacity of each shard-to-shard channel, in messages.
pub const LINK_CAPACITY: usize = 4096;

/// One link: a channel from `from`'s side to `to`'s door.
#[derive(Clone, Copy)]
pub struct LinkSpec {
    /// The sending shard.
    pub from: Shard,
    /// The receiving shard.
    pub to: Shard,
    /// The message type it carries, for people (`corecell node --print-topology`).
    pub carries: &'static str,
    /// Makes the channel and erases its type.
    make: fn(usize) -> (PendingEnd, PendingEnd),
}

impl std::fmt::Debug for LinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} --{}--> {}",
            self.from.name(),
            self.carries,
            self.to.name()
        )
    }
}

const fn link<T: Send + 'static>(from: Shard, to: Shard, carries: &'static str) -> LinkSpec {
    LinkSpec {
        from,
        to,
        carries,
        make: make_link::<T>,
    }
}

/// Every link a node can have. A role has those whose two shards it runs.
pub const LINKS: &[LinkSpec] = &[
    link::<net::Inbound>(Shard::Net, Shard::Consensus, "net::Inbound"),
    link::<net::NetCommand>(Shard::Consensus, Shard::Net, "net::NetCommand"),
    link::<exec::BatchIn>(Shard::Net, Shard::Exec, "exec::BatchIn"),
    link::<exec::ExecToNet>(Shard::Exec, Shard::Net, "exec::ExecToNet"),
    link::<store::SyncServe>(Shard::Net, Shard::Store, "store::SyncServe"),
    link::<store::PeerFrame>(Shard::Store, Shard::Net, "store::PeerFrame"),
    link::<exec::ExecRequest>(Shard::Consensus, Shard::Exec, "exec::ExecRequest"),
    link::<exec::ExecReply>(Shard::Exec, Shard::Consensus, "exec::ExecReply"),
    link::<store::StoreRequest>(Shard::Consensus, Shard::Store, "store::StoreRequest"),
    link::<store::StoreReply>(Shard::Store, Shard::Consensus, "store::StoreReply"),
    link::<store::SnapshotWrite>(Shard::Exec, Shard::Store, "store::SnapshotWrite"),
];

/// The links of a node of `role`.
pub fn links(role: Role) -> impl Iterator<Item = &'static LinkSpec> {
    let shards = role.shards();
    LINKS
        .iter()
        .filter(move |l| shards.contains(&l.from) && shards.contains(&l.to))
}

/// An end of a link not yet connected: connecting it (in the executor that will use it)
/// gives the connected end, type-erased.
type PendingEnd = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Box<dyn Any>>>> + Send>;

fn make_link<T: Send + 'static>(capacity: usize) -> (PendingEnd, PendingEnd) {
    let link: Link<T> = Link::new(capacity);
    let (sender, receiver) = (link.sender, link.receiver);
    let sender: PendingEnd =
        Box::new(move || Box::pin(async move { Box::new(sender.connect().await) as Box<dyn Any> }));
    let receiver: PendingEnd = Box::new(move || {
        Box::pin(async move { Box::new(receiver.connect().await) as Box<dyn Any> })
    });
    (sender, receiver)
}

/// Which end of a link, seen from the shard holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    /// Sends to this shard.
    To(Shard),
    /// Receives from this shard.
    From(Shard),
}

/// Every end of a node's links, not yet handed to their shards.
pub struct Ends {
    by_shard: BTreeMap<Shard, BTreeMap<Side, PendingEnd>>,
}

impl Ends {
    /// Makes every link of `role`.
    pub fn for_role(role: Role) -> Ends {
        let mut by_shard: BTreeMap<Shard, BTreeMap<Side, PendingEnd>> = BTreeMap::new();
        for spec in links(role) {
            let (sender, receiver) = (spec.make)(LINK_CAPACITY);
            let fresh = by_shard
                .entry(spec.from)
                .or_default()
                .insert(Side::To(spec.to), sender)
                .is_none();
            assert!(fresh, "two links {spec:?}");
            by_shard
                .entry(spec.to)
                .or_default()
                .insert(Side::From(spec.from), receiver);
        }
        Ends { by_shard }
    }

    /// The ends `shard` holds (none if it has no link).
    pub fn take(&mut self, shard: Shard) -> ShardEnds {
        ShardEnds {
            shard,
            ends: self.by_shard.remove(&shard).unwrap_or_default(),
        }
    }

    /// Checks that every shard took its ends.
    pub fn done(self) {
        let left: Vec<&str> = self.by_shard.keys().map(|s| s.name()).collect();
        assert!(left.is_empty(), "link ends nobody took: {left:?}");
    }
}

/// One shard's ends, to be connected in its executor.
pub struct ShardEnds {
    shard: Shard,
    ends: BTreeMap<Side, PendingEnd>,
}

impl ShardEnds {
    /// Connects every end at once (each connect waits for its other end) and gives them back.
    pub async fn connect(self) -> ConnectedEnds {
        let tasks: Vec<(Side, glommio::task::JoinHandle<Box<dyn Any>>)> = self
            .ends
            .into_iter()
            .map(|(side, connect)| (side, glommio::spawn_local(connect()).detach()))
            .collect();
        let mut ends = BTreeMap::new();
        for (side, task) in tasks {
            // A connect task only ends by connecting; `None` means it was cancelled, which
            // happens only when its executor is going away.
            if let Some(end) = task.await {
                ends.insert(side, end);
            }
        }
        ConnectedEnds {
            shard: self.shard,
            ends,
        }
    }
}

/// One shard's connected ends, picked out by type.
pub struct ConnectedEnds {
    shard: Shard,
    ends: BTreeMap<Side, Box<dyn Any>>,
}

impl ConnectedEnds {
    /// The sending end to `to`, if this role has that link.
    pub fn tx<T: Send + 'static>(&mut self, to: Shard) -> Option<Tx<T>> {
        self.pick(Side::To(to))
    }

    /// The receiving end from `from`, if this role has that link.
    pub fn rx<T: Send + 'static>(&mut self, from: Shard) -> Option<Rx<T>> {
        self.pick(Side::From(from))
    }

    /// The sending end to `to`, which every role running this shard has.
    pub fn tx_always<T: Send + 'static>(&mut self, to: Shard) -> Tx<T> {
        let shard = self.shard;
        self.tx(to)
            .unwrap_or_else(|| panic!("shard {} has no link to {}", shard.name(), to.name()))
    }

    /// The receiving end from `from`, which every role running this shard has.
    pub fn rx_always<T: Send + 'static>(&mut self, from: Shard) -> Rx<T> {
        let shard = self.shard;
        self.rx(from)
            .unwrap_or_else(|| panic!("shard {} has no link from {}", shard.name(), from.name()))
    }

    fn pick<E: 'static>(&mut self, side: Side) -> Option<E> {
        let end = self.ends.remove(&side)?;
        match end.downcast::<E>() {
            Ok(end) => Some(*end),
            Err(_) => panic!(
                "shard {} asked for its {side:?} end with another type than the link carries",
                self.shard.name()
            ),
        }
    }

    /// Checks that the shard took every end it was given.
    pub fn done(self) {
        let left: Vec<Side> = self.ends.keys().copied().collect();
        assert!(
            left.is_empty(),
            "shard {} left ends unused: {left:?}",
            self.shard.name()
        );
    }
}

/// The topology of one node for people: executors (with their CPUs) and links.
pub fn describe(role: Role, plans: &[ExecutorPlan]) -> String {
    let mut out = format!("role {}\n", role.name());
    out.push_str("executors:\n");
    for (i, plan) in plans.iter().enumerate() {
        let cpu = plan
            .cpu
            .map_or("unpinned".to_string(), |c| format!("cpu {c}"));
        let shards: Vec<&str> = plan.shards.iter().map(|s| s.name()).collect();
        out.push_str(&format!("  {i}: {cpu:<9} {}\n", shards.join(", ")));
    }
    out.push_str(&format!(
        "links (bounded lock-free channels, {LINK_CAPACITY} messages each):\n"
    ));
    for spec in links(role) {
        out.push_str(&format!(
            "  {:<9} --{}--> {}\n",
            spec.from.name(),
            spec.carries,
            spec.to.name()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_has_the_links_between_the_shards_it_runs() {
        let cn: Vec<String> = links(Role::Cn).map(|l| format!("{l:?}")).collect();
        assert_eq!(cn.len(), LINKS.len(), "a CN runs every shard with a link");
        let pn: Vec<String> = links(Role::Pn).map(|l| format!("{l:?}")).collect();
        assert_eq!(pn.len(), 6);
        assert!(pn.iter().all(|l| !l.contains("exec")), "{pn:?}");
        assert_eq!(links(Role::Bootnode).count(), 0);
        for role in [Role::Cn, Role::Pn, Role::En] {
            for shard in role.shards() {
                let out = links(role).filter(|l| l.from == *shard).count();
                let into = links(role).filter(|l| l.to == *shard).count();
                assert!(out > 0 && into > 0, "{} of a {}", shard.name(), role.name());
            }
        }
    }

    #[test]
    fn every_link_connects_and_carries_its_type() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let mut ends = Ends::for_role(Role::Pn);
                let shards: Vec<ShardEnds> =
                    Role::Pn.shards().iter().map(|s| ends.take(*s)).collect();
                ends.done();
                let tasks: Vec<_> = shards
                    .into_iter()
                    .map(|e| glommio::spawn_local(e.connect()).detach())
                    .collect();
                let mut connected = Vec::new();
                for t in tasks {
                    connected.push(t.await.expect("connects"));
                }
                let [net, consensus, store] = <[ConnectedEnds; 3]>::try_from(connected)
                    .unwrap_or_else(|_| panic!("three shards"));
                let (mut net, mut consensus, mut store) = (net, consensus, store);
                let to_store: Tx<store::SyncServe> = net.tx_always(Shard::Store);
                assert!(net.tx::<exec::BatchIn>(Shard::Exec).is_none());
                let from_net: Rx<store::SyncServe> = store.rx_always(Shard::Net);
                to_store
                    .try_send(store::SyncServe {
                        peer: 3,
                        from_height: 7,
                    })
                    .map_err(|_| "full")
                    .expect("sends");
                let got = from_net.recv().await.expect("receives");
                assert_eq!((got.peer, got.from_height), (3, 7));
                drop((to_store, from_net));
                let _: Rx<store::PeerFrame> = net.rx_always(Shard::Store);
                let _: Rx<net::NetCommand> = net.rx_always(Shard::Consensus);
                let _: Tx<net::Inbound> = net.tx_always(Shard::Consensus);
                net.done();
                let _: Tx<store::PeerFrame> = store.tx_always(Shard::Net);
                let _: Rx<store::StoreRequest> = store.rx_always(Shard::Consensus);
                let _: Tx<store::StoreReply> = store.tx_always(Shard::Consensus);
                store.done();
                let _: Rx<net::Inbound> = consensus.rx_always(Shard::Net);
                let _: Tx<net::NetCommand> = consensus.tx_always(Shard::Net);
                let _: Tx<store::StoreRequest> = consensus.tx_always(Shard::Store);
                let _: Rx<store::StoreReply> = consensus.rx_always(Shard::Store);
                consensus.done();
            })
            .expect("executor")
            .join()
            .expect("joins");
    }

    #[test]
    #[should_panic(expected = "another type")]
    fn an_end_asked_for_with_the_wrong_type_is_a_wiring_bug() {
        let mut ends = ConnectedEnds {
            shard: Shard::Net,
            ends: BTreeMap::from([(Side::To(Shard::Store), Box::new(5u32) as Box<dyn Any>)]),
        };
        let _: Option<String> = ends.pick(Side::To(Shard::Store));
    }

    #[test]
    #[should_panic(expected = "left ends unused")]
    fn a_shard_that_leaves_an_end_unused_is_a_wiring_bug() {
        let ends = ConnectedEnds {
            shard: Shard::Net,
            ends: BTreeMap::from([(Side::From(Shard::Store), Box::new(5u32) as Box<dyn Any>)]),
        };
        ends.done();
    }

    #[test]
    fn the_printout_names_every_link_of_the_role() {
        let plans = crate::runtime::plan(
            &crate::config::Placement::Unbound,
            Role::En.shards(),
            &[0, 1],
        )
        .expect("plan");
        let text = describe(Role::En, &plans);
        assert!(text.contains("role en"), "{text}");
        assert_eq!(
            text.matches("-->").count(),
            links(Role::En).count(),
            "{text}"
        );
        assert!(text.contains("net       --exec::BatchIn--> exec"), "{text}");
    }
}
