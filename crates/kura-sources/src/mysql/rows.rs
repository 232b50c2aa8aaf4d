//! Counting the rows of a table's part of a dump as it streams: the rows
//! are the tuples of its `INSERT INTO … VALUES (…),(…);` statements, one
//! per parenthesis opened at the top level outside a string. Everything
//! else in the part (its CREATE TABLE, comments, triggers) is passed over:
//! only a line that starts with `INSERT INTO ` opens a statement to count.
use crate::catalogue::{Catalogue, Tally};

const INSERT: &[u8] = b"INSERT INTO ";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// At the start of a line: collecting its first bytes.
    LineStart,
    /// In a line that is not an INSERT: until its newline.
    Skip,
    /// In an INSERT, before its tuples: the table's name and column list.
    Head,
    /// In a backquoted name of the head.
    Name,
    /// Among the tuples.
    Tuples,
    /// In a string among the tuples; `escaped` after a backslash.
    Str { escaped: bool },
}

pub(super) struct InsertCounter {
    table: String,
    mode: Mode,
    prefix: Vec<u8>,
    /// The head's last bytes, to see `VALUES` go by.
    recent: [u8; 6],
    depth: u32,
    rows: u64,
}

impl InsertCounter {
    pub(super) fn new(table: &str) -> InsertCounter {
        InsertCounter {
            table: table.to_string(),
            mode: Mode::LineStart,
            prefix: Vec::new(),
            recent: [0; 6],
            depth: 0,
            rows: 0,
        }
    }

    fn step(&mut self, b: u8) {
        self.mode = match self.mode {
            Mode::LineStart => {
                self.prefix.push(b);
                if b == b'\n' {
                    self.prefix.clear();
                    Mode::LineStart
                } else if !INSERT.starts_with(&self.prefix) {
                    self.prefix.clear();
                    Mode::Skip
                } else if self.prefix.len() == INSERT.len() {
                    self.prefix.clear();
                    self.recent = [0; 6];
                    Mode::Head
                } else {
                    Mode::LineStart
                }
            }
            Mode::Skip if b == b'\n' => Mode::LineStart,
            Mode::Skip => Mode::Skip,
            Mode::Name if b == b'`' => Mode::Head,
            Mode::Name => Mode::Name,
            Mode::Head if b == b'`' => Mode::Name,
            Mode::Head => {
                self.recent.rotate_left(1);
                self.recent[5] = b;
                if self.recent.eq_ignore_ascii_case(b"VALUES") {
                    self.depth = 0;
                    Mode::Tuples
                } else {
                    Mode::Head
                }
            }
            Mode::Tuples => match b {
                b'(' => {
                    self.depth += 1;
                    if self.depth == 1 {
                        self.rows += 1;
                    }
                    Mode::Tuples
                }
                b')' => {
                    self.depth = self.depth.saturating_sub(1);
                    Mode::Tuples
                }
                b'\'' => Mode::Str { escaped: false },
                b';' if self.depth == 0 => Mode::Skip,
                _ => Mode::Tuples,
            },
            // A doubled quote ends the string and opens another: the same
            // count either way.
            Mode::Str { escaped: true } => Mode::Str { escaped: false },
            Mode::Str { escaped: false } => match b {
                b'\\' => Mode::Str { escaped: true },
                b'\'' => Mode::Tuples,
                _ => Mode::Str { escaped: false },
            },
        };
    }
}

impl Tally for InsertCounter {
    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            // Most bytes are inside strings or plain values: the common
            // case costs one comparison.
            if let Mode::Str { escaped: false } = self.mode {
                if b != b'\\' && b != b'\'' {
                    continue;
                }
            }
            self.step(b);
        }
    }

    fn finish(self: Box<Self>, whole: bool) -> Catalogue {
        let mut c = Catalogue::new();
        c.complete = whole;
        if whole {
            c.rows.insert(self.table.clone(), self.rows);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(part: &str, step: usize) -> u64 {
        let mut c = Box::new(InsertCounter::new("t"));
        for piece in part.as_bytes().chunks(step) {
            c.feed(piece);
        }
        c.finish(true).rows["t"]
    }

    #[test]
    fn tuples_are_counted_not_parentheses_in_strings_or_definitions() {
        let part = "--\n-- Table structure for table `t(x)`\n--\n\
            CREATE TABLE `t(x)` (\n  `id` int(11) NOT NULL,\n  `note` text DEFAULT ('(a)'),\n  PRIMARY KEY (`id`)\n);\n\
            /*!40000 ALTER TABLE `t(x)` DISABLE KEYS */;\n\
            INSERT INTO `t(x)` VALUES (1,'(('),(2,'it\\'s (not) here'),(3,'a''b(');\n\
            INSERT INTO `t(x)` VALUES\n(4,NULL),\n(5,0x28);\n\
            INSERT INTO `t(x)` (`id`, `note`) VALUES (6,'x;y');\n\
            /*!50003 CREATE*/ /*!50003 TRIGGER `tr` AFTER INSERT ON `t(x)` FOR EACH ROW INSERT INTO a VALUES (1) */;;\n";
        for step in [1, 2, 5, 17, part.len()] {
            assert_eq!(count(part, step), 6, "step {step}");
        }
    }

    #[test]
    fn a_part_cut_short_claims_no_rows() {
        let mut c = Box::new(InsertCounter::new("t"));
        c.feed(b"INSERT INTO `t` VALUES (1),(2");
        let cat = c.finish(false);
        assert!(!cat.complete && cat.rows.is_empty());
    }
}
