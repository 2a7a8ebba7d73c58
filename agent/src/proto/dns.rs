//! DNS (RFC 1035) over UDP (one message per datagram) and TCP (two-byte
//! length prefix), with name compression, paired by message id.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use serde::Serialize;

use crate::proto::fields::{Body, ExchangeRole};
use crate::proto::{Parse, Parsed, Parser, Partial, ProtoConfig, Protocol};
use crate::types::{Direction, Transport};

const HEADER: usize = 12;
/// RFC 1035 §3.1: names are at most 255 bytes on the wire.
const MAX_NAME: usize = 255;
/// Compression pointers followed per name (each must point backwards too).
const MAX_JUMPS: usize = 64;

/// Why a DNS message is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    /// The message ends inside a field.
    #[error("message truncated in {what} at offset {offset}")]
    Truncated {
        /// Which field.
        what: &'static str,
        /// Where.
        offset: usize,
    },
    /// Label type 0x40/0x80 (reserved) or a label past the end.
    #[error("invalid label at offset {offset}")]
    Label {
        /// Where.
        offset: usize,
    },
    /// A compression pointer that does not point backwards, or too many.
    #[error("invalid compression pointer at offset {offset}")]
    Pointer {
        /// Where.
        offset: usize,
    },
    /// A name longer than 255 bytes.
    #[error("name longer than 255 bytes at offset {offset}")]
    NameTooLong {
        /// Where the name starts.
        offset: usize,
    },
    /// A TCP message of length zero.
    #[error("zero-length DNS message over TCP")]
    Empty,
}

/// One question.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DnsQuestion {
    /// Queried name, dotted, with a trailing dot.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QTYPE mnemonic, if standard.
    pub qtype_name: Option<&'static str>,
    /// QCLASS.
    pub qclass: u16,
}

/// Decoded RDATA of common types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DnsData {
    /// A.
    A {
        /// Address.
        addr: Ipv4Addr,
    },
    /// AAAA.
    Aaaa {
        /// Address.
        addr: Ipv6Addr,
    },
    /// CNAME, NS, PTR, DNAME.
    Name {
        /// Target name.
        name: String,
    },
    /// MX.
    Mx {
        /// Preference.
        preference: u16,
        /// Mail exchanger.
        exchange: String,
    },
    /// TXT.
    Txt {
        /// Character strings (lossy UTF-8).
        strings: Vec<String>,
    },
    /// SOA.
    Soa {
        /// Primary server.
        mname: String,
        /// Responsible mailbox.
        rname: String,
        /// Zone serial.
        serial: u32,
    },
    /// SRV.
    Srv {
        /// Priority.
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
        /// Target.
        target: String,
    },
    /// Anything else: raw RDATA is in the record's raw bytes.
    Other {
        /// RDATA length.
        len: u16,
    },
}

/// One resource record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DnsRecord {
    /// Owner name.
    pub name: String,
    /// TYPE.
    pub rtype: u16,
    /// TYPE mnemonic, if standard.
    pub rtype_name: Option<&'static str>,
    /// CLASS (the UDP payload size for OPT).
    pub class: u16,
    /// TTL (extended RCODE and flags for OPT).
    pub ttl: u32,
    /// Decoded RDATA.
    pub data: DnsData,
}

/// One DNS message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DnsMessage {
    /// Message id (pairs a response with its query).
    pub id: u16,
    /// QR bit: this is a response.
    pub response: bool,
    /// OPCODE.
    pub opcode: u8,
    /// Header flags word as sent.
    pub flags: u16,
    /// RCODE (header part).
    pub rcode: u8,
    /// RCODE mnemonic.
    pub rcode_name: Option<&'static str>,
    /// TC bit: the UDP response was truncated by the server.
    pub truncated: bool,
    /// Section counts as declared (QD, AN, NS, AR).
    pub counts: [u16; 4],
    /// Question section.
    pub questions: Vec<DnsQuestion>,
    /// Answer section.
    pub answers: Vec<DnsRecord>,
    /// Authority section.
    pub authority: Vec<DnsRecord>,
    /// Additional section.
    pub additional: Vec<DnsRecord>,
    /// Records not decoded because of the cap (all are in raw).
    pub records_not_listed: u32,
}

fn type_name(t: u16) -> Option<&'static str> {
    Some(match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        39 => "DNAME",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        _ => return None,
    })
}

fn rcode_name(r: u8) -> Option<&'static str> {
    Some(match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => return None,
    })
}

struct Reader<'a> {
    msg: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DnsError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.msg.len());
        let Some(end) = end else {
            return Err(DnsError::Truncated { what, offset: self.at });
        };
        let b = &self.msg[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DnsError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DnsError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A possibly compressed name; the reader moves past its in-place part.
    fn name(&mut self) -> Result<String, DnsError> {
        let start = self.at;
        let mut out = String::new();
        let mut wire_len = 0usize;
        let mut pos = self.at;
        let mut jumped = false;
        let mut jumps = 0;
        // Lowest offset a pointer may target: strictly before the label it is in.
        let mut limit = pos;
        loop {
            let Some(&len) = self.msg.get(pos) else {
                return Err(DnsError::Truncated { what: "name", offset: pos });
            };
            match len & 0xC0 {
                0x00 => {
                    if len == 0 {
                        if !jumped {
                            self.at = pos + 1;
                        }
                        if out.is_empty() {
                            out.push('.');
                        }
                        return Ok(out);
                    }
                    let label =
                        self.msg.get(pos + 1..pos + 1 + usize::from(len)).ok_or(DnsError::Label { offset: pos })?;
                    wire_len += usize::from(len) + 1;
                    if wire_len > MAX_NAME {
                        return Err(DnsError::NameTooLong { offset: start });
                    }
                    for &c in label {
                        if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                            out.push(char::from(c));
                        } else {
                            out.push_str(&format!("\\{c:03}"));
                        }
                    }
                    out.push('.');
                    pos += 1 + usize::from(len);
                }
                0xC0 => {
                    let Some(&lo) = self.msg.get(pos + 1) else {
                        return Err(DnsError::Truncated { what: "name pointer", offset: pos });
                    };
                    let target = (usize::from(len & 0x3F) << 8) | usize::from(lo);
                    jumps += 1;
                    if target >= limit || jumps > MAX_JUMPS {
                        return Err(DnsError::Pointer { offset: pos });
                    }
                    if !jumped {
                        self.at = pos + 2;
                        jumped = true;
                    }
                    limit = target;
                    pos = target;
                }
                _ => return Err(DnsError::Label { offset: pos }),
            }
        }
    }

    fn rdata(&mut self, rtype: u16, len: u16) -> Result<DnsData, DnsError> {
        let end = self.at + usize::from(len);
        if end > self.msg.len() {
            return Err(DnsError::Truncated { what: "rdata", offset: self.at });
        }
        let start = self.at;
        let data = match (rtype, len) {
            (1, 4) => {
                let b = self.bytes(4, "A")?;
                DnsData::A { addr: Ipv4Addr::new(b[0], b[1], b[2], b[3]) }
            }
            (28, 16) => {
                let b: [u8; 16] = self.bytes(16, "AAAA")?.try_into().unwrap_or([0; 16]);
                DnsData::Aaaa { addr: Ipv6Addr::from(b) }
            }
            (2 | 5 | 12 | 39, _) => DnsData::Name { name: self.name()? },
            (15, _) => DnsData::Mx { preference: self.u16("MX preference")?, exchange: self.name()? },
            (16, _) => {
                let mut strings = Vec::new();
                while self.at < end {
                    let n = self.bytes(1, "TXT length")?[0];
                    let s = self.bytes(usize::from(n), "TXT string")?;
                    strings.push(String::from_utf8_lossy(s).into_owned());
                }
                DnsData::Txt { strings }
            }
            (6, _) => DnsData::Soa { mname: self.name()?, rname: self.name()?, serial: self.u32("SOA serial")? },
            (33, _) => DnsData::Srv {
                priority: self.u16("SRV priority")?,
                weight: self.u16("SRV weight")?,
                port: self.u16("SRV port")?,
                target: self.name()?,
            },
            _ => DnsData::Other { len },
        };
        if self.at > end {
            return Err(DnsError::Truncated { what: "rdata", offset: start });
        }
        self.at = end;
        Ok(data)
    }

    fn record(&mut self) -> Result<DnsRecord, DnsError> {
        let name = self.name()?;
        let rtype = self.u16("type")?;
        let class = self.u16("class")?;
        let ttl = self.u32("ttl")?;
        let len = self.u16("rdlength")?;
        let data = self.rdata(rtype, len)?;
        Ok(DnsRecord { name, rtype, rtype_name: type_name(rtype), class, ttl, data })
    }
}

/// Decode one message: what was decoded, and the error that stopped it.
pub fn decode(msg: &[u8], max_records: usize) -> (DnsMessage, Option<DnsError>) {
    let mut m = DnsMessage::default();
    let err = decode_into(msg, max_records, &mut m).err();
    (m, err)
}

fn decode_into(msg: &[u8], max_records: usize, m: &mut DnsMessage) -> Result<(), DnsError> {
    let mut r = Reader { msg, at: 0 };
    m.id = r.u16("header")?;
    m.flags = r.u16("header")?;
    for c in &mut m.counts {
        *c = r.u16("header")?;
    }
    m.response = m.flags & 0x8000 != 0;
    m.opcode = ((m.flags >> 11) & 0xF) as u8;
    m.truncated = m.flags & 0x0200 != 0;
    m.rcode = (m.flags & 0xF) as u8;
    m.rcode_name = rcode_name(m.rcode);
    let mut budget = max_records;
    for _ in 0..m.counts[0] {
        if budget == 0 {
            m.records_not_listed += 1;
            continue;
        }
        budget -= 1;
        let q = (|| -> Result<DnsQuestion, DnsError> {
            let name = r.name()?;
            let qtype = r.u16("qtype")?;
            let qclass = r.u16("qclass")?;
            Ok(DnsQuestion { name, qtype, qtype_name: type_name(qtype), qclass })
        })();
        m.questions.push(q?);
    }
    if m.records_not_listed > 0 {
        // Sections after unlisted questions cannot be located.
        return Ok(());
    }
    for section in 1..4 {
        for _ in 0..m.counts[section] {
            if budget == 0 {
                m.records_not_listed += 1;
                continue;
            }
            budget -= 1;
            match r.record() {
                Ok(rec) => match section {
                    1 => m.answers.push(rec),
                    2 => m.authority.push(rec),
                    _ => m.additional.push(rec),
                },
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Whether a UDP datagram has the exact shape of a standard DNS message, for
/// detecting DNS on a port other than 53 by its content: opcode QUERY, the Z
/// bit clear, exactly one question, and every section decoding to exactly the
/// end of the datagram; a query also has no answer or authority records and at
/// most one additional (EDNS OPT). `Some(true)` for a response, `Some(false)`
/// for a query, `None` when it is not such a message.
pub fn udp_message_shape(msg: &[u8]) -> Option<bool> {
    if msg.len() < HEADER + 5 {
        return None;
    }
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    let count = |i: usize| u16::from_be_bytes([msg[4 + 2 * i], msg[5 + 2 * i]]);
    let response = flags & 0x8000 != 0;
    if (flags >> 11) & 0xF != 0 || flags & 0x0040 != 0 || count(0) != 1 {
        return None;
    }
    if !response && (count(1) != 0 || count(2) != 0 || count(3) > 1 || flags & 0xF != 0) {
        return None;
    }
    let total = usize::from(count(1)) + usize::from(count(2)) + usize::from(count(3));
    if total > 256 {
        return None;
    }
    let mut r = Reader { msg, at: HEADER };
    r.name().ok()?;
    r.u16("qtype").ok()?;
    let qclass = r.u16("qclass").ok()? & 0x7FFF;
    if !matches!(qclass, 1 | 3 | 4 | 254 | 255) {
        return None;
    }
    for _ in 0..total {
        r.record().ok()?;
    }
    (r.at == msg.len()).then_some(response)
}

/// DNS parser for one connection.
pub struct DnsParser {
    transport: Transport,
    max_records: usize,
}

impl DnsParser {
    /// A parser for DNS over `transport`.
    pub fn new(transport: Transport, cfg: &ProtoConfig) -> Self {
        DnsParser { transport, max_records: cfg.max_dns_records.max(1) }
    }

    fn parsed(&self, msg: &[u8], len: usize) -> Parsed {
        let (m, error) = decode(msg, self.max_records);
        let error = error.map(|e| e.to_string());
        let role = if m.response { ExchangeRole::Response } else { ExchangeRole::Request };
        Parsed {
            len,
            exchange: (msg.len() >= 2).then_some((u64::from(m.id), role)),
            body: Body::Dns(Box::new(m)),
            error,
        }
    }
}

impl Parser for DnsParser {
    fn protocol(&self) -> Protocol {
        Protocol::Dns
    }

    fn parse(&mut self, _dir: Direction, buf: &Bytes) -> Parse {
        if self.transport == Transport::Udp {
            if buf.len() < HEADER {
                return Parse::Invalid {
                    len: buf.len().max(1),
                    error: DnsError::Truncated { what: "header", offset: buf.len() }.to_string(),
                };
            }
            return Parse::Message(self.parsed(buf, buf.len()));
        }
        if buf.len() < 2 {
            return Parse::Need { min_len: 2, total: None };
        }
        let n = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
        if n == 0 {
            return Parse::Message(Parsed {
                len: 2,
                body: Body::Dns(Box::default()),
                exchange: None,
                error: Some(DnsError::Empty.to_string()),
            });
        }
        if buf.len() < 2 + n {
            return Parse::Need { min_len: 2 + n, total: Some(2 + n as u64) };
        }
        Parse::Message(self.parsed(&buf[2..2 + n], 2 + n))
    }

    fn interrupted(&mut self, _dir: Direction, buf: &Bytes) -> Partial {
        let tcp = self.transport == Transport::Tcp;
        let (msg, total) = if tcp && buf.len() >= 2 {
            let n = u16::from_be_bytes([buf[0], buf[1]]);
            (&buf[2..], Some(2 + u64::from(n)))
        } else {
            (&buf[..], None)
        };
        let (m, _) = decode(msg, self.max_records);
        let role = if m.response { ExchangeRole::Response } else { ExchangeRole::Request };
        Partial {
            exchange: (msg.len() >= 2).then_some((u64::from(m.id), role)),
            body: Body::Dns(Box::new(m)),
            total,
            complete_at_end: false,
        }
    }

    fn resync(&mut self, _dir: Direction, buf: &[u8]) -> Option<usize> {
        if self.transport == Transport::Udp {
            return Some(0);
        }
        // A plausible length prefix followed by a header with one question
        // (what every real query and response has).
        (0..buf.len().saturating_sub(2 + HEADER).min(4096)).find(|&i| {
            let n = usize::from(u16::from_be_bytes([buf[i], buf[i + 1]]));
            let h = &buf[i + 2..];
            n >= HEADER && h[4] == 0 && h[5] == 1 && h[2] & 0x78 == 0
        })
    }

    fn gap(&mut self, _dir: Direction) {}
}

#[cfg(test)]
mod tests;
