//! SQL dialects and the barrier table.

use std::fmt;

use futures_util::future::BoxFuture;

use crate::Error;

/// The SQL dialect of a barrier table, chosen from the database type of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// MySQL and MariaDB: `insert ignore`.
    MySql,
    /// PostgreSQL: `insert ... on conflict (gid, branch_id, op, barrier_id) do nothing`.
    Postgres,
    /// SQLite: `insert or ignore`.
    Sqlite,
}

/// The default barrier table of MySQL and PostgreSQL, shared with the Go client.
pub const DEFAULT_TABLE: &str = "dtm_barrier.barrier";
/// The default barrier table of SQLite, which has no schemas.
pub const DEFAULT_SQLITE_TABLE: &str = "dtm_barrier";

impl Dialect {
    /// The default table name for this dialect.
    pub const fn default_table(self) -> &'static str {
        match self {
            Dialect::Sqlite => DEFAULT_SQLITE_TABLE,
            _ => DEFAULT_TABLE,
        }
    }

    /// The statement inserting a barrier row unless `(gid, branch_id, op, barrier_id)` exists.
    /// Binds, in order: trans_type, gid, branch_id, op, barrier_id, reason.
    pub fn insert_sql(self, table: &TableName) -> String {
        let cols = "(trans_type, gid, branch_id, op, barrier_id, reason)";
        match self {
            Dialect::MySql => format!("insert ignore into {table}{cols} values(?,?,?,?,?,?)"),
            // The conflict target names the columns, not the Go table's constraint
            // (`uniq_barrier`): it matches that table and any other barrier table, whose
            // constraint cannot share the name within one schema.
            Dialect::Postgres => format!(
                "insert into {table}{cols} values($1,$2,$3,$4,$5,$6) \
                 on conflict (gid, branch_id, op, barrier_id) do nothing"
            ),
            Dialect::Sqlite => format!("insert or ignore into {table}{cols} values(?,?,?,?,?,?)"),
        }
    }

    /// The statement reading the reason of a barrier row. Binds gid, branch_id, op, barrier_id.
    pub fn select_reason_sql(self, table: &TableName) -> String {
        let (a, b, c, d) = match self {
            Dialect::Postgres => ("$1", "$2", "$3", "$4"),
            _ => ("?", "?", "?", "?"),
        };
        format!(
            "select reason from {table} where gid={a} and branch_id={b} and op={c} and barrier_id={d}"
        )
    }

    /// The statements creating the schema (where the dialect has one) and the table, with the
    /// Go client's columns so that Go and Rust services can share it.
    ///
    /// The key columns compare byte for byte, so that gids differing only in case, accents or
    /// trailing spaces never share barrier rows: on MySQL/MariaDB the collation of `gid`,
    /// `branch_id`, `op` and `barrier_id` is `collation` (see [`Dialect::MYSQL_EXACT_COLLATIONS`]; ignored by the other dialects);
    /// PostgreSQL's and SQLite's default collations already compare exactly. The PostgreSQL
    /// unique constraint is named `uniq_barrier`, the name the Go client's insert refers to.
    pub fn create_table_sql(self, table: &TableName, collation: &str) -> Vec<String> {
        let mut stmts = Vec::new();
        let key_collation = match self {
            Dialect::MySql => format!(" collate {collation}"),
            _ => String::new(),
        };
        let k = key_collation.as_str();
        let columns = format!(
            "trans_type varchar(45) default '', gid varchar(128){k} default '', \
             branch_id varchar(128){k} default '', op varchar(45){k} default '', \
             barrier_id varchar(45){k} default '', reason varchar(45) default ''"
        );
        match self {
            Dialect::MySql => {
                if let Some(schema) = table.schema() {
                    stmts.push(format!("create database if not exists {schema}"));
                }
                stmts.push(format!(
                    "create table if not exists {table} (id bigint(22) primary key auto_increment, \
                     {columns}, create_time datetime default now(), update_time datetime default now(), \
                     key(create_time), key(update_time), \
                     unique key uniq_barrier(gid, branch_id, op, barrier_id)) \
                     engine=InnoDB default charset=utf8mb4"
                ));
            }
            Dialect::Postgres => {
                if let Some(schema) = table.schema() {
                    stmts.push(format!("create schema if not exists {schema}"));
                }
                stmts.push(format!("create sequence if not exists {table}_seq"));
                stmts.push(format!(
                    "create table if not exists {table} (id bigint not null default nextval('{table}_seq'), \
                     {columns}, create_time timestamp(0) with time zone default now(), \
                     update_time timestamp(0) with time zone default now(), primary key(id), \
                     constraint uniq_barrier unique(gid, branch_id, op, barrier_id))"
                ));
            }
            Dialect::Sqlite => {
                stmts.push(format!(
                    "create table if not exists {table} (id integer primary key autoincrement, \
                     {columns}, create_time datetime default current_timestamp, \
                     update_time datetime default current_timestamp, \
                     constraint uniq_barrier unique(gid, branch_id, op, barrier_id))"
                ));
            }
        }
        stmts
    }

    /// MySQL/MariaDB collations that compare byte for byte without padding trailing spaces,
    /// in order of preference: MariaDB's `utf8mb4_nopad_bin`, MySQL 8's `utf8mb4_0900_bin`.
    /// (`utf8mb4_bin` pads: `a` and `a ` are equal in a unique key.)
    pub const MYSQL_EXACT_COLLATIONS: [&'static str; 2] = ["utf8mb4_nopad_bin", "utf8mb4_0900_bin"];

    /// The statement giving an existing MySQL/MariaDB barrier table's key columns `collation`
    /// (the Go client's column sizes and defaults).
    pub fn mysql_fix_sql(table: &TableName, collation: &str) -> String {
        format!(
            "alter table {table} modify gid varchar(128) collate {collation} default '', \
             modify branch_id varchar(128) collate {collation} default '', \
             modify op varchar(45) collate {collation} default '', \
             modify barrier_id varchar(45) collate {collation} default ''"
        )
    }

    /// A query listing which of [`Dialect::MYSQL_EXACT_COLLATIONS`] the server has.
    pub(crate) fn mysql_collations_sql() -> String {
        format!(
            "select collation_name from information_schema.collations where collation_name in ('{}', '{}')",
            Self::MYSQL_EXACT_COLLATIONS[0],
            Self::MYSQL_EXACT_COLLATIONS[1]
        )
    }

    /// A query returning one row per key column of `table` that does not compare exactly,
    /// as `column collation`, or, for SQLite, the table's DDL.
    pub(crate) fn inexact_columns_sql(self, table: &TableName) -> String {
        const KEY: &str = "('gid', 'branch_id', 'op', 'barrier_id')";
        match self {
            Dialect::MySql => {
                let schema = table
                    .schema()
                    .map_or_else(|| "database()".to_owned(), |s| format!("'{s}'"));
                let exact = Self::MYSQL_EXACT_COLLATIONS
                    .map(|c| format!("'{c}'"))
                    .join(", ");
                format!(
                    "select cast(concat(column_name, ' ', coalesce(collation_name, 'none')) as char) \
                     from information_schema.columns where table_schema = {schema} \
                     and table_name = '{}' and column_name in {KEY} \
                     and coalesce(collation_name, 'binary') not in ('binary', {exact})",
                    table.table()
                )
            }
            Dialect::Postgres => format!(
                "select a.attname || ' ' || c.collname from pg_attribute a \
                 join pg_collation c on c.oid = a.attcollation \
                 where a.attrelid = to_regclass('{table}') and a.attname in {KEY} \
                 and not c.collisdeterministic"
            ),
            Dialect::Sqlite => format!(
                "select sql from sqlite_master where type = 'table' and name = '{}'",
                table.table()
            ),
        }
    }

    /// A query returning a row if `table` exists.
    pub(crate) fn table_exists_sql(self, table: &TableName) -> String {
        match self {
            Dialect::MySql => {
                let schema = table
                    .schema()
                    .map_or_else(|| "database()".to_owned(), |s| format!("'{s}'"));
                format!(
                    "select cast(table_name as char) from information_schema.tables \
                     where table_schema = {schema} and table_name = '{}'",
                    table.table()
                )
            }
            Dialect::Postgres => {
                format!(
                    "select to_regclass('{table}')::text where to_regclass('{table}') is not null"
                )
            }
            Dialect::Sqlite => format!(
                "select name from sqlite_master where type = 'table' and name = '{}'",
                table.table()
            ),
        }
    }

    /// PostgreSQL: the tables of `table`'s schema that own a constraint named `uniq_barrier`.
    pub(crate) fn uniq_barrier_owners_sql(table: &TableName) -> String {
        let schema = table.schema().map_or_else(
            || "current_schema()".to_owned(),
            |s| format!("'{}'", s.to_ascii_lowercase()),
        );
        format!(
            "select t.relname::text from pg_class i \
             join pg_namespace n on n.oid = i.relnamespace \
             join pg_index x on x.indexrelid = i.oid \
             join pg_class t on t.oid = x.indrelid \
             where i.relname = 'uniq_barrier' and n.nspname = {schema}"
        )
    }
}

/// A validated barrier table name: `table` or `schema.table`, each part an identifier of
/// ASCII letters, digits and `_` (not starting with a digit) that is not an SQL reserved word.
///
/// Checked once, at construction, against the limits of the dialect it is for:
/// - MySQL/MariaDB: at most 64 characters a part; not the system schemas `mysql`,
///   `information_schema`, `performance_schema`, `sys`;
/// - PostgreSQL: at most 63 bytes a part, and at most 59 for the table, whose sequence is
///   `<table>_seq`; not `information_schema` or a `pg_` schema;
/// - SQLite: at most 64 characters a part; no `sqlite_` table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName(String);

/// Words no part of a table name may be (case-insensitive): reserved in MySQL, PostgreSQL or
/// SQLite, so that an unquoted name works on all three.
const RESERVED: &[&str] = &[
    "add",
    "all",
    "alter",
    "analyze",
    "and",
    "any",
    "as",
    "asc",
    "between",
    "both",
    "by",
    "call",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "cross",
    "current_date",
    "current_time",
    "current_timestamp",
    "current_user",
    "database",
    "databases",
    "default",
    "delete",
    "desc",
    "describe",
    "distinct",
    "drop",
    "else",
    "end",
    "except",
    "exists",
    "explain",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "in",
    "index",
    "inner",
    "insert",
    "intersect",
    "interval",
    "into",
    "is",
    "join",
    "key",
    "keys",
    "leading",
    "left",
    "like",
    "limit",
    "lock",
    "natural",
    "not",
    "null",
    "offset",
    "on",
    "or",
    "order",
    "outer",
    "primary",
    "range",
    "references",
    "rename",
    "replace",
    "returning",
    "revoke",
    "right",
    "row",
    "rows",
    "schema",
    "schemas",
    "select",
    "session_user",
    "set",
    "show",
    "some",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "update",
    "usage",
    "user",
    "using",
    "values",
    "when",
    "where",
    "window",
    "with",
];

impl TableName {
    /// Validates a table name for any dialect (the strictest limits of the three).
    pub fn new(name: &str) -> Result<Self, Error> {
        for dialect in [Dialect::MySql, Dialect::Postgres, Dialect::Sqlite] {
            Self::for_dialect(name, dialect)?;
        }
        Ok(TableName(name.to_owned()))
    }

    /// Validates a table name for one dialect.
    pub fn for_dialect(name: &str, dialect: Dialect) -> Result<Self, Error> {
        let refuse = |reason: String| Error::InvalidTable {
            name: name.to_owned(),
            reason,
        };
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 {
            return Err(refuse("use `table` or `schema.table`".into()));
        }
        let (schema, table) = match parts[..] {
            [schema, table] => (Some(schema), table),
            _ => (None, parts[0]),
        };
        for part in &parts {
            if part.is_empty() {
                return Err(refuse("empty identifier".into()));
            }
            if part.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(refuse(format!("`{part}` starts with a digit")));
            }
            if !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(refuse(
                    "only ASCII letters, digits and `_` are allowed".into(),
                ));
            }
            if RESERVED.contains(&part.to_ascii_lowercase().as_str()) {
                return Err(refuse(format!("`{part}` is an SQL reserved word")));
            }
        }
        let max = |part: &str, limit: usize, what: &str| {
            if part.len() > limit {
                Err(refuse(format!("`{part}` is longer than {limit} {what}")))
            } else {
                Ok(())
            }
        };
        let lower = |s: &str| s.to_ascii_lowercase();
        match dialect {
            Dialect::MySql => {
                for part in &parts {
                    max(part, 64, "characters (MySQL's identifier limit)")?;
                }
                if let Some(schema) = schema {
                    let s = lower(schema);
                    if ["mysql", "information_schema", "performance_schema", "sys"]
                        .contains(&s.as_str())
                    {
                        return Err(refuse(format!("`{schema}` is a system schema")));
                    }
                }
            }
            Dialect::Postgres => {
                if let Some(schema) = schema {
                    max(schema, 63, "bytes (PostgreSQL's identifier limit)")?;
                    let s = lower(schema);
                    if s == "information_schema" || s.starts_with("pg_") {
                        return Err(refuse(format!("`{schema}` is a system schema")));
                    }
                }
                max(
                    table,
                    59,
                    "bytes (PostgreSQL's identifier limit of 63, less the `_seq` of its sequence)",
                )?;
            }
            Dialect::Sqlite => {
                for part in &parts {
                    max(part, 64, "characters")?;
                }
                if lower(table).starts_with("sqlite_") {
                    return Err(refuse(
                        "names starting with `sqlite_` are SQLite's own".into(),
                    ));
                }
            }
        }
        Ok(TableName(name.to_owned()))
    }

    /// The schema part, if any.
    pub fn schema(&self) -> Option<&str> {
        self.0.split_once('.').map(|(s, _)| s)
    }

    /// The table part, without the schema.
    pub fn table(&self) -> &str {
        self.0.rsplit('.').next().unwrap_or(&self.0)
    }

    /// The full name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One barrier row to insert (an implementation detail of [`BarrierDatabase`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub trans_type: &'a str,
    pub gid: &'a str,
    pub branch_id: &'a str,
    pub op: &'a str,
    pub barrier_id: &'a str,
    pub reason: &'a str,
}

mod sealed {
    pub trait Sealed {}
}

/// A database the barrier supports: MySQL/MariaDB, PostgreSQL or SQLite, each behind the
/// feature of the same name (`mysql`, `postgres`, `sqlite`).
///
/// Sealed: the statements are written for these three.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a barrier database here",
    note = "enable the dtm-barrier feature for it: `mysql`, `postgres` or `sqlite` (none is on by default)"
)]
pub trait BarrierDatabase: sqlx::Database + sealed::Sealed {
    /// The dialect of this database.
    const DIALECT: Dialect;

    /// Runs an insert-ignore and returns the affected rows (1 inserted, 0 existed).
    #[doc(hidden)]
    fn insert_row<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
        row: Row<'c>,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;

    /// Runs statements without parameters (DDL, XA commands) through the text protocol.
    #[doc(hidden)]
    fn execute_raw<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// Runs a query without parameters and returns its first column as text.
    #[doc(hidden)]
    fn fetch_strings<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
    ) -> BoxFuture<'c, Result<Vec<String>, sqlx::Error>>;

    /// Reads one reason.
    #[doc(hidden)]
    fn select_reason<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
        key: [&'c str; 4],
    ) -> BoxFuture<'c, Result<Option<String>, sqlx::Error>>;
}

macro_rules! barrier_database {
    ($feature:literal, $db:ty, $dialect:expr) => {
        #[cfg(feature = $feature)]
        impl sealed::Sealed for $db {}

        #[cfg(feature = $feature)]
        impl BarrierDatabase for $db {
            const DIALECT: Dialect = $dialect;

            fn insert_row<'c>(
                conn: &'c mut Self::Connection,
                sql: &'c str,
                row: Row<'c>,
            ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
                Box::pin(async move {
                    let done = sqlx::query(sql)
                        .bind(row.trans_type)
                        .bind(row.gid)
                        .bind(row.branch_id)
                        .bind(row.op)
                        .bind(row.barrier_id)
                        .bind(row.reason)
                        .execute(&mut *conn)
                        .await?;
                    Ok(done.rows_affected())
                })
            }

            fn execute_raw<'c>(
                conn: &'c mut Self::Connection,
                sql: &'c str,
            ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
                // A plain `&str` runs unprepared (text protocol), as XA commands need.
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, sql).await?;
                    Ok(())
                })
            }

            fn fetch_strings<'c>(
                conn: &'c mut Self::Connection,
                sql: &'c str,
            ) -> BoxFuture<'c, Result<Vec<String>, sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query_scalar::<_, String>(sql)
                        .fetch_all(&mut *conn)
                        .await
                })
            }

            fn select_reason<'c>(
                conn: &'c mut Self::Connection,
                sql: &'c str,
                key: [&'c str; 4],
            ) -> BoxFuture<'c, Result<Option<String>, sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query_scalar::<_, String>(sql)
                        .bind(key[0])
                        .bind(key[1])
                        .bind(key[2])
                        .bind(key[3])
                        .fetch_optional(&mut *conn)
                        .await
                })
            }
        }
    };
}

barrier_database!("mysql", sqlx::MySql, Dialect::MySql);
barrier_database!("postgres", sqlx::Postgres, Dialect::Postgres);
barrier_database!("sqlite", sqlx::Sqlite, Dialect::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_validated() {
        assert_eq!(
            TableName::new("dtm_barrier.barrier").unwrap().schema(),
            Some("dtm_barrier")
        );
        assert_eq!(
            TableName::new("dtm_barrier.barrier").unwrap().table(),
            "barrier"
        );
        assert_eq!(TableName::new("barrier2").unwrap().schema(), None);
        for bad in [
            "",
            "a.b.c",
            "a;drop table x",
            "1abc",
            "a.",
            "bar rier",
            "x'y",
            &"a".repeat(65),
            "order",
            "dtm.Select",
            "mysql.barrier",
            "pg_catalog.barrier",
            "information_schema.barrier",
            "sqlite_barrier",
        ] {
            let err = TableName::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidTable { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn postgres_counts_the_sequence_suffix_and_63_bytes() {
        let t59 = format!("s.{}", "t".repeat(59));
        let t60 = format!("s.{}", "t".repeat(60));
        assert!(TableName::for_dialect(&t59, Dialect::Postgres).is_ok());
        let err = TableName::for_dialect(&t60, Dialect::Postgres).unwrap_err();
        assert!(err.to_string().contains("_seq"), "{err}");
        // MySQL takes 64 characters.
        assert!(TableName::for_dialect(&"t".repeat(64), Dialect::MySql).is_ok());
        assert!(
            TableName::for_dialect(&format!("{}.t", "s".repeat(64)), Dialect::Postgres).is_err()
        );
        // `pg_` schemas are PostgreSQL's; MySQL does not mind them.
        assert!(TableName::for_dialect("pg_x.barrier", Dialect::MySql).is_ok());
        assert!(TableName::for_dialect("pg_x.barrier", Dialect::Postgres).is_err());
    }

    #[test]
    fn statements_per_dialect() {
        let t = TableName::new(DEFAULT_TABLE).unwrap();
        assert_eq!(
            Dialect::MySql.insert_sql(&t),
            "insert ignore into dtm_barrier.barrier(trans_type, gid, branch_id, op, barrier_id, reason) values(?,?,?,?,?,?)"
        );
        assert!(Dialect::Postgres.insert_sql(&t).ends_with(
            "values($1,$2,$3,$4,$5,$6) on conflict (gid, branch_id, op, barrier_id) do nothing"
        ));
        let pg = Dialect::Postgres.create_table_sql(&t, "");
        assert_eq!(pg.len(), 3);
        assert!(pg[2].contains("constraint uniq_barrier unique"));
        // Every PostgreSQL barrier table gets the name the Go client's insert refers to.
        let custom = TableName::new("other.barrier").unwrap();
        assert!(Dialect::Postgres.create_table_sql(&custom, "")[2]
            .contains("constraint uniq_barrier unique"));
        let my = Dialect::MySql.create_table_sql(&t, "utf8mb4_nopad_bin");
        assert!(
            my[1].contains("gid varchar(128) collate utf8mb4_nopad_bin default ''"),
            "{}",
            my[1]
        );
        assert!(my[1].contains("reason varchar(45) default ''"), "{}", my[1]);
        assert!(Dialect::Sqlite
            .insert_sql(&t)
            .starts_with("insert or ignore into "));
        assert!(Dialect::Postgres
            .select_reason_sql(&t)
            .ends_with("barrier_id=$4"));
        assert_eq!(Dialect::Sqlite.default_table(), "dtm_barrier");
    }
}
