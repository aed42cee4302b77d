//! crmgate: CRM contacts as live, per-user virtual address-book folders, served over EWS and
//! Microsoft Graph-style endpoints. See ARCHITECTURE.md for the map.

pub mod crm;
pub mod domain;
pub mod replica;
pub mod store;
