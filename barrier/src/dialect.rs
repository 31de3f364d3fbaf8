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

    /// The statements creating the schema (where the dialect has one) and the table, the
    /// same table the Go client uses so that Go and Rust services can share it.
    pub fn create_table_sql(self, table: &TableName) -> Vec<String> {
        let mut stmts = Vec::new();
        let columns = "trans_type varchar(45) default '', gid varchar(128) default '', \
                       branch_id varchar(128) default '', op varchar(45) default '', \
                       barrier_id varchar(45) default '', reason varchar(45) default ''";
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
                // The Go table's constraint name for the default table; constraint names are
                // unique per schema, so other tables get their own.
                let constraint = if table.as_str() == DEFAULT_TABLE {
                    "uniq_barrier".to_owned()
                } else {
                    format!("{}_uniq", table.as_str().replace('.', "_"))
                };
                stmts.push(format!("create sequence if not exists {table}_seq"));
                stmts.push(format!(
                    "create table if not exists {table} (id bigint not null default nextval('{table}_seq'), \
                     {columns}, create_time timestamp(0) with time zone default now(), \
                     update_time timestamp(0) with time zone default now(), primary key(id), \
                     constraint {constraint} unique(gid, branch_id, op, barrier_id))"
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
}

/// A validated barrier table name: `table` or `schema.table`, each part an identifier of
/// ASCII letters, digits and `_` (not starting with a digit), at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName(String);

impl TableName {
    /// Validates a table name.
    pub fn new(name: &str) -> Result<Self, Error> {
        let refuse = |reason| Error::InvalidTable {
            name: name.to_owned(),
            reason,
        };
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 {
            return Err(refuse("use `table` or `schema.table`"));
        }
        for part in &parts {
            if part.is_empty() {
                return Err(refuse("empty identifier"));
            }
            if part.len() > 64 {
                return Err(refuse("identifier longer than 64 characters"));
            }
            if part.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(refuse("identifier starts with a digit"));
            }
            if !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(refuse("only ASCII letters, digits and `_` are allowed"));
            }
        }
        Ok(TableName(name.to_owned()))
    }

    /// The schema part, if any.
    pub fn schema(&self) -> Option<&str> {
        self.0.split_once('.').map(|(s, _)| s)
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

/// A database the barrier supports: MySQL/MariaDB, PostgreSQL or SQLite (by feature).
///
/// Sealed: the statements are written for these three.
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
        ] {
            let err = TableName::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidTable { .. }), "{bad}: {err}");
        }
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
        assert!(
            Dialect::Postgres.create_table_sql(&t)[2].contains("constraint uniq_barrier unique")
        );
        let custom = TableName::new("dtm_barrier.other").unwrap();
        assert!(Dialect::Postgres.create_table_sql(&custom)[2]
            .contains("constraint dtm_barrier_other_uniq unique"));
        assert!(Dialect::Sqlite
            .insert_sql(&t)
            .starts_with("insert or ignore into "));
        assert!(Dialect::Postgres
            .select_reason_sql(&t)
            .ends_with("barrier_id=$4"));
        assert_eq!(Dialect::Postgres.create_table_sql(&t).len(), 3);
        assert_eq!(Dialect::Sqlite.default_table(), "dtm_barrier");
    }
}
