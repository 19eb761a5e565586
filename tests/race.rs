//! 8 threads, accounts in 3 regions, all contending for the same 1,000 values: exactly
//! one winner per value, losers see UniqueViolation (or a retryable Busy, retried), and a
//! reopen shows the same owners.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const VALUES: u32 = 1000;
const THREADS: usize = 8;

fn open(dir: &std::path::Path) -> Db {
    Db::builder()
        .region("us")
        .region("eu")
        .region("ap")
        .open(dir)
        .unwrap()
}

#[test]
fn eight_threads_one_winner_per_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let regions = ["us", "eu", "ap"];
    let accounts: Vec<AccountId> = (0..THREADS)
        .map(|i| {
            db.create_account(NewAccount::new(format!("acct{i}"), regions[i % 3]))
                .unwrap()
        })
        .collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone();
            let barrier = barrier.clone();
            let acct = accounts[t];
            std::thread::spawn(move || {
                barrier.wait();
                let mut won = Vec::new();
                let mut violations = 0u32;
                let mut busy = 0u32;
                // Each thread walks the values from its own offset so that they collide
                // everywhere, not only at the start.
                for i in 0..VALUES {
                    let v = (i + t as u32 * 125) % VALUES;
                    let value = format!("key-{v}");
                    loop {
                        let mut w = db.write(acct).unwrap();
                        w.insert_unique(
                            &T,
                            &v.to_be_bytes(),
                            b"x",
                            &[Unique::new("license", &value)],
                        )
                        .unwrap();
                        match w.commit() {
                            Ok(()) => {
                                won.push(v);
                                break;
                            }
                            Err(Error::UniqueViolation { namespace }) => {
                                assert_eq!(namespace, "license");
                                violations += 1;
                                break;
                            }
                            Err(e) if e.is_retryable() => {
                                busy += 1;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("thread {t}: unexpected {e}"),
                        }
                    }
                }
                (acct, won, violations, busy)
            })
        })
        .collect();
    let mut winner: HashMap<u32, AccountId> = HashMap::new();
    let mut total_busy = 0;
    for h in handles {
        let (acct, won, violations, busy) = h.join().unwrap();
        total_busy += busy;
        assert_eq!(won.len() as u32 + violations, VALUES);
        for v in won {
            assert!(winner.insert(v, acct).is_none(), "value {v} won twice");
        }
    }
    assert_eq!(
        winner.len() as u32,
        VALUES,
        "every value has exactly one winner"
    );
    eprintln!("busy retries: {total_busy}");
    let check = |db: &Db| {
        for (v, acct) in &winner {
            let hit = db
                .find_unique(&T, "license", format!("key-{v}"))
                .unwrap()
                .unwrap_or_else(|| panic!("value {v} has no owner"));
            assert_eq!(hit.account(), *acct, "value {v}");
            assert_eq!(hit.key(), v.to_be_bytes());
        }
    };
    check(&db);
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
    db.close().unwrap();
    let db = open(dir.path());
    check(&db);
    assert!(db.audit().unwrap().is_clean());
}
