"""The classic DB-API 2.0 conformance suite (dbapi20.py, package dbapi-compliance).

Run against a real cluster through the sync driver.  Where the suite leaves
a test to the driver (nextset, setoutputsize) or tests a contested choice,
the override says what this driver does instead.
"""

import pytest

import dqlite

dbapi20 = pytest.importorskip("dbapi20")


@pytest.fixture(scope="class", autouse=True)
def _cluster(request, dqlite_cluster):
    request.cls.connect_args = (dqlite_cluster.addresses, "dbapi20")


class TestDBAPI20(dbapi20.DatabaseAPI20Test):
    driver = dqlite
    connect_args = ()
    connect_kw_args = {"timeout": 10.0}
    lower_func = None  # no stored procedures

    def test_nextset(self):
        """dqlite returns one result set per statement: cursors have no nextset()."""
        con = self._connect()
        try:
            assert not hasattr(con.cursor(), "nextset")
        finally:
            con.close()

    def test_setoutputsize(self):
        """setoutputsize() is accepted and ignored (PEP 249 allows it)."""
        con = self._connect()
        try:
            cur = con.cursor()
            cur.setoutputsize(10, 0)
            self.executeDDL1(cur)
            cur.execute(f"insert into {self.table_prefix}booze values ('a rather long name')")
            cur.execute(f"select name from {self.table_prefix}booze")
            assert cur.fetchone() == ("a rather long name",)
        finally:
            con.close()

    def test_non_idempotent_close(self):
        """Closing twice is allowed, as in sqlite3 and psycopg (the suite calls this contested)."""
        con = self._connect()
        con.close()
        con.close()
        with pytest.raises(dqlite.ProgrammingError):
            con.cursor()

    def test_description(self):
        """As the suite's, except the type code of an empty result.

        The wire carries no declared column types: the type code is the
        wire type of the first row's value, so an empty result has None.
        """
        con = self._connect()
        try:
            cur = con.cursor()
            self.executeDDL1(cur)
            assert cur.description is None
            cur.execute(f"select name from {self.table_prefix}booze")
            assert len(cur.description) == 1 and len(cur.description[0]) == 7
            assert cur.description[0][0].lower() == "name" and cur.description[0][1] is None
            cur.execute(f"insert into {self.table_prefix}booze values ('Victoria Bitter')")
            cur.execute(f"select name from {self.table_prefix}booze")
            assert cur.description[0][1] == self.driver.STRING
            self.executeDDL2(cur)
            assert cur.description is None
        finally:
            con.close()
