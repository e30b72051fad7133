//! `eglr log`: the feedback logger's consumer group. Reads requests, results and
//! feedback, joins them on their event time ([`ListJoiner`]) and writes one Parquet row
//! per served list. Each tick it tells the join which partitions it reads and bounds the
//! join's pending state by pausing intake ([`Logger::regulate`]).
//!
//! Delivery: offsets are stored only once everything built from their messages is
//! durable — the list rows in a *published* Parquet file (temp + fsync + rename, see
//! [`LogWriter`]) and the unjoined events in the fsync'd side file — so a crash loses
//! nothing. Messages are re-read after a crash from the last committed offset, so lists
//! published but not yet committed are written again: **duplicates are removed on
//! read** ([`crate::list_log::LogReader`] keeps the first row per request_id). Lists whose
//! window is still open at shutdown are not written; their messages are re-read by the
//! next owner of the partitions.
//!
//! The commit lag is the publish interval (`logs.roll_max_seconds`, or a file reaching
//! `logs.roll_max_bytes`): a file is published at that pace, and its offsets right after.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use serde::Serialize;
use tokio::sync::watch;

use super::http::{self, Exposition};
use super::kafka::{consumer_config, ConsumerGauges, GaugeContext};
use super::prometheus::{encode_const, ConsumerCollector, Metrics, POISONED};
use super::{OffsetTracker, StreamError};
use crate::config::PipelineConfig;
use crate::contract::{Contract, UnknownFieldLog};
use crate::join::{JoinSettings, JoinStats, ListJoiner, Source, Stream, Unjoined, UnjoinedReason};
use crate::list_log::{recent_request_ids, LogError, LogWriter};

/// How a logger instance runs.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub pipeline: PipelineConfig,
    pub brokers: String,
    /// The logger's own consumer group (never the serving group).
    pub group_id: String,
    /// How long after its result a list waits for feedback.
    pub window: Duration,
    /// Names this instance's files (`lists-INSTANCE-SEQ.parquet`,
    /// `unjoined-INSTANCE.jsonl`): instances of one group need distinct names.
    pub instance: String,
    /// Address of `/metrics`, `/livez` and `/readyz` (`None`: no endpoint).
    pub metrics_addr: Option<SocketAddr>,
}

/// Counts at exit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogSummary {
    pub messages: u64,
    pub malformed: u64,
    /// Offsets the consumer jumped over within a partition (see
    /// [`super::offsets::OffsetTracker::start`]).
    pub skipped_offsets: u64,
    /// Valid events with fields their schema does not list (ignored).
    pub unknown_field_events: u64,
    pub files_published: u64,
    /// Events written to the side file (the join could not place them in a list).
    pub set_aside: u64,
    pub join: JoinStats,
}

/// What the endpoint shows of the logger, refreshed every tick.
#[derive(Debug, Default)]
struct LogState {
    summary: LogSummary,
    /// Requests waiting in the join.
    pending: usize,
    /// Streams paused because the join is at its bound.
    paused: usize,
}

/// The logger's state as its endpoint shows it, refreshed every tick.
#[derive(Debug)]
struct LogMetrics {
    /// Messages behind the high watermarks (librdkafka statistics).
    consumer: Arc<ConsumerGauges>,
    state: Arc<Mutex<LogState>>,
    /// When the output of every message taken so far was last durable.
    last_durable: Mutex<Instant>,
    publish_every: Duration,
    metrics: Metrics,
}

impl LogMetrics {
    fn new(consumer: Arc<ConsumerGauges>, publish_every: Duration) -> Self {
        let state = Arc::new(Mutex::new(LogState::default()));
        let mut metrics = Metrics::default();
        metrics.register_collector(StateCollector(state.clone()));
        metrics.register_collector(ConsumerCollector {
            gauges: consumer.clone(),
            prefix: "eglr_log",
            per_partition: false,
        });
        Self {
            consumer,
            state,
            last_durable: Mutex::new(Instant::now()),
            publish_every,
            metrics: metrics.with_build_info(),
        }
    }

    fn update(&self, logger: &Logger) {
        let mut summary = logger.summary.clone();
        summary.join = logger.joiner.stats().clone();
        if let Ok(mut s) = self.state.lock() {
            *s = LogState {
                summary,
                pending: logger.joiner.pending(),
                paused: logger.paused.len(),
            };
        }
        if logger.awaiting.is_empty() {
            if let Ok(mut t) = self.last_durable.lock() {
                *t = Instant::now();
            }
        }
    }
}

/// The logger's counts at its last tick, read at scrape time: the logger owns them on
/// its own task, the endpoint sees the snapshot.
#[derive(Debug)]
struct StateCollector(Arc<Mutex<LogState>>);

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Ok(state) = self.0.lock() else {
            return Ok(());
        };
        let s = &state.summary;
        let j = &s.join;
        let counters: [(&str, &str, u64); 13] = [
            ("eglr_log_messages", "Messages consumed (requests, results, feedback).", s.messages),
            ("eglr_log_unknown_field_events", "Events with fields their schema does not list (ignored; limits.strict_fields refuses them).", s.unknown_field_events),
            ("eglr_log_skipped_offsets", "Offsets the consumer jumped over within a partition (transaction markers, compaction, or records a broker left out of a fetch).", s.skipped_offsets),
            ("eglr_log_malformed", "Messages that did not decode or validate.", s.malformed),
            ("eglr_log_lists", "Joined lists written.", j.lists),
            ("eglr_log_duplicate_feedback", "Feedback events repeating a (request, item).", j.duplicate_feedback),
            ("eglr_log_orphan_feedback", "Feedback for requests that got no result in the window.", j.orphan_feedback),
            ("eglr_log_late_feedback", "Feedback arriving after its list was written.", j.late_feedback),
            ("eglr_log_results_without_request", "Results whose request was not seen or not matched.", j.results_without_request),
            ("eglr_log_files_published", "Parquet files published.", s.files_published),
            ("eglr_log_set_aside_events", "Events written to the side file (_unjoined/) because the join could not place them in a list; over eglr_log_messages_total, the share the logs lose to the join.", s.set_aside),
            ("eglr_log_requests_without_result", "Requests that got no result while younger requests did.", j.requests_without_result),
            ("eglr_log_duplicate_events", "Requests and results re-delivered after their list was written.", j.duplicate_events),
        ];
        for (name, help, v) in counters {
            encode_const(&mut encoder, name, help, ConstCounter::new(v))?;
        }
        encode_const(
            &mut encoder,
            "eglr_log_pending_lists",
            "Requests waiting in the join (for their window, request or result).",
            ConstGauge::new(state.pending as i64),
        )?;
        encode_const(
            &mut encoder,
            "eglr_log_intake_paused",
            "Streams whose intake is paused because the join is at logs.max_pending.",
            ConstGauge::new(state.paused as i64),
        )
    }
}

impl Exposition for LogMetrics {
    fn render(&self) -> String {
        self.metrics.render()
    }

    /// Not live when written output has not become durable for `stall` beyond the
    /// publish interval (offsets are then not committed either): a full or failing
    /// disk. With nothing taken in (a broker outage) there is nothing to make durable.
    fn liveness(&self, stall: Duration) -> Result<(), String> {
        let since = self
            .last_durable
            .lock()
            .map_err(|_| POISONED.to_owned())?
            .elapsed();
        if since > self.publish_every + stall {
            return Err(format!(
                "nothing published for {:.0} s",
                since.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// Ready once a broker connection is up.
    fn readiness(&self) -> Result<String, String> {
        self.consumer.reachable().map(|()| "ready".into())
    }
}

/// The subdirectory of the log directory that holds the side files. Its `_` prefix
/// keeps it out of the data set the log directory is: pyarrow's and Spark's discovery
/// skip paths that start with `_` or `.`, and `DIR/*.parquet` does not match it.
pub const UNJOINED_DIR: &str = "_unjoined";

/// Appends unjoined events as JSON lines; `sync` makes them durable. Once the file
/// reaches `max_bytes` it is made durable and renamed `NAME.MILLIS.jsonl`, and a new
/// one starts: the side file never grows without bound, and nothing in it is lost.
struct SideFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
}

impl SideFile {
    fn open(path: PathBuf, max_bytes: u64) -> Result<Self, LogError> {
        let file = crate::list_log::private_file(OpenOptions::new().create(true).append(true))
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let written = file.metadata().map_err(|e| io(&path, e))?.len();
        Ok(Self {
            path,
            file,
            written,
            max_bytes,
        })
    }

    fn append(&mut self, events: &[Unjoined]) -> Result<(), LogError> {
        let mut buf = Vec::new();
        for e in events {
            serde_json::to_writer(&mut buf, e).map_err(|e| io(&self.path, e.into()))?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(|e| io(&self.path, e))?;
        self.written += buf.len() as u64;
        if self.written >= self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        self.sync()?;
        let rotated = self
            .path
            .with_extension(format!("{}.jsonl", crate::clock::unix_millis()));
        std::fs::rename(&self.path, &rotated).map_err(|e| io(&rotated, e))?;
        *self = Self::open(self.path.clone(), self.max_bytes)?;
        Ok(())
    }

    fn sync(&self) -> Result<(), LogError> {
        self.file.sync_data().map_err(|e| io(&self.path, e))
    }
}

/// The topic of one of the join's streams.
fn topic_of(topics: &crate::config::Topics, stream: Stream) -> &str {
    match stream {
        Stream::Requests => &topics.requests,
        Stream::Results => &topics.results,
        Stream::Feedback => &topics.feedback,
    }
}

/// Which of the join's streams a topic is.
fn stream_of(topics: &crate::config::Topics, topic: &str) -> Option<Stream> {
    Stream::ALL
        .into_iter()
        .find(|&s| topic == topic_of(topics, s))
}

/// Refuses topics whose partition counts differ. A request, its result and its
/// feedback are keyed by `request_id`, so with one partitioner (murmur2, the Java
/// client's) and one partition count they share a partition number, and the range
/// assignor hands that number of all three topics to one logger instance. With
/// different counts they would not meet, and every instance but a single one would
/// set lists aside as unjoined. A topic that does not exist yet is not checked.
async fn co_partitioned(
    kafka: &crate::config::KafkaConfig,
    brokers: &str,
) -> Result<(), StreamError> {
    let t = &kafka.topics;
    let names = [t.requests.as_str(), t.results.as_str(), t.feedback.as_str()];
    let counts = super::kafka::partition_counts(kafka, brokers, &names).await?;
    let existing: Vec<&(String, usize)> = counts.iter().filter(|(_, n)| *n > 0).collect();
    if existing.windows(2).any(|w| w[0].1 != w[1].1) {
        let list: Vec<String> = counts.iter().map(|(t, n)| format!("{t} {n}")).collect();
        return Err(StreamError::Topology(format!(
            "the logger's topics have different partition counts ({}): a request, its \
             result and its feedback are joined by partition number, so the three topics \
             need the same count",
            list.join(", ")
        )));
    }
    if existing.len() < counts.len() {
        tracing::warn!(
            ?counts,
            "a topic does not exist yet: partition counts not checked"
        );
    }
    Ok(())
}

fn io(path: &Path, source: std::io::Error) -> LogError {
    LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The joiner, the files and the offsets awaiting a publish.
struct Logger {
    joiner: ListJoiner,
    writer: LogWriter,
    side: SideFile,
    tracker: OffsetTracker,
    /// Sources whose output is written but not yet durable.
    awaiting: Vec<Source>,
    last_publish: Instant,
    publish_every: Duration,
    summary: LogSummary,
    max_pending: usize,
    /// Streams whose intake is paused because pending state is at its bound.
    paused: Vec<Stream>,
    unknown_fields: UnknownFieldLog,
}

impl Logger {
    fn note_unknown(&mut self, event: &'static str, ignored: &[String]) {
        if self.unknown_fields.note(event, ignored) {
            self.summary.unknown_field_events += 1;
        }
    }

    /// Feeds one message to the join. Fails only when the side file cannot be written
    /// (nothing of it is then committed: the stage stops and the message is re-read).
    fn take(
        &mut self,
        contract: &Contract<'_>,
        topics: &crate::config::Topics,
        source: Source,
        raw: &[u8],
    ) -> Result<(), StreamError> {
        let skipped = self
            .tracker
            .start(&source.topic, source.partition, source.offset);
        if skipped > 0 {
            tracing::warn!(topic = %source.topic, partition = source.partition, offset = source.offset, skipped, "offsets jumped over");
            self.summary.skipped_offsets += skipped as u64;
        }
        self.summary.messages += 1;
        let now = crate::clock::unix_millis();
        let malformed = match stream_of(topics, &source.topic) {
            // The serving stage dead-letters malformed requests; nothing to keep here.
            Some(Stream::Requests) => match contract.parse_request(raw) {
                Ok(r) => {
                    self.note_unknown("request", &r.ignored);
                    self.joiner.request(r.event, source, now);
                    return Ok(());
                }
                Err(_) => None,
            },
            Some(Stream::Results) => match contract.parse_result(raw) {
                Ok(r) => {
                    self.note_unknown("result", &r.ignored);
                    self.joiner.result(r.event, source, now);
                    return Ok(());
                }
                Err(e) => Some(e.to_string()),
            },
            Some(Stream::Feedback) => match contract.parse_feedback(raw) {
                Ok(f) => {
                    self.note_unknown("feedback", &f.ignored);
                    self.joiner.feedback(f.event, source, now);
                    return Ok(());
                }
                Err(e) => Some(e.to_string()),
            },
            None => Some(format!(
                "topic {} is not one the logger reads",
                source.topic
            )),
        };
        self.summary.malformed += 1;
        if let Some(e) = malformed {
            let event = serde_json::json!({
                "topic": source.topic,
                "partition": source.partition,
                "offset": source.offset,
                "error": e,
                "payload": String::from_utf8_lossy(raw),
            });
            self.keep(&[Unjoined {
                request_id: String::new(),
                reason: UnjoinedReason::Malformed,
                event,
            }])?;
        }
        self.awaiting.push(source);
        Ok(())
    }

    /// Tells the join which partitions this instance reads and which of them are
    /// behind their end (from the last statistics), and bounds its pending
    /// state: at `logs.max_pending` intake pauses on every stream but the one most
    /// pending requests wait for, and resumes below 90 % of it.
    fn regulate(
        &mut self,
        consumer: &StreamConsumer<GaugeContext>,
        topics: &crate::config::Topics,
    ) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let now = crate::clock::unix_millis();
        let partitions = |stream: Stream| {
            let mut tpl = TopicPartitionList::new();
            for e in assignment.elements() {
                if stream_of(topics, e.topic()) == Some(stream) {
                    tpl.add_partition(e.topic(), e.partition());
                }
            }
            tpl
        };
        let pending = self.joiner.pending();
        let pause: Vec<Stream> = if pending >= self.max_pending {
            let keep = self.joiner.waiting_on();
            Stream::ALL.into_iter().filter(|s| *s != keep).collect()
        } else if pending < self.max_pending / 10 * 9 {
            Vec::new()
        } else {
            self.paused.clone()
        };
        for stream in Stream::ALL {
            let tpl = partitions(stream);
            let ids: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            self.joiner.assign(stream, &ids, now);
            let behind = consumer.context().gauges.behind(topic_of(topics, stream));
            self.joiner.behind(stream, &behind);
            let paused = pause.contains(&stream);
            // Pausing again each tick covers partitions assigned since.
            let done = if paused {
                consumer.pause(&tpl)
            } else if self.paused.contains(&stream) {
                consumer.resume(&tpl)
            } else {
                Ok(())
            };
            if let Err(e) = done {
                tracing::warn!(?stream, paused, error = %e, "pause or resume failed");
            }
            self.joiner.pause(stream, paused, now);
        }
        if pause != self.paused {
            tracing::info!(pending, paused = ?pause, "intake regulated by pending lists");
        }
        self.paused = pause;
    }

    fn keep(&mut self, unjoined: &[Unjoined]) -> Result<(), StreamError> {
        self.side.append(unjoined).map_err(StreamError::Log)?;
        self.summary.set_aside += unjoined.len() as u64;
        Ok(())
    }

    /// Writes the lists whose window closed; publishes when the interval or a file's
    /// size says so.
    fn close(&mut self, now: i64, force_publish: bool) -> Result<(), StreamError> {
        let closed = self.joiner.close_due(now);
        let rolled = !self
            .writer
            .write(&closed.lists)
            .map_err(StreamError::Log)?
            .is_empty();
        self.keep(&closed.unjoined)?;
        self.awaiting.extend(closed.sources);
        if rolled || force_publish || self.last_publish.elapsed() >= self.publish_every {
            self.publish()?;
        }
        Ok(())
    }

    /// Makes everything written durable, then finishes its sources.
    fn publish(&mut self) -> Result<(), StreamError> {
        if self.writer.flush().map_err(StreamError::Log)?.is_some() {
            self.summary.files_published += 1;
        }
        self.side.sync().map_err(StreamError::Log)?;
        for s in self.awaiting.drain(..) {
            self.tracker.finish(&s.topic, s.partition, s.offset);
        }
        self.last_publish = Instant::now();
        Ok(())
    }
}

/// Runs the logger until `shutdown` turns true, then publishes what is closed and
/// commits it.
pub async fn log(
    settings: LogSettings,
    mut shutdown: watch::Receiver<bool>,
) -> Result<LogSummary, StreamError> {
    let p = &settings.pipeline;
    let topics = &p.kafka.topics;
    co_partitioned(&p.kafka, &settings.brokers).await?;
    let mut logger = Logger::open(&settings)?;
    let (consumer, gauges) = join_consumer(&settings)?;
    let metrics = Arc::new(LogMetrics::new(gauges, logger.publish_every));
    if let Some(addr) = settings.metrics_addr {
        http::spawn(addr, Arc::clone(&metrics), Duration::from_secs(60)).await?;
    }
    let contract = Contract::new(&p.features, &p.limits);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            msg = consumer.recv() => match msg {
                Ok(m) => {
                    let source = Source { topic: m.topic().to_owned(), partition: m.partition(), offset: m.offset() };
                    logger.take(&contract, topics, source, m.payload().unwrap_or_default())?;
                }
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            },
            _ = tick.tick() => {
                logger.regulate(&consumer, topics);
                logger.close(crate::clock::unix_millis(), false)?;
                logger.tracker.store_commits(&consumer);
                metrics.update(&logger);
            }
        }
    }
    logger.close(crate::clock::unix_millis(), true)?;
    logger.tracker.store_commits(&consumer);
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final commit");
    }
    logger.summary.join = logger.joiner.stats().clone();
    tracing::info!(
        pending = logger.joiner.pending(),
        "logger stopped; lists still in their window will be re-read"
    );
    Ok(logger.summary)
}

impl Logger {
    /// A logger writing `lists-INSTANCE-*.parquet` and its side file under the log
    /// directory, its join remembering the lists already in the log.
    fn open(settings: &LogSettings) -> Result<Self, StreamError> {
        let p = &settings.pipeline;
        let dir = &p.logs.dir;
        let writer = LogWriter::create(
            dir,
            &format!("lists-{}", settings.instance),
            p.logs.roll_policy(),
        )
        .map_err(StreamError::Log)?;
        let side_dir = dir.join(UNJOINED_DIR);
        std::fs::create_dir_all(&side_dir).map_err(|e| StreamError::Log(io(&side_dir, e)))?;
        let side = SideFile::open(
            side_dir.join(format!("unjoined-{}.jsonl", settings.instance)),
            p.logs.roll_max_bytes,
        )
        .map_err(StreamError::Log)?;
        let mut joiner = ListJoiner::new(
            JoinSettings {
                window_ms: i64::try_from(settings.window.as_millis()).unwrap_or(i64::MAX),
                idle_ms: i64::try_from(p.logs.idle_ms).unwrap_or(i64::MAX),
                remember_lists: p.logs.max_pending,
            },
            crate::clock::unix_millis(),
        );
        // A restart re-reads what it had not committed; some of it went into lists
        // already published (partitions commit independently). Remembering those lists
        // makes the re-read events duplicates instead of `result_without_request` in
        // the side file.
        let before = recent_request_ids(dir, p.logs.max_pending).map_err(StreamError::Log)?;
        tracing::info!(lists = before.len(), "remembering lists already in the log");
        joiner.written_before(before);
        Ok(Logger {
            joiner,
            max_pending: p.logs.max_pending,
            paused: Vec::new(),
            unknown_fields: UnknownFieldLog::default(),
            writer,
            side,
            tracker: OffsetTracker::new(),
            awaiting: Vec::new(),
            last_publish: Instant::now(),
            publish_every: Duration::from_secs(p.logs.roll_max_seconds.max(1)),
            summary: LogSummary::default(),
        })
    }
}

/// The logger's consumer of the three streams, and its statistics' gauges. The range
/// assignor gives one member the same partition numbers of every topic (the join
/// needs a request's three streams in one instance); a cooperative or round-robin
/// assignor would not, so a pipeline property cannot override it.
fn join_consumer(
    settings: &LogSettings,
) -> Result<(StreamConsumer<GaugeContext>, Arc<ConsumerGauges>), StreamError> {
    let p = &settings.pipeline;
    let topics = &p.kafka.topics;
    let context = GaugeContext::default();
    let gauges = Arc::clone(&context.gauges);
    let mut config = consumer_config(&p.kafka, &settings.brokers, &settings.group_id);
    config.set("partition.assignment.strategy", "range");
    let consumer: StreamConsumer<GaugeContext> = config
        .create_with_context(context)
        .map_err(StreamError::kafka("create the logger's consumer"))?;
    consumer
        .subscribe(&[
            topics.requests.as_str(),
            topics.results.as_str(),
            topics.feedback.as_str(),
        ])
        .map_err(StreamError::kafka("subscribe"))?;
    Ok((consumer, gauges))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_side_file_rotates_at_its_size_and_keeps_every_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut side = SideFile::open(dir.path().join("unjoined-0.jsonl"), 300).expect("open");
        let event = |k: usize| Unjoined {
            request_id: format!("r{k}"),
            reason: UnjoinedReason::LateFeedback,
            event: serde_json::json!({"k": k}),
        };
        for k in 0..20 {
            side.append(&[event(k)]).expect("append");
            // Distinct rotation names (they carry the time in milliseconds).
            std::thread::sleep(Duration::from_millis(2));
        }
        side.sync().expect("sync");
        let mut lines = 0;
        let mut files = 0;
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(
                text.len() < 300 + 100,
                "{} is {} bytes",
                path.display(),
                text.len()
            );
            lines += text.lines().count();
            files += 1;
        }
        assert_eq!(lines, 20, "every event kept");
        assert!(files > 3, "rotated into {files} files");
    }

    #[test]
    fn endpoint_shows_the_join_counts_and_a_stalled_publish() {
        let mut summary = LogSummary {
            messages: 12,
            set_aside: 5,
            ..LogSummary::default()
        };
        summary.join.lists = 3;
        summary.join.late_feedback = 1;
        let m = LogMetrics::new(Arc::default(), Duration::from_secs(1));
        if let Ok(mut s) = m.state.lock() {
            *s = LogState {
                summary,
                pending: 2,
                paused: 0,
            };
        }
        let text = m.render();
        for line in [
            "eglr_log_messages_total 12",
            "eglr_log_lists_total 3",
            "eglr_log_set_aside_events_total 5",
            "eglr_log_late_feedback_total 1",
            "eglr_log_pending_lists 2",
            "eglr_log_consumer_lag 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(m.liveness(Duration::from_secs(60)).is_ok());
        assert!(m.readiness().is_err(), "no broker connection up");
        std::thread::sleep(Duration::from_millis(20));
        let m = LogMetrics {
            publish_every: Duration::ZERO,
            ..m
        };
        assert!(m.liveness(Duration::from_millis(10)).is_err());
    }

    #[test]
    fn the_library_exposition_shows_what_the_hand_written_one_did() {
        let m = LogMetrics::new(Arc::default(), Duration::from_secs(1));
        super::super::prometheus::parsed::assert_same_series(
            include_str!("../../tests/fixtures/metrics/log.prom"),
            &m.render(),
        );
    }
}
