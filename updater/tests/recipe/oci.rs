//! OCI image recipes (`input oci`): an image layout whose layers are tarball recipes.
//!
//! `layer [plain|zstd]` starts a layer; the tarball statements that follow (`entry …`,
//! `no-end`) make it; `entries N` adds N empty files `f0`…; `bomb SIZE` makes the layer
//! one file of SIZE zero bytes, zstd-compressed as it is written (a few kilobytes).
//! `forge diff-id` puts a wrong `diff_id` for the last layer in the config, and
//! `forge layer-flip` flips a byte of the last layer's blob after its digest was taken.
//! Everything else is sound: digests, sizes, media types.

use std::io::Write;
use std::path::Path;

use format::ObjectId;
use serde_json::json;
use sha2::{Digest, Sha256};

#[derive(Default)]
struct Layer {
    zstd: bool,
    statements: Vec<Vec<String>>,
    entries: u64,
    bomb: Option<u64>,
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", ObjectId::digest(bytes))
}

fn blob(dir: &Path, bytes: &[u8]) -> String {
    let digest = sha(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
    digest
}

/// The uncompressed tar of a layer.
fn tar_of(layer: &Layer) -> Vec<u8> {
    let mut statements = layer.statements.clone();
    for i in 0..layer.entries {
        statements.insert(0, vec!["entry".into(), "file".into(), format!("\"f{i}\"")]);
    }
    super::tar::build(&statements)
}

/// A tar of one file of `size` zero bytes, zstd-compressed as it is made; its
/// uncompressed digest too.
fn bomb(size: u64) -> (Vec<u8>, String) {
    let mut header = super::tar::build(&[vec![
        "entry".into(),
        "file".into(),
        "\"zeros\"".into(),
        format!("size={size}"),
    ]]);
    // The recipe writes the header, no content, the end blocks: the header is kept.
    header.truncate(512);
    let mut hash = Sha256::new();
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let mut put = |b: &[u8]| {
        hash.update(b);
        z.write_all(b).unwrap();
    };
    put(&header);
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        put(&zeros[..n]);
        left -= n as u64;
    }
    put(&vec![0u8; (512 - (size % 512) as usize) % 512 + 1024]);
    let digest = format!("sha256:{}", ObjectId::from_bytes(hash.finalize().into()));
    (z.finish().unwrap(), digest)
}

/// Writes the layout of the image the statements describe into `dir`.
pub fn build(statements: &[Vec<String>], dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layers: Vec<Layer> = Vec::new();
    let (mut bad_diff_id, mut flip) = (false, false);
    for toks in statements {
        match toks[0].as_str() {
            "layer" => layers.push(Layer {
                zstd: toks.get(1).is_some_and(|t| t == "zstd"),
                ..Layer::default()
            }),
            "forge" => match toks[1].as_str() {
                "diff-id" => bad_diff_id = true,
                "layer-flip" => flip = true,
                other => panic!("unknown forge {other:?}"),
            },
            _ => {
                if layers.is_empty() {
                    layers.push(Layer::default());
                }
                let l = layers.last_mut().unwrap();
                match toks[0].as_str() {
                    "entries" => l.entries = super::num(&toks[1]),
                    "bomb" => l.bomb = Some(super::num(&toks[1])),
                    _ => l.statements.push(toks.clone()),
                }
            }
        }
    }
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in &layers {
        let (bytes, diff_id, media) = if let Some(size) = l.bomb {
            let (z, d) = bomb(size);
            (z, d, "application/vnd.oci.image.layer.v1.tar+zstd")
        } else {
            let tar = tar_of(l);
            let d = sha(&tar);
            if l.zstd {
                (
                    zstd::encode_all(&tar[..], 3).unwrap(),
                    d,
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                )
            } else {
                (tar, d, "application/vnd.oci.image.layer.v1.tar")
            }
        };
        let digest = blob(dir, &bytes);
        descs.push(json!({"mediaType": media, "digest": digest, "size": bytes.len()}));
        diff_ids.push(diff_id);
    }
    if bad_diff_id {
        *diff_ids.last_mut().unwrap() = format!("sha256:{}", "0".repeat(64));
    }
    if flip {
        let digest = descs.last().unwrap()["digest"].as_str().unwrap().to_owned();
        let path = dir.join("blobs/sha256").join(&digest[7..]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(path, bytes).unwrap();
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config = json!({
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": blob(dir, &config), "size": config.len(),
    });
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": descs,
    }))
    .unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": blob(dir, &manifest), "size": manifest.len(),
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}
