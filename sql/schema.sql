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
INSERT IGNORE INTO certus.state VALUES (1, '00000000-0000-0000-0000-000000000000', 0);
