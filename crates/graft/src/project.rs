//! Which project (and repository) a command means when the user names one, gives a path, or
//! gives neither: the named project, the configured project at that path (else the folder's
//! name), or the config's first project, as a request without a `model` gets it.
//!
//! It owns only that choice and the name's check; what a command does with the project is the
//! command's.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use graft_core::Config;

/// The project `project` names, else the config's first; checked as a name.
pub fn name(config: &Config, project: Option<&str>, command: &str) -> Result<String> {
    let name = match project.or(config.projects.first().map(|p| p.name.as_str())) {
        Some(name) => name.to_owned(),
        None => bail!("the config names no project: pass one with `graft {command} --project NAME`"),
    };
    check(&name)?;
    Ok(name)
}

/// The project and repository of `graft {command} [PATH] [--project NAME]`: with a path, that
/// repository, named by `--project`, else by the configured project at that path, else by its
/// folder; without one, the repository of the project named (or of the config's first).
pub fn with_path(config: &Config, path: Option<&Path>, project: Option<&str>, command: &str) -> Result<(String, PathBuf)> {
    let Some(path) = path else {
        let configured = match project {
            Some(name) => config.project(name).with_context(|| {
                format!("project `{name}` is not in the config; give its repository: graft {command} PATH --project {name}")
            })?,
            None => config
                .projects
                .first()
                .with_context(|| format!("the config names no project: give the repository, graft {command} PATH [--project NAME]"))?,
        };
        return Ok((configured.name.clone(), existing(&configured.path)?));
    };
    let path = existing(path)?;
    let name = match project {
        Some(p) => p.to_owned(),
        None => {
            let canonical = std::fs::canonicalize(&path).with_context(|| format!("cannot open {}", path.display()))?;
            config
                .projects
                .iter()
                .find(|c| std::fs::canonicalize(&c.path).is_ok_and(|cp| cp == canonical))
                .map(|c| c.name.clone())
                .or_else(|| canonical.file_name().map(|n| n.to_string_lossy().into_owned()))
                .context("cannot name the project from its path; pass --project NAME")?
        }
    };
    check(&name)?;
    Ok((name, path))
}

fn existing(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    Ok(path.to_owned())
}

fn check(name: &str) -> Result<()> {
    if !graft_core::is_valid_name(name) {
        bail!("`{name}` cannot be a project name: use letters, digits, `.`, `_` or `-` (pass --project NAME)");
    }
    Ok(())
}
