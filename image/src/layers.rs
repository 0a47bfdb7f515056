//! Applying OCI image layers: each layer is a tar changeset laid over the ones below it,
//! as the OCI image specification's "Applying Changesets" and "Whiteouts" say
//! (<https://github.com/opencontainers/image-spec/blob/main/layer.md>), and the result is
//! written as tree objects once the last layer is applied.
//!
//! Every entry is read exactly as a tarball's is (`tarball::read_entry`: the same path
//! safety, entry types, PAX xattrs and owners), then placed:
//! - an entry over a directory of a lower layer that is a directory too replaces only
//!   the directory's metadata and keeps its children; any other entry replaces what a
//!   lower layer had at its path (a file over a directory drops the directory's subtree);
//! - `DIR/.wh.NAME` hides `DIR/NAME` of the lower layers, and `DIR/.wh..wh..opq` hides
//!   every child of `DIR` of the lower layers, wherever the whiteout stands in the
//!   archive: whiteouts apply to lower layers only, so what the same layer adds stays.
//!   A whiteout is never stored. Other `.wh..wh.` names (aufs bookkeeping) are ignored,
//!   as container runtimes ignore them;
//! - a hard link may name a file of this layer read earlier or of a lower layer.
//!
//! Refused, naming the entry: what a tarball refuses; an entry whose parent path is not
//! a directory (a lower layer's symlink is not followed, as a runtime extracting into a
//! directory would: image layers list real paths), and an entry added twice in one layer
//! with different types.
//!
//! Directories only implied by their children (no entry of their own) get mode 0755,
//! root-owned, as in a tarball; a directory whose lower-layer metadata is hidden by a
//! whiteout but that the layer itself only implies gets those defaults too.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use anyhow::{Context, Result, anyhow, bail};
use format::limits::TREE_DEPTH_MAX;
use format::{DirMeta, EntryKind, EntryName, ObjectId, Tree, TreeEntry};
use store::Txn;
use store::build::{BuildStats, MemDir, Progress};

use crate::tarball::{self, Item};

/// The prefix that marks a whiteout.
const WHITEOUT: &[u8] = b".wh.";
/// The name that makes its directory opaque.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// The prefix of aufs bookkeeping names (hard link directories and the like).
const AUFS_META: &[u8] = b".wh..wh.";

/// Bounds on what the layers of one image may unpack to, all layers together: past
/// either, a layer is refused as a bomb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of uncompressed tar streams.
    pub bytes: u64,
    /// Tar entries.
    pub entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bytes: format::limits::OCI_UNPACKED_MAX,
            entries: format::limits::OCI_ENTRIES_MAX,
        }
    }
}

/// A file system assembled layer by layer; see the module documentation.
#[derive(Debug)]
pub struct Layers {
    root: Dir,
    /// The number of the layer being applied; 0 before the first.
    layer: u32,
    stats: BuildStats,
    limits: Limits,
    /// Uncompressed bytes and entries read so far, all layers together.
    unpacked: u64,
    entries: u64,
}

/// A reader that fails once more than `left` bytes came through it, and says so in
/// `over` (the tar reader only passes the error's text on).
struct Bounded<R> {
    inner: R,
    left: u64,
    read: u64,
    over: Rc<Cell<bool>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.left {
            self.over.set(true);
            return Err(io::Error::other("unpacks to more than the limit"));
        }
        Ok(n)
    }
}

#[derive(Debug)]
enum Node {
    File { id: ObjectId, layer: u32 },
    Dir(Dir),
}

impl Node {
    /// The last layer that placed this entry or anything below it.
    fn layer(&self) -> u32 {
        match self {
            Node::File { layer, .. } => *layer,
            Node::Dir(d) => d.layer,
        }
    }
}

#[derive(Debug)]
struct Dir {
    meta: DirMeta,
    /// The layer whose entry gave `meta`; `None` for the defaults of an implied directory.
    meta_layer: Option<u32>,
    /// The last layer that placed this directory or anything below it.
    layer: u32,
    children: BTreeMap<EntryName, Node>,
}

impl Dir {
    fn implied(layer: u32) -> Self {
        Self {
            meta: MemDir::implied_meta(),
            meta_layer: None,
            layer,
            children: BTreeMap::new(),
        }
    }

    /// Hides everything below this directory that a layer before `layer` placed.
    fn hide_lower(&mut self, layer: u32) {
        self.children.retain(|_, n| n.layer() >= layer);
        for node in self.children.values_mut() {
            if let Node::Dir(d) = node {
                d.forget_lower_meta(layer);
                d.hide_lower(layer);
            }
        }
    }

    /// Drops metadata a layer before `layer` gave (the directory it described is hidden).
    fn forget_lower_meta(&mut self, layer: u32) {
        if self.meta_layer.is_some_and(|l| l < layer) {
            self.meta = MemDir::implied_meta();
            self.meta_layer = None;
        }
    }

    fn write(&self, txn: &mut Txn<'_>) -> Result<ObjectId> {
        let mut entries = Vec::with_capacity(self.children.len());
        for (name, node) in &self.children {
            let (kind, id) = match node {
                Node::File { id, .. } => (EntryKind::File, *id),
                Node::Dir(d) => (EntryKind::Tree, d.write(txn)?),
            };
            entries.push(TreeEntry {
                name: name.clone(),
                kind,
                id,
            });
        }
        let tree = Tree::new(self.meta.clone(), entries).context("image tree")?;
        Ok(txn.write_tree(&tree)?)
    }
}

/// A whiteout read from the layer being applied: the directory it stands in, and the
/// name it hides (`None`: the directory is opaque).
struct Whiteout {
    dir: Vec<EntryName>,
    name: Option<EntryName>,
}

fn names(comps: &[&[u8]]) -> Result<Vec<EntryName>, format::FormatError> {
    comps.iter().map(|c| EntryName::new(c)).collect()
}

impl Layers {
    /// An empty file system: a root directory with the implied defaults.
    pub fn new(limits: Limits) -> Self {
        Self {
            root: Dir::implied(0),
            layer: 0,
            stats: BuildStats::default(),
            limits,
            unpacked: 0,
            entries: 0,
        }
    }

    /// What the layers applied so far held (entries hidden later count too).
    pub fn stats(&self) -> BuildStats {
        self.stats
    }

    /// Applies the next layer, the uncompressed tar stream `reader` (named `shown` in
    /// messages), storing its files in `txn`, and reads the stream to its end; returns
    /// the reader, so that the caller can check the stream's digest.
    pub fn apply<R: Read>(
        &mut self,
        txn: &mut Txn<'_>,
        reader: R,
        shown: &Path,
        progress: Progress<'_>,
    ) -> Result<R> {
        self.layer = self
            .layer
            .checked_add(1)
            .context("more layers than this tool counts")?;
        let over = Rc::new(Cell::new(false));
        let bounded = Bounded {
            inner: reader,
            left: self.limits.bytes.saturating_sub(self.unpacked),
            read: 0,
            over: over.clone(),
        };
        let mut whiteouts = Vec::new();
        let result = tarball::each_entry(bounded, shown, |entry, comps, entry_shown| {
            self.entries += 1;
            if self.entries > self.limits.entries {
                bail!(
                    "{}: the image holds more than {} entries (--max-entries)",
                    shown.display(),
                    self.limits.entries
                );
            }
            self.entry(txn, entry, comps, entry_shown, &mut whiteouts)?;
            if self.stats.files.is_multiple_of(1000) {
                progress(&self.stats);
            }
            Ok(())
        })
        .and_then(|mut rest| {
            // What follows the end-of-archive marker is part of the stream its digest
            // covers; bounded too.
            io::copy(&mut rest, &mut io::sink())
                .with_context(|| format!("{}: read", shown.display()))?;
            Ok(rest)
        });
        if over.get() {
            bail!(
                "{}: the image unpacks to more than {} bytes (--max-unpacked)",
                shown.display(),
                self.limits.bytes
            );
        }
        let rest = result?;
        self.unpacked += rest.read;
        for w in whiteouts {
            self.white_out(&w);
        }
        progress(&self.stats);
        Ok(rest.inner)
    }

    /// Reads one entry: a whiteout is noted in `whiteouts`, anything else placed.
    fn entry<R: Read>(
        &mut self,
        txn: &mut Txn<'_>,
        entry: &mut tar::Entry<'_, R>,
        comps: &[&[u8]],
        entry_shown: &Path,
        whiteouts: &mut Vec<Whiteout>,
    ) -> Result<()> {
        let bad = |e: format::FormatError| anyhow!("{}: {e}", entry_shown.display());
        if let Some((last, parent)) = comps.split_last()
            && last.starts_with(WHITEOUT)
        {
            let name = if *last == OPAQUE {
                None
            } else if last.starts_with(AUFS_META) {
                return Ok(());
            } else {
                let hidden = last.get(WHITEOUT.len()..).unwrap_or_default();
                Some(EntryName::new(hidden).map_err(|e| {
                    anyhow!("{}: whiteout of an unsafe name: {e}", entry_shown.display())
                })?)
            };
            whiteouts.push(Whiteout {
                dir: names(parent).map_err(bad)?,
                name,
            });
            return Ok(());
        }
        let path = names(comps).map_err(bad)?;
        match tarball::read_entry(txn, entry, comps, entry_shown, &mut self.stats)? {
            Item::Dir(meta) => self.place(&path, Placed::Dir(meta)),
            Item::File(id) => self.place(&path, Placed::File(id)),
            Item::HardLink(target) => {
                let id = self.file_at(&target.comps()).with_context(|| {
                    format!(
                        "hard link to {:?}, which is not a file of this layer read earlier or of a lower layer",
                        target.shown()
                    )
                });
                self.stats.files += 1;
                id.and_then(|id| self.place(&path, Placed::File(id)))
            }
            Item::Skip => Ok(()),
        }
        .map_err(|e| anyhow!("{}: {e:#}", entry_shown.display()))
    }

    /// Writes the file system as tree objects; returns the root tree's id.
    pub fn write(&self, txn: &mut Txn<'_>) -> Result<ObjectId> {
        self.root.write(txn)
    }

    /// The directory at `path`, each directory on the way marked as placed by this layer.
    fn walk(&mut self, path: &[EntryName]) -> Result<&mut Dir> {
        if path.len() > TREE_DEPTH_MAX {
            bail!("nested deeper than {TREE_DEPTH_MAX} directories");
        }
        let layer = self.layer;
        let mut dir = &mut self.root;
        dir.layer = layer;
        for name in path {
            let node = dir
                .children
                .entry(name.clone())
                .or_insert_with(|| Node::Dir(Dir::implied(layer)));
            dir = match node {
                Node::Dir(d) => d,
                Node::File { .. } => bail!("a parent of this path is not a directory"),
            };
            dir.layer = layer;
        }
        Ok(dir)
    }

    fn place(&mut self, path: &[EntryName], what: Placed) -> Result<()> {
        let layer = self.layer;
        let Some((name, parent)) = path.split_last() else {
            // The root: `read_entry` refuses anything but a directory there.
            if let Placed::Dir(meta) = what {
                self.root.meta = meta;
                self.root.meta_layer = Some(layer);
            }
            return Ok(());
        };
        let dir = self.walk(parent)?;
        match (what, dir.children.get_mut(name)) {
            (Placed::Dir(meta), Some(Node::Dir(d))) => {
                // Both directories: only the metadata changes (the specification's
                // "Changeset over existing files").
                d.meta = meta;
                d.meta_layer = Some(layer);
                d.layer = layer;
            }
            (Placed::Dir(_), Some(Node::File { layer: l, .. })) if *l == layer => {
                bail!("already present as a file in the same layer")
            }
            (Placed::Dir(meta), _) => {
                dir.children.insert(
                    name.clone(),
                    Node::Dir(Dir {
                        meta,
                        meta_layer: Some(layer),
                        layer,
                        children: BTreeMap::new(),
                    }),
                );
            }
            (Placed::File(_), Some(Node::Dir(d))) if d.layer == layer => {
                bail!("already present as a directory in the same layer")
            }
            (Placed::File(id), _) => {
                dir.children.insert(name.clone(), Node::File { id, layer });
            }
        }
        Ok(())
    }

    fn file_at(&self, path: &[&[u8]]) -> Option<ObjectId> {
        let (last, parents) = path.split_last()?;
        let mut dir = &self.root;
        for comp in parents {
            match dir.children.get(&EntryName::new(comp).ok()?)? {
                Node::Dir(d) => dir = d,
                Node::File { .. } => return None,
            }
        }
        match dir.children.get(&EntryName::new(last).ok()?)? {
            Node::File { id, .. } => Some(*id),
            Node::Dir(_) => None,
        }
    }

    /// Applies a whiteout of the layer just read to what the lower layers placed.
    fn white_out(&mut self, w: &Whiteout) {
        let layer = self.layer;
        let mut dir = &mut self.root;
        for name in &w.dir {
            match dir.children.get_mut(name) {
                Some(Node::Dir(d)) => dir = d,
                // Nothing there to hide.
                _ => return,
            }
        }
        let Some(name) = &w.name else {
            dir.hide_lower(layer);
            return;
        };
        match dir.children.get_mut(name) {
            Some(n) if n.layer() < layer => {
                dir.children.remove(name);
            }
            // This layer's own directory there: the lower one under it is hidden.
            Some(Node::Dir(d)) => {
                d.forget_lower_meta(layer);
                d.hide_lower(layer);
            }
            // Nothing there, or this layer's own file, which has already replaced the
            // lower entry.
            None | Some(Node::File { .. }) => {}
        }
    }
}

enum Placed {
    Dir(DirMeta),
    File(ObjectId),
}
