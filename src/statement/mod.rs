//! What a client's SQL text is, without reimplementing SQL: the quote- and comment-aware lexer
//! (`lexer`), the multi-statement splitter that keeps compound bodies whole (`split`), the
//! classifier that tells the session layer whether a statement is a read, a write, transaction
//! control, session state, TOI DDL, a strict-mode rejection, KILL or a prepared statement
//! (`classify`), the `CONNECTION_ID()` rewrite (`rewrite`), and what a write statement or a
//! stored-program body names for strict mode (`targets`, `program`).
//!
//! Everything here is pure: bytes in, facts out, no I/O, no session state, no policy. Input is
//! `&[u8]` because COM_QUERY may carry non-UTF-8 text; no input makes these functions panic, and
//! memory stays proportional to the input. Callers (frontend/session) own what to do with the
//! answers; this module must not reach into them.
//!
//! Known limits, chosen deliberately: the lexer assumes backslash escapes are on and `"..."` is a
//! string (the defaults; `NO_BACKSLASH_ESCAPES`/`ANSI_QUOTES` sessions can mis-lex a string
//! ending in a backslash), multi-byte charsets whose trailing bytes can be 0x5C (sjis, gbk, big5,
//! cp932) are not modelled, and executable comments are always treated as executed whatever
//! their version number.

mod classify;
mod lexer;
mod program;
mod rewrite;
mod split;
mod targets;
pub mod wsrep;

pub use classify::{
    classify, AdminKind, Assignment, Autocommit, Completion, Ddl, DdlKind, FlushKind, ObjectName,
    ReadKind, Rejection, SetTarget, Statement, TransactionScope, UserLockFunction, WriteKind,
};
pub use program::{call_target, dynamic_source, program_effects, DynamicSource, ProgramEffects};
pub use rewrite::rewrite_connection_id;
pub use split::{pieces, split, Piece};
pub use targets::write_targets;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::Rng;

    /// Fragments that steer random input into the interesting lexer and grammar states
    /// (unterminated quotes and comments, executable comments, block keywords).
    const FRAGMENTS: &[&[u8]] = &[
        b"'",
        b"\"",
        b"`",
        b"\\",
        b"/*",
        b"*/",
        b"/*!",
        b"/*M!100100",
        b"--",
        b"-- ",
        b"#",
        b"\n",
        b";",
        b"(",
        b")",
        b",",
        b"@",
        b"@@",
        b".",
        b":",
        b"=",
        b" ",
        b"BEGIN",
        b"END",
        b"IF",
        b"THEN",
        b"CASE",
        b"WHEN",
        b"LOOP",
        b"WHILE",
        b"DO",
        b"REPEAT",
        b"UNTIL",
        b"FOR",
        b"NOT ATOMIC",
        b"CREATE PROCEDURE p() ",
        b"SELECT",
        b"SET",
        b"autocommit",
        b"KILL",
        b"QUERY",
        b"ID",
        b"99999999999999999999",
        b"PREPARE",
        b"FROM",
        b"EXECUTE",
        b"IMMEDIATE",
        b"ANALYZE",
        b"STATEMENT",
        b"CONNECTION_ID",
        b"GET_LOCK",
        b"\xff",
        b"\xe9",
        b"\x00",
        b"INSERT",
        b"WITH",
        b"DROP",
        b"TABLE",
        b"TEMPORARY",
        b"RENAME",
        b"TO",
    ];

    fn random_input(rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        let parts = rng.below(24);
        for _ in 0..parts {
            if rng.below(3) == 0 {
                let n = rng.below(6);
                for _ in 0..n {
                    out.push((rng.next() & 0xff) as u8);
                }
            } else {
                out.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            }
        }
        out
    }

    #[test]
    fn random_bytes_never_panic_and_ranges_stay_in_bounds() {
        let mut rng = Rng(0x5EED_CE27_0051_0001);
        for _ in 0..20_000 {
            let input = random_input(&mut rng);
            let pieces = split(&input);
            let mut last_end = 0;
            for r in &pieces {
                assert!(r.start <= r.end && r.end <= input.len(), "{input:?} {r:?}");
                assert!(r.start >= last_end, "overlapping pieces for {input:?}");
                last_end = r.end;
                let stmt = &input[r.clone()];
                let s = classify(stmt);
                let _ = (s.rejection(), s.implicit_commit(), s.autocommit());
                if let Some(out) = rewrite_connection_id(stmt, 42) {
                    // The replacement is longer than the shortest call text.
                    assert!(out.len() > stmt.len());
                }
            }
            let _ = classify(&input);
            if let Some(out) = rewrite_connection_id(&input, u32::MAX) {
                assert_ne!(out, input, "a rewrite must change something");
            }
        }
    }

    #[test]
    fn rewrite_none_iff_no_call_in_random_input() {
        let mut rng = Rng(0xC0FF_EE00_1234_5678);
        for _ in 0..2_000 {
            let mut input = random_input(&mut rng);
            // Without the word there is nothing to rewrite, whatever else the input holds.
            while let Some(pos) = input
                .windows(13)
                .position(|w| w.eq_ignore_ascii_case(b"CONNECTION_ID"))
            {
                input[pos] = b'x';
            }
            assert_eq!(rewrite_connection_id(&input, 1), None, "{input:?}");
        }
    }

    #[test]
    fn split_then_classify_a_mysqldump_style_script() {
        let script = b"/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n\
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n\
DROP TABLE IF EXISTS `t`;\n\
CREATE TABLE `t` (`id` int NOT NULL, `v` varchar(10) DEFAULT ';', PRIMARY KEY (`id`));\n\
LOCK TABLES `t` WRITE;\n\
INSERT INTO `t` VALUES (1,'a;b'),(2,'c\\'d');\n\
UNLOCK TABLES;\n\
DELIMITER_IS_A_CLIENT_COMMAND;\n\
CREATE DEFINER=`root`@`localhost` PROCEDURE `p`()\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n\
SELECT CONNECTION_ID();";
        let pieces: Vec<Statement> = split(script)
            .into_iter()
            .map(|r| classify(&script[r]))
            .collect();
        let kinds: Vec<&str> = pieces
            .iter()
            .map(|s| match s {
                Statement::Set(_) => "set",
                Statement::Ddl(d) if d.kind == DdlKind::DropTable => "drop",
                Statement::Ddl(d) if d.kind == DdlKind::CreateTable => "create",
                Statement::Ddl(d) if d.kind == DdlKind::CreateProcedure => "proc",
                Statement::LockTables => "lock",
                Statement::Write(WriteKind::Insert) => "insert",
                Statement::UnlockTables => "unlock",
                Statement::Read(ReadKind::Select { locking: false, .. }) => "select",
                Statement::Other => "other",
                _ => "unexpected",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "set", "set", "drop", "create", "lock", "insert", "unlock", "other", "proc",
                "select"
            ]
        );
    }
}
