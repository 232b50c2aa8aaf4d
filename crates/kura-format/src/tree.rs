//! Tree blobs: one directory each (format.md §10).
//!
//! Serialization is deterministic, so an unchanged directory produces the
//! same bytes, hence the same blob id, and costs nothing to store again.
use serde::{Deserialize, Serialize};

use crate::{FormatError, Id};

/// The deepest a snapshot's directories may nest (format.md §10). Backup
/// stores a directory deeper than this empty, with a warning; readers refuse
/// a snapshot deeper than this rather than recurse without end.
pub const MAX_DEPTH: usize = 512;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Chardev,
    Blockdev,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: NodeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_raw: Option<String>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<Id>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Node {
    /// A node with only a name and type; callers fill in the rest.
    pub fn new(name: impl Into<String>, kind: NodeType) -> Node {
        Node {
            name: name.into(),
            kind,
            name_raw: None,
            mode: 0,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime: (0, 0),
            ctime: (0, 0),
            inode: 0,
            device: 0,
            links: 1,
            rdev: None,
            size: None,
            content: None,
            subtree: None,
            target: None,
            target_raw: None,
            error: None,
        }
    }

    /// The exact bytes of the name.
    pub fn name_bytes(&self) -> Result<Vec<u8>, FormatError> {
        decode_raw(&self.name, self.name_raw.as_deref())
    }

    pub fn target_bytes(&self) -> Result<Option<Vec<u8>>, FormatError> {
        match &self.target {
            None => Ok(None),
            Some(t) => decode_raw(t, self.target_raw.as_deref()).map(Some),
        }
    }

    /// Sets `name` (and `name_raw` when the bytes are not UTF-8).
    pub fn set_name_bytes(&mut self, bytes: &[u8]) {
        let (s, raw) = encode_raw(bytes);
        self.name = s;
        self.name_raw = raw;
    }

    pub fn set_target_bytes(&mut self, bytes: &[u8]) {
        let (s, raw) = encode_raw(bytes);
        self.target = Some(s);
        self.target_raw = raw;
    }
}

fn encode_raw(bytes: &[u8]) -> (String, Option<String>) {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

fn decode_raw(s: &str, raw: Option<&str>) -> Result<Vec<u8>, FormatError> {
    use base64::Engine;
    match raw {
        None => Ok(s.as_bytes().to_vec()),
        Some(r) => base64::engine::general_purpose::STANDARD
            .decode(r)
            .map_err(|e| FormatError::corrupt("tree", format!("raw name: {e}"))),
    }
}

impl Tree {
    /// Deterministic encoding: nodes sorted by name bytes.
    pub fn encode(&mut self) -> Vec<u8> {
        self.nodes.sort_by_cached_key(|n| n.name_bytes().unwrap_or_default());
        serde_json::to_vec(self).expect("tree serializes")
    }

    /// Decodes and validates names, so that no node can escape its directory
    /// on restore (format.md §10).
    pub fn decode(bytes: &[u8]) -> Result<Tree, FormatError> {
        let tree: Tree =
            serde_json::from_slice(bytes).map_err(|e| FormatError::corrupt("tree", e.to_string()))?;
        let mut prev: Option<Vec<u8>> = None;
        for n in &tree.nodes {
            let name = n.name_bytes()?;
            if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
                return Err(FormatError::corrupt("tree", format!("unsafe entry name {:?}", n.name)));
            }
            if prev.as_ref().is_some_and(|p| *p >= name) {
                return Err(FormatError::corrupt("tree", "entries unsorted or duplicated"));
            }
            let consistent = match n.kind {
                NodeType::Dir => n.subtree.is_some(),
                NodeType::Symlink => n.target.is_some(),
                _ => true,
            };
            if !consistent {
                return Err(FormatError::corrupt(
                    "tree",
                    format!("{:?} lacks its subtree or target", n.name),
                ));
            }
            prev = Some(name);
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_deterministic_and_sorted() {
        let mut a = Tree { nodes: vec![Node::new("b", NodeType::File), Node::new("a", NodeType::File)] };
        let mut b = Tree { nodes: vec![Node::new("a", NodeType::File), Node::new("b", NodeType::File)] };
        assert_eq!(a.encode(), b.encode());
        assert_eq!(Tree::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn escaping_names_are_refused() {
        for bad in ["..", ".", "", "a/b", "x\0y"] {
            let mut t = Tree { nodes: vec![Node::new(bad, NodeType::File)] };
            let bytes = serde_json::to_vec(&t).unwrap();
            assert!(Tree::decode(&bytes).is_err(), "{bad:?} accepted");
            let _ = t.encode();
        }
    }

    #[test]
    fn non_utf8_names_survive() {
        let mut n = Node::new("", NodeType::File);
        n.set_name_bytes(b"caf\xe9");
        let mut t = Tree { nodes: vec![n] };
        let back = Tree::decode(&t.encode()).unwrap();
        assert_eq!(back.nodes[0].name_bytes().unwrap(), b"caf\xe9");
    }
}
