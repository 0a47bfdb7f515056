//! What a block device is before `berth-image flash` writes to it: which disk it
//! belongs to, whether that disk is removable, and whether it or any of its partitions
//! is in use (mounted, swap, held by device-mapper or md).
//!
//! Everything is read from sysfs (`/sys/dev/block/MAJ:MIN`, which links to the device's
//! directory; a partition's directory holds a `partition` file and sits inside its
//! disk's) and procfs (`/proc/self/mountinfo`, `/proc/swaps`), under roots a test can
//! point elsewhere ([`Host`]). The parsers are pure.
//!
//! Removable means: the disk's `removable` attribute is 1 (USB sticks and card readers
//! that say so), or the disk hangs off a USB bus (USB disks that do not), or it is an SD
//! card on an MMC host (the kernel never marks MMC disks removable; eMMC, soldered on
//! the board, stays fixed). A loop device counts as fixed: its backing file can be
//! anything, a virtual machine's disk included, so writing it takes `--force` like any
//! fixed disk. Non-goal: telling a system disk from a data disk; a fixed disk always
//! needs `--force`, and a disk with anything mounted is refused even then.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where sysfs and procfs are: the real ones, or a test's fake trees.
#[derive(Debug, Clone)]
pub struct Host {
    pub sys: PathBuf,
    pub mountinfo: PathBuf,
    pub swaps: PathBuf,
}

impl Host {
    pub fn real() -> Self {
        Self {
            sys: "/sys".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            swaps: "/proc/swaps".into(),
        }
    }
}

/// Whether a disk may be written without `--force`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removable {
    Yes(&'static str),
    No(&'static str),
}

/// A block device as `flash` sees it.
#[derive(Debug, Clone)]
pub struct BlockDevice {
    /// The kernel's name (`sdb`, `sdb1`, `loop0`, `mmcblk0`).
    pub name: String,
    /// The whole disk it is on (itself, unless it is a partition).
    pub disk: String,
    pub removable: Removable,
    /// Why it must not be written now: "sdb1 is mounted at /media/x", "sdb2 is swap",
    /// "sdb1 is held by dm-0". Empty when free.
    pub in_use: Vec<String>,
}

/// One line of `/proc/self/mountinfo`: the filesystem's device number and source, and
/// where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: (u32, u32),
    pub source: String,
    pub point: String,
}

/// Parses `/proc/self/mountinfo` (proc(5)): field 3 is MAJ:MIN, field 5 the mount point,
/// the source follows the filesystem type after " - ". Malformed lines are skipped
/// (the kernel writes this file; nothing here is untrusted).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        let (Some(dev), Some(point), Some(source)) = (f.get(2), f.get(4), f.get(dash + 2)) else {
            continue;
        };
        let Some((maj, min)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(maj), Ok(min)) = (maj.parse(), min.parse()) else {
            continue;
        };
        out.push(Mount {
            dev: (maj, min),
            source: unescape(source),
            point: unescape(point),
        });
    }
    out
}

/// Undoes the kernel's octal escapes in mountinfo (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The devices in `/proc/swaps` (the first column, after the header line).
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(unescape)
        .collect()
}

/// A sysfs attribute, trimmed; `None` if absent.
fn attr(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Why a disk (its sysfs directory, canonical) counts as removable or not.
pub fn removable(disk_dir: &Path, name: &str) -> Removable {
    if name.starts_with("loop") {
        return Removable::No("a loop device (its backing file may be anything)");
    }
    if attr(disk_dir, "removable").as_deref() == Some("1") {
        return Removable::Yes("removable media");
    }
    if disk_dir
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with("usb"))
    {
        return Removable::Yes("a USB disk");
    }
    if attr(&disk_dir.join("device"), "type").as_deref() == Some("SD") {
        return Removable::Yes("an SD card");
    }
    Removable::No("a fixed disk (its removable attribute is 0)")
}

/// Inspects the block device with number `dev` (`st_rdev`), shown to the user as `path`.
pub fn inspect(host: &Host, dev: (u32, u32), path: &Path) -> Result<BlockDevice> {
    let link = host.sys.join(format!("dev/block/{}:{}", dev.0, dev.1));
    let dir = std::fs::canonicalize(&link).with_context(|| {
        format!(
            "{}: block device {}:{} is not in {}",
            path.display(),
            dev.0,
            dev.1,
            link.display()
        )
    })?;
    let name = file_name(&dir);
    let disk_dir = if dir.join("partition").exists() {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir.clone())
    } else {
        dir.clone()
    };
    let disk = file_name(&disk_dir);
    // The disk and every partition on it: writing the disk overwrites them all, and
    // writing a partition must not happen under a filesystem mounted from it either.
    let mut members = vec![(disk.clone(), disk_dir.clone())];
    if let Ok(entries) = std::fs::read_dir(&disk_dir) {
        let mut parts: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("partition").exists())
            .map(|p| (file_name(&p), p))
            .collect();
        parts.sort();
        members.extend(parts);
    }
    if dir != disk_dir {
        // A partition: only it and its disk as a whole matter (the disk's other
        // partitions are not written).
        members.retain(|(_, p)| *p == dir || *p == disk_dir);
    }
    let mounts = parse_mountinfo(
        &std::fs::read_to_string(&host.mountinfo)
            .with_context(|| format!("{}: read", host.mountinfo.display()))?,
    );
    // No /proc/swaps means no swap support in the kernel, hence no swap in use.
    let swaps = parse_swaps(&std::fs::read_to_string(&host.swaps).unwrap_or_default());
    let mut in_use = Vec::new();
    for (member, mdir) in &members {
        let mdev = attr(mdir, "dev").and_then(|d| parse_dev(&d));
        let dev_path = format!("/dev/{member}");
        for m in &mounts {
            // By device number; and by source, for filesystems (btrfs) whose mountinfo
            // number is an anonymous one.
            if Some(m.dev) == mdev || m.source == dev_path {
                let what = format!("{member} is mounted at {}", m.point);
                if !in_use.contains(&what) {
                    in_use.push(what);
                }
            }
        }
        if swaps.contains(&dev_path) {
            in_use.push(format!("{member} is in use as swap"));
        }
        if let Ok(holders) = std::fs::read_dir(mdir.join("holders")) {
            let mut names: Vec<String> = holders
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for h in names {
                in_use.push(format!("{member} is held by {h}"));
            }
        }
    }
    Ok(BlockDevice {
        name,
        removable: removable(&disk_dir, &disk),
        disk,
        in_use,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:33 / /home rw shared:2 - btrfs /dev/sdb2 rw,subvol=/home
36 22 8:17 / /media/my\\040stick rw,nosuid - vfat /dev/sdb1 rw
37 22 0:5 / /dev rw - devtmpfs udev rw
garbage
38 22 x:y / /x rw - ext4 /dev/x rw
";
        let m = parse_mountinfo(text);
        let got: Vec<((u32, u32), &str, &str)> = m
            .iter()
            .map(|m| (m.dev, m.source.as_str(), m.point.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ((8, 1), "/dev/sda1", "/"),
                ((0, 33), "/dev/sdb2", "/home"),
                ((8, 17), "/dev/sdb1", "/media/my stick"),
                ((0, 5), "udev", "/dev"),
            ]
        );
        assert_eq!(
            parse_swaps("Filename Type Size Used Priority\n/dev/sda3 partition 1 0 -2\n"),
            ["/dev/sda3"]
        );
        assert_eq!(parse_swaps(""), Vec::<String>::new());
    }

    /// A fake sysfs: `devices/<bus path>/block/<disk>/<parts>` and `dev/block` links.
    struct FakeSys {
        dir: tempfile::TempDir,
    }

    impl FakeSys {
        fn new() -> Self {
            let s = Self {
                dir: tempfile::tempdir().unwrap(),
            };
            std::fs::create_dir_all(s.dir.path().join("sys/dev/block")).unwrap();
            std::fs::write(s.dir.path().join("swaps"), "Filename Type\n").unwrap();
            std::fs::write(s.dir.path().join("mountinfo"), "").unwrap();
            s
        }

        fn host(&self) -> Host {
            Host {
                sys: self.dir.path().join("sys"),
                mountinfo: self.dir.path().join("mountinfo"),
                swaps: self.dir.path().join("swaps"),
            }
        }

        /// A disk at `bus` with `removable`, and partitions `parts` (minor + 1, …).
        fn disk(&self, bus: &str, name: &str, dev: (u32, u32), removable: &str, parts: &[&str]) {
            let d = self
                .dir
                .path()
                .join("sys/devices")
                .join(bus)
                .join("block")
                .join(name);
            std::fs::create_dir_all(d.join("holders")).unwrap();
            std::fs::write(d.join("removable"), format!("{removable}\n")).unwrap();
            std::fs::write(d.join("dev"), format!("{}:{}\n", dev.0, dev.1)).unwrap();
            self.link(&d, dev);
            for (i, p) in parts.iter().enumerate() {
                let pd = d.join(p);
                std::fs::create_dir_all(pd.join("holders")).unwrap();
                std::fs::write(pd.join("partition"), format!("{}\n", i + 1)).unwrap();
                let pdev = (dev.0, dev.1 + 1 + u32::try_from(i).unwrap());
                std::fs::write(pd.join("dev"), format!("{}:{}\n", pdev.0, pdev.1)).unwrap();
                self.link(&pd, pdev);
            }
        }

        fn link(&self, target: &Path, dev: (u32, u32)) {
            std::os::unix::fs::symlink(
                target,
                self.dir
                    .path()
                    .join(format!("sys/dev/block/{}:{}", dev.0, dev.1)),
            )
            .unwrap();
        }
    }

    /// Device number, its name, its disk's, removability, what holds it.
    type Case<'a> = ((u32, u32), &'a str, &'a str, Removable, &'a [&'a str]);

    #[test]
    #[allow(clippy::too_many_lines)] // the fake sysfs, then one table
    fn removable_disks_and_what_holds_them() {
        let f = FakeSys::new();
        f.disk(
            "pci0/usb2/2-1/host6/target6:0:0/6:0:0:0",
            "sdb",
            (8, 16),
            "1",
            &["sdb1", "sdb2"],
        );
        f.disk(
            "pci0/ata1/host0/target0:0:0/0:0:0:0",
            "sda",
            (8, 0),
            "0",
            &["sda1"],
        );
        f.disk(
            "pci0/usb3/3-1/host7/target7:0:0/7:0:0:0",
            "sdc",
            (8, 32),
            "0",
            &[],
        );
        f.disk(
            "platform/mmc0/mmc0:0001",
            "mmcblk0",
            (179, 0),
            "0",
            &["mmcblk0p1"],
        );
        f.disk("platform/mmc1/mmc1:aaaa", "mmcblk1", (179, 8), "0", &[]);
        f.disk("virtual", "loop3", (7, 3), "0", &[]);
        let root = f.dir.path().join("sys/devices");
        std::fs::write(root.join("platform/mmc0/mmc0:0001/type"), "MMC\n").unwrap();
        std::fs::write(root.join("platform/mmc1/mmc1:aaaa/type"), "SD\n").unwrap();
        for name in ["mmcblk0", "mmcblk1"] {
            let bus = if name == "mmcblk0" {
                "mmc0/mmc0:0001"
            } else {
                "mmc1/mmc1:aaaa"
            };
            let d = root.join(format!("platform/{bus}/block/{name}"));
            std::os::unix::fs::symlink(d.parent().unwrap().parent().unwrap(), d.join("device"))
                .unwrap();
        }
        std::fs::write(
            f.dir.path().join("mountinfo"),
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 8:18 / /media/x rw - vfat /dev/sdb2 rw\n",
        )
        .unwrap();
        std::fs::write(
            f.dir.path().join("swaps"),
            "Filename\n/dev/sdb1 partition\n",
        )
        .unwrap();
        std::fs::create_dir_all(
            root.join("platform/mmc0/mmc0:0001/block/mmcblk0/mmcblk0p1/holders/dm-0"),
        )
        .unwrap();
        let host = f.host();
        let cases: &[Case<'_>] = &[
            (
                (8, 16),
                "sdb",
                "sdb",
                Removable::Yes("removable media"),
                &["sdb1 is in use as swap", "sdb2 is mounted at /media/x"],
            ),
            (
                (8, 17),
                "sdb1",
                "sdb",
                Removable::Yes("removable media"),
                &["sdb1 is in use as swap"],
            ),
            (
                (8, 0),
                "sda",
                "sda",
                Removable::No("a fixed disk (its removable attribute is 0)"),
                &["sda1 is mounted at /"],
            ),
            ((8, 32), "sdc", "sdc", Removable::Yes("a USB disk"), &[]),
            (
                (179, 0),
                "mmcblk0",
                "mmcblk0",
                Removable::No("a fixed disk (its removable attribute is 0)"),
                &["mmcblk0p1 is held by dm-0"],
            ),
            (
                (179, 8),
                "mmcblk1",
                "mmcblk1",
                Removable::Yes("an SD card"),
                &[],
            ),
            (
                (7, 3),
                "loop3",
                "loop3",
                Removable::No("a loop device (its backing file may be anything)"),
                &[],
            ),
        ];
        for (dev, name, disk, removable, in_use) in cases {
            let b = inspect(&host, *dev, Path::new("/dev/x")).unwrap();
            assert_eq!(
                (b.name.as_str(), b.disk.as_str()),
                (*name, *disk),
                "{dev:?}"
            );
            assert_eq!(&b.removable, removable, "{name}");
            assert_eq!(&b.in_use, in_use, "{name}");
        }
        let err = format!(
            "{:#}",
            inspect(&host, (9, 9), Path::new("/dev/odd")).unwrap_err()
        );
        assert!(
            err.starts_with("/dev/odd: block device 9:9 is not in "),
            "{err}"
        );
    }
}
