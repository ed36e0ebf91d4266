//! File-system work done with another user's rights. Linux keeps the
//! file-system uid and gid and the supplementary groups per thread, so for
//! the length of a closure the calling thread opens, creates and renames
//! files as that user would: root never writes where a less trusted user
//! points it (a symbolic link the user planted leads nowhere the user could
//! not write to anyway).

use crate::sys;
use nix::unistd::{Gid, Uid, setfsgid, setfsuid};
use std::io;

/// A user's identity for file-system work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIdentity {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// The supplementary groups.
    pub groups: Vec<u32>,
}

impl FsIdentity {
    /// Runs `work` on this thread with this identity's file-system rights,
    /// then gives the thread its own back. `work` must not await or move
    /// to another thread (it is a plain closure, so it cannot).
    pub fn run<T>(&self, work: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let saved_groups = sys::thread_groups()?;
        sys::set_thread_groups(&self.groups)?;
        let old_gid = setfsgid(Gid::from_raw(self.gid));
        let old_uid = setfsuid(Uid::from_raw(self.uid));
        let result = work();
        setfsuid(old_uid);
        setfsgid(old_gid);
        sys::set_thread_groups(&saved_groups)?;
        result
    }
}
