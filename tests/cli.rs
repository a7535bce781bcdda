//! The `corecell` binary as an operator uses it: keys, genesis, node --check, and the argument
//! checks of testnet, testnet --sweep and bench (which fail fast, before any network or file).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn corecell(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corecell"))
        .args(args)
        .output()
        .expect("run corecell")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn keys_new_writes_a_0600_key_and_never_overwrites_silently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.toml");
    let k = key.to_str().expect("utf-8 path");
    let out = corecell(&["keys", "new", "--out", k]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::metadata(&key).expect("stat").permissions().mode() & 0o777,
        0o600
    );
    let first = std::fs::read_to_string(&key).expect("read");

    let again = corecell(&["keys", "new", "--out", k]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(&key).expect("read"),
        first,
        "the key is untouched"
    );

    let show = corecell(&["keys", "show", "--key", k]);
    assert!(show.status.success(), "{}", text(&show));
    let node_id = first
        .lines()
        .find(|l| l.starts_with("node_id"))
        .expect("node_id line");
    let id = node_id.split('"').nth(1).expect("quoted id");
    assert!(text(&show).contains(id));

    let forced = corecell(&["keys", "new", "--out", k, "--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert_ne!(
        std::fs::read_to_string(&key).expect("read"),
        first,
        "a new key"
    );
}

#[test]
fn genesis_writes_configs_that_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("net");
    let out = corecell(&[
        "genesis",
        "--cns",
        "4",
        "--pns",
        "1",
        "--ens",
        "1",
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--base-port",
        "41000",
        "--accounts",
        "20",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    for name in [
        "cn0", "cn1", "cn2", "cn3", "pn0", "en0", "boot-pn", "boot-en",
    ] {
        let config = out_dir.join(name).join("config.toml");
        let check = corecell(&[
            "node",
            "--config",
            config.to_str().expect("utf-8"),
            "--check",
        ]);
        assert!(check.status.success(), "{name}: {}", text(&check));
        assert!(text(&check).contains("config ok"), "{name}");
    }
    assert!(Path::new(&out_dir.join("accounts.json")).is_file());
    // Each role's topology: a PN has no exec shard, so none of the exec links.
    for (name, links) in [("cn0", 11), ("pn0", 6), ("en0", 11)] {
        let config = out_dir.join(name).join("config.toml");
        let printed = corecell(&[
            "node",
            "--config",
            config.to_str().expect("utf-8"),
            "--print-topology",
        ]);
        assert!(printed.status.success(), "{name}: {}", text(&printed));
        let printed = text(&printed);
        assert_eq!(printed.matches("-->").count(), links, "{name}: {printed}");
        assert_eq!(
            printed.contains("--exec::"),
            name != "pn0",
            "{name}: {printed}"
        );
    }
}

#[test]
fn a_broken_config_fails_check_naming_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("net");
    let out = corecell(&[
        "genesis",
        "--cns",
        "1",
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--base-port",
        "42000",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let config = out_dir.join("cn0/config.toml");
    let body = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        body.replace("io_memory_kib = 2048", "io_memory_kib = 99999999"),
    )
    .expect("write");
    let check = corecell(&[
        "node",
        "--config",
        config.to_str().expect("utf-8"),
        "--check",
    ]);
    assert_eq!(check.status.code(), Some(1));
    let msg = text(&check);
    assert!(
        msg.contains("error:")
            && msg.contains("cn0/config.toml")
            && msg.contains("runtime.io_memory_kib"),
        "{msg}"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let out = corecell(&["genesis", "--cns", "many", "--out", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = corecell(&[
        "genesis",
        "--cns",
        "2",
        "--ens",
        "1",
        "--out",
        "/tmp/corecell-never-written",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--pns"), "{}", text(&out));
    assert!(!Path::new("/tmp/corecell-never-written").exists());
}

#[test]
fn testnet_refuses_bad_workloads_before_writing_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dir.path().join("net");
    let net_arg = net.to_str().expect("utf-8");

    let out = corecell(&["testnet", "--dir", net_arg, "--workload", "bogus"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("unknown workload `bogus`: choose `transfer`, `raw` or `none`"),
        "{}",
        text(&out)
    );

    let out = corecell(&["testnet", "--dir", net_arg, "--accounts", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--accounts"), "{}", text(&out));

    // 1,000,000 tx/s for 60 s is more than the generator pre-signs (transfer is the default).
    let out = corecell(&[
        "testnet",
        "--dir",
        net_arg,
        "--rate",
        "1000000",
        "--duration",
        "60",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("lower --rate or --duration"),
        "{}",
        text(&out)
    );
    assert!(!net.exists(), "nothing written for a refused run");
}

/// A loopback port nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn bench_against_a_closed_port_fails_fast_and_names_the_target() {
    let target = format!("127.0.0.1:{}", closed_port());
    for workload in [
        &["--workload", "raw"][..],
        // Transfers are signed only after every target answered: no signing here.
        &[
            "--workload",
            "transfer",
            "--chain-id",
            "1001",
            "--rate",
            "20000",
        ][..],
    ] {
        let started = std::time::Instant::now();
        let mut args = vec!["bench", "--target", &target, "--duration", "10"];
        args.extend_from_slice(workload);
        let out = corecell(&args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let msg = text(&out);
        assert!(
            msg.contains(&format!("error: cannot reach ingress {target}"))
                && msg.contains("is the network running"),
            "{msg}"
        );
        assert!(!msg.contains("signed"), "{msg}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn bench_refuses_bad_arguments() {
    // Not HOST:PORT, port 0, unspecified: usage errors from the parser.
    for bad in ["nonsense", "127.0.0.1:0", "0.0.0.0:33000"] {
        let out = corecell(&["bench", "--target", bad, "--workload", "raw"]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        assert!(text(&out).contains("--target"), "{bad}: {}", text(&out));
    }
    let target = format!("127.0.0.1:{}", closed_port());
    let out = corecell(&[
        "bench",
        "--target",
        &target,
        "--endpoints",
        "/nonexistent/endpoints.json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Checked before any connection: the closed port is never tried.
    for (args, expected) in [
        (&["bench"][..], "no target"),
        (
            &["bench", "--target", &target, "--workload", "none"][..],
            "sends nothing",
        ),
        (
            &["bench", "--target", &target, "--rate", "0"][..],
            "above 0",
        ),
        (&["bench", "--target", &target], "--chain-id"),
        (
            &[
                "bench",
                "--target",
                &format!("{target},{target}"),
                "--workload",
                "raw",
            ][..],
            "listed twice",
        ),
        (
            &["bench", "--endpoints", "/nonexistent/endpoints.json"][..],
            "/nonexistent/endpoints.json",
        ),
    ] {
        let out = corecell(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(expected), "{args:?}: {}", text(&out));
        assert!(
            !text(&out).contains("cannot reach"),
            "{args:?}: {}",
            text(&out)
        );
    }
}

#[test]
fn testnet_sweep_refuses_bad_rate_lists_before_writing_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("sweep");
    let out_arg = out_dir.to_str().expect("utf-8");
    for (list, expected) in [
        ("", "at least one rate"),
        ("2000,0", "0 tx/s"),
        ("2000,,4000", "empty entry"),
        ("2000,lots", "`lots`"),
        ("2000,1000000", "lower --rate or --duration"),
    ] {
        let out = corecell(&[
            "testnet",
            "--dir",
            out_arg,
            "--sweep",
            list,
            "--duration",
            "60",
        ]);
        assert_eq!(out.status.code(), Some(1), "{list}: {}", text(&out));
        assert!(text(&out).contains(expected), "{list}: {}", text(&out));
    }
    let out = corecell(&[
        "testnet",
        "--dir",
        out_arg,
        "--sweep",
        "2000",
        "--workload",
        "none",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not none"), "{}", text(&out));
    // --sweep replaces --rate.
    let out = corecell(&[
        "testnet", "--dir", out_arg, "--sweep", "2000", "--rate", "10",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!out_dir.exists(), "nothing written for a refused sweep");
}
