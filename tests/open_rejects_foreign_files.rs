//! A partition file that is not the one the store expects (another store's, another
//! region's, the global file, a newer format, empty, a directory, garbage, a plain redb
//! file, missing) is refused with a clear error, and the refused open modifies no file.

mod common;

use common::files::*;
use common::rng::Rng;
use redb::ReadableTable;
use regionkv::layout::{global_file, region_file};
use regionkv::{AccountId, Db, Error, FORMAT_VERSION};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Checks the seeded store still opens and reads (nothing was damaged by the failed open).
fn assert_seed_intact(dir: &Path, (a, b): (AccountId, AccountId)) {
    let db = open_us_eu(dir);
    let r = db.read(a).unwrap();
    assert_eq!(&*r.get(&NOTES, b"k").unwrap().unwrap(), b"eu-value");
    let r = db.read(b).unwrap();
    assert_eq!(&*r.get(&NOTES, b"k").unwrap().unwrap(), b"us-value");
}

/// Collects the files that failed opens modified, so that one test reports every case
/// (and goes on to check the rest) instead of stopping at the first.
#[derive(Default)]
struct Modified(Vec<String>);

impl Modified {
    /// Opens with `open`, expects an error accepted by `check`, and records any file under
    /// `dir` that changed.
    fn expect_rejected(
        &mut self,
        dir: &Path,
        what: &str,
        open: impl FnOnce() -> Result<Db, Error>,
        check: impl FnOnce(&Error) -> bool,
    ) -> Error {
        let before = snapshot(dir);
        let err = match open() {
            Ok(_) => panic!("{what}: open succeeded, expected an error"),
            Err(e) => e,
        };
        assert!(check(&err), "{what}: unexpected error {err:?}");
        // A clear message, not an empty one.
        assert!(!err.to_string().is_empty());
        let after = snapshot(dir);
        for d in diff_files(&before, &after) {
            self.0.push(format!("{what} (error: {err}): {d}"));
        }
        err
    }

    /// Replaces the bytes of `file`, expects the default open to be refused with an error
    /// accepted by `check`, then puts the original bytes back.
    fn expect_rejected_with(
        &mut self,
        dir: &Path,
        file: &Path,
        bytes: &[u8],
        what: &str,
        check: impl FnOnce(&Error) -> bool,
    ) {
        let saved = std::fs::read(file).unwrap();
        std::fs::write(file, bytes).unwrap();
        self.expect_rejected(dir, what, || try_open_us_eu(dir), check);
        std::fs::write(file, saved).unwrap();
    }

    /// Fails if any rejected open modified a file.
    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "rejected opens modified files (they must leave every byte unchanged):\n  {}",
            self.0.join("\n  ")
        );
    }
}

fn copy(from: &Path, to: &Path) {
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::copy(from, to).unwrap();
}

fn region_file_of_another_store_is_rejected(m: &mut Modified) {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let seeded = seed_store(a.path());
    seed_store(b.path());
    let a_eu = region_file(a.path(), "eu");
    let saved = std::fs::read(&a_eu).unwrap();
    copy(&region_file(b.path(), "eu"), &a_eu);

    let err = m.expect_rejected(
        a.path(),
        "eu.redb of another store",
        || try_open_us_eu(a.path()),
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    if let Error::PartitionMismatch { path, .. } = &err {
        assert_eq!(path, &a_eu);
    }
    // The same through an explicit path.
    m.expect_rejected(
        a.path(),
        "another store's eu.redb via region_at",
        || {
            Db::builder()
                .region("us")
                .region_at("eu", region_file(b.path(), "eu"))
                .open(a.path())
        },
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    std::fs::write(&a_eu, saved).unwrap();
    assert_seed_intact(a.path(), seeded);
}

fn region_file_of_another_store_rejected_for_a_region_new_to_the_catalog(m: &mut Modified) {
    // Store A only has `us`; a file of store B sits where A's new region `eu` would go.
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    {
        let db = Db::builder().region("us").open(a.path()).unwrap();
        db.close().unwrap();
    }
    seed_store(b.path());
    copy(&region_file(b.path(), "eu"), &region_file(a.path(), "eu"));
    m.expect_rejected(
        a.path(),
        "another store's eu.redb for a region A never had",
        || Db::builder().region("us").region("eu").open(a.path()),
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    // The failed open must not have left `eu` in A's catalog.
    let db = Db::builder()
        .region("us")
        .open(a.path())
        .expect("store A opens with its original configuration after the failed open");
    assert!(db.region_id("eu").is_err());
}

fn region_file_under_the_wrong_name_is_rejected(m: &mut Modified) {
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let us = region_file(dir.path(), "us");
    let eu = region_file(dir.path(), "eu");

    // eu.redb given as us (and us.redb as eu) through explicit paths.
    m.expect_rejected(
        dir.path(),
        "swapped region_at paths",
        || {
            Db::builder()
                .region_at("us", &eu)
                .region_at("eu", &us)
                .open(dir.path())
        },
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    // eu.redb given as us, eu at its own place: the same file can't be us.
    m.expect_rejected(
        dir.path(),
        "eu.redb given as us",
        || {
            Db::builder()
                .region_at("us", &eu)
                .region("eu")
                .open(dir.path())
        },
        |e| matches!(e, Error::PartitionMismatch { .. } | Error::Config(_)),
    );

    // The files swapped on disk.
    let tmp = dir.path().join("regions").join("swap.tmp");
    std::fs::rename(&eu, &tmp).unwrap();
    std::fs::rename(&us, &eu).unwrap();
    std::fs::rename(&tmp, &us).unwrap();
    let err = m.expect_rejected(
        dir.path(),
        "files renamed into each other's place",
        || try_open_us_eu(dir.path()),
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    let msg = err.to_string();
    assert!(
        msg.contains("us") && msg.contains("eu"),
        "message names both regions: {msg}"
    );
    // Swap back: the store is fine.
    std::fs::rename(&eu, &tmp).unwrap();
    std::fs::rename(&us, &eu).unwrap();
    std::fs::rename(&tmp, &us).unwrap();
    assert_seed_intact(dir.path(), seeded);
}

fn global_file_given_as_a_region_is_rejected(m: &mut Modified) {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let seeded = seed_store(a.path());
    seed_store(b.path());

    // Another store's global.redb given as region us.
    let fake = a.path().join("other").join("global-copy.redb");
    copy(&global_file(b.path()), &fake);
    m.expect_rejected(
        a.path(),
        "another store's global.redb as region us",
        || {
            Db::builder()
                .region_at("us", &fake)
                .region("eu")
                .open(a.path())
        },
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    // A copy of this store's own global.redb given as region us.
    let own = a.path().join("other").join("own-global-copy.redb");
    copy(&global_file(a.path()), &own);
    m.expect_rejected(
        a.path(),
        "a copy of this store's global.redb as region us",
        || {
            Db::builder()
                .region_at("us", &own)
                .region("eu")
                .open(a.path())
        },
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    // The very same global file given as a region: refused too (kind or already open).
    m.expect_rejected(
        a.path(),
        "the store's own global.redb as region us",
        || {
            Db::builder()
                .region_at("us", global_file(a.path()))
                .region("eu")
                .open(a.path())
        },
        |e| matches!(e, Error::PartitionMismatch { .. } | Error::Config(_)),
    );
    // A region file given as the global partition (a store whose global.redb is a region).
    let c = tempfile::tempdir().unwrap();
    copy(&region_file(a.path(), "us"), &global_file(c.path()));
    m.expect_rejected(
        c.path(),
        "a region file as global.redb",
        || Db::builder().region("us").open(c.path()),
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    assert_seed_intact(a.path(), seeded);
}

fn region_in_catalog_but_not_configured_is_a_config_error_unless_disabled(m: &mut Modified) {
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let err = m.expect_rejected(
        dir.path(),
        "eu omitted",
        || Db::builder().region("us").open(dir.path()),
        |e| matches!(e, Error::Config(_)),
    );
    assert!(err.to_string().contains("eu"), "names the region: {err}");
    // Disabling an unknown region is an error too, and changes nothing.
    m.expect_rejected(
        dir.path(),
        "disable unknown region",
        || {
            Db::builder()
                .region("us")
                .region("eu")
                .disable_region("mars")
                .open(dir.path())
        },
        |e| matches!(e, Error::RegionUnknown(_) | Error::Config(_)),
    );
    // Listing a region twice.
    m.expect_rejected(
        dir.path(),
        "region listed twice",
        || {
            Db::builder()
                .region("us")
                .region("eu")
                .region("eu")
                .open(dir.path())
        },
        |e| matches!(e, Error::Config(_)),
    );
    // Explicitly disabled: opens.
    let db = open_us_eu_off(dir.path());
    assert!(
        !common::region_enabled(&db, "eu"),
        "eu is listed as disabled"
    );
    db.close().unwrap();
    assert_seed_intact(dir.path(), seeded);
}

/// Overwrites the `format_version` meta key of a partition file, using redb directly.
fn set_format_version(path: &Path, version: u32) {
    let db = redb::Database::open(path).unwrap();
    let w = db.begin_write().unwrap();
    {
        let mut meta = w
            .open_table(redb::TableDefinition::<&str, &[u8]>::new("_meta"))
            .unwrap();
        assert!(
            meta.get("format_version").unwrap().is_some(),
            "partition meta has a format_version key"
        );
        meta.insert("format_version", version.to_le_bytes().as_slice())
            .unwrap();
    }
    w.commit().unwrap();
}

fn newer_format_version_is_rejected(m: &mut Modified) {
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let eu = region_file(dir.path(), "eu");
    let saved = std::fs::read(&eu).unwrap();
    set_format_version(&eu, FORMAT_VERSION + 1);
    let err = m.expect_rejected(
        dir.path(),
        "region of a newer format",
        || try_open_us_eu(dir.path()),
        |e| matches!(e, Error::FormatVersion { .. }),
    );
    match err {
        Error::FormatVersion {
            path,
            found,
            supported,
        } => {
            assert_eq!(path, eu);
            assert_eq!(found, FORMAT_VERSION + 1);
            assert_eq!(supported, FORMAT_VERSION);
        }
        e => panic!("{e:?}"),
    }
    std::fs::write(&eu, saved).unwrap();

    // The global partition of a newer format.
    let g = global_file(dir.path());
    let saved = std::fs::read(&g).unwrap();
    set_format_version(&g, FORMAT_VERSION + 1);
    m.expect_rejected(
        dir.path(),
        "global of a newer format",
        || try_open_us_eu(dir.path()),
        |e| matches!(e, Error::FormatVersion { found, .. } if *found == FORMAT_VERSION + 1),
    );
    std::fs::write(&g, saved).unwrap();
    assert_seed_intact(dir.path(), seeded);
}

fn empty_file_where_a_region_file_should_be_is_rejected(m: &mut Modified) {
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let eu = region_file(dir.path(), "eu");
    m.expect_rejected_with(dir.path(), &eu, b"", "empty eu.redb", |e| {
        matches!(e, Error::PartitionMismatch { .. })
    });

    // An empty global.redb.
    let g = global_file(dir.path());
    m.expect_rejected_with(dir.path(), &g, b"", "empty global.redb", |e| {
        matches!(e, Error::PartitionMismatch { .. })
    });
    assert_seed_intact(dir.path(), seeded);
}

fn directory_where_a_file_should_be_is_rejected(m: &mut Modified) {
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let eu = region_file(dir.path(), "eu");
    let saved = std::fs::read(&eu).unwrap();
    std::fs::remove_file(&eu).unwrap();
    std::fs::create_dir(&eu).unwrap();
    std::fs::write(eu.join("inside"), b"x").unwrap();
    let err = m.expect_rejected(
        dir.path(),
        "directory at eu.redb",
        || try_open_us_eu(dir.path()),
        |e| {
            matches!(
                e,
                Error::PartitionMismatch { .. } | Error::Io { .. } | Error::Config(_)
            )
        },
    );
    assert!(
        err.to_string().contains("eu.redb"),
        "the error names the path: {err}"
    );
    std::fs::remove_dir_all(&eu).unwrap();
    std::fs::write(&eu, saved).unwrap();

    // A directory at global.redb of a new store: refused, nothing created.
    let fresh = tempfile::tempdir().unwrap();
    std::fs::create_dir(global_file(fresh.path())).unwrap();
    m.expect_rejected(
        fresh.path(),
        "directory at global.redb",
        || Db::builder().region("us").open(fresh.path()),
        |e| {
            matches!(
                e,
                Error::PartitionMismatch { .. } | Error::Io { .. } | Error::Config(_)
            )
        },
    );
    assert_seed_intact(dir.path(), seeded);
}

/// Deterministic pseudo-random bytes.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    Rng(seed).bytes(len)
}

fn garbage_bytes_are_rejected(m: &mut Modified) {
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let eu = region_file(dir.path(), "eu");
    let full = std::fs::metadata(&eu).unwrap().len() as usize;
    let mismatch = |e: &Error| matches!(e, Error::PartitionMismatch { .. });
    for (i, len) in [1usize, 7, 512, 4096, 65_536, full].into_iter().enumerate() {
        let bytes = garbage(len, 0x9E37_79B9 + i as u64);
        let what = format!("{len} garbage bytes at eu.redb");
        m.expect_rejected_with(dir.path(), &eu, &bytes, &what, mismatch);
    }
    // Text that is not a database.
    let text = b"this is not a redb file\n".repeat(100);
    m.expect_rejected_with(dir.path(), &eu, &text, "text at eu.redb", mismatch);

    let g = global_file(dir.path());
    let len = std::fs::metadata(&g).unwrap().len() as usize;
    m.expect_rejected_with(
        dir.path(),
        &g,
        &garbage(len, 42),
        "garbage global.redb",
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    assert_seed_intact(dir.path(), seeded);
}

fn a_plain_redb_file_without_meta_is_rejected(m: &mut Modified) {
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let eu = region_file(dir.path(), "eu");
    let saved = std::fs::read(&eu).unwrap();
    std::fs::write(&eu, plain_redb_file()).unwrap();
    m.expect_rejected(
        dir.path(),
        "plain redb file at eu.redb",
        || try_open_us_eu(dir.path()),
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    std::fs::write(&eu, saved).unwrap();
    assert_seed_intact(dir.path(), seeded);
}

fn missing_region_file_is_a_config_error(m: &mut Modified) {
    let dir = tempfile::tempdir().unwrap();
    seed_store(dir.path());
    let eu = region_file(dir.path(), "eu");
    std::fs::rename(&eu, dir.path().join("eu.moved")).unwrap();
    m.expect_rejected(
        dir.path(),
        "eu.redb missing",
        || try_open_us_eu(dir.path()),
        |e| matches!(e, Error::Config(_)),
    );
    // It is found again through region_at.
    let db = Db::builder()
        .region("us")
        .region_at("eu", dir.path().join("eu.moved"))
        .open(dir.path())
        .unwrap();
    let a = db.account_id("eu-tenant").unwrap().unwrap();
    assert_eq!(
        &*db.read(a).unwrap().get(&NOTES, b"k").unwrap().unwrap(),
        b"eu-value"
    );
}

fn region_file_without_its_global_is_never_adopted(m: &mut Modified) {
    let dir = tempfile::tempdir().unwrap();
    seed_store(dir.path());
    std::fs::remove_file(global_file(dir.path())).unwrap();
    m.expect_rejected(
        dir.path(),
        "region files without global.redb",
        || try_open_us_eu(dir.path()),
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
}

// ======================================================================================
// The table: each case sets up a store (or two), makes through `m` every open it expects
// to be refused (each checks the error kind, a non-empty message, and records any file
// the refused open changed), and checks what the store still holds afterwards. The loop
// runs every case, fails if any rejected open of a case modified a file, and reports
// every case that failed by name.
// ======================================================================================

/// A case body: sets up its store, makes its refused opens through the collector.
type Case = fn(&mut Modified);

/// (case name, case body).
const CASES: &[(&str, Case)] = &[
    (
        "region_file_of_another_store_is_rejected",
        region_file_of_another_store_is_rejected,
    ),
    (
        "region_file_of_another_store_rejected_for_a_region_new_to_the_catalog",
        region_file_of_another_store_rejected_for_a_region_new_to_the_catalog,
    ),
    (
        "region_file_under_the_wrong_name_is_rejected",
        region_file_under_the_wrong_name_is_rejected,
    ),
    (
        "global_file_given_as_a_region_is_rejected",
        global_file_given_as_a_region_is_rejected,
    ),
    (
        "region_in_catalog_but_not_configured_is_a_config_error_unless_disabled",
        region_in_catalog_but_not_configured_is_a_config_error_unless_disabled,
    ),
    (
        "newer_format_version_is_rejected",
        newer_format_version_is_rejected,
    ),
    (
        "empty_file_where_a_region_file_should_be_is_rejected",
        empty_file_where_a_region_file_should_be_is_rejected,
    ),
    (
        "directory_where_a_file_should_be_is_rejected",
        directory_where_a_file_should_be_is_rejected,
    ),
    ("garbage_bytes_are_rejected", garbage_bytes_are_rejected),
    (
        "a_plain_redb_file_without_meta_is_rejected",
        a_plain_redb_file_without_meta_is_rejected,
    ),
    (
        "missing_region_file_is_a_config_error",
        missing_region_file_is_a_config_error,
    ),
    (
        "region_file_without_its_global_is_never_adopted",
        region_file_without_its_global_is_never_adopted,
    ),
];

#[test]
fn foreign_files_are_refused_and_the_refused_open_changes_nothing() {
    let mut failed = Vec::new();
    for (name, case) in CASES {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut m = Modified::default();
            case(&mut m);
            m.assert_none();
        }));
        if let Err(p) = r {
            let msg = common::panic_message(&*p);
            failed.push(format!("{name}: {msg}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        CASES.len(),
        failed.join("\n")
    );
}
