//! Group commit: the writes waiting for one region at the same moment share one region
//! write transaction, one Reserve, one fsync and one Confirm; each keeps its own outcome.
//!
//! Every commit of a region goes through that region's [`Committer`]: a queue of jobs and
//! at most one leader. A caller queues its job; if no leader is at work it becomes the
//! leader, takes the jobs waiting at that moment (bounded by [`MAX_GROUP_WRITES`] and
//! [`MAX_GROUP_BYTES`]) and commits them as a group; the others wait for their outcome. No
//! timer: a lone writer commits at once, and writers that arrive while a group syncs form
//! the next group. docs/design.md, "Group commit", has the why.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::db::Inner;
use crate::error::{Error, Result};
use crate::partition::contain::Blame;
use crate::partition::set::Region;
use crate::reservation::coordinator::ReserveTxn;
use crate::write::{GroupTables, Staged, Step, Write};

/// At most this many writes share one group.
pub const MAX_GROUP_WRITES: usize = 128;

/// A group stops taking writes once they buffer this many bytes (one write always fits).
pub const MAX_GROUP_BYTES: usize = 16 << 20;

/// What a caller hands to the committer.
pub(crate) enum Job {
    /// One write with its own outcome.
    One(Write),
    /// Writes committed all or none (a region batch): alone in its group.
    All(Vec<Write>),
}

impl Job {
    fn weight(&self) -> usize {
        match self {
            Job::One(w) => w.weight(),
            Job::All(ws) => ws.iter().map(Write::weight).sum(),
        }
    }
}

/// The commit queue of one region.
#[derive(Default)]
pub(crate) struct Committer {
    queue: Mutex<Queue>,
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<(u64, Job)>,
    outcomes: HashMap<u64, Result<()>>,
    next_id: u64,
    /// A leader is committing a group.
    leading: bool,
}

/// What one group decided: outcomes, and jobs to run again in the next group (deferred
/// behind a write of this group, or cut off by a failure of the group).
#[derive(Default)]
struct Outcome {
    done: Vec<(u64, Result<()>)>,
    again: Vec<(u64, Job)>,
}

impl Committer {
    /// Commits `jobs` (all to this committer's region) and returns their outcomes in order.
    /// The caller leads groups while its jobs are not all decided and no one else leads.
    pub fn submit(&self, jobs: Vec<Job>) -> Vec<Result<()>> {
        let mut q = self.queue.lock();
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            let id = q.next_id;
            q.next_id += 1;
            q.waiting.push_back((id, job));
            ids.push(id);
        }
        while !ids.iter().all(|id| q.outcomes.contains_key(id)) {
            if q.leading {
                self.changed.wait(&mut q);
                continue;
            }
            q.leading = true;
            let group = take_group(&mut q.waiting);
            drop(q);
            let ids_of_group: Vec<u64> = group.iter().map(|(id, _)| *id).collect();
            let region = group_region(&group);
            let db = group.iter().find_map(|(_, j)| match j {
                Job::One(w) => Some(w.db()),
                Job::All(ws) => ws.first().map(Write::db),
            });
            let outcome = match (&region, &db) {
                (Some(region), Some(db)) => {
                    // A panic inside redb (a damaged page) or a bug: the group's
                    // transactions are dropped while unwinding (nothing of it is committed
                    // past what the panic interrupted); the partition whose file fails
                    // verification is marked damaged, and every write of the group gets
                    // its error.
                    let parts = [&region.part, &db.inner.global];
                    match crate::partition::contain::contain_any(&parts, Blame::Verify, || {
                        Ok(run_group(group))
                    }) {
                        Ok(o) => o,
                        Err(e) => Outcome {
                            done: ids_of_group
                                .iter()
                                .map(|id| (*id, Err(again(&e))))
                                .collect(),
                            again: Vec::new(),
                        },
                    }
                }
                _ => run_group(group),
            };
            q = self.queue.lock();
            for job in outcome.again.into_iter().rev() {
                q.waiting.push_front(job);
            }
            q.outcomes.extend(outcome.done);
            q.leading = false;
            self.changed.notify_all();
        }
        ids.iter()
            .map(|id| {
                q.outcomes
                    .remove(id)
                    .unwrap_or_else(|| Err(Error::invalid("internal: commit outcome missing")))
            })
            .collect()
    }
}

/// The error of a panicked group, once per write (errors are not `Clone`).
fn again(e: &Error) -> Error {
    match e {
        Error::Corrupt { partition, what } => Error::corrupt(partition, what.clone()),
        other => Error::corrupt("?", other.to_string()),
    }
}

/// The region of a group's writes (all jobs of a committer share it).
fn group_region(group: &[(u64, Job)]) -> Option<std::sync::Arc<Region>> {
    group.iter().find_map(|(_, j)| match j {
        Job::One(w) => Some(w.region_arc()),
        Job::All(ws) => ws.first().map(Write::region_arc),
    })
}

/// The jobs of the next group, from the front of the queue: a batch alone, or single
/// writes up to the bounds (at least one).
fn take_group(waiting: &mut VecDeque<(u64, Job)>) -> Vec<(u64, Job)> {
    let mut group = Vec::new();
    let mut bytes = 0;
    while let Some((_, job)) = waiting.front() {
        let all = matches!(job, Job::All(_));
        if !group.is_empty()
            && (all || group.len() >= MAX_GROUP_WRITES || bytes + job.weight() > MAX_GROUP_BYTES)
        {
            break;
        }
        bytes += job.weight();
        let Some(front) = waiting.pop_front() else {
            break;
        };
        group.push(front);
        if all {
            break;
        }
    }
    group
}

/// A job staged into the group: its writes with what each staged.
struct StagedJob<'i> {
    id: u64,
    job: Job,
    staged: Vec<Staged<'i>>,
}

impl StagedJob<'_> {
    fn reserves(&self) -> bool {
        self.staged.iter().any(|s| s.reservation.is_some())
    }
}

/// Commits one group: stages every write into one region transaction (and one Reserve
/// for those that change unique values), commits the Reserve, then the region (the
/// commit point, one fsync), then Confirms them all in one global commit.
fn run_group(group: Vec<(u64, Job)>) -> Outcome {
    let mut out = Outcome::default();
    let Some(region) = group_region(&group) else {
        out.done
            .extend(group.into_iter().map(|(id, _)| (id, Ok(()))));
        return out;
    };
    let db = match &group[0].1 {
        Job::One(w) => w.db(),
        Job::All(ws) => ws[0].db(),
    };
    let inner: &Inner = &db.inner;
    let part = &region.part;
    // Held to the end: `Db::disable_region` waits for this group (so the counts it freezes
    // include it), or the group sees the region disabled.
    let writable = region.writable.read();
    if !*writable {
        out.done.extend(
            group
                .into_iter()
                .map(|(id, _)| (id, Err(Error::RegionDisabled(part.name.clone())))),
        );
        return out;
    }
    // One writer per region at a time: what staging reads cannot change under it.
    let w = match part.begin_write() {
        Ok(w) => w,
        Err(e) => return first_fails(group, e),
    };
    // The region tables, opened once for the group; dropped before `w` is committed or
    // dropped.
    let mut tables = GroupTables::new(&w);
    let mut g: Option<ReserveTxn> = None;
    let mut staged: Vec<StagedJob<'_>> = Vec::with_capacity(group.len());
    // Records freed by the writes staged so far, by account: they commit (or fail) with
    // the writes after them, so a quota check counts them as gone, as serially.
    let mut freed: HashMap<u64, u64> = HashMap::new();
    // Schemas checked (and registered where needed) by the writes staged so far.
    let mut checked = Vec::new();
    let mut rest = group.into_iter();
    while let Some((id, job)) = rest.next() {
        let atomic = matches!(job, Job::All(_));
        let mut job_staged = Vec::new();
        let mut failed = Fail::No;
        let writes = match &job {
            Job::One(w) => std::slice::from_ref(w),
            Job::All(ws) => ws.as_slice(),
        };
        for write in writes {
            // Only writes of this store and region reach this committer (a batch refuses
            // replaced parts); anything else is refused, never staged here.
            if !Arc::ptr_eq(&write.region_arc(), &region) || !write.same_store(&db) {
                failed = Fail::Refused(Error::invalid(
                    "a write of another region or store in this region's commit",
                ));
                break;
            }
            let account = write.account().0;
            let freed_here = freed.get(&account).copied().unwrap_or(0);
            failed = match write.stage(inner, &mut tables, &mut g, freed_here, &mut checked) {
                Step::Staged(s) => {
                    if s.frees() > 0 {
                        *freed.entry(account).or_default() += s.frees();
                    }
                    job_staged.push(s);
                    continue;
                }
                Step::Refused(e) => Fail::Refused(e),
                // Inside a batch the two writes cannot be put one after the other.
                Step::Defer { namespace } if atomic => {
                    Fail::Refused(Error::DuplicateInWrite { namespace })
                }
                Step::Defer { .. } => Fail::Defer,
                Step::Fatal(e) => Fail::Fatal(e),
            };
            break;
        }
        match failed {
            Fail::No => staged.push(StagedJob {
                id,
                job,
                staged: job_staged,
            }),
            // A single write deferred has staged nothing. It and every job after it run
            // in the next group: each group is a prefix of the queue, so the outcomes are
            // those of the queue's order.
            Fail::Defer => {
                out.again.push((id, job));
                out.again.extend(rest.by_ref());
                break;
            }
            // A failure while changing the transactions loses the group; so does a batch
            // refused part-way (its first writes are staged: it is alone in its group, so
            // dropping the group drops just it).
            Fail::Fatal(e) => {
                drop(tables);
                return lose_group(inner, g, w, out, id, e, staged, rest);
            }
            Fail::Refused(e) if !job_staged.is_empty() => {
                drop(job_staged);
                drop(tables);
                return lose_group(inner, g, w, out, id, e, staged, rest);
            }
            Fail::Refused(e) => out.done.push((id, Err(e))),
        }
    }
    drop(tables);
    if staged.is_empty() {
        abandon(inner, g.take());
        return out;
    }
    let newest = staged
        .iter()
        .flat_map(|j| j.staged.iter())
        .filter_map(|s| s.reservation.as_ref().map(|r| r.txn))
        .max();
    if let Some(txn) = newest
        && let Err(e) = crate::write::record_last_txn(part, &w, txn)
    {
        abandon(inner, g.take());
        drop(w);
        return first_fails_staged(out, staged, e);
    }
    // A storage error met while staging (e.g. a read that failed) may have poisoned the
    // region: it then refuses this commit too.
    if let Err(e) = part.check() {
        abandon(inner, g.take());
        drop(w);
        return first_fails_staged(out, staged, e);
    }
    if let Some(rt) = g.take()
        && let Err(e) = inner.coord.commit_reserve(&inner.global, rt)
    {
        // Nothing reached the region. The writes that reserved share the failed commit: the
        // first gets its error, the others run again (and meet the poisoned global). Those
        // that did not reserve run again too.
        drop(w);
        let (reserving, others): (Vec<_>, Vec<_>) =
            staged.into_iter().partition(StagedJob::reserves);
        out.again.extend(others.into_iter().map(|s| (s.id, s.job)));
        return first_fails_staged(out, reserving, e);
    }
    // The commit point: one fsync. From here the quotas stay reserved whatever happens
    // (the records may exist; a reopen settles an unknown outcome).
    for s in staged.iter_mut().flat_map(|j| j.staged.iter_mut()) {
        s.ticket.armed = false;
    }
    let registers = staged
        .iter()
        .flat_map(|j| j.staged.iter())
        .any(Staged::registers);
    let _schemas = registers.then(|| part.schemas.changing());
    if let Err(e) = w.commit() {
        part.poison();
        // Best effort: if the global file fails too, a later disable-at-open may freeze
        // counts from the commit's live image (docs/design.md, "doubtful regions").
        let _ = crate::partition::catalog::mark_doubtful(&inner.global, region.id.0);
        let mut source = Some(Box::new(redb::Error::from(e)));
        for j in staged {
            out.done.push((
                j.id,
                Err(Error::OutcomeUnknown {
                    partition: part.name.clone(),
                    // The group shared one commit: the others carry redb's "previous I/O
                    // error" as their source.
                    source: source
                        .take()
                        .unwrap_or_else(|| Box::new(redb::Error::PreviousIo)),
                }),
            ));
        }
        return out;
    }
    let mut done = Vec::new();
    for j in &mut staged {
        let writes = match &j.job {
            Job::One(w) => std::slice::from_ref(w),
            Job::All(ws) => ws.as_slice(),
        };
        for (write, s) in writes.iter().zip(j.staged.iter_mut()) {
            write.settle(s);
            done.extend(s.reservation.take());
        }
    }
    // If Confirm fails the global partition is poisoned and recovery confirms from the
    // markers: the writes stand either way.
    let _ = inner.coord.confirm(&inner.global, &done);
    out.done.extend(staged.into_iter().map(|j| (j.id, Ok(()))));
    out
}

/// How staging a job went.
enum Fail {
    No,
    Refused(Error),
    Defer,
    Fatal(Error),
}

/// The group's transactions are half-changed: drop them uncommitted. Job `id` gets `e`;
/// the jobs staged before it and those not yet staged run again in the next group.
#[allow(clippy::too_many_arguments)]
fn lose_group(
    inner: &Inner,
    g: Option<ReserveTxn>,
    w: crate::partition::Txn,
    mut out: Outcome,
    id: u64,
    e: Error,
    staged: Vec<StagedJob<'_>>,
    rest: impl Iterator<Item = (u64, Job)>,
) -> Outcome {
    abandon(inner, g);
    drop(w);
    out.done.push((id, Err(e)));
    out.again.extend(staged.into_iter().map(|s| (s.id, s.job)));
    out.again.extend(rest);
    out
}

fn abandon(inner: &Inner, g: Option<ReserveTxn>) {
    if let Some(rt) = g {
        inner.coord.abandon(rt);
    }
}

/// Nothing of the group was staged: the first job gets `e`, the others run again (each
/// then meets its own outcome).
fn first_fails(group: Vec<(u64, Job)>, e: Error) -> Outcome {
    let mut out = Outcome::default();
    let mut group = group.into_iter();
    if let Some((id, _)) = group.next() {
        out.done.push((id, Err(e)));
    }
    out.again.extend(group);
    out
}

/// The staged jobs are not committed: the first gets `e`, the others run again.
fn first_fails_staged(mut out: Outcome, staged: Vec<StagedJob<'_>>, e: Error) -> Outcome {
    let group: Vec<(u64, Job)> = staged.into_iter().map(|s| (s.id, s.job)).collect();
    let more = first_fails(group, e);
    out.done.extend(more.done);
    out.again.extend(more.again);
    out
}
