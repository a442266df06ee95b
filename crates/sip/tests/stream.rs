//! TCP stream framing.

use anchorage_sip::{FramingError, StreamFramer};

const A: &[u8] = b"OPTIONS sip:h SIP/2.0\r\nl: 3\r\n\r\nabc";
const B: &[u8] = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";

#[test]
fn frames_byte_by_byte_with_keepalives_between() {
    let mut stream = Vec::new();
    stream.extend_from_slice(b"\r\n\r\n");
    stream.extend_from_slice(A);
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(B);
    stream.extend_from_slice(b"\r\n\r\n");
    let mut f = StreamFramer::new();
    let mut got = Vec::new();
    for b in &stream {
        f.push(std::slice::from_ref(b));
        while let Some(m) = f.next_message().unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got, [A, B]);
    assert_eq!(f.take_pings(), 2);
    assert_eq!(f.take_pings(), 0);
    assert_eq!(f.buffered(), 0);
}

#[test]
fn two_messages_in_one_read() {
    let mut f = StreamFramer::new();
    f.push(&[A, B, &B[..10]].concat());
    assert_eq!(f.next_message().unwrap().as_deref(), Some(A));
    assert_eq!(f.next_message().unwrap().as_deref(), Some(B));
    assert_eq!(f.next_message().unwrap(), None);
    f.push(&B[10..]);
    assert_eq!(f.next_message().unwrap().as_deref(), Some(B));
}

#[test]
fn errors_close_the_connection() {
    let mut f = StreamFramer::new();
    f.push(b"OPTIONS sip:h SIP/2.0\r\nVia: x\r\n\r\n");
    assert_eq!(f.next_message(), Err(FramingError::MissingContentLength));
    f.push(A);
    assert_eq!(f.next_message(), Err(FramingError::MissingContentLength));

    let mut f = StreamFramer::new();
    f.push(b"OPTIONS sip:h SIP/2.0\r\nContent-Length: 1x\r\n\r\n");
    assert_eq!(f.next_message(), Err(FramingError::BadContentLength));

    let mut f = StreamFramer::new();
    f.push(b"OPTIONS sip:h SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(f.next_message(), Err(FramingError::BadContentLength));

    let mut f = StreamFramer::with_limits(64, 10);
    f.push(b"OPTIONS sip:h SIP/2.0\r\nl: 11\r\n\r\n");
    assert_eq!(
        f.next_message(),
        Err(FramingError::BodyTooLarge {
            declared: 11,
            limit: 10
        })
    );

    let mut f = StreamFramer::with_limits(64, 10);
    f.push(&[b'x'; 65]);
    assert_eq!(f.next_message(), Err(FramingError::HeadersTooLarge(64)));
}

#[test]
fn folded_content_length_is_read() {
    let mut f = StreamFramer::new();
    f.push(b"OPTIONS sip:h SIP/2.0\r\nContent-Length:\r\n 2\r\n\r\nab");
    assert_eq!(
        f.next_message().unwrap().as_deref(),
        Some(&b"OPTIONS sip:h SIP/2.0\r\nContent-Length:\r\n 2\r\n\r\nab"[..])
    );
}

#[test]
fn in_message_is_true_only_while_a_message_is_partly_received() {
    let mut f = StreamFramer::new();
    assert!(!f.in_message());
    f.push(b"\r\n");
    assert_eq!(f.next_message().unwrap(), None);
    assert!(
        !f.in_message(),
        "a lone CRLF (maybe a ping arriving) is no message"
    );
    f.push(b"\r\nOPTIONS sip:a@b SIP/2.0\r\nContent-Length: 2\r\n");
    assert_eq!(f.next_message().unwrap(), None);
    assert_eq!(f.take_pings(), 1);
    assert!(f.in_message(), "headers started");
    f.push(b"\r\nx");
    assert_eq!(f.next_message().unwrap(), None);
    assert!(f.in_message(), "body incomplete");
    f.push(b"y");
    assert!(f.next_message().unwrap().is_some());
    assert!(!f.in_message());
}
