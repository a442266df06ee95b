//! The SIP transports on real loopback sockets: what arrives, from where, and what a bad or
//! idle stream does to its connection.

use std::net::SocketAddr;
use std::time::Duration;

use anchorage_sip_transport::{Inbound, Limits, ListenerSpec, Outbound, Transport, Transports};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

const OPTIONS: &[u8] = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-1\r\n\
From: <sip:b@127.0.0.1>;tag=1\r\n\
To: <sip:a@127.0.0.1>\r\n\
Call-ID: c1\r\n\
CSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\n\
Content-Length: 4\r\n\
\r\n\
body";

async fn start(
    transport: Transport,
    limits: Limits,
) -> (Transports, SocketAddr, mpsc::Receiver<Inbound>) {
    let (tx, rx) = mpsc::channel(64);
    let spec = ListenerSpec {
        transport,
        address: "127.0.0.1:0".parse().unwrap(),
    };
    let transports = Transports::bind(&[spec], limits, tx).await.unwrap();
    let addr = transports.local_addrs()[0].1;
    (transports, addr, rx)
}

async fn recv(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("a message within 2 s")
        .expect("channel open")
}

/// Reads until the peer closes the connection; panics if it does not within 2 s.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .expect("the connection closes within 2 s")
            .unwrap_or(0);
        if n == 0 {
            return all;
        }
        all.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn udp_datagram_in_and_reply_out_from_the_listener() {
    let (transports, addr, mut rx) = start(Transport::Udp, Limits::default()).await;
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    phone.send_to(OPTIONS, addr).await.unwrap();
    let msg = recv(&mut rx).await;
    assert_eq!(&msg.data[..], OPTIONS);
    assert_eq!(msg.source, phone.local_addr().unwrap());
    assert_eq!(msg.local, addr);
    assert_eq!(msg.transport, Transport::Udp);

    transports
        .send(Outbound {
            data: Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n"),
            destination: msg.source,
            transport: Transport::Udp,
            local: Some(addr),
        })
        .unwrap();
    let mut buf = [0u8; 100];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), phone.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"SIP/2.0 200 OK\r\n\r\n");
    assert_eq!(
        from, addr,
        "the reply leaves from the listener it is sent on"
    );
}

#[tokio::test]
async fn udp_keepalives_are_not_messages() {
    let (_t, addr, mut rx) = start(Transport::Udp, Limits::default()).await;
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    phone.send_to(b"\r\n\r\n", addr).await.unwrap();
    phone.send_to(OPTIONS, addr).await.unwrap();
    assert_eq!(&recv(&mut rx).await.data[..], OPTIONS);
}

#[tokio::test]
async fn tcp_stream_is_framed_and_the_connection_reused_for_replies() {
    let (transports, addr, mut rx) = start(Transport::Tcp, Limits::default()).await;
    let mut phone = TcpStream::connect(addr).await.unwrap();
    // Two messages and keep-alives in one write, then a third split across writes.
    let mut first = Vec::new();
    first.extend_from_slice(OPTIONS);
    first.extend_from_slice(b"\r\n\r\n");
    first.extend_from_slice(OPTIONS);
    first.extend_from_slice(&OPTIONS[..50]);
    phone.write_all(&first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    phone.write_all(&OPTIONS[50..]).await.unwrap();
    for _ in 0..3 {
        let msg = recv(&mut rx).await;
        assert_eq!(&msg.data[..], OPTIONS);
        assert_eq!(msg.source, phone.local_addr().unwrap());
        assert_eq!(msg.transport, Transport::Tcp);
    }
    transports
        .send(Outbound {
            data: Bytes::from_static(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
            destination: phone.local_addr().unwrap(),
            transport: Transport::Tcp,
            local: None,
        })
        .unwrap();
    // The keep-alive ping was answered with a CRLF pong (RFC 5626 §4.4.1), then the reply.
    let expected: &[u8] = b"\r\nSIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut got = Vec::new();
    let mut buf = [0u8; 100];
    while got.len() < expected.len() {
        let n = tokio::time::timeout(Duration::from_secs(2), phone.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, expected);
    assert_eq!(transports.open_connections(), 1);
}

#[tokio::test]
async fn tcp_message_without_content_length_closes_the_connection() {
    let (transports, addr, mut rx) = start(Transport::Tcp, Limits::default()).await;
    let mut phone = TcpStream::connect(addr).await.unwrap();
    phone
        .write_all(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(&mut phone).await;
    assert!(rx.try_recv().is_err(), "nothing is delivered");
    assert_eq!(
        transports
            .stats()
            .framing_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn tcp_message_over_the_size_limit_closes_the_connection() {
    let limits = Limits {
        max_message_bytes: 1024,
        ..Limits::default()
    };
    let (_t, addr, mut rx) = start(Transport::Tcp, limits).await;
    let mut phone = TcpStream::connect(addr).await.unwrap();
    let mut big = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 2000));
    phone.write_all(&big).await.unwrap();
    read_until_closed(&mut phone).await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn idle_tcp_connection_is_closed() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let (transports, addr, _rx) = start(Transport::Tcp, limits).await;
    let mut phone = TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    read_until_closed(&mut phone).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(180),
        "closed after {waited:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(transports.open_connections(), 0);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let (transports, addr, mut rx) = start(Transport::Tcp, limits).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(OPTIONS).await.unwrap();
    recv(&mut rx).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    read_until_closed(&mut second).await;
    assert_eq!(
        transports
            .stats()
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The first connection still works.
    first.write_all(OPTIONS).await.unwrap();
    assert_eq!(&recv(&mut rx).await.data[..], OPTIONS);
}

#[tokio::test]
async fn outbound_tcp_opens_one_connection_and_reuses_it() {
    let (transports, _addr, _rx) = start(Transport::Tcp, Limits::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let destination = server.local_addr().unwrap();
    for _ in 0..2 {
        transports
            .send(Outbound {
                data: Bytes::from_static(OPTIONS),
                destination,
                transport: Transport::Tcp,
                local: None,
            })
            .unwrap();
    }
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(2), server.accept())
        .await
        .unwrap()
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 2 * OPTIONS.len() {
        let n = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, [OPTIONS, OPTIONS].concat());
    let second = tokio::time::timeout(Duration::from_millis(200), server.accept()).await;
    assert!(second.is_err(), "no second connection is opened");
    assert_eq!(transports.open_connections(), 1);
}

#[tokio::test]
async fn one_source_holds_at_most_its_share_of_connections() {
    let limits = Limits {
        max_connections_per_source: 2,
        ..Limits::default()
    };
    let (transports, addr, mut rx) = start(Transport::Tcp, limits).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(OPTIONS).await.unwrap();
    recv(&mut rx).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(OPTIONS).await.unwrap();
    recv(&mut rx).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    read_until_closed(&mut third).await;
    let refused = || {
        transports
            .stats()
            .connections_refused_per_source
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(refused(), 1);
    // A closed connection gives its place back.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while transports.open_connections() > 1 {
        assert!(std::time::Instant::now() < deadline, "never closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = TcpStream::connect(addr).await.unwrap();
    again.write_all(OPTIONS).await.unwrap();
    assert_eq!(&recv(&mut rx).await.data[..], OPTIONS);
    assert_eq!(refused(), 1);
}

#[tokio::test]
async fn a_message_left_half_sent_closes_its_connection_at_the_deadline() {
    let limits = Limits {
        message_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (transports, addr, mut rx) = start(Transport::Tcp, limits).await;
    // A connection that completes each message (slowly) and keeps pinging is left alone.
    let mut good = TcpStream::connect(addr).await.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    slow.write_all(&OPTIONS[..40]).await.unwrap();
    // Bytes that keep trickling in do not move the deadline.
    for chunk in OPTIONS[40..60].chunks(4) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        slow.write_all(chunk).await.unwrap();
        good.write_all(b"\r\n\r\n").await.unwrap();
    }
    read_until_closed(&mut slow).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_millis(1500),
        "closed after {waited:?}"
    );
    assert_eq!(
        transports
            .stats()
            .message_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    good.write_all(&OPTIONS[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    good.write_all(&OPTIONS[10..]).await.unwrap();
    assert_eq!(&recv(&mut rx).await.data[..], OPTIONS);
}
