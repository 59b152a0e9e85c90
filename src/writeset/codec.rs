//! The versioned binary encoding of a write set, as stored in the Raft log and sent to peers.
//!
//! Owns the byte layout: one format-version byte, then the bincode 2 (standard config, serde)
//! encoding of [`WriteSet`], and nothing after it. Must not change without bumping
//! [`FORMAT_VERSION`]: the golden tests below pin the bytes, and every node of a cluster must
//! decode every entry of the log identically.

use super::WriteSet;
use bincode::config::{self, Configuration};

/// The first byte of every encoded write set.
pub const FORMAT_VERSION: u8 = 1;

/// The largest encoded write set accepted, like Galera's `wsrep_max_ws_size`. Larger
/// transactions must be refused at COMMIT; a Raft entry this size already stalls replication.
pub const MAX_ENCODED_LEN: usize = 256 * 1024 * 1024;

/// bincode counts decoded bytes by their in-memory size (a one-byte varint length claims 8),
/// so the decode budget is a multiple of the encoded limit. It exists so that a corrupt
/// length prefix fails before it allocates, instead of allocating whatever it claims.
const DECODE_LIMIT: usize = 4 * MAX_ENCODED_LEN;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty write set")]
    Empty,
    #[error("unknown write-set format version {0} (this node reads version {FORMAT_VERSION})")]
    UnknownVersion(u8),
    #[error("write set of {len} bytes exceeds the limit of {MAX_ENCODED_LEN}")]
    TooLarge { len: usize },
    #[error("malformed write set: {0}")]
    Malformed(#[from] bincode::error::DecodeError),
    #[error("{0} unexpected bytes after the write set")]
    TrailingBytes(usize),
    #[error("write set has unknown flag bits {0:#x}")]
    UnknownFlags(u32),
    #[error("write set cannot be encoded: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

fn encode_config() -> Configuration {
    config::standard()
}

pub(super) fn encode(ws: &WriteSet) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    out.extend(bincode::serde::encode_to_vec(ws, encode_config())?);
    if out.len() > MAX_ENCODED_LEN {
        return Err(CodecError::TooLarge { len: out.len() });
    }
    Ok(out)
}

pub(super) fn decode(bytes: &[u8]) -> Result<WriteSet, CodecError> {
    let (&version, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    if bytes.len() > MAX_ENCODED_LEN {
        return Err(CodecError::TooLarge { len: bytes.len() });
    }
    let config = config::standard().with_limit::<DECODE_LIMIT>();
    let (ws, used): (WriteSet, usize) = bincode::serde::decode_from_slice(rest, config)?;
    if used != rest.len() {
        return Err(CodecError::TrailingBytes(rest.len() - used));
    }
    if !ws.flags.is_known() {
        return Err(CodecError::UnknownFlags(ws.flags.bits()));
    }
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::super::{
        normalize_keys, table_key, Body, Key, KeyHash, SessionContext, TOICommand, WriteSetFlags,
    };
    use super::*;
    use crate::ids::{NodeId, Seqno, Xid};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn rows_write_set() -> WriteSet {
        let mut keys = vec![
            Key::exclusive(KeyHash([0xab; 16])),
            Key::reference(KeyHash([0x01; 16])),
            Key::update(KeyHash([0x7f; 16])),
        ];
        normalize_keys(&mut keys);
        WriteSet {
            origin: NodeId(2),
            xid: Xid("n2-0123456789abcdef".into()),
            last_seen: Seqno(300),
            flags: WriteSetFlags::PA_UNSAFE,
            keys,
            body: Body::Rows(vec![vec![0xde, 0xad], vec![], vec![0xbe, 0xef, 0x00]]),
        }
    }

    fn toi_write_set() -> WriteSet {
        WriteSet {
            origin: NodeId(1),
            xid: Xid("n1-ff".into()),
            last_seen: Seqno(7),
            flags: WriteSetFlags::empty(),
            keys: vec![Key::exclusive(table_key("test", "t1"))],
            body: Body::Toi(TOICommand {
                statement: b"ALTER TABLE t1 ADD c INT".to_vec(),
                context: SessionContext {
                    current_schema: Some("test".into()),
                    sql_mode: "STRICT_TRANS_TABLES".into(),
                    character_set_client: "utf8mb4".into(),
                    character_set_connection: "utf8mb4".into(),
                    character_set_results: None,
                    collation_connection: "utf8mb4_general_ci".into(),
                    foreign_key_checks: true,
                    unique_checks: false,
                    time_zone: "SYSTEM".into(),
                },
            }),
        }
    }

    /// Frozen bytes: a change here is a wire-format change and needs a new FORMAT_VERSION.
    const GOLDEN_ROWS: &str = concat!(
        "0102136e322d30313233343536373839616263646566fb2c01010301010101010101010101010101010101",
        "007f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f01abababababababababababababababab02000302dead0003beef00"
    );
    const GOLDEN_TOI: &str = concat!(
        "0101056e312d6666070001a6a41de6a0266a0ac45c6870b7bd5557020118414c544552205441424c452074",
        "3120414444206320494e54010474657374135354524943545f5452414e535f5441424c455307757466386d",
        "623407757466386d62340012757466386d62345f67656e6572616c5f636901000653595354454d"
    );

    #[test]
    fn golden_rows_write_set_bytes() {
        let bytes = rows_write_set().encode().unwrap();
        assert_eq!(hex(&bytes), GOLDEN_ROWS);
        assert_eq!(WriteSet::decode(&bytes).unwrap(), rows_write_set());
    }

    #[test]
    fn golden_toi_write_set_bytes() {
        let bytes = toi_write_set().encode().unwrap();
        assert_eq!(hex(&bytes), GOLDEN_TOI);
        assert_eq!(WriteSet::decode(&bytes).unwrap(), toi_write_set());
    }

    #[test]
    fn rejects_empty_unknown_version_and_trailing_bytes() {
        assert!(matches!(WriteSet::decode(&[]), Err(CodecError::Empty)));
        let mut bytes = rows_write_set().encode().unwrap();
        bytes[0] = 2;
        assert!(matches!(
            WriteSet::decode(&bytes),
            Err(CodecError::UnknownVersion(2))
        ));
        bytes[0] = FORMAT_VERSION;
        bytes.push(0);
        assert!(matches!(
            WriteSet::decode(&bytes),
            Err(CodecError::TrailingBytes(1))
        ));
    }

    #[test]
    fn rejects_unknown_flags() {
        let mut ws = rows_write_set();
        ws.flags = WriteSetFlags(0x8000_0001);
        let bytes = ws.encode().unwrap();
        assert!(matches!(
            WriteSet::decode(&bytes),
            Err(CodecError::UnknownFlags(0x8000_0001))
        ));
    }

    #[test]
    fn rejects_every_truncation() {
        let bytes = toi_write_set().encode().unwrap();
        for len in 0..bytes.len() {
            assert!(
                WriteSet::decode(&bytes[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn huge_length_prefix_fails_without_allocating_it() {
        // Version, origin 2, then an xid whose varint length claims 2^62 bytes.
        let mut bytes = vec![FORMAT_VERSION, 2, 253];
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(matches!(
            WriteSet::decode(&bytes),
            Err(CodecError::Malformed(_))
        ));
    }

    use crate::test_rng::Rng;

    #[test]
    fn decode_never_panics_on_mutated_input() {
        let seeds = [
            rows_write_set().encode().unwrap(),
            toi_write_set().encode().unwrap(),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut decoded_ok = 0;
        for i in 0..5_000 {
            let mut bytes = seeds[i % 2].clone();
            match rng.below(4) {
                0 => bytes.truncate(rng.below(bytes.len())),
                1 => {
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(bytes.len());
                        bytes[at] = rng.next() as u8;
                    }
                }
                2 => {
                    let at = rng.below(bytes.len());
                    let junk: Vec<u8> = (0..=rng.below(9)).map(|_| rng.next() as u8).collect();
                    bytes.splice(at..at, junk);
                }
                _ => {
                    let len = rng.below(64);
                    bytes = (0..len).map(|_| rng.next() as u8).collect();
                    if !bytes.is_empty() && rng.below(2) == 0 {
                        bytes[0] = FORMAT_VERSION;
                    }
                }
            }
            if let Ok(ws) = WriteSet::decode(&bytes) {
                // Whatever decodes must be canonical: it re-encodes to the same bytes.
                assert_eq!(ws.encode().unwrap(), bytes);
                decoded_ok += 1;
            }
        }
        // Mutating a payload byte keeps a valid write set; the loop must have seen some.
        assert!(decoded_ok > 0);
    }
}
