//! The segment file format: header, block framing, sealing and a reader
//! that survives any bytes. See the module header of [`crate::store`].

use std::io;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use glimpse_common::secret::SecretKey;

use crate::keys::{OrgKey, TAG_LEN};

/// First eight bytes of every segment file.
pub(crate) const MAGIC: [u8; 8] = *b"GLSEG\0\0\x01";
/// The segment format version this code writes. Version 2 added the batch
/// origin in front of each block's records (see `store::block`); version 3
/// the data key version the segment is sealed under (after the kind name;
/// earlier versions are sealed under version 1), blocks as in version 2.
pub(crate) const FORMAT_VERSION: u16 = 3;
/// Oldest segment format version this code still reads.
pub(crate) const OLDEST_READABLE_VERSION: u16 = 1;
/// Largest ciphertext (plaintext + tag) one block may have. Bounds what a
/// reader allocates whatever a length field says.
pub const MAX_BLOCK_LEN: u32 = 8 * 1024 * 1024;
/// Largest plaintext the writer puts in one block.
pub(crate) const MAX_PLAINTEXT_LEN: usize = MAX_BLOCK_LEN as usize - TAG_LEN;
/// A segment is closed and a new one started once it reaches this size.
pub const SEGMENT_ROLL_BYTES: u64 = 64 * 1024 * 1024;
/// Highest block index: the nonce holds it in 32 bits.
pub(crate) const MAX_BLOCK_INDEX: u64 = u32::MAX as u64;
/// `[u32 ciphertext length][u64 block index]`.
pub(crate) const FRAME_HEADER_LEN: u64 = 12;
/// Fixed part of the header: magic, version, segment id, day.
const HEADER_FIXED_LEN: usize = 8 + 2 + 8 + 8;
/// Longest kind name a header may carry.
const MAX_KIND_LEN: usize = 32;
/// Domain separation for block associated data.
const BLOCK_AAD_LABEL: &[u8] = b"glimpse-segment-block-v1";
/// How far past the expected block index a resynchronising scan looks.
const RESYNC_INDEX_WINDOW: u64 = 1 << 16;
/// Bytes read at a time while resynchronising.
const SCAN_CHUNK: usize = 64 * 1024;

/// Where a segment belongs: what its directory path says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentPlace {
    pub(crate) org: OrgId,
    pub(crate) kind: DataKind,
    pub(crate) day: i64,
}

/// Encodes a segment header for data key version 1 (tests).
#[cfg(test)]
pub(crate) fn encode_header(place: &SegmentPlace, segment_id: u64) -> Vec<u8> {
    encode_header_for(place, segment_id, 1)
}

/// Encodes a segment header as format `version` < 3 wrote it (no data key
/// version: sealed under version 1), for tests of old segments.
#[cfg(test)]
pub(crate) fn encode_legacy_header(version: u16, place: &SegmentPlace, segment_id: u64) -> Vec<u8> {
    let mut out = encode_header_for(place, segment_id, 1);
    out.truncate(out.len() - 4);
    out[8..10].copy_from_slice(&version.to_be_bytes());
    out
}

/// Encodes a segment header for a segment sealed under data key version
/// `key_version`.
pub(crate) fn encode_header_for(place: &SegmentPlace, segment_id: u64, key_version: u32) -> Vec<u8> {
    let org = place.org.as_str().as_bytes();
    let kind = place.kind.as_str().as_bytes();
    let mut out = Vec::with_capacity(HEADER_FIXED_LEN + 2 + org.len() + kind.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&segment_id.to_be_bytes());
    out.extend_from_slice(&place.day.to_be_bytes());
    // Names are at most 64 bytes (OrgId) and a handful (kind), so they fit a u8.
    out.push(org.len() as u8);
    out.extend_from_slice(org);
    out.push(kind.len() as u8);
    out.extend_from_slice(kind);
    out.extend_from_slice(&key_version.to_be_bytes());
    out
}

/// Associated data of a block: binds it to its organisation, kind, day,
/// segment and position.
fn block_aad(version: u16, place: &SegmentPlace, segment_id: u64, index: u64) -> Vec<u8> {
    let org = place.org.as_str().as_bytes();
    let kind = place.kind.as_str().as_bytes();
    let mut aad = Vec::with_capacity(BLOCK_AAD_LABEL.len() + 30 + org.len() + kind.len());
    aad.extend_from_slice(BLOCK_AAD_LABEL);
    aad.extend_from_slice(&version.to_be_bytes());
    aad.push(org.len() as u8);
    aad.extend_from_slice(org);
    aad.push(kind.len() as u8);
    aad.extend_from_slice(kind);
    aad.extend_from_slice(&place.day.to_be_bytes());
    aad.extend_from_slice(&segment_id.to_be_bytes());
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

/// The 96-bit nonce: segment id || 32-bit block index. Unique per key as
/// long as segment ids are (random 64-bit) and indices stay below 2^32.
fn block_nonce(segment_id: u64, index: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&segment_id.to_be_bytes());
    // Callers never pass an index above MAX_BLOCK_INDEX (writer rolls, reader
    // rejects), so the truncation is exact.
    nonce[8..].copy_from_slice(&(index as u32).to_be_bytes());
    nonce
}

fn cipher(key: &SecretKey) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.expose()))
}

/// Seals `plaintext` as block `index` and returns the complete frame
/// (length, index, ciphertext and tag), ready to append.
pub(crate) fn seal_block(
    key: &SecretKey,
    place: &SegmentPlace,
    segment_id: u64,
    index: u64,
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    seal_block_in_format(FORMAT_VERSION, key, place, segment_id, index, plaintext)
}

/// [`seal_block`] for a segment of format `version`: tests use it to make
/// segments as older versions wrote them.
pub(crate) fn seal_block_in_format(
    version: u16,
    key: &SecretKey,
    place: &SegmentPlace,
    segment_id: u64,
    index: u64,
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    if index > MAX_BLOCK_INDEX || plaintext.len() > MAX_PLAINTEXT_LEN {
        return None;
    }
    let len = u32::try_from(plaintext.len() + TAG_LEN).ok()?;
    let header = FRAME_HEADER_LEN as usize;
    // One buffer, sized once: the frame header, then the plaintext sealed
    // where it lies, then the tag.
    let mut frame = Vec::with_capacity(header + plaintext.len() + TAG_LEN);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&index.to_be_bytes());
    frame.extend_from_slice(plaintext);
    // ring's AES-GCM rather than the `aes-gcm` crate's on the write path:
    // the same cipher (readers open either), four to five times faster
    // here (docs/PERFORMANCE.md), which matters at millions of records a
    // second. Its key schedule lives on this stack frame for one block.
    let sealing =
        ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key.expose()).ok()?);
    let tag = sealing
        .seal_in_place_separate_tag(
            ring::aead::Nonce::assume_unique_for_key(block_nonce(segment_id, index)),
            ring::aead::Aad::from(block_aad(version, place, segment_id, index)),
            frame.get_mut(header..)?,
        )
        .ok()?;
    frame.extend_from_slice(tag.as_ref());
    Some(frame)
}

/// A segment built in memory, in exactly the format of a segment file
/// (the header, then sealed blocks; see the module header of
/// [`crate::store`]), for segment stores outside this crate that write a
/// segment whole (an object store uploads each as one object). Readers,
/// the catalog check, erasure and export then treat it like a file.
#[derive(Debug)]
pub struct SegmentBuilder {
    place: SegmentPlace,
    segment_id: u64,
    key_version: u32,
    bytes: Vec<u8>,
    blocks: u64,
}

impl SegmentBuilder {
    /// A segment of `org`'s `kind` received on UTC `day`, sealed under
    /// the current version of `key`, holding only its header, with a
    /// fresh random segment id: the id is half of every block's nonce, so
    /// each segment must draw its own.
    pub fn new(org: &OrgId, kind: DataKind, day: i64, key: &OrgKey) -> Result<SegmentBuilder, super::SegmentError> {
        let segment_id = super::writer::random_segment_id()?;
        Ok(SegmentBuilder::with_segment_id(org, kind, day, segment_id, key))
    }

    /// A new segment with the id `segment_id`, which the caller drew at
    /// random (a compaction draws it above another's, so that names sort as
    /// it needs): an id must never repeat under one organisation's key, as
    /// it is half of every block's nonce.
    pub fn with_segment_id(org: &OrgId, kind: DataKind, day: i64, segment_id: u64, key: &OrgKey) -> SegmentBuilder {
        let place = SegmentPlace { org: org.clone(), kind, day };
        let key_version = key.version();
        let bytes = encode_header_for(&place, segment_id, key_version);
        SegmentBuilder { place, segment_id, key_version, bytes, blocks: 0 }
    }

    /// The data key version it is sealed under: an appender starts a new
    /// segment once the organisation's current version differs.
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// The segment's random id (segment names carry it).
    pub fn segment_id(&self) -> u64 {
        self.segment_id
    }

    /// Bytes so far, header included.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether it holds no block yet.
    pub fn is_empty(&self) -> bool {
        self.blocks == 0
    }

    /// Blocks sealed so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Whether another block may be sealed: block indices must stay within
    /// the nonce's 32 bits.
    pub fn has_room(&self) -> bool {
        self.blocks <= MAX_BLOCK_INDEX
    }

    /// Seals `plaintext` (a block plaintext as [`super::BlockRun`] carries
    /// it) with the version of the organisation's `key` the segment is
    /// under as the next block and appends its frame. Returns the frame's
    /// length.
    pub fn seal(&mut self, key: &OrgKey, plaintext: &[u8]) -> Result<u64, super::SegmentError> {
        let secret = key
            .secret_of(self.key_version)
            .ok_or(super::SegmentError::KeyVersion { org: self.place.org.clone(), version: self.key_version })?;
        let frame = seal_block(secret, &self.place, self.segment_id, self.blocks, plaintext)
            .ok_or(super::SegmentError::BlockTooLarge { len: plaintext.len() })?;
        self.bytes.extend_from_slice(&frame);
        self.blocks += 1;
        Ok(frame.len() as u64)
    }

    /// The segment's bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The segment's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The data key version a segment's header says it is sealed under, read
/// without a key (format versions before 3: version 1); `None` if the
/// header does not read.
pub(crate) fn header_key_version<R: ReadAt + ?Sized>(src: &R) -> Option<u32> {
    let mut fixed = [0u8; HEADER_FIXED_LEN];
    src.read_exact_at(&mut fixed, 0).ok()?;
    if fixed[..8] != MAGIC {
        return None;
    }
    let version = u16::from_be_bytes([fixed[8], fixed[9]]);
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return None;
    }
    if version < 3 {
        return Some(1);
    }
    let mut pos = HEADER_FIXED_LEN as u64;
    for _ in 0..2 {
        let mut len = [0u8; 1];
        src.read_exact_at(&mut len, pos).ok()?;
        pos += 1 + u64::from(len[0]);
    }
    let mut kv = [0u8; 4];
    src.read_exact_at(&mut kv, pos).ok()?;
    Some(u32::from_be_bytes(kv))
}

/// Positional reads: the small I/O seam that lets the reader run over a
/// file or, in tests, over arbitrary bytes.
/// The UTC day a segment's header says it holds, read without a key;
/// `None` if the header is not a segment header.
pub(crate) fn header_day<R: ReadAt + ?Sized>(src: &R) -> Option<i64> {
    let mut fixed = [0u8; HEADER_FIXED_LEN];
    src.read_exact_at(&mut fixed, 0).ok()?;
    if fixed[..8] != MAGIC {
        return None;
    }
    let mut day = [0u8; 8];
    day.copy_from_slice(&fixed[18..26]);
    Some(i64::from_be_bytes(day))
}

pub(crate) trait ReadAt {
    /// Bytes available.
    fn size(&self) -> u64;
    /// Fills `buf` from `pos`; fails if that runs past [`ReadAt::size`].
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let start = usize::try_from(pos).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start.checked_add(buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = self.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Something wrong in a segment, at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Defect {
    pub(crate) offset: u64,
    pub(crate) what: String,
}

/// What [`SegmentReader::frame_at`] found.
enum Frame {
    /// Fewer bytes remain than the frame needs.
    Torn,
    /// A length or index no writer produces.
    Invalid(String),
    /// A structurally valid frame (not yet authenticated).
    Block { index: u64, ciphertext: Vec<u8>, next: u64 },
}

/// Reads one segment: validates its header against where it was found,
/// then authenticates and yields blocks in order, reporting and skipping
/// anything that does not authenticate. Never panics, and never allocates
/// more than [`MAX_BLOCK_LEN`] for one buffer.
pub(crate) struct SegmentReader<'a, S: ReadAt + ?Sized> {
    src: &'a S,
    place: SegmentPlace,
    cipher: Aes256Gcm,
    version: u16,
    segment_id: u64,
    body_start: u64,
    /// A scan from here found nothing; later scans from further on would
    /// not either. Keeps a segment of many bad blocks linear to read.
    barren_from: Option<u64>,
    /// Largest buffer allocated so far, so tests can check the bound.
    pub(crate) largest_alloc: usize,
}

impl<'a, S: ReadAt + ?Sized> SegmentReader<'a, S> {
    /// Checks the header and picks the version of `keys` it names. `place`
    /// comes from the file's path, never from the header, so a segment
    /// moved elsewhere is refused.
    pub(crate) fn open(src: &'a S, place: &SegmentPlace, keys: &OrgKey) -> Result<Self, Defect> {
        let bad = |offset: u64, what: String| Defect { offset, what };
        let mut fixed = [0u8; HEADER_FIXED_LEN];
        src.read_exact_at(&mut fixed, 0)
            .map_err(|_| bad(0, format!("segment header is truncated ({} bytes long)", src.size())))?;
        if fixed[..8] != MAGIC {
            return Err(bad(0, "not a glimpse segment (bad magic)".into()));
        }
        let version = u16::from_be_bytes([fixed[8], fixed[9]]);
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(bad(8, format!("unsupported segment format version {version}")));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&fixed[10..18]);
        let segment_id = u64::from_be_bytes(id);
        let mut day = [0u8; 8];
        day.copy_from_slice(&fixed[18..26]);
        let day = i64::from_be_bytes(day);

        let mut pos = HEADER_FIXED_LEN as u64;
        let mut read_name = |max: usize, what: &str| -> Result<Vec<u8>, Defect> {
            let mut len = [0u8; 1];
            src.read_exact_at(&mut len, pos).map_err(|_| bad(pos, "segment header is truncated".into()))?;
            let len = usize::from(len[0]);
            if len == 0 || len > max {
                return Err(bad(pos, format!("segment header {what} length {len} is invalid")));
            }
            let mut name = vec![0u8; len];
            src.read_exact_at(&mut name, pos + 1).map_err(|_| bad(pos, "segment header is truncated".into()))?;
            pos += 1 + len as u64;
            Ok(name)
        };
        let org = read_name(glimpse_common::identity::MAX_NAME_LEN, "organisation")?;
        let kind = read_name(MAX_KIND_LEN, "kind")?;
        if org != place.org.as_str().as_bytes() || kind != place.kind.as_str().as_bytes() || day != place.day {
            return Err(bad(
                0,
                format!(
                    "segment header says organisation {:?}, kind {:?}, day {} but the file is \
                     stored under {}/{}/{}: refusing a moved segment",
                    String::from_utf8_lossy(&org),
                    String::from_utf8_lossy(&kind),
                    day,
                    place.org,
                    place.kind,
                    place.day
                ),
            ));
        }
        let key_version = if version >= 3 {
            let mut kv = [0u8; 4];
            src.read_exact_at(&mut kv, pos).map_err(|_| bad(pos, "segment header is truncated".into()))?;
            pos += 4;
            u32::from_be_bytes(kv)
        } else {
            1
        };
        let key = keys.secret_of(key_version).ok_or_else(|| {
            bad(
                pos - 4,
                format!(
                    "segment is sealed under data key version {key_version} of {}, which is retired or unknown; not served",
                    place.org
                ),
            )
        })?;
        Ok(SegmentReader {
            src,
            place: place.clone(),
            cipher: cipher(key),
            version,
            segment_id,
            body_start: pos,
            barren_from: None,
            largest_alloc: HEADER_FIXED_LEN,
        })
    }

    /// The format version the segment's header declares; it decides how
    /// block plaintexts decode.
    pub(crate) fn version(&self) -> u16 {
        self.version
    }

    /// The segment's random id.
    pub(crate) fn segment_id(&self) -> u64 {
        self.segment_id
    }

    fn frame_at(&mut self, pos: u64) -> Frame {
        let size = self.src.size();
        if size.saturating_sub(pos) < FRAME_HEADER_LEN {
            return Frame::Torn;
        }
        let mut head = [0u8; FRAME_HEADER_LEN as usize];
        if self.src.read_exact_at(&mut head, pos).is_err() {
            return Frame::Torn;
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let mut index = [0u8; 8];
        index.copy_from_slice(&head[4..]);
        let index = u64::from_be_bytes(index);
        if len <= TAG_LEN as u32 || len > MAX_BLOCK_LEN {
            return Frame::Invalid(format!("block length {len} is outside {}..={MAX_BLOCK_LEN}", TAG_LEN + 1));
        }
        if index > MAX_BLOCK_INDEX {
            return Frame::Invalid(format!("block index {index} is out of range"));
        }
        let start = pos + FRAME_HEADER_LEN;
        let next = start + u64::from(len);
        if next > size {
            // Checked before allocating: a length is only trusted as far as
            // the bytes actually there.
            return Frame::Torn;
        }
        let mut ciphertext = vec![0u8; len as usize];
        self.largest_alloc = self.largest_alloc.max(ciphertext.len());
        if self.src.read_exact_at(&mut ciphertext, start).is_err() {
            return Frame::Torn;
        }
        Frame::Block { index, ciphertext, next }
    }

    fn open_block(&self, index: u64, ciphertext: &[u8]) -> Option<Vec<u8>> {
        self.cipher
            .decrypt(
                Nonce::from_slice(&block_nonce(self.segment_id, index)),
                Payload { msg: ciphertext, aad: &block_aad(self.version, &self.place, self.segment_id, index) },
            )
            .ok()
    }

    /// Whether a block starting at `pos` authenticates (any index in
    /// `min_index..min_index + RESYNC_INDEX_WINDOW`).
    fn authentic_at(&mut self, pos: u64, min_index: u64) -> bool {
        match self.frame_at(pos) {
            Frame::Block { index, ciphertext, .. }
                if (min_index..min_index.saturating_add(RESYNC_INDEX_WINDOW)).contains(&index) =>
            {
                self.open_block(index, &ciphertext).is_some()
            }
            _ => false,
        }
    }

    /// Finds the next authentic block at or after `from`, looking for frame
    /// headers whose index is plausible; GCM confirms each candidate, so
    /// ciphertext that happens to look like a header is never served.
    fn resync(&mut self, from: u64, min_index: u64) -> Option<u64> {
        if self.barren_from.is_some_and(|barren| from >= barren) {
            return None;
        }
        let found = self.scan(from, min_index);
        if found.is_none() {
            self.barren_from = Some(from);
        }
        found
    }

    fn scan(&mut self, from: u64, min_index: u64) -> Option<u64> {
        let size = self.src.size();
        let hi = min_index.saturating_add(RESYNC_INDEX_WINDOW);
        let mut chunk_start = from;
        while chunk_start.saturating_add(FRAME_HEADER_LEN) <= size {
            // Overlap chunks by a frame header so none straddles a boundary.
            let chunk_len = (size - chunk_start).min(SCAN_CHUNK as u64) as usize;
            let mut chunk = vec![0u8; chunk_len];
            self.largest_alloc = self.largest_alloc.max(chunk_len);
            self.src.read_exact_at(&mut chunk, chunk_start).ok()?;
            let last = chunk_len.saturating_sub(FRAME_HEADER_LEN as usize);
            for offset in 0..=last {
                let Some(head) = chunk.get(offset..offset + FRAME_HEADER_LEN as usize) else {
                    break;
                };
                let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                let mut index = [0u8; 8];
                index.copy_from_slice(&head[4..]);
                let index = u64::from_be_bytes(index);
                if len > TAG_LEN as u32
                    && len <= MAX_BLOCK_LEN
                    && (min_index..hi).contains(&index)
                    && self.authentic_at(chunk_start + offset as u64, min_index)
                {
                    return Some(chunk_start + offset as u64);
                }
            }
            if chunk_start + chunk_len as u64 >= size {
                break;
            }
            chunk_start += (last + 1) as u64;
        }
        None
    }

    /// Where a tail cut short by an interrupted write begins, if the
    /// segment ends in one: every block before it authenticates in order,
    /// and what follows is less than a whole frame. `None` for a segment
    /// that ends cleanly, and for any other damage, which is left for
    /// readers to report rather than cut away.
    pub(crate) fn torn_tail(&mut self) -> Option<u64> {
        let mut pos = self.body_start;
        let mut expected = 0u64;
        while pos < self.src.size() {
            match self.frame_at(pos) {
                Frame::Torn => return Some(pos),
                Frame::Invalid(_) => return None,
                Frame::Block { index, ciphertext, next } => {
                    if index != expected || self.open_block(index, &ciphertext).is_none() {
                        return None;
                    }
                    expected += 1;
                    pos = next;
                }
            }
        }
        None
    }

    /// Reads every block, emitting `Ok((offset, plaintext))` for each that
    /// authenticates, in order, and `Err(defect)` for everything else.
    pub(crate) fn read_blocks(&mut self, mut emit: impl FnMut(Result<(u64, Vec<u8>), Defect>)) {
        let size = self.src.size();
        let mut pos = self.body_start;
        let mut expected: u64 = 0;
        while pos < size {
            match self.frame_at(pos) {
                Frame::Torn => {
                    // A torn tail, or a corrupted length that points past the
                    // end: only a scan can tell them apart.
                    match self.resync(pos + 1, expected) {
                        Some(found) => {
                            emit(Err(Defect {
                                offset: pos,
                                what: format!("corrupted block header; skipped {} bytes", found - pos),
                            }));
                            pos = found;
                        }
                        None => {
                            emit(Err(Defect {
                                offset: pos,
                                what: format!(
                                    "torn tail: the last {} bytes are not a whole block \
                                     (interrupted write?)",
                                    size - pos
                                ),
                            }));
                            return;
                        }
                    }
                }
                Frame::Invalid(why) => match self.resync(pos + 1, expected) {
                    Some(found) => {
                        emit(Err(Defect { offset: pos, what: format!("{why}; skipped {} bytes", found - pos) }));
                        pos = found;
                    }
                    None => {
                        emit(Err(Defect {
                            offset: pos,
                            what: format!("{why}; no readable block in the remaining {} bytes", size - pos),
                        }));
                        return;
                    }
                },
                Frame::Block { index, ciphertext, next } => match self.open_block(index, &ciphertext) {
                    Some(plain) => {
                        if index < expected {
                            emit(Err(Defect {
                                offset: pos,
                                what: format!(
                                    "block {index} repeats an earlier block (expected {expected} \
                                     or later); not served"
                                ),
                            }));
                        } else {
                            if index > expected {
                                emit(Err(Defect {
                                    offset: pos,
                                    what: format!("blocks {expected}..{index} are missing before this one"),
                                }));
                            }
                            expected = index + 1;
                            emit(Ok((pos, plain)));
                        }
                        pos = next;
                    }
                    None => {
                        emit(Err(Defect {
                            offset: pos,
                            what: "block failed authentication (corrupted, or copied from another \
                                   segment, organisation, kind or day); not served"
                                .into(),
                        }));
                        // The failed block most likely held the expected
                        // index; trust its framing only if what follows
                        // authenticates, otherwise scan.
                        let after = expected.saturating_add(1);
                        if next == size || self.authentic_at(next, after) {
                            expected = after;
                            pos = next;
                        } else if let Some(found) = self.resync(pos + 1, after) {
                            expected = after;
                            pos = found;
                        } else if next < size {
                            // Nothing readable follows; let the loop report
                            // what is left (usually a torn tail).
                            expected = after;
                            pos = next;
                        } else {
                            return;
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn place() -> SegmentPlace {
        SegmentPlace { org: OrgId::new("acme").unwrap(), kind: DataKind::Metadata, day: 20_000 }
    }

    fn key() -> SecretKey {
        SecretKey::from_bytes([9; 32])
    }

    fn ring() -> OrgKey {
        OrgKey::single(place().org, key())
    }

    /// A segment with `n` blocks whose plaintexts are `[i; 40 + i]`.
    fn segment(n: u64) -> Vec<u8> {
        let mut out = encode_header(&place(), 0x1122_3344_5566_7788);
        for i in 0..n {
            let plain = vec![i as u8; 40 + i as usize];
            out.extend(seal_block(&key(), &place(), 0x1122_3344_5566_7788, i, &plain).unwrap());
        }
        out
    }

    /// Blocks served (offset, plaintext), defects, largest allocation.
    type Read = (Vec<(u64, Vec<u8>)>, Vec<Defect>, usize);

    fn read(bytes: &[u8], place: &SegmentPlace) -> Read {
        let mut blocks = Vec::new();
        let mut defects = Vec::new();
        match SegmentReader::open(bytes, place, &ring()) {
            Ok(mut reader) => {
                reader.read_blocks(|item| match item {
                    Ok(block) => blocks.push(block),
                    Err(d) => defects.push(d),
                });
                (blocks, defects, reader.largest_alloc)
            }
            Err(d) => (blocks, vec![d], 0),
        }
    }

    fn block_bounds(bytes: &[u8]) -> Vec<(usize, usize)> {
        let (blocks, _, _) = read(bytes, &place());
        let mut bounds = Vec::new();
        for (off, plain) in &blocks {
            let off = *off as usize;
            bounds.push((off, off + 12 + plain.len() + TAG_LEN));
        }
        bounds
    }

    #[test]
    fn a_built_segment_is_a_segment_file() {
        let mut builder = SegmentBuilder::new(&place().org, place().kind, place().day, &ring()).unwrap();
        assert!(builder.is_empty() && builder.has_room());
        let header = builder.len();
        let mut framed = 0;
        for i in 0..3u8 {
            framed += builder.seal(&ring(), &vec![i; 40 + usize::from(i)]).unwrap();
        }
        assert_eq!((builder.blocks(), builder.len()), (3, header + framed));
        let id = builder.segment_id();
        let bytes = builder.into_bytes();
        // The very bytes a writer with that id puts in a file.
        let mut file = encode_header(&place(), id);
        for i in 0..3u64 {
            file.extend(seal_block(&key(), &place(), id, i, &vec![i as u8; 40 + i as usize]).unwrap());
        }
        assert_eq!(bytes, file);
        let (blocks, defects, _) = read(&bytes, &place());
        assert!(defects.is_empty(), "{defects:?}");
        assert_eq!(blocks.len(), 3);
        // Ids are drawn afresh for every segment.
        let other = SegmentBuilder::new(&place().org, place().kind, place().day, &ring()).unwrap();
        assert_ne!(other.segment_id(), id);
        let too_large = vec![0; MAX_PLAINTEXT_LEN + 1];
        let mut builder = other;
        assert!(matches!(builder.seal(&ring(), &too_large), Err(crate::store::SegmentError::BlockTooLarge { .. })));
        assert!(builder.is_empty());
    }

    #[test]
    fn round_trip() {
        let bytes = segment(3);
        let (blocks, defects, _) = read(&bytes, &place());
        assert!(defects.is_empty(), "{defects:?}");
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[2].1, vec![2u8; 42]);
    }

    #[test]
    fn every_flipped_byte_is_reported_and_the_rest_still_read() {
        let bytes = segment(3);
        let bounds = block_bounds(&bytes);
        let (start, end) = bounds[1];
        for at in start..end {
            for flip in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let (blocks, defects, _) = read(&bad, &place());
                assert!(!defects.is_empty(), "flip at {at} not reported");
                let served: Vec<_> = blocks.iter().map(|b| b.1.clone()).collect();
                assert_eq!(served, vec![vec![0u8; 40], vec![2u8; 42]], "flip at {at}");
            }
        }
    }

    #[test]
    fn every_truncation_of_the_last_block_is_a_torn_tail() {
        let bytes = segment(3);
        let (start, end) = block_bounds(&bytes)[2];
        assert_eq!(end, bytes.len());
        for cut in start + 1..end {
            let (blocks, defects, _) = read(&bytes[..cut], &place());
            assert_eq!(blocks.len(), 2, "cut at {cut}");
            assert_eq!(defects.len(), 1, "cut at {cut}: {defects:?}");
            assert!(defects[0].what.contains("torn tail"), "{defects:?}");
            assert_eq!(defects[0].offset, start as u64);
        }
    }

    #[test]
    fn moved_segments_and_blocks_are_refused() {
        let bytes = segment(2);
        for other in [
            SegmentPlace { org: OrgId::new("globex").unwrap(), ..place() },
            SegmentPlace { kind: DataKind::Capture, ..place() },
            SegmentPlace { day: 20_001, ..place() },
        ] {
            let (blocks, defects, _) = read(&bytes, &other);
            assert!(blocks.is_empty());
            assert!(defects[0].what.contains("moved segment"), "{defects:?}");
        }

        // A header rewritten to match the new place still fails: the
        // blocks' associated data names the original place.
        let day = SegmentPlace { day: 20_001, ..place() };
        let old_header = encode_header(&place(), 0x1122_3344_5566_7788);
        let mut forged = encode_header(&day, 0x1122_3344_5566_7788);
        forged.extend_from_slice(&bytes[old_header.len()..]);
        let (blocks, defects, _) = read(&forged, &day);
        assert!(blocks.is_empty());
        assert_eq!(defects.len(), 2, "{defects:?}");

        // Blocks swapped within a segment, or spliced from another segment.
        let bounds = block_bounds(&bytes);
        let mut swapped = bytes[..bounds[0].0].to_vec();
        swapped.extend_from_slice(&bytes[bounds[1].0..bounds[1].1]);
        swapped.extend_from_slice(&bytes[bounds[0].0..bounds[0].1]);
        let (blocks, defects, _) = read(&swapped, &place());
        assert_eq!(blocks.len(), 1, "index 1 read, index 0 refused as a repeat");
        assert_eq!(defects.len(), 2, "{defects:?}");

        let mut other_seg = encode_header(&place(), 42);
        other_seg.extend_from_slice(&bytes[bounds[0].0..]);
        let (blocks, _, _) = read(&other_seg, &place());
        assert!(blocks.is_empty());
    }

    #[test]
    fn garbage_header_is_reported() {
        for bad in [&b""[..], b"GLSEG", b"NOTASEGMENTATALL-------------------------"] {
            let (blocks, defects, _) = read(bad, &place());
            assert!(blocks.is_empty());
            assert_eq!(defects.len(), 1);
        }
        let mut wrong_version = segment(1);
        wrong_version[9] = 4;
        let (_, defects, _) = read(&wrong_version, &place());
        assert!(defects[0].what.contains("version 4"));
    }

    #[test]
    fn version_is_bound_to_every_block() {
        // Relabelling a v3 segment as v2 (or v1) would make its blocks
        // decode under another layout; the associated data refuses that.
        let mut relabelled = segment(2);
        assert_eq!(relabelled[9], 3);
        relabelled[9] = 2;
        let (blocks, defects, _) = read(&relabelled, &place());
        assert!(blocks.is_empty());
        assert!(!defects.is_empty());
    }

    #[test]
    fn huge_length_field_does_not_allocate() {
        let mut bytes = segment(1);
        let body = encode_header(&place(), 0x1122_3344_5566_7788).len();
        bytes[body..body + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let (_, defects, alloc) = read(&bytes, &place());
        assert_eq!(defects.len(), 1);
        assert!(alloc <= MAX_BLOCK_LEN as usize);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let (_, _, alloc) = read(&tail, &place());
            prop_assert!(alloc <= MAX_BLOCK_LEN as usize);
        }

        #[test]
        fn arbitrary_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut bytes = encode_header(&place(), 7);
            bytes.extend_from_slice(&body);
            let (blocks, _, alloc) = read(&bytes, &place());
            prop_assert!(blocks.is_empty());
            prop_assert!(alloc <= MAX_BLOCK_LEN as usize);
        }

        #[test]
        fn corrupting_a_valid_segment_never_panics(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = segment(4);
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let len = cut.index(bytes.len() + 1);
            let (blocks, _, alloc) = read(&bytes[..len], &place());
            prop_assert!(blocks.len() <= 4);
            prop_assert!(alloc <= MAX_BLOCK_LEN as usize);
        }
    }

    #[test]
    fn the_header_names_the_data_key_version_and_the_reader_picks_it() {
        let org = place().org;
        let (v1, v2) = (SecretKey::from_bytes([1; 32]), SecretKey::from_bytes([2; 32]));
        let both = OrgKey::with_versions(org.clone(), 2, vec![(1, v1.clone()), (2, v2)]);
        let mut builder = SegmentBuilder::new(&org, place().kind, place().day, &both).unwrap();
        assert_eq!(builder.key_version(), 2);
        builder.seal(&both, b"under version two").unwrap();
        let bytes = builder.into_bytes();
        assert_eq!(header_key_version(bytes.as_slice()), Some(2));
        let mut reader = SegmentReader::open(bytes.as_slice(), &place(), &both).unwrap();
        let mut got = Vec::new();
        reader.read_blocks(|b| got.push(b.unwrap().1));
        assert_eq!(got, [b"under version two".to_vec()]);
        // Only version 1 known (version 2 retired, or not loaded yet).
        let old = OrgKey::single(org.clone(), v1);
        let err = SegmentReader::open(bytes.as_slice(), &place(), &old).err().unwrap();
        assert!(err.what.contains("data key version 2"), "{}", err.what);
        // A builder whose version the keys lack refuses to seal.
        let mut stale = SegmentBuilder::new(&org, place().kind, place().day, &both).unwrap();
        assert!(matches!(stale.seal(&old, b"x"), Err(crate::store::SegmentError::KeyVersion { version: 2, .. })));
        // Older formats are under version 1.
        let legacy = encode_legacy_header(2, &place(), 7);
        assert_eq!(header_key_version(legacy.as_slice()), Some(1));
        // A relabelled key version opens with the wrong key: nothing authenticates.
        let mut relabelled = bytes.clone();
        let at = HEADER_FIXED_LEN + 2 + org.as_str().len() + place().kind.as_str().len();
        relabelled[at..at + 4].copy_from_slice(&1u32.to_be_bytes());
        let (blocks, defects) = {
            let mut blocks = Vec::new();
            let mut defects = Vec::new();
            let mut reader = SegmentReader::open(relabelled.as_slice(), &place(), &both).unwrap();
            reader.read_blocks(|item| match item {
                Ok(b) => blocks.push(b),
                Err(d) => defects.push(d),
            });
            (blocks, defects)
        };
        assert!(blocks.is_empty() && !defects.is_empty());
    }

    proptest! {
        #[test]
        fn reading_the_key_version_of_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = header_key_version(bytes.as_slice());
        }
    }
}
