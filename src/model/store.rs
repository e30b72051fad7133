//! The model store (a directory of versioned bundles) and the hot-swappable model that
//! serving reads between batches.
//!
//! Versions are the names of complete bundle directories (holding `bundle.json`),
//! ordered by their number (`v9` before `v10`), then by name. Hidden directories
//! (bundles being written) are ignored. The serving version is the newest one, unless
//! the operator pins one: a file `STORE/current` holding a version name (write it to
//! pin or roll back, delete it to follow the newest again; no directory is touched).
//! A version that fails to load or to pass its checks is rejected once, logged, and
//! never tried again; the model that was serving keeps serving, and at start the newest
//! version that loads serves.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

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
    #[error("{path} pins version {version:?}, which the store does not hold")]
    BadPin { path: PathBuf, version: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An empty store or a broken version is the operator's to fix (train, or repair).
impl crate::fault::HasFault for StoreError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            StoreError::Empty(_) | StoreError::BadPin { .. } => Fault::Input,
            StoreError::BadModel { source, .. } => source.fault(),
            StoreError::Io { source, .. } => Fault::of_io(source),
        }
    }
}

/// The file in the store that pins the serving version.
const PIN: &str = "current";

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

    /// Complete versions, oldest first (by number, then name).
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
        v.sort_by_key(|name| (version_number(name), name.clone()));
        v
    }

    pub fn latest(&self) -> Option<String> {
        self.versions().pop()
    }

    pub fn path(&self, version: &str) -> PathBuf {
        self.dir.join(version)
    }

    /// The version the operator pinned in `STORE/current`, if any.
    pub fn pinned(&self) -> Result<Option<String>, StoreError> {
        let path = self.dir.join(PIN);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let version = text.trim().to_owned();
        if !self.versions().contains(&version) {
            return Err(StoreError::BadPin { path, version });
        }
        Ok(Some(version))
    }

    /// The version that serves: the pinned one, else the newest.
    pub fn serving(&self) -> Result<Option<String>, StoreError> {
        Ok(self.pinned()?.or_else(|| self.latest()))
    }

    /// Versions serving should try, best first: the pinned one alone, or every version
    /// newest first.
    fn candidates(&self) -> Result<Vec<String>, StoreError> {
        Ok(match self.pinned()? {
            Some(version) => vec![version],
            None => self.versions().into_iter().rev().collect(),
        })
    }

    /// The name after the newest version: `v` + 6 digits.
    pub fn next_version(&self) -> String {
        let n = self
            .versions()
            .iter()
            .filter_map(|v| version_number(v))
            .max()
            .map_or(1, |n| n + 1);
        format!("v{n:06}")
    }
}

/// The number of a version named `v<digits>`.
fn version_number(name: &str) -> Option<u64> {
    name.strip_prefix('v')?.parse().ok()
}

/// The model serving now, swapped atomically when the store's serving version changes.
#[derive(Debug)]
pub struct LiveModel {
    store: ModelStore,
    device: Device,
    current: RwLock<Arc<Bundle>>,
    rejected: Mutex<HashSet<String>>,
}

impl LiveModel {
    /// Loads the pinned version, or the newest version that loads and passes its
    /// checks (older ones are tried when a newer one is broken).
    pub fn open(store: ModelStore, device: Device) -> Result<Self, StoreError> {
        let mut rejected = HashSet::new();
        let mut first_error = None;
        for version in store.candidates()? {
            match Bundle::load(&store.path(&version), &device) {
                Ok(bundle) => {
                    return Ok(Self {
                        current: RwLock::new(Arc::new(with_version(bundle, &version))),
                        store,
                        device,
                        rejected: Mutex::new(rejected),
                    })
                }
                Err(source) => {
                    tracing::error!(%version, error = %source, "rejected a bad model bundle; trying an older one");
                    rejected.insert(version.clone());
                    first_error.get_or_insert(StoreError::BadModel { version, source });
                }
            }
        }
        Err(first_error.unwrap_or_else(|| StoreError::Empty(store.dir().to_owned())))
    }

    /// The model to use for the next batch.
    /// The device every version is loaded on; inputs go there too.
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn current(&self) -> Arc<Bundle> {
        Arc::clone(&self.current.read().unwrap_or_else(recover))
    }

    /// Swaps in the store's serving version (the pinned one, else the newest) when it
    /// differs from the current one and was not rejected; returns the version swapped
    /// in. A broken pin is logged and changes nothing.
    pub fn refresh(&self) -> Option<String> {
        let target = match self.store.serving() {
            Ok(target) => target?,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the pin; the serving model stays");
                return None;
            }
        };
        if target == self.current().meta.version
            || self
                .rejected
                .lock()
                .unwrap_or_else(recover)
                .contains(&target)
        {
            return None;
        }
        match Bundle::load(&self.store.path(&target), &self.device) {
            Ok(bundle) => {
                let bundle = Arc::new(with_version(bundle, &target));
                *self.current.write().unwrap_or_else(recover) = bundle;
                tracing::info!(version = %target, "model swapped in");
                Some(target)
            }
            Err(e) => {
                tracing::warn!(version = %target, error = %e, "rejected a bad model bundle; the serving model stays");
                self.rejected.lock().unwrap_or_else(recover).insert(target);
                None
            }
        }
    }
}

/// The guard of a lock whose holder panicked: a bug elsewhere, logged as one. What the
/// locks guard (the serving bundle's pointer, the set of rejected names) is changed by
/// one assignment or insertion, never left half-written, so serving goes on with it.
fn recover<G>(poisoned: PoisonError<G>) -> G {
    tracing::error!(
        "a lock of the live model was poisoned: a thread panicked while holding it (a bug)"
    );
    poisoned.into_inner()
}

/// Results carry the store's version name (the directory), whatever the bundle says.
fn with_version(mut bundle: Bundle, version: &str) -> Bundle {
    bundle.meta.version = version.to_owned();
    bundle
}
