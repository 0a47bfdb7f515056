//! The boot report, `/run/berth/boot.json`: what berth-init booted, why, what it passed
//! over on the way, and where the boot's time went.
//!
//! berth-init writes it once per boot, just before it execs the real init, onto the
//! booted system's `/run` (a tmpfs), so it lives exactly as long as the boot it
//! describes. The device agent reads it to tell which deployment is running and why
//! (`berth status`, `mark-good`, `gc`, repairing a damaged record). The schema lives
//! here, once: the vocabulary (reasons, fallback events, deployment states, modes) as
//! enums with their tokens, the encoder berth-init uses, and (feature `serde`) the
//! decoder the agent uses. `docs/FORMAT.md` ("Boot report") is its specification.
//!
//! # Guarantees
//! - The encoder is `no_std`, allocates one buffer and uses no `core::fmt`: berth-init
//!   links it and counts its size.
//! - Writer and reader share the tokens: each vocabulary enum's [`as_str`](Reason::as_str)
//!   and `parse` come from one table, and a test decodes what the encoder wrote.
//! - The decoder is lenient by design. The report is not a security boundary (it is
//!   written by PID 1 on a tmpfs only root can write) and it must keep working across
//!   berth-init versions: unknown keys are passed over, and a key that is missing, `null`,
//!   of another type or an unknown token reads as absent. berth-init's dry-run output,
//!   which embeds the same decision keys, reads as a report too.
//!
//! # Non-goals
//! No file I/O, and no validation that the names are deployments on disk: a reader
//! checks what it relies on.

use alloc::vec::Vec;

use crate::json::Json;
use crate::record::DeploymentName;

/// Defines a closed vocabulary: a data-less enum, its JSON tokens, and their parser.
macro_rules! vocabulary {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $token:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// Its token in the report and in logs: short, stable, lowercase. Changing
            /// one breaks readers of the report.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $token,)*
                }
            }

            /// The value whose token is `token`, if any.
            pub fn parse(token: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == token)
            }
        }

        /// Written as its token (`berth status --json` shows these).
        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// How the shim was started, and so how it switches root.
    pub enum Mode {
        /// The kernel mounted the sysroot partition as `/` and ran the shim as init.
        /// The switch is `pivot_root`.
        Direct = "direct",
        /// The shim runs from an initramfs and mounts the sysroot at `/sysroot` itself.
        /// `pivot_root` is not allowed from the initramfs, so the switch is `MS_MOVE` +
        /// `chroot`.
        Initramfs = "initramfs",
    }
}

vocabulary! {
    /// Why the shim made its choice (`reason`).
    pub enum Reason {
        /// `berth.deployment=` on the command line.
        Forced = "forced",
        /// A trial deployment with tries left.
        Trial = "trial",
        /// A trial whose tries the boot loader counts, started by the loader's entry for it.
        LoaderTrial = "loader-trial",
        /// The default deployment.
        Default = "default",
        /// The previous deployment, because the default could not be booted.
        Previous = "previous",
        /// The only deployment on disk, because no copy of the record is valid.
        OnlyDeployment = "only-deployment",
        /// The last deployment made the default (`berth/boot/last-good`), because no copy
        /// of the record is valid.
        LastGood = "last-good",
        /// `berth.rescue` on the command line.
        RescueRequested = "rescue-requested",
        /// No candidate could be booted.
        NothingBootable = "nothing-bootable",
    }
}

vocabulary! {
    /// Whether a deployment can be booted (a fallback's `state`).
    pub enum Bootable {
        /// Its directory exists and holds an executable init.
        Yes = "bootable",
        /// `berth/deploy/<name>` does not exist.
        Missing = "missing",
        /// It exists but its init is missing or not an executable file.
        NoInit = "no-init",
    }
}

vocabulary! {
    /// What the shim chose to do (`choice.kind`).
    pub enum ChoiceKind {
        /// Boot a deployment.
        Deployment = "deployment",
        /// Exec the rescue shell.
        Rescue = "rescue",
        /// Log, wait, reboot.
        Reboot = "reboot",
    }
}

vocabulary! {
    /// The kind of something the shim passed over (a fallback's `event`).
    pub enum EventKind {
        /// See [`Event::ForcedUnbootable`].
        ForcedUnbootable = "forced-unbootable",
        /// See [`Event::TrialExhausted`].
        TrialExhausted = "trial-exhausted",
        /// See [`Event::TrialUnbootable`].
        TrialUnbootable = "trial-unbootable",
        /// See [`Event::TrialNotCounted`].
        TrialNotCounted = "trial-not-counted",
        /// See [`Event::LoaderFellBack`].
        LoaderFellBack = "loader-fell-back",
        /// See [`Event::DefaultUnbootable`].
        DefaultUnbootable = "default-unbootable",
        /// See [`Event::PreviousUnbootable`].
        PreviousUnbootable = "previous-unbootable",
        /// See [`Event::NoRecord`].
        NoRecord = "no-valid-record",
    }
}

/// What the shim will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Boot this deployment.
    Deploy(DeploymentName),
    /// Exec the rescue shell.
    Rescue,
    /// Nothing can be booted and there is no rescue shell: log, wait, reboot.
    Reboot,
}

impl Choice {
    /// Its kind.
    pub const fn kind(&self) -> ChoiceKind {
        match self {
            Self::Deploy(_) => ChoiceKind::Deployment,
            Self::Rescue => ChoiceKind::Rescue,
            Self::Reboot => ChoiceKind::Reboot,
        }
    }
}

/// Something the shim passed over on the way to its choice (one of `fallbacks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The forced deployment could not be booted.
    ForcedUnbootable(DeploymentName, Bootable),
    /// The trial ran out of tries; it is dropped from the record.
    TrialExhausted(DeploymentName),
    /// The trial could not be booted; it is dropped from the record.
    TrialUnbootable(DeploymentName, Bootable),
    /// The trial could not be started because its tries could not be counted durably.
    TrialNotCounted(DeploymentName),
    /// The boot loader counts the trial's tries and started another entry: it gave the
    /// trial up (its tries ran out, or its kernel would not load). Dropped from the record.
    LoaderFellBack(DeploymentName),
    /// The default could not be booted.
    DefaultUnbootable(DeploymentName, Bootable),
    /// The previous deployment could not be booted.
    PreviousUnbootable(DeploymentName, Bootable),
    /// Neither copy of the boot record is valid.
    NoRecord,
}

impl Event {
    /// Its kind (`event`).
    pub const fn kind(&self) -> EventKind {
        match self {
            Self::ForcedUnbootable(..) => EventKind::ForcedUnbootable,
            Self::TrialExhausted(_) => EventKind::TrialExhausted,
            Self::TrialUnbootable(..) => EventKind::TrialUnbootable,
            Self::TrialNotCounted(_) => EventKind::TrialNotCounted,
            Self::LoaderFellBack(_) => EventKind::LoaderFellBack,
            Self::DefaultUnbootable(..) => EventKind::DefaultUnbootable,
            Self::PreviousUnbootable(..) => EventKind::PreviousUnbootable,
            Self::NoRecord => EventKind::NoRecord,
        }
    }

    /// The deployment it is about (`deployment`), if any.
    pub const fn deployment(&self) -> Option<DeploymentName> {
        match *self {
            Self::ForcedUnbootable(n, _)
            | Self::TrialExhausted(n)
            | Self::TrialUnbootable(n, _)
            | Self::TrialNotCounted(n)
            | Self::LoaderFellBack(n)
            | Self::DefaultUnbootable(n, _)
            | Self::PreviousUnbootable(n, _) => Some(n),
            Self::NoRecord => None,
        }
    }

    /// What the probe found (`state`), for the events that come from one.
    pub const fn state(&self) -> Option<Bootable> {
        match *self {
            Self::ForcedUnbootable(_, b)
            | Self::TrialUnbootable(_, b)
            | Self::DefaultUnbootable(_, b)
            | Self::PreviousUnbootable(_, b) => Some(b),
            Self::TrialExhausted(_)
            | Self::TrialNotCounted(_)
            | Self::LoaderFellBack(_)
            | Self::NoRecord => None,
        }
    }
}

/// Where the boot's time went, in nanoseconds on `CLOCK_BOOTTIME` (`boottime_ns`):
/// when the shim started and when it execs, and the length of each phase between.
/// Module loading and the device wait are not the shim's own time (the budget's
/// measure); the rest is, the sysroot mount included, and each phase is reported apart
/// so a slow boot can be read from the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct Timing {
    /// When the shim started.
    pub start: u64,
    /// Mounting /dev, /proc and /sys, opening the console and the kernel log, and
    /// reading the command line.
    pub early: u64,
    /// Loading the board's modules (initramfs mode).
    pub modules: u64,
    /// Waiting for the sysroot device (initramfs mode).
    pub device_wait: u64,
    /// Mounting the sysroot (initramfs mode).
    pub sysroot_mount: u64,
    /// Reading the two record copies (cold reads from the sysroot).
    pub record_read: u64,
    /// Planning (probing the deployments) and writing the record, over all candidates.
    pub plan: u64,
    /// Root assembly, over all candidates.
    pub assemble: u64,
    /// The /etc overlay mount (overlayfs probes its upper filesystem on every mount).
    pub overlay_mount: u64,
    /// When the shim execs the real init.
    pub exec: u64,
}

/// The decision: `choice`, `reason`, `tries_left` and `fallbacks`, in that order. Both
/// the report and berth-init's dry-run output hold these keys.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    /// What the shim will do.
    pub choice: Choice,
    /// Why.
    pub reason: Reason,
    /// The trial's remaining tries after this boot, when a counted trial is booted.
    pub tries_left: Option<u8>,
    /// What was passed over, in order.
    pub fallbacks: &'a [Event],
}

impl Decision<'_> {
    /// Appends the decision's four keys to the object `j` is in.
    pub fn write(&self, j: &mut Json) {
        j.key("choice").open();
        j.key("kind").str(self.choice.kind().as_str().as_bytes());
        j.key("deployment");
        match &self.choice {
            Choice::Deploy(n) => j.str(n.as_bytes()),
            Choice::Rescue | Choice::Reboot => j.null(),
        };
        j.close();
        j.key("reason").str(self.reason.as_str().as_bytes());
        j.key("tries_left").opt_num(self.tries_left.map(u64::from));
        j.key("fallbacks").open_list();
        for e in self.fallbacks {
            j.open()
                .key("event")
                .str(e.kind().as_str().as_bytes())
                .key("deployment")
                .opt_str(e.deployment().as_ref().map(DeploymentName::as_bytes))
                .key("state")
                .opt_str(e.state().map(|s| s.as_str().as_bytes()))
                .close();
        }
        j.close_list();
    }
}

/// One boot's report, as berth-init writes it.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// The decision.
    pub decision: Decision<'a>,
    /// How the shim was started.
    pub mode: Mode,
    /// The init it execs, as the command line or the default gave it.
    pub init: &'a [u8],
    /// The boot record's generation as this boot left it (after its write, if it made
    /// one), if a copy was valid.
    pub record_generation: Option<u64>,
    /// Where the time went.
    pub boottime_ns: Timing,
}

impl Report<'_> {
    /// The report's bytes: one line of compact JSON, newline-terminated.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_stamped(|| self.boottime_ns.exec)
    }

    /// [`Report::encode`], with the exec time taken from `exec` as the last value is
    /// written: the shim stamps it as late as it can, so the console's exec line and
    /// the report agree on the time to within the write of one file.
    pub fn encode_stamped(&self, exec: impl FnOnce() -> u64) -> Vec<u8> {
        let t = &self.boottime_ns;
        let mut j = Json::default();
        j.open();
        self.decision.write(&mut j);
        j.key("mode").str(self.mode.as_str().as_bytes());
        j.key("init").str(self.init);
        j.key("record_generation").opt_num(self.record_generation);
        j.key("boottime_ns").open();
        for (key, ns) in [
            ("start", t.start),
            ("early", t.early),
            ("modules", t.modules),
            ("device_wait", t.device_wait),
            ("sysroot_mount", t.sysroot_mount),
            ("record_read", t.record_read),
            ("plan", t.plan),
            ("assemble", t.assemble),
            ("overlay_mount", t.overlay_mount),
        ] {
            j.key(key).num(ns);
        }
        j.key("exec").num(exec());
        j.close();
        j.close();
        j.out.push(b'\n');
        j.out
    }
}

#[cfg(feature = "serde")]
pub use read::{BootReport, ChoiceReport, FallbackReport};

/// The reading side (feature `serde`): every key optional, every value lenient.
#[cfg(feature = "serde")]
mod read {
    use alloc::string::String;
    use alloc::vec::Vec;

    use serde::{Deserialize, Deserializer};

    use super::{Bootable, ChoiceKind, EventKind, Mode, Reason, Timing};

    /// A boot report as read: what berth-init wrote, or its dry-run output. Each field is
    /// `None` (or empty) when its key is missing, `null`, of another type or an unknown
    /// token; unknown keys are passed over.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
    #[serde(default)]
    #[non_exhaustive]
    pub struct BootReport {
        /// `choice`.
        #[serde(deserialize_with = "lenient")]
        pub choice: Option<ChoiceReport>,
        /// `reason`, as written: kept as text, so that a reason this reader does not
        /// know is still shown ([`BootReport::reason_kind`] parses it).
        #[serde(deserialize_with = "lenient")]
        pub reason: Option<String>,
        /// `tries_left`.
        #[serde(deserialize_with = "lenient")]
        pub tries_left: Option<u8>,
        /// `fallbacks`, in order; an entry that is not an object is left out.
        #[serde(deserialize_with = "lenient_list")]
        pub fallbacks: Vec<FallbackReport>,
        /// `mode`.
        #[serde(deserialize_with = "token")]
        pub mode: Option<Mode>,
        /// `init`.
        #[serde(deserialize_with = "lenient")]
        pub init: Option<String>,
        /// `record_generation`.
        #[serde(deserialize_with = "lenient")]
        pub record_generation: Option<u64>,
        /// `boottime_ns`.
        #[serde(deserialize_with = "lenient")]
        pub boottime_ns: Option<Timing>,
    }

    impl BootReport {
        /// The reason, if it is one this reader knows.
        pub fn reason_kind(&self) -> Option<Reason> {
            self.reason.as_deref().and_then(Reason::parse)
        }

        /// The deployment chosen (`choice.deployment`), as written.
        pub fn deployment(&self) -> Option<&str> {
            self.choice.as_ref()?.deployment.as_deref()
        }
    }

    /// `choice`: what the shim chose.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
    #[serde(default)]
    #[non_exhaustive]
    pub struct ChoiceReport {
        /// `kind`.
        #[serde(deserialize_with = "token")]
        pub kind: Option<ChoiceKind>,
        /// `deployment`, as written (not checked to be a deployment name).
        #[serde(deserialize_with = "lenient")]
        pub deployment: Option<String>,
    }

    /// One of `fallbacks`: something the shim passed over.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
    #[serde(default)]
    #[non_exhaustive]
    pub struct FallbackReport {
        /// `event`.
        #[serde(deserialize_with = "token")]
        pub event: Option<EventKind>,
        /// `deployment`, as written (not checked to be a deployment name).
        #[serde(deserialize_with = "lenient")]
        pub deployment: Option<String>,
        /// `state`.
        #[serde(deserialize_with = "token")]
        pub state: Option<Bootable>,
    }

    /// A value that is `T`, or anything else (then read as absent).
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Or<T> {
        Is(T),
        Other(serde::de::IgnoredAny),
    }

    fn lenient<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Ok(match Or::<T>::deserialize(d)? {
            Or::Is(v) => Some(v),
            Or::Other(_) => None,
        })
    }

    fn lenient_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        let items: Option<Vec<Or<T>>> = lenient(d)?;
        Ok(items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| match i {
                Or::Is(v) => Some(v),
                Or::Other(_) => None,
            })
            .collect())
    }

    /// A vocabulary's token; an unknown one reads as absent.
    trait Token: Sized {
        fn from_token(token: &str) -> Option<Self>;
    }

    macro_rules! token {
        ($($t:ty),*) => {$(
            impl Token for $t {
                fn from_token(token: &str) -> Option<Self> {
                    Self::parse(token)
                }
            }
        )*};
    }
    token!(Mode, ChoiceKind, EventKind, Bootable);

    fn token<'de, D: Deserializer<'de>, T: Token>(d: D) -> Result<Option<T>, D::Error> {
        let text: Option<String> = lenient(d)?;
        Ok(text.as_deref().and_then(T::from_token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DeploymentName {
        DeploymentName::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn tokens_parse_back() {
        fn check<T: Copy + PartialEq + core::fmt::Debug>(
            all: &[T],
            as_str: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            for &v in all {
                assert_eq!(parse(as_str(v)), Some(v), "{v:?}");
            }
            assert_eq!(parse("no-such-token"), None);
        }
        check(Mode::ALL, Mode::as_str, Mode::parse);
        check(Reason::ALL, Reason::as_str, Reason::parse);
        check(Bootable::ALL, Bootable::as_str, Bootable::parse);
        check(ChoiceKind::ALL, ChoiceKind::as_str, ChoiceKind::parse);
        check(EventKind::ALL, EventKind::as_str, EventKind::parse);
    }

    /// The bytes berth-init has always written (the QEMU guest scripts grep them):
    /// a change here is a change of the format.
    #[test]
    fn encodes_the_documented_bytes() {
        let (v1, v2) = (name("0123456789abcdef"), name("fedcba9876543210"));
        let events = [
            Event::LoaderFellBack(v2),
            Event::TrialUnbootable(v2, Bootable::Missing),
            Event::NoRecord,
        ];
        let r = Report {
            decision: Decision {
                choice: Choice::Deploy(v1),
                reason: Reason::Default,
                tries_left: None,
                fallbacks: &events,
            },
            mode: Mode::Initramfs,
            init: b"/sbin/init",
            record_generation: Some(7),
            boottime_ns: Timing {
                start: 1,
                early: 2,
                modules: 3,
                device_wait: 4,
                sysroot_mount: 5,
                record_read: 6,
                plan: 7,
                assemble: 8,
                overlay_mount: 9,
                exec: 10,
            },
        };
        assert_eq!(
            core::str::from_utf8(&r.encode()).unwrap(),
            concat!(
                r#"{"choice":{"kind":"deployment","deployment":"0123456789abcdef"},"#,
                r#""reason":"default","tries_left":null,"fallbacks":["#,
                r#"{"event":"loader-fell-back","deployment":"fedcba9876543210","state":null},"#,
                r#"{"event":"trial-unbootable","deployment":"fedcba9876543210","state":"missing"},"#,
                r#"{"event":"no-valid-record","deployment":null,"state":null}],"#,
                r#""mode":"initramfs","init":"/sbin/init","record_generation":7,"#,
                r#""boottime_ns":{"start":1,"early":2,"modules":3,"device_wait":4,"#,
                r#""sysroot_mount":5,"record_read":6,"plan":7,"assemble":8,"#,
                r#""overlay_mount":9,"exec":10}}"#,
                "\n"
            )
        );
        let r = Report {
            decision: Decision {
                choice: Choice::Reboot,
                reason: Reason::Trial,
                tries_left: Some(2),
                fallbacks: &[],
            },
            record_generation: None,
            ..r
        };
        let text = r.encode();
        let text = core::str::from_utf8(&text).unwrap();
        assert!(
            text.starts_with(
                r#"{"choice":{"kind":"reboot","deployment":null},"reason":"trial","tries_left":2,"fallbacks":[],"#
            ),
            "{text}"
        );
        assert!(text.contains(r#""record_generation":null,"#), "{text}");
    }

    #[cfg(feature = "serde")]
    fn decode(text: &str) -> BootReport {
        serde_json::from_str(text).unwrap()
    }

    #[cfg(feature = "serde")]
    #[test]
    fn decodes_what_it_encodes() {
        let (v1, v2) = (name("0123456789abcdef"), name("fedcba9876543210"));
        let events = [Event::TrialUnbootable(v2, Bootable::NoInit)];
        let t = Timing {
            start: 5,
            exec: 99,
            ..Timing::default()
        };
        let r = Report {
            decision: Decision {
                choice: Choice::Deploy(v1),
                reason: Reason::LoaderTrial,
                tries_left: Some(1),
                fallbacks: &events,
            },
            mode: Mode::Direct,
            init: b"/sbin/init",
            record_generation: Some(3),
            boottime_ns: t,
        };
        let back = decode(core::str::from_utf8(&r.encode()).unwrap());
        assert_eq!(back.deployment(), Some("0123456789abcdef"));
        assert_eq!(
            back.choice.as_ref().and_then(|c| c.kind),
            Some(ChoiceKind::Deployment)
        );
        assert_eq!(back.reason_kind(), Some(Reason::LoaderTrial));
        assert_eq!(back.tries_left, Some(1));
        assert_eq!(back.fallbacks.len(), 1);
        let f = &back.fallbacks[0];
        assert_eq!(f.event, Some(EventKind::TrialUnbootable));
        assert_eq!(f.deployment.as_deref(), Some("fedcba9876543210"));
        assert_eq!(f.state, Some(Bootable::NoInit));
        assert_eq!(back.mode, Some(Mode::Direct));
        assert_eq!(back.init.as_deref(), Some("/sbin/init"));
        assert_eq!(back.record_generation, Some(3));
        assert_eq!(back.boottime_ns, Some(t));
    }

    /// What berth-init never writes reads as absent, never as an error: a report from
    /// another version, a hand-written one, or the dry-run output.
    #[cfg(feature = "serde")]
    #[test]
    fn reads_leniently() {
        for (text, deployment, reason, fallbacks) in [
            ("{}", None, None, 0),
            (
                r#"{"choice":{"kind":"deployment","deployment":"x"},"reason":"test"}"#,
                Some("x"),
                Some("test"),
                0,
            ),
            (
                r#"{"choice":3,"reason":5,"tries_left":300,"fallbacks":{},"mode":"other"}"#,
                None,
                None,
                0,
            ),
            (
                r#"{"choice":{"deployment":7},"fallbacks":[1,null,{"event":"new-kind","state":2},{}]}"#,
                None,
                None,
                2,
            ),
            (
                r#"{"mode":"direct","sysroot":"/s","record_copies":["valid","missing"],"record":{"generation":1},"choice":{"kind":"rescue","deployment":null},"reason":"rescue-requested","tries_left":null,"fallbacks":[],"record_write":null,"steps":[{"op":"bind","args":["/a","/b"]}]}"#,
                None,
                Some("rescue-requested"),
                0,
            ),
        ] {
            let r = decode(text);
            assert_eq!(r.deployment(), deployment, "{text}");
            assert_eq!(r.reason.as_deref(), reason, "{text}");
            assert_eq!(r.fallbacks.len(), fallbacks, "{text}");
            assert!(r.fallbacks.iter().all(|f| f.event.is_none()), "{text}");
        }
        assert!(serde_json::from_str::<BootReport>("{not json").is_err());
    }
}
