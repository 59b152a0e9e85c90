//! The byte-level SQL lexer: turns one COM_QUERY text into tokens with byte ranges, skipping
//! whitespace and comments while keeping the bodies of executable comments (`/*! */`, `/*M! */`)
//! as tokens, because MariaDB executes them. It works on bytes, not `str`: a query may carry
//! latin1 text or `_binary` literals, and every byte at or above 0x80 is treated as an identifier
//! byte, exactly where MariaDB's default lexer would accept a multi-byte letter.
//!
//! It owns no grammar: what a token *means* is decided by `split`, `classify` and `rewrite`.
//! It never panics and allocates nothing: callers collect the tokens they need.
//!
//! Assumed session settings: backslash escapes in strings are on (no `NO_BACKSLASH_ESCAPES`) and
//! `"..."` is a string (no `ANSI_QUOTES`); `DoubleQuoted` is kept distinct so a caller can still
//! treat it as an identifier.

/// What kind of lexeme a token is. Keywords are plain `Word`s: the grammar decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// An unquoted identifier, keyword or number (`select`, `t1`, `42`, `0x1f`, `_binary`).
    Word,
    /// A backtick-quoted identifier, quotes included in the range.
    QuotedIdent,
    /// A `'...'` string literal, quotes included.
    String,
    /// A `"..."` literal: a string by default, an identifier under `ANSI_QUOTES`.
    DoubleQuoted,
    /// `@name`, `@'name'`, `` @`name` ``, `@"name"`.
    UserVar,
    /// `@@name`, `@@session.name`, `@@global.name`.
    SysVar,
    /// Any other single byte (`;`, `(`, `,`, `=`, `.`, ...).
    Punct(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Token {
    pub(crate) fn text<'a>(&self, sql: &'a [u8]) -> &'a [u8] {
        sql.get(self.start..self.end).unwrap_or(&[])
    }

    /// Case-insensitive keyword test; only unquoted words can be keywords.
    pub(crate) fn is_kw(&self, sql: &[u8], kw: &str) -> bool {
        self.kind == TokenKind::Word && self.text(sql).eq_ignore_ascii_case(kw.as_bytes())
    }

    pub(crate) fn is_punct(&self, p: u8) -> bool {
        self.kind == TokenKind::Punct(p)
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Iterator over the tokens of `sql`. Cloning it is cheap and gives an independent look-ahead.
#[derive(Clone)]
pub(crate) struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
    /// Inside `/*! ... */`: the next `*/` closes the executable comment, not a token.
    in_executable: bool,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(sql: &'a [u8]) -> Self {
        Lexer {
            sql,
            pos: 0,
            in_executable: false,
        }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.sql.get(i).copied()
    }

    fn skip_to_line_end(&mut self) {
        while let Some(b) = self.at(self.pos) {
            self.pos += 1;
            if b == b'\n' {
                break;
            }
        }
    }

    /// `pos` is at `/*`. Executable comments only consume their opener (and version number).
    fn skip_block_comment(&mut self) {
        let body = self.pos + 2;
        let executable_at = match (self.at(body), self.at(body + 1)) {
            (Some(b'!'), _) => Some(body + 1),
            (Some(b'M' | b'm'), Some(b'!')) => Some(body + 2),
            _ => None,
        };
        if let Some(mut p) = executable_at {
            // The optional version: 5 digits (MySQL style) or 6 (MariaDB `/*M!100100`).
            let mut digits = 0;
            while digits < 6 && self.at(p).is_some_and(|b| b.is_ascii_digit()) {
                p += 1;
                digits += 1;
            }
            self.pos = p;
            self.in_executable = true;
            return;
        }
        let mut p = body;
        loop {
            match (self.at(p), self.at(p + 1)) {
                (Some(b'*'), Some(b'/')) => {
                    self.pos = p + 2;
                    return;
                }
                (Some(_), _) => p += 1,
                (None, _) => {
                    self.pos = p;
                    return;
                }
            }
        }
    }

    /// Scans a quoted run starting at `pos` (the opening quote). Backslash escapes apply to
    /// strings only; a doubled quote is an escaped quote in all three forms. An unterminated
    /// quote runs to the end of input, as MariaDB's lexer would report it.
    fn skip_quoted(&mut self, quote: u8) {
        let backslash = quote != b'`';
        let mut p = self.pos + 1;
        while let Some(b) = self.at(p) {
            if backslash && b == b'\\' {
                p += 2;
                continue;
            }
            if b == quote {
                if self.at(p + 1) == Some(quote) {
                    p += 2;
                    continue;
                }
                self.pos = p + 1;
                return;
            }
            p += 1;
        }
        self.pos = self.sql.len();
    }

    fn skip_ident(&mut self) {
        while self.at(self.pos).is_some_and(is_ident_byte) {
            self.pos += 1;
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        loop {
            let start = self.pos;
            let b = self.at(start)?;
            let next = self.at(start + 1);
            let kind = match b {
                _ if is_space(b) => {
                    self.pos += 1;
                    continue;
                }
                b'#' => {
                    self.skip_to_line_end();
                    continue;
                }
                // `--` starts a comment only when followed by a space or control byte (or the
                // end): `1--1` is arithmetic.
                b'-' if next == Some(b'-') && self.at(start + 2).is_none_or(|c| c <= b' ') => {
                    self.skip_to_line_end();
                    continue;
                }
                b'/' if next == Some(b'*') => {
                    self.skip_block_comment();
                    continue;
                }
                b'*' if self.in_executable && next == Some(b'/') => {
                    self.pos += 2;
                    self.in_executable = false;
                    continue;
                }
                b'\'' => {
                    self.skip_quoted(b'\'');
                    TokenKind::String
                }
                b'"' => {
                    self.skip_quoted(b'"');
                    TokenKind::DoubleQuoted
                }
                b'`' => {
                    self.skip_quoted(b'`');
                    TokenKind::QuotedIdent
                }
                b'@' if next == Some(b'@') => {
                    self.pos += 2;
                    while self
                        .at(self.pos)
                        .is_some_and(|c| is_ident_byte(c) || c == b'.')
                    {
                        self.pos += 1;
                    }
                    TokenKind::SysVar
                }
                b'@' => match next {
                    Some(q @ (b'\'' | b'"' | b'`')) => {
                        self.pos += 1;
                        self.skip_quoted(q);
                        TokenKind::UserVar
                    }
                    Some(c) if is_ident_byte(c) => {
                        self.pos += 1;
                        while self
                            .at(self.pos)
                            .is_some_and(|c| is_ident_byte(c) || c == b'.')
                        {
                            self.pos += 1;
                        }
                        TokenKind::UserVar
                    }
                    _ => {
                        self.pos += 1;
                        TokenKind::Punct(b'@')
                    }
                },
                _ if is_ident_byte(b) => {
                    self.skip_ident();
                    TokenKind::Word
                }
                _ => {
                    self.pos += 1;
                    TokenKind::Punct(b)
                }
            };
            return Some(Token {
                kind,
                start,
                end: self.pos.min(self.sql.len()),
            });
        }
    }
}

/// All tokens of `sql`. The count is bounded by `sql.len()`: every token spans at least a byte.
pub(crate) fn tokenize(sql: &[u8]) -> Vec<Token> {
    Lexer::new(sql).collect()
}

/// The identifier a token names, quotes removed (`` `a``b` `` → ``a`b``). Strings and
/// double-quoted literals are accepted too, because account names, savepoint names under
/// `ANSI_QUOTES` and `USE "db"` may use them.
pub(crate) fn ident_text(sql: &[u8], tok: &Token) -> Option<Vec<u8>> {
    let text = tok.text(sql);
    match tok.kind {
        TokenKind::Word => Some(text.to_vec()),
        TokenKind::QuotedIdent => Some(unquote(text, b'`', false)),
        TokenKind::String => Some(unquote(text, b'\'', true)),
        TokenKind::DoubleQuoted => Some(unquote(text, b'"', true)),
        _ => None,
    }
}

/// The value of a quoted literal: strips the quotes, undoubles doubled quotes and, for strings,
/// resolves backslash escapes the way MariaDB does (`\n`, `\0`, ...; unknown escapes drop the
/// backslash, except `\%` and `\_`, which stay for LIKE).
pub(crate) fn unquote(text: &[u8], quote: u8, backslash: bool) -> Vec<u8> {
    let inner = match text {
        [first, rest @ ..] if *first == quote => match rest {
            [body @ .., last] if *last == quote => body,
            // Unterminated: the lexer ran to the end of input.
            body => body,
        },
        other => other,
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        if backslash && b == b'\\' {
            match inner.get(i + 1) {
                Some(&e) => {
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(0x08),
                        b'0' => out.push(0),
                        b'Z' => out.push(0x1a),
                        b'%' | b'_' => out.extend_from_slice(&[b'\\', e]),
                        other => out.push(other),
                    }
                    i += 2;
                }
                None => {
                    out.push(b'\\');
                    i += 1;
                }
            }
            continue;
        }
        if b == quote && inner.get(i + 1) == Some(&quote) {
            out.push(quote);
            i += 2;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(sql: &[u8]) -> Vec<(TokenKind, Vec<u8>)> {
        tokenize(sql)
            .iter()
            .map(|t| (t.kind, t.text(sql).to_vec()))
            .collect()
    }

    fn texts(sql: &[u8]) -> Vec<String> {
        tokenize(sql)
            .iter()
            .map(|t| String::from_utf8_lossy(t.text(sql)).into_owned())
            .collect()
    }

    #[test]
    fn words_punct_and_literals() {
        use TokenKind::*;
        let got = lex(b"SELECT a,`b``c`,'x''y\\'z',\"q\\\"\" FROM t;");
        let want: Vec<(TokenKind, &[u8])> = vec![
            (Word, b"SELECT"),
            (Word, b"a"),
            (Punct(b','), b","),
            (QuotedIdent, b"`b``c`"),
            (Punct(b','), b","),
            (String, b"'x''y\\'z'"),
            (Punct(b','), b","),
            (DoubleQuoted, b"\"q\\\"\""),
            (Word, b"FROM"),
            (Word, b"t"),
            (Punct(b';'), b";"),
        ];
        let want: Vec<(TokenKind, Vec<u8>)> =
            want.into_iter().map(|(k, t)| (k, t.to_vec())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn comments_are_skipped_in_every_form() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"SELECT 1 -- c; x\n, 2", &["SELECT", "1", ",", "2"]),
            (b"SELECT 1 # c; x\n, 2", &["SELECT", "1", ",", "2"]),
            (b"SELECT 1 /* c; ' x */ , 2", &["SELECT", "1", ",", "2"]),
            (b"SELECT 1--1", &["SELECT", "1", "-", "-", "1"]),
            (b"SELECT 1 --\t;c", &["SELECT", "1"]),
            (b"SELECT 1 --", &["SELECT", "1"]),
            (b"SELECT 1 /* unterminated ; ", &["SELECT", "1"]),
            (
                b"SELECT '-- not a comment'",
                &["SELECT", "'-- not a comment'"],
            ),
            (b"SELECT \"/* no */\"", &["SELECT", "\"/* no */\""]),
            (b"SELECT `#x`", &["SELECT", "`#x`"]),
        ];
        for (sql, want) in cases {
            assert_eq!(texts(sql), *want, "{}", String::from_utf8_lossy(sql));
        }
    }

    #[test]
    fn executable_comment_bodies_are_tokens() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"/*! SELECT 1 */", &["SELECT", "1"]),
            (b"/*!50100 SELECT 1 */", &["SELECT", "1"]),
            (b"/*M! SELECT 1 */", &["SELECT", "1"]),
            (b"/*M!100100 SELECT 1*/", &["SELECT", "1"]),
            (b"/*!40101SET x=1*/;", &["SET", "x", "=", "1", ";"]),
            (
                b"/*!50001 CREATE /* inner */ VIEW */ v",
                &["CREATE", "VIEW", "v"],
            ),
            (b"SELECT 2 */", &["SELECT", "2", "*", "/"]),
        ];
        for (sql, want) in cases {
            assert_eq!(texts(sql), *want, "{}", String::from_utf8_lossy(sql));
        }
    }

    #[test]
    fn variables() {
        use TokenKind::*;
        let got = lex(b"@a.b @'x y' @@session.autocommit @ @`q`");
        let kinds: Vec<TokenKind> = got.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec![UserVar, UserVar, SysVar, Punct(b'@'), UserVar]);
        assert_eq!(got[2].1, b"@@session.autocommit".to_vec());
    }

    #[test]
    fn non_utf8_bytes_are_identifier_or_string_bytes() {
        let sql = b"SELECT caf\xe9, _binary'\xff\x00\\'' FROM t\xe9";
        let got = lex(sql);
        assert_eq!(got[1], (TokenKind::Word, b"caf\xe9".to_vec()));
        assert_eq!(got[3], (TokenKind::Word, b"_binary".to_vec()));
        assert_eq!(got[4], (TokenKind::String, b"'\xff\x00\\''".to_vec()));
        assert_eq!(got[6], (TokenKind::Word, b"t\xe9".to_vec()));
    }

    #[test]
    fn unterminated_quotes_run_to_the_end() {
        let got = lex(b"SELECT 'abc; SELECT 2");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, TokenKind::String);
        let got = lex(b"SELECT 'abc\\");
        assert_eq!(got[1].1, b"'abc\\".to_vec());
    }

    #[test]
    fn unquoting() {
        assert_eq!(unquote(b"`a``b`", b'`', false), b"a`b".to_vec());
        assert_eq!(unquote(b"'a''b\\n\\%'", b'\'', true), b"a'b\n\\%".to_vec());
        assert_eq!(unquote(b"'abc", b'\'', true), b"abc".to_vec());
        assert_eq!(unquote(b"'a\\", b'\'', true), b"a\\".to_vec());
    }
}
