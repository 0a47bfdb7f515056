//! `berth-image publish`: a static repository any web server or bucket can serve
//! (`docs/FORMAT.md`, "Static repositories").
//!
//! ```text
//! DIR/config                          berth-static-repo, version=1
//! DIR/updates/full-<commit>/          a full update, split form (superblock, part-NNNNN)
//! DIR/updates/<from>-<commit>/        a delta from <from>, split form
//! DIR/objects/<ab>/<cd…>.file|.tree    each object of the commit, a zstd frame
//! DIR/indexes/<commit>                the commit, its signatures and its objects' sizes
//! DIR/channels/<name>                 the signed channel pointer
//! ```
//!
//! Updates and objects are written first, each under a temporary name renamed into
//! place, then synced with one `syncfs`; the index next, and the channel pointer last (temporary file, fsync, rename, fsync of the directory), so a
//! reader never sees a pointer to something missing. An update already published is
//! kept as it is: its bytes are what earlier pointers signed.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use std::collections::HashSet;
use std::io::Read as _;

use format::channel::{self, Pointer, UpdateRef};
use format::index::{Index, IndexEntry};
use format::sig::Signatures;
use format::{EntryKind, ObjectId, ObjectKind};
use store::Repo;

use crate::delta::{self, DeltaArgs};
use crate::keys::SigningKeys;

/// What a release is made of, for `publish` and `push`: the commit, the keys (read),
/// the deltas to make and how to make them.
#[derive(Debug)]
pub struct Release {
    pub repo: PathBuf,
    /// The commit the channel points at.
    pub commit: String,
    /// Keys to sign the updates and the pointer with.
    pub keys: SigningKeys,
    /// Commits to make deltas from (the channel's previous commit is added).
    pub from: Vec<String>,
    /// Days until devices refuse the pointer (republish before then).
    pub expires_days: u64,
    pub part_size: u64,
    pub level: i32,
}

/// What `publish` wrote.
#[derive(Debug, serde::Serialize)]
pub struct PublishOutput {
    pub channel: String,
    pub serial: u64,
    pub commit: String,
    pub expires: u64,
    /// Bytes of the full update.
    pub full_bytes: u64,
    /// Each delta: the commit it starts from and its bytes.
    pub deltas: Vec<(String, u64)>,
    /// Objects the commit reaches, and their bytes as published (with the index).
    pub objects: u64,
    pub objects_bytes: u64,
}

pub const CONFIG: &str = "berth-static-repo\nversion=1\n";

/// The longest `--expires-in-days` accepted: ten years. The expiry is what stops a
/// captured pointer from holding devices on an old release (a freeze attack), so a
/// channel is meant to be republished well within it; ten years is past any sane
/// republish cadence and any device's support life. It is a limit of the publisher,
/// not of the format (devices accept any `expires` not before `issued`), and it keeps
/// `issued + days × 86,400` far from overflowing a u64 whatever the clock says.
pub const MAX_EXPIRES_DAYS: u64 = 3650;

fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp).with_context(|| format!("{}: create", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("{}: write", tmp.display()))?;
    fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("{}: rename into place", dir.join(name).display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: sync", dir.display()))
}

/// The reference a pointer makes to a published update directory.
fn update_ref(dir: &Path) -> Result<UpdateRef> {
    let sb = fs::read(dir.join("superblock"))
        .with_context(|| format!("{}: read", dir.join("superblock").display()))?;
    let mut total = sb.len() as u64;
    for e in fs::read_dir(dir).with_context(|| format!("{}: read", dir.display()))? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with("part-") {
            total += e.metadata()?.len();
        }
    }
    Ok(UpdateRef {
        superblock_len: sb.len() as u64,
        superblock_sha256: ObjectId::digest(&sb),
        total_len: total,
    })
}

/// The previous pointer of the channel, if the repository has one (not verified: it is
/// the publisher's own file; only its serial and commit are used).
fn previous(dir: &Path, name: &str) -> Result<Option<Pointer>> {
    let path = dir.join("channels").join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{}: read", path.display())),
    };
    let (body, _) = channel::split_file(&bytes).with_context(|| format!("{}", path.display()))?;
    Ok(Some(
        Pointer::decode(body).with_context(|| format!("{}", path.display()))?,
    ))
}

/// Checks that `dir` is a static repository, or makes it one if it is missing or empty.
fn init(dir: &Path) -> Result<()> {
    match fs::read_to_string(dir.join("config")) {
        Ok(text) if text == CONFIG => {}
        Ok(_) => bail!(
            "{}: not a berth static repository (its config is not berth-static-repo version 1)",
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).with_context(|| format!("{}: create", dir.display()))?;
            if fs::read_dir(dir)?.next().is_some() {
                bail!(
                    "{}: is not empty and has no config: not a berth static repository",
                    dir.display()
                );
            }
            write_durably(dir, "config", CONFIG.as_bytes())?;
        }
        Err(e) => return Err(e).with_context(|| format!("{}: read config", dir.display())),
    }
    Ok(())
}

/// The expiry of a pointer issued at `issued` (seconds) that lasts `days`, or the
/// error for days outside 1 to [`MAX_EXPIRES_DAYS`] (checked before anything is written,
/// with `issued` 0) or an expiry past the largest u64.
fn expires_at(days: u64, issued: u64) -> Result<u64> {
    if !(1..=MAX_EXPIRES_DAYS).contains(&days) {
        bail!("--expires-in-days {days}: must be from 1 to {MAX_EXPIRES_DAYS} (ten years)");
    }
    days.checked_mul(86_400)
        .and_then(|s| s.checked_add(issued))
        .with_context(|| {
            format!("--expires-in-days {days}: the expiry overflows (the clock says {issued})")
        })
}

/// Publishes `release` to the channel `name` of the static repository `to`, with a
/// serial of at least `serial_floor` (0: the previous serial + 1, or 1).
pub fn publish(
    release: &Release,
    to: &Path,
    name: &str,
    serial_floor: u64,
) -> Result<PublishOutput> {
    channel::check_name(name).with_context(|| format!("--channel {name}"))?;
    expires_at(release.expires_days, 0)?;
    let repo = Repo::open(&release.repo)?;
    let commit = repo.resolve_commit(&release.commit)?;
    let (c, _) = repo.read_commit(&commit)?;
    init(to)?;
    let updates = to.join("updates");
    let channels = to.join("channels");
    fs::create_dir_all(&updates)?;
    fs::create_dir_all(&channels)?;
    let prev = previous(to, name)?;

    let mut froms: Vec<ObjectId> = Vec::new();
    for f in &release.from {
        froms.push(repo.resolve_commit(f)?);
    }
    if let Some(p) = &prev
        && p.commit != commit
        && repo.has(&p.commit, format::ObjectKind::Commit)?
    {
        froms.push(p.commit);
    }
    froms.sort();
    froms.dedup();
    froms.retain(|f| *f != commit);

    let make = |from: Option<ObjectId>, dir_name: String| -> Result<UpdateRef> {
        let dest = updates.join(&dir_name);
        if !dest.exists() {
            delta::delta(&DeltaArgs {
                repo: release.repo.clone(),
                from: from.map(|f| f.to_string()),
                to: commit.to_string(),
                keys: &release.keys,
                output: dest.clone(),
                part_size: release.part_size,
                level: release.level,
                split: true,
                progress: false,
                window: delta::WINDOW,
                deflate: true,
                elf: true,
                by_kind: false,
            })?;
        }
        update_ref(&dest)
    };
    let full = make(None, format!("full-{commit}"))?;
    let (objects, count) = publish_objects(&repo, &commit, to, release.level)?;
    let mut deltas = Vec::new();
    for f in &froms {
        deltas.push((*f, make(Some(*f), format!("{f}-{commit}"))?));
    }
    let issued = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let pointer = Pointer {
        serial: match &prev {
            None => 1,
            Some(p) => p
                .serial
                .checked_add(1)
                .with_context(|| format!("channel {name}: its serial is at the largest value"))?,
        }
        .max(serial_floor),
        issued,
        expires: expires_at(release.expires_days, issued)?,
        channel: name.to_owned(),
        commit,
        version: c.version.to_string(),
        full,
        deltas,
        objects: Some(objects),
    };
    let body = pointer.encode();
    let mut sigs = Signatures::new();
    for k in release.keys.keys() {
        sigs.sign(&body, k).context("sign the channel pointer")?;
    }
    write_durably(
        &channels,
        name,
        &channel::encode_file(&body, &sigs.encode()),
    )?;
    Ok(PublishOutput {
        channel: name.to_owned(),
        serial: pointer.serial,
        commit: commit.to_string(),
        expires: pointer.expires,
        full_bytes: pointer.full.total_len,
        deltas: pointer
            .deltas
            .iter()
            .map(|(f, r)| (f.to_string(), r.total_len))
            .collect(),
        objects: count,
        objects_bytes: objects.total_len,
    })
}

/// Every file and tree object `root` reaches, each once, in a stable order.
fn reachable(repo: &Repo, root: &ObjectId) -> Result<Vec<(ObjectKind, ObjectId)>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut todo = vec![*root];
    seen.insert((ObjectKind::Tree, *root));
    while let Some(id) = todo.pop() {
        out.push((ObjectKind::Tree, id));
        for e in repo.read_tree(&id)?.entries() {
            let kind = match e.kind {
                EntryKind::File => ObjectKind::File,
                EntryKind::Tree => ObjectKind::Tree,
            };
            if seen.insert((kind, e.id)) {
                match kind {
                    ObjectKind::Tree => todo.push(e.id),
                    _ => out.push((kind, e.id)),
                }
            }
        }
    }
    Ok(out)
}

/// The canonical bytes of an object: a file's header and content, a tree's encoding.
fn object_bytes(repo: &Repo, kind: ObjectKind, id: &ObjectId) -> Result<Vec<u8>> {
    if kind == ObjectKind::Tree {
        return Ok(repo.read_tree(id)?.encode());
    }
    let (header, mut content) = repo.file_object(id)?;
    let mut bytes = header.encode();
    content
        .read_to_end(&mut bytes)
        .with_context(|| format!("object {id}: read"))?;
    Ok(bytes)
}

/// Writes every object of `commit` not yet in `to/objects/` as a zstd frame (the window
/// capped as the device's decoder requires), syncs them, then writes
/// `to/indexes/<commit>`. Returns the pointer's reference to the index and how many
/// objects it lists.
fn publish_objects(
    repo: &Repo,
    commit: &ObjectId,
    to: &Path,
    level: i32,
) -> Result<(UpdateRef, u64)> {
    let (c, commit_bytes) = repo.read_commit(commit)?;
    let mut entries = Vec::new();
    for (kind, id) in reachable(repo, &c.root)? {
        let hex = id.to_string();
        let dir = to.join("objects").join(&hex[..2]);
        let path = dir.join(format!("{}.{}", &hex[2..], kind.suffix()));
        let bytes = object_bytes(repo, kind, &id)?;
        if ObjectId::digest(&bytes) != id {
            bail!(
                "object {id} in {}: corrupt (run berth-image fsck)",
                repo.path().display()
            );
        }
        // An object published before is kept if it still decompresses to its id (a
        // publish cut short may have left one renamed but never synced).
        let intact = fs::read(&path)
            .ok()
            .filter(|z| zstd::decode_all(&z[..]).is_ok_and(|b| ObjectId::digest(&b) == id));
        let stored = if let Some(z) = intact {
            z.len() as u64
        } else {
            fs::create_dir_all(&dir).with_context(|| format!("{}: create", dir.display()))?;
            let mut enc = zstd::bulk::Compressor::new(level)?;
            enc.set_parameter(zstd::zstd_safe::CParameter::WindowLog(
                format::update::PART_WINDOW_MAX.trailing_zeros(),
            ))?;
            let z = enc.compress(&bytes)?;
            let tmp = dir.join(format!(".{}.tmp", &hex[2..]));
            fs::write(&tmp, &z).with_context(|| format!("{}: write", tmp.display()))?;
            fs::rename(&tmp, &path)
                .with_context(|| format!("{}: rename into place", path.display()))?;
            z.len() as u64
        };
        entries.push(IndexEntry {
            kind,
            id,
            stored,
            size: bytes.len() as u64,
        });
    }
    entries.sort_by_key(|e| (e.id, e.kind == ObjectKind::Tree));
    let count = entries.len() as u64;
    // The objects are durable before the index and the pointer that name them.
    let d = File::open(to).with_context(|| format!("{}: open", to.display()))?;
    rustix::fs::syncfs(&d).with_context(|| format!("{}: sync", to.display()))?;
    let sigs = repo.read_signatures(commit)?;
    let signatures = if sigs.entries().is_empty() {
        Vec::new()
    } else {
        sigs.encode()
    };
    let index = Index {
        commit: commit_bytes,
        signatures,
        entries,
    };
    let bytes = index.encode();
    let indexes = to.join("indexes");
    fs::create_dir_all(&indexes)?;
    write_durably(&indexes, &commit.to_string(), &bytes)?;
    Ok((
        UpdateRef {
            superblock_len: bytes.len() as u64,
            superblock_sha256: ObjectId::digest(&bytes),
            total_len: bytes.len() as u64 + index.stored_total(),
        },
        count,
    ))
}
