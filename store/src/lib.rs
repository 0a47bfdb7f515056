//! Berth's content-addressed object store.
//!
//! A store is a directory (on a build host, `--repo R`; on a device, `/berth` on the
//! sysroot) holding objects named by sha256 (see `docs/FORMAT.md`, "Object store"):
//!
//! - **file objects** are the inodes themselves (regular files, symlinks, device nodes,
//!   FIFOs) carrying their real mode, owner and xattrs, so a checkout is a tree of hard
//!   links, as in `OSTree`'s `bare` mode;
//! - **tree** and **commit** objects hold their canonical encodings from the `format` crate.
//!
//! # Guarantees
//! - Nothing appears under its final name half-written: objects are written into a
//!   per-transaction staging directory, made durable with `syncfs`, and only then renamed
//!   into place; a commit object is renamed last, after everything it references.
//! - Every tree and commit read back is re-hashed against its name. [`Repo::verify_file`]
//!   and [`Repo::fsck`] re-hash file objects from the inode's content and metadata.
//! - All file-system work is done relative to directory fds (`*at` calls), so paths of any
//!   depth work and no untrusted name is ever joined into a path string.
//!
//! # Features
//! `write` (default) adds transactions ([`Txn`]), building trees from directories
//! ([`build`]) and checkouts ([`checkout`]). Without it the crate only opens, reads and
//! verifies. The boot shim does not use the store at all: it reads the boot record and
//! the deployment directories through the `sysroot` crate.
//!
//! # Non-goals
//! Garbage collection, deltas and transport live elsewhere (the updater).
//!
//! # Testing
//! `cargo test -p store`; tests that need root (device nodes, other owners,
//! `security.*` xattrs) detect it and skip with a message when not root.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod inode;
pub mod kernelset;
mod repo;
mod verify;
pub mod warnings;

#[cfg(feature = "write")]
pub mod build;
#[cfg(feature = "write")]
pub mod checkout;
#[cfg(feature = "write")]
mod staging;
#[cfg(feature = "write")]
mod txn;

pub use error::StoreError;
pub use inode::is_root;
pub use repo::{Repo, STORE_VERSION};
#[cfg(feature = "write")]
pub use txn::{Txn, TxnStats};
pub use verify::{FileContent, FsckReport};
