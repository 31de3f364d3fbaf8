//! The flow of a global transaction whose branches the client registers (TCC, XA), shared by
//! the HTTP and gRPC clients.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use futures_util::FutureExt;

use crate::{BranchIdGen, BranchInfo, Error, Result};

/// The server calls of a TCC or XA global transaction, over some transport, for
/// [`run_global`].
pub(crate) trait GlobalCalls: Sync {
    /// The global transaction id.
    fn gid(&self) -> &str;
    /// Stores the transaction as `prepared`.
    fn prepare(&self) -> impl Future<Output = Result<()>> + Send;
    /// Submits it: the server runs every branch's phase 2 forward.
    fn submit(&self) -> impl Future<Output = Result<()>> + Send;
    /// Aborts it with a reason: the server runs every branch's phase 2 backward.
    fn abort(&self, reason: String) -> impl Future<Output = Result<()>> + Send;
}

/// What the handle of an open TCC or XA transaction holds, for either client `C`: the client,
/// the transaction and its next branch ids.
pub(crate) struct OpenTrans<C> {
    pub(crate) client: C,
    pub(crate) gid: String,
    pub(crate) branch_headers: BTreeMap<String, String>,
    ids: Mutex<BranchIdGen>,
}

impl<C: fmt::Debug> fmt::Debug for OpenTrans<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenTrans")
            .field("client", &self.client)
            .field("gid", &self.gid)
            .field(
                "branch_headers",
                &crate::RedactedHeaders(&self.branch_headers),
            )
            .finish_non_exhaustive()
    }
}

impl<C> OpenTrans<C> {
    /// A transaction whose branches get ids from `ids`.
    pub(crate) fn new(
        client: C,
        gid: String,
        branch_headers: BTreeMap<String, String>,
        ids: BranchIdGen,
    ) -> Self {
        OpenTrans {
            client,
            gid,
            branch_headers,
            ids: Mutex::new(ids),
        }
    }

    /// The next branch id (`01`, `02`, ... below the prefix).
    pub(crate) fn next_branch_id(&self) -> Result<String> {
        self.ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .next_id()
    }
}

/// Registers the local XA branch of an incoming action call at the server the call names
/// (`info.dtm`), with `info.phase2_url` as the URL of its commit and rollback.
///
/// The HTTP [`DtmClient`](crate::DtmClient) and the gRPC `DtmGrpcClient` implement it; the
/// barrier's `xa_local` takes either.
pub trait XaRegistrar: Sync {
    /// Registers the branch; a transaction that is no longer `prepared` is refused with
    /// [`Error::Failure`].
    fn register_xa_branch(&self, info: &BranchInfo) -> impl Future<Output = Result<()>> + Send;
}

/// Prepares the transaction, runs the branches (`body()`), then submits it.
///
/// If the body returns an error, the transaction is aborted with the error's text as rollback
/// reason and that error is returned; if it panics, it is aborted with `panic: <message>` and
/// the panic resumes. The abort's own outcome is only logged: the caller's error matters more.
/// Errors of the calls themselves convert into `E` through `From<Error>`.
pub(crate) async fn run_global<C, B, Fut, T, E>(calls: &C, body: B) -> std::result::Result<T, E>
where
    C: GlobalCalls,
    B: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    E: From<Error> + fmt::Display,
{
    calls.prepare().await?;
    let outcome = AssertUnwindSafe(async move { body().await })
        .catch_unwind()
        .await;
    match outcome {
        Ok(Ok(value)) => {
            calls.submit().await?;
            Ok(value)
        }
        Ok(Err(e)) => {
            abort(calls, e.to_string()).await;
            Err(e)
        }
        Err(panic) => {
            abort(calls, format!("panic: {}", panic_message(&*panic))).await;
            std::panic::resume_unwind(panic)
        }
    }
}

async fn abort<C: GlobalCalls>(calls: &C, reason: String) {
    if let Err(e) = calls.abort(reason).await {
        tracing::warn!(gid = calls.gid(), error = %e, "abort of the global transaction failed");
    }
}

/// The text of a panic payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records the server calls (a fake of the calls only: the suites in `tests/` run the flow
    /// against the real server).
    #[derive(Default)]
    struct Recording(Mutex<Vec<String>>);

    impl GlobalCalls for Recording {
        fn gid(&self) -> &str {
            "g"
        }
        async fn prepare(&self) -> Result<()> {
            self.0.lock().unwrap().push("prepare".into());
            Ok(())
        }
        async fn submit(&self) -> Result<()> {
            self.0.lock().unwrap().push("submit".into());
            Ok(())
        }
        async fn abort(&self, reason: String) -> Result<()> {
            self.0.lock().unwrap().push(format!("abort: {reason}"));
            Ok(())
        }
    }

    #[tokio::test]
    async fn submit_abort_and_panic() {
        let calls = Recording::default();
        assert_eq!(
            run_global(&calls, || async { Ok::<_, Error>(5) })
                .await
                .unwrap(),
            5
        );
        let err = run_global(&calls, || async { Err::<(), _>(Error::failure("no")) }).await;
        assert!(err.unwrap_err().is_failure());
        let panicked = AssertUnwindSafe(run_global(&calls, || async {
            panic!("boom");
            #[allow(unreachable_code)]
            Ok::<(), Error>(())
        }))
        .catch_unwind()
        .await;
        assert!(panicked.is_err(), "the panic resumes");
        assert_eq!(
            calls.0.into_inner().unwrap(),
            [
                "prepare",
                "submit",
                "prepare",
                "abort: FAILURE: no",
                "prepare",
                "abort: panic: boom"
            ]
        );
    }
}
