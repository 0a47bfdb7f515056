//! `berth-image commit --oci`: untrusted image layers (uncompressed tar changesets with
//! whiteouts and opaque directories) applied in order over one file system, written to a
//! store in /dev/shm in a transaction that is dropped afterwards. The input is up to
//! four layers separated by the marker `\n--layer--\n`. Panics are bugs; whatever is
//! accepted is written as trees without error or is refused with an error, never half.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const MARKER: &[u8] = b"\n--layer--\n";

fn repo() -> &'static store::Repo {
    static R: OnceLock<store::Repo> = OnceLock::new();
    R.get_or_init(|| {
        for parent in [PathBuf::from("/dev/shm"), std::env::temp_dir()] {
            if let Ok(entries) = std::fs::read_dir(&parent) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(pid) = name.strip_prefix("berth-fuzz-layers-") {
                        if !PathBuf::from("/proc").join(pid).exists() {
                            let _ = std::fs::remove_dir_all(e.path());
                        }
                    }
                }
            }
        }
        let name = format!("berth-fuzz-layers-{}", std::process::id());
        let shm = PathBuf::from("/dev/shm").join(&name);
        let dir = if std::fs::create_dir_all(&shm).is_ok() {
            shm
        } else {
            std::env::temp_dir().join(name)
        };
        store::Repo::create(&dir.join("repo")).unwrap()
    })
}

/// `data` cut at each marker, at most four pieces.
fn layers(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < 3 {
        match rest.windows(MARKER.len()).position(|w| w == MARKER) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + MARKER.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut txn = store::Txn::begin(repo()).unwrap();
    // Small bounds, so that bombs are found quickly.
    let mut fs = image::layers::Layers::new(image::layers::Limits {
        bytes: 1 << 20,
        entries: 4096,
    });
    let mut ok = true;
    for layer in layers(data) {
        if fs
            .apply(&mut txn, layer, Path::new("layer"), &mut |_| {})
            .is_err()
        {
            ok = false;
            break;
        }
    }
    if ok {
        let _ = fs.write(&mut txn);
    }
    drop(txn);
});
