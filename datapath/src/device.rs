//! Virtual devices: what a host sees as a disk.
//!
//! A device's SCSI identity (NAA designator, unit serial) derives from its
//! cluster-wide UUID only, so every member that exports it reports the same
//! identity and host multipath groups the paths.

use std::sync::Arc;

use uuid::Uuid;

use crate::{BackingStore, DeviceError};

/// IEEE company id used in our NAA designators: from the locally administered
/// CID space (second-lowest bit of the first octet set, lowest clear), as
/// Trellis has no OUI of its own.
pub const COMPANY_ID: u32 = 0x2E_7E_11;

/// What a device is, before it is bound to a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Name, unique in the cluster.
    pub name: String,
    /// Cluster-wide identity.
    pub uuid: Uuid,
    /// Size in bytes.
    pub size: u64,
    /// Logical block size: 512 or 4096.
    pub block_size: u32,
    /// Refuse writes.
    pub read_only: bool,
    /// Thin provisioned (UNMAP allowed).
    pub thin: bool,
}

/// A device bound to its backing store.
#[derive(Debug, Clone)]
pub struct VirtualDevice {
    spec: DeviceSpec,
    store: Arc<dyn BackingStore>,
}

impl VirtualDevice {
    /// Binds `spec` to `store`, checking block size and sizes.
    pub fn new(spec: DeviceSpec, store: Arc<dyn BackingStore>) -> Result<Self, DeviceError> {
        if spec.block_size != 512 && spec.block_size != 4096 {
            return Err(DeviceError::BlockSize(spec.block_size));
        }
        if spec.size == 0 || !spec.size.is_multiple_of(u64::from(spec.block_size)) {
            return Err(DeviceError::Size {
                size: spec.size,
                block_size: spec.block_size,
            });
        }
        if store.size() < spec.size {
            return Err(DeviceError::StoreTooSmall {
                store: store.size(),
                size: spec.size,
            });
        }
        Ok(Self { spec, store })
    }

    /// The device's specification.
    pub fn spec(&self) -> &DeviceSpec {
        &self.spec
    }

    /// The backing store.
    pub fn store(&self) -> &Arc<dyn BackingStore> {
        &self.store
    }

    /// Number of logical blocks.
    pub fn num_blocks(&self) -> u64 {
        self.spec.size / u64::from(self.spec.block_size)
    }

    /// NAA type 6 (IEEE Registered Extended) designator, 16 bytes.
    pub fn naa(&self) -> [u8; 16] {
        naa_from_uuid(&self.spec.uuid)
    }

    /// Unit serial number (VPD 0x80): the UUID's 32 hex digits.
    pub fn serial(&self) -> String {
        self.spec.uuid.simple().to_string()
    }
}

/// NAA 6 designator: 4-bit NAA, 24-bit company id, then 100 bits taken from
/// the UUID (its first 100 bits).
pub fn naa_from_uuid(uuid: &Uuid) -> [u8; 16] {
    let u = uuid.as_u128();
    let vendor = u >> 28; // top 100 bits
    let value: u128 = (6u128 << 124) | (u128::from(COMPANY_ID) << 100) | vendor;
    value.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn spec(bs: u32, size: u64) -> DeviceSpec {
        DeviceSpec {
            name: "d".into(),
            uuid: Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            size,
            block_size: bs,
            read_only: false,
            thin: false,
        }
    }

    #[test]
    fn identity_derives_from_uuid_only() {
        let s1 = Arc::new(MemoryStore::new("a", 1 << 20).unwrap());
        let s2 = Arc::new(MemoryStore::new("b", 2 << 20).unwrap());
        let a = VirtualDevice::new(spec(512, 1 << 20), s1).unwrap();
        let b = VirtualDevice::new(spec(4096, 1 << 20), s2).unwrap();
        assert_eq!(a.naa(), b.naa());
        assert_eq!(a.serial(), "0123456789abcdef0011223344556677");
        let naa = a.naa();
        assert_eq!(naa[0] >> 4, 6, "NAA type 6");
        assert_eq!(&naa[0..4], &[0x62, 0xE7, 0xE1, 0x10]);
        // The first 100 UUID bits follow the company id.
        assert_eq!(naa[3] & 0x0f, 0x0);
        assert_eq!(naa[4], 0x12);
        assert_eq!(a.num_blocks(), 2048);
        assert_eq!(b.num_blocks(), 256);
        let other = Uuid::from_u128(1 << 100);
        assert_ne!(naa_from_uuid(&other), a.naa());
    }

    #[test]
    fn bad_specs_are_refused() {
        let s = Arc::new(MemoryStore::new("a", 1 << 20).unwrap());
        assert!(matches!(
            VirtualDevice::new(spec(1024, 1 << 20), s.clone()),
            Err(DeviceError::BlockSize(1024))
        ));
        assert!(matches!(
            VirtualDevice::new(spec(512, 1000), s.clone()),
            Err(DeviceError::Size { .. })
        ));
        assert!(matches!(
            VirtualDevice::new(spec(512, 2 << 20), s),
            Err(DeviceError::StoreTooSmall { .. })
        ));
    }
}
