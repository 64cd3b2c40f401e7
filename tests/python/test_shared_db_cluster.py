"""A 3-node shared-db cluster (`shared-db dev-cluster`, each node its own `shared-db serve`
process with its own managed MariaDB) driven by real PyMySQL clients: deterministic apply on
every engine, read-your-writes, leader kills and a stopped follower with no acknowledged write
lost, catch-up of a node that was down, divergence detection.

The tests share one cluster and run in file order; the fault tests come last."""

import random
import signal
import threading
import time

import pymysql
import pytest

from shared_db_cluster import DevCluster, wait_for

@pytest.fixture(scope="module")
def cluster():
    c = DevCluster(3)
    yield c
    c.stop()


def rows(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def checksums(cluster, db, tables, nodes=None):
    """`CHECKSUM TABLE` and the full ordered contents of `tables`, per node."""
    out = []
    for i in (range(cluster.count) if nodes is None else nodes):
        conn = cluster.connect(i, database=db)
        try:
            sums = rows(conn, f"CHECKSUM TABLE {', '.join(tables)}")
            dump = [rows(conn, f"SELECT * FROM {t} ORDER BY 1") for t in tables]
        finally:
            conn.close()
        out.append((sums, dump))
    return out


def test_cluster_has_one_leader_and_full_status(cluster):
    roles = [cluster.status(i)["node"]["role"] for i in range(3)]
    assert sorted(roles) == ["follower", "follower", "leader"], roles
    leader = roles.index("leader")
    for i in range(3):
        s = cluster.status(i)
        for key in ("id", "pid", "role", "term", "leader", "diverged"):
            assert key in s["node"], f"/status of node {i + 1} lacks node.{key}: {s}"
        for key in ("commit_index", "applied_index", "peers"):
            assert key in s["cluster"], f"/status of node {i + 1} lacks cluster.{key}: {s}"
        assert s["node"]["pid"] == cluster.pid(i)
        assert s["node"]["diverged"] is False
        assert s["node"]["leader"]["id"] == leader + 1
        assert s["engine"]["state"] == "running"
    peers = cluster.status(leader)["cluster"]["peers"]
    assert len(peers) >= 2 and all(p["lag"] is not None for p in peers), peers

    # Followers report their applied index with every append answer (flow control uses it).
    def reported():
        peers = cluster.status(leader)["cluster"]["peers"]
        return all(p["applied_index"] is not None for p in peers if p["id"] != leader + 1)
    wait_for("followers' applied index reported to the leader", reported, 10)


def test_concurrent_writers_on_every_node_leave_identical_engines(cluster):
    setup = cluster.connect(0)
    for stmt in [
        "CREATE DATABASE det",
        "CREATE TABLE det.items (id INT AUTO_INCREMENT PRIMARY KEY, writer VARCHAR(16), "
        " n INT, r DOUBLE, u CHAR(36), created DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6), "
        " changed DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), "
        " trig_at DATETIME(6), note VARCHAR(64))",
        # (Triggers that insert into AUTO_INCREMENT tables are refused: see the test below.)
        "CREATE TABLE det.audit (item INT PRIMARY KEY, at DATETIME(6))",
        "CREATE TRIGGER det.items_bi BEFORE INSERT ON det.items FOR EACH ROW "
        " SET NEW.trig_at = NOW(6)",
        "CREATE TRIGGER det.items_ai AFTER INSERT ON det.items FOR EACH ROW "
        " INSERT INTO det.audit (item, at) VALUES (NEW.id, NOW(6))",
    ]:
        rows(setup, stmt)
    setup.close()

    errors = []

    def writer(node, w):
        name = f"n{node + 1}w{w}"
        rnd = random.Random(name)
        try:
            conn = cluster.connect(node, database="det")
            for k in range(12):
                rows(conn, "INSERT INTO items (writer, n, r, u) VALUES (%s, %s, RAND(), UUID())",
                     (name, k))
                rows(conn, "SET @v = %s", (rnd.randint(1, 10**6),))
                rows(conn, "INSERT INTO items (writer, n, r, note) VALUES "
                           "(%s, @v, RAND(), CONCAT('at ', NOW(6))), (%s, @v + 1, RAND(), NULL)",
                     (name, name))
                rows(conn, "CREATE TEMPORARY TABLE IF NOT EXISTS tmp (x INT)")
                rows(conn, "INSERT INTO tmp VALUES (%s)", (k,))
                rows(conn, "INSERT INTO items (writer, n, note) SELECT %s, x, 'from tmp' "
                           "FROM tmp ORDER BY x", (name,))
                rows(conn, "UPDATE items SET n = n + 1, r = RAND() WHERE writer = %s "
                           "ORDER BY id LIMIT 1", (name,))
                conn.begin()
                rows(conn, "INSERT INTO items (writer, n, note) VALUES (%s, -1, 'rolled back')",
                     (name,))
                conn.rollback()
                conn.begin()
                rows(conn, "INSERT INTO items (writer, n, note) VALUES (%s, %s, 'in txn')",
                     (name, k))
                rows(conn, "UPDATE items SET note = CONCAT(note, ' ', LAST_INSERT_ID()) "
                           "WHERE id = LAST_INSERT_ID()")
                conn.commit()
            conn.close()
        except Exception as e:  # reported below with the writer's name
            errors.append(f"{name}: {e!r}")

    threads = [threading.Thread(target=writer, args=(n, w)) for n in range(3) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)

    cluster.wait_converged()
    result = checksums(cluster, "det", ["items", "audit"])
    assert result[0] == result[1] == result[2]
    conn = cluster.connect(2, database="det")
    (count,), = rows(conn, "SELECT COUNT(*) FROM items WHERE note = 'rolled back'")
    assert count == 0
    (count,), = rows(conn, "SELECT COUNT(*) FROM items")
    # Per writer and round k: 1 + 2 + 1 (the committed transaction) + k + 1 from the temp table.
    assert count == 6 * (12 * 4 + sum(k + 1 for k in range(12)))
    conn.close()


def test_a_session_reads_its_own_writes_at_once_and_other_nodes_catch_up(cluster):
    setup = cluster.connect(0)
    rows(setup, "CREATE DATABASE IF NOT EXISTS ryw")
    rows(setup, "CREATE TABLE IF NOT EXISTS ryw.t (id INT PRIMARY KEY, v INT)")
    setup.close()
    leader = cluster.leader_index()
    followers = [i for i in range(3) if i != leader]
    writer_node, other = followers[0], followers[1]
    w = cluster.connect(writer_node, database="ryw")
    for k in range(50):
        rows(w, "INSERT INTO t VALUES (%s, %s)", (k, k * k))
        assert rows(w, "SELECT v FROM t WHERE id = %s", (k,)) == ((k * k,),)
    w.close()
    # A fresh session on the third node sees the writes once it has caught up (bounded).
    r = cluster.connect(other, database="ryw")
    wait_for("node 3 has the writes",
             lambda: rows(r, "SELECT COUNT(*) FROM t") == ((50,),), 10)
    r.close()


def test_multi_statement_writes_run_only_for_clients_that_enabled_them(cluster):
    setup = cluster.connect(0)
    rows(setup, "CREATE DATABASE IF NOT EXISTS multi")
    rows(setup, "CREATE TABLE IF NOT EXISTS multi.t (id INT PRIMARY KEY, v INT)")
    setup.close()
    follower = (cluster.leader_index() + 1) % 3
    two = "INSERT INTO t VALUES (1, 10); INSERT INTO t VALUES (2, 20)"
    # PyMySQL does not ask for multi-statements by default: the packet is one (bad)
    # statement, as on MariaDB, and nothing of it runs.
    plain = cluster.connect(follower, database="multi")
    with pytest.raises(pymysql.err.ProgrammingError) as e:
        rows(plain, two)
    assert e.value.args[0] == 1064
    assert rows(plain, "SELECT COUNT(*) FROM t") == ((0,),)
    plain.close()
    multi = cluster.connect(follower, database="multi",
                            client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    cur = multi.cursor()
    cur.execute(two + "; SELECT SUM(v) FROM t")
    assert cur.rowcount == 1
    assert cur.nextset() and cur.rowcount == 1
    assert cur.nextset() and cur.fetchall() == ((30,),)
    assert not cur.nextset()
    multi.close()
    cluster.wait_converged(timeout=30)
    for i in range(3):
        conn = cluster.connect(i, database="multi")
        assert rows(conn, "SELECT id, v FROM t ORDER BY id") == ((1, 10), (2, 20))
        conn.close()


def wait_same_everywhere(cluster, sql, want, timeout=30):
    """Waits until the one-row query `sql` answers `want` on every node."""
    def answers():
        out = []
        for i in range(cluster.count):
            conn = cluster.connect(i)
            out.append(tuple(int(x) for x in rows(conn, sql)[0]))
            conn.close()
        return out if all(r == tuple(want) for r in out) else None
    wait_for(f"{sql} = {want} on every node", answers, timeout)


def test_concurrent_commits_share_log_entries_and_syncs(cluster):
    """Transactions that commit while the leader's log is syncing go out together in one
    entry (group commit): the leader writes fewer entries, and syncs, than there were
    commits, and every commit is on every node."""
    leader = cluster.wait_leader()
    setup = cluster.connect(leader)
    rows(setup, "CREATE DATABASE grp")
    rows(setup, "CREATE TABLE grp.t (id INT AUTO_INCREMENT PRIMARY KEY, w INT NOT NULL)")
    setup.close()
    writers, each = 8, 60
    before = cluster.status(leader)["cluster"]
    errors = []

    def writer(w):
        try:
            conn = cluster.connect(leader)
            for _ in range(each):
                rows(conn, "INSERT INTO grp.t (w) VALUES (%s)", (w,))
            conn.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    after = cluster.status(leader)["cluster"]
    commits = writers * each
    entries = after["log_entries_written"] - before["log_entries_written"]
    syncs = after["log_fsyncs"] - before["log_fsyncs"]
    assert entries < commits, f"{entries} log entries for {commits} concurrent commits"
    assert syncs < commits, f"{syncs} log syncs for {commits} concurrent commits"

    wait_same_everywhere(cluster, "SELECT COUNT(*), COUNT(DISTINCT id) FROM grp.t",
                         (commits, commits))


def test_followers_receive_entries_while_the_leader_syncs_them(cluster):
    """Early replication: the leader sends each entry to its followers while its own log sync
    runs, and openraft's request for the same entries is answered from theirs instead of
    crossing again. Every write still lands on every node."""
    leader = cluster.wait_leader()
    conn = cluster.connect(leader)
    rows(conn, "CREATE DATABASE early")
    rows(conn, "CREATE TABLE early.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)")
    before = cluster.status(leader)["cluster"]
    writes = 200
    for i in range(writes):
        rows(conn, "INSERT INTO early.t (v) VALUES (%s)", (i,))
    conn.close()
    after = cluster.status(leader)["cluster"]
    entries = after["log_entries_written"] - before["log_entries_written"]
    sent = after["early_appends_sent"] - before["early_appends_sent"]
    answered = after["early_appends_answered"] - before["early_appends_answered"]
    followers = cluster.count - 1
    # One entry per write here (one client); a few may miss under load and go the slow way.
    assert entries >= writes
    assert sent >= entries * followers // 2, f"{sent} early requests for {entries} entries"
    assert answered >= entries * followers // 2, f"{answered} of {entries * followers} answered"

    wait_same_everywhere(cluster, "SELECT COUNT(*), SUM(v) FROM early.t",
                         (writes, sum(range(writes))))


def test_writes_firing_a_trigger_that_inserts_into_an_auto_increment_table_are_refused(cluster):
    """MariaDB's unsafe list: the ids such a trigger generates follow the order transactions ran
    on the leader, not the log order. Refused with an ERR naming the trigger, only for the
    events the trigger is on; a trigger keyed by the row is fine."""
    leader = cluster.wait_leader()
    conn = cluster.connect((leader + 1) % cluster.count)
    for stmt in [
        "CREATE DATABASE trg",
        "CREATE TABLE trg.items (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)",
        "CREATE TABLE trg.log (id INT AUTO_INCREMENT PRIMARY KEY, item INT)",
        "CREATE TABLE trg.last (item INT PRIMARY KEY, v INT)",
        "INSERT INTO trg.items (v) VALUES (1)",
        "CREATE TRIGGER trg.items_au AFTER UPDATE ON trg.items FOR EACH ROW "
        " BEGIN INSERT INTO trg.log (item) VALUES (NEW.id); END",
        # Fires on UPDATE only: inserts stay fine.
        "INSERT INTO trg.items (v) VALUES (2)",
        "USE trg",
    ]:
        rows(conn, stmt)
    for stmt in ["UPDATE items SET v = v + 1", "UPDATE trg.items SET v = 0 WHERE id = 1",
                 "INSERT INTO trg.items (id, v) VALUES (1, 5) ON DUPLICATE KEY UPDATE v = 5"]:
        with pytest.raises(pymysql.err.MySQLError) as e:
            rows(conn, stmt)
        assert e.value.args[0] == 1235, e.value.args
        assert "trg.items_au" in e.value.args[1] and "trg.log" in e.value.args[1], e.value.args
    # Inside a transaction the refused statement fails alone, as any statement error does.
    rows(conn, "BEGIN")
    with pytest.raises(pymysql.err.MySQLError):
        rows(conn, "UPDATE items SET v = v + 1")
    rows(conn, "INSERT INTO items (v) VALUES (3)")
    rows(conn, "COMMIT")
    # Replaced by a trigger keyed by the row: allowed (the cached view follows the DDL).
    rows(conn, "DROP TRIGGER trg.items_au")
    rows(conn, "CREATE TRIGGER trg.items_au AFTER UPDATE ON trg.items FOR EACH ROW "
               " REPLACE INTO trg.last (item, v) VALUES (NEW.id, NEW.v)")
    rows(conn, "UPDATE items SET v = v + 1")
    conn.close()
    wait_for("identical trg tables on every node",
             lambda: len({repr(c) for c in checksums(cluster, "trg", ["items", "log", "last"])})
             == 1, 30)
    assert rows(cluster.connect(leader), "SELECT COUNT(*) FROM trg.last")[0][0] == 3


def test_kill_on_a_follower_reaches_the_session_running_on_the_leader(cluster):
    """Inside a transaction a follower's session runs on its shadow session on the leader:
    `KILL QUERY` on the follower interrupts the statement there, and `KILL` ends it there."""
    leader = cluster.wait_leader()
    follower = (leader + 1) % 3
    killer = cluster.connect(follower)
    engine = cluster.engine_connect(leader)
    sleeping = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(30)'"

    def sleep_on_the_leader(victim):
        rows(victim, "BEGIN")
        result = {}

        def run():
            start = time.monotonic()
            try:
                result["rows"] = rows(victim, "SELECT SLEEP(30)")
            except pymysql.MySQLError as e:
                result["error"] = e
            result["secs"] = time.monotonic() - start

        t = threading.Thread(target=run)
        t.start()
        wait_for("SLEEP running on the leader's engine",
                 lambda: rows(engine, sleeping)[0][0] == 1, 15)
        return t, result

    victim = cluster.connect(follower, read_timeout=60)
    t, result = sleep_on_the_leader(victim)
    rows(killer, f"KILL QUERY {victim.thread_id()}")
    t.join(20)
    assert not t.is_alive() and result["secs"] < 10, result
    # The client gets the engine's own answer to an interrupted statement; its session and
    # transaction go on.
    assert result["error"].args[0] == 1317, result
    assert rows(victim, "SELECT 2") == ((2,),)
    rows(victim, "ROLLBACK")

    t, result = sleep_on_the_leader(victim)
    rows(killer, f"KILL {victim.thread_id()}")
    t.join(20)
    assert not t.is_alive() and result["secs"] < 10, result
    assert "error" in result, result
    wait_for("the shadow session's statement ended", lambda: rows(engine, sleeping)[0][0] == 0, 10)
    killer.close()
    engine.close()


def test_a_node_that_was_down_catches_up_from_the_log(cluster):
    leader = cluster.wait_leader()
    down = (leader + 1) % 3
    cluster.kill(down)
    conn = cluster.connect(leader)
    rows(conn, "CREATE DATABASE catchup")
    rows(conn, "CREATE TABLE catchup.t (id INT PRIMARY KEY, v VARCHAR(20))")
    for k in range(100):
        rows(conn, "INSERT INTO catchup.t VALUES (%s, %s)", (k, f"v{k}"))
    conn.close()
    cluster.restart(down)
    wait_for("restarted node answers", lambda: cluster._can_connect(down), 120)
    cluster.wait_converged(timeout=120)
    result = checksums(cluster, "catchup", ["t"])
    assert result[0] == result[1] == result[2]


def test_no_acknowledged_write_is_lost_across_leader_kills_and_a_stopped_follower(cluster):
    setup = cluster.connect(cluster.wait_leader())
    rows(setup, "CREATE DATABASE jepsen")
    rows(setup, "CREATE TABLE jepsen.a (id BIGINT PRIMARY KEY, node INT)")
    rows(setup, "CREATE TABLE jepsen.b (id BIGINT PRIMARY KEY)")
    setup.close()

    acked, unknown, stop = set(), set(), threading.Event()
    lock = threading.Lock()
    counter = [0]

    def writer(node):
        conn = None
        seq = node * 10**9
        while not stop.is_set():
            seq += 1
            try:
                if conn is None:
                    conn = cluster.connect(node, database="jepsen", connect_timeout=3,
                                           read_timeout=15, write_timeout=15)
                # Two rows in two tables in one transaction: both or neither, never half.
                conn.begin()
                rows(conn, "INSERT INTO a VALUES (%s, %s)", (seq, node))
                rows(conn, "INSERT INTO b VALUES (%s)", (seq,))
                conn.commit()
                with lock:
                    acked.add(seq)
                    counter[0] += 1
            except (pymysql.MySQLError, OSError):
                with lock:
                    unknown.add(seq)
                try:
                    if conn is not None:
                        conn.close()
                except Exception:
                    pass
                conn = None
                stop.wait(0.05)

    def progress(n):
        """Waits until `n` more writes have been acknowledged."""
        with lock:
            target = counter[0] + n
        wait_for(f"{n} more acknowledged writes", lambda: counter[0] >= target, 30)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    failovers = []
    try:
        progress(20)
        for _ in range(3):
            leader = cluster.wait_leader()
            killed_at = time.monotonic()
            cluster.kill(leader)
            cluster.wait_leader(timeout=10, exclude=leader)
            failovers.append(time.monotonic() - killed_at)
            progress(10)
            cluster.restart(leader)
            wait_for("killed node back", lambda: cluster._can_connect(leader), 120)
            progress(10)
        leader = cluster.wait_leader()
        follower = (leader + 1) % 3
        cluster.kill(follower, signal.SIGSTOP)
        try:
            progress(30)  # the majority keeps committing without the stopped follower
        finally:
            cluster.kill(follower, signal.SIGCONT)
        progress(10)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    print(f"new leader after a leader kill: {[f'{f:.2f}' for f in failovers]} s; "
          f"{len(acked)} writes acknowledged, {len(unknown)} failed or unknown")
    assert all(f <= 3.0 for f in failovers), (failovers, cluster.logs())

    cluster.wait_converged(timeout=120)
    seen = []
    for i in range(3):
        conn = cluster.connect(i, database="jepsen")
        a = {r[0] for r in rows(conn, "SELECT id FROM a")}
        b = {r[0] for r in rows(conn, "SELECT id FROM b")}
        conn.close()
        lost = acked - a
        assert not lost, f"node {i + 1} lost {len(lost)} acknowledged writes"
        assert a == b, f"node {i + 1} has half-applied transactions: {a ^ b}"
        assert a - acked <= unknown, "rows that no client ever sent"
        seen.append(a)
    for i in (1, 2):
        assert seen[i] == seen[0], (
            f"nodes 1 and {i + 1} differ: only on 1: {sorted(seen[0] - seen[i])}, "
            f"only on {i + 1}: {sorted(seen[i] - seen[0])}\n{[cluster.try_status(j) for j in range(3)]}"
        )
    result = checksums(cluster, "jepsen", ["a", "b"])
    assert result[0] == result[1] == result[2]


def test_a_node_cut_off_from_the_majority_refuses_within_a_bound(cluster):
    leader = cluster.wait_leader()
    setup = cluster.connect(leader)
    rows(setup, "CREATE DATABASE iso")
    rows(setup, "CREATE TABLE iso.t (id INT PRIMARY KEY)")
    setup.close()
    cluster.wait_converged()

    # A leader whose followers are gone refuses the write with an ERR within a bound.
    followers = [i for i in range(3) if i != leader]
    conn = cluster.connect(leader, database="iso")
    for f in followers:
        cluster.kill(f, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(pymysql.MySQLError):
            rows(conn, "INSERT INTO t VALUES (1)")
        took = time.monotonic() - started
        # Reads are refused too once the leader has been out of touch for a while.
        wait_for("the isolated leader refuses reads", lambda: refuses(cluster, leader), 10)
    finally:
        for f in followers:
            cluster.kill(f, signal.SIGCONT)
    conn.close()
    print(f"isolated leader refused the write after {took:.1f} s")
    assert took <= 15, took

    # A follower cut off from the other two refuses statements, then serves again.
    leader = cluster.wait_leader()
    lonely = next(i for i in range(3) if i != leader)
    others = [i for i in range(3) if i != lonely]
    for i in others:
        cluster.kill(i, signal.SIGSTOP)
    try:
        wait_for("the cut-off follower refuses", lambda: refuses(cluster, lonely), 10)
    finally:
        for i in others:
            cluster.kill(i, signal.SIGCONT)
    wait_for("the follower serves again", lambda: not refuses(cluster, lonely), 30)

    # The write that failed is either everywhere or nowhere.
    cluster.wait_converged()
    seen = []
    for i in range(3):
        c = cluster.connect(i, database="iso")
        seen.append(rows(c, "SELECT id FROM t"))
        c.close()
    assert seen[0] == seen[1] == seen[2], seen


def refuses(cluster, i):
    """Whether node i answers a plain read with an error."""
    try:
        c = cluster.connect(i, connect_timeout=3, read_timeout=5)
    except pymysql.MySQLError:
        return True
    try:
        rows(c, "SELECT 1")
        return False
    except pymysql.MySQLError:
        return True
    finally:
        c.close()


def tamper_with_a_follower(cluster, db):
    """Creates `db`.t with rows 1–3 everywhere, then deletes row 2 from a follower's engine
    behind the operator's back. Returns (leader connection, victim index)."""
    leader = cluster.wait_leader()
    victim = (leader + 1) % 3
    conn = cluster.connect(leader)
    rows(conn, f"CREATE DATABASE {db}")
    rows(conn, f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)")
    rows(conn, f"INSERT INTO {db}.t VALUES (1, 0), (2, 0), (3, 0)")
    cluster.wait_converged()
    eng = cluster.engine_connect(victim)
    rows(eng, f"DELETE FROM {db}.t WHERE id = 2")
    eng.close()
    return conn, victim


def test_a_follower_whose_outcome_differs_reports_diverged(cluster):
    conn, victim = tamper_with_a_follower(cluster, "divg")
    rows(conn, "UPDATE divg.t SET v = v + 1")  # 3 rows on the leader, 2 on the victim
    conn.close()
    wait_for("victim reports diverged", lambda: cluster.status(victim)["node"]["diverged"], 30)
    with pytest.raises(pymysql.MySQLError):
        c = cluster.connect(victim)
        try:
            rows(c, "SELECT * FROM divg.t")
        finally:
            c.close()
    others = [i for i in range(3) if i != victim]
    assert not any(cluster.status(i)["node"]["diverged"] for i in others)

    # One command re-syncs it from the leader's snapshot; it serves clients again and has
    # the leader's data, including writes made while it re-syncs.
    conn = cluster.connect(cluster.wait_leader())
    rows(conn, "INSERT INTO divg.t VALUES (4, 0)")
    done = threading.Event()

    def keep_writing():
        w = cluster.connect(cluster.wait_leader())
        k = 100
        while not done.is_set() and k < 400:
            rows(w, "INSERT INTO divg.t VALUES (%s, 1)", (k,))
            k += 1
        w.close()
    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        out = cluster.cluster_cli("resync", node=victim, timeout=180)
    finally:
        done.set()
        writer.join(timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    rows(conn, "INSERT INTO divg.t VALUES (5, 0)")
    conn.close()
    assert cluster.status(victim)["node"]["diverged"] is False
    cluster.wait_converged()
    result = checksums(cluster, "divg", ["t"])
    assert result[0] == result[1] == result[2], result
    ids = {r[0] for r in result[victim][1][0]}
    assert {1, 2, 3, 4, 5} <= ids and len(ids) > 5, sorted(ids)


def test_a_diverged_node_resyncs_itself_with_auto_resync():
    c = DevCluster(3, serve_args=["--auto-resync", "true"])
    try:
        # The next write's outcome differs on the victim.
        conn, victim = tamper_with_a_follower(c, "auto")
        rows(conn, "UPDATE auto.t SET v = v + 1")
        rows(conn, "INSERT INTO auto.t VALUES (4, 1)")
        conn.close()

        # Without a command, the victim re-syncs from the leader's snapshot and serves the
        # leader's data again (the row deleted behind its back included).
        def victim_has_everything():
            try:
                v = c.connect(victim, connect_timeout=2)
                try:
                    return rows(v, "SELECT id, v FROM auto.t ORDER BY id") == (
                        (1, 1), (2, 1), (3, 1), (4, 1))
                finally:
                    v.close()
            except pymysql.MySQLError:
                return False
        wait_for("the victim re-synced by itself", victim_has_everything, 120)
        assert c.status(victim)["node"]["diverged"] is False
        assert "re-syncing it from the leader's snapshot" in c.logs()
        c.wait_converged()
        result = checksums(c, "auto", ["t"])
        assert result[0] == result[1] == result[2], result
    finally:
        c.stop()
