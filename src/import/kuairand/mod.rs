//! KuaiRand (Gao et al., CIKM 2022, <https://kuairand.com>, CC BY-SA 4.0) into the list
//! log.
//!
//! Recipe (the paper's, spec §7): each user's standard-log impressions sorted by
//! `time_ms` are cut into consecutive lists of `list_len`, the remainder dropped. The
//! logged order is the initial order; there is no upstream score. Label = `is_click`
//! (or `long_view`); utility = number of positive labels (or seconds played). The same
//! code reads Pure, 1K and 27K, which share their columns: the log is streamed into
//! per-user shard files, then one shard at a time is sorted in memory, so memory is
//! bounded by the largest shard plus the features of the videos the log shows.

mod features;
mod impressions;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::features::FeatureSpec;
use crate::list_log::{LogWriter, LoggedList, RollPolicy};
use crate::schema::{Candidate, UserFeatures};

use super::{files_like, one_file_like, ImportError};
use features::{read_entities, Entity};
use impressions::{read_shard, spill, Impression, Spilled};

/// Which log column is the click label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Label {
    /// `is_click`: the user clicked (opened) the video.
    Click,
    /// `long_view`: the user watched long enough to count as a long view.
    LongView,
}

impl Label {
    fn column(self) -> &'static str {
        match self {
            Label::Click => "is_click",
            Label::LongView => "long_view",
        }
    }
}

/// What the list utility `r` (spec §3) measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Utility {
    /// Number of positive labels in the list.
    LabelCount,
    /// Seconds played over the list (`play_time_ms` / 1000).
    PlaySeconds,
}

/// Where train ends and test begins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitAt {
    /// At the first-impression time of the list that leaves `test_share` of the lists
    /// (by first impression) for test.
    Auto { test_share: f64 },
    /// At the first impression of this date (`YYYYMMDD`, as in the `date` column).
    Date(i64),
    /// At this time (ms since the Unix epoch).
    TimeMs(i64),
}

impl std::str::FromStr for SplitAt {
    type Err = String;

    /// `auto`, a date `YYYY-MM-DD`, or a time in ms since the epoch.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(SplitAt::Auto { test_share: 0.2 });
        }
        if let [y, m, d] = s.split('-').collect::<Vec<_>>()[..] {
            let parse =
                |t: &str, len: usize| (t.len() == len).then(|| t.parse::<i64>().ok()).flatten();
            if let (Some(y), Some(m), Some(d)) = (parse(y, 4), parse(m, 2), parse(d, 2)) {
                return Ok(SplitAt::Date(y * 10_000 + m * 100 + d));
            }
        }
        s.parse::<i64>().map(SplitAt::TimeMs).map_err(|_| {
            format!("{s:?} is not `auto`, a date YYYY-MM-DD or a time in ms since the epoch")
        })
    }
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub list_len: usize,
    pub label: Label,
    pub utility: Utility,
    pub split_at: SplitAt,
    pub roll: RollPolicy,
    /// Log bytes per shard: bounds the memory of the sort.
    pub shard_bytes: u64,
}

/// What an import did; written to `OUT/import.json`. Deterministic: no wall-clock
/// times, no absolute paths.
#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    pub logs: Vec<String>,
    pub list_len: usize,
    pub label: Label,
    pub utility: Utility,
    pub impressions: u64,
    pub users: u64,
    pub videos: u64,
    pub lists: u64,
    pub train_lists: u64,
    pub test_lists: u64,
    /// Impressions left over after cutting each user's history into full lists.
    pub dropped_remainder: u64,
    /// Impressions of a video already shown earlier in the same list; they keep the
    /// video's features under the item id `VIDEO#k` (item ids of a list are distinct).
    pub repeated_in_list: u64,
    pub positive_labels: u64,
    pub split_at_ms: i64,
    pub split_rule: String,
    pub users_without_features: u64,
    pub videos_without_features: u64,
    /// Empty cells of declared feature columns, by `file:column`.
    pub nulls: BTreeMap<String, u64>,
    pub shards: u32,
}

/// Imports the KuaiRand `data/` folder `dir` into `out/train` and `out/test`.
pub fn import(
    dir: &Path,
    out: &Path,
    spec: &FeatureSpec,
    options: &ImportOptions,
) -> Result<ImportSummary, ImportError> {
    if options.list_len == 0 {
        return Err(ImportError::BadOption(
            "--list-len must be at least 1".into(),
        ));
    }
    let (train_dir, test_dir) = (out.join("train"), out.join("test"));
    for d in [&train_dir, &test_dir] {
        if has_parquet(d)? {
            return Err(ImportError::OutputExists(d.clone()));
        }
    }
    let inputs = Inputs::find(dir)?;
    let shard_count = shard_count(&inputs.logs, options.shard_bytes)?;
    let work = out.join(".import-shards");
    let spilled = spill(
        &inputs.logs,
        options.label,
        options.utility,
        &work,
        shard_count,
    )?;
    let starts = list_starts(&spilled.shards, options.list_len)?;
    let (split_at_ms, split_rule) = split_time(options.split_at, &spilled.dates, starts)?;
    let mut nulls = BTreeMap::new();
    let (users, videos) = inputs.features(spec, &spilled, &mut nulls)?;
    let mut summary = ImportSummary {
        logs: inputs
            .logs
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect(),
        list_len: options.list_len,
        label: options.label,
        utility: options.utility,
        impressions: spilled.impressions,
        users: spilled.users.len() as u64,
        videos: spilled.videos.len() as u64,
        lists: 0,
        train_lists: 0,
        test_lists: 0,
        dropped_remainder: 0,
        repeated_in_list: 0,
        positive_labels: 0,
        split_at_ms,
        split_rule,
        users_without_features: missing(&spilled.users, &users),
        videos_without_features: missing(&spilled.videos, &videos),
        nulls,
        shards: shard_count,
    };
    let features = Features {
        users: &users,
        videos: &videos,
    };
    let split = Split {
        train: LogWriter::create(&train_dir, "kuairand", options.roll.clone())?,
        test: LogWriter::create(&test_dir, "kuairand", options.roll.clone())?,
        at_ms: split_at_ms,
    };
    split.cut_lists(&spilled, &features, options.list_len, &mut summary)?;
    std::fs::remove_dir_all(&work).map_err(|e| ImportError::io(&work, e))?;
    finish(summary, out, options)
}

/// Users' or videos' features by id.
type Entities = HashMap<String, Entity>;

/// The release's files: the interaction logs, the user features, and the video
/// features (the 27K release splits them into parts; every part is read).
struct Inputs {
    logs: Vec<std::path::PathBuf>,
    user_file: std::path::PathBuf,
    video_files: Vec<std::path::PathBuf>,
}

impl Inputs {
    fn find(dir: &Path) -> Result<Self, ImportError> {
        Ok(Self {
            logs: files_like(dir, "log_standard_", ".csv")?,
            user_file: one_file_like(dir, "user_features", ".csv")?,
            video_files: [
                files_like(dir, "video_features_basic", ".csv")?,
                files_like(dir, "video_features_statistic", ".csv")?,
            ]
            .concat(),
        })
    }

    /// The features of the users and videos the log shows, with each field's nulls
    /// counted in `nulls`.
    fn features(
        &self,
        spec: &FeatureSpec,
        spilled: &Spilled,
        nulls: &mut BTreeMap<String, u64>,
    ) -> Result<(Entities, Entities), ImportError> {
        tracing::info!(file = %self.user_file.display(), "reading user features");
        let users = read_entities(
            "user",
            &spec.user,
            &[&self.user_file],
            "user_id",
            |id| spilled.users.contains(id),
            nulls,
        )?;
        tracing::info!(videos = spilled.videos.len(), "reading video features");
        let videos = read_entities(
            "item",
            &spec.item,
            &self
                .video_files
                .iter()
                .map(|p| p.as_path())
                .collect::<Vec<_>>(),
            "video_id",
            |id| spilled.videos.contains(id),
            nulls,
        )?;
        Ok((users, videos))
    }
}

/// How many shards the logs are spilled into: about `shard_bytes` of log each.
fn shard_count(logs: &[std::path::PathBuf], shard_bytes: u64) -> Result<u32, ImportError> {
    let log_bytes: u64 = logs
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| ImportError::io(p, e))
        })
        .sum::<Result<u64, _>>()?;
    let shards = u32::try_from(log_bytes.div_ceil(shard_bytes.max(1)).max(1))
        .map_err(|_| ImportError::BadOption("shard size too small for this log".into()))?;
    tracing::info!(
        files = logs.len(),
        bytes = log_bytes,
        shards,
        "streaming the log into shards"
    );
    Ok(shards)
}

/// How many of the ids the log shows have no features row.
fn missing(seen: &std::collections::HashSet<String>, known: &HashMap<String, Entity>) -> u64 {
    seen.iter().filter(|id| !known.contains_key(*id)).count() as u64
}

/// The two list logs, and the time that splits them.
struct Split {
    train: LogWriter,
    test: LogWriter,
    at_ms: i64,
}

impl Split {
    /// Each user's impressions, in time order, cut into lists of `list_len` (the
    /// remainder dropped), each written to the train or the test log by its time.
    fn cut_lists(
        mut self,
        spilled: &Spilled,
        features: &Features<'_>,
        list_len: usize,
        summary: &mut ImportSummary,
    ) -> Result<(), ImportError> {
        for (s, shard) in spilled.shards.iter().enumerate() {
            let (mut train_rows, mut test_rows) = (Vec::new(), Vec::new());
            for (user_id, imps) in read_shard(shard)? {
                let chunks = imps.chunks_exact(list_len);
                summary.dropped_remainder += chunks.remainder().len() as u64;
                for (k, chunk) in chunks.enumerate() {
                    let list = features.list(&user_id, k, chunk, summary);
                    if list.timestamp_ms < self.at_ms {
                        train_rows.push(list);
                    } else {
                        test_rows.push(list);
                    }
                }
            }
            summary.train_lists += train_rows.len() as u64;
            summary.test_lists += test_rows.len() as u64;
            self.train.write(&train_rows)?;
            self.test.write(&test_rows)?;
            tracing::info!(
                shard = s + 1,
                of = spilled.shards.len(),
                lists = summary.train_lists + summary.test_lists,
                "cut lists"
            );
        }
        self.train.finish()?;
        self.test.finish()?;
        Ok(())
    }
}

/// Checks that lists were cut, warns of ids without features, and writes
/// `import.json`.
fn finish(
    mut summary: ImportSummary,
    out: &Path,
    options: &ImportOptions,
) -> Result<ImportSummary, ImportError> {
    summary.lists = summary.train_lists + summary.test_lists;
    if summary.lists == 0 {
        return Err(ImportError::Empty(format!(
            "{} impressions of {} users, none with {} impressions",
            summary.impressions, summary.users, options.list_len
        )));
    }
    if summary.users_without_features + summary.videos_without_features > 0 {
        tracing::warn!(
            users = summary.users_without_features,
            videos = summary.videos_without_features,
            "users or videos without a row in their features file get the missing-value features (counted in import.json)"
        );
    }
    let json =
        serde_json::to_string_pretty(&summary).map_err(|e| ImportError::Encode(e.to_string()))?;
    let path = out.join("import.json");
    std::fs::write(&path, json + "\n").map_err(|e| ImportError::io(&path, e))?;
    Ok(summary)
}

fn has_parquet(dir: &Path) -> Result<bool, ImportError> {
    if !dir.is_dir() {
        return Ok(false);
    }
    for entry in std::fs::read_dir(dir).map_err(|e| ImportError::io(dir, e))? {
        let entry = entry.map_err(|e| ImportError::io(dir, e))?;
        if entry.path().extension().is_some_and(|e| e == "parquet") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// First-impression time of every list, sorted (a first pass over the shards).
fn list_starts(shards: &[std::path::PathBuf], list_len: usize) -> Result<Vec<i64>, ImportError> {
    let mut starts = Vec::new();
    for shard in shards {
        for imps in read_shard(shard)?.values() {
            starts.extend(imps.chunks_exact(list_len).map(|c| c[0].time_ms));
        }
    }
    starts.sort_unstable();
    Ok(starts)
}

/// The split time and a sentence saying how it was chosen.
fn split_time(
    split: SplitAt,
    dates: &BTreeMap<i64, impressions::DateStats>,
    starts: Vec<i64>,
) -> Result<(i64, String), ImportError> {
    match split {
        SplitAt::TimeMs(t) => Ok((t, format!("--split-at {t} (ms)"))),
        SplitAt::Date(day) => {
            let (d, stats) = dates.range(day..).next().ok_or_else(|| {
                ImportError::BadOption(format!(
                    "the log has no `date` on or after {day} (or no `date` column)"
                ))
            })?;
            Ok((stats.first_ms, format!("first impression of date {d}")))
        }
        SplitAt::Auto { test_share } => {
            // Train keeps at least one list; lists starting at the same ms stay together.
            let test = ((starts.len() as f64) * test_share).round() as usize;
            let at = starts.len().saturating_sub(test).max(1);
            let t = starts.get(at).copied().unwrap_or(i64::MAX);
            Ok((
                t,
                format!("auto: the first impression of the list that leaves {test_share} of the lists for test"),
            ))
        }
    }
}

/// Feature lookups for building lists.
struct Features<'a> {
    users: &'a HashMap<String, Entity>,
    videos: &'a HashMap<String, Entity>,
}

impl Features<'_> {
    /// The `k`-th list of a user: a pool in logged order that is also the served list.
    fn list(
        &self,
        user_id: &str,
        k: usize,
        imps: &[Impression],
        summary: &mut ImportSummary,
    ) -> LoggedList {
        let user = self.users.get(user_id).cloned().unwrap_or_default();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let candidates: Vec<Candidate> = imps
            .iter()
            .map(|imp| {
                let times = seen.entry(imp.video_id.as_str()).or_default();
                *times += 1;
                let item_id = if *times == 1 {
                    imp.video_id.clone()
                } else {
                    summary.repeated_in_list += 1;
                    format!("{}#{}", imp.video_id, times)
                };
                let video = self.videos.get(&imp.video_id).cloned().unwrap_or_default();
                Candidate {
                    item_id: item_id.into(),
                    sparse: video.sparse,
                    dense: video.dense,
                    upstream_score: None,
                }
            })
            .collect();
        let clicks: Vec<bool> = imps.iter().map(|i| i.label).collect();
        summary.positive_labels += clicks.iter().filter(|&&c| c).count() as u64;
        LoggedList {
            request_id: format!("kuairand-{user_id}-{k}"),
            timestamp_ms: imps.first().map_or(0, |i| i.time_ms),
            user: UserFeatures {
                id: user_id.into(),
                sparse: user.sparse,
                dense: user.dense,
            },
            served_items: candidates.iter().map(|c| c.item_id.0.clone()).collect(),
            candidates,
            clicks,
            utility: imps.iter().map(|i| i.utility).sum(),
            model_version: "kuairand-log".into(),
            exploration: imps.iter().all(|i| i.is_rand),
            // KuaiRand's random exposures were drawn by a policy it does not publish.
            logging_policy: None,
            propensities: Vec::new(),
        }
    }
}
