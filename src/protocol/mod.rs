//! MySQL/MariaDB wire protocol pieces the node needs on both of its edges: packet framing with
//! sequence ids and 16 MiB continuation frames, the mysql_native_password arithmetic, and small
//! builders for the packets the node itself originates (greeting, OK, ERR). Packet *types* come
//! from `mysql_common`; this module adds framing and I/O-free helpers. It owns no I/O policy:
//! timeouts, limits and what to do on an error belong to the frontend and backend layers.

pub(crate) mod native_password;
pub(crate) mod packet;
pub(crate) mod response;

pub(crate) use packet::{Packet, PacketError, PacketReader, PacketWriter};

/// Command bytes (the first payload byte of a client request).
pub(crate) mod command {
    pub(crate) const QUIT: u8 = 0x01;
    pub(crate) const INIT_DB: u8 = 0x02;
    pub(crate) const QUERY: u8 = 0x03;
    pub(crate) const FIELD_LIST: u8 = 0x04;
    pub(crate) const STATISTICS: u8 = 0x09;
    pub(crate) const PROCESS_KILL: u8 = 0x0c;
    pub(crate) const DEBUG: u8 = 0x0d;
    pub(crate) const PING: u8 = 0x0e;
    pub(crate) const CHANGE_USER: u8 = 0x11;
    pub(crate) const STMT_PREPARE: u8 = 0x16;
    pub(crate) const STMT_EXECUTE: u8 = 0x17;
    pub(crate) const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub(crate) const STMT_CLOSE: u8 = 0x19;
    pub(crate) const STMT_RESET: u8 = 0x1a;
    pub(crate) const SET_OPTION: u8 = 0x1b;
    pub(crate) const STMT_FETCH: u8 = 0x1c;
    pub(crate) const RESET_CONNECTION: u8 = 0x1f;
}

/// Reads a length-encoded integer at the start of `buf`; returns the value and its width.
pub(crate) fn read_lenenc_int(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let width = match first {
        0..=0xfa => return Some((u64::from(first), 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        // 0xfb is NULL and 0xff an error header: neither is an integer.
        _ => return None,
    };
    let bytes = buf.get(1..1 + width)?;
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        value |= u64::from(*b) << (8 * i);
    }
    Some((value, 1 + width))
}

#[cfg(test)]
mod tests {
    use super::read_lenenc_int;

    #[test]
    fn lenenc_ints_decode_every_width_and_reject_truncation() {
        assert_eq!(read_lenenc_int(&[0x05]), Some((5, 1)));
        assert_eq!(read_lenenc_int(&[0xfc, 0x01, 0x02]), Some((0x0201, 3)));
        assert_eq!(read_lenenc_int(&[0xfd, 1, 2, 3]), Some((0x030201, 4)));
        assert_eq!(
            read_lenenc_int(&[0xfe, 1, 0, 0, 0, 0, 0, 0, 0x80]),
            Some((0x8000_0000_0000_0001, 9))
        );
        assert_eq!(read_lenenc_int(&[0xfc, 0x01]), None);
        assert_eq!(read_lenenc_int(&[0xfb]), None);
        assert_eq!(read_lenenc_int(&[]), None);
    }
}
