//! Privilege checks for replicated DDL. A TOI statement runs on every node as the node's
//! service account, which holds every privilege, so the origin must first verify that the
//! client's own account may run it; otherwise any account could create users or drop tables.
//! The check asks the backend, on the client's own connection, whether the account (or its
//! current role) holds the privilege globally, on the schema (schema wildcards included) or on
//! the table. The refusal is worded as MariaDB words it.

use crate::frontend::error::ClientError;
use crate::statement::{Ddl, DdlKind};

/// Where a privilege must be held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scope {
    /// Only a global grant will do (accounts, servers).
    Global,
    Database(String),
    Table(String, String),
}

/// The privilege a DDL statement needs, and where.
pub(super) fn required(ddl: &Ddl, default_schema: Option<&str>) -> (&'static str, Scope) {
    use DdlKind as K;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let first = ddl.objects.first().or(ddl.on_table.as_ref());
    let table_scope = || match (
        ddl.on_table.as_ref().or(ddl.objects.first()),
        default_schema,
    ) {
        (Some(o), d) => {
            let schema = o
                .schema
                .as_deref()
                .map(text)
                .or_else(|| d.map(str::to_owned))
                .unwrap_or_default();
            Scope::Table(schema, text(&o.name))
        }
        (None, Some(d)) => Scope::Database(d.to_owned()),
        (None, None) => Scope::Global,
    };
    let object_db = || match (first, default_schema) {
        (Some(o), d) => Scope::Database(
            o.schema
                .as_deref()
                .map(text)
                .or_else(|| d.map(str::to_owned))
                .unwrap_or_default(),
        ),
        (None, Some(d)) => Scope::Database(d.to_owned()),
        (None, None) => Scope::Global,
    };
    match ddl.kind {
        K::CreateTable | K::CreateSequence => ("CREATE", table_scope()),
        K::AlterTable | K::AlterSequence => ("ALTER", table_scope()),
        K::DropTable | K::TruncateTable | K::DropSequence | K::DropView => ("DROP", table_scope()),
        K::RenameTable => ("ALTER", table_scope()),
        K::CreateIndex | K::DropIndex => ("INDEX", table_scope()),
        K::OptimizeTable | K::AnalyzeTable | K::RepairTable => ("INSERT", table_scope()),
        K::CreateDatabase => (
            "CREATE",
            Scope::Database(first.map(|o| text(&o.name)).unwrap_or_default()),
        ),
        K::AlterDatabase => (
            "ALTER",
            Scope::Database(first.map(|o| text(&o.name)).unwrap_or_default()),
        ),
        K::DropDatabase => (
            "DROP",
            Scope::Database(first.map(|o| text(&o.name)).unwrap_or_default()),
        ),
        K::CreateView | K::AlterView => ("CREATE VIEW", table_scope()),
        K::CreateTrigger | K::DropTrigger => ("TRIGGER", table_scope()),
        K::CreateProcedure | K::CreateFunction | K::CreatePackage => {
            ("CREATE ROUTINE", object_db())
        }
        K::AlterProcedure
        | K::AlterFunction
        | K::DropProcedure
        | K::DropFunction
        | K::DropPackage => ("ALTER ROUTINE", object_db()),
        K::CreateEvent | K::AlterEvent | K::DropEvent => ("EVENT", object_db()),
        K::Grant | K::Revoke => ("GRANT OPTION", Scope::Global),
        K::CreateServer | K::AlterServer | K::DropServer => ("SUPER", Scope::Global),
        K::CreateUser
        | K::AlterUser
        | K::DropUser
        | K::RenameUser
        | K::SetPassword
        | K::SetDefaultRole
        | K::CreateRole
        | K::AlterRole
        | K::DropRole => ("CREATE USER", Scope::Global),
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The query that returns a row when the current account (or role) holds `privilege` at `scope`.
/// GRANT OPTION may also be held on a schema: a schema-level GRANT needs only that.
pub(super) fn check_query(privilege: &str, scope: &Scope) -> String {
    // GRANT OPTION is not a privilege row of its own: it is the IS_GRANTABLE flag of any row.
    let p = if privilege == "GRANT OPTION" {
        "PRIVILEGE_TYPE AND IS_GRANTABLE = 'YES'".to_string()
    } else {
        quote(privilege)
    };
    let grantee = "GRANTEE IN (CONCAT('''', REPLACE(CURRENT_USER(), '@', '''@'''), ''''), CONCAT('''', CURRENT_ROLE(), ''''))";
    let mut q = format!(
        "SELECT 1 FROM information_schema.USER_PRIVILEGES WHERE {grantee} AND PRIVILEGE_TYPE = {p}"
    );
    let schema_part = |db: &str| {
        format!(
            " UNION ALL SELECT 1 FROM information_schema.SCHEMA_PRIVILEGES WHERE {grantee} AND PRIVILEGE_TYPE = {p} AND {} LIKE TABLE_SCHEMA",
            quote(db)
        )
    };
    match scope {
        Scope::Global if privilege == "GRANT OPTION" => {
            q.push_str(&format!(
                " UNION ALL SELECT 1 FROM information_schema.SCHEMA_PRIVILEGES WHERE {grantee} AND PRIVILEGE_TYPE = {p}"
            ));
        }
        Scope::Global => {}
        Scope::Database(db) => q.push_str(&schema_part(db)),
        Scope::Table(db, table) => {
            q.push_str(&schema_part(db));
            q.push_str(&format!(
                " UNION ALL SELECT 1 FROM information_schema.TABLE_PRIVILEGES WHERE {grantee} AND PRIVILEGE_TYPE = {p} AND TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                quote(db),
                quote(table)
            ));
        }
    }
    q.push_str(" LIMIT 1");
    q
}

/// MariaDB's refusal for a missing privilege.
pub(super) fn denied(privilege: &str, scope: &Scope, user: &str, host: &str) -> ClientError {
    match scope {
        Scope::Global => ClientError::SpecificAccessDenied(privilege.to_owned()),
        Scope::Database(db) => ClientError::DbAccessDenied {
            user: user.to_owned(),
            host: host.to_owned(),
            db: db.clone(),
        },
        Scope::Table(db, table) => ClientError::TableAccessDenied {
            command: privilege.to_owned(),
            user: user.to_owned(),
            host: host.to_owned(),
            db: db.clone(),
            table: table.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::{classify, Statement};

    fn ddl(sql: &str) -> Ddl {
        match classify(sql.as_bytes()) {
            Statement::Ddl(d) => d,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn ddl_maps_to_mariadbs_privileges() {
        assert_eq!(
            required(&ddl("CREATE TABLE d.t (id INT)"), None),
            ("CREATE", Scope::Table("d".into(), "t".into()))
        );
        assert_eq!(
            required(&ddl("DROP TABLE t"), Some("cur")),
            ("DROP", Scope::Table("cur".into(), "t".into()))
        );
        assert_eq!(
            required(&ddl("CREATE DATABASE x"), None),
            ("CREATE", Scope::Database("x".into()))
        );
        assert_eq!(
            required(&ddl("CREATE USER 'a'@'%'"), None),
            ("CREATE USER", Scope::Global)
        );
        assert_eq!(
            required(&ddl("GRANT SELECT ON d.* TO 'a'@'%'"), None).0,
            "GRANT OPTION"
        );
        assert_eq!(
            required(&ddl("CREATE INDEX i ON d.t (a)"), None),
            ("INDEX", Scope::Table("d".into(), "t".into()))
        );
    }

    #[test]
    fn check_queries_quote_names() {
        let q = check_query("CREATE", &Scope::Table("d'x".into(), "t".into()));
        assert!(q.contains("'d\\'x' LIKE TABLE_SCHEMA"), "{q}");
        assert!(q.ends_with("LIMIT 1"));
    }

    #[test]
    fn refusals_use_mariadbs_words() {
        let e = denied(
            "CREATE",
            &Scope::Table("d".into(), "t".into()),
            "u",
            "localhost",
        );
        assert_eq!(
            e.parts().2,
            "CREATE command denied to user 'u'@'localhost' for table `d`.`t`"
        );
        let e = denied("CREATE", &Scope::Database("d".into()), "u", "localhost");
        assert_eq!(
            e.parts(),
            (
                1044,
                b"42000",
                "Access denied for user 'u'@'localhost' to database 'd'".to_string()
            )
        );
        let e = denied("CREATE USER", &Scope::Global, "u", "localhost");
        assert_eq!(
            e.parts(),
            (1227, b"42000", "Access denied; you need (at least one of) the CREATE USER privilege(s) for this operation".to_string())
        );
    }
}
