//! Who this process is among the ranks, read from the environment the way `torchrun` and
//! SLURM describe it.

use super::DistError;

/// The rendezvous port when none is given (`torchrun`'s and c10d's default).
pub const DEFAULT_PORT: u16 = 29500;

/// What started the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// `RANK`/`WORLD_SIZE` set by `torchrun` or by hand; rank 0 hosts the store.
    Env,
    /// `torchrun` whose elastic agent already serves the store (`TORCHELASTIC_USE_AGENT_STORE`).
    TorchrunAgent,
    /// `srun`: `SLURM_PROCID`/`SLURM_NTASKS`; rank 0 hosts the store.
    Slurm,
}

/// This process's place in a data-parallel run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rank on this machine (picks the GPU).
    pub local_rank: usize,
    /// Host of the `TCPStore`.
    pub master_addr: String,
    /// Port of the `TCPStore`.
    pub master_port: u16,
    /// Key prefix in the store (torchrun's agent store: `/worker/attempt_N`).
    pub store_prefix: String,
    /// What started the ranks.
    pub launcher: Launcher,
}

impl Launch {
    /// Reads the process environment; `None` for a plain single-process run.
    pub fn from_env() -> Result<Option<Launch>, DistError> {
        Launch::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the launch variables through `get`:
    /// - `WORLD_SIZE` set (torchrun, or by hand): `RANK` (required), `LOCAL_RANK` (default:
    ///   `RANK`), `MASTER_ADDR` (default 127.0.0.1), `MASTER_PORT` (default 29500); with
    ///   `TORCHELASTIC_USE_AGENT_STORE=True` every rank is a client of the agent's store, under
    ///   `/worker/attempt_$TORCHELASTIC_RESTART_COUNT`;
    /// - else `SLURM_NTASKS` > 1 (srun): `SLURM_PROCID`, `SLURM_LOCALID`, the address from
    ///   `MASTER_ADDR` or the first host of `SLURM_STEP_NODELIST` (`SLURM_JOB_NODELIST`), the
    ///   port from `MASTER_PORT` or 29500;
    /// - else `None`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>, DistError> {
        let number = |var: &'static str| -> Result<Option<usize>, DistError> {
            match get(var) {
                None => Ok(None),
                Some(value) => value.trim().parse().map(Some).map_err(|_| DistError::Env {
                    var,
                    value,
                    reason: "not a non-negative integer".into(),
                }),
            }
        };
        let port = || -> Result<u16, DistError> {
            match get("MASTER_PORT") {
                None => Ok(DEFAULT_PORT),
                Some(value) => value.trim().parse().map_err(|_| DistError::Env {
                    var: "MASTER_PORT",
                    value,
                    reason: "not a port number".into(),
                }),
            }
        };
        let launch = if let Some(world_size) = number("WORLD_SIZE")? {
            let rank = number("RANK")?.ok_or_else(|| DistError::Env {
                var: "RANK",
                value: String::new(),
                reason: "unset while WORLD_SIZE is set".into(),
            })?;
            let agent = get("TORCHELASTIC_USE_AGENT_STORE")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
            let store_prefix = if agent {
                let attempt = get("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
                format!("/worker/attempt_{}", attempt.trim())
            } else {
                String::new()
            };
            Launch {
                rank,
                world_size,
                local_rank: number("LOCAL_RANK")?.unwrap_or(rank),
                master_addr: get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
                master_port: port()?,
                store_prefix,
                launcher: if agent {
                    Launcher::TorchrunAgent
                } else {
                    Launcher::Env
                },
            }
        } else {
            match number("SLURM_NTASKS")? {
                Some(world_size) if world_size > 1 => {
                    let rank = number("SLURM_PROCID")?.unwrap_or(0);
                    let master_addr = match get("MASTER_ADDR") {
                        Some(addr) => addr,
                        None => {
                            let (var, list) = match get("SLURM_STEP_NODELIST") {
                                Some(list) => ("SLURM_STEP_NODELIST", list),
                                None => (
                                    "SLURM_JOB_NODELIST",
                                    get("SLURM_JOB_NODELIST").unwrap_or_default(),
                                ),
                            };
                            first_slurm_host(&list).ok_or_else(|| DistError::Env {
                                var,
                                value: list.clone(),
                                reason: "no host in the node list; set MASTER_ADDR".into(),
                            })?
                        }
                    };
                    Launch {
                        rank,
                        world_size,
                        local_rank: number("SLURM_LOCALID")?.unwrap_or(0),
                        master_addr,
                        master_port: port()?,
                        store_prefix: String::new(),
                        launcher: Launcher::Slurm,
                    }
                }
                _ => return Ok(None),
            }
        };
        if launch.world_size == 0 || launch.rank >= launch.world_size {
            return Err(DistError::Env {
                var: "RANK",
                value: launch.rank.to_string(),
                reason: format!("not below the world size {}", launch.world_size),
            });
        }
        Ok(Some(launch))
    }

    /// Whether this process serves the `TCPStore` (rank 0, unless torchrun's agent does).
    pub fn hosts_store(&self) -> bool {
        self.rank == 0 && self.launcher != Launcher::TorchrunAgent
    }
}

/// The first host of a SLURM node list: `node[003-005,9],gpu1` → `node003`.
pub fn first_slurm_host(list: &str) -> Option<String> {
    let list = list.trim();
    // The first entry ends at the first comma outside brackets.
    let mut depth = 0usize;
    let end = list
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map_or(list.len(), |(i, _)| i);
    let entry = &list[..end];
    let host = match entry.split_once('[') {
        None => entry.to_string(),
        Some((prefix, ranges)) => {
            let first = ranges.split([',', ']']).next()?;
            let start = first.split('-').next()?;
            // Each bracket group adds to the name; further groups keep their first value.
            let rest = ranges.split_once(']').map_or("", |(_, r)| r);
            let tail = first_slurm_host(rest).unwrap_or_default();
            format!("{prefix}{start}{tail}")
        }
    };
    (!host.is_empty()).then_some(host)
}
