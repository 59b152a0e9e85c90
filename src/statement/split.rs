//! Splitting a multi-statement COM_QUERY (CLIENT_MULTI_STATEMENTS) into its statements.
//!
//! A `;` outside quotes and comments ends a statement, except inside the body of a compound
//! statement: `CREATE PROCEDURE/FUNCTION/TRIGGER/EVENT/PACKAGE ... BEGIN ... END`, `ALTER EVENT
//! ... DO BEGIN ... END`, anonymous `BEGIN NOT ATOMIC ... END` and MariaDB's top-level
//! `IF/CASE/LOOP/WHILE/REPEAT/FOR` blocks. Inside those, a stack of open blocks is kept so that
//! only the `;` that closes the outermost block ends the statement. Plain `BEGIN;` is a
//! transaction start and never opens a block.
//!
//! The block grammar is recognised by keywords, not parsed; where SQL is ambiguous (`IF(...)`
//! the function vs `IF ... THEN` the statement, `REPEAT(...)` vs `REPEAT ... UNTIL`, `FOR UPDATE`
//! vs `FOR i IN ...`) a short, bounded look-ahead decides. Nothing here recurses; the block
//! stack and every look-ahead are bounded, so hostile input costs linear time and memory.
//! This module owns statement boundaries only; it must not classify statements.

use std::ops::Range;

use super::lexer::{Lexer, Token, TokenKind};

/// Deeper nesting than this is not tracked; such a body may be split early, which MariaDB
/// would then reject with a syntax error rather than run differently.
const MAX_BLOCK_DEPTH: usize = 256;

/// How far one `IF ... THEN` / `FOR ... DO` look-ahead scans before deciding "not a block".
const MAX_LOOKAHEAD: usize = 512;

/// Look-ahead steps allowed per `split` call in total, so that input built to make every token
/// look ahead (`a IF a IF ...`) stays linear. Once spent, `IF`/`FOR` no longer open blocks.
const LOOKAHEAD_BUDGET: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Begin,
    Case,
    If,
    Loop,
    While,
    Repeat,
    For,
}

/// The byte ranges of the non-empty statements in `sql`, in order. A range starts at the first
/// non-whitespace byte after the previous `;` (so leading comments and optimizer hints stay) and
/// ends before the terminating `;`, trailing whitespace trimmed. A piece that holds only
/// comments or whitespace is dropped.
///
/// The lexer is streamed (look-aheads clone it), so memory is the output plus a bounded block
/// stack, whatever the size of the query.
pub fn split(sql: &[u8]) -> Vec<Range<usize>> {
    let mut lexer = Lexer::new(sql);
    let mut out = Vec::new();
    let mut piece_start = 0usize;
    let mut in_statement = false;
    let mut prev: Option<Token> = None;
    let mut blocks = Blocks::new();
    let mut budget = LOOKAHEAD_BUDGET;
    while let Some(tok) = lexer.next() {
        if tok.is_punct(b';') && blocks.stack.is_empty() {
            if in_statement {
                out.push(trim(sql, piece_start, tok.start));
            }
            piece_start = tok.end;
            in_statement = false;
            prev = None;
            blocks = Blocks::new();
            continue;
        }
        if !in_statement {
            in_statement = true;
            let head: Vec<Token> = std::iter::once(tok).chain(lexer.clone().take(17)).collect();
            blocks.compound = is_compound_start(sql, &head);
        }
        if blocks.compound {
            blocks.feed(sql, tok, prev.as_ref(), &lexer, &mut budget);
        }
        prev = Some(tok);
    }
    if in_statement {
        out.push(trim(sql, piece_start, sql.len()));
    }
    out
}

/// One part of a multi-statement text, as MariaDB runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A statement, as [`split`] gives it.
    Statement(Range<usize>),
    /// What MariaDB parses after a statement's `;` where [`split`] finds no statement: an empty
    /// statement before another one (`SELECT 1;; SELECT 2`), which MariaDB refuses with 1064
    /// and which ends the batch, or a tail holding comments (`SELECT 1; -- done`), which MariaDB
    /// answers with an OK (1064 when it starts with another `;`). Trailing `;` and whitespace
    /// alone get no answer. A leftover runs nothing: its first token is `;` (the parse fails
    /// there) or it holds only comments. The range reaches to the end of the text (leading
    /// whitespace skipped), as MariaDB's parser sees it, so that the answer is MariaDB's own.
    Leftover(Range<usize>),
}

/// The statements of `sql` and, after them, the leftover MariaDB would answer too (see
/// [`Piece`]); at most one leftover, always last.
pub fn pieces(sql: &[u8]) -> Vec<Piece> {
    let ranges = split(sql);
    let mut out = Vec::with_capacity(ranges.len());
    for (i, r) in ranges.iter().enumerate() {
        out.push(Piece::Statement(r.clone()));
        let gap_end = ranges.get(i + 1).map_or(sql.len(), |n| n.start);
        let gap = sql.get(r.end..gap_end).unwrap_or_default();
        // Between two statements there are only `;`, whitespace and comments.
        let semicolons: Vec<Token> = Lexer::new(gap).collect();
        if semicolons.is_empty() || !semicolons.iter().all(|t| t.is_punct(b';')) {
            continue;
        }
        let after = r.end + semicolons[0].end;
        let tail = sql.get(after..).unwrap_or_default();
        let leftover = if i + 1 == ranges.len() {
            // After the last statement MariaDB ignores further `;` and whitespace, and answers
            // anything else, which can only be comments (OK, or 1064 for `;; -- c`).
            !tail.iter().all(|b| b.is_ascii_whitespace() || *b == b';')
        } else {
            // An empty statement before the next one: 1064, and the batch stops there.
            semicolons.len() > 1
        };
        if leftover {
            let start = after + tail.iter().take_while(|b| b.is_ascii_whitespace()).count();
            out.push(Piece::Leftover(start..sql.len()));
            break;
        }
    }
    out
}

fn trim(sql: &[u8], mut start: usize, mut end: usize) -> Range<usize> {
    while start < end && sql.get(start).is_some_and(u8::is_ascii_whitespace) {
        start += 1;
    }
    while end > start && sql.get(end - 1).is_some_and(u8::is_ascii_whitespace) {
        end -= 1;
    }
    start..end
}

/// Does the statement whose first tokens are `toks` have a body that may contain `;`?
fn is_compound_start(sql: &[u8], toks: &[Token]) -> bool {
    let Some(first) = toks.first() else {
        return false;
    };
    let kw = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_kw(sql, k));
    if first.is_kw(sql, "BEGIN") {
        return kw(1, "NOT") && kw(2, "ATOMIC");
    }
    if ["IF", "CASE", "LOOP", "WHILE", "REPEAT", "FOR"]
        .iter()
        .any(|k| first.is_kw(sql, k))
    {
        return true;
    }
    // `label: BEGIN|LOOP|...`
    if toks.get(1).is_some_and(|t| t.is_punct(b':')) {
        return true;
    }
    if first.is_kw(sql, "CREATE") || first.is_kw(sql, "ALTER") {
        // The object kind follows at most a handful of header words (OR REPLACE, DEFINER =
        // user, AGGREGATE, ...); stop at the first word that names a non-compound object.
        for tok in toks.iter().skip(1) {
            for k in ["PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE"] {
                if tok.is_kw(sql, k) {
                    // ALTER PROCEDURE/FUNCTION take characteristics only; ALTER EVENT may
                    // carry a new `DO` body.
                    return first.is_kw(sql, "CREATE") || k == "EVENT";
                }
            }
            for k in [
                "TABLE", "VIEW", "INDEX", "DATABASE", "SCHEMA", "USER", "ROLE", "SEQUENCE",
                "SERVER",
            ] {
                if tok.is_kw(sql, k) {
                    return false;
                }
            }
        }
    }
    false
}

struct Blocks {
    compound: bool,
    stack: Vec<Block>,
}

impl Blocks {
    fn new() -> Self {
        Blocks {
            compound: false,
            stack: Vec::new(),
        }
    }

    fn push(&mut self, b: Block) {
        if self.stack.len() < MAX_BLOCK_DEPTH {
            self.stack.push(b);
        }
    }

    /// `tok` is the current token, `prev` the one before it in this statement, and `rest` a
    /// lexer positioned just after `tok`.
    fn feed(
        &mut self,
        sql: &[u8],
        tok: Token,
        prev: Option<&Token>,
        rest: &Lexer<'_>,
        budget: &mut usize,
    ) {
        if tok.kind != TokenKind::Word {
            return;
        }
        let next = rest.clone().next();
        let next_is = |k: &str| next.is_some_and(|n| n.is_kw(sql, k));
        let kw = |k: &str| tok.is_kw(sql, k);

        if kw("END") {
            let closes = [
                ("IF", Block::If),
                ("CASE", Block::Case),
                ("LOOP", Block::Loop),
                ("WHILE", Block::While),
                ("REPEAT", Block::Repeat),
                ("FOR", Block::For),
            ]
            .into_iter()
            .find(|(k, _)| next_is(k));
            match closes {
                Some((_, kind)) => {
                    // Only a matching block is closed: a block we failed to see open must not
                    // make `END IF` close the enclosing BEGIN.
                    if self.stack.last() == Some(&kind) {
                        self.stack.pop();
                    }
                }
                None => {
                    // Plain END closes BEGIN or CASE (CASE expressions end with a bare END);
                    // anything above it that never closed was a misread and is dropped.
                    if let Some(pos) = self
                        .stack
                        .iter()
                        .rposition(|b| matches!(b, Block::Begin | Block::Case))
                    {
                        self.stack.truncate(pos);
                    }
                }
            }
            return;
        }
        if prev.is_some_and(|p| p.is_kw(sql, "END")) {
            return;
        }
        if kw("BEGIN") {
            self.push(Block::Begin);
        } else if kw("CASE") {
            self.push(Block::Case);
        } else if kw("LOOP") {
            self.push(Block::Loop);
        } else if kw("WHILE") {
            self.push(Block::While);
        } else if kw("REPEAT") {
            // REPEAT(str, n) is also a string function.
            if !next.is_some_and(|n| n.is_punct(b'(')) || at_statement_start(sql, prev) {
                self.push(Block::Repeat);
            }
        } else if kw("IF") {
            if !in_expression(sql, prev) && finds_before_end(sql, rest.clone(), "THEN", budget) {
                self.push(Block::If);
            }
        } else if kw("FOR") {
            let not_loop = ["EACH", "UPDATE", "SHARE", "SYSTEM_TIME", "PORTION"]
                .iter()
                .any(|k| next_is(k));
            if !not_loop
                && !in_expression(sql, prev)
                && finds_before_end(sql, rest.clone(), "DO", budget)
            {
                self.push(Block::For);
            }
        }
    }
}

/// Is `prev` a token after which a new statement of a block body begins?
fn at_statement_start(sql: &[u8], prev: Option<&Token>) -> bool {
    match prev {
        None => true,
        Some(p) => {
            p.is_punct(b';')
                || p.is_punct(b':')
                || ["BEGIN", "ATOMIC", "THEN", "ELSE", "DO", "LOOP", "REPEAT"]
                    .iter()
                    .any(|k| p.is_kw(sql, k))
        }
    }
}

/// Is `prev` a token after which an expression (not a statement) must follow? Then `IF` there is
/// the IF() function, and `FOR` is not a loop.
fn in_expression(sql: &[u8], prev: Option<&Token>) -> bool {
    let Some(p) = prev else { return false };
    match p.kind {
        TokenKind::Punct(b) => !matches!(b, b';' | b':' | b')'),
        TokenKind::Word => [
            "WHEN", "IF", "ELSEIF", "AND", "OR", "NOT", "XOR", "IS", "LIKE", "IN", "BETWEEN",
            "UNTIL", "RETURN", "SELECT", "WHERE", "HAVING", "DIV", "MOD", "REGEXP", "RLIKE",
            "CASE", "WHILE", "ON", "BY", "SET", "VALUES", "INTERVAL", "DEFAULT", "DISTINCT",
        ]
        .iter()
        .any(|k| p.is_kw(sql, k)),
        _ => true,
    }
}

/// Scans ahead (skipping parenthesised groups) for `want` before the statement or the
/// enclosing construct visibly ends. `IF(a, b, c)` inside `CASE WHEN ... THEN IF(..) WHEN`
/// meets WHEN first; `IF a THEN` meets THEN; `DROP TABLE IF EXISTS t;` meets `;`.
fn finds_before_end(sql: &[u8], toks: Lexer<'_>, want: &str, budget: &mut usize) -> bool {
    let mut depth = 0usize;
    for tok in toks.take(MAX_LOOKAHEAD) {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        match tok.kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            TokenKind::Punct(b';') if depth == 0 => return false,
            TokenKind::Word if depth == 0 => {
                if tok.is_kw(sql, want) {
                    return true;
                }
                if ["WHEN", "END", "ELSE", "ELSEIF", "BEGIN", "THEN", "DO"]
                    .iter()
                    .any(|k| tok.is_kw(sql, k))
                {
                    return false;
                }
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod pieces_tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        pieces(sql.as_bytes())
            .into_iter()
            .map(|p| match p {
                Piece::Statement(r) => format!("S:{}", &sql[r]),
                Piece::Leftover(r) => format!("L:{}", &sql[r]),
            })
            .collect()
    }

    #[test]
    fn leftovers_are_what_mariadb_answers_after_the_last_statement() {
        assert_eq!(texts("SELECT 1"), ["S:SELECT 1"]);
        assert_eq!(texts("SELECT 1;"), ["S:SELECT 1"]);
        assert_eq!(texts("SELECT 1; \n"), ["S:SELECT 1"]);
        assert_eq!(texts("SELECT 1; SELECT 2;"), ["S:SELECT 1", "S:SELECT 2"]);
        // An empty statement: MariaDB stops there with 1064; nothing after it runs.
        assert_eq!(texts("SELECT 1;; SELECT 2"), ["S:SELECT 1", "L:; SELECT 2"]);
        // Trailing semicolons alone get no answer; with a comment they do.
        assert_eq!(
            texts("INSERT INTO t VALUES (1);; ;"),
            ["S:INSERT INTO t VALUES (1)"]
        );
        assert_eq!(texts("SELECT 1;; -- c"), ["S:SELECT 1", "L:; -- c"]);
        assert_eq!(texts("SELECT 1; -- c\n;"), ["S:SELECT 1", "L:-- c\n;"]);
        assert_eq!(
            texts("SELECT 1; /* c */; SELECT 2"),
            ["S:SELECT 1", "L:/* c */; SELECT 2"]
        );
        // A tail of comments gets an OK of its own.
        assert_eq!(texts("SELECT 1; -- done"), ["S:SELECT 1", "L:-- done"]);
        assert_eq!(
            texts("SELECT 1; SELECT 2; # x\n"),
            ["S:SELECT 1", "S:SELECT 2", "L:# x\n"]
        );
        // A comment before a statement belongs to it; one after its last token, before no
        // `;`, too.
        assert_eq!(
            texts("SELECT 1; /* c */ SELECT 2 -- end"),
            ["S:SELECT 1", "S:/* c */ SELECT 2 -- end"]
        );
        // Semicolons inside quotes and compound bodies are no boundaries.
        assert_eq!(
            texts("SELECT ';;'; CREATE PROCEDURE p() BEGIN SELECT 1; END;"),
            [
                "S:SELECT ';;'",
                "S:CREATE PROCEDURE p() BEGIN SELECT 1; END"
            ]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(sql: &str) -> Vec<&str> {
        split(sql.as_bytes()).into_iter().map(|r| &sql[r]).collect()
    }

    #[test]
    fn splits_at_semicolons_outside_quotes_and_comments() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1", &["SELECT 1"]),
            ("SELECT 1;", &["SELECT 1"]),
            ("SELECT 1; SELECT 2", &["SELECT 1", "SELECT 2"]),
            ("  SELECT 1 ;\n\tSELECT 2 ;  ", &["SELECT 1", "SELECT 2"]),
            ("SELECT ';'; SELECT \";\"", &["SELECT ';'", "SELECT \";\""]),
            (
                "SELECT `a;b` FROM t; DO 1",
                &["SELECT `a;b` FROM t", "DO 1"],
            ),
            ("SELECT 'it''s;'; DO 1", &["SELECT 'it''s;'", "DO 1"]),
            ("SELECT 'a\\';'; DO 1", &["SELECT 'a\\';'", "DO 1"]),
            ("SELECT 1 -- x;y\n; DO 1", &["SELECT 1 -- x;y", "DO 1"]),
            ("SELECT 1 # x;y\n; DO 1", &["SELECT 1 # x;y", "DO 1"]),
            ("SELECT 1 /* ; */; DO 1", &["SELECT 1 /* ; */", "DO 1"]),
            (";;SELECT 1;;; ;", &["SELECT 1"]),
            ("SELECT 1; -- trailing comment", &["SELECT 1"]),
            (
                "SELECT 1; /* only a comment */ ;DO 2",
                &["SELECT 1", "DO 2"],
            ),
            (
                "/*!40101 SET NAMES utf8 */; DO 1",
                &["/*!40101 SET NAMES utf8 */", "DO 1"],
            ),
            ("/* hint */ SELECT 1", &["/* hint */ SELECT 1"]),
            ("", &[]),
            ("   \n ", &[]),
        ];
        for (sql, want) in cases {
            assert_eq!(pieces(sql), *want, "{sql}");
        }
    }

    #[test]
    fn plain_begin_is_a_transaction_not_a_block() {
        assert_eq!(
            pieces("BEGIN; UPDATE t SET a=1; COMMIT"),
            ["BEGIN", "UPDATE t SET a=1", "COMMIT"]
        );
        assert_eq!(
            pieces("BEGIN WORK; SELECT 1; END"),
            ["BEGIN WORK", "SELECT 1", "END"]
        );
    }

    #[test]
    fn anonymous_compound_block_is_one_statement() {
        let sql = "BEGIN NOT ATOMIC DECLARE x INT DEFAULT 0; SET x = 1; \
                   IF x > 0 THEN SELECT 1; ELSE SELECT 2; END IF; END; SELECT 3";
        let got = pieces(sql);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].ends_with("END IF; END"));
        assert_eq!(got[1], "SELECT 3");
    }

    #[test]
    fn procedure_bodies_are_not_split() {
        let cases: &[(&str, usize)] = &[
            (
                "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END; CALL p()",
                2,
            ),
            (
                "CREATE DEFINER=`root`@`localhost` PROCEDURE p(IN a INT) \
                 BEGIN DECLARE i INT DEFAULT 0; \
                 lbl: LOOP SET i = i + 1; IF i > a THEN LEAVE lbl; END IF; END LOOP lbl; \
                 WHILE i > 0 DO SET i = i - 1; END WHILE; \
                 REPEAT SET i = i + 1; UNTIL i > 3 END REPEAT; \
                 CASE i WHEN 1 THEN SELECT 1; ELSE SELECT CASE WHEN i THEN 2 END; END CASE; \
                 BEGIN SELECT IF(i, 1, 2); SELECT REPEAT('a', 2); END; \
                 DROP TABLE IF EXISTS t; CREATE TABLE IF NOT EXISTS t (a INT); \
                 FOR j IN 1..3 DO SELECT j; END FOR; \
                 SELECT * FROM t FOR UPDATE; \
                 END; SELECT 'after'",
                2,
            ),
            (
                "CREATE OR REPLACE DEFINER='a'@'%' FUNCTION f(x INT) RETURNS INT DETERMINISTIC \
                 BEGIN IF x > 1 THEN RETURN IF(x > 2, 3, 4); ELSEIF x = 1 THEN RETURN 1; \
                 ELSE IF x = 0 THEN RETURN 0; END IF; END IF; RETURN -1; END; SELECT f(1)",
                2,
            ),
            (
                "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW \
                 BEGIN SET NEW.a = 1; SET NEW.b = 2; END; INSERT INTO t VALUES (1)",
                2,
            ),
            (
                "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1; DO 1",
                2,
            ),
            (
                "CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO BEGIN DELETE FROM t; DO 1; END; DO 2",
                2,
            ),
            ("ALTER EVENT e DO BEGIN DELETE FROM t; DO 1; END; DO 2", 2),
            ("CREATE FUNCTION f() RETURNS INT RETURN 1; SELECT f()", 2),
            (
                "CREATE PROCEDURE p() IF 1 THEN SELECT 1; SELECT 2; END IF; CALL p()",
                2,
            ),
            (
                "IF @a THEN SELECT 1; ELSE SELECT 2; END IF; SELECT 3; SELECT 4",
                3,
            ),
            ("lbl: BEGIN NOT ATOMIC SELECT 1; END lbl; SELECT 2", 2),
            ("WHILE @i < 3 DO SET @i = @i + 1; END WHILE; SELECT @i", 2),
            (
                "CREATE PROCEDURE p() BEGIN BEGIN BEGIN SELECT 1; END; END; END; SELECT 2",
                2,
            ),
            // Not compound: a plain CREATE TABLE with a column named like a keyword.
            ("CREATE TABLE t (`begin` INT); SELECT 1", 2),
            ("ALTER PROCEDURE p COMMENT 'x'; SELECT 1", 2),
        ];
        for (sql, n) in cases {
            let got = pieces(sql);
            assert_eq!(got.len(), *n, "{sql}\n=> {got:#?}");
        }
    }

    #[test]
    fn procedure_body_pieces_are_exact() {
        let sql = "CREATE PROCEDURE p() BEGIN SELECT 1; END ; CALL p();";
        assert_eq!(
            pieces(sql),
            ["CREATE PROCEDURE p() BEGIN SELECT 1; END", "CALL p()"]
        );
    }

    #[test]
    fn deep_nesting_is_bounded_and_does_not_panic() {
        let mut sql = String::from("CREATE PROCEDURE p() ");
        for _ in 0..2000 {
            sql.push_str("BEGIN ");
        }
        sql.push_str("SELECT 1; ");
        for _ in 0..2000 {
            sql.push_str("END; ");
        }
        sql.push_str("SELECT 2");
        let got = pieces(&sql);
        // Past the tracked depth the body is split early; what matters is that it terminates,
        // stays within the input and keeps the last statement.
        assert!(!got.is_empty());
        assert_eq!(got.last().copied(), Some("SELECT 2"));
    }

    #[test]
    fn lookahead_heavy_input_stays_linear() {
        // Every `IF` here would look ahead 512 tokens; the budget caps the total work.
        let mut sql = String::from("CREATE PROCEDURE p() BEGIN ");
        for _ in 0..200_000 {
            sql.push_str("a IF ");
        }
        sql.push_str("; END; SELECT 2");
        let started = std::time::Instant::now();
        let got = pieces(&sql);
        assert_eq!(got.last().copied(), Some("SELECT 2"));
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn non_utf8_bytes_do_not_disturb_splitting() {
        let sql: &[u8] = b"SELECT _latin1'\xe9;\xff'; SELECT caf\xe9";
        let got = split(sql);
        assert_eq!(got.len(), 2);
        assert_eq!(&sql[got[0].clone()], b"SELECT _latin1'\xe9;\xff'");
        assert_eq!(&sql[got[1].clone()], b"SELECT caf\xe9");
    }
}
