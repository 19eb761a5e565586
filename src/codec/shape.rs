//! Schema identity of record types: the [`Schema`] trait and its compile-time fingerprint.
//!
//! A table records, in every region where it exists, the codec, the schema version and the
//! fingerprint of the type it holds (`_schemas`, see `docs/design.md`). A read or write with
//! a type of another fingerprint is refused with [`Error::SchemaMismatch`](crate::Error):
//! adding, removing, reordering, renaming or retyping a field can never read stored bytes
//! as the wrong values.
//!
//! The fingerprint is a hash, computed by `const fn`s at compile time, over the archived
//! shape: the kind, the fields' names in order, each field's type through its own
//! fingerprint, enum variants in order (with explicit discriminants), and the rkyv
//! attributes that change the archived bytes. `#[derive(Schema)]` writes it for structs and enums; this module implements it for
//! the standard types rkyv archives.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A record type's schema identity, for [`Table`](crate::Table)s of rkyv values.
///
/// Derive it next to rkyv's derives:
///
/// ```
/// use regionkv::Schema;
/// #[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, Schema)]
/// #[rkyv(crate = regionkv::rkyv)]
/// struct License { key: String, seats: u32 }
///
/// #[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, Schema)]
/// #[rkyv(crate = regionkv::rkyv)]
/// struct LicenseSwapped { seats: u32, key: String }
///
/// assert_ne!(License::FINGERPRINT, LicenseSwapped::FINGERPRINT);
/// ```
///
/// Two types have the same fingerprint exactly when rkyv archives them alike *and* their
/// fields carry the same names in the same order: the type's own name does not count (a
/// rename keeps records readable), a field's name does (two `u32` fields swapped would
/// otherwise read as each other). Field types count through their own `Schema`; for a field
/// type from another crate without an impl, write `#[schema(as = "label")]` on the field.
///
/// Implementing it by hand is possible (for a type the derive cannot see into): give
/// `FINGERPRINT` a value that changes whenever the archived layout does, e.g.
/// `regionkv::schema_label("my-type-v3")`.
pub trait Schema {
    /// The type's name, for messages (not part of the fingerprint).
    const TYPE_NAME: &'static str;
    /// A 64-bit hash of the archived shape.
    const FINGERPRINT: u64;
}

/// A fingerprint for a hand-written [`Schema`] impl: a hash of `label`.
pub const fn schema_label(label: &str) -> u64 {
    __private::fp_label(label)
}

#[doc(hidden)]
pub mod __private {
    //! Used by `#[derive(Schema)]`. Not a stable API.

    /// FNV-1a 64 offset basis.
    pub const FP_START: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// Hashes the bytes of `v` (little-endian) into `h`.
    pub const fn fp_u64(mut h: u64, v: u64) -> u64 {
        let b = v.to_le_bytes();
        let mut i = 0;
        while i < 8 {
            h ^= b[i] as u64;
            h = h.wrapping_mul(PRIME);
            i += 1;
        }
        h
    }

    /// Hashes `s`, length first (so that ("ab","c") and ("a","bc") differ).
    pub const fn fp_str(h: u64, s: &str) -> u64 {
        let b = s.as_bytes();
        let mut h = fp_u64(h, b.len() as u64);
        let mut i = 0;
        while i < b.len() {
            h ^= b[i] as u64;
            h = h.wrapping_mul(PRIME);
            i += 1;
        }
        h
    }

    /// Final mix (splitmix64), so that near inputs give far fingerprints.
    pub const fn fp_finish(h: u64) -> u64 {
        let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The fingerprint of a named leaf type or a label.
    pub const fn fp_label(label: &str) -> u64 {
        fp_finish(fp_str(FP_START, label))
    }

    /// The fingerprint of a generic type applied to its parameters' fingerprints.
    pub const fn fp_apply(name: &str, args: &[u64]) -> u64 {
        let mut h = fp_str(FP_START, name);
        h = fp_u64(h, args.len() as u64);
        let mut i = 0;
        while i < args.len() {
            h = fp_u64(h, args[i]);
            i += 1;
        }
        fp_finish(h)
    }
}

use __private::{fp_apply, fp_label};

macro_rules! leaf {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        impl Schema for $t {
            const TYPE_NAME: &'static str = $name;
            const FINGERPRINT: u64 = fp_label($name);
        }
    )*};
}

leaf! {
    u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64", u128 => "u128",
    i8 => "i8", i16 => "i16", i32 => "i32", i64 => "i64", i128 => "i128",
    f32 => "f32", f64 => "f64", bool => "bool", char => "char", () => "()",
    usize => "usize", isize => "isize",
    std::num::NonZeroU8 => "NonZeroU8", std::num::NonZeroU16 => "NonZeroU16",
    std::num::NonZeroU32 => "NonZeroU32", std::num::NonZeroU64 => "NonZeroU64",
    std::num::NonZeroU128 => "NonZeroU128",
    std::num::NonZeroI8 => "NonZeroI8", std::num::NonZeroI16 => "NonZeroI16",
    std::num::NonZeroI32 => "NonZeroI32", std::num::NonZeroI64 => "NonZeroI64",
    std::num::NonZeroI128 => "NonZeroI128",
    // Not alike: an archived `String` holds a short string inline, an archived `Box<str>`
    // is always a relative pointer and a length.
    String => "string", Box<str> => "box-str",
}

macro_rules! generic {
    ($($name:literal: [$($p:ident),+] $t:ty;)*) => {$(
        impl<$($p: Schema),+> Schema for $t {
            const TYPE_NAME: &'static str = $name;
            const FINGERPRINT: u64 = fp_apply($name, &[$($p::FINGERPRINT),+]);
        }
    )*};
}

generic! {
    // `Vec<T>` and `Box<[T]>` archive alike.
    "vec": [T] Vec<T>;
    "vec": [T] Box<[T]>;
    "box": [T] Box<T>;
    "option": [T] Option<T>;
    "result": [T, E] Result<T, E>;
    "btreemap": [K, V] BTreeMap<K, V>;
    "btreeset": [T] BTreeSet<T>;
    "hashmap": [K, V] HashMap<K, V>;
    "hashset": [T] HashSet<T>;
    "tuple": [A] (A,);
    "tuple": [A, B] (A, B);
    "tuple": [A, B, C] (A, B, C);
    "tuple": [A, B, C, D] (A, B, C, D);
    "tuple": [A, B, C, D, E] (A, B, C, D, E);
    "tuple": [A, B, C, D, E, F] (A, B, C, D, E, F);
    "tuple": [A, B, C, D, E, F, G] (A, B, C, D, E, F, G);
    "tuple": [A, B, C, D, E, F, G, H] (A, B, C, D, E, F, G, H);
}

impl<T: Schema, const N: usize> Schema for [T; N] {
    const TYPE_NAME: &'static str = "array";
    const FINGERPRINT: u64 = fp_apply("array", &[T::FINGERPRINT, N as u64]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_and_generic_fingerprints_differ() {
        let all = [
            u32::FINGERPRINT,
            u64::FINGERPRINT,
            i32::FINGERPRINT,
            String::FINGERPRINT,
            <Box<str>>::FINGERPRINT,
            Vec::<u8>::FINGERPRINT,
            Vec::<u32>::FINGERPRINT,
            Option::<u32>::FINGERPRINT,
            <[u8; 4]>::FINGERPRINT,
            <[u8; 5]>::FINGERPRINT,
            <(u32, u64)>::FINGERPRINT,
            <(u64, u32)>::FINGERPRINT,
            BTreeMap::<String, u32>::FINGERPRINT,
            HashMap::<String, u32>::FINGERPRINT,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(String::FINGERPRINT, <Box<str>>::FINGERPRINT);
        assert_eq!(Vec::<u8>::FINGERPRINT, <Box<[u8]>>::FINGERPRINT);
    }

    /// Equal fingerprints of std types promise equal archives; the `String`/`Box<str>`
    /// pair does not archive alike, so it must not share one.
    #[test]
    fn equal_std_fingerprints_archive_alike() {
        let bytes = |b: rkyv::util::AlignedVec| b.into_vec();
        // Short strings: inline in a `String`, behind a pointer in a `Box<str>`.
        for s in ["", "ab", "8 bytes!"] {
            let string = bytes(rkyv::to_bytes::<rkyv::rancor::Error>(&s.to_owned()).unwrap());
            let boxed: Box<str> = s.into();
            let boxed = bytes(rkyv::to_bytes::<rkyv::rancor::Error>(&boxed).unwrap());
            assert_ne!(string, boxed, "{s:?}");
        }
        for v in [vec![], vec![1u8, 2, 3], vec![7; 40]] {
            let vec = bytes(rkyv::to_bytes::<rkyv::rancor::Error>(&v).unwrap());
            let boxed: Box<[u8]> = v.clone().into_boxed_slice();
            let boxed = bytes(rkyv::to_bytes::<rkyv::rancor::Error>(&boxed).unwrap());
            assert_eq!(vec, boxed, "{v:?}");
        }
    }
}
