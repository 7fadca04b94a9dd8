//! AFL++ target: [`trellis_fuzz::pdu`].
fn main() {
    afl::fuzz!(|data: &[u8]| trellis_fuzz::pdu(data));
}
