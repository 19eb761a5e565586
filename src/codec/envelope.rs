//! The stored value envelope:
//! `[envelope version u8][codec u8][schema version u16 LE][crc32 u32 LE][payload]`.
//!
//! The CRC covers the row the value is stored under, the codec and schema version, and the
//! payload: `crc32([table_len u8][table][key_len u32 LE][data key][codec][schema version
//! u16 LE][payload])`, where the data key is `account ++ user key`. Value bytes copied (by
//! damage) under another key, account or table fail the check, so a damaged file can never
//! make one account's value read back as another's; a damaged schema version fails it too,
//! so damage is never reported as a schema mismatch.
//!
//! The schema version names the row of `_schemas` (table, version) that says which type
//! wrote the payload.
//!
//! The payload starts at byte 8. rkyv's format is pinned to alignment 1 (see Cargo.toml),
//! so the payload can be read in place at any offset of redb's unaligned value slice.

use crate::codec::value::Value;
use crate::error::{Error, Result};

/// Envelope format version.
pub(crate) const ENVELOPE_VERSION: u8 = 2;
/// Length of the header before the payload.
pub(crate) const HEADER_LEN: usize = 8;

/// Why a stored value was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnvelopeError {
    Short(usize),
    Version(u8),
    Codec { found: u8, expected: u8 },
    Crc { stored: u32, computed: u32 },
    Invalid(String),
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvelopeError::Short(n) => write!(f, "value of {n} bytes is shorter than its header"),
            EnvelopeError::Version(v) => write!(f, "unknown envelope version {v}"),
            EnvelopeError::Codec { found, expected } => {
                write!(
                    f,
                    "value written with codec {found}, table expects codec {expected}"
                )
            }
            EnvelopeError::Crc { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            EnvelopeError::Invalid(why) => write!(f, "payload failed validation: {why}"),
        }
    }
}

/// The row a value is stored under: its user table and its data key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding<'a> {
    pub table: &'a str,
    /// `account u64 BE ++ user key`.
    pub key: &'a [u8],
}

/// Inputs of the CRC up to this many bytes are hashed in one pass from a stack copy.
const ONE_PASS: usize = 512;

/// `crc32([table_len u8][table][key_len u32 LE][key][codec][version u16 LE][payload])`.
///
/// A small record (the usual case: a row of a few hundred bytes) is copied into one stack
/// buffer and hashed in a single call: fed as seven slices, crc32fast runs its short-input
/// path and a SIMD fold with its final reduction for each slice longer than 15 bytes (a
/// 116-byte record: 35 ns as seven calls, 18 ns for the same bytes in one call; with the
/// copy 32 ns cached, and ~7 ns less per record in a scan, where the bytes come from
/// memory). The bytes hashed, and so the value, are the same either way
/// (`one_pass_crc_is_the_chunked_crc`).
#[inline]
fn crc(b: &Binding<'_>, codec: u8, version: u16, payload: &[u8]) -> u32 {
    let table = b.table.as_bytes();
    let head = 1 + table.len() + 4 + b.key.len() + 3;
    if head + payload.len() <= ONE_PASS {
        let mut buf = [0u8; ONE_PASS];
        let mut at = 0;
        for part in [
            &[table.len() as u8][..],
            table,
            &(b.key.len() as u32).to_le_bytes(),
            b.key,
            &[codec],
            &version.to_le_bytes(),
            payload,
        ] {
            if let Some(dst) = buf.get_mut(at..at + part.len()) {
                dst.copy_from_slice(part);
            }
            at += part.len();
        }
        return crc32fast::hash(buf.get(..at).unwrap_or_default());
    }
    chunked_crc(b, codec, version, payload)
}

/// The same CRC fed slice by slice (records too large for [`crc`]'s stack copy).
fn chunked_crc(b: &Binding<'_>, codec: u8, version: u16, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[b.table.len() as u8]);
    h.update(b.table.as_bytes());
    h.update(&(b.key.len() as u32).to_le_bytes());
    h.update(b.key);
    h.update(&[codec]);
    h.update(&version.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Wraps an encoded payload of schema `version` in an envelope bound to its row.
pub(crate) fn seal<V: Value + ?Sized>(b: &Binding<'_>, version: u16, payload: &[u8]) -> Vec<u8> {
    seal_raw(b, V::CODEC, version, payload)
}

/// [`seal`] with the codec given as a byte.
pub(crate) fn seal_raw(b: &Binding<'_>, codec: u8, version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(ENVELOPE_VERSION);
    out.push(codec);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&crc(b, codec, version, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A checked envelope: the schema version it names and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsealed<'v> {
    pub version: u16,
    pub payload: &'v [u8],
}

/// Checks header and CRC and returns the schema version and the payload. Total: any input
/// gives `Ok` or `Err`.
#[inline]
pub(crate) fn unseal<'v>(
    bytes: &'v [u8],
    expected_codec: u8,
    b: &Binding<'_>,
) -> Result<Unsealed<'v>, EnvelopeError> {
    if bytes.len() < HEADER_LEN {
        return Err(EnvelopeError::Short(bytes.len()));
    }
    if bytes[0] != ENVELOPE_VERSION {
        return Err(EnvelopeError::Version(bytes[0]));
    }
    if bytes[1] != expected_codec {
        return Err(EnvelopeError::Codec {
            found: bytes[1],
            expected: expected_codec,
        });
    }
    let version = u16::from_le_bytes([bytes[2], bytes[3]]);
    let stored = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let payload = &bytes[HEADER_LEN..];
    let computed = crc(b, bytes[1], version, payload);
    if stored != computed {
        return Err(EnvelopeError::Crc { stored, computed });
    }
    Ok(Unsealed { version, payload })
}

/// Checks the envelope and validates the payload for `V`, returning the schema version and
/// the in-place view (for tests: the store and `decode_value` compare the version before
/// validating).
#[cfg(test)]
pub(crate) fn decode<'v, V: Value + ?Sized>(
    bytes: &'v [u8],
    b: &Binding<'_>,
) -> Result<(u16, &'v V::View), EnvelopeError> {
    let u = unseal(bytes, V::CODEC, b)?;
    V::view(u.payload)
        .map(|v| (u.version, v))
        .map_err(EnvelopeError::Invalid)
}

/// The [`Error::Corrupt`] for a stored value of `table` under `data_key` that failed `e`.
#[cold]
pub(crate) fn corrupt_value(
    partition: &str,
    table: &str,
    data_key: &[u8],
    e: impl std::fmt::Display,
) -> Error {
    let key = data_key.get(8..).unwrap_or_default();
    Error::corrupt(
        partition,
        format!(
            "table `{table}`, key {:?}: {e}",
            String::from_utf8_lossy(key)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::value::Raw;

    const AT: Binding<'static> = Binding {
        table: "t",
        key: b"\0\0\0\0\0\0\0\x01k",
    };

    #[test]
    fn seal_unseal_round_trip_and_every_flip_detected() {
        let sealed = seal::<Raw>(&AT, 3, b"payload bytes");
        assert_eq!(
            decode::<Raw>(&sealed, &AT).unwrap(),
            (3, &b"payload bytes"[..])
        );
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    decode::<Raw>(&bad, &AT).is_err(),
                    "flip at byte {i} bit {bit} undetected"
                );
            }
        }
        for cut in 0..HEADER_LEN {
            assert_eq!(
                unseal(&sealed[..cut], Raw::CODEC, &AT),
                Err(EnvelopeError::Short(cut))
            );
        }
    }

    #[test]
    fn one_pass_crc_is_the_chunked_crc() {
        let keys: [&[u8]; 3] = [b"\0\0\0\0\0\0\0\x01", b"\0\0\0\0\0\0\0\x01k", &[0xAB; 200]];
        for table in ["t", "licenses", &"x".repeat(64)] {
            for key in keys {
                let b = Binding { table, key };
                for len in (0..700)
                    .step_by(7)
                    .chain([ONE_PASS - 1, ONE_PASS, ONE_PASS + 1])
                {
                    let payload: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
                    for (codec, version) in [(0, 1), (1, 0xBEEF)] {
                        assert_eq!(
                            crc(&b, codec, version, &payload),
                            chunked_crc(&b, codec, version, &payload),
                            "table {table}, key {} bytes, payload {len} bytes",
                            key.len()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_value_read_under_another_row_fails_its_check() {
        let sealed = seal::<Raw>(&AT, 1, b"payload bytes");
        let other_account = Binding {
            table: "t",
            key: b"\0\0\0\0\0\0\0\x02k",
        };
        let other_key = Binding {
            table: "t",
            key: b"\0\0\0\0\0\0\0\x01j",
        };
        let other_table = Binding {
            table: "u",
            key: AT.key,
        };
        for b in [other_account, other_key, other_table] {
            assert!(
                matches!(decode::<Raw>(&sealed, &b), Err(EnvelopeError::Crc { .. })),
                "{b:?}"
            );
        }
    }
}
