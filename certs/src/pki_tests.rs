//! Tests against real PKI directories. RSA-4096 generation is slow, so one
//! directory is shared by every test (each uses its own device names), and
//! only the foreign-CA test makes a second one.

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole, DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::secret::SecretKey;
use time::macros::datetime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::public_key::PublicKey;

use crate::ca::pem_body;
use crate::inspect::parse_cert;
use crate::*;

struct Pki {
    dir: tempfile::TempDir,
    /// `ca.crl.pem` as `init` left it, before any test revoked anything.
    initial_crl: String,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &InitOptions::default()).unwrap();
        let initial_crl = fs::read_to_string(ca_crl_path(dir.path())).unwrap();
        Pki { dir, initial_crl }
    })
}

fn dir() -> &'static Path {
    pki().dir.path()
}

fn der_of(path: &Path) -> Vec<u8> {
    let label = if path.to_string_lossy().ends_with(".crl.pem") { "X509 CRL" } else { "CERTIFICATE" };
    pem_body(path, &fs::read_to_string(path).unwrap(), label).unwrap()
}

fn device(org: &str, id: &str, kind: DeviceKind) -> DeviceIdentity {
    DeviceIdentity { org: OrgId::new(org).unwrap(), device: DeviceId::new(id).unwrap(), kind }
}

/// Whether `signed`/`signature` verify with the RSA key of the CA certificate `ca_der`.
fn verifies(ca_der: &[u8], signed: &[u8], signature: &[u8]) -> bool {
    let ca = parse_cert(ca_der).unwrap();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &ca.public_key().subject_public_key.data,
    )
    .verify(signed, signature)
    .is_ok()
}

fn chains_to(cert_der: &[u8], ca_der: &[u8]) -> bool {
    let cert = parse_cert(cert_der).unwrap();
    let ca = parse_cert(ca_der).unwrap();
    cert.issuer().as_raw() == ca.subject().as_raw()
        && verifies(ca_der, cert.tbs_certificate.as_ref(), &cert.signature_value.data)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn eku(cert: &X509Certificate<'_>) -> (bool, bool) {
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    (eku.server_auth, eku.client_auth)
}

#[test]
fn ca_is_an_rsa_4096_root_with_pathlen_0() {
    let ca_der = der_of(&ca_cert_path(dir()));
    let ca = parse_cert(&ca_der).unwrap();
    match ca.public_key().parsed().unwrap() {
        PublicKey::RSA(rsa) => assert_eq!(rsa.key_size(), 4096),
        other => panic!("CA key is not RSA: {other:?}"),
    }
    assert!(ca.is_ca());
    let constraints = ca.basic_constraints().unwrap().unwrap().value;
    assert_eq!(constraints.path_len_constraint, Some(0));
    let usage = ca.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign() && !usage.digital_signature());
    let cn = ca.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "Glimpse Root CA");
    assert!(chains_to(&ca_der, &ca_der), "CA is self-signed");
    let years = (ca.validity().not_after.to_datetime() - ca.validity().not_before.to_datetime()).whole_days() / 365;
    assert_eq!(years, 20);
    #[cfg(unix)]
    assert_eq!(mode(&ca_key_path(dir())), 0o600);
    let key = fs::read_to_string(ca_key_path(dir())).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
}

#[test]
fn collector_certificate_is_a_server_certificate() {
    let ca_der = der_of(&ca_cert_path(dir()));
    let der = der_of(&collector_cert_path(dir()));
    assert!(chains_to(&der, &ca_der));
    let cert = parse_cert(&der).unwrap();
    assert_eq!(eku(&cert), (true, false));
    assert!(!cert.is_ca());
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(ip) => format!("{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(sans, ["localhost", "[127, 0, 0, 1]"]);
    #[cfg(unix)]
    assert_eq!(mode(&collector_key_path(dir())), 0o600);
    // No identity URI: a collector certificate cannot pose as a device.
    assert!(matches!(device_identity_of(&der), Err(glimpse_common::certificate::CertificateError::NoIdentity)));
}

#[test]
fn init_writes_an_empty_crl_and_revocation_list() {
    let der = pem_body(Path::new("ca.crl.pem"), &pki().initial_crl, "X509 CRL").unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    assert_eq!(crl.iter_revoked_certificates().count(), 0);
    assert_eq!(crl.crl_number().unwrap().to_string(), "1");
    let ca_der = der_of(&ca_cert_path(dir()));
    assert!(verifies(&ca_der, crl.tbs_cert_list.as_ref(), &crl.signature_value.data));
}

#[test]
fn device_certificate_carries_its_identity_and_chains_to_the_ca() {
    let id = device("acme", "ap-1", DeviceKind::Ap);
    let files = issue_device(dir(), &id, &Validity::default(), false).unwrap();
    assert_eq!(files.cert, device_dir(dir(), &id.org, &id.device).join("device.pem"));

    let der = der_of(&files.cert);
    assert!(chains_to(&der, &der_of(&ca_cert_path(dir()))));
    assert_eq!(device_identity_of(&der).unwrap(), id);
    assert!(admin_identity_of(&der).is_err());
    let cert = parse_cert(&der).unwrap();
    assert_eq!(eku(&cert), (false, true));
    assert!(!cert.is_ca());
    assert_eq!(cert.subject().to_string(), "CN=ap-1, O=acme, OU=ap");
    let ext =
        cert.extensions().iter().find(|e| matches!(e.parsed_extension(), ParsedExtension::AuthorityKeyIdentifier(_)));
    assert!(ext.is_some(), "leaf names its issuer's key");
    // Positive 128-bit serial.
    assert!(cert.raw_serial().len() <= 16 && cert.raw_serial()[0] & 0x80 == 0);

    let registration = load_registrations(dir()).unwrap().into_iter().find(|r| r.identity() == id).unwrap();
    assert_eq!(registration.cert_serial, serial_hex_of(&der).unwrap());
    assert_eq!(registration.cert_sha256, crate::inspect::sha256_hex(&der));
    assert_eq!(registration.not_after, cert.validity().not_after.to_datetime());
    let psk = fs::read_to_string(&files.shared_key).unwrap();
    assert_eq!(psk.len(), 65);
    assert!(psk.ends_with('\n'));
    assert_eq!(SecretKey::from_hex(&psk).unwrap(), registration.shared_key());
    assert!(!format!("{registration:?}").contains(psk.trim()));

    #[cfg(unix)]
    {
        for private in [&files.key, &files.shared_key, &files.registration] {
            assert_eq!(mode(private), 0o600, "{}", private.display());
        }
        assert_eq!(mode(&files.cert) & 0o600, 0o600);
    }
}

#[test]
fn a_device_site_is_in_the_certificate_subject_and_the_registration() {
    let id = device("acme", "ap-site", DeviceKind::Ap);
    let site = glimpse_common::identity::SiteId::new("berlin-hq").unwrap();
    let options = DeviceOptions { site: Some(site.clone()), ..DeviceOptions::default() };
    let files = issue_device_with(dir(), &id, &Validity::default(), &options).unwrap();
    let der = der_of(&files.cert);
    let cert = parse_cert(&der).unwrap();
    assert_eq!(cert.subject().to_string(), "CN=ap-site, O=acme, OU=ap, L=berlin-hq");
    // Still exactly one URI: the identity, which the collector reads.
    assert_eq!(device_identity_of(&der).unwrap(), id);
    let registration = load_registrations(dir()).unwrap().into_iter().find(|r| r.identity() == id).unwrap();
    assert_eq!(registration.site, Some(site));

    // Issued again without a site (with --force): it belongs to none.
    let again = DeviceOptions { force: true, ..DeviceOptions::default() };
    let files = issue_device_with(dir(), &id, &Validity::default(), &again).unwrap();
    assert_eq!(parse_cert(&der_of(&files.cert)).unwrap().subject().to_string(), "CN=ap-site, O=acme, OU=ap");
    let registration = load_registrations(dir()).unwrap().into_iter().find(|r| r.identity() == id).unwrap();
    assert_eq!(registration.site, None);
}

#[test]
fn nothing_is_overwritten_without_force() {
    let id = device("acme", "sw-1", DeviceKind::Switch);
    let first = issue_device(dir(), &id, &Validity::default(), false).unwrap();
    let serial = serial_hex_of(&der_of(&first.cert)).unwrap();
    let psk = fs::read_to_string(&first.shared_key).unwrap();

    let err = issue_device(dir(), &id, &Validity::default(), false).unwrap_err();
    assert!(matches!(err, CertsError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("sw-1"), "{err}");
    assert_eq!(fs::read_to_string(&first.shared_key).unwrap(), psk);

    let second = issue_device(dir(), &id, &Validity::default(), true).unwrap();
    assert_ne!(serial_hex_of(&der_of(&second.cert)).unwrap(), serial);
    assert_ne!(fs::read_to_string(&second.shared_key).unwrap(), psk);
    #[cfg(unix)]
    assert_eq!(mode(&second.key), 0o600);

    // A second init refuses at once, before generating a key.
    let err = init(dir(), &InitOptions::default()).unwrap_err();
    assert!(matches!(err, CertsError::AlreadyExists { .. }), "{err}");
}

#[test]
fn admin_certificate_round_trips() {
    let id =
        AdminIdentity::new(AdminName::new("alice").unwrap(), AdminRole::OrgAdmin, Some(OrgId::new("acme").unwrap()))
            .unwrap();
    let files = issue_admin(dir(), &id, &Validity::default(), false).unwrap();
    let der = der_of(&files.cert);
    assert!(chains_to(&der, &der_of(&ca_cert_path(dir()))));
    assert_eq!(admin_identity_of(&der).unwrap(), id);
    assert!(device_identity_of(&der).is_err(), "an admin is not a device");
    let cert = parse_cert(&der).unwrap();
    assert_eq!(eku(&cert), (false, true));
    let days = (cert.validity().not_after.to_datetime() - cert.validity().not_before.to_datetime()).whole_days();
    assert_eq!(days, 365);
    #[cfg(unix)]
    assert_eq!(mode(&files.key), 0o600);
}

#[test]
fn explicit_validity_makes_expired_certificates() {
    let id = device("acme", "gw-expired", DeviceKind::Gateway);
    let validity =
        Validity { not_before: Some(datetime!(2020-01-01 0:00 UTC)), not_after: Some(datetime!(2021-01-01 0:00 UTC)) };
    let files = issue_device(dir(), &id, &validity, false).unwrap();
    let der = der_of(&files.cert);
    let cert = parse_cert(&der).unwrap();
    assert_eq!(cert.validity().not_before.to_datetime(), datetime!(2020-01-01 0:00 UTC));
    assert_eq!(cert.validity().not_after.to_datetime(), datetime!(2021-01-01 0:00 UTC));
    assert!(!cert.validity().is_valid());
    let registration = load_registrations(dir()).unwrap().into_iter().find(|r| r.identity() == id).unwrap();
    assert_eq!(registration.not_after, datetime!(2021-01-01 0:00 UTC));

    let inverted = Validity { not_before: validity.not_after, not_after: validity.not_before };
    let other = device("acme", "gw-inverted", DeviceKind::Gateway);
    assert!(matches!(issue_device(dir(), &other, &inverted, false), Err(CertsError::InvalidValidity(_))));
    assert!(!device_dir(dir(), &other.org, &other.device).exists());
}

#[test]
fn revoke_lists_the_serial_in_a_fresh_crl() {
    let id = device("globex", "ap-9", DeviceKind::Ap);
    let files = issue_device(dir(), &id, &Validity::default(), false).unwrap();
    let serial = serial_hex_of(&der_of(&files.cert)).unwrap();

    revoke(dir(), &id.org, &id.device).unwrap();

    let crl_der = der_of(&ca_crl_path(dir()));
    let (rest, crl) = x509_parser::parse_x509_crl(&crl_der).unwrap();
    assert!(rest.is_empty());
    let listed: Vec<String> =
        crl.iter_revoked_certificates().map(|r| crate::inspect::serial_hex(r.raw_serial())).collect();
    assert_eq!(listed, std::slice::from_ref(&serial));
    // The collector's reload reads the same serials to end live sessions.
    assert_eq!(glimpse_common::certificate::crl_revoked_serials(&crl_der).unwrap(), listed);
    assert_eq!(crl.crl_number().unwrap().to_string(), "2");
    let err = handshake::connect(dir(), &files.cert, &files.key).unwrap_err();
    assert!(format!("{err:?}").contains("Revoked"), "{err:?}");
    let ca_der = der_of(&ca_cert_path(dir()));
    assert!(verifies(&ca_der, crl.tbs_cert_list.as_ref(), &crl.signature_value.data));
    assert_eq!(crl.issuer().as_raw(), parse_cert(&ca_der).unwrap().subject().as_raw());

    let revoked = load_revoked(dir()).unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!((&revoked[0].org, &revoked[0].device, &revoked[0].serial), (&id.org, &id.device, &serial));

    let again = revoke(dir(), &id.org, &id.device).unwrap_err();
    assert!(matches!(again, CertsError::AlreadyRevoked { .. }), "{again}");
    let unknown = revoke(dir(), &id.org, &DeviceId::new("nope").unwrap()).unwrap_err();
    assert!(matches!(unknown, CertsError::UnknownDevice { .. }), "{unknown}");

    // A reissued device gets a new serial that is not revoked; a second
    // revoke lists both, in a CRL with a higher number.
    let files = issue_device(dir(), &id, &Validity::default(), true).unwrap();
    let new_serial = serial_hex_of(&der_of(&files.cert)).unwrap();
    revoke(dir(), &id.org, &id.device).unwrap();
    let crl_der = der_of(&ca_crl_path(dir()));
    let (_, crl) = x509_parser::parse_x509_crl(&crl_der).unwrap();
    let listed: Vec<String> =
        crl.iter_revoked_certificates().map(|r| crate::inspect::serial_hex(r.raw_serial())).collect();
    assert_eq!(listed, [serial, new_serial]);
    assert_eq!(crl.crl_number().unwrap().to_string(), "3");
}

#[test]
fn a_second_pki_is_foreign_and_mixed_files_are_refused() {
    let other = tempfile::tempdir().unwrap();
    init(other.path(), &InitOptions { collector_sans: vec!["collector.example".into()], ..InitOptions::default() })
        .unwrap();
    let id = device("acme", "ap-foreign", DeviceKind::Ap);
    let files = issue_device(other.path(), &id, &Validity::default(), false).unwrap();
    let foreign = der_of(&files.cert);
    assert_eq!(device_identity_of(&foreign).unwrap(), id);
    assert!(!chains_to(&foreign, &der_of(&ca_cert_path(dir()))));
    assert!(chains_to(&foreign, &der_of(&ca_cert_path(other.path()))));
    // Both roots are called "Glimpse Root CA", so webpki tries this one and
    // finds the signature wrong.
    let err = handshake::connect(dir(), &files.cert, &files.key).unwrap_err();
    assert!(format!("{err:?}").contains("BadSignature"), "{err:?}");
    // The other collector is only "collector.example", not "localhost".
    let err = handshake::connect(other.path(), &files.cert, &files.key).unwrap_err();
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");

    // This PKI's certificate with the other PKI's key.
    let mixed = tempfile::tempdir().unwrap();
    fs::copy(ca_cert_path(dir()), ca_cert_path(mixed.path())).unwrap();
    fs::copy(ca_key_path(other.path()), ca_key_path(mixed.path())).unwrap();
    let err = issue_device(mixed.path(), &id, &Validity::default(), false).unwrap_err();
    assert!(matches!(err, CertsError::CaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("ca.key"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = issue_device(empty.path(), &id, &Validity::default(), false).unwrap_err();
    assert!(matches!(err, CertsError::NoCa { .. }), "{err}");
}

mod handshake {
    //! In-memory mTLS handshakes through `glimpse_common::tls`, so that what
    //! this crate writes is checked by the verifier the collector really uses.

    use std::sync::Arc;

    use rustls::{ClientConnection, ServerConnection};
    use rustls_pki_types::{
        CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
    };

    use super::*;

    fn cert(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from(der_of(path))
    }

    fn key(path: &Path) -> PrivateKeyDer<'static> {
        let text = fs::read_to_string(path).unwrap();
        PrivatePkcs8KeyDer::from(pem_body(path, &text, "PRIVATE KEY").unwrap()).into()
    }

    /// Runs a handshake between the PKI's collector and a client presenting
    /// `client_cert`/`client_key`; `Err` carries the server's complaint.
    pub(super) fn connect(pki: &Path, client_cert: &Path, client_key: &Path) -> Result<(), rustls::Error> {
        let ca = cert(&ca_cert_path(pki));
        let crl = CertificateRevocationListDer::from(der_of(&ca_crl_path(pki)));
        let server = glimpse_common::tls::server_config(
            &ca,
            vec![crl],
            vec![cert(&collector_cert_path(pki))],
            key(&collector_key_path(pki)),
        )
        .unwrap();
        let client = glimpse_common::tls::client_config(&ca, vec![cert(client_cert)], key(client_key), false).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
        let mut server = ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }
}

#[test]
fn collector_accepts_devices_and_admins_and_rejects_expired_ones() {
    let good = issue_device(dir(), &device("initech", "ap-1", DeviceKind::Ap), &Validity::default(), false).unwrap();
    handshake::connect(dir(), &good.cert, &good.key).unwrap();

    let admin = AdminIdentity::new(AdminName::new("root").unwrap(), AdminRole::Operator, None).unwrap();
    let admin = issue_admin(dir(), &admin, &Validity::default(), false).unwrap();
    handshake::connect(dir(), &admin.cert, &admin.key).unwrap();

    let expired = Validity { not_before: None, not_after: Some(datetime!(2021-01-01 0:00 UTC)) };
    let old = issue_device(dir(), &device("initech", "ap-old", DeviceKind::Ap), &expired, false).unwrap();
    let err = handshake::connect(dir(), &old.cert, &old.key).unwrap_err();
    assert!(format!("{err:?}").contains("Expired"), "{err:?}");
}

#[test]
fn switches_and_gateways_get_ssh_keys_and_access_points_do_not() {
    // A switch: a key pair generated here, private file owner-only, public
    // key in the registration.
    let switch = device("ssh-org", "sw-1", DeviceKind::Switch);
    let files = issue_device(dir(), &switch, &Validity::default(), false).unwrap();
    let private_path = files.ssh_key.as_ref().expect("a generated private key");
    assert_eq!(mode(private_path), 0o600);
    let private = ssh_key::PrivateKey::from_openssh(fs::read(private_path).unwrap()).unwrap();
    let registrations = load_registrations(dir()).unwrap();
    let reg = registrations.iter().find(|r| r.device.as_str() == "sw-1" && r.org.as_str() == "ssh-org").unwrap();
    let registered = reg.ssh_key().unwrap().expect("registered SSH key");
    assert_eq!(registered.key_data(), private.public_key().key_data());
    let public_file = fs::read_to_string(files.ssh_public_key.as_ref().unwrap()).unwrap();
    assert_eq!(public_file.trim(), reg.ssh_public_key.as_deref().unwrap());

    // A gateway that made its own key: only the public half is registered.
    let own = ssh::generate_ed25519("gw-own").unwrap();
    let gateway = device("ssh-org", "gw-1", DeviceKind::Gateway);
    let options = DeviceOptions { ssh_public_key: Some(own.public_openssh.clone()), ..DeviceOptions::default() };
    let files = issue_device_with(dir(), &gateway, &Validity::default(), &options).unwrap();
    assert!(files.ssh_key.is_none());
    let reg = load_registrations(dir()).unwrap().into_iter().find(|r| r.device.as_str() == "gw-1").unwrap();
    assert_eq!(reg.ssh_public_key.as_deref(), Some(own.public_openssh.as_str()));

    // An access point has no SSH key and may not be given one.
    let ap = device("ssh-org", "ap-1", DeviceKind::Ap);
    let refused = issue_device_with(dir(), &ap, &Validity::default(), &options).unwrap_err();
    assert!(matches!(refused, CertsError::SshKeyForTls(DeviceKind::Ap)), "{refused}");
    assert!(!registration_path(dir(), &ap.org, &ap.device).exists(), "nothing written for a refused request");
    let files = issue_device(dir(), &ap, &Validity::default(), false).unwrap();
    assert!(files.ssh_key.is_none() && files.ssh_public_key.is_none());

    // A bad key is refused before anything is written.
    let bad = DeviceOptions { ssh_public_key: Some("ssh-rsa AAAA".into()), ..DeviceOptions::default() };
    let sw2 = device("ssh-org", "sw-2", DeviceKind::Switch);
    assert!(matches!(issue_device_with(dir(), &sw2, &Validity::default(), &bad), Err(CertsError::SshKey { .. })));
    assert!(!registration_path(dir(), &sw2.org, &sw2.device).exists());
}

/// A PKI of its own with the shared CA (copied, not generated again), for a
/// test whose revocations must not show in the shared CRL.
fn copy_of_pki() -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for name in ["ca.pem", "ca.key", "collector.pem", "collector.key", "revoked.json"] {
        fs::copy(dir().join(name), copy.path().join(name)).unwrap();
    }
    fs::write(ca_crl_path(copy.path()), &pki().initial_crl).unwrap();
    copy
}

#[test]
fn admin_certificates_are_recorded_and_revoked_onto_the_crl() {
    let pki = copy_of_pki();
    let dir = pki.path();
    let alice =
        AdminIdentity::new(AdminName::new("alice").unwrap(), AdminRole::OrgAdmin, Some(OrgId::new("acme").unwrap()))
            .unwrap();
    let bob = AdminIdentity::new(AdminName::new("bob").unwrap(), AdminRole::Operator, None).unwrap();
    let first = issue_admin(dir, &alice, &Validity::default(), false).unwrap();
    let first_serial = serial_hex_of(&der_of(&first.cert)).unwrap();
    let second = issue_admin(dir, &alice, &Validity::default(), true).unwrap();
    let bob_files = issue_admin(dir, &bob, &Validity::default(), false).unwrap();
    let bob_serial = serial_hex_of(&der_of(&bob_files.cert)).unwrap();

    let admins = load_admins(dir).unwrap();
    assert_eq!(admins.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["alice", "alice", "bob"]);
    assert_eq!(admins[0].serial, first_serial);
    assert_eq!((admins[0].role, admins[0].org.as_ref().map(OrgId::as_str)), (AdminRole::OrgAdmin, Some("acme")));
    let not_after = parse_cert(&der_of(&bob_files.cert)).unwrap().validity().not_after.to_datetime();
    assert_eq!(admins[2].not_after, not_after);
    assert!(admins.iter().all(|a| a.revoked_at.is_none()));
    #[cfg(unix)]
    assert_eq!(mode(&admins_path(dir)), 0o644);

    // Both of alice's certificates (the re-issue left the first valid).
    let revoked = revoke_admin(dir, &AdminSelector::Name(alice.name.clone())).unwrap();
    assert_eq!(revoked.len(), 2);
    let listed = glimpse_common::certificate::crl_revoked_serials(&der_of(&ca_crl_path(dir))).unwrap();
    assert_eq!(listed, [admins[0].serial.clone(), admins[1].serial.clone()]);
    let err = handshake::connect(dir, &second.cert, &second.key).unwrap_err();
    assert!(format!("{err:?}").contains("Revoked"), "{err:?}");
    handshake::connect(dir, &bob_files.cert, &bob_files.key).unwrap();

    let again = revoke_admin(dir, &AdminSelector::Name(alice.name.clone())).unwrap_err();
    assert!(matches!(again, CertsError::AdminAlreadyRevoked(_)), "{again}");
    let unknown = revoke_admin(dir, &AdminSelector::Serial("0abc".into())).unwrap_err();
    assert!(matches!(unknown, CertsError::UnknownAdmin(_)), "{unknown}");

    // By serial, in any case; a later device revocation keeps the admins listed.
    revoke_admin(dir, &AdminSelector::Serial(bob_serial.to_uppercase())).unwrap();
    let ap = device("acme", "ap-1", DeviceKind::Ap);
    let ap_files = issue_device(dir, &ap, &Validity::default(), false).unwrap();
    revoke(dir, &ap.org, &ap.device).unwrap();
    let listed = glimpse_common::certificate::crl_revoked_serials(&der_of(&ca_crl_path(dir))).unwrap();
    let ap_serial = serial_hex_of(&der_of(&ap_files.cert)).unwrap();
    assert_eq!(listed, [ap_serial, admins[0].serial.clone(), admins[1].serial.clone(), bob_serial]);
    assert!(load_admins(dir).unwrap().iter().all(|a| a.revoked_at.is_some()));
}
