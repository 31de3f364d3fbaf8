//! The branch side: transaction info from `dtm-*` metadata, and the metadata the SDK sends.

use std::collections::BTreeMap;

use dtmcli::{BranchInfo, Error, Result};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

/// The metadata keys that carry the transaction info of a branch call
/// ([`dtmgimp/types.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmgrpc/dtmgimp/types.go)).
pub mod keys {
    /// The prefix of every key: `dtm-`.
    pub const PREFIX: &str = dtmcli::BRANCH_INFO_PREFIX;
    /// The global transaction id.
    pub const GID: &str = "dtm-gid";
    /// The transaction type.
    pub const TRANS_TYPE: &str = "dtm-trans_type";
    /// The branch id.
    pub const BRANCH_ID: &str = "dtm-branch_id";
    /// The operation.
    pub const OP: &str = "dtm-op";
    /// The DTM server's gRPC address; sent by clients (TCC try), empty from the server.
    pub const DTM: &str = "dtm-dtm";
    /// The XA phase-2 URL, sent by XA clients.
    pub const PHASE2_URL: &str = "dtm-phase2_url";
}

/// Reads the branch info of a call from its `dtm-*` metadata.
///
/// An absent or empty `dtm-gid`, `dtm-trans_type`, `dtm-branch_id` or `dtm-op` gives
/// [`Error::MissingField`] naming it; an unknown type or op [`Error::InvalidArgument`].
/// `dtm-dtm` and `dtm-phase2_url` are optional (the server sends `dtm-dtm` empty).
pub fn branch_info_from_metadata(metadata: &MetadataMap) -> Result<BranchInfo> {
    BranchInfo::from_prefixed(|key| metadata.get(key).map(|v| v.as_bytes()))
}

/// Reads the branch info of a request to a tonic service; the status to answer if it lacks
/// some: `InvalidArgument`, naming the missing metadata key.
///
/// ```
/// use dtmgrpc::{branch_info, tonic, DtmResult, Op};
///
/// // In a tonic service method:
/// async fn trans_in(request: tonic::Request<()>) -> Result<tonic::Response<()>, tonic::Status> {
///     let info = branch_info(&request)?;
///     if info.op == Op::Action && info.gid.is_empty() {
///         return Err(dtmgrpc::Error::failure("nothing to do").into()); // Aborted: roll back
///     }
///     DtmResult::Success.into_grpc()?;
///     Ok(tonic::Response::new(()))
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let status = trans_in(tonic::Request::new(())).await.unwrap_err();
/// assert_eq!(status.code(), tonic::Code::InvalidArgument);
/// assert!(status.message().contains("dtm-gid"));
/// # }
/// ```
pub fn branch_info<T>(request: &tonic::Request<T>) -> Result<BranchInfo, tonic::Status> {
    branch_info_from_metadata(request.metadata()).map_err(tonic::Status::from)
}

/// Writes the branch info and the transaction's branch headers into outgoing metadata, as
/// the reference client does for the calls it makes itself.
pub(crate) fn write_metadata(
    metadata: &mut MetadataMap,
    info: &BranchInfo,
    headers: &BTreeMap<String, String>,
) -> Result<()> {
    let mut put = |key: &str, value: &str| -> Result<()> {
        let key = AsciiMetadataKey::from_bytes(key.as_bytes())
            .map_err(|e| Error::InvalidArgument(format!("metadata key {key:?}: {e}")))?;
        let value = AsciiMetadataValue::try_from(value)
            .map_err(|e| Error::InvalidArgument(format!("metadata {key}: invalid value ({e})")))?;
        metadata.insert(key, value);
        Ok(())
    };
    for (key, value) in headers {
        put(key, value)?;
    }
    put(keys::GID, &info.gid)?;
    put(keys::TRANS_TYPE, info.trans_type.as_str())?;
    put(keys::BRANCH_ID, &info.branch_id)?;
    put(keys::OP, info.op.as_str())?;
    put(keys::DTM, info.dtm.as_deref().unwrap_or_default())?;
    if let Some(url) = &info.phase2_url {
        put(keys::PHASE2_URL, url)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtmcli::{Op, TransType};

    fn info() -> BranchInfo {
        BranchInfo {
            gid: "g1".into(),
            trans_type: TransType::Tcc,
            branch_id: "02".into(),
            op: Op::Try,
            dtm: Some("localhost:36790".into()),
            phase2_url: None,
        }
    }

    #[test]
    fn metadata_round_trips_with_headers() {
        let mut md = MetadataMap::new();
        let headers = BTreeMap::from([("Test_Header".to_owned(), "yes".to_owned())]);
        write_metadata(&mut md, &info(), &headers).unwrap();
        assert_eq!(md.get("dtm-op").unwrap(), "try");
        assert_eq!(md.get("dtm-dtm").unwrap(), "localhost:36790");
        // gRPC metadata keys are lower case.
        assert_eq!(md.get("test_header").unwrap(), "yes");
        assert_eq!(branch_info_from_metadata(&md).unwrap(), info());
    }

    #[test]
    fn server_calls_have_an_empty_dtm() {
        let mut md = MetadataMap::new();
        let server_view = BranchInfo {
            dtm: None,
            op: Op::Confirm,
            ..info()
        };
        write_metadata(&mut md, &server_view, &BTreeMap::new()).unwrap();
        assert_eq!(md.get("dtm-dtm").unwrap(), "");
        assert_eq!(branch_info_from_metadata(&md).unwrap(), server_view);
    }

    #[test]
    fn missing_fields_become_invalid_argument_naming_the_key() {
        let mut md = MetadataMap::new();
        md.insert("dtm-gid", "g".parse().unwrap());
        md.insert("dtm-trans_type", "saga".parse().unwrap());
        md.insert("dtm-op", "action".parse().unwrap());
        let mut req = tonic::Request::new(());
        *req.metadata_mut() = md;
        let status = branch_info(&req).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("`dtm-branch_id`"), "{status:?}");

        req.metadata_mut()
            .insert("dtm-branch_id", "01".parse().unwrap());
        req.metadata_mut().insert("dtm-op", "jump".parse().unwrap());
        let status = branch_info(&req).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("`dtm-op`"), "{status:?}");
    }

    #[test]
    fn bad_header_names_are_reported() {
        let mut md = MetadataMap::new();
        let headers = BTreeMap::from([("bad header".to_owned(), "v".to_owned())]);
        let err = write_metadata(&mut md, &info(), &headers).unwrap_err();
        assert!(err.to_string().contains("bad header"), "{err}");
        // A bad value is named by its key, never repeated: it may be a credential.
        let headers = BTreeMap::from([("authorization".to_owned(), "Bearer SECRET\n".to_owned())]);
        let err = write_metadata(&mut md, &info(), &headers).unwrap_err();
        assert!(err.to_string().contains("authorization"), "{err}");
        assert!(!format!("{err} {err:?}").contains("SECRET"), "{err:?}");
    }
}
