//! Where a server response ends. The relay forwards backend packets to the client unchanged and
//! only needs to know when a command's response is complete and with which status flags. This
//! tracker reads each packet's header bytes and follows the response grammar for the command
//! (OK/ERR, result sets with or without EOF markers, multi-results, prepare responses). It is
//! pure: no I/O, so every shape is unit-tested here.

use super::read_lenenc_int;
use mysql_common::constants::StatusFlags;

/// The response shape a command produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// COM_QUERY (text rows) or COM_STMT_EXECUTE/COM_STMT_FETCH (binary rows): OK, ERR or result
    /// sets, repeated while SERVER_MORE_RESULTS_EXISTS is set.
    ResultSets,
    /// COM_STMT_FETCH: binary rows from an open cursor, up to an EOF (or an ERR).
    Rows,
    /// COM_STMT_PREPARE: a prepare-OK followed by parameter and column definitions.
    Prepare,
    /// COM_FIELD_LIST: column definitions up to an EOF, or an ERR.
    FieldList,
    /// Exactly one packet (OK, ERR, EOF or the COM_STATISTICS string).
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    More,
    /// The response is complete. `status` is the last status flags seen, if any packet carried them.
    Done {
        status: Option<StatusFlags>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unexpected packet from the backend: {0}")]
pub(crate) struct Malformed(pub(crate) &'static str);

#[derive(Debug, Clone, Copy)]
enum State {
    Start,
    Columns { left: u64 },
    ColumnsEof,
    Rows,
    Countdown { left: u64 },
}

pub(crate) struct ResponseTracker {
    shape: Shape,
    deprecate_eof: bool,
    state: State,
    /// Where the status flags sit in the packet just fed, if it carries them (OK, EOF).
    status_at: Option<usize>,
    /// The error code of the ERR packet the response ended with, if it did (0 if the packet was
    /// too short to carry one).
    error: Option<u16>,
}

const OK: u8 = 0x00;
const EOF: u8 = 0xfe;
const ERR: u8 = 0xff;

impl ResponseTracker {
    pub(crate) fn new(shape: Shape, deprecate_eof: bool) -> Self {
        let (shape, state) = match shape {
            Shape::Rows => (Shape::ResultSets, State::Rows),
            other => (other, State::Start),
        };
        ResponseTracker {
            shape,
            deprecate_eof,
            state,
            status_at: None,
            error: None,
        }
    }

    fn is_terminator(&self, p: &[u8]) -> bool {
        // A row may also start with 0xFE (an 8-byte length prefix), but such a row is at least
        // 9 bytes long, or, with DEPRECATE_EOF, a full 16 MiB frame.
        p.first() == Some(&EOF)
            && if self.deprecate_eof {
                p.len() < super::packet::MAX_FRAME
            } else {
                p.len() < 9
            }
    }

    /// The offset of the status flags in the packet last fed, when it carries them.
    pub(crate) fn status_offset(&self) -> Option<usize> {
        self.status_at
    }

    /// Whether the response (so far) ended in an ERR packet.
    pub(crate) fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// The error code of the ERR packet the response (so far) ended in.
    pub(crate) fn error_code(&self) -> Option<u16> {
        self.error
    }

    /// Feeds the next packet's payload.
    pub(crate) fn feed(&mut self, p: &[u8]) -> Result<Step, Malformed> {
        let first = *p.first().ok_or(Malformed("empty packet"))?;
        self.status_at = match first {
            OK => ok_status_offset(p),
            EOF if p.len() < 9 && !self.deprecate_eof => Some(3),
            EOF if self.deprecate_eof && p.len() < super::packet::MAX_FRAME => ok_status_offset(p),
            _ => None,
        };
        // Rows and column definitions never carry status flags, even when they start with 0x00.
        if matches!(
            self.state,
            State::Rows | State::Columns { .. } | State::Countdown { .. }
        ) && !self.is_terminator(p)
        {
            self.status_at = None;
        }
        // 0xFF never starts a row or a definition (it is no valid length prefix): always an ERR.
        if first == ERR {
            self.error = Some(p.get(1..3).map_or(0, |c| u16::from_le_bytes([c[0], c[1]])));
        }
        match self.shape {
            Shape::Single => Ok(Step::Done {
                status: match first {
                    OK => ok_status(p),
                    EOF if p.len() < 9 => eof_status(p),
                    _ => None,
                },
            }),
            Shape::FieldList => {
                if first == ERR {
                    Ok(Step::Done { status: None })
                } else if self.is_terminator(p) {
                    Ok(Step::Done {
                        status: terminator_status(p, self.deprecate_eof),
                    })
                } else {
                    Ok(Step::More)
                }
            }
            Shape::Prepare => self.feed_prepare(first, p),
            Shape::ResultSets | Shape::Rows => self.feed_result_sets(first, p),
        }
    }

    fn feed_prepare(&mut self, first: u8, p: &[u8]) -> Result<Step, Malformed> {
        match self.state {
            State::Start => match first {
                ERR => Ok(Step::Done { status: None }),
                OK => {
                    let field = |at: usize| -> Result<u64, Malformed> {
                        let b = p.get(at..at + 2).ok_or(Malformed("short prepare OK"))?;
                        Ok(u64::from(u16::from_le_bytes([b[0], b[1]])))
                    };
                    let (columns, params) = (field(5)?, field(7)?);
                    // Each non-empty block of definitions is followed by an EOF marker unless
                    // DEPRECATE_EOF was negotiated; nothing else can appear, so count packets.
                    let marker = u64::from(!self.deprecate_eof);
                    let block = |n: u64| if n == 0 { 0 } else { n + marker };
                    let left = block(params) + block(columns);
                    self.state = State::Countdown { left };
                    Ok(if left == 0 {
                        Step::Done { status: None }
                    } else {
                        Step::More
                    })
                }
                _ => Err(Malformed("prepare response neither OK nor ERR")),
            },
            State::Countdown { left } => {
                let left = left.saturating_sub(1);
                self.state = State::Countdown { left };
                Ok(if left == 0 {
                    Step::Done { status: None }
                } else {
                    Step::More
                })
            }
            _ => Err(Malformed("prepare response state")),
        }
    }

    fn feed_result_sets(&mut self, first: u8, p: &[u8]) -> Result<Step, Malformed> {
        match self.state {
            State::Start => match first {
                OK => Ok(self.after_final(ok_status(p))),
                ERR => Ok(Step::Done { status: None }),
                0xfb => Err(Malformed("LOCAL INFILE request (not negotiated)")),
                _ => {
                    let (n, _) = read_lenenc_int(p).ok_or(Malformed("bad column count"))?;
                    if n == 0 {
                        return Err(Malformed("zero column count"));
                    }
                    self.state = State::Columns { left: n };
                    Ok(Step::More)
                }
            },
            State::Columns { left } => {
                if first == ERR {
                    return Ok(Step::Done { status: None });
                }
                let left = left - 1;
                self.state = if left > 0 {
                    State::Columns { left }
                } else if self.deprecate_eof {
                    State::Rows
                } else {
                    State::ColumnsEof
                };
                Ok(Step::More)
            }
            State::ColumnsEof => {
                if !self.is_terminator(p) {
                    return Err(Malformed("missing EOF after column definitions"));
                }
                let status = eof_status(p);
                if status.is_some_and(|s| s.contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS)) {
                    // A cursor was opened: rows come later, through COM_STMT_FETCH.
                    self.state = State::Start;
                    return Ok(Step::Done { status });
                }
                self.state = State::Rows;
                Ok(Step::More)
            }
            State::Rows => {
                if first == ERR {
                    return Ok(Step::Done { status: None });
                }
                if self.is_terminator(p) {
                    let status = terminator_status(p, self.deprecate_eof);
                    return Ok(self.after_final(status));
                }
                Ok(Step::More)
            }
            State::Countdown { .. } => Err(Malformed("result set state")),
        }
    }

    fn after_final(&mut self, status: Option<StatusFlags>) -> Step {
        if status.is_some_and(|s| s.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)) {
            self.state = State::Start;
            Step::More
        } else {
            Step::Done { status }
        }
    }
}

/// Where the status flags of an OK packet (header 0x00 or, as a terminator, 0xFE) start.
fn ok_status_offset(p: &[u8]) -> Option<usize> {
    let mut pos = 1;
    let (_, w) = read_lenenc_int(p.get(pos..)?)?;
    pos += w;
    let (_, w) = read_lenenc_int(p.get(pos..)?)?;
    pos += w;
    p.get(pos..pos + 2).map(|_| pos)
}

/// Status flags of an OK packet (header 0x00 or, as a terminator, 0xFE).
pub(crate) fn ok_status(p: &[u8]) -> Option<StatusFlags> {
    let pos = ok_status_offset(p)?;
    Some(StatusFlags::from_bits_retain(u16::from_le_bytes([
        p[pos],
        p[pos + 1],
    ])))
}

/// An OK packet the node itself sends (COMMIT, BEGIN, a TOI statement's success).
pub(crate) fn ok_packet(affected_rows: u64, status: StatusFlags, warnings: u16) -> Vec<u8> {
    let mut p = vec![OK];
    crate::backend::session_conn::put_lenenc_int(&mut p, affected_rows);
    p.push(0);
    p.extend_from_slice(&status.bits().to_le_bytes());
    p.extend_from_slice(&warnings.to_le_bytes());
    p
}

/// Status flags of a pre-4.1-style EOF packet: 0xFE, warnings(2), status(2).
pub(crate) fn eof_status(p: &[u8]) -> Option<StatusFlags> {
    let bytes = p.get(3..5)?;
    Some(StatusFlags::from_bits_retain(u16::from_le_bytes([
        bytes[0], bytes[1],
    ])))
}

fn terminator_status(p: &[u8], deprecate_eof: bool) -> Option<StatusFlags> {
    if deprecate_eof {
        ok_status(p)
    } else {
        eof_status(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MORE: u16 = 0x0008;
    const AUTOCOMMIT: u16 = 0x0002;

    fn ok(status: u16) -> Vec<u8> {
        let s = status.to_le_bytes();
        vec![0x00, 0x01, 0x00, s[0], s[1], 0, 0]
    }
    fn eof(status: u16) -> Vec<u8> {
        let s = status.to_le_bytes();
        vec![0xfe, 0, 0, s[0], s[1]]
    }
    fn ok_term(status: u16) -> Vec<u8> {
        let mut p = ok(status);
        p[0] = 0xfe;
        p
    }
    fn err() -> Vec<u8> {
        let mut p = vec![0xff, 0x7a, 0x04, b'#'];
        p.extend_from_slice(b"42000msg");
        p
    }
    fn col() -> Vec<u8> {
        b"\x03def\x00\x00\x00\x011\x00\x0c\x3f\x00\x01\x00\x00\x00\x08\x81\x00\x00\x00\x00".to_vec()
    }

    fn run(shape: Shape, deprecate_eof: bool, packets: &[Vec<u8>]) -> Result<Step, Malformed> {
        let mut t = ResponseTracker::new(shape, deprecate_eof);
        let mut last = Step::More;
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(last, Step::More, "response ended early at packet {i}");
            last = t.feed(p)?;
        }
        Ok(last)
    }

    fn done(status: u16) -> Step {
        Step::Done {
            status: Some(StatusFlags::from_bits_retain(status)),
        }
    }

    #[test]
    fn text_result_set_with_eof_markers() {
        let packets = [
            vec![1],
            col(),
            eof(AUTOCOMMIT),
            vec![1, b'1'],
            vec![1, b'2'],
            eof(AUTOCOMMIT),
        ];
        assert_eq!(
            run(Shape::ResultSets, false, &packets),
            Ok(done(AUTOCOMMIT))
        );
    }

    #[test]
    fn deprecate_eof_result_set_ends_at_ok_terminator() {
        let packets = [vec![1], col(), vec![1, b'1'], ok_term(AUTOCOMMIT)];
        assert_eq!(run(Shape::ResultSets, true, &packets), Ok(done(AUTOCOMMIT)));
    }

    #[test]
    fn multi_results_continue_while_more_results_is_set() {
        let packets = [
            vec![1],
            col(),
            eof(AUTOCOMMIT),
            vec![1, b'1'],
            eof(AUTOCOMMIT | MORE),
            ok(AUTOCOMMIT | MORE),
            vec![1],
            col(),
            eof(AUTOCOMMIT),
            eof(AUTOCOMMIT),
        ];
        assert_eq!(
            run(Shape::ResultSets, false, &packets),
            Ok(done(AUTOCOMMIT))
        );
        let packets = [ok(MORE), err()];
        assert_eq!(
            run(Shape::ResultSets, false, &packets),
            Ok(Step::Done { status: None })
        );
    }

    #[test]
    fn a_row_starting_with_0xfe_is_not_a_terminator() {
        let mut big_row = vec![0xfe];
        big_row.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c']);
        let packets = [vec![1], col(), eof(0), big_row, eof(0)];
        assert_eq!(run(Shape::ResultSets, false, &packets), Ok(done(0)));
    }

    #[test]
    fn error_in_the_middle_of_rows_ends_the_response() {
        let packets = [vec![1], col(), eof(0), vec![1, b'1'], err()];
        assert_eq!(
            run(Shape::ResultSets, false, &packets),
            Ok(Step::Done { status: None })
        );
    }

    #[test]
    fn prepare_responses_with_and_without_eof() {
        // stmt id 1, 2 columns, 1 param.
        let prep_ok = vec![0, 1, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0];
        let packets = [prep_ok.clone(), col(), eof(0), col(), col(), eof(0)];
        assert_eq!(
            run(Shape::Prepare, false, &packets),
            Ok(Step::Done { status: None })
        );
        let packets = [prep_ok, col(), col(), col()];
        assert_eq!(
            run(Shape::Prepare, true, &packets),
            Ok(Step::Done { status: None })
        );
        // No params, one column.
        let prep_ok = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            run(Shape::Prepare, false, &[prep_ok.clone(), col(), eof(0)]),
            Ok(Step::Done { status: None })
        );
        // Params only.
        let prep_ok = vec![0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0];
        assert_eq!(
            run(
                Shape::Prepare,
                false,
                &[prep_ok.clone(), col(), col(), eof(0)]
            ),
            Ok(Step::Done { status: None })
        );
        // Nothing at all.
        let prep_ok = vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            run(Shape::Prepare, false, &[prep_ok]),
            Ok(Step::Done { status: None })
        );
        assert_eq!(
            run(Shape::Prepare, false, &[err()]),
            Ok(Step::Done { status: None })
        );
    }

    #[test]
    fn cursor_open_ends_the_execute_response_after_definitions() {
        let cursor = 0x0040 | AUTOCOMMIT;
        let packets = [vec![1], col(), eof(cursor)];
        assert_eq!(run(Shape::ResultSets, false, &packets), Ok(done(cursor)));
    }

    #[test]
    fn status_offsets_and_failures_are_reported() {
        let mut t = ResponseTracker::new(Shape::ResultSets, false);
        assert_eq!(t.feed(&ok(AUTOCOMMIT)), Ok(done(AUTOCOMMIT)));
        assert_eq!(t.status_offset(), Some(3));
        assert!(!t.failed());
        let mut t = ResponseTracker::new(Shape::ResultSets, false);
        t.feed(&[1]).unwrap();
        assert_eq!(t.status_offset(), None);
        t.feed(&col()).unwrap();
        t.feed(&eof(0)).unwrap();
        t.feed(&[0, 1, 2]).unwrap();
        assert_eq!(t.status_offset(), None, "a row is not a status packet");
        t.feed(&eof(1)).unwrap();
        assert_eq!(t.status_offset(), Some(3));
        let mut t = ResponseTracker::new(Shape::ResultSets, false);
        t.feed(&err()).unwrap();
        assert!(t.failed());
        assert_eq!(
            t.error_code(),
            Some(0x047a),
            "the code the packet carries (1146)"
        );
        let p = ok_packet(3, StatusFlags::from_bits_retain(AUTOCOMMIT), 1);
        assert_eq!(p, vec![0, 3, 0, 2, 0, 1, 0]);
        assert_eq!(
            ok_status(&p),
            Some(StatusFlags::from_bits_retain(AUTOCOMMIT))
        );
    }

    #[test]
    fn fetch_responses_are_rows_even_when_a_row_starts_with_0x00() {
        let packets = [vec![0, 0, 1, 2], vec![0, 0, 3, 4], eof(0x0040 | 0x0080)];
        assert_eq!(run(Shape::Rows, false, &packets), Ok(done(0x0040 | 0x0080)));
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        assert!(run(Shape::ResultSets, false, &[vec![]]).is_err());
        assert!(run(Shape::ResultSets, false, &[vec![0xfb, b'x']]).is_err());
        assert!(run(Shape::ResultSets, false, &[vec![1], col(), vec![1]]).is_err());
        assert!(run(Shape::Prepare, false, &[vec![0, 1]]).is_err());
        assert_eq!(ok_status(&[0]), None);
        assert_eq!(eof_status(&[0xfe, 0]), None);
    }
}
