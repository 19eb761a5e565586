//! What a table can hold: rkyv-archived types (read in place) or raw bytes.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::rancor::BoxedError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::codec::shape::Schema;

mod sealed {
    pub trait Sealed {}
}

/// A type that can be stored in a [`Table`](crate::Table).
///
/// Implemented for every rkyv-archivable type that implements [`Schema`] (records read in
/// place, as their `Archived` form; `#[derive(Schema)]` next to rkyv's derives) and for
/// [`Raw`] (bytes in, `&[u8]` out, for callers with their own encoding). Sealed: the two
/// implementations cover every use.
pub trait Value: sealed::Sealed + 'static {
    /// What a read yields, borrowed from the database page.
    type View: ?Sized;
    /// What a write takes.
    type Input: ?Sized;
    #[doc(hidden)]
    const CODEC: u8;
    /// The fingerprint of the stored shape (see [`Schema`]).
    #[doc(hidden)]
    const FINGERPRINT: u64;
    /// The type's name, for messages.
    #[doc(hidden)]
    const TYPE_NAME: &'static str;
    #[doc(hidden)]
    fn encode(input: &Self::Input) -> Result<Vec<u8>, String>;
    #[doc(hidden)]
    fn view(payload: &[u8]) -> Result<&Self::View, String>;
    /// # Safety
    /// `payload` must be a slice that `view` accepted (same bytes).
    #[doc(hidden)]
    unsafe fn view_unchecked(payload: &[u8]) -> &Self::View;
}

/// Marker for tables of raw byte values: `Table<Raw>` takes `&[u8]` and reads back `&[u8]`.
#[derive(Debug, Clone, Copy)]
pub struct Raw;

impl sealed::Sealed for Raw {}
impl Value for Raw {
    type View = [u8];
    type Input = [u8];
    const CODEC: u8 = 0;
    const FINGERPRINT: u64 = crate::codec::shape::schema_label("raw bytes");
    const TYPE_NAME: &'static str = "Raw";
    fn encode(input: &[u8]) -> Result<Vec<u8>, String> {
        Ok(input.to_vec())
    }
    #[inline]
    fn view(payload: &[u8]) -> Result<&[u8], String> {
        Ok(payload)
    }
    #[inline]
    unsafe fn view_unchecked(payload: &[u8]) -> &[u8] {
        payload
    }
}

impl<T> sealed::Sealed for T where T: rkyv::Archive {}
impl<T> Value for T
where
    T: rkyv::Archive
        + Schema
        + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rkyv::rancor::Error>>
        + 'static,
    T::Archived: rkyv::Portable
        + for<'a> rkyv::bytecheck::CheckBytes<HighValidator<'a, BoxedError>>
        + for<'a> rkyv::bytecheck::CheckBytes<HighValidator<'a, rkyv::rancor::Failure>>,
{
    type View = T::Archived;
    type Input = T;
    const CODEC: u8 = 1;
    const FINGERPRINT: u64 = T::FINGERPRINT;
    const TYPE_NAME: &'static str = T::TYPE_NAME;
    fn encode(input: &T) -> Result<Vec<u8>, String> {
        rkyv::to_bytes::<rkyv::rancor::Error>(input)
            .map(|v| v.into_vec())
            .map_err(|e| e.to_string())
    }
    #[inline]
    fn view(payload: &[u8]) -> Result<&T::Archived, String> {
        // The hot path validates with `Failure` (no allocation, no message); only a
        // rejected payload is validated again to say why.
        match rkyv::access::<T::Archived, rkyv::rancor::Failure>(payload) {
            Ok(v) => Ok(v),
            Err(_) => match rkyv::access::<T::Archived, BoxedError>(payload) {
                Err(e) => Err(e.to_string()),
                Ok(_) => Err("payload rejected by validation".to_owned()),
            },
        }
    }
    #[inline]
    unsafe fn view_unchecked(payload: &[u8]) -> &T::Archived {
        // SAFETY: the caller guarantees `payload` passed `view` (rkyv's validated access)
        // for this same type, and the archive format has alignment 1 (pinned features), so
        // the unchecked access reads exactly what validation checked.
        unsafe { rkyv::access_unchecked::<T::Archived>(payload) }
    }
}
