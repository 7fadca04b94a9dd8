//! INQUIRY (SPC-4 6.6): standard data and the vital product data pages
//! 00h (supported pages), 80h (unit serial number), 83h (device
//! identification), B0h (block limits), B1h (block device characteristics)
//! and B2h (logical block provisioning).

use super::cdb::{be16, Cdb};
use super::sense::Sense;
use super::{Completion, LunDevice, PortContext, PortStates};

/// T10 VENDOR IDENTIFICATION (8 bytes, space padded).
pub(crate) const VENDOR: &[u8; 8] = b"TRELLIS ";
/// PRODUCT IDENTIFICATION (16 bytes, space padded).
pub(crate) const PRODUCT: &[u8; 16] = b"VIRTUAL DISK    ";
/// PRODUCT REVISION LEVEL (4 bytes).
pub(crate) const REVISION: &[u8; 4] = b"0001";

/// Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00A0, 0x0960, 0x0460, 0x04C0];

/// Standard INQUIRY data length (ADDITIONAL LENGTH = 91).
const STANDARD_LEN: usize = 96;

/// Peripheral qualifier 000b, device type 00h (direct access block device).
const PQ_DISK: u8 = 0x00;
/// Peripheral qualifier 011b, device type 1Fh: no logical unit at this LUN.
pub(crate) const PQ_NO_LUN: u8 = 0x7F;

/// VPD pages in the order page 00h lists them.
const VPD_PAGES: [u8; 7] = [0x00, 0x80, 0x83, 0x8F, 0xB0, 0xB1, 0xB2];

use super::block::max_compare_and_write_blocks;
use super::provisioning::{MAX_UNMAP_DESCRIPTORS, MAX_UNMAP_LBA_COUNT, MAX_WRITE_SAME_BLOCKS};

/// INQUIRY for a mapped logical unit.
pub(crate) fn inquiry(
    c: &Cdb,
    dev: &LunDevice,
    port: &PortContext,
    ports: &PortStates,
) -> Result<Completion, Sense> {
    let alloc = usize::from(be16(c, 3));
    let mut out = if c[1] & 0x01 == 0 {
        if c[2] != 0 {
            return Err(Sense::invalid_field_in_cdb(2, 7));
        }
        let table = ports.table();
        standard(
            PQ_DISK,
            table.groups.iter().map(|g| g.relative_ports.len()).sum(),
        )
    } else {
        match c[2] {
            0x00 => vpd(0x00, PQ_DISK, &VPD_PAGES),
            0x80 => vpd(0x80, PQ_DISK, &serial(dev)),
            0x83 => vpd(0x83, PQ_DISK, &device_identification(dev, port)),
            0xB0 => vpd(0xB0, PQ_DISK, &block_limits(dev)),
            0xB1 => vpd(0xB1, PQ_DISK, &block_characteristics(dev)),
            0x8F => vpd(0x8F, PQ_DISK, &super::xcopy::third_party_copy_vpd()),
            0xB2 => vpd(0xB2, PQ_DISK, &provisioning(dev)),
            _ => return Err(Sense::invalid_field_in_cdb(2, 7)),
        }
    };
    out.truncate(alloc);
    Ok(Completion::with_data(out))
}

/// INQUIRY addressed to a LUN with no logical unit: peripheral qualifier
/// 011b / type 1Fh; only pages 00h is offered.
pub(crate) fn inquiry_unmapped(c: &Cdb) -> Result<Completion, Sense> {
    let alloc = usize::from(be16(c, 3));
    let mut out = match (c[1] & 0x01, c[2]) {
        (0, 0) => standard(PQ_NO_LUN, 1),
        (1, 0x00) => vpd(0x00, PQ_NO_LUN, &[0x00]),
        _ => return Err(Sense::invalid_field_in_cdb(2, 7)),
    };
    out.truncate(alloc);
    Ok(Completion::with_data(out))
}

/// Standard INQUIRY data (96 bytes) of a unit reached through `ports`
/// target ports (MULTIP when more than one).
fn standard(pq_type: u8, ports: usize) -> Vec<u8> {
    let mut d = vec![0u8; STANDARD_LEN];
    d[0] = pq_type;
    d[2] = 0x06; // VERSION: SPC-4
    d[3] = 0x10 | 0x02; // HISUP, RESPONSE DATA FORMAT 2
    d[4] = (STANDARD_LEN - 5) as u8;
    d[5] = 0x10; // TPGS = 01b: implicit ALUA
    if pq_type == PQ_DISK {
        d[5] |= 0x08; // 3PC: EXTENDED COPY
    }
    if ports > 1 {
        d[6] = 0x10; // MULTIP
    }
    d[7] = 0x02; // CMDQUE
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(PRODUCT);
    d[32..36].copy_from_slice(REVISION);
    for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
        d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    d
}

/// A VPD page: header (PQ/type, page code, 2-byte PAGE LENGTH) and `body`.
fn vpd(page: u8, pq_type: u8, body: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(4 + body.len());
    d.push(pq_type);
    d.push(page);
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(body);
    d
}

/// PRODUCT SERIAL NUMBER: printable ASCII only, at most 252 bytes.
fn serial(dev: &LunDevice) -> Vec<u8> {
    dev.serial
        .bytes()
        .take(252)
        .map(|b| if (0x20..=0x7E).contains(&b) { b } else { b'_' })
        .collect()
}

/// Appends one designation descriptor.
fn designator(out: &mut Vec<u8>, proto_codeset: u8, piv_assoc_type: u8, id: &[u8]) {
    out.push(proto_codeset);
    out.push(piv_assoc_type);
    out.push(0);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
}

/// Device identification designators: NAA (LU), SCSI name string of the
/// target port, relative target port, target port group.
fn device_identification(dev: &LunDevice, port: &PortContext) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // Code set 1 (binary); PIV 0, association 00b (LU), type 3 (NAA).
    designator(&mut out, 0x01, 0x03, &dev.naa);

    // "<iqn>,t,0x<tpgt>": null terminated, null padded to a multiple of 4.
    // Protocol 5 (iSCSI), code set 3 (UTF-8); PIV 1, association 01b (target port), type 8.
    let mut name = format!("{},t,0x{:04x}", port.target_name, port.tpgt).into_bytes();
    name.truncate(251);
    let padded = (name.len() + 1).div_ceil(4) * 4;
    name.resize(padded, 0);
    designator(&mut out, 0x53, 0x98, &name);

    // Relative target port (type 4), target port group (type 5): binary, PIV 1, port.
    let [rp_hi, rp_lo] = port.relative_port_id.to_be_bytes();
    designator(&mut out, 0x51, 0x94, &[0, 0, rp_hi, rp_lo]);
    let [tg_hi, tg_lo] = port.tpg_id.to_be_bytes();
    designator(&mut out, 0x51, 0x95, &[0, 0, tg_hi, tg_lo]);
    out
}

/// Block Limits body (page length 3Ch).
fn block_limits(dev: &LunDevice) -> Vec<u8> {
    let mut b = vec![0u8; 0x3C];
    // Offsets below are page offsets minus the 4-byte header.
    // Byte 4: WSNZ = 1 (WRITE SAME of 0 blocks is refused, not "to the
    // last LBA": a single command never rewrites a whole unit).
    b[0] = 0x01;
    b[1] = max_compare_and_write_blocks(dev);
    let granularity = dev.blocks_per_physical() as u16;
    b[2..4].copy_from_slice(&granularity.to_be_bytes());
    b[4..8].copy_from_slice(&dev.max_transfer_blocks.to_be_bytes());
    b[8..12].copy_from_slice(&dev.optimal_transfer_blocks.to_be_bytes());
    if dev.thin {
        b[16..20].copy_from_slice(&MAX_UNMAP_LBA_COUNT.to_be_bytes());
        b[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
        b[24..28].copy_from_slice(&u32::from(granularity).to_be_bytes());
    }
    // MAXIMUM WRITE SAME LENGTH (page bytes 36..44).
    b[32..40].copy_from_slice(&u64::from(MAX_WRITE_SAME_BLOCKS).to_be_bytes());
    // MAXIMUM ATOMIC TRANSFER LENGTH, ATOMIC ALIGNMENT, ATOMIC TRANSFER
    // LENGTH GRANULARITY (page bytes 44..56): one atomic unit, 0 if none.
    // No atomic boundaries (page bytes 56..64 stay 0).
    let unit = dev.atomic_unit_blocks.to_be_bytes();
    for at in [40, 44, 48] {
        b[at..at + 4].copy_from_slice(&unit);
    }
    b
}

/// Block Device Characteristics body (page length 3Ch).
fn block_characteristics(dev: &LunDevice) -> Vec<u8> {
    let mut b = vec![0u8; 0x3C];
    // MEDIUM ROTATION RATE: 0001h non-rotating, 0000h not reported.
    b[1] = u8::from(!dev.rotational);
    // WABEREQ 01b: a read after SANITIZE BLOCK ERASE completes with GOOD
    // (holes or zeroed blocks); WACEREQ 00b: CRYPTOGRAPHIC ERASE unsupported.
    b[3] = 0x40;
    b
}

/// Logical Block Provisioning body (page length 4).
fn provisioning(dev: &LunDevice) -> Vec<u8> {
    if dev.thin {
        // LBPU, LBPWS, LBPWS10, LBPRZ where holes read as zeros; PROVISIONING
        // TYPE 010b (thin).
        let lbprz = if dev.holes_read_zero { 0x04 } else { 0 };
        vec![0, 0x80 | 0x40 | 0x20 | lbprz, 0x02, 0]
    } else {
        vec![0; 4]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::dispatch::tests::{disk, port, unit};

    fn cdb(evpd: bool, page: u8, alloc: u16) -> Cdb {
        let mut c = [0u8; 16];
        c[0] = 0x12;
        c[1] = u8::from(evpd);
        c[2] = page;
        c[3..5].copy_from_slice(&alloc.to_be_bytes());
        c
    }

    fn get(evpd: bool, page: u8, alloc: u16, dev: &LunDevice) -> Result<Vec<u8>, Sense> {
        inquiry(&cdb(evpd, page, alloc), dev, &port(), unit().ports()).map(|c| c.data)
    }

    #[test]
    fn standard_fields() {
        let d = get(false, 0, 255, &disk(512, 100)).unwrap();
        assert_eq!(d.len(), 96);
        assert_eq!(&d[0..8], &[0x00, 0x00, 0x06, 0x12, 91, 0x18, 0x10, 0x02]);
        assert_eq!(&d[8..16], b"TRELLIS ");
        assert_eq!(&d[16..32], b"VIRTUAL DISK    ");
        assert_eq!(&d[32..36], b"0001");
        assert_eq!(
            &d[58..74],
            &[0x00, 0xA0, 0x09, 0x60, 0x04, 0x60, 0x04, 0xC0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // Allocation length 255 and 256 return the same data; 0..=36 truncate.
        assert_eq!(get(false, 0, 256, &disk(512, 100)).unwrap(), d);
        for alloc in 0..=36u16 {
            let t = get(false, 0, alloc, &disk(512, 100)).unwrap();
            assert_eq!(t, d[..alloc as usize]);
        }
    }

    #[test]
    fn evpd_errors() {
        let dev = disk(512, 100);
        assert_eq!(
            get(false, 1, 255, &dev),
            Err(Sense::invalid_field_in_cdb(2, 7))
        );
        assert_eq!(
            get(true, 0x86, 255, &dev),
            Err(Sense::invalid_field_in_cdb(2, 7))
        );
    }

    #[test]
    fn supported_pages_and_serial() {
        let dev = disk(512, 100);
        let d = get(true, 0x00, 255, &dev).unwrap();
        assert_eq!(d, [0, 0, 0, 7, 0x00, 0x80, 0x83, 0x8F, 0xB0, 0xB1, 0xB2]);
        for page in &d[4..] {
            assert!(get(true, *page, 255, &dev).is_ok(), "page {page:#x}");
        }
        let d = get(true, 0x80, 255, &dev).unwrap();
        assert_eq!(d, b"\x00\x80\x00\x08SERIAL01");
    }

    #[test]
    fn device_identification_designators() {
        let dev = disk(512, 100);
        let d = get(true, 0x83, 255, &dev).unwrap();
        let naa = [0x01, 0x03, 0x00, 0x10];
        let name: &[u8] = b"iqn.2024-01.io.trellis:t1,t,0x0001";
        let name_len = 36; // 34 + NUL, padded to 36
        let mut want = vec![0x00, 0x83];
        let body = 20 + 4 + name_len + 8 + 8;
        want.extend_from_slice(&(body as u16).to_be_bytes());
        want.extend_from_slice(&naa);
        want.extend_from_slice(&dev.naa);
        want.extend_from_slice(&[0x53, 0x98, 0x00, name_len as u8]);
        want.extend_from_slice(name);
        want.extend_from_slice(&[0, 0]);
        want.extend_from_slice(&[0x51, 0x94, 0x00, 0x04, 0, 0, 0x00, 0x02]);
        want.extend_from_slice(&[0x51, 0x95, 0x00, 0x04, 0, 0, 0x00, 0x07]);
        assert_eq!(d, want);
    }

    #[test]
    fn block_limits_page() {
        let d = get(true, 0xB0, 255, &disk(512, 100)).unwrap();
        assert_eq!(d.len(), 64);
        assert_eq!(&d[0..4], &[0, 0xB0, 0, 0x3C]);
        assert_eq!(&d[6..8], &[0, 8]);
        assert_eq!(&d[8..12], &128u32.to_be_bytes());
        assert_eq!(&d[12..16], &32u32.to_be_bytes());
        assert_eq!(d[5], 64, "MAXIMUM COMPARE AND WRITE LENGTH");
        assert_eq!(&d[20..28], &[0; 8], "no unmap unless thin");
        assert_eq!(&d[36..44], &u64::from(MAX_WRITE_SAME_BLOCKS).to_be_bytes());
        let thin = LunDevice {
            thin: true,
            ..disk(4096, 100)
        };
        let d = get(true, 0xB0, 255, &thin).unwrap();
        assert_eq!(&d[6..8], &[0, 1]);
        assert_eq!(&d[20..24], &MAX_UNMAP_LBA_COUNT.to_be_bytes());
        assert_eq!(&d[24..28], &MAX_UNMAP_DESCRIPTORS.to_be_bytes());
        assert_eq!(&d[28..32], &1u32.to_be_bytes());
    }

    #[test]
    fn characteristics_and_provisioning() {
        let d = get(true, 0xB1, 255, &disk(512, 100)).unwrap();
        assert_eq!(d.len(), 64);
        assert_eq!(&d[0..8], &[0, 0xB1, 0, 0x3C, 0, 1, 0, 0x40]);
        let rot = LunDevice {
            rotational: true,
            ..disk(512, 100)
        };
        assert_eq!(&get(true, 0xB1, 255, &rot).unwrap()[4..6], &[0, 0]);

        let d = get(true, 0xB2, 255, &disk(512, 100)).unwrap();
        assert_eq!(d, [0, 0xB2, 0, 4, 0, 0, 0, 0]);
        let thin = LunDevice {
            thin: true,
            holes_read_zero: true,
            ..disk(512, 100)
        };
        let d = get(true, 0xB2, 255, &thin).unwrap();
        assert_eq!(d, [0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0]);
        let no_lbprz = LunDevice {
            holes_read_zero: false,
            ..thin
        };
        let d = get(true, 0xB2, 255, &no_lbprz).unwrap();
        assert_eq!(d, [0, 0xB2, 0, 4, 0, 0xE0, 0x02, 0]);
    }

    #[test]
    fn unmapped() {
        let c = cdb(false, 0, 255);
        let d = inquiry_unmapped(&c).unwrap().data;
        assert_eq!(d[0], 0x7F);
        assert_eq!(d.len(), 96);
        let d = inquiry_unmapped(&cdb(true, 0, 255)).unwrap().data;
        assert_eq!(d, [0x7F, 0, 0, 1, 0]);
        assert!(inquiry_unmapped(&cdb(true, 0x83, 255)).is_err());
    }
}
