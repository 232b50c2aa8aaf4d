//! Splitting a mysqldump / mariadb-dump stream into its parts while it
//! streams, so that each table is its own file in the snapshot (restorable
//! alone, and deduplicated on its own) and the parts concatenated in order
//! are the original dump, byte for byte (format.md §11.1).
//!
//! The dump tools mark each section with a comment block at the start of a
//! line (`--\n-- Table structure for table `t`\n`). Inside data, a line can
//! never start with such a comment: the tools escape newlines in values, so
//! every data line starts with `INSERT` or `(`. Lines are never held whole
//! in memory: only a bounded prefix is inspected, and a long row streams
//! through.
use std::io::{BufRead, Read};
use std::sync::{Arc, Mutex};

/// What a part of the dump holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// Session settings before the first section.
    Header,
    /// A table's structure, its rows and its triggers.
    Table(String),
    /// The placeholder a view gets until the tables it reads exist.
    ViewStub(String),
    Events,
    Routines,
    /// A view's final definition.
    View(String),
    /// Session settings restored at the end.
    Footer,
}

impl PartKind {
    /// The object a part belongs to, for `--table`.
    pub fn object(&self) -> Option<&str> {
        match self {
            PartKind::Table(n) | PartKind::ViewStub(n) | PartKind::View(n) => Some(n),
            _ => None,
        }
    }

    fn label(&self) -> (&'static str, Option<&str>) {
        match self {
            PartKind::Header => ("header", None),
            PartKind::Table(n) => ("table", Some(n)),
            PartKind::ViewStub(n) => ("view-stub", Some(n)),
            PartKind::Events => ("events", None),
            PartKind::Routines => ("routines", None),
            PartKind::View(n) => ("view", Some(n)),
            PartKind::Footer => ("footer", None),
        }
    }

    /// `000003-table-orders.sql`: the sequence number keeps name order equal
    /// to dump order; the object name is percent-encoded so that any
    /// identifier makes a plain file name.
    pub fn file_name(&self, seq: usize) -> String {
        let (kind, name) = self.label();
        match name {
            Some(n) => format!("{seq:06}-{kind}-{}.sql", encode_name(n)),
            None => format!("{seq:06}-{kind}.sql"),
        }
    }

    /// The inverse of [`PartKind::file_name`]; `None` for other files.
    pub fn parse_file_name(file: &str) -> Option<PartKind> {
        let rest = file.strip_suffix(".sql")?;
        let (seq, rest) = rest.split_once('-')?;
        if seq.len() != 6 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let named = |prefix: &str| rest.strip_prefix(prefix).and_then(decode_name);
        Some(match rest {
            "header" => PartKind::Header,
            "events" => PartKind::Events,
            "routines" => PartKind::Routines,
            "footer" => PartKind::Footer,
            _ => {
                if let Some(n) = named("table-") {
                    PartKind::Table(n)
                } else if let Some(n) = named("view-stub-") {
                    PartKind::ViewStub(n)
                } else {
                    PartKind::View(named("view-")?)
                }
            }
        })
    }
}

fn encode_name(n: &str) -> String {
    let mut out = String::new();
    for b in n.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_name(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A section marker line, without its newline, to the part it opens.
fn classify(line: &[u8]) -> Option<PartKind> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).ok()?;
    if text == "/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;" {
        return Some(PartKind::Footer);
    }
    let rest = text.strip_prefix("-- ")?;
    if rest.starts_with("Dumping events for database ") {
        return Some(PartKind::Events);
    }
    if rest.starts_with("Dumping routines for database ") {
        return Some(PartKind::Routines);
    }
    let named = [
        ("Table structure for table ", 0),
        ("Temporary table structure for view ", 1),
        ("Temporary view structure for view ", 1),
        ("Final view structure for view ", 2),
    ];
    for (prefix, kind) in named {
        if let Some(q) = rest.strip_prefix(prefix) {
            let name = unquote(q)?;
            return Some(match kind {
                0 => PartKind::Table(name),
                1 => PartKind::ViewStub(name),
                _ => PartKind::View(name),
            });
        }
    }
    None
}

/// `` `a``b` `` to ``a`b``.
fn unquote(q: &str) -> Option<String> {
    let inner = q.strip_prefix('`')?.strip_suffix('`')?;
    Some(inner.replace("``", "`"))
}

/// The longest line prefix inspected for a marker; marker lines are far
/// shorter (identifiers are at most 64 characters).
const PEEK: u64 = 1024;

struct State<R> {
    input: R,
    /// Bytes of the current part ready to hand out.
    out: Vec<u8>,
    pos: usize,
    /// A lone `--` line, held until the next line says whose it is.
    held: Option<Vec<u8>>,
    /// Inside a long line: pass bytes through until its newline.
    long_line: bool,
    /// The part the last marker opened, and the marker's bytes.
    next: Option<(PartKind, Vec<u8>)>,
    /// The current part is finished (a marker or the end was reached).
    part_done: bool,
    eof: bool,
    error: Option<std::io::Error>,
}

impl<R: BufRead> State<R> {
    /// Refills `out` with the next bytes of the current part; leaves it
    /// empty at the part's end.
    fn fill(&mut self) -> std::io::Result<()> {
        self.out.clear();
        self.pos = 0;
        while self.out.is_empty() && !self.part_done {
            if self.long_line {
                let buf = self.input.fill_buf()?;
                if buf.is_empty() {
                    self.eof = true;
                    self.part_done = true;
                    break;
                }
                let n = match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.long_line = false;
                        i + 1
                    }
                    None => buf.len(),
                };
                self.out.extend_from_slice(&buf[..n]);
                self.input.consume(n);
                continue;
            }
            let mut line = Vec::new();
            (&mut self.input).take(PEEK).read_until(b'\n', &mut line)?;
            if line.is_empty() {
                if let Some(h) = self.held.take() {
                    self.out = h;
                }
                self.eof = true;
                self.part_done = true;
                break;
            }
            if !line.ends_with(b"\n") && line.len() as u64 == PEEK {
                self.long_line = true;
                if let Some(mut h) = self.held.take() {
                    h.extend_from_slice(&line);
                    line = h;
                }
                self.out = line;
                continue;
            }
            if let Some(kind) = classify(&line) {
                let mut opening = self.held.take().unwrap_or_default();
                opening.extend_from_slice(&line);
                self.next = Some((kind, opening));
                self.part_done = true;
                break;
            }
            if line == b"--\n" {
                if let Some(h) = self.held.replace(line) {
                    self.out = h;
                }
                continue;
            }
            if let Some(mut h) = self.held.take() {
                h.extend_from_slice(&line);
                line = h;
            }
            self.out = line;
        }
        Ok(())
    }
}

/// Splits a dump into parts; see the module documentation.
pub struct Splitter<R> {
    state: Arc<Mutex<State<R>>>,
    started: bool,
}

impl<R: BufRead + Send + 'static> Splitter<R> {
    pub fn new(input: R) -> Splitter<R> {
        Splitter {
            state: Arc::new(Mutex::new(State {
                input,
                out: Vec::new(),
                pos: 0,
                held: None,
                long_line: false,
                next: None,
                part_done: false,
                eof: false,
                error: None,
            })),
            started: false,
        }
    }

    /// The next part and a reader of its bytes, which ends where the part
    /// does. Each part must be read to its end before the next is asked for.
    pub fn next_part(&mut self) -> std::io::Result<Option<(PartKind, Part<R>)>> {
        let mut st = self.state.lock().expect("splitter lock");
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        let (kind, opening) = if !self.started {
            self.started = true;
            (PartKind::Header, Vec::new())
        } else {
            if !st.part_done {
                return Err(std::io::Error::other("a dump part was not read to its end"));
            }
            match st.next.take() {
                Some(n) => n,
                None => return Ok(None),
            }
        };
        st.out = opening;
        st.pos = 0;
        st.part_done = false;
        if st.eof {
            st.part_done = true;
        }
        Ok(Some((kind, Part { state: self.state.clone() })))
    }
}

/// The bytes of one part.
pub struct Part<R> {
    state: Arc<Mutex<State<R>>>,
}

impl<R: BufRead> Read for Part<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut st = self.state.lock().expect("splitter lock");
        if st.pos >= st.out.len() {
            if st.part_done {
                return Ok(0);
            }
            if let Err(e) = st.fill() {
                // Seen again by next_part, so the failure cannot be lost.
                let again = std::io::Error::new(e.kind(), e.to_string());
                st.error = Some(e);
                st.part_done = true;
                return Err(again);
            }
            if st.out.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(st.out.len() - st.pos);
        let pos = st.pos;
        buf[..n].copy_from_slice(&st.out[pos..pos + n]);
        st.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump\n--\n-- Host: x\n\n/*!40101 SET NAMES utf8mb4 */;\n\n--\n-- Table structure for table `a``b/c`\n--\n\nCREATE TABLE `a``b/c` (x int);\n--\n-- Dumping data for table `a``b/c`\n--\nINSERT INTO `a``b/c` VALUES\n(1),\n(2);\n\n--\n-- Temporary table structure for view `v`\n--\nCREATE VIEW v AS SELECT 1;\n\n--\n-- Table structure for table `t`\n--\nINSERT INTO t VALUES ('-- Table structure for table `x`');\n\n--\n-- Dumping events for database 'db'\n--\n\n--\n-- Dumping routines for database 'db'\n--\n\n--\n-- Final view structure for view `v`\n--\nCREATE VIEW v AS SELECT * FROM t;\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n-- Dump completed\n";

    fn split_all(input: &[u8]) -> Vec<(PartKind, Vec<u8>)> {
        let mut s = Splitter::new(std::io::BufReader::with_capacity(7, std::io::Cursor::new(input.to_vec())));
        let mut parts = Vec::new();
        while let Some((kind, mut part)) = s.next_part().unwrap() {
            let mut bytes = Vec::new();
            part.read_to_end(&mut bytes).unwrap();
            parts.push((kind, bytes));
        }
        parts
    }

    #[test]
    fn splits_a_dump_into_its_sections() {
        let parts = split_all(DUMP.as_bytes());
        let kinds: Vec<PartKind> = parts.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                PartKind::Header,
                PartKind::Table("a`b/c".into()),
                PartKind::ViewStub("v".into()),
                PartKind::Table("t".into()),
                PartKind::Events,
                PartKind::Routines,
                PartKind::View("v".into()),
                PartKind::Footer,
            ]
        );
        assert!(parts[1].1.starts_with(b"--\n-- Table structure"), "the marker block opens its part");
        assert!(parts[0].1.ends_with(b"SET NAMES utf8mb4 */;\n\n"));
        let text = String::from_utf8(parts[3].1.clone()).unwrap();
        assert!(text.contains("'-- Table structure for table `x`'"), "a marker inside a row is data");
        let joined: Vec<u8> = parts.into_iter().flat_map(|(_, b)| b).collect();
        assert_eq!(joined, DUMP.as_bytes());
    }

    #[test]
    fn long_rows_stream_through() {
        let row = format!("INSERT INTO t VALUES ('{}');\n", "x".repeat(5000));
        let dump = format!("--\n-- Table structure for table `t`\n--\n{row}--\n{row}");
        let parts = split_all(dump.as_bytes());
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, b"");
        assert_eq!(parts[1].1, dump.as_bytes());
    }

    #[test]
    fn file_names_round_trip() {
        for kind in [
            PartKind::Header,
            PartKind::Table("a`b/c ü".into()),
            PartKind::ViewStub("v-1".into()),
            PartKind::View("view-stub-x".into()),
            PartKind::Events,
            PartKind::Routines,
            PartKind::Footer,
        ] {
            let f = kind.file_name(42);
            assert!(!f.contains('/'), "{f}");
            assert_eq!(PartKind::parse_file_name(&f), Some(kind), "{f}");
        }
        assert_eq!(PartKind::parse_file_name("database.json"), None);
    }

    proptest! {
        #[test]
        fn concatenated_parts_are_the_input(lines in proptest::collection::vec(
            prop_oneof![
                Just("--\n".to_string()),
                Just("-- Table structure for table `t`\n".to_string()),
                Just("-- Final view structure for view `v`\n".to_string()),
                Just("/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n".to_string()),
                "[a-z(),' -]{0,40}\n",
                "[a-z]{1000,1100}\n",
                "[a-z-]{0,20}",
            ], 0..40)) {
            let input = lines.concat();
            let joined: Vec<u8> = split_all(input.as_bytes()).into_iter().flat_map(|(_, b)| b).collect();
            prop_assert_eq!(joined, input.into_bytes());
        }
    }
}
