//! Unit tests of the sans-IO [`Registry`]: admission per tier, role and allowlist, what each
//! asker is told, registration expiry and bounds, and reloads.

use super::*;

const T0_OFFSET: Duration = Duration::from_secs(1);

fn id(n: u8) -> [u8; 20] {
    [n; 20]
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 30000 + n as u16))
}

fn directory(allow: &[u8], statics: &[(Role, u8)]) -> Directory {
    Directory {
        allowlist: allow.iter().map(|n| id(*n)).collect(),
        static_peers: statics
            .iter()
            .map(|(role, n)| DiscoveredPeer {
                role: *role,
                node_id: id(*n),
                address: addr(*n),
            })
            .collect(),
    }
}

fn registry(serves: Role, council: &[u8], allow: &[u8], statics: &[(Role, u8)]) -> Registry {
    Registry::new(
        serves,
        council.iter().map(|n| id(*n)).collect(),
        directory(allow, statics),
    )
}

fn now() -> Instant {
    Instant::now() + T0_OFFSET
}

fn ids(answer: &Answer) -> Vec<[u8; 20]> {
    let mut v: Vec<_> = answer.peers.iter().map(|p| p.node_id).collect();
    v.sort();
    v
}

#[test]
fn an_empty_allowlist_admits_no_one() {
    for serves in [Role::Cn, Role::Pn, Role::En] {
        let r = registry(serves, &[1, 2], &[], &[]);
        for role in [Role::Cn, Role::Pn, Role::En, Role::Bootnode] {
            assert!(
                r.admit(role, &id(1)).is_err(),
                "{serves:?} admitted {role:?}"
            );
        }
    }
}

#[test]
fn admission_follows_the_table() {
    // Node 1 is on every allowlist and in the council; node 9 on the allowlist only.
    let cases = [
        (Role::Cn, Role::Cn, true),
        (Role::Cn, Role::Pn, false),
        (Role::Cn, Role::En, false),
        (Role::Pn, Role::Pn, true),
        (Role::Pn, Role::En, true),
        (Role::Pn, Role::Cn, false),
        (Role::En, Role::En, true),
        (Role::En, Role::Pn, true),
        (Role::En, Role::Cn, false),
    ];
    for (serves, role, admitted) in cases {
        let r = registry(serves, &[1], &[1, 9], &[]);
        assert_eq!(
            r.admit(role, &id(1)).is_ok(),
            admitted,
            "{serves:?} bootnode, {role:?} asker"
        );
        if !admitted {
            assert_eq!(
                r.admit(role, &id(1)),
                Err(Refusal::RoleNotServed { role, serves })
            );
        }
        // A bootnode never admits another bootnode.
        assert!(r.admit(Role::Bootnode, &id(1)).is_err());
        // Off the allowlist: refused whatever the role.
        assert!(r.admit(role, &id(5)).is_err());
    }
    let r = registry(Role::Pn, &[], &[1], &[]);
    assert_eq!(r.admit(Role::Pn, &id(2)), Err(Refusal::NotOnAllowlist));
}

#[test]
fn a_cn_bootnode_admits_council_members_only() {
    // Node 9 is allowlisted but not in the council; node 3 in the council but not allowlisted.
    let r = registry(Role::Cn, &[1, 2, 3], &[1, 2, 9], &[]);
    assert!(r.admit(Role::Cn, &id(1)).is_ok());
    assert_eq!(r.admit(Role::Cn, &id(9)), Err(Refusal::NotCouncilMember));
    assert_eq!(r.admit(Role::Cn, &id(3)), Err(Refusal::NotOnAllowlist));
}

#[test]
fn a_cn_is_told_the_other_registered_cns() {
    let mut r = registry(Role::Cn, &[1, 2, 3], &[1, 2, 3], &[(Role::Cn, 3)]);
    let t = now();
    let a = r.query(t, Role::Cn, id(1), Some(addr(1)), 0).unwrap();
    assert_eq!(a.registration, RegistrationOutcome::Registered);
    assert_eq!(ids(&a), vec![id(3)], "the static CN, not itself");
    let b = r.query(t, Role::Cn, id(2), Some(addr(2)), 0).unwrap();
    assert_eq!(ids(&b), vec![id(1), id(3)]);
    assert_eq!(
        b.peers.iter().find(|p| p.node_id == id(1)).unwrap().address,
        addr(1)
    );
    let again = r.query(t, Role::Cn, id(1), None, 0).unwrap();
    assert_eq!(again.registration, RegistrationOutcome::NotAsked);
    assert_eq!(ids(&again), vec![id(2), id(3)]);
}

#[test]
fn a_pn_is_told_pns_and_ens_and_an_en_the_pns() {
    // PN bootnode: PNs 1, 2 and EN 5 allowlisted.
    let mut r = registry(Role::Pn, &[], &[1, 2, 5], &[(Role::Pn, 7)]);
    let t = now();
    r.query(t, Role::Pn, id(1), Some(addr(1)), 0).unwrap();
    let en = r.query(t, Role::En, id(5), Some(addr(5)), 0).unwrap();
    assert_eq!(en.registration, RegistrationOutcome::Registered);
    assert_eq!(ids(&en), vec![id(1), id(7)], "an EN is told the PNs");
    let pn = r.query(t, Role::Pn, id(2), Some(addr(2)), 0).unwrap();
    assert_eq!(
        ids(&pn),
        vec![id(1), id(5), id(7)],
        "a PN is told PNs and ENs"
    );
    let roles: Vec<Role> = pn.peers.iter().map(|p| p.role).collect();
    assert!(roles.contains(&Role::En) && roles.contains(&Role::Pn));

    // EN bootnode: ENs ask (and are not registered), PNs register.
    let mut r = registry(Role::En, &[], &[1, 5, 6], &[(Role::Pn, 7)]);
    let pn = r.query(t, Role::Pn, id(1), Some(addr(1)), 0).unwrap();
    assert_eq!(pn.registration, RegistrationOutcome::Registered);
    let en = r.query(t, Role::En, id(5), Some(addr(5)), 0).unwrap();
    assert_eq!(en.registration, RegistrationOutcome::NotTaken);
    assert_eq!(ids(&en), vec![id(1), id(7)], "registered and static PNs");
    let other_en = r.query(t, Role::En, id(6), None, 0).unwrap();
    assert_eq!(
        ids(&other_en),
        vec![id(1), id(7)],
        "ENs are never handed out here"
    );
}

#[test]
fn a_registration_replaces_the_static_address_and_expires() {
    let mut r = registry(Role::En, &[], &[1, 5], &[(Role::Pn, 1)]);
    let t = now();
    let moved = SocketAddr::from(([10, 9, 9, 9], 40000));
    r.query(t, Role::Pn, id(1), Some(moved), 0).unwrap();
    let a = r.query(t, Role::En, id(5), None, 0).unwrap();
    assert_eq!(a.peers.len(), 1, "one entry per node id");
    assert_eq!(a.peers[0].address, moved, "the registered address wins");

    // Refreshed just before the TTL, it lives on; untouched past it, it is gone.
    let late = t + REGISTRATION_TTL - Duration::from_secs(1);
    r.query(late, Role::Pn, id(1), Some(moved), 0).unwrap();
    assert_eq!(r.expire(t + REGISTRATION_TTL), 0);
    assert_eq!(r.registered(), 1);
    assert_eq!(r.expire(late + REGISTRATION_TTL), 1);
    assert_eq!(r.registered(), 0);
    let a = r
        .query(late + REGISTRATION_TTL, Role::En, id(5), None, 0)
        .unwrap();
    assert_eq!(a.peers[0].address, addr(1), "back to the static address");
}

#[test]
fn expired_registrations_are_not_told() {
    let mut r = registry(Role::Pn, &[], &[1, 2], &[]);
    let t = now();
    r.query(t, Role::Pn, id(1), Some(addr(1)), 0).unwrap();
    let a = r
        .query(t + REGISTRATION_TTL, Role::Pn, id(2), None, 0)
        .unwrap();
    assert!(a.peers.is_empty());
}

#[test]
fn registrations_and_answers_are_bounded() {
    let count = MAX_REGISTRATIONS + 1;
    let node = |i: usize| -> [u8; 20] {
        let mut n = [0u8; 20];
        n[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        n
    };
    let mut r = Registry::new(
        Role::Pn,
        BTreeSet::new(),
        Directory {
            allowlist: (0..count).map(node).collect(),
            static_peers: vec![],
        },
    );
    let t = now();
    for i in 0..MAX_REGISTRATIONS {
        let a = r.query(t, Role::Pn, node(i), Some(addr(1)), 0).unwrap();
        assert_eq!(a.registration, RegistrationOutcome::Registered);
        assert!(a.peers.len() <= MAX_PEER_LIST);
    }
    let last = node(MAX_REGISTRATIONS);
    let full = r.query(t, Role::Pn, last, Some(addr(1)), 0).unwrap();
    assert_eq!(full.registration, RegistrationOutcome::Full);
    assert_eq!(full.peers.len(), MAX_PEER_LIST);
    assert_eq!(r.registered(), MAX_REGISTRATIONS);
    // A registered node may still refresh when the table is full.
    let refresh = r.query(t, Role::Pn, node(0), Some(addr(2)), 0).unwrap();
    assert_eq!(refresh.registration, RegistrationOutcome::Registered);
    // The rotation spreads askers over the whole list.
    let first = r.query(t, Role::Pn, last, None, 0).unwrap();
    let second = r.query(t, Role::Pn, last, None, 1).unwrap();
    assert_ne!(first.peers[0], second.peers[0]);
    let mut union = BTreeSet::new();
    for rotation in (0..count as u64).step_by(MAX_PEER_LIST) {
        let a = r.query(t, Role::Pn, last, None, rotation).unwrap();
        union.extend(a.peers.iter().map(|p| p.node_id));
    }
    assert_eq!(
        union.len(),
        MAX_REGISTRATIONS,
        "every registered node is handed out"
    );
}

#[test]
fn a_reload_drops_removed_nodes_at_once() {
    let mut r = registry(Role::Pn, &[], &[1, 2, 3], &[]);
    let t = now();
    for n in [1, 2, 3] {
        r.query(t, Role::Pn, id(n), Some(addr(n)), 0).unwrap();
    }
    assert_eq!(r.registered(), 3);
    let change = r.set_directory(directory(&[1, 3, 4], &[]));
    assert_eq!(change.added, vec![id(4)]);
    assert_eq!(change.removed, vec![id(2)]);
    assert_eq!(change.dropped_registrations, 1);
    assert_eq!(r.registered(), 2);
    assert_eq!(r.admit(Role::Pn, &id(2)), Err(Refusal::NotOnAllowlist));
    assert!(r.query(t, Role::Pn, id(2), None, 0).is_err());
    let a = r.query(t, Role::Pn, id(4), None, 0).unwrap();
    assert_eq!(
        ids(&a),
        vec![id(1), id(3)],
        "the removed node is no longer told"
    );
    // Emptying the allowlist closes the bootnode entirely.
    let change = r.set_directory(Directory::default());
    assert_eq!(change.dropped_registrations, 2);
    assert!(r.admit(Role::Pn, &id(1)).is_err());
}

#[test]
fn listen_addresses_must_be_dialable() {
    assert!(check_listen_address(addr(1)).is_ok());
    assert!(check_listen_address("[2001:db8::1]:30000".parse().unwrap()).is_ok());
    for bad in [
        "0.0.0.0:30000",
        "[::]:30000",
        "10.0.0.1:0",
        "224.0.0.1:30000",
        "255.255.255.255:30000",
        "[ff02::1]:30000",
    ] {
        assert!(check_listen_address(bad.parse().unwrap()).is_err(), "{bad}");
    }
}

#[test]
fn records_are_checked_on_receipt() {
    let ok = PeerRecord::new(Role::Pn.to_byte(), id(1), addr(1));
    let archived = |r: PeerRecord| {
        let list = PeerList { peers: vec![r] };
        crate::types::to_bytes(&list)
    };
    let check = |r: PeerRecord| {
        let bytes = archived(r);
        let list =
            rkyv::access::<crate::types::network::ArchivedPeerList, rkyv::rancor::Error>(&bytes)
                .expect("valid archive");
        DiscoveredPeer::from_record(&list.peers[0])
    };
    assert_eq!(
        check(ok),
        Ok(DiscoveredPeer {
            role: Role::Pn,
            node_id: id(1),
            address: addr(1)
        })
    );
    let with = |f: &dyn Fn(&mut PeerRecord)| {
        let mut r = ok;
        f(&mut r);
        r
    };
    assert!(check(with(&|r| r.role = 0)).is_err());
    assert!(check(with(&|r| r.role = 99)).is_err());
    assert!(check(with(&|r| r.role = Role::Bootnode.to_byte())).is_err());
    assert!(check(with(&|r| r.port = 0)).is_err());
    assert!(check(with(&|r| r.ip = [0; 16])).is_err());
    assert!(check(with(&|r| r.ip = crate::types::network::ip_to_wire(
        std::net::Ipv4Addr::UNSPECIFIED.into()
    )))
    .is_err());
}
