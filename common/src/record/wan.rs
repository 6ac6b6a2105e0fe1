//! What a gateway reports about its WAN traffic: application information and
//! session summaries from connection tracking. Connection tracking holds
//! addresses, ports, counters and timers only, so no payload is ever read.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};

use super::{DeviceProfile, MacAddr, MAX_IFNAME, MAX_TEXT};

/// Most applications listed in one report; the rest are folded into `other`.
pub const MAX_APPLICATIONS: usize = 256;
/// Most WAN interfaces named in one report.
pub const MAX_WAN_INTERFACES: usize = 16;
/// Longest application name.
pub const MAX_APPLICATION_NAME: usize = 32;

/// A gateway's sessions over one collection interval, per application.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WanReport {
    /// The gateway's name, series and location.
    pub device: DeviceProfile,
    /// Which interfaces face the WAN (from the device's config); their
    /// addresses and counters are in the metadata and counter records.
    pub wan_interfaces: BoundedVec<BoundedString<MAX_IFNAME>, MAX_WAN_INTERFACES>,
    /// Length of the interval the summary covers, in milliseconds (0 for the
    /// first report after start, which only counts what is open).
    pub interval_ms: u64,
    /// Sessions open at the end of the interval.
    pub active_sessions: u32,
    /// Open sessions beyond the agent's tracking limit: counted as active,
    /// but their traffic and ends are not followed.
    pub untracked_sessions: u32,
    /// Per application, sorted by name.
    pub applications: BoundedVec<ApplicationSessions, MAX_APPLICATIONS>,
}

/// One application's sessions over the interval. Out is the direction the
/// session was opened in (client to server), in is the reply.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApplicationSessions {
    /// Application name from the server port (`https`, `dns`, `quic`, ...),
    /// or `tcp-other`, `udp-other`, `other`.
    pub application: BoundedString<MAX_APPLICATION_NAME>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...).
    pub protocol: u8,
    /// Sessions open at the end of the interval.
    pub active_sessions: u32,
    /// Sessions opened during the interval.
    pub sessions_started: u32,
    /// Sessions closed during the interval.
    pub sessions_ended: u32,
    /// Bytes client to server during the interval.
    pub bytes_out: u64,
    /// Bytes server to client during the interval.
    pub bytes_in: u64,
    /// Packets client to server during the interval.
    pub packets_out: u64,
    /// Packets server to client during the interval.
    pub packets_in: u64,
    /// Total duration of the sessions that ended, in milliseconds.
    pub ended_duration_ms_total: u64,
    /// Longest duration of a session that ended, in milliseconds.
    pub ended_duration_ms_max: u64,
}

/// Most destination rows in one report; the rest are added up in
/// [`WanDestinationReport::folded`].
pub const MAX_DESTINATIONS: usize = 1024;

/// A gateway's WAN sessions over one collection interval, per client and
/// destination: who (the client's MAC from the gateway's ARP table, and
/// its LAN address) reached which address, protocol and port, with the
/// application named by the port and the site name the gateway's own DNS
/// resolver gave for that address. Addresses and ports come from
/// connection tracking, names from the resolver's log: never from packets.
/// Sent only when the organisation enables WAN destinations.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WanDestinationReport {
    /// The gateway's name, series and location.
    pub device: DeviceProfile,
    /// Length of the interval the rows cover, in milliseconds (0 for the
    /// first report after start, which only counts what is open).
    pub interval_ms: u64,
    /// The busiest rows, by bytes both ways, sorted by client, destination,
    /// protocol and port.
    pub destinations: BoundedVec<WanDestination, MAX_DESTINATIONS>,
    /// How many rows beyond [`MAX_DESTINATIONS`] were added up in `folded`.
    pub folded_rows: u32,
    /// The sessions and traffic of the rows not listed.
    pub folded: DestinationCounters,
}

/// One (client, destination address, protocol, port) over the interval.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WanDestination {
    /// The client's MAC (from the gateway's ARP table); `None` when the
    /// client is not on the LAN or clients are withheld.
    pub client_mac: Option<MacAddr>,
    /// The client's address as connection tracking saw it (before NAT).
    pub client_address: Option<IpAddr>,
    /// The destination address; `None` when withheld.
    pub destination: Option<IpAddr>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...).
    pub protocol: u8,
    /// Destination port, for protocols that have ports.
    pub port: Option<u16>,
    /// Application name from the port (as in [`ApplicationSessions`]).
    pub application: BoundedString<MAX_APPLICATION_NAME>,
    /// The name the client looked up for the destination (the name it
    /// asked for, not the CNAME target), from the gateway's DNS resolver
    /// log; empty when unknown or withheld.
    pub site: BoundedString<MAX_TEXT>,
    /// Sessions and traffic.
    pub counters: DestinationCounters,
}

/// Sessions and traffic of one destination row (or of the folded rest).
/// Out is the direction the session was opened in, in is the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DestinationCounters {
    /// Sessions open at the end of the interval.
    pub active_sessions: u32,
    /// Sessions opened during the interval.
    pub sessions_started: u32,
    /// Bytes client to destination during the interval.
    pub bytes_out: u64,
    /// Bytes destination to client during the interval.
    pub bytes_in: u64,
    /// Packets client to destination during the interval.
    pub packets_out: u64,
    /// Packets destination to client during the interval.
    pub packets_in: u64,
}

impl DestinationCounters {
    /// Adds `other` in, saturating.
    pub fn add(&mut self, other: &DestinationCounters) {
        self.active_sessions = self.active_sessions.saturating_add(other.active_sessions);
        self.sessions_started = self.sessions_started.saturating_add(other.sessions_started);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.packets_out = self.packets_out.saturating_add(other.packets_out);
        self.packets_in = self.packets_in.saturating_add(other.packets_in);
    }

    /// Bytes both ways, to rank rows by.
    pub fn bytes(&self) -> u64 {
        self.bytes_out.saturating_add(self.bytes_in)
    }
}

impl WanDestinationReport {
    /// Merges rows that became equal (once clients, destinations or sites
    /// are withheld, rows of different clients describe the same thing)
    /// and keeps at most [`MAX_DESTINATIONS`], the busiest, folding the
    /// rest into `folded`.
    pub fn merge_rows(&mut self) {
        let rows = std::mem::take(&mut self.destinations).into_vec();
        let (rows, folded_rows, folded) = merge_destination_rows(rows);
        self.destinations = BoundedVec::truncating(rows);
        self.folded_rows = self.folded_rows.saturating_add(folded_rows);
        self.folded.add(&folded);
    }
}

/// Rows with equal keys merged, sorted, the busiest [`MAX_DESTINATIONS`]
/// kept; returns them, how many were folded and the folded totals.
pub fn merge_destination_rows(rows: Vec<WanDestination>) -> (Vec<WanDestination>, u32, DestinationCounters) {
    let mut merged: std::collections::BTreeMap<RowKey, WanDestination> = std::collections::BTreeMap::new();
    for row in rows {
        match merged.get_mut(&row_key(&row)) {
            Some(existing) => existing.counters.add(&row.counters),
            None => {
                merged.insert(row_key(&row), row);
            }
        }
    }
    let mut all: Vec<WanDestination> = merged.into_values().collect();
    let mut folded = DestinationCounters::default();
    let mut folded_rows = 0u32;
    if all.len() > MAX_DESTINATIONS {
        // Stable: equal traffic keeps key order, so the choice is the same
        // on every run.
        all.sort_by_key(|row| std::cmp::Reverse(row.counters.bytes()));
        for row in all.split_off(MAX_DESTINATIONS) {
            folded.add(&row.counters);
            folded_rows = folded_rows.saturating_add(1);
        }
        all.sort_by_key(row_key);
    }
    (all, folded_rows, folded)
}

/// What tells destination rows apart (and orders them).
type RowKey = (Option<MacAddr>, Option<IpAddr>, Option<IpAddr>, u8, Option<u16>, String, String);

fn row_key(row: &WanDestination) -> RowKey {
    (
        row.client_mac,
        row.client_address,
        row.destination,
        row.protocol,
        row.port,
        row.application.as_str().to_owned(),
        row.site.as_str().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(client: u16, bytes: u64) -> WanDestination {
        WanDestination {
            client_address: Some(IpAddr::from([10, 0, (client >> 8) as u8, client as u8])),
            destination: Some(IpAddr::from([192, 0, 2, 1])),
            protocol: 6,
            port: Some(443),
            counters: DestinationCounters { active_sessions: 1, bytes_in: bytes, ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn the_busiest_rows_stay_and_the_rest_add_up() {
        let rows: Vec<WanDestination> = (0..1500u16).map(|i| row(i, u64::from(i))).collect();
        let (kept, folded_rows, folded) = merge_destination_rows(rows);
        assert_eq!((kept.len(), folded_rows), (MAX_DESTINATIONS, 1500 - 1024));
        assert!(kept.iter().all(|r| r.counters.bytes_in >= 476), "the busiest");
        assert!(kept.windows(2).all(|w| row_key(&w[0]) < row_key(&w[1])), "sorted, no duplicates");
        assert_eq!(folded.active_sessions, 476);
        assert_eq!(folded.bytes_in, (0..476u64).sum::<u64>());

        let (merged, folded_rows, _) = merge_destination_rows(vec![row(1, 5), row(1, 7), row(2, 1)]);
        assert_eq!((merged.len(), folded_rows, merged[0].counters.bytes_in), (2, 0, 12));
    }
}
