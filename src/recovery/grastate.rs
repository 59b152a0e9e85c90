//! `grastate.dat`, in Galera's exact format (RESEARCH §5.1), so that operators and tools
//! that read or edit it (recovery runbooks, pacemaker agents, `safe_to_bootstrap: 1`) work
//! unchanged.
//!
//! Owns parsing, rendering and the atomic, fsynced write of the file. Must not decide when
//! the node is safe to bootstrap or which seqno to record: callers pass the state in.
//! Galera's "undefined seqno" `-1` exists here and nowhere else: it is `None` in Rust.
//!
//! Galera rewrites the file in place and pads a shorter state with spaces over the old
//! bytes, so real files may end with a run of spaces; the parser ignores blank and
//! whitespace-only lines. certus writes a fresh file and renames it, so it never pads.

use crate::ids::Seqno;
use std::fs;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The file name inside a node's data dir.
pub const GRASTATE_FILE: &str = "grastate.dat";

const HEADER: &str = "# GALERA saved state";
const VERSION: &str = "2.1";

/// The saved state of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grastate {
    /// The cluster state UUID (kept while the node runs and after a crash, as Galera 4 does).
    pub uuid: Uuid,
    /// The applied seqno after a clean shutdown; `None` (written `-1`) while running.
    pub seqno: Option<Seqno>,
    pub safe_to_bootstrap: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GrastateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("grastate.dat is not UTF-8 text")]
    NotText,
    #[error("grastate.dat line {line}: {reason}: {text:?}")]
    Line {
        line: usize,
        text: String,
        reason: &'static str,
    },
    #[error("grastate.dat has no {0:?} line")]
    Missing(&'static str),
}

impl Grastate {
    /// Parses Galera's layout, tolerant of spacing (`seqno:   5`, `seqno: 5`, trailing
    /// padding) and comment lines, strict about everything else: each of `version`, `uuid`,
    /// `seqno` and `safe_to_bootstrap` exactly once, valid values, no unknown lines.
    pub fn parse(text: &str) -> Result<Grastate, GrastateError> {
        let mut version = None;
        let mut uuid = None;
        let mut seqno = None;
        let mut safe = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let bad = |reason| GrastateError::Line {
                line,
                text: raw.to_owned(),
                reason,
            };
            let (field, value) = trimmed
                .split_once(':')
                .ok_or_else(|| bad("not a `field: value` line"))?;
            let value = value.trim();
            let slot_is_free = |taken: bool| {
                if taken {
                    Err(bad("field appears twice"))
                } else {
                    Ok(())
                }
            };
            match field.trim() {
                "version" => {
                    slot_is_free(version.is_some())?;
                    if value != VERSION {
                        return Err(bad("unsupported version (expected 2.1)"));
                    }
                    version = Some(());
                }
                "uuid" => {
                    slot_is_free(uuid.is_some())?;
                    // Only Galera's hyphenated form; uuid also accepts braces, URNs and
                    // hex without hyphens, none of which Galera writes.
                    if value.len() != 36 {
                        return Err(bad("invalid uuid"));
                    }
                    uuid = Some(Uuid::try_parse(value).map_err(|_| bad("invalid uuid"))?);
                }
                "seqno" => {
                    slot_is_free(seqno.is_some())?;
                    let n: i64 = value.parse().map_err(|_| bad("invalid seqno"))?;
                    seqno = Some(match n {
                        -1 => None,
                        n => Some(Seqno(
                            u64::try_from(n).map_err(|_| bad("negative seqno other than -1"))?,
                        )),
                    });
                }
                "safe_to_bootstrap" => {
                    slot_is_free(safe.is_some())?;
                    safe = Some(match value {
                        "0" => false,
                        "1" => true,
                        _ => return Err(bad("safe_to_bootstrap must be 0 or 1")),
                    });
                }
                _ => return Err(bad("unknown field")),
            }
        }
        version.ok_or(GrastateError::Missing("version"))?;
        Ok(Grastate {
            uuid: uuid.ok_or(GrastateError::Missing("uuid"))?,
            seqno: seqno.ok_or(GrastateError::Missing("seqno"))?,
            safe_to_bootstrap: safe.ok_or(GrastateError::Missing("safe_to_bootstrap"))?,
        })
    }

    /// Galera's layout byte for byte (`SavedState::write_and_flush`, without the padding).
    pub fn render(&self) -> String {
        let seqno = match self.seqno {
            Some(s) => s.0.to_string(),
            None => "-1".to_owned(),
        };
        format!(
            "{HEADER}\nversion: {VERSION}\nuuid:    {}\nseqno:   {seqno}\nsafe_to_bootstrap: {}\n",
            self.uuid.hyphenated(),
            u8::from(self.safe_to_bootstrap)
        )
    }

    pub fn read(path: &Path) -> Result<Grastate, GrastateError> {
        let bytes = fs::read(path).map_err(|source| GrastateError::Io {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| GrastateError::NotText)?;
        Grastate::parse(&text)
    }

    /// Replaces the file at `path` so that a crash leaves either the old or the new state,
    /// never a torn one: write a temporary file in the same directory, fsync it, rename it
    /// over `path`, fsync the directory so that the rename itself is durable.
    pub fn write_atomic(&self, path: &Path) -> Result<(), GrastateError> {
        super::write_file_atomic(path, self.render().as_bytes()).map_err(|source| {
            GrastateError::Io {
                path: path.to_owned(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "563a463c-e551-11f1-a34c-5b234986853f";

    /// Verbatim from anchors/galera/RESULTS.md §3 (a) and (c): running, or after kill -9.
    const RUNNING: &str = "# GALERA saved state
version: 2.1
uuid:    563a463c-e551-11f1-a34c-5b234986853f
seqno:   -1
safe_to_bootstrap: 0
";

    /// RESULTS.md §3 (b), n1 after a clean shutdown (last to leave).
    const CLEAN_N1: &str = "# GALERA saved state
version: 2.1
uuid:    563a463c-e551-11f1-a34c-5b234986853f
seqno:   208433
safe_to_bootstrap: 1
";

    #[test]
    fn parses_the_verbatim_galera_files() {
        let running = Grastate::parse(RUNNING).unwrap();
        assert_eq!(
            running,
            Grastate {
                uuid: Uuid::parse_str(CLUSTER).unwrap(),
                seqno: None,
                safe_to_bootstrap: false,
            }
        );
        let clean = Grastate::parse(CLEAN_N1).unwrap();
        assert_eq!(clean.seqno, Some(Seqno(208433)));
        assert!(clean.safe_to_bootstrap);
    }

    #[test]
    fn renders_byte_identical_to_galera() {
        assert_eq!(Grastate::parse(RUNNING).unwrap().render(), RUNNING);
        assert_eq!(Grastate::parse(CLEAN_N1).unwrap().render(), CLEAN_N1);
    }

    #[test]
    fn round_trips() {
        for (seqno, safe) in [
            (None, false),
            (Some(Seqno(0)), true),
            (Some(Seqno(i64::MAX as u64)), false),
        ] {
            let state = Grastate {
                uuid: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
                seqno,
                safe_to_bootstrap: safe,
            };
            assert_eq!(Grastate::parse(&state.render()).unwrap(), state);
        }
    }

    #[test]
    fn tolerates_galera_padding_and_spacing() {
        // Galera overwrote a longer seqno with "-1" and padded the old tail with spaces.
        let padded = format!("{RUNNING}    ");
        assert_eq!(
            Grastate::parse(&padded).unwrap(),
            Grastate::parse(RUNNING).unwrap()
        );
        let loose = "# GALERA saved state\nversion:2.1\n  uuid: 563a463c-e551-11f1-a34c-5b234986853f  \nseqno:\t5\nsafe_to_bootstrap:   1";
        let state = Grastate::parse(loose).unwrap();
        assert_eq!(state.seqno, Some(Seqno(5)));
        assert!(state.safe_to_bootstrap);
    }

    fn line_error(text: &str) -> (usize, &'static str) {
        match Grastate::parse(text) {
            Err(GrastateError::Line { line, reason, .. }) => (line, reason),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn corruption_is_an_error_that_names_the_line() {
        assert_eq!(
            line_error(&RUNNING.replace("563a463c-e551", "563a463c-x551")),
            (3, "invalid uuid")
        );
        assert_eq!(
            line_error(&RUNNING.replace("563a463c-", "563a463c")),
            (3, "invalid uuid")
        );
        assert_eq!(
            line_error(&RUNNING.replace("seqno:   -1", "seqno:   12a")),
            (4, "invalid seqno")
        );
        assert_eq!(
            line_error(&RUNNING.replace("seqno:   -1", "seqno:   -2")),
            (4, "negative seqno other than -1")
        );
        assert_eq!(
            line_error(&RUNNING.replace("seqno:   -1", "seqno:   ")),
            (4, "invalid seqno")
        );
        assert_eq!(
            line_error(&RUNNING.replace("safe_to_bootstrap: 0", "safe_to_bootstrap: yes")),
            (5, "safe_to_bootstrap must be 0 or 1")
        );
        assert_eq!(
            line_error(&RUNNING.replace("version: 2.1", "version: 3.0")),
            (2, "unsupported version (expected 2.1)")
        );
        assert_eq!(
            line_error(&format!("{RUNNING}seqno: 5\n")),
            (6, "field appears twice")
        );
        assert_eq!(
            line_error(&format!("{RUNNING}color: blue\n")),
            (6, "unknown field")
        );
        assert_eq!(
            line_error("\u{1}\u{2}garbage\u{7f}\n"),
            (1, "not a `field: value` line")
        );
    }

    #[test]
    fn missing_fields_are_named() {
        for field in ["version", "uuid", "seqno", "safe_to_bootstrap"] {
            let text: String = RUNNING
                .lines()
                .filter(|l| !l.starts_with(&format!("{field}:")))
                .map(|l| format!("{l}\n"))
                .collect();
            match Grastate::parse(&text) {
                Err(GrastateError::Missing(f)) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_and_truncated_files_are_errors() {
        assert!(matches!(
            Grastate::parse(""),
            Err(GrastateError::Missing("version"))
        ));
        assert!(matches!(
            Grastate::parse("   \n\n"),
            Err(GrastateError::Missing("version"))
        ));
        // Every strict prefix of a file that ends before the last value is complete fails.
        let complete_at = RUNNING.len() - 1; // without the final newline it is still complete
        for len in 0..complete_at {
            assert!(
                Grastate::parse(&RUNNING[..len]).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GRASTATE_FILE);
        let running = Grastate::parse(RUNNING).unwrap();
        running.write_atomic(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), RUNNING);
        let clean = Grastate::parse(CLEAN_N1).unwrap();
        clean.write_atomic(&path).unwrap();
        assert_eq!(Grastate::read(&path).unwrap(), clean);
        assert_eq!(fs::read_to_string(&path).unwrap(), CLEAN_N1);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![GRASTATE_FILE.to_owned()]);
    }

    #[test]
    fn read_reports_missing_file_and_non_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GRASTATE_FILE);
        assert!(matches!(
            Grastate::read(&path),
            Err(GrastateError::Io { .. })
        ));
        fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(Grastate::read(&path), Err(GrastateError::NotText)));
    }
}
