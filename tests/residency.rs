//! Data residency: a tenant's values, unique values included, are stored only in
//! its region's file. Checked on the raw bytes of every partition file after the store is
//! closed.

mod common;

use regionkv::layout::{global_file, region_file};
use std::path::Path;

use common::files::*;
use regionkv::{Db, NewAccount, Table, Unique};

#[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, regionkv::Schema, Debug)]
#[rkyv(crate = regionkv::rkyv)]
struct Customer {
    name: String,
    email: String,
    notes: Vec<String>,
}

const CUSTOMERS: Table<Customer> = Table::new("customers");

struct Canary {
    value: &'static str,
    email: &'static str,
    raw: &'static str,
}

const EU_CANARY: Canary = Canary {
    value: "CANARY-EU-7f3a9c",
    email: "canary-eu-51d0e2@example.eu",
    raw: "CANARY-EU-RAW-c44e19",
};
const US_CANARY: Canary = Canary {
    value: "CANARY-US-2be81d",
    email: "canary-us-93a7f0@example.com",
    raw: "CANARY-US-RAW-0d6b55",
};

/// Writes rows holding the canary for a tenant homed in `home` (nothing else allowed), with
/// the canary email claimed as a unique value. Keys and account names hold no canary.
fn write_canary(db: &Db, tenant: &str, home: &str, c: &Canary) {
    let a = db.create_account(NewAccount::new(tenant, home)).unwrap();
    let mut w = db.write(a).unwrap();
    for i in 0..3 {
        let key = format!("cust-{i}");
        let customer = Customer {
            name: format!("{} #{i}", c.value),
            email: c.email.to_owned(),
            notes: vec![c.value.to_owned()],
        };
        if i == 0 {
            w.insert_unique(
                &CUSTOMERS,
                key.as_bytes(),
                &customer,
                &[
                    Unique::new("email", c.email),
                    Unique::new("handle", c.value),
                ],
            )
            .unwrap();
        } else {
            w.insert(&CUSTOMERS, key.as_bytes(), &customer).unwrap();
        }
    }
    w.insert(&NOTES, b"raw-1", c.raw.as_bytes()).unwrap();
    w.commit().unwrap();
    // A second write that changes the unique value and back, exercising releases.
    let mut w = db.write(a).unwrap();
    let other = format!("second-{}", c.email);
    w.insert_unique(
        &NOTES,
        b"raw-2",
        c.raw.as_bytes(),
        &[Unique::new("email2", other.as_str())],
    )
    .unwrap();
    w.commit().unwrap();
    // The lookups work (so the values really were indexed).
    assert!(db.is_taken("email", c.email).unwrap());
    let hit = db
        .find_unique(&CUSTOMERS, "email", c.email)
        .unwrap()
        .unwrap();
    assert_eq!(hit.account(), a);
    assert_eq!(hit.record().email.as_str(), c.email);
}

fn needles(c: &Canary) -> [(&'static str, &'static [u8]); 3] {
    [
        ("value", c.value.as_bytes()),
        ("email", c.email.as_bytes()),
        ("raw value", c.raw.as_bytes()),
    ]
}

fn assert_only_in(dir: &Path, c: &Canary, home: &str, others: &[&str]) {
    let home_bytes = std::fs::read(region_file(dir, home)).unwrap();
    for (what, needle) in needles(c) {
        assert!(
            contains(&home_bytes, needle),
            "{home}.redb must hold the {what} canary"
        );
    }
    let mut foreign = vec![("global.redb".to_owned(), global_file(dir))];
    for o in others {
        foreign.push((format!("{o}.redb"), region_file(dir, o)));
    }
    for (name, path) in foreign {
        let bytes = std::fs::read(&path).unwrap();
        for (what, needle) in needles(c) {
            assert!(
                !contains(&bytes, needle),
                "{name} holds the {what} canary of a {home} tenant"
            );
        }
    }
    // No other file appeared in the store directory.
    for path in snapshot(dir).keys() {
        let s = path.to_string_lossy();
        assert!(
            s == "global.redb" || s == "regions" || s.starts_with("regions/"),
            "unexpected file {s}"
        );
    }
}

#[test]
fn eu_tenant_data_stays_in_eu_redb() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_us_eu(dir.path());
        write_canary(&db, "eu-tenant", "eu", &EU_CANARY);
        // Some US activity too, so us.redb is not empty.
        let u = db
            .create_account(NewAccount::new("us-other", "us"))
            .unwrap();
        let mut w = db.write(u).unwrap();
        w.insert(&NOTES, b"x", b"us data").unwrap();
        w.commit().unwrap();
        drop(db);
    }
    assert_only_in(dir.path(), &EU_CANARY, "eu", &["us"]);
}

#[test]
fn us_tenant_data_stays_in_us_redb() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_us_eu(dir.path());
        write_canary(&db, "us-tenant", "us", &US_CANARY);
        let e = db
            .create_account(NewAccount::new("eu-other", "eu"))
            .unwrap();
        let mut w = db.write(e).unwrap();
        w.insert(&NOTES, b"x", b"eu data").unwrap();
        w.commit().unwrap();
        db.close().unwrap();
    }
    assert_only_in(dir.path(), &US_CANARY, "us", &["eu"]);
}

#[test]
fn both_tenants_stay_put_across_reopen_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::builder()
            .region("us")
            .region("eu")
            .region("ap")
            .checkpoint_budget(1, std::time::Duration::from_millis(0))
            .open(dir.path())
            .unwrap();
        write_canary(&db, "eu-tenant", "eu", &EU_CANARY);
        write_canary(&db, "us-tenant", "us", &US_CANARY);
        db.checkpoint().unwrap();
        db.close().unwrap();
    }
    {
        // Reopen (recovery runs), read, release one value, drop without close.
        let db = Db::builder()
            .region("ap")
            .region("eu")
            .region("us")
            .open(dir.path())
            .unwrap();
        let a = db.account_id("eu-tenant").unwrap().unwrap();
        let r = db.read(a).unwrap();
        assert_eq!(
            r.get(&CUSTOMERS, b"cust-0")
                .unwrap()
                .unwrap()
                .email
                .as_str(),
            EU_CANARY.email
        );
        drop(r);
        let mut w = db.write(a).unwrap();
        w.remove(&CUSTOMERS, b"cust-0").unwrap();
        w.commit().unwrap();
        assert!(!db.is_taken("email", EU_CANARY.email).unwrap());
        drop(db);
    }
    assert_only_in(dir.path(), &EU_CANARY, "eu", &["us", "ap"]);
    assert_only_in(dir.path(), &US_CANARY, "us", &["eu", "ap"]);
}
