//! The simulated users of `eglr demo --loop`: every served list (a result) is answered
//! with clicks sampled from the simulator's true click model, as `Feedback` events,
//! and its expected clicks under the true model (the oracle) are tallied per model
//! version — the number the demo shows rising as new versions are published.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::KafkaConfig;
use crate::schema::{RerankResult, ServedSource};
use crate::sim::Traffic;
use crate::stream::kafka::{client_config, producer_config, LOW_LATENCY_FETCH};
use crate::stream::StreamError;

/// Lists served by one model version and their mean expected clicks (oracle), beside
/// the upstream order's on the same requests (what serving the request unchanged would
/// have earned: the number a version must beat to be worth serving).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionOutcome {
    pub version: String,
    pub lists_served: usize,
    pub oracle_clicks_per_list: f64,
    pub upstream_clicks_per_list: f64,
    /// Requests the exploration logging policy answered while this version served
    /// (their clicks are in the [`EXPLORATION_ROW`]; there, every list it holds).
    pub exploration_lists: usize,
}

impl VersionOutcome {
    /// The share of this version's requests answered by exploration.
    pub fn exploration_share(&self) -> f64 {
        if self.version == EXPLORATION_ROW {
            return 1.0;
        }
        self.exploration_lists as f64 / (self.lists_served + self.exploration_lists).max(1) as f64
    }
}

/// The row of the lists the exploration logging policy drew (any version), last.
pub const EXPLORATION_ROW: &str = "exploration";

/// Answers results until `stop` turns true. `impressions` maps each request id the
/// load sends to its impression index in `traffic`; results for other ids are ignored.
pub async fn respond(
    kafka: &KafkaConfig,
    brokers: &str,
    traffic: &Traffic<'_>,
    impressions: &HashMap<String, u64>,
    mut stop: watch::Receiver<bool>,
) -> Result<Vec<VersionOutcome>, StreamError> {
    let consumer = results_from_the_start(kafka, brokers)?;
    let producer: FutureProducer = producer_config(kafka, brokers)
        .create()
        .map_err(StreamError::kafka("create the feedback producer"))?;
    let mut tally = Tally::default();
    let mut answered = std::collections::HashSet::new();
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => break,
            m = consumer.recv() => m,
        };
        let Ok(msg) = msg else { continue };
        let result = match serde_json::from_slice::<RerankResult>(msg.payload().unwrap_or(&[])) {
            Ok(result) => result,
            Err(e) => {
                tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %e, "a result that does not decode: no clicks for it");
                continue;
            }
        };
        let Some(&index) = impressions.get(&result.request_id) else {
            continue;
        };
        if !answered.insert(result.request_id.clone()) {
            continue; // a re-delivered result: the user saw the list once
        }
        let user = tally.add(traffic, index, &result);
        let ids: Vec<_> = result.items.iter().map(|i| i.item_id.clone()).collect();
        for f in traffic.feedback(index, user, &ids, result.timestamp_ms) {
            let Ok(payload) = serde_json::to_vec(&f) else {
                continue;
            };
            let record = FutureRecord::to(&kafka.topics.feedback)
                .key(&f.request_id)
                .payload(&payload);
            if let Err((e, _)) = producer.send_result(record) {
                tracing::warn!(error = %e, "feedback not sent");
            }
        }
    }
    let _ = rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10));
    Ok(tally.outcomes())
}

/// A consumer of every partition of the results topic, from its start.
fn results_from_the_start(
    kafka: &KafkaConfig,
    brokers: &str,
) -> Result<StreamConsumer, StreamError> {
    let topics = &kafka.topics;
    let mut defaults = vec![
        ("group.id", "eglr-demo-users"),
        ("enable.auto.commit", "false"),
    ];
    defaults.extend(LOW_LATENCY_FETCH);
    let consumer: StreamConsumer = client_config(kafka, brokers, &defaults)
        .create()
        .map_err(StreamError::kafka("create the users' consumer"))?;
    let metadata = consumer
        .fetch_metadata(Some(&topics.results), Duration::from_secs(20))
        .map_err(StreamError::kafka("read topic metadata"))?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment
                .add_partition_offset(&topics.results, p.id(), Offset::Beginning)
                .map_err(StreamError::kafka("assign"))?;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(StreamError::kafka("assign the results"))?;
    Ok(consumer)
}

/// Per version (exploration lists in a row of their own), in order of first
/// appearance: lists, the oracle's expected clicks of the lists served, and of the
/// upstream order on the same requests.
#[derive(Default)]
struct Tally(Vec<Row>);

#[derive(Default)]
struct Row {
    version: String,
    lists: usize,
    clicks: f64,
    upstream: f64,
    exploration_lists: usize,
}

impl Tally {
    /// Scores `result`, the answer to impression `index`; returns its user.
    fn add(&mut self, traffic: &Traffic<'_>, index: u64, result: &RerankResult) -> usize {
        let world = traffic.world();
        let impression = traffic.impression(index);
        let user = impression.user;
        let items: Vec<usize> = result
            .items
            .iter()
            .filter_map(|i| world.item_index(i.item_id.as_str()))
            .collect();
        let expected = world.expected_clicks(user, &items);
        let upstream_len = items.len().min(impression.pool.len());
        let upstream = world.expected_clicks(user, &impression.pool[..upstream_len]);
        // Exploration lists are the logging policy's, not the version's: a row of their
        // own shows what exploring costs; the serving version counts how many it gave up.
        let row = if result.source == ServedSource::Exploration {
            self.row(&result.model_version).exploration_lists += 1;
            let row = self.row(EXPLORATION_ROW);
            row.exploration_lists += 1;
            row
        } else {
            self.row(&result.model_version)
        };
        row.lists += 1;
        row.clicks += expected;
        row.upstream += upstream;
        user
    }

    fn row(&mut self, version: &str) -> &mut Row {
        let at = match self.0.iter().position(|r| r.version == version) {
            Some(at) => at,
            None => {
                self.0.push(Row {
                    version: version.to_owned(),
                    ..Row::default()
                });
                self.0.len() - 1
            }
        };
        &mut self.0[at]
    }

    /// The versions in order of first appearance, the exploration row last.
    fn outcomes(mut self) -> Vec<VersionOutcome> {
        self.0.sort_by_key(|r| r.version == EXPLORATION_ROW);
        self.0
            .into_iter()
            .map(|r| VersionOutcome {
                oracle_clicks_per_list: r.clicks / r.lists.max(1) as f64,
                upstream_clicks_per_list: r.upstream / r.lists.max(1) as f64,
                version: r.version,
                lists_served: r.lists,
                exploration_lists: r.exploration_lists,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::RankedItem;
    use crate::sim::World;

    /// The answer to impression `index` of `traffic`: its upstream list, from `version`.
    fn result(
        traffic: &Traffic<'_>,
        index: u64,
        version: &str,
        source: ServedSource,
    ) -> RerankResult {
        let world = traffic.world();
        let imp = traffic.impression(index);
        RerankResult {
            request_id: traffic.request_id(index),
            model_version: version.into(),
            items: imp.pool[..world.list_len]
                .iter()
                .map(|&i| RankedItem {
                    item_id: world.item_id(i).into(),
                    score: 0.0,
                    reasoning_steps: 0,
                    entropy_before: 0.0,
                    entropy_after: 0.0,
                })
                .collect(),
            latency_ms: 0.0,
            timestamp_ms: 0,
            source,
            exploration: None,
            schema_version: None,
        }
    }

    #[test]
    fn each_version_counts_the_requests_exploration_answered_while_it_served() {
        let world = World::small(3);
        let traffic = Traffic::new(&world, 1);
        let mut tally = Tally::default();
        let served = [
            ("v1", ServedSource::Model),
            ("v1", ServedSource::Exploration),
            ("v1", ServedSource::Model),
            ("v1", ServedSource::Model),
            ("v2", ServedSource::Exploration),
            ("v2", ServedSource::Model),
        ];
        for (k, (version, source)) in served.into_iter().enumerate() {
            tally.add(
                &traffic,
                k as u64,
                &result(&traffic, k as u64, version, source),
            );
        }
        let rows = tally.outcomes();
        let names: Vec<&str> = rows.iter().map(|r| r.version.as_str()).collect();
        // Versions in order of first appearance, the exploration row last.
        assert_eq!(names, ["v1", "v2", EXPLORATION_ROW]);
        let (v1, v2, exploration) = (&rows[0], &rows[1], &rows[2]);
        assert_eq!((v1.lists_served, v1.exploration_lists), (3, 1));
        assert_eq!((v2.lists_served, v2.exploration_lists), (1, 1));
        assert_eq!(
            (exploration.lists_served, exploration.exploration_lists),
            (2, 2)
        );
        assert!((v1.exploration_share() - 0.25).abs() < 1e-12);
        assert!((v2.exploration_share() - 0.5).abs() < 1e-12);
        // Every request is in exactly one row's lists.
        assert_eq!(
            rows.iter().map(|r| r.lists_served).sum::<usize>(),
            served.len()
        );
    }
}
