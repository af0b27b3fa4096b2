//! `meshward`: the one binary. Each subcommand parses its arguments, calls into the libraries
//! and prints a human line or, with `--json`, one JSON object. Errors print one line naming the
//! file or value at fault and exit non-zero. `meshward devnet` is `meshward-devnet`, and
//! `meshward bench` is `meshward-bench`.

use std::fs;

use anyhow::{bail, Context, Result};
use clap::Parser;
use meshward_sdk::keyfile::{self, KeyKind};
use serde_json::json;

mod audit;
mod chain;
mod cli;
mod fleet;
mod logging;
mod mqtt_cmd;
mod node_cmd;
mod sealed_cmd;
mod validator_cmd;

use chain::{
    genesis_new, proof_target, store_anchors, store_migrate, store_proof, store_synth,
    store_verify, verify,
};
use cli::*;
use node_cmd::{init, node_run, status};

/// glibc's malloc makes up to 8 arenas per core, and each keeps the memory freed in it. A node's
/// threads gain little from more than two: with two, a validator with 10k devices held 77-78 MiB
/// after anchor load against 85-86 MiB with glibc's default, at no loss of throughput (two runs
/// each of `meshward bench scale --quick`). An explicit `MALLOC_ARENA_MAX` in the environment wins.
#[allow(
    unsafe_code,
    reason = "mallopt has no safe wrapper; see the SAFETY comment"
)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tunable; called first thing in main, before any
        // other thread exists. A refusal (return 0) leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let json = cli.json;
    if let Err(e) = logging::init(cli.log_file.clone(), cli.log_max_bytes) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    match run(cli) {
        Ok(out) => print_output(json, out),
        Err(e) => {
            if json {
                println!("{}", json!({ "error": format!("{e:#}") }));
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::exit(1);
        }
    }
}

/// What a command reports: a human line and the same facts as JSON.
struct Output {
    text: String,
    json: serde_json::Value,
}

fn print_output(json: bool, out: Output) {
    if out.json.is_null() {
        return;
    }
    if json {
        println!("{}", out.json);
    } else {
        println!("{}", out.text);
    }
}

fn run(cli: Cli) -> Result<Output> {
    match cli.cmd {
        Cmd::Init { dir } => init(&dir),
        Cmd::Admin(AdminCmd::Keygen { out }) => {
            let kp = keyfile::generate(&out, KeyKind::Admin)?;
            Ok(Output {
                text: format!("admin key {} written to {}", kp.id(), out.display()),
                json: json!({ "admin_id": kp.id().peer_id(), "file": out }),
            })
        }
        Cmd::Device(DeviceCmd::Keygen { out, account }) => {
            fleet::device_keygen(&out, account.as_deref())
        }
        Cmd::Device(DeviceCmd::Export { key, chain_id, out }) => {
            fleet::device_export(&key, &chain_id, &out)
        }
        Cmd::Device(DeviceCmd::Enroll {
            gw,
            admin_keys,
            device_pub,
            device_key,
            groups,
        }) => fleet::device_enroll(fleet::EnrollArgs {
            gw: gw.into_gateways(),
            admin_keys,
            device_pub,
            device_key,
            groups,
        }),
        Cmd::Device(DeviceCmd::Join { gw, ticket, key }) => {
            fleet::device_join(gw.into_gateways(), &ticket, &key)
        }
        Cmd::Device(DeviceCmd::Run {
            gw,
            key,
            dir,
            listen,
            mdns,
            poll_ms,
        }) => fleet::device_run(fleet::RunArgs {
            gw: gw.into_gateways(),
            key,
            dir,
            listen,
            mdns,
            poll_ms,
        }),
        Cmd::Device(DeviceCmd::Revoke {
            gw,
            admin_keys,
            device_id,
            reason,
        }) => fleet::device_revoke(gw.into_gateways(), &admin_keys, &device_id, &reason),
        Cmd::Device(DeviceCmd::Reinstate {
            gw,
            admin_keys,
            device_pub,
            device_id,
        }) => fleet::device_reinstate(gw.into_gateways(), &admin_keys, &device_pub, &device_id),
        Cmd::Device(DeviceCmd::Rotate { gw, key }) => {
            fleet::device_rotate(gw.into_gateways(), &key)
        }
        Cmd::Device(DeviceCmd::List { api }) => fleet::device_list(&api),
        Cmd::Ticket(TicketCmd::New {
            gw,
            admin_keys,
            groups,
            ttl,
        }) => fleet::ticket_new(gw.into_gateways(), &admin_keys, &groups, &ttl),
        Cmd::Policy(PolicyCmd::Set {
            gw,
            admin_keys,
            allow,
        }) => fleet::policy_set(gw.into_gateways(), &admin_keys, &allow),
        Cmd::Send {
            gw,
            key,
            dir,
            to,
            message,
            file,
            session,
            wait_final,
            timeout,
            mdns,
            keep,
        } => {
            let payload = match (message, file) {
                (Some(m), _) => m.into_bytes(),
                (None, Some(f)) => {
                    fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?
                }
                (None, None) => bail!("give --message TEXT or --file F"),
            };
            fleet::send(fleet::SendArgs {
                gw: gw.into_gateways(),
                mdns,
                key,
                dir,
                to,
                payload,
                session,
                wait_final,
                timeout_s: timeout,
                keep,
            })
        }
        Cmd::Validator(c) => validator_cmd::run(c),
        Cmd::Mqtt(c) => mqtt_cmd::run(c),
        Cmd::Inbox { key, api, dir } => fleet::inbox(&api, &key, dir.as_deref()),
        Cmd::Proof {
            api,
            commitment,
            tx,
            out,
            envelope,
            batch,
        } => fleet::proof(
            &api,
            proof_target(commitment, tx)?,
            &out,
            envelope.as_deref().map(|e| (e, batch.as_deref())),
        ),
        Cmd::Audit { api, since, prove } => audit::audit(&api, since, prove.as_deref()),
        Cmd::Genesis(GenesisCmd::New(args)) => genesis_new(&args),
        Cmd::Store(StoreCmd::Verify { dir }) => store_verify(&dir),
        Cmd::Store(StoreCmd::Migrate { dir }) => store_migrate(&dir),
        Cmd::Store(StoreCmd::Synth {
            dir,
            blocks,
            anchors_per_block,
            devices,
        }) => store_synth(&dir, blocks, anchors_per_block, devices),
        Cmd::Store(StoreCmd::Anchors { dir, limit }) => store_anchors(&dir, limit),
        Cmd::Store(StoreCmd::Proof {
            dir,
            commitment,
            tx,
            out,
        }) => store_proof(&dir, proof_target(commitment, tx)?, &out),
        Cmd::Verify { genesis, proof } => verify(&genesis, &proof),
        Cmd::FirmwareData {
            genesis,
            proofs,
            out_dir,
        } => chain::firmware_data(&genesis, &proofs, &out_dir),
        Cmd::Node(NodeCmd::Run(args)) => node_run(args),
        Cmd::Status { api } => status(&api),
        Cmd::Bench(b) if b.part == meshward_bench::Part::Client => {
            let spec = b
                .spec
                .context("bench client needs --spec (it is started by meshward bench)")?;
            let r = meshward_bench::client::run(&spec)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(Output {
                text: String::new(),
                json: serde_json::Value::Null,
            })
        }
        Cmd::Bench(b) => {
            let r = meshward_bench::run(&meshward_bench::Options {
                part: b.part,
                out: b.out,
                quick: b.quick,
                base_port: b.base_port,
                json: cli.json,
                // This binary is the meshward the bench starts.
                exe: None,
            })?;
            if !r.any_ok {
                eprintln!("{}", r.summary);
                bail!("every benchmark part that ran failed (reasons above, and in results.json)");
            }
            Ok(Output {
                text: r.summary,
                json: r.results,
            })
        }
        Cmd::Devnet {
            node: Some(cmd), ..
        } => devnet_node(cmd),
        Cmd::Devnet {
            dir,
            validators,
            base_port,
            devices,
            device_rate,
            restart_on_exit,
            #[cfg(feature = "byzantine")]
            byzantine,
            node: None,
        } => {
            meshward_devnet::run(
                meshward_devnet::Options {
                    dir,
                    validators,
                    base_port,
                    devices,
                    device_rate,
                    // The nodes run as this binary.
                    exe: None,
                    restart_on_exit,
                    #[cfg(feature = "byzantine")]
                    byzantine,
                    #[cfg(not(feature = "byzantine"))]
                    byzantine: Vec::new(),
                },
                cli.json,
            )?;
            Ok(Output {
                text: String::new(),
                json: serde_json::Value::Null,
            })
        }
    }
}

fn devnet_node(cmd: DevnetNodeCmd) -> Result<Output> {
    use meshward_devnet::control;
    Ok(match cmd {
        DevnetNodeCmd::Kill { n, dir } => {
            let (name, pid) = control::kill(&dir, n)?;
            Output {
                text: format!("{name} (pid {pid}) killed"),
                json: json!({ "node": name, "pid": pid, "killed": true }),
            }
        }
        DevnetNodeCmd::Stop { n, dir } => {
            let (name, pid, clean) = control::stop(&dir, n)?;
            Output {
                text: format!(
                    "{name} (pid {pid}) stopped{}",
                    if clean {
                        ""
                    } else {
                        " (it did not stop cleanly: killed)"
                    }
                ),
                json: json!({ "node": name, "pid": pid, "clean": clean }),
            }
        }
        DevnetNodeCmd::Start { n, dir } => {
            let launcher = meshward_devnet::NodeLauncher::current_exe()?;
            let (name, pid) = control::start(&dir, n, &launcher)?;
            Output {
                text: format!("{name} started (pid {pid}); it catches up from the others"),
                json: json!({ "node": name, "pid": pid }),
            }
        }
    })
}
