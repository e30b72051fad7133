//! The study's data: simulated train, validation and test logs of one world (written
//! once, then reused), or logs `eglr import` wrote.

use std::path::{Path, PathBuf};

use super::StudyError;
use crate::config::PipelineConfig;
use crate::list_log::LogWriter;
use crate::sim::{headroom, write_logs, Headroom, Traffic, World};

/// Traffic seed offsets from the world seed: validation and test traffic are other
/// draws of the same world's users.
pub const VALIDATION_TRAFFIC_OFFSET: u64 = 500;
pub const TEST_TRAFFIC_OFFSET: u64 = 1000;

/// How much simulated data, and where.
#[derive(Debug, Clone)]
pub struct SimulatedData {
    pub dir: PathBuf,
    pub world_seed: u64,
    pub lists: u64,
    pub validation_lists: u64,
    pub test_lists: u64,
}

/// The splits a study reads, and a sentence for the report that says what they are.
#[derive(Debug, Clone)]
pub struct StudyData {
    pub train: PathBuf,
    /// Simulated data only: its pools measure the evaluators' fidelity.
    pub validation: Option<PathBuf>,
    pub test: PathBuf,
    /// The simulated world (the oracle), if any.
    pub world: Option<PathBuf>,
    /// The world seed of simulated data.
    pub world_seed: Option<u64>,
    pub source: String,
}

impl StudyData {
    /// `DIR/train` and `DIR/test` as `eglr import` writes them.
    pub fn imported(dir: &Path) -> Self {
        Self {
            train: dir.join("train"),
            validation: None,
            test: dir.join("test"),
            world: None,
            world_seed: None,
            source: format!(
                "the imported logs `{0}/train` (train) and `{0}/test` (test){1}. MAP/NDCG are computed against the \
                 logged clicks of the same items; the initial order is the logged order",
                dir.display(),
                import_summary(dir)
            ),
        }
    }

    /// Simulates (or reuses) the world and the train/validation/test logs.
    pub fn simulated(pipeline: &PipelineConfig, s: &SimulatedData) -> Result<Self, StudyError> {
        let world_path = s.dir.join("world.json");
        let world = if world_path.exists() {
            World::load(&world_path)?
        } else {
            let w = World::generate(&pipeline.simulator, pipeline.limits.list_len, s.world_seed);
            w.save(&world_path)?;
            w
        };
        let split = |name: &str, offset: u64, lists: u64| -> Result<PathBuf, StudyError> {
            let dir = s.dir.join(name);
            simulate(&world, s.world_seed + offset, lists, &dir, pipeline)?;
            Ok(dir)
        };
        let train = split("train", 0, s.lists)?;
        let validation = split("validation", VALIDATION_TRAFFIC_OFFSET, s.validation_lists)?;
        let test = split("test", TEST_TRAFFIC_OFFSET, s.test_lists)?;
        let source = format!(
            "train: {lists} logged lists of world seed {ws} (`{dir}/train`); test: {test} held-out lists of the same world \
             with traffic seed {ts} (`{dir}/test`). MAP/NDCG are computed against the logged clicks; the oracle is the exact \
             expected clicks per list under the simulator's true click model. The initial order is the upstream ranker's order",
            lists = s.lists,
            ws = s.world_seed,
            ts = s.world_seed + TEST_TRAFFIC_OFFSET,
            dir = s.dir.display(),
            test = s.test_lists,
        );
        Ok(Self {
            train,
            validation: Some(validation),
            test,
            world: Some(world_path),
            world_seed: Some(s.world_seed),
            source,
        })
    }

    /// What re-ranking the first `pools` test pools can gain (simulated data only).
    pub fn headroom(&self, pools: u64) -> Result<Option<Headroom>, StudyError> {
        let (Some(path), Some(seed)) = (&self.world, self.world_seed) else {
            return Ok(None);
        };
        let world = World::load(path)?;
        let traffic = Traffic::new(&world, seed + TEST_TRAFFIC_OFFSET);
        Ok(Some(headroom(&traffic, pools)))
    }
}

/// Writes `lists` lists of `world` with traffic `seed` to `dir`, unless it already
/// holds data (a study's data is reused).
fn simulate(
    world: &World,
    seed: u64,
    lists: u64,
    dir: &Path,
    pipeline: &PipelineConfig,
) -> Result<(), StudyError> {
    let has_data = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if has_data {
        tracing::info!(dir = %dir.display(), "reusing simulated logs");
        return Ok(());
    }
    let policy = pipeline.logs.roll_policy();
    let mut writer = LogWriter::create(dir, "lists", policy)?;
    write_logs(&Traffic::new(world, seed), lists, 4096, &mut writer, |_| {})?;
    writer.finish()?;
    Ok(())
}

/// "; N train and M test lists ..." from `DIR/import.json` when the importer wrote
/// one. A file that exists but cannot be read says so in the report and the log.
fn import_summary(data: &Path) -> String {
    let path = data.join("import.json");
    if !path.exists() {
        return String::new();
    }
    let json = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string())
        });
    match json {
        Ok(json) => format!(
            "; {} train and {} test lists of {} impressions (split: {})",
            json["train_lists"],
            json["test_lists"],
            json["list_len"],
            json["split_rule"].as_str().unwrap_or("?")
        ),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the import summary");
            format!(
                " (the import summary {} cannot be read: {e})",
                path.display()
            )
        }
    }
}
