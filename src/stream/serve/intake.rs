//! The source: reads the requests topic, validates each request, queues it for the
//! inference thread and dead-letters what cannot be answered. Backpressure: when the
//! queue is full, jobs wait in an overflow list and the assignment is paused (the
//! consumer keeps polling, so the group keeps the member); it resumes once the queue
//! has drained to half. A revoke takes its partitions' jobs out of the overflow (see
//! [`super::group`]).

use std::collections::VecDeque;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::TopicPartitionList;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::super::headers::TraceContext;
use super::super::inference::Job;
use super::super::StreamError;
use super::group::{ServeContext, Shared};
use super::sink::{Sink, SourceOffset};
use crate::contract::{Contract, UnknownFieldLog};

/// How often the overflow is drained, pause/resume decided and offsets stored.
const TICK: Duration = Duration::from_millis(20);

/// The source's state between messages.
pub(super) struct Intake {
    pub queue: SyncSender<Job>,
    pub capacity: usize,
    pub shared: Arc<Shared>,
    pub sink: Sink,
    pub paused: bool,
    /// Dead letters awaiting their acknowledgement.
    pub dead_letters: JoinSet<()>,
    pub unknown_fields: UnknownFieldLog,
}

impl Intake {
    /// Takes in requests until `shutdown` turns true.
    pub async fn run(
        &mut self,
        consumer: &StreamConsumer<ServeContext>,
        contract: &Contract<'_>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), StreamError> {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                msg = consumer.recv() => match msg {
                    Ok(m) => self.take(consumer, contract, &m).await?,
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                },
                _ = tick.tick() => self.housekeeping(consumer)?,
            }
        }
    }

    /// One message: queued when valid, dead-lettered otherwise.
    async fn take(
        &mut self,
        consumer: &StreamConsumer<ServeContext>,
        contract: &Contract<'_>,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), StreamError> {
        let metrics = &self.shared.metrics;
        metrics.requests.inc();
        metrics.progress();
        let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
        self.shared.ledger.start(topic, partition, offset);
        // A message without a payload (a tombstone) fails decoding like any bad bytes
        // and is dead-lettered with the decoder's message.
        let raw = msg.payload().unwrap_or(&[]);
        match contract.parse_request(raw) {
            Ok(decoded) => {
                if self.unknown_fields.note("request", &decoded.ignored) {
                    metrics.unknown_field_events.add("request");
                }
                let job = Job {
                    request: decoded.event,
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    received: Instant::now(),
                    trace: TraceContext::from_headers(msg.headers()),
                };
                self.queue_job(job)?;
                if self.overflowing() && !self.paused {
                    self.paused = self.set_paused(consumer, true);
                }
            }
            Err(e) => {
                tracing::debug!(%topic, partition, offset, error = %e, "dead letter");
                let from = SourceOffset {
                    topic,
                    partition,
                    offset,
                };
                let error = (e.kind(), e.to_string());
                self.sink
                    .dead_letter(&mut self.dead_letters, raw, msg.headers(), from, error)
                    .await;
            }
        }
        Ok(())
    }

    fn overflowing(&self) -> bool {
        self.shared.overflow.lock().is_ok_and(|o| !o.is_empty())
    }

    fn overflow(&self) -> Result<MutexGuard<'_, VecDeque<Job>>, StreamError> {
        self.shared
            .overflow
            .lock()
            .map_err(|_| StreamError::Internal("the overflow lock is poisoned"))
    }

    /// Queues `job` behind any overflow, keeping the order of a partition.
    fn queue_job(&mut self, job: Job) -> Result<(), StreamError> {
        let mut overflow = self.overflow()?;
        if !overflow.is_empty() {
            overflow.push_back(job);
            return Ok(());
        }
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => {
                overflow.push_back(job);
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(StreamError::Internal("the inference thread stopped"))
            }
        }
    }

    /// Moves overflow into the queue, resumes when it drained, stores offsets; stops the
    /// stage once a delivery was given up (its partition could not commit past it).
    fn housekeeping(&mut self, consumer: &StreamConsumer<ServeContext>) -> Result<(), StreamError> {
        if let Some(why) = self.shared.metrics.failure() {
            return Err(StreamError::External {
                what: "deliver the stage's output".into(),
                message: why,
            });
        }
        self.drain_overflow()?;
        if self.paused && !self.overflowing() && self.shared.ledger.below_half(self.capacity) {
            self.paused = self.set_paused(consumer, false);
        }
        self.shared.ledger.store(consumer);
        while self.dead_letters.try_join_next().is_some() {}
        Ok(())
    }

    fn drain_overflow(&mut self) -> Result<(), StreamError> {
        let mut overflow = self.overflow()?;
        while let Some(job) = overflow.pop_front() {
            match self.queue.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(job)) => {
                    overflow.push_front(job);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(StreamError::Internal("the inference thread stopped"))
                }
            }
        }
        Ok(())
    }

    /// Pauses or resumes the whole assignment; returns the new state.
    fn set_paused(&self, consumer: &StreamConsumer<ServeContext>, pause: bool) -> bool {
        let assignment = consumer
            .assignment()
            .unwrap_or_else(|_| TopicPartitionList::new());
        let r = if pause {
            consumer.pause(&assignment)
        } else {
            consumer.resume(&assignment)
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, pause, "pause/resume failed");
            return !pause;
        }
        let metrics = &self.shared.metrics;
        metrics.paused.set(i64::from(pause));
        if pause {
            metrics.pauses.inc();
        }
        tracing::debug!(pause, "backpressure");
        pause
    }

    /// Graceful shutdown: hands the overflow to the inference thread (blocking while the
    /// queue is full) and closes the queue, so the thread finishes and exits; then waits
    /// for the dead letters.
    pub async fn close(self) {
        let Intake {
            queue,
            shared,
            mut dead_letters,
            ..
        } = self;
        let overflow = shared
            .overflow
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || {
            for job in overflow {
                if queue.send(job).is_err() {
                    break;
                }
            }
        })
        .await;
        while dead_letters.join_next().await.is_some() {}
    }
}
