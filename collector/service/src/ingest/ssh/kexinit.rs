//! Which key exchange and cipher an SSH session runs, worked out from the
//! client's first bytes: russh does not say what it negotiated, but the
//! choice is fixed by RFC 4253 §7.1 from the client's `SSH_MSG_KEXINIT`
//! (sent in the clear, right after its version line) and our own lists:
//! the first key exchange on the client's list that we offer (the
//! extension markers `ext-info-*` and `kex-strict-*` are not algorithms),
//! and the first client-to-server cipher on its list that we offer.
//!
//! Sans-IO: [`ClientStart`] is fed what the client sent (by the socket
//! wrapper, `kill.rs`), keeps at most the version line and that one packet,
//! and [`ClientStart::negotiated`] parses them. Every length is checked
//! against the bytes present; hostile input gives `None`, never a panic.

/// The longest version line RFC 4253 §4.2 allows, with its CR LF.
const MAX_VERSION_LINE: usize = 255;
/// The largest packet RFC 4253 §6.1 obliges us to take; a KEXINIT fits.
const MAX_PACKET: usize = 35_000;
/// `SSH_MSG_KEXINIT`.
const MSG_KEXINIT: u8 = 20;

/// The start of what an SSH client sent, kept until its KEXINIT is in.
#[derive(Debug, Default)]
pub(crate) struct ClientStart {
    bytes: Vec<u8>,
    /// The version line and the first packet are in (or never will be).
    done: bool,
}

impl ClientStart {
    /// Takes bytes the client sent, in order; cheap once the KEXINIT is in.
    pub(crate) fn feed(&mut self, fresh: &[u8]) {
        if self.done {
            return;
        }
        let room = (MAX_VERSION_LINE + 4 + MAX_PACKET).saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&fresh[..fresh.len().min(room)]);
        match complete_len(&self.bytes) {
            Some(Ok(len)) => {
                self.bytes.truncate(len);
                self.done = true;
            }
            Some(Err(())) => {
                self.bytes = Vec::new();
                self.done = true;
            }
            None if room <= fresh.len() => self.done = true,
            None => {}
        }
    }

    /// The (key exchange, cipher) the session runs, given the lists we
    /// offer; `None` for each that cannot be told.
    pub(crate) fn negotiated<K: AsRef<str>, C: AsRef<str>>(
        &self,
        our_kex: &[K],
        our_ciphers: &[C],
    ) -> (Option<String>, Option<String>) {
        let Some(init) = parse(&self.bytes) else { return (None, None) };
        let first_common = |theirs: &[&str], ours: &[&str]| {
            theirs.iter().find(|t| ours.contains(t) && !is_marker(t)).map(|t| (*t).to_owned())
        };
        let kex: Vec<&str> = our_kex.iter().map(AsRef::as_ref).collect();
        let ciphers: Vec<&str> = our_ciphers.iter().map(AsRef::as_ref).collect();
        (first_common(&init.kex, &kex), first_common(&init.ciphers_client_to_server, &ciphers))
    }
}

/// The extension markers in the key exchange lists, which are not algorithms.
fn is_marker(name: &str) -> bool {
    name.starts_with("ext-info-") || name.starts_with("kex-strict-")
}

/// The client's lists that decide what we report.
#[derive(Debug, PartialEq, Eq)]
struct KexInit<'a> {
    kex: Vec<&'a str>,
    ciphers_client_to_server: Vec<&'a str>,
}

/// Where the version line ends (after its `\n`), if it is in.
fn version_end(bytes: &[u8]) -> Option<Result<usize, ()>> {
    match bytes.iter().take(MAX_VERSION_LINE).position(|&b| b == b'\n') {
        Some(at) if bytes.starts_with(b"SSH-") => Some(Ok(at + 1)),
        Some(_) => Some(Err(())),
        None if bytes.len() >= MAX_VERSION_LINE => Some(Err(())),
        None => None,
    }
}

/// How many bytes the version line and the first packet take: `None`
/// while more are needed, `Err` if they cannot be what a client sends.
fn complete_len(bytes: &[u8]) -> Option<Result<usize, ()>> {
    let start = match version_end(bytes)? {
        Ok(start) => start,
        Err(()) => return Some(Err(())),
    };
    let header = bytes.get(start..start + 4)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if !(5..=MAX_PACKET).contains(&len) {
        return Some(Err(()));
    }
    let end = start + 4 + len;
    (bytes.len() >= end).then_some(Ok(end))
}

/// Reads a `uint32`-length-prefixed name-list off the front of `rest`.
fn name_list<'a>(rest: &mut &'a [u8]) -> Option<Vec<&'a str>> {
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let end = len.checked_add(4)?;
    let list = rest.get(4..end)?;
    *rest = &rest[end..];
    let text = std::str::from_utf8(list).ok()?;
    Some(if text.is_empty() { Vec::new() } else { text.split(',').collect() })
}

/// The KEXINIT after the version line, if `bytes` hold both.
fn parse(bytes: &[u8]) -> Option<KexInit<'_>> {
    let end = complete_len(bytes)?.ok()?;
    let start = version_end(bytes)?.ok()?;
    let packet = bytes.get(start + 4..end)?;
    let padding = usize::from(*packet.first()?);
    let payload = packet.get(1..packet.len().checked_sub(padding)?)?;
    let (&kind, rest) = payload.split_first()?;
    if kind != MSG_KEXINIT {
        return None;
    }
    let mut rest = rest.get(16..)?;
    let kex = name_list(&mut rest)?;
    let _host_keys = name_list(&mut rest)?;
    let ciphers_client_to_server = name_list(&mut rest)?;
    Some(KexInit { kex, ciphers_client_to_server })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str], out: &mut Vec<u8>) {
        let text = names.join(",");
        out.extend_from_slice(&(text.len() as u32).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }

    /// A client's version line and KEXINIT, as OpenSSH lays them out.
    fn client_start(kex: &[&str], ciphers: &[&str]) -> Vec<u8> {
        let mut payload = vec![MSG_KEXINIT];
        payload.extend_from_slice(&[7; 16]);
        list(kex, &mut payload);
        list(&["ssh-ed25519"], &mut payload);
        list(ciphers, &mut payload);
        list(ciphers, &mut payload);
        for _ in 0..6 {
            list(&[], &mut payload);
        }
        payload.extend_from_slice(&[0, 0, 0, 0, 0]);
        let padding = 8 - (payload.len() + 5) % 8 + 4;
        let mut out = b"SSH-2.0-OpenSSH_9.6\r\n".to_vec();
        out.extend_from_slice(&((payload.len() + padding + 1) as u32).to_be_bytes());
        out.push(padding as u8);
        out.extend_from_slice(&payload);
        out.extend(std::iter::repeat_n(0, padding));
        out
    }

    const OUR_KEX: &[&str] = &["mlkem768x25519-sha256", "curve25519-sha256", "ext-info-s"];
    const OUR_CIPHERS: &[&str] = &["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"];

    #[test]
    fn the_clients_first_choice_we_offer_wins_whatever_the_chunks() {
        let bytes = client_start(
            &["sntrup761x25519-sha512", "ext-info-c", "curve25519-sha256", "mlkem768x25519-sha256"],
            &["aes128-ctr", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"],
        );
        for chunk in [1, 7, 64, bytes.len()] {
            let mut start = ClientStart::default();
            for piece in bytes.chunks(chunk) {
                start.feed(piece);
            }
            start.feed(b"encrypted bytes that follow are not kept");
            assert_eq!(start.bytes.len(), bytes.len());
            assert_eq!(
                start.negotiated(OUR_KEX, OUR_CIPHERS),
                (Some("curve25519-sha256".to_owned()), Some("aes256-gcm@openssh.com".to_owned()))
            );
        }
    }

    #[test]
    fn markers_and_unknown_lists_tell_nothing() {
        let mut start = ClientStart::default();
        start.feed(&client_start(&["ext-info-s", "kex-strict-c-v00@openssh.com"], &["aes128-ctr"]));
        assert_eq!(start.negotiated(OUR_KEX, OUR_CIPHERS), (None, None));
        let mut garbage = ClientStart::default();
        garbage.feed(b"GET / HTTP/1.1\r\n\r\n");
        assert!(garbage.done && garbage.bytes.is_empty());
        assert_eq!(garbage.negotiated(OUR_KEX, OUR_CIPHERS), (None, None));
    }

    proptest::proptest! {
        /// Whatever a client sends, in whatever pieces: no panic, bounded memory.
        #[test]
        fn arbitrary_client_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048), cut in 0usize..2048) {
            let mut start = ClientStart::default();
            let cut = cut.min(bytes.len());
            start.feed(&bytes[..cut]);
            start.feed(&bytes[cut..]);
            let _ = start.negotiated(OUR_KEX, OUR_CIPHERS);
            proptest::prop_assert!(start.bytes.len() <= MAX_VERSION_LINE + 4 + MAX_PACKET);
        }

        /// A well-formed KEXINIT with a damaged byte: no panic.
        #[test]
        fn damaged_kexinit(at in 0usize..400, value in proptest::num::u8::ANY) {
            let mut bytes = client_start(&["curve25519-sha256"], &["aes256-gcm@openssh.com"]);
            let at = at % bytes.len();
            bytes[at] = value;
            let mut start = ClientStart::default();
            start.feed(&bytes);
            let _ = start.negotiated(OUR_KEX, OUR_CIPHERS);
        }
    }
}
