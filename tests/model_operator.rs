//! Model test of the operator paths: the protocol workload of `model.rs` interleaved with
//! regions disabled at open (after a clean close and after a power loss) and at run time,
//! regions enabled again, a fourth region added at open, and opens interrupted by a fault
//! at any storage operation. After every step the store is compared with an in-memory
//! model (rows, owners, errors); while a region is disabled, a value it owns must stay
//! taken and never get a second owner, and after every reopen with every region enabled
//! the audit (I1, I2, counters) must be clean.
//!
//! A refused open (the default region disabled, a region neither listed nor disabled)
//! must leave every file byte for byte as it was, and an open interrupted by a crash must
//! leave a store that opens with the previous configuration or completes the new one.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::files::{diff_files, sim_snapshot};
use common::*;
use proptest::prelude::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error};

const DIR: &str = "/opmodel";
/// A region no account uses, added at open by some cases (then listed or disabled).
const EXTRA: &str = "sa";
/// Where `ap` lives (`Builder::region_at`).
const AP_PATH: &str = "/opmodel-volume/ap.redb";

#[derive(Debug, Clone)]
enum Step {
    Create(usize),
    Op(Op),
    /// Close cleanly, reopen with these regions (indices into REGIONS + EXTRA) disabled.
    Reopen {
        disable: u8,
        extra: bool,
    },
    /// Power loss, reopen with these regions disabled.
    CrashReopen {
        disable: u8,
        extra: bool,
    },
    /// `Db::disable_region` at run time.
    DisableNow(usize),
    /// `Db::disable_region` of eu or ap while writer threads commit there, a scanner runs
    /// `scan_all` and a reader runs `find_unique`: writes acknowledged before the disable
    /// returned must stay, none may be acknowledged after, and nothing may deadlock.
    DisableUnderLoad(usize),
    /// Close cleanly, then open with a new configuration under a fault at storage
    /// operation `n`, crash, and check that the old or the new configuration opens.
    FaultyReopen {
        n: u8,
        disable: u8,
        extra: bool,
    },
    /// An I/O fault in the middle of an op, then a power loss (`true`) or a plain restart
    /// with the disk back (`false`: what a failed sync left in the files stays there).
    FaultThenCrash(u8, Op, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0usize..3).prop_map(Step::Create),
        14 => op_strategy(4).prop_map(Step::Op),
        2 => (0u8..64, any::<bool>()).prop_map(|(disable, extra)| Step::Reopen { disable, extra }),
        2 => (0u8..64, any::<bool>()).prop_map(|(disable, extra)| Step::CrashReopen { disable, extra }),
        1 => (0usize..4).prop_map(Step::DisableNow),
        1 => (1usize..3).prop_map(Step::DisableUnderLoad),
        1 => (any::<u8>(), 0u8..64, any::<bool>())
            .prop_map(|(n, disable, extra)| Step::FaultyReopen { n, disable, extra }),
        2 => (0u8..40, op_strategy(4), any::<bool>()).prop_map(|(n, op, power)| Step::FaultThenCrash(n, op, power)),
    ]
}

/// A configuration: which of us/eu/ap/sa are disabled, whether sa exists, and the
/// default region it names (`None`: keep the store's).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    disabled: BTreeSet<&'static str>,
    extra: bool,
    default: Option<&'static str>,
}

fn all_regions() -> [&'static str; 4] {
    [REGIONS[0], REGIONS[1], REGIONS[2], EXTRA]
}

impl Config {
    /// `bits` 0-3 pick regions to disable among us, eu, ap, sa; bits 4-5 the default to
    /// name (us, eu, ap, or none). The default in force (named, else `stored`) is never
    /// disabled: that is the refused case, tried separately.
    fn from_bits(bits: u8, extra: bool, had_extra: bool, stored: &'static str) -> Config {
        let extra = extra || had_extra;
        let default = match (bits >> 4) & 3 {
            3 => None,
            d => Some(REGIONS[d as usize]),
        };
        let mut disabled = BTreeSet::new();
        for (i, r) in all_regions().into_iter().enumerate() {
            if bits & (1 << i) != 0 && (r != EXTRA || had_extra) {
                disabled.insert(r);
            }
        }
        disabled.remove(default.unwrap_or(stored));
        Config {
            disabled,
            extra,
            default,
        }
    }

    /// The default region after an open with this configuration.
    fn effective_default(&self, stored: &'static str) -> &'static str {
        self.default.unwrap_or(stored)
    }

    fn builder(&self, sim: &SimStorage) -> regionkv::Builder {
        let mut b = Db::builder()
            .storage(sim.clone())
            .checkpoint_budget(4, Duration::from_secs(3600));
        if let Some(d) = self.default {
            b = b.default_region(d);
        }
        for r in all_regions() {
            if r == EXTRA && !self.extra {
                continue;
            }
            b = if self.disabled.contains(r) {
                b.disable_region(r)
            } else if r == REGIONS[2] {
                // ap lives on its own volume: a region_at placement, also when disabled.
                b.region_at(r, AP_PATH)
            } else {
                b.region(r)
            };
        }
        b
    }
}

struct State {
    sim: SimStorage,
    db: Db,
    model: Model,
    ids: Vec<Option<AccountId>>,
    config: Config,
    /// The store's default region.
    default: &'static str,
    /// Disabled regions that were disabled at an open after a power loss: they may hold
    /// unsettled claims until they are enabled again.
    unsettled: BTreeSet<&'static str>,
}

impl State {
    fn catalog(&self) -> Catalog {
        Catalog {
            disabled: self.config.disabled.iter().copied().collect(),
            unsettled: !self.unsettled.is_empty(),
        }
    }

    fn check(&self, when: &str) -> Result<(), TestCaseError> {
        check_catalog(&self.db, &self.ids, &self.model, &self.catalog())
            .map_err(|e| TestCaseError::fail(format!("{when}: {e}")))
    }

    fn audit_if_all_enabled(&self) -> Result<(), TestCaseError> {
        if self.config.disabled.is_empty() {
            let a = self
                .db
                .audit()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(a.is_clean(), "audit: {}", a);
        }
        Ok(())
    }

    /// Opens with `next`; the old handle must be gone (closed or crashed) already.
    fn open(&mut self, next: Config, after_crash: bool) -> Result<(), TestCaseError> {
        self.db = next
            .builder(&self.sim)
            .open(DIR)
            .map_err(|e| TestCaseError::fail(format!("open {next:?}: {e}")))?;
        for r in all_regions() {
            if !next.disabled.contains(r) {
                self.unsettled.remove(r);
            } else if after_crash && !self.config.disabled.contains(r) {
                self.unsettled.insert(r);
            }
        }
        self.default = next.effective_default(self.default);
        let named = self.db.region_name(self.db.default_region());
        prop_assert_eq!(named.as_deref(), Some(self.default));
        self.config = next;
        self.audit_if_all_enabled()
    }

    /// A refused open must change no byte, and the store must still open as it was.
    fn refused_open_changes_nothing(&mut self, b: regionkv::Builder) -> Result<(), TestCaseError> {
        let before = sim_snapshot(&self.sim);
        let r = b.open(DIR);
        prop_assert!(r.is_err(), "open must be refused");
        let diff = diff_files(&before, &sim_snapshot(&self.sim));
        prop_assert!(
            diff.is_empty(),
            "a refused open changed files: {:?}: {:?}",
            r.err(),
            diff
        );
        Ok(())
    }

    fn close(&mut self) -> Result<(), TestCaseError> {
        let db = std::mem::replace(&mut self.db, placeholder());
        db.close()
            .map_err(|e| TestCaseError::fail(format!("close: {e}")))
    }

    fn run_op(&mut self, i: usize, op: &Op) -> Result<(), TestCaseError> {
        let r = execute_some(&self.db, &self.ids, op).expect("runnable");
        if let Some(region) = op_region(op)
            && self.config.disabled.contains(region)
        {
            prop_assert!(
                matches!(r, Err(Error::RegionDisabled(_))),
                "step {i} {op:?} in disabled {region}: {r:?}"
            );
            return Ok(());
        }
        self.model
            .explain(op, &r)
            .map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?;
        let mut next = self.model.clone();
        let want = next.apply(op);
        let unsettled = !self.unsettled.is_empty();
        match (&r, want) {
            (Ok(()), Outcome::Ok) => self.model = next,
            (Err(Error::UniqueViolation { .. }), Outcome::Violation) => {}
            // Write B of the stale update committed, A did not.
            (Err(Error::Conflict { .. }), Outcome::Conflict) => self.model = next,
            (Err(Error::InvalidArgument(_)), Outcome::Invalid) => {}
            (Err(Error::RegionUnsettled(_)) | Err(Error::Busy(_)), _) if unsettled => {
                // A stale update's B claims nothing new: it committed before A was refused.
                if op.is_stale() {
                    self.model = next;
                }
            }
            (Err(Error::UniqueViolation { .. }), Outcome::Ok) => {
                return Err(TestCaseError::fail(format!(
                    "step {i} {op:?}: violation, model says free"
                )));
            }
            _ => {
                return Err(TestCaseError::fail(format!(
                    "step {i} {op:?}: engine {r:?}, model {want:?} (catalog {:?})",
                    self.catalog()
                )));
            }
        }
        Ok(())
    }
}

fn placeholder() -> Db {
    // A throwaway store on its own disk, so that `State` always holds a Db.
    Db::builder()
        .region("us")
        .storage(SimStorage::new())
        .open("/placeholder")
        .expect("placeholder")
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let sim = SimStorage::new();
    let config = Config {
        disabled: BTreeSet::new(),
        extra: false,
        default: None,
    };
    let db = config.builder(&sim).open(DIR).expect("open");
    let mut s = State {
        sim,
        db,
        model: Model::default(),
        ids: vec![None; 3],
        config,
        default: REGIONS[0],
        unsettled: BTreeSet::new(),
    };
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Create(a) => {
                let home = ACCOUNTS[a].1;
                let r = s.db.create_account(new_account(a));
                match (s.ids[a], &r) {
                    (None, Ok(id)) => s.ids[a] = Some(*id),
                    (_, Err(Error::RegionDisabled(_))) if s.config.disabled.contains(home) => {}
                    (Some(_), Err(Error::AccountNameTaken(_))) => {}
                    _ => return Err(TestCaseError::fail(format!("step {i} create {a}: {r:?}"))),
                }
            }
            Step::Op(op) => {
                if !runnable(&s.ids, &op) {
                    continue;
                }
                s.run_op(i, &op)?;
            }
            Step::Reopen { disable, extra } => {
                let next = Config::from_bits(disable, extra, s.config.extra, s.default);
                s.close()?;
                // The default region disabled: refused, nothing changed.
                let mut bad = next.clone();
                bad.disabled.insert(next.effective_default(s.default));
                s.refused_open_changes_nothing(bad.builder(&s.sim))?;
                // Two regions on one file: refused, nothing changed.
                let dup = next.builder(&s.sim).region_at("dup", AP_PATH);
                s.refused_open_changes_nothing(dup)?;
                // A region the store has enabled, neither listed nor disabled: refused too.
                let enabled_other = all_regions()[1..]
                    .iter()
                    .any(|r| (*r != EXTRA || s.config.extra) && !s.config.disabled.contains(r));
                if enabled_other {
                    let b = Db::builder().storage(s.sim.clone()).region(REGIONS[0]);
                    s.refused_open_changes_nothing(b)?;
                }
                s.open(next, false)?;
            }
            Step::CrashReopen { disable, extra } => {
                let next = Config::from_bits(disable, extra, s.config.extra, s.default);
                s.sim.crash();
                drop(std::mem::replace(&mut s.db, placeholder()));
                s.open(next, true)?;
            }
            Step::DisableNow(r) => {
                let name = all_regions()[r];
                let known = name != EXTRA || s.config.extra;
                let res = s.db.disable_region(name);
                match res {
                    Err(Error::Config(_)) if name == s.default => {}
                    Err(Error::RegionUnknown(_)) if !known => {}
                    Ok(()) if name != s.default && known => {
                        s.config.disabled.insert(name);
                    }
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "step {i} disable {name}: {other:?}"
                        )));
                    }
                }
            }
            Step::DisableUnderLoad(r) => {
                let name = REGIONS[r];
                if s.config.disabled.contains(name) || name == s.default {
                    continue;
                }
                disable_under_load(&mut s, i, name)?;
            }
            Step::FaultyReopen { n, disable, extra } => {
                let next = Config::from_bits(disable, extra, s.config.extra, s.default);
                let prev = Config {
                    default: Some(s.default),
                    ..s.config.clone()
                };
                s.close()?;
                s.sim.fail_after(n as u64, FaultOn::Any);
                let r = next.builder(&s.sim).open(DIR);
                let completed = r.is_ok();
                s.sim.crash();
                drop(r);
                // The previous configuration opens, or the new one (it may have been
                // completed, or it completes now).
                match prev.builder(&s.sim).open(DIR) {
                    Ok(db) if !completed || next == prev => {
                        s.db = db;
                        // Reopened after a power loss with the same regions disabled.
                        s.open_after_replace(prev, true)?;
                    }
                    Ok(db) => {
                        // The new configuration was completed, yet the previous one opens:
                        // only possible where it lists the same regions (re-enabling a
                        // disabled one is always allowed).
                        s.db = db;
                        s.open_after_replace(prev, true)?;
                    }
                    Err(_) => {
                        let db = next.builder(&s.sim).open(DIR).map_err(|e| {
                            TestCaseError::fail(format!(
                                "step {i}: neither the previous nor the new configuration opens \
                                 after a crash at op {n}: {e}"
                            ))
                        })?;
                        s.db = db;
                        s.open_after_replace(next, true)?;
                    }
                }
            }
            Step::FaultThenCrash(n, op, power_loss) => {
                if !runnable(&s.ids, &op) {
                    continue;
                }
                s.sim.fail_after(n as u64, FaultOn::Any);
                let r = execute_some(&s.db, &s.ids, &op).expect("runnable");
                let tripped = s.sim.fault_tripped();
                if power_loss {
                    s.sim.crash();
                } else {
                    s.sim.clear_fault();
                }
                drop(std::mem::replace(&mut s.db, placeholder()));
                let config = s.config.clone();
                s.open(config, power_loss)?;
                let in_disabled = op_region(&op).is_some_and(|r| s.config.disabled.contains(r));
                let mut with = s.model.clone();
                let want = with.apply(&op);
                match &r {
                    Ok(()) => {
                        prop_assert_eq!(want, Outcome::Ok, "step {} acknowledged", i);
                        s.model = with;
                    }
                    Err(Error::OutcomeUnknown { .. }) => {
                        prop_assert!(tripped);
                        if check_catalog(&s.db, &s.ids, &with, &s.catalog()).is_ok() {
                            s.model = with;
                        }
                    }
                    Err(Error::RegionDisabled(_)) if in_disabled => {}
                    Err(Error::UniqueViolation { .. }) if want == Outcome::Violation => {}
                    // Write B of the stale update committed, A did not.
                    Err(Error::Conflict { .. }) if want == Outcome::Conflict => s.model = with,
                    Err(Error::InvalidArgument(_)) if want == Outcome::Invalid => {}
                    Err(e) => {
                        let unsettled_refusal =
                            matches!(e, Error::RegionUnsettled(_) | Error::Busy(_))
                                && !s.unsettled.is_empty();
                        prop_assert!(
                            tripped || unsettled_refusal,
                            "step {i}: {e} without a fault"
                        );
                        // A stale update's write B may have committed before A failed.
                        if op.is_stale()
                            && check_catalog(&s.db, &s.ids, &with, &s.catalog()).is_ok()
                        {
                            s.model = with;
                        }
                    }
                }
            }
        }
        s.check(&format!("after step {i}"))?;
    }
    // Every region back: nothing may be left unsettled, and I1/I2 hold everywhere.
    s.close()?;
    let all = Config {
        disabled: BTreeSet::new(),
        extra: s.config.extra,
        default: None,
    };
    s.open(all, false)?;
    s.check("after enabling every region")?;
    let a =
        s.db.audit()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(a.is_clean(), "{}", a);
    prop_assert!(s.db.recovery_report().unsettled.is_empty());
    Ok(())
}

impl State {
    /// `self.db` was just opened with `config` after a power loss.
    fn open_after_replace(
        &mut self,
        config: Config,
        after_crash: bool,
    ) -> Result<(), TestCaseError> {
        for r in all_regions() {
            if !config.disabled.contains(r) {
                self.unsettled.remove(r);
            } else if after_crash && !self.config.disabled.contains(r) {
                self.unsettled.insert(r);
            }
        }
        // Whichever configuration opened names its default, or the store kept one that
        // is enabled.
        let named = self.db.region_name(self.db.default_region());
        prop_assert!(
            named
                .as_deref()
                .is_some_and(|d| !config.disabled.contains(d)),
            "default {:?} with {:?} disabled",
            named,
            config.disabled
        );
        self.default = all_regions()
            .into_iter()
            .find(|r| Some(*r) == named.as_deref())
            .unwrap_or(self.default);
        self.config = config;
        self.audit_if_all_enabled()
    }
}

/// One writer thread per account allowed in `region` (disjoint accounts, so the model can
/// apply each thread's acknowledged writes in its own order), a scanner and a reader, all
/// while the main thread disables `region`. A watchdog ends the process on a hang: a
/// deadlock must fail the suite, not stall it.
fn disable_under_load(
    s: &mut State,
    step: usize,
    region: &'static str,
) -> Result<(), TestCaseError> {
    use std::sync::mpsc;
    let writers: Vec<(usize, AccountId)> = (0..3)
        .filter(|a| allowed(*a).contains(&region))
        .filter_map(|a| s.ids[a].map(|id| (a, id)))
        .collect();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        // Disconnected: the step panicked (a finding, reported by the test itself).
        if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(Duration::from_secs(60))
        {
            eprintln!("step {step}: disable_region under load did not finish in 60 s: deadlock");
            std::process::exit(101);
        }
    });
    let disabled_flag = &std::sync::atomic::AtomicBool::new(false);
    let results = std::thread::scope(|scope| {
        let db = &s.db;
        let mut handles = Vec::new();
        for (acct, id) in &writers {
            let (acct, id) = (*acct, *id);
            handles.push(scope.spawn(move || {
                let mut acked = Vec::new();
                let mut refused = false;
                for round in 0..3u8 {
                    for key in 0..KEYS {
                        let val = round.wrapping_mul(3).wrapping_add(key);
                        let r = db.write_in(id, region).and_then(|mut w| {
                            w.insert(&T, [key], &record_value(val))?;
                            let late = disabled_flag.load(std::sync::atomic::Ordering::SeqCst);
                            w.commit().inspect(|()| {
                                assert!(
                                    !late,
                                    "a commit begun after disable_region returned succeeded"
                                )
                            })
                        });
                        match r {
                            Ok(()) => {
                                assert!(!refused, "a write acknowledged after one was refused");
                                acked.push(Op::Insert {
                                    acct,
                                    region: allowed(acct)
                                        .iter()
                                        .position(|r| *r == region)
                                        .unwrap(),
                                    key,
                                    val,
                                });
                            }
                            Err(Error::RegionDisabled(_)) => refused = true,
                            Err(e) => panic!("write under load: {e}"),
                        }
                    }
                }
                acked
            }));
        }
        let scanner = scope.spawn(move || {
            for _ in 0..20 {
                for row in db.scan_all(&T).expect("scan_all") {
                    row.expect("scan row");
                }
            }
        });
        let reader = scope.spawn(move || {
            for v in 0..VALUES {
                let _ = db.find_unique(&T, NAMESPACES[0], unique_value(v));
                let _ = db.is_taken(NAMESPACES[1], unique_value(v));
            }
        });
        let disabled = db.disable_region(region);
        disabled_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        scanner.join().expect("scanner");
        reader.join().expect("reader");
        let acked: Vec<Vec<Op>> = handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect();
        (disabled, acked)
    });
    let _ = done_tx.send(());
    watchdog.join().expect("watchdog");
    let (disabled, acked) = results;
    disabled.map_err(|e| TestCaseError::fail(format!("step {step}: disable {region}: {e}")))?;
    for ops in acked {
        for op in ops {
            prop_assert_eq!(s.model.apply(&op), Outcome::Ok);
        }
    }
    s.config.disabled.insert(region);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn operator_paths_match_model(steps in proptest::collection::vec(step(), 1..48)) {
        let mut all = vec![Step::Create(0), Step::Create(1), Step::Create(2)];
        all.extend(steps);
        run(all)?;
    }
}
