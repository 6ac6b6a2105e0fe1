//! The admin API's open connections and who has used each, so that
//! revoking a certificate or a token ends that identity's live requests
//! and streams at once, not at its next request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// An identity as revocation names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    /// An admin certificate, by serial (hex).
    Certificate(String),
    /// An API token, by id.
    Token(String),
}

/// One open connection.
#[derive(Debug)]
pub struct LiveConnection {
    cut: watch::Sender<bool>,
    used: Mutex<HashSet<Credential>>,
}

impl LiveConnection {
    /// Records that `credential` made a request on this connection.
    pub fn used(&self, credential: Credential) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        // A connection is bounded in time, and each credential is kept
        // once; still, a connection cycling through many tokens must not
        // grow this without end.
        if used.len() < 64 {
            used.insert(credential);
        } else if !used.contains(&credential) {
            // Past the bound the connection is closed rather than left
            // untracked.
            let _ = self.cut.send(true);
        }
    }

    /// Turns true when the connection must close now.
    pub fn cut_signal(&self) -> watch::Receiver<bool> {
        self.cut.subscribe()
    }
}

/// Every open admin API connection.
#[derive(Debug, Default)]
pub struct LiveConnections {
    next: Mutex<u64>,
    open: Mutex<HashMap<u64, Arc<LiveConnection>>>,
}

/// Removes its connection from the table when dropped.
#[derive(Debug)]
pub struct LiveGuard {
    table: Arc<LiveConnections>,
    id: u64,
    /// The connection.
    pub connection: Arc<LiveConnection>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.table.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl LiveConnections {
    /// Enters a new connection, used by `credential` from the start when it
    /// presented a certificate.
    pub fn enter(self: &Arc<Self>, credential: Option<Credential>) -> LiveGuard {
        let id = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        let connection = Arc::new(LiveConnection { cut: watch::channel(false).0, used: Mutex::default() });
        if let Some(credential) = credential {
            connection.used(credential);
        }
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, connection.clone());
        LiveGuard { table: self.clone(), id, connection }
    }

    /// Closes every connection `revoked` says yes to one of whose
    /// credentials of; returns how many.
    pub fn cut(&self, revoked: impl Fn(&Credential) -> bool) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut closed = 0;
        for connection in open.values() {
            let hit = connection.used.lock().unwrap_or_else(|p| p.into_inner()).iter().any(&revoked);
            if hit && !*connection.cut.borrow() {
                let _ = connection.cut.send(true);
                closed += 1;
            }
        }
        closed
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoking_a_credential_cuts_exactly_the_connections_it_used() {
        let table = Arc::new(LiveConnections::default());
        let cert = table.enter(Some(Credential::Certificate("0a".into())));
        let token = table.enter(None);
        token.connection.used(Credential::Token("t1".into()));
        let other = table.enter(None);
        let (cert_cut, token_cut, other_cut) =
            (cert.connection.cut_signal(), token.connection.cut_signal(), other.connection.cut_signal());
        assert_eq!(table.cut(|c| *c == Credential::Token("t1".into())), 1);
        assert!(*token_cut.borrow() && !*cert_cut.borrow() && !*other_cut.borrow());
        assert_eq!(table.cut(|c| matches!(c, Credential::Certificate(s) if s == "0a")), 1);
        assert!(*cert_cut.borrow());
        drop((cert, token));
        assert_eq!(table.open(), 1);
    }
}
