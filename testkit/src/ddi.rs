//! A hawkBit server for tests, as far as a device sees it (the Direct Device
//! Integration API under `/{tenant}/controller/v1/{controllerId}`), on 127.0.0.1, with
//! a small admin API in Rust so that tests read like rauc-hawkbit-updater's: assign an
//! action, cancel it, open its maintenance window, read its status history.
//!
//! What it does as hawkBit does (from hawkBit's DDI resources): targets with security
//! tokens (`TargetToken`) and a gateway token (`GatewayToken`), `401` otherwise; the
//! base resource with at most one of `deploymentBase` (its href's `?c=` changes when
//! the action is forced or its window opens) and `cancelAction`, `configData` at
//! first contact and after every finished action, `installedBase` after one; the
//! deployment's `download`/`update` handling, `maintenanceWindow` and artifacts with
//! `size`, `hashes` and download links that honour `Range`; feedback that ends an
//! action (`closed`, `downloaded` for a download-only action), `410` on an ended
//! action, `429` past 1,000 status entries of one action or during a request storm;
//! cancel accepted (`closed`) or rejected (`rejected`: the action runs on); artifacts
//! of an action being canceled answer `404`. Not modelled: `sha1` and `md5` hashes
//! (the device does not read them), confirmations, multiple chunks' metadata.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use sha2::Digest as _;

/// Status entries one action may have before the server answers `429`.
pub const STATUS_MAX: usize = 1000;

/// How the server wants a step done (`deployment.download` / `.update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// `skip`.
    Skip,
    /// `attempt`: a soft action.
    Attempt,
    /// `forced`.
    Forced,
}

impl Handling {
    fn word(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Attempt => "attempt",
            Self::Forced => "forced",
        }
    }
}

/// An action to assign.
#[derive(Debug, Clone)]
pub struct Assign {
    /// Artifacts: file name and bytes.
    pub artifacts: Vec<(String, Vec<u8>)>,
    /// How to download.
    pub download: Handling,
    /// How to install (`Skip`: a download-only action).
    pub update: Handling,
    /// A maintenance window: `Some(false)` closed, `Some(true)` open.
    pub window: Option<bool>,
}

impl Assign {
    /// A soft action with these artifacts and no window.
    pub fn soft(artifacts: Vec<(String, Vec<u8>)>) -> Self {
        Self {
            artifacts,
            download: Handling::Attempt,
            update: Handling::Attempt,
            window: None,
        }
    }
}

/// Where an action stands on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionState {
    /// Assigned and not ended.
    Running,
    /// A cancel was asked; the device has not answered.
    Canceling,
    /// Canceled (the device said `closed` to the cancel).
    Canceled,
    /// Ended well (`closed`+`success`, or `downloaded` for a download-only action).
    Finished,
    /// Ended in error (`closed`+`failure`).
    Error,
}

/// One status entry the device posted: execution, finished, details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `status.execution`.
    pub execution: String,
    /// `status.result.finished`.
    pub finished: String,
    /// `status.result.progress` (cnt, of), if sent.
    pub progress: Option<(u64, u64)>,
    /// `status.details`.
    pub details: Vec<String>,
    /// Posted to the cancel action rather than the deployment.
    pub on_cancel: bool,
}

#[derive(Debug)]
struct Action {
    id: u64,
    target: String,
    assign: Assign,
    state: ActionState,
    history: Vec<Entry>,
}

#[derive(Debug, Default)]
struct Target {
    token: String,
    attributes: BTreeMap<String, String>,
    /// The server wants the attributes (first contact, after a finished action).
    wants_attributes: bool,
    /// The last finished action.
    installed: Option<u64>,
}

#[derive(Debug)]
struct State {
    tenant: String,
    gateway_token: Option<String>,
    sleep: String,
    targets: BTreeMap<String, Target>,
    actions: Vec<Action>,
    /// Requests that will answer 429 before any other work.
    storm: u64,
    /// Close an artifact download after this many body bytes.
    drop_every: Option<u64>,
    /// The next download from the start (no `Range`) sends this many bytes, then
    /// nothing for a minute.
    stall_once: Option<u64>,
    /// Cancel this action after this many artifact requests.
    cancel_after: Option<(u64, u64)>,
    /// Artifact requests served so far.
    artifact_gets: u64,
    /// Lose this action's artifacts after this many artifact requests.
    lose_after: Option<(u64, u64)>,
    /// The body every deployment resource answers with.
    garbled: Option<Vec<u8>>,
    /// Status entries one action may have.
    status_max: usize,
    /// Every request: method and path.
    log: Vec<String>,
    /// Answer every request with this body instead (hostile server tests).
    hostile: Option<(u16, Vec<u8>)>,
}

/// A running DDI server; it stops with the test process.
#[derive(Debug, Clone)]
pub struct Hawkbit {
    /// Where it listens (127.0.0.1 only).
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Hawkbit {
    /// A server for tenant `tenant`, polling sleep `00:00:01`, on a free port.
    pub fn start(tenant: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State {
            tenant: tenant.to_owned(),
            gateway_token: None,
            sleep: "00:00:01".to_owned(),
            targets: BTreeMap::new(),
            actions: Vec::new(),
            storm: 0,
            drop_every: None,
            stall_once: None,
            cancel_after: None,
            artifact_gets: 0,
            lose_after: None,
            garbled: None,
            status_max: STATUS_MAX,
            log: Vec::new(),
            hostile: None,
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, addr, &s);
                });
            }
        });
        Self { addr, state }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a target with its security token.
    pub fn add_target(&self, id: &str, token: &str) {
        self.with(|s| {
            s.targets.insert(
                id.to_owned(),
                Target {
                    token: token.to_owned(),
                    wants_attributes: true,
                    ..Target::default()
                },
            );
        });
    }

    /// Sets the tenant's gateway token.
    pub fn set_gateway_token(&self, token: &str) {
        self.with(|s| s.gateway_token = Some(token.to_owned()));
    }

    /// Assigns an action to `target`; its id.
    pub fn assign(&self, target: &str, a: Assign) -> u64 {
        self.with(|s| {
            let id = s.actions.len() as u64 + 1;
            s.actions.push(Action {
                id,
                target: target.to_owned(),
                assign: a,
                state: ActionState::Running,
                history: Vec::new(),
            });
            id
        })
    }

    /// Asks for the action to be canceled.
    pub fn cancel(&self, id: u64) {
        self.with(|s| {
            let a = &mut s.actions[usize::try_from(id - 1).unwrap()];
            if a.state == ActionState::Running {
                a.state = ActionState::Canceling;
            }
        });
    }

    /// Opens the action's maintenance window.
    pub fn open_window(&self, id: u64) {
        self.with(|s| s.actions[usize::try_from(id - 1).unwrap()].assign.window = Some(true));
    }

    /// Where the action stands.
    pub fn state(&self, id: u64) -> ActionState {
        self.with(|s| s.actions[usize::try_from(id - 1).unwrap()].state)
    }

    /// The action's status history, oldest first.
    pub fn history(&self, id: u64) -> Vec<Entry> {
        self.with(|s| s.actions[usize::try_from(id - 1).unwrap()].history.clone())
    }

    /// The target's attributes, as the device sent them.
    pub fn attributes(&self, target: &str) -> BTreeMap<String, String> {
        self.with(|s| s.targets[target].attributes.clone())
    }

    /// The next `n` requests answer `429 Too Many Requests`.
    pub fn storm(&self, n: u64) {
        self.with(|s| s.storm = n);
    }

    /// Turns the action to canceling once its artifacts were asked for `n` times (a
    /// cancel that comes during the download).
    pub fn cancel_after_artifact_gets(&self, id: u64, n: u64) {
        self.with(|s| s.cancel_after = Some((id, n)));
    }

    /// Sets the status entries one action may have before `429` (default
    /// [`STATUS_MAX`], as hawkBit's quota).
    pub fn set_status_max(&self, n: usize) {
        self.with(|s| s.status_max = n);
    }

    /// Removes the action's artifacts from the server once they were asked for `n`
    /// times (deleted by an operator mid-download): they answer `404` from then on.
    pub fn lose_artifacts_after_gets(&self, id: u64, n: u64) {
        self.with(|s| s.lose_after = Some((id, n)));
    }

    /// Answers `GET deploymentBase/{id}` with `body` instead of the deployment.
    pub fn garble_deployment(&self, body: Option<Vec<u8>>) {
        self.with(|s| s.garbled = body);
    }

    /// Closes artifact downloads after `bytes` body bytes (the device must resume).
    pub fn drop_every(&self, bytes: Option<u64>) {
        self.with(|s| s.drop_every = bytes);
    }

    /// The next artifact download from the start (a request without `Range`) sends
    /// `bytes`, then stalls for a minute (a link that goes quiet).
    pub fn stall_once(&self, bytes: u64) {
        self.with(|s| s.stall_once = Some(bytes));
    }

    /// Answers every request with `status` and `body` (a hostile or broken server).
    pub fn hostile(&self, answer: Option<(u16, Vec<u8>)>) {
        self.with(|s| s.hostile = answer);
    }

    /// Every request so far: `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.log.clone())
    }
}

struct Request {
    method: String,
    path: String,
    auth: Option<String>,
    range: Option<u64>,
    body: Vec<u8>,
}

fn read_request(conn: &TcpStream) -> std::io::Result<Request> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_owned();
    let path = words.next().unwrap_or("/").to_owned();
    let (mut auth, mut range, mut len) = (None, None, 0usize);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((&h, ""));
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "authorization" => auth = Some(value.to_owned()),
            "range" => {
                range = value
                    .strip_prefix("bytes=")
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse().ok());
            }
            "content-length" => len = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0u8; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        auth,
        range,
        body,
    })
}

fn respond(out: &mut TcpStream, status: u16, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body)
}

fn serve(mut conn: TcpStream, addr: SocketAddr, state: &Mutex<State>) -> std::io::Result<()> {
    let req = read_request(&conn)?;
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    s.log.push(format!("{} {}", req.method, req.path));
    if let Some((status, body)) = s.hostile.clone() {
        drop(s);
        return respond(&mut conn, status, &body);
    }
    if s.storm > 0 {
        s.storm -= 1;
        drop(s);
        return respond(&mut conn, 429, b"");
    }
    let root = format!("/{}/controller/v1/", s.tenant);
    let Some(rest) = req.path.strip_prefix(&root) else {
        drop(s);
        return respond(&mut conn, 404, b"");
    };
    let rest = rest.split('?').next().unwrap_or("");
    let mut parts = rest.split('/');
    let target = parts.next().unwrap_or("").to_owned();
    let tail: Vec<&str> = parts.collect();
    let Some(t) = s.targets.get(&target) else {
        drop(s);
        return respond(&mut conn, 404, b"");
    };
    let allowed = req.auth.as_deref() == Some(&format!("TargetToken {}", t.token))
        || s.gateway_token
            .as_ref()
            .is_some_and(|g| req.auth.as_deref() == Some(&format!("GatewayToken {g}")));
    if !allowed {
        drop(s);
        return respond(&mut conn, 401, b"");
    }
    let base = format!("http://{addr}{root}{target}");
    let (status, body) = match (req.method.as_str(), tail.as_slice()) {
        ("GET", []) => (200, base_resource(&s, &target, &base)),
        ("PUT", ["configData"]) => config_data(&mut s, &target, &req.body),
        ("GET", ["deploymentBase", _]) if s.garbled.is_some() => {
            (200, s.garbled.clone().unwrap_or_default())
        }
        ("GET", ["deploymentBase", id]) => deployment(&s, &target, id, &base),
        ("POST", ["deploymentBase", id, "feedback"]) => {
            feedback(&mut s, &target, id, &req.body, false)
        }
        ("GET", ["cancelAction", id]) => cancel_action(&s, &target, id),
        ("POST", ["cancelAction", id, "feedback"]) => {
            feedback(&mut s, &target, id, &req.body, true)
        }
        ("GET", ["softwaremodules", id, "artifacts", name]) => {
            let lost = s
                .lose_after
                .is_some_and(|(a, n)| id.parse() == Ok(a) && s.artifact_gets >= n);
            let found = artifact(&s, &target, id, name).filter(|_| !lost);
            let Some(bytes) = found else {
                s.artifact_gets += 1;
                drop(s);
                return respond(&mut conn, 404, b"");
            };
            let mut drop_every = s.drop_every;
            let stall = req.range.is_none() && s.stall_once.is_some();
            if stall {
                drop_every = s.stall_once.take();
            }
            s.artifact_gets += 1;
            if let Some((id, n)) = s.cancel_after
                && s.artifact_gets >= n
            {
                s.cancel_after = None;
                let a = &mut s.actions[usize::try_from(id - 1).unwrap()];
                a.state = ActionState::Canceling;
            }
            drop(s);
            send_artifact(&mut conn, &bytes, req.range, drop_every)?;
            if stall {
                conn.flush()?;
                std::thread::sleep(std::time::Duration::from_mins(1));
            }
            return Ok(());
        }
        _ => (404, Vec::new()),
    };
    drop(s);
    respond(&mut conn, status, &body)
}

/// The open action of `target`: the first that is running or being canceled.
fn open_action<'a>(s: &'a State, target: &str) -> Option<&'a Action> {
    s.actions.iter().find(|a| {
        a.target == target && matches!(a.state, ActionState::Running | ActionState::Canceling)
    })
}

fn base_resource(s: &State, target: &str, base: &str) -> Vec<u8> {
    let mut links = serde_json::Map::new();
    if let Some(a) = open_action(s, target) {
        if a.state == ActionState::Canceling {
            links.insert(
                "cancelAction".into(),
                json!({"href": format!("{base}/cancelAction/{}", a.id)}),
            );
        } else {
            // The ?c= part changes when the action is forced or its window opens.
            let c = sha2::Sha256::digest(
                format!(
                    "{}:{}:{:?}",
                    a.id,
                    a.assign.update == Handling::Forced,
                    a.assign.window
                )
                .as_bytes(),
            );
            let mut hash = String::new();
            for b in &c[..4] {
                let _ = write!(hash, "{b:02x}");
            }
            links.insert(
                "deploymentBase".into(),
                json!({"href": format!("{base}/deploymentBase/{}?c={hash}", a.id)}),
            );
        }
    }
    let t = &s.targets[target];
    if t.wants_attributes {
        links.insert(
            "configData".into(),
            json!({"href": format!("{base}/configData")}),
        );
    }
    if let Some(i) = t.installed {
        links.insert(
            "installedBase".into(),
            json!({"href": format!("{base}/installedBase/{i}")}),
        );
    }
    serde_json::to_vec(&json!({
        "config": {"polling": {"sleep": s.sleep}},
        "_links": links,
    }))
    .unwrap()
}

fn config_data(s: &mut State, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (400, Vec::new());
    };
    let Some(data) = v["data"].as_object() else {
        return (400, Vec::new());
    };
    if data.len() > 100 || !data.values().all(Value::is_string) {
        return (400, Vec::new());
    }
    let t = s.targets.get_mut(target).unwrap();
    if v["mode"] == "replace" {
        t.attributes.clear();
    }
    for (k, val) in data {
        t.attributes
            .insert(k.clone(), val.as_str().unwrap().to_owned());
    }
    t.wants_attributes = false;
    (200, Vec::new())
}

fn action<'a>(s: &'a State, target: &str, id: &str) -> Option<&'a Action> {
    let id: u64 = id.parse().ok()?;
    s.actions.iter().find(|a| a.id == id && a.target == target)
}

fn deployment(s: &State, target: &str, id: &str, base: &str) -> (u16, Vec<u8>) {
    let Some(a) = action(s, target, id).filter(|a| a.state == ActionState::Running) else {
        return (404, Vec::new());
    };
    let artifacts: Vec<Value> = a
        .assign
        .artifacts
        .iter()
        .map(|(name, bytes)| {
            let sha256: String =
                sha2::Sha256::digest(bytes)
                    .iter()
                    .fold(String::new(), |mut h, b| {
                        let _ = write!(h, "{b:02x}");
                        h
                    });
            let href = format!("{base}/softwaremodules/{}/artifacts/{name}", a.id);
            json!({
                "filename": name,
                "size": bytes.len(),
                "hashes": {"sha256": sha256},
                "_links": {"download": {"href": href}, "download-http": {"href": href}},
            })
        })
        .collect();
    let mut d = json!({
        "download": a.assign.download.word(),
        "update": a.assign.update.word(),
        "chunks": [{"part": "os", "version": "1", "name": "berth", "artifacts": artifacts}],
    });
    if let Some(open) = a.assign.window {
        d["maintenanceWindow"] = json!(if open { "available" } else { "unavailable" });
    }
    (
        200,
        serde_json::to_vec(&json!({"id": a.id.to_string(), "deployment": d})).unwrap(),
    )
}

fn cancel_action(s: &State, target: &str, id: &str) -> (u16, Vec<u8>) {
    match action(s, target, id).filter(|a| a.state == ActionState::Canceling) {
        Some(a) => (
            200,
            serde_json::to_vec(
                &json!({"id": a.id.to_string(), "cancelAction": {"stopId": a.id.to_string()}}),
            )
            .unwrap(),
        ),
        None => (404, Vec::new()),
    }
}

fn feedback(s: &mut State, target: &str, id: &str, body: &[u8], on_cancel: bool) -> (u16, Vec<u8>) {
    let Some(idx) = action(s, target, id).map(|a| usize::try_from(a.id - 1).unwrap()) else {
        return (404, Vec::new());
    };
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (400, Vec::new());
    };
    let execution = v["status"]["execution"].as_str().unwrap_or("").to_owned();
    let finished = v["status"]["result"]["finished"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let known_exec = [
        "closed",
        "proceeding",
        "canceled",
        "scheduled",
        "rejected",
        "resumed",
        "downloaded",
        "download",
    ];
    if !known_exec.contains(&execution.as_str())
        || !["success", "failure", "none"].contains(&finished.as_str())
        || v["timestamp"].as_u64().is_none()
    {
        return (400, Vec::new());
    }
    let status_max = s.status_max;
    let a = &mut s.actions[idx];
    let open = if on_cancel {
        a.state == ActionState::Canceling
    } else {
        a.state == ActionState::Running
    };
    if !open {
        return (410, Vec::new());
    }
    if a.history.len() >= status_max {
        return (429, Vec::new());
    }
    let progress = v["status"]["result"]["progress"]["cnt"]
        .as_u64()
        .zip(v["status"]["result"]["progress"]["of"].as_u64());
    a.history.push(Entry {
        execution: execution.clone(),
        finished: finished.clone(),
        progress,
        details: v["status"]["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        on_cancel,
    });
    let ended = match (on_cancel, execution.as_str(), finished.as_str()) {
        (true, "closed" | "canceled", _) => Some(ActionState::Canceled),
        (true, "rejected", _) => {
            a.state = ActionState::Running;
            None
        }
        (false, "closed", "success") => Some(ActionState::Finished),
        (false, "closed", "failure") => Some(ActionState::Error),
        (false, "downloaded", _) if a.assign.update == Handling::Skip => {
            Some(ActionState::Finished)
        }
        _ => None,
    };
    if let Some(state) = ended {
        a.state = state;
        let id = a.id;
        let t = s.targets.get_mut(target).unwrap();
        t.wants_attributes = true;
        if state == ActionState::Finished {
            t.installed = Some(id);
        }
    }
    (200, Vec::new())
}

fn artifact(s: &State, target: &str, id: &str, name: &str) -> Option<Vec<u8>> {
    // An action being canceled (or ended) no longer serves its artifacts.
    let a = action(s, target, id).filter(|a| a.state == ActionState::Running)?;
    a.assign
        .artifacts
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b.clone())
}

fn send_artifact(
    out: &mut TcpStream,
    bytes: &[u8],
    range: Option<u64>,
    drop_every: Option<u64>,
) -> std::io::Result<()> {
    let len = bytes.len() as u64;
    let from = range.unwrap_or(0);
    if from >= len && len > 0 {
        return respond(out, 416, b"");
    }
    let mut head = String::new();
    if range.is_some() {
        let _ = write!(
            head,
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{len}\r\n",
            len - 1
        );
    } else {
        head.push_str("HTTP/1.1 200 OK\r\n");
    }
    let _ = write!(
        head,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        len - from
    );
    out.write_all(head.as_bytes())?;
    let body = &bytes[usize::try_from(from).unwrap_or(0)..];
    let n = drop_every.map_or(body.len(), |d| {
        body.len().min(usize::try_from(d).unwrap_or(usize::MAX))
    });
    out.write_all(&body[..n])
}
