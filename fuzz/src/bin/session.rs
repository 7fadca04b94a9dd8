//! AFL++ target: [`trellis_fuzz::session`].
fn main() {
    afl::fuzz!(|data: &[u8]| {
        trellis_fuzz::session(data);
    });
}
