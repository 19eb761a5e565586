//! Byte formats: the record envelope, the value trait (rkyv or raw bytes) and a small
//! total codec for internal rows.

pub(crate) mod bin;
pub(crate) mod envelope;
pub(crate) mod value;
