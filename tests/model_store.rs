//! The model store as an operator meets it: versions in numeric order, a broken newest
//! version never stops serving, a pin in `STORE/current` rolls back without touching a
//! directory, and bundles with NaN weights or a degenerate normaliser are refused.

mod common;

use std::path::Path;

use candle_core::Device;

use common::{pipeline, write_bundle};
use eglr::model::{Bundle, LiveModel, ModelStore, StoreError};

/// Replaces the first value of one tensor of `file` in bundle `dir` with NaN.
fn poison_weights(dir: &Path, file: &str) {
    let path = dir.join(file);
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).expect("load");
    let (name, tensor) = tensors
        .iter()
        .next()
        .map(|(n, t)| (n.clone(), t.clone()))
        .expect("a tensor");
    let mut values: Vec<f32> = tensor.flatten_all().expect("flat").to_vec1().expect("f32");
    values[0] = f32::NAN;
    let poisoned = candle_core::Tensor::from_vec(values, tensor.shape(), &Device::Cpu).expect("t");
    tensors.insert(name, poisoned);
    candle_core::safetensors::save(&tensors, &path).expect("save");
}

/// Sets one user field's fitted spread to zero in bundle `dir`'s `bundle.json`.
fn zero_spread(dir: &Path) {
    let path = dir.join("bundle.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    meta["normaliser"]["user"]["sessions_per_day"] =
        serde_json::json!({"mean": 1.0, "std": 0.0, "count": 10});
    std::fs::write(&path, serde_json::to_vec(&meta).expect("encode")).expect("write");
}

#[test]
fn versions_sort_by_number_and_a_broken_newest_version_never_serves() {
    let p = pipeline();
    let store = tempfile::tempdir().expect("tempdir");
    for v in ["v9", "v10", "v11", "v12"] {
        write_bundle(&p, &store.path().join(v), 1);
    }
    let s = ModelStore::new(store.path());
    assert_eq!(s.versions(), ["v9", "v10", "v11", "v12"]);
    assert_eq!(s.next_version(), "v000013");

    poison_weights(&store.path().join("v12"), "generator.safetensors");
    zero_spread(&store.path().join("v11"));
    for (v, expected) in [("v12", "NaN or infinite"), ("v11", "spread")] {
        let e = Bundle::load(&store.path().join(v), &Device::Cpu).expect_err("refused");
        assert!(e.to_string().contains(expected), "{v}: {e}");
    }
    // A size no model has is refused before anything is allocated for it.
    let meta_path = store.path().join("v9").join("bundle.json");
    let original = std::fs::read(&meta_path).expect("read");
    let mut meta: serde_json::Value = serde_json::from_slice(&original).expect("json");
    meta["generator"]["d_model"] = serde_json::json!(1_000_000);
    std::fs::write(&meta_path, serde_json::to_vec(&meta).expect("encode")).expect("write");
    let e = Bundle::load(&store.path().join("v9"), &Device::Cpu).expect_err("too wide");
    assert!(
        e.to_string()
            .contains("generator.d_model = 1000000 exceeds"),
        "{e}"
    );
    std::fs::write(&meta_path, original).expect("restore");
    // Serving starts on the newest version that loads, and never retries the others.
    let live = LiveModel::open(s.clone(), Device::Cpu).expect("an older version loads");
    assert_eq!(live.current().meta.version, "v10");
    assert_eq!(live.refresh(), None);
}

#[test]
fn a_pin_rolls_back_and_forward_without_touching_a_directory() {
    let p = pipeline();
    let store = tempfile::tempdir().expect("tempdir");
    for v in ["v000001", "v000002"] {
        write_bundle(&p, &store.path().join(v), 1);
    }
    let s = ModelStore::new(store.path());
    let live = LiveModel::open(s.clone(), Device::Cpu).expect("open");
    assert_eq!(live.current().meta.version, "v000002");
    let pin = store.path().join("current");
    std::fs::write(&pin, "v000001\n").expect("pin");
    assert_eq!(live.refresh().as_deref(), Some("v000001"), "rolled back");
    write_bundle(&p, &store.path().join("v000003"), 2);
    assert_eq!(live.refresh(), None, "pinned: a new version waits");
    std::fs::remove_file(&pin).expect("unpin");
    assert_eq!(
        live.refresh().as_deref(),
        Some("v000003"),
        "follows the newest again"
    );
    // A pin naming no version is refused at start and ignored by a running stage.
    std::fs::write(&pin, "v000042").expect("bad pin");
    assert!(matches!(
        LiveModel::open(s, Device::Cpu),
        Err(StoreError::BadPin { .. })
    ));
    assert_eq!(live.refresh(), None);
    assert_eq!(live.current().meta.version, "v000003");
}
