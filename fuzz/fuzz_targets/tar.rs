//! `berth-image commit --tar`: an untrusted archive (plain, gzip or zstd) imported into a
//! store in /dev/shm, in a transaction that is dropped afterwards. Panics are bugs; an
//! accepted archive must never place an entry outside the root.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

struct Scratch {
    repo: store::Repo,
    input: PathBuf,
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        remove_stale();
        let base = std::env::temp_dir().join(format!("berth-fuzz-tar-{}", std::process::id()));
        let shm = PathBuf::from("/dev/shm").join(base.file_name().unwrap());
        let dir = if std::fs::create_dir_all(&shm).is_ok() { shm } else { base };
        std::fs::create_dir_all(&dir).unwrap();
        Scratch {
            repo: store::Repo::create(&dir.join("repo")).unwrap(),
            input: dir.join("input.tar"),
        }
    })
}

/// Removes the scratch directories of fuzz processes that are gone.
fn remove_stale() {
    for parent in [PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("berth-fuzz-tar-") else {
                continue;
            };
            if !PathBuf::from("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    std::fs::write(&s.input, data).unwrap();
    let mut txn = store::Txn::begin(&s.repo).unwrap();
    let _ = image::tarball::build_tar(&mut txn, &s.input, &mut |_| {});
    // Never committed: dropping the transaction removes its staging directory.
    drop(txn);
    // The path rule on its own: whatever it accepts is relative and has no `..`.
    if let Ok(comps) = image::tarball::components(data) {
        assert!(comps.iter().all(|c| *c != b".." && *c != b"." && !c.is_empty()));
        assert!(comps.iter().all(|c| !c.contains(&b'/')));
    }
});
