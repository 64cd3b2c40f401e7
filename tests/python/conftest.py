"""Fixtures that start real servers for the Python tests (see `sdb_procs`); everything is
stopped at the end of the session, also when a test fails."""

import pytest

from sdb_procs import MariaDbServers, Operator


@pytest.fixture(scope="session")
def engines():
    servers = MariaDbServers(2, ["--max-allowed-packet=256M"])
    yield servers.info
    servers.stop()


@pytest.fixture(scope="session")
def operator(engines):
    op = Operator(engines[0])
    yield op
    op.stop()


@pytest.fixture(scope="session")
def whitelisted_operator(engines):
    op = Operator(engines[1], {"WHITELIST": "127.0.0.2"})
    yield op
    op.stop()
