"""PyMySQL through the shared-db operator: the text protocol, executemany, multi-statements,
BLOBs over 16 MiB, COM_CHANGE_USER, ping(reconnect), WHITELIST with a bound source address, and
the error for commands the server does not implement."""

import os

import pymysql
import pytest
from pymysql.constants import CLIENT, COMMAND


def test_text_protocol_round_trip(operator):
    conn = operator.connect(database="test_db")
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE people (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50), "
                    "born DATE, score DECIMAL(5,2), bio TEXT NULL)")
        n = cur.execute("INSERT INTO people (name, born, score, bio) VALUES (%s, %s, %s, %s)",
                        ("Zoë", "1990-05-17", "12.50", None))
        assert n == 1
        assert cur.lastrowid == 1
        cur.execute("SELECT name, born, score, bio FROM people WHERE id = %s", (1,))
        name, born, score, bio = cur.fetchone()
        assert name == "Zoë"
        assert str(born) == "1990-05-17"
        assert str(score) == "12.50"
        assert bio is None
        with pytest.raises(pymysql.err.ProgrammingError) as e:
            cur.execute("SELECT * FROM missing_table")
        assert e.value.args[0] == 1146
    conn.commit()
    conn.close()


def test_executemany_inserts_every_row(operator):
    conn = operator.connect(database="test_db", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE many (id INT PRIMARY KEY, v VARCHAR(10))")
        rows = [(i, f"v{i}") for i in range(500)]
        assert cur.executemany("INSERT INTO many (id, v) VALUES (%s, %s)", rows) == 500
        cur.execute("SELECT COUNT(*), SUM(id) FROM many")
        assert cur.fetchone() == (500, sum(range(500)))
    conn.close()


def test_multi_statements_return_every_result(operator):
    conn = operator.connect(database="test_db", client_flag=CLIENT.MULTI_STATEMENTS, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SELECT 1; SELECT 'two', 2; CREATE TEMPORARY TABLE tt (a INT); "
                    "INSERT INTO tt VALUES (1), (2); SELECT COUNT(*) FROM tt")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == (("two", 2),)
        assert cur.nextset()  # CREATE
        assert cur.nextset()  # INSERT
        assert cur.rowcount == 2
        assert cur.nextset()
        assert cur.fetchall() == ((2,),)
        assert not cur.nextset()
        # An error in the middle stops the batch with the engine's error.
        with pytest.raises(pymysql.err.ProgrammingError) as e:
            cur.execute("SELECT 1; SELECT * FROM nope; SELECT 3")
            while cur.nextset():
                pass
        assert e.value.args[0] == 1146
    conn.close()


def test_blob_larger_than_16_mib_round_trips(operator):
    conn = operator.connect(database="test_db", autocommit=True, max_allowed_packet=256 * 1024 * 1024)
    blob = os.urandom(20 * 1024 * 1024)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB)")
        cur.execute("INSERT INTO blobs VALUES (%s, %s)", (1, blob))
        cur.execute("SELECT b, LENGTH(b) FROM blobs WHERE id = 1")
        back, length = cur.fetchone()
    assert length == len(blob)
    assert back == blob
    conn.close()


def _change_user(conn, user, password, db):
    """COM_CHANGE_USER through PyMySQL's connection (PyMySQL has no public API for it)."""
    from pymysql import _auth

    token = _auth.scramble_native_password(password.encode(), conn.salt) if password else b""
    body = (user.encode() + b"\0" + bytes([len(token)]) + token + (db or "").encode() + b"\0"
            + (45).to_bytes(2, "little") + b"mysql_native_password\0")
    conn._execute_command(COMMAND.COM_CHANGE_USER, body)
    return conn._read_packet()


def test_change_user_resets_session_and_sets_database(operator):
    conn = operator.connect(autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SET @marker = 42")
    packet = _change_user(conn, "root", operator.password, "test_db")
    assert packet.is_ok_packet()
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE(), @marker")
        assert cur.fetchone() == ("test_db", None)
    with pytest.raises(pymysql.err.OperationalError) as e:
        _change_user(conn, "root", "wrong-password", None)
    assert e.value.args[0] == 1045
    conn.close()


def test_ping_reconnects_after_the_connection_is_killed(operator):
    victim = operator.connect()
    killer = operator.connect()
    with killer.cursor() as cur:
        cur.execute(f"KILL {victim.thread_id()}")
    with pytest.raises(pymysql.err.OperationalError):
        with victim.cursor() as cur:
            cur.execute("SELECT 1")
    victim.ping(reconnect=True)
    with victim.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    victim.close()
    killer.close()


def test_whitelist_by_source_address(whitelisted_operator):
    conn = whitelisted_operator.connect(bind_address="127.0.0.2")
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()
    with pytest.raises(pymysql.err.OperationalError) as e:
        whitelisted_operator.connect(bind_address="127.0.0.3")
    assert e.value.args[0] == 1130
    assert "Host '127.0.0.3' is not allowed to connect to this server" in e.value.args[1]


def test_unknown_command_gets_1047_and_the_session_goes_on(operator):
    conn = operator.connect()
    conn._execute_command(0x1D, b"")  # COM_DAEMON: internal to the server
    with pytest.raises(pymysql.err.OperationalError) as e:
        conn._read_packet()
    assert e.value.args[0] == 1047
    with conn.cursor() as cur:
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)
    conn.close()


def test_statistics_and_field_list(operator):
    conn = operator.connect(database="test_db", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE fl (a INT, b VARCHAR(3))")
    conn._execute_command(COMMAND.COM_STATISTICS, b"")
    stats = conn._read_packet().get_all_data()
    assert stats.startswith(b"Uptime:")
    conn._execute_command(COMMAND.COM_FIELD_LIST, b"fl\0")
    names = []
    while True:
        packet = conn._read_packet()
        if packet.is_eof_packet():
            break
        # Column definition: catalog, schema, table, org_table, name, ...
        for _ in range(4):
            packet.read_length_coded_string()
        names.append(packet.read_length_coded_string())
    assert names == [b"a", b"b"]
    with conn.cursor() as cur:
        cur.execute("SELECT 3")
        assert cur.fetchone() == (3,)
    conn.close()
