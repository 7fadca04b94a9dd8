//! Writes the starting corpus: `seeds DIR` makes `DIR/<harness>/seed-N`.
fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    for (name, inputs) in trellis_fuzz::seeds() {
        let d = std::path::Path::new(&dir).join(name);
        if let Err(e) = std::fs::create_dir_all(&d) {
            eprintln!("seeds: {}: {e}", d.display());
            std::process::exit(1);
        }
        for (i, input) in inputs.iter().enumerate() {
            let p = d.join(format!("seed-{i}"));
            if let Err(e) = std::fs::write(&p, input) {
                eprintln!("seeds: {}: {e}", p.display());
                std::process::exit(1);
            }
        }
    }
}
