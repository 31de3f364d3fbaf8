//! The gRPC client to a DTM server, and the channels to branches.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dtmcli::{BranchInfo, Error, Result};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use crate::branch::write_metadata;
use crate::codec::RawCodec;
use crate::error::GrpcError;
use crate::proto;
use crate::GrpcUrl;

/// The default timeout of each call (to DTM and to branches) on channels the SDK builds.
/// Generous because a `wait_result` submit processes the branches inside the call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many branch and server targets a client keeps channels for.
const MAX_CACHED_CHANNELS: usize = 64;

/// A client of one DTM server over gRPC.
///
/// Cheap to clone (an [`Arc`] inside): build one per process and share it. It holds a tonic
/// [`Channel`] to the server and a small cache of channels to branch targets (`host:port`),
/// which the SDK uses for the calls it makes itself (TCC try). Channels are created lazily,
/// on the Tokio runtime current at that moment: use the client within one runtime.
///
/// ```no_run
/// # async fn demo() -> dtmgrpc::Result<()> {
/// let dtm = dtmgrpc::DtmGrpcClient::connect("localhost:36790").await?;
/// let gid = dtm.new_gid().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DtmGrpcClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The server address as sent in `dtm-dtm` (`host:port`, or a URI for TLS).
    server: String,
    dtm: Channel,
    settings: Arc<Settings>,
    /// The same server's HTTP API, for what its gRPC API cannot answer (the stored status).
    #[cfg(feature = "http-api")]
    http_api: Option<dtmcli::DtmClient>,
}

/// How the SDK builds channels, and the channels it built, shared by the clients derived from
/// one another (a nested TCC may talk to another server).
struct Settings {
    timeout: Duration,
    /// The builder's explicit timeout, also set on each call (`grpc-timeout`), so that it holds
    /// on channels the user supplied.
    call_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl fmt::Debug for DtmGrpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtmGrpcClient")
            .field("server", &self.inner.server)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DtmGrpcClient`].
#[must_use = "a builder does nothing until you call build() or connect()"]
pub struct DtmGrpcClientBuilder {
    server: String,
    channel: Option<Channel>,
    timeout: Duration,
    timeout_set: bool,
    connect_timeout: Option<Duration>,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
    branch_channels: HashMap<String, Channel>,
    #[cfg(feature = "http-api")]
    http_api: Option<String>,
}

impl fmt::Debug for DtmGrpcClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtmGrpcClientBuilder")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("branch_targets", &self.branch_channels.keys())
            .finish_non_exhaustive()
    }
}

impl DtmGrpcClientBuilder {
    /// Uses this channel to the server instead of building one. The TLS settings and
    /// `connect_timeout` then apply to branch channels only; an explicit
    /// [`timeout`](Self::timeout) applies to every call.
    pub fn channel(mut self, channel: Channel) -> Self {
        self.channel = Some(channel);
        self
    }

    dtmcli::__timeout_setters!();

    /// Uses `channel` for calls to the branch target `host:port` (for example a channel with
    /// TLS or a load balancer); other targets get a plain channel.
    pub fn branch_channel(mut self, target: impl Into<String>, channel: Channel) -> Self {
        self.branch_channels.insert(target.into(), channel);
        self
    }

    /// The HTTP API of the same DTM server, such as `http://localhost:36789/api/dtmsvr`.
    ///
    /// DTM's gRPC API cannot say where a transaction stands; its HTTP API can. With it, the
    /// client has [`DtmGrpcClient::outcome`] and [`DtmGrpcClient::wait_final`], and a
    /// `wait_result` submit tells a rollback ([`Error::Failure`]) from a transaction DTM
    /// still retries ([`Error::Unfinished`]). Without it, `wait_result` is refused before
    /// any call, because DTM answers `Aborted` for both.
    ///
    /// ```no_run
    /// # async fn demo() -> dtmgrpc::Result<()> {
    /// let dtm = dtmgrpc::DtmGrpcClient::builder("localhost:36790")
    ///     .http_api("http://localhost:36789/api/dtmsvr")
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "http-api")]
    pub fn http_api(mut self, url: impl Into<String>) -> Self {
        self.http_api = Some(url.into());
        self
    }

    /// The TLS settings for `https://` server addresses (default: the system's roots).
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    fn into_parts(self) -> Result<(String, Option<Channel>, Arc<Settings>, HttpApi)> {
        let server = normalize_server(&self.server)?;
        #[cfg(feature = "http-api")]
        let http_api = self
            .http_api
            .map(|url| {
                dtmcli::DtmClient::builder(url)
                    .timeout(self.timeout)
                    .build()
            })
            .transpose()?;
        #[cfg(not(feature = "http-api"))]
        let http_api = ();
        let settings = Arc::new(Settings {
            timeout: self.timeout,
            call_timeout: self.timeout_set.then_some(self.timeout),
            connect_timeout: self.connect_timeout,
            #[cfg(feature = "tls")]
            tls: self.tls,
            channels: Mutex::new(self.branch_channels),
        });
        Ok((server, self.channel, settings, http_api))
    }

    /// Builds the client without connecting: the first call connects (and reconnects after
    /// failures). Must run inside a Tokio runtime, which the channel's worker is spawned on.
    pub fn build(self) -> Result<DtmGrpcClient> {
        let (server, channel, settings, http_api) = self.into_parts()?;
        let dtm = match channel {
            Some(channel) => channel,
            None => settings.lazy_channel(&server)?,
        };
        Ok(DtmGrpcClient::assemble(server, dtm, settings, http_api))
    }

    /// Builds the client and connects to the server now, so that a wrong address fails here.
    pub async fn connect(self) -> Result<DtmGrpcClient> {
        let (server, channel, settings, http_api) = self.into_parts()?;
        let dtm = match channel {
            Some(channel) => channel,
            None => {
                let endpoint = settings.endpoint(&server)?;
                endpoint.connect().await.map_err(|source| {
                    Error::Grpc(GrpcError::Connect {
                        target: server.clone(),
                        cause: Box::new(source),
                    })
                })?
            }
        };
        Ok(DtmGrpcClient::assemble(server, dtm, settings, http_api))
    }
}

/// The client of the server's HTTP API, where the feature provides one.
#[cfg(feature = "http-api")]
type HttpApi = Option<dtmcli::DtmClient>;
#[cfg(not(feature = "http-api"))]
type HttpApi = ();

/// `host:port`, `http://host:port` or `https://host:port` (with the `tls` feature), without a
/// path; returns the form sent in `dtm-dtm`: `host:port` for plain connections.
fn normalize_server(server: &str) -> Result<String> {
    let trimmed = server.trim().trim_end_matches('/');
    let invalid = |why: &str| {
        Error::InvalidArgument(format!(
            "DTM gRPC address {server:?}: {why}; expected host:port (for example localhost:36790)"
        ))
    };
    let bare = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let (scheme, authority) = match bare.strip_prefix("https://") {
        Some(rest) => ("https", rest),
        None => ("http", bare),
    };
    if authority.is_empty() {
        return Err(invalid("it is empty"));
    }
    if authority.contains("://") {
        return Err(invalid("only http:// and https:// are supported"));
    }
    if authority.contains('/') {
        return Err(invalid("it has a path"));
    }
    format!("{scheme}://{authority}")
        .parse::<http::Uri>()
        .map_err(|e| invalid(&e.to_string()))?;
    if scheme == "https" {
        if cfg!(feature = "tls") {
            return Ok(format!("https://{authority}"));
        }
        return Err(invalid("https:// needs the `tls` feature of dtmgrpc"));
    }
    Ok(authority.to_owned())
}

impl Settings {
    fn endpoint(&self, target: &str) -> Result<Endpoint> {
        let uri = if target.contains("://") {
            target.to_owned()
        } else {
            format!("http://{target}")
        };
        let mut endpoint = Endpoint::from_shared(uri).map_err(|source| {
            Error::Grpc(GrpcError::Connect {
                target: target.to_owned(),
                cause: Box::new(source),
            })
        })?;
        endpoint = endpoint.timeout(self.timeout);
        if let Some(t) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(t);
        }
        #[cfg(feature = "tls")]
        if target.starts_with("https://") {
            let tls = self
                .tls
                .clone()
                .unwrap_or_else(|| tonic::transport::ClientTlsConfig::new().with_native_roots());
            endpoint = endpoint.tls_config(tls).map_err(|source| {
                Error::Grpc(GrpcError::Connect {
                    target: target.to_owned(),
                    cause: Box::new(source),
                })
            })?;
        }
        Ok(endpoint)
    }

    fn lazy_channel(&self, target: &str) -> Result<Channel> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::InvalidArgument(format!(
                "a gRPC channel to {target} must be created inside a Tokio runtime"
            )));
        }
        Ok(self.endpoint(target)?.connect_lazy())
    }

    /// The cached channel to `target`, created on first use. Targets can come from requests
    /// (`dtm-dtm` of a nested TCC or an XA registration), so the cache is bounded: past
    /// [`MAX_CACHED_CHANNELS`] targets, new ones get a channel that is not kept.
    fn channel(&self, target: &str) -> Result<Channel> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(target) {
            return Ok(channel.clone());
        }
        let channel = self.lazy_channel(target)?;
        if channels.len() < MAX_CACHED_CHANNELS {
            channels.insert(target.to_owned(), channel.clone());
        }
        Ok(channel)
    }
}

impl DtmGrpcClient {
    fn assemble(server: String, dtm: Channel, settings: Arc<Settings>, http_api: HttpApi) -> Self {
        #[cfg(not(feature = "http-api"))]
        let () = http_api;
        DtmGrpcClient {
            inner: Arc::new(Inner {
                server,
                dtm,
                settings,
                #[cfg(feature = "http-api")]
                http_api,
            }),
        }
    }

    /// Connects to the server at `server` (`host:port`, e.g. `localhost:36790`; `http://`
    /// is accepted, `https://` needs the `tls` feature), failing if it cannot be reached.
    pub async fn connect(server: impl Into<String>) -> Result<Self> {
        Self::builder(server).connect().await
    }

    /// A client of the server at `server` that connects on first use. Must be called inside
    /// a Tokio runtime.
    pub fn connect_lazy(server: impl Into<String>) -> Result<Self> {
        Self::builder(server).build()
    }

    /// A client on a channel you built. `server` is the address the SDK tells branches
    /// (`dtm-dtm` metadata, needed by nested TCC), normally the one `channel` connects to.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use dtmgrpc::tonic::transport::Endpoint;
    ///
    /// let channel = Endpoint::from_static("http://localhost:36790")
    ///     .timeout(Duration::from_secs(10))
    ///     .connect_lazy();
    /// let dtm = dtmgrpc::DtmGrpcClient::from_channel(channel, "localhost:36790")?;
    /// # Ok(()) }
    /// ```
    pub fn from_channel(channel: Channel, server: impl Into<String>) -> Result<Self> {
        Self::builder(server).channel(channel).build()
    }

    /// A builder for a client of the server at `server`.
    pub fn builder(server: impl Into<String>) -> DtmGrpcClientBuilder {
        DtmGrpcClientBuilder {
            server: server.into(),
            channel: None,
            timeout: DEFAULT_TIMEOUT,
            timeout_set: false,
            connect_timeout: None,
            #[cfg(feature = "tls")]
            tls: None,
            branch_channels: HashMap::new(),
            #[cfg(feature = "http-api")]
            http_api: None,
        }
    }

    /// The server's address, as the SDK sends it to branches in `dtm-dtm`.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// The channel to the server.
    pub fn channel(&self) -> &Channel {
        &self.inner.dtm
    }

    /// The generated client of the server's `dtmgimp.Dtm` service on this client's channel,
    /// for calls the SDK does not wrap (such as `PrepareWorkflow`).
    pub fn raw(&self) -> proto::dtm_client::DtmClient<Channel> {
        proto::dtm_client::DtmClient::new(self.inner.dtm.clone())
    }

    /// A client of another server (the one a nested TCC's request names), sharing this one's
    /// settings and channel cache.
    pub(crate) fn for_server(&self, server: &str) -> Result<DtmGrpcClient> {
        let server = normalize_server(server)?;
        if server == self.inner.server {
            return Ok(self.clone());
        }
        let settings = Arc::clone(&self.inner.settings);
        let dtm = settings.channel(&server)?;
        // The HTTP API given belongs to this client's server, not to the other one.
        #[cfg(feature = "http-api")]
        let http_api = None;
        #[cfg(not(feature = "http-api"))]
        let http_api = ();
        Ok(Self::assemble(server, dtm, settings, http_api))
    }

    /// Runs one call of the `Dtm` service and reads its status the protocol's way.
    pub(crate) async fn call<T, F, Fut>(&self, rpc: &str, call: F) -> Result<T>
    where
        F: FnOnce(proto::dtm_client::DtmClient<InterceptedService<Channel, CallTimeout>>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        tracing::debug!(server = %self.inner.server, rpc, "dtm call");
        let client = proto::dtm_client::DtmClient::with_interceptor(
            self.inner.dtm.clone(),
            CallTimeout(self.inner.settings.call_timeout),
        );
        call(client)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                Error::from_grpc(&self.inner.server, &format!("/dtmgimp.Dtm/{rpc}"), status)
            })
    }

    /// Checks a transaction's options before anything is sent: [`TransOptions::check`], and
    /// `wait_result` only with the HTTP API to decide its answer (see
    /// [`DtmGrpcClientBuilder::http_api`]).
    ///
    /// [`TransOptions::check`]: dtmcli::TransOptions::check
    pub(crate) fn check_options(&self, options: &dtmcli::TransOptions) -> Result<()> {
        options.check()?;
        if options.wait_result && self.http_api().is_none() {
            let how = if cfg!(feature = "http-api") {
                "set DtmGrpcClientBuilder::http_api"
            } else {
                "enable dtmgrpc's `http-api` feature and set DtmGrpcClientBuilder::http_api"
            };
            return Err(Error::InvalidArgument(format!(
                "wait_result over gRPC needs DTM's HTTP API to tell a rollback from a \
                 transaction DTM still retries (its gRPC API answers Aborted for both): {how}"
            )));
        }
        Ok(())
    }

    /// The client of the same server's HTTP API, if [`DtmGrpcClientBuilder::http_api`] set one.
    #[cfg(feature = "http-api")]
    pub fn http_api(&self) -> Option<&dtmcli::DtmClient> {
        self.inner.http_api.as_ref()
    }

    #[cfg(not(feature = "http-api"))]
    fn http_api(&self) -> Option<()> {
        None
    }

    /// Where transaction `gid` stands now, read through the HTTP API
    /// ([`DtmGrpcClientBuilder::http_api`]); see [`dtmcli::DtmClient::outcome`].
    #[cfg(feature = "http-api")]
    pub async fn outcome(&self, gid: &str) -> Result<dtmcli::Outcome> {
        self.require_http_api()?.outcome(gid).await
    }

    /// Waits until transaction `gid` ends, for at most `timeout`, reading its status through
    /// the HTTP API ([`DtmGrpcClientBuilder::http_api`]); see
    /// [`dtmcli::DtmClient::wait_final`].
    #[cfg(feature = "http-api")]
    pub async fn wait_final(&self, gid: &str, timeout: Duration) -> Result<dtmcli::Outcome> {
        self.require_http_api()?.wait_final(gid, timeout).await
    }

    #[cfg(feature = "http-api")]
    fn require_http_api(&self) -> Result<&dtmcli::DtmClient> {
        self.http_api().ok_or_else(|| {
            Error::InvalidArgument(
                "DTM's gRPC API cannot say where a transaction stands: set \
                 DtmGrpcClientBuilder::http_api to its HTTP API"
                    .into(),
            )
        })
    }

    /// Checks that the server answers its gRPC API; for readiness probes and start-up
    /// checks. DTM's gRPC API has no ping, so this asks for a gid (`NewGid`), which stores
    /// nothing.
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmgrpc::DtmGrpcClient) -> dtmgrpc::Result<()> {
    /// dtm.ping().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<()> {
        self.new_gid().await.map(drop)
    }

    /// A new global transaction id from the server (`NewGid`).
    ///
    /// [`dtmcli::local_gid`] makes one without a round trip.
    pub async fn new_gid(&self) -> Result<String> {
        let reply = self
            .call("NewGid", |mut c| async move { c.new_gid(()).await })
            .await?;
        if reply.gid.is_empty() {
            return Err(Error::InvalidArgument(
                "the server returned an empty gid".into(),
            ));
        }
        Ok(reply.gid)
    }

    /// Subscribes `url` (a gRPC or HTTP branch URL) to `topic`, for messages with
    /// [`Msg::add_topic`](crate::Msg::add_topic) steps.
    ///
    /// The server sees new subscriptions only after its next topic refresh
    /// (`ConfigUpdateInterval`, 3 s by default).
    pub async fn subscribe(&self, topic: &str, url: &str, remark: &str) -> Result<()> {
        let req = topic_request(topic, url, remark);
        self.call("Subscribe", |mut c| async move { c.subscribe(req).await })
            .await
    }

    /// Removes `url` from `topic`'s subscribers.
    pub async fn unsubscribe(&self, topic: &str, url: &str) -> Result<()> {
        let req = topic_request(topic, url, "");
        self.call(
            "Unsubscribe",
            |mut c| async move { c.unsubscribe(req).await },
        )
        .await
    }

    /// Deletes `topic` and all its subscriptions.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let req = topic_request(topic, "", "");
        self.call(
            "DeleteTopic",
            |mut c| async move { c.delete_topic(req).await },
        )
        .await
    }

    /// Calls a branch the way DTM would: a unary call of `url`'s method on its target with
    /// `payload` as the (already encoded) message, and the branch info and `headers` as
    /// metadata. Anything but OK is an error ([`Error::Failure`], [`Error::Ongoing`], or a
    /// [`GrpcError`]).
    pub(crate) async fn call_branch(
        &self,
        url: &GrpcUrl,
        info: &BranchInfo,
        payload: Bytes,
        headers: &BTreeMap<String, String>,
    ) -> Result<Bytes> {
        let channel = self.inner.settings.channel(url.target())?;
        let mut request = tonic::Request::new(payload);
        if let Some(timeout) = self.inner.settings.call_timeout {
            request.set_timeout(timeout);
        }
        write_metadata(request.metadata_mut(), info, headers)?;
        let path = http::uri::PathAndQuery::try_from(url.method())
            .map_err(|e| Error::InvalidArgument(format!("gRPC method {:?}: {e}", url.method())))?;
        tracing::debug!(%url, gid = %info.gid, branch_id = %info.branch_id, op = %info.op, "branch call");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| {
            Error::Grpc(GrpcError::Call {
                target: url.target().to_owned(),
                method: url.method().to_owned(),
                status: tonic::Status::unavailable(format!("channel not ready: {e}")),
            })
        })?;
        grpc.unary(request, path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| Error::from_grpc(url.target(), url.method(), status))
    }
}

/// Sets the builder's explicit timeout on each call to DTM.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallTimeout(Option<Duration>);

impl Interceptor for CallTimeout {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(timeout) = self.0 {
            request.set_timeout(timeout);
        }
        Ok(request)
    }
}

fn topic_request(topic: &str, url: &str, remark: &str) -> proto::DtmTopicRequest {
    proto::DtmTopicRequest {
        topic: topic.to_owned(),
        url: url.to_owned(),
        remark: remark.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_normalized() {
        assert_eq!(
            normalize_server("localhost:36790").unwrap(),
            "localhost:36790"
        );
        assert_eq!(normalize_server("http://h:1/").unwrap(), "h:1");
        assert!(normalize_server("").is_err());
        assert!(normalize_server("h:1/api").is_err());
        assert!(normalize_server("grpc://h:1").is_err());
        let https = normalize_server("https://h:1");
        if cfg!(feature = "tls") {
            assert_eq!(https.unwrap(), "https://h:1");
        } else {
            assert!(https.unwrap_err().to_string().contains("`tls` feature"));
        }
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let err = DtmGrpcClient::connect_lazy("127.0.0.1:9").unwrap_err();
        assert!(err.to_string().contains("Tokio runtime"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_server_is_a_clear_error() {
        // Port 9 on loopback: nothing listens there in the test environment.
        let err = DtmGrpcClient::connect("127.0.0.1:9").await.unwrap_err();
        assert!(
            err.to_string().starts_with("cannot connect to 127.0.0.1:9"),
            "{err}"
        );

        let lazy = DtmGrpcClient::connect_lazy("127.0.0.1:9").unwrap();
        let err = lazy.new_gid().await.unwrap_err();
        assert!(!err.is_failure() && !err.is_ongoing());
        let text = err.to_string();
        assert!(
            text.contains("/dtmgimp.Dtm/NewGid to 127.0.0.1:9"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn channels_are_cached_per_target() {
        let dtm = DtmGrpcClient::connect_lazy("127.0.0.1:9").unwrap();
        let other = dtm.for_server("http://127.0.0.1:9").unwrap();
        assert!(Arc::ptr_eq(&dtm.inner, &other.inner));
        let other = dtm.for_server("127.0.0.1:10").unwrap();
        assert_eq!(other.server(), "127.0.0.1:10");
        let again = dtm.for_server("127.0.0.1:10").unwrap();
        assert_eq!(
            dtm.inner.settings.channels.lock().unwrap().len(),
            1,
            "one cached channel for 127.0.0.1:10"
        );
        drop(again);
    }
}
