//! The bounded hostile probe (tests/python/probe.py) against `graft up` as a team runs it:
//! an admin key, a project over the `polyglot` fixture, an adapter in the store, and short
//! read timeouts and a small connection limit so that slow and idle clients are dealt with in
//! seconds. The probe prints a line per check; this test passes when none failed and the
//! server is still up at the end.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{copy_tree, graft_up, repo_root};
use graft_engine::merge::BaseGguf;
use graft_engine::synthetic::SyntheticAdapter;

const ADMIN_KEY: &str = "sk-graft-probe-admin-0123456789";
const READ_TIMEOUT_SECS: u64 = 2;
const MAX_CONNECTIONS: usize = 32;

fn python() -> PathBuf {
    std::env::var_os("GRAFT_TEST_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

fn adapter(dir: &Path, base: &BaseGguf, seed: u64) {
    let spec = SyntheticAdapter {
        projections: &["q_proj", "v_proj"],
        rank: 4,
        alpha: 8.0,
        amplitude: 0.2,
        zero_b: false,
        seed,
    };
    spec.write(dir, base).unwrap();
}

#[test]
fn a_bounded_hostile_probe_finds_nothing_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_tree(&repo_root().join("tests/fixtures/polyglot"), &root.join("repo"));
    let kit = common::kit_dir();
    let gguf = graft_kit::Kit::new(&kit)
        .resolve("smollm2-135m-instruct")
        .expect("the kit's SmolLM2 (scripts/test fetches it)");
    let base = BaseGguf::open(&gguf).unwrap();
    adapter(&root.join("adapters/probe-lora"), &base, 1);
    adapter(&root.join("spare/v1"), &base, 1);
    adapter(&root.join("spare/v2"), &base, 2);
    std::fs::write(
        root.join("keys.toml"),
        format!("[[keys]]\nname = \"admin\"\nkey = \"{ADMIN_KEY}\"\nprojects = [\"*\"]\nadmin = true\n"),
    )
    .unwrap();
    let config = root.join("graft.toml");
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\napi_keys_file = \"keys.toml\"\n\
             read_timeout_secs = {READ_TIMEOUT_SECS}\nmax_connections = {MAX_CONNECTIONS}\n\n\
             [index]\ndir = \"index\"\n\n[adapters]\ndir = \"adapters\"\n\n\
             [[projects]]\nname = \"polyglot\"\npath = \"repo\"\n",
            kit.display().to_string()
        ),
    )
    .unwrap();

    let serving = graft_up(&config);
    let (mut server, addr, mut lines) = (serving.process, serving.addr, serving.lines);
    let until = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < until, "the project was not indexed in time");
        let line = lines.next().expect("graft exited while indexing").unwrap();
        if line.contains("project `polyglot` indexed") {
            break;
        }
    }
    // The rest of graft's output is read as it comes, so the pipe never fills.
    let reader = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let started = Instant::now();
    let probe = Command::new(python())
        .arg(repo_root().join("tests/python/probe.py"))
        .args([addr.as_str(), ADMIN_KEY, "polyglot", "probe-lora"])
        .arg(root.join("adapters/probe-lora"))
        .arg(root.join("spare"))
        .env("PROBE_READ_TIMEOUT", READ_TIMEOUT_SECS.to_string())
        .env("PROBE_MAX_CONNECTIONS", MAX_CONNECTIONS.to_string())
        .output()
        .expect("python runs");
    let report = String::from_utf8_lossy(&probe.stdout);
    println!("{report}\n{}", String::from_utf8_lossy(&probe.stderr));
    let still_running = server.0.try_wait().unwrap().is_none();
    let _ = server.0.kill();
    let _ = server.0.wait();
    let log = reader.join().unwrap_or_default();
    assert!(
        still_running,
        "graft is still serving after the probe; its log:\n{}",
        log.join("\n")
    );
    assert!(
        probe.status.success(),
        "probe failures:\n{}",
        report.lines().filter(|l| l.starts_with("FAIL")).collect::<Vec<_>>().join("\n")
    );
    assert!(report.contains(" 0 failed"), "{report}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the probe stays within two minutes: {:?}",
        started.elapsed()
    );
    assert!(log.iter().all(|l| !l.contains("panicked")), "nothing panicked:\n{}", log.join("\n"));
}
