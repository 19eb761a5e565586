//! Where regionkv's disk bytes go: the peers bench's workload (accounts homed round-robin
//! in 3 regions, records of a 120-byte rkyv payload each owning one unique value), then a
//! clean close, then redb's own numbers for every partition file and every table in it,
//! beside a single-file redb holding the same records and index rows.
//!
//! ```sh
//! cargo run --release --example space                       # A = 1,000, R = 20,000
//! REGIONKV_SPACE_ACCOUNTS=300 REGIONKV_SPACE_RECORDS=6000 cargo run --release --example space
//! ```
//!
//! Records `0..R/2` are loaded with region batches of 1,000 (one Reserve, one region commit
//! and one Confirm per batch); records `R/2..R` are written one per durable unique write
//! (one Reserve, one region commit, one Confirm each), as the bench's insert phases do.
//! The redb peer does the same: batches of 1,000 rows, then one `Immediate` commit per row.
//!
//! Per file it prints the file's length, redb's `DatabaseStats` (pages allocated, bytes
//! stored in leaves, metadata, fragmented bytes, which include the free pages) and what
//! `Database::compact` would leave (on a copy). Per table: entries, pages (leaf + branch),
//! bytes stored in leaves, metadata and fragmentation inside its pages (`TableStats`), and
//! the page bytes per record. Files live under `<target>/bench-data` (override with
//! `REGIONKV_BENCH_DATA`), on the build's disk.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use regionkv::{Db, NewAccount, Table};

type Res<T> = Result<T, Box<dyn StdError + Send + Sync>>;

const REGIONS: [&str; 3] = ["us", "eu", "ap"];
const NS: &str = "license_key";
const BATCH: u64 = 1_000;
const PAYLOAD: usize = 120;

#[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, regionkv::Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct License {
    id: u64,
    seats: u32,
    key: String,
    note: String,
}

const LICENSES: Table<License> =
    Table::<License>::new("licenses").unique(NS, |l| Some(l.key.as_bytes()));

const P_RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const P_UNIQUE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("unique_index");

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()?
        .trim()
        .replace('_', "")
        .parse()
        .ok()
}

fn license_key(i: u64) -> String {
    let mix = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
    format!("LK-{i:010}-{mix:08X}")
}

/// A record whose archive is exactly `PAYLOAD` bytes (as in benches/peers.rs).
fn license(i: u64, note_len: usize) -> License {
    let mut note = format!("tenant licence {i} ");
    note.truncate(note_len);
    while note.len() < note_len {
        note.push('.');
    }
    License {
        id: i,
        seats: (i % 500) as u32,
        key: license_key(i),
        note,
    }
}

fn archived_len(l: &License) -> usize {
    regionkv::rkyv::to_bytes::<regionkv::rkyv::rancor::Error>(l).map_or(0, |b| b.len())
}

fn note_len() -> usize {
    let base = archived_len(&license(0, 32)) - 32;
    PAYLOAD.saturating_sub(base).max(9)
}

fn bench_dir() -> Res<tempfile::TempDir> {
    let base = match std::env::var_os("REGIONKV_BENCH_DATA") {
        Some(p) => PathBuf::from(p),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target"));
            target.join("bench-data")
        }
    };
    std::fs::create_dir_all(&base)?;
    Ok(tempfile::tempdir_in(base)?)
}

fn load_regionkv(dir: &Path, accounts: u64, records: u64, note: usize) -> Res<()> {
    let mut b = Db::builder();
    for r in REGIONS {
        b = b.region(r);
    }
    let db = b.open(dir)?;
    let ids = db.create_accounts(
        (0..accounts)
            .map(|a| NewAccount::new(format!("tenant-{a}"), REGIONS[(a % 3) as usize]))
            .collect::<Vec<_>>(),
    )?;
    let half = records / 2;
    let mut start = 0;
    while start < half {
        let end = (start + BATCH).min(half);
        let mut by_region: BTreeMap<regionkv::RegionId, regionkv::Batch> = BTreeMap::new();
        for i in start..end {
            let id = ids[(i % accounts) as usize];
            let home = db.account(id)?.home();
            let batch = match by_region.entry(home) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let name = db.region_name(home).ok_or("region without a name")?;
                    v.insert(db.batch_in(&name)?)
                }
            };
            batch.write(id)?.insert(&LICENSES, i, &license(i, note))?;
        }
        for (_, batch) in by_region {
            batch.commit()?;
        }
        start = end;
    }
    for i in half..records {
        let mut w = db.write(ids[(i % accounts) as usize])?;
        w.insert(&LICENSES, i, &license(i, note))?;
        w.commit()?;
    }
    let t = std::time::Instant::now();
    db.close()?;
    println!(
        "regionkv close (final checkpoint, clean-close record, compaction): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn peer_key(account: u64, i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&account.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn load_redb(path: &Path, accounts: u64, records: u64, note: usize) -> Res<()> {
    let db = redb::Database::create(path)?;
    let put = |txn: &redb::WriteTransaction, i: u64| -> Res<()> {
        let l = license(i, note);
        let val = regionkv::rkyv::to_bytes::<regionkv::rkyv::rancor::Error>(&l)?;
        let mut ik = NS.as_bytes().to_vec();
        ik.push(0);
        ik.extend_from_slice(l.key.as_bytes());
        let rk = peer_key(i % accounts + 1, i);
        let mut index = txn.open_table(P_UNIQUE)?;
        if index.get(ik.as_slice())?.is_some() {
            return Err(format!("redb: value of record {i} taken").into());
        }
        index.insert(ik.as_slice(), rk.as_slice())?;
        txn.open_table(P_RECORDS)?
            .insert(rk.as_slice(), val.as_slice())?;
        Ok(())
    };
    let write = || -> Res<redb::WriteTransaction> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        Ok(txn)
    };
    let half = records / 2;
    let mut start = 0;
    while start < half {
        let end = (start + BATCH).min(half);
        let txn = write()?;
        for i in start..end {
            put(&txn, i)?;
        }
        txn.commit()?;
        start = end;
    }
    for i in half..records {
        let txn = write()?;
        put(&txn, i)?;
        txn.commit()?;
    }
    Ok(())
}

/// redb's figures for one closed file.
struct FileReport {
    name: String,
    len: u64,
    page: u64,
    allocated: u64,
    stored: u64,
    metadata: u64,
    fragmented: u64,
    compacted_len: u64,
    /// (table, entries, pages, stored, metadata, fragmented)
    tables: Vec<(String, u64, u64, u64, u64, u64)>,
}

fn report_file(name: &str, path: &Path) -> Res<FileReport> {
    let len = std::fs::metadata(path)?.len();
    // Work on a copy: opening a redb file read-write and dropping it writes to it.
    let copy = path.with_extension("stats-copy");
    std::fs::copy(path, &copy)?;
    let mut db = redb::Database::open(&copy)?;
    let tables = {
        let r = db.begin_read()?;
        let mut out = Vec::new();
        for h in r.list_tables()? {
            let t = r.open_untyped_table(h)?;
            let s = t.stats()?;
            out.push((
                redb::TableHandle::name(&t).to_owned(),
                t.len()?,
                s.leaf_pages() + s.branch_pages(),
                s.stored_bytes(),
                s.metadata_bytes(),
                s.fragmented_bytes(),
            ));
        }
        out
    };
    let w = db.begin_write()?;
    let s = w.stats()?;
    w.abort()?;
    db.compact()?;
    drop(db);
    let compacted_len = std::fs::metadata(&copy)?.len();
    std::fs::remove_file(&copy)?;
    Ok(FileReport {
        name: name.to_owned(),
        len,
        page: s.page_size() as u64,
        allocated: s.allocated_pages(),
        stored: s.stored_bytes(),
        metadata: s.metadata_bytes(),
        fragmented: s.fragmented_bytes(),
        compacted_len,
        tables,
    })
}

fn print(reports: &[FileReport], records: u64) {
    let per = |b: u64| b as f64 / records as f64;
    println!(
        "{:<22} {:>11} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "file / table",
        "bytes",
        "B/rec",
        "allocated",
        "free",
        "stored",
        "meta",
        "frag",
        "compacted",
        "B/rec"
    );
    let (mut total, mut total_c) = (0, 0);
    for f in reports {
        let alloc = f.allocated * f.page;
        let free = f.len.saturating_sub(alloc);
        println!(
            "{:<22} {:>11} {:>9.1} {:>11} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11} {:>9.1}",
            f.name,
            f.len,
            per(f.len),
            alloc,
            per(free),
            per(f.stored),
            per(f.metadata),
            per(f.fragmented),
            f.compacted_len,
            per(f.compacted_len)
        );
        total += f.len;
        total_c += f.compacted_len;
        for (t, n, pages, stored, meta, frag) in &f.tables {
            println!(
                "  {:<20} {:>11} {:>9.1} {:>11} {:>9} {:>9.1} {:>9.1} {:>9.1}   entries {n}",
                t,
                pages * f.page,
                per(pages * f.page),
                "",
                "",
                per(*stored),
                per(*meta),
                per(*frag),
            );
        }
    }
    println!(
        "{:<22} {:>11} {:>9.1} {:>53} {:>11} {:>9.1}",
        "total",
        total,
        per(total),
        "",
        total_c,
        per(total_c)
    );
}

fn main() -> Res<()> {
    let accounts = env_u64("REGIONKV_SPACE_ACCOUNTS").unwrap_or(1_000).max(3);
    let records = env_u64("REGIONKV_SPACE_RECORDS")
        .unwrap_or(20_000)
        .max(accounts);
    let note = note_len();
    let tmp = bench_dir()?;
    let kv = tmp.path().join("regionkv");
    let peer = tmp.path().join("peer.redb");
    println!(
        "space: {accounts} accounts, {records} records of {} bytes ({} batched, {} one per write), \
         3 regions; bytes per record (B/rec) after a clean close",
        archived_len(&license(0, note)),
        records / 2,
        records - records / 2
    );
    load_regionkv(&kv, accounts, records, note)?;
    load_redb(&peer, accounts, records, note)?;

    let mut kv_files = vec![report_file(
        "global.redb",
        &regionkv::layout::global_file(&kv),
    )?];
    for r in REGIONS {
        kv_files.push(report_file(
            &format!("regions/{r}.redb"),
            &regionkv::layout::region_file(&kv, r),
        )?);
    }
    println!("\nregionkv");
    print(&kv_files, records);
    let peer_files = vec![report_file("peer.redb", &peer)?];
    println!("\nsingle-file redb");
    print(&peer_files, records);
    let kv_total: u64 = kv_files.iter().map(|f| f.len).sum();
    println!(
        "\ndisk ratio regionkv / redb: {:.2} (after compact on both: {:.2})",
        kv_total as f64 / peer_files[0].len as f64,
        kv_files.iter().map(|f| f.compacted_len).sum::<u64>() as f64
            / peer_files[0].compacted_len as f64
    );
    Ok(())
}
