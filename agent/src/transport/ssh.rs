//! The SSH path to the collector, for switches and gateways: public-key
//! login as `<org>/<device>`, the collector's host key pinned by its
//! SHA-256 fingerprint (as a `known_hosts` line would pin it), and the
//! `glimpse` subsystem carrying the framed protocol.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use russh::client::{self, Msg};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{cipher, compression, kex, mac, ChannelMsg, ChannelStream, Preferred};
use zeroize::Zeroizing;

use crate::config::SshSettings;
use crate::transport::TransportError;

/// The subsystem the collector serves the protocol on.
pub const SUBSYSTEM: &str = "glimpse";

/// Largest private key file read. An OpenSSH ECDSA P-384 key is under 1 KiB.
const MAX_KEY_BYTES: u64 = 16 * 1024;

/// A device's loaded SSH credentials.
#[derive(Clone)]
pub struct SshCredentials {
    key: Arc<PrivateKey>,
    host_key_fingerprint: String,
    user: String,
    prefer_chacha: bool,
}

impl std::fmt::Debug for SshCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshCredentials")
            .field("user", &self.user)
            .field("host_key_fingerprint", &self.host_key_fingerprint)
            .finish_non_exhaustive()
    }
}

impl SshCredentials {
    /// Reads the device's private key (unencrypted OpenSSH format).
    pub fn load(settings: &SshSettings, prefer_chacha: bool) -> Result<Self, TransportError> {
        use std::io::Read;
        let path = &settings.key_path;
        let bad = |reason: String| TransportError::SshKey { path: path.clone(), reason };
        let mut text = Zeroizing::new(Vec::new());
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        glimpse_files::check_secret(path, &file.metadata().map_err(|e| bad(e.to_string()))?, "SSH private key")?;
        file.take(MAX_KEY_BYTES + 1).read_to_end(&mut text).map_err(|e| bad(e.to_string()))?;
        if text.len() as u64 > MAX_KEY_BYTES {
            return Err(bad(format!("larger than {MAX_KEY_BYTES} bytes; not an SSH key")));
        }
        let key = PrivateKey::from_openssh(&*text).map_err(|e| bad(format!("not an OpenSSH private key: {e}")))?;
        if key.is_encrypted() {
            return Err(bad("encrypted with a passphrase; a daemon cannot type it".into()));
        }
        Ok(Self {
            key: Arc::new(key),
            host_key_fingerprint: settings.host_key_fingerprint.clone(),
            user: settings.user.clone(),
            prefer_chacha,
        })
    }
}

/// Checks the collector's host key against the pinned fingerprint and
/// remembers what was presented, for the error message.
struct PinnedHostKey {
    expected: String,
    presented: Arc<Mutex<Option<String>>>,
}

impl client::Handler for PinnedHostKey {
    type Error = russh::Error;

    async fn check_server_key(&mut self, server_public_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let presented = server_public_key.public_key().fingerprint(HashAlg::Sha256).to_string();
        let matches = presented == self.expected;
        *self.presented.lock().unwrap_or_else(|p| p.into_inner()) = Some(presented);
        Ok(matches)
    }
}

fn preferred(prefer_chacha: bool) -> Preferred {
    const CHACHA_FIRST: &[cipher::Name] = &[cipher::CHACHA20_POLY1305, cipher::AES_256_GCM, cipher::AES_128_GCM];
    const AES_FIRST: &[cipher::Name] = &[cipher::AES_256_GCM, cipher::AES_128_GCM, cipher::CHACHA20_POLY1305];
    Preferred {
        kex: Cow::Borrowed(&[
            kex::MLKEM768X25519_SHA256,
            kex::CURVE25519,
            kex::CURVE25519_PRE_RFC_8731,
            kex::EXTENSION_SUPPORT_AS_CLIENT,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
        ]),
        key: Cow::Borrowed(&[Algorithm::Ed25519]),
        cipher: Cow::Borrowed(if prefer_chacha { CHACHA_FIRST } else { AES_FIRST }),
        mac: Cow::Borrowed(&[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM]),
        compression: Cow::Borrowed(&[compression::NONE]),
        ..Preferred::DEFAULT
    }
}

/// Checks the host key over `tcp`, logs in and starts the subsystem. Every
/// collector of the service must present the one pinned host key.
pub async fn connect(
    tcp: tokio::net::TcpStream,
    credentials: &SshCredentials,
) -> Result<(ChannelStream<Msg>, Box<dyn std::any::Any + Send + Sync>), TransportError> {
    let ssh_config = Arc::new(client::Config {
        preferred: preferred(credentials.prefer_chacha),
        nodelay: true,
        ..client::Config::default()
    });
    let presented = Arc::new(Mutex::new(None));
    let handler =
        PinnedHostKey { expected: credentials.host_key_fingerprint.clone(), presented: Arc::clone(&presented) };
    let mut session = match client::connect_stream(ssh_config, tcp, handler).await {
        Ok(session) => session,
        Err(e) => {
            let presented = presented.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err(match presented {
                Some(presented) if presented != credentials.host_key_fingerprint => {
                    TransportError::HostKeyMismatch { expected: credentials.host_key_fingerprint.clone(), presented }
                }
                _ => TransportError::Ssh(e.to_string()),
            });
        }
    };
    let auth = session
        .authenticate_publickey(
            credentials.user.clone(),
            PrivateKeyWithHashAlg::new(Arc::clone(&credentials.key), None),
        )
        .await
        .map_err(|e| TransportError::Ssh(e.to_string()))?;
    if !auth.success() {
        return Err(TransportError::SshLoginRefused {
            user: credentials.user.clone(),
            fingerprint: credentials.key.public_key().fingerprint(HashAlg::Sha256).to_string(),
        });
    }
    let mut channel = session.channel_open_session().await.map_err(|e| TransportError::Ssh(e.to_string()))?;
    channel.request_subsystem(true, SUBSYSTEM).await.map_err(|e| TransportError::Ssh(e.to_string()))?;
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => break,
            Some(ChannelMsg::Failure) | None => {
                return Err(TransportError::Ssh(format!("the collector refused the {SUBSYSTEM} subsystem")))
            }
            Some(_) => {}
        }
    }
    Ok((channel.into_stream(), Box::new(session)))
}
