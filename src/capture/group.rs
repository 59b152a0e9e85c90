//! The group assembler: turns the event sequence of one binlog dump connection into captured XA
//! groups. It owns the per-connection parsing state (the open group and its table maps) and
//! decides which groups are captured, skipped quietly (applier domain, XA COMMIT/ROLLBACK) or
//! skipped with a warning (writes that bypassed certus). It does no I/O and knows nothing about
//! waiters or reconnects.

use super::event::{self, kind, GtidEvent, Header, XaXid};
use super::{
    CaptureError, CapturedGroup, CapturedStatement, ColumnValue, Gtid, RowChange, RowKind,
};
use mysql_common::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_common::binlog::row::BinlogRow;
use mysql_common::binlog::value::BinlogValue;
use std::collections::HashMap;
use tracing::{debug, warn};

/// What the assembler reports for one input event.
#[derive(Debug)]
pub(crate) enum Output {
    Nothing,
    /// The source's Format_description event, re-encoded for replay (checksum OFF).
    FormatDescription(Vec<u8>),
    /// A group has ended: the resume position may advance to it.
    GroupEnded(Gtid, Fate),
    /// A prepared XA group: its statements, or why they could not be captured. Always followed
    /// by `GroupEnded` for the same GTID in the same call.
    Captured(Gtid, Result<CapturedGroup, CaptureError>),
}

/// What became of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    Captured,
    /// In the applier's domain: replayed by certus itself.
    Applied,
    /// The XA COMMIT/ROLLBACK group that ends a session's XA.
    XaCompletion,
    /// Any other group: a write that bypassed certus.
    Bypassed,
}

enum Mode {
    /// Captured: an XA PREPARE group outside the applier's domain.
    Capture(Box<Pending>),
    /// Skipped, but still tracked to its end so that the resume position stays exact.
    Skip(Fate),
}

struct Open {
    gtid: GtidEvent,
    mode: Mode,
}

#[derive(Default)]
struct Pending {
    statements: Vec<CapturedStatement>,
    current: CapturedStatement,
    tables: HashMap<u64, TableMapEvent<'static>>,
    /// The first failure; the rest of the group is then only scanned for its end.
    error: Option<CaptureError>,
}

pub(crate) struct Assembler {
    applier_domain: u32,
    open: Option<Open>,
}

impl Assembler {
    pub(crate) fn new(applier_domain: u32) -> Assembler {
        Assembler {
            applier_domain,
            open: None,
        }
    }

    /// Feeds one event; returns what it completed (at most a captured group and its end).
    pub(crate) fn push(&mut self, ev: &Event) -> Vec<Output> {
        let h = ev.header();
        let t = h.event_type_raw();
        let header = Header {
            timestamp: h.timestamp(),
            event_type: t,
            server_id: h.server_id(),
            log_pos: h.log_pos(),
            flags: h.flags_raw(),
        };
        match t {
            kind::FORMAT_DESCRIPTION => {
                if self.open.take().is_some() {
                    warn!("binlog group cut off by a Format_description event; dropped");
                }
                return match event::format_description_without_checksum(header, ev.data()) {
                    Ok(fd) => vec![Output::FormatDescription(fd)],
                    Err(e) => {
                        warn!(error = %e, "cannot re-encode the Format_description event");
                        vec![Output::Nothing]
                    }
                };
            }
            kind::MARIADB_GTID => return self.start_group(h.server_id(), ev.data()),
            _ => {}
        }
        let Some(open) = self.open.as_mut() else {
            return vec![Output::Nothing];
        };
        if let Mode::Capture(p) = &mut open.mode {
            if p.error.is_none() {
                if let Err(e) = p.absorb(ev, header) {
                    p.error = Some(e);
                }
            }
        }
        if !ends_group(&open.gtid, ev) {
            return vec![Output::Nothing];
        }
        let Some(open) = self.open.take() else {
            return vec![Output::Nothing];
        };
        let gtid = open.gtid.gtid;
        match open.mode {
            Mode::Skip(fate) => vec![Output::GroupEnded(gtid, fate)],
            Mode::Capture(p) => {
                let result = p.finish(&open.gtid, ev);
                vec![
                    Output::Captured(gtid, result),
                    Output::GroupEnded(gtid, Fate::Captured),
                ]
            }
        }
    }

    fn start_group(&mut self, server_id: u32, payload: &[u8]) -> Vec<Output> {
        if let Some(open) = self.open.take() {
            warn!(gtid = %open.gtid.gtid, "binlog group without an end event; dropped");
        }
        let g = match event::decode_gtid(server_id, payload) {
            Ok(g) => g,
            Err(e) => {
                // Without a GTID there is nothing a waiter could be matched with; the group's
                // events are ignored until the next GTID event.
                warn!(error = %e, "undecodable GTID event; group ignored");
                return vec![Output::Nothing];
            }
        };
        let mode = if g.gtid.domain == self.applier_domain {
            debug!(gtid = %g.gtid, "applied transaction (applier domain): skipped");
            Mode::Skip(Fate::Applied)
        } else if g.is_prepared_xa() {
            Mode::Capture(Box::default())
        } else if g.is_completed_xa() {
            // The XA COMMIT/ROLLBACK that ends a session's XA (normally our own rollback).
            Mode::Skip(Fate::XaCompletion)
        } else {
            warn!(gtid = %g.gtid, "binlog group written outside certus (not an XA PREPARE): not replicated");
            Mode::Skip(Fate::Bypassed)
        };
        self.open = Some(Open { gtid: g, mode });
        vec![Output::Nothing]
    }
}

/// A group ends at its XID or XA_PREPARE event, at a COMMIT/ROLLBACK query, or after the one
/// query of a standalone group (DDL, XA COMMIT/ROLLBACK).
fn ends_group(g: &GtidEvent, ev: &Event) -> bool {
    match ev.header().event_type_raw() {
        kind::XID | kind::XA_PREPARE => true,
        kind::QUERY => {
            if g.is_standalone() {
                return true;
            }
            match ev.read_data() {
                Ok(Some(EventData::QueryEvent(q))) => {
                    let text = q.query_raw().trim_ascii();
                    text.eq_ignore_ascii_case(b"COMMIT") || text.eq_ignore_ascii_case(b"ROLLBACK")
                }
                _ => false,
            }
        }
        _ => false,
    }
}

impl Pending {
    fn absorb(&mut self, ev: &Event, header: Header) -> Result<(), CaptureError> {
        let t = header.event_type;
        if (kind::MARIADB_COMPRESSED_FIRST..=kind::MARIADB_COMPRESSED_LAST).contains(&t) {
            return Err(CaptureError::Unsupported(format!(
                "compressed rows event 0x{t:02x} (log_bin_compress must be OFF)"
            )));
        }
        if t == kind::TABLE_MAP {
            let tme = match ev.read_data() {
                Ok(Some(EventData::TableMapEvent(tme))) => tme.into_owned(),
                other => return Err(malformed("Table_map", other.err())),
            };
            self.tables.insert(tme.table_id(), tme);
            return event::encode_without_checksum(header, ev.data(), &mut self.current.events);
        }
        if !kind::is_rows(t) {
            // Annotate_rows, the `XA END` query and the like carry nothing to replay.
            return Ok(());
        }
        let flags = event::rows_event_flags(ev.data())?;
        event::encode_without_checksum(header, ev.data(), &mut self.current.events)?;
        let rows = match ev.read_data() {
            Ok(Some(EventData::RowsEvent(r))) => r,
            other => return Err(malformed("rows", other.err())),
        };
        self.decode_rows(&rows)?;
        if flags & event::STMT_END_F != 0 {
            self.statements.push(std::mem::take(&mut self.current));
        }
        Ok(())
    }

    fn decode_rows(&mut self, rows: &RowsEventData<'_>) -> Result<(), CaptureError> {
        let table_id = rows.table_id();
        let tme = self.tables.get(&table_id).ok_or_else(|| {
            CaptureError::Malformed(format!(
                "rows event for table id {table_id} without a Table_map"
            ))
        })?;
        let kind = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
                RowKind::Insert
            }
            RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => {
                RowKind::Update
            }
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                RowKind::Delete
            }
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(CaptureError::Unsupported(
                    "partial JSON update rows event".into(),
                ))
            }
        };
        let schema = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        for row in rows.rows(tme) {
            let (before, after) =
                row.map_err(|e| CaptureError::Malformed(format!("row image: {e}")))?;
            self.current.rows.push(RowChange {
                schema: schema.clone(),
                table: table.clone(),
                kind,
                before: before.map(image).transpose()?,
                after: after.map(image).transpose()?,
            });
        }
        Ok(())
    }

    fn finish(mut self, g: &GtidEvent, end: &Event) -> Result<CapturedGroup, CaptureError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let xid = match g.xid.clone() {
            Some(x) => x,
            None => {
                return Err(CaptureError::Malformed(format!(
                    "XA group {} without an xid",
                    g.gtid
                )))
            }
        };
        if end.header().event_type_raw() != kind::XA_PREPARE {
            return Err(CaptureError::Malformed(format!(
                "XA group {} ended by event 0x{:02x}, not XA_PREPARE",
                g.gtid,
                end.header().event_type_raw()
            )));
        }
        let prepared = event::decode_xa_prepare(end.data())?;
        if prepared.xid != xid {
            return Err(CaptureError::Malformed(format!(
                "XA group {}: XA_PREPARE xid {} differs from the GTID event's {}",
                g.gtid,
                show_xid(&prepared.xid),
                show_xid(&xid)
            )));
        }
        if !self.current.events.is_empty() {
            // Table maps with no rows event after them replay nothing: dropped.
            debug!(gtid = %g.gtid, "trailing Table_map events without a statement end dropped");
        }
        Ok(CapturedGroup {
            gtid: g.gtid,
            xid,
            statements: self.statements,
        })
    }
}

fn show_xid(x: &XaXid) -> String {
    format!(
        "({}, {:?}, {:?})",
        x.format_id,
        String::from_utf8_lossy(&x.gtrid),
        String::from_utf8_lossy(&x.bqual)
    )
}

fn malformed(what: &str, err: Option<std::io::Error>) -> CaptureError {
    match err {
        Some(e) => CaptureError::Malformed(format!("{what} event: {e}")),
        None => CaptureError::Malformed(format!("{what} event: unexpected event data")),
    }
}

fn image(row: BinlogRow) -> Result<Vec<ColumnValue>, CaptureError> {
    let columns = row.columns();
    let mut row = row;
    columns
        .iter()
        .enumerate()
        .map(|(i, col)| {
            let value = match row.take(i) {
                Some(BinlogValue::Value(v)) => v,
                None => {
                    return Err(CaptureError::Malformed(format!(
                        "row image lacks column {i}"
                    )))
                }
                // MariaDB stores JSON as LONGTEXT; a binary JSON value means a MySQL source.
                Some(BinlogValue::Jsonb(_) | BinlogValue::JsonDiff(_)) => {
                    return Err(CaptureError::Unsupported("MySQL binary JSON value".into()))
                }
            };
            Ok(ColumnValue {
                name: col.name_str().into_owned(),
                value,
            })
        })
        .collect()
}
