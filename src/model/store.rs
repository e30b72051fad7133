//! The model store (a directory of versioned bundles) and the hot-swappable model that
//! serving reads between batches.
//!
//! Versions are the names of complete bundle directories (holding `bundle.json`), in
//! lexical order: `v000001`, `v000002`, ... Hidden directories (bundles being written)
//! are ignored. A version that fails to load is rejected once, logged, and never tried
//! again; the model that was serving keeps serving.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use candle_core::Device;

use super::{Bundle, BundleError};

/// Why the store has no model to serve. Both are the operator's to fix (train or repair
/// a version); retrying without a change does not help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no model in the store {0} (train one with `eglr train --out STORE/v000001`)")]
    Empty(PathBuf),
    #[error("model {version} is not usable: {source}")]
    BadModel {
        version: String,
        source: BundleError,
    },
}

/// An empty store or a broken version is the operator's to fix (train, or repair).
impl crate::fault::HasFault for StoreError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            StoreError::Empty(_) => Fault::Input,
            StoreError::BadModel { source, .. } => source.fault(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Complete versions, oldest first.
    pub fn versions(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("bundle.json").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    pub fn latest(&self) -> Option<String> {
        self.versions().pop()
    }

    pub fn path(&self, version: &str) -> PathBuf {
        self.dir.join(version)
    }

    /// The name after the newest version: `v` + 6 digits.
    pub fn next_version(&self) -> String {
        let n = self
            .versions()
            .iter()
            .filter_map(|v| v.strip_prefix('v')?.parse::<u64>().ok())
            .max()
            .map_or(1, |n| n + 1);
        format!("v{n:06}")
    }
}

/// The model serving now, swapped atomically when a newer valid version appears.
#[derive(Debug)]
pub struct LiveModel {
    store: ModelStore,
    device: Device,
    current: RwLock<Arc<Bundle>>,
    rejected: Mutex<HashSet<String>>,
}

impl LiveModel {
    /// Loads the newest version of the store.
    pub fn open(store: ModelStore, device: Device) -> Result<Self, StoreError> {
        let version = store
            .latest()
            .ok_or_else(|| StoreError::Empty(store.dir().to_owned()))?;
        let bundle = Bundle::load(&store.path(&version), &device).map_err(|source| {
            StoreError::BadModel {
                version: version.clone(),
                source,
            }
        })?;
        Ok(Self {
            store,
            device,
            current: RwLock::new(Arc::new(with_version(bundle, &version))),
            rejected: Mutex::new(HashSet::new()),
        })
    }

    /// The model to use for the next batch.
    pub fn current(&self) -> Arc<Bundle> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Loads the newest version if it is new and not rejected; returns the version
    /// swapped in.
    pub fn refresh(&self) -> Option<String> {
        let latest = self.store.latest()?;
        if latest <= self.current().meta.version
            || self
                .rejected
                .lock()
                .map(|r| r.contains(&latest))
                .unwrap_or(true)
        {
            return None;
        }
        match Bundle::load(&self.store.path(&latest), &self.device) {
            Ok(bundle) => {
                let bundle = Arc::new(with_version(bundle, &latest));
                if let Ok(mut g) = self.current.write() {
                    *g = bundle;
                }
                tracing::info!(version = %latest, "model swapped in");
                Some(latest)
            }
            Err(e) => {
                tracing::warn!(version = %latest, error = %e, "rejected a bad model bundle; the serving model stays");
                if let Ok(mut r) = self.rejected.lock() {
                    r.insert(latest);
                }
                None
            }
        }
    }
}

/// Results carry the store's version name (the directory), whatever the bundle says.
fn with_version(mut bundle: Bundle, version: &str) -> Bundle {
    bundle.meta.version = version.to_owned();
    bundle
}
