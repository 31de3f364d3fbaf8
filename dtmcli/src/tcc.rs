//! TCC: Try-Confirm-Cancel global transactions over HTTP, including nested ones.

use crate::DtmClient;

/// Options of a TCC transaction before it starts; [`run`](crate::model::TccBuilder::run)
/// runs it.
pub type TccBuilder = crate::model::TccBuilder<DtmClient>;

/// The handle of an open TCC transaction, given to the closure of
/// [`TccBuilder::run`](crate::model::TccBuilder::run); the payloads are JSON.
pub type Tcc = crate::model::Tcc<DtmClient>;

impl DtmClient {
    /// Starts a TCC global transaction; set options on the builder, then
    /// [`run`](crate::model::TccBuilder::run) it.
    pub fn tcc(&self, gid: impl Into<String>) -> TccBuilder {
        TccBuilder::new(self.clone(), gid)
    }
}
