//! Two-phase messages over HTTP: steps the server runs forward until they all succeed.

use crate::DtmClient;

/// A two-phase message under construction over HTTP, with JSON payloads; see
/// [`crate::model::Msg`].
pub type Msg = crate::model::Msg<DtmClient>;

impl DtmClient {
    /// Starts a two-phase message with the given global transaction id.
    pub fn msg(&self, gid: impl Into<String>) -> Msg {
        Msg::new(self.clone(), gid)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::model::GlobalCall;
    use crate::trans::{payload_texts, TransBody};
    use crate::{DtmClient, Error};

    #[tokio::test]
    async fn an_empty_query_url_is_refused_before_any_call() {
        // Nothing listens on port 9: a call would fail differently.
        let dtm = DtmClient::new("http://127.0.0.1:9/api").unwrap();
        let mut msg = dtm.msg("g").add("http://h/TransIn", &1);
        let err = msg.prepare("").await.unwrap_err();
        assert!(err.to_string().contains("query_prepared is empty"), "{err}");
        let err = msg.do_and_submit(" ", async { Ok(()) }).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_unencodable_payload_is_reported_once_and_the_message_is_never_sent() {
        let dtm = DtmClient::new("http://127.0.0.1:9/api").unwrap();
        let bad = std::collections::BTreeMap::from([(vec![1u8], 1)]); // not JSON
        let mut msg = dtm.msg("g").add("http://h/a", &1).add("http://h/b", &bad);
        let err = msg.prepare("http://h/q").await.unwrap_err();
        assert!(matches!(err, Error::Payload { .. }), "{err:?}");
        assert!(err.to_string().contains("msg step 1"), "{err}");
        // Still refused, before any call (nothing listens on port 9).
        let err = msg.prepare("http://h/q").await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        let err = msg.submit().await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("msg step 1") && m.contains("earlier call")),
            "{err:?}"
        );
    }

    #[test]
    fn body_has_delay_and_topic_steps() {
        let dtm = DtmClient::new("http://127.0.0.1:9/api").unwrap();
        let mut msg = dtm
            .msg("g")
            .add_topic("t", &serde_json::json!({"a": 1}))
            .delay(Duration::from_millis(1500))
            .concurrent();
        let custom = msg.checked_custom_data().unwrap();
        let request = msg.request(GlobalCall::Submit, &custom);
        let texts = payload_texts(request.payloads).unwrap();
        let body = TransBody::of(&request, &texts);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "gid": "g", "trans_type": "msg",
                "steps": [{"action": "topic://t"}], "payloads": ["{\"a\":1}"],
                "custom_data": "{\"delay\":2}", "protocol": "http", "concurrent": true
            })
        );
    }
}
