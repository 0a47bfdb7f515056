//! The root and VM tiers of the Berth test suite.
//!
//! Everything here runs the built binaries (`cargo build --workspace` first, as
//! `ci/test.sh` does) against real inputs that `ci/` scripts prepare outside git:
//!
//! - `tests/rootfs.rs`: a Debian bookworm `debootstrap --variant=minbase` tree
//!   (`ci/fetch-rootfs.sh` builds it into `/var/cache/berth/`), committed and checked
//!   out, compared with `diff -r` and entry by entry. Needs root.
//!
//! A test that cannot run here (not root, cache missing) says so and passes, unless
//! `BERTH_STRICT=1` (set by `ci/test.sh`) makes a missing cache a failure.
#![forbid(unsafe_code)]
