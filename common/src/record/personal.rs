//! The one walk over the fields of every record kind that identify or
//! describe a person or their device, and the fields an organisation can
//! choose not to collect.
//!
//! Minimisation, pseudonymisation (on the device and at the collector) and
//! data-subject export and erase all go through [`visit`] or [`visit_mut`],
//! so they cannot disagree about what a record holds. Every `match` here
//! over record kinds is exhaustive and every struct is destructured with all
//! its fields named: a new record kind, or a new field in a record, does not
//! compile until this module says whether it is visited and as what.
//!
//! Each visited field is a [`Field`]: its [`Category`] (MAC, IP address,
//! username, ...), its [`Scope`] (is it about the whole record, one client
//! entry of a report about many clients, or the reporting device itself)
//! and the [`MetadataField`] setting that withholds it, if any.
//!
//! Reports that list many clients (stations, roaming events, learned hosts)
//! present each client as an [`Entry`] before its fields, so a subject
//! request can take or drop one client's part and leave the others.
//!
//! What is deliberately not visited: interface, radio and port names,
//! SSIDs, radio settings, session timers, and LLDP neighbours' contents
//! (network equipment, not people; the neighbour list as a whole is visited
//! so that it can be withheld). Captured headers are visited as a whole
//! (for matching by bytes) and as the MAC addresses in them (for
//! pseudonymisation); the IP addresses in them stay as captured.

use std::fmt;
use std::net::IpAddr;

use super::withheld::MetadataField;
use crate::bounded::{BoundedString, BoundedVec};
use crate::capture::macs::mac_sites;
use crate::capture::CapturedPacket;

use super::{
    AgentHealth, ApplicationSessions, Check, ClientDevice, ClientDeviceReport, ConnectionState, CounterReport,
    DestinationCounters, DeviceMetadata, DeviceProfile, Diagnostics, InterfaceDelta, InterfaceStats, LldpNeighbour,
    Location, MacAddr, PortVlans, Radio, RecordBody, RoamEvent, SpoolRecovery, SpoolState, Station, WanDestination,
    WanDestinationReport, WanReport, WiredHost, WiredReport, WirelessReport, MAX_TEXT,
};

/// What kind of information a visited field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// A MAC address.
    Mac,
    /// IP addresses.
    Ip,
    /// A host name.
    Hostname,
    /// A username (802.1X identity).
    Username,
    /// A client's user agent (DHCP vendor class).
    UserAgent,
    /// Where a device (and so its clients) is.
    Location,
    /// VLAN membership.
    Vlan,
    /// Radio signal strength and bit rates.
    Signal,
    /// Traffic and error counters.
    Traffic,
    /// Clients joining, leaving and moving between radios.
    Movement,
    /// Captured packet headers, which hold addresses of both ends.
    PacketHeaders,
    /// The device's OS, model and kernel.
    Software,
    /// The device's uptime.
    Uptime,
    /// Equipment heard on the device's ports (LLDP).
    Neighbours,
    /// Per-application session summaries, and the application of a WAN
    /// destination row.
    Applications,
    /// What a client's device is: type, model, OS, the MAC's vendor, and
    /// how sure that is.
    DeviceDetails,
    /// The site (DNS name) a client reached.
    Site,
}

/// Whom a visited field is about, within its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The record as a whole: a device's metadata, one captured packet.
    Record,
    /// One client [`Entry`] of a report about many clients.
    Client,
    /// The reporting device's own part of a report about its clients (its
    /// location, its radios); the device's own records are its metadata.
    Reporter,
}

/// One visited field of one record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// Metadata: the device's hostname.
    DeviceHostname,
    /// Metadata: OS name.
    OsName,
    /// Metadata: OS version.
    OsVersion,
    /// Metadata: hardware model.
    Model,
    /// Metadata: kernel release.
    Kernel,
    /// Metadata: seconds since boot.
    Uptime,
    /// Metadata: an interface's MAC address.
    InterfaceMac,
    /// Metadata: an interface's IP addresses.
    InterfaceAddresses,
    /// Metadata: one of an interface's cumulative counters.
    InterfaceCounter,
    /// Counter report: the per-interface changes.
    InterfaceDeltas,
    /// Capture: a MAC address in the kept headers, also one inside an IPv6
    /// address's EUI-64 interface identifier.
    CaptureMac,
    /// Capture: the kept headers as a whole.
    CaptureHeaders,
    /// Device-kind reports: the reporting device's configured location.
    DeviceLocation,
    /// Wireless: a radio's BSSID.
    RadioBssid,
    /// Wireless: a station's MAC address.
    StationMac,
    /// Wireless: a station's IP addresses.
    StationAddresses,
    /// Wireless: a station's hostname.
    StationHostname,
    /// Wireless: a station's username.
    StationUsername,
    /// Wireless: a station's user agent.
    StationUserAgent,
    /// Wireless: a station's VLAN.
    StationVlan,
    /// Wireless: one of a station's signal or bit rate readings.
    StationSignal,
    /// Wireless: one of a station's traffic counters.
    StationCounter,
    /// Wireless: the roaming events as a list.
    RoamingEvents,
    /// Wireless: a roaming event's MAC address.
    RoamMac,
    /// Wired: the ports' VLAN membership.
    PortVlans,
    /// Wired: a learned host's MAC address.
    HostMac,
    /// Wired: a learned host's IP addresses.
    HostAddresses,
    /// Wired: a learned host's hostname.
    HostHostname,
    /// Wired: a learned host's username.
    HostUsername,
    /// Wired: the VLAN a host was learned in.
    HostVlan,
    /// Wired: the LLDP neighbours as a list.
    LldpNeighbours,
    /// WAN: the per-application summaries.
    Applications,
    /// Client devices: the client's MAC address.
    ClientDeviceMac,
    /// Client devices: the device type.
    ClientDeviceType,
    /// Client devices: the model.
    ClientDeviceModel,
    /// Client devices: the OS.
    ClientDeviceOs,
    /// Client devices: the MAC's vendor.
    ClientDeviceVendor,
    /// Client devices: the confidence.
    ClientDeviceConfidence,
    /// Client devices: the signals used.
    ClientDeviceEvidence,
    /// WAN destinations: a row's client MAC address.
    WanClientMac,
    /// WAN destinations: a row's client address (LAN side).
    WanClientAddress,
    /// WAN destinations: a row's destination address.
    WanDestinationAddress,
    /// WAN destinations: a row's application name.
    WanApplication,
    /// WAN destinations: a row's site name.
    WanSite,
    /// WAN destinations: one of a row's session and traffic counters.
    WanCounter,
}

impl Field {
    /// Every field, for listings and tests.
    pub const ALL: [Field; 45] = [
        Field::DeviceHostname,
        Field::OsName,
        Field::OsVersion,
        Field::Model,
        Field::Kernel,
        Field::Uptime,
        Field::InterfaceMac,
        Field::InterfaceAddresses,
        Field::InterfaceCounter,
        Field::InterfaceDeltas,
        Field::CaptureMac,
        Field::CaptureHeaders,
        Field::DeviceLocation,
        Field::RadioBssid,
        Field::StationMac,
        Field::StationAddresses,
        Field::StationHostname,
        Field::StationUsername,
        Field::StationUserAgent,
        Field::StationVlan,
        Field::StationSignal,
        Field::StationCounter,
        Field::RoamingEvents,
        Field::RoamMac,
        Field::PortVlans,
        Field::HostMac,
        Field::HostAddresses,
        Field::HostHostname,
        Field::HostUsername,
        Field::HostVlan,
        Field::LldpNeighbours,
        Field::Applications,
        Field::ClientDeviceMac,
        Field::ClientDeviceType,
        Field::ClientDeviceModel,
        Field::ClientDeviceOs,
        Field::ClientDeviceVendor,
        Field::ClientDeviceConfidence,
        Field::ClientDeviceEvidence,
        Field::WanClientMac,
        Field::WanClientAddress,
        Field::WanDestinationAddress,
        Field::WanApplication,
        Field::WanSite,
        Field::WanCounter,
    ];

    /// What kind of information the field holds.
    pub fn category(self) -> Category {
        match self {
            Field::InterfaceMac
            | Field::CaptureMac
            | Field::RadioBssid
            | Field::StationMac
            | Field::RoamMac
            | Field::HostMac
            | Field::ClientDeviceMac
            | Field::WanClientMac => Category::Mac,
            Field::InterfaceAddresses
            | Field::StationAddresses
            | Field::HostAddresses
            | Field::WanClientAddress
            | Field::WanDestinationAddress => Category::Ip,
            Field::DeviceHostname | Field::StationHostname | Field::HostHostname => Category::Hostname,
            Field::StationUsername | Field::HostUsername => Category::Username,
            Field::StationUserAgent => Category::UserAgent,
            Field::DeviceLocation => Category::Location,
            Field::StationVlan | Field::PortVlans | Field::HostVlan => Category::Vlan,
            Field::StationSignal => Category::Signal,
            Field::InterfaceCounter | Field::InterfaceDeltas | Field::StationCounter | Field::WanCounter => {
                Category::Traffic
            }
            Field::RoamingEvents => Category::Movement,
            Field::CaptureHeaders => Category::PacketHeaders,
            Field::OsName | Field::OsVersion | Field::Model | Field::Kernel => Category::Software,
            Field::Uptime => Category::Uptime,
            Field::LldpNeighbours => Category::Neighbours,
            Field::Applications | Field::WanApplication => Category::Applications,
            Field::WanSite => Category::Site,
            Field::ClientDeviceType
            | Field::ClientDeviceModel
            | Field::ClientDeviceOs
            | Field::ClientDeviceVendor
            | Field::ClientDeviceConfidence
            | Field::ClientDeviceEvidence => Category::DeviceDetails,
        }
    }

    /// Whom, within its record, the field is about.
    pub fn scope(self) -> Scope {
        match self {
            Field::DeviceHostname
            | Field::OsName
            | Field::OsVersion
            | Field::Model
            | Field::Kernel
            | Field::Uptime
            | Field::InterfaceMac
            | Field::InterfaceAddresses
            | Field::InterfaceCounter
            | Field::InterfaceDeltas
            | Field::CaptureMac
            | Field::CaptureHeaders => Scope::Record,
            Field::StationMac
            | Field::StationAddresses
            | Field::StationHostname
            | Field::StationUsername
            | Field::StationUserAgent
            | Field::StationVlan
            | Field::StationSignal
            | Field::StationCounter
            | Field::RoamMac
            | Field::HostMac
            | Field::HostAddresses
            | Field::HostHostname
            | Field::HostUsername
            | Field::HostVlan
            | Field::ClientDeviceMac
            | Field::ClientDeviceType
            | Field::ClientDeviceModel
            | Field::ClientDeviceOs
            | Field::ClientDeviceVendor
            | Field::ClientDeviceConfidence
            | Field::ClientDeviceEvidence
            | Field::WanClientMac
            | Field::WanClientAddress
            | Field::WanDestinationAddress
            | Field::WanApplication
            | Field::WanSite
            | Field::WanCounter => Scope::Client,
            Field::DeviceLocation
            | Field::RadioBssid
            | Field::RoamingEvents
            | Field::PortVlans
            | Field::LldpNeighbours
            | Field::Applications => Scope::Reporter,
        }
    }

    /// The minimisation setting that withholds the field, if any. MAC
    /// addresses are not withheld (they are pseudonymised instead), except
    /// a WAN destination row's client, whose withholding makes the rows
    /// add up across clients; nor are captured headers (capture is not
    /// allowed at all, or allowed).
    pub fn omitted_by(self) -> Option<MetadataField> {
        match self {
            Field::DeviceHostname => Some(MetadataField::Hostname),
            Field::OsName | Field::OsVersion => Some(MetadataField::Os),
            Field::Model => Some(MetadataField::Model),
            Field::Kernel => Some(MetadataField::Kernel),
            Field::Uptime => Some(MetadataField::Uptime),
            Field::InterfaceMac => Some(MetadataField::InterfaceMacs),
            Field::InterfaceAddresses => Some(MetadataField::InterfaceAddresses),
            Field::InterfaceCounter | Field::InterfaceDeltas => Some(MetadataField::InterfaceCounters),
            Field::StationAddresses | Field::HostAddresses => Some(MetadataField::ClientAddresses),
            Field::StationHostname | Field::HostHostname => Some(MetadataField::ClientHostnames),
            Field::StationUsername | Field::HostUsername => Some(MetadataField::Usernames),
            Field::StationUserAgent => Some(MetadataField::UserAgents),
            Field::StationVlan | Field::PortVlans | Field::HostVlan => Some(MetadataField::Vlans),
            Field::StationSignal => Some(MetadataField::ClientSignal),
            Field::StationCounter | Field::WanCounter => Some(MetadataField::ClientCounters),
            Field::RoamingEvents => Some(MetadataField::Roaming),
            Field::DeviceLocation => Some(MetadataField::Location),
            Field::LldpNeighbours => Some(MetadataField::Lldp),
            Field::Applications | Field::WanApplication => Some(MetadataField::Applications),
            Field::WanClientMac | Field::WanClientAddress => Some(MetadataField::WanClients),
            Field::WanDestinationAddress => Some(MetadataField::WanDestinations),
            Field::WanSite => Some(MetadataField::WanSites),
            Field::ClientDeviceType
            | Field::ClientDeviceModel
            | Field::ClientDeviceOs
            | Field::ClientDeviceVendor
            | Field::ClientDeviceConfidence
            | Field::ClientDeviceEvidence => Some(MetadataField::ClientDevices),
            Field::CaptureMac
            | Field::CaptureHeaders
            | Field::RadioBssid
            | Field::StationMac
            | Field::RoamMac
            | Field::HostMac
            | Field::ClientDeviceMac => None,
        }
    }
}

/// A value the visitors only need to show or clear (counters, readings,
/// lists withheld as a whole).
pub trait Detail: fmt::Debug {
    /// Sets the value to its empty form.
    fn clear(&mut self);
}

impl<T: fmt::Debug + Default> Detail for T {
    fn clear(&mut self) {
        *self = T::default();
    }
}

/// A list of IP addresses, whatever its bound.
pub trait AddressList: fmt::Debug {
    /// The addresses.
    fn addresses(&self) -> &[IpAddr];
    /// The addresses, to change in place.
    fn addresses_mut(&mut self) -> &mut [IpAddr];
    /// Removes them all.
    fn clear(&mut self);
}

impl<const MAX: usize> AddressList for BoundedVec<IpAddr, MAX> {
    fn addresses(&self) -> &[IpAddr] {
        self
    }
    fn addresses_mut(&mut self) -> &mut [IpAddr] {
        self.as_mut_slice()
    }
    fn clear(&mut self) {
        *self = BoundedVec::new();
    }
}

impl AddressList for Option<IpAddr> {
    fn addresses(&self) -> &[IpAddr] {
        self.as_slice()
    }
    fn addresses_mut(&mut self) -> &mut [IpAddr] {
        self.as_mut_slice()
    }
    fn clear(&mut self) {
        *self = None;
    }
}

/// A visited field's value, to read.
#[derive(Debug, Clone, Copy)]
pub enum FieldRef<'a> {
    /// A MAC address, or none (an interface without one).
    Mac(Option<MacAddr>),
    /// IP addresses.
    Addresses(&'a [IpAddr]),
    /// Text; empty when not known or withheld.
    Text(&'a str),
    /// A location.
    Location(&'a Location),
    /// A captured packet's headers (with its link type, to parse them).
    Packet(&'a CapturedPacket),
    /// Anything else, to show.
    Detail(&'a dyn fmt::Debug),
}

/// A visited field's value, to change.
#[derive(Debug)]
pub enum FieldMut<'a> {
    /// A MAC address that is always present.
    Mac(&'a mut MacAddr),
    /// A MAC address that may be absent.
    OptionalMac(&'a mut Option<MacAddr>),
    /// IP addresses.
    Addresses(&'a mut dyn AddressList),
    /// Text.
    Text(&'a mut BoundedString<MAX_TEXT>),
    /// Text that may be absent.
    OptionalText(&'a mut Option<BoundedString<MAX_TEXT>>),
    /// A location.
    Location(&'a mut Location),
    /// A captured packet, to read only: the MAC addresses in it are visited
    /// separately as [`Field::CaptureMac`], and its headers are never
    /// cleared (that is the capture policy's job).
    Packet(&'a CapturedPacket),
    /// Anything else.
    Detail(&'a mut dyn Detail),
}

impl FieldMut<'_> {
    /// The value, to read.
    pub fn as_ref(&self) -> FieldRef<'_> {
        match self {
            FieldMut::Mac(mac) => FieldRef::Mac(Some(**mac)),
            FieldMut::OptionalMac(mac) => FieldRef::Mac(**mac),
            FieldMut::Addresses(list) => FieldRef::Addresses(list.addresses()),
            FieldMut::Text(text) => FieldRef::Text(text.as_str()),
            FieldMut::OptionalText(text) => FieldRef::Text(text.as_ref().map_or("", |t| t.as_str())),
            FieldMut::Location(location) => FieldRef::Location(location),
            FieldMut::Packet(packet) => FieldRef::Packet(packet),
            FieldMut::Detail(detail) => FieldRef::Detail(&**detail),
        }
    }

    /// Empties the value: no text, no addresses, `None`, zero, an empty
    /// list. A MAC that is always present becomes all zeroes, though no
    /// setting withholds one. A captured packet is left as it is.
    pub fn clear(&mut self) {
        match self {
            FieldMut::Mac(mac) => **mac = MacAddr::default(),
            FieldMut::OptionalMac(mac) => **mac = None,
            FieldMut::Addresses(list) => list.clear(),
            FieldMut::Text(text) => **text = BoundedString::default(),
            FieldMut::OptionalText(text) => **text = None,
            FieldMut::Location(location) => **location = Location::default(),
            FieldMut::Packet(_) => {}
            FieldMut::Detail(detail) => detail.clear(),
        }
    }

    /// Replaces the MAC address inside each IPv6 address of this value, if
    /// it is a list of addresses, by `rewrite(address)`: the interface
    /// identifier of a SLAAC or link-local address made from a MAC
    /// (modified EUI-64) is that MAC in another form, and is rewritten as
    /// the EUI-64 form of the new one, prefix kept.
    pub fn rewrite_ipv6_macs(&mut self, mut rewrite: impl FnMut(MacAddr) -> MacAddr) {
        if let FieldMut::Addresses(list) = self {
            for address in list.addresses_mut() {
                if let IpAddr::V6(v6) = address {
                    *v6 = crate::capture::macs::rewrite_ipv6_mac(*v6, &mut rewrite);
                }
            }
        }
    }

    /// Replaces the MAC address this value is, if it is one, by
    /// `rewrite(address)`.
    pub fn rewrite_mac(&mut self, rewrite: impl FnOnce(MacAddr) -> MacAddr) {
        match self {
            FieldMut::Mac(mac) => **mac = rewrite(**mac),
            FieldMut::OptionalMac(Some(mac)) => *mac = rewrite(*mac),
            FieldMut::OptionalMac(None)
            | FieldMut::Addresses(_)
            | FieldMut::Text(_)
            | FieldMut::OptionalText(_)
            | FieldMut::Location(_)
            | FieldMut::Packet(_)
            | FieldMut::Detail(_) => {}
        }
    }
}

/// One client's entry in a report about many clients.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// An associated Wi-Fi station.
    Station(&'a Station),
    /// A station joining, leaving or moving.
    Roam(&'a RoamEvent),
    /// A host a switch learned.
    WiredHost(&'a WiredHost),
    /// What an access point inferred about a client's device.
    ClientDevice(&'a ClientDevice),
    /// One client's sessions to one WAN destination.
    WanDestination(&'a WanDestination),
}

impl Entry<'_> {
    /// The client's MAC address: every entry has one except a WAN
    /// destination row whose client is not on the LAN or is withheld.
    pub fn client_mac(&self) -> Option<MacAddr> {
        match self {
            Entry::Station(station) => Some(station.mac),
            Entry::Roam(event) => Some(event.mac),
            Entry::WiredHost(host) => Some(host.mac),
            Entry::WanDestination(row) => row.client_mac,
            Entry::ClientDevice(device) => Some(device.mac),
        }
    }

    /// Visits the entry's fields (not the entry itself).
    pub fn visit(&self, visitor: &mut dyn Visit) {
        match self {
            Entry::Station(station) => visit_station(station, visitor),
            Entry::Roam(event) => visit_roam(event, visitor),
            Entry::WiredHost(host) => visit_host(host, visitor),
            Entry::ClientDevice(device) => visit_client_device(device, visitor),
            Entry::WanDestination(row) => visit_wan_destination(row, visitor),
        }
    }
}

/// A read-only walk's callbacks.
pub trait Visit {
    /// Called for every visited field.
    fn field(&mut self, field: Field, value: FieldRef<'_>);

    /// Called for each client entry, before its fields. Entries of one
    /// report come in order: stations, then roaming events; learned hosts.
    fn entry(&mut self, _entry: Entry<'_>) {}
}

/// A changing walk's callbacks.
pub trait VisitMut {
    /// Called for every visited field.
    fn field(&mut self, field: Field, value: FieldMut<'_>);

    /// Called for each client entry before its fields: whether to keep it.
    /// Entries come in the order of [`Visit::entry`]. A list withheld as a
    /// whole ([`Field::RoamingEvents`]) is visited before its entries, so
    /// clearing it leaves none to visit.
    fn keep_entry(&mut self, _entry: Entry<'_>) -> bool {
        true
    }
}

/// Visits `body`'s fields with a closure (entries are not reported).
pub fn visit_fields(body: &RecordBody, each: impl FnMut(Field, FieldRef<'_>)) {
    struct Fields<F>(F);
    impl<F: FnMut(Field, FieldRef<'_>)> Visit for Fields<F> {
        fn field(&mut self, field: Field, value: FieldRef<'_>) {
            (self.0)(field, value);
        }
    }
    visit(body, &mut Fields(each));
}

/// Visits `body`'s fields with a closure that may change them (every entry
/// is kept).
pub fn visit_fields_mut(body: &mut RecordBody, each: impl FnMut(Field, FieldMut<'_>)) {
    struct Fields<F>(F);
    impl<F: FnMut(Field, FieldMut<'_>)> VisitMut for Fields<F> {
        fn field(&mut self, field: Field, value: FieldMut<'_>) {
            (self.0)(field, value);
        }
    }
    visit_mut(body, &mut Fields(each));
}

/// Visits every field of `body` that this module covers (see the module
/// header).
pub fn visit(body: &RecordBody, visitor: &mut dyn Visit) {
    match body {
        RecordBody::Metadata(metadata) => visit_metadata(metadata, visitor),
        RecordBody::Capture(packet) => {
            let CapturedPacket { timestamp_us: _, interface: _, link_type: _, wire_len: _, headers } = packet;
            if let Some(link) = packet.link() {
                for mac in mac_sites(link, headers).into_iter().filter_map(|site| site.read(headers)) {
                    visitor.field(Field::CaptureMac, FieldRef::Mac(Some(mac)));
                }
            }
            visitor.field(Field::CaptureHeaders, FieldRef::Packet(packet));
        }
        RecordBody::AgentHealth(health) => {
            // Counts of lost records: nothing about anyone.
            let AgentHealth { dropped_metadata: _, dropped_captures: _, discarded_corrupt_spool: _ } = health;
        }
        RecordBody::SpoolRecovery(recovery) => {
            // Counts again.
            let SpoolRecovery { damaged_entries: _, records_lost: _, records_kept: _, discarded: _ } = recovery;
        }
        RecordBody::Diagnostics(bundle) => {
            let (model, serial_number) = diagnostics_hold_no_one(bundle);
            visitor.field(Field::Model, FieldRef::Text(model.as_str()));
            visitor.field(Field::Model, FieldRef::Text(serial_number.as_str()));
        }
        RecordBody::Counters(report) => {
            let CounterReport { interval_ms: _, interfaces } = report;
            interfaces.iter().for_each(delta_holds_no_one);
            visitor.field(Field::InterfaceDeltas, FieldRef::Detail(interfaces));
        }
        RecordBody::Wireless(report) => {
            let WirelessReport { device, radios, stations, roaming } = &**report;
            visit_profile(device, visitor);
            for radio in radios {
                let Radio {
                    interface: _,
                    ssid: _,
                    bssid,
                    mode: _,
                    frequency_mhz: _,
                    channel: _,
                    width_mhz: _,
                    tx_power_mbm: _,
                    stations: _,
                } = radio;
                visitor.field(Field::RadioBssid, FieldRef::Mac(*bssid));
            }
            for station in stations {
                visitor.entry(Entry::Station(station));
                visit_station(station, visitor);
            }
            visitor.field(Field::RoamingEvents, FieldRef::Detail(roaming));
            for event in roaming {
                visitor.entry(Entry::Roam(event));
                visit_roam(event, visitor);
            }
        }
        RecordBody::Wired(report) => {
            let WiredReport { device, ports, hosts, neighbours } = &**report;
            visit_profile(device, visitor);
            ports.iter().for_each(port_holds_no_one);
            visitor.field(Field::PortVlans, FieldRef::Detail(ports));
            for host in hosts {
                visitor.entry(Entry::WiredHost(host));
                visit_host(host, visitor);
            }
            for neighbour in neighbours {
                lldp_holds_no_one(neighbour);
            }
            visitor.field(Field::LldpNeighbours, FieldRef::Detail(neighbours));
        }
        RecordBody::Wan(report) => {
            let WanReport {
                device,
                wan_interfaces: _,
                interval_ms: _,
                active_sessions: _,
                untracked_sessions: _,
                applications,
            } = &**report;
            visit_profile(device, visitor);
            for application in applications {
                application_holds_no_one(application);
            }
            visitor.field(Field::Applications, FieldRef::Detail(applications));
        }
        RecordBody::ClientDevices(report) => {
            let ClientDeviceReport { clients } = &**report;
            for device in clients {
                visitor.entry(Entry::ClientDevice(device));
                visit_client_device(device, visitor);
            }
        }
        RecordBody::WanDestinations(report) => {
            let WanDestinationReport { device, interval_ms: _, destinations, folded_rows: _, folded } = &**report;
            visit_profile(device, visitor);
            for row in destinations {
                visitor.entry(Entry::WanDestination(row));
                visit_wan_destination(row, visitor);
            }
            // The rows beyond the bound, added up across clients.
            folded_holds_no_one(folded);
        }
    }
}

/// Visits every field of `body` that this module covers, to change it; an
/// entry the visitor does not keep is removed from its report.
pub fn visit_mut(body: &mut RecordBody, visitor: &mut dyn VisitMut) {
    match body {
        RecordBody::Metadata(metadata) => visit_metadata_mut(metadata, visitor),
        RecordBody::Capture(packet) => {
            let CapturedPacket { timestamp_us: _, interface: _, link_type: _, wire_len: _, headers: _ } = packet;
            crate::capture::rewrite_macs(packet, |mut mac| {
                visitor.field(Field::CaptureMac, FieldMut::Mac(&mut mac));
                mac
            });
            visitor.field(Field::CaptureHeaders, FieldMut::Packet(&*packet));
        }
        RecordBody::AgentHealth(health) => {
            let AgentHealth { dropped_metadata: _, dropped_captures: _, discarded_corrupt_spool: _ } = health;
        }
        RecordBody::SpoolRecovery(recovery) => {
            let SpoolRecovery { damaged_entries: _, records_lost: _, records_kept: _, discarded: _ } = recovery;
        }
        RecordBody::Diagnostics(bundle) => {
            let Diagnostics { model, serial_number, .. } = &mut **bundle;
            visitor.field(Field::Model, FieldMut::Text(model));
            visitor.field(Field::Model, FieldMut::Text(serial_number));
        }
        RecordBody::Counters(report) => {
            let CounterReport { interval_ms: _, interfaces } = report;
            interfaces.iter().for_each(delta_holds_no_one);
            visitor.field(Field::InterfaceDeltas, FieldMut::Detail(interfaces));
        }
        RecordBody::Wireless(report) => {
            let WirelessReport { device, radios, stations, roaming } = &mut **report;
            visit_profile_mut(device, visitor);
            for radio in radios.as_mut_slice() {
                let Radio {
                    interface: _,
                    ssid: _,
                    bssid,
                    mode: _,
                    frequency_mhz: _,
                    channel: _,
                    width_mhz: _,
                    tx_power_mbm: _,
                    stations: _,
                } = radio;
                visitor.field(Field::RadioBssid, FieldMut::OptionalMac(bssid));
            }
            for station in retained(stations, visitor, |s| Entry::Station(s)) {
                visit_station_mut(station, visitor);
            }
            visitor.field(Field::RoamingEvents, FieldMut::Detail(roaming));
            for event in retained(roaming, visitor, |e| Entry::Roam(e)) {
                let RoamEvent { mac, event: _, interface: _, previous_interface: _ } = event;
                visitor.field(Field::RoamMac, FieldMut::Mac(mac));
            }
        }
        RecordBody::Wired(report) => {
            let WiredReport { device, ports, hosts, neighbours } = &mut **report;
            visit_profile_mut(device, visitor);
            ports.iter().for_each(port_holds_no_one);
            visitor.field(Field::PortVlans, FieldMut::Detail(ports));
            for host in retained(hosts, visitor, |h| Entry::WiredHost(h)) {
                let WiredHost { mac, port: _, vlan, addresses, hostname, username } = host;
                visitor.field(Field::HostMac, FieldMut::Mac(mac));
                visitor.field(Field::HostAddresses, FieldMut::Addresses(addresses));
                visitor.field(Field::HostHostname, FieldMut::Text(hostname));
                visitor.field(Field::HostUsername, FieldMut::Text(username));
                visitor.field(Field::HostVlan, FieldMut::Detail(vlan));
            }
            for neighbour in neighbours.iter() {
                lldp_holds_no_one(neighbour);
            }
            visitor.field(Field::LldpNeighbours, FieldMut::Detail(neighbours));
        }
        RecordBody::Wan(report) => {
            let WanReport {
                device,
                wan_interfaces: _,
                interval_ms: _,
                active_sessions: _,
                untracked_sessions: _,
                applications,
            } = &mut **report;
            visit_profile_mut(device, visitor);
            for application in applications.iter() {
                application_holds_no_one(application);
            }
            visitor.field(Field::Applications, FieldMut::Detail(applications));
        }
        RecordBody::ClientDevices(report) => {
            let ClientDeviceReport { clients } = &mut **report;
            for device in retained(clients, visitor, |d| Entry::ClientDevice(d)) {
                let ClientDevice { mac, device_type, model, os, vendor, confidence, evidence } = device;
                visitor.field(Field::ClientDeviceMac, FieldMut::Mac(mac));
                visitor.field(Field::ClientDeviceType, FieldMut::Text(device_type));
                visitor.field(Field::ClientDeviceModel, FieldMut::Text(model));
                visitor.field(Field::ClientDeviceOs, FieldMut::Text(os));
                visitor.field(Field::ClientDeviceVendor, FieldMut::Text(vendor));
                visitor.field(Field::ClientDeviceConfidence, FieldMut::Detail(confidence));
                visitor.field(Field::ClientDeviceEvidence, FieldMut::Detail(evidence));
            }
        }
        RecordBody::WanDestinations(report) => {
            let WanDestinationReport { device, interval_ms: _, destinations, folded_rows: _, folded } = &mut **report;
            visit_profile_mut(device, visitor);
            for row in retained(destinations, visitor, |r| Entry::WanDestination(r)) {
                let WanDestination {
                    client_mac,
                    client_address,
                    destination,
                    protocol: _,
                    port: _,
                    application,
                    site,
                    counters,
                } = row;
                visitor.field(Field::WanClientMac, FieldMut::OptionalMac(client_mac));
                visitor.field(Field::WanClientAddress, FieldMut::Addresses(client_address));
                visitor.field(Field::WanDestinationAddress, FieldMut::Addresses(destination));
                visitor.field(Field::WanApplication, FieldMut::Detail(application));
                visitor.field(Field::WanSite, FieldMut::Text(site));
                let DestinationCounters {
                    active_sessions,
                    sessions_started,
                    bytes_out,
                    bytes_in,
                    packets_out,
                    packets_in,
                } = counters;
                let counters: [&mut dyn Detail; 6] =
                    [active_sessions, sessions_started, bytes_out, bytes_in, packets_out, packets_in];
                for counter in counters {
                    visitor.field(Field::WanCounter, FieldMut::Detail(counter));
                }
            }
            folded_holds_no_one(folded);
        }
    }
}

/// Removes from `list` the entries `visitor` does not keep, and returns the
/// rest to visit.
fn retained<'a, T, const MAX: usize>(
    list: &'a mut BoundedVec<T, MAX>,
    visitor: &mut dyn VisitMut,
    entry: impl for<'e> Fn(&'e T) -> Entry<'e>,
) -> &'a mut [T] {
    list.retain(|item| visitor.keep_entry(entry(item)));
    list.as_mut_slice()
}

/// Visits the fields of a device's own metadata.
pub fn visit_metadata(metadata: &DeviceMetadata, visitor: &mut dyn Visit) {
    let DeviceMetadata { kind: _, hostname, os_name, os_version, model, kernel, uptime_secs, interfaces } = metadata;
    visitor.field(Field::DeviceHostname, FieldRef::Text(hostname));
    visitor.field(Field::OsName, FieldRef::Text(os_name));
    visitor.field(Field::OsVersion, FieldRef::Text(os_version));
    visitor.field(Field::Model, FieldRef::Text(model.as_ref().map_or("", |m| m.as_str())));
    visitor.field(Field::Kernel, FieldRef::Text(kernel));
    visitor.field(Field::Uptime, FieldRef::Detail(uptime_secs));
    for interface in interfaces {
        let InterfaceStats {
            name: _,
            mac,
            addresses,
            oper_up: _,
            mtu: _,
            rx_bytes,
            rx_packets,
            rx_errors,
            rx_dropped,
            tx_bytes,
            tx_packets,
            tx_errors,
            tx_dropped,
        } = interface;
        visitor.field(Field::InterfaceMac, FieldRef::Mac(*mac));
        visitor.field(Field::InterfaceAddresses, FieldRef::Addresses(addresses));
        for counter in [rx_bytes, rx_packets, rx_errors, rx_dropped, tx_bytes, tx_packets, tx_errors, tx_dropped] {
            visitor.field(Field::InterfaceCounter, FieldRef::Detail(counter));
        }
    }
}

/// Visits the fields of a device's own metadata, to change them.
pub fn visit_metadata_mut(metadata: &mut DeviceMetadata, visitor: &mut dyn VisitMut) {
    let DeviceMetadata { kind: _, hostname, os_name, os_version, model, kernel, uptime_secs, interfaces } = metadata;
    visitor.field(Field::DeviceHostname, FieldMut::Text(hostname));
    visitor.field(Field::OsName, FieldMut::Text(os_name));
    visitor.field(Field::OsVersion, FieldMut::Text(os_version));
    visitor.field(Field::Model, FieldMut::OptionalText(model));
    visitor.field(Field::Kernel, FieldMut::Text(kernel));
    visitor.field(Field::Uptime, FieldMut::Detail(uptime_secs));
    for interface in interfaces.as_mut_slice() {
        let InterfaceStats {
            name: _,
            mac,
            addresses,
            oper_up: _,
            mtu: _,
            rx_bytes,
            rx_packets,
            rx_errors,
            rx_dropped,
            tx_bytes,
            tx_packets,
            tx_errors,
            tx_dropped,
        } = interface;
        visitor.field(Field::InterfaceMac, FieldMut::OptionalMac(mac));
        visitor.field(Field::InterfaceAddresses, FieldMut::Addresses(addresses));
        for counter in [rx_bytes, rx_packets, rx_errors, rx_dropped, tx_bytes, tx_packets, tx_errors, tx_dropped] {
            visitor.field(Field::InterfaceCounter, FieldMut::Detail(counter));
        }
    }
}

fn visit_profile(profile: &DeviceProfile, visitor: &mut dyn Visit) {
    // The device's name and series are the organisation's, not a person's.
    let DeviceProfile { name: _, series: _, location } = profile;
    visitor.field(Field::DeviceLocation, FieldRef::Location(location));
}

fn visit_profile_mut(profile: &mut DeviceProfile, visitor: &mut dyn VisitMut) {
    let DeviceProfile { name: _, series: _, location } = profile;
    visitor.field(Field::DeviceLocation, FieldMut::Location(location));
}

fn visit_station(station: &Station, visitor: &mut dyn Visit) {
    let Station {
        mac,
        interface: _,
        ssid: _,
        addresses,
        hostname,
        username,
        user_agent,
        vlan,
        signal_dbm,
        signal_avg_dbm,
        tx_bitrate_kbps,
        rx_bitrate_kbps,
        // When it came and was last heard: no setting withholds these.
        connected_secs: _,
        inactive_ms: _,
        rx_bytes,
        tx_bytes,
        rx_packets,
        tx_packets,
        tx_retries,
        tx_failed,
    } = station;
    visitor.field(Field::StationMac, FieldRef::Mac(Some(*mac)));
    visitor.field(Field::StationAddresses, FieldRef::Addresses(addresses));
    visitor.field(Field::StationHostname, FieldRef::Text(hostname));
    visitor.field(Field::StationUsername, FieldRef::Text(username));
    visitor.field(Field::StationUserAgent, FieldRef::Text(user_agent));
    visitor.field(Field::StationVlan, FieldRef::Detail(vlan));
    let signal: [&dyn fmt::Debug; 4] = [signal_dbm, signal_avg_dbm, tx_bitrate_kbps, rx_bitrate_kbps];
    for reading in signal {
        visitor.field(Field::StationSignal, FieldRef::Detail(reading));
    }
    for counter in [rx_bytes, tx_bytes, rx_packets, tx_packets, tx_retries, tx_failed] {
        visitor.field(Field::StationCounter, FieldRef::Detail(counter));
    }
}

fn visit_station_mut(station: &mut Station, visitor: &mut dyn VisitMut) {
    let Station {
        mac,
        interface: _,
        ssid: _,
        addresses,
        hostname,
        username,
        user_agent,
        vlan,
        signal_dbm,
        signal_avg_dbm,
        tx_bitrate_kbps,
        rx_bitrate_kbps,
        connected_secs: _,
        inactive_ms: _,
        rx_bytes,
        tx_bytes,
        rx_packets,
        tx_packets,
        tx_retries,
        tx_failed,
    } = station;
    visitor.field(Field::StationMac, FieldMut::Mac(mac));
    visitor.field(Field::StationAddresses, FieldMut::Addresses(addresses));
    visitor.field(Field::StationHostname, FieldMut::Text(hostname));
    visitor.field(Field::StationUsername, FieldMut::Text(username));
    visitor.field(Field::StationUserAgent, FieldMut::Text(user_agent));
    visitor.field(Field::StationVlan, FieldMut::Detail(vlan));
    let signal: [&mut dyn Detail; 4] = [signal_dbm, signal_avg_dbm, tx_bitrate_kbps, rx_bitrate_kbps];
    for reading in signal {
        visitor.field(Field::StationSignal, FieldMut::Detail(reading));
    }
    for counter in [rx_bytes, tx_bytes, rx_packets, tx_packets, tx_retries, tx_failed] {
        visitor.field(Field::StationCounter, FieldMut::Detail(counter));
    }
}

fn visit_roam(event: &RoamEvent, visitor: &mut dyn Visit) {
    // Which radios it used is the access point's, not the station's.
    let RoamEvent { mac, event: _, interface: _, previous_interface: _ } = event;
    visitor.field(Field::RoamMac, FieldRef::Mac(Some(*mac)));
}

fn visit_host(host: &WiredHost, visitor: &mut dyn Visit) {
    let WiredHost { mac, port: _, vlan, addresses, hostname, username } = host;
    visitor.field(Field::HostMac, FieldRef::Mac(Some(*mac)));
    visitor.field(Field::HostAddresses, FieldRef::Addresses(addresses));
    visitor.field(Field::HostHostname, FieldRef::Text(hostname));
    visitor.field(Field::HostUsername, FieldRef::Text(username));
    visitor.field(Field::HostVlan, FieldRef::Detail(vlan));
}

fn visit_client_device(device: &ClientDevice, visitor: &mut dyn Visit) {
    let ClientDevice { mac, device_type, model, os, vendor, confidence, evidence } = device;
    visitor.field(Field::ClientDeviceMac, FieldRef::Mac(Some(*mac)));
    visitor.field(Field::ClientDeviceType, FieldRef::Text(device_type));
    visitor.field(Field::ClientDeviceModel, FieldRef::Text(model));
    visitor.field(Field::ClientDeviceOs, FieldRef::Text(os));
    visitor.field(Field::ClientDeviceVendor, FieldRef::Text(vendor));
    visitor.field(Field::ClientDeviceConfidence, FieldRef::Detail(confidence));
    visitor.field(Field::ClientDeviceEvidence, FieldRef::Detail(evidence));
}

fn visit_wan_destination(row: &WanDestination, visitor: &mut dyn Visit) {
    // Protocol and port say what kind of service, as the application does;
    // they are withheld with the destination only through the rows'
    // merging, not on their own.
    let WanDestination { client_mac, client_address, destination, protocol: _, port: _, application, site, counters } =
        row;
    visitor.field(Field::WanClientMac, FieldRef::Mac(*client_mac));
    visitor.field(Field::WanClientAddress, FieldRef::Addresses(client_address.as_slice()));
    visitor.field(Field::WanDestinationAddress, FieldRef::Addresses(destination.as_slice()));
    visitor.field(Field::WanApplication, FieldRef::Detail(application));
    visitor.field(Field::WanSite, FieldRef::Text(site));
    let DestinationCounters { active_sessions, sessions_started, bytes_out, bytes_in, packets_out, packets_in } =
        counters;
    let counters: [&dyn fmt::Debug; 6] =
        [active_sessions, sessions_started, bytes_out, bytes_in, packets_out, packets_in];
    for counter in counters {
        visitor.field(Field::WanCounter, FieldRef::Detail(counter));
    }
}

/// The folded rest of a WAN destination report adds up the sessions of
/// many clients and destinations: nothing in it is about one. Named here
/// so that a field added to it is looked at.
fn folded_holds_no_one(folded: &DestinationCounters) {
    let DestinationCounters {
        active_sessions: _,
        sessions_started: _,
        bytes_out: _,
        bytes_in: _,
        packets_out: _,
        packets_in: _,
    } = folded;
}

/// An LLDP neighbour names network equipment (switches, access points,
/// phones' management ports), not people: nothing in it is visited. Named
/// here so that a field added to it is looked at.
fn lldp_holds_no_one(neighbour: &LldpNeighbour) {
    let LldpNeighbour {
        local_port: _,
        chassis_id: _,
        chassis_id_type: _,
        system_name: _,
        system_description: _,
        management_addresses: _,
        capabilities: _,
        port_id: _,
        port_id_type: _,
        port_description: _,
        vlans: _,
    } = neighbour;
}

/// A port's VLAN membership is the switch's configuration; it is withheld
/// as a whole. Named here so that a field added to it is looked at.
fn port_holds_no_one(port: &PortVlans) {
    let PortVlans { port: _, pvid: _, untagged: _, tagged: _ } = port;
}

/// A diagnostic bundle describes the device and the agent, never the people
/// on its network: the build, the configuration without secrets, the
/// agent's own log lines (which name no client), the spool and which tools
/// worked. Named here so that a field added to it is looked at. The model
/// and serial number are returned: they are the device's hardware, withheld
/// with the metadata's model (`MetadataField::Model`).
fn diagnostics_hold_no_one(bundle: &Diagnostics) -> (&BoundedString<MAX_TEXT>, &BoundedString<MAX_TEXT>) {
    let Diagnostics {
        request_id: _,
        agent_version: _,
        build: _,
        device_kind: _,
        model,
        serial_number,
        config: _,
        recent_logs: _,
        spool,
        connection,
        checks,
    } = bundle;
    let SpoolState { path: _, exists: _, bytes: _, max_bytes: _, mode: _ } = spool;
    if let Some(ConnectionState {
        connected: _,
        collector: _,
        cipher_suite: _,
        queued_records: _,
        dropped_records: _,
        acked_records: _,
        last_error: _,
    }) = connection
    {}
    for Check { name: _, ok: _, detail: _ } in checks.iter() {}
    (model, serial_number)
}

/// An application summary counts sessions of many clients together:
/// nothing in it is about one. Named here so that a field added to it is
/// looked at.
fn application_holds_no_one(application: &ApplicationSessions) {
    let ApplicationSessions {
        application: _,
        protocol: _,
        active_sessions: _,
        sessions_started: _,
        sessions_ended: _,
        bytes_out: _,
        bytes_in: _,
        packets_out: _,
        packets_in: _,
        ended_duration_ms_total: _,
        ended_duration_ms_max: _,
    } = application;
}

/// Counter deltas name interfaces, not people; they are withheld as a
/// whole. Named here so that a field added to them is looked at.
fn delta_holds_no_one(delta: &InterfaceDelta) {
    let InterfaceDelta {
        name: _,
        rx_bytes: _,
        rx_packets: _,
        rx_errors: _,
        rx_dropped: _,
        tx_bytes: _,
        tx_packets: _,
        tx_errors: _,
        tx_dropped: _,
        rx_bytes_per_sec: _,
        tx_bytes_per_sec: _,
        rx_packets_per_sec: _,
        tx_packets_per_sec: _,
        wrapped: _,
        reset: _,
    } = delta;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{BoundedBytes, LinkType};
    use crate::record::{RoamKind, VlanRange};

    /// Which record kind `body` is. Exhaustive, so a new kind does not
    /// compile until it is counted here and given a sample in [`samples`].
    fn kind_index(body: &RecordBody) -> usize {
        match body {
            RecordBody::Metadata(_) => 0,
            RecordBody::Capture(_) => 1,
            RecordBody::AgentHealth(_) => 2,
            RecordBody::Counters(_) => 3,
            RecordBody::Wireless(_) => 4,
            RecordBody::Wired(_) => 5,
            RecordBody::Wan(_) => 6,
            RecordBody::SpoolRecovery(_) => 7,
            RecordBody::ClientDevices(_) => 8,
            RecordBody::Diagnostics(_) => 9,
            RecordBody::WanDestinations(_) => 10,
        }
    }
    const KINDS: usize = 11;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, last])
    }

    fn text<const N: usize>(s: &str) -> BoundedString<N> {
        BoundedString::truncating(s)
    }

    fn ips<const N: usize>(s: &str) -> BoundedVec<IpAddr, N> {
        BoundedVec::truncating(vec![s.parse().unwrap()])
    }

    fn profile(site: &str) -> DeviceProfile {
        DeviceProfile {
            name: text("name"),
            series: text("series"),
            location: Location { site: text(site), latitude: Some(52.5), ..Location::default() },
        }
    }

    fn ethernet_frame() -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend(mac(0x0a).0);
        frame.extend(mac(0x0b).0);
        frame.extend(0x88b5u16.to_be_bytes());
        frame
    }

    fn station() -> Station {
        Station {
            mac: mac(0x11),
            interface: text("wlan0"),
            ssid: text("ssid"),
            addresses: ips("192.0.2.11"),
            hostname: text("station-host"),
            username: text("station-user"),
            user_agent: text("station-agent"),
            vlan: Some(11),
            signal_dbm: Some(-40),
            signal_avg_dbm: Some(-41),
            tx_bitrate_kbps: Some(1001),
            rx_bitrate_kbps: Some(1002),
            connected_secs: Some(7),
            inactive_ms: Some(8),
            rx_bytes: Some(2001),
            tx_bytes: Some(2002),
            rx_packets: Some(2003),
            tx_packets: Some(2004),
            tx_retries: Some(2005),
            tx_failed: Some(2006),
        }
    }

    fn host() -> WiredHost {
        WiredHost {
            mac: mac(0x21),
            port: text("lan1"),
            vlan: Some(21),
            addresses: ips("2001:db8::21"),
            hostname: text("host-host"),
            username: text("host-user"),
        }
    }

    fn port() -> PortVlans {
        PortVlans {
            port: text("lan1"),
            pvid: Some(1),
            untagged: BoundedVec::truncating(vec![VlanRange { first: 1, last: 1 }]),
            tagged: BoundedVec::default(),
        }
    }

    fn neighbour() -> LldpNeighbour {
        LldpNeighbour { local_port: text("lan1"), chassis_id: text("02:00:00:00:00:99"), ..LldpNeighbour::default() }
    }

    fn application() -> ApplicationSessions {
        ApplicationSessions { application: text("https"), protocol: 6, bytes_out: 5, ..ApplicationSessions::default() }
    }

    fn delta() -> InterfaceDelta {
        InterfaceDelta { name: text("eth0"), rx_bytes: 5, ..InterfaceDelta::default() }
    }

    /// One record of each kind, every visited field holding a value of its
    /// own, with what the walk should report for it.
    fn samples() -> Vec<(RecordBody, Vec<(Field, String)>)> {
        let s = |field: Field, value: &str| (field, value.to_owned());
        let metadata = DeviceMetadata {
            kind: None,
            hostname: text("device-host"),
            os_name: text("os-name"),
            os_version: text("os-version"),
            model: Some(text("model")),
            kernel: text("kernel"),
            uptime_secs: 42,
            interfaces: BoundedVec::truncating(vec![InterfaceStats {
                name: text("eth0"),
                mac: Some(mac(0x01)),
                addresses: ips("192.0.2.1"),
                oper_up: true,
                mtu: 1500,
                rx_bytes: 101,
                rx_packets: 102,
                rx_errors: 103,
                rx_dropped: 104,
                tx_bytes: 105,
                tx_packets: 106,
                tx_errors: 107,
                tx_dropped: 108,
            }]),
        };
        let mut metadata_fields = vec![
            s(Field::DeviceHostname, "device-host"),
            s(Field::OsName, "os-name"),
            s(Field::OsVersion, "os-version"),
            s(Field::Model, "model"),
            s(Field::Kernel, "kernel"),
            s(Field::Uptime, "42"),
            s(Field::InterfaceMac, "02:00:00:00:00:01"),
            s(Field::InterfaceAddresses, "192.0.2.1"),
        ];
        metadata_fields.extend((101..=108).map(|n| (Field::InterfaceCounter, n.to_string())));

        let frame = ethernet_frame();
        let capture = CapturedPacket {
            timestamp_us: 1,
            interface: text("eth0"),
            link_type: LinkType::Ethernet.dlt(),
            wire_len: 60,
            headers: BoundedBytes::try_from_vec(frame.clone()).unwrap(),
        };

        let wireless = WirelessReport {
            device: profile("wireless-site"),
            radios: BoundedVec::truncating(vec![Radio { bssid: Some(mac(0x10)), ..Radio::default() }]),
            stations: BoundedVec::truncating(vec![station()]),
            roaming: BoundedVec::truncating(vec![RoamEvent {
                mac: mac(0x12),
                event: RoamKind::Moved,
                interface: text("wlan1"),
                previous_interface: Some(text("wlan0")),
            }]),
        };
        let mut wireless_fields = vec![
            s(Field::DeviceLocation, "wireless-site"),
            s(Field::RadioBssid, "02:00:00:00:00:10"),
            s(Field::StationMac, "02:00:00:00:00:11"),
            s(Field::StationAddresses, "192.0.2.11"),
            s(Field::StationHostname, "station-host"),
            s(Field::StationUsername, "station-user"),
            s(Field::StationUserAgent, "station-agent"),
            s(Field::StationVlan, "Some(11)"),
            s(Field::StationSignal, "Some(-40)"),
            s(Field::StationSignal, "Some(-41)"),
            s(Field::StationSignal, "Some(1001)"),
            s(Field::StationSignal, "Some(1002)"),
        ];
        wireless_fields.extend((2001..=2006).map(|n| (Field::StationCounter, format!("Some({n})"))));
        wireless_fields.push((Field::RoamingEvents, format!("{:?}", wireless.roaming)));
        wireless_fields.push(s(Field::RoamMac, "02:00:00:00:00:12"));

        let wired = WiredReport {
            device: profile("wired-site"),
            ports: BoundedVec::truncating(vec![port()]),
            hosts: BoundedVec::truncating(vec![host()]),
            neighbours: BoundedVec::truncating(vec![neighbour()]),
        };
        let wired_fields = vec![
            s(Field::DeviceLocation, "wired-site"),
            (Field::PortVlans, format!("{:?}", wired.ports)),
            s(Field::HostMac, "02:00:00:00:00:21"),
            s(Field::HostAddresses, "2001:db8::21"),
            s(Field::HostHostname, "host-host"),
            s(Field::HostUsername, "host-user"),
            s(Field::HostVlan, "Some(21)"),
            (Field::LldpNeighbours, format!("{:?}", wired.neighbours)),
        ];

        let wan = WanReport {
            device: profile("wan-site"),
            wan_interfaces: BoundedVec::truncating(vec![text("wan")]),
            interval_ms: 1,
            active_sessions: 2,
            untracked_sessions: 3,
            applications: BoundedVec::truncating(vec![application()]),
        };
        let wan_fields =
            vec![s(Field::DeviceLocation, "wan-site"), (Field::Applications, format!("{:?}", wan.applications))];

        let client_devices = ClientDeviceReport {
            clients: BoundedVec::truncating(vec![ClientDevice {
                mac: mac(0x31),
                device_type: text("device-type"),
                model: text("device-model"),
                os: text("device-os"),
                vendor: text("device-vendor"),
                confidence: 87,
                evidence: BoundedVec::truncating(vec![crate::record::Evidence::DhcpOptions]),
            }]),
        };
        let client_device_fields = vec![
            s(Field::ClientDeviceMac, "02:00:00:00:00:31"),
            s(Field::ClientDeviceType, "device-type"),
            s(Field::ClientDeviceModel, "device-model"),
            s(Field::ClientDeviceOs, "device-os"),
            s(Field::ClientDeviceVendor, "device-vendor"),
            s(Field::ClientDeviceConfidence, "87"),
            s(Field::ClientDeviceEvidence, "[DhcpOptions]"),
        ];
        let destinations = WanDestinationReport {
            device: profile("dest-site"),
            interval_ms: 30_000,
            destinations: BoundedVec::truncating(vec![WanDestination {
                client_mac: Some(mac(0x31)),
                client_address: Some("192.168.1.23".parse().unwrap()),
                destination: Some("2001:db8::7".parse().unwrap()),
                protocol: 6,
                port: Some(443),
                application: text("https"),
                site: text("www.example.com"),
                counters: DestinationCounters {
                    active_sessions: 1,
                    sessions_started: 2,
                    bytes_out: 3,
                    bytes_in: 4,
                    packets_out: 5,
                    packets_in: 6,
                },
            }]),
            folded_rows: 1,
            folded: DestinationCounters { bytes_in: 9, ..DestinationCounters::default() },
        };
        let destination_fields = vec![
            s(Field::DeviceLocation, "dest-site"),
            s(Field::WanClientMac, "02:00:00:00:00:31"),
            s(Field::WanClientAddress, "192.168.1.23"),
            s(Field::WanDestinationAddress, "2001:db8::7"),
            s(Field::WanApplication, "\"https\""),
            s(Field::WanSite, "www.example.com"),
            s(Field::WanCounter, "1"),
            s(Field::WanCounter, "2"),
            s(Field::WanCounter, "3"),
            s(Field::WanCounter, "4"),
            s(Field::WanCounter, "5"),
            s(Field::WanCounter, "6"),
        ];

        let counters = CounterReport { interval_ms: 30_000, interfaces: BoundedVec::truncating(vec![delta()]) };
        let counter_fields = vec![(Field::InterfaceDeltas, format!("{:?}", counters.interfaces))];

        vec![
            (RecordBody::Metadata(metadata), metadata_fields),
            (
                RecordBody::Capture(capture),
                vec![
                    s(Field::CaptureMac, "02:00:00:00:00:0a"),
                    s(Field::CaptureMac, "02:00:00:00:00:0b"),
                    (Field::CaptureHeaders, hex::encode(&frame)),
                ],
            ),
            (
                RecordBody::AgentHealth(AgentHealth {
                    dropped_metadata: 1,
                    dropped_captures: 2,
                    discarded_corrupt_spool: true,
                }),
                vec![],
            ),
            (RecordBody::Counters(counters), counter_fields),
            (RecordBody::Wireless(Box::new(wireless)), wireless_fields),
            (RecordBody::Wired(Box::new(wired)), wired_fields),
            (RecordBody::Wan(Box::new(wan)), wan_fields),
            (
                RecordBody::SpoolRecovery(SpoolRecovery {
                    damaged_entries: 1,
                    records_lost: 1,
                    records_kept: 32,
                    discarded: false,
                }),
                vec![],
            ),
            (RecordBody::ClientDevices(Box::new(client_devices)), client_device_fields),
            (
                RecordBody::Diagnostics(Box::new(Diagnostics {
                    request_id: 7,
                    agent_version: text("0.2.0"),
                    model: text("diag-model"),
                    serial_number: text("diag-serial"),
                    config: text("[identity]\n"),
                    checks: BoundedVec::truncating(vec![crate::record::Check {
                        name: text("iw"),
                        ok: true,
                        detail: text("/usr/sbin/iw"),
                    }]),
                    ..Default::default()
                })),
                vec![s(Field::Model, "diag-model"), s(Field::Model, "diag-serial")],
            ),
            (RecordBody::WanDestinations(Box::new(destinations)), destination_fields),
        ]
    }

    fn render(value: FieldRef<'_>) -> String {
        match value {
            FieldRef::Mac(mac) => mac.map_or_else(|| "none".to_owned(), |m| m.to_string()),
            FieldRef::Addresses(addresses) => addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            FieldRef::Text(text) => text.to_owned(),
            FieldRef::Location(location) => location.site.as_str().to_owned(),
            FieldRef::Packet(packet) => hex::encode(&packet.headers),
            FieldRef::Detail(detail) => format!("{detail:?}"),
        }
    }

    fn seen(body: &RecordBody) -> Vec<(Field, String)> {
        let mut out = Vec::new();
        visit_fields(body, |field, value| out.push((field, render(value))));
        out
    }

    #[test]
    fn every_personal_field_of_every_record_kind_is_visited() {
        let samples = samples();
        let mut kinds: Vec<usize> = samples.iter().map(|(body, _)| kind_index(body)).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, (0..KINDS).collect::<Vec<_>>(), "one sample of each record kind");

        let mut fields = std::collections::BTreeSet::new();
        for (body, expected) in &samples {
            assert_eq!(&seen(body), expected, "{body:?}");
            let mut changing = Vec::new();
            visit_fields_mut(&mut body.clone(), |field, value| changing.push((field, render(value.as_ref()))));
            assert_eq!(&changing, expected, "both walks agree");
            fields.extend(expected.iter().map(|(field, _)| *field));
        }
        assert_eq!(fields, Field::ALL.into_iter().collect(), "every field is some record kind's");
    }

    #[test]
    fn personal_categories_are_where_they_should_be() {
        let of = |category| Field::ALL.into_iter().filter(|f| f.category() == category).collect::<Vec<_>>();
        use Field::*;
        assert_eq!(
            of(Category::Mac),
            [InterfaceMac, CaptureMac, RadioBssid, StationMac, RoamMac, HostMac, ClientDeviceMac, WanClientMac]
        );
        assert_eq!(
            of(Category::Ip),
            [InterfaceAddresses, StationAddresses, HostAddresses, WanClientAddress, WanDestinationAddress]
        );
        assert_eq!(of(Category::Site), [WanSite]);
        assert_eq!(
            of(Category::DeviceDetails),
            [
                ClientDeviceType,
                ClientDeviceModel,
                ClientDeviceOs,
                ClientDeviceVendor,
                ClientDeviceConfidence,
                ClientDeviceEvidence
            ]
        );
        assert_eq!(of(Category::Username), [StationUsername, HostUsername]);
        assert_eq!(of(Category::Hostname), [DeviceHostname, StationHostname, HostHostname]);
        assert_eq!(of(Category::UserAgent), [StationUserAgent]);
        assert_eq!(of(Category::Location), [DeviceLocation]);
        for field in Field::ALL {
            let withheld_or_pseudonymised = field.omitted_by().is_some() || field.category() == Category::Mac;
            assert!(
                withheld_or_pseudonymised || field == CaptureHeaders,
                "{field:?} is neither withheld nor pseudonymised"
            );
        }
    }

    #[test]
    fn cleared_fields_hold_nothing_and_unkept_entries_go() {
        struct ClearAll;
        impl VisitMut for ClearAll {
            fn field(&mut self, _: Field, mut value: FieldMut<'_>) {
                value.clear();
            }
            fn keep_entry(&mut self, _: Entry<'_>) -> bool {
                false
            }
        }
        for (mut body, _) in samples() {
            visit_mut(&mut body, &mut ClearAll);
            for (field, value) in seen(&body) {
                let empty = ["", "none", "0", "None", "[]", "00:00:00:00:00:00", "\"\""];
                // Headers are never cleared (their MACs are, above).
                let headers = field == Field::CaptureHeaders;
                assert!(empty.contains(&value.as_str()) || headers, "{field:?} still holds {value}");
            }
            match &body {
                RecordBody::Wireless(report) => assert!(report.stations.is_empty() && report.roaming.is_empty()),
                RecordBody::Wired(report) => assert!(report.hosts.is_empty() && report.neighbours.is_empty()),
                RecordBody::WanDestinations(report) => assert!(report.destinations.is_empty()),
                RecordBody::Metadata(_)
                | RecordBody::Capture(_)
                | RecordBody::AgentHealth(_)
                | RecordBody::SpoolRecovery(_)
                | RecordBody::Counters(_)
                | RecordBody::Wan(_)
                | RecordBody::Diagnostics(_) => {}
                RecordBody::ClientDevices(report) => assert!(report.clients.is_empty()),
            }
        }
    }

    /// The stored form of every record kind, byte for byte: postcard has
    /// no field names, so reordering or retyping a stored field (say, to
    /// share one counters type) would make stored segments unreadable.
    #[test]
    fn stored_records_keep_their_postcard_layout() {
        const STORED: [&str; KINDS] = [
            "80a0abfef96200000b6465766963652d686f7374076f732d6e616d650a6f732d76657273696f6e01056d6f64656c066b65726e656c2a010465746830010200000000010100c000020101dc0b65666768696a6b6c",
            "80a0abfef96201020465746830013c0e02000000000a02000000000b88b5",
            "80a0abfef96202010201",
            "80a0abfef96203b0ea010104657468300500000000000000000000000000",
            "80a0abfef96204046e616d65067365726965730d776972656c6573732d73697465000000010000000000404a4000010000010200000000100000000000000102000000001105776c616e3004737369640100c000020b0c73746174696f6e2d686f73740c73746174696f6e2d757365720d73746174696f6e2d6167656e74010b01d801d701e90701ea070107010801d10f01d20f01d30f01d40f01d50f01d60f010200000000120205776c616e310105776c616e30",
            "80a0abfef96205046e616d65067365726965730a77697265642d73697465000000010000000000404a400001046c616e3101010101010001020000000021046c616e310115010120010db800000000000000000000002109686f73742d686f737409686f73742d7573657201046c616e311130323a30303a30303a30303a30303a3939000000000000000000",
            "80a0abfef96206046e616d65067365726965730877616e2d73697465000000010000000000404a4000010377616e0102030105687474707306000000050000000000",
            "80a0abfef9620701012000",
            "80a0abfef96208010200000000310b6465766963652d747970650c6465766963652d6d6f64656c096465766963652d6f730d6465766963652d76656e646f72570100",
            "80a0abfef962090705302e322e3000000a646961672d6d6f64656c0b646961672d73657269616c0b5b6964656e746974795d0a0000000000000001026977010c2f7573722f7362696e2f6977",
            "80a0abfef9620a046e616d650673657269657309646573742d73697465000000010000000000404a4000b0ea0101010200000000310100c0a80117010120010db80000000000000000000000070601bb030568747470730f7777772e6578616d706c652e636f6d01020304050601000000090000",
        ];
        for ((body, _), stored) in samples().into_iter().zip(STORED) {
            let record = crate::record::Record { observed_at_ms: 1_700_000_000_000, body };
            assert_eq!(hex::encode(postcard::to_stdvec(&record).unwrap()), stored, "{:?}", record.body);
            assert_eq!(postcard::from_bytes::<crate::record::Record>(&hex::decode(stored).unwrap()).unwrap(), record);
        }
    }

    proptest::proptest! {
        /// Any captured bytes: both walks see the same MACs, and writing
        /// back what was read changes nothing.
        #[test]
        fn capture_walks_agree_and_never_panic(
            headers in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=crate::capture::MAX_HEADER_BYTES),
            link_type in proptest::sample::select(vec![0u32, 1, 105, 113, 127, 147, 276]),
        ) {
            let packet = CapturedPacket {
                timestamp_us: 0,
                interface: text("eth0"),
                link_type,
                wire_len: 0,
                headers: BoundedBytes::try_from_vec(headers).unwrap(),
            };
            let body = RecordBody::Capture(packet);
            let read = seen(&body);
            let mut copy = body.clone();
            let mut changing = Vec::new();
            visit_fields_mut(&mut copy, |field, value| changing.push((field, render(value.as_ref()))));
            proptest::prop_assert_eq!(&read, &changing);
            proptest::prop_assert_eq!(copy, body);
            proptest::prop_assert_eq!(read.last().map(|(field, _)| *field), Some(Field::CaptureHeaders));
        }
    }
}
