//! The admin protocol: what `glimpse-collector` admin commands send to a
//! running collector's admin port, over the same frames as the agent
//! protocol and mutual TLS with an admin certificate.
//!
//! Each connection carries one request and one reply. Compatibility rules
//! are those of [`crate::wire::message`]: variants are only ever appended.

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};
use crate::identity::{DeviceId, OrgId};
use crate::wire::message::{CaptureOutcome, Codec, WireError, MAX_ERROR_TEXT, MAX_FILTER_TEXT};

/// Version of the admin protocol; the first field of every request.
pub const ADMIN_PROTOCOL_VERSION: u16 = 1;

/// Most devices listed in one reply.
pub const MAX_LISTED_DEVICES: usize = 10_000;

/// A request from an admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminRequest {
    /// Must be [`ADMIN_PROTOCOL_VERSION`].
    pub version: u16,
    /// What is asked.
    pub action: AdminAction,
}

/// What an admin can ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AdminAction {
    /// Start a header-only capture on a connected device.
    StartCapture {
        /// The device's organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
        /// Interface on the device.
        interface: BoundedString<32>,
        /// BPF filter, empty for all traffic.
        filter: BoundedString<MAX_FILTER_TEXT>,
        /// Longest the capture may run.
        duration_secs: u32,
        /// Most packets it may keep.
        max_packets: u32,
    },
    /// Stop a running capture.
    StopCapture {
        /// The device's organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
        /// The capture's id.
        id: u64,
    },
    /// The organisation's devices that are connected now.
    ConnectedDevices {
        /// The organisation.
        org: OrgId,
    },
    /// What a device last reported about a capture.
    CaptureStatus {
        /// The device's organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
        /// The capture's id.
        id: u64,
    },
}

/// The collector's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AdminReply {
    /// A capture request was delivered to the device.
    CaptureRequested {
        /// The capture's id, for stop and for the logs.
        id: u64,
    },
    /// A stop was delivered.
    CaptureStopRequested,
    /// Connected devices.
    Devices(BoundedVec<DeviceId, MAX_LISTED_DEVICES>),
    /// The request was refused; the reason says why.
    Refused(BoundedString<MAX_ERROR_TEXT>),
    /// The device's latest report on a capture; `None` while it has sent
    /// none (not yet delivered, or the collector restarted since).
    CaptureStatus(Option<CaptureOutcome>),
}

impl Codec for AdminRequest {
    fn encode_frame(&self, max_frame_len: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
        crate::wire::message::encode_framed(self, max_frame_len, out)
    }

    fn decode(payload: &[u8]) -> Result<Self, WireError> {
        if let Ok((version, _)) = postcard::take_from_bytes::<u16>(payload) {
            if version != ADMIN_PROTOCOL_VERSION {
                return Err(WireError::UnsupportedVersion { got: version, supported: ADMIN_PROTOCOL_VERSION });
            }
        }
        crate::wire::message::decode_exact(payload)
    }
}

impl Codec for AdminReply {
    fn encode_frame(&self, max_frame_len: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
        crate::wire::message::encode_framed(self, max_frame_len, out)
    }

    fn decode(payload: &[u8]) -> Result<Self, WireError> {
        crate::wire::message::decode_exact(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_round_trip_and_versions_are_checked() {
        let request = AdminRequest {
            version: ADMIN_PROTOCOL_VERSION,
            action: AdminAction::ConnectedDevices { org: OrgId::new("acme").unwrap() },
        };
        let payload = postcard::to_stdvec(&request).unwrap();
        assert_eq!(AdminRequest::decode(&payload).unwrap(), request);
        let mut future = payload.clone();
        future[0] = 2;
        assert_eq!(AdminRequest::decode(&future), Err(WireError::UnsupportedVersion { got: 2, supported: 1 }));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = AdminRequest::decode(&payload);
            let _ = AdminReply::decode(&payload);
        }
    }
}
