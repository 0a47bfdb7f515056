//! How berth shows what the library returns: text for people, JSON for programs.

use anyhow::Result;
use updater::Status;
use updater::progress::Event;

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

/// `berth gc`'s report, as text or JSON.
pub(crate) fn print_gc(r: &updater::gc::GcReport, json: bool) -> Result<()> {
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

pub(crate) fn print_status(s: &Status) -> Result<()> {
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
        if d.state != sysroot::Bootable::Yes {
            roles.push(d.state.as_str().to_owned());
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
        outln!("last rollback: from {} ({})", r.from, r.reason.as_str());
    } else {
        outln!("last rollback: none");
    }
    Ok(())
}

pub(crate) fn print_installed(
    r: &updater::update::UpdateReport,
    tries: u8,
    more: &str,
) -> Result<()> {
    for p in &r.etc_skipped {
        eprintln!(
            "berth: warning: {p}: a socket in the running /etc layer; not carried to the new deployment"
        );
    }
    if !r.installed {
        outln!(
            "downloaded {} (version {}) into the store, not installed ({} parts applied, {} already done){more}; the same update without --download-only installs it",
            &r.commit[..16],
            r.version,
            r.parts_applied,
            r.parts_skipped
        );
        return Ok(());
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

/// `--progress text`: a line per step, for people.
pub(crate) fn progress_text(e: Event) {
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
pub(crate) fn progress_json(e: Event) {
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
