//! `record_decode`: arbitrary bytes as a stored value.
//!
//! 1. The input as a whole stored value (envelope + payload), decoded as a typed rkyv
//!    record and as `Raw`: `Ok` or `Err`, never a panic or UB (the build runs under
//!    AddressSanitizer). When the typed decode succeeds every field is read.
//! 2. The input as a payload behind a *valid* envelope (correct version, codec and CRC),
//!    so that rkyv's validation, not the CRC, is what the fuzzer attacks.
//! 3. The input through `arbitrary` as a typed record: `encode_value` then `decode_value`
//!    must give back exactly that record (and the same for `Raw`).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use regionkv::rkyv;
use regionkv::{AccountId, Raw, decode_value, encode_value};

#[derive(Debug, PartialEq, Arbitrary, rkyv::Archive, rkyv::Serialize, regionkv::Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct Rec {
    name: String,
    data: Vec<u8>,
    n: u64,
    opt: Option<u32>,
    tags: Vec<String>,
}

/// Reads every field of a validated archive; returns a value that depends on all of them
/// so that nothing is optimised away.
fn touch(a: &ArchivedRec) -> u64 {
    let mut acc = a.name.len() as u64;
    acc = acc.wrapping_add(a.name.as_str().bytes().map(u64::from).sum::<u64>());
    acc = acc.wrapping_add(a.data.len() as u64);
    acc = acc.wrapping_add(a.data.iter().map(|&b| u64::from(b)).sum::<u64>());
    acc = acc.wrapping_add(a.n.to_native());
    acc = acc.wrapping_add(a.opt.as_ref().map_or(7, |v| u64::from(v.to_native())));
    acc = acc.wrapping_add(a.tags.len() as u64);
    for t in a.tags.iter() {
        acc = acc.wrapping_add(t.len() as u64);
        acc = acc.wrapping_add(t.as_str().chars().map(u64::from).sum::<u64>());
    }
    acc
}

fn same(a: &ArchivedRec, r: &Rec) -> bool {
    a.name.as_str() == r.name
        && a.data.as_slice() == r.data.as_slice()
        && a.n.to_native() == r.n
        && a.opt.as_ref().map(|v| v.to_native()) == r.opt
        && a.tags.len() == r.tags.len()
        && a.tags.iter().zip(&r.tags).all(|(x, y)| x.as_str() == y)
}

fuzz_target!(|data: &[u8]| {
    // 1. The bytes as a stored value.
    if let Ok(a) = decode_value::<Rec>("t", AccountId::from_raw(1), b"k", data) {
        std::hint::black_box(touch(a));
    }
    if let Ok(raw) = decode_value::<Raw>("t", AccountId::from_raw(1), b"k", data) {
        // A Raw value is the payload after the header: never longer than the input.
        assert!(raw.len() <= data.len());
        std::hint::black_box(raw.iter().map(|&b| u64::from(b)).sum::<u64>());
    }

    // 2. The bytes as a payload behind a valid envelope. `encode_value::<Raw>` seals the
    //    payload with a CRC over the row and payload (not the codec byte); switching the codec byte to the typed
    //    codec gives a well-formed typed envelope around arbitrary bytes. (If the envelope
    //    layout ever changes this only makes the path less effective, never a false alarm.)
    let sealed = encode_value::<Raw>("t", AccountId::from_raw(1), b"k", data)
        .expect("Raw encoding is total");
    let back = decode_value::<Raw>("t", AccountId::from_raw(1), b"k", &sealed)
        .expect("a sealed Raw value decodes");
    assert_eq!(back, data, "Raw round trip");
    if sealed.len() >= 2 {
        for codec in [1u8, sealed[1].wrapping_add(1)] {
            let mut typed = sealed.clone();
            typed[1] = codec;
            if let Ok(a) = decode_value::<Rec>("t", AccountId::from_raw(1), b"k", &typed) {
                std::hint::black_box(touch(a));
            }
        }
    }

    // 3. A structured record: encode then decode must round-trip exactly.
    let mut u = Unstructured::new(data);
    if let Ok(rec) = Rec::arbitrary(&mut u) {
        let bytes = encode_value::<Rec>("t", AccountId::from_raw(1), b"k", &rec)
            .expect("encoding a record");
        let a = decode_value::<Rec>("t", AccountId::from_raw(1), b"k", &bytes)
            .expect("decoding what encode_value produced");
        assert!(same(a, &rec), "round trip changed the record: {rec:?}");
        // The typed value must not pass as Raw with the same bytes (codec is checked).
        assert!(
            decode_value::<Raw>("t", AccountId::from_raw(1), b"k", &bytes).is_err(),
            "typed value accepted as Raw"
        );
        // Truncations of a valid value: an error or (for a prefix that still validates) a
        // readable record, never a panic.
        for cut in [0, 1, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            if let Ok(a) = decode_value::<Rec>("t", AccountId::from_raw(1), b"k", &bytes[..cut]) {
                std::hint::black_box(touch(a));
            }
        }
    }
});
