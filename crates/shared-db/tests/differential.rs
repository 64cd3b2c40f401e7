//! Differential test: the same statements sent straight to one MariaDB and through the operator
//! to an identical fresh MariaDB give identical results, errors, affected rows and warnings.

mod common;

use common::Operator;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use testkit::MariaDb;

/// Everything a client can observe about one statement.
#[derive(Debug, PartialEq)]
enum Observed {
    Ok {
        results: Vec<(Vec<String>, Vec<Vec<mysql_async::Value>>)>,
        affected: u64,
        last_insert_id: Option<u64>,
        warnings: u16,
        info: String,
    },
    Err {
        code: u16,
        state: String,
        message: String,
    },
}

async fn observe(conn: &mut Conn, sql: &str) -> Observed {
    let run = async {
        let mut result = conn.query_iter(sql).await?;
        let mut results = Vec::new();
        loop {
            let columns: Vec<String> = result
                .columns_ref()
                .iter()
                .map(|c| format!("{}:{:?}", c.name_str(), c.column_type()))
                .collect();
            let rows: Vec<mysql_async::Row> = result.collect().await?;
            let rows = rows.into_iter().map(|r| r.unwrap()).collect();
            results.push((columns, rows));
            if result.is_empty() {
                break;
            }
        }
        let affected = result.affected_rows();
        let last_insert_id = result.last_insert_id();
        let warnings = result.warnings();
        let info = result.info().into_owned();
        drop(result);
        Ok::<_, mysql_async::Error>(Observed::Ok {
            results,
            affected,
            last_insert_id,
            warnings,
            info,
        })
    };
    match run.await {
        Ok(o) => o,
        Err(mysql_async::Error::Server(e)) => Observed::Err {
            code: e.code,
            state: e.state,
            message: e.message,
        },
        Err(other) => panic!("`{sql}` failed outside the protocol: {other}"),
    }
}

const CORPUS: &[&str] = &[
    "CREATE DATABASE d1",
    "USE d1",
    "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20) NOT NULL, score DECIMAL(6,2), note TEXT, j JSON, created DATE)",
    "INSERT INTO t (name, score, note, j, created) VALUES ('a', 1.5, NULL, '{\"x\": 1}', '2024-01-01'), ('b', 2.25, 'bee', '[1,2]', '2024-02-29'), ('c', NULL, '', NULL, NULL)",
    "SELECT * FROM t ORDER BY id",
    "SELECT id, name FROM t WHERE id > 100",
    "SELECT COUNT(*), SUM(score), AVG(score), MAX(name) FROM t",
    "SELECT name, JSON_EXTRACT(j, '$.x') FROM t ORDER BY id",
    "UPDATE t SET score = score + 1 WHERE score IS NOT NULL",
    "UPDATE t SET score = score WHERE id = 1",
    "DELETE FROM t WHERE id = 42",
    "INSERT INTO t (id, name) VALUES (1, 'dup')",
    "INSERT IGNORE INTO t (id, name) VALUES (1, 'dup'), (10, 'ten')",
    "SHOW WARNINGS",
    "INSERT INTO t (name, score) VALUES ('x', 'not a number')",
    "INSERT INTO t (name, score) VALUES ('too long name for the column', 1)",
    "SELECT 1/0, CAST('12abc' AS SIGNED)",
    "SHOW WARNINGS",
    "SHOW COUNT(*) WARNINGS",
    "SELEC 1",
    "SELECT * FROM nope",
    "SELECT nope FROM t",
    "SHOW ERRORS",
    "SHOW TABLES",
    "SHOW CREATE TABLE t",
    "SHOW COLUMNS FROM t",
    "SHOW INDEX FROM t",
    "DESCRIBE t",
    "EXPLAIN SELECT * FROM t WHERE id = 1",
    "EXPLAIN FORMAT=JSON SELECT name FROM t WHERE id > 1",
    "SELECT 1; SELECT 2, 'two'; SELECT * FROM t WHERE 0",
    "SELECT 1; SELECT * FROM nope; SELECT 3",
    "SET @v = 10",
    "SELECT @v * 2, @unset",
    "SELECT name INTO @n FROM t WHERE id = 2",
    "SELECT @n",
    "CREATE VIEW v AS SELECT id, UPPER(name) AS uname FROM t",
    "SELECT * FROM v ORDER BY id",
    "CREATE PROCEDURE p(IN k INT) BEGIN SELECT k; SELECT COUNT(*) FROM t; END",
    "CALL p(7)",
    "CREATE TRIGGER trg BEFORE INSERT ON t FOR EACH ROW SET NEW.note = CONCAT('trg:', NEW.name)",
    "INSERT INTO t (name) VALUES ('via trigger')",
    "SELECT note FROM t WHERE name = 'via trigger'",
    "BEGIN",
    "INSERT INTO t (name) VALUES ('rolled back')",
    "ROLLBACK",
    "SELECT COUNT(*) FROM t WHERE name = 'rolled back'",
    "START TRANSACTION",
    "INSERT INTO t (name) VALUES ('committed')",
    "COMMIT",
    "SELECT id, name FROM t WHERE name = 'committed'",
    "SELECT LAST_INSERT_ID(), ROW_COUNT()",
    "SELECT name FROM t UNION ALL SELECT 'extra' ORDER BY 1",
    "SELECT name, COUNT(*) FROM t GROUP BY name HAVING COUNT(*) >= 1 ORDER BY name LIMIT 3",
    "SELECT DATE_ADD('2024-02-29', INTERVAL 1 YEAR), DATE_FORMAT('2024-01-05', '%W %M %Y')",
    "SELECT CONVERT('héllo' USING utf8mb4), LENGTH('héllo'), CHAR_LENGTH('héllo')",
    "SELECT X'DEADBEEF', 0x41, b'101', NULL, 18446744073709551615, -9223372036854775808, 1e308",
    "SELECT REPEAT('x', 70000) AS big",
    "DO 1",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES'",
    "INSERT INTO t (name, score) VALUES ('strict', 'bad')",
    "SELECT @@SESSION.sql_mode",
    "TRUNCATE TABLE t",
    "SELECT * FROM t",
    "ALTER TABLE t ADD COLUMN extra INT DEFAULT 5",
    "INSERT INTO t (name) VALUES ('after alter')",
    "SELECT name, extra FROM t",
    "CHECKSUM TABLE t",
    "DROP TABLE nope",
    "DROP TABLE IF EXISTS nope",
    "SHOW WARNINGS",
    "DROP VIEW v",
    "DROP DATABASE d1",
    "SELECT DATABASE()",
];

#[tokio::test]
async fn direct_and_through_the_operator_agree() {
    let direct_db = MariaDb::start().unwrap();
    let behind_db = MariaDb::start().unwrap();
    let op = Operator::external(&behind_db, &[]);
    let mut direct = Conn::new(Opts::from_url(&direct_db.url()).unwrap())
        .await
        .unwrap();
    let mut proxied = Conn::new(Opts::from_url(&op.url(behind_db.password())).unwrap())
        .await
        .unwrap();
    let mut mismatches = Vec::new();
    let (mut errors, mut warned, mut multi) = (0, 0, 0);
    for sql in CORPUS {
        let a = observe(&mut direct, sql).await;
        let b = observe(&mut proxied, sql).await;
        match &a {
            Observed::Err { .. } => errors += 1,
            Observed::Ok {
                warnings, results, ..
            } => {
                warned += usize::from(*warnings > 0);
                multi += usize::from(results.len() > 1);
            }
        }
        if a != b {
            mismatches.push(format!("`{sql}`\n  direct:   {a:?}\n  operator: {b:?}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // The corpus exercised errors, warnings and multiple result sets, not just happy paths.
    assert!(
        errors >= 8 && warned >= 3 && multi >= 2,
        "{errors} {warned} {multi}"
    );
}
