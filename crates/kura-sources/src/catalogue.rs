//! What a database dump held, counted as it streamed past: rows per table
//! and schema objects per kind. It is stored in the snapshot beside the
//! dump (format.md §11.4), so a restore drill can tell a restore that lost
//! rows or objects from a good one without trusting the restore's own word,
//! and the counts come from the very snapshot the dump read: no second
//! pass over the tables, no second transaction that could see other rows.
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    pub version: u32,
    /// Rows per table: `schema.table` for PostgreSQL, the table's name for
    /// MySQL and SQLite, unquoted.
    pub rows: BTreeMap<String, u64>,
    /// Schema objects per kind, lower case: `table`, `view`, `function`,
    /// `trigger`, … (the kinds differ per database).
    pub objects: BTreeMap<String, u64>,
    /// False when a dump could not be followed to its end (an archive
    /// version this kura does not know): its counts are then left out, and
    /// a drill does not compare what it cannot trust.
    pub complete: bool,
}

impl Catalogue {
    pub fn new() -> Catalogue {
        Catalogue { version: VERSION, complete: true, ..Default::default() }
    }

    /// Adds another stream's counts (a table dumped in a part of its own).
    pub fn merge(&mut self, other: &Catalogue) {
        for (t, n) in &other.rows {
            *self.rows.entry(t.clone()).or_default() += n;
        }
        for (k, n) in &other.objects {
            *self.objects.entry(k.clone()).or_default() += n;
        }
        self.complete &= other.complete;
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a catalogue serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Catalogue, crate::SourceError> {
        let c: Catalogue = serde_json::from_slice(bytes)
            .map_err(|e| crate::SourceError::Refused(format!("the snapshot's catalogue: {e}")))?;
        if c.version != VERSION {
            return Err(crate::SourceError::Refused(format!(
                "the snapshot's catalogue has version {}, this kura reads {VERSION}",
                c.version
            )));
        }
        Ok(c)
    }
}

/// The catalogue of one database whose dump comes in several streams at
/// once (`jobs`): each stream's counter adds to it when it ends or is
/// dropped, and the catalogue's own stream, which comes after them all,
/// waits for the last.
#[derive(Clone, Default)]
pub(crate) struct Gathered(Arc<(Mutex<(Catalogue, usize)>, Condvar)>);

impl Gathered {
    pub(crate) fn new() -> Gathered {
        Gathered::with(Catalogue::new())
    }

    /// Starting from what is known before the streams (objects read from
    /// the server's catalog).
    pub(crate) fn with(c: Catalogue) -> Gathered {
        Gathered(Arc::new((Mutex::new((c, 0)), Condvar::new())))
    }

    /// One more stream to wait for.
    pub(crate) fn expect(&self) {
        self.0 .0.lock().expect("catalogue lock").1 += 1;
    }

    pub(crate) fn add(&self, c: &Catalogue) {
        let mut g = self.0 .0.lock().expect("catalogue lock");
        g.0.merge(c);
        g.1 -= 1;
        self.0 .1.notify_all();
    }

    /// A reader that yields the catalogue once every expected stream has
    /// been added.
    pub(crate) fn reader(&self) -> Box<dyn std::io::Read + Send> {
        Box::new(Waiting { gathered: self.clone(), bytes: None })
    }
}

struct Waiting {
    gathered: Gathered,
    bytes: Option<std::io::Cursor<Vec<u8>>>,
}

impl std::io::Read for Waiting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.bytes.is_none() {
            let (lock, cv) = &*self.gathered.0;
            let g = cv.wait_while(lock.lock().expect("catalogue lock"), |g| g.1 > 0).expect("catalogue lock");
            self.bytes = Some(std::io::Cursor::new(g.0.to_json()));
        }
        self.bytes.as_mut().expect("set above").read(buf)
    }
}

/// Something that counts a dump's bytes as they pass.
pub(crate) trait Tally: Send {
    fn feed(&mut self, data: &[u8]);
    /// What was counted; `whole` says the stream was read to its end.
    fn finish(self: Box<Self>, whole: bool) -> Catalogue;
}

/// A dump's output, counted as it is read; the counts go to `gathered` at
/// its end, or when it is dropped (incomplete then).
pub(crate) struct Tallied<R> {
    inner: R,
    tally: Option<Box<dyn Tally>>,
    gathered: Gathered,
}

impl<R> Tallied<R> {
    pub(crate) fn new(inner: R, tally: Box<dyn Tally>, gathered: Gathered) -> Tallied<R> {
        gathered.expect();
        Tallied { inner, tally: Some(tally), gathered }
    }
}

impl<R: std::io::Read> std::io::Read for Tallied<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if let Some(t) = self.tally.take() {
                self.gathered.add(&t.finish(true));
            }
        } else if let Some(t) = &mut self.tally {
            t.feed(&buf[..n]);
        }
        Ok(n)
    }
}

impl<R> Drop for Tallied<R> {
    fn drop(&mut self) {
        if let Some(t) = self.tally.take() {
            self.gathered.add(&t.finish(false));
        }
    }
}
