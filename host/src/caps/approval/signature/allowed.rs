//! The `allowed_signers` file `ssh-keygen -Y verify` reads (see
//! ssh-keygen(1), "ALLOWED SIGNERS"): one key per line,
//!
//! ```text
//! # comment
//! alice,alice@example.com ssh-ed25519 AAAA... optional comment
//! "bob" namespaces="capstan-approval,git",valid-after="20260101" ssh-ed25519 AAAA...
//! ```
//!
//! principals (comma-separated, possibly quoted), options (optional,
//! comma-separated: `namespaces="…"`, `valid-after="…"`, `valid-before="…"`,
//! `cert-authority`), the key's type and base64 body. Blank lines and
//! lines starting with `#` are skipped.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use ssh_key::PublicKey;
use wildmatch::WildMatch;

/// A line of `allowed_signers` that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    pub line: usize,
    pub problem: String,
}

/// One listed key.
#[derive(Debug, Clone)]
pub struct Signer {
    /// As written; ssh-keygen takes them as patterns when matching `-I`.
    pub principals: Vec<String>,
    /// The `namespaces` patterns; empty when the key may sign in any.
    pub namespaces: Vec<String>,
    pub valid_after: Option<Timestamp>,
    pub valid_before: Option<Timestamp>,
    /// The key certifies others' keys (certificates are not supported: such
    /// an entry never matches a signature).
    pub cert_authority: bool,
    pub key: PublicKey,
    /// Where it is in the file (1-based).
    pub line: usize,
}

/// The keys that may sign, read from an `allowed_signers` text.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    signers: Vec<Signer>,
}

impl AllowedSigners {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut signers = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let signer = entry(line, i + 1).map_err(|problem| ParseError {
                line: i + 1,
                problem,
            })?;
            signers.push(signer);
        }
        Ok(Self { signers })
    }

    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }
}

impl Signer {
    /// The first principal, the one a decision is recorded under.
    pub fn principal(&self) -> &str {
        &self.principals[0]
    }

    /// Whether the `namespaces` option lets the key sign in `namespace`:
    /// a pattern list as ssh's (`*`, `?`, and `!` to exclude).
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        if self.namespaces.is_empty() {
            return true;
        }
        let matches = |p: &str| WildMatch::new(p).matches(namespace);
        let excluded = self
            .namespaces
            .iter()
            .filter_map(|p| p.strip_prefix('!'))
            .any(matches);
        !excluded
            && self
                .namespaces
                .iter()
                .any(|p| !p.starts_with('!') && matches(p))
    }

    /// The validity window (as text) when `time` falls outside it.
    pub fn outside_validity(&self, time: Timestamp) -> Option<String> {
        let early = self.valid_after.is_some_and(|t| time < t);
        let late = self.valid_before.is_some_and(|t| time > t);
        (early || late).then(|| {
            let after = self.valid_after.map(|t| format!("valid after {t}"));
            let before = self.valid_before.map(|t| format!("valid before {t}"));
            [after, before]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// One non-blank, non-comment line.
fn entry(line: &str, number: usize) -> Result<Signer, String> {
    let (principals, rest) = token(line)?;
    let principals: Vec<String> = unquote(principals)?
        .split(',')
        .map(str::trim)
        .map(str::to_string)
        .collect();
    if principals.iter().any(String::is_empty) {
        return Err("an empty principal (the first field is `name[,name...]`)".into());
    }
    if rest.is_empty() {
        return Err("no key after the principals: expected `<principals> [options] <key type> <base64 key>`".into());
    }
    // Like ssh-keygen: what follows the principals is a key, or options then a key.
    let mut options = Options::default();
    let key = match PublicKey::from_openssh(rest) {
        Ok(key) => key,
        Err(e) if looks_like_key_type(rest) => return Err(bad_key(e)),
        Err(_) => {
            let (list, key_text) = token(rest)?;
            for option in split_options(list)? {
                options.set(&option)?;
            }
            if key_text.is_empty() {
                return Err("no key after the options: expected `<key type> <base64 key>`".into());
            }
            PublicKey::from_openssh(key_text).map_err(bad_key)?
        }
    };
    let Options {
        namespaces,
        valid_after,
        valid_before,
        cert_authority,
    } = options;
    Ok(Signer {
        principals,
        namespaces,
        valid_after,
        valid_before,
        cert_authority,
        key,
        line: number,
    })
}

fn bad_key(e: ssh_key::Error) -> String {
    format!("not a public key ({e}): expected `<key type> <base64 key>` as in a .pub file")
}

fn looks_like_key_type(text: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-", "rsa-"]
        .iter()
        .any(|p| text.starts_with(p))
}

/// What an entry's options say.
#[derive(Default)]
struct Options {
    namespaces: Vec<String>,
    valid_after: Option<Timestamp>,
    valid_before: Option<Timestamp>,
    cert_authority: bool,
}

impl Options {
    fn set(&mut self, option: &str) -> Result<(), String> {
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (option, None),
        };
        let quoted = |value: Option<&str>| -> Result<String, String> {
            let value = value.ok_or(format!("option `{name}` needs a value: {name}=\"...\""))?;
            match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(v) => Ok(v.to_string()),
                None => Err(format!(
                    "the value of `{name}` must be in double quotes: {name}=\"{value}\""
                )),
            }
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("cert-authority", None) => self.cert_authority = true,
            ("namespaces", v) => {
                self.namespaces = quoted(v)?
                    .split(',')
                    .map(|n| n.trim().to_string())
                    .collect();
                if self.namespaces.iter().any(String::is_empty) {
                    return Err("an empty name in namespaces=\"...\"".into());
                }
            }
            ("valid-after", v) => self.valid_after = Some(timestamp(name, &quoted(v)?)?),
            ("valid-before", v) => self.valid_before = Some(timestamp(name, &quoted(v)?)?),
            _ => {
                return Err(format!(
                    "unknown option `{option}` (known: namespaces=\"...\", valid-after=\"...\", \
                     valid-before=\"...\", cert-authority), or a key of an unknown type"
                ));
            }
        }
        Ok(())
    }
}

/// A `valid-after`/`valid-before` time: YYYYMMDD, YYYYMMDDHHMM or
/// YYYYMMDDHHMMSS, in UTC with a trailing `Z`, else in local time.
fn timestamp(name: &str, text: &str) -> Result<Timestamp, String> {
    let bad = || {
        format!(
            "{name}=\"{text}\" is not a time: write YYYYMMDD[HHMM[SS]], with a trailing Z for UTC"
        )
    };
    let (digits, zone) = match text.strip_suffix(['Z', 'z']) {
        Some(d) => (d, TimeZone::UTC),
        None => (text, TimeZone::system()),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n = |range: std::ops::Range<usize>| digits.get(range).map_or(Ok(0), str::parse::<i8>);
    let year: i16 = digits[..4].parse().map_err(|_| bad())?;
    let (month, day) = (n(4..6).map_err(|_| bad())?, n(6..8).map_err(|_| bad())?);
    let (hour, minute) = (n(8..10).map_err(|_| bad())?, n(10..12).map_err(|_| bad())?);
    let second = n(12..14).map_err(|_| bad())?;
    jiff::civil::DateTime::new(year, month, day, hour, minute, second, 0)
        .and_then(|dt| dt.to_zoned(zone))
        .map(|z| z.timestamp())
        .map_err(|_| bad())
}

/// The first whitespace-separated field of `text` (spaces inside double
/// quotes belong to it) and the rest, trimmed.
fn token(text: &str) -> Result<(&str, &str), String> {
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return Ok((&text[..i], text[i..].trim())),
            _ => {}
        }
    }
    if quoted {
        return Err("a double quote is not closed".into());
    }
    Ok((text, ""))
}

/// Principals may be quoted as a whole: `"alice,bob"`.
fn unquote(text: &str) -> Result<&str, String> {
    match text.strip_prefix('"') {
        Some(inner) => inner
            .strip_suffix('"')
            .filter(|i| !i.contains('"'))
            .ok_or_else(|| format!("badly quoted principals `{text}`")),
        None if text.contains('"') => Err(format!("badly quoted principals `{text}`")),
        None => Ok(text),
    }
}

/// Options separated by commas outside double quotes.
fn split_options(text: &str) -> Result<Vec<String>, String> {
    let (mut options, mut current, mut quoted) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => options.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    options.push(current);
    if options.iter().any(String::is_empty) {
        return Err(format!("an empty option in `{text}`"));
    }
    Ok(options)
}
