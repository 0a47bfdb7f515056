//! The boot partition of a U-Boot board (docs/FORMAT.md, "Loader state"): a FAT image
//! built with `mkfs.vfat` and mtools, holding
//!
//! ```text
//! boot.scr                     image/uboot/boot.cmd, compiled with mkimage at build time
//! berth/a/state                loader state copy A: generation 1
//! berth/b/state                loader state copy B: generation 2, the same state
//! <entry>/vmlinuz              one directory per installed deployment that carries a
//! <entry>/initramfs.img          kernel set, named as the deployment
//! <entry>/cmdline              the board's command line, the set's kargs, berth.root=
//! <entry>/dtb                  the board's device tree from the set (if it names one)
//! <entry>/set                  the kernel set's directory name (for berth; the script
//!                                ignores it)
//! ```
//!
//! Both state copies are written whole at their full 4096 bytes, so the script and berth
//! only ever overwrite them in place. The state names the default deployment's entry as
//! the default, the previous one's (if it has an entry) as the previous, and a trial in
//! the layout whose kernel set differs from the default's as the trial, with its tries
//! (`berth/boot/loader-trial` names it too); a trial with the default's set is counted
//! by berth-init's boot record, as on the other boards.
//! On the device, `berth` keeps the partition in step with the record
//! (`updater/src/bootpart/uboot.rs`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use format::loader::{LoaderState, StateCopy};
use format::record::DeploymentName;

use crate::board::Board;
use crate::bootpart::{BootPart, SetFiles, Slot};
use crate::fat::Fat;
use crate::tools::run;

/// The boot script's source, compiled into `boot.scr` for each image.
const BOOT_CMD: &str = include_str!("../uboot/boot.cmd");

/// The longest `cmdline` the script reads (it loads at most 0xfff bytes into a zeroed
/// 4 KiB buffer, so the string stays NUL-terminated).
const CMDLINE_MAX: usize = 0xfff;

/// One entry directory.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    name: DeploymentName,
    /// The kernel set's files (`usr/lib/modules/<kver>/` of the checkout).
    src: PathBuf,
    /// The device tree to copy as `dtb`, if the board names one.
    dtb: Option<PathBuf>,
    cmdline: String,
    /// The kernel set's directory name (`set`: which set the entry holds, for berth on
    /// the device; the script ignores it).
    set: String,
}

/// The boot partition at `work/boot.img` (`size_mib` MiB).
pub fn image(p: &BootPart<'_>, size_mib: u64) -> Result<PathBuf> {
    // The default must carry a kernel set; this fails saying so when it does not.
    p.default_set()?;
    let mut sets = Vec::new();
    for (slot, name, commit) in &p.deployments {
        sets.push((*slot, *name, p.kernel_set(name, commit)?));
    }
    let (entries, state) = plan(p.board, p.partuuid, sets, p.trial_tries)?;
    if let Some(t) = state.trial {
        // The script counts this trial's tries; berth-init must not count them again.
        crate::bootpart::mark_loader_trial(p.sysroot, &t.entry)?;
    }
    for e in &entries {
        if let Some(dtb) = e.dtb.as_ref().filter(|d| !d.is_file()) {
            bail!(
                "board {}: device tree {} is not in deployment {}'s kernel set",
                p.board.name,
                dtb.display(),
                e.name.as_str()
            );
        }
    }
    let scr = p.work.join("boot.scr");
    compile_script(&p.work.join("boot.cmd"), &scr)?;
    let img = p.work.join("boot.img");
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    eprintln!(
        "berth-image disk: U-Boot boot partition ({size_mib} MiB) with boot.scr and entries {}",
        names.join(", ")
    );
    let fat = Fat::create(&img, size_mib, "BERTH-BOOT", false)?;
    let mut dirs = vec!["berth", "berth/a", "berth/b"];
    dirs.extend(&names);
    fat.mkdirs(&dirs)?;
    fat.copy(&scr, "boot.scr")?;
    firmware_files(p, &fat)?;
    let bytes = [
        state.encode(),
        LoaderState {
            generation: 2,
            ..state
        }
        .encode(),
    ];
    for (copy, bytes) in [StateCopy::A, StateCopy::B].into_iter().zip(bytes) {
        let bytes = bytes.context("encode the loader state")?;
        fat.write(copy.path().trim_start_matches('/'), &bytes)?;
    }
    for e in &entries {
        let dir = e.name.as_str();
        for f in [format::kernelset::KERNEL, format::kernelset::INITRAMFS] {
            fat.copy(&e.src.join(f), &format!("{dir}/{f}"))?;
        }
        fat.write(&format!("{dir}/cmdline"), e.cmdline.as_bytes())?;
        fat.write(&format!("{dir}/set"), e.set.as_bytes())?;
        if let Some(dtb) = &e.dtb {
            fat.copy(dtb, &format!("{dir}/dtb"))?;
        }
    }
    Ok(img)
}

/// The firmware that starts U-Boot from this partition, if the board has one (the
/// Raspberry Pi's: `start4.elf`, `fixup4.dat`, `config.txt`, `u-boot.bin`, and the
/// board's device tree from the default deployment's kernel set, which the firmware
/// loads by its name, patches and hands to U-Boot).
fn firmware_files(p: &BootPart<'_>, fat: &Fat) -> Result<()> {
    let b = &p.board.bootloader;
    let Some(u_boot) = &b.u_boot else {
        return Ok(());
    };
    for f in b.firmware.iter().chain(std::iter::once(u_boot)) {
        let src = p.loaders.join(f);
        if !src.is_file() {
            bail!(
                "{}: the board's firmware is missing (give --loader-dir DIR where its packages are unpacked)",
                src.display()
            );
        }
        let name = if f == u_boot {
            "u-boot.bin"
        } else {
            std::path::Path::new(f)
                .file_name()
                .and_then(|n| n.to_str())
                .context("a firmware file name")?
        };
        fat.copy(&src, name)?;
    }
    if let Some(text) = &b.config_txt {
        fat.write("config.txt", text.as_bytes())?;
    }
    if let Some(dt) = &b.device_tree {
        let (_, default) = p.default_set()?;
        let src = default.src.join(format::kernelset::DTB_DIR).join(dt);
        let name = std::path::Path::new(dt)
            .file_name()
            .and_then(|n| n.to_str())
            .context("a device tree file name")?;
        fat.copy(&src, name)?;
    }
    Ok(())
}

/// The entries (one per deployment with a kernel set, once per name) and the state both
/// copies start with (generation 1). The default deployment must have a set. A trial
/// whose set differs from the default's gets an entry and is the state's trial with
/// `trial_tries` (the script counts it); one with the default's set gets neither: it
/// boots under the default's entry and berth-init counts it.
fn plan(
    board: &Board,
    partuuid: &str,
    sets: Vec<(Slot, DeploymentName, Option<SetFiles>)>,
    trial_tries: u8,
) -> Result<(Vec<Entry>, LoaderState)> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut default = None;
    let mut default_set = None;
    let mut previous = None;
    let mut trial = None;
    for (slot, name, files) in sets {
        let Some(files) = files else {
            eprintln!(
                "berth-image disk: deployment {} has no kernel set: no boot entry",
                name.as_str()
            );
            continue;
        };
        match slot {
            Slot::Default => {
                default = Some(name);
                default_set = Some(files.set.id());
            }
            Slot::Previous if default != Some(name) => previous = Some(name),
            Slot::Trial if default_set == Some(files.set.id()) => continue,
            Slot::Trial => {
                trial = Some(format::loader::Trial {
                    entry: name,
                    tries_left: trial_tries,
                });
            }
            Slot::Previous => {}
        }
        if entries.iter().any(|e| e.name == name) {
            continue;
        }
        let cmdline = crate::bootpart::cmdline(board, &files.set, partuuid);
        if cmdline.len() > CMDLINE_MAX {
            bail!(
                "deployment {}: the kernel command line is {} bytes, over the boot script's {CMDLINE_MAX}",
                name.as_str(),
                cmdline.len()
            );
        }
        let dtb = board
            .bootloader
            .device_tree
            .as_ref()
            .map(|d| files.src.join(format::kernelset::DTB_DIR).join(d));
        entries.push(Entry {
            name,
            src: files.src,
            dtb,
            cmdline,
            set: files.set.dir_name(),
        });
    }
    let default = default.context("the default deployment has no kernel set")?;
    let state = LoaderState {
        generation: 1,
        default,
        previous,
        trial,
    };
    Ok((entries, state))
}

/// `boot.scr`: the embedded `boot.cmd` written to `src` and compiled by `mkimage` (a
/// legacy image of type script, uncompressed).
fn compile_script(src: &std::path::Path, scr: &std::path::Path) -> Result<()> {
    std::fs::write(src, BOOT_CMD).with_context(|| format!("{}: write", src.display()))?;
    run(Command::new("mkimage")
        .args(["-A", "arm64", "-O", "linux", "-T", "script", "-C", "none"])
        .args(["-n", "berth boot script", "-d"])
        .arg(src)
        .arg(scr))
    .context("compile boot.scr (install u-boot-tools)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use format::ObjectId;
    use format::kernelset::KernelSet;

    fn board(device_tree: Option<&str>) -> Board {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards");
        let mut b = Board::load(&dir, "qemu-aarch64-uboot").unwrap();
        b.bootloader.device_tree = device_tree.map(str::to_owned);
        b
    }

    fn name(s: &str) -> DeploymentName {
        DeploymentName::new(s.as_bytes()).unwrap()
    }

    fn set(kargs: &str, src: &str) -> SetFiles {
        let id = ObjectId::digest(kargs.as_bytes());
        SetFiles {
            set: KernelSet {
                version: "6.1.0-1-arm64".into(),
                kernel: id,
                initramfs: id,
                dtb: None,
                kargs: kargs.into(),
            },
            src: PathBuf::from(src),
            version: "1".into(),
        }
    }

    #[test]
    fn entries_for_deployments_with_sets_and_a_state_without_a_trial() {
        let b = board(None);
        let (entries, state) = plan(
            &b,
            "guid",
            vec![
                (
                    Slot::Default,
                    name("d1"),
                    Some(set("berthtest=write", "/s/d1")),
                ),
                (Slot::Previous, name("p1"), Some(set("", "/s/p1"))),
                (Slot::Trial, name("t1"), None),
            ],
            3,
        )
        .unwrap();
        assert_eq!(
            entries,
            [
                Entry {
                    name: name("d1"),
                    src: "/s/d1".into(),
                    dtb: None,
                    cmdline: "console=ttyAMA0 panic=-1 berthtest=write berth.root=PARTUUID=guid"
                        .into(),
                    set: set("berthtest=write", "/s/d1").set.dir_name(),
                },
                Entry {
                    name: name("p1"),
                    src: "/s/p1".into(),
                    dtb: None,
                    cmdline: "console=ttyAMA0 panic=-1 berth.root=PARTUUID=guid".into(),
                    set: set("", "/s/p1").set.dir_name(),
                },
            ]
        );
        assert_eq!(
            state,
            LoaderState {
                generation: 1,
                default: name("d1"),
                previous: Some(name("p1")),
                trial: None,
            }
        );
    }

    #[test]
    fn a_trial_with_its_own_set_is_the_state_s_trial_and_the_board_names_the_device_tree() {
        let b = board(Some("arm/foo.dtb"));
        let (entries, state) = plan(
            &b,
            "g",
            vec![
                (Slot::Default, name("d1"), Some(set("", "/s/d1"))),
                (Slot::Previous, name("p1"), None),
                (Slot::Trial, name("t1"), Some(set("quiet", "/s/t1"))),
            ],
            3,
        )
        .unwrap();
        let got: Vec<(&str, Option<PathBuf>)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.dtb.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("d1", Some(PathBuf::from("/s/d1/dtb/arm/foo.dtb"))),
                ("t1", Some(PathBuf::from("/s/t1/dtb/arm/foo.dtb"))),
            ]
        );
        assert_eq!(
            (state.previous, state.trial),
            (
                None,
                Some(format::loader::Trial {
                    entry: name("t1"),
                    tries_left: 3
                })
            )
        );
        // A trial with the default's set: no entry, no trial in the state (berth-init
        // counts it, booted under the default's entry).
        let (entries, state) = plan(
            &b,
            "g",
            vec![
                (Slot::Default, name("d1"), Some(set("", "/s/d1"))),
                (Slot::Trial, name("t1"), Some(set("", "/s/t1"))),
            ],
            3,
        )
        .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(state.trial, None);
    }

    #[test]
    fn the_default_needs_a_set_and_a_short_command_line() {
        let b = board(None);
        assert!(plan(&b, "g", vec![(Slot::Default, name("d1"), None)], 3).is_err());
        let long = "x".repeat(CMDLINE_MAX);
        assert!(
            plan(
                &b,
                "g",
                vec![(Slot::Default, name("d1"), Some(set(&long, "/s")))],
                3
            )
            .is_err()
        );
    }
}
