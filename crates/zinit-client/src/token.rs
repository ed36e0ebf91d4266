//! The bearer token a TCP listener (the server's, or zinit_ui's off
//! loopback) asks for: read from a file that only its owner may read,
//! never through a link, at least 16 bytes long; compared in constant time.

use nix::fcntl::OFlag;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It cannot be opened or read (a link is refused).
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a regular file.
    #[error("the token file {0} is not a regular file")]
    NotAFile(PathBuf),
    /// Group or others may read it.
    #[error(
        "the token file {path} may be read by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Readable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token is too short to be a secret.
    #[error("the token in {path} is too short: {len} bytes, at least {MIN_TOKEN_LEN} are needed")]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The token is not printable ASCII (it goes into a header).
    #[error("the token in {0} must be printable ASCII")]
    NotText(PathBuf),
}

/// A secret token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The token as text (it is printable ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Whether `given` is this token, in time that does not depend on where
    /// they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        ct_eq(&self.0, given)
    }
}

/// Equality that takes the same time wherever the first difference is.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Reads a token file: a regular file (not a link) readable by its owner
/// only (mode & 0o077 == 0) holding at least 16 bytes of printable ASCII
/// after trimming whitespace.
pub fn read_token_file(path: &Path) -> Result<Token, TokenError> {
    let read = |source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        // Never through a link, and never blocking on a FIFO.
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(read)?;
    let meta = file.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(TokenError::NotAFile(path.to_path_buf()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(TokenError::Readable {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o777,
        });
    }
    let mut raw = Vec::new();
    file.by_ref()
        .take(64 * 1024)
        .read_to_end(&mut raw)
        .map_err(read)?;
    let token = raw.trim_ascii().to_vec();
    if token.len() < MIN_TOKEN_LEN {
        return Err(TokenError::TooShort {
            path: path.to_path_buf(),
            len: token.len(),
        });
    }
    if !token.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err(TokenError::NotText(path.to_path_buf()));
    }
    Ok(Token(token))
}

/// The owner of a token file (read without following a symbolic link).
pub fn owner(path: &Path) -> Option<u32> {
    std::fs::symlink_metadata(path).ok().map(|m| m.uid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn token_file_rules() {
        let dir = std::env::temp_dir().join(format!("zinit-client-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        let set = |text: &str, mode: u32| {
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        set("  0123456789abcdef\n", 0o600);
        assert_eq!(
            read_token_file(&path).expect("valid").as_bytes(),
            b"0123456789abcdef"
        );
        let cases: &[(&str, u32, &str)] = &[
            ("0123456789abcdef", 0o640, "group or others"),
            ("0123456789abcdef", 0o604, "group or others"),
            ("short\n", 0o600, "too short"),
            ("", 0o600, "too short"),
            ("\n", 0o600, "too short"),
        ];
        for (text, mode, why) in cases {
            set(text, *mode);
            let err = read_token_file(&path).expect_err(why).to_string();
            assert!(err.contains(why), "{text:?} {mode:o}: {err}");
        }
        set("0123456789abcdef", 0o600);
        let link = dir.join("link");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(read_token_file(&link).is_err(), "links are not followed");
        // A FIFO is refused at once, not waited on.
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        let err = read_token_file(&fifo).expect_err("a fifo").to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
