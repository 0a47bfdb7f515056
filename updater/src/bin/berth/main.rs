//! `berth`, the device agent: parses the command line, calls the library, maps errors
//! to exit codes.
//!
//! Exit status: 0 success; 1 error (one line: the input and the cause); 2 a command
//! line that does not parse; 75 another berth command holds the lock this one needs.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

mod args;
#[macro_use]
mod show;
mod agent;

use args::{Cli, Command, ForbidArg, ProgressArg, TlsArgs};
use clap::Parser as _;
use show::{print_gc, print_installed, print_status, progress_json, progress_text};
use updater::Device;
use updater::policy::{Forbid, Forbidden};

/// `berth update FILE|URL`.
fn update_cmd(
    device: &Device,
    file: &Path,
    channel: Option<&str>,
    fetch: &updater::fetch::FetchOptions,
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
    let o = device.check(url, &channel, &fetch)?;
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
        Command::Agent(ref a) => return agent::agent(&device, a),
        Command::Health(ref h) => return agent::health(&device, h),
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
            download_only,
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
                download_only,
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
                rates: updater::fetch::Rates {
                    min_rate,
                    retry_delay,
                    stall: std::time::Duration::from_secs(stall_timeout),
                    ..Default::default()
                },
                trust: tls.trust(),
                registry_auth: tls.registry_auth.clone(),
            };
            update_cmd(&device, file, channel.as_deref(), &fetch, opts, tries)?;
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

/// `--deadline` passed: berth's one-line error, and exit 1. Ending the process is the
/// only way to stop a read blocked in the kernel; every step before the record switch
/// is crash-safe (updater/src/deadline.rs).
fn deadline_passed(message: &str) -> ! {
    eprintln!("berth: {message}");
    #[allow(clippy::exit)]
    std::process::exit(1)
}

fn main() -> ExitCode {
    // The child that recreates a deflate patch's stream (updater::deflate): not a
    // command, no parsing, nothing but its request and its answer.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(updater::deflate::CHILD_ARG))
    {
        return match updater::deflate::serve_child() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The store's warnings, as berth's own.
    store::warnings::to_stderr("berth");
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
