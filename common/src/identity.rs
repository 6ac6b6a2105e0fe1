//! Who is on the other end: organisations, devices and admins, and how their
//! identities are written into certificates.
//!
//! Names are restricted to `[a-z0-9._-]`, 1..=64 bytes, not starting with a
//! dot. The collector uses organisation names as directory names, so this
//! check is what keeps a hostile certificate from naming `../../etc`.
//!
//! A device certificate carries its identity as a URI subject alternative
//! name `urn:glimpse:device:<org>:<kind>:<device-id>`; an admin certificate as
//! `urn:glimpse:admin:<role>:<org or *>:<name>`. The URI is the one source of
//! truth; the subject's CN and O only help humans reading the certificate.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Longest organisation, device or admin name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A name in a certificate or configuration was not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A name was empty, too long, or used a character outside `[a-z0-9._-]`.
    #[error("invalid {what} {value:?}: use 1 to 64 of a-z 0-9 . _ - and do not start with a dot")]
    InvalidName {
        /// Which name ("organisation", "device id").
        what: &'static str,
        /// The offending value (already validated to be printable-ish only by Debug).
        value: String,
    },
    /// A device kind other than `ap`, `switch` or `gateway`.
    #[error("unknown device kind {0:?}: expected ap, switch or gateway")]
    UnknownKind(String),
    /// An admin role other than `operator`, `org-admin` or `support`.
    #[error("unknown admin role {0:?}: expected operator, org-admin or support")]
    UnknownRole(String),
    /// A URI that is not a Glimpse identity.
    #[error("not a glimpse identity URI: {0:?}")]
    NotAnIdentityUri(String),
    /// An org-scoped admin role without an organisation, or an operator with one.
    #[error("role {role} {problem}")]
    RoleScope {
        /// The role.
        role: AdminRole,
        /// What is wrong with its scope.
        problem: &'static str,
    },
}

fn check_name(what: &'static str, value: &str) -> Result<(), IdentityError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && !value.starts_with('.')
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        // Keep hostile input from flooding logs: the error carries at most 80 chars.
        Err(IdentityError::InvalidName { what, value: value.chars().take(80).collect() })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self, IdentityError> {
                let value = value.into();
                check_name($what, &value)?;
                Ok(Self(value))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = IdentityError;
            fn from_str(s: &str) -> Result<Self, IdentityError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = crate::bounded::BoundedString::<MAX_NAME_LEN>::deserialize(deserializer)?;
                Self::new(text.as_str()).map_err(de::Error::custom)
            }
        }
    };
}

name_type!(
    /// An organisation: the unit of consent, keys and retention.
    OrgId,
    "organisation"
);
name_type!(
    /// A device's id, unique within its organisation.
    DeviceId,
    "device id"
);
name_type!(
    /// An admin's name, for audit trails.
    AdminName,
    "admin name"
);
name_type!(
    /// A site within an organisation (a building, a branch, a campus): the
    /// devices installed there, and the unit an org-admin or a support
    /// grant can be limited to. Named like organisations, unique within
    /// one; a device without a site belongs to none (the organisation's
    /// default).
    SiteId,
    "site"
);

/// What sort of device an agent runs on; decides its transport and what it collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// A Wi-Fi access point (TLS transport).
    Ap,
    /// A wired switch (SSH transport).
    Switch,
    /// A WAN gateway (SSH transport).
    Gateway,
}

impl DeviceKind {
    /// The lowercase name used in certificates, configs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Ap => "ap",
            DeviceKind::Switch => "switch",
            DeviceKind::Gateway => "gateway",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceKind {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        match s {
            "ap" => Ok(DeviceKind::Ap),
            "switch" => Ok(DeviceKind::Switch),
            "gateway" => Ok(DeviceKind::Gateway),
            other => Err(IdentityError::UnknownKind(other.chars().take(40).collect())),
        }
    }
}

/// A device: its organisation, id and kind, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// The owning organisation.
    pub org: OrgId,
    /// The device's id within the organisation.
    pub device: DeviceId,
    /// What the device is.
    pub kind: DeviceKind,
}

const DEVICE_URI_PREFIX: &str = "urn:glimpse:device:";
const ADMIN_URI_PREFIX: &str = "urn:glimpse:admin:";

impl DeviceIdentity {
    /// The subject-alternative-name URI that carries this identity in a certificate.
    pub fn to_uri(&self) -> String {
        format!("{DEVICE_URI_PREFIX}{}:{}:{}", self.org, self.kind, self.device)
    }

    /// Parses a certificate's identity URI.
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix(DEVICE_URI_PREFIX)
            .ok_or_else(|| IdentityError::NotAnIdentityUri(uri.chars().take(120).collect()))?;
        let mut parts = rest.splitn(3, ':');
        let (Some(org), Some(kind), Some(device)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(IdentityError::NotAnIdentityUri(uri.chars().take(120).collect()));
        };
        Ok(Self { org: OrgId::new(org)?, kind: kind.parse()?, device: DeviceId::new(device)? })
    }
}

impl fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.org, self.device, self.kind)
    }
}

/// What an admin certificate allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminRole {
    /// Runs the collector: every organisation.
    Operator,
    /// Administers one organisation.
    OrgAdmin,
    /// Vendor support: read-only, one organisation, only while it grants access.
    Support,
}

impl AdminRole {
    /// The name used in certificates and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Operator => "operator",
            AdminRole::OrgAdmin => "org-admin",
            AdminRole::Support => "support",
        }
    }
}

impl fmt::Display for AdminRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AdminRole {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        match s {
            "operator" => Ok(AdminRole::Operator),
            "org-admin" => Ok(AdminRole::OrgAdmin),
            "support" => Ok(AdminRole::Support),
            other => Err(IdentityError::UnknownRole(other.chars().take(40).collect())),
        }
    }
}

/// An admin, as an admin client certificate names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdminIdentity {
    /// The admin's name.
    pub name: AdminName,
    /// What they may do.
    pub role: AdminRole,
    /// The organisation an org-admin or support admin is scoped to; `None` for operators.
    pub org: Option<OrgId>,
}

impl AdminIdentity {
    /// Builds an identity, checking that the role's scope fits.
    pub fn new(name: AdminName, role: AdminRole, org: Option<OrgId>) -> Result<Self, IdentityError> {
        match (role, &org) {
            (AdminRole::Operator, Some(_)) => {
                Err(IdentityError::RoleScope { role, problem: "covers every organisation; do not name one" })
            }
            (AdminRole::OrgAdmin | AdminRole::Support, None) => {
                Err(IdentityError::RoleScope { role, problem: "needs an organisation" })
            }
            _ => Ok(Self { name, role, org }),
        }
    }

    /// The subject-alternative-name URI that carries this identity.
    pub fn to_uri(&self) -> String {
        let org = self.org.as_ref().map_or("*", OrgId::as_str);
        format!("{ADMIN_URI_PREFIX}{}:{org}:{}", self.role, self.name)
    }

    /// Parses an admin certificate's identity URI.
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let bad = || IdentityError::NotAnIdentityUri(uri.chars().take(120).collect());
        let rest = uri.strip_prefix(ADMIN_URI_PREFIX).ok_or_else(bad)?;
        let mut parts = rest.splitn(3, ':');
        let (Some(role), Some(org), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let org = if org == "*" { None } else { Some(OrgId::new(org)?) };
        Self::new(AdminName::new(name)?, role.parse()?, org)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_refuse_path_tricks() {
        for bad in ["", "..", ".hidden", "a/b", "A", "x".repeat(65).as_str(), "a b", "a:b"] {
            assert!(OrgId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(OrgId::new("acme-corp.eu_1").is_ok());
    }

    #[test]
    fn device_uri_round_trips() {
        let id = DeviceIdentity {
            org: OrgId::new("acme").unwrap(),
            device: DeviceId::new("ap-1").unwrap(),
            kind: DeviceKind::Ap,
        };
        assert_eq!(id.to_uri(), "urn:glimpse:device:acme:ap:ap-1");
        assert_eq!(DeviceIdentity::from_uri(&id.to_uri()).unwrap(), id);
        assert!(DeviceIdentity::from_uri("urn:glimpse:device:acme:ap").is_err());
        assert!(DeviceIdentity::from_uri("urn:glimpse:device:acme:router:x").is_err());
        assert!(DeviceIdentity::from_uri("urn:glimpse:device:../x:ap:x").is_err());
    }

    #[test]
    fn admin_uri_round_trips_and_scopes() {
        let op = AdminIdentity::new(AdminName::new("ops").unwrap(), AdminRole::Operator, None).unwrap();
        assert_eq!(op.to_uri(), "urn:glimpse:admin:operator:*:ops");
        assert_eq!(AdminIdentity::from_uri(&op.to_uri()).unwrap(), op);
        assert!(AdminIdentity::from_uri("urn:glimpse:admin:support:*:bob").is_err());
        assert!(AdminIdentity::from_uri("urn:glimpse:admin:operator:acme:bob").is_err());
    }

    proptest! {
        #[test]
        fn parsing_any_uri_never_panics(uri in ".{0,200}") {
            let _ = DeviceIdentity::from_uri(&uri);
            let _ = AdminIdentity::from_uri(&uri);
        }
    }
}
