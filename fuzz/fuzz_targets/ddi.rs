//! What a hawkBit server sends the agent (the base, a deployment, a cancel) and the
//! agent's own state file. Panics are bugs: the server is untrusted, and a damaged
//! state file must be an error, never a crash. A state that decodes encodes back to
//! the same bytes.
#![no_main]

use format::ddi::{Base, Cancel, Deployment, Pending};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = serde_json::from_slice::<Base>(data) {
        let open = [&b.deployment, &b.cancel, &b.confirmation];
        assert!(open.iter().filter(|l| l.is_some()).count() <= 1);
    }
    if let Ok(d) = serde_json::from_slice::<Deployment>(data) {
        assert!(d.artifacts.len() <= format::ddi::ARTIFACTS_MAX);
        assert!(d.artifacts.iter().all(|a| a.link.len() <= format::ddi::STRING_MAX));
    }
    let _ = serde_json::from_slice::<Cancel>(data);
    if let Ok(p) = Pending::decode(data) {
        assert_eq!(p.encode().as_bytes(), data);
    }
});
