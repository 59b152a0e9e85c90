"""Multi-statement batches with PyMySQL (CLIENT.MULTI_STATEMENTS), through a certus node and on a
plain MariaDB, compared result by result.

Usage: multi_statement.py SOCKET SVC_USER SVC_PASSWORD PORT USER PASSWORD
The plain server is reached on SOCKET as SVC_USER with the binlog off (database `plain`); the node
on 127.0.0.1:PORT as USER (database `ms`). Both databases hold an empty table t (id INT PRIMARY KEY).
Prints "ok <case>" when the transcripts are equal; any difference raises and exits non-zero.
"""
import sys

import pymysql
from pymysql.constants import CLIENT

SOCKET, SVC_USER, SVC_PASSWORD, PORT, USER, PASSWORD = sys.argv[1:7]

# Status bits the client acts on: in transaction, autocommit, more results exist.
STATUS_MASK = 0x0001 | 0x0002 | 0x0008

BATCHES = [
    "BEGIN; INSERT INTO t VALUES (1); COMMIT; SELECT * FROM t",
    "INSERT INTO t VALUES (2); INSERT INTO t VALUES (2); INSERT INTO t VALUES (3)",
    "SELECT COUNT(*) FROM t",
    "BEGIN; INSERT INTO t VALUES (4); SELECT @@in_transaction; ROLLBACK; SELECT COUNT(*) FROM t",
    "CREATE TABLE u (id INT PRIMARY KEY); INSERT INTO u VALUES (1); SELECT * FROM u; DROP TABLE u",
    "SET autocommit = 0; INSERT INTO t VALUES (5); COMMIT; SET autocommit = 1",
    "SELECT 'x;y' AS `a;b` /* ; */; SELECT 1 -- ;\n; SELECT 2",
    "INSERT INTO t VALUES (6); SELEC 7; INSERT INTO t VALUES (8)",
    # Empty statements and comment tails: 1064 and OK, as MariaDB's parser answers them.
    "SELECT 1;; SELECT 2",
    "INSERT INTO t VALUES (20);;",
    "SELECT COUNT(*) FROM t WHERE id = 20",
    "SELECT 1; -- trailing",
    "SELECT 1; /* c */; SELECT 2",
    "SELECT 1; SELECT 2; # x\n",
    "SELECT 1;; -- c",
    "SELECT 1; -- c\n;",
    "SELECT 1; SELECT 2;;",
    "SELECT id FROM t ORDER BY id",
]


def transcript(conn, sql):
    out = []
    cur = conn.cursor()
    try:
        cur.execute(sql)
        while True:
            r = conn._result
            status = None if r.server_status is None else r.server_status & STATUS_MASK
            cols = [d[0] for d in (r.description or [])]
            out.append(("result", r.affected_rows, status, r.warning_count, r.message, cols, r.rows))
            if not cur.nextset():
                break
    except pymysql.err.MySQLError as e:
        out.append(("error", e.args[0]))
    return out


def main():
    plain = pymysql.connect(unix_socket=SOCKET, user=SVC_USER, password=SVC_PASSWORD,
                            database="plain", autocommit=True,
                            client_flag=CLIENT.MULTI_STATEMENTS,
                            init_command="SET SESSION sql_log_bin = 0")
    node = pymysql.connect(host="127.0.0.1", port=int(PORT), user=USER, password=PASSWORD,
                           database="ms", autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)
    for sql in BATCHES:
        want = transcript(plain, sql)
        got = transcript(node, sql)
        print(repr(sql), "->", got, flush=True)
        assert got == want, f"{sql!r}:\n certus {got}\n mariadb {want}"
    print("ok pymysql transcripts equal", flush=True)


main()
