//! Checks of each open region: its data rows (placement, account, envelope), its usage
//! counters, its leftover applied markers, and its `_owned` rows read from the record side
//! of I1 and I2 (every value a record owns has its global entry pointing back to it).

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadOnlyTable, ReadTransaction, TableDefinition, TableHandle};

use super::index::value_of;
use super::scan::{Auditor, Row};
use super::{Bytes, Ctx, FindingKind, hex16, show, show_data_key, show_loc};
use crate::account::Account;
use crate::codec::envelope::{self, EnvelopeError};
use crate::error::Result;
use crate::partition::At;
use crate::partition::global::unique_key;
use crate::partition::region::{Marker, Owned, decode_owned, owned_key, split_owned_key};
use crate::partition::schemas::{self, Stored};
use crate::partition::set::Region;
use crate::reservation::state::{Entry, Loc, State};
use crate::schema::{MARKERS, OWNED, SCHEMAS, USAGE, USER_TABLE_PREFIX, user_table_name};
use crate::types::{RegionId, TxnId};

/// The snapshots of the open regions, by region id.
pub(super) type Snaps = HashMap<u16, Snap>;

/// Rows and bytes the data rows of each account hold in one region, by account id.
type Counted = HashMap<u64, (u64, u64)>;

/// A region snapshot: its `_owned` table, and user tables opened on first use.
pub(super) struct Snap {
    /// The region's partition name, as findings name it.
    name: String,
    /// The region.
    region: Arc<Region>,
    /// The read snapshot every check of the region reads.
    txn: ReadTransaction,
    /// Its `_owned` table (`None` if absent or of the wrong type).
    owned: Option<ReadOnlyTable<Bytes, Bytes>>,
    /// user table name (without prefix) -> table, `None` if it does not exist.
    data: HashMap<String, Option<ReadOnlyTable<Bytes, Bytes>>>,
}

impl Snap {
    /// Whether the data row `dkey` of the user table `table` exists in this snapshot.
    pub(super) fn data_row_exists(&mut self, table: &str, dkey: &[u8]) -> Result<bool> {
        if !self.data.contains_key(table) {
            let name = user_table_name(table);
            let t = match self
                .txn
                .open_table(TableDefinition::<Bytes, Bytes>::new(&name))
            {
                Ok(t) => Some(t),
                // Missing, or of the wrong type (reported by the region scan): no such row.
                Err(redb::TableError::Storage(e)) => return Err(self.region.part.err(e)),
                Err(_) => None,
            };
            self.data.insert(table.to_owned(), t);
        }
        match self.data.get(table) {
            Some(Some(t)) => Ok(t.get(dkey).at(&self.region.part)?.is_some()),
            _ => Ok(false),
        }
    }

    /// The values the record at `okey` owns: `Ok(None)` if it has no owned row, `Err` only
    /// for storage errors; an undecodable row reads as `Some(None)`.
    pub(super) fn owned_list(&self, okey: &[u8]) -> Result<Option<Option<Vec<Owned>>>> {
        let Some(t) = &self.owned else {
            return Ok(None);
        };
        Ok(t.get(okey)
            .at(&self.region.part)?
            .map(|g| decode_owned(g.value())))
    }
}

/// Takes one read snapshot of each open region, in the order given, and opens its `_owned`
/// table (a table of the wrong type is a finding).
pub(super) fn snapshots(a: &mut Auditor, open: &[Arc<Region>]) -> Result<Snaps> {
    let mut snaps = Snaps::new();
    for r in open {
        let txn = r.part.begin_read()?;
        let owned = a.open(&r.part, &txn, OWNED)?;
        snaps.insert(
            r.id.0,
            Snap {
                name: r.part.name.clone(),
                region: r.clone(),
                txn,
                owned,
                data: HashMap::new(),
            },
        );
    }
    Ok(snaps)
}

/// Every check of the region `rid`, in order: data rows, usage counters, markers, owned
/// values. Owned values without a proper entry are added to `suspects`.
pub(super) fn check(
    a: &mut Auditor,
    ctx: &Ctx<'_>,
    snaps: &Snaps,
    rid: u16,
    suspects: &mut Suspects,
) -> Result<()> {
    let snap = &snaps[&rid];
    let counted = data_rows(a, ctx, snaps, snap)?;
    usage(a, snap, counted)?;
    markers(a, snap)?;
    owned(a, ctx, snaps, snap, suspects)
}

/// The recorded schema versions of user table `table` (`_schemas`), oldest first; a row
/// that cannot be decoded is a finding and left out.
fn table_schemas(
    a: &mut Auditor,
    snap: &Snap,
    schema_t: Option<&ReadOnlyTable<(&'static str, u16), Bytes>>,
    table: &str,
) -> Result<Vec<Stored>> {
    let part = &snap.region.part;
    let Some(t) = schema_t else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for row in t.range((table, 0u16)..=(table, u16::MAX)).at(part)? {
        let (k, v) = row.at(part)?;
        let version = k.value().1;
        match Stored::decode(version, v.value()) {
            Some(s) => out.push(s),
            None => {
                let mut key = table.as_bytes().to_vec();
                key.extend_from_slice(&version.to_be_bytes());
                a.find(
                    FindingKind::Undecodable,
                    &snap.name,
                    Some(SCHEMAS.name()),
                    Some(&key),
                    format!("schema row of table `{table}` version {version} is undecodable"),
                );
            }
        }
    }
    Ok(out)
}

/// The newest version of user table `table` recorded in any open region (rows that cannot
/// be read or decoded are reported by their own region's checks).
fn newest_recorded(snaps: &Snaps, table: &str) -> Option<Stored> {
    let mut newest: Option<Stored> = None;
    for s in snaps.values() {
        let Ok(t) = s.txn.open_table(SCHEMAS) else {
            continue;
        };
        let Ok(mut rows) = t.range((table, 0u16)..=(table, u16::MAX)) else {
            continue;
        };
        if let Some(Ok((k, v))) = rows.next_back()
            && let Some(st) = Stored::decode(k.value().1, v.value())
            && newest.as_ref().is_none_or(|n| n.version < st.version)
        {
            newest = Some(st);
        }
    }
    newest
}

/// Checks the rows of every user table (`t/<table>`) of the region: placement (I4), known
/// account, envelope, schema. Returns what each account's rows hold, for [`usage`].
fn data_rows(a: &mut Auditor, ctx: &Ctx<'_>, snaps: &Snaps, snap: &Snap) -> Result<Counted> {
    let part = &snap.region.part;
    let mut counted = Counted::new();
    let tables: Vec<String> = snap
        .txn
        .list_tables()
        .at(part)?
        .map(|h| h.name().to_owned())
        .filter(|n| n.starts_with(USER_TABLE_PREFIX))
        .collect();
    let schema_t = a.open(part, &snap.txn, SCHEMAS)?;
    for tname in &tables {
        let user = tname.strip_prefix(USER_TABLE_PREFIX).unwrap_or(tname);
        let mut versions = table_schemas(a, snap, schema_t.as_ref(), user)?;
        // Outdated means older than the newest version recorded in any region: a region
        // that never saw the newer version still holds records `migrate` rewrites.
        if let Some(newest) = newest_recorded(snaps, user)
            && versions.last().is_some_and(|l| l.version < newest.version)
        {
            versions.push(newest);
        }
        let def = TableDefinition::<Bytes, Bytes>::new(tname);
        let mut unregistered = 0u64;
        a.scan_table(part, &snap.txn, def, |a, key, value| {
            a.report.records += 1;
            let Some(acct) = key
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
            else {
                return Ok(Row::undecodable(
                    key,
                    "data key shorter than its 8-byte account prefix",
                ));
            };
            let c = counted.entry(acct).or_default();
            c.0 += 1;
            c.1 += value.len() as u64;
            if versions.is_empty() {
                unregistered += 1;
            }
            data_row(a, ctx, snap, tname, (key, value), acct, &versions);
            Ok(Row::Read)
        })?;
        if unregistered > 0 {
            a.find(
                FindingKind::Schema,
                &snap.name,
                Some(tname),
                None,
                format!(
                    "table `{user}` holds {unregistered} rows but no schema row (`_schemas`): \
                     what type wrote them is unknown"
                ),
            );
        }
    }
    Ok(counted)
}

/// One data row of account `acct` in table `tname`: the account must exist and its
/// placement policy allow this region (I4), and the stored envelope must be intact.
fn data_row(
    a: &mut Auditor,
    ctx: &Ctx<'_>,
    snap: &Snap,
    tname: &str,
    (key, value): (&[u8], &[u8]),
    acct: u64,
    versions: &[Stored],
) {
    let part_name = &snap.name;
    match ctx.accounts.get(&acct) {
        None => a.find(
            FindingKind::UnknownAccount,
            part_name,
            Some(tname),
            Some(key),
            format!("{}: no such account", show_data_key(key)),
        ),
        Some(acc) if !placement_ok(acc, snap.region.id) => a.find(
            FindingKind::Placement,
            part_name,
            Some(tname),
            Some(key),
            format!(
                "{}: account `{}` may not store data in region `{part_name}`",
                show_data_key(key),
                acc.name()
            ),
        ),
        Some(_) => {}
    }
    if let Some((kind, why)) = envelope_problem(value, tname, key, versions) {
        a.find(
            kind,
            part_name,
            Some(tname),
            Some(key),
            format!("{}: {why}", show_data_key(key)),
        );
    }
}

/// Checks each account's usage row (`_usage`) against what its rows hold (`counted`), then
/// reports the accounts that hold rows but have no usage row, by account id.
fn usage(a: &mut Auditor, snap: &Snap, mut counted: Counted) -> Result<()> {
    let counter = |a: &mut Auditor, acct: u64, detail: String| {
        let key = acct.to_be_bytes();
        a.find(
            FindingKind::Counter,
            &snap.name,
            Some(USAGE.name()),
            Some(&key),
            detail,
        );
    };
    a.scan_table(&snap.region.part, &snap.txn, USAGE, |a, acct, stored| {
        let actual = counted.remove(&acct).unwrap_or((0, 0));
        if stored != actual {
            let (s, r) = (stored, actual);
            counter(
                a,
                acct,
                format!(
                    "account #{acct}: usage says {} records / {} bytes, rows hold {} / {}",
                    s.0, s.1, r.0, r.1
                ),
            );
        }
        Ok(Row::Read)
    })?;
    let mut missing: Vec<(u64, (u64, u64))> = counted.into_iter().collect();
    missing.sort_unstable();
    for (acct, (records, bytes)) in missing {
        counter(
            a,
            acct,
            format!("account #{acct}: no usage row, rows hold {records} records / {bytes} bytes"),
        );
    }
    Ok(())
}

/// Reports every applied marker (`_markers`) left after the checkpoint: the checkpoint
/// collects the markers of confirmed writes, so any that remains is a leftover.
fn markers(a: &mut Auditor, snap: &Snap) -> Result<()> {
    let part_name = &snap.name;
    a.scan_table(&snap.region.part, &snap.txn, MARKERS, |a, k, v| {
        let txn_id = TxnId::from_u128(k);
        let key = k.to_be_bytes();
        let Some(m) = Marker::decode(v) else {
            return Ok(Row::undecodable(
                &key,
                format!("applied marker of txn {txn_id} undecodable"),
            ));
        };
        a.find(
            FindingKind::InFlight,
            part_name,
            Some(MARKERS.name()),
            Some(&key),
            format!(
                "applied marker of txn {txn_id} (account #{}, {} claims, {} releases) left \
                 after a checkpoint",
                m.account,
                m.claims.len(),
                m.releases.len()
            ),
        );
        Ok(Row::Read)
    })
}

/// The `_owned` row being checked: its region's name, raw key, and the record it is of.
struct Owner<'a> {
    /// The region's partition name.
    part: &'a str,
    /// The raw `_owned` key.
    okey: &'a [u8],
    /// The record the row is of.
    here: Loc,
}

impl Owner<'_> {
    /// `value in namespace … owned by table …, account #…, key …`.
    fn owns(&self, o: &Owned) -> String {
        format!(
            "{} owned by table `{}`, account #{}, key {}",
            value_of(&o.ns, &o.digest),
            self.here.table,
            self.here.account,
            show(&self.here.key)
        )
    }

    /// Records a finding of `kind` naming this `_owned` row.
    fn find(&self, a: &mut Auditor, kind: FindingKind, detail: String) {
        a.find(kind, self.part, Some(OWNED.name()), Some(self.okey), detail);
    }
}

/// I1 and I2, record side: every `_owned` row must decode, and each value it lists must
/// hash to its digest and have its global entry pointing back to the record
/// ([`owned_value`]).
fn owned(
    a: &mut Auditor,
    ctx: &Ctx<'_>,
    snaps: &Snaps,
    snap: &Snap,
    suspects: &mut Suspects,
) -> Result<()> {
    let Some(t) = &snap.owned else {
        return Ok(());
    };
    a.scan(&snap.region.part, OWNED.name(), t, |a, okey, v| {
        let Some((table, account, ukey_user)) = split_owned_key(okey) else {
            return Ok(Row::undecodable(okey, "owned-values key malformed"));
        };
        let Some(list) = decode_owned(v) else {
            return Ok(Row::undecodable(
                okey,
                format!(
                    "owned values of table `{table}`, account #{account}, key {} undecodable",
                    show(ukey_user)
                ),
            ));
        };
        let owner = Owner {
            part: &snap.name,
            okey,
            here: Loc {
                account,
                region: snap.region.id.0,
                table: table.to_owned(),
                key: ukey_user.to_vec(),
            },
        };
        for o in &list {
            owned_value(a, ctx, snaps, &owner, o, suspects)?;
        }
        Ok(Row::Read)
    })
}

/// One value `o` the record of `owner` owns: its digest must be that of its plaintext; its
/// global entry must point to the record. An entry naming another record that owns the
/// value too is a duplicate owner (I1) at once; any other problem makes the row a suspect.
fn owned_value(
    a: &mut Auditor,
    ctx: &Ctx<'_>,
    snaps: &Snaps,
    owner: &Owner<'_>,
    o: &Owned,
    suspects: &mut Suspects,
) -> Result<()> {
    if ctx.inner.digest(&o.ns, &o.value) != o.digest {
        let detail = format!(
            "a value in namespace `{}` does not hash to its stored digest",
            o.ns
        );
        owner.find(a, FindingKind::DigestMismatch, detail);
    }
    let ukey = unique_key(&o.ns, &o.digest);
    let entry = match ctx.index.get(&ukey)? {
        // Reported by the scan of the unique index.
        Some(None) => return Ok(()),
        Some(Some(e)) => Some(e),
        None => None,
    };
    let why = match &entry {
        Some(e) if points_to(e, &owner.here) => return Ok(()),
        None => "has no global entry".to_owned(),
        Some(e) if e.state == State::Tombstone => {
            format!("has a tombstone (txn {}) as its global entry", e.txn)
        }
        Some(e) => {
            // The entry names another record: does that one own it too?
            let elsewhere = show_loc(&e.loc, &ctx.regions.name(e.loc.region));
            if also_owns(snaps, &e.loc, o)? {
                let detail = format!(
                    "{} and also by the record its global entry names ({elsewhere})",
                    owner.owns(o)
                );
                owner.find(a, FindingKind::DuplicateOwner, detail);
                return Ok(());
            }
            format!("has a global entry naming another record ({elsewhere})")
        }
    };
    suspects.0.entry(ukey).or_default().push(Suspect {
        region: owner.part.to_owned(),
        okey: owner.okey.to_vec(),
        ns: o.ns.clone(),
        digest: o.digest,
        why: format!("{} {why}", owner.owns(o)),
    });
    Ok(())
}

/// Whether the record at `other` (in an open region) lists `o` among the values it owns.
fn also_owns(snaps: &Snaps, other: &Loc, o: &Owned) -> Result<bool> {
    let list = match snaps.get(&other.region) {
        Some(s) => s
            .owned_list(&owned_key(&other.table, other.account, &other.key))?
            .flatten(),
        None => None,
    };
    Ok(list.is_some_and(|l| l.iter().any(|x| x.ns == o.ns && x.digest == o.digest)))
}

/// An `_owned` row of a value whose global entry does not point back to it.
struct Suspect {
    /// The region's partition name.
    region: String,
    /// The raw `_owned` key.
    okey: Vec<u8>,
    /// The value's namespace.
    ns: String,
    /// The value's digest.
    digest: [u8; 16],
    /// What owns the value and what is wrong with its entry.
    why: String,
}

/// The suspects of every region, by unique key, in the order found.
#[derive(Default)]
pub(super) struct Suspects(HashMap<Vec<u8>, Vec<Suspect>>);

impl Suspects {
    /// Once every region is scanned, reports the suspects by unique key: a value owned by
    /// one record without a proper entry is an orphan record (I2); a value so owned by
    /// several records is a duplicate owner (I1) in each of them.
    pub(super) fn report(self, a: &mut Auditor) {
        let mut suspects: Vec<(Vec<u8>, Vec<Suspect>)> = self.0.into_iter().collect();
        suspects.sort_by(|x, y| x.0.cmp(&y.0));
        for (_, group) in suspects {
            if group.len() == 1 {
                let s = &group[0];
                a.find(
                    FindingKind::OrphanRecord,
                    &s.region,
                    Some(OWNED.name()),
                    Some(&s.okey),
                    s.why.clone(),
                );
                continue;
            }
            for s in &group {
                a.find(
                    FindingKind::DuplicateOwner,
                    &s.region,
                    Some(OWNED.name()),
                    Some(&s.okey),
                    format!(
                        "{}; {} records own this value (namespace `{}`, digest {})",
                        s.why,
                        group.len(),
                        s.ns,
                        hex16(&s.digest)
                    ),
                );
            }
        }
    }
}

/// Why a stored value is rejected, if it is: a damaged envelope (`Checksum`), or a record
/// whose schema version is not recorded for its table, or is older than the newest one
/// recorded (`Schema`: it reads only through an upgrade, or not at all). The table's value
/// type is not known here, so the payload itself is not validated.
fn envelope_problem(
    v: &[u8],
    table: &str,
    data_key: &[u8],
    versions: &[Stored],
) -> Option<(FindingKind, String)> {
    let codec = match v.get(1) {
        Some(&c) if c <= 1 => c,
        _ => 0,
    };
    let table = table.strip_prefix(USER_TABLE_PREFIX).unwrap_or(table);
    let binding = envelope::Binding {
        table,
        key: data_key,
    };
    let u = match envelope::unseal(v, codec, &binding) {
        Ok(u) => u,
        Err(EnvelopeError::Codec { found, .. }) => {
            return Some((FindingKind::Checksum, format!("unknown codec byte {found}")));
        }
        Err(e) => return Some((FindingKind::Checksum, e.to_string())),
    };
    let newest = versions.last()?;
    match versions.iter().find(|s| s.version == u.version) {
        None => Some((
            FindingKind::Schema,
            format!(
                "record of schema version {}, which is not recorded for table `{table}`",
                u.version
            ),
        )),
        Some(s) if s.codec != codec => Some((
            FindingKind::Schema,
            format!(
                "record written with codec {}, its schema version {} records {}",
                schemas::codec_name(codec),
                s.version,
                schemas::codec_name(s.codec)
            ),
        )),
        Some(s) if s.version != newest.version => Some((
            FindingKind::Schema,
            format!(
                "record of schema version {} ({}); the table's newest is {} ({}): \
                 migrate the table",
                s.version, s.type_name, newest.version, newest.type_name
            ),
        )),
        Some(_) => None,
    }
}

/// Whether `e` is the global entry of a value owned by the record at `loc`: it points at
/// it (settled or in flight), or it is a transfer in flight away from it.
fn points_to(e: &Entry, loc: &Loc) -> bool {
    match e.state {
        State::Tombstone => false,
        State::Committed | State::Releasing => e.loc == *loc,
        State::Pending => {
            e.loc == *loc
                || e.prev
                    .as_ref()
                    .is_some_and(|p| p.state == State::Committed && p.loc == *loc)
        }
    }
}

/// Whether the placement policy allows rows of `a` in `region` (I4).
fn placement_ok(a: &Account, region: RegionId) -> bool {
    a.allows(region)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::envelope::seal;
    use crate::codec::value::Raw;
    use crate::db::Db;
    use crate::partition::region::MarkerClaim;
    use crate::{NewAccount, Table, Unique};

    #[test]
    fn envelope_problems() {
        let dkey = b"\0\0\0\0\0\0\0\x01k";
        let at = envelope::Binding {
            table: "t",
            key: dkey,
        };
        let row = |version: u16, codec: u8| Stored {
            version,
            codec,
            fingerprint: 7,
            type_name: format!("T{version}"),
            unique_namespaces: Vec::new(),
        };
        let v1 = [row(1, 0)];
        let problem = |v: &[u8]| envelope_problem(v, "t/t", dkey, &v1).map(|(_, why)| why);
        let good = seal::<Raw>(&at, 1, b"hello");
        assert_eq!(problem(&good), None);
        let mut rkyv_codec = good.clone();
        rkyv_codec[1] = 1; // the CRC covers the codec byte
        assert!(problem(&rkyv_codec).unwrap().contains("checksum"));
        let mut bad = good.clone();
        bad[1] = 9;
        assert!(problem(&bad).unwrap().contains("unknown codec byte 9"));
        let mut bad = good.clone();
        bad[9] ^= 1;
        assert!(problem(&bad).unwrap().contains("checksum"));
        let mut bad = good.clone();
        bad[2] ^= 1; // the schema version: damage, not a schema finding
        assert!(problem(&bad).unwrap().contains("checksum"));
        assert!(problem(&good[..3]).is_some());
        assert!(problem(&[]).is_some());
        // The same bytes under another row.
        assert!(envelope_problem(&good, "t/t", b"\0\0\0\0\0\0\0\x02k", &v1).is_some());
        let mut bad = good.clone();
        bad[0] = 1;
        assert!(problem(&bad).unwrap().contains("version"));
        // Schema findings: an unrecorded version, an old version, a codec the row denies.
        let v2 = seal::<Raw>(&at, 2, b"hello");
        let (kind, why) = envelope_problem(&v2, "t/t", dkey, &v1).unwrap();
        assert_eq!(kind, FindingKind::Schema);
        assert!(why.contains("not recorded"), "{why}");
        let both = [row(1, 0), row(2, 0)];
        let (kind, why) = envelope_problem(&good, "t/t", dkey, &both).unwrap();
        assert_eq!(kind, FindingKind::Schema);
        assert!(why.contains("newest is 2"), "{why}");
        assert_eq!(envelope_problem(&v2, "t/t", dkey, &both), None);
        let rkyv_row = [row(1, 1)];
        let (kind, why) = envelope_problem(&good, "t/t", dkey, &rkyv_row).unwrap();
        assert_eq!(kind, FindingKind::Schema);
        assert!(why.contains("codec raw"), "{why}");
    }

    #[test]
    fn transfer_in_flight_points_to_its_source() {
        let t = |seq| TxnId { epoch: 1, seq };
        let loc = |key: &[u8]| Loc {
            account: 1,
            region: 1,
            table: "users".into(),
            key: key.to_vec(),
        };
        let c = Entry::committed(t(1), loc(b"a"));
        assert!(points_to(&c, &loc(b"a")));
        assert!(!points_to(&c, &loc(b"b")));
        let moving = crate::reservation::state::claim(Some(&c), t(2), loc(b"b"), true).unwrap();
        assert!(points_to(&moving, &loc(b"a")) && points_to(&moving, &loc(b"b")));
        assert!(!points_to(&Entry::tombstone(t(3)), &loc(b"a")));
    }

    /// A marker no checkpoint covers (its txn was never confirmed in this process) is a
    /// leftover. Written through the open store: a raw marker written while the store is
    /// closed is replayed and deleted by recovery at open.
    #[test]
    fn leftover_marker_is_in_flight() {
        const USERS: Table<Raw> = Table::new("users");
        let dir = tempfile::tempdir().unwrap();
        let db = Db::builder().region("us").open(dir.path()).unwrap();
        let a = db.create_account(NewAccount::new("a", "us")).unwrap();
        let mut w = db.write(a).unwrap();
        w.insert_unique(&USERS, b"k", b"v", &[Unique::new("email", "a@b")])
            .unwrap();
        w.commit().unwrap();
        assert!(db.audit().unwrap().is_clean());

        let region = db.inner.region(db.region_id("us").unwrap()).unwrap();
        let txn = TxnId { epoch: 99, seq: 7 };
        let marker = Marker {
            account: a.0,
            claims: vec![MarkerClaim {
                ns: "email".into(),
                digest: db.inner.digest("email", b"a@b"),
                table: "users".into(),
                key: b"k".to_vec(),
            }],
            releases: vec![],
        };
        let w = region.part.begin_write().unwrap();
        {
            let mut t = w.open_table(MARKERS).unwrap();
            t.insert(txn.to_u128(), marker.encode().as_slice()).unwrap();
            t.insert(TxnId { epoch: 99, seq: 8 }.to_u128(), b"junk".as_slice())
                .unwrap();
        }
        region.part.commit(w).unwrap();

        let report = db.audit().unwrap();
        let kinds: Vec<_> = report.findings().iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [FindingKind::InFlight, FindingKind::Undecodable],
            "{report}"
        );
        let f = &report.findings()[0];
        assert_eq!(f.partition, "us");
        assert_eq!(f.table.as_deref(), Some("_markers"));
        assert_eq!(
            f.key.as_deref(),
            Some(txn.to_u128().to_be_bytes().as_slice())
        );
        assert!(f.detail.contains("99.7"), "{f}");
    }
}
