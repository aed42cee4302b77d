//! The HubSpot backend (issue 14), being built: so far the mapping between HubSpot's records
//! and crmgate's model (`map`), documented in docs/hubspot.md. The adapter on the generic
//! mirror (`crm::mirror`) — client with HubSpot's budgets, initial load, incremental search,
//! webhooks, PATCH writes of the changed properties — comes next; the simulator it will be
//! tested against is in tests/support/hubspot_sim.rs, pinned by tests/hubspot_contract.rs.

pub mod map;
