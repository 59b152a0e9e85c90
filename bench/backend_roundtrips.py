#!/usr/bin/env python3
"""What each step of a captured commit costs the backend itself: one XA write (XA START,
UPDATE, XA END, XA PREPARE, SELECT @@last_gtid), the applier's certus.state record from a second
connection, XA COMMIT, then a plain autocommit UPDATE for scale. Times each statement's round
trip from Python (PyMySQL, which adds its own few hundredths of a millisecond) and prints p50
and mean per step.

Usage: target/venv/bin/python bench/backend_roundtrips.py SOCKET [iterations=2000]
   e.g. ... /tmp/certus/node1/mariadb/mysqld.sock   (a dev-cluster backend with the sysbench
        tables in schema sbtest; connects as root over the socket)

Its writes go to one backend behind certus's back (the node logs them as bypassing writes):
run it on a throwaway cluster.
"""
import statistics
import sys
import time

import pymysql


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sock = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    session = pymysql.connect(unix_socket=sock, user="root", database="sbtest", autocommit=True)
    applier = pymysql.connect(unix_socket=sock, user="root", database="sbtest", autocommit=True)
    s, a = session.cursor(), applier.cursor()
    steps = {k: [] for k in
             ["XA START", "UPDATE", "XA END", "XA PREPARE", "@@last_gtid", "certus.state",
              "XA COMMIT", "plain UPDATE"]}

    def timed(step, cur, sql):
        t0 = time.perf_counter()
        cur.execute(sql)
        cur.fetchall()
        steps[step].append(time.perf_counter() - t0)

    for i in range(n):
        xid = f"'rtt-{i}'"
        row = 1 + i % 1000
        timed("XA START", s, f"XA START {xid}")
        timed("UPDATE", s, f"UPDATE sbtest1 SET k = k + 1 WHERE id = {row}")
        timed("XA END", s, f"XA END {xid}")
        timed("XA PREPARE", s, f"XA PREPARE {xid}")
        timed("@@last_gtid", s, "SELECT @@last_gtid")
        timed("certus.state", a, "UPDATE certus.state SET applied_seqno = applied_seqno WHERE id = 1")
        timed("XA COMMIT", s, f"XA COMMIT {xid}")
        timed("plain UPDATE", s, f"UPDATE sbtest1 SET k = k + 1 WHERE id = {row}")
    for step, v in steps.items():
        print(f"{step:14s} p50 {1000 * statistics.median(v):.3f} ms  mean {1000 * statistics.mean(v):.3f} ms")


if __name__ == "__main__":
    main()
