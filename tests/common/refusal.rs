//! Refused opens as rows of a table: each case sets up its files, runs an open that must be
//! refused (or, for some, may open), checks that a refusal changed no byte and removed or
//! created no file, then runs its own follow-up checks. Every problem names its case.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use regionkv::testing::SimStorage;
use regionkv::{Builder, Db, Error};

use super::files::{Snapshot, diff_files, sim_snapshot, snapshot};

/// The files of one case: simulated, or real files in a temporary directory.
pub enum Env {
    Sim(SimStorage),
    Real(tempfile::TempDir),
}

impl Env {
    pub fn sim() -> Env {
        Env::Sim(SimStorage::new())
    }

    pub fn real() -> Env {
        Env::Real(tempfile::tempdir().expect("temporary directory"))
    }

    /// The folder every path of the case lives under: `/` on the simulated storage, the
    /// temporary directory on real files.
    pub fn root(&self) -> PathBuf {
        match self {
            Env::Sim(_) => PathBuf::from("/"),
            Env::Real(d) => d.path().to_owned(),
        }
    }

    /// `rel` under [`Env::root`].
    pub fn at(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// A builder on this case's storage.
    pub fn builder(&self) -> Builder {
        match self {
            Env::Sim(sim) => Db::builder().storage(sim.clone()),
            Env::Real(_) => Db::builder(),
        }
    }

    /// The simulated storage (panics on real files).
    pub fn sim_storage(&self) -> &SimStorage {
        match self {
            Env::Sim(sim) => sim,
            Env::Real(_) => panic!("a real-file case has no SimStorage"),
        }
    }

    /// Every file (and, on real files, directory) of the case.
    pub fn snapshot(&self) -> Snapshot {
        match self {
            Env::Sim(sim) => sim_snapshot(sim),
            Env::Real(d) => snapshot(d.path()),
        }
    }
}

/// What the open of a case must do.
pub enum Expect {
    /// Be refused with an error that `matches` accepts (`what` describes it).
    Refused {
        what: &'static str,
        matches: fn(&Error) -> bool,
    },
    /// Be refused with `Error::Config` whose message contains the text.
    ConfigContaining(&'static str),
    /// Be refused (with any error) or open; a refusal must still change nothing.
    RefusedOrOpens,
}

impl Expect {
    /// Refused, with any error.
    pub const ANY_ERROR: Expect = Expect::Refused {
        what: "any error",
        matches: |_| true,
    };
    /// Refused with `Error::Config`.
    pub const CONFIG: Expect = Expect::Refused {
        what: "Error::Config",
        matches: |e| matches!(e, Error::Config(_)),
    };
}

type Step<'a, T> = Box<dyn Fn(&Env) -> T + 'a>;

/// One refused open.
pub struct Refusal<'a> {
    pub name: &'static str,
    /// The storage of the case.
    pub env: fn() -> Env,
    /// Makes the files the open starts from.
    pub setup: Step<'a, ()>,
    pub open: Step<'a, regionkv::Result<Db>>,
    pub expect: Expect,
    /// Checks after the open (the store still opens as it was, ...): each problem a line.
    /// A panic here is reported as a problem of the case.
    pub after: Step<'a, Vec<String>>,
}

impl<'a> Refusal<'a> {
    /// A case with no set-up and no follow-up checks.
    pub fn new(
        name: &'static str,
        env: fn() -> Env,
        open: impl Fn(&Env) -> regionkv::Result<Db> + 'a,
        expect: Expect,
    ) -> Refusal<'a> {
        Refusal {
            name,
            env,
            setup: Box::new(|_| {}),
            open: Box::new(open),
            expect,
            after: Box::new(|_| Vec::new()),
        }
    }

    pub fn setup(mut self, f: impl Fn(&Env) + 'a) -> Self {
        self.setup = Box::new(f);
        self
    }

    pub fn after(mut self, f: impl Fn(&Env) -> Vec<String> + 'a) -> Self {
        self.after = Box::new(f);
        self
    }

    /// Runs the case; returns its problems (empty if it passed).
    pub fn run(&self) -> Vec<String> {
        let env = (self.env)();
        let mut problems = Vec::new();
        let ran = catch_unwind(AssertUnwindSafe(|| {
            (self.setup)(&env);
            let before = env.snapshot();
            let r = (self.open)(&env).map(drop);
            let after = env.snapshot();
            match (&r, &self.expect) {
                (Ok(()), Expect::Refused { what, .. }) => {
                    problems.push(format!("the open succeeded; expected {what}"));
                }
                (Err(e), Expect::Refused { what, matches }) if !matches(e) => {
                    problems.push(format!("refused with {e:?}; expected {what}"));
                }
                (Ok(()), Expect::ConfigContaining(text)) => {
                    problems.push(format!(
                        "the open succeeded; expected Error::Config containing {text:?}"
                    ));
                }
                (Err(e), Expect::ConfigContaining(text)) if !matches!(e, Error::Config(m) if m.contains(text)) =>
                {
                    problems.push(format!(
                        "refused with {e:?}; expected Error::Config containing {text:?}"
                    ));
                }
                _ => {}
            }
            if let Err(e) = &r {
                for d in diff_files(&before, &after) {
                    problems.push(format!("refused ({e}) but {d}"));
                }
            }
            problems.extend((self.after)(&env));
        }));
        if let Err(panic) = ran {
            let msg = super::panic_message(&*panic);
            problems.push(format!("panicked: {msg}"));
        }
        problems
            .into_iter()
            .map(|p| format!("{}: {p}", self.name))
            .collect()
    }
}

/// Runs every case and asserts none had a problem.
pub fn run_refusals(cases: &[Refusal]) {
    let problems: Vec<String> = cases.iter().flat_map(Refusal::run).collect();
    assert!(
        problems.is_empty(),
        "{} refusal cases:\n{problems:#?}",
        cases.len()
    );
}

/// Whether `path` exists; for [`Refusal::after`] checks on either storage.
pub fn exists(env: &Env, path: &Path) -> bool {
    match env {
        Env::Sim(sim) => sim.live_bytes(path).is_some(),
        Env::Real(_) => path.exists(),
    }
}

/// An operation of a [`Rejected`] row; `Ok` carries the value it returned, printed.
type RejectedOp<'a, A> = Box<dyn Fn(&mut A) -> Result<String, Error> + 'a>;

/// An operation that must be rejected: its name, the operation on a target (a write, a
/// store, ...), and the error it must fail with.
pub struct Rejected<'a, A> {
    pub name: &'static str,
    op: RejectedOp<'a, A>,
    what: &'static str,
    matches: Box<dyn Fn(&Error) -> bool + 'a>,
}

impl<'a, A> Rejected<'a, A> {
    /// `op` must fail with an error `matches` accepts (`what` describes it).
    pub fn new<T: std::fmt::Debug>(
        name: &'static str,
        what: &'static str,
        matches: impl Fn(&Error) -> bool + 'a,
        op: impl Fn(&mut A) -> regionkv::Result<T> + 'a,
    ) -> Self {
        Rejected {
            name,
            op: Box::new(move |a| op(a).map(|v| format!("{v:?}"))),
            what,
            matches: Box::new(matches),
        }
    }

    /// `op` must fail with `Error::InvalidArgument`.
    pub fn invalid<T: std::fmt::Debug>(
        name: &'static str,
        op: impl Fn(&mut A) -> regionkv::Result<T> + 'a,
    ) -> Self {
        Self::new(
            name,
            "Error::InvalidArgument",
            |e| matches!(e, Error::InvalidArgument(_)),
            op,
        )
    }
}

/// Runs every row on `target`, in order; after each, `wrote` lists what the row changed
/// (nothing, for a rejected operation). Asserts that every row was rejected as it must be
/// and wrote nothing, naming each row that was not.
pub fn run_rejections<A>(
    target: &mut A,
    rows: &[Rejected<'_, A>],
    wrote: impl Fn(&A) -> Vec<String>,
) {
    let mut problems = Vec::new();
    for row in rows {
        match (row.op)(target) {
            Ok(v) => problems.push(format!(
                "{}: accepted ({v}); expected {}",
                row.name, row.what
            )),
            Err(e) if !(row.matches)(&e) => {
                problems.push(format!("{}: {e:?}; expected {}", row.name, row.what))
            }
            Err(_) => {}
        }
        for w in wrote(target) {
            problems.push(format!("{}: {w}", row.name));
        }
    }
    assert!(
        problems.is_empty(),
        "{} rejected operations:\n{problems:#?}",
        rows.len()
    );
}
