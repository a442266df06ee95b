//! SIP message layer: byte-preserving lazy parser, header index, typed views, edit list and
//! message builders (sans-IO).
//!
//! * [`Message::parse`] takes one `bytes::Bytes` (a UDP datagram, or a frame cut by
//!   [`StreamFramer`] from a TCP stream) and indexes the start line and header spans;
//!   typed views ([`Message::top_via`], [`Message::cseq`], [`Message::from`], …) parse on
//!   access, [`Message::validate`] checks what a proxy relies on.
//! * [`Message::edit`] returns an [`Editor`]: push/pop Via, pop Route, prepend Record-Route,
//!   rewrite Request-URI, Max-Forwards, CSeq, a header value, the body; [`Editor::finish`]
//!   copies original slices and inserted bytes into one buffer. An unedited message comes out
//!   byte-identical.
//! * [`ResponseBuilder`] (via [`Message::response`]) and [`RequestBuilder`] build new
//!   messages, parsed and validated like received ones.
//!
//! What a proxy does with a datagram:
//!
//! ```
//! use anchorage_sip::{Message, ParseError};
//! use bytes::Bytes;
//!
//! let datagram = Bytes::from_static(
//!     b"OPTIONS sip:b@example.com SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
//!       f: <sip:a@example.com>;tag=1\r\nt: <sip:b@example.com>\r\ni: c1\r\n\
//!       CSeq: 1 INVITE\r\nl: 0\r\n\r\n");
//! let reply = match Message::parse(datagram.clone()).and_then(|m| m.validate().map(|_| m)) {
//!     Ok(_) => None,
//!     Err(e) => {
//!         // Enough to answer? Then 400 (or 505) with the reason; otherwise drop it.
//!         let req = Message::parse_lenient(datagram).ok().filter(|m| m.answerable());
//!         req.map(|r| r.response(e.status(), &e.reason()).to_tag("x").build().map(|m| m.bytes()))
//!     }
//! };
//! let reply = reply.unwrap().unwrap();
//! assert!(reply.starts_with(b"SIP/2.0 400 CSeq method INVITE does not match request method OPTIONS\r\n"));
//! ```
#![warn(missing_docs)]

mod build;
mod edit;
mod error;
pub mod header;
mod message;
mod method;
mod stream;
mod syntax;
mod transport;
mod uri;

pub use build::{RequestBuilder, ResponseBuilder};
pub use edit::Editor;
pub use error::{BuildError, FramingError, ParseError, UriError};
pub use header::cseq::CSeq;
pub use header::name_addr::{Contact, NameAddr};
pub use header::via::{Via, BRANCH_MAGIC_COOKIE};
pub use header::{Header, HeaderName, Params};
pub use message::Message;
pub use method::Method;
pub use stream::{StreamFramer, DEFAULT_MAX_BODY, DEFAULT_MAX_HEADERS};
pub use syntax::unescape;
pub use transport::Transport;
pub use uri::{Host, SipUri, TelUri, Uri};
