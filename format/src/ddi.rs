//! Eclipse hawkBit's Direct Device Integration (DDI) API, the part a device reads and
//! writes: the controller's base resource (how long to sleep, which action is open),
//! a deployment (what to download and install, how forcefully, in which window), and
//! the feedback the device posts.
//!
//! Everything from the server is untrusted: the decoders (feature `serde`) refuse an
//! unknown word where the protocol has a fixed set (an action type, a window state), a
//! sleep that is not `HH:MM:SS`, and more artifacts or longer strings than a Berth
//! release can have. The links are returned as given; the caller checks that they stay
//! on the server it talks to. Artifact hashes are transport checks only: what makes an
//! update trusted is still its Berth signature.

use alloc::string::String;
use alloc::vec::Vec;

use crate::FormatError;
use crate::ObjectId;
use crate::json::Json;

/// Most artifacts in one deployment: a full update and deltas from earlier releases.
pub const ARTIFACTS_MAX: usize = 64;
/// Longest string the decoders keep (a link, a file name, a hash).
pub const STRING_MAX: usize = 2048;

/// How the server wants a step of a deployment done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Handling {
    /// Not at all (a download-only action's update).
    Skip,
    /// When the device is ready (a soft action).
    Attempt,
    /// Now (a forced action).
    Forced,
}

/// Whether a deployment's maintenance window is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Window {
    /// Open: install now.
    Available,
    /// Closed: download, and install when it opens.
    Unavailable,
}

/// What the device says of an action (`status.execution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// Ended (with `finished` success or failure).
    Closed,
    /// Still running.
    Proceeding,
    /// Cancelled, as the server asked.
    Canceled,
    /// A cancel refused: too late, the trial is written.
    Rejected,
    /// A download-only action's artifacts are on the device.
    Downloaded,
}

impl Execution {
    /// The protocol's word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Proceeding => "proceeding",
            Self::Canceled => "canceled",
            Self::Rejected => "rejected",
            Self::Downloaded => "downloaded",
        }
    }
}

/// How an action ended (`status.result.finished`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Well.
    Success,
    /// Badly.
    Failure,
    /// Not yet.
    None,
}

impl Finished {
    /// The protocol's word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::None => "none",
        }
    }
}

/// A feedback the device posts to `deploymentBase/{id}/feedback` (or the cancel
/// action's): one status entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback<'a> {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// What the device says of the action.
    pub execution: Execution,
    /// How it ended.
    pub finished: Finished,
    /// Steps done of all (`result.progress.cnt`, `.of`), if it says.
    pub progress: Option<(u64, u64)>,
    /// Lines for the operator (the cause of a failure, say).
    pub details: &'a [&'a str],
}

impl Feedback<'_> {
    /// The request body: compact JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut j = Json::default();
        j.open();
        j.key("timestamp").num(self.timestamp_ms);
        j.key("status").open();
        j.key("execution").str(self.execution.as_str().as_bytes());
        j.key("result").open();
        j.key("finished").str(self.finished.as_str().as_bytes());
        if let Some((cnt, of)) = self.progress {
            j.key("progress")
                .open()
                .key("cnt")
                .num(cnt)
                .key("of")
                .num(of)
                .close();
        }
        j.close();
        j.key("details").open_list();
        for d in self.details {
            j.str(d.as_bytes());
        }
        j.close_list();
        j.close();
        j.close();
        j.out
    }
}

/// A `HH:MM:SS` polling sleep, in seconds; `None` if it is not one (hours up to 99,
/// minutes and seconds below 60).
pub fn parse_sleep(s: &str) -> Option<u32> {
    let mut it = s.split(':');
    let mut field = |max: u32| -> Option<u32> {
        let f = it.next()?;
        if f.len() != 2 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        f.parse().ok().filter(|&v| v <= max)
    };
    let (h, m, sec) = (field(99)?, field(59)?, field(59)?);
    if it.next().is_some() {
        return None;
    }
    Some(h * 3600 + m * 60 + sec)
}

/// What the agent is in the middle of, kept in `berth/state/agent` across power cuts
/// and reboots, so that a final feedback is never lost and never sent early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The deployment action's id.
    pub action: String,
    /// Where it stands.
    pub phase: Phase,
}

/// Where an action stands on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// The update of this commit is in the store; installing waits for the window.
    Downloaded(ObjectId),
    /// The trial of this commit is written; the outcome comes with the next boot.
    Trial(ObjectId),
    /// The action ended: this final feedback goes to the server until it is taken.
    Report {
        /// How it ended.
        finished: Finished,
        /// One line for the operator.
        detail: String,
    },
}

/// Longest agent-state file.
pub const PENDING_MAX: usize = 4096;

impl Pending {
    /// The file's bytes: `key=value` lines.
    pub fn encode(&self) -> String {
        let (phase, rest) = match &self.phase {
            Phase::Downloaded(c) => ("downloaded", alloc::format!("commit={c}\n")),
            Phase::Trial(c) => ("trial", alloc::format!("commit={c}\n")),
            Phase::Report { finished, detail } => (
                "report",
                alloc::format!(
                    "finished={}\ndetail={}\n",
                    finished.as_str(),
                    one_line(detail)
                ),
            ),
        };
        alloc::format!(
            "version=1\naction={}\nphase={phase}\n{rest}",
            one_line(&self.action)
        )
    }

    /// Decodes what [`Pending::encode`] writes, and nothing else.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "agent state";
        let bad = |reason| FormatError::BadText { what: WHAT, reason };
        if bytes.len() > PENDING_MAX {
            return Err(FormatError::TooLarge {
                what: WHAT,
                len: bytes.len() as u64,
                limit: PENDING_MAX as u64,
            });
        }
        let text = core::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let text = text
            .strip_suffix('\n')
            .ok_or(bad("does not end with a newline"))?;
        let mut lines = text.split('\n');
        let mut field = |key: &str| -> Result<&str, FormatError> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(key))
                .and_then(|l| l.strip_prefix('='))
                .ok_or(bad(
                    "expected the lines version=, action=, phase= and the phase's own",
                ))
        };
        if field("version")? != "1" {
            return Err(bad("a version this berth does not read (it reads 1)"));
        }
        let action = field("action")?;
        if action.is_empty() {
            return Err(bad("no action id"));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad("a control character (the encoder writes none)"));
        }
        let action = String::from(action);
        // Lowercase, as written: the file has one spelling.
        let commit = |v: &str| -> Result<ObjectId, FormatError> {
            if v.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(bad("commit= is lowercase hex"));
            }
            ObjectId::parse_hex(v.as_bytes())
        };
        let phase = match field("phase")? {
            "downloaded" => Phase::Downloaded(commit(field("commit")?)?),
            "trial" => Phase::Trial(commit(field("commit")?)?),
            "report" => {
                let finished = match field("finished")? {
                    "success" => Finished::Success,
                    "failure" => Finished::Failure,
                    _ => return Err(bad("finished= is success or failure")),
                };
                Phase::Report {
                    finished,
                    detail: String::from(field("detail")?),
                }
            }
            _ => return Err(bad("phase= is downloaded, trial or report")),
        };
        if lines.next().is_some() {
            return Err(bad("has lines after its phase's"));
        }
        Ok(Self { action, phase })
    }
}

/// `s` on one line: control characters (newlines among them) become spaces, as a
/// detail is one line by design.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(feature = "serde")]
pub use read::{Artifact, Base, Cancel, Deployment};

/// The decoders (feature `serde`): unknown keys are passed over, unknown words in a
/// fixed set refused.
#[cfg(feature = "serde")]
mod read {
    use alloc::string::String;
    use alloc::vec::Vec;

    use super::{ARTIFACTS_MAX, Handling, STRING_MAX, Window, parse_sleep};

    /// A string the server sent, refused past [`STRING_MAX`] bytes.
    fn bounded<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        if s.len() > STRING_MAX {
            return Err(serde::de::Error::custom("a string over 2048 bytes"));
        }
        Ok(s)
    }

    fn opt_bounded<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        #[derive(Debug, serde::Deserialize)]
        struct B(#[serde(deserialize_with = "bounded")] String);
        Ok(<Option<B> as serde::Deserialize>::deserialize(d)?.map(|b| b.0))
    }

    #[derive(Debug, serde::Deserialize)]
    struct Href {
        #[serde(deserialize_with = "bounded")]
        href: String,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Polling {
        #[serde(deserialize_with = "bounded")]
        sleep: String,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Config {
        polling: Polling,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct BaseLinks {
        deployment_base: Option<Href>,
        cancel_action: Option<Href>,
        confirmation_base: Option<Href>,
        config_data: Option<Href>,
        installed_base: Option<Href>,
    }

    #[derive(Debug, serde::Deserialize)]
    pub struct RawBase {
        config: Config,
        #[serde(rename = "_links", default)]
        links: Option<BaseLinks>,
    }

    /// The controller's base resource (`GET /{tenant}/controller/v1/{id}`); decode it
    /// with the caller's JSON parser (`serde_json::from_slice::<Base>`).
    #[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
    #[serde(try_from = "RawBase")]
    pub struct Base {
        /// How long to sleep before the next poll, in seconds.
        pub sleep_s: u32,
        /// The open deployment's link (opaque: its `?c=` changes when the action does).
        pub deployment: Option<String>,
        /// The open cancel action's link.
        pub cancel: Option<String>,
        /// The open confirmation's link (not acted on by Berth; reported as found).
        pub confirmation: Option<String>,
        /// Where to put the device's attributes, when the server asks for them.
        pub config_data: Option<String>,
        /// The last finished action's link.
        pub installed: Option<String>,
    }

    /// At most one of deployment, cancel and confirmation may be open.
    impl TryFrom<RawBase> for Base {
        type Error = String;

        fn try_from(raw: RawBase) -> Result<Self, String> {
            let sleep_s = parse_sleep(&raw.config.polling.sleep).ok_or_else(|| {
                alloc::format!(
                    "polling sleep {:?} is not HH:MM:SS",
                    raw.config.polling.sleep
                )
            })?;
            let l = raw.links.unwrap_or(BaseLinks {
                deployment_base: None,
                cancel_action: None,
                confirmation_base: None,
                config_data: None,
                installed_base: None,
            });
            let base = Self {
                sleep_s,
                deployment: l.deployment_base.map(|h| h.href),
                cancel: l.cancel_action.map(|h| h.href),
                confirmation: l.confirmation_base.map(|h| h.href),
                config_data: l.config_data.map(|h| h.href),
                installed: l.installed_base.map(|h| h.href),
            };
            let open = [&base.deployment, &base.cancel, &base.confirmation]
                .iter()
                .filter(|l| l.is_some())
                .count();
            if open > 1 {
                return Err("more than one open action (deployment, cancel, confirmation)".into());
            }
            Ok(base)
        }
    }

    /// One artifact of a chunk.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Artifact {
        /// Its file name.
        pub filename: String,
        /// Its size in bytes.
        pub size: u64,
        /// Its sha256, if the server gives one (hex).
        pub sha256: Option<String>,
        /// Where to download it (`download`, else `download-http`).
        pub link: String,
    }

    #[derive(Debug, serde::Deserialize)]
    struct RawHashes {
        #[serde(default, deserialize_with = "opt_bounded")]
        sha256: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct RawArtifactLinks {
        download: Option<Href>,
        #[serde(rename = "download-http")]
        download_http: Option<Href>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct RawArtifact {
        #[serde(deserialize_with = "bounded")]
        filename: String,
        size: u64,
        hashes: Option<RawHashes>,
        #[serde(rename = "_links")]
        links: RawArtifactLinks,
    }

    #[derive(Debug, serde::Deserialize)]
    struct RawChunk {
        #[serde(default)]
        artifacts: Vec<RawArtifact>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RawDeploymentBody {
        download: Handling,
        update: Handling,
        maintenance_window: Option<Window>,
        #[serde(default)]
        chunks: Vec<RawChunk>,
    }

    #[derive(Debug, serde::Deserialize)]
    pub struct RawDeployment {
        #[serde(deserialize_with = "bounded")]
        id: String,
        deployment: RawDeploymentBody,
    }

    /// A deployment action (`GET deploymentBase/{id}`); decode it with the caller's
    /// JSON parser (`serde_json::from_slice::<Deployment>`).
    #[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
    #[serde(try_from = "RawDeployment")]
    pub struct Deployment {
        /// The action's id.
        pub id: String,
        /// How to download.
        pub download: Handling,
        /// How to install (`Skip`: a download-only action).
        pub update: Handling,
        /// The maintenance window, if the action has one.
        pub window: Option<Window>,
        /// Every artifact of every chunk.
        pub artifacts: Vec<Artifact>,
    }

    /// Every artifact must have a download link; at most [`ARTIFACTS_MAX`].
    impl TryFrom<RawDeployment> for Deployment {
        type Error = String;

        fn try_from(raw: RawDeployment) -> Result<Self, String> {
            let mut artifacts = Vec::new();
            for a in raw.deployment.chunks.into_iter().flat_map(|c| c.artifacts) {
                if artifacts.len() == ARTIFACTS_MAX {
                    return Err(alloc::format!("more than {ARTIFACTS_MAX} artifacts"));
                }
                let link = a
                    .links
                    .download
                    .or(a.links.download_http)
                    .ok_or_else(|| {
                        alloc::format!("artifact {:?} has no download link", a.filename)
                    })?
                    .href;
                artifacts.push(Artifact {
                    filename: a.filename,
                    size: a.size,
                    sha256: a.hashes.and_then(|h| h.sha256),
                    link,
                });
            }
            Ok(Self {
                id: raw.id,
                download: raw.deployment.download,
                update: raw.deployment.update,
                window: raw.deployment.maintenance_window,
                artifacts,
            })
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RawStop {
        #[serde(deserialize_with = "bounded")]
        stop_id: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct RawCancel {
        #[serde(deserialize_with = "bounded")]
        id: String,
        cancel_action: RawStop,
    }

    /// A cancel action (`GET cancelAction/{id}`): the server asks the device to stop the
    /// action `stop_id`.
    #[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
    #[serde(from = "RawCancel")]
    pub struct Cancel {
        /// The cancel action's own id (its feedback goes to `cancelAction/{id}/feedback`).
        pub id: String,
        /// The deployment action to stop.
        pub stop_id: String,
    }

    impl From<RawCancel> for Cancel {
        fn from(raw: RawCancel) -> Self {
            Self {
                id: raw.id,
                stop_id: raw.cancel_action.stop_id,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString as _;

    #[test]
    fn sleeps_are_hh_mm_ss() {
        assert_eq!(parse_sleep("00:05:00"), Some(300));
        assert_eq!(parse_sleep("12:00:01"), Some(43_201));
        assert_eq!(parse_sleep("99:59:59"), Some(359_999));
        for bad in [
            "",
            "5:00:00",
            "00:60:00",
            "00:00:60",
            "00:05",
            "00:05:00:00",
            "aa:bb:cc",
            "-1:00:00",
        ] {
            assert_eq!(parse_sleep(bad), None, "{bad}");
        }
    }

    #[test]
    fn feedback_is_the_protocol_s_json() {
        let f = Feedback {
            timestamp_ms: 1_700_000_000_123,
            execution: Execution::Proceeding,
            finished: Finished::None,
            progress: Some((2, 5)),
            details: &["trial written, rebooting", "quote \" and \\ escaped"],
        };
        assert_eq!(
            core::str::from_utf8(&f.encode()).unwrap(),
            r#"{"timestamp":1700000000123,"status":{"execution":"proceeding","result":{"finished":"none","progress":{"cnt":2,"of":5}},"details":["trial written, rebooting","quote \" and \\ escaped"]}}"#
        );
        let done = Feedback {
            execution: Execution::Closed,
            finished: Finished::Failure,
            progress: None,
            details: &[],
            ..f
        };
        assert_eq!(
            core::str::from_utf8(&done.encode()).unwrap(),
            r#"{"timestamp":1700000000123,"status":{"execution":"closed","result":{"finished":"failure"},"details":[]}}"#
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn base_resources_decode_and_refuse_what_the_protocol_does_not_have() {
        let base = |links: &str| {
            alloc::format!(
                r#"{{"config":{{"polling":{{"sleep":"00:01:30"}}}},"_links":{{{links}}}}}"#
            )
        };
        let b: Base = serde_json::from_str(&base(
            r#""deploymentBase":{"href":"https://h/t/controller/v1/d/deploymentBase/7?c=-2"},"configData":{"href":"https://h/t/controller/v1/d/configData"},"unknown":{"href":"x"}"#,
        ))
        .unwrap();
        assert_eq!(b.sleep_s, 90);
        assert_eq!(
            b.deployment.as_deref(),
            Some("https://h/t/controller/v1/d/deploymentBase/7?c=-2")
        );
        assert!(b.config_data.is_some() && b.cancel.is_none());
        let idle: Base =
            serde_json::from_str(r#"{"config":{"polling":{"sleep":"00:00:10"}}}"#).unwrap();
        assert_eq!((idle.sleep_s, idle.deployment), (10, None));

        let two = base(r#""deploymentBase":{"href":"a"},"cancelAction":{"href":"b"}"#);
        let err = serde_json::from_str::<Base>(&two).unwrap_err().to_string();
        assert!(err.contains("more than one open action"), "{err}");
        let bad_sleep = r#"{"config":{"polling":{"sleep":"soon"}}}"#;
        assert!(
            serde_json::from_str::<Base>(bad_sleep)
                .unwrap_err()
                .to_string()
                .contains("not HH:MM:SS")
        );
        let long = base(&alloc::format!(
            r#""deploymentBase":{{"href":"{}"}}"#,
            "x".repeat(STRING_MAX + 1)
        ));
        assert!(serde_json::from_str::<Base>(&long).is_err());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deployments_decode_and_refuse_unknown_words() {
        let dep = |download: &str, window: &str, artifacts: &str| {
            alloc::format!(
                r#"{{"id":"7","deployment":{{"download":"{download}","update":"attempt"{window},"chunks":[{{"part":"os","version":"2.0","name":"berth","artifacts":[{artifacts}]}}]}}}}"#
            )
        };
        let art = |name: &str, link: &str| {
            alloc::format!(
                r#"{{"filename":"{name}","size":1234,"hashes":{{"sha1":"aa","md5":"bb","sha256":"cc"}},"_links":{{"{link}":{{"href":"https://h/{name}"}}}}}}"#
            )
        };
        let two = alloc::format!(
            "{},{}",
            art("full.berth", "download"),
            art("v1-v2.berth", "download-http")
        );
        let d: Deployment = serde_json::from_str(&dep(
            "forced",
            r#","maintenanceWindow":"unavailable""#,
            &two,
        ))
        .unwrap();
        assert_eq!(d.id, "7");
        assert_eq!(
            (d.download, d.update, d.window),
            (
                Handling::Forced,
                Handling::Attempt,
                Some(Window::Unavailable)
            )
        );
        assert_eq!(d.artifacts.len(), 2);
        assert_eq!(d.artifacts[1].link, "https://h/v1-v2.berth");
        assert_eq!(d.artifacts[0].sha256.as_deref(), Some("cc"));

        let unknown = dep("sometimes", "", &art("a", "download"));
        assert!(
            serde_json::from_str::<Deployment>(&unknown)
                .unwrap_err()
                .to_string()
                .contains("unknown variant")
        );
        let window = dep(
            "attempt",
            r#","maintenanceWindow":"ajar""#,
            &art("a", "download"),
        );
        assert!(serde_json::from_str::<Deployment>(&window).is_err());
        let no_link = dep("attempt", "", &art("a", "md5sum"));
        let err = serde_json::from_str::<Deployment>(&no_link)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no download link"), "{err}");
        let many = (0..=ARTIFACTS_MAX)
            .map(|i| art(&alloc::format!("f{i}"), "download"))
            .collect::<Vec<_>>()
            .join(",");
        let err = serde_json::from_str::<Deployment>(&dep("attempt", "", &many))
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 64 artifacts"), "{err}");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn cancels_name_the_action_to_stop() {
        let c: Cancel =
            serde_json::from_str(r#"{"id":"12","cancelAction":{"stopId":"11"},"x":1}"#).unwrap();
        assert_eq!((c.id.as_str(), c.stop_id.as_str()), ("12", "11"));
        assert!(serde_json::from_str::<Cancel>(r#"{"id":"12","cancelAction":{}}"#).is_err());
        assert!(
            serde_json::from_str::<Cancel>(r#"{"id":12,"cancelAction":{"stopId":"11"}}"#).is_err()
        );
    }

    #[test]
    fn pending_actions_round_trip_and_nothing_else_decodes() {
        let c = ObjectId::digest(b"commit");
        for p in [
            Pending {
                action: "7".into(),
                phase: Phase::Downloaded(c),
            },
            Pending {
                action: "7".into(),
                phase: Phase::Trial(c),
            },
            Pending {
                action: "12".into(),
                phase: Phase::Report {
                    finished: Finished::Failure,
                    detail: "rolled back: the trial was counted out".into(),
                },
            },
        ] {
            assert_eq!(Pending::decode(p.encode().as_bytes()).unwrap(), p);
        }
        let split = Pending {
            action: "1\nphase=x".into(),
            phase: Phase::Report {
                finished: Finished::Success,
                detail: "two\nlines\rand\ttabs".into(),
            },
        };
        let back = Pending::decode(split.encode().as_bytes()).unwrap();
        assert_eq!(back.action, "1 phase=x");
        assert!(
            matches!(&back.phase, Phase::Report { detail, .. } if detail == "two lines and tabs")
        );
        let good = Pending {
            action: "7".into(),
            phase: Phase::Trial(c),
        }
        .encode();
        let hex = c.to_string();
        let i = hex.find(|ch: char| ch.is_ascii_lowercase()).unwrap();
        let upper = alloc::format!(
            "{}{}{}",
            &hex[..i],
            hex[i..=i].to_ascii_uppercase(),
            &hex[i + 1..]
        );
        assert!(Pending::decode(good.replace(&hex, &upper).as_bytes()).is_err());
        for bad in [
            String::new(),
            good.replace("version=1", "version=2"),
            good.replace("phase=trial", "phase=dancing"),
            good.replace("action=7", "action="),
            good.trim_end().into(),
            good.clone() + "extra=1\n",
            good.replace("commit=", "commit=zz"),
            good.replace("action=7", "action=7\r"),
            good.replace(&hex, &upper),
        ] {
            assert!(Pending::decode(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
