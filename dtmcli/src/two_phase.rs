//! The DoAndSubmit flow of two-phase messages, shared by the HTTP and gRPC clients.

use std::future::Future;

use crate::{Error, Result};

/// A two-phase message that [`do_and_submit`] can drive: the HTTP [`Msg`](crate::Msg) and the
/// gRPC `dtmgrpc::Msg` implement it, and so does any wrapper that forwards to them.
pub trait TwoPhaseMsg: Send + Sized {
    /// The global transaction id.
    fn msg_gid(&self) -> &str;
    /// Stores the message as `prepared` with this query URL.
    fn prepare_msg(&mut self, query_prepared: String) -> impl Future<Output = Result<()>> + Send;
    /// Submits the message.
    fn submit_msg(self) -> impl Future<Output = Result<()>> + Send;
    /// Drops the prepared message.
    fn abort_msg(self) -> impl Future<Output = Result<()>> + Send;
    /// Calls the query URL as the server would (branch `00`, op `msg`); SUCCESS means the local
    /// work committed.
    fn query_local_work(&self) -> impl Future<Output = Result<()>> + Send;
}

/// Checks a message's query URL: an empty one would make the server treat the prepared message
/// as committed ([`trans_type_msg.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/dtmsvr/trans_type_msg.go)).
#[doc(hidden)]
pub fn query_url(url: String) -> Result<String> {
    if url.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "query_prepared is empty: the server would take every prepared message as committed"
                .into(),
        ));
    }
    Ok(url)
}

/// Prepares `msg`, runs the local work `busi`, then submits or drops the message according to
/// the outcome ([`trans_msg.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmcli/trans_msg.go)):
///
/// - `busi` succeeded → submit;
/// - `busi` answered [`Error::Failure`] → abort (the message is dropped);
/// - any other error of `busi` (a lost commit acknowledgement, [`Error::Duplicated`], ...) →
///   ask the query URL whether the local work committed: SUCCESS → submit, FAILURE → abort,
///   another answer → leave the message prepared for the server to query.
///
/// Returns `busi`'s error if it failed, else the error of the query or the submit, if any.
pub async fn do_and_submit<M, T, Fut>(mut msg: M, query_prepared: String, busi: Fut) -> Result<T>
where
    M: TwoPhaseMsg,
    Fut: Future<Output = Result<T>>,
{
    msg.prepare_msg(query_prepared).await?;
    let outcome = busi.await;
    finish_msg(msg, outcome).await
}

/// Submits or drops a prepared message according to the `outcome` of its local work, by the
/// rules of [`do_and_submit`]: success → submit; [`Error::Failure`] → abort; another error →
/// ask the query URL (SUCCESS → submit, FAILURE → abort, else leave the message prepared for
/// the server to query).
///
/// For callers that run the local work themselves between `prepare` and this call (the
/// barrier's `begin_msg` does). Returns the outcome's error if it failed, else the error of
/// the query or the submit, if any.
pub async fn finish_msg<M, T>(msg: M, outcome: Result<T>) -> Result<T>
where
    M: TwoPhaseMsg,
{
    let mut later: Option<Error> = None;
    if let Err(e) = &outcome {
        if !e.is_failure() {
            tracing_debug(msg.msg_gid(), e);
            later = msg.query_local_work().await.err();
        }
    }
    let dropped =
        matches!(&outcome, Err(e) if e.is_failure()) || matches!(&later, Some(e) if e.is_failure());
    if dropped {
        // The caller's error matters more than the abort's.
        let _ = msg.abort_msg().await;
    } else if later.is_none() {
        later = msg.submit_msg().await.err();
    }
    match (outcome, later) {
        (Err(e), _) | (Ok(_), Some(e)) => Err(e),
        (Ok(value), None) => Ok(value),
    }
}

fn tracing_debug(gid: &str, e: &Error) {
    tracing::debug!(gid, error = %e, "local work failed; querying");
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A message that records what the flow did; the query answers as configured. (A fake of
    /// the client side only: the flow's decisions are what is tested here; the suites in
    /// `tests/` run it against the real server.)
    #[derive(Default)]
    struct Recording {
        calls: Arc<Mutex<Vec<&'static str>>>,
        query: Option<fn() -> Result<()>>,
    }

    impl Recording {
        fn log(&self, what: &'static str) {
            self.calls.lock().unwrap().push(what);
        }
    }

    impl TwoPhaseMsg for Recording {
        fn msg_gid(&self) -> &str {
            "g"
        }
        async fn prepare_msg(&mut self, _: String) -> Result<()> {
            self.log("prepare");
            Ok(())
        }
        async fn submit_msg(self) -> Result<()> {
            self.log("submit");
            Ok(())
        }
        async fn abort_msg(self) -> Result<()> {
            self.log("abort");
            Ok(())
        }
        async fn query_local_work(&self) -> Result<()> {
            self.log("query");
            (self.query.expect("query not expected"))()
        }
    }

    async fn run(
        busi: Result<u8>,
        query: Option<fn() -> Result<()>>,
    ) -> (Result<u8>, Vec<&'static str>) {
        let msg = Recording {
            query,
            ..Recording::default()
        };
        let calls = Arc::clone(&msg.calls);
        let out = do_and_submit(msg, "q".into(), async { busi }).await;
        let calls = calls.lock().unwrap().clone();
        (out, calls)
    }

    #[tokio::test]
    async fn decisions_follow_the_protocol() {
        let (out, calls) = run(Ok(7), None).await;
        assert_eq!((out.unwrap(), calls), (7, vec!["prepare", "submit"]));

        let (out, calls) = run(Err(Error::failure("no")), None).await;
        assert!(out.unwrap_err().is_failure());
        assert_eq!(calls, ["prepare", "abort"]);

        let (out, calls) = run(Err(Error::other("lost ack")), Some(|| Ok(()))).await;
        assert_eq!(out.unwrap_err().to_string(), "lost ack");
        assert_eq!(calls, ["prepare", "query", "submit"], "committed after all");

        let (out, calls) = run(Err(Error::Duplicated), Some(|| Err(Error::failure("rb")))).await;
        assert!(matches!(out.unwrap_err(), Error::Duplicated));
        assert_eq!(calls, ["prepare", "query", "abort"]);

        let (out, calls) = run(Err(Error::other("x")), Some(|| Err(Error::ongoing("")))).await;
        assert_eq!(out.unwrap_err().to_string(), "x");
        assert_eq!(
            calls,
            ["prepare", "query"],
            "left prepared for the server to query"
        );
    }
}
