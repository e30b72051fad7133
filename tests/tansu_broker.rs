//! The serve stage against tansu, an independent Kafka-compatible broker (installed by
//! `deploy/install-deps.sh`): 5,000 requests with 5 % malformed, every valid request
//! gets a result and every malformed one lands in the dead-letter topic.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio::sync::watch;

use common::{requests, spawn_load, write_bundle};
use eglr::config::PipelineConfig;
use eglr::stream::kafka::create_topics;
use eglr::stream::{serve, LiveModel, ModelStore, ServeSettings};

struct Tansu(Child);

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tansu_binary() -> String {
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let installed = format!("{home}/bin/tansu");
    if Path::new(&installed).exists() {
        installed
    } else {
        "tansu".to_owned()
    }
}

/// Starts tansu on a free loopback port (it listens on IPv4 only).
fn start_tansu() -> (Tansu, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_binary())
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu must be installed: bash deploy/install-deps.sh (cargo install tansu --locked --features dynostore)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "tansu did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (Tansu(child), format!("127.0.0.1:{port}"))
}

fn pipeline() -> PipelineConfig {
    let mut p = common::pipeline();
    p.kafka.group_id = "tansu-serve".into();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_requests_five_percent_malformed_on_tansu() {
    let (_tansu, brokers) = start_tansu();
    let p = pipeline();
    let t = &p.kafka.topics;
    create_topics(
        &p.kafka,
        &brokers,
        &[(&t.requests, 4), (&t.results, 4), (&t.dead_letter, 1)],
    )
    .await
    .expect("create topics on tansu (it does not auto-create them)");
    let store = tempfile::tempdir().expect("tempdir");
    write_bundle(&p, &store.path().join("v000001"), 1);
    let live =
        Arc::new(LiveModel::open(ModelStore::new(store.path()), Device::Cpu).expect("model"));
    let (stop, stopped) = watch::channel(false);
    let settings = ServeSettings {
        pipeline: p.clone(),
        brokers: brokers.clone(),
        metrics_addr: None,
        model_poll: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(30),
    };
    let server = tokio::spawn(serve(settings, live, stopped));

    let (out, valid, bad) = requests(5000, 9, 20, |_| b"{\"request_id\": \"oops\"".to_vec());
    let report = spawn_load(&p.kafka, &brokers, out, valid, bad, None)
        .await
        .expect("load");
    let _ = stop.send(true);
    let summary = server.await.expect("join").expect("serve");
    // Guarantee: at least once — every valid request_id has >= 1 result.
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(report.results, 4750);
    assert_eq!(report.dlq, 250, "{report:?}");
    assert_eq!(summary.dead_letters, 250);
}
