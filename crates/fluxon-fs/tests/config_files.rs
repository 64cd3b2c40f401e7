//! Config files: the seed's YAML shapes parse, unknown keys and bad values are errors that name
//! the key (and line), passwords stay out of `Debug`, and a full example round-trips.

use std::path::PathBuf;

use fluxon_fs::config::{
    AccessMode, AgentConfig, CacheConfig, ClientMasterConfig, ConfigError, ConfigFile,
    MasterConfig, Secret,
};
use fluxon_fs::store::StoreConfig;

/// The seed's master shape: bootstrap model and TiKV transfer store, plus one export, and the
/// agent join secret this product requires on top of the seed.
const MASTER_YAML: &str = r#"fluxon_fs:
  master:
    instance_key: demo_fs_master
    pull_interval_ms: 1000
    agent_join_secret_file: /path/to/agent_join_secret
  master_panel:
    listen_addr: 0.0.0.0:34180
    public_base_url: http://127.0.0.1:34180
    access_db_path: /path/to/access.db
    bootstrap_access_model:
      users:
        - username: admin
          password: admin
          can_manage_users: true
      scope_access: []
    transfer_state_store:
      kind: tikv
      tikv:
        pd_endpoints:
          - "127.0.0.1:12379"
        key_prefix: "/fluxon_fs_transfer/demo-fs-cluster/"
  cache:
    exports:
      demo-export:
        remote_root_dir_abs: /tmp/fluxon_fs_demo/remote_root
"#;

/// Every optional key set.
const FULL_MASTER_YAML: &str = r#"fluxon_fs:
  master:
    instance_key: demo_fs_master
    pull_interval_ms: 500
    agent_join_secret: full-example-join-secret
  master_panel:
    listen_addr: "[::1]:34180"
    public_base_url: https://fs.example.org
    prometheus_base_url: http://greptime:4000/v1/prometheus
    auto_refresh_interval_secs: 2
    access_db_path: fs_master/access.db
    bootstrap_access_model:
      users:
        - username: admin
          password: s3cret-admin
          can_manage_users: true
        - username: alice
          password: alice-pw
      scope_access:
        - export_name: demo-export
          prefix: docs/
          mode: read
          usernames: [alice]
        - export_name: demo-export
          prefix: ""
          mode: read_write
          usernames: [alice, admin]
    transfer_state_store:
      kind: etcd
      etcd:
        endpoints: ["http://127.0.0.1:2379"]
        namespace: /fluxon_fs_transfer/
        timeout_ms: 3000
  cache:
    stale_window_ms: 1000
    write_session_target_inflight_bytes: 134217728
    exports:
      demo-export:
        remote_root_dir_abs: /srv/demo
        nodes: [demo_fs_agent, demo_fs_agent_2]
        cache_max_bytes: 1073741824
        inline_bytes_max_bytes: 1048576
        metadata_cache_ttl_ms: 5000
      other:
        remote_root_dir_abs: /srv/other
"#;

const AGENT_YAML: &str = r#"fluxon_fs:
  master:
    instance_key: demo_fs_master
  agent:
    instance_key: demo_fs_agent
    listen_addr: 0.0.0.0:34190
    advertise_addr: agent-host:34190
    master_addr: 127.0.0.1:34180
    join_secret_file: /path/to/agent_join_secret
  cache:
    exports:
      demo-export:
        remote_root_dir_abs: /tmp/fluxon_fs_demo/remote_root
"#;

fn master_err(yaml: &str) -> String {
    match MasterConfig::from_yaml_str(yaml, "master.yaml") {
        Ok(config) => panic!("expected an error, parsed {config:?}"),
        Err(err) => err.to_string(),
    }
}

fn invalid_master(from: &str, to: &str) -> String {
    assert!(MASTER_YAML.contains(from), "fixture lacks {from:?}");
    master_err(&MASTER_YAML.replacen(from, to, 1))
}

#[test]
fn seed_master_example_parses() {
    let config = MasterConfig::from_yaml_str(MASTER_YAML, "master.yaml").unwrap();
    let fs = &config.fluxon_fs;
    assert_eq!(fs.master.instance_key, "demo_fs_master");
    assert_eq!(
        fs.master_panel.access_db_path,
        PathBuf::from("/path/to/access.db")
    );
    let users = &fs.master_panel.bootstrap_access_model.users;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].username, "admin");
    assert_eq!(users[0].password.expose(), "admin");
    assert!(users[0].can_manage_users);
    let Some(StoreConfig::Tikv(tikv)) = &fs.master_panel.transfer_state_store else {
        panic!("expected tikv store");
    };
    assert_eq!(tikv.pd_endpoints, vec!["127.0.0.1:12379".to_string()]);
    assert_eq!(tikv.namespace, "/fluxon_fs_transfer/demo-fs-cluster/");
    let export = &fs.cache.exports["demo-export"];
    assert_eq!(
        export.remote_root_dir_abs,
        PathBuf::from("/tmp/fluxon_fs_demo/remote_root")
    );
    assert_eq!(export.nodes, None);
}

#[test]
fn full_master_example_parses_scopes() {
    let config = MasterConfig::from_yaml_str(FULL_MASTER_YAML, "full.yaml").unwrap();
    let scopes = &config
        .fluxon_fs
        .master_panel
        .bootstrap_access_model
        .scope_access;
    assert_eq!(scopes[0].mode, AccessMode::Read);
    assert_eq!(scopes[0].prefix, "docs/");
    assert_eq!(scopes[1].mode, AccessMode::ReadWrite);
    assert!(!config.fluxon_fs.master_panel.bootstrap_access_model.users[1].can_manage_users);
}

#[test]
fn full_master_example_round_trips() {
    let config = MasterConfig::from_yaml_str(FULL_MASTER_YAML, "full.yaml").unwrap();
    let text = serde_yaml::to_string(&config).unwrap();
    let again = MasterConfig::from_yaml_str(&text, "written.yaml").unwrap();
    assert_eq!(config, again);
    let seed = MasterConfig::from_yaml_str(MASTER_YAML, "master.yaml").unwrap();
    let text = serde_yaml::to_string(&seed).unwrap();
    assert!(text.contains("key_prefix: /fluxon_fs_transfer/demo-fs-cluster/"));
    assert_eq!(
        seed,
        MasterConfig::from_yaml_str(&text, "written.yaml").unwrap()
    );
}

#[test]
fn agent_example_parses_and_round_trips() {
    let config = AgentConfig::from_yaml_str(AGENT_YAML, "agent.yaml").unwrap();
    assert_eq!(config.fluxon_fs.agent.instance_key, "demo_fs_agent");
    assert_eq!(config.fluxon_fs.agent.data_addr(), "agent-host:34190");
    assert_eq!(config.fluxon_fs.master.pull_interval_ms, None);
    let text = serde_yaml::to_string(&config).unwrap();
    assert_eq!(
        config,
        AgentConfig::from_yaml_str(&text, "again.yaml").unwrap()
    );
}

#[test]
fn agent_addresses_are_checked() {
    let yaml = AGENT_YAML.replacen("    advertise_addr: agent-host:34190\n", "", 1);
    let err = AgentConfig::from_yaml_str(&yaml, "agent.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("fluxon_fs.agent.advertise_addr"), "{err}");
    let yaml = AGENT_YAML.replacen("127.0.0.1:34180", "nowhere", 1);
    let err = AgentConfig::from_yaml_str(&yaml, "agent.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fluxon_fs.agent.master_addr must be host:port"),
        "{err}"
    );
}

#[test]
fn client_strings_parse() {
    let master = ClientMasterConfig::from_yaml_str(
        "fluxon_fs:\n  master:\n    instance_key: demo_fs_master\n",
        "set_master_config_yaml",
    )
    .unwrap();
    assert_eq!(master.fluxon_fs.master.instance_key, "demo_fs_master");
    let cache = CacheConfig::from_yaml_str(
        "fluxon_fs:\n  cache:\n    exports:\n      e:\n        remote_root_dir_abs: /r\n",
        "set_cache_config_yaml",
    )
    .unwrap();
    assert_eq!(
        cache.fluxon_fs.cache.exports["e"].remote_root_dir_abs,
        PathBuf::from("/r")
    );
}

#[test]
fn client_master_string_rejects_panel_keys() {
    let err = ClientMasterConfig::from_yaml_str(
        "fluxon_fs:\n  master:\n    instance_key: m\n  master_panel: {}\n",
        "set_master_config_yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `master_panel`"), "{err}");
}

#[test]
fn unknown_top_level_key_names_key_and_line() {
    let yaml = format!("{MASTER_YAML}kvclient:\n  instance_key: x\n");
    let err = MasterConfig::from_yaml_str(&yaml, "master.yaml").unwrap_err();
    let expected_line = MASTER_YAML.lines().count() + 1;
    let text = err.to_string();
    assert!(text.starts_with("master.yaml: "), "{text}");
    assert!(text.contains("unknown field `kvclient`"), "{text}");
    assert!(
        text.contains(&format!("at line {expected_line} column 1")),
        "{text}"
    );
    let ConfigError::Parse { line, column, .. } = err else {
        panic!("expected parse error");
    };
    assert_eq!((line, column), (Some(expected_line), Some(1)));
}

#[test]
fn unknown_nested_key_names_key_path_and_line() {
    let err = invalid_master("    instance_key: demo", "    instnce_key: demo");
    assert!(err.contains("unknown field `instnce_key`"), "{err}");
    assert!(err.contains("expected"), "{err}");
    assert!(err.contains("fluxon_fs.master"), "{err}");
    assert!(err.contains("line 3 column 5"), "{err}");
}

#[test]
fn unknown_key_deep_in_export_is_rejected() {
    let err = invalid_master(
        "remote_root_dir_abs: /tmp",
        "rpc_timeout_ms: 5\n        remote_root_dir_abs: /tmp",
    );
    assert!(err.contains("unknown field `rpc_timeout_ms`"), "{err}");
    assert!(err.contains("demo-export"), "{err}");
}

#[test]
fn unknown_key_in_user_and_store_is_rejected() {
    let err = invalid_master(
        "can_manage_users: true",
        "can_manage_users: true\n          role: x",
    );
    assert!(err.contains("unknown field `role`"), "{err}");
    let err = invalid_master("key_prefix:", "bogus: 1\n        key_prefix:");
    assert!(err.contains("unknown field `bogus`"), "{err}");
}

#[test]
fn unknown_access_mode_is_rejected() {
    let yaml = FULL_MASTER_YAML.replacen("mode: read\n", "mode: write\n", 1);
    let err = MasterConfig::from_yaml_str(&yaml, "m.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `write`"), "{err}");
    assert!(err.contains("read_write"), "{err}");
}

#[test]
fn missing_required_key_is_named() {
    let err = invalid_master("    access_db_path: /path/to/access.db\n", "");
    assert!(err.contains("missing field `access_db_path`"), "{err}");
}

#[test]
fn relative_remote_root_is_rejected() {
    let err = invalid_master("remote_root_dir_abs: /tmp/", "remote_root_dir_abs: tmp/");
    assert!(
        err.contains(
            "fluxon_fs.cache.exports.demo-export.remote_root_dir_abs must be an absolute path"
        ),
        "{err}"
    );
}

#[test]
fn unsafe_export_names_are_rejected() {
    for bad in ["\"a/b\"", "\"..\"", "\".\"", "\"\"", "\"a b\""] {
        let err = invalid_master("      demo-export:", &format!("      {bad}:"));
        assert!(err.contains("fluxon_fs.cache.exports."), "{bad}: {err}");
        assert!(err.contains("must"), "{bad}: {err}");
    }
}

#[test]
fn bad_listen_addr_and_urls_are_rejected() {
    let err = invalid_master("0.0.0.0:34180", "0.0.0.0");
    assert!(
        err.contains("fluxon_fs.master_panel.listen_addr must be host:port"),
        "{err}"
    );
    let err = invalid_master("0.0.0.0:34180", "localhost:99999");
    assert!(err.contains("listen_addr"), "{err}");
    let err = invalid_master("http://127.0.0.1:34180", "127.0.0.1:34180");
    assert!(
        err.contains("fluxon_fs.master_panel.public_base_url must start with http"),
        "{err}"
    );
}

#[test]
fn host_name_listen_addr_is_accepted() {
    let yaml = MASTER_YAML.replacen("0.0.0.0:34180", "localhost:34180", 1);
    MasterConfig::from_yaml_str(&yaml, "m.yaml").unwrap();
}

#[test]
fn bad_instance_key_and_interval_are_rejected() {
    let err = invalid_master("instance_key: demo_fs_master", "instance_key: \"\"");
    assert!(
        err.contains("fluxon_fs.master.instance_key must be non-empty"),
        "{err}"
    );
    let err = invalid_master("pull_interval_ms: 1000", "pull_interval_ms: 0");
    assert!(
        err.contains("fluxon_fs.master.pull_interval_ms must be greater than 0"),
        "{err}"
    );
}

#[test]
fn bad_transfer_store_values_are_rejected() {
    let err = invalid_master(
        "key_prefix: \"/fluxon_fs_transfer/demo-fs-cluster/\"",
        "key_prefix: \"fluxon_fs_transfer\"",
    );
    assert!(
        err.contains("fluxon_fs.master_panel.transfer_state_store.tikv.key_prefix must start and end with `/`"),
        "{err}"
    );
    let err = invalid_master("- \"127.0.0.1:12379\"", "- \"pd\"");
    assert!(
        err.contains("transfer_state_store.tikv.pd_endpoints[0] must be host:port"),
        "{err}"
    );
}

#[test]
fn bootstrap_model_problems_are_named() {
    let err = invalid_master("can_manage_users: true", "can_manage_users: false");
    assert!(
        err.contains("bootstrap_access_model.users must contain at least one user with can_manage_users: true"),
        "{err}"
    );
    let err = invalid_master("username: admin", "username: \"ad:min\"");
    assert!(
        err.contains("bootstrap_access_model.users[0].username must not contain `:`"),
        "{err}"
    );
    let err = invalid_master("password: admin", "password: \"\"");
    assert!(
        err.contains("bootstrap_access_model.users[0].password must be non-empty"),
        "{err}"
    );
}

#[test]
fn bad_scopes_are_named() {
    let yaml = FULL_MASTER_YAML
        .replacen("usernames: [alice]", "usernames: [bob]", 1)
        .replacen("prefix: docs/", "prefix: /docs/", 1)
        .replacen("- username: alice", "- username: admin", 1);
    let err = MasterConfig::from_yaml_str(&yaml, "m.yaml")
        .unwrap_err()
        .to_string();
    let base = "fluxon_fs.master_panel.bootstrap_access_model";
    assert!(
        err.contains(&format!("{base}.users[1].username duplicates `admin`")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{base}.scope_access[0].usernames[0] names unknown user `bob`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{base}.scope_access[0].prefix must be relative")),
        "{err}"
    );
}

#[test]
fn duplicate_scope_is_rejected() {
    let yaml = FULL_MASTER_YAML
        .replacen("mode: read_write", "mode: read", 1)
        .replacen("prefix: \"\"", "prefix: docs/", 1);
    let err = MasterConfig::from_yaml_str(&yaml, "m.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("scope_access[1] duplicates an earlier scope"),
        "{err}"
    );
}

#[test]
fn agent_errors_are_named() {
    let yaml = AGENT_YAML.replacen("demo_fs_agent", "demo_fs_master", 1);
    let err = AgentConfig::from_yaml_str(&yaml, "agent.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fluxon_fs.agent.instance_key must differ"),
        "{err}"
    );
    let yaml = AGENT_YAML.replacen(
        "remote_root_dir_abs: /tmp/fluxon_fs_demo/remote_root",
        "remote_root_dir_abs: /tmp\n        nodes: []",
        1,
    );
    let err = AgentConfig::from_yaml_str(&yaml, "agent.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fluxon_fs.cache.exports.demo-export.nodes must list at least one"),
        "{err}"
    );
}

#[test]
fn all_problems_are_reported_together() {
    let yaml = MASTER_YAML
        .replacen("remote_root_dir_abs: /tmp/", "remote_root_dir_abs: tmp/", 1)
        .replacen("0.0.0.0:34180", "nope", 1);
    let err = MasterConfig::from_yaml_str(&yaml, "m.yaml").unwrap_err();
    let ConfigError::Invalid { errors, .. } = err else {
        panic!("expected validation errors");
    };
    assert_eq!(errors.issues().len(), 2, "{errors}");
}

#[test]
fn passwords_are_redacted_in_debug() {
    let config = MasterConfig::from_yaml_str(FULL_MASTER_YAML, "full.yaml").unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret-admin"), "{debug}");
    assert!(!debug.contains("alice-pw"), "{debug}");
    assert!(debug.contains("Secret(<redacted>)"), "{debug}");
    assert_eq!(format!("{:?}", Secret::new("x")), "Secret(<redacted>)");
}

#[test]
fn validation_messages_do_not_echo_passwords() {
    let err = invalid_master("password: admin", "password: \" hunter2 \"");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("users[0].password"), "{err}");
}

#[test]
fn load_reads_files_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.yaml");
    std::fs::write(&path, MASTER_YAML).unwrap();
    MasterConfig::load(&path).unwrap();
    let agent_path = dir.path().join("agent.yaml");
    std::fs::write(&agent_path, AGENT_YAML.replacen("agent:", "agnet:", 1)).unwrap();
    let err = AgentConfig::load(&agent_path).unwrap_err().to_string();
    assert!(err.starts_with(&agent_path.display().to_string()), "{err}");
    assert!(err.contains("unknown field `agnet`"), "{err}");
    let missing = dir.path().join("missing.yaml");
    let err = MasterConfig::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.yaml"), "{err}");
}

#[test]
fn empty_and_non_mapping_documents_are_errors() {
    assert!(MasterConfig::from_yaml_str("", "m.yaml").is_err());
    assert!(MasterConfig::from_yaml_str("- a\n", "m.yaml").is_err());
    assert!(CacheConfig::from_yaml_str("fluxon_fs: 3\n", "c").is_err());
}

#[test]
fn join_secret_is_required_exclusive_and_long_enough() {
    let without = MASTER_YAML.replacen(
        "    agent_join_secret_file: /path/to/agent_join_secret\n",
        "",
        1,
    );
    let err = master_err(&without);
    assert!(
        err.contains("fluxon_fs.master.agent_join_secret (or fluxon_fs.master.agent_join_secret_file) is required"),
        "{err}"
    );
    let both = MASTER_YAML.replacen(
        "    agent_join_secret_file: /path/to/agent_join_secret\n",
        "    agent_join_secret_file: /s\n    agent_join_secret: 0123456789abcdef\n",
        1,
    );
    assert!(master_err(&both).contains("are exclusive"));
    let short = MASTER_YAML.replacen(
        "    agent_join_secret_file: /path/to/agent_join_secret\n",
        "    agent_join_secret: tooshort-x\n",
        1,
    );
    let err = master_err(&short);
    assert!(
        err.contains("fluxon_fs.master.agent_join_secret must be at least 16 bytes"),
        "{err}"
    );
    assert!(!err.contains("tooshort-x"), "{err}");
    let agent = AGENT_YAML.replacen("    join_secret_file: /path/to/agent_join_secret\n", "", 1);
    let err = AgentConfig::from_yaml_str(&agent, "agent.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "fluxon_fs.agent.join_secret (or fluxon_fs.agent.join_secret_file) is required"
        ),
        "{err}"
    );
    // The master-side key is unknown in the agent's `fluxon_fs.master`.
    let agent = AGENT_YAML.replacen(
        "    instance_key: demo_fs_master\n",
        "    instance_key: demo_fs_master\n    agent_join_secret: 0123456789abcdef\n",
        1,
    );
    let err = AgentConfig::from_yaml_str(&agent, "agent.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `agent_join_secret`"), "{err}");
    let debug = format!(
        "{:?}",
        MasterConfig::from_yaml_str(FULL_MASTER_YAML, "f").unwrap()
    );
    assert!(!debug.contains("full-example-join-secret"), "{debug}");
}
