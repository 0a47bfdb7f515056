//! Image archives (`oci-archive:`, `docker-archive:`): unpacked into a scratch directory
//! with the tarball importer's path checks, then read as an OCI image layout. What
//! `docker save` wrote before Docker 25 (a `manifest.json` naming a config and layer
//! tarballs, no layout) is turned into a layout first; from 25 on its archives are OCI
//! layouts already.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use format::oci::MANIFEST_MAX;
use image::tarball;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::layout::{Hashing, hex};

fn comps(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(Vec::as_slice).collect()
}

fn join(dir: &Path, comps: &[&[u8]]) -> PathBuf {
    let mut p = dir.to_owned();
    for c in comps {
        p.push(std::ffi::OsStr::from_bytes(c));
    }
    p
}

/// Unpacks the archive `file` into the empty directory `dir`: its directories and
/// regular files, and its symbolic links as copies of the files they name inside the
/// archive (old `docker save` archives link a repeated layer to its first copy). At most
/// `max_bytes` bytes of files.
pub(super) fn unpack(file: &Path, dir: &Path, max_bytes: u64) -> Result<()> {
    let mut written = 0u64;
    let mut links = Vec::new();
    let reader = tarball::open_decompressed(file)?;
    tarball::each_entry(reader, file, |entry, comps, shown| {
        let to = join(dir, comps);
        match entry.header().entry_type() {
            EntryType::Directory => {
                fs::create_dir_all(&to).with_context(|| format!("{}: unpack", shown.display()))
            }
            EntryType::Regular | EntryType::Continuous => {
                if comps.is_empty() {
                    bail!("{}: the archive root must be a directory", shown.display());
                }
                written += entry.size();
                if written > max_bytes {
                    bail!(
                        "{}: the archive holds more than {max_bytes} bytes (--max-unpacked)",
                        file.display()
                    );
                }
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("{}: unpack", shown.display()))?;
                }
                let mut out = fs::File::create_new(&to).with_context(|| {
                    format!("{}: unpack (twice in the archive?)", shown.display())
                })?;
                io::copy(&mut entry.take(max_bytes), &mut out)
                    .with_context(|| format!("{}: unpack", shown.display()))?;
                Ok(())
            }
            EntryType::Symlink | EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .with_context(|| format!("{}: a link without a target", shown.display()))?;
                // A symlink's target is relative to its directory; a hard link's to the
                // archive's root.
                let mut path: Vec<Vec<u8>> = Vec::new();
                if entry.header().entry_type() == EntryType::Symlink {
                    path.extend(
                        comps
                            .iter()
                            .take(comps.len().saturating_sub(1))
                            .map(|c| c.to_vec()),
                    );
                }
                for c in target.split(|&b| b == b'/') {
                    match c {
                        b"" | b"." => {}
                        b".." => {
                            path.pop().ok_or_else(|| {
                                anyhow!("{}: a link out of the archive", shown.display())
                            })?;
                        }
                        c => path.push(c.to_vec()),
                    }
                }
                if target.first() == Some(&b'/') {
                    bail!("{}: a link out of the archive", shown.display());
                }
                links.push((
                    comps.iter().map(|c| c.to_vec()).collect::<Vec<_>>(),
                    path,
                    shown.to_owned(),
                ));
                Ok(())
            }
            // PAX headers are read by the tar reader; nothing else belongs in an image
            // archive, and nothing else would be read from it.
            _ => Ok(()),
        }
    })?;
    for (at, target, shown) in links {
        let from = join(dir, &comps(&target));
        let to = join(dir, &comps(&at));
        if !fs::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
            bail!(
                "{}: a link to {}, which is not a file of the archive",
                shown.display(),
                String::from_utf8_lossy(&target.join(&b'/'))
            );
        }
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).with_context(|| format!("{}: unpack", shown.display()))?;
        }
        fs::hard_link(&from, &to).with_context(|| format!("{}: unpack", shown.display()))?;
    }
    Ok(())
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Debug, Deserialize)]
struct SavedImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A file of the unpacked archive named by `manifest.json`: its path, size and digest.
fn blob_of(dir: &Path, file: &Path, name: &str) -> Result<(PathBuf, u64, String)> {
    let comps = tarball::components(name.as_bytes())
        .map_err(|why| anyhow!("{}: manifest.json names {name:?}: {why}", file.display()))?;
    let path = join(dir, &comps);
    let mut f = fs::File::open(&path)
        .with_context(|| format!("{}: {name} is not in the archive", file.display()))?;
    let mut h = Hashing::new(&mut f);
    io::copy(&mut h, &mut io::sink())
        .with_context(|| format!("{}: read {name}", file.display()))?;
    let (size, sum) = h.finish();
    Ok((path, size, format!("sha256:{}", hex(&sum))))
}

/// Writes an OCI layout into `dir` for the one image of the unpacked `docker save`
/// archive there (named `file` in messages), unless the archive is a layout already.
pub(super) fn docker_to_layout(file: &Path, dir: &Path) -> Result<()> {
    if dir.join("oci-layout").exists() {
        return Ok(());
    }
    let mut bytes = Vec::new();
    fs::File::open(dir.join("manifest.json"))
        .and_then(|f| f.take(MANIFEST_MAX as u64 + 1).read_to_end(&mut bytes))
        .with_context(|| {
            format!(
                "{}: not a docker archive (no manifest.json)",
                file.display()
            )
        })?;
    let images: Vec<SavedImage> = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: manifest.json", file.display()))?;
    let [image] = images.as_slice() else {
        let tags: Vec<String> = images
            .iter()
            .map(|i| i.repo_tags.clone().unwrap_or_default().join(" "))
            .collect();
        bail!(
            "{}: the archive holds {} images ({}); save one image per archive",
            file.display(),
            images.len(),
            tags.join(", ")
        );
    };
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("{}: unpack", file.display()))?;
    let place = |path: &Path, digest: &str| -> Result<()> {
        let to = blobs.join(digest.trim_start_matches("sha256:"));
        if !to.exists() {
            fs::hard_link(path, &to).with_context(|| format!("{}: unpack", file.display()))?;
        }
        Ok(())
    };
    let (path, size, digest) = blob_of(dir, file, &image.config)?;
    // The config's name is its digest (`<hex>.json`, `blobs/sha256/<hex>`): the only
    // thing that vouches for it. The config's diff_ids then vouch for the layers.
    let stem = Path::new(&image.config)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if digest.trim_start_matches("sha256:") != stem {
        bail!(
            "{}: the config {} has digest {digest}, not the one its name says",
            file.display(),
            image.config
        );
    }
    place(&path, &digest)?;
    let config = json!({
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": digest, "size": size,
    });
    let mut layers = Vec::new();
    for name in &image.layers {
        let (path, size, digest) = blob_of(dir, file, name)?;
        let mut magic = [0u8; 4];
        let n = fs::File::open(&path)
            .and_then(|mut f| f.read(&mut magic))
            .with_context(|| format!("{}: read {name}", file.display()))?;
        let media_type = match magic.get(..n) {
            Some([0x1f, 0x8b, ..]) => "application/vnd.oci.image.layer.v1.tar+gzip",
            Some([0x28, 0xb5, 0x2f, 0xfd]) => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => "application/vnd.oci.image.layer.v1.tar",
        };
        place(&path, &digest)?;
        layers.push(json!({"mediaType": media_type, "digest": digest, "size": size}));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": layers,
    }))
    .context("encode the manifest")?;
    let digest = format!("sha256:{}", hex(&Sha256::digest(&manifest).into()));
    let write = |path: PathBuf, bytes: &[u8]| {
        fs::write(&path, bytes).with_context(|| format!("{}: {}", file.display(), path.display()))
    };
    write(blobs.join(digest.trim_start_matches("sha256:")), &manifest)?;
    let mut annotations = BTreeMap::new();
    if let Some(tag) = image.repo_tags.as_ref().and_then(|t| t.first()) {
        annotations.insert("org.opencontainers.image.ref.name", tag.clone());
    }
    write(
        dir.join("index.json"),
        &serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": manifest.len(),
                "annotations": annotations,
            }],
        }))
        .context("encode the index")?,
    )?;
    write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
}
