//! Files of a store on disk: snapshots of a directory (every path with its bytes) and their
//! differences, byte searches, and the us+eu store most file tests open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regionkv::testing::SimStorage;
use regionkv::{AccountId, Db, NewAccount, Raw, Table};

/// A byte-valued table used by several tests.
pub const NOTES: Table<Raw> = Table::new("notes");

/// What a path in a store directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
}

/// Every path of a store's files with what it holds.
pub type Snapshot = BTreeMap<PathBuf, Node>;

/// Every file and directory under `dir` (recursively), with the full bytes of each file;
/// paths relative to `dir`.
pub fn snapshot(dir: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).expect("under root").to_owned();
        if path.is_dir() {
            out.insert(rel, Node::Dir);
            walk(root, &path, out);
        } else {
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.insert(rel, Node::File(bytes));
        }
    }
}

/// Every file of `sim` with its live bytes (a simulated store has no directories).
pub fn sim_snapshot(sim: &SimStorage) -> Snapshot {
    sim.paths()
        .into_iter()
        .map(|p| {
            let bytes = sim.live_bytes(&p).expect("a listed path has bytes");
            (p, Node::File(bytes))
        })
        .collect()
}

/// Describes every difference between two snapshots; empty if they are identical.
pub fn diff_files(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        out.push(format!("{} was removed", path.display()));
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("{} was created", path.display()));
    }
    for (path, node) in before {
        let Some(other) = after.get(path) else {
            continue;
        };
        if node == other {
            continue;
        }
        let detail = match (node, other) {
            (Node::File(a), Node::File(b)) => {
                let diff: Vec<(usize, u8, u8)> = a
                    .iter()
                    .zip(b.iter())
                    .enumerate()
                    .filter(|(_, (x, y))| x != y)
                    .map(|(i, (x, y))| (i, *x, *y))
                    .collect();
                format!(
                    "len {} -> {}, {} bytes differ, first (offset, before, after): {:?}",
                    a.len(),
                    b.len(),
                    diff.len(),
                    &diff[..diff.len().min(4)]
                )
            }
            _ => "kind changed".to_owned(),
        };
        out.push(format!("{} changed ({detail})", path.display()));
    }
    out
}

/// Asserts two snapshots are identical, naming every path that differs.
pub fn assert_same_files(before: &Snapshot, after: &Snapshot, what: &str) {
    let diff = diff_files(before, after);
    assert!(
        diff.is_empty(),
        "{what}: files modified:\n  {}",
        diff.join("\n  ")
    );
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find_all(hay, needle).next().is_some()
}

/// Every offset at which `needle` occurs in `hay`.
pub fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    assert!(!needle.is_empty());
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// Opens (or creates) a store with regions `us` and `eu`, `us` the default.
pub fn try_open_us_eu(dir: &Path) -> regionkv::Result<Db> {
    Db::builder()
        .region("us")
        .region("eu")
        .default_region("us")
        .open(dir)
}

/// Like [`try_open_us_eu`], panicking on error.
pub fn open_us_eu(dir: &Path) -> Db {
    try_open_us_eu(dir).expect("open us+eu store")
}

/// Opens the store at `dir` with region `us` enabled and `eu` disabled, no default named;
/// panics on error.
pub fn open_us_eu_off(dir: &Path) -> Db {
    Db::builder()
        .region("us")
        .disable_region("eu")
        .open(dir)
        .expect("open us with eu disabled")
}

/// Reopens the store at `dir` with its regions listed in the other order (`eu`, `us`) and
/// no default named: the stored catalog decides ids and the default.
pub fn reopen_eu_us(dir: &Path) -> Db {
    Db::builder()
        .region("eu")
        .region("us")
        .open(dir)
        .expect("reopen eu+us store")
}

/// `bytes` of a partition rewritten through redb itself (in a real temporary file): valid
/// pages and checksums around whatever `edit` changed.
pub fn edit_with_redb(bytes: &[u8], edit: impl FnOnce(&redb::Database)) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let p = dir.path().join("f.redb");
    std::fs::write(&p, bytes).expect("write the partition");
    {
        let db = redb::Database::open(&p).expect("redb opens the partition");
        edit(&db);
    }
    std::fs::read(&p).expect("read the partition back")
}

/// The bytes of a plain redb file (no store's `_meta`): one table `other` holding `k` = `v`.
pub fn plain_redb_file() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let p = dir.path().join("plain.redb");
    {
        let db = redb::Database::create(&p).expect("redb creates a file");
        let w = db.begin_write().expect("begin write");
        {
            let mut t = w
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("other"))
                .expect("open table other");
            t.insert("k", b"v".as_slice()).expect("insert k");
        }
        w.commit().expect("commit");
    }
    std::fs::read(&p).expect("read the plain redb file")
}

/// The keys of every row of `table` the account can see, with the region name of each.
pub fn scan_keys<V: regionkv::Value>(
    db: &Db,
    account: regionkv::AccountId,
    table: &Table<V>,
) -> Vec<(String, Vec<u8>)> {
    let r = db.read(account).expect("read");
    r.scan(table)
        .expect("scan")
        .map(|row| {
            let row = row.expect("row");
            (
                db.region_name(row.region()).expect("region name"),
                row.key().to_vec(),
            )
        })
        .collect()
}

/// A store with regions us and eu, one account in each holding a record. Closed.
pub fn seed_store(dir: &Path) -> (AccountId, AccountId) {
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
