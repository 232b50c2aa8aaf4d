//! Counting a pg_dump custom-format archive as it streams into the
//! repository: the table of contents names the tables and schema objects,
//! and the data blocks that follow hold each table's rows as COPY text,
//! one line a row (a newline inside a value is written `\n`), ended by a
//! `\.` line. With `--compress=0` the rows are plain, so counting them is
//! counting newlines, at memory speed, in the same snapshot pg_dump read.
//!
//! The layout (PostgreSQL's `pg_backup_archiver.c` and
//! `pg_backup_custom.c`, archive versions 1.12 to 1.16): a header, the
//! table of contents, then one block per entry with data: a type byte
//! (1 data, 3 large objects), the entry's dump id, and chunks, each an
//! int length and its bytes, ended by a zero length. Ints are a sign byte
//! and `intSize` bytes, least significant first; strings an int length
//! (-1 for none) and their bytes.
use crate::catalogue::{Catalogue, Tally};
use std::collections::HashMap;

/// Kinds of table-of-contents entries counted as schema objects, with the
/// names the catalogue gives them.
const OBJECT_KINDS: [(&str, &str); 8] = [
    ("TABLE", "table"),
    ("VIEW", "view"),
    ("MATERIALIZED VIEW", "materialized view"),
    ("SEQUENCE", "sequence"),
    ("FUNCTION", "function"),
    ("PROCEDURE", "procedure"),
    ("AGGREGATE", "aggregate"),
    ("TRIGGER", "trigger"),
];

/// The table of contents is read whole before any data, from a buffer
/// that grows until it holds it; an archive whose contents pass this is
/// not counted rather than held in memory.
const MAX_TOC: usize = 256 << 20;

enum State {
    /// Collecting the header and table of contents.
    Head,
    /// Between blocks: a type byte.
    Block,
    /// An int: the dump id of a block of `kind`.
    BlockId {
        kind: u8,
    },
    /// An int: a chunk's length, of table `id` (None: large objects).
    ChunkLen {
        id: Option<i64>,
    },
    ChunkData {
        id: Option<i64>,
        left: u64,
    },
    /// Large objects: an oid (0 ends the block), then its chunks.
    BlobOid,
    /// Not following any more: an unknown block, a malformed archive, or
    /// a visitor that stopped.
    Lost,
}

/// What a [`Walker`] finds, in archive order. An error stops the walk and
/// is returned from [`Walker::feed`].
pub(crate) trait Visit {
    /// The header and table of contents; `false` stops following.
    fn head(&mut self, head: &Head) -> std::io::Result<bool>;
    /// Bytes of table data entry `id`'s COPY text, in order.
    fn data(&mut self, id: i64, bytes: &[u8]) -> std::io::Result<()>;
    /// Table data entry `id` has no more bytes.
    fn end(&mut self, id: i64) -> std::io::Result<()>;
}

/// Follows an archive fed in pieces of any size, without holding more
/// than its table of contents.
pub(crate) struct Walker<V> {
    state: State,
    /// Header phase: everything so far. Later: a partial int.
    buf: Vec<u8>,
    /// Head phase: try parsing again once the buffer reaches this.
    retry_at: usize,
    int_size: usize,
    pub(crate) visitor: V,
}

impl<V: Visit> Walker<V> {
    pub(crate) fn new(visitor: V) -> Walker<V> {
        Walker { state: State::Head, buf: Vec::new(), retry_at: 0, int_size: 4, visitor }
    }

    /// Whether the walk is between blocks: at the archive's end, if no
    /// more bytes come. Parses a head still being collected first.
    pub(crate) fn at_block_boundary(&mut self) -> std::io::Result<bool> {
        if matches!(self.state, State::Head) {
            self.try_head()?;
        }
        Ok(matches!(self.state, State::Block))
    }

    pub(crate) fn lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    pub(crate) fn lose(&mut self) {
        self.state = State::Lost;
        self.buf = Vec::new();
    }

    pub(crate) fn feed(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            match self.state {
                State::Lost => return Ok(()),
                State::Head => {
                    self.buf.extend_from_slice(data);
                    data = &[];
                    if self.buf.len() >= self.retry_at {
                        self.try_head()?;
                    }
                }
                State::Block => {
                    let kind = data[0];
                    data = &data[1..];
                    self.state = match kind {
                        1 | 3 => State::BlockId { kind },
                        _ => State::Lost,
                    };
                }
                State::BlockId { kind } => {
                    let Some(id) = self.int(&mut data) else { return Ok(()) };
                    self.state = if kind == 1 { State::ChunkLen { id: Some(id) } } else { State::BlobOid };
                }
                State::BlobOid => {
                    let Some(oid) = self.int(&mut data) else { return Ok(()) };
                    self.state = if oid == 0 { State::Block } else { State::ChunkLen { id: None } };
                }
                State::ChunkLen { id } => {
                    let Some(len) = self.int(&mut data) else { return Ok(()) };
                    self.state = match (len, id) {
                        (0, Some(id)) => {
                            self.visitor.end(id)?;
                            State::Block
                        }
                        (0, None) => State::BlobOid,
                        (n, _) if n < 0 => State::Lost,
                        (n, id) => State::ChunkData { id, left: n as u64 },
                    };
                }
                State::ChunkData { id, left } => {
                    let take = (left as usize).min(data.len());
                    let (chunk, rest) = data.split_at(take);
                    if let Some(id) = id {
                        self.visitor.data(id, chunk)?;
                    }
                    data = rest;
                    let left = left - take as u64;
                    self.state =
                        if left == 0 { State::ChunkLen { id } } else { State::ChunkData { id, left } };
                }
            }
        }
        Ok(())
    }

    /// Parses the header and table of contents if the buffer holds them,
    /// then goes on with the bytes after them.
    fn try_head(&mut self) -> std::io::Result<()> {
        match parse_head(&self.buf) {
            Ok(Some(head)) => {
                self.int_size = head.int_size;
                if !self.visitor.head(&head)? {
                    self.lose();
                    return Ok(());
                }
                let rest = self.buf.split_off(head.len);
                self.buf = Vec::new();
                self.state = State::Block;
                self.feed(&rest)
            }
            Ok(None) if self.buf.len() > MAX_TOC => {
                self.lose();
                Ok(())
            }
            // Parsing from the start again is cheap while the buffer at
            // least doubles in between.
            Ok(None) => {
                self.retry_at = self.buf.len() * 2;
                Ok(())
            }
            Err(_) => {
                self.lose();
                Ok(())
            }
        }
    }

    /// An int, possibly split across feeds.
    fn int(&mut self, data: &mut &[u8]) -> Option<i64> {
        let need = 1 + self.int_size;
        let take = (need - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        *data = &data[take..];
        if self.buf.len() < need {
            return None;
        }
        let v = read_int(&self.buf, self.int_size);
        self.buf.clear();
        if v.is_none() {
            self.state = State::Lost;
        }
        v
    }
}

/// Counts rows and schema objects (format.md §11.4).
pub(crate) struct ArchiveCounter {
    walker: Walker<Counts>,
}

struct Counts {
    /// Table data entries: dump id to `schema.table`.
    tables: HashMap<i64, String>,
    catalogue: Catalogue,
    /// The table whose rows are being counted: newlines so far and the last
    /// bytes of its data, to leave out the `\.` line that ends it.
    newlines: u64,
    tail: Vec<u8>,
    seen: u64,
}

impl ArchiveCounter {
    pub(crate) fn new() -> ArchiveCounter {
        let counts = Counts {
            tables: HashMap::new(),
            catalogue: Catalogue::new(),
            newlines: 0,
            tail: Vec::new(),
            seen: 0,
        };
        ArchiveCounter { walker: Walker::new(counts) }
    }

    /// What was counted; `complete` only if the archive was followed to
    /// its end.
    pub(crate) fn finish(mut self) -> Catalogue {
        let whole = self.walker.at_block_boundary().unwrap_or(false);
        let mut catalogue = std::mem::take(&mut self.walker.visitor.catalogue);
        if !whole {
            catalogue.complete = false;
        }
        if !catalogue.complete {
            catalogue.rows.clear();
        }
        catalogue
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        // Counting never fails; an archive it cannot follow is incomplete.
        let _ = self.walker.feed(data);
        if self.walker.lost() {
            self.walker.visitor.catalogue.complete = false;
        }
    }

    fn lose(&mut self) {
        self.walker.lose();
        self.walker.visitor.catalogue.complete = false;
    }
}

impl Visit for Counts {
    fn head(&mut self, head: &Head) -> std::io::Result<bool> {
        for e in &head.entries {
            if let Some((_, kind)) = OBJECT_KINDS.iter().find(|(d, _)| *d == e.desc) {
                *self.catalogue.objects.entry(kind.to_string()).or_default() += 1;
            }
            if e.desc == "TABLE DATA" {
                self.tables.insert(e.id, format!("{}.{}", e.namespace, e.tag));
            }
        }
        Ok(true)
    }

    fn data(&mut self, _id: i64, chunk: &[u8]) -> std::io::Result<()> {
        self.newlines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        self.seen += chunk.len() as u64;
        self.tail.extend_from_slice(&chunk[chunk.len().saturating_sub(8)..]);
        let cut = self.tail.len().saturating_sub(8);
        self.tail.drain(..cut);
        Ok(())
    }

    /// A table's data ended: its rows are its lines, less the `\.` line
    /// (and the blank lines after it) that pg_dump ends COPY data with.
    fn end(&mut self, id: i64) -> std::io::Result<()> {
        let t = &self.tail;
        let blank = t.iter().rev().take_while(|&&b| b == b'\n').count();
        let body = &t[..t.len() - blank];
        let terminated = blank > 0
            && body.ends_with(b"\\.")
            && ((body.len() == 2 && self.seen == t.len() as u64)
                || (body.len() >= 3 && body[body.len() - 3] == b'\n'));
        let rows = if terminated { self.newlines - blank as u64 } else { self.newlines };
        (self.newlines, self.seen) = (0, 0);
        self.tail.clear();
        if let Some(name) = self.tables.get(&id) {
            *self.catalogue.rows.entry(name.clone()).or_default() += rows;
        }
        Ok(())
    }
}

fn read_int(b: &[u8], size: usize) -> Option<i64> {
    let mut v: i64 = 0;
    for (i, byte) in b[1..=size].iter().enumerate() {
        if i >= 8 {
            return None;
        }
        v |= (*byte as i64) << (8 * i);
    }
    Some(if b[0] != 0 { -v } else { v })
}

/// One table-of-contents entry, with what a restore needs of it.
#[derive(Clone)]
pub(crate) struct Entry {
    pub id: i64,
    pub desc: String,
    pub namespace: String,
    pub tag: String,
    /// 1 none, 2 pre-data, 3 data, 4 post-data (pg_backup.h).
    pub section: i64,
    /// The SQL that creates the object.
    pub defn: String,
    /// A table data entry's `COPY … FROM stdin;`.
    pub copy_stmt: Option<String>,
    pub tablespace: String,
    /// Dump ids of the entries this one depends on.
    pub deps: Vec<i64>,
}

pub(crate) struct Head {
    /// Bytes up to the first data block.
    pub len: usize,
    pub int_size: usize,
    /// Whether pg_dump compressed the data blocks.
    pub compressed: bool,
    pub entries: Vec<Entry>,
}

/// A cursor over the head; `Ok(None)` when more bytes are needed.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
    int_size: usize,
    off_size: usize,
}

#[derive(Debug)]
struct Malformed;

impl<'a> Cur<'a> {
    fn bytes(&mut self, n: usize) -> Result<Option<&'a [u8]>, Malformed> {
        if self.at + n > self.b.len() {
            return Ok(None);
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(Some(s))
    }

    fn int(&mut self) -> Result<Option<i64>, Malformed> {
        let size = self.int_size;
        match self.bytes(1 + size)? {
            None => Ok(None),
            Some(b) => read_int(b, size).map(Some).ok_or(Malformed),
        }
    }

    /// A string; the outer Option is "need more", the inner a NULL.
    fn str(&mut self) -> Result<Option<Option<String>>, Malformed> {
        let Some(len) = self.int()? else { return Ok(None) };
        if len < 0 {
            return Ok(Some(None));
        }
        if len as usize > MAX_TOC {
            return Err(Malformed);
        }
        Ok(self.bytes(len as usize)?.map(|b| Some(String::from_utf8_lossy(b).into_owned())))
    }
}

macro_rules! need {
    ($e:expr) => {
        match $e? {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

fn parse_head(b: &[u8]) -> Result<Option<Head>, Malformed> {
    let mut c = Cur { b, at: 0, int_size: 4, off_size: 8 };
    let magic = need!(c.bytes(5));
    if magic != b"PGDMP" {
        return Err(Malformed);
    }
    let v = need!(c.bytes(3));
    let version = (v[0], v[1]);
    if version.0 != 1 || !(12..=16).contains(&version.1) {
        return Err(Malformed);
    }
    let sizes = need!(c.bytes(3));
    c.int_size = sizes[0] as usize;
    c.off_size = sizes[1] as usize;
    if !(1..=8).contains(&c.int_size) || sizes[2] != 1 {
        return Err(Malformed);
    }
    // A compression algorithm from 1.15, a zlib level before (-1: the
    // default level).
    let compressed = if version.1 >= 15 { need!(c.bytes(1))[0] != 0 } else { need!(c.int()) != 0 };
    for _ in 0..7 {
        need!(c.int());
    }
    for _ in 0..3 {
        need!(c.str());
    }
    let count = need!(c.int());
    if count < 0 {
        return Err(Malformed);
    }
    let mut entries = Vec::new();
    for _ in 0..count {
        let id = need!(c.int());
        need!(c.int());
        need!(c.str());
        need!(c.str());
        let tag = need!(c.str()).unwrap_or_default();
        let desc = need!(c.str()).unwrap_or_default();
        let section = need!(c.int());
        let defn = need!(c.str()).unwrap_or_default();
        need!(c.str());
        let copy_stmt = need!(c.str());
        let namespace = need!(c.str()).unwrap_or_default();
        let tablespace = need!(c.str()).unwrap_or_default();
        if version.1 >= 14 {
            need!(c.str());
        }
        if version.1 >= 16 {
            need!(c.int());
        }
        need!(c.str());
        need!(c.str());
        let mut deps = Vec::new();
        while let Some(d) = need!(c.str()) {
            deps.extend(d.parse::<i64>().ok());
        }
        need!(c.bytes(1 + c.off_size));
        entries.push(Entry { id, desc, namespace, tag, section, defn, copy_stmt, tablespace, deps });
    }
    Ok(Some(Head { len: c.at, int_size: c.int_size, compressed, entries }))
}

impl Tally for ArchiveCounter {
    fn feed(&mut self, data: &[u8]) {
        ArchiveCounter::feed(self, data)
    }

    fn finish(mut self: Box<Self>, whole: bool) -> Catalogue {
        if !whole {
            self.lose();
        }
        ArchiveCounter::finish(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64) -> Vec<u8> {
        let mut b = vec![u8::from(v < 0)];
        b.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        b
    }

    fn s(v: Option<&str>) -> Vec<u8> {
        match v {
            None => int(-1),
            Some(t) => [int(t.len() as i64), t.as_bytes().to_vec()].concat(),
        }
    }

    /// An archive as pg_dump 15 (version 1.14) writes it to a pipe.
    fn archive(tables: &[(&str, &[&[u8]])]) -> Vec<u8> {
        let mut b = b"PGDMP\x01\x0e\x00\x04\x08\x01".to_vec();
        b.extend(int(0));
        for _ in 0..7 {
            b.extend(int(1));
        }
        for x in ["shop", "15.1", "15.1"] {
            b.extend(s(Some(x)));
        }
        b.extend(int(tables.len() as i64 * 2 + 1));
        let mut entry = |id: i64, tag: &str, desc: &str| {
            b.extend(int(id));
            b.extend(int(i64::from(desc == "TABLE DATA")));
            for x in [Some("0"), Some("0"), Some(tag), Some(desc)] {
                b.extend(s(x));
            }
            b.extend(int(2));
            for x in
                [Some(""), Some(""), None, Some("public"), None, None, Some("app"), Some("false"), Some("3")]
            {
                b.extend(s(x));
            }
            b.extend(s(None));
            b.extend([1, 0, 0, 0, 0, 0, 0, 0, 0]);
        };
        entry(1, "v", "VIEW");
        for (i, (t, _)) in tables.iter().enumerate() {
            entry(10 + i as i64, t, "TABLE");
            entry(100 + i as i64, t, "TABLE DATA");
        }
        for (i, (_, chunks)) in tables.iter().enumerate() {
            b.push(1);
            b.extend(int(100 + i as i64));
            for c in chunks.iter() {
                b.extend(int(c.len() as i64));
                b.extend_from_slice(c);
            }
            b.extend(int(0));
        }
        b
    }

    const END: &[u8] = b"\\.\n\n\n";

    #[test]
    fn rows_and_objects_are_counted_however_the_stream_is_cut() {
        let data = archive(&[
            ("users", &[b"1\tann\n", b"2\tbob\n", b"3\ta\\nb\n", END]),
            ("empty", &[END]),
            ("blanks", &[b"\n", b"\n", END]),
            ("dots", &[b"\\\\.\n", END]),
        ]);
        for step in [1, 3, 7, 64, data.len()] {
            let mut c = ArchiveCounter::new();
            for piece in data.chunks(step) {
                c.feed(piece);
            }
            let cat = c.finish();
            assert!(cat.complete, "step {step}");
            let rows: Vec<(&str, u64)> = cat.rows.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            assert_eq!(
                rows,
                [("public.blanks", 2), ("public.dots", 1), ("public.empty", 0), ("public.users", 3)],
                "step {step}"
            );
            assert_eq!(cat.objects.get("table"), Some(&4));
            assert_eq!(cat.objects.get("view"), Some(&1));
        }
    }

    #[test]
    fn a_cut_or_foreign_archive_is_incomplete_and_claims_no_rows() {
        let data = archive(&[("users", &[b"1\n", END])]);
        let mut c = ArchiveCounter::new();
        c.feed(&data[..data.len() - 3]);
        let cat = c.finish();
        assert!(!cat.complete && cat.rows.is_empty());
        let mut c = ArchiveCounter::new();
        c.feed(b"PGDMP\x01\x63\x00 not an archive this kura knows");
        assert!(!c.finish().complete);
    }
}
