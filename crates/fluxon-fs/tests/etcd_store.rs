//! `EtcdStore` against a real throwaway etcd: the conformance suite, namespaces, and failures.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxon_fs::store::{EtcdStore, StateStore, StoreError, DEFAULT_TIMEOUT};

async fn connect(etcd: &testkit::Etcd, namespace: &str) -> EtcdStore {
    EtcdStore::connect(&[etcd.endpoint()], namespace, DEFAULT_TIMEOUT)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_conformance() {
    let etcd = testkit::Etcd::start().unwrap();
    common::conformance(|name| {
        let namespace = format!("/conformance/{name}/");
        let etcd = &etcd;
        async move { Arc::new(connect(etcd, &namespace).await) as common::Store }
    })
    .await;
}

#[tokio::test]
async fn etcd_namespaces_isolate_stores() {
    let etcd = testkit::Etcd::start().unwrap();
    let one = connect(&etcd, "/fluxon/one/").await;
    let two = connect(&etcd, "/fluxon/two/").await;
    one.put(b"jobs/a", b"from-one".to_vec()).await.unwrap();
    two.put(b"jobs/a", b"from-two".to_vec()).await.unwrap();
    two.put(b"jobs/b", b"only-two".to_vec()).await.unwrap();
    assert_eq!(
        one.get(b"jobs/a").await.unwrap().unwrap().value,
        b"from-one"
    );
    assert_eq!(
        two.get(b"jobs/a").await.unwrap().unwrap().value,
        b"from-two"
    );
    let listed = one.list_prefix(b"", None, 100).await.unwrap();
    let keys: Vec<_> = listed.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![b"jobs/a"]);
    assert!(one.delete(b"jobs/a").await.unwrap());
    assert!(two.get(b"jobs/a").await.unwrap().is_some());

    let root = connect(&etcd, "").await;
    let everything = root.list_prefix(b"", None, 100).await.unwrap();
    let keys: Vec<_> = everything.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(
        keys,
        vec![&b"/fluxon/two/jobs/a"[..], b"/fluxon/two/jobs/b"]
    );
}

#[tokio::test]
async fn etcd_zero_timeout_is_a_config_error() {
    let endpoints = ["http://127.0.0.1:1".to_string()];
    let err = EtcdStore::connect(&endpoints, "/x/", Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn etcd_unreachable_endpoint_fails_within_timeout() {
    let port = testkit::reserve_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", port.port());
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = EtcdStore::connect(std::slice::from_ref(&endpoint), "/x/", timeout)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed < timeout + Duration::from_secs(1),
        "took {elapsed:?}"
    );
    let StoreError::Unreachable { endpoints, .. } = &err else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert_eq!(endpoints, &endpoint);
    assert!(err.to_string().contains(&endpoint), "{err}");
}

#[tokio::test]
async fn etcd_requests_fail_within_timeout_after_server_dies() {
    let mut etcd = testkit::Etcd::start().unwrap();
    let timeout = Duration::from_secs(2);
    let store = EtcdStore::connect(&[etcd.endpoint()], "/dies/", timeout)
        .await
        .unwrap();
    store.put(b"k", b"v".to_vec()).await.unwrap();
    etcd.kill();
    let started = Instant::now();
    let err = store.get(b"k").await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed < timeout + Duration::from_secs(1),
        "took {elapsed:?}"
    );
    assert!(
        matches!(
            err,
            StoreError::Unreachable { .. } | StoreError::Timeout { .. }
        ),
        "{err:?}"
    );
}
