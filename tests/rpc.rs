//! JSON-RPC end to end: the exec shard on a glommio executor with a transfer engine over a
//! genesis of funded accounts, the RPC server on loopback, and a real Ethereum client
//! (alloy's provider and local signer) talking to it. Blocks are "finalized" by the
//! in-process driver (`LocalNode::make_block`), as a follower would feed them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder as _, TransactionBuilder};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::{BlockNumberOrTag, SyncStatus, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportErrorKind};
use corecell::config::genesis::test_account_secret;
use corecell::exec::queries::RpcBridge;
use corecell::rpc::bench::{post_once, LocalNode, LocalNodeSpec};
use corecell::rpc::RpcConfig;

const CHAIN: u64 = 1001;
const ETHER: u128 = 1_000_000_000_000_000_000;
const BASE_FEE: u128 = corecell::exec::transfer::BASE_FEE_WEI;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn signer(i: u64) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::from(test_account_secret(i))).expect("test key")
}

fn node(accounts: u64) -> LocalNode {
    LocalNode::start(LocalNodeSpec::with_test_accounts(
        CHAIN,
        accounts,
        U256::from(ETHER),
    ))
    .expect("node starts")
}

/// The JSON-RPC error (code, message) of a failed call.
fn rpc_error(e: &RpcError<TransportErrorKind>) -> (i64, String) {
    match e.as_error_resp() {
        Some(payload) => (payload.code, payload.message.to_string()),
        None => panic!("not a JSON-RPC error answer: {e}"),
    }
}

/// A transfer signed with alloy's wallet, as raw bytes.
async fn signed(from: u64, nonce: u64, chain_id: u64, to: Address, value: U256) -> Vec<u8> {
    let wallet = EthereumWallet::from(signer(from));
    let request = TransactionRequest::default()
        .with_from(signer(from).address())
        .with_to(to)
        .with_value(value)
        .with_nonce(nonce)
        .with_chain_id(chain_id)
        .with_gas_limit(21_000)
        .with_max_fee_per_gas(2 * BASE_FEE)
        .with_max_priority_fee_per_gas(1);
    let envelope = request.build(&wallet).await.expect("signs");
    envelope.encoded_2718()
}

#[test]
fn an_alloy_client_sends_a_transfer_and_reads_its_receipt_balance_nonce_and_block() {
    let node = node(3);
    runtime().block_on(async {
        let url = node.url().parse().expect("url");
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer(0)))
            .connect_http(url);
        let from = signer(0).address();
        let to = signer(1).address();
        assert_eq!(provider.get_chain_id().await.expect("chain id"), CHAIN);
        assert_eq!(provider.get_block_number().await.expect("number"), 0);
        assert_eq!(provider.get_gas_price().await.expect("gas price"), BASE_FEE);

        // The wallet fills chain id, nonce (pending), gas (estimateGas) and fees (feeHistory).
        let pending = provider
            .send_transaction(
                TransactionRequest::default()
                    .with_to(to)
                    .with_value(U256::from(1000u32)),
            )
            .await
            .expect("sent");
        let hash = *pending.tx_hash();
        // Pooled, not yet in a block.
        let tx = provider
            .get_transaction_by_hash(hash)
            .await
            .expect("lookup")
            .expect("pooled");
        assert_eq!(tx.block_number, None);
        assert_eq!(
            provider
                .get_transaction_count(from)
                .pending()
                .await
                .expect("pending nonce"),
            1
        );
        assert!(provider
            .get_transaction_receipt(hash)
            .await
            .expect("lookup")
            .is_none());
        assert!(
            node.gossip_frames.load(Ordering::Relaxed) >= 1,
            "gossiped on"
        );

        assert_eq!(node.make_block().await.expect("block"), (1, 1));
        let receipt = tokio::time::timeout(Duration::from_secs(30), pending.get_receipt())
            .await
            .expect("in time")
            .expect("receipt");
        assert!(receipt.status());
        assert_eq!(receipt.block_number, Some(1));
        assert_eq!(receipt.gas_used, 21_000);
        assert_eq!(receipt.from, from);
        assert_eq!(receipt.to, Some(to));

        assert_eq!(
            provider.get_balance(to).await.expect("balance"),
            U256::from(ETHER + 1000)
        );
        assert_eq!(
            provider.get_transaction_count(from).await.expect("nonce"),
            1
        );
        let spent = U256::from(ETHER) - provider.get_balance(from).await.expect("balance");
        assert_eq!(
            spent,
            U256::from(1000u32) + U256::from(21_000u64) * U256::from(receipt.effective_gas_price)
        );

        let block = provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .full()
            .await
            .expect("block")
            .expect("latest exists");
        assert_eq!(block.header.number, 1);
        assert_eq!(block.header.gas_used, 21_000);
        assert_eq!(block.header.base_fee_per_gas, Some(BASE_FEE as u64));
        assert_eq!(block.transactions.len(), 1);
        let txs: Vec<_> = block.transactions.txns().collect();
        assert_eq!(txs[0].inner.tx_hash(), &hash);
        assert_eq!(Some(block.header.hash), receipt.block_hash);
        let by_hash = provider
            .get_block_by_hash(block.header.hash)
            .await
            .expect("block")
            .expect("by hash");
        assert_eq!(by_hash.header.number, 1);
        let genesis = provider
            .get_block_by_number(BlockNumberOrTag::Earliest)
            .await
            .expect("block")
            .expect("genesis");
        assert_eq!(genesis.header.number, 0);
        assert_eq!(block.header.parent_hash, genesis.header.hash);
        assert!(provider
            .get_block_by_number(BlockNumberOrTag::Number(9))
            .await
            .expect("answer")
            .is_none());

        let history = provider
            .get_fee_history(4, BlockNumberOrTag::Latest, &[50.0])
            .await
            .expect("fee history");
        assert_eq!(history.oldest_block, 1);
        assert_eq!(history.base_fee_per_gas, vec![BASE_FEE, BASE_FEE]);
        assert_eq!(history.reward, Some(vec![vec![1]]), "the one tip paid");

        // The same methods under kaia_ and klay_.
        let n: U256 = provider
            .raw_request("klay_blockNumber".into(), ())
            .await
            .expect("klay_");
        assert_eq!(n, U256::from(1u8));
        let b: U256 = provider
            .raw_request("kaia_getBalance".into(), (to, "latest"))
            .await
            .expect("kaia_");
        assert_eq!(b, U256::from(ETHER + 1000));

        // Consensus facts.
        let facts: serde_json::Value = provider
            .raw_request("corecell_getBlockByNumber".into(), ("latest",))
            .await
            .expect("corecell_");
        assert_eq!(
            facts["committee"]["members"].as_array().map(Vec::len),
            Some(4)
        );
        assert_eq!(
            facts["certificate"]["signers"].as_array().map(Vec::len),
            Some(3)
        );
        assert!(facts["proposerNodeId"].is_string());
        let cert: serde_json::Value = provider
            .raw_request("corecell_getCertificate".into(), ("0x1",))
            .await
            .expect("certificate");
        assert_eq!(cert["blockHash"], serde_json::json!(block.header.hash));

        // Historical state is refused, clearly.
        let e = provider
            .get_balance(to)
            .number(0)
            .await
            .expect_err("historical");
        let (code, message) = rpc_error(&e);
        assert_eq!(code, -32000);
        assert!(message.contains("historical state"), "{message}");

        // Syncing follows the highest known height.
        assert!(!matches!(
            provider.syncing().await.expect("syncing"),
            SyncStatus::Info(_)
        ));
        node.highest_known.store(10, Ordering::Relaxed);
        assert!(matches!(
            provider.syncing().await.expect("syncing"),
            SyncStatus::Info(_)
        ));
    });
}

#[test]
fn refusals_come_back_through_the_client_as_geth_errors() {
    let node = node(2);
    runtime().block_on(async {
        let url = node.url().parse().expect("url");
        let provider = ProviderBuilder::new().connect_http(url);
        let to = signer(1).address();

        let first = signed(0, 0, CHAIN, to, U256::from(1u8)).await;
        let sent = provider
            .send_raw_transaction(&first)
            .await
            .expect("admitted");
        assert_eq!(sent.tx_hash(), &alloy::primitives::keccak256(&first));
        let e = provider
            .send_raw_transaction(&first)
            .await
            .expect_err("twice");
        assert_eq!(rpc_error(&e), (-32000, "already known".into()));
        node.make_block().await.expect("block");

        let again = signed(0, 0, CHAIN, to, U256::from(2u8)).await;
        let e = provider
            .send_raw_transaction(&again)
            .await
            .expect_err("nonce used");
        assert_eq!(rpc_error(&e), (-32000, "nonce too low".into()));

        let too_much = signed(1, 0, CHAIN, to, U256::from(2 * ETHER)).await;
        let e = provider
            .send_raw_transaction(&too_much)
            .await
            .expect_err("unfunded");
        assert_eq!(
            rpc_error(&e),
            (-32000, "insufficient funds for gas * price + value".into())
        );

        let other_chain = signed(1, 0, CHAIN + 1, to, U256::from(1u8)).await;
        let e = provider
            .send_raw_transaction(&other_chain)
            .await
            .expect_err("other chain");
        assert_eq!(rpc_error(&e), (-32000, "invalid chain id".into()));

        let e = provider
            .send_raw_transaction(&[0xc0])
            .await
            .expect_err("garbage");
        assert_eq!(rpc_error(&e), (-32000, "invalid transaction".into()));

        // Malformed parameters: -32602.
        let e = provider
            .raw_request::<_, U256>("eth_getBalance".into(), ("not an address",))
            .await
            .expect_err("malformed");
        assert_eq!(rpc_error(&e).0, -32602);

        // A call is not estimable on a transfer chain.
        let call = TransactionRequest::default()
            .with_to(to)
            .with_input(vec![1u8, 2, 3]);
        let e = provider.estimate_gas(call).await.expect_err("call");
        assert!(rpc_error(&e).1.contains("contract calls"), "{e}");
        let plain = TransactionRequest::default()
            .with_to(to)
            .with_value(U256::from(1u8));
        assert_eq!(
            provider.estimate_gas(plain).await.expect("transfer"),
            21_000
        );

        // Unknown transactions and receipts are null.
        assert!(provider
            .get_transaction_by_hash(B256::repeat_byte(9))
            .await
            .expect("answer")
            .is_none());
        assert!(provider
            .get_transaction_receipt(B256::repeat_byte(9))
            .await
            .expect("answer")
            .is_none());
        assert_eq!(
            node.counters.refused.load(Ordering::Relaxed),
            5,
            "every refusal counted"
        );
    });
}

fn body(method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#)
}

#[test]
fn body_batch_and_rate_limits_are_enforced() {
    let mut spec = LocalNodeSpec::with_test_accounts(CHAIN, 1, U256::from(ETHER));
    spec.tweak = |c: &mut RpcConfig| {
        c.max_body_bytes = 1024;
        c.max_batch_requests = 2;
        c.requests_per_second = 5;
    };
    let node = LocalNode::start(spec).expect("node");
    let addr = node.addr;

    let big = body("eth_chainId", &format!("[\"{}\"]", "a".repeat(2000)));
    let (status, _) = post_once(addr, &big).expect("answered");
    assert_eq!(status, 413, "body over the limit");

    let call = body("eth_chainId", "[]");
    let batch3 = format!("[{call},{call},{call}]");
    let (status, answer) = post_once(addr, &batch3).expect("answered");
    assert_eq!(status, 200);
    assert!(answer.contains("-32010"), "batch over the limit: {answer}");

    // The bucket held 5 tokens, the batch above took none (refused whole); 5 pass, then -32005.
    let answers: Vec<String> = (0..8)
        .map(|_| post_once(addr, &call).expect("answered").1)
        .collect();
    let limited = answers.iter().filter(|a| a.contains("-32005")).count();
    assert!(limited >= 3, "rate limited: {answers:?}");
    assert!(
        answers[0].contains("\"result\":\"0x3e9\""),
        "{}",
        answers[0]
    );
}

/// A server whose bridge nobody reads (a stuck or absent exec shard).
fn stuck_server(
    capacity: usize,
    max_connections: u32,
) -> (
    corecell::rpc::RpcServer,
    corecell::exec::queries::RpcInbox,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let (bridge, inbox) = RpcBridge::new(capacity);
    let chain = corecell::rpc::ChainInfo {
        chain_id: CHAIN,
        execution: corecell::config::genesis::ExecutionMode::Transfer,
        council_node_ids: vec![[1; 20]],
        committee_size: 1,
        genesis_header: corecell::store::fixtures::genesis_header(),
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut config = RpcConfig::new("127.0.0.1:0".parse().expect("addr"), chain);
    config.max_connections = max_connections;
    let server = corecell::rpc::start(config, bridge, stop.clone()).expect("starts");
    (server, inbox, stop)
}

#[test]
fn requests_in_flight_over_the_connection_limit_are_turned_away() {
    let (server, inbox, stop) = stuck_server(8, 2);
    let addr = server.local_addr;
    let call = body("eth_blockNumber", "[]");
    // Two questions wait for the exec shard, holding both slots.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let call = call.clone();
            std::thread::spawn(move || post_once(addr, &call))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = post_once(addr, &call).expect("answered");
    assert_eq!(status, 429, "over the limit");
    while let Ok(request) = inbox.try_recv() {
        drop(request);
    }
    for w in waiting {
        let (_, answer) = w.join().expect("joined").expect("answered");
        assert!(answer.contains("-32603"), "{answer}");
    }
    // Slots are free again.
    let (status, _) = post_once(addr, &body("eth_chainId", "[]")).expect("answered");
    assert_eq!(status, 200);
    stop.store(true, Ordering::Relaxed);
    server.thread.join().expect("server thread ends");
}

#[test]
fn a_full_bridge_answers_node_busy_and_a_gone_exec_shard_an_internal_error() {
    // No exec shard reads this bridge: its one slot fills and stays full.
    let (server, inbox, stop) = stuck_server(1, 100);
    let addr = server.local_addr;
    let call = body("eth_blockNumber", "[]");
    // The first question takes the slot and waits for an answer that never comes.
    let waiting = {
        let call = call.clone();
        std::thread::spawn(move || post_once(addr, &call))
    };
    std::thread::sleep(Duration::from_millis(300));
    let (_, answer) = post_once(addr, &call).expect("answered");
    assert!(
        answer.contains("-32005") && answer.contains("node busy"),
        "{answer}"
    );
    // The exec shard goes away (its queued question dropped unanswered): the waiting
    // question and new ones get -32603.
    while let Ok(request) = inbox.try_recv() {
        drop(request);
    }
    drop(inbox);
    let (_, answer) = waiting.join().expect("joined").expect("answered");
    assert!(answer.contains("-32603"), "{answer}");
    let (_, answer) = post_once(addr, &call).expect("answered");
    assert!(
        answer.contains("-32603") && answer.contains("not running"),
        "{answer}"
    );
    // chainId needs no exec shard.
    let (_, answer) = post_once(addr, &body("eth_chainId", "[]")).expect("answered");
    assert!(answer.contains("0x3e9"), "{answer}");
    stop.store(true, Ordering::Relaxed);
    server.thread.join().expect("server thread ends");
}
