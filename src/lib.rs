//! crmgate: CRM contacts as live, per-user virtual address-book folders, served over EWS and
//! Microsoft Graph-style endpoints. See ARCHITECTURE.md for the map.

pub mod admin;
pub mod app;
pub mod auth;
pub mod carddav;
pub mod config;
pub mod crm;
pub mod domain;
pub mod ews;
pub mod gen;
pub mod graph;
pub mod http;
pub mod json_guard;
pub mod mirror;
pub mod replica;
pub mod server;
pub mod store;
pub mod view;
pub mod xml;
