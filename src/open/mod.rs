//! The open sequence: [`plan`] looks at every file and checks every choice without
//! writing a byte (a refused open changes nothing), then [`apply`] carries the plan out in
//! crash-safe steps and runs recovery.
//!
//! The per-process registry of open stores is `partition::registry`; the catalog's reads
//! and writes live with the global partition (`partition::catalog`).

mod apply;
mod parallel;
mod plan;

use std::path::Path;
use std::sync::Arc;

use crate::backends::Storage;
use crate::builder::Builder;
use crate::db::Db;
use crate::error::Result;

/// Opens (or creates) the store in `dir` as `b` describes.
pub(crate) fn open(b: Builder, dir: &Path) -> Result<Db> {
    let plan = plan::plan(&b, dir)?;
    apply::apply(plan, &b)
}

pub(crate) use crate::layout::region_file as default_path;

/// The storage a builder names, or ordinary files.
pub(crate) fn storage_of(b: &Builder) -> Arc<dyn Storage> {
    b.storage
        .clone()
        .unwrap_or_else(|| Arc::new(crate::backends::FileStorage))
}
