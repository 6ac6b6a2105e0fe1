//! What admins may do on a running collector, and doing it. The HTTPS API
//! ([`crate::api`]) turns each request into an [`AdminAction`] (or one of
//! its own, such as tokens) and hands it here with the authenticated
//! [`Actor`]: an admin client certificate from `glimpse-certs admin`, or an
//! API token.
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
//! [`AdminAction`]: glimpse_common::wire::admin::AdminAction

mod actions;

pub use actions::{
    actor_name, authorize, Access, Actor, ActorVia, AdminContext, Basis, GrantInForce, Permit, Refusal, RefusalKind,
};
