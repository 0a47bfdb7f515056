//! systemd-boot's Boot Loader Specification entries as Berth writes them on an ESP
//! (`docs/FORMAT.md`, "Loader entries (systemd-boot)"): their file names, their text, and
//! the order systemd-boot boots them in.
//!
//! ```text
//! loader/entries/berth-<gen>-<deployment>.conf           an entry
//! loader/entries/berth-<gen>-<deployment>+<left>.conf    a trial systemd-boot counts
//! loader/entries/berth-<gen>-<deployment>+<left>-<done>.conf   (as it renames it)
//! ```
//!
//! Every entry has `sort-key berth` and `version <gen>`: systemd-boot orders entries
//! with a sort key by version, newest first, after moving those with no tries left to
//! the end, and boots the first. So the order is never rewritten in place: a newer
//! entry is written beside the old ones (a new name, a new generation), and the old
//! ones are deleted once the boot record agrees.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::fmt::Write as _;

use crate::record::DeploymentName;

/// The entries' directory on the ESP.
pub const ENTRIES_DIR: &str = "loader/entries";
/// Every Berth entry's `sort-key`.
pub const SORT_KEY: &str = "berth";
/// The prefix of every Berth entry's file name.
pub const PREFIX: &str = "berth-";
/// Longest entry file Berth reads back.
pub const ENTRY_MAX: usize = 8192;

/// An entry's file name, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryName {
    /// Its generation: a newer entry has a larger one (its `version`).
    pub generation: u64,
    /// The deployment it boots (`berth.entry=` on its command line).
    pub deployment: DeploymentName,
    /// systemd-boot's counter: tries left, and tries done once it has booted it.
    pub counter: Option<(u32, Option<u32>)>,
}

impl EntryName {
    /// The file name (in [`ENTRIES_DIR`]).
    pub fn file_name(&self) -> String {
        let base = format!("{PREFIX}{}-{}", self.generation, self.deployment.as_str());
        match self.counter {
            None => format!("{base}.conf"),
            Some((left, None)) => format!("{base}+{left}.conf"),
            Some((left, Some(done))) => format!("{base}+{left}-{done}.conf"),
        }
    }

    /// Parses a file name written by [`EntryName::file_name`] (or renamed by
    /// systemd-boot's counting); `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".conf")?.strip_prefix(PREFIX)?;
        let (generation, rest) = stem.split_once('-')?;
        let generation = parse_decimal(generation)?;
        let (deployment, counter) = match rest.split_once('+') {
            None => (rest, None),
            Some((d, c)) => {
                let counter = match c.split_once('-') {
                    None => (parse_decimal(c)?, None),
                    Some((l, d)) => (parse_decimal(l)?, Some(parse_decimal(d)?)),
                };
                (
                    d,
                    Some((
                        u32::try_from(counter.0).ok()?,
                        match counter.1 {
                            Some(x) => Some(u32::try_from(x).ok()?),
                            None => None,
                        },
                    )),
                )
            }
        };
        Some(Self {
            generation,
            deployment: DeploymentName::new(deployment.as_bytes()).ok()?,
            counter,
        })
    }

    /// The tries systemd-boot has left for this entry (`None`: it does not count it).
    pub fn tries_left(&self) -> Option<u32> {
        self.counter.map(|c| c.0)
    }

    /// This entry without its counter: the name `systemd-bless-boot` gives a good one.
    #[must_use]
    pub fn blessed(&self) -> Self {
        Self {
            counter: None,
            ..*self
        }
    }
}

/// A decimal number without leading zeros (other than `0` itself).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// systemd-boot's order (252 and later) among Berth's entries, first to boot first:
/// entries with no tries left last; then the newer generation (the `version`, compared
/// downwards); then the file name downwards; then more tries left, then fewer done.
pub fn boot_order(a: &EntryName, b: &EntryName) -> Ordering {
    let spent = |e: &EntryName| e.tries_left() == Some(0);
    spent(a)
        .cmp(&spent(b))
        .then(b.generation.cmp(&a.generation))
        .then_with(|| b.deployment.as_bytes().cmp(a.deployment.as_bytes()))
        .then_with(|| match (a.counter, b.counter) {
            (Some((la, da)), Some((lb, db))) => {
                lb.cmp(&la).then(da.unwrap_or(0).cmp(&db.unwrap_or(0)))
            }
            _ => Ordering::Equal,
        })
}

/// The entry systemd-boot boots first among `entries`, if any.
pub fn first(entries: &[EntryName]) -> Option<&EntryName> {
    entries.iter().min_by(|a, b| boot_order(a, b))
}

/// What an entry boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryText<'a> {
    /// The release version, for the menu's title.
    pub release: &'a str,
    /// The deployment.
    pub deployment: &'a str,
    /// Its generation ([`EntryName::generation`]).
    pub generation: u64,
    /// The kernel set's directory on the ESP, without a leading `/` (`berth/<id16>`).
    pub set_dir: &'a str,
    /// A device tree in the set's `dtb/`, if the board names one.
    pub devicetree: Option<&'a str>,
    /// The kernel command line, without `berth.entry=` (which is added).
    pub options: &'a str,
}

impl EntryText<'_> {
    /// The entry's text (Boot Loader Specification Type #1).
    pub fn render(&self) -> String {
        let mut s = format!(
            "title Berth {} ({})\nversion {}\nsort-key {SORT_KEY}\nlinux /{}/{}\ninitrd /{}/{}\n",
            self.release,
            self.deployment,
            self.generation,
            self.set_dir,
            crate::kernelset::KERNEL,
            self.set_dir,
            crate::kernelset::INITRAMFS,
        );
        if let Some(dt) = self.devicetree {
            let _ = writeln!(
                s,
                "devicetree /{}/{}/{dt}",
                self.set_dir,
                crate::kernelset::DTB_DIR
            );
        }
        let _ = writeln!(
            s,
            "options {} berth.entry={}",
            self.options, self.deployment
        );
        s
    }
}

/// The kernel set directory (`berth/<id16>`) an entry's text boots, from its `linux`
/// line; `None` if it names something else.
pub fn set_dir_of(text: &str) -> Option<&str> {
    let path = text.lines().find_map(|l| l.strip_prefix("linux /"))?;
    let dir = path.trim_end().strip_suffix(crate::kernelset::KERNEL)?;
    let dir = dir.strip_suffix('/')?;
    let id = dir.strip_prefix("berth/")?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(dir)
}

/// The names of the entries among `names` that Berth wrote, parsed, in boot order.
pub fn parse_dir<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<EntryName> {
    let mut v: Vec<EntryName> = names.into_iter().filter_map(EntryName::parse).collect();
    v.sort_by(boot_order);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> DeploymentName {
        DeploymentName::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn names_round_trip_through_systemd_boot_renames() {
        for (file, want) in [
            ("berth-3-v2.conf", Some((3, "v2", None))),
            (
                "berth-4-0123456789abcdef+3.conf",
                Some((4, "0123456789abcdef", Some((3, None)))),
            ),
            ("berth-4-a-b+2-1.conf", Some((4, "a-b", Some((2, Some(1)))))),
            ("berth-4-a+0-3.conf", Some((4, "a", Some((0, Some(3)))))),
            ("berth-04-a.conf", None),
            ("berth--a.conf", None),
            ("berth-4-.conf", None),
            ("berth-4-a.conf.tmp", None),
            ("other-4-a.conf", None),
            ("berth-4-a+x.conf", None),
            ("berth-4-.a.conf", None),
        ] {
            let got = EntryName::parse(file);
            assert_eq!(
                got.map(|e| (e.generation, e.deployment, e.counter)),
                want.map(|(g, d, c)| (g, n(d), c)),
                "{file}"
            );
            if let Some(e) = got {
                assert_eq!(e.file_name(), file);
            }
        }
    }

    #[test]
    fn the_newest_entry_with_tries_boots_first() {
        let e = |g, d: &str, c| EntryName {
            generation: g,
            deployment: n(d),
            counter: c,
        };
        let default = e(2, "a", None);
        let previous = e(1, "p", None);
        let trial = e(3, "t", Some((2, Some(1))));
        assert_eq!(first(&[previous, default, trial]), Some(&trial));
        // Its tries spent, it sorts last and the default boots.
        let spent = e(3, "t", Some((0, Some(3))));
        assert_eq!(first(&[spent, previous, default]), Some(&default));
        let order = parse_dir([
            "berth-1-p.conf",
            "berth-3-t+0-3.conf",
            "berth-2-a.conf",
            "loader.conf",
        ]);
        assert_eq!(order, [default, previous, spent]);
        // Generations compare as numbers, not text.
        assert_eq!(
            first(&[e(9, "x", None), e(10, "y", None)])
                .unwrap()
                .generation,
            10
        );
    }

    #[test]
    fn an_entry_names_its_set_and_its_deployment() {
        let t = EntryText {
            release: "1.2",
            deployment: "0123456789abcdef",
            generation: 7,
            set_dir: "berth/fedcba9876543210",
            devicetree: None,
            options: "console=ttyS0 berth.root=PARTUUID=x",
        }
        .render();
        assert_eq!(
            t,
            "title Berth 1.2 (0123456789abcdef)\nversion 7\nsort-key berth\n\
             linux /berth/fedcba9876543210/vmlinuz\ninitrd /berth/fedcba9876543210/initramfs.img\n\
             options console=ttyS0 berth.root=PARTUUID=x berth.entry=0123456789abcdef\n"
        );
        assert_eq!(set_dir_of(&t), Some("berth/fedcba9876543210"));
        assert_eq!(set_dir_of("linux /EFI/other/vmlinuz\n"), None);
    }
}
