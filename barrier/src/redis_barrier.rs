//! The barrier on Redis: an amount change (stock, balance) applied exactly once per branch
//! operation in one atomic Lua script, with the keys and values of DTM's own client
//! ([`barrier_redis.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmcli/barrier_redis.go)),
//! so that Go and Rust resource managers can share one Redis.
//!
//! For each call the script reads the amount key, then the barrier keys
//! `<gid>-<branch_id>-<op>-<barrier_id>` of the operation and of its origin (`cancel` → `try`,
//! `compensate` → `action`):
//! 1. the amount key is missing, or the change would make it negative → FAILURE;
//! 2. the operation's barrier key exists → a duplicate (or a try arriving after its cancel):
//!    nothing happens, the call succeeds (a message's local step: `Duplicated`);
//! 3. the operation's key is set (`op`, with the expiry);
//! 4. a compensation whose origin never ran sets the origin's key (`rollback`) and changes
//!    nothing (null compensation; a late try then finds its key taken);
//! 5. otherwise the amount changes by `INCRBY`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dtmcli::{BranchInfo, Op, TwoPhaseMsg, QUERY_PREPARED_BRANCH_ID};
use redis::aio::ConnectionManager;

use crate::Error;

/// The script of DTM's `RedisCheckAdjustAmount`: KEYS = amount key, operation key, origin key;
/// ARGV = amount, origin op (or empty), expiry in seconds.
const CHECK_ADJUST_AMOUNT: &str = r"
local v = redis.call('GET', KEYS[1])
local e1 = redis.call('GET', KEYS[2])
if v == false or v + ARGV[1] < 0 then
  return 'FAILURE'
end
if e1 ~= false then
  return 'DUPLICATE'
end
redis.call('SET', KEYS[2], 'op', 'EX', ARGV[3])
if ARGV[2] ~= '' then
  local e2 = redis.call('GET', KEYS[3])
  if e2 == false then
    redis.call('SET', KEYS[3], 'rollback', 'EX', ARGV[3])
    return
  end
end
redis.call('INCRBY', KEYS[1], ARGV[1])
";

/// The script of DTM's `RedisQueryPrepared`: KEYS = the message's barrier key; ARGV = expiry.
const QUERY_PREPARED: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], 'rollback', 'EX', ARGV[1])
  v = 'rollback'
end
if v == 'rollback' then
  return 'FAILURE'
end
";

/// How long barrier keys live by default: one week. They must outlive every retry of the
/// transaction they guard.
pub const DEFAULT_REDIS_EXPIRE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The barrier key of one operation: `<gid>-<branch_id>-<op>-<barrier_id>`, as DTM's client
/// names it.
///
/// ```
/// assert_eq!(dtm_barrier::redis_barrier_key("g1", "01", "compensate", "01"), "g1-01-compensate-01");
/// ```
pub fn redis_barrier_key(gid: &str, branch_id: &str, op: &str, barrier_id: &str) -> String {
    format!("{gid}-{branch_id}-{op}-{barrier_id}")
}

/// The origin of a compensating operation in DTM's Redis barrier: `cancel` → `try`,
/// `compensate` → `action` (and, as in DTM's client, nothing for a workflow's `rollback`).
fn redis_origin(op: Op) -> Option<Op> {
    match op {
        Op::Cancel => Some(Op::Try),
        Op::Compensate => Some(Op::Action),
        _ => None,
    }
}

/// The barrier on Redis, over one shared connection (a [`ConnectionManager`], which
/// reconnects by itself). Cheap to clone.
///
/// ```no_run
/// # async fn demo(info: dtmcli::BranchInfo) -> Result<(), dtm_barrier::Error> {
/// let client = redis::Client::open("redis://127.0.0.1:6379/")?;
/// let barrier = dtm_barrier::RedisBarrier::new(client.get_connection_manager().await?);
/// // In a branch handler: take 1 from the stock of item 42, once, whatever DTM retries.
/// barrier.branch(info).adjust_amount("stock-42", -1).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBarrier {
    conn: ConnectionManager,
    expire: u64,
    hash_tags: bool,
}

impl std::fmt::Debug for RedisBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBarrier")
            .field("expire_seconds", &self.expire)
            .field("hash_tags", &self.hash_tags)
            .finish_non_exhaustive()
    }
}

impl RedisBarrier {
    /// The barrier over `conn`, with keys that expire after [`DEFAULT_REDIS_EXPIRE`].
    pub fn new(conn: ConnectionManager) -> Self {
        RedisBarrier {
            conn,
            expire: DEFAULT_REDIS_EXPIRE.as_secs(),
            hash_tags: false,
        }
    }

    /// For Redis Cluster: prefixes the barrier keys of an amount change with the amount key as
    /// a hash tag, `{<key>}:<gid>-<branch_id>-<op>-<barrier_id>`, so that the script's keys
    /// live in the amount key's slot (an amount key holding `{...}` itself must not be used).
    /// Off by default: it changes the key names, which then differ from DTM's own client, so
    /// Go resource managers no longer share the barrier. The message query's single key is
    /// never tagged.
    #[must_use]
    pub fn cluster_hash_tags(mut self, on: bool) -> Self {
        self.hash_tags = on;
        self
    }

    /// How long barrier keys live (whole seconds, at least one).
    #[must_use]
    pub fn expire(mut self, expire: Duration) -> Self {
        self.expire = dtmcli::whole_seconds(expire).max(1);
        self
    }

    /// The barrier of one branch call: its amount changes get barrier ids `01`, `02`, ... in
    /// call order.
    pub fn branch(&self, info: BranchInfo) -> RedisBranch {
        RedisBranch {
            barrier: self.clone(),
            info,
            calls: AtomicU32::new(0),
        }
    }

    /// Answers DTM's query of a prepared message whose local step ran on this Redis: success
    /// if the step committed; FAILURE if not, after which the step can no longer run (its
    /// key is taken), so the message is dropped safely.
    pub async fn query_prepared(&self, gid: &str) -> Result<(), Error> {
        let key = redis_barrier_key(gid, QUERY_PREPARED_BRANCH_ID, Op::Msg.as_str(), "01");
        let answer: Option<String> = redis::Script::new(QUERY_PREPARED)
            .key(&key)
            .arg(self.expire)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match answer.as_deref() {
            Some("FAILURE") => Err(Error::failure(format!(
                "the local step of message {gid} did not run"
            ))),
            _ => Ok(()),
        }
    }

    /// DoAndSubmit for a two-phase message whose local step changes `key` by `amount` on this
    /// Redis: prepares the message, applies the change through the barrier (`trans_type=msg`,
    /// branch `00`, op `msg`), then submits, or drops the message when the change answered
    /// FAILURE (the key is missing or would go negative) or DTM's query ran first
    /// ([`dtmcli::do_and_submit`] has the rules). Answer the query with
    /// [`RedisBarrier::query_prepared`].
    pub async fn do_and_submit<M: TwoPhaseMsg>(
        &self,
        msg: M,
        query_prepared: impl Into<String>,
        key: &str,
        amount: i64,
    ) -> Result<(), Error> {
        let branch = self.branch(crate::msg::msg_branch_info(msg.msg_gid()));
        let local = async move {
            branch
                .adjust_amount(key, amount)
                .await
                .map_err(dtmcli::Error::from)
        };
        Ok(dtmcli::do_and_submit(msg, query_prepared.into(), local).await?)
    }
}

/// The Redis barrier of one branch call, from [`RedisBarrier::branch`].
#[derive(Debug)]
pub struct RedisBranch {
    barrier: RedisBarrier,
    info: BranchInfo,
    calls: AtomicU32,
}

impl RedisBranch {
    /// The branch info of the call.
    pub fn info(&self) -> &BranchInfo {
        &self.info
    }

    /// Changes `key` by `amount` once for this operation, atomically: `Ok` when applied, when
    /// a duplicate, and for a null compensation or a try arriving after its cancel (nothing
    /// changes); FAILURE when `key` is missing or would go negative (the branch answers 409 /
    /// `Aborted`, and DTM rolls back). For a message's local step a duplicate is
    /// [`dtmcli::Error::Duplicated`]: DTM's query ran first.
    pub async fn adjust_amount(&self, key: &str, amount: i64) -> Result<(), Error> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let barrier_id = format!("{n:02}");
        let info = &self.info;
        let tagged = |name: String| {
            if self.barrier.hash_tags {
                format!("{{{key}}}:{name}")
            } else {
                name
            }
        };
        let op_key = tagged(redis_barrier_key(
            &info.gid,
            &info.branch_id,
            info.op.as_str(),
            &barrier_id,
        ));
        let origin = redis_origin(info.op);
        let origin_key = tagged(redis_barrier_key(
            &info.gid,
            &info.branch_id,
            origin.map_or("", Op::as_str),
            &barrier_id,
        ));
        let answer: Option<String> = redis::Script::new(CHECK_ADJUST_AMOUNT)
            .key(key)
            .key(&op_key)
            .key(&origin_key)
            .arg(amount)
            .arg(origin.map_or("", Op::as_str))
            .arg(self.barrier.expire)
            .invoke_async(&mut self.barrier.conn.clone())
            .await?;
        tracing::debug!(gid = %info.gid, branch = %info.branch_id, op = %info.op, key, amount, ?answer, "redis barrier");
        match answer.as_deref() {
            Some("FAILURE") => Err(Error::failure(format!(
                "{key} is missing or cannot change by {amount}"
            ))),
            Some("DUPLICATE") if info.op == Op::Msg => Err(Error::Dtm(dtmcli::Error::Duplicated)),
            _ => Ok(()),
        }
    }
}
