-- certus's internal schema on every backend. Installed by the node at start with sql_log_bin=0
-- (it is local state, never replicated) and safe to run again: every statement is idempotent.
CREATE DATABASE IF NOT EXISTS certus;
-- The applied seqno lives in the same InnoDB transaction as the data it describes, so apply is
-- exactly-once across crashes (DESIGN §7).
CREATE TABLE IF NOT EXISTS certus.state (
  id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
  cluster_uuid CHAR(36) NOT NULL,
  applied_seqno BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB;
-- The xid of the origin's own prepared XA that the applier claimed for commit at applied_seqno
-- (DESIGN §7, the origin commits its own XA). It is written before the XA COMMIT, so a crash in
-- between leaves a prepared XA that start-up commits; every other orphaned one is rolled back.
ALTER TABLE certus.state ADD COLUMN IF NOT EXISTS origin_xid VARCHAR(128) NOT NULL DEFAULT '';
INSERT IGNORE INTO certus.state (id, cluster_uuid, applied_seqno)
  VALUES (1, '00000000-0000-0000-0000-000000000000', 0);
