//! Tickets made durable together, named so that the stores that commit
//! them can commit them together. A module of its own because both the
//! segment seam (`store`, which reports a cohort) and the control store
//! (`keys::registry`, which commits one cohort's stream sequences in one
//! transaction) need it, and neither may depend on the other.

/// Tickets made durable by one event (see
/// [`RemoteWait::cohort`](crate::store::seam::RemoteWait::cohort)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cohort {
    /// Names the cohort among those of the same store.
    pub id: u64,
    /// How many tickets it has.
    pub size: usize,
}
