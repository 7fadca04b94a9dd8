//! MODE SENSE (6)/(10) and MODE SELECT (6)/(10) (SPC-4 6.11-6.14) with the
//! Caching (08h), Control (0Ah) and Informational Exceptions Control (1Ch)
//! pages.
//!
//! One mode parameter is changeable: SWP (software write protect) in the
//! Control page, shared by every I_T nexus of the logical unit
//! ([`LunShared::software_write_protect`]); setting it write-protects the
//! unit (WP in the header, DATA PROTECT on writes) and tells the other
//! nexuses MODE PARAMETERS CHANGED. Nothing can be saved: default values
//! equal the initial ones, saved values are SAVING PARAMETERS NOT SUPPORTED.
//! MODE SELECT accepts a parameter list that restates the current values
//! except for changeable bits, and rejects any other change with INVALID
//! FIELD IN PARAMETER LIST pointing at the offending bit.

use super::cdb::{be, be16, pad, Cdb};
use super::sense::Sense;
use super::{Action, Completion, LunDevice, LunShared, NexusState};

/// Pages returned for page code 3Fh, in ascending order.
const PAGES: [u8; 3] = [0x08, 0x0A, 0x1C];

/// The PAGE CONTROL field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageControl {
    Current,
    Changeable,
    Default,
}

/// Control page byte holding SWP, and its bit.
const SWP_AT: usize = 4;
const SWP: u8 = 0x08;

/// Current value of mode page `code`, if supported (`swp`: software write
/// protect is on).
fn current_page(code: u8, dev: &LunDevice, swp: bool) -> Option<Vec<u8>> {
    Some(match code {
        // Caching: WCE from the device, RCD = 0 (read cache enabled).
        0x08 => {
            let mut p = vec![0u8; 20];
            p[0] = 0x08;
            p[1] = 0x12;
            p[2] = if dev.write_cache { 0x04 } else { 0 };
            p
        }
        // Control: TST 000b, GLTSD 1, QUEUE ALGORITHM MODIFIER 1 (unrestricted),
        // QERR 00b, D_SENSE 0, SWP as set, TAS 0, BUSY TIMEOUT PERIOD unlimited.
        0x0A => {
            let mut p = vec![0x0A, 0x0A, 0x02, 0x10, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0];
            if swp {
                p[SWP_AT] |= SWP;
            }
            p
        }
        // Informational exceptions: DEXCPT 1 (no reporting), MRIE 0.
        0x1C => vec![0x1C, 0x0A, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        _ => return None,
    })
}

/// The changeable bits of page `code`, as a mask over its bytes.
fn changeable(code: u8, len: usize) -> Vec<u8> {
    let mut m = vec![0u8; len];
    if code == 0x0A {
        m[SWP_AT] = SWP;
    }
    m
}

fn page(code: u8, pc: PageControl, dev: &LunDevice, swp: bool) -> Option<Vec<u8>> {
    let mut p = current_page(code, dev, swp && pc == PageControl::Current)?;
    if pc == PageControl::Changeable {
        let m = changeable(code, p.len());
        for (b, m) in p.iter_mut().zip(m).skip(2) {
            *b = m;
        }
    }
    Some(p)
}

/// MODE SENSE (6) and (10); `swp`: software write protect is on.
pub(crate) fn mode_sense(c: &Cdb, dev: &LunDevice, swp: bool) -> Result<Completion, Sense> {
    let ten = c[0] == 0x5A;
    let dbd = c[1] & 0x08 != 0;
    let llbaa = ten && c[1] & 0x10 != 0;
    let pc = match c[2] >> 6 {
        0 => PageControl::Current,
        1 => PageControl::Changeable,
        2 => PageControl::Default,
        _ => return Err(Sense::saving_parameters_not_supported()),
    };
    let code = c[2] & 0x3F;
    let subpage = c[3];
    let alloc = if ten {
        usize::from(be16(c, 7))
    } else {
        usize::from(c[4])
    };
    if subpage != 0x00 && subpage != 0xFF {
        return Err(Sense::invalid_field_in_cdb(3, 7));
    }

    let mut pages = Vec::with_capacity(64);
    if code == 0x3F {
        for p in PAGES {
            if let Some(b) = page(p, pc, dev, swp) {
                pages.extend_from_slice(&b);
            }
        }
    } else {
        match page(code, pc, dev, swp) {
            Some(b) => pages.extend_from_slice(&b),
            None => return Err(Sense::invalid_field_in_cdb(2, 5)),
        }
    }

    // Device-specific parameter: WP, DPOFUA.
    let dsp = if dev.read_only { 0x80 } else { 0 } | 0x10;
    let desc = if dbd {
        Vec::new()
    } else {
        block_descriptor(dev, llbaa, pc == PageControl::Changeable)
    };
    let mut out = Vec::with_capacity(8 + desc.len() + pages.len());
    if ten {
        out.extend_from_slice(&[0, 0, 0, dsp, u8::from(desc.len() == 16), 0]);
        out.extend_from_slice(&(desc.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[0, 0, dsp, desc.len() as u8]);
    }
    out.extend_from_slice(&desc);
    out.extend_from_slice(&pages);
    if ten {
        let mdl = (out.len() - 2) as u16;
        out[0..2].copy_from_slice(&mdl.to_be_bytes());
    } else {
        out[0] = (out.len() - 1) as u8;
    }
    out.truncate(alloc);
    Ok(Completion::with_data(out))
}

/// Short (8-byte) or long LBA (16-byte) block descriptor; all zero for the
/// changeable values.
fn block_descriptor(dev: &LunDevice, long: bool, changeable: bool) -> Vec<u8> {
    let mut d = vec![0u8; if long { 16 } else { 8 }];
    if changeable {
        return d;
    }
    if long {
        d[0..8].copy_from_slice(&dev.num_blocks.to_be_bytes());
        d[12..16].copy_from_slice(&dev.block_size.to_be_bytes());
    } else {
        let n = u32::try_from(dev.num_blocks).unwrap_or(u32::MAX);
        d[0..4].copy_from_slice(&n.to_be_bytes());
        d[5..8].copy_from_slice(&dev.block_size.to_be_bytes()[1..4]);
    }
    d
}

/// CDB checks of MODE SELECT before its data-out is collected.
pub(crate) fn mode_select_cdb(c: &Cdb) -> Result<Action, Sense> {
    if c[1] & 0x01 != 0 {
        return Err(Sense::invalid_field_in_cdb(1, 0)); // SP: saving unsupported
    }
    let len = if c[0] == 0x55 {
        u32::from(be16(c, 7))
    } else {
        u32::from(c[4])
    };
    Ok(if len == 0 {
        Action::Complete(Completion::good())
    } else {
        Action::DataOut { len }
    })
}

/// MODE SELECT (6)/(10) with its parameter list `data` (the data-out the
/// session collected after [`Action::DataOut`]). Accepts only parameters equal
/// to the current values.
pub fn mode_select(
    cdb: &[u8],
    data: &[u8],
    dev: &LunDevice,
    lu: &LunShared,
    nexus: &mut NexusState,
) -> Action {
    Action::Complete(
        match parse_mode_select(&pad(cdb), data, dev, nexus.software_write_protect()) {
            Ok(swp) if lu.cluster().is_some() && swp != lu.software_write_protect() => {
                // Every member's: the cluster decides it.
                return Action::Shared(super::UnitChange::Mode { swp });
            }
            Ok(swp) => {
                if lu.set_software_write_protect(swp, nexus.id()) {
                    // This nexus sees its own change without a unit attention.
                    nexus.observe_mode(lu);
                }
                Completion::good()
            }
            Err(s) => Completion::check(s),
        },
    )
}

/// Checks a MODE SELECT parameter list against the current values (`swp`
/// as now) and returns the SWP it asks for.
fn parse_mode_select(c: &Cdb, data: &[u8], dev: &LunDevice, swp: bool) -> Result<bool, Sense> {
    let ten = c[0] == 0x55;
    let param_len = if ten {
        usize::from(be16(c, 7))
    } else {
        usize::from(c[4])
    };
    if data.len() < param_len {
        return Err(Sense::parameter_list_length_error());
    }
    let data = &data[..param_len];
    let mut want_swp = swp;
    if data.is_empty() {
        return Ok(want_swp);
    }
    let hdr = if ten { 8 } else { 4 };
    if data.len() < hdr {
        return Err(Sense::parameter_list_length_error());
    }
    let (medium_at, bdl_at) = if ten { (2, 6) } else { (1, 3) };
    if data[medium_at] != 0 {
        return Err(Sense::invalid_field_in_parameter_list(medium_at as u16, 7));
    }
    let long = ten && data[4] & 0x01 != 0;
    let bdl = if ten {
        usize::from(be16(data, 6))
    } else {
        usize::from(data[3])
    };
    match (bdl, long) {
        (0, _) | (8, false) | (16, true) => {}
        _ => return Err(Sense::invalid_field_in_parameter_list(bdl_at, 7)),
    }
    if data.len() < hdr + bdl {
        return Err(Sense::parameter_list_length_error());
    }
    if bdl != 0 {
        check_block_descriptor(&data[hdr..hdr + bdl], hdr, dev)?;
    }

    let mut off = hdr + bdl;
    while off < data.len() {
        let b0 = data[off];
        if b0 & 0x40 != 0 {
            return Err(Sense::invalid_field_in_parameter_list(off as u16, 6)); // SPF: no subpages
        }
        let Some(cur) = current_page(b0 & 0x3F, dev, swp) else {
            return Err(Sense::invalid_field_in_parameter_list(off as u16, 5));
        };
        let Some(&plen) = data.get(off + 1) else {
            return Err(Sense::parameter_list_length_error());
        };
        if usize::from(plen) + 2 != cur.len() {
            return Err(Sense::invalid_field_in_parameter_list(off as u16 + 1, 7));
        }
        let Some(given) = data.get(off..off + cur.len()) else {
            return Err(Sense::parameter_list_length_error());
        };
        // Every field restates its current value, changeable bits aside.
        let mask = changeable(b0 & 0x3F, cur.len());
        for (i, ((g, c), m)) in given.iter().zip(&cur).zip(&mask).enumerate().skip(2) {
            let diff = (g ^ c) & !m;
            if diff != 0 {
                let bit = 7 - diff.leading_zeros() as u8;
                return Err(Sense::invalid_field_in_parameter_list(
                    (off + i) as u16,
                    bit,
                ));
            }
        }
        if b0 & 0x3F == 0x0A {
            want_swp = given[SWP_AT] & SWP != 0;
        }
        off += cur.len();
    }
    Ok(want_swp)
}

/// A block descriptor may restate the capacity (or 0) and must keep the block length.
fn check_block_descriptor(d: &[u8], at: usize, dev: &LunDevice) -> Result<(), Sense> {
    let (blocks, max, len, len_at) = if d.len() == 16 {
        (be(d, 0, 8), u64::MAX, be(d, 12, 4), 12)
    } else {
        (be(d, 0, 4), u64::from(u32::MAX), be(d, 5, 3), 5)
    };
    if blocks != 0 && blocks != dev.num_blocks.min(max) {
        return Err(Sense::invalid_field_in_parameter_list(at as u16, 7));
    }
    if len != u64::from(dev.block_size) {
        return Err(Sense::invalid_field_in_parameter_list(
            (at + len_at) as u16,
            7,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::dispatch::tests::disk;

    fn sense6(dbd: bool, pc: u8, page: u8, sub: u8, alloc: u8) -> Cdb {
        pad(&[
            0x1A,
            if dbd { 0x08 } else { 0 },
            (pc << 6) | page,
            sub,
            alloc,
            0,
        ])
    }

    fn sense10(llbaa: bool, dbd: bool, pc: u8, page: u8, alloc: u16) -> Cdb {
        let mut c = [0u8; 16];
        c[0] = 0x5A;
        c[1] = if llbaa { 0x10 } else { 0 } | if dbd { 0x08 } else { 0 };
        c[2] = (pc << 6) | page;
        c[7..9].copy_from_slice(&alloc.to_be_bytes());
        c
    }

    #[test]
    fn sense6_caching_with_descriptor() {
        let dev = disk(512, 2048);
        let d = mode_sense(&sense6(false, 0, 0x08, 0, 255), &dev, false)
            .unwrap()
            .data;
        assert_eq!(d.len(), 4 + 8 + 20);
        assert_eq!(&d[0..4], &[31, 0, 0x10, 8]);
        assert_eq!(&d[4..12], &[0, 0, 0x08, 0x00, 0, 0, 0x02, 0x00]);
        assert_eq!(&d[12..16], &[0x08, 0x12, 0x04, 0]);
    }

    #[test]
    fn sense6_all_pages_and_truncation() {
        let ro = LunDevice {
            read_only: true,
            write_cache: false,
            ..disk(4096, 100)
        };
        let d = mode_sense(&sense6(true, 0, 0x3F, 0, 255), &ro, false)
            .unwrap()
            .data;
        assert_eq!(d.len(), 4 + 20 + 12 + 12);
        assert_eq!(&d[0..4], &[47, 0, 0x90, 0]);
        assert_eq!(&d[4..7], &[0x08, 0x12, 0x00]);
        assert_eq!(
            &d[24..36],
            &[0x0A, 0x0A, 0x02, 0x10, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0]
        );
        assert_eq!(&d[36..39], &[0x1C, 0x0A, 0x08]);
        // Subpage FFh returns the same pages.
        let all = mode_sense(&sense6(true, 0, 0x3F, 0xFF, 255), &ro, false)
            .unwrap()
            .data;
        assert_eq!(all, d);
        let t = mode_sense(&sense6(true, 0, 0x3F, 0, 4), &ro, false)
            .unwrap()
            .data;
        assert_eq!(t, d[..4]);
    }

    #[test]
    fn sense_page_control() {
        let dev = disk(512, 100);
        let d = mode_sense(&sense6(false, 1, 0x08, 0, 255), &dev, false)
            .unwrap()
            .data;
        assert_eq!(&d[4..12], &[0; 8], "changeable block descriptor");
        assert_eq!(&d[12..14], &[0x08, 0x12]);
        assert!(d[14..].iter().all(|b| *b == 0));
        let def = mode_sense(&sense6(false, 2, 0x3F, 0, 255), &dev, false).unwrap();
        let cur = mode_sense(&sense6(false, 0, 0x3F, 0, 255), &dev, false).unwrap();
        assert_eq!(def, cur);
        assert_eq!(
            mode_sense(&sense6(false, 3, 0x08, 0, 255), &dev, false),
            Err(Sense::saving_parameters_not_supported())
        );
        assert_eq!(
            mode_sense(&sense6(false, 0, 0x19, 0, 255), &dev, false),
            Err(Sense::invalid_field_in_cdb(2, 5))
        );
        assert_eq!(
            mode_sense(&sense6(false, 0, 0x08, 1, 255), &dev, false),
            Err(Sense::invalid_field_in_cdb(3, 7))
        );
    }

    #[test]
    fn sense10_long_descriptor() {
        let dev = disk(4096, 1 << 33);
        let d = mode_sense(&sense10(true, false, 0, 0x0A, 512), &dev, false)
            .unwrap()
            .data;
        assert_eq!(d.len(), 8 + 16 + 12);
        assert_eq!(&d[0..8], &[0, 34, 0, 0x10, 0x01, 0, 0, 16]);
        assert_eq!(&d[8..16], &(1u64 << 33).to_be_bytes());
        assert_eq!(&d[20..24], &[0, 0, 0x10, 0]);
        let d = mode_sense(&sense10(false, false, 0, 0x0A, 512), &dev, false)
            .unwrap()
            .data;
        assert_eq!(&d[0..8], &[0, 26, 0, 0x10, 0, 0, 0, 8]);
        assert_eq!(&d[8..12], &[0xFF; 4]);
    }

    fn select6(sp: bool, len: u8) -> Cdb {
        pad(&[0x15, 0x10 | u8::from(sp), 0, 0, len, 0])
    }

    fn run(c: &Cdb, data: &[u8], dev: &LunDevice) -> Completion {
        select(c, data, dev, &LunShared::new(), &mut NexusState::empty())
    }

    /// MODE SELECT on a lone gateway's unit: always a completion.
    fn select(
        c: &[u8],
        data: &[u8],
        dev: &LunDevice,
        lu: &LunShared,
        nexus: &mut NexusState,
    ) -> Completion {
        match mode_select(c, data, dev, lu, nexus) {
            Action::Complete(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn select_cdb() {
        assert_eq!(
            mode_select_cdb(&select6(true, 24)),
            Err(Sense::invalid_field_in_cdb(1, 0))
        );
        assert_eq!(
            mode_select_cdb(&select6(false, 0)),
            Ok(Action::Complete(Completion::good()))
        );
        assert_eq!(
            mode_select_cdb(&select6(false, 24)),
            Ok(Action::DataOut { len: 24 })
        );
    }

    #[test]
    fn select_restating_current_is_good() {
        let dev = disk(512, 2048);
        // Feed MODE SENSE output back (clearing the mode data length, PS = 0).
        let mut data = mode_sense(&sense6(false, 0, 0x3F, 0, 255), &dev, false)
            .unwrap()
            .data;
        data[0] = 0;
        let c = select6(false, data.len() as u8);
        assert_eq!(run(&c, &data, &dev), Completion::good());
    }

    #[test]
    fn software_write_protect_is_changeable_and_shared() {
        use crate::scsi::UnitAttention;
        let dev = disk(512, 2048);
        let lu = LunShared::new();
        let mut a = NexusState::attached(&lu, 1);
        let mut b = NexusState::attached(&lu, 2);
        a.clear(UnitAttention::PowerOnReset);
        b.clear(UnitAttention::PowerOnReset);
        // The changeable mask has SWP only.
        let ch = mode_sense(&sense6(true, 1, 0x0A, 0, 255), &dev, false)
            .unwrap()
            .data;
        assert_eq!(&ch[4..], &[0x0A, 0x0A, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0]);
        let mut page = vec![0, 0, 0, 0];
        page.extend_from_slice(&current_page(0x0A, &dev, false).unwrap());
        page[8] |= 0x08;
        let c = select6(false, page.len() as u8);
        assert_eq!(select(&c, &page, &dev, &lu, &mut a), Completion::good());
        assert!(lu.software_write_protect());
        assert!(a.software_write_protect());
        assert_eq!(a.next_ua(), None, "the nexus that changed it is not told");
        b.observe(&lu);
        assert_eq!(b.next_ua(), Some(UnitAttention::ModeParametersChanged));
        assert!(b.software_write_protect());
        // MODE SENSE shows SWP in the page; restating it is no change.
        let cur = mode_sense(&sense6(true, 0, 0x0A, 0, 255), &dev, true)
            .unwrap()
            .data;
        assert_eq!(cur[4 + SWP_AT] & SWP, SWP);
        assert_eq!(select(&c, &page, &dev, &lu, &mut b), Completion::good());
        a.observe(&lu);
        assert_eq!(a.next_ua(), None, "nothing changed");
        // Clearing it again.
        page[8] &= !0x08;
        assert_eq!(select(&c, &page, &dev, &lu, &mut b), Completion::good());
        assert!(!lu.software_write_protect());
        a.observe(&lu);
        assert_eq!(a.next_ua(), Some(UnitAttention::ModeParametersChanged));
    }

    #[test]
    fn select_rejects_changes() {
        let dev = disk(512, 2048);
        let mut caching = vec![0, 0, 0, 0];
        caching.extend_from_slice(&current_page(0x08, &dev, false).unwrap());
        caching[6] = 0; // clear WCE
        let c = select6(false, caching.len() as u8);
        assert_eq!(
            run(&c, &caching, &dev),
            Completion::check(Sense::invalid_field_in_parameter_list(6, 2))
        );

        let mut tas = vec![0, 0, 0, 0];
        tas.extend_from_slice(&current_page(0x0A, &dev, false).unwrap());
        tas[9] |= 0x80; // ATO: not changeable
        assert_eq!(
            run(&select6(false, tas.len() as u8), &tas, &dev),
            Completion::check(Sense::invalid_field_in_parameter_list(9, 7))
        );

        // Wrong page length, unknown page, truncated page, bad block length.
        let bad_len = [0, 0, 0, 0, 0x0A, 0x0B];
        assert_eq!(
            run(&select6(false, 6), &bad_len, &dev),
            Completion::check(Sense::invalid_field_in_parameter_list(5, 7))
        );
        let unknown = [0, 0, 0, 0, 0x19, 0x02, 0, 0];
        assert_eq!(
            run(&select6(false, 8), &unknown, &dev),
            Completion::check(Sense::invalid_field_in_parameter_list(4, 5))
        );
        let short = [0, 0, 0, 0, 0x0A, 0x0A, 0x02];
        assert_eq!(
            run(&select6(false, 7), &short, &dev),
            Completion::check(Sense::parameter_list_length_error())
        );
        let bd = [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x10, 0x00];
        assert_eq!(
            run(&select6(false, 12), &bd, &dev),
            Completion::check(Sense::invalid_field_in_parameter_list(9, 7))
        );
        let bd_ok = [0, 0, 0, 8, 0, 0, 0x08, 0, 0, 0, 0x02, 0x00];
        assert_eq!(run(&select6(false, 12), &bd_ok, &dev), Completion::good());
        assert_eq!(
            run(&select6(false, 12), &bd_ok[..8], &dev),
            Completion::check(Sense::parameter_list_length_error())
        );
    }
}
