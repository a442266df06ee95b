//! The media fast path: [`MediaWorkers`], N threads (one per core by default), each owning
//! the UDP sockets of the calls assigned to it and forwarding their datagrams by
//! [`anchorage_relay::MediaPair::on_packet`].
//!
//! * A call's media (both legs, all `m=` lines) lives on one worker, chosen by its
//!   [`CallKey`], so forwarding never crosses threads.
//! * Sockets are bound in the caller's thread ([`BoundMedia::bind`]) so a bind failure is an
//!   error at offer time, then moved to the worker.
//! * The control plane (ng on its own tokio runtime) talks to a worker over a std channel
//!   plus a `mio::Waker`; each command answers on a `tokio::sync::oneshot`, which async code
//!   awaits and sync code reads with `blocking_recv`.
//! * Counters stay in the worker; the control plane reads them with [`MediaWorkers::snapshot`]
//!   (no atomics shared across cores on the packet path). Media and offer timeouts are
//!   checked by the control plane against the snapshot's last-packet times
//!   ([`anchorage_relay::Liveness`]).

mod socket;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anchorage_relay::{DtlsIdentity, LegConfigError, MediaPair, SdpPeer, Side, StreamFlags};
use mio::{Poll, Waker};
use tokio::sync::oneshot;

pub use socket::{bind_udp, BoundMedia};
use worker::{Command, Worker, WAKER};
pub use worker::{ForwardTotals, WorkerActivity};

/// The relay's handle on a call's media, chosen by the control plane (e.g. a session
/// counter). It also picks the worker: `key % threads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);

/// The answer to a worker command: `.await` it, or `blocking_recv()` outside async code.
/// It fails to resolve only if the worker stopped.
pub type Reply<T> = oneshot::Receiver<T>;

/// A media fast-path error; each names what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// A media socket could not be bound (typically the port is in use: take another pair).
    #[error("cannot bind media socket {local}: {source}")]
    Bind {
        /// The address.
        local: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A socket could not be added to the worker's poll.
    #[error("cannot register media socket with the worker: {0}")]
    Register(io::Error),
    /// The call is already on the worker.
    #[error("call {0:?} already has media on this relay")]
    DuplicateCall(CallKey),
    /// No such call.
    #[error("call {0:?} has no media on this relay")]
    UnknownCall(CallKey),
    /// No such media stream in the call.
    #[error("call {key:?} has no media stream {media}")]
    UnknownMedia {
        /// The call.
        key: CallKey,
        /// The index asked for.
        media: usize,
    },
    /// A leg update the relay core refused.
    #[error("leg update refused: {0}")]
    Leg(LegConfigError),
    /// The worker thread has stopped.
    #[error("media worker {0} has stopped")]
    WorkerGone(usize),
    /// The worker threads could not be started.
    #[error("cannot start media worker: {0}")]
    Start(io::Error),
}

struct WorkerHandle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

/// The media worker threads.
pub struct MediaWorkers {
    workers: Vec<WorkerHandle>,
}

impl MediaWorkers {
    /// Starts `threads` workers, or one per available core when `None`, without DTLS-SRTP.
    pub fn start(threads: Option<NonZeroUsize>) -> Result<Self, MediaError> {
        Self::start_with_dtls(threads, None)
    }

    /// Starts the workers; with `identity` they run the DTLS-SRTP handshakes of the legs
    /// the controller terminates DTLS on, with that certificate.
    pub fn start_with_dtls(
        threads: Option<NonZeroUsize>,
        identity: Option<DtlsIdentity>,
    ) -> Result<Self, MediaError> {
        let count = threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get);
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let poll = Poll::new().map_err(MediaError::Start)?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(MediaError::Start)?);
            let (commands, receiver) = mpsc::channel();
            let worker = Worker::new(poll, receiver, identity.clone());
            let thread = std::thread::Builder::new()
                .name(format!("media-{index}"))
                .spawn(move || worker.run())
                .map_err(MediaError::Start)?;
            workers.push(WorkerHandle {
                commands,
                waker,
                thread: Some(thread),
            });
        }
        Ok(Self { workers })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// The worker that owns (or will own) call `key`.
    pub fn worker_for(&self, key: CallKey) -> usize {
        (key.0 % self.workers.len().max(1) as u64) as usize
    }

    fn send(&self, index: usize, command: Command) -> Result<(), MediaError> {
        let worker = self
            .workers
            .get(index)
            .ok_or(MediaError::WorkerGone(index))?;
        worker
            .commands
            .send(command)
            .map_err(|_| MediaError::WorkerGone(index))?;
        worker
            .waker
            .wake()
            .map_err(|_| MediaError::WorkerGone(index))
    }

    /// Hands a call's bound media streams to its worker, which starts forwarding at once.
    pub fn add_call(
        &self,
        key: CallKey,
        media: Vec<BoundMedia>,
    ) -> Result<Reply<Result<(), MediaError>>, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.send(self.worker_for(key), Command::Add { key, media, reply })?;
        Ok(answer)
    }

    /// Re-signals one leg of media stream `media` (a re-offer or an answer): new SDP peer,
    /// rtcp-mux and flags; restarts endpoint learning.
    pub fn update_leg(
        &self,
        key: CallKey,
        media: usize,
        side: Side,
        remote: Option<SdpPeer>,
        rtcp_mux: bool,
        flags: StreamFlags,
    ) -> Result<Reply<Result<(), MediaError>>, MediaError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Update {
            key,
            media,
            side,
            remote,
            rtcp_mux,
            flags: Box::new(flags),
            reply,
        };
        self.send(self.worker_for(key), command)?;
        Ok(answer)
    }

    /// Gives leg `side` of media stream `media` an RTCP socket (`Some`: already bound, e.g.
    /// by [`bind_udp`]) or closes the one it has (`None`): a leg that multiplexes RTCP on its
    /// RTP port (RFC 5761) needs none. Send an opening before the [`MediaWorkers::update_leg`]
    /// that ends the leg's rtcp-mux and a closing after the one that starts it; a leg that
    /// already has (or lacks) the socket is left as it is.
    pub fn set_rtcp_socket(
        &self,
        key: CallKey,
        media: usize,
        side: Side,
        socket: Option<std::net::UdpSocket>,
    ) -> Result<Reply<Result<(), MediaError>>, MediaError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Rtcp {
            key,
            media,
            side,
            socket,
            reply,
        };
        self.send(self.worker_for(key), command)?;
        Ok(answer)
    }

    /// Stops forwarding a call and closes its sockets; the reply (sent once the sockets are
    /// closed, so their ports can be bound again) carries the final state of its streams, or
    /// `None` for an unknown call. The ports go back to the pool by the caller.
    pub fn remove_call(&self, key: CallKey) -> Result<Reply<Option<Vec<MediaPair>>>, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.send(self.worker_for(key), Command::Remove { key, reply })?;
        Ok(answer)
    }

    /// A copy of a call's streams (counters, learned addresses) as the worker holds them now.
    pub fn snapshot(&self, key: CallKey) -> Result<Reply<Option<Vec<MediaPair>>>, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.send(self.worker_for(key), Command::Snapshot { key, reply })?;
        Ok(answer)
    }

    /// Appends streams to a call on its worker (a re-offer with more `m=` lines); their
    /// indexes follow the call's existing streams.
    pub fn extend_call(
        &self,
        key: CallKey,
        media: Vec<BoundMedia>,
    ) -> Result<Reply<Result<(), MediaError>>, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.send(self.worker_for(key), Command::Extend { key, media, reply })?;
        Ok(answer)
    }

    /// Worker `index`'s calls with their last packet times, and its forwarding totals (for
    /// media timeouts and metrics, without copying every stream).
    pub fn activity(&self, index: usize) -> Result<Reply<WorkerActivity>, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.send(index, Command::Activity { reply })?;
        Ok(answer)
    }

    /// The calls held by worker `index`.
    pub fn calls_on(&self, index: usize) -> Result<Reply<Vec<CallKey>>, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.send(index, Command::Keys { reply })?;
        Ok(answer)
    }
}

impl Drop for MediaWorkers {
    /// Stops every worker (closing all its sockets) and joins its thread.
    fn drop(&mut self) {
        for worker in &self.workers {
            let _ = worker.commands.send(Command::Shutdown);
            let _ = worker.waker.wake();
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
