//! `witmed device`: hospital staff enrol a bedside device's key for a patient, retire it, list devices, and flag a patient as hypercapnic (NEWS2 SpO2 scale 2).
//!
//! Like `witmed patient enrol`, each command goes through the running
//! node's admin channel, or opens the store when no node runs.

use std::path::PathBuf;

use clap::Subcommand;
use witmed_crypto::{PublicKey, Role};
use witmed_node::admin;
use witmed_protocol::device_request as wire;

use crate::args::DataDirArg;
use crate::code::Code;
use crate::failure::{Failure, Result};
use crate::{keys, local_node};

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Enrol a device's public key for a patient: its signed readings become the patient's observations.
    Enrol {
        #[command(flatten)]
        dir: DataDirArg,
        /// The patient's pseudonym (see `patient lookup`).
        #[arg(long)]
        patient: String,
        /// The device's public key (hex), or its key file with --device-key-file.
        #[arg(long, conflicts_with = "device_key_file")]
        device: Option<String>,
        /// The device's public key file (from `keygen --role device --public-out`).
        #[arg(long)]
        device_key_file: Option<PathBuf>,
        /// A label for people, e.g. "ward 3 bed 12 monitor".
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Retire a device: its readings are refused from now on (what it sent stays).
    Retire {
        #[command(flatten)]
        dir: DataDirArg,
        /// The device's public key (hex).
        #[arg(long)]
        device: String,
    },
    /// Every device, enrolled or retired.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        /// Print the devices as one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Score a patient's SpO2 on NEWS2 scale 2 (hypercapnic respiratory failure), or with --off on scale 1.
    Hypercapnic {
        #[command(flatten)]
        dir: DataDirArg,
        /// The patient's pseudonym.
        #[arg(long)]
        patient: String,
        /// Back to scale 1.
        #[arg(long)]
        off: bool,
    },
}

/// Runs one `device` subcommand.
pub fn run(command: DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::Enrol {
            dir,
            patient,
            device,
            device_key_file,
            label,
        } => {
            let request = admin::Request::DeviceEnrol {
                device: device_key(device, device_key_file)?.to_hex(),
                patient: keys::parse_pseudonym(&patient)?.to_hex(),
                label,
            };
            let device = one_device(local_node::ask(&dir.data_dir, &request)?)?;
            outln!(
                "device {} enrolled for patient {}",
                device.device,
                device.patient
            );
            Ok(())
        }
        DeviceCommand::Retire { dir, device } => {
            let request = admin::Request::DeviceRetire {
                device: keys::parse_public(&device)?.to_hex(),
            };
            let device = one_device(local_node::ask(&dir.data_dir, &request)?)?;
            outln!("device {} retired", device.device);
            Ok(())
        }
        DeviceCommand::List { dir, json } => {
            match local_node::ask(&dir.data_dir, &admin::Request::Devices)? {
                admin::Response::Devices { devices } => {
                    print_devices(&devices, json);
                    Ok(())
                }
                other => Err(local_node::unexpected(other)),
            }
        }
        DeviceCommand::Hypercapnic { dir, patient, off } => {
            let request = admin::Request::Hypercapnic {
                patient: keys::parse_pseudonym(&patient)?.to_hex(),
                hypercapnic: !off,
            };
            match local_node::ask(&dir.data_dir, &request)? {
                admin::Response::HypercapnicSet { patient, .. } => {
                    let scale = if off { 1 } else { 2 };
                    outln!("patient {patient}: SpO2 scored on NEWS2 scale {scale}");
                    Ok(())
                }
                other => Err(local_node::unexpected(other)),
            }
        }
    }
}

fn device_key(hex: Option<String>, file: Option<PathBuf>) -> Result<PublicKey> {
    match (hex, file) {
        (Some(hex), _) => keys::parse_public(&hex),
        (None, Some(path)) => keys::public_from_file(&path, Role::Device),
        (None, None) => Err(Failure::new(
            Code::MissingKey,
            "give --device HEX or --device-key-file FILE",
        )),
    }
}

fn one_device(response: admin::Response) -> Result<wire::Device> {
    match response {
        admin::Response::Device { device } => Ok(*device),
        other => Err(local_node::unexpected(other)),
    }
}

fn print_devices(devices: &[wire::Device], json: bool) {
    if json {
        return crate::stdout::json(&devices);
    }
    for d in devices {
        let state = match d.retired_at {
            Some(at) => format!("retired {}", crate::labels::utc(at)),
            None => "active".to_string(),
        };
        let last = d
            .last_seq
            .map_or_else(|| "-".to_string(), |s| s.to_string());
        outln!(
            "{} patient {} last seq {last:>8} {state} {}",
            d.device,
            d.patient,
            d.label
        );
    }
}
