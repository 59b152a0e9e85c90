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
-- The xids (space-separated) of the origin's own prepared XAs that the applier claimed for
-- commit, the last at applied_seqno (DESIGN §7, the origin commits its own XA). They are written
-- before the XA COMMITs, so a crash in between leaves prepared XAs that start-up commits; every
-- other orphaned one is rolled back. Up to ORIGIN_BATCH_MAX xids of at most 60 bytes each.
ALTER TABLE certus.state ADD COLUMN IF NOT EXISTS origin_xid VARCHAR(4096) NOT NULL DEFAULT '';
ALTER TABLE certus.state MODIFY COLUMN origin_xid VARCHAR(4096) NOT NULL DEFAULT '';
INSERT IGNORE INTO certus.state (id, cluster_uuid, applied_seqno)
  VALUES (1, '00000000-0000-0000-0000-000000000000', 0);
