//! The sha256 that binds an approval to one plan file.
//!
//! The plan stage outputs the hex digest of the plan file it wrote; the
//! apply stage hashes the bytes it is about to apply and compares them with
//! the digest it was given. Comparison is on the 32 bytes, so `sha256:`
//! prefixes and upper-case hex do not matter.

use sha2::{Digest, Sha256};

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A digest as given in the pipeline: 64 hex digits, optionally prefixed
/// `sha256:`, surrounding whitespace ignored. Returns it normalised
/// (lower-case hex, no prefix).
pub fn parse(digest: &str) -> Result<String, String> {
    let trimmed = digest.trim();
    let hex_part = trimmed.strip_prefix("sha256:").unwrap_or(trimmed);
    match hex::decode(hex_part) {
        Ok(bytes) if bytes.len() == 32 => Ok(hex_part.to_ascii_lowercase()),
        _ => Err(format!(
            "`{digest}` is not a sha256 digest (64 hex digits, optionally prefixed `sha256:`)"
        )),
    }
}

/// Refuse unless `bytes` hash to `approved`; the error names both digests.
pub fn verify(plan_file: &str, bytes: &[u8], approved: &str) -> Result<String, String> {
    let actual = sha256_hex(bytes);
    let approved = parse(approved)?;
    if actual == approved {
        Ok(actual)
    } else {
        Err(format!(
            "refusing to apply {plan_file}: its sha256 is {actual}, but the approved digest is \
             {approved}. The plan file is not the one that was approved (it changed after the \
             plan stage, or the wrong plan was given): plan again and get the new plan approved"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sha256("test"), a well-known vector.
    const TEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn hashes_and_normalises() {
        assert_eq!(sha256_hex(b"test"), TEST);
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(parse(TEST).unwrap(), TEST);
        assert_eq!(
            parse(&format!(" sha256:{}\n", TEST.to_uppercase())).unwrap(),
            TEST
        );
        for bad in [
            "",
            "sha256:",
            "abc",
            &TEST[1..],
            &format!("{TEST}00"),
            &TEST.replace('f', "g"),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn verify_names_both_digests() {
        assert_eq!(verify("/w/tfplan", b"test", TEST).unwrap(), TEST);
        assert_eq!(
            verify("/w/tfplan", b"test", &format!("sha256:{TEST}")).unwrap(),
            TEST
        );
        let e = verify("/w/tfplan", b"tampered", TEST).unwrap_err();
        let tampered = sha256_hex(b"tampered");
        assert!(
            e.starts_with(&format!(
                "refusing to apply /w/tfplan: its sha256 is {tampered}, but the approved digest is {TEST}."
            )),
            "{e}"
        );
        assert!(verify("/w/tfplan", b"test", "nope").is_err());
    }
}
