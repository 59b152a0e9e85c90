//! Cell values and their canonical encoding for key hashing.
//!
//! Owns the rule "two values MariaDB considers equal in an index produce the same bytes".
//! Must not decide which columns form a key (that is `rows`) nor how bytes are hashed (that
//! is `key`).
//!
//! ## Why the text folding is approximate, and in which direction
//!
//! A missed equality is a missed conflict: two nodes insert 'a' and 'A ' into a unique
//! `utf8mb4_general_ci` column, both commit, and every backend then fails to apply the second
//! one. An extra equality only aborts a transaction that did not need to abort. So the
//! canonical form over-approximates MariaDB's collations:
//!
//! * PAD SPACE collations (every MariaDB collation except `binary` and the `_nopad_` ones)
//!   ignore trailing spaces: trimmed.
//! * Non-binary collations (everything not `binary` or `_bin`, including the rare `_cs`
//!   ones) are folded: ASCII case, Latin letters with diacritics to their base letter
//!   (Latin-1 Supplement, Latin Extended-A and Latin Extended Additional; `æ`→`ae`,
//!   `ß`→`ss`, ...), runs of `s` collapsed to one (so `ß` matches both `s`, as in
//!   `general_ci`, and `ss`, as in `unicode_ci`), and every other non-ASCII character to one
//!   placeholder. All Cyrillic, Greek or CJK strings of the same length therefore collide,
//!   which is conservative.
//! * `_bin` collations keep their bytes (after the PAD SPACE trim); binary strings
//!   (`VARBINARY`, `BLOB`, `binary` collation) keep them exactly.
//! * Character sets whose bytes are not ASCII-compatible in a way we can decode (utf16,
//!   ucs2, utf32, sjis, gbk, big5, the EUC family, ...) fold every value to one constant: every
//!   key over such a column collides, i.e. such a unique key behaves like a table lock.
//!
//! What is still missed: a non-ASCII character outside the Latin tables that a collation
//! equates with an ASCII character (full-width forms, ligatures such as `ﬁ`, letters in
//! Latin Extended-B), and characters `unicode_ci` ignores entirely. The exact alternative is
//! MariaDB's own weight strings (`WEIGHT_STRING(v COLLATE c)`), which would need either a
//! reimplementation of every collation or a round trip to the backend per key; see
//! docs/certification.md.

/// The collation facts key canonicalisation needs, derived from a MariaDB collation name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collation {
    charset: Charset,
    binary_compare: bool,
    pad_space: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Charset {
    /// `binary`: bytes, no characters.
    Binary,
    Utf8,
    /// MariaDB's `latin1` is cp1252.
    Latin1,
    /// A single-byte character set whose bytes 0x00..0x7F are ASCII.
    SingleByteAscii,
    /// Anything we do not decode; see the module header.
    Opaque,
}

const SINGLE_BYTE_ASCII_CHARSETS: &[&str] = &[
    "ascii", "latin2", "latin5", "latin7", "cp1250", "cp1251", "cp1256", "cp1257", "cp850",
    "cp852", "cp866", "koi8r", "koi8u", "greek", "hebrew", "armscii8", "geostd8", "keybcs2",
    "macce", "macroman", "dec8", "hp8", "tis620",
];

impl Collation {
    /// The collation named as in `information_schema.COLLATIONS` (`utf8mb4_general_ci`,
    /// `latin1_bin`, `binary`, `utf8mb4_nopad_bin`, ...). Unknown names are classified by
    /// their character-set prefix, and an unknown prefix is treated as opaque.
    pub fn from_name(name: &str) -> Collation {
        let name = name.to_ascii_lowercase();
        if name == "binary" {
            return Collation {
                charset: Charset::Binary,
                binary_compare: true,
                pad_space: false,
            };
        }
        let prefix = name.split('_').next().unwrap_or("");
        let charset = match prefix {
            "utf8" | "utf8mb3" | "utf8mb4" => Charset::Utf8,
            "latin1" => Charset::Latin1,
            p if SINGLE_BYTE_ASCII_CHARSETS.contains(&p) => Charset::SingleByteAscii,
            _ => Charset::Opaque,
        };
        Collation {
            charset,
            binary_compare: name.ends_with("_bin"),
            pad_space: !name.contains("_nopad_"),
        }
    }
}

/// One column value of a row image, as the capture layer decodes it from a ROW event.
///
/// The representation must not depend on the column's declared type beyond what MariaDB's
/// comparison depends on: a parent `INT UNSIGNED` 5 and a child `INT` 5 are both `Int(5)`.
#[derive(Clone, Debug, PartialEq)]
pub enum CellValue {
    Null,
    /// Every integer type, signed or unsigned, and `ENUM` indexes / `BIT` values.
    Int(i128),
    /// `FLOAT` (widened exactly) and `DOUBLE`.
    Float(f64),
    /// `DECIMAL` as text (`-12.50`); leading and trailing zeros are canonicalised here.
    Decimal(String),
    /// Temporal types as text (`2024-01-31 12:00:00.250000`); trailing fractional zeros are
    /// canonicalised here.
    Temporal(String),
    /// `BINARY`, `VARBINARY`, `BLOB`: compared byte for byte, no padding.
    Bytes(Vec<u8>),
    /// `CHAR`, `VARCHAR`, `TEXT`: the raw bytes in the column's character set.
    Text {
        bytes: Vec<u8>,
        collation: Collation,
    },
}

impl CellValue {
    pub fn is_null(&self) -> bool {
        matches!(self, CellValue::Null)
    }

    /// The type tag and canonical bytes of this value. `prefix` is an index prefix length
    /// (characters for text, bytes for binary strings), as in `UNIQUE (name(10))`.
    pub(crate) fn canonical(&self, prefix: Option<u32>) -> (u8, Vec<u8>) {
        match self {
            CellValue::Null => (0, Vec::new()),
            CellValue::Int(v) => (1, v.to_be_bytes().to_vec()),
            CellValue::Float(v) => {
                // -0.0 == 0.0 in MariaDB; NaN cannot be stored.
                let v = if *v == 0.0 { 0.0f64 } else { *v };
                (2, v.to_bits().to_be_bytes().to_vec())
            }
            CellValue::Decimal(text) => (3, canonical_decimal(text).into_bytes()),
            CellValue::Temporal(text) => (4, canonical_temporal(text).into_bytes()),
            CellValue::Bytes(bytes) => (5, take_prefix(bytes, prefix).to_vec()),
            CellValue::Text { bytes, collation } => (6, canonical_text(bytes, collation, prefix)),
        }
    }
}

fn take_prefix(bytes: &[u8], prefix: Option<u32>) -> &[u8] {
    match prefix {
        Some(n) => &bytes[..bytes.len().min(n as usize)],
        None => bytes,
    }
}

/// `007.50` -> `7.5`, `-0.00` -> `0`. Text that is not a plain decimal is kept as it is: the
/// capture layer renders every DECIMAL the same way, so it still compares consistently.
fn canonical_decimal(text: &str) -> String {
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !is_digits(int_part)
        || !is_digits(frac_part)
        || (int_part.is_empty() && frac_part.is_empty())
    {
        return text.to_owned();
    }
    let int_part = int_part.trim_start_matches('0');
    let frac_part = frac_part.trim_end_matches('0');
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    let zero = int_part == "0" && frac_part.is_empty();
    let mut out = String::with_capacity(t.len());
    if negative && !zero {
        out.push('-');
    }
    out.push_str(int_part);
    if !frac_part.is_empty() {
        out.push('.');
        out.push_str(frac_part);
    }
    out
}

/// `12:00:00.500000` -> `12:00:00.5`, `2024-01-01 00:00:00.000` -> `2024-01-01 00:00:00`.
fn canonical_temporal(text: &str) -> String {
    let t = text.trim();
    match t.split_once('.') {
        Some((whole, frac)) if frac.bytes().all(|b| b.is_ascii_digit()) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                whole.to_owned()
            } else {
                format!("{whole}.{frac}")
            }
        }
        _ => t.to_owned(),
    }
}

/// Stands in for every character the folding tables do not map to ASCII.
const PLACEHOLDER: char = '\u{FFFD}';

fn canonical_text(bytes: &[u8], collation: &Collation, prefix: Option<u32>) -> Vec<u8> {
    let chars: Vec<char> = match collation.charset {
        Charset::Binary => return take_prefix(bytes, prefix).to_vec(),
        Charset::Opaque => return Vec::new(),
        Charset::Utf8 => String::from_utf8_lossy(bytes).chars().collect(),
        Charset::Latin1 => bytes.iter().map(|&b| cp1252_char(b)).collect(),
        Charset::SingleByteAscii => bytes
            .iter()
            .map(|&b| if b.is_ascii() { b as char } else { PLACEHOLDER })
            .collect(),
    };
    let mut chars = match prefix {
        Some(n) => &chars[..chars.len().min(n as usize)],
        None => &chars[..],
    };
    if collation.pad_space {
        while let Some((' ', rest)) = chars.split_last() {
            chars = rest;
        }
    }
    if collation.binary_compare {
        return match collation.charset {
            // Single-byte: one byte per character, so the kept characters are a byte prefix.
            Charset::Latin1 | Charset::SingleByteAscii => {
                bytes[..chars.len().min(bytes.len())].to_vec()
            }
            // Valid UTF-8 re-encodes to the same bytes; invalid sequences all became U+FFFD,
            // which can only merge values (an extra abort), never split equal ones.
            _ => chars.iter().collect::<String>().into_bytes(),
        };
    }
    let mut folded = String::with_capacity(chars.len());
    for &c in chars {
        fold_char(c, &mut folded);
    }
    collapse_s_runs(&folded).into_bytes()
}

fn collapse_s_runs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut previous_s = false;
    for c in s.chars() {
        if c == 's' && previous_s {
            continue;
        }
        previous_s = c == 's';
        out.push(c);
    }
    out
}

/// MariaDB's latin1 is Windows-1252; only the letters the folding tables know matter.
fn cp1252_char(b: u8) -> char {
    match b {
        0x00..=0x7f | 0xa0..=0xff => char::from(b),
        0x8a => 'Š',
        0x8c => 'Œ',
        0x8e => 'Ž',
        0x9a => 'š',
        0x9c => 'œ',
        0x9e => 'ž',
        0x9f => 'Ÿ',
        _ => PLACEHOLDER,
    }
}

/// Base letters of U+00C0..=U+024F, one per code point, `*` where the decomposition has no
/// single ASCII base letter (generated from Unicode NFKD with combining marks removed).
const LATIN_C0_24F: &str = "aaaaaa*ceeeeiiii*nooooo**uuuuy**aaaaaa*ceeeeiiii*nooooo**uuuuy*yaaaaaaccccccccdd**eeeeeeeeeegggggggghh**iiiiiiiii***jjkk*llllll****nnnnnn***oooooo**rrrrrrsssssssstttt**uuuuuuuuuuuuwwyyyzzzzzzs********************************oo*************uu****************************aaiioouuuuuuuuuu*aaaa****ggkkoooo**j***gg**nnaa****aaaaeeeeiiiioooorrrruuuusstt**hh******aaeeooooooooyy****************************";

/// The same for U+1E00..=U+1EFF (Latin Extended Additional, which Vietnamese uses).
const LATIN_1E00_1EFF: &str = "aabbbbbbccddddddddddeeeeeeeeeeffgghhhhhhhhhhiiiikkkkkkllllllllmmmmmmnnnnnnnnoooooooopppprrrrrrrrssssssssssttttttttuuuuuuuuuuvvvvwwwwwwwwwwxxxxyyzzzzzzhtwy*s****aaaaaaaaaaaaaaaaaaaaaaaaeeeeeeeeeeeeeeeeiiiioooooooooooooooooooooooouuuuuuuuuuuuuuyyyyyyyy******";

fn table_lookup(table: &str, start: u32, c: char) -> Option<char> {
    let offset = (c as u32).checked_sub(start)?;
    let base = *table.as_bytes().get(offset as usize)?;
    (base != b'*').then_some(base as char)
}

fn fold_char(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    let expansion = match c {
        'Æ' | 'æ' => Some("ae"),
        'Œ' | 'œ' => Some("oe"),
        'ß' | 'ẞ' => Some("ss"),
        'Þ' | 'þ' => Some("th"),
        'Ĳ' | 'ĳ' => Some("ij"),
        'Ð' | 'ð' | 'Đ' | 'đ' => Some("d"),
        'Ø' | 'ø' => Some("o"),
        'Ħ' | 'ħ' => Some("h"),
        'ı' => Some("i"),
        'ĸ' => Some("k"),
        'Ŀ' | 'ŀ' | 'Ł' | 'ł' => Some("l"),
        'ŉ' | 'Ŋ' | 'ŋ' => Some("n"),
        'Ŧ' | 'ŧ' => Some("t"),
        _ => None,
    };
    if let Some(e) = expansion {
        out.push_str(e);
        return;
    }
    let base =
        table_lookup(LATIN_C0_24F, 0xC0, c).or_else(|| table_lookup(LATIN_1E00_1EFF, 0x1E00, c));
    out.push(base.unwrap_or(PLACEHOLDER));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str, collation: &str) -> CellValue {
        CellValue::Text {
            bytes: s.as_bytes().to_vec(),
            collation: Collation::from_name(collation),
        }
    }

    fn canon(v: &CellValue) -> (u8, Vec<u8>) {
        v.canonical(None)
    }

    #[test]
    fn latin_tables_cover_their_ranges() {
        assert_eq!(LATIN_C0_24F.len(), 0x24F - 0xC0 + 1);
        assert_eq!(LATIN_1E00_1EFF.len(), 0x100);
    }

    #[test]
    fn general_ci_equal_values_share_a_canonical_form() {
        let c = "utf8mb4_general_ci";
        for (a, b) in [
            ("a", "A "),
            ("Hello", "hELLO   "),
            ("café", "CAFE"),
            ("Ærø", "aero"),
            ("straße", "STRASSE"),
            ("straße", "strase"),
            ("Tiếng Việt", "tieng viet"),
            ("Łódź", "lodz"),
        ] {
            assert_eq!(canon(&text(a, c)), canon(&text(b, c)), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn general_ci_different_values_stay_different() {
        let c = "utf8mb4_general_ci";
        for (a, b) in [("a", "b"), ("a", " a"), ("ab", "a b"), ("alice", "alicia")] {
            assert_ne!(canon(&text(a, c)), canon(&text(b, c)), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn non_latin_letters_collide_conservatively() {
        let c = "utf8mb4_unicode_ci";
        assert_eq!(canon(&text("Привет", c)), canon(&text("привет", c)));
        // Same length, different words: colliding is the documented over-approximation.
        assert_eq!(canon(&text("Привет", c)), canon(&text("Солнце", c)));
        assert_ne!(canon(&text("Привет", c)), canon(&text("Пока", c)));
    }

    #[test]
    fn bin_collation_keeps_case_but_trims_pad_space() {
        let c = "utf8mb4_bin";
        assert_ne!(canon(&text("a", c)), canon(&text("A", c)));
        assert_eq!(canon(&text("a", c)), canon(&text("a  ", c)));
        let nopad = "utf8mb4_nopad_bin";
        assert_ne!(canon(&text("a", nopad)), canon(&text("a ", nopad)));
    }

    #[test]
    fn binary_strings_keep_every_byte() {
        let a = CellValue::Bytes(b"a".to_vec());
        let b = CellValue::Bytes(b"a ".to_vec());
        assert_ne!(canon(&a), canon(&b));
        assert_ne!(canon(&text("a", "binary")), canon(&text("a ", "binary")));
    }

    #[test]
    fn latin1_is_decoded_as_cp1252() {
        let c = Collation::from_name("latin1_swedish_ci");
        let upper = CellValue::Text {
            bytes: vec![0x8a, b'A'],
            collation: c,
        }; // "ŠA"
        let lower = CellValue::Text {
            bytes: vec![b's', b'a'],
            collation: c,
        };
        assert_eq!(canon(&upper), canon(&lower));
    }

    #[test]
    fn opaque_charsets_fold_to_one_constant() {
        let c = "utf16_general_ci";
        assert_eq!(
            canon(&text("x", c)),
            canon(&text("completely different", c))
        );
    }

    #[test]
    fn prefix_index_compares_only_the_prefix() {
        let c = "utf8mb4_general_ci";
        let a = text("éabcdef", c).canonical(Some(3));
        let b = text("Eabxyz", c).canonical(Some(3));
        assert_eq!(a, b);
        let bytes_a = CellValue::Bytes(b"abcX".to_vec()).canonical(Some(3));
        let bytes_b = CellValue::Bytes(b"abcY".to_vec()).canonical(Some(3));
        assert_eq!(bytes_a, bytes_b);
    }

    #[test]
    fn numbers_canonicalise() {
        assert_eq!(
            canon(&CellValue::Float(-0.0)),
            canon(&CellValue::Float(0.0))
        );
        for (a, b) in [
            ("007.50", "7.5"),
            ("-0.00", "0"),
            ("+1", "1.000"),
            ("0.10", ".1"),
        ] {
            assert_eq!(
                canon(&CellValue::Decimal(a.into())),
                canon(&CellValue::Decimal(b.into())),
                "{a} vs {b}"
            );
        }
        assert_ne!(
            canon(&CellValue::Decimal("-1".into())),
            canon(&CellValue::Decimal("1".into()))
        );
        assert_eq!(
            canon(&CellValue::Temporal("2024-01-01 00:00:00.000".into())),
            canon(&CellValue::Temporal("2024-01-01 00:00:00".into()))
        );
        assert_ne!(canon(&CellValue::Int(1)), canon(&CellValue::Int(-1)));
    }
}
