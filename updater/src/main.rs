//! `berth`, the device agent: parses the command line, calls the library, maps errors
//! to exit codes.
//!
//! Exit status: 0 success; 1 error (one line: the input and the cause); 2 a command
//! line that does not parse; 75 another berth command holds the lock this one needs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

/// `println!` that returns an error instead of panicking when standard output cannot
/// be written (a full disk, a closed pipe): `berth status --json >/dev/full` exits 1
/// with a message.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
            .map_err(|e| anyhow::anyhow!("standard output: {e}"))?;
    }};
}
use clap::{Parser, Subcommand};
use updater::policy::{Forbid, Forbidden};
use updater::progress::Event;
use updater::{DEFAULT_SYSROOT, Device, Status};

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
struct Cli {
    /// The sysroot (the partition holding berth/).
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_SYSROOT)]
    sysroot: PathBuf,
    /// berth-init's report of this boot (which deployment is booted, and why).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/run/berth/boot.json"
    )]
    boot_json: PathBuf,
    /// The boot partition, mounted at DIR, for a board whose loader boots the
    /// deployments' kernels (berth/boot/loader.conf). Without it, berth mounts the
    /// partition that file names while it works on it.
    #[arg(long, global = true, value_name = "DIR")]
    boot_dir: Option<PathBuf>,
    /// How long a command that writes waits for another one to finish (seconds).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 5)]
    wait: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
struct TlsArgs {
    /// Trust only the certificate authorities in this PEM file for an https://
    /// repository, instead of the system's roots: a fleet's own CA. Repeat for more
    /// files; to trust the system's roots as well, add
    /// `--ca /etc/ssl/certs/ca-certificates.crt`. Without --ca the system's roots are
    /// used: `SSL_CERT_FILE` and `SSL_CERT_DIR` when set, else /etc/ssl/certs (the
    /// ca-certificates package). A certificate that does not verify stops berth before
    /// it changes anything.
    #[arg(long, value_name = "FILE")]
    ca: Vec<PathBuf>,
    /// Credentials for an oci:// registry that asks for them: a Docker-style
    /// config.json (`{"auths": {"REGISTRY": {"auth": "<base64 of user:password>"}}}`,
    /// as `docker login` writes). They go to the registry's token service (or, for a
    /// registry that asks for Basic authentication, with every request). Without it,
    /// berth asks for an anonymous token when the registry wants one.
    #[arg(long, value_name = "FILE")]
    registry_auth: Option<PathBuf>,
}

impl TlsArgs {
    fn trust(&self) -> updater::tls::Trust {
        if self.ca.is_empty() {
            updater::tls::Trust::System
        } else {
            updater::tls::Trust::Only(self.ca.clone())
        }
    }
}

/// `berth gc`'s report, as text or JSON.
fn print_gc(r: &updater::gc::GcReport, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    let kept = if r.kept_for_updates > 0 {
        format!(
            "; kept {} objects an interrupted update has fetched",
            r.kept_for_updates
        )
    } else {
        String::new()
    };
    let removed = if r.deployments.is_empty() {
        "none".to_owned()
    } else {
        r.deployments.join(", ")
    };
    outln!(
        "removed {} deployments ({removed}) and {} objects, {} bytes{kept}",
        r.deployments.len(),
        r.objects,
        r.bytes,
    );
    if !r.boot_entries.is_empty() || !r.kernel_sets.is_empty() {
        outln!(
            "boot partition: removed {} entries and {} kernel sets ({})",
            r.boot_entries.len(),
            r.kernel_sets.len(),
            r.boot_entries
                .iter()
                .chain(&r.kernel_sets)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// `--retry-delay`: seconds, from 0 to 60, to the millisecond (`1`, `0.25`). Parsed by
/// hand: floating point would add its parsing and formatting code to the device binary.
fn retry_delay(s: &str) -> Result<std::time::Duration, String> {
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
enum ForbidArg {
    /// Character and block device nodes.
    Device,
    /// Regular files with the setuid or setgid bit.
    Setuid,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProgressArg {
    Text,
    Json,
    None,
}

fn print_status(s: &Status) -> Result<()> {
    outln!(
        "sysroot {} (boot record generation {})",
        s.sysroot.display(),
        s.record_generation.map_or("none".into(), |g| g.to_string())
    );
    for d in &s.deployments {
        let mut roles = Vec::new();
        if d.default {
            roles.push("default".to_owned());
        }
        if d.trial {
            roles.push(format!("trial, {} tries left", d.tries_left.unwrap_or(0)));
        }
        if d.previous {
            roles.push("previous".to_owned());
        }
        if d.state != "bootable" {
            roles.push(d.state.to_owned());
        }
        outln!(
            "{} {}  version {:<12} {}",
            if d.booted { "●" } else { " " },
            d.name,
            d.version.as_deref().unwrap_or("?"),
            roles.join(", ")
        );
        if let Some(c) = &d.commit {
            outln!("    commit {c}");
        }
    }
    if let Some(r) = &s.boot_reason {
        outln!("this boot: {r}");
    }
    if let Some(r) = &s.last_rollback {
        outln!("last rollback: from {} ({})", r.from, r.reason);
    } else {
        outln!("last rollback: none");
    }
    Ok(())
}

fn print_installed(r: &updater::update::UpdateReport, tries: u8, more: &str) -> Result<()> {
    for p in &r.etc_skipped {
        eprintln!(
            "berth: warning: {p}: a socket in the running /etc layer; not carried to the new deployment"
        );
    }
    outln!(
        "installed {} (version {}) as deployment {}; it boots next as a trial with {tries} tries ({} parts applied, {} already done){more}",
        &r.commit[..16],
        r.version,
        r.deployment,
        r.parts_applied,
        r.parts_skipped
    );
    Ok(())
}

/// `berth update FILE|URL`.
fn update_cmd(
    device: &Device,
    file: &Path,
    channel: Option<&str>,
    fetch: updater::fetch::FetchOptions,
    opts: updater::update::UpdateOptions,
    tries: u8,
) -> Result<()> {
    let source = file.to_string_lossy();
    if ["http://", "https://", "oci://"]
        .iter()
        .any(|s| source.starts_with(s))
    {
        let channel = &updater::oci::channel_for(&source, channel)?;
        let r = device.update_remote(&source, channel, fetch, opts)?;
        match &r.update {
            None => outln!("already up to date with channel {channel}"),
            Some(u) => print_installed(
                u,
                tries,
                &format!(
                    "; {} bytes downloaded for the {} update",
                    r.downloaded, r.kind
                ),
            )?,
        }
    } else {
        if channel.is_some() {
            anyhow::bail!("{source}: --channel is for repository URLs, not files");
        }
        if fetch.trust != updater::tls::Trust::System {
            anyhow::bail!("{source}: --ca is for https:// repository URLs, not files");
        }
        if fetch.registry_auth.is_some() {
            anyhow::bail!("{source}: --registry-auth is for oci:// registries, not files");
        }
        print_installed(&device.update(file, opts)?, tries, "")?;
    }
    Ok(())
}

/// `berth check`: exit 100 when an update is available, as dnf check-update.
fn check_cmd(
    device: &Device,
    url: &str,
    channel: Option<&str>,
    tls: &TlsArgs,
    json: bool,
) -> Result<ExitCode> {
    let channel = updater::oci::channel_for(url, channel)?;
    let fetch = updater::fetch::FetchOptions {
        trust: tls.trust(),
        registry_auth: tls.registry_auth.clone(),
        ..Default::default()
    };
    let o = device.check(url, &channel, fetch)?;
    if json {
        outln!("{}", serde_json::to_string(&o)?);
    } else if o.available {
        outln!(
            "update available on channel {}: version {} ({}), a {} update of {} bytes",
            o.channel,
            o.version,
            &o.commit[..16],
            o.kind,
            o.bytes
        );
    } else {
        outln!(
            "up to date with channel {} (version {})",
            o.channel,
            o.version
        );
    }
    Ok(if o.available {
        ExitCode::from(100)
    } else {
        ExitCode::SUCCESS
    })
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let device = Device::open(&cli.sysroot, &cli.boot_json)?
        .with_lock_wait(std::time::Duration::from_secs(cli.wait))
        .with_boot_dir(cli.boot_dir.clone());
    match cli.command {
        Command::Status { json } => {
            let s = device.status()?;
            if json {
                outln!("{}", serde_json::to_string(&s)?);
            } else {
                print_status(&s)?;
            }
        }
        Command::MarkGood => outln!("{}", device.mark_good()?),
        Command::Update {
            ref file,
            allow_downgrade,
            tries,
            progress,
            deadline,
            ref channel,
            min_rate,
            retry_delay,
            stall_timeout,
            ref forbid,
            ref tls,
        } => {
            use std::io::IsTerminal;
            let progress: updater::progress::Progress = match progress {
                Some(ProgressArg::Text) => Some(progress_text),
                Some(ProgressArg::Json) => Some(progress_json),
                None if std::io::stderr().is_terminal() => Some(progress_text),
                Some(ProgressArg::None) | None => None,
            };
            let opts = updater::update::UpdateOptions {
                allow_downgrade,
                tries,
                progress,
                // Test hook (the test-hooks feature): stop after N parts.
                #[cfg(feature = "test-hooks")]
                abort_after_parts: std::env::var("BERTH_TEST_ABORT_AFTER_PARTS")
                    .ok()
                    .and_then(|v| v.parse().ok()),
                deadline: deadline.map(|s| updater::deadline::Deadline {
                    limit: std::time::Duration::from_secs(s),
                    expire: deadline_passed,
                }),
                forbid: forbid.iter().fold(Forbidden::default(), |f, k| {
                    f.with(match k {
                        ForbidArg::Device => Forbid::Device,
                        ForbidArg::Setuid => Forbid::Setuid,
                    })
                }),
            };
            let fetch = updater::fetch::FetchOptions {
                min_rate,
                retry_delay,
                stall: std::time::Duration::from_secs(stall_timeout),
                trust: tls.trust(),
                registry_auth: tls.registry_auth.clone(),
                ..Default::default()
            };
            update_cmd(&device, file, channel.as_deref(), fetch, opts, tries)?;
        }
        Command::Check {
            ref url,
            ref channel,
            json,
            ref tls,
        } => return check_cmd(&device, url, channel.as_deref(), tls, json),
        Command::Rollback { ref from } => {
            let from = from
                .as_deref()
                .map(|f| {
                    format::record::DeploymentName::new(f.as_bytes())
                        .map_err(|e| anyhow::anyhow!("--from {f}: {e}"))
                })
                .transpose()?;
            outln!("{}", device.rollback(from.as_ref())?);
        }
        Command::Gc { json } => print_gc(&device.gc()?, json)?,
        Command::Fsck {
            repair,
            ref source,
            json,
        } => {
            if repair && let Some(done) = device.repair_record()? {
                eprintln!("berth: {done}");
            }
            // Then the check (and, with --source, the objects' repair).
            fsck(&device, &cli.sysroot, source.as_deref(), json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth fsck`, and with a source, `berth fsck --repair`.
fn fsck(device: &Device, sysroot: &Path, source: Option<&Path>, json: bool) -> Result<()> {
    if let Some(source) = source {
        let r = device.repair(source)?;
        if json {
            outln!("{}", serde_json::to_string(&r)?);
        } else {
            for p in &r.remaining {
                eprintln!("{p}");
            }
            outln!(
                "{} objects checked, {} corrupt or missing, {} repaired from {}; {} deployment files relinked",
                r.checked,
                r.bad,
                r.repaired,
                source.display(),
                r.relinked
            );
        }
        if !r.remaining.is_empty() {
            anyhow::bail!(
                "{}: {} problems remain after the repair ({} cannot make them)",
                sysroot.display(),
                r.remaining.len(),
                source.display()
            );
        }
    } else {
        let (checked, problems) = device.fsck()?;
        for p in &problems {
            eprintln!("{p}");
        }
        if !problems.is_empty() {
            anyhow::bail!(
                "{}: {} problems ({checked} objects checked)",
                sysroot.display(),
                problems.len()
            );
        }
        outln!("{checked} objects checked, record and deployments sound");
    }
    Ok(())
}

/// `--progress text`: a line per step, for people.
fn progress_text(e: Event) {
    match e {
        Event::Part { part, parts, bytes } => {
            eprintln!("part {part}/{parts} applied ({bytes} bytes)");
        }
        Event::Fallback {
            objects_bytes,
            full_bytes,
        } => eprintln!(
            "the missing objects ({objects_bytes} bytes) cost more than the full update ({full_bytes} bytes): taking the full update"
        ),
        Event::Downloaded { downloaded, total } => {
            eprintln!("downloaded {downloaded}/{total} bytes");
        }
    }
}

/// `--progress json`: an object per line, for programs.
fn progress_json(e: Event) {
    match e {
        Event::Part { part, parts, bytes } => {
            eprintln!(r#"{{"part":{part},"parts":{parts},"bytes":{bytes}}}"#);
        }
        Event::Fallback {
            objects_bytes,
            full_bytes,
        } => eprintln!(
            r#"{{"fallback":"full","objects_bytes":{objects_bytes},"full_bytes":{full_bytes}}}"#
        ),
        Event::Downloaded { downloaded, total } => {
            eprintln!(r#"{{"downloaded":{downloaded},"total":{total}}}"#);
        }
    }
}

/// `--deadline` passed: berth's one-line error, and exit 1. Ending the process is the
/// only way to stop a read blocked in the kernel; every step before the record switch
/// is crash-safe (updater/src/deadline.rs).
fn deadline_passed(message: &str) -> ! {
    eprintln!("berth: {message}");
    #[allow(clippy::exit)]
    std::process::exit(1)
}

/// Prints the library's warnings (the store's, say) as berth's own.
struct Warnings;

impl log::Log for Warnings {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("berth: warning: {}", r.args());
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    // Only fails if a logger is set already, which nothing else does.
    if log::set_logger(&Warnings).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e:#}");
            match e.downcast_ref::<updater::UpdaterError>() {
                Some(updater::UpdaterError::Busy(_)) => ExitCode::from(75),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
