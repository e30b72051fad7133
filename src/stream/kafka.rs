//! Kafka clients of the stages, and the embedded broker (rdkafka's in-process
//! `MockCluster`, which speaks the Kafka protocol on a local port).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::StreamError;
use crate::config::KafkaConfig;

/// Base client config: bootstrap servers plus the pipeline's pass-through properties.
pub fn client_config(kafka: &KafkaConfig, brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("socket.nagle.disable", "true");
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    c
}

/// Consumer of a stage's consumer group: at-least-once (offsets are stored by the stage
/// once the work is acknowledged, and auto-committed from the store).
pub fn consumer_config(kafka: &KafkaConfig, brokers: &str, group: &str) -> ClientConfig {
    let mut c = client_config(kafka, brokers);
    c.set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        .set("session.timeout.ms", "10000")
        // A re-ranker is latency-bound: do not let a fetch wait for more data.
        .set("fetch.wait.max.ms", "10")
        .set("fetch.error.backoff.ms", "10");
    c
}

/// Idempotent producer.
pub fn producer_config(kafka: &KafkaConfig, brokers: &str) -> ClientConfig {
    let mut c = client_config(kafka, brokers);
    c.set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000");
    c
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

/// Creates topics on a real broker (existing topics are fine).
pub async fn create_topics(
    kafka: &KafkaConfig,
    brokers: &str,
    topics: &[(&str, i32)],
) -> Result<(), StreamError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka, brokers)
        .create()
        .map_err(StreamError::kafka("create an admin client"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
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
