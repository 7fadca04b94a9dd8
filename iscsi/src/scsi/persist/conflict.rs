//! Which commands a persistent reservation refuses to which I_T nexus
//! (SPC-4 table 63, SBC-3 table 13).

use super::PrView;
use crate::scsi::opcodes::Handler;

/// How a command is treated in the presence of a persistent reservation
/// (SPC-4 table 63, SBC-3 table 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Allowed from every I_T nexus.
    Allowed,
    /// Reads: allowed under write-exclusive types.
    Read,
    /// Writes and everything that changes state.
    Write,
    /// SPC-2 RESERVE/RELEASE: conflict whenever a registration exists.
    Spc2,
}

fn class(h: Handler) -> Class {
    match h {
        Handler::Inquiry
        | Handler::RequestSense
        | Handler::ReportLuns
        | Handler::ReadCapacity10
        | Handler::ReadCapacity16
        | Handler::ReportTargetPortGroups
        | Handler::ReportSupportedOpcodes
        | Handler::ReportSupportedTmf
        | Handler::TestUnitReady
        | Handler::PrIn
        | Handler::PrOut => Class::Allowed,
        Handler::Read(_)
        | Handler::Verify(_)
        | Handler::Prefetch(_)
        | Handler::ModeSense
        | Handler::GetLbaStatus
        | Handler::ReadDefectData10
        | Handler::ReadDefectData12
        | Handler::ReceiveCopyResults => Class::Read,
        Handler::Reserve | Handler::Release => Class::Spc2,
        Handler::Write(_)
        | Handler::WriteVerify(_)
        | Handler::SyncCache(_)
        | Handler::WriteSame(_)
        | Handler::Unmap
        | Handler::OrWrite
        | Handler::CompareAndWrite
        | Handler::WriteAtomic
        | Handler::ExtendedCopy
        | Handler::Sanitize
        | Handler::ModeSelect
        | Handler::StartStopUnit
        | Handler::PreventAllow => Class::Write,
    }
}

/// Whether `handler` from a nexus that sees `view` ends with RESERVATION
/// CONFLICT.
pub(crate) fn pr_conflicts(handler: Handler, view: &PrView) -> bool {
    let c = class(handler);
    if c == Class::Spc2 {
        return view.any || view.kind.is_some();
    }
    let Some(kind) = view.kind else { return false };
    if view.holder || c == Class::Allowed {
        return false;
    }
    if view.registered && kind.registrants_have_access() {
        return false;
    }
    match c {
        Class::Read => kind.exclusive_access(),
        _ => true,
    }
}
