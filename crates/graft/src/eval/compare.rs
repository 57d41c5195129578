//! `graft eval compare NEW OLD`: two saved runs of one golden set read and compared arm by arm
//! (graft-eval's `compare`), printed as a table or JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use graft_eval::compare::{compare, SavedReport};

use crate::cli::EvalCompareArgs;

pub fn run(args: EvalCompareArgs) -> Result<()> {
    let (new_file, new) = read(&args.new)?;
    let (old_file, old) = read(&args.old)?;
    let comparison = compare(&new, &old, &args.arms, args.seed)?;
    if args.json {
        let mut json = serde_json::to_value(&comparison)?;
        json["new"] = serde_json::json!(new_file);
        json["old"] = serde_json::json!(old_file);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!(
            "{}",
            comparison.table(&new_file.display().to_string(), &old_file.display().to_string())
        );
    }
    Ok(())
}

/// A saved report: `path` itself, or `path/report.json` for a folder.
fn read(path: &Path) -> Result<(PathBuf, SavedReport)> {
    let file = if path.is_dir() { path.join("report.json") } else { path.to_owned() };
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading the report {}", file.display()))?;
    let report = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a report of `graft eval run` (its report.json, or its --json output)",
            file.display()
        )
    })?;
    Ok((file, report))
}
