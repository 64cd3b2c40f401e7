//! A 3-node replicated cluster in one process: three `Node`s, each with its own real MariaDB
//! engine, an in-process log delivering every entry to all three in order, and followers
//! forwarding writes to the leader over the real HTTP routes. Real clients (mysql_async) write
//! on every node; afterwards the engines hold identical data.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use shared_db::config::ServeArgs;
use shared_db::node::Node;
use shared_db::replication::testing::{InProcessCluster, InProcessProvider};
use shared_db::replication::ReplicationProvider;
use testkit::MariaDb;

fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

async fn start_node(
    db: &MariaDb,
    cluster: &Arc<InProcessCluster>,
    id: u64,
    dir: &std::path::Path,
) -> Node {
    let args = ServeArgs {
        data_dir: Some(dir.join(format!("node{id}"))),
        engine: Some(format!("127.0.0.1:{}", db.port())),
        db_user: Some("root".into()),
        db_init_pass: Some(db.password().into()),
        port: Some(0),
        ui_port: Some(0),
        bind: Some("127.0.0.1".parse().unwrap()),
        ..Default::default()
    };
    let config = args.resolve().unwrap();
    let provider: Box<dyn ReplicationProvider> = Box::new(InProcessProvider {
        cluster: Arc::clone(cluster),
        node_id: id,
    });
    Node::start_with(config, Some(provider)).await.unwrap()
}

async fn client(node: &Node, password: &str) -> Conn {
    let url = format!(
        "mysql://root:{password}@{}/?prefer_socket=false",
        node.mysql_addr
    );
    Conn::new(Opts::from_url(&url).unwrap()).await.unwrap()
}

async fn engine_conn(db: &MariaDb) -> Conn {
    let url = format!("mysql://root:{}@127.0.0.1:{}/", db.password(), db.port());
    Conn::new(Opts::from_url(&url).unwrap()).await.unwrap()
}

fn server_error(e: mysql_async::Error) -> (u16, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Waits until the in-process log has handed every entry so far to every member. A write is
/// answered once the leader's applier has its entry, before the leader's `XA COMMIT` ends and
/// before members later in the delivery order have applied it; engines read directly (not
/// through a session's read fence) are compared after this.
async fn settled(cluster: &InProcessCluster) {
    cluster.entries().await;
}

async fn checksums(db: &MariaDb, tables: &str) -> Vec<(String, Option<i64>)> {
    let mut c = engine_conn(db).await;
    let rows: Vec<(String, Option<i64>)> =
        c.query(format!("CHECKSUM TABLE {tables}")).await.unwrap();
    c.disconnect().await.unwrap();
    rows
}

/// `mariadb-dump` of the `app` database, without the AUTO_INCREMENT table option.
fn dump(db: &MariaDb) -> String {
    let out = std::process::Command::new("mariadb-dump")
        .args([
            "--host=127.0.0.1",
            &format!("--port={}", db.port()),
            "--protocol=TCP",
            "--user=root",
            "--skip-dump-date",
            "--skip-comments",
            "--hex-blob",
            "--triggers",
            "--databases",
            "app",
        ])
        .env("MYSQL_PWD", db.password())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| match l.find(" AUTO_INCREMENT=") {
            Some(at) => {
                let rest = &l[at + 16..];
                let end = rest.find(' ').unwrap_or(rest.len());
                format!("{}{}", &l[..at], &rest[end..])
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs an autocommit statement again while the engine picks it as a deadlock victim (1213),
/// which concurrent writers cause on any InnoDB.
async fn retry_deadlocks(c: &mut Conn, sql: &str) {
    let mut tries = 0;
    while let Err(e) = c.query_drop(sql).await {
        tries += 1;
        assert!(tries < 10, "{e}");
        assert_eq!(server_error(e).0, 1213);
    }
}

/// See `writer`: four rows for `id` in one transaction, with a failing statement inside.
async fn batched_transaction(c: &mut Conn, id: u32) -> Result<(), mysql_async::Error> {
    c.query_drop("BEGIN").await?;
    c.query_drop(format!(
        "INSERT INTO app.t (node, v, u) VALUES ({id}, 200, 'a;b#c--d/*e')"
    ))
    .await?;
    match c
        .query_drop(format!(
            "INSERT INTO app.t (id, node, v) VALUES (LAST_INSERT_ID(), {id}, 201)"
        ))
        .await
    {
        Err(mysql_async::Error::Server(e)) if e.code == 1062 => {}
        Err(e) => return Err(e),
        Ok(()) => panic!("a duplicate key was accepted"),
    }
    c.query_drop("UPDATE app.t SET v = v + 0.5 WHERE id = LAST_INSERT_ID() -- trailing")
        .await?;
    assert_eq!(c.affected_rows(), 1);
    c.query_drop(format!(
        "INSERT INTO app.t (node, v) VALUES ({id}, 202) # hash comment"
    ))
    .await?;
    c.query_drop(format!("INSERT INTO app.t (node, v) VALUES ({id}, 203);"))
        .await?;
    c.query_drop(format!("INSERT INTO app.t (node, v) VALUES ({id}, 204)"))
        .await?;
    c.query_drop("COMMIT").await
}

async fn writer(node: &Node, pw: String, id: u32) -> u64 {
    let mut c = client(node, &pw).await;
    let mut mine = 0u64;
    for i in 0..8 {
        if let Err(e) = c
            .query_drop(format!(
                "INSERT INTO app.t (node, v, u) VALUES ({id}, RAND(), UUID())"
            ))
            .await
        {
            panic!("writer {id}: {e}");
        }
        assert!(
            c.last_insert_id().unwrap_or(0) > 0,
            "last insert id relayed"
        );
        c.query_drop(format!(
            "INSERT INTO app.t (node, v) VALUES ({id}, RAND()), ({id}, RAND(7))"
        ))
        .await
        .unwrap();
        assert_eq!(c.affected_rows(), 2);
        c.query_drop(format!("SET @x = {i} * 10 + {id}"))
            .await
            .unwrap();
        c.query_drop(format!(
            "INSERT INTO app.t (node, v) VALUES ({id}, @x + 0.5)"
        ))
        .await
        .unwrap();
        mine += 4;
        // Read-your-writes on this node, right away.
        let n: Option<u64> = c
            .query_first(format!("SELECT COUNT(*) FROM app.t WHERE node = {id}"))
            .await
            .unwrap();
        assert_eq!(n, Some(mine), "node {id} reads its own writes");
        retry_deadlocks(
            &mut c,
            &format!("UPDATE app.t SET n = n + 1 WHERE node = {id} ORDER BY id"),
        )
        .await;
        assert_eq!(c.affected_rows(), mine);
        // An explicit transaction that rolls back, and one that commits (with a read inside).
        c.query_drop("BEGIN").await.unwrap();
        c.query_drop(format!("INSERT INTO app.t (node, v) VALUES ({id}, -1)"))
            .await
            .unwrap();
        c.query_drop("ROLLBACK").await.unwrap();
        c.query_drop("START TRANSACTION").await.unwrap();
        c.query_drop(format!(
            "INSERT INTO app.t (node, v) VALUES ({id}, NOW() + 0)"
        ))
        .await
        .unwrap();
        let inside: Option<u64> = c
            .query_first(format!("SELECT COUNT(*) FROM app.t WHERE node = {id}"))
            .await
            .unwrap();
        assert_eq!(
            inside,
            Some(mine + 1),
            "reads inside a transaction see its writes"
        );
        let prepared: Option<u64> = c
            .exec_first("SELECT COUNT(*) FROM app.t WHERE node = ?", (id,))
            .await
            .unwrap();
        assert_eq!(prepared, Some(mine + 1), "prepared reads too");
        let updated = c
            .query_drop(format!(
                "UPDATE app.t SET v = v + 1 WHERE node = {id} AND v < 0 ORDER BY id"
            ))
            .await;
        match updated {
            Ok(()) => {
                c.query_drop("COMMIT").await.unwrap();
                mine += 1;
            }
            Err(e) => {
                // A deadlock rolled the transaction back.
                assert_eq!(server_error(e).0, 1213);
                let _ = c.query_drop("ROLLBACK").await;
            }
        }
    }
    // Prepared statements that write run as text on the leader.
    c.exec_drop(
        "INSERT INTO app.t (node, v, u) VALUES (?, ?, ?)",
        (id, 2.25f64, "it's \\ prepared"),
    )
    .await
    .unwrap();
    assert_eq!(c.affected_rows(), 1);
    mine += 1;
    let u: Option<String> = c
        .exec_first(
            "SELECT u FROM app.t WHERE node = ? AND v = ?",
            (id, 2.25f64),
        )
        .await
        .unwrap();
    assert_eq!(u.as_deref(), Some("it's \\ prepared"));
    // Savepoints inside a transaction replicate as statements.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!("INSERT INTO app.t (node, v) VALUES ({id}, 100)"))
        .await
        .unwrap();
    c.query_drop("SAVEPOINT s1").await.unwrap();
    c.query_drop(format!("INSERT INTO app.t (node, v) VALUES ({id}, 101)"))
        .await
        .unwrap();
    c.query_drop("ROLLBACK TO SAVEPOINT s1").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    mine += 1;
    // A transaction the followers apply in batches: text that looks like a separator or a
    // comment, a failing statement in the middle (the same error everywhere), statements
    // ending in comments. Retried whole if the engine picks it as a deadlock victim.
    let mut tries = 0;
    while let Err(e) = batched_transaction(&mut c, id).await {
        tries += 1;
        assert!(tries < 10, "{e}");
        assert_eq!(server_error(e).0, 1213);
        let _ = c.query_drop("ROLLBACK").await;
    }
    mine += 4;
    // A multi-statement packet that writes: each statement runs where it would alone, with
    // one result each, and the first error ends it.
    let mut results = c
        .query_iter(format!(
            "SET @m = {id}; INSERT INTO app.t (node, v) VALUES ({id}, @m + 0.25); \
             SELECT COUNT(*) FROM app.t WHERE node = {id}; \
             INSERT INTO app.t (node, v) VALUES ({id}, 300)"
        ))
        .await
        .unwrap();
    let mut sets = Vec::new();
    while !results.is_empty() {
        let rows: Vec<u64> = results.collect().await.unwrap();
        sets.push(rows);
    }
    // (mysql_async stops listing results after the last one with rows; the row the last
    // INSERT wrote is checked below.)
    let counted: Vec<u64> = sets.into_iter().flatten().collect();
    assert_eq!(counted, vec![mine + 1]);
    mine += 2;
    let stopped = c
        .query_drop(format!(
            "INSERT INTO app.t (node, v) VALUES ({id}, 301); \
             INSERT INTO app.t (id, node, v) VALUES (LAST_INSERT_ID(), {id}, 302); \
             INSERT INTO app.t (node, v) VALUES ({id}, 303)"
        ))
        .await
        .unwrap_err();
    assert_eq!(server_error(stopped).0, 1062);
    mine += 1;
    let after: Vec<f64> = c
        .query(format!(
            "SELECT v FROM app.t WHERE node = {id} AND v BETWEEN 300 AND 303 ORDER BY v"
        ))
        .await
        .unwrap();
    assert_eq!(
        after,
        vec![300.0, 301.0],
        "every statement ran up to the failed one, none after it"
    );
    // CONNECTION_ID() is the leader session's on every node.
    c.query_drop(format!(
        "INSERT INTO app.t (node, v, u) VALUES ({id}, CONNECTION_ID(), 'cid')"
    ))
    .await
    .unwrap();
    mine += 1;
    // Temporary tables live on the session (leader shadow and per-origin appliers).
    c.query_drop("CREATE TEMPORARY TABLE app.tmp (a INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO app.tmp VALUES (1), (2), (3)")
        .await
        .unwrap();
    retry_deadlocks(
        &mut c,
        &format!("INSERT INTO app.t (node, v) SELECT {id}, a FROM app.tmp ORDER BY a"),
    )
    .await;
    mine += 3;
    c.disconnect().await.unwrap();
    mine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_with_writers_on_every_node() {
    init_log();
    let dbs: Vec<MariaDb> = (0..3).map(|_| MariaDb::start().unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    let cluster = InProcessCluster::new();
    let mut nodes = Vec::new();
    for (i, db) in dbs.iter().enumerate() {
        nodes.push(start_node(db, &cluster, i as u64 + 1, dir.path()).await);
    }
    let repl = |n: &Node| n.state.frontend.replication.get().cloned().unwrap();
    let pw = dbs[0].password().to_string();

    // DDL from a follower: forwarded, proposed, run by every node.
    let mut c2 = client(&nodes[1], &pw).await;
    c2.query_drop("CREATE DATABASE app").await.unwrap();
    c2.query_drop(
        "CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, node INT NOT NULL, v DOUBLE, \
         u VARCHAR(36), n INT NOT NULL DEFAULT 0, KEY (node), \
         ts TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
    )
    .await
    .unwrap();
    c2.query_drop("CREATE TABLE app.audit (tid INT PRIMARY KEY, at DATETIME(6))")
        .await
        .unwrap();
    c2.query_drop(
        "CREATE TRIGGER app.tr AFTER INSERT ON app.t FOR EACH ROW \
         INSERT INTO app.audit (tid, at) VALUES (NEW.id, NOW(6))",
    )
    .await
    .unwrap();
    let (code, _) = server_error(
        c2.query_drop("CREATE TABLE app.t (a INT)")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 1050, "the engine's own error comes back for DDL");

    // Concurrent writers on all three nodes.
    let started = std::time::Instant::now();
    let (a, b, c) = tokio::join!(
        writer(&nodes[0], pw.clone(), 1),
        writer(&nodes[1], pw.clone(), 2),
        writer(&nodes[2], pw.clone(), 3)
    );
    eprintln!("3 writers took {:?}", started.elapsed());

    // Read-your-writes across nodes in one session: write on node 2, read on node 3's
    // session after its own write (the fence is per session, each node's read waits).
    let mut c3 = client(&nodes[2], &pw).await;
    c2.query_drop("INSERT INTO app.t (node, v) VALUES (9, 1)")
        .await
        .unwrap();
    c3.query_drop("INSERT INTO app.t (node, v) VALUES (9, 2)")
        .await
        .unwrap();
    let n9: Option<u64> = c3
        .query_first("SELECT COUNT(*) FROM app.t WHERE node = 9")
        .await
        .unwrap();
    assert_eq!(n9, Some(2));

    // Leader read by comment hint.
    let on_leader: Option<u64> = c3
        .query_first("/* shared-db: leader */ SELECT COUNT(*) FROM app.t")
        .await
        .unwrap();
    assert_eq!(on_leader, Some(a + b + c + 2));

    // Refusals name the reason.
    let (code, msg) = server_error(
        c3.query_drop("INSERT INTO app.t (node, u) VALUES (1, LOAD_FILE('/etc/passwd'))")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 1235);
    assert!(msg.contains("LOAD_FILE"), "{msg}");
    let (code, msg) = server_error(
        c3.query_drop("DELETE FROM app.t LIMIT 1")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 1235);
    assert!(msg.contains("LIMIT"), "{msg}");

    // Every engine holds the same data.
    settled(&cluster).await;
    let first = checksums(&dbs[0], "app.t, app.audit").await;
    assert_eq!(first.len(), 2);
    for db in &dbs[1..] {
        assert_eq!(checksums(db, "app.t, app.audit").await, first);
    }
    let mut e = engine_conn(&dbs[2]).await;
    let total: Option<u64> = e.query_first("SELECT COUNT(*) FROM app.t").await.unwrap();
    assert_eq!(total, Some(a + b + c + 2));
    let audit: Option<u64> = e
        .query_first("SELECT COUNT(*) FROM app.audit")
        .await
        .unwrap();
    assert_eq!(audit, total);

    // A full dump of the user data is identical too (the AUTO_INCREMENT counter aside: rolled
    // back inserts advance it on the leader only, as with MariaDB's own replication).
    let first_dump = dump(&dbs[0]);
    assert!(first_dump.contains("INSERT INTO `t`"), "{first_dump}");
    for db in &dbs[1..] {
        assert_eq!(dump(db), first_dump);
    }

    // A node that misses entries (down) catches up from the log.
    cluster.pause(3);
    c2.query_drop("INSERT INTO app.t (node, v) VALUES (12, 1), (12, 2)")
        .await
        .unwrap();
    c2.query_drop("UPDATE app.t SET n = n + 1 WHERE node = 12 ORDER BY id")
        .await
        .unwrap();
    settled(&cluster).await;
    assert_ne!(
        checksums(&dbs[2], "app.t").await,
        checksums(&dbs[0], "app.t").await
    );
    cluster.resume(3).await.unwrap();
    assert_eq!(
        checksums(&dbs[2], "app.t").await,
        checksums(&dbs[0], "app.t").await
    );

    // The leader changes (a new term): node 2 leads, proposes its barrier, and writes from
    // every node go there; node 1 ended its shadow sessions.
    let mut c1 = client(&nodes[0], &pw).await;
    c1.query_drop("BEGIN").await.unwrap();
    c1.query_drop("INSERT INTO app.t (node, v) VALUES (11, 1)")
        .await
        .unwrap();
    cluster.set_leader(2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while repl(&nodes[1]).status_json()["role"] != "leader"
        || repl(&nodes[0]).executor.shadow_count() > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "leader change not seen"
        );
        tick.tick().await;
    }
    let (code, _) = server_error(c1.query_drop("COMMIT").await.unwrap_err());
    assert_eq!(
        code, 1180,
        "a transaction open on the old leader is lost, with an error"
    );
    c1.query_drop("INSERT INTO app.t (node, v) VALUES (11, 2)")
        .await
        .unwrap();
    c3.query_drop("INSERT INTO app.t (node, v) VALUES (11, 3)")
        .await
        .unwrap();
    let n11: Option<u64> = c3
        .query_first("SELECT COUNT(*) FROM app.t WHERE node = 11")
        .await
        .unwrap();
    assert_eq!(n11, Some(2));
    settled(&cluster).await;
    let first = checksums(&dbs[0], "app.t, app.audit").await;
    for db in &dbs[1..] {
        assert_eq!(checksums(db, "app.t, app.audit").await, first);
    }

    // Divergence: a follower whose data was changed behind the cluster's back.
    e.query_drop("DELETE FROM app.t WHERE node = 9")
        .await
        .unwrap();
    c2.query_drop("UPDATE app.t SET n = n + 1 WHERE node = 9 ORDER BY id")
        .await
        .unwrap();
    assert_eq!(c2.affected_rows(), 2, "the leader's answer");
    settled(&cluster).await;
    let status = repl(&nodes[2]).status_json();
    assert_eq!(status["diverged"], true, "{status}");
    // The diverging entry was rolled back there, not committed with its position.
    let update_index = repl(&nodes[1]).status_json()["applied_index"]
        .as_u64()
        .unwrap();
    let recorded: Option<u64> = e
        .query_first("SELECT log_index FROM flux_meta.position")
        .await
        .unwrap();
    assert!(
        recorded.is_some_and(|r| r < update_index),
        "position {recorded:?} on the diverged node, entry {update_index}"
    );
    let (code, msg) = server_error(c3.query_drop("SELECT 1").await.unwrap_err());
    assert_eq!(code, 1105);
    assert!(msg.contains("diverged"), "{msg}");
    assert_eq!(repl(&nodes[1]).status_json()["diverged"], false);
    // The others go on.
    c2.query_drop("INSERT INTO app.t (node, v) VALUES (10, 1)")
        .await
        .unwrap();
    settled(&cluster).await;
    assert_eq!(
        checksums(&dbs[0], "app.t").await,
        checksums(&dbs[1], "app.t").await
    );

    // A DDL whose outcome on a follower differs from the leader's (the table already exists
    // there) is detected too.
    let mut e1 = engine_conn(&dbs[0]).await;
    e1.query_drop("CREATE TABLE app.extra (a INT)")
        .await
        .unwrap();
    c2.query_drop("CREATE TABLE app.extra (a INT)")
        .await
        .unwrap();
    settled(&cluster).await;
    assert_eq!(repl(&nodes[0]).status_json()["diverged"], true);
    assert_eq!(repl(&nodes[1]).status_json()["diverged"], false);
    drop(c1);

    drop(c2);
    drop(c3);
    for n in nodes {
        n.shutdown().await;
    }
}
