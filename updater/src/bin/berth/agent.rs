//! `berth agent` and `berth health`: their flags, `/etc/berth/agent.toml`, and the
//! polling loop (sleep as the server says with jitter, back off after errors, reboot
//! after a trial is written).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use updater::Device;
use updater::agent::{Agent, AgentOptions, Token};
use updater::health::{HealthOptions, HealthOutcome};

use crate::args::TlsArgs;

/// Where the agent's configuration is by default.
const CONFIG: &str = "/etc/berth/agent.toml";

/// `berth agent`'s flags; each overrides the configuration file's setting.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// The configuration file (TOML: `server`, `tenant`, `controller_id`, `token_file`,
    /// `gateway_token`, `ca`, `max_rate`, `min_rate`, `stall_timeout`, `board`, `tries`,
    /// `reboot_command`,
    /// and a `[health]` table; docs/FLEET.md). The default file may be missing when the flags
    /// say everything; a file named here must exist.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The hawkBit server (`https://HOST:PORT`).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The tenant (`DEFAULT` on a stock hawkBit).
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// This device's controller id.
    #[arg(long, value_name = "ID")]
    controller_id: Option<String>,
    /// A file holding the target's security token (sent as `TargetToken`).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The token file holds the tenant's gateway token (`GatewayToken`) instead.
    #[arg(long)]
    gateway_token: bool,
    #[command(flatten)]
    tls: TlsArgs,
    /// The most bytes per second a download may take (a metered or shared link).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    max_rate: Option<u64>,
    /// The command (run with /bin/sh -c) that reboots the device once a trial is
    /// written; `none` leaves the reboot to someone else. Default: `reboot`.
    #[arg(long, value_name = "CMD")]
    reboot_command: Option<String>,
    /// Seconds a download may go without a byte before it is cut and resumed (a link
    /// gone quiet). Default: 30.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    stall_timeout: Option<u64>,
    /// Seconds to wait after a failed poll (the server unreachable, a 429); doubled
    /// after each failure in a row, at most an hour. Default: 30.
    #[arg(long, value_name = "SECONDS", value_parser = crate::args::retry_delay)]
    retry_delay: Option<Duration>,
    /// One poll cycle, and the action it starts, then exit (for scripts, timers and
    /// tests): 0 when the cycle ran, an action that failed included (the server was
    /// told why); 1 when the cycle itself failed (the server unreachable or refusing,
    /// a bad answer, a damaged state file), with one line saying why.
    #[arg(long)]
    once: bool,
}

/// `berth health`'s flags.
#[derive(Debug, clap::Args)]
pub(crate) struct HealthArgs {
    /// The configuration file, for its [health] table (as `berth agent`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The directory of checks: every executable file in it runs, in name order. One
    /// named here (or in the configuration) must exist; the default,
    /// /etc/berth/health.d, may be missing, which means no checks.
    #[arg(long, value_name = "DIR")]
    checks: Option<PathBuf>,
    /// A check to run with /bin/sh -c after the directory's (repeat for more).
    #[arg(long = "health-check", value_name = "CMD")]
    health_check: Vec<String>,
    /// Seconds one check may take before it is killed and counts as failed.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// The command (run with /bin/sh -c) that reboots the device after a rollback;
    /// `none` leaves it to someone else. Default: `reboot`.
    #[arg(long, value_name = "CMD")]
    reboot_command: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// `/etc/berth/agent.toml`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    server: Option<String>,
    tenant: Option<String>,
    controller_id: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default)]
    gateway_token: bool,
    #[serde(default)]
    ca: Vec<PathBuf>,
    max_rate: Option<u64>,
    min_rate: Option<u64>,
    stall_timeout: Option<u64>,
    board: Option<String>,
    tries: Option<u8>,
    reboot_command: Option<String>,
    #[serde(default)]
    health: HealthConfig,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthConfig {
    checks: Option<PathBuf>,
    #[serde(default)]
    commands: Vec<String>,
    timeout: Option<u64>,
}

/// The configuration file: `path`, which must exist, or the default one, which may not.
fn config(path: Option<&Path>) -> Result<Config> {
    let (path, must) = match path {
        Some(p) => (p, true),
        None => (Path::new(CONFIG), false),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if !must && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Config::default());
        }
        Err(e) => bail!("{}: {e}", path.display()),
    };
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            path.display(),
            e.to_string().lines().collect::<Vec<_>>().join(" ")
        )
    })
}

/// A setting from the flag, else the file, else an error that names both.
fn need(flag: Option<String>, file: Option<String>, name: &str) -> Result<String> {
    flag.or(file).with_context(|| {
        format!(
            "no {name}: give --{} or set {} in {CONFIG}",
            name.replace('_', "-"),
            name
        )
    })
}

/// The token from `file`, trimmed; an unreadable or empty file is an error.
fn token(file: &Path, gateway: bool) -> Result<Token> {
    let t = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let t = t.trim();
    if t.is_empty() || t.contains(char::is_whitespace) {
        bail!("{}: not a token (one word expected)", file.display());
    }
    Ok(if gateway {
        Token::Gateway(t.to_owned())
    } else {
        Token::Target(t.to_owned())
    })
}

/// Runs the reboot command, unless it is `none`.
fn reboot(cmd: &str) {
    if cmd == "none" {
        return;
    }
    eprintln!("berth: rebooting: {cmd}");
    match std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("berth: the reboot command {cmd:?} failed ({s})"),
        Err(e) => eprintln!("berth: the reboot command {cmd:?} cannot start: {e}"),
    }
}

/// `d` scaled by a factor between 0.9 and 1.1, so that a fleet does not poll in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    // 0..=200 per mille, from the clock's low digits (no need for a strong source).
    let per_mille = 900 + u64::from(nanos % 201);
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX) / 1000 * per_mille)
}

/// The wait after `failures` failed cycles in a row: `first`, doubling, at most an
/// hour.
fn backoff(first: Duration, failures: u32) -> Duration {
    first
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(Duration::from_hours(1))
}

/// `berth agent`.
pub(crate) fn agent(device: &Device, a: &AgentArgs) -> Result<ExitCode> {
    let c = config(a.config.as_deref())?;
    let token_file = a.token_file.clone().or(c.token_file);
    let token = token_file
        .as_deref()
        .map(|f| token(f, a.gateway_token || c.gateway_token))
        .transpose()?;
    let mut fetch = updater::fetch::FetchOptions {
        trust: a.tls.trust(),
        ..Default::default()
    };
    if a.tls.ca.is_empty() && !c.ca.is_empty() {
        fetch.trust = updater::tls::Trust::Only(c.ca.clone());
    }
    fetch.rates.max_rate = a.max_rate.or(c.max_rate);
    if let Some(m) = c.min_rate {
        fetch.rates.min_rate = m;
    }
    if let Some(s) = a.stall_timeout.or(c.stall_timeout) {
        if !(1..=3600).contains(&s) {
            bail!("stall_timeout {s}: from 1 to 3600 seconds");
        }
        fetch.rates.stall = Duration::from_secs(s);
    }
    let opts = AgentOptions {
        server: need(a.server.clone(), c.server, "server")?,
        tenant: need(a.tenant.clone(), c.tenant, "tenant")?,
        controller_id: need(a.controller_id.clone(), c.controller_id, "controller_id")?,
        token,
        fetch,
        tries: c.tries.unwrap_or(3).max(1),
        forbid: updater::policy::Forbidden::default(),
        board: c.board,
        progress: None,
    };
    let reboot_cmd = a
        .reboot_command
        .clone()
        .or(c.reboot_command)
        .unwrap_or_else(|| "reboot".to_owned());
    let agent = Agent::new(device, opts)?;
    let first_retry = a.retry_delay.unwrap_or(Duration::from_secs(30));
    let mut failures = 0u32;
    loop {
        let wait = match agent.cycle() {
            Ok(cycle) => {
                failures = 0;
                for line in &cycle.did {
                    eprintln!("berth: agent: {line}");
                }
                if cycle.reboot {
                    reboot(&reboot_cmd);
                }
                if a.once {
                    return Ok(ExitCode::SUCCESS);
                }
                jitter(cycle.sleep.max(Duration::from_secs(1)))
            }
            Err(e) if a.once => return Err(e.into()),
            Err(e) => {
                failures += 1;
                let wait = jitter(backoff(first_retry, failures));
                eprintln!("berth: agent: {e}; trying again in {} ms", wait.as_millis());
                wait
            }
        };
        std::thread::sleep(wait);
    }
}

/// `berth health`.
pub(crate) fn health(device: &Device, h: &HealthArgs) -> Result<ExitCode> {
    let c = config(h.config.as_deref())?;
    let mut commands = c.health.commands;
    commands.extend(h.health_check.iter().cloned());
    // A directory someone named must be there; the default may not be.
    let named = h.checks.clone().or(c.health.checks);
    let opts = HealthOptions {
        dir_may_be_missing: named.is_none(),
        dir: Some(named.unwrap_or_else(|| PathBuf::from("/etc/berth/health.d"))),
        commands,
        timeout: Duration::from_secs(h.timeout.or(c.health.timeout).unwrap_or(300)),
    };
    let outcome = device.health(&opts)?;
    if h.json {
        outln!("{}", serde_json::to_string(&outcome)?);
    } else {
        match &outcome {
            HealthOutcome::NotATrial { booted } => outln!(
                "not booted into a trial ({}): nothing to decide",
                booted.as_deref().unwrap_or("no deployment")
            ),
            HealthOutcome::Committed { deployment, checks } => {
                outln!("{checks} checks passed: {deployment} is the default now");
            }
            HealthOutcome::RolledBack { deployment, failed } => {
                outln!("a check failed ({failed}): rolled back from {deployment}");
            }
        }
    }
    if let HealthOutcome::RolledBack { .. } = outcome {
        let cmd = h
            .reboot_command
            .clone()
            .or(c.reboot_command)
            .unwrap_or_else(|| "reboot".to_owned());
        reboot(&cmd);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The example the package installs (usr/share/doc/berth/examples) is a valid file.
    #[test]
    fn the_packaged_example_reads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
        let c = super::config(Some(&example)).unwrap();
        assert_eq!(c.tenant.as_deref(), Some("DEFAULT"));
        assert!(c.health.commands.is_empty());
    }
}
