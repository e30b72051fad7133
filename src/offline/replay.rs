//! Replay: every logged request of a list log re-ranked offline by a bundle, streamed
//! one batch at a time (logs larger than memory), with the offline metrics of `eval`
//! for the model, the initial order and the logged order.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, ListBuilder, StringArray, StringBuilder, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use candle_core::Device;

use super::evaluate::{EvalOptions, EvalReport, Evaluation};
use super::OfflineError;
use crate::encoded::encode_rows;
use crate::list_log::{LogReader, LogWriter, ParquetRows, RollPolicy};
use crate::model::Bundle;

/// One re-ranked request, as written to `OUT/replay-SEQ.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayedList {
    pub request_id: String,
    pub model_version: String,
    /// Item ids in the model's order, top first.
    pub items: Vec<String>,
    /// Reasoning tokens inserted before each item.
    pub reasoning_steps: Vec<u32>,
    /// The bundle evaluator's DCG reward of the list (eq. 18).
    pub evaluator_score: f32,
}

impl ParquetRows for ReplayedList {
    fn schema() -> SchemaRef {
        let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
        Arc::new(Schema::new(vec![
            Field::new("request_id", DataType::Utf8, false),
            Field::new("model_version", DataType::Utf8, false),
            Field::new("items", list(DataType::Utf8), false),
            Field::new("reasoning_steps", list(DataType::UInt32), false),
            Field::new("evaluator_score", DataType::Float32, false),
        ]))
    }

    fn to_batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        let mut items = ListBuilder::new(StringBuilder::new());
        let mut steps = ListBuilder::new(UInt32Builder::new());
        for r in rows {
            items.append_value(r.items.iter().map(Some));
            steps.append_value(r.reasoning_steps.iter().map(|&s| Some(s)));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.request_id),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &r.model_version),
            )),
            Arc::new(items.finish()),
            Arc::new(steps.finish()),
            Arc::new(Float32Array::from_iter_values(
                rows.iter().map(|r| r.evaluator_score),
            )),
        ];
        RecordBatch::try_new(Self::schema(), columns)
    }
}

/// Re-ranks every list of the logs matching `pattern` (decode batches of `opts.batch`)
/// and writes the results under `out`; `progress` gets the lists done so far.
pub fn replay(
    bundle: &Bundle,
    pattern: &str,
    out: &Path,
    roll: RollPolicy,
    opts: &EvalOptions,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> Result<EvalReport, OfflineError> {
    let reader = LogReader::open(pattern, opts.batch.max(1))?;
    let mut writer: LogWriter<ReplayedList> = LogWriter::create(out, "replay", roll)?;
    let mut evaluation =
        Evaluation::new(bundle, crate::offline::evaluate::Scorers::default(), opts);
    let mut done = 0;
    for batch in reader.batches() {
        let rows = batch?;
        let examples = encode_rows(&rows, &bundle.encoder, pattern)?;
        let ranked = evaluation.add(&examples, device)?;
        let replayed: Vec<ReplayedList> = rows
            .iter()
            .zip(ranked)
            .map(|(row, r)| ReplayedList {
                request_id: row.request_id.clone(),
                model_version: bundle.meta.version.clone(),
                items: r
                    .list
                    .iter()
                    .map(|p| row.candidates[p.item].item_id.0.clone())
                    .collect(),
                reasoning_steps: r.list.iter().map(|p| p.reasoning_steps).collect(),
                evaluator_score: r.evaluator_score,
            })
            .collect();
        writer.write(&replayed)?;
        done += rows.len();
        progress(done);
    }
    writer.finish()?;
    Ok(evaluation.finish())
}
