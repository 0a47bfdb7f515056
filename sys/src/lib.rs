//! The one crate in the workspace allowed `unsafe`: what a `no_std` static binary
//! (berth-init on musl) needs from the C runtime and rustix does not provide.
//!
//! - [`Malloc`]: a global allocator over the C library's `malloc`/`free`.
//! - [`args`]: `argv`/`envp` from the raw pointers the C runtime passes to `main`.
//! - [`execve`]: `execve(2)`; rustix only offers it in its `runtime` module, which is not
//!   meant for processes that have a libc.
//! - [`stdout`], [`stderr`]: the standard fds, borrowed.
//! - `rust_eh_personality`: a no-op, because `core` references it even with
//!   `panic = "abort"` on some targets (rust-lang/rust#106864), and it is never called.
//!
//! # Safety
//! Every `unsafe` block has a `// SAFETY:` comment. The C runtime guarantees what
//! [`args`] relies on: `argv[0..argc]` and `envp` up to its NULL are valid C strings
//! for the life of the process.
#![no_std]
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{CStr, c_char, c_int};
use rustix::fd::BorrowedFd;

// The C library, linked statically on musl. Declared here because the `libc` crate only
// links it when built as part of std.
#[link(name = "c")]
unsafe extern "C" {}

/// The C library's allocator.
#[derive(Debug)]
pub struct Malloc;

// SAFETY: aligned_alloc/free/realloc uphold GlobalAlloc's contract: they return
// null or a block of at least `size` bytes aligned to `align` (aligned_alloc takes any
// power-of-two alignment in musl), and free/realloc take pointers they returned.
unsafe impl GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // aligned_alloc wants size to be a multiple of align (C11); round it up.
        let size = layout
            .size()
            .next_multiple_of(layout.align())
            .max(layout.align());
        // SAFETY: plain C allocation call with a valid size and power-of-two alignment.
        unsafe { libc::aligned_alloc(layout.align(), size).cast() }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above (GlobalAlloc's contract).
        unsafe { libc::free(ptr.cast()) }
    }
}

/// Collects `argv` and `envp` as C strings.
///
/// # Safety
/// `argv` must point to `argc` valid C string pointers, and `envp` (if not null) to a
/// null-terminated array of valid C string pointers, all living for `'static`: exactly
/// what the C runtime passes to `main`.
pub unsafe fn args(
    argc: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> (Vec<&'static CStr>, Vec<&'static CStr>) {
    let mut a = Vec::new();
    for i in 0..usize::try_from(argc).unwrap_or(0) {
        // SAFETY: i < argc, and argv has argc valid entries (caller's contract).
        let p = unsafe { *argv.add(i) };
        if !p.is_null() {
            // SAFETY: a non-null argv entry is a valid C string for the process's life.
            a.push(unsafe { CStr::from_ptr(p) });
        }
    }
    let mut e = Vec::new();
    if !envp.is_null() {
        let mut i = 0;
        loop {
            // SAFETY: envp is null-terminated, and we stop at the terminator.
            let p = unsafe { *envp.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: a non-null envp entry is a valid C string for the process's life.
            e.push(unsafe { CStr::from_ptr(p) });
            i += 1;
        }
    }
    (a, e)
}

/// `execve(path, argv, envp)`; returns the error if it returns at all.
pub fn execve(path: &CStr, argv: &[&CStr], envp: &[&CStr]) -> c_int {
    let mut av: Vec<*const c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    av.push(core::ptr::null());
    let mut ev: Vec<*const c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    ev.push(core::ptr::null());
    // SAFETY: path is a C string; av and ev are null-terminated arrays of C strings that
    // outlive the call (execve either replaces the process or returns).
    unsafe { libc::execve(path.as_ptr(), av.as_ptr(), ev.as_ptr()) };
    // SAFETY: reading errno right after the failed call, on this thread.
    unsafe { *libc::__errno_location() }
}

/// Never called with `panic = "abort"`; present because `core` may reference it. Only in
/// the no_std (musl) build: std defines its own.
#[cfg(target_env = "musl")]
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Standard output, borrowed.
pub fn stdout() -> BorrowedFd<'static> {
    // SAFETY: fd 1 is never closed by any Berth program; if the parent left it closed,
    // writes fail with EBADF, which callers ignore or report.
    unsafe { BorrowedFd::borrow_raw(1) }
}

/// Standard error, borrowed.
pub fn stderr() -> BorrowedFd<'static> {
    // SAFETY: as for `stdout`, with fd 2.
    unsafe { BorrowedFd::borrow_raw(2) }
}
