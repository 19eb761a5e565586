//! The two-phase reservation protocol (DESIGN.md section 4): the pure entry state machine,
//! the coordinator that runs Reserve / Confirm / Abort / Checkpoint against the global
//! partition, and recovery at open.

pub(crate) mod coordinator;
pub(crate) mod recovery;
pub(crate) mod state;
