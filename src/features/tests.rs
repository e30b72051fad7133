use std::collections::BTreeMap;

use super::*;
use crate::schema::{Candidate, Token, UserFeatures};

fn spec() -> FeatureSpec {
    FeatureSpec {
        user: EntityFeatures {
            sparse: [("segment".to_owned(), 4)].into(),
            dense: [("activity".to_owned(), DenseTransform::Log1p)].into(),
            ..Default::default()
        },
        item: EntityFeatures {
            sparse: [("category".to_owned(), 8), ("item_id".to_owned(), 100)].into(),
            dense: [("views".to_owned(), DenseTransform::Identity)].into(),
            ..Default::default()
        },
        semantic_ids: None,
    }
}

#[test]
fn hashing_is_stable_and_in_range() {
    // Pinned: a change of the hash silently invalidates every trained embedding.
    assert_eq!(
        hash_bucket("category", "7", 64),
        1 + (hash_bucket("category", "7", 1 << 30) - 1) % 64
    );
    assert_eq!(
        hash_bucket("item_id", "i42", 1000),
        hash_bucket("item_id", "i42", 1000)
    );
    assert_ne!(
        hash_bucket("a", "x", 1 << 20),
        hash_bucket("b", "x", 1 << 20)
    );
    for v in 0..1000 {
        let b = hash_bucket("f", &v.to_string(), 10);
        assert!((1..=10).contains(&b));
    }
}

#[test]
fn normaliser_z_scores_after_the_transform() {
    let s = spec();
    let mut fit = NormaliserFit::default();
    for x in [1.0, 2.0, 3.0] {
        let c = Candidate {
            item_id: Token::from("i"),
            sparse: BTreeMap::new(),
            dense: BTreeMap::from([("views".to_owned(), x)]),
            upstream_score: Some(9.0),
        };
        fit.add_item(&s.item, &c);
    }
    let n = fit.finish(&s.user, &s.item);
    let views = n.item["views"];
    assert_eq!((views.mean, views.std, views.count), (2.0, 1.0, 3));
    assert_eq!(views.normalise(DenseTransform::Identity, Some(3.0)), 1.0);
    assert_eq!(views.normalise(DenseTransform::Identity, None), 0.0);
    // A field never seen maps to 0 instead of dividing by zero.
    assert_eq!(
        n.user["activity"].normalise(DenseTransform::Log1p, Some(5.0)),
        0.0
    );
    assert!((DenseTransform::Log1p.apply(-(std::f64::consts::E - 1.0)) + 1.0).abs() < 1e-12);
}

#[test]
fn encoding_pads_and_separates_fields() {
    let enc = FeatureEncoder::new(spec(), DenseNormaliser::default());
    assert_eq!(enc.item_rows(), 9 + 101);
    let user = UserFeatures {
        id: Token::from("u"),
        sparse: BTreeMap::new(),
        dense: BTreeMap::new(),
    };
    let c = |id: &str, cat: &str| Candidate {
        item_id: Token::from(id),
        sparse: [
            ("category".to_owned(), Token::from(cat)),
            ("item_id".to_owned(), Token::from(id)),
        ]
        .into(),
        dense: BTreeMap::new(),
        upstream_score: None,
    };
    let long = [c("a", "1"), c("b", "2"), c("c", "1")];
    let short = [c("d", "3")];
    let e = enc.encode(&[(&user, &long[..]), (&user, &short[..])]);
    assert_eq!((e.batch, e.max_items, e.lens.clone()), (2, 3, vec![3, 1]));
    assert_eq!(e.mask, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
    assert_eq!(e.item_sparse.len(), 2 * 3 * 2);
    // category rows live in 0..9, item_id rows in 9..110; padding uses the missing rows.
    assert!(e
        .item_sparse
        .chunks(2)
        .take(4)
        .all(|f| (1..9).contains(&f[0]) && (10..110).contains(&f[1])));
    assert_eq!(&e.item_sparse[8..], &[0, 9, 0, 9]);
    assert_eq!(
        e.item_sparse[0], e.item_sparse[4],
        "same category, same row"
    );
    assert_eq!(e.user_sparse, vec![0, 0], "missing user feature");
}

/// Category's 20 values hashed into 64 buckets collide (the issue counted four pairs);
/// declared exact, every value of `0..buckets` has its own row, in the field's block, and
/// anything else goes to the one out-of-vocabulary row.
#[test]
fn exact_vocabulary_has_no_collisions() {
    let hashed: std::collections::BTreeSet<u32> = (0..20)
        .map(|v| hash_bucket("category", &v.to_string(), 64))
        .collect();
    assert!(
        hashed.len() < 20,
        "the hashed baseline collides: {hashed:?}"
    );

    let mut s = spec();
    s.item.sparse.insert("category".to_owned(), 20);
    s.item.exact.insert("category".to_owned());
    let enc = FeatureEncoder::new(s, DenseNormaliser::default());
    let user = UserFeatures {
        id: Token::from("u"),
        sparse: BTreeMap::new(),
        dense: BTreeMap::new(),
    };
    let candidate = |category: &str| Candidate {
        item_id: Token::from("i1"),
        sparse: BTreeMap::from([("category".to_owned(), Token::from(category))]),
        dense: BTreeMap::new(),
        upstream_score: None,
    };
    let values: Vec<String> = (0..20)
        .map(|v| v.to_string())
        .chain(["20", "x", "-1"].map(String::from))
        .collect();
    let pool: Vec<Candidate> = values.iter().map(|v| candidate(v)).collect();
    let e = enc.encode(&[(&user, &pool)]);
    // Fields are ordered by name: category is field 0 of each candidate.
    let rows: Vec<u32> = e.item_sparse.chunks(2).map(|c| c[0]).collect();
    let exact: std::collections::BTreeSet<u32> = rows[..20].iter().copied().collect();
    assert_eq!(exact.len(), 20, "{rows:?}");
    assert_eq!(rows[..20], (1..=20).collect::<Vec<u32>>()[..]);
    assert!(
        rows[20..].iter().all(|&r| r == 21),
        "out of vocabulary: {rows:?}"
    );
    // The next field's block starts after the out-of-vocabulary row.
    let item_id_rows: Vec<u32> = e.item_sparse.chunks(2).map(|c| c[1]).collect();
    assert!(item_id_rows.iter().all(|&r| r > 21), "{item_id_rows:?}");
}

/// A sparse field named `item_id` (or `user_id`) that the event does not carry reads the
/// entity's id: distinct items get their hash rows, not the shared "missing" row.
#[test]
fn id_fields_read_the_entity_id() {
    let mut s = spec();
    s.user.sparse.insert("user_id".to_owned(), 64);
    let enc = FeatureEncoder::new(s, DenseNormaliser::default());
    let user = |id: &str| UserFeatures {
        id: Token::from(id),
        sparse: BTreeMap::new(),
        dense: BTreeMap::new(),
    };
    let c = |id: &str| Candidate {
        item_id: Token::from(id),
        sparse: [("category".to_owned(), Token::from("1"))].into(),
        dense: BTreeMap::new(),
        upstream_score: None,
    };
    let items = [c("a"), c("b")];
    let e = enc.encode(&[(&user("u1"), &items[..]), (&user("u2"), &items[..1])]);
    // item fields: category (rows 0..9), item_id (9..110); 9 is item_id's missing row.
    let ids: Vec<u32> = e.item_sparse.chunks(2).take(3).map(|c| c[1]).collect();
    assert!(ids.iter().all(|&r| r > 9), "{ids:?}");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    // The user's id likewise: two users, two rows, neither the missing one.
    // user fields: segment (rows 0..5), user_id (5..70); 5 is user_id's missing row.
    let users: Vec<u32> = e.user_sparse.chunks(2).map(|u| u[1]).collect();
    assert!(users.iter().all(|&r| r > 5), "{users:?}");
    assert_ne!(users[0], users[1]);
}
