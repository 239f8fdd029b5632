//! Failover under load: no acknowledged send is lost when partition leaders are SIGKILLed one
//! after another while 24 clients keep sending.
//!
//! What an acknowledgement promises: a body whose SendMessage (or batch entry) succeeded is
//! committed on a quorum and is delivered at least once later, whichever node crashes. A body whose
//! every attempt failed with `Unavailable` was never written; a body with an unknown outcome
//! (timeout, broken connection, `OutcomeUnknown`) may or may not be delivered. Nothing that was
//! never sent is ever delivered. Duplicates are allowed (at-least-once) and only counted.
//!
//! Each round starts a fresh 3-node cluster with 3 standard queues of 2 partitions. The number of
//! rounds is `FERRY_FAILOVER_ROUNDS` (default 1); `FERRY_FAILOVER_SEED` fixes the randomness.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    assert_no_loss_or_phantom, send_bodies, wait_for, wait_until, within, ClusterOptions,
    TestCluster,
};
use ferry_proto::v1::ferry_client::FerryClient;
use ferry_proto::v1::CreateQueueRequest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const QUEUES: usize = 3;
const PARTITIONS: u32 = 2;
const SENDERS: usize = 24;
/// Each sender sends at least this many bodies: 24 × 125 = 3,000.
const BODIES_PER_SENDER: usize = 125;
/// Senders keep going while the nemesis runs, so every crash happens under traffic; this bounds it.
const MAX_BODIES_PER_SENDER: usize = 3 * BODIES_PER_SENDER;
/// Pause between two calls of one sender while the nemesis runs, so that the minimum spreads over
/// the ~30 s the nemesis takes instead of being sent before the first crash.
const SEND_PACE: Duration = Duration::from_millis(1000);
/// Calls per body: the first node plus retries on the others.
const SEND_ATTEMPTS: usize = 4;
/// A new leader is elected within a few seconds of a crash.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Acknowledgements to see while a leader is down: proof the cluster serves with one node down.
const ACKS_WHILE_DOWN: usize = 100;
/// Time for those acknowledgements; senders retry each body for ~10 s per attempt.
const ACKS_WHILE_DOWN_TIMEOUT: Duration = Duration::from_secs(40);
/// Senders finish their minimum at full speed once the nemesis is done.
const SENDERS_TIMEOUT: Duration = Duration::from_secs(120);
/// Draining a few thousand messages, 10 per call, from three queues at once.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(90);
/// Empty receives in a row that, with every acknowledged body seen, mean a queue is drained.
const EMPTY_RECEIVES_TO_STOP: usize = 3;
/// Groups go quiet after 3 s without proposals, plus sweeps and the followers' acknowledgements.
const QUIET_TIMEOUT: Duration = Duration::from_secs(30);
/// Long-poll wait of a drain receive.
const DRAIN_WAIT_SECONDS: u32 = 1;
/// The share of bodies that must be acknowledged: with one node of three down at a time, the
/// cluster must keep serving, so failures are rare.
const MIN_ACKED_PERCENT: usize = 90;

#[derive(Default)]
struct Ledger {
    attempted: HashSet<String>,
    acked: HashSet<String>,
    unknown: HashSet<String>,
    rejected: HashSet<String>,
    unexpected: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_leader_crashes() {
    let rounds: usize = std::env::var("FERRY_FAILOVER_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("FERRY_FAILOVER_ROUNDS is a number"))
        .unwrap_or(1);
    let seed: u64 = std::env::var("FERRY_FAILOVER_SEED")
        .ok()
        .map(|v| v.parse().expect("FERRY_FAILOVER_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64
        });
    for round in 0..rounds {
        let round_seed = seed.wrapping_add(round as u64);
        eprintln!(
            "failover round {}/{rounds}, FERRY_FAILOVER_SEED={round_seed}",
            round + 1
        );
        run_round(round_seed).await;
    }
}

async fn run_round(seed: u64) {
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;

    // Phase 1: queues, and the Raft group of each partition, so the nemesis knows what to crash.
    let queues: Vec<String> = (0..QUEUES).map(|q| format!("failover-{q}")).collect();
    let mut admin = cluster.client(1);
    for queue in &queues {
        let created = admin
            .create_queue(CreateQueueRequest {
                queue_name: queue.clone(),
                partitions: PARTITIONS,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("create {queue}: {e:?}"))
            .into_inner();
        assert_eq!(created.queue.map(|q| q.partitions), Some(PARTITIONS));
    }
    let mut partitions = Vec::new();
    for queue in &queues {
        let groups = wait_for(
            LEADER_TIMEOUT,
            &format!("{queue} has {PARTITIONS} partitions with leaders"),
            async || {
                let groups = cluster.queue_groups(queue).await;
                if groups.len() != PARTITIONS as usize {
                    return None;
                }
                for &g in &groups {
                    cluster.leader_of(g).await?;
                }
                Some(groups)
            },
        )
        .await;
        partitions.extend(groups.into_iter().map(|g| (queue.clone(), g)));
    }

    // Phase 2: senders run until the nemesis is done and they have sent their minimum.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let acked = Arc::new(AtomicUsize::new(0));
    let nemesis_done = Arc::new(AtomicBool::new(false));
    let senders_done = Arc::new(AtomicUsize::new(0));
    let clients = cluster.clients();
    let mut senders = Vec::new();
    for task in 0..SENDERS {
        let q = task % QUEUES;
        let sender = Sender {
            q,
            task,
            queue: queues[q].clone(),
            clients: clients.clone(),
            rng: StdRng::seed_from_u64(seed ^ (task as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            ledger: ledger.clone(),
            acked: acked.clone(),
            nemesis_done: nemesis_done.clone(),
        };
        let senders_done = senders_done.clone();
        senders.push(tokio::spawn(async move {
            sender.run().await;
            senders_done.fetch_add(1, Ordering::SeqCst);
        }));
    }

    // Phase 3: the nemesis crashes the leader of each partition in turn, lets traffic flow with
    // it down, then brings it back.
    let started = Instant::now();
    wait_until(
        ACKS_WHILE_DOWN_TIMEOUT,
        "traffic flows before the first crash",
        async || acked.load(Ordering::SeqCst) >= ACKS_WHILE_DOWN,
    )
    .await;
    for (queue, group) in &partitions {
        let leader = cluster.wait_for_leader(*group, LEADER_TIMEOUT).await;
        let before = acked.load(Ordering::SeqCst);
        eprintln!(
            "nemesis at {:?}: SIGKILL node {leader}, leader of {queue} group {group} ({before} acked)",
            started.elapsed()
        );
        cluster.kill(leader);
        wait_until(
            ACKS_WHILE_DOWN_TIMEOUT,
            &format!("{ACKS_WHILE_DOWN} acknowledgements with node {leader} down"),
            async || {
                acked.load(Ordering::SeqCst) >= before + ACKS_WHILE_DOWN
                    || senders_done.load(Ordering::SeqCst) == SENDERS
            },
        )
        .await;
        cluster.restart(leader).await;
    }
    nemesis_done.store(true, Ordering::SeqCst);
    eprintln!("nemesis done at {:?}", started.elapsed());
    for sender in senders {
        common::within(SENDERS_TIMEOUT, "senders finishing", sender)
            .await
            .expect("sender task panicked");
    }

    // Phase 4: drain every queue, then compare what came out with what went in.
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger lock"));
    let drains: Vec<_> = queues
        .iter()
        .enumerate()
        .map(|(q, queue)| {
            let prefix = format!("q{q}-");
            let expected: HashSet<String> = ledger
                .acked
                .iter()
                .filter(|b| b.starts_with(&prefix))
                .cloned()
                .collect();
            tokio::spawn(drain(clients.clone(), queue.clone(), expected))
        })
        .collect();
    let mut drained = Vec::new();
    for task in drains {
        drained.push(task.await.expect("drain task panicked"));
    }

    let mut received: HashMap<String, usize> = HashMap::new();
    let mut receive_errors = 0;
    for (bodies, errors) in drained {
        receive_errors += errors;
        for body in bodies {
            *received.entry(body).or_default() += 1;
        }
    }
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    let unknown_delivered = ledger
        .unknown
        .iter()
        .filter(|b| received.contains_key(*b))
        .count();
    eprintln!(
        "sent {} bodies: acked {}, unknown {} ({} of them delivered), rejected {}; received {} \
         distinct, {} duplicates; {} receive errors",
        ledger.attempted.len(),
        ledger.acked.len(),
        ledger.unknown.len(),
        unknown_delivered,
        ledger.rejected.len(),
        received.len(),
        duplicates,
        receive_errors
    );

    assert_no_loss_or_phantom(&ledger.attempted, &ledger.acked, &ledger.unknown, &received);
    assert!(
        ledger.unexpected.is_empty(),
        "sends failed with errors a cluster with one node down must not give: {:?}",
        &ledger.unexpected[..ledger.unexpected.len().min(20)]
    );
    assert!(
        ledger.acked.len() * 100 >= ledger.attempted.len() * MIN_ACKED_PERCENT,
        "only {} of {} bodies were acknowledged with at most one node down",
        ledger.acked.len(),
        ledger.attempted.len()
    );
}

struct Sender {
    q: usize,
    task: usize,
    queue: String,
    clients: Vec<FerryClient<Channel>>,
    rng: StdRng,
    ledger: Arc<Mutex<Ledger>>,
    acked: Arc<AtomicUsize>,
    nemesis_done: Arc<AtomicBool>,
}

impl Sender {
    async fn run(mut self) {
        let mut next = 0;
        while next < MAX_BODIES_PER_SENDER
            && (next < BODIES_PER_SENDER || !self.nemesis_done.load(Ordering::SeqCst))
        {
            // Half single sends, half batches of 10.
            let count = if self.rng.gen_bool(0.5) { 1 } else { 10 };
            let count = count.min(MAX_BODIES_PER_SENDER - next);
            let bodies: Vec<String> = (next..next + count)
                .map(|i| format!("q{}-t{}-n{i}", self.q, self.task))
                .collect();
            next += count;
            self.ledger
                .lock()
                .expect("ledger lock")
                .attempted
                .extend(bodies.iter().cloned());
            let first = self.rng.gen_range(0..self.clients.len());
            let outcome =
                send_bodies(&self.clients, first, &self.queue, bodies, SEND_ATTEMPTS).await;
            self.acked.fetch_add(outcome.acked.len(), Ordering::SeqCst);
            {
                let mut ledger = self.ledger.lock().expect("ledger lock");
                ledger.acked.extend(outcome.acked);
                ledger.unknown.extend(outcome.unknown);
                ledger.rejected.extend(outcome.rejected);
                ledger.unexpected.extend(outcome.unexpected);
            }
            if !self.nemesis_done.load(Ordering::SeqCst) {
                tokio::time::sleep(SEND_PACE).await;
            }
        }
    }
}

/// Receives and deletes from `queue` until every `expected` body was seen and several receives in
/// a row came back empty, or until the drain deadline. Returns every body received (with
/// duplicates) and the number of failed receives.
async fn drain(
    clients: Vec<FerryClient<Channel>>,
    queue: String,
    expected: HashSet<String>,
) -> (Vec<String>, usize) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut received = Vec::new();
    let mut seen = HashSet::new();
    let mut empty_in_a_row = 0;
    let mut errors = 0;
    let mut call = 0;
    while Instant::now() < deadline {
        let mut client = clients[call % clients.len()].clone();
        call += 1;
        match common::receive_and_delete(&mut client, &queue, DRAIN_WAIT_SECONDS).await {
            Err(status) => {
                errors += 1;
                eprintln!("drain {queue}: receive failed: {status:?}");
                // Not waiting for a state: just not hammering a node that is still electing.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(messages) if messages.is_empty() => {
                empty_in_a_row += 1;
                if empty_in_a_row >= EMPTY_RECEIVES_TO_STOP && expected.is_subset(&seen) {
                    break;
                }
            }
            Ok(messages) => {
                empty_in_a_row = 0;
                for m in messages {
                    seen.insert(m.body.clone());
                    received.push(m.body);
                }
            }
        }
    }
    (received, errors)
}

/// Quiet groups: once a cluster is idle every group stops ticking (no heartbeats, no election
/// timers); a request wakes its group; and when the leader of a quiet partition is SIGKILLed, the
/// survivors notice the silent node, wake, elect a new leader and serve the queue again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_groups_wake_for_requests_and_after_a_leader_crash() {
    const QUEUE: &str = "quiet";
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let mut client = cluster.client(1);
    let group = create_one_partition_queue(&cluster, QUEUE).await;
    let send =
        async |client: &mut FerryClient<Channel>, body: &str| send_body(client, QUEUE, body).await;
    send(&mut client, "before").await.expect("send before");

    cluster.wait_until_quiet_and_level(QUIET_TIMEOUT).await;
    let leader = cluster
        .leader_of(group)
        .await
        .expect("a quiet group keeps its leader");

    // An admin read is a ReadIndex barrier on the catalog leader, whose heartbeats wake the
    // catalog's followers: the leader must tick again too, or they would stop hearing from it and
    // start an election.
    let catalog_leader = cluster
        .leader_of(0)
        .await
        .expect("the catalog has a leader");
    let asker = if catalog_leader == 1 { 2 } else { 1 };
    cluster
        .client(asker)
        .get_queue(ferry_proto::v1::GetQueueRequest {
            queue_name: QUEUE.into(),
        })
        .await
        .expect("an admin read of the queue");
    let catalog = cluster.groups(catalog_leader).await;
    assert!(
        catalog
            .iter()
            .any(|g| g.group == 0 && g.is_leader && !g.quiet),
        "the catalog leader still quiet after a read barrier: {catalog:?}"
    );

    // A request on a node that does not lead the partition wakes it and is served.
    let other = if leader == 1 { 2 } else { 1 };
    let mut other_client = cluster.client(other);
    within(
        Duration::from_secs(10),
        "a send to a quiet partition",
        send(&mut other_client, "awake"),
    )
    .await
    .expect("send to a quiet partition");
    let mut received = Vec::new();
    wait_until(LEADER_TIMEOUT, "both messages are received", async || {
        if let Ok(messages) = common::receive_and_delete(&mut other_client, QUEUE, 1).await {
            received.extend(messages.into_iter().map(|m| m.body));
        }
        received.len() >= 2
    })
    .await;
    received.sort();
    assert_eq!(received, ["awake", "before"]);

    cluster.wait_until_quiet_and_level(QUIET_TIMEOUT).await;
    let leader = cluster
        .leader_of(group)
        .await
        .expect("leader of the quiet group");
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(group, LEADER_TIMEOUT).await;
    assert_ne!(new_leader, leader);
    let survivor = cluster.running()[0];
    let mut survivor_client = cluster.client(survivor);
    wait_for(
        LEADER_TIMEOUT,
        "a send after the crash is acknowledged",
        async || send(&mut survivor_client, "after").await.ok(),
    )
    .await;
}

/// Leadership goes back where placement put it: while a partition's first replica is down another
/// replica leads, and once it is back and caught up the leader hands the partition back to it
/// (openraft's TransferLeader, carried by the internal transport). Sends keep being acknowledged
/// through the hand-back and every acknowledged one is received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_returns_to_the_first_replica_after_a_restart() {
    /// A restarted node catches up, then the next housekeeping round (every second, each partition
    /// at most every 10 s) hands over.
    const HAND_BACK_TIMEOUT: Duration = Duration::from_secs(60);
    const QUEUE: &str = "handback";
    const PARTITIONS: u32 = 3;
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    cluster
        .client(1)
        .create_queue(CreateQueueRequest {
            queue_name: QUEUE.into(),
            partitions: PARTITIONS,
            ..Default::default()
        })
        .await
        .expect("create the queue");
    // Placement starts each partition's replicas at node `group % 3` of the sorted node ids
    // 1, 2, 3: that first replica is the partition's preferred leader.
    let preferred = |group: u64| group % 3 + 1;
    let led_by_first_replicas = async |cluster: &TestCluster, groups: &[u64]| {
        for &group in groups {
            if cluster.leader_of(group).await != Some(preferred(group)) {
                return false;
            }
        }
        true
    };
    // Sends all along: a partition that goes quiet (idle) is never handed over, and every send
    // must be served through the hand-overs.
    let clients = cluster.clients();
    let mut ledger = Ledger::default();
    let mut batch = 0;
    let groups = wait_for(
        LEADER_TIMEOUT,
        "the queue's partitions are led by their first replicas",
        async || {
            batch += 1;
            send_ten(&clients, QUEUE, batch, &mut ledger).await;
            let groups = cluster.queue_groups(QUEUE).await;
            (groups.len() == PARTITIONS as usize && led_by_first_replicas(&cluster, &groups).await)
                .then_some(groups)
        },
    )
    .await;

    let group = groups[0];
    let victim = preferred(group);
    cluster.kill(victim);
    let stand_in = cluster.wait_for_leader(group, LEADER_TIMEOUT).await;
    assert_ne!(stand_in, victim);
    cluster.restart(victim).await;

    wait_until(
        HAND_BACK_TIMEOUT,
        "every partition is led by its first replica again",
        async || {
            batch += 1;
            send_ten(&clients, QUEUE, batch, &mut ledger).await;
            led_by_first_replicas(&cluster, &groups).await
        },
    )
    .await;
    assert!(
        ledger.unexpected.is_empty() && ledger.rejected.is_empty(),
        "sends failed around the hand-overs: {:?}, {} refused",
        ledger.unexpected,
        ledger.rejected.len()
    );
    assert!(
        cluster
            .log_text(stand_in)
            .contains("handing leadership to the preferred replica"),
        "node {stand_in} led group {group} while node {victim} was down and should have handed it back"
    );

    // Idle from here on: every group goes quiet, and only with each replica holding all that its
    // leader applied (a follower that restarted with the last entry but not the news of its
    // commit once went quiet an entry behind, and the drain through its node missed that entry).
    cluster.wait_until_quiet_and_level(QUIET_TIMEOUT).await;

    let mut client = cluster.client(victim);
    let mut received: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut failed_receives = Vec::new();
    while !ledger.acked.iter().all(|body| received.contains_key(body)) {
        if Instant::now() >= deadline {
            let missing: Vec<&String> = ledger
                .acked
                .iter()
                .filter(|body| !received.contains_key(*body))
                .collect();
            let mut counts = Vec::new();
            for node in cluster.running() {
                counts.push((
                    node,
                    common::approximate_counts(&mut cluster.client(node), QUEUE).await,
                ));
                eprintln!("node {node} groups: {:?}", cluster.groups(node).await);
            }
            panic!(
                "{} of {} acknowledged sends not received through node {victim} within {DRAIN_TIMEOUT:?} \
                 (first: {:?}); failed receives: {failed_receives:?}; counts by node: {counts:?}",
                missing.len(),
                ledger.acked.len(),
                &missing[..missing.len().min(10)],
            );
        }
        match common::receive_and_delete(&mut client, QUEUE, DRAIN_WAIT_SECONDS).await {
            Ok(messages) => {
                for message in messages {
                    *received.entry(message.body).or_default() += 1;
                }
            }
            Err(status) => failed_receives.push(status.to_string()),
        }
    }
    assert_no_loss_or_phantom(&ledger.attempted, &ledger.acked, &ledger.unknown, &received);
}

/// Sends ten new bodies to `queue` in one batch (the `batch`-th), recording them in `ledger`.
async fn send_ten(
    clients: &[FerryClient<Channel>],
    queue: &str,
    batch: usize,
    ledger: &mut Ledger,
) {
    let bodies: Vec<String> = (0..10).map(|i| format!("b{batch}-{i}")).collect();
    ledger.attempted.extend(bodies.iter().cloned());
    let outcome = send_bodies(clients, batch, queue, bodies, SEND_ATTEMPTS).await;
    ledger.acked.extend(outcome.acked);
    ledger.unknown.extend(outcome.unknown);
    ledger.rejected.extend(outcome.rejected);
    ledger.unexpected.extend(outcome.unexpected);
}

/// The internal service (Raft traffic and forwarded requests, on the public gRPC port) takes calls
/// from members only: a caller without the cluster key, or with a key from another secret, is
/// refused with `Unauthenticated`; a member restarted with the wrong secret cannot rejoin (its
/// calls and its peers' are refused both ways) and is not ready while the other two keep serving,
/// and rejoins once it has the right one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_service_refuses_callers_without_the_cluster_key() {
    use ferry_proto::internal::internal_client::InternalClient;
    use ferry_proto::internal::{RaftBatchRequest, RaftKind, RaftRequest};

    const QUEUE: &str = "members-only";
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let group = create_one_partition_queue(&cluster, QUEUE).await;

    // A stranger's vote request for the partition, the most disruptive call there is.
    let vote = RaftBatchRequest {
        calls: vec![RaftRequest {
            group,
            kind: RaftKind::Vote as i32,
            payload: vec![0xFF; 16].into(),
        }],
        ..Default::default()
    };
    let channel = Channel::from_shared(format!("http://{}", cluster.grpc_addr(1)))
        .expect("node address")
        .connect_timeout(common::CONNECT_TIMEOUT)
        .timeout(common::RPC_TIMEOUT)
        .connect()
        .await
        .expect("connect to node 1");
    let refused = InternalClient::new(channel.clone())
        .raft_batch(vote.clone())
        .await
        .expect_err("a call without the key");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut impostor = InternalClient::with_interceptor(
        channel,
        ferry_raft::AttachClusterKey::new(ferry_raft::ClusterKey::from_secret(b"a guess")),
    );
    let refused = impostor
        .raft_batch(vote)
        .await
        .expect_err("a call with another secret's key");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // Node 3 back with the wrong secret: refused by its peers, refusing them.
    cluster.terminate(3).await;
    cluster.set_cluster_secret(3, "not this cluster's");
    cluster.spawn(3);
    let refusals = async |cluster: &TestCluster, id: u64| -> u64 {
        let Some((200, text)) = common::http_get(cluster.admin_addr(id), "/metrics").await else {
            return 0;
        };
        text.lines()
            .filter(|line| line.starts_with("ferry_internal_unauthenticated_total"))
            .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let before = refusals(&cluster, 1).await + refusals(&cluster, 2).await;
    wait_until(
        LEADER_TIMEOUT,
        "the members refuse node 3's calls and node 3 refuses theirs",
        async || {
            refusals(&cluster, 1).await + refusals(&cluster, 2).await > before
                && refusals(&cluster, 3).await > 0
        },
    )
    .await;
    assert!(
        !cluster.is_ready(3).await,
        "node 3 is ready without hearing from the catalog's leader"
    );
    let send =
        async |client: &mut FerryClient<Channel>, body: &str| send_body(client, QUEUE, body).await;
    let mut first = cluster.client(1);
    wait_for(
        LEADER_TIMEOUT,
        "the two members acknowledge a send without node 3",
        async || send(&mut first, "two of three").await.ok(),
    )
    .await;
    let applied = async |id: u64| {
        let groups = cluster.try_groups(id).await.unwrap_or_default();
        groups
            .iter()
            .find(|g| g.group == group)
            .and_then(|g| g.last_applied)
    };
    let members = applied(1).await.max(applied(2).await);
    let outsider = applied(3).await;
    assert!(
        outsider < members,
        "node 3 applied {outsider:?} of the partition's log without hearing from a member ({members:?})"
    );

    cluster.terminate(3).await;
    cluster.set_cluster_secret(3, common::CLUSTER_SECRET);
    cluster.restart(3).await;
    let mut third = cluster.client(3);
    wait_for(
        LEADER_TIMEOUT,
        "a send through the rejoined node is acknowledged",
        async || send(&mut third, "three of three").await.ok(),
    )
    .await;
}

/// Readiness through a catalog election: when the catalog's leader is SIGKILLed, the two survivors
/// hear from each other (a majority) and answer ready at every poll until they have a new leader,
/// which serves; a load balancer that dropped them meanwhile would refuse every client. The last
/// node, once it hears from no majority, turns unready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_stay_ready_while_the_catalog_elects_a_leader() {
    const NO_QUORUM_TIMEOUT: Duration = Duration::from_secs(25);
    let mut cluster = TestCluster::start(3, ClusterOptions::default()).await;
    let old_leader = cluster.wait_for_leader(0, LEADER_TIMEOUT).await;
    cluster.kill(old_leader);
    let survivors = cluster.running();
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let mut polls = 0;
    let new_leader = loop {
        for &id in &survivors {
            assert!(
                cluster.is_ready(id).await,
                "node {id} unready {polls} polls after the catalog leader {old_leader} died"
            );
        }
        polls += 1;
        if let Some(leader) = cluster.leader_of(0).await {
            break leader;
        }
        assert!(
            Instant::now() < deadline,
            "no new catalog leader after {LEADER_TIMEOUT:?}"
        );
        tokio::time::sleep(common::POLL_INTERVAL).await;
    };
    eprintln!("catalog leader {old_leader} -> {new_leader} after {polls} polls, all ready");
    for &id in &survivors {
        cluster
            .client(id)
            .create_queue(CreateQueueRequest {
                queue_name: format!("after-election-{id}"),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("create a queue through node {id}: {status:?}"));
    }

    let last = if new_leader == survivors[0] {
        survivors[1]
    } else {
        survivors[0]
    };
    cluster.kill(new_leader);
    wait_until(
        NO_QUORUM_TIMEOUT,
        "the last node reports itself unready",
        async || !cluster.is_ready(last).await,
    )
    .await;
}

/// Creates `queue` with one partition and returns its group once the group has a leader.
async fn create_one_partition_queue(cluster: &TestCluster, queue: &str) -> u64 {
    cluster
        .client(1)
        .create_queue(CreateQueueRequest {
            queue_name: queue.into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .expect("create the queue");
    wait_for(
        LEADER_TIMEOUT,
        "the queue's partition has a leader",
        async || {
            let groups = cluster.queue_groups(queue).await;
            let &[group] = &groups[..] else { return None };
            cluster.leader_of(group).await.map(|_| group)
        },
    )
    .await
}

async fn send_body(
    client: &mut FerryClient<Channel>,
    queue: &str,
    body: &str,
) -> Result<tonic::Response<ferry_proto::v1::SendMessageResponse>, tonic::Status> {
    client
        .send_message(ferry_proto::v1::SendMessageRequest {
            queue_name: queue.into(),
            body: body.into(),
            ..Default::default()
        })
        .await
}
