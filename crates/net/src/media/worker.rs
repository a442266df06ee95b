//! One media worker thread: a `mio::Poll` over the sockets of the calls it owns, a command
//! channel woken by a `mio::Waker`, and the forwarding loop.
//!
//! The loop is hand-written rather than built on tokio because each datagram costs two
//! syscalls and little else; a task per stream measured 25–35 % more CPU per packet than a
//! plain epoll loop at thousands of sockets (`shared/reference/rust-crates.md` §5). All state
//! here belongs to this thread: a packet is matched to its stream by the mio token of the
//! socket it arrived on (an index into a vector), with no lock and no shared atomic.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anchorage_relay::demux::{classify, PacketKind};
use anchorage_relay::{
    Decision, DropReason, DtlsIdentity, DtlsStats, LocalSocket, MediaPair, Payload, SdpPeer, Side,
    SocketKind, SrtpByKind, SrtpStats, StreamFlags,
};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use tokio::sync::oneshot;

use super::{BoundMedia, CallKey, MediaError};

mod dtls;

/// What a worker forwarded since it started, whatever call it belonged to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardTotals {
    /// Datagrams sent on.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Datagrams the relay core refused (no destination yet, strict source, ...).
    pub dropped: u64,
    /// Datagrams whose send failed.
    pub send_errors: u64,
    /// SRTP: packets authenticated and decrypted from encrypted legs, their bytes, packets
    /// encrypted towards encrypted legs, their bytes, and the failures by kind.
    pub srtp: SrtpStats,
    /// DTLS-SRTP: handshakes completed and failed (wrong fingerprint among them), DTLS
    /// datagrams dropped.
    pub dtls: DtlsStats,
    /// The SRTP counters again, by the kind of leg they were counted on (keying and suite).
    pub srtp_by_kind: SrtpByKind,
}

/// A worker's calls with their last packet times, and its totals.
#[derive(Debug, Clone, Default)]
pub struct WorkerActivity {
    /// Each call and the last packet on any of its streams.
    pub calls: Vec<(CallKey, Option<Instant>)>,
    /// Forwarding totals.
    pub totals: ForwardTotals,
    /// The media sockets the worker holds open now (each an open file of the process).
    pub sockets: usize,
}

/// The waker's token; socket tokens are indices below it.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// Largest UDP payload.
const RECV_BUFFER: usize = 65_536;

/// Most datagrams read from one socket before the others get their turn.
const BURST: usize = 64;

/// A request from the control plane to one worker.
pub(crate) enum Command {
    Add {
        key: CallKey,
        media: Vec<BoundMedia>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    Update {
        key: CallKey,
        media: usize,
        side: Side,
        remote: Option<SdpPeer>,
        rtcp_mux: bool,
        /// Boxed: with SRTP keys the options are ~200 bytes, and every command would be.
        flags: Box<StreamFlags>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    Rtcp {
        key: CallKey,
        media: usize,
        side: Side,
        /// `Some`: open (register this socket); `None`: close.
        socket: Option<std::net::UdpSocket>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    Remove {
        key: CallKey,
        reply: oneshot::Sender<Option<Vec<MediaPair>>>,
    },
    Snapshot {
        key: CallKey,
        reply: oneshot::Sender<Option<Vec<MediaPair>>>,
    },
    Keys {
        reply: oneshot::Sender<Vec<CallKey>>,
    },
    Extend {
        key: CallKey,
        media: Vec<BoundMedia>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    Activity {
        reply: oneshot::Sender<WorkerActivity>,
    },
    Shutdown,
}

struct SocketEntry {
    socket: UdpSocket,
    call: usize,
    media: usize,
    on: LocalSocket,
}

struct MediaEntry {
    pair: MediaPair,
    /// Socket tokens by `[side][kind]`.
    tokens: [[Option<Token>; 2]; 2],
}

struct CallEntry {
    key: CallKey,
    media: Vec<MediaEntry>,
}

fn side_index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

fn kind_index(kind: SocketKind) -> usize {
    match kind {
        SocketKind::Rtp => 0,
        SocketKind::Rtcp => 1,
    }
}

/// The worker's state, owned by its thread.
pub(crate) struct Worker {
    poll: Poll,
    commands: Receiver<Command>,
    sockets: Vec<Option<SocketEntry>>,
    free_sockets: Vec<usize>,
    calls: Vec<Option<CallEntry>>,
    free_calls: Vec<usize>,
    by_key: HashMap<CallKey, usize>,
    buffer: Box<[u8]>,
    /// Where SRTP puts a rewritten datagram.
    rewritten: Vec<u8>,
    totals: ForwardTotals,
    /// DTLS-SRTP handshakes of the legs that have one.
    dtls: dtls::Handshakes,
}

impl Worker {
    pub(crate) fn new(
        poll: Poll,
        commands: Receiver<Command>,
        identity: Option<DtlsIdentity>,
    ) -> Self {
        Self {
            poll,
            commands,
            sockets: Vec::new(),
            free_sockets: Vec::new(),
            calls: Vec::new(),
            free_calls: Vec::new(),
            by_key: HashMap::new(),
            buffer: vec![0; RECV_BUFFER].into_boxed_slice(),
            rewritten: Vec::with_capacity(2048),
            totals: ForwardTotals::default(),
            dtls: dtls::Handshakes::new(identity),
        }
    }

    fn media_entry(&mut self, call: usize, media: usize) -> Option<&mut MediaEntry> {
        self.calls
            .get_mut(call)
            .and_then(Option::as_mut)
            .and_then(|c| c.media.get_mut(media))
    }

    /// Runs until a `Shutdown` command or until the handle is dropped.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        // Sockets that hit the burst limit: served again after this turn's events, with a
        // zero poll timeout so that nothing waits while they still hold datagrams.
        let mut pending: Vec<Token> = Vec::new();
        let mut again: Vec<Token> = Vec::new();
        loop {
            let timeout = if pending.is_empty() {
                self.dtls.next_timeout(Instant::now())
            } else {
                Some(Duration::ZERO)
            };
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    if !self.drain_commands() {
                        self.remove_all();
                        return;
                    }
                } else if self.drain_socket(token) {
                    again.push(token);
                }
            }
            for token in pending.drain(..) {
                if self.drain_socket(token) {
                    again.push(token);
                }
            }
            std::mem::swap(&mut pending, &mut again);
            if timeout.is_some() {
                self.dtls_timers(Instant::now());
            }
        }
    }

    /// Reads the datagrams queued on the socket of `token` and forwards each as the relay
    /// core decides. mio is edge-triggered, so a socket is read until `WouldBlock`; but at
    /// most [`BURST`] datagrams per turn, so a flood or a media loop on one port cannot
    /// starve the others (rtpengine's `max-recv-iters` serves the same purpose). Returns true
    /// when the limit was hit and the socket must be served again.
    fn drain_socket(&mut self, token: Token) -> bool {
        let Some(Some(entry)) = self.sockets.get(token.0) else {
            return false;
        };
        let (call, media, on) = (entry.call, entry.media, entry.on);
        for _ in 0..BURST {
            let Some(Some(entry)) = self.sockets.get(token.0) else {
                return false;
            };
            let (len, source) = match entry.socket.recv_from(&mut self.buffer) {
                Ok(received) => received,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false, // WouldBlock: drained; anything else: next event
            };
            let now = Instant::now();
            let Some(media_entry) = self
                .calls
                .get_mut(call)
                .and_then(Option::as_mut)
                .and_then(|c| c.media.get_mut(media))
            else {
                return false;
            };
            let Some(packet) = self.buffer.get(..len) else {
                continue;
            };
            // ICE-lite: a connectivity check from a leg the relay gave ICE credentials is
            // answered from the socket it arrived on, and not relayed.
            if anchorage_relay::stun::is_stun(packet) {
                if let Some(creds) = media_entry.pair.ice(on.side) {
                    if let Ok(reply) =
                        anchorage_relay::stun::answer_binding_request(packet, source, &creds)
                    {
                        if let Some(Some(socket)) = self.sockets.get(token.0) {
                            let _ = socket.socket.send_to(&reply, source);
                        }
                        // A party still checking connectivity gets a failed DTLS client
                        // handshake again (its first one may have timed out before ICE).
                        self.dtls_retry(call, media, on.side, now);
                    }
                    continue;
                }
            }
            // DTLS on a leg the relay terminates it for (RFC 7983: first byte 20-63), on
            // its RTP port: the handshake, not the other party.
            if on.kind == SocketKind::Rtp
                && classify(packet) == PacketKind::Dtls
                && media_entry.pair.dtls(on.side).is_some()
            {
                let datagram = packet.to_vec();
                if !self.dtls_datagram(call, media, on.side, source, &datagram, now) {
                    self.totals.dtls.dropped += 1;
                    if let Some(entry) = self.media_entry(call, media) {
                        entry.pair.record_dtls_dropped(on.side);
                    }
                }
                continue;
            }
            let relayed = media_entry
                .pair
                .relay(on, source, packet, now, &mut self.rewritten);
            if let Some(bytes) = relayed.decrypted {
                self.totals.srtp.decrypted_packets += 1;
                self.totals.srtp.decrypted_bytes += bytes as u64;
                let (keying, suite) = media_entry.pair.srtp_kind(on.side);
                let by_kind = self.totals.srtp_by_kind.get_mut(keying, suite);
                by_kind.decrypted_packets += 1;
                by_kind.decrypted_bytes += bytes as u64;
            }
            let forward = match relayed.decision {
                Decision::Forward(forward) => forward,
                Decision::Drop(reason) => {
                    if let DropReason::Srtp(error) = reason {
                        self.totals.srtp.record_failure(error);
                        let side = relayed.srtp_failed_on.unwrap_or(on.side);
                        let (keying, suite) = media_entry.pair.srtp_kind(side);
                        self.totals
                            .srtp_by_kind
                            .get_mut(keying, suite)
                            .record_failure(error);
                    }
                    self.totals.dropped += 1;
                    continue;
                }
            };
            if let Some(bytes) = relayed.encrypted {
                self.totals.srtp.encrypted_packets += 1;
                self.totals.srtp.encrypted_bytes += bytes as u64;
                let (keying, suite) = media_entry.pair.srtp_kind(forward.via.side);
                let by_kind = self.totals.srtp_by_kind.get_mut(keying, suite);
                by_kind.encrypted_packets += 1;
                by_kind.encrypted_bytes += bytes as u64;
            }
            let payload = match relayed.payload {
                Payload::Unchanged => packet,
                Payload::Rewritten => &self.rewritten[..],
            };
            let len = payload.len();
            let via = media_entry
                .tokens
                .get(side_index(forward.via.side))
                .and_then(|kinds| kinds.get(kind_index(forward.via.kind)))
                .copied()
                .flatten();
            let sent = via
                .and_then(|t| self.sockets.get(t.0))
                .and_then(Option::as_ref)
                .map(|out| out.socket.send_to(payload, forward.to));
            if matches!(sent, Some(Ok(n)) if n == len) {
                self.totals.packets += 1;
                self.totals.bytes += len as u64;
            } else {
                media_entry.pair.record_send_error(on.side, forward.rtcp);
                self.totals.send_errors += 1;
            }
        }
        true
    }

    /// Applies queued commands; false when the worker must stop.
    fn drain_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Shutdown) => return false,
                Ok(command) => self.apply(command),
                Err(std::sync::mpsc::TryRecvError::Empty) => return true,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Add { key, media, reply } => {
                let _ = reply.send(self.add(key, media));
            }
            Command::Update {
                key,
                media,
                side,
                remote,
                rtcp_mux,
                flags,
                reply,
            } => {
                let result = self
                    .by_key
                    .get(&key)
                    .and_then(|&slot| self.calls.get_mut(slot))
                    .and_then(Option::as_mut)
                    .ok_or(MediaError::UnknownCall(key))
                    .and_then(|call| {
                        call.media
                            .get_mut(media)
                            .ok_or(MediaError::UnknownMedia { key, media })
                    })
                    .and_then(|entry| {
                        entry
                            .pair
                            .update_leg(side, remote, rtcp_mux, *flags, Instant::now())
                            .map_err(MediaError::Leg)
                    });
                if result.is_ok() {
                    if let Some(&slot) = self.by_key.get(&key) {
                        self.dtls_signalled(slot, media, side, Instant::now());
                    }
                }
                let _ = reply.send(result);
            }
            Command::Rtcp {
                key,
                media,
                side,
                socket,
                reply,
            } => {
                let _ = reply.send(self.set_rtcp(key, media, side, socket));
            }
            Command::Remove { key, reply } => {
                let _ = reply.send(self.remove(key));
            }
            Command::Snapshot { key, reply } => {
                let pairs = self
                    .by_key
                    .get(&key)
                    .and_then(|&slot| self.calls.get(slot))
                    .and_then(Option::as_ref)
                    .map(|call| call.media.iter().map(|m| m.pair.clone()).collect());
                let _ = reply.send(pairs);
            }
            Command::Keys { reply } => {
                let _ = reply.send(self.by_key.keys().copied().collect());
            }
            Command::Extend { key, media, reply } => {
                let _ = reply.send(self.extend(key, media));
            }
            Command::Activity { reply } => {
                let calls = self
                    .calls
                    .iter()
                    .flatten()
                    .map(|call| {
                        let last = call.media.iter().filter_map(|m| m.pair.last_packet()).max();
                        (call.key, last)
                    })
                    .collect();
                let _ = reply.send(WorkerActivity {
                    calls,
                    totals: ForwardTotals {
                        dtls: self.dtls.totals,
                        ..self.totals
                    },
                    sockets: self.sockets.len() - self.free_sockets.len(),
                });
            }
            Command::Shutdown => {}
        }
    }

    fn add(&mut self, key: CallKey, media: Vec<BoundMedia>) -> Result<(), MediaError> {
        if self.by_key.contains_key(&key) {
            return Err(MediaError::DuplicateCall(key));
        }
        let slot = self.free_calls.pop().unwrap_or_else(|| {
            self.calls.push(None);
            self.calls.len() - 1
        });
        if let Some(place) = self.calls.get_mut(slot) {
            *place = Some(CallEntry {
                key,
                media: Vec::with_capacity(media.len()),
            });
        }
        self.by_key.insert(key, slot);
        let result = self.register_media(slot, media);
        if result.is_err() {
            self.remove(key);
        }
        result
    }

    /// Appends streams to a call (a re-offer with more `m=` lines).
    fn extend(&mut self, key: CallKey, media: Vec<BoundMedia>) -> Result<(), MediaError> {
        let slot = *self.by_key.get(&key).ok_or(MediaError::UnknownCall(key))?;
        self.register_media(slot, media)
    }

    /// Registers the sockets of `media` and appends the streams to the call in `slot`; on a
    /// registration failure the streams are still appended (so that `remove` closes every
    /// socket registered so far) and the error is returned.
    fn register_media(&mut self, slot: usize, media: Vec<BoundMedia>) -> Result<(), MediaError> {
        let first = self
            .calls
            .get(slot)
            .and_then(Option::as_ref)
            .map_or(0, |c| c.media.len());
        let mut result = Ok(());
        let mut entries = Vec::with_capacity(media.len());
        for (offset, bound) in media.into_iter().enumerate() {
            let mut media_entry = MediaEntry {
                pair: bound.pair,
                tokens: [[None; 2]; 2],
            };
            for (on, socket) in bound.sockets {
                if result.is_err() {
                    break;
                }
                match self.register(socket, slot, first + offset, on) {
                    Ok(token) => {
                        if let Some(t) = media_entry
                            .tokens
                            .get_mut(side_index(on.side))
                            .and_then(|kinds| kinds.get_mut(kind_index(on.kind)))
                        {
                            *t = Some(token);
                        }
                    }
                    Err(error) => result = Err(MediaError::Register(error)),
                }
            }
            entries.push(media_entry);
        }
        let added = entries.len();
        if let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) {
            call.media.extend(entries);
        }
        // Streams created with DTLS legs (an offer from a DTLS party) wait for its handshake.
        for media in first..first + added {
            for side in [Side::A, Side::B] {
                self.dtls_signalled(slot, media, side, Instant::now());
            }
        }
        result
    }

    fn register(
        &mut self,
        socket: std::net::UdpSocket,
        call: usize,
        media: usize,
        on: LocalSocket,
    ) -> std::io::Result<Token> {
        let mut socket = UdpSocket::from_std(socket);
        let index = match self.free_sockets.pop() {
            Some(index) => index,
            None => {
                self.sockets.push(None);
                self.sockets.len() - 1
            }
        };
        let token = Token(index);
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut socket, token, Interest::READABLE)
        {
            self.free_sockets.push(index);
            return Err(error);
        }
        if let Some(place) = self.sockets.get_mut(index) {
            *place = Some(SocketEntry {
                socket,
                call,
                media,
                on,
            });
        }
        Ok(token)
    }

    /// Opens (`Some`) or closes (`None`) the RTCP socket of one leg of one stream.
    fn set_rtcp(
        &mut self,
        key: CallKey,
        media: usize,
        side: Side,
        socket: Option<std::net::UdpSocket>,
    ) -> Result<(), MediaError> {
        let slot = *self.by_key.get(&key).ok_or(MediaError::UnknownCall(key))?;
        let entry = self
            .media_entry(slot, media)
            .ok_or(MediaError::UnknownMedia { key, media })?;
        let held = entry.tokens[side_index(side)][kind_index(SocketKind::Rtcp)];
        match (socket, held) {
            (Some(socket), None) => {
                let local = socket.local_addr().map_err(MediaError::Register)?;
                entry
                    .pair
                    .set_local_rtcp(side, Some(local))
                    .map_err(MediaError::Leg)?;
                let on = LocalSocket {
                    side,
                    kind: SocketKind::Rtcp,
                };
                let token = match self.register(socket, slot, media, on) {
                    Ok(token) => token,
                    Err(error) => {
                        if let Some(entry) = self.media_entry(slot, media) {
                            let _ = entry.pair.set_local_rtcp(side, None);
                        }
                        return Err(MediaError::Register(error));
                    }
                };
                if let Some(entry) = self.media_entry(slot, media) {
                    entry.tokens[side_index(side)][kind_index(SocketKind::Rtcp)] = Some(token);
                }
                Ok(())
            }
            (None, Some(token)) => {
                entry
                    .pair
                    .set_local_rtcp(side, None)
                    .map_err(MediaError::Leg)?;
                entry.tokens[side_index(side)][kind_index(SocketKind::Rtcp)] = None;
                if let Some(mut closed) = self.sockets.get_mut(token.0).and_then(Option::take) {
                    let _ = self.poll.registry().deregister(&mut closed.socket);
                    self.free_sockets.push(token.0);
                }
                Ok(())
            }
            // Already as asked (a socket given for a leg that has one is closed here).
            (Some(_), Some(_)) | (None, None) => Ok(()),
        }
    }

    /// Deregisters and closes every socket of the call; returns its final state.
    fn remove(&mut self, key: CallKey) -> Option<Vec<MediaPair>> {
        let slot = self.by_key.remove(&key)?;
        let call = self.calls.get_mut(slot)?.take()?;
        self.free_calls.push(slot);
        self.dtls.remove_call(slot);
        let mut pairs = Vec::with_capacity(call.media.len());
        for media in call.media {
            for token in media.tokens.iter().flatten().flatten() {
                if let Some(mut entry) = self.sockets.get_mut(token.0).and_then(Option::take) {
                    let _ = self.poll.registry().deregister(&mut entry.socket);
                    self.free_sockets.push(token.0);
                }
            }
            pairs.push(media.pair);
        }
        debug_assert_eq!(call.key, key);
        Some(pairs)
    }

    fn remove_all(&mut self) {
        let keys: Vec<CallKey> = self.by_key.keys().copied().collect();
        for key in keys {
            self.remove(key);
        }
    }
}
