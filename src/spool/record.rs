//! One spooled message and its on-disk frame: what a record holds, how it is
//! encoded (length prefix + CRC over header and payload), and how a segment's
//! bytes are scanned back into frames, skipping damaged stretches.
//!
//! Frame: `magic u32 | len u32 | crc32 u32 | payload[len]`, little-endian; the
//! CRC covers `magic | len | payload`, so a damaged length is caught as surely
//! as a damaged body. Payload: `version u8 | accepted_at_ms u64 | conn_len u16 |
//! conn | n_headers u16 | (name_len u16 | name | value_len u32 | value)* | body`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderName, HeaderValue};
use bytes::Bytes;

/// Marks the start of a frame ("SPOL"); a resync after damage looks for it.
pub(crate) const MAGIC: u32 = 0x4C4F_5053;
pub(crate) const HEADER_LEN: usize = 12;
const VERSION: u8 = 1;

/// Where a record lives: its segment and its byte offset there. Stable across
/// restarts (segments are append-only), so it is also the acknowledgement key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    pub segment: u64,
    pub offset: u64,
}

/// A message as accepted from a producer, with what is needed to deliver it later.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub connection_id: String,
    /// Credential headers, in the order the producer sent them. Never printed.
    pub credentials: Vec<(HeaderName, HeaderValue)>,
    /// The message bytes exactly as received.
    pub body: Bytes,
    /// When inletd accepted it (millisecond precision on disk).
    pub accepted_at: SystemTime,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.credentials.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Record")
            .field("connection_id", &self.connection_id)
            .field("credentials", &names)
            .field("body_len", &self.body.len())
            .field("accepted_at", &self.accepted_at)
            .finish()
    }
}

/// Why a record cannot be encoded (the caller's input is out of bounds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("the connection id is longer than 65535 bytes")]
    ConnectionIdTooLong,
    #[error("more than 65535 credential headers")]
    TooManyHeaders,
    #[error("a record of {len} bytes exceeds the spool's limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

impl Record {
    /// The full frame (header + payload) for this record.
    pub(crate) fn encode(&self, max_payload: usize) -> Result<Vec<u8>, EncodeError> {
        let conn = self.connection_id.as_bytes();
        let conn_len = u16::try_from(conn.len()).map_err(|_| EncodeError::ConnectionIdTooLong)?;
        let n_headers =
            u16::try_from(self.credentials.len()).map_err(|_| EncodeError::TooManyHeaders)?;
        let headers_len: usize = self
            .credentials
            .iter()
            .map(|(n, v)| 6 + n.as_str().len() + v.as_bytes().len())
            .sum();
        let payload_len = 1 + 8 + 2 + conn.len() + 2 + headers_len + self.body.len();
        let too_large = EncodeError::TooLarge {
            len: payload_len,
            max: max_payload,
        };
        if payload_len > max_payload {
            return Err(too_large);
        }
        let len = u32::try_from(payload_len).map_err(|_| too_large)?;
        let mut out = Vec::with_capacity(HEADER_LEN + payload_len);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // CRC, filled below
        out.push(VERSION);
        out.extend_from_slice(&unix_millis(self.accepted_at).to_le_bytes());
        out.extend_from_slice(&conn_len.to_le_bytes());
        out.extend_from_slice(conn);
        out.extend_from_slice(&n_headers.to_le_bytes());
        for (name, value) in &self.credentials {
            let name = name.as_str().as_bytes();
            // Header names are short and values are bounded by the payload check above.
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&(value.as_bytes().len() as u32).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(&self.body);
        let crc = frame_crc(len, &out[HEADER_LEN..]);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes a payload whose CRC already matched. Fails on content that a
    /// correct writer cannot produce (a CRC collision or a foreign file).
    pub(crate) fn decode(payload: &[u8]) -> Result<Record, &'static str> {
        let mut r = Reader(payload);
        if r.take(1)?[0] != VERSION {
            return Err("unknown record version");
        }
        let millis = u64::from_le_bytes(r.array()?);
        let conn_len = u16::from_le_bytes(r.array()?) as usize;
        let connection_id = std::str::from_utf8(r.take(conn_len)?)
            .map_err(|_| "connection id is not UTF-8")?
            .to_owned();
        let n_headers = u16::from_le_bytes(r.array()?);
        let mut credentials = Vec::with_capacity(usize::from(n_headers).min(16));
        for _ in 0..n_headers {
            let name_len = u16::from_le_bytes(r.array()?) as usize;
            let name = HeaderName::from_bytes(r.take(name_len)?).map_err(|_| "bad header name")?;
            let value_len = u32::from_le_bytes(r.array()?) as usize;
            let value =
                HeaderValue::from_bytes(r.take(value_len)?).map_err(|_| "bad header value")?;
            credentials.push((name, value));
        }
        Ok(Record {
            connection_id,
            credentials,
            body: Bytes::copy_from_slice(r.0),
            accepted_at: UNIX_EPOCH + Duration::from_millis(millis),
        })
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&MAGIC.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("record shorter than its fields say");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// Reads the frame header at `pos` and returns the payload length if a whole
/// frame with a matching CRC sits there.
pub(crate) fn frame_at(buf: &[u8], pos: usize, max_payload: usize) -> Option<usize> {
    let header = buf.get(pos..pos.checked_add(HEADER_LEN)?)?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (magic, len, crc) = (word(0), word(4), word(8));
    let payload_len = len as usize;
    if magic != MAGIC || payload_len > max_payload {
        return None;
    }
    let start = pos + HEADER_LEN;
    let payload = buf.get(start..start.checked_add(payload_len)?)?;
    (frame_crc(len, payload) == crc).then_some(payload_len)
}

/// What a scan of one segment's bytes found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// `(offset, payload length)` of every frame whose CRC matched, in order.
    pub frames: Vec<(u64, usize)>,
    /// Damaged stretches (a torn tail, flipped bits, garbage), each counted once,
    /// with the offset where each began.
    pub damaged: Vec<u64>,
}

/// Walks a segment frame by frame. At a frame that does not check out it
/// resyncs: it looks for the next offset where a whole frame with a matching
/// CRC starts, so one flipped byte costs one record, not the rest of the
/// segment (every later record there already got its 202).
pub(crate) fn scan(buf: &[u8], max_payload: usize) -> Scan {
    let mut out = Scan::default();
    let mut pos = 0;
    let magic = MAGIC.to_le_bytes();
    while pos < buf.len() {
        if let Some(len) = frame_at(buf, pos, max_payload) {
            out.frames.push((pos as u64, len));
            pos += HEADER_LEN + len;
            continue;
        }
        out.damaged.push(pos as u64);
        // Next candidate: the next occurrence of the magic that starts a valid frame.
        let mut next = None;
        let mut from = pos + 1;
        while let Some(i) = buf
            .get(from..)
            .and_then(|rest| rest.windows(4).position(|w| w == magic))
        {
            let at = from + i;
            if frame_at(buf, at, max_payload).is_some() {
                next = Some(at);
                break;
            }
            from = at + 1;
        }
        match next {
            Some(at) => pos = at,
            None => break,
        }
    }
    out
}
