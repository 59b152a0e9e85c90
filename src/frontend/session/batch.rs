//! Multi-statement COM_QUERY (CLIENT_MULTI_STATEMENTS), run the way MariaDB runs it: the batch
//! is split into statements (`statement::pieces`, quote- and comment-aware; an empty statement or
//! a tail of comments after the last one is answered by the backend as MariaDB answers it, 1064
//! or OK, without running anything), each statement goes
//! through the session's normal path (`Session::query_one`: BEGIN, COMMIT, SET autocommit, TOI
//! DDL, capture of writes, strict mode, KILL, status rewrites), and the client reads one
//! response made of every statement's result.
//!
//! Owns: the batch loop and the shape of the combined response: sequence ids continue across
//! statements, every status-carrying packet of every result but the last has
//! SERVER_MORE_RESULTS_EXISTS (MariaDB sets it on both EOF packets of a result set, and on its
//! OK), and the first ERR ends the batch: earlier statements keep their effects and their
//! results stay sent, the rest does not run. Also the up-front refusal of a batch holding a
//! construct certus refuses in every case, so that such a batch runs none of its statements.
//! Must not touch: statement boundaries and classification (`statement`), what one statement
//! does (`query_one` and the routes), transaction state.

use super::{route, strict, End, Route, Session};
use crate::config::StrictMode;
use crate::frontend::error::ClientError;
use crate::protocol::command as cmd;
use crate::protocol::response::{ResponseTracker, Shape, Step};
use crate::protocol::Packet;
use crate::statement::{self, Piece, Statement};
use mysql_common::constants::StatusFlags;
use std::borrow::Cow;
use std::ops::Range;

/// Shapes the packets the session sends while a batch runs.
pub(crate) struct BatchOut {
    /// The sequence id the next packet to the client carries.
    seq: u8,
    /// Whether the running statement is not the batch's last.
    more: bool,
    deprecate_eof: bool,
    /// Follows the running statement's response, to find its status flags and its end.
    tracker: ResponseTracker,
    /// Whether the running statement's response ended in an ERR packet.
    failed: bool,
}

impl BatchOut {
    /// `seq`: the sequence id of the first response packet (the request's next).
    pub(crate) fn new(seq: u8, deprecate_eof: bool) -> Self {
        BatchOut {
            seq,
            more: false,
            deprecate_eof,
            tracker: ResponseTracker::new(Shape::ResultSets, deprecate_eof),
            failed: false,
        }
    }

    /// The next statement's response begins; `more` when another statement follows it.
    pub(crate) fn start_statement(&mut self, more: bool) {
        self.more = more;
        self.tracker = ResponseTracker::new(Shape::ResultSets, self.deprecate_eof);
        self.failed = false;
    }

    /// The sequence id and payload to send for `payload`: renumbered, and flagged when the
    /// packet carries status flags and another statement follows.
    pub(crate) fn shape<'a>(&mut self, payload: &'a [u8]) -> (u8, Cow<'a, [u8]>) {
        let step = self.tracker.feed(payload);
        if payload.first() == Some(&0xff) && matches!(step, Ok(Step::Done { .. })) {
            self.failed = true;
        }
        let at = match step {
            Ok(_) => self.tracker.status_offset(),
            // An answer the tracker cannot follow is sent as it is.
            Err(_) => None,
        };
        let flag = StatusFlags::SERVER_MORE_RESULTS_EXISTS.bits().to_le_bytes();
        let payload = match at {
            Some(at) if self.more && at + 1 < payload.len() => {
                let mut p = payload.to_vec();
                p[at] |= flag[0];
                p[at + 1] |= flag[1];
                Cow::Owned(p)
            }
            _ => Cow::Borrowed(payload),
        };
        (self.seq, payload)
    }

    /// The packet was written; `next` is the sequence id after it (a packet of 16 MiB or more
    /// takes several).
    pub(crate) fn advance(&mut self, next: u8) {
        self.seq = next;
    }

    /// Whether the running statement's response was an error (the batch stops).
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }
}

impl Session {
    /// Runs a batch of several statements (`ranges` of the query text) as one COM_QUERY.
    pub(super) async fn batch(&mut self, packet: Packet, pieces: Vec<Piece>) -> Result<(), End> {
        let sql = packet.payload.get(1..).unwrap_or_default().to_vec();
        let (fe, db) = (self.fe.clone(), self.db.clone());
        let ranges: Vec<Range<usize>> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Statement(r) => Some(r.clone()),
                Piece::Leftover(_) => None,
            })
            .collect();
        if let Some(e) = refuse_up_front(&fe, db.as_deref(), &sql, &ranges).await {
            return self.reply_error(&packet, &e).await;
        }
        self.client.batch = Some(BatchOut::new(packet.next_seq(), self.deprecate_eof()));
        let result = self.run_batch(&sql, &pieces).await;
        self.client.batch = None;
        result
    }

    async fn run_batch(&mut self, sql: &[u8], pieces: &[Piece]) -> Result<(), End> {
        let last = pieces.len().saturating_sub(1);
        for (i, piece) in pieces.iter().enumerate() {
            if let Some(b) = self.client.batch.as_mut() {
                b.start_statement(i < last);
            }
            let r = match piece {
                Piece::Statement(r) | Piece::Leftover(r) => r.clone(),
            };
            let mut payload = Vec::with_capacity(r.len() + 1);
            payload.push(cmd::QUERY);
            payload.extend_from_slice(&sql[r]);
            // A new command on the backend connection: sequence id 0. The client's ids are
            // continued by `BatchOut`.
            let request = Packet { seq: 0, payload };
            let ran = match piece {
                Piece::Statement(_) => self.query_one(request).await,
                // Runs nothing (see `Piece`): the backend answers it as MariaDB would, its 1064
                // for an empty statement included.
                Piece::Leftover(_) => self.relay(&request, Shape::ResultSets).await.map(drop),
            };
            match ran {
                Ok(()) => {}
                Err(End::BackendGone(why)) if self.shared.is_victim() => {
                    // Brute-force aborted: this statement gets 1213 and the batch stops there.
                    return self.recover_from_bf_abort(0, &why).await;
                }
                Err(end) => return Err(end),
            }
            if self.client.batch.as_ref().is_some_and(BatchOut::failed) {
                break;
            }
        }
        Ok(())
    }
}

/// The refusal of a whole batch before any of it runs: a construct refused whatever the
/// mode (permissive ignores table locks statement by statement instead), or a strict-mode
/// violation already known. Tables named after a `USE` or a DDL in the batch are judged when
/// their statement's turn comes (`query_one` checks every write again).
/// Takes no `Session`: the future must stay `Send`.
async fn refuse_up_front(
    fe: &super::Frontend,
    db: Option<&[u8]>,
    sql: &[u8],
    ranges: &[Range<usize>],
) -> Option<ClientError> {
    let permissive = fe.settings.strict_mode == StrictMode::Permissive;
    let mut writes: Vec<&[u8]> = Vec::new();
    let mut context_known = true;
    for r in ranges {
        let text = &sql[r.clone()];
        let st = statement::classify(text);
        match route(&st) {
            Route::Reject(what) => {
                let ignorable = permissive
                    && st
                        .rejection()
                        .and_then(strict::permissive_warning)
                        .is_some();
                if !ignorable {
                    return Some(ClientError::NotSupported(what));
                }
            }
            Route::Toi(_) => context_known = false,
            Route::Write if context_known => writes.push(text),
            _ => {}
        }
        if matches!(st, Statement::Use { .. }) {
            context_known = false;
        }
    }
    if writes.is_empty() {
        return None;
    }
    strict::strict_refusal(fe, db, &writes).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::response::ok_packet;

    const MORE: u16 = 0x0008;
    const AUTOCOMMIT: u16 = 0x0002;

    fn status_of_ok(p: &[u8]) -> u16 {
        // OK: header, affected rows (1 byte here), insert id (1 byte), status (2).
        u16::from_le_bytes([p[3], p[4]])
    }

    fn eof(status: u16) -> Vec<u8> {
        let s = status.to_le_bytes();
        vec![0xfe, 0, 0, s[0], s[1]]
    }

    fn err() -> Vec<u8> {
        let mut p = vec![0xff, 0x26, 0x04, b'#'];
        p.extend_from_slice(b"23000Duplicate entry");
        p
    }

    /// A text result set with one column and one row, EOF markers on.
    fn result_set(status: u16) -> Vec<Vec<u8>> {
        let mut col = vec![3];
        col.extend_from_slice(b"def");
        vec![vec![1], col, eof(status), vec![1, b'1'], eof(status)]
    }

    fn ok(status: u16) -> Vec<u8> {
        ok_packet(1, StatusFlags::from_bits_retain(status), 0)
    }

    #[test]
    fn results_but_the_last_get_more_results_and_ids_continue() {
        let mut b = BatchOut::new(1, false);
        let mut sent = Vec::new();
        // Statement 1: an OK; statement 2: a result set; statement 3 (last): an OK.
        for (i, packets) in [
            vec![ok(AUTOCOMMIT)],
            result_set(AUTOCOMMIT),
            vec![ok(AUTOCOMMIT)],
        ]
        .into_iter()
        .enumerate()
        {
            b.start_statement(i < 2);
            // Each statement's packets come numbered from the backend's 1, or the node's own.
            for (n, p) in packets.iter().enumerate() {
                let (seq, out) = b.shape(p);
                sent.push((seq, out.into_owned()));
                b.advance(seq.wrapping_add(1));
                assert!(n < 5);
            }
            assert!(!b.failed());
        }
        let seqs: Vec<u8> = sent.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=7).collect::<Vec<u8>>());
        assert_eq!(status_of_ok(&sent[0].1), AUTOCOMMIT | MORE);
        // Both EOF packets of the result set carry the flag, as MariaDB sends them.
        assert_eq!(sent[3].1, eof(AUTOCOMMIT | MORE));
        assert_eq!(sent[5].1, eof(AUTOCOMMIT | MORE));
        // Rows and definitions are untouched; the last result is not flagged.
        assert_eq!(sent[4].1, vec![1, b'1']);
        assert_eq!(status_of_ok(&sent[6].1), AUTOCOMMIT);
    }

    #[test]
    fn an_error_is_noticed_and_never_rewritten() {
        let mut b = BatchOut::new(1, true);
        b.start_statement(true);
        let e = err();
        let (seq, out) = b.shape(&e);
        assert_eq!((seq, out.as_ref()), (1, e.as_slice()));
        assert!(b.failed());
        b.start_statement(false);
        assert!(!b.failed());
    }

    #[test]
    fn deprecate_eof_result_sets_flag_their_ok_terminator_only() {
        let mut b = BatchOut::new(1, true);
        b.start_statement(true);
        let mut col = vec![3];
        col.extend_from_slice(b"def");
        // A row that starts with 0x00 is not an OK packet.
        let row = vec![0, 0, 0, 0, 0];
        let mut term = ok(AUTOCOMMIT);
        term[0] = 0xfe;
        let mut out = Vec::new();
        for p in [vec![1], col, row.clone(), term] {
            let (seq, o) = b.shape(&p);
            b.advance(seq + 1);
            out.push(o.into_owned());
        }
        assert_eq!(out[2], row);
        assert_eq!(status_of_ok(&out[3]), AUTOCOMMIT | MORE);
        assert!(!b.failed());
    }

    #[test]
    fn malformed_or_short_packets_pass_unchanged() {
        let mut b = BatchOut::new(0, false);
        b.start_statement(true);
        for p in [vec![0u8], vec![0xfe], vec![0, 1]] {
            let (_, out) = b.shape(&p);
            assert_eq!(out.as_ref(), p.as_slice());
        }
    }
}
