//! Kernel command line parser. Panics are bugs: the boot shim parses /proc/cmdline
//! before anything else.
#![no_main]

use format::cmdline::{self, Cmdline};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = Cmdline::parse(data);
    if let Some(d) = c.deployment {
        assert!(format::record::DeploymentName::new(d).is_ok());
    }
    if let Some(i) = c.init {
        assert!(i.starts_with(b"/"));
    }
    for tok in cmdline::tokens(data) {
        let _ = cmdline::key_value(tok);
    }
});
