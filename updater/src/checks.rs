//! Checks on the trees an update makes, done as each tree is made, so that a refused
//! tree is never published: how deep directories nest, and symlinks whose relative
//! targets leave the deployment (`format::link`).
//!
//! Trees are made bottom-up (a directory's entries before the directory), so each
//! tree's facts are worked out from its entries' facts, remembered by object id:
//! how many directory levels it holds below itself, and its worst symlink (the one
//! that climbs furthest above the tree, with its path). Entries the update did not make
//! (kept from the device's commit, or named by id) are read from the store once. The
//! commit's root tree must then hold no symlink that climbs above it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use format::limits::TREE_DEPTH_MAX;
use format::{EntryKind, ObjectId, Tree};
use store::Repo;

use crate::UpdaterError;
use crate::error::bad;

/// A symlink below a tree that climbs above it.
#[derive(Debug, Clone)]
struct Escape {
    /// Its path from the tree.
    path: Vec<u8>,
    target: Vec<u8>,
    /// How many levels above the tree it climbs (`usize::MAX`: a `..` after a name,
    /// which is refused at any depth).
    above: usize,
}

#[derive(Debug, Clone)]
struct Facts {
    /// Directory levels below the tree (0: no subdirectories).
    nesting: usize,
    escape: Option<Escape>,
}

/// What the checks know of the update being applied; lives for the whole run.
#[derive(Debug)]
pub(crate) struct TreeChecks<'r> {
    repo: &'r Repo,
    /// The commit's root tree.
    root: ObjectId,
    /// Whether a part of this run made the root tree.
    pub root_made: bool,
    facts: HashMap<ObjectId, Facts>,
    /// Trees fetched but not yet published (an object pull), read before the store.
    pending: Option<&'r HashMap<ObjectId, Tree>>,
    /// Targets of the symlinks this run made; the other files it made.
    links: HashMap<ObjectId, Vec<u8>>,
    plain: HashSet<ObjectId>,
}

impl<'r> TreeChecks<'r> {
    pub(crate) fn new(repo: &'r Repo, root: ObjectId) -> Self {
        Self {
            repo,
            root,
            root_made: false,
            facts: HashMap::new(),
            pending: None,
            links: HashMap::new(),
            plain: HashSet::new(),
        }
    }

    /// Trees to check that are not in the store yet (fetched by an object pull, whose
    /// files are in the store already).
    pub(crate) fn pending(&mut self, trees: &'r HashMap<ObjectId, Tree>) {
        self.pending = Some(trees);
    }

    /// The commit's root tree.
    pub(crate) fn root(&self) -> ObjectId {
        self.root
    }

    /// Notes a file object this run made (`target`: a symlink's).
    pub(crate) fn made_file(&mut self, id: ObjectId, target: Option<Vec<u8>>) {
        match target {
            Some(t) => {
                self.links.insert(id, t);
            }
            None => {
                self.plain.insert(id);
            }
        }
    }

    /// Checks a tree this run made, before it is published; the commit's root tree
    /// must hold no escaping symlink.
    pub(crate) fn made_tree(
        &mut self,
        tree: &Tree,
        id: ObjectId,
        shown: &Path,
        op: u64,
    ) -> Result<(), UpdaterError> {
        let facts = self.compute(tree, shown, 0)?;
        if facts.nesting > TREE_DEPTH_MAX {
            return Err(bad(
                shown,
                format!(
                    "operation {op} makes a tree nested {} directories deep, over the limit of {TREE_DEPTH_MAX}",
                    facts.nesting
                ),
            ));
        }
        self.facts.insert(id, facts);
        if id == self.root {
            self.root_made = true;
            self.check_root(shown)?;
        }
        Ok(())
    }

    /// Checks the commit's root tree (made by this run or found in the store).
    pub(crate) fn check_root(&mut self, shown: &Path) -> Result<(), UpdaterError> {
        let root = self.root;
        let facts = self.facts_of(&root, shown, 0)?;
        if facts.nesting > TREE_DEPTH_MAX {
            return Err(bad(
                shown,
                format!(
                    "the commit's root tree is nested {} directories deep, over the limit of {TREE_DEPTH_MAX}",
                    facts.nesting
                ),
            ));
        }
        match facts.escape {
            Some(e) => {
                let depth = e.path.split(|&b| b == b'/').count() - 1;
                let why = format::link::check(&e.target, depth)
                    .err()
                    .map_or_else(|| "leaves the root".to_owned(), |w| w.to_string());
                Err(bad(
                    shown,
                    format!(
                        "symlink {} -> {}: {why}",
                        e.path.escape_ascii(),
                        e.target.escape_ascii()
                    ),
                ))
            }
            None => Ok(()),
        }
    }

    /// The facts of a tree in the store (or made by this run), `level` below the tree
    /// that asked.
    fn facts_of(
        &mut self,
        id: &ObjectId,
        shown: &Path,
        level: usize,
    ) -> Result<Facts, UpdaterError> {
        if let Some(f) = self.facts.get(id) {
            return Ok(f.clone());
        }
        let read;
        let tree = if let Some(t) = self.pending.and_then(|p| p.get(id)) {
            t
        } else {
            read = self.repo.read_tree(id)?;
            &read
        };
        let f = self.compute(tree, shown, level)?;
        self.facts.insert(*id, f.clone());
        Ok(f)
    }

    fn compute(&mut self, tree: &Tree, shown: &Path, level: usize) -> Result<Facts, UpdaterError> {
        // Bounded recursion: a store tree nested too deep is refused, not followed.
        if level > TREE_DEPTH_MAX {
            return Err(bad(
                shown,
                format!("names trees nested deeper than the limit of {TREE_DEPTH_MAX}"),
            ));
        }
        let mut nesting = 0;
        let mut worst: Option<Escape> = None;
        let mut consider = |e: Escape| {
            if worst.as_ref().is_none_or(|w| e.above > w.above) {
                worst = Some(e);
            }
        };
        for entry in tree.entries() {
            let name = entry.name.as_bytes();
            match entry.kind {
                EntryKind::Tree => {
                    let child = self.facts_of(&entry.id, shown, level + 1)?;
                    nesting = nesting.max(child.nesting + 1);
                    if let Some(e) = child.escape
                        && e.above > 1
                    {
                        let mut path = name.to_vec();
                        path.push(b'/');
                        path.extend_from_slice(&e.path);
                        consider(Escape {
                            path,
                            target: e.target,
                            above: if e.above == usize::MAX {
                                usize::MAX
                            } else {
                                e.above - 1
                            },
                        });
                    }
                }
                EntryKind::File => {
                    let Some(target) = self.target(&entry.id)? else {
                        continue;
                    };
                    let above = format::link::climb(&target).unwrap_or(usize::MAX);
                    if above > 0 {
                        consider(Escape {
                            path: name.to_vec(),
                            target,
                            above,
                        });
                    }
                }
            }
        }
        Ok(Facts {
            nesting,
            escape: worst,
        })
    }

    /// A file object's symlink target, or `None` if it is not a symlink.
    fn target(&self, id: &ObjectId) -> Result<Option<Vec<u8>>, UpdaterError> {
        if let Some(t) = self.links.get(id) {
            return Ok(Some(t.clone()));
        }
        if self.plain.contains(id) {
            return Ok(None);
        }
        Ok(self.repo.symlink_target(id)?)
    }
}
