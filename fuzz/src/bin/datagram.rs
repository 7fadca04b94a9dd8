//! AFL++ target: [`trellis_fuzz::datagram`].
fn main() {
    afl::fuzz!(|data: &[u8]| trellis_fuzz::datagram(data));
}
