//! The barrier's error type.

/// What can go wrong in the barrier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database refused or failed a statement; the local transaction was rolled back.
    #[error("barrier database error: {0}")]
    Database(#[from] sqlx::Error),

    /// The barrier table name is not an identifier (`table` or `schema.table`).
    #[error("invalid barrier table name {name:?}: {reason}")]
    InvalidTable {
        /// The refused name.
        name: String,
        /// Why it was refused.
        reason: String,
    },

    /// The barrier table is missing, cannot be created as asked, or would treat distinct
    /// values as one (a case- or accent-insensitive key); the text says how to fix it.
    #[error("barrier table {table}: {problem}")]
    UnsafeTable {
        /// The table.
        table: String,
        /// What is wrong and how to fix it.
        problem: String,
    },

    /// The local transaction is no longer available (the request it belonged to has ended).
    #[error("the barrier transaction was already committed or rolled back")]
    TransactionClosed,

    /// A DTM protocol or client error.
    #[error(transparent)]
    Dtm(#[from] dtmcli::Error),
}

/// Database errors become [`dtmcli::Error::Other`] (a branch answers 500 and DTM retries);
/// protocol errors keep their meaning.
impl From<Error> for dtmcli::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Dtm(e) => e,
            other => dtmcli::Error::other(other),
        }
    }
}
