//! API keys: the keys file, its parser, hashing, lookup and new keys.
//!
//! The server keeps only SHA-256 hashes of keys. Keys are 256 random bits from the OS, so a
//! fast hash is enough: a slow KDF (argon2, bcrypt) protects guessable passwords, and nobody
//! can guess 2^256 inputs. Hashes are compared in constant time (`subtle`), each presented
//! key against every stored hash, so timing reveals nothing about a stored hash.
//!
//! File format, one key per line, `#` starts a comment:
//!
//! ```text
//! sha256:<64 hex digits> role=write collections=a,b name=ci
//! ```

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::name::validate_collection;

/// Largest keys file, in bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most keys in one file.
pub const MAX_KEYS: usize = 10_000;
/// Longest key a client may present, in bytes; a longer one is invalid without hashing.
pub const MAX_PRESENTED_BYTES: usize = 256;
/// Most collections one key may be limited to.
pub const MAX_COLLECTIONS: usize = 256;
/// Longest key name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// The prefix of keys made by `minidb keys create` (so secret scanners can find them).
pub const KEY_PREFIX: &str = "mdb_";

/// What a key may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// GET, search, count, changes.
    Read,
    /// Plus inserts, updates and deletes.
    Write,
    /// Plus compaction, backups and index management.
    Admin,
}

impl Role {
    /// The role's name in the keys file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "{:?} is not a role (read, write, admin)",
                crate::store::error::preview(s)
            )),
        }
    }
}

/// A bad keys file: the line and what is wrong with it. It never quotes a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// A line that is not a key entry.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file as a whole (too large, too many keys, not UTF-8).
    #[error("{0}")]
    File(String),
}

/// One key of the file.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    hash: [u8; 32],
    /// What the key may do.
    pub role: Role,
    /// The collections it is limited to; `None`: every collection.
    pub collections: Option<Vec<String>>,
    /// Its name, for the operator (logged on denials; never the key).
    pub name: Option<String>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("role", &self.role)
            .field("collections", &self.collections)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    /// May this key use `collection`?
    pub fn allows(&self, collection: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c == collection))
    }

    /// The name for logs: the configured one, else `unnamed`.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("unnamed")
    }
}

/// The keys of one version of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<ApiKey>,
}

impl KeySet {
    /// Parses a keys file.
    pub fn parse(text: &[u8]) -> Result<KeySet, KeyFileError> {
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(KeyFileError::File(format!(
                "larger than {MAX_FILE_BYTES} bytes"
            )));
        }
        let text = std::str::from_utf8(text)
            .map_err(|e| KeyFileError::File(format!("not UTF-8 text ({e})")))?;
        let mut keys: Vec<ApiKey> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let key = parse_line(content).map_err(|reason| KeyFileError::Line { line, reason })?;
            if let Some(j) = keys.iter().position(|k| k.hash == key.hash) {
                return Err(KeyFileError::Line {
                    line,
                    reason: format!("the same key hash as line {}", lines[j]),
                });
            }
            if keys.len() == MAX_KEYS {
                return Err(KeyFileError::File(format!("more than {MAX_KEYS} keys")));
            }
            keys.push(key);
            lines.push(line);
        }
        Ok(KeySet { keys })
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True without keys (then every request that needs one gets 401).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key whose hash is the hash of `presented`. Every stored hash is compared, in
    /// constant time.
    pub fn find(&self, presented: &str) -> Option<&ApiKey> {
        if presented.len() > MAX_PRESENTED_BYTES {
            return None;
        }
        let hash = hash_key(presented);
        let mut found = None;
        for k in &self.keys {
            let equal: bool = k.hash.ct_eq(&hash).into();
            if equal && found.is_none() {
                found = Some(k);
            }
        }
        found
    }
}

/// SHA-256 of a key.
fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// One non-empty, comment-free line.
fn parse_line(content: &str) -> Result<ApiKey, String> {
    let mut fields = content.split_whitespace();
    let first = fields.next().unwrap_or("");
    let hex_hash = first.strip_prefix("sha256:").ok_or_else(|| {
        "must start with sha256:<64 hex digits> (the line `minidb keys create` prints)".to_string()
    })?;
    let mut hash = [0u8; 32];
    if hex_hash.len() != 64 || hex::decode_to_slice(hex_hash, &mut hash).is_err() {
        return Err("the hash after sha256: must be 64 hex digits".into());
    }
    let (mut role, mut collections, mut name) = (None, None, None);
    for field in fields {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("{:?} is not key=value", short(field)))?;
        let dup = match k {
            "role" => role.replace(v.parse::<Role>()?).is_some(),
            "collections" => collections.replace(parse_collections(v)?).is_some(),
            "name" => name.replace(parse_name(v)?).is_some(),
            _ => {
                return Err(format!(
                    "unknown field {:?} (role, collections, name)",
                    short(k)
                ))
            }
        };
        if dup {
            return Err(format!("{k}= given twice"));
        }
    }
    let role = role.ok_or("role= is missing (read, write or admin)")?;
    Ok(ApiKey {
        hash,
        role,
        collections,
        name,
    })
}

fn short(s: &str) -> String {
    crate::store::error::preview(s).to_string()
}

/// `a,b,c`: valid collection names.
pub fn parse_collections(v: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = v.split(',').map(str::to_owned).collect();
    if list.len() > MAX_COLLECTIONS {
        return Err(format!("more than {MAX_COLLECTIONS} collections"));
    }
    for c in &list {
        validate_collection(c).map_err(|e| format!("collections=: {e}"))?;
    }
    Ok(list)
}

/// A key name: 1-64 bytes of `[A-Za-z0-9_.@-]`.
pub fn parse_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= MAX_NAME_BYTES
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "name= must be 1-{MAX_NAME_BYTES} characters of A-Z a-z 0-9 _ . @ -"
        ))
    }
}

/// A new key and its line for the keys file.
#[derive(Debug)]
pub struct NewKey {
    /// The key: shown once, stored nowhere by the server.
    pub key: String,
    /// The line to add to the keys file.
    pub line: String,
}

/// Makes a key of 256 random bits (from the OS) and its keys-file line.
pub fn create(
    role: Role,
    collections: Option<&[String]>,
    name: Option<&str>,
) -> Result<NewKey, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let mut line = format!("sha256:{} role={role}", hex::encode(hash_key(&key)));
    if let Some(list) = collections {
        line.push_str(&format!(
            " collections={}",
            parse_collections(&list.join(","))?.join(",")
        ));
    }
    if let Some(n) = name {
        line.push_str(&format!(" name={}", parse_name(n)?));
    }
    Ok(NewKey { key, line })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_for(key: &str, rest: &str) -> String {
        format!("sha256:{} {rest}", hex::encode(hash_key(key)))
    }

    #[test]
    fn parses_roles_collections_names_and_comments() {
        let text = format!(
            "# keys\n\n{}  # trailing comment\n{}\n",
            line_for("k1", "role=read"),
            line_for("k2", "role=write collections=a,b name=ci")
        );
        let set = KeySet::parse(text.as_bytes()).expect("parse");
        assert_eq!(set.len(), 2);
        let k1 = set.find("k1").expect("k1");
        assert_eq!((k1.role, k1.collections.clone()), (Role::Read, None));
        let k2 = set.find("k2").expect("k2");
        assert_eq!(k2.role, Role::Write);
        assert!(k2.allows("a") && k2.allows("b") && !k2.allows("c"));
        assert_eq!(k2.label(), "ci");
        assert!(set.find("k3").is_none());
        assert!(set.find(&"k".repeat(MAX_PRESENTED_BYTES + 1)).is_none());
    }

    #[test]
    fn bad_lines_name_their_line_and_never_the_hash() {
        let h = hex::encode(hash_key("x"));
        let cases = [
            (format!("{h} role=read"), "sha256:"),
            ("sha256:abc role=read".to_string(), "64 hex"),
            (format!("sha256:{} role=read", "zz".repeat(32)), "64 hex"),
            (format!("sha256:{h}"), "role= is missing"),
            (format!("sha256:{h} role=root"), "not a role"),
            (format!("sha256:{h} role=read role=write"), "twice"),
            (format!("sha256:{h} role=read colour=red"), "unknown field"),
            (
                format!("sha256:{h} role=read collections=_x"),
                "collections=",
            ),
            (format!("sha256:{h} role=read name=a/b"), "name="),
            (format!("sha256:{h} role=read oops"), "key=value"),
            (
                format!("sha256:{h} role=read\nsha256:{h} role=write"),
                "same key",
            ),
        ];
        for (text, want) in cases {
            let err = KeySet::parse(format!("# c\n{text}\n").as_bytes())
                .expect_err(&text)
                .to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(
                err.starts_with("line 2") || err.starts_with("line 3"),
                "{err}"
            );
            assert!(!err.contains(&h), "{err}");
        }
        assert!(KeySet::parse(&[0xff, 0xfe]).is_err());
        let big = vec![b'#'; MAX_FILE_BYTES as usize + 1];
        assert!(KeySet::parse(&big).is_err());
    }

    #[test]
    fn created_keys_are_random_and_their_line_parses_back() {
        let cols = vec!["a".to_string(), "b".to_string()];
        let k = create(Role::Write, Some(&cols), Some("ci")).expect("create");
        let other = create(Role::Write, None, None).expect("create");
        assert_ne!(k.key, other.key);
        assert!(k.key.starts_with(KEY_PREFIX));
        assert_eq!(k.key.len(), KEY_PREFIX.len() + 43, "256 bits in base64url");
        assert!(!k.line.contains(&k.key));
        let set = KeySet::parse(k.line.as_bytes()).expect("parse");
        let found = set.find(&k.key).expect("found");
        assert_eq!(found.role, Role::Write);
        assert_eq!(found.collections.as_deref(), Some(cols.as_slice()));
        assert!(set.find(&other.key).is_none());
        assert!(create(Role::Read, Some(&["_bad".to_string()]), None).is_err());
        assert!(create(Role::Read, None, Some("has space")).is_err());
    }
}
