//! The model stage: `batching.workers` dedicated threads (never tokio workers, so
//! consumers keep polling). A worker takes the queue, closes a batch at `max_batch`
//! requests or `max_wait_ms`, whichever comes first, hands the queue to the next
//! worker, re-ranks the batch with the model serving at that moment, and hands the
//! outcomes to the sink. Batches run side by side, one per worker, but leave in the
//! order they were taken ([`Turns`]): the logger's join reads `serve`'s progress through
//! a partition from its answers (`join` module docs), so a small batch overtaking a
//! large older one would make the older one's requests look unanswered. (The chaos soak
//! caught exactly that: after a restart, a 256-request backlog batch finished after
//! the next one, and its partition's oldest five lists were set aside.)

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use candle_core::Device;

use super::headers::TraceContext;
use super::prometheus::ServeMetrics;
use super::quality::{self, Pair};
use super::StreamError;
use crate::config::BatchingConfig;
use crate::exploration::ExplorationConfig;
use crate::model::LiveModel;
use crate::model::{Bundle, PoolTensors};
use crate::schema::{RankedItem, RerankRequest, RerankResult, ServedSource, SCHEMA_VERSION};

/// A valid request taken off the requests topic.
#[derive(Debug)]
pub struct Job {
    pub request: RerankRequest,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub received: Instant,
    /// The request's trace context, passed on to its result's headers.
    pub trace: TraceContext,
}

/// A finished job, with where it came from.
#[derive(Debug)]
pub struct Done {
    pub job: Job,
    /// The model's list, or the upstream order when the model could not rank it.
    pub result: RerankResult,
}

/// Re-ranks a batch with `bundle`: greedy decode with the KV cache.
pub fn rank_batch(
    bundle: &Bundle,
    requests: &[&RerankRequest],
    device: &Device,
) -> candle_core::Result<Vec<RerankResult>> {
    let started = Instant::now();
    let pools: Vec<_> = requests
        .iter()
        .map(|r| (&r.user, r.candidates.as_slice()))
        .collect();
    let tensors = PoolTensors::new(&bundle.encoder.encode(&pools), &bundle.encoder, device)?;
    let lens: Vec<usize> = requests.iter().map(|r| r.list_len).collect();
    let decoded = bundle.ranker.rank(&tensors, &lens, &bundle.evaluator)?;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let now_ms = crate::clock::unix_millis();
    Ok(requests
        .iter()
        .zip(decoded.lists)
        .zip(decoded.upstream)
        .map(|((r, list), upstream)| RerankResult {
            request_id: r.request_id.clone(),
            model_version: bundle.meta.version.clone(),
            items: list
                .iter()
                .map(|p| RankedItem {
                    item_id: r.candidates[p.item].item_id.clone(),
                    score: f64::from(p.prob),
                    reasoning_steps: p.reasoning_steps,
                    entropy_before: f64::from(p.entropy_before),
                    entropy_after: f64::from(p.entropy_after),
                })
                .collect(),
            latency_ms,
            timestamp_ms: now_ms,
            source: if upstream {
                ServedSource::Upstream
            } else {
                ServedSource::Model
            },
            exploration: None,
            schema_version: Some(SCHEMA_VERSION),
        })
        .collect())
}

/// The inference workers; [`Workers::join`] waits for all of them.
#[derive(Debug)]
pub struct Workers(Vec<std::thread::JoinHandle<()>>);

impl Workers {
    /// Waits until every worker has exited (the job queue closed and drained).
    pub fn join(self) {
        for worker in self.0 {
            let _ = worker.join();
        }
    }
}

/// Starts `batching.worker_count()` inference threads on `jobs`; they exit when the
/// job queue closes.
pub fn spawn(
    jobs: Receiver<Job>,
    done: tokio::sync::mpsc::Sender<Vec<Done>>,
    live: &Arc<LiveModel>,
    batching: &BatchingConfig,
    exploration: &ExplorationConfig,
    metrics: &Arc<ServeMetrics>,
) -> Result<Workers, StreamError> {
    let cfg = WorkerConfig {
        batching: batching.clone(),
        exploration: exploration.clone(),
    };
    let jobs = Arc::new(Mutex::new(Queue { jobs, taken: 0 }));
    let turns = Arc::new(Turns::default());
    let count = batching.worker_count();
    tracing::info!(workers = count, "starting the inference workers");
    let mut workers = Vec::with_capacity(count);
    for i in 0..count {
        let (jobs, done, turns) = (Arc::clone(&jobs), done.clone(), Arc::clone(&turns));
        let (live, metrics, cfg) = (Arc::clone(live), Arc::clone(metrics), cfg.clone());
        let worker = std::thread::Builder::new()
            .name(format!("eglr-inference-{i}"))
            .spawn(move || {
                // The model runs on a worker of its own compute pool, so candle's
                // parallel kernels run inline instead of handing every small op to
                // another thread (and workers never queue behind each other there).
                let threads = candle_core::utils::get_num_threads();
                match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                    Ok(pool) => pool.install(|| {
                        let device = live.device().clone();
                        run_inference(&jobs, &turns, done, live, cfg, metrics, device)
                    }),
                    Err(e) => tracing::error!(error = %e, "cannot start the compute pool"),
                }
            })
            .map_err(|e| StreamError::External {
                what: "start an inference thread".into(),
                message: e.to_string(),
            })?;
        workers.push(worker);
    }
    Ok(Workers(workers))
}

/// What every worker reads from the pipeline: how to batch, and which requests the
/// logging policy serves.
#[derive(Debug, Clone)]
struct WorkerConfig {
    batching: BatchingConfig,
    exploration: ExplorationConfig,
}

/// The job queue with the number of batches taken from it.
struct Queue {
    jobs: Receiver<Job>,
    taken: u64,
}

/// The next batch with its ticket (the order it was taken in): the first job that
/// arrives, then more until `max_batch` or `max_wait` after the first (at 0: those
/// already queued). `None` once the
/// queue is closed and drained. The queue is held while the batch fills, so the workers
/// take whole batches in turn.
fn next_batch(queue: &Mutex<Queue>, max_batch: usize, max_wait: Duration) -> Option<Batch> {
    // A worker that panicked while holding the queue left it intact: keep using it.
    let mut queue = queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let first = queue.jobs.recv().ok()?;
    let opened = Instant::now();
    let closes = opened + max_wait;
    let mut batch = vec![first];
    while batch.len() < max_batch {
        match queue
            .jobs
            .recv_timeout(closes.saturating_duration_since(Instant::now()))
        {
            Ok(job) => batch.push(job),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let ticket = queue.taken;
    queue.taken += 1;
    Some(Batch {
        ticket,
        opened,
        jobs: batch,
    })
}

/// Jobs a worker took, with its place in the hand-over order and when it opened.
struct Batch {
    ticket: u64,
    opened: Instant,
    jobs: Vec<Job>,
}

/// Whose turn it is to hand a batch to the sink: tickets go in the order batches were
/// taken, so results leave in the order their requests came.
#[derive(Default)]
struct Turns {
    next: Mutex<u64>,
    turned: Condvar,
}

impl Turns {
    /// Waits until `ticket` is next, runs `hand_over`, and passes the turn on (also
    /// when `hand_over` panics, so that no worker waits for a turn that never comes).
    fn in_turn<T>(&self, ticket: u64, hand_over: impl FnOnce() -> T) -> T {
        struct PassOn<'a>(&'a Turns);
        impl Drop for PassOn<'_> {
            fn drop(&mut self) {
                let mut next = self
                    .0
                    .next
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *next += 1;
                self.0.turned.notify_all();
            }
        }
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *next != ticket {
            next = self
                .turned
                .wait(next)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(next);
        let _pass_on = PassOn(self);
        hand_over()
    }
}

/// Runs until `jobs` is closed and drained; every job yields exactly one [`Done`], and
/// every valid request an answer: the model's list, or the upstream order when the
/// model cannot rank it.
fn run_inference(
    jobs: &Mutex<Queue>,
    turns: &Turns,
    done: tokio::sync::mpsc::Sender<Vec<Done>>,
    live: Arc<LiveModel>,
    WorkerConfig {
        batching,
        exploration,
    }: WorkerConfig,
    metrics: Arc<ServeMetrics>,
    device: Device,
) {
    let max_wait = Duration::from_millis(batching.max_wait_ms);
    while let Some(Batch {
        ticket,
        opened,
        jobs: batch,
    }) = next_batch(jobs, batching.max_batch, max_wait)
    {
        let bundle = live.current();
        metrics.set_model_version(&bundle.meta.version, bundle.meta.training.created_unix_ms);
        let limit = bundle.meta.max_list_len;
        let (fits, too_long): (Vec<Job>, Vec<Job>) =
            batch.into_iter().partition(|j| j.request.list_len <= limit);
        if !too_long.is_empty() {
            tracing::warn!(
                requests = too_long.len(),
                limit,
                "list_len above the model's maximum; answered with the upstream order"
            );
        }
        let answers = Answers {
            bundle: &bundle,
            exploration: &exploration,
            metrics: &metrics,
            device: &device,
        };
        // Exploration lists with the model's list they replaced (index into `out`).
        let mut explored: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut out = answers.upstream(too_long, "model_limit");
        let (fits, expired) = past_deadline(fits, batching.max_request_age_ms);
        out.extend(answers.upstream(expired, "deadline"));
        if !fits.is_empty() {
            answers.rank(fits, opened, &mut out, &mut explored);
        }
        let assess = batching.quality_every > 0 && ticket % batching.quality_every == 0;
        record_quality(
            &bundle,
            &out,
            explored,
            assess,
            &exploration,
            &metrics,
            &device,
        );
        // Blocks while the sink is behind: the bounded channel passes the backpressure
        // on to the job queue, and from there to the consumer's pause.
        if turns.in_turn(ticket, || done.blocking_send(out)).is_err() {
            break; // the sink is gone: shutting down
        }
    }
}

/// How one batch's valid requests are answered: by the model, the exploration policy
/// where it takes the request, or the upstream order where the model fails.
struct Answers<'a> {
    bundle: &'a Bundle,
    exploration: &'a ExplorationConfig,
    metrics: &'a ServeMetrics,
    device: &'a Device,
}

impl Answers<'_> {
    /// Ranks `fits` (the batch a worker opened at `opened`) and appends their answers
    /// to `out`; exploration lists, with the model's list they replaced, to `explored`.
    fn rank(
        &self,
        fits: Vec<Job>,
        opened: Instant,
        out: &mut Vec<Done>,
        explored: &mut Vec<(usize, Vec<usize>)>,
    ) {
        let metrics = self.metrics;
        let started = Instant::now();
        for job in &fits {
            // Waiting in the queue ends when a worker opens the batch; a request
            // that arrives while the batch fills waits in assembly only.
            let joined = job.received.max(opened);
            let queued = joined.saturating_duration_since(job.received);
            metrics.queue_wait.observe(queued.as_secs_f64());
            let assembly = started.saturating_duration_since(joined);
            metrics.batch_assembly.observe(assembly.as_secs_f64());
        }
        let requests: Vec<&RerankRequest> = fits.iter().map(|j| &j.request).collect();
        // A panic inside the model (a bug) must not take the thread, and with it
        // every later request, down: it is caught and answered like a model error.
        let ranked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rank_batch(self.bundle, &requests, self.device)
        }));
        match ranked {
            Ok(Ok(results)) => {
                metrics.batch_size.observe(fits.len() as f64);
                metrics
                    .batch_duration
                    .observe(started.elapsed().as_secs_f64());
                for (job, result) in fits.into_iter().zip(results) {
                    self.accept(job, result, out, explored);
                }
            }
            // A model failure is ours, not the request's: its requests are valid and
            // get the upstream order, never the dead-letter topic.
            Ok(Err(e)) => {
                tracing::error!(error = %e, batch = fits.len(), "model failed on a batch; answered with the upstream order");
                out.extend(self.upstream(fits, "model_error"));
            }
            Err(_) => {
                tracing::error!(
                    batch = fits.len(),
                    "the model panicked on a batch; answered with the upstream order"
                );
                out.extend(self.upstream(fits, "model_panic"));
            }
        }
    }

    /// The model's result for `job`, checked (a NaN never reaches the results topic),
    /// counted, and replaced by an exploration list where the policy takes the request.
    fn accept(
        &self,
        job: Job,
        mut result: RerankResult,
        out: &mut Vec<Done>,
        explored: &mut Vec<(usize, Vec<usize>)>,
    ) {
        let metrics = self.metrics;
        if !finite(&result) {
            tracing::error!(request_id = %job.request.request_id, "the model produced non-finite scores; answered with the upstream order");
            out.extend(self.upstream(vec![job], "non_finite_output"));
            return;
        }
        let steps: u32 = result.items.iter().map(|i| i.reasoning_steps).sum();
        metrics.reasoning_steps.observe(f64::from(steps));
        for item in &result.items {
            metrics.entropy.observe(item.entropy_after);
        }
        if self.exploration.explores(&job.request.request_id) {
            let model_list = served_order(&job.request, &result);
            explore(&mut result, &job.request, &model_list, self.exploration);
            metrics
                .exploration_lists
                .add(self.exploration.policy.name());
            explored.push((out.len(), model_list));
        }
        result.latency_ms = job.received.elapsed().as_secs_f64() * 1000.0;
        out.push(Done { job, result });
    }

    fn upstream(&self, jobs: Vec<Job>, reason: &str) -> Vec<Done> {
        jobs.into_iter()
            .map(|job| upstream_answer(job, &self.bundle.meta.version, reason, self.metrics))
            .collect()
    }
}

/// The answer to a valid request the model cannot rank: the first `list_len`
/// candidates in the order upstream sent them (the initial list), marked
/// `source: upstream`, counted by `reason`.
fn upstream_answer(job: Job, model_version: &str, reason: &str, metrics: &ServeMetrics) -> Done {
    metrics.upstream_fallbacks.add(reason);
    let request = &job.request;
    let result = RerankResult {
        request_id: request.request_id.clone(),
        model_version: model_version.to_owned(),
        items: request
            .candidates
            .iter()
            .take(request.list_len)
            .map(|c| RankedItem {
                item_id: c.item_id.clone(),
                score: 0.0,
                reasoning_steps: 0,
                entropy_before: 0.0,
                entropy_after: 0.0,
            })
            .collect(),
        latency_ms: job.received.elapsed().as_secs_f64() * 1000.0,
        timestamp_ms: crate::clock::unix_millis(),
        source: ServedSource::Upstream,
        exploration: None,
        schema_version: Some(SCHEMA_VERSION),
    };
    Done { job, result }
}

/// The quality metrics of a batch (see [`quality`]): how many lists are the upstream
/// order; exploration's cost on every exploration list; and on an assessed batch, the
/// served lists against the upstream order. The evaluator's failure costs only these
/// metrics, never an answer: it is logged and the batch goes on.
fn record_quality(
    bundle: &Bundle,
    out: &[Done],
    explored: Vec<(usize, Vec<usize>)>,
    assess: bool,
    exploration: &ExplorationConfig,
    metrics: &ServeMetrics,
    device: &Device,
) {
    // On every batch, so by ids alone: no index of the pool is built for it.
    let copies = out
        .iter()
        .filter(|d| {
            let request = &d.job.request;
            let upstream = &request.candidates[..request.list_len.min(request.candidates.len())];
            d.result.items.len() == upstream.len()
                && d.result
                    .items
                    .iter()
                    .zip(upstream)
                    .all(|(i, c)| i.item_id == c.item_id)
        })
        .count();
    metrics.upstream_order_lists.inc_by(copies as u64);
    let exploration_pairs: Vec<Pair> = explored
        .into_iter()
        .map(|(k, model)| Pair {
            request: &out[k].job.request,
            first: model,
            second: served_order(&out[k].job.request, &out[k].result),
        })
        .collect();
    if let Some(clicks) = evaluate(bundle, &exploration_pairs, device) {
        for (model, explored) in clicks {
            metrics
                .exploration_cost
                .add_value(exploration.policy.name(), model - explored);
        }
    }
    if !assess {
        return;
    }
    let pairs: Vec<Pair> = out
        .iter()
        .map(|d| Pair {
            request: &d.job.request,
            first: served_order(&d.job.request, &d.result),
            second: quality::upstream_order(&d.job.request),
        })
        .collect();
    if let Some(clicks) = evaluate(bundle, &pairs, device) {
        metrics.assessed_lists.inc_by(clicks.len() as u64);
        for (served, upstream) in clicks {
            metrics.expected_clicks.add_value("served", served);
            metrics.expected_clicks.add_value("upstream", upstream);
        }
    }
}

/// [`quality::expected_clicks`], with a failure or a panic logged instead of raised.
fn evaluate(bundle: &Bundle, pairs: &[Pair<'_>], device: &Device) -> Option<Vec<(f64, f64)>> {
    let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        quality::expected_clicks(bundle, pairs, device)
    }));
    match scored {
        Ok(Ok(clicks)) => Some(clicks),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the evaluator could not assess a batch; its quality metrics are skipped");
            None
        }
        Err(_) => {
            tracing::error!(
                "the evaluator panicked assessing a batch; its quality metrics are skipped"
            );
            None
        }
    }
}

/// The candidate indices of the list `result` serves for `request`.
fn served_order(request: &RerankRequest, result: &RerankResult) -> Vec<usize> {
    quality::order_of(request, result.items.iter().map(|i| &i.item_id))
}

/// Replaces the model's list in `result` (`model_list`, candidate indices) by the
/// logging policy's draw for the request: `source: exploration`, each item's score the
/// policy's probability of choosing it there (given the items above), the draw's
/// propensities in `exploration`.
fn explore(
    result: &mut RerankResult,
    request: &RerankRequest,
    model_list: &[usize],
    cfg: &ExplorationConfig,
) {
    let len = request.list_len.min(request.candidates.len());
    let (order, draw) = cfg.draw(
        &request.request_id,
        request.candidates.len(),
        len,
        model_list,
    );
    result.items = order
        .iter()
        .zip(&draw.propensities)
        .map(|(&j, &p)| RankedItem {
            item_id: request.candidates[j].item_id.clone(),
            score: p,
            reasoning_steps: 0,
            entropy_before: 0.0,
            entropy_after: 0.0,
        })
        .collect();
    result.source = ServedSource::Exploration;
    result.exploration = Some(draw);
}

/// Whether every number of `result` is finite.
fn finite(result: &RerankResult) -> bool {
    result
        .items
        .iter()
        .all(|i| i.score.is_finite() && i.entropy_before.is_finite() && i.entropy_after.is_finite())
}

/// Splits `jobs` into those still within `max_age_ms` of their request's timestamp and
/// those past it (none without a deadline).
fn past_deadline(jobs: Vec<Job>, max_age_ms: Option<u64>) -> (Vec<Job>, Vec<Job>) {
    let Some(max_age) = max_age_ms else {
        return (jobs, Vec::new());
    };
    let now = crate::clock::unix_millis();
    let max_age = i64::try_from(max_age).unwrap_or(i64::MAX);
    jobs.into_iter()
        .partition(|j| now.saturating_sub(j.request.timestamp_ms) <= max_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_handed_over_in_the_order_they_were_taken() {
        // Four workers finish their batches in reverse order of their tickets; the
        // hand-overs still come in ticket order.
        let turns = Arc::new(Turns::default());
        let handed = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..4u64)
            .map(|ticket| {
                let (turns, handed) = (Arc::clone(&turns), Arc::clone(&handed));
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(40 * (4 - ticket)));
                    turns.in_turn(ticket, || handed.lock().expect("lock").push(ticket));
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
        assert_eq!(*handed.lock().expect("lock"), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_hand_over_that_panics_still_passes_the_turn_on() {
        let turns = Arc::new(Turns::default());
        let first = {
            let turns = Arc::clone(&turns);
            std::thread::spawn(move || turns.in_turn(0, || panic!("a bug in the sink")))
        };
        assert!(first.join().is_err(), "the first hand-over panicked");
        let second = std::thread::spawn(move || turns.in_turn(1, || 7));
        assert_eq!(second.join().expect("second worker"), 7);
    }
}
