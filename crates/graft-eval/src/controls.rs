//! The controls beside the arms: what retrieval could at best give (*oracle*: the definition
//! of the symbol the target uses, from the file that defines it) and what any code of the same
//! size gives (*random*: a seeded window of lines from a file that is not held out). Both go
//! to the model as extra context, where an editor plugin puts the files it gathered.

use graft_index::symbols::definitions;
use graft_index::walk::SourceFile;

use crate::golden::Task;
use crate::random::stable_hash;
use crate::split::Split;

/// Lines of context a control adds, at most (about what 512 tokens of retrieved code hold).
pub const CONTROL_LINES: usize = 40;

/// A piece of a file given as context: its path and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub path: String,
    pub text: String,
}

/// The oracle's context for `task`: the definition of its symbol in the file that defines it
/// (its first [`CONTROL_LINES`] lines); `None` for a task that uses no symbol from elsewhere.
pub fn oracle(task: &Task, files: &[SourceFile]) -> Option<Context> {
    let (symbol, path) = (task.symbol.as_deref()?, task.defined_in.as_deref()?);
    let file = files.iter().find(|f| f.path == path)?;
    let definition = definitions(&file.path, &file.text).into_iter().find(|d| d.name == symbol)?;
    let lines: Vec<&str> = file.text.lines().collect();
    let end = definition.end_line.min(definition.start_line + CONTROL_LINES - 1).min(lines.len());
    if definition.start_line == 0 || definition.start_line > end {
        return None;
    }
    Some(Context {
        path: file.path.clone(),
        text: lines[definition.start_line - 1..end].join("\n"),
    })
}

/// The random control's context for `task`: [`CONTROL_LINES`] lines from a file that is not
/// held out, chosen by a seeded hash of the task.
pub fn random(task: &Task, files: &[SourceFile], split: &Split, seed: u64) -> Option<Context> {
    let pool: Vec<&SourceFile> = files
        .iter()
        .filter(|f| !split.contains(&f.path) && !f.text.trim().is_empty())
        .collect();
    if pool.is_empty() {
        return None;
    }
    let file = pool[(stable_hash(seed, &["random-file", &task.id]) % pool.len() as u64) as usize];
    let lines: Vec<&str> = file.text.lines().collect();
    let starts = lines.len().saturating_sub(CONTROL_LINES) + 1;
    let start = (stable_hash(seed, &["random-line", &task.id]) % starts as u64) as usize;
    let end = (start + CONTROL_LINES).min(lines.len());
    Some(Context {
        path: file.path.clone(),
        text: lines[start..end].join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::TaskKind;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile::new(path, text)
    }

    fn api_task() -> Task {
        let mut task = Task::completion(TaskKind::Api, "src/app.rs", "", "vault.rotate_keys(t)", "");
        task.id = "api-0001".to_owned();
        task.symbol = Some("rotate_keys".into());
        task.defined_in = Some("src/vault.rs".into());
        task
    }

    #[test]
    fn the_oracle_gives_the_definition_and_random_gives_a_file_not_held_out() {
        let files = vec![
            file(
                "src/vault.rs",
                "struct Vault;\n\nimpl Vault {\n    fn rotate_keys(&mut self, t: &str) {\n        todo!()\n    }\n}\n",
            ),
            file("src/app.rs", "fn main() {}\n"),
            file(
                "src/other.rs",
                &(0..100).map(|i| format!("let x{i} = {i};")).collect::<Vec<_>>().join("\n"),
            ),
        ];
        let oracle = oracle(&api_task(), &files).unwrap();
        assert_eq!(oracle.path, "src/vault.rs");
        assert_eq!(oracle.text, "    fn rotate_keys(&mut self, t: &str) {\n        todo!()\n    }");
        let mut line_task = api_task();
        line_task.symbol = None;
        line_task.defined_in = None;
        assert_eq!(super::oracle(&line_task, &files), None);

        let split = Split::listed(["src/app.rs", "src/vault.rs"]);
        let random = random(&api_task(), &files, &split, 1).unwrap();
        assert_eq!(random.path, "src/other.rs", "the only file not held out");
        assert_eq!(random.text.lines().count(), CONTROL_LINES);
        assert_eq!(super::random(&api_task(), &files, &split, 1).unwrap(), random, "seeded");
    }
}
