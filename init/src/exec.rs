//! Carrying out root assembly: thin rustix calls, one per [`Step`].
//!
//! References: mount(2) <https://man7.org/linux/man-pages/man2/mount.2.html>,
//! `pivot_root(2)` <https://man7.org/linux/man-pages/man2/pivot_root.2.html>,
//! chroot(2) <https://man7.org/linux/man-pages/man2/chroot.2.html>.

use alloc::vec::Vec;
use core::ffi::CStr;

use rustix::fs::Mode;
use rustix::io::Errno;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::InitError;
use crate::steps::Step;

/// `mkdir -p`: creates every missing component of the absolute `path`.
pub fn mkdir_p(path: &[u8]) -> Result<(), Errno> {
    let mut end = 1;
    while end <= path.len() {
        let next = path[end..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(path.len(), |i| end + i);
        match rustix::fs::mkdir(&path[..next], Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        end = next + 1;
    }
    Ok(())
}

fn opts(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

/// Carries out one step.
pub fn run(step: &Step) -> Result<(), InitError> {
    let e = |what| move |err| InitError::new(what, err);
    match step {
        // make / private, recursively, so that nothing we do propagates to, or is
        // propagated from, another mount namespace; pivot_root requires it.
        Step::MakePrivate(p) => rustix::mount::mount_change(
            p.as_slice(),
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )
        .map_err(e("make / private")),
        Step::Mkdir(p) => mkdir_p(p).map_err(e("mkdir")),
        Step::Bind(src, dst) => {
            rustix::mount::mount_bind(src.as_slice(), dst.as_slice()).map_err(e("bind"))
        }
        Step::RemountReadOnly(p) => {
            rustix::mount::mount_remount(p.as_slice(), MountFlags::BIND | MountFlags::RDONLY, "")
                .map_err(e("remount read-only"))
        }
        Step::Overlay {
            lower,
            upper,
            work,
            target,
        } => {
            let data = opts(&[
                b"lowerdir=",
                lower,
                b",upperdir=",
                upper,
                b",workdir=",
                work,
                b"\0",
            ]);
            let data = CStr::from_bytes_with_nul(&data)
                .map_err(|_| InitError::new("overlay options", Errno::INVAL))?;
            rustix::mount::mount(
                "overlay",
                target.as_slice(),
                "overlay",
                MountFlags::empty(),
                data,
            )
            .map_err(e("overlay /etc"))
        }
        Step::Tmpfs(p) => rustix::mount::mount(
            "tmpfs",
            p.as_slice(),
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            c"mode=0755",
        )
        .map_err(e("tmpfs /run")),
        Step::Move(src, dst) => {
            rustix::mount::mount_move(src.as_slice(), dst.as_slice()).map_err(e("move mount"))
        }
        Step::PivotRoot { new_root, put_old } => {
            rustix::process::chdir(new_root.as_slice()).map_err(e("chdir new root"))?;
            // The old root goes to <new root>/<put_old>: the physical sysroot stays
            // reachable at /sysroot in the booted system.
            rustix::process::pivot_root(".", put_old.as_slice()).map_err(e("pivot_root"))?;
            rustix::process::chdir("/").map_err(e("chdir /"))
        }
        Step::MoveRoot(new_root) => {
            // From an initramfs, pivot_root fails with EINVAL (rootfs can never be
            // unmounted): move the new root over / and chroot into it, as switch_root does.
            rustix::process::chdir(new_root.as_slice()).map_err(e("chdir new root"))?;
            rustix::mount::mount_move(".", "/").map_err(e("move new root to /"))?;
            rustix::process::chroot(".").map_err(e("chroot"))?;
            rustix::process::chdir("/").map_err(e("chdir /"))
        }
    }
}

/// Undoes the reversible part of an assembly: detaches the new root and everything
/// mounted under it.
pub fn undo(new_root: &[u8]) -> Result<(), InitError> {
    rustix::mount::unmount(new_root, UnmountFlags::DETACH)
        .map_err(|e| InitError::new("detach new root", e))
}
