//! The impression log, streamed once and spilled into shard files by user, so that one
//! shard at a time can be sorted in memory however large the log is.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::features::hash_bucket;
use crate::import::{CsvTable, ImportError};

use super::{Label, Utility};

/// One impression, as kept in a shard file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Impression {
    pub user_id: String,
    pub time_ms: i64,
    /// Position in the log files: breaks ties of `time_ms` in file order.
    pub seq: u64,
    pub video_id: String,
    pub label: bool,
    /// Contribution to the list utility.
    pub utility: f64,
    pub is_rand: bool,
}

/// Impressions and the earliest time of one `date` of the log.
#[derive(Debug, Clone, Copy)]
pub struct DateStats {
    pub impressions: u64,
    pub first_ms: i64,
}

/// What streaming the log found out.
#[derive(Debug)]
pub struct Spilled {
    pub shards: Vec<PathBuf>,
    pub impressions: u64,
    pub videos: HashSet<String>,
    pub users: HashSet<String>,
    /// Keyed by KuaiRand's `date` column (YYYYMMDD); empty when the log has none.
    pub dates: BTreeMap<i64, DateStats>,
}

/// Streams the log files into `shard_count` CSV shard files under `dir`, by a hash of
/// the user id.
pub fn spill(
    logs: &[PathBuf],
    label: Label,
    utility: Utility,
    dir: &Path,
    shard_count: u32,
) -> Result<Spilled, ImportError> {
    std::fs::create_dir_all(dir).map_err(|e| ImportError::io(dir, e))?;
    let shards: Vec<PathBuf> = (0..shard_count)
        .map(|s| dir.join(format!("shard-{s:04}.csv")))
        .collect();
    let mut writers = shards
        .iter()
        .map(|p| {
            File::create(p)
                .map(|f| csv::Writer::from_writer(BufWriter::new(f)))
                .map_err(|e| ImportError::io(p, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Spilled {
        shards: shards.clone(),
        impressions: 0,
        videos: HashSet::new(),
        users: HashSet::new(),
        dates: BTreeMap::new(),
    };
    for path in logs {
        let mut table = CsvTable::open(path)?;
        let user = table.column("user_id")?;
        let video = table.column("video_id")?;
        let time = table.column("time_ms")?;
        let label_column = table.column(label.column())?;
        let play = match utility {
            Utility::PlaySeconds => Some(table.column("play_time_ms")?),
            Utility::LabelCount => None,
        };
        let date = table.find_column("date");
        let is_rand = table.find_column("is_rand");
        while table.next_record()? {
            let imp = Impression {
                user_id: table.required(user)?.to_owned(),
                time_ms: table.integer(time)?,
                seq: out.impressions,
                video_id: table.required(video)?.to_owned(),
                label: table.flag(label_column)?,
                utility: 0.0,
                is_rand: is_rand.map(|c| table.flag(c)).transpose()?.unwrap_or(false),
            };
            let utility = match play {
                Some(c) => table.number(c)?.unwrap_or(0.0) / 1000.0,
                None => f64::from(u8::from(imp.label)),
            };
            if let Some(c) = date {
                let day = table.integer(c)?;
                let stats = out.dates.entry(day).or_insert(DateStats {
                    impressions: 0,
                    first_ms: imp.time_ms,
                });
                stats.impressions += 1;
                stats.first_ms = stats.first_ms.min(imp.time_ms);
            }
            let shard = hash_bucket("shard", &imp.user_id, shard_count) - 1;
            writers[shard as usize]
                .serialize(Impression {
                    utility,
                    ..imp.clone()
                })
                .map_err(|e| ImportError::Csv {
                    path: shards[shard as usize].clone(),
                    line: 0,
                    message: e.to_string(),
                })?;
            out.videos.insert(imp.video_id);
            out.users.insert(imp.user_id);
            out.impressions += 1;
            if out.impressions.is_multiple_of(1_000_000) {
                tracing::info!(impressions = out.impressions, file = %path.display(), "reading the log");
            }
        }
    }
    for (writer, path) in writers.into_iter().zip(&shards) {
        writer
            .into_inner()
            .map_err(|e| ImportError::io(path, e.into_error()))?
            .into_inner()
            .map_err(|e| ImportError::io(path, e.into_error()))?;
    }
    Ok(out)
}

/// One shard's impressions grouped by user (users in id order), each user's sorted by
/// time then log position.
pub fn read_shard(path: &Path) -> Result<BTreeMap<String, Vec<Impression>>, ImportError> {
    let file = File::open(path).map_err(|e| ImportError::io(path, e))?;
    let mut reader = csv::Reader::from_reader(BufReader::new(file));
    let mut users: BTreeMap<String, Vec<Impression>> = BTreeMap::new();
    for row in reader.deserialize::<Impression>() {
        let imp = row.map_err(|e| ImportError::Csv {
            path: path.to_owned(),
            line: e.position().map_or(0, |p| p.line()),
            message: e.to_string(),
        })?;
        users.entry(imp.user_id.clone()).or_default().push(imp);
    }
    for imps in users.values_mut() {
        imps.sort_by_key(|i| (i.time_ms, i.seq));
    }
    Ok(users)
}
