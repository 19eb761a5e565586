//! Opening, reopening, the region catalog, wrong-partition files and
//! disabled regions, through the public API only.

mod common_foundation;

use std::path::Path;

use common_foundation::*;
use redb::ReadableTable;
use regionkv::{AccountId, Db, Error, FORMAT_VERSION, NewAccount, Table};

#[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct License {
    key: String,
    seats: u32,
    tags: Vec<String>,
    expires: Option<u64>,
}

const LICENSES: Table<License> = Table::new("licenses");

fn license(i: u32) -> License {
    License {
        key: format!("K-{i:04}"),
        seats: i * 3 + 1,
        tags: (0..i % 4).map(|t| format!("tag{t}")).collect(),
        expires: i.is_multiple_of(2).then_some(1_700_000_000 + i as u64),
    }
}

fn assert_license(rec: &ArchivedLicense, want: &License) {
    assert_eq!(rec.key.as_str(), want.key);
    assert_eq!(rec.seats.to_native(), want.seats);
    let tags: Vec<&str> = rec.tags.iter().map(|t| t.as_str()).collect();
    assert_eq!(tags, want.tags);
    assert_eq!(rec.expires.as_ref().map(|e| e.to_native()), want.expires);
}

// ---------------------------------------------------------------------------------------
// 1. Reopen round trip
// ---------------------------------------------------------------------------------------

#[test]
fn reopen_round_trip_typed_and_raw_records() {
    let dir = tempfile::tempdir().unwrap();
    let (acme, bob) = {
        let db = open_us_eu(dir.path());
        let acme = db
            .create_account(NewAccount::new("acme", "eu").allow("us"))
            .unwrap();
        let bob = db.create_account(NewAccount::new("bob", "us")).unwrap();

        let mut w = db.write(acme).unwrap();
        for i in 0..20 {
            w.insert(&LICENSES, format!("lic-{i}").as_bytes(), &license(i))
                .unwrap();
            w.insert(&NOTES, format!("note-{i}").as_bytes(), &[i as u8; 37])
                .unwrap();
        }
        w.commit().unwrap();
        // Another allowed region.
        let mut w = db.write_in(acme, "us").unwrap();
        w.insert(&LICENSES, b"lic-us", &license(99)).unwrap();
        w.insert(&NOTES, b"note-us", b"in the us").unwrap();
        w.commit().unwrap();
        let mut w = db.write(bob).unwrap();
        w.insert(&NOTES, b"note-bob", b"").unwrap(); // empty raw value
        w.commit().unwrap();
        db.close().unwrap();
        (acme, bob)
    };

    // Reopen (regions listed in another order) and read everything back.
    let db = Db::builder()
        .region("eu")
        .region("us")
        .open(dir.path())
        .unwrap();
    assert_eq!(db.account_id("acme").unwrap(), Some(acme));
    assert_eq!(db.account_id("bob").unwrap(), Some(bob));
    let r = db.read(acme).unwrap();
    for i in 0..20 {
        let rec = r
            .get(&LICENSES, format!("lic-{i}").as_bytes())
            .unwrap()
            .expect("typed record after reopen");
        assert_license(&rec, &license(i));
        let note = r
            .get(&NOTES, format!("note-{i}").as_bytes())
            .unwrap()
            .expect("raw record after reopen");
        assert_eq!(&*note, &[i as u8; 37][..]);
    }
    // Home-region reads do not see the us rows; get_in does.
    assert!(r.get(&LICENSES, b"lic-us").unwrap().is_none());
    let rec = r.get_in("us", &LICENSES, b"lic-us").unwrap().unwrap();
    assert_license(&rec, &license(99));
    assert_eq!(
        &*r.get_in("us", &NOTES, b"note-us").unwrap().unwrap(),
        b"in the us"
    );
    assert!(r.get(&NOTES, b"missing").unwrap().is_none());

    // The scan sees 21 rows of each table, tagged with their region.
    let rows = scan_keys(&db, acme, &LICENSES);
    assert_eq!(rows.len(), 21);
    assert_eq!(rows.iter().filter(|(reg, _)| reg == "us").count(), 1);
    assert!(rows.contains(&("us".to_owned(), b"lic-us".to_vec())));

    let rb = db.read(bob).unwrap();
    assert_eq!(&*rb.get(&NOTES, b"note-bob").unwrap().unwrap(), b"");
    // Bob never sees acme's rows.
    assert!(rb.get(&NOTES, b"note-us").unwrap().is_none());
    drop((r, rb, rec));
    db.close().unwrap();
}

#[test]
fn files_are_laid_out_as_designed() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let eu_file = elsewhere.path().join("mnt-eu").join("regionkv-eu.redb");
    let db = Db::builder()
        .region("us")
        .region_at("eu", &eu_file)
        .open(dir.path())
        .unwrap();
    let acme = db.create_account(NewAccount::new("acme", "eu")).unwrap();
    let mut w = db.write(acme).unwrap();
    w.insert(&NOTES, b"k", b"v").unwrap();
    w.commit().unwrap();
    db.close().unwrap();
    assert!(global_path(dir.path()).is_file());
    assert!(region_path(dir.path(), "us").is_file());
    assert!(eu_file.is_file());
    assert!(!region_path(dir.path(), "eu").exists());

    // Reopening with the same explicit path finds the data.
    let db = Db::builder()
        .region("us")
        .region_at("eu", &eu_file)
        .open(dir.path())
        .unwrap();
    assert_eq!(
        &*db.read(acme).unwrap().get(&NOTES, b"k").unwrap().unwrap(),
        b"v"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Catalog ids
// ---------------------------------------------------------------------------------------

fn ids(db: &Db) -> Vec<(String, u16, bool)> {
    let mut v: Vec<_> = db
        .regions()
        .into_iter()
        .map(|r| (r.name, r.id.get(), r.enabled))
        .collect();
    v.sort();
    v
}

#[test]
fn catalog_ids_stable_across_reopen_reorder_and_added_region() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_us_eu(dir.path());
    let us = db.region_id("us").unwrap();
    let eu = db.region_id("eu").unwrap();
    assert_ne!(us, eu);
    assert_eq!(db.region_name(us).as_deref(), Some("us"));
    assert_eq!(db.region_name(eu).as_deref(), Some("eu"));
    assert_eq!(db.default_region(), us);
    let first = ids(&db);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|(_, _, enabled)| *enabled));
    assert!(matches!(db.region_id("ap"), Err(Error::RegionUnknown(_))));
    db.close().unwrap();

    // Reopen, same order.
    let db = open_us_eu(dir.path());
    assert_eq!(ids(&db), first);
    db.close().unwrap();

    // Reopen, other order, no default named: ids and the default stay.
    let db = Db::builder()
        .region("eu")
        .region("us")
        .open(dir.path())
        .unwrap();
    assert_eq!(ids(&db), first);
    assert_eq!(db.default_region(), us);
    db.close().unwrap();

    // Add a region later: existing ids unchanged, the new one is new.
    let db = Db::builder()
        .region("ap")
        .region("eu")
        .region("us")
        .open(dir.path())
        .unwrap();
    assert_eq!(db.region_id("us").unwrap(), us);
    assert_eq!(db.region_id("eu").unwrap(), eu);
    let ap = db.region_id("ap").unwrap();
    assert_ne!(ap, us);
    assert_ne!(ap, eu);
    let with_ap = ids(&db);
    assert_eq!(with_ap.len(), 3);
    db.close().unwrap();

    // Every order of the three keeps every id.
    for order in [["us", "ap", "eu"], ["eu", "us", "ap"], ["ap", "us", "eu"]] {
        let db = Db::builder()
            .region(order[0])
            .region(order[1])
            .region(order[2])
            .open(dir.path())
            .unwrap();
        assert_eq!(ids(&db), with_ap, "order {order:?}");
        db.close().unwrap();
    }

    // Disabling a region keeps its id (listed as not enabled); re-enabling keeps it too.
    let db = Db::builder()
        .region("us")
        .region("eu")
        .disable_region("ap")
        .open(dir.path())
        .unwrap();
    let disabled: Vec<_> = with_ap
        .iter()
        .map(|(n, id, _)| (n.clone(), *id, n != "ap"))
        .collect();
    assert_eq!(ids(&db), disabled);
    db.close().unwrap();
    // A later region never reuses an id, even of a disabled region.
    let db = Db::builder()
        .region("us")
        .region("eu")
        .region("sa")
        .disable_region("ap")
        .open(dir.path())
        .unwrap();
    let sa = db.region_id("sa").unwrap();
    assert!(![us, eu, ap].contains(&sa));
    assert_eq!(db.region_id("ap").unwrap(), ap);
    db.close().unwrap();
}

// ---------------------------------------------------------------------------------------
// 3. Wrong partition files: a clear error, nothing modified
// ---------------------------------------------------------------------------------------

/// A store with regions us and eu, one account in each holding a record. Closed.
fn seed_store(dir: &Path) -> (AccountId, AccountId) {
    let db = open_us_eu(dir);
    let a = db
        .create_account(NewAccount::new("eu-tenant", "eu").allow("us"))
        .unwrap();
    let b = db
        .create_account(NewAccount::new("us-tenant", "us"))
        .unwrap();
    for (acct, v) in [(a, b"eu-value".as_slice()), (b, b"us-value".as_slice())] {
        let mut w = db.write(acct).unwrap();
        w.insert(&NOTES, b"k", v).unwrap();
        w.commit().unwrap();
    }
    db.close().unwrap();
    (a, b)
}

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

#[test]
fn region_file_of_another_store_is_rejected() {
    let mut m = Modified::default();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let seeded = seed_store(a.path());
    seed_store(b.path());
    let a_eu = region_path(a.path(), "eu");
    let saved = std::fs::read(&a_eu).unwrap();
    copy(&region_path(b.path(), "eu"), &a_eu);

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
                .region_at("eu", region_path(b.path(), "eu"))
                .open(a.path())
        },
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    std::fs::write(&a_eu, saved).unwrap();
    assert_seed_intact(a.path(), seeded);
    m.assert_none();
}

#[test]
fn region_file_of_another_store_rejected_for_a_region_new_to_the_catalog() {
    let mut m = Modified::default();
    // Store A only has `us`; a file of store B sits where A's new region `eu` would go.
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    {
        let db = Db::builder().region("us").open(a.path()).unwrap();
        db.close().unwrap();
    }
    seed_store(b.path());
    copy(&region_path(b.path(), "eu"), &region_path(a.path(), "eu"));
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
    m.assert_none();
}

#[test]
fn region_file_under_the_wrong_name_is_rejected() {
    let mut m = Modified::default();
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let us = region_path(dir.path(), "us");
    let eu = region_path(dir.path(), "eu");

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
    m.assert_none();
}

#[test]
fn global_file_given_as_a_region_is_rejected() {
    let mut m = Modified::default();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let seeded = seed_store(a.path());
    seed_store(b.path());

    // Another store's global.redb given as region us.
    let fake = a.path().join("other").join("global-copy.redb");
    copy(&global_path(b.path()), &fake);
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
    copy(&global_path(a.path()), &own);
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
                .region_at("us", global_path(a.path()))
                .region("eu")
                .open(a.path())
        },
        |e| matches!(e, Error::PartitionMismatch { .. } | Error::Config(_)),
    );
    // A region file given as the global partition (a store whose global.redb is a region).
    let c = tempfile::tempdir().unwrap();
    copy(&region_path(a.path(), "us"), &global_path(c.path()));
    m.expect_rejected(
        c.path(),
        "a region file as global.redb",
        || Db::builder().region("us").open(c.path()),
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    assert_seed_intact(a.path(), seeded);
    m.assert_none();
}

#[test]
fn region_in_catalog_but_not_configured_is_a_config_error_unless_disabled() {
    let mut m = Modified::default();
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
    let db = Db::builder()
        .region("us")
        .disable_region("eu")
        .open(dir.path())
        .expect("open with eu disabled");
    assert!(
        !db.regions()
            .iter()
            .find(|r| r.name == "eu")
            .unwrap()
            .enabled
    );
    db.close().unwrap();
    assert_seed_intact(dir.path(), seeded);
    m.assert_none();
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

#[test]
fn newer_format_version_is_rejected() {
    let mut m = Modified::default();
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let eu = region_path(dir.path(), "eu");
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
    let g = global_path(dir.path());
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
    m.assert_none();
}

#[test]
fn empty_file_where_a_region_file_should_be_is_rejected() {
    let mut m = Modified::default();
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let eu = region_path(dir.path(), "eu");
    m.expect_rejected_with(dir.path(), &eu, b"", "empty eu.redb", |e| {
        matches!(e, Error::PartitionMismatch { .. })
    });

    // An empty global.redb.
    let g = global_path(dir.path());
    m.expect_rejected_with(dir.path(), &g, b"", "empty global.redb", |e| {
        matches!(e, Error::PartitionMismatch { .. })
    });
    assert_seed_intact(dir.path(), seeded);
    m.assert_none();
}

#[test]
fn directory_where_a_file_should_be_is_rejected() {
    let mut m = Modified::default();
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let eu = region_path(dir.path(), "eu");
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
    std::fs::create_dir(global_path(fresh.path())).unwrap();
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
    m.assert_none();
}

/// Deterministic pseudo-random bytes (xorshift).
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn garbage_bytes_are_rejected() {
    let mut m = Modified::default();
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let eu = region_path(dir.path(), "eu");
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

    let g = global_path(dir.path());
    let len = std::fs::metadata(&g).unwrap().len() as usize;
    m.expect_rejected_with(
        dir.path(),
        &g,
        &garbage(len, 42),
        "garbage global.redb",
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    assert_seed_intact(dir.path(), seeded);
    m.assert_none();
}

#[test]
fn a_plain_redb_file_without_meta_is_rejected() {
    let mut m = Modified::default();
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_store(dir.path());
    let eu = region_path(dir.path(), "eu");
    let saved = std::fs::read(&eu).unwrap();
    std::fs::remove_file(&eu).unwrap();
    {
        let db = redb::Database::create(&eu).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("other"))
                .unwrap();
            t.insert("k", b"v".as_slice()).unwrap();
        }
        w.commit().unwrap();
    }
    m.expect_rejected(
        dir.path(),
        "plain redb file at eu.redb",
        || try_open_us_eu(dir.path()),
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    std::fs::write(&eu, saved).unwrap();
    assert_seed_intact(dir.path(), seeded);
    m.assert_none();
}

#[test]
fn missing_region_file_is_a_config_error() {
    let mut m = Modified::default();
    let dir = tempfile::tempdir().unwrap();
    seed_store(dir.path());
    let eu = region_path(dir.path(), "eu");
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
    m.assert_none();
}

#[test]
fn region_file_without_its_global_is_never_adopted() {
    let mut m = Modified::default();
    let dir = tempfile::tempdir().unwrap();
    seed_store(dir.path());
    std::fs::remove_file(global_path(dir.path())).unwrap();
    m.expect_rejected(
        dir.path(),
        "region files without global.redb",
        || try_open_us_eu(dir.path()),
        |e| matches!(e, Error::PartitionMismatch { .. }),
    );
    m.assert_none();
}

// ---------------------------------------------------------------------------------------
// 4. Disabled regions
// ---------------------------------------------------------------------------------------

#[test]
fn disabled_region_refuses_reads_and_writes_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (eu_tenant, us_tenant) = seed_store(dir.path());
    let eu_bytes = std::fs::read(region_path(dir.path(), "eu")).unwrap();

    let db = Db::builder()
        .region("us")
        .disable_region("eu")
        .open(dir.path())
        .unwrap();
    let disabled = |r: Result<_, Error>, what: &str| match r {
        Err(Error::RegionDisabled(name)) => assert_eq!(name, "eu", "{what}"),
        Err(e) => panic!("{what}: expected RegionDisabled, got {e:?}"),
        Ok(_) => panic!("{what}: expected RegionDisabled, got Ok"),
    };
    disabled(db.write_in(eu_tenant, "eu").map(|_| ()), "write_in eu");
    disabled(
        db.write(eu_tenant).map(|_| ()),
        "write to an eu-home account",
    );
    let r = db.read(eu_tenant).unwrap();
    disabled(
        r.get(&NOTES, b"k").map(|_| ()),
        "get for an eu-home account",
    );
    disabled(r.get_in("eu", &NOTES, b"k").map(|_| ()), "get_in eu");
    // A scan reports the disabled region and goes on with the others.
    let items: Vec<_> = r.scan(&NOTES).unwrap().collect();
    assert!(
        items
            .iter()
            .any(|i| matches!(i, Err(Error::RegionDisabled(_)))),
        "scan reports the disabled region"
    );
    // A new account cannot be homed in a disabled region.
    disabled(
        db.create_account(NewAccount::new("new-eu", "eu"))
            .map(|_| ()),
        "create_account home eu",
    );
    // Other regions work: the eu tenant's allowed us region and the us tenant.
    let mut w = db.write_in(eu_tenant, "us").unwrap();
    w.insert(&NOTES, b"while-eu-off", b"x").unwrap();
    w.commit().unwrap();
    // (`r` holds an older snapshot of us: read again.)
    assert!(r.get_in("us", &NOTES, b"while-eu-off").unwrap().is_none());
    drop(r);
    let r = db.read(eu_tenant).unwrap();
    assert_eq!(
        &*r.get_in("us", &NOTES, b"while-eu-off").unwrap().unwrap(),
        b"x"
    );
    let rb = db.read(us_tenant).unwrap();
    assert_eq!(&*rb.get(&NOTES, b"k").unwrap().unwrap(), b"us-value");
    let mut w = db.write(us_tenant).unwrap();
    w.insert(&NOTES, b"k2", b"us-2").unwrap();
    w.commit().unwrap();
    // scan_all skips the disabled region.
    let all: Vec<_> = db
        .scan_all(&NOTES)
        .unwrap()
        .map(|row| db.region_name(row.unwrap().region()).unwrap())
        .collect();
    assert!(all.iter().all(|r| r == "us"));
    assert_eq!(all.len(), 3);
    drop((r, rb));
    db.close().unwrap();
    // The disabled region's file was not touched.
    assert_eq!(
        std::fs::read(region_path(dir.path(), "eu")).unwrap(),
        eu_bytes
    );

    // Re-enabled: the data is still there.
    let db = open_us_eu(dir.path());
    assert!(db.regions().iter().all(|r| r.enabled));
    let r = db.read(eu_tenant).unwrap();
    assert_eq!(&*r.get(&NOTES, b"k").unwrap().unwrap(), b"eu-value");
    assert_eq!(
        &*r.get_in("us", &NOTES, b"while-eu-off").unwrap().unwrap(),
        b"x"
    );
    let mut w = db.write(eu_tenant).unwrap();
    w.insert(&NOTES, b"k3", b"eu-3").unwrap();
    w.commit().unwrap();
}

#[test]
fn disable_region_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (eu_tenant, us_tenant) = seed_store(dir.path());
    let db = open_us_eu(dir.path());
    // The default region cannot be disabled.
    assert!(matches!(db.disable_region("us"), Err(Error::Config(_))));
    assert!(matches!(
        db.disable_region("mars"),
        Err(Error::RegionUnknown(_))
    ));
    db.disable_region("eu").unwrap();
    // Idempotent.
    db.disable_region("eu").unwrap();
    assert!(
        !db.regions()
            .iter()
            .find(|r| r.name == "eu")
            .unwrap()
            .enabled
    );
    assert!(matches!(
        db.write_in(eu_tenant, "eu"),
        Err(Error::RegionDisabled(_))
    ));
    assert!(matches!(db.write(eu_tenant), Err(Error::RegionDisabled(_))));
    let r = db.read(eu_tenant).unwrap();
    assert!(matches!(r.get(&NOTES, b"k"), Err(Error::RegionDisabled(_))));
    assert!(matches!(
        r.get_in("eu", &NOTES, b"k"),
        Err(Error::RegionDisabled(_))
    ));
    let rb = db.read(us_tenant).unwrap();
    assert_eq!(&*rb.get(&NOTES, b"k").unwrap().unwrap(), b"us-value");
    drop((r, rb));
    db.close().unwrap();

    // Recorded in the catalog: opening without eu is fine now.
    let db = Db::builder().region("us").open(dir.path()).unwrap();
    assert!(
        !db.regions()
            .iter()
            .find(|r| r.name == "eu")
            .unwrap()
            .enabled
    );
    assert!(matches!(db.write(eu_tenant), Err(Error::RegionDisabled(_))));
    db.close().unwrap();

    // Listing it again re-enables it, with its data.
    let db = open_us_eu(dir.path());
    let r = db.read(eu_tenant).unwrap();
    assert_eq!(&*r.get(&NOTES, b"k").unwrap().unwrap(), b"eu-value");
}

#[test]
fn write_opened_before_runtime_disable_does_not_reach_the_region() {
    let dir = tempfile::tempdir().unwrap();
    let (eu_tenant, _) = seed_store(dir.path());
    let db = open_us_eu(dir.path());
    let mut w = db.write(eu_tenant).unwrap();
    w.insert(&NOTES, b"late", b"written after disable?")
        .unwrap();
    db.disable_region("eu").unwrap();
    // A write opened before the region was disabled is refused at commit.
    let committed = w.commit();
    assert!(
        matches!(committed, Err(Error::RegionDisabled(ref r)) if r == "eu"),
        "{committed:?}"
    );
    db.close().unwrap();
    let db = open_us_eu(dir.path());
    let r = db.read(eu_tenant).unwrap();
    let found = r.get(&NOTES, b"late").unwrap().is_some();
    assert_eq!(
        committed.is_ok(),
        found,
        "commit result {committed:?} disagrees with the data"
    );
}
