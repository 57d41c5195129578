//! `graft index` and `graft search` as a user runs them, including Ctrl-C and `kill -9` in
//! mid-run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::repo_root;
use graft_index::catalog::{Catalog, TantivyCatalog};
use graft_index::IndexLayout;
use serde_json::Value;

/// A config that keeps the index in `index_dir` and uses the repository's model kit.
fn write_config(dir: &Path, index_dir: &Path) -> PathBuf {
    let kit = common::kit_dir();
    let config = dir.join("graft.toml");
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n[index]\ndir = {:?}\n",
            kit.display().to_string(),
            index_dir.display().to_string()
        ),
    )
    .unwrap();
    config
}

/// A scratch folder holding an empty repository folder and a config keeping the index beside
/// it: the folder (removed on drop), the repository and the config.
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let config = write_config(work.path(), &work.path().join("index"));
    (work, repo, config)
}

/// `graft serve` of `project` from `repo`, with `config`'s settings and `env`.
fn serve_project(config: &Path, project: &str, repo: &str, env: &[(&str, &str)]) -> common::Serving {
    let served = config.with_file_name("served.toml");
    let text = std::fs::read_to_string(config).unwrap();
    let project = format!("\n[server]\nlisten = \"127.0.0.1:0\"\n\n[[projects]]\nname = \"{project}\"\npath = {repo:?}\n");
    std::fs::write(&served, text + &project).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_graft"));
    command.args(["serve", "--config"]).arg(&served).env("RUST_LOG", "warn");
    command.envs(env.iter().copied());
    common::start_serving(&mut command, Duration::from_secs(120))
}

fn graft(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_graft"));
    cmd.args(args).arg("--config").arg(config).env("RUST_LOG", "warn");
    cmd
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// A repository of `n` Python files whose function names carry `version`.
fn write_repo(root: &Path, n: usize, version: &str) {
    for i in 0..n {
        let text = format!(
            "\"\"\"Module {i}.\"\"\"\n\n\ndef alpha_func_{i}_{version}(value):\n    \"\"\"Scales value for module {i}.\"\"\"\n    return value * {i} + 1\n\n\ndef beta_helper_{i}_{version}(items):\n    return [alpha_func_{i}_{version}(x) for x in items]\n"
        );
        std::fs::write(root.join(format!("module_{i:04}.py")), text).unwrap();
    }
}

/// A project that also searches a library's project finds the library's code with its own,
/// said to be the library's: `project` in the JSON, `lib/` before the path in the text.
#[test]
fn search_finds_the_code_of_the_projects_a_project_also_searches() {
    let (work, lib, config) = scratch();
    write_repo(&lib, 4, "v1");
    let fixture = repo_root().join("tests/fixtures/polyglot");
    let projects = format!(
        "\n[[projects]]\nname = \"app\"\npath = {:?}\nalso_search = [\"lib\"]\n\n[[projects]]\nname = \"lib\"\npath = {:?}\n",
        fixture.display().to_string(),
        lib.display().to_string()
    );
    let text = std::fs::read_to_string(&config).unwrap() + &projects;
    std::fs::write(&config, text).unwrap();
    run_ok(&mut graft(&config, &["index", "--project", "app"]));

    // The library not indexed yet: left out, said so, the app searched alone.
    let out = run_ok(&mut graft(&config, &["search", "alpha_func_2_v1(x)", "--project", "app", "--json"]));
    assert!(json(&out).as_array().unwrap().iter().all(|h| h.get("project").is_none()));
    let out = run_ok(&mut graft(&config, &["search", "alpha_func_2_v1(x)", "--project", "app"]));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("`lib`, which `app` also searches, is left out"), "{said}");

    run_ok(&mut graft(&config, &["index", "--project", "lib"]));
    let out = run_ok(&mut graft(
        &config,
        &["search", "values = [alpha_func_2_v1(x)", "--project", "app", "--code", "--json"],
    ));
    let hits = json(&out);
    let top = &hits.as_array().unwrap()[0];
    assert_eq!(
        (&top["project"], &top["path"]),
        (&Value::from("lib"), &Value::from("module_0002.py")),
        "{hits}"
    );
    assert_eq!(top["found_by"]["definition"], 1, "{hits}");
    let out = run_ok(&mut graft(
        &config,
        &["search", "values = [alpha_func_2_v1(x)", "--project", "app", "--code"],
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap().starts_with("lib/module_0002.py:"), "{text}");
    drop(work);
}

#[test]
fn index_and_search_print_json_for_scripts() {
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &work.path().join("index"));
    let fixture = repo_root().join("tests/fixtures/polyglot");
    let out = run_ok(graft(&config, &["index", "--project", "poly", "--json"]).arg(&fixture));
    let summary = json(&out);
    assert_eq!(summary["project"], "poly");
    assert_eq!(summary["report"]["files_indexed"], 22, "{summary}");
    assert!(summary["report"]["chunks"].as_u64().unwrap() >= 22);

    let out = run_ok(&mut graft(
        &config,
        &["search", "NewBlobStore(4096)", "--project", "poly", "-k", "3", "--json"],
    ));
    let hits = json(&out);
    let hits = hits.as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 3, "{hits:?}");
    let top = &hits[0];
    for field in ["path", "start_line", "end_line", "score", "symbol", "text"] {
        assert!(top.get(field).is_some(), "missing {field}: {top}");
    }
    assert!(hits.iter().any(|h| h["path"] == "storage/blobstore.go"), "{hits:?}");

    // Code before a cursor in a named file: the definition of what it calls comes first, and
    // the file itself never comes back.
    let out = run_ok(&mut graft(
        &config,
        &[
            "search",
            "func syncAll() {\n\tstore := NewBlobStore(",
            "--project",
            "poly",
            "--code",
            "--path",
            "storage/sync.go",
            "--json",
        ],
    ));
    let hits = json(&out);
    let hits = hits.as_array().unwrap();
    assert_eq!(hits[0]["path"], "storage/blobstore.go", "{hits:?}");
    assert!(hits.iter().all(|h| h["path"] != "storage/sync.go"), "{hits:?}");
    // Each hit says which rankings found it: the definition lookup put the first one first.
    assert_eq!(hits[0]["found_by"]["definition"], 1, "{hits:?}");
    for hit in hits {
        let found = hit["found_by"].as_object().unwrap();
        assert!(!found.is_empty(), "{hit}");
        for ranking in ["keyword", "vector"] {
            if let Some(place) = found.get(ranking) {
                assert!(place["rank"].as_u64().unwrap() >= 1 && place["score"].is_number(), "{hit}");
            }
        }
    }

    // The human-readable form: path:start-end, score, snippet.
    let out = run_ok(&mut graft(
        &config,
        &["search", "NewBlobStore", "--project", "poly", "--mode", "keyword"],
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap().starts_with("storage/"), "{text}");
    assert!(text.contains(".go:"), "{text}");
    // `--explain`: under each result, the rankings that found it (keyword search alone here).
    let out = run_ok(&mut graft(
        &config,
        &["search", "NewBlobStore", "--project", "poly", "--mode", "keyword", "--explain"],
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    let explained: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("found by: ")).collect();
    assert!(!explained.is_empty(), "{text}");
    assert!(explained[0].starts_with("keyword #1 (BM25 "), "{text}");
    assert!(
        explained.iter().all(|e| e.starts_with("keyword #") && !e.contains("vector")),
        "{text}"
    );

    // A project that was never indexed: a clear error.
    let out = graft(&config, &["search", "x", "--project", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("graft index"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without --project: the config's first project, and where it names none, a clear error.
    let out = graft(&config, &["search", "NewBlobStore"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--project NAME"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let with_project = work.path().join("with-project.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &with_project,
        format!("{text}[[projects]]\nname = \"poly\"\npath = {:?}\n", fixture.display().to_string()),
    )
    .unwrap();
    let by_default = run_ok(&mut graft(&with_project, &["search", "NewBlobStore", "--json"]));
    let named = run_ok(&mut graft(&config, &["search", "NewBlobStore", "--project", "poly", "--json"]));
    assert_eq!(json(&by_default), json(&named));
    assert!(!json(&named).as_array().unwrap().is_empty());

    // Another repository into the same project: refused, the index as it was; --replace does it.
    let other = work.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    write_repo(&other, 3, "v1");
    let refused = graft(&config, &["index", "--project", "poly"]).arg(&other).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("--replace"), "{stderr}");
    assert!(stderr.contains(&*fixture.canonicalize().unwrap().to_string_lossy()), "{stderr}");
    let still = run_ok(&mut graft(&config, &["search", "NewBlobStore", "--project", "poly", "--json"]));
    assert_eq!(json(&still), json(&named));
    let replaced = run_ok(graft(&config, &["index", "--project", "poly", "--replace", "--json"]).arg(&other));
    let report = &json(&replaced)["report"];
    assert_eq!(
        (&report["files_added"], &report["files_removed"]),
        (&3.into(), &22.into()),
        "{report}"
    );
}

/// Ctrl-C stops `graft index` at its next step (not the end of its embedding), saying so;
/// nothing is committed, the vectors stored so far are kept, and the next run embeds only
/// the rest.
#[test]
fn ctrl_c_stops_an_index_run_at_its_next_step_and_the_next_run_goes_on() {
    use std::io::BufRead;
    let (_work, repo, config) = scratch();
    let repo_arg = repo.to_str().unwrap();
    write_repo(&repo, 800, "v1");

    let interrupt = || {
        let mut child = graft(&config, &["index", repo_arg, "--project", "k"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let found = stderr.by_ref().map_while(Result::ok).find(|l| l.contains("files found"));
        assert!(found.is_some(), "the run never said what it found");
        // Into the embedding (800 files' chunks take half a minute here).
        std::thread::sleep(Duration::from_secs(4));
        let pid = child.id().to_string();
        let asked = std::time::Instant::now();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let status = child.wait().unwrap();
        let said: Vec<String> = stderr.map_while(Result::ok).collect();
        (status, asked.elapsed(), said.join("\n"))
    };

    let (status, took, said) = interrupt();
    assert!(!status.success(), "{status}: {said}");
    assert!(took < Duration::from_secs(10), "stopped after {took:?}: {said}");
    assert!(said.contains("stopping the index run at its next step"), "{said}");
    assert!(said.contains("is as it was before this run"), "{said}");
    let search = graft(&config, &["search", "alpha_func_7", "--project", "k", "--json"])
        .output()
        .unwrap();
    assert!(!search.status.success(), "nothing was committed");

    // Stopped again (this run went on from the first one's vectors), as safely.
    let (status, _, said) = interrupt();
    assert!(said.contains("is as it was before this run"), "{status}: {said}");

    let done = json(&run_ok(&mut graft(&config, &["index", repo_arg, "--project", "k", "--json"])));
    let report = &done["report"];
    assert_eq!(report["files_added"], 800, "{done}");
    let (embedded, chunks) = (report["embeddings"].as_u64().unwrap(), report["chunks"].as_u64().unwrap());
    assert!(embedded < chunks, "the stopped runs' vectors are reused: {done}");
    let hits = json(&run_ok(&mut graft(
        &config,
        &["search", "alpha_func_7", "--project", "k", "--json"],
    )));
    assert!(!hits.as_array().unwrap().is_empty(), "{hits}");
}

/// On a disk with less free than graft keeps (here: a margin larger than any disk), an index
/// run is refused with the reason before it writes (or empties) anything: the vector store's
/// memory-mapped files would end the process with a SIGBUS when the disk fills. The index
/// stays searchable, and the next run on a disk with room goes on.
#[test]
fn an_index_run_on_a_disk_about_to_fill_is_refused_and_the_index_kept() {
    let (work, repo, config) = scratch();
    let repo_arg = repo.to_str().unwrap();
    write_repo(&repo, 5, "v1");
    run_ok(&mut graft(&config, &["index", repo_arg, "--project", "d"]));

    write_repo(&repo, 6, "v2");
    let full = work.path().join("full.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&full, text + "min_free_mb = 1000000000000\n").unwrap();
    let refused = graft(&full, &["index", repo_arg, "--project", "d"]).output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("MB free, under the 1000000000000 MB graft keeps free while it writes an index"),
        "{said}"
    );
    let search = |name: &str| json(&run_ok(&mut graft(&config, &["search", name, "--project", "d", "--json"])));
    assert!(!search("alpha_func_1").as_array().unwrap().is_empty(), "the index is kept");

    // A graft serving the project on such a disk (the margin from the environment, which
    // replaces the config's): its re-index answers 507 with the reason, and it keeps serving
    // the index it has.
    let serving = serve_project(&config, "d", repo_arg, &[("GRAFT_INDEX_MIN_FREE_MB", "1000000000000")]);
    let answer = common::http_post(&serving.addr, "/v1/projects/d/reindex", "{}");
    assert!(
        answer.starts_with("HTTP/1.1 507") && answer.contains("MB graft keeps free"),
        "{answer}"
    );
    let cursor = r#"{"query": "alpha_func_1", "k": 1}"#;
    let hits = common::http_post(&serving.addr, "/v1/projects/d/search", cursor);
    assert!(hits.starts_with("HTTP/1.1 200") && hits.contains("module_0001.py"), "{hits}");
    drop(serving);

    let done = json(&run_ok(&mut graft(&config, &["index", repo_arg, "--project", "d", "--json"])));
    assert_eq!(done["report"]["files_added"], 1, "{done}");
}

/// `graft index --rebuild` builds the keyword index anew, the vectors kept; `--embed-again`
/// embeds every chunk again; either says why it rebuilt. Through a graft serving the project
/// too, whose `POST .../reindex` takes the same asks as a body (none: an incremental run) and
/// refuses a misspelt one.
#[test]
fn index_rebuild_and_embed_again_build_the_index_anew_here_or_through_a_serving_graft() {
    let (_work, repo, config) = scratch();
    let repo_arg = repo.to_str().unwrap();
    write_repo(&repo, 5, "v1");
    let index = |more: &[&str]| {
        let mut args = vec!["index", repo_arg, "--project", "r", "--json"];
        args.extend_from_slice(more);
        json(&run_ok(&mut graft(&config, &args)))["report"].clone()
    };
    let first = index(&[]);
    let chunks = first["chunks"].as_u64().unwrap();
    assert!(chunks >= 5 && first["embeddings"] == chunks, "{first}");

    let rebuilt = index(&["--rebuild"]);
    assert_eq!(rebuilt["rebuilt"], true, "{rebuilt}");
    assert!(
        rebuilt["rebuilt_because"]
            .as_str()
            .unwrap()
            .contains("asked to build the keyword index anew"),
        "{rebuilt}"
    );
    assert_eq!(
        (&rebuilt["files_added"], &rebuilt["embeddings"], &rebuilt["chunks"]),
        (&5.into(), &0.into(), &chunks.into()),
        "{rebuilt}"
    );
    let embedded = index(&["--embed-again"]);
    assert_eq!(
        (&embedded["files_unchanged"], &embedded["embeddings"]),
        (&5.into(), &chunks.into()),
        "{embedded}"
    );
    let said = run_ok(&mut graft(
        &config,
        &["index", repo_arg, "--project", "r", "--rebuild", "--embed-again"],
    ));
    let said = String::from_utf8_lossy(&said.stdout);
    assert!(
        said.contains("rebuilt, as it was asked to build the keyword index anew and embed every chunk again"),
        "{said}"
    );
    let search = run_ok(&mut graft(
        &config,
        &["search", "alpha_func_3", "--project", "r", "--mode", "vector", "--json"],
    ));
    assert_eq!(json(&search)[0]["path"], "module_0003.py");

    // Through a graft serving the project.
    let serving = serve_project(&config, "r", repo_arg, &[]);
    let url = format!("http://{}", serving.addr);
    std::fs::create_dir(repo.join("vendor")).unwrap();
    std::fs::write(repo.join("vendor/lib.py"), "def vendored():\n    pass\n").unwrap();
    let through = json(&run_ok(&mut graft(
        &config,
        &[
            "index",
            repo_arg,
            "--project",
            "r",
            "--server",
            &url,
            "--rebuild",
            "--embed-again",
            "--skipped",
            "--json",
        ],
    )));
    assert_eq!(through["through"], url.as_str(), "{through}");
    let report = &through["report"];
    assert_eq!(
        report["skipped_files"],
        serde_json::json!([{ "path": "vendor/lib.py", "reason": "vendored", "detail": "in a `vendor/` folder", "folder": "vendor" }]),
        "{report}"
    );
    assert!(
        report["rebuilt_because"]
            .as_str()
            .unwrap()
            .contains("anew and embed every chunk again"),
        "{report}"
    );
    assert_eq!(report["files_added"], 5, "{report}");
    // The server embeds what it did not embed ahead after its commit, serving meanwhile.
    let embedding = report["embeddings"].as_u64().unwrap() + report["vectors_pending"].as_u64().unwrap();
    assert_eq!(embedding, chunks, "{report}");

    let misspelt = common::http_post(&serving.addr, "/v1/projects/r/reindex", r#"{"rebuilt": true}"#);
    assert!(misspelt.starts_with("HTTP/1.1 400") && misspelt.contains("rebuilt"), "{misspelt}");
    let plain = common::http_post(&serving.addr, "/v1/projects/r/reindex", "");
    assert!(plain.starts_with("HTTP/1.1 200") && !plain.contains("rebuilt_because"), "{plain}");
}

/// `graft index --skipped` lists each file left out with its reason and what decided it (the
/// folder, the name, the attributes line, what the file holds), those judged by their names
/// and places and those judged once read alike, in the summary and in its JSON; without it only
/// their counts by reason.
#[test]
fn index_skipped_lists_each_file_left_out_with_its_reason() {
    let (_work, repo, config) = scratch();
    std::fs::create_dir_all(repo.join("vendor/dep")).unwrap();
    write_repo(&repo, 2, "v1");
    std::fs::write(repo.join("vendor/dep/lib.py"), "def dep():\n    return 1\n").unwrap();
    std::fs::write(repo.join("Cargo.lock"), "version = 3\n").unwrap();
    std::fs::write(repo.join("logo.py"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    std::fs::write(repo.join("bundle.js"), format!("var a={};\n", "1+".repeat(3000) + "1")).unwrap();
    std::fs::write(repo.join("blank.py"), "\n\n   \n").unwrap();
    std::fs::create_dir_all(repo.join("api")).unwrap();
    std::fs::write(repo.join("api/client.py"), "def get():\n    return 2\n").unwrap();
    std::fs::write(repo.join("schema.py"), "# @generated by schemagen\nX = 1\n").unwrap();
    std::fs::write(repo.join(".gitattributes"), "*.py text\napi/** linguist-generated\n").unwrap();
    // A git repository with a submodule.
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    std::fs::create_dir_all(repo.join("libs/shared")).unwrap();
    std::fs::write(repo.join("libs/shared/.git"), "gitdir: ../../.git/modules/libs/shared\n").unwrap();
    std::fs::write(repo.join("libs/shared/util.py"), "def util():\n    return 5\n").unwrap();
    std::fs::write(repo.join("libs/shared/more.py"), "def more():\n    return 6\n").unwrap();
    let repo_arg = repo.to_str().unwrap();
    let expected = [
        ("Cargo.lock", "generated", Some("a lock file")),
        ("api/client.py", "generated", Some(".gitattributes:2: api/** linguist-generated")),
        ("blank.py", "empty", None),
        ("bundle.js", "minified", Some("lines over 1000 characters hold 99% of its text")),
        ("libs/shared/more.py", "submodule", Some("in the git submodule `libs/shared/`")),
        ("libs/shared/util.py", "submodule", Some("in the git submodule `libs/shared/`")),
        ("logo.py", "binary", Some("a NUL byte")),
        ("schema.py", "generated", Some("its first lines say \"@generated\"")),
        ("vendor/dep/lib.py", "vendored", Some("in a `vendor/` folder")),
    ];

    let said = run_ok(&mut graft(&config, &["index", repo_arg, "--project", "s", "--skipped"]));
    let said = String::from_utf8_lossy(&said.stdout);
    assert!(said.contains("`third_party/** -linguist-vendored`"), "{said}");
    assert!(said.contains("`graft index --why FILE`"), "{said}");
    assert!(said.contains("`index.submodules = true`"), "{said}");
    // The files a folder leaves out are said once for the folder.
    assert!(said.contains("libs/shared/ (2 files)"), "{said}");
    let mut in_text = expected.to_vec();
    in_text.retain(|(path, ..)| *path != "libs/shared/util.py");
    in_text
        .iter_mut()
        .filter(|(path, ..)| path.starts_with("libs/shared/"))
        .for_each(|line| line.0 = "libs/shared/");
    let listed: Vec<(&str, &str, Option<&str>)> = said
        .lines()
        .skip_while(|line| line.trim() != "skipped files:")
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with('('))
        .map(|line| {
            let (line, detail) = match line.split_once("  (") {
                Some((line, detail)) => (line, detail.strip_suffix(')')),
                None => (line, None),
            };
            let mut words = line.split_whitespace();
            let reason = words.next().unwrap();
            (words.next().unwrap(), reason, detail)
        })
        .collect();
    assert_eq!(listed, in_text, "{said}");

    let report = json(&run_ok(&mut graft(
        &config,
        &["index", repo_arg, "--project", "s", "--skipped", "--json"],
    )))["report"]
        .clone();
    let listed: Vec<(&str, &str, Option<&str>)> = report["skipped_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["reason"].as_str().unwrap(), f["detail"].as_str()))
        .collect();
    assert_eq!(listed, expected, "{report}");
    let folders: Vec<(&str, &str)> = report["skipped_files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| Some((f["path"].as_str()?, f["folder"].as_str()?)))
        .collect();
    assert_eq!(
        folders,
        [
            ("libs/shared/more.py", "libs/shared"),
            ("libs/shared/util.py", "libs/shared"),
            ("vendor/dep/lib.py", "vendor")
        ],
        "{report}"
    );
    let quiet = json(&run_ok(&mut graft(&config, &["index", repo_arg, "--project", "s", "--json"])))["report"].clone();
    assert!(quiet.get("skipped_files").is_none(), "{quiet}");
    assert_eq!(quiet["skipped"]["vendored"], 1, "{quiet}");
    assert_eq!(quiet["skipped"]["generated"], 3, "{quiet}");
    assert_eq!(quiet["skipped"]["submodule"], 2, "{quiet}");
}

/// `graft index --why FILE` says what the walk does with each file and what decided it (the
/// ignore file's line, the hidden folder, the folder of vendored code), and whether the index
/// holds it as it is now, indexing nothing.
#[test]
fn index_why_says_what_decides_each_file_and_indexes_nothing() {
    let (work, repo, config) = scratch();
    write_repo(&repo, 1, "v1");
    std::fs::create_dir_all(repo.join("target/debug")).unwrap();
    std::fs::create_dir_all(repo.join("vendor/dep")).unwrap();
    std::fs::create_dir_all(repo.join(".idea")).unwrap();
    std::fs::write(repo.join(".gitignore"), "# build output\n/target\n").unwrap();
    std::fs::write(repo.join("target/debug/out.py"), "x = 1\n").unwrap();
    std::fs::write(repo.join("vendor/dep/lib.py"), "def dep():\n    return 1\n").unwrap();
    std::fs::write(repo.join(".idea/ws.xml"), "<x/>\n").unwrap();
    let repo_arg = repo.to_str().unwrap();
    let files = [
        "module_0000.py",
        "target/debug/out.py",
        "vendor/dep/lib.py",
        ".idea/ws.xml",
        "gone.py",
    ];
    let mut args = vec!["index", repo_arg, "--project", "w", "--json"];
    for file in files {
        args.extend(["--why", file]);
    }

    let said = json(&run_ok(&mut graft(&config, &args)));
    let decisions: Vec<&str> = said["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["indexed", "ignored", "vendored", "hidden", "missing"], "{said}");
    let ignored = said["files"][1]["detail"].as_str().unwrap();
    assert!(ignored.ends_with(".gitignore:2: /target, as the folder `target/` is"), "{ignored}");
    assert!(!work.path().join("index/w").exists(), "nothing indexed");
    assert_eq!(said["files"][0]["index"], "none", "{said}");

    // Whether the index holds each file, and as it is now.
    run_ok(&mut graft(&config, &["index", repo_arg, "--project", "w"]));
    std::fs::write(repo.join("module_new.py"), "def new():\n    return 3\n").unwrap();
    let held = |file: &str| {
        let said = json(&run_ok(&mut graft(
            &config,
            &["index", repo_arg, "--project", "w", "--json", "--why", file],
        )));
        said["files"][0]["index"].as_str().unwrap().to_owned()
    };
    assert_eq!(held("module_0000.py"), "current");
    assert_eq!(held("module_new.py"), "absent");
    assert_eq!(held("vendor/dep/lib.py"), "absent");
    std::fs::write(repo.join("module_0000.py"), "def changed():\n    return 4\n").unwrap();
    assert_eq!(held("module_0000.py"), "older");

    args.retain(|a| *a != "--json");
    args.extend(["--why", "module_new.py"]);
    let out = run_ok(&mut graft(&config, &args));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("vendor/dep/lib.py: vendored (in a `vendor/` folder)"), "{text}");
    assert!(
        text.contains("module_0000.py: indexed (the walk keeps it; in the index as it was: the next `graft index` reads it again)"),
        "{text}"
    );
    assert!(
        text.contains("module_new.py: indexed (the walk keeps it; not in the index yet"),
        "{text}"
    );
    let refused = graft(&config, &["index", repo_arg, "--why", "a.py", "--rebuild"]).output().unwrap();
    assert!(!refused.status.success());
}

#[test]
fn killing_an_index_run_at_any_moment_leaves_a_searchable_index() {
    let (work, repo, config) = scratch();
    let repo_arg = repo.to_str().unwrap();

    write_repo(&repo, 300, "v1");
    run_ok(&mut graft(&config, &["index", repo_arg, "--project", "k", "--json"]));

    // Every file changes; runs are killed at several points of re-indexing.
    write_repo(&repo, 300, "v2");
    for delay_ms in [200, 700, 1500, 2500, 4000] {
        let mut child = graft(&config, &["index", repo_arg, "--project", "k"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        for mode in ["keyword", "hybrid", "vector"] {
            let out = run_ok(&mut graft(
                &config,
                &["search", "alpha_func_7", "--project", "k", "--mode", mode, "--json"],
            ));
            let hits = json(&out);
            let hits = hits.as_array().unwrap();
            assert!(!hits.is_empty(), "killed after {delay_ms} ms, {mode}: no results");
            // The index is the old one or the new one, never a mix.
            let v1 = hits.iter().filter(|h| h["text"].as_str().unwrap().contains("_v1")).count();
            let v2 = hits.iter().filter(|h| h["text"].as_str().unwrap().contains("_v2")).count();
            assert!(v1 == 0 || v2 == 0, "killed after {delay_ms} ms, {mode}: mixed results {hits:?}");
        }
        // The symbol table switched with the chunks: one version's definitions, each at a
        // committed chunk of its own text.
        let catalog = TantivyCatalog::open(&IndexLayout::new(work.path().join("index/k"))).expect("catalog opens");
        let defined = |version: &str| {
            let names: Vec<String> = (0..300).map(|i| format!("alpha_func_{i}_{version}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let records = catalog.definitions(&names, 1000).unwrap();
            let ids: Vec<u64> = records.iter().map(|r| r.chunk).collect();
            let chunks = catalog.chunks(&ids).unwrap();
            for r in &records {
                let chunk = &chunks
                    .get(&r.chunk)
                    .unwrap_or_else(|| panic!("killed after {delay_ms} ms: {r:?} has no chunk"));
                assert!(
                    chunk.text.contains(&format!("def {}", r.name)),
                    "killed after {delay_ms} ms: {r:?} in {chunk:?}"
                );
            }
            records.len()
        };
        let (old, new) = (defined("v1"), defined("v2"));
        assert!(
            (old, new) == (300, 0) || (old, new) == (0, 300),
            "killed after {delay_ms} ms: {old} v1 and {new} v2 definitions"
        );
    }

    // The next run completes the work, and the one after finds nothing left to do.
    let done = json(&run_ok(&mut graft(&config, &["index", repo_arg, "--project", "k", "--json"])));
    assert_eq!(done["report"]["files_indexed"], 300, "{done}");
    let out = run_ok(&mut graft(&config, &["search", "alpha_func_7", "--project", "k", "--json"]));
    let hits = json(&out);
    assert!(
        hits.as_array().unwrap().iter().all(|h| h["text"].as_str().unwrap().contains("_v2")),
        "{hits}"
    );
    let again = json(&run_ok(&mut graft(&config, &["index", repo_arg, "--project", "k", "--json"])));
    assert_eq!(again["report"]["embeddings"], 0, "{again}");
    assert_eq!(again["report"]["stale_vectors_removed"], 0, "{again}");
    assert_eq!(again["report"]["files_unchanged"], 300, "{again}");
}

/// `graft bench index` on real code of two languages (the kit's tauri mobile API, Kotlin and
/// Swift): every search mode's figures, lookup's by the language queries come from, and how
/// many queries ask across languages, in JSON as in text.
#[test]
fn bench_index_measures_each_search_mode_and_each_language() {
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &work.path().join("index"));
    run_ok(&mut graft(&config, &["models", "fetch", "tauri-mobile-src"]));
    let tree = common::kit_dir().join("tauri-mobile-src/mobile");
    let args = ["bench", "index", "--queries", "10", "--quality-queries", "40"];
    let figures = json(&run_ok(graft(&config, &args).arg(&tree).arg("--json")));
    assert!(figures["files_indexed"].as_u64().unwrap() >= 36, "{figures}");
    // The process holds the embedding model (tens of MB) before the index, and more during it.
    let before = figures["resident_mb_before_index"].as_f64().unwrap();
    let peak = figures["peak_resident_mb_first_index"].as_f64().unwrap();
    assert!(before > 20.0 && peak >= before && peak < 4096.0, "{figures}");
    let quality = figures["quality"].as_array().unwrap();
    let modes: Vec<&str> = quality.iter().map(|q| q["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["keyword", "vector", "hybrid", "keyword + lookup", "hybrid + lookup"]);
    let queries = quality[4]["queries"].as_u64().unwrap();
    assert!(queries >= 20, "{figures}");
    // Lookup puts the defining file first more often than the search it adds to, with
    // vectors or without (a first index whose vectors are still being embedded).
    let recall = |i: usize| quality[i]["recall_at_1"].as_f64().unwrap();
    assert!(recall(4) > recall(2) && recall(3) > recall(0), "{figures}");
    let by_language = quality[4]["by_language"].as_array().unwrap();
    let languages: Vec<&str> = by_language.iter().map(|l| l["language"].as_str().unwrap()).collect();
    assert_eq!(languages, ["kotlin", "swift"], "{figures}");
    let counted: u64 = by_language.iter().map(|l| l["queries"].as_u64().unwrap()).sum();
    assert_eq!(counted, queries);
    assert!(quality[..4].iter().all(|q| q["by_language"].as_array().unwrap().is_empty()));
    // Kotlin's `Double` is no Swift extension, though a Swift file "defines" it.
    let across = figures["quality_queries_across_languages"].as_u64().unwrap();
    assert!(across >= 1 && across < queries, "{figures}");

    let text = run_ok(graft(&config, &args).arg(&tree));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("MB at its peak"), "{text}");
    assert!(text.contains("keyword + lookup   recall@1"), "{text}");
    assert!(text.contains("hybrid + lookup    recall@1"), "{text}");
    assert!(text.contains("    kotlin           recall@1"), "{text}");
    assert!(
        text.contains(&format!("{across} of the queries ask for a definition in another language's file")),
        "{text}"
    );
}

/// `graft bench questions` on real code (the kit's tauri mobile API): each way of searching
/// asks every question, the chunk holding a definition is never found where its file is not,
/// and a tree with no documented definition is refused with the reason.
#[test]
fn bench_questions_asks_each_way_for_documented_definitions() {
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &work.path().join("index"));
    run_ok(&mut graft(&config, &["models", "fetch", "tauri-mobile-src"]));
    let tree = common::kit_dir().join("tauri-mobile-src/mobile");
    let args = ["bench", "questions", "--vector-weights", "0.5,2"];
    let figures = json(&run_ok(graft(&config, &args).arg(&tree).arg("--json")));
    let questions = figures["questions"].as_u64().unwrap();
    assert!(questions >= 10, "{figures}");
    assert_eq!(figures["naming"], false, "{figures}");
    let ways = figures["ways"].as_array().unwrap();
    let names: Vec<&str> = ways.iter().map(|w| w["name"].as_str().unwrap()).collect();
    // 0.5 is the configured weight: asked once.
    assert_eq!(
        names,
        ["keyword", "vector", "hybrid", "hybrid + lookup (chat)", "hybrid + lookup at 2"]
    );
    for way in ways {
        let (chunk, file) = (&way["chunk"], &way["file"]);
        assert_eq!(chunk["queries"].as_u64(), Some(questions), "{way}");
        for measure in ["at_1", "at_5", "mrr"] {
            let (c, f) = (chunk[measure].as_f64().unwrap(), file[measure].as_f64().unwrap());
            assert!((0.0..=1.0).contains(&c) && c <= f, "{measure}: {way}");
        }
    }
    // Words shared with the code around the definition find some of them.
    assert!(ways[0]["file"]["at_5"].as_f64().unwrap() > 0.3, "{figures}");

    let text = run_ok(graft(&config, &args).arg(&tree));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with(&format!("{questions} questions in prose about")), "{text}");
    assert!(text.contains("hybrid + lookup (chat)   recall@1"), "{text}");

    let bare = work.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::write(bare.join("main.py"), "def main():\n    return 1\n").unwrap();
    let refused = graft(&config, &["bench", "questions"]).arg(&bare).output().unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("no question to ask"), "{said}");
    // No first sentence in this tree names its definition.
    let refused = graft(&config, &["bench", "questions", "--naming"]).arg(&tree).output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("whose first sentence names it"),
        "{said}"
    );
    for (flag, value, reason) in [
        ("--questions", "0", "--questions must be at least 1"),
        ("--vector-weights", "1,-2", "-2 is no weight"),
    ] {
        let refused = graft(&config, &["bench", "questions", flag, value]).arg(&tree).output().unwrap();
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && said.contains(reason), "{flag} {value}: {said}");
    }
}
