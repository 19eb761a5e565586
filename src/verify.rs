//! `Db::verify`: every page of every open partition checked on demand, while the store runs;
//! and which partitions the open checked.

use crate::db::Db;
use crate::error::{Error, Result};
use crate::partition::{FileCheck, Partition};

/// What [`Db::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The partitions checked, in order (`global`, then the open regions by id), with the
    /// size of each file in bytes.
    pub checked: Vec<(String, u64)>,
    /// The damaged ones, with what is wrong. Each is marked damaged in this process: its
    /// reads and writes return [`Error::Corrupt`] until the store is reopened (restore the
    /// file, or disable the region).
    pub damaged: Vec<Damage>,
    /// Disabled regions: their files are not open, and were not checked.
    pub skipped: Vec<String>,
}

/// A damaged partition, from [`VerifyReport::damaged`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// `global` or the region's name.
    pub partition: String,
    /// What is wrong: a page that fails its checksum, a file that no longer reads as a redb
    /// file, or what made redb panic earlier.
    pub what: String,
}

impl VerifyReport {
    /// Whether every partition checked is intact.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
    }

    /// The bytes checked, over all partitions.
    pub fn bytes(&self) -> u64 {
        self.checked.iter().map(|(_, b)| b).sum()
    }

    /// `Ok` if clean, else [`Error::Corrupt`] naming the first damaged partition.
    ///
    /// # Errors
    /// [`Error::Corrupt`].
    pub fn check(&self) -> Result<()> {
        match self.damaged.first() {
            None => Ok(()),
            Some(d) => Err(Error::corrupt(&d.partition, d.what.clone())),
        }
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} partitions checked ({} bytes)",
            self.checked.len(),
            self.bytes()
        )?;
        if !self.skipped.is_empty() {
            write!(f, ", {} disabled ones not", self.skipped.len())?;
        }
        if self.damaged.is_empty() {
            return write!(f, ": intact");
        }
        for d in &self.damaged {
            write!(f, "; `{}` is damaged: {}", d.partition, d.what)?;
        }
        Ok(())
    }
}

/// Progress of [`Db::verify_with`], after each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProgress {
    /// The partition just checked.
    pub partition: String,
    /// Whether it is damaged.
    pub damaged: bool,
    /// Partitions checked so far, this one included.
    pub done: usize,
    /// Partitions to check in all.
    pub total: usize,
    /// Bytes checked so far.
    pub bytes_done: u64,
    /// Bytes to check in all (the files' sizes when the check began).
    pub bytes_total: u64,
}

impl Db {
    /// Checks every page checksum of every open partition file (the global file and each
    /// enabled region) and reports which are damaged.
    ///
    /// With the default `Builder::verify_on_open(false)`, an open checks every page only of
    /// a file redb finds not closed cleanly; a page damaged after a clean close (bit rot,
    /// a bad copy, another program) is found when it is met, and this finds it before.
    /// Run it after restoring files, on a schedule, or when an operation returned
    /// [`Error::Corrupt`].
    ///
    /// Each file is read as it is on disk, through a copy-on-write view, while the store
    /// runs: reads go on; writes to the partition being checked wait for it (about as long
    /// as reading the file). A damaged partition is marked so: from then on its reads and
    /// writes return [`Error::Corrupt`], and the other partitions keep working.
    ///
    /// ```
    /// # use regionkv::Db;
    /// # let dir = tempfile::tempdir()?;
    /// let db = Db::builder().region("us").region("eu").open(dir.path())?;
    /// let report = db.verify()?;
    /// assert!(report.is_clean(), "{report}");
    /// assert_eq!(report.checked.len(), 3); // global, us, eu
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`]; [`Error::Io`] if a file cannot be read. Damage is a finding in
    /// the report ([`VerifyReport::check`] turns it into [`Error::Corrupt`]), not an error.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with(|_| {})
    }

    /// [`Db::verify`], calling `progress` after each partition.
    ///
    /// # Errors
    /// Those of [`Db::verify`].
    pub fn verify_with(&self, mut progress: impl FnMut(&VerifyProgress)) -> Result<VerifyReport> {
        let inner = &*self.inner;
        inner.check_open()?;
        let open = inner.open_regions();
        let skipped: Vec<String> = self
            .regions()
            .into_iter()
            .filter(|r| !r.enabled)
            .map(|r| r.name)
            .collect();
        let parts: Vec<&Partition> = std::iter::once(&inner.global)
            .chain(open.iter().map(|r| &r.part))
            .collect();
        let bytes_total = parts.iter().map(|p| p.file_len()).sum();
        let mut report = VerifyReport {
            skipped,
            ..VerifyReport::default()
        };
        let mut bytes_done = 0;
        for (i, part) in parts.iter().enumerate() {
            let (bytes, damage) = match part.verify_file()? {
                FileCheck::Intact { bytes } => (bytes, None),
                FileCheck::Damaged { bytes, what } => (bytes, Some(what)),
            };
            bytes_done += bytes;
            report.checked.push((part.name.clone(), bytes));
            let damaged = damage.is_some();
            if let Some(what) = damage {
                report.damaged.push(Damage {
                    partition: part.name.clone(),
                    what,
                });
            }
            progress(&VerifyProgress {
                partition: part.name.clone(),
                damaged,
                done: i + 1,
                total: parts.len(),
                bytes_done,
                bytes_total,
            });
        }
        Ok(report)
    }

    /// The partitions whose every page was checked when this store opened: all of them
    /// with `Builder::verify_on_open(true)`; otherwise those redb found not closed cleanly
    /// (after a crash or a power loss redb checks such a file to recover it). `global` and
    /// region names.
    pub fn verified_at_open(&self) -> Vec<String> {
        self.inner.verified_at_open.clone()
    }
}
