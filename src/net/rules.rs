//! The net shard's rules, without I/O: who may connect ([`admit`]), what a peer may send and
//! where it goes ([`route`], [`relay_upstream`]), how often a peer may ask for sync
//! ([`SyncBudget`]), who is banned and until when ([`Bans`]), and which ingress client loses
//! its slot when every slot is taken ([`IngressSlots`]).
//!
//! The shard's tasks (`super`) own the sockets and call these; time enters as an argument, so
//! every rule is unit-tested here in milliseconds rather than through whole processes. The
//! tables these rules implement are in the module doc of [`super`].
//!
//! Invariants: a refused peer is never counted; an ingress slot is held by at most one open
//! connection, and the count of held slots never exceeds [`super::MAX_INGRESS_CONNECTIONS`]
//! (checked on every change).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::Role;
use crate::exec::BatchOrigin;
use crate::types::FrameKind;

/// A node's id (keccak-256 of its BLS public key, first 20 bytes).
pub type NodeId = [u8; 20];

/// Whether a node of role `me` connects to a peer of role `peer` at all.
pub fn talks(me: Role, peer: Role) -> bool {
    matches!(
        (me, peer),
        (Role::Cn, Role::Cn | Role::Pn)
            | (Role::Pn, Role::Cn | Role::Pn | Role::En)
            | (Role::En, Role::Pn)
    )
}

/// What a node knows when it decides whom to admit.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    /// This node's role.
    pub me: Role,
    /// The genesis council's node ids (a peer claiming the CN role must be one).
    pub council: &'a [NodeId],
    /// The node ids admitted (fail closed: an empty list admits no one).
    pub allowlist: &'a BTreeSet<NodeId>,
}

/// Whether a peer that proved `node_id` in `role` may connect; `expected` is the node id and
/// role this node dialed, when it dialed. `Err` says why not.
pub fn admit(
    gate: Gate<'_>,
    bans: &mut Bans,
    role: Role,
    node_id: &NodeId,
    expected: Option<(Role, NodeId)>,
    now: Instant,
) -> Result<(), String> {
    if let Some((expected_role, expected_id)) = expected {
        if expected_id != *node_id || expected_role != role {
            return Err(format!(
                "dialed {} {} but {} {} answered",
                expected_role.name(),
                crate::config::to_hex(&expected_id),
                role.name(),
                crate::config::to_hex(node_id)
            ));
        }
    }
    if !talks(gate.me, role) {
        return Err(format!(
            "a {} does not connect to a {}",
            gate.me.name(),
            role.name()
        ));
    }
    if role == Role::Cn && !gate.council.contains(node_id) {
        return Err("claims the CN role but is not a council member".into());
    }
    if !gate.allowlist.contains(node_id) {
        return Err("not on the allowlist".into());
    }
    if bans.is_banned(node_id, now) {
        return Err("banned for an earlier violation".into());
    }
    Ok(())
}

/// Where a frame from an admitted peer goes (the "what flows" table of [`super`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A consensus message in the CN mesh, for the consensus shard; its signer must be the
    /// peer itself (no relaying in the mesh).
    Consensus,
    /// A transaction batch for the exec shard.
    Exec(BatchOrigin),
    /// A finalized block down the tiers, for the follower.
    Follower,
    /// PN: a transaction batch to relay upstream ([`relay_upstream`]).
    RelayUp,
    /// A sync request, for the store shard (within the peer's [`SyncBudget`]).
    SyncServe,
}

/// Where a frame of `kind` from a peer of role `from` goes on a node of role `me`; `None`:
/// the peer may not send it, a violation.
pub fn route(me: Role, from: Role, kind: FrameKind) -> Option<Route> {
    use FrameKind as K;
    use Role::{Cn, En, Pn};
    Some(match (me, from, kind) {
        (Cn, Cn, K::Proposal | K::Vote | K::RoundChange | K::FinalizedBlock) => Route::Consensus,
        (Cn, Cn, K::TxBatch) => Route::Exec(BatchOrigin::Peer),
        (Cn, Pn, K::TxBatch) => Route::Exec(BatchOrigin::Relay),
        (Pn, Cn | Pn, K::FinalizedBlock) | (En, Pn, K::FinalizedBlock) => Route::Follower,
        (Pn, En | Pn, K::TxBatch) => Route::RelayUp,
        (Cn, Cn | Pn, K::SyncRequest) | (Pn, Pn | En, K::SyncRequest) => Route::SyncServe,
        _ => return None,
    })
}

/// The roles a PN relays a transaction batch from a peer of role `from` to: its CN when
/// connected to it; without one, an EN's batch goes to the other PNs (a PN's batch is never
/// passed to other PNs, so nothing loops). `None`: nowhere, the batch is dropped.
pub fn relay_upstream(
    from: Role,
    cn_connected: bool,
    pn_connected: bool,
) -> Option<&'static [Role]> {
    if cn_connected {
        Some(&[Role::Cn])
    } else if from == Role::En && pn_connected {
        Some(&[Role::Pn])
    } else {
        None
    }
}

/// One peer connection's sync budget: at most one sync request served per `interval`.
#[derive(Debug, Clone, Default)]
pub struct SyncBudget {
    last: Option<Instant>,
}

impl SyncBudget {
    /// Whether a request at `now` is served (and, if so, it is charged).
    pub fn take(&mut self, now: Instant, interval: Duration) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Banned node ids, each until an instant. Only authenticated peers are banned, so the table
/// holds at most the allowlist (and the council).
#[derive(Debug, Clone, Default)]
pub struct Bans {
    until: HashMap<NodeId, Instant>,
}

impl Bans {
    /// Bans `node_id` for `length` from `now` (a later ban replaces an earlier one).
    pub fn ban(&mut self, node_id: NodeId, now: Instant, length: Duration) {
        self.until.insert(node_id, now + length);
    }

    /// Whether `node_id` is banned at `now`; an expired ban is forgotten.
    pub fn is_banned(&mut self, node_id: &NodeId, now: Instant) -> bool {
        match self.until.get(node_id) {
            Some(until) if *until > now => true,
            Some(_) => {
                self.until.remove(node_id);
                false
            }
            None => false,
        }
    }
}

/// What [`IngressSlots::take`] decided for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotGrant {
    /// It holds a slot.
    Granted,
    /// It holds the slot of this connection, which must be closed.
    Evicting(u64),
    /// No slot: close it.
    Refused,
}

#[derive(Debug, Clone)]
struct IngressSlot {
    remote: Option<IpAddr>,
    /// When it last completed a frame (or connected).
    last_frame: Instant,
}

/// The ingress port's connection slots: at most `max` connections, `max_per_address` from one
/// address; when every slot is taken, a newcomer takes the slot of the connection that has
/// gone longest without a whole frame, if that is at least `evictable_idle`.
#[derive(Debug, Clone)]
pub struct IngressSlots {
    max: usize,
    max_per_address: usize,
    evictable_idle: Duration,
    slots: HashMap<u64, IngressSlot>,
    by_address: HashMap<IpAddr, usize>,
}

impl IngressSlots {
    /// No slot held yet.
    pub fn new(max: usize, max_per_address: usize, evictable_idle: Duration) -> IngressSlots {
        assert!(max > 0 && max_per_address > 0);
        IngressSlots {
            max,
            max_per_address,
            evictable_idle,
            slots: HashMap::new(),
            by_address: HashMap::new(),
        }
    }

    /// Slots held.
    pub fn held(&self) -> usize {
        self.slots.len()
    }

    /// A slot for new connection `connection` from `remote` at `now`.
    pub fn take(&mut self, connection: u64, remote: Option<IpAddr>, now: Instant) -> SlotGrant {
        assert!(
            !self.slots.contains_key(&connection),
            "connection numbers are fresh"
        );
        let from_remote = remote.map_or(0, |ip| self.by_address.get(&ip).copied().unwrap_or(0));
        if from_remote >= self.max_per_address {
            return SlotGrant::Refused;
        }
        let mut grant = SlotGrant::Granted;
        if self.slots.len() >= self.max {
            let victim = self
                .slots
                .iter()
                .filter(|(_, s)| now.saturating_duration_since(s.last_frame) >= self.evictable_idle)
                .min_by_key(|(c, s)| (s.last_frame, **c))
                .map(|(c, _)| *c);
            let Some(victim) = victim else {
                return SlotGrant::Refused;
            };
            self.release(victim);
            grant = SlotGrant::Evicting(victim);
        }
        self.slots.insert(
            connection,
            IngressSlot {
                remote,
                last_frame: now,
            },
        );
        if let Some(ip) = remote {
            *self.by_address.entry(ip).or_default() += 1;
        }
        self.check();
        grant
    }

    /// Connection `connection` completed a frame at `now` (no-op if it holds no slot).
    pub fn frame_completed(&mut self, connection: u64, now: Instant) {
        if let Some(slot) = self.slots.get_mut(&connection) {
            slot.last_frame = now;
        }
    }

    /// Gives back `connection`'s slot; false if it held none (it was evicted).
    pub fn release(&mut self, connection: u64) -> bool {
        let Some(slot) = self.slots.remove(&connection) else {
            return false;
        };
        if let Some(ip) = slot.remote {
            if let Some(n) = self.by_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.by_address.remove(&ip);
                }
            }
        }
        self.check();
        true
    }

    fn check(&self) {
        assert!(
            self.slots.len() <= self.max,
            "more ingress slots held than exist"
        );
        debug_assert_eq!(
            self.by_address.values().sum::<usize>(),
            self.slots.values().filter(|s| s.remote.is_some()).count(),
            "per-address counts match the slots"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CN0: NodeId = [1; 20];
    const CN1: NodeId = [2; 20];
    const PN0: NodeId = [3; 20];
    const EN0: NodeId = [4; 20];
    const STRANGER: NodeId = [9; 20];

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    fn allowlist(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn the_tiers_connect_as_the_table_says() {
        use Role::*;
        let yes = [(Cn, Cn), (Cn, Pn), (Pn, Cn), (Pn, Pn), (Pn, En), (En, Pn)];
        for me in [Cn, Pn, En, Bootnode] {
            for peer in [Cn, Pn, En, Bootnode] {
                assert_eq!(
                    talks(me, peer),
                    yes.contains(&(me, peer)),
                    "{me:?} {peer:?}"
                );
            }
        }
    }

    #[test]
    fn admission_checks_role_council_allowlist_and_bans_in_that_order() {
        let council = [CN0, CN1];
        let list = allowlist(&[CN1, PN0, EN0]);
        let cn = Gate {
            me: Role::Cn,
            council: &council,
            allowlist: &list,
        };
        let mut bans = Bans::default();
        let now = Instant::now();
        assert_eq!(admit(cn, &mut bans, Role::Cn, &CN1, None, now), Ok(()));
        assert_eq!(admit(cn, &mut bans, Role::Pn, &PN0, None, now), Ok(()));
        let why = |r: Result<(), String>| r.expect_err("refused");
        assert!(why(admit(cn, &mut bans, Role::En, &EN0, None, now)).contains("does not connect"));
        assert!(
            why(admit(cn, &mut bans, Role::Cn, &PN0, None, now)).contains("not a council member")
        );
        assert!(why(admit(cn, &mut bans, Role::Cn, &CN0, None, now)).contains("allowlist"));
        assert!(why(admit(cn, &mut bans, Role::Pn, &STRANGER, None, now)).contains("allowlist"));
        // Who answers a dial must be whom this node dialed.
        let dialed = Some((Role::Cn, CN0));
        assert!(why(admit(cn, &mut bans, Role::Cn, &CN1, dialed, now)).contains("dialed"));
        // An empty allowlist admits no one.
        let empty = BTreeSet::new();
        let closed = Gate {
            allowlist: &empty,
            ..cn
        };
        assert!(why(admit(closed, &mut bans, Role::Cn, &CN1, None, now)).contains("allowlist"));
        // A ban refuses until it expires.
        bans.ban(PN0, now, Duration::from_secs(60));
        assert!(why(admit(cn, &mut bans, Role::Pn, &PN0, None, now)).contains("banned"));
        let later = now + Duration::from_secs(61);
        assert_eq!(admit(cn, &mut bans, Role::Pn, &PN0, None, later), Ok(()));
    }

    #[test]
    fn bans_expire_and_are_forgotten() {
        let mut bans = Bans::default();
        let now = Instant::now();
        bans.ban(PN0, now, Duration::from_secs(10));
        assert!(bans.is_banned(&PN0, now + Duration::from_secs(9)));
        assert!(!bans.is_banned(&EN0, now));
        assert!(!bans.is_banned(&PN0, now + Duration::from_secs(10)));
        assert!(bans.until.is_empty(), "an expired ban is forgotten");
        // A later ban replaces an earlier one.
        bans.ban(PN0, now, Duration::from_secs(1));
        bans.ban(PN0, now, Duration::from_secs(100));
        assert!(bans.is_banned(&PN0, now + Duration::from_secs(50)));
    }

    #[test]
    fn every_frame_kind_from_every_tier_goes_where_the_table_says() {
        use FrameKind as K;
        use Role::*;
        let kinds = [
            K::Proposal,
            K::Vote,
            K::RoundChange,
            K::FinalizedBlock,
            K::TxBatch,
            K::IngressAck,
            K::SyncRequest,
            K::PeerQuery,
            K::PeerList,
        ];
        let mut allowed = 0;
        for me in [Cn, Pn, En] {
            for from in [Cn, Pn, En, Bootnode] {
                for kind in kinds {
                    let r = route(me, from, kind);
                    if r.is_some() {
                        allowed += 1;
                        assert!(
                            talks(me, from),
                            "{me:?} routes from {from:?}, whom it never admits"
                        );
                    }
                    // Consensus messages only inside the mesh.
                    if r == Some(Route::Consensus) {
                        assert_eq!((me, from), (Cn, Cn));
                    }
                    // Nobody takes acks or bootnode frames from a peer.
                    if matches!(kind, K::IngressAck | K::PeerQuery | K::PeerList) {
                        assert_eq!(r, None, "{me:?} from {from:?}: {kind:?}");
                    }
                }
            }
        }
        assert_eq!(
            allowed, 15,
            "the table has 15 allowed (node, peer, frame) entries"
        );
        assert_eq!(
            route(Cn, Cn, K::TxBatch),
            Some(Route::Exec(BatchOrigin::Peer))
        );
        assert_eq!(
            route(Cn, Pn, K::TxBatch),
            Some(Route::Exec(BatchOrigin::Relay))
        );
        assert_eq!(route(Cn, Pn, K::Vote), None, "a PN never votes");
        assert_eq!(
            route(Cn, Pn, K::FinalizedBlock),
            None,
            "blocks flow down, not up"
        );
        assert_eq!(route(Pn, En, K::FinalizedBlock), None);
        assert_eq!(route(Pn, Cn, K::FinalizedBlock), Some(Route::Follower));
        assert_eq!(route(En, Pn, K::FinalizedBlock), Some(Route::Follower));
        assert_eq!(route(Pn, En, K::TxBatch), Some(Route::RelayUp));
        assert_eq!(
            route(Pn, Cn, K::TxBatch),
            None,
            "a CN never sends a PN transactions"
        );
        assert_eq!(route(En, Pn, K::TxBatch), None);
        assert_eq!(route(En, Pn, K::SyncRequest), None, "an EN serves no sync");
        assert_eq!(
            route(Pn, Cn, K::SyncRequest),
            None,
            "a CN asks the mesh, not its PN"
        );
    }

    #[test]
    fn a_pn_relays_up_to_its_cn_and_without_one_only_an_ens_batches_sideways() {
        assert_eq!(relay_upstream(Role::En, true, true), Some(&[Role::Cn][..]));
        assert_eq!(relay_upstream(Role::Pn, true, false), Some(&[Role::Cn][..]));
        assert_eq!(relay_upstream(Role::En, false, true), Some(&[Role::Pn][..]));
        assert_eq!(
            relay_upstream(Role::Pn, false, true),
            None,
            "nothing loops among PNs"
        );
        assert_eq!(relay_upstream(Role::En, false, false), None);
    }

    #[test]
    fn a_peer_gets_one_sync_request_served_per_interval() {
        let mut budget = SyncBudget::default();
        let t = Instant::now();
        let interval = Duration::from_millis(200);
        assert!(budget.take(t, interval));
        assert!(!budget.take(t + Duration::from_millis(199), interval));
        assert!(budget.take(t + Duration::from_millis(200), interval));
        // A refused request is not charged: the next interval counts from the last served.
        assert!(!budget.take(t + Duration::from_millis(300), interval));
        assert!(budget.take(t + Duration::from_millis(400), interval));
    }

    #[test]
    fn ingress_slots_are_bounded_per_address_and_in_total() {
        let t = Instant::now();
        let mut slots = IngressSlots::new(4, 2, Duration::from_secs(1));
        assert_eq!(slots.take(1, ip(1), t), SlotGrant::Granted);
        assert_eq!(slots.take(2, ip(1), t), SlotGrant::Granted);
        assert_eq!(
            slots.take(3, ip(1), t),
            SlotGrant::Refused,
            "two per address"
        );
        assert_eq!(slots.take(4, ip(2), t), SlotGrant::Granted);
        assert_eq!(slots.take(5, None, t), SlotGrant::Granted);
        assert_eq!(slots.held(), 4);
        // Full, and nobody idle long enough: refused.
        assert_eq!(slots.take(6, ip(3), t), SlotGrant::Refused);
        assert!(slots.release(2));
        assert!(!slots.release(2), "a slot is given back once");
        assert_eq!(
            slots.take(7, ip(1), t),
            SlotGrant::Granted,
            "the address has room again"
        );
    }

    #[test]
    fn a_newcomer_takes_the_slot_of_the_longest_idle_client_once_it_is_evictable() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut slots = IngressSlots::new(3, 3, ms(1000));
        for c in 1..=3 {
            assert_eq!(slots.take(c, ip(c as u8), t), SlotGrant::Granted);
        }
        slots.frame_completed(1, t + ms(500));
        slots.frame_completed(3, t + ms(300));
        // Client 2 has been idle 900 ms: not yet evictable.
        assert_eq!(slots.take(4, ip(9), t + ms(900)), SlotGrant::Refused);
        // At 1000 ms client 2 (idle longest, since t) goes; then 3 (since 300 ms).
        assert_eq!(slots.take(4, ip(9), t + ms(1000)), SlotGrant::Evicting(2));
        assert!(
            !slots.release(2),
            "the evicted connection holds no slot any more"
        );
        assert_eq!(slots.take(5, ip(9), t + ms(1300)), SlotGrant::Evicting(3));
        assert_eq!(slots.held(), 3);
        // The newcomers are fresh: nobody is evictable until they idle.
        assert_eq!(slots.take(6, ip(8), t + ms(1400)), SlotGrant::Refused);
    }
}
