//! AFL++ target: [`trellis_fuzz::api`].
fn main() {
    afl::fuzz!(|data: &[u8]| trellis_fuzz::api(data));
}
