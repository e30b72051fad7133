//! Which topic is which of the join's streams, and the check that the three topics
//! share their partition counts.

use super::super::StreamError;
use crate::join::Stream;

/// The topic of one of the join's streams.
pub(super) fn topic_of(topics: &crate::config::Topics, stream: Stream) -> &str {
    match stream {
        Stream::Requests => &topics.requests,
        Stream::Results => &topics.results,
        Stream::Feedback => &topics.feedback,
    }
}

/// Which of the join's streams a topic is.
pub(super) fn stream_of(topics: &crate::config::Topics, topic: &str) -> Option<Stream> {
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
pub(super) async fn co_partitioned(
    kafka: &crate::config::KafkaConfig,
    brokers: &str,
) -> Result<(), StreamError> {
    let t = &kafka.topics;
    let names = [t.requests.as_str(), t.results.as_str(), t.feedback.as_str()];
    let counts = super::super::kafka::partition_counts(kafka, brokers, &names).await?;
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
