//! What the tests that run the `graft` program share: the repository's root, starting a
//! server and waiting for the address it prints, and plain HTTP requests to it.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The model kit folder the shipped config uses (absolute where it exists), for the configs
/// tests write elsewhere.
pub fn kit_dir() -> PathBuf {
    let shipped = graft_core::Config::load(&repo_root().join("config/graft.toml")).expect("shipped config");
    std::fs::canonicalize(&shipped.kit.dir).unwrap_or(shipped.kit.dir)
}

/// Copies the folder `from` to `to`, recursively.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A running graft, killed on drop so a failing test leaves no server behind.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A started server: the process, the address it serves on, what it printed before that, and
/// the rest of its standard error, to be read on.
pub struct Serving {
    pub process: Running,
    pub addr: String,
    pub startup: Vec<String>,
    pub lines: Lines<BufReader<ChildStderr>>,
}

/// `graft up --config CONFIG` (warnings only), started and serving.
pub fn graft_up(config: &Path) -> Serving {
    start_serving(
        Command::new(env!("CARGO_BIN_EXE_graft"))
            .args(["up", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn"),
        Duration::from_secs(300),
    )
}

/// Runs `cmd` (`graft serve` or `graft up`) and waits up to `within` for the line that names
/// the address it serves on.
pub fn start_serving(cmd: &mut Command, within: Duration) -> Serving {
    start_serving_then(cmd, within, |_| {})
}

/// [`start_serving`], handing each line graft says before it serves to `startup_line` as it
/// comes (a test acts while graft starts).
pub fn start_serving_then(cmd: &mut Command, within: Duration, mut startup_line: impl FnMut(&str)) -> Serving {
    let mut process = Running(cmd.stderr(Stdio::piped()).spawn().expect("graft starts"));
    let mut lines = BufReader::new(process.0.stderr.take().expect("piped stderr")).lines();
    let deadline = Instant::now() + within;
    let mut startup = Vec::new();
    let addr = loop {
        assert!(Instant::now() < deadline, "graft did not start serving in time: {startup:#?}");
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("graft exited before serving: {startup:#?}"))
            .expect("graft's output is text");
        if let Some(rest) = line.split("on http://").nth(1) {
            break rest.split_whitespace().next().expect("an address").to_owned();
        }
        startup_line(&line);
        startup.push(line);
    };
    assert!(!addr.ends_with(":0"), "the real port is printed, not the requested 0: {addr}");
    Serving {
        process,
        addr,
        startup,
        lines,
    }
}

/// A minimal HTTP/1.1 GET.
pub fn http_get(addr: &str, path: &str) -> String {
    http_get_with(addr, path, &[])
}

/// A minimal HTTP/1.1 GET with `headers`.
pub fn http_get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let headers: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    http_exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"),
        Duration::from_secs(60),
    )
}

/// Sends `request` whole on a new connection and reads the answer to its end, waiting at
/// most `wait` for each read.
pub fn http_exchange(addr: &str, request: &str, wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A minimal HTTP/1.1 POST, as `curl -d` sends it.
pub fn http_post(addr: &str, path: &str, body: &str) -> String {
    http_exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        Duration::from_secs(120),
    )
}

/// The JSON body of an HTTP response (`response` whole, headers first).
pub fn json_body(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("no JSON body ({e}): {response}"))
}
