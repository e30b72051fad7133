//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use eglr::config::{KafkaConfig, PipelineConfig};
use eglr::drive::loadgen::{self, LoadReport, Outgoing};
use eglr::features::{DenseNormaliser, FeatureEncoder};
use eglr::model::{Bundle, BundleMeta, Evaluator, Generator, TrainingInfo, BUNDLE_FORMAT};
use eglr::sim::{Traffic, World};

/// The shipped local pipeline.
pub fn pipeline() -> PipelineConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    PipelineConfig::load(&root.join("pipelines/local.toml"), &[]).expect("pipeline")
}

/// tansu 0.6 answers a fetch that starts inside a record batch with the batch after it
/// (inside the last batch, with nothing until another batch arrives): the rest of the
/// batch is never delivered. See `tansu_broker::tansu_skips_the_rest_of_a_batch_fetched_from_inside`.
/// A consumer starts inside a batch after every resume, seek and restart from a
/// committed offset, so against tansu every client of a test writes one record per
/// batch. Kafka returns the whole batch and the client drops the records before the
/// offset; the embedded broker does the same, and its tests keep ordinary batching.
pub const ONE_RECORD_PER_BATCH: (&str, &str) = ("batch.num.messages", "1");

/// `p` with [`ONE_RECORD_PER_BATCH`], for clients of a tansu broker.
pub fn for_tansu(mut p: PipelineConfig) -> PipelineConfig {
    let (k, v) = ONE_RECORD_PER_BATCH;
    p.kafka.properties.insert(k.into(), v.into());
    p
}

/// An untrained but complete bundle: serving does not care how good the model is.
/// With semantic ids in the spec, its tokenizer is fitted on the items of the requests
/// [`requests`] sends.
pub fn write_bundle(p: &PipelineConfig, dir: &Path, seed: u64) {
    let world = World::generate(&pipeline().simulator, 10, 3);
    let traffic = Traffic::new(&world, 1);
    let catalogue: std::collections::BTreeMap<String, eglr::schema::Candidate> = (0..200)
        .flat_map(|i| traffic.request(&traffic.impression(i)).candidates)
        .map(|c| (c.item_id.0.clone(), c))
        .collect();
    let encoder = FeatureEncoder::new(p.features.clone(), DenseNormaliser::default())
        .fit_semantic_ids(&catalogue)
        .expect("semantic ids");
    let (ev, gv) = (VarMap::new(), VarMap::new());
    Evaluator::new(
        &p.evaluator,
        &encoder,
        p.limits.max_list_len,
        VarBuilder::from_varmap(&ev, DType::F32, &Device::Cpu),
    )
    .expect("evaluator");
    Generator::new(
        &p.generator,
        &encoder,
        p.limits.max_list_len,
        VarBuilder::from_varmap(&gv, DType::F32, &Device::Cpu),
    )
    .expect("generator");
    eglr::train::seeded_init(&ev, seed).expect("init");
    eglr::train::seeded_init(&gv, seed + 1).expect("init");
    let meta = BundleMeta {
        format: BUNDLE_FORMAT,
        version: "test".into(),
        features: p.features.clone(),
        normaliser: DenseNormaliser::default(),
        semantic_ids: encoder.semantic_ids().cloned(),
        evaluator: p.evaluator.clone(),
        generator: p.generator.clone(),
        max_list_len: p.limits.max_list_len,
        training: TrainingInfo {
            data: "none".into(),
            seed,
            part: eglr::model::DataPart::All,
            judge_share: 0.0,
            cold_item_share: 0.0,
            git_revision: None,
            created_unix_ms: 0,
            metrics: serde_json::Value::Null,
        },
    };
    Bundle::save(dir, &meta, &ev, &gv).expect("save bundle");
}

/// `n` simulator requests; every `malformed_every`-th is replaced by `bad(k)`.
/// Returns the messages, the ids of the valid ones and the number of bad ones.
pub fn requests(
    n: usize,
    seed: u64,
    malformed_every: usize,
    bad: impl Fn(usize) -> Vec<u8>,
) -> (Vec<Outgoing>, Vec<String>, usize) {
    let world = World::generate(&pipeline().simulator, 10, 3);
    let every = (malformed_every != usize::MAX).then_some(malformed_every);
    let load = loadgen::simulated_requests(&Traffic::new(&world, seed), n, every, bad);
    (load.outgoing, load.valid, load.malformed)
}

/// Runs the load generator in the background; every result is waited for up to 180 s
/// after the last request.
pub fn spawn_load(
    kafka: &KafkaConfig,
    brokers: &str,
    out: Vec<Outgoing>,
    valid: Vec<String>,
    dlq: usize,
    rate: Option<f64>,
) -> tokio::task::JoinHandle<LoadReport> {
    spawn_load_for(
        kafka,
        brokers,
        (out, valid, dlq),
        rate,
        Duration::from_secs(180),
    )
}

/// Runs the load generator in the background: the messages, the ids that must get a
/// result and the dead letters expected, offered at `rate`, results waited for up to
/// `timeout` after the last request was sent.
pub fn spawn_load_for(
    kafka: &KafkaConfig,
    brokers: &str,
    (out, valid, dlq): (Vec<Outgoing>, Vec<String>, usize),
    rate: Option<f64>,
    timeout: Duration,
) -> tokio::task::JoinHandle<LoadReport> {
    let (kafka, brokers) = (kafka.clone(), brokers.to_owned());
    tokio::spawn(async move {
        let plan = loadgen::LoadPlan {
            outgoing: out,
            expect_results: &valid,
            expect_dlq: dlq,
            rate,
            max_in_flight: None,
            warmup: Duration::ZERO,
            timeout,
            wait_until_answered: false,
        };
        loadgen::run(&kafka, &brokers, plan).await.expect("load")
    })
}

/// A tansu broker process (an independent Kafka-compatible broker), killed on drop.
pub struct Tansu(Child);

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Tansu {
    /// Stops the broker process (SIGSTOP) for `pause`, then lets it go on (SIGCONT): a
    /// broker that hangs, as in a long GC pause or a frozen VM.
    pub fn pause(&self, pause: Duration) {
        let pid = self.0.id().to_string();
        let signal = |s: &str| {
            Command::new("kill")
                .args([s, &pid])
                .status()
                .expect("kill -STOP/-CONT")
        };
        signal("-STOP");
        std::thread::sleep(pause);
        signal("-CONT");
    }
}

/// The tansu binary: cargo's install directory first, then `PATH`.
fn tansu_binary() -> Option<String> {
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let installed = format!("{home}/bin/tansu");
    if Path::new(&installed).exists() {
        return Some(installed);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join("tansu").is_file()))
        .unwrap_or(false);
    on_path.then(|| "tansu".to_owned())
}

/// Whether the tansu tests can run. Without tansu a test is skipped with a message,
/// unless `TANSU_REQUIRED=1` (set by `scripts/test.sh`, so by CI): then it fails.
pub fn tansu_or_skip(test: &str) -> bool {
    let hint = "install it with `bash deploy/install-deps.sh` (cargo install tansu --locked --features dynostore)";
    present_or_skip(test, "tansu", hint, tansu_binary().is_some())
}

/// `present`, or else the test is skipped with a message saying `what` is missing and
/// `hint`, unless `TANSU_REQUIRED=1`, which asks for every tool of `install-deps.sh
/// --with-tansu`: then it fails.
pub fn present_or_skip(test: &str, what: &str, hint: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(
        std::env::var("TANSU_REQUIRED").as_deref() != Ok("1"),
        "{test}: {what} is required (TANSU_REQUIRED=1) but not installed: {hint}"
    );
    eprintln!("SKIPPED {test}: {what} is not installed; {hint}");
    false
}

/// A program of the Python tools `install-deps.sh --with-tansu` puts in `.tools/venv`.
pub fn python_tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/venv/bin")
        .join(name)
}

/// Runs `command` to its end: whether it succeeded, and its stdout and stderr together.
pub fn run_tool(command: &mut Command) -> (bool, String) {
    let out = command.output().expect("the tool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A free loopback port (picked by the system, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts tansu on a free loopback port (it listens on IPv4 only).
pub fn start_tansu() -> (Tansu, String) {
    start_tansu_with(None)
}

/// Starts tansu on a free loopback port, advertising `advertised` instead when given (a
/// TLS proxy in front of it).
pub fn start_tansu_with(advertised: Option<u16>) -> (Tansu, String) {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised_url = format!("tcp://127.0.0.1:{}", advertised.unwrap_or(port));
    let binary = tansu_binary().expect("tansu installed (checked by tansu_or_skip)");
    let child = Command::new(binary)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised_url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu starts");
    wait_for_port(port, "tansu");
    (Tansu(child), format!("127.0.0.1:{port}"))
}

/// Waits up to 20 s until something (`what`) listens on loopback `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An `eglr` subcommand running as a process (killed on drop).
pub struct EglrProcess(Child);

impl EglrProcess {
    /// `eglr [--pipeline FILE] ARGS...` in the crate root, with extra environment.
    pub fn start(pipeline: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_eglr"));
        if let Some(file) = pipeline {
            command.arg("--pipeline").arg(file);
        }
        // The process tests are the broker-fault tests, most of them on tansu: see
        // ONE_RECORD_PER_BATCH (an environment override, so any pipeline file keeps it).
        command
            .current_dir(root)
            .args(args)
            .env("RUST_LOG", "warn")
            .env(
                "EGLR_KAFKA__PROPERTIES__BATCH_NUM_MESSAGES",
                ONE_RECORD_PER_BATCH.1,
            )
            .stdout(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        EglrProcess(command.spawn().expect("eglr starts"))
    }

    /// How it exited, once it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }

    pub fn sigkill(&mut self) {
        self.0.kill().expect("SIGKILL");
        let _ = self.0.wait();
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.0.wait().expect("exit")
    }
}

impl Drop for EglrProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The local pipeline with a static group membership (`group.instance.id`, KIP-345):
/// the identity a restarted instance (e.g. a StatefulSet pod) keeps.
pub fn static_member_pipeline(dir: &Path, instance: &str) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = std::fs::read_to_string(root.join("pipelines/local.toml")).expect("pipeline");
    let file = dir.join(format!("static-member-{instance}.toml"));
    let text = format!("{base}\n[kafka.properties]\n\"group.instance.id\" = \"{instance}\"\n");
    std::fs::write(&file, text).expect("write pipeline");
    file
}

/// End offsets of what was produced: (topic, partition) -> the next offset.
pub type Ends = BTreeMap<(String, i32), i64>;

/// The offsets `group` has committed on the partitions of `ends` (0 where none).
pub fn committed(brokers: &str, group: &str, ends: &Ends) -> Ends {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (topic, partition) in ends.keys() {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    committed
        .elements()
        .iter()
        .map(|e| {
            let offset = e.offset().to_raw().unwrap_or(0).max(0);
            ((e.topic().to_owned(), e.partition()), offset)
        })
        .collect()
}

/// Messages produced (`ends`) past the offsets `group` has committed (0: everything
/// is committed). The ends come from the deliveries, not the broker's watermarks (tansu
/// 0.6 reports latest offsets that differ from what it delivered).
pub fn uncommitted(brokers: &str, group: &str, ends: &Ends) -> i64 {
    committed(brokers, group, ends)
        .iter()
        .map(|(partition, offset)| ends[partition] - offset)
        .sum()
}

/// Every message of `topics` from the beginning, read until none has come for `quiet`:
/// (topic, partition, offset, key). Delivery offsets, not the broker's watermarks
/// (tansu 0.6 reports latest offsets that differ from what it delivered).
pub fn read_topics(
    brokers: &str,
    topics: &[&str],
    quiet: Duration,
) -> Vec<(String, i32, i64, String)> {
    use rdkafka::Message;
    read_topics_as(brokers, topics, quiet, |m| {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        (m.topic().to_owned(), m.partition(), m.offset(), key)
    })
}

/// The payloads of every message of `topic` from the beginning, read until none has
/// come for `quiet`.
pub fn read_payloads(brokers: &str, topic: &str, quiet: Duration) -> Vec<Vec<u8>> {
    use rdkafka::Message;
    read_topics_as(brokers, &[topic], quiet, |m| {
        m.payload().unwrap_or_default().to_vec()
    })
}

/// Every message of `topics` from the beginning as `read` makes it, read until none has
/// come for `quiet`.
fn read_topics_as<T>(
    brokers: &str,
    topics: &[&str],
    quiet: Duration,
    read: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> T,
) -> Vec<T> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "eglr-test-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(20))
            .expect("metadata");
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                    .expect("offset");
            }
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut messages = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last = Instant::now();
                messages.push(read(&m));
            }
            Some(Err(e)) => eprintln!("reading the topics: {e}"),
            None => {}
        }
    }
    messages
}

/// The end offsets of `messages` (as [`read_topics`] returns them).
pub fn ends_of(messages: &[(String, i32, i64, String)]) -> Ends {
    let mut ends = Ends::new();
    for (topic, partition, offset, _) in messages {
        let end = ends.entry((topic.clone(), *partition)).or_default();
        *end = (*end).max(offset + 1);
    }
    ends
}
