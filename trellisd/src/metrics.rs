//! The data path's Prometheus metrics, appended to the control plane's on
//! `/metrics`: per device, operations and bytes read and written, flushes,
//! unmaps and errors since the member started, and its size; and the
//! devices of the configuration this member cannot serve (an alert:
//! `trellis_devices_unserved > 0`).
//!
//! Device names are `[A-Za-z0-9._-]` and UUIDs hex with dashes, so label
//! values need no escaping.

use std::fmt::Write;

use trellis_iscsi::target::{AdmissionStats, DeviceIo, RefusalKind};

/// Prometheus text for the portals' connection caps and refusals.
pub fn render_admission(a: &AdmissionStats) -> String {
    format!(
        "# HELP trellis_iscsi_connections iSCSI connections open on this member's portals.\n\
         # TYPE trellis_iscsi_connections gauge\ntrellis_iscsi_connections {}\n\
         # HELP trellis_iscsi_max_connections_per_portal The cap of connections per portal.\n\
         # TYPE trellis_iscsi_max_connections_per_portal gauge\ntrellis_iscsi_max_connections_per_portal {}\n\
         # HELP trellis_iscsi_connections_refused_total Connections closed as soon as accepted: the portal was full, or their address had too many logins in progress.\n\
         # TYPE trellis_iscsi_connections_refused_total counter\n\
         trellis_iscsi_connections_refused_total{{reason=\"portal_full\"}} {}\n\
         trellis_iscsi_connections_refused_total{{reason=\"address_busy\"}} {}\n\
         # HELP trellis_iscsi_accept_errors_total Failed accepts on the portals (out of descriptors, aborted connections).\n\
         # TYPE trellis_iscsi_accept_errors_total counter\ntrellis_iscsi_accept_errors_total {}\n",
        a.open, a.max_per_portal, a.refused_cap, a.refused_address, a.accept_errors
    ) + &render_logins(a)
}

/// Prometheus text for refused logins.
fn render_logins(a: &AdmissionStats) -> String {
    let mut out = String::from(
        "# HELP trellis_iscsi_login_refusals_total Logins refused, by kind (authentication: CHAP; authorization: not on the ACL; not_found: no such target; other: protocol).\n\
         # TYPE trellis_iscsi_login_refusals_total counter\n",
    );
    for (kind, n) in RefusalKind::ALL.iter().zip(a.login_refusals) {
        let _ = writeln!(
            out,
            "trellis_iscsi_login_refusals_total{{kind=\"{}\"}} {n}",
            kind.label()
        );
    }
    let _ = writeln!(
        out,
        "# HELP trellis_iscsi_protocol_drops_total Connections dropped for too many protocol errors (Rejects).\n\
         # TYPE trellis_iscsi_protocol_drops_total counter\ntrellis_iscsi_protocol_drops_total {}",
        a.protocol_drops
    );
    let _ = writeln!(
        out,
        "# HELP trellis_iscsi_login_delays_total Refused logins whose answer was held back (repeated refusals from one address or name).\n\
         # TYPE trellis_iscsi_login_delays_total counter\ntrellis_iscsi_login_delays_total {}",
        a.login_delays
    );
    out
}

/// Prometheus text for `devices`, served here, and `unserved`, the names
/// of the configuration's devices this member cannot serve.
pub fn render(devices: &[DeviceIo], unserved: &[String]) -> String {
    type Field = fn(&DeviceIo) -> u64;
    let families: [(&str, &str, &str, Field); 8] = [
        (
            "trellis_device_read_ops_total",
            "counter",
            "Reads submitted to the backing store.",
            |d| d.io.read_ops,
        ),
        (
            "trellis_device_read_bytes_total",
            "counter",
            "Bytes read from the backing store.",
            |d| d.io.read_bytes,
        ),
        (
            "trellis_device_write_ops_total",
            "counter",
            "Writes (and write zeroes) submitted to the backing store.",
            |d| d.io.write_ops,
        ),
        (
            "trellis_device_write_bytes_total",
            "counter",
            "Bytes written to the backing store.",
            |d| d.io.write_bytes,
        ),
        (
            "trellis_device_flush_ops_total",
            "counter",
            "Cache flushes of the backing store.",
            |d| d.io.flush_ops,
        ),
        (
            "trellis_device_unmap_ops_total",
            "counter",
            "Unmaps (hole punches) of the backing store.",
            |d| d.io.unmap_ops,
        ),
        (
            "trellis_device_io_errors_total",
            "counter",
            "Backing store operations that failed.",
            |d| d.io.errors,
        ),
        (
            "trellis_device_size_bytes",
            "gauge",
            "The device's size.",
            |d| d.size,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, field) in families {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for d in devices {
            let _ = writeln!(
                out,
                "{name}{{device=\"{}\",uuid=\"{}\"}} {}",
                d.name,
                d.uuid,
                field(d)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP trellis_devices_unserved Devices of the configuration this member cannot serve (their backing does not open; the log says why).\n# TYPE trellis_devices_unserved gauge\ntrellis_devices_unserved {}",
        unserved.len()
    );
    let _ = writeln!(
        out,
        "# HELP trellis_device_unserved 1 for each device this member cannot serve.\n# TYPE trellis_device_unserved gauge"
    );
    for name in unserved {
        let _ = writeln!(out, "trellis_device_unserved{{device=\"{name}\"}} 1");
    }
    out
}

#[cfg(test)]
mod tests {
    use trellis_datapath::IoTotals;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn every_device_has_every_family() {
        let io = IoTotals {
            read_ops: 3,
            read_bytes: 12288,
            write_ops: 2,
            write_bytes: 1024,
            flush_ops: 1,
            unmap_ops: 4,
            errors: 0,
        };
        let text = render(
            &[DeviceIo {
                name: "d1".into(),
                uuid: Uuid::from_u128(1),
                size: 1 << 20,
                io,
            }],
            &[],
        );
        let u = "00000000-0000-0000-0000-000000000001";
        for line in [
            format!("trellis_device_read_ops_total{{device=\"d1\",uuid=\"{u}\"}} 3"),
            format!("trellis_device_read_bytes_total{{device=\"d1\",uuid=\"{u}\"}} 12288"),
            format!("trellis_device_write_ops_total{{device=\"d1\",uuid=\"{u}\"}} 2"),
            format!("trellis_device_write_bytes_total{{device=\"d1\",uuid=\"{u}\"}} 1024"),
            format!("trellis_device_flush_ops_total{{device=\"d1\",uuid=\"{u}\"}} 1"),
            format!("trellis_device_unmap_ops_total{{device=\"d1\",uuid=\"{u}\"}} 4"),
            format!("trellis_device_io_errors_total{{device=\"d1\",uuid=\"{u}\"}} 0"),
            format!("trellis_device_size_bytes{{device=\"d1\",uuid=\"{u}\"}} 1048576"),
            "# TYPE trellis_device_read_ops_total counter".to_owned(),
            "# TYPE trellis_device_size_bytes gauge".to_owned(),
            "trellis_devices_unserved 0".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("trellis_device_unserved{"), "{text}");
    }

    #[test]
    fn unserved_devices_are_counted_and_named() {
        let text = render(&[], &["orphan".to_owned(), "typo".to_owned()]);
        for line in [
            "# TYPE trellis_devices_unserved gauge",
            "trellis_devices_unserved 2",
            "trellis_device_unserved{device=\"orphan\"} 1",
            "trellis_device_unserved{device=\"typo\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
