//! Writes the fuzz targets' starting corpus, one folder per target, for
//! `scripts/fuzz` (or `cargo fuzz run <target> <dir>/<target>`).
//!
//! Usage: `cargo run -p kura-format --example fuzz_seeds -- <dir>`
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args_os().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let seeds = kura_format::fuzz::seeds();
    for (name, _) in kura_format::fuzz::TARGETS {
        let mine: Vec<&Vec<u8>> = seeds.iter().filter(|(n, _)| n == name).map(|(_, s)| s).collect();
        // A target without seeds of its own starts from all of them.
        let pool = if mine.is_empty() { seeds.iter().map(|(_, s)| s).collect() } else { mine };
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub)?;
        for (i, s) in pool.iter().enumerate() {
            std::fs::write(sub.join(format!("seed-{i}")), s)?;
        }
    }
    Ok(())
}
