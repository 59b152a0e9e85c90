"""oslo.db's deadlock retry against three certus nodes at once.

Usage: oslo_counter.py USER PASSWORD PORT_A PORT_B PORT_C
Threads on every node do read-modify-write increments (SELECT the value, UPDATE it to value+1)
inside transactions wrapped in oslo_db.api.wrap_db_retry(retry_on_deadlock=True). A
certification conflict reaches oslo.db as 1213, which its engine filters turn into DBDeadlock,
and the decorator retries. At the end every counter must equal the increments that were
acknowledged (a lost update would leave it lower). Prints "ok <case>"; failures exit non-zero.
"""
import sys
import threading

import sqlalchemy as sa
from oslo_db import api as oslo_api
from oslo_db.sqlalchemy import engines

USER, PASSWORD = sys.argv[1], sys.argv[2]
PORTS = [int(p) for p in sys.argv[3:6]]
DB = "oslo"
COUNTERS = 3
THREADS_PER_NODE = 3
INCREMENTS = 15


def ok(case):
    print("ok", case, flush=True)


def engine(port, db=DB):
    return engines.create_engine(
        f"mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}", max_retries=3)


class Incrementer(threading.Thread):
    def __init__(self, port, seed):
        super().__init__(daemon=True)
        self.engine = engine(port)
        self.seed = seed
        self.acked = [0] * COUNTERS
        self.attempts = 0
        self.error = None

    def run(self):
        @oslo_api.wrap_db_retry(max_retries=100, retry_interval=0.01, inc_retry_interval=True,
                                max_retry_interval=0.2, retry_on_deadlock=True)
        def increment(counter):
            self.attempts += 1
            with self.engine.begin() as conn:
                v = conn.execute(sa.text("SELECT v FROM counters WHERE id = :id"),
                                 {"id": counter}).scalar_one()
                conn.execute(sa.text("UPDATE counters SET v = :v WHERE id = :id"),
                             {"v": v + 1, "id": counter})

        try:
            for i in range(INCREMENTS):
                counter = (self.seed + i) % COUNTERS
                increment(counter)
                self.acked[counter] += 1
        except Exception as e:  # reported by the main thread
            self.error = e


def main():
    setup = engine(PORTS[0], db="mysql")
    with setup.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DB}"))
        conn.execute(sa.text(f"CREATE DATABASE {DB}"))
    with engine(PORTS[0]).begin() as conn:
        conn.execute(sa.text("CREATE TABLE counters (id INT PRIMARY KEY, v INT NOT NULL)"))
        for i in range(COUNTERS):
            conn.execute(sa.text("INSERT INTO counters VALUES (:id, 0)"), {"id": i})
    ok("setup")
    threads = [Incrementer(port, seed) for port in PORTS for seed in range(THREADS_PER_NODE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
        assert not t.is_alive(), "an incrementer did not finish"
        assert t.error is None, f"an incrementer failed: {t.error!r}"
    # Every attempt beyond one per increment was a retry after DBDeadlock (1213).
    retries = sum(t.attempts for t in threads) - len(threads) * INCREMENTS
    acked = [sum(t.acked[c] for t in threads) for c in range(COUNTERS)]
    print("acked", acked, "deadlock retries", retries, flush=True)
    assert sum(acked) == len(threads) * INCREMENTS, acked
    assert retries > 0, "no conflict was ever retried: the test did not contend"
    for port in PORTS:
        with engine(port).connect() as conn:
            conn.execute(sa.text("SET SESSION wsrep_sync_wait = 1"))
            final = [conn.execute(sa.text("SELECT v FROM counters WHERE id = :id"),
                                  {"id": c}).scalar_one() for c in range(COUNTERS)]
        assert final == acked, (port, final, acked)
    ok("counters equal the acknowledged increments on every node")


if __name__ == "__main__":
    main()
