//! `anchorage callgen`: places calls through a proxy between its own user agents, sends and
//! checks RTP on every call, answers re-INVITEs like a phone, and reports per call how long
//! media stopped. See `docs/callgen.md`.
//!
//! This is the I/O runtime around the sans-IO core of `anchorage-callgen`: a tokio runtime with
//! one task that owns the [`Agent`] and the two SIP sockets (UAC, UAS), one UDP socket per call
//! side for RTP with a receive task each, and one sender task that keeps every stream's 20 ms
//! schedule in a binary heap and sends what is due.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anchorage_callgen::report::{Report, ReportBuilder, RunOptions, Thresholds};
use anchorage_callgen::ua::{
    Agent, CallRecord, CallRef, Config, Event, Hangup, MediaPorts, Side, UacConfig, UasAnswer,
    UasConfig,
};
use anchorage_callgen::{millis, Stream};
use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// How long a stream keeps receiving after its call ended, so packets in flight are counted.
const LINGER: Duration = Duration::from_millis(200);
/// After Ctrl-C (or SIGTERM), how long the calls get to end before the report is printed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How the UAS answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AnswerArg {
    /// 200 OK with SDP.
    #[value(name = "200")]
    Ok,
    /// 486 Busy Here.
    #[value(name = "486")]
    Busy,
    /// 180 Ringing and never a final response (the caller CANCELs).
    #[value(name = "none")]
    Never,
}

/// Who sends the BYE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ByeArg {
    /// The caller.
    Uac,
    /// The callee.
    Uas,
    /// Either, by a hash of the Call-ID (the same choice in separate UAC and UAS processes).
    Random,
}

/// `anchorage callgen` options.
#[derive(Debug, Parser)]
#[command(
    about = "Place calls with real media through a proxy and measure every media gap",
    long_about = "Places calls from a UAC population to a UAS population through a proxy, sends \
                  RTP (PCMU, 50 packets/s) both ways on every call, answers re-INVITEs like a \
                  phone, and reports setup times, packet loss and the longest media gap per call \
                  and around each re-INVITE. Exit status 1 when a threshold (--max-gap-ms, \
                  --max-failed, --max-loss) is broken, 2 on errors. See docs/callgen.md."
)]
struct Args {
    /// Where the UAC sends its INVITEs.
    #[arg(long, default_value = "127.0.0.1:5060", value_name = "IP:PORT")]
    proxy: SocketAddr,
    /// The UAC's SIP address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "IP:PORT")]
    uac: SocketAddr,
    /// The UAS's SIP address; the UAC's Request-URI names it (sip:<ruri-user>@<uas>).
    #[arg(long, default_value = "127.0.0.1:5090", value_name = "IP:PORT")]
    uas: SocketAddr,
    /// Address RTP is received on and offered in SDP.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    media_ip: IpAddr,
    /// Calls to place (UAC); with --uas-only, stop after this many calls ended (default: run
    /// until interrupted). Default 1.
    #[arg(long, value_name = "N")]
    calls: Option<u64>,
    /// Calls started per second.
    #[arg(long, default_value_t = 10.0, value_name = "PER_SECOND")]
    rate: f64,
    /// How long each call is held before the BYE (`30s`, `500ms`, `2m`).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    hold: Duration,
    /// Most calls alive at once (default: no limit).
    #[arg(long, value_name = "N")]
    concurrent: Option<u64>,
    /// Signalling only: no RTP is sent or received (the SDP names port 9).
    #[arg(long)]
    no_media: bool,
    /// Run only the UAS population (answer calls from another process).
    #[arg(long, conflicts_with = "uac_only")]
    uas_only: bool,
    /// Run only the UAC population (call a UAS in another process).
    #[arg(long)]
    uac_only: bool,
    /// How the UAS answers: 200, 486, or none (180 Ringing, never a final response).
    #[arg(long, value_enum, default_value = "200", value_name = "200|486|none")]
    uas_answer: AnswerArg,
    /// Ring (180) this long before the 200.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    answer_delay: Duration,
    /// The UAC CANCELs a ringing call with no answer after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    answer_timeout: Duration,
    /// Who sends the BYE: uac, uas, or random (per Call-ID).
    #[arg(long, value_enum, default_value = "uac")]
    bye_by: ByeArg,
    /// The UAC sends a re-INVITE (same SDP) this long after each call is set up.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    reinvite_after: Option<Duration>,
    /// User part of the Request-URI (the proxy forwards by Request-URI).
    #[arg(long, default_value = "service", value_name = "USER")]
    ruri_user: String,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Exit 1 if any call's longest media gap is above this.
    #[arg(long, value_name = "MS")]
    max_gap_ms: Option<f64>,
    /// Exit 1 if more calls than this failed or were dropped.
    #[arg(long, value_name = "N")]
    max_failed: Option<u64>,
    /// Exit 1 if more packets than this were lost in total.
    #[arg(long, value_name = "N")]
    max_loss: Option<u64>,
    /// Show the live progress line even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    /// Worker threads of the runtime.
    #[arg(long, default_value_t = 2, value_name = "N")]
    threads: usize,
    /// Seed of the random choices (tags, branches, SSRCs); default: from the clock.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Test hook: the UAC pauses its sending this long once per call...
    #[arg(long, hide = true, value_name = "MS")]
    pause_uac_media_ms: Option<u64>,
    /// Test hook: ...this long after its media started.
    #[arg(long, hide = true, default_value_t = 1000, value_name = "MS")]
    pause_after_ms: u64,
    /// Test hook: the UAC leaves this long between its last packet to the old address and
    /// its first to the address of a re-INVITE.
    #[arg(long, hide = true, value_name = "MS")]
    pause_on_reinvite_ms: Option<u64>,
}

/// `30s`, `500ms`, `2m`, `1.5s`, or a number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Runs `anchorage callgen` with its arguments; `name` is the subcommand as typed.
pub fn run(name: &str, args: &[String]) -> ExitCode {
    let argv = std::iter::once(format!("anchorage {name}")).chain(args.iter().cloned());
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("anchorage callgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let json = args.json;
    match runtime.block_on(generate(args)) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("anchorage callgen: cannot write the report: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.table());
            }
            for broken in &report.thresholds.broken {
                eprintln!("anchorage callgen: threshold broken: {broken}");
            }
            if report.broken() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("anchorage callgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One call side's RTP socket and measurement.
struct StreamIo {
    socket: UdpSocket,
    state: Mutex<StreamState>,
}

struct StreamState {
    stream: Stream,
    /// Whether the sender task holds this stream in its schedule.
    scheduled: bool,
    send_errors: u64,
}

/// The media of every call: sockets, receive tasks, and the sender's schedule.
struct Media {
    enabled: bool,
    ip: IpAddr,
    streams: HashMap<CallRef, (Arc<StreamIo>, tokio::task::AbortHandle)>,
    schedule: mpsc::UnboundedSender<Arc<StreamIo>>,
    rng: rand::rngs::SmallRng,
    bind_errors: u64,
    last_bind_error: Option<String>,
    pause_uac: Option<(Duration, Duration)>,
    pause_on_reinvite: Option<Duration>,
}

impl MediaPorts for Media {
    fn allocate(&mut self, call: CallRef) -> Option<SocketAddr> {
        if !self.enabled {
            return Some(SocketAddr::new(self.ip, 9));
        }
        let socket = std::net::UdpSocket::bind(SocketAddr::new(self.ip, 0))
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
            .and_then(UdpSocket::from_std);
        let socket = match socket {
            Ok(s) => s,
            Err(e) => {
                self.bind_errors += 1;
                self.last_bind_error = Some(if e.raw_os_error() == Some(24) {
                    format!("{e} (raise the open file limit: ulimit -n)")
                } else {
                    e.to_string()
                });
                return None;
            }
        };
        let local = socket.local_addr().ok()?;
        let mut stream = Stream::new(self.rng.random(), self.rng.random(), self.rng.random());
        if call.side == Side::Uac {
            if let Some(pause) = self.pause_on_reinvite {
                stream.sender.pause_on_retarget(pause);
            }
        }
        let io = Arc::new(StreamIo {
            socket,
            state: Mutex::new(StreamState {
                stream,
                scheduled: false,
                send_errors: 0,
            }),
        });
        let task = tokio::spawn(receive(io.clone()));
        self.streams.insert(call, (io, task.abort_handle()));
        Some(local)
    }
}

/// Receives a stream's RTP until aborted.
async fn receive(io: Arc<StreamIo>) {
    let mut buf = [0u8; 2048];
    loop {
        match io.socket.recv_from(&mut buf).await {
            Ok((n, source)) => {
                let now = Instant::now();
                lock(&io.state)
                    .stream
                    .receiver
                    .on_packet(now, &buf[..n], source);
            }
            // ICMP errors from an earlier send surface here on some systems; go on.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// A stream in the sender's schedule.
struct Due {
    at: Instant,
    seq: u64,
    io: Arc<StreamIo>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // A max-heap: the earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Sends every stream's packets when they are due: one heap ordered by due time, one timer.
async fn send_loop(mut incoming: mpsc::UnboundedReceiver<Arc<StreamIo>>) {
    let mut heap: BinaryHeap<Due> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let next = heap.peek().map(|d| d.at);
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            io = incoming.recv() => {
                let Some(io) = io else { return };
                let at = lock(&io.state).stream.sender.next_due();
                match at {
                    Some(at) => {
                        seq += 1;
                        heap.push(Due { at, seq, io });
                    }
                    None => lock(&io.state).scheduled = false,
                }
            }
            () = sleep => {
                let now = Instant::now();
                while heap.peek().is_some_and(|d| d.at <= now) {
                    let Some(due) = heap.pop() else { break };
                    let next = {
                        let mut state = lock(&due.io.state);
                        let mut errors = 0;
                        while let Some(packet) = state.stream.sender.poll_transmit(now) {
                            if due.io.socket.try_send_to(packet.data, packet.destination).is_err() {
                                errors += 1;
                            }
                        }
                        state.send_errors += errors;
                        let next = state.stream.sender.next_due();
                        if next.is_none() {
                            state.scheduled = false;
                        }
                        next
                    };
                    if let Some(at) = next {
                        seq += 1;
                        heap.push(Due { at, seq, io: due.io });
                    }
                }
            }
        }
    }
}

/// A UDP socket's next datagram, or never when there is no socket.
async fn recv_on(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn bind_sip(address: SocketAddr, what: &str) -> anyhow::Result<UdpSocket> {
    anyhow::ensure!(
        !address.ip().is_unspecified(),
        "--{what} {address}: give a specific IP address (it goes into Via and Contact)"
    );
    // Large buffers: a proxy moving hundreds of calls re-INVITEs them all at once, and a
    // default 200 KiB buffer would drop part of the burst (a real phone gets one at a time).
    let socket = anchorage_sip_transport::bind_udp(address).with_context(|| {
        format!(
            "cannot bind the {} SIP socket to udp:{address}",
            what.to_uppercase()
        )
    })?;
    Ok(socket)
}

/// The live progress line.
struct ProgressLine {
    enabled: bool,
    next: Instant,
    last_placed: u64,
    last_at: Instant,
    shown: bool,
}

/// Runs the call generator and returns its report.
async fn generate(args: Args) -> anyhow::Result<Report> {
    let run_uac = !args.uas_only;
    let run_uas = !args.uac_only;
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    let uac_socket = match run_uac {
        true => Some(bind_sip(args.uac, "uac").await?),
        false => None,
    };
    let uas_socket = match run_uas {
        true => Some(bind_sip(args.uas, "uas").await?),
        false => None,
    };
    let seed = args.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
    });
    let mut config = Config::new(args.hold, seed);
    config.hangup = match args.bye_by {
        ByeArg::Uac => Hangup::Uac,
        ByeArg::Uas => Hangup::Uas,
        ByeArg::Random => Hangup::Random,
    };
    if let Some(s) = &uac_socket {
        let local = s.local_addr()?;
        eprintln!(
            "anchorage callgen: UAC on udp:{local}, calling sip:{}@{} through {}",
            args.ruri_user, args.uas, args.proxy
        );
        config.uac = Some(UacConfig {
            local,
            proxy: args.proxy,
            request_uri: format!("sip:{}@{}", args.ruri_user, args.uas),
            calls: args.calls.unwrap_or(1),
            rate: args.rate,
            concurrent: args.concurrent.unwrap_or(u64::MAX).max(1),
            answer_timeout: args.answer_timeout,
            reinvite_after: args.reinvite_after,
        });
    }
    if let Some(s) = &uas_socket {
        let local = s.local_addr()?;
        eprintln!("anchorage callgen: UAS on udp:{local}");
        config.uas = Some(UasConfig {
            local,
            answer: match args.uas_answer {
                AnswerArg::Ok => UasAnswer::Ok,
                AnswerArg::Busy => UasAnswer::Busy,
                AnswerArg::Never => UasAnswer::Never,
            },
            answer_delay: args.answer_delay,
            calls: if run_uac { None } else { args.calls },
        });
    }
    let (schedule, incoming) = mpsc::unbounded_channel();
    let sender = tokio::spawn(send_loop(incoming));
    let mut media = Media {
        enabled: !args.no_media,
        ip: args.media_ip,
        streams: HashMap::new(),
        schedule,
        rng: rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5eed),
        bind_errors: 0,
        last_bind_error: None,
        pause_uac: args.pause_uac_media_ms.map(|p| {
            (
                Duration::from_millis(args.pause_after_ms),
                Duration::from_millis(p),
            )
        }),
        pause_on_reinvite: args.pause_on_reinvite_ms.map(Duration::from_millis),
    };
    let epoch = Instant::now();
    let mut agent = Agent::new(config, epoch);
    let mut report = ReportBuilder::new(epoch);
    let mut finalize: VecDeque<(Instant, CallRef, CallRecord)> = VecDeque::new();
    let mut worst_gap = Duration::ZERO;
    let mut progress = ProgressLine {
        enabled: args.progress || std::io::stderr().is_terminal(),
        next: epoch + Duration::from_secs(1),
        last_placed: 0,
        last_at: epoch,
        shown: false,
    };
    let mut uac_buf = vec![0u8; 65536];
    let mut uas_buf = vec![0u8; 65536];
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut stopped_at: Option<Instant> = None;
    agent.handle_timeout(epoch, &mut media);
    loop {
        let now = Instant::now();
        flush(
            &mut agent,
            &uac_socket,
            &uas_socket,
            &mut media,
            &mut finalize,
            &mut report,
            now,
        )
        .await;
        while finalize.front().is_some_and(|(at, _, _)| *at <= now) {
            if let Some((_, call, record)) = finalize.pop_front() {
                let data = close_stream(&mut media, call);
                if let Some(d) = &data {
                    worst_gap = worst_gap.max(d.received.longest_gap);
                }
                report.add(record, data);
            }
        }
        if agent.is_done() && finalize.is_empty() {
            break;
        }
        if stopped_at.is_some_and(|t| now > t + STOP_GRACE) {
            agent.abandon(now);
            let now = Instant::now();
            flush(
                &mut agent,
                &uac_socket,
                &uas_socket,
                &mut media,
                &mut finalize,
                &mut report,
                now,
            )
            .await;
            while let Some((_, call, record)) = finalize.pop_front() {
                let data = close_stream(&mut media, call);
                report.add(record, data);
            }
            break;
        }
        if progress.enabled && now >= progress.next {
            show_progress(&mut progress, &agent, &media, worst_gap, now);
        }
        let mut deadline = agent.poll_timeout().unwrap_or(now + Duration::from_secs(1));
        if let Some((at, _, _)) = finalize.front() {
            deadline = deadline.min(*at);
        }
        if progress.enabled {
            deadline = deadline.min(progress.next);
        }
        if let Some(t) = stopped_at {
            deadline = deadline.min(t + STOP_GRACE);
        }
        tokio::select! {
            r = recv_on(uac_socket.as_ref(), &mut uac_buf) => {
                if let Ok((n, source)) = r {
                    let data = Bytes::copy_from_slice(&uac_buf[..n]);
                    agent.handle_datagram(Instant::now(), Side::Uac, source, data, &mut media);
                }
            }
            r = recv_on(uas_socket.as_ref(), &mut uas_buf) => {
                if let Ok((n, source)) = r {
                    let data = Bytes::copy_from_slice(&uas_buf[..n]);
                    agent.handle_datagram(Instant::now(), Side::Uas, source, data, &mut media);
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            () = &mut stop, if stopped_at.is_none() => {
                let now = Instant::now();
                eprintln!("\nanchorage callgen: stopping: ending the calls in progress");
                stopped_at = Some(now);
                agent.stop(now);
            }
        }
        agent.handle_timeout(Instant::now(), &mut media);
    }
    if progress.shown {
        eprintln!();
    }
    sender.abort();
    for (_, (_, task)) in media.streams.drain() {
        task.abort();
    }
    if let Some(e) = &media.last_bind_error {
        eprintln!(
            "anchorage callgen: {} media sockets could not be opened: {e}",
            media.bind_errors
        );
    }
    let thresholds = Thresholds {
        max_gap_ms: args.max_gap_ms,
        max_failed: args.max_failed,
        max_loss: args.max_loss,
        broken: Vec::new(),
    };
    let options = RunOptions {
        mode: match (run_uac, run_uas) {
            (true, true) => "both",
            (true, false) => "uac",
            _ => "uas",
        }
        .into(),
        calls: args.calls.unwrap_or(if run_uac { 1 } else { 0 }),
        rate: args.rate,
        hold_ms: millis(args.hold),
        concurrent: args.concurrent,
        media: !args.no_media,
        uas_answer: match args.uas_answer {
            AnswerArg::Ok => "200",
            AnswerArg::Busy => "486",
            AnswerArg::Never => "none",
        }
        .into(),
        bye_by: format!("{:?}", args.bye_by).to_lowercase(),
    };
    let bad = agent.progress().bad_messages;
    Ok(report.finish(options, Instant::now(), thresholds, bad))
}

/// Sends what the agent wants sent and carries out its media instructions.
async fn flush(
    agent: &mut Agent,
    uac: &Option<UdpSocket>,
    uas: &Option<UdpSocket>,
    media: &mut Media,
    finalize: &mut VecDeque<(Instant, CallRef, CallRecord)>,
    report: &mut ReportBuilder,
    now: Instant,
) {
    loop {
        let mut busy = false;
        while let Some(t) = agent.poll_transmit() {
            busy = true;
            let socket = match t.side {
                Side::Uac => uac.as_ref(),
                Side::Uas => uas.as_ref(),
            };
            if let Some(s) = socket {
                // A lost datagram is retransmitted by the agent; nothing to do on error.
                let _ = s.send_to(&t.data, t.destination).await;
            }
        }
        while let Some(event) = agent.poll_event() {
            busy = true;
            match event {
                Event::Media {
                    call,
                    remote,
                    send,
                    receive,
                    reinvite,
                } => {
                    let Some((io, _)) = media.streams.get(&call) else {
                        continue;
                    };
                    let mut state = lock(&io.state);
                    let first = !state.stream.ever_sent();
                    let started = state.stream.apply(now, remote, send, receive, reinvite);
                    if started && first && call.side == Side::Uac {
                        if let Some((after, pause)) = media.pause_uac {
                            state.stream.sender.pause_at(now + after, pause);
                        }
                    }
                    if started && !state.scheduled {
                        state.scheduled = true;
                        let _ = media.schedule.send(io.clone());
                    }
                }
                Event::MediaStop { call } => {
                    if let Some((io, _)) = media.streams.get(&call) {
                        lock(&io.state).stream.stop(now);
                    }
                }
                Event::Ended { call, record } => {
                    if media.streams.contains_key(&call) {
                        finalize.push_back((now + LINGER, call, record));
                    } else {
                        report.add(record, None);
                    }
                }
            }
        }
        if !busy {
            break;
        }
    }
}

/// Closes a call side's RTP socket and returns what it measured (`None` if it never had
/// media).
fn close_stream(media: &mut Media, call: CallRef) -> Option<anchorage_callgen::report::MediaData> {
    let (io, task) = media.streams.remove(&call)?;
    task.abort();
    let mut state = lock(&io.state);
    state.stream.sender.stop();
    let data = state.stream.measurement();
    let had_media =
        state.stream.ever_sent() || data.received.started.is_some() || data.received.received > 0;
    had_media.then_some(data)
}

fn show_progress(
    p: &mut ProgressLine,
    agent: &Agent,
    media: &Media,
    finished_worst: Duration,
    now: Instant,
) {
    let stats = agent.progress();
    let elapsed = now
        .saturating_duration_since(p.last_at)
        .as_secs_f64()
        .max(0.001);
    let rate = (stats.placed - p.last_placed) as f64 / elapsed;
    p.last_placed = stats.placed;
    p.last_at = now;
    p.next = now + Duration::from_secs(1);
    let mut worst = finished_worst;
    for (io, _) in media.streams.values() {
        let state = lock(&io.state);
        let r = &state.stream.receiver;
        worst = worst.max(r.stats().longest_gap).max(r.current_gap(now));
    }
    eprint!(
        "\r\x1b[Kcalls up {}  placed {}  ended {} (failed {}, dropped {})  rate {:.1}/s  worst gap {:.0} ms",
        stats.up,
        stats.placed,
        stats.ended,
        stats.failed,
        stats.dropped,
        rate,
        millis(worst)
    );
    p.shown = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn options_parse() {
        let a = Args::try_parse_from([
            "callgen",
            "--calls",
            "20",
            "--hold",
            "5s",
            "--uas-answer",
            "486",
            "--max-gap-ms",
            "100",
        ])
        .unwrap();
        assert_eq!(
            (a.calls, a.hold, a.uas_answer),
            (Some(20), Duration::from_secs(5), AnswerArg::Busy)
        );
        assert!(Args::try_parse_from(["callgen", "--uas-only", "--uac-only"]).is_err());
    }
}
