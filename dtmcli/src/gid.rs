//! Global transaction ids made locally.

/// A new global transaction id made without asking the server: 32 lowercase hex characters of
/// a random (v4) UUID. Use [`crate::DtmClient::new_gid`] for the server's own format.
pub fn local_gid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_gids_are_unique_and_url_safe() {
        let a = super::local_gid();
        let b = super::local_gid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
