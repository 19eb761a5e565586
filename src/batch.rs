//! Writes of many accounts committed together: a region batch (all or none) and
//! [`Db::commit_each`] (one group commit, each write with its own outcome).

use std::collections::BTreeMap;

use crate::commit::Job;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::types::{AccountId, RegionId};
use crate::write::Write;

/// Writes of many accounts in one region, committed all or none with one region commit and
/// one fsync: the bulk path (an import, a migration of many tenants into a region).
///
/// Each account's part is a [`Write`] ([`Batch::write`]) and is checked as a single write
/// would be: placement, quota, schemas, unique values (claimed and released through the
/// reservation protocol, each account's part under its own transaction id and applied
/// marker). If any part is refused the whole batch is, with that part's error, and nothing
/// is written.
///
/// A unique value may be changed by one part only: a value claimed by two accounts of
/// the batch is [`Error::DuplicateInWrite`]; a value released by one part and claimed by
/// another is refused too (`DuplicateInWrite` when the releasing part is staged first,
/// [`Error::UniqueViolation`] when the claiming one is: parts are staged in account-id
/// order). Commit the release first, then the claim.
///
/// ```
/// # use regionkv::{Db, NewAccount, Raw, Table, Unique};
/// # let dir = tempfile::tempdir()?;
/// # let db = Db::builder().region("eu").region("us").default_region("eu").open(dir.path())?;
/// const LICENSES: Table<Raw> = Table::new("licenses");
/// let ids = db.create_accounts((0..3).map(|i| NewAccount::new(format!("t{i}"), "eu")))?;
/// let mut batch = db.batch_in("eu")?;
/// for (i, id) in ids.iter().enumerate() {
///     let key = format!("K-{i}");
///     batch.write(*id)?.insert_unique(&LICENSES, key.as_str(), b"pro", &[Unique::new("license", &key)])?;
/// }
/// batch.commit()?; // one fsync for the three accounts
/// assert!(db.is_taken("license", "K-2")?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Batch {
    db: Db,
    region: RegionId,
    name: String,
    writes: BTreeMap<AccountId, Write>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("region", &self.name)
            .field("accounts", &self.writes.len())
            .field("ops", &self.len())
            .finish()
    }
}

impl Batch {
    /// The region of this batch.
    pub fn region(&self) -> RegionId {
        self.region
    }

    /// The part of `account` (created on first use): a [`Write`] in this batch's region,
    /// committed with the batch (do not commit it on its own).
    ///
    /// # Errors
    /// [`Error::AccountUnknown`]; [`Error::PlacementDenied`] if the account's policy does
    /// not allow the batch's region; [`Error::RegionDisabled`].
    pub fn write(&mut self, account: AccountId) -> Result<&mut Write> {
        use std::collections::btree_map::Entry;
        match self.writes.entry(account) {
            Entry::Occupied(o) => Ok(o.into_mut()),
            Entry::Vacant(v) => {
                let w = self.db.write_in(account, &self.name)?;
                Ok(v.insert(w))
            }
        }
    }

    /// The operations buffered over all accounts.
    pub fn len(&self) -> usize {
        self.writes.values().map(Write::len).sum()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Commits every part in one region commit (one fsync), all or none.
    ///
    /// # Errors
    /// The error of the first part refused (each part's errors are those of
    /// [`Write::commit`]; a [`Error::UniqueViolation`] names the record of the batch that
    /// collided); [`Error::DuplicateInWrite`] when two parts change one unique value.
    /// Every error but `OutcomeUnknown` means nothing of the batch was written.
    pub fn commit(self) -> Result<()> {
        let inner = &*self.db.inner;
        // `Batch::write` hands out `&mut Write`: a part may have been replaced by a write
        // of another account, region or store. Such a batch is refused whole.
        for (account, w) in &self.writes {
            if !w.same_store(&self.db) || w.region() != self.region || w.account() != *account {
                return Err(Error::invalid(format!(
                    "batch in region `{}`: the part of account {account} was replaced by a \
                     write of another account, region or store",
                    self.name
                )));
            }
        }
        let writes: Vec<Write> = self
            .writes
            .into_values()
            .filter(|w| !w.is_empty())
            .collect();
        if writes.is_empty() {
            inner.check_open()?;
            return Ok(());
        }
        // Held to the end: `Db::close` waits for this commit, or this commit sees it closed.
        let _store_gate = inner.writers.read();
        inner.check_open()?;
        let region = inner.region(self.region)?;
        let done = region.committer.submit(vec![Job::All(writes)]);
        let done = done
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(Error::invalid("internal: batch outcome missing")));
        if done.is_ok() {
            inner.maybe_checkpoint();
        }
        done
    }
}

impl Db {
    /// A batch of writes of many accounts in region `region`, committed all or none with
    /// one fsync (see [`Batch`]).
    ///
    /// # Errors
    /// [`Error::RegionUnknown`], [`Error::RegionDisabled`], [`Error::Closed`].
    pub fn batch_in(&self, region: &str) -> Result<Batch> {
        self.inner.check_open()?;
        let id = self.inner.region_id(region)?;
        let r = self.inner.region(id)?;
        r.part.check()?;
        Ok(Batch {
            db: self.clone(),
            region: id,
            name: r.part.name.clone(),
            writes: BTreeMap::new(),
        })
    }

    /// Commits region batches of several regions, the regions' commits running at the same
    /// time: a bulk load spread over regions pays one region commit's time, not the sum of
    /// them (each region is its own file, with its own fsync). Returns each batch's outcome,
    /// in the order given.
    ///
    /// Each batch is committed as [`Batch::commit`] commits it: all or none in its region.
    /// Batches of different regions are **not** atomic together: one may commit while
    /// another is refused (commit them one at a time, checking each, if a later one must
    /// not land without an earlier one). Batches of one region commit one after the other
    /// in the order given, so their outcomes are those of committing them in that order.
    /// One thread per region beyond the first runs them (the calling thread takes the
    /// first region), joined before this returns; a region whose thread the system cannot
    /// start is committed on the calling thread after the first.
    ///
    /// ```
    /// # use regionkv::{Db, NewAccount, Raw, Table, Unique};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Db::builder().region("eu").region("us").default_region("eu").open(dir.path())?;
    /// const LICENSES: Table<Raw> = Table::new("licenses");
    /// let eu = db.create_account(NewAccount::new("acme", "eu"))?;
    /// let us = db.create_account(NewAccount::new("initech", "us"))?;
    /// let mut in_eu = db.batch_in("eu")?;
    /// in_eu.write(eu)?.insert_unique(&LICENSES, "l1", b"pro", &[Unique::new("license", "K-1")])?;
    /// let mut in_us = db.batch_in("us")?;
    /// in_us.write(us)?.insert_unique(&LICENSES, "l1", b"pro", &[Unique::new("license", "K-2")])?;
    /// for outcome in db.commit_batches([in_eu, in_us]) {
    ///     outcome?; // the two regions committed at the same time, one fsync each
    /// }
    /// assert!(db.is_taken("license", "K-2")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Per batch, those of [`Batch::commit`]; [`Error::InvalidArgument`] for a batch of
    /// another store (nothing of it is written).
    pub fn commit_batches(&self, batches: impl IntoIterator<Item = Batch>) -> Vec<Result<()>> {
        let batches: Vec<Batch> = batches.into_iter().collect();
        let mut out: Vec<Option<Result<()>>> = (0..batches.len()).map(|_| None).collect();
        // Regions in the order of their first batch; a region's batches in order.
        let mut lanes: Vec<(RegionId, Vec<(usize, Batch)>)> = Vec::new();
        for (i, b) in batches.into_iter().enumerate() {
            if !std::sync::Arc::ptr_eq(&b.db.inner, &self.inner) {
                out[i] = Some(Err(Error::invalid(
                    "commit_batches: a batch of another store",
                )));
                continue;
            }
            match lanes.iter_mut().find(|(r, _)| *r == b.region) {
                Some((_, list)) => list.push((i, b)),
                None => lanes.push((b.region, vec![(i, b)])),
            }
        }
        fn run(lane: Vec<(usize, Batch)>) -> Vec<(usize, Result<()>)> {
            lane.into_iter().map(|(i, b)| (i, b.commit())).collect()
        }
        let mut lanes = lanes.into_iter();
        let first = lanes.next();
        // Each other lane waits in a slot its thread takes it from: a thread the system
        // cannot start (out of threads or memory) leaves its lane there, and this thread
        // commits it after the first, as a sequential loop would (never a panic, never a
        // batch dropped uncommitted).
        type Lane = Vec<(usize, Batch)>;
        let slots: Vec<parking_lot::Mutex<Option<Lane>>> = lanes
            .map(|(_, lane)| parking_lot::Mutex::new(Some(lane)))
            .collect();
        let take = |slot: &parking_lot::Mutex<Option<Lane>>| slot.lock().take().unwrap_or_default();
        let done: Vec<(usize, Result<()>)> = std::thread::scope(|s| {
            let mut others = Vec::new();
            let mut here = Vec::new();
            for slot in &slots {
                match std::thread::Builder::new()
                    .name("regionkv-batch".into())
                    .spawn_scoped(s, move || run(take(slot)))
                {
                    Ok(h) => others.push(h),
                    Err(_) => here.push(slot),
                }
            }
            let mut done = first.map(|(_, lane)| run(lane)).unwrap_or_default();
            for slot in here {
                done.extend(run(take(slot)));
            }
            for h in others {
                match h.join() {
                    Ok(d) => done.extend(d),
                    // A commit contains redb's panics; anything else is a bug, raised here
                    // as it would be by `Batch::commit` on this thread.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            done
        });
        for (i, r) in done {
            out[i] = Some(r);
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::invalid("internal: batch outcome missing"))))
            .collect()
    }

    /// Commits `writes` (of any accounts and regions) as few group commits as the bounds
    /// allow: the writes to one region share one region transaction and one fsync
    /// ([`MAX_GROUP_WRITES`](crate::MAX_GROUP_WRITES) per group). Unlike a [`Batch`],
    /// each write keeps its own outcome, returned in the order given: one write's unique
    /// violation or conflict fails only that write. The outcomes are those of
    /// [`Write::commit`].
    ///
    /// The outcomes are those of committing the writes one by one in this order: the
    /// writes to one region in the order given, the regions one after the other in the
    /// order of their first write. (Two writes in one region that change the same unique
    /// value or record are applied one after the other; a write that read a record
    /// through [`Write::get`] before an earlier write of the call changed it conflicts.)
    ///
    /// ```
    /// # use regionkv::{Db, Error, NewAccount, Raw, Table, Unique};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Db::builder().region("eu").open(dir.path())?;
    /// const USERS: Table<Raw> = Table::new("users");
    /// let a = db.create_account(NewAccount::new("a", "eu"))?;
    /// let b = db.create_account(NewAccount::new("b", "eu"))?;
    /// let mut wa = db.write(a)?;
    /// wa.insert_unique(&USERS, "u", b"ann", &[Unique::new("email", "ann@example.com")])?;
    /// let mut wb = db.write(b)?;
    /// wb.insert_unique(&USERS, "u", b"ann", &[Unique::new("email", "ann@example.com")])?;
    /// let outcomes = db.commit_each([wa, wb]);
    /// assert!(outcomes[0].is_ok());
    /// assert!(matches!(outcomes[1], Err(Error::UniqueViolation { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_each(&self, writes: impl IntoIterator<Item = Write>) -> Vec<Result<()>> {
        let inner = &*self.inner;
        let writes: Vec<Write> = writes.into_iter().collect();
        let mut out: Vec<Option<Result<()>>> = (0..writes.len()).map(|_| None).collect();
        // Held to the end: `Db::close` waits for these commits, or they see it closed.
        let _store_gate = inner.writers.read();
        // Regions in the order of their first write.
        let mut by_region: Vec<(u16, Vec<(usize, Write)>)> = Vec::new();
        for (i, w) in writes.into_iter().enumerate() {
            if !w.same_store(self) {
                out[i] = Some(Err(Error::invalid("commit_each: a write of another store")));
            } else if w.is_empty() {
                out[i] = Some(inner.check_open());
            } else {
                let r = w.region().0;
                match by_region.iter_mut().find(|(id, _)| *id == r) {
                    Some((_, list)) => list.push((i, w)),
                    None => by_region.push((r, vec![(i, w)])),
                }
            }
        }
        for (_, writes) in by_region {
            if inner.check_open().is_err() {
                for (i, _) in writes {
                    out[i] = Some(Err(Error::Closed));
                }
                continue;
            }
            let region = writes[0].1.region_arc();
            let (slots, jobs): (Vec<usize>, Vec<Job>) =
                writes.into_iter().map(|(i, w)| (i, Job::One(w))).unzip();
            for (i, r) in slots.into_iter().zip(region.committer.submit(jobs)) {
                out[i] = Some(r);
            }
        }
        if out.iter().any(|r| matches!(r, Some(Ok(())))) {
            inner.maybe_checkpoint();
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::invalid("internal: outcome missing"))))
            .collect()
    }
}
