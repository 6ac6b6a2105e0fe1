//! Listening for other collectors' changes: `LISTEN glimpse_changes` on a
//! connection of its own, the notifications parsed into [`Change`]s and
//! handed to the sinks on a thread of their own (a sink may block on the
//! database; the runtime must not).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use glimpse_store::control::seam::Change;
use tokio_postgres::AsyncMessage;

use crate::config::Connector;
use crate::control::Inner;

/// The channel the migration's triggers notify.
const CHANNEL: &str = "glimpse_changes";
/// Changes waiting for the sinks; beyond it they collapse into one
/// [`Change::Everything`].
const QUEUE: usize = 4096;
/// The longest wait between attempts to listen again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Opens one connection outside the pool, its connection task on the
/// current runtime; notifications, if any, go to `notes`.
pub(crate) async fn connect(
    settings: &tokio_postgres::Config,
    connector: &Connector,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_with(settings, connector, None).await
}

async fn connect_with(
    settings: &tokio_postgres::Config,
    connector: &Connector,
    notes: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    async fn drive<S, T>(
        connection: tokio_postgres::Connection<S, T>,
        notes: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut connection = connection;
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if let Some(notes) = &notes {
                        if notes.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("PostgreSQL connection ended: {}", crate::control::describe_error(&e));
                    return;
                }
            }
        }
    }
    match connector {
        Connector::Plain => {
            let (client, connection) = settings.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(drive(connection, notes));
            Ok(client)
        }
        Connector::Tls(tls) => {
            let (client, connection) = settings.connect(tls.clone()).await?;
            tokio::spawn(drive(connection, notes));
            Ok(client)
        }
    }
}

/// Parses a trigger's payload ("<what>:<key>"); `None` for anything else.
pub(crate) fn parse(payload: &str) -> Option<Change> {
    let (what, key) = payload.split_once(':')?;
    match what {
        "p" => Some(Change::Policy(key.to_owned())),
        "k" => Some(Change::OrgKey(key.to_owned())),
        "s" => Some(Change::State(key.to_owned())),
        "d" => {
            let (org, device) = key.split_once('/')?;
            Some(Change::Device { org: org.to_owned(), device: device.to_owned() })
        }
        _ => None,
    }
}

/// Starts listening, for as long as `inner` lives.
pub(crate) fn start(inner: &Arc<Inner>) {
    let Some(handle) = inner.rt.handle().cloned() else { return };
    let (to_sinks, from_listener) = std::sync::mpsc::sync_channel::<Change>(QUEUE);
    let weak = Arc::downgrade(inner);
    let sinks_weak = Weak::clone(&weak);
    let spawned = std::thread::Builder::new().name("glimpse-pg-changes".into()).spawn(move || {
        while let Ok(change) = from_listener.recv() {
            let Some(inner) = sinks_weak.upgrade() else { return };
            inner.report(&change);
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the thread that hears other collectors' changes: {e}");
        return;
    }
    handle.spawn(listen(weak, to_sinks));
}

async fn listen(inner: Weak<Inner>, to_sinks: std::sync::mpsc::SyncSender<Change>) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let Some(settings) = inner.upgrade().map(|i| (i.settings.clone(), i.at.clone())) else { return };
        let ((config, connector), at) = settings;
        let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
        let listening = async {
            let client = connect_with(&config, &connector, Some(notes_tx)).await?;
            client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
            Ok::<_, tokio_postgres::Error>(client)
        };
        match listening.await {
            Ok(client) => {
                backoff = Duration::from_millis(100);
                if !first {
                    tracing::info!(at = %at, "listening for other collectors' changes again");
                }
                // Whatever changed while nobody listened is unknown.
                if !first && to_sinks.try_send(Change::Everything).is_err() {
                    return;
                }
                while let Some(payload) = notes.recv().await {
                    if payload == crate::seal::ROTATED_NOTE {
                        tracing::warn!(
                            at = %at,
                            "the master key of this control plane was rotated (by this or another collector): \
                             every collector still holding the old key file must have the new one installed and be restarted"
                        );
                        continue;
                    }
                    match parse(&payload) {
                        Some(change) => match to_sinks.try_send(change) {
                            Ok(()) => {}
                            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                                // The sinks are behind: drop the detail, keep the fact.
                                let _ = to_sinks.send(Change::Everything);
                            }
                            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                        },
                        None => tracing::debug!("ignored a notification that is not a change"),
                    }
                    if inner.strong_count() == 0 {
                        return;
                    }
                }
                drop(client);
                tracing::warn!(at = %at, "lost the connection that hears other collectors' changes; reconnecting");
            }
            Err(e) => {
                tracing::warn!(at = %at, "cannot listen for other collectors' changes: {}", crate::control::describe_error(&e));
            }
        }
        first = false;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_become_changes_and_nothing_else_does() {
        assert_eq!(parse("p:acme"), Some(Change::Policy("acme".into())));
        assert_eq!(parse("k:acme"), Some(Change::OrgKey("acme".into())));
        assert_eq!(parse("s:api-token:abc"), Some(Change::State("api-token:abc".into())));
        assert_eq!(parse("d:acme/ap-1"), Some(Change::Device { org: "acme".into(), device: "ap-1".into() }));
        // The rotation's note is logged, not a change of a row.
        assert_eq!(parse(crate::seal::ROTATED_NOTE), None);
        for bad in ["", "p", "x:acme", "d:acme", "hello"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    /// What a trigger would send for `change`, the inverse of [`parse`].
    fn payload_of(change: &Change) -> String {
        match change {
            Change::Policy(org) => format!("p:{org}"),
            Change::OrgKey(org) => format!("k:{org}"),
            Change::State(key) => format!("s:{key}"),
            Change::Device { org, device } => format!("d:{org}/{device}"),
            // Made by the listener itself on reconnecting, never sent.
            Change::Everything => String::new(),
        }
    }

    proptest::proptest! {
        // A notification's payload comes from the database, which another
        // collector (or anyone who can NOTIFY on the channel) writes: any
        // text must parse to nothing or to the change it names.
        #[test]
        fn any_payload_parses_without_panicking_and_round_trips(payload in "\\PC{0,200}") {
            if let Some(change) = parse(&payload) {
                proptest::prop_assert_eq!(payload_of(&change), payload);
            }
        }

        #[test]
        fn every_change_a_trigger_sends_parses_back(
            what in 0u8..4,
            org in "[a-z0-9-]{1,32}",
            rest in "[a-z0-9:/_-]{1,64}",
        ) {
            let change = match what {
                0 => Change::Policy(org),
                1 => Change::OrgKey(org),
                2 => Change::State(rest),
                _ => Change::Device { org, device: rest },
            };
            proptest::prop_assert_eq!(parse(&payload_of(&change)), Some(change));
        }
    }
}
