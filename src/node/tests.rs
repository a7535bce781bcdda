//! Tests of keys, genesis, configs and their cross-checks, on files as an operator has them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::setup::NodeSetup;
use crate::config::genesis::test_network_spec as spec;
use crate::config::genesis::{test_account_secret, Genesis, NetworkSpec, MAX_BLOCK_PERIOD_MS};
use crate::config::node::{NodeConfig, Placement, Role, Shard};
use crate::config::ConfigError;
use crate::crypto::tx::address_of_secret;

fn repo_configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

#[test]
fn example_configs_load() {
    for (file, role) in [
        ("cn.toml", Role::Cn),
        ("pn.toml", Role::Pn),
        ("en.toml", Role::En),
        ("bootnode.toml", Role::Bootnode),
        ("bootnode-cn.toml", Role::Bootnode),
        ("bootnode-en.toml", Role::Bootnode),
    ] {
        let config = NodeConfig::load(&repo_configs().join(file)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.role, role, "{file}");
        assert!(
            !config.allowlist.is_empty(),
            "{file}: examples show a non-empty allowlist"
        );
        assert!(
            config.genesis.starts_with(repo_configs()),
            "{file}: relative paths resolve against the config's folder"
        );
    }
    let cn = NodeConfig::load(&repo_configs().join("cn.toml")).expect("cn");
    match cn.placement {
        Placement::Fixed(t) => assert_eq!(t.get(&Shard::Consensus), Some(&3)),
        other => panic!("cn.toml pins shards, got {other:?}"),
    }
    assert_eq!(
        NodeConfig::load(&repo_configs().join("bootnode.toml"))
            .expect("boot")
            .bootnode_serves,
        Some(Role::Pn)
    );
    for (file, serves) in [
        ("bootnode-cn.toml", Role::Cn),
        ("bootnode-en.toml", Role::En),
    ] {
        let config = NodeConfig::load(&repo_configs().join(file)).expect(file);
        assert_eq!(config.bootnode_serves, Some(serves), "{file}");
    }
}

#[test]
fn generated_network_loads_for_every_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = spec(4, 2, 2).generate(dir.path()).expect("generate");
    assert_eq!(net.nodes.len(), 4 + 2 + 2 + 2);
    let genesis =
        Genesis::load(&net.genesis_path, crate::exec::genesis_state_root).expect("genesis");
    assert_eq!(genesis.council.len(), 4);
    assert_eq!(genesis.committee_size, 4);
    assert_eq!(genesis.accounts.len(), 5);
    for node in &net.nodes {
        let setup =
            NodeSetup::load(&node.config_path).unwrap_or_else(|e| panic!("{}: {e}", node.name));
        assert_eq!(setup.config.role, node.role);
        assert_eq!(setup.key.node_id, node.node_id);
        assert_eq!(setup.council_index.is_some(), node.role == Role::Cn);
        assert!(
            !setup.config.allowlist.is_empty(),
            "{}: every generated node admits someone",
            node.name
        );
        let mode = std::fs::metadata(&setup.config.key_file)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{}", node.name);
    }
    // The CN mesh is full: each CN dials the three others.
    let cn0 = NodeSetup::load(&net.nodes[0].config_path).expect("cn0");
    assert_eq!(cn0.config.peers.len(), 3);
    assert!(cn0.config.peers.iter().all(|p| p.role == Role::Cn));
    // accounts.json lists the same deterministic accounts as the genesis.
    let accounts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&net.accounts_path).expect("read"))
            .expect("json");
    assert!(accounts["warning"]
        .as_str()
        .expect("warning")
        .contains("DEVELOPMENT"));
    let listed = accounts["accounts"].as_array().expect("array");
    assert_eq!(listed.len(), 5);
    for (i, (entry, account)) in listed.iter().zip(&genesis.accounts).enumerate() {
        let secret = test_account_secret(i as u64);
        assert_eq!(entry["private_key"], crate::config::to_hex(&secret));
        assert_eq!(address_of_secret(&secret).expect("valid"), account.address);
    }
    // A second run into the same folder refuses rather than overwriting keys.
    assert!(spec(4, 2, 2)
        .generate(dir.path())
        .expect_err("refuses")
        .contains("already exists"));
}

#[test]
fn seeded_generation_is_reproducible() {
    let (a, b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    spec(3, 0, 0).generate(a.path()).expect("a");
    spec(3, 0, 0).generate(b.path()).expect("b");
    let read = |d: &Path| std::fs::read_to_string(d.join("genesis.toml")).expect("read");
    assert_eq!(read(a.path()), read(b.path()));
    let ga = Genesis::load(
        &a.path().join("genesis.toml"),
        crate::exec::genesis_state_root,
    )
    .expect("genesis");
    assert_eq!(
        ga.header().hash(),
        Genesis::load(
            &b.path().join("genesis.toml"),
            crate::exec::genesis_state_root
        )
        .expect("b")
        .header()
        .hash()
    );
}

#[test]
fn bad_specs_are_refused_before_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("net");
    let cases: Vec<(NetworkSpec, &str)> = vec![
        (spec(0, 0, 0), "--cns"),
        (spec(2, 0, 1), "--pns"),
        (
            NetworkSpec {
                committee_size: Some(5),
                ..spec(4, 0, 0)
            },
            "--committee-size",
        ),
        (
            NetworkSpec {
                block_period_ms: MAX_BLOCK_PERIOD_MS + 1,
                ..spec(4, 0, 0)
            },
            "--block-period-ms",
        ),
        (
            NetworkSpec {
                base_port: 65000,
                ..spec(4, 0, 0)
            },
            "--base-port",
        ),
        (
            NetworkSpec {
                chain_id: 0,
                ..spec(4, 0, 0)
            },
            "--chain-id",
        ),
    ];
    for (s, flag) in cases {
        let err = s.generate(&out).expect_err(flag);
        assert!(err.contains(flag), "{flag}: {err}");
        assert!(!out.exists(), "{flag}: nothing written");
    }
}

/// Writes a generated network, then edits one file and checks the error names the field.
fn edited_error(file: &str, from: &str, to: &str) -> ConfigError {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = spec(4, 1, 1).generate(dir.path()).expect("generate");
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} does not contain {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    let config = match file {
        "genesis.toml" => &net.nodes[0].config_path,
        f => {
            &net.nodes
                .iter()
                .find(|n| f.starts_with(&format!("{}/", n.name)))
                .expect("node")
                .config_path
        }
    };
    let err = NodeSetup::load(config).expect_err("edited file is refused");
    assert!(err.file.ends_with(file), "error names {file}: {err}");
    err
}

#[test]
fn config_errors_name_file_and_field() {
    let err = edited_error("cn0/config.toml", "role = \"cn\"", "role = \"xn\"");
    assert_eq!(err.field, "role", "{err}");
    assert!(
        err.problem.contains("unknown variant `xn`") && err.problem.contains("line 2"),
        "{err}"
    );
    let err = edited_error("cn0/config.toml", "name = \"cn0\"", "name = \"cn 0\"");
    assert_eq!(err.field, "name");
    let err = edited_error("cn0/config.toml", "name = \"cn0\"", "name = \"cn1\"");
    assert_eq!(err.field, "name", "{err}");
    let err = edited_error("cn0/config.toml", "node_id = \"0x", "node_id = \"0xzz");
    assert_eq!(err.field, "network.peers[0].node_id", "{err}");
    let err = edited_error("cn0/config.toml", "[runtime]", "[runtime]\nbogus = 1");
    assert_eq!(err.field, "runtime.bogus", "{err}");
    let err = edited_error(
        "cn0/config.toml",
        "listen = \"127.0.0.1:40000\"",
        "listen = \"localhost\"",
    );
    assert_eq!(err.field, "network.listen", "{err}");
    let err = edited_error(
        "cn0/config.toml",
        "placement = \"auto\"",
        "placement = \"everywhere\"",
    );
    assert_eq!(err.field, "runtime.placement");
    let err = edited_error(
        "cn0/config.toml",
        "placement = \"auto\"",
        "placement = { net = 0, consensus = 1, exec = 1 }",
    );
    assert_eq!(err.field, "runtime.placement.store", "{err}");
    let err = edited_error(
        "cn0/config.toml",
        "placement = \"auto\"",
        "placement = { net = 0, consensus = 1, exec = 1, store = 0, rpc = 1 }",
    );
    assert_eq!(err.field, "runtime.placement.rpc", "{err}");
    let err = edited_error(
        "cn0/config.toml",
        "io_memory_kib = 2048",
        "io_memory_kib = 1",
    );
    assert_eq!(err.field, "runtime.io_memory_kib");
    let err = edited_error("en0/config.toml", "[rpc]", "[old_rpc]");
    assert!(err.problem.contains("old_rpc"), "{err}");
    let err = edited_error(
        "boot-pn/config.toml",
        "serves = \"pn\"",
        "serves = \"bootnode\"",
    );
    assert_eq!(err.field, "bootnode.serves");
    // A CN bootnode hands out CNs only: the PN bootnode's PN directory does not fit it.
    let err = edited_error("boot-pn/config.toml", "serves = \"pn\"", "serves = \"cn\"");
    assert_eq!(err.field, "network.peers[0].role", "{err}");
    let err = edited_error(
        "pn0/config.toml",
        "address = \"127.0.0.1:40000\"",
        "address = \"0.0.0.0:40000\"",
    );
    assert_eq!(err.field, "network.peers[0].address", "{err}");
    let err = edited_error(
        "cn0/config.toml",
        "key_file = \"key.toml\"",
        "key_file = \"../pn0/key.toml\"",
    );
    assert_eq!(err.field, "key_file", "{err}");
    let err = edited_error(
        "cn0/config.toml",
        "key_file = \"key.toml\"",
        "key_file = \"missing.toml\"",
    );
    assert_eq!(err.field, "key_file", "{err}");
    assert!(err.problem.contains("missing.toml does not exist"), "{err}");
}

#[test]
fn genesis_errors_name_the_field() {
    let err = edited_error("genesis.toml", "chain_id = 1001", "chain_id = 0");
    assert_eq!(err.field, "chain_id");
    let err = edited_error("genesis.toml", "committee_size = 4", "committee_size = 5");
    assert_eq!(err.field, "committee_size");
    let err = edited_error(
        "genesis.toml",
        "block_period_ms = 500",
        "block_period_ms = 60001",
    );
    assert_eq!(err.field, "block_period_ms");
    let err = edited_error("genesis.toml", "balance = \"1", "balance = \"-1");
    assert_eq!(err.field, "accounts[0].balance");
    let err = edited_error("genesis.toml", "chain_id = 1001", "chain_id = -1");
    assert_eq!(err.field, "chain_id", "{err}");
}

#[test]
fn genesis_refuses_a_swapped_proof_of_possession() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = spec(3, 0, 0).generate(dir.path()).expect("generate");
    let text = std::fs::read_to_string(&net.genesis_path).expect("read");
    let pops: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("proof_of_possession"))
        .collect();
    let swapped = text
        .replacen(pops[0], "@@", 1)
        .replacen(pops[1], pops[0], 1)
        .replacen("@@", pops[1], 1);
    std::fs::write(&net.genesis_path, swapped).expect("write");
    let err = Genesis::load(&net.genesis_path, crate::exec::genesis_state_root)
        .expect_err("swapped PoPs");
    assert_eq!(err.field, "council[0]", "{err}");
    assert!(err.problem.contains("proof of possession"), "{err}");
}

#[test]
fn oversized_and_non_utf8_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.toml");
    std::fs::write(
        &big,
        vec![b'#'; (crate::config::node::MAX_CONFIG_BYTES + 1) as usize],
    )
    .expect("write");
    assert!(NodeConfig::load(&big)
        .expect_err("too big")
        .problem
        .contains("limit"));
    let binary = dir.path().join("bin.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).expect("write");
    assert!(NodeConfig::load(&binary)
        .expect_err("binary")
        .problem
        .contains("UTF-8"));
}

mod hostile_files {
    use proptest::prelude::*;

    use crate::config::genesis::{Genesis, GenesisFile};
    use crate::config::node::{ConfigFile, NodeConfig};
    use crate::config::parse_toml;

    const GOOD_CONFIG: &str = include_str!("../../configs/cn.toml");

    fn load_config_text(text: &str) {
        let path = std::path::Path::new("/nonexistent/config.toml");
        if let Ok(file) = parse_toml::<ConfigFile>(path, text) {
            let _ = NodeConfig::validate(path, file);
        }
        if let Ok(file) = parse_toml::<GenesisFile>(path, text) {
            let _ = Genesis::validate(path, &file, crate::exec::genesis_state_root);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random text never panics the config or genesis loaders.
        #[test]
        fn random_text_never_panics(text in "\\PC{0,400}") {
            load_config_text(&text);
        }

        /// Random edits of a valid config (delete, insert, replace a span) never panic, and
        /// every refusal names the file.
        #[test]
        fn mutated_config_never_panics(
            at in 0usize..GOOD_CONFIG.len(),
            cut in 0usize..40,
            insert in "[ -~\\n]{0,20}",
        ) {
            let mut start = at;
            while !GOOD_CONFIG.is_char_boundary(start) { start -= 1; }
            let mut end = (start + cut).min(GOOD_CONFIG.len());
            while !GOOD_CONFIG.is_char_boundary(end) { end -= 1; }
            let text = format!("{}{}{}", &GOOD_CONFIG[..start], insert, &GOOD_CONFIG[end..]);
            load_config_text(&text);
            let path = std::path::Path::new("/x/cn.toml");
            if let Err(e) = parse_toml::<ConfigFile>(path, &text) {
                prop_assert!(e.to_string().starts_with("/x/cn.toml: "), "{}", e);
            }
        }
    }
}

/// A generated node config with `section` appended, loaded.
fn load_with_section(node: usize, section: &str) -> Result<NodeConfig, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = spec(4, 1, 1).generate(dir.path()).expect("generate");
    let path = &net.nodes[node].config_path;
    let mut text = std::fs::read_to_string(path).expect("read");
    text.push_str(section);
    std::fs::write(path, text).expect("write");
    NodeConfig::load(path)
}

#[cfg(not(feature = "byzantine"))]
#[test]
fn a_build_without_the_byzantine_feature_refuses_a_byzantine_section() {
    let err = load_with_section(0, "\n[byzantine]\nbehaviours = [\"equivocate\"]\n")
        .expect_err("refused");
    assert_eq!(err.field, "byzantine", "{err}");
    assert!(err.problem.contains("--features byzantine"), "{err}");
}

#[cfg(feature = "byzantine")]
#[test]
fn a_byzantine_section_names_known_behaviours_of_a_cn() {
    use crate::config::byzantine::Behaviour;
    let config = load_with_section(
        0,
        "\n[byzantine]\nbehaviours = [\"double-vote\", \"equivocate\"]\nseed = 9\n",
    )
    .expect("a CN may misbehave in tests");
    let settings = config.byzantine.expect("settings");
    assert_eq!(settings.seed, 9);
    assert_eq!(
        settings.behaviours.into_iter().collect::<Vec<_>>(),
        vec![Behaviour::Equivocate, Behaviour::DoubleVote]
    );
    assert_eq!(load_with_section(0, "").expect("plain").byzantine, None);
    for (node, section, field) in [
        (
            0,
            "behaviours = [\"equivocate\", \"lie\"]",
            "byzantine.behaviours[1]",
        ),
        (
            0,
            "behaviours = [\"equivocate\", \"equivocate\"]",
            "byzantine.behaviours[1]",
        ),
        (0, "behaviours = []", "byzantine.behaviours"),
        (4, "behaviours = [\"equivocate\"]", "byzantine"),
    ] {
        let err =
            load_with_section(node, &format!("\n[byzantine]\n{section}\n")).expect_err(section);
        assert_eq!(err.field, field, "{err}");
    }
}
