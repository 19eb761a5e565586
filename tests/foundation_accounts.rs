//! Accounts, placement policy and quotas across regions, through the
//! public API only.

mod common_foundation;

use common_foundation::*;
use regionkv::{AccountId, AccountState, Db, Error, NewAccount, Unique};

// ---------------------------------------------------------------------------------------
// 7. Accounts
// ---------------------------------------------------------------------------------------

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
    let db = Db::builder()
        .region("eu")
        .region("us")
        .open(dir.path())
        .unwrap();
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
    let db = Db::builder()
        .region("us")
        .disable_region("eu")
        .open(dir.path())
        .unwrap();
    // Unknown home.
    assert!(matches!(
        db.create_account(NewAccount::new("x", "mars")),
        Err(Error::RegionUnknown(r)) if r == "mars"
    ));
    // Unknown allowed region.
    assert!(matches!(
        db.create_account(NewAccount::new("x", "us").allow("mars")),
        Err(Error::RegionUnknown(_))
    ));
    // Disabled home.
    assert!(matches!(
        db.create_account(NewAccount::new("x", "eu")),
        Err(Error::RegionDisabled(r)) if r == "eu"
    ));
    // None of the failures took the name.
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
    assert!(matches!(
        db.create_account(NewAccount::new("", "us")),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        db.create_account(NewAccount::new("n".repeat(129), "us")),
        Err(Error::InvalidArgument(_))
    ));
    db.create_account(NewAccount::new("n".repeat(128), "us"))
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// 5. Placement denied
// ---------------------------------------------------------------------------------------

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
        || ["us", "eu", "ap"].map(|r| std::fs::read(region_path(dir.path(), r)).unwrap());
    let before = region_bytes();
    match db.write_in(eu_only, "us") {
        Err(Error::PlacementDenied { account, region }) => {
            assert_eq!(account, eu_only);
            assert_eq!(region, "us");
        }
        other => panic!("expected PlacementDenied, got {other:?}"),
    }
    assert!(matches!(
        db.write_in(eu_us, "ap"),
        Err(Error::PlacementDenied { .. })
    ));
    // Reads outside the policy are refused too.
    let r = db.read(eu_only).unwrap();
    assert!(matches!(
        r.get_in("us", &NOTES, b"k"),
        Err(Error::PlacementDenied { .. })
    ));
    // An unknown region is not a placement question.
    assert!(matches!(
        db.write_in(eu_only, "mars"),
        Err(Error::RegionUnknown(_))
    ));
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

// ---------------------------------------------------------------------------------------
// 6. Quota across two regions
// ---------------------------------------------------------------------------------------

fn put(db: &Db, account: AccountId, region: &str, key: &str) -> Result<(), Error> {
    let mut w = db.write_in(account, region)?;
    w.insert(&NOTES, key.as_bytes(), format!("value of {key}").as_bytes())?;
    w.commit()
}

fn del(db: &Db, account: AccountId, region: &str, key: &str) -> Result<(), Error> {
    let mut w = db.write_in(account, region)?;
    w.remove(&NOTES, key.as_bytes())?;
    w.commit()
}

fn assert_quota(r: Result<(), Error>, account: AccountId, what: &str) {
    match r {
        Err(Error::QuotaExceeded { account: a, limit }) => {
            assert_eq!(a, account, "{what}");
            assert_eq!(limit, 3, "{what}");
        }
        other => panic!("{what}: expected QuotaExceeded, got {other:?}"),
    }
}

fn count(db: &Db, account: AccountId) -> usize {
    scan_keys(db, account, &NOTES).len()
}

#[test]
fn quota_spans_regions_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_us_eu(dir.path());
    let acme = db
        .create_account(NewAccount::new("acme", "eu").allow("us").max_records(3))
        .unwrap();
    let other = db
        .create_account(NewAccount::new("other", "eu").allow("us"))
        .unwrap();
    put(&db, acme, "eu", "e1").unwrap();
    put(&db, acme, "eu", "e2").unwrap();
    put(&db, acme, "us", "u1").unwrap();
    assert_eq!(count(&db, acme), 3);

    // The 4th record, in either region, is refused and writes nothing.
    assert_quota(put(&db, acme, "eu", "e3"), acme, "4th in eu");
    assert_quota(put(&db, acme, "us", "u2"), acme, "4th in us");
    // Several records in one write: refused as a whole.
    let mut w = db.write(acme).unwrap();
    w.insert(&NOTES, b"e4", b"x").unwrap();
    w.insert(&NOTES, b"e5", b"x").unwrap();
    assert_quota(w.commit(), acme, "two at once");
    // A unique write over the limit is refused and claims nothing.
    let mut w = db.write(acme).unwrap();
    w.insert_unique(
        &NOTES,
        b"e6",
        b"x",
        &[Unique::new("email", "q@example.com")],
    )
    .unwrap();
    assert_quota(w.commit(), acme, "unique write over the limit");
    assert!(!db.is_taken("email", "q@example.com").unwrap());
    let mut keys: Vec<_> = scan_keys(&db, acme, &NOTES);
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("eu".to_owned(), b"e1".to_vec()),
            ("eu".to_owned(), b"e2".to_vec()),
            ("us".to_owned(), b"u1".to_vec()),
        ]
    );

    // Replacing an existing key does not count twice (either region).
    put(&db, acme, "eu", "e1").unwrap();
    put(&db, acme, "us", "u1").unwrap();
    let mut w = db.write(acme).unwrap();
    w.insert(&NOTES, b"e2", b"replaced").unwrap();
    w.insert(&NOTES, b"e2", b"replaced twice").unwrap();
    w.commit().unwrap();
    assert_eq!(
        &*db.read(acme).unwrap().get(&NOTES, b"e2").unwrap().unwrap(),
        b"replaced twice"
    );
    assert_eq!(count(&db, acme), 3);

    // Removing a missing key frees nothing.
    del(&db, acme, "us", "never-there").unwrap();
    assert_quota(
        put(&db, acme, "eu", "e3"),
        acme,
        "after removing a missing key",
    );

    // Other accounts are not limited by acme's quota.
    for i in 0..5 {
        put(&db, other, "us", &format!("o{i}")).unwrap();
    }

    // Removing a record frees room, in the other region too.
    del(&db, acme, "us", "u1").unwrap();
    assert_eq!(count(&db, acme), 2);
    put(&db, acme, "eu", "e3").unwrap();
    assert_quota(put(&db, acme, "us", "u2"), acme, "full again");
    // Remove + insert in one write is a net zero.
    let mut w = db.write(acme).unwrap();
    w.remove(&NOTES, b"e3").unwrap();
    w.insert(&NOTES, b"e4", b"swap").unwrap();
    w.commit().unwrap();
    assert_eq!(count(&db, acme), 3);
    db.close().unwrap();

    // After reopen the count is the same, so the limit is still enforced.
    let db = Db::builder()
        .region("eu")
        .region("us")
        .open(dir.path())
        .unwrap();
    assert_eq!(count(&db, acme), 3);
    assert_quota(put(&db, acme, "us", "u9"), acme, "after reopen, us");
    assert_quota(put(&db, acme, "eu", "e9"), acme, "after reopen, eu");
    put(&db, acme, "eu", "e1").unwrap(); // replace still fine
    del(&db, acme, "eu", "e1").unwrap();
    put(&db, acme, "us", "u9").unwrap();
    assert_quota(put(&db, acme, "eu", "e9"), acme, "after reopen, full again");
    assert_eq!(count(&db, acme), 3);
    db.close().unwrap();

    // And once more, to see the counters after the post-reopen writes were persisted.
    let db = open_us_eu(dir.path());
    assert_quota(put(&db, acme, "eu", "e9"), acme, "second reopen");
    assert_eq!(count(&db, acme), 3);
}

#[test]
fn quota_counts_records_in_a_disabled_region() {
    // max_records is enforced across all the account's regions: records held in a region
    // that is disabled for now still count.
    let dir = tempfile::tempdir().unwrap();
    let db = open_us_eu(dir.path());
    let acme = db
        .create_account(NewAccount::new("acme", "us").allow("eu").max_records(3))
        .unwrap();
    put(&db, acme, "eu", "e1").unwrap();
    put(&db, acme, "eu", "e2").unwrap();
    put(&db, acme, "us", "u1").unwrap();
    db.close().unwrap();

    let db = Db::builder()
        .region("us")
        .disable_region("eu")
        .open(dir.path())
        .unwrap();
    assert_quota(
        put(&db, acme, "us", "u2"),
        acme,
        "4th record while eu (holding 2) is disabled",
    );
    db.close().unwrap();
    let db = open_us_eu(dir.path());
    assert_eq!(
        count(&db, acme),
        3,
        "the limit held across the disabled region"
    );
}

#[test]
fn quota_is_enforced_under_concurrent_writers_in_two_regions() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_us_eu(dir.path());
    let acme = db
        .create_account(NewAccount::new("acme", "eu").allow("us").max_records(3))
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                let region = if t % 2 == 0 { "eu" } else { "us" };
                let mut ok = 0;
                for i in 0..3 {
                    match put(&db, acme, region, &format!("t{t}-{i}")) {
                        Ok(()) => ok += 1,
                        Err(Error::QuotaExceeded { .. }) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                ok
            })
        })
        .collect();
    let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(ok, 3, "exactly the limit succeeded");
    assert_eq!(count(&db, acme), 3);
}
