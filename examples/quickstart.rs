//! Opens a store with `us` and `eu` regions in a temporary folder, creates a tenant in
//! each, writes and reads typed records (zero-copy), claims a license key that is unique
//! across both regions, and shows that the EU tenant's bytes are only in `eu.redb`.
//!
//! Run: `cargo run --release --example quickstart`

use regionkv::{Db, Error, NewAccount, Table, Unique};

#[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, regionkv::Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct License {
    key: String,
    holder: String,
    seats: u32,
}

const LICENSES: Table<License> = Table::new("licenses");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Db::builder()
        .region("us")
        .region("eu")
        .default_region("us")
        .open(dir.path())?;

    let acme = db.create_account(NewAccount::new("acme-gmbh", "eu").max_records(1_000))?;
    let initech = db.create_account(NewAccount::new("initech", "us"))?;

    // EU tenant: its records go to eu.redb; the license key is claimed globally.
    let mut w = db.write(acme)?;
    w.insert_unique(
        &LICENSES,
        b"lic-1",
        &License {
            key: "K-EU-0001".into(),
            holder: "hans.mueller@acme.example".into(),
            seats: 25,
        },
        &[Unique::new("license_key", "K-EU-0001")],
    )?;
    w.commit()?;

    // US tenant: a record of its own, then an attempt to reuse the EU tenant's key.
    let mut w = db.write(initech)?;
    w.insert_unique(
        &LICENSES,
        b"lic-1",
        &License {
            key: "K-US-0001".into(),
            holder: "peter@initech.example".into(),
            seats: 3,
        },
        &[Unique::new("license_key", "K-US-0001")],
    )?;
    w.commit()?;
    let mut w = db.write(initech)?;
    w.insert_unique(
        &LICENSES,
        b"lic-2",
        &License {
            key: "K-EU-0001".into(),
            holder: "milton@initech.example".into(),
            seats: 1,
        },
        &[Unique::new("license_key", "K-EU-0001")],
    )?;
    let dup = w.commit();
    assert!(matches!(dup, Err(Error::UniqueViolation { .. })));
    println!("reusing K-EU-0001 from the US tenant: {}", dup.unwrap_err());

    // Zero-copy reads: `rec` derefs to &ArchivedLicense inside redb's page.
    let r = db.read(acme)?;
    let rec = r.get(&LICENSES, b"lic-1")?.expect("written above");
    println!("acme lic-1: key={} seats={}", rec.key, rec.seats);
    let hit = db
        .find_unique(&LICENSES, "license_key", "K-EU-0001")?
        .expect("claimed above");
    println!(
        "K-EU-0001 belongs to account {} in region {}",
        hit.account(),
        db.region_name(hit.region()).unwrap_or_default()
    );
    let n_us = db.read(initech)?.scan(&LICENSES)?.count();
    println!("initech holds {n_us} license(s)");
    drop((rec, hit, r));
    db.close()?;

    // Residency: the EU holder's email is in eu.redb only.
    let canary = b"hans.mueller@acme.example";
    let contains = |p: std::path::PathBuf| -> std::io::Result<bool> {
        let bytes = std::fs::read(p)?;
        Ok(bytes.windows(canary.len()).any(|w| w == canary))
    };
    let in_eu = contains(dir.path().join("regions/eu.redb"))?;
    let in_us = contains(dir.path().join("regions/us.redb"))?;
    let in_global = contains(dir.path().join("global.redb"))?;
    println!("EU email bytes: eu.redb={in_eu} us.redb={in_us} global.redb={in_global}");
    assert!(in_eu && !in_us && !in_global, "residency violated");
    println!("quickstart: ok");
    Ok(())
}
