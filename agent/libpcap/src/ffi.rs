//! The C side: libpcap's functions, looked up once with `dlopen`/`dlsym`,
//! and the few `#[repr(C)]` structs they take.
//!
//! Every `unsafe` in the crate is here, with the safe types built directly
//! on it ([`Capture`], [`Filter`], [`Packet`]): each call upholds what
//! libpcap's manual pages require of it, and the types keep a handle alive
//! and unshared for as long as a pointer into it is used. This module
//! decides nothing about capture (snap length, filters, timing are the
//! caller's); it only makes the calls.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::os::fd::BorrowedFd;
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

use libloading::Library;

use crate::Error;

/// The file names tried, in order: OpenWrt and upstream installs name the
/// library `libpcap.so.1`, Debian and its derivatives `libpcap.so.0.8`, and
/// `libpcap.so` (a development symlink) catches the rest.
pub(crate) const LIBRARY_NAMES: [&str; 3] = ["libpcap.so.1", "libpcap.so.0.8", "libpcap.so"];

/// `PCAP_ERRBUF_SIZE` from `pcap.h`.
pub(crate) const ERRBUF_SIZE: usize = 256;
/// `PCAP_NETMASK_UNKNOWN`: the filters the agent compiles do not use
/// `ip broadcast`, the one primitive that needs the netmask.
pub(crate) const NETMASK_UNKNOWN: u32 = 0xffff_ffff;

/// `pcap_t`, never looked inside.
pub(crate) type PcapT = c_void;

/// `struct bpf_program`.
#[repr(C)]
pub(crate) struct BpfProgramRaw {
    pub(crate) bf_len: c_uint,
    pub(crate) bf_insns: *mut c_void,
}

/// `struct pcap_pkthdr`. `libc::timeval` has the target C library's field
/// widths (32-bit `time_t` on 32-bit glibc, 64-bit on musl and 64-bit
/// targets), which is what the device's libpcap was built with.
#[repr(C)]
pub(crate) struct PacketHeaderRaw {
    pub(crate) ts: libc::timeval,
    pub(crate) caplen: u32,
    pub(crate) len: u32,
}

/// libpcap's functions the agent uses, and the library that holds them.
pub(crate) struct Api {
    pub(crate) create: unsafe extern "C" fn(*const c_char, *mut c_char) -> *mut PcapT,
    pub(crate) set_snaplen: unsafe extern "C" fn(*mut PcapT, c_int) -> c_int,
    pub(crate) set_promisc: unsafe extern "C" fn(*mut PcapT, c_int) -> c_int,
    pub(crate) set_immediate_mode: unsafe extern "C" fn(*mut PcapT, c_int) -> c_int,
    pub(crate) activate: unsafe extern "C" fn(*mut PcapT) -> c_int,
    pub(crate) setnonblock: unsafe extern "C" fn(*mut PcapT, c_int, *mut c_char) -> c_int,
    pub(crate) open_dead: unsafe extern "C" fn(c_int, c_int) -> *mut PcapT,
    pub(crate) compile: unsafe extern "C" fn(*mut PcapT, *mut BpfProgramRaw, *const c_char, c_int, u32) -> c_int,
    pub(crate) setfilter: unsafe extern "C" fn(*mut PcapT, *mut BpfProgramRaw) -> c_int,
    pub(crate) freecode: unsafe extern "C" fn(*mut BpfProgramRaw),
    pub(crate) offline_filter: unsafe extern "C" fn(*const BpfProgramRaw, *const PacketHeaderRaw, *const u8) -> c_int,
    pub(crate) datalink: unsafe extern "C" fn(*mut PcapT) -> c_int,
    pub(crate) next_ex: unsafe extern "C" fn(*mut PcapT, *mut *mut PacketHeaderRaw, *mut *const u8) -> c_int,
    pub(crate) get_selectable_fd: unsafe extern "C" fn(*mut PcapT) -> c_int,
    pub(crate) geterr: unsafe extern "C" fn(*mut PcapT) -> *mut c_char,
    pub(crate) statustostr: unsafe extern "C" fn(c_int) -> *const c_char,
    pub(crate) close: unsafe extern "C" fn(*mut PcapT),
    pub(crate) lib_version: unsafe extern "C" fn() -> *const c_char,
    /// Which of [`LIBRARY_NAMES`] was opened.
    pub(crate) library_name: &'static str,
    // Never dropped (the `Api` lives in a static), so the function pointers
    // above stay valid for the life of the process.
    _library: Library,
}

static API: OnceLock<Result<Api, Error>> = OnceLock::new();

/// libpcap's functions, loading the library on first use. A missing
/// library is remembered: the agent asks again on every capture request.
pub(crate) fn api() -> Result<&'static Api, Error> {
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Api, Error> {
    let mut tried = Vec::new();
    for name in LIBRARY_NAMES {
        // SAFETY: opening libpcap runs its ELF initialisers, which only set
        // up libpcap's own state; no Rust invariant depends on them.
        let opened = unsafe { Library::new(name) };
        match opened {
            Ok(library) => return resolve(library, name),
            Err(e) => tried.push(format!("{name}: {e}")),
        }
    }
    Err(Error::NotInstalled { tried: tried.join("; ") })
}

/// Looks up one symbol as the function pointer type `T`.
macro_rules! symbol {
    ($library:expr, $name:literal, $library_name:expr) => {{
        // SAFETY: the type the result is assigned to (a field of `Api`) is
        // the C prototype of this function in libpcap's `pcap.h`.
        let symbol = unsafe { $library.get(concat!($name, "\0").as_bytes()) };
        match symbol {
            Ok(symbol) => *symbol,
            Err(_) => return Err(Error::MissingFunction { library: $library_name, function: $name }),
        }
    }};
}

fn resolve(library: Library, name: &'static str) -> Result<Api, Error> {
    Ok(Api {
        create: symbol!(library, "pcap_create", name),
        set_snaplen: symbol!(library, "pcap_set_snaplen", name),
        set_promisc: symbol!(library, "pcap_set_promisc", name),
        // libpcap 1.5 (2013) and later.
        set_immediate_mode: symbol!(library, "pcap_set_immediate_mode", name),
        activate: symbol!(library, "pcap_activate", name),
        setnonblock: symbol!(library, "pcap_setnonblock", name),
        open_dead: symbol!(library, "pcap_open_dead", name),
        compile: symbol!(library, "pcap_compile", name),
        setfilter: symbol!(library, "pcap_setfilter", name),
        freecode: symbol!(library, "pcap_freecode", name),
        offline_filter: symbol!(library, "pcap_offline_filter", name),
        datalink: symbol!(library, "pcap_datalink", name),
        next_ex: symbol!(library, "pcap_next_ex", name),
        get_selectable_fd: symbol!(library, "pcap_get_selectable_fd", name),
        geterr: symbol!(library, "pcap_geterr", name),
        statustostr: symbol!(library, "pcap_statustostr", name),
        close: symbol!(library, "pcap_close", name),
        lib_version: symbol!(library, "pcap_lib_version", name),
        library_name: name,
        _library: library,
    })
}

/// Copies a C string libpcap returned; empty for a null pointer.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string that stays valid and
/// unchanged for the duration of the call.
unsafe fn string_from(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: non-null, and NUL-terminated and valid by this function's contract.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

/// What `errbuf` holds: a NUL-terminated message, or all of it if libpcap
/// left no NUL (it always does; this only keeps a read in bounds).
fn errbuf_message(errbuf: &[u8]) -> String {
    let end = errbuf.iter().position(|&b| b == 0).unwrap_or(errbuf.len());
    String::from_utf8_lossy(&errbuf[..end]).into_owned()
}

fn c_string(value: &str, what: &'static str) -> Result<CString, Error> {
    CString::new(value).map_err(|_| Error::NulByte(what))
}

/// The version string of the libpcap that was loaded, and its file name
/// (e.g. "libpcap version 1.10.3 (with TPACKET_V3) (libpcap.so.0.8)").
pub fn version() -> Result<String, Error> {
    let api = api()?;
    // SAFETY: pcap_lib_version takes nothing and returns a pointer to a
    // static NUL-terminated string.
    let version = unsafe { string_from((api.lib_version)()) };
    Ok(format!("{version} ({})", api.library_name))
}

/// A libpcap handle: a live capture on an interface, or a "dead" one that
/// only compiles filters for a link type. Closed on drop.
///
/// Not `Send`: a handle is opened, read and closed on one thread.
pub struct Capture {
    api: &'static Api,
    handle: NonNull<PcapT>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("library", &self.api.library_name).finish_non_exhaustive()
    }
}

/// What [`Capture::next_packet`] found.
#[derive(Debug)]
pub enum Next<'a> {
    /// A packet, valid until the handle is read again.
    Packet(Packet<'a>),
    /// No packet is ready (a non-blocking handle): wait on
    /// [`Capture::selectable_fd`] and ask again.
    NotReady,
    /// The capture has ended (`pcap_breakloop`, or the end of a file).
    Ended,
}

/// One packet as libpcap delivered it: at most the snap length of bytes.
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    /// Seconds since the Unix epoch.
    pub timestamp_secs: i64,
    /// Microseconds within that second.
    pub timestamp_micros: i64,
    /// The packet's length on the wire, of which `data` is a prefix.
    pub wire_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}

// By hand: packet bytes (payload included) must never reach a log line.
impl std::fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("timestamp_secs", &self.timestamp_secs)
            .field("timestamp_micros", &self.timestamp_micros)
            .field("wire_len", &self.wire_len)
            .field("captured_len", &self.data.len())
            .finish()
    }
}

impl Capture {
    /// Opens `interface` for live capture of at most `snaplen` bytes per
    /// packet, with promiscuous mode off, immediate mode on (each packet is
    /// delivered as it arrives, not when a kernel buffer fills) and
    /// non-blocking reads (see [`Next::NotReady`]).
    pub fn open_live(interface: &str, snaplen: i32) -> Result<Self, Error> {
        let api = api()?;
        let name = c_string(interface, "interface name")?;
        let mut errbuf = [0u8; ERRBUF_SIZE];
        // SAFETY: `name` is NUL-terminated and outlives the call; `errbuf`
        // has the PCAP_ERRBUF_SIZE bytes pcap_create may write.
        let raw = unsafe { (api.create)(name.as_ptr(), errbuf.as_mut_ptr().cast()) };
        let Some(handle) = NonNull::new(raw) else { return Err(Error::Pcap(errbuf_message(&errbuf))) };
        // From here on, Drop closes the handle on every error path.
        let capture = Capture { api, handle };
        let p = capture.handle.as_ptr();
        // SAFETY: `p` is a live handle not yet activated, all the setters
        // below require.
        let mut status = unsafe { (api.set_snaplen)(p, snaplen) };
        if status == 0 {
            // SAFETY: as above.
            status = unsafe { (api.set_promisc)(p, 0) };
        }
        if status == 0 {
            // SAFETY: as above.
            status = unsafe { (api.set_immediate_mode)(p, 1) };
        }
        if status < 0 {
            return Err(capture.status_error(status));
        }
        // SAFETY: `p` is a live handle, activated at most once (here).
        status = unsafe { (api.activate)(p) };
        // Positive values are warnings: the handle is activated and usable.
        if status < 0 {
            return Err(capture.status_error(status));
        }
        // SAFETY: `p` is an activated handle; `errbuf` has PCAP_ERRBUF_SIZE bytes.
        if unsafe { (api.setnonblock)(p, 1, errbuf.as_mut_ptr().cast()) } < 0 {
            return Err(Error::Pcap(errbuf_message(&errbuf)));
        }
        Ok(capture)
    }

    /// A handle that captures nothing and compiles filters for the link
    /// type `dlt` (libpcap's `DLT_*` number).
    pub fn dead(dlt: i32, snaplen: i32) -> Result<Self, Error> {
        let api = api()?;
        // SAFETY: pcap_open_dead takes two integers and returns a new handle or null.
        let raw = unsafe { (api.open_dead)(dlt, snaplen) };
        let handle = NonNull::new(raw).ok_or_else(|| Error::Pcap(format!("pcap_open_dead({dlt}) failed")))?;
        Ok(Capture { api, handle })
    }

    /// The message libpcap left for the last failure on this handle, or its
    /// description of `status` when it left none.
    fn status_error(&self, status: c_int) -> Error {
        let message = self.last_error();
        if !message.is_empty() {
            return Error::Pcap(message);
        }
        // SAFETY: pcap_statustostr takes any integer and returns a static
        // (or thread-local) NUL-terminated string, copied before any other call.
        Error::Pcap(unsafe { string_from((self.api.statustostr)(status)) })
    }

    fn last_error(&self) -> String {
        // SAFETY: the handle is live; pcap_geterr returns a pointer into it,
        // NUL-terminated, copied before any other call on the handle.
        unsafe { string_from((self.api.geterr)(self.handle.as_ptr())) }
    }

    /// Compiles a BPF `filter` (libpcap's filter language) for this
    /// handle's link type, optimised.
    pub fn compile(&self, filter: &str) -> Result<Filter, Error> {
        let text = c_string(filter, "filter")?;
        let mut program = BpfProgramRaw { bf_len: 0, bf_insns: ptr::null_mut() };
        // SAFETY: the handle is live; `program` is a valid bpf_program for
        // libpcap to fill; `text` is NUL-terminated and outlives the call.
        let status =
            unsafe { (self.api.compile)(self.handle.as_ptr(), &mut program, text.as_ptr(), 1, NETMASK_UNKNOWN) };
        if status < 0 {
            return Err(Error::Pcap(self.last_error()));
        }
        Ok(Filter { api: self.api, program })
    }

    /// Compiles `filter` and has the kernel (or libpcap) apply it to this
    /// live capture.
    pub fn set_filter(&mut self, filter: &str) -> Result<(), Error> {
        let mut compiled = self.compile(filter)?;
        // SAFETY: the handle is live; the program was compiled by this
        // libpcap and is freed (by `compiled`'s Drop) only after the call:
        // pcap_setfilter keeps its own copy.
        if unsafe { (self.api.setfilter)(self.handle.as_ptr(), &mut compiled.program) } < 0 {
            return Err(Error::Pcap(self.last_error()));
        }
        Ok(())
    }

    /// The handle's link type (libpcap's `DLT_*` number).
    pub fn datalink(&self) -> i32 {
        // SAFETY: the handle is live (and activated, or dead: both answer).
        unsafe { (self.api.datalink)(self.handle.as_ptr()) }
    }

    /// The next packet, if one is ready. The packet borrows the handle: it
    /// is only valid until the next read, which the borrow enforces.
    pub fn next_packet(&mut self) -> Result<Next<'_>, Error> {
        let mut header: *mut PacketHeaderRaw = ptr::null_mut();
        let mut data: *const u8 = ptr::null();
        // SAFETY: the handle is live and used by this thread alone (`&mut
        // self`, not Send); both out-pointers are valid to write.
        let status = unsafe { (self.api.next_ex)(self.handle.as_ptr(), &mut header, &mut data) };
        match status {
            1 if !header.is_null() && !data.is_null() => {
                // SAFETY: on 1 libpcap set `header` to a pcap_pkthdr inside
                // the handle, valid until the next read on it.
                let header = unsafe { &*header };
                // SAFETY: on 1 `data` points to `caplen` readable bytes inside
                // the handle, valid until the next read or close, both of
                // which need the `&mut self` this slice borrows.
                let data = unsafe { std::slice::from_raw_parts(data, header.caplen as usize) };
                // timeval fields are 32-bit on 32-bit glibc targets, 64-bit elsewhere.
                #[allow(clippy::useless_conversion)]
                let (timestamp_secs, timestamp_micros) = (i64::from(header.ts.tv_sec), i64::from(header.ts.tv_usec));
                Ok(Next::Packet(Packet { timestamp_secs, timestamp_micros, wire_len: header.len, data }))
            }
            1 => Err(Error::Pcap("pcap_next_ex returned a packet without data".to_owned())),
            0 => Ok(Next::NotReady),
            -2 => Ok(Next::Ended),
            _ => Err(Error::Pcap(self.last_error())),
        }
    }

    /// A descriptor that becomes readable when packets are ready, for
    /// `poll`; `None` where libpcap has none (not on Linux).
    pub fn selectable_fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: the handle is live.
        let fd = unsafe { (self.api.get_selectable_fd)(self.handle.as_ptr()) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the descriptor belongs to the handle and stays open until
        // pcap_close, in Drop, which cannot run while `self` is borrowed.
        Some(unsafe { BorrowedFd::borrow_raw(fd) })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SAFETY: the handle is live and closed exactly once, here; nothing
        // borrowed from it outlives `self`.
        unsafe { (self.api.close)(self.handle.as_ptr()) }
    }
}

/// A compiled BPF program. Freed on drop.
pub struct Filter {
    api: &'static Api,
    program: BpfProgramRaw,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").field("instructions", &self.program.bf_len).finish()
    }
}

impl Filter {
    /// Whether the program accepts `packet` (taken as whole: captured
    /// length = wire length), as the kernel would.
    pub fn matches(&self, packet: &[u8]) -> bool {
        // Longer than u32::MAX cannot be said; the program then sees a prefix.
        let len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        let header = PacketHeaderRaw { ts: libc::timeval { tv_sec: 0, tv_usec: 0 }, caplen: len, len };
        // SAFETY: the program is a compiled, not yet freed bpf_program;
        // `packet` has at least `caplen` readable bytes, and the BPF
        // interpreter checks every load against `caplen`.
        unsafe { (self.api.offline_filter)(&self.program, &header, packet.as_ptr()) != 0 }
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        // SAFETY: the program was filled by pcap_compile and is freed once, here.
        unsafe { (self.api.freecode)(&mut self.program) }
    }
}
