//! The boot loader's state: which boot entry U-Boot's `boot.scr` boots, kept as two
//! checksummed copies on the FAT boot partition (`docs/FORMAT.md`, "Loader state").
//!
//! Each copy is a U-Boot binary environment ([`crate::uboot_env`]) of exactly
//! [`STATE_LEN`] bytes, so the script reads it with `env import -c` and writes it with
//! `env export -c`, and Berth reads and writes the same bytes on Linux. The variables:
//!
//! | key | value |
//! |---|---|
//! | `berth_default` | the entry to boot (required) |
//! | `berth_gen` | generation, lowercase hex without `0x` or leading zeros, >= 1 (required) |
//! | `berth_previous` | the entry booted when the default cannot be loaded (optional) |
//! | `berth_trial` | an entry being tried (optional) |
//! | `berth_tries` | the trial's boots left, lowercase hex, 0..=ff (iff `berth_trial`) |
//! | `berth_version` | `1` (required) |
//!
//! Numbers are hexadecimal because U-Boot's `setexpr` prints, and `itest` reads, hex.
//! The valid copy with the higher generation wins (A on a tie); a write goes to the
//! other copy with the winner's generation + 1. Entry names follow
//! [`DeploymentName`]'s rules (they are directory names on the FAT partition).

use alloc::vec::Vec;

use crate::FormatError;
use crate::record::DeploymentName;
use crate::uboot_env;

/// Length of one state copy. Fixed, because the script overwrites the pre-allocated
/// file whole and never creates one (U-Boot's FAT writer creating files failed in the
/// field: balena-raspberrypi#380). Changing it breaks the format.
pub const STATE_LEN: usize = 4096;

/// The one format version; the script ignores a copy with any other.
pub const VERSION: &[u8] = b"1";

const K_DEFAULT: &[u8] = b"berth_default";
const K_GEN: &[u8] = b"berth_gen";
const K_PREVIOUS: &[u8] = b"berth_previous";
const K_TRIAL: &[u8] = b"berth_trial";
const K_TRIES: &[u8] = b"berth_tries";
const K_VERSION: &[u8] = b"berth_version";

/// A trial entry and how many more boots the loader gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial {
    /// The entry being tried.
    pub entry: DeploymentName,
    /// Boots left; the loader takes one before each boot of the trial, and boots the
    /// default once it is 0.
    pub tries_left: u8,
}

/// What one copy of the loader state says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderState {
    /// Increases by one on every write of either copy; at least 1.
    pub generation: u64,
    /// The entry known to be good.
    pub default: DeploymentName,
    /// The entry before `default`, booted if the default's files cannot be loaded.
    pub previous: Option<DeploymentName>,
    /// A trial, if one is under way (or was, with 0 tries left).
    pub trial: Option<Trial>,
}

impl LoaderState {
    /// The canonical encoding of one copy: exactly [`STATE_LEN`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        if self.generation == 0 {
            return Err(FormatError::Invalid {
                what: "loader state generation",
                value: 0,
            });
        }
        let generation = hex(self.generation);
        let tries = self.trial.map(|t| hex(u64::from(t.tries_left)));
        // Sorted by key, as the environment block needs.
        let mut vars: Vec<(&[u8], &[u8])> = Vec::with_capacity(6);
        vars.push((K_DEFAULT, self.default.as_bytes()));
        vars.push((K_GEN, &generation));
        if let Some(p) = &self.previous {
            vars.push((K_PREVIOUS, p.as_bytes()));
        }
        if let (Some(t), Some(n)) = (&self.trial, &tries) {
            vars.push((K_TRIAL, t.entry.as_bytes()));
            vars.push((K_TRIES, n));
        }
        vars.push((K_VERSION, VERSION));
        uboot_env::encode(&vars, STATE_LEN)
    }

    /// Parses one copy. A copy that is not exactly [`STATE_LEN`] bytes, fails its CRC,
    /// has another version, an unknown key, a bad name or number, or tries without a
    /// trial, is an error: the other copy is then used.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let what = "loader state";
        if bytes.len() != STATE_LEN {
            return Err(if bytes.len() < STATE_LEN {
                FormatError::Truncated { what }
            } else {
                FormatError::TrailingBytes {
                    what,
                    extra: bytes.len() - STATE_LEN,
                }
            });
        }
        let (mut default, mut generation, mut previous, mut trial, mut tries, mut version) =
            (None, None, None, None, None, None);
        for (key, value) in uboot_env::decode(bytes)? {
            let slot = match key {
                K_DEFAULT => &mut default,
                K_GEN => &mut generation,
                K_PREVIOUS => &mut previous,
                K_TRIAL => &mut trial,
                K_TRIES => &mut tries,
                K_VERSION => &mut version,
                _ => {
                    return Err(FormatError::BadText {
                        what,
                        reason: "unknown variable",
                    });
                }
            };
            // Keys are unique: the environment decoder refuses duplicates.
            *slot = Some(value);
        }
        if version != Some(VERSION) {
            return Err(FormatError::UnsupportedVersion { what, version: 0 });
        }
        let missing = |what| FormatError::Invalid { what, value: 0 };
        let generation = parse_hex(generation.ok_or(missing("loader state berth_gen"))?)?;
        if generation == 0 {
            return Err(missing("loader state generation"));
        }
        let default = DeploymentName::new(default.ok_or(missing("loader state berth_default"))?)?;
        let previous = previous.map(DeploymentName::new).transpose()?;
        let trial = match (trial, tries) {
            (None, None) => None,
            (Some(entry), Some(n)) => Some(Trial {
                entry: DeploymentName::new(entry)?,
                tries_left: u8::try_from(parse_hex(n)?).map_err(|_| FormatError::TooLarge {
                    what: "loader state berth_tries",
                    len: u64::MAX,
                    limit: 0xff,
                })?,
            }),
            _ => {
                return Err(missing(
                    "loader state trial without tries, or tries without trial",
                ));
            }
        };
        Ok(Self {
            generation,
            default,
            previous,
            trial,
        })
    }

    /// The state to write next, starting from this one (the winner): one generation
    /// newer. Does not write anything.
    #[must_use]
    pub fn successor(&self) -> Self {
        Self {
            generation: self.generation.saturating_add(1),
            ..*self
        }
    }
}

/// One of the two copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateCopy {
    /// `berth/a/state`.
    A,
    /// `berth/b/state`.
    B,
}

impl StateCopy {
    /// The other copy: where a write goes when this one won.
    #[must_use]
    pub const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    /// The copy's path on the FAT partition. Each copy has a directory of its own:
    /// overwriting a FAT file rewrites the sector holding its directory entry, and a
    /// torn write of that sector must not reach the other copy's entry.
    pub const fn path(self) -> &'static str {
        match self {
            Self::A => "berth/a/state",
            Self::B => "berth/b/state",
        }
    }
}

/// Which copy wins: the valid one with the higher generation, A on a tie; `None` when
/// neither is valid. The same rule as the script's.
pub fn winner(
    a: Option<&LoaderState>,
    b: Option<&LoaderState>,
) -> Option<(StateCopy, LoaderState)> {
    match (a, b) {
        (Some(a), Some(b)) if b.generation > a.generation => Some((StateCopy::B, *b)),
        (Some(a), _) => Some((StateCopy::A, *a)),
        (None, Some(b)) => Some((StateCopy::B, *b)),
        (None, None) => None,
    }
}

/// `n` in lowercase hex, no prefix, no leading zeros: what U-Boot's `setexpr` prints.
fn hex(mut n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    loop {
        // n & 0xf < 16.
        out.push(b"0123456789abcdef"[(n & 0xf) as usize]);
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    out
}

/// Parses what [`hex`] writes, and nothing else (no prefix, no upper case, no leading
/// zeros, at most 16 digits).
fn parse_hex(s: &[u8]) -> Result<u64, FormatError> {
    let bad = |reason| FormatError::BadText {
        what: "loader state number",
        reason,
    };
    if s.is_empty() || s.len() > 16 {
        return Err(bad("must be 1 to 16 hex digits"));
    }
    if s.len() > 1 && s[0] == b'0' {
        return Err(bad("has a leading zero"));
    }
    s.iter().try_fold(0u64, |n, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return Err(bad("is not lowercase hex")),
        };
        Ok((n << 4) | u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uboot_env::crc32;
    use alloc::vec;

    fn name(s: &str) -> DeploymentName {
        DeploymentName::new(s.as_bytes()).unwrap()
    }

    fn state(generation: u64, trial: Option<(&str, u8)>) -> LoaderState {
        LoaderState {
            generation,
            default: name("a"),
            previous: Some(name("old")),
            trial: trial.map(|(t, n)| Trial {
                entry: name(t),
                tries_left: n,
            }),
        }
    }

    /// A copy with these variables (in this order) and a correct CRC.
    fn raw(vars: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; STATE_LEN];
        b[4..4 + vars.len()].copy_from_slice(vars);
        let sum = crc32(&b[4..]);
        b[..4].copy_from_slice(&sum.to_le_bytes());
        b
    }

    #[test]
    fn round_trips() {
        for s in [
            state(1, None),
            state(2, Some(("b", 3))),
            state(0x1f, Some(("b", 0))),
            state(u64::MAX, Some(("0123456789abcdef", 0xff))),
            LoaderState {
                previous: None,
                ..state(7, None)
            },
        ] {
            let b = s.encode().unwrap();
            assert_eq!(b.len(), STATE_LEN);
            assert_eq!(LoaderState::decode(&b), Ok(s));
        }
    }

    #[test]
    fn exact_bytes() {
        let b = state(0x1f, Some(("b", 2))).encode().unwrap();
        assert_eq!(
            b,
            raw(
                b"berth_default=a\0berth_gen=1f\0berth_previous=old\0berth_trial=b\0\
                  berth_tries=2\0berth_version=1\0\0"
            )
        );
    }

    /// What `mkenvimage -s 4096 -p 0` (u-boot-tools 2023.01) made from the same variables
    /// (`format/tests/data/loader/README.md` has the command).
    #[test]
    fn encodes_as_mkenvimage() {
        let fixture = include_bytes!("../tests/data/loader/mkenvimage-state.bin");
        let s = state(0x1f, Some(("b", 2)));
        assert_eq!(s.encode().unwrap(), fixture);
        assert_eq!(LoaderState::decode(fixture), Ok(s));
    }

    /// The same against the installed `mkenvimage` (u-boot-tools, from `ci/setup.sh`),
    /// for several states; skipped without it unless `BERTH_STRICT` is set.
    #[test]
    fn encodes_as_the_installed_mkenvimage() {
        extern crate std;
        use std::io::Write as _;
        let dir =
            std::env::temp_dir().join(std::format!("berth-mkenvimage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in [
            state(1, None),
            state(0xabc, Some(("b", 0))),
            LoaderState {
                previous: None,
                ..state(u64::MAX, Some(("0123456789abcdef", 0xff)))
            },
        ]
        .iter()
        .enumerate()
        {
            let (txt, out) = (
                dir.join(std::format!("{i}.txt")),
                dir.join(std::format!("{i}.bin")),
            );
            let mut f = std::fs::File::create(&txt).unwrap();
            for (k, v) in uboot_env::decode(&s.encode().unwrap()).unwrap() {
                f.write_all(&[k, b"=", v, b"\n"].concat()).unwrap();
            }
            let ran = std::process::Command::new("mkenvimage")
                .args(["-s", "4096", "-p", "0", "-o"])
                .arg(&out)
                .arg(&txt)
                .status();
            let Ok(status) = ran else {
                assert!(
                    std::env::var_os("BERTH_STRICT").is_none(),
                    "mkenvimage is missing (ci/setup.sh installs u-boot-tools)"
                );
                std::eprintln!("SKIPPED: mkenvimage is not installed");
                break;
            };
            assert!(status.success());
            assert_eq!(std::fs::read(&out).unwrap(), s.encode().unwrap(), "{s:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A copy U-Boot itself wrote: the test script's `env export -c` after it took a
    /// trial's try (`format/tests/data/loader/README.md`).
    #[test]
    fn decodes_what_uboot_wrote() {
        let fixture = include_bytes!("../tests/data/loader/uboot-state.bin");
        let s = LoaderState::decode(fixture).unwrap();
        assert_eq!(s.encode().unwrap(), fixture, "one encoding");
    }

    #[test]
    fn refuses_damaged_or_foreign_copies() {
        let good = state(3, Some(("b", 1))).encode().unwrap();
        let mut torn = good.clone();
        torn[40..].fill(0);
        let mut flipped = good.clone();
        flipped[20] ^= 0x20;
        let cases: &[(&str, Vec<u8>)] = &[
            ("zeroed", vec![0; STATE_LEN]),
            ("erased", vec![0xff; STATE_LEN]),
            ("torn: tail zeroed", torn),
            ("bit flip", flipped),
            ("short", good[..STATE_LEN - 1].to_vec()),
            ("long", [&good[..], &[0]].concat()),
            ("empty file", Vec::new()),
            (
                "version 2",
                raw(b"berth_default=a\0berth_gen=1\0berth_version=2\0\0"),
            ),
            ("no version", raw(b"berth_default=a\0berth_gen=1\0\0")),
            ("no default", raw(b"berth_gen=1\0berth_version=1\0\0")),
            ("no gen", raw(b"berth_default=a\0berth_version=1\0\0")),
            (
                "gen 0",
                raw(b"berth_default=a\0berth_gen=0\0berth_version=1\0\0"),
            ),
            (
                "gen 0x",
                raw(b"berth_default=a\0berth_gen=0x1\0berth_version=1\0\0"),
            ),
            (
                "gen upper case",
                raw(b"berth_default=a\0berth_gen=A\0berth_version=1\0\0"),
            ),
            (
                "gen leading zero",
                raw(b"berth_default=a\0berth_gen=01\0berth_version=1\0\0"),
            ),
            (
                "gen 17 digits",
                raw(b"berth_default=a\0berth_gen=10000000000000000\0berth_version=1\0\0"),
            ),
            (
                "trial without tries",
                raw(b"berth_default=a\0berth_gen=1\0berth_trial=b\0berth_version=1\0\0"),
            ),
            (
                "tries without trial",
                raw(b"berth_default=a\0berth_gen=1\0berth_tries=1\0berth_version=1\0\0"),
            ),
            (
                "tries over ff",
                raw(b"berth_default=a\0berth_gen=1\0berth_trial=b\0berth_tries=100\0berth_version=1\0\0"),
            ),
            (
                "bad name",
                raw(b"berth_default=../x\0berth_gen=1\0berth_version=1\0\0"),
            ),
            (
                "unknown key",
                raw(b"berth_default=a\0berth_gen=1\0berth_version=1\0bootcmd=reset\0\0"),
            ),
            (
                "unsorted",
                raw(b"berth_gen=1\0berth_default=a\0berth_version=1\0\0"),
            ),
        ];
        for (what, bytes) in cases {
            assert!(
                LoaderState::decode(bytes).is_err(),
                "{what}: {:?}",
                LoaderState::decode(bytes)
            );
        }
        assert!(state(0, None).encode().is_err(), "generation 0");
    }

    #[test]
    fn newer_valid_copy_wins() {
        let (s1, s2) = (state(1, None), state(2, Some(("b", 1))));
        let cases = [
            (Some(&s1), Some(&s2), Some((StateCopy::B, s2))),
            (Some(&s2), Some(&s1), Some((StateCopy::A, s2))),
            (Some(&s1), Some(&s1), Some((StateCopy::A, s1))),
            (None, Some(&s1), Some((StateCopy::B, s1))),
            (Some(&s1), None, Some((StateCopy::A, s1))),
            (None, None, None),
        ];
        for (a, b, want) in cases {
            assert_eq!(winner(a, b), want, "{a:?} {b:?}");
        }
    }

    /// Writing goes to the loser with generation + 1, so the next read picks it, and a
    /// torn write of it leaves the old winner.
    #[test]
    fn write_then_read_picks_the_new_copy() {
        let mut copies = [Some(state(4, Some(("b", 2)))), Some(state(3, None))];
        for _ in 0..3 {
            let (won, s) = winner(copies[0].as_ref(), copies[1].as_ref()).unwrap();
            let mut next = s.successor();
            if let Some(t) = &mut next.trial {
                t.tries_left = t.tries_left.saturating_sub(1);
            }
            let bytes = next.encode().unwrap();
            let slot = match won.other() {
                StateCopy::A => 0,
                StateCopy::B => 1,
            };
            copies[slot] = LoaderState::decode(&bytes).ok();
            assert_eq!(
                winner(copies[0].as_ref(), copies[1].as_ref()),
                Some((won.other(), next))
            );
        }
        assert_eq!(copies[0].unwrap().trial.unwrap().tries_left, 0);
        assert_eq!(StateCopy::A.path(), "berth/a/state");
    }
}
