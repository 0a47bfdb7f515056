//! Root and VM tiers of the Berth tests; see `qemu/README.md`.
