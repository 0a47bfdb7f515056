//! Made-up host names that resolve to 127.0.0.1 for one command, so that a test reaches
//! a TLS server on 127.0.0.1 by a name that is not `localhost` (a registry on localhost
//! is plain HTTP by convention, and the certificate is for the made-up name). The
//! command runs under `unshare --mount` with a scratch `/etc/hosts` bind-mounted over
//! the real one in its own mount namespace: nothing outside the command sees the names.
//! Needs root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch hosts file naming 127.0.0.1 (and nothing else).
#[derive(Debug)]
pub struct Hosts {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl Hosts {
    /// `localhost` and `names`, all 127.0.0.1.
    pub fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let file = dir.path().join("hosts");
        std::fs::write(&file, format!("127.0.0.1 localhost {}\n", names.join(" ")))
            .expect("write the hosts file");
        Self { _dir: dir, file }
    }

    /// A command that runs `program` with these names (add its arguments).
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            r#"mount --bind "$0" /etc/hosts && exec "$@""#,
        ])
        .arg(&self.file)
        .arg(program);
        c
    }
}
