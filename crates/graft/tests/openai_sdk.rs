//! `graft up` as a team runs it (API keys, two projects over a fixture repository, indexed in
//! the background once it serves), used by
//! the official OpenAI and Anthropic Python SDKs (tests/python/test_openai_sdk.py,
//! test_anthropic_sdk.py), and by the CLI beside it
//! (told that the server holds the index), then stopped with SIGTERM
//! while a streamed answer is in flight: the answer finishes, new connections are refused, and
//! graft exits 0.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{copy_tree, graft_up, repo_root};

const USER_KEY: &str = "sk-graft-user-0123456789abcdef";
const OTHER_KEY: &str = "sk-graft-other-0123456789abcdef";
const ADMIN_KEY: &str = "sk-graft-admin-0123456789abcdef";
const MAX_BODY_BYTES: usize = 256 * 1024;

/// The Python with the OpenAI and Anthropic SDKs: `GRAFT_TEST_PYTHON`, or the virtualenv
/// scripts/test makes.
fn python() -> PathBuf {
    let python = std::env::var_os("GRAFT_TEST_PYTHON").map_or_else(|| repo_root().join(".venv/bin/python"), PathBuf::from);
    let works = Command::new(&python)
        .args(["-c", "import openai, anthropic"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "{} cannot import the OpenAI and Anthropic SDKs. Run the test suite with scripts/test, which creates .venv \
         from tests/python/requirements.txt (or set GRAFT_TEST_PYTHON to a Python that has it)",
        python.display()
    );
    python
}

/// A config with keys in a file and two projects over a copy of the `polyglot` fixture.
fn write_setup(dir: &Path) -> PathBuf {
    copy_tree(&repo_root().join("tests/fixtures/polyglot"), &dir.join("repo"));
    std::fs::create_dir_all(dir.join("adapters")).unwrap();
    std::fs::write(
        dir.join("keys.toml"),
        format!(
            "[[keys]]\nname = \"user\"\nkey = \"{USER_KEY}\"\nprojects = [\"polyglot\"]\n\n\
             [[keys]]\nname = \"other\"\nkey = \"{OTHER_KEY}\"\nprojects = [\"archive\"]\n\n\
             [[keys]]\nname = \"admin\"\nkey = \"{ADMIN_KEY}\"\nprojects = [\"*\"]\nadmin = true\n"
        ),
    )
    .unwrap();
    let kit = common::kit_dir();
    let config = dir.join("graft.toml");
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = {MAX_BODY_BYTES}\napi_keys_file = \"keys.toml\"\n\n\
             [index]\ndir = \"index\"\n\n[adapters]\ndir = \"adapters\"\n\n\
             [[projects]]\nname = \"polyglot\"\npath = \"repo\"\n\n\
             [[projects]]\nname = \"archive\"\npath = \"repo\"\nretrieval = false\n",
            kit.display().to_string()
        ),
    )
    .unwrap();
    config
}

#[test]
fn the_openai_sdk_works_against_graft_up_and_sigterm_lets_answers_finish() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(dir.path());

    let serving = graft_up(&config);
    let (mut server, addr, startup, mut lines) = (serving.process, serving.addr, serving.startup, serving.lines);
    assert!(
        startup.iter().any(|l| l.contains("indexing project `polyglot`")),
        "up indexes the projects: {startup:#?}"
    );
    // It serves at once and indexes in the background: wait for both projects.
    let mut pending = vec!["project `polyglot` indexed", "project `archive` indexed"];
    let mut seen = Vec::new();
    while !pending.is_empty() {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("graft exited while indexing: {seen:#?}"))
            .unwrap();
        pending.retain(|p| !line.contains(p));
        assert!(!line.contains("failed"), "{line}");
        seen.push(line);
    }
    // The rest of graft's output, read as it comes so the pipe never fills.
    let output = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let output = Arc::clone(&output);
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| output.lock().unwrap().push(l)))
    };

    for file in ["test_openai_sdk.py", "test_anthropic_sdk.py"] {
        let sdk = Command::new(&python)
            .arg(repo_root().join("tests/python").join(file))
            .env("GRAFT_BASE_URL", format!("http://{addr}/v1"))
            .env("GRAFT_USER_KEY", USER_KEY)
            .env("GRAFT_OTHER_KEY", OTHER_KEY)
            .env("GRAFT_MODEL", "smollm2-135m-instruct")
            .env("GRAFT_PROJECT", "polyglot")
            .env("GRAFT_OTHER_PROJECT", "archive")
            .env("GRAFT_EMBEDDING_MODEL", "minilm-l6-v2")
            .env("GRAFT_MAX_BODY_BYTES", MAX_BODY_BYTES.to_string())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&sdk.stderr);
        assert!(
            sdk.status.success(),
            "the SDK tests of {file} failed:\n{report}\ngraft said: {:#?}",
            output.lock().unwrap()
        );
        assert!(report.contains("OK") && !report.contains("skipped"), "{report}");
        eprintln!("{report}");
    }

    // The server has the project's index open: a CLI run beside it says so and what to do.
    for args in [
        &["search", "TokenVault", "--project", "polyglot"][..],
        &["index", "--project", "polyglot"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_graft"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "graft {args:?} beside a running server: {stderr}");
        assert!(
            stderr.contains("open in another process") && stderr.contains("/v1/projects/<name>/search"),
            "graft {args:?}: {stderr}"
        );
    }
    // With the server's address configured, they go through it: with the admin key, its
    // search and its re-index; without, an error that says which key.
    let beside = dir.path().join("beside.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&beside, text.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""))).unwrap();
    let cli = |args: &[&str], key: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_graft"));
        cmd.args(args).arg("--config").arg(&beside).env_remove("GRAFT_API_KEY");
        if let Some(key) = key {
            cmd.env("GRAFT_API_KEY", key);
        }
        cmd.output().unwrap()
    };
    let keyless = cli(&["search", "TokenVault", "--project", "polyglot"], None);
    let stderr = String::from_utf8_lossy(&keyless.stderr);
    assert!(!keyless.status.success() && stderr.contains("set GRAFT_API_KEY"), "{stderr}");
    let searched = cli(&["search", "TokenVault", "--project", "polyglot", "--json"], Some(ADMIN_KEY));
    assert!(searched.status.success(), "{}", String::from_utf8_lossy(&searched.stderr));
    let hits: serde_json::Value = serde_json::from_slice(&searched.stdout).unwrap();
    assert!(
        hits.as_array().unwrap().iter().any(|h| h["path"] == "auth/TokenVault.java"),
        "{hits}"
    );
    // --server names it whatever the config says (here: a port of 0).
    let named = Command::new(env!("CARGO_BIN_EXE_graft"))
        .args([
            "search",
            "TokenVault",
            "--project",
            "polyglot",
            "--json",
            "--server",
            &format!("http://{addr}/v1"),
        ])
        .arg("--config")
        .arg(&config)
        .env("GRAFT_API_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert!(named.status.success(), "{}", String::from_utf8_lossy(&named.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&named.stdout).unwrap(), hits);
    let code = cli(
        &[
            "search",
            "vault.rotateSigningKeys();",
            "--code",
            "--path",
            "auth/TokenVault.java",
            "--project",
            "polyglot",
            "--json",
        ],
        Some(ADMIN_KEY),
    );
    assert!(code.status.success(), "{}", String::from_utf8_lossy(&code.stderr));
    let hits: serde_json::Value = serde_json::from_slice(&code.stdout).unwrap();
    assert!(
        !hits.as_array().unwrap().is_empty() && hits.as_array().unwrap().iter().all(|h| h["path"] != "auth/TokenVault.java"),
        "--path leaves its file out: {hits}"
    );
    let reindexed = cli(&["index", "--project", "polyglot", "--json"], Some(ADMIN_KEY));
    assert!(reindexed.status.success(), "{}", String::from_utf8_lossy(&reindexed.stderr));
    let run: serde_json::Value = serde_json::from_slice(&reindexed.stdout).unwrap();
    assert_eq!(run["through"], format!("http://{addr}").as_str(), "{run}");
    let report = &run["report"];
    assert!(
        report["files_unchanged"].as_u64().unwrap() > 0 && report["files_added"] == 0,
        "{run}"
    );
    let fixture = repo_root().join("tests/fixtures/polyglot");
    let other = cli(&["index", "--project", "polyglot", fixture.to_str().unwrap()], Some(ADMIN_KEY));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success() && stderr.contains("which indexes it from"), "{stderr}");

    // A streamed answer is in flight when SIGTERM arrives.
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = r#"{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"Count from 1 to 20."}],"max_tokens":40,"temperature":0,"stream":true}"#;
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {USER_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("\"content\":\"") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
    }
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());

    // New connections are refused once the signal is handled.
    let refused_by = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_ok() {
        assert!(Instant::now() < refused_by, "graft still accepts connections after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The answer in flight runs to its end.
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&received).contains("data: [DONE]") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("\"finish_reason\":\"") && text.contains("data: [DONE]"), "{text}");

    let status = server.0.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "graft exits 0 on SIGTERM, got {status}");
    let output = output.lock().unwrap();
    assert!(output.iter().any(|l| l.contains("graft stopped")), "{output:#?}");
}
