//! Byte formats: the record envelope, the value trait (rkyv or raw bytes), the schema
//! fingerprint of record types and a small total codec for internal rows.

pub(crate) mod bin;
pub(crate) mod envelope;
pub mod shape;
pub(crate) mod value;
