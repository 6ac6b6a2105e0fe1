//! A kill switch for the socket russh owns.
//!
//! russh runs each session in a task of its own, and during key exchange it
//! does not even read the disconnect requests sent to it; dropping its
//! `RunningSession` does not end that task. So the socket is wrapped: once
//! the switch is thrown, every read and write fails, russh's task ends and
//! drops the socket (closing it) and the handler. The wrapper also tells
//! the slot table how far an unauthenticated client got, and keeps the
//! client's KEXINIT (`kexinit.rs`) to tell which algorithms it runs.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::kexinit::ClientStart;
use super::slots::Phase;
use super::PendingSlot;

/// Thrown once, by the listener (deadline, eviction, shutdown).
#[derive(Debug, Default)]
pub(crate) struct KillSwitch {
    killed: AtomicBool,
    /// The tasks polling the socket, woken when the switch is thrown.
    wakers: Mutex<[Option<Waker>; 2]>,
    notify: Notify,
}

impl KillSwitch {
    /// Closes the connection: pending and later socket operations fail.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
        self.notify.notify_waiters();
    }

    /// Whether the switch was thrown.
    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Resolves once the switch is thrown.
    pub(crate) async fn killed(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_killed() {
                return;
            }
            notified.await;
        }
    }

    /// Remembers `cx`'s waker in `slot` (0 read, 1 write); true if killed.
    fn register(&self, slot: usize, cx: &Context<'_>) -> bool {
        {
            let mut wakers = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
            match &wakers[slot] {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => wakers[slot] = Some(cx.waker().clone()),
            }
        }
        self.is_killed()
    }
}

fn killed_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "closed by the collector")
}

/// A socket that fails once its switch is thrown and reports what the
/// client sends while it holds an unauthenticated slot.
pub(crate) struct Killable<S> {
    inner: S,
    switch: Arc<KillSwitch>,
    pending: Arc<PendingSlot>,
    /// Whether the client's version line has been read in full.
    version_done: bool,
    /// The client's version line and KEXINIT, to tell what was negotiated.
    start: Arc<Mutex<ClientStart>>,
}

impl<S> Killable<S> {
    pub(crate) fn new(
        inner: S,
        switch: Arc<KillSwitch>,
        pending: Arc<PendingSlot>,
        start: Arc<Mutex<ClientStart>>,
    ) -> Self {
        Self { inner, switch, pending, version_done: false, start }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Killable<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.switch.register(0, cx) {
            return Poll::Ready(Err(killed_error()));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let fresh = &buf.filled()[before..];
        if matches!(result, Poll::Ready(Ok(()))) && !fresh.is_empty() {
            this.start.lock().unwrap_or_else(|p| p.into_inner()).feed(fresh);
        }
        if matches!(result, Poll::Ready(Ok(()))) && !fresh.is_empty() && !this.pending.is_released() {
            let phase = if this.version_done {
                Phase::KeyExchange
            } else if let Some(end) = fresh.iter().position(|&b| b == b'\n') {
                this.version_done = true;
                if end + 1 < fresh.len() {
                    Phase::KeyExchange
                } else {
                    Phase::Version
                }
            } else {
                Phase::Version
            };
            this.pending.heard(phase);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Killable<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.switch.register(1, cx) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.switch.register(1, cx) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.switch.is_killed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
