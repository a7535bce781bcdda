//! A silently dead path ends a peer link in seconds: what `net::set_peer_liveness` asks of the
//! kernel, shown on a real path that drops every packet.
//!
//! The test makes two network namespaces of its own joined by a veth pair (10.213.0.1/30 and
//! 10.213.0.2/30; names carry the test's pid), opens two TCP connections across it, one set
//! up as the node sets up every peer link and one with the kernel's defaults, and sends a
//! little on both every 100 ms. Then it takes the far end of the veth down: from then on every
//! packet is dropped without a word, as on a path through a middlebox that forgot the
//! connection (the fault proxy of `tests/faults.rs` cannot show this: it acknowledges what it
//! discards). The link set up like a peer link must fail within `PEER_USER_TIMEOUT` and a few
//! seconds; the default one must still count as up at that moment (TCP alone would keep
//! retransmitting for about a quarter of an hour).
//!
//! Needs root and iproute2's `ip`, so it is ignored by a plain `cargo test`; `.ci/run` runs it
//! with `cargo test --test dead_link -- --ignored`. The namespaces are removed at the end,
//! also when the test fails.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecell::net::{set_peer_liveness, PEER_USER_TIMEOUT};

/// Runs `ip` with `args`; panics with its output if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; removed when dropped.
struct Hosts {
    a: String,
    b: String,
    b_link: String,
}

impl Hosts {
    fn new() -> Hosts {
        let pid = std::process::id();
        let hosts = Hosts {
            a: format!("cc-dl-a-{pid}"),
            b: format!("cc-dl-b-{pid}"),
            b_link: format!("ccdl{pid}b"),
        };
        let a_link = format!("ccdl{pid}a");
        ip(&["netns", "add", &hosts.a]);
        ip(&["netns", "add", &hosts.b]);
        ip(&[
            "link",
            "add",
            &a_link,
            "netns",
            &hosts.a,
            "type",
            "veth",
            "peer",
            "name",
            &hosts.b_link,
            "netns",
            &hosts.b,
        ]);
        ip(&[
            "-n",
            &hosts.a,
            "addr",
            "add",
            "10.213.0.1/30",
            "dev",
            &a_link,
        ]);
        ip(&[
            "-n",
            &hosts.b,
            "addr",
            "add",
            "10.213.0.2/30",
            "dev",
            &hosts.b_link,
        ]);
        for (ns, link) in [(&hosts.a, &a_link), (&hosts.b, &hosts.b_link)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", link, "up"]);
        }
        hosts
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Moves the calling thread into network namespace `ns`.
fn enter(ns: &str) {
    let file =
        File::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
    // SAFETY: setns on an open namespace file; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

#[test]
#[ignore = "needs root and iproute2: makes network namespaces (.ci/run runs it)"]
fn a_silently_dead_path_ends_a_peer_link_within_its_user_timeout() {
    let hosts = Hosts::new();
    let server_addr: SocketAddr = "10.213.0.2:7000".parse().expect("addr");

    // Host b accepts two connections and drains them until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let (ns, stop) = (hosts.b.clone(), stop.clone());
        std::thread::spawn(move || {
            enter(&ns);
            let listener = TcpListener::bind(server_addr).expect("bind in b");
            ready_tx.send(()).expect("ready");
            let mut drains = Vec::new();
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().expect("accept");
                conn.set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let stop = stop.clone();
                drains.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while !stop.load(Ordering::Relaxed) {
                        match conn.read(&mut buf) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                }));
            }
            for d in drains {
                let _ = d.join();
            }
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("host b listens");

    // Host a: one link set up like a node's peer link, one with the kernel's defaults.
    let result = {
        let ns = hosts.a.clone();
        let b_ns = hosts.b.clone();
        let b_link = hosts.b_link.clone();
        std::thread::spawn(move || {
            enter(&ns);
            let connect = || {
                TcpStream::connect_timeout(&server_addr, Duration::from_secs(5)).expect("connect")
            };
            let mut peer_link = connect();
            set_peer_liveness(socket2::SockRef::from(&peer_link)).expect("options");
            let mut default_link = connect();
            for s in [&peer_link, &default_link] {
                s.set_write_timeout(Some(Duration::from_secs(1)))
                    .expect("timeout");
            }
            let tick = |s: &mut TcpStream| s.write_all(&[7u8; 100]);
            for _ in 0..10 {
                tick(&mut peer_link).expect("the path works");
                tick(&mut default_link).expect("the path works");
                std::thread::sleep(Duration::from_millis(100));
            }
            // The far end goes down: every packet is dropped from now on, with no reset.
            ip(&["-n", &b_ns, "link", "set", &b_link, "down"]);
            let dead_at = Instant::now();
            let deadline = dead_at + PEER_USER_TIMEOUT + Duration::from_secs(10);
            loop {
                if let Err(e) = tick(&mut peer_link) {
                    let took = dead_at.elapsed();
                    let default_still_up = tick(&mut default_link).is_ok();
                    return Ok((took, e.to_string(), default_still_up));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "the peer link still counts as up {:?} after the path died",
                        dead_at.elapsed()
                    ));
                }
                let _ = tick(&mut default_link);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .join()
        .expect("host a's thread")
    };
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    drop(hosts);

    let (took, error, default_still_up) = result.unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "the peer link failed {took:.1?} after the path died ({error}); the default link still up then: {default_still_up}"
    );
    assert!(
        took >= PEER_USER_TIMEOUT.saturating_sub(Duration::from_secs(1)),
        "failed after {took:?}: sooner than the user timeout, so not by it"
    );
    assert!(
        default_still_up,
        "a link with the kernel's defaults failed as soon: the options made no difference"
    );
}
