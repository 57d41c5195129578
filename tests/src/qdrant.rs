//! Real Qdrant servers for tests: the binary that scripts/test unpacks (and checks) from
//! `../shared/tools/qdrant` into the build folder and names in `GRAFT_TEST_QDRANT_BIN`, started
//! on free loopback ports with its storage in a temporary folder, as one node or a cluster.
//! A node can be killed (SIGKILL, as a crash) and restarted on the same storage and ports; every
//! node still running is killed when dropped.
//!
//! This module starts and stops servers only; what graft does with them is the tests' business.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to answer `/readyz` (a cluster node also waits for consensus).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The Qdrant binary to start, or why there is none: tests that need one are `#[ignore]`d
/// with that reason, and scripts/test includes them when it has unpacked the binary.
pub fn binary() -> Result<PathBuf, String> {
    let bin = std::env::var_os("GRAFT_TEST_QDRANT_BIN")
        .ok_or("GRAFT_TEST_QDRANT_BIN is not set (scripts/test sets it from ../shared/tools/qdrant)")?;
    let bin = PathBuf::from(bin);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("GRAFT_TEST_QDRANT_BIN names {}, which is not a file", bin.display()))
    }
}

/// One Qdrant process (or, after [`Node::kill`], its storage and ports, ready to restart).
pub struct Node {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub http_port: u16,
    pub grpc_port: u16,
    p2p_port: u16,
    /// Cluster nodes: the `--uri` this node announces, and the peer it joins through.
    cluster: Option<(String, Option<String>)>,
    /// The API key clients must send (`QDRANT__SERVICE__API_KEY`), if any.
    api_key: Option<String>,
    child: Option<Child>,
}

impl Node {
    /// A single node, started and ready.
    pub fn single(bin: &Path) -> Node {
        let mut node = Node::new(bin, false, None);
        node.start();
        node
    }

    /// A single node that refuses clients without `api_key`, started and ready.
    pub fn single_with_api_key(bin: &Path, api_key: &str) -> Node {
        let mut node = Node::new(bin, false, None);
        node.api_key = Some(api_key.to_owned());
        node.start();
        node
    }

    fn new(bin: &Path, cluster: bool, bootstrap: Option<String>) -> Node {
        let [http_port, grpc_port, p2p_port] = free_ports();
        let uri = format!("http://127.0.0.1:{p2p_port}");
        Node {
            bin: bin.to_owned(),
            dir: tempfile::tempdir().expect("a temporary folder for Qdrant's storage"),
            http_port,
            grpc_port,
            p2p_port,
            cluster: cluster.then_some((uri, bootstrap)),
            api_key: None,
            child: None,
        }
    }

    /// The gRPC address graft's `index.qdrant_url` takes.
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Starts the process (again, after a kill: same storage, same ports) and waits until it
    /// is ready.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the node is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("qdrant.log"))
            .expect("Qdrant's log file");
        let mut command = Command::new(&self.bin);
        command
            .current_dir(self.dir.path())
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", self.http_port.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", self.grpc_port.to_string())
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .env("QDRANT__STORAGE__STORAGE_PATH", self.dir.path().join("storage"))
            .env("QDRANT__STORAGE__SNAPSHOTS_PATH", self.dir.path().join("snapshots"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("Qdrant's log file"))
            .stderr(log);
        if let Some(key) = &self.api_key {
            command.env("QDRANT__SERVICE__API_KEY", key);
        }
        if let Some((uri, bootstrap)) = &self.cluster {
            command
                .env("QDRANT__CLUSTER__ENABLED", "true")
                .env("QDRANT__CLUSTER__P2P__PORT", self.p2p_port.to_string())
                .args(["--uri", uri]);
            if let Some(peer) = bootstrap {
                command.args(["--bootstrap", peer]);
            }
        }
        self.child = Some(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display())),
        );
        let started = Instant::now();
        while self.get("/readyz").map(|(status, _)| status) != Some(200) {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("Qdrant exited ({status}) before it was ready:\n{}", self.log());
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "Qdrant was not ready in {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // REST can answer ready a moment before the gRPC port (graft's) listens.
        while std::net::TcpStream::connect(("127.0.0.1", self.grpc_port)).is_err() {
            assert!(
                started.elapsed() < START_TIMEOUT,
                "Qdrant's gRPC port {} did not open in {START_TIMEOUT:?}:\n{}",
                self.grpc_port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process as a crash would (SIGKILL) and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the node has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qdrant.log")).unwrap_or_default()
    }

    /// `GET path` on the node's REST port: status and body, or `None` when it does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http(self.http_port, "GET", path, "")
    }

    /// `POST path` with a JSON body on the node's REST port.
    pub fn post(&self, path: &str, json: &str) -> Option<(u16, String)> {
        http(self.http_port, "POST", path, json)
    }

    /// The exact number of points in `collection`, as this node answers (`None` while it
    /// cannot).
    pub fn count(&self, collection: &str) -> Option<u64> {
        self.count_body(collection, r#"{"exact": true}"#)
    }

    /// Points in `collection` whose payload field `key` is `value`.
    pub fn count_where(&self, collection: &str, key: &str, value: &str) -> Option<u64> {
        let body = serde_json::json!({"exact": true, "filter": {"must": [{"key": key, "match": {"value": value}}]}});
        self.count_body(collection, &body.to_string())
    }

    fn count_body(&self, collection: &str, body: &str) -> Option<u64> {
        let (status, body) = self.post(&format!("/collections/{collection}/points/count"), body)?;
        let json: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        json["result"]["count"].as_u64()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Nodes on loopback forming one Qdrant cluster (Raft consensus among them).
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// `n` nodes: the first starts the cluster, the others join through it; returns when every
    /// node sees all `n` peers.
    pub fn start(bin: &Path, n: usize) -> Cluster {
        let mut first = Node::new(bin, true, None);
        first.start();
        let bootstrap = first.cluster.as_ref().map(|(uri, _)| uri.clone());
        let mut nodes = vec![first];
        for _ in 1..n {
            let mut node = Node::new(bin, true, bootstrap.clone());
            node.start();
            nodes.push(node);
        }
        let cluster = Cluster { nodes };
        cluster.await_consensus();
        cluster
    }

    /// Waits until every running node sees all the cluster's peers and the same leader (after
    /// a start, or a node's restart).
    pub fn await_consensus(&self) {
        let started = Instant::now();
        loop {
            let views: Vec<Option<(usize, u64)>> = self.nodes.iter().filter(|n| n.child.is_some()).map(consensus).collect();
            let agreed = views.iter().all(|v| v.is_some_and(|(peers, _)| peers == self.nodes.len()))
                && views.windows(2).all(|w| w[0].map(|v| v.1) == w[1].map(|v| v.1));
            if agreed {
                return;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "the cluster did not agree in {START_TIMEOUT:?}: {views:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The peers `node` knows and the leader it follows, from `GET /cluster` (`None` while it has
/// no leader or does not answer).
fn consensus(node: &Node) -> Option<(usize, u64)> {
    let (status, body) = node.get("/cluster")?;
    let json: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
    let peers = json["result"]["peers"].as_object()?.len();
    let leader = json["result"]["raft_info"]["leader"].as_u64()?;
    Some((peers, leader))
}

/// Three ports free now on loopback (held together while chosen, so they differ).
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().expect("a bound port").port();
    [port(0), port(1), port(2)]
}

/// A plain HTTP/1.1 request on loopback; `None` when nothing answers.
fn http(port: u16, method: &str, path: &str, json: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{json}",
        json.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Some((status, body.to_owned()));
    }
    // Chunked: a hexadecimal size line, that many bytes, until a size of 0.
    let (mut rest, mut joined) = (body, String::new());
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            break;
        }
        joined.push_str(tail.get(..size)?);
        rest = tail.get(size..)?.trim_start_matches("\r\n");
    }
    Some((status, joined))
}
