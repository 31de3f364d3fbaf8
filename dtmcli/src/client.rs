//! The HTTP client to a DTM server.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::answer;
use crate::trans::TransBody;
use crate::{BranchInfo, Error, Result};

/// The default total timeout of a call to the server when [`DtmClient::new`] builds the HTTP
/// client. Generous because a `wait_result` submit processes the branches inside the call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one DTM server over HTTP.
///
/// Cheap to clone (an [`Arc`] inside): build one per process and share it. It holds the
/// server's API base URL, such as `http://localhost:36789/api/dtmsvr`, and a
/// [`reqwest::Client`], which is also used for the calls the SDK makes to branches itself
/// (TCC try, message query). Inject your own client with [`DtmClient::builder`] to set TLS,
/// proxies or timeouts.
///
/// The SDK builds reqwest without a TLS backend: for `https://` servers or branches, enable
/// one in your own `Cargo.toml` (`reqwest = { version = "0.13", features = ["rustls"] }`;
/// Cargo's feature unification makes the SDK's client use it).
///
/// ```no_run
/// # async fn demo() -> dtmcli::Result<()> {
/// let dtm = dtmcli::DtmClient::new("http://localhost:36789/api/dtmsvr")?;
/// let gid = dtm.new_gid().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DtmClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The base URL without a trailing slash.
    server: String,
    http: reqwest::Client,
    /// The builder's explicit timeout, applied to each request of a client the user supplied.
    request_timeout: Option<Duration>,
}

impl fmt::Debug for DtmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtmClient")
            .field("server", &self.inner.server)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DtmClient`].
#[derive(Debug)]
#[must_use = "a builder does nothing until you call build()"]
pub struct DtmClientBuilder {
    server: String,
    http: Option<reqwest::Client>,
    timeout: Duration,
    timeout_set: bool,
    connect_timeout: Option<Duration>,
}

impl DtmClientBuilder {
    /// Uses this HTTP client instead of building one. It keeps its own timeouts, unless
    /// [`timeout`](Self::timeout) is set here, which then applies to each request.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    crate::__timeout_setters!();

    /// Checks the server URL and builds the client.
    pub fn build(self) -> Result<DtmClient> {
        let server = self.server.trim_end_matches('/').to_owned();
        let parsed = Url::parse(&server)
            .map_err(|e| Error::InvalidArgument(format!("DTM server URL {server:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::InvalidArgument(format!(
                "DTM server URL {server:?} must start with http:// or https://"
            )));
        }
        let request_timeout = (self.http.is_some() && self.timeout_set).then_some(self.timeout);
        let http = match self.http {
            Some(http) => http,
            None => {
                let mut b = reqwest::Client::builder().timeout(self.timeout);
                if let Some(t) = self.connect_timeout {
                    b = b.connect_timeout(t);
                }
                b.build().map_err(|cause| Error::Request {
                    url: server.clone(),
                    cause,
                })?
            }
        };
        Ok(DtmClient {
            inner: Arc::new(Inner {
                server,
                http,
                request_timeout,
            }),
        })
    }
}

/// A branch's answer to a call the SDK made itself (a TCC try, for example).
#[derive(Debug, Clone)]
pub struct BranchResponse {
    status: u16,
    body: Vec<u8>,
}

impl BranchResponse {
    /// The HTTP status code (200: the SDK turns other answers into errors).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|cause| Error::Decode {
            url: "branch response".to_owned(),
            cause,
        })
    }
}

#[derive(Deserialize)]
struct GidReply {
    gid: String,
}

impl DtmClient {
    /// A client of the server at `server` (the API base, e.g.
    /// `http://localhost:36789/api/dtmsvr`) with a default HTTP client.
    pub fn new(server: impl Into<String>) -> Result<Self> {
        Self::builder(server).build()
    }

    /// A builder for a client of the server at `server`.
    pub fn builder(server: impl Into<String>) -> DtmClientBuilder {
        DtmClientBuilder {
            server: server.into(),
            http: None,
            timeout: DEFAULT_TIMEOUT,
            timeout_set: false,
            connect_timeout: None,
        }
    }

    /// The server's API base URL, without a trailing slash.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// The HTTP client in use.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The same HTTP client pointed at another server (a nested TCC talks to the server named
    /// in the incoming request).
    pub(crate) fn with_server(&self, server: &str) -> Result<DtmClient> {
        let builder = Self::builder(server).http_client(self.inner.http.clone());
        match self.inner.request_timeout {
            Some(timeout) => builder.timeout(timeout),
            None => builder,
        }
        .build()
    }

    /// A request on this client's HTTP client, with the builder's timeout when the HTTP client
    /// was supplied by the user.
    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.inner.http.request(method, url);
        match self.inner.request_timeout {
            Some(timeout) => req.timeout(timeout),
            None => req,
        }
    }

    /// Checks that the server answers its API (`GET /version`); for readiness probes and
    /// start-up checks. A wrong base URL is an [`Error::Status`] 404 here.
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmcli::DtmClient) -> dtmcli::Result<()> {
    /// dtm.ping().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<()> {
        self.version().await.map(drop)
    }

    /// The server's version (`GET /version`), such as `v1.19.0`.
    pub async fn version(&self) -> Result<String> {
        let reply: VersionReply = self.get("version", &[]).await?;
        Ok(reply.version)
    }

    /// A new global transaction id from the server (`GET /newGid`).
    ///
    /// [`crate::local_gid`] makes one without a round trip.
    pub async fn new_gid(&self) -> Result<String> {
        let reply: GidReply = self.get("newGid", &[]).await?;
        if reply.gid.is_empty() {
            return Err(Error::InvalidArgument(
                "the server returned an empty gid".into(),
            ));
        }
        Ok(reply.gid)
    }

    /// Subscribes `url` to `topic`, for messages with [`crate::Msg::add_topic`] steps.
    ///
    /// The server sees new subscriptions only after its next topic refresh
    /// (`ConfigUpdateInterval`, 3 s by default).
    pub async fn subscribe(&self, topic: &str, url: &str, remark: &str) -> Result<()> {
        self.get_ok(
            Method::GET,
            "subscribe",
            &[("topic", topic), ("url", url), ("remark", remark)],
        )
        .await
    }

    /// Removes `url` from `topic`'s subscribers.
    pub async fn unsubscribe(&self, topic: &str, url: &str) -> Result<()> {
        self.get_ok(
            Method::GET,
            "unsubscribe",
            &[("topic", topic), ("url", url)],
        )
        .await
    }

    /// Deletes `topic` and all its subscriptions.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let path = format!("topic/{}", encode_path_segment(topic));
        self.get_ok(Method::DELETE, &path, &[]).await
    }

    /// Ends an unfinished transaction as `failed` at once, without compensating anything.
    pub async fn force_stop(&self, gid: &str) -> Result<()> {
        self.post("forceStop", &GidBody { gid }).await
    }

    /// Makes the server retry an unfinished transaction now instead of at its next cron time.
    pub async fn reset_next_cron_time(&self, gid: &str) -> Result<()> {
        self.post("resetNextCronTime", &GidBody { gid }).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.inner.server, path)
    }

    /// POSTs a transaction body to a mutating route and checks the answer.
    pub(crate) async fn post_trans(&self, path: &str, body: &TransBody<'_>) -> Result<()> {
        tracing::debug!(gid = body.gid, trans_type = %body.trans_type, path, "dtm call");
        self.post(path, body).await
    }

    pub(crate) async fn post<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<()> {
        let (url, status, text) = self.post_json(path, body).await?;
        answer::expect_success(&url, status, &text)
    }

    /// POSTs `body` as JSON to a route; returns the URL, the status and the answer's text.
    async fn post_json<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(String, u16, String)> {
        let url = self.url(path);
        let body = serde_json::to_vec(body).map_err(|e| Error::payload(path, e))?;
        let req = self
            .request(Method::POST, &url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let (status, text) = send(&url, req).await?;
        Ok((url, status, text))
    }

    /// A POST whose 200 body is decoded, judged by status alone like [`DtmClient::get`]
    /// (`prepareWorkflow` answers stored data, which may contain any word).
    pub(crate) async fn post_reply<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let (url, status, text) = self.post_json(path, body).await?;
        if status != 200 {
            answer::expect_success(&url, status, &text)?;
        }
        serde_json::from_str(&text).map_err(|cause| Error::Decode { url, cause })
    }

    async fn get_ok(&self, method: Method, path: &str, query: &[(&str, &str)]) -> Result<()> {
        let url = with_query(&self.url(path), query.iter().copied())?;
        let (status, text) = send(&url, self.request(method, url.as_str())).await?;
        answer::expect_success(&url, status, &text)
    }

    /// A GET whose 200 body is decoded; read routes are judged by status alone, because stored
    /// reasons may legitimately contain the words FAILURE or ONGOING.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T> {
        let url = with_query(&self.url(path), query.iter().copied())?;
        let (status, text) = send(&url, self.request(Method::GET, url.as_str())).await?;
        if status != 200 {
            answer::expect_success(&url, status, &text)?;
        }
        serde_json::from_str(&text).map_err(|cause| Error::Decode { url, cause })
    }

    /// Calls a branch the way DTM would, with the branch info in the query string and the
    /// transaction's branch headers; anything but SUCCESS is an error.
    pub(crate) async fn call_branch(
        &self,
        url: &str,
        info: &BranchInfo,
        body: Option<Vec<u8>>,
        headers: &BTreeMap<String, String>,
    ) -> Result<BranchResponse> {
        let full = with_query(url, info.query_pairs())?;
        let mut req = match body {
            Some(body) => self
                .request(Method::POST, full.as_str())
                .header(CONTENT_TYPE, "application/json")
                .body(body),
            None => self.request(Method::GET, full.as_str()),
        };
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| Error::InvalidArgument(format!("branch header {name:?}: {e}")))?;
            // The value is never repeated: it may be a credential.
            let value = HeaderValue::from_str(value).map_err(|e| {
                Error::InvalidArgument(format!("branch header {name}: invalid value ({e})"))
            })?;
            req = req.header(name, value);
        }
        tracing::debug!(url, gid = %info.gid, branch_id = %info.branch_id, op = %info.op, "branch call");
        let (status, body) = send_bytes(url, req).await?;
        answer::expect_success(&strip_query(url), status, &String::from_utf8_lossy(&body))?;
        Ok(BranchResponse { status, body })
    }
}

#[derive(Deserialize)]
struct VersionReply {
    version: String,
}

#[derive(Serialize)]
struct GidBody<'a> {
    gid: &'a str,
}

async fn send(url: &str, req: reqwest::RequestBuilder) -> Result<(u16, String)> {
    let (status, body) = send_bytes(url, req).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends `req` to `url` and reads the whole answer; a failure names `url` without its query.
pub(crate) async fn send_bytes(url: &str, req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>)> {
    let failed = |cause| Error::Request {
        url: strip_query(url),
        cause,
    };
    let resp = req.send().await.map_err(failed)?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(failed)?;
    Ok((status, body.to_vec()))
}

/// Appends query pairs to a URL, keeping any query it already has.
pub(crate) fn with_query<'a>(
    url: &str,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String> {
    let mut parsed =
        Url::parse(url).map_err(|e| Error::InvalidArgument(format!("branch URL {url:?}: {e}")))?;
    let mut pairs = pairs.into_iter().peekable();
    if pairs.peek().is_some() {
        // Only with something to add: `query_pairs_mut` leaves a bare `?` otherwise.
        let mut q = parsed.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    Ok(parsed.into())
}

pub(crate) fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

fn encode_path_segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_is_checked_and_trimmed() {
        let c = DtmClient::new("http://localhost:36789/api/dtmsvr/").unwrap();
        assert_eq!(c.server(), "http://localhost:36789/api/dtmsvr");
        assert!(matches!(
            DtmClient::new("localhost:36789").unwrap_err(),
            Error::InvalidArgument(_)
        ));
        assert!(DtmClient::new("ftp://x/api").is_err());
    }

    #[test]
    fn query_is_appended_to_existing_one() {
        let u = with_query("http://h/p?x=1", [("gid", "a b"), ("op", "try")]).unwrap();
        assert_eq!(u, "http://h/p?x=1&gid=a+b&op=try");
        assert_eq!(strip_query(&u), "http://h/p");
        // No pairs, no stray `?` (GET newGid was sent as `newGid?`).
        assert_eq!(
            with_query("http://h/api/newGid", []).unwrap(),
            "http://h/api/newGid"
        );
    }

    #[tokio::test]
    async fn an_invalid_header_value_is_not_repeated_in_the_error() {
        let c = DtmClient::new("http://127.0.0.1:9/api/dtmsvr").unwrap();
        let info = BranchInfo::from_query("gid=g&trans_type=tcc&branch_id=01&op=try").unwrap();
        let headers = BTreeMap::from([("authorization".to_owned(), "Bearer SECRET\n".to_owned())]);
        let err = c
            .call_branch("http://127.0.0.1:9/b", &info, None, &headers)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("authorization"), "{err}");
        assert!(!format!("{err} {err:?}").contains("SECRET"), "{err:?}");
    }

    /// An explicit timeout is kept for a supplied client (the integration tests check that it
    /// ends calls) and for the nested clients made from it; without one, a supplied client
    /// keeps its own.
    #[test]
    fn an_explicit_timeout_is_kept_for_a_supplied_client() {
        let server = "http://127.0.0.1:9/api/dtmsvr";
        let dtm = DtmClient::builder(server)
            .http_client(reqwest::Client::new())
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        assert_eq!(dtm.inner.request_timeout, Some(Duration::from_millis(200)));
        let nested = dtm.with_server("http://127.0.0.1:10/api").unwrap();
        assert_eq!(
            nested.inner.request_timeout,
            Some(Duration::from_millis(200))
        );
        let own = DtmClient::builder(server)
            .http_client(reqwest::Client::new())
            .build()
            .unwrap();
        assert_eq!(own.inner.request_timeout, None);
        let built = DtmClient::builder(server)
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        assert_eq!(
            built.inner.request_timeout, None,
            "set on the built client itself"
        );
    }

    #[tokio::test]
    async fn unreachable_server_is_an_error_not_a_panic() {
        // Port 9 on loopback: nothing listens there in the test environment.
        let c = DtmClient::new("http://127.0.0.1:9/api/dtmsvr").unwrap();
        let err = c.new_gid().await.unwrap_err();
        assert!(matches!(err, Error::Request { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("127.0.0.1:9/api/dtmsvr/newGid"), "{text}");
        assert!(!text.contains("newGid?"), "{text}");
        // The cause is in the text, once, and not repeated by a report of the chain.
        assert_eq!(
            text.to_lowercase().matches("connection refused").count(),
            1,
            "{text}"
        );
        let report = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(
            report.to_lowercase().matches("connection refused").count(),
            1,
            "{report}"
        );
    }
}
