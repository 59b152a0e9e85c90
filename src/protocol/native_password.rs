//! mysql_native_password arithmetic. The account table stores `stage2 = SHA1(SHA1(password))`;
//! a client proves knowledge of the password with `token = SHA1(password) XOR SHA1(scramble ||
//! stage2)`. From a valid token the node recovers `stage1 = SHA1(password)`, which is enough to
//! log in to the backend as the same account with the backend's own scramble: the password itself
//! is never seen. `stage1` is held in memory only, for reconnects, and is never logged.

use sha1::{Digest, Sha1};

/// SHA1(password): what the node keeps to open backend connections for a session.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Stage1(pub(crate) [u8; 20]);

impl std::fmt::Debug for Stage1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stage1(<redacted>)")
    }
}

fn sha1_concat(a: &[u8], b: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(a);
    h.update(b);
    h.finalize().into()
}

fn xor(a: [u8; 20], b: [u8; 20]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for i in 0..20 {
        out[i] = a[i] ^ b[i];
    }
    out
}

/// Parses the account table's `*<40 hex>` form into stage2. Returns None for anything else
/// (an empty string means "no password" and is handled by the caller).
pub(crate) fn parse_stage2(authentication_string: &str) -> Option<[u8; 20]> {
    let hex = authentication_string.strip_prefix('*')?;
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Verifies a client's token against stage2 and returns stage1 when it matches.
pub(crate) fn verify(scramble: &[u8], token: &[u8], stage2: &[u8; 20]) -> Option<Stage1> {
    let token: [u8; 20] = token.try_into().ok()?;
    let stage1 = xor(token, sha1_concat(scramble, stage2));
    let check: [u8; 20] = Sha1::digest(stage1).into();
    // Compare in constant time: the scramble is public, the stored hash is not.
    let diff = check
        .iter()
        .zip(stage2.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0).then_some(Stage1(stage1))
}

/// The token that proves stage1 to a server that sent `scramble`.
pub(crate) fn token(scramble: &[u8], stage1: &Stage1) -> [u8; 20] {
    let stage2: [u8; 20] = Sha1::digest(stage1.0).into();
    xor(stage1.0, sha1_concat(scramble, &stage2))
}

/// stage1 from a plain password.
#[cfg(test)]
pub(crate) fn stage1_of(password: &[u8]) -> Stage1 {
    Stage1(Sha1::digest(password).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_mysql_common_scramble_and_verifies() {
        let scramble = b"abcdefghij0123456789";
        let stage1 = stage1_of(b"secret");
        let t = token(scramble, &stage1);
        let reference = mysql_common::scramble::scramble_native(scramble, b"secret").unwrap();
        assert_eq!(t, reference);
        let stage2: [u8; 20] = Sha1::digest(stage1.0).into();
        assert_eq!(verify(scramble, &t, &stage2), Some(stage1));
        let mut bad = t;
        bad[0] ^= 1;
        assert_eq!(verify(scramble, &bad, &stage2), None);
        assert_eq!(verify(scramble, &t[..19], &stage2), None);
    }

    #[test]
    fn stage2_parses_the_account_table_form() {
        // PASSWORD('secret') in MariaDB.
        let s = parse_stage2("*14E65567ABDB5135D0CFD9A70B3032C179A49EE7").unwrap();
        let expect: [u8; 20] = Sha1::digest(stage1_of(b"secret").0).into();
        assert_eq!(s, expect);
        assert_eq!(parse_stage2("invalid"), None);
        assert_eq!(parse_stage2("*14E6"), None);
        assert_eq!(
            parse_stage2("*ZZE65567ABDB5135D0CFD9A70B3032C179A49EE7"),
            None
        );
    }
}
