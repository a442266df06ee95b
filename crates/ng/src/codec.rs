//! Framing and document encodings: `<cookie> <document>` where the document is a bencode
//! dictionary (first byte `d`) or a JSON object (first byte `{`).
//!
//! Decoding bencode uses `bt_bencode` (it accepts the unsorted keys Kamailio and OpenSIPS
//! send); JSON uses `serde_json`; both go through the same serde [`Value`] tree.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::Deserialize;

use crate::error::{DecodeError, ErrorReason, ReplyError};
use crate::reply::Reply;
use crate::request::Request;
use crate::value::{Dict, Value};

/// The opaque token before the first space of a datagram; replies echo it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cookie(Bytes);

impl Cookie {
    /// A cookie from its bytes. Returns `None` if empty or containing a space (it would not
    /// frame).
    pub fn new(bytes: impl Into<Bytes>) -> Option<Cookie> {
        let bytes = bytes.into();
        if bytes.is_empty() || bytes.contains(&b' ') {
            None
        } else {
            Some(Cookie(bytes))
        }
    }

    /// A cookie the caller knows to be non-empty and space-free.
    pub(crate) fn from_trusted(bytes: Bytes) -> Cookie {
        Cookie(bytes)
    }

    /// The cookie's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// A document encoding. Replies use the request's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// Bencode (what Kamailio and OpenSIPS send).
    #[default]
    Bencode,
    /// JSON.
    Json,
}

impl Encoding {
    /// The encoding a document's first byte announces, if any.
    pub fn detect(document: &[u8]) -> Option<Encoding> {
        match document.first() {
            Some(b'd') => Some(Encoding::Bencode),
            Some(b'{') => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// Splits a datagram at its first space into cookie and document. `None` when there is no
/// space or the datagram starts with one (rtpengine drops those silently).
pub fn split_cookie(datagram: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = datagram.iter().position(|&b| b == b' ')?;
    if space == 0 {
        return None;
    }
    Some((datagram.get(..space)?, datagram.get(space + 1..)?))
}

/// Decodes a document (no cookie) into a dictionary.
///
/// Errors carry the encoding the reply must use and rtpengine's reason text; the `String`
/// says what exactly failed.
pub fn decode_document(
    document: &[u8],
) -> Result<(Encoding, Dict), (Encoding, ErrorReason, String)> {
    if document.is_empty() {
        return Err((
            Encoding::Bencode,
            ErrorReason::NoPayload,
            "empty document".into(),
        ));
    }
    match Encoding::detect(document) {
        Some(Encoding::Bencode) => {
            // One value is read and anything after it ignored, as rtpengine does.
            let mut de = bt_bencode::Deserializer::from_slice(document);
            match Value::deserialize(&mut de) {
                Ok(Value::Dict(d)) => Ok((Encoding::Bencode, d)),
                Ok(other) => Err((
                    Encoding::Bencode,
                    ErrorReason::BadBencode,
                    format!("document is a {}, not a dictionary", other.kind()),
                )),
                Err(e) => Err((Encoding::Bencode, ErrorReason::BadBencode, e.to_string())),
            }
        }
        Some(Encoding::Json) => match serde_json::from_slice::<Value>(document) {
            Ok(Value::Dict(d)) => Ok((Encoding::Json, d)),
            Ok(other) => Err((
                Encoding::Json,
                ErrorReason::BadBencode,
                format!("document is a {}, not an object", other.kind()),
            )),
            Err(e) => Err((Encoding::Json, ErrorReason::BadJson, e.to_string())),
        },
        None => Err((
            Encoding::Bencode,
            ErrorReason::InvalidFormat,
            "document starts with neither 'd' nor '{'".into(),
        )),
    }
}

/// Encodes a dictionary. JSON cannot carry byte strings that are not UTF-8 (an SDP body may
/// hold any bytes), so such a document is written in bencode instead; the returned
/// [`Encoding`] says which was used.
pub fn encode_document(dict: &Dict, encoding: Encoding) -> (Encoding, Vec<u8>) {
    if encoding == Encoding::Json {
        if let Ok(json) = serde_json::to_vec(&DictRef(dict)) {
            return (Encoding::Json, json);
        }
    }
    let mut out = Vec::with_capacity(256);
    write_bencode_dict(&mut out, dict);
    (Encoding::Bencode, out)
}

/// Serialises a borrowed dictionary without cloning it into a [`Value`].
struct DictRef<'a>(&'a Dict);

impl serde::Serialize for DictRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

// Bencode is written by hand rather than with `bt_bencode::to_vec`: writing our closed
// `Value` tree cannot fail, and this keeps every encode path infallible (no error branch that
// could only be a bug). Keys are sorted by their bytes, as the bencode spec asks, so strict
// decoders accept what we send; decoding stays lenient.
fn write_bencode(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::Bytes(b) => write_bencode_bytes(out, b),
        Value::List(items) => {
            out.push(b'l');
            for item in items {
                write_bencode(out, item);
            }
            out.push(b'e');
        }
        Value::Dict(d) => write_bencode_dict(out, d),
    }
}

fn write_bencode_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

fn write_bencode_dict(out: &mut Vec<u8>, dict: &Dict) {
    let mut entries: Vec<&(String, Value)> = dict.iter().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'd');
    for (k, v) in entries {
        write_bencode_bytes(out, k.as_bytes());
        write_bencode(out, v);
    }
    out.push(b'e');
}

fn frame(cookie: &Cookie, document: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(cookie.as_bytes().len() + 1 + document.len());
    out.put_slice(cookie.as_bytes());
    out.put_u8(b' ');
    out.put_slice(document);
    out.freeze()
}

/// A request as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Its cookie (echo it in the reply).
    pub cookie: Cookie,
    /// Its encoding (use it for the reply).
    pub encoding: Encoding,
    /// The typed request.
    pub request: Request,
}

/// Decodes a request datagram: framing, document, typed request.
///
/// On failure, [`DecodeError::error_reply`] gives the reply to send (none without a cookie).
pub fn decode_request(datagram: &[u8]) -> Result<Incoming, DecodeError> {
    let (cookie, document) = split_cookie(datagram).ok_or(DecodeError::NoCookie)?;
    let cookie = Cookie(Bytes::copy_from_slice(cookie));
    let (encoding, dict) =
        decode_document(document).map_err(|(encoding, reason, detail)| DecodeError::Request {
            cookie: cookie.clone(),
            encoding,
            reason,
            detail: Some(detail),
        })?;
    let request = Request::from_dict(&dict).map_err(|reason| DecodeError::Request {
        cookie: cookie.clone(),
        encoding,
        reason,
        detail: None,
    })?;
    Ok(Incoming {
        cookie,
        encoding,
        request,
    })
}

/// Encodes a request datagram (`<cookie> <document>`); see [`encode_document`] for when
/// JSON falls back to bencode.
pub fn encode_request(cookie: &Cookie, request: &Request, encoding: Encoding) -> Bytes {
    let (_, document) = encode_document(&request.to_dict(), encoding);
    frame(cookie, &document)
}

/// Encodes a reply datagram (`<cookie> <document>`); see [`encode_document`] for when JSON
/// falls back to bencode.
pub fn encode_reply(cookie: &Cookie, reply: &Reply, encoding: Encoding) -> Bytes {
    let (_, document) = encode_document(&reply.to_dict(), encoding);
    frame(cookie, &document)
}

/// Decodes a reply datagram into its cookie, encoding and typed reply.
pub fn decode_reply(datagram: &[u8]) -> Result<(Cookie, Encoding, Reply), ReplyError> {
    let (cookie, document) = split_cookie(datagram).ok_or(ReplyError::NoCookie)?;
    let cookie = Cookie(Bytes::copy_from_slice(cookie));
    let (encoding, dict) = decode_document(document)
        .map_err(|(_, reason, detail)| ReplyError::Document(format!("{reason}: {detail}")))?;
    let reply = Reply::from_dict(&dict)?;
    Ok((cookie, encoding, reply))
}
