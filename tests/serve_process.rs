//! `eglr serve` as real processes in one consumer group, against a Kafka-protocol broker
//! (the embedded MockCluster, owned by this test so it outlives the servers): a server
//! killed with SIGKILL mid-stream and restarted loses no request; two servers share the
//! partitions and one takes over when the other stops.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{pipeline, requests, spawn_load, write_bundle};
use eglr::config::PipelineConfig;
use eglr::stream::EmbeddedBroker;

struct Server(Child);

impl Server {
    fn start(brokers: &str, store: &Path, group: &str) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let child = Command::new(env!("CARGO_BIN_EXE_eglr"))
            .current_dir(root)
            .args([
                "serve",
                "--brokers",
                brokers,
                "--metrics-addr",
                "127.0.0.1:0",
                "--model-store",
            ])
            .arg(store)
            .env("EGLR_KAFKA__GROUP_ID", group)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("eglr serve starts");
        Server(child)
    }

    fn sigkill(&mut self) {
        self.0.kill().expect("SIGKILL");
        let _ = self.0.wait();
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.0.wait().expect("exit")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn setup() -> (PipelineConfig, EmbeddedBroker, tempfile::TempDir) {
    let p = pipeline();
    let b = EmbeddedBroker::start().expect("broker");
    let t = &p.kafka.topics;
    b.create_topics(&[(&t.requests, 4), (&t.results, 4), (&t.dead_letter, 1)])
        .expect("topics");
    let store = tempfile::tempdir().expect("tempdir");
    write_bundle(&p, &store.path().join("v000001"), 1);
    (p, b, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_nothing() {
    let (p, b, store) = setup();
    let brokers = b.bootstrap();
    let mut first = Server::start(&brokers, store.path(), "kill-test");
    let (out, keys, _) = requests(4000, 1, usize::MAX, |_| Vec::new());
    let load = spawn_load(&p.kafka, &brokers, out, keys, 0, Some(1000.0));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.sigkill();
    let _second = Server::start(&brokers, store.path(), "kill-test");
    let report = load.await.expect("load");
    // At-least-once: every request has a result; re-delivery after the kill may
    // duplicate some, which consumers of the results topic dedupe by request_id.
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(report.results, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_partitions_and_one_takes_over() {
    let (p, b, store) = setup();
    let brokers = b.bootstrap();
    let mut a = Server::start(&brokers, store.path(), "pair-test");
    let _b = Server::start(&brokers, store.path(), "pair-test");
    let (out, keys, _) = requests(4000, 2, usize::MAX, |_| Vec::new());
    let load = spawn_load(&p.kafka, &brokers, out, keys, 0, Some(1000.0));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let status = tokio::task::spawn_blocking(move || a.sigterm())
        .await
        .expect("join");
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    let report = load.await.expect("load");
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(report.results, 4000);
}
