//! PDU codec hot paths: BHS parse, response header encode, and framing of a
//! 4 KiB data PDU with and without CRC32C digests.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use trellis_iscsi::pdu::{
    split_pdu, write_pdu, DataIn, DataOut, Digests, Header, ScsiCommand, ScsiResponse, BHS_LEN,
    RESERVED_TAG,
};

fn scsi_command_bhs() -> [u8; BHS_LEN] {
    let mut cdb = [0u8; 16];
    cdb[..10].copy_from_slice(&[0x28, 0, 0, 0, 0x10, 0, 0, 0, 8, 0]);
    let mut bhs = [0u8; BHS_LEN];
    ScsiCommand {
        immediate: false,
        final_bit: true,
        read: true,
        write: false,
        attr: 1,
        total_ahs_len: 0,
        data_segment_len: 0,
        lun: 0x0001_0000_0000_0000,
        itt: 0x2a,
        expected_data_transfer_length: 4096,
        cmdsn: 5,
        exp_statsn: 9,
        cdb,
    }
    .encode(&mut bhs);
    bhs
}

fn parse(c: &mut Criterion) {
    let bhs = scsi_command_bhs();
    c.bench_function("pdu/parse_scsi_command", |b| {
        b.iter(|| Header::parse(black_box(&bhs)))
    });
}

fn encode(c: &mut Criterion) {
    let data_in = DataIn {
        final_bit: true,
        acknowledge: false,
        residual_overflow: false,
        residual_underflow: false,
        status_present: false,
        status: 0,
        total_ahs_len: 0,
        data_segment_len: 4096,
        lun: 0,
        itt: 0x2a,
        ttt: RESERVED_TAG,
        statsn: 0,
        exp_cmdsn: 6,
        max_cmdsn: 133,
        data_sn: 0,
        buffer_offset: 0,
        residual_count: 0,
    };
    let response = ScsiResponse {
        bidi_overflow: false,
        bidi_underflow: false,
        residual_overflow: false,
        residual_underflow: false,
        response: 0,
        status: 0,
        total_ahs_len: 0,
        data_segment_len: 0,
        itt: 0x2a,
        snack_tag: 0,
        statsn: 10,
        exp_cmdsn: 6,
        max_cmdsn: 133,
        exp_data_sn: 1,
        bidi_read_residual_count: 0,
        residual_count: 0,
    };
    c.bench_function("pdu/encode_data_in_and_response", |b| {
        let mut a = [0u8; BHS_LEN];
        let mut r = [0u8; BHS_LEN];
        b.iter(|| {
            black_box(&data_in).encode(&mut a);
            black_box(&response).encode(&mut r);
            black_box((&a, &r));
        })
    });
}

fn split(c: &mut Criterion) {
    let mut bhs = [0u8; BHS_LEN];
    DataOut {
        final_bit: true,
        total_ahs_len: 0,
        data_segment_len: 4096,
        lun: 0,
        itt: 0x2a,
        ttt: 7,
        exp_statsn: 9,
        data_sn: 0,
        buffer_offset: 0,
    }
    .encode(&mut bhs);
    let payload: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    let mut group = c.benchmark_group("pdu/split_4k");
    group.throughput(Throughput::Bytes(4096));
    for (name, digests) in [
        ("no_digest", Digests::default()),
        (
            "crc32c",
            Digests {
                header: true,
                data: true,
            },
        ),
    ] {
        let mut wire = Vec::new();
        write_pdu(&bhs, &payload, digests, &mut wire);
        group.bench_with_input(BenchmarkId::from_parameter(name), &wire, |b, wire| {
            b.iter(|| split_pdu(black_box(wire), digests, 262_144))
        });
    }
    group.finish();
}

criterion_group!(benches, parse, encode, split);
criterion_main!(benches);
