//! AFL++ target: [`trellis_fuzz::cdb`].
fn main() {
    afl::fuzz!(|data: &[u8]| trellis_fuzz::cdb(data));
}
