//! The HubSpot backend (issue 14), being built: the mapping between HubSpot's records and
//! crmgate's model (`map`, documented in docs/hubspot.md) and the HTTP client with HubSpot's
//! budget that reads a whole portal as records (`client::Client::snapshot`), tested against
//! the simulator in tests/support/hubspot_sim.rs (pinned by tests/hubspot_contract.rs). Next:
//! the adapter on the generic mirror (`crm::mirror`) with `crm.backend = "hubspot"`,
//! incremental search, webhooks, and PATCH writes of the changed properties.

pub mod client;
pub mod map;
