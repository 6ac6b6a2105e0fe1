//! The one accept loop every listener runs (agents over TLS, devices over
//! SSH, the admin port): accept until shutdown, hand each connection to
//! the listener's own admission (slots, per-source limits, what to run),
//! keep accept errors from spinning, then drain.
//!
//! What each listener decides stays with it: `admit` returns the task to
//! run for a connection, or `None` after refusing it (and counting why);
//! the task holds whatever slots it was given and frees them when it ends.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// How long to pause after a failed accept (EMFILE and friends) rather than
/// spin on it.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// What shutdown does with connections still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Wait for each to finish: ingest connections store the batch in hand,
    /// acknowledge it and tell their device the collector is going away.
    Finish,
    /// Abort them: an admin exchange is short and the client retries.
    Abort,
}

/// Accepts on `listener` until `shutdown` turns true, runs what `admit`
/// returns for each connection, then drains as `drain` says. `name` labels
/// the log lines ("ingest", "SSH ingest", "admin").
pub(crate) async fn accept_until_shutdown<F, Fut>(
    name: &'static str,
    listener: &TcpListener,
    mut shutdown: watch::Receiver<bool>,
    drain: Drain,
    mut admit: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Option<Fut>,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        warn!(listener = name, error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                if let Some(task) = admit(tcp, peer) {
                    connections.spawn(task);
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    info!(listener = name, open = connections.len(), ?drain, "stopping: draining connections");
    match drain {
        Drain::Finish => while connections.join_next().await.is_some() {},
        Drain::Abort => connections.shutdown().await,
    }
    info!(listener = name, "stopped");
}

/// Resolves once `shutdown` turns true (or its sender is gone). The watch
/// guard is dropped inside, so callers stay `Send`.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Connections admitted run; refused ones don't; shutdown waits for
    /// running ones under `Finish` and stops them under `Abort`.
    #[tokio::test]
    async fn admits_refuses_and_drains() {
        for drain in [Drain::Finish, Drain::Abort] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, shutdown) = watch::channel(false);
            let finished = Arc::new(AtomicUsize::new(0));
            let (release, released) = watch::channel(false);
            let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::unbounded_channel();
            let seen = Arc::new(AtomicUsize::new(0));
            let server = {
                let (finished, seen) = (finished.clone(), seen.clone());
                tokio::spawn(async move {
                    accept_until_shutdown("test", &listener, shutdown, drain, move |_tcp, _peer| {
                        let n = seen.fetch_add(1, Ordering::SeqCst);
                        let _ = accepted_tx.send(n);
                        // Every second connection is refused.
                        (n % 2 == 0).then(|| {
                            let (finished, mut released) = (finished.clone(), released.clone());
                            async move {
                                let _ = released.wait_for(|go| *go).await;
                                finished.fetch_add(1, Ordering::SeqCst);
                            }
                        })
                    })
                    .await
                })
            };
            let mut clients = Vec::new();
            for _ in 0..4 {
                clients.push(TcpStream::connect(addr).await.unwrap());
                accepted_rx.recv().await.unwrap();
            }
            stop.send(true).unwrap();
            if drain == Drain::Finish {
                // Shutdown waits: release the two admitted tasks, then it returns.
                release.send(true).unwrap();
                server.await.unwrap();
                assert_eq!(finished.load(Ordering::SeqCst), 2);
            } else {
                server.await.unwrap();
                assert_eq!(finished.load(Ordering::SeqCst), 0, "aborted tasks never finish");
            }
            assert_eq!(seen.load(Ordering::SeqCst), 4);
        }
    }
}
