//! `RedbStore`: the conformance suite on a temp file, plus persistence across reopen.

mod common;

use std::sync::Arc;

use fluxon_fs::store::{RedbStore, StateStore, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_conformance() {
    let dir = tempfile::tempdir().unwrap();
    common::conformance(|name| {
        let path = dir.path().join(format!("{name}.redb"));
        async move { Arc::new(RedbStore::open(path).await.unwrap()) as common::Store }
    })
    .await;
}

#[tokio::test]
async fn redb_persists_values_and_versions_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/state.redb");
    let store = RedbStore::open(&path).await.unwrap();
    let v1 = store.put(b"job/1", b"queued".to_vec()).await.unwrap();
    let v2 = store.put(b"job/2", b"queued".to_vec()).await.unwrap();
    assert!(store.delete(b"job/2").await.unwrap());
    drop(store);

    let store = RedbStore::open(&path).await.unwrap();
    let got = store.get(b"job/1").await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.version), (&b"queued"[..], v1));
    assert_eq!(store.get(b"job/2").await.unwrap(), None);
    let v3 = store.put(b"job/3", b"queued".to_vec()).await.unwrap();
    assert!(
        v3 > v2 + 1,
        "the delete took a version too: v2={v2} v3={v3}"
    );
}

#[tokio::test]
async fn redb_second_open_of_same_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let _first = RedbStore::open(&path).await.unwrap();
    let err = RedbStore::open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("already has it open"), "{err}");
}
