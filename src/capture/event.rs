//! Hand decoders for the MariaDB events mysql_common 0.37 leaves raw (GTID 0xa2, XA_PREPARE
//! 0x26), and the re-encoding of a streamed event into the bytes a `BINLOG` statement replays.
//! Pure functions over byte slices: no I/O, no stream state. Every read is bounds-checked: a
//! truncated or malformed payload is an error, never a panic.

use super::CaptureError;
use std::fmt;
use std::str::FromStr;

/// Binlog event type codes this module and the group assembler dispatch on.
pub(crate) mod kind {
    pub(crate) const QUERY: u8 = 0x02;
    pub(crate) const FORMAT_DESCRIPTION: u8 = 0x0f;
    pub(crate) const XID: u8 = 0x10;
    pub(crate) const TABLE_MAP: u8 = 0x13;
    pub(crate) const WRITE_ROWS_V1: u8 = 0x17;
    pub(crate) const UPDATE_ROWS_V1: u8 = 0x18;
    pub(crate) const DELETE_ROWS_V1: u8 = 0x19;
    pub(crate) const WRITE_ROWS_V2: u8 = 0x1e;
    pub(crate) const UPDATE_ROWS_V2: u8 = 0x1f;
    pub(crate) const DELETE_ROWS_V2: u8 = 0x20;
    pub(crate) const XA_PREPARE: u8 = 0x26;
    pub(crate) const MARIADB_GTID: u8 = 0xa2;
    /// MariaDB's compressed rows events (`log_bin_compress=ON`): 0xa6..=0xab.
    pub(crate) const MARIADB_COMPRESSED_FIRST: u8 = 0xa6;
    pub(crate) const MARIADB_COMPRESSED_LAST: u8 = 0xab;

    pub(crate) fn is_rows(t: u8) -> bool {
        matches!(
            t,
            WRITE_ROWS_V1
                | UPDATE_ROWS_V1
                | DELETE_ROWS_V1
                | WRITE_ROWS_V2
                | UPDATE_ROWS_V2
                | DELETE_ROWS_V2
        )
    }
}

/// GTID event flags2 bits (MariaDB `Gtid_log_event`).
pub(crate) const FL_STANDALONE: u8 = 1;
pub(crate) const FL_GROUP_COMMIT_ID: u8 = 2;
pub(crate) const FL_PREPARED_XA: u8 = 64;
pub(crate) const FL_COMPLETED_XA: u8 = 128;

/// Rows-event flag: the last rows event of a statement.
pub(crate) const STMT_END_F: u16 = 0x0001;

/// The binlog event header length (binlog version 4).
pub(crate) const HEADER_LEN: usize = 19;

/// A MariaDB GTID, `domain-server_id-seq_no`, as `@@last_gtid` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gtid {
    pub domain: u32,
    pub server_id: u32,
    pub seq_no: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server_id, self.seq_no)
    }
}

impl FromStr for Gtid {
    type Err = CaptureError;

    fn from_str(s: &str) -> Result<Gtid, CaptureError> {
        let bad = || CaptureError::Malformed(format!("not a GTID: {s:?}"));
        let mut parts = s.trim().splitn(3, '-');
        let mut next = || parts.next().ok_or_else(bad);
        let domain = next()?.parse().map_err(|_| bad())?;
        let server_id = next()?.parse().map_err(|_| bad())?;
        let seq_no = next()?.parse().map_err(|_| bad())?;
        Ok(Gtid {
            domain,
            server_id,
            seq_no,
        })
    }
}

/// An XA transaction id as the binlog carries it (the XA standard's triple).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct XaXid {
    pub format_id: u32,
    pub gtrid: Vec<u8>,
    pub bqual: Vec<u8>,
}

/// The decoded body of a MariaDB GTID event (0xa2), with the server id from its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GtidEvent {
    pub(crate) gtid: Gtid,
    pub(crate) flags2: u8,
    pub(crate) xid: Option<XaXid>,
}

impl GtidEvent {
    pub(crate) fn is_prepared_xa(&self) -> bool {
        self.flags2 & FL_PREPARED_XA != 0
    }

    pub(crate) fn is_completed_xa(&self) -> bool {
        self.flags2 & FL_COMPLETED_XA != 0
    }

    pub(crate) fn is_standalone(&self) -> bool {
        self.flags2 & FL_STANDALONE != 0
    }
}

/// A bounds-checked little-endian cursor; every read names what it was reading when it ran out.
struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], CaptureError> {
        if self.buf.len() < n {
            return Err(CaptureError::Malformed(format!(
                "{} truncated reading {field}: need {n} bytes, have {}",
                self.what,
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &str) -> Result<u8, CaptureError> {
        Ok(self.take(1, field)?[0])
    }

    fn u32(&mut self, field: &str) -> Result<u32, CaptureError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &str) -> Result<u64, CaptureError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Decodes a GTID event payload (header and checksum already removed):
/// seq_no(8) domain(4) flags2(1) [commit_id(8) if FL_GROUP_COMMIT_ID]
/// [format_id(4) gtrid_len(1) bqual_len(1) data if FL_PREPARED_XA or FL_COMPLETED_XA].
/// Trailing bytes (padding, 10.11's flags_extra) are ignored.
pub(crate) fn decode_gtid(server_id: u32, payload: &[u8]) -> Result<GtidEvent, CaptureError> {
    let mut c = Cursor {
        buf: payload,
        what: "GTID event",
    };
    let seq_no = c.u64("seq_no")?;
    let domain = c.u32("domain_id")?;
    let flags2 = c.u8("flags2")?;
    if flags2 & FL_GROUP_COMMIT_ID != 0 {
        c.take(8, "commit_id")?;
    }
    let xid = if flags2 & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0 {
        let format_id = c.u32("xid format_id")?;
        let gtrid_len = usize::from(c.u8("xid gtrid_length")?);
        let bqual_len = usize::from(c.u8("xid bqual_length")?);
        let gtrid = c.take(gtrid_len, "xid gtrid")?.to_vec();
        let bqual = c.take(bqual_len, "xid bqual")?.to_vec();
        Some(XaXid {
            format_id,
            gtrid,
            bqual,
        })
    } else {
        None
    };
    Ok(GtidEvent {
        gtid: Gtid {
            domain,
            server_id,
            seq_no,
        },
        flags2,
        xid,
    })
}

/// The decoded body of an XA_PREPARE event (0x26).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct XaPrepareEvent {
    pub(crate) one_phase: bool,
    pub(crate) xid: XaXid,
}

/// XA's own bound on gtrid and bqual (64 bytes each): larger lengths mean a corrupt event.
const XID_PART_MAX: u32 = 64;

/// Decodes an XA_PREPARE payload: one_phase(1) format_id(4) gtrid_len(4) bqual_len(4) data.
pub(crate) fn decode_xa_prepare(payload: &[u8]) -> Result<XaPrepareEvent, CaptureError> {
    let mut c = Cursor {
        buf: payload,
        what: "XA_PREPARE event",
    };
    let one_phase = c.u8("one_phase")? != 0;
    let format_id = c.u32("format_id")?;
    let gtrid_len = c.u32("gtrid_length")?;
    let bqual_len = c.u32("bqual_length")?;
    if gtrid_len > XID_PART_MAX || bqual_len > XID_PART_MAX {
        return Err(CaptureError::Malformed(format!(
            "XA_PREPARE event: xid lengths {gtrid_len}/{bqual_len} exceed {XID_PART_MAX}"
        )));
    }
    // Both lengths are at most 64, so the casts cannot truncate.
    let gtrid = c.take(gtrid_len as usize, "gtrid")?.to_vec();
    let bqual = c.take(bqual_len as usize, "bqual")?.to_vec();
    Ok(XaPrepareEvent {
        one_phase,
        xid: XaXid {
            format_id,
            gtrid,
            bqual,
        },
    })
}

/// The rows-event flags field: the 2 bytes after the 6-byte table id in the post-header (the
/// same place in v1 and v2, whose extra-data block comes after the flags).
pub(crate) fn rows_event_flags(payload: &[u8]) -> Result<u16, CaptureError> {
    let mut c = Cursor {
        buf: payload,
        what: "rows event",
    };
    c.take(6, "table_id")?;
    let b = c.take(2, "flags")?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

/// The fields of an event header the re-encoder keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub(crate) timestamp: u32,
    pub(crate) event_type: u8,
    pub(crate) server_id: u32,
    pub(crate) log_pos: u32,
    pub(crate) flags: u16,
}

/// Writes one event with no checksum: the header with `event_size` recomputed, then the payload.
/// Every replayed event goes through here, together with a Format_description event that says
/// checksum OFF ([`format_description_without_checksum`]); see the module header of `capture`
/// for why.
pub(crate) fn encode_without_checksum(
    h: Header,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CaptureError> {
    let size = u32::try_from(HEADER_LEN + payload.len()).map_err(|_| {
        CaptureError::Malformed(format!("event of {} bytes is too large", payload.len()))
    })?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&h.timestamp.to_le_bytes());
    out.push(h.event_type);
    out.extend_from_slice(&h.server_id.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&h.log_pos.to_le_bytes());
    out.extend_from_slice(&h.flags.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// `LOG_EVENT_BINLOG_IN_USE_F`: set in the FD of a binlog that is still open. Meaningless to
/// the BINLOG statement; cleared so the bytes do not depend on whether the file was rotated.
const LOG_EVENT_BINLOG_IN_USE_F: u16 = 0x1;

/// Re-encodes the source's Format_description payload (checksum-algorithm byte already split off
/// by mysql_common) as an FD that declares `BINLOG_CHECKSUM_ALG_OFF`. The FD itself always ends
/// with a 4-byte checksum field after the algorithm byte; with OFF the server does not verify
/// it, so it is written as zeros.
pub(crate) fn format_description_without_checksum(
    h: Header,
    payload: &[u8],
) -> Result<Vec<u8>, CaptureError> {
    let mut body = Vec::with_capacity(payload.len() + 5);
    body.extend_from_slice(payload);
    body.push(0); // BINLOG_CHECKSUM_ALG_OFF
    body.extend_from_slice(&[0, 0, 0, 0]);
    let h = Header {
        flags: h.flags & !LOG_EVENT_BINLOG_IN_USE_F,
        log_pos: 0,
        ..h
    };
    let mut out = Vec::new();
    encode_without_checksum(h, &body, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtid_payload_xa() -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&33u64.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.push(FL_PREPARED_XA | 8 | 4);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(2);
        p.push(1);
        p.extend_from_slice(b"x1b");
        p
    }

    #[test]
    fn gtid_event_decodes_seq_domain_flags_and_xid() {
        let ev = decode_gtid(7, &gtid_payload_xa()).unwrap();
        assert_eq!(
            ev.gtid,
            Gtid {
                domain: 0,
                server_id: 7,
                seq_no: 33
            }
        );
        assert!(ev.is_prepared_xa());
        assert!(!ev.is_completed_xa());
        assert_eq!(
            ev.xid,
            Some(XaXid {
                format_id: 1,
                gtrid: b"x1".to_vec(),
                bqual: b"b".to_vec()
            })
        );
    }

    #[test]
    fn gtid_event_with_commit_id_skips_it_before_the_xid() {
        let mut p = Vec::new();
        p.extend_from_slice(&5u64.to_le_bytes());
        p.extend_from_slice(&3u32.to_le_bytes());
        p.push(FL_GROUP_COMMIT_ID | FL_COMPLETED_XA);
        p.extend_from_slice(&u64::MAX.to_le_bytes());
        p.extend_from_slice(&9u32.to_le_bytes());
        p.extend_from_slice(&[1, 0, b'q']);
        let ev = decode_gtid(1, &p).unwrap();
        assert_eq!(ev.gtid.domain, 3);
        assert_eq!(ev.xid.unwrap().gtrid, b"q");
    }

    #[test]
    fn gtid_decoder_rejects_every_truncation() {
        let full = gtid_payload_xa();
        for n in 0..full.len() {
            let r = decode_gtid(1, &full[..n]);
            assert!(
                matches!(r, Err(CaptureError::Malformed(_))),
                "prefix of {n} bytes: {r:?}"
            );
        }
    }

    fn xa_prepare_payload() -> Vec<u8> {
        let mut p = vec![0u8];
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(&2u32.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(b"x1");
        p
    }

    #[test]
    fn xa_prepare_decodes_xid() {
        let ev = decode_xa_prepare(&xa_prepare_payload()).unwrap();
        assert!(!ev.one_phase);
        assert_eq!(
            ev.xid,
            XaXid {
                format_id: 1,
                gtrid: b"x1".to_vec(),
                bqual: vec![]
            }
        );
    }

    #[test]
    fn xa_prepare_decoder_rejects_every_truncation_and_absurd_lengths() {
        let full = xa_prepare_payload();
        for n in 0..full.len() {
            let r = decode_xa_prepare(&full[..n]);
            assert!(
                matches!(r, Err(CaptureError::Malformed(_))),
                "prefix of {n} bytes: {r:?}"
            );
        }
        let mut huge = full.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_xa_prepare(&huge),
            Err(CaptureError::Malformed(_))
        ));
    }

    #[test]
    fn rows_flags_read_after_the_table_id_and_reject_short_input() {
        let p = [1, 0, 0, 0, 0, 0, 0x01, 0x00, 0xff];
        assert_eq!(rows_event_flags(&p).unwrap(), STMT_END_F);
        assert!(rows_event_flags(&p[..7]).is_err());
    }

    #[test]
    fn gtid_text_round_trips_and_rejects_garbage() {
        let g: Gtid = "0-1-33".parse().unwrap();
        assert_eq!(
            g,
            Gtid {
                domain: 0,
                server_id: 1,
                seq_no: 33
            }
        );
        assert_eq!(g.to_string(), "0-1-33");
        for bad in ["", "0-1", "a-1-2", "0-1-2-3", "0--1"] {
            assert!(bad.parse::<Gtid>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn re_encoded_event_has_a_consistent_size_field() {
        let h = Header {
            timestamp: 1,
            event_type: kind::TABLE_MAP,
            server_id: 2,
            log_pos: 99,
            flags: 0,
        };
        let mut out = Vec::new();
        encode_without_checksum(h, b"abc", &mut out).unwrap();
        assert_eq!(out.len(), HEADER_LEN + 3);
        assert_eq!(
            u32::from_le_bytes([out[9], out[10], out[11], out[12]]) as usize,
            out.len()
        );
        assert_eq!(&out[HEADER_LEN..], b"abc");
        let fd = format_description_without_checksum(Header { flags: 1, ..h }, b"xy").unwrap();
        assert_eq!(&fd[HEADER_LEN..], &[b'x', b'y', 0, 0, 0, 0, 0]);
        assert_eq!(
            u16::from_le_bytes([fd[17], fd[18]]),
            0,
            "in-use flag cleared"
        );
    }
}
