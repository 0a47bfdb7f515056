//! Symlink targets that leave the root they live in.
//!
//! An absolute target (`/usr/lib/libc.so.6`) is legitimate in a root filesystem: once
//! the deployment is `/`, it resolves inside it. A relative target resolves from the
//! link's own directory, and the kernel follows every `..` in it, including past the
//! deployment's root when the deployment is reached from outside (through the sysroot,
//! as `berth`, a backup job or a recovery shell reach it). So a relative target may
//! climb at most as many directories as the link is deep, and may climb only at its
//! start: in `a/../..` the `..` after `a` leads wherever `a` leads if `a` is a symlink
//! too, so no reading of the text alone can bound it (a chain of links that are each
//! harmless as text can end outside). No Debian root filesystem we checked has either
//! form (14,000 links on a build host, none).

use core::fmt;

/// Why a symlink target leaves its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Its leading `..` climb above the root: `levels` from a directory `depth` deep.
    Climbs {
        /// How many leading `..` components the target has.
        levels: usize,
        /// How deep the link's directory is (0: the root).
        depth: usize,
    },
    /// It has `..` after a name, which another symlink could take anywhere.
    DotDotAfterName,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Climbs { levels, depth } => write!(
                f,
                "climbs {levels} up from depth {depth}, above the root (a relative target's '..' may climb only as deep as the link is)"
            ),
            Self::DotDotAfterName => f.write_str(
                "has '..' after a name, which another symlink could take anywhere (write the target without it)",
            ),
        }
    }
}

/// How many directories a target climbs from the link's directory before it goes
/// down: its leading `..` components (`.` and empty components are nothing). An
/// absolute target climbs none. A `..` after a name is an error.
pub fn climb(target: &[u8]) -> Result<usize, LinkError> {
    if target.first() == Some(&b'/') {
        return Ok(0);
    }
    let mut levels = 0;
    let mut named = false;
    for comp in target.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." if named => return Err(LinkError::DotDotAfterName),
            b".." => levels += 1,
            _ => named = true,
        }
    }
    Ok(levels)
}

/// Checks the target of a link whose directory is `depth` levels below the root (a
/// link in the root directory has depth 0, `usr/bin/x` has depth 2).
pub fn check(target: &[u8], depth: usize) -> Result<(), LinkError> {
    let levels = climb(target)?;
    if levels > depth {
        return Err(LinkError::Climbs { levels, depth });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&[u8], usize, Result<(), LinkError>)] = &[
            (b"/etc/shadow", 0, Ok(())),
            (b"/../../..", 0, Ok(())),
            (b"libc.so.6", 0, Ok(())),
            (b"./x", 0, Ok(())),
            (b"../lib/x", 1, Ok(())),
            (b"../../lib/x", 2, Ok(())),
            (b"..//..//.//lib", 2, Ok(())),
            (b"../..", 2, Ok(())),
            (
                b"..",
                0,
                Err(LinkError::Climbs {
                    levels: 1,
                    depth: 0,
                }),
            ),
            (
                b"../../../etc/shadow",
                2,
                Err(LinkError::Climbs {
                    levels: 3,
                    depth: 2,
                }),
            ),
            (
                b"./../x",
                0,
                Err(LinkError::Climbs {
                    levels: 1,
                    depth: 0,
                }),
            ),
            (b"a/../b", 5, Err(LinkError::DotDotAfterName)),
            (b"d1/d2/up/..", 0, Err(LinkError::DotDotAfterName)),
            (b"../a/..", 3, Err(LinkError::DotDotAfterName)),
            (b"...", 0, Ok(())),
            (b"..x/y", 0, Ok(())),
        ];
        for (target, depth, want) in cases {
            assert_eq!(
                check(target, *depth),
                *want,
                "{} at depth {depth}",
                target.escape_ascii()
            );
        }
    }

    #[test]
    fn messages_are_one_line() {
        for e in [
            LinkError::Climbs {
                levels: 3,
                depth: 2,
            },
            LinkError::DotDotAfterName,
        ] {
            let s = alloc::format!("{e}");
            assert!(!s.contains('\n') && s.starts_with(['c', 'h']), "{s}");
        }
    }
}
