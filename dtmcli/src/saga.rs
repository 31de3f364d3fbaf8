//! Sagas over HTTP: forward actions, each with a compensation.

use crate::DtmClient;

/// A saga under construction over HTTP, with JSON payloads; see [`crate::model::Saga`].
pub type Saga = crate::model::Saga<DtmClient>;

impl DtmClient {
    /// Starts a saga with the given global transaction id.
    pub fn saga(&self, gid: impl Into<String>) -> Saga {
        Saga::new(self.clone(), gid)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::{DtmClient, Error};

    #[tokio::test]
    async fn bad_orders_and_payloads_fail_before_any_call() {
        let dtm = DtmClient::new("http://127.0.0.1:9/api").unwrap();
        let saga = dtm.saga("g").add("a", "c", &1).add_branch_order(1, [0]);
        let err = saga.submit().await.unwrap_err();
        assert!(err.to_string().contains("names step 1"), "{err}");

        let bad = BTreeMap::from([(vec![1u8], 1)]); // non-string map keys cannot be JSON
        let saga = dtm.saga("g").add("a", "c", &bad);
        let err = saga.submit().await.unwrap_err();
        assert!(matches!(err, Error::Payload { .. }), "{err:?}");
        assert!(err.to_string().contains("saga step 0"));

        // DTM would store these and retry them forever over HTTP.
        for url in [
            "localhost:8081/api/TransOut",
            "grpc-host:1/busi.Busi/TransOut",
            "ftp://h/x",
        ] {
            let err = dtm.saga("g").add(url, "", &1).submit().await.unwrap_err();
            assert!(
                err.to_string().contains("not an http:// or https:// URL"),
                "{err}"
            );
        }
    }
}
