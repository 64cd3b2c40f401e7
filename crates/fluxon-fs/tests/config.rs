//! `StoreConfig` parsing and `open_store`.

use std::time::Duration;

use fluxon_fs::store::{open_store, EtcdConfig, StoreConfig, StoreError, TikvConfig};

fn parse(yaml: &str) -> Result<StoreConfig, String> {
    serde_yaml::from_str(yaml).map_err(|e| e.to_string())
}

#[test]
fn parses_redb() {
    let config = parse("kind: redb\nredb:\n  path: /var/lib/fluxon/state.redb\n").unwrap();
    let StoreConfig::Redb(redb) = config else {
        panic!("expected redb");
    };
    assert_eq!(
        redb.path,
        std::path::PathBuf::from("/var/lib/fluxon/state.redb")
    );
}

#[test]
fn parses_etcd_with_default_timeout() {
    let yaml =
        "kind: etcd\netcd:\n  endpoints: [\"http://10.0.0.1:2379\"]\n  namespace: /fluxon/\n";
    let expected = EtcdConfig {
        endpoints: vec!["http://10.0.0.1:2379".into()],
        namespace: "/fluxon/".into(),
        timeout_ms: 5000,
    };
    assert_eq!(parse(yaml).unwrap(), StoreConfig::Etcd(expected));
    let yaml = "kind: etcd\netcd:\n  endpoints: [a]\n  timeout_ms: 250\n";
    let StoreConfig::Etcd(etcd) = parse(yaml).unwrap() else {
        panic!("expected etcd");
    };
    assert_eq!(etcd.timeout(), Duration::from_millis(250));
}

#[test]
fn parses_seed_tikv_shape() {
    let yaml = "kind: tikv\ntikv:\n  pd_endpoints:\n  - \"127.0.0.1:12379\"\n  key_prefix: \"/fluxon_fs_transfer/demo-fs-cluster/\"\n";
    let expected = TikvConfig {
        pd_endpoints: vec!["127.0.0.1:12379".into()],
        namespace: "/fluxon_fs_transfer/demo-fs-cluster/".into(),
    };
    assert_eq!(parse(yaml).unwrap(), StoreConfig::Tikv(expected));
    let json = r#"{"kind":"tikv","tikv":{"pd_endpoints":["pd:2379"],"namespace":"/n/"}}"#;
    assert!(serde_json::from_str::<StoreConfig>(json).is_ok());
}

#[test]
fn unknown_keys_are_named() {
    let err = parse("kind: redb\nredb:\n  path: /x\n  paht: /y\n").unwrap_err();
    assert!(err.contains("unknown field `paht`"), "{err}");
    let err = parse("kind: redb\nredb:\n  path: /x\nextra: 1\n").unwrap_err();
    assert!(err.contains("unknown field `extra`"), "{err}");
    let err = parse("kind: tikv\ntikv:\n  pd_endpoints: []\n  pd_endpoint: x\n").unwrap_err();
    assert!(err.contains("unknown field `pd_endpoint`"), "{err}");
    let err = parse("kind: mysql\n").unwrap_err();
    assert!(err.contains("mysql"), "{err}");
}

#[test]
fn kind_and_section_must_match() {
    let err = parse("kind: etcd\nredb:\n  path: /x\n").unwrap_err();
    assert!(err.contains("`redb` section is present"), "{err}");
    let err = parse("kind: etcd\n").unwrap_err();
    assert!(err.contains("`etcd` section is missing"), "{err}");
}

#[cfg(not(feature = "tikv"))]
#[tokio::test]
async fn tikv_is_not_built_in() {
    let config = parse("kind: tikv\ntikv:\n  pd_endpoints: [\"127.0.0.1:12379\"]\n").unwrap();
    let err = open_store(&config).await.err().unwrap();
    assert!(
        matches!(err, StoreError::NotBuiltIn { kind: "tikv" }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the tikv state store is not built into this binary; use kind: etcd or redb"
    );
}

#[cfg(feature = "tikv")]
#[tokio::test]
async fn tikv_feature_still_has_no_backend() {
    let config = parse("kind: tikv\ntikv:\n  pd_endpoints: [\"127.0.0.1:12379\"]\n").unwrap();
    let err = open_store(&config).await.err().unwrap();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn open_store_opens_redb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let config = StoreConfig::Redb(fluxon_fs::store::RedbConfig { path });
    let store = open_store(&config).await.unwrap();
    let version = store.put(b"k", b"v".to_vec()).await.unwrap();
    assert_eq!(store.get(b"k").await.unwrap().unwrap().version, version);
}
