//! The devices a running target serves, and how a new configuration's
//! devices are matched against them.
//!
//! Every device has an id, its index in the table, never reused: cores
//! register its store on their rings under that id, and targets name it.
//! A device keeps its logical-unit state (reservations, sanitize, I/O
//! counters) for as long as its name and UUID stay the same, even when its
//! store is swapped (a read-only switch reopens a file):
//!
//! ```text
//!  new config's device ─ by name ─┬─ none here           ─> Add
//!                                 ├─ other UUID          ─> Remove old, Add new
//!                                 ├─ same, other backing ─> refused
//!                                 ├─ same file reopened  ─> Swap (new id, same unit state)
//!                                 └─ same store          ─> Keep (grow, read-only flag)
//!  device here not in the new config                     ─> Remove
//! ```

use std::path::Path;
use std::sync::Arc;

use trellis_datapath::{IoStats, VirtualDevice};

use crate::scsi::{LunDevice, LunShared, SanitizeState};

/// A device with what every core shares of it.
#[derive(Debug)]
pub(super) struct DeviceEntry {
    /// The device and its store.
    pub dev: VirtualDevice,
    /// What SCSI reports of it now (size and read-only follow changes).
    pub lun: LunDevice,
    /// Reservations, resets and block locks of the logical unit.
    pub shared: Arc<LunShared>,
    /// Its sanitize operation.
    pub sanitize: Arc<SanitizeState>,
    /// I/O counters.
    pub stats: Arc<IoStats>,
}

/// What becomes of one device of a new configuration.
#[derive(Debug)]
pub(super) enum DevicePlan {
    /// A device not served yet.
    Add,
    /// The device with this id stays; its size and read-only flag follow
    /// the new configuration (a larger size grows the store).
    Keep(usize),
    /// The device with this id gets the new store under a new id, keeping
    /// its unit state.
    Swap(usize),
    /// A device of the same name but another identity is served: it goes,
    /// and the new one is added.
    Replace,
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// Decides what happens to `new` given the devices served now; an error
/// says why the change cannot be made while running.
pub(super) fn plan_device(
    table: &[Option<DeviceEntry>],
    new: &VirtualDevice,
) -> Result<DevicePlan, String> {
    let ns = new.spec();
    let Some((id, old)) = table.iter().enumerate().find_map(|(i, e)| {
        e.as_ref()
            .filter(|e| e.dev.spec().name == ns.name)
            .map(|e| (i, e))
    }) else {
        return Ok(DevicePlan::Add);
    };
    let os = old.dev.spec();
    if os.uuid != ns.uuid {
        return Ok(DevicePlan::Replace);
    }
    if os.block_size != ns.block_size || os.thin != ns.thin {
        return Err(format!(
            "device `{}`: block size and thin provisioning cannot change while it is served (delete it and create it again)",
            ns.name
        ));
    }
    let now = old.lun.num_blocks * u64::from(old.lun.block_size);
    if ns.size < now {
        return Err(format!(
            "device `{}` cannot shrink ({now} -> {} bytes)",
            ns.name, ns.size
        ));
    }
    let (old_store, new_store) = (old.dev.store(), new.store());
    match (old_store.path(), new_store.path()) {
        // The very store served now, or memory given again (the memory
        // already there).
        _ if Arc::ptr_eq(old_store, new_store) => Ok(DevicePlan::Keep(id)),
        (None, None) => Ok(DevicePlan::Keep(id)),
        // The same file: kept when opened the same way, else the same
        // unit on a store reopened read-only or writable.
        (Some(a), Some(b)) if same_path(a, b) => Ok(if os.read_only == ns.read_only {
            DevicePlan::Keep(id)
        } else {
            DevicePlan::Swap(id)
        }),
        // Other blocks under the same identity would swap a host's disk
        // under it: refused.
        _ => Err(format!(
            "device `{}`: its backing changed ({} -> {}); a device keeps its blocks (give other blocks another name and UUID)",
            ns.name,
            old_store.describe(),
            new_store.describe()
        )),
    }
}

/// The SCSI description of `d` when its store carries commands of at most
/// `max_buf` bytes.
pub(super) fn describe(d: &VirtualDevice, max_buf: u32) -> LunDevice {
    let spec = d.spec();
    let max_blocks = max_buf / spec.block_size;
    let atomic_unit_blocks =
        atomic_unit_blocks(d.store().atomic_write_unit(), spec.block_size, max_blocks);
    if atomic_unit_blocks > 0 {
        tracing::info!(
            device = %spec.name,
            blocks = atomic_unit_blocks,
            "WRITE ATOMIC offered: the store writes this many blocks untorn"
        );
    }
    LunDevice {
        name: spec.name.clone(),
        block_size: spec.block_size,
        num_blocks: d.num_blocks(),
        read_only: spec.read_only,
        naa: d.naa(),
        serial: d.serial(),
        write_cache: !d.store().direct(),
        max_transfer_blocks: max_blocks,
        optimal_transfer_blocks: max_blocks,
        rotational: false,
        thin: spec.thin,
        holes_read_zero: d.store().holes_read_zero(),
        atomic_unit_blocks,
    }
}

/// WRITE ATOMIC (16) unit in blocks for a store whose untorn write unit is
/// `unit` bytes: a whole number of blocks within one command's transfer
/// limit (`max_blocks`, 0 = none); 0 when the store has no atomic writes.
fn atomic_unit_blocks(unit: Option<u32>, block_size: u32, max_blocks: u32) -> u32 {
    match unit {
        Some(u) if block_size > 0 && u.is_multiple_of(block_size) => {
            let blocks = u / block_size;
            if max_blocks == 0 || blocks <= max_blocks {
                blocks
            } else {
                0
            }
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    // Test helpers: a panic is the test failing.
    #![allow(clippy::unwrap_used)]

    use trellis_datapath::{BackingStore, DeviceSpec, FileStore, MemoryStore};
    use uuid::Uuid;

    use super::*;

    fn spec(name: &str, uuid: u128, size: u64, read_only: bool) -> DeviceSpec {
        DeviceSpec {
            name: name.into(),
            uuid: Uuid::from_u128(uuid),
            size,
            block_size: 512,
            read_only,
            thin: true,
        }
    }

    fn entry(dev: VirtualDevice) -> Option<DeviceEntry> {
        Some(DeviceEntry {
            lun: describe(&dev, 1 << 20),
            dev,
            shared: Arc::new(LunShared::new()),
            sanitize: Arc::new(SanitizeState::new()),
            stats: Arc::new(IoStats::new(1)),
        })
    }

    #[test]
    fn devices_are_matched_by_name_uuid_and_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.img");
        let file = |ro: bool| -> Arc<dyn BackingStore> {
            Arc::new(FileStore::open_with(&path, ro, (!ro).then_some(1 << 20), false).unwrap())
        };
        let mem: Arc<dyn BackingStore> = Arc::new(MemoryStore::new("m", 1 << 20).unwrap());
        let a = VirtualDevice::new(spec("a", 1, 1 << 20, false), file(false)).unwrap();
        let m = VirtualDevice::new(spec("m", 2, 1 << 20, false), Arc::clone(&mem)).unwrap();
        let table = vec![None, entry(a), entry(m)];
        let plan = |d: VirtualDevice| plan_device(&table, &d);

        let other = Arc::new(MemoryStore::new("x", 1 << 20).unwrap());
        let x = VirtualDevice::new(spec("x", 3, 1 << 20, false), other).unwrap();
        assert!(matches!(plan(x), Ok(DevicePlan::Add)));
        // The same file opened again, grown: kept.
        let a2 = VirtualDevice::new(spec("a", 1, 1 << 20, false), file(false)).unwrap();
        assert!(matches!(plan(a2), Ok(DevicePlan::Keep(1))));
        // Opened read-only now: another store for the same unit.
        let a3 = VirtualDevice::new(spec("a", 1, 1 << 20, true), file(true)).unwrap();
        assert!(matches!(plan(a3), Ok(DevicePlan::Swap(1))));
        // The very same store turned read-only: kept, the flag follows.
        let shared = Arc::clone(table[1].as_ref().unwrap().dev.store());
        let a4 = VirtualDevice::new(spec("a", 1, 1 << 20, true), shared).unwrap();
        assert!(matches!(plan(a4), Ok(DevicePlan::Keep(1))));
        // Other blocks under the same identity: refused.
        let other = dir.path().join("b.img");
        let b: Arc<dyn BackingStore> =
            Arc::new(FileStore::open_with(&other, false, Some(1 << 20), false).unwrap());
        let a6 = VirtualDevice::new(spec("a", 1, 1 << 20, false), b).unwrap();
        assert!(plan(a6).unwrap_err().contains("backing changed"));
        let a7 = VirtualDevice::new(spec("a", 1, 1 << 20, false), Arc::clone(&mem)).unwrap();
        assert!(plan(a7).unwrap_err().contains("backing changed"));
        // Another UUID under the same name: another device.
        let a5 = VirtualDevice::new(spec("a", 9, 1 << 20, false), file(false)).unwrap();
        assert!(matches!(plan(a5), Ok(DevicePlan::Replace)));
        // Memory given again is the memory already there.
        let fresh = Arc::new(MemoryStore::new("m", 1 << 20).unwrap());
        let m2 = VirtualDevice::new(spec("m", 2, 1 << 20, false), fresh).unwrap();
        assert!(matches!(plan(m2), Ok(DevicePlan::Keep(2))));
        // Shrinking and changing the block size are refused, saying why.
        let small = Arc::new(MemoryStore::new("m", 1 << 19).unwrap());
        let m3 = VirtualDevice::new(spec("m", 2, 1 << 19, false), small).unwrap();
        assert!(plan(m3).unwrap_err().contains("cannot shrink"));
        let mut s4 = spec("m", 2, 1 << 20, false);
        s4.block_size = 4096;
        let m4 = VirtualDevice::new(s4, mem).unwrap();
        assert!(plan(m4).unwrap_err().contains("block size"));
    }

    #[test]
    fn atomic_units_fit_in_one_command() {
        assert_eq!(atomic_unit_blocks(None, 512, 0), 0);
        assert_eq!(atomic_unit_blocks(Some(4096), 512, 2048), 8);
        assert_eq!(atomic_unit_blocks(Some(4096), 4096, 0), 1);
        assert_eq!(atomic_unit_blocks(Some(1000), 512, 0), 0);
        assert_eq!(atomic_unit_blocks(Some(1 << 20), 512, 256), 0);
    }
}
