//! Key files: generating a pair, and reading secret and public keys with errors that
//! say which file is wrong and why. Commands read keys here, once, and hand the parsed
//! keys down; nothing below a command reads a key file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ed25519_dalek::{SigningKey, VerifyingKey};
use format::key::{self, KeyFileKind};

/// Largest key file read; real ones are under 100 bytes.
const KEY_FILE_MAX: u64 = 4096;

/// Writes `dir/berth.key` (0600) and `dir/berth.pub`; refuses to overwrite either.
pub fn keygen(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: create directory", dir.display()))?;
    let secret_path = dir.join("berth.key");
    let public_path = dir.join("berth.pub");
    for p in [&secret_path, &public_path] {
        if p.symlink_metadata().is_ok() {
            bail!(
                "{}: already exists; refusing to overwrite a key",
                p.display()
            );
        }
    }
    let mut seed = [0u8; 32];
    let mut filled = 0;
    while filled < seed.len() {
        filled +=
            rustix::rand::getrandom(&mut seed[filled..], rustix::rand::GetRandomFlags::empty())
                .context("read random bytes from the kernel")?;
    }
    let sk = SigningKey::from_bytes(&seed);
    write_new(&secret_path, key::format_secret(&sk).as_bytes(), 0o600)?;
    write_new(
        &public_path,
        key::format_public(&sk.verifying_key()).as_bytes(),
        0o644,
    )?;
    Ok((secret_path, public_path))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("{}: create", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("{}: write", path.display()))?;
    f.sync_all()
        .with_context(|| format!("{}: fsync", path.display()))
}

fn read_key_file(path: &Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read key", path.display()))?;
    if meta.len() > KEY_FILE_MAX {
        bail!(
            "{}: not a berth key file (it is {} bytes long)",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("{}: cannot read key", path.display()))
}

/// Reads a secret key, explaining a public key or any other file given by mistake.
pub fn read_secret(path: &Path) -> Result<SigningKey> {
    let text = read_key_file(path)?;
    match key::kind_of(&text) {
        Some(KeyFileKind::Secret) => {
            key::parse_secret(&text).with_context(|| format!("{}: bad secret key", path.display()))
        }
        Some(KeyFileKind::Public) => {
            bail!(
                "{}: is a public key; signing needs the secret key (berth.key)",
                path.display()
            )
        }
        None => bail!(
            "{}: not a berth key file (make one with `berth-image keygen`)",
            path.display()
        ),
    }
}

/// Reads a public key, explaining a secret key or any other file given by mistake.
pub fn read_public(path: &Path) -> Result<VerifyingKey> {
    let text = read_key_file(path)?;
    match key::kind_of(&text) {
        Some(KeyFileKind::Public) => {
            key::parse_public(&text).with_context(|| format!("{}: bad public key", path.display()))
        }
        Some(KeyFileKind::Secret) => bail!(
            "{}: is a secret key; verification takes the public key (berth.pub)",
            path.display()
        ),
        None => bail!(
            "{}: not a berth key file (make one with `berth-image keygen`)",
            path.display()
        ),
    }
}

/// Secret keys to sign with (at least one), read from their files, with the files'
/// names for messages.
#[derive(Debug)]
pub struct SigningKeys {
    files: Vec<PathBuf>,
    keys: Vec<SigningKey>,
}

impl SigningKeys {
    /// Reads the secret keys at `paths`; refuses none at all.
    pub fn read(paths: &[PathBuf]) -> Result<Self> {
        if paths.is_empty() {
            bail!("--key: at least one secret key is needed to sign");
        }
        Ok(Self {
            files: paths.to_vec(),
            keys: paths
                .iter()
                .map(|p| read_secret(p))
                .collect::<Result<_>>()?,
        })
    }

    /// The keys, in the order given (never empty).
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// Their public halves.
    pub fn verifying(&self) -> Vec<VerifyingKey> {
        self.keys.iter().map(SigningKey::verifying_key).collect()
    }

    /// The files they came from, for messages: `a.key, b.key`.
    pub fn files(&self) -> String {
        self.files
            .iter()
            .map(|k| k.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
