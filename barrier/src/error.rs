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

    /// A Redis command failed (the Redis barrier, feature `redis`).
    #[cfg(feature = "redis")]
    #[error("barrier Redis error: {0}")]
    Redis(#[from] redis::RedisError),
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

impl Error {
    /// A `FAILURE` with the given reason: the global transaction should roll back (a branch
    /// answers 409 / `Aborted`).
    pub fn failure(message: impl Into<String>) -> Self {
        Error::Dtm(dtmcli::Error::failure(message))
    }

    /// An `ONGOING` with the given explanation: DTM asks again later (425 /
    /// `FailedPrecondition`).
    pub fn ongoing(message: impl Into<String>) -> Self {
        Error::Dtm(dtmcli::Error::ongoing(message))
    }

    /// Whether this error means `FAILURE` (the global transaction should roll back).
    pub fn is_failure(&self) -> bool {
        matches!(self, Error::Dtm(e) if e.is_failure())
    }

    /// Whether this error means `ONGOING`.
    pub fn is_ongoing(&self) -> bool {
        matches!(self, Error::Dtm(e) if e.is_ongoing())
    }
}

/// Protocol errors answer as [`dtmcli::Error`] does (FAILURE 409, ONGOING 425, bad input
/// 400); everything else, database errors first, is a 500, which DTM retries.
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        match self {
            Error::Dtm(e) => e.into_response(),
            other => {
                tracing::warn!(error = %other, "branch handler failed; DTM will retry");
                (
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(serde_json::json!({
                        "message": dtmcli::answer::neutral(&other.to_string())
                    })),
                )
                    .into_response()
            }
        }
    }
}

/// Protocol errors map as [`dtmcli::Error`] does (FAILURE `Aborted`, ONGOING
/// `FailedPrecondition`, bad input `InvalidArgument`); everything else is `Internal`, which
/// DTM retries.
#[cfg(feature = "tonic")]
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Dtm(e) => e.into(),
            other => {
                tracing::warn!(error = %other, "branch handler failed; DTM will retry");
                tonic::Status::internal(dtmcli::answer::neutral(&other.to_string()))
            }
        }
    }
}
