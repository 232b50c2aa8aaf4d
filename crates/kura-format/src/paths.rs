//! Every path of a repository (format.md §2). Stores and operations build
//! paths only through these functions, so a backend cannot drift from the
//! format.
use crate::Id;

pub const CONFIG: &str = "config";
pub const KEYS: &str = "keys/";
pub const DATA: &str = "data/";
pub const INDEX: &str = "index/";
pub const SNAPSHOTS: &str = "snapshots/";
pub const SESSIONS: &str = "sessions/";
pub const DELETIONS: &str = "deletions/";
pub const PRUNE_LOCK: &str = "locks/prune";

pub fn key(id: &Id) -> String {
    format!("{KEYS}{id}")
}

pub fn pack(id: &Id) -> String {
    let hex = id.to_hex();
    format!("{DATA}{}/{hex}", &hex[..2])
}

pub fn index(id: &Id) -> String {
    format!("{INDEX}{id}")
}

pub fn snapshot(id: &Id) -> String {
    format!("{SNAPSHOTS}{id}")
}

pub fn session(id: &Id) -> String {
    format!("{SESSIONS}{id}")
}

pub fn deletion(id: &Id) -> String {
    format!("{DELETIONS}{id}")
}

/// The id in the last component of a listed path, if it is one. Anything
/// else under a repository prefix (a stray temp file, say) is not ours.
pub fn id_of(path: &str) -> Option<Id> {
    let name = path.rsplit('/').next()?;
    if name.len() != 64 {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_paths_fan_out_by_two_hex_chars() {
        let id = Id([0xab; 32]);
        assert_eq!(pack(&id), format!("data/ab/{}", id.to_hex()));
        assert_eq!(id_of(&pack(&id)), Some(id));
        assert_eq!(id_of("data/ab/tmp.123"), None);
    }
}
