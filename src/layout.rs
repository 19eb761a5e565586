//! Where a store's files live inside its folder, for backups, operators' tools and tests.
//!
//! ```
//! use std::path::Path;
//! let dir = Path::new("/srv/store");
//! assert_eq!(regionkv::layout::global_file(dir), Path::new("/srv/store/global.redb"));
//! assert_eq!(regionkv::layout::region_file(dir, "eu"), Path::new("/srv/store/regions/eu.redb"));
//! assert_eq!(
//!     regionkv::layout::creating_file(Path::new("/srv/store/regions/eu.redb")),
//!     Path::new("/srv/store/regions/eu.redb.creating"),
//! );
//! ```
//!
//! A region opened with [`Builder::region_at`](crate::Builder::region_at) lives at the path
//! given there instead.

use std::path::{Path, PathBuf};

/// The global partition's file: `<dir>/global.redb`.
pub fn global_file(dir: &Path) -> PathBuf {
    dir.join("global.redb")
}

/// The default file of region `name`: `<dir>/regions/<name>.redb`.
pub fn region_file(dir: &Path, name: &str) -> PathBuf {
    dir.join("regions").join(format!("{name}.redb"))
}

/// The temporary name a partition file is built under before it is renamed into place:
/// `<path>.creating`. Open refuses to touch such a file unless it is its own leftover.
pub fn creating_file(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".creating");
    PathBuf::from(tmp)
}
