//! The kernel command line: the `berth.*` parameters the boot shim reads.
//!
//! Tokens are separated by spaces, tabs or newlines; double quotes group a token, as
//! the kernel does (`berth.init="/sbin/my init"` or `"berth.init=/sbin/my init"`).
//! Later parameters override earlier ones, unknown ones are ignored, and parsing stops
//! at `--` (what follows belongs to init). Parsing never fails: a malformed value is
//! ignored as if absent, and reported by [`Cmdline::ignored`]. Nothing allocates.

/// Every parameter [`Cmdline::parse`] knows; any other `berth.*` one is ignored and
/// counted in [`Cmdline::ignored`]. berth-init's man page documents each of them (a test
/// in `init/tests/man_page.rs` checks it).
pub const PARAMETERS: [&str; 8] = [
    "berth.deployment",
    "berth.entry",
    "berth.init",
    "berth.rescue",
    "berth.rescue_shell",
    "berth.root",
    "berth.rootfstype",
    "berth.root_wait",
];

/// How the sysroot device is named by `berth.root=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSpec<'a> {
    /// A device path such as `/dev/vda2`.
    Path(&'a [u8]),
    /// `LABEL=...`: the filesystem label (ext4's volume name).
    Label(&'a [u8]),
    /// `PARTUUID=...`: the GPT partition's unique GUID (any case).
    PartUuid(&'a [u8]),
}

/// The `berth.*` parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cmdline<'a> {
    /// `berth.deployment=NAME`: boot this deployment, this boot only.
    pub deployment: Option<&'a [u8]>,
    /// `berth.entry=NAME`: the boot loader's entry that started this kernel, named after
    /// the deployment whose kernel set it boots (loaders that count tries put it there).
    pub entry: Option<&'a [u8]>,
    /// `berth.init=PATH`: the real init to exec (default `/sbin/init`).
    pub init: Option<&'a [u8]>,
    /// `berth.rescue`: go straight to the rescue shell.
    pub rescue: bool,
    /// `berth.rescue_shell=PATH`: the rescue shell (default `/bin/sh`).
    pub rescue_shell: Option<&'a [u8]>,
    /// `berth.root=`: the sysroot device (initramfs mode).
    pub root: Option<RootSpec<'a>>,
    /// `berth.rootfstype=`: the sysroot's filesystem type (default `ext4`).
    pub rootfstype: Option<&'a [u8]>,
    /// `berth.root_wait=SECONDS`: how long to wait for the sysroot device (default 10).
    pub root_wait_secs: Option<u32>,
    /// How many `berth.*` parameters were malformed or unknown (and so ignored).
    pub ignored: u32,
}

/// Splits a command line into tokens with the kernel's quoting.
pub fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = line;
    core::iter::from_fn(move || {
        let start = rest.iter().position(|c| !c.is_ascii_whitespace())?;
        rest = &rest[start..];
        let mut quoted = false;
        let mut end = rest.len();
        for (i, &c) in rest.iter().enumerate() {
            if c == b'"' {
                quoted = !quoted;
            } else if c.is_ascii_whitespace() && !quoted {
                end = i;
                break;
            }
        }
        let (tok, tail) = rest.split_at(end);
        rest = tail;
        Some(tok)
    })
}

/// Splits a token into key and value, removing the kernel's quotes.
pub fn key_value(tok: &[u8]) -> (&[u8], Option<&[u8]>) {
    let tok = strip_quotes(tok);
    match tok.iter().position(|&c| c == b'=') {
        Some(i) => (&tok[..i], Some(strip_quotes(&tok[i + 1..]))),
        None => (tok, None),
    }
}

fn strip_quotes(s: &[u8]) -> &[u8] {
    let s = s.strip_prefix(b"\"").unwrap_or(s);
    s.strip_suffix(b"\"").unwrap_or(s)
}

fn path_like(v: &[u8]) -> bool {
    v.first() == Some(&b'/') && v.len() < 4096 && !v.contains(&0)
}

impl<'a> Cmdline<'a> {
    /// Parses the `berth.*` parameters of `line`.
    pub fn parse(line: &'a [u8]) -> Self {
        let mut c = Self::default();
        for tok in tokens(line) {
            if tok == b"--" {
                break;
            }
            let (key, value) = key_value(tok);
            let ok = match (key, value) {
                (b"berth.deployment", Some(v)) if crate::record::DeploymentName::new(v).is_ok() => {
                    c.deployment = Some(v);
                    true
                }
                (b"berth.entry", Some(v)) if crate::record::DeploymentName::new(v).is_ok() => {
                    c.entry = Some(v);
                    true
                }
                (b"berth.init", Some(v)) if path_like(v) => {
                    c.init = Some(v);
                    true
                }
                (b"berth.rescue", None) => {
                    c.rescue = true;
                    true
                }
                (b"berth.rescue_shell", Some(v)) if path_like(v) => {
                    c.rescue_shell = Some(v);
                    true
                }
                (b"berth.root", Some(v)) => match root_spec(v) {
                    Some(spec) => {
                        c.root = Some(spec);
                        true
                    }
                    None => false,
                },
                (b"berth.rootfstype", Some(v))
                    if !v.is_empty() && v.iter().all(u8::is_ascii_alphanumeric) =>
                {
                    c.rootfstype = Some(v);
                    true
                }
                (b"berth.root_wait", Some(v)) => match parse_u32(v) {
                    Some(n) => {
                        c.root_wait_secs = Some(n);
                        true
                    }
                    None => false,
                },
                (k, _) if k.starts_with(b"berth.") => false,
                _ => true,
            };
            if !ok {
                c.ignored += 1;
            }
        }
        c
    }
}

fn root_spec(v: &[u8]) -> Option<RootSpec<'_>> {
    if let Some(label) = v.strip_prefix(b"LABEL=") {
        return (!label.is_empty() && label.len() <= 16).then_some(RootSpec::Label(label));
    }
    if let Some(uuid) = v.strip_prefix(b"PARTUUID=") {
        let ok = uuid.len() == 36
            && uuid.iter().enumerate().all(|(i, &c)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        return ok.then_some(RootSpec::PartUuid(uuid));
    }
    (path_like(v) && v.starts_with(b"/dev/")).then_some(RootSpec::Path(v))
}

/// Parses a decimal `u32` (no sign, no spaces).
pub fn parse_u32(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 10 {
        return None;
    }
    let mut n: u32 = 0;
    for &c in v {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u32::from(c - b'0'))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// PARAMETERS names what the parser knows: each, with a value of its kind, is taken
    /// (not counted as ignored); a name that is not among them is ignored.
    #[test]
    fn parameters_are_the_known_ones() {
        for name in PARAMETERS {
            let value: &str = match name {
                "berth.rescue" => "",
                "berth.init" | "berth.rescue_shell" => "=/sbin/x",
                "berth.root" => "=/dev/vda2",
                "berth.rootfstype" => "=ext4",
                "berth.root_wait" => "=3",
                _ => "=v2",
            };
            let line = alloc::format!("{name}{value}");
            assert_eq!(Cmdline::parse(line.as_bytes()).ignored, 0, "{line}");
            let line = alloc::format!("{name}x{value}");
            assert_eq!(Cmdline::parse(line.as_bytes()).ignored, 1, "{line}");
        }
    }

    #[test]
    fn tokenizer_follows_kernel_quoting() {
        let toks: Vec<&[u8]> =
            tokens(b"  root=/dev/vda2 quiet\tberth.init=\"/sbin/my init\" \"a=b c\"\n").collect();
        assert_eq!(
            toks,
            [
                &b"root=/dev/vda2"[..],
                b"quiet",
                b"berth.init=\"/sbin/my init\"",
                b"\"a=b c\""
            ]
        );
        assert_eq!(
            key_value(b"berth.init=\"/sbin/my init\""),
            (&b"berth.init"[..], Some(&b"/sbin/my init"[..]))
        );
        assert_eq!(key_value(b"\"a=b c\""), (&b"a"[..], Some(&b"b c"[..])));
        assert_eq!(key_value(b"ro"), (&b"ro"[..], None));
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], Cmdline<'_>)] = &[
            (b"", Cmdline::default()),
            (b"console=ttyS0 panic=10", Cmdline::default()),
            (
                b"berth.rescue",
                Cmdline {
                    rescue: true,
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.deployment=v2 berth.deployment=v3",
                Cmdline {
                    deployment: Some(b"v3"),
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.deployment=../etc",
                Cmdline {
                    ignored: 1,
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.init=/bin/sh",
                Cmdline {
                    init: Some(b"/bin/sh"),
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.init=bin/sh",
                Cmdline {
                    ignored: 1,
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.root=/dev/vda2 berth.rootfstype=ext4",
                Cmdline {
                    root: Some(RootSpec::Path(b"/dev/vda2")),
                    rootfstype: Some(b"ext4"),
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.root=LABEL=berth-root",
                Cmdline {
                    root: Some(RootSpec::Label(b"berth-root")),
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.root=PARTUUID=6e7f0a3c-1d2b-4c5d-8e9f-0a1b2c3d4e5f",
                Cmdline {
                    root: Some(RootSpec::PartUuid(b"6e7f0a3c-1d2b-4c5d-8e9f-0a1b2c3d4e5f")),
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.root=PARTUUID=nope",
                Cmdline {
                    ignored: 1,
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.root=/etc/passwd",
                Cmdline {
                    ignored: 1,
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.root_wait=30",
                Cmdline {
                    root_wait_secs: Some(30),
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.root_wait=99999999999",
                Cmdline {
                    ignored: 1,
                    ..Cmdline::default()
                },
            ),
            (
                b"berth.rescue=1 berth.unknown",
                Cmdline {
                    ignored: 2,
                    ..Cmdline::default()
                },
            ),
            (b"-- berth.rescue", Cmdline::default()),
        ];
        for (line, want) in cases {
            assert_eq!(Cmdline::parse(line), *want, "{}", line.escape_ascii());
        }
    }
}
