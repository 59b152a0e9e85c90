"""The wsrep status surfaces through a certus node, read with PyMySQL as monitoring scripts and
oslo.db-based services read them.

Usage: status_surfaces.py HOST PORT USER PASSWORD NODE_NAME INCOMING_ADDRESSES
Prints "ok <case>" for every case that passed; any failure raises and exits non-zero.
"""
import sys

import pymysql

HOST, PORT, USER, PASSWORD, NODE, INCOMING = (
    sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])


def ok(case):
    print("ok", case, flush=True)


def rows(cur, sql):
    cur.execute(sql)
    return {name: value for name, value in cur.fetchall()}


c = pymysql.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, autocommit=True)
with c.cursor() as cur:
    st = rows(cur, "SHOW STATUS LIKE 'wsrep%'")
    expected = {
        "wsrep_cluster_size": "3",
        "wsrep_cluster_status": "Primary",
        "wsrep_local_state": "4",
        "wsrep_local_state_comment": "Synced",
        "wsrep_ready": "ON",
        "wsrep_connected": "ON",
        "wsrep_evs_state": "OPERATIONAL",
        "wsrep_incoming_addresses": INCOMING,
    }
    for name, value in expected.items():
        assert st.get(name) == value, (name, st.get(name), value)
    for name in ("wsrep_last_committed", "wsrep_local_commits", "wsrep_replicated",
                 "wsrep_received", "wsrep_local_cert_failures", "wsrep_local_bf_aborts",
                 "wsrep_local_recv_queue", "wsrep_cluster_conf_id", "wsrep_local_index"):
        assert st.get(name, "").isdigit(), (name, st.get(name))
    assert float(st["wsrep_flow_control_paused"]) >= 0.0
    assert len(st["wsrep_cluster_state_uuid"]) == 36, st["wsrep_cluster_state_uuid"]
    assert st["wsrep_local_state_uuid"] == st["wsrep_cluster_state_uuid"]
    assert all(name.startswith("wsrep") for name in st), list(st)
    ok("show_status")

    g = rows(cur, "SHOW GLOBAL STATUS LIKE 'wsrep_cluster_s%'")
    assert g == {"wsrep_cluster_size": "3", "wsrep_cluster_state_uuid":
                 st["wsrep_cluster_state_uuid"], "wsrep_cluster_status": "Primary"}, g
    ok("show_global_status_like")

    v = rows(cur, "SHOW VARIABLES LIKE 'wsrep%'")
    assert v["wsrep_on"] == "ON", v
    assert v["wsrep_node_name"] == NODE, v
    assert v["wsrep_cluster_address"].startswith("gcomm://"), v
    assert v["wsrep_sync_wait"] == "0", v
    assert v["wsrep_osu_method"] == "TOI", v
    ok("show_variables")

    cur.execute("SELECT @@wsrep_on, @@wsrep_node_name, @@wsrep_sync_wait, @@session.wsrep_sync_wait")
    assert cur.fetchone() == (1, NODE, 0, 0)
    cur.execute("SET SESSION wsrep_sync_wait = 1")
    cur.execute("SELECT @@wsrep_sync_wait")
    assert cur.fetchone() == (1,)
    cur.execute("SET SESSION wsrep_sync_wait = 0")
    ok("select_variables")

    # The monitor queries of ProxySQL, MaxScale and healthcheck.sh --galera_online.
    cur.execute("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                "WHERE VARIABLE_NAME = 'wsrep_local_state'")
    assert cur.fetchone() == ("4",)
    cur.execute("select 1 from information_schema.global_status "
                "where variable_name='wsrep_ready' and variable_value='ON'")
    assert cur.fetchone() == (1,)
    cur.execute("SELECT variable_value FROM performance_schema.global_status "
                "WHERE variable_name = 'wsrep_incoming_addresses'")
    assert cur.fetchone() == (INCOMING,)
    ok("monitor_queries")
c.close()
