//! Berth's on-disk formats: pure encoders and parsers, no I/O.
//!
//! Everything Berth writes to disk and later reads back (object ids, file headers, trees,
//! commits, signatures and key files, the boot record and berth-init's boot report) is
//! defined here, once, and shared by the host tool
//! (`berth-image`), the device agent (`berth`) and the boot shim (`berth-init`).
//! `docs/FORMAT.md` is the byte-level specification; this crate is its reference
//! implementation and the two are kept in step.
//!
//! # Guarantees
//! - Deterministic: encoding a value gives the same bytes on every host and architecture.
//!   Collections are kept in one canonical (sorted, de-duplicated) order by construction.
//! - Bounded: decoders take `&[u8]`, never read past it, and reject every size over the
//!   limits in [`limits`] before allocating for it. Malformed input is an error, never a panic.
//! - Canonical: a decoder accepts exactly the bytes its encoder produces, so an object
//!   id names one value and one value only.
//!
//! # Non-goals
//! No filesystem access, no hashing of files, no key generation: the `store` and `image`
//! crates do I/O. The crate is `no_std` with `alloc` so that the boot shim can use it.
//! serde only behind the feature `serde` (the boot report's decoder, for the agent).
//!
//! # Testing
//! `cargo test -p format` runs the unit and property tests (no root needed).
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod bls;
pub mod bootconf;
pub mod bootreport;
pub mod channel;
pub mod cmdline;
pub mod commit;
pub mod ddi;
pub mod elfpatch;
mod error;
pub mod id;
pub mod index;
pub mod json;
pub mod kernelset;
pub mod key;
pub mod limits;
pub mod link;
pub mod loader;
pub mod meta;
pub mod name;
pub mod oci;
pub mod ops;
pub mod probe;
pub mod record;
pub mod sig;
pub mod tree;
pub mod uboot_env;
pub mod update;
mod wire;
pub mod zippatch;

pub use commit::{Commit, Version};
pub use error::FormatError;
pub use id::{ObjectId, ObjectKind};
pub use meta::{FileHeader, FileKind, Xattrs};
pub use name::EntryName;
pub use tree::{DirMeta, EntryKind, Tree, TreeEntry};
