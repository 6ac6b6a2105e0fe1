//! The admin API: a separate port where admins, authenticated by admin
//! client certificates from `glimpse-certs admin`, act on a running
//! collector. Each connection carries one [`AdminRequest`] and one
//! [`AdminReply`].
//!
//! Roles: an operator may act on every organisation; an org-admin only on
//! the organisation their certificate names; support staff only under an
//! organisation's time-limited grant, which this collector does not offer
//! yet, so their requests are refused. Every request and every refusal is
//! logged with the admin's identity and peer address.
//!
//! [`AdminRequest`]: glimpse_common::wire::admin::AdminRequest
//! [`AdminReply`]: glimpse_common::wire::admin::AdminReply

mod client;
mod server;

pub use client::{admin_request, AdminClientError, AdminCredentials};
pub use server::{authorize, AdminServer};
