//! The deployments a device starts with, as `install` and `disk` take them.

/// Which commits a device starts with.
#[derive(Debug, clap::Args)]
pub struct LayoutArgs {
    /// The default deployment's commit.
    #[arg(long, value_name = "COMMIT")]
    commit: String,
    /// A previous deployment, booted when the default cannot be.
    #[arg(long, value_name = "COMMIT")]
    previous: Option<String>,
    /// A deployment to try first, with --tries boots before falling back.
    #[arg(long, value_name = "COMMIT", requires = "tries")]
    trial: Option<String>,
    /// How many boots the trial gets (1 to 255).
    #[arg(long, value_name = "N", requires = "trial")]
    tries: Option<u8>,
}

impl LayoutArgs {
    pub fn layout(self) -> crate::install::Layout {
        crate::install::Layout {
            default: self.commit,
            previous: self.previous,
            trial: self.trial.zip(self.tries),
        }
    }
}
