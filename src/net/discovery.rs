//! Whom the net shard dials: the static peers, the nodes bootnodes name, permission reloads
//! (SIGHUP), and the dial loops with their backoff.

use super::*;

/// Applies reloaded permissions: the new allowlist admits from now on, links of peers it no
/// longer names are closed (without a ban), new static peers are dialed and dropped ones no
/// longer; what changed is logged.
pub(super) fn apply_permissions(state: &Shared, new: Permissions) {
    let dial = {
        let mut s = state.borrow_mut();
        let added = new.allowlist.difference(&s.config.allowlist).count();
        let removed = s.config.allowlist.difference(&new.allowlist).count();
        let old_peers: BTreeSet<[u8; 20]> = s.config.dial.iter().map(|t| t.node_id).collect();
        let new_peers: BTreeSet<[u8; 20]> = new.dial.iter().map(|t| t.node_id).collect();
        let peers_added = new_peers.difference(&old_peers).count();
        let peers_removed = old_peers.difference(&new_peers).count();
        s.config.allowlist = new.allowlist;
        s.config.dial = new.dial;
        let gone: Vec<PeerSlot> = s
            .peers
            .iter()
            .filter(|(_, p)| !s.config.allowlist.contains(&p.node_id))
            .map(|(slot, _)| *slot)
            .collect();
        for slot in &gone {
            // Dropping the outbox ends the link's writer, which closes the connection.
            s.peers.remove(slot);
        }
        if !gone.is_empty() {
            s.publish_peers();
        }
        let addresses: Vec<std::net::IpAddr> =
            s.config.dial.iter().map(|t| t.address.ip()).collect();
        s.known_addresses.extend(addresses);
        tracing::info!(
            allowlist = s.config.allowlist.len(),
            allowlist_added = added,
            allowlist_removed = removed,
            peers_added,
            peers_removed,
            links_closed = gone.len(),
            "permissions reloaded (SIGHUP)"
        );
        let dial: Vec<DialTarget> = s
            .config
            .dial
            .iter()
            .filter(|t| s.config.dials(t))
            .cloned()
            .collect();
        dial
    };
    for target in dial {
        start_dialing(state, target);
    }
}

/// Whether a dial loop for `target` should go on: it is still allowlisted, and still a
/// static peer or one a bootnode named.
pub(super) fn still_dialed(state: &Shared, target: &DialTarget) -> bool {
    let s = state.borrow();
    s.config.allowlist.contains(&target.node_id)
        && (s.config.dial.iter().any(|t| t == target) || s.discovered.contains(&target.node_id))
}

/// Starts a dial loop for `target` unless one runs already.
pub(super) fn start_dialing(state: &Shared, target: DialTarget) {
    if state.borrow_mut().dialing.insert(target.node_id) {
        glommio::spawn_local(dial_loop(state.clone(), target)).detach();
    }
}

/// Registers with the bootnodes and dials the peers they name, for as long as the shard runs:
/// again every [`bootnode::REGISTRATION_REFRESH`] (so the registration stays fresh and new
/// peers are found), or after [`BOOTNODE_RETRY`] when a bootnode could not be asked or did not
/// admit this node. A named peer is dialed only when the dial rule says this node dials it;
/// the handshake still checks it against the allowlist (a bootnode cannot widen it).
pub(super) async fn discover(state: Shared, bootnodes: Vec<crate::config::node::PeerEntry>) {
    loop {
        let (secret, chain_id, role, listen) = {
            let s = state.borrow();
            (
                s.config.secret.clone(),
                s.config.chain_id,
                s.config.role,
                s.config.listen,
            )
        };
        let mut all_answered = true;
        for b in &bootnodes {
            match bootnode::query_bootnode(b, &secret, chain_id, role, Some(listen)).await {
                Ok(peers) => {
                    tracing::debug!(bootnode = %b.name, peers = peers.len(), "bootnode answered");
                    let pns = peers.iter().filter(|p| p.role == Role::Pn).count();
                    if role == Role::En && pns < 2 {
                        tracing::warn!(bootnode = %b.name, pns, "the bootnode names fewer than two PNs: this EN has no PN to fail over to");
                    }
                    for p in peers {
                        let mut s = state.borrow_mut();
                        if s.known_addresses.len() < MAX_KNOWN_ADDRESSES {
                            s.known_addresses.insert(p.address.ip());
                        }
                        drop(s);
                        let target = DialTarget {
                            role: p.role,
                            node_id: p.node_id,
                            address: p.address,
                        };
                        state.borrow_mut().discovered.insert(target.node_id);
                        let dials = state.borrow().config.dials(&target);
                        if dials {
                            start_dialing(&state, target);
                        }
                    }
                }
                Err(e) => {
                    all_answered = false;
                    tracing::warn!(bootnode = %b.name, address = %b.address, error = %e, "bootnode query failed");
                }
            }
        }
        let wait = if all_answered {
            bootnode::REGISTRATION_REFRESH
        } else {
            BOOTNODE_RETRY
        };
        glommio::timer::sleep(wait).await;
    }
}

/// The slot `target` has once connected (council index or tier slot), without assigning one.
pub(super) fn connected_slot(state: &Shared, target: &DialTarget) -> Option<PeerSlot> {
    let s = state.borrow();
    let slot = if target.role == Role::Cn {
        s.config
            .council
            .iter()
            .position(|id| *id == target.node_id)
            .map(|i| i as PeerSlot)
    } else {
        s.tier_slots.get(&target.node_id).copied()
    }?;
    s.peers.contains_key(&slot).then_some(slot)
}

pub(super) async fn dial_loop(state: Shared, target: DialTarget) {
    let mut backoff = DIAL_BACKOFF_MIN;
    loop {
        if state.borrow().stop.load(Relaxed) {
            return;
        }
        if !still_dialed(&state, &target) {
            // Dropped by a permission reload: stop (a later reload may start it again).
            state.borrow_mut().dialing.remove(&target.node_id);
            return;
        }
        if connected_slot(&state, &target).is_none() {
            let attempt = within(HANDSHAKE_TIMEOUT, TcpStream::connect(target.address)).await;
            if let Some(Ok(mut stream)) = attempt {
                match run_handshake(&state, &mut stream, Side::Dialer, Some(&target)).await {
                    Ok(identity) => {
                        backoff = DIAL_BACKOFF_MIN;
                        run_peer(state.clone(), stream, identity).await;
                        continue;
                    }
                    Err(reason) => {
                        tracing::info!(peer = %target.address, role = target.role.name(), %reason, "outbound handshake failed");
                    }
                }
            }
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(DIAL_BACKOFF_MAX);
        } else {
            glommio::timer::sleep(DIAL_BACKOFF_MAX).await;
        }
    }
}
