//! `berth-image show`: a commit, its kernel set and its signers, as text or JSON.

use std::path::PathBuf;

use anyhow::Result;
use store::Repo;

/// The arguments of `show`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository.
    #[arg(long, value_name = "REPO")]
    repo: PathBuf,
    /// The commit (full id or a unique prefix of at least 8 digits).
    commit: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let (repo, commit, json) = (&a.repo, &a.commit, a.json);
    let r = Repo::open(repo)?;
    let id = r.resolve_commit(commit)?;
    let (c, _) = r.read_commit(&id)?;
    let kset = crate::kernelset::find(&r, &c.root)?;
    let signers: Vec<String> = r
        .read_signatures(&id)?
        .entries()
        .iter()
        .map(|e| {
            ed25519_dalek::VerifyingKey::from_bytes(&e.key).map_or_else(
                |_| "invalid-key".to_owned(),
                |k| format::key::fingerprint(&k),
            )
        })
        .collect();
    if json {
        let meta: serde_json::Map<String, serde_json::Value> = c
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let v = serde_json::json!({
            "id": id.to_string(),
            "root": c.root.to_string(),
            "parent": c.parent.map(|p| p.to_string()),
            "version": c.version.as_str(),
            "timestamp": c.timestamp,
            "metadata": meta,
            "signed_by": signers,
            "kernel_set": kset.as_ref().map(|k| serde_json::json!({
                "id": k.id().to_string(),
                "version": k.version,
                "kernel": k.kernel.to_string(),
                "initramfs": k.initramfs.to_string(),
                "dtb": k.dtb.map(|d| d.to_string()),
                "kargs": k.kargs,
            })),
        });
        println!("{v}");
    } else {
        println!("commit    {id}");
        println!("root      {}", c.root);
        println!(
            "parent    {}",
            c.parent
                .map_or_else(|| "(none)".to_owned(), |p| p.to_string())
        );
        println!("version   {}", c.version);
        println!("timestamp {}", c.timestamp);
        for (k, v) in c.metadata() {
            println!("meta      {k}={v}");
        }
        match &kset {
            Some(k) => println!(
                "kernel    {} (set {}{}{})",
                k.version,
                k.dir_name(),
                if k.dtb.is_some() {
                    ", device trees"
                } else {
                    ""
                },
                if k.kargs.is_empty() {
                    String::new()
                } else {
                    format!(", kargs {:?}", k.kargs)
                }
            ),
            None => println!("kernel    (none in the tree)"),
        }
        if signers.is_empty() {
            println!("signed    (unsigned)");
        }
        for s in signers {
            println!("signed    key {s}");
        }
    }
    Ok(())
}
