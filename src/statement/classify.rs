//! Classifying one statement's text into what the session layer must do with it: a plain or
//! locking read, a DML write, transaction control, session state (SET, USE), total-order DDL,
//! a construct rejected by strict mode, KILL, SQL-level prepared statements, or `Other`.
//!
//! It reads only the first keywords and a few clause markers, never the whole grammar: anything
//! it does not recognise is `Other`, which callers treat as a potential write. It owns no
//! policy (what is rejected in permissive mode, what runs under TOI) beyond reporting facts:
//! `Statement::rejection` and `Statement::implicit_commit` describe MariaDB's and PXC strict
//! mode's rules, and the session layer decides.

use super::lexer::{ident_text, tokenize, unquote, Token, TokenKind};

/// A `[schema.]name` with quotes removed. Bytes, not text: names may arrive in the client's
/// character set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectName {
    pub schema: Option<Vec<u8>>,
    pub name: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    /// SELECT, WITH ... SELECT, (SELECT ...), including INTO OUTFILE / INTO @var.
    /// `locking`: FOR UPDATE, FOR SHARE or LOCK IN SHARE MODE anywhere in it.
    /// `locks_every_read`: it is one query block (a single SELECT: no subquery, derived
    /// table, UNION or CTE query) with such a clause, so every row it reads is locked.
    Select {
        locking: bool,
        locks_every_read: bool,
    },
    Show,
    /// DESCRIBE / DESC.
    Describe,
    /// EXPLAIN of anything, writes included: it does not run them.
    Explain,
    Help,
    Do,
    Values,
    Table,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    Insert,
    InsertSelect,
    Replace,
    ReplaceSelect,
    Update,
    Delete,
    LoadData {
        local: bool,
    },
    LoadXml {
        local: bool,
    },
    /// A procedure may write anything, so CALL counts as a write.
    Call,
}

/// `AND [NO] CHAIN` and `[NO] RELEASE` of COMMIT/ROLLBACK. `None` means "not stated": the
/// session's `completion_type` then decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    pub chain: Option<bool>,
    pub release: Option<bool>,
}

/// The target of one `SET` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetTarget {
    /// A system variable in session scope (`x`, `SESSION x`, `LOCAL x`, `@@x`, `@@session.x`).
    /// Names are lower-cased.
    Session(String),
    /// `GLOBAL x` or `@@global.x`.
    Global(String),
    /// A user variable `@x`, name without the `@`, quotes removed, case kept.
    User(String),
    /// `SET NAMES ...`; the value holds the rest of the item (`utf8mb4 COLLATE ...`).
    Names,
    /// `SET CHARACTER SET ...` / `SET CHARSET ...`.
    CharacterSet,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub target: SetTarget,
    /// The value expression's text as sent, trimmed.
    pub value: Vec<u8>,
}

impl Assignment {
    /// The value as a boolean when it is a literal MariaDB accepts for a boolean variable.
    /// `DEFAULT` and expressions give `None`: their value is only known to the server.
    pub fn as_bool(&self) -> Option<bool> {
        let v = self.value.as_slice();
        let unquoted;
        let v = match v.first() {
            Some(q @ (b'\'' | b'"')) => {
                unquoted = unquote(v, *q, true);
                unquoted.as_slice()
            }
            _ => v,
        };
        let is = |s: &str| v.eq_ignore_ascii_case(s.as_bytes());
        if is("1") || is("ON") || is("TRUE") {
            Some(true)
        } else if is("0") || is("OFF") || is("FALSE") {
            Some(false)
        } else {
            None
        }
    }
}

/// What a `SET autocommit` does to the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Autocommit {
    On,
    Off,
    /// `DEFAULT` or an expression: ask the server afterwards (`SELECT @@autocommit`).
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionScope {
    /// `SET TRANSACTION ...`: the next transaction only.
    Next,
    Session,
    Global,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DdlKind {
    CreateTable,
    AlterTable,
    DropTable,
    RenameTable,
    TruncateTable,
    CreateIndex,
    DropIndex,
    CreateDatabase,
    AlterDatabase,
    DropDatabase,
    CreateUser,
    AlterUser,
    DropUser,
    RenameUser,
    Grant,
    Revoke,
    SetPassword,
    SetDefaultRole,
    CreateRole,
    AlterRole,
    DropRole,
    CreateProcedure,
    AlterProcedure,
    DropProcedure,
    CreateFunction,
    AlterFunction,
    DropFunction,
    CreateView,
    AlterView,
    DropView,
    CreateTrigger,
    DropTrigger,
    CreateEvent,
    AlterEvent,
    DropEvent,
    CreateSequence,
    AlterSequence,
    DropSequence,
    CreatePackage,
    DropPackage,
    CreateServer,
    AlterServer,
    DropServer,
    OptimizeTable,
    AnalyzeTable,
    RepairTable,
}

/// A statement that must run in total order (TOI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ddl {
    pub kind: DdlKind,
    /// The named objects of `kind`, where cheap to find: tables (all of them for DROP/RENAME/
    /// OPTIMIZE/..., old and new name for ALTER TABLE ... RENAME TO), views, sequences, the
    /// database for DATABASE kinds (as `name`), routine/trigger/event names, the index name
    /// for INDEX kinds. Empty for accounts, roles, grants and servers.
    pub objects: Vec<ObjectName>,
    /// The table an index or trigger belongs to (`... ON t`).
    pub on_table: Option<ObjectName>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlushKind {
    /// `FLUSH TABLES [t, ...] WITH READ LOCK`.
    TablesWithReadLock,
    /// `FLUSH TABLES t, ... FOR EXPORT`: also a table lock.
    TablesForExport,
    /// Every other FLUSH (LOGS, PRIVILEGES, TABLES, STATUS, ...).
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserLockFunction {
    GetLock,
    ReleaseLock,
    ReleaseAllLocks,
    IsFreeLock,
    IsUsedLock,
}

/// Administrative statements that are neither DDL nor data access but matter for implicit
/// commits or must not be relayed blindly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminKind {
    CheckTable,
    ChecksumTable,
    CacheIndex,
    LoadIndex,
    Reset,
    Purge,
    Shutdown,
    /// START/STOP SLAVE|REPLICA|ALL SLAVES, CHANGE MASTER.
    Replication,
    /// INSTALL/UNINSTALL PLUGIN|SONAME.
    Plugin,
    /// BACKUP STAGE / BACKUP LOCK.
    Backup,
}

/// Why strict mode (DESIGN §4) refuses a statement by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    LockTables,
    UnlockTables,
    FlushTablesWithReadLock,
    FlushTablesForExport,
    UserLock(UserLockFunction),
    Binlog,
    Xa,
    SqlLogBin,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement {
    /// Only whitespace and comments.
    Empty,
    Read(ReadKind),
    Write(WriteKind),
    /// BEGIN [WORK] or START TRANSACTION [...].
    Begin {
        read_only: bool,
        consistent_snapshot: bool,
    },
    Commit(Completion),
    Rollback(Completion),
    RollbackToSavepoint {
        name: Vec<u8>,
    },
    Savepoint {
        name: Vec<u8>,
    },
    ReleaseSavepoint {
        name: Vec<u8>,
    },
    Set(Vec<Assignment>),
    SetTransaction {
        scope: TransactionScope,
        read_only: Option<bool>,
    },
    /// `SET ROLE ...`: session-local.
    SetRole,
    /// `SET STATEMENT a=1, ... FOR <inner>`: the assignments hold for `inner` only.
    SetStatementFor {
        assignments: Vec<Assignment>,
        inner: Box<Statement>,
    },
    Use {
        db: Vec<u8>,
    },
    Ddl(Ddl),
    /// Session-local, never replicated (DESIGN §8).
    CreateTemporaryTable(Vec<ObjectName>),
    DropTemporaryTable(Vec<ObjectName>),
    /// `BEGIN NOT ATOMIC ... END` or a top-level IF/CASE/LOOP/WHILE/REPEAT/FOR block.
    Compound,
    LockTables,
    UnlockTables,
    Flush(FlushKind),
    /// A client `BINLOG '...'` statement.
    Binlog,
    /// Any `XA ...` statement.
    Xa,
    /// `statement` calls GET_LOCK() or one of its siblings (outside strings and comments).
    UserLock {
        function: UserLockFunction,
        statement: Box<Statement>,
    },
    /// `KILL [HARD|SOFT] [CONNECTION|QUERY] <n>`; `by_query_id` for `KILL QUERY ID <n>`, whose
    /// number is a query id, not a connection id.
    Kill {
        query_only: bool,
        id: u64,
        by_query_id: bool,
    },
    KillUser {
        query_only: bool,
        user: Vec<u8>,
    },
    Prepare {
        name: Vec<u8>,
        /// The statement text when it is given as a literal (`FROM '...'`), unescaped.
        text: Option<Vec<u8>>,
    },
    Execute {
        name: Vec<u8>,
    },
    /// `EXECUTE IMMEDIATE '...'`: the text when it is a literal.
    ExecuteImmediate {
        text: Option<Vec<u8>>,
    },
    Deallocate {
        name: Vec<u8>,
    },
    Admin(AdminKind),
    Other,
}

impl Statement {
    /// The strict-mode reason to refuse this statement, if any.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            Statement::LockTables => Some(Rejection::LockTables),
            Statement::UnlockTables => Some(Rejection::UnlockTables),
            Statement::Flush(FlushKind::TablesWithReadLock) => {
                Some(Rejection::FlushTablesWithReadLock)
            }
            Statement::Flush(FlushKind::TablesForExport) => Some(Rejection::FlushTablesForExport),
            Statement::Binlog => Some(Rejection::Binlog),
            Statement::Xa => Some(Rejection::Xa),
            Statement::UserLock { function, .. } => Some(Rejection::UserLock(*function)),
            Statement::Set(items) => sets_sql_log_bin(items),
            Statement::SetStatementFor { assignments, inner } => {
                sets_sql_log_bin(assignments).or_else(|| inner.rejection())
            }
            _ => None,
        }
    }

    /// Does MariaDB commit an open transaction before running this statement? (Its page "SQL
    /// statements that cause an implicit commit".) `UNLOCK TABLES` commits only while LOCK
    /// TABLES is in effect, and `SET autocommit=1` only when autocommit was 0: the session
    /// knows those states, this answer assumes them. A `SET autocommit` whose value is not a
    /// literal reports `false` here and `Autocommit::Unknown` from `autocommit()`.
    pub fn implicit_commit(&self) -> bool {
        match self {
            Statement::Ddl(ddl) => ddl.kind != DdlKind::SetDefaultRole,
            Statement::Begin { .. }
            | Statement::LockTables
            | Statement::UnlockTables
            | Statement::Flush(_) => true,
            Statement::Admin(kind) => matches!(
                kind,
                AdminKind::CheckTable
                    | AdminKind::CacheIndex
                    | AdminKind::LoadIndex
                    | AdminKind::Reset
                    | AdminKind::Shutdown
                    | AdminKind::Replication
            ),
            Statement::Set(_) => self.autocommit() == Some(Autocommit::On),
            Statement::UserLock { statement, .. } => statement.implicit_commit(),
            Statement::SetStatementFor { inner, .. } => inner.implicit_commit(),
            _ => false,
        }
    }

    /// Whether every row this statement reads, it reads with a locking read whose lock it
    /// holds to the end of the transaction, when the transaction runs in REPEATABLE READ or
    /// SERIALIZABLE: InnoDB reads with locks in every data-changing statement (its subqueries,
    /// triggers and stored functions included) and in a SELECT whose one query block says
    /// FOR UPDATE or LOCK IN SHARE MODE. Statements that read no rows (BEGIN without a
    /// consistent snapshot, COMMIT, savepoints, USE) count as true. A transaction made only of
    /// such statements saw the latest committed version of every row it writes, at a moment
    /// no later than its commit: that lets it read its last_seen at commit
    /// (docs/certification.md, "last_seen of a transaction that only read under locks").
    /// `CALL` is false: a procedure may run plain SELECTs.
    pub fn reads_under_locks(&self) -> bool {
        match self {
            Statement::Write(kind) => !matches!(kind, WriteKind::Call),
            Statement::Read(ReadKind::Select {
                locks_every_read, ..
            }) => *locks_every_read,
            Statement::Begin {
                consistent_snapshot,
                ..
            } => !consistent_snapshot,
            Statement::Empty
            | Statement::Commit(_)
            | Statement::Rollback(_)
            | Statement::RollbackToSavepoint { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Use { .. } => true,
            _ => false,
        }
    }

    /// Whether this statement may change the isolation level of later transactions in ways
    /// `@@tx_isolation` does not show: `SET TRANSACTION` (it may hold for the next
    /// transaction only), a SET of `tx_isolation`, and statements that run SQL the node does
    /// not see (`CALL`, compound statements, prepared and dynamic SQL, anything unrecognised).
    pub fn may_change_isolation(&self) -> bool {
        match self {
            Statement::SetTransaction { .. }
            | Statement::Compound
            | Statement::Prepare { .. }
            | Statement::Execute { .. }
            | Statement::ExecuteImmediate { .. }
            | Statement::Other => true,
            Statement::Write(WriteKind::Call) => true,
            Statement::Set(items) => items.iter().any(|a| {
                matches!(&a.target, SetTarget::Session(n) | SetTarget::Global(n)
                    if n.contains("isolation"))
            }),
            Statement::SetStatementFor { inner, .. } => inner.may_change_isolation(),
            _ => false,
        }
    }

    /// The session's autocommit change, if this is a SET that assigns it in session scope (the
    /// last such item wins, as the server applies them in order).
    pub fn autocommit(&self) -> Option<Autocommit> {
        let Statement::Set(items) = self else {
            return None;
        };
        let item = items
            .iter()
            .rev()
            .find(|a| matches!(&a.target, SetTarget::Session(n) if n == "autocommit"))?;
        Some(match item.as_bool() {
            Some(true) => Autocommit::On,
            Some(false) => Autocommit::Off,
            None => Autocommit::Unknown,
        })
    }
}

fn sets_sql_log_bin(items: &[Assignment]) -> Option<Rejection> {
    items
        .iter()
        .any(|a| {
            matches!(&a.target, SetTarget::Session(n) | SetTarget::Global(n) if n == "sql_log_bin")
        })
        .then_some(Rejection::SqlLogBin)
}

/// Classifies one statement (one piece of `split`; a multi-statement text is classified by its
/// first statement only). Trailing `;` are ignored, so `BEGIN;` sent as a prepared statement is
/// still BEGIN. Never panics; unknown input is `Other`.
pub fn classify(stmt: &[u8]) -> Statement {
    let mut toks = tokenize(stmt);
    while toks.last().is_some_and(|t| t.is_punct(b';')) {
        toks.pop();
    }
    classify_tokens(stmt, &toks, 0)
}

/// `SET STATEMENT ... FOR` and `ANALYZE <stmt>` classify an inner statement; this bound keeps
/// hostile input (`SET STATEMENT a=1 FOR SET STATEMENT ...`) from recursing deeply.
const MAX_NESTING: usize = 4;

fn classify_tokens(sql: &[u8], toks: &[Token], nesting: usize) -> Statement {
    let c = Cursor { sql, toks, i: 0 };
    let statement = classify_head(c, nesting);
    if defines_code(&statement) {
        return statement;
    }
    match find_user_lock_call(sql, toks) {
        Some(function) => Statement::UserLock {
            function,
            statement: Box::new(statement),
        },
        None => statement,
    }
}

/// Routine, trigger, event and view definitions store code; they do not run it now.
fn defines_code(s: &Statement) -> bool {
    matches!(
        s,
        Statement::Ddl(Ddl {
            kind: DdlKind::CreateProcedure
                | DdlKind::CreateFunction
                | DdlKind::CreateTrigger
                | DdlKind::CreateEvent
                | DdlKind::AlterEvent
                | DdlKind::CreateView
                | DdlKind::AlterView
                | DdlKind::CreatePackage,
            ..
        })
    )
}

fn find_user_lock_call(sql: &[u8], toks: &[Token]) -> Option<UserLockFunction> {
    const FUNCTIONS: [(&str, UserLockFunction); 5] = [
        ("GET_LOCK", UserLockFunction::GetLock),
        ("RELEASE_LOCK", UserLockFunction::ReleaseLock),
        ("RELEASE_ALL_LOCKS", UserLockFunction::ReleaseAllLocks),
        ("IS_FREE_LOCK", UserLockFunction::IsFreeLock),
        ("IS_USED_LOCK", UserLockFunction::IsUsedLock),
    ];
    toks.iter().enumerate().find_map(|(i, t)| {
        let called = toks.get(i + 1).is_some_and(|n| n.is_punct(b'('));
        // `db.get_lock(` is a stored function of that name, not the builtin.
        let qualified = i > 0 && toks.get(i - 1).is_some_and(|p| p.is_punct(b'.'));
        if !called || qualified {
            return None;
        }
        FUNCTIONS
            .iter()
            .find(|(name, _)| t.is_kw(sql, name))
            .map(|(_, f)| *f)
    })
}

#[derive(Clone, Copy)]
struct Cursor<'a> {
    sql: &'a [u8],
    toks: &'a [Token],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.toks.get(self.i)
    }

    fn peek_at(&self, n: usize) -> Option<&'a Token> {
        self.toks.get(self.i + n)
    }

    fn is_kw(&self, kw: &str) -> bool {
        self.peek().is_some_and(|t| t.is_kw(self.sql, kw))
    }

    fn is_kw_at(&self, n: usize, kw: &str) -> bool {
        self.peek_at(n).is_some_and(|t| t.is_kw(self.sql, kw))
    }

    fn is_punct(&self, p: u8) -> bool {
        self.peek().is_some_and(|t| t.is_punct(p))
    }

    fn bump(&mut self) -> Option<&'a Token> {
        let t = self.toks.get(self.i);
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Eats the keyword sequence only if all of it is there.
    fn eat_kws(&mut self, kws: &[&str]) -> bool {
        if kws.iter().enumerate().all(|(n, k)| self.is_kw_at(n, k)) {
            self.i += kws.len();
            true
        } else {
            false
        }
    }

    fn eat_punct(&mut self, p: u8) -> bool {
        if self.is_punct(p) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn at_end(&self) -> bool {
        self.i >= self.toks.len()
    }

    fn rest(&self) -> &'a [Token] {
        self.toks.get(self.i..).unwrap_or(&[])
    }

    /// Any of `kws` at paren depth 0 in the rest of the statement.
    fn rest_has_kw_at_depth0(&self, kws: &[&str]) -> bool {
        let mut depth = 0usize;
        self.rest().iter().any(|t| {
            match t.kind {
                TokenKind::Punct(b'(') => depth += 1,
                TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
                _ => {}
            }
            depth == 0 && kws.iter().any(|k| t.is_kw(self.sql, k))
        })
    }

    fn ident(&mut self) -> Option<Vec<u8>> {
        let t = self.peek()?;
        if !matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent) {
            return None;
        }
        self.i += 1;
        ident_text(self.sql, t)
    }

    fn object_name(&mut self) -> Option<ObjectName> {
        let first = self.ident()?;
        if self.is_punct(b'.') {
            let save = self.i;
            self.i += 1;
            if let Some(name) = self.ident() {
                return Some(ObjectName {
                    schema: Some(first),
                    name,
                });
            }
            self.i = save;
        }
        Some(ObjectName {
            schema: None,
            name: first,
        })
    }

    fn object_list(&mut self) -> Vec<ObjectName> {
        let mut out = Vec::new();
        while let Some(name) = self.object_name() {
            out.push(name);
            if !self.eat_punct(b',') {
                break;
            }
        }
        out
    }

    fn skip_if_exists(&mut self) {
        if !self.eat_kws(&["IF", "NOT", "EXISTS"]) {
            self.eat_kws(&["IF", "EXISTS"]);
        }
    }

    /// Skips `DEFINER = user` where user is `name`, `'n'@'h'`, `n@h`, `CURRENT_USER[()]`.
    fn skip_definer(&mut self) {
        if !self.eat_kw("DEFINER") {
            return;
        }
        self.eat_punct(b'=');
        if self.bump().is_none() {
            return;
        }
        if self.peek().is_some_and(|t| t.kind == TokenKind::UserVar) {
            self.i += 1;
        } else if self.eat_punct(b'@') {
            self.bump();
        } else if self.is_punct(b'(') && self.peek_at(1).is_some_and(|t| t.is_punct(b')')) {
            self.i += 2;
        }
    }
}

fn classify_head(mut c: Cursor<'_>, nesting: usize) -> Statement {
    // `(SELECT ...) UNION (SELECT ...)` and other parenthesised query expressions.
    while c.is_punct(b'(') {
        c.i += 1;
    }
    let Some(first) = c.peek() else {
        return Statement::Empty;
    };
    if first.kind != TokenKind::Word {
        return Statement::Other;
    }
    let word = first.text(c.sql).to_ascii_uppercase();
    c.i += 1;
    match word.as_slice() {
        b"SELECT" => select(c),
        b"WITH" => with(c),
        b"SHOW" => Statement::Read(ReadKind::Show),
        b"DESCRIBE" | b"DESC" => Statement::Read(ReadKind::Describe),
        b"EXPLAIN" => Statement::Read(ReadKind::Explain),
        b"HELP" => Statement::Read(ReadKind::Help),
        b"DO" => Statement::Read(ReadKind::Do),
        b"VALUES" => Statement::Read(ReadKind::Values),
        b"TABLE" => Statement::Read(ReadKind::Table),
        b"INSERT" => insert(c, WriteKind::Insert, WriteKind::InsertSelect),
        b"REPLACE" => insert(c, WriteKind::Replace, WriteKind::ReplaceSelect),
        b"UPDATE" => Statement::Write(WriteKind::Update),
        b"DELETE" => Statement::Write(WriteKind::Delete),
        b"CALL" => Statement::Write(WriteKind::Call),
        b"LOAD" => load(c),
        b"BEGIN" => begin(c),
        b"START" => start(c),
        b"COMMIT" => Statement::Commit(completion(c)),
        b"ROLLBACK" => rollback(c),
        b"SAVEPOINT" => match c.ident() {
            Some(name) => Statement::Savepoint { name },
            None => Statement::Other,
        },
        b"RELEASE" => {
            c.eat_kw("SAVEPOINT");
            match c.ident() {
                Some(name) => Statement::ReleaseSavepoint { name },
                None => Statement::Other,
            }
        }
        b"SET" => set(c, nesting),
        b"USE" => match c.peek().and_then(|t| ident_text(c.sql, t)) {
            Some(db) => Statement::Use { db },
            None => Statement::Other,
        },
        b"CREATE" => create(c),
        b"ALTER" => alter(c),
        b"DROP" => drop(c),
        b"RENAME" => rename(c),
        b"TRUNCATE" => {
            c.eat_kw("TABLE");
            ddl(
                DdlKind::TruncateTable,
                c.object_name().into_iter().collect(),
            )
        }
        b"GRANT" => ddl(DdlKind::Grant, Vec::new()),
        b"REVOKE" => ddl(DdlKind::Revoke, Vec::new()),
        b"OPTIMIZE" => table_maintenance(c, DdlKind::OptimizeTable),
        b"REPAIR" => table_maintenance(c, DdlKind::RepairTable),
        b"ANALYZE" => analyze(c, nesting),
        b"CHECK" => Statement::Admin(AdminKind::CheckTable),
        b"CHECKSUM" => Statement::Admin(AdminKind::ChecksumTable),
        b"CACHE" => Statement::Admin(AdminKind::CacheIndex),
        b"RESET" => Statement::Admin(AdminKind::Reset),
        b"PURGE" => Statement::Admin(AdminKind::Purge),
        b"SHUTDOWN" => Statement::Admin(AdminKind::Shutdown),
        b"STOP" => Statement::Admin(AdminKind::Replication),
        b"CHANGE" => Statement::Admin(AdminKind::Replication),
        b"INSTALL" | b"UNINSTALL" => Statement::Admin(AdminKind::Plugin),
        b"BACKUP" => Statement::Admin(AdminKind::Backup),
        b"LOCK" => {
            if c.is_kw("TABLES") || c.is_kw("TABLE") {
                Statement::LockTables
            } else {
                Statement::Other
            }
        }
        b"UNLOCK" => {
            if c.is_kw("TABLES") || c.is_kw("TABLE") {
                Statement::UnlockTables
            } else {
                Statement::Other
            }
        }
        b"FLUSH" => flush(c),
        b"BINLOG" => Statement::Binlog,
        b"XA" => Statement::Xa,
        b"KILL" => kill(c),
        b"PREPARE" => prepare(c),
        b"EXECUTE" => execute(c),
        b"DEALLOCATE" => {
            c.eat_kw("PREPARE");
            deallocate(c)
        }
        b"IF" | b"CASE" | b"LOOP" | b"WHILE" | b"REPEAT" | b"FOR" => Statement::Compound,
        _ if c.is_punct(b':') => Statement::Compound,
        _ => Statement::Other,
    }
}

fn ddl(kind: DdlKind, objects: Vec<ObjectName>) -> Statement {
    Statement::Ddl(Ddl {
        kind,
        objects,
        on_table: None,
    })
}

fn select(c: Cursor<'_>) -> Statement {
    let mut locking = false;
    let toks = c.rest();
    for (i, t) in toks.iter().enumerate() {
        let at = |n: usize, k: &str| toks.get(i + n).is_some_and(|t| t.is_kw(c.sql, k));
        if (t.is_kw(c.sql, "FOR") && (at(1, "UPDATE") || at(1, "SHARE")))
            || (t.is_kw(c.sql, "LOCK") && at(1, "IN") && at(2, "SHARE") && at(3, "MODE"))
        {
            locking = true;
            break;
        }
    }
    // Counted only for a locking SELECT: plain ones are the hot path and never qualify.
    let locks_every_read =
        locking && c.toks.iter().filter(|t| t.is_kw(c.sql, "SELECT")).count() == 1;
    Statement::Read(ReadKind::Select {
        locking,
        locks_every_read,
    })
}

/// `WITH [RECURSIVE] cte AS (...), ... <main statement>`: the main statement is the first
/// statement keyword at paren depth 0 (CTE bodies are parenthesised).
fn with(c: Cursor<'_>) -> Statement {
    let mut depth = 0usize;
    for (n, t) in c.rest().iter().enumerate() {
        match t.kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            TokenKind::Word if depth == 0 => {
                let tail = Cursor {
                    i: c.i + n + 1,
                    ..c
                };
                if t.is_kw(c.sql, "SELECT") {
                    return select(tail);
                }
                if t.is_kw(c.sql, "UPDATE") {
                    return Statement::Write(WriteKind::Update);
                }
                if t.is_kw(c.sql, "DELETE") {
                    return Statement::Write(WriteKind::Delete);
                }
                if t.is_kw(c.sql, "INSERT") {
                    return Statement::Write(WriteKind::InsertSelect);
                }
                if t.is_kw(c.sql, "REPLACE") {
                    return Statement::Write(WriteKind::ReplaceSelect);
                }
                if t.is_kw(c.sql, "VALUES") {
                    return Statement::Read(ReadKind::Values);
                }
                if t.is_kw(c.sql, "TABLE") {
                    return Statement::Read(ReadKind::Table);
                }
            }
            _ => {}
        }
    }
    // `WITH cte AS (...) (SELECT ...)`: the main query is itself parenthesised.
    select(c)
}

/// INSERT/REPLACE: `... SELECT`, `... TABLE t`, `... (SELECT ...)` and `... WITH` make it an
/// INSERT ... SELECT; VALUES/VALUE/SET make it a plain one.
fn insert(c: Cursor<'_>, plain: WriteKind, from_select: WriteKind) -> Statement {
    let toks = c.rest();
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate() {
        match t.kind {
            TokenKind::Punct(b'(') => {
                if depth == 0
                    && toks
                        .get(i + 1)
                        .is_some_and(|n| n.is_kw(c.sql, "SELECT") || n.is_kw(c.sql, "WITH"))
                {
                    return Statement::Write(from_select);
                }
                depth += 1;
            }
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            TokenKind::Word if depth == 0 => {
                if ["VALUES", "VALUE", "SET"].iter().any(|k| t.is_kw(c.sql, k)) {
                    return Statement::Write(plain);
                }
                if ["SELECT", "WITH", "TABLE"]
                    .iter()
                    .any(|k| t.is_kw(c.sql, k))
                {
                    return Statement::Write(from_select);
                }
            }
            _ => {}
        }
    }
    Statement::Write(plain)
}

fn load(mut c: Cursor<'_>) -> Statement {
    let xml = if c.eat_kw("DATA") {
        false
    } else if c.eat_kw("XML") {
        true
    } else if c.is_kw("INDEX") {
        return Statement::Admin(AdminKind::LoadIndex);
    } else {
        return Statement::Other;
    };
    c.eat_kw("LOW_PRIORITY");
    c.eat_kw("CONCURRENT");
    let local = c.eat_kw("LOCAL");
    Statement::Write(if xml {
        WriteKind::LoadXml { local }
    } else {
        WriteKind::LoadData { local }
    })
}

fn begin(mut c: Cursor<'_>) -> Statement {
    if c.is_kw("NOT") && c.is_kw_at(1, "ATOMIC") {
        return Statement::Compound;
    }
    c.eat_kw("WORK");
    if c.at_end() {
        Statement::Begin {
            read_only: false,
            consistent_snapshot: false,
        }
    } else {
        Statement::Other
    }
}

/// `START TRANSACTION [READ ONLY | READ WRITE | WITH CONSISTENT SNAPSHOT] [, ...]`.
fn start(mut c: Cursor<'_>) -> Statement {
    if !c.eat_kw("TRANSACTION") {
        // START SLAVE / START REPLICA / START ALL SLAVES.
        return Statement::Admin(AdminKind::Replication);
    }
    let mut read_only = false;
    let mut consistent_snapshot = false;
    loop {
        if c.eat_kws(&["READ", "ONLY"]) {
            read_only = true;
        } else if c.eat_kws(&["READ", "WRITE"]) {
            read_only = false;
        } else if c.eat_kws(&["WITH", "CONSISTENT", "SNAPSHOT"]) {
            consistent_snapshot = true;
        } else {
            break;
        }
        if !c.eat_punct(b',') {
            break;
        }
    }
    if c.at_end() {
        Statement::Begin {
            read_only,
            consistent_snapshot,
        }
    } else {
        Statement::Other
    }
}

/// `[WORK] [AND [NO] CHAIN] [[NO] RELEASE]`.
fn completion(mut c: Cursor<'_>) -> Completion {
    let mut out = Completion::default();
    c.eat_kw("WORK");
    if c.eat_kws(&["AND", "NO", "CHAIN"]) {
        out.chain = Some(false);
    } else if c.eat_kws(&["AND", "CHAIN"]) {
        out.chain = Some(true);
    }
    if c.eat_kws(&["NO", "RELEASE"]) {
        out.release = Some(false);
    } else if c.eat_kw("RELEASE") {
        out.release = Some(true);
    }
    out
}

fn rollback(mut c: Cursor<'_>) -> Statement {
    let save = c.i;
    c.eat_kw("WORK");
    if c.eat_kw("TO") {
        c.eat_kw("SAVEPOINT");
        return match c.ident() {
            Some(name) => Statement::RollbackToSavepoint { name },
            None => Statement::Other,
        };
    }
    c.i = save;
    Statement::Rollback(completion(c))
}

fn set(mut c: Cursor<'_>, nesting: usize) -> Statement {
    if c.eat_kw("PASSWORD") {
        return ddl(DdlKind::SetPassword, Vec::new());
    }
    if c.eat_kws(&["DEFAULT", "ROLE"]) {
        return ddl(DdlKind::SetDefaultRole, Vec::new());
    }
    if c.eat_kw("ROLE") {
        return Statement::SetRole;
    }
    if c.eat_kw("STATEMENT") {
        let assignments = assignments(&mut c, true);
        if !c.eat_kw("FOR") || nesting >= MAX_NESTING {
            return Statement::Other;
        }
        let inner = classify_tokens(c.sql, c.rest(), nesting + 1);
        return Statement::SetStatementFor {
            assignments,
            inner: Box::new(inner),
        };
    }
    let scope = if c.is_kw("TRANSACTION") {
        Some(TransactionScope::Next)
    } else if c.is_kw_at(1, "TRANSACTION") && c.is_kw("GLOBAL") {
        Some(TransactionScope::Global)
    } else if c.is_kw_at(1, "TRANSACTION") && (c.is_kw("SESSION") || c.is_kw("LOCAL")) {
        Some(TransactionScope::Session)
    } else {
        None
    };
    if let Some(scope) = scope {
        let read_only = if c.rest_has_kw_at_depth0(&["ONLY"]) {
            Some(true)
        } else if c.rest_has_kw_at_depth0(&["WRITE"]) {
            Some(false)
        } else {
            None
        };
        return Statement::SetTransaction { scope, read_only };
    }
    let items = assignments(&mut c, false);
    if items.is_empty() || !c.at_end() {
        return Statement::Other;
    }
    Statement::Set(items)
}

/// Parses `target = value [, ...]`. A scope keyword (GLOBAL/SESSION/LOCAL) sticks to the items
/// after it until the next one, as MariaDB's grammar keeps it. Stops at the first item it
/// cannot read, or (for SET STATEMENT) at FOR.
fn assignments(c: &mut Cursor<'_>, until_for: bool) -> Vec<Assignment> {
    let mut items = Vec::new();
    let mut global = false;
    loop {
        if c.eat_kw("GLOBAL") {
            global = true;
        } else if c.eat_kw("SESSION") || c.eat_kw("LOCAL") {
            global = false;
        }
        let Some(tok) = c.peek() else { break };
        let target = if tok.is_kw(c.sql, "NAMES") {
            c.i += 1;
            SetTarget::Names
        } else if tok.is_kw(c.sql, "CHARSET") {
            c.i += 1;
            SetTarget::CharacterSet
        } else if tok.is_kw(c.sql, "CHARACTER") && c.is_kw_at(1, "SET") {
            c.i += 2;
            SetTarget::CharacterSet
        } else {
            let Some(target) = variable(c, global) else {
                break;
            };
            // `=` or `:=`.
            c.eat_punct(b':');
            if !c.eat_punct(b'=') {
                break;
            }
            target
        };
        let value = value_text(c, until_for);
        items.push(Assignment { target, value });
        if !c.eat_punct(b',') {
            break;
        }
    }
    items
}

fn variable(c: &mut Cursor<'_>, global: bool) -> Option<SetTarget> {
    let tok = c.peek()?;
    let text = tok.text(c.sql);
    let target = match tok.kind {
        TokenKind::SysVar => {
            let name = String::from_utf8_lossy(text.get(2..).unwrap_or(&[])).to_ascii_lowercase();
            if let Some(n) = name.strip_prefix("global.") {
                SetTarget::Global(n.to_owned())
            } else if let Some(n) = name
                .strip_prefix("session.")
                .or_else(|| name.strip_prefix("local."))
            {
                SetTarget::Session(n.to_owned())
            } else {
                SetTarget::Session(name)
            }
        }
        TokenKind::UserVar => {
            let body = text.get(1..).unwrap_or(&[]);
            let name = match body.first() {
                Some(q @ (b'\'' | b'"' | b'`')) => unquote(body, *q, *q != b'`'),
                _ => body.to_vec(),
            };
            SetTarget::User(String::from_utf8_lossy(&name).into_owned())
        }
        TokenKind::Word | TokenKind::QuotedIdent => {
            let mut name = ident_text(c.sql, tok)?;
            // Structured variables: `SET GLOBAL cache1.key_buffer_size = ...`.
            if c.peek_at(1).is_some_and(|t| t.is_punct(b'.')) {
                if let Some(second) = c.peek_at(2).and_then(|t| ident_text(c.sql, t)) {
                    name.push(b'.');
                    name.extend_from_slice(&second);
                    c.i += 2;
                }
            }
            let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
            if global {
                SetTarget::Global(name)
            } else {
                SetTarget::Session(name)
            }
        }
        _ => return None,
    };
    c.i += 1;
    Some(target)
}

/// The value of one SET item: everything up to the next `,` at paren depth 0 (or `FOR` in SET
/// STATEMENT), as sent.
fn value_text(c: &mut Cursor<'_>, until_for: bool) -> Vec<u8> {
    let start = c.i;
    let mut depth = 0usize;
    while let Some(t) = c.peek() {
        match t.kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            TokenKind::Punct(b',') if depth == 0 => break,
            TokenKind::Word if depth == 0 && until_for && t.is_kw(c.sql, "FOR") => break,
            _ => {}
        }
        c.i += 1;
    }
    match (
        c.toks.get(start),
        c.i.checked_sub(1).and_then(|e| c.toks.get(e)),
    ) {
        (Some(first), Some(last)) if c.i > start => {
            c.sql.get(first.start..last.end).unwrap_or(&[]).to_vec()
        }
        _ => Vec::new(),
    }
}

/// The header words that may sit between CREATE/ALTER/DROP and the object kind.
fn skip_header(c: &mut Cursor<'_>) -> (bool, bool) {
    let mut temporary = false;
    let mut or_replace = false;
    for _ in 0..16 {
        if c.eat_kws(&["OR", "REPLACE"]) {
            or_replace = true;
        } else if c.is_kw("DEFINER") {
            c.skip_definer();
        } else if c.eat_kws(&["SQL", "SECURITY"]) {
            c.bump();
        } else if c.is_kw("ALGORITHM") {
            c.i += 1;
            c.eat_punct(b'=');
            c.bump();
        } else if c.eat_kw("TEMPORARY") {
            temporary = true;
        } else if [
            "ONLINE",
            "OFFLINE",
            "IGNORE",
            "AGGREGATE",
            "UNIQUE",
            "FULLTEXT",
            "SPATIAL",
        ]
        .iter()
        .any(|k| c.is_kw(k))
        {
            c.i += 1;
        } else {
            break;
        }
    }
    (temporary, or_replace)
}

fn create(mut c: Cursor<'_>) -> Statement {
    let (temporary, _) = skip_header(&mut c);
    let Some(kind_tok) = c.bump() else {
        return Statement::Other;
    };
    let kind_word = kind_tok.text(c.sql).to_ascii_uppercase();
    c.skip_if_exists();
    let name = c.object_name();
    let one = |n: Option<ObjectName>| n.into_iter().collect::<Vec<_>>();
    let kind = match kind_word.as_slice() {
        b"TABLE" if temporary => return Statement::CreateTemporaryTable(one(name)),
        b"TABLE" => DdlKind::CreateTable,
        b"INDEX" => {
            let on_table = if c.eat_kw("ON") {
                c.object_name()
            } else {
                // `CREATE INDEX i USING BTREE ON t`.
                skip_to_on(&mut c)
            };
            return Statement::Ddl(Ddl {
                kind: DdlKind::CreateIndex,
                objects: one(name),
                on_table,
            });
        }
        b"TRIGGER" => {
            let on_table = skip_to_on(&mut c);
            return Statement::Ddl(Ddl {
                kind: DdlKind::CreateTrigger,
                objects: one(name),
                on_table,
            });
        }
        b"DATABASE" | b"SCHEMA" => DdlKind::CreateDatabase,
        b"USER" => return ddl(DdlKind::CreateUser, Vec::new()),
        b"ROLE" => return ddl(DdlKind::CreateRole, Vec::new()),
        b"PROCEDURE" => DdlKind::CreateProcedure,
        b"FUNCTION" => DdlKind::CreateFunction,
        b"VIEW" => DdlKind::CreateView,
        b"EVENT" => DdlKind::CreateEvent,
        b"SEQUENCE" => DdlKind::CreateSequence,
        b"PACKAGE" => DdlKind::CreatePackage,
        b"SERVER" => return ddl(DdlKind::CreateServer, Vec::new()),
        _ => return Statement::Other,
    };
    ddl(kind, one(name))
}

/// Skips forward to `ON <table>` at paren depth 0 and returns the table.
fn skip_to_on(c: &mut Cursor<'_>) -> Option<ObjectName> {
    let mut depth = 0usize;
    while let Some(t) = c.bump() {
        match t.kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            _ if depth == 0 && t.is_kw(c.sql, "ON") => return c.object_name(),
            _ => {}
        }
    }
    None
}

fn alter(mut c: Cursor<'_>) -> Statement {
    skip_header(&mut c);
    let Some(kind_tok) = c.bump() else {
        return Statement::Other;
    };
    let kind_word = kind_tok.text(c.sql).to_ascii_uppercase();
    c.skip_if_exists();
    let kind = match kind_word.as_slice() {
        b"TABLE" => {
            let mut objects: Vec<ObjectName> = c.object_name().into_iter().collect();
            objects.extend(alter_table_rename_target(&mut c));
            return ddl(DdlKind::AlterTable, objects);
        }
        b"DATABASE" | b"SCHEMA" => DdlKind::AlterDatabase,
        b"USER" => return ddl(DdlKind::AlterUser, Vec::new()),
        b"ROLE" => return ddl(DdlKind::AlterRole, Vec::new()),
        b"PROCEDURE" => DdlKind::AlterProcedure,
        b"FUNCTION" => DdlKind::AlterFunction,
        b"VIEW" => DdlKind::AlterView,
        b"EVENT" => DdlKind::AlterEvent,
        b"SEQUENCE" => DdlKind::AlterSequence,
        b"SERVER" => return ddl(DdlKind::AlterServer, Vec::new()),
        _ => return Statement::Other,
    };
    // `ALTER DATABASE` may omit the name (the current database).
    let name = c.object_name().filter(|n| {
        !(kind == DdlKind::AlterDatabase
            && n.schema.is_none()
            && [
                b"DEFAULT".as_slice(),
                b"CHARACTER",
                b"CHARSET",
                b"COLLATE",
                b"COMMENT",
            ]
            .iter()
            .any(|k| n.name.eq_ignore_ascii_case(k)))
    });
    ddl(kind, name.into_iter().collect())
}

/// `ALTER TABLE a ..., RENAME [TO|AS] b`: the new name also needs a table key.
fn alter_table_rename_target(c: &mut Cursor<'_>) -> Option<ObjectName> {
    let mut depth = 0usize;
    while let Some(t) = c.bump() {
        match t.kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            _ if depth == 0 && t.is_kw(c.sql, "RENAME") => {
                if ["COLUMN", "INDEX", "KEY", "CONSTRAINT"]
                    .iter()
                    .any(|k| c.is_kw(k))
                {
                    continue;
                }
                if !c.eat_kw("TO") {
                    c.eat_kw("AS");
                }
                return c.object_name();
            }
            _ => {}
        }
    }
    None
}

fn drop(mut c: Cursor<'_>) -> Statement {
    let (temporary, _) = skip_header(&mut c);
    let Some(kind_tok) = c.bump() else {
        return Statement::Other;
    };
    let kind_word = kind_tok.text(c.sql).to_ascii_uppercase();
    c.skip_if_exists();
    let kind = match kind_word.as_slice() {
        b"TABLE" | b"TABLES" if temporary => {
            return Statement::DropTemporaryTable(c.object_list());
        }
        b"TABLE" | b"TABLES" => DdlKind::DropTable,
        b"VIEW" => DdlKind::DropView,
        b"SEQUENCE" => DdlKind::DropSequence,
        b"INDEX" => {
            let name = c.object_name();
            let on_table = if c.eat_kw("ON") {
                c.object_name()
            } else {
                None
            };
            return Statement::Ddl(Ddl {
                kind: DdlKind::DropIndex,
                objects: name.into_iter().collect(),
                on_table,
            });
        }
        b"DATABASE" | b"SCHEMA" => DdlKind::DropDatabase,
        b"USER" => return ddl(DdlKind::DropUser, Vec::new()),
        b"ROLE" => return ddl(DdlKind::DropRole, Vec::new()),
        b"PROCEDURE" => DdlKind::DropProcedure,
        b"FUNCTION" => DdlKind::DropFunction,
        b"TRIGGER" => DdlKind::DropTrigger,
        b"EVENT" => DdlKind::DropEvent,
        b"PACKAGE" => {
            c.eat_kw("BODY");
            DdlKind::DropPackage
        }
        b"SERVER" => return ddl(DdlKind::DropServer, Vec::new()),
        b"PREPARE" => return deallocate(c),
        _ => return Statement::Other,
    };
    ddl(kind, c.object_list())
}

fn rename(mut c: Cursor<'_>) -> Statement {
    if c.eat_kw("USER") {
        return ddl(DdlKind::RenameUser, Vec::new());
    }
    if !(c.eat_kw("TABLE") || c.eat_kw("TABLES")) {
        return Statement::Other;
    }
    c.skip_if_exists();
    let mut objects = Vec::new();
    while let Some(from) = c.object_name() {
        objects.push(from);
        // `RENAME TABLE t WAIT 5 TO u` / `NOWAIT`.
        if c.eat_kw("WAIT") {
            c.bump();
        }
        c.eat_kw("NOWAIT");
        if !c.eat_kw("TO") {
            break;
        }
        if let Some(to) = c.object_name() {
            objects.push(to);
        }
        if !c.eat_punct(b',') {
            break;
        }
    }
    ddl(DdlKind::RenameTable, objects)
}

/// OPTIMIZE/REPAIR/ANALYZE [NO_WRITE_TO_BINLOG | LOCAL] TABLE t, ...
fn table_maintenance(mut c: Cursor<'_>, kind: DdlKind) -> Statement {
    if !c.eat_kw("NO_WRITE_TO_BINLOG") {
        c.eat_kw("LOCAL");
    }
    if !(c.eat_kw("TABLE") || c.eat_kw("TABLES")) {
        return Statement::Other;
    }
    ddl(kind, c.object_list())
}

/// `ANALYZE TABLE` is table maintenance; MariaDB's `ANALYZE [FORMAT=JSON] <stmt>` *executes*
/// `<stmt>` and reports on it, so it classifies as the statement it runs.
fn analyze(mut c: Cursor<'_>, nesting: usize) -> Statement {
    if c.is_kw("TABLE") || c.is_kw("TABLES") || c.is_kw("NO_WRITE_TO_BINLOG") || c.is_kw("LOCAL") {
        return table_maintenance(c, DdlKind::AnalyzeTable);
    }
    if c.eat_kw("FORMAT") {
        c.eat_punct(b'=');
        c.bump();
    }
    if nesting >= MAX_NESTING {
        return Statement::Other;
    }
    match classify_tokens(c.sql, c.rest(), nesting + 1) {
        Statement::Empty => Statement::Other,
        inner => inner,
    }
}

fn flush(mut c: Cursor<'_>) -> Statement {
    if !c.eat_kw("NO_WRITE_TO_BINLOG") {
        c.eat_kw("LOCAL");
    }
    if c.is_kw("TABLES") || c.is_kw("TABLE") {
        if c.rest_has_kw_at_depth0(&["EXPORT"]) {
            return Statement::Flush(FlushKind::TablesForExport);
        }
        let rest = c.rest();
        let read_lock = rest.windows(3).any(|w| {
            w[0].is_kw(c.sql, "WITH") && w[1].is_kw(c.sql, "READ") && w[2].is_kw(c.sql, "LOCK")
        });
        if read_lock {
            return Statement::Flush(FlushKind::TablesWithReadLock);
        }
    }
    Statement::Flush(FlushKind::Other)
}

/// `KILL [HARD|SOFT] [CONNECTION | QUERY [ID]] <n>` or `KILL ... USER <name>`.
fn kill(mut c: Cursor<'_>) -> Statement {
    if !c.eat_kw("HARD") {
        c.eat_kw("SOFT");
    }
    let mut query_only = false;
    let mut by_query_id = false;
    if c.eat_kw("QUERY") {
        query_only = true;
        by_query_id = c.eat_kw("ID");
    } else {
        c.eat_kw("CONNECTION");
    }
    if !by_query_id && c.eat_kw("USER") {
        let user = c.peek().and_then(|t| ident_text(c.sql, t));
        return match user {
            Some(user) => Statement::KillUser { query_only, user },
            None => Statement::Other,
        };
    }
    let Some(tok) = c.bump() else {
        return Statement::Other;
    };
    let text = tok.text(c.sql);
    let id = if tok.kind == TokenKind::Word && text.iter().all(u8::is_ascii_digit) {
        std::str::from_utf8(text)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    } else {
        None
    };
    match id {
        Some(id) if c.at_end() => Statement::Kill {
            query_only,
            id,
            by_query_id,
        },
        _ => Statement::Other,
    }
}

fn literal_text(sql: &[u8], tok: Option<&Token>) -> Option<Vec<u8>> {
    let tok = tok?;
    match tok.kind {
        TokenKind::String => Some(unquote(tok.text(sql), b'\'', true)),
        TokenKind::DoubleQuoted => Some(unquote(tok.text(sql), b'"', true)),
        _ => None,
    }
}

fn prepare(mut c: Cursor<'_>) -> Statement {
    let Some(name) = c.ident() else {
        return Statement::Other;
    };
    if !c.eat_kw("FROM") {
        return Statement::Other;
    }
    // Only a lone literal is the statement text; `FROM @var` or `FROM CONCAT(...)` is known
    // only to the server.
    let text = if c.rest().len() == 1 {
        literal_text(c.sql, c.peek())
    } else {
        None
    };
    Statement::Prepare { name, text }
}

fn execute(mut c: Cursor<'_>) -> Statement {
    if c.eat_kw("IMMEDIATE") {
        let is_lone_literal = c.rest().len() == 1 || c.is_kw_at(1, "USING");
        let text = if is_lone_literal {
            literal_text(c.sql, c.peek())
        } else {
            None
        };
        return Statement::ExecuteImmediate { text };
    }
    match c.ident() {
        Some(name) => Statement::Execute { name },
        None => Statement::Other,
    }
}

fn deallocate(mut c: Cursor<'_>) -> Statement {
    match c.ident() {
        Some(name) => Statement::Deallocate { name },
        None => Statement::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(name: &str) -> ObjectName {
        match name.split_once('.') {
            Some((s, n)) => ObjectName {
                schema: Some(s.as_bytes().to_vec()),
                name: n.as_bytes().to_vec(),
            },
            None => ObjectName {
                schema: None,
                name: name.as_bytes().to_vec(),
            },
        }
    }

    fn c(sql: &str) -> Statement {
        classify(sql.as_bytes())
    }

    #[test]
    fn what_reads_only_under_locks() {
        let locked = [
            "UPDATE t SET v = v + 1 WHERE id = 1",
            "UPDATE t SET v = (SELECT MAX(v) FROM u) WHERE id = 1",
            "INSERT INTO t VALUES (1, 2)",
            "INSERT INTO t SELECT * FROM u",
            "REPLACE INTO t VALUES (1)",
            "DELETE FROM t WHERE id IN (SELECT id FROM u)",
            "UPDATE t JOIN u ON t.id = u.id SET t.v = u.v",
            "LOAD DATA INFILE '/tmp/x' INTO TABLE t",
            "SELECT v FROM t WHERE id = 1 FOR UPDATE",
            "SELECT v FROM t JOIN u USING (id) LOCK IN SHARE MODE",
            "SELECT v FROM t WHERE id = 1 FOR UPDATE SKIP LOCKED",
            "BEGIN",
            "START TRANSACTION READ WRITE",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT a",
            "ROLLBACK TO SAVEPOINT a",
            "USE db",
        ];
        for sql in locked {
            assert!(c(sql).reads_under_locks(), "{sql}");
        }
        let unlocked = [
            "SELECT v FROM t WHERE id = 1",
            "SELECT v INTO @v FROM t WHERE id = 1",
            "SELECT * FROM (SELECT v FROM t) x FOR UPDATE",
            "SELECT v FROM t WHERE id IN (SELECT id FROM u) FOR UPDATE",
            "(SELECT v FROM t FOR UPDATE) UNION (SELECT v FROM u FOR UPDATE)",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
            "CALL p()",
            "SET @v = (SELECT v FROM t WHERE id = 1)",
            "SHOW TABLES",
            "DO (SELECT v FROM t)",
            "SET STATEMENT max_statement_time=1 FOR UPDATE t SET v = 1",
        ];
        for sql in unlocked {
            assert!(!c(sql).reads_under_locks(), "{sql}");
        }
    }

    #[test]
    fn what_may_change_the_isolation_level_unseen() {
        let changes = [
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET tx_isolation = 'READ-COMMITTED'",
            "SET @@session.tx_isolation = 'READ-COMMITTED', autocommit = 0",
            "SET GLOBAL tx_isolation = 'READ-COMMITTED'",
            "SET STATEMENT max_statement_time=1 FOR CALL p()",
            "CALL p()",
            "BEGIN NOT ATOMIC SET tx_isolation = 'READ-COMMITTED'; END",
            "PREPARE s FROM 'SET tx_isolation = 1'",
            "EXECUTE s",
            "EXECUTE IMMEDIATE 'SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED'",
        ];
        for sql in changes {
            assert!(c(sql).may_change_isolation(), "{sql}");
        }
        let keeps = [
            "SET autocommit = 0",
            "SET NAMES utf8mb4",
            "SET @isolation = 1",
            "UPDATE t SET v = 1",
            "SELECT @@tx_isolation",
            "BEGIN",
        ];
        for sql in keeps {
            assert!(!c(sql).may_change_isolation(), "{sql}");
        }
    }

    fn select(locking: bool) -> Statement {
        Statement::Read(ReadKind::Select {
            locking,
            locks_every_read: locking,
        })
    }

    /// A locking clause that does not cover every query block.
    fn partly_locking_select() -> Statement {
        Statement::Read(ReadKind::Select {
            locking: true,
            locks_every_read: false,
        })
    }

    #[test]
    fn reads() {
        use ReadKind::*;
        let cases: &[(&str, Statement)] = &[
            ("SELECT 1", select(false)),
            ("select * from t where a = 'FOR UPDATE'", select(false)),
            ("SELECT * FROM t FOR UPDATE", select(true)),
            (
                "SELECT * FROM t WHERE id=1 for update skip locked",
                select(true),
            ),
            ("SELECT * FROM t LOCK IN SHARE MODE", select(true)),
            ("SELECT * FROM t FOR SHARE", select(true)),
            (
                "SELECT * FROM (SELECT a FROM t FOR UPDATE) x",
                partly_locking_select(),
            ),
            ("SELECT a INTO OUTFILE '/tmp/x' FROM t", select(false)),
            ("SELECT a INTO @v FROM t", select(false)),
            ("SELECT * FROM t /* FOR UPDATE */", select(false)),
            ("(SELECT 1) UNION (SELECT 2)", select(false)),
            ("  /* c */ SELECT 1", select(false)),
            ("/*!40001 SELECT SQL_NO_CACHE 1 */", select(false)),
            ("SHOW TABLES", Statement::Read(Show)),
            ("show global status like 'wsrep%'", Statement::Read(Show)),
            ("DESCRIBE t", Statement::Read(Describe)),
            ("DESC t", Statement::Read(Describe)),
            ("EXPLAIN SELECT 1", Statement::Read(Explain)),
            ("EXPLAIN UPDATE t SET a=1", Statement::Read(Explain)),
            (
                "EXPLAIN FORMAT=JSON DELETE FROM t",
                Statement::Read(Explain),
            ),
            ("HELP 'select'", Statement::Read(Help)),
            ("DO SLEEP(1)", Statement::Read(Do)),
            ("VALUES (1,2),(3,4)", Statement::Read(Values)),
            ("TABLE t", Statement::Read(Table)),
            ("WITH x AS (SELECT 1) SELECT * FROM x", select(false)),
            (
                "WITH RECURSIVE x(n) AS (SELECT 1 UNION SELECT n+1 FROM x WHERE n<3) \
                 SELECT * FROM x FOR UPDATE",
                partly_locking_select(),
            ),
            ("WITH x AS (SELECT 1) (SELECT * FROM x)", select(false)),
            ("ANALYZE SELECT * FROM t", select(false)),
        ];
        for (sql, want) in cases {
            assert_eq!(&c(sql), want, "{sql}");
        }
    }

    #[test]
    fn writes() {
        use WriteKind::*;
        let cases: &[(&str, WriteKind)] = &[
            ("INSERT INTO t VALUES (1)", Insert),
            ("insert t (a, b) values (1, (SELECT 2))", Insert),
            ("INSERT INTO t SET a=1", Insert),
            (
                "INSERT INTO t (a) VALUE (1) ON DUPLICATE KEY UPDATE a=2",
                Insert,
            ),
            ("INSERT IGNORE INTO t SELECT * FROM u", InsertSelect),
            ("INSERT INTO t (a, b) SELECT a, b FROM u", InsertSelect),
            ("INSERT INTO t (SELECT * FROM u)", InsertSelect),
            (
                "INSERT INTO t WITH x AS (SELECT 1) SELECT * FROM x",
                InsertSelect,
            ),
            ("INSERT INTO t TABLE u", InsertSelect),
            ("REPLACE INTO t VALUES (1)", Replace),
            ("REPLACE INTO t SELECT 1", ReplaceSelect),
            ("UPDATE t SET a=1", Update),
            ("UPDATE t1, t2 SET t1.a=t2.a WHERE t1.id=t2.id", Update),
            ("UPDATE t1 JOIN t2 USING (id) SET t1.a=1", Update),
            ("DELETE FROM t WHERE a=1", Delete),
            ("DELETE t1, t2 FROM t1 JOIN t2 ON t1.id=t2.id", Delete),
            ("DELETE FROM t1 USING t1, t2 WHERE t1.id=t2.id", Delete),
            (
                "WITH x AS (SELECT 1 AS id) UPDATE t JOIN x USING (id) SET a=1",
                Update,
            ),
            (
                "WITH x AS (SELECT 1 AS id) DELETE FROM t WHERE id IN (SELECT id FROM x)",
                Delete,
            ),
            (
                "LOAD DATA INFILE '/tmp/x' INTO TABLE t",
                LoadData { local: false },
            ),
            (
                "LOAD DATA LOW_PRIORITY LOCAL INFILE 'x' INTO TABLE t",
                LoadData { local: true },
            ),
            (
                "LOAD XML LOCAL INFILE 'x' INTO TABLE t",
                LoadXml { local: true },
            ),
            ("CALL p(1)", Call),
            ("call db.p", Call),
            ("ANALYZE UPDATE t SET a=1", Update),
        ];
        for (sql, want) in cases {
            assert_eq!(c(sql), Statement::Write(*want), "{sql}");
        }
    }

    #[test]
    fn transaction_control() {
        let begin = |read_only, consistent_snapshot| Statement::Begin {
            read_only,
            consistent_snapshot,
        };
        let done = |chain, release| Completion { chain, release };
        let name = |s: &str| s.as_bytes().to_vec();
        let cases: &[(&str, Statement)] = &[
            ("BEGIN", begin(false, false)),
            ("begin work", begin(false, false)),
            ("START TRANSACTION", begin(false, false)),
            ("START TRANSACTION READ ONLY", begin(true, false)),
            ("start transaction read write", begin(false, false)),
            (
                "START TRANSACTION WITH CONSISTENT SNAPSHOT",
                begin(false, true),
            ),
            (
                "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
                begin(true, true),
            ),
            ("BEGIN NOT ATOMIC SELECT 1; END", Statement::Compound),
            ("COMMIT", Statement::Commit(done(None, None))),
            ("COMMIT WORK", Statement::Commit(done(None, None))),
            (
                "COMMIT AND CHAIN",
                Statement::Commit(done(Some(true), None)),
            ),
            (
                "COMMIT WORK AND NO CHAIN NO RELEASE",
                Statement::Commit(done(Some(false), Some(false))),
            ),
            ("COMMIT RELEASE", Statement::Commit(done(None, Some(true)))),
            ("ROLLBACK", Statement::Rollback(done(None, None))),
            (
                "ROLLBACK WORK AND CHAIN RELEASE",
                Statement::Rollback(done(Some(true), Some(true))),
            ),
            (
                "ROLLBACK TO SAVEPOINT sp1",
                Statement::RollbackToSavepoint { name: name("sp1") },
            ),
            (
                "ROLLBACK WORK TO `s p`",
                Statement::RollbackToSavepoint { name: name("s p") },
            ),
            ("SAVEPOINT sp1", Statement::Savepoint { name: name("sp1") }),
            (
                "RELEASE SAVEPOINT sp1",
                Statement::ReleaseSavepoint { name: name("sp1") },
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(&c(sql), want, "{sql}");
        }
    }

    #[test]
    fn autocommit_in_every_spelling() {
        let cases: &[(&str, Option<Autocommit>)] = &[
            ("SET autocommit = 0", Some(Autocommit::Off)),
            ("SET autocommit=1", Some(Autocommit::On)),
            ("set AUTOCOMMIT = on", Some(Autocommit::On)),
            ("SET autocommit = OFF", Some(Autocommit::Off)),
            ("SET autocommit = TRUE", Some(Autocommit::On)),
            ("SET autocommit = false", Some(Autocommit::Off)),
            ("SET autocommit = 'ON'", Some(Autocommit::On)),
            ("SET @@autocommit=0", Some(Autocommit::Off)),
            ("SET @@session.autocommit=1", Some(Autocommit::On)),
            ("SET @@local.autocommit=1", Some(Autocommit::On)),
            ("SET SESSION autocommit=0", Some(Autocommit::Off)),
            ("SET LOCAL autocommit := 0", Some(Autocommit::Off)),
            ("SET a=1, autocommit=0", Some(Autocommit::Off)),
            (
                "SET autocommit=0, @x = 2, sql_mode=''",
                Some(Autocommit::Off),
            ),
            ("SET autocommit=0, autocommit=1", Some(Autocommit::On)),
            ("SET autocommit = DEFAULT", Some(Autocommit::Unknown)),
            ("SET autocommit = @saved", Some(Autocommit::Unknown)),
            ("SET GLOBAL autocommit=0", None),
            ("SET @@global.autocommit=0", None),
            ("SET GLOBAL a=1, autocommit=0", None),
            (
                "SET GLOBAL a=1, SESSION autocommit=0",
                Some(Autocommit::Off),
            ),
            ("SET @autocommit=0", None),
            ("SET sql_mode='autocommit=0'", None),
        ];
        for (sql, want) in cases {
            assert_eq!(c(sql).autocommit(), *want, "{sql}");
        }
    }

    #[test]
    fn set_reports_names_scopes_and_values() {
        let got = c("SET @a := 1, @'b c' = 'x,y', GLOBAL max_connections = 10, \
                     SESSION sql_mode = CONCAT(@@sql_mode, ',X'), @@global.x = 2, time_zone='+00:00'");
        let Statement::Set(items) = got else {
            panic!("{got:?}");
        };
        let targets: Vec<SetTarget> = items.iter().map(|a| a.target.clone()).collect();
        assert_eq!(
            targets,
            vec![
                SetTarget::User("a".into()),
                SetTarget::User("b c".into()),
                SetTarget::Global("max_connections".into()),
                SetTarget::Session("sql_mode".into()),
                SetTarget::Global("x".into()),
                SetTarget::Session("time_zone".into()),
            ]
        );
        assert_eq!(items[1].value, b"'x,y'".to_vec());
        assert_eq!(items[3].value, b"CONCAT(@@sql_mode, ',X')".to_vec());
        assert_eq!(items[5].value, b"'+00:00'".to_vec());
    }

    #[test]
    fn set_names_charset_transaction_role_statement() {
        let got = c("SET NAMES utf8mb4 COLLATE utf8mb4_bin");
        assert_eq!(
            got,
            Statement::Set(vec![Assignment {
                target: SetTarget::Names,
                value: b"utf8mb4 COLLATE utf8mb4_bin".to_vec()
            }])
        );
        for sql in ["SET CHARACTER SET latin1", "SET CHARSET latin1"] {
            assert_eq!(
                c(sql),
                Statement::Set(vec![Assignment {
                    target: SetTarget::CharacterSet,
                    value: b"latin1".to_vec()
                }]),
                "{sql}"
            );
        }
        let Statement::Set(items) = c("SET NAMES utf8, autocommit=0") else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        assert_eq!(
            c("SET NAMES utf8, autocommit=0").autocommit(),
            Some(Autocommit::Off)
        );

        let cases: &[(&str, Statement)] = &[
            (
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
                Statement::SetTransaction {
                    scope: TransactionScope::Next,
                    read_only: None,
                },
            ),
            (
                "SET SESSION TRANSACTION READ ONLY",
                Statement::SetTransaction {
                    scope: TransactionScope::Session,
                    read_only: Some(true),
                },
            ),
            (
                "SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
                Statement::SetTransaction {
                    scope: TransactionScope::Global,
                    read_only: Some(false),
                },
            ),
            ("SET ROLE r1", Statement::SetRole),
            (
                "SET PASSWORD = PASSWORD('x')",
                ddl(DdlKind::SetPassword, vec![]),
            ),
            (
                "SET PASSWORD FOR u@h = 'x'",
                ddl(DdlKind::SetPassword, vec![]),
            ),
            (
                "SET DEFAULT ROLE r1 FOR u",
                ddl(DdlKind::SetDefaultRole, vec![]),
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(&c(sql), want, "{sql}");
        }

        let got = c("SET STATEMENT max_statement_time=1, sql_mode='' FOR UPDATE t SET a=1");
        let Statement::SetStatementFor { assignments, inner } = got else {
            panic!("{got:?}")
        };
        assert_eq!(assignments.len(), 2);
        assert_eq!(assignments[1].value, b"''".to_vec());
        assert_eq!(*inner, Statement::Write(WriteKind::Update));
        assert_eq!(
            c("SET STATEMENT sql_log_bin=0 FOR SELECT 1").rejection(),
            Some(Rejection::SqlLogBin)
        );
    }

    #[test]
    fn use_reports_unquoted_db() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"USE db1", b"db1"),
            (b"use `my``db`", b"my`db"),
            (b"USE `caf\xe9`", b"caf\xe9"),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql), Statement::Use { db: want.to_vec() });
        }
        assert_eq!(c("USE"), Statement::Other);
    }

    #[test]
    fn ddl_kinds_and_objects() {
        use DdlKind::*;
        let cases: &[(&str, DdlKind, &[&str])] = &[
            ("CREATE TABLE t (a INT PRIMARY KEY)", CreateTable, &["t"]),
            ("CREATE TABLE IF NOT EXISTS `d`.`t x` (a INT)", CreateTable, &["d.t x"]),
            ("create or replace table d.t select 1", CreateTable, &["d.t"]),
            ("CREATE TABLE t AS SELECT * FROM u", CreateTable, &["t"]),
            ("ALTER TABLE t ADD COLUMN b INT", AlterTable, &["t"]),
            ("ALTER ONLINE IGNORE TABLE d.t ENGINE=InnoDB", AlterTable, &["d.t"]),
            ("ALTER TABLE t RENAME TO u", AlterTable, &["t", "u"]),
            ("ALTER TABLE t RENAME COLUMN a TO b", AlterTable, &["t"]),
            ("ALTER TABLE t ADD c INT, RENAME AS d.u", AlterTable, &["t", "d.u"]),
            ("DROP TABLE t", DropTable, &["t"]),
            ("DROP TABLE IF EXISTS t1, d.t2, `t``3` CASCADE", DropTable, &["t1", "d.t2", "t`3"]),
            ("RENAME TABLE a TO b, d.c TO d.e", RenameTable, &["a", "b", "d.c", "d.e"]),
            ("TRUNCATE TABLE t", TruncateTable, &["t"]),
            ("TRUNCATE d.t", TruncateTable, &["d.t"]),
            ("CREATE DATABASE IF NOT EXISTS db", CreateDatabase, &["db"]),
            ("CREATE SCHEMA db CHARACTER SET utf8mb4", CreateDatabase, &["db"]),
            ("ALTER DATABASE db CHARACTER SET utf8mb4", AlterDatabase, &["db"]),
            ("ALTER DATABASE CHARACTER SET utf8mb4", AlterDatabase, &[]),
            ("DROP SCHEMA IF EXISTS db", DropDatabase, &["db"]),
            ("CREATE USER 'u'@'%' IDENTIFIED BY 'p'", CreateUser, &[]),
            ("ALTER USER u@localhost ACCOUNT LOCK", AlterUser, &[]),
            ("DROP USER IF EXISTS u", DropUser, &[]),
            ("RENAME USER a TO b", RenameUser, &[]),
            ("GRANT SELECT ON db.* TO 'u'@'%'", Grant, &[]),
            ("REVOKE ALL PRIVILEGES ON *.* FROM u", Revoke, &[]),
            ("CREATE ROLE r", CreateRole, &[]),
            ("DROP ROLE r", DropRole, &[]),
            ("CREATE PROCEDURE p() SELECT 1", CreateProcedure, &["p"]),
            (
                "CREATE DEFINER=`root`@`localhost` PROCEDURE d.p() BEGIN SELECT 1; END",
                CreateProcedure,
                &["d.p"],
            ),
            ("CREATE DEFINER=CURRENT_USER() FUNCTION f() RETURNS INT RETURN 1", CreateFunction, &["f"]),
            ("CREATE AGGREGATE FUNCTION f RETURNS STRING SONAME 'x.so'", CreateFunction, &["f"]),
            ("ALTER PROCEDURE p COMMENT 'x'", AlterProcedure, &["p"]),
            ("ALTER FUNCTION f SQL SECURITY INVOKER", AlterFunction, &["f"]),
            ("DROP PROCEDURE IF EXISTS d.p", DropProcedure, &["d.p"]),
            ("DROP FUNCTION f", DropFunction, &["f"]),
            (
                "CREATE OR REPLACE ALGORITHM=MERGE DEFINER='a'@'b' SQL SECURITY DEFINER VIEW v AS SELECT 1",
                CreateView,
                &["v"],
            ),
            ("ALTER VIEW v AS SELECT 2", AlterView, &["v"]),
            ("DROP VIEW IF EXISTS v1, v2", DropView, &["v1", "v2"]),
            ("DROP TRIGGER d.tr", DropTrigger, &["d.tr"]),
            ("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t", CreateEvent, &["e"]),
            ("ALTER EVENT e DISABLE", AlterEvent, &["e"]),
            ("DROP EVENT IF EXISTS e", DropEvent, &["e"]),
            ("CREATE SEQUENCE s START WITH 1", CreateSequence, &["s"]),
            ("ALTER SEQUENCE s RESTART", AlterSequence, &["s"]),
            ("DROP SEQUENCE s1, s2", DropSequence, &["s1", "s2"]),
            ("OPTIMIZE TABLE t1, d.t2", OptimizeTable, &["t1", "d.t2"]),
            ("ANALYZE NO_WRITE_TO_BINLOG TABLE t", AnalyzeTable, &["t"]),
            ("ANALYZE TABLE t PERSISTENT FOR ALL", AnalyzeTable, &["t"]),
            ("REPAIR LOCAL TABLE t", RepairTable, &["t"]),
            ("CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (HOST 'h')", CreateServer, &[]),
            ("/*!50001 CREATE ALGORITHM=UNDEFINED */ /*!50013 DEFINER=`r`@`%` SQL SECURITY DEFINER */ /*!50001 VIEW `v` AS SELECT 1 */", CreateView, &["v"]),
        ];
        for (sql, kind, objects) in cases {
            let got = c(sql);
            let Statement::Ddl(ddl) = &got else {
                panic!("{sql} => {got:?}");
            };
            assert_eq!(ddl.kind, *kind, "{sql}");
            let want: Vec<ObjectName> = objects.iter().map(|o| on(o)).collect();
            assert_eq!(ddl.objects, want, "{sql}");
            assert!(got.implicit_commit(), "{sql}");
            assert_eq!(got.rejection(), None, "{sql}");
        }
    }

    #[test]
    fn index_and_trigger_report_their_table() {
        let got = c("CREATE UNIQUE INDEX IF NOT EXISTS i ON d.t (a, b)");
        assert_eq!(
            got,
            Statement::Ddl(Ddl {
                kind: DdlKind::CreateIndex,
                objects: vec![on("i")],
                on_table: Some(on("d.t")),
            })
        );
        let got = c("DROP INDEX `i` ON t");
        assert_eq!(
            got,
            Statement::Ddl(Ddl {
                kind: DdlKind::DropIndex,
                objects: vec![on("i")],
                on_table: Some(on("t")),
            })
        );
        let got = c(
            "CREATE DEFINER=root@localhost TRIGGER tr BEFORE INSERT ON `d`.`t` \
                     FOR EACH ROW SET NEW.a = 1",
        );
        assert_eq!(
            got,
            Statement::Ddl(Ddl {
                kind: DdlKind::CreateTrigger,
                objects: vec![on("tr")],
                on_table: Some(on("d.t")),
            })
        );
    }

    #[test]
    fn temporary_tables_are_session_local() {
        let got = c("CREATE TEMPORARY TABLE tt (a INT)");
        assert_eq!(got, Statement::CreateTemporaryTable(vec![on("tt")]));
        assert!(!got.implicit_commit());
        let got = c("CREATE OR REPLACE TEMPORARY TABLE IF NOT EXISTS d.tt SELECT 1");
        assert_eq!(got, Statement::CreateTemporaryTable(vec![on("d.tt")]));
        let got = c("DROP TEMPORARY TABLE IF EXISTS tt, uu");
        assert_eq!(got, Statement::DropTemporaryTable(vec![on("tt"), on("uu")]));
        assert!(!got.implicit_commit());
    }

    #[test]
    fn rejected_constructs() {
        let cases: &[(&str, Rejection)] = &[
            ("LOCK TABLES t WRITE", Rejection::LockTables),
            ("lock table t read, u write", Rejection::LockTables),
            ("UNLOCK TABLES", Rejection::UnlockTables),
            (
                "FLUSH TABLES WITH READ LOCK",
                Rejection::FlushTablesWithReadLock,
            ),
            (
                "FLUSH NO_WRITE_TO_BINLOG TABLES t1, t2 WITH READ LOCK",
                Rejection::FlushTablesWithReadLock,
            ),
            ("FLUSH TABLES t FOR EXPORT", Rejection::FlushTablesForExport),
            ("BINLOG 'AAAA'", Rejection::Binlog),
            ("XA START 'x'", Rejection::Xa),
            ("xa recover", Rejection::Xa),
            ("SET sql_log_bin = 0", Rejection::SqlLogBin),
            ("SET SESSION sql_log_bin=0", Rejection::SqlLogBin),
            ("SET @@sql_log_bin=0", Rejection::SqlLogBin),
            ("SET @@session.sql_log_bin=OFF", Rejection::SqlLogBin),
            ("SET autocommit=1, SQL_LOG_BIN=0", Rejection::SqlLogBin),
            (
                "SELECT GET_LOCK('a', 10)",
                Rejection::UserLock(UserLockFunction::GetLock),
            ),
            (
                "SELECT get_lock ('a', 10)",
                Rejection::UserLock(UserLockFunction::GetLock),
            ),
            (
                "DO RELEASE_LOCK('a')",
                Rejection::UserLock(UserLockFunction::ReleaseLock),
            ),
            (
                "SELECT IS_FREE_LOCK('a')",
                Rejection::UserLock(UserLockFunction::IsFreeLock),
            ),
            (
                "SELECT RELEASE_ALL_LOCKS()",
                Rejection::UserLock(UserLockFunction::ReleaseAllLocks),
            ),
            (
                "UPDATE t SET a = IS_USED_LOCK('x')",
                Rejection::UserLock(UserLockFunction::IsUsedLock),
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(c(sql).rejection(), Some(*want), "{sql}");
        }
        let not_rejected = [
            "SELECT 'GET_LOCK(1)'",
            "SELECT 1 /* GET_LOCK('a', 1) */",
            "SELECT db.get_lock('a')",
            "SELECT get_lock FROM t",
            "SET @sql_log_bin = 0",
            "FLUSH TABLES",
            "FLUSH LOGS",
            "FLUSH PRIVILEGES",
            "CREATE PROCEDURE p() SELECT GET_LOCK('a', 1)",
        ];
        for sql in not_rejected {
            assert_eq!(c(sql).rejection(), None, "{sql}");
        }
        assert_eq!(c("FLUSH LOGS"), Statement::Flush(FlushKind::Other));
        let Statement::UserLock { statement, .. } = c("SELECT GET_LOCK('a', 1)") else {
            panic!()
        };
        assert_eq!(*statement, select(false));
    }

    #[test]
    fn implicit_commits() {
        let yes = [
            "BEGIN",
            "START TRANSACTION",
            "LOCK TABLES t READ",
            "UNLOCK TABLES",
            "FLUSH LOGS",
            "SET autocommit=1",
            "SET @@autocommit = ON",
            "CHECK TABLE t",
            "CACHE INDEX t IN c",
            "LOAD INDEX INTO CACHE t",
            "RESET QUERY CACHE",
            "SHUTDOWN",
            "START SLAVE",
            "STOP SLAVE",
            "CHANGE MASTER TO MASTER_HOST='h'",
            "GRANT SELECT ON *.* TO u",
            "SET PASSWORD = PASSWORD('x')",
        ];
        for sql in yes {
            assert!(c(sql).implicit_commit(), "{sql}");
        }
        let no = [
            "SELECT 1",
            "UPDATE t SET a=1",
            "SET autocommit=0",
            "SET autocommit=@x",
            "SET sql_mode=''",
            "SAVEPOINT s",
            "COMMIT",
            "CREATE TEMPORARY TABLE t (a INT)",
            "DROP TEMPORARY TABLE t",
            "SET TRANSACTION READ ONLY",
            "USE db",
        ];
        for sql in no {
            assert!(!c(sql).implicit_commit(), "{sql}");
        }
    }

    #[test]
    fn kill() {
        let kill = |query_only, id, by_query_id| Statement::Kill {
            query_only,
            id,
            by_query_id,
        };
        let cases: &[(&str, Statement)] = &[
            ("KILL 42", kill(false, 42, false)),
            ("KILL CONNECTION 42", kill(false, 42, false)),
            ("KILL HARD CONNECTION 42", kill(false, 42, false)),
            ("kill query 7", kill(true, 7, false)),
            ("KILL SOFT QUERY 7", kill(true, 7, false)),
            ("KILL QUERY ID 9", kill(true, 9, true)),
            ("KILL 18446744073709551615", kill(false, u64::MAX, false)),
            (
                "KILL USER 'bob'",
                Statement::KillUser {
                    query_only: false,
                    user: b"bob".to_vec(),
                },
            ),
            (
                "KILL QUERY USER bob",
                Statement::KillUser {
                    query_only: true,
                    user: b"bob".to_vec(),
                },
            ),
            ("KILL 18446744073709551616", Statement::Other),
            ("KILL @id", Statement::Other),
            ("KILL 1+1", Statement::Other),
            ("KILL", Statement::Other),
        ];
        for (sql, want) in cases {
            assert_eq!(&c(sql), want, "{sql}");
        }
    }

    #[test]
    fn sql_prepared_statements() {
        let name = |s: &str| s.as_bytes().to_vec();
        let cases: &[(&str, Statement)] = &[
            (
                "PREPARE s FROM 'SELECT * FROM t WHERE a = ?'",
                Statement::Prepare {
                    name: name("s"),
                    text: Some(name("SELECT * FROM t WHERE a = ?")),
                },
            ),
            (
                "PREPARE `s` FROM 'UPDATE t SET b = \\'x\\' WHERE a = ?'",
                Statement::Prepare {
                    name: name("s"),
                    text: Some(name("UPDATE t SET b = 'x' WHERE a = ?")),
                },
            ),
            (
                "PREPARE s FROM @sql",
                Statement::Prepare {
                    name: name("s"),
                    text: None,
                },
            ),
            ("EXECUTE s", Statement::Execute { name: name("s") }),
            (
                "EXECUTE s USING @a, @b",
                Statement::Execute { name: name("s") },
            ),
            (
                "EXECUTE IMMEDIATE 'DELETE FROM t'",
                Statement::ExecuteImmediate {
                    text: Some(name("DELETE FROM t")),
                },
            ),
            (
                "EXECUTE IMMEDIATE CONCAT('SELECT ', 1)",
                Statement::ExecuteImmediate { text: None },
            ),
            (
                "DEALLOCATE PREPARE s",
                Statement::Deallocate { name: name("s") },
            ),
            ("DROP PREPARE s", Statement::Deallocate { name: name("s") }),
        ];
        for (sql, want) in cases {
            assert_eq!(&c(sql), want, "{sql}");
        }
        // The inner text classifies on its own.
        let Statement::Prepare {
            text: Some(inner), ..
        } = c("PREPARE s FROM 'UPDATE t SET b = 1'")
        else {
            panic!()
        };
        assert_eq!(classify(&inner), Statement::Write(WriteKind::Update));
    }

    #[test]
    fn trailing_semicolons_are_ignored() {
        assert_eq!(
            c("BEGIN;"),
            Statement::Begin {
                read_only: false,
                consistent_snapshot: false
            }
        );
        assert_eq!(
            c("KILL 5 ; ;"),
            Statement::Kill {
                query_only: false,
                id: 5,
                by_query_id: false
            }
        );
        assert_eq!(c("SET autocommit=0;").autocommit(), Some(Autocommit::Off));
        assert_eq!(c(";"), Statement::Empty);
    }

    #[test]
    fn compound_and_unknown() {
        assert_eq!(c("BEGIN NOT ATOMIC SELECT 1; END"), Statement::Compound);
        assert_eq!(c("IF 1 THEN SELECT 1; END IF"), Statement::Compound);
        assert_eq!(c("lbl: LOOP LEAVE lbl; END LOOP"), Statement::Compound);
        assert_eq!(c(""), Statement::Empty);
        assert_eq!(c("  -- only a comment"), Statement::Empty);
        assert_eq!(c("HANDLER t OPEN"), Statement::Other);
        assert_eq!(c("FROBNICATE everything"), Statement::Other);
        assert_eq!(c("'SELECT 1'"), Statement::Other);
        assert_eq!(c("BEGIN garbage"), Statement::Other);
    }

    #[test]
    fn executable_comments_are_classified_by_their_body() {
        assert_eq!(
            c("/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='' */"),
            Statement::Set(vec![
                Assignment {
                    target: SetTarget::User("OLD_SQL_MODE".into()),
                    value: b"@@SQL_MODE".to_vec()
                },
                Assignment {
                    target: SetTarget::Session("sql_mode".into()),
                    value: b"''".to_vec()
                },
            ])
        );
        assert_eq!(
            c("/*M!100100 LOCK TABLES t WRITE */"),
            Statement::LockTables
        );
        assert_eq!(
            c("INSERT /*! IGNORE */ INTO t VALUES (1)"),
            Statement::Write(WriteKind::Insert)
        );
    }

    #[test]
    fn non_utf8_statements() {
        assert_eq!(
            classify(b"INSERT INTO t VALUES (_latin1'\xe9\xff')"),
            Statement::Write(WriteKind::Insert)
        );
        assert_eq!(
            classify(b"SELECT _binary'\x00\xff\\'' FROM caf\xe9 FOR UPDATE"),
            select(true)
        );
        assert_eq!(
            classify(b"DROP TABLE caf\xe9"),
            ddl(
                DdlKind::DropTable,
                vec![ObjectName {
                    schema: None,
                    name: b"caf\xe9".to_vec()
                }]
            )
        );
        assert_eq!(classify(b"\xff\xfe"), Statement::Other);
    }
}
