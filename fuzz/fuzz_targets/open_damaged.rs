//! `open_damaged`: a valid small store whose partition files are then damaged by the
//! fuzzer's bytes (byte flips, overwritten bytes, truncation, zeroed or copied 4 KiB pages)
//! is opened and read in every way the API offers, then written to, closed and reopened.
//!
//! Every call must return `Ok` or `Err`; a panic that reaches the caller, or an
//! AddressSanitizer report, is a finding.
//!
//! Two base images: a store closed cleanly, and one whose last unique writes were cut by a
//! crash before any checkpoint, so that open has applied markers to replay (recovery runs
//! on damaged input too). Three ways to open, chosen by the input:
//! - verified (`verify_on_open(true)`): damage anywhere in the files; redb must not panic
//!   at all (libFuzzer's panic hook aborts even on a panic regionkv would catch);
//! - unverified (the default, `verify_on_open(false)`): damage anywhere; a cleanly closed
//!   file's pages are trusted, so redb meets the damage while the store runs and may panic:
//!   regionkv contains those panics (they become `Error::Corrupt` and fence the partition),
//!   and only a panic that escapes to this target is a finding;
//! - unverified, with the damage aimed at the bytes of stored values only (plus
//!   truncation): the value envelope's CRC is the defence.
//!
//! In every mode each record read back without an error must be exactly the one written
//! under that account, table and key ("errors or correct data"); `REGIONKV_FUZZ_LAX=1`
//! turns that check off.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Once, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use regionkv::rkyv;
use regionkv::testing::SimStorage;
use regionkv::{AccountId, Db, NewAccount, Raw, Table, Unique};

const REGIONS: [&str; 3] = ["us", "eu", "ap"];
const DIR: &str = "/damaged";
const PAGE: usize = 4096;
const KEYS: u8 = 6;
const NAMESPACES: [&str; 2] = ["email", "slug"];

#[derive(Debug, PartialEq, rkyv::Archive, rkyv::Serialize, regionkv::Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct Doc {
    owner: String,
    body: Vec<u8>,
    n: u64,
    tag: Option<u32>,
    labels: Vec<String>,
}

const RAW: Table<Raw> = Table::new("raw");
const DOCS: Table<Doc> = Table::new("docs");

/// (name, home, allowed)
const ACCOUNTS: [(&str, usize, usize); 3] = [("acme", 0, 1), ("bolt", 1, 2), ("cove", 2, 0)];

fn key(k: u8) -> Vec<u8> {
    format!("k{k}").into_bytes()
}
/// The value of a raw row names its account, region and key, so that a row read back
/// under another key or account is recognisable.
fn raw_value(acct: &str, region: &str, k: u8) -> Vec<u8> {
    let mut v = format!("{acct}/{region}/k{k}/").into_bytes();
    v.resize(v.len() + 30 + 200 * k as usize, b'a' + k);
    v
}
fn doc(acct: &str, region: &str, k: u8) -> Doc {
    Doc {
        owner: format!("{acct}/{region}/k{k}"),
        body: vec![k; 50 * k as usize],
        n: u64::from(k) * 1_000_003,
        tag: k.is_multiple_of(2).then_some(u32::from(k)),
        labels: (0..k).map(|i| format!("label{i}")).collect(),
    }
}
fn uvalue(acct: &str, k: u8) -> String {
    format!("{acct}-{k}@example.com")
}

fn open(sim: &SimStorage, verify: bool) -> regionkv::Result<Db> {
    let mut b = Db::builder();
    for r in REGIONS {
        b = b.region(r);
    }
    b.storage(sim.clone())
        .digest_key([9; 32])
        .cache_size(4 << 20)
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
        .verify_on_open(verify)
        .open(DIR)
}

type Files = Vec<(PathBuf, Vec<u8>)>;

fn snapshot(sim: &SimStorage) -> Files {
    sim.paths()
        .into_iter()
        .map(|p| {
            let b = sim.live_bytes(&p).expect("listed file");
            (p, b)
        })
        .collect()
}

/// Writes the deterministic content: in every allowed region of every account, raw rows
/// and typed rows k0..k5; even keys own a unique value; k5 is written then removed.
fn populate(db: &Db, crash_tail: bool) {
    for (name, home, allow) in ACCOUNTS {
        db.create_account(NewAccount::new(name, REGIONS[home]).allow(REGIONS[allow]))
            .expect("create account");
    }
    for (name, home, allow) in ACCOUNTS {
        let id = db.account_id(name).expect("account_id").expect("exists");
        for region in [REGIONS[home], REGIONS[allow]] {
            for k in 0..KEYS {
                let mut w = db.write_in(id, region).expect("write_in");
                if k % 2 == 0 {
                    let u = uvalue(name, k);
                    let ns = NAMESPACES[(k as usize / 2) % 2];
                    // A value is unique across regions: only the home region claims it.
                    if region == REGIONS[home] {
                        w.insert_unique(
                            &RAW,
                            &key(k),
                            &raw_value(name, region, k),
                            &[Unique::new(ns, &u)],
                        )
                        .expect("insert_unique");
                    } else {
                        w.insert(&RAW, &key(k), &raw_value(name, region, k))
                            .expect("insert");
                    }
                } else {
                    w.insert(&RAW, &key(k), &raw_value(name, region, k))
                        .expect("insert");
                }
                w.insert(&DOCS, &key(k), &doc(name, region, k))
                    .expect("insert doc");
                w.commit().expect("commit");
            }
            let mut w = db.write_in(id, region).expect("write_in");
            w.remove(&RAW, &key(KEYS - 1)).expect("remove");
            w.commit().expect("commit remove");
        }
        if !crash_tail {
            db.checkpoint().expect("checkpoint");
        }
    }
}

/// A base image: the files, and in each file the byte ranges that hold a stored value
/// (envelope + payload), found by searching for the exact bytes `encode_value` produces.
struct Base {
    files: Files,
    values: Vec<Vec<(usize, usize)>>,
}

fn value_spans(files: &Files) -> Vec<Vec<(usize, usize)>> {
    let mut needles: Vec<Vec<u8>> = Vec::new();
    // Accounts are created in ACCOUNTS order on a fresh store: ids 1, 2, 3. Stored values
    // are bound to their row (the CRC covers table and key), so each needle names its row.
    for (i, (name, home, allow)) in ACCOUNTS.into_iter().enumerate() {
        let id = AccountId::from_raw(i as u64 + 1);
        for region in [REGIONS[home], REGIONS[allow]] {
            for k in 0..KEYS {
                let rk = key(k);
                needles.push(
                    regionkv::encode_value(&RAW, id, &rk, &raw_value(name, region, k))
                        .expect("encode"),
                );
                needles.push(
                    regionkv::encode_value(&DOCS, id, &rk, &doc(name, region, k)).expect("encode"),
                );
            }
        }
    }
    // An envelope starts with [version, codec, crc32 LE]: index the values by those 6
    // bytes, then one pass over each file.
    let mut by_head: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
    for n in &needles {
        by_head.entry(&n[..6]).or_default().push(n);
    }
    files
        .iter()
        .map(|(_, bytes)| {
            let mut spans = Vec::new();
            let mut i = 0;
            while i + 6 <= bytes.len() {
                let found = by_head
                    .get(&bytes[i..i + 6])
                    .and_then(|c| c.iter().find(|n| bytes[i..].starts_with(n)));
                match found {
                    Some(n) => {
                        spans.push((i, n.len()));
                        i += n.len();
                    }
                    None => i += 1,
                }
            }
            spans
        })
        .collect()
}

/// The two base images, built once per process.
fn bases() -> &'static [Base; 2] {
    static BASES: OnceLock<[Base; 2]> = OnceLock::new();
    BASES.get_or_init(|| {
        let clean = {
            let sim = SimStorage::new();
            let db = open(&sim, true).expect("create store");
            populate(&db, false);
            db.close().expect("close");
            snapshot(&sim)
        };
        let crashed = {
            let sim = SimStorage::new();
            let db = open(&sim, true).expect("create store");
            populate(&db, true);
            sim.crash();
            drop(db);
            snapshot(&sim)
        };
        [clean, crashed].map(|files| {
            let values = value_spans(&files);
            for ((path, _), v) in files.iter().zip(&values) {
                // Every region file holds values; the global file holds none.
                let is_region = path.starts_with(format!("{DIR}/regions"));
                assert_eq!(
                    is_region,
                    !v.is_empty(),
                    "value spans of {}: {}",
                    path.display(),
                    v.len()
                );
            }
            Base { files, values }
        })
    })
}

#[derive(Arbitrary, Debug)]
enum Mutation {
    Flip {
        file: u8,
        offset: u32,
        mask: u8,
    },
    Set {
        file: u8,
        offset: u32,
        bytes: [u8; 4],
    },
    Truncate {
        file: u8,
        len: u32,
    },
    ZeroPage {
        file: u8,
        page: u16,
    },
    CopyPage {
        file: u8,
        from: u16,
        to: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Bit 0: the crashed base image; bit 1: open without the page check
    /// (`verify_on_open(false)`); bit 2 (with bit 1): damage to stored values only.
    flags: u8,
    mutations: Vec<Mutation>,
}

const MAX_MUTATIONS: usize = 16;

/// Structural damage: anywhere in the files, 4 KiB pages included.
fn apply_structural(files: &mut Files, m: &Mutation) {
    let count = files.len();
    let pick = |file: u8| file as usize % count;
    match *m {
        Mutation::Flip { file, offset, mask } => {
            let f = &mut files[pick(file)].1;
            if !f.is_empty() {
                let i = offset as usize % f.len();
                f[i] ^= mask.max(1);
            }
        }
        Mutation::Set {
            file,
            offset,
            bytes,
        } => {
            let f = &mut files[pick(file)].1;
            if !f.is_empty() {
                let i = offset as usize % f.len();
                let n = bytes.len().min(f.len() - i);
                f[i..i + n].copy_from_slice(&bytes[..n]);
            }
        }
        Mutation::Truncate { file, len } => {
            let f = &mut files[pick(file)].1;
            let len = len as usize % (f.len() + 1);
            f.truncate(len);
        }
        Mutation::ZeroPage { file, page } => {
            let f = &mut files[pick(file)].1;
            let pages = f.len().div_ceil(PAGE);
            if pages > 0 {
                let p = page as usize % pages;
                let end = ((p + 1) * PAGE).min(f.len());
                f[p * PAGE..end].fill(0);
            }
        }
        Mutation::CopyPage { file, from, to } => {
            let f = &mut files[pick(file)].1;
            let pages = f.len() / PAGE;
            if pages > 0 {
                let (from, to) = (from as usize % pages, to as usize % pages);
                let src = f[from * PAGE..(from + 1) * PAGE].to_vec();
                f[to * PAGE..(to + 1) * PAGE].copy_from_slice(&src);
            }
        }
    }
}

/// Value damage: the same mutations aimed at the bytes of stored values only (flips and
/// overwrites inside a value, a value zeroed, one value copied over another); truncation
/// still cuts the whole file.
fn apply_values(files: &mut Files, spans: &[Vec<(usize, usize)>], m: &Mutation) {
    if let Mutation::Truncate { .. } = m {
        return apply_structural(files, m);
    }
    // Only files that hold values (the region files), and only values a truncation left.
    let with_values: Vec<usize> = (0..files.len()).filter(|&i| !spans[i].is_empty()).collect();
    let (Mutation::Flip { file, .. }
    | Mutation::Set { file, .. }
    | Mutation::ZeroPage { file, .. }
    | Mutation::CopyPage { file, .. }
    | Mutation::Truncate { file, .. }) = *m;
    let fi = with_values[file as usize % with_values.len()];
    let f = &mut files[fi].1;
    let live: Vec<(usize, usize)> = spans[fi]
        .iter()
        .copied()
        .filter(|&(s, l)| s + l <= f.len())
        .collect();
    if live.is_empty() {
        return;
    }
    // Byte `offset` of the concatenation of the live values, as (file offset, value end).
    let locate = |offset: u32| -> (usize, usize) {
        let total: usize = live.iter().map(|s| s.1).sum();
        let mut i = offset as usize % total;
        for &(start, len) in &live {
            if i < len {
                return (start + i, start + len);
            }
            i -= len;
        }
        unreachable!("offset reduced modulo the total length")
    };
    match *m {
        Mutation::Flip { offset, mask, .. } => {
            let (at, _) = locate(offset);
            f[at] ^= mask.max(1);
        }
        Mutation::Set { offset, bytes, .. } => {
            let (at, end) = locate(offset);
            let n = bytes.len().min(end - at);
            f[at..at + n].copy_from_slice(&bytes[..n]);
        }
        Mutation::ZeroPage { page, .. } => {
            let (start, len) = live[page as usize % live.len()];
            f[start..start + len].fill(0);
        }
        Mutation::CopyPage { from, to, .. } => {
            let (src, slen) = live[from as usize % live.len()];
            let (dst, dlen) = live[to as usize % live.len()];
            let len = slen.min(dlen);
            let bytes = f[src..src + len].to_vec();
            f[dst..dst + len].copy_from_slice(&bytes);
        }
        Mutation::Truncate { .. } => {}
    }
}

/// Whether this input checks that data read without an error is correct.
static STRICT: AtomicBool = AtomicBool::new(true);

fn strict() -> bool {
    STRICT.load(Ordering::Relaxed)
}

fn unverified_env() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("REGIONKV_FUZZ_UNVERIFIED").is_some_and(|v| v == "1"))
}

fn lax_env() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("REGIONKV_FUZZ_LAX").is_some_and(|v| v == "1"))
}

/// Whether this input opens without the page check: regionkv then contains redb's panics,
/// so the panic hook must not abort on them.
static CONTAINED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The last panic of this thread while [`CONTAINED`] (message and location).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Puts a hook in front of libFuzzer's (which prints and aborts): while [`CONTAINED`], a
/// panic is only recorded, and [`run_contained`] reports the one that reaches it.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINED.load(Ordering::Relaxed) {
                // REGIONKV_FUZZ_BACKTRACE=1: with where it happened (slow: every contained
                // panic captures one).
                let mut msg = info.to_string();
                if std::env::var_os("REGIONKV_FUZZ_BACKTRACE").is_some_and(|v| v == "1") {
                    msg.push_str(&format!("\n{}", std::backtrace::Backtrace::force_capture()));
                }
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
            } else {
                abort(info);
            }
        }));
    });
}

/// Runs `f`; a panic that comes out of it escaped regionkv's containment: printed, then
/// the process aborts (a finding).
fn run_contained(f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        let last = LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_default();
        eprintln!("a panic escaped regionkv (verify_on_open(false)): {last}");
        std::process::abort();
    }
}

/// A record read without error must be the one written there (strict mode only).
fn expect_same(what: &str, got: &[u8], want: &[u8]) {
    if strict() && got != want {
        panic!(
            "WRONG DATA without an error: {what}: got {:?}, want {:?}",
            String::from_utf8_lossy(&got[..got.len().min(40)]),
            String::from_utf8_lossy(&want[..want.len().min(40)])
        );
    }
}

fn touch_doc(d: &ArchivedDoc) -> u64 {
    let mut acc = d.owner.len() as u64 + d.body.len() as u64 + d.n.to_native();
    acc += d.body.iter().map(|&b| u64::from(b)).sum::<u64>();
    acc += d.tag.as_ref().map_or(1, |t| u64::from(t.to_native()));
    for l in d.labels.iter() {
        acc += l.as_str().len() as u64;
    }
    acc
}

/// Reads everything the API can reach. Errors are fine; panics are findings.
fn read_all(db: &Db, after_write: bool) {
    let _ = db.regions();
    let _ = db.stats();
    let _ = db.recovery_report();
    for (name, _, _) in ACCOUNTS {
        let Ok(Some(id)) = db.account_id(name) else {
            continue;
        };
        read_account(db, id, name, after_write);
    }
    // Ids that may or may not exist in a damaged catalog.
    for raw in [0, 1, 2, 3, 4, u64::MAX] {
        if let Ok(r) = db.read(AccountId::from_raw(raw)) {
            for region in REGIONS {
                let _ = r.get_in(region, &RAW, b"k0").map(|g| g.map(|v| v.len()));
            }
        }
    }
    // `take` counts errors too: a scan that keeps failing still ends.
    for row in db.scan_all(&RAW).into_iter().flatten().take(1000).flatten() {
        std::hint::black_box((
            row.region(),
            row.account(),
            row.key().len(),
            row.record().len(),
        ));
    }
    // `take` counts errors too: a scan that keeps failing still ends.
    for row in db
        .scan_all(&DOCS)
        .into_iter()
        .flatten()
        .take(1000)
        .flatten()
    {
        std::hint::black_box(touch_doc(row.record()));
    }
    for (name, _, _) in ACCOUNTS {
        for k in (0..KEYS).step_by(2) {
            let u = uvalue(name, k);
            for ns in NAMESPACES {
                let _ = db.is_taken(ns, &u);
                if let Ok(Some(hit)) = db.find_unique(&RAW, ns, &u) {
                    std::hint::black_box((
                        hit.account(),
                        hit.region(),
                        hit.key().len(),
                        hit.record().len(),
                    ));
                }
                let _ = db
                    .find_unique(&DOCS, ns, &u)
                    .map(|h| h.map(|h| touch_doc(h.record())));
            }
        }
    }
    if let Ok(report) = db.audit() {
        std::hint::black_box(report.findings().len());
    }
}

fn read_account(db: &Db, id: AccountId, name: &str, after_write: bool) {
    let Ok(acc) = db.account(id) else { return };
    std::hint::black_box((acc.name().len(), acc.home(), acc.allowed().len()));
    let Ok(r) = db.read(id) else { return };
    for region in REGIONS {
        // `write_some` changed some of acme's rows in its home region.
        let changed = after_write && name == ACCOUNTS[0].0 && region == REGIONS[ACCOUNTS[0].1];
        for k in 0..=KEYS {
            if changed {
                let _ = r.get_in(region, &RAW, &key(k)).map(|v| v.map(|v| v.len()));
                let _ = r
                    .get_in(region, &DOCS, &key(k))
                    .map(|d| d.map(|d| touch_doc(&d)));
                continue;
            }
            if let Ok(Some(v)) = r.get_in(region, &RAW, &key(k)) {
                expect_same(
                    &format!("{name}/{region}/raw/k{k}"),
                    &v,
                    &raw_value(name, region, k),
                );
            }
            if let Ok(Some(d)) = r.get_in(region, &DOCS, &key(k)) {
                std::hint::black_box(touch_doc(&d));
                expect_same(
                    &format!("{name}/{region}/docs/k{k}"),
                    d.owner.as_bytes(),
                    format!("{name}/{region}/k{k}").as_bytes(),
                );
            }
        }
    }
    let _ = r.get(&RAW, b"");
    // `take` counts errors too: a scan that keeps failing still ends.
    for row in r.scan(&RAW).into_iter().flatten().take(1000).flatten() {
        if strict() && row.account() != id {
            panic!(
                "WRONG DATA: scan of account {id} yielded a row of {}",
                row.account()
            );
        }
        std::hint::black_box(row.record().len());
    }
    // `take` counts errors too: a scan that keeps failing still ends.
    for row in r
        .scan_prefix(&DOCS, b"k")
        .into_iter()
        .flatten()
        .take(1000)
        .flatten()
    {
        std::hint::black_box(touch_doc(row.record()));
    }
}

/// A write to the damaged store, a checkpoint and a page check of every partition: errors
/// are fine, panics are not.
fn write_some(db: &Db) {
    let Ok(Some(id)) = db.account_id(ACCOUNTS[0].0) else {
        return;
    };
    if let Ok(mut w) = db.write(id) {
        let _ = w.insert_unique(
            &RAW,
            b"new",
            b"fresh",
            &[Unique::new("email", "fresh@example.com")],
        );
        let _ = w.insert_unique(&RAW, &key(0), b"changed", &[]);
        let _ = w.remove(&RAW, &key(1));
        let _ = w.insert(&DOCS, &key(2), &doc("acme", "us", 9));
        let _ = w.commit();
    }
    let _ = db.create_account(NewAccount::new("dawn", REGIONS[1]));
    let _ = db.checkpoint();
    if let Ok(report) = db.verify() {
        std::hint::black_box((report.is_clean(), report.damaged.len()));
    }
}

fuzz_target!(|input: Input| {
    install_hook();
    let crashed = input.flags & 1 == 1;
    // REGIONKV_FUZZ_UNVERIFIED=1: every input opens unverified (to replay the verified
    // mode's inputs, e.g. regressions/, against the containment).
    let unverified = input.flags & 2 == 2 || unverified_env();
    let values_only = unverified && input.flags & 4 == 4;
    let base = &bases()[crashed as usize];
    STRICT.store(!lax_env(), Ordering::Relaxed);
    if std::env::var_os("REGIONKV_FUZZ_TRACE").is_some_and(|v| v == "1") {
        for ((p, bytes), v) in base.files.iter().zip(&base.values) {
            eprintln!(
                "{}: {} bytes, {} stored values",
                p.display(),
                bytes.len(),
                v.len()
            );
        }
        eprintln!(
            "crashed base: {crashed}, unverified: {unverified}, values only: {values_only}, \
             strict: {}; {input:?}",
            strict()
        );
    }
    let mut files = base.files.clone();
    for m in input.mutations.iter().take(MAX_MUTATIONS) {
        if values_only {
            apply_values(&mut files, &base.values, m);
        } else {
            apply_structural(&mut files, m);
        }
    }
    let sim = SimStorage::new();
    for (p, bytes) in files {
        sim.set_bytes(p, bytes);
    }
    // REGIONKV_FUZZ_NO_VERIFY=1 opens the verified mode's inputs without the page check
    // too (with the abort-on-panic hook: to watch redb's own panics on damaged pages).
    let verify =
        !unverified && std::env::var_os("REGIONKV_FUZZ_NO_VERIFY").is_none_or(|v| v != "1");
    CONTAINED.store(unverified, Ordering::Relaxed);
    let session = || {
        let Ok(db) = open(&sim, verify) else { return };
        read_all(&db, false);
        write_some(&db);
        let _ = db.close();
        // The store as the engine left it after writing to damaged files: open and read
        // again.
        let Ok(db) = open(&sim, verify) else { return };
        read_all(&db, true);
        let _ = db.close();
    };
    if unverified {
        run_contained(session);
    } else {
        session();
    }
});
