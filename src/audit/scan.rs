//! What every phase of the audit shares: the [`Auditor`] that collects findings, and
//! [`Auditor::scan`], the one loop over the rows of a table.

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, TableDefinition, TableHandle};

use super::{AuditReport, Finding, FindingKind};
use crate::error::Result;
use crate::partition::{At, Partition};

/// What the check of one row concluded about its encoding.
pub(super) enum Row {
    /// The row decoded; whatever else was wrong with it the check reported itself.
    Read,
    /// The key or the value cannot be decoded: an `Undecodable` finding naming this raw key
    /// (as [`Finding::key`] shows it) with this detail.
    Undecodable(Vec<u8>, String),
}

impl Row {
    /// The row at `key` cannot be decoded, because of `detail`.
    pub(super) fn undecodable(key: &[u8], detail: impl Into<String>) -> Row {
        Row::Undecodable(key.to_vec(), detail.into())
    }
}

/// Collects the findings, notes and counters of one audit.
#[derive(Default)]
pub(super) struct Auditor {
    /// The report being built.
    pub(super) report: AuditReport,
}

impl Auditor {
    /// Records a finding of `kind` about a row (or a table, or a partition).
    pub(super) fn find(
        &mut self,
        kind: FindingKind,
        partition: &str,
        table: Option<&str>,
        key: Option<&[u8]>,
        detail: impl Into<String>,
    ) {
        self.report.findings.push(Finding {
            kind,
            partition: partition.to_owned(),
            table: table.map(str::to_owned),
            key: key.map(<[u8]>::to_vec),
            detail: detail.into(),
        });
    }

    /// Records a note: something the audit could not check, not a finding.
    pub(super) fn note(&mut self, note: String) {
        self.report.notes.push(note);
    }

    /// Opens a table of a snapshot: `None` if it does not exist; a table of the wrong type
    /// is an `Undecodable` finding (and reads as absent), so the audit goes on without it.
    pub(super) fn open<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        part: &Partition,
        txn: &ReadTransaction,
        def: TableDefinition<'_, K, V>,
    ) -> Result<Option<ReadOnlyTable<K, V>>> {
        match crate::partition::table_if_exists(txn, def) {
            Ok(t) => Ok(t),
            Err(redb::TableError::Storage(e)) => Err(part.err(e)),
            Err(e) => {
                self.find(
                    FindingKind::Undecodable,
                    &part.name,
                    Some(def.name()),
                    None,
                    format!("table cannot be opened: {e}"),
                );
                Ok(None)
            }
        }
    }

    /// Hands every row of `table` (named `name`, in `part`) to `check`, in key order, and
    /// turns each row `check` cannot decode into an `Undecodable` finding before going on
    /// with the next row: one damaged row never hides the others. Only storage errors stop
    /// the scan.
    pub(super) fn scan<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        part: &Partition,
        name: &str,
        table: &ReadOnlyTable<K, V>,
        mut check: impl for<'a> FnMut(&mut Auditor, K::SelfType<'a>, V::SelfType<'a>) -> Result<Row>,
    ) -> Result<()> {
        for row in table.iter().at(part)? {
            let (k, v) = row.at(part)?;
            if let Row::Undecodable(key, detail) = check(self, k.value(), v.value())? {
                self.find(
                    FindingKind::Undecodable,
                    &part.name,
                    Some(name),
                    Some(&key),
                    detail,
                );
            }
        }
        Ok(())
    }

    /// [`open`](Self::open)s the table `def` of a snapshot and [`scan`](Self::scan)s it; a
    /// table that does not exist has no rows.
    pub(super) fn scan_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        part: &Partition,
        txn: &ReadTransaction,
        def: TableDefinition<'_, K, V>,
        check: impl for<'a> FnMut(&mut Auditor, K::SelfType<'a>, V::SelfType<'a>) -> Result<Row>,
    ) -> Result<()> {
        match self.open(part, txn, def)? {
            Some(t) => self.scan(part, def.name(), &t, check),
            None => Ok(()),
        }
    }
}
