//! Sizes and durations as people write them, for plan steps and messages.

/// `1.50 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// `7d`, `12h`, `30m`: a duration as a user writes it.
pub fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// "3 kept copies (1.2 GiB)".
pub fn kept_summary(kept: &[kura_sources::kept::Kept]) -> String {
    let bytes: u64 = kept.iter().filter_map(|k| k.bytes).sum();
    match kept.len() {
        0 => "no kept copy".to_string(),
        1 => format!("1 kept copy ({})", human_bytes(bytes)),
        n => format!("{n} kept copies ({})", human_bytes(bytes)),
    }
}
