//! The KuaiRand importer on a small fixture written by the test itself, with the
//! official files' headers (CI never reads ../shared).

use std::path::Path;

use super::kuairand::{import, ImportOptions, ImportSummary, Label, SplitAt, Utility};
use super::ImportError;
use crate::config::PipelineConfig;
use crate::features::FeatureSpec;
use crate::list_log::{LogReader, LoggedList, RollPolicy};

const LOG_HEADER: &str = "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab";
const USER_HEADER: &str = "user_id,user_active_degree,is_lowactive_period,is_live_streamer,is_video_author,follow_user_num,follow_user_num_range,fans_user_num,fans_user_num_range,friend_user_num,friend_user_num_range,register_days,register_days_range,onehot_feat0,onehot_feat1,onehot_feat2,onehot_feat3,onehot_feat4,onehot_feat5,onehot_feat6,onehot_feat7,onehot_feat8,onehot_feat9,onehot_feat10,onehot_feat11,onehot_feat12,onehot_feat13,onehot_feat14,onehot_feat15,onehot_feat16,onehot_feat17";
const BASIC_HEADER: &str = "video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,server_width,server_height,music_id,music_type,tag";
const STAT_HEADER: &str = "video_id,counts,show_cnt,show_user_num,play_cnt,play_user_num,play_duration,complete_play_cnt,complete_play_user_num,valid_play_cnt,valid_play_user_num,long_time_play_cnt,long_time_play_user_num,short_time_play_cnt,short_time_play_user_num,play_progress,comment_stay_duration,like_cnt,like_user_num,click_like_cnt,double_click_cnt,cancel_like_cnt,cancel_like_user_num,comment_cnt,comment_user_num,direct_comment_cnt,reply_comment_cnt,delete_comment_cnt,delete_comment_user_num,comment_like_cnt,comment_like_user_num,follow_cnt,follow_user_num,cancel_follow_cnt,cancel_follow_user_num,share_cnt,share_user_num,download_cnt,download_user_num,report_cnt,report_user_num,reduce_similar_cnt,reduce_similar_user_num,collect_cnt,collect_user_num,cancel_collect_cnt,cancel_collect_user_num,direct_comment_user_num,reply_comment_user_num,share_all_cnt,share_all_user_num,outsite_share_all_cnt";

const DAY1: i64 = 1_650_812_400_000; // 2022-04-25 00:00 Beijing time
const DAY2: i64 = DAY1 + 86_400_000;

/// One log row: (user, video, day 1 or 2, ms into the day, click, long view, play ms).
type Row = (u32, u32, u8, i64, u8, u8, i64);

/// User 1: 23 impressions over two days (lists at 0..10, 10..20; 3 dropped), written
/// out of time order. User 2: 10 impressions on day 2 with video 7 twice and two equal
/// times (file order breaks the tie). User 3: 5 impressions (all dropped).
fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for i in (0..23).rev() {
        let (day, t) = if i < 10 { (1, i * 1000) } else { (2, i * 1000) };
        rows.push((
            1,
            100 + i as u32,
            day,
            t,
            u8::from(i % 3 == 0),
            u8::from(i % 4 == 0),
            i * 10,
        ));
    }
    for (k, v) in [5u32, 7, 8, 7, 9, 10, 11, 12, 13, 14]
        .into_iter()
        .enumerate()
    {
        let t = if k == 3 { 2000 } else { k as i64 * 1000 };
        rows.push((2, v, 2, t, u8::from(k < 2), 0, 1000));
    }
    for i in 0..5 {
        rows.push((3, 200 + i, 1, i64::from(i), 1, 1, 0));
    }
    rows
}

fn write_fixture(dir: &Path) {
    let mut log = String::from(LOG_HEADER) + "\n";
    for (u, v, day, t, click, long, play) in rows() {
        let (date, base) = if day == 1 {
            (20220425, DAY1)
        } else {
            (20220426, DAY2)
        };
        log += &format!(
            "{u},{v},{date},0,{},{click},0,0,0,0,0,{long},{play},5000,0,0,0,0,1\n",
            base + t
        );
    }
    std::fs::write(dir.join("log_standard_4_25_to_4_26_pure.csv"), log).expect("write log");
    let mut users = String::from(USER_HEADER) + "\n";
    for u in 1..=3 {
        // Quoted ranges with commas, as in the official file; user 3 has nulls.
        let tail = if u == 3 {
            ",,,,,,"
        } else {
            ",1.0,0.0,0.0,0.0,0.0,0.0"
        };
        users += &format!(
            "{u},full_active,0,-124,0,12,\"(10,50]\",3,\"[1,10)\",1,\"[1,5)\",{},\"[60,90)\",1,3,2,7,4.0,0,0,31,283,6,2,3{tail}\n",
            60 + u
        );
    }
    std::fs::write(dir.join("user_features_pure.csv"), users).expect("write users");
    let mut basic = String::from(BASIC_HEADER) + "\n";
    let mut stats = String::from(STAT_HEADER) + "\n";
    for v in (5..15).chain(100..123).chain(200..205) {
        // Video 5 has no duration and no tag (nulls).
        let (duration, tag) = if v == 5 {
            (String::new(), String::new())
        } else {
            (format!("{}.0", v * 1000), "\"39,68\"".to_owned())
        };
        basic += &format!(
            "{v},{},NORMAL,2022-04-10,Web,0.0,{duration},720.0,1280.0,{},9.0,{tag}\n",
            v % 7,
            v % 5
        );
        let values: Vec<String> = (1..STAT_HEADER.split(',').count())
            .map(|k| format!("{}.5", v as usize * k))
            .collect();
        stats += &format!("{v},{}\n", values.join(","));
    }
    std::fs::write(dir.join("video_features_basic_pure.csv"), basic).expect("write basic");
    std::fs::write(dir.join("video_features_statistic_pure.csv"), stats).expect("write stats");
}

fn options(split_at: SplitAt) -> ImportOptions {
    ImportOptions {
        list_len: 10,
        label: Label::Click,
        utility: Utility::LabelCount,
        split_at,
        roll: RollPolicy {
            max_bytes: 1 << 30,
            row_group_rows: 1024,
        },
        shard_bytes: 1 << 30,
    }
}

fn kuairand_spec() -> FeatureSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/kuairand.toml");
    PipelineConfig::load(&path, &[])
        .expect("pipelines/kuairand.toml loads")
        .features
}

fn read_rows(dir: &Path) -> Vec<LoggedList> {
    let reader = LogReader::open(&dir.display().to_string(), 100).expect("open logs");
    reader.batches().flat_map(|b| b.expect("batch")).collect()
}

fn run_import(src: &Path, out: &Path, options: &ImportOptions) -> ImportSummary {
    import(src, out, &kuairand_spec(), options).expect("import succeeds")
}

#[test]
fn cuts_each_users_time_sorted_impressions_into_lists() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_fixture(tmp.path());
    let out = tmp.path().join("out");
    let summary = run_import(tmp.path(), &out, &options(SplitAt::Date(20220426)));
    assert_eq!(summary.impressions, 38);
    assert_eq!(
        (summary.lists, summary.train_lists, summary.test_lists),
        (3, 1, 2)
    );
    assert_eq!(summary.dropped_remainder, 3 + 5);
    assert_eq!(summary.repeated_in_list, 1);
    assert_eq!(summary.split_at_ms, DAY2);
    // Video 5: duration and tag empty; user 3 (dropped later, still read): 6 one-hot nulls.
    assert_eq!(
        summary
            .nulls
            .get("video_features_basic_pure.csv:video_duration"),
        Some(&1)
    );
    assert_eq!(
        summary.nulls.get("video_features_basic_pure.csv:tag"),
        Some(&1)
    );
    assert_eq!(
        summary.nulls.get("user_features_pure.csv:onehot_feat12"),
        Some(&1)
    );

    let train = read_rows(&out.join("train"));
    assert_eq!(train.len(), 1);
    let first = &train[0];
    let ids: Vec<String> = (100..110).map(|v: u32| v.to_string()).collect();
    assert_eq!(first.served_items, ids, "sorted by time, not file order");
    assert_eq!(
        first
            .candidates
            .iter()
            .map(|c| c.item_id.0.clone())
            .collect::<Vec<_>>(),
        ids
    );
    let clicks: Vec<bool> = (0..10).map(|i| i % 3 == 0).collect();
    assert_eq!(first.clicks, clicks);
    assert_eq!(first.utility, 4.0);
    assert_eq!(first.timestamp_ms, DAY1);
    assert_eq!(
        first
            .user
            .sparse
            .get("fans_user_num_range")
            .map(|t| t.0.as_str()),
        Some("[1,10)")
    );
    assert_eq!(first.user.dense.get("register_days"), Some(&61.0));
    let c = &first.candidates[0];
    assert_eq!(c.sparse.get("tag").map(|t| t.0.as_str()), Some("39,68"));
    assert_eq!(c.dense.get("video_duration"), Some(&100_000.0));
    assert_eq!(c.upstream_score, None);

    let test = read_rows(&out.join("test"));
    let second = test
        .iter()
        .find(|l| l.user.id.0 == "1")
        .expect("user 1's second list");
    assert_eq!(second.request_id, "kuairand-1-1");
    assert_eq!(second.served_items[0], "110");
    let repeated = test
        .iter()
        .find(|l| l.user.id.0 == "2")
        .expect("user 2's list");
    // Times 0,1000,2000(video 8),2000(video 7, later in the file),4000,...: the tie keeps
    // file order, the second showing of video 7 gets its own item id.
    assert_eq!(&repeated.served_items[..5], ["5", "7", "8", "7#2", "9"]);
    assert_eq!(
        repeated.candidates[3]
            .sparse
            .get("video_id")
            .map(|t| t.0.as_str()),
        Some("7")
    );
    assert!(
        !repeated.candidates[0].dense.contains_key("video_duration"),
        "null stays missing"
    );
    assert_eq!(
        repeated
            .served_indices()
            .expect("served ids are in the pool"),
        (0..10).collect::<Vec<_>>()
    );
}

#[test]
fn importing_twice_gives_identical_files_and_shards_do_not_change_rows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_fixture(tmp.path());
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let auto = SplitAt::Auto { test_share: 0.2 };
    let summary = run_import(tmp.path(), &a, &options(auto));
    // Starts: DAY1, DAY2 (user 2), DAY2 + 10 s (user 1): 20 % of 3 lists rounds to 1.
    assert_eq!(
        (summary.train_lists, summary.test_lists, summary.split_at_ms),
        (2, 1, DAY2 + 10_000)
    );
    run_import(tmp.path(), &b, &options(auto));
    for sub in ["train", "test"] {
        let mut files: Vec<_> = std::fs::read_dir(a.join(sub))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        files.sort();
        assert!(!files.is_empty());
        for f in files {
            let x = std::fs::read(a.join(sub).join(&f)).expect("read a");
            let y = std::fs::read(b.join(sub).join(&f)).expect("read b");
            assert!(x == y, "{sub}/{f:?} differs between two imports");
        }
    }
    assert_eq!(
        std::fs::read(a.join("import.json")).ok(),
        std::fs::read(b.join("import.json")).ok()
    );
    // Tiny shards: several shard files, the same lists.
    let sharded = ImportOptions {
        shard_bytes: 500,
        ..options(auto)
    };
    let summary = run_import(tmp.path(), &c, &sharded);
    assert!(summary.shards > 1);
    let sorted = |dir: &Path| {
        let mut rows = read_rows(&dir.join("train"));
        rows.extend(read_rows(&dir.join("test")));
        rows.sort_by(|x, y| x.request_id.cmp(&y.request_id));
        rows
    };
    assert_eq!(sorted(&a), sorted(&c));
}

#[test]
fn bad_input_is_named_and_existing_output_is_not_overwritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_fixture(tmp.path());
    let out = tmp.path().join("out");
    run_import(tmp.path(), &out, &options(SplitAt::TimeMs(DAY2)));
    let again = import(
        tmp.path(),
        &out,
        &kuairand_spec(),
        &options(SplitAt::TimeMs(DAY2)),
    );
    assert!(
        matches!(again, Err(ImportError::OutputExists(_))),
        "{again:?}"
    );

    // A bad value: the error names file, line and column.
    let log = tmp.path().join("log_standard_4_25_to_4_26_pure.csv");
    let text = std::fs::read_to_string(&log).expect("read log");
    let broken = text.replacen(
        &format!("2,5,20220426,0,{DAY2},1,"),
        &format!("2,5,20220426,0,{DAY2},yes,"),
        1,
    );
    std::fs::write(&log, &broken).expect("write");
    let err = import(
        tmp.path(),
        &tmp.path().join("o2"),
        &kuairand_spec(),
        &options(SplitAt::TimeMs(DAY2)),
    )
    .expect_err("bad is_click");
    let message = err.to_string();
    assert!(
        message.contains("is_click") && message.contains("\"yes\"") && message.contains("line "),
        "{message}"
    );

    // A missing column.
    std::fs::write(&log, text.replacen("time_ms", "time", 1)).expect("write");
    let err = import(
        tmp.path(),
        &tmp.path().join("o3"),
        &kuairand_spec(),
        &options(SplitAt::TimeMs(DAY2)),
    )
    .expect_err("no time_ms");
    assert!(
        matches!(&err, ImportError::MissingColumn { column, .. } if column == "time_ms"),
        "{err}"
    );

    // A declared feature no file has.
    std::fs::write(&log, &text).expect("write");
    let mut spec = kuairand_spec();
    spec.item.sparse.insert("colour".into(), 8);
    let err = import(
        tmp.path(),
        &tmp.path().join("o4"),
        &spec,
        &options(SplitAt::TimeMs(DAY2)),
    )
    .expect_err("undeclared column");
    assert!(err.to_string().contains("colour"), "{err}");

    // No user has enough impressions.
    let long = ImportOptions {
        list_len: 50,
        ..options(SplitAt::TimeMs(DAY2))
    };
    let err =
        import(tmp.path(), &tmp.path().join("o5"), &kuairand_spec(), &long).expect_err("empty");
    assert!(matches!(err, ImportError::Empty(_)), "{err}");
}

#[test]
fn split_at_parses_auto_dates_and_times() {
    assert_eq!(
        "auto".parse::<SplitAt>(),
        Ok(SplitAt::Auto { test_share: 0.2 })
    );
    assert_eq!("2022-04-30".parse::<SplitAt>(), Ok(SplitAt::Date(20220430)));
    assert_eq!(
        "1651248000000".parse::<SplitAt>(),
        Ok(SplitAt::TimeMs(1_651_248_000_000))
    );
    assert!("30/04/2022".parse::<SplitAt>().is_err());
}

#[test]
fn video_files_split_into_parts_give_the_same_lists() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_fixture(tmp.path());
    let split = SplitAt::TimeMs(DAY2);
    let whole = tmp.path().join("whole");
    run_import(tmp.path(), &whole, &options(split));
    // As in the 27K release: the statistic file in two parts with the same header.
    let stats = tmp.path().join("video_features_statistic_pure.csv");
    let text = std::fs::read_to_string(&stats).expect("read");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    let rows: Vec<&str> = lines.collect();
    let (a, b) = rows.split_at(rows.len() / 2);
    for (name, part) in [("part1", a), ("part2", b)] {
        let body = format!("{header}\n{}\n", part.join("\n"));
        std::fs::write(
            tmp.path()
                .join(format!("video_features_statistic_pure_{name}.csv")),
            body,
        )
        .expect("write part");
    }
    std::fs::remove_file(&stats).expect("remove whole file");
    let parts = tmp.path().join("parts");
    run_import(tmp.path(), &parts, &options(split));
    for sub in ["train", "test"] {
        assert_eq!(
            read_rows(&whole.join(sub)),
            read_rows(&parts.join(sub)),
            "{sub}"
        );
    }
}
