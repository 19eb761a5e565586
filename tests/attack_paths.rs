//! Adversarial review: hostile region paths.
//!
//! found (fixed since): `adding_a_region_at_p_destroys_the_region_living_at_p_creating`
//! found (fixed since): `two_new_regions_p_and_p_creating_in_one_open_lose_one`
//! found (fixed since): `refused_open_of_two_new_regions_file_vs_folder_changes_bytes`
//! found (fixed since): `refused_new_store_region_under_global_file_changes_bytes`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regionkv::testing::SimStorage;
use regionkv::{Db, Error, NewAccount, Raw, Table};

const T: Table<Raw> = Table::new("t");

fn snapshot(sim: &SimStorage) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    sim.paths()
        .into_iter()
        .map(|p| {
            let b = sim.live_bytes(&p);
            (p, b)
        })
        .collect()
}

fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let path = e.path();
                if path.is_dir() {
                    out.insert(path.clone(), b"<dir>".to_vec());
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
                }
            }
        }
    }
    walk(dir, &mut out);
    out
}

/// I3: a region whose file is at `X.creating` (a legal `region_at` path) loses every
/// acknowledged record when a later open adds a region at `X`: `create_new(X)` removes
/// `X.creating` unconditionally before building the new file there.
#[test]
fn adding_a_region_at_p_destroys_the_region_living_at_p_creating() {
    let sim = SimStorage::new();
    let eu_path = "/s/vol/eu.creating";
    let db = Db::builder()
        .storage(sim.clone())
        .region("us")
        .region_at("eu", eu_path)
        .open("/s")
        .unwrap();
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(&T, b"k", b"acknowledged").unwrap();
    w.commit().unwrap();
    db.close().unwrap();

    // Add a region at "/s/vol/eu": its temporary name is eu's file. Refused, untouched.
    let before: Vec<_> = sim
        .paths()
        .into_iter()
        .map(|p| (sim.live_bytes(&p), p))
        .collect();
    let r = Db::builder()
        .storage(sim.clone())
        .region("us")
        .region_at("eu", eu_path)
        .region_at("ap", "/s/vol/eu")
        .open("/s");
    assert!(matches!(r, Err(Error::Config(_))), "{:?}", r.map(|_| ()));
    let after: Vec<_> = sim
        .paths()
        .into_iter()
        .map(|p| (sim.live_bytes(&p), p))
        .collect();
    assert!(
        before == after,
        "a refused open changed files: {:?}",
        sim.paths()
    );
    // The store opens as it was, with eu's acknowledged record.
    let db = Db::builder()
        .storage(sim.clone())
        .region("us")
        .region_at("eu", eu_path)
        .open("/s")
        .unwrap();
    let got = db.read(a).unwrap().get(&T, b"k").unwrap();
    assert_eq!(got.as_deref(), Some(&b"acknowledged"[..]));
}

/// Same hole inside one open: two new regions, `sa` at `P.creating` listed before `ap` at
/// `P`. The open succeeds; `sa`'s file is deleted while it is open, so everything written
/// to it was lost at the next open. Now refused at open.
#[test]
fn two_new_regions_p_and_p_creating_in_one_open_lose_one() {
    let sim = SimStorage::new();
    let b = || {
        Db::builder()
            .storage(sim.clone())
            .region("us")
            .region_at("sa", "/s/vol/x.creating")
            .region_at("ap", "/s/vol/x")
    };
    // Refused before anything is created: no file may be lost later.
    let r = b().open("/s");
    assert!(matches!(r, Err(Error::Config(_))), "{:?}", r.map(|_| ()));
    assert!(
        sim.paths().is_empty(),
        "files left behind: {:?}",
        sim.paths()
    );
}

/// "A refused open changes no byte": two new regions whose paths conflict as file vs
/// folder (`new/x` and `new/x/y.redb`) pass every plan check one by one, then the apply
/// writes the catalog and creates `new/x` before failing on `new/x/y.redb`.
#[test]
fn refused_open_of_two_new_regions_file_vs_folder_changes_bytes() {
    let dir = tempfile::tempdir().unwrap();
    Db::builder()
        .region("us")
        .open(dir.path())
        .unwrap()
        .close()
        .unwrap();
    let before = tree(dir.path());
    let r = Db::builder()
        .region("us")
        .region_at("ap", dir.path().join("new").join("x"))
        .region_at("sa", dir.path().join("new").join("x").join("y.redb"))
        .open(dir.path());
    let after = tree(dir.path());
    match r {
        Ok(db) => {
            drop(db);
            panic!("two regions at a file and under it as a folder must be refused");
        }
        Err(e) => {
            let changed: Vec<_> = after
                .keys()
                .chain(before.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .collect();
            assert!(
                changed.is_empty(),
                "refused open ({e}) changed files: {changed:?}"
            );
        }
    }
}

/// Same for a new store: a region under `<dir>/global.redb/` cannot be created (the global
/// file will be there), but the plan only checks each path against what exists now.
#[test]
fn refused_new_store_region_under_global_file_changes_bytes() {
    let sim = SimStorage::new();
    let r = Db::builder()
        .storage(sim.clone())
        .region("us")
        .region_at("eu", "/n/global.redb/eu.redb")
        .open("/n");
    let files = snapshot(&sim);
    match r {
        Ok(db) => {
            drop(db);
            // SimStorage has no folders: a file under a file's path is possible there.
        }
        Err(e) => assert!(
            files.is_empty(),
            "refused open ({e}) left files: {:?}",
            files.keys().collect::<Vec<_>>()
        ),
    }
    // Real files: a folder cannot be made where the global file is.
    let dir = tempfile::tempdir().unwrap();
    let r = Db::builder()
        .region("us")
        .region_at("eu", dir.path().join("global.redb").join("eu.redb"))
        .open(dir.path());
    let after = tree(dir.path());
    match r {
        Ok(db) => {
            drop(db);
            panic!("a region under the global file's path must be refused");
        }
        Err(e) => assert!(
            after.is_empty(),
            "refused open ({e}) left files: {:?}",
            after.keys().collect::<Vec<_>>()
        ),
    }
}
