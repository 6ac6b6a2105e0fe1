//! The stored form of an organisation's data key versions: the value of its
//! `org_keys` row (in either control store).
//!
//! An organisation starts with one data key, stored as one wrapped key (61
//! bytes, see the module header of [`super`]): that form is still what a
//! new organisation gets, and it reads as version 1, current. The first
//! rotation rewrites the row as a list:
//!
//! ```text
//! [u8 2][u8 flags][61-byte wrapped pseudonym key if flags & 1][u16 n]
//! n × ([u32 version][u8 state: 1 current, 2 retiring, 3 retired][61-byte wrapped key unless retired])
//! ```
//!
//! all integers big-endian, versions strictly increasing, exactly one
//! current (the highest), and a retired version's key gone (destroyed).
//! The pseudonym key is the one pseudonymised identifiers were made with,
//! derived from version 1 and kept here from the first rotation on, so that
//! retiring version 1 leaves pseudonyms stable.
//!
//! Version 1 is wrapped with the associated data it always had
//! (`glimpse-org-key-v1 || org`); version `v > 1` with
//! `glimpse-org-key-v1 || org || ":" || v as u32 big-endian`, so a wrapped
//! key moved to another version does not unwrap.

use super::{WRAPPED_LEN, WRAP_VERSION};

/// Leading byte of the list form (a wrapped key starts with `WRAP_VERSION`, 1).
const LIST_TAG: u8 = 2;
/// Most versions one organisation's list may hold (retired ones included):
/// a rotation a day for most of a year. Bounds what a decoder accepts.
pub const MAX_KEY_VERSIONS: usize = 256;
const FLAG_PSEUDONYM: u8 = 1;

/// The state of one data key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyState {
    /// New segments are written under it. Exactly one version is current.
    Current,
    /// Replaced by a newer version: segments under it are still read, and
    /// re-encrypted under the current version in the background.
    Retiring,
    /// No segment is under it any more; its key is destroyed.
    Retired,
}

impl KeyState {
    /// The name the API and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Current => "current",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }

    fn code(self) -> u8 {
        match self {
            KeyState::Current => 1,
            KeyState::Retiring => 2,
            KeyState::Retired => 3,
        }
    }

    fn from_code(code: u8) -> Option<KeyState> {
        match code {
            1 => Some(KeyState::Current),
            2 => Some(KeyState::Retiring),
            3 => Some(KeyState::Retired),
            _ => None,
        }
    }
}

/// One version in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) version: u32,
    pub(crate) state: KeyState,
    /// The wrapped key; `None` exactly when retired.
    pub(crate) wrapped: Option<Vec<u8>>,
}

/// An organisation's data key versions, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyList {
    /// The wrapped pseudonym key; `None` until the first rotation (it is
    /// then derived from version 1).
    pub(crate) pseudonym: Option<Vec<u8>>,
    pub(crate) entries: Vec<Entry>,
}

impl KeyList {
    /// The list of a store that has only ever had `wrapped`: version 1.
    pub(crate) fn single(wrapped: Vec<u8>) -> KeyList {
        KeyList {
            pseudonym: None,
            entries: vec![Entry { version: 1, state: KeyState::Current, wrapped: Some(wrapped) }],
        }
    }

    /// Decodes a stored row: the single-key form or the list form. Never
    /// panics; anything malformed is an error naming what.
    pub(crate) fn decode(bytes: &[u8]) -> Result<KeyList, String> {
        match bytes.first() {
            Some(&WRAP_VERSION) if bytes.len() == WRAPPED_LEN => return Ok(KeyList::single(bytes.to_vec())),
            Some(&LIST_TAG) => {}
            _ => return Err(format!("not a data key row ({} bytes)", bytes.len())),
        }
        let mut rest = &bytes[1..];
        let mut take = |n: usize| -> Result<&[u8], String> {
            if rest.len() < n {
                return Err("data key list is truncated".into());
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let flags = take(1)?[0];
        if flags & !FLAG_PSEUDONYM != 0 {
            return Err(format!("data key list has unknown flags {flags:#04x}"));
        }
        let pseudonym = if flags & FLAG_PSEUDONYM != 0 { Some(take(WRAPPED_LEN)?.to_vec()) } else { None };
        let n = usize::from(u16::from_be_bytes([take(1)?[0], take(1)?[0]]));
        if n == 0 || n > MAX_KEY_VERSIONS {
            return Err(format!("data key list holds {n} versions (1..={MAX_KEY_VERSIONS} allowed)"));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let v = take(4)?;
            let version = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
            let code = take(1)?[0];
            let state =
                KeyState::from_code(code).ok_or_else(|| format!("data key version {version} has state {code}"))?;
            let wrapped = if state == KeyState::Retired { None } else { Some(take(WRAPPED_LEN)?.to_vec()) };
            entries.push(Entry { version, state, wrapped });
        }
        if !rest.is_empty() {
            return Err(format!("data key list has {} bytes after its last version", rest.len()));
        }
        let list = KeyList { pseudonym, entries };
        list.check()?;
        Ok(list)
    }

    /// The stored form: the single-key form while that says everything, so
    /// a store that never rotated keeps the row earlier releases wrote.
    pub(crate) fn encode(&self) -> Vec<u8> {
        if let ([only], None) = (self.entries.as_slice(), &self.pseudonym) {
            if only.version == 1 && only.state == KeyState::Current {
                if let Some(wrapped) = &only.wrapped {
                    return wrapped.clone();
                }
            }
        }
        let mut out = Vec::with_capacity(4 + WRAPPED_LEN * (self.entries.len() + 1) + 5 * self.entries.len());
        out.push(LIST_TAG);
        match &self.pseudonym {
            Some(p) => {
                out.push(FLAG_PSEUDONYM);
                out.extend_from_slice(p);
            }
            None => out.push(0),
        }
        // At most MAX_KEY_VERSIONS entries (checked by every change), so it fits.
        out.extend_from_slice(&(self.entries.len() as u16).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.version.to_be_bytes());
            out.push(e.state.code());
            if let Some(w) = &e.wrapped {
                out.extend_from_slice(w);
            }
        }
        out
    }

    /// The rules every list keeps (see the module header).
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.entries.is_empty() || self.entries.len() > MAX_KEY_VERSIONS {
            return Err(format!("data key list holds {} versions", self.entries.len()));
        }
        if self.pseudonym.as_ref().is_some_and(|p| p.len() != WRAPPED_LEN) {
            return Err("data key list's pseudonym key is malformed".into());
        }
        for pair in self.entries.windows(2) {
            if pair[0].version >= pair[1].version {
                return Err(format!("data key versions {} and {} are out of order", pair[0].version, pair[1].version));
            }
        }
        for e in &self.entries {
            if e.version == 0 {
                return Err("data key version 0".into());
            }
            if (e.state == KeyState::Retired) != e.wrapped.is_none() {
                return Err(format!(
                    "data key version {} is {} but its key is not as that says",
                    e.version,
                    e.state.as_str()
                ));
            }
            if e.wrapped.as_ref().is_some_and(|w| w.len() != WRAPPED_LEN) {
                return Err(format!("data key version {} is malformed", e.version));
            }
        }
        let current: Vec<_> = self.entries.iter().filter(|e| e.state == KeyState::Current).collect();
        match current.as_slice() {
            [one] if one.version == self.entries[self.entries.len() - 1].version => {}
            _ => return Err("data key list must have exactly one current version, its newest".into()),
        }
        if self.pseudonym.is_none() && !(self.entries[0].version == 1 && self.entries[0].wrapped.is_some()) {
            return Err("data key list lacks its pseudonym key".into());
        }
        Ok(())
    }

    /// The current version.
    pub(crate) fn current(&self) -> u32 {
        self.entries.iter().find(|e| e.state == KeyState::Current).map_or(0, |e| e.version)
    }

    /// The version's entry.
    pub(crate) fn entry(&self, version: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.version == version)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn wrapped(byte: u8) -> Vec<u8> {
        let mut w = vec![byte; WRAPPED_LEN];
        w[0] = WRAP_VERSION;
        w
    }

    fn rotated() -> KeyList {
        KeyList {
            pseudonym: Some(wrapped(9)),
            entries: vec![
                Entry { version: 1, state: KeyState::Retired, wrapped: None },
                Entry { version: 2, state: KeyState::Retiring, wrapped: Some(wrapped(2)) },
                Entry { version: 3, state: KeyState::Current, wrapped: Some(wrapped(3)) },
            ],
        }
    }

    #[test]
    fn a_single_key_row_is_version_one_and_stays_in_its_form() {
        let row = wrapped(7);
        let list = KeyList::decode(&row).unwrap();
        assert_eq!(list, KeyList::single(row.clone()));
        assert_eq!(list.current(), 1);
        assert_eq!(list.encode(), row, "a store that never rotated keeps the row earlier releases read");
    }

    #[test]
    fn a_list_round_trips_and_its_rules_hold() {
        let list = rotated();
        let bytes = list.encode();
        assert_eq!(bytes[0], LIST_TAG);
        assert_eq!(KeyList::decode(&bytes).unwrap(), list);
        assert_eq!(list.current(), 3);

        let mut two_current = rotated();
        two_current.entries[1].state = KeyState::Current;
        assert!(KeyList::decode(&two_current.encode()).is_err());
        let mut old_current = rotated();
        old_current.entries[2].state = KeyState::Retiring;
        old_current.entries[1].state = KeyState::Current;
        assert!(KeyList::decode(&old_current.encode()).is_err());
        let mut no_pseudonym = rotated();
        no_pseudonym.pseudonym = None;
        assert!(KeyList::decode(&no_pseudonym.encode()).unwrap_err().contains("pseudonym"));
        let mut trailing = rotated().encode();
        trailing.push(0);
        assert!(KeyList::decode(&trailing).unwrap_err().contains("after its last"));
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = KeyList::decode(&bytes);
        }

        #[test]
        fn damaged_lists_never_panic_and_whatever_decodes_keeps_the_rules(
            at in 0usize..300, byte in any::<u8>(), cut in 0usize..300,
        ) {
            let mut bytes = rotated().encode();
            let at = at % bytes.len();
            bytes[at] = byte;
            bytes.truncate(bytes.len() - cut % bytes.len());
            if let Ok(list) = KeyList::decode(&bytes) {
                prop_assert!(list.check().is_ok());
            }
        }
    }
}
