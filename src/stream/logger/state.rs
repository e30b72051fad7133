//! What the logger holds between messages: the join, the files it writes, and the
//! offsets awaiting a publish; taking a message in, pausing a stream at the join's
//! bound, and publishing.

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::TopicPartitionList;

use super::super::kafka::GaugeContext;
use super::super::{OffsetTracker, StreamError};
use super::side_file::{io, SideFile, UNJOINED_DIR};
use super::topics::{stream_of, topic_of};
use super::{LogSettings, LogSummary};
use crate::contract::{Contract, UnknownFieldLog};
use crate::join::{JoinSettings, ListJoiner, Source, Stream, Unjoined, UnjoinedReason};
use crate::list_log::{recent_request_ids, LogWriter};

/// The joiner, the files and the offsets awaiting a publish.
pub(super) struct Logger {
    pub(super) joiner: ListJoiner,
    pub(super) writer: LogWriter,
    pub(super) side: SideFile,
    pub(super) tracker: OffsetTracker,
    /// Sources whose output is written but not yet durable.
    pub(super) awaiting: Vec<Source>,
    pub(super) last_publish: Instant,
    pub(super) publish_every: Duration,
    pub(super) summary: LogSummary,
    pub(super) max_pending: usize,
    /// Streams whose intake is paused because pending state is at its bound.
    pub(super) paused: Vec<Stream>,
    pub(super) unknown_fields: UnknownFieldLog,
}

impl Logger {
    pub(super) fn note_unknown(&mut self, event: &'static str, ignored: &[String]) {
        if self.unknown_fields.note(event, ignored) {
            self.summary.unknown_field_events += 1;
        }
    }

    /// Feeds one message to the join. Fails only when the side file cannot be written
    /// (nothing of it is then committed: the stage stops and the message is re-read).
    pub(super) fn take(
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
    pub(super) fn regulate(
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

    pub(super) fn keep(&mut self, unjoined: &[Unjoined]) -> Result<(), StreamError> {
        self.side.append(unjoined).map_err(StreamError::Log)?;
        self.summary.set_aside += unjoined.len() as u64;
        Ok(())
    }

    /// Writes the lists whose window closed; publishes when the interval or a file's
    /// size says so.
    pub(super) fn close(&mut self, now: i64, force_publish: bool) -> Result<(), StreamError> {
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
    pub(super) fn publish(&mut self) -> Result<(), StreamError> {
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

impl Logger {
    /// A logger writing `lists-INSTANCE-*.parquet` and its side file under the log
    /// directory, its join remembering the lists already in the log.
    pub(super) fn open(settings: &LogSettings) -> Result<Self, StreamError> {
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
