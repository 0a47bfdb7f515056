//! The planner's view of the disk ([`Disk`]) over an open [`Sysroot`].

use format::record::DeploymentName;
use rustix::fd::OwnedFd;
use sysroot::{Bootable, Sysroot, executable_in};

use crate::plan::Disk;

/// [`Disk`] over an open sysroot, with the init and rescue paths to look for.
#[derive(Debug)]
pub struct SysrootDisk<'a> {
    /// The sysroot.
    pub sysroot: &'a Sysroot,
    /// The real init, absolute inside the deployment (`/sbin/init` or `berth.init=`).
    pub init: &'a [u8],
    /// Where the rescue shell is looked for, and its path there.
    pub rescue: Option<(&'a OwnedFd, &'a [u8])>,
}

impl Disk for SysrootDisk<'_> {
    fn probe(&mut self, name: &DeploymentName) -> Bootable {
        self.sysroot.probe(name, self.init)
    }

    fn only_deployment(&mut self) -> Option<DeploymentName> {
        let found = self.sysroot.deployments(2);
        if found.len() == 1 {
            found.first().copied()
        } else {
            None
        }
    }

    fn has_rescue(&mut self) -> bool {
        self.rescue
            .is_some_and(|(root, path)| executable_in(root, path))
    }

    fn loader_trial(&mut self) -> Option<DeploymentName> {
        self.sysroot.loader_trial()
    }

    fn last_good(&mut self) -> Option<DeploymentName> {
        self.sysroot.last_good()
    }
}
