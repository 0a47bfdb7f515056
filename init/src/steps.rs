//! Root assembly as data: the exact sequence of mount operations for a deployment.
//! Pure, so tests assert the sequence; `exec.rs` carries it out.

use alloc::vec::Vec;

use format::record::DeploymentName;

/// How the shim was started; also the boot report's `mode`.
pub use format::bootreport::Mode;

/// One step of root assembly. Paths are absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `mount(NULL, path, NULL, MS_REC|MS_PRIVATE)`: `pivot_root` refuses shared mounts.
    MakePrivate(Vec<u8>),
    /// `mkdir -p path` (on the writable sysroot).
    Mkdir(Vec<u8>),
    /// `mount(src, dst, NULL, MS_BIND)`.
    Bind(Vec<u8>, Vec<u8>),
    /// `mount(NULL, path, NULL, MS_BIND|MS_REMOUNT|MS_RDONLY)`.
    RemountReadOnly(Vec<u8>),
    /// An overlay on `target`: lower, upper, work.
    Overlay {
        /// The read-only lower layer (the deployment's `/etc`).
        lower: Vec<u8>,
        /// The persistent upper layer.
        upper: Vec<u8>,
        /// overlayfs's work directory, on the same filesystem as `upper`.
        work: Vec<u8>,
        /// Where the overlay is mounted.
        target: Vec<u8>,
    },
    /// A tmpfs (mode 0755, nosuid, nodev) on the path.
    Tmpfs(Vec<u8>),
    /// `mount(src, dst, NULL, MS_MOVE)`.
    Move(Vec<u8>, Vec<u8>),
    /// `chdir(new_root); pivot_root(".", put_old); chdir("/")` (direct mode).
    PivotRoot {
        /// The new root (a mount point).
        new_root: Vec<u8>,
        /// Where the old root goes, relative to the new root.
        put_old: Vec<u8>,
    },
    /// `chdir(new_root); mount(".", "/", MS_MOVE); chroot("."); chdir("/")` (initramfs mode).
    MoveRoot(Vec<u8>),
}

impl Step {
    /// The step's name in logs and JSON.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::MakePrivate(_) => "make-private",
            Self::Mkdir(_) => "mkdir",
            Self::Bind(..) => "bind",
            Self::RemountReadOnly(_) => "remount-ro",
            Self::Overlay { .. } => "overlay",
            Self::Tmpfs(_) => "tmpfs",
            Self::Move(..) => "move",
            Self::PivotRoot { .. } => "pivot-root",
            Self::MoveRoot(_) => "move-root",
        }
    }

    /// The path the step acts on (the mount point, or the directory made).
    pub fn target(&self) -> &[u8] {
        match self {
            Self::MakePrivate(p)
            | Self::Mkdir(p)
            | Self::RemountReadOnly(p)
            | Self::Tmpfs(p)
            | Self::MoveRoot(p)
            | Self::Bind(_, p)
            | Self::Move(_, p) => p,
            Self::Overlay { target, .. } => target,
            Self::PivotRoot { new_root, .. } => new_root,
        }
    }

    /// Whether the step moves the running system's own mounts (`/dev`, `/proc`, `/sys`,
    /// the root). Before the first such step a failure is undone by detaching the new
    /// root; from it on, there is no way back to another candidate.
    pub const fn commits(&self) -> bool {
        matches!(
            self,
            Self::Move(..) | Self::PivotRoot { .. } | Self::MoveRoot(_)
        )
    }
}

/// Joins path pieces with single slashes: `join(b"/", b"berth")` is `/berth`.
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        let p = p.strip_prefix(b"/").unwrap_or(p);
        if out.last() != Some(&b'/') {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    while out.len() > 1 && out.last() == Some(&b'/') {
        out.pop();
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// The deployment's directory, which becomes the new root.
pub fn deployment_dir(sysroot: &[u8], name: &DeploymentName) -> Vec<u8> {
    join(&[sysroot, b"berth/deploy", name.as_bytes()])
}

/// The steps that assemble `name`'s root from the sysroot at `sysroot` and switch into it.
///
/// 1. `/` private (`pivot_root` and `MS_MOVE` refuse shared mounts, and systemd's later
///    remounting must not propagate back);
/// 2. the deployment bind-mounted onto itself (so it is a mount point) and made read-only;
/// 3. persistent state dirs created on the sysroot;
/// 4. `/var` bound from `berth/state/var`; `/etc` an overlay of the deployment's `/etc`
///    with a per-deployment upper layer in `berth/state/etc/<name>/`;
/// 5. a tmpfs on `/run` (for `/run/berth/boot.json`; systemd keeps an existing `/run`);
/// 6. `/dev`, `/proc`, `/sys` moved into the new root;
/// 7. the switch: `pivot_root` with the old root (the physical sysroot) put at `/sysroot`
///    (direct), or the sysroot bound at `/sysroot` then `MS_MOVE` + chroot (initramfs).
pub fn assemble(mode: Mode, sysroot: &[u8], name: &DeploymentName) -> Vec<Step> {
    let root = deployment_dir(sysroot, name);
    let state_etc = join(&[sysroot, b"berth/state/etc", name.as_bytes()]);
    let upper = join(&[&state_etc, b"upper"]);
    let work = join(&[&state_etc, b"work"]);
    let var = join(&[sysroot, b"berth/state/var"]);
    let mut s = Vec::with_capacity(16);
    s.push(Step::MakePrivate(b"/".to_vec()));
    s.push(Step::Bind(root.clone(), root.clone()));
    s.push(Step::RemountReadOnly(root.clone()));
    s.push(Step::Mkdir(var.clone()));
    s.push(Step::Mkdir(upper.clone()));
    s.push(Step::Mkdir(work.clone()));
    s.push(Step::Bind(var, join(&[&root, b"var"])));
    s.push(Step::Overlay {
        lower: join(&[&root, b"etc"]),
        upper,
        work,
        target: join(&[&root, b"etc"]),
    });
    s.push(Step::Tmpfs(join(&[&root, b"run"])));
    if mode == Mode::Initramfs {
        s.push(Step::Bind(sysroot.to_vec(), join(&[&root, b"sysroot"])));
    }
    for fs in [&b"dev"[..], b"proc", b"sys"] {
        s.push(Step::Move(join(&[b"/", fs]), join(&[&root, fs])));
    }
    s.push(match mode {
        Mode::Direct => Step::PivotRoot {
            new_root: root,
            put_old: b"sysroot".to_vec(),
        },
        Mode::Initramfs => Step::MoveRoot(root),
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn joins() {
        assert_eq!(join(&[b"/", b"berth"]), b"/berth");
        assert_eq!(
            join(&[b"/sysroot", b"berth/deploy", b"a"]),
            b"/sysroot/berth/deploy/a"
        );
        assert_eq!(join(&[b"/tmp/x/", b"/var"]), b"/tmp/x/var");
        assert_eq!(join(&[b"/"]), b"/");
    }

    #[test]
    fn direct_mode_sequence() {
        let name = DeploymentName::new(b"v2").unwrap();
        let steps = assemble(Mode::Direct, b"/", &name);
        let r = "/berth/deploy/v2";
        assert_eq!(
            steps,
            vec![
                Step::MakePrivate(v("/")),
                Step::Bind(v(r), v(r)),
                Step::RemountReadOnly(v(r)),
                Step::Mkdir(v("/berth/state/var")),
                Step::Mkdir(v("/berth/state/etc/v2/upper")),
                Step::Mkdir(v("/berth/state/etc/v2/work")),
                Step::Bind(v("/berth/state/var"), v("/berth/deploy/v2/var")),
                Step::Overlay {
                    lower: v("/berth/deploy/v2/etc"),
                    upper: v("/berth/state/etc/v2/upper"),
                    work: v("/berth/state/etc/v2/work"),
                    target: v("/berth/deploy/v2/etc")
                },
                Step::Tmpfs(v("/berth/deploy/v2/run")),
                Step::Move(v("/dev"), v("/berth/deploy/v2/dev")),
                Step::Move(v("/proc"), v("/berth/deploy/v2/proc")),
                Step::Move(v("/sys"), v("/berth/deploy/v2/sys")),
                Step::PivotRoot {
                    new_root: v(r),
                    put_old: v("sysroot")
                },
            ]
        );
        let first_commit = steps.iter().position(Step::commits).unwrap();
        assert!(
            steps[..first_commit]
                .iter()
                .all(|s| !matches!(s, Step::Move(..)))
        );
    }

    #[test]
    fn initramfs_mode_sequence() {
        let name = DeploymentName::new(b"v2").unwrap();
        let steps = assemble(Mode::Initramfs, b"/sysroot", &name);
        let r = "/sysroot/berth/deploy/v2";
        assert_eq!(steps[1], Step::Bind(v(r), v(r)));
        assert_eq!(
            steps[9],
            Step::Bind(v("/sysroot"), v("/sysroot/berth/deploy/v2/sysroot"))
        );
        assert_eq!(
            steps[10],
            Step::Move(v("/dev"), v("/sysroot/berth/deploy/v2/dev"))
        );
        assert_eq!(steps.last(), Some(&Step::MoveRoot(v(r))));
        assert!(
            !steps.iter().any(|s| matches!(s, Step::PivotRoot { .. })),
            "pivot_root fails from an initramfs"
        );
    }
}
