//! eglr on a secured Kafka cluster, as managed services run one. TLS: stunnel (Debian's
//! `stunnel4`) terminates TLS in front of tansu, which advertises the TLS port; the CAs
//! and the broker's certificate are made here with `openssl`; `serve` answers through
//! it and a client that trusts another CA is refused. SASL and zstd: what the build
//! supports (see the test's comment for why no SCRAM broker runs here). Secrets: from the
//! environment and files, never shown.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::watch;

use common::{free_port, requests, spawn_load, start_tansu_with, write_bundle};
use eglr::config::PipelineConfig;
use eglr::model::{LiveModel, ModelStore};
use eglr::stream::kafka::{client_config, create_topics};
use eglr::stream::{serve, ServeSettings};

/// Whether stunnel and openssl are there; like tansu, required when `TANSU_REQUIRED=1`.
fn tools_or_skip(test: &str) -> bool {
    if !common::tansu_or_skip(test) {
        return false;
    }
    let found = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let hint = "install them with `bash deploy/install-deps.sh --with-tansu` (stunnel4, openssl)";
    let present = found("stunnel") && found("openssl");
    common::present_or_skip(test, "stunnel or openssl", hint, present)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA named `name` in `dir`: its certificate and key.
fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", &subject,
            "-keyout", &key, "-out", &cert,
        ],
    );
    (dir.join(cert), dir.join(key))
}

/// The broker's certificate for 127.0.0.1 (the address it advertises), signed by `ca`.
fn broker_cert(dir: &Path, ca: &(PathBuf, PathBuf)) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "broker.key",
            "-out",
            "broker.csr",
        ],
    );
    let (ca_cert, ca_key) = (ca.0.display().to_string(), ca.1.display().to_string());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            "broker.csr",
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-extfile",
            "san.ext",
            "-out",
            "broker.pem",
        ],
    );
    (dir.join("broker.pem"), dir.join("broker.key"))
}

/// stunnel terminating TLS on `port` in front of the plaintext broker at `broker`;
/// killed on drop.
struct Stunnel(Child);

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_stunnel(dir: &Path, port: u16, broker: &str, cert: &(PathBuf, PathBuf)) -> Stunnel {
    let conf = dir.join("stunnel.conf");
    let text = format!(
        "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{port}\nconnect = {broker}\ncert = {}\nkey = {}\n",
        cert.0.display(),
        cert.1.display()
    );
    std::fs::write(&conf, text).expect("write stunnel.conf");
    let child = Command::new("stunnel")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stunnel starts");
    common::wait_for_port(port, "stunnel");
    Stunnel(child)
}

/// A broker behind TLS: tansu, stunnel, the CA clients must trust, and the TLS
/// bootstrap address.
struct SecureBroker {
    _tansu: common::Tansu,
    _stunnel: Stunnel,
    tls: String,
    ca: PathBuf,
    dir: tempfile::TempDir,
}

fn secure_broker() -> SecureBroker {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = make_ca(dir.path(), "eglr-test-ca");
    let cert = broker_cert(dir.path(), &ca);
    let tls_port = free_port();
    let (tansu, plaintext) = start_tansu_with(Some(tls_port));
    let stunnel = start_stunnel(dir.path(), tls_port, &plaintext, &cert);
    SecureBroker {
        _tansu: tansu,
        _stunnel: stunnel,
        tls: format!("127.0.0.1:{tls_port}"),
        ca: ca.0,
        dir,
    }
}

fn pipeline(group: &str, properties: &[(&str, &str)]) -> PipelineConfig {
    let mut p = common::for_tansu(common::pipeline());
    p.kafka.group_id = group.into();
    for (k, v) in properties {
        p.kafka.properties.insert((*k).into(), (*v).into());
    }
    p
}

/// What a client with `properties` gets when it asks `brokers` for metadata.
fn metadata(
    p: &PipelineConfig,
    brokers: &str,
    properties: &[(&str, &str)],
) -> Result<usize, String> {
    let mut kafka = p.kafka.clone();
    for (k, v) in properties {
        kafka.properties.insert((*k).into(), (*v).into());
    }
    let consumer: BaseConsumer = client_config(&kafka, brokers, &[("group.id", "probe")])
        .create()
        .map_err(|e| e.to_string())?;
    consumer
        .fetch_metadata(None, Duration::from_secs(8))
        .map(|m| m.topics().len())
        .map_err(|e| e.to_string())
}

async fn create_stage_topics(p: &PipelineConfig, brokers: &str) {
    let t = &p.kafka.topics;
    create_topics(
        &p.kafka,
        brokers,
        &[(&t.requests, 2), (&t.results, 2), (&t.dead_letter, 1)],
    )
    .await
    .expect("create topics through the secured listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_over_tls_and_a_client_trusting_another_ca_is_refused() {
    if !tools_or_skip("serve_answers_over_tls_and_a_client_trusting_another_ca_is_refused") {
        return;
    }
    let broker = secure_broker();
    let ca = broker.ca.display().to_string();
    let p = pipeline(
        "tls-serve",
        &[("security.protocol", "SSL"), ("ssl.ca.location", &ca)],
    );
    create_stage_topics(&p, &broker.tls).await;

    let store = tempfile::tempdir().expect("tempdir");
    write_bundle(&p, &store.path().join("v000001"), 1);
    let live =
        Arc::new(LiveModel::open(ModelStore::new(store.path()), Device::Cpu).expect("model"));
    let (stop, stopped) = watch::channel(false);
    let settings = ServeSettings {
        pipeline: p.clone(),
        brokers: broker.tls.clone(),
        metrics_addr: None,
        model_poll: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(30),
    };
    let server = tokio::spawn(serve(settings, live, stopped));
    let (out, valid, _) = requests(300, 11, usize::MAX, |_| Vec::new());
    let report = spawn_load(&p.kafka, &broker.tls, out, valid, 0, None)
        .await
        .expect("load");
    let _ = stop.send(true);
    let summary = server.await.expect("join").expect("serve");
    assert_eq!(report.missing, 0, "{report:?} {summary:?}");
    assert_eq!(summary.results, 300, "{summary:?}");

    // The handshake is real: a client trusting another CA is refused.
    let other_ca = make_ca(broker.dir.path(), "another-ca").0;
    let other = other_ca.display().to_string();
    let refused = metadata(&p, &broker.tls, &[("ssl.ca.location", &other)])
        .expect_err("a client trusting another CA must not connect");
    assert!(
        metadata(&p, &broker.tls, &[]).is_ok(),
        "the right CA connects"
    );
    eprintln!("refused as it should be: {refused}");
}

/// SASL: tansu 0.6 checks SCRAM credentials with `--authentication`, but its users can
/// only be created over an authenticated connection and its in-memory storage starts
/// empty, so no SCRAM broker can be run here. What is checked instead: the build has
/// the mechanisms (librdkafka lists them and accepts a SCRAM-SHA-512 and a PLAIN client),
/// and zstd-compressed records go through the embedded broker both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_speaks_sasl_scram_and_plain_and_reads_zstd_topics() {
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let p = common::pipeline();
    let features = client_config(&p.kafka, "127.0.0.1:1", &[])
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .expect("builtin.features");
    for feature in ["ssl", "sasl_plain", "sasl_scram", "zstd"] {
        assert!(
            features.split(',').any(|f| f == feature),
            "{feature} not in {features}"
        );
    }
    for (mechanism, protocol) in [
        ("SCRAM-SHA-512", "SASL_SSL"),
        ("SCRAM-SHA-256", "SASL_SSL"),
        ("PLAIN", "SASL_PLAINTEXT"),
    ] {
        let mut kafka = p.kafka.clone();
        for (k, v) in [
            ("security.protocol", protocol),
            ("sasl.mechanism", mechanism),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ] {
            kafka.properties.insert(k.into(), v.into());
        }
        let client: Result<BaseConsumer, _> =
            client_config(&kafka, "127.0.0.1:1", &[("group.id", "g")]).create();
        assert!(client.is_ok(), "{mechanism}: {:?}", client.err());
    }

    let broker = eglr::stream::EmbeddedBroker::start().expect("broker");
    broker.create_topics(&[("zstd", 1)]).expect("topic");
    let mut kafka = p.kafka.clone();
    kafka
        .properties
        .insert("compression.type".into(), "zstd".into());
    let producer: FutureProducer =
        eglr::stream::kafka::producer_config(&kafka, &broker.bootstrap())
            .create()
            .expect("zstd producer");
    let payload = "a compressible payload ".repeat(100);
    producer
        .send(
            FutureRecord::to("zstd").key("k").payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    let consumer: BaseConsumer = client_config(
        &p.kafka,
        &broker.bootstrap(),
        &[
            ("group.id", "zstd-reader"),
            ("auto.offset.reset", "earliest"),
        ],
    )
    .create()
    .expect("consumer");
    consumer.subscribe(&["zstd"]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(20);
    let read = loop {
        assert!(Instant::now() < deadline, "nothing read back");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            break m.expect("message").payload().map(<[u8]>::to_vec);
        }
    };
    assert_eq!(read.as_deref(), Some(payload.as_bytes()));
}

/// `eglr config` as an operator runs it: security settings from the environment, the
/// password from a file (a mounted Secret); the password is read and never shown.
#[test]
fn eglr_config_takes_kafka_secrets_from_the_environment_and_files_and_never_shows_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("kafka-password");
    std::fs::write(&secret, "c0rrect-h0rse\n").expect("write secret");
    let secret_path = secret.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_eglr"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["config", "--json"])
        .env("EGLR_KAFKA__PROPERTIES__SECURITY_PROTOCOL", "SASL_SSL")
        .env("EGLR_KAFKA__PROPERTIES__SASL_MECHANISM", "SCRAM-SHA-512")
        .env("EGLR_KAFKA__PROPERTIES__SSL_KEY_PASSWORD", "123456")
        .env("EGLR_KAFKA__PROPERTY_FILES__SASL_PASSWORD", &secret_path)
        .output()
        .expect("eglr config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let properties = &config["kafka"]["properties"];
    assert_eq!(properties["security.protocol"], "SASL_SSL");
    assert_eq!(properties["sasl.mechanism"], "SCRAM-SHA-512");
    assert_eq!(properties["sasl.password"], eglr::config::REDACTED);
    assert_eq!(properties["ssl.key.password"], eglr::config::REDACTED);
    assert_eq!(
        config["kafka"]["property_files"]["sasl.password"],
        secret_path
    );
    assert!(
        !text.contains("c0rrect-h0rse") && !text.contains("123456"),
        "{text}"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_eglr"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("config")
        .env(
            "EGLR_KAFKA__PROPERTY_FILES__SASL_PASSWORD",
            dir.path().join("none"),
        )
        .output()
        .expect("eglr config");
    assert!(
        !missing.status.success(),
        "a missing secret file is an error"
    );
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("none"), "the error names the file: {err}");
}
