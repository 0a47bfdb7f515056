//! The parts of `berth-image` that other crates reach: the tarball importer, which the
//! `tar` fuzz target (`fuzz/`) drives with untrusted archives; the OCI layer applier
//! built on it; and the U-Boot environment flash that `berth-image disk` and the U-Boot
//! QEMU test give QEMU.

pub mod envflash;
pub mod layers;
pub mod tarball;
