//! The admin API: a separate port where admins, authenticated by admin
//! client certificates from `glimpse-certs admin`, act on a running
//! collector. Each connection carries one [`AdminRequest`] and one
//! [`AdminReply`].
//!
//! Roles: an operator may act on every organisation; an org-admin only on
//! the organisation their certificate names; support staff only read, only
//! their organisation, and only while its time-limited grant is active.
//! Every request and every refusal with a verified certificate (including
//! one that is not an admin certificate) is logged and appended to the
//! audit log ([`glimpse_store::audit`]). Refusals before a certificate is
//! verified (bare connects, failed handshakes, the connection limit), which
//! anyone who can reach the port can cause, are audited per source address
//! and minute: the first on its own, the rest as one summary entry.
//!
//! [`AdminRequest`]: glimpse_common::wire::admin::AdminRequest
//! [`AdminReply`]: glimpse_common::wire::admin::AdminReply

mod actions;
mod server;

pub use actions::{actor_name, authorize, Access, AdminContext};
pub use server::AdminServer;
