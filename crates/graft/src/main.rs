//! The `graft` program: parses the command line and runs one command.
//!
//! - [`cli`]: flags and help text.
//! - [`serve`]: `graft serve` and `graft up`.
//! - [`index`]: `graft index` and `graft search`.
//! - [`models`]: `graft models fetch | list`.
//! - [`adapters`]: `graft adapters list | merge`.
//! - [`bench`]: `graft bench index`, `graft bench engine` and `graft bench load`.
//! - [`eval`]: `graft eval build`, `graft eval run` and `graft eval compare`.
//! - [`dataset`]: `graft dataset` (and `graft bench dataset`, the same without writing).
//! - [`train`]: `graft train`.
//! - [`project`]: which project a command means when none is named.
//! - [`remote`]: a graft already serving a project, asked for its index's searches and runs.
//! - [`progress`]: progress bars.

mod adapters;
mod bench;
mod cli;
mod dataset;
mod eval;
mod index;
mod interrupt;
mod models;
mod progress;
mod project;
mod reindexer;
mod reload;
mod remote;
mod serve;
mod status;
mod train;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{AdaptersCommand, BenchCommand, Cli, Command, DatasetArgs, EvalCommand, ModelsCommand};

fn main() -> ExitCode {
    // Before anything runs code compiled for the build machine's processor.
    if let Err(message) = graft_core::cpu::check() {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    // A benchmark's in-process server would log a line per request among its figures.
    init_logging(!matches!(
        cli.command,
        Command::Bench(BenchCommand::Load(_) | BenchCommand::Api(_)) | Command::Eval(EvalCommand::Run(_))
    ));
    let result = match cli.command {
        Command::Up(args) => serve::up(args),
        Command::Serve(args) => serve::serve(args),
        Command::Index(args) => index::index(args),
        Command::Search(args) => index::search(args),
        Command::Status(args) => status::run(args),
        Command::Bench(BenchCommand::Index(args)) => bench::index::run(args),
        Command::Bench(BenchCommand::Questions(args)) => bench::questions::run(args),
        Command::Bench(BenchCommand::Engine(args)) => bench::engine::run(args),
        Command::Bench(BenchCommand::Load(args)) => bench::load::run(args),
        Command::Bench(BenchCommand::Api(args)) => bench::api::run(args),
        Command::Bench(BenchCommand::Dataset(args)) => dataset::run(DatasetArgs { dry_run: true, ..args }),
        Command::Bench(BenchCommand::Train(args)) => bench::train::run(args),
        Command::Adapters(AdaptersCommand::List { config, json }) => adapters::list(&config.config, json),
        Command::Adapters(AdaptersCommand::Merge { config, name, json }) => adapters::merge(&config.config, &name, json),
        Command::Models(ModelsCommand::Fetch { config, ids, json }) => models::fetch(&config.config, &ids, json),
        Command::Models(ModelsCommand::List { config, json }) => models::list(&config.config, json),
        Command::Eval(EvalCommand::Build(args)) => eval::build_golden_set(args),
        Command::Dataset(args) => dataset::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(EvalCommand::Run(args)) => eval::run::run_golden_set(*args),
        Command::Eval(EvalCommand::Compare(args)) => eval::compare::run(args),
        Command::Eval(EvalCommand::Rubric) => {
            print!("{}", graft_eval::judge::DEFAULT_RUBRIC);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, as anyhow's `{:#}` writes them, less any cause whose
/// text the line already holds: many errors write their source into their own message (an
/// io error after the path it concerns), which `{:#}` would then repeat.
fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Logs go to stderr; `RUST_LOG` chooses what is shown (default: graft's own info lines, or
/// only warnings without `requests`, and warnings from everything else, except two from
/// qdrant-edge 0.7, which warns about process-wide flags it gives no public way to set; its
/// defaults apply, and mistralrs 0.8.1's GGUF loader, which warns of "a mix of GPU and CPU"
/// on every CPU-only start; graft's engine says which device it runs on instead).
fn init_logging(requests: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let server = if requests { "info" } else { "warn" };
        EnvFilter::new(format!(
            "warn,graft=info,graft_server={server},graft_engine=info,graft_kit=info,graft_index=info,\
             qdrant_edge::common::flags=error,qdrant_edge::common::mmap=error,\
             mistralrs_core::pipeline::gguf=error"
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    /// An error that writes its source into its message, and gives it as its source too.
    #[derive(Debug)]
    struct Unreadable {
        path: String,
        source: std::io::Error,
    }

    impl std::fmt::Display for Unreadable {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.path, self.source)
        }
    }

    impl std::error::Error for Unreadable {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_the_message_already_holds_is_written_once() {
        let missing = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = anyhow::Error::new(Unreadable {
            path: "a.jsonl".into(),
            source: missing(),
        });
        assert_eq!(format!("{error:#}"), "a.jsonl: no such file: no such file");
        assert_eq!(super::error_text(&error), "a.jsonl: no such file");
        // Causes a message does not hold are all written, outermost first.
        let error = Err::<(), _>(missing())
            .context("cannot read a.jsonl")
            .context("eval run")
            .unwrap_err();
        assert_eq!(super::error_text(&error), "eval run: cannot read a.jsonl: no such file");
    }
}
