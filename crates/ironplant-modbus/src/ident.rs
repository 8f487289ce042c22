//! Modbus device identification (function 43 / MEI type 14, "Read Device Identification"): the
//! basic objects a PLC reports about itself (vendor, product code, revision). The connector
//! reads them at every connection and reports a change (another PLC answering at the device's
//! address: a swapped or impersonated device); the register-bank server answers them for the
//! simulator. tokio-modbus encodes and decodes the frames; this is the mapping to our type.

use tokio_modbus::prelude::{
    ConformityLevel, DeviceIdObject, ReadCode, ReadDeviceIdentificationResponse, Request,
};

/// The basic identification objects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceIdentity {
    pub vendor: String,
    pub product_code: String,
    pub revision: String,
}

impl std::fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.vendor, self.product_code, self.revision)
    }
}

/// The request: the basic objects, as a stream from object 0.
pub fn request() -> Request<'static> {
    Request::ReadDeviceIdentification(ReadCode::Basic, 0)
}

/// What a device answered, as our type (objects that are not UTF-8 are read lossily).
pub fn from_response(r: &ReadDeviceIdentificationResponse) -> DeviceIdentity {
    let mut id = DeviceIdentity::default();
    for o in &r.device_id_objects {
        let text = String::from_utf8_lossy(&o.value).into_owned();
        match o.id {
            0 => id.vendor = text,
            1 => id.product_code = text,
            2 => id.revision = text,
            _ => {}
        }
    }
    id
}

/// The answer a server gives for `identity` (the basic objects, in one part).
pub fn to_response(identity: &DeviceIdentity) -> ReadDeviceIdentificationResponse {
    let object = |id: u8, text: &str| DeviceIdObject {
        id,
        value: tokio_modbus::bytes::Bytes::copy_from_slice(&text.as_bytes()[..text.len().min(200)]),
    };
    ReadDeviceIdentificationResponse {
        read_code: ReadCode::Basic,
        conformity_level: ConformityLevel::BasicIdentificationStreamOnly,
        more_follows: false,
        next_object_id: 0,
        device_id_objects: vec![
            object(0, &identity.vendor),
            object(1, &identity.product_code),
            object(2, &identity.revision),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_round_trips() {
        let id = DeviceIdentity {
            vendor: "Ironplant".into(),
            product_code: "SIM-FILLER".into(),
            revision: "1.4".into(),
        };
        assert_eq!(from_response(&to_response(&id)), id);
        assert_eq!(id.to_string(), "Ironplant SIM-FILLER 1.4");
    }
}
