//! The admin API: a separate port where admins, authenticated by admin
//! client certificates from `glimpse-certs admin`, act on a running
//! collector. Each connection carries one [`AdminRequest`] and one
//! [`AdminReply`].
//!
//! Roles: an operator may act on every organisation; an org-admin only on
//! the organisation their certificate names; support staff only read, only
//! their organisation, and only while its time-limited grant is active.
//! Every request and every refusal (including connections that fail the
//! TLS handshake or carry no admin certificate) is logged and appended to
//! the audit log ([`glimpse_store::audit`]).
//!
//! [`AdminRequest`]: glimpse_common::wire::admin::AdminRequest
//! [`AdminReply`]: glimpse_common::wire::admin::AdminReply

mod actions;
mod server;

pub use actions::{actor_name, authorize, Access, AdminContext};
pub use server::AdminServer;
