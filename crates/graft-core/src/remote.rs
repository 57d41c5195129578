//! A repository's git remotes, and remote URLs compared as names of the same repository.
//!
//! Editors name the repository a file belongs to by its remote URL (Tabby's plugins send
//! `git_url`), written as the user cloned it: `https://github.com/acme/api.git`,
//! `git@github.com:acme/api`, `ssh://git@github.com/acme/api/`. [`normalize`] reduces each to
//! `github.com/acme/api`, so a project is found whichever way its clone was made.
//!
//! This module reads remotes with `git` and compares text; it decides nothing about which
//! project serves a request (the server's routes do).

use std::path::Path;

/// The URLs of `repo`'s git remotes, normalized, in the order git lists them; empty when
/// `repo` is not a git repository, has no remotes, or `git` cannot run.
pub fn urls(repo: &Path) -> Vec<String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["config", "--get-regexp", r"^remote\..*\.url$"])
        .output();
    let output = match output {
        Ok(output) if output.status.success() => output,
        _ => return Vec::new(),
    };
    let mut urls: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some((_, url)) = line.split_once(' ') else { continue };
        let url = normalize(url);
        if !url.is_empty() && !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls
}

/// A remote URL as `host/path`: no scheme, user, port, `.git` suffix or trailing slash, the
/// host in lower case (paths keep their case: some hosts tell them apart). `scp`-like URLs
/// (`git@host:owner/repo`) read as `host/owner/repo`; a local path stays a path.
pub fn normalize(url: &str) -> String {
    let url = url.trim();
    let (rest, had_scheme) = match url.split_once("://") {
        Some((_, rest)) => (rest, true),
        None => (url, false),
    };
    // `user@host...`: the user goes (an `@` later in the path stays).
    let rest = match rest.split_once('@') {
        Some((user, after)) if !user.contains('/') => after,
        _ => rest,
    };
    let (host, path) = if had_scheme {
        rest.split_once('/').unwrap_or((rest, ""))
    } else {
        // `host:path` (scp-like), unless it is a local path (`/srv/git/api`, `./api`, `C:\...`).
        match rest.split_once(':') {
            Some((host, path)) if host.len() > 1 && !host.contains('/') => (host, path),
            _ => ("", rest),
        }
    };
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
    match (host.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (false, true) => host,
        (false, false) => format!("{host}/{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ways_to_write_a_remote_name_one_repository() {
        for url in [
            "https://github.com/acme/api.git",
            "https://github.com/acme/api",
            "https://user:token@GitHub.com/acme/api/",
            "http://github.com:443/acme/api.git",
            "ssh://git@github.com/acme/api.git",
            "ssh://git@github.com:22/acme/api",
            "git@github.com:acme/api.git",
            "git@github.com:acme/api",
            "github.com:acme/api",
            "git://github.com/acme/api.git",
        ] {
            assert_eq!(normalize(url), "github.com/acme/api", "{url}");
        }
        assert_eq!(
            normalize("https://gitlab.example.com/group/sub/api.git"),
            "gitlab.example.com/group/sub/api"
        );
        assert_ne!(normalize("git@github.com:acme/Api"), normalize("git@github.com:acme/api"));
        // Local remotes stay paths.
        assert_eq!(normalize("/srv/git/api.git"), "srv/git/api");
        assert_eq!(normalize("file:///srv/git/api.git"), "srv/git/api");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn a_repositorys_remotes_are_read_with_git() {
        let dir = tempfile::tempdir().unwrap();
        assert!(urls(dir.path()).is_empty(), "not a repository: no remotes");
        let git = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .status()
                .expect("git runs");
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "--quiet"]);
        assert!(urls(dir.path()).is_empty(), "no remotes yet");
        git(&["remote", "add", "origin", "git@github.com:acme/api.git"]);
        git(&["remote", "add", "mirror", "https://git.example.com/Acme/api"]);
        assert_eq!(urls(dir.path()), ["github.com/acme/api", "git.example.com/Acme/api"]);
    }
}
