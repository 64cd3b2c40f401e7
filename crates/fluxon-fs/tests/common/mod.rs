//! The `StateStore` conformance suite shared by every backend's tests.
//!
//! Each case gets an empty store and checks one property of the trait contract.

use std::sync::Arc;

use fluxon_fs::store::{Batch, BatchOutcome, CasOutcome, StateStore, StoreError, Versioned};

pub type Store = Arc<dyn StateStore>;

/// A named conformance case.
pub type Case = (&'static str, fn(Store) -> futures_box::BoxFuture);

pub mod futures_box {
    //! A boxed unit future so cases fit in one table.
    pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

macro_rules! case {
    ($name:ident) => {
        (stringify!($name), |s| {
            Box::pin($name(s)) as futures_box::BoxFuture
        })
    };
}

/// Every case of the suite.
pub fn cases() -> Vec<Case> {
    vec![
        case!(put_get_versions_increase),
        case!(delete_reports_existence),
        case!(cas_must_not_exist),
        case!(cas_version_mismatch),
        case!(cas_delete),
        case!(list_prefix_order_limit_pagination),
        case!(batch_is_all_or_nothing),
        case!(concurrent_cas_counter),
        case!(empty_key_rejected),
    ]
}

/// Runs every case, each against a fresh store from `make`.
pub async fn conformance<F, Fut>(mut make: F)
where
    F: FnMut(&'static str) -> Fut,
    Fut: std::future::Future<Output = Store>,
{
    for (name, case) in cases() {
        let store = make(name).await;
        eprintln!("conformance case: {name}");
        case(store).await;
    }
}

async fn put_get_versions_increase(s: Store) {
    assert_eq!(s.get(b"k").await.unwrap(), None);
    let v1 = s.put(b"k", b"one".to_vec()).await.unwrap();
    assert!(v1 > 0);
    let got = s.get(b"k").await.unwrap().unwrap();
    assert_eq!(
        got,
        Versioned {
            value: b"one".to_vec(),
            version: v1
        }
    );
    let v2 = s.put(b"k", b"two".to_vec()).await.unwrap();
    assert!(v2 > v1);
    let v3 = s.put(b"other", b"x".to_vec()).await.unwrap();
    assert!(v3 > v2);
    assert_eq!(s.get(b"k").await.unwrap().unwrap().version, v2);
    assert_eq!(s.get(b"k").await.unwrap().unwrap().value, b"two");
}

async fn delete_reports_existence(s: Store) {
    assert!(!s.delete(b"k").await.unwrap());
    s.put(b"k", b"v".to_vec()).await.unwrap();
    assert!(s.delete(b"k").await.unwrap());
    assert_eq!(s.get(b"k").await.unwrap(), None);
    assert!(!s.delete(b"k").await.unwrap());
}

async fn cas_must_not_exist(s: Store) {
    let CasOutcome::Swapped { version } = s
        .compare_and_swap(b"lease", None, Some(b"a".to_vec()))
        .await
        .unwrap()
    else {
        panic!("creating an absent key must swap");
    };
    let current = Some(Versioned {
        value: b"a".to_vec(),
        version,
    });
    let again = s
        .compare_and_swap(b"lease", None, Some(b"b".to_vec()))
        .await;
    assert_eq!(
        again.unwrap(),
        CasOutcome::Conflict {
            current: current.clone()
        }
    );
    assert_eq!(s.get(b"lease").await.unwrap(), current);
}

async fn cas_version_mismatch(s: Store) {
    let v1 = s.put(b"k", b"a".to_vec()).await.unwrap();
    let stale = s.compare_and_swap(b"k", Some(v1 + 1000), Some(b"b".to_vec()));
    let current = Some(Versioned {
        value: b"a".to_vec(),
        version: v1,
    });
    assert_eq!(stale.await.unwrap(), CasOutcome::Conflict { current });
    let fresh = s.compare_and_swap(b"k", Some(v1), Some(b"c".to_vec()));
    let CasOutcome::Swapped { version: v2 } = fresh.await.unwrap() else {
        panic!("CAS at the current version must swap");
    };
    assert!(v2 > v1);
    assert_eq!(
        s.get(b"k").await.unwrap().unwrap(),
        Versioned {
            value: b"c".to_vec(),
            version: v2
        }
    );
    let missing = s.compare_and_swap(b"absent", Some(v1), Some(b"x".to_vec()));
    assert_eq!(
        missing.await.unwrap(),
        CasOutcome::Conflict { current: None }
    );
    assert_eq!(s.get(b"absent").await.unwrap(), None);
}

async fn cas_delete(s: Store) {
    let v1 = s.put(b"k", b"a".to_vec()).await.unwrap();
    let wrong = s.compare_and_swap(b"k", Some(v1 + 1), None).await.unwrap();
    assert!(matches!(wrong, CasOutcome::Conflict { current: Some(_) }));
    let CasOutcome::Swapped { version } = s.compare_and_swap(b"k", Some(v1), None).await.unwrap()
    else {
        panic!("CAS delete at the current version must swap");
    };
    assert!(version >= v1);
    assert_eq!(s.get(b"k").await.unwrap(), None);
    let gone = s.compare_and_swap(b"k", Some(v1), None).await.unwrap();
    assert_eq!(gone, CasOutcome::Conflict { current: None });
}

fn keys(entries: &[(Vec<u8>, Versioned)]) -> Vec<&[u8]> {
    entries.iter().map(|(k, _)| k.as_slice()).collect()
}

async fn list_prefix_order_limit_pagination(s: Store) {
    for key in ["a/3", "a/1", "b/1", "a/10", "a", "a0", "a/2", "a/\u{ff}"] {
        s.put(key.as_bytes(), format!("v-{key}").into_bytes())
            .await
            .unwrap();
    }
    let expected: Vec<&[u8]> = vec![b"a/1", b"a/10", b"a/2", b"a/3", "a/\u{ff}".as_bytes()];
    let all = s.list_prefix(b"a/", None, 100).await.unwrap();
    assert_eq!(keys(&all), expected);
    assert_eq!(all[0].1.value, b"v-a/1");
    assert_eq!(all[0].1, s.get(b"a/1").await.unwrap().unwrap());
    let first = s.list_prefix(b"a/", None, 2).await.unwrap();
    assert_eq!(keys(&first), expected[..2].to_vec());
    let mut paged = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = s.list_prefix(b"a/", cursor.as_deref(), 2).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        cursor = Some(last.clone());
        paged.extend(page);
    }
    assert_eq!(keys(&paged), expected);
    assert!(s.list_prefix(b"a/", None, 0).await.unwrap().is_empty());
    let early_cursor = s.list_prefix(b"a/", Some(b"0"), 100).await.unwrap();
    assert_eq!(keys(&early_cursor), expected);
    assert_eq!(
        keys(&s.list_prefix(b"b/", None, 100).await.unwrap()),
        vec![b"b/1"]
    );
    assert!(s.list_prefix(b"c/", None, 100).await.unwrap().is_empty());
    assert_eq!(s.list_prefix(b"", None, 100).await.unwrap().len(), 8);
}

async fn batch_is_all_or_nothing(s: Store) {
    let vz = s.put(b"z", b"old".to_vec()).await.unwrap();
    let batch = Batch::new().put(b"x", b"1").put(b"y", b"2").delete(b"z");
    let BatchOutcome::Applied { version } = s.batch(batch).await.unwrap() else {
        panic!("an unconditional batch must apply");
    };
    assert!(version > vz);
    assert_eq!(s.get(b"x").await.unwrap().unwrap().version, version);
    assert_eq!(s.get(b"y").await.unwrap().unwrap().version, version);
    assert_eq!(s.get(b"z").await.unwrap(), None);

    let failing = Batch::new()
        .check(b"x", Some(version))
        .check(b"y", Some(version + 1))
        .put(b"x", b"changed")
        .put(b"new", b"n")
        .delete(b"y");
    let outcome = s.batch(failing).await.unwrap();
    let current = Some(Versioned {
        value: b"2".to_vec(),
        version,
    });
    assert_eq!(
        outcome,
        BatchOutcome::Conflict {
            key: b"y".to_vec(),
            current
        }
    );
    assert_eq!(s.get(b"x").await.unwrap().unwrap().value, b"1");
    assert_eq!(s.get(b"new").await.unwrap(), None);
    assert!(s.get(b"y").await.unwrap().is_some());

    let passing = Batch::new()
        .check(b"x", Some(version))
        .check(b"new", None)
        .put(b"new", b"n")
        .delete(b"x");
    assert!(matches!(
        s.batch(passing).await.unwrap(),
        BatchOutcome::Applied { .. }
    ));
    assert_eq!(s.get(b"new").await.unwrap().unwrap().value, b"n");
    assert_eq!(s.get(b"x").await.unwrap(), None);

    let duplicate = Batch::new().put(b"d", b"1").put(b"d", b"2");
    assert!(matches!(
        s.batch(duplicate).await,
        Err(StoreError::InvalidRequest(_))
    ));
    assert_eq!(s.get(b"d").await.unwrap(), None);
}

/// Adds one to the counter with CAS, retrying on conflict; returns the number of retries.
async fn increment(s: Store) -> u32 {
    let mut retries = 0;
    loop {
        let current = s.get(b"counter").await.unwrap();
        let (expected, n) = match &current {
            Some(v) => (
                Some(v.version),
                String::from_utf8_lossy(&v.value).parse::<u64>().unwrap(),
            ),
            None => (None, 0),
        };
        let next = (n + 1).to_string().into_bytes();
        match s
            .compare_and_swap(b"counter", expected, Some(next))
            .await
            .unwrap()
        {
            CasOutcome::Swapped { .. } => return retries,
            CasOutcome::Conflict { .. } => retries += 1,
        }
    }
}

async fn concurrent_cas_counter(s: Store) {
    let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(increment(s.clone()))).collect();
    let mut retries = 0;
    for task in tasks {
        retries += task.await.unwrap();
    }
    let value = s.get(b"counter").await.unwrap().unwrap().value;
    assert_eq!(value, b"8", "8 increments expected ({retries} retries)");
}

async fn empty_key_rejected(s: Store) {
    assert!(matches!(
        s.put(b"", b"v".to_vec()).await,
        Err(StoreError::InvalidRequest(_))
    ));
    assert!(matches!(
        s.get(b"").await,
        Err(StoreError::InvalidRequest(_))
    ));
}
