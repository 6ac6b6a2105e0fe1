//! The forms a data subject may be stored under in an organisation: as
//! given and, for a MAC address, as the organisation's pseudonyms of it.
//! Subject requests ([`crate::subject`]) and exports (which leave blocked
//! subjects out) both match these forms.

use glimpse_common::identity::OrgId;
use glimpse_common::minimise::{pseudonymous_mac, MacForm, Pseudonymiser};
use glimpse_common::wire::admin::Subject;

use super::{Store, StoreError};

impl Store {
    /// Every one of `subjects` and, for a MAC address, the organisation's
    /// pseudonym of it (stored when the organisation pseudonymises MACs, or
    /// did at some point): the two-layer form of
    /// [`glimpse_common::minimise`], and the one-layer form that collectors
    /// stored before devices pseudonymised themselves. The pseudonym key is
    /// derived once.
    pub fn subject_forms(&self, org: &OrgId, subjects: &[Subject]) -> Result<Vec<Subject>, StoreError> {
        let mut forms = subjects.to_vec();
        if !subjects.iter().any(|s| matches!(s, Subject::Mac(_))) || self.org_keys().get(org)?.is_none() {
            return Ok(forms);
        }
        let key = self.pseudonym_key(org)?;
        let pseudonymiser = Pseudonymiser::new(key.clone());
        for subject in subjects {
            if let Subject::Mac(mac) = subject {
                forms.push(Subject::Mac(pseudonymous_mac(&key, *mac)));
                forms.push(Subject::Mac(pseudonymiser.stored_form(*mac, MacForm::Real)));
            }
        }
        Ok(forms)
    }

    /// The forms every subject `org` has blocked may be stored under: what
    /// ingest drops and exports leave out. Empty when it blocked nobody.
    pub fn blocked_forms(&self, org: &OrgId) -> Result<Vec<Subject>, StoreError> {
        let blocked = self.policies().get(org).blocked;
        if blocked.is_empty() {
            return Ok(Vec::new());
        }
        self.subject_forms(org, blocked.as_slice())
    }
}
