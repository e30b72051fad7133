//! Training the candidate: the serving model's evaluator and generator warm-started,
//! the evaluator refreshed on the window, the gate judge refreshed the same way on its
//! own part, and the generator's recipe (GRPO for EGLR) rerun against the refreshed
//! evaluator.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use super::window::Window;
use super::{Round, RoundError};
use crate::model::{Bundle, Evaluator, Ranker};
use crate::train::{
    snapshot, train_evaluator, train_ranker, EvaluatorReport, RankerReport, TrainingConfig,
};

/// What training produced, before it is a bundle.
pub(super) struct Trained {
    pub evaluator: Evaluator,
    pub evaluator_vars: VarMap,
    pub evaluator_report: EvaluatorReport,
    pub gate_judge_vars: VarMap,
    pub generator_vars: VarMap,
    pub ranker_report: RankerReport,
    /// The settings it trained with (the round's epochs and steps).
    pub settings: TrainingConfig,
}

impl Trained {
    pub fn train(
        round: &Round<'_>,
        serving: &Bundle,
        serving_dir: &Path,
        window: &Window,
        device: &Device,
    ) -> Result<Self, RoundError> {
        let settings = TrainingConfig {
            evaluator_epochs: round.trainer.evaluator_epochs,
            grpo_steps: round.trainer.grpo_steps,
            search_warm_start_steps: round.trainer.search_warm_start_steps,
            ..round.training.clone()
        };
        let (meta, enc) = (&serving.meta, &serving.encoder);
        let new_evaluator = |vb| Evaluator::new(&meta.evaluator, enc, meta.max_list_len, vb);
        let refreshed = |part: &[crate::encoded::Example]| -> Result<_, RoundError> {
            let (evaluator, vars) =
                warm_started(serving_dir, "evaluator.safetensors", device, new_evaluator)?;
            let report = train_evaluator(
                &evaluator,
                &vars,
                &meta.evaluator,
                &settings,
                part,
                &window.early,
                enc,
                device,
            )?;
            Ok((evaluator, vars, report))
        };
        let (evaluator, evaluator_vars, evaluator_report) = refreshed(&window.fit)?;
        // The gate judge: the same warm start, trained on the judge part only.
        let (_, gate_judge_vars, _) = refreshed(&window.judge_fit)?;
        // The generator trains against a frozen copy of the refreshed evaluator.
        let frozen = new_evaluator(VarBuilder::from_tensors(
            snapshot(&evaluator_vars)?,
            DType::F32,
            device,
        ))?;
        let (ranker, generator_vars) =
            warm_started(serving_dir, "generator.safetensors", device, |vb| {
                Ranker::new(&meta.generator, enc, meta.max_list_len, vb)
            })?;
        let pools: Vec<_> = window.fit.iter().chain(&window.early).cloned().collect();
        let ranker_report = train_ranker(
            meta.generator.variant,
            &ranker,
            &generator_vars,
            &frozen,
            None,
            &settings,
            &pools,
            enc,
            round.list_len,
            device,
        )?;
        Ok(Self {
            evaluator,
            evaluator_vars,
            evaluator_report,
            gate_judge_vars,
            generator_vars,
            ranker_report,
            settings,
        })
    }
}

/// A model built with fresh trainable variables, then set to the weights saved in
/// `dir/file` (names and shapes must match: the bundle was built from the same configs).
fn warm_started<M>(
    dir: &Path,
    file: &str,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<M>,
) -> Result<(M, VarMap), RoundError> {
    let mut vars = VarMap::new();
    let model = build(VarBuilder::from_varmap(&vars, DType::F32, device))?;
    vars.load(dir.join(file))?;
    Ok((model, vars))
}
