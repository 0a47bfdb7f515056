//! `berth-image`: the build-host tool.
//!
//! Generates signing keys, commits a root filesystem (a directory, a tarball or an OCI
//! image) into a repository as a signed commit, checks commits out, and verifies a
//! repository.
//! This file only parses arguments and reports errors; each command is a module of
//! `cmd`, and the work is in the library modules below them.
//!
//! Exit status: 0 on success; 1 on any error, printed as one line naming the input and
//! the cause; 2 for a command line that does not parse.

mod bmap;
mod board;
mod bootpart;
mod catalog;
mod cmd;
mod commit;
mod cpio;
mod delta;
mod device;
mod disk;
mod esp;
mod fat;
mod flash;
mod initramfs;
mod install;
mod kernelset;
mod keys;
mod oci;
mod ociimage;
mod publish;
mod qemu;
mod tools;
mod uboot;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The store's warnings, as berth-image's own.
    store::warnings::to_stderr("berth-image");
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error quotes from the input (tar headers can hold
            // any bytes): control characters are shown escaped.
            let msg: String = format!("{e:#}")
                .chars()
                .flat_map(|c| {
                    if c.is_control() {
                        c.escape_default().collect::<Vec<_>>()
                    } else {
                        vec![c]
                    }
                })
                .collect();
            eprintln!("berth-image: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// The man pages and completions in packaging/ are berth-image's of today.
    #[test]
    fn man_pages_and_completions_are_current() {
        testkit::clidocs::check(crate::cmd::Cli::command(), "1");
    }
}
