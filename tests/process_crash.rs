//! Killed processes: a child process commits unique inserts on real files and prints each
//! acknowledged id; the parent SIGKILLs it at a random moment, reopens the store, and
//! checks that every acknowledged id is found by `find_unique` and that every value has
//! at most one owner (I1/I2), across several rounds on the same store.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regionkv::{Db, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const CHILD_ENV: &str = "REGIONKV_PROCESS_CRASH_CHILD";
const REGIONS: [&str; 3] = ["us", "eu", "ap"];

fn open(dir: &str) -> Db {
    Db::builder()
        .region("us")
        .region("eu")
        .region("ap")
        .checkpoint_budget(50, Duration::from_millis(20))
        .open(dir)
        .unwrap()
}

/// The child: writes forever (until killed), printing `ACK <round> <i>` after each
/// successful commit. Values collide across rounds on purpose: round r claims
/// `v-{(7i + 13r) % 4000}` and may meet a value taken earlier.
fn child(dir: &str, round: u32) {
    let db = open(dir);
    let accounts: Vec<_> = REGIONS
        .iter()
        .map(|r| db.account_id(&format!("acct-{r}")).unwrap().unwrap())
        .collect();
    let mut out = std::io::stdout();
    {
        use std::io::Write as _;
        writeln!(out, "READY").unwrap();
        out.flush().unwrap();
    }
    for i in 0u64.. {
        let acct = accounts[(i % 3) as usize];
        let key = format!("r{round}-{i}");
        let value = format!("v-{}", (i * 7 + round as u64 * 13) % 4000);
        let mut w = db.write(acct).unwrap();
        w.insert_unique(
            &T,
            key.as_bytes(),
            value.as_bytes(),
            &[Unique::new("license", &value)],
        )
        .unwrap();
        // A second record without unique values, and a removal now and then.
        w.insert(&T, format!("plain-{i}").as_bytes(), b"p").unwrap();
        if i % 5 == 4 {
            w.remove(&T, format!("plain-{}", i - 2).as_bytes()).unwrap();
        }
        match w.commit() {
            Ok(()) => {
                use std::io::Write as _;
                writeln!(out, "ACK {key} {value}").unwrap();
                out.flush().unwrap();
            }
            Err(regionkv::Error::UniqueViolation { .. }) => {}
            Err(e) if e.is_retryable() => {}
            Err(e) => panic!("child: {e}"),
        }
    }
}

#[test]
fn sigkill_at_random_moments() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, round) = spec.split_once('|').unwrap();
        child(dir, round.parse().unwrap());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    {
        let db = open(&path);
        for r in REGIONS {
            db.create_account(NewAccount::new(format!("acct-{r}"), r))
                .unwrap();
        }
        db.close().unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(String, String)> = Vec::new();
    // Pseudo-random kill delays, bounded so CI stays short.
    let delays_ms = [40u64, 170, 90, 260, 15, 120];
    for (round, delay) in delays_ms.iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "sigkill_at_random_moments",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{path}|{round}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("READY") {
                    let _ = ready_tx.send(());
                }
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let (k, v) = rest.split_once(' ').unwrap();
                    lines.push((k.to_owned(), v.to_owned()));
                }
            }
            lines
        });
        // Odd rounds: the clock starts at spawn, so the kill may land inside the open
        // (and its recovery). Even rounds: it starts once the child is writing, so the
        // kill lands among commits even on a slow, loaded machine.
        if round % 2 == 0 {
            let _ = ready_rx.recv_timeout(Duration::from_secs(60));
        }
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(*delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let got = reader.join().unwrap();
        eprintln!(
            "round {round}: killed after {:?}, {} acknowledged commits",
            start.elapsed(),
            got.len()
        );
        acked.extend(got);

        let db = open(&path);
        let report = db.recovery_report();
        eprintln!("round {round}: recovery {report:?}");
        let mut owners = std::collections::HashMap::new();
        for (key, value) in &acked {
            // The latest acknowledged owner of a value is its owner (values are never
            // released in this workload, so the first claim wins for good).
            owners.entry(value.clone()).or_insert(key.clone());
        }
        for (value, key) in &owners {
            let hit = db
                .find_unique(&T, "license", value)
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {value} (record {key}) lost"));
            assert_eq!(hit.key(), key.as_bytes(), "owner of {value}");
            assert_eq!(&**hit.record(), value.as_bytes());
        }
        // I1: every record that claims a value is that value's owner.
        for row in db.scan_all(&T).unwrap() {
            let row = row.unwrap();
            let key = String::from_utf8(row.key().to_vec()).unwrap();
            if key.starts_with("plain-") {
                continue;
            }
            let value = String::from_utf8(row.record().to_vec()).unwrap();
            let hit = db
                .find_unique(&T, "license", &value)
                .unwrap()
                .expect("claimed value has an owner");
            assert_eq!(hit.key(), row.key(), "{value} owned by two records");
        }
        let audit = db.audit().unwrap();
        assert!(audit.is_clean(), "round {round}: {audit}");
        db.close().unwrap();
    }
    assert!(!acked.is_empty(), "the child never acknowledged a commit");
}
