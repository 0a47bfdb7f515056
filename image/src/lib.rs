//! The parts of `berth-image` that other crates reach: the tarball importer, which the
//! `tar` fuzz target (`format/fuzz`) drives with untrusted archives.

pub mod tarball;
