//! Site names from the gateway's own DNS resolver: dnsmasq's query log
//! (`log-queries`, with or without `=extra`), read line by line into a
//! bounded map from answered address to the name the client asked for.
//!
//! A CNAME chain is logged as the asked name answered `<CNAME>` followed
//! by the chain's names and, last, the addresses; the addresses are put
//! down to the asked name (`www.example.com`, not the CDN's edge name), as
//! that is the site the client meant. The log holds names and addresses
//! the resolver handled, never packet contents.
//!
//! Plain functions and one state type, no I/O: the reporter reads the log
//! (a bounded tail, see [`TailPlan`]) and feeds the lines.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Most addresses remembered; the oldest answer goes first.
pub const MAX_SITE_ADDRESSES: usize = 4096;
/// Longest DNS name kept (the protocol's limit, in text form).
pub const MAX_SITE_NAME: usize = 253;
/// Longest log line looked at; longer ones are not dnsmasq's.
pub const MAX_LOG_LINE: usize = 1024;

/// What one line of dnsmasq's log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsLogLine {
    /// A client asked for `name`.
    Query {
        /// The `log-queries=extra` serial, when logged.
        serial: Option<u32>,
        /// The name asked for.
        name: String,
    },
    /// An answer (`reply`, `cached`, or a local one such as `config` or a
    /// hosts file) for `name`.
    Answer {
        /// The `log-queries=extra` serial, when logged.
        serial: Option<u32>,
        /// The name answered.
        name: String,
        /// What it was answered with.
        answer: Answer,
    },
    /// Any other dnsmasq line (`forwarded`, DHCP, start-up, ...).
    Other,
}

/// An answer's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An address.
    Address(IpAddr),
    /// `<CNAME>`: the chain's next names follow.
    Cname,
    /// `NXDOMAIN`, `NODATA`, another record type: no address.
    NoAddress,
}

/// Parses one line: a syslog or `log-facility` line whose message comes
/// after `dnsmasq[PID]: ` (or `dnsmasq: `). `None` for lines that are not
/// dnsmasq's or do not read as its log.
pub fn parse_dnsmasq_log_line(line: &str) -> Option<DnsLogLine> {
    if line.len() > MAX_LOG_LINE {
        return None;
    }
    let at = line.find("dnsmasq")?;
    let rest = &line[at + "dnsmasq".len()..];
    let rest = match rest.strip_prefix('[') {
        Some(pid) => {
            let (digits, after) = pid.split_once(']')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            after
        }
        None => rest,
    };
    let message = rest.strip_prefix(": ")?;
    let mut words = message.split_ascii_whitespace().peekable();
    // `log-queries=extra`: a serial and the client's address/port first.
    let mut serial = None;
    if let Some(first) = words.peek() {
        if first.bytes().all(|b| b.is_ascii_digit()) {
            serial = first.parse::<u32>().ok();
            words.next();
            words.next()?;
        }
    }
    let verb = words.next()?;
    if verb.starts_with("query[") && verb.ends_with(']') {
        let name = site_name(words.next()?)?;
        return Some(DnsLogLine::Query { serial, name });
    }
    let answering = matches!(verb, "reply" | "cached" | "config") || verb.starts_with('/') || verb == "DHCP";
    if !answering {
        return Some(DnsLogLine::Other);
    }
    let name = site_name(words.next()?)?;
    if words.next()? != "is" {
        return None;
    }
    let value = words.next()?;
    let answer = if value == "<CNAME>" {
        Answer::Cname
    } else if let Ok(address) = value.parse::<IpAddr>() {
        Answer::Address(address)
    } else {
        Answer::NoAddress
    };
    Some(DnsLogLine::Answer { serial, name, answer })
}

/// A DNS name as kept: lower case, without the root's dot, 1 to
/// [`MAX_SITE_NAME`] characters of letters, digits, `-`, `_` and `.`.
fn site_name(word: &str) -> Option<String> {
    let word = word.strip_suffix('.').unwrap_or(word);
    let valid = (1..=MAX_SITE_NAME).contains(&word.len())
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !word.starts_with('.');
    valid.then(|| word.to_ascii_lowercase())
}

/// The chain being answered: the name asked for, and the last name of the
/// chain seen.
#[derive(Debug, Clone)]
struct Chain {
    serial: Option<u32>,
    asked: String,
    last: String,
    after_cname: bool,
}

/// Addresses to the names clients asked for, from the resolver's log.
/// Holds at most [`MAX_SITE_ADDRESSES`] addresses; a newer answer for an
/// address replaces the older one.
#[derive(Debug, Default)]
pub struct SiteNames {
    by_address: HashMap<IpAddr, (String, u64)>,
    /// Answer order, oldest first, to evict by.
    order: BTreeMap<u64, IpAddr>,
    next: u64,
    chain: Option<Chain>,
    capacity: usize,
}

impl SiteNames {
    /// An empty map holding at most `capacity` addresses (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.clamp(1, MAX_SITE_ADDRESSES), ..Self::default() }
    }

    /// How many addresses are known.
    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    /// Whether no address is known.
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }

    /// The name a client asked for that was answered with `address`.
    pub fn name_of(&self, address: &IpAddr) -> Option<&str> {
        self.by_address.get(address).map(|(name, _)| name.as_str())
    }

    /// Forgets the chain being answered: the log was cut (rotated,
    /// truncated, or lines skipped), so the next answers belong to
    /// queries not seen.
    pub fn break_chain(&mut self) {
        self.chain = None;
    }

    /// Takes in every line of `text`.
    pub fn feed(&mut self, text: &str) {
        for line in text.lines() {
            self.feed_line(line);
        }
    }

    /// Takes in one line.
    pub fn feed_line(&mut self, line: &str) {
        match parse_dnsmasq_log_line(line) {
            Some(DnsLogLine::Answer { serial, name, answer }) => self.answer(serial, name, answer),
            Some(DnsLogLine::Query { .. } | DnsLogLine::Other) => self.chain = None,
            // Not the resolver's: other programs share syslog.
            None => {}
        }
    }

    fn answer(&mut self, serial: Option<u32>, name: String, answer: Answer) {
        // Whether this answer continues the chain: the same query (by
        // serial when logged), and either the name after a CNAME or more
        // answers for the chain's last name.
        let continues = self.chain.as_ref().is_some_and(|chain| {
            let same_query = match (chain.serial, serial) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            same_query && (chain.after_cname || chain.last == name)
        });
        if !continues {
            self.chain = Some(Chain { serial, asked: name.clone(), last: name.clone(), after_cname: false });
        }
        let Some(chain) = self.chain.as_mut() else { return };
        chain.last = name;
        chain.after_cname = answer == Answer::Cname;
        if let Answer::Address(address) = answer {
            let asked = chain.asked.clone();
            self.remember(address, asked);
        }
    }

    fn remember(&mut self, address: IpAddr, name: String) {
        let stamp = self.next;
        self.next = self.next.wrapping_add(1);
        if let Some((_, old)) = self.by_address.insert(address, (name, stamp)) {
            self.order.remove(&old);
        }
        self.order.insert(stamp, address);
        while self.by_address.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.by_address.remove(&oldest);
        }
    }
}

/// Where to read a growing log from, given what was read before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogTail {
    /// Bytes of the file already taken in.
    pub offset: u64,
    /// The file's identity (inode) when it was read.
    pub file_id: Option<u64>,
}

/// What [`LogTail::plan`] says to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailPlan {
    /// First byte to read.
    pub start: u64,
    /// Whether the first line read may be cut (reading began mid-file) and
    /// is to be skipped.
    pub skip_partial: bool,
    /// Whether lines were skipped or the file was replaced: the answer
    /// chain being followed is broken.
    pub broken: bool,
}

impl LogTail {
    /// What to read of a file now `len` bytes long with identity
    /// `file_id`, reading at most `max` bytes: from where the last read
    /// stopped, from the start of a replaced (rotated) or truncated file,
    /// and only the last `max` bytes when more has been written since.
    pub fn plan(&self, len: u64, file_id: Option<u64>, max: u64) -> TailPlan {
        let replaced = self.file_id.is_some() && file_id != self.file_id;
        let mut start = if replaced || len < self.offset { 0 } else { self.offset };
        let mut broken = replaced || len < self.offset;
        let mut skip_partial = false;
        if len - start > max {
            start = len - max;
            skip_partial = true;
            broken = true;
        }
        TailPlan { start, skip_partial, broken }
    }

    /// Takes in what was read from `start` (`bytes`): the complete lines
    /// to use, and where the next read starts (after the last newline; a
    /// line still being written is read next time).
    pub fn take<'a>(&mut self, plan: TailPlan, file_id: Option<u64>, bytes: &'a [u8]) -> &'a [u8] {
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
        let mut lines = &bytes[..end];
        if plan.skip_partial {
            let first = lines.iter().position(|&b| b == b'\n').map_or(lines.len(), |at| at + 1);
            lines = &lines[first..];
        }
        self.offset = plan.start.saturating_add(end as u64);
        self.file_id = file_id;
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LOG: &str = include_str!("../../tests/fixtures/probe/commands/dnsmasq.log");

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lines_of_both_log_formats() {
        assert_eq!(
            parse_dnsmasq_log_line("Dec  7 14:00:01 dnsmasq[1234]: query[A] WWW.Example.com from 192.168.1.23"),
            Some(DnsLogLine::Query { serial: None, name: "www.example.com".into() })
        );
        assert_eq!(
            parse_dnsmasq_log_line(
                "Mon Dec  7 14:00:01 2026 daemon.info dnsmasq[1234]: 17 192.168.1.23/40001 reply a.example is 2001:db8::1"
            ),
            Some(DnsLogLine::Answer { serial: Some(17), name: "a.example".into(), answer: Answer::Address(ip("2001:db8::1")) })
        );
        let nx = parse_dnsmasq_log_line("dnsmasq[1]: reply nowhere.example is NXDOMAIN").unwrap();
        assert!(matches!(nx, DnsLogLine::Answer { answer: Answer::NoAddress, .. }));
        assert_eq!(parse_dnsmasq_log_line("dnsmasq[1]: forwarded a.example to 8.8.8.8"), Some(DnsLogLine::Other));
        for not_ours in ["", "kernel: eth0 up", "dnsmasq[x]: reply a is 1.2.3.4", "dnsmasq[1]: reply a/b is 1.2.3.4"] {
            assert_eq!(parse_dnsmasq_log_line(not_ours), None, "{not_ours:?}");
        }
    }

    #[test]
    fn addresses_go_to_the_name_the_client_asked_through_cname_chains() {
        let mut names = SiteNames::new(100);
        names.feed(LOG);
        assert_eq!(names.name_of(&ip("93.184.216.34")), Some("www.example.com"));
        assert_eq!(names.name_of(&ip("142.250.185.78")), Some("video.example.org"), "through two CNAMEs");
        assert_eq!(names.name_of(&ip("142.250.185.79")), Some("video.example.org"), "every address of the chain");
        assert_eq!(names.name_of(&ip("2606:4700::6810:85e5")), Some("cdn.example.net"));
        assert_eq!(names.name_of(&ip("198.51.100.20")), Some("broker.example.io"), "from the cache");
        assert_eq!(names.name_of(&ip("198.51.100.5")), Some("ssh.example.com"), "with log-queries=extra");
        assert_eq!(names.name_of(&ip("203.0.113.99")), Some("printer.lan"), "from the hosts file");
        assert_eq!(names.name_of(&ip("8.8.8.8")), None, "an upstream server is not a site");
    }

    #[test]
    fn a_chain_is_not_carried_over_an_unrelated_answer() {
        let mut names = SiteNames::new(10);
        names.feed("dnsmasq[1]: reply a.example is <CNAME>\ndnsmasq[1]: reply edge.cdn is 192.0.2.1\ndnsmasq[1]: reply b.example is 192.0.2.2\n");
        assert_eq!(names.name_of(&ip("192.0.2.1")), Some("a.example"));
        assert_eq!(names.name_of(&ip("192.0.2.2")), Some("b.example"));
        names.feed("dnsmasq[1]: reply c.example is <CNAME>\n");
        names.break_chain();
        names.feed("dnsmasq[1]: reply edge.cdn is 192.0.2.3\n");
        assert_eq!(names.name_of(&ip("192.0.2.3")), Some("edge.cdn"), "after a cut the chain is not guessed");
        // Serials tell concurrent queries apart.
        names.feed("dnsmasq[1]: 5 10.0.0.2/1 reply d.example is <CNAME>\ndnsmasq[1]: 6 10.0.0.3/1 reply e.example is 192.0.2.4\n");
        assert_eq!(names.name_of(&ip("192.0.2.4")), Some("e.example"));
    }

    #[test]
    fn the_oldest_answers_go_first_and_a_newer_answer_wins() {
        let mut names = SiteNames::new(2);
        names.feed("dnsmasq[1]: reply a.example is 192.0.2.1\ndnsmasq[1]: reply b.example is 192.0.2.2\n");
        names.feed("dnsmasq[1]: reply c.example is 192.0.2.1\ndnsmasq[1]: reply d.example is 192.0.2.3\n");
        assert_eq!(names.len(), 2);
        assert_eq!(names.name_of(&ip("192.0.2.1")), Some("c.example"));
        assert_eq!(names.name_of(&ip("192.0.2.2")), None, "the oldest went");
        assert_eq!(names.name_of(&ip("192.0.2.3")), Some("d.example"));
    }

    #[test]
    fn the_tail_follows_growth_truncation_and_rotation() {
        let mut tail = LogTail::default();
        let plan = tail.plan(30, Some(7), 100);
        assert_eq!(plan, TailPlan { start: 0, skip_partial: false, broken: false });
        assert_eq!(tail.take(plan, Some(7), b"line one\nline two\nline thr"), b"line one\nline two\n");
        assert_eq!(tail.offset, 18, "the unfinished line is read again");
        let plan = tail.plan(40, Some(7), 100);
        assert_eq!((plan.start, plan.broken), (18, false));
        let plan = tail.plan(10, Some(7), 100);
        assert_eq!((plan.start, plan.broken), (0, true), "truncated");
        let plan = tail.plan(50, Some(8), 100);
        assert_eq!((plan.start, plan.broken), (0, true), "rotated");
        let plan = tail.plan(1_000, Some(7), 100);
        assert_eq!(plan, TailPlan { start: 900, skip_partial: true, broken: true }, "only the newest");
        assert_eq!(tail.take(plan, Some(7), b"ut line\nwhole line\n"), b"whole line\n");
        assert_eq!(tail.offset, 919);
    }

    proptest! {
        #[test]
        fn arbitrary_lines_never_panic_and_stay_bounded(
            lines in prop::collection::vec(
                prop_oneof![
                    "\\PC{0,120}",
                    "dnsmasq\\[[0-9]{1,5}\\]: (reply|cached|query\\[A\\]|[0-9]{1,3} [0-9.]{1,15}/[0-9]{1,5} reply) [a-z.]{1,12} (is|from) (<CNAME>|[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}|NXDOMAIN)",
                ],
                0..80,
            ),
            capacity in 1usize..8,
        ) {
            let mut names = SiteNames::new(capacity);
            for line in &lines {
                names.feed_line(line);
                prop_assert!(names.len() <= capacity);
                prop_assert_eq!(names.order.len(), names.by_address.len());
            }
            for (_, (name, _)) in names.by_address.iter() {
                prop_assert!(!name.is_empty() && name.len() <= MAX_SITE_NAME);
            }
        }

        #[test]
        fn the_tail_never_reads_past_the_file_or_more_than_asked(
            offset in 0u64..2000, len in 0u64..2000, max in 1u64..500, same in any::<bool>(),
            bytes in prop::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..500),
        ) {
            let mut tail = LogTail { offset, file_id: Some(1) };
            let plan = tail.plan(len, Some(if same { 1 } else { 2 }), max);
            prop_assert!(plan.start <= len && len - plan.start <= max);
            let read = &bytes[..bytes.len().min(usize::try_from(len - plan.start).unwrap())];
            let lines = tail.take(plan, Some(1), read);
            prop_assert!(lines.len() <= read.len());
            prop_assert!(tail.offset <= plan.start + read.len() as u64);
            prop_assert!(lines.is_empty() || lines.ends_with(b"\n"));
        }
    }
}
