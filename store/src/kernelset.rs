//! Finding a commit's kernel set (`format::kernelset`) in the store: the image builder
//! lays out boot partitions from it and the updater copies new sets to them.

use std::path::PathBuf;

use format::kernelset::{self, KernelSet};
use format::{EntryKind, ObjectId, Tree};

use crate::{Repo, StoreError};

/// The kernel set of the commit tree `root`, if it carries one: the version directory
/// under `usr/lib/modules` that holds a `vmlinuz`. Several, or a `vmlinuz` without an
/// `initramfs.img`, is an error naming the cause.
pub fn find(repo: &Repo, root: &ObjectId) -> Result<Option<KernelSet>, StoreError> {
    let Some(mods) = subtree(repo, root, kernelset::MODULES_DIR)? else {
        return Ok(None);
    };
    let mut found = Vec::new();
    for e in mods.entries().iter().filter(|e| e.kind == EntryKind::Tree) {
        let t = repo.read_tree(&e.id)?;
        let version = String::from_utf8_lossy(e.name.as_bytes()).into_owned();
        let Some((EntryKind::File, kernel)) = child(&t, kernelset::KERNEL) else {
            continue;
        };
        let Some((EntryKind::File, initramfs)) = child(&t, kernelset::INITRAMFS) else {
            return Err(unsupported(format!(
                "{}/{version}: has a {} but no {} (run berth-image initramfs)",
                kernelset::MODULES_DIR,
                kernelset::KERNEL,
                kernelset::INITRAMFS
            )));
        };
        let dtb = match child(&t, kernelset::DTB_DIR) {
            Some((EntryKind::Tree, id)) => Some(id),
            _ => None,
        };
        found.push((version, kernel, initramfs, dtb));
    }
    let kargs = match subtree(repo, root, "usr/lib/berth")?.and_then(|t| child(&t, "kargs")) {
        Some((EntryKind::File, id)) => {
            let bytes = repo.read_file(&id, kernelset::KARGS_MAX as u64 + 1)?;
            kernelset::parse_kargs(&bytes).map_err(|e| StoreError::format(kernelset::KARGS, e))?
        }
        _ => String::new(),
    };
    match found.len() {
        0 => Ok(None),
        1 => {
            let (version, kernel, initramfs, dtb) = found.remove(0);
            Ok(Some(KernelSet {
                version,
                kernel,
                initramfs,
                dtb,
                kargs,
            }))
        }
        _ => Err(unsupported(format!(
            "several kernel sets ({}); a deployment carries one",
            found
                .iter()
                .map(|f| f.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn unsupported(reason: String) -> StoreError {
    StoreError::Unsupported {
        path: PathBuf::from(kernelset::MODULES_DIR),
        reason,
    }
}

/// The entry `name` of `tree`, if it is there.
fn child(tree: &Tree, name: &str) -> Option<(EntryKind, ObjectId)> {
    tree.entries()
        .iter()
        .find(|e| e.name.as_bytes() == name.as_bytes())
        .map(|e| (e.kind, e.id))
}

/// The tree at `path` (components separated by `/`) below `root`, if there is one.
fn subtree(repo: &Repo, root: &ObjectId, path: &str) -> Result<Option<Tree>, StoreError> {
    let mut tree = repo.read_tree(root)?;
    for c in path.split('/') {
        match child(&tree, c) {
            Some((EntryKind::Tree, id)) => tree = repo.read_tree(&id)?,
            _ => return Ok(None),
        }
    }
    Ok(Some(tree))
}

/// The sizes of the files a copy of `set` holds on a boot partition: the kernel, the
/// initramfs and every device tree.
pub fn file_sizes(repo: &Repo, set: &KernelSet) -> Result<Vec<u64>, StoreError> {
    let mut sizes = vec![
        repo.file_object(&set.kernel)?.0.size,
        repo.file_object(&set.initramfs)?.0.size,
    ];
    let mut trees: Vec<ObjectId> = set.dtb.into_iter().collect();
    while let Some(t) = trees.pop() {
        for e in repo.read_tree(&t)?.entries() {
            match e.kind {
                EntryKind::Tree => trees.push(e.id),
                EntryKind::File => sizes.push(repo.file_object(&e.id)?.0.size),
            }
        }
    }
    Ok(sizes)
}
