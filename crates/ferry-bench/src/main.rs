//! `ferry-bench`: measures a running Ferry cluster the way users load it: sends (single and batched),
//! receive+delete of a backlog, end-to-end latency at a fixed offered rate, FIFO with many groups,
//! and mixed produce/consume. Every run is bounded in message count and time. Prints a table and,
//! with `--json`, one JSON line per scenario. The same scenarios drive the durable peers the
//! benchmark compares Ferry with: a RabbitMQ quorum queue and a NATS JetStream stream (`peers`).

mod client;
mod host;
mod peers;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use client::{peer_call, Client};
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Transport {
    Grpc,
    Sqs,
    /// A RabbitMQ cluster (quorum queues), endpoints amqp://host:port.
    Amqp,
    /// A NATS cluster with JetStream (3 replicas), endpoints nats://host:port.
    Nats,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// Sends at full speed, `--batch` messages per call.
    Send,
    /// Fills a backlog of `--messages`, then receives and deletes it.
    Drain,
    /// Sends single messages at `--rate` per second and measures send-to-receive time with
    /// `--concurrency` consumers.
    Latency,
    /// Sends to a high-throughput FIFO queue over `--groups` message groups, then receives and
    /// deletes what it sent.
    Fifo,
    /// Producers and consumers at once; reports both rates.
    Mixed,
}

/// What fills a message body after its send time.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Payload {
    /// Random letters and digits: nothing for the nodes' storage to compress away.
    Random,
    /// `x` repeated: RocksDB's SST files shrink it about sixfold (the passes before the fourteenth
    /// measured with it).
    Repeated,
}

#[derive(Parser, Debug)]
#[command(name = "ferry-bench", about = "Load generator for a Ferry cluster")]
struct Args {
    #[arg(long, value_enum, default_value = "grpc")]
    transport: Transport,
    /// Node endpoints, comma separated: gRPC or SQS (http://host:port), AMQP (amqp://host:port),
    /// NATS (nats://host:port).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "send")]
    scenario: Vec<Scenario>,
    /// Concurrent workers (each a request in flight at a time): senders, or consumers of the
    /// latency scenario.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Messages per send call (1 = SendMessage, 2–10 = SendMessageBatch); for the peers, messages
    /// published before waiting for their confirmations (1–1,000).
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// What fills the bodies.
    #[arg(long, value_enum, default_value = "random")]
    payload: Payload,
    /// Upper bound on messages per scenario.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Upper bound on seconds per scenario.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Offered rate of the latency scenario, messages per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Queues the load is spread over.
    #[arg(long, default_value_t = 1)]
    queues: usize,
    /// Partitions of each standard queue the run creates (gRPC only; 0 = the cluster's default).
    #[arg(long, default_value_t = 0)]
    partitions: u32,
    /// Message groups of the FIFO scenario (and of the send scenario with `--fair-groups`).
    #[arg(long, default_value_t = 100)]
    groups: usize,
    /// Send scenario: every call carries a MessageGroupId out of `--groups`, as SQS fair queues
    /// take it on a standard queue.
    #[arg(long)]
    fair_groups: bool,
    /// Prefix of the queues this run creates (a fresh one per run keeps runs apart).
    #[arg(long)]
    queue_prefix: Option<String>,
    /// Also print one JSON line per scenario.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    scenario: Scenario,
    transport: &'static str,
    concurrency: usize,
    batch: usize,
    size: usize,
    payload: Payload,
    messages: u64,
    seconds: f64,
    messages_per_second: f64,
    /// What the latencies measure: a call, or send-to-receive.
    latency_of: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    errors: u64,
    /// The machine's CPU time busy and stolen by the hypervisor over the whole scenario (queue
    /// creation included), in per cent; absent where the machine does not tell.
    host_busy_pct: Option<f64>,
    host_steal_pct: Option<f64>,
}

/// The queues of a run, taken in turn by every call of every worker, so that all of them carry
/// load however many workers there are.
struct QueueTurns {
    queues: Vec<String>,
    next: AtomicUsize,
}

impl QueueTurns {
    fn new(queues: &[String]) -> Arc<Self> {
        Arc::new(Self {
            queues: queues.to_vec(),
            next: AtomicUsize::new(0),
        })
    }

    fn next(&self) -> &str {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.queues[turn % self.queues.len()]
    }
}

/// Shared counters of one scenario's workers.
struct Tally {
    messages: AtomicU64,
    errors: AtomicU64,
    latencies: Mutex<Histogram<u64>>,
}

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            messages: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latencies: Mutex::new(
                Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
            ),
        })
    }

    fn record(&self, micros: u64) {
        let _ = self
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(micros.max(1));
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Random text that random payloads are cut from.
const RANDOM_TEXT_BYTES: usize = 4 << 20;

/// A body of `size` bytes that starts with its send time, so a receiver can measure end to end.
fn body(size: usize, payload: Payload, sequence: u64) -> String {
    let mut body = format!("{}:{sequence}:", now_micros());
    let fill = size.saturating_sub(body.len());
    match payload {
        Payload::Random => {
            // A slice at a random place of a shared random text, so the load generator spends
            // nothing per byte; two slices in one 4 KiB SST block seldom overlap in 4 MiB, so
            // there is nothing for the nodes to compress.
            static TEXT: OnceLock<String> = OnceLock::new();
            let text = TEXT.get_or_init(|| {
                rand::thread_rng()
                    .sample_iter(rand::distributions::Alphanumeric)
                    .take(RANDOM_TEXT_BYTES)
                    .map(char::from)
                    .collect()
            });
            let mut left = fill;
            while left > 0 {
                let take = left.min(text.len());
                let start = rand::thread_rng().gen_range(0..=text.len() - take);
                body.push_str(&text[start..start + take]);
                left -= take;
            }
        }
        Payload::Repeated => body.push_str(&"x".repeat(fill)),
    }
    body
}

fn sent_at(body: &str) -> Option<u64> {
    body.split(':').next()?.parse().ok()
}

struct Bench {
    args: Args,
    client: Client,
    prefix: String,
}

impl Bench {
    fn queue(&self, scenario: Scenario, index: usize) -> String {
        let suffix = if scenario == Scenario::Fifo {
            ".fifo"
        } else {
            ""
        };
        format!("{}-{scenario:?}-{index}{suffix}", self.prefix).to_lowercase()
    }

    async fn create_queues(&self, scenario: Scenario) -> anyhow::Result<Vec<String>> {
        let count = if scenario == Scenario::Fifo {
            1
        } else {
            self.args.queues.max(1)
        };
        let mut names = Vec::new();
        for index in 0..count {
            let name = self.queue(scenario, index);
            self.client
                .create_queue(&name, scenario == Scenario::Fifo, self.args.partitions)
                .await?;
            names.push(name);
        }
        Ok(names)
    }

    fn report(
        &self,
        scenario: Scenario,
        tally: &Tally,
        elapsed: Duration,
        latency_of: &'static str,
        messages: u64,
    ) -> Report {
        let histogram = tally.latencies.lock().unwrap_or_else(|e| e.into_inner());
        let ms = |micros: u64| micros as f64 / 1000.0;
        Report {
            scenario,
            transport: match self.args.transport {
                Transport::Grpc => "grpc",
                Transport::Sqs => "sqs-json",
                Transport::Amqp => "amqp",
                Transport::Nats => "nats",
            },
            concurrency: self.args.concurrency,
            batch: if matches!(scenario, Scenario::Latency) {
                1
            } else {
                self.args.batch
            },
            size: self.args.size,
            payload: self.args.payload,
            messages,
            seconds: elapsed.as_secs_f64(),
            messages_per_second: messages as f64 / elapsed.as_secs_f64().max(1e-9),
            latency_of,
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            errors: tally.errors.load(Ordering::Relaxed),
            host_busy_pct: None,
            host_steal_pct: None,
        }
    }

    /// Sends until `limit` messages or the deadline, with `concurrency` workers.
    async fn send_load(
        self: &Arc<Self>,
        queues: &[String],
        limit: u64,
        deadline: Instant,
        group_count: Option<usize>,
    ) -> Arc<Tally> {
        let tally = Tally::new();
        let queues = QueueTurns::new(queues);
        let mut workers = Vec::new();
        for worker in 0..self.args.concurrency {
            let bench = self.clone();
            let tally = tally.clone();
            let queues = queues.clone();
            workers.push(tokio::spawn(async move {
                let mut sequence = 0u64;
                while Instant::now() < deadline && tally.messages.load(Ordering::Relaxed) < limit {
                    let queue = queues.next();
                    let bodies: Vec<String> = (0..bench.args.batch)
                        .map(|_| {
                            sequence += 1;
                            body(bench.args.size, bench.args.payload, sequence)
                        })
                        .collect();
                    let group = group_count.map(|groups| {
                        format!("group-{}", (worker * 7919 + sequence as usize) % groups)
                    });
                    let started = Instant::now();
                    match bench
                        .client
                        .send(worker, queue, &bodies, group.as_deref())
                        .await
                    {
                        Ok(()) => {
                            tally.record(started.elapsed().as_micros() as u64);
                            tally
                                .messages
                                .fetch_add(bodies.len() as u64, Ordering::Relaxed);
                        }
                        Err(error) => {
                            if tally.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("send error: {error:#}");
                            }
                        }
                    }
                }
            }));
        }
        for worker in workers {
            let _ = worker.await;
        }
        tally
    }

    /// Receives and deletes until `limit` messages (which may be lowered while it runs) or the
    /// deadline; records send-to-receive time.
    async fn consume_load(
        self: &Arc<Self>,
        queues: &[String],
        limit: Arc<AtomicU64>,
        deadline: Instant,
        workers: usize,
    ) -> Arc<Tally> {
        let tally = Tally::new();
        let queues = QueueTurns::new(queues);
        let mut tasks = Vec::new();
        for worker in 0..workers {
            let bench = self.clone();
            let tally = tally.clone();
            let limit = limit.clone();
            let queues = queues.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline
                    && tally.messages.load(Ordering::Relaxed) < limit.load(Ordering::Relaxed)
                {
                    let queue = queues.next();
                    match bench.client.receive(worker, queue, 10, 1).await {
                        Ok(messages) => {
                            let now = now_micros();
                            for message in &messages {
                                if let Some(sent) = sent_at(&message.body) {
                                    tally.record(now.saturating_sub(sent));
                                }
                            }
                            tally
                                .messages
                                .fetch_add(messages.len() as u64, Ordering::Relaxed);
                            let handles = messages.into_iter().map(|m| m.receipt_handle).collect();
                            if let Err(error) = bench.client.delete(worker, queue, handles).await {
                                if tally.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                    eprintln!("delete error: {error:#}");
                                }
                            }
                        }
                        Err(error) => {
                            if tally.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("receive error: {error:#}");
                            }
                        }
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        tally
    }

    /// Receives and deletes the backlog that `sent` stored; reports the sends, then the drain.
    async fn drain(
        self: &Arc<Self>,
        scenario: Scenario,
        queues: &[String],
        sent: &Tally,
        sending: Duration,
        sends_are: &'static str,
    ) -> Vec<Report> {
        let backlog = sent.messages.load(Ordering::Relaxed);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(self.args.duration) * 2;
        let tally = self
            .consume_load(
                queues,
                Arc::new(AtomicU64::new(backlog)),
                deadline,
                self.args.concurrency,
            )
            .await;
        let drained = tally.messages.load(Ordering::Relaxed);
        vec![
            self.report(scenario, sent, sending, sends_are, backlog),
            self.report(
                scenario,
                &tally,
                started.elapsed(),
                "send to receive",
                drained,
            ),
        ]
    }

    async fn run(self: &Arc<Self>, scenario: Scenario) -> anyhow::Result<Vec<Report>> {
        let queues = self.create_queues(scenario).await?;
        let duration = Duration::from_secs(self.args.duration);
        let limit = self.args.messages;
        Ok(match scenario {
            Scenario::Send => {
                let started = Instant::now();
                let groups = self.args.fair_groups.then_some(self.args.groups);
                let tally = self
                    .send_load(&queues, limit, started + duration, groups)
                    .await;
                let sent = tally.messages.load(Ordering::Relaxed);
                vec![self.report(scenario, &tally, started.elapsed(), "send call", sent)]
            }
            Scenario::Fifo => {
                let started = Instant::now();
                let groups = Some(self.args.groups);
                let sent = self
                    .send_load(&queues, limit, started + duration, groups)
                    .await;
                self.drain(scenario, &queues, &sent, started.elapsed(), "send call")
                    .await
            }
            Scenario::Drain => {
                let started = Instant::now();
                let fill = self
                    .send_load(&queues, limit, started + duration * 4, None)
                    .await;
                self.drain(
                    scenario,
                    &queues,
                    &fill,
                    started.elapsed(),
                    "send call (fill)",
                )
                .await
            }
            Scenario::Latency => {
                let started = Instant::now();
                let deadline = started + duration;
                let total = (self.args.rate * self.args.duration).min(limit);
                // Lowered to what was sent once the sends end, so the consumers do not wait out
                // their deadline for messages the send window had no time for.
                let to_receive = Arc::new(AtomicU64::new(total));
                let consumers = {
                    let bench = self.clone();
                    let queues = queues.clone();
                    let workers = self.args.concurrency;
                    let to_receive = to_receive.clone();
                    tokio::spawn(async move {
                        bench
                            .consume_load(
                                &queues,
                                to_receive,
                                deadline + Duration::from_secs(10),
                                workers,
                            )
                            .await
                    })
                };
                let producer = Tally::new();
                let mut ticker =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / self.args.rate as f64));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut sends = tokio::task::JoinSet::new();
                for sequence in 0..total {
                    ticker.tick().await;
                    if Instant::now() >= deadline {
                        break;
                    }
                    let bench = self.clone();
                    let queue = queues[sequence as usize % queues.len()].clone();
                    let producer = producer.clone();
                    sends.spawn(async move {
                        let started = Instant::now();
                        match bench
                            .client
                            .send(
                                sequence as usize,
                                &queue,
                                &[body(bench.args.size, bench.args.payload, sequence)],
                                None,
                            )
                            .await
                        {
                            Ok(()) => {
                                producer.record(started.elapsed().as_micros() as u64);
                                producer.messages.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                producer.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                    while sends.try_join_next().is_some() {}
                }
                while sends.join_next().await.is_some() {}
                let send_window = started.elapsed();
                // A send that failed may still have been stored; then the consumers wait for it
                // until their deadline.
                let sent = producer.messages.load(Ordering::Relaxed);
                to_receive.store(
                    sent + producer.errors.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                let consumed = consumers.await?;
                let received = consumed.messages.load(Ordering::Relaxed);
                // Rates over the sending window: the consumers' extra time to catch up is latency.
                vec![
                    self.report(scenario, &producer, send_window, "send call", sent),
                    self.report(
                        scenario,
                        &consumed,
                        send_window,
                        "send to receive",
                        received,
                    ),
                ]
            }
            Scenario::Mixed => {
                let started = Instant::now();
                let deadline = started + duration;
                let consumers = {
                    let bench = self.clone();
                    let queues = queues.clone();
                    let workers = self.args.concurrency;
                    tokio::spawn(async move {
                        bench
                            .consume_load(
                                &queues,
                                Arc::new(AtomicU64::new(u64::MAX)),
                                deadline,
                                workers,
                            )
                            .await
                    })
                };
                let produced = self.send_load(&queues, limit, deadline, None).await;
                let consumed = consumers.await?;
                let elapsed = started.elapsed();
                vec![
                    self.report(
                        scenario,
                        &produced,
                        elapsed,
                        "send call",
                        produced.messages.load(Ordering::Relaxed),
                    ),
                    self.report(
                        scenario,
                        &consumed,
                        elapsed,
                        "send to receive",
                        consumed.messages.load(Ordering::Relaxed),
                    ),
                ]
            }
        })
    }
}

fn print_table(reports: &[Report]) {
    println!(
        "{:<8} {:<8} {:>5} {:>5} {:>6} {:<8} {:>9} {:>7} {:>10} {:<16} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6}",
        "scenario",
        "via",
        "conc",
        "batch",
        "size",
        "payload",
        "messages",
        "secs",
        "msg/s",
        "latency of",
        "p50 ms",
        "p99 ms",
        "p99.9",
        "max ms",
        "errors",
        "busy %",
        "steal%"
    );
    for r in reports {
        println!(
            "{:<8} {:<8} {:>5} {:>5} {:>6} {:<8} {:>9} {:>7.1} {:>10.0} {:<16} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>6} {:>6}",
            format!("{:?}", r.scenario).to_lowercase(),
            r.transport,
            r.concurrency,
            r.batch,
            r.size,
            format!("{:?}", r.payload).to_lowercase(),
            r.messages,
            r.seconds,
            r.messages_per_second,
            r.latency_of,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.errors,
            percent(r.host_busy_pct),
            percent(r.host_steal_pct)
        );
    }
}

fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "-".to_owned(), |share| format!("{share:.1}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let max_batch = match args.transport {
        Transport::Grpc | Transport::Sqs => 10,
        Transport::Amqp | Transport::Nats => 1_000,
    };
    if !(1..=max_batch).contains(&args.batch) {
        bail!("--batch must be 1 to {max_batch}");
    }
    let client = match args.transport {
        Transport::Grpc => Client::grpc(&args.endpoints).await?,
        Transport::Sqs => Client::sqs(&args.endpoints, args.concurrency)?,
        Transport::Amqp => {
            let amqp = peer_call(peers::Amqp::connect(&args.endpoints, args.concurrency)).await?;
            Client::Amqp(Arc::new(amqp))
        }
        Transport::Nats => {
            let nats = peer_call(peers::Nats::connect(&args.endpoints)).await?;
            Client::Nats(Arc::new(nats))
        }
    };
    let prefix = args
        .queue_prefix
        .clone()
        .unwrap_or_else(|| format!("bench{}", now_micros() % 1_000_000_000));
    let scenarios = args.scenario.clone();
    let bench = Arc::new(Bench {
        args,
        client,
        prefix,
    });
    let mut reports = Vec::new();
    for scenario in scenarios {
        let before = host::CpuTimes::read();
        let scenario_reports = bench.run(scenario).await?;
        let load = before
            .zip(host::CpuTimes::read())
            .and_then(|(b, a)| b.load_until(&a));
        for mut report in scenario_reports {
            report.host_busy_pct = load.map(|load| load.busy_pct);
            report.host_steal_pct = load.map(|load| load.steal_pct);
            if bench.args.json {
                println!("{}", serde_json::to_string(&report)?);
            }
            reports.push(report);
        }
    }
    print_table(&reports);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_turns_reach_every_queue_however_few_workers() {
        let names: Vec<String> = (0..1_000).map(|i| format!("q{i}")).collect();
        let turns = QueueTurns::new(&names);
        let taken: std::collections::HashSet<&str> = (0..1_000).map(|_| turns.next()).collect();
        assert_eq!(taken.len(), 1_000);
        assert_eq!(turns.next(), "q0", "the turns wrap around");
    }
}
