"""An Alembic migration through node A while DML runs through nodes B and C.

Usage: alembic_migration.py USER PASSWORD PORT_A PORT_B PORT_C
Builds an Alembic project (env.py and three revisions) in a temporary directory, upgrades to the
first revision, starts writers on B and C (inserts and updates on the table being migrated,
retrying certification conflicts as oslo.db would), upgrades to head through A, stops the
writers, then checks through every node (causal reads) that schemas and data are identical and
that every acknowledged insert is there. Prints "ok <case>"; any failure exits non-zero.
"""
import os
import re
import sys
import tempfile
import threading
import time

import pymysql
from alembic import command
from alembic.config import Config

USER, PASSWORD = sys.argv[1], sys.argv[2]
PORTS = [int(p) for p in sys.argv[3:6]]
DB = "mig"

ENV_PY = '''
from alembic import context
from sqlalchemy import create_engine

url = context.config.get_main_option("sqlalchemy.url")
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''

REVISIONS = {
    "r1": (None, '''
def upgrade():
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("qty", sa.Integer, nullable=False, server_default="0"),
        mysql_engine="InnoDB",
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=True),
        sa.Column("kind", sa.String(20)),
        mysql_engine="InnoDB",
    )
'''),
    "r2": ("r1", '''
def upgrade():
    op.add_column("items", sa.Column("price", sa.Numeric(10, 2), nullable=True))
    op.create_index("ix_items_name", "items", ["name"])
    op.add_column("events", sa.Column("at", sa.DateTime, nullable=True))
'''),
    "r3": ("r2", '''
def upgrade():
    op.alter_column("items", "qty", existing_type=sa.Integer, type_=sa.BigInteger,
                    existing_nullable=False, existing_server_default="0")
    op.add_column("items", sa.Column("note", sa.String(40), nullable=True))
    # A data migration on a table the writers do not touch: one on their rows would be a
    # transaction that conflicts with them, and its commit (implied by the next DDL) could get
    # 1213, as it could on Galera.
    op.execute("UPDATE events SET kind = 'migrated' WHERE kind IS NULL")
    op.create_unique_constraint("uq_events_kind_item", "events", ["kind", "item_id"])
'''),
}


def ok(case):
    print("ok", case, flush=True)


def connect(port, **kw):
    return pymysql.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD,
                           autocommit=True, **kw)


def project(root):
    versions = os.path.join(root, "versions")
    os.makedirs(versions)
    with open(os.path.join(root, "env.py"), "w") as f:
        f.write(ENV_PY)
    with open(os.path.join(root, "script.py.mako"), "w") as f:
        f.write("")
    for rev, (down, body) in REVISIONS.items():
        with open(os.path.join(versions, f"{rev}.py"), "w") as f:
            f.write(f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
                    f"depends_on = None\nfrom alembic import op\nimport sqlalchemy as sa\n{body}")
    cfg = Config()
    cfg.set_main_option("script_location", root)
    cfg.set_main_option(
        "sqlalchemy.url",
        f"mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:{PORTS[0]}/{DB}")
    return cfg


class Writer(threading.Thread):
    """Inserts rows and bumps quantities through one node until stopped."""

    def __init__(self, port, tag):
        super().__init__(daemon=True)
        self.port, self.tag = port, tag
        self.acked, self.conflicts, self.error = 0, 0, None
        self.stop = threading.Event()

    def run(self):
        try:
            c = connect(self.port, database=DB)
            i = 0
            while not self.stop.is_set() and i < 5000:
                i += 1
                try:
                    with c.cursor() as cur:
                        cur.execute("INSERT INTO items (name, qty) VALUES (%s, %s)",
                                    (f"{self.tag}-{i}", i))
                    self.acked += 1
                    with c.cursor() as cur:
                        cur.execute("UPDATE items SET qty = qty + 1 WHERE name = %s",
                                    (f"{self.tag}-{max(1, i // 2)}",))
                except pymysql.err.OperationalError as e:
                    if e.args[0] != 1213:
                        raise
                    self.conflicts += 1
                    time.sleep(0.01)
            c.close()
        except Exception as e:  # reported by the main thread
            import traceback
            traceback.print_exc()
            self.error = e


def causal(port, sql):
    c = connect(port, database=DB)
    with c.cursor() as cur:
        cur.execute("SET SESSION wsrep_sync_wait = 1")
        cur.execute(sql)
        rows = cur.fetchall()
    c.close()
    return rows


def main():
    c = connect(PORTS[0])
    with c.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB}")
    c.close()
    # Rows for the r3 data migration (the table is created by r1).
    seed_events = True
    with tempfile.TemporaryDirectory() as root:
        cfg = project(os.path.join(root, "alembic"))
        command.upgrade(cfg, "r1")
        if seed_events:
            c = connect(PORTS[0], database=DB)
            with c.cursor() as cur:
                cur.execute("INSERT INTO events (kind) VALUES (NULL), (NULL), ('a')")
            c.close()
        ok("upgrade to r1")
        writers = [Writer(PORTS[1], "b"), Writer(PORTS[2], "c")]
        for w in writers:
            w.start()
        time.sleep(0.5)
        command.upgrade(cfg, "head")
        ok("upgrade to head under load")
        time.sleep(0.5)
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(60)
            assert not w.is_alive(), "writer did not stop"
            assert w.error is None, f"writer failed: {w.error!r}"
            assert w.acked > 0, "a writer committed nothing"
        print("writers", [(w.acked, w.conflicts) for w in writers], flush=True)
    version = [causal(p, "SELECT version_num FROM alembic_version") for p in PORTS]
    assert all(v == (("r3",),) for v in version), version
    ok("alembic_version is r3 everywhere")
    for table in ("items", "events", "alembic_version"):
        # The AUTO_INCREMENT counter differs by design (per-node offsets, as in Galera).
        schemas = [re.sub(r" AUTO_INCREMENT=\d+", "", causal(p, f"SHOW CREATE TABLE {table}")[0][1])
                   for p in PORTS]
        assert schemas[0] == schemas[1] == schemas[2], schemas
        sums = [causal(p, f"CHECKSUM TABLE {table}")[0][1] for p in PORTS]
        assert sums[0] == sums[1] == sums[2], (table, sums)
    assert "bigint" in schemas_of(PORTS[0], "items").lower()
    ok("schemas and data identical")
    for w in writers:
        n = causal(PORTS[0], f"SELECT COUNT(*) FROM items WHERE name LIKE '{w.tag}-%'")[0][0]
        assert n == w.acked, (w.tag, n, w.acked)
    ok("every acknowledged insert is there")


def schemas_of(port, table):
    return causal(port, f"SHOW CREATE TABLE {table}")[0][1]


if __name__ == "__main__":
    main()
