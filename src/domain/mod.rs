//! The pure model of crmgate: ids, CRM records, the dataset format, folder rules and the
//! from-scratch membership definition.
//!
//! May import only std and small value crates (serde); no I/O, no protocol, no async.

pub mod capabilities;
pub mod dataset;
pub mod ids;
pub mod mapping;
pub mod model;
pub mod patch;
pub mod rules;
pub mod time;

pub use ids::{CompanyId, ContactId, LeadId, ProjectId, SubsystemId, UserId};
pub use model::*;
