-- The node's service account (managed mode creates it on first start, with a random password it
-- keeps in <data_dir>/service.cnf, mode 0600). The applier replays row events with BINLOG (which
-- needs BINLOG REPLAY and bypasses table privileges) and runs every replicated DDL, including
-- CREATE USER and GRANT, so the account holds every privilege. Clients can never log in as it
-- through a node. In external mode the operator creates it the same way.
-- {user} and {password} are substituted by the node; the password is never logged.
CREATE USER IF NOT EXISTS '{user}'@'localhost' IDENTIFIED BY '{password}';
ALTER USER '{user}'@'localhost' IDENTIFIED BY '{password}';
GRANT ALL PRIVILEGES ON *.* TO '{user}'@'localhost' WITH GRANT OPTION;
