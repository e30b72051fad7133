//! The deployment files are checked as far as this machine can: the Kubernetes
//! manifests against the Kubernetes API schemas (kubernetes-validate, installed by
//! `deploy/install-deps.sh --with-tansu`), the pipeline they ship as a pipeline, and the
//! image the manifests run as the one the Dockerfile builds. (No container builder
//! runs here: the Dockerfile itself is not built; see deploy/README.md.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/k8s"))
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    files
}

/// The validator, or `None` (the test is skipped; see `common::present_or_skip`).
fn validator() -> Option<PathBuf> {
    let installed = common::python_tool("kubernetes-validate");
    let hint = "install it with `bash deploy/install-deps.sh --with-tansu`";
    let present = installed.is_file();
    common::present_or_skip("deploy_files", "kubernetes-validate", hint, present)
        .then_some(installed)
}

/// Validates `files` strictly (unknown fields are errors); the exit status and output.
fn validate(tool: &Path, files: &[PathBuf]) -> (bool, String) {
    common::run_tool(Command::new(tool).arg("--strict").args(files))
}

#[test]
fn the_manifests_are_valid_kubernetes_objects() {
    let Some(tool) = validator() else { return };
    let files = manifests();
    let (ok, text) = validate(&tool, &files);
    assert!(ok, "{text}");
    for kind in [
        "statefulset/eglr-serve",
        "poddisruptionbudget/eglr-serve",
        "statefulset/eglr-log",
        "deployment/eglr-trainer",
        "configmap/eglr-pipeline",
        "persistentvolumeclaim/eglr-models",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind}: {text}"
        );
    }

    // The check can fail: a misspelt field in a copy of the serve manifest is refused.
    let tmp = tempfile::tempdir().expect("tempdir");
    let broken = tmp.path().join("serve.yaml");
    let serve = std::fs::read_to_string(root().join("deploy/k8s/serve.yaml")).expect("read");
    assert!(serve.contains("  replicas: 4"));
    std::fs::write(&broken, serve.replace("  replicas: 4", "  replica: 4")).expect("write");
    let (ok, text) = validate(&tool, &[broken]);
    assert!(!ok, "a misspelt field passed: {text}");
}

/// The `pipeline.toml` block of the ConfigMap in `deploy/k8s/pipeline.yaml`.
fn shipped_pipeline() -> String {
    let text = std::fs::read_to_string(root().join("deploy/k8s/pipeline.yaml")).expect("read");
    let block = text
        .split_once("pipeline.toml: |\n")
        .expect("a pipeline.toml block")
        .1;
    block
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect()
}

#[test]
fn the_shipped_pipeline_loads_and_reads_its_password_from_the_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let secret = tmp.path().join("sasl.password");
    std::fs::write(&secret, "hunter2\n").expect("write");
    let text = shipped_pipeline();
    let mount = "/run/secrets/kafka/sasl.password";
    assert!(text.contains(mount), "{text}");
    let file = tmp.path().join("pipeline.toml");
    let local = text.replace(mount, secret.to_str().expect("utf-8"));
    std::fs::write(&file, local).expect("write");
    let p = eglr::config::PipelineConfig::load(&file, &[]).expect("the shipped pipeline");
    let property = |k: &str| p.kafka.properties.get(k).map(String::as_str);
    assert_eq!(property("security.protocol"), Some("SASL_SSL"));
    assert_eq!(property("sasl.password"), Some("hunter2"));
    assert!(matches!(
        p.kafka.bootstrap(),
        Ok(eglr::config::Bootstrap::Servers(_))
    ));
}

#[test]
fn every_manifest_runs_the_image_the_dockerfile_builds_as_its_user() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("docker build -t eglr:latest ."));
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    let uid = user.split(':').next().expect("uid");
    assert_ne!(uid, "0", "the image runs as root");
    for file in manifests() {
        let text = std::fs::read_to_string(&file).expect("read");
        let images: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .collect();
        let pods =
            text.matches("kind: StatefulSet").count() + text.matches("kind: Deployment").count();
        assert_eq!(images.len(), pods, "{}", file.display());
        for image in images {
            assert_eq!(image, "eglr:latest", "{}", file.display());
        }
        if pods > 0 {
            assert!(
                text.contains(&format!("runAsUser: {uid}")) && text.contains("runAsNonRoot: true"),
                "{} does not run as the image's user {uid}",
                file.display()
            );
        }
    }
}
