//! goosebit (from the Python Package Index), a hawkBit-DDI-compatible update server,
//! for tests: started on a free port of 127.0.0.1 from the virtual environment
//! `ci/setup-goosebit.sh` makes, with a throwaway database (a copy of the empty one
//! the setup made with goosebit's migrations) and artifact directory, and stopped when
//! dropped.
//!
//! It takes Berth update files through the plugin in `testkit/goosebit/` (goosebit
//! parses every upload to learn its version, and knows only `.swu` files and RAUC
//! bundles). Tests drive it through its own management API (`/api/v1`), as an
//! operator's script would: upload a file, add a device with its token, assign the
//! file or start a rollout, and read back what goosebit recorded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The file `ci/setup-goosebit.sh` writes last, once the environment is complete.
const STAMP: &str = "berth-requirements.sha256";

/// The empty database `ci/setup-goosebit.sh` makes with goosebit's migrations.
const EMPTY_DB: &str = "berth-empty.sqlite3";

/// The administrator the tests log in as (a throwaway database: any password).
const ADMIN: (&str, &str) = ("admin", "berth-test");

/// The virtual environment: `$BERTH_GOOSEBIT_VENV`, else `/var/cache/berth/goosebit-venv`.
pub fn venv() -> PathBuf {
    std::env::var_os("BERTH_GOOSEBIT_VENV")
        .map_or_else(|| "/var/cache/berth/goosebit-venv".into(), PathBuf::from)
}

/// Why goosebit cannot run here, if it cannot (for [`crate::missing`]).
pub fn unavailable() -> Option<String> {
    let venv = venv();
    (!venv.join(STAMP).exists()).then(|| {
        format!(
            "goosebit is not installed in {} (ci/setup-goosebit.sh installs it)",
            venv.display()
        )
    })
}

/// An answer of goosebit's HTTP API.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (a panic if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "goosebit answered {} with {:?}: {e}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A running goosebit.
#[derive(Debug)]
pub struct Goosebit {
    /// Where it listens (127.0.0.1 only).
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
    bearer: String,
}

/// One HTTP/1.1 request on its own connection.
fn request(addr: SocketAddr, method: &str, path: &str, head: &str, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("goosebit on {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_mins(1))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    req.push_str(head);
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "goosebit: no header end in {:?}",
                String::from_utf8_lossy(&out)
            )
        });
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "goosebit answered chunked; this client reads plain bodies only: {head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("goosebit: no status in {head:?}"));
    Answer {
        status,
        body: out[end + 4..].to_vec(),
    }
}

impl Goosebit {
    /// Starts goosebit with tenant `DEFAULT`, a polling sleep of a second, device
    /// authentication in its `strict` mode (only devices added with a token may poll),
    /// and the Berth plugin; makes the administrator.
    pub fn start() -> Self {
        let venv = venv();
        let python = venv.join("bin/python");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = tempfile::tempdir().expect("a scratch directory");
        let d = dir.path();
        // JSON is YAML: goosebit reads this as its settings file, and only this one
        // (GOOSEBIT_SETTINGS comes before ./goosebit.yaml and /etc/goosebit.yaml).
        let settings = json!({
            "port": port,
            "tenant": "DEFAULT",
            "poll_time": "00:00:01",
            "db_uri": format!("sqlite://{}", d.join("db.sqlite3").display()),
            "artifacts_dir": d.join("artifacts"),
            "plugins": ["berth"],
            "device_auth": {"enable": true, "mode": "strict"},
        });
        std::fs::write(d.join("goosebit.yaml"), settings.to_string()).unwrap();
        // The empty database goosebit's migrations made at setup.
        std::fs::copy(venv.join(EMPTY_DB), d.join("db.sqlite3"))
            .unwrap_or_else(|e| panic!("{}: {e}", venv.join(EMPTY_DB).display()));
        let log = std::fs::File::create(d.join("goosebit.log")).unwrap();
        let child = Command::new(&python)
            .args(["-m", "uvicorn", "goosebit:app", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--no-access-log"])
            .current_dir(d)
            .env("GOOSEBIT_SETTINGS", d.join("goosebit.yaml"))
            // The plugin, and its entry point (`goosebit.plugins`: berth).
            .env("PYTHONPATH", crate::workspace().join("testkit/goosebit"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
        let mut g = Self {
            addr,
            child,
            dir,
            bearer: String::new(),
        };
        let began = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = g.child.try_wait() {
                panic!("goosebit exited ({status}): {}", g.log());
            }
            assert!(
                began.elapsed() < Duration::from_mins(1),
                "goosebit did not listen on {addr} within a minute: {}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The first administrator, as goosebit's setup page makes it.
        let form = format!("username={}&password={}", ADMIN.0, ADMIN.1);
        let a = request(
            addr,
            "POST",
            "/setup",
            "Content-Type: application/x-www-form-urlencoded\r\n",
            form.as_bytes(),
        );
        assert_eq!(a.status, 200, "goosebit /setup: {}", g.log());
        a.json()["access_token"]
            .as_str()
            .expect("an access token")
            .clone_into(&mut g.bearer);
        g
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What goosebit printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("goosebit.log")).unwrap_or_default()
    }

    /// A request to the management API as the administrator.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let mut head = format!("Authorization: Bearer {}\r\n", self.bearer);
        let body = body.map(|b| {
            head.push_str("Content-Type: application/json\r\n");
            b.to_string().into_bytes()
        });
        request(
            self.addr,
            method,
            path,
            &head,
            body.as_deref().unwrap_or_default(),
        )
    }

    /// Like [`Self::api`], and the answer must be a 200 with JSON.
    fn api_ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let a = self.api(method, path, body);
        assert_eq!(
            a.status,
            200,
            "goosebit {method} {path}: {}",
            String::from_utf8_lossy(&a.body)
        );
        a.json()
    }

    /// Uploads a software file (`PUT /api/v1/software`); the answer (200 with the
    /// software's id, or goosebit's refusal).
    pub fn upload(&self, name: &str, bytes: &[u8]) -> Answer {
        let boundary = "berth-goosebit-upload-boundary";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        request(
            self.addr,
            "PUT",
            "/api/v1/software",
            &format!(
                "Authorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n",
                self.bearer
            ),
            &body,
        )
    }

    /// Uploads a software file that goosebit must take; its id.
    pub fn software(&self, name: &str, bytes: &[u8]) -> u64 {
        let a = self.upload(name, bytes);
        assert_eq!(
            a.status,
            200,
            "goosebit took no {name}: {}",
            String::from_utf8_lossy(&a.body)
        );
        a.json()["id"].as_u64().expect("a software id")
    }

    /// Adds a device with its security token (in goosebit's default update mode, the
    /// rollouts of feed `default`).
    pub fn add_device(&self, id: &str, token: &str) {
        self.api_ok(
            "PUT",
            "/api/v1/devices",
            Some(&json!({"devices": [id], "auth_token": token})),
        );
    }

    /// Assigns the software to the device (goosebit's `Assigned` update mode).
    pub fn assign(&self, device: &str, software: u64) {
        self.api_ok(
            "PATCH",
            "/api/v1/devices",
            Some(&json!({"devices": [device], "software": software.to_string()})),
        );
    }

    /// Forces the device's update: goosebit offers it again, even to a device in error
    /// or one that reports the version already, until the device's next final feedback.
    pub fn force(&self, device: &str) {
        self.api_ok(
            "PATCH",
            "/api/v1/devices",
            Some(&json!({"devices": [device], "force_update": true})),
        );
    }

    /// Starts a rollout of the software to the devices of `feed`; its id.
    pub fn rollout(&self, feed: &str, software: u64) -> u64 {
        self.api_ok(
            "PUT",
            "/api/v1/rollouts",
            Some(&json!({"name": "berth test", "feed": feed, "software_id": software})),
        )["id"]
            .as_u64()
            .expect("a rollout id")
    }

    /// The rollout as goosebit lists it (`success_count`, `failure_count`, …).
    pub fn rollout_state(&self, id: u64) -> Value {
        self.api_ok("GET", "/api/v1/rollouts", None)["rollouts"]
            .as_array()
            .expect("rollouts")
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no rollout {id}"))
            .clone()
    }

    /// The device as goosebit lists it (`last_state`, `sw_version`, `progress`, …).
    /// From the list: `GET /api/v1/devices/{id}` answers 500 in goosebit 0.2.12 once a
    /// software is assigned.
    pub fn device(&self, id: &str) -> Value {
        self.api_ok("GET", "/api/v1/devices", None)["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("no device {id}"))
            .clone()
    }

    /// `last_state` of the device: `Unknown`, `Registered`, `Running`, `Error`, `Finished`.
    pub fn state(&self, id: &str) -> String {
        self.device(id)["last_state"]
            .as_str()
            .expect("last_state")
            .to_owned()
    }

    /// The device's update log: the details of its feedback since its last action began.
    pub fn device_log(&self, id: &str) -> String {
        self.api_ok("GET", &format!("/api/v1/devices/{id}/log"), None)["log"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Goosebit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
