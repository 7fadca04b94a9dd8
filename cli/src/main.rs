//! `trellis`: the Trellis control-plane CLI, a client of the management API
//! on any member (SPEC.md §4).
//!
//! ```text
//!  argv ─> clap (usage errors: exit 2) ─> commands ─> client (endpoints in turn) ─> table | --json
//!                                                        │ refused (4xx): exit 1
//!                                                        └ no endpoint answered: exit 3
//! ```
#![forbid(unsafe_code)]

mod client;
mod commands;
mod failover;
mod size;
mod table;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rand::Rng;

use client::{Client, ClientError};

/// Manage a Trellis cluster through the management API of any member.
#[derive(Debug, Parser)]
#[command(
    name = "trellis",
    version,
    propagate_version = true,
    after_help = "Exit codes: 0 done, 1 refused by the cluster, 2 usage error, 3 no endpoint reachable."
)]
pub struct Cli {
    /// Management API endpoints of the members (http://HOST:PORT,
    /// https://HOST:PORT, or HOST:PORT for plain HTTP), comma-separated;
    /// tried in turn from a random one.
    #[arg(
        long,
        env = "TRELLIS_ENDPOINTS",
        value_delimiter = ',',
        required = true,
        value_parser = client::parse_endpoint
    )]
    endpoints: Vec<String>,
    /// The cluster API token.
    #[arg(long, env = "TRELLIS_TOKEN", hide_env_values = true)]
    token: String,
    /// PEM file of the CA certificate(s) that https:// endpoints'
    /// certificates must chain to (default: the public web roots).
    #[arg(long, env = "TRELLIS_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for each endpoint's answer.
    #[arg(long, env = "TRELLIS_TIMEOUT", default_value_t = 30)]
    timeout: u64,
    /// Send a write with this idempotency key instead of a random one: the
    /// cluster applies a key's write at most once, so running a command
    /// whose outcome is unknown again with the key the error gave answers
    /// what it did (1-128 letters, digits, '-', '_', '.', ':').
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Raft and cluster summary from one member.
    Status,
    /// Members.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Virtual devices.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// iSCSI targets and their LUNs.
    #[command(subcommand)]
    Target(TargetCmd),
    /// Which initiators may log in to a target.
    #[command(subcommand)]
    Acl(AclCmd),
    /// Failover Sets: which members serve a device, in what order.
    #[command(subcommand)]
    Set(failover::SetCmd),
    /// Roles (Primary, Secondary, Alternates) of each set.
    #[command(subcommand)]
    Role(failover::RoleCmd),
    /// The history of role assignments (replicated: every member shows the
    /// same), oldest first: when, which set, the epoch, what changed and why.
    Events(failover::EventsArgs),
}

/// `trellis member ...`
#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// Members, their state and their links.
    List,
    /// Move a member's roles away (a planned handover: the new Primary is
    /// Active/Optimized first), ask the hosts logged in to it to log out
    /// (it refuses new logins while drained), and wait until it holds no
    /// Primary role and has no sessions.
    Drain {
        /// The member.
        member: String,
        /// Seconds to wait for the roles to move and the sessions to go
        /// (0: do not wait).
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Let a drained member take roles again.
    Undrain {
        /// The member.
        member: String,
    },
}

/// `trellis device ...`
#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Create a device.
    Create(DeviceCreate),
    /// List devices.
    List,
    /// Grow a device.
    Resize {
        /// The device.
        name: String,
        /// The new size (1GiB, 512MiB, bytes).
        #[arg(long, value_parser = parse_size_arg)]
        size: u64,
    },
    /// Delete a device no target maps.
    Delete {
        /// The device.
        name: String,
    },
    /// Move a device to another Failover Set and/or change its port policy.
    SetPolicy {
        /// The device.
        name: String,
        /// What changes.
        #[command(flatten)]
        policy: failover::PolicyArgs,
    },
}

/// `trellis device create`.
#[derive(Debug, Args)]
pub struct DeviceCreate {
    /// Its name.
    pub name: String,
    /// Its size (1GiB, 512MiB, bytes).
    #[arg(long, value_parser = parse_size_arg)]
    pub size: u64,
    /// Where the blocks live, on storage every member reaches: a file or
    /// block device path, absolute or relative to each member's storage_dir;
    /// `memory` for a per-member, unshared demo device. Default: NAME.img
    /// in the storage directory.
    #[arg(long)]
    pub backing: Option<String>,
    /// Logical block size.
    #[arg(long, value_parser = ["512", "4096"])]
    pub block_size: Option<String>,
    /// Thin provisioned (UNMAP frees space).
    #[arg(long)]
    pub thin: bool,
    /// Refuse writes.
    #[arg(long)]
    pub read_only: bool,
    /// Its Failover Set and port policy.
    #[command(flatten)]
    pub policy: failover::PolicyArgs,
}

/// `trellis target ...`
#[derive(Debug, Subcommand)]
pub enum TargetCmd {
    /// Create a target.
    Create {
        /// Its IQN.
        iqn: String,
        /// Its alias.
        #[arg(long)]
        alias: Option<String>,
    },
    /// List targets.
    List,
    /// Delete a target with its LUNs and ACL.
    Delete {
        /// Its IQN.
        iqn: String,
    },
    /// Expose a device as a LUN of a target.
    Map {
        /// The target's IQN.
        iqn: String,
        /// The device.
        device: String,
        /// The LUN.
        #[arg(long)]
        lun: u16,
    },
    /// Remove a LUN from a target.
    Unmap {
        /// The target's IQN.
        iqn: String,
        /// The LUN.
        #[arg(long)]
        lun: u16,
    },
}

/// `trellis acl ...`
#[derive(Debug, Subcommand)]
pub enum AclCmd {
    /// Allow an initiator on a target (or replace its entry).
    Allow(AclAllow),
    /// List the initiators allowed on a target (CHAP secrets are never shown).
    List {
        /// The target's IQN.
        iqn: String,
    },
    /// Remove an initiator from a target's ACL.
    Deny {
        /// The target's IQN.
        iqn: String,
        /// The initiator's name.
        initiator: String,
    },
}

/// `trellis acl allow`.
#[derive(Debug, Args)]
pub struct AclAllow {
    /// The target's IQN.
    pub iqn: String,
    /// The initiator's name.
    pub initiator: String,
    /// CHAP user the initiator logs in as.
    #[arg(long, requires = "chap_secret_source")]
    pub chap_user: Option<String>,
    /// CHAP secret (12 to 255 bytes). It shows in `ps` and in the shell's
    /// history: prefer --chap-secret-file.
    #[arg(long, requires = "chap_user", group = "chap_secret_source")]
    pub chap_secret: Option<String>,
    /// Read the CHAP secret from FILE (its first line), or from standard
    /// input with `-`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "chap_user",
        group = "chap_secret_source"
    )]
    pub chap_secret_file: Option<std::path::PathBuf>,
    /// Mutual CHAP: the target's user name.
    #[arg(long, requires_all = ["mutual_secret_source", "chap_user"])]
    pub mutual_user: Option<String>,
    /// Mutual CHAP: the target's secret (shows in `ps`: prefer
    /// --mutual-secret-file).
    #[arg(long, requires = "mutual_user", group = "mutual_secret_source")]
    pub mutual_secret: Option<String>,
    /// Read the mutual CHAP secret from FILE (its first line), or from
    /// standard input with `-`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "mutual_user",
        group = "mutual_secret_source"
    )]
    pub mutual_secret_file: Option<std::path::PathBuf>,
    /// The LUNs it sees (comma-separated); all mapped LUNs when absent.
    #[arg(long, value_delimiter = ',')]
    pub luns: Option<Vec<u16>>,
}

impl AclAllow {
    /// Reads the secrets given as files (or standard input) into
    /// `chap_secret` / `mutual_secret`.
    fn read_secret_files(&mut self) -> Result<(), String> {
        let mut stdin_taken = false;
        if let Some(f) = self.chap_secret_file.take() {
            self.chap_secret = Some(read_secret(&f, &mut stdin_taken)?);
        }
        if let Some(f) = self.mutual_secret_file.take() {
            self.mutual_secret = Some(read_secret(&f, &mut stdin_taken)?);
        }
        Ok(())
    }
}

/// The first line of `path` (`-`: standard input, once), without its line
/// end; an empty one is refused.
fn read_secret(path: &std::path::Path, stdin_taken: &mut bool) -> Result<String, String> {
    use std::io::BufRead;
    let mut line = String::new();
    let shown = path.display();
    if path.as_os_str() == "-" {
        if std::mem::replace(stdin_taken, true) {
            return Err("only one secret can come from standard input ('-')".into());
        }
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read a secret from standard input: {e}"))?;
    } else {
        let f = std::fs::File::open(path)
            .map_err(|e| format!("cannot read the secret file {shown}: {e}"))?;
        std::io::BufReader::new(f)
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the secret file {shown}: {e}"))?;
    }
    let secret = line.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        return Err(format!("the secret from {shown} is empty"));
    }
    Ok(secret)
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    size::parse_size(s).map_err(|e| e.to_string())
}

/// Exit codes.
mod exit {
    /// The request was refused (4xx, or a server error).
    pub const REFUSED: u8 = 1;
    /// A bad argument (as clap's usage errors).
    pub const USAGE: u8 = 2;
    /// No endpoint could serve the request.
    pub const UNREACHABLE: u8 = 3;
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Command::Acl(AclCmd::Allow(a)) = &mut cli.command {
        if let Err(e) = a.read_secret_files() {
            eprintln!("trellis: {e}");
            return ExitCode::from(exit::USAGE);
        }
    }
    let start = rand::thread_rng().gen_range(0..cli.endpoints.len().max(1));
    let tls = match &cli.ca {
        Some(ca) => match client::tls_trusting(ca) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("trellis: {e}");
                return ExitCode::from(exit::USAGE);
            }
        },
        None => None,
    };
    let client = Client::new(
        cli.endpoints.clone(),
        cli.token.clone(),
        start,
        Duration::from_secs(cli.timeout.max(1)),
        tls,
    )
    .with_idempotency_key(cli.idempotency_key.clone());
    match commands::run(&client, &cli.command, cli.json) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trellis: {e}");
            if let commands::CommandError::Client(ClientError::Refused { status: 401, .. }) = e {
                eprintln!(
                    "trellis: check --token (or TRELLIS_TOKEN): it must be the cluster API token"
                );
            }
            ExitCode::from(match e {
                commands::CommandError::Client(ClientError::Unreachable { .. }) => {
                    exit::UNREACHABLE
                }
                _ => exit::REFUSED,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_commands() {
        let cli = Cli::try_parse_from([
            "trellis",
            "--endpoints",
            "m1:8080,http://m2:8080",
            "--token",
            "t",
            "device",
            "create",
            "d1",
            "--size",
            "1GiB",
            "--block-size",
            "4096",
            "--thin",
        ])
        .expect("parses");
        assert_eq!(cli.endpoints, ["http://m1:8080", "http://m2:8080"]);
        let Command::Device(DeviceCmd::Create(c)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(c.size, 1 << 30);
        assert_eq!(c.block_size.as_deref(), Some("4096"));
        assert!(c.thin && !c.read_only);

        let base = ["trellis", "--endpoints", "m1", "--token", "t"];
        let with = |args: &[&str]| Cli::try_parse_from(base.iter().chain(args));
        assert!(with(&["device", "create", "d1", "--size", "1XB"]).is_err());
        assert!(with(&[
            "device",
            "create",
            "d1",
            "--size",
            "1G",
            "--block-size",
            "1024"
        ])
        .is_err());
        assert!(with(&["acl", "allow", "iqn.x", "iqn.y", "--chap-user", "u"]).is_err());
        assert!(with(&[
            "acl",
            "allow",
            "iqn.x",
            "iqn.y",
            "--chap-user",
            "u",
            "--chap-secret-file",
            "-"
        ])
        .is_ok());
        assert!(with(&[
            "acl",
            "allow",
            "iqn.x",
            "iqn.y",
            "--chap-user",
            "u",
            "--chap-secret",
            "s",
            "--chap-secret-file",
            "f"
        ])
        .is_err());
        let cli = with(&["acl", "allow", "iqn.x", "iqn.y", "--luns", "0,1"]).expect("parses");
        let Command::Acl(AclCmd::Allow(a)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(a.luns, Some(vec![0, 1]));
        assert!(with(&["--json", "target", "map", "iqn.x", "d1", "--lun", "0"]).is_ok());
        assert!(with(&["target", "unmap", "iqn.x", "--lun", "0", "--json"]).is_ok());
    }
}
