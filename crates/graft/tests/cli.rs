//! The `graft` program itself, run as a user runs it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{http_get, http_get_with, http_post, json_body, repo_root, start_serving, Serving};

fn graft() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_graft"));
    cmd.current_dir(repo_root()).env("RUST_LOG", "warn");
    cmd
}

#[test]
fn a_bad_config_stops_graft_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("graft.toml");
    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_byte = 10\n").unwrap();
    let out = graft().args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`server.max_body_byte`"), "{stderr}");
    assert!(stderr.contains("unknown field"), "{stderr}");

    std::fs::write(&config, "[model]\nmax_num_seqs = \"eight\"\n").unwrap();
    let out = graft().args(["serve", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("`model.max_num_seqs`") && stderr.contains("line 2"), "{stderr}");
}

#[test]
fn a_missing_file_is_reported_once_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = graft().args(["serve", "--config"]).arg(&missing).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("error: ")).expect("an error line");
    assert!(line.contains(&*missing.to_string_lossy()), "{stderr}");
    // The io error's text, once: the config error writes it and also gives it as its cause.
    let reason = std::fs::read(&missing).unwrap_err().to_string();
    assert!(line.ends_with(&reason) && line.matches(&reason).count() == 1, "{line}");
}

#[test]
fn serve_reports_a_missing_model_file_instead_of_reaching_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("graft.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[model]\ngguf = \"nowhere/model.gguf\"\n",
    )
    .unwrap();
    let out = graft().args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nowhere/model.gguf") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_public_address_without_api_keys() {
    let out = graft()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("GRAFT_API_KEYS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0:0 with no API keys"), "{stderr}");
    assert!(
        stderr.contains("allow_unauthenticated"),
        "the message says how to proceed: {stderr}"
    );
}

#[test]
fn up_reports_a_busy_port_before_indexing_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = graft().args(["up", "--listen", &addr]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(!stderr.contains("indexing project"), "the port is checked first: {stderr}");
}

/// `graft up` follows its projects' repositories (`index.refresh_secs`): a file added or
/// removed reaches retrieval at the next look, an unchanged repository is left alone, and
/// the project's status and `/metrics` tell the runs.
#[test]
fn up_re_indexes_a_project_when_its_repository_changes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    common::copy_tree(&repo_root().join("tests/fixtures/polyglot"), &repo);
    // A vendored file, left out: the first run's line says so.
    std::fs::create_dir_all(repo.join("vendor")).unwrap();
    std::fs::write(repo.join("vendor/dep.py"), "def dep():\n    return 1\n").unwrap();
    std::fs::create_dir_all(dir.path().join("adapters")).unwrap();
    let config = dir.path().join("graft.toml");
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[index]\ndir = \"index\"\nrefresh_secs = 1\n\n\
             [adapters]\ndir = \"adapters\"\n\n[[projects]]\nname = \"fixture\"\npath = \"repo\"\n",
            common::kit_dir().display().to_string()
        ),
    )
    .unwrap();
    let serving = common::graft_up(&config);
    let (_server, addr) = (serving.process, serving.addr);
    let said = Said::new(serving.lines);
    let wait_for = |wanted: &str, within: Duration| said.wait_for(wanted, within, "failed");
    let search = |query: &str| -> Vec<String> {
        let body = format!(r#"{{"query": "{query}", "mode": "keyword"}}"#);
        let response = http_post(&addr, "/v1/projects/fixture/search", &body);
        let answer = json_body(&response);
        let hits = answer["data"].as_array().unwrap_or_else(|| panic!("{response}"));
        hits.iter().map(|h| h["path"].as_str().unwrap().to_owned()).collect()
    };

    let line = wait_for("project `fixture` indexed", Duration::from_secs(300)).expect("indexed");
    assert!(
        line.contains("; 1 skipped (vendored 1) (`graft index --skipped` lists them)"),
        "{line}"
    );
    assert!(
        wait_for("re-indexed", Duration::from_millis(3500)).is_none(),
        "nothing changed: not re-indexed"
    );
    let added = "billing/ledger.py";
    std::fs::create_dir_all(repo.join("billing")).unwrap();
    std::fs::write(
        repo.join(added),
        "def reconcile_quarterly_ledger(entries):\n    return sum(e.amount for e in entries)\n",
    )
    .unwrap();
    let line = wait_for("project `fixture` re-indexed", Duration::from_secs(60)).expect("re-indexed after a file was added");
    assert!(line.contains("1 files added, 0 changed, 0 removed"), "{line}");
    assert!(search("reconcile_quarterly_ledger").contains(&added.to_owned()));
    std::fs::remove_file(repo.join(added)).unwrap();
    let line = wait_for("project `fixture` re-indexed", Duration::from_secs(60)).expect("re-indexed after a file was removed");
    assert!(line.contains("0 files added, 0 changed, 1 removed"), "{line}");
    assert!(!search("reconcile_quarterly_ledger").contains(&added.to_owned()));

    // The project's status and the metrics say so: three runs, the last one removed the file.
    let status = http_get(&addr, "/v1/projects/fixture");
    let status = json_body(&status);
    let last = &status["last_run"];
    assert_eq!(
        (&last["files_removed"], &last["files_added"], &last["error"]),
        (&serde_json::json!(1), &serde_json::json!(0), &serde_json::Value::Null),
        "{status}"
    );
    let metrics = http_get(&addr, "/metrics");
    assert!(
        metrics.contains("graft_index_runs_total{project=\"fixture\",outcome=\"ok\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("graft_index_last_success_timestamp_seconds{project=\"fixture\"}"),
        "{metrics}"
    );

    // A project added to the config while graft serves is indexed and followed as the others,
    // and where its repository moves; removed, it is no longer served, and the others serve on.
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(
        notes.join("ledger.py"),
        "def settle_vendor_invoices(batch):\n    return len(batch)\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let with_notes = format!("{text}\n[[projects]]\nname = \"notes\"\npath = \"notes\"\n");
    std::fs::write(config.with_extension("new"), &with_notes).unwrap();
    std::fs::rename(config.with_extension("new"), &config).unwrap();
    let line = wait_for("project `notes` added", Duration::from_secs(30)).expect("the project added");
    assert!(line.contains("no index yet"), "{line}");
    assert!(wait_for("project `notes` indexed", Duration::from_secs(120)).is_some());
    let notes_search = |query: &str| {
        http_post(
            &addr,
            "/v1/projects/notes/search",
            &format!(r#"{{"query": "{query}", "mode": "keyword"}}"#),
        )
    };
    assert!(notes_search("settle_vendor_invoices").contains("ledger.py"));
    std::fs::write(notes.join("audit.py"), "def audit_vendor_payments(rows):\n    return rows\n").unwrap();
    let line = wait_for("project `notes` re-indexed", Duration::from_secs(60)).expect("followed");
    assert!(line.contains("1 files added"), "{line}");
    // Its repository moves: indexed from there at once, and followed there.
    let moved = dir.path().join("notes-moved");
    common::copy_tree(&notes, &moved);
    std::fs::write(moved.join("payroll.py"), "def close_payroll_month(staff):\n    return staff\n").unwrap();
    std::fs::write(
        config.with_extension("new"),
        with_notes.replace("path = \"notes\"", "path = \"notes-moved\""),
    )
    .unwrap();
    std::fs::rename(config.with_extension("new"), &config).unwrap();
    let line = wait_for("project `notes`: path: ", Duration::from_secs(30)).expect("moved");
    assert!(line.ends_with("notes-moved"), "{line}");
    assert!(wait_for("project `notes` indexed", Duration::from_secs(120)).is_some());
    assert!(notes_search("close_payroll_month").contains("payroll.py"));
    std::fs::write(moved.join("audit.py"), "def audit_vendor_refunds(rows):\n    return rows\n").unwrap();
    let line = wait_for("project `notes` re-indexed", Duration::from_secs(60)).expect("followed where it moved");
    assert!(line.contains("0 files added, 1 changed"), "{line}");
    std::fs::write(config.with_extension("new"), &text).unwrap();
    std::fs::rename(config.with_extension("new"), &config).unwrap();
    assert!(wait_for("project `notes` removed", Duration::from_secs(30)).is_some());
    assert!(notes_search("settle_vendor_invoices").starts_with("HTTP/1.1 404"));
    let (gone, kept) = (search("reconcile_quarterly_ledger"), search("rotateSigningKeys"));
    assert!(
        !gone.contains(&added.to_owned()) && kept.contains(&"auth/TokenVault.java".to_owned()),
        "the others serve on: {gone:?} {kept:?}"
    );
}

const FIRST_KEY: &str = "sk-graft-first-0123456789abcdef";
const SECOND_KEY: &str = "sk-graft-second-0123456789abcdef";

/// Writes the keys file `keys` with `entries` (name, key), each open to every project.
fn write_keys(keys: &Path, entries: &[(&str, &str)]) {
    let text: String = entries
        .iter()
        .map(|(name, key)| format!("[[keys]]\nname = \"{name}\"\nkey = \"{key}\"\nprojects = [\"*\"]\n\n"))
        .collect();
    // Written beside and renamed, so that no look of the server's finds it half-written (one
    // that did would report it and keep the keys in use until the next look).
    let beside = keys.with_extension("toml.new");
    std::fs::write(&beside, text).unwrap();
    std::fs::rename(&beside, keys).unwrap();
}

/// A config in `dir` for a graft on a free loopback port whose keys file is `dir/keys.toml`
/// (written first with the key `first`), and that file's path.
fn keys_config(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let keys = dir.join("keys.toml");
    write_keys(&keys, &[("first", FIRST_KEY)]);
    let config = dir.join("graft.toml");
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\napi_keys_file = \"keys.toml\"\n",
            common::kit_dir().display().to_string()
        ),
    )
    .unwrap();
    (config, keys)
}

/// The HTTP status of `GET /v1/models` at `addr` with the bearer token `key`.
fn models_status(addr: &str, key: &str) -> String {
    let response = http_get_with(addr, "/v1/models", &[("Authorization", &format!("Bearer {key}"))]);
    response.split_whitespace().nth(1).unwrap_or_default().to_owned()
}

/// API keys are reloaded without a restart, when the keys file changes and on SIGHUP (which
/// no longer stops graft); a file that cannot be used, or that leaves no key, changes nothing.
#[test]
fn serve_reloads_its_api_keys_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (config, keys) = keys_config(dir.path());
    let write_keys = |entries: &[(&str, &str)]| write_keys(&keys, entries);
    let serving = start_serving(graft().args(["serve", "--config"]).arg(&config), Duration::from_secs(120));
    let (server, addr) = (serving.process, serving.addr);
    let said = Said::new(serving.lines);
    let status = |key: &str| models_status(&addr, key);
    let within = Duration::from_secs(30);
    assert_eq!((status(FIRST_KEY), status(SECOND_KEY)), ("200".into(), "401".into()));

    // `graft status` without an admin key: the model, and what it could not be told.
    let out = graft()
        .args(["status", "--server", &format!("http://{addr}")])
        .env("GRAFT_API_KEY", FIRST_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.starts_with(&format!("graft at http://{addr}: smollm2-135m-instruct on the cpu")),
        "{stdout}"
    );
    assert!(
        stdout.contains("projects: not known (the graft at") && stdout.contains("wants an admin key for its projects: set GRAFT_API_KEY)"),
        "{stdout}"
    );

    // The file changes: the next request is checked against the new keys.
    write_keys(&[("second", SECOND_KEY)]);
    let line = said.wait_for("API keys", within, "").expect("reloaded");
    assert!(line.contains("added [second], removed [first]"), "{line}");
    assert_eq!((status(FIRST_KEY), status(SECOND_KEY)), ("401".into(), "200".into()));

    // A file that does not parse, or that names no key, leaves the keys in use.
    std::fs::write(&keys, "[[keys]]\nkey = ").unwrap();
    let line = said.wait_for("API keys", within, "").expect("a broken file reported");
    assert!(line.contains("not reloaded") && line.contains("keys.toml"), "{line}");
    std::fs::write(&keys, "").unwrap();
    let line = said.wait_for("API keys", within, "").expect("an empty file reported");
    assert!(line.contains("not reloaded") && line.contains("open the API"), "{line}");
    assert_eq!(status(SECOND_KEY), "200");

    // SIGHUP reloads at once and does not stop graft.
    write_keys(&[("first", FIRST_KEY), ("second", SECOND_KEY)]);
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let line = said.wait_for("API keys", within, "").expect("reloaded on SIGHUP");
    assert!(line.contains("added [first]"), "{line}");
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let line = said.wait_for("API keys", within, "").expect("reloaded on SIGHUP");
    assert!(line.contains("unchanged"), "{line}");
    assert_eq!((status(FIRST_KEY), status(SECOND_KEY)), ("200".into(), "200".into()));
}

/// A keys file edited after graft read it, while it loads its model, is read once it serves:
/// the reload compares the file with its state when the keys in use were read (it once
/// compared with the file as found after loading, and kept the old keys until the next edit).
#[test]
fn keys_edited_while_graft_loads_its_model_are_read_once_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (config, keys) = keys_config(dir.path());
    let mut edited = false;
    let serving = common::start_serving_then(
        graft().args(["serve", "--config"]).arg(&config).env("RUST_LOG", "info"),
        Duration::from_secs(120),
        |line| {
            // The keys are read before the model; this line comes between the two.
            if line.contains("loading the base model") {
                write_keys(&keys, &[("second", SECOND_KEY)]);
                edited = true;
            }
        },
    );
    assert!(edited, "graft said when it loads its model: {:#?}", serving.startup);
    // Said after graft says it serves (its background tasks start after that line).
    let said = Said::new(serving.lines);
    let line = said.wait_for("API keys", Duration::from_secs(30), "").expect("the edit read");
    assert!(line.contains("added [second], removed [first]"), "{line}");
    let status = |key: &str| models_status(&serving.addr, key);
    assert_eq!((status(FIRST_KEY), status(SECOND_KEY)), ("401".into(), "200".into()));
}

/// A project's serving settings are taken up when the config file is saved, with no restart:
/// the adapter (loaded first), retrieval, `top_k`; an adapter that cannot load, or a file that
/// does not parse, leaves them as they were; keys a running graft does not take up are named.
#[test]
fn serve_takes_up_a_projects_serving_settings_when_its_config_is_saved() {
    let shipped = graft_core::Config::load(&repo_root().join("config/graft.toml")).unwrap();
    let kit = std::fs::canonicalize(&shipped.kit.dir).unwrap();
    let work = tempfile::tempdir().unwrap();
    common::copy_tree(&repo_root().join("tests/fixtures/polyglot"), &work.path().join("repo"));
    write_synthetic_adapter(&kit, &work.path().join("adapters/tuned"));
    std::fs::create_dir_all(work.path().join("adapters/broken")).unwrap();
    std::fs::write(work.path().join("adapters/broken/adapter_config.json"), r#"{"r":4,"lora_alpha":8}"#).unwrap();
    let config = work.path().join("graft.toml");
    // Written beside and renamed, as an editor saves, so no look finds it half-written.
    let save_all = |generation: &str, project: &str, more: &str| {
        let text = format!(
            "[kit]\ndir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[index]\ndir = \"index\"\n\n\
             [adapters]\ndir = \"adapters\"\ncache_dir = \"cache\"\n\n{generation}\
             [[projects]]\nname = \"fixture\"\npath = \"repo\"\n{project}\n{more}",
            kit.display().to_string()
        );
        let beside = config.with_extension("toml.new");
        std::fs::write(&beside, text).unwrap();
        std::fs::rename(&beside, &config).unwrap();
    };
    let save = |generation: &str, project: &str| save_all(generation, project, "");
    save("", "");
    let serving = start_serving(graft().args(["serve", "--config"]).arg(&config), Duration::from_secs(120));
    let (server, addr) = (serving.process, serving.addr);
    let said = Said::new(serving.lines);
    let within = Duration::from_secs(60);
    let settings = || {
        let response = http_get(&addr, "/v1/projects/fixture");
        let status = json_body(&response);
        (status["adapter"].clone(), status["retrieval"].clone(), status["top_k"].clone())
    };
    assert_eq!(settings(), (serde_json::Value::Null, true.into(), 5.into()));

    // The arm an evaluation chose, saved: served at once, as are the requests' defaults. A key
    // a running graft does not take up is named, not ignored.
    const SECTIONS: &str = "[generation]\ndefault_max_tokens = 3\n\n[model]\nmax_num_seqs = 8\n\n";
    save(SECTIONS, "adapter = \"tuned\"\nretrieval = false\ntop_k = 3\n");
    let line = said.wait_for("config", within, "").expect("the defaults reloaded");
    assert!(
        line.ends_with("config reloaded: generation.default_max_tokens: default → 3"),
        "{line}"
    );
    let line = said.wait_for("config", within, "").expect("the settings reloaded");
    assert!(
        line.contains("project `fixture`: adapter: none → `tuned`, retrieval: true → false, top_k: 5 → 3"),
        "{line}"
    );
    let line = said.wait_for("config", within, "").expect("the rest named");
    assert!(line.ends_with("used from the next start only: model.max_num_seqs"), "{line}");
    assert_eq!(settings(), ("tuned".into(), false.into(), 3.into()));
    let unbounded = r#"{"model": "fixture", "prompt": "def add(a, b):", "temperature": 0}"#;
    let answer = http_post(&addr, "/v1/completions", unbounded);
    assert!(
        answer.contains(r#""finish_reason":"length""#) && answer.contains(r#""completion_tokens":3,"#),
        "{answer}"
    );
    let body = r#"{"model": "fixture", "prompt": "def add(a, b):", "max_tokens": 4, "temperature": 0}"#;
    let answer = http_post(&addr, "/v1/completions", body);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let models = http_get(&addr, "/v1/models");
    assert!(
        models.contains(r#""id":"fixture""#) && models.contains(r#""parent":"tuned""#),
        "{models}"
    );

    // An adapter that cannot load, or a file that does not parse, leaves the settings in use.
    save(SECTIONS, "adapter = \"broken\"\n");
    let line = said.wait_for("config", within, "").expect("the broken adapter reported");
    assert!(line.contains("keeps its settings") && line.contains("`broken`"), "{line}");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("adapter = \"broken\"", "adapter = ")).unwrap();
    let line = said.wait_for("config", within, "").expect("the broken file reported");
    assert!(line.contains("not reloaded") && line.contains("graft.toml"), "{line}");
    assert_eq!(settings(), ("tuned".into(), false.into(), 3.into()));
    // The gauge is set once the reload's lines are said: looked at until it shows, briefly.
    let reload_gauge_shows = |ok: bool| {
        let wanted = format!("\ngraft_config_last_reload_successful {}\n", u8::from(ok));
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !http_get(&addr, "/metrics").contains(&wanted) {
            if std::time::Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    };
    assert!(reload_gauge_shows(false), "an operator's alert sees the failed reload");

    // SIGHUP reads it again at once, and says when nothing changed.
    save(SECTIONS, "adapter = \"tuned\"\nretrieval = false\ntop_k = 3\n");
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let line = said.wait_for("config reloaded", within, "").expect("reloaded on SIGHUP");
    assert!(line.ends_with("unchanged"), "{line}");
    assert!(reload_gauge_shows(true));
    save("", "");
    let line = said.wait_for("config reloaded: project", within, "").expect("back to the base");
    assert!(line.contains("adapter: `tuned` → none"), "{line}");
    assert_eq!(settings(), (serde_json::Value::Null, true.into(), 5.into()));

    // Projects added (one on the adapter, sharing the first's index), changed and removed,
    // and with them the model that requests naming none go to: nothing waits for a restart.
    save_all(
        "",
        "",
        "[[projects]]\nname = \"tuned-fixture\"\npath = \"repo\"\nindex = \"fixture\"\nadapter = \"tuned\"\nretrieval = false\n",
    );
    let line = said.wait_for("config", within, "").expect("added");
    assert!(
        line.contains("project `tuned-fixture` added") && line.contains("`graft index`"),
        "{line}"
    );
    let status = http_get(&addr, "/v1/projects/tuned-fixture");
    assert!(
        status.contains(r#""index_of":"fixture""#) && status.contains(r#""adapter":"tuned""#),
        "{status}"
    );
    let answer = http_post(&addr, "/v1/completions", &body.replace("\"fixture\"", "\"tuned-fixture\""));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The first project gives way to another, on a repository of its own; the tuned one gets
    // an index of its own.
    let text = std::fs::read_to_string(&config).unwrap();
    let only_tuned = text.replace(
        "name = \"fixture\"\npath = \"repo\"\n",
        "name = \"other\"\npath = \"elsewhere\"\nretrieval = false\n",
    );
    std::fs::create_dir_all(work.path().join("elsewhere")).unwrap();
    std::fs::write(&config, only_tuned.replace("index = \"fixture\"\n", "")).unwrap();
    for wanted in [
        "config reloaded: project `other` added",
        "config reloaded: project `tuned-fixture`: index: `fixture`'s → own",
        "config: project `tuned-fixture` has no index yet: `graft index`",
        "config reloaded: requests that name no model: `fixture` → `other`",
        "config reloaded: project `fixture` removed",
    ] {
        assert!(said.wait_for(wanted, within, "next start").is_some(), "{wanted}");
    }
    assert!(http_get(&addr, "/v1/projects/fixture").starts_with("HTTP/1.1 404"));
    let unnamed = r#"{"prompt": "def add(a, b):", "max_tokens": 2, "temperature": 0}"#;
    let answer = http_post(&addr, "/v1/completions", unnamed);
    assert!(answer.contains(r#""model":"other""#), "{answer}");
    let status = http_get(&addr, "/v1/projects/tuned-fixture");
    assert!(status.contains(r#""index_of":"tuned-fixture""#), "{status}");
    let reindex = || http_post(&addr, "/v1/projects/tuned-fixture/reindex", "{}");
    let first = reindex();
    assert!(first.starts_with("HTTP/1.1 200") && !first.contains(r#""chunks":0,"#), "{first}");
    // Its repository moves (a checkout elsewhere): the index it has serves until it is
    // brought up to date, where the files that did not change keep their vectors.
    common::copy_tree(&work.path().join("repo"), &work.path().join("moved"));
    let text = std::fs::read_to_string(&config).unwrap();
    let moved = text.replace(
        "name = \"tuned-fixture\"\npath = \"repo\"",
        "name = \"tuned-fixture\"\npath = \"moved\"",
    );
    std::fs::write(&config, moved).unwrap();
    let line = said.wait_for("config", within, "").expect("moved");
    assert!(
        line.contains("project `tuned-fixture`: path: ") && line.ends_with("moved"),
        "{line}"
    );
    let line = said.wait_for("config", within, "").expect("the index named");
    assert!(line.contains("index is of its old repository until `graft index`"), "{line}");
    let again = reindex();
    assert!(again.starts_with("HTTP/1.1 200") && again.contains(r#""embeddings":0,"#), "{again}");
    save("", "");
    assert!(said.wait_for("project `other` removed", within, "").is_some());
    assert!(said.wait_for("project `tuned-fixture` removed", within, "").is_some());
    let status = |json: bool| {
        let mut status = graft();
        status
            .args(["status", "--server", &format!("http://{addr}/v1")])
            .env_remove("GRAFT_API_KEY");
        if json {
            status.arg("--json");
        }
        let out = status.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let answer: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    let names: Vec<&str> = answer["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["project"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fixture"], "{answer}");
    assert_eq!(answer["adapters_loaded"], serde_json::json!(["tuned"]), "{answer}");
    assert_eq!(answer["default_model"], "fixture", "{answer}");
    assert_eq!(
        (&answer["generations"]["running"], &answer["last_reload_successful"]),
        (&0.into(), &true.into())
    );
    let text = status(false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[1], "generations: 0 running, 0 queued; last config reload: applied", "{text}");
    assert_eq!(lines[2], "adapters loaded: tuned", "{text}");
    assert_eq!(lines[3], "requests that name no model: fixture", "{text}");
    assert!(
        lines[5].starts_with("fixture  the base   top 5, 512 tokens  not usable: no index for project `fixture`"),
        "{text}"
    );
    let nobody = graft().args(["status", "--server", "http://127.0.0.1:9"]).output().unwrap();
    assert!(!nobody.status.success() && String::from_utf8_lossy(&nobody.stderr).contains("no graft answers at http://127.0.0.1:9"));
    assert!(http_get(&addr, "/v1/projects/tuned-fixture").starts_with("HTTP/1.1 404"));
}

/// A graft that started with no project (so with no embedding model) takes a first one up:
/// the embedding model is loaded then, and the project's index built by `graft up`.
#[test]
fn up_started_without_projects_serves_one_added_to_its_config() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_tree(&repo_root().join("tests/fixtures/polyglot"), &dir.path().join("repo"));
    let config = dir.path().join("graft.toml");
    let text = format!(
        "[kit]\ndir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[index]\ndir = \"index\"\n",
        common::kit_dir().display().to_string()
    );
    std::fs::write(&config, &text).unwrap();
    let serving = common::graft_up(&config);
    let (_server, addr) = (serving.process, serving.addr);
    let said = Said::new(serving.lines);
    assert!(!http_get(&addr, "/v1/models").contains("minilm"), "no embedding model yet");
    std::fs::write(
        config.with_extension("new"),
        format!("{text}\n[[projects]]\nname = \"fixture\"\npath = \"repo\"\n"),
    )
    .unwrap();
    std::fs::rename(config.with_extension("new"), &config).unwrap();
    let within = Duration::from_secs(60);
    let line = said.wait_for("embedding model", within, "not added").expect("loaded");
    assert!(line.contains("loaded, for the first project"), "{line}");
    assert!(said.wait_for("project `fixture` added", within, "").is_some());
    assert!(said
        .wait_for("project `fixture` indexed", Duration::from_secs(300), "failed")
        .is_some());
    let hits = http_post(&addr, "/v1/projects/fixture/search", r#"{"query": "rotateSigningKeys"}"#);
    assert!(hits.contains("auth/TokenVault.java"), "{hits}");
    let embedded = http_post(&addr, "/v1/embeddings", r#"{"model": "minilm-l6-v2", "input": "fn main() {}"}"#);
    assert!(embedded.starts_with("HTTP/1.1 200"), "{embedded}");
}

/// What a running graft says on standard error, read on a thread so that its pipe never fills.
struct Said(std::sync::mpsc::Receiver<String>);

impl Said {
    fn new(lines: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>) -> Said {
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| drop(send.send(l))));
        Said(receive)
    }

    /// The next line that holds `wanted`, if one comes within `within`; a line before it that
    /// holds `never` (unless empty) fails the test.
    fn wait_for(&self, wanted: &str, within: Duration, never: &str) -> Option<String> {
        let until = std::time::Instant::now() + within;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            match self.0.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return Some(line),
                Ok(line) => assert!(never.is_empty() || !line.contains(never), "{line}"),
                Err(_) => return None,
            }
        }
        None
    }
}

#[test]
fn models_list_json_describes_the_kit() {
    let out = graft().args(["models", "list", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<_> = rows.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"smollm2-135m-instruct") && ids.contains(&"onnxruntime"), "{ids:?}");
    assert!(rows[0]["sha256"].as_str().unwrap().len() == 64);
}

#[test]
fn serve_answers_a_chat_request_and_stops_cleanly_on_sigterm() {
    // The kit is fetched through the same code path as `graft up`.
    let fetch = graft().args(["models", "fetch", "smollm2-135m-instruct"]).output().unwrap();
    assert!(fetch.status.success(), "{}", String::from_utf8_lossy(&fetch.stderr));

    let serving = start_serving(graft().args(["serve", "--listen", "127.0.0.1:0"]), Duration::from_secs(120));
    let (mut server, addr, lines) = (serving.process, serving.addr, serving.lines);

    // What README's curl example sends: no content type, so curl's form default.
    let body = r#"{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"Write a Rust function that adds two numbers"}],"max_tokens":16,"temperature":0}"#;
    let response = http_post(&addr, "/v1/chat/completions", body);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let json = json_body(&response);
    assert!(
        !json["choices"][0]["message"]["content"].as_str().unwrap().trim().is_empty(),
        "{json}"
    );

    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.0.wait().unwrap();
    assert!(status.success(), "graft exits 0 on SIGTERM, got {status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("graft stopped")), "{rest:?}");
}

/// `graft up` on a real repository it has no index of (networkx, 6,000 chunks, minutes of
/// embedding on 2 cores): completions find definitions as soon as the catalog is written,
/// while the vectors are embedded; SIGTERM stops the run at once (it once waited for the whole
/// first index, after saying "graft stopped"); the next start embeds only what was left.
#[test]
fn up_serves_a_first_index_while_embedding_it_and_stops_at_once_on_sigterm() {
    let fetch = graft().args(["models", "fetch", "networkx-src"]).output().unwrap();
    assert!(fetch.status.success(), "{}", String::from_utf8_lossy(&fetch.stderr));
    let repo = common::kit_dir().join("networkx-src/networkx");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("graft.toml");
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[index]\ndir = \"index\"\n\n\
             [[projects]]\nname = \"nx\"\npath = {:?}\n",
            common::kit_dir().display().to_string(),
            repo.display().to_string()
        ),
    )
    .unwrap();
    let pending = |addr: &str| -> (u64, u64) {
        let status = http_get(addr, "/v1/projects/nx");
        let status = json_body(&status);
        (status["vectors_pending"].as_u64().unwrap(), status["chunks"].as_u64().unwrap_or(0))
    };
    let wait_for_pending = |addr: &str| -> (u64, u64) {
        let until = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (left, chunks) = pending(addr);
            if left > 0 {
                return (left, chunks);
            }
            assert!(std::time::Instant::now() < until, "no vectors pending after 120 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let serving = common::graft_up(&config);
    let (mut server, addr) = (serving.process, serving.addr);
    let (left, chunks) = wait_for_pending(&addr);
    assert!(chunks > 5000 && left > chunks / 2, "{left} of {chunks} pending");
    let cursor = r#"{"prefix": "def relax(G, source):\n    pred, dist = bellman_ford_predecessor_and_distance(G, source", "path": "relax.py", "k": 3}"#;
    let response = http_post(&addr, "/v1/projects/nx/search", cursor);
    let answer = json_body(&response);
    assert_eq!(answer["data"][0]["path"], "algorithms/shortest_paths/weighted.py", "{response}");
    assert!(pending(&addr).0 > 0, "still embedding while it answered");
    let metrics = http_get(&addr, "/metrics");
    let gauge = metrics
        .lines()
        .find_map(|l| l.strip_prefix("graft_index_vectors_pending{project=\"nx\"} "))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(gauge.parse::<u64>().unwrap() > 0, "{metrics}");
    // Some vectors stored before the stop, so that the next start has less to do (on a loaded
    // machine the first step can take longer than the checks above).
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while pending(&addr).0 >= left {
        assert!(std::time::Instant::now() < until, "no vector stored in 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }

    let pid = server.0.id().to_string();
    let asked = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.0.wait().unwrap();
    let took = asked.elapsed();
    assert!(status.success(), "graft exits 0 on SIGTERM, got {status}");
    assert!(took < Duration::from_secs(15), "graft took {took:?} to stop");
    let rest: Vec<String> = serving.lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("graft stopped")), "{rest:?}");

    // The next start goes on where the last one stopped.
    let serving = common::graft_up(&config);
    let (_server, addr) = (serving.process, serving.addr);
    let (resumed, _) = wait_for_pending(&addr);
    assert!(resumed < left, "{resumed} pending after the restart, {left} before");
}

/// Writes at `dir` a synthetic adapter on the kit's SmolLM2 (valid weights, no learned
/// behaviour).
fn write_synthetic_adapter(kit: &Path, dir: &Path) {
    let base = graft_engine::merge::BaseGguf::open(&kit.join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    graft_engine::synthetic::SyntheticAdapter {
        projections: &["q_proj", "v_proj"],
        rank: 4,
        alpha: 8.0,
        amplitude: 0.02,
        zero_b: false,
        seed: 7,
    }
    .write(dir, &base)
    .unwrap();
}

/// Writes a small PEFT adapter for the toy model's q_proj weights.
fn write_toy_adapter(dir: &Path, base: &graft_engine::merge::BaseGguf) {
    use candle_core::{Device, Tensor};
    let mut tensors = std::collections::HashMap::new();
    for layer in 0..base.block_count {
        let (out, inp) = base.shape(&format!("blk.{layer}.attn_q.weight")).unwrap();
        let prefix = format!("base_model.model.model.layers.{layer}.self_attn.q_proj");
        let a: Vec<f32> = (0..2 * inp).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
        let b: Vec<f32> = (0..out * 2).map(|i| (i as f32 * 0.73).cos() * 0.1).collect();
        tensors.insert(
            format!("{prefix}.lora_A.weight"),
            Tensor::from_vec(a, (2, inp), &Device::Cpu).unwrap(),
        );
        tensors.insert(
            format!("{prefix}.lora_B.weight"),
            Tensor::from_vec(b, (out, 2), &Device::Cpu).unwrap(),
        );
    }
    std::fs::create_dir_all(dir).unwrap();
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        r#"{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj"]}"#,
    )
    .unwrap();
}

#[test]
fn adapters_are_listed_with_their_problems_and_merged_once() {
    let fetch = graft().args(["models", "fetch", "tiny-llama"]).output().unwrap();
    assert!(fetch.status.success(), "{}", String::from_utf8_lossy(&fetch.stderr));
    let shipped = graft_core::Config::load(&repo_root().join("config/graft.toml")).unwrap();
    let kit = std::fs::canonicalize(&shipped.kit.dir).unwrap();
    let base = graft_engine::merge::BaseGguf::open(&kit.join("tiny-llama/tiny.gguf")).unwrap();

    let work = tempfile::tempdir().unwrap();
    write_toy_adapter(&work.path().join("adapters/good"), &base);
    std::fs::create_dir_all(work.path().join("adapters/broken")).unwrap();
    std::fs::write(work.path().join("adapters/broken/adapter_config.json"), r#"{"r":4,"lora_alpha":8}"#).unwrap();
    let config = work.path().join("graft.toml");
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n[model]\ngguf = \"kit:tiny-llama\"\n[adapters]\ndir = \"adapters\"\ncache_dir = \"cache\"\n",
            kit.display().to_string()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = graft().args(args).arg("--config").arg(&config).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };

    let list = run(&["adapters", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list[0]["name"], "broken");
    assert_eq!(list[0]["valid"], false);
    assert!(
        list[0]["error"].as_str().unwrap().contains("adapter_model.safetensors is missing"),
        "{list}"
    );
    assert_eq!(list[1]["name"], "good");
    assert_eq!(list[1]["valid"], true, "{list}");
    assert_eq!(list[1]["weights"], base.block_count);
    assert_eq!(list[1]["training"], serde_json::Value::Null, "not made by graft train");

    let first = run(&["adapters", "merge", "good", "--json"]);
    assert_eq!(first["merged_now"], true, "{first}");
    assert!(Path::new(first["path"].as_str().unwrap()).is_file());
    let second = run(&["adapters", "merge", "good", "--json"]);
    assert_eq!(second["merged_now"], false, "{second}");
    assert_eq!(second["path"], first["path"]);

    let out = graft()
        .args(["adapters", "merge", "broken", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("adapter `broken`"));
}

#[test]
fn eval_build_writes_a_reproducible_golden_set_and_names_a_bad_gold_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path, extra: &[&str]| {
        graft()
            .args(["eval", "build", "tests/fixtures/polyglot", "--project", "polyglot", "--json", "-o"])
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let half = ["--holdout-fraction", "0.5"];
    let first = run(&a, &half);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(run(&b, &half).status.success());
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert!(report["tasks"].as_u64().unwrap() > 10, "{report}");
    assert!(report["held_out"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "same repository and seed: same tasks"
    );
    let split = std::fs::read_to_string(dir.path().join("a.split.json")).unwrap();
    assert_eq!(split, std::fs::read_to_string(dir.path().join("b.split.json")).unwrap());
    // Every completion task comes from a held-out file.
    let held_out: serde_json::Value = serde_json::from_str(&split).unwrap();
    let held_out: Vec<&str> = held_out["held_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for line in std::fs::read_to_string(&a).unwrap().lines() {
        let task: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(path) = task["path"].as_str() {
            assert!(held_out.contains(&path), "{path} is not held out");
        }
    }

    // The team's own examples are added; a bad one is named by line and field.
    let gold = dir.path().join("gold.jsonl");
    std::fs::write(
        &gold,
        "{\"question\": \"How are keys rotated?\", \"reference\": \"rotateSigningKeys\"}\n",
    )
    .unwrap();
    let with_gold = run(
        &dir.path().join("c.jsonl"),
        &["--holdout-fraction", "0.5", "--gold", gold.to_str().unwrap()],
    );
    assert!(with_gold.status.success(), "{}", String::from_utf8_lossy(&with_gold.stderr));
    let text = std::fs::read_to_string(dir.path().join("c.jsonl")).unwrap();
    assert!(text.lines().last().unwrap().contains("\"id\":\"gold-1\""), "{text}");
    std::fs::write(&gold, "{\"question\": \"q\", \"reference\": \"r\"}\n{\"question\": \"How?\"}\n").unwrap();
    let bad = run(&dir.path().join("d.jsonl"), &["--gold", gold.to_str().unwrap()]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("line 2") && stderr.contains("`reference`"), "{stderr}");

    // A held-out file that documents nothing gives no questions, and the summary says why.
    let undocumented = graft()
        .args(["eval", "build", "tests/fixtures/polyglot", "--project", "polyglot", "-o"])
        .arg(dir.path().join("f.jsonl"))
        .args(["--holdout", "storage/blobstore_test.go"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&undocumented.stdout);
    assert!(undocumented.status.success(), "{}", String::from_utf8_lossy(&undocumented.stderr));
    assert!(
        stdout.contains(" 0 question;") && stdout.contains("no questions: no held-out file documents"),
        "{stdout}"
    );

    let missing = run(&dir.path().join("e.jsonl"), &["--holdout", "no/such/file.rs"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such/file.rs"));
}

#[test]
fn eval_run_scores_base_and_rag_and_never_retrieves_a_held_out_file() {
    let dir = tempfile::tempdir().unwrap();
    let golden = polyglot_golden(dir.path(), &[]);
    let report_dir = dir.path().join("report");
    let out = graft()
        .args([
            "eval",
            "run",
            "--max-tasks",
            "3",
            "--max-questions",
            "0",
            "--arms",
            "base,rag,oracle,random",
            "--likelihood",
            "--json",
            "--report",
        ])
        .arg(&report_dir)
        .arg(&golden)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report,
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(report_dir.join("report.json")).unwrap()).unwrap()
    );
    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    for id in report["outcomes"].as_array().unwrap().iter().map(|o| o["task"].as_str().unwrap()) {
        assert!(html.contains(id), "the page shows task {id}");
    }
    assert_eq!(report["answers"].as_array().unwrap().len(), 0, "--max-questions 0");
    let arms: Vec<&str> = report["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["arm"].as_str().unwrap())
        .collect();
    assert_eq!(arms, ["base", "rag", "oracle", "random"]);
    assert_eq!(report["arms"][0]["all"]["tasks"], 3);
    assert_eq!(report["arms"][0]["errors"], 0, "{report}");
    assert_eq!(report["held_out_retrieved"], 0);
    let outcomes = report["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 12, "3 tasks in 4 arms");
    for arm in ["base", "oracle", "random"] {
        let retrieved = outcomes
            .iter()
            .filter(|o| o["arm"] == arm)
            .any(|o| !o["sources"].as_array().unwrap().is_empty());
        assert!(!retrieved, "{arm} retrieves nothing");
    }
    assert_eq!(report["comparisons"].as_array().unwrap().len(), 3, "each arm against base");
    assert!(
        outcomes
            .iter()
            .filter(|o| o["arm"] == "rag")
            .any(|o| !o["sources"].as_array().unwrap().is_empty()),
        "rag retrieves"
    );
    for o in outcomes {
        let es = o["edit_similarity"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&es), "{o}");
    }
    let em = &report["comparisons"][0]["metrics"]["exact_match"];
    assert!(em["low"].as_f64().unwrap() <= em["high"].as_f64().unwrap(), "{em}");

    // --likelihood: every task's reference scored in every arm, a log-probability per token;
    // the arms' prompts differ, and so do the scores; summarised and compared as a measure.
    let likelihood = |o: &serde_json::Value| o["reference_logprob"].as_f64().unwrap_or_else(|| panic!("{o}"));
    for o in outcomes {
        assert!(likelihood(o) < 0.0 && likelihood(o).is_finite(), "{o}");
    }
    let of = |arm: &str| -> Vec<f64> { outcomes.iter().filter(|o| o["arm"] == arm).map(likelihood).collect() };
    assert_ne!(
        of("base"),
        of("random"),
        "random code before the cursor changes how likely the reference is"
    );
    let base = &report["arms"][0]["intervals"]["reference_logprob"];
    let mean = of("base").iter().sum::<f64>() / 3.0;
    assert!((base["difference"].as_f64().unwrap() - mean).abs() < 1e-9, "{base}");
    assert!(report["comparisons"][2]["metrics"]["reference_logprob"]["difference"].is_f64());
    assert!(html.contains("reference log-prob/token"));

    // What to serve: never a control; rag when some measure of the answers calls it better
    // than the base and no measure worse, else the base (the cheaper of two level arms).
    let rag = report["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["arm"] == "rag" && c["against"] == "base")
        .unwrap();
    let verdicts: Vec<(&str, &str)> = rag["metrics"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(measure, i)| (measure.as_str(), i["verdict"].as_str().unwrap()))
        .collect();
    let answers_better = verdicts.iter().any(|&(m, v)| m != "reference_logprob" && v == "better");
    let expected = if answers_better && !verdicts.iter().any(|&(_, v)| v == "worse") {
        "rag"
    } else {
        "base"
    };
    assert_eq!(report["serve"]["arm"], expected, "{}", report["serve"]);
    assert_eq!(report["serve"]["retrieval"], expected == "rag");
    assert_eq!(report["serve"]["adapter"], false);
    assert_eq!(report["serve"]["reasons"].as_array().unwrap().len(), 1, "{}", report["serve"]);
    assert!(html.contains(&format!("To serve: {expected}")));

    // The same run three tasks at a time: the same answers and scores, in the same order.
    let at_once = graft()
        .args([
            "eval",
            "run",
            "--max-tasks",
            "3",
            "--max-questions",
            "0",
            "--arms",
            "base,rag,oracle,random",
        ])
        .args(["--likelihood", "--json", "--concurrency", "3"])
        .arg(&golden)
        .output()
        .unwrap();
    assert!(at_once.status.success(), "{}", String::from_utf8_lossy(&at_once.stderr));
    let again: serde_json::Value = serde_json::from_slice(&at_once.stdout).unwrap();
    let scored = |o: &serde_json::Value| {
        (
            o["task"].clone(),
            o["arm"].clone(),
            o["answer"].clone(),
            o["edit_similarity"].clone(),
            o["reference_logprob"].clone(),
            o["sources"].clone(),
        )
    };
    let again_outcomes = again["outcomes"].as_array().unwrap();
    assert_eq!(again_outcomes.len(), outcomes.len());
    for (one, other) in outcomes.iter().zip(again_outcomes) {
        assert_eq!(scored(one), scored(other));
    }
    assert!(again["about"]["concurrency"].as_str().unwrap().starts_with("3 tasks at a time"));

    // `graft eval compare`: the two runs arm by arm, paired over their tasks: the same answers,
    // so no difference; what changed between the runs is said; another golden set is refused.
    let again_file = dir.path().join("again.json");
    std::fs::write(&again_file, &at_once.stdout).unwrap();
    let compare =
        |new: &Path, old: &Path, extra: &[&str]| graft().args(["eval", "compare"]).args(extra).arg(new).arg(old).output().unwrap();
    let compared = compare(&again_file, &report_dir, &["--json"]);
    assert!(compared.status.success(), "{}", String::from_utf8_lossy(&compared.stderr));
    let c: serde_json::Value = serde_json::from_slice(&compared.stdout).unwrap();
    let arms: Vec<&str> = c["arms"].as_array().unwrap().iter().map(|a| a["arm"].as_str().unwrap()).collect();
    assert_eq!(arms, ["base", "rag", "oracle", "random"]);
    for arm in c["arms"].as_array().unwrap() {
        assert_eq!(arm["tasks"], 3, "{arm}");
        let metrics = arm["metrics"].as_object().unwrap();
        assert!(metrics.contains_key("reference_logprob"), "{arm}");
        for (measure, i) in metrics {
            assert_eq!(i["difference"].as_f64(), Some(0.0), "{measure}: {i}");
            assert_eq!(i["verdict"], "no clear difference", "{measure}: {i}");
        }
    }
    assert_eq!(
        c["differs"],
        serde_json::json!([{"name": "concurrency", "new": again["about"]["concurrency"], "old": report["about"]["concurrency"]}])
    );
    assert_eq!(c["notes"], serde_json::json!([]), "both runs name their golden set's digest");
    let table = compare(&again_file, &report_dir.join("report.json"), &["--arms", "rag"]);
    let stdout = String::from_utf8_lossy(&table.stdout);
    assert!(
        stdout.contains("rag: new − old over 3 tasks") && !stdout.contains("base:"),
        "{stdout}"
    );
    let mut other = report.clone();
    other["about"]["golden set digest"] = "0123456789abcdef".into();
    let other_file = dir.path().join("other.json");
    std::fs::write(&other_file, other.to_string()).unwrap();
    let refused = compare(&again_file, &other_file, &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("different golden sets"), "{stderr}");
    let refused = graft().args(["eval", "run", "--concurrency", "0"]).arg(&golden).output().unwrap();
    assert!(!refused.status.success());
}

/// A golden set of the polyglot fixture (40% of its files held out) built with `extra`
/// arguments; its path.
fn polyglot_golden(dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    let golden = dir.join("poly.jsonl");
    let built = graft()
        .args([
            "eval",
            "build",
            "tests/fixtures/polyglot",
            "--project",
            "polyglot",
            "--holdout-fraction",
            "0.4",
        ])
        .args(extra)
        .arg("-o")
        .arg(&golden)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    golden
}

/// What `graft_eval::judge::combine` must give for two verdicts, worked out here by hand:
/// arm first, `A` is the arm; arm second, `B` is.
fn expected_outcome(arm_first: &serde_json::Value, arm_second: &serde_json::Value) -> (&'static str, bool) {
    let first = match arm_first.as_str() {
        Some("a") => Some("win"),
        Some("b") => Some("loss"),
        Some("tie") => Some("tie"),
        _ => None,
    };
    let second = match arm_second.as_str() {
        Some("a") => Some("loss"),
        Some("b") => Some("win"),
        Some("tie") => Some("tie"),
        _ => None,
    };
    match (first, second) {
        (Some(x), Some(y)) if x == y => (x, false),
        (Some(_), Some(_)) => ("tie", true),
        _ => ("tie", false),
    }
}

#[test]
fn eval_run_judges_questions_in_both_orders_on_an_adapter_with_a_judge_served_by_graft() {
    let fetch = graft().args(["models", "fetch", "smollm2-135m-instruct"]).output().unwrap();
    assert!(fetch.status.success(), "{}", String::from_utf8_lossy(&fetch.stderr));
    let shipped = graft_core::Config::load(&repo_root().join("config/graft.toml")).unwrap();
    let kit = std::fs::canonicalize(&shipped.kit.dir).unwrap();
    let work = tempfile::tempdir().unwrap();
    let gold = work.path().join("gold.jsonl");
    std::fs::write(
        &gold,
        "{\"question\": \"Which function adds two numbers?\", \"reference\": \"`add` in math.py returns a + b.\"}\n",
    )
    .unwrap();
    let gold = gold.to_string_lossy().into_owned();
    let golden = polyglot_golden(work.path(), &["--tasks", "4", "--questions", "1", "--gold", &gold]);
    write_synthetic_adapter(&kit, &work.path().join("adapters/tuned"));
    let config = work.path().join("graft.toml");
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n[adapters]\ndir = \"adapters\"\ncache_dir = \"cache\"\n",
            kit.display().to_string()
        ),
    )
    .unwrap();
    // The judge: another graft, serving the kit's model.
    let serving = start_serving(
        graft().args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&config),
        Duration::from_secs(120),
    );
    let rubric = work.path().join("rubric.md");
    std::fs::write(
        &rubric,
        "Question: {question}\nCorrect answer: {reference}\nAnswer A: {answer_a}\nAnswer B: {answer_b}\nWhich answer is closer to the correct answer? Reply \"Verdict: A\" or \"Verdict: B\".\n",
    )
    .unwrap();
    let report_dir = work.path().join("report");
    let out = graft()
        .args([
            "eval",
            "run",
            "--adapter",
            "tuned",
            "--arms",
            "base,adapter+rag",
            "--max-tasks",
            "1",
        ])
        .args([
            "--answer-tokens",
            "24",
            "--json",
            "--judge-model",
            "smollm2-135m-instruct",
            "--judge",
        ])
        .arg(format!("http://{}/v1", serving.addr))
        .arg("--rubric")
        .arg(&rubric)
        .arg("--report")
        .arg(&report_dir)
        .arg("--config")
        .arg(&config)
        .arg(&golden)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let outcomes = report["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2, "one task in two arms");
    assert!(outcomes.iter().all(|o| o["error"].is_null()), "{outcomes:?}");
    let answers = report["answers"].as_array().unwrap();
    let questions = answers.len() / 2;
    assert!(
        answers.iter().any(|a| a["task"] == "gold-1"),
        "the team's own question is asked: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|a| a["error"].is_null() && !a["answer"].as_str().unwrap().is_empty()),
        "{answers:?}"
    );
    // Every question judged once per pair, in both orders, each reply kept.
    let judgements = report["judgements"].as_array().unwrap();
    assert_eq!(judgements.len(), questions, "{judgements:?}");
    let (mut flips, mut read) = (0, 0);
    for j in judgements {
        assert_eq!((j["arm"].as_str(), j["against"].as_str()), (Some("adapter+rag"), Some("base")));
        let replies = j["replies"].as_array().unwrap();
        assert_eq!(replies.len(), 2, "both orders asked");
        assert!(replies.iter().all(|r| !r.as_str().unwrap().trim().is_empty()), "{j}");
        let (outcome, flipped) = expected_outcome(&j["arm_first"], &j["arm_second"]);
        assert_eq!(j["outcome"], outcome, "a win or loss only when both orders agree: {j}");
        assert_eq!(j["flipped"], flipped, "{j}");
        if !j["arm_first"].is_null() && !j["arm_second"].is_null() {
            read += 1;
            flips += usize::from(flipped);
        }
    }
    let summary = &report["judged"][0];
    assert_eq!(summary["pairs"], questions);
    let count = |k: &str| summary[k].as_u64().unwrap() as usize;
    assert_eq!(count("wins") + count("losses") + count("ties"), questions);
    let flip_rate = if read == 0 { 0.0 } else { flips as f64 / read as f64 };
    assert!((summary["flip_rate"].as_f64().unwrap() - flip_rate).abs() < 1e-9, "{summary}");
    assert!(report["about"]["rubric"].as_str().unwrap().ends_with("rubric.md"));
    assert_eq!(report["about"]["adapter"], "tuned");
    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    assert!(html.contains("Judged questions") && html.contains("adapter+rag vs base"));

    // The same golden set against that graft as an outside server, through OpenAI's
    // completions, llama.cpp's /infill and Tabby's completions, with a control.
    for (api, arms) in [("completions", "base"), ("infill", "base,oracle"), ("tabby", "base,oracle")] {
        let out = graft()
            .args([
                "eval",
                "run",
                "--max-tasks",
                "2",
                "--max-questions",
                "0",
                "--json",
                "--api",
                api,
                "--arms",
                arms,
            ])
            .args(["--model", "smollm2-135m-instruct", "--endpoint"])
            .arg(format!("http://{}", serving.addr))
            .arg("--config")
            .arg(&config)
            .arg(&golden)
            .output()
            .unwrap();
        assert!(out.status.success(), "{api}: {}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let outcomes = report["outcomes"].as_array().unwrap();
        assert_eq!(outcomes.len(), 2 * arms.split(',').count(), "{api}");
        assert!(outcomes.iter().all(|o| o["error"].is_null()), "{api}: {outcomes:?}");
        assert!(report["about"]["served by"].as_str().unwrap().contains(api));
    }
    let refused = graft()
        .args([
            "eval",
            "run",
            "--api",
            "completions",
            "--arms",
            "base,rag",
            "--model",
            "m",
            "--endpoint",
            "http://127.0.0.1:9",
        ])
        .arg(&golden)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("`rag` arm"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// The other server a bench compares graft with: another graft (the kit's SmolLM2, fetched
/// first), as a llama.cpp server would be.
fn another_server() -> Serving {
    let fetch = graft().args(["models", "fetch", "smollm2-135m-instruct"]).output().unwrap();
    assert!(fetch.status.success(), "{}", String::from_utf8_lossy(&fetch.stderr));
    start_serving(graft().args(["serve", "--listen", "127.0.0.1:0"]), Duration::from_secs(120))
}

#[test]
fn bench_api_times_graft_beside_another_server_on_the_same_texts() {
    let serving = another_server();
    let out = graft()
        .args(["bench", "api", "--json", "--model", "smollm2-135m-instruct", "--endpoint"])
        .arg(format!("other=http://{}/v1", serving.addr))
        .args(["--lengths", "96,160", "--typing", "3", "--typing-tokens", "120"])
        .args(["--decode-tokens", "6", "--repeat", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let servers = figures["servers"].as_array().unwrap();
    let names: Vec<&str> = servers.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["graft", "other"]);
    assert!(figures["graft_model_file"].as_str().unwrap().ends_with(".gguf"), "{figures}");
    for server in servers {
        // Cut at line ends to about the asked length (a line of code is a few tokens).
        for (row, target) in server["first_token"].as_array().unwrap().iter().zip([96, 160]) {
            let tokens = row["prompt_tokens"].as_i64().unwrap();
            assert!((tokens - target).abs() <= 40, "asked {target}, read {tokens}: {server}");
            assert_eq!(row["seconds"].as_array().unwrap().len(), 2);
            assert!(row["median_s"].as_f64().unwrap() > 0.0);
        }
        // Each request of the typing session has more of the file than the one before.
        let typed: Vec<i64> = server["typing"]["prompt_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap())
            .collect();
        assert_eq!(typed.len(), 3);
        assert!(typed.windows(2).all(|w| w[1] > w[0]), "{typed:?}");
        assert_eq!(server["typing"]["next_s"].as_array().unwrap().len(), 2);
        // Decoding was streamed and timed.
        assert!(server["decode"]["tokens"].as_u64().unwrap() >= 2, "{server}");
        assert!(server["decode"]["median_tokens_per_s"].as_f64().unwrap() > 0.0, "{server}");
    }
    // Both read the same texts, so the same model counts the same tokens (each cold prompt's
    // first line names its server: a digit apart).
    for row in 0..2 {
        let count = |s: &serde_json::Value| s["first_token"][row]["prompt_tokens"].as_i64().unwrap();
        assert!((count(&servers[0]) - count(&servers[1])).abs() <= 1, "{servers:?}");
    }

    // Nothing to time, and a server that is not there: refused with the reason.
    let nothing = graft().args(["bench", "api", "--no-local"]).output().unwrap();
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("--endpoint"));
    let absent = graft()
        .args(["bench", "api", "--no-local", "--endpoint", "gone=http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!absent.status.success());
    assert!(String::from_utf8_lossy(&absent.stderr).contains("gone at http://127.0.0.1:9"));
}

#[test]
fn bench_load_loads_graft_then_another_server_with_the_same_clients() {
    let serving = another_server();
    let out = graft()
        .args([
            "bench",
            "load",
            "--no-retrieval",
            "--json",
            "--clients",
            "2",
            "--seconds",
            "2",
            "--max-tokens",
            "4",
        ])
        .args(["--model", "smollm2-135m-instruct", "--endpoint"])
        .arg(format!("other=http://{}/v1", serving.addr))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = figures["phases"].as_array().unwrap();
    let runs: Vec<(&str, serde_json::Value)> = phases
        .iter()
        .map(|p| (p["server"].as_str().unwrap(), p["retrieval"].clone()))
        .collect();
    assert_eq!(runs, [("graft", serde_json::json!(false)), ("other", serde_json::Value::Null)]);
    for phase in phases {
        assert!(phase["requests"].as_u64().unwrap() > 0, "{phase}");
        assert_eq!(phase["errors"], 0, "{phase}");
        assert!(phase["tokens_per_s"].as_f64().unwrap() > 0.0, "{phase}");
        assert!(phase["ttft_p50_ms"].as_f64().unwrap() > 0.0, "{phase}");
        assert!(
            phase["itl_p99_ms"].as_f64().unwrap() >= phase["itl_p50_ms"].as_f64().unwrap(),
            "{phase}"
        );
        assert!(phase["itl_p50_ms"].as_f64().unwrap() > 0.0, "{phase}");
    }

    // A server that is not there: refused with its name.
    let absent = graft()
        .args([
            "bench",
            "load",
            "--no-retrieval",
            "--seconds",
            "1",
            "--endpoint",
            "gone=http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert!(!absent.status.success());
    assert!(String::from_utf8_lossy(&absent.stderr).contains("gone: the warm-up request failed"));
}

/// `eval build`, `eval run`, `dataset` and `train` without a path or `--project`: the config's
/// first project and its repository, or, with none configured, what to give.
#[test]
fn commands_about_one_project_take_the_configs_first_when_none_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("polyglot");
    common::copy_tree(&repo_root().join("tests/fixtures/polyglot"), &repo);
    let kit = format!("[kit]\ndir = {:?}\n", common::kit_dir().display().to_string());
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, &kit).unwrap();
    let config = dir.path().join("graft.toml");
    std::fs::write(
        &config,
        format!("{kit}[[projects]]\nname = \"poly\"\npath = {:?}\n", repo.display().to_string()),
    )
    .unwrap();
    let run = |config: &Path, args: &[&str]| {
        let out = graft()
            .current_dir(dir.path())
            .args(args)
            .arg("--config")
            .arg(config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // No project in the config and none named: each says what to give.
    for (args, hint) in [
        (&["dataset", "--dry-run"][..], "graft dataset PATH"),
        (&["eval", "build"][..], "graft eval build PATH"),
        (&["train"][..], "graft train --project NAME"),
        (&["eval", "run"][..], "graft eval run FILE"),
    ] {
        let (ok, _, stderr) = run(&bare, args);
        assert!(!ok && stderr.contains(hint), "{args:?}: {stderr}");
    }

    // The golden set of the config's project, where `graft eval build` writes it by default.
    let (ok, _, stderr) = run(&config, &["eval", "build", "--holdout-fraction", "0.3"]);
    assert!(ok, "{stderr}");
    let split: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("eval/poly.golden.split.json")).unwrap()).unwrap();
    let held_out = split["held_out"].as_array().unwrap().len();
    assert!(held_out > 0, "{split}");
    // Running it without a file reads that golden set (asked for none of its tasks, the run
    // stops there, naming it).
    let (ok, _, stderr) = run(&config, &["eval", "run", "--max-tasks", "0", "--max-questions", "0"]);
    assert!(!ok && stderr.contains("eval/poly.golden.jsonl has no tasks to run"), "{stderr}");
    // Named, a project's own golden set, whether or not the config lists the project.
    let (ok, _, stderr) = run(
        &bare,
        &["eval", "run", "--project", "poly", "--max-tasks", "0", "--max-questions", "0"],
    );
    assert!(!ok && stderr.contains("eval/poly.golden.jsonl has no tasks to run"), "{stderr}");
    // Once `graft train` has written the project's adapter into the store, a run of the
    // project's golden set takes it (and the four arms), unless told the arms without it.
    let adapter = dir.path().join("adapters/poly-lora");
    std::fs::create_dir_all(&adapter).unwrap();
    std::fs::write(adapter.join("adapter_config.json"), "{}").unwrap();
    let (ok, _, stderr) = run(&config, &["eval", "run", "--max-tasks", "0", "--max-questions", "0"]);
    assert!(
        !ok && stderr.contains("adapter: poly-lora, the one `graft train` wrote"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(
        &config,
        &["eval", "run", "--arms", "base,rag", "--max-tasks", "0", "--max-questions", "0"],
    );
    assert!(
        !ok && stderr.contains("has no tasks to run") && !stderr.contains("adapter:"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&adapter).unwrap();
    let (ok, _, stderr) = run(&config, &["eval", "run", "--project", "other"]);
    assert!(
        !ok && stderr.contains("no golden set at eval/other.golden.jsonl") && stderr.contains("eval build --project other"),
        "{stderr}"
    );
    // Training looks for that project's dataset, not yet made.
    let (ok, _, stderr) = run(&config, &["train"]);
    assert!(
        !ok && stderr.contains("datasets/poly") && stderr.contains("--project poly"),
        "{stderr}"
    );
    // The dataset: the same project and repository, obeying the golden set's split; given the
    // repository's path alone, it is still the configured project at that path.
    for args in [
        &["dataset", "--dry-run", "--json"][..],
        &["dataset", "--dry-run", "--json", repo.to_str().unwrap()][..],
    ] {
        let (ok, stdout, stderr) = run(&config, args);
        assert!(ok, "{args:?}: {stderr}");
        let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(summary["project"], "poly", "{summary}");
        assert_eq!(summary["files"]["held_out"].as_u64().unwrap() as usize, held_out, "{summary}");
    }
}

/// `graft dataset` as a user runs it: on a repository with a git history, obeying the split
/// `graft eval build` wrote, in the served model's tokens (the kit's SmolLM2); its JSONL read
/// back with Python's `json.loads` line by line, each record with the documented fields, and no
/// held-out file in any sample.
#[test]
fn dataset_writes_jsonl_that_python_reads_and_leaves_held_out_files_out() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("polyglot");
    common::copy_tree(&repo_root().join("tests/fixtures/polyglot"), &repo);
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "Import the polyglot example project"]);
    let golden = dir.path().join("eval/polyglot.golden.jsonl");
    let out = graft()
        .args(["eval", "build", "--project", "polyglot", "--holdout-fraction", "0.3", "-o"])
        .arg(&golden)
        .arg(&repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let split_file = dir.path().join("eval/polyglot.golden.split.json");
    let split: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&split_file).unwrap()).unwrap();
    let held_out: Vec<String> = split["held_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert!(!held_out.is_empty());
    // A change to a kept file, with a real message: a history pair.
    let kept = walk_files(&repo)
        .into_iter()
        .find(|p| p.ends_with(".py") && !held_out.contains(p))
        .unwrap();
    let text = std::fs::read_to_string(repo.join(&kept)).unwrap();
    std::fs::write(
        repo.join(&kept),
        format!("{text}\n\ndef describe_the_change(value):\n    return value * 2\n"),
    )
    .unwrap();
    git(&["commit", "-q", "-am", "Add a helper that doubles a value for the report"]);

    let data = dir.path().join("data");
    let run = |extra: &[&str]| {
        graft()
            .args(["dataset", "--project", "polyglot", "--json", "--split"])
            .arg(&split_file)
            .arg("-o")
            .arg(&data)
            .args(extra)
            .arg(&repo)
            .output()
            .unwrap()
    };
    let dry = run(&["--dry-run"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(!data.exists(), "--dry-run writes nothing");
    let out = run(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["format"], "continuation", "{summary}");
    assert_eq!(summary["files"]["held_out"].as_u64().unwrap() as usize, held_out.len(), "{summary}");
    assert_eq!(summary["history"]["pairs"], 1, "{summary}");
    assert!(summary["samples"]["train"]["file"]["samples"].as_u64().unwrap() > 0, "{summary}");

    let check = r#"
import json, sys
fields = {"text.jsonl": ["text"], "prompt-completion.jsonl": ["prompt", "completion"], "chat.jsonl": ["messages"]}
held_out = set(json.load(open(sys.argv[2]))["held_out"])
records = 0
for part in ["train", "validation"]:
    for name, need in fields.items():
        for line in open(f"{sys.argv[1]}/{part}/{name}", encoding="utf-8"):
            record = json.loads(line)
            for field in need + ["kind", "sources", "tokens"]:
                assert field in record, (name, field)
            assert not held_out & set(record["sources"]), record["sources"]
            if name == "chat.jsonl":
                assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
            records += 1
print(records)
"#;
    let python = Command::new("python3")
        .arg("-c")
        .arg(check)
        .arg(&data)
        .arg(&split_file)
        .output()
        .unwrap();
    assert!(python.status.success(), "{}", String::from_utf8_lossy(&python.stderr));
    let records: usize = String::from_utf8_lossy(&python.stdout).trim().parse().unwrap();
    assert!(records > 2, "{records}");
    // No held-out file's text in any sample either.
    let mut all = String::new();
    for part in ["train", "validation"] {
        for name in ["text.jsonl", "prompt-completion.jsonl", "chat.jsonl"] {
            all.push_str(&std::fs::read_to_string(data.join(part).join(name)).unwrap());
        }
    }
    for path in &held_out {
        let text = std::fs::read_to_string(repo.join(path)).unwrap();
        let longest = text.lines().max_by_key(|l| l.trim().len()).unwrap().trim();
        let encoded = serde_json::to_string(longest).unwrap();
        assert!(!all.contains(encoded.trim_matches('"')), "{path}: {longest}");
    }
    // Every packed sample within the limit, counted again with the model's own tokenizer.
    let config = graft_core::Config::load(&repo_root().join("config/graft.toml")).unwrap();
    let tokenizer = graft_engine::Tokenizer::from_gguf(&graft_wiring::model_file(&config).unwrap()).unwrap();
    for part in ["train", "validation"] {
        for line in std::fs::read_to_string(data.join(part).join("text.jsonl")).unwrap().lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let tokens = tokenizer.count(record["text"].as_str().unwrap()).unwrap();
            assert_eq!(record["tokens"].as_u64(), Some(tokens as u64));
            assert!(tokens <= config.dataset.max_sample_tokens, "{tokens}");
        }
    }
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["path"] == kept.as_str() && f["decision"] != "dropped"));
}

/// `graft dataset` with retrieval-augmented samples, as a user makes them: without the
/// project's index a clear error when asked for (`--retrieval-rate`), a note when the config's
/// rate asks; with it, completion prompts laid out as the server lays them out (the retrieved
/// code, then the file up to the cursor; what follows is the completion), their code only from
/// training files, and only in prompt-completion.jsonl.
#[test]
fn dataset_lays_retrieved_code_before_the_file_as_a_completion_with_retrieval() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("polyglot");
    common::copy_tree(&repo_root().join("tests/fixtures/polyglot"), &repo);
    // `listen`: none for the CLI runs; a free port for the server, then the one it got.
    let config_with = |listen: &str| {
        format!(
            "[kit]\ndir = {:?}\n[index]\ndir = {:?}\n[dataset]\nmax_sample_tokens = 512\n\
             [server]\nlisten = \"{listen}\"\n[[projects]]\nname = \"polyglot\"\npath = {:?}\n",
            common::kit_dir().display().to_string(),
            dir.path().join("index").display().to_string(),
            repo.display().to_string(),
        )
    };
    let config = dir.path().join("graft.toml");
    std::fs::write(&config, config_with("127.0.0.1:0")).unwrap();
    let data = dir.path().join("data");
    let dataset_to = |data: &Path, config: &Path, extra: &[&str]| {
        graft()
            .args(["dataset", "--project", "polyglot", "--holdout-fraction", "0.3", "-o"])
            .arg(data)
            .arg("--config")
            .arg(config)
            .args(extra)
            .arg(&repo)
            .output()
            .unwrap()
    };
    let dataset = |extra: &[&str]| dataset_to(&data, &config, extra);
    // No index yet: asked for, an error that says how to build one; by the config, a note.
    let refused = dataset(&["--retrieval-rate", "1"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("no index for project `polyglot`") && stderr.contains("graft index"),
        "{stderr}"
    );
    assert!(!data.exists());
    let noted = dataset(&["--dry-run"]);
    let stderr = String::from_utf8_lossy(&noted.stderr);
    assert!(noted.status.success(), "{stderr}");
    assert!(stderr.contains("no retrieval-augmented samples"), "{stderr}");
    assert!(String::from_utf8_lossy(&noted.stdout).contains("retrieval:  none: "));
    let nobody = dataset(&["--retrieval-rate", "1", "--server", "http://127.0.0.1:9"]);
    let stderr = String::from_utf8_lossy(&nobody.stderr);
    assert!(
        !nobody.status.success() && stderr.contains("no graft answers at http://127.0.0.1:9"),
        "{stderr}"
    );

    let index = graft()
        .args(["index", "--project", "polyglot", "--json", "--config"])
        .arg(&config)
        .arg(&repo)
        .output()
        .unwrap();
    assert!(index.status.success(), "{}", String::from_utf8_lossy(&index.stderr));
    let out = dataset(&["--retrieval-rate", "1", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let retrieval = &summary["retrieval"];
    assert!(retrieval["samples"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["retrieved_through"].is_null(), "no graft serves it: opened here");
    assert_eq!(
        retrieval["samples"].as_u64(),
        ["train", "validation"]
            .iter()
            .map(|part| summary["samples"][part]["retrieved"]["samples"].as_u64().unwrap_or(0))
            .sum::<u64>()
            .into(),
        "{summary}"
    );

    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.join("manifest.json")).unwrap()).unwrap();
    let decision = |path: &str| -> String {
        manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .map(|f| f["decision"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let mut seen = 0;
    for line in std::fs::read_to_string(data.join("train/prompt-completion.jsonl")).unwrap().lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        if record["kind"] != "retrieved" {
            continue;
        }
        seen += 1;
        let (prompt, completion) = (record["prompt"].as_str().unwrap(), record["completion"].as_str().unwrap());
        let sources: Vec<&str> = record["sources"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        let own = sources[0];
        assert_eq!(decision(own), "train");
        let file = std::fs::read_to_string(repo.join(own)).unwrap();
        // Each retrieved file is another training file, shown before the file itself, and
        // the code shown under it is that file's.
        assert!(sources.len() > 1, "{sources:?}");
        let own_header = prompt.rfind(own).unwrap();
        for source in &sources[1..] {
            assert_eq!(decision(source), "train", "{source}");
            let at = prompt.find(source).unwrap();
            assert!(at < own_header, "{source} after {own}");
            let shown = prompt[at..].lines().nth(1).unwrap();
            let text = std::fs::read_to_string(repo.join(source)).unwrap();
            assert!(text.contains(shown), "{source}: {shown:?}");
        }
        // After the line naming the file: the file up to the cursor; the completion goes on.
        let prefix = &prompt[own_header + prompt[own_header..].find('\n').unwrap() + 1..];
        assert!(!completion.is_empty());
        assert!(
            file.contains(&format!("{prefix}{completion}")),
            "{own}: {prefix:?} + {completion:?}"
        );
        assert!(record["tokens"].as_u64().unwrap() <= 512);
    }
    assert!(seen > 0);
    for name in ["text.jsonl", "chat.jsonl"] {
        let text = std::fs::read_to_string(data.join("train").join(name)).unwrap();
        assert!(!text.contains("\"kind\":\"retrieved\""), "{name}");
    }

    // While `graft up` serves the project, its index is open there (or will be at its next
    // search): the dataset searches it through that server (found at the configured address)
    // and gets the same samples.
    let serving = common::graft_up(&config);
    let said = Said::new(serving.lines);
    assert!(said
        .wait_for("project `polyglot` indexed", Duration::from_secs(300), "failed")
        .is_some());
    let client = dir.path().join("client.toml");
    std::fs::write(&client, config_with(&serving.addr)).unwrap();
    let through = dir.path().join("through");
    let out = dataset_to(&through, &client, &["--retrieval-rate", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("searched through the graft serving it at http://{}", serving.addr)),
        "{stderr}"
    );
    for part in ["train", "validation"] {
        let read = |dir: &Path| std::fs::read_to_string(dir.join(part).join("prompt-completion.jsonl")).unwrap();
        let (here, there) = (read(&data), read(&through));
        let differ = here.lines().zip(there.lines()).find(|(a, b)| a != b);
        assert!(here == there, "{part}: the first record that differs: {differ:#?}");
    }
    // Named with --server, whatever the config says.
    let url = format!("http://{}", serving.addr);
    let named = dataset(&["--retrieval-rate", "1", "--dry-run", "--json", "--server", &url]);
    assert!(named.status.success(), "{}", String::from_utf8_lossy(&named.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&named.stdout).unwrap();
    assert_eq!(summary["retrieved_through"], url.as_str());
    assert!(summary["retrieval"]["samples"].as_u64().unwrap() > 0, "{summary}");
    drop(serving.process);
}

/// `graft dataset` for a project that also searches another project's index: its samples show
/// that project's code under `<project>/<path>`, as the index holds it, beside the project's
/// own training files; `graft eval run` indexes that project beside its own.
#[test]
fn dataset_and_eval_search_the_projects_a_project_also_searches() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, lib) = (dir.path().join("app"), dir.path().join("lib"));
    common::copy_tree(&repo_root().join("tests/fixtures/polyglot"), &repo);
    // The library: code like the app's own (its billing and storage code), each line marked
    // as the library's, so that code shown from the app's files under the library's paths
    // (the same ones) would show.
    for folder in ["billing", "storage"] {
        common::copy_tree(&repo.join(folder), &lib.join(folder));
        for entry in std::fs::read_dir(lib.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            let comment = if path.extension().is_some_and(|e| e == "py") { "#" } else { "//" };
            let text = std::fs::read_to_string(&path).unwrap();
            let marked: String = text.lines().map(|l| format!("{l}  {comment} lib\n")).collect();
            std::fs::write(&path, marked).unwrap();
        }
    }
    let config = dir.path().join("graft.toml");
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n[index]\ndir = {:?}\n[dataset]\nmax_sample_tokens = 512\n[server]\nlisten = \"127.0.0.1:0\"\n\
             [[projects]]\nname = \"app\"\npath = {:?}\nalso_search = [\"lib\"]\n[[projects]]\nname = \"lib\"\npath = {:?}\n",
            common::kit_dir().display().to_string(),
            dir.path().join("index").display().to_string(),
            repo.display().to_string(),
            lib.display().to_string(),
        ),
    )
    .unwrap();
    for project in ["app", "lib"] {
        let index = graft()
            .args(["index", "--project", project, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(index.status.success(), "{}", String::from_utf8_lossy(&index.stderr));
    }
    let data = dir.path().join("data");
    let out = graft()
        .args([
            "dataset",
            "--project",
            "app",
            "--holdout-fraction",
            "0.3",
            "--retrieval-rate",
            "1",
            "-o",
        ])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut theirs = 0;
    for part in ["train", "validation"] {
        let Ok(text) = std::fs::read_to_string(data.join(part).join("prompt-completion.jsonl")) else {
            continue;
        };
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            if record["kind"] != "retrieved" {
                continue;
            }
            let prompt = record["prompt"].as_str().unwrap();
            for source in record["sources"].as_array().unwrap().iter().skip(1) {
                let source = source.as_str().unwrap();
                let Some(path) = source.strip_prefix("lib/") else {
                    assert!(repo.join(source).is_file(), "{source} is none of the app's files");
                    continue;
                };
                theirs += 1;
                // The library's code under its header, as the library's file holds it.
                let at = prompt.find(source).unwrap();
                let shown = prompt[at..].lines().nth(1).unwrap();
                let text = std::fs::read_to_string(lib.join(path)).unwrap();
                assert!(shown.ends_with(" lib") && text.contains(shown), "{source}: {shown:?}");
            }
        }
    }
    assert!(theirs > 0, "no sample shows the library's code");

    // `graft eval run`'s retrieval arm searches the library too, indexed beside the app.
    let golden = dir.path().join("app.jsonl");
    let built = graft()
        .args([
            "eval",
            "build",
            "--project",
            "app",
            "--holdout-fraction",
            "0.4",
            "--questions",
            "0",
            "-o",
        ])
        .arg(&golden)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let out = graft()
        .args(["eval", "run", "--max-tasks", "2", "--arms", "base,rag", "--json", "--config"])
        .arg(&config)
        .arg(&golden)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(dir.path().join("app.index/lib").is_dir(), "the library indexed beside the app");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["held_out_retrieved"], &report["arms"][1]["errors"]),
        (&0.into(), &0.into()),
        "{report}"
    );
}

/// The files of a repository, relative, with `/`.
fn walk_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

/// `graft train` as a user runs it, on the toy model (its tokenizer and weights): a dataset
/// from `graft dataset`, a few steps, and an adapter in the store that `graft adapters list`
/// accepts, with its report; an existing adapter is not overwritten without `--force`;
/// `--serve` loads it into a running graft, which answers on it; a run out of `--minutes`
/// keeps a checkpoint that `--resume` finishes (and refuses once the data changed); bad input
/// (no dataset, a malformed record, a rank above `adapters.max_rank`) is a clear error that
/// writes nothing.
#[test]
fn train_writes_an_adapter_the_store_accepts_and_refuses_bad_input() {
    let fetch = graft().args(["models", "fetch", "tiny-llama"]).output().unwrap();
    assert!(fetch.status.success(), "{}", String::from_utf8_lossy(&fetch.stderr));
    let shipped = graft_core::Config::load(&repo_root().join("config/graft.toml")).unwrap();
    let kit = std::fs::canonicalize(&shipped.kit.dir).unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("graft.toml");
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n[model]\ngguf = \"kit:tiny-llama\"\n[adapters]\ndir = \"adapters\"\ncache_dir = \"cache\"\nmax_rank = 32\n",
            kit.display().to_string()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| graft().args(args).arg("--config").arg(&config).output().unwrap();
    let data = work.path().join("data");
    let out = run(&[
        "dataset",
        "tests/fixtures/polyglot",
        "--project",
        "poly",
        "--holdout-fraction",
        "0.3",
        "-o",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let adapter = work.path().join("adapters/poly-lora");
    let checkpoint = work.path().join("adapters/.poly-lora.checkpoint");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--project",
            "poly",
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "3",
            "--eval-every",
            "2",
        ];
        args.extend(["--max-tokens", "64", "--json"]);
        if !extra.contains(&"--rank") {
            args.extend(["--rank", "4"]);
        }
        args.extend(extra);
        run(&args)
    };
    let out = train(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["training"]["steps"].as_array().unwrap().len(), 3, "{report}");
    assert!(report["training"]["base_val_loss"].as_f64().unwrap() > 0.0, "{report}");
    for file in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "train_report.json",
        "train_report.html",
    ] {
        assert!(adapter.join(file).is_file(), "{file}");
    }
    // The file as Python's side reads it (the safetensors header is JSON after its length):
    // PEFT's names, f32, A [r, in] and B [out, r] for every layer and projection.
    let check = r#"
import json, struct, sys
f = open(sys.argv[1], "rb")
header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
config = json.load(open(sys.argv[2]))
names = [k for k in header if k != "__metadata__"]
assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM" and config["r"] == 4
for name in names:
    assert name.startswith("base_model.model.model.layers."), name
    module = name.split(".")[5]
    assert module in ("self_attn", "mlp"), name
    assert name.split(".")[6] in config["target_modules"], name
    info = header[name]
    assert info["dtype"] == "F32", info
    if name.endswith("lora_A.weight"):
        assert info["shape"][0] == 4, info
    else:
        assert name.endswith("lora_B.weight") and info["shape"][1] == 4, (name, info)
print(len(names))
"#;
    let python = Command::new("python3")
        .arg("-c")
        .arg(check)
        .arg(adapter.join("adapter_model.safetensors"))
        .arg(adapter.join("adapter_config.json"))
        .output()
        .unwrap();
    assert!(python.status.success(), "{}", String::from_utf8_lossy(&python.stderr));
    let tensors: usize = String::from_utf8_lossy(&python.stdout).trim().parse().unwrap();
    assert_eq!(tensors, 2 * 7 * 2, "A and B of 7 projections in the toy's 2 layers");
    let list = run(&["adapters", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["name"], "poly-lora");
    assert_eq!(list[0]["valid"], true, "{list}");
    let trained = &list[0]["training"];
    assert_eq!(
        (trained["project"].as_str(), trained["steps"].as_u64()),
        (Some("poly"), Some(3)),
        "{list}"
    );
    assert_eq!(trained["base_val_loss"], report["training"]["base_val_loss"], "{list}");
    let listed = run(&["adapters", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("trained on `poly`, 3 steps, validation "), "{listed}");
    assert!(!checkpoint.exists(), "a finished run leaves no checkpoint");

    let again = train(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    // --serve: a running graft loads the new adapter and answers on it.
    let serving = start_serving(
        graft().args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&config),
        Duration::from_secs(120),
    );
    let url = format!("http://{}", serving.addr);
    let served = train(&["--force", "--seed", "2", "--serve", &url]);
    assert!(served.status.success(), "{}", String::from_utf8_lossy(&served.stderr));
    let report: serde_json::Value = serde_json::from_slice(&served.stdout).unwrap();
    assert!(report["served"].as_str().unwrap().contains("poly-lora"), "{report}");
    let answer = http_post(
        &serving.addr,
        "/v1/completions",
        r#"{"model":"poly-lora","prompt":"fn main","max_tokens":2}"#,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(serving);
    let unserved = train(&["--force", "--serve", &url]);
    assert!(String::from_utf8_lossy(&unserved.stderr).contains("no graft answering"));
    // An adapter a server would not load is refused before training, not after it: outside
    // adapters.dir and adapters.allowed_dirs, or in a folder whose name is no adapter name.
    let elsewhere = work.path().join("elsewhere/poly-lora");
    let outside = train(&["--out", elsewhere.to_str().unwrap(), "--serve", &url]);
    let stderr = String::from_utf8_lossy(&outside.stderr);
    assert!(!outside.status.success() && stderr.contains("lies outside them"), "{stderr}");
    assert!(!elsewhere.exists(), "nothing trained or written");
    let not_a_url = train(&["--out", elsewhere.to_str().unwrap(), "--serve", "localhost:8080"]);
    let stderr = String::from_utf8_lossy(&not_a_url.stderr);
    assert!(
        !not_a_url.status.success() && stderr.contains("not an http:// or https:// URL"),
        "{stderr}"
    );
    assert!(!elsewhere.exists(), "nothing trained or written");
    let spaced = work.path().join("adapters/poly lora");
    let bad_name = train(&["--out", spaced.to_str().unwrap(), "--serve", &url]);
    let stderr = String::from_utf8_lossy(&bad_name.stderr);
    assert!(!bad_name.status.success() && stderr.contains("not an adapter name"), "{stderr}");
    // Without --serve it trains there, and says how to serve it from there.
    let mut args = vec!["train", "--project", "poly", "--data", data.to_str().unwrap()];
    args.extend([
        "--steps",
        "1",
        "--max-tokens",
        "32",
        "--rank",
        "4",
        "--out",
        elsewhere.to_str().unwrap(),
    ]);
    let there = run(&args);
    let stdout = String::from_utf8_lossy(&there.stdout);
    assert!(there.status.success(), "{}", String::from_utf8_lossy(&there.stderr));
    assert!(stdout.contains("move it into adapters.dir"), "{stdout}");
    assert!(
        !stdout.contains("judge it:"),
        "eval run takes adapters of the store alone: {stdout}"
    );
    assert!(elsewhere.join("adapter_model.safetensors").is_file());

    // A run out of time keeps a checkpoint; --resume finishes it and removes it.
    let short = train(&["--force", "--minutes", "0.000001"]);
    assert!(short.status.success(), "{}", String::from_utf8_lossy(&short.stderr));
    let report: serde_json::Value = serde_json::from_slice(&short.stdout).unwrap();
    assert_eq!(report["training"]["stopped"], "time-budget", "{report}");
    assert!(checkpoint.join("run.json").is_file() && adapter.join("adapter_model.safetensors").is_file());
    let resumed = train(&["--resume"]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let report: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(report["training"]["steps"].as_array().unwrap().len(), 3, "{report}");
    assert!(!checkpoint.exists());
    let nothing = train(&["--resume"]);
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("no checkpoint"));
    assert!(train(&["--force", "--minutes", "0.000001"]).status.success());
    let text = std::fs::read_to_string(data.join("train/text.jsonl")).unwrap();
    std::fs::write(data.join("train/text.jsonl"), text + "{\"text\": \"fn added() -> u32 { 7 }\"}\n").unwrap();
    let changed = train(&["--resume"]);
    assert!(
        String::from_utf8_lossy(&changed.stderr).contains("changed since its checkpoint"),
        "{}",
        String::from_utf8_lossy(&changed.stderr)
    );

    // The benchmark runs on the same model and writes nothing.
    let bench = run(&["bench", "train", "--steps", "1", "--max-tokens", "32", "--rank", "4", "--json"]);
    assert!(bench.status.success(), "{}", String::from_utf8_lossy(&bench.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
    assert!(figures["training_tokens_per_second"].as_f64().unwrap() > 0.0, "{figures}");
    assert!(
        figures["peak_rss_mb"].as_f64().unwrap() >= figures["rss_loaded_mb"].as_f64().unwrap(),
        "{figures}"
    );
    assert_eq!(figures["timed_steps"], 1, "{figures}");
    let no_device = train(&["--force", "--device", "tpu"]);
    assert!(String::from_utf8_lossy(&no_device.stderr).contains("not a device"));

    let too_big = train(&["--rank", "64", "--force"]);
    assert!(
        String::from_utf8_lossy(&too_big.stderr).contains("adapters.max_rank (32)"),
        "{}",
        String::from_utf8_lossy(&too_big.stderr)
    );
    let negative = train(&["--lr=-1", "--force"]);
    let stderr = String::from_utf8_lossy(&negative.stderr);
    assert!(stderr.contains("--lr must be a positive number, got -1"), "{stderr}");
    // A learning rate that breaks the adapters: the run stops at the step whose loss is no
    // longer a number, writes nothing and keeps no checkpoint; the adapter there stays whole.
    let kept = std::fs::read(adapter.join("adapter_model.safetensors")).unwrap();
    let wild = train(&["--lr", "1e30", "--force"]);
    let stderr = String::from_utf8_lossy(&wild.stderr);
    assert!(
        !wild.status.success() && stderr.contains("training diverged at step 2") && stderr.contains("nothing written"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(adapter.join("adapter_model.safetensors")).unwrap(), kept);
    assert!(!checkpoint.exists());
    let nowhere = run(&["train", "--project", "poly", "--data", "/nonexistent/data", "--force"]);
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("not a dataset folder"));
    std::fs::write(data.join("train/text.jsonl"), "{\"text\": \"fn main() {}\"}\n{\"txt\": 3}\n").unwrap();
    let malformed = train(&["--force"]);
    let stderr = String::from_utf8_lossy(&malformed.stderr);
    assert!(
        !malformed.status.success() && stderr.contains("text.jsonl:2") && stderr.contains("no `text`"),
        "{stderr}"
    );
    std::fs::write(data.join("train/text.jsonl"), "").unwrap();
    std::fs::write(data.join("train/prompt-completion.jsonl"), "").unwrap();
    let empty = train(&["--force"]);
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no training examples"));
    // The adapter of the last good run is still whole.
    assert!(adapter.join("adapter_model.safetensors").is_file());
}

/// The GPU check's two scripts in their dry mode, on the CPU: scripts/gpu-carry packs this
/// build's binary and the served model into parts that each fit one device call beside the
/// working tree, and scripts/gpu-check joins them, verifies them, unpacks them and runs every
/// step's real benchmark from them; the figures come back as one JSON file.
#[test]
fn the_gpu_check_runs_dry_on_the_cpu() {
    let fetch = graft().args(["models", "fetch", "smollm2-135m-instruct"]).output().unwrap();
    assert!(fetch.status.success(), "{}", String::from_utf8_lossy(&fetch.stderr));
    let out = tempfile::tempdir().unwrap();
    let carry = tempfile::tempdir().unwrap();
    let script = |name: &str, arg: &str| {
        let run = Command::new("bash")
            .arg(repo_root().join("scripts").join(name))
            .arg(arg)
            .env("OUT", out.path())
            .env("GRAFT_GPU_CARRY", carry.path())
            .env("GRAFT_BIN", env!("CARGO_BIN_EXE_graft"))
            .output()
            .unwrap();
        assert!(run.status.success(), "{name} {arg}: {}", String::from_utf8_lossy(&run.stderr));
        String::from_utf8_lossy(&run.stdout).into_owned()
    };
    script("gpu-carry", "--dry-run");
    let parts: Vec<_> = std::fs::read_dir(carry.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "SHA256SUMS")
        .map(|e| e.metadata().unwrap().len())
        .collect();
    // The binary (tens of MB) and the model (94 MB) cannot go in one call.
    assert!(parts.len() >= 2, "{parts:?}");
    assert!(parts.iter().all(|&len| len < 63 * 1024 * 1024), "{parts:?}");
    assert!(script("gpu-check", "--receive").contains("every part is here"));

    script("gpu-check", "--dry-run");
    let figures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("gpu-check.json")).unwrap()).unwrap();
    assert_eq!(figures["device"], "cpu");
    assert_eq!(figures["carried"], true);
    for step in ["engine", "api", "load", "train"] {
        assert_eq!(figures["steps"][step]["exit"], 0, "{step}: {figures}");
    }
    assert!(figures["engine"]["decode_base_tok_s"].as_f64().unwrap() > 0.0, "{figures}");
    // The first token of a cold prompt at each of the dry run's two lengths, base and adapter.
    let first = figures["engine"]["first_token"].as_array().unwrap();
    assert_eq!(
        first.iter().map(|row| row["prompt_tokens"].as_u64().unwrap()).collect::<Vec<_>>(),
        [128, 256]
    );
    assert!(
        first
            .iter()
            .all(|row| row["base_ms"].as_f64().unwrap() > 0.0 && row["adapter_ms"].as_f64().unwrap() > 0.0),
        "{figures}"
    );
    assert!(figures["train"]["training_tokens_per_second"].as_f64().unwrap() > 0.0, "{figures}");
    let phases = figures["load"]["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 1, "--no-retrieval runs one phase: {figures}");
    assert!(phases[0]["requests"].as_u64().unwrap() > 0, "{figures}");
    assert_eq!(phases[0]["errors"], 0, "{figures}");
    // Few files come back from a device call: the figures, the log, and the rest packed.
    let log = std::fs::read_to_string(out.path().join("gpu-check.log")).unwrap();
    assert!(log.contains("engine: exit 0") && log.contains("train: exit 0"), "{log}");
    let packed = Command::new("tar")
        .arg("-tzf")
        .arg(out.path().join("gpu-check-files.tar.gz"))
        .output()
        .unwrap();
    let packed = String::from_utf8_lossy(&packed.stdout);
    assert!(
        ["engine.json", "engine.log", "api.json", "load.json", "train.log"]
            .iter()
            .all(|f| packed.contains(f)),
        "{packed}"
    );
    assert!(std::fs::read_dir(out.path()).unwrap().count() <= 8);
    let left: Vec<_> = std::fs::read_dir(repo_root().join("config"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".gpu-check"))
        .collect();
    assert!(left.is_empty(), "the check's config is removed");

    // A part damaged on the way is refused before anything runs.
    std::fs::write(carry.path().join("1"), b"not what was packed").unwrap();
    assert!(script("gpu-check", "--receive").contains("damaged"));
}
