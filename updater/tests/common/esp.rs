//! A device on a systemd-boot board for the updater's tests: a sysroot and its ESP as a
//! directory (`--boot-dir`), with a model of systemd-boot's choice (`format::bls`).

use std::fs;
use std::path::PathBuf;

use format::bls::{self, EntryName};
use format::loader::{LoaderState, StateCopy};
use serde_json::Value;
use testkit::{bin, run_ok};

use super::Lab;

/// A root filesystem's kernel set: a kernel and an initramfs (their bytes stand in for
/// real ones: berth copies, it does not boot them), and kernel arguments.
pub fn set_files(kernel: &str, kargs: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        (
            "usr/lib/modules/6.1.0-test/vmlinuz".to_owned(),
            fake_kernel(&format!("kernel {kernel}")),
        ),
        (
            "usr/lib/modules/6.1.0-test/initramfs.img".to_owned(),
            format!("initramfs {kernel}").into_bytes(),
        ),
    ];
    if let Some(k) = kargs {
        v.push((
            "usr/lib/berth/kargs".to_owned(),
            format!("{k}\n").into_bytes(),
        ));
    }
    v
}

/// A stand-in kernel both loaders' checks accept: an EFI executable's signatures (`MZ`,
/// and `PE\0\0` where offset 0x3c points) and an arm64 Image's magic (offset 56),
/// then `text`.
pub fn fake_kernel(text: &str) -> Vec<u8> {
    let mut k = vec![0u8; 128];
    k[..2].copy_from_slice(b"MZ");
    k[0x3c..0x40].copy_from_slice(&64u32.to_le_bytes());
    k[56..60].copy_from_slice(b"ARM\x64");
    k[64..68].copy_from_slice(b"PE\0\0");
    k.extend_from_slice(text.as_bytes());
    k
}

/// A device on a systemd-boot board: its ESP at `esp/`, laid out as `berth-image disk`
/// does for the default deployment.
pub struct Esp {
    pub lab: Lab,
    pub part: PathBuf,
    /// U-Boot's boot partition (entry directories, two state copies) instead of an ESP.
    pub uboot: bool,
}

impl Esp {
    pub fn new() -> Self {
        let lab = Lab::new();
        let part = lab.tmp.path().join("esp");
        Self {
            lab,
            part,
            uboot: false,
        }
    }

    /// A device on a U-Boot board: its boot partition at `esp/`.
    pub fn uboot() -> Self {
        Self {
            uboot: true,
            ..Self::new()
        }
    }

    /// The kernel set's directory name (`<id16>`) of `commit`.
    pub fn set_id(&self, commit: &str) -> String {
        self.set_dir(commit)["berth/".len()..].to_owned()
    }

    /// The U-Boot loader state that wins.
    pub fn uboot_state(&self) -> Option<LoaderState> {
        self.uboot_winner().map(|w| w.1)
    }

    fn uboot_winner(&self) -> Option<(StateCopy, LoaderState)> {
        let read = |c: StateCopy| {
            fs::read(self.part.join(c.path()))
                .ok()
                .and_then(|b| LoaderState::decode(&b).ok())
        };
        let (a, b) = (read(StateCopy::A), read(StateCopy::B));
        format::loader::winner(a.as_ref(), b.as_ref())
    }

    /// What the loader starts next, or what stops it: (entry, the directory holding its
    /// files, its kernel set's `<id16>`). systemd-boot: the first entry in its order
    /// with tries left. U-Boot (as `boot.scr`): the trial while it has tries, else the
    /// default, else the previous entry, the first whose files are there.
    pub fn loader_choice(&self) -> Result<(String, String, String), String> {
        if self.uboot {
            let st = self.uboot_state().ok_or("no valid loader state")?;
            let trial = st.trial.filter(|t| t.tries_left > 0).map(|t| t.entry);
            for e in [trial, Some(st.default), st.previous].into_iter().flatten() {
                let dir = self.part.join(e.as_str());
                if ["vmlinuz", "initramfs.img", "cmdline"]
                    .iter()
                    .all(|f| dir.join(f).is_file())
                {
                    let set =
                        fs::read_to_string(dir.join("set")).map_err(|e| format!("set: {e}"))?;
                    return Ok((e.as_str().to_owned(), e.as_str().to_owned(), set));
                }
            }
            return Err(format!("no entry of {st:?} can be loaded"));
        }
        let dir = self.part.join(bls::ENTRIES_DIR);
        let names: Vec<String> = fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let order = bls::parse_dir(names.iter().map(String::as_str));
        let first = order
            .iter()
            .find(|e| e.tries_left() != Some(0))
            .ok_or("no entry with tries left")?;
        let text = fs::read_to_string(dir.join(first.file_name()))
            .map_err(|e| format!("{}: {e}", first.file_name()))?;
        let set_dir = bls::set_dir_of(&text)
            .ok_or_else(|| format!("{}: names no kernel set: {text:?}", first.file_name()))?;
        for f in ["vmlinuz", "initramfs.img"] {
            if !self.part.join(set_dir).join(f).is_file() {
                return Err(format!("{set_dir}/{f} is missing"));
            }
        }
        Ok((
            first.deployment.as_str().to_owned(),
            set_dir.to_owned(),
            set_dir["berth/".len()..].to_owned(),
        ))
    }

    /// The loader takes a try of the entry it starts, as the real one does before
    /// starting it: systemd-boot renames a counted entry, `boot.scr` writes the state
    /// with one try less over the other copy.
    pub fn loader_take_try(&self) {
        if self.uboot {
            let Some((won, st)) = self.uboot_winner() else {
                return;
            };
            if let Some(t) = st.trial.filter(|t| t.tries_left > 0) {
                let next = LoaderState {
                    trial: Some(format::loader::Trial {
                        tries_left: t.tries_left - 1,
                        ..t
                    }),
                    ..st.successor()
                };
                fs::write(self.part.join(won.other().path()), next.encode().unwrap()).unwrap();
            }
            return;
        }
        let names = self.entries();
        let Some(first) = bls::parse_dir(names.iter().map(String::as_str))
            .into_iter()
            .find(|e| e.tries_left() != Some(0))
        else {
            return;
        };
        if let Some((left, done)) = first.counter {
            let next = EntryName {
                counter: Some((left - 1, Some(done.unwrap_or(0) + 1))),
                ..first
            };
            let d = self.part.join(bls::ENTRIES_DIR);
            fs::rename(d.join(first.file_name()), d.join(next.file_name())).unwrap();
        }
    }

    pub fn commit(&self, version: &str, kernel: &str, kargs: Option<&str>) -> String {
        let files = set_files(kernel, kargs);
        let extra: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        self.lab.commit(version, &extra)
    }

    /// The kernel set directory (`berth/<id16>`) of `commit`.
    pub fn set_dir(&self, commit: &str) -> String {
        let v: Value = serde_json::from_str(&run_ok(
            &bin("berth-image"),
            &[
                "show".as_ref(),
                "--repo".as_ref(),
                self.lab.repo.as_os_str(),
                commit.as_ref(),
                "--json".as_ref(),
            ],
        ))
        .unwrap();
        format!("berth/{}", &v["kernel_set"]["id"].as_str().unwrap()[..16])
    }

    /// Installs `commit` and lays out the ESP with its entry (generation 2), as the
    /// image builder does.
    pub fn install(&self, commit: &str) {
        self.lab.install(commit, &[]);
        if self.uboot {
            self.install_uboot(commit);
            return;
        }
        let dir = self.set_dir(commit);
        let src = self
            .lab
            .sysroot
            .join("berth/deploy")
            .join(&commit[..16])
            .join("usr/lib/modules/6.1.0-test");
        fs::create_dir_all(self.part.join(&dir)).unwrap();
        fs::create_dir_all(self.part.join(bls::ENTRIES_DIR)).unwrap();
        for f in ["vmlinuz", "initramfs.img"] {
            fs::copy(src.join(f), self.part.join(&dir).join(f)).unwrap();
        }
        let conf = format::bootconf::BootConfig {
            loader: format::bootconf::Loader::SystemdBoot,
            partuuid: "0123abcd-0000-4000-8000-00000000000a".into(),
            cmdline: "console=ttyS0 panic=-1".into(),
            root: "PARTUUID=fedcba98-7654-3210-fedc-ba9876543210".into(),
            devicetree: None,
        };
        fs::write(
            self.lab.sysroot.join("berth/boot/loader.conf"),
            conf.encode(),
        )
        .unwrap();
        let name = EntryName {
            generation: 2,
            deployment: format::record::DeploymentName::new(&commit.as_bytes()[..16]).unwrap(),
            counter: None,
        };
        let text = format::bls::EntryText {
            release: "test",
            deployment: &commit[..16],
            generation: 2,
            set_dir: &dir,
            devicetree: None,
            options: &conf.kernel_cmdline(""),
        }
        .render();
        fs::write(
            self.part.join(bls::ENTRIES_DIR).join(name.file_name()),
            text,
        )
        .unwrap();
    }

    /// U-Boot's partition as `berth-image disk` lays it out: the default's entry
    /// directory and both state copies (generations 1 and 2).
    fn install_uboot(&self, commit: &str) {
        let name = &commit[..16];
        let src = self
            .lab
            .sysroot
            .join("berth/deploy")
            .join(name)
            .join("usr/lib/modules/6.1.0-test");
        let entry = self.part.join(name);
        fs::create_dir_all(&entry).unwrap();
        for f in ["vmlinuz", "initramfs.img"] {
            fs::copy(src.join(f), entry.join(f)).unwrap();
        }
        let conf = format::bootconf::BootConfig {
            loader: format::bootconf::Loader::UBoot,
            partuuid: "0123abcd-0000-4000-8000-00000000000a".into(),
            cmdline: "console=ttyAMA0 panic=-1".into(),
            root: "PARTUUID=fedcba98-7654-3210-fedc-ba9876543210".into(),
            devicetree: None,
        };
        fs::write(entry.join("cmdline"), conf.kernel_cmdline("")).unwrap();
        fs::write(entry.join("set"), self.set_id(commit)).unwrap();
        fs::write(
            self.lab.sysroot.join("berth/boot/loader.conf"),
            conf.encode(),
        )
        .unwrap();
        let st = LoaderState {
            generation: 1,
            default: format::record::DeploymentName::new(name.as_bytes()).unwrap(),
            previous: None,
            trial: None,
        };
        for (c, g) in [(StateCopy::A, 1), (StateCopy::B, 2)] {
            let p = self.part.join(c.path());
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(
                p,
                LoaderState {
                    generation: g,
                    ..st
                }
                .encode()
                .unwrap(),
            )
            .unwrap();
        }
    }

    /// `berth --boot-dir esp ARGS`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let mut all = vec!["--boot-dir", self.part.to_str().unwrap()];
        all.extend_from_slice(args);
        self.lab.ok(&all)
    }

    pub fn fails(&self, args: &[&str], needle: &str) {
        let mut all = vec!["--boot-dir", self.part.to_str().unwrap()];
        all.extend_from_slice(args);
        self.lab.fails(&all, needle);
    }

    /// An update file from `from` to `to`.
    pub fn update(&self, from: &str, to: &str) -> PathBuf {
        self.lab
            .delta(Some(from), to, &format!("{}.berth", &to[..16]), &[])
    }

    /// The entries' file names (U-Boot: entry directories), sorted.
    pub fn entries(&self) -> Vec<String> {
        if self.uboot {
            return self.sets();
        }
        let mut v: Vec<String> = fs::read_dir(self.part.join(bls::ENTRIES_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// The kernel set directories on the ESP (U-Boot: the entry directories, each a
    /// copy of a set), sorted.
    pub fn sets(&self) -> Vec<String> {
        let mut v: Vec<String> = if self.uboot {
            fs::read_dir(&self.part)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n != "berth")
                .collect()
        } else {
            fs::read_dir(self.part.join("berth"))
                .unwrap()
                .map(|e| format!("berth/{}", e.unwrap().file_name().into_string().unwrap()))
                .collect()
        };
        v.sort();
        v
    }

    /// What systemd-boot boots next: its first entry's deployment and set directory.
    pub fn loader_boots(&self) -> (String, String) {
        let names = self.entries();
        let first = bls::parse_dir(names.iter().map(String::as_str))[0];
        let text =
            fs::read_to_string(self.part.join(bls::ENTRIES_DIR).join(first.file_name())).unwrap();
        let dir = bls::set_dir_of(&text).unwrap().to_owned();
        // Every file the entry names is there.
        for f in ["vmlinuz", "initramfs.img"] {
            assert!(self.part.join(&dir).join(f).is_file(), "{dir}/{f}");
        }
        (first.deployment.as_str().to_owned(), dir)
    }

    /// Boots once as the loader and berth-init would: the loader takes a try of a
    /// trial it counts, berth-init decides under its `berth.entry=` (writing the record).
    /// Returns (deployment, reason); asserts that the kernel that runs is that
    /// deployment's own kernel set.
    pub fn boot(&self) -> (String, String) {
        let (entry, _, set) = self.loader_choice().unwrap();
        self.loader_take_try();
        let v: Value = serde_json::from_str(&run_ok(
            &bin("berth-init"),
            &[
                "--dry-run".as_ref(),
                "--write-record".as_ref(),
                "--sysroot".as_ref(),
                self.lab.sysroot.as_os_str(),
                "--cmdline".as_ref(),
                format!("berth.entry={entry}").as_ref(),
            ],
        ))
        .unwrap();
        let booted = v["choice"]["deployment"].as_str().unwrap().to_owned();
        let commit = self.commit_of(&booted);
        assert_eq!(
            self.set_id(&commit),
            set,
            "{booted} booted under entry {entry}'s kernel"
        );
        self.lab.booted(&booted, v["reason"].as_str().unwrap());
        (booted, v["reason"].as_str().unwrap().to_owned())
    }

    pub fn commit_of(&self, name: &str) -> String {
        let s = self.lab.status();
        s["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .and_then(|d| d["commit"].as_str())
            .unwrap()
            .to_owned()
    }

    pub fn marker(&self) -> Option<String> {
        fs::read_to_string(self.lab.sysroot.join("berth/boot/loader-trial"))
            .ok()
            .map(|s| s.trim().to_owned())
    }
}
