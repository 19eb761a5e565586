//! The stored value envelope: `[version u8][codec u8][crc32 u32 LE][payload]`.
//!
//! The payload starts at byte 6. rkyv's format is pinned to alignment 1 (see Cargo.toml),
//! so the payload can be read in place at any offset of redb's unaligned value slice.

use crate::codec::value::Value;

/// Envelope format version.
pub(crate) const ENVELOPE_VERSION: u8 = 1;
/// Length of the header before the payload.
pub(crate) const HEADER_LEN: usize = 6;

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

/// Wraps an encoded payload in an envelope.
pub(crate) fn seal<V: Value + ?Sized>(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(ENVELOPE_VERSION);
    out.push(V::CODEC);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks header and CRC and returns the payload. Total: any input gives `Ok` or `Err`.
#[inline]
pub(crate) fn unseal(bytes: &[u8], expected_codec: u8) -> Result<&[u8], EnvelopeError> {
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
    let stored = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
    let payload = &bytes[HEADER_LEN..];
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(EnvelopeError::Crc { stored, computed });
    }
    Ok(payload)
}

/// Checks the envelope and validates the payload for `V`, returning the in-place view.
#[inline]
pub(crate) fn decode<V: Value + ?Sized>(bytes: &[u8]) -> Result<&V::View, EnvelopeError> {
    let payload = unseal(bytes, V::CODEC)?;
    V::view(payload).map_err(EnvelopeError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::value::Raw;

    #[test]
    fn seal_unseal_round_trip_and_every_flip_detected() {
        let sealed = seal::<Raw>(b"payload bytes");
        assert_eq!(decode::<Raw>(&sealed).unwrap(), b"payload bytes");
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    decode::<Raw>(&bad).is_err(),
                    "flip at byte {i} bit {bit} undetected"
                );
            }
        }
        for cut in 0..HEADER_LEN {
            assert_eq!(
                unseal(&sealed[..cut], Raw::CODEC),
                Err(EnvelopeError::Short(cut))
            );
        }
    }
}
