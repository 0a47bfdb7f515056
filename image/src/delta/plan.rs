//! What a delta sends, and against which bases: every object the target needs that the
//! base commit does not have, depth first, a directory's files before its tree; a tree
//! as an edit of the base's tree at the same place (or the most alike-named directory
//! that went away); a file with the base it may be patched against.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use format::ops;
use format::{EntryKind, ObjectId, Tree, TreeEntry};
use store::Repo;

/// The objects to send, in order, and the base walk's index of every object the
/// device has (see `docs/FORMAT.md`, "Part operations").
pub(super) struct Plan {
    pub base_index: HashMap<ObjectId, u64>,
    pub jobs: Vec<Job>,
}

/// Plans an update to the tree `root` from the commit `from` (`None`: a full update).
pub(super) fn plan(repo: &Repo, from: Option<&ObjectId>, root: &ObjectId) -> Result<Plan> {
    let mut base_index = HashMap::new();
    let mut by_name = HashMap::new();
    let mut base_root = None;
    if let Some(f) = from {
        let (c, _) = repo.read_commit(f)?;
        let mut order = Vec::new();
        // One walk: the base indices, and every file's name as its tree goes by.
        let mut read_tree = |id: &ObjectId| {
            let t = repo.read_tree(id)?;
            for e in t.entries().iter().filter(|e| e.kind == EntryKind::File) {
                by_name.entry(e.name.as_bytes().to_vec()).or_insert(e.id);
            }
            anyhow::Ok(t)
        };
        ops::base_order(&c.root, &mut read_tree, &mut order)?;
        for (i, (id, _)) in order.iter().enumerate() {
            base_index.entry(*id).or_insert(i as u64);
        }
        base_root = Some(c.root);
    }
    let mut planner = Planner {
        repo,
        by_name,
        have: base_index.keys().copied().collect(),
        jobs: Vec::new(),
    };
    planner.plan(root, base_root)?;
    Ok(Plan {
        base_index,
        jobs: planner.jobs,
    })
}

/// One object to send, in order.
pub(super) enum Job {
    File {
        id: ObjectId,
        /// A regular file the device has to patch from, and whether it is at the same
        /// path.
        base: Option<(ObjectId, bool)>,
    },
    /// A tree, read once while planning, and the base tree it is an edit of.
    Tree {
        id: ObjectId,
        tree: Tree,
        base: Option<(ObjectId, Tree)>,
    },
}

/// How alike two names are, in thousandths: the length of their common prefix and
/// suffix over the longer name's length (1000 for equal names).
fn likeness(a: &[u8], b: &[u8]) -> usize {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let rest = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(rest)
        .take_while(|(x, y)| x == y)
        .count();
    (prefix + suffix) * 1000 / a.len().max(b.len()).max(1)
}

/// Names at least this alike (and with no entry of their own in the new tree) are taken
/// for a renamed entry.
const LIKENESS_MIN: usize = 600;

/// Decides what to send and against which bases.
struct Planner<'a> {
    repo: &'a Repo,
    /// Base commit's files by name, for moves across directories.
    by_name: HashMap<Vec<u8>, ObjectId>,
    have: HashSet<ObjectId>,
    jobs: Vec<Job>,
}

impl Planner<'_> {
    /// The base entry for `e`: same name, else the most alike name of the same kind
    /// that the new tree no longer has.
    fn base_for(new: &Tree, base: Option<&Tree>, e: &TreeEntry) -> Option<(ObjectId, bool)> {
        let base = base?;
        if let Some(b) = base
            .entries()
            .binary_search_by(|b| b.name.cmp(&e.name))
            .ok()
            .map(|i| &base.entries()[i])
        {
            return (b.kind == e.kind).then_some((b.id, true));
        }
        base.entries()
            .iter()
            .filter(|b| b.kind == e.kind)
            .filter(|b| {
                new.entries()
                    .binary_search_by(|n| n.name.cmp(&b.name))
                    .is_err()
            })
            .map(|b| (likeness(b.name.as_bytes(), e.name.as_bytes()), b))
            .filter(|(l, _)| *l >= LIKENESS_MIN)
            .max_by_key(|x| x.0)
            .map(|(_, b)| (b.id, false))
    }

    fn plan(&mut self, tree: &ObjectId, base: Option<ObjectId>) -> Result<()> {
        if self.have.contains(tree) {
            return Ok(());
        }
        let t = self.repo.read_tree(tree)?;
        let bt = base
            .map(|b| self.repo.read_tree(&b).map(|t| (b, t)))
            .transpose()?;
        for e in t.entries() {
            match e.kind {
                EntryKind::Tree => {
                    let b = Self::base_for(&t, bt.as_ref().map(|b| &b.1), e).map(|(id, _)| id);
                    self.plan(&e.id, b)?;
                }
                EntryKind::File if self.have.insert(e.id) => {
                    let base = Self::base_for(&t, bt.as_ref().map(|b| &b.1), e)
                        .or_else(|| self.by_name.get(e.name.as_bytes()).map(|&id| (id, false)));
                    self.jobs.push(Job::File { id: e.id, base });
                }
                EntryKind::File => {}
            }
        }
        self.jobs.push(Job::Tree {
            id: *tree,
            tree: t,
            base: bt,
        });
        self.have.insert(*tree);
        Ok(())
    }
}
