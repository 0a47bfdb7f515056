//! berth's command line: what each command and flag takes, with the help it prints.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use updater::DEFAULT_SYSROOT;

/// The Berth device agent: applies signed updates from a file or an https:// (or
/// http://) repository, shows the deployments, marks a trial good, rolls back, and
/// checks and repairs the store.
///
/// Run in the booted system: the physical sysroot is at /sysroot, and berth-init's
/// report of this boot is /run/berth/boot.json.
///
/// Commands that write (update, gc, fsck --repair, mark-good, rollback) take a lock on
/// the sysroot and wait --wait seconds for one another; status and check never wait.
///
/// Exit status: 0 success, 1 error, 2 bad command line, 75 the lock is held by another
/// berth command (try again later); `check`: 100 when an update is available.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, long_about, verbatim_doc_comment)]
pub(crate) struct Cli {
    /// The sysroot (the partition holding berth/).
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_SYSROOT)]
    pub(crate) sysroot: PathBuf,
    /// berth-init's report of this boot (which deployment is booted, and why).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/run/berth/boot.json"
    )]
    pub(crate) boot_json: PathBuf,
    /// The boot partition, mounted at DIR, for a board whose loader boots the
    /// deployments' kernels (berth/boot/loader.conf). Without it, berth mounts the
    /// partition that file names while it works on it.
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) boot_dir: Option<PathBuf>,
    /// How long a command that writes waits for another one to finish (seconds).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 5)]
    pub(crate) wait: u64,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Be a device of an Eclipse hawkBit server (or goosebit): poll it, install what it
    /// assigns (the delta from the running commit when the action carries one, else the
    /// full update; every check of `berth update`), download-only actions and
    /// maintenance windows included, answer cancels, and report each action's end once
    /// the trial is committed or rolled back (docs/FLEET.md).
    ///
    /// Settings come from /etc/berth/agent.toml; flags override them.
    Agent(crate::agent::AgentArgs),
    /// Decide a trial by its health: booted into the trial, run the checks (every
    /// executable in /etc/berth/health.d, then each --health-check); all pass: mark it
    /// good; one fails: roll back and reboot. Booted into anything else: nothing to do.
    /// berth-health.service runs it before boot-complete.target.
    ///
    /// Exit status: 0 committed or nothing to decide, 1 rolled back or error.
    Health(crate::agent::HealthArgs),
    /// Show the deployments (booted, default, trial, previous), their versions, and the
    /// last rollback with its reason.
    Status {
        /// Print JSON for programs.
        #[arg(long)]
        json: bool,
    },
    /// Make the booted trial the default (the old default becomes previous). Meant for
    /// a health-check unit: run it once the new system has proved itself. Fails unless
    /// the booted deployment is the trial.
    MarkGood,
    /// Make the next boot use the previous state: drop a pending trial, or else swap the
    /// default and the previous deployment. Recorded as a manual rollback.
    ///
    /// Run twice, it rolls back twice. A script that may retry (after a power cut, say)
    /// names what it rolls back from with --from, and a retry then does nothing.
    Rollback {
        /// Roll back only if DEPLOYMENT is still the trial (or, with no trial, the
        /// default); otherwise report that it is done and change nothing.
        #[arg(long, value_name = "DEPLOYMENT")]
        from: Option<String>,
    },
    /// Apply a signed update file (from berth-image delta): verify its signature against
    /// the keys the default deployment trusts, refuse a version that is not newer, check
    /// free space, apply its parts (resuming after an interruption), check out the new
    /// deployment, carry /etc changes forward, and make it the trial for the next boot.
    Update {
        /// The update file (a path; a USB stick's mount point works), the URL of a
        /// static repository (`https://HOST/PATH` or `http://HOST/PATH`, from
        /// berth-image publish) with --channel, or an OCI registry's tag
        /// (`oci://REGISTRY/NAME:TAG`, from berth-image push; the tag is the channel).
        file: PathBuf,
        /// The channel to follow in a repository URL. The delta from the running commit
        /// is fetched when the channel has one; else only the objects the device lacks,
        /// or the full update when that costs fewer bytes. Downloads resume where they
        /// stopped, across runs and reboots.
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Slowest acceptable average rate of one download request, in bytes per second;
        /// a slower one is cut and resumed.
        #[arg(long, value_name = "BYTES", default_value_t = 1024)]
        min_rate: u64,
        /// Seconds to wait before retrying a download request that failed or brought
        /// nothing new (a server down, a link gone); doubled after each such request in
        /// a row, at most 60. Six such requests in a row end the run. A dropped
        /// connection that delivered bytes is resumed at once.
        #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = retry_delay)]
        retry_delay: std::time::Duration,
        /// Seconds a download connection may go without delivering a byte before it is
        /// cut and the download resumed (a stalled cellular or satellite link).
        #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        stall_timeout: u64,
        /// Accept a version that is not newer than the installed one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Boots the new deployment gets before berth-init falls back.
        #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..))]
        tries: u8,
        /// Progress on stderr: text (the default on a terminal), json (one object per
        /// line) or none.
        #[arg(long, value_name = "FORMAT")]
        progress: Option<ProgressArg>,
        /// Give up if the update is not ready to switch to within SECONDS (a stalled USB
        /// stick, pipe or network mount). The device keeps its current deployment; a
        /// later run resumes with the parts already applied.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        deadline: Option<u64>,
        /// Refuse an update that makes files of this kind: device (character and block
        /// device nodes) or setuid (regular files with the setuid or setgid bit).
        /// Repeat for both. Each file the update makes is checked before it is
        /// written; the error names the operation and the object.
        #[arg(long, value_name = "KIND")]
        forbid: Vec<ForbidArg>,
        /// Fetch and verify the update and put its objects in the store, then stop: the
        /// deployments and the boot record are left as they are. Run the same update
        /// again without this flag (in a maintenance window, say) to install it; nothing
        /// is fetched or applied twice. `berth gc` in between may cost applying again.
        #[arg(long)]
        download_only: bool,
    },
    /// Ask a static repository or an OCI registry whether its channel has an update for
    /// this device, without downloading it or changing anything (the pointer is verified
    /// as for an update).
    ///
    /// Exit status, as dnf check-update: 100 an update is available, 0 up to date, 1
    /// error (unreachable, forged, stale or expired pointer), 2 bad command line.
    Check {
        /// The repository (`https://HOST/PATH`, `http://HOST/PATH`) or registry tag
        /// (`oci://REGISTRY/NAME:TAG`).
        url: String,
        /// The channel (for `oci://`, the tag).
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
        /// Print JSON for programs.
        #[arg(long)]
        json: bool,
    },
    /// Remove deployments nothing points at, then the objects no kept deployment uses.
    /// Never removes the booted, default, trial or previous deployment.
    Gc {
        /// Print JSON for programs.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every object in the store and check the record's deployments; exit 1 if
    /// anything is wrong.
    ///
    /// With --repair --source UPDATE, rewrite only the corrupt or missing objects from a
    /// signed update that carries them (a full update, from berth-image delta --empty,
    /// carries every object of its commit; a delta carries what it changed), and point
    /// the deployments' files back at the repaired objects. The record is not touched.
    Fsck {
        /// Repair: with neither copy of the boot record valid, write a fresh one (the
        /// booted deployment as the default, else the last good one); with --source,
        /// rewrite corrupt or missing objects from that signed update.
        #[arg(long)]
        repair: bool,
        /// The update file (or split directory) to repair from; verified like an update.
        #[arg(long, value_name = "FILE", requires = "repair")]
        source: Option<PathBuf>,
        /// Print the repair's report as JSON.
        #[arg(long, requires = "repair")]
        json: bool,
    },
}

/// How an `https://` repository is verified and a registry's credentials (`update URL`,
/// `check`).
#[derive(Debug, clap::Args)]
pub(crate) struct TlsArgs {
    /// Trust only the certificate authorities in this PEM file for an https://
    /// repository, instead of the system's roots: a fleet's own CA. Repeat for more
    /// files; to trust the system's roots as well, add
    /// `--ca /etc/ssl/certs/ca-certificates.crt`. Without --ca the system's roots are
    /// used: `SSL_CERT_FILE` and `SSL_CERT_DIR` when set, else /etc/ssl/certs (the
    /// ca-certificates package). A certificate that does not verify stops berth before
    /// it changes anything.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Vec<PathBuf>,
    /// Credentials for an oci:// registry that asks for them: a Docker-style
    /// config.json (`{"auths": {"REGISTRY": {"auth": "<base64 of user:password>"}}}`,
    /// as `docker login` writes). They go to the registry's token service (or, for a
    /// registry that asks for Basic authentication, with every request). Without it,
    /// berth asks for an anonymous token when the registry wants one.
    #[arg(long, value_name = "FILE")]
    pub(crate) registry_auth: Option<PathBuf>,
}

impl TlsArgs {
    pub(crate) fn trust(&self) -> updater::tls::Trust {
        if self.ca.is_empty() {
            updater::tls::Trust::System
        } else {
            updater::tls::Trust::Only(self.ca.clone())
        }
    }
}

/// `--retry-delay`: seconds, from 0 to 60, to the millisecond (`1`, `0.25`). Parsed by
/// hand: floating point would add its parsing and formatting code to the device binary.
pub(crate) fn retry_delay(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a number of seconds (like 1 or 0.25)");
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || frac.len() > 3 {
        return Err(bad());
    }
    let secs: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let ms: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
    let total = secs.saturating_mul(1000).saturating_add(ms);
    if total > 60_000 {
        return Err(format!("{s} is not between 0 and 60 seconds"));
    }
    Ok(std::time::Duration::from_millis(total))
}

/// What `--forbid` takes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum ForbidArg {
    /// Character and block device nodes.
    Device,
    /// Regular files with the setuid or setgid bit.
    Setuid,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum ProgressArg {
    Text,
    Json,
    None,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory as _;

    /// The man pages and completions in packaging/ are berth's of today.
    #[test]
    fn man_pages_and_completions_are_current() {
        testkit::clidocs::check(super::Cli::command(), "8");
    }

    #[test]
    fn retry_delays_are_seconds_to_the_millisecond() {
        for (text, ms) in [
            ("1", 1000),
            ("0.25", 250),
            (".5", 500),
            ("60", 60_000),
            ("0", 0),
        ] {
            assert_eq!(
                super::retry_delay(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "0.0001",
            "60.001",
            "99999999999999999999",
            "1s",
        ] {
            assert!(super::retry_delay(bad).is_err(), "{bad}");
        }
    }
}
