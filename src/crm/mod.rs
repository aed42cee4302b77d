//! CRM backends behind one narrow interface: initial load and change feed, get, create,
//! update with a precondition, delete. The embedded backend keeps the CRM in crmgate's own
//! store; external CRMs (helloHQ next) implement the same trait.
//!
//! May import domain and store (embedded backend only).

pub mod embedded;
pub mod hellohq;
pub mod hubspot;
pub mod mirror;
pub mod oauth;

use crate::domain::dataset::Problem;
use crate::domain::{Contact, ContactField, Kind, Record};
use std::future::Future;
use std::time::Duration;

pub use crate::domain::capabilities::Capabilities;
pub use embedded::EmbeddedCrm;
pub use hellohq::HelloHq;
pub use hubspot::HubSpot;

/// A record with the CRM's version of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned {
    /// The record.
    pub record: Record,
    /// Opaque version (etag / updatedOn); changes on every write.
    pub version: String,
}

/// One entry of the change feed.
// Unboxed on purpose: feeds move 100k+ of these at once, almost all upserts, and a box each
// would double the allocations of a load.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Created or changed.
    Upsert(Versioned),
    /// Deleted.
    Deleted(Kind, String),
}

/// A page of the change feed.
#[derive(Clone, Debug, Default)]
pub struct ChangePage {
    /// Changes in feed order.
    pub changes: Vec<Change>,
    /// Cursor to ask with next time.
    pub next: String,
    /// More changes wait behind `next`.
    pub more: bool,
}

/// What must hold for a write to go ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing (upsert).
    None,
    /// The record must not exist yet (create).
    MustNotExist,
    /// The record must exist (update of whatever version).
    MustExist,
    /// The record must exist at this version.
    Version(String),
}

/// A CRM failure, saying whether the caller may retry.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// The record does not exist.
    #[error("not found")]
    NotFound,
    /// The record exists already.
    #[error("already exists")]
    AlreadyExists,
    /// The record changed since the version the caller had.
    #[error("precondition failed")]
    PreconditionFailed {
        /// The CRM's current version, if the record exists.
        current: Option<String>,
    },
    /// The CRM refused the values.
    #[error("invalid record")]
    Invalid(Vec<Problem>),
    /// The CRM is down or throttling; retry later.
    #[error("CRM unavailable: {reason}")]
    Unavailable {
        /// When to retry, if the CRM said.
        retry_after: Option<Duration>,
        /// For logs.
        reason: String,
    },
    /// Local storage of the embedded CRM failed.
    #[error("CRM storage: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl CrmError {
    /// True for failures a client may retry unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CrmError::Unavailable { .. } | CrmError::Store(_))
    }
}

/// What every CRM backend offers crmgate.
pub trait CrmBackend: Send + Sync + 'static {
    /// Changes since `cursor` (`None`: everything, the initial load), at most `max`.
    fn changes(
        &self,
        cursor: Option<String>,
        max: usize,
    ) -> impl Future<Output = Result<ChangePage, CrmError>> + Send;
    /// One record.
    fn get(
        &self,
        kind: Kind,
        id: String,
    ) -> impl Future<Output = Result<Option<Versioned>, CrmError>> + Send;
    /// Creates or updates a whole record under a precondition; returns the stored version.
    fn put(
        &self,
        record: Record,
        pre: Precondition,
    ) -> impl Future<Output = Result<Versioned, CrmError>> + Send;
    /// Changes the `changed` fields of a contact to their values in `contact`, under a
    /// precondition, leaving every other field as the CRM holds it; returns the stored
    /// version. A backend that writes whole records only may store `contact` whole (the
    /// default), which is the same under a version precondition.
    fn update_contact(
        &self,
        contact: Contact,
        changed: Vec<ContactField>,
        pre: Precondition,
    ) -> impl Future<Output = Result<Versioned, CrmError>> + Send {
        let _ = changed;
        self.put(Record::Contact(contact), pre)
    }
    /// Deletes a record under a precondition.
    fn delete(
        &self,
        kind: Kind,
        id: String,
        pre: Precondition,
    ) -> impl Future<Output = Result<(), CrmError>> + Send;
    /// One sync step for a backend that keeps a local copy of a remote CRM (fetch what
    /// changed there); the feed above then serves it. Nothing to do by default.
    fn sync(&self) -> impl Future<Output = Result<(), CrmError>> + Send {
        async { Ok(()) }
    }
    /// Backend-specific Prometheus lines for `/metrics`.
    fn metrics(&self) -> String {
        String::new()
    }
    /// What the CRM can hold: contact fields, values per kind, writable record kinds. The
    /// write path refuses what does not fit before anything is sent.
    fn capabilities(&self) -> Capabilities;
}

/// The backend chosen at start-up (static dispatch).
#[derive(Clone)]
pub enum Crm {
    /// crmgate's own store.
    Embedded(EmbeddedCrm),
    /// helloHQ over its API, through a local mirror.
    HelloHq(HelloHq),
    /// HubSpot over its API, through a local mirror.
    HubSpot(HubSpot),
}

impl CrmBackend for Crm {
    async fn changes(&self, cursor: Option<String>, max: usize) -> Result<ChangePage, CrmError> {
        match self {
            Crm::Embedded(b) => b.changes(cursor, max).await,
            Crm::HelloHq(b) => b.changes(cursor, max).await,
            Crm::HubSpot(b) => b.changes(cursor, max).await,
        }
    }
    async fn get(&self, kind: Kind, id: String) -> Result<Option<Versioned>, CrmError> {
        match self {
            Crm::Embedded(b) => b.get(kind, id).await,
            Crm::HelloHq(b) => b.get(kind, id).await,
            Crm::HubSpot(b) => b.get(kind, id).await,
        }
    }
    async fn put(&self, record: Record, pre: Precondition) -> Result<Versioned, CrmError> {
        match self {
            Crm::Embedded(b) => b.put(record, pre).await,
            Crm::HelloHq(b) => b.put(record, pre).await,
            Crm::HubSpot(b) => b.put(record, pre).await,
        }
    }
    async fn update_contact(
        &self,
        contact: Contact,
        changed: Vec<ContactField>,
        pre: Precondition,
    ) -> Result<Versioned, CrmError> {
        match self {
            Crm::Embedded(b) => b.update_contact(contact, changed, pre).await,
            Crm::HelloHq(b) => b.update_contact(contact, changed, pre).await,
            Crm::HubSpot(b) => b.update_contact(contact, changed, pre).await,
        }
    }
    async fn delete(&self, kind: Kind, id: String, pre: Precondition) -> Result<(), CrmError> {
        match self {
            Crm::Embedded(b) => b.delete(kind, id, pre).await,
            Crm::HelloHq(b) => b.delete(kind, id, pre).await,
            Crm::HubSpot(b) => b.delete(kind, id, pre).await,
        }
    }
    async fn sync(&self) -> Result<(), CrmError> {
        match self {
            Crm::Embedded(b) => b.sync().await,
            Crm::HelloHq(b) => b.sync().await,
            Crm::HubSpot(b) => b.sync().await,
        }
    }
    fn metrics(&self) -> String {
        match self {
            Crm::Embedded(b) => b.metrics(),
            Crm::HelloHq(b) => b.metrics(),
            Crm::HubSpot(b) => b.metrics(),
        }
    }
    fn capabilities(&self) -> Capabilities {
        match self {
            Crm::Embedded(b) => b.capabilities(),
            Crm::HelloHq(b) => b.capabilities(),
            Crm::HubSpot(b) => b.capabilities(),
        }
    }
}
