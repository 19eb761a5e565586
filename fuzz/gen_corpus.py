#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/<target>/ (deterministic; rerun to refresh).

Inputs are encoded the way the `arbitrary` crate (1.x) decodes them: integers little-endian,
bool = byte & 1, an enum variant = u32 x with (x * variants) >> 32, a Vec = elements each
preceded by a "keep going" byte (odd = yes), `int_in_range` = start + byte % (span + 1).
If the input types of a target change these seeds still decode (to other operations); the
fuzzer's own corpus additions keep the coverage.
"""

import os
import random
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def variant(v, n):
    return struct.pack("<I", -(-(v << 32) // n))


def u8(x):
    return bytes([x & 0xFF])


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- ops ---------------------------------------------------------------------------------
MORE, END = b"\x01", b"\x00"


def item_insert(t, k, v):
    return variant(0, 4) + u8(t) + u8(k) + u8(v)


def item_unique(t, k, v, ns, uv):
    return variant(1, 4) + u8(t) + u8(k) + u8(v) + u8(ns) + u8(uv)


def item_update(t, k, v, vals):
    return variant(2, 4) + u8(t) + u8(k) + u8(v) + b"".join(MORE + u8(n) + u8(x) for n, x in vals) + END


def item_remove(t, k):
    return variant(3, 4) + u8(t) + u8(k)


def create(name, home, allow):
    return u8(0) + u8(name) + u8(home) + u8(allow)


def wr(acct, region, item):
    return u8(3) + u8(acct) + u8(region) + item


def batch(acct, region, items):
    assert 1 <= len(items) <= 3
    return u8(23) + u8(acct) + u8(region) + u8(len(items) - 1) + b"".join(items)


CHECKPOINT, REOPEN, DROP_REOPEN, NOTHING = u8(27), u8(29), u8(30), u8(31)
WRITES, SYNCS, ANY = 0, 1, 2


def step(s):
    return MORE + u8(1) + s  # ratio byte 1 -> not a crash


def crash(fail_after, on, s):
    return MORE + u8(0) + u8(fail_after) + variant(on, 3) + s


def ops(budget, *steps):
    return u8(budget) + b"".join(steps)


# Every input starts with accounts acct0 (home us, also eu) and acct1 (home eu, also ap).
# Account bytes index the existing accounts; a region byte r picks allowed[r % n], except
# r % 8 == 7, which picks region (r / 8) % 3 whatever the policy.
US, EU, AP = 0, 1, 2
DENIED_AP = 7 + 8 * 2  # region ap, outside acct0's policy
write("ops", "uniques", ops(
    0,
    step(create(2, AP, US)),
    step(create(0, AP, AP)),  # name taken
    step(wr(0, 0, item_unique(0, 0, 1, 0, 0))),
    step(wr(1, 0, item_unique(0, 1, 2, 0, 0))),  # unique violation (other account)
    step(wr(1, 1, item_unique(1, 1, 2, 0, 1))),
    step(wr(0, 1, item_update(0, 2, 3, [(0, 2), (1, 2)]))),
    step(wr(0, 0, item_insert(0, 0, 9))),  # keeps its value
    step(wr(0, DENIED_AP, item_insert(0, 0, 9))),  # placement denied
    step(batch(0, 0, [item_remove(0, 0), item_update(0, 3, 4, [(0, 0)])])),  # transfer
    step(wr(0, 1, item_update(0, 2, 3, [(1, 2), (1, 2)]))),  # duplicate in write
    step(wr(2, 0, item_unique(1, 1, 5, 1, 2))),  # acct2 claims a value acct0 owns
    step(wr(0, 1, item_update(0, 2, 3, []))),  # releases both
    step(wr(2, 0, item_unique(1, 1, 5, 1, 2))),  # now free
    step(CHECKPOINT),
    step(REOPEN),
    step(wr(1, 1, item_remove(1, 1))),
    step(DROP_REOPEN),
    step(NOTHING),
))

write("ops", "crashes", ops(
    0,
    step(wr(0, 0, item_unique(0, 0, 1, 0, 0))),
    crash(0, SYNCS, wr(0, 1, item_unique(0, 1, 2, 0, 1))),
    crash(1, WRITES, wr(0, 0, item_update(0, 0, 3, [(0, 1), (1, 1)]))),
    crash(2, ANY, create(2, EU, EU)),
    step(wr(0, 0, item_update(0, 0, 4, []))),  # a release, then a crash before a checkpoint
    step(NOTHING),
    crash(3, SYNCS, REOPEN),
    crash(0, ANY, CHECKPOINT),
    crash(255, SYNCS, wr(1, 1, item_unique(1, 0, 5, 1, 5))),
    crash(4, WRITES, batch(1, 1, [item_remove(1, 0), item_unique(1, 1, 6, 1, 5)])),
    crash(0, WRITES, DROP_REOPEN),
))

write("ops", "fault_sweep", ops(
    0,
    step(wr(0, 0, item_unique(0, 0, 1, 0, 0))),
    *[crash(n, WRITES if n % 2 else SYNCS, wr(0, n % 2, item_update(0, n % 4, n, [(n % 2, n % 6)])))
      for n in range(0, 12)],
))

# Records of td (declares its slug value), read-modify-writes and stale updates.
def d_insert(k, v, lst):
    return variant(0, 3) + u8(k) + u8(v) + u8(lst)


def d_remove(k):
    return variant(1, 3) + u8(k)


def d_update(t, k, by):
    return variant(2, 3) + u8(t) + u8(k) + u8(by)


def mixed(acct, region, items):
    # Each item: a ratio byte (0: an item of t0/t1, 1: an item of td or an update).
    assert 1 <= len(items) <= 3
    return u8(46) + u8(acct) + u8(region) + u8(len(items) - 1) + b"".join(items)


def t_item(item):
    return u8(0) + item


def d_item(item):
    return u8(1) + item


def db_update(acct, t, k, by):
    return u8(52) + u8(acct) + u8(t) + u8(k) + u8(by)


def stale(acct, region, t, k, by):
    return u8(55) + u8(acct) + u8(region) + u8(t) + u8(k) + u8(by)


TD = 2
write("ops", "updates", ops(
    0,
    step(mixed(0, 0, [d_item(d_insert(0, 1, 0))])),  # td k0 claims slug v1
    step(mixed(1, 0, [d_item(d_insert(1, 13, 2))])),  # slug v1 again: violation (exact list)
    step(mixed(1, 0, [d_item(d_insert(1, 8, 3))])),  # a contradicting list: refused
    step(wr(1, 0, item_unique(0, 0, 2, 1, 1))),  # t0 claims slug v1: violation, td owns it
    step(mixed(0, 0, [d_item(d_update(TD, 0, 2))])),  # keeps v1
    step(mixed(0, 0, [d_item(d_update(TD, 0, 3))])),  # another value (or none)
    step(mixed(0, 0, [d_item(d_insert(2, 4, 0)), d_item(d_update(TD, 2, 1))])),  # reads its own
    step(mixed(0, 0, [d_item(d_remove(2)), d_item(d_update(TD, 2, 1))])),
    step(mixed(0, 0, [t_item(item_unique(0, 3, 1, 1, 4)), d_item(d_update(0, 3, 5))])),
    step(db_update(0, 0, 3, 7)),
    step(db_update(1, TD, 1, 1)),
    step(db_update(0, TD, 0, 2)),
    step(stale(0, 0, 0, 3, 1)),
    step(stale(0, 0, TD, 0, 2)),
    step(stale(1, 0, TD, 3, 4)),  # absent: B creates it
    crash(3, ANY, stale(0, 0, TD, 0, 5)),
    crash(2, SYNCS, db_update(0, TD, 0, 1)),
    crash(1, WRITES, mixed(0, 0, [d_item(d_insert(1, 9, 0)), d_item(d_remove(0))])),
    step(REOPEN),
))

rng = random.Random(4)
for i, n in enumerate([300, 900]):
    write("ops", f"random{i}", bytes(rng.randrange(256) for _ in range(n)))


# --- open_damaged ------------------------------------------------------------------------
# Files (sorted paths): 0 global, 1 regions/ap, 2 regions/eu, 3 regions/us.
def flip(f, off, mask):
    return MORE + variant(0, 5) + u8(f) + struct.pack("<I", off) + u8(mask)


def setb(f, off, b4):
    return MORE + variant(1, 5) + u8(f) + struct.pack("<I", off) + bytes(b4)


def truncate(f, ln):
    return MORE + variant(2, 5) + u8(f) + struct.pack("<I", ln)


def zero_page(f, p):
    return MORE + variant(3, 5) + u8(f) + struct.pack("<H", p)


def copy_page(f, a, b):
    return MORE + variant(4, 5) + u8(f) + struct.pack("<H", a) + struct.pack("<H", b)


# First byte: flags (bit 0 crashed base image, bit 1 unverified: verify_on_open(false), bit 2
# with bit 1: damage aimed at stored values only).
CLEAN, CRASHED, UNVERIFIED, VALUES_ONLY = 0, 1, 2, 4
write("open_damaged", "clean", u8(CLEAN))
write("open_damaged", "crashed", u8(CRASHED))
write("open_damaged", "flip_header", u8(CLEAN) + flip(0, 40, 0x10))
write("open_damaged", "flip_region_data", u8(CRASHED) + flip(3, 20_000, 0x01) + flip(3, 40_000, 0x80))
write("open_damaged", "zero_first_page", u8(CLEAN) + zero_page(2, 0))
write("open_damaged", "zero_pages", u8(CRASHED) + zero_page(0, 3) + zero_page(1, 5) + zero_page(3, 9))
write("open_damaged", "truncate", u8(CLEAN) + truncate(3, 8192))
write("open_damaged", "overwrite", u8(CLEAN) + setb(1, 12_345, b"\xff\xff\xff\xff") + setb(0, 4100, b"\0\0\0\0"))
write("open_damaged", "copy_pages", u8(CRASHED) + copy_page(0, 2, 6) + copy_page(2, 7, 3))
# Unverified, damage anywhere: met by reads and writes of a cleanly closed store.
write("open_damaged", "unverified_zero_pages", u8(UNVERIFIED) + zero_page(0, 3) + zero_page(2, 5) + zero_page(3, 9))
write("open_damaged", "unverified_flip_region_data", u8(UNVERIFIED) + flip(3, 20_000, 0x01) + flip(1, 40_000, 0x80))
write("open_damaged", "unverified_copy_pages", u8(UNVERIFIED) + copy_page(0, 2, 6) + copy_page(2, 7, 3))
write("open_damaged", "unverified_crashed_zero_page", u8(UNVERIFIED | CRASHED) + zero_page(2, 4))
# Values only: offsets and page numbers index the stored values of a region file.
TRUSTING = UNVERIFIED | VALUES_ONLY
write("open_damaged", "trusting_flip_values", u8(TRUSTING) + flip(0, 7, 0x04) + flip(1, 300, 0x01))
write("open_damaged", "trusting_zero_value", u8(TRUSTING | CRASHED) + zero_page(2, 5))
write("open_damaged", "trusting_overwrite_header", u8(TRUSTING) + setb(1, 0, b"\x02\x01\0\0"))
write("open_damaged", "trusting_truncate", u8(TRUSTING) + truncate(2, 70_000))

# --- record_decode -----------------------------------------------------------------------
# Envelope v2: [2][codec][schema version u16 LE][crc32 LE][payload], the CRC over the row the
# target decodes at (table "t", account 1, key "k"), the codec, the version and the payload.
def envelope(codec, payload, version=1):
    dkey = struct.pack(">Q", 1) + b"k"
    row = bytes([1]) + b"t" + struct.pack("<I", len(dkey)) + dkey
    crc = zlib.crc32(row + bytes([codec]) + struct.pack("<H", version) + payload)
    return bytes([2, codec]) + struct.pack("<HI", version, crc) + payload


write("record_decode", "empty", b"")
write("record_decode", "raw_envelope", envelope(0, b"hello, regionkv"))
write("record_decode", "typed_bad_crc", bytes([2, 1, 1, 0, 0, 0, 0, 0]) + bytes(40))
write("record_decode", "raw_version2", envelope(0, b"hello, regionkv", version=2))
# Two records of the target's type, as `encode_value::<Rec>` wrote them in envelope v1 (the
# payloads are unchanged since): each resealed as envelope v2 at versions 1 and 2, and the
# payload alone (the target also seals its input as a payload).
RECS = [
    # Rec { name: "acme", data: [1, 2, 3], n: 7, opt: Some(9), tags: ["a", "bc"] }
    "010124ab202501020361ffffffffffffff6263ffffffffffff61636d65ffffffffe5ffffff03000000"
    "07000000000000000109000000d3ffffff02000000",
    # Rec { name: <32 bytes>, data: [0xAB; 40], n: u64::MAX, opt: None, tags: [<27 bytes>; 3] }
    "01016a3815a661206c6f6e676572206e616d652074686174206973206e6f7420696e6c696e65abababab"
    "abababababababababababababababababababababababababababababababababababab746167206e75"
    "6d626572206f6e652c206f7574206f66206c696e65746167206e756d626572206f6e652c206f7574206f"
    "66206c696e65746167206e756d626572206f6e652c206f7574206f66206c696e659b000000afffffff9b"
    "000000c2ffffff9b000000d5ffffffa00000004fffffff67ffffff28000000ffffffffffffffff000000"
    "0000cbffffff03000000",
]
for i, h in enumerate(RECS):
    payload = bytes.fromhex(h)[6:]  # the payload of the envelope v1 these were taken from
    write("record_decode", f"typed{i}", envelope(1, payload))
    write("record_decode", f"typed{i}_payload", payload)
    write("record_decode", f"typed{i}_version2", envelope(1, payload, version=2))
