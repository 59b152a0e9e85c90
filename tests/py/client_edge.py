"""Client-edge checks through a certus node with PyMySQL and SQLAlchemy.

Usage: client_edge.py HOST PORT USER PASSWORD
Prints "ok <case>" for every case that passed; any failure raises and exits non-zero.
"""
import datetime
import decimal
import os
import sys

import pymysql
import sqlalchemy as sa
from sqlalchemy import orm

HOST, PORT, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def connect(**kw):
    return pymysql.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, **kw)


def ok(case):
    print("ok", case, flush=True)


def setup():
    c = connect(autocommit=True)
    with c.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS edge")
        cur.execute("CREATE DATABASE edge")
    c.close()


def crud():
    c = connect(database="edge", autocommit=True)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(20))")
        n = cur.execute("INSERT INTO t (name) VALUES (%s), (%s)", ("a", "b"))
        assert n == 2, n
        assert cur.lastrowid == 1, cur.lastrowid
        cur.execute("UPDATE t SET name = 'c' WHERE id = 2")
        assert cur.rowcount == 1
        cur.execute("SELECT id, name FROM t ORDER BY id")
        assert cur.fetchall() == ((1, "a"), (2, "c"))
        cur.execute("DELETE FROM t WHERE id = 1")
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone() == (1,)
    c.close()
    ok("crud")


def rollback():
    c = connect(database="edge", autocommit=False)
    with c.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM t")
        before = cur.fetchone()[0]
        cur.execute("INSERT INTO t (name) VALUES ('gone')")
        c.rollback()
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone()[0] == before, "rollback did not roll back"
    c.close()
    ok("rollback")


def sqlalchemy_orm_rollback():
    engine = sa.create_engine(f"mysql+pymysql://{USER}:{PASSWORD}@{HOST}:{PORT}/edge")

    class Base(orm.DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = "items"
        id = sa.Column(sa.Integer, primary_key=True)
        name = sa.Column(sa.String(20))
        data = sa.Column(sa.LargeBinary)

    Base.metadata.create_all(engine)
    with orm.Session(engine) as s:
        s.add_all([Item(name="x", data=b"\x00\xff\xfe"), Item(name="y", data=b"\x80")])
        s.commit()
    with orm.Session(engine) as s:
        s.add(Item(name="z"))
        s.flush()
        assert s.query(Item).count() == 3
        s.rollback()
    with orm.Session(engine) as s:
        assert s.query(Item).count() == 2, "ORM rollback lost"
        got = s.query(Item).filter_by(name="x").one().data
        assert isinstance(got, bytes) and got == b"\x00\xff\xfe", repr(got)
    engine.dispose()
    ok("sqlalchemy_orm_rollback")


def binary_values():
    c = connect(database="edge", autocommit=True)
    raw = bytes(range(256))
    with c.cursor() as cur:
        cur.execute("CREATE TABLE b (id INT PRIMARY KEY, vb VARBINARY(300), bl BLOB)")
        cur.execute("INSERT INTO b VALUES (1, %s, %s)", (raw, b"\xff\xfe\x00bad utf8 \xc3"))
        cur.execute("SELECT vb, bl FROM b WHERE id = 1")
        vb, bl = cur.fetchone()
        assert isinstance(vb, bytes) and vb == raw, repr(vb)[:80]
        assert isinstance(bl, bytes) and bl == b"\xff\xfe\x00bad utf8 \xc3", repr(bl)
    c.close()
    ok("binary_values")


def typed_values():
    c = connect(database="edge", autocommit=True)
    with c.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute(
            "CREATE TABLE v (id INT PRIMARY KEY, dt DATETIME(6), d DECIMAL(20,6), n INT NULL, zd DATETIME, tm TIME)"
        )
        dt = datetime.datetime(2024, 2, 29, 13, 14, 15, 123456)
        dec = decimal.Decimal("-12345678901234.500001")
        cur.execute(
            "INSERT INTO v VALUES (1, %s, %s, NULL, '0000-00-00 00:00:00', '-838:59:59')", (dt, dec)
        )
        cur.execute("SELECT dt, d, n, zd, tm FROM v")
        got = cur.fetchone()
        assert got[0] == dt, got
        assert got[1] == dec, got
        assert got[2] is None, got
        # PyMySQL returns the zero date as a string: it has no datetime for it.
        assert got[3] == "0000-00-00 00:00:00", got
        assert got[4] == -datetime.timedelta(hours=838, minutes=59, seconds=59), got
    c.close()
    ok("typed_values")


def warning_count():
    c = connect(autocommit=True)
    with c.cursor() as cur:
        cur.execute("SELECT CAST('abc' AS INT)")
        assert c._result.warning_count == 1, c._result.warning_count
    c.close()
    ok("warning_count")


def big_row():
    c = connect(database="edge", autocommit=True, max_allowed_packet=64 * 1024 * 1024)
    payload = os.urandom(20 * 1024 * 1024)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE big (id INT PRIMARY KEY, data LONGBLOB)")
        cur.execute("INSERT INTO big VALUES (1, %s)", (payload,))
        cur.execute("SELECT data FROM big WHERE id = 1")
        (got,) = cur.fetchone()
        assert got == payload, "20 MB row did not round-trip"
    c.close()
    ok("big_row")


def multi_statements():
    c = connect(database="edge", autocommit=True, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    with c.cursor() as cur:
        cur.execute("SELECT 1; INSERT INTO t (name) VALUES ('m'); SELECT 2")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.rowcount == 1
        assert cur.nextset()
        assert cur.fetchall() == ((2,),)
        assert not cur.nextset()
    c.close()
    ok("multi_statements")


def found_rows():
    c = connect(database="edge", autocommit=True, client_flag=pymysql.constants.CLIENT.FOUND_ROWS)
    with c.cursor() as cur:
        n = cur.execute("UPDATE t SET name = name WHERE name = 'c'")
        assert n == 1, f"FOUND_ROWS not honoured: {n}"
    c.close()
    ok("found_rows")


def backend_error_codes():
    c = connect(autocommit=True)
    with c.cursor() as cur:
        for sql, code in [
            ("SELECT * FROM edge.nope", 1146),
            ("SELEKT 1", 1064),
            ("CREATE TABLE edge.ck (a INT CHECK (a > 0))", None),
            ("INSERT INTO edge.ck VALUES (-1)", 4025),
        ]:
            try:
                cur.execute(sql)
                assert code is None, f"{sql} should fail"
            except pymysql.err.MySQLError as e:
                assert e.args[0] == code, (sql, e.args)
    c.close()
    ok("backend_error_codes")


def non_utf8_query():
    c = connect(autocommit=True, charset="latin1")
    with c.cursor() as cur:
        cur.execute("SELECT HEX(%s)", ("\u00e9",))
        assert cur.fetchone() == ("E9",)
    c.close()
    ok("non_utf8_query")


setup()
crud()
rollback()
sqlalchemy_orm_rollback()
binary_values()
typed_values()
warning_count()
big_row()
multi_statements()
found_rows()
backend_error_codes()
non_utf8_query()
