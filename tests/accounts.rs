//! Accounts and the placement policy, through the public API only.

mod common;

use common::files::*;
use common::refusal::{Rejected, run_rejections};
use regionkv::layout::region_file;
use regionkv::{AccountId, AccountState, Db, Error, NewAccount};

#[test]
fn account_rows_lookup_and_duplicate_names() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_us_eu(dir.path());
    let us = db.region_id("us").unwrap();
    let eu = db.region_id("eu").unwrap();
    let acme = db
        .create_account(NewAccount::new("acme", "eu").allow("us").max_records(10))
        .unwrap();
    let bob = db.create_account(NewAccount::new("bob", "us")).unwrap();
    assert_ne!(acme, bob);

    let a = db.account(acme).unwrap();
    assert_eq!(a.id(), acme);
    assert_eq!(a.name(), "acme");
    assert_eq!(a.home(), eu);
    assert_eq!(
        a.allowed(),
        &[eu, us],
        "home first, then the allowed regions"
    );
    assert!(a.allows(us) && a.allows(eu));
    assert_eq!(a.max_records(), Some(10));
    assert_eq!(a.state(), AccountState::Active);

    let b = db.account(bob).unwrap();
    assert_eq!(b.name(), "bob");
    assert_eq!(b.home(), us);
    assert_eq!(b.allowed(), &[us]);
    assert!(!b.allows(eu));
    assert_eq!(b.max_records(), None);

    assert_eq!(db.account_id("acme").unwrap(), Some(acme));
    assert_eq!(db.account_id("bob").unwrap(), Some(bob));
    assert_eq!(db.account_id("nobody").unwrap(), None);
    assert_eq!(db.account_id("ACME").unwrap(), None, "names are exact");

    // The name is unique across all regions: another home does not help.
    for home in ["eu", "us"] {
        match db.create_account(NewAccount::new("acme", home)) {
            Err(Error::AccountNameTaken(n)) => assert_eq!(n, "acme"),
            other => panic!("expected AccountNameTaken, got {other:?}"),
        }
    }
    // The failed creates did not change anything.
    assert_eq!(db.account_id("acme").unwrap(), Some(acme));
    assert_eq!(db.account(acme).unwrap().home(), eu);

    // Unknown ids.
    let unknown = AccountId::from_raw(acme.get().max(bob.get()) + 1000);
    assert!(matches!(db.account(unknown), Err(Error::AccountUnknown(id)) if id == unknown));
    assert!(matches!(db.write(unknown), Err(Error::AccountUnknown(_))));
    assert!(matches!(
        db.write_in(unknown, "us"),
        Err(Error::AccountUnknown(_))
    ));
    assert!(matches!(db.read(unknown), Err(Error::AccountUnknown(_))));
    db.close().unwrap();

    // After reopen: the same rows, the name still taken, new ids are new.
    let db = reopen_eu_us(dir.path());
    assert_eq!(db.account_id("acme").unwrap(), Some(acme));
    let a2 = db.account(acme).unwrap();
    assert_eq!(a2.name(), "acme");
    assert_eq!(a2.home(), eu);
    assert_eq!(a2.allowed(), &[eu, us]);
    assert_eq!(a2.max_records(), Some(10));
    assert_eq!(a2.created_at(), a.created_at());
    assert!(matches!(
        db.create_account(NewAccount::new("acme", "us")),
        Err(Error::AccountNameTaken(_))
    ));
    assert!(matches!(
        db.create_account(NewAccount::new("bob", "eu")),
        Err(Error::AccountNameTaken(_))
    ));
    let carol = db.create_account(NewAccount::new("carol", "eu")).unwrap();
    assert!(
        ![acme, bob].contains(&carol),
        "account ids are never reused"
    );
    assert!(matches!(db.account(unknown), Err(Error::AccountUnknown(_))));
}

#[test]
fn account_home_and_allowed_regions_must_be_usable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_us_eu(dir.path());
        db.close().unwrap();
    }
    let db = open_us_eu_off(dir.path());
    let rows = [
        Rejected::new(
            "unknown home",
            "Error::RegionUnknown(mars)",
            |e| matches!(e, Error::RegionUnknown(r) if r == "mars"),
            |_: &mut ()| db.create_account(NewAccount::new("x", "mars")),
        ),
        Rejected::new(
            "unknown allowed region",
            "Error::RegionUnknown",
            |e| matches!(e, Error::RegionUnknown(_)),
            |_: &mut ()| db.create_account(NewAccount::new("x", "us").allow("mars")),
        ),
        Rejected::new(
            "disabled home",
            "Error::RegionDisabled(eu)",
            |e| matches!(e, Error::RegionDisabled(r) if r == "eu"),
            |_: &mut ()| db.create_account(NewAccount::new("x", "eu")),
        ),
    ];
    // None of the failures took the name.
    run_rejections(&mut (), &rows, |_| taken(&db, "x"));
    drop(rows);
    assert_eq!(db.account_id("x").unwrap(), None);
    // A disabled region may be an allowed (not home) region.
    let x = db
        .create_account(NewAccount::new("x", "us").allow("eu"))
        .unwrap();
    assert!(matches!(
        db.write_in(x, "eu"),
        Err(Error::RegionDisabled(_))
    ));
    // Bad names.
    let rows = [
        Rejected::invalid("empty name", |_: &mut ()| {
            db.create_account(NewAccount::new("", "us"))
        }),
        Rejected::invalid("name over the limit", |_: &mut ()| {
            db.create_account(NewAccount::new("n".repeat(129), "us"))
        }),
    ];
    run_rejections(&mut (), &rows, |_| {
        let mut t = taken(&db, "");
        t.extend(taken(&db, &"n".repeat(129)));
        t
    });
    drop(rows);
    db.create_account(NewAccount::new("n".repeat(128), "us"))
        .unwrap();
}

#[test]
fn placement_denied_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder()
        .region("us")
        .region("eu")
        .region("ap")
        .default_region("us")
        .open(dir.path())
        .unwrap();
    let eu_only = db.create_account(NewAccount::new("eu-only", "eu")).unwrap();
    let eu_us = db
        .create_account(NewAccount::new("eu-us", "eu").allow("us"))
        .unwrap();
    // Commits are synced: the files on disk are current while the store is open.
    let region_bytes =
        || ["us", "eu", "ap"].map(|r| std::fs::read(region_file(dir.path(), r)).unwrap());
    let before = region_bytes();
    let denied = |e: &Error| matches!(e, Error::PlacementDenied { .. });
    let r = db.read(eu_only).unwrap();
    let rows = [
        Rejected::new(
            "write outside the policy",
            "Error::PlacementDenied naming the account and us",
            |e| {
                matches!(e, Error::PlacementDenied { account, region }
                    if *account == eu_only && region == "us")
            },
            |_: &mut ()| db.write_in(eu_only, "us").map(drop),
        ),
        Rejected::new(
            "write in an allowed account's other region",
            "Error::PlacementDenied",
            denied,
            |_: &mut ()| db.write_in(eu_us, "ap").map(drop),
        ),
        // Reads outside the policy are refused too.
        Rejected::new(
            "read outside the policy",
            "Error::PlacementDenied",
            denied,
            |_: &mut ()| {
                r.get_in("us", &NOTES, b"k")
                    .map(|o| o.map(|rec| rec.to_vec()))
            },
        ),
        // An unknown region is not a placement question.
        Rejected::new(
            "write in an unknown region",
            "Error::RegionUnknown",
            |e| matches!(e, Error::RegionUnknown(_)),
            |_: &mut ()| db.write_in(eu_only, "mars").map(drop),
        ),
    ];
    // Nothing reached any region file (after every row).
    run_rejections(&mut (), &rows, |_| {
        (before != region_bytes())
            .then(|| "a region file was modified".to_owned())
            .into_iter()
            .collect()
    });
    drop(rows);
    // Nothing reached any region file.
    assert!(
        before == region_bytes(),
        "a denied write modified a region file"
    );

    // The allowed ones work.
    let mut w = db.write_in(eu_us, "us").unwrap();
    w.insert(&NOTES, b"k", b"ok in us").unwrap();
    w.commit().unwrap();
    let mut w = db.write_in(eu_only, "eu").unwrap();
    w.insert(&NOTES, b"k", b"ok in eu").unwrap();
    w.commit().unwrap();

    // Nothing of eu_only outside eu, nothing of anyone in ap.
    assert_eq!(
        scan_keys(&db, eu_only, &NOTES),
        vec![("eu".to_owned(), b"k".to_vec())]
    );
    let rows: Vec<_> = db
        .scan_all(&NOTES)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (db.region_name(r.region()).unwrap(), r.account())
        })
        .collect();
    assert!(!rows.contains(&("us".to_owned(), eu_only)));
    assert!(rows.iter().all(|(reg, _)| reg != "ap"));
    let after = region_bytes();
    assert!(after[2] == before[2], "ap untouched");
    assert!(after[0] != before[0], "us took the allowed write");
    drop(r);
    db.close().unwrap();
}

/// A problem if an account named `name` exists.
fn taken(db: &Db, name: &str) -> Vec<String> {
    match db.account_id(name) {
        Ok(Some(id)) => vec![format!("account {name:?} was created ({id:?})")],
        _ => Vec::new(),
    }
}

/// Bulk account creation: one synced commit of the global file for the whole batch (the
/// import path; redb may also sync while it grows the file), ids in order, every account
/// readable and routable; after a power loss right after it, every account exists.
#[test]
fn create_accounts_is_one_synced_commit_for_the_batch() {
    use common::sim::{quiet_us_eu, sim_global};
    let sim = regionkv::testing::SimStorage::new();
    let db = quiet_us_eu(&sim, "/bulk").unwrap();
    let before = sim.syncs_of(sim_global("/bulk"));
    let ids = db
        .create_accounts((0..500).map(|i| {
            NewAccount::new(format!("tenant-{i}"), if i % 2 == 0 { "us" } else { "eu" })
                .allow("us")
                .max_records(10)
        }))
        .unwrap();
    let syncs = sim.syncs_of(sim_global("/bulk")) - before;
    assert!(
        syncs <= 3,
        "one commit (plus file growth) for 500 accounts: {syncs} syncs"
    );
    assert_eq!(ids.len(), 500);
    assert!(
        ids.windows(2).all(|w| w[0].get() < w[1].get()),
        "ids in order"
    );
    sim.crash();
    drop(db);
    let db = quiet_us_eu(&sim, "/bulk").unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(db.account_id(&format!("tenant-{i}")).unwrap(), Some(*id));
        let a = db.account(*id).unwrap();
        assert_eq!(a.max_records(), Some(10));
    }
    // Writes work for accounts of the batch.
    let mut w = db.write(ids[3]).unwrap();
    w.insert(&common::T, b"k", b"v").unwrap();
    w.commit().unwrap();
    assert!(db.audit().unwrap().is_clean());
}

/// One bad account refuses the whole batch and creates nothing: a taken name, a name twice
/// in the batch, an unknown or disabled home region, a bad name. An empty batch is a no-op.
#[test]
fn create_accounts_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_us_eu(dir.path());
    db.create_account(NewAccount::new("taken", "us")).unwrap();
    db.disable_region("eu").unwrap();
    let before = snapshot(dir.path());
    let ok = || NewAccount::new("fresh", "us");
    type Case = (&'static str, Vec<NewAccount>, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (
            "taken name",
            vec![ok(), NewAccount::new("taken", "us")],
            |e| matches!(e, Error::AccountNameTaken(n) if n == "taken"),
        ),
        (
            "name twice in the batch",
            vec![
                NewAccount::new("twice", "us"),
                ok(),
                NewAccount::new("twice", "us"),
            ],
            |e| matches!(e, Error::AccountNameTaken(n) if n == "twice"),
        ),
        (
            "unknown region",
            vec![ok(), NewAccount::new("x", "mars")],
            |e| matches!(e, Error::RegionUnknown(_)),
        ),
        (
            "disabled home",
            vec![ok(), NewAccount::new("x", "eu")],
            |e| matches!(e, Error::RegionDisabled(_)),
        ),
        ("empty name", vec![ok(), NewAccount::new("", "us")], |e| {
            matches!(e, Error::InvalidArgument(_))
        }),
    ];
    for (what, batch, expected) in cases {
        let e = db.create_accounts(batch).unwrap_err();
        assert!(expected(&e), "{what}: {e}");
        assert_eq!(db.account_id("fresh").unwrap(), None, "{what}");
        assert_eq!(db.account_id("twice").unwrap(), None, "{what}");
    }
    assert!(db.create_accounts([]).unwrap().is_empty());
    assert_same_files(&before, &snapshot(dir.path()), "refused batches");
}
