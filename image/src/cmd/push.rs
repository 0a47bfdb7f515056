//! `berth-image push`: a commit to an OCI registry, the tag being the channel.

use std::path::PathBuf;

use anyhow::Result;

use super::release::ReleaseArgs;

/// The arguments of `push`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    release: ReleaseArgs,
    /// Where to push: REGISTRY/NAME:TAG, the tag being the channel (a-z, 0-9, . _ -).
    /// A registry on localhost, 127.0.0.1 or `[::1]` is reached over plain HTTP, any
    /// other over HTTPS.
    #[arg(value_name = "REGISTRY/NAME:TAG")]
    reference: String,
    /// Trust only the certificate authorities in this PEM file for the registry's
    /// HTTPS, instead of the system's roots (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else
    /// /etc/ssl/certs). Repeatable.
    #[arg(long, value_name = "FILE")]
    ca: Vec<PathBuf>,
    /// Credentials for a registry that asks for them: a Docker-style config.json
    /// (`{"auths": {"REGISTRY": {"auth": "<base64 of user:password>"}}}`, as
    /// `docker login` writes). They go to the registry's token service, which issues a
    /// push token for NAME (or, for a registry that asks for Basic authentication,
    /// with every request).
    #[arg(long, value_name = "FILE")]
    registry_auth: Option<PathBuf>,
    /// Layers per manifest (about 270 bytes each). Past it, the tag names an image index
    /// of several manifests: registries limit a manifest's size (4 MiB is common), and a
    /// rootfs has a layer per object.
    #[arg(long, value_name = "N", default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..))]
    manifest_layers: u32,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let release = a.release.read()?;
    let trust = if a.ca.is_empty() {
        net::tls::Trust::System
    } else {
        net::tls::Trust::Only(a.ca)
    };
    let out = crate::oci::push(
        &release,
        &a.reference,
        &crate::oci::Access {
            trust,
            registry_auth: a.registry_auth,
        },
        usize::try_from(a.manifest_layers).unwrap_or(usize::MAX),
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{} serial {} -> {} ({} blobs, {} uploaded: {} bytes; manifest {})",
            out.reference,
            out.serial,
            &out.commit[..16],
            out.blobs,
            out.uploaded,
            out.uploaded_bytes,
            out.manifest_digest
        );
    }
    Ok(())
}
