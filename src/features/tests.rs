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

/// A catalogue of `n` items with distinct content: a category of 8 and a continuous
/// `views`, and a normaliser fitted on them.
fn semantic_catalogue(n: usize) -> (FeatureEncoder, BTreeMap<String, Candidate>) {
    let mut s = spec();
    s.semantic_ids = Some(SemanticIdSpec {
        levels: 3,
        codes: 32,
        ..Default::default()
    });
    let item = |i: usize| Candidate {
        item_id: Token(format!("i{i}")),
        sparse: [("category".to_owned(), Token((i % 8).to_string()))].into(),
        dense: [(
            "views".to_owned(),
            (i as f64 * 0.37).sin() * 50.0 + i as f64 / 10.0,
        )]
        .into(),
        upstream_score: Some(1.0),
    };
    let items: BTreeMap<String, Candidate> = (0..n).map(|i| (format!("i{i}"), item(i))).collect();
    let mut fit = NormaliserFit::default();
    for c in items.values() {
        fit.add_item(&s.item, c);
    }
    let normaliser = fit.finish(&s.user, &s.item);
    (FeatureEncoder::new(s, normaliser), items)
}

/// GR2's semantic ids: fitted on the catalogue's content, at least 99 % of the items get
/// a code of their own; the same features give the same code, whoever encodes them (a
/// clone, or a bundle's copy read back from JSON); the replaced `item_id` field is no
/// longer looked up; and the tokens land in their levels' blocks after the other fields.
#[test]
fn semantic_ids_are_unique_and_stable_for_the_same_features() {
    let (enc, items) = semantic_catalogue(600);
    let enc = enc.fit_semantic_ids(&items).expect("fit");
    let ids = enc.semantic_ids().expect("fitted").clone();
    assert_eq!(ids.items, 600);
    assert!(ids.uniqueness >= 0.99, "uniqueness {}", ids.uniqueness);
    assert!(ids.content_uniqueness <= ids.uniqueness);

    let user = UserFeatures {
        id: Token::from("u"),
        sparse: BTreeMap::new(),
        dense: BTreeMap::new(),
    };
    let pool: Vec<Candidate> = items.values().take(40).cloned().collect();
    let first = enc.encode(&[(&user, &pool)]);
    // Read back as a bundle stores it: the same rows.
    let stored: SemanticIds =
        serde_json::from_str(&serde_json::to_string(&ids).expect("json")).expect("read");
    let reloaded = FeatureEncoder::new(enc.spec().clone(), enc.normaliser().clone())
        .with_semantic_ids(Some(stored))
        .expect("consistent");
    assert_eq!(reloaded.encode(&[(&user, &pool)]), first);
    assert_eq!(enc.clone().encode(&[(&user, &pool)]), first);

    // category, then 3 levels and the disambiguating token; no item_id column.
    let (columns, _) = enc.item_fields();
    assert_eq!((columns, enc.code_levels()), (1 + 4, 4));
    let codes = 32 + 1;
    let category_rows = 8 + 1;
    assert_eq!(enc.item_rows(), category_rows + 3 * codes + (32 + 1));
    for c in first.item_sparse.chunks(columns) {
        for (level, &row) in c[1..4].iter().enumerate() {
            let block = (category_rows + level * codes) as u32;
            assert!((block + 1..block + codes as u32).contains(&row), "{c:?}");
        }
    }
    // Distinct items, distinct full ids.
    let full: std::collections::BTreeSet<&[u32]> =
        first.item_sparse.chunks(columns).map(|c| &c[1..]).collect();
    assert!(full.len() >= 39, "{} distinct ids of 40", full.len());
}

/// Cold start: an item the tokenizer never saw, with a known item's features, gets that
/// item's content code (it shares what it has in common) and the shared token 0; two
/// known items with equal features keep apart by their disambiguating token.
#[test]
fn a_new_item_shares_the_code_of_the_known_item_it_resembles() {
    let (enc, mut items) = semantic_catalogue(300);
    let mut twin = items["i5"].clone();
    twin.item_id = Token::from("i5-twin");
    items.insert("i5-twin".into(), twin.clone());
    let enc = enc.fit_semantic_ids(&items).expect("fit");
    let ids = enc.semantic_ids().expect("fitted");
    assert!(ids.content_uniqueness < ids.uniqueness);
    let user = UserFeatures {
        id: Token::from("u"),
        sparse: BTreeMap::new(),
        dense: BTreeMap::new(),
    };
    let mut new = items["i5"].clone();
    new.item_id = Token::from("never-seen");
    let pool = [items["i5"].clone(), twin, new];
    let e = enc.encode(&[(&user, &pool[..])]);
    let rows: Vec<&[u32]> = e.item_sparse.chunks(5).collect();
    assert_eq!(rows[0][..4], rows[1][..4], "twins share the content code");
    assert_ne!(rows[0][4], rows[1][4], "and differ by their last token");
    assert_eq!(rows[2][..4], rows[0][..4], "the new item shares the code");
    // "i5" sorts before "i5-twin": it holds token 0, which every new item shares.
    assert_eq!(rows[2][4], rows[0][4], "token 0 for the new item");
}

/// A tokenizer that does not fit the spec is refused, with what differs.
#[test]
fn a_tokenizer_of_another_shape_is_refused() {
    let (enc, items) = semantic_catalogue(100);
    let fitted = enc.clone().fit_semantic_ids(&items).expect("fit");
    let mut ids = fitted.semantic_ids().expect("fitted").clone();
    ids.codebooks.pop();
    let e = enc
        .clone()
        .with_semantic_ids(Some(ids))
        .expect_err("2 levels for 3");
    assert!(e.contains("2 levels"), "{e}");
    let e = enc.with_semantic_ids(None).expect_err("none stored");
    assert!(e.contains("no tokenizer"), "{e}");
    let bad = SemanticIdSpec {
        content: Some(vec!["upstream_score".into()]),
        ..Default::default()
    };
    let mut item = spec().item;
    item.dense
        .insert("upstream_score".into(), DenseTransform::Identity);
    let (key, message) = bad.validate(&item).expect_err("request field");
    assert_eq!(key, "features.semantic_ids.content");
    assert!(message.contains("not content"), "{message}");
    let unknown = SemanticIdSpec {
        content: Some(vec!["colour".into()]),
        ..Default::default()
    };
    let (_, message) = unknown.validate(&item).expect_err("unknown field");
    assert!(message.contains("not a declared item field"), "{message}");
}
