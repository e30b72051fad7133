use std::path::Path;

use super::*;
use crate::schema::{Candidate, Token, UserFeatures};

fn row(k: usize) -> LoggedList {
    let candidates: Vec<Candidate> = (0..4)
        .map(|j| Candidate {
            item_id: Token(format!("i{k}-{j}")),
            sparse: [("category".to_owned(), Token::from((j % 2) as u64))].into(),
            dense: [("views".to_owned(), 10.0 * j as f64)].into(),
            upstream_score: (j != 3).then_some(1.0 - j as f64 / 10.0),
        })
        .collect();
    LoggedList {
        request_id: format!("r{k}"),
        timestamp_ms: 1_000 + k as i64,
        user: UserFeatures {
            id: Token(format!("u{}", k % 3)),
            sparse: [("segment".to_owned(), Token::from(2))].into(),
            dense: [("sessions_per_day".to_owned(), 1.5)].into(),
        },
        served_items: vec![format!("i{k}-2"), format!("i{k}-0"), format!("i{k}-1")],
        clicks: vec![k.is_multiple_of(2), false, true],
        utility: 1.0 + (k % 2) as f64,
        candidates,
        model_version: "v1".into(),
        exploration: k.is_multiple_of(5),
        logging_policy: k.is_multiple_of(5).then(|| "uniform".to_owned()),
        propensities: if k.is_multiple_of(5) {
            vec![0.25, 1.0 / 3.0, 0.5]
        } else {
            Vec::new()
        },
    }
}

fn policy(max_bytes: u64) -> RollPolicy {
    RollPolicy {
        max_bytes,
        row_group_rows: 16,
    }
}

fn read_all(pattern: &Path) -> Vec<LoggedList> {
    let reader = LogReader::open(pattern.to_str().expect("utf-8 path"), 7).expect("files");
    reader
        .batches()
        .map(|b| b.expect("batch"))
        .inspect(|b| assert!(b.len() <= 7, "batches respect batch_rows"))
        .flatten()
        .collect()
}

#[test]
fn rows_round_trip_through_parquet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<LoggedList> = (0..50).map(row).collect();
    let mut w = LogWriter::create(dir.path(), "lists", policy(1 << 30)).expect("writer");
    assert!(w.write(&rows).expect("write").is_empty());
    let file = w.finish().expect("finish").expect("one file");
    assert_eq!(file, dir.path().join("lists-000000.parquet"));
    assert_eq!(read_all(dir.path()), rows);
}

#[test]
fn files_roll_by_size_and_continue_their_sequence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<LoggedList> = (0..200).map(row).collect();
    let mut w = LogWriter::create(dir.path(), "lists", policy(4096)).expect("writer");
    let mut published = w.write(&rows).expect("write");
    published.extend(w.finish().expect("finish"));
    assert!(published.len() > 2, "4 KiB files: {published:?}");
    // A new writer continues after the last published file instead of overwriting it.
    let mut w = LogWriter::create(dir.path(), "lists", policy(1 << 30)).expect("writer");
    w.write(&[row(999)]).expect("write");
    let next = w.finish().expect("finish").expect("file");
    assert_eq!(
        next,
        dir.path()
            .join(format!("lists-{:06}.parquet", published.len()))
    );
    let mut expected = rows;
    expected.push(row(999));
    assert_eq!(read_all(&dir.path().join("lists-*.parquet")), expected);
}

#[test]
fn unfinished_file_is_invisible_and_cleaned_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = LogWriter::create(dir.path(), "lists", policy(1 << 30)).expect("writer");
    w.write(&[row(1), row(2)]).expect("write");
    drop(w); // a crash before publishing
             // Data files only: the writer's lock file `.lists.lock` stays.
    let data_files = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect()
    };
    assert_eq!(
        data_files(dir.path()),
        vec![".lists-000000.parquet.tmp".to_owned()]
    );
    let e =
        LogReader::open(dir.path().to_str().expect("utf-8"), 10).expect_err("nothing published");
    assert!(matches!(e, LogError::NoFiles(_)), "{e}");
    let w: LogWriter = LogWriter::create(dir.path(), "lists", policy(1 << 30)).expect("restart");
    assert_eq!(w.finish().expect("finish"), None);
    assert!(data_files(dir.path()).is_empty(), "temp removed");
}

#[test]
fn a_second_live_writer_of_a_prefix_is_refused_and_published_files_are_never_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = LogWriter::create(dir.path(), "lists", policy(1 << 30)).expect("writer");
    let second = LogWriter::<LoggedList>::create(dir.path(), "lists", policy(1 << 30));
    assert!(matches!(second, Err(LogError::Locked(_))), "{second:?}");
    // Another prefix in the same directory is another instance: allowed.
    LogWriter::<LoggedList>::create(dir.path(), "lists-b", policy(1 << 30)).expect("other");
    // A file appears where the next publish would go (say, copied in by hand): the
    // publish fails and the file is untouched.
    first.write(&[row(1)]).expect("write");
    let target = dir.path().join("lists-000000.parquet");
    std::fs::write(&target, b"someone else's").expect("write");
    let e = first.flush().expect_err("would replace");
    assert!(e.to_string().contains("lists-000000.parquet"), "{e}");
    assert_eq!(std::fs::read(&target).expect("read"), b"someone else's");
    drop(first);
    let mut again = LogWriter::<LoggedList>::create(dir.path(), "lists", policy(1 << 30))
        .expect("the lock is released when the writer goes");
    again.write(&[row(2)]).expect("write");
    let published = again.flush().expect("publish").expect("a file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&published)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o007, 0, "not world-readable: {mode:o}");
    }
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("junk.parquet"), b"not parquet at all").expect("write");
    let reader = LogReader::open(dir.path().to_str().expect("utf-8"), 10).expect("one file");
    let e = reader.batches().next().expect("an item").expect_err("junk");
    let text = e.to_string();
    assert!(text.contains("junk.parquet: parquet error"), "{text}");

    let e = LogReader::open("/nonexistent/dir/*.parquet", 10).expect_err("no files");
    assert_eq!(
        e.to_string(),
        "no log files match \"/nonexistent/dir/*.parquet\""
    );
    let e = LogReader::open("[", 10).expect_err("glob");
    assert!(e.to_string().starts_with("bad glob pattern \"[\""), "{e}");
    let e =
        LogWriter::<LoggedList>::create(dir.path(), "../x", policy(1 << 20)).expect_err("prefix");
    assert!(e.to_string().contains("must be a plain"), "{e}");
}

#[test]
fn inconsistent_rows_are_refused_on_read() {
    let mut bad = row(1);
    bad.served_items[1] = "ghost".into();
    let batch = to_record_batch(&[bad]).expect("encodes");
    let e = from_record_batch(&batch).expect_err("ghost item");
    assert_eq!(
        e,
        "row 0 (request r1): served item \"ghost\" is not in the candidate pool"
    );
    let mut bad = row(1);
    bad.clicks.pop();
    let e = from_record_batch(&to_record_batch(&[bad]).expect("encodes")).expect_err("clicks");
    assert!(e.ends_with("2 clicks for 3 served items"), "{e}");
    let mut bad = row(1);
    bad.served_items[1] = bad.served_items[0].clone();
    let e = from_record_batch(&to_record_batch(&[bad]).expect("encodes")).expect_err("twice");
    assert!(e.ends_with("served twice"), "{e}");
}

/// Propensities must be one probability per served position.
#[test]
fn propensities_that_are_not_probabilities_are_refused_on_read() {
    let mut bad = row(5);
    bad.propensities.pop();
    let e = from_record_batch(&to_record_batch(&[bad]).expect("encodes")).expect_err("short");
    assert!(e.ends_with("2 propensities for 3 served items"), "{e}");
    let mut bad = row(5);
    bad.propensities[0] = 0.0;
    let e = from_record_batch(&to_record_batch(&[bad]).expect("encodes")).expect_err("zero");
    assert!(
        e.ends_with("propensity 0 is not a probability in (0, 1]"),
        "{e}"
    );
}

/// A file of schema version 1 (before `logging_policy` and `propensities`) still reads:
/// its lists come back without a policy or propensities.
#[test]
fn version_1_files_read_as_lists_without_propensities() {
    use arrow::record_batch::RecordBatch;
    let rows: Vec<LoggedList> = (0..6).map(row).collect();
    let v2 = to_record_batch(&rows).expect("encodes");
    let v1_columns = v2.num_columns() - 2;
    let v1 = RecordBatch::try_new(
        std::sync::Arc::new(
            v2.schema()
                .project(&(0..v1_columns).collect::<Vec<_>>())
                .expect("project"),
        ),
        v2.columns()[..v1_columns].to_vec(),
    )
    .expect("v1 batch");
    let read = from_record_batch(&v1).expect("a version 1 batch reads");
    let expected: Vec<LoggedList> = rows
        .into_iter()
        .map(|r| LoggedList {
            logging_policy: None,
            propensities: Vec::new(),
            ..r
        })
        .collect();
    assert_eq!(read, expected);
}

#[test]
fn foreign_schema_is_refused_by_column() {
    use arrow::array::Int64Array;
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    let batch = RecordBatch::try_from_iter([(
        "request_id",
        Arc::new(Int64Array::from(vec![1])) as arrow::array::ArrayRef,
    )])
    .expect("batch");
    let e = from_record_batch(&batch).expect_err("foreign");
    assert_eq!(e, "missing column `candidates`");
}

#[test]
fn a_restart_reads_back_the_ids_of_the_newest_published_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(recent_request_ids(dir.path(), 10)
        .expect("empty dir")
        .is_empty());
    let rows: Vec<LoggedList> = (0..200).map(row).collect();
    let mut w = LogWriter::create(dir.path(), "lists", policy(4096)).expect("writer");
    let mut published = w.write(&rows).expect("write");
    published.extend(w.finish().expect("finish"));
    assert!(published.len() > 2, "several files: {published:?}");
    // An unpublished file (a crash before its rename) holds nothing written.
    let mut w = LogWriter::create(dir.path(), "other", policy(1 << 30)).expect("writer");
    w.write(&[row(999)]).expect("write");
    std::mem::forget(w);

    let ids = recent_request_ids(dir.path(), 20).expect("ids");
    assert!(
        ids.len() >= 20,
        "at least the limit when there are that many"
    );
    assert!(
        ids.len() < 200,
        "only the newest files are read: {}",
        ids.len()
    );
    let newest: Vec<String> = rows[200 - ids.len()..]
        .iter()
        .map(|r| r.request_id.clone())
        .collect();
    assert_eq!(ids, newest, "the newest lists, oldest first");
    let all = recent_request_ids(dir.path(), 10_000).expect("ids");
    assert_eq!(all.len(), 200, "not r999 of the unpublished file");
}
