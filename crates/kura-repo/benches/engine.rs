//! Micro-benchmarks of the engine's stages, one core each, printed beside
//! what the machine's own tools do on the same bytes (`b3sum`, `zstd`):
//!
//!     cargo bench -p kura-repo --bench engine [-- --mb 256]
//!
//! The data is real: files from /usr/lib and /usr/share read in sorted
//! order, so compression sees what a backup sees. Not a test: it asserts
//! nothing and prints MB/s.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use kura_format::config::ChunkerParams;
use kura_format::crypto::MasterKey;
use kura_repo::chunker::Chunker;

fn corpus(limit: usize) -> Vec<u8> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                walk(&e.path(), out);
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    let mut files = Vec::new();
    for top in ["/usr/lib", "/usr/share"] {
        walk(Path::new(top), &mut files);
    }
    let mut data = Vec::with_capacity(limit);
    for f in files {
        if data.len() >= limit {
            break;
        }
        if let Ok(b) = std::fs::read(&f) {
            data.extend_from_slice(&b[..b.len().min(limit - data.len())]);
        }
    }
    data
}

fn rate(bytes: usize, secs: f64) -> String {
    format!("{:>8.0} MB/s", bytes as f64 / 1e6 / secs)
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

/// Times a command line over the corpus file; `None` if the tool is missing.
fn tool(cmd: &str, args: &[&str], file: &Path) -> Option<f64> {
    let t = Instant::now();
    let ok = Command::new(cmd)
        .args(args)
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then(|| t.elapsed().as_secs_f64())
}

fn main() {
    let mb: usize =
        std::env::args().skip_while(|a| a != "--mb").nth(1).and_then(|v| v.parse().ok()).unwrap_or(256);
    let data = corpus(mb << 20);
    let n = data.len();
    let file = std::env::temp_dir().join(format!("kura-bench-corpus-{}", std::process::id()));
    std::fs::write(&file, &data).expect("write the corpus file");
    let key = MasterKey::random();
    let chunker = Chunker::new(key.gear_table(), ChunkerParams::default());
    println!("corpus: {} MB of /usr/lib and /usr/share, one core per stage\n", n >> 20);
    println!("{:<34} {:>13}   the machine's own tool", "stage", "kura");

    let (chunks, secs) = time(|| {
        let mut cuts = Vec::new();
        let mut pos = 0;
        while pos < n {
            let len = chunker.cut(&data[pos..]);
            cuts.push((pos, len));
            pos += len;
        }
        cuts
    });
    println!(
        "{:<34} {}   ({} chunks, {} KiB average)",
        "chunking (FastCDC, keyed gear)",
        rate(n, secs),
        chunks.len(),
        n / chunks.len() / 1024
    );

    let (_, secs) = time(|| chunks.iter().map(|&(s, l)| key.blob_id(&data[s..s + l])).collect::<Vec<_>>());
    let b3 = tool("b3sum", &["--num-threads", "1", "--no-mmap"], &file)
        .map_or("b3sum not installed (apt-get install b3sum)".into(), |t| {
            format!("b3sum, 1 thread: {}", rate(n, t))
        });
    println!("{:<34} {}   {b3}", "hashing (keyed BLAKE3 per chunk)", rate(n, secs));

    let (compressed, secs) = time(|| {
        chunks
            .iter()
            .map(|&(s, l)| zstd::bulk::compress(&data[s..s + l], 3).expect("zstd").len())
            .sum::<usize>()
    });
    let z = tool("zstd", &["-3", "-T1", "-c", "-q"], &file)
        .map_or("zstd not installed (apt-get install zstd)".into(), |t| {
            format!("zstd -3 -T1: {}", rate(n, t))
        });
    println!("{:<34} {}   {z}", "compression (zstd 3 per chunk)", rate(n, secs));
    println!("{:<34} {:>8.1} %", "  compressed size", 100.0 * compressed as f64 / n as f64);

    let (_, secs) = time(|| {
        chunks.iter().map(|&(s, l)| key.seal_blob(&data[s..s + l], 0).expect("seal").len()).sum::<usize>()
    });
    println!("{:<34} {}", "encryption (XChaCha20-Poly1305)", rate(n, secs));

    let (sealed, secs) = time(|| {
        chunks.iter().map(|&(s, l)| key.seal_blob(&data[s..s + l], 3).expect("seal")).collect::<Vec<_>>()
    });
    println!("{:<34} {}", "seal: compress + encrypt", rate(n, secs));

    let (_, secs) = time(|| {
        for (sealed, &(s, l)) in sealed.iter().zip(&chunks) {
            let id = key.blob_id(&data[s..s + l]);
            key.open_blob(sealed, kura_format::BlobType::Data, &id, l as u32).expect("open");
        }
    });
    let zd = tool("zstd", &["-d", "-T1", "-c", "-q"], &{
        let z = file.with_extension("zst");
        let _ = Command::new("zstd").args(["-3", "-q", "-f", "-o"]).arg(&z).arg(&file).status();
        z
    })
    .map_or(String::new(), |t| format!("zstd -d: {}", rate(n, t)));
    println!("{:<34} {}   {zd}", "open: decrypt + decompress + verify", rate(n, secs));
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(file.with_extension("zst"));
}
