//! The token of the loopback TCP listener: the rules its file follows, for
//! the server that checks it and every client that sends it.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The shortest token accepted, in bytes (after trimming whitespace).
pub const MIN_TOKEN_LEN: usize = 16;

/// The most of a token file that is read.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It cannot be opened or read (a symbolic link is refused).
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
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
    /// It holds too short a token.
    #[error("the token in {path} is too short: {len} bytes, at least {MIN_TOKEN_LEN} are needed")]
    TooShort {
        /// The file.
        path: PathBuf,
        /// The token's length.
        len: usize,
    },
    /// The token is not printable ASCII (it goes into a header).
    #[error("the token in {0} must be printable ASCII")]
    NotText(PathBuf),
}

/// Reads a token file: a regular file (not a symbolic link) that only its
/// owner may read (mode & 0o077 == 0), holding at least
/// [`MIN_TOKEN_LEN`] bytes of printable ASCII after trimming whitespace.
pub fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let read = |source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
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
        .take(MAX_TOKEN_FILE)
        .read_to_end(&mut raw)
        .map_err(read)?;
    let token = raw.trim_ascii();
    if token.len() < MIN_TOKEN_LEN {
        return Err(TokenError::TooShort {
            path: path.to_path_buf(),
            len: token.len(),
        });
    }
    if !token.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err(TokenError::NotText(path.to_path_buf()));
    }
    Ok(String::from_utf8_lossy(token).into_owned())
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
    fn a_token_file_is_private_long_enough_and_not_a_link() {
        let dir = std::env::temp_dir().join(format!("zinit-client-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        std::fs::write(&path, "  0123456789abcdef\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_token_file(&path).expect("valid"), "0123456789abcdef");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_token_file(&path).expect_err("group-readable");
        assert!(err.to_string().contains("group or others"), "{err}");
        std::fs::write(&path, "short\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = read_token_file(&path).expect_err("short");
        assert!(err.to_string().contains("too short"), "{err}");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(read_token_file(&link).is_err(), "symlinks are not followed");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
