//! A chaos soak on tansu: steady simulated traffic through `eglr serve` and `eglr log`
//! as real processes, simulated users clicking on what is served, while both stages are
//! SIGKILLed and restarted at random moments and the broker is frozen (SIGSTOP) for a
//! while. At the end every request has been answered at least once, every served list
//! is in the Parquet log exactly once after de-duplication, nothing went to the side
//! file as unjoinable, and both groups have committed every offset.
//!
//! CI runs about three minutes of it. The long version is one command:
//! `scripts/soak.sh --minutes 30` (it sets `SOAK_MINUTES`); `docs/reliability.md`
//! reports such a run. The figures are printed and written as JSON to
//! `target/soak/report.json` (or `SOAK_REPORT`).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::sync::watch;

use common::{
    ends_of, pipeline, read_topics, spawn_load_for, start_tansu, static_member_pipeline,
    uncommitted, write_bundle, EglrProcess,
};
use eglr::drive::loadgen::simulated_requests;
use eglr::drive::respond;
use eglr::list_log::LogReader;
use eglr::sim::{Traffic, World};
use eglr::stream::kafka::create_topics;

/// Requests offered per second: steady, well under what `serve` sustains on two cores,
/// so that it catches up after each kill.
const RATE: f64 = 40.0;
/// Each stage is killed this often on average, and the broker frozen half as often.
const KILL_EVERY: Duration = Duration::from_secs(60);
/// How long the broker is frozen: longer than a fetch, shorter than the 10 s session
/// timeout (static members are not expected to lose their partitions).
const BROKER_PAUSE: Duration = Duration::from_secs(5);

/// One thing done to the running system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Fault {
    KillServe,
    KillLog,
    PauseBroker,
}

/// What the soak measured.
#[derive(Debug, Serialize)]
struct SoakReport {
    minutes_of_load: f64,
    seed: u64,
    requests_offered: usize,
    requests_not_acked: usize,
    requests_answered: usize,
    requests_lost: usize,
    duplicate_results: usize,
    lists_logged: usize,
    lists_missing_from_log: usize,
    log_rows_re_read: usize,
    side_file: BTreeMap<String, usize>,
    serve_restarts: usize,
    log_restarts: usize,
    /// When (seconds into the load) and how a stage exited by itself; the supervisor
    /// started it again.
    serve_exits: Vec<(f64, String)>,
    log_exits: Vec<(f64, String)>,
    broker_pauses: usize,
    uncommitted_serve: i64,
    uncommitted_log: i64,
    p50_ms: f64,
    p99_ms: f64,
    faults: Vec<(f64, Fault)>,
    wall_s: f64,
    /// When the load started (Unix ms): fault times are seconds from it.
    load_started_unix_ms: i64,
}

/// A stage as a supervisor (a Kubernetes pod's restart policy) runs it: an instance that
/// exits by itself (a stage exits non-zero when it cannot go on, e.g. a fatal producer
/// error) is started again, and the exit is recorded.
struct Supervised<F: Fn() -> EglrProcess> {
    start: F,
    process: EglrProcess,
    exits: Vec<(f64, String)>,
}

impl<F: Fn() -> EglrProcess> Supervised<F> {
    fn new(start: F) -> Self {
        let process = start();
        Self {
            start,
            process,
            exits: Vec::new(),
        }
    }

    /// Restarts the stage if it has exited, `at` seconds into the load.
    fn watch(&mut self, at: f64, name: &str) {
        if let Some(status) = self.process.exited() {
            println!("{at:>7.1} s: {name} exited by itself ({status}); restarted");
            self.exits.push((at, status.to_string()));
            self.process = (self.start)();
        }
    }

    async fn kill_and_restart_after(&mut self, down: Duration) {
        self.process.sigkill();
        tokio::time::sleep(down).await;
        self.process = (self.start)();
    }
}

/// Minutes of load: `SOAK_MINUTES`, else the CI size. (Not an `EGLR_` variable: the
/// stages inherit the environment and refuse unknown `EGLR_` settings.)
fn minutes() -> f64 {
    match std::env::var("SOAK_MINUTES") {
        Ok(m) => m
            .parse::<f64>()
            .ok()
            .filter(|m| *m > 0.0)
            .unwrap_or_else(|| panic!("SOAK_MINUTES={m:?} is not a positive number")),
        Err(_) => 2.0,
    }
}

/// The faults and when they strike (seconds into the load): at least two kills of each
/// stage and one broker pause, more on longer runs, at random moments at least 8 s
/// apart (so each restart has joined its group before the next blow) and none in the
/// first or last tenth of the load.
fn schedule(load: Duration, rng: &mut ChaCha8Rng) -> Vec<(f64, Fault)> {
    let kills = ((load.as_secs_f64() / KILL_EVERY.as_secs_f64()).round() as usize).max(2);
    let mut faults: Vec<Fault> = std::iter::repeat_n(Fault::KillServe, kills)
        .chain(std::iter::repeat_n(Fault::KillLog, kills))
        .chain(std::iter::repeat_n(Fault::PauseBroker, (kills / 2).max(1)))
        .collect();
    faults.shuffle(rng);
    let (from, to) = (load.as_secs_f64() * 0.1, load.as_secs_f64() * 0.9);
    let spacing = 8.0;
    let room = (to - from) - spacing * (faults.len() as f64 - 1.0);
    assert!(
        room > 0.0,
        "{load:?} of load is too short for {} faults",
        faults.len()
    );
    // Random points in the room left after the spacing, then spread by it.
    let mut points: Vec<f64> = (0..faults.len())
        .map(|_| rng.random::<f64>() * room)
        .collect();
    points.sort_by(f64::total_cmp);
    points
        .into_iter()
        .enumerate()
        .map(|(i, x)| from + x + spacing * i as f64)
        .zip(faults)
        .collect()
}

/// Unique logged request ids and the rows dropped as re-read duplicates.
fn logged(dir: &Path) -> (HashSet<String>, usize) {
    let mut ids = HashSet::new();
    let Ok(reader) = LogReader::open(&dir.display().to_string(), 4096) else {
        return (ids, 0);
    };
    let mut batches = reader.batches();
    for batch in batches.by_ref() {
        for row in batch.expect("readable log") {
            assert!(ids.insert(row.request_id), "the reader de-duplicates");
        }
    }
    (ids, batches.duplicates())
}

fn side_file(dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir.join(eglr::stream::UNJOINED_DIR)) else {
        return counts;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("unjoined-") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON lines");
            *counts
                .entry(v["reason"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_on_tansu_answers_every_request_and_logs_every_list_once() {
    if !common::tansu_or_skip("chaos_soak_on_tansu_answers_every_request_and_logs_every_list_once")
    {
        return;
    }
    let started = Instant::now();
    let minutes = minutes();
    let load_for = Duration::from_secs_f64(minutes * 60.0);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| eglr::clock::unix_millis() as u64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let faults = schedule(load_for, &mut rng);
    println!("soak: {minutes} min of load at {RATE}/s, seed {seed}, faults {faults:?}");

    let p = common::for_tansu(pipeline());
    let t = &p.kafka.topics;
    let (tansu, brokers) = start_tansu();
    let tansu = Arc::new(tansu);
    create_topics(
        &p.kafka,
        &brokers,
        &[
            (t.requests.as_str(), 4),
            (t.results.as_str(), 4),
            (t.feedback.as_str(), 4),
            (t.dead_letter.as_str(), 1),
        ],
    )
    .await
    .expect("topics on tansu");
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, logs) = (dir.path().join("models"), dir.path().join("logs"));
    write_bundle(&p, &store.join("v000001"), 1);
    let (store_arg, logs_arg) = (store.display().to_string(), logs.display().to_string());
    // Static members (KIP-345), as a StatefulSet runs them: tansu 0.6 never hands a
    // SIGKILLed dynamic member's partitions to its successor (see tests/serve_process.rs).
    let serve_pipeline = static_member_pipeline(dir.path(), "serve-0");
    let log_pipeline = static_member_pipeline(dir.path(), "logger-0");
    let start_serve = || {
        EglrProcess::start(
            Some(&serve_pipeline),
            &[
                "serve",
                "--brokers",
                &brokers,
                "--metrics-addr",
                "127.0.0.1:0",
                "--model-store",
                &store_arg,
            ],
            &[("EGLR_KAFKA__GROUP_ID", "soak-serve")],
        )
    };
    let window_s = 5;
    let start_log = || {
        EglrProcess::start(
            Some(&log_pipeline),
            &[
                "log",
                "--brokers",
                &brokers,
                "--logs",
                &logs_arg,
                "--window-s",
                &window_s.to_string(),
                "--group",
                "soak-log",
                "--metrics-addr",
                "127.0.0.1:0",
            ],
            &[("EGLR_LOGS__ROLL_MAX_SECONDS", "2")],
        )
    };
    let mut serve = Supervised::new(start_serve);
    let mut log = Supervised::new(start_log);

    // The simulated users answer every first result with clicks.
    let world: &'static World = Box::leak(Box::new(World::generate(
        &p.simulator,
        p.limits.list_len,
        3,
    )));
    let traffic = Traffic::new(world, seed);
    let users_traffic = Traffic::new(world, seed);
    let n = (RATE * load_for.as_secs_f64()).round() as usize;
    let impressions: HashMap<String, u64> =
        (0..n as u64).map(|k| (traffic.request_id(k), k)).collect();
    let (stop_users, users_stopped) = watch::channel(false);
    let users = {
        let (kafka, brokers) = (p.kafka.clone(), brokers.clone());
        tokio::spawn(async move {
            respond(
                &kafka,
                &brokers,
                &users_traffic,
                &impressions,
                users_stopped,
            )
            .await
        })
    };
    let load = simulated_requests(&traffic, n, None, |_| Vec::new());
    let offered = load.valid.clone();
    let report = spawn_load_for(
        &p.kafka,
        &brokers,
        (load.outgoing, load.valid, 0),
        Some(RATE),
        Duration::from_secs(180),
    );

    let load_started = Instant::now();
    let load_started_unix_ms = eglr::clock::unix_millis();
    let (mut serve_restarts, mut log_restarts, mut broker_pauses) = (0, 0, 0);
    // Until `$done` holds, the supervisor watches both stages every second.
    macro_rules! supervise_until {
        ($done:expr) => {
            while !$done {
                let at = load_started.elapsed().as_secs_f64();
                serve.watch(at, "serve");
                log.watch(at, "log");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
    }
    for &(at, fault) in &faults {
        let due = load_started + Duration::from_secs_f64(at);
        supervise_until!(Instant::now() >= due);
        let down = match fault {
            Fault::PauseBroker => BROKER_PAUSE,
            Fault::KillServe | Fault::KillLog => Duration::from_millis(rng.random_range(200..3000)),
        };
        println!("{at:>7.1} s: {fault:?} ({} ms down)", down.as_millis());
        match fault {
            Fault::KillServe => {
                serve.kill_and_restart_after(down).await;
                serve_restarts += 1;
            }
            Fault::KillLog => {
                log.kill_and_restart_after(down).await;
                log_restarts += 1;
            }
            Fault::PauseBroker => {
                let tansu = Arc::clone(&tansu);
                tokio::task::spawn_blocking(move || tansu.pause(BROKER_PAUSE))
                    .await
                    .expect("pause");
                broker_pauses += 1;
            }
        }
    }
    supervise_until!(report.is_finished());
    let load = report.await.expect("load");
    println!("load: {load:?}");

    // Every answered list reaches the log once its window has passed.
    let want: HashSet<String> = offered.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    supervise_until!(want.is_subset(&logged(&logs).0) || Instant::now() >= deadline);
    // Graceful stops commit what is finished.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_users.send(true);
    users.await.expect("join").expect("users");
    assert!(log.process.sigterm().success(), "the logger stops cleanly");
    assert!(serve.process.sigterm().success(), "serve stops cleanly");
    let (ids, re_read) = logged(&logs);
    let messages = read_topics(
        &brokers,
        &[&t.requests, &t.results, &t.feedback],
        Duration::from_secs(5),
    );
    let ends = ends_of(&messages);
    let requests_only: common::Ends = ends
        .iter()
        .filter(|((topic, _), _)| topic == &t.requests)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let side = side_file(&logs);
    // Where the lists the log misses sit in the topics, for whoever debugs a failed run.
    for id in want.difference(&ids).take(20) {
        let at: Vec<_> = messages.iter().filter(|m| &m.3 == id).collect();
        println!("not logged: {id} at {at:?}");
    }
    let report = SoakReport {
        minutes_of_load: minutes,
        seed,
        requests_offered: n,
        requests_not_acked: load.produce_errors,
        requests_answered: load.results,
        requests_lost: load.missing,
        duplicate_results: load.duplicates,
        lists_logged: ids.len(),
        lists_missing_from_log: want.difference(&ids).count(),
        log_rows_re_read: re_read,
        side_file: side.clone(),
        serve_restarts,
        log_restarts,
        serve_exits: serve.exits.clone(),
        log_exits: log.exits.clone(),
        broker_pauses,
        uncommitted_serve: uncommitted(&brokers, "soak-serve", &requests_only),
        uncommitted_log: uncommitted(&brokers, "soak-log", &ends),
        p50_ms: load.p50_ms,
        p99_ms: load.p99_ms,
        faults: faults.clone(),
        wall_s: started.elapsed().as_secs_f64(),
        load_started_unix_ms,
    };
    let json = serde_json::to_string_pretty(&report).expect("json");
    println!("{json}");
    let out = std::env::var("SOAK_REPORT").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/soak/report.json").to_owned()
    });
    if let Some(parent) = Path::new(&out).parent() {
        std::fs::create_dir_all(parent).expect("report dir");
    }
    std::fs::write(&out, &json).expect("write the report");
    // The side file goes next to the report: what a failed run left unjoined.
    let side_dir = logs.join(eglr::stream::UNJOINED_DIR);
    if let (Some(parent), Ok(entries)) = (Path::new(&out).parent(), std::fs::read_dir(side_dir)) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("unjoined-") {
                let _ = std::fs::copy(entry.path(), parent.join(entry.file_name()));
            }
        }
    }

    assert_eq!(load.missing, 0, "every request answered at least once");
    assert_eq!(load.results, n);
    assert_eq!(report.lists_missing_from_log, 0, "every served list logged");
    assert_eq!(ids.len(), n, "no list logged that was not served");
    for reason in [
        "result_without_request",
        "request_without_result",
        "orphan_feedback",
    ] {
        assert!(!side.contains_key(reason), "unjoined lists: {side:?}");
    }
    assert_eq!(report.uncommitted_serve, 0, "serve committed every request");
    assert_eq!(
        report.uncommitted_log, 0,
        "the logger committed every event"
    );
    assert_eq!(serve_restarts + log_restarts + broker_pauses, faults.len());
}
