//! The study's report: the markdown document (tables, protocol, data) and its plots,
//! written beside a `## Findings` section kept from the previous version.

use std::path::Path;

use super::data::StudyData;
use super::tables::{
    cold_start_table, fidelity_table, headroom_table, k_sweep_table, markdown_table, mean_curve,
    mean_positions, paired_table, positions_table, recipe_base, recipes, transfer_table,
};
use super::{StudyError, StudyRow};
use crate::config::PipelineConfig;
use crate::model::Variant;
use crate::plot::{line_chart, Series};
use crate::sim::Headroom;

/// Which comparison a study runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// The EGLR variants of spec §4.
    Ablation,
    /// EGLR, the paper's baselines (Table 2) and the EGLR module on three backbones
    /// (Table 3).
    Paper,
}

impl Suite {
    pub fn variants(self) -> Vec<Variant> {
        match self {
            Suite::Ablation => Variant::ABLATION.to_vec(),
            Suite::Paper => Variant::PAPER.to_vec(),
        }
    }
}

/// What the report says besides the rows.
#[derive(Debug)]
pub struct Report<'a> {
    pub pipeline: &'a PipelineConfig,
    pub suite: Suite,
    pub variants: &'a [Variant],
    /// Whether the study swept the reasoning cap K.
    pub k_sweep: bool,
    /// The command that regenerates the document.
    pub command: String,
    pub data: &'a StudyData,
    pub headroom: Option<Headroom>,
    pub seeds: &'a [u64],
    pub minutes: f64,
    /// The markdown file; plots go beside it.
    pub doc: &'a Path,
}

impl Report<'_> {
    /// Writes the document and its plots.
    pub fn write(&self, rows: &[StudyRow]) -> Result<(), StudyError> {
        let mut doc = self.head(rows);
        if let Some(h) = &self.headroom {
            doc += &format!(
                "\n## Headroom\n\nWhat re-ranking the test pools can gain, by the oracle: the true point-wise sort, a \
                 list-wise search with the true click model, and the same search knowing only what a model observes \
                 (upstream score, category, kind; `src/sim/click_model.rs`).\n\n{}",
                headroom_table(h)
            );
        }
        let fidelity = fidelity_table(rows);
        if !fidelity.is_empty() {
            doc += &format!(
                "\n## Evaluator fidelity (validation pools)\n\nEach seed's evaluator against the oracle on {} validation \
                 pools: Kendall tau over {} orderings of each pool, the share of list pairs it orders as the oracle does, and \
                 the adjacency probe (a complementary pair adjacent vs one place apart). Then the redundancy probe (four \
                 lists that differ in their first two places, whose difference in differences leaves what an item of the \
                 same category above does to an item's clicks) and the point-wise probe (the evaluator's score of each item \
                 alone against its true relevance, beside the initial order's, and its point-wise sort scored with the list \
                 effects off). Mean ± std over seeds.\n\n{fidelity}",
                crate::offline::fidelity::POOLS,
                crate::offline::fidelity::ORDERINGS
            );
        }
        let cold = cold_start_table(rows);
        if !cold.is_empty() {
            doc += &format!(
                "\n## Cold start: click prediction on items never seen in training (test lists)\n\n`training.cold_item_share` \
                 of the items (by a hash of item_id) never reached training, the judge's included. Each seed's evaluator \
                 scores the test lists as displayed; its click AUC and log-loss are split by whether the displayed item \
                 was held out. Mean ± std over seeds, then paired differences (95 % intervals).\n\n{cold}"
            );
        }
        let transfer = transfer_table(rows);
        if !transfer.is_empty() {
            doc += &format!(
                "\n## The EGLR module on other backbones (paper Table 3)\n\nEach backbone without (`X`) and with \
                 (`X+eglr`: entropy gate, context-aware token, dynamic temperature) the EGLR module, same training \
                 otherwise (`backbone`/`eglr`, when the study has both, is our Transformer generator).\n\n{transfer}"
            );
        }
        if self.k_sweep {
            doc += &format!(
                "\n## Reasoning cap K (paper Table 4)\n\n{}",
                k_sweep_table(self.pipeline, rows)
            );
        }
        if let Some(section) = curve_section(rows, self.doc)? {
            doc += &section;
        }
        if let Some(section) = recipe_section(rows, self.doc)? {
            doc += &section;
        }
        if let Some(section) = entropy_section(rows, self.doc)? {
            doc += &section;
        }
        write_doc(self.doc, &doc)
    }

    /// Title, command, protocol, data, the results table and the paired differences.
    fn head(&self, rows: &[StudyRow]) -> String {
        let p = self.pipeline;
        let real = self.data.world.is_none();
        let splits = if real {
            "Splits: the train lists (a hashed validation share of them selects epochs and RL checkpoints) and the test \
             lists, read only by these tables; real logs have no oracle, so the headlines are the judge and NDCG@10 against \
             the logged clicks."
        } else {
            "Three splits of the world: the train lists, validation lists (another traffic seed: the evaluators' fidelity \
             below is measured on their pools and settings are chosen on them) and the test lists, read only by these \
             tables."
        };
        let protocol = if p.training.judge_share > 0.0 {
            format!(
                "**Protocol.** {splits} Each seed trains one evaluator (with the first variant) that every model of that \
                 seed is trained against, on the train lists outside the judge part; a **judge** evaluator is trained on the \
                 judge part ({share:.0} % of the train lists by a hash of request_id, never seen by the models) with its own \
                 seed (seed + 1000). Headlines use the oracle and the judge, never a model's own evaluator. Differences are \
                 paired by seed, with 95 % t intervals.\n\n",
                share = 100.0 * p.training.judge_share
            )
        } else {
            String::new()
        };
        let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
        format!(
            "# {suite} on {title}\n\n\
             {GENERATED_BY}all but the hand-written `## Protocol check` and `## Findings`, kept from the previous version):\n\n```sh\n{command}\n```\n\n{protocol}\
             Data: {source}. Models are trained by their recipe{recipes}; model selection uses a validation split of the \
             train lists. Metrics on the test lists, mean ± std over seeds {seed_list}. This run took {minutes:.1} minutes \
             on this machine.\n\n{table}\n## Paired differences\n\n{paired}",
            title = if real {
                format!("`{}` logs", p.name)
            } else {
                "simulated data".to_owned()
            },
            suite = match self.suite {
                Suite::Ablation => "EGLR variants",
                Suite::Paper => "The paper's baselines (Tables 2 and 3)",
            },
            command = self.command,
            source = self.data.source,
            recipes = match self.suite {
                Suite::Ablation => " (GRPO)".to_owned(),
                Suite::Paper => format!(" — {}", recipes(self.variants)),
            },
            seed_list = seeds.join(", "),
            minutes = self.minutes,
            table = markdown_table(rows),
            paired = paired_table(rows, "initial order"),
        )
    }
}

/// The over-optimisation curve of `eglr`: its greedy lists on validation pools at each
/// RL checkpoint, by its own evaluator, the judge and the oracle (mean over seeds), as a
/// table and an SVG beside the doc.
fn curve_section(rows: &[StudyRow], doc_path: &Path) -> Result<Option<String>, StudyError> {
    let Some(row) = rows
        .iter()
        .find(|r| r.name == "eglr" && !r.curves.is_empty())
    else {
        return Ok(None);
    };
    let curve = mean_curve(row);
    let mut table =
        String::from("| RL step | own evaluator | judge | oracle |\n|---:|---:|---:|---:|\n");
    for p in &curve {
        table += &format!(
            "| {} | {:.4} | {:.4} | {} |\n",
            p.step,
            p.own,
            p.judge,
            p.oracle.map_or("-".into(), |o| format!("{o:.4}"))
        );
    }
    let best: Vec<String> = row
        .curves
        .iter()
        .filter_map(|c| c.iter().max_by(|a, b| a.judge.total_cmp(&b.judge)))
        .map(|p| p.step.to_string())
        .collect();
    let relative = |f: fn(&crate::train::CurvePoint) -> Option<f64>| -> Vec<(f64, f64)> {
        let base = curve.first().and_then(f).unwrap_or(1.0);
        curve
            .iter()
            .filter_map(|p| Some((p.step as f64, 100.0 * (f(p)? / base - 1.0))))
            .collect()
    };
    let series = vec![
        Series {
            label: "own evaluator".into(),
            points: relative(|p| Some(p.own)),
            dashed: true,
        },
        Series {
            label: "judge".into(),
            points: relative(|p| Some(p.judge)),
            dashed: false,
        },
        Series {
            label: "oracle".into(),
            points: relative(|p| p.oracle),
            dashed: false,
        },
    ];
    let plot = doc_path.with_extension("rl-curve.svg");
    write_doc(
        &plot,
        &line_chart(
            "eglr during RL: greedy lists on validation pools",
            "RL step",
            "% vs step 0",
            &series,
        ),
    )?;
    Ok(Some(format!(
        "\n## Over-optimisation curve (validation pools)\n\n`eglr`'s greedy lists on 500 validation pools at every \
         RL checkpoint (step 0: the policy RL starts from), scored by the evaluator it is trained against, by the judge \
         and by the oracle; mean over seeds. Training keeps the checkpoint the judge scores highest (early stopping by \
         the judge; chosen steps by seed: {}). A rising own score over a flat or falling oracle is reward hacking.\n\n\
         ![RL curve]({})\n\n{table}",
        best.join(", "),
        plot.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
    )))
}

/// The variants under each RL recipe of the study (`--rl-sweep`, GR2's question): at
/// each RL checkpoint on validation pools, the share of greedy lists that copy the
/// upstream order and the judge's score, per row (mean over seeds), as a table and an
/// SVG of the copy share.
fn recipe_section(rows: &[StudyRow], doc_path: &Path) -> Result<Option<String>, StudyError> {
    // The rows of another RL recipe and the variants they are compared with.
    let bases: Vec<&str> = rows.iter().filter_map(|r| recipe_base(&r.name)).collect();
    let recipes: Vec<&StudyRow> = rows
        .iter()
        .filter(|r| recipe_base(&r.name).is_some() || bases.contains(&r.name.as_str()))
        .filter(|r| !r.curves.is_empty())
        .collect();
    if recipes.len() < 2 {
        return Ok(None);
    }
    let curves: Vec<Vec<crate::train::CurvePoint>> =
        recipes.iter().map(|r| mean_curve(r)).collect();
    let mut table = String::from("| RL step |");
    for r in &recipes {
        table += &format!(" {0} copy share | {0} judge |", r.name);
    }
    table += &format!(
        "
|---:|{}
",
        "---:|---:|".repeat(recipes.len())
    );
    let steps: Vec<usize> = curves[0].iter().map(|p| p.step).collect();
    for step in steps {
        table += &format!("| {step} |");
        for c in &curves {
            table += &match c.iter().find(|p| p.step == step) {
                Some(p) => format!(
                    " {} | {:.4} |",
                    p.copy_share.map_or("-".into(), |x| format!("{x:.3}")),
                    p.judge
                ),
                None => " - | - |".to_owned(),
            };
        }
        table += "
";
    }
    let series: Vec<Series> = recipes
        .iter()
        .zip(&curves)
        .map(|(r, c)| Series {
            label: r.name.clone(),
            points: c
                .iter()
                .filter_map(|p| Some((p.step as f64, p.copy_share?)))
                .collect(),
            dashed: false,
        })
        .collect();
    let plot = doc_path.with_extension("copy-share.svg");
    write_doc(
        &plot,
        &line_chart(
            "Greedy lists that copy the upstream order, during RL (validation pools)",
            "RL step",
            "copy share",
            &series,
        ),
    )?;
    Ok(Some(format!(
        "\n## RL recipes: copying the upstream order (validation pools)\n\nEach variant trained by its own RL \
         recipe and by the study's others: GRPO, LatentR3's modified GRPO (`latent-grpo`), DAPO (decoupled clip, token-level loss, dynamic sampling) and GR2's conditional reward (`@B`: the \
         gain over the upstream order, plus B only for a list that differs from it and beats it). At each RL \
         checkpoint, the share of the generator's greedy lists on validation pools that are the upstream order (before \
         generator-evaluator selection, which serves the upstream order where the evaluator does not prefer the model's \
         list: the results table's copy share counts those too) and the judge's expected clicks; mean over seeds. A \
         policy that wins by keeping the order shows a copy share near 1.\n\n![copy share]({})\n\n{table}",
        plot.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
    )))
}

/// The entropy-by-position plot and table of `backbone` and `eglr`, when the study has them.
fn entropy_section(rows: &[StudyRow], doc_path: &Path) -> Result<Option<String>, StudyError> {
    let traced: Vec<&StudyRow> = rows
        .iter()
        .filter(|r| r.name == "backbone" || r.name == "eglr")
        .collect();
    if traced.is_empty() {
        return Ok(None);
    }
    let plot = doc_path.with_extension("entropy.svg");
    write_doc(&plot, &entropy_plot(&traced))?;
    Ok(Some(format!(
        "\n## Entropy by list position\n\nMean entropy (nats) of the selection distribution at each position of the \
         greedy test lists, before and after the reasoning tokens of that position (equal without reasoning), and the \
         mean reasoning tokens inserted there (the paper's Figures 1, 2 and 5).\n\n![entropy by position]({})\n\n{}",
        plot.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        positions_table(&traced)
    )))
}

/// Entropy before/after reasoning by position, one pair of lines per traced row.
fn entropy_plot(rows: &[&StudyRow]) -> String {
    let mut series = Vec::new();
    for row in rows {
        let positions = mean_positions(row);
        let line =
            |label: String, dashed, f: fn(&crate::offline::evaluate::PositionStats) -> f64| {
                Series {
                    label,
                    points: positions
                        .iter()
                        .map(|p| (p.position as f64, f(p)))
                        .collect(),
                    dashed,
                }
            };
        if row
            .positions
            .iter()
            .flatten()
            .any(|p| p.reasoning_steps > 0.0)
        {
            series.push(line(format!("{} before reasoning", row.name), false, |p| {
                p.entropy_before
            }));
            series.push(line(format!("{} after reasoning", row.name), true, |p| {
                p.entropy_after
            }));
        } else {
            series.push(line(row.name.clone(), false, |p| p.entropy_before));
        }
    }
    line_chart(
        "Selection entropy by list position",
        "position",
        "entropy (nats)",
        &series,
    )
}

/// How a generated doc's body starts after its title: a hand-written protocol check
/// above it ends there.
const GENERATED_BY: &str = "Generated by (";

/// Writes `generated` to `path`, creating its directory. Two hand-written sections
/// already in the file survive a regeneration of the numbers: `## Protocol check`
/// (how the figures were obtained, against the research protocol), kept right after
/// the title, and `## Findings` (their interpretation), kept at the end.
pub fn write_doc(path: &Path, generated: &str) -> Result<(), StudyError> {
    let io = |source| StudyError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // A doc that exists but cannot be read is refused: writing over it would drop its
    // hand-written sections.
    let old = match std::fs::read_to_string(path) {
        Ok(old) => old,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    let findings = old.find("\n## Findings").map_or("", |i| &old[i..]);
    let protocol = old.find("\n## Protocol check").map_or("", |i| {
        let section = &old[i + 1..];
        // The section ends where the generated body or the next section starts.
        let end = [format!("\n{GENERATED_BY}"), "\n## ".to_owned()]
            .iter()
            .filter_map(|next| section[1..].find(next.as_str()))
            .min()
            .map_or(section.len(), |j| j + 1);
        &section[..end]
    });
    let generated = generated.trim_end();
    let mut text = match (protocol.is_empty(), generated.split_once('\n')) {
        (false, Some((title, rest))) => {
            format!("{title}\n\n{}\n{rest}", protocol.trim_end())
        }
        _ => generated.to_owned(),
    };
    if !findings.is_empty() {
        text = format!("{text}\n{}", findings.trim_end());
    }
    std::fs::write(path, format!("{text}\n")).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::write_doc;

    /// A regeneration replaces the numbers and keeps both hand-written sections where
    /// they stood.
    #[test]
    fn a_regeneration_keeps_the_protocol_check_and_the_findings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("doc.md");
        write_doc(&path, "# Title\n\nGenerated by (old numbers\n").expect("first");
        let first = std::fs::read_to_string(&path).expect("read");
        let hand = first.replacen(
            "# Title\n",
            "# Title\n\n## Protocol check\n\nthe test split was read once\n",
            1,
        ) + "\n## Findings\n\nwhat it means\n";
        std::fs::write(&path, hand).expect("edit");
        write_doc(
            &path,
            "# Title\n\nGenerated by (new numbers\n## Table\n\nrows\n",
        )
        .expect("again");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "# Title\n\n## Protocol check\n\nthe test split was read once\n\nGenerated by (new numbers\n## Table\n\nrows\n\n## Findings\n\nwhat it means\n"
        );
    }

    /// A doc that is there but cannot be read (here: not valid UTF-8) is refused, not
    /// written over with its hand-written sections lost.
    #[test]
    fn an_unreadable_doc_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("doc.md");
        let old = b"# Title\n\n## Findings\n\n\xff hand-written\n".to_vec();
        std::fs::write(&path, &old).expect("write");
        let refused = write_doc(&path, "# Title\n\nGenerated by (numbers\n");
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(std::fs::read(&path).expect("read"), old);
    }
}
