//! The operators' kit of `deploy/`: the Prometheus rules pass promtool and their unit
//! tests, the PrometheusRule manifest holds the same groups, and a real Prometheus
//! server (Debian's package, installed by `deploy/install-deps.sh --with-tansu`)
//! scrapes `eglr pipeline` (serve, log and trainer) on the embedded broker under load,
//! evaluates every recording rule, and fires the dead-letter alert on a burst of
//! malformed requests. The rules and the Grafana dashboard name only metrics the
//! stages' `/metrics` expose (read from the running stages) or the rules record.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, pipeline, present_or_skip, requests, spawn_load, write_bundle};
use eglr::stream::EmbeddedBroker;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rules_file() -> PathBuf {
    root().join("deploy/prometheus/eglr-rules.yaml")
}

/// `/usr/bin/NAME` of Debian's prometheus package, or `None` (the test is skipped).
fn prometheus_tool(test: &str, name: &str) -> Option<PathBuf> {
    let path = Path::new("/usr/bin").join(name);
    let hint = "install Debian's prometheus package: `bash deploy/install-deps.sh --with-tansu`";
    present_or_skip(test, name, hint, path.is_file()).then_some(path)
}

fn run(tool: &Path, args: &[&str], dir: &Path) -> (bool, String) {
    common::run_tool(Command::new(tool).args(args).current_dir(dir))
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = prometheus_tool("operators_kit", "promtool") else {
        return;
    };
    let dir = root().join("deploy/prometheus");
    let (ok, text) = run(&promtool, &["check", "rules", "eglr-rules.yaml"], &dir);
    assert!(ok, "{text}");
    let (ok, text) = run(&promtool, &["test", "rules", "eglr-rules.test.yaml"], &dir);
    assert!(ok, "{text}");
    // Every alert of the rule file has a unit test that fires it.
    let tests = std::fs::read_to_string(dir.join("eglr-rules.test.yaml")).expect("tests");
    for alert in alerts() {
        let fires = format!("alertname: {alert}\n    exp_alerts:\n    - exp_labels:");
        assert!(tests.contains(&fires), "no test fires {alert}");
    }

    // The check can fail: a rule naming a misspelt function is refused.
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(rules_file()).expect("rules");
    let broken = text.replacen("histogram_quantile(", "histogram_quantil(", 1);
    std::fs::write(tmp.path().join("broken.yaml"), broken).expect("write");
    let (ok, _) = run(&promtool, &["check", "rules", "broken.yaml"], tmp.path());
    assert!(!ok, "a misspelt function passed promtool");
}

/// The names of the rule file's rules of one kind (`alert` or `record`).
fn rule_names(kind: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(rules_file()).expect("rules");
    let prefix = format!("- {kind}: ");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(str::to_owned)
        .collect()
}

fn alerts() -> BTreeSet<String> {
    rule_names("alert")
}

fn recorded() -> BTreeSet<String> {
    rule_names("record")
}

#[test]
fn the_prometheus_rule_manifest_holds_the_rule_files_groups() {
    let rules = std::fs::read_to_string(rules_file()).expect("rules");
    let groups = &rules[rules.find("\ngroups:").expect("groups") + 1..];
    let manifest =
        std::fs::read_to_string(root().join("deploy/k8s/prometheus-rule.yaml")).expect("manifest");
    assert!(manifest.contains("kind: PrometheusRule"), "{manifest}");
    let spec = &manifest[manifest.find("\nspec:\n").expect("spec") + "\nspec:\n".len()..];
    let dedented: String = spec
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    assert_eq!(
        dedented.trim_end(),
        groups.trim_end(),
        "deploy/k8s/prometheus-rule.yaml's spec differs from deploy/prometheus/eglr-rules.yaml"
    );
}

/// A GET on `127.0.0.1:port`: the status line's code and the body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(socket, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    socket.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// Percent-encodes a query parameter.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus API call's `data`, when it answered with success.
fn api(port: u16, path: &str) -> Option<serde_json::Value> {
    let (code, body) = get(port, path)?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (code == 200 && v["status"] == "success").then(|| v["data"].clone())
}

/// The instant vector of `query` (empty when it has no value).
fn query(port: u16, expr: &str) -> Vec<serde_json::Value> {
    api(port, &format!("/api/v1/query?query={}", encode(expr)))
        .and_then(|d| d["result"].as_array().cloned())
        .unwrap_or_default()
}

/// The alerts firing now, by name.
fn firing(port: u16) -> BTreeSet<String> {
    api(port, "/api/v1/alerts")
        .and_then(|d| d["alerts"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|a| a["state"] == "firing")
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
        .collect()
}

/// Polls `check` every second until it returns true or `within` passed.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The metric names a stage's `/metrics` declares (`# TYPE` lines), with a
/// histogram's `_bucket`, `_sum` and `_count` series.
/// The metric names of `deploy/README.md`'s table of the serve stage's metrics, with
/// a histogram's series.
fn documented() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/README.md"))
            .expect("README");
    let mut names = BTreeSet::new();
    for row in readme.lines().filter(|l| l.starts_with("| `eglr_")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        for name in cells[0].trim_start_matches("| ").split(", ") {
            let name = name.trim_matches('`');
            let name = name.split_once('{').map_or(name, |(n, _)| n);
            names.insert(name.to_owned());
            if cells[1] == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

fn exposed(port: u16) -> BTreeSet<String> {
    let (_, body) = get(port, "/metrics").expect("/metrics answers");
    let mut names = BTreeSet::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        names.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// The eglr names a PromQL text reads: raw metrics (`eglr_...`) and recorded ones
/// (`eglr:...`).
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        if ident(bytes[i]) && (i == 0 || !ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("eglr_") || word.starts_with("eglr:") {
                names.insert(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The PromQL of every dashboard panel.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("deploy/grafana/eglr.json")).expect("read");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let queries: Vec<String> = panels
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    queries
}

/// The rule file's expressions (`expr:` values, folded ones included).
fn rule_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(rules_file()).expect("rules");
    let mut exprs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix("expr:") else {
            continue;
        };
        let mut expr = rest.trim().trim_start_matches(">-").to_owned();
        let indent = line.len() - line.trim_start().len();
        while let Some(next) = lines.peek() {
            if next.len() - next.trim_start().len() <= indent || next.trim().is_empty() {
                break;
            }
            expr.push(' ');
            expr.push_str(next.trim());
            lines.next();
        }
        exprs.push(expr);
    }
    exprs
}

/// A Prometheus server on a free loopback port, storage in a temp dir; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `targets` every second and evaluates the rule file every second. The
    /// alerts' `for` durations are set to 0 in the copy it loads: they are minutes
    /// long, and promtool's unit tests check them; this server checks that the rules
    /// read what a running eglr exposes.
    fn start(binary: &Path, targets: &[u16]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = std::fs::read_to_string(rules_file()).expect("rules");
        let rules: String = rules
            .lines()
            .map(|l| match l.trim() {
                t if t.starts_with("for: ") => format!("{}for: 0s\n", &l[..l.len() - t.len()]),
                t if t.starts_with("interval: ") => {
                    format!("{}interval: 1s\n", &l[..l.len() - t.len()])
                }
                _ => format!("{l}\n"),
            })
            .collect();
        std::fs::write(dir.path().join("rules.yaml"), rules).expect("write rules");
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [rules.yaml]\n\
             scrape_configs:\n  - job_name: eglr\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let port = free_port();
        let child = Command::new(binary)
            .current_dir(dir.path())
            .args([
                "--config.file=prometheus.yml",
                &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        assert!(
            eventually(Duration::from_secs(60), || get(port, "/-/ready")
                .is_some_and(|(c, _)| c == 200)),
            "prometheus did not become ready"
        );
        server
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_stages_evaluates_every_rule_and_fires_on_dead_letters() {
    let mut p = pipeline();
    p.exploration.share = 0.1;
    let t = &p.kafka.topics;
    let broker = EmbeddedBroker::start().expect("embedded broker");
    broker
        .create_topics(&[
            (&t.requests, 4),
            (&t.results, 4),
            (&t.feedback, 4),
            (&t.dead_letter, 1),
            (&t.control, 1),
        ])
        .expect("topics");
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, logs) = (dir.path().join("store"), dir.path().join("logs"));
    write_bundle(&p, &store.join("v000001"), 1);
    let ports = [free_port(), free_port(), free_port()];
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let (serve, log, trainer) = (addr(ports[0]), addr(ports[1]), addr(ports[2]));
    let bootstrap = broker.bootstrap();
    let (store_arg, logs_arg) = (store.display().to_string(), logs.display().to_string());
    let _eglr = common::EglrProcess::start(
        None,
        &[
            "pipeline",
            "--brokers",
            &bootstrap,
            "--model-store",
            &store_arg,
            "--logs",
            &logs_arg,
            "--metrics-addr",
            &serve,
            "--log-metrics-addr",
            &log,
            "--trainer-metrics-addr",
            &trainer,
            "--window-s",
            "1",
        ],
        &[
            // Exploration on, every batch assessed, and no training round in the test.
            ("EGLR_EXPLORATION__SHARE", "0.1"),
            ("EGLR_BATCHING__QUALITY_EVERY", "1"),
            ("EGLR_TRAINER__MIN_NEW_LISTS", "100000000"),
        ],
    );
    for port in ports {
        common::wait_for_port(port, "an eglr endpoint");
    }

    // The dashboard and the rules name only what the stages expose or the rules record.
    // A labelled family shows only once it has a series (a dead letter, an undelivered
    // record): those are taken from the documented table, which a unit test of
    // `stream::prometheus` holds to the exposition.
    let mut known: BTreeSet<String> = ports.iter().flat_map(|&p| exposed(p)).collect();
    known.extend(recorded());
    known.extend(documented());
    for expr in dashboard_queries().iter().chain(&rule_expressions()) {
        for name in names_in(expr) {
            assert!(
                known.contains(&name),
                "{name} (in `{expr}`) is not exposed or recorded"
            );
        }
    }

    let Some(binary) = prometheus_tool("operators_kit", "prometheus") else {
        return;
    };
    let prometheus = Prometheus::start(&binary, &ports);
    let port = prometheus.port;

    // Valid traffic first: every target up, and no dead-letter alert.
    let (out, valid, _) = requests(1500, 7, usize::MAX, |_| Vec::new());
    let report = spawn_load(&p.kafka, &bootstrap, out, valid, 0, Some(100.0))
        .await
        .expect("load");
    assert_eq!(report.missing, 0, "{report:?}");
    let up = |port: u16| {
        api(port, "/api/v1/targets")
            .and_then(|d| d["activeTargets"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|t| t["health"] == "up")
            .count()
    };
    assert!(
        eventually(Duration::from_secs(30), || up(port) == 3),
        "targets up: {}",
        up(port)
    );
    assert!(
        !firing(port).contains("EglrDeadLetters"),
        "{:?}",
        firing(port)
    );

    // A burst of malformed requests: one in two.
    let bad = |_: usize| b"{not json".to_vec();
    let (out, valid, n_bad) = requests(400, 8, 2, bad);
    let report = spawn_load(&p.kafka, &bootstrap, out, valid, n_bad, Some(200.0))
        .await
        .expect("burst");
    assert_eq!(report.dlq, n_bad, "{report:?}");
    assert!(
        eventually(Duration::from_secs(60), || firing(port)
            .contains("EglrDeadLetters")),
        "the dead-letter alert did not fire: {:?}",
        firing(port)
    );

    // Every recording rule has a value.
    let mut missing = Vec::new();
    let all = eventually(Duration::from_secs(60), || {
        missing = recorded()
            .into_iter()
            .filter(|r| query(port, r).is_empty())
            .collect();
        missing.is_empty()
    });
    assert!(all, "recording rules without a value: {missing:?}");
    // ... and they read what happened: four partitions, all assigned; a tenth explored.
    let value = |expr: &str| -> f64 {
        query(port, expr)[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    assert_eq!(value("eglr:topic_partitions:sum"), 4.0);
    assert_eq!(value("eglr:assigned_partitions:sum"), 4.0);
    let share = value("eglr:exploration:ratio_rate30m");
    assert!((0.03..0.2).contains(&share), "exploration share {share}");
}
