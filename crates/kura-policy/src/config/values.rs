//! Values as kura.toml spells them: durations, compression levels, and
//! `${VAR}` expansion, with errors that name their place.
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

pub(super) fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map(Some).map_err(serde::de::Error::custom)
}

pub(super) fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    parse_size(&s).map(Some).map_err(serde::de::Error::custom)
}

/// `500MB`, `50GB`, `1TB` (powers of 1000), `20GiB` (of 1024); a bare
/// number is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size (use e.g. 500MB, 50GB, 1TB)"))?;
    let per: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("{s:?} is not a size (use e.g. 500MB, 50GB, 1TB)")),
    };
    let bytes = n * per;
    if !bytes.is_finite() || !(0.0..=1e18).contains(&bytes) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// A compression choice as a zstd level: `auto` is the repository's own
/// (`None`), `off` stores blobs uncompressed (0), `fast` is level 1, `max`
/// level 19, and a number from 1 to 22 is that level. Used by the config
/// file and by `--compression` alike.
pub fn parse_compression(s: &str) -> Result<Option<i32>, String> {
    match s.trim() {
        "auto" => Ok(None),
        "off" => Ok(Some(0)),
        "fast" => Ok(Some(1)),
        "max" => Ok(Some(19)),
        n => match n.parse::<i32>() {
            Ok(level @ 1..=22) => Ok(Some(level)),
            _ => {
                Err(format!("{s:?} is not a compression (use auto, off, fast, max, or a level from 1 to 22)"))
            }
        },
    }
}

/// `30s`, `15m`, `24h`, `7d`; a bare number is seconds. Used by the config
/// file and by command-line flags alike.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration (use e.g. 30s, 15m, 24h, 7d)"))?;
    let per = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?} is not a duration (use e.g. 30s, 15m, 24h, 7d)")),
    };
    // Found by fuzzing: a long number overflowed. A century is more than
    // any retention or window needs, and keeps every later date sum in range.
    const CENTURY: u64 = 100 * 366 * 86400;
    match n.checked_mul(per) {
        Some(secs) if secs <= CENTURY => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{s:?} is longer than a hundred years")),
    }
}

/// Replaces `${NAME}` with the variable's value; `$${` stays a literal `${`.
pub(super) fn expand(
    s: &str,
    place: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').ok_or_else(|| invalid(place, format!("unclosed ${{ in {s:?}")))?;
        let var = &rest[i + 2..i + end];
        let value = env(var)
            .ok_or_else(|| ConfigError::MissingEnv { place: place.to_string(), var: var.to_string() })?;
        out.push_str(&value);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(super) fn expand_value(
    v: &mut toml::Value,
    place: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match v {
        toml::Value::String(s) => *s = expand(s, place, env)?,
        toml::Value::Array(a) => {
            for x in a {
                expand_value(x, place, env)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, x) in t.iter_mut() {
                expand_value(x, &format!("{place}.{k}"), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

pub(super) fn section<T: serde::de::DeserializeOwned>(
    place: &str,
    table: toml::Table,
) -> Result<T, ConfigError> {
    T::deserialize(toml::Value::Table(table)).map_err(|e| {
        // toml names the key a value error is about on a last line of its
        // own ("in `changed_within`"); it belongs in the place, so every
        // message reads `target.x.changed_within: …`.
        let text = e.to_string();
        let text = text.trim();
        match text.rsplit_once("\nin `").and_then(|(msg, key)| Some((msg, key.strip_suffix('`')?))) {
            Some((msg, key)) => invalid(format!("{place}.{key}"), msg.trim().to_string()),
            None => invalid(place, text.to_string()),
        }
    })
}
