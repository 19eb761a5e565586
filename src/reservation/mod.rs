//! The two-phase reservation protocol (see docs/design.md): the pure entry state machine,
//! the typed unique index it is stored in, the coordinator that runs Reserve / Confirm /
//! Checkpoint against the global partition, the checkpoint timer, and recovery at
//! open.

pub(crate) mod cache;
pub(crate) mod coordinator;
pub(crate) mod index;
pub(crate) mod recovery;
pub(crate) mod state;
pub(crate) mod timer;
