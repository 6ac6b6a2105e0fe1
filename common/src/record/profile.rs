//! How an organisation names and places a device: set in the device's
//! config, not read from it, and sent with each device-kind report so every
//! stored report says where its clients were.

use serde::{Deserialize, Serialize};

use crate::bounded::BoundedString;

use super::MAX_TEXT;

/// The device as its organisation describes it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceProfile {
    /// Display name (e.g. `AP-Lobby-2`); empty when not configured.
    pub name: BoundedString<MAX_TEXT>,
    /// Product series (e.g. `AP 500`); empty when not configured.
    pub series: BoundedString<MAX_TEXT>,
    /// Where the device is.
    pub location: Location,
}

/// A general (site, building) or specific (floor, coordinates) location.
/// Every part is optional: empty text or `None` when not configured.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Location {
    /// Site or campus, e.g. `HQ Berlin`.
    pub site: BoundedString<MAX_TEXT>,
    /// Building.
    pub building: BoundedString<MAX_TEXT>,
    /// Floor, as the organisation names it (`2`, `B1`, `Mezzanine`).
    pub floor: BoundedString<MAX_TEXT>,
    /// Free text, e.g. `ceiling above desk 14`.
    pub description: BoundedString<MAX_TEXT>,
    /// WGS 84 latitude in degrees, -90 to 90.
    pub latitude: Option<f64>,
    /// WGS 84 longitude in degrees, -180 to 180.
    pub longitude: Option<f64>,
}
