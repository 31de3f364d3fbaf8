//! The protocol vocabulary: transaction types, operations, statuses and results.
//!
//! These are the strings DTM puts on the wire. Every other crate of the SDK (the gRPC client,
//! the barrier) uses these types instead of defining its own.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Declares a string-valued protocol enum with `as_str`, `Display`, `FromStr` and serde.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[serde(rename = $text)]
                $variant,
            )+
        }

        impl $name {
            /// Every value, in protocol order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string DTM uses on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Error::InvalidArgument(format!(
                        concat!("unknown ", $what, " {:?}"),
                        other
                    ))),
                }
            }
        }
    };
}

wire_enum! {
    /// The kind of a global transaction (`trans_type` on the wire).
    TransType, "transaction type" {
        /// A saga: forward actions with compensations.
        Saga => "saga",
        /// A two-phase message.
        Msg => "msg",
        /// Try-Confirm-Cancel.
        Tcc => "tcc",
        /// XA two-phase commit.
        Xa => "xa",
        /// A workflow.
        Workflow => "workflow",
    }
}

wire_enum! {
    /// The operation a branch call performs (`op` on the wire).
    Op, "operation" {
        /// TCC phase 1.
        Try => "try",
        /// TCC phase 2, forward.
        Confirm => "confirm",
        /// TCC phase 2, backward.
        Cancel => "cancel",
        /// Saga / msg forward action; XA phase 1.
        Action => "action",
        /// Saga compensation.
        Compensate => "compensate",
        /// XA / workflow phase 2, forward.
        Commit => "commit",
        /// XA / workflow phase 2, backward.
        Rollback => "rollback",
        /// The query of a prepared two-phase message (branch `00`).
        Msg => "msg",
        /// The local business part of a workflow XA branch.
        Business => "business",
    }
}

impl Op {
    /// The forward operation a compensating operation undoes (`cancel` → `try`,
    /// `compensate` → `action`, `rollback` → `action`), as the barrier needs it.
    pub const fn origin(self) -> Option<Op> {
        match self {
            Op::Cancel => Some(Op::Try),
            Op::Compensate | Op::Rollback => Some(Op::Action),
            _ => None,
        }
    }

    /// Whether this operation undoes another one (`cancel`, `compensate`, `rollback`).
    pub const fn is_compensation(self) -> bool {
        self.origin().is_some()
    }
}

wire_enum! {
    /// The status of a global transaction.
    GlobalStatus, "global status" {
        /// Prepared: a TCC/XA/msg/workflow transaction that is not yet submitted.
        Prepared => "prepared",
        /// Submitted: the server is driving the branches forward.
        Submitted => "submitted",
        /// Aborting: the server is compensating / cancelling / rolling back.
        Aborting => "aborting",
        /// Finished successfully.
        Succeed => "succeed",
        /// Finished as failed (rolled back).
        Failed => "failed",
    }
}

impl GlobalStatus {
    /// Whether the transaction has ended (`succeed` or `failed`).
    pub const fn is_final(self) -> bool {
        matches!(self, GlobalStatus::Succeed | GlobalStatus::Failed)
    }
}

wire_enum! {
    /// The status of one branch operation.
    BranchStatus, "branch status" {
        /// Not done yet.
        Prepared => "prepared",
        /// Done.
        Succeed => "succeed",
        /// Failed (only saga actions end like this).
        Failed => "failed",
    }
}

wire_enum! {
    /// The result a branch reports and the server returns (`dtm_result` on the wire).
    DtmResult, "result" {
        /// The operation succeeded.
        Success => "SUCCESS",
        /// The operation failed for good: roll the global transaction back.
        Failure => "FAILURE",
        /// Not finished yet: ask again later without backing off.
        Ongoing => "ONGOING",
    }
}

wire_enum! {
    /// How the server reaches the branches of a transaction (`protocol` on the wire).
    Protocol, "protocol" {
        /// Plain HTTP.
        Http => "http",
        /// gRPC.
        Grpc => "grpc",
        /// JSON-RPC 2.0 over HTTP.
        JsonRpc => "json-rpc",
    }
}

/// The branch id DTM uses for the query of a prepared message and the workflow resume call.
pub const QUERY_PREPARED_BRANCH_ID: &str = "00";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_wire_string() {
        for t in TransType::ALL {
            assert_eq!(t.as_str().parse::<TransType>().unwrap(), *t);
            assert_eq!(serde_json::to_string(t).unwrap(), format!("\"{t}\""));
        }
        for op in Op::ALL {
            assert_eq!(op.as_str().parse::<Op>().unwrap(), *op);
        }
        for s in GlobalStatus::ALL {
            let json = format!("\"{s}\"");
            assert_eq!(serde_json::from_str::<GlobalStatus>(&json).unwrap(), *s);
        }
        assert_eq!(DtmResult::Failure.as_str(), "FAILURE");
        assert_eq!(Protocol::JsonRpc.to_string(), "json-rpc");
    }

    #[test]
    fn unknown_strings_are_rejected_with_their_kind() {
        let err = "bogus".parse::<Op>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument: unknown operation \"bogus\""
        );
    }

    #[test]
    fn origin_ops_follow_the_barrier_rules() {
        assert_eq!(Op::Cancel.origin(), Some(Op::Try));
        assert_eq!(Op::Compensate.origin(), Some(Op::Action));
        assert_eq!(Op::Rollback.origin(), Some(Op::Action));
        assert_eq!(Op::Try.origin(), None);
        assert!(!Op::Msg.is_compensation());
        assert!(GlobalStatus::Failed.is_final());
        assert!(!GlobalStatus::Aborting.is_final());
    }
}
