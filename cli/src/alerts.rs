//! `witmed alerts`: the NEWS2 alerts a node raised from device readings (newest first), and a clinician's acknowledgement (`alerts ack ID --by NAME`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use witmed_node::admin;
use witmed_protocol::device_request as wire;

use crate::args::DataDirArg;
use crate::failure::Result;
use crate::local_node;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub command: Option<AlertsCommand>,
    /// The node's own directory (keys, config, store); or set WITMED_NODE_DIR.
    #[arg(long, env = "WITMED_NODE_DIR", required = true)]
    pub data_dir: Option<PathBuf>,
    /// Only alerts no clinician has acknowledged yet.
    #[arg(long)]
    pub open: bool,
    /// Print the alerts as one JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// A clinician acknowledges an alert (the first acknowledgement stands).
    Ack {
        #[command(flatten)]
        dir: DataDirArg,
        /// The alert's id (from `witmed alerts`).
        id: String,
        /// Who acknowledges: the clinician's name or staff id.
        #[arg(long)]
        by: String,
        /// Print the acknowledged alert as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `alerts`.
pub fn run(args: AlertsArgs) -> Result<()> {
    if let Some(AlertsCommand::Ack { dir, id, by, json }) = args.command {
        let request = admin::Request::AlertAck { id, by };
        return match local_node::ask(&dir.data_dir, &request)? {
            admin::Response::Alert { alert } => {
                if json {
                    crate::stdout::json(&alert);
                } else {
                    print_alert(&alert);
                }
                Ok(())
            }
            other => Err(local_node::unexpected(other)),
        };
    }
    // clap requires the data dir when no subcommand is given.
    let data_dir = args.data_dir.unwrap_or_default();
    let request = admin::Request::Alerts {
        open_only: args.open,
    };
    match local_node::ask(&data_dir, &request)? {
        admin::Response::Alerts { alerts } => {
            if args.json {
                crate::stdout::json(&alerts);
            } else {
                alerts.iter().for_each(print_alert);
            }
            Ok(())
        }
        other => Err(local_node::unexpected(other)),
    }
}

fn print_alert(a: &wire::Alert) {
    let band = serde_json::to_value(a.band)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let ack = match &a.ack {
        Some(ack) => format!("acknowledged by {} {}", ack.by, crate::labels::utc(ack.at)),
        None => "OPEN".to_string(),
    };
    let scale = if a.spo2_scale_2 {
        " (SpO2 scale 2)"
    } else {
        ""
    };
    outln!(
        "{} {} patient {} NEWS2 {} {band}{scale} {ack}",
        a.id,
        crate::labels::utc(a.at),
        a.patient,
        a.score
    );
    for s in &a.sources {
        outln!(
            "    {:<8} {:>7} {:<8} +{} (device {} seq {} at {})",
            s.code,
            s.value,
            s.unit,
            s.sub_score,
            &s.device.get(..12).unwrap_or(&s.device),
            s.seq,
            crate::labels::utc(s.time)
        );
    }
}
