//! The command line. Flags override the config file for the common cases only; the file
//! holds everything else.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "gemini-balance",
    version,
    about = "A pool of Gemini API keys behind one endpoint"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Config file (TOML). Every key is optional.
    #[arg(long, global = true, env = "GEMINI_BALANCE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port and logs it.
    #[arg(long, global = true)]
    pub listen: Option<SocketAddr>,

    /// Directory for the redb store.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,

    /// Store URL instead of the redb file (`redis://…`).
    #[arg(long, global = true)]
    pub store: Option<String>,

    /// Log level or filter (`info`, `debug`, `gemini_balance=debug`); RUST_LOG wins.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Check the config file and report problems without starting.
    CheckConfig,
    /// Read a password on standard input and print its argon2 hash for `admin.password_hash`.
    HashPassword,
    /// Copy everything (keys, state, users, settings, logs, statistics) between stores.
    /// A store is a redb data directory or a redis:// URL. Stop the daemons first.
    Migrate {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Work on the upstream keys in the store while the daemon is stopped.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Add the keys found in FILE (one per line, or separated by spaces or commas).
    Import { file: PathBuf },
    /// Print every upstream key, one per line.
    Export,
}
