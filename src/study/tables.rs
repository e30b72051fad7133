//! The study's markdown tables: results by ordering, paired differences over seeds,
//! entropy by position, headroom, evaluator fidelity, the paper's Tables 3 and 4.

use super::{mean_std, StudyRow};
use crate::config::PipelineConfig;
use crate::model::Variant;
use crate::offline::evaluate::{OrderingReport, PositionStats};
use crate::sim::Headroom;
use crate::train::{ClickFit, CurvePoint};

/// A markdown table's header: a left-aligned `first` column, then right-aligned `columns`.
pub(super) fn header(first: &str, columns: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = columns.collect();
    format!(
        "| {first} |{}\n|---|{}\n",
        names.iter().map(|n| format!(" {n} |")).collect::<String>(),
        "---:|".repeat(names.len())
    )
}

/// The results table in markdown: one row per ordering, mean ± std over seeds.
pub fn markdown_table(rows: &[StudyRow]) -> String {
    type Metric = fn(&OrderingReport) -> Option<f64>;
    let metrics: [(&str, Metric); 11] = [
        ("MAP@5", |r| Some(r.metrics.map5)),
        ("MAP@10", |r| Some(r.metrics.map10)),
        ("NDCG@5", |r| Some(r.metrics.ndcg5)),
        ("NDCG@10", |r| Some(r.metrics.ndcg10)),
        ("own Evaluator Score", |r| Some(r.metrics.evaluator_score)),
        ("judge (clicks/list)", |r| r.metrics.judge_score),
        ("Oracle (true clicks/list)", |r| r.metrics.oracle_score),
        ("reasoning steps/list", |r| {
            Some(r.metrics.reasoning_steps_per_list)
        }),
        ("ms/list", |r| Some(r.ms_per_list)),
        ("copies initial order", |r| Some(r.copies_initial_order)),
        ("cold items served", |r| r.cold_items),
    ];
    let mut out = header("ordering", metrics.iter().map(|(name, _)| name.to_string()));
    for row in rows {
        out += &format!("| {} |", row.name);
        for (_, f) in &metrics {
            let xs: Option<Vec<f64>> = row.runs.iter().map(f).collect();
            out += &match xs {
                Some(xs) if !xs.is_empty() => {
                    let (m, s) = mean_std(&xs);
                    format!(" {m:.4} ± {s:.4} |")
                }
                _ => " - |".to_owned(),
            };
        }
        out += "\n";
    }
    out
}

/// Two-sided 95 % quantile of Student's t with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const T: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    T.get(df.wrapping_sub(1)).copied().unwrap_or(1.96)
}

/// Mean of paired differences `a[i] - b[i]` (same seed) with its 95 % t interval.
pub fn paired_interval(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    if d.len() < 2 || a.len() != b.len() {
        return None;
    }
    let (m, s) = mean_std(&d);
    let half = t95(d.len() - 1) * s / (d.len() as f64).sqrt();
    Some((m, m - half, m + half))
}

/// Rows compared pairwise when both ran, each isolating one mechanism: EGLR's reasoning
/// (`eglr` vs `backbone`), LARES's recurrent refinement (`lares` vs `backbone`,
/// `lares+eglr` vs `eglr`) and EGLR's reasoning on top of it (`lares+eglr` vs `lares`).
const MECHANISM_PAIRS: [(&str, &str); 4] = [
    ("eglr", "backbone"),
    ("lares", "backbone"),
    ("lares+eglr", "eglr"),
    ("lares+eglr", "lares"),
];

/// Paired differences over seeds of every row to `baseline` (and of the
/// [`MECHANISM_PAIRS`] that ran, and of a variant with another RL recipe to the variant), by the oracle, the judge, the model's own evaluator and
/// NDCG@10 against the logged clicks:
/// mean and 95 % interval. Seeds give the pairs; a difference is called only when its
/// interval excludes zero.
pub fn paired_table(rows: &[StudyRow], baseline: &str) -> String {
    type Metric = fn(&OrderingReport) -> Option<f64>;
    let metrics: [(&str, Metric); 4] = [
        ("oracle", |r| r.metrics.oracle_score),
        ("judge", |r| r.metrics.judge_score),
        ("own evaluator", |r| Some(r.metrics.evaluator_score)),
        ("NDCG@10 (logged clicks)", |r| Some(r.metrics.ndcg10)),
    ];
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    let mut pairs: Vec<(&StudyRow, &StudyRow)> = Vec::new();
    if let Some(base) = find(baseline) {
        pairs.extend(
            rows.iter()
                .filter(|r| r.name != baseline)
                .map(|r| (r, base)),
        );
    }
    for (a, b) in MECHANISM_PAIRS {
        if let (Some(a), Some(b)) = (find(a), find(b)) {
            pairs.push((a, b));
        }
    }
    // Each variant with semantic ids, or at another LARES depth, against the same
    // variant as the pipeline sets it.
    pairs.extend(rows.iter().filter_map(|r| {
        let base = match r.name.strip_suffix(super::SEMANTIC_IDS) {
            Some(base) => base.trim_end(),
            None => r.name.split_once(" depth=")?.0,
        };
        Some((r, find(base)?))
    }));
    // Each variant trained by another RL recipe against its own recipe.
    pairs.extend(
        rows.iter()
            .filter_map(|r| Some((r, find(recipe_base(&r.name)?)?))),
    );
    let mut out = header(
        "difference (paired by seed)",
        metrics
            .iter()
            .map(|(name, _)| format!("{name}: mean [95 % CI]")),
    );
    for (a, b) in pairs {
        out += &format!("| {} − {} |", a.name, b.name);
        for (_, f) in &metrics {
            let xs: Option<Vec<f64>> = a.runs.iter().map(f).collect();
            let ys: Option<Vec<f64>> = b.runs.iter().map(f).collect();
            out += &match xs.zip(ys).and_then(|(x, y)| paired_interval(&x, &y)) {
                Some((m, lo, hi)) => format!(" {m:+.4} [{lo:+.4}, {hi:+.4}] |"),
                None => " - |".to_owned(),
            };
        }
        out += "\n";
    }
    out
}

/// The variant a row trains by another RL recipe than its own (`eglr dapo` -> `eglr`),
/// if it is such a row (not a K sweep's `eglr K=3`).
pub(super) fn recipe_base(name: &str) -> Option<&str> {
    let (base, rest) = name.split_once(' ')?;
    let other_recipe =
        !rest.starts_with("K=") && !rest.starts_with("depth=") && rest != super::SEMANTIC_IDS;
    other_recipe.then_some(base)
}

/// A row's RL checkpoints averaged over its runs, step by step (steps all runs have).
pub fn mean_curve(row: &StudyRow) -> Vec<CurvePoint> {
    let Some(first) = row.curves.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter_map(|p| {
            let at: Vec<&CurvePoint> = row
                .curves
                .iter()
                .map(|c| c.iter().find(|q| q.step == p.step))
                .collect::<Option<_>>()?;
            let mean = |f: fn(&CurvePoint) -> f64| {
                mean_std(&at.iter().map(|q| f(q)).collect::<Vec<_>>()).0
            };
            let oracle: Option<Vec<f64>> = at.iter().map(|q| q.oracle).collect();
            let copy_share: Option<Vec<f64>> = at.iter().map(|q| q.copy_share).collect();
            Some(CurvePoint {
                step: p.step,
                own: mean(|q| q.own),
                judge: mean(|q| q.judge),
                oracle: oracle.map(|o| mean_std(&o).0),
                copy_share: copy_share.map(|c| mean_std(&c).0),
            })
        })
        .collect()
}

/// Per-position entropy and reasoning of a row, averaged over its runs.
pub fn mean_positions(row: &StudyRow) -> Vec<PositionStats> {
    let len = row.positions.iter().map(Vec::len).max().unwrap_or(0);
    (0..len)
        .map(|t| {
            let at: Vec<&PositionStats> = row.positions.iter().filter_map(|p| p.get(t)).collect();
            let mean = |f: fn(&PositionStats) -> f64| {
                mean_std(&at.iter().map(|p| f(p)).collect::<Vec<_>>()).0
            };
            PositionStats {
                position: t + 1,
                entropy_before: mean(|p| p.entropy_before),
                entropy_after: mean(|p| p.entropy_after),
                reasoning_steps: mean(|p| p.reasoning_steps),
            }
        })
        .collect()
}

/// Entropy (nats) of the selection distribution by list position, before and after
/// reasoning, for the named rows (spec §6; the paper's entropy figures).
pub fn positions_table(rows: &[&StudyRow]) -> String {
    let mut out = String::from("| position |");
    for row in rows {
        out += &format!(
            " {0} H before | {0} H after | {0} reasoning steps |",
            row.name
        );
    }
    out += "\n|---:|";
    out += &"---:|---:|---:|".repeat(rows.len());
    out += "\n";
    let means: Vec<Vec<PositionStats>> = rows.iter().map(|r| mean_positions(r)).collect();
    let len = means.iter().map(Vec::len).max().unwrap_or(0);
    for t in 0..len {
        out += &format!("| {} |", t + 1);
        for m in &means {
            out += &match m.get(t) {
                Some(p) => format!(
                    " {:.3} | {:.3} | {:.2} |",
                    p.entropy_before, p.entropy_after, p.reasoning_steps
                ),
                None => " - | - | - |".to_owned(),
            };
        }
        out += "\n";
    }
    out
}

/// Expected clicks per list of the headroom orderings on test pools.
pub fn headroom_table(h: &Headroom) -> String {
    let pct = |x: f64| 100.0 * (x / h.initial - 1.0);
    format!(
        "| ordering ({} test pools) | oracle (true clicks/list) | vs initial |\n|---|---:|---:|\n\
         | initial (upstream) | {:.4} | +0.0 % |\n\
         | point-wise sort by true relevance | {:.4} | {:+.1} % |\n\
         | list-wise search, true click model | {:.4} | {:+.1} % |\n\
         | list-wise search, observable inputs only | {:.4} | {:+.1} % |\n",
        h.lists,
        h.initial,
        h.pointwise_sort,
        pct(h.pointwise_sort),
        h.listwise_search,
        pct(h.listwise_search),
        h.observable_search,
        pct(h.observable_search),
    )
}

/// The seeds' evaluator fidelity on validation pools, one line per evaluator (the
/// models' and each reference kind's): the orderings and the adjacency probe, then the
/// redundancy and point-wise probes.
pub fn fidelity_table(rows: &[StudyRow]) -> String {
    let rows: Vec<&StudyRow> = rows.iter().filter(|r| !r.fidelity.is_empty()).collect();
    if rows.is_empty() {
        return String::new();
    }
    let lists = fidelity_rows(
        &rows,
        "| evaluator | Kendall tau | pairs ordered as the oracle | adjacency probe: evaluator prefers adjacent | oracle prefers adjacent | evaluator gain | oracle gain |",
        &[
            |f| f.kendall_tau,
            |f| f.pair_agreement,
            |f| f.adjacency.evaluator_prefers_adjacent,
            |f| f.adjacency.oracle_prefers_adjacent,
            |f| f.adjacency.evaluator_gain,
            |f| f.adjacency.oracle_gain,
        ],
    );
    let probes = fidelity_rows(
        &rows,
        "| evaluator | redundancy probe: evaluator sees the loss | oracle sees it | evaluator effect (clicks) | oracle effect | item score: Kendall tau with true relevance | initial order's | point-wise sort vs initial, list effects off |",
        &[
            |f| f.redundancy.evaluator_sees_loss,
            |f| f.redundancy.oracle_sees_loss,
            |f| f.redundancy.evaluator_effect,
            |f| f.redundancy.oracle_effect,
            |f| f.pointwise.evaluator_tau,
            |f| f.pointwise.initial_tau,
            |f| f.pointwise.sort_vs_initial_without_list_effects,
        ],
    );
    format!("{lists}\n{probes}")
}

type FidelityStat = fn(&crate::offline::fidelity::Fidelity) -> f64;

/// One markdown table: `header`, then per evaluator each stat's mean ± std over seeds.
fn fidelity_rows(rows: &[&StudyRow], header: &str, stats: &[FidelityStat]) -> String {
    let mut out = format!("{header}\n|---|{}\n", "---:|".repeat(stats.len()));
    for row in rows {
        let name = row
            .name
            .strip_suffix(" point-wise sort")
            .unwrap_or(&row.name);
        let name = if name == "evaluator" {
            "the models' evaluator"
        } else {
            name
        };
        out += &format!("| {name} |");
        for stat in stats {
            let xs: Vec<f64> = row.fidelity.iter().map(stat).collect();
            let (m, s) = mean_std(&xs);
            out += &format!(" {m:.3} ± {s:.3} |");
        }
        out.push('\n');
    }
    out
}

/// Cold start: each evaluator row's click log-loss and AUC on the test lists' displayed
/// items, warm and held out of training (mean ± std over seeds), then the paired
/// differences of the rows after the first to the first.
pub fn cold_start_table(rows: &[StudyRow]) -> String {
    let rows: Vec<&StudyRow> = rows.iter().filter(|r| !r.click_fit.is_empty()).collect();
    let Some(first) = rows.first() else {
        return String::new();
    };
    type Stat = fn(&[ClickFit; 2]) -> f64;
    let stats: [(&str, Stat); 5] = [
        ("warm items: AUC", |f| f[0].auc),
        ("cold items: AUC", |f| f[1].auc),
        ("warm items: log-loss", |f| f[0].logloss),
        ("cold items: log-loss", |f| f[1].logloss),
        ("cold items scored", |f| f[1].items as f64),
    ];
    let values = |r: &StudyRow, f: Stat| r.click_fit.iter().map(f).collect::<Vec<f64>>();
    let mut out = header("evaluator", stats.iter().map(|(n, _)| n.to_string()));
    for r in &rows {
        out += &format!("| {} |", r.name);
        for (_, f) in &stats {
            let (m, s) = mean_std(&values(r, *f));
            out += &format!(" {m:.4} ± {s:.4} |");
        }
        out += "\n";
    }
    for r in &rows[1..] {
        out += &format!("| {} − {} |", r.name, first.name);
        for (_, f) in &stats[..4] {
            out += &match paired_interval(&values(r, *f), &values(first, *f)) {
                Some((m, lo, hi)) => format!(" {m:+.4} [{lo:+.4}, {hi:+.4}] |"),
                None => " - |".to_owned(),
            };
        }
        out += " - |\n";
    }
    out
}

/// The paper's Table 3: each generator backbone without and with the EGLR module.
const TRANSFER_PAIRS: [(Variant, Variant); 5] = [
    (Variant::Backbone, Variant::Eglr),
    (Variant::EgRerank, Variant::EgRerankEglr),
    (Variant::Cmr, Variant::CmrEglr),
    (Variant::Last, Variant::LastEglr),
    (Variant::Lares, Variant::LaresEglr),
];

/// Table 3 rows: the pairs of [`TRANSFER_PAIRS`] present in the study, base then +EGLR.
pub fn transfer_table(rows: &[StudyRow]) -> String {
    let find = |v: Variant| rows.iter().find(|r| r.name == v.name());
    let pairs: Vec<StudyRow> = TRANSFER_PAIRS
        .iter()
        .filter_map(|&(base, with)| Some([find(base)?.clone(), find(with)?.clone()]))
        .flatten()
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        markdown_table(&pairs)
    }
}

/// NDCG@10 of EGLR on KuaiRand-1K by K (paper Table 4, via spec §8): orientation only.
const PAPER_NDCG10_BY_K: [(usize, f64); 3] = [(0, 0.7443), (1, 0.7526), (3, 0.7541)];

/// NDCG@10 and reasoning by K for `eglr`, next to the paper's numbers.
pub fn k_sweep_table(pipeline: &PipelineConfig, rows: &[StudyRow]) -> String {
    let k_of = |name: &str| -> Option<usize> {
        if name == "eglr" {
            Some(pipeline.generator.max_reasoning_steps)
        } else {
            name.strip_prefix("eglr K=")?.parse().ok()
        }
    };
    let mut ks: Vec<(usize, &StudyRow)> = rows
        .iter()
        .filter_map(|r| Some((k_of(&r.name)?, r)))
        .collect();
    ks.sort_by_key(|(k, _)| *k);
    let mut out = String::from(
        "| K | NDCG@10 (ours) | NDCG@10 (paper, KuaiRand-1K) | MAP@10 | Evaluator Score | reasoning steps/list | ms/list |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (k, row) in ks {
        let stat = |f: fn(&crate::offline::evaluate::OrderingReport) -> f64| {
            let xs: Vec<f64> = row.runs.iter().map(f).collect();
            let (m, s) = mean_std(&xs);
            format!("{m:.4} ± {s:.4}")
        };
        let paper = PAPER_NDCG10_BY_K
            .iter()
            .find(|(pk, _)| *pk == k)
            .map_or_else(|| "-".to_owned(), |(_, v)| format!("{v:.4}"));
        out += &format!(
            "| {k} | {} | {paper} | {} | {} | {} | {} |\n",
            stat(|r| r.metrics.ndcg10),
            stat(|r| r.metrics.map10),
            stat(|r| r.metrics.evaluator_score),
            stat(|r| r.metrics.reasoning_steps_per_list),
            stat(|r| r.ms_per_list),
        );
    }
    out
}

/// How each model is trained, for the doc's data paragraph.
pub fn recipes(variants: &[Variant]) -> String {
    let parts: Vec<String> = variants
        .iter()
        .map(|v| {
            let r = v.recipe();
            let how = match (r.supervised, r.rl) {
                (true, None) => "supervised on clicks".to_owned(),
                (true, Some(rl)) => format!("supervised, then {rl:?}"),
                (false, Some(rl)) => format!("{rl:?}"),
                (false, None) => "untrained".to_owned(),
            };
            format!("{}: {how}", v.name())
        })
        .collect();
    format!(
        "{} (see `src/model/config.rs` for each model's paper and simplifications)",
        parts.join("; ")
    )
}
