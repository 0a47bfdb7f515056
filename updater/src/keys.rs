//! The public keys a deployment trusts: `*.pub` files in its read-only
//! `/usr/lib/berth/keys`, and in `/etc/berth/keys` exactly as its merged `/etc` shows
//! that directory. The merged `/etc` is an overlay of the deployment's own `etc/`
//! (lower) and its persistent layer `berth/state/etc/<name>/upper` (upper), so the
//! overlay's rules apply here too:
//!
//! - a name in the upper layer hides the same name below (an operator who replaces
//!   `berth.pub` trusts only the new key);
//! - a whiteout (a character device 0:0) hides the name below it (an operator who
//!   deletes `berth.pub` no longer trusts it);
//! - an opaque directory (xattr `trusted.overlay.opaque` = `y`) hides everything below
//!   it, and so does a whiteout of `berth` or `berth/keys` itself.
//!
//! Fail closed: a key directory that exists but cannot be read, a key file that
//! cannot be read or parsed, or anything but a regular file, a directory or a whiteout
//! where one is expected, is an error naming it, never a key silently skipped.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use format::record::DeploymentName;

use crate::{Device, UpdaterError};

/// What stands at a path of one layer.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Missing,
    Whiteout,
    File,
    /// A directory; whether it is opaque.
    Dir {
        opaque: bool,
    },
}

fn refuse(path: &Path, what: impl std::fmt::Display) -> UpdaterError {
    UpdaterError::State(format!(
        "{}: {what}; the trusted keys cannot be read",
        path.display()
    ))
}

fn opaque(path: &Path) -> Result<bool, UpdaterError> {
    let mut buf = [0u8; 8];
    match rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut buf) {
        Ok(n) => Ok(buf.get(..n) == Some(b"y")),
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(false),
        Err(e) => Err(refuse(
            path,
            format!("read xattr trusted.overlay.opaque: {e}"),
        )),
    }
}

fn entry(path: &Path) -> Result<Entry, UpdaterError> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Entry::Missing),
        Err(e) => return Err(refuse(path, e)),
    };
    let t = m.file_type();
    if t.is_char_device() && m.rdev() == 0 {
        Ok(Entry::Whiteout)
    } else if t.is_dir() {
        Ok(Entry::Dir {
            opaque: opaque(path)?,
        })
    } else if t.is_file() {
        Ok(Entry::File)
    } else {
        Err(refuse(
            path,
            "is neither a regular file, a directory nor an overlay whiteout",
        ))
    }
}

/// The `*.pub` names in `dir` (which exists and is a directory).
fn pub_names(dir: &Path) -> Result<Vec<String>, UpdaterError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| refuse(dir, e))? {
        let name = e.map_err(|e| refuse(dir, e))?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".pub") {
            out.push(name.into_owned());
        }
    }
    Ok(out)
}

/// Where each visible key file of `/etc/berth/keys` is, in the merged view of `lower`
/// (the deployment's `etc`) and `upper` (its persistent layer): name → path.
fn etc_keys(lower: &Path, upper: &Path) -> Result<BTreeMap<String, PathBuf>, UpdaterError> {
    // Walk `berth`, then `keys`, in the upper layer: what it shows decides whether the
    // lower directory is seen at all.
    let mut lower_seen = true;
    let mut upper_dir = None;
    let (ub, ubk) = (upper.join("berth"), upper.join("berth/keys"));
    match entry(&ub)? {
        Entry::Missing => {}
        Entry::Whiteout | Entry::File => lower_seen = false,
        Entry::Dir { opaque } => {
            lower_seen &= !opaque;
            match entry(&ubk)? {
                Entry::Missing => {}
                Entry::Whiteout | Entry::File => lower_seen = false,
                Entry::Dir { opaque } => {
                    lower_seen &= !opaque;
                    upper_dir = Some(ubk);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut hidden = Vec::new();
    if let Some(dir) = &upper_dir {
        for name in pub_names(dir)? {
            let p = dir.join(&name);
            match entry(&p)? {
                Entry::File => {
                    out.insert(name, p);
                }
                Entry::Whiteout => hidden.push(name),
                Entry::Missing | Entry::Dir { .. } => {
                    return Err(refuse(&p, "is not a key file"));
                }
            }
        }
    }
    let lk = lower.join("berth/keys");
    if lower_seen && entry(&lower.join("berth"))? != Entry::Missing {
        match entry(&lk)? {
            Entry::Missing => {}
            Entry::Dir { .. } => {
                for name in pub_names(&lk)? {
                    if out.contains_key(&name) || hidden.contains(&name) {
                        continue;
                    }
                    let p = lk.join(&name);
                    match entry(&p)? {
                        Entry::File => {
                            out.insert(name, p);
                        }
                        _ => return Err(refuse(&p, "is not a key file")),
                    }
                }
            }
            _ => return Err(refuse(&lk, "is not a directory")),
        }
    }
    Ok(out)
}

/// The keys deployment `name` of the sysroot at `sysroot` trusts, with the files they
/// came from; an error if there are none.
pub(crate) fn trusted(
    sysroot: &Path,
    name: &DeploymentName,
) -> Result<Vec<VerifyingKey>, UpdaterError> {
    let deploy = sysroot.join("berth/deploy").join(name.as_str());
    let usr = deploy.join("usr/lib/berth/keys");
    let mut files: Vec<PathBuf> = match entry(&usr)? {
        Entry::Missing => Vec::new(),
        Entry::Dir { .. } => pub_names(&usr)?.into_iter().map(|n| usr.join(n)).collect(),
        _ => return Err(refuse(&usr, "is not a directory")),
    };
    let upper = sysroot
        .join(crate::ETC_DIR)
        .join(name.as_str())
        .join("upper");
    files.extend(etc_keys(&deploy.join("etc"), &upper)?.into_values());
    let mut keys = Vec::new();
    for p in &files {
        let text = std::fs::read(p).map_err(|e| refuse(p, e))?;
        keys.push(format::key::parse_public(&text).map_err(|e| refuse(p, e))?);
    }
    if keys.is_empty() {
        return Err(UpdaterError::State(format!(
            "no trusted keys: deployment {} has no *.pub key in /usr/lib/berth/keys or its /etc/berth/keys ({} and {})",
            name.as_str(),
            usr.display(),
            upper.join("berth/keys").display()
        )));
    }
    Ok(keys)
}

impl Device {
    /// The keys the device trusts, and the deployment they come from: the committed
    /// default's (the record's), never a trial's, so a release that was never committed
    /// cannot change who may sign updates and channel pointers (docs/KEYS.md). Only
    /// without a valid record (a repair) are the running deployment's keys used.
    pub(crate) fn trusted_keys(
        &self,
        running: &DeploymentName,
    ) -> Result<(DeploymentName, Vec<ed25519_dalek::VerifyingKey>), UpdaterError> {
        let who = self
            .sysroot
            .read_record()
            .0
            .and_then(|(r, _)| r.default)
            .unwrap_or(*running);
        Ok((who, trusted(&self.path, &who)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whiteout(p: &Path) -> bool {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .is_ok()
    }

    /// The merged view, by name: each case lays out lower and upper, then lists the
    /// names seen and which layer each comes from.
    #[test]
    fn merged_etc_follows_the_overlay() {
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
        let reset = || {
            let _ = std::fs::remove_dir_all(&lower);
            let _ = std::fs::remove_dir_all(&upper);
            std::fs::create_dir_all(lower.join("berth/keys")).unwrap();
            std::fs::create_dir_all(&upper).unwrap();
            std::fs::write(lower.join("berth/keys/a.pub"), "lower").unwrap();
            std::fs::write(lower.join("berth/keys/b.pub"), "lower").unwrap();
            std::fs::write(lower.join("berth/keys/notes.txt"), "x").unwrap();
        };
        let seen = || -> Vec<(String, &'static str)> {
            etc_keys(&lower, &upper)
                .unwrap()
                .into_iter()
                .map(|(n, p)| {
                    (
                        n,
                        if p.starts_with(&upper) {
                            "upper"
                        } else {
                            "lower"
                        },
                    )
                })
                .collect()
        };
        let own = |v: &[(&str, &'static str)]| -> Vec<(String, &'static str)> {
            v.iter().map(|(n, l)| ((*n).to_owned(), *l)).collect()
        };
        reset();
        assert_eq!(seen(), own(&[("a.pub", "lower"), ("b.pub", "lower")]));
        // A replaced key: the upper file wins.
        std::fs::create_dir_all(upper.join("berth/keys")).unwrap();
        std::fs::write(upper.join("berth/keys/a.pub"), "upper").unwrap();
        std::fs::write(upper.join("berth/keys/c.pub"), "upper").unwrap();
        assert_eq!(
            seen(),
            own(&[("a.pub", "upper"), ("b.pub", "lower"), ("c.pub", "upper")])
        );
        // Whiteouts need root (mknod); the rest of the cases hold without it.
        if !whiteout(&upper.join("berth/keys/b.pub")) {
            eprintln!("skipping whiteout cases: mknod needs root");
            return;
        }
        assert_eq!(seen(), own(&[("a.pub", "upper"), ("c.pub", "upper")]));
        // A whiteout of the whole directory, or of berth/.
        reset();
        std::fs::create_dir_all(upper.join("berth")).unwrap();
        assert!(whiteout(&upper.join("berth/keys")));
        assert_eq!(seen(), own(&[]));
        reset();
        assert!(whiteout(&upper.join("berth")));
        assert_eq!(seen(), own(&[]));
        // An opaque directory hides the lower one.
        reset();
        std::fs::create_dir_all(upper.join("berth/keys")).unwrap();
        std::fs::write(upper.join("berth/keys/c.pub"), "upper").unwrap();
        rustix::fs::setxattr(
            upper.join("berth/keys").as_path(),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        assert_eq!(seen(), own(&[("c.pub", "upper")]));
        // A FIFO where a key should be is an error that names it.
        reset();
        std::fs::create_dir_all(upper.join("berth/keys")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("berth/keys/d.pub"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = etc_keys(&lower, &upper).unwrap_err().to_string();
        assert!(e.contains("d.pub"), "{e}");
    }
}
