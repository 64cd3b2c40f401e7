"""PyMySQL through a node with `REPLICATION=single`: PyMySQL's default `autocommit=0` sessions,
commits and rollbacks, UUID() rewritten at the leader, refusals with the reason, and the
`replication` object of `/status`."""

import json
import urllib.request

import pymysql
import pytest

from sdb_procs import MariaDbServers, Operator


@pytest.fixture(scope="module")
def replicated():
    servers = MariaDbServers(1)
    op = Operator(servers.info[0], {"REPLICATION": "single"})
    yield op
    op.stop()
    servers.stop()


def test_autocommit_off_sessions_commit_and_roll_back(replicated):
    conn = replicated.connect(database="test_db")  # PyMySQL sends SET autocommit=0
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE r (id INT AUTO_INCREMENT PRIMARY KEY, u CHAR(36), v INT)")
        assert cur.execute("INSERT INTO r (u, v) VALUES (UUID(), 1), (UUID(), 2)") == 2
        assert cur.lastrowid == 1
        assert conn.get_autocommit() is False  # the status flags follow the client's session
        conn.rollback()
        cur.execute("INSERT INTO r (u, v) VALUES (UUID(), 3)")
        cur.execute("SELECT COUNT(*) FROM r")  # inside the transaction, on the leader
        assert cur.fetchone()[0] == 1
        conn.commit()
        cur.execute("SELECT v FROM r")
        assert [row[0] for row in cur.fetchall()] == [3]
        with pytest.raises(pymysql.err.MySQLError) as e:
            cur.execute("UPDATE r SET v = 4 LIMIT 1")
        assert e.value.args[0] == 1235
        assert "LIMIT" in e.value.args[1]
    conn.close()

    with urllib.request.urlopen(f"http://127.0.0.1:{replicated.http_port}/status", timeout=10) as r:
        status = json.load(r)
    assert status["replication"]["diverged"] is False
    assert status["replication"]["applied_index"] >= 3
