//! Kafka clients of the stages, and the embedded broker (rdkafka's in-process
//! `MockCluster`, which speaks the Kafka protocol on a local port).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use super::StreamError;
use crate::config::KafkaConfig;

/// Client config: bootstrap servers, then the stage's `defaults`, then the pipeline's
/// pass-through properties, which win over both (an operator can tune any of them).
pub fn client_config(
    kafka: &KafkaConfig,
    brokers: &str,
    defaults: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("socket.nagle.disable", "true");
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in kafka.properties.iter() {
        c.set(k, v);
    }
    c
}

/// Latency settings of every consumer on a re-ranking path: a fetch must not wait for
/// more data (librdkafka's default lets it wait 500 ms). A broker that holds a fetch
/// for its whole wait when the partition is empty at arrival (the embedded broker
/// does; Kafka answers as soon as a record comes) adds up to the wait per hop: at
/// 1 ms instead of 2, p50 at 1,000 requests/s on the embedded broker fell from about
/// 6.5 to 5.5 ms (`eglr demo --rate 1000`, docs/performance.md).
pub const LOW_LATENCY_FETCH: [(&str, &str); 2] =
    [("fetch.wait.max.ms", "1"), ("fetch.error.backoff.ms", "10")];

/// Consumer of a stage's consumer group: at-least-once (offsets are stored by the stage
/// once the work is acknowledged, and auto-committed from the store).
pub fn consumer_config(kafka: &KafkaConfig, brokers: &str, group: &str) -> ClientConfig {
    let mut defaults = vec![
        ("group.id", group),
        ("enable.auto.commit", "true"),
        ("auto.commit.interval.ms", "500"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("statistics.interval.ms", "1000"),
        ("session.timeout.ms", "10000"),
    ];
    defaults.extend(LOW_LATENCY_FETCH);
    client_config(kafka, brokers, &defaults)
}

/// What a failed delivery (a `DeliveryFuture`'s outcome, not `Ok(Ok(_))`) says, for a
/// log line: the error and the record's size, never the record itself, whose payload
/// carries user features or served lists (personal data).
pub fn delivery_failure<T, C>(
    outcome: &Result<Result<T, (KafkaError, OwnedMessage)>, C>,
) -> String {
    match outcome {
        Ok(Ok(_)) => "delivered".to_owned(),
        Ok(Err((e, record))) => format!(
            "{e} (topic {}, {} bytes)",
            record.topic(),
            record.payload().map_or(0, <[u8]>::len)
        ),
        Err(_) => "the producer dropped the record before its acknowledgement".to_owned(),
    }
}

/// Messages behind the high watermark over the assigned partitions, from librdkafka's
/// statistics.
pub fn consumer_lag(stats: &Statistics) -> i64 {
    stats
        .topics
        .values()
        .flat_map(|t| t.partitions.values())
        .filter(|p| p.partition >= 0)
        .map(|p| p.consumer_lag.max(0))
        .sum()
}

/// Broker connections that are up, from librdkafka's statistics: none means the
/// cluster is unreachable from here (an outage, not a stalled stage).
pub fn brokers_up(stats: &Statistics) -> i64 {
    let up = stats.brokers.values().filter(|b| b.state == "UP").count();
    i64::try_from(up).unwrap_or(i64::MAX)
}

/// The partitions with records the application has not been handed yet: fetched and
/// queued, or not fetched below the high watermark. (`consumer_lag` is measured from
/// the committed offset, which a stage that commits after its output is durable keeps
/// behind what it has read.)
pub fn partitions_behind(stats: &Statistics) -> Vec<(String, i32)> {
    let mut behind = Vec::new();
    for (topic, t) in &stats.topics {
        for p in t.partitions.values().filter(|p| p.partition >= 0) {
            let read_to = [p.app_offset, p.committed_offset, p.lo_offset]
                .into_iter()
                .find(|&o| o >= 0);
            let unread = read_to.is_some_and(|o| p.hi_offset > o);
            if p.fetchq_cnt > 0 || unread {
                behind.push((topic.clone(), p.partition));
            }
        }
    }
    behind
}

/// The partition count of every topic the client knows, from librdkafka's statistics
/// (its metadata: assigned or not).
pub fn topic_partitions(stats: &Statistics) -> Vec<(String, usize)> {
    stats
        .topics
        .iter()
        .map(|(topic, t)| {
            let real = t.partitions.values().filter(|p| p.partition >= 0).count();
            (topic.clone(), real)
        })
        .collect()
}

/// The consumer lag of each partition the client fetches (librdkafka reports -1 for
/// the others), by topic and partition.
pub fn partition_lags(stats: &Statistics) -> Vec<(String, i32, i64)> {
    let mut lags = Vec::new();
    for (topic, t) in &stats.topics {
        for p in t.partitions.values() {
            if p.partition >= 0 && p.consumer_lag >= 0 {
                lags.push((topic.clone(), p.partition, p.consumer_lag));
            }
        }
    }
    lags.sort();
    lags
}

/// What a consumer's statistics feed: its lag (in all and per partition), its broker
/// connections, the partitions it has not read to their end, and its topics'
/// partition counts.
#[derive(Debug, Default)]
pub struct ConsumerGauges {
    pub lag: AtomicI64,
    pub brokers_up: AtomicI64,
    behind: std::sync::Mutex<Vec<(String, i32)>>,
    partitions: std::sync::Mutex<Vec<(String, usize)>>,
    partition_lags: std::sync::Mutex<Vec<(String, i32, i64)>>,
}

impl ConsumerGauges {
    pub fn record(&self, stats: &Statistics) {
        self.lag.store(consumer_lag(stats), Ordering::Relaxed);
        self.brokers_up.store(brokers_up(stats), Ordering::Relaxed);
        if let Ok(mut b) = self.behind.lock() {
            *b = partitions_behind(stats);
        }
        if let Ok(mut p) = self.partitions.lock() {
            *p = topic_partitions(stats);
        }
        if let Ok(mut l) = self.partition_lags.lock() {
            *l = partition_lags(stats);
        }
    }

    /// Each fetched partition's lag at the last statistics: (topic, partition, lag).
    pub fn partition_lags(&self) -> Vec<(String, i32, i64)> {
        self.partition_lags
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Each known topic with its partition count, at the last statistics.
    pub fn partitions(&self) -> Vec<(String, usize)> {
        self.partitions
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// The partitions of `topic` not read to their end at the last statistics.
    pub fn behind(&self, topic: &str) -> Vec<i32> {
        self.behind.lock().map_or_else(
            |_| Vec::new(),
            |b| {
                b.iter()
                    .filter(|(t, _)| t == topic)
                    .map(|(_, p)| *p)
                    .collect()
            },
        )
    }

    /// `Err(reason)` when no broker connection is up.
    pub fn reachable(&self) -> Result<(), String> {
        match self.brokers_up.load(Ordering::Relaxed) {
            0 => Err("no broker connection is up (yet)".into()),
            _ => Ok(()),
        }
    }
}

/// The context of a consumer whose statistics feed [`ConsumerGauges`]. (rdkafka's
/// default context logs the whole statistics document, about 15 KB, at info level
/// every `statistics.interval.ms`: a gigabyte of log a day.)
#[derive(Debug, Default)]
pub struct GaugeContext {
    pub gauges: Arc<ConsumerGauges>,
}

impl ClientContext for GaugeContext {
    fn stats(&self, stats: Statistics) {
        self.gauges.record(&stats);
    }
}

impl ConsumerContext for GaugeContext {}

/// Idempotent producer. Keys go to partitions as the Java client puts them (murmur2;
/// librdkafka's own default hashes with CRC32): upstream producers most likely use the
/// Java client or its partitioner, and the logger joins a request's events by partition
/// number, so a result must land on its request's partition number. No linger: a
/// re-ranker's result is awaited by a user, and under load records still batch while
/// earlier requests are in flight (at 1,000 requests/s, `linger.ms = 2` on both the
/// requests' and the results' producer added about 4 ms to p50; throughput as fast as
/// possible did not drop without it).
pub fn producer_config(kafka: &KafkaConfig, brokers: &str) -> ClientConfig {
    client_config(
        kafka,
        brokers,
        &[
            ("partitioner", "murmur2_random"),
            ("enable.idempotence", "true"),
            ("linger.ms", "0"),
            ("message.timeout.ms", "30000"),
        ],
    )
}

/// The in-process broker used when no brokers are configured.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.bootstrap())
            .finish()
    }
}

impl EmbeddedBroker {
    pub fn start() -> Result<Self, StreamError> {
        Ok(Self {
            cluster: MockCluster::new(1)
                .map_err(StreamError::kafka("start the embedded broker"))?,
        })
    }

    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// The mock cluster, for fault injection in tests.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }

    /// Creates topics (the mock broker does not implement CreateTopics).
    pub fn create_topics(&self, topics: &[(&str, i32)]) -> Result<(), StreamError> {
        for (name, partitions) in topics {
            self.cluster
                .create_topic(name, *partitions, 1)
                .map_err(StreamError::kafka("create a topic on the embedded broker"))?;
        }
        Ok(())
    }
}

/// Creates topics on a real broker (existing topics are fine), with
/// `kafka.replication_factor` or, unset, the cluster's default (`-1` in the
/// CreateTopics request, KIP-464).
pub async fn create_topics(
    kafka: &KafkaConfig,
    brokers: &str,
    topics: &[(&str, i32)],
) -> Result<(), StreamError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka, brokers, &[])
        .create()
        .map_err(StreamError::kafka("create an admin client"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(n, p)| {
            let replication = kafka.replication_factor.unwrap_or(-1);
            NewTopic::new(n, *p, TopicReplication::Fixed(replication))
        })
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(StreamError::kafka("create topics"))?;
    for r in results {
        if let Err((topic, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(StreamError::External {
                    what: format!("create topic {topic}"),
                    message: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The partition count of each of `topics` (0 for a topic the cluster does not have).
pub async fn partition_counts(
    kafka: &KafkaConfig,
    brokers: &str,
    topics: &[&str],
) -> Result<Vec<(String, usize)>, StreamError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let config = client_config(kafka, brokers, &[]);
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    let read = move || -> Result<Vec<(String, usize)>, StreamError> {
        let client: BaseConsumer = config
            .create()
            .map_err(StreamError::kafka("create a metadata client"))?;
        let mut counts = Vec::with_capacity(topics.len());
        for topic in topics {
            let metadata = client
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map_err(StreamError::kafka("read the topics' metadata"))?;
            let n = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            counts.push((topic, n));
        }
        Ok(counts)
    };
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|_| StreamError::Internal("the metadata reader panicked"))?
}

#[cfg(test)]
mod delivery_tests {
    use super::*;
    use rdkafka::message::Timestamp;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn a_failed_delivery_is_described_without_its_payload() {
        let payload = br#"{"user":{"id":"u-secret"}}"#.to_vec();
        let record = OwnedMessage::new(
            Some(payload),
            Some(b"r1".to_vec()),
            "results".into(),
            Timestamp::NotAvailable,
            0,
            -1,
            None,
        );
        let outcome: Result<Result<(), _>, ()> = Ok(Err((
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
            record,
        )));
        let line = delivery_failure(&outcome);
        assert!(
            line.contains("26 bytes") && line.contains("results"),
            "{line}"
        );
        assert!(!line.contains("secret"), "payload in the log: {line}");
    }
}
