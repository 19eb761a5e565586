//! The unique-entry state machine, pure: no I/O, every transition a function of
//! (current entry, txn). The coordinator and recovery apply these to the global index.
//!
//! ```text
//!             claim                confirm
//!   (none) ----------> Pending{t} ----------> Committed{t}
//!   Tombstone            |  abort/rollback      |      release
//!                        v                       v
//!                  previous entry           Releasing{t} --confirm--> Tombstone{t}
//!                                               | abort/rollback
//!                                               v
//!                                           Committed (previous)
//! ```
//! Every entry records the TxnId of its last change, which makes replay idempotent: a
//! marker of txn `t` changes an entry only if the entry's txn is older than `t` (or is
//! the in-flight state of `t` itself).

use crate::codec::bin::{Dec, Enc};
use crate::types::TxnId;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    Committed = 1,
    Tombstone = 2,
    Pending = 3,
    Releasing = 4,
}

impl State {
    fn from_u8(v: u8) -> Option<State> {
        Some(match v {
            1 => State::Committed,
            2 => State::Tombstone,
            3 => State::Pending,
            4 => State::Releasing,
            _ => return None,
        })
    }

    pub fn in_flight(self) -> bool {
        matches!(self, State::Pending | State::Releasing)
    }
}

/// Where the record owning a value lives.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct Loc {
    pub account: u64,
    pub region: u16,
    pub table: String,
    pub key: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Entry {
    pub state: State,
    /// The txn of the last change (for in-flight states: the txn in flight).
    pub txn: TxnId,
    /// For Committed, Pending and Releasing: the owning record.
    pub loc: Loc,
    /// For in-flight states: the settled entry to restore on rollback.
    pub prev: Option<Box<Entry>>,
}

/// Why a reservation could not be made.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// Owned by a committed record.
    Taken,
    /// Held by another in-flight txn.
    Busy,
}

/// What to do with an entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Keep,
    Put(Entry),
    Delete,
}

impl Entry {
    fn settled(state: State, txn: TxnId, loc: Loc) -> Entry {
        Entry {
            state,
            txn,
            loc,
            prev: None,
        }
    }

    pub fn committed(txn: TxnId, loc: Loc) -> Entry {
        Entry::settled(State::Committed, txn, loc)
    }

    pub fn tombstone(txn: TxnId) -> Entry {
        Entry::settled(State::Tombstone, txn, Loc::default())
    }

    /// Whether replaying a marker of `txn` must change this entry.
    fn older_than(&self, txn: TxnId) -> bool {
        self.txn < txn || (self.txn == txn && self.state.in_flight())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        encode_one(&mut e, self);
        match &self.prev {
            Some(p) => {
                e.u8(1);
                encode_one(&mut e, p);
            }
            None => {
                e.u8(0);
            }
        }
        e.finish()
    }

    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut d = Dec(bytes);
        let mut entry = decode_one(&mut d)?;
        match d.u8()? {
            0 => {}
            1 => entry.prev = Some(Box::new(decode_one(&mut d)?)),
            _ => return None,
        }
        d.end()?;
        // An in-flight entry must not restore to another in-flight entry.
        if entry.prev.as_ref().is_some_and(|p| p.state.in_flight()) {
            return None;
        }
        Some(entry)
    }
}

fn encode_one(e: &mut Enc, x: &Entry) {
    e.u8(x.state as u8)
        .u128(x.txn.to_u128())
        .u64(x.loc.account)
        .u16(x.loc.region)
        .bytes(x.loc.table.as_bytes())
        .bytes(&x.loc.key);
}

fn decode_one(d: &mut Dec<'_>) -> Option<Entry> {
    Some(Entry {
        state: State::from_u8(d.u8()?)?,
        txn: TxnId::from_u128(d.u128()?),
        loc: Loc {
            account: d.u64()?,
            region: d.u16()?,
            table: d.string()?,
            key: d.bytes()?.to_vec(),
        },
        prev: None,
    })
}

/// Reserve step for a claim. `transfer` allows taking over a value committed to the same
/// account when this txn releases it from another record (moving a value between records).
pub(crate) fn claim(
    cur: Option<&Entry>,
    txn: TxnId,
    loc: Loc,
    transfer: bool,
) -> Result<Entry, Conflict> {
    let prev = match cur {
        None => None,
        Some(e) => match e.state {
            State::Tombstone => Some(Box::new(e.clone())),
            State::Committed if transfer && e.loc.account == loc.account => {
                Some(Box::new(e.clone()))
            }
            State::Committed => return Err(Conflict::Taken),
            State::Pending | State::Releasing => return Err(Conflict::Busy),
        },
    };
    Ok(Entry {
        state: State::Pending,
        txn,
        loc,
        prev,
    })
}

/// Reserve step for a release by the record at `owner`. `Ok(None)`: nothing to do — the
/// value is free, or its entry names another record (the releasing record's list of owned
/// values is stale: it never owned this value, or lost it; freeing it would free a value
/// someone else owns).
pub(crate) fn release(
    cur: Option<&Entry>,
    txn: TxnId,
    owner: &Loc,
) -> Result<Option<Entry>, Conflict> {
    match cur {
        None => Ok(None),
        Some(e) => match e.state {
            State::Tombstone => Ok(None),
            State::Committed if e.loc != *owner => Ok(None),
            State::Committed => Ok(Some(Entry {
                state: State::Releasing,
                txn,
                loc: e.loc.clone(),
                prev: Some(Box::new(e.clone())),
            })),
            State::Pending | State::Releasing => Err(Conflict::Busy),
        },
    }
}

/// Confirm step: the region commit of `txn` is durable.
pub(crate) fn confirm(cur: Option<&Entry>, txn: TxnId) -> Change {
    match cur {
        Some(e) if e.txn == txn && e.state == State::Pending => {
            Change::Put(Entry::committed(txn, e.loc.clone()))
        }
        Some(e) if e.txn == txn && e.state == State::Releasing => {
            Change::Put(Entry::tombstone(txn))
        }
        _ => Change::Keep,
    }
}

/// Abort (or recovery rollback) of `txn`: restore what the reservation replaced.
pub(crate) fn rollback(cur: Option<&Entry>, txn: TxnId) -> Change {
    match cur {
        Some(e) if e.txn == txn && e.state.in_flight() => match &e.prev {
            Some(p) => Change::Put((**p).clone()),
            None => Change::Delete,
        },
        _ => Change::Keep,
    }
}

/// Recovery: the marker of `txn` says it claimed this value for `loc`.
pub(crate) fn replay_claim(cur: Option<&Entry>, txn: TxnId, loc: Loc) -> Change {
    match cur {
        Some(e) if !e.older_than(txn) => Change::Keep,
        _ => Change::Put(Entry::committed(txn, loc)),
    }
}

/// Recovery: the marker of `txn`, written by `account` in `region`, says it released this
/// value. Reserve only lets a record release a value its entry names, so an entry that
/// names another account or region is not the one this marker released: it stays.
pub(crate) fn replay_release(cur: Option<&Entry>, txn: TxnId, account: u64, region: u16) -> Change {
    match cur {
        Some(e) if !e.older_than(txn) => Change::Keep,
        Some(e)
            if e.state == State::Committed
                && (e.loc.account != account || e.loc.region != region) =>
        {
            Change::Keep
        }
        _ => Change::Put(Entry::tombstone(txn)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seq: u64) -> TxnId {
        TxnId { epoch: 1, seq }
    }
    fn loc(account: u64) -> Loc {
        Loc {
            account,
            region: 1,
            table: "t".into(),
            key: b"k".to_vec(),
        }
    }
    fn put(c: Change) -> Entry {
        match c {
            Change::Put(e) => e,
            other => panic!("expected Put, got {other:?}"),
        }
    }

    #[test]
    fn claim_confirm_release_confirm() {
        let p = claim(None, t(1), loc(7), false).unwrap();
        assert_eq!(p.state, State::Pending);
        let c = put(confirm(Some(&p), t(1)));
        assert_eq!(c, Entry::committed(t(1), loc(7)));
        assert_eq!(claim(Some(&c), t(2), loc(8), false), Err(Conflict::Taken));
        let r = release(Some(&c), t(3), &loc(7)).unwrap().unwrap();
        assert_eq!(r.state, State::Releasing);
        assert_eq!(claim(Some(&r), t(4), loc(8), false), Err(Conflict::Busy));
        let tomb = put(confirm(Some(&r), t(3)));
        assert_eq!(tomb, Entry::tombstone(t(3)));
        let again = claim(Some(&tomb), t(5), loc(8), false).unwrap();
        assert_eq!(again.prev.as_deref(), Some(&tomb));
    }

    #[test]
    fn rollback_restores_previous() {
        let c = Entry::committed(t(1), loc(7));
        let r = release(Some(&c), t(2), &loc(7)).unwrap().unwrap();
        assert_eq!(put(rollback(Some(&r), t(2))), c);
        let p = claim(None, t(3), loc(7), false).unwrap();
        assert_eq!(rollback(Some(&p), t(3)), Change::Delete);
        // Someone else's txn is left alone.
        assert_eq!(rollback(Some(&p), t(4)), Change::Keep);
        assert_eq!(confirm(Some(&p), t(4)), Change::Keep);
    }

    #[test]
    fn a_release_never_frees_another_records_value() {
        let c = Entry::committed(t(1), loc(7));
        // Another account, or another record of the same account: not its to release.
        assert_eq!(release(Some(&c), t(2), &loc(8)), Ok(None));
        let mut other_key = loc(7);
        other_key.key = b"other".to_vec();
        assert_eq!(release(Some(&c), t(2), &other_key), Ok(None));
        // Replaying a release marker of another account or region leaves the owner.
        assert_eq!(replay_release(Some(&c), t(3), 8, 1), Change::Keep);
        assert_eq!(replay_release(Some(&c), t(3), 7, 2), Change::Keep);
        assert_eq!(
            put(replay_release(Some(&c), t(3), 7, 1)),
            Entry::tombstone(t(3))
        );
    }

    #[test]
    fn transfer_only_within_account() {
        let c = Entry::committed(t(1), loc(7));
        assert!(claim(Some(&c), t(2), loc(7), true).is_ok());
        assert_eq!(claim(Some(&c), t(2), loc(8), true), Err(Conflict::Taken));
    }

    #[test]
    fn replay_is_idempotent_and_ordered() {
        let c = Entry::committed(t(5), loc(7));
        // An older marker never overrides a newer state.
        assert_eq!(replay_claim(Some(&c), t(4), loc(9)), Change::Keep);
        assert_eq!(replay_release(Some(&c), t(5), 7, 1), Change::Keep);
        // Replaying the same marker twice gives the same entry.
        let once = put(replay_claim(None, t(6), loc(9)));
        assert_eq!(replay_claim(Some(&once), t(6), loc(9)), Change::Keep);
        // An in-flight entry of the marker's own txn is settled by it.
        let p = claim(None, t(7), loc(9), false).unwrap();
        assert_eq!(
            put(replay_claim(Some(&p), t(7), loc(9))).state,
            State::Committed
        );
        let r = release(Some(&once), t(8), &loc(9)).unwrap().unwrap();
        assert_eq!(
            put(replay_release(Some(&r), t(8), 9, 1)),
            Entry::tombstone(t(8))
        );
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let c = Entry::committed(t(1), loc(7));
        let r = release(Some(&c), t(2), &loc(7)).unwrap().unwrap();
        for e in [c, r, Entry::tombstone(t(3))] {
            assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
            let bytes = e.encode();
            for cut in 0..bytes.len() {
                assert_eq!(Entry::decode(&bytes[..cut]), None);
            }
        }
        assert_eq!(Entry::decode(&[9, 9, 9]), None);
    }
}
